//! The audit trail's single writer. Every change is appended in the same transaction as the change itself, so
//! neither exists without the other. Entries are chained per organization: an explicit gap-free sequence number
//! and a SHA-256 over the previous hash and the entry's canonical encoding. The organization row serialises
//! appenders (its `audit_seq` is incremented with `UPDATE … RETURNING`), which keeps the chain linear across
//! several server processes on one PostgreSQL.

use crate::db::Engine;
use crate::{StoreError, now_ms};
use crm_domain::{Module, OrgId, UserId};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::{AnyConnection, Row};

#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    pub org: OrgId,
    pub actor: Option<UserId>,
    /// `record.create`, `session.sign_in`, `policy.update`, …
    pub action: String,
    pub module: Option<Module>,
    pub record_id: Option<i64>,
    /// `success`, `failure` or `denied`.
    pub outcome: &'static str,
    pub detail: serde_json::Value,
    pub request_id: Option<String>,
    pub ip: Option<String>,
}

impl AuditEntry {
    pub fn new(org: OrgId, actor: Option<UserId>, action: impl Into<String>) -> AuditEntry {
        AuditEntry {
            org,
            actor,
            action: action.into(),
            module: None,
            record_id: None,
            outcome: "success",
            detail: serde_json::Value::Null,
            request_id: None,
            ip: None,
        }
    }
    pub fn record(mut self, module: Module, id: i64) -> AuditEntry {
        self.module = Some(module);
        self.record_id = Some(id);
        self
    }
    pub fn detail(mut self, detail: serde_json::Value) -> AuditEntry {
        self.detail = detail;
        self
    }
    pub fn outcome(mut self, outcome: &'static str) -> AuditEntry {
        self.outcome = outcome;
        self
    }
}

/// The canonical encoding the chain hashes: a JSON array in fixed field order.
pub(crate) fn entry_hash(prev: &str, seq: i64, at: i64, e: &AuditEntry, detail: &str) -> String {
    let canonical = serde_json::json!([
        seq,
        at,
        e.actor,
        e.action,
        e.module.map(|m| m.as_str()),
        e.record_id,
        e.outcome,
        detail,
        e.request_id,
        e.ip
    ]);
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update([0u8]);
    h.update(canonical.to_string().as_bytes());
    hex::encode(h.finalize())
}

/// Appends `e` inside the caller's transaction and returns its sequence number.
pub(crate) async fn append(conn: &mut AnyConnection, engine: Engine, e: &AuditEntry) -> Result<i64, StoreError> {
    let mut q = crate::db::Sql::new(engine);
    q.push("UPDATE organizations SET audit_seq = audit_seq + 1 WHERE id = ")
        .bind(e.org)
        .push(" RETURNING audit_seq, audit_head");
    let row = q.fetch_one(&mut *conn).await?;
    let seq: i64 = row.try_get("audit_seq")?;
    let prev: String = row.try_get("audit_head")?;
    let at = now_ms();
    let detail = e.detail.to_string();
    let hash = entry_hash(&prev, seq, at, e, &detail);
    let mut ins = crate::db::Sql::new(engine);
    ins.push("INSERT INTO audit_log (org_id, seq, at, actor_id, action, module, record_id, outcome, detail, request_id, ip, prev_hash, hash) VALUES (")
        .bind(e.org)
        .push(", ")
        .bind(seq)
        .push(", ")
        .bind(at)
        .push(", ")
        .bind(e.actor)
        .push(", ")
        .bind(e.action.as_str())
        .push(", ")
        .bind(e.module.map(|m| m.as_str().to_string()))
        .push(", ")
        .bind(e.record_id)
        .push(", ")
        .bind(e.outcome)
        .push(", ")
        .bind(detail)
        .push(", ")
        .bind(e.request_id.clone())
        .push(", ")
        .bind(e.ip.clone())
        .push(", ")
        .bind(prev)
        .push(", ")
        .bind(hash.clone())
        .push(")");
    ins.execute(&mut *conn).await?;
    let mut up = crate::db::Sql::new(engine);
    up.push("UPDATE organizations SET audit_head = ").bind(hash).push(" WHERE id = ").bind(e.org);
    up.execute(&mut *conn).await?;
    Ok(seq)
}

/// Recomputes the chain of one organization and returns the first bad sequence number, if any. The chain must
/// also reach the organization's recorded head (`audit_seq`, `audit_head`), so removing the newest entries is
/// detected too. The head is read first and entries appended after it are left for the next check.
pub(crate) async fn verify(conn: &mut AnyConnection, engine: Engine, org: OrgId) -> Result<Option<(i64, String)>, StoreError> {
    let mut h = crate::db::Sql::new(engine);
    h.push("SELECT audit_seq, audit_head FROM organizations WHERE id = ").bind(org);
    let Some(head) = h.fetch_optional(&mut *conn).await? else { return Ok(None) };
    let head_seq: i64 = head.try_get("audit_seq")?;
    let head_hash: String = head.try_get("audit_head")?;
    let mut q = crate::db::Sql::new(engine);
    q.push("SELECT seq, at, actor_id, action, module, record_id, outcome, detail, request_id, ip, prev_hash, hash FROM audit_log WHERE org_id = ")
        .bind(org)
        .push(" AND seq <= ")
        .bind(head_seq)
        .push(" ORDER BY seq");
    let mut prev = String::new();
    let mut expected = 1;
    for r in q.fetch_all(&mut *conn).await? {
        let seq: i64 = r.try_get("seq")?;
        if seq != expected {
            return Ok(Some((expected, format!("missing entry (next present is {seq})"))));
        }
        let module: Option<String> = r.try_get("module")?;
        let e = AuditEntry {
            org,
            actor: r.try_get("actor_id")?,
            action: r.try_get("action")?,
            module: module.and_then(|m| m.parse().ok()),
            record_id: r.try_get("record_id")?,
            outcome: match r.try_get::<String, _>("outcome")?.as_str() {
                "success" => "success",
                "failure" => "failure",
                "denied" => "denied",
                _ => "?",
            },
            detail: serde_json::Value::Null,
            request_id: r.try_get("request_id")?,
            ip: r.try_get("ip")?,
        };
        let detail: String = r.try_get("detail")?;
        let stored_prev: String = r.try_get("prev_hash")?;
        let stored: String = r.try_get("hash")?;
        if stored_prev != prev {
            return Ok(Some((seq, "previous-hash link broken".into())));
        }
        if entry_hash(&prev, seq, r.try_get("at")?, &e, &detail) != stored {
            return Ok(Some((seq, "entry modified".into())));
        }
        prev = stored;
        expected += 1;
    }
    if expected - 1 != head_seq {
        return Ok(Some((expected, format!("missing entry (the trail ends at {}, the organization's head is {head_seq})", expected - 1))));
    }
    if prev != head_hash {
        return Ok(Some((head_seq, "the last entry does not match the organization's head".into())));
    }
    Ok(None)
}
