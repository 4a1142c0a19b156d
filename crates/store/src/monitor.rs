//! Real-time monitoring (issue #6): alerts, their lifecycle and visibility, the inline guards, and the live feed.
//!
//! - The audit trail is the input and the shared counter. A detector task per process tails each organization's
//!   trail by sequence number (`monitor_detect.rs`); windowed counts are queries over `audit_log` and the
//!   `activity_rollup` table in the shared database, so an attack spread over several processes is counted once.
//! - An alert's `incident_key` (rule, subject, window bucket) is unique: an incident noticed twice is inserted once,
//!   and responses run only for the insert that won.
//! - Alerts are visible to users whose audit view scope covers the subject user (as audit entries are); an alert
//!   about no user (a client address) only to those who see every user's events. Others get 404 as if absent.
//! - The inline guards ([`Scoped::guard_export`], [`Scoped::guard_delete`]) run before an export or delete writes
//!   anything, read their thresholds from the rules cached by policy version, and refuse when they cannot decide.
//! - Each process polls `alerts` for new rows and fans them out on a broadcast channel: every process's live feed
//!   sees every alert, whichever process raised it.

use crate::audit;
use crate::{Scoped, Store, StoreError, now_ms};
use crm_domain::{Action, Module, OrgId, UserId};
use crm_policy::Scope;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::Row;
use sqlx::any::AnyRow;
use std::collections::BTreeSet;
use tokio::sync::broadcast;

pub use crate::monitor_rules::{
    BaselineSettings, MonitorConfig, RULE_NAMES, ResponseKind, Rule, SECRET_PLACEHOLDER, Severity, Webhook,
    default_rule,
};

/// State the monitor shares inside one process.
pub(crate) struct Shared {
    pub rules: crate::monitor_rules::RulesCache,
    pub feed: broadcast::Sender<Alert>,
    /// The webhook client of this process, built at the first delivery unless the server set its trust at start.
    pub webhooks: std::sync::RwLock<Option<crate::webhook::WebhookSender>>,
}

impl Shared {
    pub(crate) fn new() -> Shared {
        Shared { rules: Default::default(), feed: broadcast::channel(1024).0, webhooks: Default::default() }
    }
}

/// An alert as a viewer sees it. `detail` holds counts, thresholds, what was compared and client addresses; never
/// record field values.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Alert {
    pub id: i64,
    #[serde(skip)]
    pub org_id: OrgId,
    pub rule: String,
    pub severity: String,
    /// The user the alert is about (absent when it is about a client address).
    pub subject_id: Option<UserId>,
    /// `user:<id>` or `ip:<address>`.
    pub subject_key: String,
    /// `open`, `acknowledged` or `resolved`.
    pub status: String,
    pub assignee_id: Option<UserId>,
    pub resolution_note: Option<String>,
    /// The audit entry that fired the rule (absent for refused requests, which are not in the trail).
    pub trigger_seq: Option<i64>,
    /// When the triggering event happened (ms since the epoch).
    pub trigger_at: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub detail: Value,
}

pub(crate) const ALERT_COLUMNS: &str = "id, org_id, rule, severity, subject_id, subject_key, status, assignee_id, resolution_note, trigger_seq, trigger_at, created_at, updated_at, detail";

impl Alert {
    pub(crate) fn from_row(r: &AnyRow) -> Result<Alert, StoreError> {
        let detail: String = r.try_get("detail")?;
        Ok(Alert {
            id: r.try_get("id")?,
            org_id: r.try_get("org_id")?,
            rule: r.try_get("rule")?,
            severity: r.try_get("severity")?,
            subject_id: r.try_get("subject_id")?,
            subject_key: r.try_get("subject_key")?,
            status: r.try_get("status")?,
            assignee_id: r.try_get("assignee_id")?,
            resolution_note: r.try_get("resolution_note")?,
            trigger_seq: r.try_get("trigger_seq")?,
            trigger_at: r.try_get("trigger_at")?,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
            detail: serde_json::from_str(&detail).unwrap_or(Value::Null),
        })
    }
}

