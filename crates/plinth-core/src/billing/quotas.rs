//! Quotas on the prediction path, and budget alerts.
//!
//! [`QuotaGate`] is a [`PredictionHook`]: it admits a prediction from memory alone. For each
//! team with a limit it holds the month's predictions as every replica had flushed them at the
//! last sync (`base`, read from the ledger every [`crate::serving::figures::PUBLISH_EVERY`])
//! plus the rows this replica answered since its own last flush (`local`); a prediction whose
//! rows would pass the month's quota is refused with `429 quota_exceeded`. Requests per second
//! are a token bucket per replica holding the team's limit divided by the replicas alive.
//!
//! Overshoot: a replica does not see what the others answered since their last flush, so with
//! R replicas a month's quota can be passed by at most what the other R - 1 replicas answer in
//! one flush interval plus one sync (about two intervals: 10 s of their traffic), and within one
//! replica by the rows of requests admitted together (in flight at once). A new month, or a
//! raised quota, lets calls through at the next sync.
//!
//! Budget alerts: every minute a task compares each team's month with its budget (cost so far)
//! and its quotas, and sends a `billing.threshold` event at 80 % and at 100 % of each, once per
//! month, through the team's webhooks.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Instant;

use plinth_api::Code;
use plinth_api::billing::Quotas;
use serde_json::json;

use super::{MonthId, usd};
use crate::Plinth;
use crate::error::{Error, LimitInfo, Result};
use crate::serving::predict::{PredictionFacts, PredictionHook};
use crate::store::{Sql, col};
use crate::util::{micros_to_time, now_micros};

pub(crate) const CHECK_BUDGETS: &str = "billing.check_budgets";

/// Replicas that wrote their heartbeat within this long count as alive.
const ALIVE_US: i64 = 30_000_000;

/// The team limits this replica enforces, refreshed at each sync.
#[derive(Default)]
pub struct QuotaGate {
    /// Whether any team has a limit (else a prediction costs one load).
    any: AtomicBool,
    /// By team id. Read twice per prediction of a team with limits: hashed with FNV-1a (a team
    /// id is short and not chosen by callers), looked up under the read lock without cloning.
    teams: RwLock<HashMap<String, TeamGate, BuildHasherDefault<Fnv>>>,
}

/// FNV-1a, for the gate's short keys.
#[derive(Default)]
struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let start = if self.0 == 0 { 0xcbf29ce484222325 } else { self.0 };
        self.0 = bytes.iter().fold(start, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100000001b3));
    }
}

struct TeamGate {
    name: String,
    month_start: AtomicI64,
    month_end: AtomicI64,
    /// `u64::MAX`: no monthly quota.
    month_limit: AtomicU64,
    base: AtomicU64,
    local: AtomicU64,
    /// The team's requests per second over every replica (0: none), and this replica's bucket.
    rps: AtomicU64,
    bucket: Mutex<Bucket>,
}

struct Bucket {
    /// Tokens per second for this replica, at most this many held.
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl TeamGate {
    fn new(name: String) -> TeamGate {
        TeamGate {
            name,
            month_start: AtomicI64::new(0),
            month_end: AtomicI64::new(0),
            month_limit: AtomicU64::new(u64::MAX),
            base: AtomicU64::new(0),
            local: AtomicU64::new(0),
            rps: AtomicU64::new(0),
            bucket: Mutex::new(Bucket { rate: 0.0, tokens: 0.0, last: Instant::now() }),
        }
    }

    fn used(&self, now: i64) -> u64 {
        if now >= self.month_end.load(Ordering::Relaxed) {
            // A new month began since the last sync.
            return self.local.load(Ordering::Relaxed);
        }
        self.base.load(Ordering::Relaxed) + self.local.load(Ordering::Relaxed)
    }

    fn admit(&self, rows: u64) -> Result<()> {
        let limit = self.month_limit.load(Ordering::Relaxed);
        if limit != u64::MAX {
            let now = now_micros();
            let used = self.used(now);
            if used + rows > limit {
                let (start, end) = if now >= self.month_end.load(Ordering::Relaxed) {
                    let m = MonthId::of(now);
                    (m.start(), m.end())
                } else {
                    (
                        self.month_start.load(Ordering::Relaxed),
                        self.month_end.load(Ordering::Relaxed),
                    )
                };
                let reset = ((end - now) / 1_000_000).max(1) as u64;
                return Err(quota_error(
                    format!(
                        "team '{}' has used {used} of its {limit} predictions this month and this request has {rows} rows (quota predictions_per_month); it resets at {}, or an admin can raise it",
                        self.name,
                        micros_to_time(end)
                    ),
                    "predictions_per_month",
                    LimitInfo {
                        policy: "monthly",
                        quota: limit,
                        window_seconds: ((end - start) / 1_000_000) as u64,
                        remaining: limit.saturating_sub(used),
                        reset_seconds: reset,
                    },
                ));
            }
        }
        let rps = self.rps.load(Ordering::Relaxed);
        if rps > 0 {
            let mut b = self.bucket.lock().expect("bucket lock");
            let now = Instant::now();
            let elapsed = now.duration_since(b.last).as_secs_f64();
            b.last = now;
            b.tokens = (b.tokens + elapsed * b.rate).min(b.rate.max(1.0));
            if b.tokens < 1.0 {
                return Err(quota_error(
                    format!(
                        "team '{}' is over its limit of {rps} requests per second (quota requests_per_second): retry after a second",
                        self.name
                    ),
                    "requests_per_second",
                    LimitInfo {
                        policy: "per-second",
                        quota: rps,
                        window_seconds: 1,
                        remaining: 0,
                        reset_seconds: 1,
                    },
                ));
            }
            b.tokens -= 1.0;
        }
        Ok(())
    }
}

fn quota_error(message: String, quota: &str, info: LimitInfo) -> Error {
    let mut e = Error::new(Code::QuotaExceeded, message).with_field(quota);
    e.limit = Some(Box::new(info));
    e
}

impl QuotaGate {
    /// Takes in what a rollup flushed for a team: those rows are in the ledger now.
    pub(crate) fn flushed(&self, team_id: &str, rows: u64) {
        if let Some(t) = self.teams.read().expect("quota lock").get(team_id) {
            let _ = t.local.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| {
                Some(l.saturating_sub(rows))
            });
        }
    }
}

