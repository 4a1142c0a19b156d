//! The record modules' REST API: `/api/v1/{module}` for customers, contacts, leads, opportunities, tickets and
//! activities. Every handler goes through `Scoped`, so each path applies the same policy.

use crate::AppState;
use crate::error::{ApiError, Problem};
use crate::extract::{ApiJson, Authed};
use axum::Json;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::StatusCode;
use crm_domain::{Action, Level, Module, schema};
use crm_policy::{CmpOp, Explanation, ShareKey};
use crm_store::{FieldFilter, ListQuery, LookupItem, Page, RecordOut, Sharing};
use serde::{Deserialize, Serialize};

/// A record module named in a path; administration modules and unknown names are 404 like hidden ones.
pub fn record_module(name: &str) -> Result<Module, ApiError> {
    name.parse::<Module>().ok().filter(|m| m.is_record_module()).ok_or_else(ApiError::not_found)
}

fn parse_op(s: &str) -> Option<CmpOp> {
    Some(match s {
        "eq" => CmpOp::Eq,
        "ne" => CmpOp::Ne,
        "in" => CmpOp::In,
        "not_in" => CmpOp::NotIn,
        "gt" => CmpOp::Gt,
        "gte" => CmpOp::Gte,
        "lt" => CmpOp::Lt,
        "lte" => CmpOp::Lte,
        _ => return None,
    })
}

/// Parses `?q=&sort=&order=&after=&limit=&filter=field:op:value` (repeatable `filter`; `in` takes a
/// comma-separated list). Unknown parameters are refused so a typo never silently widens a query.
pub fn parse_list_query(module: Module, raw: Option<&str>) -> Result<ListQuery, ApiError> {
    let mut q = ListQuery::default();
    let s = schema(module).ok_or_else(ApiError::not_found)?;
    for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "q" => q.q = Some(v.into_owned()),
            "sort" => q.sort = Some(v.into_owned()),
            "order" => {
                q.asc = match v.as_ref() {
                    "asc" => true,
                    "desc" => false,
                    _ => return Err(ApiError::bad_request("order must be asc or desc")),
                }
            }
            "after" => q.after = Some(v.into_owned()),
            "limit" => {
                q.limit =
                    Some(v.parse().map_err(|_| ApiError::bad_request("limit must be a number between 1 and 200"))?)
            }
            "filter" => {
                let mut parts = v.splitn(3, ':');
                let (Some(field), Some(op), Some(value)) = (parts.next(), parts.next(), parts.next()) else {
                    return Err(ApiError::bad_request("filter must look like field:op:value"));
                };
                let op = parse_op(op).ok_or_else(|| ApiError::bad_request(format!("unknown filter operator {op}")))?;
                let integer = field == "owner_id" || s.field(field).is_some_and(|d| d.kind.is_integer());
                let one = |t: &str| -> Result<serde_json::Value, ApiError> {
                    if integer {
                        t.trim()
                            .parse::<i64>()
                            .map(Into::into)
                            .map_err(|_| ApiError::bad_request(format!("{field}: must be a whole number")))
                    } else {
                        Ok(t.into())
                    }
                };
                let value = if matches!(op, CmpOp::In | CmpOp::NotIn) {
                    serde_json::Value::Array(value.split(',').map(one).collect::<Result<_, _>>()?)
                } else {
                    one(value)?
                };
                q.filters.push(FieldFilter { field: field.to_string(), op, value });
            }
            other => return Err(ApiError::bad_request(format!("unknown query parameter {other}"))),
        }
    }
    Ok(q)
}

/// List the records of a module you may view, newest first, with filters, search and keyset pagination.
#[utoipa::path(get, path = "/api/v1/{module}", tag = "records", security(("bearer" = [])),
    params(("module" = String, Path, description = "customers, contacts, leads, opportunities, tickets or activities"),
        ("q" = Option<String>, Query, description = "text search"), ("sort" = Option<String>, Query), ("order" = Option<String>, Query, description = "asc or desc"),
        ("after" = Option<String>, Query, description = "cursor"), ("limit" = Option<u32>, Query), ("filter" = Option<Vec<String>>, Query, description = "field:op:value, repeatable")),
    responses((status = 200, body = Object), (status = 400, body = Problem), (status = 404, body = Problem)))]
