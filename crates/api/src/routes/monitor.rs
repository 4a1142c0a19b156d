//! Monitoring: the rules (`GET`/`PUT /api/v1/admin/monitoring/rules`, administrators over every user), alerts
//! (`GET /api/v1/alerts`, `GET /api/v1/alerts/{id}`, `POST …/acknowledge`, `…/resolve`, `…/assign`) and the live
//! feed of new alerts (`GET /api/v1/alerts/stream`, server-sent events). Alerts are visible to users whose audit view
//! scope covers the alert's subject; to anyone else they do not exist (404).

use crate::AppState;
use crate::client::Client;
use crate::error::{ApiError, Problem};
use crate::extract::{ApiJson, Authed};
use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use crm_store::{Alert, AlertPage, AlertQuery, AlertViewer, AuthOutcome, MonitorConfig};
use futures_util::Stream;
use serde::Deserialize;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

/// The organization's monitoring rules: thresholds, windows, roles watched, on/off, responses, inline blocking,
/// working hours, baseline settings and the webhook (its secret shown as `********`). Needs edit rights over every
/// user.
#[utoipa::path(get, path = "/api/v1/admin/monitoring/rules", tag = "monitoring", security(("bearer" = [])),
    responses((status = 200, description = "The rules document", body = Object), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn get_rules(State(state): State<AppState>, Authed(p): Authed) -> Result<Json<MonitorConfig>, ApiError> {
    Ok(Json(state.store.scoped(p).monitor_rules().await?))
}

/// Replace the monitoring rules. Rules left out keep their defaults; unknown rules and fields are refused; every
/// value is validated (422 names each field). Sending the webhook secret as `********` keeps the stored one. Takes
/// effect at the next request on every server process; audited as `monitor.rules`.
#[utoipa::path(put, path = "/api/v1/admin/monitoring/rules", tag = "monitoring", security(("bearer" = [])),
    request_body = Object,
    responses((status = 200, description = "The saved rules", body = Object), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn put_rules(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiJson(config): ApiJson<MonitorConfig>,
) -> Result<Json<MonitorConfig>, ApiError> {
    Ok(Json(state.store.scoped(p).set_monitor_rules(config).await?))
}

fn parse(raw: Option<&str>) -> Result<AlertQuery, ApiError> {
    let mut q = AlertQuery::default();
    let int = |name: &str, v: &str| {
        v.parse::<i64>().map_err(|_| ApiError::bad_request(format!("{name} must be a whole number")))
    };
    for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "status" => q.status = Some(v.into_owned()),
            "rule" => q.rule = Some(v.into_owned()),
            "subject" => q.subject = Some(int("subject", &v)?),
            "assignee" => q.assignee = Some(int("assignee", &v)?),
            "after" => q.after = Some(v.into_owned()),
            "limit" => {
                q.limit =
                    Some(v.parse().map_err(|_| ApiError::bad_request("limit must be a number between 1 and 200"))?)
            }
            other => return Err(ApiError::bad_request(format!("unknown query parameter {other}"))),
        }
    }
    Ok(q)
}

/// Alerts you may see (their subject is within your audit view scope), newest first. Filters: `status` (open,
/// acknowledged, resolved), `rule`, `subject` (user id), `assignee` (user id); `after` is the previous page's
/// `next_cursor`; `limit` 1–200 (default 50).
#[utoipa::path(get, path = "/api/v1/alerts", tag = "monitoring", security(("bearer" = [])),
    params(("status" = Option<String>, Query), ("rule" = Option<String>, Query), ("subject" = Option<i64>, Query),
        ("assignee" = Option<i64>, Query), ("after" = Option<String>, Query, description = "cursor"), ("limit" = Option<u32>, Query)),
    responses((status = 200, description = "`{items: [...], next_cursor}`", body = Object), (status = 400, body = Problem), (status = 404, body = Problem)))]
pub async fn list(
    State(state): State<AppState>,
    Authed(p): Authed,
    RawQuery(raw): RawQuery,
) -> Result<Json<AlertPage>, ApiError> {
    let q = parse(raw.as_deref())?;
    Ok(Json(state.store.scoped(p).alerts(&q).await?))
}

/// One alert (404 when you may not see it, as if absent).
#[utoipa::path(get, path = "/api/v1/alerts/{id}", tag = "monitoring", security(("bearer" = [])),
    params(("id" = i64, Path)),
    responses((status = 200, description = "The alert", body = Object), (status = 404, body = Problem)))]
pub async fn get(
    State(state): State<AppState>,
    Authed(p): Authed,
    Path(id): Path<i64>,
) -> Result<Json<Alert>, ApiError> {
    Ok(Json(state.store.scoped(p).alert(id).await?))
}

