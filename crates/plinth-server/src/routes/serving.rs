//! Environments, deployments (deploy, traffic, rollback, history, grants), the prediction API,
//! deployment metrics and the prediction log.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use plinth_api::identity::PageQuery;
use plinth_api::serving::{
    CreateEnvironment, Deployment, DeploymentMetrics, DeploymentQuery, DeploymentRevision,
    DeploymentSpec, Environment, GrantRequest, PredictRequest, PredictResponse, PredictionLogQuery,
    PredictionRecord, Rollback, SetTraffic,
};
use plinth_api::{ErrorBody, Page};
use plinth_core::serving::input;
use plinth_core::serving::predict::RowsAnswer;
use plinth_core::util::{now_micros, time_to_micros};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiQuery, Caller, MaybeCaller, parse_json};

/// The largest prediction request body.
pub const PREDICT_BODY_LIMIT: usize = 64 * 1024 * 1024;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_environments, create_environment))
        .routes(routes!(list_deployments))
        .routes(routes!(get_deployment, deploy))
        .routes(routes!(set_traffic))
        .routes(routes!(rollback))
        .routes(routes!(history))
        .routes(routes!(grant, revoke_grant))
        .routes(routes!(deployment_metrics))
        .routes(routes!(prediction_log))
        .merge(
            OpenApiRouter::new()
                .routes(routes!(predict))
                .layer(DefaultBodyLimit::max(PREDICT_BODY_LIMIT)),
        )
}

#[utoipa::path(get, path = "/environments", tag = "serving", responses((status = 200, body = Vec<Environment>)))]
async fn list_environments(
    State(s): State<AppState>,
    Caller(who): Caller,
) -> ApiResult<Json<Vec<Environment>>> {
    Ok(Json(s.core.list_environments(&who).await?))
}

/// Adds an environment (platform admins).
#[utoipa::path(post, path = "/environments", tag = "serving", request_body = CreateEnvironment,
    responses((status = 201, body = Environment), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_environment(
    State(s): State<AppState>,
    Caller(who): Caller,
    ApiJson(req): ApiJson<CreateEnvironment>,
) -> ApiResult<(StatusCode, Json<Environment>)> {
    Ok((StatusCode::CREATED, Json(s.core.create_environment(&who, req).await?)))
}

#[utoipa::path(get, path = "/deployments", tag = "serving", params(DeploymentQuery), responses((status = 200, body = Page<Deployment>)))]
async fn list_deployments(
    State(s): State<AppState>,
    Caller(who): Caller,
    ApiQuery(q): ApiQuery<DeploymentQuery>,
) -> ApiResult<Json<Page<Deployment>>> {
    Ok(Json(s.core.list_deployments(&who, &q).await?))
}

type DeploymentPath = Path<(String, String, String)>;

#[utoipa::path(get, path = "/deployments/{team}/{model}/{environment}", tag = "serving",
    params(("team" = String, Path), ("model" = String, Path), ("environment" = String, Path)),
    responses((status = 200, body = Deployment), (status = 404, body = ErrorBody)))]
async fn get_deployment(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((t, m, e)): DeploymentPath,
) -> ApiResult<Json<Deployment>> {
    Ok(Json(s.core.get_deployment(&who, &t, &m, &e).await?))
}

