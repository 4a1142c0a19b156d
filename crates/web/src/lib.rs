//! The web UI: server-rendered pages in Simplified Chinese and English under `/app`, served by the same binary as
//! the API and signed in with the same session cookie. Handlers call the same store functions as the JSON API
//! (`Store::scoped` for everything about records), and templates render view models built only from what the
//! scoped store returned: a field the viewer may not read is not in the view model, so it cannot be in the HTML.
//!
//! Security: every page carries a strict CSP (no inline script or style), `frame-ancestors 'none'`, `nosniff`; every
//! form carries the session's CSRF token (checked by `crm_api::extract::SessionForm`); askama escapes every value.

mod account;
mod admin;
mod alerts;
mod assets;
mod audit;
mod csv_import;
mod error;
mod groups;
mod guide;
pub mod i18n;
mod partitions;
mod records;
mod rules;
mod security;
mod signin;
mod user_admin;
mod view;
mod view_as;
mod viewer;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{Redirect, Response};
use axum::routing::{get, post};
use crm_api::AppState;

pub use view::{FieldView, record_fields};

/// The UI's routes: `/` redirects to `/app`.
pub fn routes() -> Router<AppState> {
    let app = Router::new()
        .route("/app", get(records::home))
        .route("/app/sign-in", get(signin::form).post(signin::submit))
        .route("/app/sign-in/mfa", post(signin::submit_mfa))
        .route("/app/sign-out", post(signin::sign_out))
        .route("/app/lang/{code}", get(signin::switch_language))
        .route("/app/static/app.css", get(assets::css))
        .route("/app/static/app.js", get(assets::js))
        .route("/app/static/alerts.js", get(assets::alerts_js))
        .route("/app/alerts", get(alerts::list))
        .route("/app/alerts/{id}", get(alerts::show))
        .route("/app/alerts/{id}/acknowledge", post(alerts::acknowledge))
        .route("/app/alerts/{id}/resolve", post(alerts::resolve))
        .route("/app/alerts/{id}/assign", post(alerts::assign))
        .route("/app/guide", get(guide::page))
        .route("/app/account", get(account::page))
        .route("/app/account/mfa", get(account::mfa_page).post(account::mfa_begin))
        .route("/app/account/mfa/confirm", post(account::mfa_confirm))
        .route("/app/admin", get(admin::index))
        .route("/app/admin/users", get(admin::users))
        .route("/app/admin/users/{id}/status", post(admin::set_user_status))
        .route("/app/admin/users/{id}", get(user_admin::show).post(user_admin::save))
        .route("/app/admin/users/{id}/reset-password", post(user_admin::reset_password))
        .route("/app/admin/users/{id}/view", get(view_as::index))
        .route("/app/admin/users/{id}/view/r/{module}", get(view_as::list))
        .route("/app/admin/users/{id}/view/r/{module}/{record}", get(view_as::record))
        .route("/app/admin/users/{id}/reset-mfa", post(user_admin::reset_mfa))
        .route("/app/admin/roles/{id}", get(admin::role).post(admin::save_role))
        .route("/app/admin/explain", get(admin::explain))
        .route("/app/audit", get(audit::page))
        .route("/app/r/{module}", get(records::list))
        .route("/app/r/{module}/{id}", get(records::record))
        .route("/app/r/{module}/{id}/edit", get(records::edit_form).post(records::save))
        .route("/app/r/{module}/{id}/reveal/{field}", post(records::reveal))
        .route("/app/r/{module}/{id}/share", post(records::share))
        .route("/app/account/tokens", post(account::create_token))
        .route("/app/account/tokens/{id}/revoke", post(account::revoke_token))
        .route("/app/admin/users/new", post(admin::create_user))
        .route("/app/admin/departments", get(admin::departments).post(admin::create_department))
        .route("/app/admin/departments/move", post(admin::move_department))
        .route("/app/admin/policy", get(admin::policy_overview))
        .route("/app/admin/policy/defaults", post(admin::save_defaults))
        .route("/app/admin/rules", get(rules::page).post(rules::create))
        .route("/app/admin/groups", get(groups::page).post(groups::create))
        .route("/app/admin/partitions", get(partitions::page).post(partitions::create))
        .route("/app/admin/partitions/{id}/delete", post(partitions::delete))
        .route("/app/admin/groups/{id}/delete", post(groups::delete))
        .route("/app/admin/rules/{kind}/{id}/delete", post(rules::delete))
        .route("/app/r/{module}/{id}/why", get(records::why))
        .route("/app/admin/security", get(security::show).post(security::save))
        .route("/app/r/{module}/import", get(csv_import::form).post(csv_import::submit))
        // Any other page under /app: the UI's own not-found page, not the API's JSON problem.
        .route("/app/{*rest}", get(not_found))
        .layer(middleware::from_fn(security_headers));
    Router::new().route("/", get(|| async { Redirect::to("/app") })).merge(app)
}

async fn not_found(headers: axum::http::HeaderMap) -> error::PageError {
    error::PageError::new(axum::http::StatusCode::NOT_FOUND, "error.not_found", i18n::Lang::from_headers(&headers))
}

/// The content security policy of every UI page: scripts and styles only from our own files (no inline code, so
/// an injected `<script>` or `onclick` does not run), never framed, forms post only to us.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                       frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'";

async fn security_headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    if !h.contains_key(header::CACHE_CONTROL) {
        // Pages hold customer data: never kept by shared caches or the back-forward cache after sign-out.
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}
