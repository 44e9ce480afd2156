//! Interoperability: the real `tritonclient` (Python, HTTP) talks to Plinth unchanged.

use std::process::Command;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{fixtures, shared_server_tests};

shared_server_tests! {
    async fn tritonclient_round_trip(srv: &TestServer) {
        let t = srv.team().await;
        let m = &t.maintainer.1;
        m.post(&format!("/teams/{}/models", t.team), &json!({"name": "adult", "task": "binary_classification"})).await.ok(StatusCode::CREATED);
        m.upload_fixture(&t.team, "adult", "xgboost_binary.onnx").await.ok(StatusCode::CREATED);
        m.put(&format!("/deployments/{}/adult/production", t.team), &json!({"versions": [{"version": 1, "weight": 100}]})).await.ok(StatusCode::OK);
        let exp: Value = serde_json::from_str(&std::fs::read_to_string(fixtures().join("xgboost_binary.expected.json")).unwrap()).unwrap();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/triton_roundtrip.py");
        let key = m.key().to_string();
        let rows = exp["rows"].to_string();
        let model = format!("{}.adult", t.team);
        let host = srv.url.trim_start_matches("http://").to_string();
        let python = std::env::var("PLINTH_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
        let out = tokio::task::spawn_blocking(move || Command::new(&python).args([script, &host, &model, &key, &rows]).output())
            .await
            .unwrap()
            .expect("run python3 (the tritonclient test needs `pip install tritonclient[http]`)");
        assert!(out.status.success(), "tritonclient failed: {}", String::from_utf8_lossy(&out.stderr));
        let got: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(got["server"]["extensions"].as_array().unwrap().contains(&json!("binary_tensor_data")));
        assert_eq!(got["metadata"]["inputs"][0]["name"], "input");
        assert_eq!(got["config"]["max_batch_size"], 0);
        assert_eq!(got["binary"]["id"], "rt-1");
        for case in ["binary", "mixed"] {
            assert_eq!(got[case]["label"], exp["labels"], "{case}");
            let probs = got[case]["probabilities"].as_array().unwrap();
            for (g, w) in probs.iter().zip(exp["predictions"].as_array().unwrap()) {
                for (a, b) in g.as_array().unwrap().iter().zip(w.as_array().unwrap()) {
                    assert!((a.as_f64().unwrap() - b.as_f64().unwrap()).abs() <= 1e-5, "{case}: {a} vs {b}");
                }
            }
        }
        assert_eq!(got["stats"]["model_stats"][0]["inference_stats"]["success"]["count"], 2);
        assert!(got["missing_model_error"].as_str().unwrap().contains("not found"), "{}", got["missing_model_error"]);
    }
}
