//! CSV export and import of customers and contacts: `GET /api/v1/{module}/export.csv` and
//! `POST /api/v1/{module}/import` (body `text/csv`, UTF-8, up to [`crate::MAX_BODY_BYTES`]). Both go through
//! `Scoped`, so they apply the `export` and `import` permissions, the export scope and the field permissions.

use crate::AppState;
use crate::error::{ApiError, Problem};
use crate::extract::Authed;
use crate::routes::records::{parse_list_query, record_module};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use crm_domain::Module;
use crm_store::{CSV_MODULES, ListQuery};
use serde::Serialize;

/// A module with CSV import and export; any other name is 404, like a module the caller may not see.
fn csv_module(name: &str) -> Result<Module, ApiError> {
    record_module(name).ok().filter(|m| CSV_MODULES.contains(m)).ok_or_else(ApiError::not_found)
}

fn unsupported(detail: &str) -> ApiError {
    ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type", "Unsupported media type", detail)
}

/// The body must be `text/csv` (or `application/csv`), in UTF-8 when a charset is given.
fn require_csv(headers: &HeaderMap) -> Result<(), ApiError> {
    let value = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mut parts = value.split(';');
    let mime = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    if mime != "text/csv" && mime != "application/csv" {
        return Err(unsupported("send the file as text/csv (UTF-8)"));
    }
    for param in parts {
        if let Some((k, v)) = param.split_once('=') {
            let v = v.trim().trim_matches('"');
            if k.trim().eq_ignore_ascii_case("charset")
                && !v.eq_ignore_ascii_case("utf-8")
                && !v.eq_ignore_ascii_case("utf8")
            {
                return Err(unsupported(
                    "the CSV must be UTF-8: convert the file and send it as text/csv; charset=utf-8",
                ));
            }
        }
    }
    Ok(())
}

/// The list query of an export, and its own `bom` parameter.
fn export_query(module: Module, raw: Option<&str>) -> Result<(ListQuery, bool), ApiError> {
    let mut bom = false;
    let mut rest = form_urlencoded::Serializer::new(String::new());
    for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        if k == "bom" {
            bom = match v.as_ref() {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => return Err(ApiError::bad_request("bom must be true or false")),
            };
        } else {
            rest.append_pair(&k, &v);
        }
    }
    let q = parse_list_query(module, Some(&rest.finish()))?;
    if q.after.is_some() || q.limit.is_some() {
        return Err(ApiError::bad_request("export takes only q, filter, sort, order and bom"));
    }
    Ok((q, bom))
}

/// Export the records you may export as CSV (RFC 4180, UTF-8 without byte-order mark): `id`, `owner_id`, then
/// every field you may read (masked fields masked). Takes the list's `q` and `filter` (and `sort`, `order`;
/// default order: id ascending), and `bom=true` for a byte-order mark. Needs the module's export permission;
/// audited.
#[utoipa::path(get, path = "/api/v1/{module}/export.csv", tag = "records", security(("bearer" = [])),
    params(("module" = String, Path, description = "customers or contacts"),
        ("q" = Option<String>, Query, description = "text search"),
        ("filter" = Option<Vec<String>>, Query, description = "field:op:value, repeatable"),
        ("sort" = Option<String>, Query), ("order" = Option<String>, Query, description = "asc or desc"),
        ("bom" = Option<bool>, Query, description = "start with a UTF-8 byte-order mark (for spreadsheets that need it)")),
    responses((status = 200, description = "The CSV file, as an attachment", body = String, content_type = "text/csv"),
        (status = 400, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn export_csv(
    State(state): State<AppState>,
    Authed(p): Authed,
    Path(module): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let module = csv_module(&module)?;
    let (q, bom) = export_query(module, raw.as_deref())?;
    let (text, rows) = state.store.scoped(p).export_csv(module, &q).await?;
    let mut response = if bom { format!("\u{feff}{text}") } else { text }.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
    let disposition = format!("attachment; filename=\"{module}.csv\"");
    h.insert(header::CONTENT_DISPOSITION, HeaderValue::from_str(&disposition).map_err(|_| ApiError::not_found())?);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert("x-row-count", HeaderValue::from(rows));
    Ok(response)
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Imported {
    /// How many records were created.
    pub created: usize,
}

/// Import records from a CSV file (header row of field names; UTF-8, a byte-order mark is accepted), all or
/// nothing. Each row follows the rules of create: unknown and hidden columns are refused, values are validated,
/// `owner_id` (optional) must be a user you may assign records to, references must be records you may view. An
/// `id` column is ignored, so an export can be imported again. A 422 problem lists every error by line
/// (`line 3: name`). Needs the module's import permission; audited.
#[utoipa::path(post, path = "/api/v1/{module}/import", tag = "records", security(("bearer" = [])),
    params(("module" = String, Path, description = "customers or contacts")),
    request_body(content = String, content_type = "text/csv", description = "The CSV file (at most 16 MiB)"),
    responses((status = 200, body = Imported), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 413, body = Problem), (status = 415, body = Problem), (status = 422, body = Problem)))]
pub async fn import_csv(
    State(state): State<AppState>,
    Authed(p): Authed,
    Path(module): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Imported>, ApiError> {
    let module = csv_module(&module)?;
    require_csv(&headers)?;
    let store = state.store.clone();
    // `Scoped::import_csv` takes an optional `&dyn Fn` progress callback, which makes its future not `Send`; run it
    // to completion on a blocking thread of the runtime instead of on the handler's task.
    let runtime = tokio::runtime::Handle::current();
    // The request's audit context does not cross threads by itself.
    let ctx = crm_store::current_request_context().unwrap_or_default();
    let report = tokio::task::spawn_blocking(move || {
        runtime.block_on(crm_store::with_request_context(ctx, async move {
            store.scoped(p).import_csv(module, &body, None).await
        }))
    })
    .await
    .map_err(|e| {
        tracing::error!(cause = %e, "CSV import task failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "the server could not complete the request",
        )
    })??;
    Ok(Json(Imported { created: report.created }))
}
