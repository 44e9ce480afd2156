//! Models and versions: registration (multipart upload), listing and search, model cards,
//! archiving and artifact download.

use axum::Json;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Multipart, Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::TryStreamExt;
use plinth_api::registry::{
    CreateModel, CreateVersion, Model, ModelQuery, ModelVersion, UpdateModel, UpdateVersion,
    VersionQuery,
};
use plinth_api::{Code, ErrorBody, Page};
use plinth_core::Error;
use tokio_util::io::{ReaderStream, StreamReader};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiQuery, Caller, parse_json};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(search_models))
        .routes(routes!(create_model, list_team_models))
        .routes(routes!(get_model, update_model))
        .routes(routes!(archive_model))
        .routes(routes!(get_version, update_version))
        .routes(routes!(archive_version))
        .routes(routes!(download_artifact))
        // Uploads enforce their own, configured limit while they stream.
        .merge(
            OpenApiRouter::new()
                .routes(routes!(create_version, list_versions))
                .layer(DefaultBodyLimit::disable()),
        )
}

/// Searches the models the caller can see, across teams.
#[utoipa::path(get, path = "/models", tag = "registry", params(ModelQuery), responses((status = 200, body = Page<Model>), (status = 400, body = ErrorBody)))]
async fn search_models(
    State(s): State<AppState>,
    Caller(who): Caller,
    ApiQuery(q): ApiQuery<ModelQuery>,
) -> ApiResult<Json<Page<Model>>> {
    Ok(Json(s.core.list_models(&who, &q).await?))
}

/// Registers a model in a team (developers).
#[utoipa::path(post, path = "/teams/{team}/models", tag = "registry", request_body = CreateModel, params(("team" = String, Path)),
    responses((status = 201, body = Model), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_model(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(team): Path<String>,
    ApiJson(req): ApiJson<CreateModel>,
) -> ApiResult<(StatusCode, Json<Model>)> {
    Ok((StatusCode::CREATED, Json(s.core.create_model(&who, &team, req).await?)))
}

/// Lists a team's models (the same filters as `/models`).
#[utoipa::path(get, path = "/teams/{team}/models", tag = "registry", params(("team" = String, Path), ModelQuery),
    responses((status = 200, body = Page<Model>), (status = 404, body = ErrorBody)))]
async fn list_team_models(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(team): Path<String>,
    ApiQuery(mut q): ApiQuery<ModelQuery>,
) -> ApiResult<Json<Page<Model>>> {
    q.team = Some(team);
    Ok(Json(s.core.list_models(&who, &q).await?))
}

#[utoipa::path(get, path = "/teams/{team}/models/{model}", tag = "registry", params(("team" = String, Path), ("model" = String, Path)),
    responses((status = 200, body = Model), (status = 404, body = ErrorBody)))]
async fn get_model(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((team, model)): Path<(String, String)>,
) -> ApiResult<Json<Model>> {
    Ok(Json(s.core.get_model(&who, &team, &model).await?))
}

/// Changes a model's description, tags or owners.
#[utoipa::path(patch, path = "/teams/{team}/models/{model}", tag = "registry", request_body = UpdateModel,
    params(("team" = String, Path), ("model" = String, Path)),
    responses((status = 200, body = Model), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn update_model(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((team, model)): Path<(String, String)>,
    ApiJson(req): ApiJson<UpdateModel>,
) -> ApiResult<Json<Model>> {
    Ok(Json(s.core.update_model(&who, &team, &model, req).await?))
}

/// Archives a model (maintainers): hidden from lists, no new versions.
#[utoipa::path(post, path = "/teams/{team}/models/{model}/archive", tag = "registry", params(("team" = String, Path), ("model" = String, Path)),
    responses((status = 200, body = Model), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn archive_model(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((team, model)): Path<(String, String)>,
) -> ApiResult<Json<Model>> {
    Ok(Json(s.core.archive_model(&who, &team, &model).await?))
}

/// Registers a new version: `multipart/form-data` with an optional `metadata` part (JSON,
/// [`CreateVersion`]) followed by the `artifact` part (the model file). The artifact is streamed,
/// hashed, size-limited and fully validated before anything is stored.
#[utoipa::path(post, path = "/teams/{team}/models/{model}/versions", tag = "registry",
    params(("team" = String, Path), ("model" = String, Path)),
    request_body(content_type = "multipart/form-data", description = "parts: `metadata` (JSON CreateVersion, optional, first) and `artifact` (the model file)"),
    responses((status = 201, body = ModelVersion), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_version(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((team, model)): Path<(String, String)>,
    request: axum::extract::Request,
) -> ApiResult<(StatusCode, Json<ModelVersion>)> {
    // Authorize before reading a byte of the body.
    s.core.authorize_version_upload(&who, &team, &model).await?;
    let content_type =
        request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !content_type.starts_with("multipart/form-data") {
        return Err(ApiError::new(
            Code::UnsupportedMediaType,
            "upload a version as multipart/form-data with the parts 'metadata' (JSON, optional) and 'artifact' (the file)",
        ));
    }
    let mut multipart =
        <Multipart as axum::extract::FromRequest<()>>::from_request(request, &()).await.map_err(
            |e| ApiError::new(Code::InvalidRequest, format!("not a valid multipart body: {e}")),
        )?;
    let mut metadata: Option<CreateVersion> = None;
    let mut staged = None;
    let mut filename = None;
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        let name = field.name().unwrap_or("").to_string();
        match name.as_str() {
            "metadata" => {
                if staged.is_some() {
                    return Err(Error::invalid(
                        "metadata",
                        "send the metadata part before the artifact part",
                    )
                    .into());
                }
                if metadata.is_some() {
                    return Err(Error::invalid("metadata", "sent twice").into());
                }
                let bytes = read_small(field, crate::JSON_BODY_LIMIT).await?;
                metadata = Some(parse_json("metadata", &bytes)?);
            }
            "artifact" => {
                if staged.is_some() {
                    return Err(Error::invalid("artifact", "sent twice").into());
                }
                filename = field.file_name().map(str::to_string);
                let stream = field.map_err(|e| std::io::Error::other(e.to_string()));
                let mut reader = StreamReader::new(stream);
                staged =
                    Some(s.core.staging().receive(&mut reader, s.core.max_upload_bytes()).await?);
            }
            other => {
                return Err(ApiError(
                    Error::new(
                        Code::UnknownField,
                        format!(
                            "unknown multipart part '{other}' (expected 'metadata' and 'artifact')"
                        ),
                    )
                    .with_field(other.to_string()),
                ));
            }
        }
    }
    let staged = staged
        .ok_or_else(|| Error::missing("artifact", "the multipart body has no 'artifact' part"))?;
    let version = s
        .core
        .create_version(&who, &team, &model, metadata.unwrap_or_default(), filename, staged)
        .await?;
    Ok((StatusCode::CREATED, Json(version)))
}

fn multipart_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    ApiError::new(
        Code::InvalidRequest,
        format!("the multipart body is malformed or was interrupted: {e}"),
    )
}

async fn read_small(
    mut field: axum::extract::multipart::Field<'_>,
    limit: usize,
) -> ApiResult<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        out.extend_from_slice(&chunk);
        if out.len() > limit {
            return Err(ApiError(
                Error::new(Code::PayloadTooLarge, "the metadata part is larger than 1 MiB")
                    .with_field("metadata"),
            ));
        }
    }
    Ok(out)
}

