//! Promotion policies: one per team and environment, falling back to the platform default an
//! admin sets for the environment. An environment without any policy is not gated.

use plinth_api::governance::{Policy, PolicyRecord};
use plinth_api::identity::TeamRole;
use sqlx::any::AnyRow;

use crate::Plinth;
use crate::audit::{self, Target};
use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::store::{Sql, col};
use crate::util::{micros_to_time, now_micros};

/// The scope key of the platform default.
const PLATFORM: &str = "*";

const METRICS: &[&str] = &[
    "accuracy",
    "precision",
    "recall",
    "f1",
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "roc_auc",
    "roc_auc_ovr",
    "pr_auc",
    "log_loss",
    "brier_score",
    "rmse",
    "mae",
    "r2",
    "mape",
];
const FAIRNESS: &[&str] = &[
    "demographic_parity_difference",
    "demographic_parity_ratio",
    "equalized_odds_difference",
    "equalized_odds_ratio",
];
pub(crate) const CARD_FIELDS: &[&str] = &[
    "intended_use",
    "limitations",
    "ethical_considerations",
    "training_data",
    "evaluation_data",
    "owners",
    "risk_tier",
];
const TIERS: &[&str] = &["low", "medium", "high"];

fn check_bound(field: &str, b: &plinth_api::governance::Bound) -> Result<()> {
    if b.min.is_none() && b.max.is_none() {
        return Err(Error::invalid(field, "give min, max or both"));
    }
    for v in [b.min, b.max].into_iter().flatten() {
        if !v.is_finite() {
            return Err(Error::invalid(field, "bounds must be finite numbers"));
        }
    }
    if let (Some(lo), Some(hi)) = (b.min, b.max)
        && lo > hi
    {
        return Err(Error::invalid(field, format!("min {lo} is above max {hi}")));
    }
    Ok(())
}

fn check_policy(p: &Policy) -> Result<()> {
    for (name, b) in &p.metrics {
        if !METRICS.contains(&name.as_str()) {
            return Err(Error::invalid(
                format!("metrics.{name}"),
                format!("unknown metric; known: {}", METRICS.join(", ")),
            ));
        }
        check_bound(&format!("metrics.{name}"), b)?;
    }
    for (name, v) in &p.max_regression {
        if !METRICS.contains(&name.as_str()) {
            return Err(Error::invalid(format!("max_regression.{name}"), "unknown metric"));
        }
        if !(v.is_finite() && *v >= 0.0) {
            return Err(Error::invalid(format!("max_regression.{name}"), "must be 0 or more"));
        }
    }
    for (name, b) in &p.fairness {
        if !FAIRNESS.contains(&name.as_str()) {
            return Err(Error::invalid(
                format!("fairness.{name}"),
                format!("unknown fairness metric; known: {}", FAIRNESS.join(", ")),
            ));
        }
        check_bound(&format!("fairness.{name}"), b)?;
    }
    for (i, f) in p.required_card_fields.iter().enumerate() {
        if !CARD_FIELDS.contains(&f.as_str()) {
            return Err(Error::invalid(
                format!("required_card_fields[{i}]"),
                format!("unknown card field '{f}'; known: {}", CARD_FIELDS.join(", ")),
            ));
        }
    }
    for (tier, n) in &p.reviewers {
        if !TIERS.contains(&tier.as_str()) {
            return Err(Error::invalid(format!("reviewers.{tier}"), "tiers are low, medium, high"));
        }
        if *n > 10 {
            return Err(Error::invalid(format!("reviewers.{tier}"), "at most 10 reviewers"));
        }
    }
    let t = p.self_serve.tolerance;
    if !(t.is_finite() && (0.0..=1.0).contains(&t)) {
        return Err(Error::invalid("self_serve.tolerance", "must be between 0 and 1"));
    }
    Ok(())
}

fn record_from_row(row: &AnyRow, team: Option<String>) -> Result<PolicyRecord> {
    Ok(PolicyRecord {
        team,
        environment: col(row, "environment")?,
        policy: serde_json::from_str(&col::<String>(row, "body")?)?,
        updated_at: micros_to_time(col(row, "updated_at")?),
        updated_by: col(row, "updated_by_name")?,
    })
}

