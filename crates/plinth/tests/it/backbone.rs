//! The backbone, with several replicas: three servers on one PostgreSQL database (each its own
//! process state, pool and lease holder). Tasks run once each, whoever queued them; a schedule
//! fires once per occurrence, its clock driven by the test; one event is delivered once; a task
//! whose runner stops renewing its lease is finished by another replica, its log continuing;
//! retries back off and end discarded; a running task sees its cancellation; a queue runs at
//! most its limit, most urgent first, without holding up another; a team's tasks are its own
//! through the API and the CLI; what one replica changes (a deployment, a key, a policy) is in
//! force on the others.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use plinth_core::Plinth;
use plinth_core::tasks::{TaskKind, TaskOptions, TaskRun};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Backend, ServerOptions, TestServer, wait_for};

/// Counts its runs per task id. With `args.hold` (`"first"`: its first attempt only;
/// `"always"`), it logs a step and reports progress, then holds until its task is cancelled or
/// its replica stops, looking at the cancel flag between waits; fails while `args.fail` is true.
#[derive(Clone, Default)]
struct Probe {
    runs: Arc<Mutex<HashMap<String, u32>>>,
}

impl TaskKind for Probe {
    fn name(&self) -> &'static str {
        "test.probe"
    }

    fn run<'a>(
        &'a self,
        core: &'a Plinth,
        task: &'a TaskRun,
    ) -> BoxFuture<'a, plinth_core::Result<Value>> {
        Box::pin(async move {
            *self.runs.lock().unwrap().entry(task.id.clone()).or_default() += 1;
            core.task_log(&task.id, "info", &format!("attempt {} starts", task.attempt)).await?;
            let hold = match task.args["hold"].as_str() {
                Some("always") => true,
                Some("first") => task.attempt == 1,
                _ => false,
            };
            if hold {
                core.task_progress(&task.id, 0.5, Some("step 10")).await?;
                core.task_log(&task.id, "info", &format!("attempt {} step 10", task.attempt))
                    .await?;
                // Nothing to wait for but a cancel (seen at the runner's heartbeat).
                task.until_cancelled().await;
                task.check()?;
            }
            if task.args["fail"].as_bool() == Some(true) {
                return Err(plinth_core::Error::new(
                    plinth_api::Code::Unavailable,
                    "the probe was told to fail",
                ));
            }
            Ok(json!({"attempt": task.attempt}))
        })
    }
}

/// Three servers on one fresh PostgreSQL database, one S3 bucket and Redis, each with its own
/// data directory and running `probe`.
async fn replicas(probe: &Probe, lease: Duration) -> Vec<TestServer> {
    let url = crate::harness::fresh_postgres_database().await;
    let objects = crate::harness::fresh_bucket().await;
    let mut out: Vec<TestServer> = Vec::new();
    for _ in 0..3 {
        let tasks = TaskOptions {
            lease,
            backoff: Duration::from_millis(20),
            poll: Duration::from_millis(50),
            kinds: vec![Arc::new(probe.clone())],
            ..TaskOptions::default()
        };
        out.push(
            TestServer::start(ServerOptions {
                database_url: Some(url.clone()),
                objects: Some(objects.clone()),
                online_store_url: Some(crate::harness::redis_url()),
                admin_key: out.first().map(|s| s.admin_key.clone()),
                tasks,
                ..ServerOptions::new(Backend::Postgres)
            })
            .await,
        );
    }
    out
}

async fn task(srv: &TestServer, id: &str) -> Value {
    srv.admin().get(&format!("/tasks/{id}")).await.ok(StatusCode::OK)
}

