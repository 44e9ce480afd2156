//! Webhooks: teams subscribe a URL to events. An event is written to the outbox in the
//! transaction of the change it announces (so none is lost); the webhook consumer turns it into a
//! delivery per subscribed webhook, each a task (`webhook.delivery`) that one replica runs: a POST
//! signed with HMAC-SHA256 over `"{timestamp}.{body}"`, retried with exponential backoff by the
//! task runner. Every attempt is kept in the delivery log; the body carries the delivery's and
//! the event's ids, so a receiver can drop a repeat.

use std::time::Duration;

use hmac::{Hmac, Mac};
use plinth_api::governance::{CreateWebhook, Delivery, Webhook, WebhookFormat};
use plinth_api::identity::TeamRole;
use serde_json::json;
use sha2::Sha256;

use futures_util::future::BoxFuture;

use crate::Plinth;
use crate::audit::{self, Target};
use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::events::{Consumer, Event};
use crate::store::{Sql, Tx, col};
use crate::tasks::{NewTask, TaskKind, TaskRun};
use crate::util::{micros_to_time, new_id, now_micros};

/// The events a webhook may subscribe to.
pub const EVENTS: &[&str] = &[
    "promotion.requested",
    "promotion.checks_finished",
    "promotion.approved",
    "promotion.rejected",
    "promotion.deployed",
    "model_version.registered",
    "deployment.changed",
    "evaluation.finished",
    "task.discarded",
    "alert.firing",
    "alert.resolved",
    "billing.threshold",
    "statement.closed",
];

/// Attempts before a delivery is marked failed.
const MAX_ATTEMPTS: i64 = 8;

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
        let mut req = req;
        if req.format != WebhookFormat::Plinth {
            // Alertmanager's and PagerDuty's shapes carry alerts, nothing else.
            if req.events.is_empty() {
                req.events = vec!["alert.firing".into(), "alert.resolved".into()];
            }
            if let Some((i, _)) =
                req.events.iter().enumerate().find(|(_, e)| !e.starts_with("alert."))
            {
                return Err(Error::invalid(
                    format!("events[{i}]"),
                    format!("the {} format carries alert events only", req.format.as_str()),
                ));
            }
        }
        match (&req.format, &req.routing_key) {
            (WebhookFormat::Pagerduty, None) => {
                return Err(Error::invalid(
                    "routing_key",
                    "PagerDuty needs the integration's routing key",
                ));
            }
            (WebhookFormat::Pagerduty, Some(k)) if k.is_empty() || k.len() > 200 => {
                return Err(Error::invalid("routing_key", "must be 1 to 200 characters"));
            }
            (WebhookFormat::Pagerduty, _) => {}
            (_, Some(_)) => {
                return Err(Error::invalid("routing_key", "only the pagerduty format takes one"));
            }
            (_, None) => {}
        }
        let id = new_id("whk");
        let secret = format!("whsec_{}", hex::encode(rand::random::<[u8; 24]>()));
        let now = now_micros();
        let mut tx = self.db.begin().await?;
        Sql::with(
            "INSERT INTO webhooks (id, team_id, url, secret, events, created_at, created_by, format, routing_key) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            [id.clone().into(), t.id.clone().into(), req.url.clone().into(), secret.clone().into(), serde_json::to_string(&req.events)?.into(), now.into(), who.id.clone().into(), req.format.as_str().into(), req.routing_key.clone().into()],
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
            format: req.format,
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
                    format: WebhookFormat::parse(&col::<String>(r, "format")?).unwrap_or_default(),
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

    /// Announces `event` for the team: an event in the outbox, written inside `tx` (the
    /// webhook consumer turns it into deliveries).
    pub(crate) async fn emit(
        &self,
        tx: &mut Tx,
        team_id: &str,
        event: &str,
        data: &serde_json::Value,
    ) -> Result<()> {
        self.emit_event(tx, Some(team_id), event, data).await.map(drop)
    }

    /// Wakes the task runners and event consumers of this process (after a commit that wrote
    /// events).
    pub(crate) fn wake_webhooks(&self) {
        self.wake_tasks();
    }
}

/// Turns the outbox's events into deliveries: one per subscribed webhook of the event's team,
/// each with a delivery task, written with the consumer's cursor (so each event's deliveries
/// are written once, whatever the number of replicas).
pub(crate) struct WebhookConsumer;

