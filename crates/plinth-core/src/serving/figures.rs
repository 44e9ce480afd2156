//! A deployment's figures across replicas. Each replica counts its own requests in memory
//! ([`super::metrics`]) and publishes them every [`PUBLISH_EVERY`] to `replica_figures`, one row
//! per replica and deployment; the API's figures of a deployment are this replica's live ones
//! added to the rows other replicas published within [`ALIVE_WITHIN`] (a replica gone longer
//! drops out, as a scrape target does). Counters and latency buckets add up exactly; latency
//! quantiles are read off the added buckets.

use std::collections::BTreeMap;
use std::time::Duration;

use plinth_api::serving::{DeploymentMetrics, LatencySummary, VersionMetrics};
use serde::{Deserialize, Serialize};

use super::metrics::{Histogram, quantile};
use crate::Plinth;
use crate::error::Result;
use crate::store::{Sql, col};
use crate::util::now_micros;

/// How often a replica publishes its figures.
pub const PUBLISH_EVERY: Duration = Duration::from_secs(5);
/// Rows older than this are from replicas that stopped.
const ALIVE_WITHIN: Duration = Duration::from_secs(60);

/// One replica's figures of one deployment, as published.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Figures {
    pub requests: u64,
    pub rows: u64,
    pub errors: BTreeMap<String, u64>,
    /// Request latency: counts of [`Histogram::latency_seconds`]'s buckets, and their sum.
    pub latency_counts: Vec<u64>,
    pub latency_sum_micro: u64,
    pub log_dropped: u64,
    pub versions: Vec<VersionFigures>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VersionFigures {
    pub version: u32,
    pub shadow: bool,
    pub requests: u64,
    pub batches: u64,
    pub batch_rows: u64,
    /// Rows answered, and the time the batches ran on their threads (metering).
    #[serde(default)]
    pub rows_ok: u64,
    #[serde(default)]
    pub cpu_ns: u64,
    pub queue_depth: u64,
    pub workers: u64,
    pub loaded: bool,
    pub loads: u64,
    pub last_load_us: Option<u64>,
}

impl VersionFigures {
    pub fn mean_batch_rows(&self) -> f64 {
        if self.batches == 0 { 0.0 } else { self.batch_rows as f64 / self.batches as f64 }
    }

    /// Adds another's counters (requests, batches, rows, compute), not its gauges.
    pub(crate) fn add_counters(&mut self, o: &VersionFigures) {
        self.requests += o.requests;
        self.batches += o.batches;
        self.batch_rows += o.batch_rows;
        self.rows_ok += o.rows_ok;
        self.cpu_ns += o.cpu_ns;
    }

    /// Leaves out what is a state, not a count (queue, workers, loading).
    pub(crate) fn forget_gauges(&mut self) {
        self.queue_depth = 0;
        self.workers = 0;
        self.loaded = false;
        self.loads = 0;
        self.last_load_us = None;
    }
}

impl Figures {
    /// Quantile `q` of request latency in milliseconds (to the microsecond), read off the
    /// buckets; 0 without requests.
    pub fn latency_ms(&self, q: f64) -> f64 {
        if self.latency_counts.iter().all(|n| *n == 0) {
            return 0.0;
        }
        let bounds = Histogram::latency_seconds();
        (quantile(bounds.bounds(), &self.latency_counts, q) * 1e6).round() / 1e3
    }

    /// Mean request latency in milliseconds (to the microsecond).
    pub fn mean_latency_ms(&self) -> f64 {
        let n: u64 = self.latency_counts.iter().sum();
        if n == 0 { 0.0 } else { (self.latency_sum_micro as f64 / n as f64).round() / 1e3 }
    }

    /// What was counted since `before` (this process's earlier figures of the same
    /// deployment): counters subtracted, gauges left out. Counters that went back (the
    /// deployment's figures started again) count from zero.
    pub fn since(&self, before: Option<&Figures>) -> Figures {
        let Some(b) = before.filter(|b| b.requests <= self.requests) else {
            let mut all = self.clone();
            all.versions.iter_mut().for_each(VersionFigures::forget_gauges);
            return all;
        };
        let sub_map = |now: &BTreeMap<String, u64>, then: &BTreeMap<String, u64>| {
            now.iter()
                .map(|(k, v)| (k.clone(), v.saturating_sub(then.get(k).copied().unwrap_or(0))))
                .filter(|(_, v)| *v > 0)
                .collect()
        };
        Figures {
            requests: self.requests - b.requests,
            rows: self.rows.saturating_sub(b.rows),
            errors: sub_map(&self.errors, &b.errors),
            latency_counts: self
                .latency_counts
                .iter()
                .enumerate()
                .map(|(i, n)| n.saturating_sub(b.latency_counts.get(i).copied().unwrap_or(0)))
                .collect(),
            latency_sum_micro: self.latency_sum_micro.saturating_sub(b.latency_sum_micro),
            log_dropped: self.log_dropped.saturating_sub(b.log_dropped),
            versions: self
                .versions
                .iter()
                .map(|v| {
                    let then =
                        b.versions.iter().find(|o| o.version == v.version && o.shadow == v.shadow);
                    let mut d = v.clone();
                    d.forget_gauges();
                    if let Some(t) = then.filter(|t| t.requests <= v.requests) {
                        d.requests -= t.requests;
                        d.batches = d.batches.saturating_sub(t.batches);
                        d.batch_rows = d.batch_rows.saturating_sub(t.batch_rows);
                        d.rows_ok = d.rows_ok.saturating_sub(t.rows_ok);
                        d.cpu_ns = d.cpu_ns.saturating_sub(t.cpu_ns);
                    }
                    d
                })
                .collect(),
        }
    }

