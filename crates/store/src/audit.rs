//! The audit trail's single writer. Every change is appended in the same transaction as the change itself, so
//! neither exists without the other ([`append`]); events that change nothing (data access, failed sign-ins) go
//! through the group committer ([`AuditWriter`]), which writes whatever is queued in one transaction on its own
//! native connection and answers each caller only after that transaction is durable.
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
use std::ffi::CStr;
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

/// An entry as read, borrowing its text from the row it was decoded from: the verifier hashes it without copying.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EntryRef<'a> {
    pub org_id: OrgId,
    pub seq: i64,
    pub at: i64,
    pub actor_id: Option<i64>,
    pub subject_id: Option<i64>,
    pub session_id: Option<i64>,
    pub action: &'a str,
    pub module: Option<&'a str>,
    pub record_id: Option<i64>,
    pub target: Option<&'a str>,
    pub outcome: &'a str,
    pub detail: &'a str,
    pub request_id: Option<&'a str>,
    pub ip: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    pub prev_hash: &'a str,
    pub hash: &'a str,
    pub hash_format: i64,
}

impl EntryRef<'_> {
    /// The entry with its text copied out of the row.
    pub(crate) fn to_stored(self) -> StoredEntry {
        StoredEntry {
            org_id: self.org_id,
            seq: self.seq,
            at: self.at,
            actor_id: self.actor_id,
            subject_id: self.subject_id,
            session_id: self.session_id,
            action: self.action.to_string(),
            module: self.module.map(str::to_string),
            record_id: self.record_id,
            target: self.target.map(str::to_string),
            outcome: self.outcome.to_string(),
            detail: self.detail.to_string(),
            request_id: self.request_id.map(str::to_string),
            ip: self.ip.map(str::to_string),
            user_agent: self.user_agent.map(str::to_string),
            prev_hash: self.prev_hash.to_string(),
            hash: self.hash.to_string(),
            hash_format: self.hash_format,
        }
    }

    /// The canonical encoding (format 2) at sequence number `seq`: see [`StoredEntry::canonical`].
    fn canonical_as(&self, seq: i64, buf: &mut Vec<u8>) {
        buf.clear();
        put_i64(buf, self.org_id);
        put_i64(buf, seq);
        put_i64(buf, self.at);
        put_opt_i64(buf, self.actor_id);
        put_opt_i64(buf, self.subject_id);
        put_opt_i64(buf, self.session_id);
        put_str(buf, self.action);
        put_opt_str(buf, self.module);
        put_opt_i64(buf, self.record_id);
        put_opt_str(buf, self.target);
        put_str(buf, self.outcome);
        put_str(buf, self.detail);
        put_opt_str(buf, self.request_id);
        put_opt_str(buf, self.ip);
        put_opt_str(buf, self.user_agent);
    }

    /// The SHA-256 the entry should carry at sequence number `seq`, from its stored previous hash and content.
    fn digest_as(&self, seq: i64, buf: &mut Vec<u8>) -> [u8; 32] {
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
            self.canonical_as(seq, buf);
            h.update(b"crm-audit-v2\0");
            h.update(self.prev_hash.as_bytes());
            h.update([0u8]);
            h.update(buf.as_slice());
        }
        h.finalize().into()
    }

    /// Does the stored hash match the recomputed one (`buf` is scratch space)? Compares the hex text without
    /// allocating.
    pub(crate) fn hash_matches(&self, buf: &mut Vec<u8>) -> bool {
        let mut hex = [0u8; 64];
        hex::encode_to_slice(self.digest_as(self.seq, buf), &mut hex).is_ok() && hex.as_slice() == self.hash.as_bytes()
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

    /// The entry's borrowed view.
    pub(crate) fn as_ref(&self) -> EntryRef<'_> {
        EntryRef {
            org_id: self.org_id,
            seq: self.seq,
            at: self.at,
            actor_id: self.actor_id,
            subject_id: self.subject_id,
            session_id: self.session_id,
            action: &self.action,
            module: self.module.as_deref(),
            record_id: self.record_id,
            target: self.target.as_deref(),
            outcome: &self.outcome,
            detail: &self.detail,
            request_id: self.request_id.as_deref(),
            ip: self.ip.as_deref(),
            user_agent: self.user_agent.as_deref(),
            prev_hash: &self.prev_hash,
            hash: &self.hash,
            hash_format: self.hash_format,
        }
    }

    /// The canonical encoding (format 2): every column in a fixed order, integers as 8 big-endian bytes, text
    /// length-prefixed, absent values as a 0 byte and present ones after a 1 byte, so no two entries encode alike.
    pub fn canonical(&self, buf: &mut Vec<u8>) {
        self.as_ref().canonical_as(self.seq, buf);
    }

    /// The hash this entry should carry, from its stored previous hash and content (`buf` is scratch space).
    pub fn compute_hash(&self, buf: &mut Vec<u8>) -> String {
        self.compute_hash_as(self.seq, buf)
    }

    /// The hash the entry would carry at sequence number `seq` (the verifier uses it to recognise moved entries).
    pub fn compute_hash_as(&self, seq: i64, buf: &mut Vec<u8>) -> String {
        hex::encode(self.as_ref().digest_as(seq, buf))
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

/// An entry queued for the group committer, its detail already serialised (by the caller's task, so callers on
/// every core share that work instead of the committer doing it alone).
struct Pending {
    entry: AuditEntry,
    detail: String,
}

#[allow(clippy::large_enum_variant)] // nearly every message is an append; boxing would allocate for each
enum Msg {
    Append(Pending, oneshot::Sender<Result<i64, String>>),
    /// Close the committer's connection (the store is closing) and say when it is closed.
    Close(oneshot::Sender<()>),
}

/// Most entries one group commit writes.
const MAX_BATCH: usize = 2048;

/// The group committer: entries that are not part of a change (data access, failed sign-ins) are queued here;
/// one task writes whatever is queued in one transaction and answers each caller after the commit, so an answer
/// means the entry is durable (SQLite `synchronous=FULL`, PostgreSQL's commit).
pub(crate) struct AuditWriter {
    tx: mpsc::UnboundedSender<Msg>,
}

impl AuditWriter {
    /// Starts the committer: on SQLite a thread of its own writing through the C API ([`run_sqlite_writer`]), on
    /// PostgreSQL a task with a native sqlx connection. The SQLite database must be a file: an in-memory one has no
    /// name the committer's connection could open (and no second connection would see the pool's data).
    pub(crate) fn start(db: Db) -> Result<AuditWriter, StoreError> {
        let (tx, rx) = mpsc::unbounded_channel::<Msg>();
        match db.engine {
            Engine::Sqlite => {
                let path = crate::sqlite_inline::RawConnection::file_path(&db.url)?.ok_or_else(|| {
                    StoreError::Config(format!("the audit trail needs the SQLite database in a file, not {}", db.url))
                })?;
                std::thread::Builder::new()
                    .name("crm-audit-commit".into())
                    .spawn(move || run_sqlite_writer(&path, rx))
                    .map_err(|e| StoreError::Config(format!("cannot start the audit committer's thread: {e}")))?;
            }
            Engine::Postgres => {
                tokio::spawn(run_writer(db, rx));
            }
        }
        Ok(AuditWriter { tx })
    }

    /// Appends `e` and returns its sequence number once it is durable.
    pub(crate) async fn append(&self, entry: AuditEntry) -> Result<i64, StoreError> {
        let detail = entry.detail.to_string();
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Msg::Append(Pending { entry, detail }, done))
            .map_err(|_| StoreError::Config("the audit writer has stopped".into()))?;
        match wait.await {
            Ok(Ok(seq)) => Ok(seq),
            Ok(Err(m)) => Err(StoreError::Config(format!("audit append failed: {m}"))),
            Err(_) => Err(StoreError::Config("the audit writer has stopped".into())),
        }
    }

    /// Closes the committer's connection after the entries queued before (the store is closing); later appends
    /// fail, as they do on the closed pool.
    pub(crate) async fn close(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Close(done)).is_ok() {
            let _ = wait.await;
        }
    }
}

