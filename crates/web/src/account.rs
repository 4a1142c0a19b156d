//! The viewer's own account: sessions, sign-in history, API tokens and the second factor (TOTP enrolment with
//! recovery codes). The same `SystemAccess` self-service functions as `/api/v1/me/*`. These pages also serve a
//! session that must enrol a second factor before anything else.

use crate::error::{PageError, render};
use crate::viewer::{AnySession, AnySessionForm, Chrome, Viewer, ViewerForm};
use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use crm_api::AppState;
use crm_api::client::Client;
use crm_store::{MfaStatus, StoreError};
use serde::Deserialize;

pub struct SessionRow {
    pub started: String,
    pub last_seen: String,
    pub ip: String,
    pub agent: String,
    pub current: bool,
}

pub struct SignInRow {
    pub at: String,
    pub ip: String,
    pub agent: String,
    pub result: String,
    pub mfa: String,
}

pub struct TokenRow {
    pub id: i64,
    pub name: String,
    pub prefix: String,
    pub created: String,
    pub expires: String,
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    chrome: Chrome,
    sessions: Vec<SessionRow>,
    sign_ins: Vec<SignInRow>,
    tokens: Vec<TokenRow>,
    mfa: MfaStatus,
    /// A token just created: shown this once.
    new_token: Option<String>,
}

fn agent(s: Option<String>) -> String {
    s.unwrap_or_default().chars().take(80).collect()
}

pub async fn page(State(state): State<AppState>, v: Viewer) -> Response {
    account_page(&state, &v, None).await
}

async fn account_page(state: &AppState, v: &Viewer, new_token: Option<String>) -> Response {
    let sys = state.store.unscoped_system_access();
    let result = async {
        let sessions = sys.my_sessions(&v.session).await?;
        let sign_ins = sys.my_sign_ins(&v.session, 20).await?;
        let tokens = sys.my_api_tokens(&v.session).await?;
        let mfa = sys.mfa_status(&v.session).await?;
        Ok::<_, StoreError>((sessions, sign_ins, tokens, mfa))
    }
    .await;
    let (sessions, sign_ins, tokens, mfa) = match result {
        Ok(x) => x,
        Err(e) => return PageError::from_store(e, v.lang).into_response(),
    };
    let l = v.lang;
    render(&AccountPage {
        chrome: v.chrome("account.title", "/app/account"),
        sessions: sessions
            .into_iter()
            .map(|s| SessionRow {
                started: v.datetime(s.created_at),
                last_seen: v.datetime(s.last_seen_at),
                ip: s.ip.unwrap_or_default(),
                agent: agent(s.user_agent),
                current: s.current,
            })
            .collect(),
        sign_ins: sign_ins
            .into_iter()
            .map(|s| SignInRow {
                at: v.datetime(s.at),
                ip: s.ip.unwrap_or_default(),
                agent: agent(s.user_agent),
                result: l.label("result", &s.result),
                mfa: s.mfa.unwrap_or_default(),
            })
            .collect(),
        tokens: tokens
            .into_iter()
            .filter(|t| t.revoked_at.is_none())
            .map(|t| TokenRow {
                id: t.id,
                name: t.name,
                prefix: t.prefix,
                created: v.datetime(t.created_at),
                expires: t.expires_at.map(|e| v.datetime(e)).unwrap_or_else(|| l.t("account.never").to_string()),
            })
            .collect(),
        mfa,
        new_token,
    })
}

#[derive(Deserialize)]
pub struct NewTokenForm {
    name: String,
}

/// Creates an API token (the same rules as `POST /api/v1/me/tokens`: an account with a second factor proves it
/// again first) and shows it once.
pub async fn create_token(
    State(state): State<AppState>,
    client: Client,
    ViewerForm { viewer: v, form }: ViewerForm<NewTokenForm>,
) -> Response {
    if v.session.mfa_enabled && !v.session.step_up_fresh() {
        return PageError::new(StatusCode::FORBIDDEN, "account.step_up", v.lang).into_response();
    }
    match state.store.unscoped_system_access().create_api_token(&v.session, form.name.trim(), None, &client.info).await
    {
        Ok(t) => account_page(&state, &v, Some(t.token)).await,
        Err(e) => PageError::from_store(e, v.lang).into_response(),
    }
}

