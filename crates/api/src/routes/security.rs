//! Administration of account security: the organization's security settings (password policy, session
//! timeouts, lockout, IP allowlists, time zone, sign-in hours), per-user actions (reset the password, unlock,
//! reset the second factor, end all sessions) and the sign-in history of the users in your scope. Permission
//! checks live in the store, as for the rest of the administration API.

use crate::AppState;
use crate::client::Client;
use crate::error::{ApiError, Problem};
use crate::extract::{ApiJson, Authed};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use crm_store::{SecuritySettings, SignInRecord, UserSecurity};
use serde::{Deserialize, Serialize};

/// The organization's security settings.
#[utoipa::path(get, path = "/api/v1/admin/security", tag = "administration", security(("bearer" = [])),
    responses((status = 200, body = Object), (status = 404, body = Problem)))]
pub async fn get_settings(
    State(state): State<AppState>,
    Authed(p): Authed,
) -> Result<Json<SecuritySettings>, ApiError> {
    Ok(Json(state.store.scoped(p).admin_security_settings().await?))
}

/// Replace the organization's security settings (needs `users: edit` and modify-all data). Refused when it
/// would refuse your own request (address or time).
#[utoipa::path(put, path = "/api/v1/admin/security", tag = "administration", security(("bearer" = [])), request_body = Object,
    responses((status = 200, body = Object), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn put_settings(
    State(state): State<AppState>,
    client: Client,
    Authed(p): Authed,
    ApiJson(s): ApiJson<SecuritySettings>,
) -> Result<Json<SecuritySettings>, ApiError> {
    Ok(Json(state.store.scoped(p).admin_set_security_settings(s, &client.info).await?))
}

/// A user's account-security state: lockout, second factor, live sessions and API tokens.
#[utoipa::path(get, path = "/api/v1/admin/users/{id}/security", tag = "administration", security(("bearer" = [])), params(("id" = i64, Path)),
    responses((status = 200, body = Object), (status = 404, body = Problem)))]
pub async fn user_security(
    State(state): State<AppState>,
    Authed(p): Authed,
    Path(id): Path<i64>,
) -> Result<Json<UserSecurity>, ApiError> {
    Ok(Json(state.store.scoped(p).admin_user_security(id).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetPassword {
    /// The new password; absent: a one-time password is generated. Either way the user must change it at their
    /// next sign-in.
    pub password: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct OneTimePassword {
    /// Shown once; hand it to the user over a trusted channel.
    pub password: String,
}

/// Reset a user's password. Their sessions and API tokens end at once and their lockout is cleared.
#[utoipa::path(post, path = "/api/v1/admin/users/{id}/password", tag = "administration", security(("bearer" = [])), params(("id" = i64, Path)),
    request_body = ResetPassword,
    responses((status = 200, body = OneTimePassword), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn reset_password(
    State(state): State<AppState>,
    client: Client,
    Authed(p): Authed,
    Path(id): Path<i64>,
    ApiJson(b): ApiJson<ResetPassword>,
) -> Result<([(header::HeaderName, &'static str); 1], Json<OneTimePassword>), ApiError> {
    let password = state.store.scoped(p).admin_reset_password(id, b.password, &client.info).await?;
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(OneTimePassword { password })))
}

/// Unlock a user: lifts a soft lockout after failed sign-ins and an administrator's lock.
#[utoipa::path(post, path = "/api/v1/admin/users/{id}/unlock", tag = "administration", security(("bearer" = [])), params(("id" = i64, Path)),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn unlock(
    State(state): State<AppState>,
    client: Client,
    Authed(p): Authed,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    state.store.scoped(p).admin_unlock(id, &client.info).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Remove a user's second factor (a lost phone). Their sessions end.
#[utoipa::path(post, path = "/api/v1/admin/users/{id}/mfa/reset", tag = "administration", security(("bearer" = [])), params(("id" = i64, Path)),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn reset_mfa(
    State(state): State<AppState>,
    client: Client,
    Authed(p): Authed,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    state.store.scoped(p).admin_reset_mfa(id, &client.info).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndSessions {
    #[serde(default)]
    pub api_tokens: bool,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Ended {
    pub ended: u64,
}

/// End every session of a user (`?api_tokens=true` revokes their API tokens too).
#[utoipa::path(delete, path = "/api/v1/admin/users/{id}/sessions", tag = "administration", security(("bearer" = [])),
    params(("id" = i64, Path), ("api_tokens" = Option<bool>, Query)),
    responses((status = 200, body = Ended), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn end_sessions(
    State(state): State<AppState>,
    client: Client,
    Authed(p): Authed,
    Path(id): Path<i64>,
    Query(q): Query<EndSessions>,
) -> Result<Json<Ended>, ApiError> {
    Ok(Json(Ended { ended: state.store.scoped(p).admin_end_sessions(id, q.api_tokens, &client.info).await? }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    pub user: Option<i64>,
    pub limit: Option<i64>,
}

/// Sign-in history of the users in your scope (or of one), newest first.
#[utoipa::path(get, path = "/api/v1/admin/sign-ins", tag = "administration", security(("bearer" = [])),
    params(("user" = Option<i64>, Query), ("limit" = Option<i64>, Query)),
    responses((status = 200, body = Object), (status = 404, body = Problem)))]
pub async fn sign_ins(
    State(state): State<AppState>,
    Authed(p): Authed,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<Vec<SignInRecord>>, ApiError> {
    Ok(Json(state.store.scoped(p).admin_sign_ins(q.user, q.limit.unwrap_or(100)).await?))
}
