//! Cost allocation and the platform's own figures: the price book (plans), each team's plan,
//! limits and budget, metered usage, monthly statements, and the platform report (adoption,
//! quality, business, delivery, satisfaction).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

/// A plan of the price book. Prices are in USD.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Predictions (rows answered) each month that cost nothing: the first units of the month.
    #[serde(default)]
    pub free_predictions: u64,
    /// Graduated tiers over the month's predictions beyond the free allowance: each unit is
    /// charged at the rate of the tier it falls in. `up_to` counts the month's units from the
    /// first (free ones included); the last tier has none.
    #[serde(default)]
    pub tiers: Vec<Tier>,
    /// Serving and training compute, per vCPU-hour of CPU time.
    #[serde(default)]
    pub vcpu_hour_usd: f64,
    /// Serving memory (each loaded model's bytes, for as long as it is loaded), per GB-hour.
    #[serde(default)]
    pub memory_gb_hour_usd: f64,
    /// Artifacts, datasets and the prediction log, per GB-month (730 hours).
    #[serde(default)]
    pub storage_gb_month_usd: f64,
    /// Limits of every team on the plan, unless the team has its own.
    #[serde(default)]
    pub quotas: Quotas,
}

/// A tier of a graduated price.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    /// The last unit of the month in this tier; none for the last tier.
    #[serde(default)]
    pub up_to: Option<u64>,
    pub usd_per_million: f64,
}

/// A team's limits; none is no limit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Quotas {
    /// Predictions (rows answered) per calendar month (UTC).
    #[serde(default)]
    pub predictions_per_month: Option<u64>,
    /// Prediction requests per second, over every replica.
    #[serde(default)]
    pub requests_per_second: Option<u64>,
    /// Bytes of artifacts and datasets.
    #[serde(default)]
    pub storage_bytes: Option<u64>,
}

/// A team's billing: its plan (and the one from next month, when changed), limits, budget.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TeamBilling {
    pub team: String,
    /// This month's plan.
    pub plan: String,
    /// The plan from next month on, when it differs.
    pub next_plan: Option<String>,
    /// The limits in force: the team's own, else its plan's.
    pub quotas: Quotas,
    /// The team's own limits (none: the plan's).
    pub own_quotas: Quotas,
    pub budget_usd: Option<f64>,
    /// This month so far.
    pub month: String,
    pub predictions_this_month: u64,
    pub cost_this_month_usd: f64,
    pub storage_bytes: u64,
}

/// A change of a team's plan (from the next month on).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanChange {
    pub plan: String,
}

/// A team's own limits and budget. Omitted or null fields fall back to the plan's.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsUpdate {
    #[serde(default)]
    pub quotas: Quotas,
    #[serde(default)]
    pub budget_usd: Option<f64>,
}

/// Which month (`YYYY-MM`, UTC); this month when omitted.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MonthQuery {
    #[serde(default)]
    pub month: Option<String>,
    /// `json` (default) or `csv`.
    #[serde(default)]
    pub format: Option<String>,
}

/// What a team used in a month, per model and deployment.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Usage {
    pub team: String,
    pub month: String,
    pub items: Vec<UsageItem>,
    pub totals: UsageTotals,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UsageItem {
    /// predictions, shadow, training, artifacts, datasets or prediction_log.
    pub item: String,
    pub model: Option<String>,
    /// The deployment's environment, the run's recipe, or the dataset.
    pub subject: Option<String>,
    pub version: Option<u32>,
    pub requests: u64,
    pub predictions: u64,
    pub cpu_seconds: f64,
    /// Memory (loaded models) or storage held, in GB-hours.
    pub gb_hours: f64,
    pub runs: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct UsageTotals {
    pub requests: u64,
    pub predictions: u64,
    pub serving_cpu_seconds: f64,
    pub training_cpu_seconds: f64,
    pub memory_gb_hours: f64,
    pub storage_gb_months: f64,
    pub training_runs: u64,
}

/// A team's statement of a month: every line, and the plan's arithmetic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Statement {
    pub team: String,
    pub month: String,
    pub plan: Plan,
    /// `open` (the month runs: figures so far) or `closed` (final, never changes).
    pub status: String,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub closed_at: Option<OffsetDateTime>,
    pub currency: String,
    pub predictions: PredictionCharge,
    pub lines: Vec<StatementLine>,
    /// Per model: its predictions, its lines' cost, and the cost per 1,000 predictions.
    pub models: Vec<ModelCost>,
    pub total_usd: f64,
    pub budget_usd: Option<f64>,
}

/// The month's predictions priced by the plan's graduated tiers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PredictionCharge {
    pub requests: u64,
    pub predictions: u64,
    pub free: u64,
    pub billed: u64,
    pub tiers: Vec<TierCharge>,
    pub amount_usd: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TierCharge {
    /// The tier's first and last unit of the month (1-based); `to` none for the last tier.
    pub from: u64,
    pub to: Option<u64>,
    pub units: u64,
    pub usd_per_million: f64,
    pub amount_usd: f64,
}

