//! `plinth metrics`: a deployment's health over time (per-minute rollups, over replicas);
//! `plinth feedback` (labels) and `plinth performance` (live metrics against the evaluation);
//! `plinth drift`: a deployment's served traffic against its baseline, or data drift between
//! two files, offline (like `plinth fairness`), with the figures Evidently gives on the same
//! data (its JSON has the keys of Evidently's report); `plinth monitoring`: a deployment's
//! monitoring settings; `plinth alert` and `plinth incident`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use clap::{Args, Subcommand};
use plinth_core::data::{ColumnData, FileFormat, Table, TableReader};
use plinth_core::monitoring::drift::{self, ColumnDrift, Kind, Method, Sample, Values};
use serde_json::{Value, json};

use plinth_api::monitoring::{
    Alert, FeedbackLabel, FeedbackResult, HealthPoint, HealthSeries, Incident, IncidentStats,
    MonitoringSettings, Performance, ServedDrift, Silence,
};

use super::{Global, connect, parse_duration, parse_time, split_model, usage};
use crate::client::Client;
use crate::output;

/// Monitoring.
#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// A deployment's health over time: requests, errors, availability against 99.9 %,
    /// latency, step by step (added up over replicas, kept across restarts).
    Metrics(MetricsArgs),
    /// Alerts on deployments' health (the SLA's rules on production deployments).
    #[command(subcommand)]
    Alert(AlertCmd),
    /// Incidents opened by firing alerts: list, show, ack, note, resolve, stats.
    #[command(subcommand)]
    Incident(IncidentCmd),
    /// Drift of a deployment's served traffic against its baseline (--deployment), or between
    /// a reference file and a current one (CSV or Parquet), column by column, as Evidently
    /// computes it (offline).
    #[command(after_help = "Example:\n  plinth drift --deployment fraud/income --since 1d")]
    Drift(DriftArgs),
    /// Post labels for served predictions from a CSV (request_id,row,label or
    /// prediction_id,label) or JSON file, 10,000 a request.
    #[command(after_help = "Example:\n  plinth feedback fraud/income --file labels.csv")]
    Feedback(FeedbackArgs),
    /// Live performance per version: metrics over the labelled predictions against the
    /// version's evaluation, label coverage, and CBPE's estimate.
    Performance(RangeArgs),
    /// A deployment's monitoring settings: drift baseline and tests, the SLA's rules, its own.
    #[command(subcommand)]
    Monitoring(MonitoringCmd),
}

#[derive(Subcommand, Debug)]
pub(crate) enum MonitoringCmd {
    /// Show the settings.
    Get {
        /// TEAM/MODEL
        model: String,
        /// The deployment's environment.
        #[arg(long, default_value = "production")]
        env: String,
    },
    /// Replace the settings with a JSON file's.
    Set {
        /// TEAM/MODEL
        model: String,
        /// The deployment's environment.
        #[arg(long, default_value = "production")]
        env: String,
        /// The settings (JSON).
        #[arg(long)]
        file: PathBuf,
    },
}

#[derive(Args, Debug)]
pub(crate) struct FeedbackArgs {
    /// TEAM/MODEL
    model: String,
    /// The deployment's environment.
    #[arg(long, default_value = "production")]
    env: String,
    /// Labels: CSV with a header (request_id, row, prediction_id, label: the ids you have), or
    /// JSON (an array of labels, or {"labels": [...]}).
    #[arg(long)]
    file: PathBuf,
}

#[derive(Args, Debug)]
pub(crate) struct RangeArgs {
    /// TEAM/MODEL
    model: String,
    /// The deployment's environment.
    #[arg(long, default_value = "production")]
    env: String,
    /// Start: RFC 3339, or a duration ago (default 1d).
    #[arg(long, default_value = "1d")]
    since: String,
    /// End: RFC 3339, or a duration ago (default now).
    #[arg(long)]
    until: Option<String>,
    /// Only this model version.
    #[arg(long = "model-version", id = "model_version")]
    version: Option<u32>,
}

