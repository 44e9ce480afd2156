//! Incidents, in the manner of PagerDuty: a firing alert opens one for its deployment, or joins
//! the one still open there; people acknowledge it, add notes and resolve it. Its timeline holds
//! its own entries (alerts firing and resolving, acknowledgement, notes, resolution) and, read
//! beside them, the deployment's changes in between (deploys, traffic changes, rollbacks).
//! Per team, the median and 90th percentile of the time to acknowledge and to resolve (MTTA,
//! MTTR) feed the platform's quality figures.

use plinth_api::identity::TeamRole;
use plinth_api::monitoring::{Incident, IncidentStats, Spread, TimelineEntry};

use crate::Plinth;
use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::store::{Sql, Tx, col};
use crate::util::{micros_to_time, new_id, now_micros};

/// Appends an entry to an incident's timeline, in `tx`.
async fn append(
    tx: &mut Tx,
    incident: &str,
    at: i64,
    kind: &str,
    actor: &str,
    text: &str,
) -> Result<()> {
    let last = Sql::with(
        "SELECT seq FROM incident_entries WHERE incident_id = $1 ORDER BY seq DESC LIMIT 1",
        [incident.to_string().into()],
    )
    .fetch_optional_tx(tx)
    .await?;
    let seq: i64 = last.map(|r| col(&r, "seq")).transpose()?.unwrap_or(0);
    Sql::with(
        "INSERT INTO incident_entries (incident_id, seq, at, kind, actor, text) VALUES ($1, $2, $3, $4, $5, $6)",
        [
            incident.to_string().into(),
            (seq + 1).into(),
            at.into(),
            kind.to_string().into(),
            actor.to_string().into(),
            text.to_string().into(),
        ],
    )
    .execute(tx)
    .await
    .map(drop)
}

/// The open (unresolved) incident of a deployment, if any.
async fn open_incident(tx: &mut Tx, deployment_id: &str) -> Result<Option<String>> {
    let row = Sql::with(
        "SELECT id FROM incidents WHERE deployment_id = $1 AND state <> 'resolved' ORDER BY opened_at DESC",
        [deployment_id.to_string().into()],
    )
    .fetch_optional_tx(tx)
    .await?;
    row.map(|r| col(&r, "id")).transpose()
}

/// An alert fired: opens an incident for the deployment or joins the open one, in `tx`.
pub(crate) async fn alert_fired(
    tx: &mut Tx,
    team_id: &str,
    deployment_id: &str,
    summary: &str,
    at: i64,
) -> Result<String> {
    let id = match open_incident(tx, deployment_id).await? {
        Some(id) => id,
        None => {
            let id = new_id("inc");
            Sql::with(
                "INSERT INTO incidents (id, team_id, deployment_id, title, state, opened_at) VALUES ($1, $2, $3, $4, 'open', $5)",
                [id.clone().into(), team_id.to_string().into(), deployment_id.to_string().into(), summary.to_string().into(), at.into()],
            )
            .execute(tx)
            .await?;
            id
        }
    };
    append(tx, &id, at, "alert.firing", "plinth", summary).await?;
    Ok(id)
}

/// An alert resolved: noted on the deployment's open incident, if any (people resolve it).
pub(crate) async fn alert_resolved(
    tx: &mut Tx,
    deployment_id: &str,
    summary: &str,
    at: i64,
) -> Result<()> {
    if let Some(id) = open_incident(tx, deployment_id).await? {
        append(tx, &id, at, "alert.resolved", "plinth", summary).await?;
    }
    Ok(())
}

/// The median and 90th percentile (nearest rank) of `v`.
fn spread(mut v: Vec<f64>) -> Spread {
    v.sort_by(f64::total_cmp);
    let rank = |q: f64| {
        if v.is_empty() {
            0.0
        } else {
            v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1]
        }
    };
    let median = if v.is_empty() {
        0.0
    } else if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    Spread { count: v.len() as u64, median, p90: rank(0.9) }
}

