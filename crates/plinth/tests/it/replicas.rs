//! Plinth as several real processes, the way it runs in production: `plinth serve` replicas on
//! one PostgreSQL database, one S3 bucket (moto) and Redis, behind nginx (round robin). What
//! one replica changes is in force behind the balancer within a second; traffic-split changes
//! fail no prediction; a replica killed while it runs a long task leaves it to another once the
//! lease expires; and a process killed again and again (registrations, dataset uploads and
//! predictions in flight) loses no acknowledged write.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::harness::{
    Api, Server, fixtures, fresh_bucket, fresh_postgres_database, redis_url, unique, wait_for,
};

/// nginx in front of the replicas: its own configuration, files and port, round robin, no retry
/// of a failed request on another replica (a failure must show).
struct Nginx {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Nginx {
    fn start(upstreams: &[&str]) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let servers: String = upstreams
            .iter()
            .map(|u| format!("        server {};\n", u.trim_start_matches("http://")))
            .collect();
        let d = dir.path().display();
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n    access_log off;\n    client_body_temp_path {d}/body;\n    proxy_temp_path {d}/proxy;\n\
                 fastcgi_temp_path {d}/fastcgi;\n    uwsgi_temp_path {d}/uwsgi;\n    scgi_temp_path {d}/scgi;\n\
                 upstream plinth {{\n{servers}        keepalive 32;\n    }}\n\
                 server {{\n        listen 127.0.0.1:{port};\n        client_max_body_size 256m;\n\
                     location / {{\n            proxy_pass http://plinth;\n            proxy_http_version 1.1;\n\
                         proxy_set_header Connection \"\";\n            proxy_next_upstream off;\n        }}\n    }}\n}}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("nginx (Debian's package; scripts/services.sh installs it)");
        let child = Command::new(nginx)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nginx did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Nginx { child, url, _dir: dir }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The settings replicas share: the database, the bucket, Redis, short leases.
async fn shared_settings() -> Vec<(&'static str, String)> {
    let database = fresh_postgres_database().await;
    let s3 = fresh_bucket().await;
    vec![
        ("PLINTH_DATABASE_URL", database),
        ("PLINTH_OBJECT_STORE_URL", s3.url),
        ("PLINTH_S3_ENDPOINT", s3.endpoint.unwrap()),
        ("PLINTH_S3_REGION", s3.region.unwrap()),
        ("PLINTH_S3_ACCESS_KEY_ID", s3.access_key_id.unwrap()),
        ("PLINTH_S3_SECRET_ACCESS_KEY", s3.secret_access_key.unwrap()),
        ("PLINTH_ONLINE_STORE_URL", redis_url()),
        ("PLINTH_TASK_LEASE_SECONDS", "5".into()),
    ]
}

/// A team with a maintainer, made through `admin`: the team's name and the maintainer's API
/// on `url`.
async fn team_with_maintainer(admin: &Api, url: &str) -> (String, Api) {
    let team = unique("team");
    let name = unique("maintainer");
    admin.post("/teams", &json!({"name": team})).await.ok(StatusCode::CREATED);
    admin.post("/users", &json!({"name": name})).await.ok(StatusCode::CREATED);
    let key = admin.post("/keys", &json!({"principal": name})).await.ok(StatusCode::CREATED);
    admin
        .put(&format!("/teams/{team}/members/{name}"), &json!({"role": "maintainer"}))
        .await
        .ok(StatusCode::OK);
    (team, Api::new(url, key["secret"].as_str().unwrap()))
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join(name)).unwrap()
}

fn shared_data(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data").join(path)
}

/// A gzipped file of the shared datasets, decompressed.
fn gunzip(path: &Path) -> Vec<u8> {
    let out = Command::new("gzip").arg("-dc").arg(path).output().expect("gzip");
    assert!(out.status.success(), "gzip -dc {}", path.display());
    out.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_behind_nginx_agree_within_a_second_and_fail_no_prediction() {
    let settings = shared_settings().await;
    let (_, admin_key, _) = plinth_core::auth::generate_key();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    // One after the other: the first bootstraps the platform, the others find it.
    let replicas: Vec<Server> =
        dirs.iter().map(|d| Server::spawn_with(d.path(), &admin_key, None, &settings)).collect();
    let nginx = Nginx::start(&replicas.iter().map(|r| r.url.as_str()).collect::<Vec<_>>());
    let (a, b, c) = (&replicas[0].url, &replicas[1].url, &replicas[2].url);

    // Register through A, deploy through B; then every prediction through nginx is answered
    // by that version, on every replica, within a second.
    let (team, m_a) = team_with_maintainer(&Api::new(a, &admin_key), a).await;
    let on = |url: &str| m_a.at(url);
    m_a.post(
        &format!("/teams/{team}/models"),
        &json!({"name": "income", "task": "binary_classification"}),
    )
    .await
    .ok(StatusCode::CREATED);
    m_a.upload(&team, "income", "model.txt", fixture("lightgbm_binary.txt"), None)
        .await
        .ok(StatusCode::CREATED);
    m_a.upload(&team, "income", "model.json", fixture("xgboost_binary.json"), None)
        .await
        .ok(StatusCode::CREATED);
    let deployment = format!("/deployments/{team}/income/production");
    let predict = format!("{deployment}/predict");
    let row = json!({"rows": [[39, 13, 2174, 0, 40, 1]]});
    let lb = on(&nginx.url).keeping_one_idle_connection();
    on(b)
        .put(&deployment, &json!({"versions": [{"version": 1, "weight": 100}]}))
        .await
        .ok(StatusCode::OK);
    // Within a second, a round through all three replicas answers from it, twice over; and
    // from then on every answer does.
    let warm_up = std::sync::atomic::AtomicU64::new(0);
    wait_for("every replica to serve the deployment", Duration::from_secs(1), async || {
        for _ in 0..6 {
            let r = lb.post(&predict, &row).await;
            if r.status != StatusCode::OK || r.body["version"] != 1 {
                // (A replica that has not seen the deployment yet answers 404: not its request.)
                return None;
            }
            warm_up.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Some(())
    })
    .await;
    for _ in 0..60 {
        let r = lb.post(&predict, &row).await;
        assert_eq!((r.status, r.body["version"].as_u64()), (StatusCode::OK, Some(1)), "{}", r.body);
    }

    // 2,000 predictions through nginx, 8 at a time, while the traffic split changes three
    // times, each change through another replica: none fails.
    let splits = [
        (c, json!({"versions": [{"version": 1, "weight": 50}, {"version": 2, "weight": 50}]})),
        (a, json!({"versions": [{"version": 2, "weight": 100}]})),
        (b, json!({"versions": [{"version": 1, "weight": 100}]})),
    ];
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let outcomes: Arc<Mutex<Vec<(u16, u64, Duration)>>> = Arc::default();
    let started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (lb, predict, done, outcomes) =
            (lb.clone(), predict.clone(), done.clone(), outcomes.clone());
        clients.push(tokio::spawn(async move {
            for k in 0..250 {
                let row = json!({"rows": [[20 + k % 50, 13, 2174, 0, 40, 1]]});
                let t = Instant::now();
                let r = lb.post(&predict, &row).await;
                let version = r.body["version"].as_u64().unwrap_or(0);
                outcomes.lock().unwrap().push((r.status.as_u16(), version, t.elapsed()));
                done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }));
    }
    for (i, (via, split)) in splits.iter().enumerate() {
        let at = 500 * (i + 1);
        wait_for("predictions to go on", Duration::from_secs(120), async || {
            (done.load(std::sync::atomic::Ordering::Relaxed) >= at).then_some(())
        })
        .await;
        on(via).put(&deployment, split).await.ok(StatusCode::OK);
    }
    for c in clients {
        c.await.unwrap();
    }
    let elapsed = started.elapsed();
    let outcomes = outcomes.lock().unwrap().clone();
    let failed: Vec<_> = outcomes.iter().filter(|o| o.0 != 200).collect();
    let by_version = |v: u64| outcomes.iter().filter(|o| o.1 == v).count();
    let mut latencies: Vec<Duration> = outcomes.iter().map(|o| o.2).collect();
    latencies.sort();
    let p = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    eprintln!(
        "replicas: {} predictions through nginx in {elapsed:?} ({:.0}/s), {} failed, {} by v1, {} by v2, p50 {:?}, p99 {:?}",
        outcomes.len(),
        outcomes.len() as f64 / elapsed.as_secs_f64(),
        failed.len(),
        by_version(1),
        by_version(2),
        p(0.5),
        p(0.99),
    );
    assert_eq!(outcomes.len(), 2000);
    assert!(failed.is_empty(), "failed predictions: {:?}", &failed[..failed.len().min(5)]);
    assert!(by_version(2) > 0 && by_version(1) > by_version(2) / 10, "every split served");
    // The API's figures add up the replicas: every prediction counted once, none twice (the
    // figures reach the database every few seconds; they must come to exactly what was sent,
    // and stay there).
    let sent = 2000 + 60 + warm_up.load(std::sync::atomic::Ordering::Relaxed);
    let counted = wait_for(
        &format!("every replica's figures to count {sent}"),
        Duration::from_secs(15),
        async || {
            let f = m_a.get(&format!("{deployment}/metrics")).await.ok(StatusCode::OK);
            let requests = f["requests"].as_u64().unwrap_or(0);
            assert!(requests <= sent, "{requests} counted for {sent} sent: {f}");
            (f["replicas"] == 3 && requests == sent).then_some(f)
        },
    )
    .await;
    eprintln!(
        "replicas: the API counts {} requests over {} replicas",
        counted["requests"], counted["replicas"]
    );
    // Health over time adds them up too: each replica writes its own rows of each minute.
    wait_for("every replica's health rows", Duration::from_secs(15), async || {
        let h = m_a.get(&format!("{deployment}/health")).await.ok(StatusCode::OK);
        let requests = h["total"]["requests"].as_u64().unwrap_or(0);
        assert!(requests <= sent, "{requests} in the health rows for {sent} sent: {h}");
        (requests == sent).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_task_leaves_it_to_another() {
    const ROWS: usize = 80_000;
    let settings = shared_settings().await;
    let (_, admin_key, _) = plinth_core::auth::generate_key();
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut replicas: Vec<Server> =
        dirs.iter().map(|d| Server::spawn_with(d.path(), &admin_key, None, &settings)).collect();
    let url = replicas[0].url.clone();
    let (team, m) = team_with_maintainer(&Api::new(&url, &admin_key), &url).await;

    // A long task: the first 80,000 flights of 2013 into the online store, latest per plane
    // (seconds in a debug build).
    let flights = gunzip(&shared_data("nycflights13/flights.csv.gz"));
    let flights: Vec<u8> = String::from_utf8(flights)
        .unwrap()
        .lines()
        .take(ROWS + 1)
        .flat_map(|l| format!("{l}\n").into_bytes())
        .collect();
    let req = m
        .request(reqwest::Method::POST, &format!("/teams/{team}/datasets/flights/versions"))
        .body(flights);
    m.send(req).await.ok(StatusCode::CREATED);
    m.post(
        &format!("/teams/{team}/entities"),
        &json!({"name": "plane", "join_keys": [{"name": "tailnum", "type": "string"}]}),
    )
    .await
    .ok(StatusCode::CREATED);
    let features = json!([{"name": "dep_delay", "type": "float64"}, {"name": "arr_delay", "type": "float64"}, {"name": "distance", "type": "int64"}]);
    m.post(&format!("/teams/{team}/feature-views"), &json!({"name": "delays", "entity": "plane", "source": {"name": "flights"}, "timestamp_field": "time_hour", "features": features})).await.ok(StatusCode::CREATED);
    let job = m
        .post(&format!("/teams/{team}/feature-views/delays/materialize"), &json!({}))
        .await
        .ok(StatusCode::ACCEPTED);
    let id = job["id"].as_str().unwrap().to_string();

    // Kill whichever replica runs it, once it is under way.
    let running = wait_for("the task to be under way", Duration::from_secs(60), async || {
        let t = m.get(&format!("/tasks/{id}")).await.ok(StatusCode::OK);
        (t["state"] == "running" && t["runner"].is_string() && t["progress"].as_f64() > Some(0.05))
            .then_some(t)
    })
    .await;
    let runner = running["runner"].as_str().unwrap();
    let victim =
        replicas.iter().position(|r| r.replica == runner).expect("the runner is one of ours");
    replicas[victim].kill();
    let killed = Instant::now();
    let survivor = Api::new(&replicas[1 - victim].url, m.key());

    let finished =
        wait_for("another replica to finish the task", Duration::from_secs(120), async || {
            let t = survivor.get(&format!("/tasks/{id}")).await.ok(StatusCode::OK);
            matches!(t["state"].as_str(), Some("completed" | "discarded" | "cancelled"))
                .then_some(t)
        })
        .await;
    eprintln!(
        "replicas: task {id} killed at {:.0} % on {runner}, finished by the other replica {:?} later",
        running["progress"].as_f64().unwrap_or(0.0) * 100.0,
        killed.elapsed()
    );
    assert_eq!(finished["state"], "completed", "{finished}");
    assert_eq!(finished["attempt"], 2, "the second attempt finished it: {finished}");
    assert_eq!(finished["progress"], 1.0, "{finished}");
    assert_eq!(finished["result"]["rows_read"], ROWS, "{finished}");
    // Its log continues across the attempts.
    let logs = survivor.get(&format!("/tasks/{id}/logs")).await.ok(StatusCode::OK);
    let lines: Vec<&str> =
        logs.as_array().unwrap().iter().map(|l| l["message"].as_str().unwrap()).collect();
    let at = |prefix: &str| lines.iter().position(|l| l.starts_with(prefix));
    let (first, second) = (at("attempt 1: reading"), at("attempt 2: reading"));
    assert!(first.is_some() && second > first, "{lines:?}");
    assert!(
        at(&format!("attempt 2: read {ROWS} rows")).is_some_and(|i| Some(i) > second),
        "{lines:?}"
    );
    // And the features are online, read through the surviving replica.
    let online = survivor
        .post(
            &format!("/teams/{team}/features/online"),
            &json!({"features": ["delays:distance"], "entities": {"tailnum": ["N14228"]}}),
        )
        .await
        .ok(StatusCode::OK);
    assert!(online.to_string().contains("distance"), "{online}");
}

/// Writes acknowledged in a round, to find after the restart.
#[derive(Default)]
struct Acknowledged {
    /// Model versions and their artifact's sha256.
    versions: Mutex<Vec<(u64, String)>>,
    /// Dataset versions (which dataset, which version) and their sha256.
    datasets: Mutex<Vec<(usize, u64, String)>>,
    /// Predictions: their request ids.
    predictions: Mutex<Vec<String>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_kills_lose_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let (_, admin_key, _) = plinth_core::auth::generate_key();
    let models = [fixture("lightgbm_binary.txt"), fixture("xgboost_binary.json")];
    // Slices of the Adult census, a different one per upload.
    let adult = String::from_utf8(gunzip(&shared_data("adult/adult.csv.gz"))).unwrap();
    let mut adult_lines = adult.lines();
    let header = adult_lines.next().unwrap().to_string();
    let adult_rows: Vec<&str> = adult_lines.collect();
    let slice = |n: usize| {
        let start = (n * 37) % (adult_rows.len() - 200);
        format!("{header}\n{}\n", adult_rows[start..start + 200].join("\n"))
    };

    let mut server = Server::spawn(dir.path(), None, &admin_key, None);
    let (team, m) = team_with_maintainer(&Api::new(&server.url, &admin_key), &server.url).await;
    m.post(
        &format!("/teams/{team}/models"),
        &json!({"name": "income", "task": "binary_classification"}),
    )
    .await
    .ok(StatusCode::CREATED);
    m.upload(&team, "income", "model.txt", models[0].clone(), None).await.ok(StatusCode::CREATED);
    let deployment = format!("/deployments/{team}/income/production");
    m.put(&deployment, &json!({"versions": [{"version": 1, "weight": 100}]}))
        .await
        .ok(StatusCode::OK);

    let acked = Arc::new(Acknowledged::default());
    let mut log_lost_late = 0usize;
    let mut versions_checked = 0;
    // Where the prediction log's pages start: rounds before were read already.
    let mut since = String::new();
    let rounds = 50;
    for round in 0..rounds {
        let m = m.at(&server.url).tolerating_lost_requests();
        // Registrations, dataset uploads and predictions, all at once, until the kill.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut load = Vec::new();
        {
            let (m, team, acked, stop) = (m.clone(), team.clone(), acked.clone(), stop.clone());
            let models = models.clone();
            load.push(tokio::spawn(async move {
                let mut k = round;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let bytes = models[k % 2].clone();
                    let name = if k % 2 == 0 { "model.txt" } else { "model.json" };
                    let sha = hex::encode(Sha256::digest(&bytes));
                    let r = m.upload(&team, "income", name, bytes, None).await;
                    if r.status == StatusCode::CREATED {
                        assert_eq!(r.body["artifact"]["sha256"], sha.as_str());
                        acked
                            .versions
                            .lock()
                            .unwrap()
                            .push((r.body["version"].as_u64().unwrap(), sha));
                    }
                    k += 1;
                }
            }));
        }
        for n in 0..2 {
            let (m, team, acked, stop) = (m.clone(), team.clone(), acked.clone(), stop.clone());
            let csv = slice(round * 2 + n);
            load.push(tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let sha = hex::encode(Sha256::digest(csv.as_bytes()));
                    let req = m
                        .request(
                            reqwest::Method::POST,
                            &format!("/teams/{team}/datasets/census-{n}/versions"),
                        )
                        .body(csv.clone());
                    let r = m.send(req).await;
                    if r.status == StatusCode::CREATED {
                        assert_eq!(r.body["sha256"], sha.as_str());
                        acked.datasets.lock().unwrap().push((
                            n,
                            r.body["version"].as_u64().unwrap(),
                            sha,
                        ));
                    }
                }
            }));
        }
        {
            let (m, acked, stop, predict) =
                (m.clone(), acked.clone(), stop.clone(), format!("{deployment}/predict"));
            load.push(tokio::spawn(async move {
                let mut k = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let r = m
                        .post(&predict, &json!({"rows": [[20 + k % 60, 13, 2174, 0, 40, 1]]}))
                        .await;
                    if r.status == StatusCode::OK {
                        acked
                            .predictions
                            .lock()
                            .unwrap()
                            .push(r.body["request_id"].as_str().unwrap().to_string());
                    }
                    k += 1;
                }
            }));
        }
        // Each round writes a different amount before its kill, so that kills land early in
        // some writes and late in others.
        let (v0, d0) = (acked.versions.lock().unwrap().len(), acked.datasets.lock().unwrap().len());
        let wanted = 5 + (round * 13) % 40;
        wait_for("the round's writes", Duration::from_secs(120), async || {
            let enough = acked.versions.lock().unwrap().len() > v0 + round % 3
                && acked.datasets.lock().unwrap().len() > d0
                && acked.predictions.lock().unwrap().len() >= wanted;
            enough.then_some(())
        })
        .await;
        // The prediction log's promise, without a clock: its writer puts every answered
        // prediction in the log's files on its own (nothing reads the log, which would flush
        // it), and what reached the files is there after the kill; predictions answered since
        // may be lost (the README's window: the writer drains every few milliseconds).
        let checkpoint: Vec<String> = acked.predictions.lock().unwrap().clone();
        wait_for(
            "the log's writer to file the round's predictions",
            Duration::from_secs(30),
            async || {
                let files = log_files(&dir.path().join("predictions"));
                checkpoint.iter().all(|id| files.contains(id.as_str())).then_some(())
            },
        )
        .await;
        server.kill();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for l in load {
            l.await.unwrap();
        }

        // The store opens cleanly, and every acknowledged write is there, byte for byte.
        server = Server::spawn(dir.path(), None, &admin_key, None);
        let m = m.at(&server.url);
        // (Versions of earlier rounds were checked then, and again at the end.)
        let fresh: Vec<(u64, String)> = acked.versions.lock().unwrap()[versions_checked..].to_vec();
        for (version, sha) in &fresh {
            let v = m.get(&format!("/teams/{team}/models/income/versions/{version}")).await;
            assert_eq!(v.status, StatusCode::OK, "round {round}: version {version} is gone");
            assert_eq!(
                v.body["artifact"]["sha256"],
                sha.as_str(),
                "round {round}: version {version}"
            );
        }
        versions_checked += fresh.len();
        let last = acked.versions.lock().unwrap().last().cloned();
        if let Some((version, sha)) = last {
            let raw = reqwest::Client::new()
                .get(format!(
                    "{}/api/v1/teams/{team}/models/income/versions/{version}/artifact",
                    server.url
                ))
                .bearer_auth(m.key())
                .send()
                .await
                .unwrap();
            assert_eq!(raw.status(), StatusCode::OK, "round {round}");
            let bytes = raw.bytes().await.unwrap();
            assert_eq!(
                hex::encode(Sha256::digest(&bytes)),
                sha,
                "round {round}: the artifact's bytes"
            );
        }
        // Each acknowledged dataset version is listed with its sha256, and a stored file has
        // those bytes.
        let stored = stored_dataset_hashes(dir.path());
        for (n, name) in ["census-0", "census-1"].iter().enumerate() {
            if !acked.datasets.lock().unwrap().iter().any(|d| d.0 == n) {
                continue; // no upload of it acknowledged yet: the dataset may not exist
            }
            let listed =
                m.get(&format!("/teams/{team}/datasets/{name}/versions")).await.ok(StatusCode::OK);
            let listed = listed.as_array().unwrap();
            for (_, version, sha) in acked.datasets.lock().unwrap().iter().filter(|d| d.0 == n) {
                let v = listed
                    .iter()
                    .find(|v| v["version"] == *version)
                    .unwrap_or_else(|| panic!("round {round}: {name} version {version} is gone"));
                assert_eq!(v["sha256"], sha.as_str(), "round {round}: {name} version {version}");
                assert!(
                    stored.contains(sha),
                    "round {round}: {name} version {version} lost its bytes"
                );
            }
        }
        let (logged, last) = logged(&m, &deployment, &since).await;
        if let Some(last) = last {
            since = last;
        }
        for id in &checkpoint {
            assert!(
                logged.contains(id),
                "round {round}: prediction {id}, in the log before the kill, is gone"
            );
        }
        let mut predictions = acked.predictions.lock().unwrap();
        log_lost_late += predictions.iter().filter(|id| !logged.contains(*id)).count();
        // What is checked need not be checked again.
        predictions.clear();
    }
    let listed =
        m.at(&server.url).all_pages(&format!("/teams/{team}/models/income/versions")).await;
    for (version, sha) in acked.versions.lock().unwrap().iter() {
        let v = listed
            .iter()
            .find(|v| v["version"] == *version)
            .unwrap_or_else(|| panic!("version {version} is gone"));
        assert_eq!(v["artifact"]["sha256"], sha.as_str(), "version {version}");
    }
    let versions = acked.versions.lock().unwrap().len();
    let datasets = acked.datasets.lock().unwrap().len();
    eprintln!(
        "replicas: {rounds} kills; {versions} registrations, {datasets} dataset uploads acknowledged and found intact; {log_lost_late} predictions answered after the writer had filed the checked ones were lost with their kill"
    );
    assert!(
        versions >= rounds / 2 && datasets >= rounds,
        "the rounds wrote: {versions} versions, {datasets} datasets"
    );
    drop(server);
}

/// Everything in the prediction log's files under `dir`, as the disk holds it.
fn log_files(dir: &std::path::Path) -> String {
    let mut out = String::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.push_str(&log_files(&path));
        } else if let Ok(text) = std::fs::read_to_string(&path) {
            out.push_str(&text);
        }
    }
    out
}

/// The request ids in a deployment's prediction log from `since` (RFC 3339, inclusive; empty
/// for the start), and the time of the last record.
async fn logged(
    api: &Api,
    deployment: &str,
    since: &str,
) -> (std::collections::HashSet<String>, Option<String>) {
    let (mut ids, mut since) = (std::collections::HashSet::new(), since.to_string());
    let mut last = None;
    loop {
        // Oldest first, 500 at a time; `since` is inclusive, so a page starts where the last ended.
        let query = if since.is_empty() {
            String::new()
        } else {
            format!("&since={}", urlencoding(&since))
        };
        let page =
            api.get(&format!("{deployment}/predictions?limit=500{query}")).await.ok(StatusCode::OK);
        let page = page.as_array().unwrap();
        let before = ids.len();
        ids.extend(page.iter().map(|r| r["request_id"].as_str().unwrap().to_string()));
        if let Some(l) = page.last() {
            since = l["at"].as_str().unwrap().to_string();
            last = Some(since.clone());
        }
        if page.len() < 500 || ids.len() == before {
            return (ids, last);
        }
    }
}

/// `s` fit for a query string (an RFC 3339 time's `+` and `:`).
fn urlencoding(s: &str) -> String {
    s.replace('%', "%25").replace('+', "%2B").replace(':', "%3A")
}

/// The sha256 of every stored dataset file.
fn stored_dataset_hashes(data_dir: &Path) -> std::collections::HashSet<String> {
    let mut out = std::collections::HashSet::new();
    let mut stack = vec![data_dir.join("artifacts/datasets")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(b) = std::fs::read(&p) {
                out.insert(hex::encode(Sha256::digest(&b)));
            }
        }
    }
    out
}
