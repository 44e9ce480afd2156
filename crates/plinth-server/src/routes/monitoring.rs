//! Monitoring: a deployment's health over time.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use plinth_api::ErrorBody;
use plinth_api::monitoring::{Alert, CreateSilence, HealthQuery, HealthSeries, Silence};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiQuery, Caller};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(deployment_health))
        .routes(routes!(list_alerts))
        .routes(routes!(create_silence, list_silences))
}

/// Silences matching alerts of the team (by model, environment, rule; unset matches all) until
/// `ends_at`: their state changes as always, but no notification is sent (developers and up).
#[utoipa::path(post, path = "/teams/{team}/silences", tag = "monitoring", params(("team" = String, Path)), request_body = CreateSilence,
    responses((status = 201, body = Silence), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn create_silence(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(team): Path<String>,
    ApiJson(req): ApiJson<CreateSilence>,
) -> ApiResult<(StatusCode, Json<Silence>)> {
    Ok((StatusCode::CREATED, Json(s.core.create_silence(&who, &team, req).await?)))
}

/// The team's silences that have not ended.
#[utoipa::path(get, path = "/teams/{team}/silences", tag = "monitoring", params(("team" = String, Path)),
    responses((status = 200, body = Vec<Silence>), (status = 404, body = ErrorBody)))]
async fn list_silences(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(team): Path<String>,
) -> ApiResult<Json<Vec<Silence>>> {
    Ok(Json(s.core.list_silences(&who, &team).await?))
}

/// The team's alerts: pending, firing and resolved, newest change first. Production
/// deployments have the SLA's rules on their own (error rate over 5 %, p99 latency over 1 s,
/// both over 5 minutes, firing after holding for 5 minutes); each firing and resolve is also
/// an `alert.firing` / `alert.resolved` event for the team's webhooks.
#[utoipa::path(get, path = "/teams/{team}/alerts", tag = "monitoring", params(("team" = String, Path)),
    responses((status = 200, body = Vec<Alert>), (status = 404, body = ErrorBody)))]
async fn list_alerts(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(team): Path<String>,
) -> ApiResult<Json<Vec<Alert>>> {
    Ok(Json(s.core.list_alerts(&who, &team).await?))
}

/// A deployment's health over a range (default: the last hour) in steps (default: a minute),
/// added up over every replica and persisted across restarts: requests, rows, errors by code,
/// error rate, availability against the 99.9 % target (5xx answers count against it, a
/// caller's mistakes do not), latency p50/p95/p99 and each version's share.
#[utoipa::path(get, path = "/deployments/{team}/{model}/{environment}/health", tag = "monitoring",
    params(("team" = String, Path), ("model" = String, Path), ("environment" = String, Path), HealthQuery),
    responses((status = 200, body = HealthSeries), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn deployment_health(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((t, m, e)): Path<(String, String, String)>,
    ApiQuery(q): ApiQuery<HealthQuery>,
) -> ApiResult<Json<HealthSeries>> {
    Ok(Json(s.core.deployment_health(&who, &t, &m, &e, &q).await?))
}
