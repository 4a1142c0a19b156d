//! The audit trail's single writer. Every change is appended in the same transaction as the change itself, so
//! neither exists without the other ([`append`]); events that change nothing (data access, failed sign-ins) go
//! through the group committer ([`AuditWriter`]), which writes whatever is queued in one transaction and answers
//! each caller only after that transaction is durable.
//!
//! Entries are chained per organization: an explicit gap-free sequence number and a SHA-256 over the previous
//! hash and the entry's canonical encoding ([`StoredEntry::compute_hash`]), which covers the organization and
//! every column. The organization row serialises appenders (its `audit_seq` is moved with `UPDATE … RETURNING`,
//! which takes the row lock on PostgreSQL and runs under SQLite's single writer), which keeps the chain linear
//! across several server processes on one PostgreSQL. Checkpoints signed outside the database (`audit_verify.rs`)
//! anchor it.
//!
//! Request context (request id, client address, user agent, session) is carried in a task-local set by the HTTP
//! layer ([`with_request_context`]); [`AuditEntry::new`] picks it up, so no call site has to pass it along.

use crate::db::{Db, Engine, Sql};
use crate::{StoreError, now_ms};
use crm_domain::{Module, OrgId, UserId};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use tokio::sync::{mpsc, oneshot};

/// The hash format new entries are written in.
pub(crate) const HASH_FORMAT: i64 = 2;

// ---- request context -------------------------------------------------------------------------------------------

/// Who is asking, for the audit entries a request writes: set once per request by the HTTP layer.
#[derive(Debug, Default)]
pub struct RequestContext {
    pub request_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    session: AtomicI64,
    /// The organization and user the request authenticated as (0 until it has).
    org: AtomicI64,
    user: AtomicI64,
    /// Whether the credential proved its user within the step-up window (inline monitoring rules read it).
    step_up_fresh: AtomicBool,
}

impl RequestContext {
    pub fn new(request_id: Option<String>, ip: Option<String>, user_agent: Option<String>) -> Arc<RequestContext> {
        Arc::new(RequestContext {
            request_id,
            ip,
            user_agent,
            session: AtomicI64::new(0),
            org: AtomicI64::new(0),
            user: AtomicI64::new(0),
            step_up_fresh: AtomicBool::new(false),
        })
    }
    /// The session the request authenticated with (0 until it has).
    pub fn session(&self) -> Option<i64> {
        Some(self.session.load(Ordering::Relaxed)).filter(|s| *s != 0)
    }
    /// The organization and user the request authenticated as, once it has.
    pub fn principal(&self) -> Option<(OrgId, UserId)> {
        let (org, user) = (self.org.load(Ordering::Relaxed), self.user.load(Ordering::Relaxed));
        (org != 0 && user != 0).then_some((org, user))
    }
}

tokio::task_local! {
    static REQUEST: Arc<RequestContext>;
}

/// Runs `f` with `ctx` as the request context of every audit entry created inside it.
pub async fn with_request_context<F: std::future::Future>(ctx: Arc<RequestContext>, f: F) -> F::Output {
    REQUEST.scope(ctx, f).await
}

/// The current request's context, if any (to carry it into a spawned task).
pub fn current_request_context() -> Option<Arc<RequestContext>> {
    REQUEST.try_with(Arc::clone).ok()
}

/// Records the session the current request authenticated with (the first one: a request authenticates once).
pub(crate) fn note_session(session: i64) {
    let _ = REQUEST.try_with(|c| c.session.compare_exchange(0, session, Ordering::Relaxed, Ordering::Relaxed));
}

/// Records who the current request authenticated as, and whether its step-up is fresh.
pub(crate) fn note_auth(org: OrgId, user: UserId, step_up_fresh: bool) {
    let _ = REQUEST.try_with(|c| {
        c.org.store(org, Ordering::Relaxed);
        c.user.store(user, Ordering::Relaxed);
        c.step_up_fresh.store(step_up_fresh, Ordering::Relaxed);
    });
}

/// Did the current request's credential prove its user within the step-up window? False outside a request.
pub(crate) fn current_step_up_fresh() -> bool {
    REQUEST.try_with(|c| c.step_up_fresh.load(Ordering::Relaxed)).unwrap_or(false)
}

