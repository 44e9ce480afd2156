//! Cost allocation and the platform's own figures: the price book, a team's plan, limits and
//! budget, usage, statements (JSON or CSV), the chargeback export, the platform report and
//! the satisfaction survey.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use plinth_api::ErrorBody;
use plinth_api::billing::{
    LimitsUpdate, MonthQuery, Plan, PlanChange, PlatformReport, ReportQuery, Statement,
    StatementSummary, SurveyAnswer, TeamBilling, Usage,
};
use plinth_core::billing::statements::statements_csv;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiQuery, Caller};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_plans))
        .routes(routes!(get_plan, put_plan))
        .routes(routes!(team_billing))
        .routes(routes!(change_plan))
        .routes(routes!(set_limits))
        .routes(routes!(usage))
        .routes(routes!(list_statements))
        .routes(routes!(statement))
        .routes(routes!(export_statements))
        .routes(routes!(platform_report))
        .routes(routes!(answer_survey))
}

/// `json` (the default) or `csv`.
fn wants_csv(q: &MonthQuery) -> ApiResult<bool> {
    match q.format.as_deref() {
        None | Some("json") => Ok(false),
        Some("csv") => Ok(true),
        Some(other) => Err(ApiError(plinth_core::Error::invalid(
            "format",
            format!("'{other}' is not json or csv"),
        ))),
    }
}

fn csv(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response()
}

/// The price book.
#[utoipa::path(get, path = "/plans", tag = "billing",
    responses((status = 200, body = Vec<Plan>)))]
async fn list_plans(State(s): State<AppState>, Caller(_who): Caller) -> ApiResult<Json<Vec<Plan>>> {
    Ok(Json(s.core.plans().await?))
}

#[utoipa::path(get, path = "/plans/{name}", tag = "billing", params(("name" = String, Path)),
    responses((status = 200, body = Plan), (status = 404, body = ErrorBody)))]
async fn get_plan(
    State(s): State<AppState>,
    Caller(_who): Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Plan>> {
    Ok(Json(s.core.plan(&name).await?))
}

/// Creates or replaces a plan (admins). Open months are priced by it at once; closed
/// statements keep the plan they were closed with.
#[utoipa::path(put, path = "/plans/{name}", tag = "billing", params(("name" = String, Path)), request_body = Plan,
    responses((status = 200, body = Plan), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn put_plan(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(name): Path<String>,
    ApiJson(plan): ApiJson<Plan>,
) -> ApiResult<Json<Plan>> {
    Ok(Json(s.core.put_plan(&who, &name, plan).await?))
}

/// A team's plan (and next month's), limits, budget, and this month so far.
#[utoipa::path(get, path = "/teams/{team}/billing", tag = "billing", params(("team" = String, Path)),
    responses((status = 200, body = TeamBilling), (status = 404, body = ErrorBody)))]
async fn team_billing(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(team): Path<String>,
) -> ApiResult<Json<TeamBilling>> {
    Ok(Json(s.core.team_billing(&who, &team).await?))
}

/// Moves a team to another plan from the next month on (admins).
#[utoipa::path(put, path = "/teams/{team}/billing/plan", tag = "billing", params(("team" = String, Path)), request_body = PlanChange,
    responses((status = 200, body = TeamBilling), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn change_plan(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(team): Path<String>,
    ApiJson(change): ApiJson<PlanChange>,
) -> ApiResult<Json<TeamBilling>> {
    Ok(Json(s.core.change_plan(&who, &team, change).await?))
}

/// Sets a team's own quotas and monthly budget (admins); in force at once.
#[utoipa::path(put, path = "/teams/{team}/billing/limits", tag = "billing", params(("team" = String, Path)), request_body = LimitsUpdate,
    responses((status = 200, body = TeamBilling), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn set_limits(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(team): Path<String>,
    ApiJson(update): ApiJson<LimitsUpdate>,
) -> ApiResult<Json<TeamBilling>> {
    Ok(Json(s.core.set_team_limits(&who, &team, update).await?))
}

/// What a team used in a month, per model, deployment and version.
#[utoipa::path(get, path = "/teams/{team}/usage", tag = "billing", params(("team" = String, Path), MonthQuery),
    responses((status = 200, body = Usage), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn usage(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(team): Path<String>,
    ApiQuery(q): ApiQuery<MonthQuery>,
) -> ApiResult<Json<Usage>> {
    Ok(Json(s.core.usage(&who, &team, q.month.as_deref()).await?))
}

/// A team's months: closed statements and the open month, newest first.
#[utoipa::path(get, path = "/teams/{team}/statements", tag = "billing", params(("team" = String, Path)),
    responses((status = 200, body = Vec<StatementSummary>), (status = 404, body = ErrorBody)))]
async fn list_statements(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(team): Path<String>,
) -> ApiResult<Json<Vec<StatementSummary>>> {
    Ok(Json(s.core.statements(&who, &team).await?))
}

/// A team's statement of a month (`format=csv` for its lines as CSV).
#[utoipa::path(get, path = "/teams/{team}/statements/{month}", tag = "billing",
    params(("team" = String, Path), ("month" = String, Path, description = "YYYY-MM"), MonthQuery),
    responses((status = 200, content((Statement = "application/json"), (String = "text/csv"))), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn statement(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((team, month)): Path<(String, String)>,
    ApiQuery(q): ApiQuery<MonthQuery>,
) -> ApiResult<Response> {
    let csv_wanted = wants_csv(&q)?;
    let st = s.core.statement(&who, &team, Some(&month)).await?;
    Ok(if csv_wanted { csv(statements_csv(&[st])) } else { Json(st).into_response() })
}

/// Every team's statement of a month, for finance (admins): the chargeback export.
#[utoipa::path(get, path = "/billing/statements", tag = "billing", params(MonthQuery),
    responses((status = 200, content((Vec<Statement> = "application/json"), (String = "text/csv"))), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn export_statements(
    State(s): State<AppState>,
    Caller(who): Caller,
    ApiQuery(q): ApiQuery<MonthQuery>,
) -> ApiResult<Response> {
    let csv_wanted = wants_csv(&q)?;
    let all = s.core.all_statements(&who, q.month.as_deref()).await?;
    Ok(if csv_wanted { csv(statements_csv(&all)) } else { Json(all).into_response() })
}

/// The platform's figures of a month: adoption, quality, business, delivery (DORA) and
/// satisfaction. Platform roles see every team; members name one of their teams for its slice.
#[utoipa::path(get, path = "/platform/report", tag = "billing", params(ReportQuery),
    responses((status = 200, body = PlatformReport), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn platform_report(
    State(s): State<AppState>,
    Caller(who): Caller,
    ApiQuery(q): ApiQuery<ReportQuery>,
) -> ApiResult<Json<PlatformReport>> {
    Ok(Json(s.core.platform_report(&who, &q).await?))
}

/// This month's satisfaction answer (1-5, once a month per person); reported per team only.
#[utoipa::path(post, path = "/survey", tag = "billing", request_body = SurveyAnswer,
    responses((status = 204), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn answer_survey(
    State(s): State<AppState>,
    Caller(who): Caller,
    ApiJson(answer): ApiJson<SurveyAnswer>,
) -> ApiResult<StatusCode> {
    s.core.answer_survey(&who, answer).await?;
    Ok(StatusCode::NO_CONTENT)
}
