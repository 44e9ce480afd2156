//! Background tasks: list, show, log, cancel.

use axum::Json;
use axum::extract::{Path, State};
use plinth_api::ErrorBody;
use plinth_api::tasks::{Task, TaskLogLine, TaskLogQuery, TaskQuery};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{ApiQuery, Caller};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_tasks))
        .routes(routes!(get_task))
        .routes(routes!(task_logs))
        .routes(routes!(cancel_task))
}

/// Tasks the caller can see (their teams'; every team's for platform roles), newest first.
#[utoipa::path(get, path = "/tasks", tag = "tasks", params(TaskQuery),
    responses((status = 200, body = Vec<Task>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn list_tasks(
    State(s): State<AppState>,
    Caller(who): Caller,
    ApiQuery(q): ApiQuery<TaskQuery>,
) -> ApiResult<Json<Vec<Task>>> {
    Ok(Json(s.core.list_tasks(&who, &q).await?))
}

#[utoipa::path(get, path = "/tasks/{id}", tag = "tasks", params(("id" = String, Path)),
    responses((status = 200, body = Task), (status = 404, body = ErrorBody)))]
async fn get_task(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Task>> {
    Ok(Json(s.core.get_task(&who, &id).await?))
}

/// Lines of the task's log after `after` (a line's `seq`), oldest first.
#[utoipa::path(get, path = "/tasks/{id}/logs", tag = "tasks", params(("id" = String, Path), TaskLogQuery),
    responses((status = 200, body = Vec<TaskLogLine>), (status = 404, body = ErrorBody)))]
async fn task_logs(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<TaskLogQuery>,
) -> ApiResult<Json<Vec<TaskLogLine>>> {
    Ok(Json(s.core.task_logs(&who, &id, &q).await?))
}

/// Cancels a task: at once when it waits, at its runner's next heartbeat when it runs.
#[utoipa::path(post, path = "/tasks/{id}/cancel", tag = "tasks", params(("id" = String, Path)),
    responses((status = 200, body = Task), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn cancel_task(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Task>> {
    Ok(Json(s.core.cancel_task(&who, &id).await?))
}
