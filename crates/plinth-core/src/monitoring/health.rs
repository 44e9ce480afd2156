//! Health over time: per-minute rollups of each deployment's serving figures, persisted so that
//! they survive restarts and add up across replicas.
//!
//! Nothing is added to a request's path. Each replica already counts its requests in memory
//! ([`crate::serving::figures`]); whenever it publishes those figures (every few seconds) it
//! also adds what changed since the last publication to its own row for the current minute
//! (`health_minutes`: one row per deployment, minute and replica), so a crash loses at most the
//! seconds since then, and no two replicas ever write the same row. The same transaction adds
//! the rollup's usage to the billing ledger ([`crate::billing::metering`]). A query adds up every
//! replica's rows of each step; latency quantiles are read off the added histogram buckets.

use std::collections::BTreeMap;

use plinth_api::Code;
use plinth_api::monitoring::{
    HealthLatency, HealthPoint, HealthQuery, HealthSeries, VersionHealth,
};
use time::OffsetDateTime;

use crate::Plinth;
use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::serving::figures::Figures;
use crate::store::{Sql, col};
use crate::util::{micros_to_time, now_micros};

const MINUTE_US: i64 = 60_000_000;
/// The SLA's availability target.
pub const AVAILABILITY_TARGET: f64 = 0.999;
/// The most points one query answers.
const MAX_POINTS: i64 = 1440;

/// What a replica remembers between rollups: each deployment's figures at the last one, and
/// the current minute's sum so far.
#[derive(Default)]
pub(crate) struct Rollup {
    /// When the last rollup ran (microseconds).
    at: Option<i64>,
    last: BTreeMap<String, Figures>,
    open: BTreeMap<String, (i64, Figures)>,
}

impl Plinth {
    /// Adds what each live deployment served since the last rollup to this replica's row of
    /// the minute `now` (microseconds) falls in.
    pub(crate) async fn roll_up_health(&self, state: &mut Rollup, now: i64) -> Result<()> {
        let minute = now.div_euclid(MINUTE_US) * MINUTE_US;
        let replica = self.replica_id().to_string();
        // Loaded models are metered for the time since the last rollup.
        let elapsed_us = state.at.map_or(0, |at| (now - at).max(0) as u64);
        state.at = Some(now);
        // One transaction for every deployment's rows: hundreds of models cost one commit.
        let mut tx = self.db.begin().await?;
        let mut flushed: Vec<(String, u64)> = Vec::new();
        for live in self.engine.all() {
            let current = self.engine.figures_with_retired(&live);
            let before = state.last.insert(live.deployment_id.clone(), current.clone());
            let delta = current.since(before.as_ref());
            let served = delta.requests > 0
                || delta.versions.iter().any(|v| v.requests + v.rows_ok + v.cpu_ns > 0);
            let loaded = elapsed_us > 0 && current.versions.iter().any(|v| v.loaded);
            if !served && !loaded {
                continue;
            }
            if delta.requests > 0 {
                let open = state
                    .open
                    .entry(live.deployment_id.clone())
                    .or_insert((minute, Figures::default()));
                if open.0 != minute {
                    *open = (minute, Figures::default());
                }
                open.1.add(&delta);
                Sql::with(
                    "INSERT INTO health_minutes (deployment_id, minute, replica, figures) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (deployment_id, minute, replica) DO UPDATE SET figures = excluded.figures",
                    [
                        live.deployment_id.clone().into(),
                        minute.into(),
                        replica.clone().into(),
                        serde_json::to_string(&open.1)?.into(),
                    ],
                )
                .execute(&mut tx)
                .await?;
            }
            if self.engine.metering {
                crate::billing::metering::meter_serving(
                    &mut tx, &live, &current, &delta, elapsed_us, now,
                )
                .await?;
            }
            let predicted = delta.versions.iter().filter(|v| !v.shadow).map(|v| v.rows_ok).sum();
            flushed.push((live.team_id.clone(), predicted));
        }
        tx.commit().await?;
        for (team_id, rows) in flushed {
            self.quota_gate.flushed(&team_id, rows);
        }
        Ok(())
    }

    /// Rolls this replica's figures up now, as of `now` (microseconds): tests drive the clock
    /// with it; the process does it with the wall clock every few seconds.
    #[doc(hidden)]
    pub async fn roll_up_health_at(&self, now: i64) -> Result<()> {
        let mut state = self.health.lock().await;
        self.roll_up_health(&mut state, now).await
    }

