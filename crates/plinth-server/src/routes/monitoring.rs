//! Monitoring: a deployment's health over time.

use axum::Json;
use axum::extract::{Path, State};
use plinth_api::ErrorBody;
use plinth_api::monitoring::{HealthQuery, HealthSeries};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{ApiQuery, Caller};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(deployment_health))
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
