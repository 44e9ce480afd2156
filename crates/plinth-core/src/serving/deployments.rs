//! Environments and deployments: deploy, set traffic, roll back, history, grants. Every change
//! is a new revision (kept forever: what served in each environment, when, set by whom), is
//! audited, and is swapped into the live engine after it commits.

use std::collections::HashSet;

use plinth_api::Page;
use plinth_api::identity::{PageQuery, TeamRole};
use plinth_api::serving::{
    CreateEnvironment, Deployment, DeploymentQuery, DeploymentRevision, DeploymentSpec,
    Environment, Rollback, SetTraffic,
};
use serde_json::json;
use sqlx::any::AnyRow;

use crate::Plinth;
use crate::audit::{self, Target};
use crate::auth::{Principal, TeamRef};
use crate::error::{Error, Result};
use crate::store::{Sql, col};
use crate::util::{
    check_name, check_text, decode_cursor, encode_cursor, micros_to_time, new_id, now_micros,
    page_limit,
};

/// The model a deployment serves, resolved and authorized.
pub(crate) struct ApplyTarget {
    pub team: TeamRef,
    pub model_id: String,
    pub model: String,
    pub environment: String,
}

fn check_spec(spec: &DeploymentSpec) -> Result<()> {
    if spec.versions.is_empty() {
        return Err(Error::invalid("versions", "at least one version must serve"));
    }
    let mut seen = HashSet::new();
    for (i, s) in spec.versions.iter().enumerate() {
        if s.version == 0 {
            return Err(Error::invalid(
                format!("versions[{i}].version"),
                "versions are numbered from 1",
            ));
        }
        if !seen.insert(s.version) {
            return Err(Error::invalid(
                format!("versions[{i}].version"),
                format!("version {} is listed twice", s.version),
            ));
        }
        if s.weight > 100 {
            return Err(Error::invalid(
                format!("versions[{i}].weight"),
                "a weight is a percentage, 0-100",
            ));
        }
    }
    let total: u32 = spec.versions.iter().map(|s| s.weight).sum();
    if total != 100 {
        return Err(Error::invalid(
            "versions",
            format!("weights add up to {total}; they must add up to 100"),
        ));
    }
    for (i, v) in spec.shadows.iter().enumerate() {
        if seen.contains(v) {
            return Err(Error::invalid(
                format!("shadows[{i}]"),
                format!("version {v} already serves traffic"),
            ));
        }
    }
    let r = spec.log_retention;
    if !(1..=8760).contains(&r.max_age_hours) {
        return Err(Error::invalid("log_retention.max_age_hours", "1 to 8760 hours (a year)"));
    }
    if r.max_bytes < 1 << 20 {
        return Err(Error::invalid("log_retention.max_bytes", "at least 1 MiB (1048576)"));
    }
    if spec.shadows.iter().collect::<HashSet<_>>().len() != spec.shadows.len() {
        return Err(Error::invalid("shadows", "a version is listed twice"));
    }
    let b = spec.batching;
    if !(1..=65_536).contains(&b.max_batch_size) {
        return Err(Error::invalid("batching.max_batch_size", "must be 1-65536"));
    }
    if b.max_wait_us > 1_000_000 {
        return Err(Error::invalid("batching.max_wait_us", "must be at most 1000000 (one second)"));
    }
    if !(1..=256).contains(&spec.scaling.max_workers) {
        return Err(Error::invalid("scaling.max_workers", "must be 1-256"));
    }
    if spec.scaling.idle_seconds == 0 {
        return Err(Error::invalid("scaling.idle_seconds", "must be at least 1"));
    }
    let l = spec.limits;
    if l.max_queue == 0 || l.timeout_ms == 0 || l.max_rows == 0 {
        return Err(Error::invalid(
            "limits",
            "max_queue, timeout_ms and max_rows must be positive",
        ));
    }
    if l.timeout_ms > 600_000 {
        return Err(Error::invalid("limits.timeout_ms", "must be at most 600000 (ten minutes)"));
    }
    if !(0.0..=1.0).contains(&spec.log_sample_rate) {
        return Err(Error::invalid("log_sample_rate", "must be between 0.0 and 1.0"));
    }
    Ok(())
}