#[derive(Subcommand, Debug)]
pub(crate) enum IncidentCmd {
    /// A team's incidents, newest first.
    List {
        /// The team's name.
        team: String,
    },
    /// One incident and its timeline.
    Show {
        /// The team that owns the incident.
        team: String,
        /// The incident's id (see `plinth incident list`).
        id: String,
    },
    /// Acknowledge an open incident.
    Ack {
        /// The team that owns the incident.
        team: String,
        /// The incident's id (see `plinth incident list`).
        id: String,
    },
    /// Add a note to an incident's timeline.
    Note {
        /// The team that owns the incident.
        team: String,
        /// The incident's id (see `plinth incident list`).
        id: String,
        /// The note's text.
        text: String,
    },
    /// Resolve an incident.
    Resolve {
        /// The team that owns the incident.
        team: String,
        /// The incident's id (see `plinth incident list`).
        id: String,
    },
    /// MTTA and MTTR of a team's incidents (median, p90).
    Stats {
        /// The team's name.
        team: String,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum AlertCmd {
    /// A team's alerts: pending, firing, resolved.
    List {
        /// The team's name.
        team: String,
    },
    /// Silence a team's matching alerts for a while: their state changes, nobody is notified.
    Silence {
        /// The team whose alerts to silence.
        team: String,
        /// Only this model (default: all).
        #[arg(long)]
        model: Option<String>,
        /// Only this environment (default: all).
        #[arg(long)]
        env: Option<String>,
        /// Only this rule: one of the SLA's (error_rate, latency_p99, availability_fast_burn,
        /// availability_slow_burn, accuracy_drop, freshness) or the deployment's own (default:
        /// all).
        #[arg(long)]
        rule: Option<String>,
        /// How long: 30m, 2h, 1d.
        #[arg(long = "for")]
        duration: String,
        /// Why (required).
        #[arg(long)]
        comment: String,
    },
    /// A team's silences that have not ended.
    Silences {
        /// The team's name.
        team: String,
    },
}

#[derive(Args, Debug)]
pub(crate) struct MetricsArgs {
    /// TEAM/MODEL
    model: String,
    /// The deployment's environment.
    #[arg(long, default_value = "production")]
    env: String,
    /// Start: RFC 3339, or a duration ago (default 1h).
    #[arg(long, default_value = "1h")]
    since: String,
    /// End: RFC 3339, or a duration ago (default now).
    #[arg(long)]
    until: Option<String>,
    /// Each point's span: a duration of whole minutes (default 1m).
    #[arg(long, default_value = "1m")]
    step: String,
}

#[derive(Args, Debug)]
pub(crate) struct DriftArgs {
    /// A deployment (TEAM/MODEL): its served traffic against its baseline, instead of files.
    #[arg(long, conflicts_with_all = ["reference", "current"])]
    deployment: Option<String>,
    /// With --deployment: the deployment's environment.
    #[arg(long, default_value = "production", requires = "deployment")]
    env: String,
    /// With --deployment: start, RFC 3339 or a duration ago.
    #[arg(long, default_value = "1d")]
    since: String,
    /// The reference sample (CSV, gzipped CSV or Parquet).
    #[arg(long, required_unless_present = "deployment")]
    reference: Option<PathBuf>,
    /// The current sample, with the reference's columns.
    #[arg(long, required_unless_present = "deployment")]
    current: Option<PathBuf>,
    /// Write the JSON here (default: print a table, or the JSON with --json).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Only these columns (repeatable; default: every column of the reference).
    #[arg(long = "column")]
    columns: Vec<String>,
    /// Treat these columns as categorical (default: text, booleans, and integers with at most
    /// 10 distinct values, as Evidently infers).
    #[arg(long = "categorical")]
    categorical: Vec<String>,
    /// Treat these columns as numerical.
    #[arg(long = "numerical")]
    numerical: Vec<String>,
    /// A column's test, and optionally its threshold: NAME=METHOD[:THRESHOLD], METHOD one of
    /// Evidently's ks, chisquare, z, jensenshannon, wasserstein, psi (repeatable).
    #[arg(long = "method", value_name = "NAME=METHOD[:THRESHOLD]")]
    methods: Vec<String>,
    /// The dataset drifts when this share of columns drifts.
    #[arg(long, default_value_t = drift::DEFAULT_DRIFT_SHARE)]
    drift_share: f64,
}

pub(crate) async fn run(g: &Global, cmd: Command) -> Result<()> {
    match cmd {
        Command::Drift(a) if a.deployment.is_some() => served_drift(&connect(g)?, g.json, a).await,
        Command::Drift(a) => drift_files(g.json, a),
        Command::Feedback(a) => feedback(&connect(g)?, g.json, a).await,
        Command::Performance(a) => performance(&connect(g)?, g.json, a).await,
        Command::Monitoring(MonitoringCmd::Get { model, env }) => {
            let (team, model) = split_model(&model)?;
            let s: MonitoringSettings = connect(g)?
                .get(&format!("/deployments/{team}/{model}/{env}/monitoring"), &[])
                .await?;
            output::json(&s);
            Ok(())
        }
        Command::Monitoring(MonitoringCmd::Set { model, env, file }) => {
            let (team, model) = split_model(&model)?;
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let body: Value = serde_json::from_str(&text)
                .map_err(|e| usage(format!("{} is not JSON: {e}", file.display())))?;
            let s: MonitoringSettings = connect(g)?
                .put(&format!("/deployments/{team}/{model}/{env}/monitoring"), &body)
                .await?;
            output::json(&s);
            Ok(())
        }
        Command::Metrics(a) => metrics(&connect(g)?, g.json, a).await,
        Command::Alert(AlertCmd::Silence { team, model, env, rule, duration, comment }) => {
            let ends_at = (time::OffsetDateTime::now_utc() + parse_duration(&duration)?)
                .format(&time::format_description::well_known::Rfc3339)?;
            let body = json!({"model": model, "environment": env, "rule": rule, "ends_at": ends_at, "comment": comment});
            let s: Silence = connect(g)?.post(&format!("/teams/{team}/silences"), &body).await?;
            if g.json {
                output::json(&s);
            } else {
                println!("silenced until {} ({})", time_label(s.ends_at), s.id);
            }
            Ok(())
        }
        Command::Alert(AlertCmd::Silences { team }) => {
            let list: Vec<Silence> =
                connect(g)?.get(&format!("/teams/{team}/silences"), &[]).await?;
            if g.json {
                output::json(&list);
            } else {
                let any = |v: &Option<String>| v.clone().unwrap_or_else(|| "*".into());
                output::table(
                    &["id", "model", "env", "rule", "until", "by", "comment"],
                    list.iter()
                        .map(|s| {
                            vec![
                                s.id.clone(),
                                any(&s.model),
                                any(&s.environment),
                                any(&s.rule),
                                time_label(s.ends_at),
                                s.created_by.clone(),
                                s.comment.clone(),
                            ]
                        })
                        .collect(),
                );
            }
            Ok(())
        }
        Command::Incident(cmd) => incident(&connect(g)?, g.json, cmd).await,
        Command::Alert(AlertCmd::List { team }) => {
            let alerts: Vec<Alert> = connect(g)?.get(&format!("/teams/{team}/alerts"), &[]).await?;
            if g.json {
                output::json(&alerts);
            } else {
                output::table(
                    &["deployment", "rule", "state", "value", "threshold", "since", "summary"],
                    alerts
                        .iter()
                        .map(|a| {
                            vec![
                                a.deployment.clone(),
                                a.rule.clone(),
                                a.state.clone(),
                                format!("{:.4}", a.value),
                                a.threshold.to_string(),
                                time_label(a.active_since),
                                a.summary.clone(),
                            ]
                        })
                        .collect(),
                );
            }
            Ok(())
        }
    }
}

async fn incident(c: &Client, json_out: bool, cmd: IncidentCmd) -> Result<()> {
    let one = |i: &Incident| {
        output::fields(&[
            ("id", i.id.clone()),
            ("deployment", i.deployment.clone()),
            ("title", i.title.clone()),
            ("state", i.state.clone()),
            ("opened", time_label(i.opened_at)),
            ("acknowledged", i.acknowledged_at.map(time_label).unwrap_or_else(|| "-".into())),
            ("resolved", i.resolved_at.map(time_label).unwrap_or_else(|| "-".into())),
        ]);
        if !i.timeline.is_empty() {
            output::table(
                &["at", "what", "by", "text"],
                i.timeline
                    .iter()
                    .map(|e| vec![time_label(e.at), e.kind.clone(), e.by.clone(), e.text.clone()])
                    .collect(),
            );
        }
    };
    let acted = |i: Incident| {
        if json_out { output::json(&i) } else { one(&i) }
    };
    match cmd {
        IncidentCmd::List { team } => {
            let list: Vec<Incident> = c.get(&format!("/teams/{team}/incidents"), &[]).await?;
            if json_out {
                output::json(&list);
            } else {
                output::table(
                    &["id", "deployment", "state", "opened", "title"],
                    list.iter()
                        .map(|i| {
                            vec![
                                i.id.clone(),
                                i.deployment.clone(),
                                i.state.clone(),
                                time_label(i.opened_at),
                                i.title.clone(),
                            ]
                        })
                        .collect(),
                );
            }
        }
        IncidentCmd::Show { team, id } => {
            acted(c.get(&format!("/teams/{team}/incidents/{id}"), &[]).await?)
        }
        IncidentCmd::Ack { team, id } => {
            acted(c.post(&format!("/teams/{team}/incidents/{id}/acknowledge"), &json!({})).await?)
        }
        IncidentCmd::Resolve { team, id } => {
            acted(c.post(&format!("/teams/{team}/incidents/{id}/resolve"), &json!({})).await?)
        }
        IncidentCmd::Note { team, id, text } => acted(
            c.post(&format!("/teams/{team}/incidents/{id}/notes"), &json!({ "text": text }))
                .await?,
        ),
        IncidentCmd::Stats { team } => {
            let s: IncidentStats = c.get(&format!("/teams/{team}/incidents/stats"), &[]).await?;
            if json_out {
                output::json(&s);
            } else {
                output::fields(&[
                    ("incidents", s.incidents.to_string()),
                    ("open", s.open.to_string()),
                    (
                        "MTTA median / p90",
                        format!("{:.0} s / {:.0} s", s.mtta_seconds.median, s.mtta_seconds.p90),
                    ),
                    (
                        "MTTR median / p90",
                        format!("{:.0} s / {:.0} s", s.mttr_seconds.median, s.mttr_seconds.p90),
                    ),
                ]);
            }
        }
    }
    Ok(())
}

async fn metrics(c: &Client, json_out: bool, a: MetricsArgs) -> Result<()> {
    let (team, model) = split_model(&a.model)?;
    let step = parse_duration(&a.step)?.whole_seconds();
    let mut query = vec![("since", parse_time(&a.since)?), ("step_seconds", step.to_string())];
    if let Some(u) = &a.until {
        query.push(("until", parse_time(u)?));
    }
    let h: HealthSeries =
        c.get(&format!("/deployments/{team}/{model}/{}/health", a.env), &query).await?;
    if json_out {
        output::json(&h);
        return Ok(());
    }
    let row = |label: String, p: &HealthPoint| {
        let errors: u64 = p.errors.values().sum();
        vec![
            label,
            p.requests.to_string(),
            errors.to_string(),
            format!("{:.3} %", p.availability * 100.0),
            format!("{}", p.latency_ms.p50),
            format!("{}", p.latency_ms.p95),
            format!("{}", p.latency_ms.p99),
        ]
    };
    let mut rows: Vec<Vec<String>> = h.points.iter().map(|p| row(time_label(p.start), p)).collect();
    rows.push(row("total".into(), &h.total));
    output::table(
        &["start", "requests", "errors", "availability", "p50 ms", "p95 ms", "p99 ms"],
        rows,
    );
    println!(
        "availability {:.3} % against the {:.1} % target: {}",
        h.total.availability * 100.0,
        h.availability_target * 100.0,
        if h.meets_target { "met" } else { "missed" }
    );
    Ok(())
}

/// Labels read from a CSV or JSON file.
fn read_labels(path: &Path) -> Result<Vec<FeedbackLabel>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    if text.trim_start().starts_with(['[', '{']) {
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| usage(format!("{} is not JSON: {e}", path.display())))?;
        let list = if v.is_array() { v } else { v["labels"].clone() };
        return serde_json::from_value(list)
            .map_err(|e| usage(format!("{}: not a list of labels: {e}", path.display())));
    }
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').map(str::trim).collect();
    let at = |name: &str| header.iter().position(|h| *h == name);
    let label =
        at("label").ok_or_else(|| usage(format!("{} has no 'label' column", path.display())))?;
    let (req, row, pid) = (at("request_id"), at("row"), at("prediction_id"));
    if req.is_none() && pid.is_none() {
        return Err(usage(format!(
            "{} needs a request_id or a prediction_id column",
            path.display()
        )));
    }
    lines
        .enumerate()
        .map(|(i, line)| {
            let cells: Vec<&str> = line.split(',').map(str::trim).collect();
            let cell = |c: Option<usize>| c.and_then(|c| cells.get(c)).filter(|v| !v.is_empty());
            let value = cell(Some(label))
                .ok_or_else(|| usage(format!("{} line {}: no label", path.display(), i + 2)))?;
            let value: Value =
                serde_json::from_str(value).unwrap_or(Value::String(value.to_string()));
            Ok(FeedbackLabel {
                request_id: cell(req).map(|v| v.to_string()),
                row: cell(row).map(|v| v.parse()).transpose().map_err(|_| {
                    usage(format!("{} line {}: row is not a number", path.display(), i + 2))
                })?,
                prediction_id: cell(pid).map(|v| v.to_string()),
                label: value,
            })
        })
        .collect()
}

