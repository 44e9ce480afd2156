//! Isolation: one team never sees or touches another's objects. Every endpoint, called by an
//! outsider on another team's object, answers 404 (so names do not leak) and changes nothing.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::{Api, fixtures, shared_server_tests};

/// Everything about team `team` that an outsider must not be able to change.
async fn snapshot(admin: &Api, team: &str) -> Value {
    json!({
        "team": admin.get(&format!("/teams/{team}")).await.body,
        "members": admin.all_pages(&format!("/teams/{team}/members")).await,
        "models": admin.all_pages(&format!("/teams/{team}/models?include_archived=true")).await,
        "versions": admin.all_pages(&format!("/teams/{team}/models/secret-model/versions?include_archived=true")).await,
        "audit": admin.all_pages(&format!("/audit?team={team}")).await.len(),
        "sa_keys": admin.all_pages(&format!("/keys?principal={team}/robot")).await,
    })
}

shared_server_tests! {
    async fn another_teams_objects_are_invisible_and_untouchable(srv: &TestServer) {
        let a = srv.team().await;
        let b = srv.team().await;
        let owner = &a.maintainer.1;
        owner.post(&format!("/teams/{}/models", a.team), &json!({"name": "secret-model", "task": "binary_classification", "tags": {"k": "v"}})).await.ok(StatusCode::CREATED);
        owner.upload_fixture(&a.team, "secret-model", "lightgbm_binary.txt").await.ok(StatusCode::CREATED);
        owner.post(&format!("/teams/{}/service-accounts", a.team), &json!({"name": "robot"})).await.ok(StatusCode::CREATED);
        let sa_key = owner.post("/keys", &json!({"principal": format!("{}/robot", a.team)})).await.ok(StatusCode::CREATED);
        let sa_key_id = sa_key["key"]["id"].as_str().unwrap().to_string();
        let admin = srv.admin();
        let before = snapshot(&admin, &a.team).await;

        let at = &a.team;
        let artifact = std::fs::read(fixtures().join("lightgbm_binary.txt")).unwrap();
        let calls: Vec<(Method, String, Option<Value>)> = vec![
            (Method::GET, format!("/teams/{at}"), None),
            (Method::GET, format!("/teams/{at}/members"), None),
            (Method::PUT, format!("/teams/{at}/members/{}", b.developer.0), Some(json!({"role": "maintainer"}))),
            (Method::DELETE, format!("/teams/{at}/members/{}", a.viewer.0), None),
            (Method::POST, format!("/teams/{at}/service-accounts"), Some(json!({"name": "intruder"}))),
            (Method::GET, format!("/teams/{at}/models"), None),
            (Method::POST, format!("/teams/{at}/models"), Some(json!({"name": "planted", "task": "regression"}))),
            (Method::GET, format!("/teams/{at}/models/secret-model"), None),
            (Method::PATCH, format!("/teams/{at}/models/secret-model"), Some(json!({"description": "pwned"}))),
            (Method::POST, format!("/teams/{at}/models/secret-model/archive"), Some(json!({}))),
            (Method::GET, format!("/teams/{at}/models/secret-model/versions"), None),
            (Method::GET, format!("/teams/{at}/models/secret-model/versions/1"), None),
            (Method::PATCH, format!("/teams/{at}/models/secret-model/versions/1"), Some(json!({"card": {"risk_tier": "low"}}))),
            (Method::POST, format!("/teams/{at}/models/secret-model/versions/1/archive"), Some(json!({}))),
            (Method::GET, format!("/teams/{at}/models/secret-model/versions/1/artifact"), None),
            (Method::GET, format!("/audit?team={at}"), None),
            (Method::GET, format!("/models?team={at}"), None),
            (Method::POST, "/keys".to_string(), Some(json!({"principal": format!("{at}/robot")}))),
            (Method::GET, format!("/keys?principal={at}/robot"), None),
            (Method::DELETE, format!("/keys/{sa_key_id}"), None),
        ];
        // A maintainer of another team, a developer of it, and a user in no team at all.
        let (_, loner) = srv.user("loner").await;
        for outsider in [&b.maintainer.1, &b.developer.1, &loner] {
            for (method, path, body) in &calls {
                let mut req = outsider.request(method.clone(), path);
                if let Some(body) = body {
                    req = req.json(body);
                }
                let r = outsider.send(req).await;
                assert_eq!(r.status, StatusCode::NOT_FOUND, "{method} {path}: {}", r.body);
                assert_eq!(r.body["error"]["code"], "not_found", "{method} {path}");
                let message = r.body["error"]["message"].as_str().unwrap();
                assert!(!message.contains("secret-model") || path.contains("secret-model"), "{method} {path} leaks a name: {message}");
            }
            // The upload is refused before its body is read.
            outsider.upload(at, "secret-model", "m.txt", artifact.clone(), None).await.err(StatusCode::NOT_FOUND, "not_found");
            // Search across teams shows only what the caller may see.
            let visible = outsider.all_pages("/models?q=secret").await;
            assert!(visible.iter().all(|m| m["team"] != at.as_str()), "search leaked: {visible:?}");
            assert!(outsider.all_pages("/teams").await.iter().all(|t| t["name"] != at.as_str()));
        }
        assert_eq!(snapshot(&admin, &a.team).await, before, "an outsider changed something");
        // The key of team A's service account still works.
        owner.with_key(sa_key["secret"].as_str().unwrap()).get("/whoami").await.ok(StatusCode::OK);
    }

    async fn platform_reviewers_read_every_team_but_change_nothing(srv: &TestServer) {
        let a = srv.team().await;
        a.developer.1.post(&format!("/teams/{}/models", a.team), &json!({"name": "reviewed", "task": "regression"})).await.ok(StatusCode::CREATED);
        let name = crate::harness::unique("reviewer");
        srv.admin().post("/users", &json!({"name": name, "platform_role": "reviewer"})).await.ok(StatusCode::CREATED);
        let key = srv.admin().post("/keys", &json!({"principal": name})).await.ok(StatusCode::CREATED);
        let reviewer = srv.admin().with_key(key["secret"].as_str().unwrap());
        reviewer.get(&format!("/teams/{}/models/reviewed", a.team)).await.ok(StatusCode::OK);
        reviewer.patch(&format!("/teams/{}/models/reviewed", a.team), &json!({"description": "x"})).await.err(StatusCode::FORBIDDEN, "forbidden");
        reviewer.post(&format!("/teams/{}/models", a.team), &json!({"name": "r2", "task": "regression"})).await.err(StatusCode::FORBIDDEN, "forbidden");
    }
}
