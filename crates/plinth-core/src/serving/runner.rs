//! One served model version: its request queue, adaptive batching, a worker pool that grows with
//! the queue and shrinks to zero when idle (unloading the model), and its figures.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use plinth_api::Code;
use plinth_api::registry::{ModelFormat, Signature};
use plinth_api::serving::{Batching, Limits, Scaling};
use tokio::sync::{Notify, oneshot};

use super::metrics::Histogram;
use super::runtime::{InferenceBackend, Model};
use super::tensor::{Data, Tensor};
use crate::error::{Error, Result};
use crate::store::artifacts::ArtifactStore;

/// What a runner answers for one request.
pub type Outputs = Vec<(String, Tensor)>;

/// A request's named input tensors, shared with the prediction log rather than copied for it.
pub type Inputs = Arc<Vec<(String, Tensor)>>;

struct Job {
    inputs: Inputs,
    rows: usize,
    enqueued: Instant,
    reply: oneshot::Sender<Result<Outputs>>,
}

impl Job {
    /// Answers the job and counts the outcome.
    fn answer(self, stats: &RunnerStats, result: Result<Outputs>) {
        let ns = self.enqueued.elapsed().as_nanos() as u64;
        stats.rows.fetch_add(self.rows as u64, Ordering::Relaxed);
        if result.is_ok() {
            stats.ok_rows.fetch_add(self.rows as u64, Ordering::Relaxed);
            stats.success.fetch_add(1, Ordering::Relaxed);
            stats.success_ns.fetch_add(ns, Ordering::Relaxed);
        } else {
            stats.fail.fetch_add(1, Ordering::Relaxed);
            stats.fail_ns.fetch_add(ns, Ordering::Relaxed);
        }
        let _ = self.reply.send(result);
    }
}

/// Where a version's artifact is and how to load it.
#[derive(Debug, Clone)]
pub struct VersionSource {
    pub version: u32,
    pub version_id: String,
    pub format: ModelFormat,
    pub artifact_key: String,
    pub signature: Signature,
    /// The artifact's bytes (metering: what a loaded model holds).
    pub artifact_size: u64,
    /// The `view:feature` references of the version's feature service, for predictions by
    /// entity key (read with the version: services and a version's service never change).
    pub feature_refs: Option<Arc<[String]>>,
}

/// The settings a runner works with; replaced on every deployment change.
#[derive(Debug, Clone, Copy)]
pub struct RunnerConfig {
    pub batching: Batching,
    pub scaling: Scaling,
    pub limits: Limits,
}

/// The client connections open to the server in front of the engine, as its HTTP layer counts
/// them; 0 while nothing counts (callers in the same process).
#[derive(Debug, Clone, Default)]
pub struct Clients(Arc<AtomicUsize>);

impl Clients {
    pub fn open(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// Counts one more open connection until the answer is dropped.
    pub fn connect(&self) -> Connection {
        self.0.fetch_add(1, Ordering::Relaxed);
        Connection(self.0.clone())
    }
}

/// One counted connection (see [`Clients::connect`]).
#[derive(Debug)]
pub struct Connection(Arc<AtomicUsize>);

impl Drop for Connection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

pub struct Runner {
    pub source: VersionSource,
    config: Mutex<RunnerConfig>,
    queue: Mutex<VecDeque<Job>>,
    notify: Notify,
    workers: AtomicUsize,
    clients: Clients,
    model: Mutex<Option<Arc<dyn Model>>>,
    /// Serializes loads so a burst after scale-to-zero loads once.
    loading: tokio::sync::Mutex<()>,
    backend: Arc<dyn InferenceBackend>,
    artifacts: Arc<dyn ArtifactStore>,
    pub stats: RunnerStats,
}

#[derive(Default)]
pub struct RunnerStats {
    pub requests: AtomicU64,
    pub batches: AtomicU64,
    pub batch_rows: AtomicU64,
    pub loads: AtomicU64,
    pub last_load_us: AtomicU64,
    pub loaded: AtomicBool,
    pub batch_sizes: Histogram,
    pub rows: AtomicU64,
    pub success: AtomicU64,
    pub success_ns: AtomicU64,
    pub fail: AtomicU64,
    pub fail_ns: AtomicU64,
    pub queue_ns: AtomicU64,
    pub compute_ns: AtomicU64,
    /// Rows answered (metered).
    pub ok_rows: AtomicU64,
    /// Milliseconds since the epoch of the last executed batch.
    pub last_inference_ms: AtomicU64,
}

impl Runner {
    pub fn new(
        source: VersionSource,
        config: RunnerConfig,
        backend: Arc<dyn InferenceBackend>,
        artifacts: Arc<dyn ArtifactStore>,
        clients: Clients,
    ) -> Runner {
        Runner {
            source,
            config: Mutex::new(config),
            queue: Mutex::new(VecDeque::new()),
            notify: Notify::new(),
            workers: AtomicUsize::new(0),
            clients,
            model: Mutex::new(None),
            loading: tokio::sync::Mutex::new(()),
            backend,
            artifacts,
            stats: RunnerStats { batch_sizes: Histogram::batch_sizes(), ..RunnerStats::default() },
        }
    }

