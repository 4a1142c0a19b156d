//! The alerts dashboard (告警, issue #7): the monitoring alerts the viewer may see (`Scoped::alerts`, the same path
//! as `GET /api/v1/alerts`: subjects within the viewer's audit view scope, a module they cannot view not named),
//! with filters, each alert's detail exactly as the store returns it, the lifecycle as CSRF-checked forms
//! (acknowledge, resolve with a required note, assign), and a live feed (`static/alerts.js` subscribes to
//! `GET /api/v1/alerts/stream` with the session cookie and prepends new alerts, built with `textContent`).
//! A viewer without the audit module gets the not-found page, as for a page that does not exist.

use crate::error::{PageError, render};
use crate::i18n::Lang;
use crate::viewer::{Chrome, PagePath, Viewer, ViewerForm};
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use crm_api::AppState;
use crm_domain::{Action, Module, UserId};
use crm_store::{Alert, AlertQuery, RULE_NAMES, Scoped};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

const STATUSES: [&str; 3] = ["open", "acknowledged", "resolved"];
const SEVERITIES: [&str; 4] = ["low", "medium", "high", "critical"];

#[derive(Deserialize, Default)]
pub struct AlertParams {
    #[serde(default)]
    status: String,
    #[serde(default)]
    rule: String,
    /// A username or a user id.
    #[serde(default)]
    subject: String,
    #[serde(default)]
    after: String,
}