pub async fn revoke_token(
    State(state): State<AppState>,
    client: Client,
    axum::extract::Path(id): axum::extract::Path<i64>,
    ViewerForm { viewer: v, form: CsrfOnly {} }: ViewerForm<CsrfOnly>,
) -> Response {
    match state.store.unscoped_system_access().revoke_api_token(&v.session, id, &client.info).await {
        Ok(()) => axum::response::Redirect::to("/app/account").into_response(),
        Err(e) => PageError::from_store(e, v.lang).into_response(),
    }
}

/// The enrolment flow's page: its state, and (after "set up") the secret and QR code, or the recovery codes.
#[derive(Template)]
#[template(path = "mfa.html")]
struct MfaPage {
    chrome: Chrome,
    mfa: MfaStatus,
    /// Shown while enrolling: the base32 secret and the QR code (SVG drawn by the store from our own data).
    secret: Option<String>,
    qr_svg: String,
    recovery_codes: Vec<String>,
    error: Option<&'static str>,
}

fn mfa_view(v: &Viewer, mfa: MfaStatus) -> MfaPage {
    MfaPage {
        chrome: v.chrome("account.mfa", "/app/account/mfa"),
        mfa,
        secret: None,
        qr_svg: String::new(),
        recovery_codes: Vec::new(),
        error: None,
    }
}

async fn mfa_page_get(state: &AppState, v: &Viewer) -> Response {
    match state.store.unscoped_system_access().mfa_status(&v.session).await {
        Ok(mfa) => render(&mfa_view(v, mfa)),
        Err(e) => PageError::from_store(e, v.lang).into_response(),
    }
}

pub async fn mfa_page(State(state): State<AppState>, AnySession(v): AnySession) -> Response {
    mfa_page_get(&state, &v).await
}

#[derive(Deserialize)]
pub struct CsrfOnly {}

/// "Set up an authenticator": a new secret (the store keeps it pending until confirmed with a code).
pub async fn mfa_begin(
    State(state): State<AppState>,
    AnySessionForm(v, CsrfOnly {}): AnySessionForm<CsrfOnly>,
) -> Response {
    let sys = state.store.unscoped_system_access();
    // Replacing a working factor needs a fresh proof, as in the API; the page offers enrolment only without one.
    if v.session.mfa_enabled && !v.session.step_up_fresh() {
        return PageError::new(StatusCode::FORBIDDEN, "account.step_up", v.lang).into_response();
    }
    let result =
        async { Ok::<_, StoreError>((sys.totp_begin(&v.session).await?, sys.mfa_status(&v.session).await?)) }.await;
    match result {
        Ok((enrolment, mfa)) => {
            let mut page = mfa_view(&v, mfa);
            page.secret = Some(enrolment.secret);
            page.qr_svg = enrolment.qr_svg;
            render(&page)
        }
        Err(e) => PageError::from_store(e, v.lang).into_response(),
    }
}

#[derive(Deserialize)]
pub struct ConfirmForm {
    code: String,
}

pub async fn mfa_confirm(
    State(state): State<AppState>,
    client: Client,
    AnySessionForm(v, f): AnySessionForm<ConfirmForm>,
) -> Response {
    let sys = state.store.unscoped_system_access();
    match sys.totp_confirm(&v.session, f.code.trim(), &client.info).await {
        Ok(codes) => match sys.mfa_status(&v.session).await {
            Ok(mfa) => {
                let mut page = mfa_view(&v, mfa);
                page.recovery_codes = codes;
                render(&page)
            }
            Err(e) => PageError::from_store(e, v.lang).into_response(),
        },
        Err(StoreError::Invalid(_) | StoreError::Forbidden(_) | StoreError::BadQuery(_)) => {
            match sys.mfa_status(&v.session).await {
                Ok(mfa) => {
                    let mut page = mfa_view(&v, mfa);
                    page.error = Some("account.mfa_bad_code");
                    (StatusCode::UNPROCESSABLE_ENTITY, render(&page)).into_response()
                }
                Err(e) => PageError::from_store(e, v.lang).into_response(),
            }
        }
        Err(e) => PageError::from_store(e, v.lang).into_response(),
    }
}