    pub fn set_config(&self, config: RunnerConfig) {
        *self.config.lock().expect("config lock") = config;
    }

    pub fn config(&self) -> RunnerConfig {
        *self.config.lock().expect("config lock")
    }

    pub fn queue_depth(&self) -> usize {
        self.queue.lock().expect("queue lock").len()
    }

    fn is_loaded(&self) -> bool {
        self.model.lock().expect("model lock").is_some()
    }

    pub fn workers(&self) -> usize {
        self.workers.load(Ordering::Relaxed)
    }

    /// The loaded model, loading it first if needed (cold start).
    pub async fn model(&self) -> Result<Arc<dyn Model>> {
        if let Some(m) = self.model.lock().expect("model lock").clone() {
            return Ok(m);
        }
        let _guard = self.loading.lock().await;
        if let Some(m) = self.model.lock().expect("model lock").clone() {
            return Ok(m);
        }
        let started = Instant::now();
        let mut reader = self.artifacts.open(&self.source.artifact_key).await.map_err(|e| {
            Error::new(
                Code::Unavailable,
                format!("version {} cannot be served: {}", self.source.version, e.message),
            )
        })?;
        let mut bytes = Vec::with_capacity(reader.size as usize);
        tokio::io::AsyncReadExt::read_to_end(&mut reader.reader, &mut bytes).await?;
        let backend = self.backend.clone();
        let format = self.source.format;
        let model = tokio::task::spawn_blocking(move || backend.load(format, &bytes))
            .await
            .map_err(Error::internal)?
            .map_err(|reason| {
                Error::new(
                    Code::Unavailable,
                    format!("version {} cannot be served: {reason}", self.source.version),
                )
            })?;
        self.stats.last_load_us.store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        self.stats.loads.fetch_add(1, Ordering::Relaxed);
        self.stats.loaded.store(true, Ordering::Relaxed);
        *self.model.lock().expect("model lock") = Some(model.clone());
        Ok(model)
    }

    /// Queues a request and waits for its answer (or the timeout).
    pub async fn submit(self: &Arc<Self>, inputs: Inputs, rows: usize) -> Result<Outputs> {
        let config = self.config();
        let (reply, mut answer) = oneshot::channel();
        // A lone client (one connection open) has nothing to batch with: with the model loaded
        // and nothing queued, a request of at most a batch runs on its own task, sparing the
        // hand-over to a worker and back (two task switches, a timer). Figures and idleness
        // count it as a batch of one. (The timeout bounds waiting in the queue, and this one
        // does not wait; a request over a batch still goes through the queue, under it.)
        if self.clients.open() == 1
            && rows <= config.batching.max_batch_size as usize
            && self.is_loaded()
            && self.queue_depth() == 0
        {
            let job = Job { inputs, rows, enqueued: Instant::now(), reply };
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            self.ensure_worker();
            self.run_batch(vec![job], rows).await;
            return answer
                .try_recv()
                .unwrap_or_else(|_| Err(Error::internal("an inline run left no answer")));
        }
        {
            let mut queue = self.queue.lock().expect("queue lock");
            if queue.len() >= config.limits.max_queue as usize {
                return Err(Error::new(
                    Code::Overloaded,
                    format!(
                        "version {} has {} requests queued: retry shortly",
                        self.source.version,
                        queue.len()
                    ),
                ));
            }
            queue.push_back(Job { inputs, rows, enqueued: Instant::now(), reply });
        }
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        self.scale_up(&config);
        self.notify.notify_one();
        match tokio::time::timeout(
            Duration::from_millis(u64::from(config.limits.timeout_ms)),
            answer,
        )
        .await
        {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::internal("a serving worker stopped without answering")),
            Err(_) => Err(Error::new(
                Code::Timeout,
                format!("no answer within {} ms", config.limits.timeout_ms),
            )),
        }
    }

    /// Starts a worker if none runs. A loaded model always has one: it is the worker that
    /// unloads the model once the version has been idle.
    pub fn ensure_worker(self: &Arc<Self>) {
        if self.workers.load(Ordering::Acquire) == 0 {
            self.scale_up(&self.config());
        }
    }

