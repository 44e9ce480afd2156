//! Serving through the API as product teams use it: deploy, predict (Plinth's JSON and the Open
//! Inference Protocol), traffic splits, sticky keys, shadows, hot swaps and rollbacks under load,
//! scale to zero, load shedding, the prediction log, metrics, isolation and sharing.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{
    Api, Backend, ServerOptions, TestServer, backend_tests, eventually, fixtures,
    shared_server_tests,
};

/// The Adult income rows and the source library's answers for a fixture.
fn expected(stem: &str) -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(fixtures().join(format!("{stem}.expected.json"))).unwrap(),
    )
    .unwrap()
}

/// A team with a binary model `income` whose versions are LightGBM (1), LightGBM as ONNX (2)
/// and XGBoost (3): three models of the same six Adult features.
async fn income_model(srv: &TestServer) -> (crate::harness::TeamFixture, String) {
    let t = srv.team().await;
    let m = &t.maintainer.1;
    m.post(
        &format!("/teams/{}/models", t.team),
        &json!({"name": "income", "task": "binary_classification"}),
    )
    .await
    .ok(StatusCode::CREATED);
    for f in ["lightgbm_binary.txt", "lightgbm_binary.onnx", "xgboost_binary.json"] {
        m.upload_fixture(&t.team, "income", f).await.ok(StatusCode::CREATED);
    }
    let base = format!("/deployments/{}/income", t.team);
    (t, base)
}

fn spec(versions: &[(u32, u32)]) -> Value {
    json!({"versions": versions.iter().map(|(v, w)| json!({"version": v, "weight": w})).collect::<Vec<_>>()})
}

async fn predict(api: &Api, base: &str, body: Value) -> crate::harness::Resp {
    api.post(&format!("{base}/production/predict"), &body).await
}

fn rows_objects(exp: &Value) -> Vec<Value> {
    let names: Vec<&str> =
        exp["features"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    exp["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            Value::Object(
                names
                    .iter()
                    .zip(r.as_array().unwrap())
                    .map(|(n, v)| (n.to_string(), v.clone()))
                    .collect(),
            )
        })
        .collect()
}

