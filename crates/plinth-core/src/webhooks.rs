//! Webhooks: teams subscribe a URL to governance events. An event becomes a delivery row in the
//! same transaction as the change it announces (so none is lost), and a background task POSTs
//! it, signed with HMAC-SHA256 over `"{timestamp}.{body}"`, retrying with exponential backoff.
//! Every attempt is kept in the delivery log.

use std::time::Duration;

use hmac::{Hmac, Mac};
use plinth_api::governance::{CreateWebhook, Delivery, Webhook};
use plinth_api::identity::TeamRole;
use serde_json::json;
use sha2::Sha256;

use crate::Plinth;
use crate::audit::{self, Target};
use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::store::{Sql, Tx, col};
use crate::util::{micros_to_time, new_id, now_micros};

pub const EVENTS: &[&str] = &[
    "promotion.requested",
    "promotion.checks_finished",
    "promotion.approved",
    "promotion.rejected",
    "promotion.deployed",
];

/// Attempts before a delivery is marked failed.
const MAX_ATTEMPTS: i64 = 8;
/// The first retry waits this long; each next one twice as long.
const FIRST_BACKOFF_MS: i64 = 500;

/// The signature header value for a body: `sha256=<hex>`.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

impl Plinth {
    pub async fn create_webhook(
        &self,
        who: &Principal,
        team: &str,
        req: CreateWebhook,
    ) -> Result<Webhook> {
        let t = self.team_ref(who, team).await?;
        who.require(&t, TeamRole::Maintainer, "adding a webhook")?;
        if !(req.url.starts_with("http://") || req.url.starts_with("https://"))
            || req.url.len() > 2000
        {
            return Err(Error::invalid("url", "must be an http:// or https:// URL"));
        }
        for (i, e) in req.events.iter().enumerate() {
            if !EVENTS.contains(&e.as_str()) {
                return Err(Error::invalid(
                    format!("events[{i}]"),
                    format!("unknown event; known: {}", EVENTS.join(", ")),
                ));
            }
        }
        let id = new_id("whk");
        let secret = format!("whsec_{}", hex::encode(rand::random::<[u8; 24]>()));
        let now = now_micros();
        let mut tx = self.db.begin().await?;
        Sql::with(
            "INSERT INTO webhooks (id, team_id, url, secret, events, created_at, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            [id.clone().into(), t.id.clone().into(), req.url.clone().into(), secret.clone().into(), serde_json::to_string(&req.events)?.into(), now.into(), who.id.clone().into()],
        )
        .execute(&mut tx)
        .await?;
        let target = Target {
            team_id: Some(&t.id),
            object_type: "webhook",
            object_id: &id,
            object_name: &req.url,
        };
        audit::record(
            &mut tx,
            who,
            "webhook.create",
            target,
            json!({"url": req.url, "events": req.events}),
        )
        .await?;
        tx.commit().await?;
        Ok(Webhook {
            id,
            team: t.name,
            url: req.url,
            events: req.events,
            secret: Some(secret),
            created_at: micros_to_time(now),
        })
    }