type Queued = (Pending, oneshot::Sender<Result<i64, String>>);

/// Moves `first` and whatever else is queued (up to [`MAX_BATCH`] entries) into the batch or the close requests.
fn take_queued(
    rx: &mut mpsc::UnboundedReceiver<Msg>,
    first: Msg,
    batch: &mut Vec<Queued>,
    closing: &mut Vec<oneshot::Sender<()>>,
) {
    let mut next = Some(first);
    while let Some(msg) = next.take() {
        match msg {
            Msg::Append(p, done) => batch.push((p, done)),
            Msg::Close(done) => closing.push(done),
        }
        if batch.len() < MAX_BATCH {
            next = rx.try_recv().ok();
        }
    }
}

/// Answers every caller of a written (or failed) batch, and empties it.
fn answer(batch: &mut Vec<Queued>, result: Result<Vec<i64>, StoreError>) {
    match result {
        Ok(seqs) => {
            for ((_, done), seq) in batch.drain(..).zip(seqs) {
                let _ = done.send(Ok(seq));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, entries = batch.len(), "audit group commit failed");
            let m = e.to_string();
            for (_, done) in batch.drain(..) {
                let _ = done.send(Err(m.clone()));
            }
        }
    }
}

fn closed_error() -> StoreError {
    StoreError::Config("the store is closed".into())
}

