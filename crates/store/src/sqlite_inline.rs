//! Single-row reads on SQLite run on the calling thread, through SQLite's C API.
//!
//! sqlx's SQLite driver gives every connection its own worker thread: a statement is a message to that thread and
//! its rows a message back, and returning the connection to the pool sends one more (a ping). On this 2-core
//! machine each round costs 50–80 µs of CPU in thread wake-ups (BENCHMARKS.md §4: the HTTP stack alone costs about
//! 24 µs a request, `/healthz` with one pooled `SELECT 1` about 70–110 µs), while the read itself — a few index
//! lookups in cached pages — takes a few microseconds. The reads every record request makes (its session, the
//! record's facts, a list page's rows) therefore run here instead: a small pool of read-only connections, each
//! statement prepared once per connection, stepped on the caller's thread.
//!
//! What keeps this correct:
//! - every statement runs in its own implicit read transaction, started by its first step and ended by
//!   `sqlite3_reset` before the connection goes back to the pool (a guard resets it on every path), so each read
//!   sees every transaction committed before it began — exactly what a pooled sqlx read sees. A permission change
//!   holds at the next request;
//! - connections are read-only (`SQLITE_OPEN_READONLY`): nothing here can write;
//! - a connection is used by one thread at a time (it is taken out of the pool for the read), which is what
//!   SQLite's multi-thread mode (`SQLITE_OPEN_NOMUTEX`) requires.
//!
//! Only reads bounded by a page belong here (a single row, or a list page whose `LIMIT` and probe bound what SQLite
//! visits — a few milliseconds at most at scale L): the caller's async worker thread is blocked while it steps.
//! Writes, transactions, counts and scans keep using the pool — except the audit group committer's batches
//! ([`WriteConnection`]), which are stepped on the committer's own thread, never on an async worker. Besides the audit verifier's reader (`audit::raw_sqlite`), this is the
//! store's only `unsafe` code.

use crate::StoreError;
use crate::db::Arg;
use libsqlite3_sys as ffi;
use std::collections::HashMap;
use std::ffi::{CStr, CString, c_int};
use std::ptr;
use std::sync::{Arc, Mutex};

/// Idle connections kept for reuse; more are opened under a burst and closed when the pool is full.
const MAX_IDLE: usize = 16;

/// A value read from a column.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell {
    Null,
    Int(i64),
    Text(String),
}

/// One result row: the statement's column names (shared by every row of that statement) and the values.
#[derive(Debug)]
pub(crate) struct InlineRow {
    names: Arc<[String]>,
    cells: Vec<Cell>,
}

impl InlineRow {
    fn cell(&self, col: &str) -> Result<&Cell, StoreError> {
        self.names
            .iter()
            .position(|n| n == col)
            .and_then(|i| self.cells.get(i))
            .ok_or_else(|| db_error(format!("the inline read has no column {col}")))
    }
    pub(crate) fn int(&self, col: &str) -> Result<Option<i64>, StoreError> {
        match self.cell(col)? {
            Cell::Null => Ok(None),
            Cell::Int(v) => Ok(Some(*v)),
            Cell::Text(_) => Err(db_error(format!("column {col} holds text where a number belongs"))),
        }
    }
    pub(crate) fn text(&self, col: &str) -> Result<Option<String>, StoreError> {
        match self.cell(col)? {
            Cell::Null => Ok(None),
            Cell::Text(v) => Ok(Some(v.clone())),
            Cell::Int(_) => Err(db_error(format!("column {col} holds a number where text belongs"))),
        }
    }
}

/// A value bound to a statement's parameter, borrowed (the audit committer binds thousands of strings a batch).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Bind<'a> {
    Int(Option<i64>),
    Text(Option<&'a str>),
}

impl<'a> From<&'a Arg> for Bind<'a> {
    fn from(arg: &'a Arg) -> Bind<'a> {
        match arg {
            Arg::Int(v) => Bind::Int(*v),
            Arg::Text(t) => Bind::Text(t.as_deref()),
        }
    }
}

