//! Governance: evaluations (with fairness), policies, promotion requests and their reviews,
//! webhooks, and "what served when" history.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

use crate::data::DatasetRef;

/// The state of a durable job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => JobStatus::Queued,
            "running" => JobStatus::Running,
            "succeeded" => JobStatus::Succeeded,
            "failed" => JobStatus::Failed,
            _ => return None,
        })
    }
}

/// Evaluate a model version on a dataset version.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EvaluationRequest {
    pub version: u32,
    pub dataset: DatasetRef,
    /// The column holding the true label (classification: the class index or its label;
    /// regression: the target).
    pub label: String,
    /// Columns whose groups are checked for fairness (binary classification).
    #[serde(default)]
    pub sensitive: Vec<String>,
    /// Columns to report metrics per value of.
    #[serde(default)]
    pub slices: Vec<String>,
    /// Compare with the version serving in this environment (default `production`).
    #[serde(default)]
    pub compare_environment: Option<String>,
}

/// An evaluation job and, once it succeeded, its result.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Evaluation {
    pub id: String,
    pub team: String,
    pub model: String,
    pub version: u32,
    /// `name@version` of the dataset.
    pub dataset: String,
    pub label: String,
    pub sensitive: Vec<String>,
    pub slices: Vec<String>,
    pub status: JobStatus,
    /// 0.0-1.0.
    pub progress: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<EvaluationResult>,
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

/// Metrics of one evaluation; a metric that is undefined for the data (e.g. ROC AUC with one
/// class present) is absent.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
pub struct EvaluationResult {
    pub rows: u64,
    /// Headline metrics by name (`accuracy`, `roc_auc`, `rmse`, ...).
    pub metrics: BTreeMap<String, f64>,
    /// Classification: rows = true class, columns = predicted class, in `classes` order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confusion_matrix: Option<Vec<Vec<u64>>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<String>,
    /// Binary classification: 10 uniform bins, non-empty bins only (as scikit-learn's
    /// `calibration_curve`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Calibration>,
    /// Per sensitive attribute.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fairness: BTreeMap<String, Fairness>,
    /// Per slice column, per value: the headline metrics.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub slices: BTreeMap<String, BTreeMap<String, SliceMetrics>>,
    /// The version serving the comparison environment when the evaluation ran, and its metrics
    /// on the same data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Baseline>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Calibration {
    pub prob_true: Vec<f64>,
    pub prob_pred: Vec<f64>,
    pub counts: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SliceMetrics {
    pub rows: u64,
    pub metrics: BTreeMap<String, f64>,
}

/// Fairness of a binary classifier across the groups of one attribute (Fairlearn's
/// definitions: difference = max - min over groups, ratio = min / max).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Fairness {
    pub by_group: BTreeMap<String, GroupMetrics>,
    pub demographic_parity_difference: f64,
    pub demographic_parity_ratio: f64,
    pub equalized_odds_difference: f64,
    pub equalized_odds_ratio: f64,
    /// True when every group's selection rate is at least 80 % of the highest one's.
    pub four_fifths_rule: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GroupMetrics {
    pub count: u64,
    pub selection_rate: f64,
    pub tpr: f64,
    pub fpr: f64,
    pub accuracy: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Baseline {
    pub environment: String,
    pub version: u32,
    pub metrics: BTreeMap<String, f64>,
    /// This evaluation's metric minus the baseline's.
    pub delta: BTreeMap<String, f64>,
}

/// A metric bound: `min` and/or `max`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Bound {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

/// A promotion policy, for one environment. A team's policy adds to the platform default an
/// admin sets: the policy in force is the stricter of the two, field by field (gated if either
/// is; every bound of both; the larger reviewer count per tier; self-serve only if both allow
/// it, with the smaller tolerance; the platform's required dataset when it names one). A team
/// can tighten what the platform requires, never loosen it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Deploying to this environment needs an approved promotion (direct deploys are refused).
    #[serde(default = "yes")]
    pub gated: bool,
    /// The evaluation dataset a promotion must have been evaluated on (`name` of a dataset of
    /// the model's team; latest version when no version is given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_dataset: Option<DatasetRef>,
    /// Absolute bounds on metrics, by metric name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, Bound>,
    /// Largest allowed worsening against the version serving this environment, by metric name
    /// (for error metrics such as `rmse` or `log_loss`, an increase is a worsening).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub max_regression: BTreeMap<String, f64>,
    /// Bounds on fairness metrics (`demographic_parity_difference`, `..._ratio`,
    /// `equalized_odds_difference`, `..._ratio`) that every sensitive attribute must meet.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fairness: BTreeMap<String, Bound>,
    /// Sensitive attributes the evaluation must have covered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sensitive_attributes: Vec<String>,
    /// Model-card fields that must be filled in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_card_fields: Vec<String>,
    /// Human approvals needed, by risk tier (`low`, `medium`, `high`; a tier not listed needs 1).
    #[serde(default)]
    pub reviewers: BTreeMap<String, u32>,
    /// The version must have been promoted to `staging` first.
    #[serde(default)]
    pub require_staging: bool,
    /// Low-risk changes are approved without a reviewer.
    #[serde(default)]
    pub self_serve: SelfServe,
    /// On the platform default: a team's change to its own policy for this environment waits
    /// for an independent reviewer's approval before it takes effect.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub review_team_changes: bool,
    /// Deployments here keep the SLA's default alerts: a team may tighten them but not
    /// disable or loosen them, and may not turn the deployment's monitoring off.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_sla_alerts: bool,
}

impl Policy {
    /// Human approvals needed for a risk tier (1 when the tier is not listed).
    pub fn reviewers_for(&self, tier: &str) -> u32 {
        self.reviewers.get(tier).copied().unwrap_or(1)
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SelfServe {
    #[serde(default)]
    pub enabled: bool,
    /// How much worse than production a metric may be and still count as "not worse".
    #[serde(default = "default_tolerance")]
    pub tolerance: f64,
}

impl Default for SelfServe {
    fn default() -> Self {
        SelfServe { enabled: false, tolerance: default_tolerance() }
    }
}

fn default_tolerance() -> f64 {
    0.005
}

/// A stored policy and where it applies.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PolicyRecord {
    /// The team, or absent for the platform default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    pub environment: String,
    pub policy: Policy,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    pub updated_by: String,
}

/// A change to a team's policy that waits for a reviewer (the platform default for the
/// environment has `review_team_changes`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PolicyChange {
    pub id: String,
    pub team: String,
    pub environment: String,
    /// The policy the team asked for.
    pub policy: Policy,
    pub status: PolicyChangeStatus,
    pub requested_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub requested_at: OffsetDateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub decided_at: Option<OffsetDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PolicyChangeStatus {
    PendingReview,
    Approved,
    Rejected,
}

impl PolicyChangeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyChangeStatus::PendingReview => "pending_review",
            PolicyChangeStatus::Approved => "approved",
            PolicyChangeStatus::Rejected => "rejected",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending_review" => PolicyChangeStatus::PendingReview,
            "approved" => PolicyChangeStatus::Approved,
            "rejected" => PolicyChangeStatus::Rejected,
            _ => return None,
        })
    }
}

