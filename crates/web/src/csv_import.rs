//! CSV import from the browser: the file is read into the form by the page's script (or pasted), posted with the
//! CSRF token, and imported by `Scoped::import_csv`, the API's path: all rows or none, each problem named by row
//! and field in the error report.

use crate::error::{PageError, render};
use crate::viewer::{Chrome, PagePath, Viewer, ViewerForm};
use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use crm_api::AppState;
use crm_domain::{Action, Module};
use crm_store::StoreError;
use serde::Deserialize;

#[derive(Template)]
#[template(path = "import.html")]
struct ImportPage {
    chrome: Chrome,
    module: Module,
    csv: String,
    created: Option<String>,
    errors: Vec<String>,
}

fn module_of(name: &str, v: &Viewer) -> Result<Module, PageError> {
    name.parse::<Module>()
        .ok()
        .filter(|m| m.is_record_module() && v.can(*m, Action::Import))
        .ok_or_else(|| PageError::new(StatusCode::NOT_FOUND, "error.not_found", v.lang))
}

fn chrome(v: &Viewer, module: Module, path: &str) -> Chrome {
    let mut c = v.chrome("import.title", path);
    c.title = format!("{} · {}", v.lang.t("import.title"), v.lang.label("module", module.as_str()));
    c
}

pub async fn form(v: Viewer, Path(module): Path<String>, PagePath(path): PagePath) -> Response {
    match module_of(&module, &v) {
        Ok(m) => render(&ImportPage {
            chrome: chrome(&v, m, &path),
            module: m,
            csv: String::new(),
            created: None,
            errors: Vec::new(),
        }),
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
pub struct ImportForm {
    csv: String,
}

pub async fn submit(
    State(state): State<AppState>,
    Path(module): Path<String>,
    ViewerForm { viewer: v, form }: ViewerForm<ImportForm>,
) -> Response {
    let m = match module_of(&module, &v) {
        Ok(m) => m,
        Err(e) => return e.into_response(),
    };
    let path = format!("/app/r/{m}/import");
    // As in the API: `Scoped::import_csv`'s future is not `Send` (its optional progress callback), so it runs on a
    // blocking thread, carrying the request's audit context across.
    let (store, principal, bytes) = (state.store.clone(), v.principal().clone(), form.csv.clone().into_bytes());
    let runtime = tokio::runtime::Handle::current();
    let ctx = crm_store::current_request_context().unwrap_or_default();
    let outcome = tokio::task::spawn_blocking(move || {
        runtime.block_on(crm_store::with_request_context(ctx, async move {
            store.scoped(principal).import_csv(m, &bytes, None).await
        }))
    })
    .await;
    let outcome = match outcome {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "the import task failed");
            return PageError::new(StatusCode::INTERNAL_SERVER_ERROR, "error.internal", v.lang).into_response();
        }
    };
    match outcome {
        Ok(report) => render(&ImportPage {
            chrome: chrome(&v, m, &path),
            module: m,
            csv: String::new(),
            created: Some(v.lang.t("import.created").replace("{n}", &v.lang.number(report.created as i64))),
            errors: Vec::new(),
        }),
        Err(StoreError::Invalid(errors)) => {
            let page = ImportPage {
                chrome: chrome(&v, m, &path),
                module: m,
                errors: errors
                    .into_iter()
                    .map(|e| format!("{}: {}", e.field, v.lang.store_message(&e.message)))
                    .collect(),
                csv: form.csv,
                created: None,
            };
            (StatusCode::UNPROCESSABLE_ENTITY, render(&page)).into_response()
        }
        Err(e) => PageError::from_store(e, v.lang).into_response(),
    }
}
