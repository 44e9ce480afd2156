//! Monitoring end to end on the Adult data: a model in production predicts the test split, its
//! labels come later in shuffled order and give the evaluation's own figures back; a feature
//! shifted in the traffic drifts, its alert fires after its `for`, opens an incident and
//! reaches an Alertmanager receiver; restored traffic resolves it; wrong labels fire the SLA's
//! accuracy rule, which joins the open incident. The SLA's rules bend to a team's settings
//! unless the policy requires them, and the freshness rule follows the views a model reads.
//! The alert clock and the capture's flushes are driven by the test.

use std::time::Duration;

use plinth_core::data::{FileFormat, TableReader};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::cli::Cli;
use crate::governance::{eval_dir, wait_evaluation};
use crate::harness::{ServerOptions, TestServer, backend_tests, wait_for};

const MINUTE_US: i64 = 60_000_000;
const FEATURES: [&str; 6] =
    ["age", "education_num", "capital_gain", "capital_loss", "hours_per_week", "sex_male"];

fn now_us() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as i64
}

/// The Adult test split: each row's features in the model's order, and its label.
fn adult() -> (Vec<Vec<f64>>, Vec<u32>) {
    let bytes = bytes_head();
    let format = FileFormat::detect(&bytes);
    let t = plinth_data::Tables.read(bytes, format).unwrap();
    let cols: Vec<_> = FEATURES.iter().map(|f| &t.column(f).unwrap().data).collect();
    let label = &t.column("income_gt_50k").unwrap().data;
    let rows = (0..t.rows).map(|i| cols.iter().map(|c| c.number(i).unwrap()).collect()).collect();
    let labels = (0..t.rows).map(|i| label.number(i).unwrap() as u32).collect();
    (rows, labels)
}

fn bytes_head() -> Vec<u8> {
    std::fs::read(eval_dir().join("adult_test.csv.gz")).unwrap()
}

