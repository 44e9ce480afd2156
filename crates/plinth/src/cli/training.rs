//! Training: `plinth recipe` (a team's training specs), `plinth train` (start a run and follow
//! it with a progress bar), `plinth run` (list, show, logs, cancel), and `plinth fit` — the
//! built-in trainers on a local file without a server (what the training benchmark times).

use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use plinth_api::tasks::TaskState;
use plinth_api::training::{Recipe, TrainingRun};
use plinth_core::data::{ColumnData, FileFormat, TableReader};
use plinth_data::Tables;
use plinth_train::linear::{LinearParams, train_linear};
use plinth_train::{Columns, FileSource, Params};

use super::{Global, connect, split_model};
use crate::client::Client;
use crate::output;

/// Training.
#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Train a model on a local CSV or Parquet file with a built-in trainer (no server).
    Fit(FitArgs),
    /// Recipes: a team's named, versioned training specs.
    #[command(subcommand)]
    Recipe(RecipeCmd),
    /// Start a run of a recipe (TEAM/RECIPE) and follow it to its registered version.
    Train {
        /// The recipe to run, TEAM/RECIPE.
        recipe: String,
        /// Override a parameter for this run: NAME=VALUE (repeatable).
        #[arg(long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
        /// Start the run and return at once.
        #[arg(long)]
        detach: bool,
    },
    /// Training runs: list, show, logs, cancel.
    #[command(subcommand)]
    Run(RunCmd),
}

