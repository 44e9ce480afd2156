//! The real `mlflow` client, 2.x and 3.x (each in its own virtualenv from PyPI, made by
//! `scripts/test`), against Plinth's MLflow API: `mlflow_client.py` tracks a run, logs and
//! registers a LightGBM model it trains on the Adult data, sets an alias and loads the model back
//! by alias. The registered version is a Plinth version (validated, with the run as its lineage)
//! that Plinth serves with the same answers; another team sees none of it; errors come in
//! MLflow's shape.

use std::process::Command;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::governance::eval_dir;
use crate::harness::{TestServer, shared_server_tests, unique};

/// Runs the client script with the Python of `venv_var` (a virtualenv with that mlflow).
async fn run_client(
    srv: &TestServer,
    venv_var: &str,
    key: &str,
    model: &str,
    experiment: &str,
) -> Value {
    let python = std::env::var(venv_var).unwrap_or_else(|_| {
        panic!("{venv_var}: run the suite with scripts/test, which makes a virtualenv with mlflow")
    });
    let tmp = tempfile::tempdir().unwrap();
    let csv = eval_dir().join("adult_test.csv.gz");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/mlflow_client.py");
    let (url, key, model, experiment) =
        (srv.url.clone(), key.to_string(), model.to_string(), experiment.to_string());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(&python)
            .args([script, csv.to_str().unwrap(), &model, &experiment])
            .env("MLFLOW_TRACKING_URI", &url)
            .env("MLFLOW_TRACKING_TOKEN", &key)
            // No telemetry, no version check: the tests reach nothing outside loopback.
            .env("MLFLOW_DISABLE_TELEMETRY", "true")
            .env("DO_NOT_TRACK", "true")
            .current_dir(tmp.path())
            .output()
    })
    .await
    .unwrap()
    .expect("run the mlflow client's Python");
    assert!(
        out.status.success(),
        "the mlflow client failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

async fn client_round_trip(srv: &TestServer, venv_var: &str, major: &str) {
    let t = srv.team().await;
    let (team, dev) = (t.team.clone(), t.developer.1.clone());
    let model = unique("income");
    let got = run_client(srv, venv_var, dev.key(), &model, "adult-income").await;
    assert!(got["mlflow"].as_str().unwrap().starts_with(major), "{got}");
    // Loaded back by alias, the model predicts what LightGBM did in the client.
    let (lgb, loaded) = (got["lightgbm"].as_array().unwrap(), got["loaded"].as_array().unwrap());
    assert_eq!(lgb.len(), 20);
    for (a, b) in lgb.iter().zip(loaded) {
        assert!((a.as_f64().unwrap() - b.as_f64().unwrap()).abs() < 1e-12, "{a} vs {b}");
    }
    assert_eq!(
        (got["version"].as_u64(), got["alias_version"].as_u64()),
        (Some(1), Some(1)),
        "{got}"
    );
    assert_eq!(got["params"]["num_leaves"], "15");
    assert_eq!(got["history"].as_array().unwrap().len(), 3, "{got}");
    if major == "3" {
        assert!(
            got["model_uri"].as_str().unwrap().starts_with("models:/m-"),
            "the 3.x logged-model flow: {got}"
        );
    } else {
        assert!(
            got["model_uri"].as_str().unwrap().starts_with("runs:/"),
            "the 2.x run-artifact flow: {got}"
        );
    }

    // It is a Plinth model of the team, its version validated like an upload, the run its lineage.
    let m = dev.get(&format!("/teams/{team}/models/{model}")).await.ok(StatusCode::OK);
    assert_eq!(m["task"], "binary_classification", "the task the artifact says: {m}");
    let v = dev.get(&format!("/teams/{team}/models/{model}/versions/1")).await.ok(StatusCode::OK);
    assert_eq!(v["artifact"]["format"], "lightgbm");
    assert_eq!(
        v["signature"]["feature_names"],
        json!([
            "age",
            "education_num",
            "capital_gain",
            "capital_loss",
            "hours_per_week",
            "sex_male"
        ])
    );
    assert_eq!(v["lineage"]["parameters"]["learning_rate"], "0.1");
    assert!(v["lineage"]["metrics"]["train_accuracy"].as_f64().unwrap() > 0.8, "{v}");
    assert_eq!(v["lineage"]["tags"]["mlflow.run_id"], got["run_id"]);
    // Served by Plinth, it answers as LightGBM did (Plinth's trees are f32).
    t.maintainer
        .1
        .put(
            &format!("/deployments/{team}/{model}/staging"),
            &json!({"versions": [{"version": 1, "weight": 100}]}),
        )
        .await
        .ok(StatusCode::OK);
    let served = dev
        .post(
            &format!("/deployments/{team}/{model}/staging/predict"),
            &json!({"rows": got["rows"]}),
        )
        .await
        .ok(StatusCode::OK);
    for (p, want) in served["probabilities"].as_array().unwrap().iter().zip(lgb) {
        assert!((p[1].as_f64().unwrap() - want.as_f64().unwrap()).abs() < 1e-6, "{p} vs {want}");
    }
    // Experiments and runs are audited team objects.
    let audit = t.maintainer.1.all_pages(&format!("/audit?team={team}")).await;
    for action in [
        "experiment.create",
        "run.create",
        "registered_model.create",
        "model.create",
        "model_version.create",
        "model.alias.set",
    ] {
        assert!(audit.iter().any(|e| e["action"] == action), "{action} is audited");
    }

    // Another team sees none of it, whichever way it asks.
    let other = srv.team().await;
    let http = reqwest::Client::new();
    let get = |path: String, key: String| {
        let http = http.clone();
        async move {
            let r = http.get(format!("{}{path}", srv.url)).bearer_auth(key).send().await.unwrap();
            (r.status(), r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let okey = other.developer.1.key().to_string();
    let run_id = got["run_id"].as_str().unwrap();
    let experiment = got["experiment_id"].as_str().unwrap();
    for path in [
        "/api/2.0/mlflow/experiments/get-by-name?experiment_name=adult-income".to_string(),
        format!("/api/2.0/mlflow/experiments/get?experiment_id={experiment}"),
        format!("/api/2.0/mlflow/runs/get?run_id={run_id}"),
        format!("/api/2.0/mlflow/registered-models/get?name={model}"),
        format!("/api/2.0/mlflow/registered-models/alias?name={model}&alias=champion"),
        format!(
            "/api/2.0/mlflow-artifacts/artifacts/{experiment}/{run_id}/artifacts/model/MLmodel"
        ),
        format!("/teams/{team}/api/2.0/mlflow/runs/get?run_id={run_id}"),
    ] {
        let (status, body) = get(path.clone(), okey.clone()).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        assert_eq!(body["error_code"], "RESOURCE_DOES_NOT_EXIST", "{path}: {body}");
    }
    let (_, found) = get("/api/2.0/mlflow/registered-models/search".into(), okey.clone()).await;
    assert!(!found.to_string().contains(&model), "{found}");
    // The owner reads its run's artifacts through the proxy.
    let (status, body) = get(
        format!("/api/2.0/mlflow-artifacts/artifacts?path={experiment}/{run_id}/artifacts"),
        dev.key().to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    if major == "2" {
        assert!(
            body["files"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["path"] == "model" && f["is_dir"] == true),
            "{body}"
        );
    }
}

shared_server_tests! {
    async fn the_mlflow_2_client_logs_registers_and_loads_back(srv: &TestServer) {
        client_round_trip(srv, "PLINTH_TEST_MLFLOW2", "2").await;
    }

    async fn the_mlflow_3_client_logs_registers_and_loads_back(srv: &TestServer) {
        client_round_trip(srv, "PLINTH_TEST_MLFLOW3", "3").await;
    }

    async fn mlflow_errors_come_in_mlflow_shape_and_change_nothing(srv: &TestServer) {
        let t = srv.team().await;
        let dev = &t.developer.1;
        let post = |path: &str, body: Value| {
            let http = reqwest::Client::new();
            let url = format!("{}/api/2.0/mlflow/{path}", srv.url);
            let key = dev.key().to_string();
            async move {
                let r = http.post(url).bearer_auth(key).json(&body).send().await.unwrap();
                (r.status(), r.json::<Value>().await.unwrap())
            }
        };
        let (s, e) = post("experiments/create", json!({"name": ""})).await;
        assert_eq!((s, e["error_code"].as_str()), (StatusCode::BAD_REQUEST, Some("INVALID_PARAMETER_VALUE")), "{e}");
        let (s, e) = post("experiments/create", json!({"name": "dup"})).await;
        assert_eq!(s, StatusCode::OK, "{e}");
        let (s, e) = post("experiments/create", json!({"name": "dup"})).await;
        assert_eq!((s, e["error_code"].as_str()), (StatusCode::BAD_REQUEST, Some("RESOURCE_ALREADY_EXISTS")), "{e}");
        let (s, e) = post("runs/create", json!({"experiment_id": "404404"})).await;
        assert_eq!((s, e["error_code"].as_str()), (StatusCode::NOT_FOUND, Some("RESOURCE_DOES_NOT_EXIST")), "{e}");
        // A param cannot change; a bad key is named.
        let (_, run) = post("runs/create", json!({"experiment_id": "0", "run_name": "r"})).await;
        let run_id = run["run"]["info"]["run_id"].as_str().unwrap().to_string();
        assert_eq!(post("runs/log-parameter", json!({"run_id": run_id, "key": "lr", "value": "0.1"})).await.0, StatusCode::OK);
        let (s, e) = post("runs/log-parameter", json!({"run_id": run_id, "key": "lr", "value": "0.2"})).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
        assert!(e["message"].as_str().unwrap().contains("cannot change"), "{e}");
        let (s, e) = post("runs/log-batch", json!({"run_id": run_id, "metrics": [{"key": "", "value": 1.0, "timestamp": 1}]})).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
        assert!(e["message"].as_str().unwrap().starts_with("metrics[0].key"), "{e}");
        // A version from a source Plinth does not hold, or with no model Plinth can serve.
        let (s, _) = post("registered-models/create", json!({"name": "m"})).await;
        assert_eq!(s, StatusCode::OK);
        let (s, e) = post("model-versions/create", json!({"name": "m", "source": "s3://bucket/model"})).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
        assert!(e["message"].as_str().unwrap().contains("not where Plinth keeps MLflow models"), "{e}");
        let (s, e) = post("model-versions/create", json!({"name": "m", "source": format!("runs:/{run_id}/model")})).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
        assert!(e["message"].as_str().unwrap().contains("no MLmodel"), "{e}");
        assert_eq!(dev.get(&format!("/teams/{}/models/m", t.team)).await.status, StatusCode::NOT_FOUND, "nothing registered");
        // An endpoint Plinth does not have; a stage transition (deprecated, not kept).
        let (s, e) = post("gateway/routes/create", json!({})).await;
        assert_eq!((s, e["error_code"].as_str()), (StatusCode::NOT_FOUND, Some("ENDPOINT_NOT_FOUND")), "{e}");
        let (s, e) = post("model-versions/transition-stage", json!({"name": "m", "version": "1", "stage": "Production"})).await;
        assert_eq!((s, e["error_code"].as_str()), (StatusCode::NOT_IMPLEMENTED, Some("NOT_IMPLEMENTED")), "{e}");
        // No key: MLflow's UNAUTHENTICATED.
        let r = reqwest::Client::new().get(format!("{}/api/2.0/mlflow/experiments/search", srv.url)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.json::<Value>().await.unwrap()["error_code"], "UNAUTHENTICATED");
        // A key of several teams must say which (the tracking URI names it).
        let (name, api) = srv.user("two-teams").await;
        let other = srv.team().await;
        for team in [&t.team, &other.team] {
            srv.admin().put(&format!("/teams/{team}/members/{name}"), &json!({"role": "developer"})).await.ok(StatusCode::OK);
        }
        let r = reqwest::Client::new().post(format!("{}/api/2.0/mlflow/experiments/create", srv.url)).bearer_auth(api.key()).json(&json!({"name": "x"})).send().await.unwrap();
        let e: Value = r.json().await.unwrap();
        assert!(e["message"].as_str().unwrap().contains("/teams/<team>"), "{e}");
        let r = reqwest::Client::new().post(format!("{}/teams/{}/api/2.0/mlflow/experiments/create", srv.url, other.team)).bearer_auth(api.key()).json(&json!({"name": "x"})).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
}
