//! Governance as teams live it, through the CLI: datasets, evaluations with fairness on Adult,
//! policies, promotions blocked by a fairness threshold, review by someone other than the author,
//! self-serve approval of a low-risk retrain, canary then widening, "what served when", the audit
//! trail; bad evaluation input; durable jobs across a crash; signed, retried webhooks.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::cli::Cli;
use crate::harness::{
    Api, ServerOptions, TestServer, backend_tests, shared_server_tests, unique, wait_for,
};

pub(crate) fn eval_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/eval")
}

fn eval_file(name: &str) -> String {
    eval_dir().join(name).to_str().unwrap().to_string()
}

/// scikit-learn's and Fairlearn's values for the fixture models (see gen_eval.py).
fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(eval_dir().join("expected.json")).unwrap())
        .unwrap()
}

fn write_json(dir: &tempfile::TempDir, name: &str, v: &Value) -> String {
    let p = dir.path().join(name);
    std::fs::write(&p, v.to_string()).unwrap();
    p.to_str().unwrap().to_string()
}

fn now() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap()
}

/// A user with the reviewer platform role, and their key.
async fn reviewer(srv: &TestServer) -> (String, String) {
    let name = unique("reviewer");
    srv.admin()
        .post("/users", &json!({"name": name, "platform_role": "reviewer"}))
        .await
        .ok(StatusCode::CREATED);
    let key = srv.admin().post("/keys", &json!({"principal": name})).await.ok(StatusCode::CREATED);
    (name, key["secret"].as_str().unwrap().to_string())
}

pub(crate) async fn wait_evaluation(api: &Api, id: &str) -> Value {
    wait_for(&format!("evaluation {id} to finish"), Duration::from_secs(60), async || {
        let e = api.get(&format!("/evaluations/{id}")).await.ok(StatusCode::OK);
        (e["status"] == "succeeded" || e["status"] == "failed").then_some(e)
    })
    .await
}

fn check<'a>(p: &'a Value, name: &str) -> &'a Value {
    p["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {p}"))
}

fn close(a: &Value, b: &Value, tol: f64, what: &str) {
    let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
    assert!((a - b).abs() <= tol, "{what}: {a} vs {b}");
}

