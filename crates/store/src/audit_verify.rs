//! Verification, signed checkpoints, archives and retention of the audit trail.
//!
//! - **Verify** ([`verify_org`]): streams an organization's entries in sequence order, recomputes every hash (on
//!   both cores) and checks every link, every checkpoint signature and that each checkpoint's head is the hash of
//!   its entry, and that the trail reaches the organization's recorded head. The first problem is named with its
//!   sequence number and kind: modified, deleted, inserted, reordered, truncated, or a bad checkpoint.
//! - **Checkpoints** ([`checkpoint_org`]): the server signs (organization, seq, time, kind, head hash) with the
//!   Ed25519 key kept outside the database, after verifying the entries since the previous checkpoint. A rewrite
//!   of the database that recomputes every hash still breaks at the first signed checkpoint after it.
//! - **Archives**: JSON Lines (header, keys, checkpoints, entries exactly as stored, end line), verifiable offline
//!   ([`verify_archive`]) and against the database.
//! - **Purge**: entries older than a date are deleted only after an archive holding them is written, synced and
//!   verified; the purge leaves a signed `purge` checkpoint at the last purged entry, which anchors the rest.

use crate::audit::{self, AuditEntry, StoredEntry};
use crate::audit_sign::{AuditPublicKey, AuditSigner, checkpoint_message};
use crate::db::{Engine, Sql};
use crate::{StoreError, SystemAccess, now_ms};
use crm_domain::{OrgId, UserId};
use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, Row};
use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::Arc;

/// Entries fetched per round trip while verifying.
const CHUNK: i64 = 20_000;

/// What is wrong with a trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TamperKind {
    /// An entry's content, hash or link was changed.
    Modified,
    /// An entry is missing from the middle of the trail.
    Deleted,
    /// An entry that was never appended sits in the trail.
    Inserted,
    /// Entries were moved to other positions.
    Reordered,
    /// The newest entries are gone (the trail ends before the organization's head, a signed checkpoint or an
    /// archive).
    Truncated,
    /// A checkpoint's signature does not verify, or its key is not trusted.
    Checkpoint,
}

impl TamperKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TamperKind::Modified => "modified",
            TamperKind::Deleted => "deleted",
            TamperKind::Inserted => "inserted",
            TamperKind::Reordered => "reordered",
            TamperKind::Truncated => "truncated",
            TamperKind::Checkpoint => "bad checkpoint",
        }
    }
}

/// The first bad position of a trail and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditProblem {
    pub seq: i64,
    pub kind: TamperKind,
    pub detail: String,
}

impl AuditProblem {
    fn new(seq: i64, kind: TamperKind, detail: impl Into<String>) -> AuditProblem {
        AuditProblem { seq, kind, detail: detail.into() }
    }
    /// One line for people.
    pub fn message(&self) -> String {
        self.detail.clone()
    }
}

/// Which keys checkpoint signatures were checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeySource {
    /// Keys the caller passed (an exported public key): the strong check.
    Given,
    /// Keys registered in the database: catches everything but a forger who also replaced the keys.
    Database,
}

/// Progress callback: `(entries checked, entries in total)`.
pub type Progress = Arc<dyn Fn(u64, u64) + Send + Sync>;

#[derive(Default, Clone)]
pub struct VerifyOptions {
    /// Trusted public keys; `None` uses the keys registered in the database.
    pub keys: Option<Vec<AuditPublicKey>>,
    pub progress: Option<Progress>,
    /// Start after this (seq, hash), trusted (incremental checks from the last checkpoint).
    pub start: Option<(i64, String)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub org: OrgId,
    /// The organization's recorded head when verification started.
    pub head_seq: i64,
    /// Entries checked.
    pub entries: u64,
    /// The first and last sequence numbers checked (the first is 1 unless a purge removed older entries).
    pub first_seq: i64,
    pub last_seq: i64,
    pub last_hash: String,
    pub checkpoints: usize,
    /// The last entry covered by a verified signed checkpoint: entries after it are not anchored yet.
    pub signed_through: i64,
    pub key_source: KeySource,
    pub problem: Option<AuditProblem>,
}

/// A signed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub org_id: OrgId,
    pub seq: i64,
    /// `periodic` or `purge`.
    pub kind: String,
    pub at: i64,
    pub head: String,
    pub key_id: String,
    pub signature: String,
}

impl Checkpoint {
    fn message(&self) -> Vec<u8> {
        checkpoint_message(self.org_id, self.seq, self.at, &self.kind, &self.head)
    }
    fn signed(org: OrgId, seq: i64, kind: &str, head: String, signer: &AuditSigner) -> Checkpoint {
        let at = now_ms();
        let signature = signer.sign(&checkpoint_message(org, seq, at, kind, &head));
        Checkpoint { org_id: org, seq, kind: kind.into(), at, head, key_id: signer.key_id().into(), signature }
    }
}

async fn load_checkpoints(conn: &mut AnyConnection, engine: Engine, org: OrgId) -> Result<Vec<Checkpoint>, StoreError> {
    let mut q = Sql::new(engine);
    q.push("SELECT org_id, seq, kind, at, head, key_id, signature FROM audit_checkpoints WHERE org_id = ").bind(org);
    q.push(" ORDER BY seq, kind");
    q.fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|r| {
            Ok(Checkpoint {
                org_id: r.try_get("org_id")?,
                seq: r.try_get("seq")?,
                kind: r.try_get("kind")?,
                at: r.try_get("at")?,
                head: r.try_get("head")?,
                key_id: r.try_get("key_id")?,
                signature: r.try_get("signature")?,
            })
        })
        .collect()
}

async fn insert_checkpoint(conn: &mut AnyConnection, engine: Engine, c: &Checkpoint) -> Result<(), StoreError> {
    let mut q = Sql::new(engine);
    q.push("INSERT INTO audit_checkpoints (org_id, seq, kind, at, head, key_id, signature) VALUES (")
        .bind(c.org_id)
        .push(", ")
        .bind(c.seq)
        .push(", ")
        .bind(c.kind.as_str())
        .push(", ")
        .bind(c.at)
        .push(", ")
        .bind(c.head.as_str())
        .push(", ")
        .bind(c.key_id.as_str())
        .push(", ")
        .bind(c.signature.as_str())
        .push(") ON CONFLICT DO NOTHING");
    q.execute(&mut *conn).await?;
    Ok(())
}