    pub async fn list_webhooks(&self, who: &Principal, team: &str) -> Result<Vec<Webhook>> {
        let t = self.team_ref(who, team).await?;
        let rows = self
            .db
            .fetch_all(&Sql::with("SELECT * FROM webhooks WHERE team_id = $1 AND deleted_at IS NULL ORDER BY created_at", [t.id.clone().into()]))
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Webhook {
                    id: col(r, "id")?,
                    team: t.name.clone(),
                    url: col(r, "url")?,
                    events: serde_json::from_str(&col::<String>(r, "events")?)?,
                    secret: None,
                    created_at: micros_to_time(col(r, "created_at")?),
                })
            })
            .collect()
    }

    pub async fn delete_webhook(&self, who: &Principal, team: &str, id: &str) -> Result<()> {
        let t = self.team_ref(who, team).await?;
        who.require(&t, TeamRole::Maintainer, "deleting a webhook")?;
        let mut tx = self.db.begin().await?;
        let n = Sql::with(
            "UPDATE webhooks SET deleted_at = $1 WHERE id = $2 AND team_id = $3 AND deleted_at IS NULL",
            [now_micros().into(), id.into(), t.id.clone().into()],
        )
        .execute(&mut tx)
        .await?;
        if n == 0 {
            return Err(Error::not_found("webhook", id));
        }
        let target =
            Target { team_id: Some(&t.id), object_type: "webhook", object_id: id, object_name: id };
        audit::record(&mut tx, who, "webhook.delete", target, json!({})).await?;
        tx.commit().await
    }

    /// The delivery log of a team's webhook, newest first.
    pub async fn list_deliveries(
        &self,
        who: &Principal,
        team: &str,
        webhook: &str,
    ) -> Result<Vec<Delivery>> {
        let t = self.team_ref(who, team).await?;
        let rows = self
            .db
            .fetch_all(&Sql::with(
                "SELECT d.* FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id
                 WHERE w.id = $1 AND w.team_id = $2 ORDER BY d.created_at DESC, d.id DESC LIMIT 500",
                [webhook.into(), t.id.clone().into()],
            ))
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Delivery {
                    id: col(r, "id")?,
                    webhook: col(r, "webhook_id")?,
                    event: col(r, "event")?,
                    status: col(r, "status")?,
                    attempts: col::<i64>(r, "attempts")? as u32,
                    last_status_code: col::<Option<i64>>(r, "last_status_code")?.map(|c| c as u16),
                    last_error: col(r, "last_error")?,
                    created_at: micros_to_time(col(r, "created_at")?),
                    payload: serde_json::from_str(&col::<String>(r, "payload")?)?,
                })
            })
            .collect()
    }

    /// Queues `event` for every subscribed webhook of the team, inside `tx`.
    pub(crate) async fn emit(
        &self,
        tx: &mut Tx,
        team_id: &str,
        event: &str,
        data: &serde_json::Value,
    ) -> Result<()> {
        let hooks = Sql::with(
            "SELECT id, events FROM webhooks WHERE team_id = $1 AND deleted_at IS NULL",
            [team_id.into()],
        )
        .fetch_all_tx(tx)
        .await?;
        let now = now_micros();
        for h in hooks {
            let events: Vec<String> = serde_json::from_str(&col::<String>(&h, "events")?)?;
            if !events.is_empty() && !events.iter().any(|e| e == event) {
                continue;
            }
            let id = new_id("dlv");
            let payload = json!({"id": id, "event": event, "created_at": micros_to_time(now).unix_timestamp(), "data": data});
            Sql::with(
                "INSERT INTO webhook_deliveries (id, webhook_id, event, payload, status, attempts, next_attempt_at, created_at)
                 VALUES ($1, $2, $3, $4, 'pending', 0, $5, $5)",
                [id.into(), col::<String>(&h, "id")?.into(), event.into(), payload.to_string().into(), now.into()],
            )
            .execute(tx)
            .await?;
        }
        Ok(())
    }

    pub(crate) fn wake_webhooks(&self) {
        self.webhook_wake.notify_one();
    }

    pub(crate) fn start_webhooks(&self) {
        let core = self.clone();
        tokio::spawn(async move { core.delivery_loop().await });
    }

    async fn delivery_loop(self) {
        use std::sync::atomic::Ordering;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("an HTTP client");
        while !self.jobs.stop.load(Ordering::Relaxed) {
            match self.deliver_due(&client).await {
                Ok(0) => {
                    let _ = tokio::time::timeout(
                        Duration::from_millis(250),
                        self.webhook_wake.notified(),
                    )
                    .await;
                }
                Ok(_) => {}
                Err(e) => {
                    if self.jobs.stop.load(Ordering::Relaxed) {
                        break;
                    }
                    tracing::warn!(error = %e, "webhook delivery failed to run; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    async fn deliver_due(&self, client: &reqwest::Client) -> Result<usize> {
        let rows = self
            .db
            .fetch_all(&Sql::with(
                "SELECT d.id, d.event, d.payload, d.attempts, w.url, w.secret FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id
                 WHERE d.status = 'pending' AND d.next_attempt_at <= $1 ORDER BY d.next_attempt_at LIMIT 32",
                [now_micros().into()],
            ))
            .await?;
        let n = rows.len();
        for r in rows {
            let id: String = col(&r, "id")?;
            let body: String = col(&r, "payload")?;
            let secret: String = col(&r, "secret")?;
            let attempts: i64 = col::<i64>(&r, "attempts")? + 1;
            let ts = time::OffsetDateTime::now_utc().unix_timestamp();
            let sent = client
                .post(col::<String>(&r, "url")?)
                .header("content-type", "application/json")
                .header("x-plinth-event", col::<String>(&r, "event")?)
                .header("x-plinth-delivery", id.clone())
                .header("x-plinth-timestamp", ts.to_string())
                .header("x-plinth-signature", sign(&secret, ts, body.as_bytes()))
                .body(body)
                .send()
                .await;
            let (code, error) = match sent {
                Ok(resp) if resp.status().is_success() => {
                    (Some(i64::from(resp.status().as_u16())), None)
                }
                Ok(resp) => (
                    Some(i64::from(resp.status().as_u16())),
                    Some(format!("HTTP {}", resp.status())),
                ),
                Err(e) => (None, Some(e.to_string())),
            };
            let status = match (&error, attempts >= MAX_ATTEMPTS) {
                (None, _) => "delivered",
                (Some(_), true) => "failed",
                (Some(_), false) => "pending",
            };
            let next = now_micros() + FIRST_BACKOFF_MS * 1000 * (1i64 << (attempts - 1).min(20));
            let mut tx = self.db.begin().await?;
            Sql::with(
                "UPDATE webhook_deliveries SET status = $1, attempts = $2, next_attempt_at = $3, last_status_code = $4, last_error = $5 WHERE id = $6",
                [status.into(), attempts.into(), next.into(), code.into(), error.into(), id.into()],
            )
            .execute(&mut tx)
            .await?;
            tx.commit().await?;
        }
        Ok(n)
    }
}
