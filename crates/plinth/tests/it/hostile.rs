//! No request takes the server down: inputs that drove recursion without a bound (nested JSON
//! arrays, left-deep SQL expressions, nested ONNX types) or memory without a bound (functions
//! that build huge values, shapes whose element count overflows) are refused with a clear
//! error, and the same server answers a normal request afterwards.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Api, TestServer, shared_server_tests};

/// A team with a public production deployment of the Adult LightGBM model.
async fn public_model(srv: &TestServer) -> (String, Api) {
    let t = srv.team().await;
    let m = t.maintainer.1.clone();
    m.post(
        &format!("/teams/{}/models", t.team),
        &json!({"name": "income", "task": "binary_classification"}),
    )
    .await
    .ok(StatusCode::CREATED);
    m.upload_fixture(&t.team, "income", "lightgbm_binary.txt").await.ok(StatusCode::CREATED);
    m.put(
        &format!("/deployments/{}/income/production", t.team),
        &json!({"versions": [{"version": 1, "weight": 100}], "public": true}),
    )
    .await
    .ok(StatusCode::OK);
    (t.team, m)
}

fn infer_body(data: &str, shape: &str) -> String {
    format!(r#"{{"inputs":[{{"name":"input","shape":{shape},"datatype":"FP32","data":{data}}}]}}"#)
}

/// A normal prediction, to show the server still serves.
async fn still_serves(srv: &TestServer, team: &str) {
    let body = infer_body("[[39, 13, 2174, 0, 40, 1]]", "[1, 6]");
    let r = srv
        .anonymous()
        .send(
            srv.anonymous()
                .request(reqwest::Method::POST, &format!("/v2/models/{team}.income/infer"))
                .body(body),
        )
        .await;
    let answer = r.ok(StatusCode::OK);
    assert_eq!(answer["outputs"][0]["name"], "label", "{answer}");
}

async fn sql(api: &Api, team: &str, sql: &str) -> (StatusCode, Value) {
    let r = api.post(&format!("/teams/{team}/query"), &json!({"sql": sql})).await;
    (r.status, r.body)
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A length-delimited protobuf field.
fn field(number: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    varint(u64::from(number) << 3 | 2, &mut out);
    varint(body.len() as u64, &mut out);
    out.extend_from_slice(body);
    out
}

/// `inner` inside `levels` levels of the fields `outer` (outermost first), built with every
/// length computed from the inside out (linear time).
fn nested(inner: &[u8], levels: usize, outer: &[u32]) -> Vec<u8> {
    let mut heads = Vec::new();
    let mut len = inner.len();
    for _ in 0..levels {
        for &f in outer.iter().rev() {
            let mut head = Vec::new();
            varint(u64::from(f) << 3 | 2, &mut head);
            varint(len as u64, &mut head);
            len += head.len();
            heads.push(head);
        }
    }
    let mut out: Vec<u8> = heads.into_iter().rev().flatten().collect();
    out.extend_from_slice(inner);
    out
}

shared_server_tests! {
    async fn a_file_five_thousand_columns_wide_is_stored_profiled_and_queried(srv: &TestServer) {
        // (It took 15-25 s in a release build when a batch was 65,536 rows of any width; a
        // batch is now about a million cells, which plinth-data's unit test holds.)
        let (team, m) = public_model(srv).await;
        let names: Vec<String> = (0..5000).map(|i| format!("c{i}")).collect();
        let row = |k: usize| (0..5000).map(|i| (i * k).to_string()).collect::<Vec<_>>().join(",");
        let csv = format!("{}\n{}\n{}\n", names.join(","), row(1), row(2));
        let upload = m.request(reqwest::Method::POST, &format!("/teams/{team}/datasets/wide/versions")).body(csv);
        let v = m.send(upload).await.ok(StatusCode::CREATED);
        assert_eq!((v["rows"].as_u64(), v["columns"].as_array().map(Vec::len)), (Some(2), Some(5000)), "{}", v["rows"]);
        assert_eq!(v["columns"][4999]["name"], "c4999");
        let (status, body) = sql(&m, &team, "SELECT SUM(c4999) AS s FROM wide").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.to_string().contains(&(4999 * 3).to_string()), "{body}");
    }

    async fn nested_json_arrays_on_the_inference_paths_are_refused(srv: &TestServer) {
        let (team, _) = public_model(srv).await;
        let anon = srv.anonymous();
        let deep = infer_body(&"[".repeat(20_000), "[1, 6]");
        for path in [format!("/v2/models/{team}.income/infer"), format!("/v2/models/{team}.income/versions/1/infer")] {
            let r = anon.send(anon.request(reqwest::Method::POST, &path).body(deep.clone())).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}: {}", r.body);
            assert!(r.body["error"].as_str().unwrap().contains("recursion limit"), "{}", r.body);
            still_serves(srv, &team).await;
        }
        // A shape whose element count overflows is named as such, not as "0 expected".
        let huge = infer_body("[1]", "[4294967296, 4294967296]");
        let r = anon.send(anon.request(reqwest::Method::POST, &format!("/v2/models/{team}.income/infer")).body(huge)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
        let message = r.body["error"].as_str().unwrap();
        assert!(message.contains("more elements than any request can"), "{message}");
        // Rows past the limit even when the row count does not fit 32 bits.
        let wide = infer_body("[]", "[4294967296, 0]");
        let r = anon.send(anon.request(reqwest::Method::POST, &format!("/v2/models/{team}.income/infer")).body(wide)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
        still_serves(srv, &team).await;
    }

    async fn sql_that_nests_deep_or_builds_huge_values_is_refused(srv: &TestServer) {
        let (team, m) = public_model(srv).await;
        let viewer = m.clone();
        let terms = |n: usize, op: &str| vec!["1"; n].join(op);
        let cases = [
            (format!("SELECT {}", terms(800, "+")), "nest more than"),
            (format!("SELECT 1 WHERE {}", terms(1000, " = 1 OR 1")), "nest more than"),
            (
                "SELECT SUM(length(repeat(CAST(v AS VARCHAR), 400000000))) FROM generate_series(1, 8) t(v)".to_string(),
                "repeat() would build",
            ),
            ("SELECT repeat('x', 100000000)".to_string(), "repeat() would build"),
            ("SELECT lpad('x', 2000000000)".to_string(), "lpad() would build"),
            // Each `||` copies its sides: 80 of them over 8 MB of strings would build 2.6 GB.
            (
                format!(
                    "WITH a AS (SELECT repeat(CAST(v AS VARCHAR), 1000000) AS s FROM generate_series(1, 8) t(v)) SELECT length({}) AS n FROM a",
                    vec!["s"; 80].join(" || ")
                ),
                "|| would build",
            ),
            (format!("SELECT '{}'", "x".repeat(70_000)), "string constants"),
        ];
        for (query, needle) in cases {
            let (status, body) = sql(&viewer, &team, &query).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{}: {body}", &query[..query.len().min(80)]);
            let message = body["error"]["message"].as_str().unwrap();
            assert!(message.contains(needle), "{}: {message}", &query[..query.len().min(80)]);
            assert!(message.len() < 2_000, "the message echoes the query: {} bytes", message.len());
            still_serves(srv, &team).await;
        }
        // What stays within bounds still runs: a chain of a hundred terms, strings built by
        // functions, `||` keeping its NULL semantics and its column name.
        let (status, body) = sql(&viewer, &team, &format!("SELECT {} AS n", terms(100, "+"))).await;
        assert_eq!((status, body["n"].as_i64()), (StatusCode::OK, Some(100)), "{body}");
        let (status, body) = sql(
            &viewer,
            &team,
            "SELECT length(repeat('ab', 1000)) AS r, 'a' || 'b' AS c, 'a' || NULL AS n, lpad('7', 3, '0') AS p",
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        // (JSON lines leave NULL values out.)
        assert_eq!(body, json!({"r": 2000, "c": "ab", "p": "007"}), "{body}");
    }

    async fn deeply_nested_onnx_files_are_refused_at_upload(srv: &TestServer) {
        let (team, m) = public_model(srv).await;
        // A graph input whose type is a sequence of a sequence of ... 100,000 levels deep:
        // TypeProto.sequence_type (4) { elem_type (1): TypeProto }.
        let ty = nested(&field(1, &[0x08, 1]), 100_000, &[4, 1]);
        let input = [field(1, b"input"), field(2, &ty)].concat();
        let mut model = vec![0x08, 8];
        model.extend(field(7, &field(11, &input)));
        let e = m.upload(&team, "income", "deep.onnx", model, None).await.err(StatusCode::UNPROCESSABLE_ENTITY, "invalid_model");
        assert!(e["message"].as_str().unwrap().contains("nest more than"), "{e}");
        still_serves(srv, &team).await;
    }
}
