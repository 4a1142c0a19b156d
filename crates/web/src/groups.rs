//! Groups (用户组): named sets of users and departments that sharing rules, partition grants and manual shares
//! target. Created and removed through `Scoped::admin_set_policy`, like every access configuration change.

use crate::error::{PageError, render};
use crate::viewer::{Chrome, Viewer, ViewerForm};
use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use crm_api::AppState;
use crm_domain::{Action, Module};
use crm_policy::Group;
use serde::Deserialize;
use std::collections::BTreeMap;

pub struct GroupRow {
    pub id: i64,
    pub name: String,
    pub members: String,
}

#[derive(Template)]
#[template(path = "admin_groups.html")]
struct GroupsPage {
    chrome: Chrome,
    groups: Vec<GroupRow>,
    can_edit: bool,
}

pub async fn page(State(state): State<AppState>, v: Viewer) -> Response {
    let scoped = state.store.scoped(v.principal().clone());
    let (policy, _) = match scoped.admin_policy().await {
        Ok(x) => x,
        Err(e) => return PageError::from_store(e, v.lang).into_response(),
    };
    let names: BTreeMap<i64, String> = match state.store.unscoped_system_access().user_ids(v.principal().org).await {
        Ok(users) => users.into_iter().map(|(name, id)| (id, name)).collect(),
        Err(e) => return PageError::from_store(e, v.lang).into_response(),
    };
    render(&GroupsPage {
        chrome: v.chrome("admin.groups", "/app/admin/groups"),
        groups: policy
            .groups
            .iter()
            .map(|g| GroupRow {
                id: g.id,
                name: g.name.clone(),
                members: g
                    .users
                    .iter()
                    .map(|u| names.get(u).cloned().unwrap_or_else(|| format!("#{u}")))
                    .collect::<Vec<_>>()
                    .join(", "),
            })
            .collect(),
        can_edit: v.can(Module::Sharing, Action::Edit),
    })
}

#[derive(Deserialize)]
pub struct NewGroup {
    name: String,
    /// Usernames, separated by commas or spaces.
    members: String,
}

pub async fn create(State(state): State<AppState>, ViewerForm { viewer: v, form }: ViewerForm<NewGroup>) -> Response {
    let users = match state.store.unscoped_system_access().user_ids(v.principal().org).await {
        Ok(u) => u,
        Err(e) => return PageError::from_store(e, v.lang).into_response(),
    };
    let mut members = Vec::new();
    for name in form.members.split([',', ' ', '，']).map(str::trim).filter(|n| !n.is_empty()) {
        match users.iter().find(|(u, _)| u == name) {
            Some((_, id)) => members.push(*id),
            None => {
                return PageError::new(StatusCode::UNPROCESSABLE_ENTITY, "share.unknown_user", v.lang)
                    .with_detail(name.to_string())
                    .into_response();
            }
        }
    }
    let scoped = state.store.scoped(v.principal().clone());
    let (mut policy, _) = match scoped.admin_policy().await {
        Ok(x) => x,
        Err(e) => return PageError::from_store(e, v.lang).into_response(),
    };
    let id = policy.groups.iter().map(|g| g.id).max().unwrap_or(0) + 1;
    policy.groups.push(Group { id, name: form.name.trim().to_string(), users: members, departments: Vec::new() });
    match scoped.admin_set_policy(&policy, false).await {
        Ok(_) => Redirect::to("/app/admin/groups").into_response(),
        Err(e) => PageError::from_store(e, v.lang).into_response(),
    }
}

#[derive(Deserialize)]
pub struct CsrfOnly {}

/// Removes a group (refused by the policy's validation while a rule or grant still names it).
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    ViewerForm { viewer: v, form: CsrfOnly {} }: ViewerForm<CsrfOnly>,
) -> Response {
    let scoped = state.store.scoped(v.principal().clone());
    let (mut policy, _) = match scoped.admin_policy().await {
        Ok(x) => x,
        Err(e) => return PageError::from_store(e, v.lang).into_response(),
    };
    policy.groups.retain(|g| g.id != id);
    match scoped.admin_set_policy(&policy, false).await {
        Ok(_) => Redirect::to("/app/admin/groups").into_response(),
        Err(e) => PageError::from_store(e, v.lang).into_response(),
    }
}