async fn load_keys(conn: &mut AnyConnection, engine: Engine) -> Result<Vec<AuditPublicKey>, StoreError> {
    let mut q = Sql::new(engine);
    q.push("SELECT public_key FROM audit_keys ORDER BY created_at");
    let mut out = Vec::new();
    for r in q.fetch_all(&mut *conn).await? {
        let text: String = r.try_get("public_key")?;
        // A malformed key row trusts nothing; checkpoints it would have verified are reported.
        if let Ok(k) = AuditPublicKey::from_hex(&text) {
            out.push(k);
        }
    }
    Ok(out)
}

async fn seq_of_hash(
    conn: &mut AnyConnection,
    engine: Engine,
    org: OrgId,
    hash: &str,
) -> Result<Option<i64>, StoreError> {
    let mut q = Sql::new(engine);
    q.push("SELECT seq FROM audit_log WHERE org_id = ")
        .bind(org)
        .push(" AND hash = ")
        .bind(hash)
        .push(" ORDER BY seq LIMIT 1");
    Ok(match q.fetch_optional(&mut *conn).await? {
        Some(r) => Some(r.try_get("seq")?),
        None => None,
    })
}

/// Recomputes every entry's hash, on both cores; `true` where it matches the stored one.
fn hash_all(rows: &[StoredEntry]) -> Vec<bool> {
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).clamp(1, 8);
    if threads == 1 || rows.len() < 2048 {
        let mut buf = Vec::with_capacity(512);
        return rows.iter().map(|r| r.compute_hash(&mut buf) == r.hash).collect();
    }
    let per = rows.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = rows
            .chunks(per)
            .map(|part| {
                s.spawn(move || {
                    let mut buf = Vec::with_capacity(512);
                    part.iter().map(|r| r.compute_hash(&mut buf) == r.hash).collect::<Vec<bool>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
    })
}

/// Names what is wrong at `rows[i]`, whose link or hash failed (`prev` is the verified hash before it).
async fn classify(
    conn: &mut AnyConnection,
    engine: Engine,
    org: OrgId,
    rows: &[StoredEntry],
    i: usize,
    prev: &str,
) -> Result<AuditProblem, StoreError> {
    let r = &rows[i];
    let e = r.seq;
    let next = match rows.get(i + 1) {
        Some(n) => Some(n.clone()),
        None => audit::load_range(conn, engine, org, e + 1, e + 1, 1).await?.pop(),
    };
    let next_skips = next.as_ref().is_some_and(|n| n.prev_hash == prev);
    let mut buf = Vec::new();
    if r.prev_hash != prev {
        if let Some(t) = seq_of_hash(conn, engine, org, &r.prev_hash).await? {
            if t < e - 1 {
                return Ok(AuditProblem::new(
                    t + 1,
                    TamperKind::Inserted,
                    format!("entries {} to {} were inserted: entry {e} links to entry {t}", t + 1, e - 1),
                ));
            }
            if t >= e {
                return Ok(AuditProblem::new(
                    e,
                    TamperKind::Reordered,
                    format!("entries were reordered: entry {e} links to entry {t}, so it belongs after it"),
                ));
            }
        }
        if next_skips {
            return Ok(AuditProblem::new(
                e,
                TamperKind::Inserted,
                format!("entry {e} was inserted: entry {} links past it", e + 1),
            ));
        }
        for k in 1..=64 {
            if r.compute_hash_as(e + k, &mut buf) == r.hash {
                return Ok(AuditProblem::new(
                    e,
                    TamperKind::Deleted,
                    format!("entry {e} is missing (deleted, and the {k} later entries renumbered to hide the gap)"),
                ));
            }
        }
        return Ok(AuditProblem::new(
            e,
            TamperKind::Modified,
            "entry modified (its link to the previous entry was altered)",
        ));
    }
    if next_skips {
        return Ok(AuditProblem::new(
            e,
            TamperKind::Inserted,
            format!("entry {e} was inserted: entry {} links past it", e + 1),
        ));
    }
    for d in (-64i64..=64).filter(|d| *d != 0 && e + d > 0) {
        if r.compute_hash_as(e + d, &mut buf) == r.hash {
            return Ok(AuditProblem::new(
                e,
                TamperKind::Reordered,
                format!("entries were reordered: entry {e} was written as entry {}", e + d),
            ));
        }
    }
    if r.compute_hash(&mut buf) != r.hash && next.as_ref().is_some_and(|n| n.prev_hash == r.compute_hash(&mut buf)) {
        return Ok(AuditProblem::new(e, TamperKind::Modified, "entry modified (its stored hash was altered)"));
    }
    Ok(AuditProblem::new(e, TamperKind::Modified, "entry modified"))
}

/// Verifies one organization's trail. See the module documentation.
async fn fetch(
    conn: &mut AnyConnection,
    engine: Engine,
    reader: &mut Option<&mut audit::TrailReader>,
    org: OrgId,
    from: i64,
    to: i64,
) -> Result<Vec<StoredEntry>, StoreError> {
    match reader {
        Some(r) => r.load_range(org, from, to, CHUNK).await,
        None => audit::load_range(conn, engine, org, from, to, CHUNK).await,
    }
}

// ---- the parallel scan -----------------------------------------------------------------------------------------
//
// Every check of the chain is local to one entry once the entry before it is known: its sequence number, its hash
// format (never below the one before), its link (`prev_hash` equals the previous entry's stored hash), its hash
// (recomputed from its own stored `prev_hash` and content) and the signed checkpoints at its position. So the trail
// is cut into ranges that are read and hashed in parallel, each on its own connection and thread, each checking
// its entries against each other; joining them checks each range's first entry against the last one of the range
// before. The scan stops at the first entry that fails any check; the sequential verifier then resumes from the
// verified state just before it, so it names the same first bad entry, with the same kind, as it would alone.

/// What a range scan verified: the prefix of the range whose entries pass every check among themselves.
#[derive(Debug, Default)]
struct RangeScan {
    /// Entries in the range.
    len: u64,
    /// Entries of the verified prefix.
    rows: u64,
    /// The first entry's stored link and format (checked against the range before when joining).
    first_prev: String,
    first_format: i64,
    /// The last verified entry's hash and format.
    last_hash: String,
    last_format: i64,
    /// The last verified entry a signed checkpoint names.
    anchor: Option<i64>,
}

struct Scanner<'h> {
    expected: i64,
    /// The (seq, head) of the trusted checkpoints in the range, in sequence order.
    heads: &'h [(i64, String)],
    next_head: usize,
    scan: RangeScan,
    buf: Vec<u8>,
}

