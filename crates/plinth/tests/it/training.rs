//! Training as a platform service, through the API: a recipe's run trains, registers a version
//! with its lineage and card filled, evaluates it on the held-out rows; runs can be cancelled;
//! bring-your-own commands fail with their reason; a live-accuracy drop retrains by itself and
//! the policy decides what happens to the new version; a schedule fires once per occurrence;
//! nothing crosses teams. Clocks (schedules, trigger checks, monitoring flushes) are driven.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{
    Api, ServerOptions, TestServer, backend_tests, shared_server_tests, wait_for,
};

const FEATURES: [&str; 4] = ["x1", "x2", "x3", "x4"];

fn now_us() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as i64
}

/// A binary classification set: the class follows x1 + x2 (x3 matters a little, x4 is noise).
fn rows(n: usize, seed: u64) -> Vec<[f64; 5]> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let (a, b, c, d) = (next() * 4.0 - 2.0, next() * 4.0 - 2.0, next(), next());
            let y = if a + b + 0.5 * c + 0.3 * (next() - 0.5) > 0.25 { 1.0 } else { 0.0 };
            [a, b, c, d, y]
        })
        .collect()
}

fn csv(rows: &[[f64; 5]]) -> Vec<u8> {
    let mut s = String::from("x1,x2,x3,x4,y\n");
    for r in rows {
        s.push_str(&format!("{},{},{},{},{}\n", r[0], r[1], r[2], r[3], r[4] as i64));
    }
    s.into_bytes()
}

async fn upload(api: &Api, team: &str, name: &str, bytes: Vec<u8>) -> Value {
    let req = api
        .request(reqwest::Method::POST, &format!("/teams/{team}/datasets/{name}/versions"))
        .body(bytes);
    api.send(req).await.ok(StatusCode::CREATED)
}

/// Waits for a run to finish and answers it.
async fn finished(api: &Api, team: &str, id: &str) -> Value {
    wait_for("the run to finish", Duration::from_secs(120), async || {
        let r = api.get(&format!("/teams/{team}/runs/{id}")).await.ok(StatusCode::OK);
        matches!(r["state"].as_str(), Some("completed" | "cancelled" | "discarded")).then_some(r)
    })
    .await
}

fn recipe(model: &str, extra: Value) -> Value {
    let mut r = json!({
        "data": {"dataset": {"name": "points"}},
        "label": "y",
        "model": model,
        "params": {"num_iterations": 30, "num_leaves": 15},
        "holdout_fraction": 0.25,
    });
    for (k, v) in extra.as_object().unwrap() {
        r[k] = v.clone();
    }
    r
}

