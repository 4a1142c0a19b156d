//! The HTTP edge: REST API under `/api/v1`, problem details, OpenAPI at `/api/openapi.json` (browsable at
//! `/api/docs`), health and metrics. The only crate that knows HTTP; it reaches data only through the store's
//! scoped handle or its named system path.

pub mod error;
pub mod extract;
mod openapi;
pub mod routes;

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
    let path = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    let labels = [("method", method), ("path", path), ("status", status)];
    metrics::counter!("crm_http_requests_total", &labels).increment(1);
    metrics::histogram!("crm_http_request_duration_seconds", &labels).record(started.elapsed().as_secs_f64());
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
    match status {
        StatusCode::METHOD_NOT_ALLOWED => {
            ApiError::new(status, "method-not-allowed", "Method not allowed", "this resource does not support that method").into_response()
        }
        StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(status, "payload-too-large", "Payload too large", "the request body is too large").into_response()
        }
        _ => response,
    }
}

fn panic_to_problem(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("handler panicked");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal error", "the server could not complete the request").into_response()
}

/// The whole application router.
pub fn router(state: AppState) -> Router {
    use routes::{admin, ops, records, session};
    let api = Router::new()
        .route("/api/v1/admin/policy", get(admin::get_policy).put(admin::put_policy))
        .route("/api/v1/admin/users", get(admin::list_users).post(admin::create_user))
        .route("/api/v1/admin/users/{id}", axum::routing::patch(admin::update_user))
        .route("/api/v1/admin/users/{id}/permissions", get(admin::user_permissions))
        .route("/api/v1/admin/departments", get(admin::list_departments).post(admin::create_department))
        .route("/api/v1/admin/departments/{id}", axum::routing::patch(admin::move_department))
        .route("/api/v1/admin/explain", get(admin::explain))
        .route("/api/v1/admin/access/{module}/{id}", get(admin::who_can_see))
        .route("/api/v1/session", post(session::sign_in).delete(session::sign_out))
        .route("/api/v1/me", get(session::me))
        .route("/api/v1/{module}", get(records::list).post(records::create))
        .route("/api/v1/{module}/search", post(records::search))
        .route("/api/v1/{module}/count", get(records::count))
        .route("/api/v1/{module}/{id}", get(records::get).patch(records::update).delete(records::delete))
        .route("/api/v1/{module}/{id}/explain", get(records::explain))
        .route("/api/v1/{module}/{id}/shares", post(records::share))
        .route("/api/v1/{module}/{id}/team/{user_id}", put(records::put_team).delete(records::delete_team))
        .route("/api/v1/{module}/{id}/reveal/{field}", post(records::reveal))
        .route("/api/v1/{module}/{id}/{related}", get(records::related))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_JSON_BYTES));
    // CSV import and export: their own router for the larger body limit (a 16 MiB file, not a JSON document).
    let csv_api = Router::new()
        .route("/api/v1/{module}/export.csv", get(routes::csv::export_csv))
        .route("/api/v1/{module}/import", post(routes::csv::import_csv))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES));
    Router::new()
        .merge(api)
        .merge(csv_api)
        .merge(openapi::routes())
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::healthz))
        .route("/metrics", get(ops::metrics))
        .route("/", get(home))
        .fallback(not_found)
        // The body limit sits inside the problem middleware so its 413 becomes a problem document too.
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .layer(middleware::from_fn(problem_for_plain_errors))
        .layer(middleware::from_fn(track_metrics))
        .layer(CatchPanicLayer::custom(panic_to_problem))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(TraceLayer::new_for_http())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
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
