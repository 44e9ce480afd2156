//! Alert rules with Prometheus' semantics, on any monitored series of a deployment: error
//! rate, p99 latency, the error budget's burn rate, a live metric's drop below the version's
//! evaluation, label coverage, the drifted share of columns or one feature's drift score, and
//! the freshness of the feature views it reads. A rule whose condition holds is `pending`; once
//! it has held for the rule's `for` it is `firing`; when it stops holding a firing alert is
//! `resolved` (a pending one is dropped). A window without data holds no condition.
//!
//! Every production deployment has the SLA's rules on its own ([`SLA_RULES`]): error rate above
//! 5 % and p99 latency above 1 s over five minutes, the 99.9 % availability's error budget
//! burning 14.4× too fast over 1 h and its last 5 minutes (critical) or 6× over 6 h and its
//! last 30 minutes (warning), accuracy more than 2 points below the evaluation's over the last
//! day's labelled predictions (classifiers, once labels exist), and a feature view it reads
//! whose newest value is older than the view's freshness SLA (1 h by default). A team tunes or
//! disables them, and adds its own rules, in the deployment's monitoring settings
//! ([`super::settings`]); a policy may require them, and then settings saved before the policy
//! cannot keep one off or looser: the evaluation holds them to the SLA.
//!
//! One replica evaluates at a time: a schedule fires the `monitoring.alerts` task every minute.
//! Each change to firing or resolved writes an `alert.firing` / `alert.resolved` event in the
//! transaction that records it, so the team's webhooks hear of it once, unless a silence of the
//! team matches the alert (by model, environment and rule) and has not ended: then the state
//! changes all the same, and nobody is notified.

use std::collections::BTreeMap;
use std::sync::Mutex;

use plinth_api::identity::TeamRole;
use plinth_api::monitoring::{Alert, AlertRule, CreateSilence, MonitoringSettings, Silence};
use plinth_api::registry::Task;
use serde_json::json;

use super::feedback::Monitored;
use super::health::AVAILABILITY_TARGET;
use crate::Plinth;
use crate::audit::{self, Target};
use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::serving::engine::Live;
use crate::serving::figures::Figures;
use crate::store::{Sql, col};
use crate::util::{micros_to_time, new_id, now_micros};

const MINUTE_US: i64 = 60_000_000;
const SECOND_US: i64 = 1_000_000;

/// What a rule watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Series {
    ErrorRate,
    LatencyP99,
    BurnRate,
    MetricDrop,
    LabelCoverage,
    DriftShare,
    FeatureDrift,
    Freshness,
}

impl Series {
    pub const ALL: [Series; 8] = [
        Series::ErrorRate,
        Series::LatencyP99,
        Series::BurnRate,
        Series::MetricDrop,
        Series::LabelCoverage,
        Series::DriftShare,
        Series::FeatureDrift,
        Series::Freshness,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Series::ErrorRate => "error_rate",
            Series::LatencyP99 => "latency_p99",
            Series::BurnRate => "burn_rate",
            Series::MetricDrop => "metric_drop",
            Series::LabelCoverage => "label_coverage",
            Series::DriftShare => "drift_share",
            Series::FeatureDrift => "feature_drift",
            Series::Freshness => "freshness",
        }
    }

    pub fn parse(s: &str) -> Option<Series> {
        Series::ALL.into_iter().find(|x| x.as_str() == s)
    }

    fn default_window_us(self) -> i64 {
        match self {
            Series::BurnRate => 60 * MINUTE_US,
            Series::MetricDrop | Series::LabelCoverage => 24 * 60 * MINUTE_US,
            _ => 5 * MINUTE_US,
        }
    }

    fn default_for_us(self) -> i64 {
        match self {
            Series::BurnRate => 2 * MINUTE_US,
            _ => 5 * MINUTE_US,
        }
    }
}

