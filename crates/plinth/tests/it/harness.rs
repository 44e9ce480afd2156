//! The test harness: in-process Plinth servers on port 0 (one shared per metadata backend, or a
//! dedicated one for restart tests), an HTTP helper, and unique names so tests can share a server.
//!
//! Every test runs against both metadata backends: SQLite (embedded) and PostgreSQL (at
//! `PLINTH_TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432`; each server gets a
//! fresh database there).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use plinth_core::auth::Principal;
use plinth_core::{CoreOptions, Plinth};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/models")
}

/// A name no other test uses: `<prefix>-<n>-<random>`.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    static SALT: OnceLock<u32> = OnceLock::new();
    let salt = SALT.get_or_init(|| {
        let t =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        (t.subsec_nanos() ^ std::process::id()) % 0xffffff
    });
    format!("{prefix}-{}-{salt:06x}", N.fetch_add(1, Ordering::Relaxed))
}

fn postgres_base() -> String {
    std::env::var("PLINTH_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// Creates an empty PostgreSQL database and returns its URL.
pub async fn fresh_postgres_database() -> String {
    use sqlx::Connection;
    let base = postgres_base();
    let mut conn =
        sqlx::PgConnection::connect(&format!("{base}/postgres")).await.unwrap_or_else(|e| {
            panic!("the PostgreSQL tests need a server at {base} (PLINTH_TEST_POSTGRES_URL): {e}")
        });
    let name = unique("plinth_test").replace('-', "_");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create test database");
    format!("{base}/{name}")
}

/// The Redis server the tests use (`PLINTH_TEST_REDIS_URL`, default `redis://127.0.0.1:6379`).
pub fn redis_url() -> String {
    std::env::var("PLINTH_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The S3 server the tests use: moto, started by `scripts/services.sh`
/// (`PLINTH_TEST_S3_ENDPOINT`, default `http://127.0.0.1:5999`).
pub fn s3_endpoint() -> String {
    std::env::var("PLINTH_TEST_S3_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:5999".into())
}

/// A new, empty bucket on the test S3 server, as the store options of a server.
pub async fn fresh_bucket() -> plinth_objects::S3Options {
    let name = unique("plinth-test").to_ascii_lowercase();
    let endpoint = s3_endpoint();
    let made = reqwest::Client::new().put(format!("{endpoint}/{name}")).send().await;
    match made {
        Ok(r) if r.status().is_success() => {}
        other => panic!(
            "the S3 tests need a server at {endpoint} (scripts/services.sh starts moto): {other:?}"
        ),
    }
    plinth_objects::S3Options {
        url: format!("s3://{name}/plinth"),
        endpoint: Some(endpoint),
        region: Some("us-east-1".into()),
        access_key_id: Some("test".into()),
        secret_access_key: Some("test".into()),
    }
}

/// Options for a dedicated server.
#[derive(Clone)]
pub struct ServerOptions {
    pub backend: Backend,
    pub max_upload_bytes: u64,
    /// Reuse a data directory and database (for restart tests).
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    /// `redis://...` for the online store (default: embedded).
    pub online_store_url: Option<String>,
    pub nats: Option<plinth_core::features::nats::NatsOptions>,
    pub local_sources_root: Option<PathBuf>,
    pub postgres_sources: plinth_core::data::sources::PostgresAccess,
    pub metrics_token: Option<String>,
    pub tasks: plinth_core::tasks::TaskOptions,
    /// The platform admin's key, for a replica of a platform another server bootstrapped.
    pub admin_key: Option<String>,
    /// The object store replicas share (default: the local folder in the data directory).
    pub objects: Option<plinth_objects::S3Options>,
    /// How often the server publishes its figures and rolls up its health minutes (tests that
    /// drive the health clock themselves set it beyond their length).
    pub figures_every: std::time::Duration,
    /// Hung on every prediction, in order.
    pub prediction_hooks: Vec<std::sync::Arc<dyn plinth_core::serving::predict::PredictionHook>>,
    /// Recipes may run their own training command (on in the shared servers).
    pub training_commands: bool,
}

impl ServerOptions {
    pub fn new(backend: Backend) -> Self {
        ServerOptions {
            backend,
            max_upload_bytes: 64 * 1024 * 1024,
            data_dir: None,
            database_url: None,
            online_store_url: None,
            nats: None,
            local_sources_root: None,
            postgres_sources: plinth_core::data::sources::PostgresAccess::default(),
            metrics_token: None,
            tasks: plinth_core::tasks::TaskOptions::default(),
            admin_key: None,
            objects: None,
            prediction_hooks: Vec::new(),
            figures_every: plinth_core::serving::figures::PUBLISH_EVERY,
            training_commands: true,
        }
    }
}

/// A Plinth server running in this process, on its own runtime, on 127.0.0.1:<port 0>.
pub struct TestServer {
    pub url: String,
    pub admin_key: String,
    pub core: Plinth,
    pub data_dir: PathBuf,
    pub database_url: Option<String>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    done: Option<std::sync::Mutex<std::sync::mpsc::Receiver<()>>>,
    _tmp: Option<tempfile::TempDir>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl TestServer {
    /// The server shared by all tests of a backend.
    pub fn shared(backend: Backend) -> &'static TestServer {
        static SQLITE: OnceLock<TestServer> = OnceLock::new();
        static POSTGRES: OnceLock<TestServer> = OnceLock::new();
        let cell = match backend {
            Backend::Sqlite => &SQLITE,
            Backend::Postgres => &POSTGRES,
        };
        cell.get_or_init(|| {
            std::thread::spawn(move || TestServer::start_blocking(ServerOptions::new(backend)))
                .join()
                .expect("server starts")
        })
    }

    /// Starts a dedicated server (call from a plain thread, not inside a runtime).
    pub fn start_blocking(opts: ServerOptions) -> TestServer {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let (tmp, data_dir) = match &opts.data_dir {
            Some(dir) => (None, dir.clone()),
            None => {
                let tmp = tempfile::tempdir().expect("temp dir");
                let dir = tmp.path().to_path_buf();
                (Some(tmp), dir)
            }
        };
        let database_url = match (&opts.database_url, opts.backend) {
            (Some(url), _) => Some(url.clone()),
            (None, Backend::Postgres) => Some(runtime.block_on(fresh_postgres_database())),
            (None, Backend::Sqlite) => None,
        };
        let (core, admin_key, listener) = runtime.block_on(async {
            let core = Plinth::open_with(
                &CoreOptions {
                    data_dir: data_dir.clone(),
                    database_url: database_url.clone(),
                    max_upload_bytes: opts.max_upload_bytes,
                    online_store_url: opts.online_store_url.clone(),
                    nats: opts.nats.clone(),
                    local_sources_root: opts.local_sources_root.clone(),
                    postgres_sources: opts.postgres_sources.clone(),
                    tasks: opts.tasks.clone(),
                    figures_every: opts.figures_every,
                    training_commands: opts.training_commands,
                    metering: true,
                },
                plinth_core::Backends {
                    inference: std::sync::Arc::new(plinth_infer::NativeBackend),
                    tables: std::sync::Arc::new(plinth_data::Tables),
                    query: std::sync::Arc::new(plinth_query::DataFusion),
                    objects: opts.objects.as_ref().map(|o| {
                        std::sync::Arc::new(
                            plinth_objects::S3Artifacts::open(o).expect("object store"),
                        )
                            as std::sync::Arc<dyn plinth_core::store::artifacts::ArtifactStore>
                    }),
                    trainer: std::sync::Arc::new(plinth_train::service::BuiltIn),
                },
            )
            .await
            .unwrap_or_else(|e| panic!("core opens: {e}"));
            let mut core = core;
            for hook in &opts.prediction_hooks {
                core.add_prediction_hook(hook.clone());
            }
            // Restarts reuse the admin key recorded beside the data.
            let key_file = data_dir.join("test-admin-key");
            let admin_key = match core.bootstrap(None).await.expect("bootstrap") {
                Some(key) => {
                    std::fs::write(&key_file, &key).expect("write key");
                    key
                }
                None => std::fs::read_to_string(&key_file)
                    .ok()
                    .or_else(|| opts.admin_key.clone())
                    .expect("admin key of a bootstrapped test server"),
            };
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            (core, admin_key, listener)
        });
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let state = plinth_server::AppState {
            metrics_token: opts.metrics_token.as_deref().map(Into::into),
            ..plinth_server::AppState::new(core.clone())
        };
        runtime.spawn(async move {
            let _ = plinth_server::serve(
                listener,
                state,
                async {
                    let _ = rx.await;
                },
                std::time::Duration::from_secs(5),
            )
            .await;
            let _ = done_tx.send(());
        });
        TestServer {
            url,
            admin_key,
            core,
            data_dir,
            database_url,
            shutdown: Some(tx),
            done: Some(std::sync::Mutex::new(done_rx)),
            _tmp: tmp,
            runtime: Some(runtime),
        }
    }

    /// Starts a dedicated server from async code.
    pub async fn start(opts: ServerOptions) -> TestServer {
        tokio::task::spawn_blocking(move || TestServer::start_blocking(opts))
            .await
            .expect("server starts")
    }

    /// Stops the server gracefully and keeps its data (returned for a restart).
    pub async fn stop(mut self) -> (Option<tempfile::TempDir>, PathBuf, Option<String>) {
        let data_dir = self.data_dir.clone();
        let database_url = self.database_url.clone();
        let tmp = self._tmp.take();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let done = self.done.take();
        let runtime = self.runtime.take();
        let core = self.core.clone();
        tokio::task::spawn_blocking(move || {
            if let Some(done) = done {
                let _ = done.lock().expect("lock").recv_timeout(std::time::Duration::from_secs(10));
            }
            if let Some(rt) = runtime {
                rt.block_on(core.close());
                rt.shutdown_timeout(std::time::Duration::from_secs(5));
            }
        })
        .await
        .expect("stop");
        (tmp, data_dir, database_url)
    }

    pub fn admin(&self) -> Api {
        Api::new(&self.url, &self.admin_key)
    }

    pub fn anonymous(&self) -> Api {
        Api::new(&self.url, "")
    }

    /// The admin as a core principal, for calling the core directly.
    pub async fn admin_principal(&self) -> Principal {
        self.core.authenticate(&self.admin_key).await.expect("admin key")
    }

    /// Creates a user with a key.
    pub async fn user(&self, prefix: &str) -> (String, Api) {
        let name = unique(prefix);
        self.admin().post("/users", &json!({"name": name})).await.ok(StatusCode::CREATED);
        let key =
            self.admin().post("/keys", &json!({"principal": name})).await.ok(StatusCode::CREATED);
        (name, Api::new(&self.url, key["secret"].as_str().expect("secret")))
    }

    /// A new team with a maintainer, a developer and a viewer.
    pub async fn team(&self) -> TeamFixture {
        let team = unique("team");
        self.admin().post("/teams", &json!({"name": team})).await.ok(StatusCode::CREATED);
        let mut apis = Vec::new();
        for role in ["maintainer", "developer", "viewer"] {
            let (name, api) = self.user(role).await;
            self.admin()
                .put(&format!("/teams/{team}/members/{name}"), &json!({"role": role}))
                .await
                .ok(StatusCode::OK);
            apis.push((name, api));
        }
        let mut it = apis.into_iter();
        TeamFixture {
            team,
            maintainer: it.next().unwrap(),
            developer: it.next().unwrap(),
            viewer: it.next().unwrap(),
        }
    }

    /// Files under the artifact store.
    pub fn artifact_files(&self) -> Vec<PathBuf> {
        walk(&self.data_dir.join("artifacts"))
    }

    /// Files in the upload staging area.
    pub fn staging_files(&self) -> Vec<PathBuf> {
        walk(&self.data_dir.join("staging"))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        // A runtime cannot be dropped inside another runtime: let a plain thread do it.
        if let Some(rt) = self.runtime.take() {
            std::thread::spawn(move || rt.shutdown_timeout(std::time::Duration::from_secs(5)));
        }
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() { stack.push(p) } else { out.push(p) }
        }
    }
    out.sort();
    out
}

pub struct TeamFixture {
    pub team: String,
    pub maintainer: (String, Api),
    pub developer: (String, Api),
    pub viewer: (String, Api),
}

/// A response: status and JSON body (or `null`).
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Resp {
    /// Asserts the status and returns the body.
    #[track_caller]
    pub fn ok(self, status: StatusCode) -> Value {
        assert_eq!(self.status, status, "unexpected answer: {}", self.body);
        self.body
    }

    /// Asserts an error answer with this status and code; returns the error object.
    #[track_caller]
    pub fn err(self, status: StatusCode, code: &str) -> Value {
        assert_eq!(self.status, status, "unexpected answer: {}", self.body);
        assert_eq!(self.body["error"]["code"], code, "unexpected error: {}", self.body);
        assert!(
            self.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
            "no message: {}",
            self.body
        );
        self.body["error"].clone()
    }
}

#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    key: String,
    /// Answer a request that got no response (a killed server) with status 599, not a panic.
    tolerate_lost: bool,
}

/// The status of a request that got no response, for an [`Api::tolerating_lost_requests`].
pub const LOST: StatusCode = match StatusCode::from_u16(599) {
    Ok(s) => s,
    Err(_) => panic!("599 is a status code"),
};

impl Api {
    pub fn new(base: &str, key: &str) -> Api {
        Api {
            http: reqwest::Client::new(),
            base: base.to_string(),
            key: key.to_string(),
            tolerate_lost: false,
        }
    }

    /// The same caller at another server's address.
    pub fn at(&self, base: &str) -> Api {
        Api { base: base.to_string(), ..self.clone() }
    }

    /// The same caller, answered [`LOST`] when a request gets no response (for tests that kill
    /// servers under load).
    pub fn tolerating_lost_requests(&self) -> Api {
        Api { tolerate_lost: true, ..self.clone() }
    }

    /// The same caller on a client that keeps at most one idle connection. reqwest returns an
    /// HTTP/1 connection to its pool from a spawned task once the response is read, so a request
    /// sent straight after may find the pool empty and dial a second connection; a test that
    /// counts the server's open connections needs the extra one closed, not idling for 90 s.
    pub fn keeping_one_idle_connection(&self) -> Api {
        let http = reqwest::Client::builder().pool_max_idle_per_host(1).build().expect("client");
        Api { http, ..self.clone() }
    }

    /// Another key on this client's connections (a clone of a client shares its pool).
    pub fn as_key_on_same_connections(&self, key: &str) -> Api {
        Api { key: key.to_string(), ..self.clone() }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn with_key(&self, key: &str) -> Api {
        Api::new(&self.base, key)
    }

    fn url(&self, path: &str) -> String {
        let unprefixed = ["/api/", "/healthz", "/readyz", "/metrics", "/v2"];
        if path.starts_with('/') && !unprefixed.iter().any(|p| path.starts_with(p)) {
            format!("{}/api/v1{path}", self.base)
        } else {
            format!("{}{path}", self.base)
        }
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Resp {
        let req = if self.key.is_empty() { req } else { req.bearer_auth(&self.key) };
        // A request to a server being killed is answered LOST, never left waiting: once a
        // suite run stalled on one such request after its server was gone.
        let req =
            if self.tolerate_lost { req.timeout(std::time::Duration::from_secs(60)) } else { req };
        let lost = |e: reqwest::Error| Resp {
            status: LOST,
            body: Value::String(e.to_string()),
            headers: Default::default(),
        };
        let r = match req.send().await {
            Ok(r) => r,
            Err(e) if self.tolerate_lost => return lost(e),
            Err(e) => panic!("request sent: {e}"),
        };
        let status = r.status();
        let headers = r.headers().clone();
        let bytes = match r.bytes().await {
            Ok(b) => b,
            Err(e) if self.tolerate_lost => return lost(e),
            Err(e) => panic!("body: {e}"),
        };
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        Resp { status, body, headers }
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, self.url(path))
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send(self.http.get(self.url(path))).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        self.send(self.http.post(self.url(path)).json(body)).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Resp {
        self.send(self.http.put(self.url(path)).json(body)).await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> Resp {
        self.send(self.http.patch(self.url(path)).json(body)).await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.send(self.http.delete(self.url(path))).await
    }

    /// Uploads bytes as a new version, with optional metadata JSON.
    pub async fn upload(
        &self,
        team: &str,
        model: &str,
        file_name: &str,
        bytes: Vec<u8>,
        metadata: Option<Value>,
    ) -> Resp {
        let mut form = reqwest::multipart::Form::new();
        if let Some(m) = metadata {
            form = form.part(
                "metadata",
                reqwest::multipart::Part::text(m.to_string()).mime_str("application/json").unwrap(),
            );
        }
        form = form.part(
            "artifact",
            reqwest::multipart::Part::bytes(bytes).file_name(file_name.to_string()),
        );
        self.send(
            self.http
                .post(self.url(&format!("/teams/{team}/models/{model}/versions")))
                .multipart(form),
        )
        .await
    }

    pub async fn upload_fixture(&self, team: &str, model: &str, fixture: &str) -> Resp {
        let bytes = std::fs::read(fixtures().join(fixture))
            .unwrap_or_else(|e| panic!("fixture {fixture}: {e}"));
        self.upload(team, model, fixture.rsplit('/').next().unwrap(), bytes, None).await
    }

    /// Every page of a list endpoint, following cursors.
    pub async fn all_pages(&self, path: &str) -> Vec<Value> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let sep = if path.contains('?') { '&' } else { '?' };
            let p = match &cursor {
                Some(c) => format!("{path}{sep}cursor={c}"),
                None => path.to_string(),
            };
            let page = self.get(&p).await.ok(StatusCode::OK);
            items.extend(page["items"].as_array().expect("items").iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return items,
            }
        }
    }
}

/// Bodies a webhook receiver got, in arrival order, each JSON with `received_at` set to the
/// path it was posted to.
pub type Received = std::sync::Arc<std::sync::Mutex<Vec<Value>>>;

/// A webhook receiver on 127.0.0.1:0 that accepts any `POST /{path}` with a JSON body.
pub async fn webhook_receiver() -> (std::net::SocketAddr, Received) {
    let seen: Received = Received::default();
    let seen2 = seen.clone();
    let app = axum::Router::new().route(
        "/{path}",
        axum::routing::post(
            move |axum::extract::Path(path): axum::extract::Path<String>, body: String| {
                let seen = seen2.clone();
                async move {
                    let mut v = serde_json::from_str::<Value>(&body).expect("a JSON body");
                    v["received_at"] = json!(path);
                    seen.lock().unwrap().push(v);
                    StatusCode::OK
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("receiver") });
    (addr, seen)
}

/// Probes until it answers `Some`, within `within`; fails the test naming `what` otherwise.
pub async fn wait_for<T>(
    what: &str,
    within: std::time::Duration,
    mut probe: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + within;
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(10));
    loop {
        tick.tick().await;
        if let Some(v) = probe().await {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
    }
}

/// Waits until `cond` holds (20 s at most).
pub async fn eventually(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    wait_for(what, std::time::Duration::from_secs(20), async || cond().await.then_some(())).await
}

/// Declares tests that take the shared server of each backend: `async fn name(srv: &TestServer)`.
macro_rules! shared_server_tests {
    ($(async fn $name:ident($srv:ident: &TestServer) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;
                async fn run($srv: &'static crate::harness::TestServer) $body
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() { run(crate::harness::TestServer::shared(crate::harness::Backend::Sqlite)).await }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() { run(crate::harness::TestServer::shared(crate::harness::Backend::Postgres)).await }
            }
        )*
    };
}

/// Declares tests that start their own servers: `async fn name(backend: Backend)`.
macro_rules! backend_tests {
    ($(async fn $name:ident($b:ident: Backend) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;
                async fn run($b: crate::harness::Backend) $body
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() { run(crate::harness::Backend::Sqlite).await }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() { run(crate::harness::Backend::Postgres).await }
            }
        )*
    };
}

pub(crate) use {backend_tests, shared_server_tests};

/// A `plinth serve` process: the binary, started as a user starts it, on 127.0.0.1:0.
pub struct Server {
    child: std::process::Child,
    pub url: String,
    /// The name it holds task leases under.
    pub replica: String,
}

impl Server {
    /// `cpus`: pin the process to these CPUs (`taskset -c`), else it runs anywhere.
    pub fn spawn(
        data_dir: &Path,
        database_url: Option<&str>,
        admin_key: &str,
        cpus: Option<&str>,
    ) -> Server {
        let mut env = Vec::new();
        if let Some(url) = database_url {
            env.push(("PLINTH_DATABASE_URL", url.to_string()));
        }
        Server::spawn_with(data_dir, admin_key, cpus, &env)
    }

    /// With settings given as `PLINTH_*` variables.
    pub fn spawn_with(
        data_dir: &Path,
        admin_key: &str,
        cpus: Option<&str>,
        env: &[(&str, String)],
    ) -> Server {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        let plinth = env!("CARGO_BIN_EXE_plinth");
        let mut cmd = match cpus {
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.args(["-c", cpus, plinth]);
                c
            }
            None => Command::new(plinth),
        };
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"]).arg(data_dir);
        cmd.env("PLINTH_BOOTSTRAP_ADMIN_KEY", admin_key)
            .env("PLINTH_LOG_LEVEL", "warn")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start plinth");
        let stderr = child.stderr.take().unwrap();
        let mut lines = std::io::BufReader::new(stderr).lines();
        let mut replica = String::new();
        let mut seen = Vec::new();
        let url = loop {
            let Some(line) = lines.next() else {
                panic!("plinth exited before listening:\n{}", seen.join("\n"))
            };
            let line = line.expect("read stderr");
            // A log read by a program, not a terminal, has no colour codes.
            assert!(!line.contains('\u{1b}'), "escape codes in a piped log: {line:?}");
            if let Some(r) = line.strip_prefix("replica ") {
                replica = r.trim().to_string();
            }
            if let Some(url) = line.strip_prefix("listening on ") {
                break url.trim().to_string();
            }
            seen.push(line);
        };
        // Keep draining stderr so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server { child, url, replica }
    }

    /// SIGKILL: no graceful shutdown, no cleanup.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}
