//! The prediction log: every sampled request and response of every deployment, appended to
//! JSON-lines files under `data_dir/predictions/<deployment id>/`, one file per hour (or several,
//! `<hour>-<n>.jsonl`, each at most an eighth of the deployment's size budget). It is the source
//! of monitoring, label feedback and billing.
//!
//! Retention, per deployment ([`LogRetention`], defaults 7 days and 1 GiB): every minute the
//! writer deletes the files whose hour is past the age limit, then the oldest files while the
//! deployment's log is over its size, never the file being written.
//!
//! Never on the hot path's critical section: a request encodes its record (a few hundred bytes,
//! about a microsecond) and appends the line to a bounded buffer (a short, uncontended lock; no
//! wake-up of another thread); a full buffer drops the record and counts it. A writer thread
//! moves the buffer into the files every 2 ms and fsyncs them every second; while nothing
//! arrives it looks less and less often (up to every 50 ms), so an idle server stays idle.
//!
//! With replicas ([`shared`]): each replica writes its own segments as above, closes each after
//! [`shared::ROLL`] and ships it to the shared object store; reads merge the store's segments
//! with this replica's unshipped ones, in time order.
//!
//! Why the request encodes its own record: a server pinned to one CPU shares it between the
//! runtime and the writer, and a writer that encodes a drain's worth of records (hundreds under
//! load) holds the CPU for as long, while every request in flight waits. Copying ready lines
//! into files is short, and the record borrows what the request already holds (no copies of
//! its strings, no tensors kept alive for the writer to free).

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plinth_api::serving::{LogRetention, PredictionRecord};
use serde_json::Value;

use super::tensor::{Data, Tensor};
use crate::util::{micros_to_time, push_int, push_int_array, push_json_str};

pub mod shared;
pub use shared::Shared;

/// A record for the log, borrowed from the request that made it.
pub struct Entry<'a> {
    pub deployment_id: &'a str,
    pub at_micros: i64,
    pub request_id: &'a str,
    pub version: u32,
    pub shadow: bool,
    pub caller: &'a str,
    pub inputs: &'a [(String, Tensor)],
    /// The outputs, or the error's message.
    pub outputs: Result<&'a [(String, Tensor)], &'a str>,
    pub latency_us: u64,
}

/// Encoded lines waiting for the writer.
#[derive(Default)]
struct Pending {
    /// Consecutive lines of one file share a run (one write for many records).
    runs: Vec<Run>,
    bytes: usize,
}

/// Lines for one deployment's file of one hour.
struct Run {
    deployment_id: String,
    hour: i64,
    lines: Vec<u8>,
}

pub struct PredictionLog {
    dir: PathBuf,
    /// Lines waiting for the writer; appending never waits for disk.
    queue: Mutex<Pending>,
    /// Open files; held while writing.
    files: Mutex<Files>,
    /// Each live deployment's retention (the default for others).
    retention: Mutex<HashMap<String, LogRetention>>,
    dropped: Mutex<HashMap<String, u64>>,
    pub dropped_total: AtomicU64,
    /// The object store replicas share, when there is one.
    shared: Option<Shared>,
}

/// Open log files by deployment id, then by hour (a lookup by `&str`: no key to build per record).
type Files = HashMap<String, HashMap<i64, Segment>>;

/// The file a deployment's records of one hour are appended to now.
struct Segment {
    /// The file's number within its hour (`<hour>-<n>.jsonl`; 0 is `<hour>.jsonl`).
    n: u32,
    bytes: u64,
    writer: std::io::BufWriter<std::fs::File>,
    path: PathBuf,
    opened: std::time::Instant,
}

/// Bytes of lines buffered at most; beyond that new records are dropped (and counted).
const CAPACITY: usize = 64 * 1024 * 1024;
/// How often the writer drains the buffer into the files while records arrive...
const INTERVAL: Duration = Duration::from_millis(2);
/// ...and at most this seldom while none do.
const IDLE_INTERVAL: Duration = Duration::from_millis(50);
/// The write buffer of each open log file: a drain's records go out in a few system calls.
const FILE_BUFFER: usize = 64 * 1024;
/// How often the files are fsynced (a crash loses at most this much of the log).
const SYNC_INTERVAL: Duration = Duration::from_secs(1);
/// How often retention deletes old files.
const RETENTION_INTERVAL: Duration = Duration::from_secs(60);
const HOUR_US: i64 = 3_600_000_000;

