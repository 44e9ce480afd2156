//! The web dashboard: its files as served, and the page in a real browser. The browser half is
//! `ui/tests/dashboard.mjs` (playwright-core from npm driving Debian's chromium, both installed by
//! `scripts/test`), run against a server whose data this test makes through the API — 200
//! models, 30 days of health, real traffic, labels, a drifted feature, an incident, a promotion
//! waiting for review, statements — with the health, monitoring and alert clocks driven here.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::governance::eval_dir;
use crate::harness::{Backend, ServerOptions, TestServer, shared_server_tests, unique};

const MINUTE_US: i64 = 60_000_000;
const HOUR_US: i64 = 60 * MINUTE_US;

fn now_us() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as i64
}

fn ui_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ui")
}

shared_server_tests! {
    async fn the_dashboard_is_served_from_the_binary(srv: &TestServer) {
        let http = reqwest::Client::new();
        let get = |path: &str| http.get(format!("{}{path}", srv.url)).send();
        // `/ui` is the page; no key is needed for the files (the data needs one).
        let r = get("/ui").await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "redirected to /ui/");
        assert!(r.url().path().ends_with("/ui/"));
        let csp = r.headers()["content-security-policy"].to_str().unwrap().to_string();
        assert!(csp.contains("default-src 'self'") && csp.contains("connect-src 'self'"), "{csp}");
        let html = r.text().await.unwrap();
        assert!(html.contains("<script type=\"module\" src=\"app.js\">"), "{html}");
        // No address outside this server in any file.
        for file in ["app.js", "api.js", "charts.js", "pages/deployment.js", "style.css"] {
            let r = get(&format!("/ui/{file}")).await.unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{file}");
            let body = r.text().await.unwrap();
            assert!(!body.contains("http://") && !body.contains("https://"), "{file} names another host");
        }
        let js = get("/ui/vendor/uPlot.iife.min.js").await.unwrap();
        assert_eq!(js.headers()["content-type"], "text/javascript; charset=utf-8");
        let r = get("/ui/nope.js").await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["code"], "route_not_found", "{e}");
    }
}

/// What the browser script needs: the server, keys and the names this test made.
struct Scenario {
    url: String,
    admin: String,
    maintainer: String,
    viewer: String,
    reviewer: String,
    outsider: String,
    team: String,
    other_team: String,
    model: String,
    promotion: String,
}

/// Rows of the Adult test split in the model's feature order (age first).
fn adult_rows(n: usize) -> Vec<Vec<f64>> {
    let bytes = std::fs::read(eval_dir().join("adult_test.csv.gz")).unwrap();
    let format = plinth_core::data::FileFormat::detect(&bytes);
    use plinth_core::data::TableReader;
    let t = plinth_data::Tables.read(bytes, format).unwrap();
    let names =
        ["age", "education_num", "capital_gain", "capital_loss", "hours_per_week", "sex_male"];
    let cols: Vec<_> = names.iter().map(|f| &t.column(f).unwrap().data).collect();
    (0..n.min(t.rows)).map(|i| cols.iter().map(|c| c.number(i).unwrap()).collect()).collect()
}

