//! Teams, people, service accounts, roles and API keys.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

/// A role inside one team. Each role includes the rights of the roles before it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum TeamRole {
    /// Reads the team's objects.
    Viewer,
    /// Also registers models and versions and edits their metadata.
    Developer,
    /// Also archives objects, manages members and service accounts, and reads the audit log.
    Maintainer,
}

impl TeamRole {
    pub fn as_str(self) -> &'static str {
        match self {
            TeamRole::Viewer => "viewer",
            TeamRole::Developer => "developer",
            TeamRole::Maintainer => "maintainer",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "viewer" => Some(TeamRole::Viewer),
            "developer" => Some(TeamRole::Developer),
            "maintainer" => Some(TeamRole::Maintainer),
            _ => None,
        }
    }
}

/// A role across the whole platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PlatformRole {
    /// Reads every team's registry to review promotions (governance).
    Reviewer,
    /// Does everything, in every team.
    Admin,
}

impl PlatformRole {
    pub fn as_str(self) -> &'static str {
        match self {
            PlatformRole::Reviewer => "reviewer",
            PlatformRole::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "reviewer" => Some(PlatformRole::Reviewer),
            "admin" => Some(PlatformRole::Admin),
            _ => None,
        }
    }
}

/// Whether a principal is a person or a machine identity owned by a team.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PrincipalKind {
    User,
    ServiceAccount,
}

impl PrincipalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::User => "user",
            PrincipalKind::ServiceAccount => "service_account",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "user" => Some(PrincipalKind::User),
            "service_account" => Some(PrincipalKind::ServiceAccount),
            _ => None,
        }
    }
}

/// A team: the owner of models, data and deployments.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Team {
    pub id: String,
    pub name: String,
    pub display_name: String,
    pub description: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The caller's role in this team, if it is a member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub your_role: Option<TeamRole>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTeam {
    /// Unique name: 1-63 characters of a-z, 0-9, '-' and '_'.
    pub name: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

/// A user or a service account.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PrincipalInfo {
    pub id: String,
    pub kind: PrincipalKind,
    pub name: String,
    pub display_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_role: Option<PlatformRole>,
    /// For a service account, the team that owns it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub name: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub platform_role: Option<PlatformRole>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateServiceAccount {
    pub name: String,
    #[serde(default)]
    pub display_name: Option<String>,
    /// The service account's role in its team (default `viewer`).
    #[serde(default)]
    pub role: Option<TeamRole>,
}

/// The caller, as the server sees it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WhoAmI {
    pub principal: PrincipalInfo,
    pub memberships: Vec<Membership>,
    /// The id of the key used for this request.
    pub key_id: String,
}

/// A principal's role in a team.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Membership {
    pub team: String,
    pub principal: String,
    pub principal_kind: PrincipalKind,
    pub role: TeamRole,
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetMembership {
    pub role: TeamRole,
}

/// An API key's metadata. The secret itself is shown once, at creation.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApiKeyInfo {
    pub id: String,
    pub name: String,
    pub principal: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub revoked_at: Option<OffsetDateTime>,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub last_used_at: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    /// A label for the key (default `default`).
    #[serde(default)]
    pub name: Option<String>,
    /// Whose key: a user name, or `team/service-account`. Default: the caller.
    #[serde(default)]
    pub principal: Option<String>,
    /// When the key stops working (RFC 3339). Default: never.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
}

/// A newly created key. `secret` is shown only in this answer and cannot be recovered.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedApiKey {
    pub key: ApiKeyInfo,
    pub secret: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListKeysQuery {
    /// Whose keys (admins and team maintainers only); default: the caller's own.
    #[serde(default)]
    pub principal: Option<String>,
    #[serde(default)]
    pub cursor: Option<String>,
    #[serde(default)]
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    #[serde(default)]
    pub cursor: Option<String>,
    #[serde(default)]
    pub limit: Option<u32>,
}
