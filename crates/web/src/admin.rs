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
use crm_policy::{Explanation, FieldAccess, Reason, Scope, UserStatus};
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
    /// For the new-user form: departments in scope and roles by name.
    departments: Vec<(i64, String)>,
    roles: Vec<(i64, String)>,
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
        let departments = scoped.admin_departments().await?;
        // Role names for the table; a viewer without `roles: view` sees role ids.
        let names: BTreeMap<i64, String> = match scoped.admin_policy().await {
            Ok((p, _)) => p.roles.into_iter().map(|r| (r.id, r.name)).collect(),
            Err(_) => BTreeMap::new(),
        };
        Ok::<_, StoreError>((users, departments, names))
    }
    .await;
    let (users, departments, names) = match result {
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
        departments: departments.into_iter().map(|d| (d.id, d.name)).collect(),
        roles: names.into_iter().collect(),
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
    fields: Vec<FieldCell>,
    reveal: Vec<RevealCell>,
    require_mfa: bool,
    can_edit: bool,
    saved: bool,
}

/// Field access levels in the order of the field matrix's choices, with their codes.
const FIELD_ACCESS: [(FieldAccess, &str); 4] = [
    (FieldAccess::Hidden, "hidden"),
    (FieldAccess::Masked, "masked"),
    (FieldAccess::ReadOnly, "read_only"),
    (FieldAccess::Editable, "editable"),
];

/// One cell of the field permissions matrix (字段权限): a record module's field and the role's access to it.
pub struct FieldCell {
    /// The form field: `field.module.name`.
    pub name: String,
    pub module: String,
    pub label: String,
    pub choices: Vec<ScopeChoice>,
}

/// May holders reveal masked fields of a module?
pub struct RevealCell {
    pub name: String,
    pub label: String,
    pub checked: bool,
}

