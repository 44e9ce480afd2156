//! Server configuration: one struct, read from a TOML file, then `PLINTH_*` environment
//! variables, then command-line flags (each overriding the one before). Unknown keys are refused.
//! Secrets are held in [`Secret`], whose `Debug` never shows the value.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// A value that must never reach a log.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    #[cfg(test)]
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Everything `plinth serve` can be told. See `config/plinth.example.toml`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Where local state lives (SQLite database, artifacts, staging).
    pub data_dir: PathBuf,
    /// `postgres://...` to keep metadata in PostgreSQL; default SQLite in `data_dir`.
    pub database_url: Option<Secret>,
    /// The largest model artifact accepted, in bytes.
    pub max_upload_bytes: u64,
    /// `redis://...` for the online feature store; default the embedded store in `data_dir`.
    pub online_store_url: Option<Secret>,
    /// `nats://...`: consume feature pushes from JetStream subjects `plinth.push.<team>.<view>`.
    pub nats_url: Option<String>,
    /// File and folder data sources live in `<this folder>/<team>/`; unset, they are refused.
    pub local_sources_root: Option<PathBuf>,
    /// The PostgreSQL servers data sources may read: `host`, `host:port` or
    /// `host:port/database`. Empty: PostgreSQL sources are refused.
    pub postgres_source_hosts: Vec<String>,
    /// How long connecting to a PostgreSQL source may take, in seconds.
    pub postgres_source_timeout_seconds: u64,
    /// The most bytes one PostgreSQL source may give one query (its rows as CSV).
    pub postgres_source_max_bytes: u64,
    /// `s3://bucket[/prefix]`: artifacts, datasets and prediction-log segments in S3-compatible
    /// object storage, shared by replicas. Unset: the local folder in `data_dir`.
    pub object_store_url: Option<String>,
    /// The S3 API's address for stores other than AWS (MinIO, Ceph, moto): `http://host:port`.
    pub s3_endpoint: Option<String>,
    /// The bucket's region (default: `AWS_REGION`, else us-east-1).
    pub s3_region: Option<String>,
    /// S3 credentials; unset, the usual `AWS_*` variables and instance roles.
    pub s3_access_key_id: Option<String>,
    pub s3_secret_access_key: Option<Secret>,
    /// How long a running task's lease lasts without its runner renewing it, in seconds: when a
    /// replica dies, another takes its tasks this long after its last renewal.
    pub task_lease_seconds: u64,
    /// How many tasks of each queue this replica runs at once, as `queue=n,...` over the
    /// defaults (default=2, webhooks=4, training=1, monitoring=1); 0 leaves a queue to other
    /// replicas (a replica that never trains: `training=0`).
    pub task_queues: String,
    /// A bearer token that may read `/metrics` (for a Prometheus scraper); keys with a
    /// platform role may read it too. Unset: platform keys only.
    pub metrics_token: Option<Secret>,
    /// The platform admin key to create at first start, instead of generating one.
    pub bootstrap_admin_key: Option<Secret>,
    /// `text` or `json`.
    pub log_format: String,
    /// A tracing filter, e.g. `info` or `plinth=debug,info`.
    pub log_level: String,
    /// How long to let in-flight requests finish on shutdown, in seconds.
    pub shutdown_grace_seconds: u64,
    /// How long an idle worker watches the sockets before it sleeps, in microseconds (0: off).
    pub busy_poll_us: u64,
    /// Whether recipes may run their own training command (a subprocess on this server, as
    /// its user: docs/training.md). Off by default.
    pub training_commands: bool,
    /// Meter usage (predictions, compute, storage) and enforce team quotas. Off: nothing is
    /// metered and no quota is enforced.
    pub metering: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".parse().expect("valid address"),
            data_dir: PathBuf::from(".plinth-data"),
            database_url: None,
            max_upload_bytes: 512 * 1024 * 1024,
            online_store_url: None,
            nats_url: None,
            local_sources_root: None,
            postgres_source_hosts: Vec::new(),
            postgres_source_timeout_seconds: 5,
            postgres_source_max_bytes: 1 << 30,
            object_store_url: None,
            s3_endpoint: None,
            s3_region: None,
            s3_access_key_id: None,
            s3_secret_access_key: None,
            task_lease_seconds: 30,
            task_queues: String::new(),
            metrics_token: None,
            bootstrap_admin_key: None,
            log_format: "text".into(),
            log_level: "info".into(),
            shutdown_grace_seconds: 30,
            busy_poll_us: 100,
            training_commands: false,
            metering: true,
        }
    }
}

