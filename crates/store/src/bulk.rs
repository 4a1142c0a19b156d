//! Bulk loading for the data generator and large seeds, one transaction and one audit entry per batch. Part of the
//! audited system path ([`SystemAccess`]); it returns ids, never records.
//!
//! Ids are assigned here (`MAX(id) + 1 …` under the table's write lock: SQLite's `BEGIN IMMEDIATE`, PostgreSQL's
//! `LOCK TABLE … SHARE ROW EXCLUSIVE`), so no statement needs `RETURNING` per row; on PostgreSQL the identity
//! sequence is moved past the new ids before commit.
//!
//! Records, shares and team memberships go through a [`BulkLoad`]: one connection for the whole load, each batch one
//! `INSERT … SELECT` over a single JSON array bound as one value (`jsonb_each` on SQLite, `jsonb_array_elements` on
//! PostgreSQL), so the driver converts one value per batch instead of one per column and row. Into a **fresh**
//! database (no organization but the one being loaded) the load also sets the record tables' secondary indexes
//! (and PostgreSQL's foreign keys of those tables) aside and rebuilds them at the end, which sorts once instead of
//! inserting every row into five B-trees at random places, and relaxes durability while it runs (SQLite
//! `synchronous=OFF`, PostgreSQL `synchronous_commit=off`; the end syncs). It also sets aside the triggers that
//! maintain the record counts (`record_counts`, migration 0011): on SQLite they run once per row (about 1 µs of CPU
//! each here, seconds for scale L's 4.5 million records), on PostgreSQL they keep every inserted row a second time
//! in the statement's transition table. Putting them back recomputes their tables' counts from the rows (one
//! grouped scan) in the same transaction, after the triggers exist, so on PostgreSQL no write slips between the
//! two. Every other write path is counted by the triggers themselves. Crash safety: the indexes and triggers are
//! dropped in the same transaction that lists them in `bulk_load_deferred`; [`BulkLoad::finish`] recreates them
//! (and recounts) and clears the list in one transaction, and every start ([`restore_deferred`], run by the
//! migrations) recreates whatever is still listed. A crashed load therefore leaves the batches committed so far
//! (each with its audit entry) and, at the next start, every index, trigger and exact count. SQLite with
//! `synchronous=OFF` survives a crash of the process; an operating-system crash or power loss during the load may
//! corrupt the fresh file (generate again), which is why this mode is only
//! taken for a database holding nothing else.

use crate::audit::{self, AuditEntry};
use crate::db::{Arg, Engine};
use crate::{StoreError, SystemAccess, now_ms};
use argon2::Argon2;
use argon2::password_hash::PasswordHasher;
use crm_domain::{DeptId, Level, Module, OrgId, RecordId, RoleId, UserId, Value, schema};
use crm_policy::ShareKey;
use sqlx::{AnyConnection, Connection, Executor, Row};
use std::fmt::Write as _;

/// A user for [`SystemAccess::bulk_users`]; `manager` is an index into the same batch (earlier entries only).
#[derive(Debug, Clone)]
pub struct BulkUser {
    pub username: String,
    pub display_name: String,
    pub manager: Option<usize>,
    /// Primary department first.
    pub departments: Vec<DeptId>,
    pub roles: Vec<RoleId>,
}

/// A record for [`SystemAccess::bulk_records`]: owner, `updated_at` (also `created_at`), field values in the
/// module schema's field order.
#[derive(Debug, Clone)]
pub struct BulkRecord {
    pub owner: UserId,
    pub updated_at: i64,
    pub values: Vec<Value>,
}

/// Most bind parameters per statement (SQLite allows 32,766; PostgreSQL 65,535).
const MAX_BINDS: usize = 30_000;