// ---- entries ---------------------------------------------------------------------------------------------------

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
    pub user_agent: Option<String>,
    /// The session (or API token) the actor used.
    pub session_id: Option<i64>,
    /// What the event is about when it is not a record: `user:5`, `department:3`, `policy`, `session:9`, ….
    pub target: Option<String>,
    /// The user the event is about: the one signing in, the one an administrator changed.
    pub subject: Option<UserId>,
}

impl AuditEntry {
    /// A successful event, carrying the current request's context (request id, address, user agent, session).
    pub fn new(org: OrgId, actor: Option<UserId>, action: impl Into<String>) -> AuditEntry {
        let ctx = current_request_context();
        AuditEntry {
            org,
            actor,
            action: action.into(),
            module: None,
            record_id: None,
            outcome: "success",
            detail: serde_json::Value::Null,
            request_id: ctx.as_ref().and_then(|c| c.request_id.clone()),
            ip: ctx.as_ref().and_then(|c| c.ip.clone()),
            user_agent: ctx.as_ref().and_then(|c| c.user_agent.clone()),
            session_id: ctx.as_ref().and_then(|c| c.session()),
            target: None,
            subject: None,
        }
    }
    pub fn record(mut self, module: Module, id: i64) -> AuditEntry {
        self.module = Some(module);
        self.record_id = Some(id);
        self
    }
    pub fn module(mut self, module: Module) -> AuditEntry {
        self.module = Some(module);
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
    pub fn target(mut self, target: impl Into<String>) -> AuditEntry {
        self.target = Some(target.into());
        self
    }
    pub fn subject(mut self, user: UserId) -> AuditEntry {
        self.subject = Some(user);
        self
    }
    pub fn session(mut self, session: i64) -> AuditEntry {
        if session != 0 {
            self.session_id = Some(session);
        }
        self
    }
}

/// An entry as stored: every column the hash covers, plus the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct StoredEntry {
    pub org_id: OrgId,
    pub seq: i64,
    pub at: i64,
    pub actor_id: Option<i64>,
    pub subject_id: Option<i64>,
    pub session_id: Option<i64>,
    pub action: String,
    pub module: Option<String>,
    pub record_id: Option<i64>,
    pub target: Option<String>,
    pub outcome: String,
    /// The detail document exactly as stored (JSON text): the hash covers these bytes.
    pub detail: String,
    pub request_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub prev_hash: String,
    pub hash: String,
    pub hash_format: i64,
}

fn put_i64(buf: &mut Vec<u8>, v: i64) {
    buf.extend_from_slice(&v.to_be_bytes());
}
fn put_opt_i64(buf: &mut Vec<u8>, v: Option<i64>) {
    match v {
        None => buf.push(0),
        Some(v) => {
            buf.push(1);
            put_i64(buf, v);
        }
    }
}
fn put_str(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as u64).to_be_bytes());
    buf.extend_from_slice(s.as_bytes());
}
fn put_opt_str(buf: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => buf.push(0),
        Some(s) => {
            buf.push(1);
            put_str(buf, s);
        }
    }
}

impl StoredEntry {
    fn from_entry(e: &AuditEntry, seq: i64, at: i64, prev_hash: String) -> StoredEntry {
        let mut s = StoredEntry {
            org_id: e.org,
            seq,
            at,
            actor_id: e.actor,
            subject_id: e.subject,
            session_id: e.session_id,
            action: e.action.clone(),
            module: e.module.map(|m| m.as_str().to_string()),
            record_id: e.record_id,
            target: e.target.clone(),
            outcome: e.outcome.to_string(),
            detail: e.detail.to_string(),
            request_id: e.request_id.clone(),
            ip: e.ip.clone(),
            user_agent: e.user_agent.clone(),
            prev_hash,
            hash: String::new(),
            hash_format: HASH_FORMAT,
        };
        s.hash = s.compute_hash(&mut Vec::new());
        s
    }

    /// The canonical encoding (format 2): every column in a fixed order, integers as 8 big-endian bytes, text
    /// length-prefixed, absent values as a 0 byte and present ones after a 1 byte, so no two entries encode alike.
    pub fn canonical(&self, buf: &mut Vec<u8>) {
        buf.clear();
        put_i64(buf, self.org_id);
        put_i64(buf, self.seq);
        put_i64(buf, self.at);
        put_opt_i64(buf, self.actor_id);
        put_opt_i64(buf, self.subject_id);
        put_opt_i64(buf, self.session_id);
        put_str(buf, &self.action);
        put_opt_str(buf, self.module.as_deref());
        put_opt_i64(buf, self.record_id);
        put_opt_str(buf, self.target.as_deref());
        put_str(buf, &self.outcome);
        put_str(buf, &self.detail);
        put_opt_str(buf, self.request_id.as_deref());
        put_opt_str(buf, self.ip.as_deref());
        put_opt_str(buf, self.user_agent.as_deref());
    }

