//! Monitoring: a deployment's health over time, labels and live performance, drift of its
//! traffic, its monitoring settings, alerts, silences and incidents.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use plinth_api::ErrorBody;
use plinth_api::monitoring::{
    Alert, CreateSilence, Feedback, FeedbackResult, HealthQuery, HealthSeries, Incident,
    IncidentNote, IncidentStats, MonitoringSettings, Performance, RangeQuery, ServedDrift, Silence,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiQuery, Caller};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(deployment_health))
        .routes(routes!(post_feedback))
        .routes(routes!(deployment_performance))
        .routes(routes!(deployment_drift))
        .routes(routes!(get_monitoring_settings, set_monitoring_settings))
        .routes(routes!(list_alerts))
        .routes(routes!(create_silence, list_silences))
        .routes(routes!(list_incidents))
        .routes(routes!(incident_stats))
        .routes(routes!(get_incident))
        .routes(routes!(acknowledge_incident))
        .routes(routes!(resolve_incident))
        .routes(routes!(note_incident))
}

/// The team's incidents, newest first. A firing alert opens one for its deployment, or joins
/// the one still open there.
#[utoipa::path(get, path = "/teams/{team}/incidents", tag = "monitoring", params(("team" = String, Path)),
    responses((status = 200, body = Vec<Incident>), (status = 404, body = ErrorBody)))]
async fn list_incidents(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(team): Path<String>,
) -> ApiResult<Json<Vec<Incident>>> {
    Ok(Json(s.core.list_incidents(&who, &team).await?))
}

/// How fast the team acknowledges (MTTA) and resolves (MTTR) its incidents: median and p90.
#[utoipa::path(get, path = "/teams/{team}/incidents/stats", tag = "monitoring", params(("team" = String, Path)),
    responses((status = 200, body = IncidentStats), (status = 404, body = ErrorBody)))]
async fn incident_stats(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(team): Path<String>,
) -> ApiResult<Json<IncidentStats>> {
    Ok(Json(s.core.incident_stats(&who, &team).await?))
}

/// An incident with its timeline: alerts, acknowledgement, notes, resolution, and the
/// deployment's changes in between.
#[utoipa::path(get, path = "/teams/{team}/incidents/{id}", tag = "monitoring", params(("team" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = Incident), (status = 404, body = ErrorBody)))]
async fn get_incident(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((team, id)): Path<(String, String)>,
) -> ApiResult<Json<Incident>> {
    Ok(Json(s.core.get_incident(&who, &team, &id).await?))
}

/// Acknowledges an open incident (developers and up).
#[utoipa::path(post, path = "/teams/{team}/incidents/{id}/acknowledge", tag = "monitoring", params(("team" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = Incident), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn acknowledge_incident(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((team, id)): Path<(String, String)>,
) -> ApiResult<Json<Incident>> {
    Ok(Json(s.core.acknowledge_incident(&who, &team, &id).await?))
}

/// Resolves an incident (developers and up); one nobody acknowledged is acknowledged with it.
#[utoipa::path(post, path = "/teams/{team}/incidents/{id}/resolve", tag = "monitoring", params(("team" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = Incident), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn resolve_incident(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((team, id)): Path<(String, String)>,
) -> ApiResult<Json<Incident>> {
    Ok(Json(s.core.resolve_incident(&who, &team, &id).await?))
}

/// Adds a note to an incident's timeline (developers and up).
#[utoipa::path(post, path = "/teams/{team}/incidents/{id}/notes", tag = "monitoring", params(("team" = String, Path), ("id" = String, Path)),
    request_body = IncidentNote,
    responses((status = 200, body = Incident), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn note_incident(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((team, id)): Path<(String, String)>,
    ApiJson(note): ApiJson<IncidentNote>,
) -> ApiResult<Json<Incident>> {
    Ok(Json(s.core.note_incident(&who, &team, &id, &note.text).await?))
}

/// Silences matching alerts of the team (by model, environment, rule; unset matches all) until
/// `ends_at`: their state changes as always, but no notification is sent (developers and up).
#[utoipa::path(post, path = "/teams/{team}/silences", tag = "monitoring", params(("team" = String, Path)), request_body = CreateSilence,
    responses((status = 201, body = Silence), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn create_silence(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(team): Path<String>,
    ApiJson(req): ApiJson<CreateSilence>,
) -> ApiResult<(StatusCode, Json<Silence>)> {
    Ok((StatusCode::CREATED, Json(s.core.create_silence(&who, &team, req).await?)))
}

/// The team's silences that have not ended.
#[utoipa::path(get, path = "/teams/{team}/silences", tag = "monitoring", params(("team" = String, Path)),
    responses((status = 200, body = Vec<Silence>), (status = 404, body = ErrorBody)))]