impl PredictionLog {
    /// Opens the log in `dir`, shipping closed segments to `shared` when given (which needs a
    /// Tokio runtime).
    pub fn open(dir: PathBuf, shared: Option<Shared>) -> std::io::Result<Arc<PredictionLog>> {
        std::fs::create_dir_all(&dir)?;
        let log = Arc::new(PredictionLog {
            dir,
            queue: Mutex::new(Pending::default()),
            files: Mutex::new(HashMap::new()),
            retention: Mutex::new(HashMap::new()),
            dropped: Mutex::new(HashMap::new()),
            dropped_total: AtomicU64::new(0),
            shared,
        });
        if log.shared.is_some() {
            shared::start(&log);
        }
        let weak = Arc::downgrade(&log);
        std::thread::Builder::new().name("plinth-predlog".into()).spawn(move || {
            let mut last_sync = std::time::Instant::now();
            let mut last_prune = std::time::Instant::now();
            let mut interval = INTERVAL;
            loop {
                std::thread::sleep(interval);
                let Some(log) = weak.upgrade() else { return };
                let sync = last_sync.elapsed() >= SYNC_INTERVAL;
                let wrote = log.write_pending(sync);
                interval = if wrote { INTERVAL } else { (interval * 2).min(IDLE_INTERVAL) };
                if sync {
                    last_sync = std::time::Instant::now();
                }
                if last_prune.elapsed() >= RETENTION_INTERVAL {
                    last_prune = std::time::Instant::now();
                    if let Err(e) = log.prune(crate::util::now_micros()) {
                        tracing::error!(error = %e, "cannot apply the prediction log's retention");
                    }
                }
            }
        })?;
        Ok(log)
    }

    /// Encodes a record and hands it to the writer without waiting; a full buffer drops it (and
    /// counts it).
    pub fn append(&self, entry: Entry<'_>) {
        thread_local! {
            static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
        }
        let hour = entry.at_micros.div_euclid(3_600_000_000);
        let kept = SCRATCH.with_borrow_mut(|scratch| {
            encode(scratch, &entry);
            let line = &scratch.line;
            let mut queue = self.queue.lock().expect("log queue");
            if queue.bytes + line.len() > CAPACITY {
                return false;
            }
            queue.bytes += line.len();
            match queue.runs.last_mut() {
                Some(run) if run.hour == hour && run.deployment_id == entry.deployment_id => {
                    run.lines.extend_from_slice(line);
                }
                _ => queue.runs.push(Run {
                    deployment_id: entry.deployment_id.to_string(),
                    hour,
                    lines: line.clone(),
                }),
            }
            true
        });
        if !kept {
            self.dropped_total.fetch_add(1, Ordering::Relaxed);
            *self
                .dropped
                .lock()
                .expect("dropped lock")
                .entry(entry.deployment_id.to_string())
                .or_default() += 1;
        }
    }

    /// What a deployment keeps (set by the engine whenever the deployment changes).
    pub fn set_retention(&self, deployment_id: &str, retention: LogRetention) {
        self.retention.lock().expect("retention").insert(deployment_id.to_string(), retention);
    }

    fn retention_of(&self, deployment_id: &str) -> LogRetention {
        self.retention.lock().expect("retention").get(deployment_id).copied().unwrap_or_default()
    }