impl Consumer for WebhookConsumer {
    fn name(&self) -> &'static str {
        "webhooks"
    }

    fn handle<'a>(
        &'a self,
        core: &'a Plinth,
        tx: &'a mut Tx,
        events: &'a [Event],
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            for e in events {
                let Some(team_id) = &e.team_id else { continue };
                if !EVENTS.contains(&e.kind.as_str()) {
                    continue;
                }
                let hooks = Sql::with(
                    "SELECT id, events, format, routing_key FROM webhooks WHERE team_id = $1 AND deleted_at IS NULL",
                    [team_id.clone().into()],
                )
                .fetch_all_tx(tx)
                .await?;
                for h in hooks {
                    let events: Vec<String> = serde_json::from_str(&col::<String>(&h, "events")?)?;
                    if !events.is_empty() && !events.contains(&e.kind) {
                        continue;
                    }
                    let id = new_id("dlv");
                    let format =
                        WebhookFormat::parse(&col::<String>(&h, "format")?).unwrap_or_default();
                    let payload = match format {
                        WebhookFormat::Plinth => {
                            json!({"id": id, "event_id": e.id, "event": e.kind, "created_at": micros_to_time(e.at).unix_timestamp(), "data": e.payload})
                        }
                        WebhookFormat::Alertmanager => {
                            crate::monitoring::notify::alertmanager_body(&e.payload)
                        }
                        WebhookFormat::Pagerduty => {
                            let key: Option<String> = col(&h, "routing_key")?;
                            crate::monitoring::notify::pagerduty_body(
                                &e.payload,
                                key.as_deref().unwrap_or_default(),
                            )
                        }
                    };
                    Sql::with(
                        "INSERT INTO webhook_deliveries (id, webhook_id, event, payload, status, attempts, next_attempt_at, created_at)
                         VALUES ($1, $2, $3, $4, 'pending', 0, $5, $5)",
                        [id.clone().into(), col::<String>(&h, "id")?.into(), e.kind.clone().into(), payload.to_string().into(), e.at.into()],
                    )
                    .execute(tx)
                    .await?;
                    let args = json!({"delivery": id});
                    core.enqueue(tx, NewTask::new(Some(team_id), DELIVERY, &args, "system"))
                        .await?;
                }
            }
            Ok(())
        })
    }
}

/// The task kind of a webhook delivery.
pub(crate) const DELIVERY: &str = "webhook.delivery";

/// POSTs one delivery, signed; every attempt is recorded in the delivery log. Retried by the
/// task runner with exponential backoff, [`MAX_ATTEMPTS`] times.
pub(crate) struct DeliveryTask {
    client: reqwest::Client,
}

impl DeliveryTask {
    pub fn new() -> DeliveryTask {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("an HTTP client");
        DeliveryTask { client }
    }
}

impl TaskKind for DeliveryTask {
    fn name(&self) -> &'static str {
        DELIVERY
    }

    fn queue(&self) -> &'static str {
        "webhooks"
    }

    fn max_attempts(&self) -> u32 {
        MAX_ATTEMPTS as u32
    }

    fn run<'a>(
        &'a self,
        core: &'a Plinth,
        task: &'a TaskRun,
    ) -> BoxFuture<'a, Result<serde_json::Value>> {
        Box::pin(async move {
            let id = task.args["delivery"].as_str().unwrap_or_default().to_string();
            let r = core
                .db
                .fetch_optional(&Sql::with(
                    "SELECT d.id, d.event, d.payload, w.url, w.secret, w.deleted_at FROM webhook_deliveries d
                     JOIN webhooks w ON w.id = d.webhook_id WHERE d.id = $1",
                    [id.clone().into()],
                ))
                .await?
                .ok_or_else(|| Error::internal(format!("delivery {id} vanished")))?;
            if col::<Option<i64>>(&r, "deleted_at")?.is_some() {
                return Ok(json!({"skipped": "the webhook was deleted"}));
            }
            let body: String = col(&r, "payload")?;
            let secret: String = col(&r, "secret")?;
            let ts = time::OffsetDateTime::now_utc().unix_timestamp();
            let sent = self
                .client
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
            let last = i64::from(task.attempt) >= MAX_ATTEMPTS;
            let status = match (&error, last) {
                (None, _) => "delivered",
                (Some(_), true) => "failed",
                (Some(_), false) => "pending",
            };
            let mut tx = core.db.begin().await?;
            Sql::with(
                "UPDATE webhook_deliveries SET status = $1, attempts = $2, next_attempt_at = $3, last_status_code = $4, last_error = $5 WHERE id = $6",
                [status.into(), i64::from(task.attempt).into(), now_micros().into(), code.into(), error.clone().into(), id.into()],
            )
            .execute(&mut tx)
            .await?;
            tx.commit().await?;
            match error {
                None => Ok(json!({"status_code": code})),
                Some(e) => {
                    Err(Error::new(plinth_api::Code::Unavailable, format!("delivery failed: {e}")))
                }
            }
        })
    }
}
