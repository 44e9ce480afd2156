//! Plinth's domain, independent of HTTP: identities and authorization, the audit log, the model
//! registry, and the stores they persist to.
//!
//! [`Plinth`] is the one entry point. Every method that touches team data takes the caller's
//! [`auth::Principal`] and authorizes it itself, so the HTTP API, the CLI and background jobs all
//! pass through the same checks.

pub mod audit;
pub mod auth;
pub mod billing;
mod card;
pub mod data;
pub mod error;
pub mod eval;
mod events;
pub mod features;
mod governance;
pub mod identity;
pub mod mlflow;
pub mod monitoring;
pub mod registry;
mod replicas;
pub mod serving;
pub mod store;
pub mod tasks;
pub mod training;
pub mod util;
pub mod webhooks;

use std::path::PathBuf;
use std::sync::Arc;

pub use error::{Error, Result};
use store::Db;
use store::artifacts::{ArtifactStore, LocalArtifacts, Staging};

/// How to open the core.
#[derive(Debug, Clone)]
pub struct CoreOptions {
    /// Where local state lives: the SQLite database (by default), artifacts and staging.
    pub data_dir: PathBuf,
    /// `sqlite://...` or `postgres://...`; default: SQLite in `data_dir`.
    pub database_url: Option<String>,
    /// The largest model artifact accepted, in bytes.
    pub max_upload_bytes: u64,
    /// The online feature store: `redis://...`, or `None` for the embedded store in `data_dir`.
    pub online_store_url: Option<String>,
    /// Consume feature pushes from NATS JetStream.
    pub nats: Option<features::nats::NatsOptions>,
    /// File and folder sources live in `<this folder>/<team>/` (none: such sources are refused).
    pub local_sources_root: Option<PathBuf>,
    /// The PostgreSQL servers sources may read (none by default).
    pub postgres_sources: data::sources::PostgresAccess,
    /// How this process runs background tasks.
    pub tasks: tasks::TaskOptions,
    /// How often this replica publishes its serving figures and rolls them up into the health
    /// minutes ([`serving::figures::PUBLISH_EVERY`] in a server).
    pub figures_every: std::time::Duration,
    /// Whether recipes may run their own training command (off: refused).
    pub training_commands: bool,
    /// Meter usage and enforce quotas (off: nothing is metered, no quota is enforced, and no
    /// hook hangs on the prediction path).
    pub metering: bool,
}

/// The core service.
#[derive(Clone)]
pub struct Plinth {
    pub(crate) db: Db,
    pub(crate) artifacts: Arc<dyn ArtifactStore>,
    staging: Staging,
    max_upload_bytes: u64,
    pub(crate) engine: Arc<serving::engine::Engine>,
    pub(crate) auth_cache: Arc<auth::AuthCache>,
    pub(crate) tables: Arc<dyn data::TableReader>,
    pub(crate) query_engine: Arc<dyn data::query::QueryEngine>,
    pub(crate) trainer: Arc<dyn training::Trainer>,
    pub(crate) training_commands: bool,
    pub(crate) tasks: Arc<tasks::Tasks>,
    pub(crate) online: Arc<dyn features::online::OnlineStore>,
    pub(crate) views: Arc<features::ViewCache>,
    /// Online rows rendered as JSON, by content (see `features::rendered`).
    pub(crate) rendered: Arc<features::RenderCache>,
    pub(crate) sources_root: Option<PathBuf>,
    pub(crate) postgres: data::sources::PostgresAccess,
    /// This replica's health rollup state (see `monitoring::health`).
    pub(crate) health: Arc<tokio::sync::Mutex<monitoring::health::Rollup>>,
    /// Drift baselines summarized (see `monitoring::served`).
    pub(crate) baselines: Arc<monitoring::served::Baselines>,
    /// The latest alert states and drift scores, for `/metrics` (see `monitoring::alerts`).
    pub(crate) monitoring_gauges: Arc<monitoring::alerts::Gauges>,
    /// Team limits enforced on the prediction path (see `billing::quotas`).
    pub(crate) quota_gate: Arc<billing::quotas::QuotaGate>,
    /// What hangs on every prediction (quotas, metering, monitoring), in order.
    pub(crate) prediction_hooks: Vec<Arc<dyn serving::predict::PredictionHook>>,
}

