//! Reading the audit trail through the permission model, and recording data access.
//!
//! - The `audit` module's `view` permission opens the trail; its data scope limits it to events whose actor (or
//!   subject: the user signed in, the user changed) is within the viewer's scope over users, as for delegated
//!   administration. `all` sees every event of the organization.
//! - Entries about a module the viewer cannot view are left out; record ids the viewer may not read are removed
//!   (an entry about such a record keeps its action and actor, with its values redacted), and values of fields
//!   hidden from the viewer are removed from before/after values, filters and column lists; masked fields stay
//!   masked. Stored hashes are not shown (they would let a masked value be guessed offline).
//! - Queries filter by actor, module, record, action (exact, or a prefix ending in `.`), outcome and time range,
//!   newest first, with keyset pagination on the sequence number. Export as CSV or JSON Lines.
//! - Every query and export is itself recorded (`audit.query`, `audit.export`).

use crate::audit::{AuditEntry, COLUMNS, StoredEntry};
use crate::records::{Scoped, mask};
use crate::render::render;
use crate::{Store, StoreError};
use crm_domain::{Action, Module, RecordId, UserId, schema};
use crm_policy::{FieldAccess, Pred, Scope};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::Row;
use std::collections::{BTreeMap, BTreeSet};

/// Filters of an audit query; all optional.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Events by this user.
    pub actor: Option<UserId>,
    /// Events about this module (`customers`, …).
    pub module: Option<String>,
    /// Events about this record (with `module`).
    pub record: Option<RecordId>,
    /// An action (`record.update`), or a prefix ending in `.` (`session.`).
    pub action: Option<String>,
    /// `success`, `failure` or `denied`.
    pub outcome: Option<String>,
    /// From this time (milliseconds since the Unix epoch, inclusive).
    pub from: Option<i64>,
    /// Until this time (exclusive).
    pub to: Option<i64>,
    /// `next_cursor` of the previous page.
    pub after: Option<String>,
    /// Page size, 1 to 500 (default 50).
    pub limit: Option<u32>,
}

/// One audit event as the viewer may see it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditEvent {
    pub seq: i64,
    /// Milliseconds since the Unix epoch.
    pub at: i64,
    /// RFC 3339.
    pub time: String,
    pub actor_id: Option<UserId>,
    pub subject_id: Option<UserId>,
    pub session_id: Option<i64>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    pub action: String,
    pub module: Option<String>,
    pub record_id: Option<RecordId>,
    pub target: Option<String>,
    pub outcome: String,
    pub detail: Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct AuditPage {
    pub items: Vec<AuditEvent>,
    /// Pass as `after` for the next (older) page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Milliseconds since the epoch as RFC 3339 (UTC).
pub fn format_audit_time(ms: i64) -> String {
    rfc3339(ms)
}

pub(crate) fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

fn csv_cell(s: &str) -> String {
    // Spreadsheet formula injection: a leading `'` makes the cell text.
    match s.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r' | '\'') => format!("'{s}"),
        _ => s.to_string(),
    }
}

/// A record's clear values for before/after in the trail (the audit view applies each viewer's field
/// permissions).
pub(crate) fn values(r: &crm_domain::Record) -> serde_json::Map<String, Value> {
    let mut out = serde_json::Map::new();
    out.insert("id".into(), r.id.into());
    out.insert("owner_id".into(), r.owner_id.into());
    for (k, v) in &r.fields {
        out.insert((*k).to_string(), v.to_json());
    }
    out
}

/// The detail of a list-like read: the query, the row count and the ids returned.
pub(crate) fn page_detail(q: &crate::ListQuery, page: &crate::Page) -> Value {
    let ids: Vec<i64> = page.items.iter().filter_map(|r| r.get("id").and_then(Value::as_i64)).collect();
    serde_json::json!({"query": q, "rows": ids.len(), "ids": ids})
}

impl Store {
    /// Appends an event through the group committer (data access, standalone events); returns its sequence number
    /// once it is durable.
    pub async fn append_audit(&self, e: AuditEntry) -> Result<i64, StoreError> {
        self.audit.append(e).await
    }
}

