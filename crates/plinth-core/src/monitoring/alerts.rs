//! Alerts with Prometheus' semantics, from a deployment's rules ([`super::rules`]: the SLA's
//! own on every production deployment, as its settings tune them, and its own) on any
//! monitored series. A rule whose condition holds is `pending`; once it has held for the rule's
//! `for` it is `firing`; when it stops holding a firing alert is `resolved` (a pending one is
//! dropped). A window without data holds no condition. When the policy requires the SLA's
//! rules, the evaluation holds them to the SLA whatever settings were saved before.
//!
//! One replica evaluates at a time: a schedule fires the `monitoring.alerts` task every minute.
//! Each change to firing or resolved writes an `alert.firing` / `alert.resolved` event in the
//! transaction that records it, so the team's webhooks hear of it once, unless a silence of the
//! team matches the alert (by model, environment and rule) and has not ended: then the state
//! changes all the same, and nobody is notified.

use std::collections::BTreeMap;
use std::sync::Mutex;

use plinth_api::monitoring::{Alert, MonitoringSettings};
use serde_json::json;

use super::feedback::Monitored;
use super::rules::{MINUTE_US, Rule, Series, burn_rate, rules_for};
use crate::Plinth;
use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::serving::engine::Live;
use crate::serving::figures::Figures;
use crate::store::{Sql, col};
use crate::util::{micros_to_time, now_micros};

/// The latest alert states and drift scores of every deployment, for `/metrics`. Each replica
/// reads them from the database when it publishes its figures, so any replica answers a scrape.
#[derive(Default)]
pub struct Gauges(Mutex<GaugeValues>);

#[derive(Default, Clone)]
struct GaugeValues {
    /// `(deployment, rule, state)`.
    alerts: Vec<(String, String, String)>,
    /// `(deployment, version, column, method, score)`.
    drift: Vec<(String, u32, String, String, f64)>,
}

impl Gauges {
    /// Prometheus text: `plinth_alert_state` (1 for a rule's current state, pending or firing)
    /// and `plinth_drift_score` (each column's latest score).
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let g = self.0.lock().expect("gauges lock").clone();
        let l = crate::serving::metrics::label;
        let _ = writeln!(
            out,
            "# HELP plinth_alert_state 1 while a rule's alert is in this state (pending or firing).\n# TYPE plinth_alert_state gauge"
        );
        for (d, r, s) in &g.alerts {
            let _ = writeln!(
                out,
                "plinth_alert_state{{deployment=\"{}\",rule=\"{}\",state=\"{}\"}} 1",
                l(d),
                l(r),
                l(s)
            );
        }
        let _ = writeln!(
            out,
            "# HELP plinth_drift_score The latest drift score of a served column against its baseline.\n# TYPE plinth_drift_score gauge"
        );
        for (d, v, c, m, x) in &g.drift {
            let _ = writeln!(
                out,
                "plinth_drift_score{{deployment=\"{}\",version=\"{v}\",column=\"{}\",method=\"{}\"}} {x}",
                l(d),
                l(c),
                l(m)
            );
        }
    }
}

/// A time as RFC 3339 text, for event payloads and audit summaries.
pub(super) fn iso(micros: i64) -> String {
    micros_to_time(micros)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

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
        task: &'a crate::tasks::TaskRun,
    ) -> futures_util::future::BoxFuture<'a, Result<serde_json::Value>> {
        Box::pin(async move {
            // One evaluation at a time across replicas: each occurrence fires once, but one
            // that ran past the next (or was taken again after its runner died) could overlap
            // another. Of the evaluations running (their runners holding their leases), the
            // one that started first goes on and the others stand down; one that started more
            // than 5 minutes ago no longer holds the others back, so a hung evaluation cannot
            // silence alerting.
            let now = now_micros();
            let earlier = core
                .db
                .fetch_optional(&Sql::with(
                    "SELECT o.id FROM tasks o, tasks me
                     WHERE me.id = $2 AND o.kind = $1 AND o.state = 'running' AND o.id <> me.id
                       AND o.lease_expires_at > $3 AND o.started_at > $4
                       AND (o.started_at < me.started_at OR (o.started_at = me.started_at AND o.id < me.id))
                     LIMIT 1",
                    [EVALUATE.into(), task.id.clone().into(), now.into(), (now - 5 * MINUTE_US).into()],
                ))
                .await?;
            if let Some(r) = earlier {
                let other: String = col(&r, "id")?;
                return Ok(json!({ "skipped": format!("evaluation {other} still runs") }));
            }
            let changed = core.evaluate_alerts(now).await?;
            Ok(json!({ "changed": changed }))
        })
    }
}

