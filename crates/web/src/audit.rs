//! The audit trail viewer: the events the viewer may see (`Scoped::audit_query`, the audit API's path: their
//! `audit` scope, hidden fields removed, masked ones masked), with filters, older pages, and the chain's
//! verification status on request.

use crate::error::{PageError, render};
use crate::viewer::{Chrome, PagePath, Viewer};
use askama::Template;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use crm_api::AppState;
use crm_domain::{Action, Module};
use crm_store::{AuditQuery, VerifyOptions};
use serde::Deserialize;

#[derive(Deserialize, Default)]
pub struct AuditParams {
    #[serde(default)]
    actor: String,
    #[serde(default)]
    module: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    outcome: String,
    #[serde(default)]
    after: String,
    /// `1`: verify the chain.
    #[serde(default)]
    verify: String,
}

pub struct EventRow {
    pub seq: i64,
    pub time: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    pub detail: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    chrome: Chrome,
    actor: String,
    module: String,
    action: String,
    outcome: String,
    events: Vec<EventRow>,
    older_href: Option<String>,
    verified: Option<Result<String, String>>,
}

pub async fn page(
    State(state): State<AppState>,
    v: Viewer,
    Query(p): Query<AuditParams>,
    PagePath(path): PagePath,
) -> Response {
    let q = AuditQuery {
        actor: p.actor.trim().parse().ok(),
        module: Some(p.module.trim().to_string()).filter(|s| !s.is_empty()),
        action: Some(p.action.trim().to_string()).filter(|s| !s.is_empty()),
        outcome: Some(p.outcome.trim().to_string()).filter(|s| !s.is_empty()),
        after: Some(p.after.clone()).filter(|s| !s.is_empty()),
        limit: Some(50),
        ..Default::default()
    };
    let page = match state.store.scoped(v.principal().clone()).audit_query(&q).await {
        Ok(page) => page,
        Err(e) => return PageError::from_store(e, v.lang).into_response(),
    };
    // Verification reads the whole chain, so only on request, and only for viewers of the audit module (the
    // report names sequence numbers, never entries).
    let verified = if p.verify == "1" && v.can(Module::Audit, Action::View) {
        let options = VerifyOptions { keys: None, progress: None, start: None };
        match state.store.unscoped_system_access().verify_audit_trail(v.principal().org, &options).await {
            Ok(report) => Some(match &report.problem {
                None => Ok(v.lang.t("audit.verified_ok").replace("{n}", &v.lang.number(report.entries as i64))),
                Some(problem) => Err(problem.message()),
            }),
            Err(e) => return PageError::from_store(e, v.lang).into_response(),
        }
    } else {
        None
    };
    // Actors by username when the viewer may list users (ids otherwise: the audit view does not widen user access).
    let names: std::collections::BTreeMap<i64, String> = if v.can(Module::Users, Action::View) {
        match state.store.scoped(v.principal().clone()).admin_users().await {
            Ok(users) => users.into_iter().map(|u| (u.id, u.username)).collect(),
            Err(_) => Default::default(),
        }
    } else {
        Default::default()
    };
    let events = page
        .items
        .iter()
        .map(|e| EventRow {
            seq: e.seq,
            time: v.datetime(e.at),
            actor: e.actor_id.map(|a| names.get(&a).cloned().unwrap_or_else(|| format!("#{a}"))).unwrap_or_default(),
            action: e.action.clone(),
            target: match (&e.module, e.record_id) {
                (Some(m), Some(id)) => format!("{} #{id}", v.lang.label("module", m)),
                (Some(m), None) => v.lang.label("module", m),
                _ => e.target.clone().unwrap_or_default(),
            },
            outcome: v.lang.label("result", &e.outcome),
            detail: if e.detail.is_null() { String::new() } else { e.detail.to_string().chars().take(300).collect() },
        })
        .collect();
    let older_href = page.next_cursor.as_deref().map(|c| {
        let mut s = form_urlencoded::Serializer::new(String::new());
        for (k, val) in [("actor", &p.actor), ("module", &p.module), ("action", &p.action), ("outcome", &p.outcome)] {
            if !val.is_empty() {
                s.append_pair(k, val);
            }
        }
        s.append_pair("after", c);
        format!("/app/audit?{}", s.finish())
    });
    render(&AuditPage {
        chrome: v.chrome("audit.title", &path),
        actor: p.actor,
        module: p.module,
        action: p.action,
        outcome: p.outcome,
        events,
        older_href,
        verified,
    })
}
