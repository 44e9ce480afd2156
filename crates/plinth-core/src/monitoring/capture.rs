//! Served traffic captured for monitoring, off the request's critical path.
//!
//! On each answered prediction of a monitored deployment ([`plinth_api::serving::DeploymentSpec`]'s
//! `monitor`, on by default), the engine hands the inputs and outputs to the deployment's
//! [`Capture`]: every feature and the prediction are added to per-version summaries
//! ([`super::summary`]), and, unless `keep_predictions` is off, the request's predictions are
//! queued to be kept for their labels. Nothing is written there. Whenever this replica publishes its figures (every few seconds), it adds
//! what was captured since to its own row of the current minute in `drift_minutes` (one row per
//! deployment, version, minute and replica, as the health rollups do) and writes the queued
//! predictions to `monitored_predictions` in multi-row statements. A crash loses at most those
//! seconds; at most [`MAX_QUEUED`] rows wait per deployment, more are counted as dropped.

use std::collections::BTreeMap;
use std::sync::Mutex;

use plinth_api::registry::{Signature, Task};
use serde::{Deserialize, Serialize};

use super::summary::{Sketch, Summary};
use crate::Plinth;
use crate::error::Result;
use crate::eval::Scored;
use crate::serving::engine::Live;
use crate::serving::tensor::{Data, Tensor};
use crate::store::{Sql, json_item};

const MINUTE_US: i64 = 60_000_000;
/// Answered requests waiting to be written, per deployment.
pub const MAX_QUEUED: usize = 500_000;
/// The name of the prediction's column among the features.
pub const PREDICTION: &str = "prediction";

/// One version's traffic over a stretch of time: rows, and each column's summary (the
/// features, then the prediction).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Columns {
    pub rows: u64,
    pub columns: BTreeMap<String, Summary>,
}

impl Columns {
    pub fn merge(&mut self, other: &Columns) {
        self.rows += other.rows;
        for (name, s) in &other.columns {
            match self.columns.get_mut(name) {
                Some(mine) => mine.merge(s),
                None => {
                    self.columns.insert(name.clone(), s.clone());
                }
            }
        }
    }
}

/// An answered request waiting to be kept for its labels: its rows' predictions (and class
/// probabilities) as comma-separated text, made once, here.
#[derive(Debug, Clone)]
struct Outcome {
    request_id: String,
    ids: Option<Vec<String>>,
    version: u32,
    rows: usize,
    classes: usize,
    predicted: String,
    scores: Option<String>,
}

/// Appends `values` to `out`, comma-separated, as f32 (what models answer; exact both ways).
fn push_values(out: &mut String, values: impl Iterator<Item = f64>) {
    use std::fmt::Write;
    for (i, v) in values.enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{}", v as f32);
    }
}

/// What is captured of one version between two flushes: its columns in the order the
/// signature gives them (no lookup by name per value).
struct Pending {
    rows: u64,
    names: Vec<String>,
    summaries: Vec<Option<Summary>>,
    prediction: Summary,
}

#[derive(Default)]
struct State {
    pending: BTreeMap<u32, Pending>,
    outcomes: Vec<Outcome>,
    dropped: u64,
    /// This replica's current minute, per version, as written so far.
    open: Option<(i64, BTreeMap<u32, Columns>)>,
}

/// A deployment's capture, kept across its refreshes.
#[derive(Default)]
pub struct Capture {
    state: Mutex<State>,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture").field("dropped", &self.dropped()).finish_non_exhaustive()
    }
}

/// The columns a request's inputs hold: one 2-D input of the signature's feature names, or
/// one input per column.
pub(crate) fn column_names(sig: &Signature) -> Vec<String> {
    match (&sig.feature_names, sig.inputs.len()) {
        (Some(names), 1) => names.clone(),
        _ => sig.inputs.iter().map(|i| i.name.clone()).collect(),
    }
}