/// The keys of [`Config`], for environment variables (`PLINTH_` + upper case).
pub const KEYS: &[&str] = &[
    "listen",
    "data_dir",
    "database_url",
    "max_upload_bytes",
    "online_store_url",
    "nats_url",
    "local_sources_root",
    "postgres_source_hosts",
    "postgres_source_timeout_seconds",
    "postgres_source_max_bytes",
    "object_store_url",
    "s3_endpoint",
    "s3_region",
    "s3_access_key_id",
    "s3_secret_access_key",
    "task_lease_seconds",
    "task_queues",
    "metrics_token",
    "bootstrap_admin_key",
    "log_format",
    "log_level",
    "shutdown_grace_seconds",
    "busy_poll_us",
    "training_commands",
    "metering",
];

/// `PLINTH_*` variables that belong to the CLI, not to the server.
const CLIENT_ENV: &[&str] =
    &["PLINTH_URL", "PLINTH_KEY", "PLINTH_PROFILE", "PLINTH_CONFIG", "PLINTH_PROFILES_FILE"];

/// Flags given on the command line (the highest layer).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub values: BTreeMap<&'static str, String>,
}

/// Builds the configuration: defaults < file < environment < flags.
pub fn load(
    file: Option<&Path>,
    env: &BTreeMap<String, String>,
    flags: &Overrides,
) -> Result<Config> {
    let mut table = toml::Table::new();
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        table = text
            .parse::<toml::Table>()
            .with_context(|| format!("config file {} is not valid TOML", path.display()))?;
        for key in table.keys() {
            if !KEYS.contains(&key.as_str()) {
                bail!(
                    "config file {}: unknown key '{key}' (known keys: {})",
                    path.display(),
                    KEYS.join(", ")
                );
            }
        }
    }
    for (name, value) in env {
        let Some(rest) = name.strip_prefix("PLINTH_") else { continue };
        // The CLI's variables, and `PLINTH_TEST_*`, reserved for the test suite's own settings.
        if CLIENT_ENV.contains(&name.as_str()) || name.starts_with("PLINTH_TEST_") {
            continue;
        }
        let key = rest.to_ascii_lowercase();
        let Some(&key) = KEYS.iter().find(|k| **k == key) else {
            bail!(
                "environment variable {name} is not a Plinth setting (known: {})",
                KEYS.iter()
                    .map(|k| format!("PLINTH_{}", k.to_ascii_uppercase()))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        };
        table.insert(key.to_string(), typed(key, value)?);
    }
    for (key, value) in &flags.values {
        table.insert(key.to_string(), typed(key, value)?);
    }
    let config: Config = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| anyhow::anyhow!("invalid configuration: {e}"))?;
    if !matches!(config.log_format.as_str(), "text" | "json") {
        bail!(
            "invalid configuration: log_format must be 'text' or 'json', not '{}'",
            config.log_format
        );
    }
    if !(1..=300).contains(&config.postgres_source_timeout_seconds) {
        bail!("invalid configuration: postgres_source_timeout_seconds must be 1-300");
    }
    if config.postgres_source_max_bytes == 0 {
        bail!("invalid configuration: postgres_source_max_bytes must be positive");
    }
    if !(5..=3600).contains(&config.task_lease_seconds) {
        bail!("invalid configuration: task_lease_seconds must be 5-3600");
    }
    task_queues(&config.task_queues)?;
    if let Some(url) = &config.object_store_url
        && !url.starts_with("s3://")
    {
        bail!("invalid configuration: object_store_url must be s3://bucket[/prefix], not '{url}'");
    }
    if config.s3_access_key_id.is_some() != config.s3_secret_access_key.is_some() {
        bail!("invalid configuration: s3_access_key_id and s3_secret_access_key go together");
    }
    if config.max_upload_bytes == 0 {
        bail!("invalid configuration: max_upload_bytes must be positive");
    }
    if config.busy_poll_us > 1000 {
        bail!(
            "invalid configuration: busy_poll_us must be at most 1000 (a worker spinning longer \
             delays timers and other work), not {}",
            config.busy_poll_us
        );
    }
    Ok(config)
}

/// The queues this replica runs and how many tasks of each at once: the defaults, as
/// `task_queues` (`queue=n,...`) changes them; a queue at 0 is left out.
pub fn task_queues(text: &str) -> Result<Vec<(String, usize)>> {
    let mut queues = plinth_core::tasks::TaskOptions::default().queues;
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, n) =
            entry.split_once('=').map(|(q, n)| (q.trim(), n.trim())).with_context(|| {
                format!("invalid configuration: task_queues takes queue=n entries, not '{entry}'")
            })?;
        let n: usize = n.parse().ok().filter(|n| *n <= 64).with_context(|| {
            format!("invalid configuration: task_queues: {name} must be 0-64, not '{n}'")
        })?;
        let Some(slot) = queues.iter_mut().find(|(q, _)| q == name) else {
            let known: Vec<String> = plinth_core::tasks::TaskOptions::default()
                .queues
                .into_iter()
                .map(|q| q.0)
                .collect();
            bail!(
                "invalid configuration: task_queues: no queue '{name}' (queues: {})",
                known.join(", ")
            );
        };
        slot.1 = n;
    }
    queues.retain(|(_, n)| *n > 0);
    Ok(queues)
}

