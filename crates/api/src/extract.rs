//! Request extractors: JSON bodies whose every rejection is a problem document, and the signed-in principal
//! (bearer token or session cookie with CSRF protection; see [`crate::session_cookie`]).

use crate::AppState;
use crate::client::Client;
use crate::error::ApiError;
use crate::session_cookie;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use crm_store::auth::Denial;
use crm_store::{AuthOutcome, Authenticated, Credential, Principal, Restriction};
use std::sync::Arc;

/// `Json<T>` with problem-detail rejections: malformed JSON, wrong types, unknown fields, wrong content type and
/// oversize bodies each get a specific 4xx.
pub struct ApiJson<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(r) => Err(json_rejection(r)),
        }
    }
}

pub fn json_rejection(r: JsonRejection) -> ApiError {
    match r {
        JsonRejection::JsonDataError(e) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-body", "Invalid body", e.body_text())
        }
        JsonRejection::JsonSyntaxError(e) => {
            ApiError::new(StatusCode::BAD_REQUEST, "malformed-json", "Malformed JSON", e.body_text())
        }
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            "send the body as application/json",
        ),
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            "Payload too large",
            "the request body is too large",
        ),
        other => ApiError::bad_request(other.body_text()),
    }
}

/// The signed-in principal of a fully usable session or API token: `Authorization: Bearer <token>`, or the
/// session cookie (with the CSRF token on state-changing requests, see [`crate::session_cookie`]). 401 without a
/// live credential; 403 when the organization's network or time policy refuses the request
/// (`/problems/access-restricted`) or the account must change its password or enrol a second factor first
/// (`/problems/password-change-required`, `/problems/mfa-enrollment-required`).
pub struct Authed(pub Principal);

/// Any live session or API token, including one restricted to fixing its account (changing the password,
/// enrolling a second factor): for the account's own endpoints.
pub struct AuthedSession(pub Authenticated);

/// A session that proved its user within the organization's step-up window (`POST /api/v1/session/step-up`), for
/// sensitive features such as export or reveal; 403 `/problems/step-up-required` otherwise.
pub struct StepUp(pub Principal);

/// A URL-encoded form post from a browser: the principal and the form, whose `csrf_token` field stands in for the
/// CSRF header. `T` must accept (or ignore) a `csrf_token` field.
pub struct AuthedForm<T>(pub Principal, pub T);

/// A URL-encoded form post from a browser by any live session, including one restricted to fixing its account
/// (the web UI's own pages decide what such a session may do): the authentication and the form, whose
/// `csrf_token` field stands in for the CSRF header.
pub struct SessionForm<T>(pub Authenticated, pub T);

/// The request's authentication, resolved once and kept in the request's extensions.
#[derive(Clone)]
struct Resolved(Arc<Authenticated>);

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn csrf_refused() -> ApiError {
    ApiError::forbidden("a state-changing request made with the session cookie needs its CSRF token (X-CSRF-Token header or csrf_token field)")
        .kind("csrf", "CSRF token missing or wrong")
}

/// Authenticates the request. `form_csrf` is the CSRF field of a form body (read by [`AuthedForm`]).
async fn resolve(parts: &mut Parts, state: &AppState, form_csrf: Option<&str>) -> Result<Arc<Authenticated>, ApiError> {
    if let Some(r) = parts.extensions.get::<Resolved>() {
        return Ok(Arc::clone(&r.0));
    }
    let (token, by_cookie) = match parts.headers.get(axum::http::header::AUTHORIZATION) {
        Some(h) => {
            let token =
                h.to_str().ok().and_then(|h| h.strip_prefix("Bearer ")).map(str::trim).filter(|t| !t.is_empty());
            (token.map(str::to_string), false)
        }
        None => (session_cookie::session_cookie(&parts.headers), true),
    };
    let Some(token) = token else { return Err(ApiError::unauthorized()) };
    if token.len() > 256 {
        return Err(ApiError::unauthorized());
    }
    let client = Client::from_parts(parts);
    let a = match state.store.unscoped_system_access().authenticate_from(&token, &client.info).await? {
        AuthOutcome::Valid(a) => a,
        AuthOutcome::Invalid => return Err(ApiError::unauthorized()),
        AuthOutcome::Denied(d) => {
            return Err(ApiError::forbidden(match d {
                Denial::Network => "your organization does not allow access from this network",
                Denial::Hours => "your organization does not allow access at this time",
            })
            .kind("access-restricted", "Access restricted"));
        }
    };
    if by_cookie {
        // A cookie must hold a browser session; bearer credentials are not accepted from cookies.
        if !matches!(a.credential, Credential::Session { cookie: true, .. }) {
            return Err(ApiError::unauthorized());
        }
        if !is_safe(&parts.method) {
            let header = parts.headers.get(session_cookie::CSRF_HEADER).and_then(|h| h.to_str().ok());
            if !session_cookie::csrf_matches(a.csrf_token.as_deref(), header.or(form_csrf)) {
                return Err(csrf_refused());
            }
        }
    }
    let a = Arc::new(*a);
    parts.extensions.insert(Resolved(Arc::clone(&a)));
    Ok(a)
}

fn usable(a: &Authenticated) -> Result<Principal, ApiError> {
    match a.restriction {
        None => Ok(a.principal.clone()),
        Some(Restriction::PasswordChange) => {
            Err(ApiError::forbidden("change your password first: POST /api/v1/me/password")
                .kind("password-change-required", "Password change required"))
        }
        Some(Restriction::MfaEnrollment) => Err(ApiError::forbidden(
            "your role requires a second factor: enrol one at POST /api/v1/me/mfa/totp, then confirm it",
        )
        .kind("mfa-enrollment-required", "Second factor required")),
    }
}

impl FromRequestParts<AppState> for Authed {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let a = resolve(parts, state, None).await?;
        Ok(Authed(usable(&a)?))
    }
}

impl FromRequestParts<AppState> for AuthedSession {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Ok(AuthedSession((*resolve(parts, state, None).await?).clone()))
    }
}

impl FromRequestParts<AppState> for StepUp {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let a = resolve(parts, state, None).await?;
        let p = usable(&a)?;
        if !a.step_up_fresh() {
            return Err(step_up_required());
        }
        Ok(StepUp(p))
    }
}

/// 403 `/problems/step-up-required`.
pub fn step_up_required() -> ApiError {
    ApiError::forbidden("confirm it is you first: POST /api/v1/session/step-up with a code (or your password if you have no second factor)")
        .kind("step-up-required", "Step-up required")
}

impl<T: serde::de::DeserializeOwned + Send> FromRequest<AppState> for AuthedForm<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let SessionForm(a, form) = SessionForm::<T>::from_request(req, state).await?;
        Ok(AuthedForm(usable(&a)?, form))
    }
}

impl<T: serde::de::DeserializeOwned + Send> FromRequest<AppState> for SessionForm<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let (mut parts, body) = req.into_parts();
        let bytes = axum::body::to_bytes(body, crate::MAX_JSON_BYTES).await.map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Payload too large",
                "the request body is too large",
            )
        })?;
        let csrf =
            form_urlencoded::parse(&bytes).find(|(k, _)| k == session_cookie::CSRF_FIELD).map(|(_, v)| v.into_owned());
        let a = resolve(&mut parts, state, csrf.as_deref()).await?;
        let req = Request::from_parts(parts, axum::body::Body::from(bytes));
        let axum::Form(form) = axum::Form::<T>::from_request(req, state).await.map_err(|e| {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-body", "Invalid body", e.body_text())
        })?;
        Ok(SessionForm((*a).clone(), form))
    }
}