shared_server_tests! {
    async fn trees_with_shared_subtrees_deploy_and_answer_as_onnxruntime_does(srv: &TestServer) {
        // onnxmltools writes LightGBM's categorical splits as trees with nodes reached from two
        // parents: such a file is accepted, deployed and served, answering what onnxruntime does.
        let exp = expected("lightgbm_categorical_binary");
        assert!(!exp["shared_nodes"].as_array().unwrap().is_empty(), "the fixture shares nodes");
        let t = srv.team().await;
        let m = &t.maintainer.1;
        m.post(&format!("/teams/{}/models", t.team), &json!({"name": "cats", "task": "binary_classification"})).await.ok(StatusCode::CREATED);
        m.upload_fixture(&t.team, "cats", "lightgbm_categorical_binary.onnx").await.ok(StatusCode::CREATED);
        let base = format!("/deployments/{}/cats", t.team);
        m.put(&format!("{base}/production"), &spec(&[(1, 100)])).await.ok(StatusCode::OK);
        let r = predict(m, &base, json!({"rows": exp["rows"]})).await.ok(StatusCode::OK);
        assert_eq!(r["predictions"], exp["onnxruntime_labels"], "{r}");
        let got = r["probabilities"].as_array().unwrap();
        let want = exp["onnxruntime_probabilities"].as_array().unwrap();
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            for (a, b) in g.as_array().unwrap().iter().zip(w.as_array().unwrap()) {
                assert!((a.as_f64().unwrap() - b.as_f64().unwrap()).abs() <= 1e-6, "{a} vs onnxruntime's {b}");
            }
        }
    }

    async fn deployed_models_answer_like_their_source_library(srv: &TestServer) {
        let (t, base) = income_model(srv).await;
        let (m, viewer) = (&t.maintainer.1, &t.viewer.1);
        let d = m.put(&format!("{base}/production"), &spec(&[(1, 100)])).await.ok(StatusCode::OK);
        assert_eq!(d["revision"], 1);
        let exp = expected("lightgbm_binary");
        let want = exp["predictions"].as_array().unwrap();
        // Rows as objects, rows as arrays, and columns give the same answers.
        let objects = rows_objects(&exp);
        let names: Vec<String> = exp["features"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
        let columns: serde_json::Map<String, Value> = names
            .iter()
            .enumerate()
            .map(|(j, n)| (n.clone(), Value::Array(exp["rows"].as_array().unwrap().iter().map(|r| r[j].clone()).collect())))
            .collect();
        for body in [json!({"rows": objects}), json!({"rows": exp["rows"]}), json!({"columns": columns})] {
            let r = predict(viewer, &base, body).await.ok(StatusCode::OK);
            assert_eq!(r["version"], 1);
            assert_eq!(r["model"], format!("{}/income", t.team));
            assert!(r["request_id"].as_str().unwrap().starts_with("req_"));
            assert_eq!(r["predictions"], exp["labels"]);
            let probs = r["probabilities"].as_array().unwrap();
            for (g, w) in probs.iter().zip(want) {
                for (a, b) in g.as_array().unwrap().iter().zip(w.as_array().unwrap()) {
                    assert!((a.as_f64().unwrap() - b.as_f64().unwrap()).abs() <= 1e-5, "{a} vs {b}");
                }
            }
        }
        // The Open Inference Protocol answers the same.
        let n = exp["rows"].as_array().unwrap().len();
        let flat: Vec<Value> = exp["rows"].as_array().unwrap().iter().flat_map(|r| r.as_array().unwrap().clone()).collect();
        let oip = viewer
            .post(&format!("/v2/models/{}.income/infer", t.team), &json!({"id": "x1", "inputs": [{"name": "input", "shape": [n, 6], "datatype": "FP32", "data": flat}]}))
            .await
            .ok(StatusCode::OK);
        assert_eq!(oip["id"], "x1");
        assert_eq!(oip["model_version"], "1");
        let label = oip["outputs"].as_array().unwrap().iter().find(|o| o["name"] == "label").unwrap();
        assert_eq!(label["data"], exp["labels"]);
        // A percent-encoded name takes the router rather than the connection's own reader
        // (h1.rs): the same answer.
        let routed = viewer
            .post(&format!("/v2/models/{}%2Eincome/infer", t.team), &json!({"id": "x1", "inputs": [{"name": "input", "shape": [n, 6], "datatype": "FP32", "data": flat}]}))
            .await
            .ok(StatusCode::OK);
        assert_eq!(routed, oip);
        let meta = viewer.get(&format!("/v2/models/{}.income", t.team)).await.ok(StatusCode::OK);
        assert_eq!(meta["inputs"][0]["shape"], json!([-1, 6]));
        assert_eq!(meta["versions"], json!(["1"]));
        let cfg = viewer.get(&format!("/v2/models/{}.income/config", t.team)).await.ok(StatusCode::OK);
        assert_eq!(cfg["max_batch_size"], 0);
        assert_eq!(cfg["input"][0]["data_type"], "TYPE_FP32");
        viewer.get(&format!("/v2/models/{}.income/ready", t.team)).await.ok(StatusCode::OK);
        let stats = viewer.get(&format!("/v2/models/{}.income/stats", t.team)).await.ok(StatusCode::OK);
        assert!(stats["model_stats"][0]["inference_count"].as_u64().unwrap() >= 4 * n as u64);
        let server = srv.anonymous().get("/v2").await.ok(StatusCode::OK);
        assert!(server["extensions"].as_array().unwrap().contains(&json!("statistics")));
        // History and audit.
        let history = viewer.all_pages(&format!("{base}/production/history")).await;
        assert_eq!(history.len(), 1);
        assert_eq!(history[0]["by"], t.maintainer.0);
        let audit = m.all_pages(&format!("/audit?team={}&action=deployment.", t.team)).await;
        assert_eq!(audit.len(), 1);
        // Developers cannot deploy; the deployment metrics count every request.
        t.developer.1.put(&format!("{base}/staging"), &spec(&[(1, 100)])).await.err(StatusCode::FORBIDDEN, "forbidden");
        let metrics = viewer.get(&format!("{base}/production/metrics")).await.ok(StatusCode::OK);
        assert_eq!(metrics["requests"], 5);
        assert_eq!(metrics["rows"].as_u64().unwrap(), 5 * n as u64);
        // /metrics names every team's deployments: not for anonymous callers or team keys.
        srv.anonymous().get("/metrics").await.err(StatusCode::UNAUTHORIZED, "unauthenticated");
        viewer.get("/metrics").await.err(StatusCode::FORBIDDEN, "forbidden");
        let prom = srv.admin().get("/metrics").await;
        assert_eq!(prom.status, StatusCode::OK);
        let text = prom.body.as_str().unwrap_or_default().to_string();
        assert!(text.contains(&format!("plinth_requests_total{{team=\"{}\",model=\"income\",environment=\"production\"}} 5", t.team)), "{text}");
        assert!(text.contains("plinth_request_duration_seconds_bucket"));
        assert!(text.contains("plinth_model_load_seconds"));
    }

    async fn refused_predictions_count_in_the_metrics_by_code(srv: &TestServer) {
        let (t, base) = income_model(srv).await;
        let m = &t.maintainer.1;
        m.put(&format!("{base}/production"), &spec(&[(1, 100)])).await.ok(StatusCode::OK);
        let name = format!("{}.income", t.team);
        // Plinth's JSON: a row missing a feature, a body that is not JSON, a text body.
        predict(m, &base, json!({"rows": [{"age": 39}]})).await.err(StatusCode::BAD_REQUEST, "missing_field");
        let raw = |ct: &str, body: &'static str| m.request(reqwest::Method::POST, &format!("/api/v1{base}/production/predict")).header("content-type", ct).body(body);
        m.send(raw("application/json", "{")).await.err(StatusCode::BAD_REQUEST, "malformed_json");
        m.send(raw("text/plain", r#"{"rows": [[39, 13, 2174, 0, 40, 1]]}"#)).await.err(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
        // The Open Inference Protocol: a wrong shape, an unknown version, malformed JSON.
        let infer = |path: String, body: &'static str| m.request(reqwest::Method::POST, &path).body(body);
        let bad_shape = r#"{"inputs":[{"name":"input","shape":[1,5],"datatype":"FP32","data":[1,2,3,4,5]}]}"#;
        assert_eq!(m.send(infer(format!("/v2/models/{name}/infer"), bad_shape)).await.status, StatusCode::BAD_REQUEST);
        assert_eq!(m.send(infer(format!("/v2/models/{name}/versions/9/infer"), bad_shape)).await.status, StatusCode::NOT_FOUND);
        assert_eq!(m.send(infer(format!("/v2/models/{name}/infer"), "{")).await.status, StatusCode::BAD_REQUEST);
        // A caller of another team is refused, and counted.
        let stranger = srv.team().await.maintainer.1;
        predict(&stranger, &base, json!({"rows": [[39, 13, 2174, 0, 40, 1]]})).await.err(StatusCode::NOT_FOUND, "not_found");
        predict(m, &base, json!({"rows": [[39, 13, 2174, 0, 40, 1]]})).await.ok(StatusCode::OK);
        let metrics = m.get(&format!("{base}/production/metrics")).await.ok(StatusCode::OK);
        assert_eq!(metrics["requests"], 8, "{metrics}");
        assert_eq!(metrics["errors"], json!({"invalid_field": 1, "malformed_json": 2, "missing_field": 1, "not_found": 2, "unsupported_media_type": 1}), "{metrics}");
        let text = srv.admin().get("/metrics").await.body.as_str().unwrap_or_default().to_string();
        let line = format!("plinth_request_errors_total{{team=\"{}\",model=\"income\",environment=\"production\",code=\"malformed_json\"}} 2", t.team);
        assert!(text.contains(&line), "{line} in {text}");
    }

    async fn the_prediction_log_keeps_what_its_retention_says(srv: &TestServer) {
        let (t, base) = income_model(srv).await;
        let m = &t.maintainer.1;
        let mut s = spec(&[(1, 100)]);
        s["log_retention"] = json!({"max_age_hours": 24, "max_bytes": 512 * 1024});
        let e = m.put(&format!("{base}/production"), &s).await.err(StatusCode::BAD_REQUEST, "invalid_field");
        assert_eq!(e["field"], "log_retention.max_bytes");
        s["log_retention"]["max_bytes"] = json!(1 << 20);
        let d = m.put(&format!("{base}/production"), &s).await.ok(StatusCode::OK);
        let dir = srv.data_dir.join("predictions").join(d["id"].as_str().unwrap());
        // A file two days old, as a previous run would have left it.
        std::fs::create_dir_all(&dir).unwrap();
        let now_hour = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64 / 3600;
        let old = dir.join(format!("{}.jsonl", now_hour - 48));
        std::fs::write(&old, "{}\n").unwrap();
        // About 1.6 MB of records: 2,000 rows each.
        let columns: serde_json::Map<String, Value> = ["age", "education_num", "capital_gain", "capital_loss", "hours_per_week", "sex_male"]
            .iter()
            .map(|f| (f.to_string(), json!(vec![1.0; 2000])))
            .collect();
        for _ in 0..15 {
            predict(m, &base, json!({"columns": columns})).await.ok(StatusCode::OK);
        }
        let log = &srv.core.engine().log;
        log.flush();
        let size = |dir: &std::path::Path| std::fs::read_dir(dir).unwrap().flatten().map(|e| e.metadata().unwrap().len()).sum::<u64>();
        assert!(size(&dir) > 1 << 20, "the test wrote more than the budget: {}", size(&dir));
        let files_before = std::fs::read_dir(&dir).unwrap().count();
        assert!(files_before > 3, "files roll at an eighth of the budget: {files_before}");
        let now_us = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as i64;
        assert!(log.prune(now_us).unwrap() >= 2);
        assert!(!old.exists(), "past the age limit");
        let kept = size(&dir);
        assert!(kept <= (1 << 20) + (1 << 20) / 8 + 200_000, "over the budget: {kept}");
        // What is kept still reads, newest records included.
        let records = m.get(&format!("{base}/production/predictions?limit=100")).await.ok(StatusCode::OK);
        assert!(!records.as_array().unwrap().is_empty());
    }

    async fn versions_that_serve_or_shadow_cannot_be_archived(srv: &TestServer) {
        let (t, base) = income_model(srv).await;
        let (m, team) = (&t.maintainer.1, t.team.clone());
        let mut s = spec(&[(1, 100)]);
        s["shadows"] = json!([2]);
        m.put(&format!("{base}/production"), &s).await.ok(StatusCode::OK);
        for v in [1, 2] {
            let e = m.post(&format!("/teams/{team}/models/income/versions/{v}/archive"), &json!({})).await.err(StatusCode::CONFLICT, "conflict");
            assert!(e["message"].as_str().unwrap().contains(&format!("version {v} serves in production")), "{e}");
        }
        m.post(&format!("/teams/{team}/models/income/archive"), &json!({})).await.err(StatusCode::CONFLICT, "conflict");
        // Refused changes changed nothing: grants and predictions go on.
        let other = srv.team().await;
        m.post(&format!("{base}/production/grants"), &json!({"team": other.team})).await.ok(StatusCode::OK);
        predict(m, &base, json!({"rows": [[39, 13, 2174, 0, 40, 1]]})).await.ok(StatusCode::OK);
        // Once v3 serves alone, v1 and v2 may go.
        m.put(&format!("{base}/production"), &spec(&[(3, 100)])).await.ok(StatusCode::OK);
        for v in [1, 2] {
            let archived = m.post(&format!("/teams/{team}/models/income/versions/{v}/archive"), &json!({})).await.ok(StatusCode::OK);
            assert!(archived["archived_at"].is_string(), "{archived}");
        }
        let answer = predict(m, &base, json!({"rows": [[39, 13, 2174, 0, 40, 1]]})).await.ok(StatusCode::OK);
        assert_eq!(answer["version"], 3);
    }

    async fn traffic_splits_by_weight_and_sticks_by_key(srv: &TestServer) {
        let (t, base) = income_model(srv).await;
        let m = &t.maintainer.1;
        m.put(&format!("{base}/production"), &spec(&[(1, 80), (3, 20)])).await.ok(StatusCode::OK);
        let row = json!({"rows": [[39, 13, 2174, 0, 40, 1]]});
        let mut counts: HashMap<u64, usize> = HashMap::new();
        for _ in 0..400 {
            let r = predict(m, &base, row.clone()).await.ok(StatusCode::OK);
            *counts.entry(r["version"].as_u64().unwrap()).or_default() += 1;
        }
        // 20 % of 400 = 80, standard deviation 8: allow five of them.
        let canary = counts.get(&3).copied().unwrap_or(0);
        assert!((40..=120).contains(&canary), "canary got {canary} of 400: {counts:?}");
        assert_eq!(counts.values().sum::<usize>(), 400);
        // A routing key always reaches the same version; many keys spread by weight.
        let mut by_key = HashMap::new();
        for k in 0..200 {
            let key = format!("user-{k}");
            let mut body = row.clone();
            body["routing_key"] = json!(key);
            let first = predict(m, &base, body.clone()).await.ok(StatusCode::OK)["version"].clone();
            for _ in 0..3 {
                assert_eq!(predict(m, &base, body.clone()).await.ok(StatusCode::OK)["version"], first, "key {key} moved");
            }
            by_key.insert(key, first);
        }
        let sticky_canary = by_key.values().filter(|v| **v == 3).count();
        assert!((15..=70).contains(&sticky_canary), "{sticky_canary} of 200 keys on the canary");
        // Widening the canary keeps every key whose draw was already below the new bound.
        m.post(&format!("{base}/production/traffic"), &json!({"versions": [{"version": 1, "weight": 50}, {"version": 3, "weight": 50}]})).await.ok(StatusCode::OK);
        let history = m.all_pages(&format!("{base}/production/history")).await;
        assert_eq!(history[0]["action"], "traffic");
        assert_eq!(history.len(), 2);
    }

    async fn a_canary_reading_fewer_features_takes_the_same_rows(srv: &TestServer) {
        // Version 4 reads five of the six features (no `sex_male`); it is the canary.
        let (t, base) = income_model(srv).await;
        let m = &t.maintainer.1;
        m.upload_fixture(&t.team, "income", "../eval/adult_v2.txt").await.ok(StatusCode::CREATED);
        m.put(&format!("{base}/production"), &spec(&[(1, 50), (4, 50)])).await.ok(StatusCode::OK);
        let row = json!({"age": 39, "education_num": 13, "capital_gain": 2174, "capital_loss": 0, "hours_per_week": 40, "sex_male": 1});
        let columns = json!({"age": [39], "education_num": [13], "capital_gain": [2174], "capital_loss": [0], "hours_per_week": [40], "sex_male": [1]});
        let mut answered = HashMap::new();
        for k in 0..40 {
            for body in [json!({"rows": [row], "routing_key": format!("k{k}")}), json!({"columns": columns, "routing_key": format!("k{k}")})] {
                let r = predict(m, &base, body).await.ok(StatusCode::OK);
                *answered.entry(r["version"].as_u64().unwrap()).or_insert(0) += 1;
            }
        }
        assert!(answered.contains_key(&1) && answered.contains_key(&4), "{answered:?}");
        // A name no served version reads is still refused, and so is a missing one.
        let mut typo = row.clone();
        typo["agee"] = json!(39);
        predict(m, &base, json!({"rows": [typo]})).await.err(StatusCode::BAD_REQUEST, "unknown_field");
        let mut short = row.clone();
        short.as_object_mut().unwrap().remove("age");
        predict(m, &base, json!({"rows": [short]})).await.err(StatusCode::BAD_REQUEST, "missing_field");
    }

    async fn shadow_answers_are_logged_never_returned(srv: &TestServer) {
        let (t, base) = income_model(srv).await;
        let m = &t.maintainer.1;
        let mut s = spec(&[(1, 100)]);
        s["shadows"] = json!([2, 3]);
        m.put(&format!("{base}/production"), &s).await.ok(StatusCode::OK);
        for _ in 0..5 {
            let r = predict(m, &base, json!({"rows": [[39, 13, 2174, 0, 40, 1]]})).await.ok(StatusCode::OK);
            assert_eq!(r["version"], 1, "a shadow answered: {r}");
        }
        let log_path = format!("{base}/production/predictions?limit=100");
        eventually("the shadow answers to reach the log", async || {
            m.get(&log_path).await.body.as_array().is_some_and(|a| a.iter().filter(|r| r["shadow"] == true).count() == 10)
        })
        .await;
        let log = m.get(&log_path).await.ok(StatusCode::OK);
        let records = log.as_array().unwrap();
        assert_eq!(records.iter().filter(|r| r["shadow"] == false).count(), 5);
        for v in [2, 3] {
            let shadow: Vec<&Value> = records.iter().filter(|r| r["shadow"] == true && r["version"] == v).collect();
            assert_eq!(shadow.len(), 5, "version {v}");
            assert!(shadow[0]["outputs"]["probabilities"]["data"].as_array().unwrap().len() == 2);
        }
        assert_eq!(records[0]["caller"], t.maintainer.0);
        assert_eq!(records[0]["inputs"]["input"]["shape"], json!([1, 6]));
        // Time range and shadow filters.
        let only = m.get(&format!("{base}/production/predictions?shadow=true&limit=100")).await.ok(StatusCode::OK);
        assert_eq!(only.as_array().unwrap().len(), 10);
        let none = m.get(&format!("{base}/production/predictions?until=2001-01-01T00:00:00Z")).await.ok(StatusCode::OK);
        assert!(none.as_array().unwrap().is_empty());
    }

    async fn hot_swaps_and_rollbacks_fail_no_request(srv: &TestServer) {
        let (t, base) = income_model(srv).await;
        let m = t.maintainer.1.clone();
        m.put(&format!("{base}/production"), &spec(&[(1, 100)])).await.ok(StatusCode::OK);
        let stop = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(std::sync::Mutex::new(HashMap::<u64, usize>::new()));
        let mut clients = Vec::new();
        for c in 0..4 {
            let (m, base, stop, failures, done, seen) = (m.clone(), base.clone(), stop.clone(), failures.clone(), done.clone(), seen.clone());
            clients.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let r = predict(&m, &base, json!({"rows": [[39, 13, 2174, 0, 40, c]]})).await;
                    if r.status == StatusCode::OK {
                        *seen.lock().unwrap().entry(r.body["version"].as_u64().unwrap()).or_default() += 1;
                    } else {
                        failures.fetch_add(1, Ordering::Relaxed);
                        eprintln!("failed during a swap: {} {}", r.status, r.body);
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        let changes = [
            ("traffic", json!({"versions": [{"version": 2, "weight": 100}]})),
            ("rollback", json!({})),
            ("deploy", spec(&[(1, 50), (3, 50)])),
            ("rollback", json!({})),
            ("traffic", json!({"versions": [{"version": 3, "weight": 100}]})),
            ("rollback", json!({"to_revision": 1})),
        ];
        for (action, body) in changes {
            let before = done.load(Ordering::Relaxed);
            eventually("requests to flow", async || done.load(Ordering::Relaxed) > before + 20).await;
            let r = match action {
                "deploy" => m.put(&format!("{base}/production"), &body).await,
                other => m.post(&format!("{base}/production/{other}"), &body).await,
            };
            r.ok(StatusCode::OK);
        }
        let before = done.load(Ordering::Relaxed);
        eventually("requests to flow", async || done.load(Ordering::Relaxed) > before + 20).await;
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            c.await.unwrap();
        }
        assert_eq!(failures.load(Ordering::Relaxed), 0, "requests failed during hot swaps");
        let seen = seen.lock().unwrap().clone();
        for v in [1, 2, 3] {
            assert!(seen.get(&v).copied().unwrap_or(0) > 0, "version {v} never answered: {seen:?}");
        }
        let history = m.all_pages(&format!("{base}/production/history")).await;
        assert_eq!(history.len(), 7);
        assert_eq!(history[0]["spec"]["versions"], json!([{"version": 1, "weight": 100}]), "rolled back to revision 1");
        let actions: Vec<&str> = history.iter().rev().map(|h| h["action"].as_str().unwrap()).collect();
        assert_eq!(actions, ["deploy", "traffic", "rollback", "deploy", "rollback", "traffic", "rollback"]);
    }

    async fn idle_versions_scale_to_zero_and_come_back(srv: &TestServer) {
        let (t, base) = income_model(srv).await;
        let m = &t.maintainer.1;
        let mut s = spec(&[(1, 100)]);
        s["scaling"] = json!({"max_workers": 2, "idle_seconds": 1});
        m.put(&format!("{base}/production"), &s).await.ok(StatusCode::OK);
        predict(m, &base, json!({"rows": [[39, 13, 2174, 0, 40, 1]]})).await.ok(StatusCode::OK);
        let metrics_path = format!("{base}/production/metrics");
        let v = m.get(&metrics_path).await.ok(StatusCode::OK);
        assert_eq!(v["versions"][0]["model_loaded"], true);
        assert_eq!(v["versions"][0]["workers"], 1);
        eventually("the idle version to scale to zero", async || {
            let v = m.get(&metrics_path).await.body;
            v["versions"][0]["workers"] == 0 && v["versions"][0]["model_loaded"] == false
        })
        .await;
        // The first request after idle loads the model again and succeeds.
        let r = predict(m, &base, json!({"rows": [[39, 13, 2174, 0, 40, 1]]})).await.ok(StatusCode::OK);
        assert_eq!(r["predictions"], json!([1]));
        let v = m.get(&metrics_path).await.ok(StatusCode::OK);
        assert_eq!(v["versions"][0]["loads"].as_u64().unwrap(), 2, "{v}");
        assert!(v["versions"][0]["last_load_ms"].as_f64().unwrap() > 0.0);
    }

    async fn bad_prediction_inputs_name_the_problem(srv: &TestServer) {
        let (t, base) = income_model(srv).await;
        let m = &t.maintainer.1;
        let mut s = spec(&[(1, 100)]);
        s["limits"] = json!({"max_rows": 5});
        m.put(&format!("{base}/production"), &s).await.ok(StatusCode::OK);
        let row = json!({"age": 39, "education_num": 13, "capital_gain": 0, "capital_loss": 0, "hours_per_week": 40, "sex_male": 1});
        let mut missing = row.clone();
        missing.as_object_mut().unwrap().remove("age");
        let mut extra = row.clone();
        extra["height"] = json!(180);
        let mut text = row.clone();
        text["age"] = json!("old");
        let six: Vec<Value> = vec![row.clone(); 6];
        let cases: Vec<(Value, StatusCode, &str, &str)> = vec![
            (json!({"rows": [missing]}), StatusCode::BAD_REQUEST, "missing_field", "rows[0].age"),
            (json!({"rows": [extra]}), StatusCode::BAD_REQUEST, "unknown_field", "rows[0].height"),
            (json!({"rows": [text]}), StatusCode::BAD_REQUEST, "invalid_field", "rows[0].age"),
            (json!({"rows": [[1, 2, 3]]}), StatusCode::BAD_REQUEST, "invalid_field", "rows[0]"),
            (json!({"rows": []}), StatusCode::BAD_REQUEST, "invalid_field", "rows"),
            (json!({"rows": six}), StatusCode::BAD_REQUEST, "invalid_field", "rows"),
            (json!({}), StatusCode::BAD_REQUEST, "missing_field", "rows"),
            (json!({"rows": [row.clone()], "columns": {}}), StatusCode::BAD_REQUEST, "invalid_field", "columns"),
            (json!({"rows": [row.clone()], "key": "k"}), StatusCode::BAD_REQUEST, "unknown_field", "key"),
            (json!({"columns": {"age": [1]}}), StatusCode::BAD_REQUEST, "missing_field", "columns.education_num"),
            (json!({"rows": ["x"]}), StatusCode::BAD_REQUEST, "invalid_field", "rows[0]"),
        ];
        for (body, status, code, field) in cases {
            let e = predict(m, &base, body.clone()).await.err(status, code);
            assert_eq!(e["field"], field, "{body}");
        }
        let raw = m.send(m.request(reqwest::Method::POST, &format!("{base}/production/predict")).header("content-type", "application/json").body("{\"rows\": [")).await;
        raw.err(StatusCode::BAD_REQUEST, "malformed_json");
        // Open Inference Protocol framing and shapes.
        let infer = format!("/v2/models/{}.income/infer", t.team);
        let good = |shape: Value, data: Value| json!({"inputs": [{"name": "input", "shape": shape, "datatype": "FP32", "data": data}]});
        for (body, needle) in [
            (good(json!([1, 5]), json!([1, 2, 3, 4, 5])), "shape"),
            (good(json!([1, 6]), json!([1, 2, 3])), "6 expected"),
            (json!({"inputs": [{"name": "x", "shape": [1, 6], "datatype": "FP32", "data": [1, 2, 3, 4, 5, 6]}]}), "not an input"),
            (json!({"inputs": [{"name": "input", "shape": [1, 6], "datatype": "BYTES", "data": ["a", "b", "c", "d", "e", "f"]}]}), "FP32"),
            (json!({"inputs": [{"name": "input", "shape": [1, 6], "datatype": "FP42", "data": [1, 2, 3, 4, 5, 6]}]}), "unknown datatype"),
            (json!({"inputs": [{"name": "input", "shape": [1, 6], "datatype": "FP32", "data": ["a", 2, 3, 4, 5, 6]}]}), "expected a number"),
            (json!({"inputs": []}), "at least one input"),
            (json!({"inputs": [{"name": "input", "shape": [1, 6], "datatype": "FP32"}]}), "missing"),
        ] {
            let r = m.post(&infer, &body).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.body);
            let msg = r.body["error"].as_str().unwrap();
            assert!(msg.contains(needle), "{body}: '{msg}' lacks '{needle}'");
        }
        // Binary framing: the header length and the declared sizes must fit the body.
        let head = json!({"inputs": [{"name": "input", "shape": [1, 6], "datatype": "FP32", "parameters": {"binary_data_size": 24}}]}).to_string();
        let mut body = head.clone().into_bytes();
        body.extend_from_slice(&[0u8; 20]);
        let r = m.send(m.request(reqwest::Method::POST, &infer).header("Inference-Header-Content-Length", head.len()).body(body)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert!(r.body["error"].as_str().unwrap().contains("binary_data_size"), "{}", r.body);
        let r = m.send(m.request(reqwest::Method::POST, &infer).header("Inference-Header-Content-Length", "999999").body(head.clone())).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        let r = m.send(m.request(reqwest::Method::POST, &infer).header("Inference-Header-Content-Length", "12").body(head)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "a cut JSON header: {}", r.body);
        m.get(&format!("/v2/models/{}.income/versions/7", t.team)).await.ok(StatusCode::NOT_FOUND);
        // Deployment specs are checked before anything changes.
        for (body, field) in [
            (spec(&[(1, 60), (3, 30)]), "versions"),
            (spec(&[(9, 100)]), "versions"),
            (json!({"versions": [{"version": 1, "weight": 100}], "shadows": [1]}), "shadows[0]"),
            (json!({"versions": [{"version": 1, "weight": 100}], "batching": {"max_batch_size": 0}}), "batching.max_batch_size"),
            (json!({"versions": [{"version": 1, "weight": 100}], "log_sample_rate": 2.0}), "log_sample_rate"),
            (json!({"versions": [{"version": 1, "weight": 100}], "replicas": 3}), "replicas"),
        ] {
            let r = m.put(&format!("{base}/production"), &body).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.body);
            assert_eq!(r.body["error"]["field"], field, "{body}");
        }
        m.put(&format!("{base}/nowhere"), &spec(&[(1, 100)])).await.err(StatusCode::NOT_FOUND, "not_found");
        assert_eq!(m.all_pages(&format!("{base}/production/history")).await.len(), 1, "refused specs changed nothing");
    }

    async fn deployments_are_private_unless_shared_or_public(srv: &TestServer) {
        let (a, base) = income_model(srv).await;
        let b = srv.team().await;
        a.maintainer.1.put(&format!("{base}/production"), &spec(&[(1, 100)])).await.ok(StatusCode::OK);
        let body = json!({"rows": [[39, 13, 2174, 0, 40, 1]]});
        let outsider = &b.developer.1;
        predict(outsider, &base, body.clone()).await.err(StatusCode::NOT_FOUND, "not_found");
        outsider.get(&format!("{base}/production")).await.err(StatusCode::NOT_FOUND, "not_found");
        assert_eq!(outsider.get(&format!("/v2/models/{}.income", a.team)).await.status, StatusCode::NOT_FOUND);
        assert!(outsider.all_pages("/deployments").await.iter().all(|d| d["team"] != a.team.as_str()));
        predict(&srv.anonymous(), &base, body.clone()).await.err(StatusCode::UNAUTHORIZED, "unauthenticated");
        // Sharing with team B lets its members call, not manage.
        a.developer.1.post(&format!("{base}/production/grants"), &json!({"team": b.team})).await.err(StatusCode::FORBIDDEN, "forbidden");
        let d = a.maintainer.1.post(&format!("{base}/production/grants"), &json!({"team": b.team})).await.ok(StatusCode::OK);
        assert_eq!(d["granted_teams"], json!([b.team]));
        predict(outsider, &base, body.clone()).await.ok(StatusCode::OK);
        outsider.post(&format!("/v2/models/{}.income/infer", a.team), &json!({"inputs": [{"name": "input", "shape": [1, 6], "datatype": "FP32", "data": [39, 13, 2174, 0, 40, 1]}]})).await.ok(StatusCode::OK);
        outsider.put(&format!("{base}/production"), &spec(&[(3, 100)])).await.err(StatusCode::NOT_FOUND, "not_found");
        let r = a.maintainer.1.send(a.maintainer.1.request(reqwest::Method::DELETE, &format!("{base}/production/grants")).json(&json!({"team": b.team}))).await;
        assert_eq!(r.status, StatusCode::OK);
        predict(outsider, &base, body.clone()).await.err(StatusCode::NOT_FOUND, "not_found");
        // A public deployment answers anyone, without a key.
        let mut s = spec(&[(1, 100)]);
        s["public"] = json!(true);
        a.maintainer.1.put(&format!("{base}/production"), &s).await.ok(StatusCode::OK);
        predict(&srv.anonymous(), &base, body.clone()).await.ok(StatusCode::OK);
        // An invalid key is refused even there.
        predict(&srv.anonymous().with_key("plk_bad"), &base, body).await.err(StatusCode::UNAUTHORIZED, "unauthenticated");
    }

    async fn full_queues_shed_load_and_slow_answers_time_out(srv: &TestServer) {
        let (t, base) = income_model(srv).await;
        let m = t.maintainer.1.clone();
        let mut s = spec(&[(1, 100)]);
        s["limits"] = json!({"max_queue": 1, "timeout_ms": 60000, "max_rows": 20000});
        s["scaling"] = json!({"max_workers": 1, "idle_seconds": 60});
        s["batching"] = json!({"max_batch_size": 1, "max_wait_us": 0});
        m.put(&format!("{base}/production"), &s).await.ok(StatusCode::OK);
        // Binary tensors (Triton's extension) parse in no time, so the queue fills.
        let rows = 20000usize;
        let raw: Vec<u8> = (0..rows * 6).flat_map(|i| ((i % 97) as f32).to_le_bytes()).collect();
        let head = json!({"inputs": [{"name": "input", "shape": [rows, 6], "datatype": "FP32", "parameters": {"binary_data_size": raw.len()}}]}).to_string();
        let mut framed = head.clone().into_bytes();
        framed.extend_from_slice(&raw);
        let infer = format!("/v2/models/{}.income/infer", t.team);
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (m, infer, framed, len) = (m.clone(), infer.clone(), framed.clone(), head.len());
            tasks.push(tokio::spawn(async move {
                m.send(m.request(reqwest::Method::POST, &infer).header("Inference-Header-Content-Length", len).body(framed)).await
            }));
        }
        let mut shed = 0;
        for task in tasks {
            let r = task.await.unwrap();
            match r.status {
                StatusCode::OK => {}
                StatusCode::SERVICE_UNAVAILABLE => {
                    assert_eq!(r.body["code"], "overloaded", "{}", r.body);
                    assert_eq!(r.headers["retry-after"], "1");
                    shed += 1;
                }
                other => panic!("unexpected {other}: {}", r.body),
            }
        }
        let big: Vec<Value> = (0..rows).map(|i| json!([20 + i % 50, 9, 0, 0, 40, i % 2])).collect();
        let body = json!({"rows": big});
        assert!(shed > 0, "a queue of one never shed a request among 16 concurrent ones");
        let metrics = m.get(&format!("{base}/production/metrics")).await.ok(StatusCode::OK);
        assert_eq!(metrics["errors"]["overloaded"].as_u64().unwrap(), shed);
        // A timeout shorter than the work fails with `timeout`.
        s["limits"] = json!({"timeout_ms": 1, "max_rows": 20000});
        m.put(&format!("{base}/production"), &s).await.ok(StatusCode::OK);
        let mut timed_out = false;
        for _ in 0..5 {
            let r = predict(&m, &base, body.clone()).await;
            if r.status == StatusCode::GATEWAY_TIMEOUT {
                assert_eq!(r.body["error"]["code"], "timeout");
                timed_out = true;
                break;
            }
        }
        assert!(timed_out, "20000 rows never took more than 1 ms");
    }
}

/// `/metrics` counts the client connections open to the server (the runners skip waiting to
/// batch while there is a single one): raw connections show up once served and are no longer
/// counted once closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_open_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let srv = TestServer::start(ServerOptions {
        metrics_token: Some(SCRAPE_TOKEN.into()),
        ..ServerOptions::new(Backend::Sqlite)
    })
    .await;
    let api = Api::new(&srv.url, SCRAPE_TOKEN).keeping_one_idle_connection();
    let open = async || open_connections(&api).await;
    // The scrapes reuse one pooled connection: once the harness's are closed, it is the only one.
    eventually("only the test's own connection is open", async || open().await == 1).await;
    let addr = srv.url.trim_start_matches("http://").to_string();
    let mut raw = Vec::new();
    for _ in 0..3 {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: plinth\r\n\r\n").await.unwrap();
        let mut answer = [0u8; 12];
        s.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"HTTP/1.1 200");
        raw.push(s);
    }
    assert_eq!(open().await, 4, "three more connections are open");
    drop(raw);
    eventually("closed connections are no longer counted", async || open().await == 1).await;
    srv.stop().await;
}

