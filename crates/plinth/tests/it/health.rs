//! A deployment's health over time: the per-minute rollups its replicas write, read back by
//! range and step through the API and `plinth metrics`, with the clock driven by the test.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::cli::Cli;
use crate::harness::{ServerOptions, TestServer, backend_tests, wait_for};

const MINUTE_US: i64 = 60_000_000;

/// The start of the wall clock's current minute (only for a silence, which ends by the wall
/// clock).
fn now_minute() -> i64 {
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros()
            as i64;
    now.div_euclid(MINUTE_US) * MINUTE_US
}

fn rfc3339(micros: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000).unwrap();
    t.format(&time::format_description::well_known::Rfc3339).unwrap()
}

backend_tests! {
    async fn health_is_kept_minute_by_minute_and_read_by_range_and_step(backend: Backend) {
        // The test drives the health clock; the server's own rollups stay out of the way.
        let srv = TestServer::start(ServerOptions { figures_every: Duration::from_secs(86_400), ..ServerOptions::new(backend) }).await;
        let t = srv.team().await;
        let m = &t.maintainer.1;
        m.post(&format!("/teams/{}/models", t.team), &json!({"name": "income", "task": "binary_classification"})).await.ok(StatusCode::CREATED);
        m.upload_fixture(&t.team, "income", "lightgbm_binary.txt").await.ok(StatusCode::CREATED);
        let base = format!("/deployments/{}/income/production", t.team);
        m.put(&base, &json!({"versions": [{"version": 1, "weight": 100}]})).await.ok(StatusCode::OK);
        let row = json!([39, 13, 2174, 0, 40, 1]);
        let predict = |rows: usize| json!({"rows": vec![row.clone(); rows]});

        // A minute far from now, so that nothing else falls in it.
        let t0 = 33_333_333 * MINUTE_US;
        // First minute: 3 answered predictions (4 rows) and one refused (a caller's mistake),
        // rolled up twice.
        m.post(&format!("{base}/predict"), &predict(1)).await.ok(StatusCode::OK);
        m.post(&format!("{base}/predict"), &predict(2)).await.ok(StatusCode::OK);
        srv.core.roll_up_health_at(t0 + 5_000_000).await.unwrap();
        m.post(&format!("{base}/predict"), &predict(1)).await.ok(StatusCode::OK);
        assert_eq!(m.post(&format!("{base}/predict"), &json!({"rows": [[1, 2]]})).await.status, StatusCode::BAD_REQUEST);
        srv.core.roll_up_health_at(t0 + 30_000_000).await.unwrap();
        // Nothing new: no new row.
        srv.core.roll_up_health_at(t0 + 40_000_000).await.unwrap();
        // Second minute: 2 more.
        m.post(&format!("{base}/predict"), &predict(3)).await.ok(StatusCode::OK);
        m.post(&format!("{base}/predict"), &predict(1)).await.ok(StatusCode::OK);
        srv.core.roll_up_health_at(t0 + MINUTE_US + 1_000_000).await.unwrap();

        let health = |q: String| {
            let (m, base) = (m.clone(), base.clone());
            async move { m.get(&format!("{base}/health?{q}")).await }
        };
        let range = format!("since={}&until={}", rfc3339(t0), rfc3339(t0 + 3 * MINUTE_US)).replace(':', "%3A").replace('+', "%2B");
        let h = health(range.clone()).await.ok(StatusCode::OK);
        let points = h["points"].as_array().unwrap();
        assert_eq!(points.len(), 2, "{h}");
        assert_eq!(points[0]["start"], rfc3339(t0));
        assert_eq!(points[0]["requests"], 4);
        assert_eq!(points[0]["rows"], 4);
        assert_eq!(points[0]["errors"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum::<u64>(), 1);
        assert_eq!(points[0]["error_rate"], 0.25);
        // A caller's mistake does not count against availability.
        assert_eq!(points[0]["availability"], 1.0);
        assert_eq!(points[0]["versions"][0]["version"], 1);
        assert_eq!(points[0]["versions"][0]["requests"], 3);
        assert!(points[0]["latency_ms"]["p99"].as_f64().unwrap() > 0.0, "{h}");
        assert_eq!(points[1]["start"], rfc3339(t0 + MINUTE_US));
        assert_eq!(points[1]["requests"], 2);
        assert_eq!(points[1]["rows"], 4);
        assert_eq!(h["total"]["requests"], 6);
        assert_eq!(h["availability_target"], 0.999);
        assert_eq!(h["meets_target"], true);

        // A wider step adds the minutes up.
        let h = health(format!("{range}&step_seconds=180")).await.ok(StatusCode::OK);
        assert_eq!(h["points"].as_array().unwrap().len(), 1, "{h}");
        assert_eq!(h["points"][0]["requests"], 6);
        assert_eq!(h["points"][0]["rows"], 8);

        // Bad ranges and steps are refused, naming the field.
        let e = health(format!("{range}&step_seconds=90")).await.err(StatusCode::BAD_REQUEST, "invalid_field");
        assert_eq!(e["field"], "step_seconds");
        let backwards = format!("since={}&until={}", rfc3339(t0 + MINUTE_US), rfc3339(t0)).replace(':', "%3A").replace('+', "%2B");
        assert_eq!(health(backwards).await.err(StatusCode::BAD_REQUEST, "invalid_field")["field"], "since");
        let decades = format!("since=2000-01-01T00%3A00%3A00Z&until={}", rfc3339(t0).replace(':', "%3A"));
        let e = health(decades).await.err(StatusCode::BAD_REQUEST, "invalid_field");
        assert!(e["message"].as_str().unwrap().contains("more than 1440 points"), "{e}");

        // Another team sees nothing of it.
        let other = srv.team().await;
        other.maintainer.1.get(&format!("{base}/health?{range}")).await.err(StatusCode::NOT_FOUND, "not_found");

        // The CLI reads the same series.
        let cli = Cli::new();
        cli.ok(&["login", "--url", &srv.url, "--key", m.key()]);
        let out: Value = serde_json::from_str(&cli.ok(&[
            "metrics", &format!("{}/income", t.team), "--since", &rfc3339(t0), "--until", &rfc3339(t0 + 3 * MINUTE_US), "--step", "1m", "--json",
        ]))
        .unwrap();
        assert_eq!(out["total"]["requests"], 6, "{out}");
        let table = cli.ok(&["metrics", &format!("{}/income", t.team), "--since", &rfc3339(t0), "--until", &rfc3339(t0 + 3 * MINUTE_US)]);
        assert!(table.contains("availability 100.000 % against the 99.9 % target: met"), "{table}");

        // Kept across a restart: the rows are the metadata database's.
        let key = m.key().to_string();
        let (tmp, data_dir, database_url) = srv.stop().await;
        let srv = TestServer::start(ServerOptions { data_dir: Some(data_dir), database_url, figures_every: Duration::from_secs(86_400), ..ServerOptions::new(backend) }).await;
        let h = crate::harness::Api::new(&srv.url, &key).get(&format!("{base}/health?{range}")).await.ok(StatusCode::OK);
        assert_eq!((h["total"]["requests"].as_u64(), h["points"].as_array().map(Vec::len)), (Some(6), Some(2)), "{h}");
        srv.stop().await;
        drop(tmp);
    }
}

/// The schedule fires the evaluation every minute, on the monitoring queue; the test fires the
/// next occurrence itself (its clock a minute ahead) instead of waiting for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schedule_evaluates_the_rules_on_the_monitoring_queue() {
    let srv = TestServer::start(ServerOptions {
        figures_every: Duration::from_secs(86_400),
        ..ServerOptions::new(crate::harness::Backend::Sqlite)
    })
    .await;
    let t = srv.team().await;
    let m = &t.maintainer.1;
    m.post(
        &format!("/teams/{}/models", t.team),
        &json!({"name": "income", "task": "binary_classification"}),
    )
    .await
    .ok(StatusCode::CREATED);
    m.upload_fixture(&t.team, "income", "lightgbm_binary.txt").await.ok(StatusCode::CREATED);
    let base = format!("/deployments/{}/income/production", t.team);
    m.put(&base, &json!({"versions": [{"version": 1, "weight": 100}]})).await.ok(StatusCode::OK);
    m.put(&format!("{base}/monitoring"), &json!({"sla": {"error_rate": {"for_seconds": 0}}}))
        .await
        .ok(StatusCode::OK);
    m.post(&format!("{base}/predict"), &json!({"rows": [[39, 13, 2174, 0, 40, 1]]}))
        .await
        .ok(StatusCode::OK);
    assert_eq!(
        m.post(&format!("{base}/predict"), &json!({"rows": [[1, 2]]})).await.status,
        StatusCode::BAD_REQUEST
    );
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros()
            as i64;
    srv.core.roll_up_health_at(now).await.unwrap();
    assert!(srv.core.fire_due_schedules(now + 61_000_000).await.unwrap() >= 1);
    let firing = wait_for(
        "the scheduled evaluation to fire the error-rate alert",
        Duration::from_secs(20),
        async || {
            let alerts = m.get(&format!("/teams/{}/alerts", t.team)).await.ok(StatusCode::OK);
            alerts
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["rule"] == "error_rate" && a["state"] == "firing")
                .cloned()
        },
    )
    .await;
    assert_eq!(firing["value"], 0.5, "{firing}");
    // It ran as the platform's task, in the monitoring queue.
    let tasks = srv.admin().get("/tasks?kind=monitoring.alerts&limit=50").await.ok(StatusCode::OK);
    let done: Vec<&Value> =
        tasks.as_array().unwrap().iter().filter(|k| k["state"] == "completed").collect();
    assert!(
        done.iter()
            .any(|k| k["queue"] == "monitoring" && k["result"]["changed"].as_u64() >= Some(1)),
        "{tasks}"
    );

    // Two evaluations never overlap: while another one runs (its runner, elsewhere, holding its
    // lease), the next occurrence stands down; one that started over 5 minutes ago (hung) no
    // longer holds the others back. The other one is forged in the database.
    sqlx::any::install_default_drivers();
    let pool =
        sqlx::AnyPool::connect(&format!("sqlite://{}", srv.data_dir.join("plinth.db").display()))
            .await
            .unwrap();
    let forged = done[0]["id"].as_str().unwrap().to_string();
    let forge = async |started: i64| {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE tasks SET state = 'running', lease_owner = 'rep_elsewhere', lease_expires_at = {}, started_at = {started}, finished_at = NULL WHERE id = '{forged}'",
            now + 3_600_000_000
        )))
        .execute(&pool)
        .await
        .unwrap();
    };
    let next = async |at: i64, seen: usize| {
        assert!(srv.core.fire_due_schedules(at).await.unwrap() >= 1);
        wait_for("the next evaluation", Duration::from_secs(20), async || {
            let tasks = srv
                .admin()
                .get("/tasks?kind=monitoring.alerts&state=completed&limit=50")
                .await
                .ok(StatusCode::OK);
            let list = tasks.as_array().unwrap().clone();
            (list.len() > seen).then(|| list[0]["result"].clone())
        })
        .await
    };
    let completed = |v: &Value| v.as_array().map_or(0, Vec::len);
    forge(now - 60_000_000).await;
    let seen = completed(
        &srv.admin()
            .get("/tasks?kind=monitoring.alerts&state=completed&limit=50")
            .await
            .ok(StatusCode::OK),
    );
    let result = next(now + 121_000_000, seen).await;
    assert_eq!(result["skipped"], format!("evaluation {forged} still runs"), "{result}");
    forge(now - 6 * 60_000_000).await;
    let result = next(now + 181_000_000, seen + 1).await;
    assert!(result["changed"].is_number() && result.get("skipped").is_none(), "{result}");
    pool.close().await;
}