fn add(summary: &mut Option<Summary>, data: &Data, i: usize) {
    let s = summary.get_or_insert_with(|| match data {
        Data::Str(_) => Summary::texts(),
        _ => Summary::Numbers(Sketch::new()),
    });
    match data {
        Data::F32(v) => s.add_number(f64::from(v[i])),
        Data::F64(v) => s.add_number(v[i]),
        Data::I64(v) => s.add_number(v[i] as f64),
        Data::I32(v) => s.add_number(f64::from(v[i])),
        Data::Bool(v) => s.add_number(f64::from(u8::from(v[i]))),
        Data::Str(v) => s.add_text(&v[i]),
    }
}

/// The prediction's column for drift: a binary classifier's score of class 1 when it gives
/// one, else the predicted class, or a regressor's value.
pub(crate) fn prediction_value(task: Task, scored: &Scored, i: usize) -> f64 {
    match (task, &scored.proba) {
        (Task::Regression, _) => scored.values.get(i).copied().unwrap_or(f64::NAN),
        (Task::BinaryClassification, Some(p)) if scored.k == 2 => p[i * 2 + 1],
        _ => scored.pred_class.get(i).map_or(f64::NAN, |c| f64::from(*c)),
    }
}

impl Capture {
    /// Captures an answered request. `ids` are the caller's prediction ids, one per row.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn record(
        &self,
        task: Task,
        sig: &Signature,
        version: u32,
        request_id: &str,
        ids: Option<&[String]>,
        inputs: &[(String, Tensor)],
        outputs: &[(String, Tensor)],
        rows: usize,
        keep: bool,
    ) {
        let mut scored = Scored::default();
        if rows == 0 || scored.read(outputs, rows, task).is_err() {
            return;
        }
        let mut state = self.state.lock().expect("capture lock");
        let state = &mut *state;
        let p = state.pending.entry(version).or_insert_with(|| {
            let names = column_names(sig);
            Pending {
                rows: 0,
                summaries: vec![None; names.len()],
                names,
                prediction: Summary::Numbers(Sketch::new()),
            }
        });
        p.rows += rows as u64;
        let width = p.names.len();
        match inputs {
            [(_, t)] if t.shape.len() == 2 && t.shape[1] == width && t.shape[0] == rows => {
                for i in 0..rows {
                    for (j, s) in p.summaries.iter_mut().enumerate() {
                        add(s, &t.data, i * width + j);
                    }
                }
            }
            _ => {
                for (name, t) in inputs {
                    if let Some(j) = p.names.iter().position(|n| n == name)
                        && t.data.len() == rows
                    {
                        (0..rows).for_each(|i| add(&mut p.summaries[j], &t.data, i));
                    }
                }
            }
        }
        let k = scored.k;
        for i in 0..rows {
            p.prediction.add_number(prediction_value(task, &scored, i));
        }
        if !keep {
            return;
        }
        if state.outcomes.len() >= MAX_QUEUED {
            state.dropped += 1;
            return;
        }
        let mut predicted = String::with_capacity(rows * 4);
        match task {
            Task::Regression => push_values(&mut predicted, scored.values.iter().copied()),
            _ => push_values(&mut predicted, scored.pred_class.iter().map(|c| f64::from(*c))),
        }
        let scores = scored.proba.as_ref().map(|p| {
            let mut s = String::with_capacity(p.len() * 10);
            push_values(&mut s, p.iter().copied());
            s
        });
        state.outcomes.push(Outcome {
            request_id: request_id.to_string(),
            ids: ids.map(<[String]>::to_vec),
            version,
            rows,
            classes: if scores.is_some() { k } else { 0 },
            predicted,
            scores,
        });
    }

    /// Answered requests not kept because too many waited.
    pub fn dropped(&self) -> u64 {
        self.state.lock().expect("capture lock").dropped
    }

    /// Takes what was captured: adds it to the minute `now` falls in and answers that minute's
    /// columns per version (to be written whole) and the predictions to keep.
    fn take(&self, now: i64) -> (i64, BTreeMap<u32, Columns>, Vec<Outcome>) {
        let minute = now.div_euclid(MINUTE_US) * MINUTE_US;
        let mut state = self.state.lock().expect("capture lock");
        let pending = std::mem::take(&mut state.pending);
        let outcomes = std::mem::take(&mut state.outcomes);
        if state.open.as_ref().is_none_or(|(m, _)| *m != minute) {
            state.open = Some((minute, BTreeMap::new()));
        }
        let Some((_, open)) = state.open.as_mut() else { unreachable!() };
        let mut changed = BTreeMap::new();
        for (version, p) in pending {
            let mut columns: BTreeMap<String, Summary> = p
                .names
                .into_iter()
                .zip(p.summaries)
                .filter_map(|(n, s)| s.map(|s| (n, s)))
                .collect();
            columns.insert(PREDICTION.to_string(), p.prediction);
            let cols = open.entry(version).or_default();
            cols.merge(&Columns { rows: p.rows, columns });
            changed.insert(version, cols.clone());
        }
        (minute, changed, outcomes)
    }
}

