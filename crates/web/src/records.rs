//! The everyday pages: home (my records, my open opportunities, open tickets), module lists with search, filter,
//! sort and pagination, record pages with related lists and masked fields (revealed on request, audited), and the
//! edit form with the store's validation messages. Every read is `Store::scoped(viewer)`, the JSON API's path.

use crate::error::{PageError, render};
use crate::i18n::Lang;
use crate::view::{FieldView, format_value, list_columns, record_fields, system_value, title_field};
use crate::viewer::{Chrome, PagePath, Viewer, ViewerForm};
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use crm_api::AppState;
use crm_domain::{Action, FieldKind, Module, RecordId, schema};
use crm_policy::{CmpOp, FieldAccess};
use crm_store::{FieldFilter, ListQuery, RecordOut, Scoped, StoreError};
use serde::Deserialize;
use std::collections::BTreeMap;

/// A record in a list: its id, title and the list's columns.
pub struct Row {
    pub href: String,
    pub title: String,
    pub cells: Vec<FieldView>,
}

/// A list's column heading.
pub struct Column {
    pub name: &'static str,
    pub label: String,
}

/// The columns of `module` the viewer may read (hidden ones are not offered, so not shown).
pub(crate) fn columns(module: Module, v: &Viewer) -> Vec<Column> {
    // The title field is the row's heading (a link), not a column of its own.
    list_columns(module)
        .iter()
        .filter(|c| **c != title_field(module))
        .filter(|c| v.principal().access.field_access(module, c) != FieldAccess::Hidden)
        .map(|c| Column { name: c, label: v.lang.label("field", c) })
        .collect()
}

pub(crate) fn rows(module: Module, items: &[RecordOut], cols: &[Column], v: &Viewer) -> Vec<Row> {
    let title = title_field(module);
    items
        .iter()
        .map(|r| {
            let id = r.get("id").and_then(|x| x.as_i64()).unwrap_or_default();
            let fields = record_fields(module, r, &v.principal().access, v.lang);
            let cells = cols
                .iter()
                .map(|c| {
                    fields.iter().find(|f| f.name == c.name).map(clone_field).unwrap_or_else(|| FieldView {
                        name: c.name,
                        label: c.label.clone(),
                        value: String::new(),
                        href: None,
                        masked: false,
                        revealable: false,
                    })
                })
                .collect();
            let title = r.get(title).and_then(|x| x.as_str()).map(str::to_string).unwrap_or_else(|| format!("#{id}"));
            Row { href: format!("/app/r/{module}/{id}"), title, cells }
        })
        .collect()
}

fn clone_field(f: &FieldView) -> FieldView {
    FieldView {
        name: f.name,
        label: f.label.clone(),
        value: f.value.clone(),
        href: f.href.clone(),
        masked: f.masked,
        revealable: f.revealable,
    }
}

/// A record module named in a path; anything else is the not-found page.
pub(crate) fn record_module(name: &str, lang: Lang) -> Result<Module, PageError> {
    name.parse::<Module>()
        .ok()
        .filter(|m| m.is_record_module())
        .ok_or_else(|| PageError::new(StatusCode::NOT_FOUND, "error.not_found", lang))
}

pub(crate) fn record_id(id: &str, lang: Lang) -> Result<RecordId, PageError> {
    id.parse::<i64>()
        .ok()
        .filter(|i| *i > 0)
        .ok_or_else(|| PageError::new(StatusCode::NOT_FOUND, "error.not_found", lang))
}

// ---------------------------------------------------------------------------------------------------------------
// Home

pub struct HomeCard {
    pub module: Module,
    pub label: String,
    pub count: String,
    pub href: String,
}

pub struct HomeList {
    pub id: &'static str,
    pub title: &'static str,
    pub columns: Vec<Column>,
    pub rows: Vec<Row>,
}

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage {
    chrome: Chrome,
    cards: Vec<HomeCard>,
    lists: Vec<HomeList>,
}

