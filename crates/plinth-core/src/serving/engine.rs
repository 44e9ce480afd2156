//! The live serving engine: the deployments currently serving, kept in memory so a prediction
//! touches no database; routing by weight or sticky key; shadow copies; the prediction log;
//! and metrics.
//!
//! Changing a deployment builds a new [`Live`] and swaps it in; requests already routed keep the
//! runners they hold, and runners of versions that stay are reused with their loaded models, so
//! hot swaps and rollbacks fail no request.

use std::collections::{HashMap, HashSet};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use plinth_api::Code;
use plinth_api::registry::{ModelFormat, Signature, Task};
use plinth_api::serving::DeploymentSpec;

use super::metrics::{DeploymentStats, label};
use super::predlog::{Entry, PredictionLog};
pub use super::runner::Runner;
use super::runner::{Clients, Outputs, RunnerConfig, VersionSource};
use super::runtime::InferenceBackend;
use super::tensor::Tensor;
use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::store::artifacts::ArtifactStore;
use crate::store::{Db, Sql, col};
use crate::util::now_micros;

/// A deployment as it serves now.
pub struct Live {
    pub deployment_id: String,
    pub team_id: String,
    pub team: String,
    pub model: String,
    pub environment: String,
    pub model_id: String,
    /// The model's task (how its outputs are read for monitoring).
    pub task: Task,
    pub revision: u32,
    pub spec: DeploymentSpec,
    /// `(cumulative weight, runner)`: a draw in `0..100` goes to the first bound above it.
    routes: Vec<(u32, Arc<Runner>)>,
    pub shadows: Vec<Arc<Runner>>,
    grants: HashSet<String>,
    pub stats: Arc<DeploymentStats>,
}

impl Live {
    /// The runner for a request: by the sticky key's hash, or at random, by weight.
    pub fn route(&self, key: Option<&str>) -> &Arc<Runner> {
        let draw = match key {
            Some(k) => (crate::util::fnv1a(k.as_bytes()) % 100) as u32,
            None => (fast_random() % 100) as u32,
        };
        self.routes
            .iter()
            .find(|(bound, _)| draw < *bound)
            .map(|(_, r)| r)
            .unwrap_or(&self.routes[self.routes.len() - 1].1)
    }

    /// The runners serving traffic, in spec order.
    pub fn runners(&self) -> impl Iterator<Item = &Arc<Runner>> {
        self.routes.iter().map(|(_, r)| r)
    }

    /// The runner of a served version, if it serves in this deployment.
    pub fn runner_for(&self, version: u32) -> Option<&Arc<Runner>> {
        self.runners().find(|r| r.source.version == version)
    }

    /// The signature requests are checked against: the first served version's.
    pub fn signature(&self) -> &Signature {
        &self.routes[0].1.source.signature
    }

    /// May `who` call this deployment? Its own team (any role), granted teams, platform roles,
    /// or anyone when it is public. Others get `not_found`.
    pub fn authorize(&self, who: Option<&Principal>) -> Result<()> {
        if self.spec.public {
            return Ok(());
        }
        let Some(who) = who else {
            return Err(Error::new(
                Code::Unauthenticated,
                "no API key: send 'Authorization: Bearer <key>'",
            ));
        };
        if who.role_in(&self.team_id).is_some() || who.teams.keys().any(|t| self.grants.contains(t))
        {
            return Ok(());
        }
        Err(self.not_found())
    }

    pub fn not_found(&self) -> Error {
        Error::not_found("deployment", format!("{}/{}@{}", self.team, self.model, self.environment))
    }
}

/// The engine table's key of a deployment: `team/model/environment` (a name holds no '/', so
/// keys of different deployments differ, and a name with one finds nothing).
fn table_key(key: &mut String, team: &str, model: &str, environment: &str) {
    key.clear();
    key.push_str(team);
    key.push('/');
    key.push_str(model);
    key.push('/');
    key.push_str(environment);
}

