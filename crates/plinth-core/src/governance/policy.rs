//! Promotion policies: the platform default an admin sets per environment, and a team's own,
//! which adds to it (the policy in force is the stricter of the two, field by field: see
//! [`stricter`]). An environment without any policy is not gated. Setting a policy is audited;
//! where the platform default says `review_team_changes`, a team's change waits for an
//! independent reviewer (`review.rs`) before it takes effect.

use std::collections::BTreeMap;

use plinth_api::governance::{
    Bound, Decision, Policy, PolicyChange, PolicyChangeQuery, PolicyChangeReview,
    PolicyChangeStatus, PolicyOutcome, PolicyRecord,
};
use plinth_api::identity::TeamRole;
use sqlx::any::AnyRow;

use crate::Plinth;
use crate::audit::{self, Target};
use crate::auth::{Principal, TeamRef};
use crate::error::{Error, Result};
use crate::store::{Sql, col};
use crate::util::{micros_to_time, new_id, now_micros};

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

/// The tighter of two bounds: the larger minimum, the smaller maximum.
fn tighter(a: &Bound, b: &Bound) -> Bound {
    let pick = |x: Option<f64>, y: Option<f64>, f: fn(f64, f64) -> f64| match (x, y) {
        (Some(x), Some(y)) => Some(f(x, y)),
        (x, y) => x.or(y),
    };
    Bound { min: pick(a.min, b.min, f64::max), max: pick(a.max, b.max, f64::min) }
}

fn tighter_bounds(
    a: &BTreeMap<String, Bound>,
    b: &BTreeMap<String, Bound>,
) -> BTreeMap<String, Bound> {
    let mut out = a.clone();
    for (k, v) in b {
        let merged = out.get(k).map_or_else(|| v.clone(), |w| tighter(w, v));
        out.insert(k.clone(), merged);
    }
    out
}

fn union(a: &[String], b: &[String]) -> Vec<String> {
    let mut out = a.to_vec();
    out.extend(b.iter().filter(|x| !a.contains(x)).cloned());
    out
}