/// The scrape token of the tests that read `/metrics` on a caller's own connection.
const SCRAPE_TOKEN: &str = "scrape-token-for-tests";

/// The server's `plinth_http_connections_open` gauge, read through `api`'s own connection
/// with the server's scrape token.
async fn open_connections(api: &Api) -> u64 {
    let scraper = api.as_key_on_same_connections(SCRAPE_TOKEN);
    let text = scraper.get("/metrics").await.body.as_str().unwrap_or_default().to_string();
    text.lines()
        .find_map(|l| l.strip_prefix("plinth_http_connections_open "))
        .and_then(|v| v.parse().ok())
        .expect("the gauge is reported")
}

/// A lone client connection has nothing to batch with, so its requests run on their own task
/// instead of a worker's: they are answered and counted like any other, they keep the version
/// loaded while they come (idleness is judged by the last inference, not by the worker's own
/// work), and once they stop the version still scales to zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_connection_keeps_its_version_loaded_then_lets_it_idle() {
    let srv = TestServer::start(ServerOptions {
        metrics_token: Some(SCRAPE_TOKEN.into()),
        ..ServerOptions::new(Backend::Sqlite)
    })
    .await;
    let (t, base) = income_model(&srv).await;
    // The fixture's client is dropped, and its connections with it: only this one's count.
    let m = &t.maintainer.1.keeping_one_idle_connection();
    drop(t);
    let mut s = spec(&[(1, 100)]);
    s["scaling"] = json!({"max_workers": 2, "idle_seconds": 1});
    m.put(&format!("{base}/production"), &s).await.ok(StatusCode::OK);
    let row = json!({"rows": [[39, 13, 2174, 0, 40, 1]]});
    predict(m, &base, row.clone()).await.ok(StatusCode::OK);
    eventually("only the maintainer's connection is open", async || open_connections(m).await == 1)
        .await;
    let metrics_path = format!("{base}/production/metrics");
    let before = m.get(&metrics_path).await.ok(StatusCode::OK)["versions"][0].clone();
    assert_eq!(before["model_loaded"], true, "{before}");
    // Requests one after another for 2.5 idle periods.
    let started = std::time::Instant::now();
    let mut sent = 0;
    while started.elapsed() < std::time::Duration::from_millis(2500) {
        let r = predict(m, &base, row.clone()).await.ok(StatusCode::OK);
        assert_eq!(r["predictions"], json!([1]));
        assert_eq!(r["version"], 1);
        sent += 1;
    }
    let after = m.get(&metrics_path).await.ok(StatusCode::OK)["versions"][0].clone();
    assert_eq!(after["loads"], before["loads"], "the version stayed loaded while used: {after}");
    let counted = after["requests"].as_u64().unwrap() - before["requests"].as_u64().unwrap();
    assert_eq!(counted, sent, "every request is counted: {after}");
    let batches = after["batches"].as_u64().unwrap() - before["batches"].as_u64().unwrap();
    assert_eq!(batches, sent, "each lone request is a batch of one: {after}");
    eventually("the idle version to scale to zero", async || {
        let v = m.get(&metrics_path).await.body;
        v["versions"][0]["workers"] == 0 && v["versions"][0]["model_loaded"] == false
    })
    .await;
    let r = predict(m, &base, row).await.ok(StatusCode::OK);
    assert_eq!(r["predictions"], json!([1]));
    srv.stop().await;
}