async fn feedback(c: &Client, json_out: bool, a: FeedbackArgs) -> Result<()> {
    let (team, model) = split_model(&a.model)?;
    let labels = read_labels(&a.file)?;
    let mut total = FeedbackResult { added: 0, replaced: 0, unchanged: 0 };
    for chunk in labels.chunks(plinth_core::monitoring::feedback::MAX_LABELS) {
        let r: FeedbackResult = c
            .post(
                &format!("/deployments/{team}/{model}/{}/feedback", a.env),
                &json!({ "labels": chunk }),
            )
            .await?;
        total.added += r.added;
        total.replaced += r.replaced;
        total.unchanged += r.unchanged;
    }
    if json_out {
        output::json(&total);
    } else {
        println!(
            "{} labels: {} added, {} replaced, {} unchanged",
            labels.len(),
            total.added,
            total.replaced,
            total.unchanged
        );
    }
    Ok(())
}

fn range_query(
    since: &str,
    until: Option<&str>,
    version: Option<u32>,
) -> Result<Vec<(&'static str, String)>> {
    let mut q = vec![("since", parse_time(since)?)];
    if let Some(u) = until {
        q.push(("until", parse_time(u)?));
    }
    if let Some(v) = version {
        q.push(("version", v.to_string()));
    }
    Ok(q)
}