/// A rule as evaluated.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub name: String,
    pub series: Series,
    pub summary: String,
    pub severity: String,
    pub threshold: f64,
    /// The range the value is computed over.
    pub window_us: i64,
    /// How long the condition must hold before the alert fires.
    pub for_us: i64,
    pub metric: Option<String>,
    pub feature: Option<String>,
    /// The rule's own labels, for its notifications.
    pub labels: BTreeMap<String, String>,
}

/// Labels every alert carries, which a rule's own cannot replace.
pub(crate) const RESERVED_LABELS: [&str; 6] =
    ["alertname", "severity", "team", "model", "environment", "deployment"];

/// One of the SLA's default rules.
pub(crate) struct SlaRule {
    pub name: &'static str,
    pub series: Series,
    pub threshold: f64,
    pub severity: &'static str,
    pub metric: Option<&'static str>,
    /// The window, when not the series' default.
    pub window_minutes: Option<i64>,
}

impl SlaRule {
    const fn new(
        name: &'static str,
        series: Series,
        threshold: f64,
        severity: &'static str,
    ) -> Self {
        SlaRule { name, series, threshold, severity, metric: None, window_minutes: None }
    }

    /// Whether a team's override turns the rule off or makes it looser than the SLA: a higher
    /// threshold (for freshness, whose 0 means each view's own SLA, more than the platform's
    /// default of an hour), a longer `for` than the rule's, or a lower severity.
    pub(crate) fn loosened_by(&self, o: &plinth_api::monitoring::RuleOverride) -> bool {
        let limit = if self.threshold > 0.0 { self.threshold } else { 3600.0 };
        let rank = |s: &str| ["info", "warning", "critical"].iter().position(|x| *x == s);
        o.disabled
            || o.threshold.is_some_and(|t| t > limit)
            || o.for_seconds
                .is_some_and(|f| i64::from(f) * SECOND_US > self.series.default_for_us())
            || o.severity.as_deref().is_some_and(|s| rank(s) < rank(self.severity))
    }
}

/// The SLA's rules, on every production deployment.
pub(crate) const SLA_RULES: [SlaRule; 6] = [
    SlaRule::new("error_rate", Series::ErrorRate, 0.05, "critical"),
    SlaRule::new("latency_p99", Series::LatencyP99, 1000.0, "warning"),
    // The SRE book's multiwindow pair for a 99.9 % target: 2 % of a 30-day budget in an hour,
    // 5 % in six hours; each window with its twelfth, so a burst that ended stops paging.
    SlaRule {
        window_minutes: Some(60),
        ..SlaRule::new("availability_fast_burn", Series::BurnRate, 14.4, "critical")
    },
    SlaRule {
        window_minutes: Some(360),
        ..SlaRule::new("availability_slow_burn", Series::BurnRate, 6.0, "warning")
    },
    SlaRule {
        metric: Some("accuracy"),
        ..SlaRule::new("accuracy_drop", Series::MetricDrop, 0.02, "warning")
    },
    // The threshold of freshness is each view's own SLA unless a team sets one.
    SlaRule::new("freshness", Series::Freshness, 0.0, "warning"),
];

/// The environment the SLA's rules apply to.
const SLA_ENVIRONMENT: &str = "production";

fn summary_of(r: &Rule) -> String {
    let w = r.window_us / SECOND_US;
    let over = if w % 3600 == 0 {
        format!("{} h", w / 3600)
    } else if w % 60 == 0 {
        format!("{} minutes", w / 60)
    } else {
        format!("{w} s")
    };
    match r.series {
        Series::ErrorRate => {
            format!("more than {} % of requests failed over {over}", r.threshold * 100.0)
        }
        Series::LatencyP99 => format!("p99 latency above {} ms over {over}", r.threshold),
        Series::BurnRate => format!(
            "the error budget burns more than {}x as fast as allowed over {over} and its twelfth",
            r.threshold
        ),
        Series::MetricDrop => format!(
            "live {} more than {} below the evaluation's over the predictions of {over}",
            r.metric.as_deref().unwrap_or("accuracy"),
            r.threshold
        ),
        Series::LabelCoverage => format!(
            "fewer than {} % of the predictions of {over} have a label",
            r.threshold * 100.0
        ),
        Series::DriftShare => {
            format!("at least {} % of the columns drifted over {over}", r.threshold * 100.0)
        }
        Series::FeatureDrift => format!(
            "feature '{}' drifted over {over} (threshold {})",
            r.feature.as_deref().unwrap_or(""),
            r.threshold
        ),
        Series::Freshness if r.threshold == 0.0 => {
            "a feature view it reads is older than its freshness SLA".to_string()
        }
        Series::Freshness => format!("a feature view it reads is more than {} s old", r.threshold),
    }
}