async fn make_scenario(srv: &TestServer) -> Scenario {
    let admin = srv.admin();
    let t = srv.team().await;
    let (team, m) = (t.team.clone(), t.maintainer.1.clone());
    let other = srv.team().await;
    let reviewer = unique("reviewer");
    admin
        .post("/users", &json!({"name": reviewer, "platform_role": "reviewer"}))
        .await
        .ok(StatusCode::CREATED);
    let reviewer_key =
        admin.post("/keys", &json!({"principal": reviewer})).await.ok(StatusCode::CREATED);

    // 200 models, as a busy team has.
    for i in 0..199 {
        m.post(&format!("/teams/{team}/models"), &json!({"name": format!("model-{i:03}"), "task": "regression", "tags": {"batch": "load"}})).await.ok(StatusCode::CREATED);
    }
    // The one that serves: Adult income, evaluated with fairness, in production with its log.
    let model = "income";
    m.post(&format!("/teams/{team}/models"), &json!({"name": model, "task": "binary_classification", "description": "Income above 50K from census features"})).await.ok(StatusCode::CREATED);
    let card = json!({"card": {"intended_use": "Illustration of the dashboard", "limitations": "Census data from 1994", "risk_tier": "medium"}});
    for v in ["adult_v1.txt", "adult_v2.txt", "adult_v3.txt"] {
        m.upload(&team, model, v, std::fs::read(eval_dir().join(v)).unwrap(), Some(card.clone()))
            .await
            .ok(StatusCode::CREATED);
    }
    let upload = m
        .request(reqwest::Method::POST, &format!("/teams/{team}/datasets/adult/versions"))
        .body(std::fs::read(eval_dir().join("adult_test.csv.gz")).unwrap());
    m.send(upload).await.ok(StatusCode::CREATED);
    for version in [1, 3] {
        let job = m.post(&format!("/teams/{team}/models/{model}/evaluations"), &json!({"version": version, "dataset": {"name": "adult"}, "label": "income_gt_50k", "sensitive": ["sex"]})).await.ok(StatusCode::ACCEPTED);
        let e = crate::governance::wait_evaluation(&m, job["id"].as_str().unwrap()).await;
        assert_eq!(e["status"], "succeeded", "{e}");
    }
    let base = format!("/deployments/{team}/{model}/production");
    m.put(&base, &json!({"versions": [{"version": 1, "weight": 100}], "keep_predictions": true}))
        .await
        .ok(StatusCode::OK);

    // 30 days of health, an hour a step: a request, then the rollup at that hour.
    let now = now_us();
    let rows = adult_rows(2000);
    for hour in (1..=30 * 24).rev() {
        m.post(
            &format!("{base}/predict"),
            &json!({"rows": &rows[(hour % 40) * 50..(hour % 40) * 50 + 5]}),
        )
        .await
        .ok(StatusCode::OK);
        srv.core.roll_up_health_at(now - hour as i64 * HOUR_US).await.unwrap();
    }
    // Today's traffic, twenty years older than the reference: `age` drifts. Half is labelled.
    let mut keys = Vec::new();
    for chunk in rows.chunks(250) {
        let shifted: Vec<Vec<f64>> = chunk
            .iter()
            .map(|r| {
                let mut r = r.clone();
                r[0] += 20.0;
                r
            })
            .collect();
        let a =
            m.post(&format!("{base}/predict"), &json!({"rows": shifted})).await.ok(StatusCode::OK);
        keys.push(a["request_id"].as_str().unwrap().to_string());
    }
    let now = now_us();
    srv.core.flush_monitoring_at(now).await.unwrap();
    let labels: Vec<Value> = keys
        .iter()
        .step_by(2)
        .flat_map(|k| {
            (0..250).map(
                move |row| json!({"request_id": k, "row": row, "label": (row % 4 == 0) as u32}),
            )
        })
        .collect();
    m.post(&format!("{base}/feedback"), &json!({"labels": labels})).await.ok(StatusCode::OK);
    // An alert on age's drift, firing at once: it opens an incident.
    let rules = json!({"rules": [{"name": "age_drift", "series": "feature_drift", "feature": "age", "threshold": 0.1, "window_seconds": 3600, "for_seconds": 0, "severity": "critical"}]});
    m.put(&format!("{base}/monitoring"), &rules).await.ok(StatusCode::OK);
    srv.core.roll_up_health_at(now).await.unwrap();
    srv.core.evaluate_alerts(now).await.unwrap();
    srv.core.evaluate_alerts(now + MINUTE_US).await.unwrap();
    let incidents = m.get(&format!("/teams/{team}/incidents")).await.ok(StatusCode::OK);
    assert_eq!(incidents.as_array().unwrap().len(), 1, "{incidents}");

    // Last month's statement closes; this month's is open.
    srv.core.close_months_at(now).await.unwrap();

    // Production is gated from here: v3's promotion waits for a reviewer.
    m.put(
        &format!("/teams/{team}/policies/production"),
        &json!({"gated": true, "reviewers": {"low": 1, "medium": 1, "high": 1}}),
    )
    .await
    .ok(StatusCode::OK);
    let p = m.post(&format!("/teams/{team}/models/{model}/promotions"), &json!({"version": 3, "environment": "production", "note": "retrained on fresher data"})).await.ok(StatusCode::CREATED);
    assert_eq!(p["status"], "pending_review", "{p}");
    // Ungated again for the canary part of the script (the promotion stays pending).
    m.put(&format!("/teams/{team}/policies/production"), &json!({"gated": false}))
        .await
        .ok(StatusCode::OK);

    Scenario {
        url: srv.url.clone(),
        admin: srv.admin().key().to_string(),
        maintainer: m.key().to_string(),
        viewer: t.viewer.1.key().to_string(),
        reviewer: reviewer_key["secret"].as_str().unwrap().to_string(),
        outsider: other.maintainer.1.key().to_string(),
        team,
        other_team: other.team,
        model: model.to_string(),
        promotion: p["id"].as_str().unwrap().to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_works_in_a_real_browser() {
    let node_modules = ui_dir().join("node_modules/playwright-core");
    assert!(
        node_modules.exists(),
        "{} is missing: run the suite with scripts/test, which runs `npm ci` in ui/",
        node_modules.display()
    );
    let chromium =
        std::env::var("PLINTH_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: scripts/services.sh installs Debian's chromium"
    );

    let srv = TestServer::start(ServerOptions {
        figures_every: Duration::from_secs(86_400),
        ..ServerOptions::new(Backend::Sqlite)
    })
    .await;
    let s = make_scenario(&srv).await;
    let artifacts =
        PathBuf::from(std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into()))
            .join("ui-test-artifacts");
    let config = json!({
        "url": s.url, "chromium": chromium, "artifacts": artifacts,
        "keys": {"admin": s.admin, "maintainer": s.maintainer, "viewer": s.viewer, "reviewer": s.reviewer, "outsider": s.outsider},
        "team": s.team, "other_team": s.other_team, "model": s.model, "promotion": s.promotion,
    });
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .arg(ui_dir().join("tests/dashboard.mjs"))
            .env("PLINTH_UI_TEST", config.to_string())
            .output()
            .expect("node (Node.js) runs the browser tests")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "the browser tests failed (screenshots in {}):\n{stdout}\n{stderr}",
        artifacts.display()
    );

    // What the browser did, seen through the API.
    let m = srv.admin();
    let base = format!("/deployments/{}/{}/production", s.team, s.model);
    let d = m.get(&base).await.ok(StatusCode::OK);
    assert_eq!(
        d["spec"]["versions"],
        json!([{"version": 3, "weight": 100}]),
        "the approved promotion serves: {d}"
    );
    let p = m.get(&format!("/promotions/{}", s.promotion)).await.ok(StatusCode::OK);
    assert_eq!(p["reviews"][0]["comment"], "fair and accurate enough", "{p}");
    let incidents = m.get(&format!("/teams/{}/incidents", s.team)).await.ok(StatusCode::OK);
    assert_eq!(incidents[0]["state"], "resolved", "{incidents}");

    // Every page shows its content, and has every section in, within a second.
    let timings: Value = stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("TIMINGS "))
        .map(|l| serde_json::from_str(l).unwrap())
        .expect("timings");
    assert!(timings.as_object().unwrap().len() >= 7, "{timings}");
    for (page, t) in timings.as_object().unwrap() {
        for what in ["ready", "settled"] {
            assert!(t[what].as_f64().unwrap() < 1000.0, "{page}: {what} after {} ms", t[what]);
        }
    }
}
