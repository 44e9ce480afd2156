//! The prediction log of several replicas: each writes its own segments on its own disk (as a
//! single process does), closes each after [`ROLL`], and ships closed segments to the object
//! store the replicas share, under `predictions/<deployment>/<hour>/<sha256>.jsonl`, deleting
//! its local copy once the store holds it. Reads merge the store's segments of the hours asked
//! for with this replica's unshipped ones, in time order: a record is readable from every
//! replica within about `ROLL + SHIP_INTERVAL` of its prediction.
//!
//! Naming a segment by its content makes shipping idempotent: a replica that dies after the
//! store took a segment but before deleting its copy ships it again after restart, and the store
//! answers that the key is there, which counts as shipped. Retention applies to the store's
//! segments too, by their hour and size, every [`PRUNE_INTERVAL`].

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncBufReadExt;

use super::{HOUR_US, Picked, PredictionLog, SegmentFile, segments};
use crate::store::artifacts::{ArtifactStore, Staging};

/// How long a replica appends to one segment before closing it for shipping.
pub const ROLL: Duration = Duration::from_secs(10);
/// How often closed segments are shipped.
const SHIP_INTERVAL: Duration = Duration::from_secs(2);
/// How often the store's segments are pruned to each deployment's retention.
const PRUNE_INTERVAL: Duration = Duration::from_secs(600);
/// Reads spanning more hours than this list the deployment's whole prefix once, not hour by hour.
const HOURS_LISTED_ONE_BY_ONE: i64 = 48;

/// The object store the replicas share, and where this replica stages what it ships.
#[derive(Clone)]
pub struct Shared {
    pub store: Arc<dyn ArtifactStore>,
    pub staging: Staging,
}

fn key_prefix(deployment_id: &str) -> String {
    format!("predictions/{deployment_id}")
}

/// The hour of a segment's key (`predictions/<deployment>/<hour>/<sha256>.jsonl`).
fn hour_of_key(key: &str) -> Option<i64> {
    key.rsplit('/').nth(1)?.parse().ok()
}

/// Ships closed segments every [`SHIP_INTERVAL`] and prunes the store's every
/// [`PRUNE_INTERVAL`], until the log is dropped.
pub(super) fn start(log: &Arc<PredictionLog>) {
    let weak = Arc::downgrade(log);
    tokio::spawn(async move {
        let mut last_prune = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(SHIP_INTERVAL).await;
            let Some(log) = weak.upgrade() else { return };
            if let Err(e) = log.ship().await {
                tracing::warn!(error = %e, "cannot ship the prediction log's segments; retrying");
            }
            if last_prune.elapsed() >= PRUNE_INTERVAL {
                last_prune = tokio::time::Instant::now();
                if let Err(e) = log.prune_shared(crate::util::now_micros()).await {
                    tracing::warn!(error = %e, "cannot apply retention to the shipped log");
                }
            }
        }
    });
}

impl PredictionLog {
    /// This replica's segments that no writer holds open, by deployment.
    fn closed_segments(&self) -> std::io::Result<Vec<(String, SegmentFile)>> {
        // Under the files lock: a segment created after the listing is open, so not listed.
        let files = self.files.lock().expect("log files");
        let open: std::collections::HashSet<&std::path::Path> =
            files.values().flat_map(|h| h.values()).map(|s| s.path.as_path()).collect();
        let mut out = Vec::new();
        for dir in std::fs::read_dir(&self.dir)?.flatten() {
            let Some(deployment) = dir.file_name().to_str().map(str::to_string) else { continue };
            for f in segments(&dir.path())? {
                if !open.contains(f.path.as_path()) {
                    out.push((deployment.clone(), f));
                }
            }
        }
        Ok(out)
    }