pub async fn list(
    State(state): State<AppState>,
    Authed(p): Authed,
    Path(module): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Page>, ApiError> {
    let module = record_module(&module)?;
    let q = parse_list_query(module, raw.as_deref())?;
    Ok(Json(state.store.scoped(p).list(module, &q).await?))
}

/// The same list query with a JSON body (`filters`, `q`, `sort`, `asc`, `after`, `limit`).
#[utoipa::path(post, path = "/api/v1/{module}/search", tag = "records", security(("bearer" = [])),
    params(("module" = String, Path)), request_body = Object,
    responses((status = 200, body = Object), (status = 400, body = Problem), (status = 404, body = Problem)))]
pub async fn search(
    State(state): State<AppState>,
    Authed(p): Authed,
    Path(module): Path<String>,
    ApiJson(q): ApiJson<ListQuery>,
) -> Result<Json<Page>, ApiError> {
    let module = record_module(&module)?;
    Ok(Json(state.store.scoped(p).list(module, &q).await?))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Count {
    pub count: i64,
}

/// How many records you may view match the filters.
#[utoipa::path(get, path = "/api/v1/{module}/count", tag = "records", security(("bearer" = [])), params(("module" = String, Path)),
    responses((status = 200, body = Count), (status = 400, body = Problem), (status = 404, body = Problem)))]
pub async fn count(
    State(state): State<AppState>,
    Authed(p): Authed,
    Path(module): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Count>, ApiError> {
    let module = record_module(&module)?;
    let mut q = parse_list_query(module, raw.as_deref())?;
    if q.after.is_some() || q.sort.is_some() || q.limit.is_some() {
        return Err(ApiError::bad_request("count takes only q and filter"));
    }
    q.after = None;
    Ok(Json(Count { count: state.store.scoped(p).count(module, &q).await? }))
}

/// Create a record; `owner_id` defaults to you.
#[utoipa::path(post, path = "/api/v1/{module}", tag = "records", security(("bearer" = [])), params(("module" = String, Path)), request_body = Object,
    responses((status = 201, body = Object), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn create(
    State(state): State<AppState>,
    Authed(p): Authed,
    Path(module): Path<String>,
    ApiJson(body): ApiJson<serde_json::Map<String, serde_json::Value>>,
) -> Result<(StatusCode, Json<RecordOut>), ApiError> {
    let module = record_module(&module)?;
    Ok((StatusCode::CREATED, Json(state.store.scoped(p).create(module, &body).await?)))
}

fn record_id(id: &str) -> Result<i64, ApiError> {
    // A malformed id names no record: the same 404 as an unknown or hidden one.
    id.parse::<i64>().ok().filter(|i| *i > 0).ok_or_else(ApiError::not_found)
}

/// One record; 404 for records you may not view, exactly as for missing ones.
#[utoipa::path(get, path = "/api/v1/{module}/{id}", tag = "records", security(("bearer" = [])), params(("module" = String, Path), ("id" = i64, Path)),
    responses((status = 200, body = Object), (status = 404, body = Problem)))]
pub async fn get(
    State(state): State<AppState>,
    Authed(p): Authed,
    Path((module, id)): Path<(String, String)>,
) -> Result<Json<RecordOut>, ApiError> {
    let module = record_module(&module)?;
    Ok(Json(state.store.scoped(p).get(module, record_id(&id)?).await?))
}