shared_server_tests! {
    async fn a_run_registers_an_evaluated_version_with_its_lineage(srv: &TestServer) {
        let t = srv.team().await;
        let (team, d) = (t.team.clone(), &t.developer.1);
        let ds = upload(d, &team, "points", csv(&rows(4000, 1))).await;
        d.post(&format!("/teams/{team}/models"), &json!({"name": "points", "task": "binary_classification"})).await.ok(StatusCode::CREATED);
        // Bad recipes are refused naming the field, and nothing is stored.
        let e = d.put(&format!("/teams/{team}/recipes/pts"), &recipe("points", json!({"params": {"num_leafs": 3}}))).await.err(StatusCode::BAD_REQUEST, "invalid_field");
        assert_eq!(e["field"], "params.num_leafs");
        let e = d.put(&format!("/teams/{team}/recipes/pts"), &recipe("nope", json!({}))).await.err(StatusCode::NOT_FOUND, "not_found");
        assert_eq!(e["field"], "model");
        let e = d.put(&format!("/teams/{team}/recipes/pts"), &recipe("points", json!({"holdout_fraction": 0.95}))).await.err(StatusCode::BAD_REQUEST, "invalid_field");
        assert_eq!(e["field"], "holdout_fraction");
        d.get(&format!("/teams/{team}/recipes/pts")).await.err(StatusCode::NOT_FOUND, "not_found");
        // Viewers read recipes but cannot write them or run them.
        t.viewer.1.put(&format!("/teams/{team}/recipes/pts"), &recipe("points", json!({}))).await.err(StatusCode::FORBIDDEN, "forbidden");

        let r = d.put(&format!("/teams/{team}/recipes/pts"), &recipe("points", json!({"sensitive": ["x4"]}))).await.ok(StatusCode::OK);
        assert_eq!(r["version"], 1);
        let same = d.put(&format!("/teams/{team}/recipes/pts"), &recipe("points", json!({"sensitive": ["x4"]}))).await.ok(StatusCode::OK);
        assert_eq!(same["version"], 1, "an unchanged spec is not a new version");
        t.viewer.1.post(&format!("/teams/{team}/recipes/pts/runs"), &json!({})).await.err(StatusCode::FORBIDDEN, "forbidden");

        let run = d.post(&format!("/teams/{team}/recipes/pts/runs"), &json!({})).await.ok(StatusCode::ACCEPTED);
        let id = run["id"].as_str().unwrap();
        assert_eq!(run["trigger"], "manual");
        let done = finished(d, &team, id).await;
        assert_eq!(done["state"], "completed", "{done}");
        let steps = done["steps"].as_array().unwrap();
        assert_eq!(steps.len(), 30, "one step per iteration: {done}");
        assert!(steps.iter().all(|s| s["train"].as_f64().is_some()), "the training metric per iteration");
        assert!(steps[29]["train"].as_f64() < steps[0]["train"].as_f64(), "the loss falls");
        let result = &done["result"];
        assert_eq!(result["dataset"], format!("points@{}", ds["version"]));
        assert_eq!(result["dataset_sha256"], ds["sha256"]);
        let (trained, held) = (result["train_rows"].as_u64().unwrap(), result["holdout_rows"].as_u64().unwrap());
        assert_eq!(trained + held, 4000);
        assert!((800..1200).contains(&held), "a quarter held out: {held}");
        assert!(result["metrics"]["roc_auc"].as_f64().unwrap() > 0.9, "{result}");

        // The version: lineage and card filled by the platform, the evaluation attached.
        let v = d.get(&format!("/teams/{team}/models/points/versions/{}", result["version"])).await.ok(StatusCode::OK);
        assert_eq!(v["lineage"]["source"], "training_job");
        assert_eq!(v["lineage"]["training_job"], id);
        assert_eq!(v["lineage"]["dataset_version"], result["dataset"]);
        assert_eq!(v["lineage"]["parameters"]["dataset_sha256"], ds["sha256"]);
        assert_eq!(v["lineage"]["parameters"]["recipe"], "pts@1");
        assert_eq!(v["lineage"]["parameters"]["num_leaves"], "15");
        assert_eq!(v["lineage"]["parameters"]["features"], "x1,x2,x3", "sensitive columns are not learned from");
        assert!(v["card"]["training_data"].as_str().unwrap().contains(ds["sha256"].as_str().unwrap()));
        assert!(v["card"]["evaluation_data"].as_str().unwrap().contains("pts-holdout@1"));
        let e = d.get(&format!("/evaluations/{}", result["evaluation"].as_str().unwrap())).await;
        let e = if e.status == StatusCode::OK { e.body } else { d.get(&format!("/teams/{team}/models/points/evaluations")).await.ok(StatusCode::OK) };
        assert!(e.to_string().contains("succeeded"), "{e}");
        // The run's log, through the task it is.
        let log = d.get(&format!("/tasks/{id}/logs")).await.ok(StatusCode::OK);
        assert!(log.to_string().contains("registered points@"), "{log}");

        // Another team sees none of it, and cannot train on this team's data.
        let other = srv.team().await;
        let o = &other.maintainer.1;
        o.get(&format!("/teams/{team}/recipes/pts")).await.err(StatusCode::NOT_FOUND, "not_found");
        o.get(&format!("/teams/{team}/runs/{id}")).await.err(StatusCode::NOT_FOUND, "not_found");
        o.get(&format!("/teams/{}/runs/{id}", other.team)).await.err(StatusCode::NOT_FOUND, "not_found");
        o.post(&format!("/teams/{}/models", other.team), &json!({"name": "points", "task": "binary_classification"})).await.ok(StatusCode::CREATED);
        let e = o.put(&format!("/teams/{}/recipes/steal", other.team), &recipe("points", json!({}))).await.err(StatusCode::NOT_FOUND, "not_found");
        assert_eq!(e["field"], "data.dataset");
        let e = o.put(&format!("/teams/{}/recipes/steal", other.team), &recipe("points", json!({"data": {"sql": format!("SELECT * FROM \"{team}\".points")}}))).await.ok(StatusCode::OK);
        let run = o.post(&format!("/teams/{}/recipes/steal/runs", other.team), &json!({})).await.ok(StatusCode::ACCEPTED);
        let done = finished(o, &other.team, run["id"].as_str().unwrap()).await;
        assert_eq!(done["state"], "discarded", "a query over data not granted fails: {done} {e}");
        assert!(done["result"].is_null());
    }

    async fn a_cancelled_run_registers_nothing(srv: &TestServer) {
        let t = srv.team().await;
        let (team, d) = (t.team.clone(), &t.developer.1);
        upload(d, &team, "points", csv(&rows(20000, 2))).await;
        d.post(&format!("/teams/{team}/models"), &json!({"name": "slow", "task": "binary_classification"})).await.ok(StatusCode::CREATED);
        d.put(&format!("/teams/{team}/recipes/slow"), &recipe("slow", json!({"params": {"num_iterations": 100000, "learning_rate": 0.001, "num_leaves": 63, "min_data_in_leaf": 1, "min_sum_hessian_in_leaf": 0}}))).await.ok(StatusCode::OK);
        let run = d.post(&format!("/teams/{team}/recipes/slow/runs"), &json!({})).await.ok(StatusCode::ACCEPTED);
        let id = run["id"].as_str().unwrap();
        wait_for("the run to make progress", Duration::from_secs(60), async || {
            let r = d.get(&format!("/teams/{team}/runs/{id}")).await.ok(StatusCode::OK);
            (!r["steps"].as_array().unwrap().is_empty()).then_some(())
        })
        .await;
        d.post(&format!("/teams/{team}/runs/{id}/cancel"), &json!({})).await.ok(StatusCode::OK);
        let done = finished(d, &team, id).await;
        assert_eq!(done["state"], "cancelled", "{done}");
        let versions = d.get(&format!("/teams/{team}/models/slow/versions")).await.ok(StatusCode::OK);
        assert_eq!(versions["items"].as_array().map_or(0, Vec::len), 0, "nothing registered: {versions}");
    }

    async fn bring_your_own_commands_fail_with_their_reason(srv: &TestServer) {
        let t = srv.team().await;
        let (team, d) = (t.team.clone(), &t.developer.1);
        upload(d, &team, "points", csv(&rows(500, 3))).await;
        d.post(&format!("/teams/{team}/models"), &json!({"name": "byo", "task": "binary_classification"})).await.ok(StatusCode::CREATED);
        let fixture = crate::harness::fixtures().join("lightgbm_binary.txt");
        let cases = [
            ("exits", "echo training; exit 1", 30, "exited with status 1"),
            ("nothing", "echo done", 30, "wrote no model"),
            ("broken", "echo 'tree' > \"$PLINTH_MODEL_DIR/model.txt\"", 30, "not valid"),
            ("slow", "sleep 30", 1, "time limit of 1 s"),
            ("good", &format!("head -c 4 \"$PLINTH_TRAIN_DATA\" | grep -q PAR1 && tail -c 4 \"$PLINTH_TRAIN_DATA\" | grep -q PAR1 && test \"$PLINTH_LABEL\" = y && test \"$PLINTH_PARAM_DEPTH\" = 3 && cp {} \"$PLINTH_MODEL_DIR/model.txt\"", fixture.display()), 30, ""),
        ];
        for (name, script, timeout, reason) in cases {
            let spec = json!({
                "data": {"dataset": {"name": "points"}}, "label": "y", "model": "byo", "trainer": "command",
                "params": {"depth": 3}, "holdout_fraction": 0,
                "command": {"argv": ["sh", "-c", script], "timeout_seconds": timeout, "memory_mb": 512}
            });
            d.put(&format!("/teams/{team}/recipes/{name}"), &spec).await.ok(StatusCode::OK);
            let run = d.post(&format!("/teams/{team}/recipes/{name}/runs"), &json!({})).await.ok(StatusCode::ACCEPTED);
            let done = finished(d, &team, run["id"].as_str().unwrap()).await;
            if reason.is_empty() {
                assert_eq!(done["state"], "completed", "{done}");
                assert_eq!(done["result"]["version"], 1);
            } else {
                assert_eq!(done["state"], "discarded", "{name}: {done}");
                assert!(done["error"].as_str().unwrap().contains(reason), "{name}: {done}");
            }
        }
        let log = d.get(&format!("/teams/{team}/runs")).await.ok(StatusCode::OK);
        assert_eq!(log.as_array().unwrap().len(), 5);
    }

    async fn a_schedule_trigger_fires_once_per_occurrence(srv: &TestServer) {
        let t = srv.team().await;
        let (team, d) = (t.team.clone(), &t.developer.1);
        upload(d, &team, "points", csv(&rows(500, 4))).await;
        d.post(&format!("/teams/{team}/models"), &json!({"name": "nightly", "task": "binary_classification"})).await.ok(StatusCode::CREATED);
        let e = d.put(&format!("/teams/{team}/recipes/nightly"), &recipe("nightly", json!({"retrain": {"triggers": [{"on": "schedule", "cron": "61 * * * *"}]}}))).await.err(StatusCode::BAD_REQUEST, "invalid_field");
        assert_eq!(e["field"], "retrain.triggers[0].cron");
        d.put(&format!("/teams/{team}/recipes/nightly"), &recipe("nightly", json!({"retrain": {"triggers": [{"on": "schedule", "cron": "0 3 * * *"}], "promote": false}}))).await.ok(StatusCode::OK);
        // Two replicas' schedule loops reach the same occurrence: one run.
        let at = now_us() + 2 * 86_400_000_000;
        let (a, b) = tokio::join!(srv.core.fire_due_schedules(at), srv.core.fire_due_schedules(at));
        let _ = (a.unwrap(), b.unwrap());
        let runs = wait_for("the scheduled run", Duration::from_secs(60), async || {
            let l = d.get(&format!("/teams/{team}/runs?recipe=nightly")).await.ok(StatusCode::OK);
            (!l.as_array().unwrap().is_empty()).then_some(l)
        })
        .await;
        assert_eq!(runs.as_array().unwrap().len(), 1, "{runs}");
        assert_eq!(runs[0]["trigger"], "schedule");
        let done = finished(d, &team, runs[0]["id"].as_str().unwrap()).await;
        assert_eq!(done["state"], "completed", "{done}");
        srv.core.fire_due_schedules(at).await.unwrap();
        let l = d.get(&format!("/teams/{team}/runs?recipe=nightly")).await.ok(StatusCode::OK);
        assert_eq!(l.as_array().unwrap().len(), 1, "the same occurrence does not fire twice");
        let audit = Value::Array(t.maintainer.1.all_pages(&format!("/audit?team={team}&action=training_run.")).await);
        assert!(audit.to_string().contains("\"schedule\""), "the scheduled run is audited: {audit}");
    }

    async fn live_accuracy_dropping_retrains_and_the_policy_decides(srv: &TestServer) {
        // A self-serve policy lets a low-risk retrain that is no worse serve by itself; without
        // self-serve it waits for a reviewer.
        let self_serve = json!({"gated": false, "reviewers": {"low": 1}, "self_serve": {"enabled": true, "tolerance": 0.05}});
        let reviewed = json!({"gated": false, "reviewers": {"low": 1}});
        for (policy, expect) in [(self_serve, "deployed"), (reviewed, "pending_review")] {
            let t = srv.team().await;
            let (team, m) = (t.team.clone(), &t.maintainer.1);
            m.put(&format!("/teams/{team}/policies/production"), &policy).await.ok(StatusCode::OK);
            upload(m, &team, "points", csv(&rows(3000, 5))).await;
            m.post(&format!("/teams/{team}/models"), &json!({"name": "live", "task": "binary_classification"})).await.ok(StatusCode::CREATED);
            let spec = recipe("live", json!({"card": {"intended_use": "tests", "risk_tier": "low"}, "retrain": {
                "triggers": [{"on": "metric", "metric": "precision", "below": 0.85, "window_seconds": 86400, "min_labelled": 100}],
                "cooldown_seconds": 3600
            }}));
            m.put(&format!("/teams/{team}/recipes/live"), &spec).await.ok(StatusCode::OK);
            let first = m.post(&format!("/teams/{team}/recipes/live/runs"), &json!({})).await.ok(StatusCode::ACCEPTED);
            let done = finished(m, &team, first["id"].as_str().unwrap()).await;
            assert_eq!(done["state"], "completed", "{done}");
            // v1 serves production, predictions kept for labels.
            let base = format!("/deployments/{team}/live/production");
            m.put(&base, &json!({"versions": [{"version": 1, "weight": 100}], "keep_predictions": true})).await.ok(StatusCode::OK);
            let traffic = rows(400, 6);
            let body: Vec<Vec<f64>> = traffic.iter().map(|r| FEATURES.iter().enumerate().map(|(i, _)| r[i]).collect()).collect();
            let answer = m.post(&format!("{base}/predict"), &json!({"rows": body})).await.ok(StatusCode::OK);
            let request_id = answer["request_id"].as_str().unwrap().to_string();
            let now = now_us();
            srv.core.flush_monitoring_at(now).await.unwrap();
            // While labels say the model is right, nothing retrains.
            let predicted: Vec<i64> = answer["predictions"].as_array().unwrap().iter().map(|p| p["label"].as_i64().or_else(|| p.as_i64()).unwrap_or(0)).collect();
            let labels: Vec<Value> = predicted.iter().enumerate().map(|(i, p)| json!({"request_id": request_id, "row": i, "label": p})).collect();
            m.post(&format!("{base}/feedback"), &json!({"labels": labels})).await.ok(StatusCode::OK);
            assert!(srv.core.check_retrain_triggers_at(now).await.unwrap().iter().all(|_| false));
            // The world changes: the labels flip, precision falls below 0.85.
            let flipped: Vec<Value> = predicted.iter().enumerate().map(|(i, p)| json!({"request_id": request_id, "row": i, "label": 1 - p})).collect();
            m.post(&format!("{base}/feedback"), &json!({"labels": flipped})).await.ok(StatusCode::OK);
            let started = srv.core.check_retrain_triggers_at(now).await.unwrap();
            let mine: Vec<String> = {
                let l = m.get(&format!("/teams/{team}/runs?recipe=live")).await.ok(StatusCode::OK);
                l.as_array().unwrap().iter().filter(|r| r["trigger"].as_str().unwrap().starts_with("metric:precision")).map(|r| r["id"].as_str().unwrap().to_string()).collect()
            };
            assert_eq!(mine.len(), 1, "one run for the drop: {started:?}");
            // Cooling down: the same condition a minute later starts nothing.
            srv.core.check_retrain_triggers_at(now + 60_000_000).await.unwrap();
            let l = m.get(&format!("/teams/{team}/runs?recipe=live")).await.ok(StatusCode::OK);
            assert_eq!(l.as_array().unwrap().len(), 2, "{l}");
            let done = finished(m, &team, &mine[0]).await;
            assert_eq!(done["state"], "completed", "{done}");
            assert_eq!(done["result"]["version"], 2);
            assert_eq!(done["result"]["promotion_status"], expect, "{done}");
            // The loop is linked: trigger → run → version → evaluation → promotion.
            let v2 = m.get(&format!("/teams/{team}/models/live/versions/2")).await.ok(StatusCode::OK);
            assert_eq!(v2["lineage"]["training_job"], mine[0].as_str());
            assert!(v2["lineage"]["tags"]["trigger"].as_str().unwrap().starts_with("metric:precision"));
            let serving = m.get(&base).await.ok(StatusCode::OK);
            let serves_v2 = serving.to_string().contains("\"version\":2");
            assert_eq!(serves_v2, expect == "deployed", "{serving}");
            // The audit log has each step: the triggered run, the version it registered, its
            // evaluation and the promotion.
            let audit = Value::Array(m.all_pages(&format!("/audit?team={team}")).await).to_string();
            for action in ["training_run.start", "model_version.create", "evaluation.create", "promotion."] {
                assert!(audit.contains(action), "{action} in {audit}");
            }
            assert!(audit.contains("metric:precision"), "the trigger is in the audit: {audit}");
        }
    }

    async fn drift_and_new_data_retrain(srv: &TestServer) {
        let t = srv.team().await;
        let (team, m) = (t.team.clone(), &t.maintainer.1);
        upload(m, &team, "points", csv(&rows(2000, 7))).await;
        m.post(&format!("/teams/{team}/models"), &json!({"name": "drifty", "task": "binary_classification"})).await.ok(StatusCode::CREATED);
        let spec = recipe("drifty", json!({"retrain": {"triggers": [{"on": "drift"}, {"on": "new_data"}], "cooldown_seconds": 600, "promote": false}}));
        m.put(&format!("/teams/{team}/recipes/drifty"), &spec).await.ok(StatusCode::OK);
        let first = m.post(&format!("/teams/{team}/recipes/drifty/runs"), &json!({})).await.ok(StatusCode::ACCEPTED);
        assert_eq!(finished(m, &team, first["id"].as_str().unwrap()).await["state"], "completed");
        let base = format!("/deployments/{team}/drifty/production");
        m.put(&base, &json!({"versions": [{"version": 1, "weight": 100}]})).await.ok(StatusCode::OK);
        let rule = json!({"rules": [{"name": "x1_drift", "series": "feature_drift", "feature": "x1", "threshold": 0.1, "window_seconds": 3600, "for_seconds": 60}]});
        m.put(&format!("{base}/monitoring"), &rule).await.ok(StatusCode::OK);
        let t0 = now_us();
        assert!(srv.core.check_retrain_triggers_at(t0).await.unwrap().is_empty(), "nothing drifts yet, no new data");
        // Traffic whose x1 moved by 3: the drift alert fires, and a run starts.
        let shifted: Vec<Vec<f64>> = rows(600, 8).iter().map(|r| vec![r[0] + 3.0, r[1], r[2], r[3]]).collect();
        m.post(&format!("{base}/predict"), &json!({"rows": shifted})).await.ok(StatusCode::OK);
        srv.core.flush_monitoring_at(t0).await.unwrap();
        srv.core.evaluate_alerts(t0 + 60_000_000).await.unwrap();
        srv.core.evaluate_alerts(t0 + 180_000_000).await.unwrap();
        let alerts = m.get(&format!("/teams/{team}/alerts")).await.ok(StatusCode::OK);
        assert!(alerts.to_string().contains("firing"), "{alerts}");
        let started = srv.core.check_retrain_triggers_at(t0 + 180_000_000).await.unwrap();
        let runs = m.get(&format!("/teams/{team}/runs?recipe=drifty")).await.ok(StatusCode::OK);
        let drift_runs: Vec<&Value> = runs.as_array().unwrap().iter().filter(|r| r["trigger"] == "drift:x1_drift").collect();
        assert_eq!(drift_runs.len(), 1, "{runs} {started:?}");
        assert_eq!(finished(m, &team, drift_runs[0]["id"].as_str().unwrap()).await["state"], "completed");
        // A new version of the data: nothing while the recipe cools down.
        upload(m, &team, "points", csv(&rows(2000, 9))).await;
        srv.core.check_retrain_triggers_at(t0 + 240_000_000).await.unwrap();
        let n = m.get(&format!("/teams/{team}/runs?recipe=drifty")).await.ok(StatusCode::OK).as_array().unwrap().len();
        assert_eq!(n, 2, "cooling down");
        // Past the cool-down, with the drift rule gone, the new data retrains.
        m.put(&format!("{base}/monitoring"), &json!({})).await.ok(StatusCode::OK);
        srv.core.check_retrain_triggers_at(t0 + 900_000_000).await.unwrap();
        let runs = m.get(&format!("/teams/{team}/runs?recipe=drifty")).await.ok(StatusCode::OK);
        let newest = &runs[0];
        assert_eq!(newest["trigger"], "new_data:points@2", "{runs}");
        let done = finished(m, &team, newest["id"].as_str().unwrap()).await;
        assert_eq!(done["result"]["dataset"], "points@2", "{done}");
        let versions = m.get(&format!("/teams/{team}/models/drifty/versions")).await.ok(StatusCode::OK);
        assert_eq!(versions["items"].as_array().unwrap().len(), 3, "{versions}");
    }

    async fn the_cli_trains_follows_and_fits(srv: &TestServer) {
        let t = srv.team().await;
        let (team, d) = (t.team.clone(), &t.developer.1);
        upload(d, &team, "points", csv(&rows(1500, 10))).await;
        d.post(&format!("/teams/{team}/models"), &json!({"name": "cli", "task": "binary_classification"})).await.ok(StatusCode::CREATED);
        let tmp = tempfile::tempdir().unwrap();
        let recipe_file = tmp.path().join("recipe.json");
        std::fs::write(&recipe_file, recipe("cli", json!({})).to_string()).unwrap();
        let cli = crate::cli::Cli::new();
        cli.ok(&["login", "--url", &srv.url, "--key", d.key()]);
        let put = cli.ok(&["recipe", "put", &format!("{team}/cli"), "--file", recipe_file.to_str().unwrap()]);
        assert!(put.contains(&format!("{team}/cli@1")), "{put}");
        let out = cli.ok(&["train", &format!("{team}/cli")]);
        assert!(out.contains("cli@1") && out.contains("held-out"), "{out}");
        let runs = cli.json(&["run", "list", "--team", &team]);
        let id = runs[0]["id"].as_str().unwrap().to_string();
        assert_eq!(runs[0]["state"], "completed");
        let logs = cli.ok(&["run", "logs", &format!("{team}/{id}")]);
        assert!(logs.contains("[30/30] binary_logloss"), "{logs}");
        let shown = cli.ok(&["run", "show", &format!("{team}/{id}")]);
        assert!(shown.contains("manual") && shown.contains("points@1"), "{shown}");
        let version = cli.ok(&["version", "show", &format!("{team}/cli@1")]);
        assert!(version.contains(&format!("training_job (run {id}, data points@1, recipe cli@1)")), "{version}");
        let bad = cli.fails(&["train", &format!("{team}/cli"), "--param", "num_leaves=1"], 1);
        assert!(bad.contains("params.num_leaves"), "{bad}");

        // `plinth fit`: the same trainer on a local file, and its predictions.
        let data = tmp.path().join("points.csv");
        std::fs::write(&data, csv(&rows(1000, 11))).unwrap();
        let (model, preds) = (tmp.path().join("model.txt"), tmp.path().join("p.txt"));
        cli.ok(&["fit", "--data", data.to_str().unwrap(), "--label", "y", "--param", "objective=binary", "--param", "num_iterations=20",
            "--out", model.to_str().unwrap(), "--predict", data.to_str().unwrap(), "--predictions", preds.to_str().unwrap()]);
        assert!(std::fs::read_to_string(&model).unwrap().starts_with("tree\nversion=v4"));
        let p: Vec<f64> = std::fs::read_to_string(&preds).unwrap().lines().map(|l| l.parse().unwrap()).collect();
        assert_eq!(p.len(), 1000);
        assert!(p.iter().all(|v| (0.0..=1.0).contains(v)));
        let bad = cli.fails(&["fit", "--data", data.to_str().unwrap(), "--label", "nope", "--out", model.to_str().unwrap()], 1);
        assert!(bad.contains("--label") && bad.contains("nope"), "{bad}");
    }

    async fn a_recipe_trains_on_a_point_in_time_training_set(srv: &TestServer) {
        let t = srv.team().await;
        let (team, d) = (t.team.clone(), &t.developer.1);
        // Hourly driver stats over two days, and labels at times between them: the label
        // follows the driver's conversion rate as of its time.
        let mut stats = String::from("driver_id,event_timestamp,conv_rate,trips\n");
        let mut labels = String::from("driver_id,event_timestamp,churned\n");
        let data = rows(1200, 12);
        for (i, r) in data.iter().enumerate() {
            let (driver, hour) = (i % 40, i / 40);
            stats.push_str(&format!("{driver},2024-05-0{}T{:02}:00:00Z,{},{}\n", 1 + hour / 24, hour % 24, r[0], (r[1] * 10.0).round()));
            labels.push_str(&format!("{driver},2024-05-0{}T{:02}:30:00Z,{}\n", 1 + hour / 24, hour % 24, (r[0] > 0.0) as i64));
        }
        upload(d, &team, "driver_stats", stats.into_bytes()).await;
        upload(d, &team, "churn_labels", labels.into_bytes()).await;
        d.post(&format!("/teams/{team}/entities"), &json!({"name": "driver", "join_keys": [{"name": "driver_id", "type": "int64"}]})).await.ok(StatusCode::CREATED);
        d.post(&format!("/teams/{team}/feature-views"), &json!({
            "name": "stats", "entity": "driver", "source": {"name": "driver_stats"}, "timestamp_field": "event_timestamp",
            "features": [{"name": "conv_rate", "type": "float64"}, {"name": "trips", "type": "int64"}], "ttl_seconds": 86400
        })).await.ok(StatusCode::CREATED);
        d.post(&format!("/teams/{team}/models"), &json!({"name": "churn", "task": "binary_classification"})).await.ok(StatusCode::CREATED);
        let spec = json!({
            "data": {"training_set": {"entities": {"name": "churn_labels"}, "features": ["stats:conv_rate", "stats:trips"]}},
            "label": "churned", "exclude": ["driver_id"], "model": "churn", "params": {"num_iterations": 20, "min_data_in_leaf": 5}
        });
        let e = d.put(&format!("/teams/{team}/recipes/churn"), &json!({"data": {"training_set": {"entities": {"name": "churn_labels"}}}, "label": "churned", "model": "churn"})).await.err(StatusCode::BAD_REQUEST, "invalid_field");
        assert_eq!(e["field"], "data.training_set");
        d.put(&format!("/teams/{team}/recipes/churn"), &spec).await.ok(StatusCode::OK);
        let run = d.post(&format!("/teams/{team}/recipes/churn/runs"), &json!({})).await.ok(StatusCode::ACCEPTED);
        let done = finished(d, &team, run["id"].as_str().unwrap()).await;
        assert_eq!(done["state"], "completed", "{done}");
        assert_eq!(done["result"]["dataset"], "churn-training-set@1");
        let v = d.get(&format!("/teams/{team}/models/churn/versions/1")).await.ok(StatusCode::OK);
        assert_eq!(v["lineage"]["parameters"]["features"], "conv_rate,trips", "{v}");
        assert!(done["result"]["metrics"]["roc_auc"].as_f64().unwrap() > 0.9, "{done}");
    }
}

backend_tests! {
    async fn training_commands_are_refused_unless_the_server_allows_them(backend: Backend) {
        let srv = TestServer::start(ServerOptions { training_commands: false, ..ServerOptions::new(backend) }).await;
        let t = srv.team().await;
        let (team, m) = (t.team.clone(), &t.maintainer.1);
        upload(m, &team, "points", csv(&rows(100, 13))).await;
        m.post(&format!("/teams/{team}/models"), &json!({"name": "byo", "task": "binary_classification"})).await.ok(StatusCode::CREATED);
        let spec = json!({"data": {"dataset": {"name": "points"}}, "label": "y", "model": "byo", "trainer": "command", "command": {"argv": ["true"]}});
        let e = m.put(&format!("/teams/{team}/recipes/byo"), &spec).await.err(StatusCode::NOT_IMPLEMENTED, "feature_disabled");
        assert_eq!(e["field"], "command");
        m.get(&format!("/teams/{team}/recipes/byo")).await.err(StatusCode::NOT_FOUND, "not_found");
        // Built-in trainers still run.
        m.put(&format!("/teams/{team}/recipes/gbdt"), &recipe("byo", json!({}))).await.ok(StatusCode::OK);
        srv.stop().await;
    }
}
