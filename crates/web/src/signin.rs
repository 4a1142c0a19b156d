//! Sign-in with its second-factor step, sign-out and the language switch. Sign-in goes through the same
//! `SystemAccess::sign_in_with` as `POST /api/v1/session` with `"cookie": true`, so the browser gets the same
//! session cookie and every rule of the sign-in flow (same answer for every failure, throttling, MFA) holds.
//!
//! Before a session exists there is no session CSRF token, so the sign-in forms use a double-submit token: a
//! random value in a `SameSite=Strict` cookie that the form must repeat (no login CSRF).

use crate::error::{PageError, render};
use crate::i18n::{LANG_COOKIE, Lang, cookie};
use crate::viewer::{AnySessionForm, Chrome, PagePath, lang_of, safe_back};
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use crm_api::AppState;
use crm_api::client::Client;
use crm_api::session_cookie;
use crm_store::{SignInFailure, SignInOutcome, SignInRequest, SignedIn};
use serde::Deserialize;

const SIGNIN_COOKIE: &str = "crm_signin";

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignInPage {
    chrome: Chrome,
    csrf: String,
    username: String,
    error: Option<&'static str>,
}

#[derive(Template)]
#[template(path = "sign_in_mfa.html")]
struct MfaPage {
    chrome: Chrome,
    csrf: String,
    mfa_token: String,
}

fn new_token() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

fn signin_cookie(token: &str, https: bool) -> HeaderValue {
    let secure = if https { "; Secure" } else { "" };
    HeaderValue::from_str(&format!("{SIGNIN_COOKIE}={token}; Path=/app/sign-in; HttpOnly; SameSite=Strict{secure}"))
        .unwrap_or_else(|_| HeaderValue::from_static("crm_signin=; Path=/app/sign-in; Max-Age=0"))
}

fn sign_in_page(lang: Lang, client: &Client, username: String, error: Option<&'static str>) -> Response {
    let csrf = new_token();
    let page = SignInPage { chrome: Chrome::anonymous(lang, "signin.title", "/app/sign-in"), csrf, username, error };
    let status = if error.is_some() { StatusCode::UNAUTHORIZED } else { StatusCode::OK };
    let mut r = (status, render(&page)).into_response();
    r.headers_mut().insert(header::SET_COOKIE, signin_cookie(&page.csrf, client.https));
    r
}

pub async fn form(headers: HeaderMap, client: Client) -> Response {
    sign_in_page(lang_of(&headers), &client, String::new(), None)
}

#[derive(Deserialize)]
pub struct SignInForm {
    username: String,
    password: String,
    signin_csrf: String,
}

/// The double-submit check: the form repeats the cookie's random value.
fn signin_csrf_ok(headers: &HeaderMap, given: &str) -> bool {
    let expected = cookie(headers, SIGNIN_COOKIE);
    session_cookie::csrf_matches(expected.as_deref(), Some(given))
}

pub async fn submit(
    State(state): State<AppState>,
    client: Client,
    headers: HeaderMap,
    axum::Form(f): axum::Form<SignInForm>,
) -> Response {
    let lang = lang_of(&headers);
    if !signin_csrf_ok(&headers, &f.signin_csrf) {
        return sign_in_page(lang, &client, f.username, Some("signin.form_expired"));
    }
    if f.username.len() > 200 || f.password.len() > 1024 {
        return sign_in_page(lang, &client, String::new(), Some("signin.failed"));
    }
    let request = SignInRequest {
        organization: None,
        username: &f.username,
        password: &f.password,
        otp: None,
        recovery_code: None,
        cookie: true,
    };
    match state.store.unscoped_system_access().sign_in_with(&request, &client.info).await {
        Ok(SignInOutcome::Signed(s)) => signed_in(&state, s, &client, &headers).await,
        Ok(SignInOutcome::MfaRequired { mfa_token, .. }) => {
            let page = MfaPage {
                chrome: Chrome::anonymous(lang, "signin.mfa_title", "/app/sign-in"),
                csrf: f.signin_csrf,
                mfa_token,
            };
            render(&page)
        }
        Err(failure) => failed(failure, lang, &client, f.username),
    }
}