/// The PostgreSQL committer, a task: one native connection, each batch one transaction.
async fn run_writer(db: Db, mut rx: mpsc::UnboundedReceiver<Msg>) {
    let mut conn: Option<sqlx::PgConnection> = None;
    let mut batch: Vec<Queued> = Vec::new();
    let mut closing = Vec::new();
    let mut closed = false;
    while let Some(first) = rx.recv().await {
        take_queued(&mut rx, first, &mut batch, &mut closing);
        // Callers woken by the last commit are queueing their next entries: one turn of the scheduler lets them,
        // so the batch is not cut after the first few.
        if batch.len() < MAX_BATCH {
            tokio::task::yield_now().await;
            if let Ok(next) = rx.try_recv() {
                take_queued(&mut rx, next, &mut batch, &mut closing);
            }
        }
        if !batch.is_empty() {
            tracing::debug!(entries = batch.len(), "audit group commit");
            let entries: Vec<&Pending> = batch.iter().map(|(p, _)| p).collect();
            let result = if closed { Err(closed_error()) } else { commit_batch(&db, &mut conn, &entries).await };
            drop(entries);
            answer(&mut batch, result);
        }
        if !closing.is_empty() {
            closed = true;
            if let Some(c) = conn.take() {
                close_postgres(c).await;
            }
            for done in closing.drain(..) {
                let _ = done.send(());
            }
        }
    }
    if let Some(c) = conn.take() {
        close_postgres(c).await;
    }
}

/// The committer of a SQLite file, on its own thread: each batch is one `BEGIN IMMEDIATE … COMMIT` stepped through
/// the C API ([`crate::sqlite_inline::WriteConnection`]). Through sqlx every statement of a batch was a message
/// round trip to the driver's connection thread (50–80 µs of CPU each on a 2-core machine, BENCHMARKS.md §4);
/// here the thread blocks only in SQLite, mostly in the commit's fsync, and the async workers keep serving.
fn run_sqlite_writer(path: &CStr, mut rx: mpsc::UnboundedReceiver<Msg>) {
    let mut conn: Option<SqliteBatchWriter> = None;
    let mut batch: Vec<Queued> = Vec::new();
    let mut closing = Vec::new();
    let mut closed = false;
    while let Some(first) = rx.blocking_recv() {
        take_queued(&mut rx, first, &mut batch, &mut closing);
        if batch.len() < MAX_BATCH {
            std::thread::yield_now();
            if let Ok(next) = rx.try_recv() {
                take_queued(&mut rx, next, &mut batch, &mut closing);
            }
        }
        if !batch.is_empty() {
            tracing::debug!(entries = batch.len(), "audit group commit");
            let entries: Vec<&Pending> = batch.iter().map(|(p, _)| p).collect();
            let result = if closed { Err(closed_error()) } else { commit_batch_sqlite(path, &mut conn, &entries) };
            drop(entries);
            answer(&mut batch, result);
        }
        if !closing.is_empty() {
            closed = true;
            conn = None;
            for done in closing.drain(..) {
                let _ = done.send(());
            }
        }
    }
}