/// One HTTP/1.1 answer read off a raw connection: status, headers (names lowercased), body.
struct RawAnswer {
    status: u16,
    headers: HashMap<String, String>,
    body: Value,
}

/// A raw client connection, for the framings a library client does not send.
struct RawConn {
    stream: tokio::net::TcpStream,
    read: Vec<u8>,
}

impl RawConn {
    async fn open(srv: &TestServer) -> RawConn {
        let addr = srv.url.trim_start_matches("http://");
        RawConn { stream: tokio::net::TcpStream::connect(addr).await.unwrap(), read: Vec::new() }
    }

    async fn send(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(bytes).await.unwrap();
    }

    async fn answer(&mut self) -> RawAnswer {
        use tokio::io::AsyncReadExt;
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = self.read.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = self.stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the connection closed before an answer");
            self.read.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8(self.read[..head_end].to_vec()).unwrap();
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
        let headers: HashMap<String, String> = lines
            .filter_map(|l| l.split_once(": "))
            .map(|(n, v)| (n.to_ascii_lowercase(), v.to_string()))
            .collect();
        let len: usize = headers.get("content-length").map_or(0, |v| v.parse().unwrap());
        while self.read.len() < head_end + len {
            let n = self.stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the connection closed inside an answer");
            self.read.extend_from_slice(&chunk[..n]);
        }
        let body: Vec<u8> = self.read.drain(..head_end + len).skip(head_end).collect();
        let body = if len == 0 { Value::Null } else { serde_json::from_slice(&body).unwrap() };
        RawAnswer { status, headers, body }
    }
}

