//! The feature store over HTTP: entities, feature views, feature services, materialization
//! jobs, online reads (Feast's request and answer shapes) and pushes.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use plinth_api::ErrorBody;
use plinth_api::features::{
    CreateEntity, CreateFeatureService, CreateFeatureView, CreateTrainingSet, Entity,
    FeatureService, FeatureView, Materialization, MaterializeRequest, OnlineRequest,
    OnlineResponse, PushRequest, PushResponse,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{ApiJson, Caller, MaybeCaller, parse_json};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_entity, list_entities))
        .routes(routes!(create_feature_view, list_feature_views))
        .routes(routes!(get_feature_view))
        .routes(routes!(materialize))
        .routes(routes!(get_materialization))
        .routes(routes!(create_feature_service))
        .routes(routes!(online_features))
        .routes(routes!(push_features))
        .routes(routes!(create_training_set))
}

/// Builds a point-in-time correct training set and saves it as a dataset version (with its
/// lineage in `source`).
#[utoipa::path(post, path = "/teams/{team}/training-sets", tag = "features", params(("team" = String, Path)), request_body = CreateTrainingSet,
    responses((status = 201, body = plinth_api::data::DatasetVersion), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_training_set(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(team): Path<String>,
    ApiJson(req): ApiJson<CreateTrainingSet>,
) -> ApiResult<(StatusCode, Json<plinth_api::data::DatasetVersion>)> {
    Ok((StatusCode::CREATED, Json(s.core.create_training_set(&who, &team, req).await?)))
}

#[utoipa::path(post, path = "/teams/{team}/entities", tag = "features", params(("team" = String, Path)), request_body = CreateEntity,
    responses((status = 201, body = Entity), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_entity(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(team): Path<String>,
    ApiJson(req): ApiJson<CreateEntity>,
) -> ApiResult<(StatusCode, Json<Entity>)> {
    Ok((StatusCode::CREATED, Json(s.core.create_entity(&who, &team, req).await?)))
}

#[utoipa::path(get, path = "/teams/{team}/entities", tag = "features", params(("team" = String, Path)),
    responses((status = 200, body = Vec<Entity>), (status = 404, body = ErrorBody)))]
async fn list_entities(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(team): Path<String>,
) -> ApiResult<Json<Vec<Entity>>> {
    Ok(Json(s.core.list_entities(&who, &team).await?))
}

/// Defines a feature view over a dataset; the columns and their types are checked.
#[utoipa::path(post, path = "/teams/{team}/feature-views", tag = "features", params(("team" = String, Path)), request_body = CreateFeatureView,
    responses((status = 201, body = FeatureView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_feature_view(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(team): Path<String>,
    ApiJson(req): ApiJson<CreateFeatureView>,
) -> ApiResult<(StatusCode, Json<FeatureView>)> {
    Ok((StatusCode::CREATED, Json(s.core.create_feature_view(&who, &team, req).await?)))
}

#[utoipa::path(get, path = "/teams/{team}/feature-views", tag = "features", params(("team" = String, Path)),
    responses((status = 200, body = Vec<FeatureView>), (status = 404, body = ErrorBody)))]
async fn list_feature_views(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(team): Path<String>,
) -> ApiResult<Json<Vec<FeatureView>>> {
    Ok(Json(s.core.list_feature_views(&who, &team).await?))
}

/// A feature view with its freshness (last event, last materialization, stale beyond its SLA).
#[utoipa::path(get, path = "/teams/{team}/feature-views/{name}", tag = "features", params(("team" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = FeatureView), (status = 404, body = ErrorBody)))]
async fn get_feature_view(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((team, name)): Path<(String, String)>,
) -> ApiResult<Json<FeatureView>> {
    Ok(Json(s.core.get_feature_view(&who, &team, &name).await?))
}

/// Starts a materialization job (202): full, or incremental from the view's watermark.
#[utoipa::path(post, path = "/teams/{team}/feature-views/{name}/materialize", tag = "features", params(("team" = String, Path), ("name" = String, Path)),
    request_body = MaterializeRequest, responses((status = 202, body = Materialization), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn materialize(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((team, name)): Path<(String, String)>,
    ApiJson(req): ApiJson<MaterializeRequest>,
) -> ApiResult<(StatusCode, Json<Materialization>)> {
    Ok((StatusCode::ACCEPTED, Json(s.core.materialize(&who, &team, &name, req).await?)))
}

#[utoipa::path(get, path = "/materializations/{id}", tag = "features", params(("id" = String, Path)),
    responses((status = 200, body = Materialization), (status = 404, body = ErrorBody)))]
async fn get_materialization(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Materialization>> {
    Ok(Json(s.core.get_materialization(&who, &id).await?))
}

#[utoipa::path(post, path = "/teams/{team}/feature-services", tag = "features", params(("team" = String, Path)), request_body = CreateFeatureService,
    responses((status = 201, body = FeatureService), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_feature_service(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(team): Path<String>,
    ApiJson(req): ApiJson<CreateFeatureService>,
) -> ApiResult<(StatusCode, Json<FeatureService>)> {
    Ok((StatusCode::CREATED, Json(s.core.create_feature_service(&who, &team, req).await?)))
}

/// Online features for many entities at once, in Feast's shapes. Public views answer without a
/// key.
#[utoipa::path(post, path = "/teams/{team}/features/online", tag = "features", security((), ("api_key" = [])), params(("team" = String, Path)), request_body = OnlineRequest,
    responses((status = 200, body = OnlineResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn online_features(
    State(s): State<AppState>,
    MaybeCaller(who): MaybeCaller,
    Path(team): Path<String>,
    body: Bytes,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    let req: OnlineRequest = parse_json("", &body)?;
    let answer = s.core.online_features(who.as_ref(), &team, &req).await?;
    Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], answer.to_json()).into_response())
}

/// Writes fresh values straight to the online store (older events never replace newer ones).
#[utoipa::path(post, path = "/teams/{team}/features/push", tag = "features", params(("team" = String, Path)), request_body = PushRequest,
    responses((status = 200, body = PushResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn push_features(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(team): Path<String>,
    ApiJson(req): ApiJson<PushRequest>,
) -> ApiResult<Json<PushResponse>> {
    Ok(Json(s.core.push_features(&who, &team, req).await?))
}