impl PredictionHook for QuotaGate {
    fn admit(&self, p: &PredictionFacts<'_>) -> Result<()> {
        if !self.any.load(Ordering::Relaxed) {
            return Ok(());
        }
        match self.teams.read().expect("quota lock").get(p.team_id) {
            Some(t) => t.admit(p.rows as u64),
            None => Ok(()),
        }
    }

    fn finished(&self, p: &PredictionFacts<'_>, outcome: std::result::Result<(), &Error>) {
        if outcome.is_err() || !self.any.load(Ordering::Relaxed) {
            return;
        }
        if let Some(t) = self.teams.read().expect("quota lock").get(p.team_id)
            && t.month_limit.load(Ordering::Relaxed) != u64::MAX
        {
            t.local.fetch_add(p.rows as u64, Ordering::Relaxed);
        }
    }
}

impl Plinth {
    /// Reads every team's limits and this month's flushed predictions into the gate, and
    /// shares each requests-per-second limit out between the replicas alive. Every replica
    /// does it after each rollup; a change of limits does it at once.
    pub async fn sync_quotas(&self) -> Result<()> {
        self.sync_quotas_at(now_micros()).await
    }

    /// Syncs the gate as of `now` (microseconds): tests drive the month with it.
    #[doc(hidden)]
    pub async fn sync_quotas_at(&self, now: i64) -> Result<()> {
        if !self.engine.metering {
            return Ok(());
        }
        let month = MonthId::of(now);
        let replica = self.replica_id().to_string();
        let mut tx = self.db.begin().await?;
        Sql::with(
            "INSERT INTO replica_heartbeats (replica, at) VALUES ($1, $2) ON CONFLICT (replica) DO UPDATE SET at = excluded.at",
            [replica.into(), now.into()],
        )
        .execute(&mut tx)
        .await?;
        Sql::with("DELETE FROM replica_heartbeats WHERE at < $1", [(now - 86_400_000_000).into()])
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
        let replicas = self
            .db
            .fetch_optional(&Sql::with(
                "SELECT COUNT(*) AS n FROM replica_heartbeats WHERE at >= $1",
                [(now - ALIVE_US).into()],
            ))
            .await?
            .map(|r| col::<i64>(&r, "n"))
            .transpose()?
            .unwrap_or(1)
            .max(1);
        let limits = self.all_quotas_in_force(month).await?;
        let used = self.predictions_by_team(month).await?;
        let gate = &self.quota_gate;
        let mut teams = gate.teams.write().expect("quota lock");
        teams.retain(|id, _| limits.contains_key(id));
        for (team_id, (name, q)) in &limits {
            let t = teams.entry(team_id.clone()).or_insert_with(|| TeamGate::new(name.clone()));
            t.month_start.store(month.start(), Ordering::Relaxed);
            t.month_end.store(month.end(), Ordering::Relaxed);
            t.month_limit.store(q.predictions_per_month.unwrap_or(u64::MAX), Ordering::Relaxed);
            t.base.store(used.get(team_id).copied().unwrap_or(0), Ordering::Relaxed);
            let rps = q.requests_per_second.unwrap_or(0);
            t.rps.store(rps, Ordering::Relaxed);
            let mut b = t.bucket.lock().expect("bucket lock");
            let rate = rps as f64 / replicas as f64;
            if b.rate != rate {
                *b = Bucket { rate, tokens: rate.max(1.0), last: Instant::now() };
            }
        }
        gate.any.store(!teams.is_empty(), Ordering::Relaxed);
        Ok(())
    }

