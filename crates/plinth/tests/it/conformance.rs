//! The API against its own OpenAPI document: schemathesis (from PyPI) generates requests for
//! every operation of the document, valid and broken, and checks every answer: no server error,
//! a documented status, the documented content type and body schema. The document's examples
//! are real requests (a prediction, an online read, a query), so answers to valid requests are
//! checked too. Bounded (50 examples an operation, one worker, a fixed seed: repeatable) and run
//! against a dedicated server seeded with an object of each kind the paths name.

use std::process::Command;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Backend, ServerOptions, TestServer, eventually};

/// The schemathesis configuration: the checks that matter, bounded and repeatable, and the
/// path parameters pinned to the seeded objects (`ids` fills in their ids).
fn config(ids: &Value) -> String {
    let id = |k: &str| ids[k].as_str().unwrap_or_default().to_string();
    let pinned = |path: &str, param: &str, value: &str| {
        format!(
            "[[operations]]\ninclude-path-regex = \"{path}\"\nparameters = {{ \"path.{param}\" = \"{value}\" }}\n"
        )
    };
    let mut cfg = String::from(
        r#"seed = 1
workers = 1
headers = { Authorization = "Bearer ${PLINTH_TEST_KEY}" }

[cache]
enabled = false

[generation]
max-examples = 50
database = "none"

[checks]
enabled = false
not_a_server_error.enabled = true
status_code_conformance.enabled = true
content_type_conformance.enabled = true
response_schema_conformance.enabled = true
response_headers_conformance.enabled = true

[phases.stateful]
enabled = false

[phases.fuzzing.extra-data-sources]
responses = false
[phases.coverage.extra-data-sources]
responses = false

[parameters]
"path.team" = "t1"
"path.model" = "m1"
"path.environment" = "production"
"path.version" = 1
"path.principal" = "admin"

"#,
    );
    // Revoking a key revokes only the throwaway one: never the key the run uses.
    cfg.push_str(&format!(
        "[[operations]]\ninclude-operation-id = \"revoke_key\"\nparameters = {{ \"path.key_id\" = \"{}\" }}\n",
        id("throwaway_key")
    ));
    for (path, param, value) in [
        ("^/api/v1/teams/\\\\{team\\\\}/datasets/", "name", "scores".to_string()),
        ("^/api/v1/teams/\\\\{team\\\\}/feature-views/", "name", "stats".to_string()),
        ("^/api/v1/teams/\\\\{team\\\\}/webhooks/", "id", id("webhook")),
        ("^/api/v1/evaluations/", "id", id("evaluation")),
        ("^/api/v1/materializations/", "id", id("materialization")),
        ("^/api/v1/promotions/", "id", id("promotion")),
        ("^/api/v1/policy-changes/", "id", id("policy_change")),
        ("^/v2/models/\\\\{name\\\\}", "name", "t1.m1".to_string()),
    ] {
        cfg.push_str(&pinned(path, param, &value));
    }
    cfg
}