/// A fixed shuffle (no randomness in tests): a multiplicative step through the indices.
fn shuffled(n: usize) -> Vec<usize> {
    let step = (1..n).rev().find(|s| gcd(*s, n) == 1 && *s < n * 2 / 3).unwrap_or(1);
    (0..n).map(|i| (i * step) % n).collect()
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

backend_tests! {
    async fn labels_give_the_evaluation_back_and_drift_alerts_open_and_resolve_incidents(backend: Backend) {
        let tasks = plinth_core::tasks::TaskOptions {
            queues: vec![("default".into(), 2), ("webhooks".into(), 2)],
            ..plinth_core::tasks::TaskOptions::default()
        };
        let srv = TestServer::start(ServerOptions { figures_every: Duration::from_secs(86_400), tasks, ..ServerOptions::new(backend) }).await;
        // An Alertmanager receiver.
        let (addr, seen) = crate::harness::webhook_receiver().await;

        let t = srv.team().await;
        let (team, m) = (t.team.clone(), &t.maintainer.1);
        m.post(&format!("/teams/{team}/webhooks"), &json!({"url": format!("http://{addr}/am"), "format": "alertmanager"})).await.ok(StatusCode::CREATED);
        m.post(&format!("/teams/{team}/models"), &json!({"name": "income", "task": "binary_classification"})).await.ok(StatusCode::CREATED);
        m.upload(&team, "income", "adult_v1.txt", std::fs::read(eval_dir().join("adult_v1.txt")).unwrap(), None).await.ok(StatusCode::CREATED);
        let upload = m.request(reqwest::Method::POST, &format!("/teams/{team}/datasets/adult/versions")).body(bytes_head());
        m.send(upload).await.ok(StatusCode::CREATED);
        let job = m.post(&format!("/teams/{team}/models/income/evaluations"), &json!({"version": 1, "dataset": {"name": "adult"}, "label": "income_gt_50k"})).await.ok(StatusCode::ACCEPTED);
        let evaluation = wait_evaluation(m, job["id"].as_str().unwrap()).await;
        assert_eq!(evaluation["status"], "succeeded", "{evaluation}");
        let base = format!("/deployments/{team}/income/production");
        // Kept for labels (off by default).
        m.put(&base, &json!({"versions": [{"version": 1, "weight": 100}], "keep_predictions": true})).await.ok(StatusCode::OK);

        // The test split, predicted in requests of 500 rows; even requests name their rows.
        let (rows, labels) = adult();
        let n = rows.len();
        let mut keys: Vec<Value> = vec![Value::Null; n];
        for (r, chunk) in rows.chunks(500).enumerate() {
            let start = r * 500;
            let mut body = json!({"rows": chunk});
            if r % 2 == 0 {
                body["ids"] = json!((start..start + chunk.len()).map(|i| format!("row-{i}")).collect::<Vec<_>>());
            }
            let answer = m.post(&format!("{base}/predict"), &body).await.ok(StatusCode::OK);
            let request_id = answer["request_id"].as_str().unwrap();
            for i in 0..chunk.len() {
                keys[start + i] = if r % 2 == 0 {
                    json!({"prediction_id": format!("row-{}", start + i)})
                } else {
                    json!({"request_id": request_id, "row": i})
                };
            }
        }
        // Ids that do not fit the rows are refused, and nothing is predicted or kept.
        let e = m.post(&format!("{base}/predict"), &json!({"rows": &rows[..2], "ids": ["only-one"]})).await.err(StatusCode::BAD_REQUEST, "invalid_field");
        assert_eq!(e["field"], "ids");
        let e = m.post(&format!("{base}/predict"), &json!({"rows": &rows[..1], "ids": [""]})).await.err(StatusCode::BAD_REQUEST, "invalid_field");
        assert_eq!(e["field"], "ids[0]");
        let e = m.get(&format!("{base}/performance?since=2030-01-01T00:00:00Z&until=2029-01-01T00:00:00Z")).await.err(StatusCode::BAD_REQUEST, "invalid_field");
        assert_eq!(e["field"], "since");
        let t0 = now_us();
        srv.core.flush_monitoring_at(t0).await.unwrap();

        // Labels before any: coverage 0, CBPE's estimate, nothing realized.
        let perf = || {
            let (m, base) = (m.clone(), base.clone());
            async move { m.get(&format!("{base}/performance")).await.ok(StatusCode::OK) }
        };
        let p = perf().await;
        let v = &p["versions"][0];
        assert_eq!((v["predictions"].as_u64(), v["labelled"].as_u64()), (Some(n as u64), Some(0)), "{p}");
        assert_eq!(v["metrics"], json!({}));
        let estimated = v["estimated"]["metrics"]["accuracy"].as_f64().unwrap();
        let accuracy = evaluation["result"]["metrics"]["accuracy"].as_f64().unwrap();
        assert!((estimated - accuracy).abs() < 0.03, "CBPE {estimated} vs evaluation {accuracy}");
        assert!(v["estimated"]["assumptions"].as_str().unwrap().contains("calibrated"));

        // Bad feedback is refused whole and changes nothing.
        let feedback = format!("{base}/feedback");
        let mut first = keys[0].clone();
        first["label"] = json!(1);
        let e = m.post(&feedback, &json!({"labels": [first.clone(), {"prediction_id": "nope", "label": 1}]})).await.err(StatusCode::BAD_REQUEST, "invalid_field");
        assert_eq!(e["field"], "labels[1].prediction_id");
        let e = m.post(&feedback, &json!({"labels": [{"request_id": "nope", "row": 3, "label": 0}]})).await.err(StatusCode::BAD_REQUEST, "invalid_field");
        assert_eq!(e["field"], "labels[0].request_id");
        let mut wrong = keys[1].clone();
        wrong["label"] = json!(2);
        let e = m.post(&feedback, &json!({"labels": [wrong]})).await.err(StatusCode::BAD_REQUEST, "invalid_field");
        assert_eq!(e["field"], "labels[0].label");
        assert!(e["message"].as_str().unwrap().contains("class index"), "{e}");
        let e = m.post(&feedback, &json!({"labels": vec![first.clone(); 10_001]})).await.err(StatusCode::BAD_REQUEST, "invalid_field");
        assert_eq!(e["field"], "labels");
        t.viewer.1.post(&feedback, &json!({"labels": [first.clone()]})).await.err(StatusCode::FORBIDDEN, "forbidden");
        assert_eq!(perf().await["versions"][0]["labelled"], 0);

        // The labels, later, shuffled, in bulks of 10,000 (booleans and class indices alike).
        let order = shuffled(n);
        let mut sent = 0;
        for chunk in order.chunks(10_000) {
            let labels: Vec<Value> = chunk
                .iter()
                .map(|&i| {
                    let mut k = keys[i].clone();
                    k["label"] = if i % 3 == 0 { json!(labels[i] == 1) } else { json!(labels[i]) };
                    k
                })
                .collect();
            let r = m.post(&feedback, &json!({ "labels": labels })).await.ok(StatusCode::OK);
            assert_eq!(r["added"].as_u64(), Some(chunk.len() as u64), "{r}");
            sent += chunk.len();
        }
        assert_eq!(sent, n);
        // The same label twice counts once; a changed one replaces it.
        let mut again = keys[order[0]].clone();
        again["label"] = json!(labels[order[0]]);
        let r = m.post(&feedback, &json!({"labels": [again.clone()]})).await.ok(StatusCode::OK);
        assert_eq!((r["added"].as_u64(), r["unchanged"].as_u64()), (Some(0), Some(1)), "{r}");
        again["label"] = json!(1 - labels[order[0]]);
        let r = m.post(&feedback, &json!({"labels": [again.clone()]})).await.ok(StatusCode::OK);
        assert_eq!(r["replaced"], 1, "{r}");
        again["label"] = json!(labels[order[0]]);
        m.post(&feedback, &json!({"labels": [again]})).await.ok(StatusCode::OK);

        // Live performance equals the evaluation's on the same rows, by the same code.
        let p = perf().await;
        let v = &p["versions"][0];
        assert_eq!((v["labelled"].as_u64(), v["label_coverage"].as_f64()), (Some(n as u64), Some(1.0)), "{p}");
        for metric in ["accuracy", "precision", "recall", "f1", "roc_auc", "log_loss"] {
            let live = v["metrics"][metric].as_f64().unwrap();
            let eval = evaluation["result"]["metrics"][metric].as_f64().unwrap();
            assert!((live - eval).abs() < 1e-12, "{metric}: live {live} vs evaluation {eval}");
            assert!(v["baseline"]["delta"][metric].as_f64().unwrap().abs() < 1e-12);
        }
        assert_eq!(v["baseline"]["dataset"], "adult@1");

        // Drift: a rule on the age feature, over an hour, firing after 5 minutes.
        let settings = json!({"rules": [{"name": "age_drift", "series": "feature_drift", "feature": "age", "threshold": 0.1, "window_seconds": 3600, "for_seconds": 300, "severity": "critical", "labels": {"service": "income-api"}}]});
        let e = t.developer.1.put(&format!("{base}/monitoring"), &settings).await.err(StatusCode::FORBIDDEN, "forbidden");
        assert!(e["message"].as_str().unwrap().contains("maintainer"), "{e}");
        let bad = json!({"rules": [{"name": "x", "series": "feature_drift", "threshold": 0.1}]});
        assert_eq!(m.put(&format!("{base}/monitoring"), &bad).await.err(StatusCode::BAD_REQUEST, "invalid_field")["field"], "rules[0].feature");
        let bad = json!({"rules": [{"name": "x", "series": "error_rate", "threshold": 0.1, "labels": {"severity": "low"}}]});
        assert_eq!(m.put(&format!("{base}/monitoring"), &bad).await.err(StatusCode::BAD_REQUEST, "invalid_field")["field"], "rules[0].labels.severity");
        let bad = json!({"drift": {"age": {"method": "magic"}}});
        assert_eq!(m.put(&format!("{base}/monitoring"), &bad).await.err(StatusCode::BAD_REQUEST, "invalid_field")["field"], "drift.age.method");
        m.put(&format!("{base}/monitoring"), &settings).await.ok(StatusCode::OK);
        // The served split is the baseline itself: nothing drifts.
        let d = m.get(&format!("{base}/drift")).await.ok(StatusCode::OK);
        let dv = &d["versions"][0];
        assert_eq!((dv["rows_current"].as_u64(), dv["rows_reference"].as_u64()), (Some(n as u64), Some(n as u64)), "{d}");
        assert_eq!(dv["drifted_columns"]["count"], 0, "{d}");
        assert_eq!(dv["columns"]["age"]["method"], "wasserstein");
        assert!(dv["columns"]["age"]["score"].as_f64().unwrap() < 1e-9, "{d}");
        assert!(dv["columns"].get("prediction").is_some(), "{d}");
        assert_eq!(dv["baseline"], "adult@1");
        srv.core.evaluate_alerts(t0 + MINUTE_US).await.unwrap();
        let alerts = || {
            let (m, team) = (m.clone(), team.clone());
            async move { m.get(&format!("/teams/{team}/alerts")).await.ok(StatusCode::OK) }
        };
        assert!(alerts().await.as_array().unwrap().iter().all(|a| a["rule"] != "age_drift"));

        // Two hours later, the traffic's ages are 20 years older.
        let t1 = t0 + 120 * MINUTE_US;
        for chunk in rows.chunks(500).take(6) {
            let shifted: Vec<Vec<f64>> = chunk.iter().map(|r| { let mut r = r.clone(); r[0] += 20.0; r }).collect();
            m.post(&format!("{base}/predict"), &json!({"rows": shifted})).await.ok(StatusCode::OK);
        }
        srv.core.flush_monitoring_at(t1).await.unwrap();
        srv.core.evaluate_alerts(t1 + MINUTE_US).await.unwrap();
        let age = |a: &Value| a.as_array().unwrap().iter().find(|a| a["rule"] == "age_drift").cloned();
        let now = alerts().await;
        assert_eq!(age(&now).expect("age_drift")["state"], "pending", "{now}");
        srv.core.evaluate_alerts(t1 + 4 * MINUTE_US).await.unwrap();
        assert_eq!(age(&alerts().await).unwrap()["state"], "pending");
        srv.core.evaluate_alerts(t1 + 7 * MINUTE_US).await.unwrap();
        let firing = age(&alerts().await).unwrap();
        assert_eq!(firing["state"], "firing", "{firing}");
        assert!(firing["value"].as_f64().unwrap() > 0.1, "{firing}");
        // Only age drifted (the prediction follows it, a little).
        let d = m.get(&format!("{base}/drift?since={}&until={}", rfc3339(t1 - MINUTE_US), rfc3339(t1 + 10 * MINUTE_US))).await.ok(StatusCode::OK);
        let dv = &d["versions"][0];
        assert_eq!(dv["rows_current"], 3000, "{d}");
        assert!(dv["columns"]["age"]["drifted"].as_bool().unwrap(), "{d}");
        for f in &FEATURES[1..] {
            assert!(!dv["columns"][f]["drifted"].as_bool().unwrap(), "{f}: {d}");
        }
        assert_eq!(dv["columns"]["age"]["bins"].as_array().unwrap().len(), dv["columns"]["age"]["current"].as_array().unwrap().len());
        // An incident opened.
        let incidents = m.get(&format!("/teams/{team}/incidents")).await.ok(StatusCode::OK);
        assert_eq!(incidents.as_array().unwrap().len(), 1, "{incidents}");
        assert_eq!(incidents[0]["state"], "open");
        assert!(incidents[0]["title"].as_str().unwrap().contains("age"), "{incidents}");
        // `/metrics` shows the alert and the drift score.
        let scrape = srv.admin().get("/metrics").await.body.as_str().unwrap_or_default().to_string();
        assert!(scrape.contains(&format!("plinth_alert_state{{deployment=\"{team}/income@production\",rule=\"age_drift\",state=\"firing\"}} 1")), "{scrape}");
        assert!(scrape.contains(&format!("plinth_drift_score{{deployment=\"{team}/income@production\",version=\"1\",column=\"age\",method=\"wasserstein\"}}")));

        // The traffic comes back: resolved.
        let t2 = t1 + 180 * MINUTE_US;
        for chunk in rows.chunks(500).take(6) {
            m.post(&format!("{base}/predict"), &json!({"rows": chunk})).await.ok(StatusCode::OK);
        }
        srv.core.flush_monitoring_at(t2).await.unwrap();
        srv.core.evaluate_alerts(t2 + MINUTE_US).await.unwrap();
        assert_eq!(age(&alerts().await).unwrap()["state"], "resolved");
        let incidents = m.get(&format!("/teams/{team}/incidents")).await.ok(StatusCode::OK);
        let kinds: Vec<String> = m.get(&format!("/teams/{team}/incidents/{}", incidents[0]["id"].as_str().unwrap())).await.ok(StatusCode::OK)["timeline"]
            .as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap().to_string()).collect();
        assert!(kinds.contains(&"alert.firing".to_string()) && kinds.contains(&"alert.resolved".to_string()), "{kinds:?}");

        // The receiver heard the firing and the resolve, in Alertmanager's shape.
        wait_for("the firing and the resolve", Duration::from_secs(20), async || (seen.lock().unwrap().len() >= 2).then_some(())).await;
        {
            // Deliveries run concurrently: in whatever order they arrived.
            let mut seen = seen.lock().unwrap().clone();
            seen.sort_by_key(|p| p["status"] == "resolved");
            assert_eq!(seen.len(), 2, "{seen:?}");
            assert_eq!((seen[0]["status"].as_str(), seen[1]["status"].as_str()), (Some("firing"), Some("resolved")));
            assert_eq!(seen[0]["alerts"][0]["labels"]["alertname"], "age_drift");
            assert_eq!(seen[0]["alerts"][0]["labels"]["severity"], "critical");
            assert_eq!(seen[0]["alerts"][0]["labels"]["service"], "income-api", "the rule's own label");
            assert_eq!(seen[0]["alerts"][0]["fingerprint"], seen[1]["alerts"][0]["fingerprint"]);
        }

        // Labels go wrong: every tenth one is flipped. The SLA's accuracy rule (2 points below
        // the evaluation over the last day's labelled predictions) is pending, then fires after
        // its 5 minutes; a coverage rule fires at once (the shifted traffic came unlabelled).
        // Both join the deployment's incident, still open: people resolve incidents.
        let mut with_coverage = settings.clone();
        with_coverage["rules"].as_array_mut().unwrap().push(json!({"name": "labels", "series": "label_coverage", "threshold": 0.9, "for_seconds": 0}));
        m.put(&format!("{base}/monitoring"), &with_coverage).await.ok(StatusCode::OK);
        let relabel = |flip: bool| -> Vec<Value> {
            (0..n).step_by(10).map(|i| { let mut k = keys[i].clone(); k["label"] = json!(if flip { 1 - labels[i] } else { labels[i] }); k }).collect()
        };
        let r = m.post(&feedback, &json!({"labels": relabel(true)})).await.ok(StatusCode::OK);
        assert_eq!(r["replaced"].as_u64(), Some(n.div_ceil(10) as u64), "{r}");
        let rule = |a: &Value, name: &str| a.as_array().unwrap().iter().find(|x| x["rule"] == name).cloned();
        let t3 = t2 + 10 * MINUTE_US;
        srv.core.evaluate_alerts(t3).await.unwrap();
        let now = alerts().await;
        let coverage = rule(&now, "labels").expect("the coverage rule");
        assert_eq!(coverage["state"], "firing", "{now}");
        let share = n as f64 / (n + 6000) as f64;
        assert!((coverage["value"].as_f64().unwrap() - share).abs() < 1e-9, "{n} labelled of {} predicted: {coverage}", n + 6000);
        let accuracy = rule(&now, "accuracy_drop").expect("the SLA's accuracy rule");
        assert_eq!(accuracy["state"], "pending", "{accuracy}");
        let live = m.get(&format!("{base}/performance")).await.ok(StatusCode::OK)["versions"][0]["metrics"]["accuracy"].as_f64().unwrap();
        let drop = evaluation["result"]["metrics"]["accuracy"].as_f64().unwrap() - live;
        assert!(drop > 0.02 && (accuracy["value"].as_f64().unwrap() - drop).abs() < 1e-12, "drop {drop}: {accuracy}");
        srv.core.evaluate_alerts(t3 + 6 * MINUTE_US).await.unwrap();
        assert_eq!(rule(&alerts().await, "accuracy_drop").unwrap()["state"], "firing");
        // The labels are put right: the accuracy alert resolves.
        m.post(&feedback, &json!({"labels": relabel(false)})).await.ok(StatusCode::OK);
        srv.core.evaluate_alerts(t3 + 7 * MINUTE_US).await.unwrap();
        assert_eq!(rule(&alerts().await, "accuracy_drop").unwrap()["state"], "resolved");
        let incidents = m.get(&format!("/teams/{team}/incidents")).await.ok(StatusCode::OK);
        assert_eq!(incidents.as_array().unwrap().len(), 1, "the later alerts joined the open incident: {incidents}");
        let incident = incidents[0]["id"].as_str().unwrap().to_string();
        let timeline = m.get(&format!("/teams/{team}/incidents/{incident}")).await.ok(StatusCode::OK)["timeline"].clone();
        let firings: Vec<&str> = timeline.as_array().unwrap().iter().filter(|e| e["kind"] == "alert.firing").map(|e| e["text"].as_str().unwrap()).collect();
        assert_eq!(firings.len(), 3, "{timeline}");
        assert!(firings[1].contains("have a label") && firings[2].contains("accuracy"), "{firings:?}");

        // The CLI: people work the incident.
        let cli = Cli::new();
        cli.ok(&["login", "--url", &srv.url, "--key", m.key()]);
        assert!(cli.ok(&["incident", "list", &team]).contains(&incident));
        cli.ok(&["incident", "ack", &team, &incident]);
        cli.ok(&["incident", "note", &team, &incident, "labels from the vendor were shifted; re-sent"]);
        cli.ok(&["incident", "resolve", &team, &incident]);
        let shown = cli.ok(&["incident", "show", &team, &incident]);
        assert!(shown.contains("re-sent") && shown.contains("resolved"), "{shown}");
        let e = cli.fails(&["incident", "resolve", &team, &incident], 1);
        assert!(e.contains("resolved"), "{e}");

        // A feature's test and threshold can be chosen for served traffic too.
        let mut psi = with_coverage.clone();
        psi["drift"] = json!({"age": {"method": "psi", "threshold": 0.05}});
        m.put(&format!("{base}/monitoring"), &psi).await.ok(StatusCode::OK);
        let d = m.get(&format!("{base}/drift?since={}&until={}", rfc3339(t1 - MINUTE_US), rfc3339(t1 + 10 * MINUTE_US))).await.ok(StatusCode::OK);
        let age = &d["versions"][0]["columns"]["age"];
        assert_eq!((age["method"].as_str(), age["threshold"].as_f64(), age["drifted"].as_bool()), (Some("psi"), Some(0.05), Some(true)), "{d}");

        // The CLI: labels from a CSV, performance, served drift, settings.
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("labels.csv");
        let req = keys.iter().find(|k| k.get("request_id").is_some()).unwrap();
        std::fs::write(&csv, format!("request_id,row,label\n{},{},1\n", req["request_id"].as_str().unwrap(), req["row"])).unwrap();
        let out = cli.ok(&["feedback", &format!("{team}/income"), "--file", csv.to_str().unwrap()]);
        assert!(out.contains("1 labels:"), "{out}");
        let out = cli.ok(&["performance", &format!("{team}/income")]);
        assert!(out.contains("accuracy") && out.contains("CBPE assumes"), "{out}");
        let out = cli.ok(&["drift", "--deployment", &format!("{team}/income"), "--since", "1d"]);
        assert!(out.contains("against adult@1"), "{out}");
        let file = dir.path().join("monitoring.json");
        std::fs::write(&file, serde_json::to_string(&settings).unwrap()).unwrap();
        cli.ok(&["monitoring", "set", &format!("{team}/income"), "--file", file.to_str().unwrap()]);
        let out = cli.ok(&["monitoring", "get", &format!("{team}/income")]);
        assert!(out.contains("age_drift") && !out.contains("label_coverage"), "the file's settings replaced the others: {out}");

        // Another team sees and touches none of it.
        let other = srv.team().await;
        let o = &other.maintainer.1;
        for path in ["performance", "drift", "monitoring"] {
            o.get(&format!("{base}/{path}")).await.err(StatusCode::NOT_FOUND, "not_found");
        }
        o.post(&feedback, &json!({"labels": [first]})).await.err(StatusCode::NOT_FOUND, "not_found");
        o.put(&format!("{base}/monitoring"), &json!({})).await.err(StatusCode::NOT_FOUND, "not_found");
    }

    async fn teams_tune_and_disable_the_sla_rules_unless_the_policy_requires_them(backend: Backend) {
        let srv = TestServer::start(ServerOptions { figures_every: Duration::from_secs(86_400), ..ServerOptions::new(backend) }).await;
        let t = srv.team().await;
        let (team, m) = (t.team.clone(), &t.maintainer.1);
        m.post(&format!("/teams/{team}/models"), &json!({"name": "income", "task": "binary_classification"})).await.ok(StatusCode::CREATED);
        m.upload_fixture(&team, "income", "lightgbm_binary.txt").await.ok(StatusCode::CREATED);
        let base = format!("/deployments/{team}/income/production");
        m.put(&base, &json!({"versions": [{"version": 1, "weight": 100}]})).await.ok(StatusCode::OK);
        let good = json!({"rows": [[39, 13, 2174, 0, 40, 1]]});
        let bad = json!({"rows": [[1, 2]]});
        // The error-rate rule tuned to 60 %: half the requests failing no longer fires it.
        m.put(&format!("{base}/monitoring"), &json!({"sla": {"error_rate": {"threshold": 0.6, "for_seconds": 0}}})).await.ok(StatusCode::OK);
        let t0 = 44_444_444 * MINUTE_US;
        m.post(&format!("{base}/predict"), &good).await.ok(StatusCode::OK);
        assert_eq!(m.post(&format!("{base}/predict"), &bad).await.status, StatusCode::BAD_REQUEST);
        srv.core.roll_up_health_at(t0 + 30_000_000).await.unwrap();
        srv.core.evaluate_alerts(t0 + MINUTE_US).await.unwrap();
        let alerts = m.get(&format!("/teams/{team}/alerts")).await.ok(StatusCode::OK);
        assert!(alerts.as_array().unwrap().iter().all(|a| a["rule"] != "error_rate"), "{alerts}");
        // At 40 % (with `for` 0) it fires at once.
        m.put(&format!("{base}/monitoring"), &json!({"sla": {"error_rate": {"threshold": 0.4, "for_seconds": 0}}})).await.ok(StatusCode::OK);
        srv.core.evaluate_alerts(t0 + MINUTE_US + 1).await.unwrap();
        let alerts = m.get(&format!("/teams/{team}/alerts")).await.ok(StatusCode::OK);
        assert_eq!(alerts[0]["state"], "firing", "{alerts}");
        assert_eq!(alerts[0]["threshold"], 0.4);
        // Disabled: the firing alert resolves.
        m.put(&format!("{base}/monitoring"), &json!({"sla": {"error_rate": {"disabled": true}}})).await.ok(StatusCode::OK);
        srv.core.evaluate_alerts(t0 + MINUTE_US + 2).await.unwrap();
        let alerts = m.get(&format!("/teams/{team}/alerts")).await.ok(StatusCode::OK);
        assert_eq!(alerts[0]["state"], "resolved", "{alerts}");
        let e = m.put(&format!("{base}/monitoring"), &json!({"sla": {"speed": {}}})).await.err(StatusCode::BAD_REQUEST, "invalid_field");
        assert_eq!(e["field"], "sla.speed");
        // The latency rule at a threshold every request passes (0.001 ms): it fires on traffic,
        // and resolves once the window has none.
        m.put(&format!("{base}/monitoring"), &json!({"sla": {"error_rate": {"disabled": true}, "latency_p99": {"threshold": 0.001, "for_seconds": 60}}})).await.ok(StatusCode::OK);
        let t1 = t0 + 10 * MINUTE_US;
        m.post(&format!("{base}/predict"), &good).await.ok(StatusCode::OK);
        srv.core.roll_up_health_at(t1 + 30_000_000).await.unwrap();
        let latency = async || {
            let alerts = m.get(&format!("/teams/{team}/alerts")).await.ok(StatusCode::OK);
            alerts.as_array().unwrap().iter().find(|a| a["rule"] == "latency_p99").map(|a| a["state"].as_str().unwrap().to_string())
        };
        srv.core.evaluate_alerts(t1 + MINUTE_US).await.unwrap();
        assert_eq!(latency().await.as_deref(), Some("pending"));
        srv.core.evaluate_alerts(t1 + 2 * MINUTE_US).await.unwrap();
        assert_eq!(latency().await.as_deref(), Some("firing"));
        srv.core.evaluate_alerts(t1 + 10 * MINUTE_US).await.unwrap();
        assert_eq!(latency().await.as_deref(), Some("resolved"));

        // A policy that requires the SLA's rules: no disabling, no loosening, monitoring on.
        m.put(&format!("/teams/{team}/policies/production"), &json!({"gated": false, "require_sla_alerts": true})).await.ok(StatusCode::OK);
        // Settings saved before the policy cannot keep a rule off: the error-rate rule, still
        // disabled in them, is evaluated again at the SLA's threshold.
        let t2 = t0 + 30 * MINUTE_US;
        m.post(&format!("{base}/predict"), &good).await.ok(StatusCode::OK);
        assert_eq!(m.post(&format!("{base}/predict"), &bad).await.status, StatusCode::BAD_REQUEST);
        srv.core.roll_up_health_at(t2 + 30_000_000).await.unwrap();
        srv.core.evaluate_alerts(t2 + MINUTE_US).await.unwrap();
        let alerts = m.get(&format!("/teams/{team}/alerts")).await.ok(StatusCode::OK);
        let error_rate = alerts.as_array().unwrap().iter().find(|a| a["rule"] == "error_rate").cloned().unwrap();
        assert_eq!((error_rate["state"].as_str(), error_rate["threshold"].as_f64()), (Some("pending"), Some(0.05)), "{alerts}");
        let e = m.put(&format!("{base}/monitoring"), &json!({"sla": {"error_rate": {"disabled": true}}})).await.err(StatusCode::BAD_REQUEST, "invalid_field");
        assert_eq!(e["field"], "sla.error_rate");
        assert!(e["message"].as_str().unwrap().contains("requires the SLA's alerts"), "{e}");
        m.put(&format!("{base}/monitoring"), &json!({"sla": {"error_rate": {"threshold": 0.5}}})).await.err(StatusCode::BAD_REQUEST, "invalid_field");
        m.put(&format!("{base}/monitoring"), &json!({"sla": {"error_rate": {"threshold": 0.01}}})).await.ok(StatusCode::OK);
        let e = m.put(&base, &json!({"versions": [{"version": 1, "weight": 100}], "monitor": false})).await.err(StatusCode::BAD_REQUEST, "invalid_field");
        assert_eq!(e["field"], "monitor");
        // Its predictions are not kept (the default): labels for them are refused, saying why.
        let answer = m.post(&format!("{base}/predict"), &good).await.ok(StatusCode::OK);
        srv.core.flush_monitoring_at(now_us()).await.unwrap();
        let e = m.post(&format!("{base}/feedback"), &json!({"labels": [{"request_id": answer["request_id"], "label": 1}]})).await.err(StatusCode::BAD_REQUEST, "invalid_field");
        assert_eq!(e["field"], "labels[0].request_id");
        assert!(e["message"].as_str().unwrap().contains("keep_predictions"), "{e}");
    }
}