async fn finished(srv: &TestServer, id: &str) -> Value {
    wait_for(&format!("task {id} to finish"), Duration::from_secs(30), async || {
        let t = task(srv, id).await;
        matches!(t["state"].as_str(), Some("completed" | "cancelled" | "discarded")).then_some(t)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_queued_on_any_replica_run_once_each() {
    let probe = Probe::default();
    let r = replicas(&probe, Duration::from_secs(30)).await;
    let mut ids = Vec::new();
    for i in 0..200 {
        ids.push(r[i % 3].core.enqueue_task(None, "test.probe", &json!({}), 2).await.unwrap());
    }
    for id in &ids {
        assert_eq!(finished(&r[0], id).await["state"], "completed");
    }
    let runs = probe.runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 200);
    assert!(runs.values().all(|n| *n == 1), "a task ran twice: {runs:?}");
    // Every replica took part: claims were spread, not serialized on one.
    let by = r[0].admin().get("/tasks?kind=test.probe&limit=500").await.ok(StatusCode::OK);
    assert_eq!(by.as_array().unwrap().len(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_fires_once_per_occurrence_with_three_replicas() {
    let probe = Probe::default();
    let r = replicas(&probe, Duration::from_secs(30)).await;
    // Far in the future, so that only the driven clock reaches it.
    let start = plinth_core::util::now_micros() + 86_400_000_000;
    let id = r[0]
        .core
        .schedule_task(
            None,
            "probe-every-second",
            "test.probe",
            &json!({}),
            plinth_core::tasks::schedule::Every::Interval(1),
            Some(start),
        )
        .await
        .unwrap();
    // The tasks this schedule fired (the platform's own schedules fire too, at the driven time).
    let fired = async || {
        let all = r[0].admin().get("/tasks?kind=test.probe&limit=500").await.ok(StatusCode::OK);
        all.as_array().unwrap().iter().filter(|t| t["schedule"] == id.as_str()).count()
    };
    for k in 0..10 {
        let at = start + k * 1_000_000;
        let (a, b, c) = tokio::join!(
            r[0].core.fire_due_schedules(at),
            r[1].core.fire_due_schedules(at),
            r[2].core.fire_due_schedules(at)
        );
        let (_, _, _) = (a.unwrap(), b.unwrap(), c.unwrap());
        assert_eq!(fired().await, k as usize + 1, "occurrence {k} fired once");
    }
    // A replica that comes back after 5 occurrences were missed fires one task, for the latest.
    let late = start + 15_000_000;
    assert_eq!(r[1].core.fire_due_schedules(late).await.unwrap(), 1);
    assert_eq!(fired().await, 11);
    // Nothing more is due until the next occurrence after the late one.
    assert_eq!(r[2].core.fire_due_schedules(late + 500_000).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_is_delivered_once_across_replicas() {
    let probe = Probe::default();
    let r = replicas(&probe, Duration::from_secs(30)).await;
    let (addr, seen) = crate::harness::webhook_receiver().await;
    let t = r[0].team().await;
    let (team, m) = (t.team.clone(), t.maintainer.1.clone());
    m.post(
        &format!("/teams/{team}/webhooks"),
        &json!({"url": format!("http://{addr}/hook"), "events": ["promotion.requested"]}),
    )
    .await
    .ok(StatusCode::CREATED);
    m.post(
        &format!("/teams/{team}/models"),
        &json!({"name": "income", "task": "binary_classification"}),
    )
    .await
    .ok(StatusCode::CREATED);
    m.upload_fixture(&team, "income", "lightgbm_binary.txt").await.ok(StatusCode::CREATED);
    // Through the second replica: the event is written there, and every replica reads events.
    let m2 = m.with_key(m.key());
    let m2 = crate::harness::Api::new(&r[1].url, m2.key());
    for v in 1..=3 {
        if v > 1 {
            m.upload_fixture(&team, "income", "lightgbm_binary.txt").await.ok(StatusCode::CREATED);
        }
        m2.post(
            &format!("/teams/{team}/models/income/promotions"),
            &json!({"version": v, "environment": "staging"}),
        )
        .await
        .ok(StatusCode::CREATED);
    }
    wait_for("three deliveries", Duration::from_secs(20), async || {
        (seen.lock().unwrap().len() >= 3).then_some(())
    })
    .await;
    for s in &r {
        assert!(s.core.events_consumed("webhooks", Duration::from_secs(10)).await);
    }
    let deliveries =
        r[2].admin().get("/tasks?kind=webhook.delivery&limit=500").await.ok(StatusCode::OK);
    for d in deliveries.as_array().unwrap() {
        finished(&r[2], d["id"].as_str().unwrap()).await;
    }
    let seen = seen.lock().unwrap();
    let mut events: Vec<&str> = seen.iter().map(|p| p["event_id"].as_str().unwrap()).collect();
    events.sort();
    events.dedup();
    assert_eq!((seen.len(), events.len()), (3, 3), "each event once: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_runner_stops_is_finished_by_another_replica() {
    let probe = Probe::default();
    let mut r = replicas(&probe, Duration::from_millis(900)).await;
    let id =
        r[0].core.enqueue_task(None, "test.probe", &json!({"hold": "first"}), 2).await.unwrap();
    wait_for("the task to make progress", Duration::from_secs(10), async || {
        let t = task(&r[0], &id).await;
        (t["state"] == "running" && t["progress"].as_f64().unwrap_or(0.0) > 0.0).then_some(())
    })
    .await;
    // The replica holding the lease stops mid-task: its runtime, its runner and its heartbeat.
    let holder = r[0].core.task_lease_holder(&id).await.unwrap().expect("a lease holder");
    let i = r.iter().position(|s| s.core.replica_id() == holder).expect("one of the replicas");
    drop(r.remove(i));
    let done = finished(&r[0], &id).await;
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["attempt"], 2, "finished by a second attempt, on another replica: {done}");
    assert_eq!(probe.runs.lock().unwrap()[&id], 2);
    let lines = r[0].admin().get(&format!("/tasks/{id}/logs?limit=500")).await.ok(StatusCode::OK);
    let text = lines.to_string();
    assert!(
        text.contains("attempt 1 step 10") && text.contains("attempt 2 starts"),
        "the log goes on: {text}"
    );
    let seqs: Vec<u64> =
        lines.as_array().unwrap().iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_attempts_back_off_then_the_task_is_discarded() {
    let probe = Probe::default();
    let r = replicas(&probe, Duration::from_secs(30)).await;
    let id = r[0].core.enqueue_task(None, "test.probe", &json!({"fail": true}), 2).await.unwrap();
    let done = finished(&r[0], &id).await;
    assert_eq!(done["state"], "discarded", "{done}");
    let errors = done["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 3, "{done}");
    assert!(errors.iter().all(|e| e["error"].as_str().unwrap().contains("told to fail")));
    assert_eq!(probe.runs.lock().unwrap()[&id], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_task_stops_when_cancelled_on_another_replica() {
    let probe = Probe::default();
    let r = replicas(&probe, Duration::from_millis(600)).await;
    let id =
        r[0].core.enqueue_task(None, "test.probe", &json!({"hold": "always"}), 2).await.unwrap();
    wait_for("the task to run", Duration::from_secs(10), async || {
        (task(&r[2], &id).await["state"] == "running").then_some(())
    })
    .await;
    let t = r[2].admin().post(&format!("/tasks/{id}/cancel"), &json!({})).await.ok(StatusCode::OK);
    assert_eq!(t["cancel_requested"], true);
    assert_eq!(finished(&r[0], &id).await["state"], "cancelled");
    r[0].admin()
        .post(&format!("/tasks/{id}/cancel"), &json!({}))
        .await
        .err(StatusCode::CONFLICT, "conflict");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_teams_tasks_are_its_own_through_the_api_and_the_cli() {
    let probe = Probe::default();
    // A lease long enough that the CLI's processes, competing for the CPU, never cost the
    // runner its heartbeat.
    let r = replicas(&probe, Duration::from_secs(3)).await;
    let (t, other) = (r[0].team().await, r[0].team().await);
    let id = r[0]
        .core
        .enqueue_task(Some(&t.team), "test.probe", &json!({"hold": "always"}), 2)
        .await
        .unwrap();
    wait_for("the task to make progress", Duration::from_secs(10), async || {
        let k = task(&r[1], &id).await;
        (k["state"] == "running" && k["progress"].as_f64().unwrap_or(0.0) > 0.0).then_some(())
    })
    .await;
    // Another team's maintainer finds nothing of it, by id or in lists; a viewer of the team
    // sees it and cannot stop it.
    let o = &other.maintainer.1;
    o.get(&format!("/tasks/{id}")).await.err(StatusCode::NOT_FOUND, "not_found");
    o.get(&format!("/tasks/{id}/logs")).await.err(StatusCode::NOT_FOUND, "not_found");
    o.post(&format!("/tasks/{id}/cancel"), &json!({}))
        .await
        .err(StatusCode::NOT_FOUND, "not_found");
    o.get(&format!("/tasks?team={}", t.team)).await.err(StatusCode::NOT_FOUND, "not_found");
    let theirs = o.get("/tasks?limit=500").await.ok(StatusCode::OK);
    assert!(!theirs.to_string().contains(&id), "{theirs}");
    assert_eq!(
        t.viewer.1.get(&format!("/tasks/{id}")).await.ok(StatusCode::OK)["kind"],
        "test.probe"
    );
    t.viewer
        .1
        .post(&format!("/tasks/{id}/cancel"), &json!({}))
        .await
        .err(StatusCode::FORBIDDEN, "forbidden");
    // The team's developer, through the CLI on another replica: list, show, logs, cancel.
    let cli = crate::cli::Cli::new();
    cli.ok(&["login", "--url", &r[2].url, "--key", t.developer.1.key()]);
    let listed = cli.ok(&["task", "list", "--team", &t.team]);
    assert!(listed.contains(&id) && listed.contains("running"), "{listed}");
    let shown = cli.ok(&["task", "show", &id]);
    assert!(
        shown.contains("test.probe") && shown.contains("step 10") && shown.contains("50 %"),
        "{shown}"
    );
    let logs = cli.ok(&["task", "logs", &id]);
    assert!(logs.contains("attempt 1 starts") && logs.contains("attempt 1 step 10"), "{logs}");
    // Many lease periods later, the runner that renews its lease still holds it: one attempt.
    assert_eq!(task(&r[0], &id).await["attempt"], 1, "a live lease is never taken over");
    assert_eq!(probe.runs.lock().unwrap()[&id], 1);
    cli.ok(&["task", "cancel", &id]);
    assert_eq!(finished(&r[0], &id).await["state"], "cancelled");
    let e = cli.fails(&["task", "cancel", &id], 1);
    assert!(e.contains("nothing to cancel"), "{e}");
    cli.ok(&["login", "--url", &r[2].url, "--key", o.key()]);
    let e = cli.fails(&["task", "show", &id], 1);
    assert!(e.contains("not found"), "{e}");
}

/// A new team on `srv` with a binary model `income` whose versions are these fixtures, and
/// its maintainer.
async fn income(srv: &TestServer, versions: &[&str]) -> (String, crate::harness::Api) {
    let t = srv.team().await;
    let (team, m) = (t.team.clone(), t.maintainer.1.clone());
    m.post(
        &format!("/teams/{team}/models"),
        &json!({"name": "income", "task": "binary_classification"}),
    )
    .await
    .ok(StatusCode::CREATED);
    for f in versions {
        m.upload_fixture(&team, "income", f).await.ok(StatusCode::CREATED);
    }
    (team, m)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_one_replica_changes_is_in_force_on_the_others() {
    let probe = Probe::default();
    let r = replicas(&probe, Duration::from_secs(30)).await;
    let (team, m) = income(&r[0], &["lightgbm_binary.txt", "xgboost_binary.json"]).await;
    let on = |i: usize| crate::harness::Api::new(&r[i].url, m.key());
    on(1)
        .put(
            &format!("/deployments/{team}/income/production"),
            &json!({"versions": [{"version": 1, "weight": 100}]}),
        )
        .await
        .ok(StatusCode::OK);
    let row = json!({"rows": [[39, 13, 2174, 0, 40, 1]]});
    let path = format!("/deployments/{team}/income/production/predict");
    for i in 0..3 {
        let api = on(i);
        wait_for("the deployment on every replica", Duration::from_secs(5), async || {
            let a = api.post(&path, &row).await;
            (a.status == StatusCode::OK && a.body["version"] == 1).then_some(())
        })
        .await;
    }
    on(2)
        .put(
            &format!("/deployments/{team}/income/production"),
            &json!({"versions": [{"version": 2, "weight": 100}]}),
        )
        .await
        .ok(StatusCode::OK);
    for i in 0..3 {
        let api = on(i);
        // Within a second of the change (each replica polls the change counters every 200 ms).
        wait_for("the new version on every replica", Duration::from_secs(1), async || {
            (api.post(&path, &row).await.body["version"] == 2).then_some(())
        })
        .await;
    }
    // A key revoked through one replica stops working on the others (their caches cleared).
    let (name, api) = r[0].user("rev").await;
    r[0].admin()
        .put(&format!("/teams/{team}/members/{name}"), &json!({"role": "viewer"}))
        .await
        .ok(StatusCode::OK);
    let on_two = crate::harness::Api::new(&r[2].url, api.key());
    on_two.post(&path, &row).await.ok(StatusCode::OK);
    let keys = r[0].admin().get(&format!("/keys?principal={name}")).await.ok(StatusCode::OK);
    let key_id = keys["items"][0]["id"].as_str().unwrap().to_string();
    r[1].admin().delete(&format!("/keys/{key_id}")).await.ok(StatusCode::OK);
    wait_for("the revocation on every replica", Duration::from_secs(1), async || {
        (on_two.post(&path, &row).await.status == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;
    // A policy set through one replica holds on the others at once (policies are read from
    // the database at each use): a direct deploy through another replica is refused.
    on(0)
        .put(&format!("/teams/{team}/policies/production"), &json!({"gated": true}))
        .await
        .ok(StatusCode::OK);
    on(2)
        .put(
            &format!("/deployments/{team}/income/production"),
            &json!({"versions": [{"version": 1, "weight": 100}]}),
        )
        .await
        .err(StatusCode::CONFLICT, "approval_required");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prediction_log_of_all_replicas_reads_as_one_in_time_order() {
    let probe = Probe::default();
    let r = replicas(&probe, Duration::from_secs(30)).await;
    let (team, m) = income(&r[0], &["lightgbm_binary.txt"]).await;
    let on = |i: usize| crate::harness::Api::new(&r[i].url, m.key());
    on(0)
        .put(
            &format!("/deployments/{team}/income/production"),
            &json!({"versions": [{"version": 1, "weight": 100}]}),
        )
        .await
        .ok(StatusCode::OK);
    let path = format!("/deployments/{team}/income/production/predict");
    // Eight predictions, alternating between replicas 0 and 1, each with its own age.
    let mut ids = Vec::new();
    for k in 0..8 {
        let api = on(k % 2);
        let row = json!({"rows": [[20 + k, 13, 2174, 0, 40, 1]]});
        let a = wait_for("the deployment", Duration::from_secs(5), async || {
            let a = api.post(&path, &row).await;
            (a.status == StatusCode::OK).then_some(a)
        })
        .await;
        ids.push(a.body["request_id"].as_str().unwrap().to_string());
    }
    let log = |i: usize| {
        let api = on(i);
        let path = format!("/deployments/{team}/income/production/predictions?limit=100");
        async move {
            let got = api.get(&path).await.ok(StatusCode::OK);
            got.as_array()
                .unwrap()
                .iter()
                .map(|p| p["request_id"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    // Replica 0 ships its segments; replica 1 has not yet. Replica 1 reads its own and the
    // store's, merged; replica 2 sees what is shipped.
    r[0].core.engine().log.ship_all().await.unwrap();
    assert_eq!(log(1).await, ids, "replica 1 reads everything, oldest first");
    let shipped: Vec<String> = ids.iter().step_by(2).cloned().collect();
    assert_eq!(log(2).await, shipped, "replica 2 reads what replica 0 shipped");
    r[1].core.engine().log.ship_all().await.unwrap();
    assert_eq!(log(2).await, ids, "and everything once replica 1 shipped too");
    // Shipping is idempotent: a replica that ships again after a crash adds nothing.
    assert_eq!(r[1].core.engine().log.ship_all().await.unwrap(), 0);
    assert!(
        std::fs::read_dir(r[0].data_dir.join("predictions"))
            .unwrap()
            .flatten()
            .all(|d| std::fs::read_dir(d.path()).unwrap().next().is_none()),
        "shipped segments leave the replica's disk"
    );
}

/// Records the order its tasks run in (`args.name`), in the queue it was made for.
#[derive(Clone)]
struct Order {
    name: &'static str,
    queue: &'static str,
    ran: Arc<Mutex<Vec<String>>>,
}

impl TaskKind for Order {
    fn name(&self) -> &'static str {
        self.name
    }

    fn queue(&self) -> &'static str {
        self.queue
    }

    fn run<'a>(
        &'a self,
        _: &'a Plinth,
        task: &'a TaskRun,
    ) -> BoxFuture<'a, plinth_core::Result<Value>> {
        Box::pin(async move {
            self.ran
                .lock()
                .unwrap()
                .push(task.args["name"].as_str().unwrap_or_default().to_string());
            Ok(json!({}))
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_runs_at_most_its_limit_most_urgent_first_and_does_not_hold_up_another() {
    let probe = Probe::default();
    let ran: Arc<Mutex<Vec<String>>> = Arc::default();
    let order = Order { name: "test.order", queue: "default", ran: ran.clone() };
    let side = Order { name: "test.side", queue: "side", ran: ran.clone() };
    let tasks = TaskOptions {
        queues: vec![("default".into(), 1), ("side".into(), 1)],
        backoff: Duration::from_millis(20),
        poll: Duration::from_millis(50),
        kinds: vec![Arc::new(probe.clone()), Arc::new(order), Arc::new(side)],
        ..TaskOptions::default()
    };
    let srv =
        TestServer::start(ServerOptions { tasks, ..ServerOptions::new(Backend::Sqlite) }).await;
    // A long task takes the default queue's one place.
    let long =
        srv.core.enqueue_task(None, "test.probe", &json!({"hold": "always"}), 2).await.unwrap();
    wait_for("the long task to run", Duration::from_secs(10), async || {
        (task(&srv, &long).await["state"] == "running").then_some(())
    })
    .await;
    // Three more wait behind it, queued least urgent first.
    let mut waiting = Vec::new();
    for (name, priority) in [("later", 4), ("urgent", 1), ("normal", 2)] {
        waiting.push(
            srv.core
                .enqueue_task(None, "test.order", &json!({"name": name}), priority)
                .await
                .unwrap(),
        );
    }
    // Another queue is not held up: its task runs while the default queue is full.
    let s = srv.core.enqueue_task(None, "test.side", &json!({"name": "side"}), 2).await.unwrap();
    assert_eq!(finished(&srv, &s).await["state"], "completed");
    for id in &waiting {
        assert_eq!(
            task(&srv, id).await["state"],
            "available",
            "the default queue runs one at a time"
        );
    }
    // The long task stops: the waiting ones run, most urgent first.
    srv.admin().post(&format!("/tasks/{long}/cancel"), &json!({})).await.ok(StatusCode::OK);
    for id in &waiting {
        assert_eq!(finished(&srv, id).await["state"], "completed");
    }
    assert_eq!(*ran.lock().unwrap(), ["side", "urgent", "normal", "later"]);
}
