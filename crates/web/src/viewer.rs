//! Who is looking, in which language: the signed-in viewer of a page and the page chrome (navigation, language
//! switch, CSRF token) every template shares. A request without a live session is sent to the sign-in page; a
//! session that must first enrol a second factor is sent to the enrolment page.

use crate::error::PageError;
use crate::i18n::Lang;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use crm_api::AppState;
use crm_api::error::ApiError;
use crm_api::extract::{AuthedSession, SessionForm};
use crm_domain::{Action, Module};
use crm_store::{Authenticated, Principal, Restriction};

/// A signed-in viewer with a fully usable session.
pub struct Viewer {
    pub session: Authenticated,
    pub lang: Lang,
}

/// A form post by a signed-in viewer (CSRF checked), with a fully usable session.
pub struct ViewerForm<T> {
    pub viewer: Viewer,
    pub form: T,
}

/// A signed-in viewer whose session may be restricted to enrolling a second factor (the account pages).
pub struct AnySession(pub Viewer);

/// A form post of [`AnySession`].
pub struct AnySessionForm<T>(pub Viewer, pub T);

impl Viewer {
    pub fn principal(&self) -> &Principal {
        &self.session.principal
    }
    /// A time (ms since the epoch) in the organization's time zone and the viewer's language.
    pub fn datetime(&self, ms: i64) -> String {
        self.lang.datetime_in(ms, &self.session.time_zone)
    }
    pub fn can(&self, module: Module, action: Action) -> bool {
        self.session.principal.access.can(module, action)
    }
    /// The layout data of a page titled `title_id`.
    pub fn chrome(&self, title_id: &str, path: &str) -> Chrome {
        let restricted = self.session.restriction.is_some();
        let modules = if restricted {
            Vec::new()
        } else {
            Module::RECORDS
                .into_iter()
                .filter(|m| self.can(*m, Action::View))
                .map(|m| NavItem { href: format!("/app/r/{m}"), label: self.lang.label("module", m.as_str()) })
                .collect()
        };
        Chrome {
            lang: self.lang,
            title: self.lang.t(title_id).to_string(),
            csrf: self.session.csrf_token.clone().unwrap_or_default(),
            signed_in: true,
            modules,
            admin: !restricted && (self.can(Module::Users, Action::View) || self.can(Module::Roles, Action::View)),
            audit: !restricted && self.can(Module::Audit, Action::View),
            path: safe_back(path),
        }
    }
}

/// A navigation entry.
pub struct NavItem {
    pub href: String,
    pub label: String,
}

/// What the layout (`base.html`) shows around every page.
pub struct Chrome {
    pub lang: Lang,
    pub title: String,
    /// The session's CSRF token, put into every form.
    pub csrf: String,
    pub signed_in: bool,
    pub modules: Vec<NavItem>,
    pub admin: bool,
    pub audit: bool,
    /// This page's path, for the language switch to return to.
    pub path: String,
}

impl Chrome {
    /// The chrome of a page for someone not signed in.
    pub fn anonymous(lang: Lang, title_id: &str, path: &str) -> Chrome {
        Chrome {
            lang,
            title: lang.t(title_id).to_string(),
            csrf: String::new(),
            signed_in: false,
            modules: Vec::new(),
            admin: false,
            audit: false,
            path: safe_back(path),
        }
    }
    /// Shorthand for templates: the message `id` in the page's language.
    pub fn t(&self, id: &str) -> &'static str {
        self.lang.t(id)
    }
    /// The language switch's link.
    pub fn switch_href(&self) -> String {
        let back: String = form_urlencoded::byte_serialize(self.path.as_bytes()).collect();
        format!("/app/lang/{}?back={back}", self.lang.other().code())
    }
}

/// Only our own pages are a place to go back to (never another site: no open redirect).
pub fn safe_back(path: &str) -> String {
    if path.starts_with("/app") && !path.starts_with("//") && !path.contains('\\') {
        path.to_string()
    } else {
        "/app".to_string()
    }
}

/// Where the request came from, for the language switch.
fn path_of(parts: &Parts) -> String {
    parts.uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/app".into())
}

/// Turns an authentication failure into a page: sign in again, or an explanation.
fn refused(e: ApiError, lang: Lang) -> Response {
    match e.status {
        StatusCode::UNAUTHORIZED => Redirect::to("/app/sign-in").into_response(),
        _ => PageError::from_api(e, lang).into_response(),
    }
}

// The error is the extractors' rejection, which axum wants as a response; it is built once per refused request.
#[allow(clippy::result_large_err)]
fn usable(a: Authenticated, lang: Lang) -> Result<Viewer, Response> {
    match a.restriction {
        None => Ok(Viewer { session: a, lang }),
        Some(Restriction::MfaEnrollment) => Err(Redirect::to("/app/account/mfa").into_response()),
        Some(Restriction::PasswordChange) => Err(PageError::new(StatusCode::FORBIDDEN, "error.forbidden", lang)
            .with_detail("change your password first (POST /api/v1/me/password)")
            .into_response()),
    }
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = Response;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let AnySession(v) = AnySession::from_request_parts(parts, state).await?;
        usable(v.session, v.lang)
    }
}

impl FromRequestParts<AppState> for AnySession {
    type Rejection = Response;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let lang = Lang::from_headers(&parts.headers);
        match AuthedSession::from_request_parts(parts, state).await {
            Ok(AuthedSession(a)) => Ok(AnySession(Viewer { session: a, lang })),
            Err(e) => Err(refused(e, lang)),
        }
    }
}

impl<T: serde::de::DeserializeOwned + Send> FromRequest<AppState> for AnySessionForm<T> {
    type Rejection = Response;
    async fn from_request(req: Request, state: &AppState) -> Result<Self, Response> {
        let lang = Lang::from_headers(req.headers());
        match SessionForm::<T>::from_request(req, state).await {
            Ok(SessionForm(a, form)) => Ok(AnySessionForm(Viewer { session: a, lang }, form)),
            Err(e) => Err(refused(e, lang)),
        }
    }
}

impl<T: serde::de::DeserializeOwned + Send> FromRequest<AppState> for ViewerForm<T> {
    type Rejection = Response;
    async fn from_request(req: Request, state: &AppState) -> Result<Self, Response> {
        let AnySessionForm(v, form) = AnySessionForm::<T>::from_request(req, state).await?;
        Ok(ViewerForm { viewer: usable(v.session, v.lang)?, form })
    }
}

/// The page's own path, for handlers that need it.
pub struct PagePath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PagePath {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(PagePath(path_of(parts)))
    }
}

/// The language of a request without a session.
pub fn lang_of(headers: &HeaderMap) -> Lang {
    Lang::from_headers(headers)
}
