//! View as user (以用户身份查看): an administrator sees the module lists and record pages exactly as a user within
//! their admin scope sees them, read-only. Every read goes through `Scoped::view_as` (the user's own access with
//! every right but viewing removed, audited with the administrator as actor and the user as subject), so the pages
//! show the user's records and fields, never the administrator's wider set, and carry no edit, share, reveal,
//! export or import control. A banner on every page says whose view it is.

use crate::error::{PageError, render};
use crate::records::{Column, Row, columns, record_id, record_module, rows};
use crate::view::{FieldView, record_fields, system_value, title_field};
use crate::viewer::{Chrome, NavItem, PagePath, Viewer};
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use crm_api::AppState;
use crm_domain::{Action, Module, UserId};
use crm_store::{ListQuery, Scoped, StoreError};
use serde::Deserialize;

#[derive(Template)]
#[template(path = "view_as.html")]
struct ViewAsPage {
    chrome: Chrome,
    banner: String,
    exit_href: String,
    modules: Vec<NavItem>,
    total: Option<String>,
    total_count: i64,
    columns: Vec<Column>,
    rows: Vec<Row>,
    next_href: Option<String>,
    /// Needed by the shared field template (reveal forms are never rendered here: nothing is revealable).
    module: Module,
    id: i64,
    fields: Vec<FieldView>,
    system: Vec<(String, String)>,
}

#[derive(Deserialize, Default)]
pub struct ViewAsParams {
    #[serde(default)]
    after: String,
}

/// The viewed user's read-only handle and a viewer for rendering with the user's access (the administrator's
/// session and language, the user's principal).
async fn open<'s>(state: &'s AppState, v: &Viewer, user: UserId) -> Result<(Scoped<'s>, Viewer), StoreError> {
    let as_user = state.store.scoped(v.principal().clone()).view_as(user).await?;
    let mut session = v.session.clone();
    session.principal = as_user.principal().clone();
    let target = Viewer { session, lang: v.lang };
    Ok((as_user, target))
}

fn prefix(user: UserId) -> String {
    format!("/app/admin/users/{user}/view")
}

/// Links of the shared row template point into the view-as pages.
fn rebase(user: UserId, href: &str) -> String {
    match href.strip_prefix("/app/r/") {
        Some(rest) => format!("{}/r/{rest}", prefix(user)),
        None => href.to_string(),
    }
}

fn rebase_rows(user: UserId, rows: &mut [Row]) {
    for r in rows {
        r.href = rebase(user, &r.href);
        for c in &mut r.cells {
            c.href = c.href.as_deref().map(|h| rebase(user, h));
        }
    }
}

async fn page(
    state: &AppState,
    v: &Viewer,
    user: UserId,
    what: Option<(Module, Option<i64>)>,
    after: &str,
    path: &str,
) -> Result<Response, StoreError> {
    let (scoped, target) = open(state, v, user).await?;
    let username = state
        .store
        .scoped(v.principal().clone())
        .admin_users()
        .await?
        .into_iter()
        .find(|u| u.id == user)
        .map(|u| u.username)
        .unwrap_or_else(|| format!("#{user}"));
    let modules = Module::RECORDS
        .into_iter()
        .filter(|m| target.can(*m, Action::View))
        .map(|m| NavItem { href: format!("{}/r/{m}", prefix(user)), label: v.lang.label("module", m.as_str()) })
        .collect();
    let mut body = ViewAsPage {
        chrome: v.chrome("view_as.title", path),
        banner: v.lang.t("view_as.banner").replace("{user}", &username),
        exit_href: format!("/app/admin/users/{user}"),
        modules,
        total: None,
        total_count: 0,
        columns: Vec::new(),
        rows: Vec::new(),
        next_href: None,
        module: Module::Customers,
        id: 0,
        fields: Vec::new(),
        system: Vec::new(),
    };
    body.chrome.title = format!("{} · {username}", v.lang.t("view_as.title"));
    match what {
        None => {}
        Some((module, None)) => {
            if !target.can(module, Action::View) {
                return Err(StoreError::NotFound);
            }
            let q = ListQuery {
                after: Some(after.to_string()).filter(|a| !a.is_empty()),
                limit: Some(50),
                ..Default::default()
            };
            let list = scoped.list(module, &q).await?;
            let total = scoped.count(module, &ListQuery::default()).await?;
            let cols = columns(module, &target);
            let mut rs = rows(module, &list.items, &cols, &target);
            rebase_rows(user, &mut rs);
            body.total = Some(v.lang.t("list.total").replace("{n}", &v.lang.number(total)));
            body.total_count = total;
            body.columns = cols;
            body.rows = rs;
            body.next_href = list.next_cursor.as_deref().map(|c| {
                let c: String = form_urlencoded::byte_serialize(c.as_bytes()).collect();
                format!("{}/r/{module}?after={c}", prefix(user))
            });
            body.module = module;
            body.chrome.title = format!("{} · {}", body.chrome.title, v.lang.label("module", module.as_str()));
        }
        Some((module, Some(id))) => {
            let record = scoped.get(module, id).await?;
            let mut fields = record_fields(module, &record, &target.principal().access, v.lang);
            for f in &mut fields {
                f.revealable = false;
                f.href = f.href.as_deref().map(|h| rebase(user, h));
            }
            body.system = ["owner_id", "created_at", "updated_at"]
                .into_iter()
                .map(|n| (v.lang.label("field", n), system_value(n, &record, v.lang, &v.session.time_zone)))
                .collect();
            let title = record.get(title_field(module)).and_then(|x| x.as_str()).unwrap_or_default().to_string();
            body.chrome.title =
                format!("{} · {} · {title}", body.chrome.title, v.lang.label("module", module.as_str()));
            body.fields = fields;
            body.module = module;
            body.id = id;
        }
    }
    Ok(render(&body))
}

pub async fn index(
    State(state): State<AppState>,
    v: Viewer,
    Path(user): Path<UserId>,
    PagePath(path): PagePath,
) -> Response {
    page(&state, &v, user, None, "", &path).await.unwrap_or_else(|e| PageError::from_store(e, v.lang).into_response())
}

pub async fn list(
    State(state): State<AppState>,
    v: Viewer,
    Path((user, module)): Path<(UserId, String)>,
    Query(p): Query<ViewAsParams>,
    PagePath(path): PagePath,
) -> Response {
    let module = match record_module(&module, v.lang) {
        Ok(m) => m,
        Err(e) => return e.into_response(),
    };
    page(&state, &v, user, Some((module, None)), &p.after, &path)
        .await
        .unwrap_or_else(|e| PageError::from_store(e, v.lang).into_response())
}

pub async fn record(
    State(state): State<AppState>,
    v: Viewer,
    Path((user, module, id)): Path<(UserId, String, String)>,
    PagePath(path): PagePath,
) -> Response {
    let (module, id) = match record_module(&module, v.lang).and_then(|m| Ok((m, record_id(&id, v.lang)?))) {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    page(&state, &v, user, Some((module, Some(id))), "", &path)
        .await
        .unwrap_or_else(|e| PageError::from_store(e, v.lang).into_response())
}