    /// Adds another replica's figures to these.
    pub fn add(&mut self, other: &Figures) {
        self.requests += other.requests;
        self.rows += other.rows;
        for (code, n) in &other.errors {
            *self.errors.entry(code.clone()).or_default() += n;
        }
        if self.latency_counts.len() < other.latency_counts.len() {
            self.latency_counts.resize(other.latency_counts.len(), 0);
        }
        for (mine, theirs) in self.latency_counts.iter_mut().zip(&other.latency_counts) {
            *mine += theirs;
        }
        self.latency_sum_micro += other.latency_sum_micro;
        self.log_dropped += other.log_dropped;
        for v in &other.versions {
            match self.versions.iter_mut().find(|m| m.version == v.version && m.shadow == v.shadow)
            {
                Some(m) => {
                    m.add_counters(v);
                    m.queue_depth += v.queue_depth;
                    m.workers += v.workers;
                    m.loaded |= v.loaded;
                    m.loads += v.loads;
                    m.last_load_us = m.last_load_us.max(v.last_load_us);
                }
                // A version only another replica serves (a change it has taken in first).
                None => self.versions.push(v.clone()),
            }
        }
    }

    /// The API's summary, for `deployment` (`team/model@environment`) over `replicas`.
    pub fn summary(&self, deployment: String, replicas: u32) -> DeploymentMetrics {
        DeploymentMetrics {
            deployment,
            replicas,
            requests: self.requests,
            rows: self.rows,
            errors: self.errors.clone(),
            latency_ms: LatencySummary {
                p50: self.latency_ms(0.5),
                p90: self.latency_ms(0.9),
                p99: self.latency_ms(0.99),
                mean: self.mean_latency_ms(),
            },
            versions: self
                .versions
                .iter()
                .map(|v| VersionMetrics {
                    version: v.version,
                    shadow: v.shadow,
                    requests: v.requests,
                    batches: v.batches,
                    mean_batch_rows: v.mean_batch_rows(),
                    queue_depth: v.queue_depth,
                    workers: v.workers,
                    model_loaded: v.loaded,
                    last_load_ms: v.last_load_us.map(|us| us as f64 / 1e3),
                    loads: v.loads,
                })
                .collect(),
            log_dropped: self.log_dropped,
        }
    }
}

impl Plinth {
    /// Writes this replica's figures of every live deployment whose requests changed since
    /// `published` (which it updates).
    pub(crate) async fn publish_figures(
        &self,
        published: &mut BTreeMap<String, u64>,
    ) -> Result<()> {
        let replica = self.replica_id().to_string();
        let now = now_micros();
        for live in self.engine.all() {
            let figures = self.engine.figures(&live);
            let seen = published.get(&live.deployment_id).copied();
            if seen == Some(figures.requests) {
                continue;
            }
            let mut tx = self.db.begin().await?;
            Sql::with(
                "INSERT INTO replica_figures (replica, deployment_id, figures, at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (replica, deployment_id) DO UPDATE SET figures = excluded.figures, at = excluded.at",
                [
                    replica.clone().into(),
                    live.deployment_id.clone().into(),
                    serde_json::to_string(&figures)?.into(),
                    now.into(),
                ],
            )
            .execute(&mut tx)
            .await?;
            tx.commit().await?;
            published.insert(live.deployment_id.clone(), figures.requests);
        }
        Ok(())
    }

    /// Publishes this replica's figures now (tests; the process does it every few seconds).
    #[doc(hidden)]
    pub async fn publish_figures_now(&self) -> Result<()> {
        self.publish_figures(&mut BTreeMap::new()).await
    }

