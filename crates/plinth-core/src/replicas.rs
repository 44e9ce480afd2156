//! What keeps replicas in agreement. Each process holds what serves (live deployments) and who
//! may call (cached keys) in memory; a change made through another replica reaches it through
//! the change counters: the change bumps its counter in its own transaction
//! ([`crate::store::bump`]), and every replica polls the counters every [`WATCH_EVERY`], so a
//! deployment change, a key revocation or a membership change is in force everywhere within
//! a poll and a refresh. (Policies need nothing: they are read from the database at each use.)

use std::collections::HashMap;
use std::time::Duration;

use crate::Plinth;
use crate::error::Result;
use crate::store::{DEPLOYMENTS, IDENTITY, Sql, col};

/// How often a replica looks at the change counters.
pub(crate) const WATCH_EVERY: Duration = Duration::from_millis(200);

impl Plinth {
    async fn counters(&self) -> Result<HashMap<String, i64>> {
        self.db
            .fetch_all(&Sql::new("SELECT name, value FROM change_counters"))
            .await?
            .iter()
            .map(|r| Ok((col(r, "name")?, col(r, "value")?)))
            .collect()
    }

    /// Polls the change counters until the process stops, and takes in what changed: every
    /// deployment again (runners of versions that stay are reused), or the key cache cleared.
    pub(crate) async fn start_change_watch(&self) -> Result<()> {
        let mut seen = self.counters().await?;
        let core = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(WATCH_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !core.tasks.stop.load(std::sync::atomic::Ordering::Relaxed) {
                tick.tick().await;
                let now = match core.counters().await {
                    Ok(now) => now,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the change counters");
                        continue;
                    }
                };
                let changed = |name: &str| now.get(name) != seen.get(name);
                if changed(IDENTITY) {
                    core.auth_cache.clear();
                }
                if changed(DEPLOYMENTS)
                    && let Err(e) = core.engine.load_all().await
                {
                    tracing::warn!(error = %e, "cannot take in deployment changes");
                    continue;
                }
                seen = now;
            }
        });
        Ok(())
    }
}
