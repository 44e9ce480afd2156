//! Governance that one person cannot talk around: reviews count only from people independent of
//! the request (not service accounts, not whoever created the requesting bot or its key, not
//! with a key the author created); a team's policy change waits for a reviewer when the
//! platform says so; a signature change that breaks production's callers is flagged and waits
//! for a person.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Api, TestServer, shared_server_tests, unique};

/// A fresh environment with a platform default policy, so that no other test is gated by it.
async fn environment(srv: &TestServer, policy: Value) -> String {
    let env = unique("gov");
    srv.admin().post("/environments", &json!({"name": env})).await.ok(StatusCode::CREATED);
    srv.admin().put(&format!("/policies/{env}"), &policy).await.ok(StatusCode::OK);
    env
}

/// A service account of `team` with `role`, and a key for it created by `creator`.
async fn bot(srv: &TestServer, creator: &Api, team: &str, role: &str) -> Api {
    let name = unique("bot");
    creator
        .post(&format!("/teams/{team}/service-accounts"), &json!({"name": name, "role": role}))
        .await
        .ok(StatusCode::CREATED);
    let key = creator
        .post("/keys", &json!({"principal": format!("{team}/{name}")}))
        .await
        .ok(StatusCode::CREATED);
    Api::new(&srv.url, key["secret"].as_str().unwrap())
}

/// A user with the reviewer platform role and a key the admin created.
async fn platform_reviewer(srv: &TestServer) -> (String, Api) {
    let name = unique("rev");
    srv.admin()
        .post("/users", &json!({"name": name, "platform_role": "reviewer"}))
        .await
        .ok(StatusCode::CREATED);
    let key = srv.admin().post("/keys", &json!({"principal": name})).await.ok(StatusCode::CREATED);
    (name, Api::new(&srv.url, key["secret"].as_str().unwrap()))
}

async fn approve(api: &Api, id: &str) -> crate::harness::Resp {
    api.post(&format!("/promotions/{id}/reviews"), &json!({"decision": "approve", "comment": "ok"}))
        .await
}