/// [`commit_batch`] for the SQLite committer's thread: a failed batch rolled back (no number was used up); the
/// connection is opened again and the batch retried a few times (a lock held past the busy wait, a full disk
/// freed meanwhile).
fn commit_batch_sqlite(
    path: &CStr,
    conn: &mut Option<SqliteBatchWriter>,
    entries: &[&Pending],
) -> Result<Vec<i64>, StoreError> {
    let mut attempt = 0;
    loop {
        let result = match conn {
            Some(c) => c.write(entries),
            None => SqliteBatchWriter::open(path).and_then(|c| conn.insert(c).write(entries)),
        };
        match result {
            Ok(seqs) => return Ok(seqs),
            Err(e) => {
                *conn = None;
                match e {
                    StoreError::Db(e) if attempt < 3 => {
                        attempt += 1;
                        tracing::warn!(error = %e, attempt, "audit group commit failed, retrying");
                        std::thread::sleep(std::time::Duration::from_millis(20 * attempt));
                    }
                    other => return Err(other),
                }
            }
        }
    }
}

/// The SQLite committer's connection and its `INSERT` texts, one per chunk size (each prepared once).
struct SqliteBatchWriter {
    conn: crate::sqlite_inline::WriteConnection,
    inserts: Vec<(usize, String)>,
}

impl SqliteBatchWriter {
    fn open(path: &CStr) -> Result<SqliteBatchWriter, StoreError> {
        let conn = crate::sqlite_inline::WriteConnection::open(path)?;
        let inserts = INSERT_CHUNKS.iter().map(|n| (*n, sqlite_insert(*n))).collect();
        Ok(SqliteBatchWriter { conn, inserts })
    }

    /// Appends `entries` in one transaction, durable when this returns; their sequence numbers in order.
    fn write(&mut self, entries: &[&Pending]) -> Result<Vec<i64>, StoreError> {
        self.conn.exec(c"BEGIN IMMEDIATE")?;
        let written = self.write_in_transaction(entries).and_then(|seqs| self.conn.exec(c"COMMIT").map(|()| seqs));
        if written.is_err() {
            // Nothing of the batch stays; the connection is dropped by the caller anyway.
            let _ = self.conn.exec(c"ROLLBACK");
        }
        written
    }

    fn write_in_transaction(&mut self, entries: &[&Pending]) -> Result<Vec<i64>, StoreError> {
        use crate::sqlite_inline::Bind;
        let mut seqs = vec![0i64; entries.len()];
        let at = now_ms();
        for (org, idxs) in by_org(entries) {
            let n = idxs.len() as i64;
            let row = self
                .conn
                .rows(
                    "UPDATE organizations SET audit_seq = audit_seq + ?1 WHERE id = ?2 RETURNING audit_seq, audit_head",
                    &[Bind::Int(Some(n)), Bind::Int(Some(org))],
                    1,
                )?
                .pop()
                .ok_or(StoreError::NotFound)?;
            let last = row.int("audit_seq")?.ok_or(StoreError::NotFound)?;
            let head = row.text("audit_head")?.unwrap_or_default();
            let rows = chain(entries, &idxs, last - n + 1, at, head);
            let mut rest = rows.as_slice();
            let mut binds: Vec<Bind<'_>> = Vec::with_capacity(18 * rest.len().min(INSERT_CHUNKS[0]));
            while !rest.is_empty() {
                let (size, sql) = self
                    .inserts
                    .iter()
                    .find(|(s, _)| *s <= rest.len())
                    .map(|(s, q)| (*s, q.as_str()))
                    .unwrap_or((1, ""));
                let (chunk, tail) = rest.split_at(size);
                binds.clear();
                for r in chunk {
                    let e = &r.p.entry;
                    binds.extend([
                        Bind::Int(Some(e.org)),
                        Bind::Int(Some(r.seq)),
                        Bind::Int(Some(at)),
                        Bind::Int(e.actor),
                        Bind::Int(e.subject),
                        Bind::Int(e.session_id),
                        Bind::Text(Some(e.action.as_str())),
                        Bind::Text(e.module.map(Module::as_str)),
                        Bind::Int(e.record_id),
                        Bind::Text(e.target.as_deref()),
                        Bind::Text(Some(e.outcome)),
                        Bind::Text(Some(r.p.detail.as_str())),
                        Bind::Text(e.request_id.as_deref()),
                        Bind::Text(e.ip.as_deref()),
                        Bind::Text(e.user_agent.as_deref()),
                        Bind::Text(Some(r.prev.as_str())),
                        Bind::Text(Some(r.hash.as_str())),
                        Bind::Int(Some(HASH_FORMAT)),
                    ]);
                }
                self.conn.rows(sql, &binds, usize::MAX)?;
                rest = tail;
            }
            let head = rows.last().map(|r| r.hash.as_str()).unwrap_or_default();
            self.conn.rows(
                "UPDATE organizations SET audit_head = ?1 WHERE id = ?2",
                &[Bind::Text(Some(head)), Bind::Int(Some(org))],
                usize::MAX,
            )?;
            for (r, i) in rows.iter().zip(&idxs) {
                seqs[*i] = r.seq;
            }
        }
        Ok(seqs)
    }
}