    /// Starts a worker when there is none, or when the queue outgrows the running ones.
    fn scale_up(self: &Arc<Self>, config: &RunnerConfig) {
        let workers = self.workers.load(Ordering::Acquire);
        let depth = self.queue_depth();
        let wanted =
            workers == 0 || (depth > workers * 2 && workers < config.scaling.max_workers as usize);
        if wanted
            && self
                .workers
                .compare_exchange(workers, workers + 1, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            let me = self.clone();
            tokio::spawn(async move { me.work().await });
        }
    }

    /// Takes up to `max_rows` rows of queued jobs (at least one job if any is queued).
    fn take(&self, max_rows: usize, batch: &mut Vec<Job>, rows: &mut usize) {
        let mut queue = self.queue.lock().expect("queue lock");
        while let Some(front) = queue.front() {
            if !batch.is_empty() && *rows + front.rows > max_rows {
                break;
            }
            let job = queue.pop_front().expect("front exists");
            *rows += job.rows;
            batch.push(job);
        }
    }

    async fn work(self: Arc<Self>) {
        loop {
            let config = self.config();
            let max_rows = config.batching.max_batch_size.max(1) as usize;
            let mut batch = Vec::new();
            let mut rows = 0;
            self.take(max_rows, &mut batch, &mut rows);
            if batch.is_empty() {
                let idle = Duration::from_secs(u64::from(config.scaling.idle_seconds.max(1)));
                if tokio::time::timeout(idle, self.notify.notified()).await.is_ok() {
                    continue;
                }
                // Requests run inline (see `submit`) keep the version busy without this worker.
                let since_ms =
                    now_ms().saturating_sub(self.stats.last_inference_ms.load(Ordering::Relaxed));
                if since_ms < idle.as_millis() as u64 {
                    continue;
                }
                // Idle: stop, unless work arrived while deciding.
                let left = self.workers.fetch_sub(1, Ordering::AcqRel) - 1;
                if self.queue_depth() > 0 {
                    self.workers.fetch_add(1, Ordering::AcqRel);
                    continue;
                }
                if left == 0 {
                    *self.model.lock().expect("model lock") = None;
                    self.stats.loaded.store(false, Ordering::Relaxed);
                }
                return;
            }
            // Adaptive batching: requests that arrive together are still being read by their
            // connections' tasks, on this runtime. Let those run, take what they queued, and go
            // on while each round brings more (up to the batch size, for at most max_wait_us);
            // a round that brings nothing ends the wait: no client is left waiting on a timer.
            // With a single client connection open, no other request can come: no wait (a
            // round costs a pass through the event loop, a system call).
            if config.batching.max_wait_us > 0 && self.clients.open() != 1 {
                let deadline =
                    Instant::now() + Duration::from_micros(u64::from(config.batching.max_wait_us));
                while rows < max_rows && Instant::now() < deadline {
                    let before = batch.len();
                    tokio::task::yield_now().await;
                    self.take(max_rows, &mut batch, &mut rows);
                    if batch.len() == before {
                        break;
                    }
                }
            }
            self.run_batch(batch, rows).await;
            // Other workers may be parked while jobs remain.
            if self.queue_depth() > 0 {
                self.notify.notify_one();
            }
        }
    }

    async fn run_batch(&self, batch: Vec<Job>, rows: usize) {
        let stats = &self.stats;
        let model = match self.model().await {
            Ok(m) => m,
            Err(e) => {
                for job in batch {
                    job.answer(stats, Err(Error::new(e.code, e.message.clone())));
                }
                return;
            }
        };
        let started = Instant::now();
        for job in &batch {
            stats.queue_ns.fetch_add(
                started.duration_since(job.enqueued).as_nanos() as u64,
                Ordering::Relaxed,
            );
        }
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats.batch_rows.fetch_add(rows as u64, Ordering::Relaxed);
        stats.batch_sizes.observe(rows as f64);
        let one_by_one = |batch: Vec<Job>| {
            for job in batch {
                let result = run(model.as_ref(), &job.inputs);
                job.answer(stats, result);
            }
        };
        if batch.len() == 1 {
            one_by_one(batch);
        } else {
            match concat(&batch).map(|inputs| run(model.as_ref(), &inputs)) {
                Ok(Ok(outputs)) => {
                    let mut offset = 0;
                    for job in batch {
                        let part = split(&outputs, offset, job.rows, rows);
                        offset += job.rows;
                        job.answer(stats, part);
                    }
                }
                // One bad request must not fail the others: run them one by one.
                _ => one_by_one(batch),
            }
        }
        stats.compute_ns.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        stats.last_inference_ms.store(now_ms(), Ordering::Relaxed);
    }
}

/// Milliseconds since the epoch, as `RunnerStats::last_inference_ms` holds them.
fn now_ms() -> u64 {
    (crate::util::now_micros() / 1000) as u64
}