impl Plinth {
    /// Sets the policy of a team (maintainers) or, with `team = None`, the platform default
    /// (admins) for one environment.
    pub async fn set_policy(
        &self,
        who: &Principal,
        team: Option<&str>,
        environment: &str,
        policy: Policy,
    ) -> Result<PolicyRecord> {
        let (scope, team_name) = match team {
            Some(t) => {
                let t = self.team_ref(who, t).await?;
                who.require(&t, TeamRole::Maintainer, "setting a policy")?;
                (t.id, Some(t.name))
            }
            None => {
                who.require_admin("setting the platform default policy")?;
                (PLATFORM.to_string(), None)
            }
        };
        self.environment_exists(environment, "environment").await?;
        check_policy(&policy)?;
        if let Some(ds) = &policy.required_dataset {
            crate::util::check_name("required_dataset.name", &ds.name)?;
        }
        let body = serde_json::to_string(&policy)?;
        let now = now_micros();
        let mut tx = self.db.begin().await?;
        Sql::with(
            "DELETE FROM policies WHERE scope = $1 AND environment = $2",
            [scope.clone().into(), environment.into()],
        )
        .execute(&mut tx)
        .await?;
        Sql::with(
            "INSERT INTO policies (scope, environment, body, updated_at, updated_by) VALUES ($1, $2, $3, $4, $5)",
            [scope.clone().into(), environment.into(), body.into(), now.into(), who.id.clone().into()],
        )
        .execute(&mut tx)
        .await?;
        let name = format!("{}@{environment}", team_name.as_deref().unwrap_or("platform"));
        let team_id = (scope != PLATFORM).then_some(scope.as_str());
        let t = Target { team_id, object_type: "policy", object_id: &name, object_name: &name };
        audit::record(&mut tx, who, "policy.set", t, serde_json::to_value(&policy)?).await?;
        tx.commit().await?;
        Ok(PolicyRecord {
            team: team_name,
            environment: environment.to_string(),
            policy,
            updated_at: micros_to_time(now),
            updated_by: who.name.clone(),
        })
    }

    /// The policies that apply to a team: its own and the platform defaults, per environment.
    pub async fn list_policies(
        &self,
        who: &Principal,
        team: Option<&str>,
    ) -> Result<Vec<PolicyRecord>> {
        let mut out = Vec::new();
        let sql = "SELECT p.*, COALESCE(pr.name, p.updated_by) AS updated_by_name FROM policies p
                   LEFT JOIN principals pr ON pr.id = p.updated_by WHERE p.scope = $1 ORDER BY p.environment";
        if let Some(t) = team {
            let t = self.team_ref(who, t).await?;
            for row in self.db.fetch_all(&Sql::with(sql, [t.id.clone().into()])).await? {
                out.push(record_from_row(&row, Some(t.name.clone()))?);
            }
        }
        for row in self.db.fetch_all(&Sql::with(sql, [PLATFORM.into()])).await? {
            out.push(record_from_row(&row, None)?);
        }
        Ok(out)
    }

    /// The policy in force for a team's deployments to an environment.
    pub(crate) async fn effective_policy(
        &self,
        team_id: &str,
        environment: &str,
    ) -> Result<Option<Policy>> {
        for scope in [team_id, PLATFORM] {
            if let Some(row) = self
                .db
                .fetch_optional(&Sql::with(
                    "SELECT body FROM policies WHERE scope = $1 AND environment = $2",
                    [scope.into(), environment.into()],
                ))
                .await?
            {
                return Ok(Some(serde_json::from_str(&col::<String>(&row, "body")?)?));
            }
        }
        Ok(None)
    }

    /// Refuses a serving change to a gated environment unless every version that would serve
    /// came through an approved promotion to it.
    pub(crate) async fn check_gate(
        &self,
        team_id: &str,
        model_id: &str,
        environment: &str,
        versions: &[u32],
    ) -> Result<()> {
        let Some(policy) = self.effective_policy(team_id, environment).await? else {
            return Ok(());
        };
        if !policy.gated {
            return Ok(());
        }
        for &v in versions {
            let approved = self
                .db
                .fetch_optional(&Sql::with(
                    "SELECT id FROM promotions WHERE model_id = $1 AND version = $2 AND environment = $3 AND status = 'deployed'",
                    [model_id.into(), i64::from(v).into(), environment.into()],
                ))
                .await?;
            if approved.is_none() {
                let mut needs = Vec::new();
                if let Some(ds) = &policy.required_dataset {
                    needs.push(format!("an evaluation on dataset '{}'", ds.name));
                }
                if !policy.fairness.is_empty() {
                    needs.push("fairness checks".to_string());
                }
                if policy.require_staging {
                    needs.push("a promotion to staging first".to_string());
                }
                let reviewers: Vec<String> =
                    TIERS.iter().map(|t| format!("{t}: {}", policy.reviewers_for(t))).collect();
                needs.push(format!("reviewer approvals by risk tier ({})", reviewers.join(", ")));
                return Err(Error::new(
                    plinth_api::Code::ApprovalRequired,
                    format!(
                        "environment '{environment}' is gated: version {v} has no approved promotion to it. Request one (POST .../promotions, or `plinth promote`); the policy requires {}",
                        needs.join(", ")
                    ),
                )
                .with_field("versions"));
            }
        }
        Ok(())
    }

    /// Used by the policy listing of the CLI: the policy that applies, with its origin.
    pub async fn policy_for(
        &self,
        who: &Principal,
        team: &str,
        environment: &str,
    ) -> Result<Option<Policy>> {
        let t = self.team_ref(who, team).await?;
        self.effective_policy(&t.id, environment).await
    }
}
