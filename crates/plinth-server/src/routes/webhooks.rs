//! Webhooks: subscriptions to the platform's events and their delivery log.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use plinth_api::ErrorBody;
use plinth_api::governance::{CreateWebhook, Delivery, Webhook};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{ApiJson, Caller};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_webhook, list_webhooks))
        .routes(routes!(delete_webhook))
        .routes(routes!(list_deliveries))
}

/// Subscribes a URL to the team's events (promotions, versions, deployments, evaluations,
/// tasks, alerts); the answer holds the signing secret, once.
#[utoipa::path(post, path = "/teams/{team}/webhooks", tag = "webhooks", params(("team" = String, Path)), request_body = CreateWebhook,
    responses((status = 201, body = Webhook), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn create_webhook(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(team): Path<String>,
    ApiJson(req): ApiJson<CreateWebhook>,
) -> ApiResult<(StatusCode, Json<Webhook>)> {
    Ok((StatusCode::CREATED, Json(s.core.create_webhook(&who, &team, req).await?)))
}

#[utoipa::path(get, path = "/teams/{team}/webhooks", tag = "webhooks", params(("team" = String, Path)),
    responses((status = 200, body = Vec<Webhook>), (status = 404, body = ErrorBody)))]
async fn list_webhooks(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(team): Path<String>,
) -> ApiResult<Json<Vec<Webhook>>> {
    Ok(Json(s.core.list_webhooks(&who, &team).await?))
}

#[utoipa::path(delete, path = "/teams/{team}/webhooks/{id}", tag = "webhooks", params(("team" = String, Path), ("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete_webhook(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((team, id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    s.core.delete_webhook(&who, &team, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The delivery log of a webhook: every event, its attempts and the last answer.
#[utoipa::path(get, path = "/teams/{team}/webhooks/{id}/deliveries", tag = "webhooks", params(("team" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = Vec<Delivery>), (status = 404, body = ErrorBody)))]
async fn list_deliveries(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((team, id)): Path<(String, String)>,
) -> ApiResult<Json<Vec<Delivery>>> {
    Ok(Json(s.core.list_deliveries(&who, &team, &id).await?))
}