fn owned_by(user: i64) -> FieldFilter {
    FieldFilter { field: "owner_id".into(), op: CmpOp::Eq, value: user.into() }
}

pub async fn home(State(state): State<AppState>, v: Viewer) -> Response {
    match home_page(&state, &v).await {
        Ok(r) => r,
        Err(e) => PageError::from_store(e, v.lang).into_response(),
    }
}

async fn home_page(state: &AppState, v: &Viewer) -> Result<Response, StoreError> {
    let scoped = state.store.scoped(v.principal().clone());
    let me = v.principal().user;
    let mut cards = Vec::new();
    for m in Module::RECORDS.into_iter().filter(|m| v.can(*m, Action::View)) {
        let q = ListQuery { filters: vec![owned_by(me)], ..Default::default() };
        let n = scoped.count(m, &q).await?;
        cards.push(HomeCard {
            module: m,
            label: v.lang.label("module", m.as_str()),
            count: v.lang.number(n),
            href: format!("/app/r/{m}?owner=me"),
        });
    }
    let mut lists = Vec::new();
    if v.can(Module::Opportunities, Action::View) {
        let q = ListQuery {
            filters: vec![
                owned_by(me),
                FieldFilter { field: "stage".into(), op: CmpOp::NotIn, value: serde_json::json!(["won", "lost"]) },
            ],
            limit: Some(10),
            ..Default::default()
        };
        let page = scoped.list(Module::Opportunities, &q).await?;
        let cols = columns(Module::Opportunities, v);
        lists.push(HomeList {
            id: "my-open-opportunities",
            title: v.lang.t("home.my_open_opportunities"),
            rows: rows(Module::Opportunities, &page.items, &cols, v),
            columns: cols,
        });
    }
    if v.can(Module::Tickets, Action::View) {
        let q = ListQuery {
            filters: vec![FieldFilter {
                field: "status".into(),
                op: CmpOp::In,
                value: serde_json::json!(["open", "pending"]),
            }],
            limit: Some(10),
            ..Default::default()
        };
        let page = scoped.list(Module::Tickets, &q).await?;
        let cols = columns(Module::Tickets, v);
        lists.push(HomeList {
            id: "open-tickets",
            title: v.lang.t("home.my_open_tickets"),
            rows: rows(Module::Tickets, &page.items, &cols, v),
            columns: cols,
        });
    }
    Ok(render(&HomePage { chrome: v.chrome("home.title", "/app"), cards, lists }))
}

// ---------------------------------------------------------------------------------------------------------------
// Lists

#[derive(Deserialize, Default)]
pub struct ListParams {
    #[serde(default)]
    q: String,
    #[serde(default)]
    field: String,
    #[serde(default)]
    value: String,
    #[serde(default)]
    sort: String,
    #[serde(default)]
    order: String,
    #[serde(default)]
    after: String,
    /// `me`: only records I own.
    #[serde(default)]
    owner: String,
}

/// A field offered for filtering and sorting: readable in clear by the viewer (hidden fields would be an oracle,
/// masked ones too; the store refuses both, the page does not offer them).
pub struct Choice {
    pub name: &'static str,
    pub label: String,
    pub selected: bool,
}

#[derive(Template)]
#[template(path = "list.html")]
struct ListPage {
    chrome: Chrome,
    module: Module,
    columns: Vec<Column>,
    rows: Vec<Row>,
    total: String,
    total_count: i64,
    q: String,
    value: String,
    owner_me: bool,
    filter_fields: Vec<Choice>,
    sort_fields: Vec<Choice>,
    ascending: bool,
    next_href: Option<String>,
    first_href: Option<String>,
    /// The CSV export of the same query (the API's export, with the session cookie), when the viewer may export.
    export_href: Option<String>,
    import_href: Option<String>,
}

fn clear_fields(module: Module, v: &Viewer, selected: &str) -> Vec<Choice> {
    let Some(s) = schema(module) else { return Vec::new() };
    s.fields
        .iter()
        .filter(|f| v.principal().access.field_access(module, f.name) >= FieldAccess::ReadOnly)
        .map(|f| Choice { name: f.name, label: v.lang.label("field", f.name), selected: f.name == selected })
        .collect()
}

