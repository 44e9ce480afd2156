//! Training on the platform: recipes (a team's named, versioned training spec), the runs that
//! execute them, and the triggers that retrain by themselves.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::data::DatasetRef;
use crate::tasks::TaskState;

/// Where a recipe's data comes from, read afresh at every run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RecipeData {
    /// A dataset of the team: a fixed version, or (no version) the latest at each run.
    Dataset(DatasetRef),
    /// SQL over the datasets the team may read (its own and those granted to it).
    Sql(String),
    /// A point-in-time correct training set from the feature store, built at each run: the
    /// entity dataset's rows (keys, timestamp, label) with the features as of each timestamp.
    TrainingSet(crate::features::CreateTrainingSetSource),
}

/// A command the run executes instead of a built-in trainer ("bring your own training code").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainCommand {
    /// The program and its arguments (no shell).
    pub argv: Vec<String>,
    /// Wall-clock limit, seconds (default 3600).
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
    /// Address-space limit, MiB (default 4096).
    #[serde(default)]
    pub memory_mb: Option<u64>,
}

/// When a recipe retrains by itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "on", rename_all = "snake_case", deny_unknown_fields)]
pub enum Trigger {
    /// A live metric of the deployment (from labelled predictions) crossing a threshold, e.g.
    /// `precision` below 0.85.
    Metric {
        metric: String,
        #[serde(default)]
        below: Option<f64>,
        #[serde(default)]
        above: Option<f64>,
        /// The window the metric is computed over, seconds (default 3600).
        #[serde(default)]
        window_seconds: Option<u64>,
        /// Labelled rows the window needs before the metric counts (default 50).
        #[serde(default)]
        min_labelled: Option<u64>,
    },
    /// A drift alert (`drift_share` or `feature_drift`) firing on the deployment.
    Drift,
    /// A cron expression (five fields, UTC).
    Schedule { cron: String },
    /// A new version of the recipe's source dataset.
    NewData,
}

/// What happens to the version a triggered run registers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Retrain {
    /// The deployment watched by metric and drift triggers, and promoted to: this environment
    /// of the recipe's model (default `production`).
    #[serde(default = "production")]
    pub environment: String,
    #[serde(default)]
    pub triggers: Vec<Trigger>,
    /// At most one triggered run per this many seconds (default 3600).
    #[serde(default)]
    pub cooldown_seconds: Option<u64>,
    /// Request promotion of the new version to `environment` once it is evaluated (the policy
    /// decides: self-serve, or the review queue). Default true.
    #[serde(default = "yes")]
    pub promote: bool,
    /// Promote as a canary at this weight (1-99) instead of all traffic.
    #[serde(default)]
    pub canary_weight: Option<u32>,
}

fn production() -> String {
    "production".into()
}

fn yes() -> bool {
    true
}

/// A recipe as written by its team.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecipeSpec {
    pub data: RecipeData,
    /// The label column.
    pub label: String,
    /// Feature columns (default: every column but the label and `exclude`).
    #[serde(default)]
    pub features: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    /// `gbdt` (gradient-boosted trees, LightGBM's parameters), `linear`, `logistic` or
    /// `command`.
    #[serde(default = "gbdt")]
    pub trainer: String,
    /// Trainer parameters (for gbdt, LightGBM's names and defaults).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub params: BTreeMap<String, Value>,
    #[serde(default)]
    pub command: Option<TrainCommand>,
    /// Share of rows held out and evaluated on (default 0.2).
    #[serde(default)]
    pub holdout_fraction: Option<f64>,
    /// The model of the team the trained version is registered into (it decides the task).
    pub model: String,
    /// Columns whose groups the evaluation checks for fairness.
    #[serde(default)]
    pub sensitive: Vec<String>,
    #[serde(default)]
    pub retrain: Option<Retrain>,
    /// Model-card fields every trained version carries (intended use, limitations, risk tier,
    /// ...); the platform fills `training_data` and `evaluation_data` itself.
    #[serde(default)]
    pub card: Option<crate::registry::ModelCard>,
    #[serde(default)]
    pub description: Option<String>,
}

fn gbdt() -> String {
    "gbdt".into()
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Recipe {
    pub team: String,
    pub name: String,
    /// Each change is a new version; runs record the version they ran.
    pub version: u32,
    pub spec: RecipeSpec,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub created_by: String,
    /// When a trigger last started a run (the cool-down counts from it).
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub last_triggered_at: Option<OffsetDateTime>,
}

/// Starting a run by hand.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRun {
    /// Parameters that override the recipe's for this run.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub params: BTreeMap<String, Value>,
}

/// One iteration of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunStep {
    pub iteration: u32,
    pub of: u32,
    pub metric: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid: Option<f64>,
}

/// What a run produced.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunResult {
    /// The registered version.
    pub version: u32,
    /// `name@version` of the data it trained on, and its content hash.
    pub dataset: String,
    pub dataset_sha256: String,
    pub train_rows: u64,
    pub holdout_rows: u64,
    /// The held-out evaluation attached to the version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluation: Option<String>,
    /// Its headline metrics.
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    /// The promotion requested for it (triggered runs), and where it stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion_status: Option<String>,
}

/// A training run: a task of the `training` queue.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TrainingRun {
    /// The run's id, which is also its task's.
    pub id: String,
    pub team: String,
    pub recipe: String,
    pub recipe_version: u32,
    pub model: String,
    pub state: TaskState,
    pub progress: f64,
    /// Why it started: `manual`, or the trigger (`metric:precision<0.85`, `drift`,
    /// `schedule`, `new_data`).
    pub trigger: String,
    #[serde(default)]
    pub steps: Vec<RunStep>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<RunResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub created_by: String,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub finished_at: Option<OffsetDateTime>,
}