/// The pool of read-only connections to one SQLite file.
pub(crate) struct InlineReads {
    path: CString,
    /// Whether the connections read pages in place from the mapped file (see [`Conn::open`]).
    mapped: bool,
    idle: Mutex<Vec<Conn>>,
}

impl InlineReads {
    /// Inline reads of the database at `url`, when it is a file (the pool has just opened, and so created, it).
    /// An in-memory database has no name another connection could open: its reads stay with the pool.
    ///
    /// `mapped`: for reads that visit many pages (a list page's probe reads a few thousand rows in sort order). Each
    /// connection of an unmapped pool copies every page it reads into its own cache with a `pread`; mapped, pages
    /// are read in place — the rep11 list page of BENCHMARKS.md §4 took 45 % less CPU. Single-row reads stay
    /// unmapped: each connection's mapping is faulted in again after the file grows (every checkpoint of the
    /// audit trail's appends), which made a GET 10–15 % dearer.
    pub(crate) fn for_file(url: &crate::DatabaseUrl, mapped: bool) -> Result<Option<InlineReads>, StoreError> {
        Ok(RawConnection::file_path(url)?.map(|path| InlineReads { path, mapped, idle: Mutex::new(Vec::new()) }))
    }

    /// Runs `sql` with `args` and returns its first row, if any.
    pub(crate) fn first_row(&self, sql: &str, args: &[Arg]) -> Result<Option<InlineRow>, StoreError> {
        Ok(self.rows(sql, args, 1)?.pop())
    }

    /// Runs `sql` with `args` and returns its rows (a page of a list: the statement's own `LIMIT` bounds them).
    pub(crate) fn all_rows(&self, sql: &str, args: &[Arg]) -> Result<Vec<InlineRow>, StoreError> {
        self.rows(sql, args, usize::MAX)
    }

    fn rows(&self, sql: &str, args: &[Arg], max: usize) -> Result<Vec<InlineRow>, StoreError> {
        let taken = self.idle.lock().map_err(|_| poisoned())?.pop();
        let mut conn = match taken {
            Some(c) => c,
            None => Conn::open(&self.path, self.mapped)?,
        };
        let binds: Vec<Bind<'_>> = args.iter().map(Bind::from).collect();
        let rows = conn.rows(sql, &binds, max);
        // A connection whose statement failed is still sound (the statement was reset); keep it either way.
        let mut idle = self.idle.lock().map_err(|_| poisoned())?;
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
        rows
    }
}

/// The audit group committer's read-write connection to a SQLite file (`audit::AuditWriter`): its batches are
/// written on the committer's own thread through the C API, a few statements and one fsync each, instead of a
/// message round trip to a driver thread per statement. Configured as the pool's connections are (`db.rs`): WAL,
/// `synchronous=FULL` (an acknowledged entry survives a crash or power loss), foreign keys, a 10 s busy wait;
/// statement journals in memory and pages read through the mapped file.
pub(crate) struct WriteConnection {
    conn: Conn,
}

impl WriteConnection {
    pub(crate) fn open(path: &CStr) -> Result<WriteConnection, StoreError> {
        let connection = RawConnection::open_read_write(path)?;
        for pragma in [
            c"PRAGMA journal_mode=WAL",
            c"PRAGMA synchronous=FULL",
            c"PRAGMA foreign_keys=ON",
            c"PRAGMA temp_store=MEMORY",
            c"PRAGMA mmap_size=1073741824",
            c"PRAGMA cache_size=-8192",
        ] {
            connection.exec(pragma)?;
        }
        Ok(WriteConnection { conn: Conn { statements: HashMap::new(), connection } })
    }

    /// Runs a statement without parameters or results (`BEGIN IMMEDIATE`, `COMMIT`, `ROLLBACK`).
    pub(crate) fn exec(&self, sql: &CStr) -> Result<(), StoreError> {
        self.conn.connection.exec(sql)
    }

