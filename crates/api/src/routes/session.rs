//! Sign-in: `POST /api/v1/session` → bearer token (or, with `"cookie": true`, a browser session cookie). Clients
//! of accounts without a second factor send `{"username", "password"}` and get `{"token", …}` as always. For an
//! account with a second factor, either send the code in the same request (`otp` or `recovery_code`) or take the
//! `{"mfa_required": true, "mfa_token"}` answer to `POST /api/v1/session/mfa`.

use crate::AppState;
use crate::client::Client;
use crate::error::{ApiError, Problem};
use crate::extract::{ApiJson, AuthedSession};
use crate::session_cookie;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use crm_domain::{Action, Module};
use crm_store::{Credential, SignInFailure, SignInOutcome, SignInRequest as StoreSignIn, SignedIn};
use serde::{Deserialize, Serialize};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignInRequest {
    pub username: String,
    pub password: String,
    /// Organization slug; needed only when the username exists in several organizations.
    pub organization: Option<String>,
    /// A TOTP code from the authenticator app, for accounts with a second factor (one request instead of two).
    pub otp: Option<String>,
    /// A single-use recovery code instead of `otp`.
    pub recovery_code: Option<String>,
    /// Start a browser session: the token goes into an HttpOnly cookie instead of the body.
    #[serde(default)]
    pub cookie: bool,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SignInResponse {
    /// Send as `Authorization: Bearer <token>` (absent for cookie sessions: the cookie carries it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    pub token_type: &'static str,
    pub user_id: i64,
    pub organization_id: i64,
    /// Milliseconds since the Unix epoch.
    pub expires_at: i64,
    /// The session may only change the password (`POST /api/v1/me/password`) until it does.
    pub must_change_password: bool,
    /// A role requires a second factor: the session may only enrol one (`POST /api/v1/me/mfa/totp`).
    pub mfa_enrollment_required: bool,
    /// The second factor used, if any: `totp` or `recovery_code`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mfa: Option<&'static str>,
    /// Cookie sessions: echo in `X-CSRF-Token` (or a `csrf_token` form field) on state-changing requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub csrf_token: Option<String>,
}

/// The password was right; a second factor is needed.
#[derive(Serialize, utoipa::ToSchema)]
pub struct MfaChallenge {
    pub mfa_required: bool,
    /// Send with a code to `POST /api/v1/session/mfa` within five minutes.
    pub mfa_token: String,
    pub expires_at: i64,
    pub methods: Vec<&'static str>,
}

pub(crate) fn invalid_credentials() -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "invalid-credentials", "Sign-in failed", "invalid username or password")
}

/// Maps a failed sign-in to its answer: one body for every reason, except the per-network rate limit.
pub(crate) fn sign_in_failure(f: SignInFailure) -> Response {
    match f {
        SignInFailure::Invalid => {
            metrics::counter!("crm_sign_in_failures_total").increment(1);
            invalid_credentials().into_response()
        }
        SignInFailure::RateLimited { retry_after_secs } => {
            metrics::counter!("crm_sign_in_rate_limited_total").increment(1);
            let mut r = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too-many-requests",
                "Too many sign-in attempts",
                "too many sign-in attempts from your network; try again later",
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&retry_after_secs.max(1).to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
        SignInFailure::Store(e) => ApiError::from(e).into_response(),
    }
}

/// The answer to a successful sign-in: the body, and for a cookie session the cookie.
pub(crate) async fn signed_in(state: &AppState, s: SignedIn, client: &Client, headers: &HeaderMap) -> Response {
    let mut extra = HeaderMap::new();
    if s.cookie {
        // The browser's previous session (if any) ends: a sign-in never continues a session it did not create.
        if let Some(old) = session_cookie::session_cookie(headers)
            && let Err(e) = state.store.unscoped_system_access().end_session_by_token(&old).await
        {
            tracing::warn!(error = %e, "could not end the replaced session");
        }
        let max_age = (s.expires_at - now_ms()) / 1000;
        extra.insert(header::SET_COOKIE, session_cookie::set_cookie(&s.token, max_age, client.https));
    }
    let body = SignInResponse {
        token: (!s.cookie).then(|| s.token.clone()),
        token_type: if s.cookie { "Cookie" } else { "Bearer" },
        user_id: s.user,
        organization_id: s.org,
        expires_at: s.expires_at,
        must_change_password: s.must_change_password,
        mfa_enrollment_required: s.mfa_enrollment_required,
        mfa: s.mfa,
        csrf_token: s.cookie.then(|| s.csrf_token.clone()),
    };
    extra.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    (extra, Json(body)).into_response()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default()
}

/// Sign in with username and password (and, for accounts with a second factor, a code or a follow-up request).
#[utoipa::path(post, path = "/api/v1/session", tag = "session", request_body = SignInRequest,
    responses((status = 200, description = "A session (`SignInResponse`) or, when a second factor is needed and no code was sent, an `MfaChallenge`", body = SignInResponse),
        (status = 401, body = Problem), (status = 422, body = Problem), (status = 429, body = Problem)))]
