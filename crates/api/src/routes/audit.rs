//! The audit trail's read API: `GET /api/v1/audit/events` (filters, keyset pagination, newest first) and
//! `GET /api/v1/audit/export` (CSV or JSON Lines). Both need the `audit` module; its data scope limits the events
//! to actors within the caller's scope over users, and field permissions apply to before/after values.

use crate::AppState;
use crate::error::{ApiError, Problem};
use crate::extract::Authed;
use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use crm_store::{AuditPage, AuditQuery};

/// Milliseconds since the Unix epoch, or an RFC 3339 time (`2026-11-29T08:00:00+08:00`).
fn parse_time(name: &str, v: &str) -> Result<i64, ApiError> {
    crm_store::parse_audit_time(v).ok_or_else(|| {
        ApiError::bad_request(format!("{name} must be milliseconds since the epoch or an RFC 3339 time"))
    })
}

/// Parses the query string of the audit API; unknown parameters are refused. Returns the query and `format`.
fn parse(raw: Option<&str>, allow_format: bool) -> Result<(AuditQuery, Option<String>), ApiError> {
    let mut q = AuditQuery::default();
    let mut format = None;
    let int = |name: &str, v: &str| {
        v.parse::<i64>().map_err(|_| ApiError::bad_request(format!("{name} must be a whole number")))
    };
    for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "actor" => q.actor = Some(int("actor", &v)?),
            "module" => q.module = Some(v.into_owned()),
            "record" => q.record = Some(int("record", &v)?),
            "action" => q.action = Some(v.into_owned()),
            "outcome" => q.outcome = Some(v.into_owned()),
            "from" => q.from = Some(parse_time("from", &v)?),
            "to" => q.to = Some(parse_time("to", &v)?),
            "after" if !allow_format => q.after = Some(v.into_owned()),
            "limit" if !allow_format => {
                q.limit =
                    Some(v.parse().map_err(|_| ApiError::bad_request("limit must be a number between 1 and 500"))?)
            }
            "format" if allow_format => format = Some(v.into_owned()),
            other => return Err(ApiError::bad_request(format!("unknown query parameter {other}"))),
        }
    }
    Ok((q, format))
}

/// Audit events you may see, newest first. Filters: `actor` (user id), `module`, `record` (with `module`),
/// `action` (exact, or a prefix ending in `.` such as `session.`), `outcome` (success, failure, denied), `from`
/// and `to` (milliseconds or RFC 3339); `after` is the previous page's `next_cursor`; `limit` 1–500 (default 50).
/// Needs `audit: view`; its scope limits the events to actors within your scope over users. Hidden fields are
/// absent from before/after values, masked ones masked. The query itself is recorded.
#[utoipa::path(get, path = "/api/v1/audit/events", tag = "audit", security(("bearer" = [])),
    params(("actor" = Option<i64>, Query), ("module" = Option<String>, Query), ("record" = Option<i64>, Query),
        ("action" = Option<String>, Query, description = "exact, or a prefix ending in `.`"),
        ("outcome" = Option<String>, Query, description = "success, failure or denied"),
        ("from" = Option<String>, Query, description = "milliseconds since the epoch or RFC 3339, inclusive"),
        ("to" = Option<String>, Query, description = "exclusive"), ("after" = Option<String>, Query, description = "cursor"),
        ("limit" = Option<u32>, Query)),
    responses((status = 200, description = "`{items: [...], next_cursor}`", body = Object), (status = 400, body = Problem), (status = 404, body = Problem)))]
pub async fn events(
    State(state): State<AppState>,
    Authed(p): Authed,
    RawQuery(raw): RawQuery,
) -> Result<Json<AuditPage>, ApiError> {
    let (q, _) = parse(raw.as_deref(), false)?;
    Ok(Json(state.store.scoped(p).audit_query(&q).await?))
}

/// Export the audit events you may see (the same filters as `/events`) as CSV (`format=csv`, default) or JSON
/// Lines (`format=jsonl`). Needs `audit: export`; recorded with its row count and filter.
#[utoipa::path(get, path = "/api/v1/audit/export", tag = "audit", security(("bearer" = [])),
    params(("format" = Option<String>, Query, description = "csv (default) or jsonl"), ("actor" = Option<i64>, Query),
        ("module" = Option<String>, Query), ("record" = Option<i64>, Query), ("action" = Option<String>, Query),
        ("outcome" = Option<String>, Query), ("from" = Option<String>, Query), ("to" = Option<String>, Query)),
    responses((status = 200, description = "The events as an attachment", body = String, content_type = "text/csv"),
        (status = 400, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn export(
    State(state): State<AppState>,
    Authed(p): Authed,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let (q, format) = parse(raw.as_deref(), true)?;
    let format = format.unwrap_or_else(|| "csv".into());
    let (text, rows) = state.store.scoped(p).audit_export(&q, &format).await?;
    let (mime, ext) = if format == "jsonl" {
        ("application/jsonl; charset=utf-8", "jsonl")
    } else {
        ("text/csv; charset=utf-8", "csv")
    };
    let mut response = text.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    let disposition = format!("attachment; filename=\"audit.{ext}\"");
    h.insert(header::CONTENT_DISPOSITION, HeaderValue::from_str(&disposition).map_err(|_| ApiError::not_found())?);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-row-count", HeaderValue::from(rows));
    Ok(response)
}
