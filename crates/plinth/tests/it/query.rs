//! Governed SQL through the API and the CLI: a team queries its datasets and the ones granted
//! to it, in JSON lines, CSV and Parquet, saves results as datasets with the query as lineage,
//! and cannot reach anything else — file functions, catalog queries, quoted names of other
//! teams' tables, path tricks, DDL — each attempt refused with a clear message.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Api, shared_server_tests, unique};

const SALES: &str = "region,amount,at
north,10,2024-01-01T00:00:00Z
south,5,2024-01-02T00:00:00Z
north,7,2024-01-03T00:00:00Z
";

async fn upload(api: &Api, team: &str, name: &str, csv: &str) {
    let req = api
        .request(reqwest::Method::POST, &format!("/teams/{team}/datasets/{name}/versions"))
        .body(csv.as_bytes().to_vec());
    api.send(req).await.ok(StatusCode::CREATED);
}

async fn query(api: &Api, team: &str, body: Value) -> reqwest::Response {
    api.request(reqwest::Method::POST, &format!("/teams/{team}/query"))
        .bearer_auth(api.key())
        .header(reqwest::header::TE, "trailers")
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// A streamed answer read to its end: the data frames and the trailers.
async fn streamed(r: reqwest::Response) -> (Vec<bytes::Bytes>, reqwest::header::HeaderMap) {
    use http_body_util::BodyExt;
    let mut body = http::Response::from(r).into_body();
    let (mut frames, mut trailers) = (Vec::new(), reqwest::header::HeaderMap::new());
    while let Some(frame) = body.frame().await {
        match frame.expect("the stream completes").into_data() {
            Ok(data) => frames.push(data),
            Err(f) => trailers = f.into_trailers().expect("data or trailers"),
        }
    }
    (frames, trailers)
}

/// The rows and the trailers of a streamed answer.
async fn text_and_trailers(r: reqwest::Response) -> (String, reqwest::header::HeaderMap) {
    let (frames, trailers) = streamed(r).await;
    (String::from_utf8(frames.concat()).unwrap(), trailers)
}

async fn refused(api: &Api, team: &str, sql: &str) -> String {
    let r = query(api, team, json!({"sql": sql})).await;
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert!(status.is_client_error(), "{sql} was not refused: {status} {body}");
    body["error"]["message"].as_str().unwrap().to_string()
}

shared_server_tests! {
    async fn query_results_stream_while_the_query_runs(srv: &TestServer) {
        let a = srv.team().await;
        let (ta, ma) = (a.team.clone(), &a.maintainer.1);
        let mut csv = String::from("id,name,score\n");
        for i in 0..200_000 {
            csv.push_str(&format!("{i},n{},{}.5\n", i % 13, i % 7));
        }
        upload(ma, &ta, "big", &csv).await;
        // Sent in pieces as batches are produced, not as one computed body.
        for format in ["jsonl", "csv", "parquet"] {
            let r = query(ma, &ta, json!({"sql": "SELECT id, name, score * 2 AS s FROM big", "format": format, "max_rows": 1_000_000})).await;
            assert_eq!(r.status(), StatusCode::OK);
            assert!(r.headers().get("content-length").is_none(), "{format}: streamed, no length known up front");
            let (frames, trailers) = streamed(r).await;
            assert!(frames.len() > 1, "{format}: {} frame(s)", frames.len());
            assert_eq!(trailers["x-plinth-rows"], "200000", "{format}");
            let all = frames.concat();
            match format {
                "jsonl" => assert_eq!(all.iter().filter(|b| **b == b'\n').count(), 200_000),
                "csv" => assert_eq!(all.iter().filter(|b| **b == b'\n').count(), 200_001),
                _ => assert!(all.starts_with(b"PAR1") && all.ends_with(b"PAR1")),
            }
        }
        // An empty CSV result still has its header.
        let r = query(ma, &ta, json!({"sql": "SELECT id FROM big WHERE id < 0", "format": "csv"})).await;
        assert_eq!(text_and_trailers(r).await.0, "id\n");
        // A query that outlives its time limit after its first rows (its reader is slow, and the
        // query waits for it rather than holding rows): the trailer says why...
        let slow = json!({"sql": "SELECT a.id FROM big a CROSS JOIN big b", "timeout_ms": 3000, "max_rows": 10_000_000});
        let r = query(ma, &ta, slow.clone()).await;
        assert_eq!(r.status(), StatusCode::OK);
        let mut body = http::Response::from(r).into_body();
        use http_body_util::BodyExt;
        assert!(body.frame().await.unwrap().unwrap().is_data());
        tokio::time::sleep(std::time::Duration::from_millis(3500)).await;
        let mut trailers = None;
        while let Some(frame) = body.frame().await {
            if let Ok(t) = frame.unwrap().into_trailers() {
                trailers = Some(t);
            }
        }
        let trailers = trailers.expect("trailers end the answer");
        let why = trailers["x-plinth-error"].to_str().unwrap();
        assert!(why.contains("limit of 3000 ms"), "{why}");
        assert!(trailers.get("x-plinth-rows").is_none());
        // ...and a client that cannot read trailers sees a broken response, not a short one.
        let r = ma.request(reqwest::Method::POST, &format!("/teams/{ta}/query")).bearer_auth(ma.key()).json(&slow).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let mut body = http::Response::from(r).into_body();
        assert!(body.frame().await.unwrap().unwrap().is_data());
        tokio::time::sleep(std::time::Duration::from_millis(3500)).await;
        let mut broken = false;
        while let Some(frame) = body.frame().await {
            if frame.is_err() {
                broken = true;
                break;
            }
        }
        assert!(broken, "the body must not end cleanly");
    }

    async fn sql_over_own_and_granted_datasets_and_nothing_else(srv: &TestServer) {
        let (a, b) = (srv.team().await, srv.team().await);
        let (ta, ma) = (a.team.clone(), &a.maintainer.1);
        let (tb, mb) = (b.team.clone(), &b.maintainer.1);
        upload(ma, &ta, "sales", SALES).await;
        upload(mb, &tb, "secrets", "k,v\n1,hidden\n").await;

        // JSON lines (default), CSV, Parquet.
        let r = query(ma, &ta, json!({"sql": "SELECT region, SUM(amount) AS total FROM sales GROUP BY region ORDER BY region"})).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["content-type"], "application/x-ndjson");
        let (text, trailers) = text_and_trailers(r).await;
        assert_eq!((trailers["x-plinth-rows"].to_str().unwrap(), trailers["x-plinth-truncated"].to_str().unwrap()), ("2", "false"));
        let rows: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(rows, vec![json!({"region": "north", "total": 17}), json!({"region": "south", "total": 5})]);
        let csv = query(ma, &ta, json!({"sql": "SELECT region FROM sales ORDER BY amount", "format": "csv"})).await.text().await.unwrap();
        assert_eq!(csv, "region\nsouth\nnorth\nnorth\n");
        let pq = query(ma, &ta, json!({"sql": "SELECT * FROM sales", "format": "parquet"})).await.bytes().await.unwrap();
        assert!(pq.starts_with(b"PAR1"));
        // Row limits cut and say so.
        let r = query(ma, &ta, json!({"sql": "SELECT * FROM sales", "max_rows": 2})).await;
        let (text, trailers) = text_and_trailers(r).await;
        assert_eq!(text.lines().count(), 2);
        assert_eq!((trailers["x-plinth-rows"].to_str().unwrap(), trailers["x-plinth-truncated"].to_str().unwrap()), ("2", "true"));

        // A result saved as a dataset, with the query as its source.
        let r = query(ma, &ta, json!({"sql": "SELECT region, amount FROM sales WHERE amount > 6", "save_as": "big_sales"})).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let v: Value = r.json().await.unwrap();
        assert_eq!((v["rows"].as_u64(), v["format"].as_str()), (Some(2), Some("parquet")));
        assert_eq!(v["source"], "query: SELECT region, amount FROM sales WHERE amount > 6");

        // Another team's table: unreachable however it is named, until granted.
        for sql in [
            "SELECT * FROM secrets".to_string(),
            format!("SELECT * FROM \"{tb}\".secrets"),
            format!("SELECT * FROM \"{tb}.secrets\""),
            format!("SELECT * FROM datafusion.\"{tb}\".secrets"),
        ] {
            let m = refused(ma, &ta, &sql).await;
            assert!(m.contains("not found") || m.contains("doesn't exist") || m.contains("does not exist"), "{sql}: {m}");
        }
        // Files, URLs, catalogs and statements are not reachable either: a readable file of
        // this machine, named every way SQL could name it.
        let outside = tempfile::tempdir().unwrap();
        let secret = outside.path().join("secret.csv");
        std::fs::write(&secret, "k\n42\n").unwrap();
        let secret = secret.to_str().unwrap();
        let written = outside.path().join("copy.csv");
        let written = written.to_str().unwrap();
        for (sql, why) in [
            (format!("SELECT * FROM read_parquet('{secret}')"), "read_parquet".to_string()),
            (format!("SELECT * FROM read_csv('{secret}')"), "read_csv".to_string()),
            (format!("SELECT * FROM '{secret}'"), secret.to_string()),
            (format!("SELECT * FROM 'file://{secret}'"), format!("file://{secret}")),
            ("SELECT * FROM information_schema.tables".to_string(), "information_schema".to_string()),
            ("SHOW TABLES".to_string(), "information_schema".to_string()),
            (format!("CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '{secret}'"), "DDL".to_string()),
            (format!("COPY sales TO '{written}'"), "not supported".to_string()),
            ("SET datafusion.catalog.information_schema = true".to_string(), "not supported".to_string()),
            ("DROP TABLE sales".to_string(), "DDL".to_string()),
        ] {
            let m = refused(ma, &ta, &sql).await;
            assert!(m.to_lowercase().contains(&why.to_lowercase()), "{sql}: {m}");
        }
        assert!(!std::path::Path::new(written).exists(), "nothing was written");
        let e = ma.post(&format!("/teams/{ta}/query"), &json!({"sql": "SELECT 1", "format": "xml"})).await.err(StatusCode::BAD_REQUEST, "invalid_field");
        assert_eq!(e["field"], "format");
        // Another team cannot query as this one.
        mb.post(&format!("/teams/{ta}/query"), &json!({"sql": "SELECT * FROM sales"})).await.err(StatusCode::NOT_FOUND, "not_found");

        // Granted: readable as "owner".name, and only that dataset; revoked: gone again.
        mb.put(&format!("/teams/{tb}/datasets/secrets/grants"), &json!({"team": ta})).await.ok(StatusCode::NO_CONTENT);
        let r = query(ma, &ta, json!({"sql": format!("SELECT v FROM \"{tb}\".secrets")})).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.text().await.unwrap(), "{\"v\":\"hidden\"}\n");
        refused(mb, &tb, &format!("SELECT * FROM \"{ta}\".sales")).await;
        ma.put(&format!("/teams/{tb}/datasets/secrets/grants"), &json!({"team": ta})).await.err(StatusCode::NOT_FOUND, "not_found");
        mb.delete(&format!("/teams/{tb}/datasets/secrets/grants/{ta}")).await.ok(StatusCode::NO_CONTENT);
        refused(ma, &ta, &format!("SELECT v FROM \"{tb}\".secrets")).await;
        // The CLI: rows to standard output, a saved dataset, and a refusal with its reason.
        let cli = crate::cli::Cli::new();
        cli.ok(&["login", "--url", &srv.url, "--key", ma.key()]);
        let out = cli.ok(&["query", &ta, "SELECT region FROM sales WHERE amount = 5", "--format", "csv"]);
        assert_eq!(out, "region\nsouth\n");
        let saved = cli.json(&["query", &ta, "SELECT * FROM sales", "--save-as", "sales_copy"]);
        assert_eq!(saved["rows"], 3);
        let err = cli.fails(&["query", &ta, "SELECT * FROM read_csv('secret.csv')"], 1);
        assert!(err.contains("invalid_field") && err.contains("read_csv"), "{err}");
        // A reader that stops early (`plinth query ... | head -c 10`): the command ends quietly,
        // by SIGPIPE like any Unix tool, not with a panic. 3^10 rows overflow the pipe's buffer.
        let joined: Vec<String> = (0..10).map(|i| format!("sales s{i}")).collect();
        let sql = format!("SELECT s0.region FROM {}", joined.join(", "));
        let mut child = cli
            .command(&["query", &ta, &sql, "--format", "csv"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut head = [0u8; 10];
        std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut head).unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{stderr}");
        use std::os::unix::process::ExitStatusExt;
        assert!(out.status.success() || out.status.signal() == Some(13), "{:?}: {stderr}", out.status);

        let audit = srv.admin().all_pages(&format!("/audit?team={tb}&limit=500")).await;
        assert!(audit.iter().any(|e| e["action"] == "dataset.grant") && audit.iter().any(|e| e["action"] == "dataset.revoke"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_files_folders_and_postgres_tables_in_sql() {
    use crate::harness::{Backend, ServerOptions, TestServer};
    let root = tempfile::tempdir().unwrap();
    let srv = TestServer::start(ServerOptions {
        local_sources_root: Some(root.path().to_path_buf()),
        // The test database's host; 127.0.0.2 (loopback too) is not allowed.
        postgres_sources: plinth_core::data::sources::PostgresAccess {
            allowed_hosts: vec!["127.0.0.1".into()],
            connect_timeout: std::time::Duration::from_secs(1),
            max_bytes: 64 * 1024,
        },
        ..ServerOptions::new(Backend::Sqlite)
    })
    .await;
    let (a, b) = (srv.team().await, srv.team().await);
    let (ta, ma) = (a.team.clone(), &a.maintainer.1);
    // Each team's files live in its own folder under the root.
    let mine = root.path().join(&ta);
    std::fs::create_dir_all(mine.join("daily")).unwrap();
    std::fs::write(mine.join("daily/2024-01-01.csv"), "region,amount\nnorth,1\n").unwrap();
    std::fs::write(mine.join("daily/2024-01-02.csv"), "region,amount\nsouth,2\nnorth,3\n").unwrap();
    std::fs::write(mine.join("regions.csv"), "region,manager\nnorth,ana\nsouth,bo\n").unwrap();
    let add = |body: Value| {
        let path = format!("/teams/{ta}/sources");
        async move { ma.post(&path, &body).await }
    };
    add(json!({"name": "daily", "kind": "folder", "path": "daily"})).await.ok(StatusCode::CREATED);
    add(json!({"name": "regions", "kind": "file", "path": "regions.csv"}))
        .await
        .ok(StatusCode::CREATED);
    // Paths never leave the team's folder: a file beside it, reached by `..` or by its absolute
    // path, another team's folder, or the root itself.
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.csv"), "k\n42\n").unwrap();
    let up = format!("../../{}/secret.csv", outside.path().file_name().unwrap().to_str().unwrap());
    assert!(mine.join(&up).exists(), "the escape target exists");
    let absolute = outside.path().join("secret.csv").to_str().unwrap().to_string();
    let (tb, mb) = (b.team.clone(), &b.maintainer.1);
    std::fs::create_dir_all(root.path().join(&tb)).unwrap();
    std::fs::write(root.path().join(&tb).join("theirs.csv"), "k\n1\n").unwrap();
    for path in [up, absolute, format!("../{tb}/theirs.csv"), "..".into()] {
        let e = add(json!({"name": "escape", "kind": "file", "path": path}))
            .await
            .err(StatusCode::BAD_REQUEST, "invalid_field");
        assert_eq!(e["field"], "path", "{path}");
    }
    // "" and "/" are the team's own folder, not the root.
    add(json!({"name": "everything", "kind": "folder", "path": "/"})).await.ok(StatusCode::CREATED);
    let text = query(ma, &ta, json!({"sql": "SELECT COUNT(*) AS n FROM everything"}))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(text, "{\"n\":2}\n", "only the team's regions.csv rows");
    // A symbolic link in the team's folder to a file outside it is refused when read.
    std::os::unix::fs::symlink(outside.path().join("secret.csv"), mine.join("daily/evil.csv"))
        .unwrap();
    let message = refused(ma, &ta, "SELECT * FROM daily").await;
    assert!(message.contains("'evil.csv' leads outside the team's folder"), "{message}");
    std::fs::remove_file(mine.join("daily/evil.csv")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret.csv"), mine.join("link.csv")).unwrap();
    add(json!({"name": "link", "kind": "file", "path": "link.csv"}))
        .await
        .err(StatusCode::BAD_REQUEST, "invalid_field");
    // A team without a folder has no file sources.
    let e = mb
        .post(
            &format!("/teams/{}/sources", srv.team().await.team),
            &json!({"name": "x", "kind": "folder", "path": ""}),
        )
        .await;
    assert!(e.status.is_client_error(), "{:?}", e.body);

    // A PostgreSQL table of the team's own database, read with a role that can only read it.
    let pg = crate::harness::fresh_postgres_database().await;
    let reader = unique("reader").replace('-', "_");
    {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(&pg).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE TABLE targets (region TEXT, target BIGINT); INSERT INTO targets VALUES ('north', 5), ('south', 1);
             CREATE ROLE {reader} LOGIN; GRANT SELECT ON targets TO {reader};
             CREATE TABLE visits (n INT); GRANT INSERT ON visits TO {reader};
             CREATE FUNCTION visit() RETURNS INT AS 'INSERT INTO visits VALUES (1) RETURNING n' LANGUAGE sql;"
        )))
        .execute(&mut c)
        .await
        .unwrap();
    }
    let (base, db) = pg.rsplit_once('/').unwrap();
    let host_port = base.rsplit_once('@').map_or(base, |x| x.1).trim_start_matches("postgres://");
    let url = format!("postgres://{reader}@{host_port}/{db}");
    add(json!({"name": "targets", "kind": "postgres", "url": url, "table": "targets"}))
        .await
        .ok(StatusCode::CREATED);
    let e = add(json!({"name": "nope", "kind": "postgres", "url": url, "table": "missing_table"}))
        .await
        .err(StatusCode::BAD_REQUEST, "invalid_field");
    assert!(e["message"].as_str().unwrap().contains("missing_table"), "{e}");
    // The session is read-only and has no file functions: a query source cannot write or read
    // the server's files, and a superuser's URL is refused.
    let e = add(json!({"name": "files", "kind": "postgres", "url": url, "query": "SELECT pg_read_file('/etc/hostname') AS f"}))
        .await
        .err(StatusCode::BAD_REQUEST, "invalid_field");
    assert!(e["message"].as_str().unwrap().contains("permission denied"), "{e}");
    // (The role may insert into visits, yet not from a source's session.)
    add(json!({"name": "writes", "kind": "postgres", "url": url, "query": "SELECT visit() AS n"}))
        .await
        .ok(StatusCode::CREATED);
    let message = refused(ma, &ta, "SELECT * FROM writes").await;
    assert!(message.contains("read-only transaction"), "{message}");
    let e = add(json!({"name": "root", "kind": "postgres", "url": pg, "table": "targets"}))
        .await
        .err(StatusCode::BAD_REQUEST, "invalid_field");
    assert!(e["message"].as_str().unwrap().contains("superuser"), "{e}");
    // A role that may read every table of the server, or signal other sessions, is refused too.
    for grant in ["pg_read_all_data", "pg_signal_backend"] {
        let strong = unique("strong").replace('-', "_");
        {
            use sqlx::Connection;
            let mut c = sqlx::PgConnection::connect(&pg).await.unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "CREATE ROLE {strong} LOGIN; GRANT {grant} TO {strong};"
            )))
            .execute(&mut c)
            .await
            .unwrap();
        }
        let url = format!("postgres://{strong}@{host_port}/{db}");
        let e = add(json!({"name": "strong", "kind": "postgres", "url": url, "table": "targets"}))
            .await
            .err(StatusCode::BAD_REQUEST, "invalid_field");
        assert!(e["message"].as_str().unwrap().contains("may read every table"), "{grant}: {e}");
    }
    // Reading a source counts against the query's time limit, and the database stops the
    // statement then: a source that sleeps is refused within the query's 1.5 s.
    add(json!({"name": "sleepy", "kind": "postgres", "url": url, "query": "SELECT 1 AS n FROM pg_sleep(30)"}))
        .await
        .ok(StatusCode::CREATED);
    let r = query(ma, &ta, json!({"sql": "SELECT * FROM sleepy", "timeout_ms": 1500})).await;
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("ran longer than its limit of 1500 ms"),
        "{body}"
    );
    // A source larger than the server's postgres_source_max_bytes (64 KiB here) is refused.
    add(json!({"name": "big", "kind": "postgres", "url": url, "query": "SELECT g AS n, repeat('x', 100) AS pad FROM generate_series(1, 1000) g"}))
        .await
        .ok(StatusCode::CREATED);
    let message = refused(ma, &ta, "SELECT count(*) FROM big").await;
    assert!(message.contains("more than 65536 bytes"), "{message}");
    // Hosts outside the allow-list are refused before any connection; an allowed address that
    // does not answer, or answers something else, fails within the time limit with the same
    // words as a closed port: no port scanning.
    let e = add(json!({"name": "other", "kind": "postgres", "url": format!("postgres://{reader}@127.0.0.2:5432/{db}"), "table": "targets"}))
        .await
        .err(StatusCode::BAD_REQUEST, "invalid_field");
    assert!(
        e["message"].as_str().unwrap().contains("does not allow PostgreSQL sources at 127.0.0.2"),
        "{e}"
    );
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut messages = Vec::new();
    for port in [silent_port, closed_port] {
        let url = format!("postgres://{reader}@127.0.0.1:{port}/{db}");
        let e = add(json!({"name": "scan", "kind": "postgres", "url": url, "table": "targets"}))
            .await
            .err(StatusCode::BAD_REQUEST, "invalid_field");
        messages.push(e["message"].as_str().unwrap().replace(&port.to_string(), "PORT"));
    }
    hold.abort();
    assert_eq!(messages[0], messages[1], "an open and a closed port look the same");
    assert!(messages[0].contains("cannot connect"), "{messages:?}");
    let listed = ma.get(&format!("/teams/{ta}/sources")).await.ok(StatusCode::OK);
    assert!(!listed.to_string().contains("postgres://"), "credentials are never shown: {listed}");
    // The CLI: the database URL is --database-url, never taken for the server's --url, and its
    // password is not printed either way.
    let cli = crate::cli::Cli::new();
    cli.ok(&["login", "--url", &srv.url, "--key", ma.key()]);
    let secret_url = format!("postgres://{reader}:hunter2@127.0.0.2:5432/{db}");
    let err = cli.fails(
        &[
            "source",
            "add",
            &format!("{ta}/cli"),
            "--kind",
            "postgres",
            "--database-url",
            &secret_url,
            "--table",
            "targets",
        ],
        1,
    );
    assert!(err.contains("does not allow PostgreSQL sources") && !err.contains("hunter2"), "{err}");
    let err = cli.fails(&["--url", &secret_url, "source", "list", &ta], 1);
    assert!(err.contains("must start with http") && !err.contains("hunter2"), "{err}");

    let sql = "SELECT d.region, SUM(d.amount) AS amount, MAX(t.target) AS target, MAX(r.manager) AS manager
               FROM daily d JOIN targets t ON t.region = d.region JOIN regions r ON r.region = d.region
               GROUP BY d.region ORDER BY d.region";
    let r = query(ma, &ta, json!({"sql": sql})).await;
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.unwrap();
    assert_eq!(
        text,
        "{\"region\":\"north\",\"amount\":4,\"target\":5,\"manager\":\"ana\"}\n{\"region\":\"south\",\"amount\":2,\"target\":1,\"manager\":\"bo\"}\n"
    );
    // Another team reads it only once granted, as "owner".name; a granted folder is read from
    // its owner's folder.
    refused(mb, &tb, &format!("SELECT * FROM \"{ta}\".targets")).await;
    for source in ["targets", "daily"] {
        ma.put(&format!("/teams/{ta}/sources/{source}/grants"), &json!({"team": tb}))
            .await
            .ok(StatusCode::NO_CONTENT);
    }
    let r =
        query(mb, &tb, json!({"sql": format!("SELECT COUNT(*) AS n FROM \"{ta}\".targets")})).await;
    assert_eq!(r.text().await.unwrap(), "{\"n\":2}\n");
    let r = query(mb, &tb, json!({"sql": format!("SELECT SUM(amount) AS n FROM \"{ta}\".daily")}))
        .await;
    assert_eq!(r.text().await.unwrap(), "{\"n\":6}\n");
    srv.stop().await;
}
