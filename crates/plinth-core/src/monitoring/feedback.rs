//! Ground truth, whenever it arrives: labels for captured predictions ([`super::capture`]), by
//! request id and row or by the caller's own prediction id, and the live performance they give,
//! computed by the evaluation's code and held against the version's evaluation; before labels
//! come, binary classifiers' performance estimated from their own scores (NannyML's CBPE).
//!
//! A label replaces the one before it; the same label twice changes nothing. A batch is checked
//! whole before anything is written: one unknown id or unfit label refuses all of it.

use std::collections::{BTreeMap, HashMap};

use plinth_api::identity::TeamRole;
use plinth_api::monitoring::{
    EstimatedPerformance, Feedback, FeedbackResult, Performance, PerformanceBaseline, RangeQuery,
    VersionPerformance,
};
use plinth_api::registry::Task;

use crate::Plinth;
use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::eval::{self, Scored};
use crate::store::{Sql, col, json_item};
use crate::util::{micros_to_time, now_micros};

/// Labels one request may carry.
pub const MAX_LABELS: usize = 10_000;
/// Captured predictions one performance query reads at most.
const MAX_ROWS: usize = 2_000_000;
const DAY_US: i64 = 86_400_000_000;
/// Keys per lookup and rows per insert (each bound as one JSON parameter).
const CHUNK: usize = MAX_LABELS;

/// A deployment as monitoring sees it.
pub(crate) struct Monitored {
    pub id: String,
    pub team_id: String,
    pub team: String,
    pub model_id: String,
    pub task: Task,
    /// `team/model@environment`.
    pub name: String,
}

/// A range in microseconds from a query: default the day before now.
pub(crate) fn range(q: &RangeQuery) -> Result<(i64, i64)> {
    let to_us = |t: time::OffsetDateTime| (t.unix_timestamp_nanos() / 1000) as i64;
    let until = q.until.map_or_else(now_micros, to_us);
    let since = q.since.map_or(until - DAY_US, to_us);
    if since >= until {
        return Err(Error::invalid("since", "must be before until"));
    }
    Ok((since, until))
}

impl Plinth {
    /// The deployment `team/model@environment` if `who` may see it, with its model's task.
    pub(crate) async fn monitored(
        &self,
        who: &Principal,
        team: &str,
        model: &str,
        environment: &str,
    ) -> Result<Monitored> {
        let d = self.get_deployment(who, team, model, environment).await?;
        let row = self
            .db
            .fetch_optional(&Sql::with(
                "SELECT d.team_id, d.model_id, m.task FROM deployments d JOIN models m ON m.id = d.model_id WHERE d.id = $1",
                [d.id.clone().into()],
            ))
            .await?
            .ok_or_else(|| Error::not_found("deployment", &d.id))?;
        let task: String = col(&row, "task")?;
        Ok(Monitored {
            id: d.id,
            team_id: col(&row, "team_id")?,
            team: d.team.clone(),
            model_id: col(&row, "model_id")?,
            task: Task::parse(&task).ok_or_else(|| Error::internal(format!("bad task {task}")))?,
            name: format!("{}/{}@{}", d.team, d.model, d.environment),
        })
    }