    /// The hash this entry should carry, from its stored previous hash and content (`buf` is scratch space).
    pub fn compute_hash(&self, buf: &mut Vec<u8>) -> String {
        self.compute_hash_as(self.seq, buf)
    }

    /// The hash the entry would carry at sequence number `seq` (the verifier uses it to recognise moved entries).
    pub fn compute_hash_as(&self, seq: i64, buf: &mut Vec<u8>) -> String {
        let mut h = Sha256::new();
        if self.hash_format == 1 {
            // The first format, kept so trails written before the second one still verify: it covers neither the
            // organization nor the columns added with format 2.
            let canonical = serde_json::json!([
                seq,
                self.at,
                self.actor_id,
                self.action,
                self.module,
                self.record_id,
                self.outcome,
                self.detail,
                self.request_id,
                self.ip
            ]);
            h.update(self.prev_hash.as_bytes());
            h.update([0u8]);
            h.update(canonical.to_string().as_bytes());
        } else {
            let mut e = std::borrow::Cow::Borrowed(self);
            if seq != self.seq {
                e.to_mut().seq = seq;
            }
            e.canonical(buf);
            h.update(b"crm-audit-v2\0");
            h.update(self.prev_hash.as_bytes());
            h.update([0u8]);
            h.update(buf.as_slice());
        }
        hex::encode(h.finalize())
    }

    pub(crate) fn from_row(r: &AnyRow) -> Result<StoredEntry, StoreError> {
        Ok(StoredEntry {
            org_id: r.try_get("org_id")?,
            seq: r.try_get("seq")?,
            at: r.try_get("at")?,
            actor_id: r.try_get("actor_id")?,
            subject_id: r.try_get("subject_id")?,
            session_id: r.try_get("session_id")?,
            action: r.try_get("action")?,
            module: r.try_get("module")?,
            record_id: r.try_get("record_id")?,
            target: r.try_get("target")?,
            outcome: r.try_get("outcome")?,
            detail: r.try_get("detail")?,
            request_id: r.try_get("request_id")?,
            ip: r.try_get("ip")?,
            user_agent: r.try_get("user_agent")?,
            prev_hash: r.try_get("prev_hash")?,
            hash: r.try_get("hash")?,
            hash_format: r.try_get("hash_format")?,
        })
    }
}

/// The columns of [`StoredEntry`], in its order.
pub(crate) const COLUMNS: &str = "org_id, seq, at, actor_id, subject_id, session_id, action, module, record_id, target, outcome, detail, request_id, ip, user_agent, prev_hash, hash, hash_format";

// ---- writing ---------------------------------------------------------------------------------------------------

/// Reserves `n` sequence numbers of `org` (taking the organization row's lock until the transaction ends) and
/// returns the last one and the hash before the first.
async fn reserve(conn: &mut AnyConnection, engine: Engine, org: OrgId, n: i64) -> Result<(i64, String), StoreError> {
    let mut q = Sql::new(engine);
    q.push("UPDATE organizations SET audit_seq = audit_seq + ").bind(n).push(" WHERE id = ").bind(org);
    q.push(" RETURNING audit_seq, audit_head");
    let row = q.fetch_optional(&mut *conn).await?.ok_or(StoreError::NotFound)?;
    Ok((row.try_get("audit_seq")?, row.try_get("audit_head")?))
}

async fn set_head(conn: &mut AnyConnection, engine: Engine, org: OrgId, hash: &str) -> Result<(), StoreError> {
    let mut up = Sql::new(engine);
    up.push("UPDATE organizations SET audit_head = ").bind(hash).push(" WHERE id = ").bind(org);
    up.execute(&mut *conn).await?;
    Ok(())
}

