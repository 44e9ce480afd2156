//! The audit log.

use axum::Json;
use axum::extract::State;
use plinth_api::audit::{AuditEntry, AuditQuery};
use plinth_api::{ErrorBody, Page};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{ApiQuery, Caller};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(audit_log))
}

/// Audit entries, newest first: a team's for its maintainers, everything for admins.
#[utoipa::path(get, path = "/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = Page<AuditEntry>), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn audit_log(
    State(s): State<AppState>,
    Caller(who): Caller,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Json<Page<AuditEntry>>> {
    Ok(Json(s.core.audit_log(&who, &q).await?))
}
