//! The connection pool for both engines and the one place where SQL text meets the driver.
//!
//! SQL is assembled by [`Sql`]: identifiers come only from the static schema in `crm-domain` (never from a
//! request), and every value is a bind parameter, numbered for the engine (`?` on SQLite, `$n` on PostgreSQL).

use crate::StoreError;
use crate::sqlite_inline::{InlineReads, InlineRow};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, AssertSqlSafe, Executor, Row};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// A database location; its `Debug` and `Display` hide any password.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn parse(url: &str) -> Result<DatabaseUrl, StoreError> {
        if url.starts_with("sqlite:") || url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(DatabaseUrl(url.to_string()))
        } else {
            Err(StoreError::Config(format!(
                "unsupported database URL {}: use sqlite:PATH or postgres://…",
                redact(url)
            )))
        }
    }
    /// A SQLite file, created if missing.
    pub fn sqlite_file(path: &std::path::Path) -> DatabaseUrl {
        DatabaseUrl(format!("sqlite://{}?mode=rwc", path.display()))
    }
    pub fn engine(&self) -> Engine {
        if self.0.starts_with("sqlite:") { Engine::Sqlite } else { Engine::Postgres }
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{}:***{}", &url[..s + 3], user, &url[at..])
        }
        _ => url.to_string(),
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({})", redact(&self.0))
    }
}
impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(&self.0))
    }
}
impl FromStr for DatabaseUrl {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, StoreError> {
        DatabaseUrl::parse(s)
    }
}

#[derive(Clone)]
pub struct Db {
    pub pool: AnyPool,
    pub engine: Engine,
    /// Where the pool connects (the audit verifier opens a native connection there for bulk reads).
    pub url: DatabaseUrl,
    /// On a SQLite file: the read-only connections [`Db::read_first`] steps on the caller's thread.
    inline: Option<Arc<InlineReads>>,
    /// On a SQLite file: the read-only connections, reading from the mapped file, of [`Db::read_all`].
    inline_pages: Option<Arc<InlineReads>>,
}

impl Db {
    pub async fn connect(url: &DatabaseUrl) -> Result<Db, StoreError> {
        sqlx::any::install_default_drivers();
        let engine = url.engine();
        let opts = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(10));
        let pool = match engine {
            Engine::Sqlite => {
                // No ping before each use: a local file does not hang up, and on SQLite every statement (a ping
                // too) is a round trip to the connection's worker thread.
                opts.max_connections(8)
                    .test_before_acquire(false)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            // WAL for concurrent readers; FULL sync so an acknowledged write (and its audit
                            // entry) survives a crash or power loss; 8 MB of page cache per connection (the default
                            // 2 MB re-reads the hot index pages of a million-row table).
                            conn.execute(
                                "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON; \
                                 PRAGMA busy_timeout=10000; PRAGMA cache_size=-8192;",
                            )
                            .await?;
                            Ok(())
                        })
                    })
                    .connect(url.expose())
                    .await?
            }
            Engine::Postgres => opts.max_connections(16).connect(url.expose()).await?,
        };
        let (inline, inline_pages) = match engine {
            Engine::Sqlite => {
                (InlineReads::for_file(url, false)?.map(Arc::new), InlineReads::for_file(url, true)?.map(Arc::new))
            }
            Engine::Postgres => (None, None),
        };
        Ok(Db { pool, engine, url: url.clone(), inline, inline_pages })
    }

    /// The rows of a read outside any transaction, bounded by its own `LIMIT` (a list page): inline on a SQLite
    /// file, as [`Db::read_first`].
    pub(crate) async fn read_all(&self, sql: &Sql) -> Result<Vec<ReadRow>, StoreError> {
        match &self.inline_pages {
            Some(inline) => Ok(inline.all_rows(&sql.text, &sql.args)?.into_iter().map(ReadRow::Inline).collect()),
            None => Ok(sql.fetch_all(&self.pool).await?.into_iter().map(ReadRow::Driver).collect()),
        }
    }

    /// The first row of a read of a few rows outside any transaction (the session of a request, a record's facts).
    /// On a SQLite file it is stepped on the calling thread (`sqlite_inline`: no hop to a driver thread); on
    /// PostgreSQL it goes through the pool. Either way it sees every transaction committed before it started.
    pub(crate) async fn read_first(&self, sql: &Sql) -> Result<Option<ReadRow>, StoreError> {
        match &self.inline {
            Some(inline) => Ok(inline.first_row(&sql.text, &sql.args)?.map(ReadRow::Inline)),
            None => Ok(sql.fetch_optional(&self.pool).await?.map(ReadRow::Driver)),
        }
    }

    /// Begins a write transaction. On SQLite it takes the write lock up front (`BEGIN IMMEDIATE`), so two writers
    /// never deadlock upgrading read locks; the busy timeout queues them instead.
    pub async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        Ok(match self.engine {
            Engine::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Engine::Postgres => self.pool.begin().await?,
        })
    }

    pub fn sql(&self) -> Sql {
        Sql::new(self.engine)
    }
}

