//! Sign-in for API clients: `POST /api/v1/session` → bearer token.

use crate::AppState;
use crate::error::{ApiError, Problem};
use crate::extract::{ApiJson, Authed};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use crm_domain::{Action, Module};
use serde::{Deserialize, Serialize};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignInRequest {
    pub username: String,
    pub password: String,
    /// Organization slug; needed only when the username exists in several organizations.
    pub organization: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SignInResponse {
    /// Send as `Authorization: Bearer <token>`.
    pub token: String,
    pub token_type: &'static str,
    pub user_id: i64,
    pub organization_id: i64,
    /// Milliseconds since the Unix epoch.
    pub expires_at: i64,
    pub must_change_password: bool,
}

fn client_ip(headers: &HeaderMap) -> Option<String> {
    headers.get("x-forwarded-for").and_then(|h| h.to_str().ok()).map(|s| s.split(',').next().unwrap_or("").trim().to_string())
}

/// Sign in with username and password.
#[utoipa::path(post, path = "/api/v1/session", tag = "session", request_body = SignInRequest,
    responses((status = 200, body = SignInResponse), (status = 401, body = Problem), (status = 422, body = Problem)))]
pub async fn sign_in(State(state): State<AppState>, headers: HeaderMap, ApiJson(req): ApiJson<SignInRequest>) -> Result<Json<SignInResponse>, ApiError> {
    if req.username.len() > 200 || req.password.len() > 1024 {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "invalid-credentials", "Sign-in failed", "invalid username or password"));
    }
    let ua = headers.get("user-agent").and_then(|h| h.to_str().ok()).map(|s| s.chars().take(300).collect());
    let result = state
        .store
        .unscoped_system_access()
        .sign_in(req.organization.as_deref(), &req.username, &req.password, client_ip(&headers), ua)
        .await;
    match result {
        Ok(s) => Ok(Json(SignInResponse {
            token: s.token,
            token_type: "Bearer",
            user_id: s.user,
            organization_id: s.org,
            expires_at: s.expires_at,
            must_change_password: s.must_change_password,
        })),
        Err(crm_store::StoreError::Forbidden(_)) => {
            metrics::counter!("crm_sign_in_failures_total").increment(1);
            Err(ApiError::new(StatusCode::UNAUTHORIZED, "invalid-credentials", "Sign-in failed", "invalid username or password"))
        }
        Err(e) => Err(e.into()),
    }
}

/// Sign out: the token stops working at once.
#[utoipa::path(delete, path = "/api/v1/session", tag = "session", security(("bearer" = [])),
    responses((status = 204), (status = 401, body = Problem)))]
pub async fn sign_out(State(state): State<AppState>, Authed(p): Authed) -> Result<StatusCode, ApiError> {
    state.store.unscoped_system_access().sign_out(&p).await?;
    Ok(StatusCode::NO_CONTENT)
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
}

/// Who am I, and which modules and actions do my roles grant?
#[utoipa::path(get, path = "/api/v1/me", tag = "session", security(("bearer" = [])),
    responses((status = 200, body = Me), (status = 401, body = Problem)))]
pub async fn me(Authed(p): Authed) -> Json<Me> {
    let a = &p.access;
    let modules = Module::ALL
        .into_iter()
        .filter_map(|m| {
            let actions: Vec<Action> = Action::ALL.into_iter().filter(|x| a.can(m, *x)).collect();
            (!actions.is_empty()).then_some((m, actions))
        })
        .collect();
    Json(Me { user_id: p.user, organization_id: p.org, roles: a.roles.clone(), departments: a.departments.clone(), modules })
}