fn fast_random() -> u64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new(rand::random::<u64>() | 1);
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x
    })
}

pub struct Engine {
    db: Db,
    artifacts: Arc<dyn ArtifactStore>,
    backend: Arc<dyn InferenceBackend>,
    pub log: Arc<PredictionLog>,
    /// Live deployments by [`table_key`].
    table: RwLock<HashMap<String, Arc<Live>>>,
    runners: Mutex<HashMap<(String, u32), Arc<Runner>>>,
    stats: Mutex<HashMap<String, Arc<DeploymentStats>>>,
    pub started: Instant,
    pub predictions: AtomicU64,
    /// Client connections open to the HTTP server (it counts them; runners batch by them).
    pub clients: Clients,
    /// Whether usage is metered and quotas enforced.
    pub metering: bool,
    /// The counters of runners a deployment change retired, by deployment: the rollup adds
    /// them to what the deployment's live runners counted, so that a version leaving traffic
    /// before the next rollup loses none of its predictions to metering.
    retired: Mutex<HashMap<String, Vec<super::figures::VersionFigures>>>,
}

/// One prediction request, as the engine takes it.
pub struct Call<'a> {
    /// Who asked (a principal name, or `anonymous`), for the prediction log.
    pub caller: &'a str,
    pub request_id: &'a str,
    /// The caller's prediction ids, one per row (kept for labels).
    pub ids: Option<&'a [String]>,
    pub inputs: Vec<(String, Tensor)>,
    pub rows: usize,
    /// Sticky routing: the same key always reaches the same version.
    pub routing_key: Option<&'a str>,
    /// Answer from this served version instead of routing.
    pub runner: Option<&'a Arc<Runner>>,
}

/// What a prediction answered.
pub struct Answer {
    pub version: u32,
    pub outputs: Outputs,
}

impl Engine {
    pub fn new(
        db: Db,
        artifacts: Arc<dyn ArtifactStore>,
        backend: Arc<dyn InferenceBackend>,
        log: Arc<PredictionLog>,
        metering: bool,
    ) -> Engine {
        Engine {
            metering,
            retired: Mutex::new(HashMap::new()),
            db,
            artifacts,
            backend,
            log,
            table: RwLock::new(HashMap::new()),
            runners: Mutex::new(HashMap::new()),
            stats: Mutex::new(HashMap::new()),
            started: Instant::now(),
            predictions: AtomicU64::new(0),
            clients: Clients::default(),
        }
    }

    pub fn backend(&self) -> &dyn InferenceBackend {
        self.backend.as_ref()
    }

    pub(crate) fn backend_arc(&self) -> Arc<dyn InferenceBackend> {
        self.backend.clone()
    }

    /// Loads every deployment from the database (at start).
    pub async fn load_all(&self) -> Result<()> {
        let rows = self.db.fetch_all(&Sql::new("SELECT id FROM deployments")).await?;
        for row in rows {
            let id: String = col(&row, "id")?;
            if let Err(e) = self.refresh(&id).await {
                tracing::error!(deployment = id, error = %e, "cannot serve a deployment");
            }
        }
        Ok(())
    }

    /// Where a version's artifact is, for a model id and version number.
    pub async fn version_source(
        &self,
        model_id: &str,
        version: u32,
    ) -> Result<Option<VersionSource>> {
        let row = self
            .db
            .fetch_optional(&Sql::with(
                "SELECT v.id, v.format, v.artifact_key, v.artifact_size, v.signature, v.archived_at, s.features
                 FROM model_versions v LEFT JOIN feature_services s ON s.team_id = v.team_id AND s.name = v.feature_service
                 WHERE v.model_id = $1 AND v.version = $2",
                [model_id.into(), i64::from(version).into()],
            ))
            .await?;
        let Some(row) = row else { return Ok(None) };
        if col::<Option<i64>>(&row, "archived_at")?.is_some() {
            return Ok(None);
        }
        let format: String = col(&row, "format")?;
        Ok(Some(VersionSource {
            version,
            version_id: col(&row, "id")?,
            format: ModelFormat::parse(&format)
                .ok_or_else(|| Error::internal(format!("bad format {format}")))?,
            artifact_key: col(&row, "artifact_key")?,
            artifact_size: col::<i64>(&row, "artifact_size")?.max(0) as u64,
            signature: serde_json::from_str(&col::<String>(&row, "signature")?)?,
            feature_refs: col::<Option<String>>(&row, "features")?
                .map(|f| serde_json::from_str::<Vec<String>>(&f).map(Into::into))
                .transpose()?,
        }))
    }

