//! Durable background tasks: every long or deferred piece of work (an evaluation, a
//! materialization, a webhook delivery, a scheduled check) is a row in `tasks`, written in the
//! transaction of the request that asks for it, and run by whichever replica claims it.
//!
//! - **Kinds** are registered by the module that owns them ([`TaskKind`], [`Registry`]): no
//!   central match on a string.
//! - **States** as River and Oban have them: available, scheduled, running, retryable,
//!   completed, cancelled, discarded. A failed attempt becomes retryable after an exponential
//!   backoff; the last allowed one is discarded, every error kept.
//! - **Leases.** A running task holds a lease its runner renews (a third of the lease, one
//!   statement for all of a replica's tasks). A runner that dies (kill -9, a lost machine) stops
//!   renewing; once the lease expires another replica claims the task and runs it again, its
//!   progress and log continuing. Nothing is requeued at start: a replica's own leases simply run
//!   out.
//! - **Claims.** On PostgreSQL with `FOR UPDATE SKIP LOCKED`, so replicas never claim the same
//!   task; on SQLite under its single writer. Queues run side by side (a long training never
//!   holds up an evaluation), each with a concurrency limit per replica; lower priorities first.
//! - **Progress, a bounded log (the last [`LOG_LINES`] lines) and cancellation** (a running task
//!   sees the request at its next heartbeat and stops), through the API and `plinth task`,
//!   isolated per team like every other object.

pub mod schedule;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;
use plinth_api::Code;
use plinth_api::identity::TeamRole;
use plinth_api::tasks::{Task, TaskError, TaskLogLine, TaskLogQuery, TaskQuery, TaskState};
use serde_json::Value;
use sqlx::any::AnyRow;
use tokio::sync::Notify;

use crate::Plinth;
use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::store::{Sql, Tx, col};
use crate::util::{micros_to_time, new_id, now_micros};

/// The queue of tasks that name none.
pub(crate) const DEFAULT_QUEUE: &str = "default";

/// Lines of its log a task keeps: the oldest go beyond this.
pub(crate) const LOG_LINES: i64 = 1000;

/// A kind of task: what running one does. Registered by the module that owns it; kinds of
/// other crates (a trainer kept out of the core) come in through [`TaskOptions::kinds`].
pub trait TaskKind: Send + Sync + 'static {
    fn name(&self) -> &'static str;

    /// The queue its tasks wait in.
    fn queue(&self) -> &'static str {
        DEFAULT_QUEUE
    }

    /// Attempts before a failing task is discarded.
    fn max_attempts(&self) -> u32 {
        3
    }

    /// Runs one attempt. The answer is the task's result; an error fails the attempt (a
    /// [`Code::Conflict`] `cancelled` error, from [`TaskRun::check`], cancels it).
    fn run<'a>(&'a self, core: &'a Plinth, task: &'a TaskRun) -> BoxFuture<'a, Result<Value>>;
}

/// The kinds this process can run, by name.
#[derive(Default, Clone)]
pub(crate) struct Registry {
    kinds: HashMap<&'static str, Arc<dyn TaskKind>>,
}

impl Registry {
    pub fn register(&mut self, kind: impl TaskKind) {
        self.kinds.insert(kind.name(), Arc::new(kind));
    }

    fn get(&self, name: &str) -> Option<&Arc<dyn TaskKind>> {
        self.kinds.get(name)
    }
}

/// How this process runs tasks.
#[derive(Clone)]
pub struct TaskOptions {
    /// How long a claim holds without being renewed (renewed every third of it).
    pub lease: Duration,
    /// The queues this process runs, with how many tasks of each at once.
    pub queues: Vec<(String, usize)>,
    /// The first retry waits this long; each next one twice as long (at most an hour).
    pub backoff: Duration,
    /// How often an idle queue looks for work another replica queued (a queue of this process
    /// is woken at once).
    pub poll: Duration,
    /// Kinds defined outside the core, besides its own.
    pub kinds: Vec<Arc<dyn TaskKind>>,
}

impl std::fmt::Debug for TaskOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskOptions")
            .field("lease", &self.lease)
            .field("queues", &self.queues)
            .field("backoff", &self.backoff)
            .field("poll", &self.poll)
            .field("kinds", &self.kinds.iter().map(|k| k.name()).collect::<Vec<_>>())
            .finish()
    }
}