/// The versions that answer requests under a spec (shadows only log).
fn serving_versions(spec: &DeploymentSpec) -> Vec<u32> {
    spec.versions.iter().filter(|s| s.weight > 0).map(|s| s.version).collect()
}

fn deployment_from_row(row: &AnyRow, grants: Vec<String>) -> Result<Deployment> {
    Ok(Deployment {
        id: col(row, "id")?,
        team: col(row, "team_name")?,
        model: col(row, "model_name")?,
        environment: col(row, "environment")?,
        revision: col::<i64>(row, "revision")? as u32,
        spec: serde_json::from_str(&col::<String>(row, "spec")?)?,
        granted_teams: grants,
        created_at: micros_to_time(col(row, "created_at")?),
        updated_at: micros_to_time(col(row, "updated_at")?),
        updated_by: col(row, "updated_by_name")?,
    })
}

const DEPLOYMENT_SELECT: &str = "SELECT d.*, t.name AS team_name, m.name AS model_name, COALESCE(p.name, d.updated_by) AS updated_by_name
    FROM deployments d JOIN teams t ON t.id = d.team_id JOIN models m ON m.id = d.model_id
    LEFT JOIN principals p ON p.id = d.updated_by";

impl Plinth {
    pub async fn list_environments(&self, _who: &Principal) -> Result<Vec<Environment>> {
        let rows = self
            .db
            .fetch_all(&Sql::new("SELECT * FROM environments ORDER BY created_at, name"))
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Environment {
                    name: col(r, "name")?,
                    description: col(r, "description")?,
                    created_at: micros_to_time(col(r, "created_at")?),
                })
            })
            .collect()
    }

    pub async fn create_environment(
        &self,
        who: &Principal,
        req: CreateEnvironment,
    ) -> Result<Environment> {
        who.require_admin("creating an environment")?;
        check_name("name", &req.name)?;
        let description = req.description.unwrap_or_default();
        check_text("description", &description, 1000)?;
        let now = now_micros();
        let mut tx = self.db.begin().await?;
        Sql::with(
            "INSERT INTO environments (name, description, created_at, created_by) VALUES ($1, $2, $3, $4)",
            [req.name.clone().into(), description.clone().into(), now.into(), who.id.clone().into()],
        )
        .execute_unique(&mut tx, || Error::already_exists("environment", &req.name).with_field("name"))
        .await?;
        let t = Target {
            team_id: None,
            object_type: "environment",
            object_id: &req.name,
            object_name: &req.name,
        };
        audit::record(&mut tx, who, "environment.create", t, json!({"description": description}))
            .await?;
        tx.commit().await?;
        Ok(Environment { name: req.name, description, created_at: micros_to_time(now) })
    }

    async fn deployment_target(
        &self,
        who: &Principal,
        team: &str,
        model: &str,
        environment: &str,
    ) -> Result<ApplyTarget> {
        let team = self.team_ref(who, team).await?;
        let row = self
            .db
            .fetch_optional(&Sql::with(
                "SELECT id, name FROM models WHERE team_id = $1 AND name = $2",
                [team.id.clone().into(), model.into()],
            ))
            .await?
            .ok_or_else(|| Error::not_found("model", format!("{}/{model}", team.name)))?;
        let env = self
            .db
            .fetch_optional(&Sql::with(
                "SELECT name FROM environments WHERE name = $1",
                [environment.into()],
            ))
            .await?;
        if env.is_none() {
            return Err(self.unknown_environment(environment).await);
        }
        Ok(ApplyTarget {
            team,
            model_id: col(&row, "id")?,
            model: col(&row, "name")?,
            environment: environment.to_string(),
        })
    }

    /// Deploys versions of a model to an environment (creating or replacing its deployment).
    /// This is the one function every serving change goes through.
    pub async fn deploy(
        &self,
        who: &Principal,
        team: &str,
        model: &str,
        environment: &str,
        spec: DeploymentSpec,
    ) -> Result<Deployment> {
        let target = self.deployment_target(who, team, model, environment).await?;
        who.require(&target.team, TeamRole::Maintainer, "deploying")?;
        self.apply(who, &target, spec, "deploy", None).await
    }

    /// Changes the traffic split (and shadows) of an existing deployment.
    pub async fn set_traffic(
        &self,
        who: &Principal,
        team: &str,
        model: &str,
        environment: &str,
        req: SetTraffic,
    ) -> Result<Deployment> {
        let current = self.get_deployment(who, team, model, environment).await?;
        let target = self.deployment_target(who, team, model, environment).await?;
        who.require(&target.team, TeamRole::Maintainer, "changing traffic")?;
        let mut spec = current.spec;
        spec.versions = req.versions;
        if let Some(shadows) = req.shadows {
            spec.shadows = shadows;
        }
        self.apply(who, &target, spec, "traffic", None).await
    }

    /// Goes back to an earlier revision's spec (by default the one before the current).
    pub async fn rollback(
        &self,
        who: &Principal,
        team: &str,
        model: &str,
        environment: &str,
        req: Rollback,
    ) -> Result<Deployment> {
        let current = self.get_deployment(who, team, model, environment).await?;
        let target = self.deployment_target(who, team, model, environment).await?;
        who.require(&target.team, TeamRole::Maintainer, "rolling back")?;
        let to = match req.to_revision {
            Some(r) => r,
            None if current.revision > 1 => current.revision - 1,
            None => return Err(Error::conflict("there is no earlier revision to roll back to")),
        };
        if to >= current.revision {
            return Err(Error::invalid(
                "to_revision",
                format!("must be an earlier revision than the current {}", current.revision),
            ));
        }
        let row = self
            .db
            .fetch_optional(&Sql::with(
                "SELECT spec FROM deployment_revisions WHERE deployment_id = $1 AND revision = $2",
                [current.id.clone().into(), i64::from(to).into()],
            ))
            .await?
            .ok_or_else(|| {
                Error::invalid("to_revision", format!("revision {to} does not exist"))
            })?;
        let spec: DeploymentSpec = serde_json::from_str(&col::<String>(&row, "spec")?)?;
        self.apply(who, &target, spec, "rollback", None).await
    }

    /// Validates, passes the policy gate (unless an approved promotion calls it), checks every
    /// version loads, records the new revision with its audit entry, then swaps it into the live
    /// engine.
    pub(crate) async fn apply(
        &self,
        who: &Principal,
        target: &ApplyTarget,
        spec: DeploymentSpec,
        action: &str,
        promotion: Option<&str>,
    ) -> Result<Deployment> {
        check_spec(&spec)?;
        // Changes that do not come from an approved promotion pass the environment's policy.
        if promotion.is_none() {
            let serving = serving_versions(&spec);
            self.check_gate(&target.team.id, &target.model_id, &target.environment, &serving)
                .await?;
        }
        if !spec.monitor
            && self
                .effective_policy(&target.team.id, &target.environment)
                .await?
                .is_some_and(|p| p.require_sla_alerts)
        {
            return Err(Error::invalid(
                "monitor",
                format!(
                    "the policy of '{}' requires the SLA's alerts, which need the deployment monitored",
                    target.environment
                ),
            ));
        }
        let existing = self
            .db
            .fetch_optional(&Sql::with(
                "SELECT id, revision FROM deployments WHERE model_id = $1 AND environment = $2",
                [target.model_id.clone().into(), target.environment.clone().into()],
            ))
            .await?;
        let id = match &existing {
            Some(r) => col::<String>(r, "id")?,
            None => new_id("dep"),
        };
        for v in spec.versions.iter().map(|s| s.version).chain(spec.shadows.iter().copied()) {
            self.engine.check_servable(&id, &target.model_id, v, &spec).await?;
        }
        let now = now_micros();
        let spec_json = serde_json::to_string(&spec)?;
        let mut tx = self.db.begin().await?;
        // Under the model's lock, as archiving takes it: none of these was archived meanwhile.
        if crate::registry::lock_model(&mut tx, &self.db, &target.model_id).await? {
            return Err(Error::conflict(format!(
                "model '{}' was archived while the deployment changed",
                target.model
            )));
        }
        let archived = Sql::with(
            "SELECT version FROM model_versions WHERE model_id = $1 AND archived_at IS NOT NULL",
            [target.model_id.clone().into()],
        )
        .fetch_all_tx(&mut tx)
        .await?;
        for r in &archived {
            let v = col::<i64>(r, "version")? as u32;
            if spec.versions.iter().any(|s| s.version == v) || spec.shadows.contains(&v) {
                return Err(Error::invalid(
                    "versions",
                    format!("version {v} was archived while the deployment changed"),
                ));
            }
        }
        let revision: i64 = match &existing {
            Some(_) => {
                let row = Sql::with(
                    "UPDATE deployments SET revision = revision + 1, spec = $1, updated_at = $2, updated_by = $3 WHERE id = $4 RETURNING revision",
                    [spec_json.clone().into(), now.into(), who.id.clone().into(), id.clone().into()],
                )
                .fetch_optional_tx(&mut tx)
                .await?
                .ok_or_else(|| Error::internal("deployment vanished"))?;
                col(&row, "revision")?
            }
            None => {
                Sql::with(
                    "INSERT INTO deployments (id, team_id, model_id, environment, revision, spec, created_at, updated_at, updated_by)
                     VALUES ($1, $2, $3, $4, 1, $5, $6, $6, $7)",
                    [
                        id.clone().into(),
                        target.team.id.clone().into(),
                        target.model_id.clone().into(),
                        target.environment.clone().into(),
                        spec_json.clone().into(),
                        now.into(),
                        who.id.clone().into(),
                    ],
                )
                .execute_unique(&mut tx, || Error::conflict("the deployment changed concurrently; retry"))
                .await?;
                1
            }
        };
        Sql::with(
            "INSERT INTO deployment_revisions (deployment_id, revision, action, spec, at, by_id, promotion_id) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            [id.clone().into(), revision.into(), action.into(), spec_json.into(), now.into(), who.id.clone().into(), promotion.into()],
        )
        .execute(&mut tx)
        .await?;
        let name = format!("{}@{}", target.model, target.environment);
        let t = Target {
            team_id: Some(&target.team.id),
            object_type: "deployment",
            object_id: &id,
            object_name: &name,
        };
        audit::record(
            &mut tx,
            who,
            &format!("deployment.{action}"),
            t,
            json!({"revision": revision, "versions": spec.versions, "shadows": spec.shadows, "public": spec.public}),
        )
        .await?;
        let event = json!({
            "deployment": id, "team": target.team.name, "model": target.model,
            "environment": target.environment, "revision": revision, "action": action,
            "versions": spec.versions, "shadows": spec.shadows, "by": who.name,
        });
        self.emit(&mut tx, &target.team.id, "deployment.changed", &event).await?;
        crate::store::bump(&mut tx, crate::store::DEPLOYMENTS).await?;
        tx.commit().await?;
        self.wake_webhooks();
        self.refresh_committed(&id).await;
        self.load_deployment(&id).await
    }

    /// Swaps a committed change into the live engine. The change stands whatever happens here:
    /// a failure is logged and the engine keeps serving what it served (the caller is not told
    /// that a committed change failed).
    async fn refresh_committed(&self, id: &str) {
        if let Err(e) = self.engine.refresh(id).await {
            tracing::error!(deployment = id, error = %e, source = ?e.source, "a committed deployment change could not be swapped in");
        }
    }

    async fn load_deployment(&self, id: &str) -> Result<Deployment> {
        let row = self
            .db
            .fetch_optional(&Sql::with(
                &format!("{DEPLOYMENT_SELECT} WHERE d.id = $1"),
                [id.into()],
            ))
            .await?
            .ok_or_else(|| Error::internal("deployment vanished"))?;
        let grants = self
            .db
            .fetch_all(&Sql::with(
                "SELECT t.name FROM deployment_grants g JOIN teams t ON t.id = g.team_id WHERE g.deployment_id = $1 ORDER BY t.name",
                [id.into()],
            ))
            .await?
            .iter()
            .map(|r| col::<String>(r, "name"))
            .collect::<Result<_>>()?;
        deployment_from_row(&row, grants)
    }

    pub async fn get_deployment(
        &self,
        who: &Principal,
        team: &str,
        model: &str,
        environment: &str,
    ) -> Result<Deployment> {
        let target = self.deployment_target(who, team, model, environment).await?;
        let row = self
            .db
            .fetch_optional(&Sql::with(
                "SELECT id FROM deployments WHERE model_id = $1 AND environment = $2",
                [target.model_id.into(), environment.into()],
            ))
            .await?
            .ok_or_else(|| {
                Error::not_found(
                    "deployment",
                    format!("{}/{model}@{environment}", target.team.name),
                )
            })?;
        self.load_deployment(&col::<String>(&row, "id")?).await
    }

    pub async fn list_deployments(
        &self,
        who: &Principal,
        q: &DeploymentQuery,
    ) -> Result<Page<Deployment>> {
        let limit = page_limit(q.limit)?;
        let mut sql = Sql::new(&format!("{DEPLOYMENT_SELECT} WHERE 1 = 1"));
        if let Some(team) = &q.team {
            let team = self.team_ref(who, team).await?;
            sql.push(" AND d.team_id = ").bind(team.id);
        } else if let Some(ids) = who.visible_teams() {
            if ids.is_empty() {
                return Ok(Page { items: vec![], next_cursor: None });
            }
            sql.push(" AND d.team_id IN (");
            for (i, id) in ids.into_iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.bind(id);
            }
            sql.push(")");
        }
        if let Some(env) = &q.environment {
            sql.push(" AND d.environment = ").bind(env.clone());
        }
        if let Some(cursor) = &q.cursor {
            sql.push(" AND d.id > ").bind(decode_cursor(cursor, 1)?.remove(0));
        }
        sql.push(" ORDER BY d.id LIMIT ").bind(limit + 1);
        let rows = self.db.fetch_all(&sql).await?;
        let mut items = Vec::new();
        for row in rows.iter().take(limit as usize) {
            items.push(self.load_deployment(&col::<String>(row, "id")?).await?);
        }
        let next_cursor = (rows.len() as i64 > limit)
            .then(|| encode_cursor(&[&items.last().expect("non-empty").id]));
        Ok(Page { items, next_cursor })
    }

    /// The revisions of a deployment, newest first.
    pub async fn deployment_history(
        &self,
        who: &Principal,
        team: &str,
        model: &str,
        environment: &str,
        q: &PageQuery,
    ) -> Result<Page<DeploymentRevision>> {
        let d = self.get_deployment(who, team, model, environment).await?;
        let limit = page_limit(q.limit)?;
        let mut sql = Sql::new(
            "SELECT r.*, COALESCE(p.name, r.by_id) AS by_name FROM deployment_revisions r LEFT JOIN principals p ON p.id = r.by_id WHERE r.deployment_id = ",
        );
        sql.bind(d.id.clone());
        if let Some(cursor) = &q.cursor {
            let r: i64 = decode_cursor(cursor, 1)?[0]
                .parse()
                .map_err(|_| Error::invalid("cursor", "not a cursor returned by this endpoint"))?;
            sql.push(" AND r.revision < ").bind(r);
        }
        sql.push(" ORDER BY r.revision DESC LIMIT ").bind(limit + 1);
        let rows = self.db.fetch_all(&sql).await?;
        let items: Vec<DeploymentRevision> = rows
            .iter()
            .take(limit as usize)
            .map(|r| {
                Ok(DeploymentRevision {
                    revision: col::<i64>(r, "revision")? as u32,
                    action: col(r, "action")?,
                    spec: serde_json::from_str(&col::<String>(r, "spec")?)?,
                    at: micros_to_time(col(r, "at")?),
                    by: col(r, "by_name")?,
                })
            })
            .collect::<Result<_>>()?;
        let next_cursor = (rows.len() as i64 > limit)
            .then(|| encode_cursor(&[&items.last().expect("non-empty").revision.to_string()]));
        Ok(Page { items, next_cursor })
    }

    /// A deployment whose grants the caller (a maintainer of the owning team) may change.
    async fn shared_deployment(
        &self,
        who: &Principal,
        team: &str,
        model: &str,
        environment: &str,
    ) -> Result<(Deployment, TeamRef)> {
        let d = self.get_deployment(who, team, model, environment).await?;
        let owner = self.team_ref(who, team).await?;
        who.require(&owner, TeamRole::Maintainer, "sharing a deployment")?;
        Ok((d, owner))
    }

    /// Records a grant change, commits it and swaps it into the live engine.
    async fn finish_grant_change(
        &self,
        mut tx: crate::store::Tx,
        who: &Principal,
        owner: &TeamRef,
        d: &Deployment,
        action: &str,
        grantee: &str,
    ) -> Result<Deployment> {
        let name = format!("{}@{}", d.model, d.environment);
        let t = Target {
            team_id: Some(&owner.id),
            object_type: "deployment",
            object_id: &d.id,
            object_name: &name,
        };
        audit::record(&mut tx, who, action, t, json!({"team": grantee})).await?;
        crate::store::bump(&mut tx, crate::store::DEPLOYMENTS).await?;
        tx.commit().await?;
        self.refresh_committed(&d.id).await;
        self.load_deployment(&d.id).await
    }

    /// Lets another team call this deployment.
    pub async fn grant_deployment(
        &self,
        who: &Principal,
        team: &str,
        model: &str,
        environment: &str,
        grantee: &str,
    ) -> Result<Deployment> {
        let (d, owner) = self.shared_deployment(who, team, model, environment).await?;
        let row = self
            .db
            .fetch_optional(&Sql::with("SELECT id FROM teams WHERE name = $1", [grantee.into()]))
            .await?
            .ok_or_else(|| Error::invalid("team", format!("team '{grantee}' does not exist")))?;
        let grantee_id: String = col(&row, "id")?;
        if grantee_id == owner.id {
            return Err(Error::invalid("team", "a team can always call its own deployments"));
        }
        let mut tx = self.db.begin().await?;
        let exists = Sql::with(
            "SELECT 1 AS one FROM deployment_grants WHERE deployment_id = $1 AND team_id = $2",
            [d.id.clone().into(), grantee_id.clone().into()],
        )
        .fetch_optional_tx(&mut tx)
        .await?;
        if exists.is_some() {
            return Ok(d);
        }
        Sql::with(
            "INSERT INTO deployment_grants (deployment_id, team_id, created_at, created_by) VALUES ($1, $2, $3, $4)",
            [d.id.clone().into(), grantee_id.into(), now_micros().into(), who.id.clone().into()],
        )
        .execute(&mut tx)
        .await?;
        self.finish_grant_change(tx, who, &owner, &d, "deployment.grant", grantee).await
    }

    pub async fn revoke_deployment_grant(
        &self,
        who: &Principal,
        team: &str,
        model: &str,
        environment: &str,
        grantee: &str,
    ) -> Result<Deployment> {
        let (d, owner) = self.shared_deployment(who, team, model, environment).await?;
        let mut tx = self.db.begin().await?;
        let n = Sql::with(
            "DELETE FROM deployment_grants WHERE deployment_id = $1 AND team_id = (SELECT id FROM teams WHERE name = $2)",
            [d.id.clone().into(), grantee.into()],
        )
        .execute(&mut tx)
        .await?;
        if n == 0 {
            return Err(Error::not_found("grant", grantee));
        }
        self.finish_grant_change(tx, who, &owner, &d, "deployment.revoke_grant", grantee).await
    }
}
