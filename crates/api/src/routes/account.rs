//! The signed-in user's own account security: password, sessions ("sign out everywhere"), sign-in history, API
//! tokens, the TOTP second factor with recovery codes, and step-up. These endpoints also serve a session that
//! must first change its password or enrol a second factor.

use crate::AppState;
use crate::client::Client;
use crate::error::{ApiError, Problem};
use crate::extract::{ApiJson, AuthedSession, step_up_required};
use crate::session_cookie;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use crm_store::{ApiTokenInfo, Credential, MfaStatus, NewApiToken, SessionInfo, SignInRecord, TotpEnrollment};
use serde::{Deserialize, Serialize};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePassword {
    pub current_password: String,
    pub new_password: String,
}

/// Change your password (the current one is verified; the new one must meet the organization's policy). Your
/// other sessions end.
#[utoipa::path(post, path = "/api/v1/me/password", tag = "account", security(("bearer" = [])), request_body = ChangePassword,
    responses((status = 204), (status = 401, body = Problem), (status = 403, body = Problem), (status = 422, body = Problem)))]
pub async fn change_password(
    State(state): State<AppState>,
    client: Client,
    AuthedSession(a): AuthedSession,
    ApiJson(b): ApiJson<ChangePassword>,
) -> Result<StatusCode, ApiError> {
    if b.current_password.len() > 1024 || b.new_password.len() > 4096 {
        return Err(ApiError::validation(vec![crm_domain::ValueError::new("password", "too long")]));
    }
    state
        .store
        .unscoped_system_access()
        .change_password(&a, &b.current_password, &b.new_password, &client.info)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Your live sessions.
#[utoipa::path(get, path = "/api/v1/me/sessions", tag = "account", security(("bearer" = [])),
    responses((status = 200, body = Object), (status = 401, body = Problem)))]
pub async fn sessions(
    State(state): State<AppState>,
    AuthedSession(a): AuthedSession,
) -> Result<Json<Vec<SessionInfo>>, ApiError> {
    Ok(Json(state.store.unscoped_system_access().my_sessions(&a).await?))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Ended {
    pub ended: u64,
}

/// Sign out everywhere: every session of yours ends, this one included.
#[utoipa::path(delete, path = "/api/v1/me/sessions", tag = "account", security(("bearer" = [])),
    responses((status = 200, body = Ended), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub async fn sign_out_everywhere(
    State(state): State<AppState>,
    client: Client,
    AuthedSession(a): AuthedSession,
) -> Result<Response, ApiError> {
    let ended = state.store.unscoped_system_access().sign_out_everywhere(&a, &client.info).await?;
    let mut r = Json(Ended { ended }).into_response();
    if matches!(a.credential, Credential::Session { cookie: true, .. }) {
        r.headers_mut().insert(header::SET_COOKIE, session_cookie::clear_cookie(client.https));
    }
    Ok(r)
}

/// End one of your sessions.
#[utoipa::path(delete, path = "/api/v1/me/sessions/{id}", tag = "account", security(("bearer" = [])), params(("id" = i64, Path)),
    responses((status = 204), (status = 401, body = Problem), (status = 404, body = Problem)))]
pub async fn end_session(
    State(state): State<AppState>,
    client: Client,
    AuthedSession(a): AuthedSession,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    state.store.unscoped_system_access().end_my_session(&a, id, &client.info).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    pub limit: Option<i64>,
}

/// Your sign-in history, newest first: time, address, user agent, result, second factor used.
#[utoipa::path(get, path = "/api/v1/me/sign-ins", tag = "account", security(("bearer" = [])), params(("limit" = Option<i64>, Query)),
    responses((status = 200, body = Object), (status = 401, body = Problem)))]
pub async fn sign_ins(
    State(state): State<AppState>,
    AuthedSession(a): AuthedSession,
    Query(q): Query<Limit>,
) -> Result<Json<Vec<SignInRecord>>, ApiError> {
    Ok(Json(state.store.unscoped_system_access().my_sign_ins(&a, q.limit.unwrap_or(50)).await?))
}

/// Your API tokens (never the tokens themselves).
#[utoipa::path(get, path = "/api/v1/me/tokens", tag = "account", security(("bearer" = [])),
    responses((status = 200, body = Object), (status = 401, body = Problem)))]
pub async fn tokens(
    State(state): State<AppState>,
    AuthedSession(a): AuthedSession,
) -> Result<Json<Vec<ApiTokenInfo>>, ApiError> {
    Ok(Json(state.store.unscoped_system_access().my_api_tokens(&a).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    pub name: String,
    /// Expiry in ms since the epoch; absent: no expiry.
    pub expires_at: Option<i64>,
}

/// Create an API token for an integration. It acts as you, with your current rights (never more), until revoked,
/// expired, or you are deactivated. The token is shown in this answer only.
#[utoipa::path(post, path = "/api/v1/me/tokens", tag = "account", security(("bearer" = [])), request_body = CreateToken,
    responses((status = 201, body = Object), (status = 401, body = Problem), (status = 403, body = Problem), (status = 422, body = Problem)))]
pub async fn create_token(
    State(state): State<AppState>,
    client: Client,
    AuthedSession(a): AuthedSession,
    ApiJson(b): ApiJson<CreateToken>,
) -> Result<(StatusCode, [(header::HeaderName, &'static str); 1], Json<NewApiToken>), ApiError> {
    if a.mfa_enabled && !a.step_up_fresh() && matches!(a.credential, Credential::Session { .. }) {
        return Err(step_up_required());
    }
    let t = state.store.unscoped_system_access().create_api_token(&a, &b.name, b.expires_at, &client.info).await?;
    Ok((StatusCode::CREATED, [(header::CACHE_CONTROL, "no-store")], Json(t)))
}

/// Revoke one of your API tokens.
#[utoipa::path(delete, path = "/api/v1/me/tokens/{id}", tag = "account", security(("bearer" = [])), params(("id" = i64, Path)),
    responses((status = 204), (status = 401, body = Problem), (status = 404, body = Problem)))]
