//! Streaming pushes from NATS JetStream: a message on `<prefix>.<team>.<view>` holding a JSON
//! array of rows (as in the push API) is written to the view's online store. A durable consumer
//! keeps the position across restarts; a message is acknowledged once written, or when it can
//! never be written (bad rows, an unknown view: logged and dropped); a store failure asks for
//! redelivery.

use futures_util::StreamExt;

use crate::Plinth;
use crate::error::{Error, Result};

/// Where to read pushes from.
#[derive(Debug, Clone)]
pub struct NatsOptions {
    /// `nats://host:port`.
    pub url: String,
    /// The JetStream stream (created when missing).
    pub stream: String,
    /// Subjects are `<prefix>.<team>.<view>`.
    pub subject_prefix: String,
}

impl NatsOptions {
    pub fn new(url: &str) -> NatsOptions {
        NatsOptions {
            url: url.to_string(),
            stream: "PLINTH_PUSH".into(),
            subject_prefix: "plinth.push".into(),
        }
    }
}

fn unavailable(e: impl std::fmt::Display) -> Error {
    Error::new(plinth_api::Code::Unavailable, format!("NATS: {e}"))
}

impl Plinth {
    /// Connects, makes sure the stream and the durable consumer exist, and starts consuming.
    pub(crate) async fn start_nats(&self, opts: &NatsOptions) -> Result<()> {
        use async_nats::jetstream::{self, consumer, stream};
        let client = async_nats::connect(&opts.url).await.map_err(unavailable)?;
        let js = jetstream::new(client);
        let s = js
            .get_or_create_stream(stream::Config {
                name: opts.stream.clone(),
                subjects: vec![format!("{}.>", opts.subject_prefix)],
                ..Default::default()
            })
            .await
            .map_err(unavailable)?;
        let c = s
            .get_or_create_consumer(
                "plinth-push",
                consumer::pull::Config {
                    durable_name: Some("plinth-push".into()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ..Default::default()
                },
            )
            .await
            .map_err(unavailable)?;
        let mut messages = c.messages().await.map_err(unavailable)?;
        let core = self.clone();
        let prefix = format!("{}.", opts.subject_prefix);
        tokio::spawn(async move {
            use std::sync::atomic::Ordering;
            while let Some(next) = messages.next().await {
                if core.tasks.stop.load(Ordering::Relaxed) {
                    break;
                }
                let msg = match next {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, "NATS consumer error");
                        continue;
                    }
                };
                let outcome = core.consume(&msg.subject, &prefix, &msg.payload).await;
                let ack = match outcome {
                    Ok(n) => {
                        tracing::debug!(subject = %msg.subject, written = n, "NATS push");
                        msg.ack().await
                    }
                    Err(e) if e.code == plinth_api::Code::Unavailable => {
                        tracing::warn!(subject = %msg.subject, error = %e, "NATS push failed; asking for redelivery");
                        msg.ack_with(async_nats::jetstream::AckKind::Nak(None)).await
                    }
                    Err(e) => {
                        tracing::warn!(subject = %msg.subject, error = %e, "NATS push refused; dropped");
                        msg.ack_with(async_nats::jetstream::AckKind::Term).await
                    }
                };
                if let Err(e) = ack {
                    tracing::warn!(error = %e, "cannot acknowledge a NATS message");
                }
            }
        });
        tracing::info!(url = %opts.url, stream = %opts.stream, "consuming feature pushes from NATS");
        Ok(())
    }

    async fn consume(&self, subject: &str, prefix: &str, payload: &[u8]) -> Result<u64> {
        let rest = subject.strip_prefix(prefix).unwrap_or_default();
        let (team, view) = rest.split_once('.').ok_or_else(|| {
            Error::invalid("subject", format!("'{subject}' is not {prefix}<team>.<view>"))
        })?;
        let rows: Vec<serde_json::Map<String, serde_json::Value>> = serde_json::from_slice(payload)
            .map_err(|e| Error::invalid("payload", format!("not a JSON array of rows: {e}")))?;
        let meta = self.view_meta(team, view).await?;
        Ok(self.push_rows(&meta, &rows).await?.written)
    }
}