/// One line of a statement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StatementLine {
    /// predictions, serving_compute, serving_memory, training, storage_artifacts,
    /// storage_datasets or storage_prediction_log.
    pub item: String,
    pub model: Option<String>,
    pub subject: Option<String>,
    pub quantity: f64,
    /// predictions, vCPU-hours, GB-hours or GB-months.
    pub unit: String,
    /// The rate, per unit (for predictions: the line's share of the tiered charge).
    pub rate_usd: f64,
    pub amount_usd: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ModelCost {
    pub model: String,
    pub predictions: u64,
    pub amount_usd: f64,
    pub cost_per_1000_predictions_usd: Option<f64>,
}

/// A month of a team's statements list.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StatementSummary {
    pub month: String,
    pub status: String,
    pub total_usd: f64,
    pub predictions: u64,
}

/// A satisfaction answer: 1 (very unhappy) to 5 (very happy), once a month per person.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SurveyAnswer {
    pub score: u8,
    #[serde(default)]
    pub comment: String,
    /// The team the answer speaks for (one of the caller's); none for the platform at large.
    #[serde(default)]
    pub team: Option<String>,
}

/// Which period and slice the report covers.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReportQuery {
    /// `YYYY-MM`; this month when omitted.
    #[serde(default)]
    pub month: Option<String>,
    /// One team's slice (admins see every team when omitted; others must name one of theirs).
    #[serde(default)]
    pub team: Option<String>,
}

/// The platform's own figures for a month: the product brief's dashboard.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PlatformReport {
    pub month: String,
    /// The team the report is about; none for the whole platform.
    pub team: Option<String>,
    pub adoption: Adoption,
    pub quality: Quality,
    pub business: Business,
    pub delivery: DoraKeys,
    pub satisfaction: Satisfaction,
    #[serde(with = "time::serde::rfc3339")]
    pub generated_at: OffsetDateTime,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Adoption {
    /// Teams with a prediction, a new version or a training run this month.
    pub teams_active: u64,
    pub teams_total: u64,
    pub models_registered: u64,
    /// Models with a production deployment.
    pub models_deployed: u64,
    pub predictions_this_month: u64,
    pub predictions_last_month: u64,
    /// Month-over-month growth of predictions, as a fraction (none without last month).
    pub growth: Option<f64>,
    /// Predictions per month, the last six months, oldest first.
    pub predictions_trend: Vec<MonthFigure>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MonthFigure {
    pub month: String,
    pub value: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Quality {
    /// Successful / total requests of production deployments this month (platform failures
    /// only count against it); none without requests.
    pub availability: Option<f64>,
    pub availability_target: f64,
    /// Mean live accuracy of production deployments with labels this month, and how many.
    pub average_live_accuracy: Option<f64>,
    pub models_with_labels: u64,
    pub incidents_opened: u64,
    /// Time to acknowledge and to resolve incidents opened this month, in minutes.
    pub mtta_minutes: Percentiles,
    pub mttr_minutes: Percentiles,
    /// CSAT: the share of 4-5 answers this month.
    pub satisfaction: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct Percentiles {
    pub count: u64,
    pub median: Option<f64>,
    pub p90: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Business {
    pub cost_usd: f64,
    /// Cost per prediction this month, and per month for the last six.
    pub cost_per_prediction_usd: Option<f64>,
    pub cost_per_prediction_trend: Vec<MonthFigure>,
    pub cost_by_team: BTreeMap<String, f64>,
    /// From a model's first version to its first production prediction, in hours: models
    /// whose first production prediction came this month.
    pub time_to_launch_hours: Percentiles,
}

/// DORA's four keys for models: a deployment is a change of what serves in production, a
/// change is a version registration.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DoraKeys {
    /// Production deployments this month, and DORA's bucket (daily, weekly, monthly, yearly).
    pub deployments: u64,
    pub deployment_frequency: String,
    /// From a version's registration to its first production deployment, in hours.
    pub lead_time_hours: Percentiles,
    /// Production deployments followed within `failure_window_hours` by a rollback or an
    /// incident on that deployment, over all production deployments.
    pub change_failure_rate: Option<f64>,
    pub failure_window_hours: u64,
    /// From an incident's opening to its resolution, in hours.
    pub time_to_restore_hours: Percentiles,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Satisfaction {
    pub answers: u64,
    pub mean_score: Option<f64>,
    /// Share of 4 and 5.
    pub csat: Option<f64>,
    /// Per team (teams with at least one answer), never per person.
    pub by_team: BTreeMap<String, TeamSatisfaction>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TeamSatisfaction {
    pub answers: u64,
    pub csat: f64,
}