/// Acknowledge an open alert (409 otherwise). Audited as `alert.acknowledge`.
#[utoipa::path(post, path = "/api/v1/alerts/{id}/acknowledge", tag = "monitoring", security(("bearer" = [])),
    params(("id" = i64, Path)),
    responses((status = 200, description = "The alert", body = Object), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn acknowledge(
    State(state): State<AppState>,
    Authed(p): Authed,
    Path(id): Path<i64>,
) -> Result<Json<Alert>, ApiError> {
    Ok(Json(state.store.scoped(p).alert_acknowledge(id).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Resolve {
    /// What was found and done (required, 1–2000 characters).
    pub note: String,
}

/// Resolve an alert with a note. Audited as `alert.resolve`.
#[utoipa::path(post, path = "/api/v1/alerts/{id}/resolve", tag = "monitoring", security(("bearer" = [])),
    params(("id" = i64, Path)), request_body = Resolve,
    responses((status = 200, description = "The alert", body = Object), (status = 404, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn resolve(
    State(state): State<AppState>,
    Authed(p): Authed,
    Path(id): Path<i64>,
    ApiJson(body): ApiJson<Resolve>,
) -> Result<Json<Alert>, ApiError> {
    Ok(Json(state.store.scoped(p).alert_resolve(id, &body.note).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Assign {
    /// A user within your scope, or null to unassign.
    pub assignee_id: Option<i64>,
}

/// Assign an alert (or unassign with `null`). Audited as `alert.assign`.
#[utoipa::path(post, path = "/api/v1/alerts/{id}/assign", tag = "monitoring", security(("bearer" = [])),
    params(("id" = i64, Path)), request_body = Assign,
    responses((status = 200, description = "The alert", body = Object), (status = 404, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn assign(
    State(state): State<AppState>,
    Authed(p): Authed,
    Path(id): Path<i64>,
    ApiJson(body): ApiJson<Assign>,
) -> Result<Json<Alert>, ApiError> {
    Ok(Json(state.store.scoped(p).alert_assign(id, body.assignee_id).await?))
}

/// How often an open stream re-checks its credential when no alert arrives (a revoked or expired session, a locked
/// user or a refused network ends the stream within this time).
const RECHECK: Duration = Duration::from_secs(2);

/// An open alert stream: its credential, checked again before every alert and every [`RECHECK`], and the viewer's
/// scope, computed again whenever the organization's policy version moved.
struct Watch {
    store: crm_store::Store,
    token: String,
    client: crm_store::ClientInfo,
    version: i64,
    viewer: AlertViewer,
    rx: tokio::sync::broadcast::Receiver<Alert>,
    tick: tokio::time::Interval,
}

impl Watch {
    /// Authenticates the stream's credential again, as a new request would (session live and not idle, user
    /// active, network and hours admitted, nothing to fix first) and brings the viewer's scope up to the current
    /// policy version. `false` ends the stream: the credential no longer holds, or the check failed (fail closed;
    /// the client may reconnect).
    async fn refresh(&mut self) -> bool {
        let sys = self.store.unscoped_system_access();
        let a = match sys.authenticate_from(&self.token, &self.client).await {
            Ok(AuthOutcome::Valid(a)) if a.restriction.is_none() => a,
            Ok(_) => return false,
            Err(e) => {
                tracing::warn!(error = %e, "re-checking an alert stream failed; closing it");
                return false;
            }
        };
        if a.principal.policy_version != self.version {
            let version = a.principal.policy_version;
            match self.store.scoped(a.principal).alert_viewer() {
                Ok(v) => (self.viewer, self.version) = (v, version),
                Err(_) => return false, // no longer allowed to see alerts at all
            }
        }
        true
    }
}

/// The credential the request presented: the bearer token, or the session cookie.
fn presented_token(headers: &HeaderMap) -> Option<String> {
    match headers.get(axum::http::header::AUTHORIZATION) {
        Some(h) => h.to_str().ok()?.strip_prefix("Bearer ").map(|t| t.trim().to_string()),
        None => crate::session_cookie::session_cookie(headers),
    }
}

/// New alerts you may see, as server-sent events (`event: alert`, data: the alert as JSON), from every server
/// process. Keep-alive comments every 15 s. Each alert is filtered by your access at the time it is sent (a
/// permission change holds at the next event), and the stream ends when your session is revoked or expires, your
/// account is locked or deactivated, or you lose access to alerts (checked before every alert and every 2 s).
#[utoipa::path(get, path = "/api/v1/alerts/stream", tag = "monitoring", security(("bearer" = [])),
    responses((status = 200, description = "text/event-stream of alerts", body = String, content_type = "text/event-stream"),
        (status = 404, body = Problem)))]
pub async fn stream(
    State(state): State<AppState>,
    Authed(p): Authed,
    client: Client,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let version = p.policy_version;
    let viewer = state.store.scoped(p).alert_viewer()?;
    let token = presented_token(&headers).ok_or_else(ApiError::unauthorized)?;
    let mut tick = tokio::time::interval(RECHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.reset(); // the first check is one period from now: the request was just authenticated
    let watch = Watch {
        rx: state.store.alert_feed(),
        store: state.store.clone(),
        token,
        client: client.info,
        version,
        viewer,
        tick,
    };
    let events = futures_util::stream::unfold(watch, |mut w| async move {
        loop {
            let got = tokio::select! {
                got = w.rx.recv() => Some(got),
                _ = w.tick.tick() => None,
            };
            match got {
                Some(Ok(a)) if a.org_id == w.viewer.org => {
                    if !w.refresh().await {
                        return None;
                    }
                    if w.viewer.sees(&a) {
                        let a = w.viewer.shown(a);
                        let data = serde_json::to_string(&a).unwrap_or_default();
                        let ev = Event::default().event("alert").id(a.id.to_string()).data(data);
                        return Some((Ok(ev), w));
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(RecvError::Lagged(n))) => {
                    let ev = Event::default().event("lagged").data(n.to_string());
                    return Some((Ok(ev), w));
                }
                Some(Err(RecvError::Closed)) => return None,
                // The periodic check: a revoked or expired session, a locked user, ends the stream.
                None if !w.refresh().await => return None,
                None => {}
            }
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