/// What setting a team's policy did: it is in force, or it waits for a reviewer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum PolicyOutcome {
    Applied(PolicyRecord),
    Pending(PolicyChange),
}

/// Filters of `GET /policy-changes`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PolicyChangeQuery {
    #[serde(default)]
    pub team: Option<String>,
    /// `pending_review`, `approved` or `rejected`.
    #[serde(default)]
    pub status: Option<String>,
}

/// A reviewer's decision on a policy change: `approve` puts it in force.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyChangeReview {
    pub decision: Decision,
    #[serde(default)]
    pub comment: Option<String>,
}

/// Ask for a version to serve in an environment.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PromotionRequest {
    pub version: u32,
    pub environment: String,
    /// Start as a canary at this weight (1-99) next to what serves now; default: 100 (all
    /// traffic).
    #[serde(default)]
    pub canary_weight: Option<u32>,
    /// Use this evaluation as evidence (default: the latest succeeded evaluation of the version
    /// on the policy's dataset).
    #[serde(default)]
    pub evaluation: Option<String>,
    #[serde(default)]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PromotionStatus {
    /// Checks failed: the promotion cannot proceed (see the checks).
    Blocked,
    /// Waiting for reviewers.
    PendingReview,
    /// A reviewer asked for changes.
    ChangesRequested,
    Rejected,
    /// Approved and deployed.
    Deployed,
}

