//! Policies, promotions and their reviews, and "what served when".

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use plinth_api::ErrorBody;
use plinth_api::governance::{
    Policy, PolicyChange, PolicyChangeQuery, PolicyChangeReview, PolicyOutcome, PolicyRecord,
    Promotion, PromotionQuery, PromotionRequest, ReviewRequest, ServedAt, ServedQuery,
};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiQuery, Caller};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(set_team_policy))
        .routes(routes!(set_platform_policy))
        .routes(routes!(list_policies))
        .routes(routes!(list_policy_changes))
        .routes(routes!(review_policy_change))
        .routes(routes!(request_promotion))
        .routes(routes!(list_promotions))
        .routes(routes!(get_promotion))
        .routes(routes!(review_promotion))
        .routes(routes!(served_at))
}

/// Sets a team's policy for an environment (maintainers). It adds to the platform default:
/// the policy in force is the stricter of the two. Where the platform default says
/// `review_team_changes`, the change waits for a reviewer (202, a policy change).
#[utoipa::path(put, path = "/teams/{team}/policies/{environment}", tag = "governance",
    params(("team" = String, Path), ("environment" = String, Path)), request_body = Policy,
    responses((status = 200, body = PolicyRecord), (status = 202, body = PolicyChange), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn set_team_policy(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((team, env)): Path<(String, String)>,
    ApiJson(p): ApiJson<Policy>,
) -> ApiResult<Response> {
    Ok(match s.core.set_policy(&who, Some(&team), &env, p).await? {
        PolicyOutcome::Applied(r) => Json(r).into_response(),
        PolicyOutcome::Pending(c) => (StatusCode::ACCEPTED, Json(c)).into_response(),
    })
}

/// Sets the platform default policy for an environment (admins).
#[utoipa::path(put, path = "/policies/{environment}", tag = "governance",
    params(("environment" = String, Path)), request_body = Policy,
    responses((status = 200, body = PolicyRecord), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn set_platform_policy(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(env): Path<String>,
    ApiJson(p): ApiJson<Policy>,
) -> ApiResult<Response> {
    Ok(match s.core.set_policy(&who, None, &env, p).await? {
        PolicyOutcome::Applied(r) => Json(r).into_response(),
        PolicyOutcome::Pending(c) => (StatusCode::ACCEPTED, Json(c)).into_response(),
    })
}

/// Changes to team policies, waiting for review or decided (newest first).
#[utoipa::path(get, path = "/policy-changes", tag = "governance", params(PolicyChangeQuery),
    responses((status = 200, body = Vec<PolicyChange>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn list_policy_changes(
    State(s): State<AppState>,
    Caller(who): Caller,
    ApiQuery(q): ApiQuery<PolicyChangeQuery>,
) -> ApiResult<Json<Vec<PolicyChange>>> {
    Ok(Json(s.core.list_policy_changes(&who, &q).await?))
}

/// A reviewer's decision on a pending policy change (platform reviewers and admins, independent
/// of its author): `approve` puts it in force.
#[utoipa::path(post, path = "/policy-changes/{id}/review", tag = "governance",
    params(("id" = String, Path)), request_body = PolicyChangeReview,
    responses((status = 200, body = PolicyChange), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn review_policy_change(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<PolicyChangeReview>,
) -> ApiResult<Json<PolicyChange>> {
    Ok(Json(s.core.review_policy_change(&who, &id, req).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct TeamFilter {
    #[serde(default)]
    team: Option<String>,
}

/// The platform defaults, and the team's own policies when `team` is given.
#[utoipa::path(get, path = "/policies", tag = "governance", params(TeamFilter),
    responses((status = 200, body = Vec<PolicyRecord>), (status = 404, body = ErrorBody)))]
async fn list_policies(
    State(s): State<AppState>,
    Caller(who): Caller,
    ApiQuery(q): ApiQuery<TeamFilter>,
) -> ApiResult<Json<Vec<PolicyRecord>>> {
    Ok(Json(s.core.list_policies(&who, q.team.as_deref()).await?))
}

/// Requests a promotion: the checks run at once; the answer says whether it was blocked,
/// deployed (approved automatically) or waits for review.
#[utoipa::path(post, path = "/teams/{team}/models/{model}/promotions", tag = "governance",
    params(("team" = String, Path), ("model" = String, Path)), request_body = PromotionRequest,
    responses((status = 201, body = Promotion), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn request_promotion(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((team, model)): Path<(String, String)>,
    ApiJson(req): ApiJson<PromotionRequest>,
) -> ApiResult<(StatusCode, Json<Promotion>)> {
    Ok((StatusCode::CREATED, Json(s.core.request_promotion(&who, &team, &model, req).await?)))
}

/// Promotions the caller can see; `reviewable=true` is the caller's review queue.
#[utoipa::path(get, path = "/promotions", tag = "governance", params(PromotionQuery),
    responses((status = 200, body = Vec<Promotion>), (status = 400, body = ErrorBody)))]
async fn list_promotions(
    State(s): State<AppState>,
    Caller(who): Caller,
    ApiQuery(q): ApiQuery<PromotionQuery>,
) -> ApiResult<Json<Vec<Promotion>>> {
    Ok(Json(s.core.list_promotions(&who, &q).await?))
}

#[utoipa::path(get, path = "/promotions/{id}", tag = "governance", params(("id" = String, Path)),
    responses((status = 200, body = Promotion), (status = 404, body = ErrorBody)))]
async fn get_promotion(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Promotion>> {
    Ok(Json(s.core.get_promotion(&who, &id).await?))
}

/// Approve, reject or request changes (reviewers and team maintainers; never the author).
#[utoipa::path(post, path = "/promotions/{id}/reviews", tag = "governance", params(("id" = String, Path)), request_body = ReviewRequest,
    responses((status = 200, body = Promotion), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn review_promotion(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ReviewRequest>,
) -> ApiResult<Json<Promotion>> {
    Ok(Json(s.core.review_promotion(&who, &id, req).await?))
}

/// Which version served an environment at a time, who approved it, with which evidence.
#[utoipa::path(get, path = "/teams/{team}/models/{model}/served", tag = "governance",
    params(("team" = String, Path), ("model" = String, Path), ServedQuery),
    responses((status = 200, body = ServedAt), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn served_at(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((team, model)): Path<(String, String)>,
    ApiQuery(q): ApiQuery<ServedQuery>,
) -> ApiResult<Json<ServedAt>> {
    Ok(Json(s.core.served_at(&who, &team, &model, &q).await?))
}