fn secs(s: Option<u32>) -> Option<i64> {
    s.map(|s| i64::from(s) * SECOND_US)
}

/// The rules of a deployment: the SLA's (in production; the accuracy rule for classifiers,
/// the freshness rule when it reads feature views) as its settings tune them, then its own.
/// When the policy requires the SLA's rules, an override that would turn one off or loosen it
/// (saved before the policy said so) is not applied.
pub(crate) fn rules_for(
    environment: &str,
    task: Task,
    reads_views: bool,
    settings: &MonitoringSettings,
    sla_required: bool,
) -> Vec<Rule> {
    let mut out = Vec::new();
    if environment == SLA_ENVIRONMENT {
        for d in &SLA_RULES {
            let applies = match d.series {
                Series::MetricDrop => task != Task::Regression,
                Series::Freshness => reads_views,
                _ => true,
            };
            let mut o = settings.sla.get(d.name).cloned().unwrap_or_default();
            if sla_required && d.loosened_by(&o) {
                o = Default::default();
            }
            if !applies || o.disabled {
                continue;
            }
            let mut r = Rule {
                name: d.name.to_string(),
                series: d.series,
                summary: String::new(),
                severity: o.severity.unwrap_or_else(|| d.severity.to_string()),
                threshold: o.threshold.unwrap_or(d.threshold),
                window_us: d.window_minutes.map_or(d.series.default_window_us(), |m| m * MINUTE_US),
                for_us: secs(o.for_seconds).unwrap_or(d.series.default_for_us()),
                metric: d.metric.map(str::to_string),
                feature: None,
                labels: BTreeMap::new(),
            };
            r.summary = summary_of(&r);
            out.push(r);
        }
    }
    for a in &settings.rules {
        let Some(series) = Series::parse(&a.series) else { continue };
        out.push(custom_rule(a, series));
    }
    out
}

fn custom_rule(a: &AlertRule, series: Series) -> Rule {
    let mut r = Rule {
        name: a.name.clone(),
        series,
        summary: String::new(),
        severity: a.severity.clone().unwrap_or_else(|| "warning".to_string()),
        threshold: a.threshold,
        window_us: secs(a.window_seconds).unwrap_or(series.default_window_us()),
        for_us: secs(a.for_seconds).unwrap_or(series.default_for_us()),
        metric: a.metric.clone(),
        feature: a.feature.clone(),
        labels: a.labels.clone(),
    };
    r.summary = summary_of(&r);
    r
}

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