/// Filters of an alert list; all optional.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AlertQuery {
    /// `open`, `acknowledged` or `resolved`.
    pub status: Option<String>,
    pub rule: Option<String>,
    /// Alerts about this user.
    pub subject: Option<UserId>,
    /// Alerts assigned to this user.
    pub assignee: Option<UserId>,
    /// `next_cursor` of the previous page.
    pub after: Option<String>,
    /// Page size, 1 to 200 (default 50).
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AlertPage {
    pub items: Vec<Alert>,
    /// Pass as `after` for the next (older) page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Whose alerts a viewer may see, decided once (for the live feed).
#[derive(Debug, Clone)]
pub struct AlertViewer {
    pub org: OrgId,
    /// `None`: every user's (and alerts about client addresses).
    users: Option<BTreeSet<UserId>>,
    /// Modules the viewer may view: a module named in an alert's detail is shown only if it is one of them.
    modules: BTreeSet<&'static str>,
}

impl AlertViewer {
    /// The alert as this viewer may see it: a module they cannot view is not named.
    pub fn shown(&self, mut a: Alert) -> Alert {
        if let Some(m) = a.detail.get("module").and_then(Value::as_str)
            && !self.modules.contains(m)
            && let Some(d) = a.detail.as_object_mut()
        {
            d.insert("module".into(), Value::Null);
        }
        a
    }

    pub fn sees(&self, a: &Alert) -> bool {
        a.org_id == self.org
            && match (&self.users, a.subject_id) {
                (None, _) => true,
                (Some(users), Some(s)) => users.contains(&s),
                (Some(_), None) => false,
            }
    }
}

/// Why an action was refused before it ran (inline monitoring rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// The action needs a fresh step-up first.
    StepUpRequired,
    /// A monitoring rule refuses the action.
    Monitoring,
}

impl Store {
    /// New alerts of every organization, as this process learns of them (raised here or by another process).
    /// Filter with [`AlertViewer::sees`].
    pub fn alert_feed(&self) -> broadcast::Receiver<Alert> {
        self.monitor.feed.subscribe()
    }
}