/// Inserts rows with multi-row `INSERT`s in chunks of a few fixed sizes, so the driver's statement cache holds a
/// handful of statements whatever the batch sizes.
pub(crate) async fn insert_rows(
    conn: &mut AnyConnection,
    engine: Engine,
    rows: &[StoredEntry],
) -> Result<(), StoreError> {
    let mut rest = rows;
    while !rest.is_empty() {
        let n = [256usize, 64, 16, 4, 1].into_iter().find(|n| *n <= rest.len()).unwrap_or(1);
        let (chunk, tail) = rest.split_at(n);
        let mut q = Sql::new(engine);
        q.push("INSERT INTO audit_log (").push(COLUMNS).push(") VALUES ");
        for (i, s) in chunk.iter().enumerate() {
            if i > 0 {
                q.push(", ");
            }
            q.push("(").bind(s.org_id).push(", ").bind(s.seq).push(", ").bind(s.at).push(", ").bind(s.actor_id);
            q.push(", ").bind(s.subject_id).push(", ").bind(s.session_id).push(", ").bind(s.action.as_str());
            q.push(", ").bind(s.module.clone()).push(", ").bind(s.record_id).push(", ").bind(s.target.clone());
            q.push(", ")
                .bind(s.outcome.as_str())
                .push(", ")
                .bind(s.detail.as_str())
                .push(", ")
                .bind(s.request_id.clone());
            q.push(", ").bind(s.ip.clone()).push(", ").bind(s.user_agent.clone()).push(", ").bind(s.prev_hash.as_str());
            q.push(", ").bind(s.hash.as_str()).push(", ").bind(s.hash_format).push(")");
        }
        q.execute_owned(&mut *conn).await?;
        rest = tail;
    }
    Ok(())
}

/// Appends `e` inside the caller's transaction and returns its sequence number.
pub(crate) async fn append(conn: &mut AnyConnection, engine: Engine, e: &AuditEntry) -> Result<i64, StoreError> {
    let (seq, prev) = reserve(conn, engine, e.org, 1).await?;
    let row = StoredEntry::from_entry(e, seq, now_ms(), prev);
    insert_rows(conn, engine, std::slice::from_ref(&row)).await?;
    set_head(conn, engine, e.org, &row.hash).await?;
    Ok(seq)
}

/// Appends entries of possibly several organizations in one transaction (the caller's); returns their sequence
/// numbers in order. Organizations are locked in ascending id order, so two committers never deadlock.
pub(crate) async fn append_many(
    conn: &mut AnyConnection,
    engine: Engine,
    entries: &[&AuditEntry],
) -> Result<Vec<i64>, StoreError> {
    let mut by_org: BTreeMap<OrgId, Vec<usize>> = BTreeMap::new();
    for (i, e) in entries.iter().enumerate() {
        by_org.entry(e.org).or_default().push(i);
    }
    let mut seqs = vec![0i64; entries.len()];
    let at = now_ms();
    for (org, idxs) in by_org {
        let (last, mut prev) = reserve(conn, engine, org, idxs.len() as i64).await?;
        let first = last - idxs.len() as i64 + 1;
        let mut rows = Vec::with_capacity(idxs.len());
        for (k, i) in idxs.iter().enumerate() {
            let row = StoredEntry::from_entry(entries[*i], first + k as i64, at, prev);
            prev = row.hash.clone();
            seqs[*i] = row.seq;
            rows.push(row);
        }
        insert_rows(conn, engine, &rows).await?;
        set_head(conn, engine, org, &prev).await?;
    }
    Ok(seqs)
}

type Job = (AuditEntry, oneshot::Sender<Result<i64, String>>);

/// Most entries one group commit writes.
const MAX_BATCH: usize = 2048;

/// The group committer: entries that are not part of a change (data access, failed sign-ins) are queued here;
/// one task writes whatever is queued in one transaction and answers each caller after the commit, so an answer
/// means the entry is durable (SQLite `synchronous=FULL`, PostgreSQL's commit).
pub(crate) struct AuditWriter {
    tx: mpsc::UnboundedSender<Job>,
}

impl AuditWriter {
    pub(crate) fn start(db: Db) -> AuditWriter {
        let (tx, rx) = mpsc::unbounded_channel::<Job>();
        tokio::spawn(run_writer(db, rx));
        AuditWriter { tx }
    }

    /// Appends `e` and returns its sequence number once it is durable.
    pub(crate) async fn append(&self, e: AuditEntry) -> Result<i64, StoreError> {
        let (done, wait) = oneshot::channel();
        self.tx.send((e, done)).map_err(|_| StoreError::Config("the audit writer has stopped".into()))?;
        match wait.await {
            Ok(Ok(seq)) => Ok(seq),
            Ok(Err(m)) => Err(StoreError::Config(format!("audit append failed: {m}"))),
            Err(_) => Err(StoreError::Config("the audit writer has stopped".into())),
        }
    }
}

