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
