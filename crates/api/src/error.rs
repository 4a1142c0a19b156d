//! The one error type at the HTTP edge: RFC 9457 problem details. The message shown to the client is kept apart
//! from the cause written to the log; a record the caller may not read answers exactly like a missing one.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use crm_domain::ValueError;
use crm_store::StoreError;
use serde::Serialize;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// Short stable slug, rendered as the problem `type` (`/problems/<slug>`).
    pub kind: &'static str,
    pub title: &'static str,
    pub detail: String,
    pub errors: Vec<ValueError>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI reference naming the kind of problem, e.g. `/problems/validation`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Field-level errors for validation problems.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    pub errors: Vec<ValueError>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, title: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError { status, kind, title, detail: detail.into(), errors: Vec::new() }
    }
    /// The same status with a more specific problem type (`/problems/<kind>`) and title.
    pub fn kind(mut self, kind: &'static str, title: &'static str) -> ApiError {
        self.kind = kind;
        self.title = title;
        self
    }
    pub fn bad_request(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad-request", "Bad request", detail)
    }
    pub fn not_found() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not-found", "Not found", "no such resource")
    }
    pub fn unauthorized() -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized", "sign in first: POST /api/v1/session")
    }
    pub fn forbidden(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden", detail)
    }
    pub fn validation(errors: Vec<ValueError>) -> ApiError {
        let detail = errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; ");
        ApiError { errors, ..ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "validation", "Invalid input", detail) }
    }
    fn internal() -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "the server could not complete the request",
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::NotFound => ApiError::not_found(),
            StoreError::Forbidden(m) => ApiError::forbidden(m),
            StoreError::Invalid(errors) => ApiError::validation(errors),
            StoreError::BadQuery(m) => ApiError::bad_request(m),
            StoreError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", "Conflict", m),
            StoreError::Blocked(crm_store::BlockKind::StepUpRequired, m) => {
                ApiError::forbidden(m).kind("step-up-required", "Step-up required")
            }
            StoreError::Blocked(crm_store::BlockKind::Monitoring, m) => {
                ApiError::forbidden(m).kind("blocked-by-monitoring", "Blocked by monitoring")
            }
            StoreError::Config(m) => {
                tracing::error!(cause = %m, "configuration error");
                ApiError::internal()
            }
            e if e.is_busy() => {
                tracing::warn!("database pool timed out");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "Service unavailable",
                    "the database is busy; retry shortly",
                )
            }
            StoreError::Db(e) => {
                tracing::error!(cause = %e, "database error");
                ApiError::internal()
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Problem {
            kind: format!("/problems/{}", self.kind),
            title: self.title.to_string(),
            status: self.status.as_u16(),
            detail: self.detail,
            errors: self.errors,
        };
        let json = serde_json::to_vec(&body).unwrap_or_default();
        let mut r = (self.status, [(header::CONTENT_TYPE, "application/problem+json")], json).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            // RFC 9110 §11.6.1: a 401 names the scheme to authenticate with.
            r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer realm=\"crm\""));
        }
        r
    }
}