async fn run_writer(db: Db, mut rx: mpsc::UnboundedReceiver<Job>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let result = commit_batch(&db, &batch).await;
        match result {
            Ok(seqs) => {
                for ((_, done), seq) in batch.into_iter().zip(seqs) {
                    let _ = done.send(Ok(seq));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, entries = batch.len(), "audit group commit failed");
                let m = e.to_string();
                for (_, done) in batch {
                    let _ = done.send(Err(m.clone()));
                }
            }
        }
    }
}

async fn commit_batch(db: &Db, batch: &[Job]) -> Result<Vec<i64>, StoreError> {
    let entries: Vec<&AuditEntry> = batch.iter().map(|(e, _)| e).collect();
    let mut attempt = 0;
    loop {
        let result = async {
            let mut tx = db.begin_write().await?;
            let seqs = append_many(&mut tx, db.engine, &entries).await?;
            tx.commit().await?;
            Ok::<_, StoreError>(seqs)
        }
        .await;
        match result {
            // A busy or serialization failure is worth one more try; the transaction rolled back, no number used.
            Err(StoreError::Db(e)) if attempt < 3 && !matches!(e, sqlx::Error::RowNotFound) => {
                attempt += 1;
                tracing::warn!(error = %e, attempt, "audit group commit failed, retrying");
                tokio::time::sleep(std::time::Duration::from_millis(20 * attempt)).await;
            }
            other => return other,
        }
    }
}

// ---- reading the trail -----------------------------------------------------------------------------------------

/// Entries of `org` with `from <= seq <= to`, in sequence order, at most `limit`.
pub(crate) async fn load_range(
    conn: &mut AnyConnection,
    engine: Engine,
    org: OrgId,
    from: i64,
    to: i64,
    limit: i64,
) -> Result<Vec<StoredEntry>, StoreError> {
    let mut q = Sql::new(engine);
    q.push("SELECT ").push(COLUMNS).push(" FROM audit_log WHERE org_id = ").bind(org);
    q.push(" AND seq >= ").bind(from).push(" AND seq <= ").bind(to).push(" ORDER BY seq LIMIT ").bind(limit);
    q.fetch_all(&mut *conn).await?.iter().map(StoredEntry::from_row).collect()
}

/// A native connection for reading long stretches of the trail: the `Any` driver converts every value of every
/// row and SQLite's default row channel hands rows over 50 at a time, which makes verification ten times slower.
pub(crate) enum TrailReader {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl TrailReader {
    pub(crate) async fn open(url: &crate::DatabaseUrl) -> Result<TrailReader, StoreError> {
        use sqlx::ConnectOptions;
        use std::str::FromStr;
        Ok(match url.engine() {
            Engine::Sqlite => {
                let opts = sqlx::sqlite::SqliteConnectOptions::from_str(url.expose())?
                    .row_buffer_size(8192)
                    .busy_timeout(std::time::Duration::from_secs(10));
                TrailReader::Sqlite(opts.connect().await?)
            }
            Engine::Postgres => {
                TrailReader::Postgres(sqlx::postgres::PgConnectOptions::from_str(url.expose())?.connect().await?)
            }
        })
    }

    /// As [`load_range`].
    pub(crate) async fn load_range(
        &mut self,
        org: OrgId,
        from: i64,
        to: i64,
        limit: i64,
    ) -> Result<Vec<StoredEntry>, StoreError> {
        fn decode<R: Row>(r: &R) -> Result<StoredEntry, sqlx::Error>
        where
            usize: sqlx::ColumnIndex<R>,
            for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
            for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
        {
            Ok(StoredEntry {
                org_id: r.try_get(0)?,
                seq: r.try_get(1)?,
                at: r.try_get(2)?,
                actor_id: r.try_get(3)?,
                subject_id: r.try_get(4)?,
                session_id: r.try_get(5)?,
                action: r.try_get(6)?,
                module: r.try_get(7)?,
                record_id: r.try_get(8)?,
                target: r.try_get(9)?,
                outcome: r.try_get(10)?,
                detail: r.try_get(11)?,
                request_id: r.try_get(12)?,
                ip: r.try_get(13)?,
                user_agent: r.try_get(14)?,
                prev_hash: r.try_get(15)?,
                hash: r.try_get(16)?,
                hash_format: r.try_get(17)?,
            })
        }
        // The text is fixed; the values are bound.
        Ok(match self {
            TrailReader::Sqlite(c) => {
                let sql = const_format_sql("?", "?", "?", "?");
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(org)
                    .bind(from)
                    .bind(to)
                    .bind(limit)
                    .fetch_all(&mut *c)
                    .await?;
                rows.iter().map(decode).collect::<Result<_, _>>()?
            }
            TrailReader::Postgres(c) => {
                let sql = const_format_sql("$1", "$2", "$3", "$4");
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(org)
                    .bind(from)
                    .bind(to)
                    .bind(limit)
                    .fetch_all(&mut *c)
                    .await?;
                rows.iter().map(decode).collect::<Result<_, _>>()?
            }
        })
    }