    /// Runs `sql` (prepared once and kept) with `args` and returns up to `max` of its rows.
    pub(crate) fn rows(&mut self, sql: &str, args: &[Bind<'_>], max: usize) -> Result<Vec<InlineRow>, StoreError> {
        self.conn.rows(sql, args, max)
    }
}

/// A failed inline read is a database error, as the driver's would be.
fn db_error(message: impl Into<String>) -> StoreError {
    StoreError::Db(sqlx::Error::Protocol(message.into()))
}

fn poisoned() -> StoreError {
    db_error("the inline read pool's lock is poisoned")
}

/// A connection to a SQLite file through the C API: this module's reads and the audit verifier's range scans
/// (`audit::raw_sqlite`) open theirs read-only here, the audit group committer ([`WriteConnection`]) its one
/// read-write connection.
pub(crate) struct RawConnection {
    db: *mut ffi::sqlite3,
}

impl Drop for RawConnection {
    fn drop(&mut self) {
        // SAFETY: `db` came from `sqlite3_open_v2` (null is a no-op); its owners finalize their statements first.
        unsafe {
            ffi::sqlite3_close(self.db);
        }
    }
}

impl RawConnection {
    /// The file a SQLite URL names, if it exists (an in-memory database has no name another connection could
    /// open).
    pub(crate) fn file_path(url: &crate::DatabaseUrl) -> Result<Option<CString>, StoreError> {
        use std::str::FromStr;
        let opts = sqlx::sqlite::SqliteConnectOptions::from_str(url.expose())?;
        let file = opts.get_filename();
        if !file.is_file() {
            return Ok(None);
        }
        let path = file
            .to_str()
            .and_then(|p| CString::new(p).ok())
            .ok_or_else(|| StoreError::Config(format!("the SQLite path {} is not valid UTF-8", file.display())))?;
        Ok(Some(path))
    }

    /// Opens `path` read-only in multi-thread mode (one thread at a time per connection), waiting up to 10 s on
    /// a lock.
    pub(crate) fn open_read_only(path: &CStr) -> Result<RawConnection, StoreError> {
        Self::open(path, ffi::SQLITE_OPEN_READONLY)
    }

    /// Opens the existing file `path` for reading and writing (the audit group committer's connection), in
    /// multi-thread mode, waiting up to 10 s on a lock.
    pub(crate) fn open_read_write(path: &CStr) -> Result<RawConnection, StoreError> {
        Self::open(path, ffi::SQLITE_OPEN_READWRITE)
    }

    fn open(path: &CStr, mode: c_int) -> Result<RawConnection, StoreError> {
        let mut db = ptr::null_mut();
        // SAFETY: `path` is a valid C string; `db` receives a handle, closed by the drop even on error.
        let rc = unsafe { ffi::sqlite3_open_v2(path.as_ptr(), &mut db, mode | ffi::SQLITE_OPEN_NOMUTEX, ptr::null()) };
        let conn = RawConnection { db };
        conn.check(rc)?;
        // SAFETY: an open connection.
        conn.check(unsafe { ffi::sqlite3_busy_timeout(db, 10_000) })?;
        Ok(conn)
    }

    /// The handle, for statements prepared on it (finalized before `self` is dropped).
    pub(crate) fn handle(&self) -> *mut ffi::sqlite3 {
        self.db
    }

    /// `Ok` for `SQLITE_OK`, else the connection's error message.
    pub(crate) fn check(&self, rc: c_int) -> Result<(), StoreError> {
        if rc == ffi::SQLITE_OK {
            return Ok(());
        }
        // SAFETY: `sqlite3_errmsg` accepts the handle (or null) and returns a string owned by SQLite.
        let msg = unsafe {
            let m = ffi::sqlite3_errmsg(self.db);
            if m.is_null() { String::new() } else { CStr::from_ptr(m).to_string_lossy().into_owned() }
        };
        Err(db_error(format!("SQLite error {rc}: {msg}")))
    }