fn typed(key: &str, value: &str) -> Result<toml::Value> {
    Ok(match key {
        // A list, comma-separated in a variable or flag.
        "postgres_source_hosts" => toml::Value::Array(
            value
                .split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .map(|h| toml::Value::String(h.to_string()))
                .collect(),
        ),
        "max_upload_bytes"
        | "shutdown_grace_seconds"
        | "busy_poll_us"
        | "task_lease_seconds"
        | "postgres_source_timeout_seconds"
        | "postgres_source_max_bytes" => toml::Value::Integer(
            value
                .trim()
                .parse()
                .with_context(|| format!("{key} must be a whole number, not '{value}'"))?,
        ),
        "training_commands" | "metering" => match value.trim() {
            "true" | "1" => toml::Value::Boolean(true),
            "false" | "0" => toml::Value::Boolean(false),
            _ => bail!("{key} must be true or false, not '{value}'"),
        },
        _ => toml::Value::String(value.to_string()),
    })
}

/// The database URL with any password hidden, for logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}://{user}:***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_queues_change_the_defaults_and_name_what_is_wrong() {
        let q = |pairs: &[(&str, usize)]| -> Vec<(String, usize)> {
            pairs.iter().map(|(n, k)| (n.to_string(), *k)).collect()
        };
        assert_eq!(
            task_queues("").unwrap(),
            q(&[("default", 2), ("webhooks", 4), ("training", 1), ("monitoring", 1)])
        );
        assert_eq!(
            task_queues(" training=0, default=3 ").unwrap(),
            q(&[("default", 3), ("webhooks", 4), ("monitoring", 1)])
        );
        let error = |text: &str| task_queues(text).unwrap_err().to_string();
        assert!(
            error("gpu=1").contains("no queue 'gpu' (queues: default, webhooks"),
            "{}",
            error("gpu=1")
        );
        assert!(error("default").contains("queue=n"));
        assert!(error("default=65").contains("default must be 0-64"));
    }

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn layers_apply_file_then_env_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plinth.toml");
        std::fs::write(
            &file,
            "listen = '127.0.0.1:1000'\ndata_dir = '/from/file'\nlog_level = 'debug'\n",
        )
        .unwrap();
        let mut flags = Overrides::default();
        flags.values.insert("listen", "127.0.0.1:3000".into());
        let c = load(
            Some(&file),
            &env(&[("PLINTH_LISTEN", "127.0.0.1:2000"), ("PLINTH_DATA_DIR", "/from/env")]),
            &flags,
        )
        .unwrap();
        assert_eq!(c.listen.port(), 3000);
        assert_eq!(c.data_dir, PathBuf::from("/from/env"));
        assert_eq!(c.log_level, "debug");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plinth.toml");
        std::fs::write(&file, "listn = '127.0.0.1:1000'\n").unwrap();
        let err =
            load(Some(&file), &BTreeMap::new(), &Overrides::default()).unwrap_err().to_string();
        assert!(err.contains("unknown key 'listn'"), "{err}");
        let err = load(None, &env(&[("PLINTH_DATADIR", "x")]), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("PLINTH_DATADIR"), "{err}");
    }

    #[test]
    fn out_of_range_values_are_refused_with_the_key() {
        for (k, v, why) in [
            ("PLINTH_BUSY_POLL_US", "5000", "busy_poll_us must be at most 1000"),
            ("PLINTH_BUSY_POLL_US", "-1", "busy_poll_us"),
            ("PLINTH_MAX_UPLOAD_BYTES", "0", "max_upload_bytes must be positive"),
        ] {
            let err = load(None, &env(&[(k, v)]), &Overrides::default()).unwrap_err();
            assert!(format!("{err:#}").contains(why), "{k}={v}: {err:#}");
        }
        let ok = load(None, &env(&[("PLINTH_BUSY_POLL_US", "0")]), &Overrides::default());
        assert_eq!(ok.unwrap().busy_poll_us, 0, "0 turns busy polling off");
    }

    #[test]
    fn the_example_file_lists_every_key_with_its_default() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/plinth.example.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        for key in KEYS {
            assert!(
                text.contains(&format!("{key} = ")),
                "config/plinth.example.toml does not document '{key}'"
            );
        }
        let parsed = load(Some(&path), &BTreeMap::new(), &Overrides::default()).unwrap();
        assert_eq!(parsed, Config::default(), "the example's values are the defaults");
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let c = Config {
            database_url: Some(Secret::new("postgres://u:hunter2@db/x")),
            bootstrap_admin_key: Some(Secret::new("plk_topsecret")),
            ..Config::default()
        };
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2") && !shown.contains("topsecret"), "{shown}");
        assert_eq!(redact_url("postgres://u:hunter2@db:5432/x"), "postgres://u:***@db:5432/x");
    }
}
