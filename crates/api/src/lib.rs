//! The HTTP edge: REST API under `/api/v1`, problem details, OpenAPI at `/api/openapi.json` (browsable at
//! `/api/docs`), health and metrics. The only crate that knows HTTP; it reaches data only through the store's
//! scoped handle or its named system path.

pub mod client;
pub mod error;
pub mod extract;
mod openapi;
pub mod routes;
pub mod session_cookie;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use crm_store::Store;
use error::ApiError;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

pub use openapi::ApiDoc;

/// Largest accepted request body (JSON and CSV).
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Largest accepted JSON body.
pub const MAX_JSON_BYTES: usize = 1024 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub metrics: PrometheusHandle,
}

/// The process-wide metrics recorder (installed once; later calls share it).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is installed (tests building several apps): then we still render ours.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

async fn track_metrics(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let path =
        req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    let labels = [("method", method), ("path", path), ("status", status)];
    metrics::counter!("crm_http_requests_total", &labels).increment(1);
    metrics::histogram!("crm_http_request_duration_seconds", &labels).record(started.elapsed().as_secs_f64());
    response
}

/// The request's audit context (request id, client address, user agent): every audit entry the request writes
/// carries it. The address is the peer's, or the client a trusted proxy forwarded (see [`client`]).
async fn audit_context(req: Request, next: Next) -> Response {
    let h = req.headers();
    let text = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).map(|s| s.chars().take(300).collect::<String>());
    // `X-Forwarded-For` only from a trusted proxy (`client::client_ip`): a client cannot write its own address.
    let net = req.extensions().get::<std::sync::Arc<client::NetConfig>>().cloned().unwrap_or_default();
    let peer = req.extensions().get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip());
    let ip = client::client_ip(peer, h, &net).map(|ip| ip.to_string());
    let ctx = crm_store::RequestContext::new(text("x-request-id"), ip, text("user-agent"));
    crm_store::with_request_context(ctx, next.run(req)).await
}

/// Refused requests (403, 404) of a signed-in user feed the monitoring rule against probing (recorded beside the
/// audit trail, which records what happened rather than what was tried).
async fn record_denials(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let (method, path) = (req.method().to_string(), req.uri().path().to_string());
    let response = next.run(req).await;
    let status = response.status();
    if (status == StatusCode::FORBIDDEN || status == StatusCode::NOT_FOUND)
        && let Err(e) = state.store.record_denial(status.as_u16(), &method, &path).await
    {
        tracing::warn!(error = %e, "could not record a refused request for monitoring");
    }
    response
}

async fn not_found() -> ApiError {
    ApiError::not_found()
}

/// Turns axum's plain-text rejections that escape handlers (405, 413 from the body limit) into problem documents.
async fn problem_for_plain_errors(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    let is_problem = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if is_problem || status.is_success() || status.is_redirection() || status.is_informational() {
        return response;
    }
    let (kind, title, fixed_detail) = match status {
        StatusCode::METHOD_NOT_ALLOWED => {
            ("method-not-allowed", "Method not allowed", Some("this resource does not support that method"))
        }
        StatusCode::PAYLOAD_TOO_LARGE => {
            ("payload-too-large", "Payload too large", Some("the request body is too large"))
        }
        // axum's own rejections (a malformed path or query string) are plain text: they get the problem shape too.
        StatusCode::NOT_FOUND => ("not-found", "Not found", None),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported-media-type", "Unsupported media type", None),
        StatusCode::UNPROCESSABLE_ENTITY => ("invalid-body", "Invalid body", None),
        s if s.is_client_error() => ("bad-request", "Bad request", None),
        _ => return response,
    };
    if fixed_detail.is_none() && !is_plain_text(&response) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let detail = match fixed_detail {
        Some(d) => d.to_string(),
        None => match axum::body::to_bytes(body, 4096).await {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(_) => String::new(),
        },
    };
    // Keep the original headers (`Allow` on 405, `Retry-After`, …) except the body's own.
    let mut problem = ApiError::new(status, kind, title, detail).into_response();
    for (name, value) in parts.headers.iter() {
        if name != axum::http::header::CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            problem.headers_mut().insert(name.clone(), value.clone());
        }
    }
    problem
}

