//! Sharing and restriction rule editors (共享规则, 限制规则) with a criteria builder: up to three conditions, all of
//! which a record must meet. A new rule, or a removal, replaces the policy through `Scoped::admin_set_policy`,
//! which validates it (fields of the module, comparable kinds), needs `sharing: edit` with modify-all, bumps the
//! policy version and audits the change; it holds at every user's next request.

use crate::admin::ScopeChoice;
use crate::error::{PageError, render};
use crate::i18n::Lang;
use crate::viewer::{Chrome, Viewer, ViewerForm};
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use crm_api::AppState;
use crm_domain::{Action, Level, Module, schema};
use crm_policy::{CmpOp, Criterion, Grantee, PolicyConfig, RestrictionRule, RuleSource, SharingRule};
use serde::Deserialize;
use std::collections::BTreeMap;

/// Comparison operators offered by the builder, with their codes.
const OPS: [(&str, &str); 8] =
    [("eq", "="), ("ne", "≠"), ("in", "∈"), ("not_in", "∉"), ("gt", ">"), ("gte", "≥"), ("lt", "<"), ("lte", "≤")];
/// Conditions a new rule may have.
const CRITERIA_ROWS: usize = 3;

pub struct RuleLine {
    pub kind: &'static str,
    pub id: i64,
    pub name: String,
    pub module: String,
    pub detail: String,
}

pub struct Choice {
    pub value: String,
    pub label: String,
}

#[derive(Template)]
#[template(path = "admin_rules.html")]
struct RulesPage {
    chrome: Chrome,
    rules: Vec<RuleLine>,
    modules: Vec<Choice>,
    fields: Vec<Choice>,
    ops: Vec<ScopeChoice>,
    grantees: Vec<Choice>,
    rows: Vec<usize>,
    can_edit: bool,
    saved: bool,
}

fn criteria_text(criteria: &[Criterion], lang: Lang) -> String {
    criteria
        .iter()
        .map(|c| {
            let op = OPS.iter().find(|(code, _)| serde_json::to_value(c.op).ok() == Some((*code).into()));
            format!("{} {} {}", lang.label("field", &c.field), op.map(|(_, s)| *s).unwrap_or("?"), c.value)
        })
        .collect::<Vec<_>>()
        .join(" ∧ ")
}

fn grantee_text(g: &Grantee, policy: &PolicyConfig) -> String {
    match g {
        Grantee::Role { id } => policy.role(*id).map(|r| r.name.clone()).unwrap_or_else(|| format!("role #{id}")),
        Grantee::Group { id } => {
            policy.groups.iter().find(|x| x.id == *id).map(|x| x.name.clone()).unwrap_or_else(|| format!("group #{id}"))
        }
        Grantee::User { id } => format!("user #{id}"),
        Grantee::Department { id, .. } => format!("department #{id}"),
    }
}

#[derive(Deserialize, Default)]
pub struct Done {
    #[serde(default)]
    done: String,
}

pub async fn page(State(state): State<AppState>, v: Viewer, Query(d): Query<Done>) -> Response {
    let (policy, _) = match state.store.scoped(v.principal().clone()).admin_policy().await {
        Ok(x) => x,
        Err(e) => return PageError::from_store(e, v.lang).into_response(),
    };
    let l = v.lang;
    let mut rules: Vec<RuleLine> = policy
        .sharing_rules
        .iter()
        .map(|r| RuleLine {
            kind: "sharing",
            id: r.id,
            name: r.name.clone(),
            module: l.label("module", r.module.as_str()),
            detail: format!(
                "{} → {} · {}",
                match &r.source {
                    RuleSource::Criteria { criteria } => criteria_text(criteria, l),
                    RuleSource::OwnedBy { owners } => grantee_text(owners, &policy),
                },
                grantee_text(&r.share_with, &policy),
                l.t(&format!("level.{}", r.level.as_str()))
            ),
        })
        .collect();
    rules.extend(policy.restriction_rules.iter().map(|r| RuleLine {
        kind: "restriction",
        id: r.id,
        name: r.name.clone(),
        module: l.label("module", r.module.as_str()),
        detail: format!("{} · {}", grantee_text(&r.applies_to, &policy), criteria_text(&r.criteria, l)),
    }));
    let fields = Module::RECORDS
        .into_iter()
        .flat_map(|m| schema(m).map(|s| s.fields).unwrap_or(&[]).iter().map(move |f| (m, f.name)))
        .map(|(m, f)| Choice {
            value: f.to_string(),
            label: format!("{} · {}", l.label("module", m.as_str()), l.label("field", f)),
        })
        .collect();
    let mut grantees: Vec<Choice> = policy
        .roles
        .iter()
        .map(|r| Choice { value: format!("role:{}", r.id), label: format!("{}: {}", l.t("admin.role"), r.name) })
        .collect();
    grantees.extend(
        policy.groups.iter().map(|g| Choice {
            value: format!("group:{}", g.id),
            label: format!("{}: {}", l.t("admin.groups"), g.name),
        }),
    );
    render(&RulesPage {
        chrome: v.chrome("rules.title", "/app/admin/rules"),
        rules,
        modules: Module::RECORDS
            .into_iter()
            .map(|m| Choice { value: m.as_str().into(), label: l.label("module", m.as_str()) })
            .collect(),
        fields,
        ops: OPS.iter().map(|(code, sign)| ScopeChoice { code, label: sign, selected: false }).collect(),
        grantees,
        rows: (0..CRITERIA_ROWS).collect(),
        can_edit: v.can(Module::Sharing, Action::Edit),
        saved: d.done == "1",
    })
}

