//! Monitoring: a deployment's health over time.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

/// Which range of a deployment's health, in steps of how long.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HealthQuery {
    /// Start (RFC 3339); default an hour before `until`.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub since: Option<OffsetDateTime>,
    /// End, exclusive (RFC 3339); default now.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub until: Option<OffsetDateTime>,
    /// Seconds per point: a multiple of 60 (default 60), at most 1,440 points.
    #[serde(default)]
    pub step_seconds: Option<u32>,
}

/// A deployment's health over a range, added up over every replica, minute by minute.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HealthSeries {
    pub deployment: String,
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub until: OffsetDateTime,
    pub step_seconds: u32,
    /// The whole range.
    pub total: HealthPoint,
    /// The SLA's availability target (0.999).
    pub availability_target: f64,
    /// Whether the range's availability meets the target (true when nothing was asked).
    pub meets_target: bool,
    /// One point per step with requests in it (steps without traffic are left out).
    pub points: Vec<HealthPoint>,
}

/// The figures of one step.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HealthPoint {
    #[serde(with = "time::serde::rfc3339")]
    pub start: OffsetDateTime,
    pub requests: u64,
    pub rows: u64,
    /// Failed requests by error code.
    pub errors: BTreeMap<String, u64>,
    /// Failed requests over requests.
    pub error_rate: f64,
    /// Requests not failed by the platform (a 5xx answer) over requests; 1 without requests.
    /// A caller's mistakes (4xx) do not count against it.
    pub availability: f64,
    pub latency_ms: HealthLatency,
    pub versions: Vec<VersionHealth>,
}

/// Latency quantiles, read off the step's added histogram buckets.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HealthLatency {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub mean: f64,
}

/// A version's share of a step.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VersionHealth {
    pub version: u32,
    pub shadow: bool,
    pub requests: u64,
    pub batches: u64,
    pub mean_batch_rows: f64,
}

/// An alert of a deployment: a rule's state, with Prometheus' semantics (`pending` while the
/// condition has held for less than the rule's `for`, `firing` after, `resolved` once it stops).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Alert {
    /// `team/model@environment`.
    pub deployment: String,
    /// The rule: `error_rate` or `latency_p99` (the SLA's defaults on production deployments).
    pub rule: String,
    pub summary: String,
    pub severity: String,
    /// `pending`, `firing` or `resolved`.
    pub state: String,
    /// The rule's value at the last evaluation, and the threshold it is held against.
    pub value: f64,
    pub threshold: f64,
    /// When the condition started to hold.
    #[serde(with = "time::serde::rfc3339")]
    pub active_since: OffsetDateTime,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub fired_at: Option<OffsetDateTime>,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub resolved_at: Option<OffsetDateTime>,
}

/// A silence: while it lasts, matching alerts change state as always but send no notification.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSilence {
    /// Only this model's deployments (default: every deployment of the team).
    #[serde(default)]
    pub model: Option<String>,
    /// Only this environment (default: every environment).
    #[serde(default)]
    pub environment: Option<String>,
    /// Only this rule (`error_rate`, `latency_p99`; default: every rule).
    #[serde(default)]
    pub rule: Option<String>,
    /// When it ends (RFC 3339, in the future).
    #[serde(with = "time::serde::rfc3339")]
    pub ends_at: OffsetDateTime,
    /// Why (required).
    pub comment: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Silence {
    pub id: String,
    pub team: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub ends_at: OffsetDateTime,
    pub comment: String,
    pub created_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// An incident: opened by a firing alert (or joined by the next one on the same deployment
/// while open), acknowledged, resolved, with its timeline.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Incident {
    pub id: String,
    pub team: String,
    /// `team/model@environment`.
    pub deployment: String,
    pub title: String,
    /// `open`, `acknowledged` or `resolved`.
    pub state: String,
    #[serde(with = "time::serde::rfc3339")]
    pub opened_at: OffsetDateTime,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub acknowledged_at: Option<OffsetDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged_by: Option<String>,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub resolved_at: Option<OffsetDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_by: Option<String>,
    /// What happened, oldest first: alerts firing and resolving, acknowledgement, notes,
    /// resolution, and the deployment's changes (deploys, rollbacks) in between. Only in a
    /// single incident's answer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<TimelineEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TimelineEntry {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// `alert.firing`, `alert.resolved`, `acknowledged`, `note`, `resolved`, or the
    /// deployment's `deploy`, `traffic`, `rollback`, ...
    pub kind: String,
    pub by: String,
    pub text: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IncidentNote {
    pub text: String,
}

/// How fast a team acknowledges and resolves its incidents.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IncidentStats {
    pub team: String,
    pub incidents: u64,
    pub open: u64,
    /// Mean time to acknowledge, over the acknowledged incidents, in seconds.
    pub mtta_seconds: Spread,
    /// Mean time to resolve, over the resolved incidents, in seconds.
    pub mttr_seconds: Spread,
}

/// The median and the 90th percentile (nearest rank) of a set of durations; 0 when empty.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Spread {
    pub count: u64,
    pub median: f64,
    pub p90: f64,
}
