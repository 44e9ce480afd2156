//! The feature store through the API: entities and views checked against their dataset,
//! materialization (full and incremental) into the embedded store and into Redis, online reads
//! of many entities × features, pushes that never go back in time, freshness, isolation.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{
    Api, ServerOptions, TestServer, backend_tests, shared_server_tests, wait_for,
};

const TRIPS_V1: &str = "driver_id,event_timestamp,created,conv_rate,trips,city
1,2024-05-01T10:00:00Z,2024-05-01T10:00:00Z,0.5,10,Lyon
1,2024-05-01T12:00:00Z,2024-05-01T12:00:00Z,0.6,12,Lyon
1,2024-05-01T12:00:00Z,2024-05-02T00:00:00Z,0.65,13,Lyon
2,2024-05-01T09:00:00Z,2024-05-01T09:00:00Z,0.9,3,Paris
3,2024-04-01T09:00:00Z,2024-04-01T09:00:00Z,,7,
";

const TRIPS_V2: &str = "driver_id,event_timestamp,created,conv_rate,trips,city
2,2024-05-03T09:00:00Z,2024-05-03T09:00:00Z,0.95,4,Paris
4,2024-05-03T09:00:00Z,2024-05-03T09:00:00Z,0.1,1,Nice
1,2024-04-01T09:00:00Z,2024-04-01T09:00:00Z,0.0,0,Lyon
";

async fn upload(api: &Api, team: &str, name: &str, csv: &str) {
    let req = api
        .request(reqwest::Method::POST, &format!("/teams/{team}/datasets/{name}/versions"))
        .body(csv.as_bytes().to_vec());
    api.send(req).await.ok(StatusCode::CREATED);
}

async fn wait_job(api: &Api, id: &str) -> Value {
    wait_for(&format!("materialization {id} to finish"), Duration::from_secs(30), async || {
        let j = api.get(&format!("/materializations/{id}")).await.ok(StatusCode::OK);
        (j["status"] == "succeeded" || j["status"] == "failed").then_some(j)
    })
    .await
}

fn view_body(name: &str) -> Value {
    json!({
        "name": name, "entity": "driver", "source": {"name": "trips"},
        "timestamp_field": "event_timestamp", "created_timestamp_field": "created",
        "features": [{"name": "conv_rate", "type": "float64"}, {"name": "trips", "type": "int64"}, {"name": "city", "type": "string"}],
        "ttl_seconds": 86400
    })
}