shared_server_tests! {
    async fn fairness_gates_production_and_reviewers_promote(srv: &TestServer) {
        let t = srv.team().await;
        let team = t.team.clone();
        let model = format!("{team}/income");
        let tmp = tempfile::tempdir().unwrap();
        // The maintainer (who could review other people's requests) is the author here.
        let author = Cli::new();
        author.ok(&["login", "--url", &srv.url, "--key", t.maintainer.1.key()]);
        let (reviewer_name, reviewer_key) = reviewer(srv).await;
        let rev = Cli::new();
        rev.ok(&["login", "--url", &srv.url, "--key", &reviewer_key]);
        let exp = expected();

        // Policies: production needs the Adult evaluation, fairness, a card, staging first and a
        // reviewer; low-risk changes that match production serve themselves. Staging needs the
        // evaluation but no reviewer.
        let prod_policy = json!({
            "required_dataset": {"name": "adult-test"},
            "metrics": {"roc_auc": {"min": 0.8}},
            "max_regression": {"roc_auc": 0.02},
            "fairness": {"demographic_parity_difference": {"max": 0.15}},
            "sensitive_attributes": ["sex"],
            "required_card_fields": ["intended_use"],
            "reviewers": {"low": 1, "medium": 1, "high": 2},
            "require_staging": true,
            "self_serve": {"enabled": true, "tolerance": 0.03}
        });
        let stage_policy = json!({"required_dataset": {"name": "adult-test"}, "reviewers": {"low": 0, "medium": 0, "high": 1}});
        author.ok(&["policy", "set", "--team", &team, "--env", "production", &write_json(&tmp, "prod.json", &prod_policy)]);
        author.ok(&["policy", "set", "--team", &team, "--env", "staging", &write_json(&tmp, "stage.json", &stage_policy)]);
        let shown = author.json(&["policy", "show", "--team", &team]);
        assert!(shown.as_array().unwrap().iter().any(|p| p["environment"] == "production" && p["policy"]["require_staging"] == true));

        // The evaluation dataset: Adult's test split, uploaded as gzip CSV.
        let ds = author.json(&["dataset", "upload", &format!("{team}/adult-test"), &eval_file("adult_test.csv.gz")]);
        assert_eq!(ds["rows"], 16281);
        assert_eq!(ds["version"], 1);
        assert_eq!(ds["sha256"].as_str().unwrap().len(), 64);
        let sex = ds["columns"].as_array().unwrap().iter().find(|c| c["name"] == "sex").unwrap();
        assert_eq!(sex["type"], "string");
        assert_eq!(sex["distinct"], 2);

        // v1 uses sex among its features.
        author.ok(&["model", "create", &model, "--task", "binary_classification"]);
        let card = json!({"intended_use": "Illustration", "risk_tier": "medium"});
        let card_medium = write_json(&tmp, "card-medium.json", &card);
        author.ok(&["version", "upload", &model, &eval_file("adult_v1.txt"), "--card", &card_medium]);
        let e1 = author.json(&["evaluate", &format!("{model}@1"), "--dataset", "adult-test", "--label", "income_gt_50k", "--sensitive", "sex,race", "--slice", "race"]);
        assert_eq!(e1["status"], "succeeded", "{e1}");
        let r1 = &e1["result"];
        assert_eq!(r1["rows"], 16281);
        // Plinth evaluates the model itself (f32 trees): the values agree with the reference's
        // to float precision; the exact parity on shared inputs is the core's parity test.
        for m in ["accuracy", "roc_auc", "pr_auc", "log_loss", "brier_score", "f1"] {
            close(&r1["metrics"][m], &exp["v1"]["metrics"][m], 1e-4, m);
        }
        close(&r1["fairness"]["sex"]["demographic_parity_difference"], &exp["v1"]["fairness"]["sex"]["demographic_parity_difference"], 1e-4, "dpd");
        assert_eq!(r1["slices"]["race"].as_object().unwrap().len(), 5);
        assert_eq!(r1["calibration"]["counts"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap()).sum::<u64>(), 16281);
        let report = author.ok(&["report", e1["id"].as_str().unwrap()]);
        assert!(report.contains("## Fairness: `sex`") && report.contains("| roc_auc |"), "{report}");

        let t0 = now();
        // A direct deploy to the gated environment is refused, naming what is missing.
        let err = author.fails(&["deploy", &model, "--env", "production", "--traffic", "1"], 1);
        assert!(err.contains("approval_required") && err.contains("gated") && err.contains("adult-test"), "{err}");

        // Requesting production for v1: blocked by the fairness threshold (and staging first).
        let (p1, err) = author.json_failing(&["promote", &format!("{model}@1"), "--env", "production"], 1);
        assert_eq!(p1["status"], "blocked", "{p1}");
        // A blocked promotion fails the command: a CI gate stops on it.
        assert!(err.contains("is blocked: failed checks") && err.contains("fairness:sex:demographic_parity_difference"), "{err}");
        let fair = check(&p1, "fairness:sex:demographic_parity_difference");
        assert_eq!(fair["status"], "failed");
        assert!(fair["evidence"].as_str().unwrap().contains("above the maximum 0.15"), "{fair}");
        assert_eq!(check(&p1, "staging_first")["status"], "failed");
        assert_eq!(check(&p1, "metric:roc_auc")["status"], "passed");

        // v2 drops sex: evaluated, staged (no reviewer needed there), then production.
        author.ok(&["version", "upload", &model, &eval_file("adult_v2.txt"), "--card", &card_medium]);
        let e2 = author.json(&["evaluate", &format!("{model}@2"), "--dataset", "adult-test", "--label", "income_gt_50k", "--sensitive", "sex"]);
        assert_eq!(e2["status"], "succeeded");
        let s2 = author.json(&["promote", &format!("{model}@2"), "--env", "staging"]);
        assert_eq!(s2["status"], "deployed", "{s2}");
        assert!(s2["auto_approved"].as_str().unwrap().contains("no reviewer"), "{s2}");
        let p2 = author.json(&["promote", &format!("{model}@2"), "--env", "production", "--note", "sex removed from the features"]);
        assert_eq!(p2["status"], "pending_review", "{p2}");
        assert_eq!(p2["required_reviewers"], 1);
        let p2id = p2["id"].as_str().unwrap();
        // The author cannot approve their own request.
        let err = author.fails(&["review", "approve", p2id], 1);
        assert!(err.contains("author"), "{err}");
        // The reviewer sees it in the queue and approves: it deploys.
        let queue = rev.json(&["review", "queue"]);
        assert!(queue.as_array().unwrap().iter().any(|p| p["id"] == p2id), "{queue}");
        let approved = rev.json(&["review", "approve", p2id, "--comment", "fairness within policy"]);
        assert_eq!(approved["status"], "deployed", "{approved}");
        assert_eq!(approved["reviews"][0]["reviewer"], reviewer_name.as_str());
        let dep = t.viewer.1.get(&format!("/deployments/{team}/income/production")).await.ok(StatusCode::OK);
        assert_eq!(dep["spec"]["versions"], json!([{"version": 2, "weight": 100}]));
        let v2 = t.viewer.1.get(&format!("/teams/{team}/models/income/versions/2")).await.ok(StatusCode::OK);
        assert_eq!(v2["approval"], "approved_for_production");
        // People read states as words.
        let shown = author.ok(&["version", "show", &format!("{model}@2")]);
        assert!(shown.contains("approved for production"), "{shown}");
        // The moments to ask about: when each change took effect.
        let t1 = dep["updated_at"].as_str().unwrap().to_string();

        // A low-risk retrain (v3): same format and signature, metrics within tolerance, fair.
        let low = write_json(&tmp, "card-low.json", &json!({"intended_use": "Illustration", "risk_tier": "low"}));
        author.ok(&["version", "upload", &model, &eval_file("adult_v3.txt"), "--card", &low]);
        let e3 = author.json(&["evaluate", &format!("{model}@3"), "--dataset", "adult-test", "--label", "income_gt_50k", "--sensitive", "sex"]);
        assert_eq!(e3["result"]["baseline"]["version"], 2, "compared with production: {e3}");
        author.ok(&["promote", &format!("{model}@3"), "--env", "staging"]);
        let p3 = author.json(&["promote", &format!("{model}@3"), "--env", "production", "--canary", "10"]);
        assert_eq!(p3["status"], "deployed", "{p3}");
        assert!(p3["auto_approved"].as_str().unwrap().starts_with("self-serve"), "{p3}");
        assert_eq!(check(&p3, "regression:roc_auc")["status"], "passed");
        let dep = t.viewer.1.get(&format!("/deployments/{team}/income/production")).await.ok(StatusCode::OK);
        assert_eq!(dep["spec"]["versions"], json!([{"version": 2, "weight": 90}, {"version": 3, "weight": 10}]));
        let t2 = dep["updated_at"].as_str().unwrap().to_string();
        // Widening the approved canary is allowed; an unapproved version still is not.
        author.ok(&["traffic", &model, "--env", "production", "3=100"]);
        let err = author.fails(&["traffic", &model, "--env", "production", "1=50", "3=50"], 1);
        assert!(err.contains("version 1 has no approved promotion"), "{err}");

        // History: what served production, who approved it, with which evidence.
        let h0 = author.json(&["history", &model, "--env", "production", "--at", &t0]);
        assert!(h0.get("revision").is_none(), "nothing served before: {h0}");
        let h1 = author.json(&["history", &model, "--env", "production", "--at", &t1]);
        assert_eq!(h1["revision"]["spec"]["versions"], json!([{"version": 2, "weight": 100}]));
        assert_eq!(h1["promotions"][0]["id"], p2id);
        assert_eq!(h1["promotions"][0]["reviews"][0]["reviewer"], reviewer_name.as_str());
        assert_eq!(h1["promotions"][0]["evaluation"], e2["id"]);
        let h2 = author.json(&["history", &model, "--env", "production", "--at", &t2]);
        assert_eq!(h2["revision"]["spec"]["versions"].as_array().unwrap().len(), 2);
        assert!(h2["promotions"][1]["auto_approved"].as_str().unwrap().starts_with("self-serve"));
        let hn = author.json(&["history", &model, "--env", "production", "--at", "now"]);
        assert_eq!(hn["revision"]["spec"]["versions"], json!([{"version": 3, "weight": 100}]));
        assert_eq!(hn["revision"]["action"], "traffic");
        let human = author.ok(&["history", &model, "--env", "production", "--at", &t1]);
        assert!(human.contains(&format!("approved by {reviewer_name}")), "{human}");

        // Every step is in the audit log.
        let audit = srv.admin().all_pages(&format!("/audit?team={team}&limit=500")).await;
        let actions: Vec<&str> = audit.iter().map(|e| e["action"].as_str().unwrap()).collect();
        for a in ["policy.set", "dataset_version.create", "evaluation.create", "promotion.request", "promotion.checks", "promotion.review.approve", "promotion.approve", "deployment.promote", "deployment.traffic"] {
            assert!(actions.contains(&a), "audit has no {a}: {actions:?}");
        }
    }

    async fn bad_evaluation_input_is_refused_and_leaves_no_job(srv: &TestServer) {
        let t = srv.team().await;
        let (team, m) = (t.team.clone(), &t.maintainer.1);
        m.post(&format!("/teams/{team}/models"), &json!({"name": "income", "task": "binary_classification"})).await.ok(StatusCode::CREATED);
        let model = std::fs::read(eval_dir().join("adult_v2.txt")).unwrap();
        m.upload(&team, "income", "adult_v2.txt", model, None).await.ok(StatusCode::CREATED);
        let upload = |name: &str, body: Vec<u8>| {
            let req = m
                .request(reqwest::Method::POST, &format!("/teams/{team}/datasets/{name}/versions"))
                .body(body);
            m.send(req)
        };
        upload("adult", std::fs::read(eval_dir().join("adult_test.csv.gz")).unwrap()).await.ok(StatusCode::CREATED);
        let header = "age,education_num,capital_gain,capital_loss,hours_per_week,income_gt_50k,sex\n";
        upload("empty", header.as_bytes().to_vec()).await.ok(StatusCode::CREATED);
        let one_group = format!("{header}39,13,0,0,40,0,Male\n50,9,0,0,45,1,Male\n");
        upload("men", one_group.into_bytes()).await.ok(StatusCode::CREATED);
        // Files that are not tables are refused and store nothing.
        let e = upload("broken", b"PAR1 not really parquet".to_vec()).await.err(StatusCode::UNPROCESSABLE_ENTITY, "invalid_data");
        assert_eq!(e["field"], "file");
        let e = upload("ragged", b"a,b\n1,2\n3\n".to_vec()).await.err(StatusCode::UNPROCESSABLE_ENTITY, "invalid_data");
        assert!(e["message"].as_str().unwrap().contains("CSV"), "{e}");
        m.get(&format!("/teams/{team}/datasets/broken/versions")).await.err(StatusCode::NOT_FOUND, "not_found");

        let path = format!("/teams/{team}/models/income/evaluations");
        let eval = async |dataset: &str, label: &str, sensitive: &[&str]| {
            m.post(&path, &json!({"version": 1, "dataset": {"name": dataset}, "label": label, "sensitive": sensitive})).await
        };
        let e = eval("adult", "salary", &[]).await.err(StatusCode::BAD_REQUEST, "invalid_field");
        assert_eq!(e["field"], "label");
        assert!(e["message"].as_str().unwrap().contains("no column 'salary'"));
        let e = eval("adult", "income", &[]).await.err(StatusCode::BAD_REQUEST, "invalid_field");
        assert!(e["message"].as_str().unwrap().contains("holds string values"), "{e}");
        let e = eval("men", "income_gt_50k", &["sex"]).await.err(StatusCode::BAD_REQUEST, "invalid_field");
        assert_eq!(e["field"], "sensitive[0]");
        assert!(e["message"].as_str().unwrap().contains("single group"), "{e}");
        let e = eval("empty", "income_gt_50k", &[]).await.err(StatusCode::UNPROCESSABLE_ENTITY, "invalid_data");
        assert!(e["message"].as_str().unwrap().contains("no rows"), "{e}");
        let e = eval("nope", "income_gt_50k", &[]).await.err(StatusCode::NOT_FOUND, "not_found");
        assert_eq!(e["field"], "dataset");
        let listed = m.get(&format!("/teams/{team}/models/income/evaluations")).await.ok(StatusCode::OK);
        assert_eq!(listed, json!([]), "no job was created");
        // Another team sees none of it.
        let other = srv.team().await;
        other.maintainer.1.get(&format!("/teams/{team}/datasets")).await.err(StatusCode::NOT_FOUND, "not_found");
        let ok = eval("adult", "income_gt_50k", &["sex"]).await.ok(StatusCode::ACCEPTED);
        other.maintainer.1.get(&format!("/evaluations/{}", ok["id"].as_str().unwrap())).await.err(StatusCode::NOT_FOUND, "not_found");
        assert_eq!(wait_evaluation(m, ok["id"].as_str().unwrap()).await["status"], "succeeded");
    }

    async fn platform_default_policies_gate_every_team(srv: &TestServer) {
        // A fresh environment, so the default gates no other test.
        let env = unique("preprod");
        srv.admin().post("/environments", &json!({"name": env})).await.ok(StatusCode::CREATED);
        let t = srv.team().await;
        let (team, m) = (t.team.clone(), &t.maintainer.1);
        let policy = json!({"required_card_fields": ["intended_use", "limitations"], "reviewers": {"medium": 1}});
        m.put(&format!("/policies/{env}"), &policy).await.err(StatusCode::FORBIDDEN, "forbidden");
        let e = srv.admin().put(&format!("/policies/{env}"), &json!({"fairness": {"demographic_parity": {"max": 0.1}}})).await.err(StatusCode::BAD_REQUEST, "invalid_field");
        assert_eq!(e["field"], "fairness.demographic_parity");
        srv.admin().put(&format!("/policies/{env}"), &policy).await.ok(StatusCode::OK);
        m.post(&format!("/teams/{team}/models"), &json!({"name": "income", "task": "binary_classification"})).await.ok(StatusCode::CREATED);
        let meta = json!({"card": {"intended_use": "tests", "risk_tier": "medium"}});
        m.upload(&team, "income", "m.txt", std::fs::read(eval_dir().join("adult_v2.txt")).unwrap(), Some(meta)).await.ok(StatusCode::CREATED);
        let e = m.put(&format!("/deployments/{team}/income/{env}"), &json!({"versions": [{"version": 1, "weight": 100}]})).await.err(StatusCode::CONFLICT, "approval_required");
        assert!(e["message"].as_str().unwrap().contains("reviewer approvals by risk tier (low: 1, medium: 1, high: 1)"), "{e}");
        let p = m.post(&format!("/teams/{team}/models/income/promotions"), &json!({"version": 1, "environment": env})).await.ok(StatusCode::CREATED);
        assert_eq!(p["status"], "blocked");
        assert_eq!(check(&p, "card:limitations")["status"], "failed");
        assert_eq!(check(&p, "card:intended_use")["status"], "passed");
        // A team's own policy adds to the default: it cannot loosen it...
        m.put(&format!("/teams/{team}/policies/{env}"), &json!({"gated": false, "reviewers": {"medium": 0}})).await.ok(StatusCode::OK);
        m.put(&format!("/deployments/{team}/income/{env}"), &json!({"versions": [{"version": 1, "weight": 100}]})).await.err(StatusCode::CONFLICT, "approval_required");
        let p = m.post(&format!("/teams/{team}/models/income/promotions"), &json!({"version": 1, "environment": env})).await.ok(StatusCode::CREATED);
        assert_eq!((p["status"].as_str(), p["required_reviewers"].as_u64()), (Some("blocked"), Some(1)), "{p}");
        assert_eq!(check(&p, "card:limitations")["status"], "failed");
        // ...and can tighten it.
        m.put(&format!("/teams/{team}/policies/{env}"), &json!({"required_card_fields": ["owners"], "reviewers": {"medium": 2}})).await.ok(StatusCode::OK);
        let p = m.post(&format!("/teams/{team}/models/income/promotions"), &json!({"version": 1, "environment": env})).await.ok(StatusCode::CREATED);
        assert_eq!((p["status"].as_str(), p["required_reviewers"].as_u64()), (Some("blocked"), Some(2)), "{p}");
        assert_eq!(check(&p, "card:owners")["status"], "failed");
        assert_eq!(check(&p, "card:limitations")["status"], "failed");
        let audit = srv.admin().all_pages(&format!("/audit?team={team}")).await;
        assert_eq!(audit.iter().filter(|e| e["action"] == "policy.set").count(), 2, "team policy changes are audited");
        let listed = m.get(&format!("/policies?team={team}")).await.ok(StatusCode::OK);
        assert!(listed.as_array().unwrap().iter().any(|r| r["environment"] == env.as_str() && r["team"].is_null()));
        assert!(listed.as_array().unwrap().iter().any(|r| r["environment"] == env.as_str() && r["team"] == team.as_str()));
    }

    async fn regression_and_multiclass_evaluations_and_parquet_datasets(srv: &TestServer) {
        let t = srv.team().await;
        let (team, m) = (t.team.clone(), &t.maintainer.1);
        let exp = expected();
        let upload = async |name: &str, file: &str| {
            let req = m
                .request(reqwest::Method::POST, &format!("/teams/{team}/datasets/{name}/versions"))
                .body(std::fs::read(eval_dir().join(file)).unwrap());
            m.send(req).await
        };
        // Parquet is detected by its magic bytes; types come from its schema.
        let pq = upload("adult-sample", "adult_sample.parquet").await.ok(StatusCode::CREATED);
        assert_eq!((pq["format"].as_str(), pq["rows"].as_u64()), (Some("parquet"), Some(2000)));
        let age = pq["columns"].as_array().unwrap().iter().find(|c| c["name"] == "age").unwrap();
        assert_eq!(age["type"], "int64");
        // Re-uploading the same bytes makes a new version with the same content hash.
        let again = upload("adult-sample", "adult_sample.parquet").await.ok(StatusCode::CREATED);
        assert_eq!((again["version"].as_u64(), &again["sha256"]), (Some(2), &pq["sha256"]));
        upload("ames", "ames_eval.csv").await.ok(StatusCode::CREATED);

        for (model, task, fixture, label) in [
            ("price", "regression", "lightgbm_regression.txt", "log_price"),
            ("tier", "multiclass_classification", "lightgbm_multiclass.txt", "price_tertile"),
        ] {
            m.post(&format!("/teams/{team}/models"), &json!({"name": model, "task": task})).await.ok(StatusCode::CREATED);
            m.upload_fixture(&team, model, fixture).await.ok(StatusCode::CREATED);
            let e = m
                .post(&format!("/teams/{team}/models/{model}/evaluations"), &json!({"version": 1, "dataset": {"name": "ames"}, "label": label, "slices": ["Full_Bath"]}))
                .await
                .ok(StatusCode::ACCEPTED);
            let done = wait_evaluation(m, e["id"].as_str().unwrap()).await;
            assert_eq!(done["status"], "succeeded", "{done}");
            let r = &done["result"];
            let want = if task == "regression" { &exp["ames"]["regression"] } else { &exp["ames"]["multiclass"] };
            for (name, v) in want.as_object().unwrap() {
                close(&r["metrics"][name], v, 1e-4, name);
            }
            if task != "regression" {
                assert_eq!(r["confusion_matrix"], exp["ames"]["multiclass_confusion_matrix"]);
                assert_eq!(r["classes"], json!(["0", "1", "2"]));
            }
            assert!(r["slices"]["Full_Bath"].as_object().unwrap().len() >= 3, "{r}");
        }
        // A regression label must be numeric; fairness is for binary classifiers.
        let e = m.post(&format!("/teams/{team}/models/price/evaluations"), &json!({"version": 1, "dataset": {"name": "adult-sample"}, "label": "income", "sensitive": []})).await.err(StatusCode::BAD_REQUEST, "invalid_field");
        assert!(e["message"].as_str().unwrap().contains("must be a number"), "{e}");
        let e = m.post(&format!("/teams/{team}/models/tier/evaluations"), &json!({"version": 1, "dataset": {"name": "ames"}, "label": "price_tertile", "sensitive": ["Full_Bath"]})).await.err(StatusCode::BAD_REQUEST, "invalid_field");
        assert!(e["message"].as_str().unwrap().contains("binary classifiers"), "{e}");
    }

    async fn webhooks_are_signed_retried_and_logged(srv: &TestServer) {
        let t = srv.team().await;
        let (team, m) = (t.team.clone(), &t.maintainer.1);
        // A receiver that fails its first call, then accepts.
        let seen: Arc<Mutex<Vec<(axum::http::HeaderMap, String)>>> = Arc::default();
        let seen2 = seen.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
                let seen = seen2.clone();
                async move {
                    let mut s = seen.lock().unwrap();
                    s.push((headers, body));
                    if s.len() == 1 { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::OK }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let hook = m
            .post(&format!("/teams/{team}/webhooks"), &json!({"url": format!("http://{addr}/hook"), "events": ["promotion.requested"]}))
            .await
            .ok(StatusCode::CREATED);
        let secret = hook["secret"].as_str().unwrap().to_string();
        m.post(&format!("/teams/{team}/webhooks"), &json!({"url": "ftp://x"})).await.err(StatusCode::BAD_REQUEST, "invalid_field");
        m.post(&format!("/teams/{team}/models"), &json!({"name": "income", "task": "binary_classification"})).await.ok(StatusCode::CREATED);
        m.upload(&team, "income", "m.txt", std::fs::read(eval_dir().join("adult_v2.txt")).unwrap(), None).await.ok(StatusCode::CREATED);
        // No policy governs staging for this team: the promotion deploys and announces itself.
        let p = m.post(&format!("/teams/{team}/models/income/promotions"), &json!({"version": 1, "environment": "staging"})).await.ok(StatusCode::CREATED);
        assert_eq!(p["status"], "deployed");
        wait_for("the webhook to be retried", Duration::from_secs(20), async || {
            (seen.lock().unwrap().len() >= 2).then_some(())
        })
        .await;
        let (headers, body) = seen.lock().unwrap()[1].clone();
        let ts: i64 = headers["x-plinth-timestamp"].to_str().unwrap().parse().unwrap();
        assert_eq!(headers["x-plinth-signature"].to_str().unwrap(), plinth_core::webhooks::sign(&secret, ts, body.as_bytes()));
        assert_eq!(headers["x-plinth-event"], "promotion.requested");
        let payload: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(payload["data"]["promotion"], p["id"]);
        // The sender records the outcome after the receiver has answered: wait for it.
        let deliveries = format!("/teams/{team}/webhooks/{}/deliveries", hook["id"].as_str().unwrap());
        let log = wait_for("the delivery to be recorded", Duration::from_secs(20), async || {
            let log = m.get(&deliveries).await.ok(StatusCode::OK);
            (log[0]["status"] != "pending").then_some(log)
        })
        .await;
        let d = &log[0];
        assert_eq!((d["event"].as_str(), d["status"].as_str(), d["attempts"].as_u64()), (Some("promotion.requested"), Some("delivered"), Some(2)), "{log}");
        assert_eq!(log.as_array().unwrap().len(), 1, "only the subscribed event: {log}");
    }
}

backend_tests! {
    async fn evaluation_jobs_survive_a_crash(backend: Backend) {
        let srv = TestServer::start(ServerOptions::new(backend)).await;
        let t = srv.team().await;
        let (team, m) = (t.team.clone(), t.maintainer.1.clone());
        m.post(&format!("/teams/{team}/models"), &json!({"name": "income", "task": "binary_classification"})).await.ok(StatusCode::CREATED);
        m.upload(&team, "income", "m.txt", std::fs::read(eval_dir().join("adult_v2.txt")).unwrap(), None).await.ok(StatusCode::CREATED);
        let req = m
            .request(reqwest::Method::POST, &format!("/teams/{team}/datasets/adult/versions"))
            .body(std::fs::read(eval_dir().join("adult_test.csv.gz")).unwrap());
        m.send(req).await.ok(StatusCode::CREATED);
        let e = m.post(&format!("/teams/{team}/models/income/evaluations"), &json!({"version": 1, "dataset": {"name": "adult"}, "label": "income_gt_50k"})).await.ok(StatusCode::ACCEPTED);
        let id = e["id"].as_str().unwrap().to_string();
        // The first attempt does the work and announces it...
        assert_eq!(wait_evaluation(&m, &id).await["status"], "succeeded");
        let (tmp, data_dir, database_url) = srv.stop().await;
        // ...and, as if the process had died before it could mark the task done, the task is
        // left running, held by a runner that will never renew its lease (already expired),
        // with no result.
        let url = database_url.clone().unwrap_or_else(|| format!("sqlite://{}", data_dir.join("plinth.db").display()));
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&url).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE tasks SET state = 'running', result = NULL, progress = 0.5, lease_owner = 'rep_dead', lease_expires_at = 0, finished_at = NULL WHERE id = '{id}'"
        )))
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
        let srv = TestServer::start(ServerOptions { data_dir: Some(data_dir), database_url, ..ServerOptions::new(backend) }).await;
        let m = Api::new(&srv.url, m.key());
        let done = wait_evaluation(&m, &id).await;
        assert_eq!(done["status"], "succeeded", "{done}");
        close(&done["result"]["metrics"]["roc_auc"], &expected()["v2"]["metrics"]["roc_auc"], 1e-4, "roc_auc");
        srv.stop().await;
        // Two attempts reached the end, one event announces it: receivers see one id.
        let pool = sqlx::AnyPool::connect(&url).await.unwrap();
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM events WHERE type = 'evaluation.finished' AND payload LIKE '%{id}%'"
        )))
        .fetch_one(&pool)
        .await
        .unwrap();
        pool.close().await;
        assert_eq!(n, 1, "evaluation.finished written {n} times");
        drop(tmp);
    }
}

