//! Executing one run: data → trainer (or command) → registered version with lineage and card →
//! held-out evaluation → (triggered runs) promotion under the team's policy.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use plinth_api::Code;
use plinth_api::data::{DatasetRef, QueryRequest, UploadDataset};
use plinth_api::governance::{EvaluationRequest, PromotionRequest};
use plinth_api::registry::{
    CreateVersion, DataType, Lineage, LineageSource, ModelCard, ModelFormat, TensorSpec,
};
use plinth_api::training::{RecipeData, RecipeSpec, RunResult, RunStep};
use serde_json::{Value, json};

use super::{RunArgs, TrainFailure, TrainJob, Trained, holdout_fraction};
use crate::Plinth;
use crate::data::{ColumnData, FileFormat, Table, TableReader};
use crate::error::{Error, Result};
use crate::store::{Sql, col};
use crate::tasks::TaskRun;

/// A row's fixed place in the holdout: from its number alone (SplitMix64), so a re-read
/// splits the same way.
fn held_out(row: u64, fraction: f64) -> bool {
    let mut z = row.wrapping_add(0x9E37_79B9_7F4A_7C15).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    ((z >> 11) as f64 / (1u64 << 53) as f64) < fraction
}

/// The dataset file as a trainer reads it: training rows only; the held-out ones are kept
/// aside on the first read (at most [`HOLDOUT_ROWS`]).
struct FileRows {
    reader: Arc<dyn TableReader>,
    path: std::path::PathBuf,
    format: FileFormat,
    columns: Vec<String>,
    fraction: f64,
    holdout: Vec<Table>,
    holdout_rows: usize,
    reads: usize,
    train_rows: u64,
}

const HOLDOUT_ROWS: usize = 1_000_000;

impl super::Rows for FileRows {
    fn scan(
        &mut self,
        each: &mut dyn FnMut(&Table) -> std::result::Result<(), String>,
    ) -> std::result::Result<(), String> {
        let first = self.reads == 0;
        self.reads += 1;
        let mut row: u64 = 0;
        let (fraction, holdout, holdout_rows, train_rows) =
            (self.fraction, &mut self.holdout, &mut self.holdout_rows, &mut self.train_rows);
        self.reader.scan(&self.path, self.format, Some(&self.columns), &mut |t| {
            let keep: Vec<bool> =
                (0..t.rows as u64).map(|r| !held_out(row + r, fraction)).collect();
            row += t.rows as u64;
            let train = t.filter(&keep);
            if first {
                *train_rows += train.rows as u64;
                if *holdout_rows < HOLDOUT_ROWS && train.rows < t.rows {
                    let aside = t.filter(&keep.iter().map(|k| !k).collect::<Vec<_>>());
                    *holdout_rows += aside.rows;
                    holdout.push(aside);
                }
            }
            each(&train)
        })
    }
}

/// A step as the run's log shows it.
fn step_line(s: &RunStep) -> String {
    let v = |x: Option<f64>| x.map(|x| format!("{x:.6}")).unwrap_or_else(|| "-".into());
    format!("[{}/{}] {} train {} valid {}", s.iteration, s.of, s.metric, v(s.train), v(s.valid))
}

