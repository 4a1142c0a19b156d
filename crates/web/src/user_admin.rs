//! One user's administration page: roles and primary department (`Scoped::admin_update_user`: only roles the
//! administrator covers, departments in their scope; holds at the user's next request), a password reset that shows
//! a one-time password once, and a second-factor reset (both through the API's functions, audited).

use crate::error::{PageError, render};
use crate::viewer::{Chrome, PagePath, Viewer, ViewerForm};
use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use crm_api::AppState;
use crm_api::client::Client;
use crm_domain::{Action, Module};
use crm_store::{StoreError, UserPatch, UserSummary};
use serde::Deserialize;
use std::collections::BTreeMap;

pub struct Check {
    pub id: i64,
    pub name: String,
    pub checked: bool,
}

#[derive(Template)]
#[template(path = "admin_user.html")]
struct UserPage {
    chrome: Chrome,
    user: UserSummary,
    roles: Vec<Check>,
    departments: Vec<Check>,
    can_edit: bool,
    one_time_password: Option<String>,
    notice: Option<&'static str>,
}

async fn page(
    state: &AppState,
    v: &Viewer,
    id: i64,
    path: &str,
    one_time_password: Option<String>,
    notice: Option<&'static str>,
) -> Response {
    let scoped = state.store.scoped(v.principal().clone());
    let result = async {
        let user = scoped.admin_users().await?.into_iter().find(|u| u.id == id).ok_or(StoreError::NotFound)?;
        let departments = scoped.admin_departments().await?;
        let roles = scoped.admin_policy().await.map(|(p, _)| p.roles).unwrap_or_default();
        Ok::<_, StoreError>((user, departments, roles))
    }
    .await;
    let (user, departments, roles) = match result {
        Ok(x) => x,
        Err(e) => return PageError::from_store(e, v.lang).into_response(),
    };
    let mut chrome = v.chrome("admin.users", path);
    chrome.title = format!("{} · {}", v.lang.t("admin.users"), user.username);
    render(&UserPage {
        roles: roles
            .into_iter()
            .map(|r| Check { checked: user.roles.contains(&r.id), id: r.id, name: r.name })
            .collect(),
        departments: departments
            .into_iter()
            .map(|d| Check { checked: user.departments.first() == Some(&d.id), id: d.id, name: d.name })
            .collect(),
        user,
        can_edit: v.can(Module::Users, Action::Edit),
        one_time_password,
        notice,
        chrome,
    })
}

pub async fn show(State(state): State<AppState>, v: Viewer, Path(id): Path<i64>, PagePath(path): PagePath) -> Response {
    page(&state, &v, id, &path, None, None).await
}

/// Saves roles (checkboxes `role.<id>`) and the primary department (other departments are kept after it).
pub async fn save(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    ViewerForm { viewer: v, form }: ViewerForm<BTreeMap<String, String>>,
) -> Response {
    let roles: Vec<i64> = form.keys().filter_map(|k| k.strip_prefix("role.")?.parse().ok()).collect();
    let Some(primary) = form.get("department").and_then(|d| d.parse::<i64>().ok()) else {
        return PageError::new(StatusCode::BAD_REQUEST, "error.bad_request", v.lang).into_response();
    };
    let scoped = state.store.scoped(v.principal().clone());
    let current = match scoped.admin_users().await {
        Ok(users) => users.into_iter().find(|u| u.id == id),
        Err(e) => return PageError::from_store(e, v.lang).into_response(),
    };
    let Some(current) = current else {
        return PageError::new(StatusCode::NOT_FOUND, "error.not_found", v.lang).into_response();
    };
    let mut departments = vec![primary];
    departments.extend(current.departments.iter().copied().filter(|d| *d != primary));
    let patch = UserPatch { departments: Some(departments), roles: Some(roles), manager_id: None, status: None };
    match scoped.admin_update_user(id, &patch).await {
        Ok(()) => Redirect::to(&format!("/app/admin/users/{id}")).into_response(),
        Err(e) => PageError::from_store(e, v.lang).into_response(),
    }
}

#[derive(Deserialize)]
pub struct CsrfOnly {}

pub async fn reset_password(
    State(state): State<AppState>,
    client: Client,
    Path(id): Path<i64>,
    ViewerForm { viewer: v, form: CsrfOnly {} }: ViewerForm<CsrfOnly>,
) -> Response {
    match state.store.scoped(v.principal().clone()).admin_reset_password(id, None, &client.info).await {
        Ok(password) => {
            let path = format!("/app/admin/users/{id}");
            let mut r = page(&state, &v, id, &path, Some(password), None).await;
            r.headers_mut().insert(axum::http::header::CACHE_CONTROL, axum::http::HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => PageError::from_store(e, v.lang).into_response(),
    }
}

pub async fn reset_mfa(
    State(state): State<AppState>,
    client: Client,
    Path(id): Path<i64>,
    ViewerForm { viewer: v, form: CsrfOnly {} }: ViewerForm<CsrfOnly>,
) -> Response {
    match state.store.scoped(v.principal().clone()).admin_reset_mfa(id, &client.info).await {
        Ok(()) => page(&state, &v, id, &format!("/app/admin/users/{id}"), None, Some("admin.mfa_reset_done")).await,
        Err(e) => PageError::from_store(e, v.lang).into_response(),
    }
}
