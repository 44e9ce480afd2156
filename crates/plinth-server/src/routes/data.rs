//! Datasets (uploads, versions, profiles, grants), governed SQL over them, and data sources.

use axum::Json;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::TryStreamExt;
use plinth_api::ErrorBody;
use plinth_api::data::{
    CreateSource, Dataset, DatasetGrant, DatasetRef, DatasetVersion, QueryRequest, Source,
    UploadDataset,
};
use plinth_core::data::query::{QueryAnswer, QueryEvent};
use tokio_util::io::StreamReader;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiQuery, Caller};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_datasets))
        .routes(routes!(get_dataset_version))
        .routes(routes!(run_query))
        .routes(routes!(grant_dataset))
        .routes(routes!(revoke_dataset))
        .routes(routes!(create_source, list_sources))
        .routes(routes!(grant_source))
        .merge(
            OpenApiRouter::new()
                .routes(routes!(upload_dataset, list_dataset_versions))
                .layer(DefaultBodyLimit::disable()),
        )
}

/// Uploads a CSV (optionally gzipped) or Parquet file as the next version of a dataset. The body
/// is the file itself.
#[utoipa::path(post, path = "/teams/{team}/datasets/{name}/versions", tag = "data",
    params(("team" = String, Path), ("name" = String, Path), UploadDataset),
    request_body(content((plinth_api::Binary = "application/octet-stream"), (plinth_api::Binary = "text/csv"))),
    responses((status = 201, body = DatasetVersion), (status = 400, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn upload_dataset(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((team, name)): Path<(String, String)>,
    ApiQuery(q): ApiQuery<UploadDataset>,
    body: Body,
) -> ApiResult<(StatusCode, Json<DatasetVersion>)> {
    let stream = body.into_data_stream().map_err(|e| std::io::Error::other(e.to_string()));
    let mut reader = StreamReader::new(stream);
    let staged = s.core.staging().receive(&mut reader, s.core.max_upload_bytes()).await?;
    let v = s.core.upload_dataset(&who, &team, &name, q, staged).await?;
    Ok((StatusCode::CREATED, Json(v)))
}

#[utoipa::path(get, path = "/teams/{team}/datasets/{name}/versions", tag = "data",
    params(("team" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = Vec<DatasetVersion>), (status = 404, body = ErrorBody)))]
async fn list_dataset_versions(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((team, name)): Path<(String, String)>,
) -> ApiResult<Json<Vec<DatasetVersion>>> {
    Ok(Json(s.core.list_dataset_versions(&who, &team, &name).await?))
}

#[utoipa::path(get, path = "/teams/{team}/datasets", tag = "data", params(("team" = String, Path)),
    responses((status = 200, body = Vec<Dataset>), (status = 404, body = ErrorBody)))]
async fn list_datasets(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(team): Path<String>,
) -> ApiResult<Json<Vec<Dataset>>> {
    Ok(Json(s.core.list_datasets(&who, &team).await?))
}

#[utoipa::path(get, path = "/teams/{team}/datasets/{name}/versions/{version}", tag = "data",
    params(("team" = String, Path), ("name" = String, Path), ("version" = u32, Path)),
    responses((status = 200, body = DatasetVersion), (status = 404, body = ErrorBody)))]
async fn get_dataset_version(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((team, name, version)): Path<(String, String, u32)>,
) -> ApiResult<Json<DatasetVersion>> {
    let r = DatasetRef { name, version: Some(version) };
    Ok(Json(s.core.get_dataset_version(&who, &team, &r).await?))
}

/// SQL over the team's datasets and those granted to it (as `"owner-team".name`); nothing else
/// is reachable. The rows stream as JSON lines, CSV or Parquet while the query runs; how it
/// ended comes in trailers (send `TE: trailers`): `X-Plinth-Rows`, `X-Plinth-Truncated`, or
/// `X-Plinth-Error` when it failed after the first rows (without `TE: trailers`, such a failure
/// aborts the response, so a partial result is never mistaken for a whole one). With `save_as`
/// the rows become a dataset version (201).
#[utoipa::path(post, path = "/teams/{team}/query", tag = "data", params(("team" = String, Path)), request_body = QueryRequest,
    responses((status = 200, description = "the rows, in the asked format", content(
            (plinth_api::Binary = "application/x-ndjson"), (plinth_api::Binary = "text/csv"), (plinth_api::Binary = "application/vnd.apache.parquet"))),
        (status = 201, body = DatasetVersion),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn run_query(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(team): Path<String>,
    headers: axum::http::HeaderMap,
    ApiJson(req): ApiJson<QueryRequest>,
) -> ApiResult<Response> {
    match s.core.query(&who, &team, req).await? {
        QueryAnswer::Saved(v) => Ok((StatusCode::CREATED, Json(v)).into_response()),
        QueryAnswer::Rows { format, events } => {
            let trailers = headers
                .get_all(header::TE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("trailers")));
            Ok((
                [
                    (header::CONTENT_TYPE, format.content_type()),
                    (header::TRAILER, "x-plinth-rows, x-plinth-truncated, x-plinth-error"),
                ],
                Body::new(QueryBody { events: Some(events), trailers }),
            )
                .into_response())
        }
    }
}

