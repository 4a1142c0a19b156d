//! The administration API: access configuration (policy as code), users and departments, and explanations
//! ("why can this user see this record", "who can see this record"). Every handler delegates its permission
//! checks to the store's scoped handle, which refuses escalation and keeps delegated administrators in scope.

use crate::AppState;
use crate::error::{ApiError, Problem};
use crate::extract::{ApiJson, Authed};
use crate::routes::records::record_module;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use crm_domain::{Action, DeptId, RoleId, UserId};
use crm_policy::{Explanation, PolicyConfig};
use crm_store::{DepartmentSummary, NewUser, PolicyChange, UserPatch, UserSummary, WhoCanSee};
use serde::{Deserialize, Serialize};

#[derive(Serialize, utoipa::ToSchema)]
pub struct PolicyDocument {
    pub version: i64,
    #[schema(value_type = Object)]
    pub policy: PolicyConfig,
}

/// The organization's access configuration: roles, defaults, partitions, sharing and restriction rules, groups.
#[utoipa::path(get, path = "/api/v1/admin/policy", tag = "administration", security(("bearer" = [])),
    responses((status = 200, body = PolicyDocument), (status = 404, body = Problem)))]
pub async fn get_policy(State(state): State<AppState>, Authed(p): Authed) -> Result<Json<PolicyDocument>, ApiError> {
    let (policy, version) = state.store.scoped(p).admin_policy().await?;
    Ok(Json(PolicyDocument { version, policy }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DryRun {
    #[serde(default)]
    pub dry_run: bool,
}

/// Replace the access configuration atomically; `?dry_run=true` only reports who would gain and lose access.
#[utoipa::path(put, path = "/api/v1/admin/policy", tag = "administration", security(("bearer" = [])),
    params(("dry_run" = Option<bool>, Query)), request_body = Object,
    responses((status = 200, body = Object), (status = 400, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn put_policy(
    State(state): State<AppState>,
    Authed(p): Authed,
    Query(q): Query<DryRun>,
    ApiJson(policy): ApiJson<PolicyConfig>,
) -> Result<Json<PolicyChange>, ApiError> {
    Ok(Json(state.store.scoped(p).admin_set_policy(&policy, q.dry_run).await?))
}

/// Users within your administration scope.
#[utoipa::path(get, path = "/api/v1/admin/users", tag = "administration", security(("bearer" = [])),
    responses((status = 200, body = Object), (status = 404, body = Problem)))]
pub async fn list_users(State(state): State<AppState>, Authed(p): Authed) -> Result<Json<Vec<UserSummary>>, ApiError> {
    Ok(Json(state.store.scoped(p).admin_users().await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub username: String,
    pub display_name: String,
    pub email: Option<String>,
    /// At least 12 characters; the user must change it at first sign-in.
    pub password: String,
    pub manager_id: Option<UserId>,
    /// Primary department first.
    pub departments: Vec<DeptId>,
    #[serde(default)]
    pub roles: Vec<RoleId>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Created {
    pub id: i64,
}

/// Create a user in departments within your scope, with roles you hold yourself.
#[utoipa::path(post, path = "/api/v1/admin/users", tag = "administration", security(("bearer" = [])), request_body = CreateUser,
    responses((status = 201, body = Created), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create_user(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiJson(u): ApiJson<CreateUser>,
) -> Result<(StatusCode, Json<Created>), ApiError> {
    let id = state
        .store
        .scoped(p)
        .admin_create_user(NewUser {
            username: u.username,
            display_name: u.display_name,
            email: u.email,
            password: u.password,
            manager: u.manager_id,
            departments: u.departments,
            roles: u.roles,
            must_change_password: true,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(Created { id })))
}

/// Change a user's departments, roles, manager or status (`active`, `locked`, `deactivated`). Holds at their
/// next request; locking and deactivation end their sessions at once.
#[utoipa::path(patch, path = "/api/v1/admin/users/{id}", tag = "administration", security(("bearer" = [])),
    params(("id" = i64, Path)), request_body = Object,
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn update_user(
    State(state): State<AppState>,
    Authed(p): Authed,
    Path(id): Path<i64>,
    ApiJson(patch): ApiJson<UserPatch>,
) -> Result<StatusCode, ApiError> {
    state.store.scoped(p).admin_update_user(id, &patch).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A user's effective permissions per module: actions with scopes, field access, reveal.
#[utoipa::path(get, path = "/api/v1/admin/users/{id}/permissions", tag = "administration", security(("bearer" = [])),
    params(("id" = i64, Path)), responses((status = 200, body = Object), (status = 404, body = Problem)))]
pub async fn user_permissions(
    State(state): State<AppState>,
    Authed(p): Authed,
    Path(id): Path<i64>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let perms = state.store.scoped(p).effective_permissions(id).await?;
    Ok(Json(serde_json::to_value(perms).map_err(|_| ApiError::not_found())?))
}

/// The department tree.
#[utoipa::path(get, path = "/api/v1/admin/departments", tag = "administration", security(("bearer" = [])),
    responses((status = 200, body = Object), (status = 404, body = Problem)))]
pub async fn list_departments(
    State(state): State<AppState>,
    Authed(p): Authed,
) -> Result<Json<Vec<DepartmentSummary>>, ApiError> {
    Ok(Json(state.store.scoped(p).admin_departments().await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDepartment {
    pub parent_id: DeptId,
    pub name: String,
}

/// Create a department under one in your scope.
#[utoipa::path(post, path = "/api/v1/admin/departments", tag = "administration", security(("bearer" = [])), request_body = CreateDepartment,
    responses((status = 201, body = Created), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn create_department(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiJson(d): ApiJson<CreateDepartment>,
) -> Result<(StatusCode, Json<Created>), ApiError> {
    let id = state.store.scoped(p).admin_create_department(d.parent_id, &d.name).await?;
    Ok((StatusCode::CREATED, Json(Created { id })))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveDepartment {
    pub parent_id: DeptId,
}

/// Move a department (with its subtree) under another; a cycle is refused. Every affected user's access changes
/// at their next request: no recalculation job.
#[utoipa::path(patch, path = "/api/v1/admin/departments/{id}", tag = "administration", security(("bearer" = [])),
    params(("id" = i64, Path)), request_body = MoveDepartment,
    responses((status = 204), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn move_department(
    State(state): State<AppState>,
    Authed(p): Authed,
    Path(id): Path<i64>,
    ApiJson(m): ApiJson<MoveDepartment>,
) -> Result<StatusCode, ApiError> {
    state.store.scoped(p).admin_move_department(id, m.parent_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplainFor {
    pub user: UserId,
    pub module: String,
    pub record: i64,
    pub action: Option<String>,
}

/// May user U do action A on record R, and which rule path decides?
#[utoipa::path(get, path = "/api/v1/admin/explain", tag = "administration", security(("bearer" = [])),
    params(("user" = i64, Query), ("module" = String, Query), ("record" = i64, Query), ("action" = Option<String>, Query)),
    responses((status = 200, body = Object), (status = 404, body = Problem)))]
pub async fn explain(
    State(state): State<AppState>,
    Authed(p): Authed,
    Query(q): Query<ExplainFor>,
) -> Result<Json<Explanation>, ApiError> {
    let module = record_module(&q.module)?;
    let action = match q.action.as_deref() {
        None => Action::View,
        Some(a) => a.parse().map_err(|_| ApiError::bad_request(format!("unknown action {a}")))?,
    };
    Ok(Json(state.store.scoped(p).explain_for(q.user, module, action, q.record).await?))
}

/// Every user who can view a record, and why.
#[utoipa::path(get, path = "/api/v1/admin/access/{module}/{id}", tag = "administration", security(("bearer" = [])),
    params(("module" = String, Path), ("id" = i64, Path)), responses((status = 200, body = Object), (status = 404, body = Problem)))]
pub async fn who_can_see(
    State(state): State<AppState>,
    Authed(p): Authed,
    Path((module, id)): Path<(String, i64)>,
) -> Result<Json<Vec<WhoCanSee>>, ApiError> {
    let module = record_module(&module)?;
    Ok(Json(state.store.scoped(p).who_can_see(module, id).await?))
}
