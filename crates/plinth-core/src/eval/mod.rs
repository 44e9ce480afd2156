//! Evaluation jobs: a model version × a dataset version → metrics, fairness per sensitive
//! attribute, per-slice metrics, and a comparison with the version serving the target
//! environment. Requests are checked against the dataset's stored profile before the job is
//! queued, so bad input is refused at once and never leaves a job behind.

pub mod metrics;
pub mod report;

use std::collections::BTreeMap;

use plinth_api::Code;
use plinth_api::data::ColumnType;
use plinth_api::governance::{
    Baseline, Evaluation, EvaluationRequest, EvaluationResult, SliceMetrics,
};
use plinth_api::identity::TeamRole;
use plinth_api::registry::{Signature, Task};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::any::AnyRow;

use crate::Plinth;
use crate::audit::{self, Target};
use crate::auth::Principal;
use crate::data::{ColumnData, Table};
use crate::error::{Error, Result};
use crate::serving::tensor::{Data, Tensor};
use crate::store::{Sql, col};
use crate::util::micros_to_time;

/// What the job needs, stored with it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Params {
    team_id: String,
    model_id: String,
    request: EvaluationRequest,
    dataset_version_id: String,
}

/// The task kind of an evaluation.
pub(crate) const EVALUATION: &str = "evaluation";

/// Evaluations run as tasks ([`crate::tasks`]); a finished one is announced as an event.
struct EvaluationTask;

impl crate::tasks::TaskKind for EvaluationTask {
    fn name(&self) -> &'static str {
        EVALUATION
    }

    fn run<'a>(
        &'a self,
        core: &'a Plinth,
        task: &'a crate::tasks::TaskRun,
    ) -> futures_util::future::BoxFuture<'a, Result<serde_json::Value>> {
        Box::pin(async move {
            let result = core.run_evaluation(&task.id, &task.args).await?;
            let mut tx = core.db.begin().await?;
            let payload = json!({"evaluation": task.id, "metrics": result.get("metrics")});
            // Once per evaluation, however many attempts reach this point.
            let key = format!("evaluation_finished_{}", task.id);
            core.emit_event_once(
                &mut tx,
                task.team_id.as_deref(),
                "evaluation.finished",
                &payload,
                &key,
            )
            .await?;
            tx.commit().await?;
            Ok(result)
        })
    }
}

/// Registers the evaluation task kind.
pub(crate) fn register(r: &mut crate::tasks::Registry) {
    r.register(EvaluationTask);
}

const EVALUATION_SELECT: &str = "SELECT j.*, e.version, t.name AS team_name, m.name AS model_name, d.name AS dataset_name,
        dv.version AS dataset_version, COALESCE(p.name, j.created_by) AS created_by_name
    FROM evaluations e JOIN tasks j ON j.id = e.id JOIN teams t ON t.id = e.team_id JOIN models m ON m.id = e.model_id
    JOIN dataset_versions dv ON dv.id = e.dataset_version_id JOIN datasets d ON d.id = dv.dataset_id
    LEFT JOIN principals p ON p.id = j.created_by";

fn evaluation_from_row(row: &AnyRow) -> Result<Evaluation> {
    let params: Params = serde_json::from_str(&col::<String>(row, "args")?)?;
    let state: String = col(row, "state")?;
    let result: Option<String> = col(row, "result")?;
    Ok(Evaluation {
        id: col(row, "id")?,
        team: col(row, "team_name")?,
        model: col(row, "model_name")?,
        version: col::<i64>(row, "version")? as u32,
        dataset: format!(
            "{}@{}",
            col::<String>(row, "dataset_name")?,
            col::<i64>(row, "dataset_version")?
        ),
        label: params.request.label,
        sensitive: params.request.sensitive,
        slices: params.request.slices,
        status: plinth_api::tasks::TaskState::parse(&state)
            .ok_or_else(|| Error::internal(format!("bad task state {state}")))?
            .job_status(),
        progress: col(row, "progress")?,
        error: col(row, "error")?,
        result: result.map(|r| serde_json::from_str(&r)).transpose()?,
        created_at: micros_to_time(col(row, "created_at")?),
        created_by: col(row, "created_by_name")?,
        finished_at: col::<Option<i64>>(row, "finished_at")?.map(micros_to_time),
    })
}