    /// Deletes, for every deployment, the files past its age limit as of `now` (microseconds),
    /// then its oldest files while its log is over its size, never the newest file. Answers
    /// how many files went.
    pub fn prune(&self, now: i64) -> std::io::Result<usize> {
        self.flush();
        let mut removed = 0;
        for dir in std::fs::read_dir(&self.dir)?.flatten() {
            let Some(deployment) = dir.file_name().to_str().map(str::to_string) else { continue };
            let r = self.retention_of(&deployment);
            let mut files = segments(&dir.path())?;
            let oldest_kept = now - i64::from(r.max_age_hours) * HOUR_US;
            let mut total: u64 = files.iter().map(|f| f.size).sum();
            let newest = files.len().saturating_sub(1);
            for (i, f) in files.iter_mut().enumerate() {
                let too_old = (f.hour + 1) * HOUR_US <= oldest_kept;
                if i != newest && (too_old || total > r.max_bytes) {
                    std::fs::remove_file(&f.path)?;
                    total -= f.size;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    /// The bytes each deployment's log holds: this replica's files and, with replicas, the
    /// shared store's segments (metering samples it hourly).
    pub async fn bytes_by_deployment(&self) -> crate::Result<HashMap<String, u64>> {
        let dir = self.dir.clone();
        let mut out = tokio::task::spawn_blocking(move || {
            let mut out: HashMap<String, u64> = HashMap::new();
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let Some(name) = e.file_name().to_str().map(str::to_string) else { continue };
                let bytes = segments(&e.path()).map_or(0, |s| s.iter().map(|f| f.size).sum());
                *out.entry(name).or_default() += bytes;
            }
            out
        })
        .await
        .map_err(crate::Error::internal)?;
        if let Some(shared) = &self.shared {
            for l in shared.store.list("predictions").await? {
                if let Some(deployment) = l.key.split('/').nth(1) {
                    *out.entry(deployment.to_string()).or_default() += l.size;
                }
            }
        }
        Ok(out)
    }

    pub fn dropped(&self, deployment_id: &str) -> u64 {
        self.dropped.lock().expect("dropped lock").get(deployment_id).copied().unwrap_or(0)
    }

    /// Writes and fsyncs everything handed over so far.
    pub fn flush(&self) {
        self.write_pending(true);
    }

    /// Writes what is buffered; fsyncs the open files when `sync`. Answers whether there was
    /// anything to write.
    fn write_pending(&self, sync: bool) -> bool {
        let mut files = self.files.lock().expect("log files");
        let batch = std::mem::take(&mut *self.queue.lock().expect("log queue"));
        if batch.runs.is_empty() && !sync {
            return false;
        }
        let append_to_existing = self.shared.is_none();
        let retention = self.retention.lock().expect("retention");
        for run in &batch.runs {
            let max_bytes =
                retention.get(&run.deployment_id).copied().unwrap_or_default().max_bytes;
            let segment_bytes = (max_bytes / 8).max(128 << 10);
            if let Err(err) =
                write_run(&self.dir, &mut files, run, segment_bytes, append_to_existing)
            {
                tracing::error!(error = %err, "cannot write the prediction log");
            }
        }
        drop(retention);
        for w in files.values_mut().flat_map(HashMap::values_mut).map(|s| &mut s.writer) {
            let synced =
                if sync { w.flush().and_then(|_| w.get_ref().sync_data()) } else { w.flush() };
            if let Err(e) = synced {
                tracing::error!(error = %e, "cannot write the prediction log");
            }
        }
        // Close the files of past hours and, when they are shipped, files open for long enough.
        let now_hour = crate::util::now_micros().div_euclid(3_600_000_000);
        let shared = self.shared.is_some();
        for hours in files.values_mut() {
            hours.retain(|h, s| {
                *h >= now_hour - 1 && !(shared && s.opened.elapsed() >= shared::ROLL)
            });
        }
        files.retain(|_, hours| !hours.is_empty());
        !batch.runs.is_empty()
    }

    /// Records of a deployment in `[since, until)` (microseconds), oldest first, at most `limit`:
    /// this replica's, and with a shared store every replica's.
    pub async fn read(
        self: &Arc<Self>,
        deployment_id: &str,
        since: i64,
        until: i64,
        shadow: Option<bool>,
        limit: usize,
    ) -> crate::Result<Vec<PredictionRecord>> {
        let mut picked = Picked::new(since, until, shadow, limit);
        let log = self.clone();
        let id = deployment_id.to_string();
        picked = tokio::task::spawn_blocking(move || -> std::io::Result<Picked> {
            log.flush();
            log.read_local(&id, &mut picked)?;
            Ok(picked)
        })
        .await
        .map_err(crate::Error::internal)??;
        if let Some(shared) = &self.shared {
            shared.read(deployment_id, &mut picked).await?;
        }
        Ok(picked.finish())
    }

    /// Adds this replica's records of a deployment to `picked`.
    fn read_local(&self, deployment_id: &str, picked: &mut Picked) -> std::io::Result<()> {
        let files = match segments(&self.dir.join(deployment_id)) {
            Ok(files) => files,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for file in files {
            if !picked.wants_hour(file.hour) {
                continue;
            }
            // A file deleted by retention (or shipped) meanwhile has nothing more to give here.
            let Ok(opened) = std::fs::File::open(&file.path) else { continue };
            for line in std::io::BufReader::new(opened).lines() {
                picked.line(&line?);
            }
        }
        Ok(())
    }
}

/// The records a read keeps: in its time range and shadow filter, the `limit` oldest, whatever
/// order they arrive in (segments of several replicas interleave).
pub(crate) struct Picked {
    since: i64,
    until: i64,
    shadow: Option<bool>,
    limit: usize,
    /// A max-heap on time: the newest kept record is the first to go when a older one comes.
    kept: std::collections::BinaryHeap<Kept>,
    /// Lines kept so far: ties on time keep the order they were read in.
    seen: u64,
}

struct Kept(i64, u64, PredictionRecord);

impl PartialEq for Kept {
    fn eq(&self, other: &Self) -> bool {
        (self.0, self.1) == (other.0, other.1)
    }
}
impl Eq for Kept {}
impl PartialOrd for Kept {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Kept {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.0, self.1).cmp(&(other.0, other.1))
    }
}

impl Picked {
    fn new(since: i64, until: i64, shadow: Option<bool>, limit: usize) -> Picked {
        Picked { since, until, shadow, limit, kept: std::collections::BinaryHeap::new(), seen: 0 }
    }

    fn wants_hour(&self, hour: i64) -> bool {
        let hour_of = |micros: i64| micros.div_euclid(HOUR_US);
        hour >= hour_of(self.since) && hour <= hour_of(self.until)
    }

    /// Considers one line of a segment.
    fn line(&mut self, line: &str) {
        let Ok(v) = serde_json::from_str::<Value>(line) else { return };
        let at = v["at_us"].as_i64().unwrap_or(0);
        if at < self.since
            || at >= self.until
            || self.shadow.is_some_and(|s| v["shadow"].as_bool() != Some(s))
            || self.limit == 0
        {
            return;
        }
        if self.kept.len() >= self.limit && self.kept.peek().is_some_and(|k| k.0 <= at) {
            return;
        }
        let record = PredictionRecord {
            at: micros_to_time(at),
            request_id: v["request_id"].as_str().unwrap_or_default().to_string(),
            version: v["version"].as_u64().unwrap_or(0) as u32,
            shadow: v["shadow"].as_bool().unwrap_or(false),
            caller: v["caller"].as_str().unwrap_or_default().to_string(),
            inputs: read_tensors(&v["inputs"]),
            outputs: read_tensors(&v["outputs"]),
            error: v["error"].as_str().map(str::to_string),
            latency_us: v["latency_us"].as_u64().unwrap_or(0),
        };
        self.seen += 1;
        self.kept.push(Kept(at, self.seen, record));
        if self.kept.len() > self.limit {
            self.kept.pop();
        }
    }

    fn finish(self) -> Vec<PredictionRecord> {
        self.kept.into_sorted_vec().into_iter().map(|k| k.2).collect()
    }
}

/// Writes tensors compactly: numbers as base64 of their little-endian bytes (formatting floats as
/// text would cost more than the prediction itself). `le` is scratch space.
fn write_tensors(out: &mut Vec<u8>, le: &mut Vec<u8>, tensors: &[(String, Tensor)]) {
    use base64::Engine;
    out.push(b'{');
    for (i, (name, t)) in tensors.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_json_str(out, name);
        out.extend_from_slice(b":{\"shape\":");
        push_int_array(out, &t.shape);
        out.extend_from_slice(b",\"datatype\":\"");
        out.extend_from_slice(t.data.type_name().as_bytes());
        out.extend_from_slice(b"\",\"b64\":");
        match &t.data {
            Data::Str(v) => {
                let _ = serde_json::to_writer(&mut *out, v);
            }
            numbers => {
                le.clear();
                numbers.write_le(le);
                let engine = &base64::engine::general_purpose::STANDARD;
                let start = out.len() + 1;
                let len = base64::encoded_len(le.len(), true).expect("a tensor's size fits");
                out.resize(start + len + 2, b'"');
                engine.encode_slice(&le[..], &mut out[start..start + len]).expect("sized above");
                out.truncate(start + len + 1);
            }
        }
        out.push(b'}');
    }
    out.push(b'}');
}

/// Reads tensors written by [`write_tensors`] back as `{"name": {"shape", "data"}}`.
fn read_tensors(v: &Value) -> Value {
    use base64::Engine;
    let Some(map) = v.as_object() else { return Value::Null };
    let mut out = serde_json::Map::new();
    for (name, t) in map {
        let shape: Vec<usize> = t["shape"]
            .as_array()
            .map(|a| a.iter().filter_map(|d| d.as_u64().map(|x| x as usize)).collect())
            .unwrap_or_default();
        let bytes = t["b64"]
            .as_str()
            .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
            .unwrap_or_default();
        let data = match t["datatype"].as_str().unwrap_or("") {
            "BYTES" => Data::Str(
                t["b64"]
                    .as_array()
                    .map(|a| a.iter().map(|s| s.as_str().unwrap_or_default().to_string()).collect())
                    .unwrap_or_default(),
            ),
            dt => match Data::from_le(dt, &bytes) {
                Ok(d) => d,
                Err(_) => continue,
            },
        };
        if shape.iter().product::<usize>() != data.len() {
            continue;
        }
        out.insert(name.clone(), Tensor::new(shape, data).to_json());
    }
    Value::Object(out)
}

/// Scratch space for encoding records, reused from one record to the next.
#[derive(Default)]
struct Scratch {
    line: Vec<u8>,
    le: Vec<u8>,
}

/// A record as one JSON line in `scratch.line`.
fn encode(scratch: &mut Scratch, e: &Entry<'_>) {
    let Scratch { line, le } = scratch;
    line.clear();
    line.extend_from_slice(b"{\"at_us\":");
    push_int(line, e.at_micros);
    line.extend_from_slice(b",\"request_id\":");
    push_json_str(line, e.request_id);
    line.extend_from_slice(b",\"version\":");
    push_int(line, e.version);
    line.extend_from_slice(if e.shadow { b",\"shadow\":true" } else { b",\"shadow\":false" });
    line.extend_from_slice(b",\"caller\":");
    push_json_str(line, e.caller);
    line.extend_from_slice(b",\"latency_us\":");
    push_int(line, e.latency_us);
    line.extend_from_slice(b",\"inputs\":");
    write_tensors(line, le, e.inputs);
    match e.outputs {
        Ok(o) => {
            line.extend_from_slice(b",\"outputs\":");
            write_tensors(line, le, o);
        }
        Err(m) => {
            line.extend_from_slice(b",\"outputs\":null,\"error\":");
            push_json_str(line, m);
        }
    }
    line.extend_from_slice(b"}\n");
}

/// A file of a deployment's log: its hour, its number within the hour, its size.
struct SegmentFile {
    hour: i64,
    n: u32,
    size: u64,
    path: PathBuf,
}

/// The log files of a deployment, oldest first.
fn segments(dir: &Path) -> std::io::Result<Vec<SegmentFile>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)?.flatten() {
        let path = e.path();
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else { continue };
        if path.extension().is_none_or(|x| x != "jsonl") {
            continue;
        }
        let (hour, n) = match stem.split_once('-') {
            Some((h, n)) => (h.parse::<i64>().ok(), n.parse::<u32>().ok()),
            None => (stem.parse::<i64>().ok(), Some(0)),
        };
        let (Some(hour), Some(n)) = (hour, n) else { continue };
        let size = e.metadata().map(|m| m.len()).unwrap_or(0);
        out.push(SegmentFile { hour, n, size, path });
    }
    out.sort_by_key(|f| (f.hour, f.n));
    Ok(out)
}