impl Default for TaskOptions {
    fn default() -> Self {
        TaskOptions {
            lease: Duration::from_secs(30),
            queues: vec![
                (DEFAULT_QUEUE.into(), 2),
                ("webhooks".into(), 4),
                ("training".into(), 1),
                ("monitoring".into(), 1),
            ],
            backoff: Duration::from_secs(1),
            poll: Duration::from_secs(1),
            kinds: Vec::new(),
        }
    }
}

/// The task runner of this process: its identity as a lease holder, its kinds, its queues.
pub(crate) struct Tasks {
    pub registry: Registry,
    pub options: TaskOptions,
    /// This process as a lease holder: a new one at every start.
    pub replica: String,
    pub wake: Notify,
    pub stop: AtomicBool,
    /// The tasks this process runs now, by id: their cancellation and lost-lease flags.
    running: std::sync::Mutex<HashMap<String, Arc<Flags>>>,
}

#[derive(Default)]
struct Flags {
    cancel: AtomicBool,
    /// Woken when `cancel` is set, for attempts that wait rather than step.
    cancelled: tokio::sync::Notify,
}

impl Flags {
    fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
        self.cancelled.notify_waiters();
    }
}

impl Tasks {
    pub fn new(mut registry: Registry, options: TaskOptions) -> Tasks {
        for kind in &options.kinds {
            registry.kinds.insert(kind.name(), kind.clone());
        }
        Tasks {
            registry,
            options,
            replica: format!("rep_{}", uuid::Uuid::now_v7().simple()),
            wake: Notify::new(),
            stop: AtomicBool::new(false),
            running: std::sync::Mutex::new(HashMap::new()),
        }
    }
}

/// One attempt of a task, as its kind sees it.
pub struct TaskRun {
    pub id: String,
    pub team_id: Option<String>,
    pub args: Value,
    /// 1 for the first attempt.
    pub attempt: u32,
    flags: Arc<Flags>,
}

impl TaskRun {
    /// Whether someone asked to cancel the task.
    pub fn cancelled(&self) -> bool {
        self.flags.cancel.load(Ordering::Relaxed)
    }

    /// Stops the attempt when the task is to be cancelled (call it between steps).
    pub fn check(&self) -> Result<()> {
        if self.cancelled() { Err(cancelled()) } else { Ok(()) }
    }

    /// Resolves once someone asks to cancel the task (for an attempt that waits on something
    /// else: select on both).
    pub async fn until_cancelled(&self) {
        loop {
            let woken = self.flags.cancelled.notified();
            tokio::pin!(woken);
            // Registered before the flag is read: a cancel in between still wakes it.
            woken.as_mut().enable();
            if self.cancelled() {
                return;
            }
            woken.await;
        }
    }
}

fn cancelled() -> Error {
    Error::new(Code::Conflict, "cancelled")
}

/// A task to enqueue.
pub(crate) struct NewTask<'a> {
    pub team_id: Option<&'a str>,
    pub kind: &'a str,
    pub args: &'a Value,
    /// The principal (or `system`) it works for.
    pub by: &'a str,
    /// Lower runs first: 1 urgent, 2 normal (the default), 3 and 4 when nothing else waits.
    pub priority: u32,
    /// Not before this time (microseconds); now when `None`.
    pub at: Option<i64>,
    pub schedule_id: Option<&'a str>,
}

impl<'a> NewTask<'a> {
    pub fn new(team_id: Option<&'a str>, kind: &'a str, args: &'a Value, by: &'a str) -> Self {
        NewTask { team_id, kind, args, by, priority: 2, at: None, schedule_id: None }
    }
}

const TASK_SELECT: &str = "SELECT k.*, t.name AS team_name, COALESCE(p.name, k.created_by) AS created_by_name
    FROM tasks k LEFT JOIN teams t ON t.id = k.team_id LEFT JOIN principals p ON p.id = k.created_by";

