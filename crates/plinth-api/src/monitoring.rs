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

/// Ground truth for served predictions: up to 10,000 labels a request.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Feedback {
    pub labels: Vec<FeedbackLabel>,
}

/// One label: for the row `row` (default 0) of the request `request_id`, or for the prediction
/// the caller named `prediction_id` when it asked.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeedbackLabel {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prediction_id: Option<String>,
    /// Classifiers: the class index (0..C-1) or a boolean (binary); regressors: the value.
    #[schema(value_type = Value)]
    pub label: serde_json::Value,
}

/// What a feedback request changed: new labels, labels replaced by a different value, and
/// labels sent again with the value they had (counted once).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FeedbackResult {
    pub added: u64,
    pub replaced: u64,
    pub unchanged: u64,
}

/// Which range of served traffic (live performance, drift).
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RangeQuery {
    /// Start (RFC 3339); default a day before `until`.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub since: Option<OffsetDateTime>,
    /// End, exclusive (RFC 3339); default now.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub until: Option<OffsetDateTime>,
    /// Only this version (default: every version that answered in the range).
    #[serde(default)]
    pub version: Option<u32>,
}

/// A deployment's performance on its served predictions over a range, per version.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Performance {
    pub deployment: String,
    pub task: String,
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub until: OffsetDateTime,
    pub versions: Vec<VersionPerformance>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VersionPerformance {
    pub version: u32,
    /// Predicted rows captured in the range, and those with a label.
    pub predictions: u64,
    pub labelled: u64,
    /// `labelled / predictions`.
    pub label_coverage: f64,
    /// Realized metrics over the labelled rows, computed by the evaluation's code (empty
    /// without labels).
    pub metrics: BTreeMap<String, f64>,
    /// The version's latest evaluation: its metrics and dataset, and live minus evaluation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<PerformanceBaseline>,
    /// Binary classifiers with probabilities: performance estimated from the scores alone, over
    /// every captured row (labelled or not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated: Option<EstimatedPerformance>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PerformanceBaseline {
    pub evaluation: String,
    pub dataset: String,
    pub metrics: BTreeMap<String, f64>,
    /// Live minus baseline, for the metrics both have.
    pub delta: BTreeMap<String, f64>,
}

/// Confidence-based performance estimation (NannyML's CBPE).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EstimatedPerformance {
    pub method: String,
    /// What the estimate assumes; it is wrong where these do not hold.
    pub assumptions: String,
    pub rows: u64,
    /// accuracy, precision, recall, f1 from the expected confusion matrix.
    pub metrics: BTreeMap<String, f64>,
    /// The expected confusion matrix `[[tn, fp], [fn, tp]]`.
    pub confusion_matrix: Vec<Vec<f64>>,
}

/// Drift of a deployment's served traffic against its baseline.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ServedDrift {
    pub deployment: String,
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub until: OffsetDateTime,
    pub versions: Vec<VersionDrift>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VersionDrift {
    pub version: u32,
    /// The dataset the traffic is held against (`name@version`), and why it was chosen.
    pub baseline: String,
    pub baseline_source: String,
    pub rows_reference: u64,
    pub rows_current: u64,
    /// Every input feature, and `prediction`.
    pub columns: BTreeMap<String, FeatureDrift>,
    pub drifted_columns: DriftedColumns,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FeatureDrift {
    pub method: String,
    pub threshold: f64,
    pub score: f64,
    pub drifted: bool,
    /// The reference's and the traffic's distributions on common bins: bin labels (a value, a
    /// category, or a bin's lower edge) and each side's share.
    pub bins: Vec<String>,
    pub reference: Vec<f64>,
    pub current: Vec<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DriftedColumns {
    pub count: u64,
    pub share: f64,
    pub drift_share: f64,
    pub dataset_drift: bool,
}

/// How a deployment is monitored: its drift baseline and tests, and its alert rules beside the
/// SLA's defaults. Maintainers set it; every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MonitoringSettings {
    /// The dataset traffic is compared with (`name@version` of the team); default: the dataset
    /// of the serving version's latest evaluation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<String>,
    /// Per feature: the drift test (`ks`, `chisquare`, `z`, `jensenshannon`, `wasserstein`,
    /// `psi`) and its threshold, instead of Evidently's defaults.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub drift: BTreeMap<String, DriftTest>,
    /// The share of drifted columns that is dataset drift (default 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift_share: Option<f64>,
    /// The SLA's default rules by name (`error_rate`, `latency_p99`, `availability_fast_burn`,
    /// `availability_slow_burn`, `accuracy_drop`, `freshness`), tuned (threshold, for,
    /// severity) or disabled.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sla: BTreeMap<String, RuleOverride>,
    /// The deployment's own rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<AlertRule>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DriftTest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleOverride {
    #[serde(default)]
    pub disabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
}

/// An alert rule on one of the deployment's monitored series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    /// Unique on the deployment; the alert's name.
    pub name: String,
    /// The series: `error_rate`, `latency_p99` (ms), `burn_rate` (the error budget's burn over
    /// `window_seconds`, checked over a twelfth of it too, as Google's SRE book pages),
    /// `metric_drop` (the evaluation's `metric` minus the live one), `label_coverage`,
    /// `drift_share`, `feature_drift` (the `feature`'s score), `freshness` (seconds since the
    /// newest value of the views the deployment reads).
    pub series: String,
    /// The value fires the rule above the threshold; for `label_coverage` and p-value drift
    /// tests, below it.
    pub threshold: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature: Option<String>,
    /// The range the value is computed over (default 300 s; `burn_rate`: 3,600 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_seconds: Option<u32>,
    /// How long the condition must hold before the alert fires (default 300 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_seconds: Option<u32>,
    /// `critical`, `warning` (default) or `info`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    /// Labels of the rule's own (`service: checkout`, `owner: fraud-oncall`), added to the
    /// alert's notifications (Alertmanager's labels, PagerDuty's details); they cannot
    /// replace Plinth's own (alertname, severity, team, model, environment, deployment).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}