/// CSV of tables (header from the first), string features written as the model's category
/// codes so that the evaluation feeds the model what serving does.
fn holdout_csv(tables: &[Table], categories: &BTreeMap<String, Vec<String>>) -> Vec<u8> {
    let mut out = String::new();
    let Some(first) = tables.first() else { return Vec::new() };
    let quote = |s: &str| {
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    out.push_str(&first.columns.iter().map(|c| quote(&c.name)).collect::<Vec<_>>().join(","));
    out.push('\n');
    for t in tables {
        for r in 0..t.rows {
            let cells: Vec<String> = t
                .columns
                .iter()
                .map(|c| match &c.data {
                    ColumnData::Float64(v) => v[r].map(|x| format!("{x:e}")).unwrap_or_default(),
                    ColumnData::Int64(v) | ColumnData::Timestamp(v) => {
                        v[r].map(|x| x.to_string()).unwrap_or_default()
                    }
                    ColumnData::Bool(v) => v[r].map(|x| x.to_string()).unwrap_or_default(),
                    ColumnData::Str { dict, codes } => match codes[r] {
                        None => String::new(),
                        Some(code) => {
                            let s = &dict[code as usize];
                            match categories.get(&c.name) {
                                Some(names) => names
                                    .iter()
                                    .position(|n| n == s)
                                    .map(|p| p.to_string())
                                    .unwrap_or_default(),
                                None => quote(s),
                            }
                        }
                    },
                })
                .collect();
            out.push_str(&cells.join(","));
            out.push('\n');
        }
    }
    out.into_bytes()
}

impl Plinth {
    async fn stage(&self, bytes: &[u8]) -> Result<crate::store::artifacts::StagedFile> {
        let mut reader: &[u8] = bytes;
        self.staging.receive(&mut reader, u64::MAX).await
    }

    /// Runs one training run (the `training.run` task).
    pub(crate) async fn execute_run(&self, task: &TaskRun) -> Result<Value> {
        let args: RunArgs = serde_json::from_value(task.args.clone())?;
        // Runs a schedule fired have no row yet.
        let exists = self
            .db
            .fetch_optional(&Sql::with(
                "SELECT id FROM training_runs WHERE id = $1",
                [task.id.clone().into()],
            ))
            .await?;
        if exists.is_none() {
            let mut tx = self.db.begin().await?;
            Sql::with(
                "INSERT INTO training_runs (id, team_id, recipe_id, recipe_version, trigger, steps, created_at)
                 SELECT $1, team_id, id, latest_version, $2, '[]', $3 FROM recipes WHERE id = $4",
                [task.id.clone().into(), args.trigger.clone().into(), crate::util::now_micros().into(), args.recipe_id.clone().into()],
            )
            .execute(&mut tx)
            .await?;
            Sql::with(
                "UPDATE recipes SET last_triggered_at = $1 WHERE id = $2",
                [crate::util::now_micros().into(), args.recipe_id.clone().into()],
            )
            .execute(&mut tx)
            .await?;
            tx.commit().await?;
        }
        let row = self
            .db
            .fetch_optional(&Sql::with(
                "SELECT r.name, r.recipe_version, r.recipe_version_spec, r.author, t.name AS team_name, k.created_by FROM
                   (SELECT c.name, c.team_id, x.recipe_version, v.spec AS recipe_version_spec, v.created_by AS author FROM training_runs x
                      JOIN recipes c ON c.id = x.recipe_id
                      JOIN recipe_versions v ON v.recipe_id = x.recipe_id AND v.version = x.recipe_version
                    WHERE x.id = $1) r
                 JOIN teams t ON t.id = r.team_id JOIN tasks k ON k.id = $1",
                [task.id.clone().into()],
            ))
            .await?
            .ok_or_else(|| Error::internal("the run's recipe vanished"))?;
        let recipe_name: String = col(&row, "name")?;
        let recipe_version: i64 = col(&row, "recipe_version")?;
        let team: String = col(&row, "team_name")?;
        let spec: RecipeSpec = serde_json::from_str(&col::<String>(&row, "recipe_version_spec")?)?;
        // Who asked (a person, or the trigger's recipe author); a schedule's runs act for the
        // author of the recipe version.
        let by: String = col(&row, "created_by")?;
        let by = if by == "system" { col::<String>(&row, "author")? } else { by };
        let who = self.acting_principal(&by).await?;
        if exists.is_none() {
            // A schedule's run: audited when it starts, as the recipe author's.
            let mut tx = self.db.begin().await?;
            let team_id = task.team_id.clone().unwrap_or_default();
            let t = crate::audit::Target {
                team_id: Some(&team_id),
                object_type: "training_run",
                object_id: &task.id,
                object_name: &task.id,
            };
            crate::audit::record(
                &mut tx,
                &who,
                "training_run.start",
                t,
                serde_json::json!({"recipe": args.recipe_id, "trigger": args.trigger}),
            )
            .await?;
            tx.commit().await?;
        }
        self.task_log(&task.id, "info", &format!("recipe {recipe_name}, trigger {}", args.trigger))
            .await?;

        // The data, as a dataset version.
        let team_ref = self.team_ref(&who, &team).await?;
        // A training set or a query's result is saved as a dataset version first.
        let data_ref = match &spec.data {
            RecipeData::Dataset(d) => d.clone(),
            RecipeData::TrainingSet(src) => {
                let v = self
                    .create_training_set(
                        &who,
                        &team,
                        plinth_api::features::CreateTrainingSet {
                            name: format!("{recipe_name}-training-set"),
                            entities: src.entities.clone(),
                            entity_timestamp: src.entity_timestamp.clone(),
                            feature_service: src.feature_service.clone(),
                            features: src.features.clone(),
                        },
                    )
                    .await
                    .map_err(|e| e.with_field("data.training_set"))?;
                DatasetRef { name: v.dataset, version: Some(v.version) }
            }
            RecipeData::Sql(q) => {
                let saved = self
                    .query(
                        &who,
                        &team,
                        QueryRequest {
                            sql: q.clone(),
                            format: None,
                            max_rows: Some(10_000_000),
                            timeout_ms: Some(600_000),
                            save_as: Some(format!("{recipe_name}-data")),
                        },
                    )
                    .await
                    .map_err(|e| e.with_field("data.sql"))?;
                let crate::data::query::QueryAnswer::Saved(v) = saved else {
                    return Err(Error::internal("a saved query answered rows"));
                };
                DatasetRef { name: v.dataset, version: Some(v.version) }
            }
        };
        let resolved = self.resolve_dataset(&team_ref, &data_ref, "data.dataset").await?;
        let (dataset_id, dataset) = (resolved.id, resolved.info);
        let dataset_name = format!("{}@{}", dataset.dataset, dataset.version);
        self.task_log(
            &task.id,
            "info",
            &format!("data {dataset_name} ({} rows, sha256 {})", dataset.rows, dataset.sha256),
        )
        .await?;
        let columns: Vec<String> = dataset.columns.iter().map(|c| c.name.clone()).collect();
        if !columns.contains(&spec.label) {
            return Err(Error::invalid(
                "label",
                format!("{dataset_name} has no column '{}'", spec.label),
            ));
        }
        let features: Vec<String> = if spec.features.is_empty() {
            columns
                .iter()
                .filter(|c| {
                    // Sensitive attributes are read for the fairness check, not learned from,
                    // unless listed as features.
                    **c != spec.label && !spec.exclude.contains(c) && !spec.sensitive.contains(c)
                })
                // Timestamps (a training set's event time) are not features.
                .filter(|c| {
                    dataset
                        .columns
                        .iter()
                        .any(|p| p.name == **c && p.kind != plinth_api::data::ColumnType::Timestamp)
                })
                .cloned()
                .collect()
        } else {
            for f in &spec.features {
                if !columns.contains(f) {
                    return Err(Error::invalid(
                        "features",
                        format!("{dataset_name} has no column '{f}'"),
                    ));
                }
            }
            spec.features.clone()
        };
        let model =
            self.model_ref(&who, &team, &spec.model).await.map_err(|e| e.with_field("model"))?;
        let mut params = spec.params.clone();
        params.extend(args.params.clone());
        let file = self.dataset_file(&dataset_id).await?;
        let fraction = holdout_fraction(&spec);
        let mut read: Vec<String> = features.clone();
        read.push(spec.label.clone());
        for s in &spec.sensitive {
            if !read.contains(s) && columns.contains(s) {
                read.push(s.clone());
            }
        }
        let mut rows = FileRows {
            reader: self.tables.clone(),
            path: file.path.clone(),
            format: file.format,
            columns: read,
            fraction,
            holdout: Vec::new(),
            holdout_rows: 0,
            reads: 0,
            train_rows: 0,
        };

        // Train off the async threads; steps come back over a channel, cancellation goes in.
        let job = TrainJob {
            trainer: spec.trainer.clone(),
            task: model.task,
            features: features.clone(),
            label: spec.label.clone(),
            params: params.clone(),
        };
        let cancel = Arc::new(AtomicBool::new(false));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<RunStep>();
        let trainer = self.trainer.clone();
        let reader = self.tables.clone();
        let stop = cancel.clone();
        let command = spec.command.clone();
        let work_dir = self.staging.dir().join(format!("run-{}", task.id));
        let threads = run_threads(&params);
        let trained_since = std::time::Instant::now();
        let mut handle = tokio::task::spawn_blocking(move || {
            let mut progress = |s: &RunStep| {
                let _ = tx.send(s.clone());
                if stop.load(Ordering::Relaxed) {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            };
            let out = match command {
                Some(c) => super::command::run_command(
                    &c,
                    &job,
                    &mut rows,
                    reader.as_ref(),
                    &work_dir,
                    &stop,
                    &mut |line| {
                        let _ = tx.send(RunStep {
                            iteration: 0,
                            of: 0,
                            metric: line.to_string(),
                            train: None,
                            valid: None,
                        });
                    },
                ),
                None => trainer.train(&job, &mut rows, &mut progress),
            };
            (out, rows)
        });
        let mut steps: Vec<RunStep> = Vec::new();
        let mut last_saved = std::time::Instant::now();
        let (outcome, rows) = loop {
            tokio::select! {
                done = &mut handle => break done.map_err(Error::internal)?,
                step = rx.recv() => {
                    let Some(step) = step else { continue };
                    if step.of == 0 {
                        // A line of a command's output.
                        self.task_log(&task.id, "info", &step.metric).await?;
                        continue;
                    }
                    self.task_log(&task.id, "info", &step_line(&step)).await?;
                    let progress = 0.05 + 0.8 * f64::from(step.iteration) / f64::from(step.of.max(1));
                    steps.push(step.clone());
                    if last_saved.elapsed() >= std::time::Duration::from_millis(500) || step.iteration == step.of {
                        last_saved = std::time::Instant::now();
                        self.save_steps(&task.id, &steps).await?;
                        self.task_progress(&task.id, progress, Some(&format!("iteration {} of {}", step.iteration, step.of))).await?;
                    }
                }
                _ = task.until_cancelled(), if !cancel.load(Ordering::Relaxed) => {
                    cancel.store(true, Ordering::Relaxed);
                }
            }
        };
        // What the trainer sent after the last turn of the loop.
        while let Ok(step) = rx.try_recv() {
            if step.of > 0 {
                self.task_log(&task.id, "info", &step_line(&step)).await?;
                steps.push(step);
            } else {
                self.task_log(&task.id, "info", &step.metric).await?;
            }
        }
        self.save_steps(&task.id, &steps).await?;
        // Metered whatever the outcome: the vCPUs the training step held, for as long.
        let vcpu_us = trained_since.elapsed().as_micros() as u64 * threads;
        self.meter_training(&model.team.id, &model.name, &recipe_name, vcpu_us).await?;
        let trained: Trained = match outcome {
            Ok(t) => t,
            Err(TrainFailure::Cancelled) => return Err(Error::new(Code::Conflict, "cancelled")),
            Err(TrainFailure::Invalid(m)) => {
                self.task_log(&task.id, "error", &m).await?;
                return Err(Error::new(Code::InvalidData, m));
            }
        };
        task.check()?;

        // The held-out rows, as a dataset version the evaluation reads.
        let categories: BTreeMap<String, Vec<String>> = features
            .iter()
            .zip(&trained.categories)
            .filter_map(|(f, c)| c.clone().map(|c| (f.clone(), c)))
            .collect();
        let holdout = if rows.holdout_rows > 0 {
            let bytes = holdout_csv(&rows.holdout, &categories);
            let staged = self.stage(&bytes).await?;
            let v = self
                .upload_dataset(
                    &who,
                    &team,
                    &format!("{recipe_name}-holdout"),
                    UploadDataset {
                        format: Some("csv".into()),
                        source: Some(format!(
                            "held-out {:.0} % of {dataset_name}, training run {}",
                            fraction * 100.0,
                            task.id
                        )),
                        ..Default::default()
                    },
                    staged,
                )
                .await?;
            Some(v)
        } else {
            None
        };

        // Register, with the lineage and card filled by the platform.
        let mut lineage_params: BTreeMap<String, String> = trained.params.clone();
        lineage_params.insert("trainer".into(), spec.trainer.clone());
        lineage_params.insert("recipe".into(), format!("{recipe_name}@{recipe_version}"));
        lineage_params.insert("label".into(), spec.label.clone());
        lineage_params.insert("features".into(), features.join(","));
        lineage_params.insert("dataset_sha256".into(), dataset.sha256.clone());
        if !categories.is_empty() {
            lineage_params.insert("categories".into(), serde_json::to_string(&categories)?);
        }
        let mut lineage_metrics = BTreeMap::new();
        if let Some(last) = steps.iter().rev().find(|s| s.of > 0) {
            if let Some(v) = last.train {
                lineage_metrics.insert(format!("train_{}", last.metric), v);
            }
            if let Some(v) = last.valid {
                lineage_metrics.insert(format!("valid_{}", last.metric), v);
            }
        }
        let card = ModelCard {
            training_data: Some(format!(
                "{dataset_name} (sha256 {}), {} training rows{}; label '{}'; features: {}; {}{}",
                dataset.sha256,
                rows.train_rows,
                if fraction > 0.0 {
                    format!(" ({:.0} % held out for evaluation)", fraction * 100.0)
                } else {
                    String::new()
                },
                spec.label,
                features.join(", "),
                trained.summary,
                if categories.is_empty() {
                    String::new()
                } else {
                    "; string features are served as their category's index in the lineage's `categories`".into()
                }
            )),
            evaluation_data: holdout.as_ref().map(|h| {
                format!(
                    "{}@{}: the {} rows of {dataset_name} held out from training",
                    h.dataset, h.version, h.rows
                )
            }),
            ..spec.card.clone().unwrap_or_default()
        };
        let signature = match trained.format {
            ModelFormat::Onnx => {
                let inspected = plinth_formats::inspect(&trained.bytes)
                    .map_err(|e| Error::new(Code::InvalidModel, e.to_string()))?;
                inspected.signature.map(|mut s| {
                    s.inputs = vec![TensorSpec {
                        name: "input".into(),
                        datatype: DataType::Fp32,
                        shape: vec![-1, features.len() as i64],
                    }];
                    s.feature_names = Some(features.clone());
                    s
                })
            }
            _ => None,
        };
        let staged = self.stage(&trained.bytes).await?;
        let filename = match trained.format {
            ModelFormat::Lightgbm => "model.txt",
            ModelFormat::Onnx => "model.onnx",
            ModelFormat::Xgboost => "model.json",
        };
        let version = self
            .create_version(
                &who,
                &team,
                &spec.model,
                CreateVersion {
                    description: Some(format!(
                        "trained by run {} of recipe {recipe_name} ({})",
                        task.id, args.trigger
                    )),
                    format: None,
                    signature,
                    card: Some(card),
                    lineage: Some(Lineage {
                        source: LineageSource::TrainingJob,
                        dataset_version: Some(dataset_name.clone()),
                        training_job: Some(task.id.clone()),
                        code_ref: Some(format!("recipe:{team}/{recipe_name}")),
                        parameters: lineage_params,
                        metrics: lineage_metrics,
                        tags: BTreeMap::from([("trigger".to_string(), args.trigger.clone())]),
                    }),
                    feature_service: None,
                },
                Some(filename.into()),
                staged,
            )
            .await
            .map_err(|e| {
                Error::new(
                    e.code,
                    format!("the trained model was refused at registration: {}", e.message),
                )
            })?;
        self.task_log(&task.id, "info", &format!("registered {}@{}", spec.model, version.version))
            .await?;
        let mut result = RunResult {
            version: version.version,
            dataset: dataset_name,
            dataset_sha256: dataset.sha256.clone(),
            train_rows: rows.train_rows,
            holdout_rows: rows.holdout_rows as u64,
            ..RunResult::default()
        };
        self.set_last_dataset(&args.recipe_id, &dataset_id).await?;

        // The held-out evaluation, then (triggered runs) the promotion the policy decides.
        if let Some(h) = &holdout {
            let eval = self
                .evaluate(
                    &who,
                    &team,
                    &spec.model,
                    EvaluationRequest {
                        version: version.version,
                        dataset: DatasetRef { name: h.dataset.clone(), version: Some(h.version) },
                        label: spec.label.clone(),
                        sensitive: spec.sensitive.clone(),
                        slices: vec![],
                        compare_environment: None,
                    },
                )
                .await?;
            self.task_progress(&task.id, 0.9, Some("evaluating on the held-out rows")).await?;
            let finished = self.wait_for_evaluation(&eval.id, task).await?;
            result.evaluation = Some(eval.id.clone());
            if let Some(r) = &finished.result {
                result.metrics = r.metrics.clone();
            }
            if let Some(e) = &finished.error {
                self.task_log(&task.id, "warn", &format!("the held-out evaluation failed: {e}"))
                    .await?;
            }
        }
        if args.trigger != "manual"
            && let Some(r) = &spec.retrain
            && r.promote
        {
            let p = self
                .request_promotion(
                    &who,
                    &team,
                    &spec.model,
                    PromotionRequest {
                        version: version.version,
                        environment: r.environment.clone(),
                        canary_weight: r.canary_weight,
                        evaluation: result.evaluation.clone(),
                        note: Some(format!("retrained by run {} ({})", task.id, args.trigger)),
                    },
                )
                .await;
            match p {
                Ok(p) => {
                    let status = serde_json::to_value(p.status)?.as_str().unwrap_or("").to_string();
                    self.task_log(
                        &task.id,
                        "info",
                        &format!("promotion {} to {}: {status}", p.id, r.environment),
                    )
                    .await?;
                    result.promotion = Some(p.id);
                    result.promotion_status = Some(status);
                }
                Err(e) => {
                    self.task_log(
                        &task.id,
                        "warn",
                        &format!("promotion to {} refused: {}", r.environment, e.message),
                    )
                    .await?;
                    result.promotion_status = Some(format!("refused: {}", e.message));
                }
            }
        }
        let mut tx = self.db.begin().await?;
        let payload = json!({"run": task.id, "recipe": recipe_name, "version": version.version, "trigger": args.trigger, "promotion": result.promotion_status});
        // Each attempt that gets here registered its own version, and announces it.
        self.emit_event(&mut tx, task.team_id.as_deref(), "training.finished", &payload).await?;
        tx.commit().await?;
        Ok(serde_json::to_value(result)?)
    }

    async fn set_last_dataset(&self, recipe_id: &str, dataset_version_id: &str) -> Result<()> {
        let mut tx = self.db.begin().await?;
        Sql::with(
            "UPDATE recipes SET last_dataset_version_id = $1 WHERE id = $2",
            [dataset_version_id.into(), recipe_id.into()],
        )
        .execute(&mut tx)
        .await?;
        tx.commit().await
    }

    async fn save_steps(&self, run: &str, steps: &[RunStep]) -> Result<()> {
        let mut tx = self.db.begin().await?;
        Sql::with(
            "UPDATE training_runs SET steps = $1 WHERE id = $2",
            [serde_json::to_string(steps)?.into(), run.into()],
        )
        .execute(&mut tx)
        .await?;
        tx.commit().await
    }

    /// Waits for an evaluation to finish (or the run to be cancelled).
    async fn wait_for_evaluation(
        &self,
        id: &str,
        task: &TaskRun,
    ) -> Result<plinth_api::governance::Evaluation> {
        loop {
            let e = self.load_evaluation(id).await?;
            if !matches!(
                e.status,
                plinth_api::governance::JobStatus::Queued
                    | plinth_api::governance::JobStatus::Running
            ) {
                return Ok(e);
            }
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
                _ = task.until_cancelled() => return Err(Error::new(Code::Conflict, "cancelled")),
            }
        }
    }
}

/// The threads a training step is given: the `num_threads` parameter (or its LightGBM
/// aliases), else every CPU of the machine.
fn run_threads(params: &BTreeMap<String, Value>) -> u64 {
    let given = ["num_threads", "num_thread", "nthread", "nthreads", "n_jobs"]
        .iter()
        .find_map(|k| params.get(*k))
        .and_then(|v| v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok())))
        .filter(|n| *n > 0);
    given.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u64))
}