impl PromotionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PromotionStatus::Blocked => "blocked",
            PromotionStatus::PendingReview => "pending_review",
            PromotionStatus::ChangesRequested => "changes_requested",
            PromotionStatus::Rejected => "rejected",
            PromotionStatus::Deployed => "deployed",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "blocked" => PromotionStatus::Blocked,
            "pending_review" => PromotionStatus::PendingReview,
            "changes_requested" => PromotionStatus::ChangesRequested,
            "rejected" => PromotionStatus::Rejected,
            "deployed" => PromotionStatus::Deployed,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    Passed,
    Failed,
    /// Not applicable (e.g. nothing serves yet to compare with).
    Skipped,
    /// Needs a reviewer's attention without blocking: the request waits for at least one
    /// reviewer, whatever the policy's tier or self-serve rule (e.g. a signature change that
    /// breaks callers of the version serving now).
    Flagged,
}

/// One automated check of a promotion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Check {
    pub name: String,
    pub status: CheckStatus,
    /// What was measured against what.
    pub evidence: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Approve,
    Reject,
    RequestChanges,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Approve => "approve",
            Decision::Reject => "reject",
            Decision::RequestChanges => "request_changes",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewRequest {
    pub decision: Decision,
    #[serde(default)]
    pub comment: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Review {
    pub reviewer: String,
    pub decision: Decision,
    pub comment: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// A request to promote a version, its checks, reviews and outcome.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Promotion {
    pub id: String,
    pub team: String,
    pub model: String,
    pub version: u32,
    pub environment: String,
    pub status: PromotionStatus,
    pub risk_tier: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_weight: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluation: Option<String>,
    pub checks: Vec<Check>,
    pub required_reviewers: u32,
    pub reviews: Vec<Review>,
    /// Why it was approved without a reviewer (the self-serve rule), when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_approved: Option<String>,
    pub note: String,
    pub requested_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub requested_at: OffsetDateTime,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub decided_at: Option<OffsetDateTime>,
    /// The deployment revision it produced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_revision: Option<u32>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PromotionQuery {
    #[serde(default)]
    pub team: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    /// `blocked`, `pending_review`, `changes_requested`, `rejected`, `deployed`.
    #[serde(default)]
    pub status: Option<String>,
    /// Only requests the caller may review (not their own, in teams they review).
    #[serde(default)]
    pub reviewable: Option<bool>,
    #[serde(default)]
    pub cursor: Option<String>,
    #[serde(default)]
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ServedQuery {
    pub environment: String,
    /// RFC 3339 time; default now.
    #[serde(default)]
    pub at: Option<String>,
}

/// What served an environment at a moment, and how it got there.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ServedAt {
    pub team: String,
    pub model: String,
    pub environment: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Absent when nothing served then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<crate::serving::DeploymentRevision>,
    /// The promotion behind each serving version, with its approvals and evidence.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub promotions: Vec<Promotion>,
}

/// A webhook subscription of a team.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    pub url: String,
    /// Events to send (`promotion.requested`, `model_version.registered`, `deployment.changed`,
    /// `alert.firing`, ...; the error of an unknown one lists them); empty = all.
    #[serde(default)]
    pub events: Vec<String>,
    /// The body's shape: Plinth's own (every event), or, for alert events only, Alertmanager's
    /// webhook (version 4) or PagerDuty's Events API v2.
    #[serde(default)]
    pub format: WebhookFormat,
    /// The PagerDuty integration's routing key (required with `pagerduty`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_key: Option<String>,
}

/// The shape of a webhook's body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    #[default]
    Plinth,
    Alertmanager,
    Pagerduty,
}

impl WebhookFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookFormat::Plinth => "plinth",
            WebhookFormat::Alertmanager => "alertmanager",
            WebhookFormat::Pagerduty => "pagerduty",
        }
    }

    pub fn parse(s: &str) -> Option<WebhookFormat> {
        [WebhookFormat::Plinth, WebhookFormat::Alertmanager, WebhookFormat::Pagerduty]
            .into_iter()
            .find(|f| f.as_str() == s)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Webhook {
    pub id: String,
    pub team: String,
    pub url: String,
    pub events: Vec<String>,
    pub format: WebhookFormat,
    /// The HMAC-SHA256 signing secret: shown once, at creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Delivery {
    pub id: String,
    pub webhook: String,
    pub event: String,
    /// `pending`, `delivered`, `failed` (gave up).
    pub status: String,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status_code: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub payload: serde_json::Value,
}
