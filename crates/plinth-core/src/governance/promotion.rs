//! The promotion workflow: a request runs the policy's automated checks (each with its evidence),
//! then is approved automatically (the self-serve rule, or a policy needing no reviewer) or
//! waits for reviewers independent of its author (`review.rs`); on approval it deploys through the serving
//! `apply()` (as a canary first when asked). Every step is audited and announced to webhooks.

use std::collections::BTreeSet;

use plinth_api::governance::{
    Check, CheckStatus, Decision, Evaluation, JobStatus, Policy, Promotion, PromotionQuery,
    PromotionRequest, PromotionStatus, Review, ReviewRequest, ServedAt, ServedQuery,
};
use plinth_api::identity::TeamRole;
use plinth_api::registry::ModelVersion;
use plinth_api::serving::{DeploymentRevision, DeploymentSpec, TrafficSplit};
use serde_json::json;
use sqlx::any::AnyRow;

use crate::Plinth;
use crate::audit::{self, Target};
use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::eval::higher_is_better;
use crate::registry::ModelRef;
use crate::store::{Sql, col};
use crate::util::{micros_to_time, new_id, now_micros, time_to_micros};

const PROMOTION_SELECT: &str = "SELECT pr.*, t.name AS team_name, m.name AS model_name, COALESCE(p.name, pr.requested_by) AS requested_by_name
    FROM promotions pr JOIN teams t ON t.id = pr.team_id JOIN models m ON m.id = pr.model_id
    LEFT JOIN principals p ON p.id = pr.requested_by";

fn passed(name: impl Into<String>, evidence: impl Into<String>) -> Check {
    Check { name: name.into(), status: CheckStatus::Passed, evidence: evidence.into() }
}
fn failed(name: impl Into<String>, evidence: impl Into<String>) -> Check {
    Check { name: name.into(), status: CheckStatus::Failed, evidence: evidence.into() }
}
fn skipped(name: impl Into<String>, evidence: impl Into<String>) -> Check {
    Check { name: name.into(), status: CheckStatus::Skipped, evidence: evidence.into() }
}
fn flagged(name: impl Into<String>, evidence: impl Into<String>) -> Check {
    Check { name: name.into(), status: CheckStatus::Flagged, evidence: evidence.into() }
}

/// Platform reviewers and admins review every team's promotions; maintainers their team's.
fn may_review(who: &Principal, team_id: &str) -> bool {
    who.is_admin() || who.is_reviewer() || who.role_in(team_id) == Some(TeamRole::Maintainer)
}

fn bound_check(name: String, what: &str, v: f64, b: &plinth_api::governance::Bound) -> Check {
    let mut problems = Vec::new();
    if let Some(lo) = b.min
        && v < lo
    {
        problems.push(format!("below the minimum {lo}"));
    }
    if let Some(hi) = b.max
        && v > hi
    {
        problems.push(format!("above the maximum {hi}"));
    }
    let range = match (b.min, b.max) {
        (Some(lo), Some(hi)) => format!("[{lo}, {hi}]"),
        (Some(lo), None) => format!(">= {lo}"),
        (None, Some(hi)) => format!("<= {hi}"),
        (None, None) => "any".into(),
    };
    if problems.is_empty() {
        passed(name, format!("{what} = {v:.6}, required {range}"))
    } else {
        failed(name, format!("{what} = {v:.6}, {} (required {range})", problems.join(", ")))
    }
}

/// The outcome of the automated checks.
struct Checked {
    checks: Vec<Check>,
    evaluation: Option<Evaluation>,
}

