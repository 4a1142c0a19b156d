//! Sign-in policies: second factor per role, the organization's IP allowlist, sign-in hours, time zone, session and
//! lockout limits. Read through `Scoped::admin_security_settings`, changed through
//! `Scoped::admin_set_security_settings` (validation, and a change that would lock out the administrator making it
//! is refused), as `/api/v1/admin/security` does.

use crate::error::{PageError, render};
use crate::viewer::{Chrome, Viewer, ViewerForm};
use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use crm_api::AppState;
use crm_api::client::Client;
use crm_domain::{Action, Module};
use crm_store::StoreError;
use crm_store::auth::HoursWindow;
use serde::Deserialize;
use std::collections::BTreeMap;

pub struct RoleSecurity {
    pub id: i64,
    pub name: String,
    pub require_mfa: bool,
    pub networks: String,
    pub hours: String,
}

#[derive(Template)]
#[template(path = "admin_security.html")]
struct SecurityPage {
    chrome: Chrome,
    allowlist: String,
    time_zone: String,
    sessions: String,
    lockout: String,
    password: String,
    roles: Vec<RoleSecurity>,
    can_edit: bool,
    saved: bool,
    errors: Vec<String>,
}

#[derive(Deserialize, Default)]
pub struct Saved {
    #[serde(default)]
    done: String,
}