    /// Every team with a limit on predictions or requests: `team id -> (name, limits)`.
    async fn all_quotas_in_force(
        &self,
        month: MonthId,
    ) -> Result<HashMap<String, (String, Quotas)>> {
        Ok(self
            .all_team_terms(month)
            .await?
            .into_iter()
            .filter(|t| {
                t.quotas.predictions_per_month.is_some() || t.quotas.requests_per_second.is_some()
            })
            .map(|t| (t.team.id, (t.team.name, t.quotas)))
            .collect())
    }

    /// Refuses a write that would take a team's stored bytes past its storage quota.
    pub(crate) async fn check_storage_quota(&self, team_id: &str, adding: u64) -> Result<()> {
        let q = self.quotas_in_force(team_id, MonthId::of(now_micros())).await?;
        let Some(limit) = q.storage_bytes else { return Ok(()) };
        let used = self.stored_bytes(team_id).await?;
        if used + adding > limit {
            return Err(quota_error(
                format!(
                    "the team stores {used} bytes of its {limit} (quota storage_bytes) and this upload has {adding}: delete old versions or datasets, or ask an admin to raise it"
                ),
                "storage_bytes",
                LimitInfo {
                    policy: "storage",
                    quota: limit,
                    window_seconds: 0,
                    remaining: limit.saturating_sub(used),
                    reset_seconds: 0,
                },
            ));
        }
        Ok(())
    }

    /// Sends the budget and quota alerts due as of `now` (microseconds): 80 % and 100 % of a
    /// team's monthly budget, predictions quota and storage quota, each once a month. Answers
    /// how many it sent. The schedule runs it every minute; tests drive it.
    pub async fn check_budgets_at(&self, now: i64) -> Result<usize> {
        let month = MonthId::of(now);
        let used = self.predictions_by_team(month).await?;
        let mut sent = 0;
        for crate::billing::plans::TeamTerms { team, limits, quotas: q } in
            self.all_team_terms(month).await?
        {
            let mut checks: Vec<(&str, f64, f64)> = Vec::new();
            if let Some(limit) = q.predictions_per_month {
                checks.push((
                    "predictions_per_month",
                    used.get(&team.id).copied().unwrap_or(0) as f64,
                    limit as f64,
                ));
            }
            if let Some(budget) = limits.budget_micro_usd {
                let s = self.statement_of(&team, month, now).await?;
                checks.push(("budget_usd", s.total_usd, usd(budget)));
            }
            if let Some(limit) = q.storage_bytes {
                checks.push((
                    "storage_bytes",
                    self.stored_bytes(&team.id).await? as f64,
                    limit as f64,
                ));
            }
            for (kind, value, limit) in checks {
                for percent in [80_i64, 100] {
                    if limit <= 0.0 || value < limit * percent as f64 / 100.0 {
                        continue;
                    }
                    let mut tx = self.db.begin().await?;
                    let n = Sql::with(
                        "INSERT INTO budget_alerts (team_id, month, kind, percent, at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                        [team.id.clone().into(), month.to_string().into(), kind.into(), percent.into(), now.into()],
                    )
                    .execute(&mut tx)
                    .await?;
                    if n > 0 {
                        self.emit_event(
                            &mut tx,
                            Some(&team.id),
                            "billing.threshold",
                            &json!({"team": team.name, "month": month.to_string(), "limit": kind,
                                    "percent": percent, "used": value, "allowed": limit}),
                        )
                        .await?;
                        sent += 1;
                    }
                    tx.commit().await?;
                }
            }
        }
        Ok(sent)
    }
}

/// The budget check, every minute.
pub(crate) struct CheckBudgets;

impl crate::tasks::TaskKind for CheckBudgets {
    fn name(&self) -> &'static str {
        CHECK_BUDGETS
    }

    fn run<'a>(
        &'a self,
        core: &'a Plinth,
        _task: &'a crate::tasks::TaskRun,
    ) -> futures_util::future::BoxFuture<'a, Result<serde_json::Value>> {
        Box::pin(async move {
            let sent = core.check_budgets_at(now_micros()).await?;
            Ok(json!({ "sent": sent }))
        })
    }
}