/// An alert event's data as Alertmanager's webhook body (version 4): one alert per body.
pub(crate) fn alertmanager_body(data: &serde_json::Value) -> serde_json::Value {
    let status = if data["state"] == "resolved" { "resolved" } else { "firing" };
    let deployment = data["deployment"].as_str().unwrap_or_default();
    let (team, rest) = deployment.split_once('/').unwrap_or((deployment, ""));
    let (model, environment) = rest.split_once('@').unwrap_or((rest, ""));
    let mut labels = json!({
        "alertname": data["rule"],
        "severity": data["severity"],
        "team": team,
        "model": model,
        "environment": environment,
        "deployment": deployment,
    });
    if let Some(own) = data["labels"].as_object() {
        for (k, v) in own {
            labels[k] = v.clone();
        }
    }
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
            "custom_details": {"value": data["value"], "threshold": data["threshold"], "active_since": data["active_since"], "labels": data["labels"]},
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

/// How many times faster than the SLA allows the error budget burns over a window's figures
/// (a caller's mistakes, 4xx, do not count); `None` without requests.
fn burn_rate(f: &Figures) -> Option<f64> {
    (f.requests > 0).then(|| {
        let failed: u64 = f
            .errors
            .iter()
            .filter(|(code, _)| super::health::server_error(code))
            .map(|(_, n)| n)
            .sum();
        (failed as f64 / f.requests as f64) / (1.0 - AVAILABILITY_TARGET)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(requests: u64, errors: &[(&str, u64)]) -> Figures {
        Figures {
            requests,
            errors: errors.iter().map(|(c, n)| (c.to_string(), *n)).collect(),
            ..Figures::default()
        }
    }

    #[test]
    fn the_burn_rate_counts_the_platforms_failures_against_the_budget() {
        // 2 % of requests failing on the platform burns a 0.1 % budget 20 times too fast.
        let rate = burn_rate(&figures(1000, &[("internal", 15), ("overloaded", 5)])).unwrap();
        assert!((rate - 20.0).abs() < 1e-9, "{rate}");
        // A caller's mistakes spend none of it.
        assert_eq!(burn_rate(&figures(1000, &[("invalid_field", 500)])), Some(0.0));
        assert_eq!(burn_rate(&figures(0, &[])), None);
    }

    #[test]
    fn production_has_the_slas_rules_and_a_required_sla_cannot_be_kept_off() {
        let names = |rules: &[Rule]| rules.iter().map(|r| r.name.clone()).collect::<Vec<_>>();
        let none = MonitoringSettings::default();
        let rules = rules_for("production", Task::BinaryClassification, false, &none, false);
        assert_eq!(
            names(&rules),
            [
                "error_rate",
                "latency_p99",
                "availability_fast_burn",
                "availability_slow_burn",
                "accuracy_drop"
            ]
        );
        let burn: Vec<(i64, f64, &str)> = rules
            .iter()
            .filter(|r| r.series == Series::BurnRate)
            .map(|r| (r.window_us / MINUTE_US, r.threshold, r.severity.as_str()))
            .collect();
        assert_eq!(burn, [(60, 14.4, "critical"), (360, 6.0, "warning")]);
        assert_eq!(rules[1].threshold, 1000.0, "p99 above 1 s");
        assert!(rules_for("staging", Task::Regression, true, &none, false).is_empty());
        assert!(
            names(&rules_for("production", Task::Regression, true, &none, false))
                .contains(&"freshness".to_string())
        );

        // A team turned the error rate off and loosened the latency rule, then the policy came
        // to require the SLA's rules: the evaluation holds both to the SLA; a tighter override
        // stays.
        let mut tuned = MonitoringSettings::default();
        tuned.sla.insert(
            "error_rate".into(),
            plinth_api::monitoring::RuleOverride { disabled: true, ..Default::default() },
        );
        tuned.sla.insert(
            "latency_p99".into(),
            plinth_api::monitoring::RuleOverride { threshold: Some(5000.0), ..Default::default() },
        );
        tuned.sla.insert(
            "accuracy_drop".into(),
            plinth_api::monitoring::RuleOverride { threshold: Some(0.01), ..Default::default() },
        );
        let free = rules_for("production", Task::BinaryClassification, false, &tuned, false);
        assert!(!names(&free).contains(&"error_rate".to_string()));
        let held = rules_for("production", Task::BinaryClassification, false, &tuned, true);
        let by = |n: &str| held.iter().find(|r| r.name == n).unwrap().threshold;
        assert_eq!(
            (by("error_rate"), by("latency_p99"), by("accuracy_drop")),
            (0.05, 1000.0, 0.01)
        );
    }
}