shared_server_tests! {
    async fn reviews_count_only_from_people_independent_of_the_request(srv: &TestServer) {
        let env = environment(srv, json!({"reviewers": {"low": 2, "medium": 2, "high": 2}})).await;
        let t = srv.team().await;
        let (team, m) = (t.team.clone(), t.maintainer.1.clone());
        m.post(&format!("/teams/{team}/models"), &json!({"name": "income", "task": "binary_classification"})).await.ok(StatusCode::CREATED);
        m.upload_fixture(&team, "income", "lightgbm_binary.txt").await.ok(StatusCode::CREATED);
        // The maintainer makes two bots: one asks, the other would approve.
        let requester = bot(srv, &m, &team, "developer").await;
        let approver = bot(srv, &m, &team, "maintainer").await;
        let p = requester.post(&format!("/teams/{team}/models/income/promotions"), &json!({"version": 1, "environment": env})).await.ok(StatusCode::CREATED);
        assert_eq!((p["status"].as_str(), p["required_reviewers"].as_u64()), (Some("pending_review"), Some(2)), "{p}");
        let id = p["id"].as_str().unwrap();
        let e = approve(&approver, id).await.err(StatusCode::FORBIDDEN, "forbidden");
        assert!(e["message"].as_str().unwrap().contains("service accounts cannot review"), "{e}");
        let e = approve(&m, id).await.err(StatusCode::FORBIDDEN, "forbidden");
        assert!(e["message"].as_str().unwrap().contains("you created the service account"), "{e}");
        // Neither bot nor its creator sees it in the review queue.
        for api in [&approver, &m] {
            let queue = api.get("/promotions?reviewable=true").await.ok(StatusCode::OK);
            assert!(!queue.as_array().unwrap().iter().any(|q| q["id"] == id), "{queue}");
        }
        // Two people who are independent of it approve: it deploys. One person counts once.
        let (_, r1) = platform_reviewer(srv).await;
        let p = approve(&r1, id).await.ok(StatusCode::OK);
        assert_eq!(p["status"], "pending_review");
        let p = approve(&r1, id).await.ok(StatusCode::OK);
        assert_eq!(p["status"], "pending_review", "the same reviewer twice is one approval: {p}");
        let p = approve(&srv.admin(), id).await.ok(StatusCode::OK);
        assert_eq!(p["status"], "deployed", "{p}");

        // The admin asks; a reviewer holding a key the admin created is not independent, and
        // becomes so with a key of their own.
        m.upload_fixture(&team, "income", "lightgbm_binary.txt").await.ok(StatusCode::CREATED);
        let p = srv.admin().post(&format!("/teams/{team}/models/income/promotions"), &json!({"version": 2, "environment": env})).await.ok(StatusCode::CREATED);
        let id = p["id"].as_str().unwrap();
        let (r2_name, r2) = platform_reviewer(srv).await;
        let e = approve(&r2, id).await.err(StatusCode::FORBIDDEN, "forbidden");
        assert!(e["message"].as_str().unwrap().contains("created the API key you are using"), "{e}");
        let own = r2.post("/keys", &json!({"name": "mine"})).await.ok(StatusCode::CREATED);
        let r2 = Api::new(&srv.url, own["secret"].as_str().unwrap());
        let p = approve(&r2, id).await.ok(StatusCode::OK);
        assert_eq!(p["reviews"][0]["reviewer"], r2_name.as_str());
        // A maintainer the admin made a key for is not independent of the admin's request.
        let e = approve(&m, id).await.err(StatusCode::FORBIDDEN, "forbidden");
        assert!(e["message"].as_str().unwrap().contains("created the API key you are using"), "{e}");
    }

    async fn a_team_policy_change_waits_for_review_when_the_platform_says_so(srv: &TestServer) {
        let env = environment(srv, json!({"reviewers": {"medium": 1}, "review_team_changes": true})).await;
        let t = srv.team().await;
        let (team, m) = (t.team.clone(), t.maintainer.1.clone());
        // Only the platform decides whether team changes are reviewed.
        let e = m.put(&format!("/teams/{team}/policies/{env}"), &json!({"review_team_changes": true})).await.err(StatusCode::BAD_REQUEST, "invalid_field");
        assert_eq!(e["field"], "review_team_changes");
        let change = m.put(&format!("/teams/{team}/policies/{env}"), &json!({"reviewers": {"medium": 3}})).await.ok(StatusCode::ACCEPTED);
        assert_eq!(change["status"], "pending_review", "{change}");
        let id = change["id"].as_str().unwrap();
        let listed = m.get(&format!("/policies?team={team}")).await.ok(StatusCode::OK);
        assert!(!listed.as_array().unwrap().iter().any(|r| r["team"] == team.as_str()), "not in force yet: {listed}");
        // The maintainer cannot review it; a platform reviewer rejects without a reason: refused.
        m.post(&format!("/policy-changes/{id}/review"), &json!({"decision": "approve"})).await.err(StatusCode::FORBIDDEN, "forbidden");
        let (_, r) = platform_reviewer(srv).await;
        r.post(&format!("/policy-changes/{id}/review"), &json!({"decision": "reject"})).await.err(StatusCode::BAD_REQUEST, "missing_field");
        let pending = r.get(&format!("/policy-changes?team={team}&status=pending_review")).await.ok(StatusCode::OK);
        assert_eq!(pending.as_array().unwrap().len(), 1);
        let decided = r.post(&format!("/policy-changes/{id}/review"), &json!({"decision": "approve", "comment": "tighter is fine"})).await.ok(StatusCode::OK);
        assert_eq!(decided["status"], "approved", "{decided}");
        r.post(&format!("/policy-changes/{id}/review"), &json!({"decision": "approve"})).await.err(StatusCode::CONFLICT, "conflict");
        let listed = m.get(&format!("/policies?team={team}")).await.ok(StatusCode::OK);
        let mine = listed.as_array().unwrap().iter().find(|r| r["team"] == team.as_str()).expect("in force");
        assert_eq!(mine["policy"]["reviewers"]["medium"], 3);
        let audit = srv.admin().all_pages(&format!("/audit?team={team}")).await;
        for action in ["policy.change_requested", "policy.set"] {
            assert!(audit.iter().any(|e| e["action"] == action), "{action} audited");
        }
        // Another team cannot see the change.
        let other = srv.team().await;
        other.maintainer.1.get(&format!("/policy-changes?team={team}")).await.err(StatusCode::NOT_FOUND, "not_found");
    }

    async fn a_signature_that_breaks_production_callers_is_flagged(srv: &TestServer) {
        // Self-serve on for low risk, and no reviewer needed: only a flagged check holds it.
        let env = environment(srv, json!({"reviewers": {"low": 0, "medium": 0, "high": 0}, "self_serve": {"enabled": true}})).await;
        let t = srv.team().await;
        let (team, m) = (t.team.clone(), t.maintainer.1.clone());
        m.post(&format!("/teams/{team}/models"), &json!({"name": "income", "task": "binary_classification"})).await.ok(StatusCode::CREATED);
        let eval = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/eval");
        let card = json!({"card": {"risk_tier": "low"}});
        // v1 takes six features with sex_male; v2 (the README's) drops it.
        m.upload(&team, "income", "v1.txt", std::fs::read(eval.join("adult_v1.txt")).unwrap(), Some(card.clone())).await.ok(StatusCode::CREATED);
        m.upload(&team, "income", "v2.txt", std::fs::read(eval.join("adult_v2.txt")).unwrap(), Some(card)).await.ok(StatusCode::CREATED);
        let path = format!("/teams/{team}/models/income/promotions");
        let p = m.post(&path, &json!({"version": 1, "environment": env})).await.ok(StatusCode::CREATED);
        assert_eq!(p["status"], "deployed", "{p}");
        let p = m.post(&path, &json!({"version": 2, "environment": env})).await.ok(StatusCode::CREATED);
        assert_eq!((p["status"].as_str(), p["required_reviewers"].as_u64()), (Some("pending_review"), Some(1)), "{p}");
        let sig = p["checks"].as_array().unwrap().iter().find(|c| c["name"] == "signature").expect("signature check");
        assert_eq!(sig["status"], "flagged", "{sig}");
        assert!(sig["evidence"].as_str().unwrap().contains("drops feature(s) sex_male"), "{sig}");
        let (_, r) = platform_reviewer(srv).await;
        let p = approve(&r, p["id"].as_str().unwrap()).await.ok(StatusCode::OK);
        assert_eq!(p["status"], "deployed", "a reviewer who saw it may accept it: {p}");
    }
}
