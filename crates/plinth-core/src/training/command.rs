//! Bring your own training code: a recipe's command runs as a subprocess in a fresh working
//! directory, given the training rows and its parameters, and must write a model file Plinth
//! serves.
//!
//! **What it gets.** Working directory `<staging>/run-<id>` (made empty), with `train.parquet`
//! (the training rows, written as they are read; held-out rows are not in it), and in its environment only `PATH`, `LANG`,
//! `HOME` (the working directory) and `PLINTH_TRAIN_DATA`, `PLINTH_LABEL`, `PLINTH_FEATURES`
//! (comma-separated), `PLINTH_TASK`, `PLINTH_PARAMS` (JSON), `PLINTH_PARAM_<NAME>` per
//! parameter, `PLINTH_MODEL_DIR` (where to write `model.txt`, `model.json` or `model.onnx`).
//! Its standard output and error go to the run's log, line by line.
//!
//! **Limits.** Wall time (`timeout_seconds`, default an hour; the process is killed past it)
//! and address space (`memory_mb`, default 4 GiB, through `prlimit` when the machine has it).
//! A non-zero exit, no model, or a model that does not validate fails the run with that reason.
//!
//! **Isolation — what this is not.** It runs as the server's user, on the server's machine and
//! network, with the server's file permissions: a separate process with a clean environment and
//! limits, not a sandbox. Only trusted teams' code should run this way. On Kubernetes the same
//! contract maps onto a Job per run (the image named by the recipe, the data and parameters
//! mounted or passed as the environment above, `resources.limits` for memory and CPU,
//! `activeDeadlineSeconds` for time, the model written to a volume or the artifact store): the
//! isolation of a pod, its own service account, and a NetworkPolicy with no egress.

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use plinth_api::registry::ModelFormat;
use plinth_api::training::TrainCommand;

use super::{Rows, TrainFailure, TrainJob, Trained};
use crate::data::TableReader;

fn invalid(m: impl Into<String>) -> TrainFailure {
    TrainFailure::Invalid(m.into())
}

/// The training rows as one Parquet file.
fn write_parquet(
    rows: &mut dyn Rows,
    reader: &dyn TableReader,
    path: &Path,
) -> Result<u64, String> {
    let file = std::fs::File::create(path).map_err(|e| e.to_string())?;
    let mut w = std::io::BufWriter::new(file);
    let n = reader.write_parquet(&mut w, rows)?;
    w.flush().map_err(|e| e.to_string())?;
    Ok(n)
}

/// Runs the command; `log` gets each line it prints.
pub(crate) fn run_command(
    c: &TrainCommand,
    job: &TrainJob,
    rows: &mut dyn Rows,
    reader: &dyn TableReader,
    dir: &Path,
    stop: &AtomicBool,
    log: &mut dyn FnMut(&str),
) -> Result<Trained, TrainFailure> {
    let _ = std::fs::remove_dir_all(dir);
    let out_dir = dir.join("out");
    std::fs::create_dir_all(&out_dir)
        .map_err(|e| invalid(format!("cannot make the working directory: {e}")))?;
    let data = dir.join("train.parquet");
    let n = write_parquet(rows, reader, &data).map_err(invalid)?;
    log(&format!("wrote {n} training rows to {}", data.display()));
    let timeout = Duration::from_secs(c.timeout_seconds.unwrap_or(3600));
    let memory = c.memory_mb.unwrap_or(4096) * 1024 * 1024;
    let prlimit = ["/usr/bin/prlimit", "/bin/prlimit"].into_iter().find(|p| Path::new(p).exists());
    let mut cmd = match prlimit {
        Some(p) => {
            let mut cmd = Command::new(p);
            cmd.arg(format!("--as={memory}")).arg("--").args(&c.argv);
            cmd
        }
        None => {
            let mut cmd = Command::new(&c.argv[0]);
            cmd.args(&c.argv[1..]);
            cmd
        }
    };
    cmd.current_dir(dir)
        .env_clear()
        .env(
            "PATH",
            std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
        )
        .env("LANG", "C.UTF-8")
        .env("HOME", dir)
        .env("PLINTH_TRAIN_DATA", &data)
        .env("PLINTH_LABEL", &job.label)
        .env("PLINTH_FEATURES", job.features.join(","))
        .env("PLINTH_TASK", job.task.as_str())
        .env("PLINTH_PARAMS", serde_json::to_string(&job.params).unwrap_or_default())
        .env("PLINTH_MODEL_DIR", &out_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in &job.params {
        let name: String = k
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' })
            .collect();
        let text = v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
        cmd.env(format!("PLINTH_PARAM_{name}"), text);
    }
    let mut child =
        cmd.spawn().map_err(|e| invalid(format!("command: cannot start '{}': {e}", c.argv[0])))?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let pipes: Vec<Box<dyn std::io::Read + Send>> = vec![
        Box::new(child.stdout.take().expect("piped stdout")),
        Box::new(child.stderr.take().expect("piped stderr")),
    ];
    let readers: Vec<_> = pipes
        .into_iter()
        .map(|p| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(p).lines().map_while(std::result::Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            })
        })
        .collect();
    drop(tx);
    let started = Instant::now();
    let status = loop {
        while let Ok(line) = rx.try_recv() {
            log(&line);
        }
        if let Some(status) = child.try_wait().map_err(|e| invalid(e.to_string()))? {
            break status;
        }
        if stop.load(Ordering::Relaxed) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(TrainFailure::Cancelled);
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Err(invalid(format!(
                "command: ran past its time limit of {} s and was stopped",
                timeout.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    for r in readers {
        let _ = r.join();
    }
    while let Ok(line) = rx.try_recv() {
        log(&line);
    }
    if !status.success() {
        return Err(invalid(match status.code() {
            Some(code) => format!("command: exited with status {code} (its output is in the run's log)"),
            None => "command: killed by a signal (over its memory limit?); its output is in the run's log".into(),
        }));
    }
    let found: Vec<(ModelFormat, std::path::PathBuf)> = [
        (ModelFormat::Lightgbm, "model.txt"),
        (ModelFormat::Xgboost, "model.json"),
        (ModelFormat::Onnx, "model.onnx"),
    ]
    .into_iter()
    .map(|(f, n)| (f, out_dir.join(n)))
    .filter(|(_, p)| p.exists())
    .collect();
    let (format, path) = match found.as_slice() {
        [one] => one.clone(),
        [] => {
            return Err(invalid(
                "command: wrote no model (expected model.txt, model.json or model.onnx in $PLINTH_MODEL_DIR)",
            ));
        }
        _ => return Err(invalid("command: wrote more than one model file; keep one")),
    };
    let bytes = std::fs::read(&path).map_err(|e| invalid(e.to_string()))?;
    let inspected = plinth_formats::inspect(&bytes)
        .map_err(|e| invalid(format!("command: the model it wrote is not valid: {e}")))?;
    if inspected.format != format {
        return Err(invalid(format!(
            "command: {} holds a {} model",
            path.file_name().unwrap_or_default().to_string_lossy(),
            inspected.format.as_str()
        )));
    }
    let _ = std::fs::remove_dir_all(dir);
    Ok(Trained {
        format,
        bytes,
        categories: vec![None; job.features.len()],
        params: job
            .params
            .iter()
            .map(|(k, v)| {
                (k.clone(), v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()))
            })
            .collect(),
        summary: format!("trained by the command `{}`", c.argv.join(" ")),
    })
}