impl<'h> Scanner<'h> {
    fn new(from: i64, to: i64, heads: &'h [(i64, String)]) -> Scanner<'h> {
        Scanner {
            expected: from,
            heads,
            next_head: 0,
            scan: RangeScan { len: (to - from + 1).max(0) as u64, ..Default::default() },
            buf: Vec::with_capacity(1024),
        }
    }

    /// Checks the next entry; `false` (and the entry not counted) at the first one that fails.
    fn feed(&mut self, e: &audit::EntryRef<'_>) -> bool {
        let s = &mut self.scan;
        if e.seq != self.expected {
            return false;
        }
        if s.rows == 0 {
            e.prev_hash.clone_into(&mut s.first_prev);
            s.first_format = e.hash_format;
        } else if e.hash_format < s.last_format || e.prev_hash != s.last_hash {
            return false;
        }
        if !e.hash_matches(&mut self.buf) {
            return false;
        }
        while self.heads.get(self.next_head).is_some_and(|(seq, _)| *seq < e.seq) {
            self.next_head += 1;
        }
        let mut i = self.next_head;
        while let Some((seq, head)) = self.heads.get(i).filter(|(seq, _)| *seq == e.seq) {
            if head != e.hash {
                return false;
            }
            s.anchor = Some(*seq);
            i += 1;
        }
        self.next_head = i;
        e.hash.clone_into(&mut s.last_hash);
        s.last_format = e.hash_format;
        s.rows += 1;
        self.expected += 1;
        true
    }
}

/// Scans `from..=to` of `org` in `ranges` parallel ranges (0: one per core), each on its own connection and on a
/// blocking thread (hashing never holds up the async runtime).
#[allow(clippy::too_many_arguments)]
async fn scan_ranges(
    url: &crate::DatabaseUrl,
    org: OrgId,
    from: i64,
    to: i64,
    ranges: usize,
    heads: Vec<(i64, String)>,
    progress: Option<Progress>,
    total: u64,
) -> Result<Vec<RangeScan>, StoreError> {
    let len = (to - from + 1).max(0);
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).clamp(1, 8);
    let ranges = (if ranges == 0 { cores.min((len / 4096).max(1) as usize) } else { ranges }) as i64;
    let per = (len + ranges - 1) / ranges.max(1);
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let handle = tokio::runtime::Handle::current();
    let mut tasks = Vec::new();
    let mut a = from;
    while a <= to {
        let b = (a + per - 1).min(to);
        let url = url.clone();
        let heads: Vec<(i64, String)> = heads.iter().filter(|(s, _)| *s >= a && *s <= b).cloned().collect();
        let (progress, done, handle) = (progress.clone(), Arc::clone(&done), handle.clone());
        tasks.push(tokio::task::spawn_blocking(move || {
            let mut scanner = Scanner::new(a, b, &heads);
            let each = |e: &audit::EntryRef<'_>| {
                let ok = scanner.feed(e);
                if ok
                    && scanner.scan.rows.is_multiple_of(16_384)
                    && let Some(p) = &progress
                {
                    let n = done.fetch_add(16_384, std::sync::atomic::Ordering::Relaxed) + 16_384;
                    p(n, total);
                }
                ok
            };
            match url.engine() {
                Engine::Sqlite => audit::raw_sqlite::Reader::open(&url)?.scan(org, a, b, each)?,
                Engine::Postgres => handle.block_on(async {
                    let mut reader = audit::TrailReader::open(&url).await?;
                    let result = reader.scan(org, a, b, each).await;
                    reader.close().await;
                    result
                })?,
            }
            Ok::<_, StoreError>(scanner.scan)
        }));
        a = b + 1;
    }
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.map_err(|e| StoreError::Config(format!("verification task failed: {e}")))??);
    }
    Ok(out)
}

/// Verifies one organization's trail. See the module documentation. `reader` (a native connection) makes long
/// trails fast; without it the entries are read through `conn`.
pub async fn verify_org(
    conn: &mut AnyConnection,
    engine: Engine,
    org: OrgId,
    opts: &VerifyOptions,
) -> Result<VerifyReport, StoreError> {
    verify_org_with(conn, engine, org, opts, None, None).await
}