impl Scoped<'_> {
    /// Who the caller may see alerts about: the audit module's view scope over users. Without the audit module the
    /// alerts do not exist for the caller (404).
    pub fn alert_viewer(&self) -> Result<AlertViewer, StoreError> {
        if !self.access().can(Module::Audit, Action::View) {
            return Err(StoreError::NotFound);
        }
        let users = self.audit_users();
        let users = if self.access().scopes(Module::Audit, Action::View).contains(&Scope::All) { None } else { users };
        let modules =
            Module::ALL.into_iter().filter(|m| self.access().can(*m, Action::View)).map(Module::as_str).collect();
        Ok(AlertViewer { org: self.principal.org, users, modules })
    }

    /// One page of the alerts the caller may see, newest first.
    pub async fn alerts(&self, q: &AlertQuery) -> Result<AlertPage, StoreError> {
        let viewer = self.alert_viewer()?;
        let limit = q.limit.unwrap_or(50);
        if !(1..=200).contains(&limit) {
            return Err(StoreError::BadQuery("limit must be between 1 and 200".into()));
        }
        if let Some(s) = q.status.as_deref()
            && !matches!(s, "open" | "acknowledged" | "resolved")
        {
            return Err(StoreError::BadQuery("status must be open, acknowledged or resolved".into()));
        }
        if let Some(r) = q.rule.as_deref()
            && !RULE_NAMES.contains(&r)
        {
            return Err(StoreError::BadQuery(format!("unknown rule {r}")));
        }
        let before = crate::id_cursor::decode(q.after.as_deref())?;
        let empty = AlertPage { items: Vec::new(), next_cursor: None };
        let mut sql = self.db().sql();
        sql.push("SELECT ").push(ALERT_COLUMNS).push(" FROM alerts WHERE org_id = ").bind(self.principal.org);
        if let Some(users) = &viewer.users {
            if users.is_empty() {
                return Ok(empty);
            }
            sql.push(" AND subject_id IN ").bind_list(users.iter().copied());
        }
        if let Some(s) = q.status.as_deref() {
            sql.push(" AND status = ").bind(s);
        }
        if let Some(r) = q.rule.as_deref() {
            sql.push(" AND rule = ").bind(r);
        }
        if let Some(u) = q.subject {
            sql.push(" AND subject_id = ").bind(u);
        }
        if let Some(u) = q.assignee {
            sql.push(" AND assignee_id = ").bind(u);
        }
        if let Some(b) = before {
            sql.push(" AND id < ").bind(b);
        }
        sql.push(" ORDER BY id DESC LIMIT ").bind(i64::from(limit) + 1);
        let rows = sql.fetch_all(&self.db().pool).await?;
        let mut items = rows.iter().map(Alert::from_row).collect::<Result<Vec<_>, _>>()?;
        let next_cursor = crate::id_cursor::page(&mut items, limit, |a| a.id);
        let items = items.into_iter().map(|a| viewer.shown(a)).collect();
        Ok(AlertPage { items, next_cursor })
    }

    /// One alert the caller may see (404 otherwise, as if absent).
    pub async fn alert(&self, id: i64) -> Result<Alert, StoreError> {
        let viewer = self.alert_viewer()?;
        let mut q = self.db().sql();
        q.push("SELECT ").push(ALERT_COLUMNS).push(" FROM alerts WHERE org_id = ").bind(self.principal.org);
        q.push(" AND id = ").bind(id);
        let a = q.fetch_optional(&self.db().pool).await?.as_ref().map(Alert::from_row).transpose()?;
        a.filter(|a| viewer.sees(a)).map(|a| viewer.shown(a)).ok_or(StoreError::NotFound)
    }

    /// Marks an open alert acknowledged. Audited as `alert.acknowledge`.
    pub async fn alert_acknowledge(&self, id: i64) -> Result<Alert, StoreError> {
        let a = self.alert(id).await?;
        if a.status != "open" {
            return Err(StoreError::Conflict(format!("the alert is {}, not open", a.status)));
        }
        self.alert_change(&a, "alert.acknowledge", "status = 'acknowledged'", None, None, serde_json::json!({})).await
    }

    /// Resolves an alert with a note (required). Audited as `alert.resolve`.
    pub async fn alert_resolve(&self, id: i64, note: &str) -> Result<Alert, StoreError> {
        let note = note.trim();
        if note.is_empty() || note.chars().count() > 2000 {
            return Err(StoreError::invalid("note", "a resolution note of 1 to 2000 characters is required"));
        }
        let a = self.alert(id).await?;
        if a.status == "resolved" {
            return Err(StoreError::Conflict("the alert is already resolved".into()));
        }
        let detail = serde_json::json!({"note": note});
        self.alert_change(&a, "alert.resolve", "status = 'resolved'", Some(note), None, detail).await
    }

    /// Assigns an alert to a user who may see it (or unassigns with `None`). Audited as `alert.assign`.
    pub async fn alert_assign(&self, id: i64, assignee: Option<UserId>) -> Result<Alert, StoreError> {
        let a = self.alert(id).await?;
        if a.status == "resolved" {
            return Err(StoreError::Conflict("the alert is resolved".into()));
        }
        if let Some(u) = assignee {
            let dir = self.access().directory();
            let known = dir.user(u).is_some_and(|u| u.status == crm_policy::UserStatus::Active);
            if !known || !self.user_in_scope(u, Action::View) {
                return Err(StoreError::invalid("assignee_id", "no such active user within your scope"));
            }
        }
        let detail = serde_json::json!({"assignee_id": assignee});
        self.alert_change(&a, "alert.assign", "", None, Some(assignee), detail).await
    }

    async fn alert_change(
        &self,
        a: &Alert,
        action: &str,
        set_status: &str,
        note: Option<&str>,
        assignee: Option<Option<UserId>>,
        detail: Value,
    ) -> Result<Alert, StoreError> {
        let now = now_ms();
        let mut tx = self.db().begin_write().await?;
        let mut q = self.db().sql();
        q.push("UPDATE alerts SET updated_at = ").bind(now);
        if !set_status.is_empty() {
            q.push(", ").push(set_status);
        }
        if let Some(n) = note {
            q.push(", resolution_note = ").bind(n);
        }
        if let Some(u) = assignee {
            q.push(", assignee_id = ").bind(u);
        }
        q.push(" WHERE org_id = ").bind(self.principal.org).push(" AND id = ").bind(a.id);
        q.push(" AND status = ").bind(a.status.as_str());
        if q.execute(&mut *tx).await? == 0 {
            return Err(StoreError::Conflict("the alert changed meanwhile; reload it".into()));
        }
        let mut detail = detail;
        if let Some(obj) = detail.as_object_mut() {
            obj.insert("alert".into(), a.id.into());
            obj.insert("rule".into(), a.rule.clone().into());
            obj.insert("from".into(), a.status.clone().into());
        }
        let mut e = self.audit_entry(action).target(format!("alert:{}", a.id)).detail(detail);
        if let Some(s) = a.subject_id {
            e = e.subject(s);
        }
        audit::append(&mut tx, self.db().engine, &e).await?;
        tx.commit().await?;
        self.alert(a.id).await
    }

    /// The inline export rule: an export of more than `block_above` rows needs a fresh step-up. Runs before the
    /// export writes anything; fails closed (an error loading the rules refuses the export).
    pub async fn guard_export(&self, rows: usize) -> Result<(), StoreError> {
        let config = self.store.monitor_config(self.principal.org, self.principal.policy_version).await?;
        let rule = config.rule("large_export");
        if let (true, Some(limit)) = (rule.enabled, rule.block_above)
            && rows as u64 > limit
            && !audit::current_step_up_fresh()
        {
            return Err(StoreError::Blocked(
                BlockKind::StepUpRequired,
                format!(
                    "an export of more than {limit} rows needs a fresh step-up (POST /api/v1/session/step-up); this one has {rows}"
                ),
            ));
        }
        Ok(())
    }

    /// The inline delete rule: a user may delete at most `block_above` records in the rule's window. Standalone
    /// form of the check `Scoped::delete` makes inside its own `DELETE` statement (see [`DeleteLimit`]); fails
    /// closed.
    pub async fn guard_delete(&self) -> Result<(), StoreError> {
        let Some(limit) = self.delete_limit().await? else { return Ok(()) };
        let mut q = self.db().sql();
        q.push("SELECT ");
        limit.push_count(&mut q, self.principal.org, self.principal.user);
        q.push(" AS n");
        let n: i64 = q.fetch_one(&self.db().pool).await?.try_get("n")?;
        if n as u64 >= limit.max {
            return Err(limit.refusal());
        }
        Ok(())
    }

    /// [`Scoped::guard_delete`] with a constant in place of the count: the same work and round trip but the count,
    /// so a benchmark can interleave the two and measure what the count itself costs. Decides nothing.
    #[doc(hidden)]
    pub async fn guard_delete_without_count(&self) -> Result<(), StoreError> {
        let Some(_limit) = self.delete_limit().await? else { return Ok(()) };
        let mut q = self.db().sql();
        q.push("SELECT ").bind(0i64).push(" AS n");
        let _: i64 = q.fetch_one(&self.db().pool).await?.try_get("n")?;
        Ok(())
    }

    /// The mass-delete rule's limit for this user now, when it blocks (the rules come from the cache by policy
    /// version: no query unless they changed). A rule with watched roles limits only their holders.
    pub(crate) async fn delete_limit(&self) -> Result<Option<DeleteLimit>, StoreError> {
        let config = self.store.monitor_config(self.principal.org, self.principal.policy_version).await?;
        let rule = config.rule("mass_delete");
        let (true, Some(max)) = (rule.enabled, rule.block_above) else { return Ok(None) };
        // A rule watching some roles blocks only their holders (as it alerts only about them).
        if !rule.roles.is_empty() {
            let holds = self
                .access()
                .directory()
                .user(self.principal.user)
                .is_some_and(|u| u.roles.iter().any(|r| rule.roles.contains(r)));
            if !holds {
                return Ok(None);
            }
        }
        let since = now_ms() - (rule.window_minutes as i64) * 60_000;
        Ok(Some(DeleteLimit { max, since, window_minutes: rule.window_minutes as i64 }))
    }
}

