//! Alerts on deployments' health, with Prometheus' semantics. Every production deployment has
//! the SLA's rules on its own: more than 5 % of requests failed, or p99 latency above 1 s, over
//! the last five minutes of its health rollups ([`super::health`]). A rule whose condition holds
//! is `pending`; once it has held for the rule's `for` (five minutes) it is `firing`; when it
//! stops holding a firing alert is `resolved` (a pending one is dropped). A window without
//! requests holds no condition.
//!
//! One replica evaluates at a time: a schedule fires the `monitoring.alerts` task every minute.
//! Each change to firing or resolved writes an `alert.firing` / `alert.resolved` event in the
//! transaction that records it, so the team's webhooks hear of it once, unless a silence of the
//! team matches the alert (by model, environment and rule) and has not ended: then the state
//! changes all the same, and nobody is notified.

use plinth_api::identity::TeamRole;
use plinth_api::monitoring::{Alert, CreateSilence, Silence};
use serde_json::json;

use crate::Plinth;
use crate::audit::{self, Target};
use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::serving::figures::Figures;
use crate::store::{Sql, col};
use crate::util::{micros_to_time, new_id, now_micros};

const MINUTE_US: i64 = 60_000_000;

/// A rule on a deployment's health.
struct Rule {
    name: &'static str,
    summary: &'static str,
    severity: &'static str,
    threshold: f64,
    /// The window of health the value is computed over.
    window_us: i64,
    /// How long the condition must hold before the alert fires.
    for_us: i64,
    /// The value over a window's figures (`None` without requests).
    value: fn(&Figures) -> Option<f64>,
}

const SLA_RULES: [Rule; 2] = [
    Rule {
        name: "error_rate",
        summary: "more than 5 % of requests failed over 5 minutes",
        severity: "critical",
        threshold: 0.05,
        window_us: 5 * MINUTE_US,
        for_us: 5 * MINUTE_US,
        value: |f| {
            (f.requests > 0).then(|| f.errors.values().sum::<u64>() as f64 / f.requests as f64)
        },
    },
    Rule {
        name: "latency_p99",
        summary: "p99 latency above 1 s over 5 minutes",
        severity: "warning",
        threshold: 1000.0,
        window_us: 5 * MINUTE_US,
        for_us: 5 * MINUTE_US,
        value: |f| (f.requests > 0).then(|| f.latency_ms(0.99)),
    },
];

/// An alert event's data as Alertmanager's webhook body (version 4): one alert per body.
pub(crate) fn alertmanager_body(data: &serde_json::Value) -> serde_json::Value {
    let status = if data["state"] == "resolved" { "resolved" } else { "firing" };
    let deployment = data["deployment"].as_str().unwrap_or_default();
    let (team, rest) = deployment.split_once('/').unwrap_or((deployment, ""));
    let (model, environment) = rest.split_once('@').unwrap_or((rest, ""));
    let labels = json!({
        "alertname": data["rule"],
        "severity": data["severity"],
        "team": team,
        "model": model,
        "environment": environment,
        "deployment": deployment,
    });
    let annotations = json!({
        "summary": data["summary"],
        "value": data["value"].to_string(),
        "threshold": data["threshold"].to_string(),
    });
    json!({
        "version": "4",
        "groupKey": format!("{{}}:{{alertname=\"{}\", deployment=\"{deployment}\"}}", data["rule"].as_str().unwrap_or_default()),
        "truncatedAlerts": 0,
        "status": status,
        "receiver": format!("plinth-{team}"),
        "groupLabels": {"alertname": data["rule"], "deployment": deployment},
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": "",
        "alerts": [{
            "status": status,
            "labels": labels,
            "annotations": annotations,
            "startsAt": data["active_since"],
            // Alertmanager's zero time while the alert fires.
            "endsAt": data["resolved_at"].as_str().unwrap_or("0001-01-01T00:00:00Z"),
            "generatorURL": "",
            "fingerprint": data["key"],
        }],
    })
}