impl Plinth {
    async fn promotion_from_row(&self, row: &AnyRow) -> Result<Promotion> {
        let id: String = col(row, "id")?;
        let reviews = self
            .db
            .fetch_all(&Sql::with(
                "SELECT r.*, COALESCE(p.name, r.reviewer_id) AS reviewer_name FROM promotion_reviews r
                 LEFT JOIN principals p ON p.id = r.reviewer_id WHERE r.promotion_id = $1 ORDER BY r.at",
                [id.clone().into()],
            ))
            .await?
            .iter()
            .map(|r| {
                let d: String = col(r, "decision")?;
                Ok(Review {
                    reviewer: col(r, "reviewer_name")?,
                    decision: match d.as_str() {
                        "approve" => Decision::Approve,
                        "reject" => Decision::Reject,
                        _ => Decision::RequestChanges,
                    },
                    comment: col(r, "comment")?,
                    at: micros_to_time(col(r, "at")?),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let status: String = col(row, "status")?;
        Ok(Promotion {
            id,
            team: col(row, "team_name")?,
            model: col(row, "model_name")?,
            version: col::<i64>(row, "version")? as u32,
            environment: col(row, "environment")?,
            status: PromotionStatus::parse(&status)
                .ok_or_else(|| Error::internal(format!("bad promotion status {status}")))?,
            risk_tier: col(row, "risk_tier")?,
            canary_weight: col::<Option<i64>>(row, "canary_weight")?.map(|w| w as u32),
            evaluation: col(row, "evaluation_id")?,
            checks: serde_json::from_str(&col::<String>(row, "checks")?)?,
            required_reviewers: col::<i64>(row, "required_reviewers")? as u32,
            reviews,
            auto_approved: col(row, "auto_approved")?,
            note: col(row, "note")?,
            requested_by: col(row, "requested_by_name")?,
            requested_at: micros_to_time(col(row, "requested_at")?),
            decided_at: col::<Option<i64>>(row, "decided_at")?.map(micros_to_time),
            deployment_revision: col::<Option<i64>>(row, "deployment_revision")?.map(|r| r as u32),
        })
    }

    async fn load_promotion(&self, id: &str) -> Result<Promotion> {
        let row = self
            .db
            .fetch_optional(&Sql::with(
                &format!("{PROMOTION_SELECT} WHERE pr.id = $1"),
                [id.into()],
            ))
            .await?
            .ok_or_else(|| Error::not_found("promotion", id))?;
        self.promotion_from_row(&row).await
    }

    /// A promotion, if the caller may see its team.
    pub async fn get_promotion(&self, who: &Principal, id: &str) -> Result<Promotion> {
        let row = self
            .db
            .fetch_optional(&Sql::with("SELECT team_id FROM promotions WHERE id = $1", [id.into()]))
            .await?
            .ok_or_else(|| Error::not_found("promotion", id))?;
        if who.role_in(&col::<String>(&row, "team_id")?).is_none() {
            return Err(Error::not_found("promotion", id));
        }
        self.load_promotion(id).await
    }

    /// Runs the policy's checks for `version` going to `environment`.
    async fn run_checks(
        &self,
        m: &ModelRef,
        v: &ModelVersion,
        environment: &str,
        policy: &Policy,
        evaluation: Option<&str>,
    ) -> Result<Checked> {
        let mut checks = Vec::new();
        // The evidence: the named evaluation, or the newest succeeded one on the policy dataset.
        let evaluation = match evaluation {
            Some(id) => {
                let e = self.load_evaluation(id).await.map_err(|e| e.with_field("evaluation"))?;
                if e.team != m.team.name || e.model != m.name || e.version != v.version {
                    return Err(Error::invalid(
                        "evaluation",
                        format!(
                            "evaluation {id} is not of {}/{}@{}",
                            m.team.name, m.name, v.version
                        ),
                    ));
                }
                Some(e)
            }
            None => self.list_evaluations_internal(&m.id, v.version).await?.into_iter().find(|e| {
                e.status == JobStatus::Succeeded
                    && policy
                        .required_dataset
                        .as_ref()
                        .is_none_or(|ds| e.dataset.split('@').next() == Some(ds.name.as_str()))
            }),
        };
        if let Some(ds) = &policy.required_dataset {
            let want = match ds.version {
                Some(n) => format!("{}@{n}", ds.name),
                None => ds.name.clone(),
            };
            match &evaluation {
                Some(e) if e.status == JobStatus::Succeeded
                    && (e.dataset.split('@').next() == Some(ds.name.as_str()))
                    && ds.version.is_none_or(|n| e.dataset == format!("{}@{n}", ds.name)) =>
                {
                    checks.push(passed("evaluation", format!("evaluation {} on {}", e.id, e.dataset)))
                }
                Some(e) => checks.push(failed(
                    "evaluation",
                    format!("evaluation {} ({}, status {}) is not a succeeded evaluation on the required dataset {want}", e.id, e.dataset, e.status.as_str()),
                )),
                None => checks.push(failed(
                    "evaluation",
                    format!("no succeeded evaluation of version {} on the required dataset {want}", v.version),
                )),
            }
        }
        let result = evaluation.as_ref().and_then(|e| e.result.as_ref());
        for (name, b) in &policy.metrics {
            let check = format!("metric:{name}");
            match result.and_then(|r| r.metrics.get(name)) {
                Some(x) => checks.push(bound_check(check, name, *x, b)),
                None => checks.push(failed(check, format!("the evaluation has no {name}"))),
            }
        }
        let serving = self.serving_version(&m.id, environment).await?;
        for (name, tol) in &policy.max_regression {
            let check = format!("regression:{name}");
            let Some(base) = serving.filter(|s| *s != v.version) else {
                checks.push(skipped(
                    check,
                    format!("nothing else serves in {environment} to compare with"),
                ));
                continue;
            };
            let b = result
                .and_then(|r| r.baseline.as_ref())
                .filter(|b| b.environment == environment && b.version == base);
            match (b, result.and_then(|r| r.metrics.get(name))) {
                (Some(b), Some(x)) => match b.metrics.get(name) {
                    Some(bx) => {
                        let worse = if higher_is_better(name) { bx - x } else { x - bx };
                        let ev = format!("{name} {x:.6} vs {bx:.6} for v{base} in {environment} (worse by {worse:.6}, allowed {tol})");
                        checks.push(if worse > *tol { failed(check, ev) } else { passed(check, ev) });
                    }
                    None => checks.push(failed(check, format!("no {name} for v{base}"))),
                },
                _ => checks.push(failed(
                    check,
                    format!("the evaluation has no comparison with v{base} serving {environment}: evaluate again with compare_environment={environment}"),
                )),
            }
        }
        if !policy.fairness.is_empty() {
            let attrs: Vec<String> = if policy.sensitive_attributes.is_empty() {
                result.map(|r| r.fairness.keys().cloned().collect()).unwrap_or_default()
            } else {
                policy.sensitive_attributes.clone()
            };
            if attrs.is_empty() {
                checks.push(failed("fairness", "the evaluation measured no sensitive attribute"));
            }
            for attr in attrs {
                let fair = result.and_then(|r| r.fairness.get(&attr));
                for (name, b) in &policy.fairness {
                    let check = format!("fairness:{attr}:{name}");
                    let Some(f) = fair else {
                        checks.push(failed(
                            check,
                            format!("the evaluation did not measure fairness for '{attr}'"),
                        ));
                        continue;
                    };
                    let x = match name.as_str() {
                        "demographic_parity_difference" => f.demographic_parity_difference,
                        "demographic_parity_ratio" => f.demographic_parity_ratio,
                        "equalized_odds_difference" => f.equalized_odds_difference,
                        _ => f.equalized_odds_ratio,
                    };
                    checks.push(bound_check(check, &format!("{name} over '{attr}'"), x, b));
                }
            }
        }
        let card = serde_json::to_value(&v.card)?;
        for field in &policy.required_card_fields {
            let filled = match card.get(field) {
                Some(serde_json::Value::String(s)) => !s.trim().is_empty(),
                Some(serde_json::Value::Array(a)) => !a.is_empty(),
                Some(serde_json::Value::Null) | None => false,
                Some(_) => true,
            };
            let check = format!("card:{field}");
            checks.push(if filled {
                passed(check, "filled in")
            } else {
                failed(check, format!("the model card's '{field}' is empty"))
            });
        }
        if policy.require_staging && environment != "staging" {
            let staged = self
                .db
                .fetch_optional(&Sql::with(
                    "SELECT id FROM promotions WHERE model_id = $1 AND version = $2 AND environment = 'staging' AND status = 'deployed'",
                    [m.id.clone().into(), i64::from(v.version).into()],
                ))
                .await?;
            checks.push(match staged {
                Some(r) => passed(
                    "staging_first",
                    format!("promoted to staging by {}", col::<String>(&r, "id")?),
                ),
                None => failed(
                    "staging_first",
                    format!("version {} was never promoted to staging", v.version),
                ),
            });
        }
        Ok(Checked { checks, evaluation })
    }

    /// Whether the version keeps working for the callers of the version serving the environment
    /// now ([`super::compat::breaking_changes`]): flagged for the reviewer when it does not.
    async fn signature_check(
        &self,
        m: &ModelRef,
        v: &ModelVersion,
        environment: &str,
    ) -> Result<Check> {
        let Some(base) =
            self.serving_version(&m.id, environment).await?.filter(|b| *b != v.version)
        else {
            return Ok(skipped(
                "signature",
                format!("nothing else serves in {environment} to compare with"),
            ));
        };
        let now = crate::registry::version_from_row(&self.version_row(m, base).await?)?;
        let breaks = super::compat::breaking_changes(&now.signature, &v.signature);
        Ok(if breaks.is_empty() {
            passed(
                "signature",
                format!("takes and answers what v{base} serving {environment} does"),
            )
        } else {
            flagged(
                "signature",
                format!("breaks callers of v{base} serving {environment}: {}", breaks.join("; ")),
            )
        })
    }

    pub(crate) async fn list_evaluations_internal(
        &self,
        model_id: &str,
        version: u32,
    ) -> Result<Vec<Evaluation>> {
        let rows = self
            .db
            .fetch_all(&Sql::with(
                "SELECT id FROM evaluations WHERE model_id = $1 AND version = $2 ORDER BY created_at DESC, id DESC",
                [model_id.into(), i64::from(version).into()],
            ))
            .await?;
        let mut out = Vec::new();
        for r in rows {
            out.push(self.load_evaluation(&col::<String>(&r, "id")?).await?);
        }
        Ok(out)
    }

    /// The self-serve rule. `Some(reason)` when the change is low risk.
    async fn self_serve(
        &self,
        m: &ModelRef,
        v: &ModelVersion,
        environment: &str,
        policy: &Policy,
        risk: &str,
        c: &Checked,
    ) -> Result<Option<String>> {
        if !policy.self_serve.enabled || risk != "low" {
            return Ok(None);
        }
        let Some(base) =
            self.serving_version(&m.id, environment).await?.filter(|b| *b != v.version)
        else {
            return Ok(None);
        };
        let prod = crate::registry::version_from_row(&self.version_row(m, base).await?)?;
        if prod.artifact.format != v.artifact.format || prod.signature != v.signature {
            return Ok(None);
        }
        let Some(r) = c.evaluation.as_ref().and_then(|e| e.result.as_ref()) else {
            return Ok(None);
        };
        let Some(b) =
            r.baseline.as_ref().filter(|b| b.version == base && b.environment == environment)
        else {
            return Ok(None);
        };
        let tol = policy.self_serve.tolerance;
        for (name, x) in &r.metrics {
            let Some(bx) = b.metrics.get(name) else { continue };
            let worse = if higher_is_better(name) { bx - x } else { x - bx };
            if worse > tol {
                return Ok(None);
            }
        }
        if c.checks
            .iter()
            .any(|c| c.name.starts_with("fairness") && c.status != CheckStatus::Passed)
        {
            return Ok(None);
        }
        Ok(Some(format!(
            "self-serve: risk tier low; same format ({}) and signature as v{base} serving {environment}; no metric worse than v{base} by more than {tol}; fairness checks passed",
            v.artifact.format.as_str()
        )))
    }

    /// Requests that a version serve an environment.
    pub async fn request_promotion(
        &self,
        who: &Principal,
        team: &str,
        model: &str,
        req: PromotionRequest,
    ) -> Result<Promotion> {
        let m = self.model_ref(who, team, model).await?;
        who.require(&m.team, TeamRole::Developer, "requesting a promotion")?;
        if m.archived {
            return Err(Error::conflict(format!("model '{}' is archived", m.name)));
        }
        self.environment_exists(&req.environment, "environment").await?;
        let v = crate::registry::version_from_row(&self.version_row(&m, req.version).await?)
            .map_err(|e| e.with_field("version"))?;
        if v.archived_at.is_some() {
            return Err(Error::invalid("version", format!("version {} is archived", v.version)));
        }
        if let Some(w) = req.canary_weight
            && !(1..=100).contains(&w)
        {
            return Err(Error::invalid("canary_weight", "a percentage of traffic, 1-100"));
        }
        let note = req.note.clone().unwrap_or_default();
        crate::util::check_text("note", &note, 10_000)?;
        let open = self
            .db
            .fetch_optional(&Sql::with(
                "SELECT id FROM promotions WHERE model_id = $1 AND version = $2 AND environment = $3 AND status = 'pending_review'",
                [m.id.clone().into(), i64::from(v.version).into(), req.environment.clone().into()],
            ))
            .await?;
        if let Some(r) = open {
            return Err(Error::conflict(format!(
                "promotion {} of this version to {} is already waiting for review",
                col::<String>(&r, "id")?,
                req.environment
            )));
        }
        let policy = self.effective_policy(&m.team.id, &req.environment).await?;
        let risk = v
            .card
            .risk_tier
            .map(|t| {
                serde_json::to_value(t)
                    .ok()
                    .and_then(|s| s.as_str().map(str::to_string))
                    .unwrap_or_default()
            })
            .unwrap_or_else(|| "medium".into());
        let signature = self.signature_check(&m, &v, &req.environment).await?;
        let (checked, status, required, auto) = match &policy {
            None => (
                Checked { checks: vec![signature], evaluation: None },
                PromotionStatus::Deployed,
                0,
                Some(format!("no policy governs {}", req.environment)),
            ),
            Some(p) => {
                let mut c =
                    self.run_checks(&m, &v, &req.environment, p, req.evaluation.as_deref()).await?;
                c.checks.push(signature);
                let failed = c.checks.iter().any(|c| c.status == CheckStatus::Failed);
                // A flagged check (a breaking change) always waits for a person.
                let flagged = c.checks.iter().any(|c| c.status == CheckStatus::Flagged);
                let required = p.reviewers_for(&risk).max(u32::from(flagged));
                if failed {
                    (c, PromotionStatus::Blocked, required, None)
                } else if flagged {
                    (c, PromotionStatus::PendingReview, required, None)
                } else if let Some(why) =
                    self.self_serve(&m, &v, &req.environment, p, &risk, &c).await?
                {
                    (c, PromotionStatus::Deployed, required, Some(why))
                } else if required == 0 {
                    let why = format!("the policy needs no reviewer for risk tier {risk}");
                    (c, PromotionStatus::Deployed, 0, Some(why))
                } else {
                    (c, PromotionStatus::PendingReview, required, None)
                }
            }
        };
        let id = new_id("prm");
        let now = now_micros();
        let mut tx = self.db.begin().await?;
        Sql::with(
            "INSERT INTO promotions (id, team_id, model_id, version, environment, status, risk_tier, canary_weight, evaluation_id, checks,
                required_reviewers, auto_approved, note, requested_by, requested_at, requested_key_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
            [
                id.clone().into(),
                m.team.id.clone().into(),
                m.id.clone().into(),
                i64::from(v.version).into(),
                req.environment.clone().into(),
                // Approved requests are recorded as pending until the deploy below succeeds.
                if status == PromotionStatus::Deployed { PromotionStatus::PendingReview.as_str() } else { status.as_str() }.into(),
                risk.clone().into(),
                req.canary_weight.map(i64::from).into(),
                checked.evaluation.as_ref().map(|e| e.id.clone()).into(),
                serde_json::to_string(&checked.checks)?.into(),
                i64::from(required).into(),
                auto.clone().into(),
                note.into(),
                who.id.clone().into(),
                now.into(),
                who.key_id.clone().into(),
            ],
        )
        .execute(&mut tx)
        .await?;
        let name = format!("{}@{}→{}", m.name, v.version, req.environment);
        let t = Target {
            team_id: Some(&m.team.id),
            object_type: "promotion",
            object_id: &id,
            object_name: &name,
        };
        audit::record(&mut tx, who, "promotion.request", t, json!({"version": v.version, "environment": req.environment, "canary_weight": req.canary_weight, "risk_tier": risk})).await?;
        let t = Target {
            team_id: Some(&m.team.id),
            object_type: "promotion",
            object_id: &id,
            object_name: &name,
        };
        let outcome = match status {
            PromotionStatus::Blocked => "blocked",
            PromotionStatus::Deployed => "approved",
            _ => "pending_review",
        };
        audit::record(
            &mut tx,
            who,
            "promotion.checks",
            t,
            json!({"outcome": outcome, "checks": checked.checks}),
        )
        .await?;
        let payload = json!({"promotion": id, "team": m.team.name, "model": m.name, "version": v.version, "environment": req.environment});
        self.emit(&mut tx, &m.team.id, "promotion.requested", &payload).await?;
        let mut p2 = payload.clone();
        p2["outcome"] = json!(outcome);
        p2["checks"] = serde_json::to_value(&checked.checks)?;
        self.emit(&mut tx, &m.team.id, "promotion.checks_finished", &p2).await?;
        if status == PromotionStatus::Blocked {
            let mut p3 = payload.clone();
            p3["reason"] = json!("checks failed");
            self.emit(&mut tx, &m.team.id, "promotion.rejected", &p3).await?;
        }
        tx.commit().await?;
        if status == PromotionStatus::Deployed {
            self.approve_and_deploy(who, &id, auto.as_deref()).await?;
        }
        self.wake_webhooks();
        self.load_promotion(&id).await
    }

    /// Records the approval and deploys: as a canary next to the serving version when asked.
    async fn approve_and_deploy(&self, who: &Principal, id: &str, why: Option<&str>) -> Result<()> {
        let p = self.load_promotion(id).await?;
        let row = self
            .db
            .fetch_optional(&Sql::with(
                "SELECT team_id, model_id FROM promotions WHERE id = $1",
                [id.into()],
            ))
            .await?
            .ok_or_else(|| Error::internal("promotion vanished"))?;
        let (team_id, model_id): (String, String) = (col(&row, "team_id")?, col(&row, "model_id")?);
        let current = self
            .db
            .fetch_optional(&Sql::with(
                "SELECT spec FROM deployments WHERE model_id = $1 AND environment = $2",
                [model_id.clone().into(), p.environment.clone().into()],
            ))
            .await?;
        let mut spec: DeploymentSpec = match &current {
            Some(r) => serde_json::from_str(&col::<String>(r, "spec")?)?,
            None => serde_json::from_value(
                json!({"versions": [{"version": p.version, "weight": 100}]}),
            )?,
        };
        let serving = self.serving_version(&model_id, &p.environment).await?;
        spec.shadows.retain(|s| *s != p.version);
        spec.versions = match (p.canary_weight, serving) {
            (Some(w), Some(base)) if w < 100 && base != p.version => vec![
                TrafficSplit { version: base, weight: 100 - w },
                TrafficSplit { version: p.version, weight: w },
            ],
            _ => vec![TrafficSplit { version: p.version, weight: 100 }],
        };
        let target = crate::serving::deployments::ApplyTarget {
            team: crate::auth::TeamRef { id: team_id.clone(), name: p.team.clone() },
            model_id: model_id.clone(),
            model: p.model.clone(),
            environment: p.environment.clone(),
        };
        let deployment = self.apply(who, &target, spec, "promote", Some(id)).await?;
        let now = now_micros();
        let mut tx = self.db.begin().await?;
        Sql::with(
            "UPDATE promotions SET status = 'deployed', decided_at = $1, deployment_revision = $2 WHERE id = $3",
            [now.into(), i64::from(deployment.revision).into(), id.into()],
        )
        .execute(&mut tx)
        .await?;
        if p.environment == "production"
            && let Some(v) = self.engine.version_source(&model_id, p.version).await?
        {
            let name = format!("{}@{}", p.model, p.version);
            crate::registry::record_production_approval(
                &mut tx,
                who,
                &team_id,
                &v.version_id,
                &name,
            )
            .await?;
        }
        let name = format!("{}@{}→{}", p.model, p.version, p.environment);
        let t = Target {
            team_id: Some(&team_id),
            object_type: "promotion",
            object_id: id,
            object_name: &name,
        };
        audit::record(&mut tx, who, "promotion.approve", t, json!({"automatic": why, "revision": deployment.revision, "canary_weight": p.canary_weight})).await?;
        let payload = json!({"promotion": id, "team": p.team, "model": p.model, "version": p.version, "environment": p.environment, "automatic": why, "revision": deployment.revision});
        self.emit(&mut tx, &team_id, "promotion.approved", &payload).await?;
        self.emit(&mut tx, &team_id, "promotion.deployed", &payload).await?;
        tx.commit().await?;
        self.wake_webhooks();
        Ok(())
    }

    /// A reviewer's decision on a pending promotion.
    pub async fn review_promotion(
        &self,
        who: &Principal,
        id: &str,
        req: ReviewRequest,
    ) -> Result<Promotion> {
        let row = self
            .db
            .fetch_optional(&Sql::with(
                "SELECT team_id, requested_by, requested_key_id, status FROM promotions WHERE id = $1",
                [id.into()],
            ))
            .await?
            .ok_or_else(|| Error::not_found("promotion", id))?;
        let team_id: String = col(&row, "team_id")?;
        if who.role_in(&team_id).is_none() {
            return Err(Error::not_found("promotion", id));
        }
        if !may_review(who, &team_id) {
            return Err(Error::forbidden(
                "reviewing a promotion needs the reviewer platform role or the maintainer role in the team",
            ));
        }
        let (author, author_key): (String, Option<String>) =
            (col(&row, "requested_by")?, col(&row, "requested_key_id")?);
        let author = super::review::Author { id: &author, key_id: author_key.as_deref() };
        if let Some(why) = self.not_independent(who, &author).await? {
            return Err(Error::forbidden(why));
        }
        let status: String = col(&row, "status")?;
        if status != PromotionStatus::PendingReview.as_str() {
            return Err(Error::conflict(format!(
                "the promotion is {status}: only pending requests are reviewed"
            )));
        }
        let comment = req.comment.unwrap_or_default();
        crate::util::check_text("comment", &comment, 10_000)?;
        if req.decision != Decision::Approve && comment.trim().is_empty() {
            return Err(Error::missing("comment", "say why when rejecting or requesting changes"));
        }
        let p = self.load_promotion(id).await?;
        let now = now_micros();
        let mut tx = self.db.begin().await?;
        Sql::with(
            "INSERT INTO promotion_reviews (promotion_id, reviewer_id, decision, comment, at) VALUES ($1, $2, $3, $4, $5)",
            [id.into(), who.id.clone().into(), req.decision.as_str().into(), comment.clone().into(), now.into()],
        )
        .execute(&mut tx)
        .await?;
        let name = format!("{}@{}→{}", p.model, p.version, p.environment);
        let t = Target {
            team_id: Some(&team_id),
            object_type: "promotion",
            object_id: id,
            object_name: &name,
        };
        audit::record(
            &mut tx,
            who,
            &format!("promotion.review.{}", req.decision.as_str()),
            t,
            json!({"comment": comment}),
        )
        .await?;
        let payload = json!({"promotion": id, "team": p.team, "model": p.model, "version": p.version, "environment": p.environment, "reviewer": who.name, "comment": comment});
        let mut deploy = false;
        match req.decision {
            Decision::Approve => {
                let mut approvers: BTreeSet<String> = p
                    .reviews
                    .iter()
                    .filter(|r| r.decision == Decision::Approve)
                    .map(|r| r.reviewer.clone())
                    .collect();
                approvers.insert(who.name.clone());
                deploy = approvers.len() as u32 >= p.required_reviewers;
            }
            Decision::Reject | Decision::RequestChanges => {
                let s = if req.decision == Decision::Reject {
                    PromotionStatus::Rejected
                } else {
                    PromotionStatus::ChangesRequested
                };
                Sql::with(
                    "UPDATE promotions SET status = $1, decided_at = $2 WHERE id = $3",
                    [s.as_str().into(), now.into(), id.into()],
                )
                .execute(&mut tx)
                .await?;
                self.emit(&mut tx, &team_id, "promotion.rejected", &payload).await?;
            }
        }
        tx.commit().await?;
        if deploy {
            self.approve_and_deploy(who, id, None).await?;
        }
        self.wake_webhooks();
        self.load_promotion(id).await
    }

    /// Promotions the caller can see, newest first.
    pub async fn list_promotions(
        &self,
        who: &Principal,
        q: &PromotionQuery,
    ) -> Result<Vec<Promotion>> {
        let limit = crate::util::page_limit(q.limit)?;
        let mut sql = Sql::new(&format!("{PROMOTION_SELECT} WHERE 1 = 1"));
        if let Some(team) = &q.team {
            let t = self.team_ref(who, team).await?;
            sql.push(" AND pr.team_id = ").bind(t.id.clone());
            if let Some(model) = &q.model {
                sql.push(" AND m.name = ").bind(model.clone());
            }
        } else if let Some(ids) = who.visible_teams() {
            if ids.is_empty() {
                return Ok(vec![]);
            }
            sql.push(" AND pr.team_id IN (");
            for (i, id) in ids.into_iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.bind(id);
            }
            sql.push(")");
        }
        if let Some(s) = &q.status {
            let s = PromotionStatus::parse(s).ok_or_else(|| {
                Error::invalid(
                    "status",
                    "one of blocked, pending_review, changes_requested, rejected, deployed",
                )
            })?;
            sql.push(" AND pr.status = ").bind(s.as_str());
        }
        if q.reviewable == Some(true) {
            sql.push(" AND pr.status = 'pending_review' AND pr.requested_by <> ")
                .bind(who.id.clone());
        }
        sql.push(" ORDER BY pr.requested_at DESC, pr.id DESC LIMIT ").bind(limit);
        let rows = self.db.fetch_all(&sql).await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            if q.reviewable == Some(true) {
                let tid: String = col(&r, "team_id")?;
                let (author, key): (String, Option<String>) =
                    (col(&r, "requested_by")?, col(&r, "requested_key_id")?);
                let author = super::review::Author { id: &author, key_id: key.as_deref() };
                if !may_review(who, &tid) || self.not_independent(who, &author).await?.is_some() {
                    continue;
                }
            }
            let p = self.promotion_from_row(&r).await?;
            out.push(p);
        }
        Ok(out)
    }

    /// What served `team/model` in an environment at a time, and the promotions (with their
    /// approvals and evidence) behind the serving versions.
    pub async fn served_at(
        &self,
        who: &Principal,
        team: &str,
        model: &str,
        q: &ServedQuery,
    ) -> Result<ServedAt> {
        let m = self.model_ref(who, team, model).await?;
        self.environment_exists(&q.environment, "environment").await?;
        let at = match &q.at {
            Some(s) => {
                time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                    .map_err(|e| Error::invalid("at", format!("not an RFC 3339 time: {e}")))?
            }
            None => time::OffsetDateTime::now_utc(),
        };
        let at_us = time_to_micros(at);
        let row = self
            .db
            .fetch_optional(&Sql::with(
                "SELECT r.*, COALESCE(p.name, r.by_id) AS by_name FROM deployment_revisions r JOIN deployments d ON d.id = r.deployment_id
                 LEFT JOIN principals p ON p.id = r.by_id
                 WHERE d.model_id = $1 AND d.environment = $2 AND r.at <= $3 ORDER BY r.revision DESC LIMIT 1",
                [m.id.clone().into(), q.environment.clone().into(), at_us.into()],
            ))
            .await?;
        let mut out = ServedAt {
            team: m.team.name.clone(),
            model: m.name.clone(),
            environment: q.environment.clone(),
            at,
            revision: None,
            promotions: vec![],
        };
        let Some(row) = row else { return Ok(out) };
        let spec: DeploymentSpec = serde_json::from_str(&col::<String>(&row, "spec")?)?;
        let revision: i64 = col(&row, "revision")?;
        // The promotion that brought each serving version, by revision order (a promotion is
        // recorded as decided just after the revision it produced).
        for s in &spec.versions {
            let p = self
                .db
                .fetch_optional(&Sql::with(
                    "SELECT id FROM promotions WHERE model_id = $1 AND version = $2 AND environment = $3 AND status = 'deployed' AND deployment_revision <= $4
                     ORDER BY deployment_revision DESC LIMIT 1",
                    [m.id.clone().into(), i64::from(s.version).into(), q.environment.clone().into(), revision.into()],
                ))
                .await?;
            if let Some(p) = p {
                out.promotions.push(self.load_promotion(&col::<String>(&p, "id")?).await?);
            }
        }
        out.revision = Some(DeploymentRevision {
            revision: revision as u32,
            action: col(&row, "action")?,
            spec,
            at: micros_to_time(col(&row, "at")?),
            by: col(&row, "by_name")?,
        });
        Ok(out)
    }
}