impl Scoped<'_> {
    /// An entry by the caller, in their session.
    pub(crate) fn audit_entry(&self, action: &str) -> AuditEntry {
        match self.viewed_by {
            // Viewing as another user: the administrator acts, the viewed user is the subject.
            Some((admin, session)) => {
                AuditEntry::new(self.principal.org, Some(admin), action).session(session).subject(self.principal.user)
            }
            None => AuditEntry::new(self.principal.org, Some(self.principal.user), action)
                .session(self.principal.session_id),
        }
    }

    /// Records a data access durably before the caller answers (group commit).
    pub(crate) async fn record_access(&self, e: AuditEntry) -> Result<(), StoreError> {
        self.store.audit.append(e).await.map(|_| ())
    }

    /// The users whose events the viewer may see (`None`: everyone's), under the audit module's view scope.
    pub(crate) fn audit_users(&self) -> Option<BTreeSet<UserId>> {
        let a = self.access();
        let scopes = a.scopes(Module::Audit, Action::View);
        if scopes.contains(&Scope::All) {
            return None;
        }
        let dir = a.directory();
        let subs: BTreeSet<UserId> = dir.subordinates(a.user).into_iter().collect();
        let users = dir
            .users()
            .filter(|u| {
                scopes.iter().any(|s| match s {
                    Scope::All => true,
                    Scope::Own => u.id == a.user,
                    Scope::Subordinates => u.id == a.user || subs.contains(&u.id),
                    Scope::Department => u.departments.iter().any(|d| a.departments.contains(d)),
                    Scope::DepartmentTree => {
                        u.departments.iter().any(|d| a.departments.iter().any(|mine| dir.is_within(*d, *mine)))
                    }
                })
            })
            .map(|u| u.id)
            .collect();
        Some(users)
    }

    fn require_audit(&self, action: Action) -> Result<(), StoreError> {
        if !self.access().can(Module::Audit, Action::View) {
            return Err(StoreError::NotFound);
        }
        if !self.access().can(Module::Audit, action) {
            return Err(StoreError::Forbidden(format!("you may not {action} the audit trail")));
        }
        Ok(())
    }

    /// One page of the audit events the caller may see, newest first. Recorded as `audit.query`.
    pub async fn audit_query(&self, q: &AuditQuery) -> Result<AuditPage, StoreError> {
        self.require_audit(Action::View)?;
        let page = self.audit_page(q).await?;
        let e = self
            .audit_entry("audit.query")
            .module(Module::Audit)
            .detail(serde_json::json!({"query": q, "rows": page.items.len()}));
        self.record_access(e).await?;
        Ok(page)
    }

    /// Every audit event the caller may see matching `q` (newest first), as CSV or JSON Lines, with the row count.
    /// Needs the audit module's `export` permission. Recorded as `audit.export`.
    pub async fn audit_export(&self, q: &AuditQuery, format: &str) -> Result<(String, usize), StoreError> {
        self.require_audit(Action::Export)?;
        if format != "csv" && format != "jsonl" {
            return Err(StoreError::BadQuery("format must be csv or jsonl".into()));
        }
        let mut out = String::new();
        if format == "csv" {
            out.push_str("seq,time,actor_id,subject_id,session_id,ip,user_agent,request_id,action,module,record_id,target,outcome,detail\r\n");
        }
        let mut page_q = AuditQuery { limit: Some(500), after: None, ..q.clone() };
        let mut rows = 0usize;
        loop {
            let page = self.audit_page(&page_q).await?;
            for ev in &page.items {
                rows += 1;
                if format == "jsonl" {
                    out.push_str(&serde_json::to_string(ev).map_err(|e| StoreError::Config(e.to_string()))?);
                    out.push('\n');
                } else {
                    let opt_i = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
                    let opt_s = |v: &Option<String>| v.as_deref().map(csv_cell).unwrap_or_default();
                    let cells = [
                        ev.seq.to_string(),
                        ev.time.clone(),
                        opt_i(ev.actor_id),
                        opt_i(ev.subject_id),
                        opt_i(ev.session_id),
                        opt_s(&ev.ip),
                        opt_s(&ev.user_agent),
                        opt_s(&ev.request_id),
                        csv_cell(&ev.action),
                        opt_s(&ev.module),
                        opt_i(ev.record_id),
                        opt_s(&ev.target),
                        csv_cell(&ev.outcome),
                        ev.detail.to_string(),
                    ];
                    let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).from_writer(Vec::new());
                    w.write_record(&cells).map_err(|e| StoreError::Config(e.to_string()))?;
                    let bytes = w.into_inner().map_err(|e| StoreError::Config(e.to_string()))?;
                    out.push_str(&String::from_utf8_lossy(&bytes));
                }
            }
            match page.next_cursor {
                Some(c) => page_q.after = Some(c),
                None => break,
            }
        }
        let mut filter = q.clone();
        filter.after = None;
        filter.limit = None;
        let e = self
            .audit_entry("audit.export")
            .module(Module::Audit)
            .detail(serde_json::json!({"format": format, "rows": rows, "filter": filter}));
        self.record_access(e).await?;
        Ok((out, rows))
    }

    async fn audit_page(&self, q: &AuditQuery) -> Result<AuditPage, StoreError> {
        let limit = q.limit.unwrap_or(50);
        if !(1..=500).contains(&limit) {
            return Err(StoreError::BadQuery("limit must be between 1 and 500".into()));
        }
        let before = crate::id_cursor::decode(q.after.as_deref())?;
        let module = match q.module.as_deref() {
            None => None,
            Some(m) => Some(m.parse::<Module>().map_err(|_| StoreError::BadQuery(format!("unknown module {m}")))?),
        };
        if q.record.is_some() && module.is_none() {
            return Err(StoreError::BadQuery("record needs module".into()));
        }
        if let Some(o) = q.outcome.as_deref()
            && !matches!(o, "success" | "failure" | "denied")
        {
            return Err(StoreError::BadQuery("outcome must be success, failure or denied".into()));
        }
        let users = self.audit_users();
        let viewable: Vec<&str> =
            Module::ALL.into_iter().filter(|m| self.access().can(*m, Action::View)).map(Module::as_str).collect();
        let empty = AuditPage { items: Vec::new(), next_cursor: None };
        if users.as_ref().is_some_and(BTreeSet::is_empty) || module.is_some_and(|m| !self.access().can(m, Action::View))
        {
            return Ok(empty);
        }
        let mut sql = self.db().sql();
        sql.push("SELECT ").push(COLUMNS).push(" FROM audit_log WHERE org_id = ").bind(self.principal.org);
        if let Some(users) = &users {
            let ids: Vec<i64> = users.iter().copied().collect();
            sql.push(" AND (actor_id IN ").bind_list(ids.clone()).push(" OR subject_id IN ").bind_list(ids).push(")");
        }
        sql.push(" AND (module IS NULL");
        if !viewable.is_empty() {
            sql.push(" OR module IN ").bind_list(viewable.iter().copied());
        }
        sql.push(")");
        if let Some(a) = q.actor {
            sql.push(" AND actor_id = ").bind(a);
        }
        if let Some(m) = module {
            sql.push(" AND module = ").bind(m.as_str());
        }
        if let Some(r) = q.record {
            sql.push(" AND record_id = ").bind(r);
        }
        if let Some(a) = q.action.as_deref() {
            if let Some(prefix) = a.strip_suffix('.') {
                sql.push(" AND action LIKE ")
                    .bind(format!("{}.%", prefix.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")));
                sql.push(" ESCAPE '\\'");
            } else {
                sql.push(" AND action = ").bind(a);
            }
        }
        if let Some(o) = q.outcome.as_deref() {
            sql.push(" AND outcome = ").bind(o);
        }
        if let Some(t) = q.from {
            sql.push(" AND at >= ").bind(t);
        }
        if let Some(t) = q.to {
            sql.push(" AND at < ").bind(t);
        }
        if let Some(b) = before {
            sql.push(" AND seq < ").bind(b);
        }
        sql.push(" ORDER BY seq DESC LIMIT ").bind(i64::from(limit) + 1);
        let rows = sql.fetch_all(&self.db().pool).await?;
        let mut entries = rows.iter().map(StoredEntry::from_row).collect::<Result<Vec<_>, _>>()?;
        let next_cursor = crate::id_cursor::page(&mut entries, limit, |e| e.seq);
        let visible = self.visible_in(&entries).await?;
        let items = entries.into_iter().map(|e| self.redact(e, &visible)).collect();
        Ok(AuditPage { items, next_cursor })
    }

    /// The record ids named by `entries` (their record and the `ids` of list entries) that the viewer may read.
    async fn visible_in(&self, entries: &[StoredEntry]) -> Result<BTreeMap<Module, BTreeSet<RecordId>>, StoreError> {
        let mut wanted: BTreeMap<Module, BTreeSet<RecordId>> = BTreeMap::new();
        for e in entries {
            let Some(m) = e.module.as_deref().and_then(|m| m.parse::<Module>().ok()).filter(|m| m.is_record_module())
            else {
                continue;
            };
            let set = wanted.entry(m).or_default();
            set.extend(e.record_id);
            if let Ok(d) = serde_json::from_str::<Value>(&e.detail) {
                for id in d.get("ids").and_then(Value::as_array).into_iter().flatten() {
                    set.extend(id.as_i64());
                }
                if let Some(p) = d.get("parent")
                    && let (Some(pm), Some(pid)) = (
                        p.get("module").and_then(Value::as_str).and_then(|s| s.parse::<Module>().ok()),
                        p.get("id").and_then(Value::as_i64),
                    )
                {
                    wanted.entry(pm).or_default().insert(pid);
                }
            }
        }
        let mut out = BTreeMap::new();
        for (m, ids) in wanted {
            let pred = self.access().pred(m, Action::View);
            let visible: BTreeSet<RecordId> = if matches!(pred, Pred::Const(true)) {
                ids
            } else if pred.is_never() {
                BTreeSet::new()
            } else {
                let Some(s) = schema(m) else { continue };
                let all: Vec<RecordId> = ids.into_iter().collect();
                let mut vis = BTreeSet::new();
                for chunk in all.chunks(500) {
                    let mut sql = self.db().sql();
                    sql.push("SELECT r.id FROM ")
                        .push(s.table)
                        .push(" r WHERE r.org_id = ")
                        .bind(self.principal.org)
                        .push(" AND ");
                    render(&mut sql, pred, m, "r", self.principal.org, 1);
                    sql.push(" AND r.id IN ").bind_list(chunk.iter().copied());
                    for r in sql.fetch_all(&self.db().pool).await? {
                        vis.insert(r.try_get::<i64, _>("id")?);
                    }
                }
                vis
            };
            out.insert(m, visible);
        }
        Ok(out)
    }

    /// The entry as the viewer may see it (see the module documentation).
    fn redact(&self, e: StoredEntry, visible: &BTreeMap<Module, BTreeSet<RecordId>>) -> AuditEvent {
        let module = e.module.as_deref().and_then(|m| m.parse::<Module>().ok());
        let mut detail: Value = serde_json::from_str(&e.detail).unwrap_or(Value::Null);
        let mut record_id = e.record_id;
        if let Some(m) = module.filter(|m| m.is_record_module()) {
            let seen = visible.get(&m);
            let can_read = |id: i64| seen.is_some_and(|s| s.contains(&id));
            if record_id.is_some_and(|id| !can_read(id)) {
                record_id = None;
                detail = serde_json::json!({"redacted": "the record is not visible to you"});
            }
            if let Some(obj) = detail.as_object_mut() {
                if let Some(ids) = obj.get_mut("ids").and_then(Value::as_array_mut) {
                    ids.retain(|v| v.as_i64().is_some_and(&can_read));
                }
                if let Some(p) = obj.get("parent").cloned() {
                    let pm = p.get("module").and_then(Value::as_str).and_then(|s| s.parse::<Module>().ok());
                    let pid = p.get("id").and_then(Value::as_i64);
                    let ok = match (pm, pid) {
                        (Some(pm), Some(pid)) => visible.get(&pm).is_some_and(|s| s.contains(&pid)),
                        _ => false,
                    };
                    if !ok {
                        obj.insert("parent".into(), serde_json::json!({"redacted": true}));
                    }
                }
                self.redact_fields(m, obj);
            }
        }
        AuditEvent {
            seq: e.seq,
            at: e.at,
            time: rfc3339(e.at),
            actor_id: e.actor_id,
            subject_id: e.subject_id,
            session_id: e.session_id,
            ip: e.ip,
            user_agent: e.user_agent,
            request_id: e.request_id,
            action: e.action,
            module: e.module,
            record_id,
            target: e.target,
            outcome: e.outcome,
            detail,
        }
    }

    /// Removes fields hidden from the viewer and masks masked ones in before/after values, filters, sort keys,
    /// column lists and revealed field names.
    fn redact_fields(&self, m: Module, obj: &mut serde_json::Map<String, Value>) {
        let a = self.access();
        let hidden = |f: &str| a.field_access(m, f) == FieldAccess::Hidden;
        let kind = |f: &str| schema(m).and_then(|s| s.field(f)).map(|d| d.kind);
        for key in ["before", "after"] {
            if let Some(values) = obj.get_mut(key).and_then(Value::as_object_mut) {
                values.retain(|f, _| !hidden(f));
                for (f, v) in values.iter_mut() {
                    if a.field_access(m, f) == FieldAccess::Masked
                        && let (Some(k), Some(t)) = (kind(f), v.as_str())
                    {
                        *v = Value::from(mask(k, t));
                    }
                }
            }
        }
        let redact_query = |q: &mut serde_json::Map<String, Value>| {
            if let Some(filters) = q.get_mut("filters").and_then(Value::as_array_mut) {
                filters.retain(|f| !f.get("field").and_then(Value::as_str).is_some_and(hidden));
                for f in filters.iter_mut() {
                    let masked = f
                        .get("field")
                        .and_then(Value::as_str)
                        .is_some_and(|n| a.field_access(m, n) == FieldAccess::Masked);
                    if masked && let Some(o) = f.as_object_mut() {
                        o.insert("value".into(), Value::from("****"));
                    }
                }
            }
            if q.get("sort").and_then(Value::as_str).is_some_and(hidden) {
                q.remove("sort");
            }
        };
        redact_query(obj);
        if let Some(q) = obj.get_mut("query").and_then(Value::as_object_mut) {
            redact_query(q);
        }
        if let Some(cols) = obj.get_mut("columns").and_then(Value::as_array_mut) {
            cols.retain(|c| !c.as_str().is_some_and(hidden));
        }
        if obj.get("field").and_then(Value::as_str).is_some_and(hidden) {
            obj.remove("field");
        }
    }
}

/// What a policy change changed, section by section: lists of objects with an `id` (roles, rules, groups) as
/// added, removed and changed items with their before and after; anything else as before and after.
pub(crate) fn policy_changes(old: &str, new: &crm_policy::PolicyConfig) -> Value {
    let old: Value = serde_json::from_str(old).unwrap_or(Value::Null);
    let new = serde_json::to_value(new).unwrap_or(Value::Null);
    let empty = serde_json::Map::new();
    let (o, n) = (old.as_object().unwrap_or(&empty), new.as_object().unwrap_or(&empty));
    let keys: BTreeSet<&String> = o.keys().chain(n.keys()).collect();
    let mut out = serde_json::Map::new();
    for k in keys {
        let (b, a) = (o.get(k).unwrap_or(&Value::Null), n.get(k).unwrap_or(&Value::Null));
        if b == a {
            continue;
        }
        let by_id = |v: &Value| -> Option<BTreeMap<String, Value>> {
            v.as_array()?.iter().map(|i| Some((i.get("id")?.to_string(), i.clone()))).collect()
        };
        let change = match (by_id(b), by_id(a)) {
            (Some(bm), Some(am)) => {
                let added: Vec<&Value> = am.iter().filter(|(id, _)| !bm.contains_key(*id)).map(|(_, v)| v).collect();
                let removed: Vec<&Value> = bm.iter().filter(|(id, _)| !am.contains_key(*id)).map(|(_, v)| v).collect();
                let changed: Vec<Value> = am
                    .iter()
                    .filter_map(|(id, v)| {
                        bm.get(id).filter(|old| *old != v).map(|old| serde_json::json!({"before": old, "after": v}))
                    })
                    .collect();
                serde_json::json!({"added": added, "removed": removed, "changed": changed})
            }
            _ => serde_json::json!({"before": b, "after": a}),
        };
        out.insert(k.clone(), change);
    }
    Value::Object(out)
}

/// A time for audit queries: milliseconds since the Unix epoch, or RFC 3339 (`2026-11-29T08:00:00+08:00`), or a
/// date (`2026-11-29`, midnight UTC).
pub fn parse_audit_time(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<i64>() {
        return Some(ms);
    }
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
        return i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok();
    }
    let d = time::Date::parse(s, time::macros::format_description!("[year]-[month]-[day]")).ok()?;
    Some(d.midnight().assume_utc().unix_timestamp() * 1000)
}