/// An alert event's data as a PagerDuty Events API v2 body: trigger when it fires, resolve
/// when it resolves, under one dedup key.
pub(crate) fn pagerduty_body(data: &serde_json::Value, routing_key: &str) -> serde_json::Value {
    let resolved = data["state"] == "resolved";
    let mut body = json!({
        "routing_key": routing_key,
        "event_action": if resolved { "resolve" } else { "trigger" },
        "dedup_key": data["key"],
    });
    if !resolved {
        body["payload"] = json!({
            "summary": format!("{}: {}", data["deployment"].as_str().unwrap_or_default(), data["summary"].as_str().unwrap_or_default()),
            "source": data["deployment"],
            "severity": data["severity"],
            "timestamp": data["fired_at"],
            "component": data["deployment"],
            "class": data["rule"],
            "custom_details": {"value": data["value"], "threshold": data["threshold"], "active_since": data["active_since"]},
        });
    }
    body
}

/// A time as RFC 3339 text, for event payloads and audit summaries.
fn iso(micros: i64) -> String {
    micros_to_time(micros)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The environment the SLA's rules apply to.
const SLA_ENVIRONMENT: &str = "production";

pub(crate) const EVALUATE: &str = "monitoring.alerts";

/// The scheduled evaluation.
pub(crate) struct EvaluateAlerts;

impl crate::tasks::TaskKind for EvaluateAlerts {
    fn name(&self) -> &'static str {
        EVALUATE
    }

    fn queue(&self) -> &'static str {
        "monitoring"
    }

    fn run<'a>(
        &'a self,
        core: &'a Plinth,
        _task: &'a crate::tasks::TaskRun,
    ) -> futures_util::future::BoxFuture<'a, Result<serde_json::Value>> {
        Box::pin(async move {
            let changed = core.evaluate_alerts(now_micros()).await?;
            Ok(json!({ "changed": changed }))
        })
    }
}

/// Creates the evaluation's schedule (every minute) unless it exists.
pub(crate) async fn ensure_schedule(core: &Plinth) -> Result<()> {
    core.ensure_schedule(EVALUATE, EVALUATE, crate::tasks::schedule::Every::Interval(60)).await
}

impl Plinth {
    /// Evaluates every rule of every production deployment as of `now` (microseconds) and
    /// answers how many alerts changed state. The schedule calls it with the wall clock; tests
    /// drive it with their own.
    pub async fn evaluate_alerts(&self, now: i64) -> Result<usize> {
        let mut changed = 0;
        for live in self.engine.all().into_iter().filter(|l| l.environment == SLA_ENVIRONMENT) {
            for rule in &SLA_RULES {
                let window =
                    self.health_figures(&live.deployment_id, now - rule.window_us, now).await?;
                let value = (rule.value)(&window);
                let holds = value.is_some_and(|v| v > rule.threshold);
                let deployment = format!("{}/{}@{}", live.team, live.model, live.environment);
                let silenced = self
                    .silenced(&live.team_id, &live.model, &live.environment, rule.name, now)
                    .await?;
                if self
                    .step_alert(
                        &live.team_id,
                        &live.deployment_id,
                        &deployment,
                        rule,
                        value,
                        holds,
                        silenced,
                        now,
                    )
                    .await?
                {
                    changed += 1;
                }
            }
        }
        Ok(changed)
    }

