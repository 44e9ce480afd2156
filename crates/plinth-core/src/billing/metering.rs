//! Metering: what each team uses, per model, deployment and version, month by month.
//!
//! Nothing is written on a prediction's path. The serving engine already counts every
//! version's requests, answered rows and compute in memory (each batch's run time: a batch
//! runs on its thread without yielding, so that is the CPU time it took unless the OS
//! preempted the thread, an upper bound; reading the thread's CPU clock instead costs two
//! system calls a batch, 5 % of single-row throughput on a VM); each health rollup (every [`crate::serving::figures::PUBLISH_EVERY`])
//! adds what changed since the last one to `usage_months` in the same transaction as the
//! health row. Rows are added to (`SET n = n + excluded.n`), never overwritten, so replicas add
//! up and a restarted process starts from zero without losing what it flushed; a crash loses at
//! most the figures since the last rollup (a few seconds of traffic).
//!
//! What else is metered: each loaded model's memory (its artifact's bytes for as long as it
//! is loaded, sampled at each rollup), training compute per run (wall time of the training
//! step times the threads it was given: the vCPUs the run held, OpenCost's allocation), and
//! storage (artifacts by model, datasets, each deployment's prediction log) sampled every hour
//! as bytes held for that hour.

use std::collections::BTreeMap;

use plinth_api::billing::{Usage, UsageItem, UsageTotals};
use serde_json::json;

use super::MonthId;
use crate::Plinth;
use crate::auth::Principal;
use crate::error::Result;
use crate::serving::engine::Live;
use crate::serving::figures::Figures;
use crate::store::{Sql, Tx, col};
use crate::util::now_micros;

pub(crate) const METER_STORAGE: &str = "billing.meter_storage";

/// Seconds of an hour (storage is sampled hourly), and of the 730-hour month GB-months are
/// counted in (OpenCost's).
const HOUR_SECONDS: i64 = 3600;
pub(crate) const MONTH_HOURS: f64 = 730.0;

/// What one row of the ledger adds.
#[derive(Debug, Default, Clone)]
pub(crate) struct UsageAdd<'a> {
    pub team_id: &'a str,
    pub month: MonthId,
    pub item: &'a str,
    pub model: &'a str,
    pub subject: &'a str,
    pub version: u32,
    pub requests: u64,
    pub rows_ok: u64,
    pub cpu_us: u64,
    pub byte_seconds: u64,
    pub runs: u64,
}

/// Adds to the team's ledger, in the caller's transaction.
pub(crate) async fn add_usage(tx: &mut Tx, u: &UsageAdd<'_>) -> Result<()> {
    let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    Sql::with(
        "INSERT INTO usage_months (team_id, month, item, model, subject, version, requests, rows_ok, cpu_us, byte_seconds, runs)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (team_id, month, item, model, subject, version) DO UPDATE SET
           requests = usage_months.requests + excluded.requests,
           rows_ok = usage_months.rows_ok + excluded.rows_ok,
           cpu_us = usage_months.cpu_us + excluded.cpu_us,
           byte_seconds = usage_months.byte_seconds + excluded.byte_seconds,
           runs = usage_months.runs + excluded.runs",
        [
            u.team_id.into(),
            u.month.to_string().into(),
            u.item.into(),
            u.model.into(),
            u.subject.into(),
            i64::from(u.version).into(),
            n(u.requests).into(),
            n(u.rows_ok).into(),
            n(u.cpu_us).into(),
            n(u.byte_seconds).into(),
            n(u.runs).into(),
        ],
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// Adds a deployment's serving since the last rollup (`delta`) and its loaded models' memory
/// over `elapsed_us` (read off `current`'s gauges) to the ledger of the month `now` falls in.
pub(crate) async fn meter_serving(
    tx: &mut Tx,
    live: &Live,
    current: &Figures,
    delta: &Figures,
    elapsed_us: u64,
    now: i64,
) -> Result<()> {
    let month = MonthId::of(now);
    let sizes: BTreeMap<u32, u64> = live
        .runners()
        .chain(&live.shadows)
        .map(|r| (r.source.version, r.source.artifact_size))
        .collect();
    for v in &current.versions {
        let d = delta.versions.iter().find(|d| d.version == v.version && d.shadow == v.shadow);
        let memory = if v.loaded {
            let bytes = u128::from(sizes.get(&v.version).copied().unwrap_or(0));
            (bytes * u128::from(elapsed_us) / 1_000_000) as u64
        } else {
            0
        };
        let (requests, rows_ok, cpu_us) =
            d.map_or((0, 0, 0), |d| (d.requests, d.rows_ok, d.cpu_ns / 1000));
        if requests == 0 && rows_ok == 0 && cpu_us == 0 && memory == 0 {
            continue;
        }
        add_usage(
            tx,
            &UsageAdd {
                team_id: &live.team_id,
                month,
                item: if v.shadow { "shadow" } else { "predictions" },
                model: &live.model,
                subject: &live.environment,
                version: v.version,
                requests,
                rows_ok,
                cpu_us,
                byte_seconds: memory,
                runs: 0,
            },
        )
        .await?;
    }
    Ok(())
}

/// The storage sampler, every hour.
pub(crate) struct MeterStorage;

impl crate::tasks::TaskKind for MeterStorage {
    fn name(&self) -> &'static str {
        METER_STORAGE
    }

    fn run<'a>(
        &'a self,
        core: &'a Plinth,
        _task: &'a crate::tasks::TaskRun,
    ) -> futures_util::future::BoxFuture<'a, Result<serde_json::Value>> {
        Box::pin(async move {
            let rows = core.meter_storage_at(now_micros()).await?;
            Ok(json!({ "rows": rows }))
        })
    }
}