fn rfc3339(micros: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000).unwrap();
    t.format(&time::format_description::well_known::Rfc3339).unwrap()
}

/// A model reading a feature view: its freshness SLA rule fires when the view's newest value
/// is older than the view's SLA (1 h by default), and resolves when a newer value is pushed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_freshness_rule_follows_the_newest_value_of_the_views_a_model_reads() {
    let tasks = plinth_core::tasks::TaskOptions {
        queues: vec![("default".into(), 2), ("webhooks".into(), 2)],
        ..plinth_core::tasks::TaskOptions::default()
    };
    let srv = TestServer::start(ServerOptions {
        figures_every: Duration::from_secs(86_400),
        tasks,
        ..ServerOptions::new(crate::harness::Backend::Sqlite)
    })
    .await;
    let t = srv.team().await;
    let (team, m) = (t.team.clone(), &t.maintainer.1);
    // Values of an hour and a half ago, by the test's clock.
    let t0 = now_us().div_euclid(MINUTE_US) * MINUTE_US;
    let old = rfc3339(t0 - 90 * MINUTE_US);
    let people = format!(
        "person_id,event_timestamp,age,education_num,capital_gain,capital_loss,hours_per_week\n1,{old},39,13,2174,0,40\n2,{old},50,13,0,0,13\n"
    );
    let upload = m
        .request(reqwest::Method::POST, &format!("/teams/{team}/datasets/people/versions"))
        .body(people);
    m.send(upload).await.ok(StatusCode::CREATED);
    m.post(
        &format!("/teams/{team}/entities"),
        &json!({"name": "person", "join_keys": [{"name": "person_id", "type": "int64"}]}),
    )
    .await
    .ok(StatusCode::CREATED);
    let names = ["age", "education_num", "capital_gain", "capital_loss", "hours_per_week"];
    let features: Vec<Value> =
        names.iter().map(|n| json!({"name": n, "type": "float64"})).collect();
    m.post(&format!("/teams/{team}/feature-views"), &json!({"name": "census", "entity": "person", "source": {"name": "people"}, "timestamp_field": "event_timestamp", "features": features})).await.ok(StatusCode::CREATED);
    let refs: Vec<String> = names.iter().map(|n| format!("census:{n}")).collect();
    m.post(
        &format!("/teams/{team}/feature-services"),
        &json!({"name": "income-all", "features": refs}),
    )
    .await
    .ok(StatusCode::CREATED);
    m.post(
        &format!("/teams/{team}/models"),
        &json!({"name": "income", "task": "binary_classification"}),
    )
    .await
    .ok(StatusCode::CREATED);
    let model = std::fs::read(eval_dir().join("adult_v2.txt")).unwrap();
    m.upload(
        &team,
        "income",
        "m.txt",
        model,
        Some(json!({"feature_service": "income-all", "lineage": {"dataset_version": "people@1"}})),
    )
    .await
    .ok(StatusCode::CREATED);
    let base = format!("/deployments/{team}/income/production");
    m.put(&base, &json!({"versions": [{"version": 1, "weight": 100}]})).await.ok(StatusCode::OK);
    let job = m
        .post(&format!("/teams/{team}/feature-views/census/materialize"), &json!({}))
        .await
        .ok(StatusCode::ACCEPTED);
    let done = wait_for("the materialization", Duration::from_secs(30), async || {
        let j = m
            .get(&format!("/materializations/{}", job["id"].as_str().unwrap()))
            .await
            .ok(StatusCode::OK);
        matches!(j["status"].as_str(), Some("succeeded" | "failed")).then_some(j)
    })
    .await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let freshness = async |at: i64| {
        srv.core.evaluate_alerts(at).await.unwrap();
        let alerts = m.get(&format!("/teams/{team}/alerts")).await.ok(StatusCode::OK);
        alerts.as_array().unwrap().iter().find(|a| a["rule"] == "freshness").cloned()
    };
    // Just materialized, yet its newest value is 90 minutes old: past the view's 1-hour SLA,
    // pending for the rule's 5 minutes, then firing.
    let a = freshness(t0).await.expect("the freshness rule");
    assert_eq!(a["state"], "pending", "{a}");
    assert!((a["value"].as_f64().unwrap() - 5400.0).abs() < 1.0, "the age in seconds: {a}");
    assert_eq!(freshness(t0 + 6 * MINUTE_US).await.unwrap()["state"], "firing");
    // A value pushed now: fresh again.
    let now = rfc3339(t0 + 6 * MINUTE_US);
    m.post(&format!("/teams/{team}/features/push"), &json!({"feature_view": "census", "rows": [{"person_id": 1, "event_timestamp": now, "age": 40, "education_num": 13, "capital_gain": 0, "capital_loss": 0, "hours_per_week": 40}]}))
        .await
        .ok(StatusCode::OK);
    let a = freshness(t0 + 7 * MINUTE_US).await.unwrap();
    assert_eq!(a["state"], "resolved", "{a}");
    // The view itself says the same.
    let view = m.get(&format!("/teams/{team}/feature-views/census")).await.ok(StatusCode::OK);
    assert_eq!(view["freshness"]["last_event_at"], now, "{view}");
    // Never evaluated, the version drifts against the dataset its lineage says it was trained
    // on.
    m.post(&format!("{base}/predict"), &json!({"entities": {"person_id": [1, 2]}}))
        .await
        .ok(StatusCode::OK);
    srv.core.flush_monitoring_at(now_us()).await.unwrap();
    let d = m.get(&format!("{base}/drift?since=2000-01-01T00%3A00%3A00Z")).await.ok(StatusCode::OK);
    assert_eq!(d["versions"][0]["baseline"], "people@1", "{d}");
    assert!(
        d["versions"][0]["baseline_source"].as_str().unwrap_or_default().contains("trained on"),
        "{d}"
    );
}