impl Plinth {
    fn incident_of(&self, team: &str, r: &sqlx::any::AnyRow) -> Result<Incident> {
        Ok(Incident {
            id: col(r, "id")?,
            team: team.to_string(),
            deployment: format!(
                "{team}/{}@{}",
                col::<String>(r, "model")?,
                col::<String>(r, "environment")?
            ),
            title: col(r, "title")?,
            state: col(r, "state")?,
            opened_at: micros_to_time(col(r, "opened_at")?),
            acknowledged_at: col::<Option<i64>>(r, "acknowledged_at")?.map(micros_to_time),
            acknowledged_by: col(r, "acknowledged_by")?,
            resolved_at: col::<Option<i64>>(r, "resolved_at")?.map(micros_to_time),
            resolved_by: col(r, "resolved_by")?,
            timeline: Vec::new(),
        })
    }

    const INCIDENT_COLUMNS: &'static str = "i.*, m.name AS model, d.environment AS environment
         FROM incidents i JOIN deployments d ON d.id = i.deployment_id JOIN models m ON m.id = d.model_id";

    /// A team's incidents, newest first.
    pub async fn list_incidents(&self, who: &Principal, team: &str) -> Result<Vec<Incident>> {
        let t = self.team_ref(who, team).await?;
        let rows = self
            .db
            .fetch_all(&Sql::with(
                &format!(
                    "SELECT {} WHERE i.team_id = $1 ORDER BY i.opened_at DESC",
                    Self::INCIDENT_COLUMNS
                ),
                [t.id.clone().into()],
            ))
            .await?;
        rows.iter().map(|r| self.incident_of(&t.name, r)).collect()
    }

    /// One incident with its timeline.
    pub async fn get_incident(&self, who: &Principal, team: &str, id: &str) -> Result<Incident> {
        let t = self.team_ref(who, team).await?;
        let row = self
            .db
            .fetch_optional(&Sql::with(
                &format!("SELECT {} WHERE i.team_id = $1 AND i.id = $2", Self::INCIDENT_COLUMNS),
                [t.id.clone().into(), id.to_string().into()],
            ))
            .await?
            .ok_or_else(|| Error::not_found("incident", id))?;
        let mut incident = self.incident_of(&t.name, &row)?;
        let opened: i64 = col(&row, "opened_at")?;
        let until: i64 = col::<Option<i64>>(&row, "resolved_at")?.unwrap_or_else(now_micros);
        let deployment_id: String = col(&row, "deployment_id")?;
        let mut timeline: Vec<(i64, TimelineEntry)> = Vec::new();
        for r in self
            .db
            .fetch_all(&Sql::with(
                "SELECT at, kind, actor, text FROM incident_entries WHERE incident_id = $1 ORDER BY seq",
                [id.to_string().into()],
            ))
            .await?
        {
            let at: i64 = col(&r, "at")?;
            timeline.push((at, TimelineEntry { at: micros_to_time(at), kind: col(&r, "kind")?, by: col(&r, "actor")?, text: col(&r, "text")? }));
        }
        // The deployment's changes while the incident was open.
        for r in self
            .db
            .fetch_all(&Sql::with(
                "SELECT r.revision, r.action, r.at, COALESCE(p.name, r.by_id) AS actor FROM deployment_revisions r
                 LEFT JOIN principals p ON p.id = r.by_id
                 WHERE r.deployment_id = $1 AND r.at >= $2 AND r.at <= $3",
                [deployment_id.into(), opened.into(), until.into()],
            ))
            .await?
        {
            let at: i64 = col(&r, "at")?;
            let revision: i64 = col(&r, "revision")?;
            timeline.push((
                at,
                TimelineEntry { at: micros_to_time(at), kind: col(&r, "action")?, by: col(&r, "actor")?, text: format!("revision {revision}") },
            ));
        }
        timeline.sort_by_key(|(at, _)| *at);
        incident.timeline = timeline.into_iter().map(|(_, e)| e).collect();
        Ok(incident)
    }