shared_server_tests! {
    // The serving hot path reads plain OIP requests itself and hands anything else to the
    // general HTTP stack: on one connection, pipelined, split, chunked and other requests in
    // any order all get their answer, the same one.
    async fn one_connection_answers_every_framing_of_an_inference(srv: &TestServer) {
        let (t, base) = income_model(srv).await;
        let m = &t.maintainer.1;
        m.put(&format!("{base}/production"), &spec(&[(1, 100)])).await.ok(StatusCode::OK);
        let path = format!("/v2/models/{}.income/infer", t.team);
        let body = json!({"inputs": [{"name": "input", "shape": [1, 6], "datatype": "FP32", "data": [39, 13, 2174, 0, 40, 1]}]}).to_string();
        let head = |extra: &str| format!("POST {path} HTTP/1.1\r\nhost: plinth\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\n{extra}", m.key());
        let plain = |id: &str| format!("{}content-length: {}\r\nx-request-id: {id}\r\n\r\n{body}", head(""), body.len());
        let want = m.post(&path, &serde_json::from_str::<Value>(&body).unwrap()).await.ok(StatusCode::OK)["outputs"].clone();
        let same = |a: &RawAnswer, what: &str| {
            assert_eq!(a.status, 200, "{what}: {}", a.body);
            assert_eq!(a.body["outputs"], want, "{what}");
            assert_eq!(a.headers["content-type"], "application/json", "{what}");
            assert!(a.headers.contains_key("date"), "{what}");
        };
        let mut c = RawConn::open(srv).await;
        // Two requests in one write: two answers, in order, each with its own id.
        c.send(format!("{}{}", plain("lane-1"), plain("lane-2")).as_bytes()).await;
        for id in ["lane-1", "lane-2"] {
            let a = c.answer().await;
            same(&a, id);
            assert_eq!(a.headers["x-request-id"], id);
        }
        // A request sent in pieces, each its own segment (the reader's parse of every partial
        // head is covered by h1's unit tests, whatever the server happens to read at once).
        c.stream.set_nodelay(true).unwrap();
        let whole = plain("lane-3");
        for piece in whole.as_bytes().chunks(whole.len() / 5 + 1) {
            c.send(piece).await;
        }
        same(&c.answer().await, "in pieces");
        // A chunked body goes to the general stack, and so does everything after it on this
        // connection: a plain request, and another endpoint.
        let (a, b) = body.split_at(body.len() / 2);
        c.send(format!("{}transfer-encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n", head(""), a.len(), b.len()).as_bytes()).await;
        same(&c.answer().await, "chunked");
        c.send(plain("lane-4").as_bytes()).await;
        let a = c.answer().await;
        same(&a, "plain after chunked");
        assert_eq!(a.headers["x-request-id"], "lane-4");
        c.send(b"GET /v2/health/live HTTP/1.1\r\nhost: plinth\r\n\r\n").await;
        assert_eq!(c.answer().await.status, 200);
        // `Expect: 100-continue` is answered by the general stack, then the body is read.
        let mut c = RawConn::open(srv).await;
        c.send(format!("{}content-length: {}\r\nexpect: 100-continue\r\n\r\n", head(""), body.len()).as_bytes()).await;
        assert_eq!(c.answer().await.status, 100);
        c.send(body.as_bytes()).await;
        same(&c.answer().await, "expect");
        // Refusals on the hot path have the API's shape: a wrong key, no body, a bad body.
        let mut c = RawConn::open(srv).await;
        c.send(format!("POST {path} HTTP/1.1\r\nx-api-key: nope\r\ncontent-length: 2\r\n\r\n{{}}").as_bytes()).await;
        let a = c.answer().await;
        assert_eq!((a.status, a.body["error"]["code"].as_str()), (401, Some("unauthenticated")), "{}", a.body);
        assert!(a.headers["x-request-id"].starts_with("req_"));
        c.send(format!("{}content-length: 9\r\n\r\n{{\"inputs\"", head("")).as_bytes()).await;
        let a = c.answer().await;
        assert_eq!(a.status, 400, "{}", a.body);
        assert!(a.body["error"].as_str().unwrap().contains("JSON"), "{}", a.body);
        c.send(format!("{}\r\n", head("")).as_bytes()).await;
        assert_eq!(c.answer().await.status, 400, "no body");
        // A closed connection mid-request leaves the server serving.
        let mut c = RawConn::open(srv).await;
        c.send(&plain("cut").as_bytes()[..40]).await;
        drop(c);
        same(&{ let mut c = RawConn::open(srv).await; c.send(plain("after").as_bytes()).await; c.answer().await }, "after a cut");
    }

    // An answer given before the request's body was read (a refused upload) reaches the client
    // whole, and the connection then closes cleanly while the client sends the rest: closing
    // with the body unread would reset the connection, and a client could lose the answer.
    async fn an_early_refusal_is_not_lost_to_a_reset(srv: &TestServer) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (t, _) = income_model(srv).await;
        let len = 200_000;
        let mut c = RawConn::open(srv).await;
        c.send(format!("POST /api/v1/teams/{}/models/income/versions HTTP/1.1\r\nhost: plinth\r\nauthorization: Bearer {}\r\ncontent-type: application/octet-stream\r\ncontent-length: {len}\r\n\r\n", t.team, t.maintainer.1.key()).as_bytes()).await;
        c.send(&vec![b'x'; 10_000]).await;
        let a = c.answer().await;
        assert_eq!((a.status, a.body["error"]["code"].as_str()), (415, Some("unsupported_media_type")), "{}", a.body);
        // The answer says the connection carries no more requests, so that a pooling client
        // does not send its next one on it.
        assert_eq!(a.headers.get("connection").map(String::as_str), Some("close"), "{:?}", a.headers);
        // The server is done with the connection: it has ended its writing side.
        let mut rest = Vec::new();
        let end = tokio::time::timeout(std::time::Duration::from_secs(10), c.stream.read_to_end(&mut rest)).await;
        assert!(matches!(end, Ok(Ok(0))), "the server ends its side: {end:?}");
        // Were the socket closed, the first of these would be answered with a reset, and the
        // next would fail.
        for _ in 0..19 {
            c.stream.write_all(&[b'x'; 10_000]).await.expect("the rest of the body is taken");
        }
        c.stream.shutdown().await.unwrap();
    }
}