/// A condition's value: numbers for whole-number fields, lists for `in`/`not_in` (comma-separated), text otherwise.
fn criterion(module: Module, field: &str, op: &str, value: &str) -> Option<Criterion> {
    let op: CmpOp = serde_json::from_value(op.into()).ok()?;
    let integer = schema(module).and_then(|s| s.field(field)).is_some_and(|d| d.kind.is_integer());
    let one = |t: &str| -> serde_json::Value {
        match (integer, t.trim().parse::<i64>()) {
            (true, Ok(n)) => n.into(),
            _ => t.trim().into(),
        }
    };
    let value = if matches!(op, CmpOp::In | CmpOp::NotIn) {
        serde_json::Value::Array(value.split(',').map(one).collect())
    } else {
        one(value)
    };
    Some(Criterion { field: field.to_string(), op, value })
}

fn grantee(code: &str) -> Option<Grantee> {
    let (kind, id) = code.split_once(':')?;
    let id = id.parse().ok()?;
    match kind {
        "role" => Some(Grantee::Role { id }),
        "group" => Some(Grantee::Group { id }),
        _ => None,
    }
}

async fn apply(state: &AppState, v: &Viewer, policy: &PolicyConfig) -> Response {
    match state.store.scoped(v.principal().clone()).admin_set_policy(policy, false).await {
        Ok(_) => Redirect::to("/app/admin/rules?done=1").into_response(),
        Err(e) => PageError::from_store(e, v.lang).into_response(),
    }
}

/// Adds a sharing or restriction rule from the builder's form.
pub async fn create(
    State(state): State<AppState>,
    ViewerForm { viewer: v, form }: ViewerForm<BTreeMap<String, String>>,
) -> Response {
    let bad = |v: &Viewer| PageError::new(StatusCode::BAD_REQUEST, "error.bad_request", v.lang).into_response();
    let get = |k: &str| form.get(k).map(|s| s.trim()).unwrap_or("");
    let Ok(module) = get("module").parse::<Module>() else { return bad(&v) };
    let Some(who) = grantee(get("grantee")) else { return bad(&v) };
    let mut criteria = Vec::new();
    for i in 0..CRITERIA_ROWS {
        let field = get(&format!("field{i}"));
        if field.is_empty() {
            continue;
        }
        match criterion(module, field, get(&format!("op{i}")), get(&format!("value{i}"))) {
            Some(c) => criteria.push(c),
            None => return bad(&v),
        }
    }
    let (mut policy, _) = match state.store.scoped(v.principal().clone()).admin_policy().await {
        Ok(x) => x,
        Err(e) => return PageError::from_store(e, v.lang).into_response(),
    };
    let name = get("name").to_string();
    if get("kind") == "restriction" {
        let id = policy.restriction_rules.iter().map(|r| r.id).max().unwrap_or(0) + 1;
        let exempt_administrators = form.contains_key("exempt_administrators");
        policy.restriction_rules.push(RestrictionRule {
            id,
            name,
            module,
            applies_to: who,
            criteria,
            exempt_administrators,
        });
    } else {
        let Ok(level) = get("level").parse::<Level>() else { return bad(&v) };
        let id = policy.sharing_rules.iter().map(|r| r.id).max().unwrap_or(0) + 1;
        let source = RuleSource::Criteria { criteria };
        policy.sharing_rules.push(SharingRule { id, name, module, source, share_with: who, level });
    }
    apply(&state, &v, &policy).await
}

#[derive(Deserialize)]
pub struct CsrfOnly {}

/// Removes a rule.
pub async fn delete(
    State(state): State<AppState>,
    Path((kind, id)): Path<(String, i64)>,
    ViewerForm { viewer: v, form: CsrfOnly {} }: ViewerForm<CsrfOnly>,
) -> Response {
    let (mut policy, _) = match state.store.scoped(v.principal().clone()).admin_policy().await {
        Ok(x) => x,
        Err(e) => return PageError::from_store(e, v.lang).into_response(),
    };
    match kind.as_str() {
        "sharing" => policy.sharing_rules.retain(|r| r.id != id),
        "restriction" => policy.restriction_rules.retain(|r| r.id != id),
        _ => return PageError::new(StatusCode::NOT_FOUND, "error.not_found", v.lang).into_response(),
    }
    apply(&state, &v, &policy).await
}