async fn commit_batch(
    db: &Db,
    conn: &mut Option<sqlx::PgConnection>,
    entries: &[&Pending],
) -> Result<Vec<i64>, StoreError> {
    let mut attempt = 0;
    loop {
        let result = async {
            let c = match conn {
                Some(c) => c,
                None => conn.insert(open_postgres(&db.url).await?),
            };
            write_postgres(c, entries).await
        }
        .await;
        match result {
            Ok(seqs) => return Ok(seqs),
            Err(e) => {
                // The transaction rolled back (the connection is dropped with it): no number was used up.
                if let Some(c) = conn.take() {
                    close_postgres(c).await;
                }
                match e {
                    // A busy or serialization failure, or a lost connection, is worth another try.
                    StoreError::Db(e) if attempt < 3 && !matches!(e, sqlx::Error::RowNotFound) => {
                        attempt += 1;
                        tracing::warn!(error = %e, attempt, "audit group commit failed, retrying");
                        tokio::time::sleep(std::time::Duration::from_millis(20 * attempt)).await;
                    }
                    other => return Err(other),
                }
            }
        }
    }
}

/// One entry of a batch with its place in the chain.
struct Chained<'a> {
    p: &'a Pending,
    seq: i64,
    prev: String,
    hash: String,
}

/// The entries `idxs` of `org`, numbered from `first` and chained from `prev`.
fn chain<'a>(entries: &[&'a Pending], idxs: &[usize], first: i64, at: i64, mut prev: String) -> Vec<Chained<'a>> {
    let mut buf = Vec::with_capacity(1024);
    let mut out = Vec::with_capacity(idxs.len());
    for (k, i) in idxs.iter().enumerate() {
        let p = entries[*i];
        let e = &p.entry;
        let seq = first + k as i64;
        let r = EntryRef {
            org_id: e.org,
            seq,
            at,
            actor_id: e.actor,
            subject_id: e.subject,
            session_id: e.session_id,
            action: &e.action,
            module: e.module.map(Module::as_str),
            record_id: e.record_id,
            target: e.target.as_deref(),
            outcome: e.outcome,
            detail: &p.detail,
            request_id: e.request_id.as_deref(),
            ip: e.ip.as_deref(),
            user_agent: e.user_agent.as_deref(),
            prev_hash: &prev,
            hash: "",
            hash_format: HASH_FORMAT,
        };
        let hash = hex::encode(r.digest_as(seq, &mut buf));
        let row = Chained { p, seq, prev: std::mem::replace(&mut prev, hash.clone()), hash };
        out.push(row);
    }
    out
}

/// Entries grouped by organization, in ascending id order (so two committers never deadlock).
fn by_org(entries: &[&Pending]) -> BTreeMap<OrgId, Vec<usize>> {
    let mut by_org: BTreeMap<OrgId, Vec<usize>> = BTreeMap::new();
    for (i, p) in entries.iter().enumerate() {
        by_org.entry(p.entry.org).or_default().push(i);
    }
    by_org
}

/// The PostgreSQL committer's own native connection: values are bound with their types (no conversion through the
/// `Any` driver), and a batch of one organization is one `INSERT … SELECT FROM UNNEST` of one array per column.
/// Opened on first use, dropped after an error (and opened again).
async fn open_postgres(url: &crate::DatabaseUrl) -> Result<sqlx::PgConnection, StoreError> {
    use sqlx::ConnectOptions;
    use std::str::FromStr;
    Ok(sqlx::postgres::PgConnectOptions::from_str(url.expose())?.connect().await?)
}

async fn close_postgres(c: sqlx::PgConnection) {
    use sqlx::Connection;
    let _ = c.close().await;
}

