//! Background tasks (evaluations, materializations, webhook deliveries, ...): their state,
//! attempts, progress and log, and the schedules that fire them.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

use crate::governance::JobStatus;

/// Where a task is in its life (River's and Oban's states).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Waiting for a runner.
    Available,
    /// Waiting for its time (`scheduled_at`).
    Scheduled,
    /// A runner holds it (and renews its lease).
    Running,
    /// An attempt failed; it runs again at `scheduled_at`.
    Retryable,
    Completed,
    Cancelled,
    /// Every attempt failed: `errors` says why.
    Discarded,
}

impl TaskState {
    pub const ALL: &'static [TaskState] = &[
        TaskState::Available,
        TaskState::Scheduled,
        TaskState::Running,
        TaskState::Retryable,
        TaskState::Completed,
        TaskState::Cancelled,
        TaskState::Discarded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Available => "available",
            TaskState::Scheduled => "scheduled",
            TaskState::Running => "running",
            TaskState::Retryable => "retryable",
            TaskState::Completed => "completed",
            TaskState::Cancelled => "cancelled",
            TaskState::Discarded => "discarded",
        }
    }

    pub fn parse(s: &str) -> Option<TaskState> {
        TaskState::ALL.iter().copied().find(|t| t.as_str() == s)
    }

    /// Whether the task is over (nothing will run it again).
    pub fn finished(self) -> bool {
        matches!(self, TaskState::Completed | TaskState::Cancelled | TaskState::Discarded)
    }

    /// The coarser status evaluations and materializations report.
    pub fn job_status(self) -> JobStatus {
        match self {
            TaskState::Available | TaskState::Scheduled | TaskState::Retryable => JobStatus::Queued,
            TaskState::Running => JobStatus::Running,
            TaskState::Completed => JobStatus::Succeeded,
            TaskState::Cancelled | TaskState::Discarded => JobStatus::Failed,
        }
    }
}

/// A failed attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskError {
    pub attempt: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub error: String,
}

/// A task.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
// `Task` in the document is what a model predicts (registry).
#[schema(as = BackgroundTask)]
pub struct Task {
    pub id: String,
    /// The team it works for; absent for the platform's own tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    pub kind: String,
    pub queue: String,
    /// Lower runs first (1 to 4).
    pub priority: u32,
    pub state: TaskState,
    /// 0 to 1.
    pub progress: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_note: Option<String>,
    pub attempt: u32,
    pub max_attempts: u32,
    /// The replica running it now (the holder of its lease), while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner: Option<String>,
    pub errors: Vec<TaskError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Value>)]
    pub result: Option<serde_json::Value>,
    /// When it may run (next).
    #[serde(with = "time::serde::rfc3339")]
    pub scheduled_at: OffsetDateTime,
    pub cancel_requested: bool,
    /// The schedule that fired it, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub created_by: String,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub started_at: Option<OffsetDateTime>,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub finished_at: Option<OffsetDateTime>,
}

/// A line of a task's log.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TaskLogLine {
    pub seq: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// `info`, `warn` or `error`.
    pub level: String,
    pub message: String,
}

/// Filters of `GET /tasks`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TaskQuery {
    #[serde(default)]
    pub team: Option<String>,
    /// One of the task states.
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    /// At most this many (default 100, at most 500), newest first.
    #[serde(default)]
    pub limit: Option<u32>,
}

/// Lines of a task's log after `after` (a `seq`), oldest first.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TaskLogQuery {
    #[serde(default)]
    pub after: Option<u64>,
    #[serde(default)]
    pub limit: Option<u32>,
}
