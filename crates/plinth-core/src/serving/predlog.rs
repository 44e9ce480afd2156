//! The prediction log: every sampled request and response of every deployment, appended to
//! hourly JSON-lines files under `data_dir/predictions/<deployment id>/`. It is the source of
//! monitoring, label feedback and billing.
//!
//! Never on the hot path's critical section: requests hand records to a bounded buffer without
//! waiting; a full buffer drops the record and counts it. One writer thread serializes, appends
//! and fsyncs in batches.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plinth_api::serving::PredictionRecord;
use serde_json::{Value, json};

use super::tensor::Tensor;
use crate::util::micros_to_time;

/// A record on its way to the log.
pub struct Entry {
    pub deployment_id: String,
    pub at_micros: i64,
    pub request_id: String,
    pub version: u32,
    pub shadow: bool,
    pub caller: String,
    pub inputs: Vec<(String, Tensor)>,
    pub outputs: Result<Vec<(String, Tensor)>, String>,
    pub latency_us: u64,
}

enum Msg {
    Entry(Box<Entry>),
    Flush(std::sync::mpsc::Sender<()>),
}

pub struct PredictionLog {
    dir: PathBuf,
    tx: SyncSender<Msg>,
    dropped: Mutex<HashMap<String, u64>>,
    pub dropped_total: AtomicU64,
}

const CAPACITY: usize = 65_536;

impl PredictionLog {
    pub fn open(dir: PathBuf) -> std::io::Result<Arc<PredictionLog>> {
        std::fs::create_dir_all(&dir)?;
        let (tx, rx) = std::sync::mpsc::sync_channel(CAPACITY);
        let writer_dir = dir.clone();
        std::thread::Builder::new()
            .name("plinth-predlog".into())
            .spawn(move || write_loop(&writer_dir, rx))?;
        Ok(Arc::new(PredictionLog {
            dir,
            tx,
            dropped: Mutex::new(HashMap::new()),
            dropped_total: AtomicU64::new(0),
        }))
    }

    /// Hands a record to the writer without waiting; a full buffer drops it (and counts it).
    pub fn append(&self, entry: Entry) {
        let deployment = entry.deployment_id.clone();
        match self.tx.try_send(Msg::Entry(Box::new(entry))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped_total.fetch_add(1, Ordering::Relaxed);
                *self.dropped.lock().expect("dropped lock").entry(deployment).or_default() += 1;
            }
        }
    }

    pub fn dropped(&self, deployment_id: &str) -> u64 {
        self.dropped.lock().expect("dropped lock").get(deployment_id).copied().unwrap_or(0)
    }

    /// Waits until everything handed over so far is on disk.
    pub fn flush(&self) {
        let (tx, rx) = std::sync::mpsc::channel();
        if self.tx.send(Msg::Flush(tx)).is_ok() {
            let _ = rx.recv_timeout(Duration::from_secs(10));
        }
    }

    /// Records of a deployment in `[since, until)` (microseconds), oldest first, at most `limit`.
    pub fn read(
        &self,
        deployment_id: &str,
        since: i64,
        until: i64,
        shadow: Option<bool>,
        limit: usize,
    ) -> std::io::Result<Vec<PredictionRecord>> {
        self.flush();
        let dir = self.dir.join(deployment_id);
        let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
            Ok(entries) => entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(e),
        };
        files.sort();
        let hour = |micros: i64| micros.div_euclid(3_600_000_000);
        let mut out = Vec::new();
        for file in files {
            let Some(h) =
                file.file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse::<i64>().ok())
            else {
                continue;
            };
            if h < hour(since) || h > hour(until) {
                continue;
            }
            for line in std::io::BufReader::new(std::fs::File::open(&file)?).lines() {
                let line = line?;
                let Ok(v) = serde_json::from_str::<Value>(&line) else { continue };
                let at = v["at_us"].as_i64().unwrap_or(0);
                if at < since
                    || at >= until
                    || shadow.is_some_and(|s| v["shadow"].as_bool() != Some(s))
                {
                    continue;
                }
                out.push(PredictionRecord {
                    at: micros_to_time(at),
                    request_id: v["request_id"].as_str().unwrap_or_default().to_string(),
                    version: v["version"].as_u64().unwrap_or(0) as u32,
                    shadow: v["shadow"].as_bool().unwrap_or(false),
                    caller: v["caller"].as_str().unwrap_or_default().to_string(),
                    inputs: v["inputs"].clone(),
                    outputs: v["outputs"].clone(),
                    error: v["error"].as_str().map(str::to_string),
                    latency_us: v["latency_us"].as_u64().unwrap_or(0),
                });
                if out.len() >= limit {
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }
}

fn tensors_json(tensors: &[(String, Tensor)]) -> Value {
    Value::Object(tensors.iter().map(|(n, t)| (n.clone(), t.to_json())).collect())
}

fn write_loop(dir: &Path, rx: Receiver<Msg>) {
    let mut files: HashMap<(String, i64), std::io::BufWriter<std::fs::File>> = HashMap::new();
    let mut pending = 0usize;
    loop {
        let msg = rx.recv_timeout(Duration::from_millis(200));
        match msg {
            Ok(Msg::Entry(e)) => {
                let hour = e.at_micros.div_euclid(3_600_000_000);
                let key = (e.deployment_id.clone(), hour);
                if !files.contains_key(&key) {
                    let d = dir.join(&e.deployment_id);
                    let opened = std::fs::create_dir_all(&d).and_then(|_| {
                        std::fs::OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(d.join(format!("{hour}.jsonl")))
                    });
                    match opened {
                        Ok(f) => {
                            files.insert(key.clone(), std::io::BufWriter::new(f));
                        }
                        Err(err) => {
                            tracing::error!(error = %err, "cannot open the prediction log");
                            continue;
                        }
                    }
                }
                let (outputs, error) = match &e.outputs {
                    Ok(o) => (tensors_json(o), Value::Null),
                    Err(m) => (Value::Null, json!(m)),
                };
                let line = json!({
                    "at_us": e.at_micros, "request_id": e.request_id, "version": e.version, "shadow": e.shadow,
                    "caller": e.caller, "inputs": tensors_json(&e.inputs), "outputs": outputs, "error": error,
                    "latency_us": e.latency_us,
                });
                let w = files.get_mut(&key).expect("opened above");
                let _ = writeln!(w, "{line}");
                pending += 1;
                if pending >= 4096 {
                    sync(&mut files);
                    pending = 0;
                }
            }
            Ok(Msg::Flush(ack)) => {
                sync(&mut files);
                pending = 0;
                let _ = ack.send(());
            }
            Err(RecvTimeoutError::Timeout) => {
                if pending > 0 {
                    sync(&mut files);
                    pending = 0;
                }
                // Close files of past hours.
                let now_hour = crate::util::now_micros().div_euclid(3_600_000_000);
                files.retain(|(_, h), _| *h >= now_hour - 1);
            }
            Err(RecvTimeoutError::Disconnected) => {
                sync(&mut files);
                return;
            }
        }
    }
}

fn sync(files: &mut HashMap<(String, i64), std::io::BufWriter<std::fs::File>>) {
    for w in files.values_mut() {
        if let Err(e) = w.flush().and_then(|_| w.get_ref().sync_data()) {
            tracing::error!(error = %e, "cannot write the prediction log");
        }
    }
}