/// Runs the model on one request's (or a batch's) inputs. A runtime that panics fails these
/// inputs with an internal error: the worker goes on serving the next ones (a worker that died
/// with its batch would leave the version's queue unserved).
fn run(model: &dyn Model, inputs: &[(String, Tensor)]) -> Result<Outputs> {
    let named: Vec<(&str, &Tensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| model.run(&named))) {
        Ok(answer) => answer.map_err(|e| Error::invalid(format!("inputs.{}", e.field), e.reason)),
        Err(_) => Err(Error::internal("the model's runtime panicked on these inputs")),
    }
}

/// Stacks the jobs' inputs along the first dimension.
fn concat(batch: &[Job]) -> std::result::Result<Vec<(String, Tensor)>, ()> {
    let first = &batch[0].inputs;
    let mut out = Vec::with_capacity(first.len());
    for (i, (name, t0)) in first.iter().enumerate() {
        let mut shape = t0.shape.clone();
        if shape.is_empty() {
            return Err(());
        }
        let mut rows = 0;
        let mut data = match &t0.data {
            Data::F32(_) => Data::F32(Vec::new()),
            Data::F64(_) => Data::F64(Vec::new()),
            Data::I64(_) => Data::I64(Vec::new()),
            Data::I32(_) => Data::I32(Vec::new()),
            Data::Bool(_) => Data::Bool(Vec::new()),
            Data::Str(_) => Data::Str(Vec::new()),
        };
        for job in batch {
            let (n, t) = job.inputs.get(i).ok_or(())?;
            if n != name || t.shape[1..] != t0.shape[1..] {
                return Err(());
            }
            rows += t.shape[0];
            match (&mut data, &t.data) {
                (Data::F32(a), Data::F32(b)) => a.extend_from_slice(b),
                (Data::F64(a), Data::F64(b)) => a.extend_from_slice(b),
                (Data::I64(a), Data::I64(b)) => a.extend_from_slice(b),
                (Data::I32(a), Data::I32(b)) => a.extend_from_slice(b),
                (Data::Bool(a), Data::Bool(b)) => a.extend_from_slice(b),
                (Data::Str(a), Data::Str(b)) => a.extend_from_slice(b),
                _ => return Err(()),
            }
        }
        shape[0] = rows;
        out.push((name.clone(), Tensor::new(shape, data)));
    }
    Ok(out)
}

/// The rows `offset..offset+rows` of every output whose first dimension is the batch.
fn split(outputs: &Outputs, offset: usize, rows: usize, total: usize) -> Result<Outputs> {
    outputs
        .iter()
        .map(|(name, t)| {
            if t.shape.first() != Some(&total) {
                return Err(Error::internal(format!(
                    "output {name} of shape {:?} does not follow the batch of {total}",
                    t.shape
                )));
            }
            let per: usize = t.shape[1..].iter().product();
            let (a, b) = (offset * per, (offset + rows) * per);
            let data = match &t.data {
                Data::F32(v) => Data::F32(v[a..b].to_vec()),
                Data::F64(v) => Data::F64(v[a..b].to_vec()),
                Data::I64(v) => Data::I64(v[a..b].to_vec()),
                Data::I32(v) => Data::I32(v[a..b].to_vec()),
                Data::Bool(v) => Data::Bool(v[a..b].to_vec()),
                Data::Str(v) => Data::Str(v[a..b].to_vec()),
            };
            let mut shape = t.shape.clone();
            shape[0] = rows;
            Ok((name.clone(), Tensor::new(shape, data)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use plinth_api::registry::TensorSpec;

    use super::*;
    use crate::serving::runtime::InferError;

    /// A runtime with a bug: it panics on a negative input.
    #[derive(Debug)]
    struct Fragile;

    impl Model for Fragile {
        fn inputs(&self) -> &[TensorSpec] {
            &[]
        }

        fn outputs(&self) -> &[TensorSpec] {
            &[]
        }

        fn run(&self, inputs: &[(&str, &Tensor)]) -> std::result::Result<Outputs, InferError> {
            match &inputs[0].1.data {
                Data::F32(v) if v[0] < 0.0 => panic!("a bug in the runtime"),
                _ => Ok(vec![("y".into(), inputs[0].1.clone())]),
            }
        }
    }

    #[test]
    fn a_runtime_that_panics_fails_the_request_not_the_worker() {
        let input = |x: f32| vec![("x".to_string(), Tensor::new(vec![1, 1], Data::F32(vec![x])))];
        let e = run(&Fragile, &input(-1.0)).unwrap_err();
        assert_eq!(e.code, Code::Internal);
        assert_eq!(run(&Fragile, &input(1.0)).unwrap()[0].1.data, Data::F32(vec![1.0]));
    }
}