#[test]
fn offline_commands_pit_and_fairness() {
    let cli = Cli::new();
    let tmp = tempfile::tempdir().unwrap();
    let pit = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/pit");
    let out = tmp.path().join("train.parquet");
    let args = |features: &str| {
        vec![
            "features".to_string(),
            "pit".into(),
            "--features".into(),
            pit.join(features).to_str().unwrap().to_string(),
            "--entities".into(),
            pit.join("flights.parquet").to_str().unwrap().to_string(),
            "--out".into(),
            out.to_str().unwrap().to_string(),
            "--join-key".into(),
            "origin".into(),
            "--entity-timestamp".into(),
            "sched_dep_utc".into(),
            "--feature-timestamp".into(),
            "time_hour".into(),
            "--ttl".into(),
            "45m".into(),
        ]
    };
    let a = args("weather.parquet");
    cli.ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let joined = plinth_data::read_parquet_file(&out).unwrap();
    assert_eq!(joined.iter().map(|b| b.num_rows()).sum::<usize>(), 27_004);
    assert!(joined[0].schema().field_with_name("temp").is_ok());
    // The flights file has no time_hour column: a clear refusal, and no output.
    std::fs::remove_file(&out).unwrap();
    let a = args("flights.parquet");
    let err = cli.fails(&a.iter().map(String::as_str).collect::<Vec<_>>(), 1);
    assert!(err.contains("the feature table has no column 'time_hour'"), "{err}");
    assert!(!out.exists());

    // Fairness metrics of a predictions file, in Fairlearn's layout.
    let csv = tmp.path().join("preds.csv");
    std::fs::write(&csv, "group,y_true,y_pred\na,1,1\na,0,1\nb,1,0\nb,0,0\n").unwrap();
    let f: Value =
        serde_json::from_str(&cli.ok(&["fairness", "--input", csv.to_str().unwrap()])).unwrap();
    assert_eq!(f["rows"], 4);
    assert_eq!(f["by_group"]["a"]["selection_rate"], 1.0);
    assert_eq!(f["demographic_parity_difference"], 1.0);
    assert_eq!(f["four_fifths_rule"], false);
    let err = cli.fails(&["fairness", "--input", csv.to_str().unwrap(), "--group", "sex"], 2);
    assert!(err.contains("no column 'sex'"), "{err}");
}

/// docs/policies.md lists every field a policy has, as the OpenAPI document (generated from the
/// code) says, and nothing it does not have.
#[test]
fn the_policy_reference_lists_every_field() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let doc = std::fs::read_to_string(root.join("docs/policies.md")).unwrap();
    let api: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("openapi.json")).unwrap()).unwrap();
    let fields: Vec<String> = api["components"]["schemas"]["Policy"]["properties"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let documented: Vec<String> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("| `").and_then(|l| l.split('`').next()).map(str::to_string))
        .collect();
    let mut want = fields.clone();
    want.sort();
    let mut have = documented.clone();
    have.sort();
    assert_eq!(have, want, "docs/policies.md's table and the Policy schema differ");
}
