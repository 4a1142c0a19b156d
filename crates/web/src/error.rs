//! Errors as pages: a translated message with the right status, never a stack trace and never data. A record the
//! viewer may not read gets the same page as a missing one (the store answers both with `NotFound`).

use crate::i18n::Lang;
use crate::viewer::Chrome;
use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use crm_api::error::ApiError;
use crm_store::StoreError;

pub struct PageError {
    pub status: StatusCode,
    /// The catalog id of the message.
    pub message: &'static str,
    /// A detail the store gave (a conflict's reason, a validation message); never record data.
    pub detail: Option<String>,
    pub lang: Lang,
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    chrome: Chrome,
    message: &'a str,
    detail: Option<&'a str>,
}

impl PageError {
    pub fn new(status: StatusCode, message: &'static str, lang: Lang) -> PageError {
        PageError { status, message, detail: None, lang }
    }
    pub fn with_detail(mut self, detail: impl Into<String>) -> PageError {
        self.detail = Some(detail.into());
        self
    }
    pub fn from_store(e: StoreError, lang: Lang) -> PageError {
        PageError::from_api(ApiError::from(e), lang)
    }
    /// One mapping for every error the API layer knows (the same one the JSON API uses, so the logged cause
    /// stays apart from what the user sees).
    pub fn from_api(e: ApiError, lang: Lang) -> PageError {
        let message = match (e.status, e.kind) {
            (StatusCode::NOT_FOUND, _) => "error.not_found",
            (StatusCode::FORBIDDEN, "csrf") => "error.csrf",
            (StatusCode::FORBIDDEN, "access-restricted") => "error.restricted",
            (StatusCode::FORBIDDEN, _) => "error.forbidden",
            (StatusCode::CONFLICT, _) => "error.conflict",
            (s, _) if s.is_client_error() => "error.bad_request",
            _ => "error.internal",
        };
        // Details of client errors are the store's own words about the request (which rule refused, which field is
        // wrong), never record values; server errors keep their cause in the log only.
        let detail = (e.status.is_client_error() && e.status != StatusCode::NOT_FOUND).then_some(e.detail);
        PageError { status: e.status, message, detail, lang }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let page = ErrorPage {
            chrome: Chrome::anonymous(self.lang, "error.title", "/app"),
            message: self.lang.t(self.message),
            detail: self.detail.as_deref(),
        };
        (self.status, render(&page)).into_response()
    }
}

/// Renders a template; a rendering failure (a bug) is a plain 500 page.
pub fn render<T: Template>(t: &T) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "template rendering failed");
            (StatusCode::INTERNAL_SERVER_ERROR, Html("<!doctype html><title>500</title><p>Internal error</p>"))
                .into_response()
        }
    }
}
