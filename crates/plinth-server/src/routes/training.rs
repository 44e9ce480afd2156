//! Training: recipes, runs (202 + the run; poll it, follow its log, cancel it).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use plinth_api::ErrorBody;
use plinth_api::training::{Recipe, RecipeSpec, StartRun, TrainingRun};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiQuery, Caller};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_recipes))
        .routes(routes!(put_recipe, get_recipe))
        .routes(routes!(start_run))
        .routes(routes!(list_runs))
        .routes(routes!(get_run))
        .routes(routes!(cancel_run))
}

/// A team's recipes (their latest versions).
#[utoipa::path(get, path = "/teams/{team}/recipes", tag = "training", params(("team" = String, Path)),
    responses((status = 200, body = Vec<Recipe>), (status = 404, body = ErrorBody)))]
async fn list_recipes(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(team): Path<String>,
) -> ApiResult<Json<Vec<Recipe>>> {
    Ok(Json(s.core.list_recipes(&who, &team).await?))
}

/// Creates a recipe, or a new version of it when the spec differs (developers and up).
#[utoipa::path(put, path = "/teams/{team}/recipes/{name}", tag = "training",
    params(("team" = String, Path), ("name" = String, Path)), request_body = RecipeSpec,
    responses((status = 200, body = Recipe), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn put_recipe(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((team, name)): Path<(String, String)>,
    ApiJson(spec): ApiJson<RecipeSpec>,
) -> ApiResult<Json<Recipe>> {
    Ok(Json(s.core.put_recipe(&who, &team, &name, spec).await?))
}

#[utoipa::path(get, path = "/teams/{team}/recipes/{name}", tag = "training",
    params(("team" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = Recipe), (status = 404, body = ErrorBody)))]
async fn get_recipe(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((team, name)): Path<(String, String)>,
) -> ApiResult<Json<Recipe>> {
    Ok(Json(s.core.get_recipe(&who, &team, &name).await?))
}

/// Starts a run of the recipe's latest version: 202 with the run; poll it, or follow its log
/// (`/tasks/{id}/logs`).
#[utoipa::path(post, path = "/teams/{team}/recipes/{name}/runs", tag = "training",
    params(("team" = String, Path), ("name" = String, Path)), request_body = StartRun,
    responses((status = 202, body = TrainingRun), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn start_run(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((team, name)): Path<(String, String)>,
    ApiJson(req): ApiJson<StartRun>,
) -> ApiResult<(StatusCode, Json<TrainingRun>)> {
    Ok((StatusCode::ACCEPTED, Json(s.core.start_run(&who, &team, &name, req).await?)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct RunQuery {
    /// Only this recipe's runs.
    recipe: Option<String>,
}

/// A team's runs, newest first.
#[utoipa::path(get, path = "/teams/{team}/runs", tag = "training", params(("team" = String, Path), RunQuery),
    responses((status = 200, body = Vec<TrainingRun>), (status = 404, body = ErrorBody)))]
async fn list_runs(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(team): Path<String>,
    ApiQuery(q): ApiQuery<RunQuery>,
) -> ApiResult<Json<Vec<TrainingRun>>> {
    Ok(Json(s.core.list_runs(&who, &team, q.recipe.as_deref()).await?))
}

#[utoipa::path(get, path = "/teams/{team}/runs/{id}", tag = "training",
    params(("team" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = TrainingRun), (status = 404, body = ErrorBody)))]
async fn get_run(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((team, id)): Path<(String, String)>,
) -> ApiResult<Json<TrainingRun>> {
    Ok(Json(s.core.get_run(&who, &team, &id).await?))
}

/// Cancels a run: it stops at its next iteration and registers nothing.
#[utoipa::path(post, path = "/teams/{team}/runs/{id}/cancel", tag = "training",
    params(("team" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = TrainingRun), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn cancel_run(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((team, id)): Path<(String, String)>,
) -> ApiResult<Json<TrainingRun>> {
    Ok(Json(s.core.cancel_run(&who, &team, &id).await?))
}
