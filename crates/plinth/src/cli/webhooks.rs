//! `plinth webhook`: subscriptions to events and their delivery log.

use anyhow::Result;
use clap::Subcommand;
use plinth_api::governance::{Delivery, Webhook};
use serde_json::{Value, json};

use super::{Global, connect};
use crate::client::Client;
use crate::output;

/// Webhooks.
#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Webhooks on the platform's events (promotions, versions, deployments, evaluations,
    /// tasks, alerts), and their delivery log.
    #[command(subcommand)]
    Webhook(WebhookCmd),
}

#[derive(Subcommand, Debug)]
pub(crate) enum WebhookCmd {
    /// Subscribe URL to events of TEAM (all events when none is given).
    Add {
        /// The team whose events are sent.
        team: String,
        /// Where the events are POSTed (the global --url is Plinth's own address).
        #[arg(value_name = "URL")]
        endpoint: String,
        /// An event to send, e.g. promotion.requested or alert.firing (repeatable; default: all).
        #[arg(long = "event")]
        events: Vec<String>,
        /// The body's shape: plinth (every event), alertmanager or pagerduty (alert events).
        #[arg(long, default_value = "plinth")]
        format: String,
        /// PagerDuty's integration routing key (with --format pagerduty).
        #[arg(long)]
        routing_key: Option<String>,
    },
    List {
        /// The team's name.
        team: String,
    },
    Remove {
        /// The team that owns the webhook.
        team: String,
        /// The webhook's id (see `plinth webhook list`).
        id: String,
    },
    /// The delivery log of a webhook.
    Deliveries {
        /// The team that owns the webhook.
        team: String,
        /// The webhook's id (see `plinth webhook list`).
        id: String,
    },
}

pub(crate) async fn run(g: &Global, cmd: Command) -> Result<()> {
    match cmd {
        Command::Webhook(cmd) => webhook(&connect(g)?, g.json, cmd).await,
    }
}

pub(super) async fn webhook(c: &Client, json_out: bool, cmd: WebhookCmd) -> Result<()> {
    match cmd {
        WebhookCmd::Add { team, endpoint, events, format, routing_key } => {
            let w: Webhook = c
                .post(
                    &format!("/teams/{team}/webhooks"),
                    &json!({"url": endpoint, "events": events, "format": format, "routing_key": routing_key}),
                )
                .await?;
            if json_out {
                output::json(&w);
            } else {
                output::fields(&[
                    ("webhook", w.id.clone()),
                    ("url", w.url.clone()),
                    ("secret", w.secret.clone().unwrap_or_default()),
                ]);
                eprintln!("keep the secret: it is shown only once (it signs X-Plinth-Signature)");
            }
        }
        WebhookCmd::List { team } => {
            let l: Vec<Webhook> = c.get(&format!("/teams/{team}/webhooks"), &[]).await?;
            if json_out {
                output::json(&l);
            } else {
                output::table(
                    &["webhook", "url", "events"],
                    l.iter()
                        .map(|w| {
                            vec![
                                w.id.clone(),
                                w.url.clone(),
                                if w.events.is_empty() {
                                    "all".into()
                                } else {
                                    w.events.join(", ")
                                },
                            ]
                        })
                        .collect(),
                );
            }
        }
        WebhookCmd::Remove { team, id } => {
            let _: Value = c.delete(&format!("/teams/{team}/webhooks/{id}")).await?;
            println!("removed {id}");
        }
        WebhookCmd::Deliveries { team, id } => {
            let l: Vec<Delivery> =
                c.get(&format!("/teams/{team}/webhooks/{id}/deliveries"), &[]).await?;
            if json_out {
                output::json(&l);
            } else {
                output::table(
                    &["delivery", "event", "status", "attempts", "last answer", "created"],
                    l.iter()
                        .map(|d| {
                            vec![
                                d.id.clone(),
                                d.event.clone(),
                                d.status.clone(),
                                d.attempts.to_string(),
                                d.last_status_code
                                    .map(|c| c.to_string())
                                    .or(d.last_error.clone())
                                    .unwrap_or_default(),
                                output::time(&d.created_at),
                            ]
                        })
                        .collect(),
                );
            }
        }
    }
    Ok(())
}