    /// Runs a statement without results (a pragma).
    pub(crate) fn exec(&self, sql: &CStr) -> Result<(), StoreError> {
        // SAFETY: an open connection and a valid C string; no callback.
        let rc = unsafe { ffi::sqlite3_exec(self.db, sql.as_ptr(), None, ptr::null_mut(), ptr::null_mut()) };
        self.check(rc)
    }
}

/// One read-only connection and its prepared statements (keyed by SQL text; the store builds a handful of
/// distinct texts, from the static schema only).
struct Conn {
    statements: HashMap<String, Prepared>,
    connection: RawConnection,
}

struct Prepared {
    stmt: *mut ffi::sqlite3_stmt,
    names: Arc<[String]>,
}

// SAFETY: the connection is opened with SQLITE_OPEN_NOMUTEX (multi-thread mode: a connection may move between
// threads as long as one thread uses it at a time). `Conn` is owned by exactly one caller between leaving and
// rejoining the pool's mutex-guarded list, so it is never used from two threads at once.
unsafe impl Send for Conn {}

impl Drop for Conn {
    fn drop(&mut self) {
        // SAFETY: every statement was prepared on the connection and is finalized once, before the connection field
        // is dropped (and closed).
        unsafe {
            for p in self.statements.values() {
                ffi::sqlite3_finalize(p.stmt);
            }
        }
    }
}

impl Conn {
    fn open(path: &CStr, mapped: bool) -> Result<Conn, StoreError> {
        let connection = RawConnection::open_read_only(path)?;
        // The pool's page cache size (db.rs): the hot index pages of a million-row table stay in memory.
        connection.exec(c"PRAGMA cache_size=-8192")?;
        if mapped {
            // Up to SQLite's default limit (2 GB); beyond it pages are read as without a mapping.
            connection.exec(c"PRAGMA mmap_size=2147418112")?;
        }
        Ok(Conn { statements: HashMap::new(), connection })
    }

    fn check(&self, rc: c_int) -> Result<(), StoreError> {
        self.connection.check(rc)
    }

    fn prepared(&mut self, sql: &str) -> Result<(*mut ffi::sqlite3_stmt, Arc<[String]>), StoreError> {
        if let Some(p) = self.statements.get(sql) {
            return Ok((p.stmt, p.names.clone()));
        }
        let text = CString::new(sql).map_err(|_| db_error("SQL text with a NUL byte"))?;
        let mut stmt = ptr::null_mut();
        // SAFETY: an open connection and a valid C string, read up to its terminator. A statement prepared here is
        // finalized by `Conn`'s drop (it is stored below) or right away on failure.
        let rc = unsafe {
            ffi::sqlite3_prepare_v3(
                self.connection.handle(),
                text.as_ptr(),
                -1,
                ffi::SQLITE_PREPARE_PERSISTENT,
                &mut stmt,
                ptr::null_mut(),
            )
        };
        if rc != ffi::SQLITE_OK || stmt.is_null() {
            // SAFETY: finalizing null is a no-op; otherwise the statement was just prepared.
            unsafe { ffi::sqlite3_finalize(stmt) };
            self.check(rc)?;
            return Err(db_error("an empty inline statement"));
        }
        // SAFETY: a prepared statement; column names are valid C strings owned by it.
        let names: Arc<[String]> = unsafe {
            (0..ffi::sqlite3_column_count(stmt))
                .map(|i| {
                    let n = ffi::sqlite3_column_name(stmt, i);
                    if n.is_null() { String::new() } else { CStr::from_ptr(n).to_string_lossy().into_owned() }
                })
                .collect()
        };
        self.statements.insert(sql.to_string(), Prepared { stmt, names: names.clone() });
        Ok((stmt, names))
    }