/// A regressor's labels give RMSE, MAE and R² of its live predictions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_regressors_labels_give_its_live_errors() {
    let srv = TestServer::start(ServerOptions {
        figures_every: Duration::from_secs(86_400),
        ..ServerOptions::new(crate::harness::Backend::Sqlite)
    })
    .await;
    let t = srv.team().await;
    let (team, m) = (t.team.clone(), &t.maintainer.1);
    m.post(&format!("/teams/{team}/models"), &json!({"name": "price", "task": "regression"}))
        .await
        .ok(StatusCode::CREATED);
    m.upload_fixture(&team, "price", "lightgbm_regression.txt").await.ok(StatusCode::CREATED);
    let base = format!("/deployments/{team}/price/production");
    m.put(&base, &json!({"versions": [{"version": 1, "weight": 100}], "keep_predictions": true}))
        .await
        .ok(StatusCode::OK);
    let exp: Value = serde_json::from_str(
        &std::fs::read_to_string(
            crate::harness::fixtures().join("lightgbm_regression.expected.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let n = exp["rows"].as_array().unwrap().len();
    let ids: Vec<String> = (0..n).map(|i| format!("house-{i}")).collect();
    let answer = m
        .post(&format!("{base}/predict"), &json!({"rows": exp["rows"], "ids": ids}))
        .await
        .ok(StatusCode::OK);
    srv.core.flush_monitoring_at(now_us()).await.unwrap();
    // Each label is off the prediction by a known amount.
    let predicted: Vec<f64> =
        answer["predictions"].as_array().unwrap().iter().map(|p| p.as_f64().unwrap()).collect();
    let off = |i: usize| (i % 5) as f64 * 0.1 - 0.2;
    let labels: Vec<f64> = predicted.iter().enumerate().map(|(i, p)| p + off(i)).collect();
    let body: Vec<Value> = labels
        .iter()
        .enumerate()
        .map(|(i, y)| json!({"prediction_id": ids[i], "label": y}))
        .collect();
    m.post(&format!("{base}/feedback"), &json!({"labels": body})).await.ok(StatusCode::OK);
    // A class index is not a price's label, nor text.
    let e = m
        .post(
            &format!("{base}/feedback"),
            &json!({"labels": [{"prediction_id": ids[0], "label": "high"}]}),
        )
        .await
        .err(StatusCode::BAD_REQUEST, "invalid_field");
    assert_eq!(e["field"], "labels[0].label");

    let p = m.get(&format!("{base}/performance")).await.ok(StatusCode::OK);
    let v = &p["versions"][0];
    assert_eq!(
        (v["labelled"].as_u64(), v["label_coverage"].as_f64()),
        (Some(n as u64), Some(1.0)),
        "{p}"
    );
    let nf = n as f64;
    let rmse = ((0..n).map(|i| off(i).powi(2)).sum::<f64>() / nf).sqrt();
    let mae = (0..n).map(|i| off(i).abs()).sum::<f64>() / nf;
    let mean = labels.iter().sum::<f64>() / nf;
    let r2 = 1.0
        - (0..n).map(|i| off(i).powi(2)).sum::<f64>()
            / labels.iter().map(|y| (y - mean).powi(2)).sum::<f64>();
    for (metric, want) in [("rmse", rmse), ("mae", mae), ("r2", r2)] {
        let got = v["metrics"][metric].as_f64().unwrap_or(f64::NAN);
        assert!((got - want).abs() < 1e-9, "{metric}: {got} vs {want}: {p}");
    }
    // No accuracy rule for a regressor, and no estimate without calibrated probabilities.
    srv.core.evaluate_alerts(now_us() + MINUTE_US).await.unwrap();
    let alerts = m.get(&format!("/teams/{team}/alerts")).await.ok(StatusCode::OK);
    assert!(alerts.as_array().unwrap().iter().all(|a| a["rule"] != "accuracy_drop"), "{alerts}");
}
