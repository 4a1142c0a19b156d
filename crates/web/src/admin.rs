//! The permission console: users (deactivate, activate, unlock), roles as a matrix of modules × actions × data
//! scope, and explain access ("why can this user see this record", "who can see this record"). Every change goes
//! through the same scoped administration functions as `/api/v1/admin/*`, which refuse escalation and keep
//! delegated administrators in their scope; a change holds at the affected users' next request.

use crate::error::{PageError, render};
use crate::i18n::Lang;
use crate::viewer::{Chrome, PagePath, Viewer, ViewerForm};
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use crm_api::AppState;
use crm_api::client::Client;
use crm_domain::{Action, Module};
use crm_policy::{Explanation, Reason, Scope, UserStatus};
use crm_store::{StoreError, UserPatch};
use serde::Deserialize;
use std::collections::BTreeMap;

/// Data scopes in the order of the matrix's choices, with their codes.
const SCOPES: [(Scope, &str); 5] = [
    (Scope::Own, "own"),
    (Scope::Subordinates, "subordinates"),
    (Scope::Department, "department"),
    (Scope::DepartmentTree, "department_tree"),
    (Scope::All, "all"),
];

pub struct RoleLink {
    pub href: String,
    pub name: String,
    pub description: String,
}

#[derive(Template)]
#[template(path = "admin_index.html")]
struct IndexPage {
    chrome: Chrome,
    roles: Vec<RoleLink>,
    users: bool,
}

pub async fn index(State(state): State<AppState>, v: Viewer) -> Response {
    let roles = if v.can(Module::Roles, Action::View) {
        match state.store.scoped(v.principal().clone()).admin_policy().await {
            Ok((policy, _)) => policy
                .roles
                .iter()
                .map(|r| RoleLink {
                    href: format!("/app/admin/roles/{}", r.id),
                    name: r.name.clone(),
                    description: r.description.clone(),
                })
                .collect(),
            Err(e) => return PageError::from_store(e, v.lang).into_response(),
        }
    } else {
        Vec::new()
    };
    let users = v.can(Module::Users, Action::View);
    if roles.is_empty() && !users {
        return PageError::new(StatusCode::NOT_FOUND, "error.not_found", v.lang).into_response();
    }
    render(&IndexPage { chrome: v.chrome("admin.title", "/app/admin"), roles, users })
}

// ---------------------------------------------------------------------------------------------------------------
// Users

pub struct UserRow {
    pub id: i64,
    pub username: String,
    pub display_name: String,
    pub status: String,
    pub active: bool,
    pub roles: String,
}

#[derive(Template)]
#[template(path = "admin_users.html")]
struct UsersPage {
    chrome: Chrome,
    users: Vec<UserRow>,
    can_edit: bool,
    done: bool,
}

#[derive(Deserialize, Default)]
pub struct Done {
    #[serde(default)]
    done: String,
}

pub async fn users(State(state): State<AppState>, v: Viewer, Query(d): Query<Done>) -> Response {
    let scoped = state.store.scoped(v.principal().clone());
    let result = async {
        let users = scoped.admin_users().await?;
        // Role names for the table; a viewer without `roles: view` sees role ids.
        let names: BTreeMap<i64, String> = match scoped.admin_policy().await {
            Ok((p, _)) => p.roles.into_iter().map(|r| (r.id, r.name)).collect(),
            Err(_) => BTreeMap::new(),
        };
        Ok::<_, StoreError>((users, names))
    }
    .await;
    let (users, names) = match result {
        Ok(x) => x,
        Err(e) => return PageError::from_store(e, v.lang).into_response(),
    };
    let rows = users
        .into_iter()
        .map(|u| UserRow {
            id: u.id,
            active: u.status == "active",
            status: v.lang.label("status", &u.status),
            roles: u
                .roles
                .iter()
                .map(|r| names.get(r).cloned().unwrap_or_else(|| format!("#{r}")))
                .collect::<Vec<_>>()
                .join(", "),
            username: u.username,
            display_name: u.display_name,
        })
        .collect();
    render(&UsersPage {
        chrome: v.chrome("admin.users", "/app/admin/users"),
        users: rows,
        can_edit: v.can(Module::Users, Action::Edit),
        done: d.done == "1",
    })
}

#[derive(Deserialize)]
pub struct StatusForm {
    /// `active`, `deactivated` or `unlock`.
    status: String,
}

