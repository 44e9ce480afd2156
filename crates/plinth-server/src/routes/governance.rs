//! Datasets, evaluations (with their Markdown report), policies, promotions and reviews,
//! "what served when", and webhooks with their delivery log.

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
use plinth_api::governance::{
    CreateWebhook, Delivery, Evaluation, EvaluationRequest, Policy, PolicyChange,
    PolicyChangeQuery, PolicyChangeReview, PolicyOutcome, PolicyRecord, Promotion, PromotionQuery,
    PromotionRequest, ReviewRequest, ServedAt, ServedQuery, Webhook,
};
use plinth_core::data::query::{QueryAnswer, QueryEvent};
use serde::Deserialize;
use tokio_util::io::StreamReader;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiQuery, Caller};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_datasets))
        .routes(routes!(get_dataset_version))
        .routes(routes!(create_evaluation, list_evaluations))
        .routes(routes!(get_evaluation))
        .routes(routes!(evaluation_report))
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
        .routes(routes!(create_webhook, list_webhooks))
        .routes(routes!(delete_webhook))
        .routes(routes!(list_deliveries))
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
#[utoipa::path(post, path = "/teams/{team}/datasets/{name}/versions", tag = "governance",
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

#[utoipa::path(get, path = "/teams/{team}/datasets/{name}/versions", tag = "governance",
    params(("team" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = Vec<DatasetVersion>), (status = 404, body = ErrorBody)))]
async fn list_dataset_versions(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((team, name)): Path<(String, String)>,
) -> ApiResult<Json<Vec<DatasetVersion>>> {
    Ok(Json(s.core.list_dataset_versions(&who, &team, &name).await?))
}

#[utoipa::path(get, path = "/teams/{team}/datasets", tag = "governance", params(("team" = String, Path)),
    responses((status = 200, body = Vec<Dataset>), (status = 404, body = ErrorBody)))]
async fn list_datasets(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(team): Path<String>,
) -> ApiResult<Json<Vec<Dataset>>> {
    Ok(Json(s.core.list_datasets(&who, &team).await?))
}

#[utoipa::path(get, path = "/teams/{team}/datasets/{name}/versions/{version}", tag = "governance",
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

/// Starts an evaluation job: answers 202 with the job; poll it until `succeeded` or `failed`.
#[utoipa::path(post, path = "/teams/{team}/models/{model}/evaluations", tag = "governance",
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

#[utoipa::path(get, path = "/teams/{team}/models/{model}/evaluations", tag = "governance",
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

#[utoipa::path(get, path = "/evaluations/{id}", tag = "governance", params(("id" = String, Path)),
    responses((status = 200, body = Evaluation), (status = 404, body = ErrorBody)))]
async fn get_evaluation(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Evaluation>> {
    Ok(Json(s.core.get_evaluation(&who, &id).await?))
}

/// The evaluation as a Markdown report for reviewers.
#[utoipa::path(get, path = "/evaluations/{id}/report", tag = "governance", params(("id" = String, Path)),
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

/// Subscribes a URL to governance events; the answer holds the signing secret, once.
#[utoipa::path(post, path = "/teams/{team}/webhooks", tag = "governance", params(("team" = String, Path)), request_body = CreateWebhook,
    responses((status = 201, body = Webhook), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn create_webhook(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(team): Path<String>,
    ApiJson(req): ApiJson<CreateWebhook>,
) -> ApiResult<(StatusCode, Json<Webhook>)> {
    Ok((StatusCode::CREATED, Json(s.core.create_webhook(&who, &team, req).await?)))
}

#[utoipa::path(get, path = "/teams/{team}/webhooks", tag = "governance", params(("team" = String, Path)),
    responses((status = 200, body = Vec<Webhook>), (status = 404, body = ErrorBody)))]
async fn list_webhooks(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(team): Path<String>,
) -> ApiResult<Json<Vec<Webhook>>> {
    Ok(Json(s.core.list_webhooks(&who, &team).await?))
}

#[utoipa::path(delete, path = "/teams/{team}/webhooks/{id}", tag = "governance", params(("team" = String, Path), ("id" = String, Path)),
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
#[utoipa::path(get, path = "/teams/{team}/webhooks/{id}/deliveries", tag = "governance", params(("team" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = Vec<Delivery>), (status = 404, body = ErrorBody)))]
async fn list_deliveries(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((team, id)): Path<(String, String)>,
) -> ApiResult<Json<Vec<Delivery>>> {
    Ok(Json(s.core.list_deliveries(&who, &team, &id).await?))
}

/// SQL over the team's datasets and those granted to it (as `"owner-team".name`); nothing else
/// is reachable. The rows stream as JSON lines, CSV or Parquet while the query runs; how it
/// ended comes in trailers (send `TE: trailers`): `X-Plinth-Rows`, `X-Plinth-Truncated`, or
/// `X-Plinth-Error` when it failed after the first rows (without `TE: trailers`, such a failure
/// aborts the response, so a partial result is never mistaken for a whole one). With `save_as`
/// the rows become a dataset version (201).
#[utoipa::path(post, path = "/teams/{team}/query", tag = "governance", params(("team" = String, Path)), request_body = QueryRequest,
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
#[utoipa::path(put, path = "/teams/{team}/datasets/{name}/grants", tag = "governance", params(("team" = String, Path), ("name" = String, Path)),
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

#[utoipa::path(delete, path = "/teams/{team}/datasets/{name}/grants/{other}", tag = "governance",
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
#[utoipa::path(post, path = "/teams/{team}/sources", tag = "governance", params(("team" = String, Path)), request_body = CreateSource,
    responses((status = 201, body = Source), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody), (status = 501, body = ErrorBody)))]
async fn create_source(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(team): Path<String>,
    ApiJson(req): ApiJson<CreateSource>,
) -> ApiResult<(StatusCode, Json<Source>)> {
    Ok((StatusCode::CREATED, Json(s.core.create_source(&who, &team, req).await?)))
}

#[utoipa::path(get, path = "/teams/{team}/sources", tag = "governance", params(("team" = String, Path)),
    responses((status = 200, body = Vec<Source>), (status = 404, body = ErrorBody)))]
async fn list_sources(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(team): Path<String>,
) -> ApiResult<Json<Vec<Source>>> {
    Ok(Json(s.core.list_sources(&who, &team).await?))
}

/// Lets another team read a source (in SQL as `"owner-team".name`).
#[utoipa::path(put, path = "/teams/{team}/sources/{name}/grants", tag = "governance", params(("team" = String, Path), ("name" = String, Path)),
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