fn task_from_row(row: &AnyRow) -> Result<Task> {
    let state: String = col(row, "state")?;
    let result: Option<String> = col(row, "result")?;
    Ok(Task {
        id: col(row, "id")?,
        team: col(row, "team_name")?,
        kind: col(row, "kind")?,
        queue: col(row, "queue")?,
        priority: col::<i64>(row, "priority")? as u32,
        state: TaskState::parse(&state)
            .ok_or_else(|| Error::internal(format!("bad task state {state}")))?,
        progress: col(row, "progress")?,
        progress_note: col(row, "progress_note")?,
        attempt: col::<i64>(row, "attempts")? as u32,
        max_attempts: col::<i64>(row, "max_attempts")? as u32,
        runner: if state == "running" { col(row, "lease_owner")? } else { None },
        errors: serde_json::from_str(&col::<String>(row, "errors")?)?,
        result: result.map(|r| serde_json::from_str(&r)).transpose()?,
        scheduled_at: micros_to_time(col(row, "scheduled_at")?),
        cancel_requested: col::<i64>(row, "cancel_requested")? != 0,
        schedule: col(row, "schedule_id")?,
        created_at: micros_to_time(col(row, "created_at")?),
        created_by: col(row, "created_by_name")?,
        started_at: col::<Option<i64>>(row, "started_at")?.map(micros_to_time),
        finished_at: col::<Option<i64>>(row, "finished_at")?.map(micros_to_time),
    })
}