    fn runner(
        &self,
        deployment_id: &str,
        source: VersionSource,
        config: RunnerConfig,
    ) -> Arc<Runner> {
        let mut runners = self.runners.lock().expect("runners lock");
        let key = (deployment_id.to_string(), source.version);
        match runners.get(&key) {
            Some(r) => {
                r.set_config(config);
                r.clone()
            }
            None => {
                let r = Arc::new(Runner::new(
                    source,
                    config,
                    self.backend.clone(),
                    self.artifacts.clone(),
                    self.clients.clone(),
                ));
                runners.insert(key, r.clone());
                r
            }
        }
    }

    /// Loads a version and checks it can be served (used before a deployment change commits).
    pub async fn check_servable(
        &self,
        deployment_hint: &str,
        model_id: &str,
        version: u32,
        spec: &DeploymentSpec,
    ) -> Result<()> {
        let source = self.version_source(model_id, version).await?.ok_or_else(|| {
            Error::invalid("versions", format!("version {version} does not exist or is archived"))
        })?;
        let config =
            RunnerConfig { batching: spec.batching, scaling: spec.scaling, limits: spec.limits };
        let runner = self.runner(deployment_hint, source, config);
        runner.model().await.map_err(|e| Error::invalid("versions", e.message))?;
        // Loaded now: unloaded again if it stays idle.
        runner.ensure_worker();
        Ok(())
    }

    /// Rebuilds the live state of one deployment from the database and swaps it in.
    pub async fn refresh(&self, deployment_id: &str) -> Result<()> {
        let row = self
            .db
            .fetch_optional(&Sql::with(
                "SELECT d.*, t.name AS team_name, m.name AS model_name, m.task AS model_task FROM deployments d
                 JOIN teams t ON t.id = d.team_id JOIN models m ON m.id = d.model_id WHERE d.id = $1",
                [deployment_id.into()],
            ))
            .await?
            .ok_or_else(|| Error::internal(format!("deployment {deployment_id} vanished")))?;
        let spec: DeploymentSpec = serde_json::from_str(&col::<String>(&row, "spec")?)?;
        let model_id: String = col(&row, "model_id")?;
        let config =
            RunnerConfig { batching: spec.batching, scaling: spec.scaling, limits: spec.limits };
        let mut routes = Vec::new();
        let mut bound = 0;
        for split in spec.versions.iter().filter(|s| s.weight > 0) {
            let source = self.version_source(&model_id, split.version).await?.ok_or_else(|| {
                Error::internal(format!("deployed version {} is missing", split.version))
            })?;
            bound += split.weight;
            routes.push((bound, self.runner(deployment_id, source, config)));
        }
        if routes.is_empty() {
            return Err(Error::internal("a deployment without traffic"));
        }
        let mut shadows = Vec::new();
        for &v in &spec.shadows {
            if let Some(source) = self.version_source(&model_id, v).await? {
                shadows.push(self.runner(deployment_id, source, config));
            }
        }
        let grants = self
            .db
            .fetch_all(&Sql::with(
                "SELECT team_id FROM deployment_grants WHERE deployment_id = $1",
                [deployment_id.into()],
            ))
            .await?
            .iter()
            .map(|r| col::<String>(r, "team_id"))
            .collect::<Result<HashSet<_>>>()?;
        let stats = self
            .stats
            .lock()
            .expect("stats lock")
            .entry(deployment_id.to_string())
            .or_default()
            .clone();
        let live = Arc::new(Live {
            deployment_id: deployment_id.to_string(),
            team_id: col(&row, "team_id")?,
            team: col(&row, "team_name")?,
            model: col(&row, "model_name")?,
            environment: col(&row, "environment")?,
            task: Task::parse(&col::<String>(&row, "model_task")?)
                .ok_or_else(|| Error::internal("bad model task"))?,
            model_id: model_id.clone(),
            revision: col::<i64>(&row, "revision")? as u32,
            spec,
            routes,
            shadows,
            grants,
            stats,
        });
        self.log.set_retention(deployment_id, live.spec.log_retention);
        let mut key = String::new();
        table_key(&mut key, &live.team, &live.model, &live.environment);
        let before = self.table.write().expect("table lock").insert(key, live.clone());
        // Forget runners of versions no longer served (in-flight requests still hold theirs),
        // keeping what they counted.
        let keep: HashSet<u32> =
            live.runners().chain(live.shadows.iter()).map(|r| r.source.version).collect();
        if let Some(before) = before {
            let gone = before
                .runners()
                .map(|r| (r, false))
                .chain(before.shadows.iter().map(|r| (r, true)))
                .filter(|(r, _)| !keep.contains(&r.source.version));
            let mut retired = self.retired.lock().expect("retired lock");
            let list = retired.entry(deployment_id.to_string()).or_default();
            for (r, shadow) in gone {
                let mut f = version_figures(r, shadow);
                f.forget_gauges();
                match list.iter_mut().find(|o| o.version == f.version && o.shadow == shadow) {
                    Some(o) => o.add_counters(&f),
                    None => list.push(f),
                }
            }
        }
        self.runners
            .lock()
            .expect("runners lock")
            .retain(|(d, v), _| d != deployment_id || keep.contains(v));
        Ok(())
    }