fn list_query(module: Module, p: &ListParams, me: i64) -> ListQuery {
    let mut q = ListQuery { limit: Some(25), ..Default::default() };
    if !p.q.trim().is_empty() {
        q.q = Some(p.q.trim().to_string());
    }
    if p.owner == "me" {
        q.filters.push(owned_by(me));
    }
    if !p.field.is_empty() && !p.value.trim().is_empty() {
        let integer = schema(module).and_then(|s| s.field(&p.field)).is_some_and(|d| d.kind.is_integer());
        let value = match (integer, p.value.trim().parse::<i64>()) {
            (true, Ok(n)) => serde_json::Value::from(n),
            _ => serde_json::Value::from(p.value.trim()),
        };
        q.filters.push(FieldFilter { field: p.field.clone(), op: CmpOp::Eq, value });
    }
    if !p.sort.is_empty() {
        q.sort = Some(p.sort.clone());
        q.asc = p.order == "asc";
    }
    if !p.after.is_empty() {
        q.after = Some(p.after.clone());
    }
    q
}

fn list_href(module: Module, p: &ListParams, after: Option<&str>) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, val) in [("q", &p.q), ("field", &p.field), ("value", &p.value), ("sort", &p.sort), ("order", &p.order)] {
        if !val.is_empty() {
            s.append_pair(k, val);
        }
    }
    if p.owner == "me" {
        s.append_pair("owner", "me");
    }
    if let Some(a) = after {
        s.append_pair("after", a);
    }
    format!("/app/r/{module}?{}", s.finish())
}

pub async fn list(
    State(state): State<AppState>,
    v: Viewer,
    Path(module): Path<String>,
    Query(p): Query<ListParams>,
    PagePath(path): PagePath,
) -> Response {
    let module = match record_module(&module, v.lang) {
        Ok(m) => m,
        Err(e) => return e.into_response(),
    };
    let scoped = state.store.scoped(v.principal().clone());
    let q = list_query(module, &p, v.principal().user);
    let result = async {
        let page = scoped.list(module, &q).await?;
        let total = scoped.count(module, &ListQuery { after: None, sort: None, limit: None, ..q.clone() }).await?;
        Ok::<_, StoreError>((page, total))
    }
    .await;
    let (page, total) = match result {
        Ok(x) => x,
        Err(e) => return PageError::from_store(e, v.lang).into_response(),
    };
    let cols = columns(module, &v);
    let mut chrome = v.chrome("home.modules", &path);
    chrome.title = v.lang.label("module", module.as_str());
    let body = ListPage {
        module,
        rows: rows(module, &page.items, &cols, &v),
        columns: cols,
        total: v.lang.t("list.total").replace("{n}", &v.lang.number(total)),
        total_count: total,
        q: p.q.clone(),
        value: p.value.clone(),
        owner_me: p.owner == "me",
        filter_fields: clear_fields(module, &v, &p.field),
        sort_fields: clear_fields(module, &v, &p.sort),
        ascending: p.order == "asc",
        next_href: page.next_cursor.as_deref().map(|c| list_href(module, &p, Some(c))),
        first_href: (!p.after.is_empty()).then(|| list_href(module, &p, None)),
        export_href: v.can(module, Action::Export).then(|| format!("/api/v1/{module}/export.csv")),
        import_href: v.can(module, Action::Import).then(|| format!("/app/r/{module}/import")),
        chrome,
    };
    render(&body)
}

// ---------------------------------------------------------------------------------------------------------------
// Record page

pub struct RelatedList {
    pub module: Module,
    pub label: String,
    pub columns: Vec<Column>,
    pub rows: Vec<Row>,
}