impl Plinth {
    /// Writes what every live deployment captured since the last flush, as of `now`
    /// (microseconds): the summaries into this replica's row of that minute, the predictions
    /// for their labels. The process does it with the wall clock whenever it publishes its
    /// figures; tests drive it with their own.
    pub async fn flush_monitoring_at(&self, now: i64) -> Result<()> {
        let replica = self.replica_id().to_string();
        for live in self.engine.all() {
            self.flush_capture(&live, &replica, now).await?;
        }
        Ok(())
    }

    async fn flush_capture(&self, live: &Live, replica: &str, now: i64) -> Result<()> {
        let (minute, columns, outcomes) = live.stats.capture.take(now);
        if columns.is_empty() && outcomes.is_empty() {
            return Ok(());
        }
        let mut tx = self.db.begin().await?;
        for (version, cols) in &columns {
            Sql::with(
                "INSERT INTO drift_minutes (deployment_id, version, minute, replica, summary) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (deployment_id, version, minute, replica) DO UPDATE SET summary = excluded.summary",
                [
                    live.deployment_id.clone().into(),
                    i64::from(*version).into(),
                    minute.into(),
                    replica.to_string().into(),
                    serde_json::to_string(cols)?.into(),
                ],
            )
            .execute(&mut tx)
            .await?;
        }
        // Many rows per statement, bound as one JSON parameter: the per-statement cost
        // dominates one row's.
        let d = self.db.dialect();
        // Chunks small enough that building one never holds the runtime for long.
        for chunk in outcomes.chunks(1_000) {
            tokio::task::yield_now().await;
            let mut rows = String::with_capacity(chunk.len() * 96);
            let mut ids = Vec::new();
            rows.push('[');
            for (n, o) in chunk.iter().enumerate() {
                if n > 0 {
                    rows.push(',');
                }
                let row = (&o.request_id, o.version, o.rows, o.classes, &o.predicted, &o.scores);
                rows.push_str(&serde_json::to_string(&row)?);
                for (i, id) in o.ids.iter().flatten().enumerate() {
                    ids.push((id, &o.request_id, i));
                }
            }
            rows.push(']');
            let mut sql = Sql::new(
                "INSERT INTO monitored_predictions (deployment_id, request_id, version, at, rows_count, classes, predicted, scores) SELECT ",
            );
            sql.bind(live.deployment_id.as_str()).push(", ");
            sql.push(&json_item(d, 0, "text")).push(", ");
            sql.push(&json_item(d, 1, "bigint")).push(", ");
            sql.bind(now).push(", ");
            sql.push(&json_item(d, 2, "bigint")).push(", ");
            sql.push(&json_item(d, 3, "bigint")).push(", ");
            sql.push(&json_item(d, 4, "text")).push(", ");
            sql.push(&json_item(d, 5, "text")).push(" FROM ");
            sql.push_json_rows(d, rows);
            // A request id seen before (a client's own) keeps its first prediction.
            sql.push(" WHERE true ON CONFLICT DO NOTHING");
            sql.execute(&mut tx).await?;
            if !ids.is_empty() {
                let mut sql = Sql::new(
                    "INSERT INTO prediction_ids (deployment_id, prediction_id, request_id, row_index) SELECT ",
                );
                sql.bind(live.deployment_id.as_str()).push(", ");
                sql.push(&json_item(d, 0, "text")).push(", ");
                sql.push(&json_item(d, 1, "text")).push(", ");
                sql.push(&json_item(d, 2, "bigint")).push(" FROM ");
                sql.push_json_rows(d, serde_json::to_string(&ids)?);
                sql.push(" WHERE true ON CONFLICT DO NOTHING");
                sql.execute(&mut tx).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Every version's traffic of a deployment in `[since, until)`, over every replica.
    pub(crate) async fn served_columns(
        &self,
        deployment_id: &str,
        since: i64,
        until: i64,
        version: Option<u32>,
    ) -> Result<BTreeMap<u32, Columns>> {
        let mut sql = Sql::new("SELECT version, summary FROM drift_minutes WHERE deployment_id = ");
        sql.bind(deployment_id).push(" AND minute >= ").bind(since);
        sql.push(" AND minute < ").bind(until);
        if let Some(v) = version {
            sql.push(" AND version = ").bind(i64::from(v));
        }
        let mut out: BTreeMap<u32, Columns> = BTreeMap::new();
        for row in self.db.fetch_all(&sql).await? {
            let v = crate::store::col::<i64>(&row, "version")? as u32;
            let c: Columns = serde_json::from_str(&crate::store::col::<String>(&row, "summary")?)?;
            out.entry(v).or_default().merge(&c);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use plinth_api::registry::{DataType, TensorSpec};

    use super::*;

    fn signature() -> Signature {
        Signature {
            inputs: vec![TensorSpec {
                name: "x".into(),
                datatype: DataType::Fp32,
                shape: vec![-1, 2],
            }],
            outputs: vec![],
            feature_names: Some(vec!["age".into(), "hours".into()]),
        }
    }

    #[test]
    fn a_request_adds_each_feature_and_the_score_and_queues_its_rows() {
        let c = Capture::default();
        let x = Tensor { shape: vec![2, 2], data: Data::F32(vec![30.0, 40.0, 50.0, 20.0]) };
        let probs = Tensor { shape: vec![2, 2], data: Data::F32(vec![0.25, 0.75, 0.5, 0.5]) };
        let ids = ["a".to_string(), "b".to_string()];
        c.record(
            Task::BinaryClassification,
            &signature(),
            3,
            "req1",
            Some(&ids),
            &[("x".into(), x)],
            &[("probabilities".into(), probs)],
            2,
            true,
        );
        let (minute, cols, outcomes) = c.take(90_000_000);
        assert_eq!(minute, MINUTE_US);
        let v = &cols[&3];
        assert_eq!(v.rows, 2);
        assert_eq!(v.columns.len(), 3);
        assert_eq!(v.columns["age"].rows(), 2);
        assert_eq!(outcomes.len(), 1);
        let o = &outcomes[0];
        assert_eq!((o.request_id.as_str(), o.rows, o.classes), ("req1", 2, 2));
        assert_eq!(o.ids.as_deref(), Some(&ids[..]));
        assert_eq!(o.predicted, "1,0");
        assert_eq!(o.scores.as_deref(), Some("0.25,0.75,0.5,0.5"));
        // The next flush in the same minute answers the minute's sum so far.
        let x = Tensor { shape: vec![1, 2], data: Data::F32(vec![1.0, 2.0]) };
        let probs = Tensor { shape: vec![1, 2], data: Data::F32(vec![0.9, 0.1]) };
        c.record(
            Task::BinaryClassification,
            &signature(),
            3,
            "req2",
            None,
            &[("x".into(), x)],
            &[("probabilities".into(), probs)],
            1,
            true,
        );
        let (_, cols, _) = c.take(100_000_000);
        assert_eq!(cols[&3].rows, 3);
    }
}