    /// The live deployment of a model in an environment.
    pub(crate) fn resolve(&self, team: &str, model: &str, environment: &str) -> Option<Arc<Live>> {
        // The key is built in a buffer kept per thread: no allocation per request.
        thread_local! {
            static KEY: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
        }
        KEY.with_borrow_mut(|key| {
            table_key(key, team, model, environment);
            self.table.read().expect("table lock").get(key.as_str()).cloned()
        })
    }

    /// Every live deployment.
    pub(crate) fn all(&self) -> Vec<Arc<Live>> {
        let mut v: Vec<Arc<Live>> =
            self.table.read().expect("table lock").values().cloned().collect();
        v.sort_by(|a, b| {
            (&a.team, &a.model, &a.environment).cmp(&(&b.team, &b.model, &b.environment))
        });
        v
    }

    /// Answers a prediction from the routed version (or a given served version), copies it to
    /// the shadows, and logs it. Called by [`super::predict::Prediction`], which authorized the
    /// caller and checked the inputs.
    pub(crate) async fn predict(&self, live: &Arc<Live>, call: Call<'_>) -> Result<Answer> {
        let Call { caller, request_id, ids, inputs, rows, routing_key, runner } = call;
        let started = Instant::now();
        let runner = runner.unwrap_or_else(|| live.route(routing_key)).clone();
        let sampled = live.spec.log_sample_rate >= 1.0
            || (fast_random() % 1_000_000) as f64 / 1e6 < live.spec.log_sample_rate;
        let keep_inputs = sampled || !live.shadows.is_empty() || live.spec.monitor;
        let inputs = Arc::new(inputs);
        let copy = keep_inputs.then(|| inputs.clone());
        let result = runner.submit(inputs, rows).await;
        let elapsed = started.elapsed();
        if live.spec.monitor
            && let (Ok(outputs), Some(inputs)) = (&result, &copy)
        {
            live.stats.capture.record(
                live.task,
                &runner.source.signature,
                runner.source.version,
                request_id,
                ids.filter(|_| live.spec.keep_predictions),
                inputs,
                outputs,
                rows,
                live.spec.keep_predictions,
            );
        }
        // Requests and errors are counted by the prediction around this call (`predict.rs`).
        live.stats.rows.fetch_add(rows as u64, Ordering::Relaxed);
        live.stats.latency.observe(elapsed.as_secs_f64());
        self.predictions.fetch_add(rows as u64, Ordering::Relaxed);
        if let Some(inputs) = copy {
            let at = now_micros();
            for shadow in &live.shadows {
                let (shadow, inputs, live) = (shadow.clone(), inputs.clone(), live.clone());
                let (log, caller, request_id) =
                    (self.log.clone(), caller.to_string(), request_id.to_string());
                tokio::spawn(async move {
                    let started = Instant::now();
                    let outputs = shadow.submit(inputs.clone(), rows).await;
                    if sampled {
                        log.append(Entry {
                            deployment_id: &live.deployment_id,
                            at_micros: now_micros(),
                            request_id: &request_id,
                            version: shadow.source.version,
                            shadow: true,
                            caller: &caller,
                            inputs: &inputs,
                            outputs: outputs.as_deref().map_err(|e| e.message.as_str()),
                            latency_us: started.elapsed().as_micros() as u64,
                        });
                    }
                });
            }
            if sampled {
                self.log.append(Entry {
                    deployment_id: &live.deployment_id,
                    at_micros: at,
                    request_id,
                    version: runner.source.version,
                    shadow: false,
                    caller,
                    inputs: &inputs,
                    outputs: result.as_deref().map_err(|e| e.message.as_str()),
                    latency_us: elapsed.as_micros() as u64,
                });
            }
        }
        Ok(Answer { version: runner.source.version, outputs: result? })
    }