    fn rows(&mut self, sql: &str, args: &[Bind<'_>], max: usize) -> Result<Vec<InlineRow>, StoreError> {
        let (stmt, names) = self.prepared(sql)?;
        // Resets the statement (ending its read transaction) and clears its bindings however this function ends.
        let _reset = ResetOnDrop(stmt);
        for (i, arg) in args.iter().enumerate() {
            let index = c_int::try_from(i + 1).map_err(|_| db_error("too many parameters"))?;
            // SAFETY: a prepared statement; SQLITE_TRANSIENT makes SQLite copy the text before the call returns.
            let rc = unsafe {
                match *arg {
                    Bind::Int(Some(v)) => ffi::sqlite3_bind_int64(stmt, index, v),
                    Bind::Text(Some(t)) => ffi::sqlite3_bind_text64(
                        stmt,
                        index,
                        t.as_ptr().cast(),
                        t.len() as u64,
                        ffi::SQLITE_TRANSIENT(),
                        ffi::SQLITE_UTF8 as u8,
                    ),
                    Bind::Int(None) | Bind::Text(None) => ffi::sqlite3_bind_null(stmt, index),
                }
            };
            self.check(rc)?;
        }
        let mut rows = Vec::new();
        while rows.len() < max {
            // SAFETY: a prepared statement with its parameters bound, stepped on the thread that holds the
            // connection.
            let rc = unsafe { ffi::sqlite3_step(stmt) };
            if rc == ffi::SQLITE_DONE {
                break;
            }
            if rc != ffi::SQLITE_ROW {
                self.check(rc)?;
                break;
            }
            rows.push(InlineRow { names: names.clone(), cells: current_row(stmt, &names)? });
        }
        Ok(rows)
    }
}

/// The values of the row `stmt` is on, copied.
fn current_row(stmt: *mut ffi::sqlite3_stmt, names: &[String]) -> Result<Vec<Cell>, StoreError> {
    let mut cells = Vec::with_capacity(names.len());
    for i in 0..names.len() {
        let i = c_int::try_from(i).map_err(|_| db_error("too many columns"))?;
        // SAFETY: `i` is a column of the current row. The text pointer is read before its length (the order
        // SQLite documents) and copied before the statement steps or resets.
        let cell = unsafe {
            match ffi::sqlite3_column_type(stmt, i) {
                ffi::SQLITE_NULL => Cell::Null,
                ffi::SQLITE_INTEGER => Cell::Int(ffi::sqlite3_column_int64(stmt, i)),
                ffi::SQLITE_TEXT => {
                    let p = ffi::sqlite3_column_text(stmt, i);
                    let n = usize::try_from(ffi::sqlite3_column_bytes(stmt, i)).unwrap_or(0);
                    if p.is_null() {
                        Cell::Text(String::new())
                    } else {
                        let bytes = std::slice::from_raw_parts(p, n);
                        Cell::Text(
                            String::from_utf8(bytes.to_vec())
                                .map_err(|_| db_error(format!("column {} is not UTF-8", names[i as usize])))?,
                        )
                    }
                }
                other => {
                    return Err(db_error(format!(
                        "column {} has SQLite type {other}, not a number or text",
                        names[i as usize]
                    )));
                }
            }
        };
        cells.push(cell);
    }
    Ok(cells)
}

struct ResetOnDrop(*mut ffi::sqlite3_stmt);

impl Drop for ResetOnDrop {
    fn drop(&mut self) {
        // SAFETY: a statement prepared on the connection the caller holds; reset and clear are valid in any state.
        unsafe {
            ffi::sqlite3_reset(self.0);
            ffi::sqlite3_clear_bindings(self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{Db, Sql};
    use crate::{DatabaseUrl, Engine};

    async fn db_with_table() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().expect("temporary directory");
        let db = Db::connect(&DatabaseUrl::sqlite_file(&dir.path().join("t.db"))).await.expect("database");
        let mut q = Sql::new(Engine::Sqlite);
        q.push("CREATE TABLE t (id INTEGER PRIMARY KEY, n BIGINT, s TEXT)");
        q.execute(&db.pool).await.expect("table");
        (dir, db)
    }

    fn select(id: i64) -> Sql {
        let mut q = Sql::new(Engine::Sqlite);
        q.push("SELECT id, n, s FROM t WHERE id = ").bind(id);
        q
    }

    #[tokio::test]
    async fn a_read_sees_every_write_committed_before_it_mapped_or_not() {
        for mapped in [false, true] {
            let (_dir, db) = db_with_table().await;
            let inline = InlineReads::for_file(&db.url, mapped).expect("open").expect("a file");
            let read = |id| {
                let q = select(id);
                inline.first_row(&q.text, &q.args).expect("read")
            };
            assert!(read(1).is_none(), "nothing written yet (mapped: {mapped})");
            let mut w = Sql::new(Engine::Sqlite);
            w.push("INSERT INTO t (id, n, s) VALUES (1, ").bind(5i64).push(", ").bind("five").push(")");
            w.execute(&db.pool).await.expect("insert");
            let row = read(1).expect("the committed row");
            assert_eq!((row.int("n").expect("n"), row.text("s").expect("s")), (Some(5), Some("five".to_string())));
            // The same prepared statement, reused: its earlier read transaction ended, so the update is seen.
            let mut u = Sql::new(Engine::Sqlite);
            u.push("UPDATE t SET n = NULL, s = ").bind("six").push(" WHERE id = 1");
            u.execute(&db.pool).await.expect("update");
            let row = read(1).expect("the updated row");
            assert_eq!((row.int("n").expect("n"), row.text("s").expect("s")), (None, Some("six".to_string())));
            // Rows that grow the file past what the mapping covered are read too (SQLite maps the new size).
            let mut many = Sql::new(Engine::Sqlite);
            many.push(
                "WITH RECURSIVE k(v) AS (SELECT 1 UNION ALL SELECT v + 1 FROM k WHERE v < 2000) \
                 INSERT INTO t (id, n, s) SELECT v + 1, v, printf('%.2000c', 'x') FROM k",
            );
            many.execute(&db.pool).await.expect("many rows");
            let row = read(2001).expect("a row written after the file grew");
            assert_eq!(row.int("n").expect("n"), Some(2000), "mapped: {mapped}");
        }
    }

    #[tokio::test]
    async fn a_column_of_the_wrong_kind_or_name_is_an_error_not_a_value() {
        let (_dir, db) = db_with_table().await;
        let mut w = Sql::new(Engine::Sqlite);
        w.push("INSERT INTO t (id, n, s) VALUES (1, 5, 'five')");
        w.execute(&db.pool).await.expect("insert");
        let inline = InlineReads::for_file(&db.url, false).expect("open").expect("a file");
        let q = select(1);
        let row = inline.first_row(&q.text, &q.args).expect("read").expect("the row");
        assert!(row.text("n").is_err(), "a number read as text");
        assert!(row.int("s").is_err(), "text read as a number");
        assert!(row.int("missing").is_err(), "an unknown column");
        let bad = inline.first_row("SELECT nonsense FROM nowhere", &[]);
        assert!(bad.is_err(), "a statement that does not prepare");
        // The connection survives the failed statement.
        assert!(inline.first_row(&q.text, &q.args).expect("read again").is_some());
    }

    #[tokio::test]
    async fn an_in_memory_database_keeps_its_reads_on_the_pool() {
        let url = DatabaseUrl::parse("sqlite::memory:").expect("url");
        assert!(InlineReads::for_file(&url, false).expect("options").is_none());
    }

    #[tokio::test]
    async fn reads_through_the_db_match_the_driver() {
        let (_dir, db) = db_with_table().await;
        let mut w = Sql::new(Engine::Sqlite);
        w.push("INSERT INTO t (id, n, s) VALUES (7, -3, '汉字')");
        w.execute(&db.pool).await.expect("insert");
        let inline = db.read_first(&select(7)).await.expect("inline").expect("row");
        assert!(matches!(inline, crate::db::ReadRow::Inline(_)), "a SQLite file reads inline");
        let driver = select(7).fetch_one(&db.pool).await.expect("driver");
        use crate::db::Columns;
        for col in ["id", "n"] {
            assert_eq!(inline.int(col).expect("inline"), driver.int(col).expect("driver"));
        }
        assert_eq!(inline.text("s").expect("inline"), driver.text("s").expect("driver"));
    }
}