pub(crate) async fn verify_org_with(
    conn: &mut AnyConnection,
    engine: Engine,
    org: OrgId,
    opts: &VerifyOptions,
    mut reader: Option<&mut audit::TrailReader>,
    parallel: Option<(&crate::DatabaseUrl, usize)>,
) -> Result<VerifyReport, StoreError> {
    let (head_seq, head_hash) = audit::head(conn, engine, org).await?.ok_or(StoreError::NotFound)?;
    let cps = load_checkpoints(conn, engine, org).await?;
    let (keys, key_source) = match &opts.keys {
        Some(k) => (k.clone(), KeySource::Given),
        None => (load_keys(conn, engine).await?, KeySource::Database),
    };
    let mut problems: Vec<AuditProblem> = Vec::new();
    let mut valid: Vec<&Checkpoint> = Vec::new();
    for cp in &cps {
        match keys.iter().find(|k| k.key_id() == cp.key_id) {
            None => problems.push(AuditProblem::new(
                cp.seq,
                TamperKind::Checkpoint,
                format!(
                    "the {} checkpoint at seq {} is signed by key {}, which is not a trusted key",
                    cp.kind, cp.seq, cp.key_id
                ),
            )),
            Some(k) if !k.verify(&cp.message(), &cp.signature) => problems.push(AuditProblem::new(
                cp.seq,
                TamperKind::Checkpoint,
                format!("the {} checkpoint at seq {} has an invalid signature (forged or altered)", cp.kind, cp.seq),
            )),
            Some(_) => valid.push(cp),
        }
    }
    let (mut expected, mut prev) = match &opts.start {
        Some((seq, hash)) => (seq + 1, hash.clone()),
        None => match valid.iter().filter(|c| c.kind == "purge").max_by_key(|c| c.seq) {
            Some(p) => (p.seq + 1, p.head.clone()),
            None => (1, String::new()),
        },
    };
    let first_seq = expected;
    let mut pending: VecDeque<&Checkpoint> = valid.iter().copied().filter(|c| c.seq >= expected).collect();
    let mut anchor = expected - 1;
    let mut max_format = 1;
    let total = (head_seq - expected + 1).max(0) as u64;
    let mut entries = 0u64;
    let mut chain_problem: Option<AuditProblem> = None;
    if let Some((url, ranges)) = parallel
        && expected <= head_seq
    {
        let heads: Vec<(i64, String)> = pending.iter().map(|c| (c.seq, c.head.clone())).collect();
        let scans = scan_ranges(url, org, expected, head_seq, ranges, heads, opts.progress.clone(), total).await?;
        for s in scans {
            if s.rows == 0 || s.first_prev != prev || s.first_format < max_format {
                break;
            }
            expected += s.rows as i64;
            entries += s.rows;
            prev = s.last_hash;
            max_format = s.last_format;
            anchor = s.anchor.unwrap_or(anchor);
            while pending.front().is_some_and(|c| c.seq < expected) {
                pending.pop_front();
            }
            if s.rows < s.len {
                break;
            }
        }
        if let Some(p) = &opts.progress {
            p(entries, total);
        }
    }
    // The rest (everything without `parallel`, from the first entry the scan stopped at with it): pipelined: the next chunk is read while this one is hashed (on the other cores).
    let mut pending_rows = fetch(conn, engine, &mut reader, org, expected, head_seq).await?;
    'outer: while !pending_rows.is_empty() {
        let next_from = pending_rows.last().map_or(expected, |r| r.seq + 1);
        let current = std::mem::take(&mut pending_rows);
        let hashing = tokio::task::spawn_blocking(move || {
            let oks = hash_all(&current);
            (current, oks)
        });
        let (next, hashed) = tokio::join!(fetch(conn, engine, &mut reader, org, next_from, head_seq), hashing);
        pending_rows = next?;
        let (rows, oks) = hashed.map_err(|e| StoreError::Config(format!("verification task failed: {e}")))?;
        for (i, r) in rows.iter().enumerate() {
            if r.seq != expected {
                chain_problem = Some(AuditProblem::new(
                    expected,
                    TamperKind::Deleted,
                    format!("entry {expected} is missing (deleted); the next present entry is {}", r.seq),
                ));
                break 'outer;
            }
            if r.hash_format < max_format {
                chain_problem = Some(AuditProblem::new(
                    expected,
                    TamperKind::Modified,
                    "entry modified (its hash format was downgraded)",
                ));
                break 'outer;
            }
            max_format = r.hash_format;
            if r.prev_hash != prev || !oks[i] {
                chain_problem = Some(classify(conn, engine, org, &rows, i, &prev).await?);
                break 'outer;
            }
            while pending.front().is_some_and(|c| c.seq == r.seq) {
                let Some(c) = pending.pop_front() else { break };
                if c.head != r.hash {
                    chain_problem = Some(AuditProblem::new(
                        anchor + 1,
                        TamperKind::Modified,
                        format!(
                            "entries between {} and {} were rewritten: the chain no longer matches the signed checkpoint at seq {}",
                            anchor + 1,
                            r.seq,
                            r.seq
                        ),
                    ));
                    break 'outer;
                }
                anchor = r.seq;
            }
            prev = r.hash.clone();
            expected += 1;
            entries += 1;
        }
        if let Some(p) = &opts.progress {
            p(entries, total);
        }
    }
    let last = expected - 1;
    if chain_problem.is_none() {
        if let Some(c) = pending.front() {
            chain_problem = Some(AuditProblem::new(
                last + 1,
                TamperKind::Truncated,
                format!(
                    "entries are missing: the signed checkpoint at seq {} lies beyond the end of the trail (seq {last})",
                    c.seq
                ),
            ));
        } else if last < head_seq {
            chain_problem = Some(AuditProblem::new(
                last + 1,
                TamperKind::Truncated,
                format!(
                    "entries {} to {head_seq} are missing: the trail ends at {last}, the organization's head is {head_seq} (truncated)",
                    last + 1
                ),
            ));
        } else if prev != head_hash {
            chain_problem = Some(AuditProblem::new(
                head_seq,
                TamperKind::Modified,
                "the last entry does not match the organization's head hash",
            ));
        } else {
            // Rows past the head were never appended. The head is read again (appends may have landed meanwhile)
            // in the same statement as the rows, so both come from one snapshot: an append that commits between two
            // separate reads would otherwise look like an inserted row.
            let mut q = Sql::new(engine);
            q.push("SELECT MIN(a.seq) AS s, MAX(o.audit_seq) AS head FROM organizations o LEFT JOIN audit_log a ON ");
            q.push("a.org_id = o.id AND a.seq > o.audit_seq WHERE o.id = ").bind(org);
            let row = q.fetch_one(&mut *conn).await?;
            let now_head: i64 = row.try_get::<Option<i64>, _>("head")?.unwrap_or(head_seq);
            if let Some(s) = row.try_get::<Option<i64>, _>("s")? {
                chain_problem = Some(AuditProblem::new(
                    s,
                    TamperKind::Inserted,
                    format!("entry {s} lies beyond the organization's head ({now_head}): inserted"),
                ));
            }
        }
    }
    problems.extend(chain_problem);
    let problem = problems.into_iter().min_by_key(|p| p.seq);
    Ok(VerifyReport {
        org,
        head_seq,
        entries,
        first_seq,
        last_seq: last,
        last_hash: prev,
        checkpoints: cps.len(),
        signed_through: anchor,
        key_source,
        problem,
    })
}