    /// Publishes this replica's figures every `every` ([`PUBLISH_EVERY`] in a server) until
    /// the process stops, rolls them up into the health minutes, and deletes the rows of
    /// replicas gone for a day.
    pub(crate) fn start_publishing_figures(&self, every: Duration) {
        let core = self.clone();
        tokio::spawn(async move {
            let mut published = BTreeMap::new();
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !core.tasks.stop.load(std::sync::atomic::Ordering::Relaxed) {
                tick.tick().await;
                if let Err(e) = core.publish_figures(&mut published).await {
                    tracing::warn!(error = %e, "cannot publish this replica's serving figures");
                }
                let rolled = {
                    let mut state = core.health.lock().await;
                    core.roll_up_health(&mut state, now_micros()).await
                };
                if let Err(e) = rolled {
                    tracing::warn!(error = %e, "cannot roll up this replica's health minutes");
                }
                if let Err(e) = core.sync_quotas().await {
                    tracing::warn!(error = %e, "cannot read the teams' quotas and usage");
                }
                if let Err(e) = core.flush_monitoring_at(now_micros()).await {
                    tracing::warn!(error = %e, "cannot write this replica's captured traffic");
                }
                if let Err(e) = core.refresh_monitoring_gauges().await {
                    tracing::warn!(error = %e, "cannot read the alert states for /metrics");
                }
                if let Err(e) = core.forget_stopped_replicas().await {
                    tracing::warn!(error = %e, "cannot delete the figures of stopped replicas");
                }
            }
        });
    }

    async fn forget_stopped_replicas(&self) -> Result<()> {
        let day_ago = now_micros() - 86_400_000_000;
        let mut tx = self.db.begin().await?;
        Sql::with("DELETE FROM replica_figures WHERE at < $1", [day_ago.into()])
            .execute(&mut tx)
            .await?;
        tx.commit().await
    }

    /// A live deployment's figures on every replica: this one's now, the others' as they last
    /// published them.
    pub(crate) async fn figures_everywhere(
        &self,
        live: &super::engine::Live,
    ) -> Result<DeploymentMetrics> {
        let mut total = self.engine.figures(live);
        let alive = now_micros() - ALIVE_WITHIN.as_micros() as i64;
        let rows = self
            .db
            .fetch_all(&Sql::with(
                "SELECT figures FROM replica_figures WHERE deployment_id = $1 AND replica <> $2 AND at >= $3",
                [live.deployment_id.clone().into(), self.replica_id().into(), alive.into()],
            ))
            .await?;
        for r in &rows {
            total.add(&serde_json::from_str(&col::<String>(r, "figures")?)?);
        }
        let name = format!("{}/{}@{}", live.team, live.model, live.environment);
        Ok(total.summary(name, rows.len() as u32 + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_of_two_replicas_add_up() {
        let latency = |fast: u64, slow: u64| {
            let mut c = vec![0; Histogram::latency_seconds().bounds().len() + 1];
            c[4] = fast; // up to 1 ms
            c[8] = slow; // up to 25 ms
            c
        };
        let version = |requests, loaded| VersionFigures {
            version: 1,
            shadow: false,
            requests,
            batches: requests / 2,
            batch_rows: requests,
            rows_ok: requests,
            cpu_ns: requests * 1000,
            queue_depth: 0,
            workers: 1,
            loaded,
            loads: 1,
            last_load_us: Some(1000),
        };
        let mut a = Figures {
            requests: 90,
            rows: 90,
            errors: [("invalid_request".to_string(), 2)].into(),
            latency_counts: latency(90, 0),
            latency_sum_micro: 45_000,
            log_dropped: 0,
            versions: vec![version(90, true)],
        };
        let b = Figures {
            requests: 10,
            rows: 30,
            errors: [("invalid_request".to_string(), 1), ("timeout".to_string(), 1)].into(),
            latency_counts: latency(0, 10),
            latency_sum_micro: 200_000,
            log_dropped: 3,
            versions: vec![version(10, false)],
        };
        a.add(&b);
        assert_eq!((a.versions[0].rows_ok, a.versions[0].cpu_ns), (100, 100_000));
        let s = a.summary("t/m@production".into(), 2);
        assert_eq!((s.requests, s.rows, s.log_dropped, s.replicas), (100, 120, 3, 2));
        assert_eq!(s.errors["invalid_request"], 3);
        assert_eq!(s.errors["timeout"], 1);
        assert_eq!(s.versions.len(), 1);
        assert_eq!((s.versions[0].requests, s.versions[0].workers), (100, 2));
        // 90 % of requests under 1 ms: the median is there, the 99th percentile among the slow.
        assert!(s.latency_ms.p50 <= 1.0, "{:?}", s.latency_ms);
        assert!(s.latency_ms.p99 > 10.0 && s.latency_ms.p99 <= 25.0, "{:?}", s.latency_ms);
        assert!((s.latency_ms.mean - 2.45).abs() < 1e-9, "{:?}", s.latency_ms);
    }
}