impl Plinth {
    /// Adds an hour of every team's storage, as held now, to the month of `now`
    /// (microseconds): model artifacts by model, datasets by dataset, the prediction log by
    /// deployment. Answers how many ledger rows it added to. The schedule calls it hourly;
    /// tests drive it with their own clock.
    pub async fn meter_storage_at(&self, now: i64) -> Result<usize> {
        if !self.engine.metering {
            return Ok(0);
        }
        let month = MonthId::of(now);
        // (team id, item, model, subject, bytes): artifacts by model, datasets by dataset.
        let mut held: Vec<(String, String, String, String, u64)> = Vec::new();
        for r in self
            .db
            .fetch_all(&Sql::new(
                "SELECT v.team_id, 'artifacts' AS item, m.name AS model, '' AS subject, CAST(SUM(v.artifact_size) AS BIGINT) AS bytes
                   FROM model_versions v JOIN models m ON m.id = v.model_id GROUP BY v.team_id, m.name
                 UNION ALL
                 SELECT d.team_id, 'datasets', '', d.name, CAST(SUM(v.size_bytes) AS BIGINT)
                   FROM dataset_versions v JOIN datasets d ON d.id = v.dataset_id GROUP BY d.team_id, d.name",
            ))
            .await?
        {
            held.push((
                col(&r, "team_id")?,
                col(&r, "item")?,
                col(&r, "model")?,
                col(&r, "subject")?,
                col::<i64>(&r, "bytes")?.max(0) as u64,
            ));
        }
        let logs = self.engine.log.bytes_by_deployment().await?;
        for r in self
            .db
            .fetch_all(&Sql::new(
                "SELECT d.id, d.team_id, d.environment, m.name FROM deployments d JOIN models m ON m.id = d.model_id",
            ))
            .await?
        {
            let id: String = col(&r, "id")?;
            if let Some(bytes) = logs.get(&id).copied().filter(|b| *b > 0) {
                held.push((
                    col(&r, "team_id")?,
                    "prediction_log".into(),
                    col(&r, "name")?,
                    col(&r, "environment")?,
                    bytes,
                ));
            }
        }
        let mut tx = self.db.begin().await?;
        let mut added = 0;
        for (team_id, item, model, subject, bytes) in &held {
            if *bytes == 0 {
                continue;
            }
            add_usage(
                &mut tx,
                &UsageAdd {
                    team_id,
                    month,
                    item,
                    model,
                    subject,
                    byte_seconds: bytes * HOUR_SECONDS as u64,
                    ..UsageAdd::default()
                },
            )
            .await?;
            added += 1;
        }
        tx.commit().await?;
        Ok(added)
    }

    /// Adds a finished training run's compute to its team's ledger.
    pub(crate) async fn meter_training(
        &self,
        team_id: &str,
        model: &str,
        recipe: &str,
        vcpu_us: u64,
    ) -> Result<()> {
        if !self.engine.metering {
            return Ok(());
        }
        let mut tx = self.db.begin().await?;
        add_usage(
            &mut tx,
            &UsageAdd {
                team_id,
                month: MonthId::of(now_micros()),
                item: "training",
                model,
                subject: recipe,
                cpu_us: vcpu_us,
                runs: 1,
                ..UsageAdd::default()
            },
        )
        .await?;
        tx.commit().await
    }

