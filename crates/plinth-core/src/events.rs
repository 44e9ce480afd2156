//! The outbox: every change worth reacting to (a version registered, a deployment changed, a
//! promotion decided, an evaluation finished, a task discarded, ...) writes an event row in the
//! transaction of the change, like its audit entry: an event exists if and only if its change
//! committed.
//!
//! Events are numbered from a counter row taken under its lock, so their order is the order
//! their transactions commit in: a consumer's cursor never passes an event that commits late.
//! Consumers (webhooks now; alerts, metering and retraining next) each keep their own cursor and
//! read under a lease, one replica at a time; a consumer handles a batch and moves its cursor in
//! one transaction, so whatever it writes for an event (a webhook delivery, say) is written once.
//! Delivery to the outside world is at least once: events carry an id to deduplicate on.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::Value;

use crate::Plinth;
use crate::error::Result;
use crate::store::{Sql, Tx, col};
use crate::util::{new_id, now_micros};

/// An event as consumers read it.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub seq: i64,
    pub id: String,
    pub team_id: Option<String>,
    pub kind: String,
    pub payload: Value,
    pub at: i64,
}

/// A reader of the outbox: handles batches of events, in order, inside the transaction that
/// moves its cursor.
pub(crate) trait Consumer: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn handle<'a>(
        &'a self,
        core: &'a Plinth,
        tx: &'a mut Tx,
        events: &'a [Event],
    ) -> BoxFuture<'a, Result<()>>;
}

/// Events a consumer reads at a time.
const BATCH: i64 = 100;

impl Plinth {
    /// Writes an event in the change's transaction.
    pub(crate) async fn emit_event(
        &self,
        tx: &mut Tx,
        team_id: Option<&str>,
        kind: &str,
        payload: &Value,
    ) -> Result<String> {
        self.write_event(tx, team_id, kind, payload, new_id("evt"), false).await
    }

    /// Writes the event of a fact that may be reached twice (a task's attempt that finished
    /// its work and then lost its lease, and ran again): its id is `evt_<key>`, written once,
    /// so a second attempt adds nothing and receivers never see two ids for one fact.
    pub(crate) async fn emit_event_once(
        &self,
        tx: &mut Tx,
        team_id: Option<&str>,
        kind: &str,
        payload: &Value,
        key: &str,
    ) -> Result<String> {
        let id = format!("evt_{key}");
        if Sql::with("SELECT id FROM events WHERE id = $1", [id.clone().into()])
            .fetch_optional_tx(tx)
            .await?
            .is_some()
        {
            return Ok(id);
        }
        // Two attempts may pass the look above together: the insert keeps the first.
        self.write_event(tx, team_id, kind, payload, id, true).await
    }

    async fn write_event(
        &self,
        tx: &mut Tx,
        team_id: Option<&str>,
        kind: &str,
        payload: &Value,
        id: String,
        once: bool,
    ) -> Result<String> {
        // The counter's row lock serializes event writers until they commit: sequence order
        // is commit order.
        let row = Sql::new(
            "UPDATE event_seq SET value = value + 1 WHERE name = 'events' RETURNING value",
        )
        .fetch_optional_tx(tx)
        .await?
        .ok_or_else(|| crate::Error::internal("the event counter is missing"))?;
        let seq: i64 = col(&row, "value")?;
        let insert = if once {
            "INSERT INTO events (seq, id, team_id, type, payload, at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING"
        } else {
            "INSERT INTO events (seq, id, team_id, type, payload, at) VALUES ($1, $2, $3, $4, $5, $6)"
        };
        Sql::with(
            insert,
            [
                seq.into(),
                id.clone().into(),
                team_id.map(str::to_string).into(),
                kind.into(),
                payload.to_string().into(),
                now_micros().into(),
            ],
        )
        .execute(tx)
        .await?;
        Ok(id)
    }

    /// Starts reading the outbox for every consumer, each in a loop of its own.
    pub(crate) fn start_consumers(&self, consumers: Vec<Arc<dyn Consumer>>) {
        for consumer in consumers {
            let core = self.clone();
            tokio::spawn(async move {
                while !core.tasks.stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match core.consume_events(consumer.as_ref()).await {
                        Ok(n) if n > 0 => continue,
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(consumer = consumer.name(), error = %e, "cannot read events; retrying")
                        }
                    }
                    let _ =
                        tokio::time::timeout(core.tasks.options.poll, core.tasks.wake.notified())
                            .await;
                }
            });
        }
    }

    /// Reads the next batch for `consumer`, if this process holds (or takes) its lease, and
    /// hands it over; answers how many events it handled.
    pub(crate) async fn consume_events(&self, consumer: &dyn Consumer) -> Result<usize> {
        let now = now_micros();
        let lease = now + self.tasks.options.lease.as_micros() as i64;
        let mut tx = self.db.begin().await?;
        Sql::with(
            "INSERT INTO event_cursors (consumer, position) VALUES ($1, 0) ON CONFLICT (consumer) DO NOTHING",
            [consumer.name().into()],
        )
        .execute(&mut tx)
        .await?;
        let held = Sql::with(
            "UPDATE event_cursors SET lease_owner = $1, lease_expires_at = $2
             WHERE consumer = $3 AND (lease_owner IS NULL OR lease_owner = $1 OR lease_expires_at < $4)
             RETURNING position",
            [self.tasks.replica.clone().into(), lease.into(), consumer.name().into(), now.into()],
        )
        .fetch_optional_tx(&mut tx)
        .await?;
        let Some(held) = held else {
            // Another replica reads for this consumer.
            return Ok(0);
        };
        let position: i64 = col(&held, "position")?;
        let rows = Sql::with(
            "SELECT seq, id, team_id, type, payload, at FROM events WHERE seq > $1 ORDER BY seq LIMIT $2",
            [position.into(), BATCH.into()],
        )
        .fetch_all_tx(&mut tx)
        .await?;
        let mut events = Vec::with_capacity(rows.len());
        for r in &rows {
            events.push(Event {
                seq: col(r, "seq")?,
                id: col(r, "id")?,
                team_id: col(r, "team_id")?,
                kind: col(r, "type")?,
                payload: serde_json::from_str(&col::<String>(r, "payload")?)?,
                at: col(r, "at")?,
            });
        }
        if let Some(last) = events.last().map(|e| e.seq) {
            consumer.handle(self, &mut tx, &events).await?;
            Sql::with(
                "UPDATE event_cursors SET position = $1 WHERE consumer = $2",
                [last.into(), consumer.name().into()],
            )
            .execute(&mut tx)
            .await?;
        }
        tx.commit().await?;
        Ok(events.len())
    }

    /// Waits (polling, up to `within`) until `consumer` has read every event written so far.
    #[doc(hidden)]
    pub async fn events_consumed(&self, consumer: &str, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let last = self
                .db
                .fetch_optional(&Sql::new("SELECT value FROM event_seq WHERE name = 'events'"))
                .await
                .ok()
                .flatten()
                .and_then(|r| col::<i64>(&r, "value").ok());
            let at = self
                .db
                .fetch_optional(&Sql::with(
                    "SELECT position FROM event_cursors WHERE consumer = $1",
                    [consumer.into()],
                ))
                .await
                .ok()
                .flatten()
                .and_then(|r| col::<i64>(&r, "position").ok());
            if last.is_some() && last == at {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
