//! The API's shape: probes, the OpenAPI document and error catalogue (kept in sync with the
//! repository), authentication, identities, keys and the audit log.

use std::path::Path;

use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{shared_server_tests, unique};

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().and_then(Path::parent).expect("repo root")
}

/// Compares a generated file with its checked-in copy; `UPDATE_GENERATED=1` rewrites it.
fn check_generated(relative: &str, generated: &str) {
    let path = repo_root().join(relative);
    if std::env::var_os("UPDATE_GENERATED").is_some() {
        std::fs::write(&path, generated).expect("write generated file");
        return;
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == generated,
        "{relative} is out of date: run `UPDATE_GENERATED=1 cargo test -p plinth --test it generated` and commit it"
    );
}

#[test]
fn generated_openapi_document_is_checked_in() {
    check_generated("openapi.json", &plinth_server::openapi::document());
}

#[test]
fn generated_error_catalogue_is_checked_in() {
    check_generated("docs/errors.md", &plinth_api::error::catalogue_markdown());
}

shared_server_tests! {
    async fn probes_and_openapi_are_served(srv: &TestServer) {
        let anon = srv.anonymous();
        assert_eq!(anon.get("/healthz").await.ok(StatusCode::OK)["status"], "ok");
        assert_eq!(anon.get("/readyz").await.ok(StatusCode::OK)["status"], "ready");
        let doc = anon.get("/api/v1/openapi.json").await.ok(StatusCode::OK);
        assert!(doc["paths"]["/api/v1/teams/{team}/models/{model}/versions"]["post"].is_object());
        assert_eq!(doc, serde_json::from_str::<serde_json::Value>(&plinth_server::openapi::document()).unwrap());
        // Every route is in the document, with the errors it can answer.
        for path in ["/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer", "/v2", "/healthz", "/readyz", "/metrics", "/api/v1/openapi.json"] {
            assert!(doc["paths"][path].is_object(), "{path} is not documented");
        }
        for (path, ops) in doc["paths"].as_object().unwrap() {
            if !path.starts_with("/api/v1/") || path.ends_with("openapi.json") {
                continue;
            }
            for (method, op) in ops.as_object().unwrap() {
                for status in ["400", "401", "404"] {
                    assert!(op["responses"][status].is_object(), "{method} {path} does not document {status}");
                }
                if op["requestBody"].is_object() {
                    assert!(op["responses"]["415"].is_object(), "{method} {path} does not document 415");
                }
            }
        }
        let e = anon.get("/api/v1/nothing-here").await.err(StatusCode::NOT_FOUND, "route_not_found");
        assert!(e["request_id"].as_str().unwrap().starts_with("req_"));
        let r = anon.delete("/api/v1/teams").await;
        let id = r.headers["x-request-id"].to_str().unwrap().to_string();
        let e = r.err(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
        assert_eq!(e["request_id"], id.as_str(), "the 405 body names its request: {e}");
    }

    async fn requests_need_a_valid_key(srv: &TestServer) {
        let anon = srv.anonymous();
        let r = anon.get("/teams").await;
        assert_eq!(r.headers["www-authenticate"], "Bearer");
        r.err(StatusCode::UNAUTHORIZED, "unauthenticated");
        srv.admin().with_key("plk_0000000000000000_000000000000000000000000000000000000000000000000").get("/teams").await.err(StatusCode::UNAUTHORIZED, "unauthenticated");
        srv.admin().with_key("not a key").get("/whoami").await.err(StatusCode::UNAUTHORIZED, "unauthenticated");
        let who = srv.admin().get("/whoami").await.ok(StatusCode::OK);
        assert_eq!(who["principal"]["name"], "admin");
        assert_eq!(who["principal"]["platform_role"], "admin");
        // The request id a client sends comes back, in the header and in errors.
        let r = anon.send(anon.request(reqwest::Method::GET, "/teams").header("x-request-id", "my-trace-1")).await;
        assert_eq!(r.headers["x-request-id"], "my-trace-1");
        assert_eq!(r.body["error"]["request_id"], "my-trace-1");
    }

    async fn keys_expire_and_revoke(srv: &TestServer) {
        let (name, user) = srv.user("keyuser").await;
        let created = user.post("/keys", &json!({"name": "laptop"})).await.ok(StatusCode::CREATED);
        let secret = created["secret"].as_str().unwrap().to_string();
        assert!(secret.starts_with("plk_"));
        assert_eq!(created["key"]["principal"], name);
        let laptop = user.with_key(&secret);
        laptop.get("/whoami").await.ok(StatusCode::OK);
        let keys = user.all_pages("/keys").await;
        assert_eq!(keys.len(), 2);
        assert!(keys.iter().all(|k| k.get("secret").is_none() && k.get("secret_hash").is_none()), "secrets never listed");
        let id = created["key"]["id"].as_str().unwrap();
        let revoked = user.delete(&format!("/keys/{id}")).await.ok(StatusCode::OK);
        assert!(revoked["revoked_at"].is_string());
        laptop.get("/whoami").await.err(StatusCode::UNAUTHORIZED, "key_revoked");
        // An expired key stops working at its expiry.
        let soon = (time::OffsetDateTime::now_utc() + time::Duration::seconds(1)).format(&time::format_description::well_known::Rfc3339).unwrap();
        let short = user.post("/keys", &json!({"name": "short", "expires_at": soon})).await.ok(StatusCode::CREATED);
        let short_api = user.with_key(short["secret"].as_str().unwrap());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(50));
        loop {
            tick.tick().await;
            let r = short_api.get("/whoami").await;
            if r.status == StatusCode::UNAUTHORIZED {
                r.err(StatusCode::UNAUTHORIZED, "key_expired");
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the key never expired");
        }
        let past = user.post("/keys", &json!({"expires_at": "2001-01-01T00:00:00Z"})).await.err(StatusCode::BAD_REQUEST, "invalid_field");
        assert_eq!(past["field"], "expires_at");
        // Users cannot make keys for others; admins can.
        let (other, _) = srv.user("other").await;
        user.post("/keys", &json!({"principal": other})).await.err(StatusCode::NOT_FOUND, "not_found");
        srv.admin().post("/keys", &json!({"principal": other})).await.ok(StatusCode::CREATED);
    }

    async fn teams_members_and_service_accounts(srv: &TestServer) {
        let t = srv.team().await;
        let maint = &t.maintainer.1;
        // Non-admins cannot create teams or users.
        maint.post("/teams", &json!({"name": unique("t")})).await.err(StatusCode::FORBIDDEN, "forbidden");
        maint.post("/users", &json!({"name": unique("u")})).await.err(StatusCode::FORBIDDEN, "forbidden");
        // A member sees its team, with its role.
        let teams = maint.all_pages("/teams").await;
        assert_eq!(teams.len(), 1);
        assert_eq!(teams[0]["your_role"], "maintainer");
        let members = maint.all_pages(&format!("/teams/{}/members", t.team)).await;
        assert_eq!(members.len(), 3);
        // A service account: owned by the team, keys made by the maintainer, acting with its role.
        let sa = maint.post(&format!("/teams/{}/service-accounts", t.team), &json!({"name": "ci", "role": "developer"})).await.ok(StatusCode::CREATED);
        let sa_name = format!("{}/ci", t.team);
        assert_eq!(sa["name"], sa_name);
        assert_eq!(sa["kind"], "service_account");
        let key = maint.post("/keys", &json!({"principal": sa_name, "name": "pipeline"})).await.ok(StatusCode::CREATED);
        let ci = maint.with_key(key["secret"].as_str().unwrap());
        ci.post(&format!("/teams/{}/models", t.team), &json!({"name": "from-ci", "task": "regression"})).await.ok(StatusCode::CREATED);
        t.developer.1.post("/keys", &json!({"principal": sa_name})).await.err(StatusCode::NOT_FOUND, "not_found");
        // Role changes take effect; removal ends access.
        let viewer_name = &t.viewer.0;
        maint.put(&format!("/teams/{}/members/{viewer_name}", t.team), &json!({"role": "developer"})).await.ok(StatusCode::OK);
        t.viewer.1.post(&format!("/teams/{}/models", t.team), &json!({"name": "promoted", "task": "regression"})).await.ok(StatusCode::CREATED);
        maint.delete(&format!("/teams/{}/members/{viewer_name}", t.team)).await.ok(StatusCode::NO_CONTENT);
        t.viewer.1.get(&format!("/teams/{}/models", t.team)).await.err(StatusCode::NOT_FOUND, "not_found");
        let e = maint.put(&format!("/teams/{}/members/{viewer_name}", t.team), &json!({"role": "owner"})).await.err(StatusCode::BAD_REQUEST, "invalid_field");
        assert_eq!(e["field"], "role");
        t.developer.1.put(&format!("/teams/{}/members/{viewer_name}", t.team), &json!({"role": "viewer"})).await.err(StatusCode::FORBIDDEN, "forbidden");
    }

    async fn every_mutation_has_its_audit_entry(srv: &TestServer) {
        let t = srv.team().await;
        let (dev, maint) = (&t.developer.1, &t.maintainer.1);
        dev.post(&format!("/teams/{}/models", t.team), &json!({"name": "audited", "task": "regression"})).await.ok(StatusCode::CREATED);
        dev.patch(&format!("/teams/{}/models/audited", t.team), &json!({"description": "d"})).await.ok(StatusCode::OK);
        dev.upload_fixture(&t.team, "audited", "lightgbm_regression.txt").await.ok(StatusCode::CREATED);
        dev.patch(&format!("/teams/{}/models/audited/versions/1", t.team), &json!({"card": {"risk_tier": "low"}})).await.ok(StatusCode::OK);
        maint.post(&format!("/teams/{}/models/audited/versions/1/archive", t.team), &json!({})).await.ok(StatusCode::OK);
        maint.post(&format!("/teams/{}/models/audited/archive", t.team), &json!({})).await.ok(StatusCode::OK);
        maint.post(&format!("/teams/{}/service-accounts", t.team), &json!({"name": "bot"})).await.ok(StatusCode::CREATED);
        let entries = maint.all_pages(&format!("/audit?team={}", t.team)).await;
        let mut actions: Vec<&str> = entries.iter().map(|e| e["action"].as_str().unwrap()).collect();
        actions.reverse();
        assert_eq!(
            actions,
            vec![
                "team.create", "team.member.set", "team.member.set", "team.member.set",
                "model.create", "model.update", "model_version.create", "model_version.update",
                "model_version.archive", "model.archive", "service_account.create",
            ]
        );
        let upload = entries.iter().find(|e| e["action"] == "model_version.create").unwrap();
        assert_eq!(upload["actor"], t.developer.0);
        assert_eq!(upload["object_name"], "audited@1");
        assert_eq!(upload["summary"]["format"], "lightgbm");
        assert!(upload["request_id"].as_str().unwrap().starts_with("req_"));
        // Filters: by action prefix, by actor, by time.
        assert_eq!(maint.all_pages(&format!("/audit?team={}&action=model_version.", t.team)).await.len(), 3);
        assert_eq!(maint.all_pages(&format!("/audit?team={}&actor={}", t.team, t.developer.0)).await.len(), 4);
        assert_eq!(maint.all_pages(&format!("/audit?team={}&until=2000-01-01T00:00:00Z", t.team)).await.len(), 0);
        // Developers and viewers cannot read the audit log; only admins read it whole.
        dev.get(&format!("/audit?team={}", t.team)).await.err(StatusCode::FORBIDDEN, "forbidden");
        maint.get("/audit").await.err(StatusCode::FORBIDDEN, "forbidden");
        let all = srv.admin().get("/audit?action=team.create&limit=500").await.ok(StatusCode::OK);
        assert!(all["items"].as_array().unwrap().iter().any(|e| e["team"] == t.team.as_str()));
    }
}