/// Entity, view, materialization, reads: the flow every store must support.
async fn online_flow(srv: &TestServer) {
    let t = srv.team().await;
    let (team, m) = (t.team.clone(), &t.developer.1);
    upload(m, &team, "trips", TRIPS_V1).await;
    m.post(
        &format!("/teams/{team}/entities"),
        &json!({"name": "driver", "join_keys": [{"name": "driver_id", "type": "int64"}]}),
    )
    .await
    .ok(StatusCode::CREATED);

    // A view over a missing column, a timestamp that is not one, a wrongly typed feature.
    let mut bad = view_body("stats");
    bad["features"][0]["name"] = json!("rating");
    let e = m
        .post(&format!("/teams/{team}/feature-views"), &bad)
        .await
        .err(StatusCode::BAD_REQUEST, "invalid_field");
    assert_eq!(e["field"], "features[0].name");
    assert!(e["message"].as_str().unwrap().contains("no column 'rating'"), "{e}");
    let mut bad = view_body("stats");
    bad["timestamp_field"] = json!("conv_rate");
    let e = m
        .post(&format!("/teams/{team}/feature-views"), &bad)
        .await
        .err(StatusCode::BAD_REQUEST, "invalid_field");
    assert_eq!(e["field"], "timestamp_field");
    assert!(e["message"].as_str().unwrap().contains("not timestamps"), "{e}");
    let mut bad = view_body("stats");
    bad["features"][2]["type"] = json!("float64");
    let e = m
        .post(&format!("/teams/{team}/feature-views"), &bad)
        .await
        .err(StatusCode::BAD_REQUEST, "invalid_field");
    assert_eq!(e["field"], "features[2].type");

    let v = m
        .post(&format!("/teams/{team}/feature-views"), &view_body("stats"))
        .await
        .ok(StatusCode::CREATED);
    assert_eq!(v["freshness"]["stale"], true, "nothing written yet");
    let read = |ids: Value| {
        let body = json!({"features": ["stats:conv_rate", "stats:trips", "stats:city"], "entities": {"driver_id": ids}});
        let path = format!("/teams/{team}/features/online");
        async move { m.post(&path, &body).await }
    };
    let before = read(json!([1])).await.ok(StatusCode::OK);
    assert_eq!(before["results"][1]["statuses"], json!(["NOT_FOUND"]));

    let job = m
        .post(&format!("/teams/{team}/feature-views/stats/materialize"), &json!({}))
        .await
        .ok(StatusCode::ACCEPTED);
    let done = wait_job(m, job["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["result"]["entities"], 3);
    let got = read(json!([1, 2, 3, 99])).await.ok(StatusCode::OK);
    assert_eq!(
        got["metadata"]["feature_names"],
        json!(["driver_id", "conv_rate", "trips", "city"])
    );
    // Driver 1: the 12:00 row created last (the correction); 3 has nulls; 99 is unknown.
    assert_eq!(got["results"][1]["values"], json!([0.65, 0.9, null, null]));
    assert_eq!(got["results"][2]["values"], json!([13, 3, 7, null]));
    assert_eq!(got["results"][3]["values"], json!(["Lyon", "Paris", null, null]));
    assert_eq!(
        got["results"][1]["statuses"],
        json!(["PRESENT", "PRESENT", "PRESENT", "NOT_FOUND"])
    );
    assert_eq!(got["results"][1]["event_timestamps"][0], "2024-05-01T12:00:00Z");

    // Bad reads: a key of the wrong type, an unknown feature, a missing join key.
    let e = read(json!(["one"])).await.err(StatusCode::BAD_REQUEST, "invalid_field");
    assert_eq!(e["field"], "entities.driver_id[0]");
    let e = m
        .post(
            &format!("/teams/{team}/features/online"),
            &json!({"features": ["stats:speed"], "entities": {"driver_id": [1]}}),
        )
        .await
        .err(StatusCode::BAD_REQUEST, "invalid_field");
    assert!(e["message"].as_str().unwrap().contains("no feature 'speed'"), "{e}");
    let e = m
        .post(
            &format!("/teams/{team}/features/online"),
            &json!({"features": ["stats:trips"], "entities": {"driver": [1]}}),
        )
        .await
        .err(StatusCode::BAD_REQUEST, "missing_field");
    assert_eq!(e["field"], "entities.driver_id");

    // Pushes: newer values land, older ones never replace them, bad rows are refused whole.
    let push = |rows: Value| {
        let path = format!("/teams/{team}/features/push");
        async move { m.post(&path, &json!({"feature_view": "stats", "rows": rows})).await }
    };
    let p = push(json!([{"driver_id": 2, "event_timestamp": "2024-05-02T00:00:00Z", "conv_rate": 0.99, "trips": 5, "city": "Paris"},
                        {"driver_id": 1, "event_timestamp": "2024-04-01T00:00:00Z", "conv_rate": 0.0, "trips": 0}])).await.ok(StatusCode::OK);
    assert_eq!((p["received"].as_u64(), p["written"].as_u64()), (Some(2), Some(1)));
    let e =
        push(json!([{"driver_id": 2, "event_timestamp": "2024-05-05T00:00:00Z", "trips": "many"}]))
            .await
            .err(StatusCode::BAD_REQUEST, "invalid_field");
    assert_eq!(e["field"], "rows[0].trips");
    let e = push(json!([{"driver_id": 2, "trips": 1}]))
        .await
        .err(StatusCode::BAD_REQUEST, "missing_field");
    assert_eq!(e["field"], "rows[0].event_timestamp");
    let got = read(json!([1, 2])).await.ok(StatusCode::OK);
    assert_eq!(got["results"][1]["values"], json!([0.65, 0.99]));

    // Incremental: only rows newer than the watermark (2024-05-01T12:00) are written.
    upload(m, &team, "trips", TRIPS_V2).await;
    let job = m
        .post(
            &format!("/teams/{team}/feature-views/stats/materialize"),
            &json!({"incremental": true}),
        )
        .await
        .ok(StatusCode::ACCEPTED);
    let done = wait_job(m, job["id"].as_str().unwrap()).await;
    assert_eq!(done["result"]["entities"], 2, "{done}");
    let got = read(json!([1, 2, 4])).await.ok(StatusCode::OK);
    assert_eq!(got["results"][1]["values"], json!([0.65, 0.95, 0.1]));

    // Freshness: the newest event and the watermark, stale against a one-hour SLA.
    let v = m.get(&format!("/teams/{team}/feature-views/stats")).await.ok(StatusCode::OK);
    assert_eq!(v["freshness"]["last_event_at"], "2024-05-03T09:00:00Z");
    assert_eq!(v["freshness"]["watermark"], "2024-05-03T09:00:00Z");
    assert_eq!(v["freshness"]["stale"], true);
    let metrics = srv.admin().get("/metrics").await.body.as_str().unwrap_or_default().to_string();
    assert!(
        metrics.contains(&format!("plinth_feature_view_stale{{team=\"{team}\",view=\"stats\"}} 1")),
        "{metrics}"
    );

    // A feature service reads the same values.
    m.post(
        &format!("/teams/{team}/feature-services"),
        &json!({"name": "ranking", "features": ["stats:conv_rate"]}),
    )
    .await
    .ok(StatusCode::CREATED);
    let got = m
        .post(
            &format!("/teams/{team}/features/online"),
            &json!({"feature_service": "ranking", "entities": {"driver_id": [4]}}),
        )
        .await
        .ok(StatusCode::OK);
    assert_eq!(got["results"][1]["values"], json!([0.1]));

    // Isolation: another team and anonymous callers see nothing of a private view.
    let other = srv.team().await;
    other
        .maintainer
        .1
        .post(
            &format!("/teams/{team}/features/online"),
            &json!({"features": ["stats:trips"], "entities": {"driver_id": [1]}}),
        )
        .await
        .err(StatusCode::NOT_FOUND, "not_found");
    srv.anonymous()
        .post(
            &format!("/teams/{team}/features/online"),
            &json!({"features": ["stats:trips"], "entities": {"driver_id": [1]}}),
        )
        .await
        .err(StatusCode::UNAUTHORIZED, "unauthenticated");
}

shared_server_tests! {
    async fn online_features_on_the_embedded_store(srv: &TestServer) {
        online_flow(srv).await;
    }
}

backend_tests! {
    async fn online_features_on_redis(backend: Backend) {
        let url = crate::harness::redis_url();
        let srv = TestServer::start(ServerOptions { online_store_url: Some(url), ..ServerOptions::new(backend) }).await;
        online_flow(&srv).await;
        srv.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_through_nats_reach_online_reads_within_a_second() {
    use plinth_core::features::nats::NatsOptions;
    let url =
        std::env::var("PLINTH_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    // A stream and subjects of this test's own, so servers of other tests consume nothing here.
    let id = crate::harness::unique("nats").replace('-', "_");
    let opts = NatsOptions {
        url: url.clone(),
        stream: format!("PLINTH_TEST_{id}"),
        subject_prefix: format!("plinth-test.{id}"),
    };
    let srv = TestServer::start(ServerOptions {
        nats: Some(opts.clone()),
        ..ServerOptions::new(crate::harness::Backend::Sqlite)
    })
    .await;
    let t = srv.team().await;
    let (team, m) = (t.team.clone(), &t.developer.1);
    upload(m, &team, "trips", TRIPS_V1).await;
    m.post(
        &format!("/teams/{team}/entities"),
        &json!({"name": "driver", "join_keys": [{"name": "driver_id", "type": "int64"}]}),
    )
    .await
    .ok(StatusCode::CREATED);
    m.post(&format!("/teams/{team}/feature-views"), &view_body("stats"))
        .await
        .ok(StatusCode::CREATED);

    let js = async_nats::jetstream::new(
        async_nats::connect(&url).await.expect("NATS on 127.0.0.1:4222"),
    );
    let subject = format!("{}.{team}.stats", opts.subject_prefix);
    // A bad message is dropped without blocking the ones behind it.
    js.publish(subject.clone(), "not json".into()).await.unwrap().await.unwrap();
    let rows = json!([{"driver_id": 7, "event_timestamp": "2024-06-01T00:00:00Z", "conv_rate": 0.42, "trips": 9, "city": "Lille"}]);
    js.publish(subject, rows.to_string().into()).await.unwrap().await.unwrap();
    let body =
        json!({"features": ["stats:conv_rate", "stats:city"], "entities": {"driver_id": [7]}});
    let got = wait_for("the NATS push in an online read", Duration::from_secs(1), async || {
        let got = m.post(&format!("/teams/{team}/features/online"), &body).await.ok(StatusCode::OK);
        (got["results"][1]["statuses"][0] == "PRESENT").then_some(got)
    })
    .await;
    assert_eq!(got["results"][1]["values"], json!([0.42]));
    assert_eq!(got["results"][2]["values"], json!(["Lille"]));
    // Freshness is recorded just after the values land.
    let v = wait_for("the push in the view's freshness", Duration::from_secs(5), async || {
        let v = m.get(&format!("/teams/{team}/feature-views/stats")).await.ok(StatusCode::OK);
        (!v["freshness"]["last_event_at"].is_null()).then_some(v)
    })
    .await;
    assert_eq!(v["freshness"]["last_event_at"], "2024-06-01T00:00:00Z");
    srv.stop().await;
    // Leave the broker as it was.
    let _ = js.delete_stream(&opts.stream).await;
}

shared_server_tests! {
    async fn training_sets_are_point_in_time_correct(srv: &TestServer) {
        let t = srv.team().await;
        let (team, m) = (t.team.clone(), &t.developer.1);
        upload(m, &team, "trips", TRIPS_V1).await;
        m.post(&format!("/teams/{team}/entities"), &json!({"name": "driver", "join_keys": [{"name": "driver_id", "type": "int64"}]})).await.ok(StatusCode::CREATED);
        m.post(&format!("/teams/{team}/feature-views"), &view_body("stats")).await.ok(StatusCode::CREATED);
        m.post(&format!("/teams/{team}/feature-services"), &json!({"name": "ranking", "features": ["stats:conv_rate", "stats:city"]})).await.ok(StatusCode::CREATED);
        // Labels at various times: before any row, at an exact time (the later-created row wins),
        // within and beyond the one-day TTL, an unknown driver.
        let labels = "driver_id,event_timestamp,label
1,2024-05-01T09:00:00Z,0
1,2024-05-01T12:00:00Z,1
1,2024-05-02T11:59:59Z,1
1,2024-05-02T12:00:01Z,0
2,2024-05-01T10:00:00Z,1
9,2024-05-01T10:00:00Z,0
";
        upload(m, &team, "labels", labels).await;
        let v = m.post(&format!("/teams/{team}/training-sets"), &json!({"name": "train", "entities": {"name": "labels"}, "feature_service": "ranking"})).await.ok(StatusCode::CREATED);
        assert_eq!((v["rows"].as_u64(), v["format"].as_str()), (Some(6), Some("parquet")), "every label row is kept: {v}");
        assert!(v["source"].as_str().unwrap().contains("entities labels@1") && v["source"].as_str().unwrap().contains("stats@trips@1"), "{v}");
        let cols = v["columns"].as_array().unwrap();
        let conv = cols.iter().find(|c| c["name"] == "conv_rate").unwrap();
        // Rows 2, 3 and 5 match (0.65, 0.65, 0.9); rows 1, 4 and 6 do not.
        assert_eq!(conv["nulls"], 3, "{conv}");
        assert_eq!(conv["max"], 0.9);
        assert_eq!(conv["min"], 0.65);
        let e = m.post(&format!("/teams/{team}/training-sets"), &json!({"name": "bad", "entities": {"name": "labels"}, "entity_timestamp": "label", "features": ["stats:trips"]})).await.err(StatusCode::BAD_REQUEST, "invalid_field");
        assert_eq!(e["field"], "entity_timestamp");
        let e = m.post(&format!("/teams/{team}/training-sets"), &json!({"name": "bad", "entities": {"name": "trips"}, "features": ["stats:nope"]})).await.err(StatusCode::BAD_REQUEST, "invalid_field");
        assert_eq!(e["field"], "features[0]");
    }
}

shared_server_tests! {
    async fn predictions_by_entity_key_read_the_online_features(srv: &TestServer) {
        let t = srv.team().await;
        let (team, m) = (t.team.clone(), &t.maintainer.1);
        let people = "person_id,event_timestamp,age,education_num,capital_gain,capital_loss,hours_per_week
1,2024-01-01T00:00:00Z,39,13,2174,0,40
2,2024-01-01T00:00:00Z,50,13,0,0,13
3,2024-01-01T00:00:00Z,38,9,0,0,40
";
        upload(m, &team, "people", people).await;
        m.post(&format!("/teams/{team}/entities"), &json!({"name": "person", "join_keys": [{"name": "person_id", "type": "int64"}]})).await.ok(StatusCode::CREATED);
        let names = ["age", "education_num", "capital_gain", "capital_loss", "hours_per_week"];
        let features: Vec<Value> = names.iter().map(|n| json!({"name": n, "type": "float64"})).collect();
        m.post(&format!("/teams/{team}/feature-views"), &json!({"name": "census", "entity": "person", "source": {"name": "people"}, "timestamp_field": "event_timestamp", "features": features})).await.ok(StatusCode::CREATED);
        let refs: Vec<String> = names.iter().map(|n| format!("census:{n}")).collect();
        m.post(&format!("/teams/{team}/feature-services"), &json!({"name": "income-inputs", "features": refs[..4]})).await.ok(StatusCode::CREATED);
        m.post(&format!("/teams/{team}/feature-services"), &json!({"name": "income-all", "features": refs})).await.ok(StatusCode::CREATED);
        m.post(&format!("/teams/{team}/models"), &json!({"name": "income", "task": "binary_classification"})).await.ok(StatusCode::CREATED);
        let model = std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/eval/adult_v2.txt")).unwrap();
        // A service that lacks a model input is refused at registration, naming both sides.
        let e = m.upload(&team, "income", "m.txt", model.clone(), Some(json!({"feature_service": "income-inputs"}))).await.err(StatusCode::BAD_REQUEST, "invalid_field");
        assert_eq!(e["field"], "metadata.feature_service");
        assert!(e["message"].as_str().unwrap().contains("hours_per_week"), "{e}");
        let v = m.upload(&team, "income", "m.txt", model, Some(json!({"feature_service": "income-all"}))).await.ok(StatusCode::CREATED);
        assert_eq!(v["feature_service"], "income-all");
        m.put(&format!("/deployments/{team}/income/production"), &json!({"versions": [{"version": 1, "weight": 100}]})).await.ok(StatusCode::OK);
        let job = m.post(&format!("/teams/{team}/feature-views/census/materialize"), &json!({})).await.ok(StatusCode::ACCEPTED);
        assert_eq!(wait_job(m, job["id"].as_str().unwrap()).await["status"], "succeeded");

        let path = format!("/deployments/{team}/income/production/predict");
        let by_key = m.post(&path, &json!({"entities": {"person_id": [1, 2, 3]}})).await.ok(StatusCode::OK);
        let rows = json!({"rows": [[39, 13, 2174, 0, 40], [50, 13, 0, 0, 13], [38, 9, 0, 0, 40]]});
        let by_value = m.post(&path, &rows).await.ok(StatusCode::OK);
        assert_eq!(by_key["probabilities"], by_value["probabilities"]);
        assert_eq!(by_key["predictions"], by_value["predictions"]);
        // The features it used are in the prediction log.
        let log_path = format!("/deployments/{team}/income/production/predictions?limit=10");
        let logged = wait_for("the prediction in the log", Duration::from_secs(10), async || {
            let log = m.get(&log_path).await.ok(StatusCode::OK);
            log.as_array().unwrap().iter().find(|r| r["request_id"] == by_key["request_id"]).cloned()
        })
        .await;
        assert_eq!(logged["inputs"]["input"]["shape"], json!([3, 5]));
        // Bad input: a key of the wrong type, entities and rows together.
        let e = m.post(&path, &json!({"entities": {"person_id": ["x"]}})).await.err(StatusCode::BAD_REQUEST, "invalid_field");
        assert_eq!(e["field"], "entities.person_id[0]");
        let e = m.post(&path, &json!({"entities": {"person_id": [1]}, "rows": [[1, 2, 3, 4, 5]]})).await.err(StatusCode::BAD_REQUEST, "invalid_field");
        assert_eq!(e["field"], "entities");
    }
}