pub async fn set_user_status(
    State(state): State<AppState>,
    client: Client,
    Path(id): Path<i64>,
    ViewerForm { viewer: v, form }: ViewerForm<StatusForm>,
) -> Response {
    let scoped = state.store.scoped(v.principal().clone());
    let status = match form.status.as_str() {
        "active" => Some(UserStatus::Active),
        "deactivated" => Some(UserStatus::Deactivated),
        "unlock" => None,
        _ => return PageError::new(StatusCode::BAD_REQUEST, "error.bad_request", v.lang).into_response(),
    };
    let result = match status {
        Some(status) => {
            let patch = UserPatch { departments: None, roles: None, manager_id: None, status: Some(status) };
            scoped.admin_update_user(id, &patch).await
        }
        None => scoped.admin_unlock(id, &client.info).await,
    };
    match result {
        Ok(()) => Redirect::to("/app/admin/users?done=1").into_response(),
        Err(e) => PageError::from_store(e, v.lang).into_response(),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Role matrix

pub struct ScopeChoice {
    pub code: &'static str,
    pub label: &'static str,
    pub selected: bool,
}

pub struct MatrixCell {
    /// The form field: `module.action`.
    pub name: String,
    pub label: String,
    pub none_selected: bool,
    pub choices: Vec<ScopeChoice>,
}

pub struct MatrixRow {
    pub label: String,
    pub cells: Vec<MatrixCell>,
}

#[derive(Template)]
#[template(path = "admin_role.html")]
struct RolePage {
    chrome: Chrome,
    role_id: i64,
    description: String,
    actions: Vec<&'static str>,
    rows: Vec<MatrixRow>,
    can_edit: bool,
    saved: bool,
}

fn matrix(perms: &BTreeMap<Module, BTreeMap<Action, Scope>>, lang: Lang) -> Vec<MatrixRow> {
    Module::ALL
        .into_iter()
        .map(|m| MatrixRow {
            label: lang.label("module", m.as_str()),
            cells: Action::ALL
                .into_iter()
                .map(|a| {
                    let current = perms.get(&m).and_then(|x| x.get(&a)).copied();
                    MatrixCell {
                        name: format!("{m}.{a}"),
                        label: format!("{} · {}", lang.label("module", m.as_str()), lang.label("action", a.as_str())),
                        none_selected: current.is_none(),
                        choices: SCOPES
                            .iter()
                            .map(|(s, code)| ScopeChoice {
                                code,
                                label: lang.t(&format!("scope.{code}")),
                                selected: current == Some(*s),
                            })
                            .collect(),
                    }
                })
                .collect(),
        })
        .collect()
}

pub async fn role(
    State(state): State<AppState>,
    v: Viewer,
    Path(id): Path<i64>,
    Query(d): Query<Done>,
    PagePath(path): PagePath,
) -> Response {
    let (policy, _) = match state.store.scoped(v.principal().clone()).admin_policy().await {
        Ok(x) => x,
        Err(e) => return PageError::from_store(e, v.lang).into_response(),
    };
    let Some(role) = policy.role(id) else {
        return PageError::new(StatusCode::NOT_FOUND, "error.not_found", v.lang).into_response();
    };
    let mut chrome = v.chrome("admin.roles", &path);
    chrome.title = format!("{} · {}", v.lang.t("admin.roles"), role.name);
    render(&RolePage {
        chrome,
        role_id: id,
        description: role.description.clone(),
        actions: Action::ALL.iter().map(|a| v.lang.t(&format!("action.{}", a.as_str()))).collect(),
        rows: matrix(&role.permissions, v.lang),
        can_edit: v.can(Module::Roles, Action::Edit),
        saved: d.done == "1",
    })
}

/// Saves a role's matrix: the policy with this one role's permissions replaced, through
/// `Scoped::admin_set_policy` (validation, escalation checks, audit, policy version bump in one transaction).
pub async fn save_role(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    ViewerForm { viewer: v, form }: ViewerForm<BTreeMap<String, String>>,
) -> Response {
    let scoped = state.store.scoped(v.principal().clone());
    let (mut policy, _) = match scoped.admin_policy().await {
        Ok(x) => x,
        Err(e) => return PageError::from_store(e, v.lang).into_response(),
    };
    let Some(role) = policy.roles.iter_mut().find(|r| r.id == id) else {
        return PageError::new(StatusCode::NOT_FOUND, "error.not_found", v.lang).into_response();
    };
    let mut permissions: BTreeMap<Module, BTreeMap<Action, Scope>> = BTreeMap::new();
    for m in Module::ALL {
        for a in Action::ALL {
            let Some(code) = form.get(&format!("{m}.{a}")) else { continue };
            if code.is_empty() {
                continue;
            }
            let Some((scope, _)) = SCOPES.iter().find(|(_, c)| c == code) else {
                return PageError::new(StatusCode::BAD_REQUEST, "error.bad_request", v.lang).into_response();
            };
            permissions.entry(m).or_default().insert(a, *scope);
        }
    }
    role.permissions = permissions;
    match scoped.admin_set_policy(&policy, false).await {
        Ok(_) => Redirect::to(&format!("/app/admin/roles/{id}?done=1")).into_response(),
        Err(e) => PageError::from_store(e, v.lang).into_response(),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Explain access

#[derive(Deserialize, Default)]
pub struct ExplainParams {
    #[serde(default)]
    user: String,
    #[serde(default)]
    module: String,
    #[serde(default)]
    record: String,
}

pub struct ExplainView {
    pub allowed: bool,
    pub module_permission: bool,
    pub granted: Vec<String>,
    pub denied: Vec<String>,
}

pub struct WhoRow {
    pub username: String,
    pub reasons: String,
}

pub struct UserChoice {
    pub id: i64,
    pub username: String,
    pub selected: bool,
}

#[derive(Template)]
#[template(path = "admin_explain.html")]
struct ExplainPage {
    chrome: Chrome,
    users: Vec<UserChoice>,
    modules: Vec<(String, String, bool)>,
    record: String,
    result: Option<ExplainView>,
    who: Vec<WhoRow>,
}

/// A reason as a line of text: its source translated, then its details (`role=5, scope=own`).
pub fn reason_text(r: &Reason, lang: Lang) -> String {
    let v = serde_json::to_value(r).unwrap_or_default();
    let source = v.get("source").and_then(|s| s.as_str()).unwrap_or("").to_string();
    let details: Vec<String> = v
        .as_object()
        .map(|o| {
            o.iter()
                .filter(|(k, _)| k.as_str() != "source")
                .map(|(k, x)| match x {
                    serde_json::Value::String(s) => format!("{k}={}", lang.label("scope", s)),
                    other => format!("{k}={other}"),
                })
                .collect()
        })
        .unwrap_or_default();
    let head = lang.label("reason", &source);
    if details.is_empty() { head } else { format!("{head} ({})", details.join(", ")) }
}

fn explain_view(e: &Explanation, lang: Lang) -> ExplainView {
    ExplainView {
        allowed: e.allowed,
        module_permission: e.module_permission,
        granted: e.granted_by.iter().map(|r| reason_text(r, lang)).collect(),
        denied: e.denied_by.iter().map(|r| reason_text(r, lang)).collect(),
    }
}

pub async fn explain(
    State(state): State<AppState>,
    v: Viewer,
    Query(p): Query<ExplainParams>,
    PagePath(path): PagePath,
) -> Response {
    let scoped = state.store.scoped(v.principal().clone());
    let users = match scoped.admin_users().await {
        Ok(u) => u,
        Err(e) => return PageError::from_store(e, v.lang).into_response(),
    };
    let user = p.user.parse::<i64>().ok();
    let module = p.module.parse::<Module>().ok().filter(|m| m.is_record_module());
    let record = p.record.trim().parse::<i64>().ok();
    let (mut result, mut who) = (None, Vec::new());
    if let (Some(module), Some(record)) = (module, record) {
        if let Some(user) = user {
            match scoped.explain_for(user, module, Action::View, record).await {
                Ok(e) => result = Some(explain_view(&e, v.lang)),
                Err(e) => return PageError::from_store(e, v.lang).into_response(),
            }
        }
        match scoped.who_can_see(module, record).await {
            Ok(list) => {
                who = list
                    .into_iter()
                    .map(|w| WhoRow {
                        username: w.username,
                        reasons: w
                            .explanation
                            .granted_by
                            .iter()
                            .map(|r| reason_text(r, v.lang))
                            .collect::<Vec<_>>()
                            .join("; "),
                    })
                    .collect()
            }
            Err(e) => return PageError::from_store(e, v.lang).into_response(),
        }
    }
    render(&ExplainPage {
        chrome: v.chrome("admin.explain", &path),
        users: users
            .into_iter()
            .map(|u| UserChoice { id: u.id, selected: Some(u.id) == user, username: u.username })
            .collect(),
        modules: Module::RECORDS
            .into_iter()
            .map(|m| (m.as_str().to_string(), v.lang.label("module", m.as_str()), Some(m) == module))
            .collect(),
        record: p.record,
        result,
        who,
    })
}
