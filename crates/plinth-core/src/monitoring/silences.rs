//! Silences: a team quiets matching alerts (by model, environment and rule) until an end
//! time, with a comment. A silenced alert's state changes all the same; nobody is notified.

use plinth_api::identity::TeamRole;
use plinth_api::monitoring::{CreateSilence, MonitoringSettings, Silence};
use serde_json::json;

use super::alerts::iso;
use super::rules::SLA_RULES;
use crate::Plinth;
use crate::audit::{self, Target};
use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::store::{Sql, col};
use crate::util::{micros_to_time, new_id, now_micros};

impl Plinth {
    /// Whether a silence of the team covers this alert at `now`.
    pub(super) async fn silenced(
        &self,
        team_id: &str,
        model: &str,
        environment: &str,
        rule: &str,
        now: i64,
    ) -> Result<bool> {
        let row = self
            .db
            .fetch_optional(&Sql::with(
                "SELECT id FROM alert_silences WHERE team_id = $1 AND ends_at > $2
                   AND (model IS NULL OR model = $3) AND (environment IS NULL OR environment = $4)
                   AND (rule IS NULL OR rule = $5)",
                [
                    team_id.to_string().into(),
                    now.into(),
                    model.to_string().into(),
                    environment.to_string().into(),
                    rule.to_string().into(),
                ],
            ))
            .await?;
        Ok(row.is_some())
    }

    /// Silences matching alerts of a team until `ends_at` (developers and up).
    pub async fn create_silence(
        &self,
        who: &Principal,
        team: &str,
        req: CreateSilence,
    ) -> Result<Silence> {
        let t = self.team_ref(who, team).await?;
        who.require(&t, TeamRole::Developer, "silencing alerts")?;
        let now = now_micros();
        let ends_at = (req.ends_at.unix_timestamp_nanos() / 1000) as i64;
        if ends_at <= now {
            return Err(Error::invalid("ends_at", "must be in the future"));
        }
        if req.comment.trim().is_empty() || req.comment.len() > 2000 {
            return Err(Error::invalid("comment", "say why, in at most 2,000 characters"));
        }
        if let Some(r) = &req.rule
            && !SLA_RULES.iter().any(|x| x.name == r)
            && !self.team_rule_names(&t.id).await?.contains(r)
        {
            let known: Vec<&str> = SLA_RULES.iter().map(|x| x.name).collect();
            return Err(Error::invalid(
                "rule",
                format!(
                    "no rule '{r}': the SLA's ({}) or one of the team's deployments' own",
                    known.join(", ")
                ),
            ));
        }
        let id = new_id("sil");
        let mut tx = self.db.begin().await?;
        Sql::with(
            "INSERT INTO alert_silences (id, team_id, model, environment, rule, ends_at, comment, created_by, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            [
                id.clone().into(),
                t.id.clone().into(),
                req.model.clone().into(),
                req.environment.clone().into(),
                req.rule.clone().into(),
                ends_at.into(),
                req.comment.clone().into(),
                who.name.clone().into(),
                now.into(),
            ],
        )
        .execute(&mut tx)
        .await?;
        let target = Target {
            team_id: Some(&t.id),
            object_type: "silence",
            object_id: &id,
            object_name: &id,
        };
        let summary = json!({"model": req.model, "environment": req.environment, "rule": req.rule,
            "ends_at": iso(ends_at), "comment": req.comment});
        audit::record(&mut tx, who, "silence.create", target, summary).await?;
        tx.commit().await?;
        Ok(Silence {
            id,
            team: t.name,
            model: req.model,
            environment: req.environment,
            rule: req.rule,
            ends_at: micros_to_time(ends_at),
            comment: req.comment,
            created_by: who.name.clone(),
            created_at: micros_to_time(now),
        })
    }

    /// The names of the rules a team's deployments define in their settings.
    async fn team_rule_names(&self, team_id: &str) -> Result<Vec<String>> {
        let rows = self
            .db
            .fetch_all(&Sql::with(
                "SELECT s.settings FROM monitoring_settings s JOIN deployments d ON d.id = s.deployment_id WHERE d.team_id = $1",
                [team_id.into()],
            ))
            .await?;
        let mut names = Vec::new();
        for r in rows {
            let s: MonitoringSettings = serde_json::from_str(&col::<String>(&r, "settings")?)?;
            names.extend(s.rules.into_iter().map(|r| r.name));
        }
        Ok(names)
    }

    /// A team's silences that have not ended.
    pub async fn list_silences(&self, who: &Principal, team: &str) -> Result<Vec<Silence>> {
        let t = self.team_ref(who, team).await?;
        let rows = self
            .db
            .fetch_all(&Sql::with(
                "SELECT * FROM alert_silences WHERE team_id = $1 AND ends_at > $2 ORDER BY ends_at",
                [t.id.clone().into(), now_micros().into()],
            ))
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Silence {
                    id: col(r, "id")?,
                    team: t.name.clone(),
                    model: col(r, "model")?,
                    environment: col(r, "environment")?,
                    rule: col(r, "rule")?,
                    ends_at: micros_to_time(col(r, "ends_at")?),
                    comment: col(r, "comment")?,
                    created_by: col(r, "created_by")?,
                    created_at: micros_to_time(col(r, "created_at")?),
                })
            })
            .collect()
    }
}