    pub(crate) async fn close(self) {
        use sqlx::Connection;
        let _ = match self {
            TrailReader::Sqlite(c) => c.close().await,
            TrailReader::Postgres(c) => c.close().await,
        };
    }
}

fn const_format_sql(a: &str, b: &str, c: &str, d: &str) -> String {
    format!("SELECT {COLUMNS} FROM audit_log WHERE org_id = {a} AND seq >= {b} AND seq <= {c} ORDER BY seq LIMIT {d}")
}

/// The organization's recorded head: the last sequence number and its hash.
pub(crate) async fn head(
    conn: &mut AnyConnection,
    engine: Engine,
    org: OrgId,
) -> Result<Option<(i64, String)>, StoreError> {
    let mut h = Sql::new(engine);
    h.push("SELECT audit_seq, audit_head FROM organizations WHERE id = ").bind(org);
    Ok(match h.fetch_optional(&mut *conn).await? {
        Some(r) => Some((r.try_get("audit_seq")?, r.try_get("audit_head")?)),
        None => None,
    })
}

/// Recomputes the chain of one organization and returns the first bad sequence number, if any (the short form of
/// [`crate::SystemAccess::verify_audit_trail`], without checkpoint signatures).
pub(crate) async fn verify(
    conn: &mut AnyConnection,
    engine: Engine,
    org: OrgId,
) -> Result<Option<(i64, String)>, StoreError> {
    let report =
        crate::audit_verify::verify_org(conn, engine, org, &crate::audit_verify::VerifyOptions::default()).await?;
    Ok(report.problem.map(|p| (p.seq, p.message())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(org: i64) -> StoredEntry {
        let e = AuditEntry::new(org, Some(3), "record.view")
            .record(Module::Customers, 7)
            .detail(serde_json::json!({"a": 1}));
        StoredEntry::from_entry(&e, 5, 1000, "ab".into())
    }

    #[test]
    fn the_hash_covers_the_organization_and_every_column() {
        let base = entry(1);
        assert_eq!(base.compute_hash(&mut Vec::new()), base.hash);
        assert_ne!(entry(2).hash, base.hash, "the organization is covered");
        type Change = Box<dyn Fn(&mut StoredEntry)>;
        let variants: Vec<Change> = vec![
            Box::new(|e| e.seq += 1),
            Box::new(|e| e.at += 1),
            Box::new(|e| e.actor_id = None),
            Box::new(|e| e.subject_id = Some(1)),
            Box::new(|e| e.session_id = Some(1)),
            Box::new(|e| e.action.push('x')),
            Box::new(|e| e.module = None),
            Box::new(|e| e.record_id = Some(8)),
            Box::new(|e| e.target = Some("user:1".into())),
            Box::new(|e| e.outcome = "failure".into()),
            Box::new(|e| e.detail = "{}".into()),
            Box::new(|e| e.request_id = Some("r".into())),
            Box::new(|e| e.ip = Some("1.2.3.4".into())),
            Box::new(|e| e.user_agent = Some("ua".into())),
            Box::new(|e| e.prev_hash = "ac".into()),
        ];
        for (i, change) in variants.iter().enumerate() {
            let mut e = base.clone();
            change(&mut e);
            assert_ne!(e.compute_hash(&mut Vec::new()), base.hash, "variant {i} is not covered");
        }
        // Moving text between adjacent fields changes the encoding.
        let mut a = base.clone();
        a.request_id = Some("ab".into());
        a.ip = Some("c".into());
        let mut b = base.clone();
        b.request_id = Some("a".into());
        b.ip = Some("bc".into());
        assert_ne!(a.compute_hash(&mut Vec::new()), b.compute_hash(&mut Vec::new()));
    }
}