impl Plinth {
    /// Queues a task inside the caller's transaction (it exists if and only if the change that
    /// asked for it commits). Wake the runners after commit with [`Plinth::wake_tasks`].
    pub(crate) async fn enqueue(&self, tx: &mut Tx, t: NewTask<'_>) -> Result<String> {
        let kind = self
            .tasks
            .registry
            .get(t.kind)
            .ok_or_else(|| Error::internal(format!("no task kind {}", t.kind)))?;
        let id = new_id("task");
        let now = now_micros();
        let at = t.at.unwrap_or(now);
        let state = if at > now { TaskState::Scheduled } else { TaskState::Available };
        Sql::with(
            "INSERT INTO tasks (id, team_id, kind, queue, priority, state, progress, args, errors, attempts, max_attempts,
                scheduled_at, cancel_requested, schedule_id, created_at, created_by)
             VALUES ($1, $2, $3, $4, $5, $6, 0, $7, '[]', 0, $8, $9, 0, $10, $11, $12)",
            [
                id.clone().into(),
                t.team_id.map(str::to_string).into(),
                t.kind.into(),
                kind.queue().into(),
                i64::from(t.priority.clamp(1, 4)).into(),
                state.as_str().into(),
                t.args.to_string().into(),
                i64::from(kind.max_attempts()).into(),
                at.into(),
                t.schedule_id.map(str::to_string).into(),
                now.into(),
                t.by.into(),
            ],
        )
        .execute(tx)
        .await?;
        Ok(id)
    }

    /// Queues a task of `kind` now, outside any other change (other crates' kinds, and tests of
    /// the runner). `team` is a team's name, or `None` for the platform's own.
    pub async fn enqueue_task(
        &self,
        team: Option<&str>,
        kind: &str,
        args: &Value,
        priority: u32,
    ) -> Result<String> {
        let team_id = match team {
            Some(name) => Some(
                self.db
                    .fetch_optional(&Sql::with(
                        "SELECT id FROM teams WHERE name = $1",
                        [name.into()],
                    ))
                    .await?
                    .ok_or_else(|| Error::not_found("team", name))
                    .and_then(|r| col::<String>(&r, "id"))?,
            ),
            None => None,
        };
        let mut tx = self.db.begin().await?;
        let mut task = NewTask::new(team_id.as_deref(), kind, args, "system");
        task.priority = priority;
        let id = self.enqueue(&mut tx, task).await?;
        tx.commit().await?;
        self.wake_tasks();
        Ok(id)
    }

    /// This process as a lease holder.
    #[doc(hidden)]
    pub fn replica_id(&self) -> &str {
        &self.tasks.replica
    }

    /// The replica holding a running task's lease.
    #[doc(hidden)]
    pub async fn task_lease_holder(&self, id: &str) -> Result<Option<String>> {
        let row = self
            .db
            .fetch_optional(&Sql::with("SELECT lease_owner FROM tasks WHERE id = $1", [id.into()]))
            .await?;
        Ok(row.map(|r| col::<Option<String>>(&r, "lease_owner")).transpose()?.flatten())
    }

    /// Wakes this process's runners (after a commit that queued tasks).
    pub(crate) fn wake_tasks(&self) {
        self.tasks.wake.notify_waiters();
    }

    /// Records a running task's progress (0 to 1), with a note for people.
    pub(crate) async fn set_progress(&self, id: &str, progress: f64) -> Result<()> {
        self.task_progress(id, progress, None).await
    }

    /// Records a task's progress (0 to 1), with a note for people.
    pub async fn task_progress(&self, id: &str, progress: f64, note: Option<&str>) -> Result<()> {
        let mut tx = self.db.begin().await?;
        Sql::with(
            "UPDATE tasks SET progress = $1, progress_note = COALESCE($2, progress_note) WHERE id = $3",
            [progress.clamp(0.0, 1.0).into(), note.map(str::to_string).into(), id.into()],
        )
        .execute(&mut tx)
        .await?;
        tx.commit().await
    }

    /// Appends a line to a task's log, keeping its last [`LOG_LINES`].
    pub async fn task_log(&self, id: &str, level: &str, message: &str) -> Result<()> {
        let message: String = message.chars().take(2000).collect();
        let mut tx = self.db.begin().await?;
        let row = Sql::with(
            "SELECT COALESCE(MAX(seq), 0) AS last FROM task_logs WHERE task_id = $1",
            [id.into()],
        )
        .fetch_optional_tx(&mut tx)
        .await?;
        let seq = row.map(|r| col::<i64>(&r, "last")).transpose()?.unwrap_or(0) + 1;
        Sql::with(
            "INSERT INTO task_logs (task_id, seq, at, level, message) VALUES ($1, $2, $3, $4, $5)",
            [id.into(), seq.into(), now_micros().into(), level.into(), message.into()],
        )
        .execute(&mut tx)
        .await?;
        if seq > LOG_LINES {
            Sql::with(
                "DELETE FROM task_logs WHERE task_id = $1 AND seq <= $2",
                [id.into(), (seq - LOG_LINES).into()],
            )
            .execute(&mut tx)
            .await?;
        }
        tx.commit().await
    }

    /// Starts this process's runners: one loop per queue, and the heartbeat that renews their
    /// leases and passes cancellations on.
    pub(crate) fn start_tasks(&self) {
        for (queue, concurrency) in self.tasks.options.queues.clone() {
            let core = self.clone();
            tokio::spawn(async move { core.queue_loop(queue, concurrency).await });
        }
        let core = self.clone();
        tokio::spawn(async move { core.heartbeat_loop().await });
    }

    async fn queue_loop(self, queue: String, concurrency: usize) {
        let running = Arc::new(AtomicUsize::new(0));
        while !self.tasks.stop.load(Ordering::Relaxed) {
            let free = concurrency.saturating_sub(running.load(Ordering::Acquire));
            let claimed = if free > 0 { self.claim(&queue, free).await } else { Ok(vec![]) };
            match claimed {
                Ok(tasks) => {
                    let idle = tasks.is_empty();
                    for (run, kind) in tasks {
                        running.fetch_add(1, Ordering::AcqRel);
                        let (core, running) = (self.clone(), running.clone());
                        tokio::spawn(async move {
                            core.run_task(run, kind).await;
                            running.fetch_sub(1, Ordering::AcqRel);
                            core.tasks.wake.notify_waiters();
                        });
                    }
                    if idle || free == 0 {
                        let _ = tokio::time::timeout(
                            self.tasks.options.poll,
                            self.tasks.wake.notified(),
                        )
                        .await;
                    }
                }
                Err(e) => {
                    if self.tasks.stop.load(Ordering::Relaxed) {
                        break;
                    }
                    tracing::warn!(queue, error = %e, "cannot claim tasks; retrying");
                    tokio::time::sleep(self.tasks.options.poll).await;
                }
            }
        }
    }

    /// Claims up to `n` tasks of `queue` that are due, or whose runner's lease expired.
    async fn claim(&self, queue: &str, n: usize) -> Result<Vec<(TaskRun, Arc<dyn TaskKind>)>> {
        let now = now_micros();
        let lease = now + self.tasks.options.lease.as_micros() as i64;
        let mut tx = self.db.begin().await?;
        let rows = Sql::with(
            &format!(
                "UPDATE tasks SET state = 'running', attempts = attempts + 1, lease_owner = $1, lease_expires_at = $2,
                    started_at = COALESCE(started_at, $3)
                 WHERE id IN (SELECT id FROM tasks WHERE queue = $4
                    AND ((state IN ('available', 'scheduled', 'retryable') AND scheduled_at <= $3)
                         OR (state = 'running' AND lease_expires_at < $3))
                    ORDER BY priority, scheduled_at, id LIMIT $5{})
                 RETURNING id, kind, team_id, args, attempts, max_attempts, cancel_requested",
                self.db.skip_locked()
            ),
            [
                self.tasks.replica.clone().into(),
                lease.into(),
                now.into(),
                queue.into(),
                (n as i64).into(),
            ],
        )
        .fetch_all_tx(&mut tx)
        .await?;
        tx.commit().await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let id: String = col(&row, "id")?;
            let kind_name: String = col(&row, "kind")?;
            let attempt = col::<i64>(&row, "attempts")? as u32;
            let max = col::<i64>(&row, "max_attempts")? as u32;
            let flags = Arc::new(Flags::default());
            if col::<i64>(&row, "cancel_requested")? != 0 {
                flags.cancel();
            }
            let run = TaskRun {
                id: id.clone(),
                team_id: col(&row, "team_id")?,
                args: serde_json::from_str(&col::<String>(&row, "args")?)?,
                attempt,
                flags,
            };
            let Some(kind) = self.tasks.registry.get(&kind_name).cloned() else {
                self.fail(
                    &run,
                    Error::internal(format!("this build has no task kind '{kind_name}'")),
                    true,
                )
                .await;
                continue;
            };
            // A task whose runners kept dying (its lease expired after its last attempt).
            if attempt > max {
                self.fail(&run, Error::internal("every attempt's runner was lost"), true).await;
                continue;
            }
            out.push((run, kind));
        }
        Ok(out)
    }

    async fn run_task(&self, run: TaskRun, kind: Arc<dyn TaskKind>) {
        self.tasks.running.lock().expect("running tasks").insert(run.id.clone(), run.flags.clone());
        let outcome = if run.cancelled() {
            Err(cancelled())
        } else {
            // A kind that panics fails its attempt, not the runner.
            use futures_util::FutureExt;
            std::panic::AssertUnwindSafe(kind.run(self, &run))
                .catch_unwind()
                .await
                .unwrap_or_else(|_| Err(Error::internal("the task panicked")))
        };
        let recorded = match outcome {
            Ok(result) => self.complete(&run, &result).await,
            Err(e) => {
                let was_cancel =
                    run.cancelled() && e.code == Code::Conflict && e.message == "cancelled";
                self.fail_or_cancel(&run, e, was_cancel).await
            }
        };
        if let Err(e) = recorded {
            tracing::error!(task = run.id, error = %e, "cannot record a task's outcome");
        }
        self.tasks.running.lock().expect("running tasks").remove(&run.id);
    }

    async fn complete(&self, run: &TaskRun, result: &Value) -> Result<()> {
        let mut tx = self.db.begin().await?;
        Sql::with(
            "UPDATE tasks SET state = 'completed', result = $1, progress = 1, finished_at = $2, error = NULL,
                lease_owner = NULL, lease_expires_at = NULL
             WHERE id = $3 AND lease_owner = $4",
            [result.to_string().into(), now_micros().into(), run.id.clone().into(), self.tasks.replica.clone().into()],
        )
        .execute(&mut tx)
        .await?;
        tx.commit().await
    }

    /// Records a failed attempt: retryable after the backoff, or discarded (always, with
    /// `last`), or cancelled.
    async fn fail_or_cancel(&self, run: &TaskRun, e: Error, cancel: bool) -> Result<()> {
        if e.code == Code::Internal {
            tracing::warn!(task = run.id, error = %e, source = ?e.source, "a task attempt failed");
        }
        let now = now_micros();
        let mut tx = self.db.begin().await?;
        let Some(row) = Sql::with(
            "SELECT errors, attempts, max_attempts, team_id, kind FROM tasks WHERE id = $1 AND lease_owner = $2",
            [run.id.clone().into(), self.tasks.replica.clone().into()],
        )
        .fetch_optional_tx(&mut tx)
        .await?
        else {
            // The lease went to another runner meanwhile: its outcome counts, not this one.
            return Ok(());
        };
        let mut errors: Vec<TaskError> = serde_json::from_str(&col::<String>(&row, "errors")?)?;
        let (attempt, max) = (col::<i64>(&row, "attempts")?, col::<i64>(&row, "max_attempts")?);
        let message = if e.code == Code::Internal && e.source.is_some() {
            format!(
                "{}: {}",
                e.message,
                e.source.as_ref().map(|s| s.to_string()).unwrap_or_default()
            )
        } else {
            e.message.clone()
        };
        if !cancel {
            errors.push(TaskError {
                attempt: attempt as u32,
                at: micros_to_time(now),
                error: message.clone(),
            });
        }
        let (state, at) = if cancel {
            (TaskState::Cancelled, now)
        } else if attempt < max {
            let backoff = self.tasks.options.backoff.as_micros() as i64;
            let wait = backoff.saturating_mul(1 << (attempt - 1).clamp(0, 20)).min(3_600_000_000);
            (TaskState::Retryable, now + wait)
        } else {
            (TaskState::Discarded, now)
        };
        let finished = state.finished().then_some(now);
        Sql::with(
            "UPDATE tasks SET state = $1, scheduled_at = $2, errors = $3, error = $4, finished_at = $5,
                lease_owner = NULL, lease_expires_at = NULL
             WHERE id = $6",
            [
                state.as_str().into(),
                at.into(),
                serde_json::to_string(&errors)?.into(),
                (!cancel).then(|| message.clone()).into(),
                finished.into(),
                run.id.clone().into(),
            ],
        )
        .execute(&mut tx)
        .await?;
        if state == TaskState::Discarded {
            let team_id: Option<String> = col(&row, "team_id")?;
            let kind: String = col(&row, "kind")?;
            let payload = serde_json::json!({"task": run.id, "kind": kind, "attempts": attempt, "error": message});
            self.emit_event(&mut tx, team_id.as_deref(), "task.discarded", &payload).await?;
        }
        tx.commit().await
    }

    async fn fail(&self, run: &TaskRun, e: Error, _last: bool) {
        if let Err(err) = self.fail_or_cancel(run, e, false).await {
            tracing::error!(task = run.id, error = %err, "cannot record a task's failure");
        }
    }

    /// Renews this process's leases every third of the lease, and passes cancellations on.
    async fn heartbeat_loop(self) {
        let every = self.tasks.options.lease / 3;
        while !self.tasks.stop.load(Ordering::Relaxed) {
            tokio::time::sleep(every).await;
            if self.tasks.running.lock().expect("running tasks").is_empty() {
                continue;
            }
            if let Err(e) = self.renew_leases().await {
                tracing::warn!(error = %e, "cannot renew task leases");
            }
        }
    }

    async fn renew_leases(&self) -> Result<()> {
        let lease = now_micros() + self.tasks.options.lease.as_micros() as i64;
        let mut tx = self.db.begin().await?;
        let rows = Sql::with(
            "UPDATE tasks SET lease_expires_at = $1 WHERE lease_owner = $2 AND state = 'running'
             RETURNING id, cancel_requested",
            [lease.into(), self.tasks.replica.clone().into()],
        )
        .fetch_all_tx(&mut tx)
        .await?;
        tx.commit().await?;
        let running = self.tasks.running.lock().expect("running tasks");
        for row in rows {
            let id: String = col(&row, "id")?;
            if col::<i64>(&row, "cancel_requested")? != 0
                && let Some(flags) = running.get(&id)
            {
                flags.cancel();
            }
        }
        Ok(())
    }

    /// Who may see a task: its team's members (and platform roles); the platform's own tasks,
    /// platform roles only.
    async fn task_row(&self, who: &Principal, id: &str) -> Result<AnyRow> {
        let row = self
            .db
            .fetch_optional(&Sql::with(&format!("{TASK_SELECT} WHERE k.id = $1"), [id.into()]))
            .await?
            .ok_or_else(|| Error::not_found("task", id))?;
        let visible = match col::<Option<String>>(&row, "team_id")? {
            Some(team) => who.role_in(&team).is_some(),
            None => who.platform_role.is_some(),
        };
        if !visible {
            return Err(Error::not_found("task", id));
        }
        Ok(row)
    }

    pub async fn get_task(&self, who: &Principal, id: &str) -> Result<Task> {
        task_from_row(&self.task_row(who, id).await?)
    }

    /// Tasks the caller can see, newest first.
    pub async fn list_tasks(&self, who: &Principal, q: &TaskQuery) -> Result<Vec<Task>> {
        let limit = crate::util::page_limit(q.limit)?;
        let mut sql = Sql::new(&format!("{TASK_SELECT} WHERE 1 = 1"));
        if let Some(team) = &q.team {
            let t = self.team_ref(who, team).await?;
            sql.push(" AND k.team_id = ").bind(t.id);
        } else if let Some(ids) = who.visible_teams() {
            if ids.is_empty() {
                return Ok(vec![]);
            }
            sql.push(" AND k.team_id IN (");
            for (i, id) in ids.into_iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.bind(id);
            }
            sql.push(")");
        }
        if let Some(state) = &q.state {
            let s = TaskState::parse(state).ok_or_else(|| {
                let all: Vec<&str> = TaskState::ALL.iter().map(|s| s.as_str()).collect();
                Error::invalid("state", format!("one of {}", all.join(", ")))
            })?;
            sql.push(" AND k.state = ").bind(s.as_str());
        }
        if let Some(kind) = &q.kind {
            sql.push(" AND k.kind = ").bind(kind.clone());
        }
        sql.push(" ORDER BY k.created_at DESC, k.id DESC LIMIT ").bind(limit);
        self.db.fetch_all(&sql).await?.iter().map(task_from_row).collect()
    }

    /// Lines of a task's log after `after`, oldest first.
    pub async fn task_logs(
        &self,
        who: &Principal,
        id: &str,
        q: &TaskLogQuery,
    ) -> Result<Vec<TaskLogLine>> {
        self.task_row(who, id).await?;
        let limit = crate::util::page_limit(q.limit)?;
        let rows = self
            .db
            .fetch_all(&Sql::with(
                "SELECT seq, at, level, message FROM task_logs WHERE task_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                [id.into(), (q.after.unwrap_or(0) as i64).into(), limit.into()],
            ))
            .await?;
        rows.iter()
            .map(|r| {
                Ok(TaskLogLine {
                    seq: col::<i64>(r, "seq")? as u64,
                    at: micros_to_time(col(r, "at")?),
                    level: col(r, "level")?,
                    message: col(r, "message")?,
                })
            })
            .collect()
    }

    /// Cancels a task (developers of its team; the platform's own tasks, admins): one that waits
    /// is cancelled at once, a running one when its runner next looks (its next heartbeat).
    pub async fn cancel_task(&self, who: &Principal, id: &str) -> Result<Task> {
        let row = self.task_row(who, id).await?;
        match col::<Option<String>>(&row, "team_id")? {
            Some(team) => {
                let name: Option<String> = col(&row, "team_name")?;
                let t = crate::auth::TeamRef { id: team, name: name.unwrap_or_default() };
                who.require(&t, TeamRole::Developer, "cancelling a task")?;
            }
            None => who.require_admin("cancelling a platform task")?,
        }
        let state: String = col(&row, "state")?;
        let state = TaskState::parse(&state).unwrap_or(TaskState::Discarded);
        if state.finished() {
            return Err(Error::conflict(format!(
                "task {id} is {}: nothing to cancel",
                state.as_str()
            )));
        }
        let now = now_micros();
        let mut tx = self.db.begin().await?;
        Sql::with(
            "UPDATE tasks SET cancel_requested = 1,
                state = CASE WHEN state = 'running' THEN state ELSE 'cancelled' END,
                finished_at = CASE WHEN state = 'running' THEN finished_at ELSE $1 END
             WHERE id = $2",
            [now.into(), id.into()],
        )
        .execute(&mut tx)
        .await?;
        let team_id: Option<String> = col(&row, "team_id")?;
        let kind: String = col(&row, "kind")?;
        let t = crate::audit::Target {
            team_id: team_id.as_deref(),
            object_type: "task",
            object_id: id,
            object_name: &kind,
        };
        crate::audit::record(
            &mut tx,
            who,
            "task.cancel",
            t,
            serde_json::json!({"state": state.as_str()}),
        )
        .await?;
        tx.commit().await?;
        // A task of this process stops at once.
        if let Some(flags) = self.tasks.running.lock().expect("running tasks").get(id) {
            flags.cancel();
        }
        self.get_task(who, id).await
    }
}
