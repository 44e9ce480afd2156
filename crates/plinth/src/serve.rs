//! `plinth serve`: open the stores, bootstrap the admin on first start, serve until a signal.

use std::time::Duration;

use anyhow::{Context, Result};
use plinth_core::{CoreOptions, Plinth};
use plinth_server::AppState;

use crate::config::{Config, redact_url};

pub async fn run(config: Config) -> Result<()> {
    init_tracing(&config);
    tracing::info!(
        listen = %config.listen,
        data_dir = %config.data_dir.display(),
        database = %config.database_url.as_ref().map(|u| redact_url(u.expose())).unwrap_or_else(|| "sqlite (in data_dir)".into()),
        max_upload_bytes = config.max_upload_bytes,
        objects = config.object_store_url.as_deref().unwrap_or("local (in data_dir)"),
        "starting plinth"
    );
    let core = Plinth::open_with(
        &CoreOptions {
            data_dir: config.data_dir.clone(),
            database_url: config.database_url.as_ref().map(|u| u.expose().to_string()),
            max_upload_bytes: config.max_upload_bytes,
            online_store_url: config.online_store_url.as_ref().map(|u| u.expose().to_string()),
            nats: config.nats_url.as_deref().map(plinth_core::features::nats::NatsOptions::new),
            local_sources_root: config.local_sources_root.clone(),
            postgres_sources: plinth_core::data::sources::PostgresAccess {
                allowed_hosts: config.postgres_source_hosts.clone(),
                connect_timeout: Duration::from_secs(config.postgres_source_timeout_seconds),
                max_bytes: config.postgres_source_max_bytes,
            },
            tasks: plinth_core::tasks::TaskOptions {
                lease: Duration::from_secs(config.task_lease_seconds),
                queues: crate::config::task_queues(&config.task_queues)?,
                ..plinth_core::tasks::TaskOptions::default()
            },
            figures_every: plinth_core::serving::figures::PUBLISH_EVERY,
            training_commands: config.training_commands,
            metering: config.metering,
        },
        crate::backends(object_store(&config).as_ref())?,
    )
    .await
    .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    match core.bootstrap(config.bootstrap_admin_key.as_ref().map(|k| k.expose())).await {
        Ok(Some(key)) => {
            // Shown once, on the terminal, never in the log.
            eprintln!(
                "\nPlinth bootstrapped a platform admin. Its API key is shown only now:\n\n    {key}\n\nLog in with:  plinth login --url http://{} --key {key}\n",
                config.listen
            );
        }
        Ok(None) => {}
        Err(e) => anyhow::bail!("bootstrap failed: {}", e.message),
    }
    if let Some(poll) = plinth_server::busy_poll::global() {
        poll.set_budget(Duration::from_micros(config.busy_poll_us));
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, replica = core.replica_id(), "plinth is ready");
    // The name this process holds task leases under (`runner` of a running task).
    eprintln!("replica {}", core.replica_id());
    // Scripts starting Plinth on port 0 read the address from this line.
    eprintln!("listening on http://{addr}");
    eprintln!("dashboard at http://{addr}/ui/ (log in with an API key)");
    plinth_server::serve(
        listener,
        AppState {
            metrics_token: config.metrics_token.as_ref().map(|t| t.expose().into()),
            ..AppState::new(core.clone())
        },
        shutdown_signal(),
        Duration::from_secs(config.shutdown_grace_seconds),
    )
    .await?;
    core.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// The S3 store's options, when `object_store_url` is set.
fn object_store(config: &Config) -> Option<plinth_objects::S3Options> {
    Some(plinth_objects::S3Options {
        url: config.object_store_url.clone()?,
        endpoint: config.s3_endpoint.clone(),
        region: config.s3_region.clone(),
        access_key_id: config.s3_access_key_id.clone(),
        secret_access_key: config.s3_secret_access_key.as_ref().map(|s| s.expose().to_string()),
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

fn init_tracing(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person at a terminal: a file, a pipe or a log collector gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let _ =
        if config.log_format == "json" { builder.json().try_init() } else { builder.try_init() };
}