/// A query's rows as they come, then its outcome as trailers.
struct QueryBody {
    events: Option<tokio::sync::mpsc::Receiver<QueryEvent>>,
    trailers: bool,
}

impl http_body::Body for QueryBody {
    type Data = bytes::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, std::io::Error>>> {
        use std::task::Poll;
        let Some(events) = self.events.as_mut() else { return Poll::Ready(None) };
        let event = match events.poll_recv(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(e) => e,
        };
        let ending = |fields: Vec<(&'static str, String)>| {
            let mut map = axum::http::HeaderMap::new();
            for (k, v) in fields {
                // A header value holds visible ASCII: other characters become spaces or `?`.
                let v: String = v
                    .chars()
                    .map(|c| match c {
                        c if c.is_control() => ' ',
                        c if c.is_ascii() => c,
                        _ => '?',
                    })
                    .collect();
                if let Ok(v) = axum::http::HeaderValue::from_str(&v) {
                    map.insert(k, v);
                }
            }
            http_body::Frame::trailers(map)
        };
        let (frame, failed) = match event {
            Some(QueryEvent::Rows(b)) => {
                return Poll::Ready(Some(Ok(http_body::Frame::data(b.into()))));
            }
            Some(QueryEvent::Done { rows, truncated }) => {
                let fields = vec![
                    ("x-plinth-rows", rows.to_string()),
                    ("x-plinth-truncated", truncated.to_string()),
                ];
                (ending(fields), false)
            }
            Some(QueryEvent::Failed(e)) => {
                tracing::warn!(error = %e, "a query failed while streaming");
                (ending(vec![("x-plinth-error", e)]), true)
            }
            None => {
                let e = "the query stopped before its last row".to_string();
                (ending(vec![("x-plinth-error", e)]), true)
            }
        };
        self.events = None;
        match (self.trailers, failed) {
            (true, _) => Poll::Ready(Some(Ok(frame))),
            (false, false) => Poll::Ready(None),
            // No trailers to say so: end the response as broken, not as complete.
            (false, true) => Poll::Ready(Some(Err(std::io::Error::other("the query failed")))),
        }
    }
}

/// Lets another team read a dataset (in SQL, as `"owner-team".name`).
#[utoipa::path(put, path = "/teams/{team}/datasets/{name}/grants", tag = "data", params(("team" = String, Path), ("name" = String, Path)),
    request_body = DatasetGrant, responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn grant_dataset(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((team, name)): Path<(String, String)>,
    ApiJson(req): ApiJson<DatasetGrant>,
) -> ApiResult<StatusCode> {
    s.core.grant_dataset(&who, &team, &name, req).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/teams/{team}/datasets/{name}/grants/{other}", tag = "data",
    params(("team" = String, Path), ("name" = String, Path), ("other" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn revoke_dataset(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((team, name, other)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    s.core.revoke_dataset(&who, &team, &name, &other).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Declares a data source (maintainers): a file or folder under the server's sources root, or a
/// PostgreSQL table or query. Readable in SQL by its name.
#[utoipa::path(post, path = "/teams/{team}/sources", tag = "data", params(("team" = String, Path)), request_body = CreateSource,
    responses((status = 201, body = Source), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody), (status = 501, body = ErrorBody)))]
async fn create_source(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(team): Path<String>,
    ApiJson(req): ApiJson<CreateSource>,
) -> ApiResult<(StatusCode, Json<Source>)> {
    Ok((StatusCode::CREATED, Json(s.core.create_source(&who, &team, req).await?)))
}

#[utoipa::path(get, path = "/teams/{team}/sources", tag = "data", params(("team" = String, Path)),
    responses((status = 200, body = Vec<Source>), (status = 404, body = ErrorBody)))]
async fn list_sources(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(team): Path<String>,
) -> ApiResult<Json<Vec<Source>>> {
    Ok(Json(s.core.list_sources(&who, &team).await?))
}

/// Lets another team read a source (in SQL as `"owner-team".name`).
#[utoipa::path(put, path = "/teams/{team}/sources/{name}/grants", tag = "data", params(("team" = String, Path), ("name" = String, Path)),
    request_body = DatasetGrant, responses((status = 204), (status = 404, body = ErrorBody)))]
async fn grant_source(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((team, name)): Path<(String, String)>,
    ApiJson(req): ApiJson<DatasetGrant>,
) -> ApiResult<StatusCode> {
    s.core.grant_source(&who, &team, &name, req).await?;
    Ok(StatusCode::NO_CONTENT)
}