pub async fn revoke_token(
    State(state): State<AppState>,
    client: Client,
    AuthedSession(a): AuthedSession,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    state.store.unscoped_system_access().revoke_api_token(&a, id, &client.info).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Your second factor: enabled, required by a role, recovery codes left.
#[utoipa::path(get, path = "/api/v1/me/mfa", tag = "account", security(("bearer" = [])),
    responses((status = 200, body = Object), (status = 401, body = Problem)))]
pub async fn mfa(State(state): State<AppState>, AuthedSession(a): AuthedSession) -> Result<Json<MfaStatus>, ApiError> {
    Ok(Json(state.store.unscoped_system_access().mfa_status(&a).await?))
}

/// Start enrolling a TOTP authenticator: the secret, an `otpauth://` URI and its QR code (SVG). Confirm with a
/// code at `POST /api/v1/me/mfa/totp/confirm`.
#[utoipa::path(post, path = "/api/v1/me/mfa/totp", tag = "account", security(("bearer" = [])),
    responses((status = 200, body = Object), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub async fn totp_begin(
    State(state): State<AppState>,
    AuthedSession(a): AuthedSession,
) -> Result<([(header::HeaderName, &'static str); 1], Json<TotpEnrollment>), ApiError> {
    if a.mfa_enabled && !a.step_up_fresh() && matches!(a.credential, Credential::Session { .. }) {
        return Err(step_up_required());
    }
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(state.store.unscoped_system_access().totp_begin(&a).await?)))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Code {
    pub code: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RecoveryCodes {
    /// Ten single-use codes, shown this once: each signs in instead of a TOTP code.
    pub recovery_codes: Vec<String>,
}

/// Confirm the TOTP enrolment with a current code; returns ten recovery codes.
#[utoipa::path(post, path = "/api/v1/me/mfa/totp/confirm", tag = "account", security(("bearer" = [])), request_body = Code,
    responses((status = 200, body = RecoveryCodes), (status = 401, body = Problem), (status = 422, body = Problem)))]
pub async fn totp_confirm(
    State(state): State<AppState>,
    client: Client,
    AuthedSession(a): AuthedSession,
    ApiJson(b): ApiJson<Code>,
) -> Result<([(header::HeaderName, &'static str); 1], Json<RecoveryCodes>), ApiError> {
    let codes = state.store.unscoped_system_access().totp_confirm(&a, &b.code, &client.info).await?;
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(RecoveryCodes { recovery_codes: codes })))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Proof {
    pub otp: Option<String>,
    pub recovery_code: Option<String>,
    /// For users without a second factor (step-up only).
    pub password: Option<String>,
}

/// Remove your TOTP factor (a code proves it); refused while a role of yours requires one.
#[utoipa::path(post, path = "/api/v1/me/mfa/totp/disable", tag = "account", security(("bearer" = [])), request_body = Proof,
    responses((status = 204), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub async fn totp_disable(
    State(state): State<AppState>,
    client: Client,
    AuthedSession(a): AuthedSession,
    ApiJson(b): ApiJson<Proof>,
) -> Result<StatusCode, ApiError> {
    state
        .store
        .unscoped_system_access()
        .totp_disable(&a, b.otp.as_deref(), b.recovery_code.as_deref(), &client.info)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Replace your recovery codes (a TOTP code proves the factor); the old ones stop working.
#[utoipa::path(post, path = "/api/v1/me/mfa/recovery-codes", tag = "account", security(("bearer" = [])), request_body = Code,
    responses((status = 200, body = RecoveryCodes), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub async fn recovery_codes(
    State(state): State<AppState>,
    client: Client,
    AuthedSession(a): AuthedSession,
    ApiJson(b): ApiJson<Code>,
) -> Result<([(header::HeaderName, &'static str); 1], Json<RecoveryCodes>), ApiError> {
    let codes = state.store.unscoped_system_access().regenerate_recovery_codes(&a, &b.code, &client.info).await?;
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(RecoveryCodes { recovery_codes: codes })))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SteppedUp {
    /// ms since the epoch.
    pub verified_at: i64,
    /// Sensitive features accept this session until then.
    pub fresh_until: i64,
}

/// Step-up: prove it is you again (a TOTP or recovery code; your password if you have no second factor) before a
/// sensitive feature such as export or reveal.
#[utoipa::path(post, path = "/api/v1/session/step-up", tag = "session", security(("bearer" = [])), request_body = Proof,
    responses((status = 200, body = SteppedUp), (status = 401, body = Problem), (status = 403, body = Problem), (status = 422, body = Problem)))]
pub async fn step_up(
    State(state): State<AppState>,
    client: Client,
    AuthedSession(a): AuthedSession,
    ApiJson(b): ApiJson<Proof>,
) -> Result<Json<SteppedUp>, ApiError> {
    if b.password.as_ref().is_some_and(|p| p.len() > 1024) {
        return Err(ApiError::forbidden("the current password is wrong"));
    }
    let at = state
        .store
        .unscoped_system_access()
        .step_up(&a, b.otp.as_deref(), b.recovery_code.as_deref(), b.password.as_deref(), &client.info)
        .await?;
    Ok(Json(SteppedUp { verified_at: at, fresh_until: at + a.step_up_ms }))
}