/// Signs a checkpoint at the newest entry of `org` after verifying the entries since the previous checkpoint.
/// Returns `None` when nothing was appended since.
pub(crate) async fn checkpoint_org(
    conn: &mut AnyConnection,
    engine: Engine,
    org: OrgId,
    signer: &AuditSigner,
    parallel: Option<&crate::DatabaseUrl>,
) -> Result<Option<Checkpoint>, StoreError> {
    let mut keys = load_keys(conn, engine).await?;
    if !keys.contains(signer.public_key()) {
        keys.push(signer.public_key().clone());
    }
    let last = load_checkpoints(conn, engine, org)
        .await?
        .into_iter()
        .filter(|c| keys.iter().any(|k| k.key_id() == c.key_id && k.verify(&c.message(), &c.signature)))
        .max_by_key(|c| c.seq);
    let opts =
        VerifyOptions { keys: Some(keys), progress: None, start: last.as_ref().map(|c| (c.seq, c.head.clone())) };
    let report = verify_org_with(conn, engine, org, &opts, None, parallel.map(|url| (url, 0))).await?;
    if let Some(p) = report.problem {
        return Err(StoreError::Conflict(format!(
            "the audit trail of organization {org} does not verify at seq {} ({}): {}; no checkpoint signed",
            p.seq,
            p.kind.as_str(),
            p.detail
        )));
    }
    if report.last_seq <= last.as_ref().map_or(0, |c| c.seq) || report.entries == 0 {
        return Ok(None);
    }
    let cp = Checkpoint::signed(org, report.last_seq, "periodic", report.last_hash, signer);
    insert_checkpoint(conn, engine, &cp).await?;
    Ok(Some(cp))
}

// ---- archives --------------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[allow(clippy::large_enum_variant)] // one line at a time
enum ArchiveLine {
    Header {
        format: String,
        version: i64,
        org_id: OrgId,
        slug: String,
        created_at: i64,
        from_seq: i64,
        prev_hash: String,
    },
    Key {
        key_id: String,
        public_key: String,
    },
    Checkpoint(Checkpoint),
    Entry(StoredEntry),
    End {
        entries: u64,
        to_seq: i64,
        last_hash: String,
    },
}

const ARCHIVE_FORMAT: &str = "crm-audit-archive";

/// What an archive holds.
#[derive(Debug, Clone, Serialize)]
pub struct ArchiveSummary {
    pub org_id: OrgId,
    pub slug: String,
    pub from_seq: i64,
    pub to_seq: i64,
    pub entries: u64,
    pub checkpoints: usize,
    pub last_hash: String,
    /// SHA-256 of the archive file's bytes.
    pub sha256: String,
}

/// The result of checking an archive on its own.
#[derive(Debug, Clone, Serialize)]
pub struct ArchiveReport {
    pub summary: ArchiveSummary,
    pub key_source: KeySource,
    /// True when the archive's first entry is anchored (seq 1, or a signed purge checkpoint before it).
    pub anchored: bool,
    pub problem: Option<AuditProblem>,
    /// The hash of the entry at each checkpoint seq (for comparison with the database).
    #[serde(skip)]
    pub hashes: HashMap<i64, String>,
}

struct HashingWriter<'w> {
    inner: &'w mut (dyn Write + Send),
    hasher: sha2::Sha256,
}

impl Write for HashingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        sha2::Digest::update(&mut self.hasher, &buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Config(format!("writing the audit archive: {e}"))
}

fn line(w: &mut impl Write, l: &ArchiveLine) -> Result<(), StoreError> {
    serde_json::to_writer(&mut *w, l).map_err(io)?;
    w.write_all(b"\n").map_err(io)
}

/// Writes the organization's trail (from its first retained entry through `upto`, default the head) as an
/// archive.
pub(crate) async fn write_archive(
    conn: &mut AnyConnection,
    engine: Engine,
    org: OrgId,
    upto: Option<i64>,
    out: &mut (dyn Write + Send),
) -> Result<ArchiveSummary, StoreError> {
    let mut q = Sql::new(engine);
    q.push("SELECT slug FROM organizations WHERE id = ").bind(org);
    let slug: String = q.fetch_optional(&mut *conn).await?.ok_or(StoreError::NotFound)?.try_get("slug")?;
    let (head_seq, _) = audit::head(conn, engine, org).await?.ok_or(StoreError::NotFound)?;
    let upto = upto.unwrap_or(head_seq).min(head_seq);
    let cps = load_checkpoints(conn, engine, org).await?;
    let anchor = cps.iter().filter(|c| c.kind == "purge").max_by_key(|c| c.seq).cloned();
    let (from, prev) = anchor.as_ref().map_or((1, String::new()), |c| (c.seq + 1, c.head.clone()));
    let mut w = HashingWriter { inner: out, hasher: <sha2::Sha256 as sha2::Digest>::new() };
    let header = ArchiveLine::Header {
        format: ARCHIVE_FORMAT.into(),
        version: 1,
        org_id: org,
        slug: slug.clone(),
        created_at: now_ms(),
        from_seq: from,
        prev_hash: prev.clone(),
    };
    line(&mut w, &header)?;
    let mut kq = Sql::new(engine);
    kq.push("SELECT key_id, public_key FROM audit_keys ORDER BY created_at");
    for r in kq.fetch_all(&mut *conn).await? {
        line(&mut w, &ArchiveLine::Key { key_id: r.try_get("key_id")?, public_key: r.try_get("public_key")? })?;
    }
    let kept: Vec<&Checkpoint> = cps.iter().filter(|c| c.seq >= from - 1 && c.seq <= upto).collect();
    for c in &kept {
        line(&mut w, &ArchiveLine::Checkpoint((*c).clone()))?;
    }
    let mut next = from;
    let mut entries = 0u64;
    let mut last_hash = prev;
    let mut to_seq = from - 1;
    loop {
        let rows = audit::load_range(conn, engine, org, next, upto, CHUNK).await?;
        let Some(last) = rows.last() else { break };
        next = last.seq + 1;
        for r in rows {
            entries += 1;
            to_seq = r.seq;
            last_hash = r.hash.clone();
            line(&mut w, &ArchiveLine::Entry(r))?;
        }
    }
    line(&mut w, &ArchiveLine::End { entries, to_seq, last_hash: last_hash.clone() })?;
    w.flush().map_err(io)?;
    let sha256 = hex::encode(sha2::Digest::finalize(w.hasher));
    Ok(ArchiveSummary {
        org_id: org,
        slug,
        from_seq: from,
        to_seq,
        entries,
        checkpoints: kept.len(),
        last_hash,
        sha256,
    })
}