/// Seeds one object of each kind the paths name, and answers their ids.
async fn seed(srv: &TestServer) -> Value {
    let a = srv.admin();
    a.post("/teams", &json!({"name": "t1"})).await.ok(StatusCode::CREATED);
    a.put("/teams/t1/members/admin", &json!({"role": "maintainer"})).await.ok(StatusCode::OK);
    a.post("/teams/t1/models", &json!({"name": "m1", "task": "binary_classification"}))
        .await
        .ok(StatusCode::CREATED);
    let model = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/models/adult_lightgbm.txt"),
    )
    .unwrap();
    a.upload("t1", "m1", "model.txt", model, None).await.ok(StatusCode::CREATED);
    a.put("/deployments/t1/m1/production", &json!({"versions": [{"version": 1, "weight": 100}]}))
        .await
        .ok(StatusCode::OK);
    // Scores for an evaluation, trips for a feature view (the document's online example).
    let mut scores =
        String::from("age,education_num,capital_gain,capital_loss,hours_per_week,sex_male,label\n");
    let mut trips = String::from("driver_id,event_timestamp,conv_rate\n");
    for i in 0..200u32 {
        scores.push_str(&format!(
            "{},{},{},0,{},{},{}\n",
            20 + i % 50,
            5 + i % 11,
            (i % 7) * 1000,
            20 + i % 40,
            i % 2,
            u32::from(i % 3 == 0)
        ));
        trips.push_str(&format!(
            "{},2026-01-{:02}T00:00:00Z,{}\n",
            1 + i % 5,
            1 + i % 28,
            f64::from(i % 10) / 10.0
        ));
    }
    for (name, csv) in [("scores", scores), ("trips", trips)] {
        let req = a
            .request(reqwest::Method::POST, &format!("/teams/t1/datasets/{name}/versions"))
            .body(csv);
        a.send(req).await.ok(StatusCode::CREATED);
    }
    a.post(
        "/teams/t1/entities",
        &json!({"name": "driver", "join_keys": [{"name": "driver_id", "type": "int64"}]}),
    )
    .await
    .ok(StatusCode::CREATED);
    a.post(
        "/teams/t1/feature-views",
        &json!({"name": "stats", "entity": "driver", "source": {"name": "trips"}, "timestamp_field": "event_timestamp",
                "features": [{"name": "conv_rate", "type": "float64"}]}),
    )
    .await
    .ok(StatusCode::CREATED);
    let materialization =
        a.post("/teams/t1/feature-views/stats/materialize", &json!({})).await.body["id"].clone();
    a.post(
        "/teams/t1/feature-services",
        &json!({"name": "driving", "features": ["stats:conv_rate"]}),
    )
    .await
    .ok(StatusCode::CREATED);
    let webhook = a
        .post("/teams/t1/webhooks", &json!({"url": "http://127.0.0.1:9/hook", "events": []}))
        .await
        .ok(StatusCode::CREATED)["id"]
        .clone();
    let evaluation = a
        .post(
            "/teams/t1/models/m1/evaluations",
            &json!({"version": 1, "dataset": {"name": "scores"}, "label": "label"}),
        )
        .await
        .body["id"]
        .clone();
    let promotion = a
        .post("/teams/t1/models/m1/promotions", &json!({"version": 1, "environment": "staging"}))
        .await
        .ok(StatusCode::CREATED)["id"]
        .clone();
    // A team policy change waiting for review, in an environment of its own.
    a.post("/environments", &json!({"name": "sandbox"})).await.ok(StatusCode::CREATED);
    a.put("/policies/sandbox", &json!({"gated": false, "review_team_changes": true}))
        .await
        .ok(StatusCode::OK);
    let change = a
        .put("/teams/t1/policies/sandbox", &json!({"gated": false}))
        .await
        .ok(StatusCode::ACCEPTED)["id"]
        .clone();
    let throwaway =
        a.post("/keys", &json!({"name": "throwaway"})).await.ok(StatusCode::CREATED)["key"]["id"]
            .clone();
    for path in [
        format!("/materializations/{}", materialization.as_str().unwrap()),
        format!("/evaluations/{}", evaluation.as_str().unwrap()),
    ] {
        eventually(&format!("{path} succeeds"), async || {
            a.get(&path).await.body["status"] == "succeeded"
        })
        .await;
    }
    json!({"materialization": materialization, "webhook": webhook, "evaluation": evaluation, "promotion": promotion,
           "policy_change": change, "throwaway_key": throwaway})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_as_its_openapi_document_says() {
    let st = std::env::var("PLINTH_TEST_SCHEMATHESIS").expect(
        "PLINTH_TEST_SCHEMATHESIS names schemathesis's `st` (scripts/test installs it from PyPI into target/test-python)",
    );
    let sources = tempfile::tempdir().unwrap();
    std::fs::create_dir(sources.path().join("t1")).unwrap();
    let srv = TestServer::start(ServerOptions {
        local_sources_root: Some(sources.path().to_path_buf()),
        ..ServerOptions::new(Backend::Sqlite)
    })
    .await;
    let ids = seed(&srv).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("schemathesis.toml");
    std::fs::write(&cfg, config(&ids)).unwrap();
    let document = format!("{}/api/v1/openapi.json", srv.url);
    let key = srv.admin_key.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("timeout")
            .arg("900")
            .arg(&st)
            .arg("--config-file")
            .arg(&cfg)
            .args(["run", &document, "--no-color"])
            .env("PLINTH_TEST_KEY", key)
            .current_dir(dir.path())
            .output()
    })
    .await
    .unwrap()
    .expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let tail: String = stdout
        .lines()
        .rev()
        .take(200)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        out.status.success(),
        "schemathesis found failures ({:?}):\n{tail}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // The run covered every operation of the document, not a corner of it.
    let doc = srv.anonymous().get("/api/v1/openapi.json").await.ok(StatusCode::OK);
    let operations: usize =
        doc["paths"].as_object().unwrap().values().map(|p| p.as_object().unwrap().len()).sum();
    let tested = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("Tested: "))
        .and_then(|n| n.parse::<usize>().ok());
    // (Schemathesis leaves out the document's own URL, which it loaded the document from.)
    assert_eq!(tested, Some(operations - 1), "{tail}");
    // The key the run used is still good.
    srv.admin().get("/whoami").await.ok(StatusCode::OK);
    srv.stop().await;
}