    /// Ships every closed segment to the shared store and deletes it here; answers how many
    /// went. (The writer closes each segment after [`ROLL`].)
    pub async fn ship(self: &Arc<Self>) -> crate::Result<usize> {
        let Some(shared) = &self.shared else { return Ok(0) };
        let log = self.clone();
        let closed = tokio::task::spawn_blocking(move || log.closed_segments())
            .await
            .map_err(crate::Error::internal)??;
        let mut shipped = 0;
        for (deployment, f) in closed {
            let mut file = match tokio::fs::File::open(&f.path).await {
                Ok(file) => file,
                // Retention deleted it meanwhile.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            let staged = shared.staging.receive(&mut file, u64::MAX).await?;
            if staged.size > 0 {
                let key = format!("{}/{}/{}.jsonl", key_prefix(&deployment), f.hour, staged.sha256);
                match shared.store.put(&key, staged).await {
                    Ok(()) => {}
                    // Shipped before a restart: the same bytes are there.
                    Err(e) if e.code == plinth_api::Code::Conflict => {}
                    Err(e) => return Err(e),
                }
            }
            match tokio::fs::remove_file(&f.path).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
            shipped += 1;
        }
        Ok(shipped)
    }

    /// Closes every open segment and ships everything (at shutdown).
    pub async fn ship_all(self: &Arc<Self>) -> crate::Result<usize> {
        if self.shared.is_none() {
            return Ok(0);
        }
        let log = self.clone();
        tokio::task::spawn_blocking(move || {
            log.flush();
            let mut files = log.files.lock().expect("log files");
            files.clear();
        })
        .await
        .map_err(crate::Error::internal)?;
        self.ship().await
    }

    /// Deletes the store's segments past each deployment's age limit as of `now`
    /// (microseconds), then its oldest while its shipped log is over its size. Answers how many
    /// went.
    pub async fn prune_shared(&self, now: i64) -> crate::Result<usize> {
        let Some(shared) = &self.shared else { return Ok(0) };
        let mut by_deployment: std::collections::BTreeMap<String, Vec<(i64, String, u64)>> =
            Default::default();
        for l in shared.store.list("predictions").await? {
            let Some(deployment) = l.key.split('/').nth(1) else { continue };
            let Some(hour) = hour_of_key(&l.key) else { continue };
            by_deployment.entry(deployment.to_string()).or_default().push((hour, l.key, l.size));
        }
        let mut removed = 0;
        for (deployment, mut segs) in by_deployment {
            let r = self.retention_of(&deployment);
            segs.sort();
            let oldest_kept = now - i64::from(r.max_age_hours) * HOUR_US;
            let mut total: u64 = segs.iter().map(|s| s.2).sum();
            for (hour, key, size) in &segs {
                let too_old = (hour + 1) * HOUR_US <= oldest_kept;
                if !too_old && total <= r.max_bytes {
                    break;
                }
                shared.store.delete(key).await?;
                total -= size;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

impl Shared {
    /// Adds the store's records of a deployment in `picked`'s hours.
    pub(super) async fn read(&self, deployment_id: &str, picked: &mut Picked) -> crate::Result<()> {
        let prefix = key_prefix(deployment_id);
        let (first, last) = (picked.since.div_euclid(HOUR_US), picked.until.div_euclid(HOUR_US));
        let keys: Vec<String> = if last - first <= HOURS_LISTED_ONE_BY_ONE {
            let mut keys = Vec::new();
            for hour in first..=last {
                keys.extend(
                    self.store.list(&format!("{prefix}/{hour}")).await?.into_iter().map(|l| l.key),
                );
            }
            keys
        } else {
            self.store
                .list(&prefix)
                .await?
                .into_iter()
                .map(|l| l.key)
                .filter(|k| hour_of_key(k).is_some_and(|h| picked.wants_hour(h)))
                .collect()
        };
        for key in keys {
            let reader = match self.store.open(&key).await {
                Ok(r) => r,
                // Pruned meanwhile.
                Err(e) if e.code == plinth_api::Code::NotFound => continue,
                Err(e) => return Err(e),
            };
            let mut lines = tokio::io::BufReader::new(reader.reader).lines();
            while let Some(line) = lines.next_line().await? {
                picked.line(&line);
            }
        }
        Ok(())
    }
}