    /// Moves one alert's state; answers whether it changed.
    #[allow(clippy::too_many_arguments)]
    async fn step_alert(
        &self,
        team_id: &str,
        deployment_id: &str,
        deployment: &str,
        rule: &Rule,
        value: Option<f64>,
        holds: bool,
        silenced: bool,
        now: i64,
    ) -> Result<bool> {
        let mut tx = self.db.begin().await?;
        let row = Sql::with(
            "SELECT state, active_since, fired_at FROM alert_states WHERE deployment_id = $1 AND rule = $2",
            [deployment_id.to_string().into(), rule.name.to_string().into()],
        )
        .fetch_optional_tx(&mut tx)
        .await?;
        let (state, since, fired_at): (String, i64, Option<i64>) = match &row {
            Some(r) => (col(r, "state")?, col(r, "active_since")?, col(r, "fired_at")?),
            None => ("inactive".into(), now, None),
        };
        let active = state == "pending" || state == "firing";
        let (next, since, fired_at, resolved_at, event) = match (active, holds) {
            (false, true) if rule.for_us == 0 => {
                ("firing", now, Some(now), None, Some("alert.firing"))
            }
            (false, true) => ("pending", now, None, None, None),
            (true, true) if state == "pending" && now - since >= rule.for_us => {
                ("firing", since, Some(now), None, Some("alert.firing"))
            }
            (true, true) => (state.as_str(), since, fired_at, None, None),
            (true, false) if state == "firing" => {
                ("resolved", since, fired_at, Some(now), Some("alert.resolved"))
            }
            (true, false) => ("inactive", since, None, None, None),
            (false, false) => return Ok(false),
        };
        let changed = next != state;
        let value = value.unwrap_or(0.0);
        Sql::with(
            "INSERT INTO alert_states (deployment_id, rule, state, value, active_since, fired_at, resolved_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (deployment_id, rule) DO UPDATE SET state = excluded.state, value = excluded.value,
               active_since = excluded.active_since, fired_at = excluded.fired_at,
               resolved_at = excluded.resolved_at, updated_at = excluded.updated_at",
            [
                deployment_id.to_string().into(),
                rule.name.to_string().into(),
                next.to_string().into(),
                value.to_string().into(),
                since.into(),
                fired_at.into(),
                resolved_at.into(),
                now.into(),
            ],
        )
        .execute(&mut tx)
        .await?;
        // Incidents follow the alert's state, silenced or not.
        match event {
            Some("alert.firing") => {
                super::incidents::alert_fired(&mut tx, team_id, deployment_id, rule.summary, now)
                    .await?;
            }
            Some(_) => {
                super::incidents::alert_resolved(&mut tx, deployment_id, rule.summary, now).await?
            }
            None => {}
        }
        let event = event.filter(|_| !silenced);
        if let Some(event) = event {
            let payload = json!({
                // The same for an alert's firing and its resolve: Alertmanager's fingerprint,
                // PagerDuty's dedup key.
                "key": format!("{deployment_id}/{}/{since}", rule.name),
                "deployment": deployment,
                "rule": rule.name,
                "summary": rule.summary,
                "severity": rule.severity,
                "state": next,
                "value": value,
                "threshold": rule.threshold,
                "active_since": iso(since),
                "fired_at": fired_at.map(iso),
                "resolved_at": resolved_at.map(iso),
            });
            self.emit(&mut tx, team_id, event, &payload).await?;
        }
        tx.commit().await?;
        if event.is_some() {
            self.wake_webhooks();
        }
        Ok(changed)
    }

    /// Whether a silence of the team covers this alert at `now`.
    async fn silenced(
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
        {
            let known: Vec<&str> = SLA_RULES.iter().map(|x| x.name).collect();
            return Err(Error::invalid(
                "rule",
                format!("unknown rule; known: {}", known.join(", ")),
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

    /// The alerts of a team's deployments (pending, firing, resolved), newest change first.
    pub async fn list_alerts(&self, who: &Principal, team: &str) -> Result<Vec<Alert>> {
        let t = self.team_ref(who, team).await?;
        let rows = self
            .db
            .fetch_all(&Sql::with(
                "SELECT a.*, m.name AS model, d.environment AS environment
                 FROM alert_states a JOIN deployments d ON d.id = a.deployment_id
                 JOIN models m ON m.id = d.model_id
                 WHERE d.team_id = $1 AND a.state <> 'inactive' ORDER BY a.updated_at DESC",
                [t.id.clone().into()],
            ))
            .await?;
        rows.iter()
            .map(|r| {
                let name: String = col(r, "rule")?;
                let rule = SLA_RULES
                    .iter()
                    .find(|x| x.name == name)
                    .ok_or_else(|| Error::internal(format!("unknown alert rule {name}")))?;
                let value: String = col(r, "value")?;
                Ok(Alert {
                    deployment: format!(
                        "{}/{}@{}",
                        t.name,
                        col::<String>(r, "model")?,
                        col::<String>(r, "environment")?
                    ),
                    rule: name.clone(),
                    summary: rule.summary.to_string(),
                    severity: rule.severity.to_string(),
                    state: col(r, "state")?,
                    value: value.parse().unwrap_or(0.0),
                    threshold: rule.threshold,
                    active_since: micros_to_time(col(r, "active_since")?),
                    fired_at: col::<Option<i64>>(r, "fired_at")?.map(micros_to_time),
                    resolved_at: col::<Option<i64>>(r, "resolved_at")?.map(micros_to_time),
                })
            })
            .collect()
    }
}