/// Change some fields (and, with `transfer`, the owner).
#[utoipa::path(patch, path = "/api/v1/{module}/{id}", tag = "records", security(("bearer" = [])), params(("module" = String, Path), ("id" = i64, Path)), request_body = Object,
    responses((status = 200, body = Object), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn update(
    State(state): State<AppState>,
    Authed(p): Authed,
    Path((module, id)): Path<(String, String)>,
    ApiJson(body): ApiJson<serde_json::Map<String, serde_json::Value>>,
) -> Result<Json<RecordOut>, ApiError> {
    let module = record_module(&module)?;
    Ok(Json(state.store.scoped(p).update(module, record_id(&id)?, &body).await?))
}

/// Delete a record (refused while related records exist).
#[utoipa::path(delete, path = "/api/v1/{module}/{id}", tag = "records", security(("bearer" = [])), params(("module" = String, Path), ("id" = i64, Path)),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn delete(
    State(state): State<AppState>,
    Authed(p): Authed,
    Path((module, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let module = record_module(&module)?;
    state.store.scoped(p).delete(module, record_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A related list: e.g. `/api/v1/customers/7/contacts`.
#[utoipa::path(get, path = "/api/v1/{module}/{id}/{related}", tag = "records", security(("bearer" = [])),
    params(("module" = String, Path), ("id" = i64, Path), ("related" = String, Path, description = "contacts, opportunities, tickets or activities")),
    responses((status = 200, body = Object), (status = 400, body = Problem), (status = 404, body = Problem)))]
pub async fn related(
    State(state): State<AppState>,
    Authed(p): Authed,
    Path((module, id, child)): Path<(String, String, String)>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Page>, ApiError> {
    let module = record_module(&module)?;
    let child = record_module(&child)?;
    let q = parse_list_query(child, raw.as_deref())?;
    Ok(Json(state.store.scoped(p).related(module, record_id(&id)?, child, &q).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplainQuery {
    pub action: Option<String>,
}

/// Why may I (or may I not) do an action on this record? Names every rule that grants or narrows it.
#[utoipa::path(get, path = "/api/v1/{module}/{id}/explain", tag = "records", security(("bearer" = [])),
    params(("module" = String, Path), ("id" = i64, Path), ("action" = Option<String>, Query, description = "view (default), edit, delete, …")),
    responses((status = 200, body = Object), (status = 404, body = Problem)))]
pub async fn explain(
    State(state): State<AppState>,
    Authed(p): Authed,
    Path((module, id)): Path<(String, String)>,
    axum::extract::Query(q): axum::extract::Query<ExplainQuery>,
) -> Result<Json<Explanation>, ApiError> {
    let module = record_module(&module)?;
    let action = match q.action.as_deref() {
        None => Action::View,
        Some(a) => a.parse().map_err(|_| ApiError::bad_request(format!("unknown action {a}")))?,
    };
    Ok(Json(state.store.scoped(p).explain_own(module, action, record_id(&id)?).await?))
}

/// Reveal the clear value of a masked field (needs the reveal right; audited).
#[utoipa::path(post, path = "/api/v1/{module}/{id}/reveal/{field}", tag = "records", security(("bearer" = [])),
    params(("module" = String, Path), ("id" = i64, Path), ("field" = String, Path)),
    responses((status = 200, body = Object), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn reveal(
    State(state): State<AppState>,
    Authed(p): Authed,
    Path((module, id, field)): Path<(String, String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let module = record_module(&module)?;
    let value = state.store.scoped(p).reveal(module, record_id(&id)?, &field).await?;
    Ok(Json(serde_json::json!({ "field": field, "value": value })))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShareRequest {
    /// `{"kind": "user", "id": 5}`; kinds: user, group, department, role.
    #[schema(value_type = Object)]
    pub target: ShareKey,
    /// read, edit or full.
    #[schema(value_type = String)]
    pub level: Level,
}

/// Share a record with a user, group, department or role (needs share on the record).
#[utoipa::path(post, path = "/api/v1/{module}/{id}/shares", tag = "records", security(("bearer" = [])),
    params(("module" = String, Path), ("id" = i64, Path)), request_body = ShareRequest,
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn share(
    State(state): State<AppState>,
    Authed(p): Authed,
    Path((module, id)): Path<(String, String)>,
    ApiJson(req): ApiJson<ShareRequest>,
) -> Result<StatusCode, ApiError> {
    let module = record_module(&module)?;
    state.store.scoped(p).share(module, record_id(&id)?, req.target, req.level).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Who the record is shared with, and its team (needs share on the record).
#[utoipa::path(get, path = "/api/v1/{module}/{id}/shares", tag = "records", security(("bearer" = [])),
    params(("module" = String, Path), ("id" = i64, Path)),
    responses((status = 200, body = Object), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn sharing(
    State(state): State<AppState>,
    Authed(p): Authed,
    Path((module, id)): Path<(String, String)>,
) -> Result<Json<Sharing>, ApiError> {
    let module = record_module(&module)?;
    Ok(Json(state.store.scoped(p).sharing(module, record_id(&id)?).await?))
}

/// Revoke a manual share: `kind` is user, group, department or role.
#[utoipa::path(delete, path = "/api/v1/{module}/{id}/shares/{kind}/{target_id}", tag = "records", security(("bearer" = [])),
    params(("module" = String, Path), ("id" = i64, Path), ("kind" = String, Path), ("target_id" = i64, Path)),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn unshare(
    State(state): State<AppState>,
    Authed(p): Authed,
    Path((module, id, kind, target)): Path<(String, String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let module = record_module(&module)?;
    let target = record_id(&target)?;
    let key = match kind.as_str() {
        "user" => ShareKey::User(target),
        "group" => ShareKey::Group(target),
        "department" => ShareKey::Department(target),
        "role" => ShareKey::Role(target),
        _ => return Err(ApiError::not_found()),
    };
    state.store.scoped(p).unshare(module, record_id(&id)?, key).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LookupParams {
    /// Text the suggestions' searchable fields contain (1–100 characters).
    pub q: String,
    /// How many suggestions, 1–20 (default 10).
    pub limit: Option<u32>,
}

/// Picker suggestions: id and label of records you may view matching `q` (the same policy as every list).
#[utoipa::path(get, path = "/api/v1/{module}/lookup", tag = "records", security(("bearer" = [])),
    params(("module" = String, Path), LookupParams),
    responses((status = 200, body = Object), (status = 400, body = Problem), (status = 404, body = Problem)))]
pub async fn lookup(
    State(state): State<AppState>,
    Authed(p): Authed,
    Path(module): Path<String>,
    Query(params): Query<LookupParams>,
) -> Result<Json<Vec<LookupItem>>, ApiError> {
    let module = record_module(&module)?;
    if params.q.trim().is_empty() {
        return Err(ApiError::bad_request("q must not be empty"));
    }
    Ok(Json(state.store.scoped(p).lookup(module, &params.q, params.limit.unwrap_or(10)).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TeamRequest {
    /// read, edit or full.
    #[schema(value_type = String)]
    pub level: Level,
}

/// Add a user to the record's team (相关团队) at a level.
#[utoipa::path(put, path = "/api/v1/{module}/{id}/team/{user_id}", tag = "records", security(("bearer" = [])),
    params(("module" = String, Path), ("id" = i64, Path), ("user_id" = i64, Path)), request_body = TeamRequest,
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn put_team(
    State(state): State<AppState>,
    Authed(p): Authed,
    Path((module, id, user)): Path<(String, String, String)>,
    ApiJson(req): ApiJson<TeamRequest>,
) -> Result<StatusCode, ApiError> {
    let module = record_module(&module)?;
    let user = record_id(&user)?;
    state.store.scoped(p).set_team_member(module, record_id(&id)?, user, Some(req.level)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Remove a user from the record's team.
#[utoipa::path(delete, path = "/api/v1/{module}/{id}/team/{user_id}", tag = "records", security(("bearer" = [])),
    params(("module" = String, Path), ("id" = i64, Path), ("user_id" = i64, Path)),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn delete_team(
    State(state): State<AppState>,
    Authed(p): Authed,
    Path((module, id, user)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let module = record_module(&module)?;
    let user = record_id(&user)?;
    state.store.scoped(p).set_team_member(module, record_id(&id)?, user, None).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A group-by report: count (and optionally total a number or money field) per value of a field, over the
/// records you may view that match `q` and `filter`. Needs the reports module.
#[utoipa::path(get, path = "/api/v1/{module}/report", tag = "records", security(("bearer" = [])),
    params(("module" = String, Path), ("group_by" = String, Query, description = "field to group by"),
        ("sum" = Option<String>, Query, description = "number or money field to total"),
        ("q" = Option<String>, Query), ("filter" = Option<Vec<String>>, Query, description = "field:op:value, repeatable")),
    responses((status = 200, body = Object), (status = 400, body = Problem), (status = 404, body = Problem)))]
pub async fn report(
    State(state): State<AppState>,
    Authed(p): Authed,
    Path(module): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Vec<crm_store::ReportRow>>, ApiError> {
    let module = record_module(&module)?;
    // Parsed in a block: the query-string serializer must not live across the await below (it is not Send).
    let (group_by, sum, q) = {
        let mut group_by = None;
        let mut sum = None;
        let mut rest = form_urlencoded::Serializer::new(String::new());
        for (k, v) in form_urlencoded::parse(raw.as_deref().unwrap_or("").as_bytes()) {
            match k.as_ref() {
                "group_by" => group_by = Some(v.into_owned()),
                "sum" => sum = Some(v.into_owned()),
                _ => {
                    rest.append_pair(&k, &v);
                }
            }
        }
        let group_by = group_by.ok_or_else(|| ApiError::bad_request("group_by is required"))?;
        (group_by, sum, parse_list_query(module, Some(&rest.finish()))?)
    };
    Ok(Json(state.store.scoped(p).report(module, &group_by, sum.as_deref(), &q).await?))
}
