//! MLflow tracking: experiments, runs with their params, tags and metric history, and MLflow
//! 3's logged models. Reads need a team role; writes need developer, like registering a model.

use std::collections::BTreeMap;

use plinth_api::identity::TeamRole;
use serde::Serialize;
use serde_json::{Value, json};

use super::{KeyValue, check_key, ms};
use crate::Plinth;
use crate::audit::{self, Target};
use crate::auth::{Principal, TeamRef};
use crate::error::{Error, Result};
use crate::store::{Sql, col};
use crate::util::{check_text, now_micros};

/// The experiment a run lands in when the client names none (MLflow's id "0").
pub const DEFAULT_EXPERIMENT: &str = "Default";
const RUN_STATUSES: [&str; 5] = ["RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"];
/// MLflow's limits on one `log-batch`.
const MAX_BATCH_METRICS: usize = 1000;
const MAX_BATCH_PARAMS: usize = 100;
const MAX_BATCH_TAGS: usize = 100;
const MAX_PARAM_VALUE: usize = 6000;
const MAX_TAG_VALUE: usize = 8000;

#[derive(Debug, Clone, Serialize)]
pub struct Experiment {
    pub experiment_id: String,
    pub name: String,
    pub artifact_location: String,
    pub lifecycle_stage: String,
    pub last_update_time: i64,
    pub creation_time: i64,
    pub tags: Vec<KeyValue>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    pub run_id: String,
    pub run_uuid: String,
    pub run_name: String,
    pub experiment_id: String,
    pub user_id: String,
    pub status: String,
    pub start_time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time: Option<i64>,
    pub artifact_uri: String,
    pub lifecycle_stage: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Metric {
    pub key: String,
    pub value: f64,
    pub timestamp: i64,
    pub step: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_id: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunData {
    pub metrics: Vec<Metric>,
    pub params: Vec<KeyValue>,
    pub tags: Vec<KeyValue>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub info: RunInfo,
    pub data: RunData,
    pub inputs: Value,
    pub outputs: Value,
}

/// MLflow 3's logged model: a model's files and metadata, before or without registration.
#[derive(Debug, Clone, Serialize)]
pub struct LoggedModel {
    pub info: Value,
    pub data: Value,
}

/// A metric as logged: `timestamp` in milliseconds.
#[derive(Debug, Clone, Default)]
pub struct NewMetric {
    pub key: String,
    pub value: f64,
    pub timestamp: i64,
    pub step: i64,
    pub model_id: Option<String>,
}

fn kv(map: BTreeMap<String, String>) -> Vec<KeyValue> {
    map.into_iter().map(|(key, value)| KeyValue { key, value }).collect()
}

fn tags_json(tags: &[KeyValue]) -> Result<String> {
    let map: BTreeMap<&str, &str> =
        tags.iter().map(|t| (t.key.as_str(), t.value.as_str())).collect();
    Ok(serde_json::to_string(&map)?)
}

/// A fresh experiment id: decimal digits, as MLflow's are.
fn new_experiment_id() -> String {
    (uuid::Uuid::now_v7().as_u64_pair().1 & 0x001f_ffff_ffff_ffff).to_string()
}

/// A page token is the offset of the next item.
pub(crate) fn page(
    token: Option<&str>,
    max: Option<i64>,
    default: i64,
    cap: i64,
) -> Result<(i64, i64)> {
    let offset =
        match token {
            None | Some("") => 0,
            Some(t) => t.parse::<i64>().ok().filter(|o| *o >= 0).ok_or_else(|| {
                Error::invalid("page_token", "not a page token this server returned")
            })?,
        };
    let limit = match max {
        None | Some(0) => default,
        Some(n) if n < 0 || n > cap => {
            return Err(Error::invalid("max_results", format!("must be between 1 and {cap}")));
        }
        Some(n) => n,
    };
    Ok((offset, limit))
}

pub(crate) fn next_token(offset: i64, limit: i64, got: usize) -> Option<String> {
    (got as i64 > limit).then(|| (offset + limit).to_string())
}

fn metric_from_row(r: &sqlx::any::AnyRow) -> Result<Metric> {
    Ok(Metric {
        key: col(r, "key")?,
        value: col(r, "value")?,
        timestamp: col(r, "at")?,
        step: col(r, "step")?,
        model_id: col(r, "model_id")?,
    })
}

fn experiment_from_row(row: &sqlx::any::AnyRow) -> Result<Experiment> {
    let id: String = col(row, "id")?;
    let tags: BTreeMap<String, String> = serde_json::from_str(&col::<String>(row, "tags")?)?;
    Ok(Experiment {
        artifact_location: format!("mlflow-artifacts:/{id}"),
        experiment_id: id,
        name: col(row, "name")?,
        lifecycle_stage: col(row, "lifecycle")?,
        last_update_time: ms(col(row, "updated_at")?),
        creation_time: ms(col(row, "created_at")?),
        tags: kv(tags),
    })
}

impl Plinth {
    fn require_mlflow(
        &self,
        who: &Principal,
        team: &TeamRef,
        write: bool,
        what: &str,
    ) -> Result<()> {
        who.require(team, if write { TeamRole::Developer } else { TeamRole::Viewer }, what)
    }

    async fn experiment_row(&self, team: &TeamRef, id: &str) -> Result<sqlx::any::AnyRow> {
        self.db
            .fetch_optional(&Sql::with(
                "SELECT * FROM mlflow_experiments WHERE id = $1 AND team_id = $2",
                [id.into(), team.id.clone().into()],
            ))
            .await?
            .ok_or_else(|| Error::not_found("experiment", id).with_field("experiment_id"))
    }

    /// An experiment id as the client sends it: "0" is the team's default experiment.
    async fn experiment_id(&self, who: &Principal, team: &TeamRef, id: &str) -> Result<String> {
        if id != "0" {
            return col(&self.experiment_row(team, id).await?, "id");
        }
        match self.mlflow_experiment_by_name(who, team, DEFAULT_EXPERIMENT).await {
            Ok(e) => Ok(e.experiment_id),
            Err(e) if e.code == plinth_api::Code::NotFound => {
                self.mlflow_create_experiment(who, team, DEFAULT_EXPERIMENT, &[]).await
            }
            Err(e) => Err(e),
        }
    }

    pub async fn mlflow_experiment_by_name(
        &self,
        who: &Principal,
        team: &TeamRef,
        name: &str,
    ) -> Result<Experiment> {
        self.require_mlflow(who, team, false, "reading experiments")?;
        let row = self
            .db
            .fetch_optional(&Sql::with(
                "SELECT * FROM mlflow_experiments WHERE team_id = $1 AND name = $2",
                [team.id.clone().into(), name.into()],
            ))
            .await?
            .ok_or_else(|| Error::not_found("experiment", name).with_field("experiment_name"))?;
        experiment_from_row(&row)
    }

    pub async fn mlflow_experiment(
        &self,
        who: &Principal,
        team: &TeamRef,
        id: &str,
    ) -> Result<Experiment> {
        self.require_mlflow(who, team, false, "reading experiments")?;
        let id = self.experiment_id(who, team, id).await?;
        experiment_from_row(&self.experiment_row(team, &id).await?)
    }

    /// Creates an experiment; answers its id.
    pub async fn mlflow_create_experiment(
        &self,
        who: &Principal,
        team: &TeamRef,
        name: &str,
        tags: &[KeyValue],
    ) -> Result<String> {
        self.require_mlflow(who, team, true, "creating experiments")?;
        if name.trim().is_empty() {
            return Err(Error::invalid("name", "an experiment needs a name"));
        }
        check_text("name", name, 500)?;
        for (i, t) in tags.iter().enumerate() {
            check_key(&format!("tags[{i}].key"), &t.key)?;
        }
        let id = new_experiment_id();
        let now = now_micros();
        let mut tx = self.db.begin().await?;
        Sql::with(
            "INSERT INTO mlflow_experiments (id, team_id, name, lifecycle, tags, created_at, created_by, updated_at)
             VALUES ($1, $2, $3, 'active', $4, $5, $6, $5)",
            [id.clone().into(), team.id.clone().into(), name.into(), tags_json(tags)?.into(), now.into(), who.id.clone().into()],
        )
        .execute_unique(&mut tx, || Error::already_exists("experiment", name).with_field("name"))
        .await?;
        let t = Target {
            team_id: Some(&team.id),
            object_type: "experiment",
            object_id: &id,
            object_name: name,
        };
        audit::record(&mut tx, who, "experiment.create", t, json!({"name": name})).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// The team's experiments, newest first: `view_type` 1 active (default), 2 deleted, 3 all.
    pub async fn mlflow_search_experiments(
        &self,
        who: &Principal,
        team: &TeamRef,
        view_type: Option<i64>,
        max_results: Option<i64>,
        page_token: Option<&str>,
    ) -> Result<(Vec<Experiment>, Option<String>)> {
        self.require_mlflow(who, team, false, "reading experiments")?;
        let (offset, limit) = page(page_token, max_results, 1000, 50_000)?;
        let lifecycle = match view_type.unwrap_or(1) {
            1 => " AND lifecycle = 'active'",
            2 => " AND lifecycle = 'deleted'",
            3 => "",
            _ => {
                return Err(Error::invalid(
                    "view_type",
                    "must be ACTIVE_ONLY, DELETED_ONLY or ALL",
                ));
            }
        };
        let rows = self
            .db
            .fetch_all(&Sql::with(
                &format!("SELECT * FROM mlflow_experiments WHERE team_id = $1{lifecycle} ORDER BY created_at DESC, id LIMIT $2 OFFSET $3"),
                [team.id.clone().into(), (limit + 1).into(), offset.into()],
            ))
            .await?;
        let next = next_token(offset, limit, rows.len());
        let items =
            rows.iter().take(limit as usize).map(experiment_from_row).collect::<Result<_>>()?;
        Ok((items, next))
    }

    /// Deletes (`deleted`) or restores (`active`) an experiment; its runs stay.
    pub async fn mlflow_set_experiment_lifecycle(
        &self,
        who: &Principal,
        team: &TeamRef,
        id: &str,
        lifecycle: &str,
    ) -> Result<()> {
        self.require_mlflow(who, team, true, "deleting experiments")?;
        let id = self.experiment_id(who, team, id).await?;
        let mut tx = self.db.begin().await?;
        Sql::with(
            "UPDATE mlflow_experiments SET lifecycle = $1, updated_at = $2 WHERE id = $3",
            [lifecycle.into(), now_micros().into(), id.clone().into()],
        )
        .execute(&mut tx)
        .await?;
        let action =
            if lifecycle == "deleted" { "experiment.delete" } else { "experiment.restore" };
        let t = Target {
            team_id: Some(&team.id),
            object_type: "experiment",
            object_id: &id,
            object_name: &id,
        };
        audit::record(&mut tx, who, action, t, json!({})).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn mlflow_update_experiment(
        &self,
        who: &Principal,
        team: &TeamRef,
        id: &str,
        new_name: Option<&str>,
        tag: Option<(&str, Option<&str>)>,
    ) -> Result<()> {
        self.require_mlflow(who, team, true, "changing experiments")?;
        let id = self.experiment_id(who, team, id).await?;
        let row = self.experiment_row(team, &id).await?;
        let mut tags: BTreeMap<String, String> =
            serde_json::from_str(&col::<String>(&row, "tags")?)?;
        let mut name: String = col(&row, "name")?;
        if let Some(n) = new_name {
            check_text("new_name", n, 500)?;
            if n.trim().is_empty() {
                return Err(Error::invalid("new_name", "an experiment needs a name"));
            }
            name = n.to_string();
        }
        if let Some((key, value)) = tag {
            check_key("key", key)?;
            match value {
                Some(v) => tags.insert(key.to_string(), v.to_string()),
                None => tags.remove(key),
            };
        }
        let mut tx = self.db.begin().await?;
        Sql::with(
            "UPDATE mlflow_experiments SET name = $1, tags = $2, updated_at = $3 WHERE id = $4",
            [
                name.clone().into(),
                serde_json::to_string(&tags)?.into(),
                now_micros().into(),
                id.into(),
            ],
        )
        .execute_unique(&mut tx, || {
            Error::already_exists("experiment", &name).with_field("new_name")
        })
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn run_row(&self, team: &TeamRef, run_id: &str) -> Result<sqlx::any::AnyRow> {
        self.db
            .fetch_optional(&Sql::with(
                "SELECT * FROM mlflow_runs WHERE id = $1 AND team_id = $2",
                [run_id.into(), team.id.clone().into()],
            ))
            .await?
            .ok_or_else(|| Error::not_found("run", run_id).with_field("run_id"))
    }

    fn run_info(row: &sqlx::any::AnyRow) -> Result<RunInfo> {
        let id: String = col(row, "id")?;
        let experiment: String = col(row, "experiment_id")?;
        Ok(RunInfo {
            run_uuid: id.clone(),
            artifact_uri: format!("mlflow-artifacts:/{experiment}/{id}/artifacts"),
            run_id: id,
            run_name: col(row, "name")?,
            experiment_id: experiment,
            user_id: col(row, "user_id")?,
            status: col(row, "status")?,
            start_time: col(row, "start_time")?,
            end_time: col(row, "end_time")?,
            lifecycle_stage: col(row, "lifecycle")?,
        })
    }

    async fn run_of(&self, row: &sqlx::any::AnyRow) -> Result<Run> {
        let info = Self::run_info(row)?;
        let pairs = |table: &str| {
            Sql::with(
                &format!("SELECT key, value FROM {table} WHERE run_id = $1 ORDER BY key"),
                [info.run_id.clone().into()],
            )
        };
        let to_kv = |rows: Vec<sqlx::any::AnyRow>| -> Result<Vec<KeyValue>> {
            rows.iter()
                .map(|r| Ok(KeyValue { key: col(r, "key")?, value: col(r, "value")? }))
                .collect()
        };
        let params = to_kv(self.db.fetch_all(&pairs("mlflow_run_params")).await?)?;
        let tags = to_kv(self.db.fetch_all(&pairs("mlflow_run_tags")).await?)?;
        // Each metric's latest value: the greatest timestamp, ties to the greatest value.
        let rows = self
            .db
            .fetch_all(&Sql::with(
                "SELECT key, value, at, step, model_id FROM mlflow_metrics WHERE run_id = $1 ORDER BY key, at, value",
                [info.run_id.clone().into()],
            ))
            .await?;
        let mut latest: BTreeMap<String, Metric> = BTreeMap::new();
        for r in &rows {
            let m = metric_from_row(r)?;
            latest.insert(m.key.clone(), m);
        }
        Ok(Run {
            info,
            data: RunData { metrics: latest.into_values().collect(), params, tags },
            inputs: serde_json::from_str(&col::<String>(row, "inputs")?)?,
            outputs: serde_json::from_str(&col::<String>(row, "outputs")?)?,
        })
    }

    pub async fn mlflow_create_run(
        &self,
        who: &Principal,
        team: &TeamRef,
        experiment_id: &str,
        run_name: Option<&str>,
        start_time: Option<i64>,
        tags: &[KeyValue],
    ) -> Result<Run> {
        self.require_mlflow(who, team, true, "logging runs")?;
        let experiment = self.experiment_id(who, team, experiment_id).await?;
        let row = self.experiment_row(team, &experiment).await?;
        if col::<String>(&row, "lifecycle")? != "active" {
            return Err(Error::invalid(
                "experiment_id",
                format!("experiment {experiment} is deleted: restore it first"),
            ));
        }
        let id = uuid::Uuid::now_v7().simple().to_string();
        let name = run_name
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .or_else(|| tags.iter().find(|t| t.key == "mlflow.runName").map(|t| t.value.clone()))
            .unwrap_or_else(|| format!("run-{}", &id[..8]));
        check_text("run_name", &name, 250)?;
        let start = start_time.unwrap_or_else(|| ms(now_micros()));
        let mut tx = self.db.begin().await?;
        Sql::with(
            "INSERT INTO mlflow_runs (id, team_id, experiment_id, name, user_id, status, start_time, end_time, lifecycle, inputs, outputs)
             VALUES ($1, $2, $3, $4, $5, 'RUNNING', $6, NULL, 'active', $7, $8)",
            [
                id.clone().into(), team.id.clone().into(), experiment.clone().into(), name.clone().into(), who.name.clone().into(), start.into(),
                json!({"dataset_inputs": [], "model_inputs": []}).to_string().into(),
                json!({"model_outputs": []}).to_string().into(),
            ],
        )
        .execute(&mut tx)
        .await?;
        let mut all = tags.to_vec();
        if !all.iter().any(|t| t.key == "mlflow.runName") {
            all.push(KeyValue { key: "mlflow.runName".into(), value: name.clone() });
        }
        Self::put_tags(&mut tx, &id, &all).await?;
        let t = Target {
            team_id: Some(&team.id),
            object_type: "run",
            object_id: &id,
            object_name: &name,
        };
        audit::record(&mut tx, who, "run.create", t, json!({"experiment_id": experiment})).await?;
        tx.commit().await?;
        self.run_of(&self.run_row(team, &id).await?).await
    }

    async fn put_tags(tx: &mut crate::store::Tx, run_id: &str, tags: &[KeyValue]) -> Result<()> {
        for (i, t) in tags.iter().enumerate() {
            check_key(&format!("tags[{i}].key"), &t.key)?;
            if t.value.chars().count() > MAX_TAG_VALUE {
                return Err(Error::invalid(
                    format!("tags[{i}].value"),
                    format!("longer than {MAX_TAG_VALUE} characters"),
                ));
            }
            Sql::with(
                "INSERT INTO mlflow_run_tags (run_id, key, value) VALUES ($1, $2, $3)
                 ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value",
                [run_id.into(), t.key.clone().into(), t.value.clone().into()],
            )
            .execute(tx)
            .await?;
        }
        Ok(())
    }

    /// A run's own row, for a write: it must be active.
    async fn writable_run(
        &self,
        who: &Principal,
        team: &TeamRef,
        run_id: &str,
    ) -> Result<sqlx::any::AnyRow> {
        self.require_mlflow(who, team, true, "logging runs")?;
        let row = self.run_row(team, run_id).await?;
        if col::<String>(&row, "lifecycle")? != "active" {
            return Err(Error::invalid("run_id", format!("run {run_id} is deleted")));
        }
        Ok(row)
    }

    pub async fn mlflow_update_run(
        &self,
        who: &Principal,
        team: &TeamRef,
        run_id: &str,
        status: Option<&str>,
        end_time: Option<i64>,
        run_name: Option<&str>,
    ) -> Result<RunInfo> {
        let row = self.writable_run(who, team, run_id).await?;
        let info = Self::run_info(&row)?;
        let status = status.unwrap_or(&info.status);
        if !RUN_STATUSES.contains(&status) {
            return Err(Error::invalid(
                "status",
                format!("must be one of {}", RUN_STATUSES.join(", ")),
            ));
        }
        let name = run_name.filter(|n| !n.is_empty()).unwrap_or(&info.run_name);
        check_text("run_name", name, 250)?;
        let mut tx = self.db.begin().await?;
        Sql::with(
            "UPDATE mlflow_runs SET status = $1, end_time = $2, name = $3 WHERE id = $4",
            [status.into(), end_time.or(info.end_time).into(), name.into(), run_id.into()],
        )
        .execute(&mut tx)
        .await?;
        if run_name.is_some() {
            Self::put_tags(
                &mut tx,
                run_id,
                &[KeyValue { key: "mlflow.runName".into(), value: name.to_string() }],
            )
            .await?;
        }
        tx.commit().await?;
        Self::run_info(&self.run_row(team, run_id).await?)
    }

    /// Metrics, params and tags in one go (what `log-metric`, `log-parameter` and `set-tag`
    /// are single cases of). A param keeps its first value: logging another one is refused.
    pub async fn mlflow_log_batch(
        &self,
        who: &Principal,
        team: &TeamRef,
        run_id: &str,
        metrics: &[NewMetric],
        params: &[KeyValue],
        tags: &[KeyValue],
    ) -> Result<()> {
        self.writable_run(who, team, run_id).await?;
        if metrics.len() > MAX_BATCH_METRICS
            || params.len() > MAX_BATCH_PARAMS
            || tags.len() > MAX_BATCH_TAGS
        {
            return Err(Error::invalid(
                if metrics.len() > MAX_BATCH_METRICS {
                    "metrics"
                } else if params.len() > MAX_BATCH_PARAMS {
                    "params"
                } else {
                    "tags"
                },
                format!(
                    "a batch takes at most {MAX_BATCH_METRICS} metrics, {MAX_BATCH_PARAMS} params and {MAX_BATCH_TAGS} tags"
                ),
            ));
        }
        for (i, m) in metrics.iter().enumerate() {
            check_key(&format!("metrics[{i}].key"), &m.key)?;
        }
        let mut tx = self.db.begin().await?;
        for (i, p) in params.iter().enumerate() {
            check_key(&format!("params[{i}].key"), &p.key)?;
            if p.value.chars().count() > MAX_PARAM_VALUE {
                return Err(Error::invalid(
                    format!("params[{i}].value"),
                    format!("longer than {MAX_PARAM_VALUE} characters"),
                ));
            }
            Sql::with(
                "INSERT INTO mlflow_run_params (run_id, key, value) VALUES ($1, $2, $3) ON CONFLICT (run_id, key) DO NOTHING",
                [run_id.into(), p.key.clone().into(), p.value.clone().into()],
            )
            .execute(&mut tx)
            .await?;
            let kept: String = col(
                &Sql::with(
                    "SELECT value FROM mlflow_run_params WHERE run_id = $1 AND key = $2",
                    [run_id.into(), p.key.clone().into()],
                )
                .fetch_optional_tx(&mut tx)
                .await?
                .ok_or_else(|| Error::internal("param vanished"))?,
                "value",
            )?;
            if kept != p.value {
                return Err(Error::invalid(
                    format!("params[{i}].value"),
                    format!(
                        "param '{}' of run {run_id} is '{kept}' already: params cannot change (log a new run)",
                        p.key
                    ),
                ));
            }
        }
        for m in metrics {
            Sql::with(
                "INSERT INTO mlflow_metrics (run_id, key, step, at, value, model_id) VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (run_id, key, step, at, value) DO NOTHING",
                [run_id.into(), m.key.clone().into(), m.step.into(), m.timestamp.into(), m.value.into(), m.model_id.clone().into()],
            )
            .execute(&mut tx)
            .await?;
        }
        Self::put_tags(&mut tx, run_id, tags).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn mlflow_delete_run_tag(
        &self,
        who: &Principal,
        team: &TeamRef,
        run_id: &str,
        key: &str,
    ) -> Result<()> {
        self.writable_run(who, team, run_id).await?;
        let mut tx = self.db.begin().await?;
        let n = Sql::with(
            "DELETE FROM mlflow_run_tags WHERE run_id = $1 AND key = $2",
            [run_id.into(), key.into()],
        )
        .execute(&mut tx)
        .await?;
        if n == 0 {
            return Err(Error::not_found("tag", key).with_field("key"));
        }
        tx.commit().await?;
        Ok(())
    }

    /// Appends to a run's JSON list `field` of `column` (its inputs or outputs).
    pub async fn mlflow_append_run_io(
        &self,
        who: &Principal,
        team: &TeamRef,
        run_id: &str,
        column: &str,
        field: &str,
        items: Vec<Value>,
    ) -> Result<()> {
        let row = self.writable_run(who, team, run_id).await?;
        let column = match column {
            "inputs" => "inputs",
            _ => "outputs",
        };
        let mut doc: Value = serde_json::from_str(&col::<String>(&row, column)?)?;
        if let Some(list) = doc.get_mut(field).and_then(Value::as_array_mut) {
            list.extend(items);
        }
        let mut tx = self.db.begin().await?;
        Sql::with(
            &format!("UPDATE mlflow_runs SET {column} = $1 WHERE id = $2"),
            [doc.to_string().into(), run_id.into()],
        )
        .execute(&mut tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn mlflow_set_run_lifecycle(
        &self,
        who: &Principal,
        team: &TeamRef,
        run_id: &str,
        lifecycle: &str,
    ) -> Result<()> {
        self.require_mlflow(who, team, true, "deleting runs")?;
        self.run_row(team, run_id).await?;
        let mut tx = self.db.begin().await?;
        Sql::with(
            "UPDATE mlflow_runs SET lifecycle = $1 WHERE id = $2",
            [lifecycle.into(), run_id.into()],
        )
        .execute(&mut tx)
        .await?;
        let action = if lifecycle == "deleted" { "run.delete" } else { "run.restore" };
        let t = Target {
            team_id: Some(&team.id),
            object_type: "run",
            object_id: run_id,
            object_name: run_id,
        };
        audit::record(&mut tx, who, action, t, json!({})).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn mlflow_run(&self, who: &Principal, team: &TeamRef, run_id: &str) -> Result<Run> {
        self.require_mlflow(who, team, false, "reading runs")?;
        self.run_of(&self.run_row(team, run_id).await?).await
    }

    #[allow(clippy::too_many_arguments)]
    /// The runs of the given experiments, newest first (MLflow's filter language is not
    /// supported: a filter is refused, not ignored).
    pub async fn mlflow_search_runs(
        &self,
        who: &Principal,
        team: &TeamRef,
        experiment_ids: &[String],
        filter: Option<&str>,
        view_type: Option<i64>,
        max_results: Option<i64>,
        page_token: Option<&str>,
    ) -> Result<(Vec<Run>, Option<String>)> {
        self.require_mlflow(who, team, false, "reading runs")?;
        if filter.is_some_and(|f| !f.trim().is_empty()) {
            return Err(Error::invalid(
                "filter",
                "search filters are not supported by Plinth's MLflow API: search without one, or use Plinth's API",
            ));
        }
        let (offset, limit) = page(page_token, max_results, 1000, 50_000)?;
        let mut ids = Vec::new();
        for e in experiment_ids {
            ids.push(self.experiment_id(who, team, e).await?);
        }
        let mut sql = Sql::new("SELECT * FROM mlflow_runs WHERE team_id = ");
        sql.bind(team.id.clone());
        match view_type.unwrap_or(1) {
            1 => {
                sql.push(" AND lifecycle = 'active'");
            }
            2 => {
                sql.push(" AND lifecycle = 'deleted'");
            }
            3 => {}
            _ => {
                return Err(Error::invalid(
                    "run_view_type",
                    "must be ACTIVE_ONLY, DELETED_ONLY or ALL",
                ));
            }
        }
        sql.push(" AND experiment_id IN (");
        for (i, id) in ids.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.bind(id.clone());
        }
        if ids.is_empty() {
            sql.push("NULL");
        }
        sql.push(") ORDER BY start_time DESC, id LIMIT ");
        sql.bind(limit + 1);
        sql.push(" OFFSET ");
        sql.bind(offset);
        let rows = self.db.fetch_all(&sql).await?;
        let next = next_token(offset, limit, rows.len());
        let mut runs = Vec::new();
        for r in rows.iter().take(limit as usize) {
            runs.push(self.run_of(r).await?);
        }
        Ok((runs, next))
    }

    pub async fn mlflow_metric_history(
        &self,
        who: &Principal,
        team: &TeamRef,
        run_id: &str,
        key: &str,
    ) -> Result<Vec<Metric>> {
        self.require_mlflow(who, team, false, "reading runs")?;
        self.run_row(team, run_id).await?;
        let rows = self
            .db
            .fetch_all(&Sql::with(
                "SELECT key, value, at, step, model_id FROM mlflow_metrics WHERE run_id = $1 AND key = $2 ORDER BY step, at",
                [run_id.into(), key.into()],
            ))
            .await?;
        rows.iter().map(metric_from_row).collect()
    }

    fn logged_model(row: &sqlx::any::AnyRow) -> Result<LoggedModel> {
        let id: String = col(row, "id")?;
        let experiment: String = col(row, "experiment_id")?;
        let params: BTreeMap<String, String> =
            serde_json::from_str(&col::<String>(row, "params")?)?;
        let tags: BTreeMap<String, String> = serde_json::from_str(&col::<String>(row, "tags")?)?;
        Ok(LoggedModel {
            info: json!({
                "model_id": id,
                "experiment_id": experiment,
                "name": col::<String>(row, "name")?,
                "creation_timestamp_ms": ms(col(row, "created_at")?),
                "last_updated_timestamp_ms": ms(col(row, "updated_at")?),
                "artifact_uri": format!("mlflow-artifacts:/{experiment}/models/{id}/artifacts"),
                "status": col::<String>(row, "status")?,
                "model_type": col::<String>(row, "model_type")?,
                "source_run_id": col::<Option<String>>(row, "source_run_id")?.unwrap_or_default(),
                "tags": kv(tags),
            }),
            data: json!({"params": kv(params), "metrics": []}),
        })
    }

    async fn logged_model_row(&self, team: &TeamRef, id: &str) -> Result<sqlx::any::AnyRow> {
        self.db
            .fetch_optional(&Sql::with(
                "SELECT * FROM mlflow_logged_models WHERE id = $1 AND team_id = $2",
                [id.into(), team.id.clone().into()],
            ))
            .await?
            .ok_or_else(|| Error::not_found("logged model", id).with_field("model_id"))
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn mlflow_create_logged_model(
        &self,
        who: &Principal,
        team: &TeamRef,
        experiment_id: &str,
        name: Option<&str>,
        model_type: Option<&str>,
        source_run_id: Option<&str>,
        params: &[KeyValue],
        tags: &[KeyValue],
    ) -> Result<LoggedModel> {
        self.require_mlflow(who, team, true, "logging models")?;
        let experiment = self.experiment_id(who, team, experiment_id).await?;
        if let Some(run) = source_run_id.filter(|r| !r.is_empty()) {
            self.run_row(team, run).await?;
        }
        let id = format!("m-{}", uuid::Uuid::now_v7().simple());
        let name = name.filter(|n| !n.is_empty()).unwrap_or("model");
        check_text("name", name, 250)?;
        let now = now_micros();
        let mut tx = self.db.begin().await?;
        Sql::with(
            "INSERT INTO mlflow_logged_models (id, team_id, experiment_id, name, status, model_type, source_run_id, params, tags, created_at, created_by, updated_at)
             VALUES ($1, $2, $3, $4, 'LOGGED_MODEL_PENDING', $5, $6, $7, $8, $9, $10, $9)",
            [
                id.clone().into(), team.id.clone().into(), experiment.into(), name.into(), model_type.unwrap_or("").into(),
                source_run_id.filter(|r| !r.is_empty()).into(), tags_json(params)?.into(), tags_json(tags)?.into(), now.into(), who.name.clone().into(),
            ],
        )
        .execute(&mut tx)
        .await?;
        let t = Target {
            team_id: Some(&team.id),
            object_type: "logged_model",
            object_id: &id,
            object_name: name,
        };
        audit::record(
            &mut tx,
            who,
            "logged_model.create",
            t,
            json!({"source_run_id": source_run_id}),
        )
        .await?;
        tx.commit().await?;
        Self::logged_model(&self.logged_model_row(team, &id).await?)
    }

    pub async fn mlflow_logged_model(
        &self,
        who: &Principal,
        team: &TeamRef,
        id: &str,
    ) -> Result<LoggedModel> {
        self.require_mlflow(who, team, false, "reading models")?;
        Self::logged_model(&self.logged_model_row(team, id).await?)
    }

    /// Changes a logged model: its status, and params and tags added.
    pub async fn mlflow_update_logged_model(
        &self,
        who: &Principal,
        team: &TeamRef,
        id: &str,
        status: Option<&str>,
        params: &[KeyValue],
        tags: &[KeyValue],
    ) -> Result<LoggedModel> {
        self.require_mlflow(who, team, true, "logging models")?;
        let row = self.logged_model_row(team, id).await?;
        let status = match status {
            None => col::<String>(&row, "status")?,
            Some(
                s @ ("LOGGED_MODEL_PENDING" | "LOGGED_MODEL_READY" | "LOGGED_MODEL_UPLOAD_FAILED"),
            ) => s.to_string(),
            Some(_) => {
                return Err(Error::invalid(
                    "status",
                    "must be LOGGED_MODEL_PENDING, LOGGED_MODEL_READY or LOGGED_MODEL_UPLOAD_FAILED",
                ));
            }
        };
        let mut p: BTreeMap<String, String> =
            serde_json::from_str(&col::<String>(&row, "params")?)?;
        let mut t: BTreeMap<String, String> = serde_json::from_str(&col::<String>(&row, "tags")?)?;
        for (i, kv) in params.iter().enumerate() {
            check_key(&format!("params[{i}].key"), &kv.key)?;
            p.insert(kv.key.clone(), kv.value.clone());
        }
        for (i, kv) in tags.iter().enumerate() {
            check_key(&format!("tags[{i}].key"), &kv.key)?;
            t.insert(kv.key.clone(), kv.value.clone());
        }
        let mut tx = self.db.begin().await?;
        Sql::with(
            "UPDATE mlflow_logged_models SET status = $1, params = $2, tags = $3, updated_at = $4 WHERE id = $5",
            [status.into(), serde_json::to_string(&p)?.into(), serde_json::to_string(&t)?.into(), now_micros().into(), id.into()],
        )
        .execute(&mut tx)
        .await?;
        tx.commit().await?;
        Self::logged_model(&self.logged_model_row(team, id).await?)
    }

    pub async fn mlflow_search_logged_models(
        &self,
        who: &Principal,
        team: &TeamRef,
        experiment_ids: &[String],
        max_results: Option<i64>,
        page_token: Option<&str>,
    ) -> Result<(Vec<LoggedModel>, Option<String>)> {
        self.require_mlflow(who, team, false, "reading models")?;
        let (offset, limit) = page(page_token, max_results, 50, 50)?;
        let mut sql = Sql::new("SELECT * FROM mlflow_logged_models WHERE team_id = ");
        sql.bind(team.id.clone());
        if !experiment_ids.is_empty() {
            sql.push(" AND experiment_id IN (");
            for (i, e) in experiment_ids.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.bind(self.experiment_id(who, team, e).await?);
            }
            sql.push(")");
        }
        sql.push(" ORDER BY created_at DESC, id LIMIT ");
        sql.bind(limit + 1);
        sql.push(" OFFSET ");
        sql.bind(offset);
        let rows = self.db.fetch_all(&sql).await?;
        let next = next_token(offset, limit, rows.len());
        let items =
            rows.iter().take(limit as usize).map(Self::logged_model).collect::<Result<_>>()?;
        Ok((items, next))
    }
}