/// A finished prediction as a hook saw it: outcome, version, rows, caller, target.
type Finished = (String, Option<u32>, usize, String, String);

/// What a hook on the prediction path saw: each call of `admit` and of `finished`.
#[derive(Default)]
struct Seen {
    admitted: std::sync::Mutex<Vec<(String, Option<u32>, usize)>>,
    finished: std::sync::Mutex<Vec<Finished>>,
}

/// A quota of 3 rows per request (as a quota would refuse) that also writes down every outcome
/// (as metering and monitoring would).
struct RowQuota(std::sync::Arc<Seen>);

impl plinth_core::serving::predict::PredictionHook for RowQuota {
    fn admit(
        &self,
        p: &plinth_core::serving::predict::PredictionFacts<'_>,
    ) -> plinth_core::Result<()> {
        self.0.admitted.lock().unwrap().push((p.model.to_string(), p.version, p.rows));
        if p.rows > 3 {
            return Err(plinth_core::Error::new(
                plinth_api::Code::QuotaExceeded,
                format!("{} rows: the quota is 3 per request", p.rows),
            ));
        }
        Ok(())
    }

    fn finished(
        &self,
        p: &plinth_core::serving::predict::PredictionFacts<'_>,
        outcome: Result<(), &plinth_core::Error>,
    ) {
        let outcome = match outcome {
            Ok(()) => "ok".to_string(),
            Err(e) => e.code.as_str().to_string(),
        };
        let caller = p.caller.map_or("anonymous", |c| c.name.as_str()).to_string();
        self.0.finished.lock().unwrap().push((
            outcome,
            p.version,
            p.rows,
            caller,
            format!("{}/{}@{}", p.team, p.model, p.environment),
        ));
    }
}

