//! Sign-in policies: second factor per role, the organization's IP allowlist, sign-in hours, time zone, session and
//! lockout limits. Read through `Scoped::admin_security_settings`, changed through
//! `Scoped::admin_set_security_settings` (validation, and a change that would lock out the administrator making it
//! is refused), as `/api/v1/admin/security` does.

use crate::error::{PageError, render};
use crate::viewer::{Chrome, Viewer, ViewerForm};
use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use crm_api::AppState;
use crm_api::client::Client;
use crm_domain::{Action, Module};
use crm_store::StoreError;
use serde::Deserialize;

pub struct RoleSecurity {
    pub name: String,
    pub require_mfa: bool,
    pub networks: String,
    pub hours: String,
}

#[derive(Template)]
#[template(path = "admin_security.html")]
struct SecurityPage {
    chrome: Chrome,
    allowlist: String,
    time_zone: String,
    sessions: String,
    lockout: String,
    password: String,
    roles: Vec<RoleSecurity>,
    can_edit: bool,
    saved: bool,
    errors: Vec<String>,
}

#[derive(Deserialize, Default)]
pub struct Saved {
    #[serde(default)]
    done: String,
}

async fn page(
    state: &AppState,
    v: &Viewer,
    saved: bool,
    errors: Vec<String>,
    typed: Option<&SecurityForm>,
) -> Response {
    let scoped = state.store.scoped(v.principal().clone());
    let result = async {
        let settings = scoped.admin_security_settings().await?;
        let policy = scoped.admin_policy().await.map(|(p, _)| p).ok();
        Ok::<_, StoreError>((settings, policy))
    }
    .await;
    let (settings, policy) = match result {
        Ok(x) => x,
        Err(e) => return PageError::from_store(e, v.lang).into_response(),
    };
    let roles = policy
        .map(|p| {
            p.roles
                .iter()
                .map(|r| RoleSecurity {
                    name: r.name.clone(),
                    require_mfa: r.require_mfa,
                    networks: settings.network.roles.get(&r.id).map(|n| n.join(", ")).unwrap_or_default(),
                    hours: settings
                        .sign_in_hours
                        .get(&r.id)
                        .map(|w| serde_json::to_string(w).unwrap_or_default())
                        .unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default();
    let status = if errors.is_empty() { StatusCode::OK } else { StatusCode::UNPROCESSABLE_ENTITY };
    let body = SecurityPage {
        chrome: v.chrome("security.title", "/app/admin/security"),
        allowlist: typed.map(|t| t.allowlist.clone()).unwrap_or_else(|| settings.network.allow.join("\n")),
        time_zone: typed.map(|t| t.time_zone.clone()).unwrap_or_else(|| settings.time_zone.clone()),
        sessions: serde_json::to_string(&settings.sessions).unwrap_or_default(),
        lockout: serde_json::to_string(&settings.lockout).unwrap_or_default(),
        password: serde_json::to_string(&settings.password).unwrap_or_default(),
        roles,
        can_edit: v.can(Module::Users, Action::Edit),
        saved,
        errors,
    };
    (status, render(&body)).into_response()
}

pub async fn show(State(state): State<AppState>, v: Viewer, Query(q): Query<Saved>) -> Response {
    page(&state, &v, q.done == "1", Vec::new(), None).await
}

#[derive(Deserialize)]
pub struct SecurityForm {
    /// One network per line.
    #[serde(default)]
    allowlist: String,
    time_zone: String,
}

pub async fn save(
    State(state): State<AppState>,
    client: Client,
    ViewerForm { viewer: v, form }: ViewerForm<SecurityForm>,
) -> Response {
    let scoped = state.store.scoped(v.principal().clone());
    let mut settings = match scoped.admin_security_settings().await {
        Ok(s) => s,
        Err(e) => return PageError::from_store(e, v.lang).into_response(),
    };
    settings.network.allow =
        form.allowlist.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect();
    settings.time_zone = form.time_zone.trim().to_string();
    match scoped.admin_set_security_settings(settings, &client.info).await {
        Ok(_) => Redirect::to("/app/admin/security?done=1").into_response(),
        Err(StoreError::Invalid(errors)) => {
            let errors = errors.into_iter().map(|e| format!("{}: {}", e.field, e.message)).collect();
            page(&state, &v, false, errors, Some(&form)).await
        }
        Err(e) => PageError::from_store(e, v.lang).into_response(),
    }
}