/// An option of a filter's select.
pub struct Choice {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

pub struct AlertRow {
    pub id: i64,
    pub time: String,
    pub rule: String,
    pub severity: String,
    pub severity_code: String,
    pub subject: String,
    pub status: String,
    pub status_code: String,
    pub assignee: String,
}

/// A label the live feed's script needs (`data-k` → text), rendered as hidden elements: no inline script.
pub struct FeedLabel {
    pub key: String,
    pub text: String,
}

#[derive(Template)]
#[template(path = "alerts.html")]
struct AlertsPage {
    chrome: Chrome,
    statuses: Vec<Choice>,
    rules: Vec<Choice>,
    subject: String,
    /// The filters as the live feed applies them to new alerts.
    filter_status: String,
    filter_rule: String,
    filter_subject: String,
    /// The organization's time zone, for the times of live rows.
    time_zone: String,
    alerts: Vec<AlertRow>,
    older_href: Option<String>,
    labels: Vec<FeedLabel>,
}

pub struct DetailItem {
    pub key: String,
    pub label: String,
    pub value: String,
}

#[derive(Template)]
#[template(path = "alert.html")]
struct AlertPage {
    chrome: Chrome,
    alert: AlertRow,
    subject_key: String,
    trigger: String,
    updated: String,
    note: String,
    details: Vec<DetailItem>,
    can_acknowledge: bool,
    can_resolve: bool,
    /// Users the alert may be assigned to (those the viewer may list), or empty: then an id field.
    assignees: Vec<Choice>,
}

/// Usernames of the users the viewer may list (ids are shown otherwise: alerts do not widen user access).
async fn user_names(scoped: &Scoped<'_>, v: &Viewer) -> BTreeMap<UserId, String> {
    if !v.can(Module::Users, Action::View) {
        return BTreeMap::new();
    }
    match scoped.admin_users().await {
        Ok(users) => users.into_iter().filter(|u| u.status == "active").map(|u| (u.id, u.username)).collect(),
        Err(_) => BTreeMap::new(),
    }
}

fn name_of(names: &BTreeMap<UserId, String>, id: Option<UserId>) -> String {
    id.map(|u| names.get(&u).cloned().unwrap_or_else(|| format!("#{u}"))).unwrap_or_default()
}

fn row(a: &Alert, v: &Viewer, names: &BTreeMap<UserId, String>) -> AlertRow {
    let lang = v.lang;
    AlertRow {
        id: a.id,
        time: v.datetime(a.created_at),
        rule: lang.label("alert_rule", &a.rule),
        severity: lang.label("alert_severity", &a.severity),
        severity_code: a.severity.clone(),
        subject: match a.subject_id {
            Some(_) => name_of(names, a.subject_id),
            None => a.subject_key.strip_prefix("ip:").unwrap_or(&a.subject_key).to_string(),
        },
        status: lang.label("alert_status", &a.status),
        status_code: a.status.clone(),
        assignee: name_of(names, a.assignee_id),
    }
}

/// A detail value as text: strings as they are, `null` (e.g. a module the viewer may not view) as a dash.
fn value_text(v: &Value, lang: Lang) -> String {
    match v {
        Value::Null => "—".into(),
        Value::String(s) => s.clone(),
        Value::Number(n) => n.as_i64().map(|i| lang.number(i)).unwrap_or_else(|| n.to_string()),
        Value::Bool(b) => lang.t(if *b { "alerts.yes" } else { "alerts.no" }).into(),
        Value::Array(items) => items.iter().map(|i| value_text(i, lang)).collect::<Vec<_>>().join(", "),
        Value::Object(_) => v.to_string(),
    }
}

pub async fn list(
    State(state): State<AppState>,
    v: Viewer,
    Query(p): Query<AlertParams>,
    PagePath(path): PagePath,
) -> Response {
    let scoped = state.store.scoped(v.principal().clone());
    if let Err(e) = scoped.alert_viewer() {
        return PageError::from_store(e, v.lang).into_response();
    }
    let names = user_names(&scoped, &v).await;
    let status = p.status.trim();
    let rule = p.rule.trim();
    let subject_text = p.subject.trim();
    let subject = if subject_text.is_empty() {
        None
    } else {
        match subject_text
            .parse::<UserId>()
            .ok()
            .or_else(|| names.iter().find(|(_, n)| n.as_str() == subject_text).map(|(id, _)| *id))
        {
            Some(id) => Some(id),
            None => {
                return PageError::new(StatusCode::UNPROCESSABLE_ENTITY, "share.unknown_user", v.lang)
                    .with_detail(subject_text.to_string())
                    .into_response();
            }
        }
    };
    let q = AlertQuery {
        status: Some(status.to_string()).filter(|s| STATUSES.contains(&s.as_str())),
        rule: Some(rule.to_string()).filter(|r| RULE_NAMES.contains(&r.as_str())),
        subject,
        after: Some(p.after.clone()).filter(|s| !s.is_empty()),
        limit: Some(50),
        ..Default::default()
    };
    let page = match scoped.alerts(&q).await {
        Ok(page) => page,
        Err(e) => return PageError::from_store(e, v.lang).into_response(),
    };
    let lang = v.lang;
    let alerts = page.items.iter().map(|a| row(a, &v, &names)).collect();
    let older_href = page.next_cursor.as_deref().map(|c| {
        let mut s = form_urlencoded::Serializer::new(String::new());
        for (k, val) in [("status", &p.status), ("rule", &p.rule), ("subject", &p.subject)] {
            if !val.is_empty() {
                s.append_pair(k, val);
            }
        }
        s.append_pair("after", c);
        format!("/app/alerts?{}", s.finish())
    });
    let mut labels = Vec::new();
    for r in RULE_NAMES {
        labels.push(FeedLabel { key: format!("rule.{r}"), text: lang.label("alert_rule", r) });
    }
    for s in SEVERITIES {
        labels.push(FeedLabel { key: format!("severity.{s}"), text: lang.label("alert_severity", s) });
    }
    for s in STATUSES {
        labels.push(FeedLabel { key: format!("status.{s}"), text: lang.label("alert_status", s) });
    }
    for (id, n) in &names {
        labels.push(FeedLabel { key: format!("user.{id}"), text: n.clone() });
    }
    for k in ["alerts.live_on", "alerts.live_off", "alerts.live_lagged"] {
        labels.push(FeedLabel { key: k.into(), text: lang.t(k).into() });
    }
    render(&AlertsPage {
        chrome: v.chrome("alerts.title", &path),
        statuses: STATUSES
            .iter()
            .map(|s| Choice { value: s.to_string(), label: lang.label("alert_status", s), selected: *s == status })
            .collect(),
        rules: RULE_NAMES
            .iter()
            .map(|r| Choice { value: r.to_string(), label: lang.label("alert_rule", r), selected: *r == rule })
            .collect(),
        subject: subject_text.to_string(),
        filter_status: q.status.clone().unwrap_or_default(),
        filter_rule: q.rule.clone().unwrap_or_default(),
        filter_subject: subject.map(|s| s.to_string()).unwrap_or_default(),
        time_zone: v.session.time_zone.clone(),
        alerts,
        older_href,
        labels,
    })
}

pub async fn show(State(state): State<AppState>, v: Viewer, Path(id): Path<i64>, PagePath(path): PagePath) -> Response {
    let scoped = state.store.scoped(v.principal().clone());
    let a = match scoped.alert(id).await {
        Ok(a) => a,
        Err(e) => return PageError::from_store(e, v.lang).into_response(),
    };
    let names = user_names(&scoped, &v).await;
    let lang = v.lang;
    let details = match &a.detail {
        Value::Object(map) => map
            .iter()
            .map(|(k, val)| DetailItem {
                key: k.clone(),
                label: lang.label("alert_detail", k),
                value: if k == "module" {
                    val.as_str().map(|m| lang.label("module", m)).unwrap_or_else(|| value_text(val, lang))
                } else {
                    value_text(val, lang)
                },
            })
            .collect(),
        Value::Null => Vec::new(),
        other => {
            vec![DetailItem { key: "detail".into(), label: lang.t("audit.detail").into(), value: other.to_string() }]
        }
    };
    let assignees = names
        .iter()
        .map(|(id, n)| Choice { value: id.to_string(), label: n.clone(), selected: a.assignee_id == Some(*id) })
        .collect();
    render(&AlertPage {
        chrome: v.chrome("alerts.detail_title", &path),
        alert: row(&a, &v, &names),
        subject_key: a.subject_key.clone(),
        trigger: v.datetime(a.trigger_at),
        updated: v.datetime(a.updated_at),
        note: a.resolution_note.clone().unwrap_or_default(),
        details,
        can_acknowledge: a.status == "open",
        can_resolve: a.status != "resolved",
        assignees,
    })
}

#[derive(Deserialize)]
pub struct CsrfOnly {}

pub async fn acknowledge(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    ViewerForm { viewer: v, form: CsrfOnly {} }: ViewerForm<CsrfOnly>,
) -> Response {
    match state.store.scoped(v.principal().clone()).alert_acknowledge(id).await {
        Ok(_) => Redirect::to(&format!("/app/alerts/{id}")).into_response(),
        Err(e) => PageError::from_store(e, v.lang).into_response(),
    }
}

#[derive(Deserialize)]
pub struct ResolveForm {
    #[serde(default)]
    note: String,
}

pub async fn resolve(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    ViewerForm { viewer: v, form }: ViewerForm<ResolveForm>,
) -> Response {
    if form.note.trim().is_empty() {
        return PageError::new(StatusCode::UNPROCESSABLE_ENTITY, "alerts.note_required", v.lang).into_response();
    }
    match state.store.scoped(v.principal().clone()).alert_resolve(id, &form.note).await {
        Ok(_) => Redirect::to(&format!("/app/alerts/{id}")).into_response(),
        Err(e) => PageError::from_store(e, v.lang).into_response(),
    }
}

#[derive(Deserialize)]
pub struct AssignForm {
    /// A user id; empty unassigns.
    #[serde(default)]
    assignee: String,
}

pub async fn assign(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    ViewerForm { viewer: v, form }: ViewerForm<AssignForm>,
) -> Response {
    let text = form.assignee.trim();
    let assignee = if text.is_empty() {
        None
    } else {
        match text.trim_start_matches('#').parse::<UserId>() {
            Ok(u) => Some(u),
            Err(_) => {
                return PageError::new(StatusCode::UNPROCESSABLE_ENTITY, "share.unknown_user", v.lang)
                    .with_detail(text.to_string())
                    .into_response();
            }
        }
    };
    match state.store.scoped(v.principal().clone()).alert_assign(id, assignee).await {
        Ok(_) => Redirect::to(&format!("/app/alerts/{id}")).into_response(),
        Err(e) => PageError::from_store(e, v.lang).into_response(),
    }
}