pub async fn sign_in(
    State(state): State<AppState>,
    client: Client,
    headers: HeaderMap,
    ApiJson(req): ApiJson<SignInRequest>,
) -> Response {
    if req.username.len() > 200 || req.password.len() > 1024 {
        metrics::counter!("crm_sign_in_failures_total").increment(1);
        return invalid_credentials().into_response();
    }
    let r = StoreSignIn {
        organization: req.organization.as_deref(),
        username: &req.username,
        password: &req.password,
        otp: req.otp.as_deref(),
        recovery_code: req.recovery_code.as_deref(),
        cookie: req.cookie,
    };
    match state.store.unscoped_system_access().sign_in_with(&r, &client.info).await {
        Ok(SignInOutcome::Signed(s)) => signed_in(&state, s, &client, &headers).await,
        Ok(SignInOutcome::MfaRequired { mfa_token, expires_at }) => (
            [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
            Json(MfaChallenge { mfa_required: true, mfa_token, expires_at, methods: vec!["totp", "recovery_code"] }),
        )
            .into_response(),
        Err(f) => sign_in_failure(f),
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MfaStep {
    pub mfa_token: String,
    pub otp: Option<String>,
    pub recovery_code: Option<String>,
    #[serde(default)]
    pub cookie: bool,
}

/// Complete a sign-in with the second factor: a TOTP code or a recovery code for the `mfa_token`.
#[utoipa::path(post, path = "/api/v1/session/mfa", tag = "session", request_body = MfaStep,
    responses((status = 200, body = SignInResponse), (status = 401, body = Problem), (status = 429, body = Problem)))]
pub async fn complete_mfa(
    State(state): State<AppState>,
    client: Client,
    headers: HeaderMap,
    ApiJson(req): ApiJson<MfaStep>,
) -> Response {
    if req.mfa_token.len() > 200 {
        return invalid_credentials().into_response();
    }
    let sys = state.store.unscoped_system_access();
    match sys
        .complete_mfa(&req.mfa_token, req.otp.as_deref(), req.recovery_code.as_deref(), req.cookie, &client.info)
        .await
    {
        Ok(s) => signed_in(&state, s, &client, &headers).await,
        Err(f) => sign_in_failure(f),
    }
}

/// Sign out: the session (bearer token or cookie) stops working at once.
#[utoipa::path(delete, path = "/api/v1/session", tag = "session", security(("bearer" = [])),
    responses((status = 204), (status = 401, body = Problem)))]
pub async fn sign_out(
    State(state): State<AppState>,
    client: Client,
    AuthedSession(a): AuthedSession,
) -> Result<Response, ApiError> {
    state.store.unscoped_system_access().end_session(&a, &client.info).await?;
    let mut r = StatusCode::NO_CONTENT.into_response();
    if matches!(a.credential, Credential::Session { cookie: true, .. }) {
        r.headers_mut().insert(header::SET_COOKIE, session_cookie::clear_cookie(client.https));
    }
    Ok(r)
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Me {
    pub user_id: i64,
    pub organization_id: i64,
    pub roles: Vec<i64>,
    pub departments: Vec<i64>,
    /// module → actions the user's roles grant (功能权限). Modules absent here do not exist for the user.
    #[schema(value_type = Object)]
    pub modules: std::collections::BTreeMap<Module, Vec<Action>>,
    /// `password_change` or `mfa_enrollment` while the session may only fix the account.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restriction: Option<&'static str>,
    pub mfa_enabled: bool,
    /// Cookie sessions: the CSRF token to echo on state-changing requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub csrf_token: Option<String>,
}

/// Who am I, and which modules and actions do my roles grant?
#[utoipa::path(get, path = "/api/v1/me", tag = "session", security(("bearer" = [])),
    responses((status = 200, body = Me), (status = 401, body = Problem)))]
pub async fn me(AuthedSession(s): AuthedSession) -> Json<Me> {
    let a = &s.principal.access;
    let modules = if s.restriction.is_some() {
        Default::default()
    } else {
        Module::ALL
            .into_iter()
            .filter_map(|m| {
                let actions: Vec<Action> = Action::ALL.into_iter().filter(|x| a.can(m, *x)).collect();
                (!actions.is_empty()).then_some((m, actions))
            })
            .collect()
    };
    let cookie = matches!(s.credential, Credential::Session { cookie: true, .. });
    Json(Me {
        user_id: s.principal.user,
        organization_id: s.principal.org,
        roles: a.roles.clone(),
        departments: a.departments.clone(),
        modules,
        restriction: s.restriction.map(|r| r.as_str()),
        mfa_enabled: s.mfa_enabled,
        csrf_token: if cookie { s.csrf_token.clone() } else { None },
    })
}
