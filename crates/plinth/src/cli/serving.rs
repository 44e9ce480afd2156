//! The serving commands: deploy, traffic, rollback, history, predict, deployments and
//! environments.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use plinth_api::Page;
use plinth_api::serving::{
    Deployment, DeploymentMetrics, DeploymentRevision, Environment, PredictResponse,
    PredictionRecord,
};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{Global, PageArgs, connect, connect_maybe, parse_time, read_json, split_model, usage};
use crate::client::Client;
use crate::output;

/// Deployments, traffic, predictions and environments.
#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Deploy versions of a model to an environment (replaces what is deployed there).
    #[command(after_help = "Example:\n  plinth deploy fraud/income --traffic 1=90 --traffic 2=10")]
    Deploy(DeployArgs),
    /// Change the traffic split of a deployment: VERSION=PERCENT ...
    #[command(after_help = "Example:\n  plinth traffic fraud/income --env production 1=50 2=50")]
    Traffic {
        /// The deployed model, TEAM/MODEL.
        model: String,
        /// The deployment's environment.
        #[arg(long, default_value = "production")]
        env: String,
        /// VERSION=PERCENT, e.g. 3=90 4=10
        #[arg(required = true)]
        split: Vec<String>,
        /// Shadow versions (replaces the current shadows; --shadow none clears them).
        #[arg(long = "shadow")]
        shadows: Option<Vec<String>>,
    },
    /// Go back to an earlier revision of a deployment (default: the previous one).
    Rollback {
        /// The deployed model, TEAM/MODEL.
        model: String,
        /// The deployment's environment.
        #[arg(long, default_value = "production")]
        env: String,
        /// The revision to go back to (see `plinth history`; default: the one before the current).
        #[arg(long)]
        to_revision: Option<u32>,
    },
    /// What served in an environment, when, and who changed it.
    History {
        /// The deployed model, TEAM/MODEL.
        model: String,
        /// The deployment's environment.
        #[arg(long, default_value = "production")]
        env: String,
        /// Instead of the list: what served at this time (RFC 3339, or `now`), who approved it,
        /// with which evidence.
        #[arg(long)]
        at: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Predict from a JSON or CSV file of rows.
    #[command(after_help = "Example:\n  plinth predict fraud/income --file rows.csv")]
    Predict(PredictArgs),
    /// Deployments: list, show, metrics, grants, the prediction log.
    #[command(subcommand)]
    Deployment(DeploymentCmd),
    /// Environments (staging, production, and the ones admins add).
    #[command(subcommand)]
    Environment(EnvironmentCmd),
}