async fn performance(c: &Client, json_out: bool, a: RangeArgs) -> Result<()> {
    let (team, model) = split_model(&a.model)?;
    let q = range_query(&a.since, a.until.as_deref(), a.version)?;
    let p: Performance =
        c.get(&format!("/deployments/{team}/{model}/{}/performance", a.env), &q).await?;
    if json_out {
        output::json(&p);
        return Ok(());
    }
    if p.versions.is_empty() {
        println!(
            "no predictions of {} kept in the range: deploy with --keep-predictions to keep them for labels",
            p.deployment
        );
    }
    for v in &p.versions {
        println!(
            "version {}: {} predictions, {} labelled ({:.1} % coverage)",
            v.version,
            v.predictions,
            v.labelled,
            v.label_coverage * 100.0
        );
        let base = v.baseline.as_ref();
        let est = v.estimated.as_ref();
        let mut names: Vec<&String> = v.metrics.keys().collect();
        if names.is_empty() {
            names = est.map(|e| e.metrics.keys().collect()).unwrap_or_default();
        }
        let show = |x: Option<&f64>| x.map_or("-".to_string(), |x| format!("{x:.4}"));
        output::table(
            &["metric", "live", "evaluation", "delta", "estimated (CBPE)"],
            names
                .iter()
                .map(|n| {
                    vec![
                        n.to_string(),
                        show(v.metrics.get(*n)),
                        show(base.and_then(|b| b.metrics.get(*n))),
                        show(base.and_then(|b| b.delta.get(*n))),
                        show(est.and_then(|e| e.metrics.get(*n))),
                    ]
                })
                .collect(),
        );
        if let Some(b) = base {
            println!("evaluation {} on {}", b.evaluation, b.dataset);
        }
        if let Some(e) = est {
            println!("CBPE assumes: {}", e.assumptions);
        }
    }
    Ok(())
}