fn failed(failure: SignInFailure, lang: Lang, client: &Client, username: String) -> Response {
    match failure {
        SignInFailure::Invalid => sign_in_page(lang, client, username, Some("signin.failed")),
        SignInFailure::RateLimited { .. } => {
            let mut r = sign_in_page(lang, client, username, Some("signin.rate_limited"));
            *r.status_mut() = StatusCode::TOO_MANY_REQUESTS;
            r
        }
        SignInFailure::Store(e) => PageError::from_store(e, lang).into_response(),
    }
}

#[derive(Deserialize)]
pub struct MfaForm {
    mfa_token: String,
    #[serde(default)]
    otp: String,
    #[serde(default)]
    recovery_code: String,
    signin_csrf: String,
}

pub async fn submit_mfa(
    State(state): State<AppState>,
    client: Client,
    headers: HeaderMap,
    axum::Form(f): axum::Form<MfaForm>,
) -> Response {
    let lang = lang_of(&headers);
    if !signin_csrf_ok(&headers, &f.signin_csrf) || f.mfa_token.len() > 200 {
        return sign_in_page(lang, &client, String::new(), Some("signin.form_expired"));
    }
    let otp = Some(f.otp.trim()).filter(|s| !s.is_empty());
    let recovery = Some(f.recovery_code.trim()).filter(|s| !s.is_empty());
    match state.store.unscoped_system_access().complete_mfa(&f.mfa_token, otp, recovery, true, &client.info).await {
        Ok(s) => signed_in(&state, s, &client, &headers).await,
        Err(SignInFailure::Invalid) => sign_in_page(lang, &client, String::new(), Some("signin.mfa_failed")),
        Err(failure) => failed(failure, lang, &client, String::new()),
    }
}

/// A new session: the browser's previous one (if any) ends, the cookie is set, and the viewer goes home (or to
/// the enrolment page when a role requires a second factor they do not have yet).
async fn signed_in(state: &AppState, s: SignedIn, client: &Client, headers: &HeaderMap) -> Response {
    if let Some(old) = session_cookie::session_cookie(headers)
        && let Err(e) = state.store.unscoped_system_access().end_session_by_token(&old).await
    {
        tracing::warn!(error = %e, "could not end the replaced session");
    }
    let to = if s.mfa_enrollment_required { "/app/account/mfa" } else { "/app" };
    let mut r = Redirect::to(to).into_response();
    let max_age = (s.expires_at - now_ms()) / 1000;
    r.headers_mut().append(header::SET_COOKIE, session_cookie::set_cookie(&s.token, max_age, client.https));
    r.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_static("crm_signin=; Path=/app/sign-in; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    r
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

#[derive(Deserialize)]
pub struct CsrfOnly {}

pub async fn sign_out(
    State(state): State<AppState>,
    client: Client,
    AnySessionForm(v, CsrfOnly {}): AnySessionForm<CsrfOnly>,
) -> Response {
    if let Err(e) = state.store.unscoped_system_access().end_session(&v.session, &client.info).await {
        return PageError::from_store(e, v.lang).into_response();
    }
    let mut r = Redirect::to("/app/sign-in").into_response();
    r.headers_mut().insert(header::SET_COOKIE, session_cookie::clear_cookie(client.https));
    r
}

#[derive(Deserialize)]
pub struct Back {
    back: Option<String>,
}

/// Switches the language (a preference cookie, not a server-side change, so a plain link does it) and returns to
/// the page the viewer was on.
pub async fn switch_language(Path(code): Path<String>, Query(q): Query<Back>, _: PagePath) -> Response {
    let back = safe_back(q.back.as_deref().unwrap_or("/app"));
    let Some(lang) = Lang::parse(&code) else { return Redirect::to(&back).into_response() };
    let mut r = Redirect::to(&back).into_response();
    let value = format!("{LANG_COOKIE}={}; Path=/; Max-Age=31536000; SameSite=Lax", lang.code());
    if let Ok(v) = HeaderValue::from_str(&value) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}