fn segment_path(dir: &Path, hour: i64, n: u32) -> PathBuf {
    if n == 0 { dir.join(format!("{hour}.jsonl")) } else { dir.join(format!("{hour}-{n}.jsonl")) }
}

/// Appends a run of lines to its deployment's file of that hour, opening the next file of the
/// hour once the current one holds `segment_bytes`.
///
/// A restart appends to the hour's last file, unless `append_to_existing` is false (segments
/// that are shipped once closed): then it starts the next one.
fn write_run(
    dir: &Path,
    files: &mut Files,
    run: &Run,
    segment_bytes: u64,
    append_to_existing: bool,
) -> std::io::Result<()> {
    if let Some(seg) = files.get_mut(run.deployment_id.as_str()).and_then(|h| h.get_mut(&run.hour))
        && seg.bytes < segment_bytes
    {
        seg.bytes += run.lines.len() as u64;
        return seg.writer.write_all(&run.lines);
    }
    let d = dir.join(&run.deployment_id);
    std::fs::create_dir_all(&d)?;
    let hours = files.entry(run.deployment_id.clone()).or_default();
    // The next number of the hour: after the open file's, or after the files on disk (a
    // restart appends to the hour's last file).
    let n = match hours.remove(&run.hour) {
        Some(mut full) => {
            full.writer.flush()?;
            full.n + 1
        }
        None => {
            let last = segments(&d)?.iter().filter(|f| f.hour == run.hour).map(|f| f.n).max();
            match last {
                Some(n) if append_to_existing => n,
                Some(n) => n + 1,
                None => 0,
            }
        }
    };
    let path = segment_path(&d, run.hour, n);
    let f = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
    let bytes = f.metadata()?.len() + run.lines.len() as u64;
    let mut writer = std::io::BufWriter::with_capacity(FILE_BUFFER, f);
    writer.write_all(&run.lines)?;
    hours.insert(run.hour, Segment { n, bytes, writer, path, opened: std::time::Instant::now() });
    Ok(())
}