/// The pluggable engines the core runs on: model inference, table decoding, SQL and, for
/// replicas, the object store they share. Each lives in a crate of its own so that the core
/// builds without them.
#[derive(Clone)]
pub struct Backends {
    pub inference: Arc<dyn serving::runtime::InferenceBackend>,
    pub tables: Arc<dyn data::TableReader>,
    pub query: Arc<dyn data::query::QueryEngine>,
    /// Where artifacts, datasets and shipped prediction-log segments live; `None` for the
    /// local folder in `data_dir` (one process).
    pub objects: Option<Arc<dyn ArtifactStore>>,
    /// The built-in trainers (`plinth-train`).
    pub trainer: Arc<dyn training::Trainer>,
}

impl Default for Backends {
    fn default() -> Self {
        Backends {
            inference: Arc::new(serving::runtime::NoBackend),
            tables: Arc::new(data::NoTables),
            query: Arc::new(data::query::NoQuery),
            objects: None,
            trainer: Arc::new(training::NoTrainer),
        }
    }
}

/// How old an unreferenced artifact must be before it is collected: a registration publishes its
/// artifact and then commits its version, and another replica may be between the two steps.
pub(crate) const ORPHAN_GRACE_US: i64 = 3_600_000_000;

/// Every kind of task, registered by the module that owns it.
fn task_kinds() -> tasks::Registry {
    let mut r = tasks::Registry::default();
    eval::register(&mut r);
    features::register(&mut r);
    r.register(webhooks::DeliveryTask::new());
    r.register(registry::CollectOrphans);
    r.register(monitoring::alerts::EvaluateAlerts);
    training::register(&mut r);
    billing::register(&mut r);
    r
}

impl Plinth {
    /// Opens the stores (creating and migrating them as needed) and cleans up what an interrupted
    /// run left behind.
    pub async fn open(opts: &CoreOptions) -> Result<Plinth> {
        Plinth::open_with(opts, Backends::default()).await
    }