#[derive(Args, Debug)]
pub(crate) struct DeployArgs {
    /// TEAM/MODEL
    model: String,
    /// The environment to deploy to.
    #[arg(long, default_value = "production")]
    env: String,
    /// A version to serve (all traffic), or VERSION=PERCENT; repeat for a canary or A/B split.
    #[arg(long = "traffic", value_name = "VERSION[=PERCENT]", required_unless_present = "spec")]
    versions: Vec<String>,
    /// A version that gets a copy of every request (answers logged, never returned).
    #[arg(long = "shadow")]
    shadows: Vec<u32>,
    /// Anyone may call it without an API key.
    #[arg(long)]
    public: bool,
    /// Do not capture its predictions for monitoring (drift of its traffic, live accuracy).
    #[arg(long)]
    no_monitor: bool,
    /// Keep its predictions so that labels can be posted for them (live accuracy).
    #[arg(long, conflicts_with = "no_monitor")]
    keep_predictions: bool,
    /// The most rows run in one batch (default 256).
    #[arg(long)]
    max_batch_size: Option<u32>,
    /// How long a batch may wait for more requests while others queue, in µs (default 500).
    #[arg(long)]
    max_wait_us: Option<u32>,
    /// The most workers of each served version, 1-256 (default 2).
    #[arg(long)]
    max_workers: Option<u32>,
    /// A worker idle this long stops, in seconds; the last one unloads the model (default 300).
    #[arg(long)]
    idle_seconds: Option<u32>,
    /// A request not answered within this many milliseconds fails (default 5000).
    #[arg(long)]
    timeout_ms: Option<u32>,
    /// The share of requests written to the prediction log, 0.0-1.0 (default 1.0).
    #[arg(long)]
    log_sample_rate: Option<f64>,
    /// A JSON file with the whole deployment spec (other flags are then ignored).
    #[arg(long)]
    spec: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub(crate) struct PredictArgs {
    /// TEAM/MODEL
    model: String,
    /// The environment whose deployment answers.
    #[arg(long, default_value = "production")]
    env: String,
    /// Rows: a .csv file with a header row, or a .json file (an array of rows, or {"rows": [...]}).
    #[arg(long, required_unless_present = "entity", conflicts_with = "entity")]
    file: Option<PathBuf>,
    /// Predict by entity key instead of rows, JOIN_KEY=V1,V2,... (repeat for a composite key):
    /// the version's feature service fetches each key's features from the online store.
    #[arg(long = "entity", value_name = "KEY=VALUES")]
    entity: Vec<String>,
    /// Sticky routing key: the same key always reaches the same version.
    #[arg(long = "routing-key")]
    key: Option<String>,
    /// Rows per request.
    #[arg(long, default_value_t = 1000)]
    batch_rows: usize,
}

#[derive(Subcommand, Debug)]
pub(crate) enum DeploymentCmd {
    List {
        /// Only this team's deployments.
        #[arg(long)]
        team: Option<String>,
        /// Only the deployments in this environment.
        #[arg(long)]
        env: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    Show {
        /// The deployed model, TEAM/MODEL.
        model: String,
        /// The deployment's environment.
        #[arg(long, default_value = "production")]
        env: String,
    },
    Metrics {
        /// The deployed model, TEAM/MODEL.
        model: String,
        /// The deployment's environment.
        #[arg(long, default_value = "production")]
        env: String,
    },
    /// Let another team call this deployment.
    Grant {
        /// The deployed model, TEAM/MODEL.
        model: String,
        /// The deployment's environment.
        #[arg(long, default_value = "production")]
        env: String,
        /// The team that may call it.
        #[arg(long)]
        team: String,
    },
    Revoke {
        /// The deployed model, TEAM/MODEL.
        model: String,
        /// The deployment's environment.
        #[arg(long, default_value = "production")]
        env: String,
        /// The team that may no longer call it.
        #[arg(long)]
        team: String,
    },
    /// Logged predictions (RFC 3339 times or durations ago, e.g. 1h).
    Log {
        /// The deployed model, TEAM/MODEL.
        model: String,
        /// The deployment's environment.
        #[arg(long, default_value = "production")]
        env: String,
        /// Only predictions from this time on: RFC 3339 or a duration ago (e.g. 1h).
        #[arg(long)]
        since: Option<String>,
        /// Only predictions before this time: RFC 3339 or a duration ago (default: now).
        #[arg(long)]
        until: Option<String>,
        /// true: only shadow versions' answers; false: only served ones (default: both).
        #[arg(long)]
        shadow: Option<bool>,
        /// The most records to show, oldest first; at most 500 (default 50).
        #[arg(long)]
        limit: Option<u32>,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum EnvironmentCmd {
    List,
    Create {
        /// The environment's name: 1-63 characters of a-z, 0-9, '-' and '_'.
        name: String,
        /// What the environment is for.
        #[arg(long)]
        description: Option<String>,
    },
}

pub(crate) async fn run(g: &Global, cmd: Command) -> Result<()> {
    match cmd {
        Command::Deploy(args) => deploy(&connect(g)?, g.json, args).await,
        Command::Traffic { model, env, split, shadows } => {
            traffic(&connect(g)?, g.json, &model, &env, &split, shadows).await
        }
        Command::Rollback { model, env, to_revision } => {
            rollback(&connect(g)?, g.json, &model, &env, to_revision).await
        }
        Command::History { model, env, at: Some(at), .. } => {
            let at = if at == "now" { OffsetDateTime::now_utc().format(&Rfc3339)? } else { at };
            super::governance::served(&connect(g)?, g.json, &model, &env, &at).await
        }
        Command::History { model, env, at: None, page } => {
            history(&connect(g)?, g.json, &model, &env, page.query()).await
        }
        Command::Predict(args) => predict(&connect_maybe(g)?, g.json, args).await,
        Command::Deployment(cmd) => deployment(&connect(g)?, g.json, cmd).await,
        Command::Environment(cmd) => environment(&connect(g)?, g.json, cmd).await,
    }
}

fn path(model: &str, env: &str) -> Result<String> {
    let (team, name) = split_model(model)?;
    Ok(format!("/deployments/{team}/{name}/{env}"))
}

/// `3` (all traffic) or `3=90`.
fn parse_split(items: &[String]) -> Result<Vec<Value>> {
    let single = items.len() == 1;
    items
        .iter()
        .map(|s| {
            let (v, w) = match s.split_once('=') {
                Some((v, w)) => (
                    v,
                    w.parse::<u32>().map_err(|_| {
                        usage(format!("'{s}': the weight must be a whole percentage"))
                    })?,
                ),
                None if single => (s.as_str(), 100),
                None => {
                    return Err(usage(format!(
                        "'{s}': with several versions, give each as VERSION=PERCENT"
                    )));
                }
            };
            let v: u32 =
                v.parse().map_err(|_| usage(format!("'{s}' is not VERSION or VERSION=PERCENT")))?;
            Ok(json!({"version": v, "weight": w}))
        })
        .collect()
}

fn show_deployment(json_out: bool, d: &Deployment) {
    if json_out {
        output::json(d);
        return;
    }
    let split: Vec<String> =
        d.spec.versions.iter().map(|s| format!("v{} {}%", s.version, s.weight)).collect();
    output::fields(&[
        ("deployment", format!("{}/{}@{}", d.team, d.model, d.environment)),
        ("revision", d.revision.to_string()),
        ("traffic", split.join(", ")),
        (
            "shadows",
            if d.spec.shadows.is_empty() {
                "-".into()
            } else {
                d.spec.shadows.iter().map(|v| format!("v{v}")).collect::<Vec<_>>().join(", ")
            },
        ),
        (
            "batching",
            format!(
                "up to {} rows, wait {} µs",
                d.spec.batching.max_batch_size, d.spec.batching.max_wait_us
            ),
        ),
        (
            "workers",
            format!(
                "up to {}, idle stop after {} s",
                d.spec.scaling.max_workers, d.spec.scaling.idle_seconds
            ),
        ),
        ("public", d.spec.public.to_string()),
        (
            "granted to",
            if d.granted_teams.is_empty() { "-".into() } else { d.granted_teams.join(", ") },
        ),
        ("updated", format!("{} by {}", output::time(&d.updated_at), d.updated_by)),
    ]);
}

pub(super) async fn deploy(c: &Client, json_out: bool, a: DeployArgs) -> Result<()> {
    let spec = match &a.spec {
        Some(file) => read_json(file)?,
        None => {
            let mut spec = json!({"versions": parse_split(&a.versions)?, "shadows": a.shadows, "public": a.public, "monitor": !a.no_monitor, "keep_predictions": a.keep_predictions});
            let mut batching = json!({});
            if let Some(v) = a.max_batch_size {
                batching["max_batch_size"] = json!(v);
            }
            if let Some(v) = a.max_wait_us {
                batching["max_wait_us"] = json!(v);
            }
            let mut scaling = json!({});
            if let Some(v) = a.max_workers {
                scaling["max_workers"] = json!(v);
            }
            if let Some(v) = a.idle_seconds {
                scaling["idle_seconds"] = json!(v);
            }
            spec["batching"] = batching;
            spec["scaling"] = scaling;
            if let Some(v) = a.timeout_ms {
                spec["limits"] = json!({"timeout_ms": v});
            }
            if let Some(v) = a.log_sample_rate {
                spec["log_sample_rate"] = json!(v);
            }
            spec
        }
    };
    let d: Deployment = c.put(&path(&a.model, &a.env)?, &spec).await?;
    if json_out {
        output::json(&d);
    } else {
        println!("deployed {}/{}@{} (revision {})", d.team, d.model, d.environment, d.revision);
        show_deployment(false, &d);
    }
    Ok(())
}

pub(super) async fn traffic(
    c: &Client,
    json_out: bool,
    model: &str,
    env: &str,
    split: &[String],
    shadows: Option<Vec<String>>,
) -> Result<()> {
    let shadows: Option<Vec<u32>> = match shadows {
        None => None,
        Some(list) if list.iter().any(|s| s == "none") => Some(vec![]),
        Some(list) => Some(
            list.iter()
                .map(|s| s.parse().map_err(|_| usage(format!("'{s}' is not a version number"))))
                .collect::<Result<_>>()?,
        ),
    };
    let d: Deployment = c
        .post(
            &format!("{}/traffic", path(model, env)?),
            &json!({"versions": parse_split(split)?, "shadows": shadows}),
        )
        .await?;
    show_deployment(json_out, &d);
    Ok(())
}

pub(super) async fn rollback(
    c: &Client,
    json_out: bool,
    model: &str,
    env: &str,
    to: Option<u32>,
) -> Result<()> {
    let d: Deployment =
        c.post(&format!("{}/rollback", path(model, env)?), &json!({"to_revision": to})).await?;
    if json_out {
        output::json(&d);
    } else {
        println!(
            "rolled back {}/{}@{}: now revision {}",
            d.team, d.model, d.environment, d.revision
        );
        show_deployment(false, &d);
    }
    Ok(())
}

pub(super) async fn history(
    c: &Client,
    json_out: bool,
    model: &str,
    env: &str,
    query: Vec<(&'static str, String)>,
) -> Result<()> {
    let p: Page<DeploymentRevision> =
        c.get(&format!("{}/history", path(model, env)?), &query).await?;
    if json_out {
        output::json(&p);
        return Ok(());
    }
    output::table(
        &["revision", "from", "action", "by", "traffic", "shadows"],
        p.items
            .iter()
            .map(|r| {
                vec![
                    r.revision.to_string(),
                    output::time(&r.at),
                    r.action.clone(),
                    r.by.clone(),
                    r.spec
                        .versions
                        .iter()
                        .map(|s| format!("v{} {}%", s.version, s.weight))
                        .collect::<Vec<_>>()
                        .join(", "),
                    r.spec.shadows.iter().map(|v| format!("v{v}")).collect::<Vec<_>>().join(", "),
                ]
            })
            .collect(),
    );
    output::more(&p.next_cursor);
    Ok(())
}

/// Reads rows from a CSV file (header = feature names; empty cell = missing) or a JSON file.
fn read_rows(file: &Path) -> Result<Vec<Value>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    if file.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv")) {
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let header: Vec<String> = lines
            .next()
            .context("the CSV file is empty")?
            .split(',')
            .map(|h| h.trim().trim_matches('"').to_string())
            .collect();
        return lines
            .enumerate()
            .map(|(i, line)| {
                let cells: Vec<&str> = line.split(',').collect();
                if cells.len() != header.len() {
                    anyhow::bail!(
                        "{} line {}: {} cells for {} columns",
                        file.display(),
                        i + 2,
                        cells.len(),
                        header.len()
                    );
                }
                let mut row = serde_json::Map::new();
                for (h, c) in header.iter().zip(cells) {
                    let c = c.trim().trim_matches('"');
                    let v = if c.is_empty() {
                        Value::Null
                    } else {
                        json!(c.parse::<f64>().with_context(|| format!(
                            "{} line {}: column {h}: '{c}' is not a number",
                            file.display(),
                            i + 2
                        ))?)
                    };
                    row.insert(h.clone(), v);
                }
                Ok(Value::Object(row))
            })
            .collect();
    }
    let v: Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", file.display()))?;
    match v {
        Value::Array(rows) => Ok(rows),
        Value::Object(mut o) => match o.remove("rows") {
            Some(Value::Array(rows)) => Ok(rows),
            _ => anyhow::bail!(
                "{}: expected an array of rows or {{\"rows\": [...]}}",
                file.display()
            ),
        },
        _ => anyhow::bail!("{}: expected an array of rows or {{\"rows\": [...]}}", file.display()),
    }
}

pub(super) async fn predict(c: &Client, json_out: bool, a: PredictArgs) -> Result<()> {
    let url = format!("{}/predict", path(&a.model, &a.env)?);
    if !a.entity.is_empty() {
        let body = json!({"entities": super::entity_keys(&a.entity)?, "routing_key": a.key});
        let answer: PredictResponse = c.post(&url, &body).await?;
        return print_answers(json_out, &[answer]);
    }
    let file = a.file.expect("clap requires --file without --entity");
    let rows = read_rows(&file)?;
    if rows.is_empty() {
        return Err(usage(format!("{} has no rows", file.display())));
    }
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(rows.len() as u64),
        indicatif::ProgressDrawTarget::stderr(),
    );
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "predicting [{bar:30}] {pos}/{len} rows {per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut answers: Vec<PredictResponse> = Vec::new();
    for chunk in rows.chunks(a.batch_rows.max(1)) {
        let answer: PredictResponse =
            c.post(&url, &json!({"rows": chunk, "routing_key": a.key})).await?;
        bar.inc(chunk.len() as u64);
        answers.push(answer);
    }
    bar.finish_and_clear();
    print_answers(json_out, &answers)
}

/// Predictions as CSV (row, prediction, version, class probabilities), or the server's JSON.
fn print_answers(json_out: bool, answers: &[PredictResponse]) -> Result<()> {
    if json_out {
        output::json(&answers);
        return Ok(());
    }
    let classes = answers
        .iter()
        .find_map(|a| a.probabilities.as_ref().and_then(|p| p.first().map(Vec::len)))
        .unwrap_or(0);
    let mut header = vec!["row".to_string(), "prediction".to_string(), "version".to_string()];
    header.extend((0..classes).map(|k| format!("p{k}")));
    println!("{}", header.join(","));
    let mut row = 0;
    for a in answers {
        for (i, p) in a.predictions.iter().enumerate() {
            let mut cells = vec![row.to_string(), p.to_string(), a.version.to_string()];
            if let Some(probs) = &a.probabilities {
                cells.extend(probs[i].iter().map(|x| x.to_string()));
            }
            println!("{}", cells.join(","));
            row += 1;
        }
    }
    Ok(())
}

pub(super) async fn deployment(c: &Client, json_out: bool, cmd: DeploymentCmd) -> Result<()> {
    match cmd {
        DeploymentCmd::List { team, env, page } => {
            let mut q = page.query();
            if let Some(t) = team {
                q.push(("team", t));
            }
            if let Some(e) = env {
                q.push(("environment", e));
            }
            let p: Page<Deployment> = c.get("/deployments", &q).await?;
            if json_out {
                output::json(&p);
            } else {
                output::table(
                    &["deployment", "revision", "traffic", "shadows", "updated"],
                    p.items
                        .iter()
                        .map(|d| {
                            vec![
                                format!("{}/{}@{}", d.team, d.model, d.environment),
                                d.revision.to_string(),
                                d.spec
                                    .versions
                                    .iter()
                                    .map(|s| format!("v{} {}%", s.version, s.weight))
                                    .collect::<Vec<_>>()
                                    .join(", "),
                                d.spec
                                    .shadows
                                    .iter()
                                    .map(|v| format!("v{v}"))
                                    .collect::<Vec<_>>()
                                    .join(", "),
                                output::time(&d.updated_at),
                            ]
                        })
                        .collect(),
                );
                output::more(&p.next_cursor);
            }
        }
        DeploymentCmd::Show { model, env } => {
            let d: Deployment = c.get(&path(&model, &env)?, &[]).await?;
            show_deployment(json_out, &d);
        }
        DeploymentCmd::Metrics { model, env } => {
            let m: DeploymentMetrics =
                c.get(&format!("{}/metrics", path(&model, &env)?), &[]).await?;
            if json_out {
                output::json(&m);
            } else {
                output::fields(&[
                    ("deployment", m.deployment.clone()),
                    ("requests", m.requests.to_string()),
                    ("rows", m.rows.to_string()),
                    (
                        "errors",
                        if m.errors.is_empty() {
                            "none".into()
                        } else {
                            m.errors
                                .iter()
                                .map(|(k, v)| format!("{k}: {v}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        },
                    ),
                    (
                        "latency ms",
                        format!(
                            "p50 {} p90 {} p99 {} mean {}",
                            m.latency_ms.p50, m.latency_ms.p90, m.latency_ms.p99, m.latency_ms.mean
                        ),
                    ),
                ]);
                output::table(
                    &[
                        "version",
                        "shadow",
                        "requests",
                        "batches",
                        "rows/batch",
                        "queue",
                        "workers",
                        "loaded",
                        "last load ms",
                    ],
                    m.versions
                        .iter()
                        .map(|v| {
                            vec![
                                v.version.to_string(),
                                v.shadow.to_string(),
                                v.requests.to_string(),
                                v.batches.to_string(),
                                format!("{:.1}", v.mean_batch_rows),
                                v.queue_depth.to_string(),
                                v.workers.to_string(),
                                v.model_loaded.to_string(),
                                v.last_load_ms
                                    .map(|x| format!("{x:.2}"))
                                    .unwrap_or_else(|| "-".into()),
                            ]
                        })
                        .collect(),
                );
            }
        }
        DeploymentCmd::Grant { model, env, team } => {
            let d: Deployment =
                c.post(&format!("{}/grants", path(&model, &env)?), &json!({"team": team})).await?;
            show_deployment(json_out, &d);
        }
        DeploymentCmd::Revoke { model, env, team } => {
            let d: Deployment = c
                .delete_json(&format!("{}/grants", path(&model, &env)?), &json!({"team": team}))
                .await?;
            show_deployment(json_out, &d);
        }
        DeploymentCmd::Log { model, env, since, until, shadow, limit } => {
            let mut q = Vec::new();
            if let Some(s) = since {
                q.push(("since", parse_time(&s)?));
            }
            if let Some(u) = until {
                q.push(("until", parse_time(&u)?));
            }
            if let Some(s) = shadow {
                q.push(("shadow", s.to_string()));
            }
            if let Some(l) = limit {
                q.push(("limit", l.to_string()));
            }
            let records: Vec<PredictionRecord> =
                c.get(&format!("{}/predictions", path(&model, &env)?), &q).await?;
            if json_out {
                output::json(&records);
            } else {
                output::table(
                    &["at", "request", "version", "shadow", "caller", "latency µs", "outputs"],
                    records
                        .iter()
                        .map(|r| {
                            let mut out = r.outputs.to_string();
                            if out.len() > 60 {
                                out.truncate(57);
                                out.push_str("...");
                            }
                            vec![
                                output::time(&r.at),
                                r.request_id.clone(),
                                r.version.to_string(),
                                r.shadow.to_string(),
                                r.caller.clone(),
                                r.latency_us.to_string(),
                                out,
                            ]
                        })
                        .collect(),
                );
            }
        }
    }
    Ok(())
}

pub(super) async fn environment(c: &Client, json_out: bool, cmd: EnvironmentCmd) -> Result<()> {
    match cmd {
        EnvironmentCmd::List => {
            let envs: Vec<Environment> = c.get("/environments", &[]).await?;
            if json_out {
                output::json(&envs);
            } else {
                output::table(
                    &["environment", "description"],
                    envs.iter().map(|e| vec![e.name.clone(), e.description.clone()]).collect(),
                );
            }
        }
        EnvironmentCmd::Create { name, description } => {
            let e: Environment =
                c.post("/environments", &json!({"name": name, "description": description})).await?;
            if json_out { output::json(&e) } else { println!("created environment {}", e.name) }
        }
    }
    Ok(())
}
