//! The audit log: one entry per mutation, never changed after it is written.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    pub id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Who: the principal's name and id.
    pub actor: String,
    pub actor_id: String,
    /// The team the object belongs to; absent for platform-wide objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// What: a dotted verb such as `model.create` or `key.revoke`.
    pub action: String,
    pub object_type: String,
    pub object_id: String,
    pub object_name: String,
    /// A summary of the change.
    pub summary: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only this team's entries (required for team maintainers; admins may omit it).
    #[serde(default)]
    pub team: Option<String>,
    /// Only actions starting with this prefix, e.g. `model.` or `key.create`.
    #[serde(default)]
    pub action: Option<String>,
    /// Only entries by this principal name.
    #[serde(default)]
    pub actor: Option<String>,
    /// Only this object id.
    #[serde(default)]
    pub object_id: Option<String>,
    /// Entries at or after this time (RFC 3339).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub since: Option<OffsetDateTime>,
    /// Entries before this time (RFC 3339).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub until: Option<OffsetDateTime>,
    #[serde(default)]
    pub cursor: Option<String>,
    #[serde(default)]
    pub limit: Option<u32>,
}