#[derive(Template)]
#[template(path = "record.html")]
struct RecordPage {
    chrome: Chrome,
    module: Module,
    id: RecordId,
    fields: Vec<FieldView>,
    system: Vec<(String, String)>,
    related: Vec<RelatedList>,
    can_edit: bool,
    can_share: bool,
    revealed: Option<(&'static str, String)>,
    notice: Option<&'static str>,
}

/// Modules whose records point at `module` (the related lists of its record page).
fn children(module: Module) -> Vec<Module> {
    Module::RECORDS
        .into_iter()
        .filter(|c| schema(*c).is_some_and(|s| s.fields.iter().any(|f| f.kind == FieldKind::Ref(module))))
        .collect()
}

async fn record_page(
    scoped: &Scoped<'_>,
    v: &Viewer,
    module: Module,
    id: RecordId,
    revealed: Option<(&'static str, String)>,
    notice: Option<&'static str>,
    path: &str,
) -> Result<Response, StoreError> {
    let record = scoped.get(module, id).await?;
    let fields = record_fields(module, &record, &v.principal().access, v.lang);
    let system = ["owner_id", "created_at", "updated_at"]
        .into_iter()
        .map(|n| (v.lang.label("field", n), system_value(n, &record, v.lang, &v.session.time_zone)))
        .collect();
    let mut related = Vec::new();
    for child in children(module).into_iter().filter(|c| v.can(*c, Action::View)) {
        let page = scoped.related(module, id, child, &ListQuery { limit: Some(10), ..Default::default() }).await?;
        let cols = columns(child, v);
        related.push(RelatedList {
            module: child,
            label: v.lang.label("module", child.as_str()),
            rows: rows(child, &page.items, &cols, v),
            columns: cols,
        });
    }
    let title = record.get(title_field(module)).and_then(|x| x.as_str()).unwrap_or_default().to_string();
    let mut chrome = v.chrome("record.details", path);
    chrome.title = format!("{} · {title}", v.lang.label("module", module.as_str()));
    Ok(render(&RecordPage {
        chrome,
        module,
        id,
        fields,
        system,
        related,
        can_edit: v.can(module, Action::Edit),
        can_share: v.can(module, Action::Share),
        revealed,
        notice,
    }))
}

#[derive(Deserialize, Default)]
pub struct RecordNotice {
    #[serde(default)]
    done: String,
}

pub async fn record(
    State(state): State<AppState>,
    v: Viewer,
    Path((module, id)): Path<(String, String)>,
    Query(q): Query<RecordNotice>,
    PagePath(path): PagePath,
) -> Response {
    let (module, id) = match record_module(&module, v.lang).and_then(|m| Ok((m, record_id(&id, v.lang)?))) {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    let notice = match q.done.as_str() {
        "shared" => Some("share.done"),
        "team" => Some("share.team_done"),
        _ => None,
    };
    let scoped = state.store.scoped(v.principal().clone());
    record_page(&scoped, &v, module, id, None, notice, &path)
        .await
        .unwrap_or_else(|e| PageError::from_store(e, v.lang).into_response())
}

#[derive(Deserialize)]
pub struct CsrfOnly {}

/// Reveals a masked field's clear value (the store checks the reveal right and audits it) and shows the record
/// page with that one value in clear.
pub async fn reveal(
    State(state): State<AppState>,
    Path((module, id, field)): Path<(String, String, String)>,
    ViewerForm { viewer: v, form: CsrfOnly {} }: ViewerForm<CsrfOnly>,
) -> Response {
    let (module, id) = match record_module(&module, v.lang).and_then(|m| Ok((m, record_id(&id, v.lang)?))) {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    let Some(def) = schema(module).and_then(|s| s.field(&field)) else {
        return PageError::new(StatusCode::NOT_FOUND, "error.not_found", v.lang).into_response();
    };
    let scoped = state.store.scoped(v.principal().clone());
    let value = match scoped.reveal(module, id, def.name).await {
        Ok(value) => value,
        Err(e) => return PageError::from_store(e, v.lang).into_response(),
    };
    let clear = value.as_str().map(str::to_string).unwrap_or_else(|| format_value(def.kind, &value, v.lang).0);
    let path = format!("/app/r/{module}/{id}");
    record_page(&scoped, &v, module, id, Some((def.name, clear)), None, &path)
        .await
        .unwrap_or_else(|e| PageError::from_store(e, v.lang).into_response())
}

// ---------------------------------------------------------------------------------------------------------------
// Share dialog and record team

#[derive(Deserialize)]
pub struct ShareForm {
    username: String,
    level: String,
    /// `share` (手动共享) or `team` (相关团队).
    kind: String,
}

/// Shares the record with a user, or adds them to its team, through `Scoped::share` / `set_team_member` (which
/// need `share` on the record and refuse a level beyond the sharer's own).
pub async fn share(
    State(state): State<AppState>,
    Path((module, id)): Path<(String, String)>,
    ViewerForm { viewer: v, form }: ViewerForm<ShareForm>,
) -> Response {
    let (module, id) = match record_module(&module, v.lang).and_then(|m| Ok((m, record_id(&id, v.lang)?))) {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    let Ok(level) = form.level.parse::<crm_domain::Level>() else {
        return PageError::new(StatusCode::BAD_REQUEST, "error.bad_request", v.lang).into_response();
    };
    // Usernames of the viewer's own organization name the person to share with (the API takes the id).
    let users = match state.store.unscoped_system_access().user_ids(v.principal().org).await {
        Ok(u) => u,
        Err(e) => return PageError::from_store(e, v.lang).into_response(),
    };
    let Some(user) = users.iter().find(|(name, _)| *name == form.username.trim()).map(|(_, id)| *id) else {
        return PageError::new(StatusCode::UNPROCESSABLE_ENTITY, "share.unknown_user", v.lang).into_response();
    };
    let scoped = state.store.scoped(v.principal().clone());
    let (result, done) = if form.kind == "team" {
        (scoped.set_team_member(module, id, user, Some(level)).await, "team")
    } else {
        (scoped.share(module, id, crm_policy::ShareKey::User(user), level).await, "shared")
    };
    match result {
        Ok(()) => axum::response::Redirect::to(&format!("/app/r/{module}/{id}?done={done}")).into_response(),
        Err(e) => PageError::from_store(e, v.lang).into_response(),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Edit form

/// An input of the edit form: the fields the viewer may edit, with the value and the store's message.
pub struct Input {
    pub name: &'static str,
    pub label: String,
    pub value: String,
    pub options: Vec<(String, String)>,
    pub error: Option<String>,
    pub long: bool,
}

#[derive(Template)]
#[template(path = "edit.html")]
struct EditPage {
    chrome: Chrome,
    module: Module,
    id: RecordId,
    inputs: Vec<Input>,
    invalid: bool,
}

fn raw_text(v: Option<&serde_json::Value>) -> String {
    match v {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

/// The editable fields of a record (masked and read-only ones are not inputs).
fn inputs(
    module: Module,
    v: &Viewer,
    values: &BTreeMap<String, String>,
    errors: &BTreeMap<String, String>,
) -> Vec<Input> {
    let Some(s) = schema(module) else { return Vec::new() };
    s.fields
        .iter()
        .filter(|f| v.principal().access.field_access(module, f.name) == FieldAccess::Editable)
        .map(|f| Input {
            name: f.name,
            label: v.lang.label("field", f.name),
            value: values.get(f.name).cloned().unwrap_or_default(),
            options: match f.kind {
                FieldKind::Enum(codes) => codes.iter().map(|c| (c.to_string(), v.lang.label("enum", c))).collect(),
                _ => Vec::new(),
            },
            error: errors.get(f.name).cloned(),
            long: matches!(f.kind, FieldKind::Text { max } if max > 200),
        })
        .collect()
}

pub async fn edit_form(
    State(state): State<AppState>,
    v: Viewer,
    Path((module, id)): Path<(String, String)>,
    PagePath(path): PagePath,
) -> Response {
    let (module, id) = match record_module(&module, v.lang).and_then(|m| Ok((m, record_id(&id, v.lang)?))) {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    let record = match state.store.scoped(v.principal().clone()).get(module, id).await {
        Ok(r) => r,
        Err(e) => return PageError::from_store(e, v.lang).into_response(),
    };
    if !v.can(module, Action::Edit) {
        return PageError::new(StatusCode::FORBIDDEN, "error.forbidden", v.lang).into_response();
    }
    let values = record.iter().map(|(k, x)| (k.clone(), raw_text(Some(x)))).collect();
    let mut chrome = v.chrome("record.edit", &path);
    chrome.title = format!("{} · {}", v.lang.t("record.edit"), v.lang.label("module", module.as_str()));
    render(&EditPage { chrome, module, id, inputs: inputs(module, &v, &values, &BTreeMap::new()), invalid: false })
}

/// Saves the edit form through `Scoped::update` (the API's path): validation problems come back as messages next
/// to their fields, with the values the user typed.
pub async fn save(
    State(state): State<AppState>,
    Path((module, id)): Path<(String, String)>,
    ViewerForm { viewer: v, form }: ViewerForm<BTreeMap<String, String>>,
) -> Response {
    let (module, id) = match record_module(&module, v.lang).and_then(|m| Ok((m, record_id(&id, v.lang)?))) {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    let Some(s) = schema(module) else {
        return PageError::new(StatusCode::NOT_FOUND, "error.not_found", v.lang).into_response();
    };
    let mut patch = serde_json::Map::new();
    for f in s.fields.iter().filter(|f| v.principal().access.field_access(module, f.name) == FieldAccess::Editable) {
        let Some(text) = form.get(f.name) else { continue };
        let text = text.trim();
        let value = if text.is_empty() {
            serde_json::Value::Null
        } else if f.kind.is_integer() {
            // A non-number goes to the store as text so its validation names the field.
            text.parse::<i64>().map(Into::into).unwrap_or_else(|_| text.into())
        } else {
            text.into()
        };
        patch.insert(f.name.to_string(), value);
    }
    let scoped = state.store.scoped(v.principal().clone());
    match scoped.update(module, id, &patch).await {
        Ok(_) => axum::response::Redirect::to(&format!("/app/r/{module}/{id}")).into_response(),
        Err(StoreError::Invalid(errors)) => {
            let errors = errors.into_iter().map(|e| (e.field, v.lang.store_message(&e.message))).collect();
            let path = format!("/app/r/{module}/{id}/edit");
            let mut chrome = v.chrome("record.edit", &path);
            chrome.title = format!("{} · {}", v.lang.t("record.edit"), v.lang.label("module", module.as_str()));
            let page = EditPage { chrome, module, id, inputs: inputs(module, &v, &form, &errors), invalid: true };
            (StatusCode::UNPROCESSABLE_ENTITY, render(&page)).into_response()
        }
        Err(e) => PageError::from_store(e, v.lang).into_response(),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Why can I see this?

#[derive(Template)]
#[template(path = "why.html")]
struct WhyPage {
    chrome: Chrome,
    module: Module,
    id: RecordId,
    granted: Vec<String>,
    denied: Vec<String>,
}

/// The viewer's own explanation of their access to a record (`Scoped::explain_own`, audited like the API's).
pub async fn why(
    State(state): State<AppState>,
    v: Viewer,
    Path((module, id)): Path<(String, String)>,
    PagePath(path): PagePath,
) -> Response {
    let (module, id) = match record_module(&module, v.lang).and_then(|m| Ok((m, record_id(&id, v.lang)?))) {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    match state.store.scoped(v.principal().clone()).explain_own(module, Action::View, id).await {
        Ok(e) => render(&WhyPage {
            chrome: v.chrome("record.why", &path),
            module,
            id,
            granted: e.granted_by.iter().map(|r| crate::admin::reason_text(r, v.lang)).collect(),
            denied: e.denied_by.iter().map(|r| crate::admin::reason_text(r, v.lang)).collect(),
        }),
        Err(e) => PageError::from_store(e, v.lang).into_response(),
    }
}