#[derive(Subcommand, Debug)]
pub(crate) enum RecipeCmd {
    /// Create a recipe (or a new version of it) from a JSON or TOML file.
    Put {
        /// TEAM/RECIPE
        recipe: String,
        /// The recipe's spec, a .json or .toml file.
        #[arg(long)]
        file: PathBuf,
    },
    /// A recipe's latest version.
    Get {
        /// The recipe, TEAM/RECIPE.
        recipe: String,
    },
    /// A team's recipes.
    List {
        /// The team's name.
        #[arg(long)]
        team: String,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum RunCmd {
    /// A team's runs, newest first.
    List {
        /// The team's name.
        #[arg(long)]
        team: String,
        /// Only the runs of this recipe (its name in the team).
        #[arg(long)]
        recipe: Option<String>,
    },
    /// One run: state, trigger, steps, result. TEAM/RUN_ID
    Show {
        /// The run, TEAM/RUN_ID (see `plinth run list`).
        run: String,
    },
    /// A run's log (`--follow` until it ends). TEAM/RUN_ID
    Logs {
        /// The run, TEAM/RUN_ID (see `plinth run list`).
        run: String,
        /// Keep printing new lines until the run ends.
        #[arg(long)]
        follow: bool,
    },
    /// Cancel a run: it stops at its next iteration and registers nothing. TEAM/RUN_ID
    Cancel {
        /// The run, TEAM/RUN_ID (see `plinth run list`).
        run: String,
    },
}

#[derive(Args, Debug)]
pub(crate) struct FitArgs {
    /// The training data (.csv, .csv.gz or .parquet).
    #[arg(long)]
    data: PathBuf,
    /// The label column.
    #[arg(long)]
    label: String,
    /// Feature columns, comma-separated (default: every other column).
    #[arg(long, value_delimiter = ',')]
    features: Vec<String>,
    /// gbdt (gradient-boosted trees), linear or logistic.
    #[arg(long, default_value = "gbdt")]
    trainer: String,
    /// A parameter under LightGBM's name, e.g. `--param objective=binary --param num_leaves=63`.
    #[arg(long = "param", value_name = "NAME=VALUE")]
    params: Vec<String>,
    /// Share of rows held out for validation and early stopping.
    #[arg(long, default_value_t = 0.0)]
    valid_fraction: f64,
    /// Where to write the model (LightGBM text for gbdt, ONNX for linear and logistic).
    #[arg(long)]
    out: PathBuf,
    /// Rows to predict with the trained model, through Plinth's serving evaluator.
    #[arg(long)]
    predict: Option<PathBuf>,
    /// Where the predictions go: one line per row (binary: P(positive class); multiclass: the
    /// probabilities, comma-separated; regression: the value).
    #[arg(long, requires = "predict")]
    predictions: Option<PathBuf>,
}

pub(crate) async fn run(g: &Global, cmd: Command) -> Result<()> {
    match cmd {
        Command::Fit(args) => tokio::task::spawn_blocking(move || fit(args)).await?,
        Command::Recipe(cmd) => recipe(&connect(g)?, g.json, cmd).await,
        Command::Train { recipe, params, detach } => {
            train(&connect(g)?, g.json, &recipe, &params, detach).await
        }
        Command::Run(cmd) => runs(&connect(g)?, g.json, cmd).await,
    }
}

fn params_map(params: &[String]) -> Result<std::collections::BTreeMap<String, serde_json::Value>> {
    let mut map = std::collections::BTreeMap::new();
    for p in params {
        let (k, v) =
            p.split_once('=').with_context(|| format!("--param {p}: expected NAME=VALUE"))?;
        map.insert(k.trim().to_string(), serde_json::Value::String(v.trim().to_string()));
    }
    Ok(map)
}

async fn recipe(c: &Client, json_out: bool, cmd: RecipeCmd) -> Result<()> {
    match cmd {
        RecipeCmd::Put { recipe, file } => {
            let (team, name) = split_model(&recipe)?;
            let spec = super::read_spec(&file)?;
            let r: Recipe = c.put(&format!("/teams/{team}/recipes/{name}"), &spec).await?;
            print_recipe(json_out, &r);
        }
        RecipeCmd::Get { recipe } => {
            let (team, name) = split_model(&recipe)?;
            let r: Recipe = c.get(&format!("/teams/{team}/recipes/{name}"), &[]).await?;
            print_recipe(json_out, &r);
        }
        RecipeCmd::List { team } => {
            let l: Vec<Recipe> = c.get(&format!("/teams/{team}/recipes"), &[]).await?;
            if json_out {
                output::json(&l);
            } else {
                output::table(
                    &["recipe", "version", "model", "trainer", "triggers", "updated"],
                    l.iter()
                        .map(|r| {
                            vec![
                                r.name.clone(),
                                r.version.to_string(),
                                r.spec.model.clone(),
                                r.spec.trainer.clone(),
                                r.spec.retrain.as_ref().map_or(0, |t| t.triggers.len()).to_string(),
                                output::time(&r.created_at),
                            ]
                        })
                        .collect(),
                );
            }
        }
    }
    Ok(())
}

fn print_recipe(json_out: bool, r: &Recipe) {
    if json_out {
        output::json(r);
        return;
    }
    output::fields(&[
        ("recipe", format!("{}/{}@{}", r.team, r.name, r.version)),
        ("model", r.spec.model.clone()),
        ("trainer", r.spec.trainer.clone()),
        ("data", serde_json::to_string(&r.spec.data).unwrap_or_default()),
        ("label", r.spec.label.clone()),
        (
            "triggers",
            r.spec
                .retrain
                .as_ref()
                .map(|t| serde_json::to_string(&t.triggers).unwrap_or_default())
                .unwrap_or_else(|| "none".into()),
        ),
        ("by", format!("{} at {}", r.created_by, output::time(&r.created_at))),
    ]);
}

fn print_run(json_out: bool, r: &TrainingRun) {
    if json_out {
        output::json(r);
        return;
    }
    let mut fields = vec![
        ("run", r.id.clone()),
        ("recipe", format!("{}/{}@{}", r.team, r.recipe, r.recipe_version)),
        ("model", r.model.clone()),
        ("trigger", r.trigger.clone()),
        ("state", r.state.as_str().to_string()),
        ("progress", format!("{:.0} %", r.progress * 100.0)),
        ("started", format!("{} by {}", output::time(&r.created_at), r.created_by)),
    ];
    if let Some(s) = r.steps.last() {
        let v = |x: Option<f64>| x.map(|x| format!("{x:.6}")).unwrap_or_else(|| "-".into());
        fields.push((
            "last step",
            format!(
                "{}/{} {} train {} valid {}",
                s.iteration,
                s.of,
                s.metric,
                v(s.train),
                v(s.valid)
            ),
        ));
    }
    if let Some(res) = &r.result {
        fields.push(("version", format!("{}@{}", r.model, res.version)));
        fields.push(("data", format!("{} (sha256 {})", res.dataset, res.dataset_sha256)));
        fields.push(("rows", format!("{} trained, {} held out", res.train_rows, res.holdout_rows)));
        if let Some(e) = &res.evaluation {
            fields.push(("evaluation", e.clone()));
        }
        if !res.metrics.is_empty() {
            fields.push((
                "held-out",
                res.metrics
                    .iter()
                    .map(|(k, v)| format!("{k} {v:.4}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            ));
        }
        if let Some(p) = &res.promotion_status {
            fields
                .push(("promotion", format!("{} {p}", res.promotion.clone().unwrap_or_default())));
        }
    }
    if let Some(e) = &r.error {
        fields.push(("error", e.clone()));
    }
    output::fields(&fields);
}

async fn train(
    c: &Client,
    json_out: bool,
    recipe: &str,
    params: &[String],
    detach: bool,
) -> Result<()> {
    let (team, name) = split_model(recipe)?;
    let body = serde_json::json!({ "params": params_map(params)? });
    let run: TrainingRun = c.post(&format!("/teams/{team}/recipes/{name}/runs"), &body).await?;
    if detach {
        print_run(json_out, &run);
        return Ok(());
    }
    let bar = indicatif::ProgressBar::new(1000);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {percent:>3}% {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    if json_out {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let path = format!("/teams/{team}/runs/{}", run.id);
    let done = loop {
        let r: TrainingRun = c.get(&path, &[]).await?;
        bar.set_position((r.progress * 1000.0) as u64);
        if let Some(s) = r.steps.last() {
            let v = |x: Option<f64>| x.map(|x| format!("{x:.5}")).unwrap_or_else(|| "-".into());
            bar.set_message(format!(
                "iteration {}/{} {} train {} valid {}",
                s.iteration,
                s.of,
                s.metric,
                v(s.train),
                v(s.valid)
            ));
        }
        if r.state.finished() {
            break r;
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    };
    bar.finish_and_clear();
    print_run(json_out, &done);
    if done.state != TaskState::Completed {
        bail!(
            "the run did not complete ({}){}",
            done.state.as_str(),
            done.error.map(|e| format!(": {e}")).unwrap_or_default()
        );
    }
    Ok(())
}

async fn runs(c: &Client, json_out: bool, cmd: RunCmd) -> Result<()> {
    match cmd {
        RunCmd::List { team, recipe } => {
            let q: Vec<(&str, String)> = recipe.map(|r| ("recipe", r)).into_iter().collect();
            let l: Vec<TrainingRun> = c.get(&format!("/teams/{team}/runs"), &q).await?;
            if json_out {
                output::json(&l);
            } else {
                output::table(
                    &["run", "recipe", "trigger", "state", "version", "started"],
                    l.iter()
                        .map(|r| {
                            vec![
                                r.id.clone(),
                                format!("{}@{}", r.recipe, r.recipe_version),
                                r.trigger.clone(),
                                r.state.as_str().to_string(),
                                r.result
                                    .as_ref()
                                    .map(|x| format!("{}@{}", r.model, x.version))
                                    .unwrap_or_default(),
                                output::time(&r.created_at),
                            ]
                        })
                        .collect(),
                );
            }
        }
        RunCmd::Show { run } => {
            let (team, id) = split_model(&run)?;
            let r: TrainingRun = c.get(&format!("/teams/{team}/runs/{id}"), &[]).await?;
            print_run(json_out, &r);
        }
        RunCmd::Logs { run, follow } => {
            let (team, id) = split_model(&run)?;
            // The run must be the team's before its task's log is read.
            let _: TrainingRun = c.get(&format!("/teams/{team}/runs/{id}"), &[]).await?;
            super::tasks::task(c, json_out, super::tasks::TaskCmd::Logs { id, follow }).await?;
        }
        RunCmd::Cancel { run } => {
            let (team, id) = split_model(&run)?;
            let r: TrainingRun =
                c.post(&format!("/teams/{team}/runs/{id}/cancel"), &serde_json::json!({})).await?;
            print_run(json_out, &r);
        }
    }
    Ok(())
}

fn format_of(path: &Path) -> FileFormat {
    if path.extension().is_some_and(|e| e == "parquet") {
        FileFormat::Parquet
    } else {
        FileFormat::Csv
    }
}

fn fit(a: FitArgs) -> Result<()> {
    let started = std::time::Instant::now();
    let format = format_of(&a.data);
    let scan = plinth_data::FileScan::open(&a.data, format).map_err(anyhow::Error::msg)?;
    let names: Vec<String> = scan.schema().fields().iter().map(|f| f.name().clone()).collect();
    if !names.contains(&a.label) {
        bail!("--label: the data has no column '{}' (it has {})", a.label, names.join(", "));
    }
    let features: Vec<String> = if a.features.is_empty() {
        names.iter().filter(|n| **n != a.label).cloned().collect()
    } else {
        a.features.clone()
    };
    let map = params_map(&a.params)?;
    let mut columns = features.clone();
    columns.push(a.label.clone());
    let mut source = FileSource { reader: &Tables, path: a.data.clone(), format, columns };
    let mut progress = |p: &plinth_train::Progress| {
        if p.iteration.is_multiple_of(10) || p.iteration == p.of {
            let metric =
                |v: Option<f64>| v.map(|v| format!("{v:.6}")).unwrap_or_else(|| "-".into());
            eprintln!(
                "[{:>4}/{}] {} train {} valid {}",
                p.iteration,
                p.of,
                p.metric,
                metric(p.train),
                metric(p.valid)
            );
        }
        ControlFlow::Continue(())
    };
    let (bytes, categories, kind) = match a.trainer.as_str() {
        "gbdt" => {
            let params = Params::from_json(&map).map_err(|e| anyhow::anyhow!("--param {e}"))?;
            let cols = Columns {
                features: features.clone(),
                label: a.label.clone(),
                valid_fraction: a.valid_fraction,
                classify: false,
            };
            let t = plinth_train::train_gbdt(&mut source, &cols, &params, &mut progress)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            eprintln!(
                "trained {} trees on {} rows ({} validation); binned matrix {} bytes",
                t.booster.trees.len(),
                t.train_rows,
                t.valid_rows,
                t.binned_bytes
            );
            (t.model.into_bytes(), t.categories, plinth_api::registry::ModelFormat::Lightgbm)
        }
        "linear" | "logistic" => {
            let params =
                LinearParams::from_json(&map).map_err(|e| anyhow::anyhow!("--param {e}"))?;
            let cols = Columns {
                features: features.clone(),
                label: a.label.clone(),
                valid_fraction: 0.0,
                classify: false,
            };
            let fit =
                train_linear(&mut source, &cols, a.trainer == "logistic", &params, &mut progress)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            let n = fit.coef.len();
            (fit.onnx(), vec![None; n], plinth_api::registry::ModelFormat::Onnx)
        }
        other => bail!("--trainer: '{other}' is not a trainer (gbdt, linear, logistic)"),
    };
    std::fs::write(&a.out, &bytes).with_context(|| format!("writing {}", a.out.display()))?;
    eprintln!(
        "wrote {} ({}) in {:.2} s",
        a.out.display(),
        crate::output::size(bytes.len() as u64),
        started.elapsed().as_secs_f64()
    );
    if let Some(path) = &a.predict {
        let out = a.predictions.clone().unwrap_or_else(|| path.with_extension("predictions.txt"));
        predict(kind, &bytes, &features, &categories, path, &out)?;
        eprintln!(
            "predictions in {} ({:.2} s in all)",
            out.display(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

fn predict(
    format: plinth_api::registry::ModelFormat,
    model: &[u8],
    features: &[String],
    categories: &[Option<Vec<String>>],
    path: &Path,
    out: &Path,
) -> Result<()> {
    let model = crate::backend().load(format, model).map_err(anyhow::Error::msg)?;
    let mut w = std::io::BufWriter::new(std::fs::File::create(out)?);
    let nf = features.len();
    let lookup: Vec<Option<std::collections::HashMap<&str, f32>>> = categories
        .iter()
        .map(|c| {
            c.as_ref().map(|names| {
                names.iter().enumerate().map(|(i, n)| (n.as_str(), i as f32)).collect()
            })
        })
        .collect();
    let mut failure: Option<String> = None;
    Tables
        .scan(path, format_of(path), Some(features), &mut |t| {
            let mut x = vec![f32::NAN; t.rows * nf];
            for (f, name) in features.iter().enumerate() {
                let col = &t.column(name).ok_or_else(|| format!("no column '{name}'"))?.data;
                for r in 0..t.rows {
                    x[r * nf + f] = match col {
                        ColumnData::Float64(v) => v[r].map_or(f32::NAN, |v| v as f32),
                        ColumnData::Int64(v) => v[r].map_or(f32::NAN, |v| v as f32),
                        ColumnData::Bool(v) => v[r].map_or(f32::NAN, |v| v as u8 as f32),
                        ColumnData::Str { dict, codes } => codes[r]
                            .and_then(|c| {
                                lookup[f].as_ref()?.get(dict[c as usize].as_str()).copied()
                            })
                            .unwrap_or(f32::NAN),
                        ColumnData::Timestamp(_) => f32::NAN,
                    };
                }
            }
            // The batch's rows in a few parts, one per core.
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            let part = t.rows.div_ceil(threads).max(1024) * nf;
            let scored: Vec<Result<Vec<f32>, String>> = std::thread::scope(|s| {
                let model = &model;
                let handles: Vec<_> = x
                    .chunks(part.max(nf))
                    .map(|rows| {
                        s.spawn(move || {
                            let n = rows.len() / nf;
                            let input = plinth_core::serving::tensor::Tensor::f32(
                                vec![n, nf],
                                rows.to_vec(),
                            );
                            let outs =
                                model.run(&[("input", &input)]).map_err(|e| e.to_string())?;
                            let (_, scores) = outs
                                .iter()
                                .find(|(n, _)| {
                                    n == "probabilities" || n == "predictions" || n == "variable"
                                })
                                .ok_or("the model has no score output")?;
                            scores.data.to_f32().ok_or_else(|| "scores are not numbers".to_string())
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("a prediction thread panicked"))
                    .collect()
            });
            let mut v = Vec::with_capacity(t.rows * 2);
            for part in scored {
                v.extend(part?);
            }
            let width = v.len() / t.rows.max(1);
            let mut line = String::new();
            for row in v.chunks(width.max(1)) {
                line.clear();
                if width == 2 {
                    line.push_str(&row[1].to_string());
                } else {
                    line.push_str(&row.iter().map(f32::to_string).collect::<Vec<_>>().join(","));
                }
                line.push('\n');
                if let Err(e) = w.write_all(line.as_bytes()) {
                    failure = Some(e.to_string());
                    return Err(e.to_string());
                }
            }
            Ok(())
        })
        .map_err(|e| {
            anyhow::anyhow!("--predict {}: {}", path.display(), failure.clone().unwrap_or(e))
        })?;
    w.flush()?;
    Ok(())
}