    /// Opens the core with its inference and table backends, and starts the background work
    /// (jobs, webhook deliveries).
    pub async fn open_with(opts: &CoreOptions, backends: Backends) -> Result<Plinth> {
        let backend = backends.inference;
        std::fs::create_dir_all(&opts.data_dir).map_err(|e| {
            Error::new(
                plinth_api::Code::Unavailable,
                format!("cannot create data directory {}: {e}", opts.data_dir.display()),
            )
        })?;
        let url = match &opts.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}?mode=rwc", opts.data_dir.join("plinth.db").display()),
        };
        let db = Db::open(&url).await?;
        let artifacts: Arc<dyn ArtifactStore> = match &backends.objects {
            Some(store) => store.clone(),
            None => Arc::new(LocalArtifacts::open(opts.data_dir.join("artifacts"))?),
        };
        let staging = Staging::open(opts.data_dir.join("staging"))?;
        let online: Arc<dyn features::online::OnlineStore> = match &opts.online_store_url {
            Some(url) if url.starts_with("redis://") || url.starts_with("rediss://") => {
                Arc::new(features::online::RedisStore::open(url, "plinth:").await?)
            }
            Some(other) => {
                return Err(Error::invalid(
                    "online_store_url",
                    format!(
                        "'{other}' is not a redis:// URL (leave it unset for the embedded store)"
                    ),
                ));
            }
            None => {
                Arc::new(features::online::EmbeddedStore::open(&opts.data_dir.join("online.redb"))?)
            }
        };
        // With a shared store, each replica ships its closed log segments there.
        let shared_log = backends.objects.as_ref().map(|store| serving::predlog::Shared {
            store: store.clone(),
            staging: staging.clone(),
        });
        let log =
            serving::predlog::PredictionLog::open(opts.data_dir.join("predictions"), shared_log)?;
        let engine = Arc::new(serving::engine::Engine::new(
            db.clone(),
            artifacts.clone(),
            backend,
            log,
            opts.metering,
        ));
        let quota_gate = Arc::new(billing::quotas::QuotaGate::default());
        let core = Plinth {
            db,
            artifacts,
            staging,
            max_upload_bytes: opts.max_upload_bytes,
            engine,
            auth_cache: Arc::new(auth::AuthCache::default()),
            tables: backends.tables,
            query_engine: backends.query,
            trainer: backends.trainer,
            training_commands: opts.training_commands,
            tasks: Arc::new(tasks::Tasks::new(task_kinds(), opts.tasks.clone())),
            online,
            views: Arc::default(),
            rendered: Arc::default(),
            sources_root: opts.local_sources_root.clone(),
            postgres: opts.postgres_sources.clone(),
            prediction_hooks: if opts.metering { vec![quota_gate.clone()] } else { Vec::new() },
            quota_gate,
            health: Arc::default(),
            baselines: Arc::default(),
            monitoring_gauges: Arc::default(),
        };
        let removed = core.collect_orphan_artifacts(util::now_micros() - ORPHAN_GRACE_US).await?;
        if removed > 0 {
            tracing::info!(removed, "deleted artifacts of registrations that never committed");
        }
        registry::ensure_collection_schedule(&core).await?;
        monitoring::alerts::ensure_schedule(&core).await?;
        training::triggers::ensure_schedule(&core).await?;
        billing::ensure_schedules(&core).await?;
        core.engine.load_all().await?;
        core.sync_quotas().await?;
        core.start_change_watch().await?;
        core.start_publishing_figures(opts.figures_every);
        core.start_tasks();
        core.start_schedules();
        core.start_consumers(vec![Arc::new(webhooks::WebhookConsumer)]);
        if let Some(nats) = &opts.nats {
            core.start_nats(nats).await?;
        }
        Ok(core)
    }

    /// Hangs `hook` on every prediction from now on, after the ones already there (see
    /// [`serving::predict::PredictionHook`]).
    pub fn add_prediction_hook(&mut self, hook: Arc<dyn serving::predict::PredictionHook>) {
        self.prediction_hooks.push(hook);
    }

    /// The staging area for uploads.
    pub fn staging(&self) -> &Staging {
        &self.staging
    }

    pub fn max_upload_bytes(&self) -> u64 {
        self.max_upload_bytes
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub fn artifact_store(&self) -> &dyn ArtifactStore {
        self.artifacts.as_ref()
    }

    /// Resolves an API key to its principal (cached for a few seconds).
    pub async fn authenticate(&self, presented_key: &str) -> Result<auth::Principal> {
        self.auth_cache.authenticate(&self.db, presented_key).await
    }

    /// The live serving engine.
    pub fn engine(&self) -> &serving::engine::Engine {
        &self.engine
    }

    /// Alert states and drift scores in Prometheus text format.
    pub fn render_monitoring_metrics(&self, out: &mut String) {
        self.monitoring_gauges.render(out);
    }

    /// True when the stores answer.
    pub async fn ready(&self) -> bool {
        self.db.ping().await
    }

    pub async fn close(&self) {
        self.tasks.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.tasks.wake.notify_waiters();
        let rolled = {
            let mut state = self.health.lock().await;
            self.roll_up_health(&mut state, util::now_micros()).await
        };
        if let Err(e) = rolled {
            tracing::warn!(error = %e, "cannot roll up the last health figures");
        }
        if let Err(e) = self.flush_monitoring_at(util::now_micros()).await {
            tracing::warn!(error = %e, "cannot write the last captured predictions");
        }
        if let Err(e) = self.engine.log.ship_all().await {
            tracing::warn!(error = %e, "cannot ship the last prediction-log segments; the next start ships them");
        }
        self.db.close().await;
    }
}
