//! Serving: environments, deployments (traffic split, shadows, batching and scaling settings),
//! their history, grants, predictions and the prediction log.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Environment {
    pub name: String,
    pub description: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEnvironment {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
}

/// A version and the share of traffic it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrafficSplit {
    pub version: u32,
    /// Percent of requests, 0-100; the weights of a deployment add up to 100.
    pub weight: u32,
}

/// Adaptive batching: requests waiting together are run as one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Batching {
    /// The most rows run in one batch.
    pub max_batch_size: u32,
    /// How long a batch may wait for more requests while others are queued, in microseconds.
    pub max_wait_us: u32,
}

impl Default for Batching {
    fn default() -> Self {
        Batching { max_batch_size: 256, max_wait_us: 500 }
    }
}

/// The worker pool of each served version: it grows with the queue and shrinks when idle, down
/// to zero (the model is then unloaded; the next request loads it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Scaling {
    pub max_workers: u32,
    /// A worker with nothing to do for this long stops; the last one unloads the model.
    pub idle_seconds: u32,
}

impl Default for Scaling {
    fn default() -> Self {
        Scaling { max_workers: 2, idle_seconds: 300 }
    }
}

/// Load shedding and timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Requests queued beyond this are refused with 503 and `Retry-After`.
    pub max_queue: u32,
    /// A request not answered within this many milliseconds fails with `timeout`.
    pub timeout_ms: u32,
    /// The most rows one request may carry.
    pub max_rows: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_queue: 4096, timeout_ms: 5000, max_rows: 10_000 }
    }
}

/// How much of the prediction log a deployment keeps: records older than `max_age_hours`
/// go, and the oldest go once its files exceed `max_bytes` (files roll at an eighth of it, so
/// the log holds at most `max_bytes` plus the file being written).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LogRetention {
    /// Default 168 (7 days); 1-8760.
    pub max_age_hours: u32,
    /// Default 1 GiB; at least 1 MiB.
    pub max_bytes: u64,
}

impl Default for LogRetention {
    fn default() -> Self {
        LogRetention { max_age_hours: 168, max_bytes: 1 << 30 }
    }
}

/// Everything a deployment is told: which versions serve, with what share of traffic, which
/// shadow them, and how they are run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeploymentSpec {
    pub versions: Vec<TrafficSplit>,
    /// Versions that get a copy of every request; their answers are logged, never returned.
    #[serde(default)]
    pub shadows: Vec<u32>,
    #[serde(default)]
    pub batching: Batching,
    #[serde(default)]
    pub scaling: Scaling,
    #[serde(default)]
    pub limits: Limits,
    /// The share of requests written to the prediction log, 0.0-1.0.
    #[serde(default = "one")]
    pub log_sample_rate: f64,
    /// How long and how much of the prediction log is kept.
    #[serde(default)]
    pub log_retention: LogRetention,
    /// Anyone may call it, without an API key (demos, benchmarks). Default false.
    #[serde(default)]
    pub public: bool,
    /// Answered predictions are summarized for drift (off the request's path). Default true.
    #[serde(default = "yes")]
    pub monitor: bool,
    /// With `monitor`: each answered request's predictions are also kept (90 days) so that
    /// labels can be posted for them (live accuracy, its SLA alert). Default false: it costs a
    /// few microseconds of CPU per request and a row in the metadata database
    /// (docs/BENCHMARKS.md).
    #[serde(default)]
    pub keep_predictions: bool,
}

fn yes() -> bool {
    true
}

fn one() -> f64 {
    1.0
}

/// Changes only the traffic split and shadows of a deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetTraffic {
    pub versions: Vec<TrafficSplit>,
    #[serde(default)]
    pub shadows: Option<Vec<u32>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    /// The revision to go back to (default: the one before the current).
    #[serde(default)]
    pub to_revision: Option<u32>,
}

/// A model deployed in an environment.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Deployment {
    pub id: String,
    pub team: String,
    pub model: String,
    pub environment: String,
    /// Increases with every change.
    pub revision: u32,
    pub spec: DeploymentSpec,
    /// Teams allowed to call this deployment besides its own.
    pub granted_teams: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    pub updated_by: String,
}

/// One change of a deployment: what served from `at` on, and who changed it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeploymentRevision {
    pub revision: u32,
    /// `deploy`, `traffic`, `rollback` or `undeploy`.
    pub action: String,
    pub spec: DeploymentSpec,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub by: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeploymentQuery {
    #[serde(default)]
    pub team: Option<String>,
    #[serde(default)]
    pub environment: Option<String>,
    #[serde(default)]
    pub cursor: Option<String>,
    #[serde(default)]
    pub limit: Option<u32>,
}

/// A prediction request in Plinth's own shape: rows (objects keyed by feature name, or arrays in
/// feature order) or columns (feature name to values).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"rows": [{"age": 39, "education_num": 13, "capital_gain": 2174, "capital_loss": 0, "hours_per_week": 40, "sex_male": 1}]}))]
pub struct PredictRequest {
    #[serde(default)]
    #[schema(value_type = Option<Vec<Value>>)]
    pub rows: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub columns: Option<BTreeMap<String, Vec<serde_json::Value>>>,
    /// A caller-chosen key (user id, session id): the same key always reaches the same version.
    #[serde(default)]
    pub routing_key: Option<String>,
    /// Entity keys, join key by join key, instead of rows or columns: the features come from
    /// the online store through the version's feature service.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub entities: Option<BTreeMap<String, Vec<serde_json::Value>>>,
    /// Caller-chosen ids, one per row, by which labels can be posted later (`feedback`).
    #[serde(default)]
    pub ids: Option<Vec<String>>,
}

/// The answer: one prediction per row, the version that answered, and the request id.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PredictResponse {
    pub request_id: String,
    pub model: String,
    pub environment: String,
    pub version: u32,
    /// The predicted label (classifiers) or value (regressors) of each row.
    #[schema(value_type = Vec<Value>)]
    pub predictions: Vec<serde_json::Value>,
    /// Class probabilities of each row (classifiers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probabilities: Option<Vec<Vec<f32>>>,
}

/// Serving figures of a deployment since the server started.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeploymentMetrics {
    pub deployment: String,
    /// The replicas these figures add up: this one and those that published theirs within the
    /// last minute.
    pub replicas: u32,
    pub requests: u64,
    pub rows: u64,
    /// Failed requests by error code.
    pub errors: BTreeMap<String, u64>,
    pub latency_ms: LatencySummary,
    pub versions: Vec<VersionMetrics>,
    /// Prediction-log records dropped because the log's buffer was full.
    pub log_dropped: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LatencySummary {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub mean: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VersionMetrics {
    pub version: u32,
    pub shadow: bool,
    pub requests: u64,
    pub batches: u64,
    pub mean_batch_rows: f64,
    pub queue_depth: u64,
    pub workers: u64,
    pub model_loaded: bool,
    /// How long the last model load took.
    pub last_load_ms: Option<f64>,
    pub loads: u64,
}

/// One logged prediction.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PredictionRecord {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub request_id: String,
    pub version: u32,
    /// True for a shadow version's answer (never returned to the caller).
    pub shadow: bool,
    pub caller: String,
    #[schema(value_type = Object)]
    pub inputs: serde_json::Value,
    #[schema(value_type = Object)]
    pub outputs: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub latency_us: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PredictionLogQuery {
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub since: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub until: Option<OffsetDateTime>,
    /// Only the answers of shadow versions (true) or of served versions (false).
    #[serde(default)]
    pub shadow: Option<bool>,
    #[serde(default)]
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantRequest {
    pub team: String,
}
