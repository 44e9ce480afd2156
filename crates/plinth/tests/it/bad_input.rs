//! Bad input gets a clear 4xx that names the problem, and changes nothing: no version, no
//! artifact, no staged file, no audit entry.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::{
    Api, ServerOptions, TestServer, backend_tests, fixtures, shared_server_tests,
};

/// What a refused request must leave as it was.
async fn state(srv: &TestServer, api: &Api, team: &str, model: &str) -> Value {
    json!({
        "versions": api.all_pages(&format!("/teams/{team}/models/{model}/versions?include_archived=true")).await,
        "model": api.get(&format!("/teams/{team}/models/{model}")).await.body,
        "audit": srv.admin().all_pages(&format!("/audit?team={team}")).await.len(),
        "artifacts": srv.artifact_files().len(),
    })
}

shared_server_tests! {
    async fn invalid_model_files_are_refused_and_nothing_is_stored(srv: &TestServer) {
        let t = srv.team().await;
        let dev = &t.developer.1;
        dev.post(&format!("/teams/{}/models", t.team), &json!({"name": "target", "task": "binary_classification"})).await.ok(StatusCode::CREATED);
        let before = state(srv, dev, &t.team, "target").await;
        let cases: &[(&str, &str)] = &[
            ("bad/truncated.onnx", "onnx"),
            ("bad/garbage.onnx", "not a model of a supported format"),
            ("bad/truncated_lightgbm.txt", "end of trees"),
            ("bad/bad_child_lightgbm.txt", "out of range"),
            ("bad/missing_field_xgboost.json", "split_conditions"),
            ("bad/bad_index_xgboost.json", "out of range"),
            ("bad/not_a_model.json", "learner"),
            ("bad/tree_feature_past_width.onnx", "reads column 9, but its input 'input' has 6 columns"),
            ("bad/tree_child_nowhere.onnx", "true node 100000 does not exist"),
            ("bad/empty.bin", "empty"),
            ("bad/text.txt", "not a model of a supported format"),
        ];
        for (fixture, needle) in cases {
            let e = dev.upload_fixture(&t.team, "target", fixture).await.err(StatusCode::UNPROCESSABLE_ENTITY, "invalid_model");
            assert_eq!(e["field"], "artifact", "{fixture}");
            let msg = e["message"].as_str().unwrap();
            assert!(msg.contains(needle), "{fixture}: '{msg}' does not mention '{needle}'");
        }
        // A valid file of the wrong kind for the model, or not the declared format.
        let e = dev.upload_fixture(&t.team, "target", "lightgbm_regression.txt").await.err(StatusCode::UNPROCESSABLE_ENTITY, "invalid_model");
        assert!(e["message"].as_str().unwrap().contains("regression"), "{e}");
        let bytes = std::fs::read(fixtures().join("lightgbm_binary.txt")).unwrap();
        let e = dev.upload(&t.team, "target", "m.txt", bytes.clone(), Some(json!({"format": "onnx"}))).await.err(StatusCode::UNPROCESSABLE_ENTITY, "invalid_model");
        assert_eq!(e["field"], "metadata.format");
        assert_eq!(state(srv, dev, &t.team, "target").await, before);
    }

    async fn malformed_requests_name_the_field(srv: &TestServer) {
        let t = srv.team().await;
        let dev = &t.developer.1;
        let models = format!("/teams/{}/models", t.team);
        dev.post(&models, &json!({"name": "target", "task": "regression"})).await.ok(StatusCode::CREATED);
        let before = state(srv, dev, &t.team, "target").await;
        let raw = |body: &'static str| dev.request(Method::POST, &models).header("content-type", "application/json").body(body);
        dev.send(raw("{\"name\": \"x\", ")).await.err(StatusCode::BAD_REQUEST, "malformed_json");
        dev.send(raw("[1, 2]")).await.err(StatusCode::BAD_REQUEST, "malformed_json");
        dev.send(dev.request(Method::POST, &models).body("{}")).await.err(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
        let e = dev.post(&models, &json!({"name": "m", "task": "regression", "colour": "red"})).await.err(StatusCode::BAD_REQUEST, "unknown_field");
        assert_eq!(e["field"], "colour");
        let e = dev.post(&models, &json!({"name": "m"})).await.err(StatusCode::BAD_REQUEST, "missing_field");
        assert_eq!(e["field"], "task");
        let e = dev.post(&models, &json!({"name": "m", "task": "ranking"})).await.err(StatusCode::BAD_REQUEST, "invalid_field");
        assert_eq!(e["field"], "task");
        let e = dev.post(&models, &json!({"name": 7, "task": "regression"})).await.err(StatusCode::BAD_REQUEST, "invalid_field");
        assert_eq!(e["field"], "name");
        for bad in ["Has Caps", "", "-leading", "a/b", "x".repeat(64).as_str(), "naïve"] {
            let e = dev.post(&models, &json!({"name": bad, "task": "regression"})).await.err(StatusCode::BAD_REQUEST, "invalid_name");
            assert_eq!(e["field"], "name", "{bad}");
        }
        let e = dev.post(&models, &json!({"name": "tagged", "task": "regression", "tags": {"bad key": "v"}})).await.err(StatusCode::BAD_REQUEST, "invalid_field");
        assert!(e["field"].as_str().unwrap().starts_with("tags."));
        let e = srv.admin().post("/teams", &json!({"name": "Bad Team"})).await.err(StatusCode::BAD_REQUEST, "invalid_name");
        assert_eq!(e["field"], "name");
        let e = dev.patch(&format!("{models}/target/versions/x"), &json!({})).await.err(StatusCode::BAD_REQUEST, "invalid_field");
        assert_eq!(e["field"], "version");
        // Upload framing: wrong content type, unknown part, no artifact, metadata after the
        // artifact, metadata that is not valid JSON or has unknown fields.
        let upload = format!("{models}/target/versions");
        let lgb = std::fs::read(fixtures().join("lightgbm_regression.txt")).unwrap();
        dev.send(dev.request(Method::POST, &upload).header("content-type", "application/octet-stream").body(lgb.clone())).await.err(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
        let part = |name: &str, bytes: Vec<u8>| reqwest::multipart::Part::bytes(bytes).file_name(name.to_string());
        let form = reqwest::multipart::Form::new().part("model", part("m.txt", lgb.clone()));
        let e = dev.send(dev.request(Method::POST, &upload).multipart(form)).await.err(StatusCode::BAD_REQUEST, "unknown_field");
        assert_eq!(e["field"], "model");
        let form = reqwest::multipart::Form::new().text("metadata", "{}");
        let e = dev.send(dev.request(Method::POST, &upload).multipart(form)).await.err(StatusCode::BAD_REQUEST, "missing_field");
        assert_eq!(e["field"], "artifact");
        let form = reqwest::multipart::Form::new().part("artifact", part("m.txt", lgb.clone())).text("metadata", "{}");
        let e = dev.send(dev.request(Method::POST, &upload).multipart(form)).await.err(StatusCode::BAD_REQUEST, "invalid_field");
        assert_eq!(e["field"], "metadata");
        let e = dev.upload(&t.team, "target", "m.txt", lgb.clone(), Some(json!({"card": {"risk_tier": "extreme"}}))).await.err(StatusCode::BAD_REQUEST, "invalid_field");
        assert_eq!(e["field"], "metadata.card.risk_tier");
        let e = dev.upload(&t.team, "target", "m.txt", lgb.clone(), Some(json!({"lineage": {"sauce": "x"}}))).await.err(StatusCode::BAD_REQUEST, "unknown_field");
        assert_eq!(e["field"], "metadata.lineage.sauce");
        let e = dev.upload(&t.team, "target", "m.txt", lgb.clone(), Some(json!({"lineage": {"source": "training_job"}}))).await.err(StatusCode::BAD_REQUEST, "missing_field");
        assert_eq!(e["field"], "lineage.training_job");
        let form = reqwest::multipart::Form::new().text("metadata", "{not json").part("artifact", part("m.txt", lgb.clone()));
        dev.send(dev.request(Method::POST, &upload).multipart(form)).await.err(StatusCode::BAD_REQUEST, "malformed_json");
        let e = dev.upload(&t.team, "target", "m.txt", lgb, Some(json!({"lineage": {"metrics": {"auc": "high"}}}))).await.err(StatusCode::BAD_REQUEST, "invalid_field");
        assert_eq!(e["field"], "metadata.lineage.metrics.auc");
        assert_eq!(state(srv, dev, &t.team, "target").await, before);
    }
}

backend_tests! {
    async fn oversized_uploads_are_refused_without_a_trace(backend: Backend) {
        let srv = TestServer::start(ServerOptions { max_upload_bytes: 4096, ..ServerOptions::new(backend) }).await;
        let t = srv.team().await;
        let dev = &t.developer.1;
        dev.post(&format!("/teams/{}/models", t.team), &json!({"name": "big", "task": "binary_classification"})).await.ok(StatusCode::CREATED);
        let before = state(&srv, dev, &t.team, "big").await;
        let e = dev.upload_fixture(&t.team, "big", "lightgbm_binary.txt").await.err(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
        assert_eq!(e["field"], "artifact");
        assert!(e["message"].as_str().unwrap().contains("4096"));
        assert_eq!(state(&srv, dev, &t.team, "big").await, before);
        assert!(srv.staging_files().is_empty(), "staged file left: {:?}", srv.staging_files());
        // A JSON body over 1 MiB is refused too.
        let huge = json!({"name": "x", "task": "regression", "description": "y".repeat(2 * 1024 * 1024)});
        dev.post(&format!("/teams/{}/models", t.team), &huge).await.err(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
        srv.stop().await;
    }
}

shared_server_tests! {
    async fn refusals_keep_the_error_shape_and_do_not_echo_long_input(srv: &TestServer) {
        let t = srv.team().await;
        let dev = &t.developer.1;
        // A path parameter that does not parse is answered in the one error shape.
        let e = dev.get(&format!("/teams/{}/datasets/x/versions/4294967296", t.team)).await.err(StatusCode::BAD_REQUEST, "invalid_field");
        assert_eq!(e["field"], "path", "{e}");
        // A JSON array is not an object, even where serde would read a struct from it.
        let keys = dev.all_pages("/keys").await.len();
        let array = dev.request(Method::POST, "/keys").header("content-type", "application/json").body("[null, null]");
        let e = dev.send(array).await.err(StatusCode::BAD_REQUEST, "malformed_json");
        assert!(e["message"].as_str().unwrap().contains("must be a JSON object"), "{e}");
        assert_eq!(dev.all_pages("/keys").await.len(), keys, "no key was created");
        // A 10,000-character name is quoted, not echoed whole.
        let long = "a".repeat(10_000);
        for r in [
            dev.post(&format!("/teams/{}/models", t.team), &json!({"name": long, "task": "regression"})).await,
            dev.get(&format!("/teams/{}/models/{long}", t.team)).await,
            dev.get(&format!("/teams/{long}")).await,
        ] {
            assert!(r.status.is_client_error(), "{}", r.body);
            let message = r.body["error"]["message"].as_str().unwrap();
            assert!(message.len() < 400, "{} bytes: {message}", message.len());
        }
    }
}
