//! Liveness, readiness and the OpenAPI document.

use std::sync::OnceLock;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use plinth_api::Code;

use crate::AppState;
use crate::error::ApiError;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .routes(routes!(openapi_json))
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "probes", security(()),
    responses((status = 200, body = plinth_api::oip::Probe)))]
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// The process can serve: its stores answer.
#[utoipa::path(get, path = "/readyz", tag = "probes", security(()),
    responses((status = 200, body = plinth_api::oip::Probe), (status = 503, body = plinth_api::oip::Probe)))]
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.core.ready().await {
        (StatusCode::OK, Json(json!({"status": "ready"})))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not ready", "reason": "the metadata database does not answer"})),
        )
    }
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "probes", security(()),
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json", body = Object)))]
async fn openapi_json() -> impl IntoResponse {
    static DOC: OnceLock<String> = OnceLock::new();
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOC.get_or_init(crate::openapi::document).clone(),
    )
}

/// Who may read `/metrics`: the configured scrape token, or a key with a platform role. The
/// series name every team's models, environments and views, so a team's key is not enough.
async fn may_scrape(state: &AppState, headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    let text = |name| headers.get(name).and_then(|v: &axum::http::HeaderValue| v.to_str().ok());
    let key = crate::extract::api_key(text(header::AUTHORIZATION.as_str()), text("x-api-key"));
    if let (Some(token), Some(given)) = (&state.metrics_token, key)
        && plinth_core::auth::constant_time_eq(token.as_bytes(), given.as_bytes())
    {
        return Ok(());
    }
    let who = crate::extract::authenticate(state, key).await?;
    if who.platform_role.is_none() {
        return Err(ApiError::new(
            Code::Forbidden,
            "/metrics covers every team: it needs a key with a platform role (reviewer or admin) or the server's metrics_token",
        ));
    }
    Ok(())
}

/// Prometheus text: open connections; per-deployment requests, errors by code, latency, batch
/// sizes, queue depth, workers and model loads. Needs the metrics token or a platform key.
#[utoipa::path(get, path = "/metrics", tag = "probes",
    responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain", body = String),
        (status = 401, body = plinth_api::ErrorBody), (status = 403, body = plinth_api::ErrorBody)))]
async fn metrics(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    may_scrape(&state, &headers).await?;
    let engine = state.core.engine();
    let mut out = String::with_capacity(16 * 1024);
    out.push_str("# HELP plinth_uptime_seconds Seconds since the server started.\n# TYPE plinth_uptime_seconds gauge\n");
    out.push_str(&format!("plinth_uptime_seconds {}\n", engine.started.elapsed().as_secs_f64()));
    out.push_str("# HELP plinth_http_connections_open Client connections open to the server.\n# TYPE plinth_http_connections_open gauge\n");
    out.push_str(&format!("plinth_http_connections_open {}\n", engine.clients.open()));
    engine.render_prometheus(&mut out);
    state.core.render_monitoring_metrics(&mut out);
    match state.core.freshness_gauges().await {
        Ok(views) if !views.is_empty() => {
            out.push_str("# HELP plinth_feature_view_age_seconds Seconds since the newest event written to the online store.\n# TYPE plinth_feature_view_age_seconds gauge\n");
            for (team, view, age, _) in &views {
                if let Some(age) = age {
                    out.push_str(&format!(
                        "plinth_feature_view_age_seconds{{team=\"{team}\",view=\"{view}\"}} {age}\n"
                    ));
                }
            }
            out.push_str("# HELP plinth_feature_view_stale 1 when the newest event is older than the view's freshness SLA.\n# TYPE plinth_feature_view_stale gauge\n");
            for (team, view, _, stale) in &views {
                out.push_str(&format!(
                    "plinth_feature_view_stale{{team=\"{team}\",view=\"{view}\"}} {}\n",
                    u8::from(*stale)
                ));
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read feature freshness for /metrics"),
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out))
}
