//! Partition grants (数据分区授权): extra read or read/write access to every record of some modules whose
//! partition fields (区域, 客户类型, 业务线, …) hold given values, for a user, role or group. Added and removed
//! through `Scoped::admin_set_policy`, which validates dimensions and values.

use crate::error::{PageError, render};
use crate::viewer::{Chrome, Viewer, ViewerForm};
use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use crm_api::AppState;
use crm_domain::{Action, Level, Module};
use crm_policy::{Grantee, PartitionGrant, PolicyConfig};
use serde::Deserialize;
use std::collections::BTreeMap;

pub struct GrantRow {
    pub id: i64,
    pub grantee: String,
    pub modules: String,
    pub partitions: String,
    pub level: String,
}

pub struct Choice {
    pub value: String,
    pub label: String,
}

#[derive(Template)]
#[template(path = "admin_partitions.html")]
struct PartitionsPage {
    chrome: Chrome,
    grants: Vec<GrantRow>,
    grantees: Vec<Choice>,
    dimensions: Vec<Choice>,
    modules: Vec<Choice>,
    can_edit: bool,
}

fn grantee_label(g: &Grantee, policy: &PolicyConfig, users: &BTreeMap<i64, String>) -> String {
    match g {
        Grantee::User { id } => users.get(id).cloned().unwrap_or_else(|| format!("#{id}")),
        Grantee::Role { id } => policy.role(*id).map(|r| r.name.clone()).unwrap_or_else(|| format!("#{id}")),
        Grantee::Group { id } => {
            policy.groups.iter().find(|x| x.id == *id).map(|x| x.name.clone()).unwrap_or_else(|| format!("#{id}"))
        }
        Grantee::Department { id, .. } => format!("#{id}"),
    }
}

pub async fn page(State(state): State<AppState>, v: Viewer) -> Response {
    let (policy, _) = match state.store.scoped(v.principal().clone()).admin_policy().await {
        Ok(x) => x,
        Err(e) => return PageError::from_store(e, v.lang).into_response(),
    };
    let users: BTreeMap<i64, String> = match state.store.unscoped_system_access().user_ids(v.principal().org).await {
        Ok(u) => u.into_iter().map(|(name, id)| (id, name)).collect(),
        Err(e) => return PageError::from_store(e, v.lang).into_response(),
    };
    let l = v.lang;
    let mut grantees: Vec<Choice> = users
        .iter()
        .map(|(id, name)| Choice { value: format!("user:{id}"), label: format!("{}: {name}", l.t("admin.user_id")) })
        .collect();
    grantees.extend(
        policy
            .roles
            .iter()
            .map(|r| Choice { value: format!("role:{}", r.id), label: format!("{}: {}", l.t("admin.role"), r.name) }),
    );
    grantees.extend(
        policy.groups.iter().map(|g| Choice {
            value: format!("group:{}", g.id),
            label: format!("{}: {}", l.t("admin.groups"), g.name),
        }),
    );
    render(&PartitionsPage {
        chrome: v.chrome("admin.partitions", "/app/admin/partitions"),
        grants: policy
            .partition_grants
            .iter()
            .map(|g| GrantRow {
                id: g.id,
                grantee: grantee_label(&g.grantee, &policy, &users),
                modules: g.modules.iter().map(|m| l.label("module", m.as_str())).collect::<Vec<_>>().join(", "),
                partitions: g
                    .partitions
                    .iter()
                    .map(|(k, vals)| format!("{} ∈ {}", l.label("field", k), vals.join(", ")))
                    .collect::<Vec<_>>()
                    .join(" ∧ "),
                level: l.t(&format!("level.{}", g.level.as_str())).to_string(),
            })
            .collect(),
        grantees,
        dimensions: policy.dimensions.iter().map(|d| Choice { value: d.key.clone(), label: d.label.clone() }).collect(),
        modules: Module::RECORDS
            .into_iter()
            .map(|m| Choice { value: m.as_str().into(), label: l.label("module", m.as_str()) })
            .collect(),
        can_edit: v.can(Module::Sharing, Action::Edit),
    })
}

fn grantee(code: &str) -> Option<Grantee> {
    let (kind, id) = code.split_once(':')?;
    let id = id.parse().ok()?;
    match kind {
        "user" => Some(Grantee::User { id }),
        "role" => Some(Grantee::Role { id }),
        "group" => Some(Grantee::Group { id }),
        _ => None,
    }
}

async fn apply(state: &AppState, v: &Viewer, policy: &PolicyConfig) -> Response {
    match state.store.scoped(v.principal().clone()).admin_set_policy(policy, false).await {
        Ok(_) => Redirect::to("/app/admin/partitions").into_response(),
        Err(e) => PageError::from_store(e, v.lang).into_response(),
    }
}

/// Adds a grant: grantee, modules (checkboxes `module.<name>`), one dimension with comma-separated values, level.
pub async fn create(
    State(state): State<AppState>,
    ViewerForm { viewer: v, form }: ViewerForm<BTreeMap<String, String>>,
) -> Response {
    let bad = || PageError::new(StatusCode::BAD_REQUEST, "error.bad_request", v.lang).into_response();
    let get = |k: &str| form.get(k).map(|s| s.trim()).unwrap_or("");
    let Some(who) = grantee(get("grantee")) else { return bad() };
    let Ok(level) = get("level").parse::<Level>() else { return bad() };
    let modules: Vec<Module> =
        Module::RECORDS.into_iter().filter(|m| form.contains_key(&format!("module.{m}"))).collect();
    let values: Vec<String> =
        get("values").split([',', '，']).map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect();
    if get("dimension").is_empty() || values.is_empty() {
        return bad();
    }
    let scoped = state.store.scoped(v.principal().clone());
    let (mut policy, _) = match scoped.admin_policy().await {
        Ok(x) => x,
        Err(e) => return PageError::from_store(e, v.lang).into_response(),
    };
    let id = policy.partition_grants.iter().map(|g| g.id).max().unwrap_or(0) + 1;
    let partitions = BTreeMap::from([(get("dimension").to_string(), values)]);
    policy.partition_grants.push(PartitionGrant { id, grantee: who, modules, partitions, level });
    apply(&state, &v, &policy).await
}

#[derive(Deserialize)]
pub struct CsrfOnly {}

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
    policy.partition_grants.retain(|g| g.id != id);
    apply(&state, &v, &policy).await
}