async fn served_drift(c: &Client, json_out: bool, a: DriftArgs) -> Result<()> {
    let (team, model) = split_model(a.deployment.as_deref().unwrap_or_default())?;
    let q = range_query(&a.since, None, None)?;
    let d: ServedDrift = c.get(&format!("/deployments/{team}/{model}/{}/drift", a.env), &q).await?;
    if json_out {
        output::json(&d);
        return Ok(());
    }
    if d.versions.is_empty() {
        println!("no monitored traffic of {} in the range", d.deployment);
    }
    for v in &d.versions {
        println!(
            "version {}: {} served rows against {} ({} rows, {}); {} of {} columns drifted{}",
            v.version,
            v.rows_current,
            v.baseline,
            v.rows_reference,
            v.baseline_source,
            v.drifted_columns.count,
            v.columns.len(),
            if v.drifted_columns.dataset_drift { ": dataset drift" } else { "" }
        );
        output::table(
            &["column", "method", "score", "threshold", "drifted"],
            v.columns
                .iter()
                .map(|(n, c)| {
                    vec![
                        n.clone(),
                        c.method.clone(),
                        format!("{:.6}", c.score),
                        c.threshold.to_string(),
                        c.drifted.to_string(),
                    ]
                })
                .collect(),
        );
    }
    Ok(())
}

