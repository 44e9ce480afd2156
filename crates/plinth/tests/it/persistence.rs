//! Durability: everything survives a restart; a crash in the middle of an upload leaves no
//! visible trace; the audit log cannot be rewritten, even from inside the database. And the
//! binary itself on one CPU (where it runs every task on one thread).

use std::io::Write;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::harness::{
    Api, Backend, Server, ServerOptions, TestServer, backend_tests, fixtures,
    fresh_postgres_database,
};

backend_tests! {
    async fn everything_survives_a_restart(backend: Backend) {
        let srv = TestServer::start(ServerOptions::new(backend)).await;
        let t = srv.team().await;
        let dev = t.developer.1.clone();
        dev.post(&format!("/teams/{}/models", t.team), &json!({"name": "kept", "task": "multiclass_classification", "tags": {"a": "b"}})).await.ok(StatusCode::CREATED);
        let v = dev.upload_fixture(&t.team, "kept", "xgboost_multiclass.json").await.ok(StatusCode::CREATED);
        let audit_before = srv.admin().all_pages(&format!("/audit?team={}", t.team)).await;
        let url = srv.url.clone();
        let (tmp, data_dir, database_url) = srv.stop().await;
        assert!(reqwest::get(format!("{url}/healthz")).await.is_err(), "the server is down");

        let srv = TestServer::start(ServerOptions { data_dir: Some(data_dir), database_url, ..ServerOptions::new(backend) }).await;
        let dev = Api::new(&srv.url, &dev_key(&dev));
        let m = dev.get(&format!("/teams/{}/models/kept", t.team)).await.ok(StatusCode::OK);
        assert_eq!(m["tags"], json!({"a": "b"}));
        assert_eq!(m["latest_version"], 1);
        let v2 = dev.get(&format!("/teams/{}/models/kept/versions/1", t.team)).await.ok(StatusCode::OK);
        assert_eq!(v2, v);
        let raw = reqwest::Client::new()
            .get(format!("{}/api/v1/teams/{}/models/kept/versions/1/artifact", srv.url, t.team))
            .bearer_auth(dev_key(&dev))
            .send().await.unwrap().bytes().await.unwrap();
        assert_eq!(hex::encode(Sha256::digest(&raw)), v["artifact"]["sha256"].as_str().unwrap());
        assert_eq!(srv.admin().all_pages(&format!("/audit?team={}", t.team)).await, audit_before);
        // Numbering continues where it stopped.
        assert_eq!(dev.upload_fixture(&t.team, "kept", "xgboost_multiclass.json").await.ok(StatusCode::CREATED)["version"], 2);
        srv.stop().await;
        drop(tmp);
    }

    async fn a_crash_mid_upload_leaves_no_visible_artifact(backend: Backend) {
        let tmp = tempfile::tempdir().unwrap();
        let data_dir = tmp.path().to_path_buf();
        let database_url = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(fresh_postgres_database().await),
        };
        let (_, admin_key, _) = plinth_core::auth::generate_key();
        let mut server = Server::spawn(&data_dir, database_url.as_deref(), &admin_key, None);
        let admin = Api::new(&server.url, &admin_key);
        admin.post("/teams", &json!({"name": "crash"})).await.ok(StatusCode::CREATED);
        admin.post("/teams/crash/models", &json!({"name": "m", "task": "binary_classification"})).await.ok(StatusCode::CREATED);

        // Send the headers and half of the artifact, then kill the server while it stages.
        let artifact = std::fs::read(fixtures().join("lightgbm_binary.txt")).unwrap();
        let boundary = "plinthboundary";
        let head = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"artifact\"; filename=\"m.txt\"\r\nContent-Type: application/octet-stream\r\n\r\n");
        let total = head.len() + artifact.len() + format!("\r\n--{boundary}--\r\n").len();
        let addr = server.url.trim_start_matches("http://").to_string();
        let mut sock = std::net::TcpStream::connect(&addr).unwrap();
        write!(sock, "POST /api/v1/teams/crash/models/m/versions HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {admin_key}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {total}\r\n\r\n").unwrap();
        sock.write_all(head.as_bytes()).unwrap();
        sock.write_all(&artifact[..artifact.len() / 2]).unwrap();
        sock.flush().unwrap();
        let staging = data_dir.join("staging");
        wait_for("the upload to reach the staging area", || {
            std::fs::read_dir(&staging).map(|d| d.flatten().any(|e| e.metadata().map(|m| m.len() > 0).unwrap_or(false))).unwrap_or(false)
        });
        server.kill();
        drop(sock);

        // An artifact published by a registration that never committed (the process died
        // between the two steps) must be collected too.
        let orphan = data_dir.join("artifacts/models/team_x/mdl_x/mv_x/model.txt");
        std::fs::create_dir_all(orphan.parent().unwrap()).unwrap();
        std::fs::write(&orphan, b"half a registration").unwrap();
        // Two hours old: past the grace given to registrations in flight on other replicas.
        let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
        std::fs::File::options().write(true).open(&orphan).unwrap().set_modified(two_hours_ago).unwrap();
        // A fresh one may be another replica's registration between its two steps: it stays.
        let fresh = data_dir.join("artifacts/models/team_x/mdl_x/mv_y/model.txt");
        std::fs::create_dir_all(fresh.parent().unwrap()).unwrap();
        std::fs::write(&fresh, b"a registration in flight").unwrap();

        let server = Server::spawn(&data_dir, database_url.as_deref(), &admin_key, None);
        let admin = Api::new(&server.url, &admin_key);
        assert!(admin.all_pages("/teams/crash/models/m/versions?include_archived=true").await.is_empty());
        assert_eq!(admin.get("/teams/crash/models/m").await.ok(StatusCode::OK)["latest_version"], 0);
        assert!(std::fs::read_dir(&staging).unwrap().next().is_none(), "staging was not cleaned");
        assert!(!orphan.exists(), "the unreferenced artifact was not collected");
        assert!(fresh.exists(), "an artifact younger than the grace was collected");
        std::fs::remove_file(&fresh).unwrap();
        let v = admin.upload("crash", "m", "m.txt", artifact, None).await.ok(StatusCode::CREATED);
        assert_eq!(v["version"], 1);
        assert_eq!(walk_files(&data_dir.join("artifacts")), 1);
        drop(server);
    }

    async fn the_binary_pinned_to_one_cpu_registers_deploys_and_serves(backend: Backend) {
        // On one CPU the binary runs a single-threaded runtime: the whole path, through it.
        let tmp = tempfile::tempdir().unwrap();
        let database_url = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(fresh_postgres_database().await),
        };
        let (_, admin_key, _) = plinth_core::auth::generate_key();
        let server = Server::spawn(tmp.path(), database_url.as_deref(), &admin_key, Some("0"));
        let admin = Api::new(&server.url, &admin_key);
        admin.post("/teams", &json!({"name": "onecpu"})).await.ok(StatusCode::CREATED);
        admin.post("/teams/onecpu/models", &json!({"name": "m", "task": "binary_classification"})).await.ok(StatusCode::CREATED);
        let artifact = std::fs::read(fixtures().join("lightgbm_binary.txt")).unwrap();
        admin.upload("onecpu", "m", "m.txt", artifact, None).await.ok(StatusCode::CREATED);
        admin.put("/deployments/onecpu/m/production", &json!({"versions": [{"version": 1, "weight": 100}]})).await.ok(StatusCode::OK);
        let rows = json!({"rows": [[39, 13, 2174, 0, 40, 1], [50, 9, 0, 0, 45, 0]]});
        let answer = admin.post("/deployments/onecpu/m/production/predict", &rows).await.ok(StatusCode::OK);
        assert_eq!(answer["predictions"].as_array().unwrap().len(), 2);
        // Many connections at once, over the Open Inference Protocol: batched on one thread.
        let body = json!({"inputs": [{"name": "input", "shape": [1, 6], "datatype": "FP32", "data": [39, 13, 2174, 0, 40, 1]}]});
        let calls = (0..32).map(|_| {
            let (api, body) = (admin.clone(), body.clone());
            tokio::spawn(async move { api.post("/v2/models/onecpu.m/infer", &body).await })
        });
        for call in calls.collect::<Vec<_>>() {
            let r = call.await.unwrap().ok(StatusCode::OK);
            assert_eq!(r["outputs"][1]["data"][1].as_f64(), answer["probabilities"][0][1].as_f64());
        }
        drop(server);
    }

    async fn the_audit_log_is_append_only_in_the_database(backend: Backend) {
        use sqlx::Connection;
        let srv = TestServer::start(ServerOptions::new(backend)).await;
        srv.admin().post("/teams", &json!({"name": "ledger"})).await.ok(StatusCode::CREATED);
        let url = match &srv.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", srv.data_dir.join("plinth.db").display()),
        };
        let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
        for sql in ["UPDATE audit_log SET actor_name = 'someone else'", "DELETE FROM audit_log"] {
            let err = sqlx::query(sql).execute(&mut conn).await.expect_err(sql).to_string();
            assert!(err.contains("append-only"), "{sql}: {err}");
        }
        conn.close().await.unwrap();
        assert!(srv.admin().all_pages("/audit?team=ledger").await.iter().all(|e| e["actor"] == "admin"));
        srv.stop().await;
    }
}

fn dev_key(api: &Api) -> String {
    api.key().to_string()
}

fn walk_files(dir: &std::path::Path) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() { stack.push(e.path()) } else { n += 1 }
        }
    }
    n
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}