/// The policy in force where the platform and a team both set one: each field the stricter of
/// the two, so that a team can add requirements and never remove the platform's.
pub(crate) fn stricter(platform: &Policy, team: &Policy) -> Policy {
    let mut max_regression = platform.max_regression.clone();
    for (k, v) in &team.max_regression {
        let merged = max_regression.get(k).map_or(*v, |w| w.min(*v));
        max_regression.insert(k.clone(), merged);
    }
    Policy {
        gated: platform.gated || team.gated,
        required_dataset: platform
            .required_dataset
            .clone()
            .or_else(|| team.required_dataset.clone()),
        metrics: tighter_bounds(&platform.metrics, &team.metrics),
        max_regression,
        fairness: tighter_bounds(&platform.fairness, &team.fairness),
        sensitive_attributes: union(&platform.sensitive_attributes, &team.sensitive_attributes),
        required_card_fields: union(&platform.required_card_fields, &team.required_card_fields),
        reviewers: TIERS
            .iter()
            .map(|t| (t.to_string(), platform.reviewers_for(t).max(team.reviewers_for(t))))
            .collect(),
        require_staging: platform.require_staging || team.require_staging,
        self_serve: plinth_api::governance::SelfServe {
            enabled: platform.self_serve.enabled && team.self_serve.enabled,
            tolerance: platform.self_serve.tolerance.min(team.self_serve.tolerance),
        },
        review_team_changes: platform.review_team_changes,
        require_sla_alerts: platform.require_sla_alerts || team.require_sla_alerts,
    }
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
    /// (admins) for one environment. A team's change waits for a reviewer when the platform
    /// default for the environment says `review_team_changes`.
    pub async fn set_policy(
        &self,
        who: &Principal,
        team: Option<&str>,
        environment: &str,
        policy: Policy,
    ) -> Result<PolicyOutcome> {
        self.environment_exists(environment, "environment").await?;
        check_policy(&policy)?;
        if let Some(ds) = &policy.required_dataset {
            crate::util::check_name("required_dataset.name", &ds.name)?;
        }
        let Some(team) = team else {
            who.require_admin("setting the platform default policy")?;
            return Ok(PolicyOutcome::Applied(
                self.apply_policy(who, None, environment, policy, None).await?,
            ));
        };
        let t = self.team_ref(who, team).await?;
        who.require(&t, TeamRole::Maintainer, "setting a policy")?;
        if policy.review_team_changes {
            return Err(Error::invalid(
                "review_team_changes",
                "only the platform default policy (admins) says whether team changes are reviewed",
            ));
        }
        let reviewed =
            self.stored_policy(PLATFORM, environment).await?.is_some_and(|p| p.review_team_changes);
        if !reviewed {
            return Ok(PolicyOutcome::Applied(
                self.apply_policy(who, Some(&t), environment, policy, None).await?,
            ));
        }
        let id = new_id("pch");
        let now = now_micros();
        let mut tx = self.db.begin().await?;
        Sql::with(
            "INSERT INTO policy_changes (id, team_id, environment, body, status, requested_by, requested_key_id, requested_at)
             VALUES ($1, $2, $3, $4, 'pending_review', $5, $6, $7)",
            [id.clone().into(), t.id.clone().into(), environment.into(), serde_json::to_string(&policy)?.into(),
             who.id.clone().into(), who.key_id.clone().into(), now.into()],
        )
        .execute(&mut tx)
        .await?;
        let name = format!("{}@{environment}", t.name);
        let target = Target {
            team_id: Some(&t.id),
            object_type: "policy_change",
            object_id: &id,
            object_name: &name,
        };
        audit::record(
            &mut tx,
            who,
            "policy.change_requested",
            target,
            serde_json::to_value(&policy)?,
        )
        .await?;
        tx.commit().await?;
        Ok(PolicyOutcome::Pending(self.load_policy_change(&id).await?))
    }

    /// Writes a policy and its audit entry (`decided` names the approved change it comes from).
    async fn apply_policy(
        &self,
        who: &Principal,
        team: Option<&TeamRef>,
        environment: &str,
        policy: Policy,
        decided: Option<&str>,
    ) -> Result<PolicyRecord> {
        let scope = team.map_or(PLATFORM.to_string(), |t| t.id.clone());
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
        if let Some(change) = decided {
            Sql::with(
                "UPDATE policy_changes SET status = 'approved', decided_by = $1, decided_at = $2 WHERE id = $3",
                [who.id.clone().into(), now.into(), change.into()],
            )
            .execute(&mut tx)
            .await?;
        }
        let name = format!("{}@{environment}", team.map_or("platform", |t| t.name.as_str()));
        let team_id = team.map(|t| t.id.as_str());
        let t = Target { team_id, object_type: "policy", object_id: &name, object_name: &name };
        let mut summary = serde_json::to_value(&policy)?;
        if let Some(change) = decided {
            summary = serde_json::json!({"policy": summary, "approved_change": change});
        }
        audit::record(&mut tx, who, "policy.set", t, summary).await?;
        tx.commit().await?;
        Ok(PolicyRecord {
            team: team.map(|t| t.name.clone()),
            environment: environment.to_string(),
            policy,
            updated_at: micros_to_time(now),
            updated_by: who.name.clone(),
        })
    }

    async fn stored_policy(&self, scope: &str, environment: &str) -> Result<Option<Policy>> {
        let row = self
            .db
            .fetch_optional(&Sql::with(
                "SELECT body FROM policies WHERE scope = $1 AND environment = $2",
                [scope.into(), environment.into()],
            ))
            .await?;
        row.map(|r| Ok(serde_json::from_str(&col::<String>(&r, "body")?)?)).transpose()
    }

    async fn load_policy_change(&self, id: &str) -> Result<PolicyChange> {
        let row = self
            .db
            .fetch_optional(&Sql::with(
                "SELECT c.*, t.name AS team_name, COALESCE(r.name, c.requested_by) AS requested_by_name, d.name AS decided_by_name
                 FROM policy_changes c JOIN teams t ON t.id = c.team_id
                 LEFT JOIN principals r ON r.id = c.requested_by LEFT JOIN principals d ON d.id = c.decided_by
                 WHERE c.id = $1",
                [id.into()],
            ))
            .await?
            .ok_or_else(|| Error::not_found("policy change", id))?;
        let status: String = col(&row, "status")?;
        Ok(PolicyChange {
            id: col(&row, "id")?,
            team: col(&row, "team_name")?,
            environment: col(&row, "environment")?,
            policy: serde_json::from_str(&col::<String>(&row, "body")?)?,
            status: PolicyChangeStatus::parse(&status)
                .ok_or_else(|| Error::internal(format!("bad policy change status {status}")))?,
            requested_by: col(&row, "requested_by_name")?,
            requested_at: micros_to_time(col(&row, "requested_at")?),
            decided_by: col(&row, "decided_by_name")?,
            decided_at: col::<Option<i64>>(&row, "decided_at")?.map(micros_to_time),
            comment: col(&row, "comment")?,
        })
    }

    /// Policy changes the caller can see (their teams'; every team's for platform roles),
    /// newest first.
    pub async fn list_policy_changes(
        &self,
        who: &Principal,
        q: &PolicyChangeQuery,
    ) -> Result<Vec<PolicyChange>> {
        let mut sql = Sql::new("SELECT id, team_id FROM policy_changes WHERE 1 = 1");
        if let Some(team) = &q.team {
            let t = self.team_ref(who, team).await?;
            sql.push(" AND team_id = ").bind(t.id);
        }
        if let Some(status) = &q.status {
            let s = PolicyChangeStatus::parse(status).ok_or_else(|| {
                Error::invalid("status", "one of pending_review, approved, rejected")
            })?;
            sql.push(" AND status = ").bind(s.as_str());
        }
        sql.push(" ORDER BY requested_at DESC, id DESC LIMIT 200");
        let mut out = Vec::new();
        for row in self.db.fetch_all(&sql).await? {
            if who.role_in(&col::<String>(&row, "team_id")?).is_some() {
                out.push(self.load_policy_change(&col::<String>(&row, "id")?).await?);
            }
        }
        Ok(out)
    }

    /// A reviewer's decision on a team's pending policy change: approval puts it in force.
    /// Reviewers are platform reviewers and admins, independent of the change's author.
    pub async fn review_policy_change(
        &self,
        who: &Principal,
        id: &str,
        req: PolicyChangeReview,
    ) -> Result<PolicyChange> {
        let row = self
            .db
            .fetch_optional(&Sql::with(
                "SELECT c.team_id, t.name AS team_name, c.environment, c.body, c.status, c.requested_by, c.requested_key_id
                 FROM policy_changes c JOIN teams t ON t.id = c.team_id WHERE c.id = $1",
                [id.into()],
            ))
            .await?
            .ok_or_else(|| Error::not_found("policy change", id))?;
        let team = TeamRef { id: col(&row, "team_id")?, name: col(&row, "team_name")? };
        if who.role_in(&team.id).is_none() {
            return Err(Error::not_found("policy change", id));
        }
        if !(who.is_admin() || who.is_reviewer()) {
            return Err(Error::forbidden(
                "reviewing a policy change needs the reviewer or admin platform role",
            ));
        }
        let (author, key): (String, String) =
            (col(&row, "requested_by")?, col(&row, "requested_key_id")?);
        let author = super::review::Author { id: &author, key_id: Some(&key) };
        if let Some(why) = self.not_independent(who, &author).await? {
            return Err(Error::forbidden(why));
        }
        let status: String = col(&row, "status")?;
        if status != PolicyChangeStatus::PendingReview.as_str() {
            return Err(Error::conflict(format!(
                "the policy change is {status}: only pending changes are reviewed"
            )));
        }
        let comment = req.comment.unwrap_or_default();
        crate::util::check_text("comment", &comment, 10_000)?;
        let environment: String = col(&row, "environment")?;
        match req.decision {
            Decision::Approve => {
                let policy: Policy = serde_json::from_str(&col::<String>(&row, "body")?)?;
                self.apply_policy(who, Some(&team), &environment, policy, Some(id)).await?;
                if !comment.is_empty() {
                    let mut tx = self.db.begin().await?;
                    Sql::with(
                        "UPDATE policy_changes SET comment = $1 WHERE id = $2",
                        [comment.into(), id.into()],
                    )
                    .execute(&mut tx)
                    .await?;
                    tx.commit().await?;
                }
            }
            Decision::Reject | Decision::RequestChanges => {
                if comment.trim().is_empty() {
                    return Err(Error::missing("comment", "say why when rejecting"));
                }
                let mut tx = self.db.begin().await?;
                Sql::with(
                    "UPDATE policy_changes SET status = 'rejected', decided_by = $1, decided_at = $2, comment = $3 WHERE id = $4",
                    [who.id.clone().into(), now_micros().into(), comment.clone().into(), id.into()],
                )
                .execute(&mut tx)
                .await?;
                let name = format!("{}@{environment}", team.name);
                let t = Target {
                    team_id: Some(&team.id),
                    object_type: "policy_change",
                    object_id: id,
                    object_name: &name,
                };
                audit::record(
                    &mut tx,
                    who,
                    "policy.change_rejected",
                    t,
                    serde_json::json!({"comment": comment}),
                )
                .await?;
                tx.commit().await?;
            }
        }
        self.load_policy_change(id).await
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
        let platform = self.stored_policy(PLATFORM, environment).await?;
        let team = self.stored_policy(team_id, environment).await?;
        Ok(match (platform, team) {
            (Some(p), Some(t)) => Some(stricter(&p, &t)),
            (p, t) => p.or(t),
        })
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