    /// Acknowledges, resolves, or adds a note to an incident (developers and up).
    async fn act_on_incident(
        &self,
        who: &Principal,
        team: &str,
        id: &str,
        action: &str,
        note: Option<&str>,
    ) -> Result<Incident> {
        let t = self.team_ref(who, team).await?;
        who.require(&t, TeamRole::Developer, "working on incidents")?;
        let now = now_micros();
        let mut tx = self.db.begin().await?;
        let row = Sql::with(
            "SELECT state FROM incidents WHERE team_id = $1 AND id = $2",
            [t.id.clone().into(), id.to_string().into()],
        )
        .fetch_optional_tx(&mut tx)
        .await?
        .ok_or_else(|| Error::not_found("incident", id))?;
        let state: String = col(&row, "state")?;
        match action {
            "acknowledged" => {
                if state != "open" {
                    return Err(Error::new(
                        plinth_api::Code::Conflict,
                        format!("the incident is {state}: only an open one can be acknowledged"),
                    ));
                }
                Sql::with(
                    "UPDATE incidents SET state = 'acknowledged', acknowledged_at = $1, acknowledged_by = $2 WHERE id = $3",
                    [now.into(), who.name.clone().into(), id.to_string().into()],
                )
                .execute(&mut tx)
                .await?;
                append(&mut tx, id, now, "acknowledged", &who.name, "").await?;
            }
            "resolved" => {
                if state == "resolved" {
                    return Err(Error::new(
                        plinth_api::Code::Conflict,
                        "the incident is already resolved",
                    ));
                }
                // Resolving an incident nobody acknowledged acknowledges it at the same time.
                Sql::with(
                    "UPDATE incidents SET state = 'resolved', resolved_at = $1, resolved_by = $2,
                       acknowledged_at = COALESCE(acknowledged_at, $1), acknowledged_by = COALESCE(acknowledged_by, $2) WHERE id = $3",
                    [now.into(), who.name.clone().into(), id.to_string().into()],
                )
                .execute(&mut tx)
                .await?;
                append(&mut tx, id, now, "resolved", &who.name, note.unwrap_or("")).await?;
            }
            _ => {
                let text = note.unwrap_or("").trim();
                if text.is_empty() || text.len() > 10_000 {
                    return Err(Error::invalid("text", "a note needs 1 to 10,000 characters"));
                }
                append(&mut tx, id, now, "note", &who.name, text).await?;
            }
        }
        tx.commit().await?;
        self.get_incident(who, team, id).await
    }

    pub async fn acknowledge_incident(
        &self,
        who: &Principal,
        team: &str,
        id: &str,
    ) -> Result<Incident> {
        self.act_on_incident(who, team, id, "acknowledged", None).await
    }

    pub async fn resolve_incident(
        &self,
        who: &Principal,
        team: &str,
        id: &str,
    ) -> Result<Incident> {
        self.act_on_incident(who, team, id, "resolved", None).await
    }

    pub async fn note_incident(
        &self,
        who: &Principal,
        team: &str,
        id: &str,
        text: &str,
    ) -> Result<Incident> {
        self.act_on_incident(who, team, id, "note", Some(text)).await
    }

    /// A team's MTTA and MTTR (median and p90) over all its incidents.
    pub async fn incident_stats(&self, who: &Principal, team: &str) -> Result<IncidentStats> {
        let t = self.team_ref(who, team).await?;
        let rows = self
            .db
            .fetch_all(&Sql::with(
                "SELECT state, opened_at, acknowledged_at, resolved_at FROM incidents WHERE team_id = $1",
                [t.id.clone().into()],
            ))
            .await?;
        let (mut mtta, mut mttr, mut open) = (Vec::new(), Vec::new(), 0);
        for r in &rows {
            let opened: i64 = col(r, "opened_at")?;
            if let Some(a) = col::<Option<i64>>(r, "acknowledged_at")? {
                mtta.push((a - opened) as f64 / 1e6);
            }
            match col::<Option<i64>>(r, "resolved_at")? {
                Some(s) => mttr.push((s - opened) as f64 / 1e6),
                None => open += 1,
            }
        }
        Ok(IncidentStats {
            team: t.name,
            incidents: rows.len() as u64,
            open,
            mtta_seconds: spread(mtta),
            mttr_seconds: spread(mttr),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::spread;

    #[test]
    fn median_and_p90_by_nearest_rank() {
        let s = spread(vec![5.0, 1.0, 3.0, 2.0, 4.0, 6.0, 7.0, 8.0, 9.0, 10.0]);
        assert_eq!((s.count, s.median, s.p90), (10, 5.5, 9.0));
        let s = spread(vec![3.0]);
        assert_eq!((s.median, s.p90), (3.0, 3.0));
        assert_eq!(spread(Vec::new()).median, 0.0);
    }
}