/// Creates the evaluation's schedule (every minute) unless it exists.
pub(crate) async fn ensure_schedule(core: &Plinth) -> Result<()> {
    core.ensure_schedule(EVALUATE, EVALUATE, crate::tasks::schedule::Every::Interval(60)).await
}

/// What one deployment's rules read, computed once per evaluation.
#[derive(Default)]
struct Inputs {
    /// By window: the health figures, the performance and the drift over it.
    health: BTreeMap<i64, Figures>,
    performance: BTreeMap<i64, Vec<plinth_api::monitoring::VersionPerformance>>,
    drift: BTreeMap<i64, Vec<plinth_api::monitoring::VersionDrift>>,
}

/// How long monitoring keeps captured predictions, labels and drift minutes.
pub const RETENTION_DAYS: i64 = 90;

impl Plinth {
    /// Evaluates every rule of every live deployment as of `now` (microseconds) and answers
    /// how many alerts changed state. The schedule calls it with the wall clock; tests drive
    /// it with their own.
    pub async fn evaluate_alerts(&self, now: i64) -> Result<usize> {
        let mut changed = 0;
        // Whether each team's policy of an environment requires the SLA's rules.
        let mut required: BTreeMap<(String, String), bool> = BTreeMap::new();
        for live in self.engine.all() {
            let settings = self.monitoring_settings_of(&live.deployment_id).await?;
            let reads_views = live.runners().any(|r| r.source.feature_refs.is_some());
            let key = (live.team_id.clone(), live.environment.clone());
            let sla_required = match required.get(&key) {
                Some(r) => *r,
                None => {
                    let r = self
                        .effective_policy(&live.team_id, &live.environment)
                        .await?
                        .is_some_and(|p| p.require_sla_alerts);
                    *required.entry(key).or_insert(r)
                }
            };
            let rules =
                rules_for(&live.environment, live.task, reads_views, &settings, sla_required);
            let deployment = format!("{}/{}@{}", live.team, live.model, live.environment);
            let m = Monitored {
                id: live.deployment_id.clone(),
                team_id: live.team_id.clone(),
                team: live.team.clone(),
                model_id: live.model_id.clone(),
                task: live.task,
                name: deployment.clone(),
            };
            let mut inputs = Inputs::default();
            // The latest drift scores, for `/metrics`, over the default window.
            if live.spec.monitor {
                let drift =
                    self.drift_of(&m, &settings, now - 5 * MINUTE_US, now, None, false).await?;
                self.record_drift_scores(&live.deployment_id, &drift, now).await?;
                inputs.drift.insert(5 * MINUTE_US, drift);
            }
            let mut kept = Vec::with_capacity(rules.len());
            for rule in &rules {
                let value = self.rule_value(&live, &m, &settings, rule, now, &mut inputs).await?;
                let silenced = self
                    .silenced(&live.team_id, &live.model, &live.environment, &rule.name, now)
                    .await?;
                let holds = value.is_some_and(|(_, h)| h);
                if self
                    .step_alert(
                        &live.team_id,
                        &live.deployment_id,
                        &deployment,
                        rule,
                        value.map(|(v, _)| v),
                        holds,
                        silenced,
                        now,
                    )
                    .await?
                {
                    changed += 1;
                }
                kept.push(rule.name.clone());
            }
            // Rules removed or disabled since: their active alerts stop holding.
            let active = self
                .db
                .fetch_all(&Sql::with(
                    "SELECT rule, summary, severity, threshold FROM alert_states WHERE deployment_id = $1 AND state IN ('pending', 'firing')",
                    [live.deployment_id.clone().into()],
                ))
                .await?;
            for row in active {
                let name: String = col(&row, "rule")?;
                if kept.contains(&name) {
                    continue;
                }
                let rule = Rule {
                    summary: col::<Option<String>>(&row, "summary")?.unwrap_or_default(),
                    severity: col::<Option<String>>(&row, "severity")?.unwrap_or_default(),
                    threshold: col::<Option<String>>(&row, "threshold")?
                        .and_then(|t| t.parse().ok())
                        .unwrap_or(0.0),
                    name: name.clone(),
                    series: Series::ErrorRate,
                    window_us: 0,
                    for_us: 0,
                    metric: None,
                    feature: None,
                    labels: BTreeMap::new(),
                };
                let silenced = self
                    .silenced(&live.team_id, &live.model, &live.environment, &name, now)
                    .await?;
                if self
                    .step_alert(
                        &live.team_id,
                        &live.deployment_id,
                        &deployment,
                        &rule,
                        None,
                        false,
                        silenced,
                        now,
                    )
                    .await?
                {
                    changed += 1;
                }
            }
        }
        self.forget_old_monitoring(now).await?;
        self.refresh_monitoring_gauges().await?;
        Ok(changed)
    }

