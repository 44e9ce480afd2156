//! Durable background jobs. A job is a row in `jobs` before the API answers 202; one worker task
//! claims queued jobs in order, runs them, and records progress and the result. A job that was
//! running when the process stopped is queued again at the next start, so no accepted job is
//! lost and none stays "running" forever.
//!
//! Assumes one Plinth process per database runs jobs (replicas claim atomically, but only the
//! restarting process requeues its own running jobs at start).

use std::sync::Arc;
use std::time::Duration;

use plinth_api::governance::JobStatus;
use tokio::sync::Notify;

use crate::Plinth;
use crate::error::{Error, Result};
use crate::store::{Sql, Tx, col};
use crate::util::{new_id, now_micros};

/// Wakes the worker when a job is queued, and stops it at shutdown.
#[derive(Default)]
pub(crate) struct JobSignals {
    pub wake: Notify,
    pub stop: std::sync::atomic::AtomicBool,
}

pub(crate) type Signals = Arc<JobSignals>;

/// The kinds of job the worker knows.
pub(crate) const EVALUATION: &str = "evaluation";

impl Plinth {
    /// Queues a job inside the caller's transaction; the worker is woken after commit by
    /// [`Plinth::wake_jobs`].
    pub(crate) async fn enqueue_job(
        &self,
        tx: &mut Tx,
        team_id: &str,
        kind: &str,
        params: &serde_json::Value,
        by: &str,
    ) -> Result<String> {
        let id = new_id("job");
        Sql::with(
            "INSERT INTO jobs (id, team_id, kind, status, progress, params, attempts, created_at, created_by)
             VALUES ($1, $2, $3, 'queued', 0, $4, 0, $5, $6)",
            [id.clone().into(), team_id.into(), kind.into(), params.to_string().into(), now_micros().into(), by.into()],
        )
        .execute(tx)
        .await?;
        Ok(id)
    }

    pub(crate) fn wake_jobs(&self) {
        self.jobs.wake.notify_one();
    }

    pub(crate) async fn set_progress(&self, id: &str, progress: f64) -> Result<()> {
        let mut tx = self.db.begin().await?;
        Sql::with("UPDATE jobs SET progress = $1 WHERE id = $2", [progress.into(), id.into()])
            .execute(&mut tx)
            .await?;
        tx.commit().await
    }

    /// Requeues the jobs a previous run left running, then starts the worker.
    pub(crate) async fn start_jobs(&self) -> Result<()> {
        let mut tx = self.db.begin().await?;
        let n =
            Sql::new("UPDATE jobs SET status = 'queued', progress = 0 WHERE status = 'running'")
                .execute(&mut tx)
                .await?;
        tx.commit().await?;
        if n > 0 {
            tracing::info!(jobs = n, "requeued jobs interrupted by the last stop");
        }
        let core = self.clone();
        tokio::spawn(async move { core.job_loop().await });
        Ok(())
    }

    async fn job_loop(self) {
        use std::sync::atomic::Ordering;
        while !self.jobs.stop.load(Ordering::Relaxed) {
            match self.claim_job().await {
                Ok(Some((id, kind, params))) => {
                    let outcome = match kind.as_str() {
                        EVALUATION => self.run_evaluation(&id, &params).await,
                        crate::features::MATERIALIZE => {
                            self.run_materialization(&id, &params).await
                        }
                        other => Err(Error::internal(format!("unknown job kind {other}"))),
                    };
                    if let Err(e) = self.finish_job(&id, outcome).await {
                        tracing::error!(job = id, error = %e, "cannot record a job's outcome");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
                Ok(None) => {
                    let _ = tokio::time::timeout(Duration::from_secs(1), self.jobs.wake.notified())
                        .await;
                }
                Err(e) => {
                    if self.jobs.stop.load(Ordering::Relaxed) {
                        break;
                    }
                    tracing::warn!(error = %e, "cannot claim a job; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    async fn claim_job(&self) -> Result<Option<(String, String, serde_json::Value)>> {
        let mut tx = self.db.begin().await?;
        let row = Sql::with(
            "UPDATE jobs SET status = 'running', started_at = $1, attempts = attempts + 1
             WHERE id = (SELECT id FROM jobs WHERE status = 'queued' ORDER BY created_at, id LIMIT 1) AND status = 'queued'
             RETURNING id, kind, params",
            [now_micros().into()],
        )
        .fetch_optional_tx(&mut tx)
        .await?;
        tx.commit().await?;
        let Some(row) = row else { return Ok(None) };
        let params: String = col(&row, "params")?;
        Ok(Some((col(&row, "id")?, col(&row, "kind")?, serde_json::from_str(&params)?)))
    }

    async fn finish_job(&self, id: &str, outcome: Result<serde_json::Value>) -> Result<()> {
        let (status, result, error) = match outcome {
            Ok(v) => (JobStatus::Succeeded, Some(v.to_string()), None),
            Err(e) => {
                tracing::info!(job = id, error = %e, "job failed");
                (JobStatus::Failed, None, Some(e.message))
            }
        };
        let mut tx = self.db.begin().await?;
        Sql::with(
            "UPDATE jobs SET status = $1, progress = 1, result = $2, error = $3, finished_at = $4 WHERE id = $5",
            [status.as_str().into(), result.into(), error.into(), now_micros().into(), id.into()],
        )
        .execute(&mut tx)
        .await?;
        tx.commit().await
    }
}