async fn page(
    state: &AppState,
    v: &Viewer,
    saved: bool,
    errors: Vec<String>,
    typed: Option<&SecurityForm>,
) -> Response {
    let scoped = state.store.scoped(v.principal().clone());
    let result = async {
        let settings = scoped.admin_security_settings().await?;
        let policy = scoped.admin_policy().await.map(|(p, _)| p).ok();
        Ok::<_, StoreError>((settings, policy))
    }
    .await;
    let (settings, policy) = match result {
        Ok(x) => x,
        Err(e) => return PageError::from_store(e, v.lang).into_response(),
    };
    let roles = policy
        .map(|p| {
            p.roles
                .iter()
                .map(|r| {
                    let typed = |key: String| typed.and_then(|t| t.per_role.get(&key).cloned());
                    RoleSecurity {
                        id: r.id,
                        name: r.name.clone(),
                        require_mfa: r.require_mfa,
                        networks: typed(format!("networks_{}", r.id)).unwrap_or_else(|| {
                            settings.network.roles.get(&r.id).map(|n| n.join(", ")).unwrap_or_default()
                        }),
                        hours: typed(format!("hours_{}", r.id)).unwrap_or_else(|| {
                            settings.sign_in_hours.get(&r.id).map(|w| format_hours(w)).unwrap_or_default()
                        }),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let status = if errors.is_empty() { StatusCode::OK } else { StatusCode::UNPROCESSABLE_ENTITY };
    let body = SecurityPage {
        chrome: v.chrome("security.title", "/app/admin/security"),
        allowlist: typed.map(|t| t.allowlist.clone()).unwrap_or_else(|| settings.network.allow.join("\n")),
        time_zone: typed.map(|t| t.time_zone.clone()).unwrap_or_else(|| settings.time_zone.clone()),
        sessions: serde_json::to_string(&settings.sessions).unwrap_or_default(),
        lockout: serde_json::to_string(&settings.lockout).unwrap_or_default(),
        password: serde_json::to_string(&settings.password).unwrap_or_default(),
        roles,
        can_edit: v.can(Module::Users, Action::Edit),
        saved,
        errors,
    };
    (status, render(&body)).into_response()
}

pub async fn show(State(state): State<AppState>, v: Viewer, Query(q): Query<Saved>) -> Response {
    page(&state, &v, q.done == "1", Vec::new(), None).await
}

#[derive(Deserialize)]
pub struct SecurityForm {
    /// One network per line.
    #[serde(default)]
    allowlist: String,
    time_zone: String,
    /// `networks_<role id>` (comma- or line-separated) and `hours_<role id>` (see [`parse_hours`]); other fields
    /// (the CSRF token) are ignored here.
    #[serde(flatten)]
    per_role: BTreeMap<String, String>,
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Sign-in hours as typed on the page: windows separated by `;` or new lines, each `[days] HH:MM-HH:MM`, days as
/// `mon-fri`, `sat,sun` or `*` (every day, also when left out). `mon-fri 09:00-18:00; sat 10:00-14:00`. The clock
/// values are checked by the store's validation, which names the field.
pub fn parse_hours(text: &str) -> Result<Vec<HoursWindow>, String> {
    let mut out = Vec::new();
    for entry in text.split([';', '\n']).map(str::trim).filter(|e| !e.is_empty()) {
        let parts: Vec<&str> = entry.split_whitespace().collect();
        let (days, range) = match parts.as_slice() {
            [range] => ("*", *range),
            [days, range] => (*days, *range),
            _ => return Err(format!("\"{entry}\": expected [days] HH:MM-HH:MM")),
        };
        let (start, end) = range.split_once('-').ok_or_else(|| format!("\"{entry}\": expected HH:MM-HH:MM"))?;
        let mut picked = Vec::new();
        if days != "*" {
            for item in days.split(',') {
                let index = |d: &str| {
                    DAYS.iter().position(|x| x.eq_ignore_ascii_case(d)).ok_or_else(|| format!("\"{d}\" is not a day"))
                };
                let (from, to) = match item.split_once('-') {
                    Some((a, b)) => (index(a)?, index(b)?),
                    None => (index(item)?, index(item)?),
                };
                if to < from {
                    return Err(format!("\"{item}\": the days run backwards"));
                }
                picked.extend(DAYS[from..=to].iter().copied());
            }
        }
        let days = picked
            .into_iter()
            .map(|d| serde_json::from_value(serde_json::Value::from(d)).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, String>>()?;
        out.push(HoursWindow { days, start: start.to_string(), end: end.to_string() });
    }
    Ok(out)
}

/// The inverse of [`parse_hours`].
pub fn format_hours(windows: &[HoursWindow]) -> String {
    windows
        .iter()
        .map(|w| {
            let days: Vec<String> = w
                .days
                .iter()
                .filter_map(|d| serde_json::to_value(d).ok().and_then(|v| v.as_str().map(str::to_string)))
                .collect();
            let range = format!("{}-{}", w.start, w.end);
            if days.is_empty() { range } else { format!("{} {range}", days.join(",")) }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

pub async fn save(
    State(state): State<AppState>,
    client: Client,
    ViewerForm { viewer: v, form }: ViewerForm<SecurityForm>,
) -> Response {
    let scoped = state.store.scoped(v.principal().clone());
    let mut settings = match scoped.admin_security_settings().await {
        Ok(s) => s,
        Err(e) => return PageError::from_store(e, v.lang).into_response(),
    };
    settings.network.allow =
        form.allowlist.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect();
    settings.time_zone = form.time_zone.trim().to_string();
    // Per role: the networks and hours typed for each role of the policy (a role left empty has no restriction).
    let roles: Vec<i64> = match scoped.admin_policy().await {
        Ok((p, _)) => p.roles.iter().map(|r| r.id).collect(),
        Err(e) => return PageError::from_store(e, v.lang).into_response(),
    };
    let mut errors = Vec::new();
    for role in roles {
        if let Some(text) = form.per_role.get(&format!("networks_{role}")) {
            let networks: Vec<String> =
                text.split([',', '\n']).map(str::trim).filter(|n| !n.is_empty()).map(str::to_string).collect();
            if networks.is_empty() {
                settings.network.roles.remove(&role);
            } else {
                settings.network.roles.insert(role, networks);
            }
        }
        if let Some(text) = form.per_role.get(&format!("hours_{role}")) {
            match parse_hours(text) {
                Ok(w) if w.is_empty() => {
                    settings.sign_in_hours.remove(&role);
                }
                Ok(w) => {
                    settings.sign_in_hours.insert(role, w);
                }
                Err(e) => errors.push(format!("hours_{role}: {e}")),
            }
        }
    }
    if !errors.is_empty() {
        return page(&state, &v, false, errors, Some(&form)).await;
    }
    match scoped.admin_set_security_settings(settings, &client.info).await {
        Ok(_) => Redirect::to("/app/admin/security?done=1").into_response(),
        Err(StoreError::Invalid(errors)) => {
            let errors = errors.into_iter().map(|e| format!("{}: {}", e.field, e.message)).collect();
            page(&state, &v, false, errors, Some(&form)).await
        }
        Err(e) => PageError::from_store(e, v.lang).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_in_hours_read_as_typed_and_print_back() {
        let w = parse_hours("mon-fri 09:00-18:00; sat,SUN 10:00-14:00\n22:00-06:00").expect("valid");
        assert_eq!(w.len(), 3);
        assert_eq!(w[0].days.len(), 5);
        assert_eq!((w[1].days.len(), w[1].start.as_str(), w[1].end.as_str()), (2, "10:00", "14:00"));
        assert!(w[2].days.is_empty(), "no days: every day");
        assert_eq!(format_hours(&w), "mon,tue,wed,thu,fri 09:00-18:00; sat,sun 10:00-14:00; 22:00-06:00");
        assert_eq!(parse_hours(&format_hours(&w)).expect("round trip"), w);
        assert!(parse_hours("  ").expect("empty").is_empty());
        for bad in ["someday 09:00-18:00", "fri-mon 09:00-18:00", "mon 0900", "mon tue 09:00-18:00"] {
            assert!(parse_hours(bad).is_err(), "{bad} is refused");
        }
    }
}