    /// The bytes a team stores now: its model artifacts and datasets.
    pub(crate) async fn stored_bytes(&self, team_id: &str) -> Result<u64> {
        let row = self
            .db
            .fetch_optional(&Sql::with(
                "SELECT CAST((SELECT COALESCE(SUM(artifact_size), 0) FROM model_versions WHERE team_id = $1)
                      + (SELECT COALESCE(SUM(v.size_bytes), 0) FROM dataset_versions v JOIN datasets d ON d.id = v.dataset_id WHERE d.team_id = $1) AS BIGINT) AS bytes",
                [team_id.into()],
            ))
            .await?;
        Ok(row.map(|r| col::<i64>(&r, "bytes")).transpose()?.unwrap_or(0).max(0) as u64)
    }

    /// The ledger rows of a team's month.
    pub(crate) async fn usage_rows(&self, team_id: &str, month: MonthId) -> Result<Vec<UsageRow>> {
        self.db
            .fetch_all(&Sql::with(
                "SELECT item, model, subject, version, requests, rows_ok, cpu_us, byte_seconds, runs FROM usage_months
                 WHERE team_id = $1 AND month = $2 ORDER BY item, model, subject, version",
                [team_id.into(), month.to_string().into()],
            ))
            .await?
            .iter()
            .map(|r| {
                let u = |name: &str| col::<i64>(r, name).map(|v| v.max(0) as u64);
                Ok(UsageRow {
                    item: col(r, "item")?,
                    model: col(r, "model")?,
                    subject: col(r, "subject")?,
                    version: u("version")? as u32,
                    requests: u("requests")?,
                    rows_ok: u("rows_ok")?,
                    cpu_us: u("cpu_us")?,
                    byte_seconds: u("byte_seconds")?,
                    runs: u("runs")?,
                })
            })
            .collect()
    }

    /// Predictions (rows answered, shadows left out) every team made in a month, as the
    /// ledger holds them: `team id -> rows`.
    pub(crate) async fn predictions_by_team(
        &self,
        month: MonthId,
    ) -> Result<BTreeMap<String, u64>> {
        self.db
            .fetch_all(&Sql::with(
                "SELECT team_id, CAST(SUM(rows_ok) AS BIGINT) AS n FROM usage_months WHERE month = $1 AND item = 'predictions' GROUP BY team_id",
                [month.to_string().into()],
            ))
            .await?
            .iter()
            .map(|r| Ok((col(r, "team_id")?, col::<i64>(r, "n")?.max(0) as u64)))
            .collect()
    }

    /// What a team used in a month, per model, deployment and version.
    pub async fn usage(&self, who: &Principal, team: &str, month: Option<&str>) -> Result<Usage> {
        let team = self.team_ref(who, team).await?;
        who.require(&team, plinth_api::identity::TeamRole::Viewer, "reading usage")?;
        let month = MonthId::or_now("month", month, now_micros())?;
        let rows = self.usage_rows(&team.id, month).await?;
        let mut totals = UsageTotals::default();
        let items = rows
            .iter()
            .map(|r| {
                let cpu_seconds = r.cpu_us as f64 / 1e6;
                let gb_hours = r.byte_seconds as f64 / 1e9 / HOUR_SECONDS as f64;
                match r.item.as_str() {
                    "predictions" | "shadow" => {
                        if r.item == "predictions" {
                            totals.requests += r.requests;
                            totals.predictions += r.rows_ok;
                        }
                        totals.serving_cpu_seconds += cpu_seconds;
                        totals.memory_gb_hours += gb_hours;
                    }
                    "training" => {
                        totals.training_cpu_seconds += cpu_seconds;
                        totals.training_runs += r.runs;
                    }
                    _ => totals.storage_gb_months += gb_hours / MONTH_HOURS,
                }
                UsageItem {
                    item: r.item.clone(),
                    model: Some(r.model.clone()).filter(|m| !m.is_empty()),
                    subject: Some(r.subject.clone()).filter(|s| !s.is_empty()),
                    version: Some(r.version).filter(|v| *v > 0),
                    requests: r.requests,
                    predictions: r.rows_ok,
                    cpu_seconds,
                    gb_hours,
                    runs: r.runs,
                }
            })
            .collect();
        Ok(Usage { team: team.name, month: month.to_string(), items, totals })
    }
}

/// One row of a team's monthly ledger.
#[derive(Debug, Clone)]
pub(crate) struct UsageRow {
    pub item: String,
    pub model: String,
    pub subject: String,
    pub version: u32,
    pub requests: u64,
    pub rows_ok: u64,
    pub cpu_us: u64,
    pub byte_seconds: u64,
    pub runs: u64,
}
