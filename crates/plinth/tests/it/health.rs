//! A deployment's health over time: the per-minute rollups its replicas write, read back by
//! range and step through the API and `plinth metrics`, with the clock driven by the test.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::cli::Cli;
use crate::harness::{ServerOptions, TestServer, backend_tests};

const MINUTE_US: i64 = 60_000_000;

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
    }
}
