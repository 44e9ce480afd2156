//! The registry flow with real model files from scikit-learn (via skl2onnx), LightGBM and
//! XGBoost: register, inspect, search, download, edit cards, archive.

use reqwest::StatusCode;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::harness::{fixtures, shared_server_tests, unique};

/// (fixture, task, format)
const MODELS: &[(&str, &str, &str)] = &[
    ("sklearn_logreg_binary.onnx", "binary_classification", "onnx"),
    ("sklearn_logreg_binary_nozipmap.onnx", "binary_classification", "onnx"),
    ("sklearn_rf_binary.onnx", "binary_classification", "onnx"),
    ("sklearn_gb_binary.onnx", "binary_classification", "onnx"),
    ("sklearn_pipeline_binary.onnx", "binary_classification", "onnx"),
    ("sklearn_rf_multiclass.onnx", "multiclass_classification", "onnx"),
    ("sklearn_gbr_regression.onnx", "regression", "onnx"),
    ("sklearn_linreg_regression.onnx", "regression", "onnx"),
    ("lightgbm_binary.onnx", "binary_classification", "onnx"),
    ("xgboost_binary.onnx", "binary_classification", "onnx"),
    ("lightgbm_binary.txt", "binary_classification", "lightgbm"),
    ("lightgbm_multiclass.txt", "multiclass_classification", "lightgbm"),
    ("lightgbm_regression.txt", "regression", "lightgbm"),
    ("xgboost_binary.json", "binary_classification", "xgboost"),
    ("xgboost_multiclass.json", "multiclass_classification", "xgboost"),
    ("xgboost_regression.json", "regression", "xgboost"),
];

fn expected_features(fixture: &str) -> usize {
    let name = fixture.rsplit_once('.').unwrap().0;
    let text = std::fs::read_to_string(fixtures().join(format!("{name}.expected.json")))
        .expect("expected file");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["features"].as_array().expect("features").len()
}