/// Reading a row's columns by name, whichever way the row was read.
pub(crate) trait Columns {
    fn int(&self, col: &str) -> Result<Option<i64>, StoreError>;
    fn text(&self, col: &str) -> Result<Option<String>, StoreError>;
    /// A column that is never NULL.
    fn req_int(&self, col: &str) -> Result<i64, StoreError> {
        self.int(col)?.ok_or_else(|| unexpected_null(col))
    }
    /// A column that is never NULL.
    fn req_text(&self, col: &str) -> Result<String, StoreError> {
        self.text(col)?.ok_or_else(|| unexpected_null(col))
    }
}

fn unexpected_null(col: &str) -> StoreError {
    StoreError::Db(sqlx::Error::Protocol(format!("column {col} is NULL")))
}

impl Columns for AnyRow {
    fn int(&self, col: &str) -> Result<Option<i64>, StoreError> {
        Ok(self.try_get(col)?)
    }
    fn text(&self, col: &str) -> Result<Option<String>, StoreError> {
        Ok(self.try_get(col)?)
    }
}

/// A row from [`Db::read_first`].
pub(crate) enum ReadRow {
    Driver(AnyRow),
    Inline(InlineRow),
}

impl Columns for ReadRow {
    fn int(&self, col: &str) -> Result<Option<i64>, StoreError> {
        match self {
            ReadRow::Driver(r) => r.int(col),
            ReadRow::Inline(r) => r.int(col),
        }
    }
    fn text(&self, col: &str) -> Result<Option<String>, StoreError> {
        match self {
            ReadRow::Driver(r) => r.text(col),
            ReadRow::Inline(r) => r.text(col),
        }
    }
}

/// A bind parameter with its SQL type, so a NULL binds as the column's type on PostgreSQL.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    Int(Option<i64>),
    Text(Option<String>),
}

impl From<i64> for Arg {
    fn from(v: i64) -> Arg {
        Arg::Int(Some(v))
    }
}
impl From<&str> for Arg {
    fn from(v: &str) -> Arg {
        Arg::Text(Some(v.to_string()))
    }
}
impl From<String> for Arg {
    fn from(v: String) -> Arg {
        Arg::Text(Some(v))
    }
}
impl From<Option<i64>> for Arg {
    fn from(v: Option<i64>) -> Arg {
        Arg::Int(v)
    }
}
impl From<Option<String>> for Arg {
    fn from(v: Option<String>) -> Arg {
        Arg::Text(v)
    }
}

/// Parameterised SQL under construction.
#[derive(Debug, Clone)]
pub struct Sql {
    pub engine: Engine,
    pub(crate) text: String,
    pub(crate) args: Vec<Arg>,
}

impl Sql {
    pub fn new(engine: Engine) -> Sql {
        Sql { engine, text: String::with_capacity(256), args: Vec::new() }
    }
    /// Appends SQL text. Callers pass only literals and identifiers from the static schema.
    pub fn push(&mut self, s: &str) -> &mut Sql {
        self.text.push_str(s);
        self
    }
    /// Appends a placeholder bound to `arg`.
    pub fn bind(&mut self, arg: impl Into<Arg>) -> &mut Sql {
        self.args.push(arg.into());
        match self.engine {
            Engine::Sqlite => self.text.push('?'),
            Engine::Postgres => {
                self.text.push('$');
                self.text.push_str(&self.args.len().to_string());
            }
        }
        self
    }
    /// Appends `(?, ?, …)` for a list of values.
    pub fn bind_list<A: Into<Arg>>(&mut self, items: impl IntoIterator<Item = A>) -> &mut Sql {
        self.push("(");
        for (i, a) in items.into_iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.bind(a);
        }
        self.push(")")
    }
    fn query(&self) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments> {
        let mut q = sqlx::query(AssertSqlSafe(self.text.clone()));
        for a in &self.args {
            q = match a {
                Arg::Int(v) => q.bind(*v),
                Arg::Text(v) => q.bind(v.clone()),
            };
        }
        q
    }

    pub async fn fetch_all<'c, E: Executor<'c, Database = sqlx::Any>>(&self, ex: E) -> Result<Vec<AnyRow>, StoreError> {
        Ok(self.query().fetch_all(ex).await?)
    }
    pub async fn fetch_optional<'c, E: Executor<'c, Database = sqlx::Any>>(
        &self,
        ex: E,
    ) -> Result<Option<AnyRow>, StoreError> {
        Ok(self.query().fetch_optional(ex).await?)
    }
    pub async fn fetch_one<'c, E: Executor<'c, Database = sqlx::Any>>(&self, ex: E) -> Result<AnyRow, StoreError> {
        Ok(self.query().fetch_one(ex).await?)
    }
    pub async fn execute<'c, E: Executor<'c, Database = sqlx::Any>>(&self, ex: E) -> Result<u64, StoreError> {
        Ok(self.query().execute(ex).await?.rows_affected())
    }
    /// [`Sql::execute`] moving the text and values into the driver instead of copying them (bulk inserts).
    pub async fn execute_owned<'c, E: Executor<'c, Database = sqlx::Any>>(self, ex: E) -> Result<u64, StoreError> {
        let mut q = sqlx::query(AssertSqlSafe(self.text));
        for a in self.args {
            q = match a {
                Arg::Int(v) => q.bind(v),
                Arg::Text(v) => q.bind(v),
            };
        }
        Ok(q.execute(ex).await?.rows_affected())
    }
}