/// The rows one SQLite `INSERT` of a batch writes, largest first (a batch is cut into chunks of these sizes).
const INSERT_CHUNKS: [usize; 5] = [256, 64, 16, 4, 1];

/// `INSERT INTO audit_log (…) VALUES (?, …), …` for `rows` rows (the text depends only on the count, so the
/// connection's statement cache holds one statement per chunk size).
fn sqlite_insert(rows: usize) -> String {
    let one = format!("({})", vec!["?"; 18].join(", "));
    format!("INSERT INTO audit_log ({COLUMNS}) VALUES {}", vec![one; rows].join(", "))
}

async fn write_postgres(c: &mut sqlx::PgConnection, entries: &[&Pending]) -> Result<Vec<i64>, StoreError> {
    use sqlx::Connection;
    let mut tx = c.begin().await?;
    let mut seqs = vec![0i64; entries.len()];
    let at = now_ms();
    for (org, idxs) in by_org(entries) {
        let n = idxs.len() as i64;
        let row = sqlx::query(
            "UPDATE organizations SET audit_seq = audit_seq + $1 WHERE id = $2 RETURNING audit_seq, audit_head",
        )
        .bind(n)
        .bind(org)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let (last, head): (i64, String) = (row.try_get(0)?, row.try_get(1)?);
        let rows = chain(entries, &idxs, last - n + 1, at, head);
        let col = |f: fn(&Chained<'_>) -> Option<i64>| rows.iter().map(f).collect::<Vec<Option<i64>>>();
        let text = |f: for<'r> fn(&'r Chained<'_>) -> Option<&'r str>| rows.iter().map(f).collect::<Vec<_>>();
        sqlx::query(
            "INSERT INTO audit_log (org_id, seq, at, actor_id, subject_id, session_id, action, module, record_id, \
             target, outcome, detail, request_id, ip, user_agent, prev_hash, hash, hash_format) \
             SELECT $1, s.seq, $2, s.actor_id, s.subject_id, s.session_id, s.action, s.module, s.record_id, s.target, \
             s.outcome, s.detail, s.request_id, s.ip, s.user_agent, s.prev_hash, s.hash, $3 FROM UNNEST(\
             $4::BIGINT[], $5::BIGINT[], $6::BIGINT[], $7::BIGINT[], $8::TEXT[], $9::TEXT[], $10::BIGINT[], \
             $11::TEXT[], $12::TEXT[], $13::TEXT[], $14::TEXT[], $15::TEXT[], $16::TEXT[], $17::TEXT[], $18::TEXT[]) \
             AS s(seq, actor_id, subject_id, session_id, action, module, record_id, target, outcome, detail, \
             request_id, ip, user_agent, prev_hash, hash)",
        )
        .bind(org)
        .bind(at)
        .bind(HASH_FORMAT)
        .bind(rows.iter().map(|r| r.seq).collect::<Vec<i64>>())
        .bind(col(|r| r.p.entry.actor))
        .bind(col(|r| r.p.entry.subject))
        .bind(col(|r| r.p.entry.session_id))
        .bind(text(|r| Some(r.p.entry.action.as_str())))
        .bind(text(|r| r.p.entry.module.map(Module::as_str)))
        .bind(col(|r| r.p.entry.record_id))
        .bind(text(|r| r.p.entry.target.as_deref()))
        .bind(text(|r| Some(r.p.entry.outcome)))
        .bind(text(|r| Some(r.p.detail.as_str())))
        .bind(text(|r| r.p.entry.request_id.as_deref()))
        .bind(text(|r| r.p.entry.ip.as_deref()))
        .bind(text(|r| r.p.entry.user_agent.as_deref()))
        .bind(text(|r| Some(r.prev.as_str())))
        .bind(text(|r| Some(r.hash.as_str())))
        .execute(&mut *tx)
        .await?;
        let head = rows.last().map(|r| r.hash.as_str()).unwrap_or_default();
        sqlx::query("UPDATE organizations SET audit_head = $1 WHERE id = $2")
            .bind(head)
            .bind(org)
            .execute(&mut *tx)
            .await?;
        for (r, i) in rows.iter().zip(&idxs) {
            seqs[*i] = r.seq;
        }
    }
    tx.commit().await?;
    Ok(seqs)
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
                rows.iter().map(|r| decode_entry(r).map(EntryRef::to_stored)).collect::<Result<_, _>>()?
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
                rows.iter().map(|r| decode_entry(r).map(EntryRef::to_stored)).collect::<Result<_, _>>()?
            }
        })
    }

    /// Streams the entries of `org` with `from <= seq <= to` in sequence order to `each`, borrowed from the rows
    /// (no copy), until `each` returns `false` or the range ends.
    pub(crate) async fn scan(
        &mut self,
        org: OrgId,
        from: i64,
        to: i64,
        mut each: impl FnMut(&EntryRef<'_>) -> bool,
    ) -> Result<(), StoreError> {
        use futures_util::TryStreamExt;
        match self {
            TrailReader::Sqlite(c) => {
                let sql = scan_sql("?", "?", "?");
                let mut rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(org).bind(from).bind(to).fetch(&mut *c);
                while let Some(row) = rows.try_next().await? {
                    if !each(&decode_entry(&row)?) {
                        break;
                    }
                }
            }
            TrailReader::Postgres(c) => {
                let sql = scan_sql("$1", "$2", "$3");
                let mut rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(org).bind(from).bind(to).fetch(&mut *c);
                while let Some(row) = rows.try_next().await? {
                    if !each(&decode_entry(&row)?) {
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    pub(crate) async fn close(self) {
        use sqlx::Connection;
        let _ = match self {
            TrailReader::Sqlite(c) => c.close().await,
            TrailReader::Postgres(c) => c.close().await,
        };
    }
}

/// One row of [`COLUMNS`] from a native connection, borrowed (the one decoder of [`TrailReader`]).
fn decode_entry<'r, R: Row>(r: &'r R) -> Result<EntryRef<'r>, sqlx::Error>
where
    usize: sqlx::ColumnIndex<R>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    &'r str: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(EntryRef {
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

fn scan_sql(a: &str, b: &str, c: &str) -> String {
    format!("SELECT {COLUMNS} FROM audit_log WHERE org_id = {a} AND seq >= {b} AND seq <= {c} ORDER BY seq")
}

fn const_format_sql(a: &str, b: &str, c: &str, d: &str) -> String {
    format!("SELECT {COLUMNS} FROM audit_log WHERE org_id = {a} AND seq >= {b} AND seq <= {c} ORDER BY seq LIMIT {d}")
}

// ---- reading the trail through SQLite's C API ------------------------------------------------------------------

/// A read-only SQLite connection through the C API, for the verifier's range scans. The driver copies every value
/// of every row into its own allocation before handing the row over (about 5 µs per entry, most of verification's
/// time); here each column is read in place, valid until the next step, and borrowed by the [`EntryRef`] given to
/// the callback. With `sqlite_inline` (which opens the connection, `RawConnection`), the store's only `unsafe`
/// code; every call is checked and the handles are released on drop.
pub(crate) mod raw_sqlite {
    use super::EntryRef;
    use crate::StoreError;
    use crate::sqlite_inline::RawConnection;
    use crm_domain::OrgId;
    use libsqlite3_sys as ffi;
    use std::ffi::{CStr, c_int};
    use std::ptr;

    pub(crate) struct Reader {
        connection: RawConnection,
    }

    struct Stmt<'r> {
        stmt: *mut ffi::sqlite3_stmt,
        _reader: std::marker::PhantomData<&'r Reader>,
    }

    impl Drop for Stmt<'_> {
        fn drop(&mut self) {
            // SAFETY: prepared by `sqlite3_prepare_v2` on a connection that outlives this borrow.
            unsafe {
                ffi::sqlite3_finalize(self.stmt);
            }
        }
    }

    impl Reader {
        /// Opens the database file read-only.
        pub(crate) fn open(url: &crate::DatabaseUrl) -> Result<Reader, StoreError> {
            let path = RawConnection::file_path(url)?
                .ok_or_else(|| StoreError::Config(format!("reading the audit trail: {url} is not a SQLite file")))?;
            let connection = RawConnection::open_read_only(&path)?;
            // Pages read in place from the mapped file instead of copied by a system call each.
            connection.exec(c"PRAGMA mmap_size = 1073741824")?;
            Ok(Reader { connection })
        }

        fn check(&self, rc: c_int) -> Result<(), StoreError> {
            self.connection.check(rc)
        }

        fn prepare(&self, sql: &CStr) -> Result<Stmt<'_>, StoreError> {
            let mut stmt = ptr::null_mut();
            // SAFETY: an open connection and a valid C string, read up to its terminator.
            let rc = unsafe {
                ffi::sqlite3_prepare_v2(self.connection.handle(), sql.as_ptr(), -1, &mut stmt, ptr::null_mut())
            };
            let stmt = Stmt { stmt, _reader: std::marker::PhantomData };
            self.check(rc)?;
            if stmt.stmt.is_null() {
                return Err(StoreError::Config("reading the audit trail: empty statement".into()));
            }
            Ok(stmt)
        }

        /// As [`super::TrailReader::scan`]. A row whose values do not have the column's type (which the driver would
        /// refuse to decode) ends the scan there, as a bad entry would.
        pub(crate) fn scan(
            &mut self,
            org: OrgId,
            from: i64,
            to: i64,
            mut each: impl FnMut(&EntryRef<'_>) -> bool,
        ) -> Result<(), StoreError> {
            let sql = c"SELECT org_id, seq, at, actor_id, subject_id, session_id, action, module, record_id, target, outcome, detail, request_id, ip, user_agent, prev_hash, hash, hash_format FROM audit_log WHERE org_id = ?1 AND seq >= ?2 AND seq <= ?3 ORDER BY seq";
            let stmt = self.prepare(sql)?;
            for (i, v) in [(1, org), (2, from), (3, to)] {
                // SAFETY: a prepared statement with three parameters.
                self.check(unsafe { ffi::sqlite3_bind_int64(stmt.stmt, i, v) })?;
            }
            loop {
                // SAFETY: a prepared statement, stepped on the thread that owns the connection.
                let rc = unsafe { ffi::sqlite3_step(stmt.stmt) };
                if rc == ffi::SQLITE_DONE {
                    return Ok(());
                }
                if rc != ffi::SQLITE_ROW {
                    return self.check(rc);
                }
                // The statement is on a row; its values are read before the next step.
                let row = Row(stmt.stmt);
                let Some(e) = row.entry() else { return Ok(()) };
                if !each(&e) {
                    return Ok(());
                }
            }
        }
    }

    /// The current row of a statement (valid until it steps again; the entry borrows `self`).
    struct Row(*mut ffi::sqlite3_stmt);

    impl Row {
        fn int(&self, i: c_int) -> Option<Option<i64>> {
            // SAFETY: `i` is a column of the current row.
            match unsafe { ffi::sqlite3_column_type(self.0, i) } {
                ffi::SQLITE_NULL => Some(None),
                ffi::SQLITE_INTEGER => Some(Some(unsafe { ffi::sqlite3_column_int64(self.0, i) })),
                _ => None,
            }
        }

        fn text(&self, i: c_int) -> Option<Option<&str>> {
            // SAFETY: `i` is a column of the current row; the text pointer is read before its length (the order
            // SQLite documents) and stays valid until the statement steps again: the row and the entry borrowing it
            // live within one turn of the scan loop.
            unsafe {
                match ffi::sqlite3_column_type(self.0, i) {
                    ffi::SQLITE_NULL => Some(None),
                    ffi::SQLITE_TEXT => {
                        let p = ffi::sqlite3_column_text(self.0, i);
                        let n = usize::try_from(ffi::sqlite3_column_bytes(self.0, i)).ok()?;
                        if p.is_null() {
                            return None;
                        }
                        std::str::from_utf8(std::slice::from_raw_parts(p, n)).ok().map(Some)
                    }
                    _ => None,
                }
            }
        }

        fn entry(&self) -> Option<EntryRef<'_>> {
            Some(EntryRef {
                org_id: self.int(0)??,
                seq: self.int(1)??,
                at: self.int(2)??,
                actor_id: self.int(3)?,
                subject_id: self.int(4)?,
                session_id: self.int(5)?,
                action: self.text(6)??,
                module: self.text(7)?,
                record_id: self.int(8)?,
                target: self.text(9)?,
                outcome: self.text(10)??,
                detail: self.text(11)??,
                request_id: self.text(12)?,
                ip: self.text(13)?,
                user_agent: self.text(14)?,
                prev_hash: self.text(15)??,
                hash: self.text(16)??,
                hash_format: self.int(17)??,
            })
        }
    }
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