shared_server_tests! {
    async fn every_real_model_registers_with_its_signature(srv: &TestServer) {
        let t = srv.team().await;
        let dev = &t.developer.1;
        for (fixture, task, format) in MODELS {
            let name = fixture.replace(['_', '.'], "-");
            dev.post(&format!("/teams/{}/models", t.team), &json!({"name": name, "task": task, "tags": {"lib": format}})).await.ok(StatusCode::CREATED);
            let bytes = std::fs::read(fixtures().join(fixture)).unwrap();
            let v = dev.upload_fixture(&t.team, &name, fixture).await.ok(StatusCode::CREATED);
            assert_eq!(v["version"], 1, "{fixture}");
            assert_eq!(v["artifact"]["format"], *format, "{fixture}");
            assert_eq!(v["artifact"]["size_bytes"], bytes.len(), "{fixture}");
            assert_eq!(v["artifact"]["sha256"], hex::encode(Sha256::digest(&bytes)), "{fixture}");
            assert_eq!(v["artifact"]["filename"], *fixture);
            assert_eq!(v["signature_source"], "artifact");
            let inputs = v["signature"]["inputs"].as_array().unwrap();
            assert!(!inputs.is_empty(), "{fixture}: {v}");
            let width = inputs[0]["shape"].as_array().unwrap().last().and_then(|d| d.as_i64()).unwrap();
            assert_eq!(width as usize, expected_features(fixture), "{fixture}: input width");
            if *format != "onnx" {
                assert_eq!(v["signature"]["feature_names"].as_array().unwrap().len(), expected_features(fixture), "{fixture}");
            } else {
                assert!(!v["artifact"]["details"]["operators"].as_array().unwrap().is_empty());
            }
            // Download is byte for byte the upload.
            let r = dev.send(dev.request(reqwest::Method::GET, &format!("/teams/{}/models/{name}/versions/1/artifact", t.team))).await;
            assert_eq!(r.status, StatusCode::OK);
            assert_eq!(r.headers["x-plinth-sha256"].to_str().unwrap(), hex::encode(Sha256::digest(&bytes)));
            let raw = reqwest::Client::new()
                .get(format!("{}/api/v1/teams/{}/models/{name}/versions/1/artifact", srv.url, t.team))
                .bearer_auth(&srv.admin_key)
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            assert_eq!(raw.as_ref(), bytes.as_slice(), "{fixture}: download differs");
        }
        // A second version is numbered 2, and versions list newest first.
        let v2 = dev.upload_fixture(&t.team, "lightgbm-binary-txt", "lightgbm_binary.txt").await.ok(StatusCode::CREATED);
        assert_eq!(v2["version"], 2);
        let versions = dev.all_pages(&format!("/teams/{}/models/lightgbm-binary-txt/versions", t.team)).await;
        assert_eq!(versions.iter().map(|v| v["version"].as_u64().unwrap()).collect::<Vec<_>>(), vec![2, 1]);
        let m = dev.get(&format!("/teams/{}/models/lightgbm-binary-txt", t.team)).await.ok(StatusCode::OK);
        assert_eq!(m["latest_version"], 2);

        // Search: by format, task, name and tag, scoped to the team.
        let names = |items: Vec<serde_json::Value>| {
            let mut n: Vec<String> = items.iter().map(|m| m["name"].as_str().unwrap().to_string()).collect();
            n.sort();
            n
        };
        let xgb = names(dev.all_pages(&format!("/models?team={}&format=xgboost", t.team)).await);
        assert_eq!(xgb, vec!["xgboost-binary-json", "xgboost-multiclass-json", "xgboost-regression-json"]);
        let regression = names(dev.all_pages(&format!("/teams/{}/models?task=regression", t.team)).await);
        assert_eq!(regression, vec!["lightgbm-regression-txt", "sklearn-gbr-regression-onnx", "sklearn-linreg-regression-onnx", "xgboost-regression-json"]);
        let rf = names(dev.all_pages(&format!("/models?team={}&q=RF", t.team)).await);
        assert_eq!(rf, vec!["sklearn-rf-binary-onnx", "sklearn-rf-multiclass-onnx"]);
        let lgb = names(dev.all_pages(&format!("/models?team={}&tag=lib=lightgbm", t.team)).await);
        assert_eq!(lgb, vec!["lightgbm-binary-txt", "lightgbm-multiclass-txt", "lightgbm-regression-txt"]);
        assert_eq!(dev.all_pages(&format!("/models?team={}&tag=lib", t.team)).await.len(), MODELS.len());
        // The viewer reads everything but registers nothing.
        let viewer = &t.viewer.1;
        assert_eq!(viewer.all_pages(&format!("/teams/{}/models", t.team)).await.len(), MODELS.len());
        viewer.post(&format!("/teams/{}/models", t.team), &json!({"name": "nope", "task": "regression"})).await.err(StatusCode::FORBIDDEN, "forbidden");
        viewer.upload_fixture(&t.team, "lightgbm-binary-txt", "lightgbm_binary.txt").await.err(StatusCode::FORBIDDEN, "forbidden");
    }

    async fn model_metadata_updates_and_archiving(srv: &TestServer) {
        let t = srv.team().await;
        let (dev, maint) = (&t.developer.1, &t.maintainer.1);
        let base = format!("/teams/{}/models", t.team);
        let m = dev.post(&base, &json!({"name": "churn", "task": "binary_classification", "description": "v0", "owners": ["ana", "risk-team"]})).await.ok(StatusCode::CREATED);
        assert_eq!(m["owners"], json!(["ana", "risk-team"]));
        assert_eq!(m["created_by"], t.developer.0);
        let m = dev.patch(&format!("{base}/churn"), &json!({"description": "predicts churn", "tags": {"domain": "retention"}})).await.ok(StatusCode::OK);
        assert_eq!(m["description"], "predicts churn");
        assert_eq!(m["tags"], json!({"domain": "retention"}));
        assert_eq!(m["owners"], json!(["ana", "risk-team"]));
        dev.post(&format!("{base}/churn"), &json!({})).await.err(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
        dev.post(&format!("{base}/churn/archive"), &json!({})).await.err(StatusCode::FORBIDDEN, "forbidden");
        let m = maint.post(&format!("{base}/churn/archive"), &json!({})).await.ok(StatusCode::OK);
        assert!(m["archived_at"].is_string());
        assert!(dev.all_pages(&base).await.is_empty(), "archived models are hidden");
        assert_eq!(dev.all_pages(&format!("{base}?include_archived=true")).await.len(), 1);
        dev.upload_fixture(&t.team, "churn", "lightgbm_binary.txt").await.err(StatusCode::CONFLICT, "conflict");
        dev.post(&base, &json!({"name": "churn", "task": "regression"})).await.err(StatusCode::CONFLICT, "already_exists");
    }

    async fn model_card_is_editable_until_approved_for_production(srv: &TestServer) {
        let t = srv.team().await;
        let dev = &t.developer.1;
        dev.post(&format!("/teams/{}/models", t.team), &json!({"name": "income", "task": "binary_classification"})).await.ok(StatusCode::CREATED);
        let card = json!({"intended_use": "pre-screening", "limitations": "US 1994 census", "risk_tier": "high", "owners": ["ana"]});
        let lineage = json!({"source": "external", "dataset_version": "adult@1", "code_ref": "git:abc123", "parameters": {"trees": "10"}, "metrics": {"auc": 0.91}});
        let bytes = std::fs::read(fixtures().join("xgboost_binary.json")).unwrap();
        let v = dev.upload(&t.team, "income", "m.json", bytes, Some(json!({"description": "first", "card": card, "lineage": lineage}))).await.ok(StatusCode::CREATED);
        assert_eq!(v["card"], card);
        assert_eq!(v["lineage"]["metrics"]["auc"], 0.91);
        assert_eq!(v["lineage"]["dataset_version"], "adult@1");
        assert_eq!(v["approval"], "none");
        let path = format!("/teams/{}/models/income/versions/1", t.team);
        let v = dev.patch(&path, &json!({"card": {"intended_use": "pre-screening", "ethical_considerations": "sex and race are sensitive", "risk_tier": "medium"}})).await.ok(StatusCode::OK);
        assert_eq!(v["card"]["risk_tier"], "medium");
        // Governance approves the version for production: the card freezes.
        let admin = srv.admin_principal().await;
        let approved = srv.core.mark_approved_for_production(&admin, &t.team, "income", 1).await.unwrap();
        assert_eq!(approved.approval, plinth_api::registry::ApprovalState::ApprovedForProduction);
        let e = dev.patch(&path, &json!({"card": {"risk_tier": "low"}})).await.err(StatusCode::CONFLICT, "immutable");
        assert_eq!(e["field"], "card");
        let v = dev.get(&path).await.ok(StatusCode::OK);
        assert_eq!(v["card"]["risk_tier"], "medium");
        assert_eq!(v["approval"], "approved_for_production");
        dev.patch(&path, &json!({"description": "still editable"})).await.ok(StatusCode::OK);
    }

    async fn signatures_can_be_given_and_overridden_at_registration(srv: &TestServer) {
        let t = srv.team().await;
        let dev = &t.developer.1;
        dev.post(&format!("/teams/{}/models", t.team), &json!({"name": "adult", "task": "binary_classification"})).await.ok(StatusCode::CREATED);
        let bytes = std::fs::read(fixtures().join("sklearn_rf_binary.onnx")).unwrap();
        let art = dev.upload(&t.team, "adult", "rf.onnx", bytes.clone(), None).await.ok(StatusCode::CREATED);
        let mut sig = art["signature"].clone();
        let width = sig["inputs"][0]["shape"][1].as_u64().unwrap() as usize;
        let names: Vec<String> = (0..width).map(|i| format!("f{i}")).collect();
        sig["feature_names"] = json!(names);
        let v = dev.upload(&t.team, "adult", "rf.onnx", bytes.clone(), Some(json!({"signature": sig}))).await.ok(StatusCode::CREATED);
        assert_eq!(v["signature_source"], "overridden");
        assert_eq!(v["signature"]["feature_names"], json!(names));
        let mut wrong = sig.clone();
        wrong["feature_names"] = json!(["a", "b"]);
        let e = dev.upload(&t.team, "adult", "rf.onnx", bytes.clone(), Some(json!({"signature": wrong}))).await.err(StatusCode::BAD_REQUEST, "invalid_field");
        assert_eq!(e["field"], "metadata.signature.feature_names");
        let mut renamed = sig.clone();
        renamed["inputs"][0]["name"] = json!("x");
        let e = dev.upload(&t.team, "adult", "rf.onnx", bytes, Some(json!({"signature": renamed}))).await.err(StatusCode::BAD_REQUEST, "invalid_field");
        assert_eq!(e["field"], "metadata.signature.inputs");
        let versions = dev.all_pages(&format!("/teams/{}/models/adult/versions", t.team)).await;
        assert_eq!(versions.len(), 2, "refused uploads store nothing");
    }

    async fn lists_paginate_with_cursors(srv: &TestServer) {
        let t = srv.team().await;
        let dev = &t.developer.1;
        for i in 0..7 {
            dev.post(&format!("/teams/{}/models", t.team), &json!({"name": format!("m{i}"), "task": "regression"})).await.ok(StatusCode::CREATED);
        }
        let first = dev.get(&format!("/teams/{}/models?limit=3", t.team)).await.ok(StatusCode::OK);
        assert_eq!(first["items"].as_array().unwrap().len(), 3);
        let all = dev.all_pages(&format!("/teams/{}/models?limit=3", t.team)).await;
        let names: Vec<&str> = all.iter().map(|m| m["name"].as_str().unwrap()).collect();
        assert_eq!(names, vec!["m0", "m1", "m2", "m3", "m4", "m5", "m6"]);
        let e = dev.get(&format!("/teams/{}/models?cursor=garbage!", t.team)).await.err(StatusCode::BAD_REQUEST, "invalid_field");
        assert_eq!(e["field"], "cursor");
        let e = dev.get(&format!("/teams/{}/models?limit=0", t.team)).await.err(StatusCode::BAD_REQUEST, "invalid_field");
        assert_eq!(e["field"], "limit");
        let e = dev.get(&format!("/teams/{}/models?limt=3", t.team)).await.err(StatusCode::BAD_REQUEST, "unknown_field");
        assert_eq!(e["field"], "limt");
        // The audit log pages too, newest first, without overlap.
        let audit = t.maintainer.1.all_pages(&format!("/audit?team={}&limit=2&action=model.create", t.team)).await;
        assert_eq!(audit.len(), 7);
        let _ = unique("x");
    }
}