backend_tests! {
    async fn hooks_on_the_prediction_path_may_refuse_and_see_every_outcome_once(backend: Backend) {
        let seen = std::sync::Arc::new(Seen::default());
        let srv = TestServer::start(ServerOptions {
            prediction_hooks: vec![std::sync::Arc::new(RowQuota(seen.clone()))],
            ..ServerOptions::new(backend)
        })
        .await;
        let (t, base) = income_model(&srv).await;
        let (m, viewer) = (&t.maintainer.1, &t.viewer.1);
        m.put(&format!("{base}/production"), &spec(&[(3, 100)])).await.ok(StatusCode::OK);
        let row = json!([39, 13, 2174, 0, 40, 1]);
        let rows = |n: usize| json!({"rows": vec![row.clone(); n]});
        let infer = |n: usize| {
            let flat: Vec<Value> = (0..n).flat_map(|_| row.as_array().unwrap().clone()).collect();
            json!({"inputs": [{"name": "input", "shape": [n, 6], "datatype": "FP32", "data": flat}]})
        };
        let oip = format!("/v2/models/{}.income/infer", t.team);

        // Within the quota, by REST and by OIP: answered.
        predict(viewer, &base, rows(2)).await.ok(StatusCode::OK);
        viewer.post(&oip, &infer(1)).await.ok(StatusCode::OK);
        // Over it: refused before the model runs, with the hook's code, by both protocols (OIP
        // keeps its own error shape).
        let e = predict(viewer, &base, rows(5)).await.err(StatusCode::TOO_MANY_REQUESTS, "quota_exceeded");
        assert!(e["message"].as_str().unwrap().contains("the quota is 3"), "{e}");
        let r = viewer.post(&oip, &infer(4)).await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(r.body["error"].as_str().unwrap().contains("the quota is 3"), "{}", r.body);
        // Refused before routing (another team's caller): the hook sees the outcome, no version.
        let other = srv.team().await;
        predict(&other.viewer.1, &base, rows(1)).await.err(StatusCode::NOT_FOUND, "not_found");

        let admitted = seen.admitted.lock().unwrap().clone();
        assert_eq!(admitted, vec![
            ("income".to_string(), Some(3), 2),
            ("income".to_string(), Some(3), 1),
            ("income".to_string(), Some(3), 5),
            ("income".to_string(), Some(3), 4),
        ]);
        let finished = seen.finished.lock().unwrap().clone();
        let target = format!("{}/income@production", t.team);
        let viewer_name = t.viewer.0.clone();
        let outcomes: Vec<(&str, Option<u32>, usize)> = finished.iter().map(|f| (f.0.as_str(), f.1, f.2)).collect();
        assert_eq!(outcomes, vec![("ok", Some(3), 2), ("ok", Some(3), 1), ("quota_exceeded", Some(3), 5), ("quota_exceeded", Some(3), 4), ("not_found", None, 0)]);
        assert!(finished[..4].iter().all(|f| f.3 == viewer_name && f.4 == target), "{finished:?}");
        assert_eq!(finished[4].3, other.viewer.0);
        // The deployment's own figures count the refusals too, by code.
        let metrics = m.get(&format!("{base}/production/metrics")).await.ok(StatusCode::OK);
        assert_eq!(metrics["requests"], 5, "{metrics}");
        assert_eq!(metrics["errors"]["quota_exceeded"], 2, "{metrics}");
        assert_eq!(metrics["errors"]["not_found"], 1, "{metrics}");
    }
}