fn field_matrix(role: &crm_policy::Role, lang: Lang) -> Vec<FieldCell> {
    Module::RECORDS
        .into_iter()
        .flat_map(|m| {
            let defs = crm_domain::schema(m).map(|s| s.fields).unwrap_or(&[]);
            defs.iter().map(move |f| {
                // Unlisted fields are editable.
                let current = role.fields.get(&m).and_then(|x| x.get(f.name)).copied().unwrap_or(FieldAccess::Editable);
                FieldCell {
                    name: format!("field.{m}.{}", f.name),
                    module: lang.label("module", m.as_str()),
                    label: lang.label("field", f.name),
                    choices: FIELD_ACCESS
                        .iter()
                        .map(|(a, code)| ScopeChoice {
                            code,
                            label: lang.t(&format!("field_access.{code}")),
                            selected: current == *a,
                        })
                        .collect(),
                }
            })
        })
        .collect()
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
        fields: field_matrix(role, v.lang),
        reveal: Module::RECORDS
            .into_iter()
            .map(|m| RevealCell {
                name: format!("reveal.{m}"),
                label: v.lang.label("module", m.as_str()),
                checked: role.reveal.contains(&m),
            })
            .collect(),
        require_mfa: role.require_mfa,
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
    // Field permissions: only what differs from the default (editable) is kept.
    let mut fields: BTreeMap<Module, BTreeMap<String, FieldAccess>> = BTreeMap::new();
    for m in Module::RECORDS {
        for f in crm_domain::schema(m).map(|s| s.fields).unwrap_or(&[]) {
            let Some(code) = form.get(&format!("field.{m}.{}", f.name)) else { continue };
            let Some((access, _)) = FIELD_ACCESS.iter().find(|(_, c)| c == code) else {
                return PageError::new(StatusCode::BAD_REQUEST, "error.bad_request", v.lang).into_response();
            };
            if *access != FieldAccess::Editable {
                fields.entry(m).or_default().insert(f.name.to_string(), *access);
            }
        }
    }
    role.fields = fields;
    role.reveal = Module::RECORDS.into_iter().filter(|m| form.contains_key(&format!("reveal.{m}"))).collect();
    role.require_mfa = form.contains_key("require_mfa");
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

// ---------------------------------------------------------------------------------------------------------------
// Creating users

#[derive(Deserialize)]
pub struct NewUserForm {
    username: String,
    display_name: String,
    #[serde(default)]
    email: String,
    password: String,
    department: i64,
    role: i64,
}

/// Creates a user through `Scoped::admin_create_user` (departments within the administrator's scope, roles they
/// cover; the password policy applies; the user changes the password at first sign-in).
pub async fn create_user(
    State(state): State<AppState>,
    ViewerForm { viewer: v, form }: ViewerForm<NewUserForm>,
) -> Response {
    let user = crm_store::NewUser {
        username: form.username.trim().to_string(),
        display_name: form.display_name.trim().to_string(),
        email: Some(form.email.trim().to_string()).filter(|e| !e.is_empty()),
        password: form.password,
        manager: None,
        departments: vec![form.department],
        roles: vec![form.role],
        must_change_password: true,
    };
    match state.store.scoped(v.principal().clone()).admin_create_user(user).await {
        Ok(_) => Redirect::to("/app/admin/users?done=1").into_response(),
        Err(e) => PageError::from_store(e, v.lang).into_response(),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Department tree

pub struct DepartmentRow {
    pub id: i64,
    pub name: String,
    /// Depth in the tree, for indentation.
    pub depth: usize,
    pub indent: String,
}

#[derive(Template)]
#[template(path = "admin_departments.html")]
struct DepartmentsPage {
    chrome: Chrome,
    departments: Vec<DepartmentRow>,
    can_edit: bool,
}

/// The tree in depth-first order.
fn tree(all: &[crm_store::DepartmentSummary]) -> Vec<DepartmentRow> {
    fn visit(all: &[crm_store::DepartmentSummary], parent: Option<i64>, depth: usize, out: &mut Vec<DepartmentRow>) {
        for d in all.iter().filter(|d| d.parent_id == parent) {
            // Guards against a cycle in bad data: a department is listed once.
            if out.iter().any(|r| r.id == d.id) || depth > 32 {
                continue;
            }
            out.push(DepartmentRow { id: d.id, name: d.name.clone(), depth, indent: "　".repeat(depth) });
            visit(all, Some(d.id), depth + 1, out);
        }
    }
    let mut out = Vec::new();
    let ids: std::collections::BTreeSet<i64> = all.iter().map(|d| d.id).collect();
    // Roots: no parent, or a parent outside the viewer's scope (a delegated administrator's subtree).
    let roots: Vec<Option<i64>> = all
        .iter()
        .filter(|d| d.parent_id.is_none_or(|p| !ids.contains(&p)))
        .map(|d| d.parent_id)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    for root in roots {
        visit(all, root, 0, &mut out);
    }
    out
}

pub async fn departments(State(state): State<AppState>, v: Viewer) -> Response {
    match state.store.scoped(v.principal().clone()).admin_departments().await {
        Ok(all) => render(&DepartmentsPage {
            chrome: v.chrome("admin.department_tree", "/app/admin/departments"),
            departments: tree(&all),
            can_edit: v.can(Module::Users, Action::Edit),
        }),
        Err(e) => PageError::from_store(e, v.lang).into_response(),
    }
}

#[derive(Deserialize)]
pub struct NewDepartmentForm {
    parent: i64,
    name: String,
}

pub async fn create_department(
    State(state): State<AppState>,
    ViewerForm { viewer: v, form }: ViewerForm<NewDepartmentForm>,
) -> Response {
    match state.store.scoped(v.principal().clone()).admin_create_department(form.parent, form.name.trim()).await {
        Ok(_) => Redirect::to("/app/admin/departments").into_response(),
        Err(e) => PageError::from_store(e, v.lang).into_response(),
    }
}

#[derive(Deserialize)]
pub struct MoveDepartmentForm {
    department: i64,
    parent: i64,
}

/// Moves a department (with its subtree and people) under another; the store refuses cycles and departments outside
/// the administrator's scope. Access follows at the next request (the policy version moves).
pub async fn move_department(
    State(state): State<AppState>,
    ViewerForm { viewer: v, form }: ViewerForm<MoveDepartmentForm>,
) -> Response {
    match state.store.scoped(v.principal().clone()).admin_move_department(form.department, form.parent).await {
        Ok(()) => Redirect::to("/app/admin/departments").into_response(),
        Err(e) => PageError::from_store(e, v.lang).into_response(),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Data access settings overview (read-only)

pub struct RuleRow {
    pub name: String,
    pub module: String,
    pub detail: String,
}

pub struct FieldRow {
    pub role: String,
    pub module: String,
    pub field: String,
    pub access: String,
}

#[derive(Template)]
#[template(path = "admin_policy.html")]
struct PolicyPage {
    chrome: Chrome,
    defaults: Vec<DefaultCell>,
    can_edit: bool,
    saved: bool,
    sections: Vec<RuleSection>,
    fields: Vec<FieldRow>,
}

/// One list of rules on the overview (partition grants, sharing rules, …).
pub struct RuleSection {
    pub title: &'static str,
    pub id: &'static str,
    pub rows: Vec<RuleRow>,
}

/// A policy element as compact text (grantees, criteria): the configuration's own words.
fn compact<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// Organization-wide defaults in the order of their choices, with their codes.
const DEFAULTS: [(crm_policy::OrgDefault, &str); 4] = [
    (crm_policy::OrgDefault::Private, "private"),
    (crm_policy::OrgDefault::PublicRead, "public_read"),
    (crm_policy::OrgDefault::PublicReadWrite, "public_read_write"),
    (crm_policy::OrgDefault::ControlledByParent, "controlled_by_parent"),
];

/// One module's organization-wide default (数据共享默认设置) on the overview's form.
pub struct DefaultCell {
    pub name: String,
    pub label: String,
    pub choices: Vec<ScopeChoice>,
}

pub async fn policy_overview(State(state): State<AppState>, v: Viewer, Query(d): Query<Done>) -> Response {
    let (policy, _) = match state.store.scoped(v.principal().clone()).admin_policy().await {
        Ok(x) => x,
        Err(e) => return PageError::from_store(e, v.lang).into_response(),
    };
    let l = v.lang;
    render(&PolicyPage {
        chrome: v.chrome("admin.policy", "/app/admin/policy"),
        defaults: Module::RECORDS
            .into_iter()
            .map(|m| {
                let current = policy.defaults.get(&m).copied().unwrap_or_default();
                DefaultCell {
                    name: format!("default.{m}"),
                    label: l.label("module", m.as_str()),
                    choices: DEFAULTS
                        .iter()
                        .map(|(x, code)| ScopeChoice {
                            code,
                            label: l.t(&format!("default.{code}")),
                            selected: *x == current,
                        })
                        .collect(),
                }
            })
            .collect(),
        can_edit: v.can(Module::Sharing, Action::Edit),
        saved: d.done == "1",
        sections: vec![
            RuleSection { title: l.t("admin.partitions"), id: "partitions", rows: partitions(&policy, l) },
            RuleSection { title: l.t("admin.sharing_rules"), id: "sharing-rules", rows: sharing(&policy, l) },
            RuleSection {
                title: l.t("admin.restriction_rules"),
                id: "restriction-rules",
                rows: restrictions(&policy, l),
            },
            RuleSection { title: l.t("admin.groups"), id: "groups", rows: groups(&policy) },
        ],
        fields: field_rows(&policy, l),
    })
}

fn partitions(policy: &crm_policy::PolicyConfig, l: Lang) -> Vec<RuleRow> {
    let module = |m: &Module| l.label("module", m.as_str());
    policy
        .partition_grants
        .iter()
        .map(|g| RuleRow {
            name: compact(&g.grantee),
            module: g.modules.iter().map(module).collect::<Vec<_>>().join(", "),
            detail: format!("{} · {}", compact(&g.partitions), l.t(&format!("level.{}", g.level.as_str()))),
        })
        .collect()
}

fn sharing(policy: &crm_policy::PolicyConfig, l: Lang) -> Vec<RuleRow> {
    let module = |m: &Module| l.label("module", m.as_str());
    policy
        .sharing_rules
        .iter()
        .map(|r| RuleRow {
            name: r.name.clone(),
            module: module(&r.module),
            detail: format!(
                "{} → {} · {}",
                compact(&r.source),
                compact(&r.share_with),
                l.t(&format!("level.{}", r.level.as_str()))
            ),
        })
        .collect()
}

fn restrictions(policy: &crm_policy::PolicyConfig, l: Lang) -> Vec<RuleRow> {
    let module = |m: &Module| l.label("module", m.as_str());
    policy
        .restriction_rules
        .iter()
        .map(|r| RuleRow {
            name: r.name.clone(),
            module: module(&r.module),
            detail: format!("{} · {}", compact(&r.applies_to), compact(&r.criteria)),
        })
        .collect()
}

fn groups(policy: &crm_policy::PolicyConfig) -> Vec<RuleRow> {
    policy
        .groups
        .iter()
        .map(|g| RuleRow {
            name: g.name.clone(),
            module: String::new(),
            detail: format!("users {:?} · departments {:?}", g.users, g.departments),
        })
        .collect()
}

fn field_rows(policy: &crm_policy::PolicyConfig, l: Lang) -> Vec<FieldRow> {
    policy
        .roles
        .iter()
        .flat_map(|r| {
            r.fields.iter().flat_map(move |(m, fields)| {
                fields.iter().map(move |(f, a)| FieldRow {
                    role: r.name.clone(),
                    module: l.label("module", m.as_str()),
                    field: l.label("field", f),
                    access: l.label("field_access", &compact(a).replace('"', "")),
                })
            })
        })
        .collect()
}

/// Saves the organization-wide defaults through `Scoped::admin_set_policy` (needs `sharing: edit` and modify-all).
pub async fn save_defaults(
    State(state): State<AppState>,
    ViewerForm { viewer: v, form }: ViewerForm<BTreeMap<String, String>>,
) -> Response {
    let scoped = state.store.scoped(v.principal().clone());
    let (mut policy, _) = match scoped.admin_policy().await {
        Ok(x) => x,
        Err(e) => return PageError::from_store(e, v.lang).into_response(),
    };
    for m in Module::RECORDS {
        let Some(code) = form.get(&format!("default.{m}")) else { continue };
        let Some((d, _)) = DEFAULTS.iter().find(|(_, c)| c == code) else {
            return PageError::new(StatusCode::BAD_REQUEST, "error.bad_request", v.lang).into_response();
        };
        if *d == crm_policy::OrgDefault::Private {
            policy.defaults.remove(&m);
        } else {
            policy.defaults.insert(m, *d);
        }
    }
    match scoped.admin_set_policy(&policy, false).await {
        Ok(_) => Redirect::to("/app/admin/policy?done=1").into_response(),
        Err(e) => PageError::from_store(e, v.lang).into_response(),
    }
}