    /// A rule's value over its window as of `now`, and whether its condition holds; `None`
    /// without data.
    async fn rule_value(
        &self,
        live: &Live,
        m: &Monitored,
        settings: &MonitoringSettings,
        rule: &Rule,
        now: i64,
        inputs: &mut Inputs,
    ) -> Result<Option<(f64, bool)>> {
        let (w, t) = (rule.window_us, rule.threshold);
        Ok(match rule.series {
            Series::ErrorRate => {
                let f = self.health_over(&mut inputs.health, &live.deployment_id, now, w).await?;
                (f.requests > 0)
                    .then(|| f.errors.values().sum::<u64>() as f64 / f.requests as f64)
                    .map(|v| (v, v > t))
            }
            Series::LatencyP99 => {
                let f = self.health_over(&mut inputs.health, &live.deployment_id, now, w).await?;
                (f.requests > 0).then(|| f.latency_ms(0.99)).map(|v| (v, v > t))
            }
            Series::BurnRate => {
                // Both the window and its twelfth must burn too fast (the SRE book's pair:
                // 1 h with 5 minutes).
                let id = &live.deployment_id;
                let long = burn_rate(self.health_over(&mut inputs.health, id, now, w).await?);
                let short = burn_rate(self.health_over(&mut inputs.health, id, now, w / 12).await?);
                match (long, short) {
                    (Some(a), Some(b)) => Some((a.min(b), a.min(b) > t)),
                    _ => None,
                }
            }
            Series::MetricDrop | Series::LabelCoverage => {
                let perf = match inputs.performance.entry(w) {
                    std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::btree_map::Entry::Vacant(e) => {
                        e.insert(self.performance_of(m, now - w, now, None).await?)
                    }
                };
                if rule.series == Series::LabelCoverage {
                    perf.iter()
                        .filter(|v| v.predictions > 0)
                        .map(|v| v.label_coverage)
                        .reduce(f64::min)
                        .map(|v| (v, v < t))
                } else {
                    let metric = rule.metric.as_deref().unwrap_or("accuracy");
                    perf.iter()
                        .filter_map(|v| {
                            let live = v.metrics.get(metric)?;
                            let base = v.baseline.as_ref()?.metrics.get(metric)?;
                            Some(if crate::eval::higher_is_better(metric) {
                                base - live
                            } else {
                                live - base
                            })
                        })
                        .reduce(f64::max)
                        .map(|v| (v, v > t))
                }
            }
            Series::DriftShare | Series::FeatureDrift => {
                let drift = match inputs.drift.entry(w) {
                    std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::btree_map::Entry::Vacant(e) => {
                        e.insert(self.drift_of(m, settings, now - w, now, None, false).await?)
                    }
                };
                if rule.series == Series::DriftShare {
                    drift
                        .iter()
                        .map(|v| v.drifted_columns.share)
                        .reduce(f64::max)
                        .map(|v| (v, v >= t))
                } else {
                    let feature = rule.feature.as_deref().unwrap_or_default();
                    let mut found: Option<(f64, bool)> = None;
                    for c in drift.iter().filter_map(|v| v.columns.get(feature)) {
                        let method = super::drift::Method::parse(&c.method)
                            .ok_or_else(|| Error::internal("bad drift method"))?;
                        let drifted = method.drifted(c.score, t);
                        if found.is_none_or(|(_, d)| !d) {
                            found = Some((c.score, drifted));
                        }
                    }
                    found
                }
            }
            Series::Freshness => self.freshness(live, now).await?.map(|(age, sla)| {
                let limit = if t > 0.0 { t } else { sla };
                (age, age > limit)
            }),
        })
    }