    /// Records labels of a deployment's predictions (developers and up of its team).
    pub async fn post_feedback(
        &self,
        who: &Principal,
        team: &str,
        model: &str,
        environment: &str,
        req: Feedback,
    ) -> Result<FeedbackResult> {
        let m = self.monitored(who, team, model, environment).await?;
        let t = crate::auth::TeamRef { id: m.team_id.clone(), name: m.team.clone() };
        who.require(&t, TeamRole::Developer, "posting labels")?;
        if req.labels.is_empty() || req.labels.len() > MAX_LABELS {
            return Err(Error::invalid(
                "labels",
                format!("send 1 to {MAX_LABELS} labels a request (got {})", req.labels.len()),
            ));
        }
        // Each label's key, value, and where it was given (for errors).
        enum By<'a> {
            Request(&'a str, u32),
            Id(&'a str),
        }
        let mut wanted: Vec<(By<'_>, f64)> = Vec::with_capacity(req.labels.len());
        for (i, l) in req.labels.iter().enumerate() {
            let by = match (&l.request_id, &l.prediction_id) {
                (Some(r), None) => By::Request(r, l.row.unwrap_or(0)),
                (None, Some(p)) if l.row.is_none() => By::Id(p),
                (None, Some(_)) => {
                    return Err(Error::invalid(
                        format!("labels[{i}].row"),
                        "a row goes with a request_id, not with a prediction_id",
                    ));
                }
                _ => {
                    return Err(Error::invalid(
                        format!("labels[{i}]"),
                        "give a request_id (and row) or a prediction_id: one of them",
                    ));
                }
            };
            wanted.push((by, label_value(m.task, &l.label, i)?));
        }
        // Every request and id resolved to its captured prediction (rows, classes): one query
        // per kind of key.
        let d = self.db.dialect();
        let mut requests: Vec<&str> = wanted
            .iter()
            .filter_map(|(b, _)| if let By::Request(r, _) = b { Some(*r) } else { None })
            .collect();
        let ids: Vec<&str> = wanted
            .iter()
            .filter_map(|(b, _)| if let By::Id(k) = b { Some(*k) } else { None })
            .collect();
        // Prediction ids name a request's row.
        let mut by_id: HashMap<String, (String, u32)> = HashMap::new();
        if !ids.is_empty() {
            let mut sql = Sql::new(
                "SELECT prediction_id, request_id, row_index FROM prediction_ids WHERE deployment_id = ",
            );
            sql.bind(m.id.as_str()).push(" AND prediction_id IN (");
            sql.push_json_values(d, serde_json::to_string(&ids)?).push(")");
            for row in self.db.fetch_all(&sql).await? {
                by_id.insert(
                    col(&row, "prediction_id")?,
                    (col(&row, "request_id")?, col::<i64>(&row, "row_index")? as u32),
                );
            }
        }
        requests.extend(by_id.values().map(|(r, _)| r.as_str()));
        requests.sort_unstable();
        requests.dedup();
        // (rows, classes) of each request.
        let mut captured: HashMap<String, (u32, usize)> = HashMap::new();
        let mut before: HashMap<(String, u32), f64> = HashMap::new();
        if !requests.is_empty() {
            let mut sql = Sql::new(
                "SELECT request_id, rows_count, classes FROM monitored_predictions WHERE deployment_id = ",
            );
            sql.bind(m.id.as_str()).push(" AND request_id IN (");
            sql.push_json_values(d, serde_json::to_string(&requests)?).push(")");
            for row in self.db.fetch_all(&sql).await? {
                captured.insert(
                    col(&row, "request_id")?,
                    (col::<i64>(&row, "rows_count")? as u32, col::<i64>(&row, "classes")? as usize),
                );
            }
        }
        let mut labels: BTreeMap<(String, u32), f64> = BTreeMap::new();
        for (i, (by, value)) in wanted.iter().enumerate() {
            let (request, row) = match by {
                By::Request(r, row) => ((*r).to_string(), *row),
                By::Id(p) => match by_id.get(*p) {
                    Some(k) => k.clone(),
                    None => {
                        return Err(Error::invalid(
                            format!("labels[{i}].prediction_id"),
                            format!("no captured prediction of {} has prediction id '{p}'", m.name),
                        ));
                    }
                },
            };
            let classes = match captured.get(&request) {
                Some((rows, classes)) if row < *rows => *classes,
                found => {
                    let what = match found {
                        Some((rows, _)) => {
                            format!("request '{request}' has {rows} rows: no row {row}")
                        }
                        None => format!(
                            "no captured prediction of {} has request id '{request}' \
                             (predictions are kept within seconds of their answer, on deployments with monitor and keep_predictions on)",
                            m.name
                        ),
                    };
                    let field =
                        if matches!(by, By::Id(_)) { "prediction_id" } else { "request_id" };
                    return Err(Error::invalid(format!("labels[{i}].{field}"), what));
                }
            };
            if classes > 0 && m.task != Task::Regression && *value as usize >= classes {
                return Err(Error::invalid(
                    format!("labels[{i}].label"),
                    format!(
                        "{value} is not a class of this {classes}-class model (0..{})",
                        classes - 1
                    ),
                ));
            }
            labels.insert((request, row), *value);
        }
        // The labels these rows have so far, looked up by (request, row).
        let pairs: Vec<(&str, u32)> = labels.keys().map(|(r, row)| (r.as_str(), *row)).collect();
        let mut sql = Sql::new(
            "SELECT request_id, row_index, label FROM prediction_labels WHERE deployment_id = ",
        );
        sql.bind(m.id.as_str()).push(" AND (request_id, row_index) IN (SELECT ");
        sql.push(&json_item(d, 0, "text")).push(", ");
        sql.push(&json_item(d, 1, "bigint")).push(" FROM ");
        sql.push_json_rows(d, serde_json::to_string(&pairs)?).push(")");
        for row in self.db.fetch_all(&sql).await? {
            before.insert(
                (col(&row, "request_id")?, col::<i64>(&row, "row_index")? as u32),
                col(&row, "label")?,
            );
        }
        // Which are new, which change, which are the same again.
        let mut result = FeedbackResult { added: 0, replaced: 0, unchanged: 0 };
        let changes: Vec<(&(String, u32), f64)> = labels
            .iter()
            .filter(|(k, v)| match before.get(*k) {
                None => {
                    result.added += 1;
                    true
                }
                Some(b) if b == *v => {
                    result.unchanged += 1;
                    false
                }
                Some(_) => {
                    result.replaced += 1;
                    true
                }
            })
            .map(|(k, v)| (k, *v))
            .collect();
        let now = now_micros();
        let mut tx = self.db.begin().await?;
        for chunk in changes.chunks(CHUNK) {
            let rows: Vec<(&str, u32, f64)> =
                chunk.iter().map(|((r, row), v)| (r.as_str(), *row, *v)).collect();
            let mut sql = Sql::new(
                "INSERT INTO prediction_labels (deployment_id, request_id, row_index, label, labelled_at) SELECT ",
            );
            sql.bind(m.id.as_str()).push(", ");
            sql.push(&json_item(d, 0, "text")).push(", ");
            sql.push(&json_item(d, 1, "bigint")).push(", ");
            sql.push(&json_item(d, 2, "double precision")).push(", ");
            sql.bind(now).push(" FROM ");
            sql.push_json_rows(d, serde_json::to_string(&rows)?);
            sql.push(
                " WHERE true ON CONFLICT (deployment_id, request_id, row_index) DO UPDATE SET label = excluded.label, labelled_at = excluded.labelled_at",
            );
            sql.execute(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(result)
    }

    /// A deployment's live performance over a range, per version, for anyone who may see it.
    pub async fn deployment_performance(
        &self,
        who: &Principal,
        team: &str,
        model: &str,
        environment: &str,
        q: &RangeQuery,
    ) -> Result<Performance> {
        let m = self.monitored(who, team, model, environment).await?;
        let (since, until) = range(q)?;
        let versions = self.performance_of(&m, since, until, q.version).await?;
        Ok(Performance {
            deployment: m.name,
            task: m.task.as_str().to_string(),
            since: micros_to_time(since),
            until: micros_to_time(until),
            versions,
        })
    }

    /// Live performance of each version of a deployment in `[since, until)`.
    pub(crate) async fn performance_of(
        &self,
        m: &Monitored,
        since: i64,
        until: i64,
        version: Option<u32>,
    ) -> Result<Vec<VersionPerformance>> {
        let mut sql = Sql::new(
            "SELECT request_id, version, rows_count, classes, predicted, scores FROM monitored_predictions WHERE deployment_id = ",
        );
        sql.bind(m.id.as_str()).push(" AND at >= ").bind(since);
        sql.push(" AND at < ").bind(until);
        if let Some(v) = version {
            sql.push(" AND version = ").bind(i64::from(v));
        }
        sql.push(&format!(" ORDER BY at LIMIT {}", MAX_ROWS + 1));
        let requests = self.db.fetch_all(&sql).await?;
        // The labels of those requests' rows.
        let mut sql = Sql::new(
            "SELECT l.request_id, l.row_index, l.label FROM prediction_labels l JOIN monitored_predictions p
               ON p.deployment_id = l.deployment_id AND p.request_id = l.request_id
             WHERE l.deployment_id = ",
        );
        sql.bind(m.id.as_str()).push(" AND p.at >= ").bind(since);
        sql.push(" AND p.at < ").bind(until);
        let mut labels: HashMap<(String, u32), f64> = HashMap::new();
        for row in self.db.fetch_all(&sql).await? {
            labels.insert(
                (col(&row, "request_id")?, col::<i64>(&row, "row_index")? as u32),
                col(&row, "label")?,
            );
        }
        let mut per: BTreeMap<u32, Rows> = BTreeMap::new();
        let mut total = 0usize;
        let parse = |s: &str| -> Vec<f64> {
            s.split(',').map(|x| x.parse::<f32>().map_or(f64::NAN, f64::from)).collect()
        };
        for row in &requests {
            let request: String = col(row, "request_id")?;
            let v = col::<i64>(row, "version")? as u32;
            let n = col::<i64>(row, "rows_count")? as usize;
            let k = col::<i64>(row, "classes")? as usize;
            total += n;
            if total > MAX_ROWS {
                return Err(Error::invalid(
                    "since",
                    format!("more than {MAX_ROWS} predictions in the range: ask for a shorter one"),
                ));
            }
            let predicted = parse(&col::<String>(row, "predicted")?);
            let scores = col::<Option<String>>(row, "scores")?.map(|s| parse(&s));
            let rows = per.entry(v).or_default();
            for (i, &p) in predicted.iter().enumerate().take(n) {
                rows.push(
                    p,
                    scores.as_ref().and_then(|s| s.get(i * k..(i + 1) * k)).map(<[f64]>::to_vec),
                    labels.get(&(request.clone(), i as u32)).copied(),
                );
            }
        }
        let mut out = Vec::new();
        for (v, rows) in per {
            let mut p = rows.performance(m.task, v);
            if let Some(b) = self.evaluation_baseline(&m.model_id, v).await? {
                let delta = p
                    .metrics
                    .iter()
                    .filter_map(|(k, live)| b.metrics.get(k).map(|e| (k.clone(), live - e)))
                    .collect();
                p.baseline = Some(PerformanceBaseline { delta, ..b });
            }
            out.push(p);
        }
        Ok(out)
    }

    /// The version's latest finished evaluation: its metrics and dataset.
    pub(crate) async fn evaluation_baseline(
        &self,
        model_id: &str,
        version: u32,
    ) -> Result<Option<PerformanceBaseline>> {
        let Some((id, dataset, _, result)) = self.latest_evaluation(model_id, version).await?
        else {
            return Ok(None);
        };
        let metrics = result
            .get("metrics")
            .and_then(|m| serde_json::from_value::<BTreeMap<String, f64>>(m.clone()).ok())
            .unwrap_or_default();
        Ok(Some(PerformanceBaseline { evaluation: id, dataset, metrics, delta: BTreeMap::new() }))
    }

    /// The version's latest finished evaluation: id, dataset (`name@version`), dataset version
    /// id, result.
    pub(crate) async fn latest_evaluation(
        &self,
        model_id: &str,
        version: u32,
    ) -> Result<Option<(String, String, String, serde_json::Value)>> {
        let row = self
            .db
            .fetch_optional(&Sql::with(
                "SELECT e.id, j.result, d.name AS dataset_name, dv.version AS dataset_version, dv.id AS dataset_version_id
                 FROM evaluations e JOIN tasks j ON j.id = e.id
                 JOIN dataset_versions dv ON dv.id = e.dataset_version_id JOIN datasets d ON d.id = dv.dataset_id
                 WHERE e.model_id = $1 AND e.version = $2 AND j.state = 'completed' AND j.result IS NOT NULL
                 ORDER BY j.finished_at DESC LIMIT 1",
                [model_id.into(), i64::from(version).into()],
            ))
            .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some((
            col(&row, "id")?,
            format!(
                "{}@{}",
                col::<String>(&row, "dataset_name")?,
                col::<i64>(&row, "dataset_version")?
            ),
            col(&row, "dataset_version_id")?,
            serde_json::from_str(&col::<String>(&row, "result")?)?,
        )))
    }
}

/// A label's value for the model's task: a class index or a boolean (binary), or a number.
fn label_value(task: Task, v: &serde_json::Value, i: usize) -> Result<f64> {
    let field = || format!("labels[{i}].label");
    match (task, v) {
        (Task::Regression, serde_json::Value::Number(n)) => n
            .as_f64()
            .filter(|x| x.is_finite())
            .ok_or_else(|| Error::invalid(field(), "not a finite number")),
        (Task::Regression, _) => Err(Error::invalid(field(), "a regressor's label is a number")),
        (Task::BinaryClassification, serde_json::Value::Bool(b)) => Ok(f64::from(u8::from(*b))),
        (_, serde_json::Value::Number(n)) => match n.as_u64() {
            Some(c) if task != Task::BinaryClassification || c < 2 => Ok(c as f64),
            _ => Err(Error::invalid(
                field(),
                format!(
                    "{n} is not a class index of this {} model (an integer {})",
                    task.as_str().replace('_', " "),
                    if task == Task::BinaryClassification {
                        "0 or 1, or a boolean"
                    } else {
                        "from 0"
                    }
                ),
            )),
        },
        _ => Err(Error::invalid(
            field(),
            "a classifier's label is its class index (an integer from 0) or, binary, a boolean",
        )),
    }
}

/// One version's captured rows.
#[derive(Default)]
struct Rows {
    predicted: Vec<f64>,
    scores: Vec<Option<Vec<f64>>>,
    labels: Vec<Option<f64>>,
}

impl Rows {
    fn push(&mut self, predicted: f64, scores: Option<Vec<f64>>, label: Option<f64>) {
        self.predicted.push(predicted);
        self.scores.push(scores);
        self.labels.push(label);
    }

    fn performance(&self, task: Task, version: u32) -> VersionPerformance {
        let n = self.predicted.len();
        let labelled: Vec<usize> = (0..n).filter(|&i| self.labels[i].is_some()).collect();
        let k = self.scores.iter().flatten().map(Vec::len).max().unwrap_or(0);
        let mut metrics = BTreeMap::new();
        if !labelled.is_empty() {
            // The labelled rows as the evaluation scores a table: the same metric code.
            let truth = |i: usize| self.labels[i].unwrap_or(0.0);
            let with_scores = k > 0
                && labelled.iter().all(|&i| self.scores[i].as_ref().is_some_and(|s| s.len() == k));
            let mut scored = Scored::default();
            let (mut truth_cls, mut truth_val) = (vec![], vec![]);
            for &i in &labelled {
                match task {
                    Task::Regression => {
                        scored.values.push(self.predicted[i]);
                        truth_val.push(truth(i));
                    }
                    _ => {
                        scored.pred_class.push(self.predicted[i].max(0.0) as u32);
                        truth_cls.push(truth(i) as u32);
                        if with_scores {
                            scored
                                .proba
                                .get_or_insert_with(Vec::new)
                                .extend(self.scores[i].as_deref().unwrap_or_default());
                        }
                    }
                }
            }
            if task != Task::Regression {
                let top =
                    truth_cls.iter().chain(&scored.pred_class).max().map_or(1, |m| *m as usize + 1);
                scored.k = if with_scores { k } else { top.max(2) };
                if task == Task::BinaryClassification {
                    scored.k = 2;
                }
                if scored.k < top {
                    scored.k = top;
                    scored.proba = None;
                }
            }
            metrics = eval::headline(task, &truth_cls, &truth_val, &scored, None).0;
        }
        let estimated = (task == Task::BinaryClassification && k == 2).then(|| {
            let rows: Vec<(f64, f64)> = (0..n)
                .filter_map(|i| self.scores[i].as_ref().map(|s| (self.predicted[i], s[1])))
                .collect();
            cbpe(&rows)
        });
        VersionPerformance {
            version,
            predictions: n as u64,
            labelled: labelled.len() as u64,
            label_coverage: if n == 0 { 0.0 } else { labelled.len() as f64 / n as f64 },
            metrics,
            baseline: None,
            estimated,
        }
    }
}

/// Confidence-based performance estimation: with calibrated scores, a row predicted positive
/// is a true positive with probability `p` and a false positive with `1 − p` (negatives
/// alike), so the expected confusion matrix sums those probabilities. `rows` are (predicted
/// class, score of class 1).
pub fn cbpe(rows: &[(f64, f64)]) -> EstimatedPerformance {
    let (mut tp, mut fp, mut tn, mut fn_) = (0.0, 0.0, 0.0, 0.0);
    for &(pred, p) in rows {
        if pred >= 1.0 {
            tp += p;
            fp += 1.0 - p;
        } else {
            fn_ += p;
            tn += 1.0 - p;
        }
    }
    let div = |a: f64, b: f64| if b == 0.0 { 0.0 } else { a / b };
    let n = rows.len() as f64;
    let mut metrics = BTreeMap::new();
    metrics.insert("accuracy".to_string(), div(tp + tn, n));
    metrics.insert("precision".to_string(), div(tp, tp + fp));
    metrics.insert("recall".to_string(), div(tp, tp + fn_));
    metrics.insert("f1".to_string(), div(2.0 * tp, 2.0 * tp + fp + fn_));
    EstimatedPerformance {
        method: "cbpe".to_string(),
        assumptions: "The model's scores are calibrated (a score of 0.8 is right 80 % of the \
            time) on this traffic, and only the inputs' distribution has shifted, not how the \
            label depends on them (no concept drift). Computed over every captured row, \
            labelled or not."
            .to_string(),
        rows: rows.len() as u64,
        metrics,
        confusion_matrix: vec![vec![tn, fp], vec![fn_, tp]],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cbpe_expects_what_calibrated_scores_promise() {
        // Four rows predicted positive at 0.75 and four negative at 0.25: 3 of each 4 right.
        let rows: Vec<(f64, f64)> =
            (0..8).map(|i| if i < 4 { (1.0, 0.75) } else { (0.0, 0.25) }).collect();
        let e = cbpe(&rows);
        assert_eq!(e.metrics["accuracy"], 0.75);
        assert_eq!(e.confusion_matrix, vec![vec![3.0, 1.0], vec![1.0, 3.0]]);
        assert_eq!(e.metrics["precision"], 0.75);
    }

    #[test]
    fn labels_must_fit_the_task() {
        use serde_json::json;
        assert_eq!(label_value(Task::BinaryClassification, &json!(true), 0).unwrap(), 1.0);
        assert!(
            label_value(Task::BinaryClassification, &json!(2), 3)
                .unwrap_err()
                .message
                .contains("class index")
        );
        assert_eq!(label_value(Task::MulticlassClassification, &json!(4), 0).unwrap(), 4.0);
        assert!(label_value(Task::Regression, &json!("x"), 1).is_err());
        assert_eq!(label_value(Task::Regression, &json!(2.5), 0).unwrap(), 2.5);
        let e = label_value(Task::MulticlassClassification, &json!(-1), 7).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("labels[7].label"));
    }
}