fn time_label(t: time::OffsetDateTime) -> String {
    output::time(&t)
}

fn read(path: &Path) -> Result<Table> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let format = FileFormat::detect(&bytes);
    plinth_data::Tables.read(bytes, format).map_err(|e| anyhow!("{}: {e}", path.display()))
}

/// A column's values for the drift tests, and the kind Evidently would infer for it.
fn values(data: &ColumnData) -> (Values, Kind) {
    match data {
        ColumnData::Float64(v) => (
            Values::Numbers {
                values: v.iter().map(|x| x.unwrap_or(f64::NAN)).collect(),
                integer: false,
            },
            Kind::Numerical,
        ),
        ColumnData::Int64(v) | ColumnData::Timestamp(v) => {
            let values: Vec<f64> = v.iter().map(|x| x.map_or(f64::NAN, |x| x as f64)).collect();
            let distinct: std::collections::HashSet<i64> = v.iter().flatten().copied().collect();
            let kind = if distinct.len() <= 10 { Kind::Categorical } else { Kind::Numerical };
            (Values::Numbers { values, integer: true }, kind)
        }
        ColumnData::Bool(v) => {
            (Values::Texts(v.iter().flatten().map(|b| b.to_string()).collect()), Kind::Categorical)
        }
        ColumnData::Str { dict, codes } => (
            Values::Texts(codes.iter().flatten().map(|c| dict[*c as usize].clone()).collect()),
            Kind::Categorical,
        ),
    }
}

fn parse_method(s: &str) -> Result<(String, Method, Option<f64>)> {
    let bad = || usage(format!("--method '{s}' is not NAME=METHOD[:THRESHOLD]"));
    let (name, rest) = s.split_once('=').ok_or_else(bad)?;
    let (method, threshold) = match rest.split_once(':') {
        Some((m, t)) => (m, Some(t.parse::<f64>().map_err(|_| bad())?)),
        None => (rest, None),
    };
    let method = Method::parse(method).ok_or_else(|| {
        let all: Vec<&str> = Method::ALL.iter().map(|m| m.as_str()).collect();
        usage(format!("--method {name}: '{method}' is not one of {}", all.join(", ")))
    })?;
    Ok((name.to_string(), method, threshold))
}