    /// A deployment's health figures over the `window` before `now`, read once per evaluation.
    async fn health_over<'a>(
        &self,
        read: &'a mut BTreeMap<i64, Figures>,
        deployment_id: &str,
        now: i64,
        window: i64,
    ) -> Result<&'a Figures> {
        Ok(match read.entry(window) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(self.health_figures(deployment_id, now - window, now).await?)
            }
        })
    }

    /// The age in seconds of the stalest feature view the deployment's versions read (since
    /// the event time of its newest materialized or pushed value, as the view's own freshness
    /// says; since its creation while it has none), and that view's freshness SLA.
    async fn freshness(&self, live: &Live, now: i64) -> Result<Option<(f64, f64)>> {
        let mut views: Vec<&str> = live
            .runners()
            .filter_map(|r| r.source.feature_refs.as_deref())
            .flatten()
            .filter_map(|f| f.split_once(':').map(|(v, _)| v))
            .collect();
        views.sort_unstable();
        views.dedup();
        let mut worst: Option<(f64, f64)> = None;
        for v in views {
            let Some(row) = self
                .db
                .fetch_optional(&Sql::with(
                    "SELECT spec, last_event, created_at FROM feature_views WHERE team_id = $1 AND name = $2",
                    [live.team_id.clone().into(), v.into()],
                ))
                .await?
            else {
                continue;
            };
            let spec: serde_json::Value = serde_json::from_str(&col::<String>(&row, "spec")?)?;
            let sla = spec["freshness_sla_seconds"].as_f64().unwrap_or(3600.0);
            let newest =
                col::<Option<i64>>(&row, "last_event")?.unwrap_or(col::<i64>(&row, "created_at")?);
            let age = (now - newest) as f64 / 1e6;
            if worst.is_none_or(|(a, s)| age - sla > a - s) {
                worst = Some((age, sla));
            }
        }
        Ok(worst)
    }

    /// Keeps the latest drift scores of a deployment for `/metrics`.
    async fn record_drift_scores(
        &self,
        deployment_id: &str,
        drift: &[plinth_api::monitoring::VersionDrift],
        now: i64,
    ) -> Result<()> {
        if drift.is_empty() {
            return Ok(());
        }
        let scores: Vec<(u32, &str, &str, f64)> = drift
            .iter()
            .flat_map(|v| {
                v.columns.iter().map(|(c, d)| (v.version, c.as_str(), d.method.as_str(), d.score))
            })
            .collect();
        let mut tx = self.db.begin().await?;
        Sql::with(
            "INSERT INTO drift_latest (deployment_id, scores, at) VALUES ($1, $2, $3)
             ON CONFLICT (deployment_id) DO UPDATE SET scores = excluded.scores, at = excluded.at",
            [deployment_id.into(), serde_json::to_string(&scores)?.into(), now.into()],
        )
        .execute(&mut tx)
        .await?;
        tx.commit().await
    }

    /// Reads the alert states and drift scores every replica shows on `/metrics`.
    pub(crate) async fn refresh_monitoring_gauges(&self) -> Result<()> {
        let name_of = "(SELECT t.name || '/' || m.name || '@' || d.environment FROM deployments d JOIN teams t ON t.id = d.team_id JOIN models m ON m.id = d.model_id WHERE d.id = x.deployment_id) AS deployment";
        let mut g = GaugeValues::default();
        for row in self
            .db
            .fetch_all(&Sql::new(&format!(
                "SELECT x.rule, x.state, {name_of} FROM alert_states x WHERE x.state IN ('pending', 'firing') ORDER BY x.deployment_id, x.rule"
            )))
            .await?
        {
            let Some(d) = col::<Option<String>>(&row, "deployment")? else { continue };
            g.alerts.push((d, col(&row, "rule")?, col(&row, "state")?));
        }
        for row in self
            .db
            .fetch_all(&Sql::new(&format!(
                "SELECT x.scores, {name_of} FROM drift_latest x ORDER BY x.deployment_id"
            )))
            .await?
        {
            let Some(d) = col::<Option<String>>(&row, "deployment")? else { continue };
            let scores: Vec<(u32, String, String, f64)> =
                serde_json::from_str(&col::<String>(&row, "scores")?)?;
            g.drift.extend(scores.into_iter().map(|(v, c, m, x)| (d.clone(), v, c, m, x)));
        }
        *self.monitoring_gauges.0.lock().expect("gauges lock") = g;
        Ok(())
    }

    /// Deletes captured predictions, labels and drift minutes older than [`RETENTION_DAYS`].
    async fn forget_old_monitoring(&self, now: i64) -> Result<()> {
        let before = now - RETENTION_DAYS * 24 * 60 * MINUTE_US;
        let mut tx = self.db.begin().await?;
        for sql in [
            "DELETE FROM monitored_predictions WHERE at < $1",
            "DELETE FROM prediction_labels WHERE labelled_at < $1",
            "DELETE FROM drift_minutes WHERE minute < $1",
        ] {
            Sql::with(sql, [before.into()]).execute(&mut tx).await?;
        }
        tx.commit().await
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
            [deployment_id.to_string().into(), rule.name.clone().into()],
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
            "INSERT INTO alert_states (deployment_id, rule, state, value, active_since, fired_at, resolved_at, updated_at, summary, severity, threshold)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             ON CONFLICT (deployment_id, rule) DO UPDATE SET state = excluded.state, value = excluded.value,
               active_since = excluded.active_since, fired_at = excluded.fired_at,
               resolved_at = excluded.resolved_at, updated_at = excluded.updated_at,
               summary = excluded.summary, severity = excluded.severity, threshold = excluded.threshold",
            [
                deployment_id.to_string().into(),
                rule.name.clone().into(),
                next.to_string().into(),
                value.to_string().into(),
                since.into(),
                fired_at.into(),
                resolved_at.into(),
                now.into(),
                rule.summary.clone().into(),
                rule.severity.clone().into(),
                rule.threshold.to_string().into(),
            ],
        )
        .execute(&mut tx)
        .await?;
        // Incidents follow the alert's state, silenced or not.
        match event {
            Some("alert.firing") => {
                super::incidents::alert_fired(&mut tx, team_id, deployment_id, &rule.summary, now)
                    .await?;
            }
            Some(_) => {
                super::incidents::alert_resolved(&mut tx, deployment_id, &rule.summary, now).await?
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
                "labels": rule.labels,
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
                let value: String = col(r, "value")?;
                Ok(Alert {
                    deployment: format!(
                        "{}/{}@{}",
                        t.name,
                        col::<String>(r, "model")?,
                        col::<String>(r, "environment")?
                    ),
                    rule: name.clone(),
                    summary: col::<Option<String>>(r, "summary")?.unwrap_or_default(),
                    severity: col::<Option<String>>(r, "severity")?.unwrap_or_default(),
                    state: col(r, "state")?,
                    value: value.parse().unwrap_or(0.0),
                    threshold: col::<Option<String>>(r, "threshold")?
                        .and_then(|t| t.parse().ok())
                        .unwrap_or(0.0),
                    active_since: micros_to_time(col(r, "active_since")?),
                    fired_at: col::<Option<i64>>(r, "fired_at")?.map(micros_to_time),
                    resolved_at: col::<Option<i64>>(r, "resolved_at")?.map(micros_to_time),
                })
            })
            .collect()
    }
}