backend_tests! {
    async fn the_sla_error_rate_alert_fires_after_its_for_resolves_and_webhooks_hear_each_once(backend: Backend) {
        // The test drives the health and alert clocks; the server's own rollups and scheduled
        // evaluations stay out of the way (no "monitoring" queue runs here).
        let tasks = plinth_core::tasks::TaskOptions {
            queues: vec![("default".into(), 2), ("webhooks".into(), 2)],
            ..plinth_core::tasks::TaskOptions::default()
        };
        let srv = TestServer::start(ServerOptions { figures_every: Duration::from_secs(86_400), tasks, ..ServerOptions::new(backend) }).await;
        // One receiver, three paths: Plinth's own body, Alertmanager's and PagerDuty's.
        let (addr, seen) = crate::harness::webhook_receiver().await;

        let t = srv.team().await;
        let m = &t.maintainer.1;
        let hook = m
            .post(&format!("/teams/{}/webhooks", t.team), &json!({"url": format!("http://{addr}/hook"), "events": ["alert.firing", "alert.resolved"]}))
            .await
            .ok(StatusCode::CREATED);
        let deliveries = format!("/teams/{}/webhooks/{}/deliveries", t.team, hook["id"].as_str().unwrap());
        m.post(&format!("/teams/{}/webhooks", t.team), &json!({"url": format!("http://{addr}/am"), "format": "alertmanager"})).await.ok(StatusCode::CREATED);
        m.post(&format!("/teams/{}/webhooks", t.team), &json!({"url": format!("http://{addr}/pd"), "format": "pagerduty", "routing_key": "R0UT1NG"}))
            .await
            .ok(StatusCode::CREATED);
        // Alertmanager's and PagerDuty's shapes carry alerts only; PagerDuty needs its key.
        let e = m.post(&format!("/teams/{}/webhooks", t.team), &json!({"url": format!("http://{addr}/am"), "format": "alertmanager", "events": ["deployment.changed"]})).await;
        assert_eq!(e.err(StatusCode::BAD_REQUEST, "invalid_field")["field"], "events[0]");
        let e = m.post(&format!("/teams/{}/webhooks", t.team), &json!({"url": format!("http://{addr}/pd"), "format": "pagerduty"})).await;
        assert_eq!(e.err(StatusCode::BAD_REQUEST, "invalid_field")["field"], "routing_key");
        m.post(&format!("/teams/{}/models", t.team), &json!({"name": "income", "task": "binary_classification"})).await.ok(StatusCode::CREATED);
        m.upload_fixture(&t.team, "income", "lightgbm_binary.txt").await.ok(StatusCode::CREATED);
        let base = format!("/deployments/{}/income/production", t.team);
        m.put(&base, &json!({"versions": [{"version": 1, "weight": 100}]})).await.ok(StatusCode::OK);
        let good = json!({"rows": [[39, 13, 2174, 0, 40, 1]]});
        let bad = json!({"rows": [[1, 2]]});
        let alerts = || {
            let (m, team) = (m.clone(), t.team.clone());
            async move { m.get(&format!("/teams/{team}/alerts")).await.ok(StatusCode::OK) }
        };

        // An hour ago by the wall clock: people acknowledge and resolve incidents now.
        let t0 = now_minute() - 60 * MINUTE_US;
        // Minute by minute: half the requests fail (a caller's mistake still counts in the error
        // rate). The condition holds from the first evaluation; the alert is pending until it
        // has held for five minutes, then fires once.
        for k in 0..7i64 {
            m.post(&format!("{base}/predict"), &good).await.ok(StatusCode::OK);
            assert_eq!(m.post(&format!("{base}/predict"), &bad).await.status, StatusCode::BAD_REQUEST);
            srv.core.roll_up_health_at(t0 + k * MINUTE_US + 30_000_000).await.unwrap();
            srv.core.evaluate_alerts(t0 + (k + 1) * MINUTE_US).await.unwrap();
            let now = alerts().await;
            let error_rate: Vec<&Value> = now.as_array().unwrap().iter().filter(|a| a["rule"] == "error_rate").collect();
            assert_eq!(error_rate.len(), 1, "minute {k}: {now}");
            let want = if k < 5 { "pending" } else { "firing" };
            assert_eq!(error_rate[0]["state"], want, "minute {k}: {now}");
            assert_eq!(error_rate[0]["value"], 0.5);
            assert_eq!(error_rate[0]["threshold"], 0.05);
            // Latency stays far below its 1 s.
            assert!(now.as_array().unwrap().iter().all(|a| a["rule"] != "latency_p99"), "{now}");
        }
        // The firing opened an incident.
        let incidents = m.get(&format!("/teams/{}/incidents", t.team)).await.ok(StatusCode::OK);
        assert_eq!(incidents.as_array().unwrap().len(), 1, "{incidents}");
        let incident = incidents[0]["id"].as_str().unwrap().to_string();
        assert_eq!(incidents[0]["state"], "open");
        assert_eq!(incidents[0]["opened_at"], rfc3339(t0 + 6 * MINUTE_US));
        assert_eq!(incidents[0]["deployment"], format!("{}/income@production", t.team));
        // Healthy minutes: once the failures have left the 5-minute window, it resolves.
        for k in 7..13i64 {
            m.post(&format!("{base}/predict"), &good).await.ok(StatusCode::OK);
            srv.core.roll_up_health_at(t0 + k * MINUTE_US + 30_000_000).await.unwrap();
            srv.core.evaluate_alerts(t0 + (k + 1) * MINUTE_US).await.unwrap();
        }
        let now = alerts().await;
        assert_eq!(now[0]["state"], "resolved", "{now}");
        assert!(now[0]["fired_at"].is_string() && now[0]["resolved_at"].is_string(), "{now}");

        // The webhook heard the firing and the resolve, each once.
        wait_for("the firing and the resolve, in three shapes", Duration::from_secs(20), async || (seen.lock().unwrap().len() >= 6).then_some(())).await;
        {
            let all = seen.lock().unwrap();
            let by = |kind: &str| -> Vec<Value> {
                let mut v: Vec<Value> = all.iter().filter(|p| p["received_at"] == kind).cloned().collect();
                v.sort_by_key(|p| p.to_string().contains("resolve"));
                v
            };
            // Alertmanager's webhook, version 4: firing, then resolved, one fingerprint.
            let am = by("am");
            assert_eq!(am.len(), 2, "{am:?}");
            assert_eq!((am[0]["version"].as_str(), am[0]["status"].as_str(), am[1]["status"].as_str()), (Some("4"), Some("firing"), Some("resolved")));
            let alert = &am[0]["alerts"][0];
            assert_eq!(alert["labels"]["alertname"], "error_rate");
            assert_eq!(alert["labels"]["environment"], "production");
            assert_eq!(alert["startsAt"], rfc3339(t0 + MINUTE_US));
            assert_eq!(alert["endsAt"], "0001-01-01T00:00:00Z");
            assert_eq!(am[1]["alerts"][0]["endsAt"], rfc3339(t0 + 12 * MINUTE_US));
            assert_eq!(alert["fingerprint"], am[1]["alerts"][0]["fingerprint"]);
            // PagerDuty's Events API v2: trigger, then resolve, one dedup key.
            let pd = by("pd");
            assert_eq!(pd.len(), 2, "{pd:?}");
            assert_eq!((pd[0]["event_action"].as_str(), pd[1]["event_action"].as_str()), (Some("trigger"), Some("resolve")));
            assert_eq!(pd[0]["routing_key"], "R0UT1NG");
            assert_eq!(pd[0]["dedup_key"], pd[1]["dedup_key"]);
            assert_eq!(pd[0]["payload"]["severity"], "critical");
            assert_eq!(pd[0]["payload"]["source"], format!("{}/income@production", t.team));
        }
        let seen = {
            let all = seen.lock().unwrap();
            Arc::new(Mutex::new(all.iter().filter(|p| p["received_at"] == "hook").cloned().collect::<Vec<Value>>()))
        };
        {
            let seen = seen.lock().unwrap();
            let events: Vec<&str> = seen.iter().map(|p| p["event"].as_str().unwrap()).collect();
            assert_eq!(events, ["alert.firing", "alert.resolved"], "{seen:?}");
            assert_eq!(seen[0]["data"]["rule"], "error_rate", "{seen:?}");
            assert_eq!(seen[0]["data"]["deployment"], format!("{}/income@production", t.team));
            assert_eq!(seen[0]["data"]["fired_at"], rfc3339(t0 + 6 * MINUTE_US), "{seen:?}");
            assert_eq!(seen[1]["data"]["resolved_at"], rfc3339(t0 + 12 * MINUTE_US), "{seen:?}");
        }

        // People work the incident: a rollout in between shows in its timeline.
        let on = |what: &str| format!("/teams/{}/incidents/{incident}/{what}", t.team);
        t.viewer.1.post(&on("acknowledge"), &json!({})).await.err(StatusCode::FORBIDDEN, "forbidden");
        let acked = m.post(&on("acknowledge"), &json!({})).await.ok(StatusCode::OK);
        assert_eq!(acked["state"], "acknowledged");
        m.post(&on("acknowledge"), &json!({})).await.err(StatusCode::CONFLICT, "conflict");
        m.put(&base, &json!({"versions": [{"version": 1, "weight": 100}], "batching": {"max_batch_size": 64}})).await.ok(StatusCode::OK);
        m.post(&format!("{base}/rollback"), &json!({})).await.ok(StatusCode::OK);
        m.post(&on("notes"), &json!({"text": "a client sent rows of 2 features; told them"})).await.ok(StatusCode::OK);
        assert_eq!(m.post(&on("notes"), &json!({"text": " "})).await.err(StatusCode::BAD_REQUEST, "invalid_field")["field"], "text");
        let done = m.post(&on("resolve"), &json!({})).await.ok(StatusCode::OK);
        assert_eq!(done["state"], "resolved");
        let kinds: Vec<&str> = done["timeline"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
        // (The first deploy shows too: it happened at the wall clock, after the test's alert
        // clock, an hour behind, opened the incident.)
        assert_eq!(kinds, ["alert.firing", "alert.resolved", "deploy", "acknowledged", "deploy", "rollback", "note", "resolved"], "{done}");
        let stats = m.get(&format!("/teams/{}/incidents/stats", t.team)).await.ok(StatusCode::OK);
        assert_eq!((stats["incidents"].as_u64(), stats["open"].as_u64()), (Some(1), Some(0)), "{stats}");
        let (mtta, mttr) = (stats["mtta_seconds"]["median"].as_f64().unwrap(), stats["mttr_seconds"]["median"].as_f64().unwrap());
        assert!(mtta > 50.0 * 60.0 && mtta < 2.0 * 3600.0 && mttr >= mtta, "{stats}");

        // A silence: the alert fires again, its state says so, and nobody is notified.
        let cli = Cli::new();
        cli.ok(&["login", "--url", &srv.url, "--key", m.key()]);
        let e = m.post(&format!("/teams/{}/silences", t.team), &json!({"ends_at": "2001-01-01T00:00:00Z", "comment": "x"})).await.err(StatusCode::BAD_REQUEST, "invalid_field");
        assert_eq!(e["field"], "ends_at");
        let e = m.post(&format!("/teams/{}/silences", t.team), &json!({"ends_at": "2999-01-01T00:00:00Z", "comment": "x", "rule": "nope"})).await.err(StatusCode::BAD_REQUEST, "invalid_field");
        assert_eq!(e["field"], "rule");
        t.viewer.1.post(&format!("/teams/{}/silences", t.team), &json!({"ends_at": "2999-01-01T00:00:00Z", "comment": "x"})).await.err(StatusCode::FORBIDDEN, "forbidden");
        cli.ok(&["alert", "silence", &t.team, "--model", "income", "--rule", "error_rate", "--for", "2h", "--comment", "known: bad client, fix deploying"]);
        assert!(cli.ok(&["alert", "silences", &t.team]).contains("known: bad client"));
        // (The silence ends 2 hours after the wall clock: the test's clock runs in the past.)
        let t1 = now_minute() - 30 * MINUTE_US;
        for k in 0..7i64 {
            m.post(&format!("{base}/predict"), &good).await.ok(StatusCode::OK);
            assert_eq!(m.post(&format!("{base}/predict"), &bad).await.status, StatusCode::BAD_REQUEST);
            srv.core.roll_up_health_at(t1 + k * MINUTE_US + 30_000_000).await.unwrap();
            srv.core.evaluate_alerts(t1 + (k + 1) * MINUTE_US).await.unwrap();
        }
        assert_eq!(alerts().await[0]["state"], "firing");
        // Silenced or not, a firing alert opens an incident (the first one is resolved).
        let incidents = m.get(&format!("/teams/{}/incidents", t.team)).await.ok(StatusCode::OK);
        assert_eq!(incidents.as_array().unwrap().len(), 2, "{incidents}");
        assert_eq!(incidents[0]["state"], "open");
        // Every event is consumed (a delivery queued for each that notifies): still two.
        assert!(srv.core.events_consumed("webhooks", Duration::from_secs(10)).await);
        let queued = m.get(&deliveries).await.ok(StatusCode::OK);
        assert_eq!(queued.as_array().map_or(0, Vec::len), 2, "a silenced alert notified: {queued}");

        // Another team sees none of it; the CLI lists it.
        let other = srv.team().await;
        other.maintainer.1.get(&format!("/teams/{}/alerts", t.team)).await.err(StatusCode::NOT_FOUND, "not_found");
        other.maintainer.1.get(&format!("/teams/{}/silences", t.team)).await.err(StatusCode::NOT_FOUND, "not_found");
        other.maintainer.1.get(&format!("/teams/{}/incidents/{incident}", t.team)).await.err(StatusCode::NOT_FOUND, "not_found");
        other.maintainer.1.post(&on("resolve"), &json!({})).await.err(StatusCode::NOT_FOUND, "not_found");
        assert!(cli.ok(&["incident", "show", &t.team, &incident]).contains("told them"));
        assert!(cli.ok(&["incident", "stats", &t.team]).contains("MTTA median"));
        let table = cli.ok(&["alert", "list", &t.team]);
        assert!(table.contains("error_rate") && table.contains("firing"), "{table}");
    }
}