fn drift_files(json_out: bool, a: DriftArgs) -> Result<()> {
    if !(0.0..=1.0).contains(&a.drift_share) {
        return Err(usage("--drift-share must be between 0 and 1"));
    }
    let overrides: BTreeMap<String, (Method, Option<f64>)> = a
        .methods
        .iter()
        .map(|m| parse_method(m).map(|(n, m, t)| (n, (m, t))))
        .collect::<Result<_>>()?;
    let (Some(reference_path), Some(current_path)) = (a.reference.as_deref(), a.current.as_deref())
    else {
        return Err(usage("give --reference and --current, or --deployment"));
    };
    // Both files at once: they are independent.
    let (reference, current) = std::thread::scope(|s| {
        let r = s.spawn(|| read(reference_path));
        let c = read(current_path);
        (r.join().expect("reading the reference"), c)
    });
    let (reference, current) = (reference?, current?);
    let names: Vec<String> = if a.columns.is_empty() {
        reference.columns.iter().map(|c| c.name.clone()).collect()
    } else {
        a.columns.clone()
    };
    for n in names.iter().chain(overrides.keys()).chain(&a.categorical).chain(&a.numerical) {
        if reference.column(n).is_none() {
            return Err(usage(format!("{} has no column '{n}'", reference_path.display())));
        }
        if current.column(n).is_none() {
            return Err(usage(format!("{} has no column '{n}'", current_path.display())));
        }
    }
    // Columns are independent: as many at once as there are CPUs.
    let threads =
        std::thread::available_parallelism().map_or(1, |n| n.get()).min(names.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<(usize, Result<ColumnDrift>)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(name) = names.get(i) else { return out };
                        let (r, inferred) = values(&reference.column(name).expect("checked").data);
                        let (c, _) = values(&current.column(name).expect("checked").data);
                        let kind = if a.categorical.contains(name) {
                            Kind::Categorical
                        } else if a.numerical.contains(name) {
                            Kind::Numerical
                        } else {
                            inferred
                        };
                        let (method, threshold) = match overrides.get(name) {
                            Some((m, t)) => (Some(*m), *t),
                            None => (None, None),
                        };
                        let d = drift::column_drift(
                            kind,
                            &Sample::new(r),
                            &Sample::new(c),
                            method,
                            threshold,
                        )
                        .map_err(|e| usage(format!("column '{name}': {e}")));
                        out.push((i, d));
                    }
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().expect("a drift worker")).collect()
    });
    let mut columns: Vec<Option<ColumnDrift>> = vec![None; names.len()];
    for (i, d) in results {
        columns[i] = Some(d?);
    }
    let columns: Vec<ColumnDrift> =
        columns.into_iter().map(|c| c.expect("every column computed")).collect();
    let dataset = drift::dataset_drift(&columns, a.drift_share);
    let by_name: serde_json::Map<String, Value> = names
        .iter()
        .zip(&columns)
        .map(|(n, c)| {
            (n.clone(), json!({"method": c.method.label(), "test": c.method.as_str(), "threshold": c.threshold, "score": c.score, "drifted": c.drifted}))
        })
        .collect();
    let doc = json!({
        "rows_reference": reference.rows,
        "rows_current": current.rows,
        "columns": by_name,
        "drifted_columns": {"count": dataset.count, "share": dataset.share, "drift_share": dataset.drift_share},
        "dataset_drift": dataset.dataset_drift,
    });
    if let Some(out) = &a.out {
        let text = serde_json::to_string_pretty(&doc)? + "\n";
        std::fs::write(out, text).with_context(|| format!("cannot write {}", out.display()))?;
    }
    if json_out {
        output::json(&doc);
    } else if a.out.is_none() {
        output::table(
            &["column", "test", "threshold", "score", "drifted"],
            names
                .iter()
                .zip(&columns)
                .map(|(n, c)| {
                    vec![
                        n.clone(),
                        c.method.as_str().into(),
                        c.threshold.to_string(),
                        format!("{:.6}", c.score),
                        c.drifted.to_string(),
                    ]
                })
                .collect(),
        );
        println!(
            "{} of {} columns drifted ({:.0} %): the dataset {} (drift share {})",
            dataset.count,
            names.len(),
            dataset.share * 100.0,
            if dataset.dataset_drift { "drifted" } else { "did not drift" },
            dataset.drift_share
        );
    }
    Ok(())
}