fn is_plain_text(response: &Response) -> bool {
    response.headers().get(axum::http::header::CONTENT_TYPE).is_none_or(|v| v.as_bytes().starts_with(b"text/plain"))
}

fn panic_to_problem(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("handler panicked");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "Internal error",
        "the server could not complete the request",
    )
    .into_response()
}

/// The whole application router, with the default network settings (no trusted proxy).
pub fn router(state: AppState) -> Router {
    router_with(state, client::NetConfig::default())
}

/// The whole application router with the HTTP edge's network settings (trusted proxies, secure cookies).
pub fn router_with(state: AppState, net: client::NetConfig) -> Router {
    build(state, net, None)
}

/// The application router with a user interface: `ui`'s routes (the web crate's pages, which own `/`) are merged
/// before the shared layers, so they get the same request ids, audit context, metrics and network settings as
/// the API. (The API crate cannot depend on the UI crate; the binary passes it in.)
pub fn router_with_ui(state: AppState, net: client::NetConfig, ui: Router<AppState>) -> Router {
    build(state, net, Some(ui))
}

fn build(state: AppState, net: client::NetConfig, ui: Option<Router<AppState>>) -> Router {
    use routes::{account, admin, monitor, ops, records, security, session};
    let denials = middleware::from_fn_with_state(state.clone(), record_denials);
    let api = Router::new()
        .route("/api/v1/session/mfa", post(session::complete_mfa))
        .route("/api/v1/session/step-up", post(account::step_up))
        .route("/api/v1/me/password", post(account::change_password))
        .route("/api/v1/me/sessions", get(account::sessions).delete(account::sign_out_everywhere))
        .route("/api/v1/me/sessions/{id}", axum::routing::delete(account::end_session))
        .route("/api/v1/me/sign-ins", get(account::sign_ins))
        .route("/api/v1/me/tokens", get(account::tokens).post(account::create_token))
        .route("/api/v1/me/tokens/{id}", axum::routing::delete(account::revoke_token))
        .route("/api/v1/me/mfa", get(account::mfa))
        .route("/api/v1/me/mfa/totp", post(account::totp_begin))
        .route("/api/v1/me/mfa/totp/confirm", post(account::totp_confirm))
        .route("/api/v1/me/mfa/totp/disable", post(account::totp_disable))
        .route("/api/v1/me/mfa/recovery-codes", post(account::recovery_codes))
        .route("/api/v1/admin/security", get(security::get_settings).put(security::put_settings))
        .route("/api/v1/admin/sign-ins", get(security::sign_ins))
        .route("/api/v1/admin/users/{id}/security", get(security::user_security))
        .route("/api/v1/admin/users/{id}/password", post(security::reset_password))
        .route("/api/v1/admin/users/{id}/unlock", post(security::unlock))
        .route("/api/v1/admin/users/{id}/mfa/reset", post(security::reset_mfa))
        .route("/api/v1/admin/users/{id}/sessions", axum::routing::delete(security::end_sessions))
        .route("/api/v1/admin/policy", get(admin::get_policy).put(admin::put_policy))
        .route("/api/v1/admin/users", get(admin::list_users).post(admin::create_user))
        .route("/api/v1/admin/users/{id}", axum::routing::patch(admin::update_user))
        .route("/api/v1/admin/users/{id}/permissions", get(admin::user_permissions))
        .route("/api/v1/admin/departments", get(admin::list_departments).post(admin::create_department))
        .route("/api/v1/admin/departments/{id}", axum::routing::patch(admin::move_department))
        .route("/api/v1/admin/explain", get(admin::explain))
        .route("/api/v1/admin/access/{module}/{id}", get(admin::who_can_see))
        .route("/api/v1/admin/monitoring/rules", get(monitor::get_rules).put(monitor::put_rules))
        .route("/api/v1/alerts", get(monitor::list))
        .route("/api/v1/alerts/stream", get(monitor::stream))
        .route("/api/v1/alerts/{id}", get(monitor::get))
        .route("/api/v1/alerts/{id}/acknowledge", post(monitor::acknowledge))
        .route("/api/v1/alerts/{id}/resolve", post(monitor::resolve))
        .route("/api/v1/alerts/{id}/assign", post(monitor::assign))
        .route("/api/v1/audit/events", get(routes::audit::events))
        .route("/api/v1/audit/export", get(routes::audit::export))
        .route("/api/v1/session", post(session::sign_in).delete(session::sign_out))
        .route("/api/v1/me", get(session::me))
        .route("/api/v1/{module}", get(records::list).post(records::create))
        .route("/api/v1/{module}/search", post(records::search))
        .route("/api/v1/{module}/count", get(records::count))
        .route("/api/v1/{module}/report", get(records::report))
        .route("/api/v1/{module}/{id}", get(records::get).patch(records::update).delete(records::delete))
        .route("/api/v1/{module}/{id}/explain", get(records::explain))
        .route("/api/v1/{module}/lookup", get(records::lookup))
        .route("/api/v1/{module}/{id}/shares", get(records::sharing).post(records::share))
        .route("/api/v1/{module}/{id}/shares/{kind}/{target_id}", axum::routing::delete(records::unshare))
        .route("/api/v1/{module}/{id}/team/{user_id}", put(records::put_team).delete(records::delete_team))
        .route("/api/v1/{module}/{id}/reveal/{field}", post(records::reveal))
        .route("/api/v1/{module}/{id}/{related}", get(records::related))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_JSON_BYTES));
    // CSV import and export: their own router for the larger body limit (a 16 MiB file, not a JSON document).
    let csv_api = Router::new()
        .route("/api/v1/{module}/export.csv", get(routes::csv::export_csv))
        .route("/api/v1/{module}/import", post(routes::csv::import_csv))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES));
    let app = Router::new()
        .merge(api)
        .merge(csv_api)
        .merge(openapi::routes())
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::healthz))
        .route("/metrics", get(ops::metrics));
    let app = match ui {
        Some(ui) => app.merge(ui),
        None => app.route("/", get(home)),
    };
    app.fallback(not_found)
        // The body limit sits inside the problem middleware so its 413 becomes a problem document too.
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .layer(middleware::from_fn(problem_for_plain_errors))
        .layer(denials)
        .layer(middleware::from_fn(audit_context))
        .layer(middleware::from_fn(track_metrics))
        .layer(CatchPanicLayer::custom(panic_to_problem))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(TraceLayer::new_for_http())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        // Outermost, so every layer and handler (the audit context, the extractors) sees the network settings.
        .layer(axum::Extension(std::sync::Arc::new(net)))
        .with_state(state)
}

async fn home(State(_): State<AppState>) -> impl IntoResponse {
    axum::response::Html(
        "<!doctype html><html lang=\"zh-CN\"><meta charset=\"utf-8\"><title>CRM</title>\
         <h1>CRM · 客户关系管理</h1><p>API: <a href=\"/api/docs\">/api/docs</a> · \
         <a href=\"/api/openapi.json\">/api/openapi.json</a></p></html>",
    )
}

/// Serves until `shutdown` resolves, then lets in-flight requests finish (up to `grace`).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = tx.send(());
    });
    tokio::select! {
        r = server => r,
        _ = async { let _ = rx.await; tokio::time::sleep(grace).await; } => {
            tracing::warn!("in-flight requests did not finish within the grace period");
            Ok(())
        }
    }
}
