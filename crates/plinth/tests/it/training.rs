//! Training as a platform service, through the API: a recipe's run trains, registers a version
//! with its lineage and card filled, evaluates it on the held-out rows; runs can be cancelled;
//! bring-your-own commands fail with their reason; a live-accuracy drop retrains by itself and
//! the policy decides what happens to the new version; a schedule fires once per occurrence;
//! nothing crosses teams. Clocks (schedules, trigger checks, monitoring flushes) are driven.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Api, shared_server_tests, wait_for};

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
            ("good", &format!("test -s \"$PLINTH_TRAIN_DATA\" && test \"$PLINTH_LABEL\" = y && test \"$PLINTH_PARAM_DEPTH\" = 3 && cp {} \"$PLINTH_MODEL_DIR/model.txt\"", fixture.display()), 30, ""),
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
            let audit = m.get(&format!("/audit?team={team}")).await;
            if audit.status == StatusCode::OK {
                assert!(audit.body.to_string().contains("promotion"), "the promotion is audited");
            }
        }
    }
}