/// Lowest free id of `table`, under the table's write lock.
async fn next_id(conn: &mut AnyConnection, engine: Engine, table: &'static str) -> Result<i64, StoreError> {
    if engine == Engine::Postgres {
        sqlx::query(sqlx::AssertSqlSafe(format!("LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE")))
            .execute(&mut *conn)
            .await?;
    }
    let mut q = crate::db::Sql::new(engine);
    q.push(&format!("SELECT COALESCE(MAX(id), 0) + 1 AS n FROM {table}"));
    Ok(q.fetch_one(&mut *conn).await?.try_get("n")?)
}

/// PostgreSQL: move the identity sequence past explicitly inserted ids.
async fn sync_sequence(conn: &mut AnyConnection, engine: Engine, table: &'static str) -> Result<(), StoreError> {
    if engine == Engine::Postgres {
        let sql = format!("SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT MAX(id) FROM {table}))");
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut *conn).await?;
    }
    Ok(())
}

/// Inserts `rows` (each `columns.len()` arguments) into `table` with as many rows per statement as fit.
async fn insert_rows(
    conn: &mut AnyConnection,
    engine: Engine,
    table: &str,
    columns: &[&str],
    rows: impl Iterator<Item = Vec<Arg>>,
    on_conflict_ignore: bool,
) -> Result<(), StoreError> {
    let per_stmt = (MAX_BINDS / columns.len()).max(1);
    let head = format!("INSERT INTO {table} ({}) VALUES ", columns.join(", "));
    let mut rows = rows.peekable();
    while rows.peek().is_some() {
        let mut q = crate::db::Sql::new(engine);
        q.push(&head);
        for (i, row) in rows.by_ref().take(per_stmt).enumerate() {
            if i > 0 {
                q.push(", ");
            }
            q.bind_list(row);
        }
        if on_conflict_ignore {
            q.push(" ON CONFLICT DO NOTHING");
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

impl SystemAccess<'_> {
    /// Creates departments in one transaction; `parent` of each entry is an index into the same batch (an earlier
    /// entry) or an existing department id. Returns the new ids in order.
    pub async fn bulk_departments(
        &self,
        org: OrgId,
        depts: &[(BulkParent, String)],
    ) -> Result<Vec<DeptId>, StoreError> {
        let db = self.db();
        let mut tx = db.begin_write().await?;
        let first = next_id(&mut tx, db.engine, "departments").await?;
        let now = now_ms();
        let rows = depts.iter().enumerate().map(|(i, (parent, name))| {
            let parent = match parent {
                BulkParent::None => None,
                BulkParent::Batch(j) => Some(first + *j as i64),
                BulkParent::Existing(id) => Some(*id),
            };
            vec![Arg::from(first + i as i64), org.into(), parent.into(), name.as_str().into(), now.into()]
        });
        insert_rows(
            &mut tx,
            db.engine,
            "departments",
            &["id", "org_id", "parent_id", "name", "created_at"],
            rows,
            false,
        )
        .await?;
        sync_sequence(&mut tx, db.engine, "departments").await?;
        self.bump_version(&mut tx, org).await?;
        let e = AuditEntry::new(org, None, "department.bulk_create").detail(serde_json::json!({"count": depts.len()}));
        audit::append(&mut tx, db.engine, &e).await?;
        tx.commit().await?;
        Ok((0..depts.len()).map(|i| first + i as i64).collect())
    }

    /// Creates users with their departments and roles in one transaction. Every user gets the same `password`,
    /// hashed once (argon2id) — for generated organizations, where hashing 10,000 passwords would dominate.
    pub async fn bulk_users(&self, org: OrgId, users: &[BulkUser], password: &str) -> Result<Vec<UserId>, StoreError> {
        let password = password.to_string();
        let hash = tokio::task::spawn_blocking(move || {
            Argon2::default().hash_password(password.as_bytes()).map(|h| h.to_string())
        })
        .await
        .map_err(|e| StoreError::Config(e.to_string()))?
        .map_err(|e| StoreError::Config(format!("password hashing failed: {e}")))?;
        let db = self.db();
        let mut tx = db.begin_write().await?;
        let first = next_id(&mut tx, db.engine, "users").await?;
        let now = now_ms();
        let id = |i: usize| first + i as i64;
        let rows = users.iter().enumerate().map(|(i, u)| {
            vec![
                Arg::from(id(i)),
                org.into(),
                u.username.as_str().into(),
                u.display_name.as_str().into(),
                Arg::Text(None),
                hash.as_str().into(),
                "active".into(),
                u.manager.map(id).into(),
                0i64.into(),
                now.into(),
                now.into(),
            ]
        });
        let cols = [
            "id",
            "org_id",
            "username",
            "display_name",
            "email",
            "password_hash",
            "status",
            "manager_id",
            "must_change_password",
            "created_at",
            "updated_at",
        ];
        insert_rows(&mut tx, db.engine, "users", &cols, rows, false).await?;
        let depts = users.iter().enumerate().flat_map(|(i, u)| {
            u.departments
                .iter()
                .enumerate()
                .map(move |(k, d)| vec![Arg::from(org), id(i).into(), (*d).into(), i64::from(k == 0).into()])
        });
        insert_rows(
            &mut tx,
            db.engine,
            "user_departments",
            &["org_id", "user_id", "department_id", "is_primary"],
            depts,
            false,
        )
        .await?;
        let roles = users
            .iter()
            .enumerate()
            .flat_map(|(i, u)| u.roles.iter().map(move |r| vec![Arg::from(org), id(i).into(), (*r).into()]));
        insert_rows(&mut tx, db.engine, "user_roles", &["org_id", "user_id", "role_id"], roles, false).await?;
        sync_sequence(&mut tx, db.engine, "users").await?;
        self.bump_version(&mut tx, org).await?;
        let e = AuditEntry::new(org, None, "user.bulk_create").detail(serde_json::json!({"count": users.len()}));
        audit::append(&mut tx, db.engine, &e).await?;
        tx.commit().await?;
        Ok((0..users.len()).map(id).collect())
    }

    /// Refreshes the query planner's statistics (after changes in bulk), as [`BulkLoad::finish`] does.
    pub async fn analyze(&self) -> Result<(), StoreError> {
        let mut conn = self.db().pool.acquire().await?;
        match self.db().engine {
            Engine::Sqlite => analyze_sqlite(&mut conn).await,
            Engine::Postgres => {
                sqlx::query("ANALYZE").execute(&mut *conn).await?;
                Ok(())
            }
        }
    }

    async fn bump_version(&self, conn: &mut AnyConnection, org: OrgId) -> Result<(), StoreError> {
        let mut q = self.db().sql();
        q.push("UPDATE organizations SET policy_version = policy_version + 1 WHERE id = ").bind(org);
        q.execute(&mut *conn).await?;
        Ok(())
    }
}

/// The parent of a department created by [`SystemAccess::bulk_departments`].
#[derive(Debug, Clone, Copy)]
pub enum BulkParent {
    None,
    /// An earlier entry of the same batch.
    Batch(usize),
    Existing(DeptId),
}

/// Tables whose secondary indexes a bulk load into a fresh database sets aside.
fn deferred_tables() -> Vec<&'static str> {
    let mut t = record_tables();
    t.extend(["record_shares", "record_team"]);
    t
}

fn record_tables() -> Vec<&'static str> {
    Module::RECORDS.iter().filter_map(|m| schema(*m)).map(|s| s.table).collect()
}