    /// A deployment's health over `q`'s range, in its steps, over every replica.
    pub async fn deployment_health(
        &self,
        who: &Principal,
        team: &str,
        model: &str,
        environment: &str,
        q: &HealthQuery,
    ) -> Result<HealthSeries> {
        let d = self.get_deployment(who, team, model, environment).await?;
        let step_seconds = q.step_seconds.unwrap_or(60);
        if step_seconds == 0 || !step_seconds.is_multiple_of(60) {
            return Err(Error::invalid("step_seconds", "must be a positive multiple of 60"));
        }
        let step = i64::from(step_seconds) * 1_000_000;
        let micros = |t: OffsetDateTime| (t.unix_timestamp_nanos() / 1000) as i64;
        let until = q.until.map_or_else(now_micros, micros);
        let since = q.since.map_or(until - 3_600_000_000, micros);
        if since >= until {
            return Err(Error::invalid("since", "must be before until"));
        }
        // Steps start on multiples of the step since the epoch.
        let first = since.div_euclid(step) * step;
        if (until - first) / step > MAX_POINTS {
            return Err(Error::invalid(
                "step_seconds",
                format!("the range would have more than {MAX_POINTS} points: widen the step"),
            ));
        }
        let mut steps: BTreeMap<i64, Figures> = BTreeMap::new();
        let mut total = Figures::default();
        for (minute, f) in self.health_minutes(&d.id, first, until).await? {
            total.add(&f);
            steps.entry(minute.div_euclid(step) * step).or_default().add(&f);
        }
        let total = point(since, &total);
        let meets_target = total.availability >= AVAILABILITY_TARGET;
        Ok(HealthSeries {
            deployment: format!("{team}/{model}@{environment}"),
            since: micros_to_time(since),
            until: micros_to_time(until),
            step_seconds,
            total,
            availability_target: AVAILABILITY_TARGET,
            meets_target,
            points: steps.iter().map(|(start, f)| point(*start, f)).collect(),
        })
    }
}

impl Plinth {
    /// Every replica's health rows of a deployment for the minutes in `[since, until)`.
    async fn health_minutes(
        &self,
        deployment_id: &str,
        since: i64,
        until: i64,
    ) -> Result<Vec<(i64, Figures)>> {
        let rows = self
            .db
            .fetch_all(&Sql::with(
                "SELECT minute, figures FROM health_minutes WHERE deployment_id = $1 AND minute >= $2 AND minute < $3",
                [deployment_id.to_string().into(), since.into(), until.into()],
            ))
            .await?;
        rows.iter()
            .map(|r| {
                let f: Figures = serde_json::from_str(&col::<String>(r, "figures")?)
                    .map_err(|e| Error::internal(format!("health row: {e}")))?;
                Ok((col(r, "minute")?, f))
            })
            .collect()
    }

    /// A deployment's figures added up over the minutes that start in `[since, until)`.
    pub(crate) async fn health_figures(
        &self,
        deployment_id: &str,
        since: i64,
        until: i64,
    ) -> Result<Figures> {
        let mut total = Figures::default();
        for (_, f) in self.health_minutes(deployment_id, since, until).await? {
            total.add(&f);
        }
        Ok(total)
    }
}

/// Whether an error code is the platform's failure (answered 5xx), not the caller's mistake.
pub(crate) fn server_error(code: &str) -> bool {
    Code::ALL.iter().find(|c| c.as_str() == code).is_none_or(|c| c.http_status() >= 500)
}

fn point(start: i64, f: &Figures) -> HealthPoint {
    let failed: u64 = f.errors.values().sum();
    let platform: u64 = f.errors.iter().filter(|(c, _)| server_error(c)).map(|(_, n)| n).sum();
    let ratio = |n: u64| if f.requests == 0 { 0.0 } else { n as f64 / f.requests as f64 };
    HealthPoint {
        start: micros_to_time(start),
        requests: f.requests,
        rows: f.rows,
        errors: f.errors.clone(),
        error_rate: ratio(failed),
        availability: 1.0 - ratio(platform),
        latency_ms: HealthLatency {
            p50: f.latency_ms(0.5),
            p95: f.latency_ms(0.95),
            p99: f.latency_ms(0.99),
            mean: f.mean_latency_ms(),
        },
        versions: f
            .versions
            .iter()
            .filter(|v| v.requests > 0)
            .map(|v| VersionHealth {
                version: v.version,
                shadow: v.shadow,
                requests: v.requests,
                batches: v.batches,
                mean_batch_rows: v.mean_batch_rows(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Availability counts only the platform's failures (5xx); the error rate counts every one.
    #[test]
    fn availability_counts_the_platforms_failures_only() {
        let f = Figures {
            requests: 1000,
            errors: [
                ("internal".to_string(), 1),
                ("overloaded".to_string(), 1),
                ("invalid_field".to_string(), 8),
            ]
            .into_iter()
            .collect(),
            ..Figures::default()
        };
        let p = point(0, &f);
        assert_eq!(p.error_rate, 0.01);
        assert_eq!(p.availability, 0.998);
        assert!(p.availability < AVAILABILITY_TARGET);
        assert_eq!(point(0, &Figures::default()).availability, 1.0);
    }

    /// A rollup subtracts the figures already rolled up, and counts from zero again when the
    /// deployment's counters started over.
    #[test]
    fn rollups_take_what_changed() {
        let at = |requests: u64, rows: u64| Figures { requests, rows, ..Figures::default() };
        assert_eq!(at(10, 20).since(Some(&at(4, 5))).requests, 6);
        assert_eq!(at(10, 20).since(Some(&at(4, 5))).rows, 15);
        assert_eq!(at(3, 3).since(Some(&at(10, 20))).requests, 3);
        assert_eq!(at(3, 3).since(None).rows, 3);
    }
}