/// The mass-delete rule as a condition: the user's deletes since `since` number fewer than `max`. `Scoped::delete`
/// puts it into its `DELETE` statement, so the rule costs the server an indexed count and the request no extra
/// round trip; a delete it stops deletes nothing.
pub(crate) struct DeleteLimit {
    pub max: u64,
    since: i64,
    window_minutes: i64,
}

impl DeleteLimit {
    /// `(SELECT COUNT(*) …)`: the user's deletes in the window, counted no further than the limit (the answer
    /// only needs "fewer than `max`", so its cost stays bounded whatever the user's history).
    pub(crate) fn push_count(&self, q: &mut crate::db::Sql, org: OrgId, user: UserId) {
        q.push("(SELECT COUNT(*) FROM (SELECT 1 AS x FROM audit_log WHERE org_id = ").bind(org);
        q.push(" AND actor_id = ").bind(user).push(" AND action = 'record.delete' AND at > ").bind(self.since);
        q.push(" LIMIT ").bind(i64::try_from(self.max).unwrap_or(i64::MAX)).push(") counted)");
    }

    pub(crate) fn refusal(&self) -> StoreError {
        StoreError::Blocked(
            BlockKind::Monitoring,
            format!(
                "monitoring refuses more than {} deletes in {} minutes; ask an administrator",
                self.max, self.window_minutes
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(detail: Value) -> Alert {
        Alert {
            id: 1,
            org_id: 7,
            rule: "large_export".into(),
            severity: "high".into(),
            subject_id: Some(3),
            subject_key: "user:3".into(),
            status: "open".into(),
            assignee_id: None,
            resolution_note: None,
            trigger_seq: Some(9),
            trigger_at: 0,
            created_at: 0,
            updated_at: 0,
            detail,
        }
    }

    #[test]
    fn viewers_see_alerts_within_their_scope_without_modules_they_cannot_view() {
        let viewer = AlertViewer { org: 7, users: Some([3].into()), modules: ["customers"].into() };
        let a = alert(serde_json::json!({"module": "tickets", "rows": 5000}));
        assert!(viewer.sees(&a));
        let shown = viewer.shown(a.clone());
        assert_eq!(shown.detail, serde_json::json!({"module": null, "rows": 5000}));
        let kept = viewer.shown(alert(serde_json::json!({"module": "customers"})));
        assert_eq!(kept.detail["module"], "customers");
        assert!(!viewer.sees(&Alert { subject_id: Some(4), ..a.clone() }), "a user outside the scope");
        assert!(!viewer.sees(&Alert { subject_id: None, ..a.clone() }), "an address: only for viewers of everyone");
        assert!(!viewer.sees(&Alert { org_id: 8, ..a }), "another organization");
    }
}