/// The triggers maintaining the record counts (migration 0011) a bulk load into a fresh database sets aside.
fn count_triggers() -> Vec<String> {
    record_tables().into_iter().flat_map(|t| ["insert", "delete", "move"].map(|k| format!("{t}_count_{k}"))).collect()
}

/// Recreates whatever a bulk load set aside and did not put back (see the module documentation). Idempotent; a no-op
/// when nothing is listed.
pub(crate) async fn restore_deferred(db: &crate::db::Db) -> Result<(), StoreError> {
    let mut conn = db.pool.acquire().await?;
    restore_on(&mut conn, db.engine).await
}

async fn restore_on(conn: &mut AnyConnection, engine: Engine) -> Result<(), StoreError> {
    let mut q = crate::db::Sql::new(engine);
    q.push("SELECT name, kind, table_name, ddl FROM bulk_load_deferred ORDER BY kind DESC, name");
    let rows = q.fetch_all(&mut *conn).await?;
    if rows.is_empty() {
        return Ok(());
    }
    let mut tx = match engine {
        Engine::Sqlite => conn.begin_with("BEGIN IMMEDIATE").await?,
        Engine::Postgres => conn.begin().await?,
    };
    if engine == Engine::Sqlite {
        // Index builds sort with helper threads and in memory.
        sqlx::query("PRAGMA threads = 2").execute(&mut *tx).await?;
    }
    let mut recount: Vec<String> = Vec::new();
    for r in &rows {
        let (name, kind, table, ddl): (String, String, String, String) =
            (r.try_get("name")?, r.try_get("kind")?, r.try_get("table_name")?, r.try_get("ddl")?);
        if kind == "trigger" && !recount.contains(&table) {
            recount.push(table.clone());
        }
        let exists = match (engine, kind.as_str()) {
            (Engine::Sqlite, _) => {
                let mut q = crate::db::Sql::new(engine);
                q.push("SELECT 1 AS x FROM sqlite_master WHERE type = ").bind(kind.as_str());
                q.push(" AND name = ").bind(name.as_str());
                q.fetch_optional(&mut *tx).await?.is_some()
            }
            (Engine::Postgres, "trigger") => {
                let mut q = crate::db::Sql::new(engine);
                q.push("SELECT 1 AS x FROM pg_trigger WHERE tgname = ").bind(name.as_str());
                q.push(" AND tgrelid = to_regclass(").bind(table.as_str()).push(")");
                q.fetch_optional(&mut *tx).await?.is_some()
            }
            (Engine::Postgres, "index") => {
                let mut q = crate::db::Sql::new(engine);
                q.push("SELECT 1 AS x FROM pg_class WHERE relkind = 'i' AND relname = ").bind(name.as_str());
                q.push(" AND relnamespace = current_schema()::regnamespace");
                q.fetch_optional(&mut *tx).await?.is_some()
            }
            (Engine::Postgres, _) => {
                let mut q = crate::db::Sql::new(engine);
                q.push("SELECT 1 AS x FROM pg_constraint WHERE conname = ").bind(name.as_str());
                q.push(" AND conrelid = to_regclass(").bind(table.as_str()).push(")");
                q.fetch_optional(&mut *tx).await?.is_some()
            }
        };
        if !exists {
            // The DDL was read from the database's own catalog when the index or constraint was set aside.
            sqlx::query(sqlx::AssertSqlSafe(ddl)).execute(&mut *tx).await?;
        }
    }
    // The tables whose count triggers were set aside: their counts are recomputed from the rows, now that the
    // triggers count every later write (on PostgreSQL the lock keeps writers out until this commits).
    for table in &recount {
        // The table name was listed from the schema's own catalog (a record table).
        if engine == Engine::Postgres {
            let lock = format!("LOCK TABLE \"{table}\" IN SHARE ROW EXCLUSIVE MODE");
            sqlx::query(sqlx::AssertSqlSafe(lock)).execute(&mut *tx).await?;
        }
        let mut del = crate::db::Sql::new(engine);
        del.push("DELETE FROM record_counts WHERE table_name = ").bind(table.as_str());
        del.execute(&mut *tx).await?;
        let mut ins = crate::db::Sql::new(engine);
        ins.push("INSERT INTO record_counts (org_id, table_name, slot, n) SELECT org_id, ")
            .bind(table.as_str())
            .push(&format!(", 0, COUNT(*) FROM \"{table}\" GROUP BY org_id"));
        ins.execute(&mut *tx).await?;
    }
    sqlx::query("DELETE FROM bulk_load_deferred").execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

/// Sets aside the secondary indexes of the record, share and team tables (and on PostgreSQL those tables' foreign
/// keys) and the record tables' count triggers, listing each in `bulk_load_deferred` in the same transaction.
async fn defer_indexes(conn: &mut AnyConnection, engine: Engine) -> Result<(), StoreError> {
    let tables = deferred_tables();
    let triggers = count_triggers();
    let mut q = crate::db::Sql::new(engine);
    match engine {
        Engine::Sqlite => {
            q.push("SELECT name, type AS kind, tbl_name AS table_name, sql AS ddl FROM sqlite_master")
                .push(" WHERE (type = 'index' AND sql IS NOT NULL AND tbl_name IN ")
                .bind_list(tables.iter().copied())
                .push(") OR (type = 'trigger' AND name IN ")
                .bind_list(triggers.iter().map(String::as_str))
                .push(")");
        }
        Engine::Postgres => {
            // Secondary indexes (not those of primary keys or unique constraints) and foreign keys.
            q.push("SELECT c.relname::text AS name, 'index' AS kind, t.relname::text AS table_name,")
                .push(" pg_get_indexdef(c.oid) AS ddl FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid")
                .push(" JOIN pg_class t ON t.oid = x.indrelid WHERE NOT x.indisprimary AND NOT x.indisunique")
                .push(" AND t.relnamespace = current_schema()::regnamespace AND t.relname::text IN ")
                .bind_list(tables.iter().copied());
            q.push(" UNION ALL SELECT k.conname::text, 'foreign_key', t.relname::text,")
                .push(" 'ALTER TABLE ' || t.relname || ' ADD CONSTRAINT ' || quote_ident(k.conname) || ' ' ||")
                .push(" pg_get_constraintdef(k.oid) FROM pg_constraint k JOIN pg_class t ON t.oid = k.conrelid")
                .push(" WHERE k.contype = 'f' AND t.relnamespace = current_schema()::regnamespace AND t.relname::text IN ")
                .bind_list(tables.iter().copied());
            q.push(" UNION ALL SELECT g.tgname::text, 'trigger', t.relname::text, pg_get_triggerdef(g.oid)")
                .push(" FROM pg_trigger g JOIN pg_class t ON t.oid = g.tgrelid WHERE NOT g.tgisinternal")
                .push(" AND t.relnamespace = current_schema()::regnamespace AND g.tgname::text IN ")
                .bind_list(triggers.iter().map(String::as_str));
        }
    }
    let rows = q.fetch_all(&mut *conn).await?;
    let mut tx = match engine {
        Engine::Sqlite => conn.begin_with("BEGIN IMMEDIATE").await?,
        Engine::Postgres => conn.begin().await?,
    };
    for r in &rows {
        let (name, kind, table, ddl): (String, String, String, String) =
            (r.try_get("name")?, r.try_get("kind")?, r.try_get("table_name")?, r.try_get("ddl")?);
        let mut ins = crate::db::Sql::new(engine);
        ins.push("INSERT INTO bulk_load_deferred (name, kind, table_name, ddl) VALUES ").bind_list([
            name.as_str(),
            kind.as_str(),
            table.as_str(),
            ddl.as_str(),
        ]);
        ins.execute(&mut *tx).await?;
        // Names come from the catalog (the schema's own indexes, constraints and triggers), quoted.
        let drop = match (engine, kind.as_str()) {
            (_, "index") => format!("DROP INDEX \"{name}\""),
            (Engine::Sqlite, _) => format!("DROP TRIGGER \"{name}\""),
            (Engine::Postgres, "trigger") => format!("DROP TRIGGER \"{name}\" ON \"{table}\""),
            (Engine::Postgres, _) => format!("ALTER TABLE \"{table}\" DROP CONSTRAINT \"{name}\""),
        };
        sqlx::query(sqlx::AssertSqlSafe(drop)).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Appends `s` as a JSON string.
fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn json_value(out: &mut String, v: &Arg) {
    match v {
        Arg::Int(Some(i)) => {
            let _ = write!(out, "{i}");
        }
        Arg::Text(Some(t)) => json_str(out, t),
        Arg::Int(None) | Arg::Text(None) => out.push_str("null"),
    }
}

/// What an `INSERT … SELECT` over a JSON array of rows puts in one column (see [`insert_json_sql`]).
enum Col {
    /// Element `i` of the row array, an integer (or NULL) column.
    Int(usize),
    /// Element `i` of the row array, a text (or NULL) column.
    Text(usize),
    /// The batch's first id (bound) plus the row's position.
    Id(i64),
    /// A bound integer, the same for every row.
    Bound(i64),
}

fn insert_json_sql(
    engine: Engine,
    table: &str,
    columns: &[&str],
    exprs: &[Col],
    json: String,
    on_conflict_ignore: bool,
) -> crate::db::Sql {
    let mut q = crate::db::Sql::new(engine);
    q.push(&format!("INSERT INTO {table} ({}) SELECT ", columns.join(", ")));
    for (k, e) in exprs.iter().enumerate() {
        if k > 0 {
            q.push(", ");
        }
        match (engine, e) {
            (Engine::Sqlite, Col::Int(i) | Col::Text(i)) => {
                q.push(&format!("e.value ->> {i}"));
            }
            (Engine::Postgres, Col::Int(i)) => {
                q.push(&format!("(e.v ->> {i})::bigint"));
            }
            (Engine::Postgres, Col::Text(i)) => {
                q.push(&format!("e.v ->> {i}"));
            }
            (Engine::Sqlite, Col::Id(first)) => {
                q.bind(*first).push(" + e.key");
            }
            (Engine::Postgres, Col::Id(first)) => {
                q.push("(").bind(*first).push("::bigint + e.n - 1)");
            }
            (_, Col::Bound(v)) => {
                q.bind(*v);
            }
        }
    }
    match engine {
        Engine::Sqlite => {
            q.push(" FROM jsonb_each(").bind(json).push(") e WHERE true");
        }
        Engine::Postgres => {
            q.push(" FROM jsonb_array_elements(").bind(json).push("::jsonb) WITH ORDINALITY AS e(v, n)");
        }
    }
    if on_conflict_ignore {
        q.push(" ON CONFLICT DO NOTHING");
    }
    q
}

/// A bulk load into one organization on one connection (see the module documentation). End it with
/// [`BulkLoad::finish`]; dropping it instead leaves any indexes set aside for the next start to rebuild.
pub struct BulkLoad<'s> {
    sys: &'s SystemAccess<'s>,
    conn: AnyConnection,
    org: OrgId,
    fresh: bool,
}

impl<'s> SystemAccess<'s> {
    /// Starts a bulk load into `org`. When the database holds no other organization, indexes are set aside and
    /// durability relaxed until [`BulkLoad::finish`].
    pub async fn bulk_load(&'s self, org: OrgId) -> Result<BulkLoad<'s>, StoreError> {
        let db = self.db();
        // A connection of its own, so its settings never return to the pool.
        let mut conn = db.pool.acquire().await?.detach();
        let mut q = db.sql();
        q.push("SELECT COUNT(*) AS n FROM organizations WHERE id <> ").bind(org);
        let others: i64 = q.fetch_one(&mut conn).await?.try_get("n")?;
        let fresh = others == 0 && std::env::var_os("CRM_BULK_KEEP_INDEXES").is_none();
        match db.engine {
            Engine::Sqlite => {
                // Index and table pages of a multi-million-row load stay in memory.
                conn.execute("PRAGMA cache_size = -524288; PRAGMA temp_store = MEMORY").await?;
                if fresh {
                    conn.execute("PRAGMA synchronous = OFF").await?;
                }
            }
            Engine::Postgres => {
                conn.execute("SET maintenance_work_mem = '512MB'").await?;
                if fresh {
                    conn.execute("SET synchronous_commit = off").await?;
                }
            }
        }
        if fresh {
            defer_indexes(&mut conn, db.engine).await?;
        }
        Ok(BulkLoad { sys: self, conn, org, fresh })
    }
}

impl BulkLoad<'_> {
    /// Whether indexes were set aside (the database held no other organization).
    pub fn fresh(&self) -> bool {
        self.fresh
    }

    async fn begin(&mut self) -> Result<sqlx::Transaction<'_, sqlx::Any>, StoreError> {
        Ok(match self.sys.db().engine {
            Engine::Sqlite => self.conn.begin_with("BEGIN IMMEDIATE").await?,
            Engine::Postgres => self.conn.begin().await?,
        })
    }

    /// Inserts records of one module in one transaction with one audit entry (values in schema field order).
    /// Returns the first id; the records get consecutive ids.
    pub async fn records(&mut self, module: Module, rows: &[BulkRecord]) -> Result<RecordId, StoreError> {
        let s = schema(module).ok_or(StoreError::NotFound)?;
        let engine = self.sys.db().engine;
        let org = self.org;
        // The rows as one JSON array of [owner, updated_at, field values…].
        let mut json = String::with_capacity(rows.len() * 32 * (s.fields.len() + 2));
        json.push('[');
        for (i, r) in rows.iter().enumerate() {
            if i > 0 {
                json.push(',');
            }
            let _ = write!(json, "[{},{}", r.owner, r.updated_at);
            for (k, f) in s.fields.iter().enumerate() {
                json.push(',');
                json_value(&mut json, &crate::records::arg_for(f, r.values.get(k).unwrap_or(&Value::Null)));
            }
            json.push(']');
        }
        json.push(']');
        let mut cols = vec!["id", "org_id", "owner_id", "created_by", "updated_by", "created_at", "updated_at"];
        cols.extend(s.fields.iter().map(|f| f.name));
        let mut tx = self.begin().await?;
        let first = next_id(&mut tx, engine, s.table).await?;
        let mut exprs =
            vec![Col::Id(first), Col::Bound(org), Col::Int(0), Col::Int(0), Col::Int(0), Col::Int(1), Col::Int(1)];
        exprs.extend(s.fields.iter().enumerate().map(|(k, f)| {
            if matches!(
                f.kind,
                crm_domain::FieldKind::Int | crm_domain::FieldKind::Money | crm_domain::FieldKind::Ref(_)
            ) {
                Col::Int(k + 2)
            } else {
                Col::Text(k + 2)
            }
        }));
        let q = insert_json_sql(engine, s.table, &cols, &exprs, json, false);
        q.execute_owned(&mut *tx).await?;
        sync_sequence(&mut tx, engine, s.table).await?;
        let e = AuditEntry::new(org, None, "record.bulk_create")
            .detail(serde_json::json!({"module": module, "count": rows.len(), "first_id": first}));
        audit::append(&mut tx, engine, &e).await?;
        tx.commit().await?;
        Ok(first)
    }

    /// Manual shares in one transaction; an existing (module, record, key) is left as it is.
    pub async fn shares(&mut self, shares: &[(Module, RecordId, ShareKey, Level)]) -> Result<(), StoreError> {
        let engine = self.sys.db().engine;
        let org = self.org;
        let mut json = String::with_capacity(shares.len() * 40 + 2);
        json.push('[');
        for (i, (m, id, key, level)) in shares.iter().enumerate() {
            if i > 0 {
                json.push(',');
            }
            json.push('[');
            json_str(&mut json, m.as_str());
            let _ = write!(json, ",{id},");
            json_str(&mut json, &key.encode());
            let _ = write!(json, ",{}]", level.as_i64());
        }
        json.push(']');
        let cols = ["org_id", "module", "record_id", "share_key", "level", "created_by", "created_at"];
        let exprs = [
            Col::Bound(org),
            Col::Text(0),
            Col::Int(1),
            Col::Text(2),
            Col::Int(3),
            Col::Bound(0),
            Col::Bound(now_ms()),
        ];
        let mut tx = self.begin().await?;
        let q = insert_json_sql(engine, "record_shares", &cols, &exprs, json, true);
        q.execute_owned(&mut *tx).await?;
        let e = AuditEntry::new(org, None, "share.bulk_create").detail(serde_json::json!({"count": shares.len()}));
        audit::append(&mut tx, engine, &e).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Record-team memberships in one transaction; an existing (module, record, user) is left as it is.
    pub async fn team(&mut self, members: &[(Module, RecordId, UserId, Level)]) -> Result<(), StoreError> {
        let engine = self.sys.db().engine;
        let org = self.org;
        let mut json = String::with_capacity(members.len() * 40 + 2);
        json.push('[');
        for (i, (m, id, user, level)) in members.iter().enumerate() {
            if i > 0 {
                json.push(',');
            }
            json.push('[');
            json_str(&mut json, m.as_str());
            let _ = write!(json, ",{id},{user},{}]", level.as_i64());
        }
        json.push(']');
        let cols = ["org_id", "module", "record_id", "user_id", "level"];
        let exprs = [Col::Bound(org), Col::Text(0), Col::Int(1), Col::Int(2), Col::Int(3)];
        let mut tx = self.begin().await?;
        let q = insert_json_sql(engine, "record_team", &cols, &exprs, json, true);
        q.execute_owned(&mut *tx).await?;
        let e = AuditEntry::new(org, None, "team.bulk_create").detail(serde_json::json!({"count": members.len()}));
        audit::append(&mut tx, engine, &e).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Ends the load: rebuilds what was set aside (one transaction), refreshes the planner's statistics (PostgreSQL:
    /// `VACUUM ANALYZE`, which also sets the visibility map that index-only scans need), and makes everything
    /// durable (SQLite: back to `synchronous=FULL` and a checkpoint of the write-ahead log into the database file).
    pub async fn finish(mut self) -> Result<(), StoreError> {
        let engine = self.sys.db().engine;
        // Durable again first: the commit of the rebuild below then also makes every earlier (unsynced) commit of
        // the load durable, as both engines' logs are written in order (SQLite syncs the whole write-ahead log).
        match engine {
            Engine::Sqlite => self.conn.execute("PRAGMA synchronous = FULL").await?,
            Engine::Postgres => self.conn.execute("SET synchronous_commit = on").await?,
        };
        restore_on(&mut self.conn, engine).await?;
        match engine {
            Engine::Sqlite => {
                analyze_sqlite(&mut self.conn).await?;
                // Copies the log into the database file and syncs it.
                self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").await?;
            }
            Engine::Postgres => {
                // Also sets the visibility map, which index-only scans (counts) need.
                for t in deferred_tables() {
                    sqlx::query(sqlx::AssertSqlSafe(format!("VACUUM (ANALYZE) {t}"))).execute(&mut self.conn).await?;
                }
                self.conn.execute("ANALYZE").await?;
            }
        }
        self.conn.close().await?;
        Ok(())
    }
}

/// `ANALYZE` on SQLite keeping only the per-index averages (`sqlite_stat1`): the bundled SQLite is built with STAT4,
/// and with `sqlite_stat4` histograms present every statement whose plan looked at a bound value (each
/// `org_id = ?`) is compiled again at every execution, which made a single-record read a quarter slower. The list
/// planner does not rely on value histograms (it probes and splits by grant branch instead).
async fn analyze_sqlite(conn: &mut AnyConnection) -> Result<(), StoreError> {
    conn.execute("ANALYZE").await?;
    let stat4: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_schema WHERE type = 'table' AND name = 'sqlite_stat4'")
            .fetch_one(&mut *conn)
            .await?;
    if stat4 > 0 {
        conn.execute("DELETE FROM sqlite_stat4").await?;
        // Loads the statistics again, now without the histograms.
        conn.execute("ANALYZE sqlite_schema").await?;
    }
    Ok(())
}
