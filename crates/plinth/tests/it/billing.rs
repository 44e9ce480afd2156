//! Cost allocation end to end: predictions metered off the request's path and flushed with
//! the health rollups (the test drives them), statements priced by the plan (the free
//! allowance's last unit exact), a month closed that never changes, metering that survives a
//! restart and adds up over replicas; quotas answered with 429 and the rate-limit headers,
//! their overshoot across two replicas within the stated bound; budget alerts through
//! webhooks; the platform report from a scripted history; and each team seeing only its own.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::cli::Cli;
use crate::harness::{Api, ServerOptions, TeamFixture, TestServer, backend_tests, wait_for};

fn now_us() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as i64
}

fn micros(v: &Value) -> i64 {
    let t = OffsetDateTime::parse(v.as_str().expect("a time"), &Rfc3339).expect("RFC 3339");
    (t.unix_timestamp_nanos() / 1000) as i64
}

/// A server whose figures the test rolls up itself.
async fn server(backend: crate::harness::Backend) -> TestServer {
    TestServer::start(ServerOptions {
        figures_every: Duration::from_secs(86_400),
        ..ServerOptions::new(backend)
    })
    .await
}

/// A team with model `income` (LightGBM, six features) at version 1 in production.
async fn deployed(srv: &TestServer) -> TeamFixture {
    let t = srv.team().await;
    let m = &t.maintainer.1;
    m.post(
        &format!("/teams/{}/models", t.team),
        &json!({"name": "income", "task": "binary_classification"}),
    )
    .await
    .ok(StatusCode::CREATED);
    m.upload_fixture(&t.team, "income", "lightgbm_binary.txt").await.ok(StatusCode::CREATED);
    m.put(
        &format!("/deployments/{}/income/production", t.team),
        &json!({"versions": [{"version": 1, "weight": 100}]}),
    )
    .await
    .ok(StatusCode::OK);
    t
}

fn rows(n: usize) -> Value {
    json!({"rows": vec![json!([39.0, 13.0, 2174.0, 0.0, 40.0, 1.0]); n]})
}

async fn predict(api: &Api, team: &str, environment: &str, n: usize) -> crate::harness::Resp {
    api.post(&format!("/deployments/{team}/income/{environment}/predict"), &rows(n)).await
}

/// Predicts `n` rows in requests of at most 10,000.
async fn predict_many(api: &Api, team: &str, mut n: usize) {
    while n > 0 {
        let k = n.min(10_000);
        predict(api, team, "production", k).await.ok(StatusCode::OK);
        n -= k;
    }
}

fn statement_total_of_lines(s: &Value) -> f64 {
    s["lines"].as_array().unwrap().iter().map(|l| l["amount_usd"].as_f64().unwrap()).sum()
}

