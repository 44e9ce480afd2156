//! Teams, members, users, service accounts, API keys and `whoami`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use plinth_api::identity::{
    ApiKeyInfo, CreateApiKey, CreateServiceAccount, CreateTeam, CreateUser, CreatedApiKey,
    ListKeysQuery, Membership, PageQuery, PrincipalInfo, SetMembership, Team, WhoAmI,
};
use plinth_api::{ErrorBody, Page};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiQuery, Caller};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(whoami))
        .routes(routes!(create_team, list_teams))
        .routes(routes!(get_team))
        .routes(routes!(list_members))
        .routes(routes!(set_member, remove_member))
        .routes(routes!(create_service_account))
        .routes(routes!(create_user, list_users))
        .routes(routes!(create_key, list_keys))
        .routes(routes!(revoke_key))
}

/// Who the caller is, and its team roles.
#[utoipa::path(get, path = "/whoami", tag = "identity", responses((status = 200, body = WhoAmI), (status = 401, body = ErrorBody)))]
async fn whoami(State(s): State<AppState>, Caller(who): Caller) -> ApiResult<Json<WhoAmI>> {
    Ok(Json(s.core.whoami(&who).await?))
}

/// Creates a team (platform admins).
#[utoipa::path(post, path = "/teams", tag = "identity", request_body = CreateTeam,
    responses((status = 201, body = Team), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_team(
    State(s): State<AppState>,
    Caller(who): Caller,
    ApiJson(req): ApiJson<CreateTeam>,
) -> ApiResult<(StatusCode, Json<Team>)> {
    Ok((StatusCode::CREATED, Json(s.core.create_team(&who, req).await?)))
}

/// The teams the caller can see.
#[utoipa::path(get, path = "/teams", tag = "identity", params(PageQuery), responses((status = 200, body = Page<Team>)))]
async fn list_teams(
    State(s): State<AppState>,
    Caller(who): Caller,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<Team>>> {
    Ok(Json(s.core.list_teams(&who, &q).await?))
}

#[utoipa::path(get, path = "/teams/{team}", tag = "identity", params(("team" = String, Path)),
    responses((status = 200, body = Team), (status = 404, body = ErrorBody)))]
async fn get_team(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(team): Path<String>,
) -> ApiResult<Json<Team>> {
    Ok(Json(s.core.get_team(&who, &team).await?))
}

#[utoipa::path(get, path = "/teams/{team}/members", tag = "identity", params(("team" = String, Path), PageQuery),
    responses((status = 200, body = Page<Membership>), (status = 404, body = ErrorBody)))]
async fn list_members(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(team): Path<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<Membership>>> {
    Ok(Json(s.core.list_members(&who, &team, &q).await?))
}

/// Adds a member to a team or changes its role (team maintainers).
#[utoipa::path(put, path = "/teams/{team}/members/{principal}", tag = "identity", request_body = SetMembership,
    params(("team" = String, Path), ("principal" = String, Path, description = "A user name, or team/service-account")),
    responses((status = 200, body = Membership), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn set_member(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((team, principal)): Path<(String, String)>,
    ApiJson(req): ApiJson<SetMembership>,
) -> ApiResult<Json<Membership>> {
    Ok(Json(s.core.set_member(&who, &team, &principal, req.role).await?))
}

#[utoipa::path(delete, path = "/teams/{team}/members/{principal}", tag = "identity",
    params(("team" = String, Path), ("principal" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn remove_member(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((team, principal)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    s.core.remove_member(&who, &team, &principal).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Creates a service account owned by the team (team maintainers); its name is `team/name`.
#[utoipa::path(post, path = "/teams/{team}/service-accounts", tag = "identity", request_body = CreateServiceAccount,
    params(("team" = String, Path)),
    responses((status = 201, body = PrincipalInfo), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_service_account(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(team): Path<String>,
    ApiJson(req): ApiJson<CreateServiceAccount>,
) -> ApiResult<(StatusCode, Json<PrincipalInfo>)> {
    Ok((StatusCode::CREATED, Json(s.core.create_service_account(&who, &team, req).await?)))
}

/// Creates a user (platform admins).
#[utoipa::path(post, path = "/users", tag = "identity", request_body = CreateUser,
    responses((status = 201, body = PrincipalInfo), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_user(
    State(s): State<AppState>,
    Caller(who): Caller,
    ApiJson(req): ApiJson<CreateUser>,
) -> ApiResult<(StatusCode, Json<PrincipalInfo>)> {
    Ok((StatusCode::CREATED, Json(s.core.create_user(&who, req).await?)))
}

#[utoipa::path(get, path = "/users", tag = "identity", params(PageQuery), responses((status = 200, body = Page<PrincipalInfo>), (status = 403, body = ErrorBody)))]
async fn list_users(
    State(s): State<AppState>,
    Caller(who): Caller,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<PrincipalInfo>>> {
    Ok(Json(s.core.list_users(&who, &q).await?))
}

/// Creates an API key. The secret is in this answer only.
#[utoipa::path(post, path = "/keys", tag = "identity", request_body = CreateApiKey,
    responses((status = 201, body = CreatedApiKey), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn create_key(
    State(s): State<AppState>,
    Caller(who): Caller,
    ApiJson(req): ApiJson<CreateApiKey>,
) -> ApiResult<(StatusCode, Json<CreatedApiKey>)> {
    Ok((StatusCode::CREATED, Json(s.core.create_key(&who, req).await?)))
}

#[utoipa::path(get, path = "/keys", tag = "identity", params(ListKeysQuery), responses((status = 200, body = Page<ApiKeyInfo>), (status = 404, body = ErrorBody)))]
async fn list_keys(
    State(s): State<AppState>,
    Caller(who): Caller,
    ApiQuery(q): ApiQuery<ListKeysQuery>,
) -> ApiResult<Json<Page<ApiKeyInfo>>> {
    Ok(Json(s.core.list_keys(&who, &q).await?))
}

/// Revokes a key at once.
#[utoipa::path(delete, path = "/keys/{key_id}", tag = "identity", params(("key_id" = String, Path)),
    responses((status = 200, body = ApiKeyInfo), (status = 404, body = ErrorBody)))]
async fn revoke_key(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(key_id): Path<String>,
) -> ApiResult<Json<ApiKeyInfo>> {
    Ok(Json(s.core.revoke_key(&who, &key_id).await?))
}