    /// A deployment's figures.
    /// This process's figures of a live deployment.
    /// A deployment's figures with the counters of the runners its changes retired added in:
    /// cumulative over every version it served in this process (the rollup's view).
    pub(crate) fn figures_with_retired(&self, live: &Live) -> super::figures::Figures {
        let mut f = self.figures(live);
        if let Some(retired) = self.retired.lock().expect("retired lock").get(&live.deployment_id) {
            for r in retired {
                match f.versions.iter_mut().find(|v| v.version == r.version && v.shadow == r.shadow)
                {
                    Some(v) => v.add_counters(r),
                    None => f.versions.push(r.clone()),
                }
            }
        }
        f
    }

    pub(crate) fn figures(&self, live: &Live) -> super::figures::Figures {
        let s = &live.stats;
        let versions = live
            .runners()
            .map(|r| (r, false))
            .chain(live.shadows.iter().map(|r| (r, true)))
            .map(|(r, shadow)| version_figures(r, shadow))
            .collect();
        super::figures::Figures {
            requests: s.requests.load(Ordering::Relaxed),
            rows: s.rows.load(Ordering::Relaxed),
            errors: s.errors(),
            latency_counts: s.latency.counts(),
            latency_sum_micro: s.latency.sum_micro(),
            log_dropped: self.log.dropped(&live.deployment_id),
            versions,
        }
    }

