//! The one place where account-security events are written: every sign-in attempt, sign-out, password change or
//! reset, lockout and unlock, session and API-token revocation, MFA enrolment and reset, and change of the
//! security settings goes through [`record`], which appends the audit entry (in the caller's transaction, so the
//! change and its entry commit together) and, for sign-in attempts, the row of the sign-in history users and
//! administrators read. When the audit trail grows richer, this function is the one to change.

use crate::audit::{self, AuditEntry};
use crate::db::Sql;
use crate::{Engine, StoreError};
use crm_domain::{OrgId, UserId};
use sqlx::AnyConnection;

/// One sign-in attempt for the history (`sign_in_history`).
#[derive(Debug, Clone)]
pub(crate) struct Attempt {
    /// `success`, `mfa_required`, or why it failed: `bad_password`, `locked_out`, `inactive`,
    /// `network_not_allowed`, `outside_sign_in_hours`, `bad_second_factor`.
    pub result: &'static str,
    /// `totp` or `recovery_code` when a second factor was used.
    pub mfa: Option<&'static str>,
    pub session_id: Option<i64>,
    pub user_agent: Option<String>,
}

/// An account-security event.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub org: OrgId,
    /// Who acted (the user themself, an administrator, or nobody for a failed sign-in).
    pub actor: Option<UserId>,
    /// Whose account it concerns.
    pub subject: Option<UserId>,
    /// `session.sign_in`, `session.sign_out`, `password.change`, …
    pub action: &'static str,
    /// `success`, `failure` or `denied`.
    pub outcome: &'static str,
    pub ip: Option<String>,
    pub detail: serde_json::Value,
    /// What the event is about, when not the subject user (`username:…` for a failed sign-in).
    pub target: Option<String>,
    pub attempt: Option<Attempt>,
}

impl Event {
    pub fn new(org: OrgId, actor: Option<UserId>, subject: Option<UserId>, action: &'static str) -> Event {
        Event {
            org,
            actor,
            subject,
            action,
            outcome: "success",
            ip: None,
            detail: serde_json::json!({}),
            target: None,
            attempt: None,
        }
    }
    pub fn outcome(mut self, outcome: &'static str) -> Event {
        self.outcome = outcome;
        self
    }
    pub fn ip(mut self, ip: Option<String>) -> Event {
        self.ip = ip;
        self
    }
    pub fn detail(mut self, detail: serde_json::Value) -> Event {
        self.detail = detail;
        self
    }
    pub fn target(mut self, target: String) -> Event {
        self.target = Some(target);
        self
    }
    pub fn attempt(mut self, attempt: Attempt) -> Event {
        self.attempt = Some(attempt);
        self
    }
}

/// Writes `e` inside the caller's transaction: the audit entry, and the sign-in history row of an attempt.
pub(crate) async fn record(conn: &mut AnyConnection, engine: Engine, e: Event, now: i64) -> Result<(), StoreError> {
    let mut detail = e.detail.clone();
    if let (Some(obj), Some(subject)) = (detail.as_object_mut(), e.subject) {
        obj.entry("user").or_insert(subject.into());
    }
    if let (Some(obj), Some(a)) = (detail.as_object_mut(), &e.attempt) {
        obj.insert("result".into(), a.result.into());
        if let Some(m) = a.mfa {
            obj.insert("mfa".into(), m.into());
        }
        if let Some(s) = a.session_id {
            obj.insert("session".into(), s.into());
        }
        if let Some(ua) = &a.user_agent {
            obj.insert("user_agent".into(), ua.clone().into());
        }
    }
    // The request context (request id, address, user agent, session) comes with `AuditEntry::new`; what the
    // event itself knows better overrides it.
    let mut entry = AuditEntry::new(e.org, e.actor, e.action).outcome(e.outcome).detail(detail);
    if e.ip.is_some() {
        entry.ip = e.ip.clone();
    }
    if let Some(a) = &e.attempt {
        if a.user_agent.is_some() {
            entry.user_agent = a.user_agent.clone();
        }
        if let Some(s) = a.session_id {
            entry = entry.session(s).target(format!("session:{s}"));
        }
    }
    if let Some(s) = e.subject {
        entry = entry.subject(s);
    }
    if let Some(t) = &e.target {
        entry = entry.target(t.clone());
    } else if entry.target.is_none()
        && let Some(s) = e.subject
    {
        entry = entry.target(format!("user:{s}"));
    }
    audit::append(&mut *conn, engine, &entry).await?;
    if let Some(a) = e.attempt {
        let mut q = Sql::new(engine);
        q.push("INSERT INTO sign_in_history (org_id, user_id, at, ip, user_agent, result, mfa, session_id) VALUES (")
            .bind(e.org)
            .push(", ")
            .bind(e.subject)
            .push(", ")
            .bind(now)
            .push(", ")
            .bind(e.ip)
            .push(", ")
            .bind(a.user_agent)
            .push(", ")
            .bind(a.result)
            .push(", ")
            .bind(a.mfa.map(str::to_string))
            .push(", ")
            .bind(a.session_id)
            .push(")");
        q.execute(&mut *conn).await?;
    }
    Ok(())
}
