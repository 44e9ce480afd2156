//! The feature store: entities, feature views, feature services, online reads and pushes,
//! materialization jobs and freshness.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::data::{ColumnType, DatasetRef};
use crate::governance::JobStatus;

/// A join key of an entity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinKey {
    pub name: String,
    /// `int64` or `string`.
    #[serde(rename = "type")]
    pub kind: ColumnType,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEntity {
    pub name: String,
    pub join_keys: Vec<JoinKey>,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Entity {
    pub team: String,
    pub name: String,
    pub join_keys: Vec<JoinKey>,
    pub description: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// A typed feature of a view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeatureField {
    pub name: String,
    /// `int64`, `float64`, `bool` or `string`.
    #[serde(rename = "type")]
    pub kind: ColumnType,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateFeatureView {
    pub name: String,
    pub entity: String,
    /// A dataset of the team (the latest version when none is given).
    pub source: DatasetRef,
    /// The event-time column of the source.
    pub timestamp_field: String,
    /// The created-time column, which breaks ties of event time.
    #[serde(default)]
    pub created_timestamp_field: Option<String>,
    pub features: Vec<FeatureField>,
    /// Rows older than this (seconds) do not join in training sets; default 0 = no limit.
    #[serde(default)]
    pub ttl_seconds: u64,
    /// Materialized to the online store (default true).
    #[serde(default = "yes")]
    pub online: bool,
    /// Stale when the newest event is older than this (seconds; default one hour).
    #[serde(default = "hour")]
    pub freshness_sla_seconds: u64,
    /// Anyone may read its online features without an API key (demos, benchmarks).
    #[serde(default)]
    pub public: bool,
}

fn yes() -> bool {
    true
}
fn hour() -> u64 {
    3600
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FeatureView {
    pub team: String,
    pub name: String,
    pub entity: String,
    pub join_keys: Vec<JoinKey>,
    pub source: DatasetRef,
    pub timestamp_field: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_timestamp_field: Option<String>,
    pub features: Vec<FeatureField>,
    pub ttl_seconds: u64,
    pub online: bool,
    pub freshness_sla_seconds: u64,
    pub public: bool,
    pub freshness: Freshness,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// How fresh a view's online values are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Freshness {
    /// The newest event time written to the online store (materialized or pushed).
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub last_event_at: Option<OffsetDateTime>,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub last_materialized_at: Option<OffsetDateTime>,
    /// The newest event time materialized: the next incremental run starts after it.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub watermark: Option<OffsetDateTime>,
    /// True when the newest event is older than the freshness SLA (or nothing was written).
    pub stale: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateFeatureService {
    pub name: String,
    /// `view:feature` references.
    pub features: Vec<String>,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FeatureService {
    pub team: String,
    pub name: String,
    pub features: Vec<String>,
    pub description: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// Online read, Feast's `get-online-features` body: `features` (`view:feature`) or a
/// `feature_service`, and the entity keys column by column.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"features": ["stats:conv_rate"], "entities": {"driver_id": [1, 2]}}))]
pub struct OnlineRequest {
    #[serde(default)]
    pub features: Vec<String>,
    #[serde(default)]
    pub feature_service: Option<String>,
    #[schema(value_type = Object)]
    pub entities: BTreeMap<String, Vec<serde_json::Value>>,
}

/// Feast's answer shape: one result per column (the join keys, then each feature), each with a
/// value, a status (`PRESENT`, `NOT_FOUND`) and an event time per entity row.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OnlineResponse {
    pub metadata: OnlineMetadata,
    pub results: Vec<OnlineColumn>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OnlineMetadata {
    pub feature_names: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OnlineColumn {
    #[schema(value_type = Vec<Value>)]
    pub values: Vec<serde_json::Value>,
    pub statuses: Vec<String>,
    pub event_timestamps: Vec<String>,
}

/// Fresh values written straight to the online store: each row has the view's join keys, the
/// event time (`event_timestamp`, RFC 3339) and features (absent ones are null).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PushRequest {
    pub feature_view: String,
    #[schema(value_type = Vec<Object>)]
    pub rows: Vec<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PushResponse {
    /// Rows written (rows older than the stored ones are skipped).
    pub written: u64,
    pub received: u64,
}

/// Build a point-in-time correct training set: for each row of the entity dataset, the features
/// as they were at its timestamp. Saved as a new version of dataset `name`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTrainingSet {
    /// The dataset to save it as.
    pub name: String,
    /// A dataset of the team with the join keys and a timestamp per row.
    pub entities: DatasetRef,
    /// The entity dataset's timestamp column (default `event_timestamp`).
    #[serde(default)]
    pub entity_timestamp: Option<String>,
    #[serde(default)]
    pub feature_service: Option<String>,
    /// `view:feature` references (instead of a feature service).
    #[serde(default)]
    pub features: Vec<String>,
}

/// A training set's inputs, without the dataset it is saved as (a recipe names that).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTrainingSetSource {
    /// A dataset of the team with the join keys, a timestamp per row and the label.
    pub entities: DatasetRef,
    #[serde(default)]
    pub entity_timestamp: Option<String>,
    #[serde(default)]
    pub feature_service: Option<String>,
    #[serde(default)]
    pub features: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MaterializeRequest {
    /// Only rows newer than the view's watermark (default true); false rewrites everything.
    #[serde(default)]
    pub incremental: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Materialization {
    pub id: String,
    pub team: String,
    pub feature_view: String,
    pub incremental: bool,
    pub status: JobStatus,
    pub progress: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When it succeeded: rows read, entities written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub result: Option<serde_json::Value>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}