/// Checks an archive on its own: its chain, its checkpoints (against `keys`, or else the keys it lists), and that
/// it is complete (its end line). Works offline.
pub fn verify_archive(
    reader: impl BufRead,
    keys: Option<&[AuditPublicKey]>,
    progress: Option<Progress>,
) -> Result<ArchiveReport, StoreError> {
    let bad = |m: String| StoreError::Config(format!("not a readable audit archive: {m}"));
    let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
    let mut lines = reader.split(b'\n');
    let mut next_line = |hasher: &mut sha2::Sha256| -> Result<Option<ArchiveLine>, StoreError> {
        match lines.next() {
            None => Ok(None),
            Some(Err(e)) => Err(bad(e.to_string())),
            Some(Ok(bytes)) => {
                sha2::Digest::update(hasher, &bytes);
                sha2::Digest::update(hasher, b"\n");
                if bytes.iter().all(u8::is_ascii_whitespace) {
                    return Ok(None);
                }
                serde_json::from_slice(&bytes).map(Some).map_err(|e| bad(e.to_string()))
            }
        }
    };
    let Some(ArchiveLine::Header { format, org_id, slug, from_seq, prev_hash, .. }) = next_line(&mut hasher)? else {
        return Err(bad("the first line is not an archive header".into()));
    };
    if format != ARCHIVE_FORMAT {
        return Err(bad(format!("unknown format {format}")));
    }
    let mut listed: Vec<AuditPublicKey> = Vec::new();
    let mut cps: Vec<Checkpoint> = Vec::new();
    let mut problem: Option<AuditProblem> = None;
    let mut expected = from_seq;
    let mut prev = prev_hash.clone();
    let mut entries = 0u64;
    let mut end: Option<(u64, i64, String)> = None;
    let mut hashes = HashMap::new();
    let mut pending: HashMap<i64, Vec<Checkpoint>> = HashMap::new();
    let mut buf = Vec::new();
    let mut max_format = 1;
    let mut keys_checked = false;
    let mut trusted: Vec<AuditPublicKey> = Vec::new();
    while let Some(l) = next_line(&mut hasher)? {
        match l {
            ArchiveLine::Header { .. } => return Err(bad("a second header".into())),
            ArchiveLine::Key { public_key, .. } => {
                if let Ok(k) = AuditPublicKey::from_hex(&public_key) {
                    listed.push(k);
                }
            }
            ArchiveLine::Checkpoint(c) => {
                pending.entry(c.seq).or_default().push(c.clone());
                cps.push(c);
            }
            ArchiveLine::Entry(r) => {
                if !keys_checked {
                    keys_checked = true;
                    trusted = keys.map(<[AuditPublicKey]>::to_vec).unwrap_or_else(|| listed.clone());
                    for c in &cps {
                        let ok = trusted.iter().any(|k| k.key_id() == c.key_id && k.verify(&c.message(), &c.signature));
                        if !ok && problem.is_none() {
                            problem = Some(AuditProblem::new(
                                c.seq,
                                TamperKind::Checkpoint,
                                format!(
                                    "the {} checkpoint at seq {} does not verify with a trusted key",
                                    c.kind, c.seq
                                ),
                            ));
                        }
                    }
                }
                if problem.is_some() {
                    continue;
                }
                if r.org_id != org_id {
                    problem = Some(AuditProblem::new(
                        r.seq,
                        TamperKind::Inserted,
                        format!("entry {} belongs to another organization", r.seq),
                    ));
                } else if r.seq != expected {
                    let kind = if r.seq > expected { TamperKind::Deleted } else { TamperKind::Reordered };
                    problem = Some(AuditProblem::new(
                        expected,
                        kind,
                        format!("entry {expected} is missing here; the next entry is {}", r.seq),
                    ));
                } else if r.hash_format < max_format || r.prev_hash != prev || r.compute_hash(&mut buf) != r.hash {
                    problem = Some(AuditProblem::new(expected, TamperKind::Modified, "entry modified"));
                } else if let Some(list) = pending.get(&r.seq) {
                    if list.iter().any(|c| c.head != r.hash) {
                        problem = Some(AuditProblem::new(
                            r.seq,
                            TamperKind::Modified,
                            format!("the trail no longer matches the signed checkpoint at seq {}", r.seq),
                        ));
                    }
                    hashes.insert(r.seq, r.hash.clone());
                }
                max_format = max_format.max(r.hash_format);
                prev = r.hash.clone();
                expected += 1;
                entries += 1;
                if entries.is_multiple_of(CHUNK as u64)
                    && let Some(p) = &progress
                {
                    p(entries, 0);
                }
            }
            ArchiveLine::End { entries, to_seq, last_hash } => end = Some((entries, to_seq, last_hash)),
        }
    }
    if !keys_checked {
        trusted = keys.map(<[AuditPublicKey]>::to_vec).unwrap_or_else(|| listed.clone());
    }
    let to_seq = expected - 1;
    if problem.is_none() {
        match &end {
            None => {
                problem = Some(AuditProblem::new(
                    to_seq + 1,
                    TamperKind::Truncated,
                    "the archive has no end line: it was cut short",
                ))
            }
            Some((n, t, h)) if *n != entries || *t != to_seq || *h != prev => {
                problem = Some(AuditProblem::new(
                    to_seq.min(*t) + 1,
                    TamperKind::Truncated,
                    format!(
                        "the archive's end line names {n} entries through seq {t}, but it holds {entries} through {to_seq}"
                    ),
                ))
            }
            Some(_) => {}
        }
    }
    let anchored = from_seq == 1
        || cps.iter().any(|c| {
            c.kind == "purge"
                && c.seq == from_seq - 1
                && c.head == prev_hash
                && trusted.iter().any(|k| k.key_id() == c.key_id && k.verify(&c.message(), &c.signature))
        });
    let sha256 = hex::encode(sha2::Digest::finalize(hasher));
    Ok(ArchiveReport {
        summary: ArchiveSummary {
            org_id,
            slug,
            from_seq,
            to_seq,
            entries,
            checkpoints: cps.len(),
            last_hash: prev,
            sha256,
        },
        key_source: if keys.is_some() { KeySource::Given } else { KeySource::Database },
        anchored,
        problem,
        hashes,
    })
}

/// What a purge did.
#[derive(Debug, Clone, Serialize)]
pub struct PurgeReport {
    pub org_id: OrgId,
    /// Entries deleted (now only in the archive).
    pub purged: u64,
    /// The last purged sequence number, where the signed purge checkpoint anchors the remaining trail.
    pub through_seq: i64,
    pub archive: ArchiveSummary,
}