/// Deploys versions of a model to an environment, or replaces what is deployed there (team
/// maintainers). Every version is loaded before the change commits; requests in flight finish
/// on the versions that served them.
#[utoipa::path(put, path = "/deployments/{team}/{model}/{environment}", tag = "serving", request_body = DeploymentSpec,
    params(("team" = String, Path), ("model" = String, Path), ("environment" = String, Path)),
    responses((status = 200, body = Deployment), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn deploy(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((t, m, e)): DeploymentPath,
    ApiJson(spec): ApiJson<DeploymentSpec>,
) -> ApiResult<Json<Deployment>> {
    Ok(Json(s.core.deploy(&who, &t, &m, &e, spec).await?))
}

/// Changes the traffic split and shadows (canary, A/B, hot swap).
#[utoipa::path(post, path = "/deployments/{team}/{model}/{environment}/traffic", tag = "serving", request_body = SetTraffic,
    params(("team" = String, Path), ("model" = String, Path), ("environment" = String, Path)),
    responses((status = 200, body = Deployment), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn set_traffic(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((t, m, e)): DeploymentPath,
    ApiJson(req): ApiJson<SetTraffic>,
) -> ApiResult<Json<Deployment>> {
    Ok(Json(s.core.set_traffic(&who, &t, &m, &e, req).await?))
}

/// Goes back to an earlier revision (by default the previous one), in one call.
#[utoipa::path(post, path = "/deployments/{team}/{model}/{environment}/rollback", tag = "serving", request_body = Rollback,
    params(("team" = String, Path), ("model" = String, Path), ("environment" = String, Path)),
    responses((status = 200, body = Deployment), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn rollback(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((t, m, e)): DeploymentPath,
    body: Bytes,
) -> ApiResult<Json<Deployment>> {
    let req: Rollback = if body.is_empty() { Rollback::default() } else { parse_json("", &body)? };
    Ok(Json(s.core.rollback(&who, &t, &m, &e, req).await?))
}

/// What served in this environment, when, and who changed it (newest first).
#[utoipa::path(get, path = "/deployments/{team}/{model}/{environment}/history", tag = "serving",
    params(("team" = String, Path), ("model" = String, Path), ("environment" = String, Path), PageQuery),
    responses((status = 200, body = Page<DeploymentRevision>), (status = 404, body = ErrorBody)))]
async fn history(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((t, m, e)): DeploymentPath,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<DeploymentRevision>>> {
    Ok(Json(s.core.deployment_history(&who, &t, &m, &e, &q).await?))
}

/// Lets another team call this deployment.
#[utoipa::path(post, path = "/deployments/{team}/{model}/{environment}/grants", tag = "serving", request_body = GrantRequest,
    params(("team" = String, Path), ("model" = String, Path), ("environment" = String, Path)),
    responses((status = 200, body = Deployment), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn grant(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((t, m, e)): DeploymentPath,
    ApiJson(req): ApiJson<GrantRequest>,
) -> ApiResult<Json<Deployment>> {
    Ok(Json(s.core.grant_deployment(&who, &t, &m, &e, &req.team).await?))
}

#[utoipa::path(delete, path = "/deployments/{team}/{model}/{environment}/grants", tag = "serving", request_body = GrantRequest,
    params(("team" = String, Path), ("model" = String, Path), ("environment" = String, Path)),
    responses((status = 200, body = Deployment), (status = 404, body = ErrorBody)))]
async fn revoke_grant(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((t, m, e)): DeploymentPath,
    ApiJson(req): ApiJson<GrantRequest>,
) -> ApiResult<Json<Deployment>> {
    Ok(Json(s.core.revoke_deployment_grant(&who, &t, &m, &e, &req.team).await?))
}

/// The deployment's live figures: requests, errors by code, latency, batches, queue, workers.
#[utoipa::path(get, path = "/deployments/{team}/{model}/{environment}/metrics", tag = "serving",
    params(("team" = String, Path), ("model" = String, Path), ("environment" = String, Path)),
    responses((status = 200, body = DeploymentMetrics), (status = 404, body = ErrorBody)))]
async fn deployment_metrics(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((t, m, e)): DeploymentPath,
) -> ApiResult<Json<DeploymentMetrics>> {
    Ok(Json(s.core.deployment_metrics(&who, &t, &m, &e).await?))
}

/// Logged predictions of the deployment in a time range, oldest first.
#[utoipa::path(get, path = "/deployments/{team}/{model}/{environment}/predictions", tag = "serving",
    params(("team" = String, Path), ("model" = String, Path), ("environment" = String, Path), PredictionLogQuery),
    responses((status = 200, body = Vec<PredictionRecord>), (status = 404, body = ErrorBody)))]
async fn prediction_log(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((t, m, e)): DeploymentPath,
    ApiQuery(q): ApiQuery<PredictionLogQuery>,
) -> ApiResult<Json<Vec<PredictionRecord>>> {
    let limit = plinth_core::util::page_limit(q.limit)? as usize;
    let since = q.since.map(time_to_micros).unwrap_or(0);
    let until = q.until.map(time_to_micros).unwrap_or(now_micros() + 1);
    Ok(Json(s.core.prediction_log(&who, &t, &m, &e, since, until, q.shadow, limit).await?))
}

/// Predicts with the version the traffic split (or `routing_key`) picks. Rows are objects keyed
/// by feature name or arrays in feature order; or send columns, or entity keys. Every outcome,
/// refusals included, counts in the deployment's metrics.
#[utoipa::path(post, path = "/deployments/{team}/{model}/{environment}/predict", tag = "serving", security((), ("api_key" = [])), request_body = PredictRequest,
    params(("team" = String, Path), ("model" = String, Path), ("environment" = String, Path)),
    responses((status = 200, body = PredictResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 503, body = ErrorBody), (status = 504, body = ErrorBody)))]
async fn predict(
    State(s): State<AppState>,
    MaybeCaller(who): MaybeCaller,
    Path((t, m, e)): DeploymentPath,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> ApiResult<Json<PredictResponse>> {
    let request_id = crate::current_request_id().unwrap_or_default();
    let p = s.core.prediction(who.as_ref(), &t, &m, &e, &request_id)?;
    if !crate::extract::is_json(&headers) {
        return Err(p.failed(crate::extract::not_json()).into());
    }
    let req: PredictRequest = parse_json("", &body).map_err(|e| p.failed(e))?;
    let (model, environment) =
        (format!("{}/{}", p.live.team, p.live.model), p.live.environment.clone());
    let RowsAnswer { answer, rows } = p.rows(req).await?;
    let (predictions, probabilities) = input::predictions(&answer.outputs, rows);
    Ok(Json(PredictResponse {
        request_id,
        model,
        environment,
        version: answer.version,
        predictions,
        probabilities,
    }))
}
