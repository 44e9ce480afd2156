//! Evaluations (metrics, fairness, slices, comparison) and their Markdown report.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use plinth_api::ErrorBody;
use plinth_api::governance::{Evaluation, EvaluationRequest};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiQuery, Caller};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_evaluation, list_evaluations))
        .routes(routes!(get_evaluation))
        .routes(routes!(evaluation_report))
}

/// Starts an evaluation job: answers 202 with the job; poll it until `succeeded` or `failed`.
#[utoipa::path(post, path = "/teams/{team}/models/{model}/evaluations", tag = "evaluation",
    params(("team" = String, Path), ("model" = String, Path)), request_body = EvaluationRequest,
    responses((status = 202, body = Evaluation), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn create_evaluation(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((team, model)): Path<(String, String)>,
    ApiJson(req): ApiJson<EvaluationRequest>,
) -> ApiResult<(StatusCode, Json<Evaluation>)> {
    Ok((StatusCode::ACCEPTED, Json(s.core.evaluate(&who, &team, &model, req).await?)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct VersionFilter {
    #[serde(default)]
    version: Option<u32>,
}

#[utoipa::path(get, path = "/teams/{team}/models/{model}/evaluations", tag = "evaluation",
    params(("team" = String, Path), ("model" = String, Path), VersionFilter),
    responses((status = 200, body = Vec<Evaluation>), (status = 404, body = ErrorBody)))]
async fn list_evaluations(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((team, model)): Path<(String, String)>,
    ApiQuery(q): ApiQuery<VersionFilter>,
) -> ApiResult<Json<Vec<Evaluation>>> {
    Ok(Json(s.core.list_evaluations(&who, &team, &model, q.version).await?))
}

#[utoipa::path(get, path = "/evaluations/{id}", tag = "evaluation", params(("id" = String, Path)),
    responses((status = 200, body = Evaluation), (status = 404, body = ErrorBody)))]
async fn get_evaluation(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Evaluation>> {
    Ok(Json(s.core.get_evaluation(&who, &id).await?))
}

/// The evaluation as a Markdown report for reviewers.
#[utoipa::path(get, path = "/evaluations/{id}/report", tag = "evaluation", params(("id" = String, Path)),
    responses((status = 200, body = String, content_type = "text/markdown"), (status = 404, body = ErrorBody)))]
async fn evaluation_report(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let e = s.core.get_evaluation(&who, &id).await?;
    let md = plinth_core::eval::report::markdown(&e);
    Ok(([(header::CONTENT_TYPE, "text/markdown; charset=utf-8")], md).into_response())
}