backend_tests! {
    async fn metering_prices_a_month_and_a_closed_statement_never_changes(backend: Backend) {
        let srv = server(backend).await;
        let t = deployed(&srv).await;
        let (team, m, v) = (t.team.clone(), &t.maintainer.1, &t.viewer.1);
        m.put(&format!("/deployments/{team}/income/staging"), &json!({"versions": [{"version": 1, "weight": 100}]}))
            .await
            .ok(StatusCode::OK);
        for _ in 0..3 {
            predict(m, &team, "production", 10).await.ok(StatusCode::OK);
        }
        for _ in 0..2 {
            predict(m, &team, "staging", 5).await.ok(StatusCode::OK);
        }
        // A refused request is no prediction.
        m.post(&format!("/deployments/{team}/income/production/predict"), &json!({"rows": [[1.0]]}))
            .await
            .err(StatusCode::BAD_REQUEST, "invalid_field");
        // Version 2 serves 4 rows and leaves again before the figures are rolled up: its
        // predictions are still metered.
        m.upload_fixture(&team, "income", "lightgbm_binary.onnx").await.ok(StatusCode::CREATED);
        let prod = format!("/deployments/{team}/income/production");
        m.put(&prod, &json!({"versions": [{"version": 2, "weight": 100}]})).await.ok(StatusCode::OK);
        predict(m, &team, "production", 4).await.ok(StatusCode::OK);
        m.put(&prod, &json!({"versions": [{"version": 1, "weight": 100}]})).await.ok(StatusCode::OK);
        let t0 = now_us();
        srv.core.roll_up_health_at(t0).await.unwrap();
        // Loaded models hold memory between rollups.
        srv.core.roll_up_health_at(t0 + 60_000_000).await.unwrap();
        srv.core.meter_storage_at(t0).await.unwrap();

        let u = v.get(&format!("/teams/{team}/usage")).await.ok(StatusCode::OK);
        assert_eq!(u["totals"]["predictions"], 44, "{u}");
        assert_eq!(u["totals"]["requests"], 6, "{u}");
        assert!(u["totals"]["serving_cpu_seconds"].as_f64().unwrap() > 0.0, "{u}");
        assert!(u["totals"]["memory_gb_hours"].as_f64().unwrap() > 0.0, "{u}");
        let items = u["items"].as_array().unwrap();
        let prod = items.iter().find(|i| i["item"] == "predictions" && i["subject"] == "production").unwrap();
        assert_eq!((prod["requests"].as_u64(), prod["predictions"].as_u64(), prod["version"].as_u64()), (Some(3), Some(30), Some(1)));
        let v2 = items.iter().find(|i| i["item"] == "predictions" && i["version"] == 2).unwrap();
        assert_eq!(v2["predictions"], 4, "{u}");
        let artifact = items.iter().find(|i| i["item"] == "artifacts").unwrap();
        // Both versions' artifacts, for an hour.
        let size: f64 = m.get(&format!("/teams/{team}/models/income/versions/1")).await.ok(StatusCode::OK)["artifact"]["size_bytes"].as_f64().unwrap()
            + m.get(&format!("/teams/{team}/models/income/versions/2")).await.ok(StatusCode::OK)["artifact"]["size_bytes"].as_f64().unwrap();
        // An hour of the artifact's bytes.
        assert!((artifact["gb_hours"].as_f64().unwrap() - size / 1e9).abs() < 1e-12, "{artifact} vs {size}");

        // This month's statement: within the free allowance, compute and storage priced.
        let month = crate::billing::this_month();
        let s = v.get(&format!("/teams/{team}/statements/{month}")).await.ok(StatusCode::OK);
        assert_eq!(s["status"], "open");
        assert_eq!(s["plan"]["name"], "standard");
        assert_eq!((s["predictions"]["predictions"].as_u64(), s["predictions"]["free"].as_u64(), s["predictions"]["billed"].as_u64()), (Some(44), Some(44), Some(0)));
        let total = s["total_usd"].as_f64().unwrap();
        assert!((statement_total_of_lines(&s) - total).abs() < 1e-9, "{s}");
        let items: Vec<&str> = s["lines"].as_array().unwrap().iter().map(|l| l["item"].as_str().unwrap()).collect();
        for want in ["predictions", "serving_compute", "serving_memory", "storage_artifacts"] {
            assert!(items.contains(&want), "{want} missing: {items:?}");
        }
        let model = &s["models"][0];
        assert_eq!((model["model"].as_str(), model["predictions"].as_u64()), (Some("income"), Some(44)));
        let per_1000 = model["cost_per_1000_predictions_usd"].as_f64().unwrap();
        assert!((per_1000 - model["amount_usd"].as_f64().unwrap() * 1000.0 / 44.0).abs() < 1e-12);
        // The same statement as CSV: a row per line and the total.
        let csv = v.get(&format!("/teams/{team}/statements/{month}?format=csv")).await;
        assert_eq!(csv.headers.get("content-type").unwrap(), "text/csv; charset=utf-8");
        let text = csv.ok(StatusCode::OK).as_str().unwrap().to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("month,team,plan,status,item"), "{text}");
        assert_eq!(lines.len(), s["lines"].as_array().unwrap().len() + 2, "{text}");
        let csv_total: f64 = lines.last().unwrap().rsplit(',').next().unwrap().parse().unwrap();
        assert!((csv_total - total).abs() < 1e-6, "{text}");
        v.get(&format!("/teams/{team}/statements/{month}?format=xml")).await.err(StatusCode::BAD_REQUEST, "invalid_field");
        v.get(&format!("/teams/{team}/statements/2026-13")).await.err(StatusCode::BAD_REQUEST, "invalid_field");

        // Metering survives a restart: the flushed figures stay, and new ones add to them.
        let (tmp, data_dir, database_url) = srv.stop().await;
        let srv = TestServer::start(ServerOptions { data_dir: Some(data_dir), database_url, figures_every: Duration::from_secs(86_400), ..ServerOptions::new(backend) }).await;
        let _tmp = tmp;
        let (m, v) = (Api::new(&srv.url, m.key()), Api::new(&srv.url, v.key()));
        let u = v.get(&format!("/teams/{team}/usage")).await.ok(StatusCode::OK);
        assert_eq!(u["totals"]["predictions"], 44, "{u}");
        predict(&m, &team, "production", 7).await.ok(StatusCode::OK);
        srv.core.roll_up_health_at(now_us()).await.unwrap();
        let u = v.get(&format!("/teams/{team}/usage")).await.ok(StatusCode::OK);
        assert_eq!(u["totals"]["predictions"], 51, "{u}");

        // The month closes (the task, driven to the next month's first hour) and never
        // changes after, whatever is metered late.
        let next = month_start_after(now_us());
        let closed = srv.core.close_months_at(next + 3_600_000_000).await.unwrap();
        assert!(closed >= 1);
        let s = v.get(&format!("/teams/{team}/statements/{month}")).await.ok(StatusCode::OK);
        assert_eq!(s["status"], "closed");
        assert_eq!(s["predictions"]["predictions"], 51);
        predict(&m, &team, "production", 3).await.ok(StatusCode::OK);
        srv.core.roll_up_health_at(now_us()).await.unwrap();
        assert_eq!(srv.core.close_months_at(next + 7_200_000_000).await.unwrap(), 0, "closed once");
        let again = v.get(&format!("/teams/{team}/statements/{month}")).await.ok(StatusCode::OK);
        assert_eq!(again, s, "a closed statement changed");
        assert_eq!(v.get(&format!("/teams/{team}/usage")).await.ok(StatusCode::OK)["totals"]["predictions"], 54);
        let list = v.get(&format!("/teams/{team}/statements")).await.ok(StatusCode::OK);
        assert!(list.as_array().unwrap().iter().any(|x| x["month"] == month.as_str() && x["status"] == "closed"), "{list}");
        // Finance's export holds every team's statement (admins only).
        v.get(&format!("/billing/statements?month={month}")).await.err(StatusCode::FORBIDDEN, "forbidden");
        let all = srv.admin().get(&format!("/billing/statements?month={month}")).await.ok(StatusCode::OK);
        assert!(all.as_array().unwrap().iter().any(|x| x["team"] == team.as_str()), "{all}");
    }

    async fn the_free_allowance_ends_exactly_at_its_last_prediction(backend: Backend) {
        let srv = server(backend).await;
        let t = deployed(&srv).await;
        let (team, m) = (t.team.clone(), &t.maintainer.1);
        let month = crate::billing::this_month();
        predict_many(m, &team, 100_000).await;
        srv.core.roll_up_health_at(now_us()).await.unwrap();
        let s = m.get(&format!("/teams/{team}/statements/{month}")).await.ok(StatusCode::OK);
        let p = &s["predictions"];
        assert_eq!((p["predictions"].as_u64(), p["free"].as_u64(), p["billed"].as_u64()), (Some(100_000), Some(100_000), Some(0)), "{p}");
        assert_eq!(p["amount_usd"], 0.0, "the 100,000th prediction is free");
        predict(m, &team, "production", 1).await.ok(StatusCode::OK);
        srv.core.roll_up_health_at(now_us()).await.unwrap();
        let s = m.get(&format!("/teams/{team}/statements/{month}")).await.ok(StatusCode::OK);
        let p = &s["predictions"];
        assert_eq!((p["predictions"].as_u64(), p["billed"].as_u64()), (Some(100_001), Some(1)), "{p}");
        // $10 per million: the 100,001st costs $0.00001.
        assert_eq!(p["amount_usd"], 0.00001, "the 100,001st prediction is billed: {p}");
        let line = s["lines"].as_array().unwrap().iter().find(|l| l["item"] == "predictions").unwrap();
        assert_eq!(line["amount_usd"], 0.00001);
    }

    async fn quotas_answer_429_with_the_rate_limit_headers(backend: Backend) {
        let srv = server(backend).await;
        let t = deployed(&srv).await;
        let (team, m, d) = (t.team.clone(), &t.maintainer.1, &t.developer.1);
        // Only admins set limits; a limit has a reason.
        m.put(&format!("/teams/{team}/billing/limits"), &json!({"quotas": {"predictions_per_month": 25}})).await.err(StatusCode::FORBIDDEN, "forbidden");
        let e = srv.admin().put(&format!("/teams/{team}/billing/limits"), &json!({"quotas": {"requests_per_second": 0}})).await.err(StatusCode::BAD_REQUEST, "invalid_field");
        assert_eq!(e["field"], "quotas.requests_per_second");
        let b = srv.admin().put(&format!("/teams/{team}/billing/limits"), &json!({"quotas": {"predictions_per_month": 25}})).await.ok(StatusCode::OK);
        assert_eq!(b["quotas"]["predictions_per_month"], 25);
        predict(d, &team, "production", 10).await.ok(StatusCode::OK);
        predict(d, &team, "production", 10).await.ok(StatusCode::OK);
        // 20 used: 10 more would pass 25.
        let r = predict(d, &team, "production", 10).await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);
        let body = r.body.clone();
        assert_eq!(body["error"]["code"], "quota_exceeded");
        assert_eq!(body["error"]["field"], "predictions_per_month");
        assert!(body["error"]["message"].as_str().unwrap().contains("predictions_per_month"), "{body}");
        let h = |name: &str| r.headers.get(name).unwrap_or_else(|| panic!("{name} missing")).to_str().unwrap().to_string();
        let retry: u64 = h("retry-after").parse().unwrap();
        assert!(retry > 0 && retry <= 31 * 86_400, "{retry}");
        assert!(h("ratelimit-policy").starts_with("\"monthly\";q=25;w="), "{}", h("ratelimit-policy"));
        assert_eq!(h("ratelimit"), format!("\"monthly\";r=5;t={retry}"));
        assert_eq!((h("x-ratelimit-limit"), h("x-ratelimit-remaining"), h("x-ratelimit-reset")), ("25".into(), "5".into(), retry.to_string()));
        // What is left fits; then nothing does, by any protocol.
        predict(d, &team, "production", 5).await.ok(StatusCode::OK);
        predict(d, &team, "production", 1).await.err(StatusCode::TOO_MANY_REQUESTS, "quota_exceeded");
        let oip = d
            .post(&format!("/v2/models/{team}.income/infer"), &json!({"inputs": [{"name": "input", "shape": [1, 6], "datatype": "FP32", "data": [39, 13, 2174, 0, 40, 1]}]}))
            .await;
        assert_eq!(oip.status, StatusCode::TOO_MANY_REQUESTS, "{}", oip.body);
        assert_eq!(oip.headers.get("x-ratelimit-remaining").unwrap(), "0");
        // The refusals were not billed.
        srv.core.roll_up_health_at(now_us()).await.unwrap();
        let u = m.get(&format!("/teams/{team}/usage")).await.ok(StatusCode::OK);
        assert_eq!(u["totals"]["predictions"], 25, "{u}");
        // A new month (the gate synced as of next month) lets calls through again...
        let next = month_start_after(now_us());
        srv.core.sync_quotas_at(next + 1).await.unwrap();
        predict(d, &team, "production", 10).await.ok(StatusCode::OK);
        srv.core.roll_up_health_at(now_us()).await.unwrap();
        srv.core.sync_quotas().await.unwrap();
        predict(d, &team, "production", 1).await.err(StatusCode::TOO_MANY_REQUESTS, "quota_exceeded");
        // ...and so does a raised quota, at once.
        srv.admin().put(&format!("/teams/{team}/billing/limits"), &json!({"quotas": {"predictions_per_month": 1000}})).await.ok(StatusCode::OK);
        predict(d, &team, "production", 10).await.ok(StatusCode::OK);

        // Requests per second: a token bucket; what passes within the burst and the time
        // elapsed is bounded, and the refusal says to retry in a second.
        srv.admin().put(&format!("/teams/{team}/billing/limits"), &json!({"quotas": {"requests_per_second": 2}})).await.ok(StatusCode::OK);
        let started = Instant::now();
        let mut passed = 0;
        let refused = loop {
            let r = predict(d, &team, "production", 1).await;
            if r.status == StatusCode::TOO_MANY_REQUESTS {
                break r;
            }
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
            passed += 1;
            assert!(passed < 1000, "the rate limit never refused");
        };
        let bound = 2.0 + 2.0 * started.elapsed().as_secs_f64() + 1.0;
        assert!((passed as f64) <= bound, "{passed} passed within {:?}", started.elapsed());
        assert_eq!(refused.headers.get("retry-after").unwrap(), "1");
        assert!(refused.headers.get("ratelimit-policy").unwrap().to_str().unwrap().starts_with("\"per-second\";q=2;w=1"));
        srv.admin().put(&format!("/teams/{team}/billing/limits"), &json!({})).await.ok(StatusCode::OK);
        predict(d, &team, "production", 1).await.ok(StatusCode::OK);

        // Storage: an upload that would pass the quota stores nothing.
        let stored = m.get(&format!("/teams/{team}/billing")).await.ok(StatusCode::OK)["storage_bytes"].as_u64().unwrap();
        assert!(stored > 0);
        srv.admin().put(&format!("/teams/{team}/billing/limits"), &json!({"quotas": {"storage_bytes": stored + 10}})).await.ok(StatusCode::OK);
        let r = m.upload_fixture(&team, "income", "lightgbm_binary.txt").await;
        assert_eq!(r.headers.get("x-ratelimit-remaining").unwrap(), "10");
        assert!(r.headers.get("retry-after").is_none(), "storage does not free itself");
        let e = r.err(StatusCode::TOO_MANY_REQUESTS, "quota_exceeded");
        assert_eq!(e["field"], "storage_bytes");
        let upload = m.request(reqwest::Method::POST, &format!("/teams/{team}/datasets/rows/versions")).body("a,b\n1,2\n3,4\n".repeat(10));
        m.send(upload).await.err(StatusCode::TOO_MANY_REQUESTS, "quota_exceeded");
        let versions = m.get(&format!("/teams/{team}/models/income/versions")).await.ok(StatusCode::OK);
        assert_eq!(versions["items"].as_array().unwrap().len(), 1, "the refused upload stored a version");
        m.get(&format!("/teams/{team}/datasets/rows/versions")).await.err(StatusCode::NOT_FOUND, "not_found");
    }

    async fn budget_alerts_reach_the_teams_webhooks_once_per_threshold(backend: Backend) {
        let srv = server(backend).await;
        let t = deployed(&srv).await;
        let (team, m) = (t.team.clone(), &t.maintainer.1);
        let (addr, seen) = crate::harness::webhook_receiver().await;
        m.post(&format!("/teams/{team}/webhooks"), &json!({"url": format!("http://{addr}/hook"), "events": ["billing.threshold"]}))
            .await
            .ok(StatusCode::CREATED);
        srv.admin().put(&format!("/teams/{team}/billing/limits"), &json!({"quotas": {"predictions_per_month": 100}, "budget_usd": 1000.0})).await.ok(StatusCode::OK);
        predict(m, &team, "production", 85).await.ok(StatusCode::OK);
        srv.core.roll_up_health_at(now_us()).await.unwrap();
        srv.core.check_budgets_at(now_us()).await.unwrap();
        predict(m, &team, "production", 15).await.ok(StatusCode::OK);
        srv.core.roll_up_health_at(now_us()).await.unwrap();
        srv.core.check_budgets_at(now_us()).await.unwrap();
        // Checked again: nothing new.
        assert_eq!(srv.core.check_budgets_at(now_us()).await.unwrap(), 0);
        let got = wait_for("two budget alerts", Duration::from_secs(20), async || {
            let s = seen.lock().unwrap().clone();
            (s.len() >= 2).then_some(s)
        })
        .await;
        let mut percents: Vec<u64> = got.iter().map(|e| e["data"]["percent"].as_u64().unwrap()).collect();
        percents.sort();
        assert_eq!(percents, [80, 100], "{got:?}");
        for e in &got {
            assert_eq!(e["event"], "billing.threshold");
            assert_eq!(e["data"]["limit"], "predictions_per_month");
            assert_eq!(e["data"]["team"], team.as_str());
        }
        // The budget ($1000) is far: no alert for it.
        assert!(got.iter().all(|e| e["data"]["limit"] != "budget_usd"));
    }

    async fn the_platform_report_measures_a_scripted_history(backend: Backend) {
        let srv = server(backend).await;
        let t = deployed(&srv).await;
        let (team, m, d) = (t.team.clone(), &t.maintainer.1, &t.developer.1);
        let base = format!("/deployments/{team}/income/production");
        predict(m, &team, "production", 10).await.ok(StatusCode::OK);
        let first_minute = now_us();
        srv.core.roll_up_health_at(first_minute).await.unwrap();
        // Version 2 goes to production, then is rolled back: a failed change.
        m.upload_fixture(&team, "income", "lightgbm_binary.onnx").await.ok(StatusCode::CREATED);
        m.put(&base, &json!({"versions": [{"version": 2, "weight": 100}]})).await.ok(StatusCode::OK);
        m.post(&format!("{base}/rollback"), &json!({})).await.ok(StatusCode::OK);
        // A traffic change is not a deployment.
        m.put(&base, &json!({"versions": [{"version": 1, "weight": 100}], "keep_predictions": true})).await.ok(StatusCode::OK);
        // The satisfaction survey: once a month a person.
        m.post("/survey", &json!({"score": 5, "comment": "fast"})).await.ok(StatusCode::NO_CONTENT);
        m.post("/survey", &json!({"score": 4})).await.err(StatusCode::CONFLICT, "conflict");
        d.post("/survey", &json!({"score": 2, "team": team})).await.ok(StatusCode::NO_CONTENT);
        d.post("/survey", &json!({"score": 9})).await.err(StatusCode::BAD_REQUEST, "invalid_field");

        // Hand-computed from what the API says happened.
        let versions = m.get(&format!("/teams/{team}/models/income/versions")).await.ok(StatusCode::OK);
        let registered: Vec<i64> = versions["items"].as_array().unwrap().iter().map(|v| micros(&v["created_at"])).collect();
        let (v1_at, v2_at) = (registered.iter().min().copied().unwrap(), registered.iter().max().copied().unwrap());
        let history = m.get(&format!("{base}/history")).await.ok(StatusCode::OK);
        let revs: Vec<(String, i64)> = history["items"].as_array().unwrap().iter().map(|r| (r["action"].as_str().unwrap().to_string(), micros(&r["at"]))).collect();
        let deploy_at: Vec<i64> = revs.iter().filter(|(a, _)| a == "deploy").map(|(_, at)| *at).collect();
        assert_eq!(deploy_at.len(), 3, "{history}");
        let mut first_deploys = deploy_at.clone();
        first_deploys.sort();
        let leads = [(first_deploys[0] - v1_at) as f64 / 3.6e9, (first_deploys[1] - v2_at) as f64 / 3.6e9];
        let launch_hours = ((first_minute.div_euclid(60_000_000) * 60_000_000) - v1_at).max(0) as f64 / 3.6e9;

        let r = m.get(&format!("/platform/report?team={team}")).await.ok(StatusCode::OK);
        assert_eq!(r["team"], team.as_str());
        let a = &r["adoption"];
        assert_eq!((a["teams_active"].as_u64(), a["teams_total"].as_u64(), a["models_registered"].as_u64(), a["models_deployed"].as_u64()), (Some(1), Some(1), Some(1), Some(1)), "{a}");
        assert_eq!(a["predictions_this_month"], 10);
        let dl = &r["delivery"];
        assert_eq!(dl["deployments"], 2, "{dl}");
        assert_eq!(dl["change_failure_rate"], 0.5, "{dl}");
        let median = dl["lead_time_hours"]["median"].as_f64().unwrap();
        assert!((median - (leads[0] + leads[1]) / 2.0).abs() < 1e-6, "{dl} vs {leads:?}");
        assert_eq!(dl["deployment_frequency"], "monthly");
        let q = &r["quality"];
        assert_eq!(q["availability"], 1.0, "{q}");
        assert_eq!(q["satisfaction"], 0.5, "{q}");
        assert_eq!(r["satisfaction"]["by_team"][&team]["answers"], 2);
        let launch = r["business"]["time_to_launch_hours"]["median"].as_f64().unwrap();
        assert!((launch - launch_hours).abs() < 1e-6, "{launch} vs {launch_hours}");
        assert!(r["business"]["cost_by_team"][&team].is_number());

        // The platform view needs a platform role; another team sees nothing of this one.
        m.get("/platform/report").await.err(StatusCode::FORBIDDEN, "forbidden");
        let all = srv.admin().get("/platform/report").await.ok(StatusCode::OK);
        assert!(all["adoption"]["teams_total"].as_u64().unwrap() >= 1);
        let other = srv.team().await;
        let o = &other.maintainer.1;
        o.get(&format!("/platform/report?team={team}")).await.err(StatusCode::NOT_FOUND, "not_found");
        for path in ["usage", "billing", "statements"] {
            o.get(&format!("/teams/{team}/{path}")).await.err(StatusCode::NOT_FOUND, "not_found");
        }
        o.put(&format!("/teams/{team}/billing/plan"), &json!({"plan": "free"})).await.err(StatusCode::FORBIDDEN, "forbidden");
        m.put(&format!("/teams/{team}/billing/plan"), &json!({"plan": "free"})).await.err(StatusCode::FORBIDDEN, "forbidden");
        srv.admin().put(&format!("/teams/{team}/billing/plan"), &json!({"plan": "gold"})).await.err(StatusCode::BAD_REQUEST, "invalid_field");
        // A plan change takes effect next month, audited.
        let b = srv.admin().put(&format!("/teams/{team}/billing/plan"), &json!({"plan": "enterprise"})).await.ok(StatusCode::OK);
        assert_eq!((b["plan"].as_str(), b["next_plan"].as_str()), (Some("standard"), Some("enterprise")));
        let audit = srv.admin().get(&format!("/audit?team={team}&action=team.plan_change")).await.ok(StatusCode::OK);
        assert_eq!(audit["items"].as_array().unwrap().len(), 1, "{audit}");

        // The CLI prints the dashboard's tree.
        let cli = Cli::new();
        cli.ok(&["login", "--url", &srv.url, "--key", m.key()]);
        let tree = cli.ok(&["platform", "report", "--team", &team]);
        for want in ["Adoption", "Quality", "Business", "Delivery (DORA)", "change failure rate", "50.00 %"] {
            assert!(tree.contains(want), "{want} missing:\n{tree}");
        }
        let csv = cli.ok(&["statement", "show", &team, "--csv"]);
        assert!(csv.starts_with("month,team,plan"), "{csv}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_add_up_and_overshoot_a_quota_within_the_stated_bound() {
    let url = crate::harness::fresh_postgres_database().await;
    let objects = crate::harness::fresh_bucket().await;
    let mut r: Vec<TestServer> = Vec::new();
    for _ in 0..2 {
        r.push(
            TestServer::start(ServerOptions {
                database_url: Some(url.clone()),
                objects: Some(objects.clone()),
                admin_key: r.first().map(|s| s.admin_key.clone()),
                figures_every: Duration::from_secs(86_400),
                ..ServerOptions::new(crate::harness::Backend::Postgres)
            })
            .await,
        );
    }
    let t = deployed(&r[0]).await;
    let team = t.team.clone();
    let on = |i: usize| Api::new(&r[i].url, t.developer.1.key());
    // The second replica serves the deployment the first one made.
    wait_for("the deployment on replica 2", Duration::from_secs(20), async || {
        (predict(&on(1), &team, "production", 1).await.status == StatusCode::OK).then_some(())
    })
    .await;
    // Metering adds up over replicas.
    predict(&on(0), &team, "production", 9).await.ok(StatusCode::OK);
    for s in &r {
        s.core.roll_up_health_at(now_us()).await.unwrap();
    }
    let u = on(0).get(&format!("/teams/{team}/usage")).await.ok(StatusCode::OK);
    assert_eq!(u["totals"]["predictions"], 10, "{u}");

    r[0].admin()
        .put(
            &format!("/teams/{team}/billing/limits"),
            &json!({"quotas": {"predictions_per_month": 100}}),
        )
        .await
        .ok(StatusCode::OK);
    // Replica 1 answers 50 more and flushes: 60 in the ledger.
    for _ in 0..5 {
        predict(&on(0), &team, "production", 10).await.ok(StatusCode::OK);
    }
    r[0].core.roll_up_health_at(now_us()).await.unwrap();
    for s in &r {
        s.core.sync_quotas().await.unwrap();
    }
    // Replica 2 sees the 60 and answers until the quota: 40, unflushed.
    let mut on_two = 0;
    while predict(&on(1), &team, "production", 10).await.status == StatusCode::OK {
        on_two += 10;
        assert!(on_two <= 100);
    }
    assert_eq!(on_two, 40);
    // Replica 1 has not seen them: it answers up to its own view of the quota. The overshoot
    // is what the other replica answered since its last flush (here 40), never more.
    let mut on_one = 0;
    while predict(&on(0), &team, "production", 10).await.status == StatusCode::OK {
        on_one += 10;
        assert!(on_one <= 100);
    }
    let unflushed_elsewhere = on_two;
    let total = 60 + on_two + on_one;
    assert!(total <= 100 + unflushed_elsewhere, "{total} answered for a quota of 100");
    assert!(total > 100, "this schedule overshoots by design: {total}");
    // Once both flush and sync, both refuse.
    for s in &r {
        s.core.roll_up_health_at(now_us()).await.unwrap();
    }
    for s in &r {
        s.core.sync_quotas().await.unwrap();
    }
    for i in 0..2 {
        predict(&on(i), &team, "production", 1)
            .await
            .err(StatusCode::TOO_MANY_REQUESTS, "quota_exceeded");
    }
    let u = on(1).get(&format!("/teams/{team}/usage")).await.ok(StatusCode::OK);
    assert_eq!(u["totals"]["predictions"], total as u64, "{u}");
}

/// The month `now` falls in, as `YYYY-MM`.
pub fn this_month() -> String {
    let t = OffsetDateTime::now_utc();
    format!("{:04}-{:02}", t.year(), t.month() as u8)
}

/// The first microsecond of the month after the one `now` falls in.
fn month_start_after(now: i64) -> i64 {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(now) * 1000).unwrap();
    let (y, m) =
        if t.month() as u8 == 12 { (t.year() + 1, 1) } else { (t.year(), t.month() as u8 + 1) };
    let d = time::Date::from_calendar_date(y, time::Month::try_from(m).unwrap(), 1).unwrap();
    (OffsetDateTime::new_utc(d, time::Time::MIDNIGHT).unix_timestamp_nanos() / 1000) as i64
}