fn check_columns(
    req: &EvaluationRequest,
    task: Task,
    profile: &[plinth_api::data::ColumnProfile],
    rows: u64,
    features: &[String],
) -> Result<()> {
    let find = |name: &str| profile.iter().find(|c| c.name == name);
    if rows == 0 {
        return Err(Error::new(Code::InvalidData, "the dataset has no rows: nothing to evaluate")
            .with_field("dataset"));
    }
    let label = find(&req.label).ok_or_else(|| {
        Error::invalid("label", format!("the dataset has no column '{}'", req.label))
    })?;
    let label_ok = match task {
        Task::Regression => matches!(label.kind, ColumnType::Int64 | ColumnType::Float64),
        _ => matches!(label.kind, ColumnType::Int64 | ColumnType::Bool),
    };
    if !label_ok {
        let want = match task {
            Task::Regression => "a number",
            _ => "a class index (integer 0..C-1) or a boolean",
        };
        return Err(Error::invalid(
            "label",
            format!(
                "column '{}' holds {} values; a {} label must be {want}",
                req.label,
                label.kind.as_str(),
                task.as_str()
            ),
        ));
    }
    if label.nulls > 0 {
        return Err(Error::invalid(
            "label",
            format!("column '{}' has {} empty values", req.label, label.nulls),
        ));
    }
    for (i, s) in req.sensitive.iter().enumerate() {
        let c = find(s).ok_or_else(|| {
            Error::invalid(format!("sensitive[{i}]"), format!("the dataset has no column '{s}'"))
        })?;
        if task != Task::BinaryClassification {
            return Err(Error::invalid(
                format!("sensitive[{i}]"),
                "fairness is measured for binary classifiers",
            ));
        }
        let groups = c.distinct + u64::from(c.nulls > 0);
        if groups < 2 {
            return Err(Error::invalid(
                format!("sensitive[{i}]"),
                format!("column '{s}' has a single group: fairness compares at least two"),
            ));
        }
    }
    for (i, s) in req.slices.iter().enumerate() {
        if find(s).is_none() {
            return Err(Error::invalid(
                format!("slices[{i}]"),
                format!("the dataset has no column '{s}'"),
            ));
        }
    }
    for f in features {
        match find(f) {
            None => {
                return Err(Error::invalid(
                    "dataset",
                    format!("the model takes feature '{f}', which the dataset does not have"),
                ));
            }
            Some(c) if matches!(c.kind, ColumnType::String) => {
                return Err(Error::invalid(
                    "dataset",
                    format!("feature '{f}' holds strings; the model takes numbers"),
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// A model's answers over a table (evaluation) or over served requests (live performance).
#[derive(Default)]
pub(crate) struct Scored {
    /// Classification: predicted class index per row; regression: empty.
    pub(crate) pred_class: Vec<u32>,
    /// Classification: `n × k` probabilities when the model gives them.
    pub(crate) proba: Option<Vec<f64>>,
    /// Regression: predicted values.
    pub(crate) values: Vec<f64>,
    pub(crate) k: usize,
}

impl Scored {
    /// Adds a model's answer for `n` rows: the values of a regressor; the labels and class
    /// probabilities of a classifier (the labels worked out from the probabilities when it
    /// gives none).
    pub(crate) fn read(
        &mut self,
        outputs: &[(String, Tensor)],
        n: usize,
        task: Task,
    ) -> Result<()> {
        match task {
            Task::Regression => {
                let (_, t) = outputs
                    .iter()
                    .find(|(_, t)| t.shape.first() == Some(&n))
                    .ok_or_else(|| Error::internal("the model gave no per-row output"))?;
                self.values.extend(
                    t.data.as_f64_vec().ok_or_else(|| Error::internal("non-numeric output"))?,
                );
            }
            _ => {
                let probs = outputs.iter().find(|(name, t)| {
                    name.contains("prob") && t.shape.len() == 2 && t.shape[0] == n
                });
                let label = outputs
                    .iter()
                    .find(|(name, t)| name.contains("label") && t.shape.first() == Some(&n));
                if let Some((_, p)) = probs {
                    let k = p.shape[1];
                    self.k = k;
                    let v = p
                        .data
                        .as_f64_vec()
                        .ok_or_else(|| Error::internal("non-numeric probabilities"))?;
                    if label.is_none() {
                        self.pred_class.extend(v.chunks(k).map(|r| {
                            let mut best = 0;
                            for (c, &x) in r.iter().enumerate() {
                                if x > r[best] {
                                    best = c;
                                }
                            }
                            best as u32
                        }));
                    }
                    self.proba.get_or_insert_with(Vec::new).extend_from_slice(&v);
                }
                if let Some((_, l)) = label {
                    let v = l.data.as_f64_vec().ok_or_else(|| {
                        Error::invalid(
                            "version",
                            "the model's labels are strings: evaluation needs class indices",
                        )
                    })?;
                    self.pred_class.extend(v.iter().map(|&c| c.max(0.0) as u32));
                }
                if probs.is_none() && label.is_none() {
                    return Err(Error::internal("the model gave neither labels nor probabilities"));
                }
            }
        }
        Ok(())
    }

    /// Once every answer is read: a classifier without probabilities has as many classes as
    /// its largest label says (at least 2).
    pub(crate) fn finish(mut self, task: Task) -> Scored {
        if task != Task::Regression && self.k == 0 {
            self.k = self.pred_class.iter().max().map_or(2, |&m| (m as usize + 1).max(2));
            self.proba = None;
        }
        self
    }
}

fn feature_names(sig: &Signature) -> Result<Vec<String>> {
    sig.feature_names.clone().ok_or_else(|| {
        Error::invalid(
            "version",
            "the version's signature has no feature names: set them at registration to evaluate it on a table",
        )
    })
}

/// Runs the model over the table in chunks.
fn score(
    model: &dyn crate::serving::runtime::Model,
    sig: &Signature,
    table: &Table,
    task: Task,
) -> Result<Scored> {
    let features = feature_names(sig)?;
    let input = sig.inputs.first().ok_or_else(|| Error::invalid("version", "no inputs"))?;
    let cols: Vec<&ColumnData> = features
        .iter()
        .map(|f| table.column(f).map(|c| &c.data))
        .collect::<Option<_>>()
        .ok_or_else(|| Error::invalid("dataset", "a feature column is missing"))?;
    let width = cols.len();
    let mut out = Scored::default();
    const CHUNK: usize = 8192;
    let mut start = 0;
    while start < table.rows {
        let end = (start + CHUNK).min(table.rows);
        let n = end - start;
        let mut x = vec![0f32; n * width];
        for (j, c) in cols.iter().enumerate() {
            for i in 0..n {
                x[i * width + j] = c.number(start + i).map_or(f32::NAN, |v| v as f32);
            }
        }
        let t = Tensor { shape: vec![n, width], data: Data::F32(x) };
        let outputs = model.run(&[(input.name.as_str(), &t)]).map_err(|e| {
            Error::internal(format!("the model failed on rows {start}..{end}: {e}"))
        })?;
        out.read(&outputs, n, task)?;
        start = end;
    }
    Ok(out.finish(task))
}

fn class_labels(table: &Table, label: &str, k: usize) -> Result<Vec<u32>> {
    let c = table.column(label).ok_or_else(|| Error::invalid("label", "missing"))?;
    let mut out = Vec::with_capacity(table.rows);
    for i in 0..table.rows {
        let v = c.data.number(i).ok_or_else(|| {
            Error::invalid("label", format!("row {i}: the label is empty or not a number"))
        })?;
        if v < 0.0 || v.fract() != 0.0 || v as usize >= k {
            return Err(Error::new(
                Code::InvalidData,
                format!("row {i}: label {v} is not a class index of this {k}-class model"),
            )
            .with_field("label"));
        }
        out.push(v as u32);
    }
    Ok(out)
}

/// Metrics of the rows in `idx` (all rows when `None`).
pub(crate) fn headline(
    task: Task,
    truth_cls: &[u32],
    truth_val: &[f64],
    s: &Scored,
    idx: Option<&[usize]>,
) -> (BTreeMap<String, f64>, Option<Vec<Vec<u64>>>) {
    let pick_u = |v: &[u32]| -> Vec<u32> {
        match idx {
            Some(ix) => ix.iter().map(|&i| v[i]).collect(),
            None => v.to_vec(),
        }
    };
    let pick_f = |v: &[f64], w: usize| -> Vec<f64> {
        match idx {
            Some(ix) => ix.iter().flat_map(|&i| v[i * w..(i + 1) * w].iter().copied()).collect(),
            None => v.to_vec(),
        }
    };
    match task {
        Task::Regression => {
            (metrics::regression(&pick_f(truth_val, 1), &pick_f(&s.values, 1)), None)
        }
        _ => {
            let proba = s.proba.as_ref().map(|p| pick_f(p, s.k));
            let (m, cm) = metrics::classification(
                &pick_u(truth_cls),
                &pick_u(&s.pred_class),
                proba.as_deref(),
                s.k,
            );
            (m, Some(cm))
        }
    }
}

/// Larger is better for these; smaller for the rest (errors and losses).
pub fn higher_is_better(metric: &str) -> bool {
    !matches!(metric, "log_loss" | "brier_score" | "rmse" | "mae" | "mape")
}

impl Plinth {
    /// Queues an evaluation of `team/model@version` on a dataset version.
    pub async fn evaluate(
        &self,
        who: &Principal,
        team: &str,
        model: &str,
        req: EvaluationRequest,
    ) -> Result<Evaluation> {
        let m = self.model_ref(who, team, model).await?;
        who.require(&m.team, TeamRole::Developer, "evaluating a model")?;
        let version = crate::registry::version_from_row(&self.version_row(&m, req.version).await?)
            .map_err(|e| e.with_field("version"))?;
        let dataset = self.resolve_dataset(&m.team, &req.dataset, "dataset").await?;
        if let Some(env) = &req.compare_environment {
            self.environment_exists(env, "compare_environment").await?;
        }
        let features = feature_names(&version.signature)?;
        check_columns(&req, m.task, &dataset.info.columns, dataset.info.rows, &features)?;
        let params = Params {
            team_id: m.team.id.clone(),
            model_id: m.id.clone(),
            request: req.clone(),
            dataset_version_id: dataset.id.clone(),
        };
        let mut tx = self.db.begin().await?;
        let args = serde_json::to_value(&params)?;
        let id = self
            .enqueue(
                &mut tx,
                crate::tasks::NewTask::new(Some(&m.team.id), EVALUATION, &args, &who.id),
            )
            .await?;
        Sql::with(
            "INSERT INTO evaluations (id, team_id, model_id, version, dataset_version_id, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
            [id.clone().into(), m.team.id.clone().into(), m.id.clone().into(), i64::from(req.version).into(), dataset.id.clone().into(), crate::util::now_micros().into()],
        )
        .execute(&mut tx)
        .await?;
        let name = format!("{}@{}", m.name, req.version);
        let t = Target {
            team_id: Some(&m.team.id),
            object_type: "evaluation",
            object_id: &id,
            object_name: &name,
        };
        audit::record(
            &mut tx,
            who,
            "evaluation.create",
            t,
            json!({"dataset": format!("{}@{}", dataset.info.dataset, dataset.info.version), "label": req.label, "sensitive": req.sensitive, "slices": req.slices}),
        )
        .await?;
        tx.commit().await?;
        self.wake_tasks();
        self.load_evaluation(&id).await
    }

    pub(crate) async fn environment_exists(&self, env: &str, field: &str) -> Result<()> {
        let found = self
            .db
            .fetch_optional(&Sql::with(
                "SELECT name FROM environments WHERE name = $1",
                [env.into()],
            ))
            .await?;
        match found {
            Some(_) => Ok(()),
            None => Err(self.unknown_environment(env).await.with_field(field)),
        }
    }

    /// `not_found` for an environment, naming the ones that exist.
    pub(crate) async fn unknown_environment(&self, env: &str) -> Error {
        let names =
            match self.db.fetch_all(&Sql::new("SELECT name FROM environments ORDER BY name")).await
            {
                Ok(rows) => rows
                    .iter()
                    .filter_map(|r| crate::store::col::<String>(r, "name").ok())
                    .collect::<Vec<_>>(),
                Err(e) => return e,
            };
        let mut e = Error::not_found("environment", env);
        e.message = format!("{}: the environments are {}", e.message, names.join(", "));
        e
    }

    pub(crate) async fn load_evaluation(&self, id: &str) -> Result<Evaluation> {
        let row = self
            .db
            .fetch_optional(&Sql::with(
                &format!("{EVALUATION_SELECT} WHERE e.id = $1"),
                [id.into()],
            ))
            .await?
            .ok_or_else(|| Error::not_found("evaluation", id))?;
        evaluation_from_row(&row)
    }

    /// An evaluation, if the caller may see its team.
    pub async fn get_evaluation(&self, who: &Principal, id: &str) -> Result<Evaluation> {
        let row = self
            .db
            .fetch_optional(&Sql::with(
                "SELECT team_id FROM evaluations WHERE id = $1",
                [id.into()],
            ))
            .await?
            .ok_or_else(|| Error::not_found("evaluation", id))?;
        let team: String = col(&row, "team_id")?;
        if who.role_in(&team).is_none() {
            return Err(Error::not_found("evaluation", id));
        }
        self.load_evaluation(id).await
    }

    /// Evaluations of a model (newest first), optionally of one version.
    pub async fn list_evaluations(
        &self,
        who: &Principal,
        team: &str,
        model: &str,
        version: Option<u32>,
    ) -> Result<Vec<Evaluation>> {
        let m = self.model_ref(who, team, model).await?;
        let mut sql = Sql::new(&format!("{EVALUATION_SELECT} WHERE e.model_id = "));
        sql.bind(m.id.clone());
        if let Some(v) = version {
            sql.push(" AND e.version = ").bind(i64::from(v));
        }
        sql.push(" ORDER BY j.created_at DESC, j.id DESC LIMIT 200");
        self.db.fetch_all(&sql).await?.iter().map(evaluation_from_row).collect()
    }

    /// The job body: loads, predicts, measures, compares.
    pub(crate) async fn run_evaluation(
        &self,
        id: &str,
        params: &serde_json::Value,
    ) -> Result<serde_json::Value> {
        let p: Params = serde_json::from_value(params.clone())?;
        let req = &p.request;
        let model_row = self
            .db
            .fetch_optional(&Sql::with(
                "SELECT task FROM models WHERE id = $1",
                [p.model_id.clone().into()],
            ))
            .await?
            .ok_or_else(|| Error::internal("the model vanished"))?;
        let task = Task::parse(&col::<String>(&model_row, "task")?)
            .ok_or_else(|| Error::internal("bad task"))?;
        let dv = self
            .db
            .fetch_optional(&Sql::with(
                "SELECT format FROM dataset_versions WHERE id = $1",
                [p.dataset_version_id.clone().into()],
            ))
            .await?
            .ok_or_else(|| Error::internal("the dataset version vanished"))?;
        let format = crate::data::FileFormat::parse(&col::<String>(&dv, "format")?)
            .unwrap_or(crate::data::FileFormat::Csv);
        let bytes = self.dataset_bytes(&p.dataset_version_id).await?;
        let table = std::sync::Arc::new(self.read_table(bytes, format).await?);
        self.set_progress(id, 0.2).await?;

        let scored = self.score_version(&p.model_id, req.version, &table, task).await?;
        self.set_progress(id, 0.6).await?;

        let k = scored.k;
        let (truth_cls, truth_val) = match task {
            Task::Regression => {
                let c =
                    table.column(&req.label).ok_or_else(|| Error::invalid("label", "missing"))?;
                let v = (0..table.rows)
                    .map(|i| {
                        c.data
                            .number(i)
                            .ok_or_else(|| Error::invalid("label", format!("row {i} is empty")))
                    })
                    .collect::<Result<Vec<f64>>>()?;
                (vec![], v)
            }
            _ => (class_labels(&table, &req.label, k)?, vec![]),
        };
        let (metrics_all, cm) = headline(task, &truth_cls, &truth_val, &scored, None);
        let mut result = EvaluationResult {
            rows: table.rows as u64,
            metrics: metrics_all,
            confusion_matrix: cm,
            classes: if task == Task::Regression {
                vec![]
            } else {
                (0..k).map(|c| c.to_string()).collect()
            },
            ..Default::default()
        };
        if task == Task::BinaryClassification {
            let pos: Vec<bool> = truth_cls.iter().map(|&c| c == 1).collect();
            let pred: Vec<bool> = scored.pred_class.iter().map(|&c| c == 1).collect();
            if let Some(pr) = &scored.proba {
                let p1: Vec<f64> = pr.chunks(k).map(|r| r[1]).collect();
                result.calibration = Some(metrics::calibration(&pos, &p1));
            }
            for s in &req.sensitive {
                let c = table.column(s).ok_or_else(|| Error::invalid("sensitive", "missing"))?;
                let (names, groups) = c.data.groups();
                let counts = metrics::group_counts(&pos, &pred, &groups, names.len());
                result.fairness.insert(s.clone(), metrics::fairness(&names, &counts));
            }
        }
        for s in &req.slices {
            let c = table.column(s).ok_or_else(|| Error::invalid("slices", "missing"))?;
            let (names, groups) = c.data.groups();
            let mut members: Vec<Vec<usize>> = vec![vec![]; names.len()];
            for (i, g) in groups.iter().enumerate() {
                members[*g as usize].push(i);
            }
            let per: BTreeMap<String, SliceMetrics> = names
                .into_iter()
                .zip(members)
                .map(|(n, ix)| {
                    let (m, _) = headline(task, &truth_cls, &truth_val, &scored, Some(&ix));
                    (n, SliceMetrics { rows: ix.len() as u64, metrics: m })
                })
                .collect();
            result.slices.insert(s.clone(), per);
        }
        self.set_progress(id, 0.8).await?;

        let env = req.compare_environment.clone().unwrap_or_else(|| "production".to_string());
        if let Some(base) = self.serving_version(&p.model_id, &env).await?
            && base != req.version
        {
            let b = self.score_version(&p.model_id, base, &table, task).await?;
            if b.k == scored.k {
                let (bm, _) = headline(task, &truth_cls, &truth_val, &b, None);
                let delta = result
                    .metrics
                    .iter()
                    .filter_map(|(name, v)| bm.get(name).map(|b| (name.clone(), v - b)))
                    .collect();
                result.baseline =
                    Some(Baseline { environment: env, version: base, metrics: bm, delta });
            }
        }
        Ok(serde_json::to_value(&result)?)
    }

    pub(crate) async fn score_version(
        &self,
        model_id: &str,
        version: u32,
        table: &std::sync::Arc<Table>,
        task: Task,
    ) -> Result<Scored> {
        let source = self.engine.version_source(model_id, version).await?.ok_or_else(|| {
            Error::invalid("version", format!("version {version} does not exist or is archived"))
        })?;
        let bytes = {
            use tokio::io::AsyncReadExt;
            let mut r = self.artifacts.open(&source.artifact_key).await?;
            let mut b = Vec::new();
            r.reader.read_to_end(&mut b).await?;
            b
        };
        let backend = self.engine.backend_arc();
        let table = std::sync::Arc::clone(table);
        tokio::task::spawn_blocking(move || {
            let model = backend
                .load(source.format, &bytes)
                .map_err(|e| Error::new(Code::InvalidModel, e).with_field("version"))?;
            score(model.as_ref(), &source.signature, table.as_ref(), task)
        })
        .await
        .map_err(Error::internal)?
    }

    /// The version with the most traffic in an environment, if the model serves there.
    pub(crate) async fn serving_version(&self, model_id: &str, env: &str) -> Result<Option<u32>> {
        let row = self
            .db
            .fetch_optional(&Sql::with(
                "SELECT spec FROM deployments WHERE model_id = $1 AND environment = $2",
                [model_id.into(), env.into()],
            ))
            .await?;
        let Some(row) = row else { return Ok(None) };
        let spec: plinth_api::serving::DeploymentSpec =
            serde_json::from_str(&col::<String>(&row, "spec")?)?;
        Ok(spec.versions.iter().max_by_key(|s| (s.weight, s.version)).map(|s| s.version))
    }
}