async fn list_silences(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(team): Path<String>,
) -> ApiResult<Json<Vec<Silence>>> {
    Ok(Json(s.core.list_silences(&who, &team).await?))
}

/// The team's alerts: pending, firing and resolved, newest change first. Production
/// deployments have the SLA's rules on their own (error rate over 5 %, p99 latency over 1 s,
/// both over 5 minutes, firing after holding for 5 minutes); each firing and resolve is also
/// an `alert.firing` / `alert.resolved` event for the team's webhooks.
#[utoipa::path(get, path = "/teams/{team}/alerts", tag = "monitoring", params(("team" = String, Path)),
    responses((status = 200, body = Vec<Alert>), (status = 404, body = ErrorBody)))]
async fn list_alerts(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(team): Path<String>,
) -> ApiResult<Json<Vec<Alert>>> {
    Ok(Json(s.core.list_alerts(&who, &team).await?))
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

/// Labels for served predictions, minutes or weeks later: by `request_id` (and `row`, default
/// 0) or by the `prediction_id` the caller gave at predict time; up to 10,000 a request
/// (developers and up). The same label twice counts once; a different one replaces it. One
/// unknown id or a label that does not fit the model's task refuses the whole request.
#[utoipa::path(post, path = "/deployments/{team}/{model}/{environment}/feedback", tag = "monitoring",
    params(("team" = String, Path), ("model" = String, Path), ("environment" = String, Path)),
    request_body = Feedback,
    responses((status = 200, body = FeedbackResult), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn post_feedback(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((t, m, e)): Path<(String, String, String)>,
    ApiJson(req): ApiJson<Feedback>,
) -> ApiResult<Json<FeedbackResult>> {
    Ok(Json(s.core.post_feedback(&who, &t, &m, &e, req).await?))
}

/// Live performance per version over a range (default the last day): the evaluation's metrics
/// over the labelled predictions, the version's evaluation beside them, label coverage, and for
/// binary classifiers an estimate from their scores alone (CBPE, with its assumptions).
#[utoipa::path(get, path = "/deployments/{team}/{model}/{environment}/performance", tag = "monitoring",
    params(("team" = String, Path), ("model" = String, Path), ("environment" = String, Path), RangeQuery),
    responses((status = 200, body = Performance), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn deployment_performance(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((t, m, e)): Path<(String, String, String)>,
    ApiQuery(q): ApiQuery<RangeQuery>,
) -> ApiResult<Json<Performance>> {
    Ok(Json(s.core.deployment_performance(&who, &t, &m, &e, &q).await?))
}

/// Drift of the served traffic over a range (default the last day) against each version's
/// baseline: every feature and the prediction, with Evidently's tests and defaults or the
/// deployment's own, and both distributions on common bins.
#[utoipa::path(get, path = "/deployments/{team}/{model}/{environment}/drift", tag = "monitoring",
    params(("team" = String, Path), ("model" = String, Path), ("environment" = String, Path), RangeQuery),
    responses((status = 200, body = ServedDrift), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn deployment_drift(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((t, m, e)): Path<(String, String, String)>,
    ApiQuery(q): ApiQuery<RangeQuery>,
) -> ApiResult<Json<ServedDrift>> {
    Ok(Json(s.core.deployment_drift(&who, &t, &m, &e, &q).await?))
}

/// How the deployment is monitored: drift baseline and tests, the SLA's rules as tuned, its
/// own rules.
#[utoipa::path(get, path = "/deployments/{team}/{model}/{environment}/monitoring", tag = "monitoring",
    params(("team" = String, Path), ("model" = String, Path), ("environment" = String, Path)),
    responses((status = 200, body = MonitoringSettings), (status = 404, body = ErrorBody)))]
async fn get_monitoring_settings(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((t, m, e)): Path<(String, String, String)>,
) -> ApiResult<Json<MonitoringSettings>> {
    Ok(Json(s.core.get_monitoring_settings(&who, &t, &m, &e).await?))
}

/// Replaces the deployment's monitoring settings (maintainers; audited). A policy with
/// `require_sla_alerts` refuses disabling or loosening the SLA's rules.
#[utoipa::path(put, path = "/deployments/{team}/{model}/{environment}/monitoring", tag = "monitoring",
    params(("team" = String, Path), ("model" = String, Path), ("environment" = String, Path)),
    request_body = MonitoringSettings,
    responses((status = 200, body = MonitoringSettings), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn set_monitoring_settings(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((t, m, e)): Path<(String, String, String)>,
    ApiJson(req): ApiJson<MonitoringSettings>,
) -> ApiResult<Json<MonitoringSettings>> {
    Ok(Json(s.core.set_monitoring_settings(&who, &t, &m, &e, req).await?))
}