    /// Every deployment's figures in Prometheus text format.
    pub fn render_prometheus(&self, out: &mut String) {
        let lives = self.all();
        let help = |out: &mut String, name: &str, kind: &str, text: &str| {
            let _ = writeln!(out, "# HELP {name} {text}\n# TYPE {name} {kind}");
        };
        help(out, "plinth_requests_total", "counter", "Prediction requests per deployment.");
        for l in &lives {
            let _ = writeln!(
                out,
                "plinth_requests_total{{{}}} {}",
                dep_labels(l),
                l.stats.requests.load(Ordering::Relaxed)
            );
        }
        help(out, "plinth_rows_total", "counter", "Rows predicted per deployment.");
        for l in &lives {
            let _ = writeln!(
                out,
                "plinth_rows_total{{{}}} {}",
                dep_labels(l),
                l.stats.rows.load(Ordering::Relaxed)
            );
        }
        help(
            out,
            "plinth_request_errors_total",
            "counter",
            "Failed prediction requests by error code.",
        );
        for l in &lives {
            for (code, n) in l.stats.errors() {
                let _ = writeln!(
                    out,
                    "plinth_request_errors_total{{{},code=\"{}\"}} {n}",
                    dep_labels(l),
                    label(&code)
                );
            }
        }
        help(
            out,
            "plinth_request_duration_seconds",
            "histogram",
            "Prediction latency, queueing included.",
        );
        for l in &lives {
            l.stats.latency.render(out, "plinth_request_duration_seconds", &dep_labels(l));
        }
        help(
            out,
            "plinth_monitoring_dropped_total",
            "counter",
            "Predicted rows not kept for their labels: too many waited to be written.",
        );
        for l in &lives {
            let _ = writeln!(
                out,
                "plinth_monitoring_dropped_total{{{}}} {}",
                dep_labels(l),
                l.stats.capture.dropped()
            );
        }
        help(out, "plinth_batch_rows", "histogram", "Rows per executed batch.");
        for l in &lives {
            for r in l.runners().chain(l.shadows.iter()) {
                r.stats.batch_sizes.render(out, "plinth_batch_rows", &version_labels(l, r));
            }
        }
        for (name, text, value) in [
            (
                "plinth_queue_depth",
                "Requests waiting per served version.",
                (|r: &Runner| r.queue_depth() as f64) as fn(&Runner) -> f64,
            ),
            ("plinth_workers", "Workers running per served version.", |r: &Runner| {
                r.workers() as f64
            }),
            ("plinth_model_loaded", "1 when the version's model is in memory.", |r: &Runner| {
                f64::from(u8::from(r.stats.loaded.load(Ordering::Relaxed)))
            }),
            ("plinth_model_load_seconds", "How long the last model load took.", |r: &Runner| {
                r.stats.last_load_us.load(Ordering::Relaxed) as f64 / 1e6
            }),
        ] {
            help(out, name, "gauge", text);
            for l in &lives {
                for r in l.runners().chain(l.shadows.iter()) {
                    let _ = writeln!(out, "{name}{{{}}} {}", version_labels(l, r), value(r));
                }
            }
        }
        help(
            out,
            "plinth_prediction_log_dropped_total",
            "counter",
            "Prediction-log records dropped because its buffer was full.",
        );
        let _ = writeln!(
            out,
            "plinth_prediction_log_dropped_total {}",
            self.log.dropped_total.load(Ordering::Relaxed)
        );
    }
}

fn dep_labels(l: &Live) -> String {
    format!(
        "team=\"{}\",model=\"{}\",environment=\"{}\"",
        label(&l.team),
        label(&l.model),
        label(&l.environment)
    )
}

fn version_labels(l: &Live, r: &Runner) -> String {
    format!("{},version=\"{}\"", dep_labels(l), r.source.version)
}

fn version_figures(r: &Runner, shadow: bool) -> super::figures::VersionFigures {
    let loads = r.stats.loads.load(Ordering::Relaxed);
    super::figures::VersionFigures {
        version: r.source.version,
        shadow,
        requests: r.stats.requests.load(Ordering::Relaxed),
        batches: r.stats.batches.load(Ordering::Relaxed),
        batch_rows: r.stats.batch_rows.load(Ordering::Relaxed),
        rows_ok: r.stats.ok_rows.load(Ordering::Relaxed),
        // A batch runs on its thread without yielding: its run time is the CPU time it took
        // (unless the OS preempted the thread), read off the clock the runner reads anyway.
        cpu_ns: r.stats.compute_ns.load(Ordering::Relaxed),
        queue_depth: r.queue_depth() as u64,
        workers: r.workers() as u64,
        loaded: r.stats.loaded.load(Ordering::Relaxed),
        loads,
        last_load_us: (loads > 0).then(|| r.stats.last_load_us.load(Ordering::Relaxed)),
    }
}