/// A model's versions, newest first.
#[utoipa::path(get, path = "/teams/{team}/models/{model}/versions", tag = "registry",
    params(("team" = String, Path), ("model" = String, Path), VersionQuery),
    responses((status = 200, body = Page<ModelVersion>), (status = 404, body = ErrorBody)))]
async fn list_versions(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((team, model)): Path<(String, String)>,
    ApiQuery(q): ApiQuery<VersionQuery>,
) -> ApiResult<Json<Page<ModelVersion>>> {
    Ok(Json(s.core.list_versions(&who, &team, &model, &q).await?))
}

fn parse_version(v: &str) -> Result<u32, ApiError> {
    v.parse::<u32>().ok().filter(|&n| n > 0).ok_or_else(|| {
        ApiError(Error::invalid("version", format!("'{v}' is not a version number (1, 2, ...)")))
    })
}

#[utoipa::path(get, path = "/teams/{team}/models/{model}/versions/{version}", tag = "registry",
    params(("team" = String, Path), ("model" = String, Path), ("version" = u32, Path)),
    responses((status = 200, body = ModelVersion), (status = 404, body = ErrorBody)))]
async fn get_version(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((team, model, version)): Path<(String, String, String)>,
) -> ApiResult<Json<ModelVersion>> {
    Ok(Json(s.core.get_version(&who, &team, &model, parse_version(&version)?).await?))
}

/// Edits a version's description or model card (the card is frozen once approved for production).
#[utoipa::path(patch, path = "/teams/{team}/models/{model}/versions/{version}", tag = "registry", request_body = UpdateVersion,
    params(("team" = String, Path), ("model" = String, Path), ("version" = u32, Path)),
    responses((status = 200, body = ModelVersion), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn update_version(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((team, model, version)): Path<(String, String, String)>,
    ApiJson(req): ApiJson<UpdateVersion>,
) -> ApiResult<Json<ModelVersion>> {
    Ok(Json(s.core.update_version(&who, &team, &model, parse_version(&version)?, req).await?))
}

#[utoipa::path(post, path = "/teams/{team}/models/{model}/versions/{version}/archive", tag = "registry",
    params(("team" = String, Path), ("model" = String, Path), ("version" = u32, Path)),
    responses((status = 200, body = ModelVersion), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn archive_version(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((team, model, version)): Path<(String, String, String)>,
) -> ApiResult<Json<ModelVersion>> {
    Ok(Json(s.core.archive_version(&who, &team, &model, parse_version(&version)?).await?))
}

/// Downloads a version's artifact, byte for byte as uploaded (`x-plinth-sha256` has its hash).
#[utoipa::path(get, path = "/teams/{team}/models/{model}/versions/{version}/artifact", tag = "registry",
    params(("team" = String, Path), ("model" = String, Path), ("version" = u32, Path)),
    responses((status = 200, content_type = "application/octet-stream"), (status = 404, body = ErrorBody)))]
async fn download_artifact(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((team, model, version)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    let (v, artifact) = s.core.open_artifact(&who, &team, &model, parse_version(&version)?).await?;
    let mut response = Body::from_stream(ReaderStream::new(artifact.reader)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(artifact.size));
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"{}\"",
        v.artifact.filename.replace('"', "")
    )) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    if let Ok(h) = HeaderValue::from_str(&v.artifact.sha256) {
        headers.insert("x-plinth-sha256", h.clone());
        if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", v.artifact.sha256)) {
            headers.insert(header::ETAG, etag);
        }
    }
    Ok(response)
}