impl SystemAccess<'_> {
    /// Verifies the organization's trail with checkpoint signatures (see [`verify_org`]).
    pub async fn verify_audit_trail(&self, org: OrgId, opts: &VerifyOptions) -> Result<VerifyReport, StoreError> {
        self.verify_audit_trail_in_ranges(org, opts, 0).await
    }

    /// [`SystemAccess::verify_audit_trail`] with the trail cut into `ranges` ranges read and hashed in parallel (0:
    /// one per core, fewer for short trails). The report does not depend on it; tests check range boundaries.
    pub async fn verify_audit_trail_in_ranges(
        &self,
        org: OrgId,
        opts: &VerifyOptions,
        ranges: usize,
    ) -> Result<VerifyReport, StoreError> {
        let mut conn = self.db().pool.acquire().await?;
        let mut reader = audit::TrailReader::open(&self.db().url).await?;
        let parallel = Some((&self.db().url, ranges));
        let report = verify_org_with(&mut conn, self.db().engine, org, opts, Some(&mut reader), parallel).await;
        reader.close().await;
        report
    }

    /// Registers the public key of the signer (idempotent), so verifiers without an exported key can find it.
    pub async fn register_audit_key(&self, key: &AuditPublicKey) -> Result<(), StoreError> {
        let mut q = self.db().sql();
        q.push("INSERT INTO audit_keys (key_id, public_key, created_at) VALUES (")
            .bind(key.key_id())
            .push(", ")
            .bind(key.to_hex())
            .push(", ")
            .bind(now_ms())
            .push(") ON CONFLICT DO NOTHING");
        q.execute(&self.db().pool).await?;
        Ok(())
    }

    /// Signs a checkpoint at the organization's newest entry (after verifying the entries since the previous
    /// one); `None` when nothing was appended since.
    pub async fn audit_checkpoint(&self, org: OrgId, signer: &AuditSigner) -> Result<Option<Checkpoint>, StoreError> {
        let mut conn = self.db().pool.acquire().await?;
        checkpoint_org(&mut conn, self.db().engine, org, signer, Some(&self.db().url)).await
    }

    /// Signs checkpoints for every organization whose trail moved (see [`SystemAccess::audit_checkpoint`]).
    /// Errors are logged per organization and counted.
    pub async fn audit_checkpoint_all(&self, signer: &AuditSigner) -> Result<(usize, usize), StoreError> {
        let (mut signed, mut failed) = (0, 0);
        for (org, slug) in self.organizations().await? {
            match self.audit_checkpoint(org, signer).await {
                Ok(Some(_)) => signed += 1,
                Ok(None) => {}
                Err(e) => {
                    failed += 1;
                    tracing::error!(organization = %slug, error = %e, "audit checkpoint refused");
                }
            }
        }
        Ok((signed, failed))
    }

    /// Is a checkpoint due: `every_entries` unsigned entries, or an unsigned entry older than `every_ms`?
    pub async fn audit_checkpoint_due(
        &self,
        org: OrgId,
        every_entries: i64,
        every_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut conn = self.db().pool.acquire().await?;
        let engine = self.db().engine;
        let (head, _) = audit::head(&mut conn, engine, org).await?.ok_or(StoreError::NotFound)?;
        let mut q = Sql::new(engine);
        q.push("SELECT MAX(seq) AS s FROM audit_checkpoints WHERE org_id = ").bind(org);
        let signed: i64 = q.fetch_one(&mut *conn).await?.try_get::<Option<i64>, _>("s")?.unwrap_or(0);
        if head <= signed {
            return Ok(false);
        }
        if head - signed >= every_entries {
            return Ok(true);
        }
        let oldest = audit::load_range(&mut conn, engine, org, signed + 1, head, 1).await?;
        Ok(oldest.first().is_some_and(|e| now_ms() - e.at >= every_ms))
    }

    /// The organization's checkpoints, oldest first.
    pub async fn audit_checkpoints(&self, org: OrgId) -> Result<Vec<Checkpoint>, StoreError> {
        let mut conn = self.db().pool.acquire().await?;
        load_checkpoints(&mut conn, self.db().engine, org).await
    }

    /// Writes the organization's retained trail (through `upto`, default all of it) as an archive.
    pub async fn write_audit_archive(
        &self,
        org: OrgId,
        upto: Option<i64>,
        out: &mut (dyn Write + Send),
    ) -> Result<ArchiveSummary, StoreError> {
        let mut conn = self.db().pool.acquire().await?;
        write_archive(&mut conn, self.db().engine, org, upto, out).await
    }

    /// Compares a verified archive with the database's trail: the entries both hold must be the same, and the
    /// database must not lack entries the archive holds beyond its purge point.
    pub async fn audit_cross_check(
        &self,
        report: &VerifyReport,
        archive: &ArchiveReport,
    ) -> Result<Option<AuditProblem>, StoreError> {
        let a = &archive.summary;
        let mut conn = self.db().pool.acquire().await?;
        let engine = self.db().engine;
        if a.org_id != report.org {
            return Err(StoreError::BadQuery(format!("the archive belongs to organization {}", a.org_id)));
        }
        if a.to_seq > report.last_seq {
            return Ok(Some(AuditProblem::new(
                report.last_seq + 1,
                TamperKind::Truncated,
                format!(
                    "the archive holds entries through seq {} that the database lacks (its trail ends at {})",
                    a.to_seq, report.last_seq
                ),
            )));
        }
        if a.to_seq >= report.first_seq {
            let db = audit::load_range(&mut conn, engine, report.org, a.to_seq, a.to_seq, 1).await?;
            if db.first().map(|r| r.hash.as_str()) != Some(a.last_hash.as_str()) {
                return Ok(Some(AuditProblem::new(
                    a.from_seq.max(report.first_seq),
                    TamperKind::Modified,
                    format!("the database's trail differs from the archive at or before seq {}", a.to_seq),
                )));
            }
        } else if a.to_seq == report.first_seq - 1 && a.last_hash != report_anchor(&mut conn, engine, report).await? {
            return Ok(Some(AuditProblem::new(
                a.to_seq,
                TamperKind::Modified,
                "the archive does not end where the database's purge checkpoint says",
            )));
        }
        Ok(None)
    }

    /// Deletes the organization's entries older than `before_ms`, after writing them to `archive` (a new file),
    /// syncing and verifying it. Leaves a signed purge checkpoint at the last purged entry and an `audit.purge`
    /// entry. The remaining trail still verifies.
    pub async fn purge_audit(
        &self,
        org: OrgId,
        actor: Option<UserId>,
        before_ms: i64,
        archive: &Path,
        signer: &AuditSigner,
    ) -> Result<PurgeReport, StoreError> {
        let engine = self.db().engine;
        let mut conn = self.db().pool.acquire().await?;
        let mut q = Sql::new(engine);
        q.push("SELECT MAX(seq) AS s FROM audit_log WHERE org_id = ").bind(org).push(" AND at < ").bind(before_ms);
        let Some(through) = q.fetch_one(&mut *conn).await?.try_get::<Option<i64>, _>("s")? else {
            return Err(StoreError::BadQuery("no audit entries are older than that date".into()));
        };
        let mut keys = load_keys(&mut conn, engine).await?;
        if !keys.contains(signer.public_key()) {
            keys.push(signer.public_key().clone());
        }
        let mut reader = audit::TrailReader::open(&self.db().url).await?;
        let report = verify_org_with(
            &mut conn,
            engine,
            org,
            &VerifyOptions { keys: Some(keys.clone()), ..Default::default() },
            Some(&mut reader),
            Some((&self.db().url, 0)),
        )
        .await;
        reader.close().await;
        let report = report?;
        if let Some(p) = report.problem {
            return Err(StoreError::Conflict(format!(
                "the trail does not verify at seq {} ({}); nothing purged",
                p.seq, p.detail
            )));
        }
        // The archive: a new file, synced (and its folder) before anything is deleted.
        let summary = {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(archive)
                .map_err(|e| StoreError::Config(format!("creating the archive {}: {e}", archive.display())))?;
            let mut w = std::io::BufWriter::new(&mut f);
            let s = write_archive(&mut conn, engine, org, Some(through), &mut w).await?;
            w.flush().map_err(io)?;
            drop(w);
            f.sync_all().map_err(io)?;
            if let Some(dir) = archive.parent().filter(|d| !d.as_os_str().is_empty())
                && let Ok(d) = std::fs::File::open(dir)
            {
                let _ = d.sync_all();
            }
            s
        };
        let file = std::fs::File::open(archive).map_err(io)?;
        let check = verify_archive(std::io::BufReader::new(file), Some(&keys), None)?;
        if check.problem.is_some() || check.summary.to_seq != through || check.summary.sha256 != summary.sha256 {
            return Err(StoreError::Config(format!(
                "the archive {} did not verify after writing; nothing purged",
                archive.display()
            )));
        }
        let cp = Checkpoint::signed(org, through, "purge", summary.last_hash.clone(), signer);
        let mut tx = self.db().begin_write().await?;
        // Lock the organization's trail (no append between the checks below and the delete).
        let mut lock = Sql::new(engine);
        lock.push("UPDATE organizations SET audit_seq = audit_seq WHERE id = ").bind(org);
        lock.execute(&mut *tx).await?;
        let now = audit::load_range(&mut tx, engine, org, through, through, 1).await?;
        if now.first().map(|r| r.hash.as_str()) != Some(summary.last_hash.as_str()) {
            return Err(StoreError::Conflict("the trail changed while archiving; nothing purged".into()));
        }
        insert_checkpoint(&mut tx, engine, &cp).await?;
        let mut del = Sql::new(engine);
        del.push("DELETE FROM audit_log WHERE org_id = ").bind(org).push(" AND seq <= ").bind(through);
        let purged = del.execute(&mut *tx).await?;
        let mut del = Sql::new(engine);
        del.push("DELETE FROM audit_checkpoints WHERE org_id = ").bind(org).push(" AND seq < ").bind(through);
        del.execute(&mut *tx).await?;
        let name = archive.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let e = AuditEntry::new(org, actor, "audit.purge").target("audit").detail(serde_json::json!({
            "through_seq": through, "before": before_ms, "entries": purged, "archive": name, "archive_sha256": summary.sha256,
        }));
        audit::append(&mut tx, engine, &e).await?;
        tx.commit().await?;
        Ok(PurgeReport { org_id: org, purged, through_seq: through, archive: summary })
    }

    /// Sets how many days of audit trail the organization keeps (`None`: forever). Audited.
    pub async fn set_audit_retention(
        &self,
        org: OrgId,
        actor: Option<UserId>,
        days: Option<i64>,
    ) -> Result<(), StoreError> {
        if days.is_some_and(|d| d < 1) {
            return Err(StoreError::invalid("days", "at least 1 day"));
        }
        let mut tx = self.db().begin_write().await?;
        let mut q = self.db().sql();
        q.push("UPDATE organizations SET audit_retention_days = ").bind(days).push(" WHERE id = ").bind(org);
        if q.execute(&mut *tx).await? == 0 {
            return Err(StoreError::NotFound);
        }
        let e =
            AuditEntry::new(org, actor, "audit.retention").target("audit").detail(serde_json::json!({"days": days}));
        audit::append(&mut tx, self.db().engine, &e).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The organization's audit retention in days (`None`: forever).
    pub async fn audit_retention(&self, org: OrgId) -> Result<Option<i64>, StoreError> {
        let mut q = self.db().sql();
        q.push("SELECT audit_retention_days FROM organizations WHERE id = ").bind(org);
        Ok(q.fetch_optional(&self.db().pool).await?.ok_or(StoreError::NotFound)?.try_get("audit_retention_days")?)
    }

    /// Appends an event that changes nothing else (e.g. a lockout noticed outside a transaction) in its own
    /// transaction; durable when this returns.
    pub async fn append_audit_event(&self, e: AuditEntry) -> Result<i64, StoreError> {
        let mut tx = self.db().begin_write().await?;
        let seq = audit::append(&mut tx, self.db().engine, &e).await?;
        tx.commit().await?;
        Ok(seq)
    }
}

async fn report_anchor(conn: &mut AnyConnection, engine: Engine, report: &VerifyReport) -> Result<String, StoreError> {
    Ok(load_checkpoints(conn, engine, report.org)
        .await?
        .into_iter()
        .filter(|c| c.kind == "purge" && c.seq == report.first_seq - 1)
        .map(|c| c.head)
        .next()
        .unwrap_or_default())
}
