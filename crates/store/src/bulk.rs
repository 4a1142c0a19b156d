//! Bulk loading for the data generator and large seeds: multi-row `INSERT`s with explicit ids, one transaction and
//! one audit entry per batch. Part of the audited system path ([`SystemAccess`]); it returns ids, never records.
//!
//! Ids are assigned here (`MAX(id) + 1 …` under the table's write lock: SQLite's `BEGIN IMMEDIATE`, PostgreSQL's
//! `LOCK TABLE … SHARE ROW EXCLUSIVE`), so no statement needs `RETURNING` per row; on PostgreSQL the identity
//! sequence is moved past the new ids before commit.

use crate::audit::{self, AuditEntry};
use crate::db::{Arg, Engine};
use crate::{StoreError, SystemAccess, now_ms};
use argon2::Argon2;
use argon2::password_hash::PasswordHasher;
use crm_domain::{DeptId, Level, Module, OrgId, RecordId, RoleId, UserId, Value, schema};
use crm_policy::ShareKey;
use sqlx::{AnyConnection, Row};

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

    /// Inserts records of one module in one transaction (values in schema field order). Returns the first id;
    /// the records get consecutive ids.
    pub async fn bulk_records(&self, org: OrgId, module: Module, rows: &[BulkRecord]) -> Result<RecordId, StoreError> {
        let s = schema(module).ok_or(StoreError::NotFound)?;
        let db = self.db();
        let mut tx = db.begin_write().await?;
        if db.engine == Engine::Sqlite {
            // Index pages of a table with millions of rows stay in memory during the load instead of being spilled
            // and re-read for every random insert (the owner and account indexes).
            sqlx::query("PRAGMA cache_size = -524288").execute(&mut *tx).await?;
        }
        let first = next_id(&mut tx, db.engine, s.table).await?;
        let mut cols = vec!["id", "org_id", "owner_id", "created_by", "updated_by", "created_at", "updated_at"];
        cols.extend(s.fields.iter().map(|f| f.name));
        let args = rows.iter().enumerate().map(|(i, r)| {
            let mut a = Vec::with_capacity(cols.len());
            a.extend([
                Arg::from(first + i as i64),
                org.into(),
                r.owner.into(),
                r.owner.into(),
                r.owner.into(),
                r.updated_at.into(),
                r.updated_at.into(),
            ]);
            for (k, f) in s.fields.iter().enumerate() {
                a.push(crate::records::arg_for(f, r.values.get(k).unwrap_or(&Value::Null)));
            }
            a
        });
        insert_rows(&mut tx, db.engine, s.table, &cols, args, false).await?;
        sync_sequence(&mut tx, db.engine, s.table).await?;
        let e = AuditEntry::new(org, None, "record.bulk_create")
            .detail(serde_json::json!({"module": module, "count": rows.len(), "first_id": first}));
        audit::append(&mut tx, db.engine, &e).await?;
        tx.commit().await?;
        Ok(first)
    }

    /// Manual shares in one transaction; an existing (module, record, key) is left as it is.
    pub async fn bulk_shares(
        &self,
        org: OrgId,
        shares: &[(Module, RecordId, ShareKey, Level)],
    ) -> Result<(), StoreError> {
        let db = self.db();
        let mut tx = db.begin_write().await?;
        let now = now_ms();
        let rows = shares.iter().map(|(m, id, key, level)| {
            vec![
                Arg::from(org),
                m.as_str().into(),
                (*id).into(),
                key.encode().into(),
                level.as_i64().into(),
                0i64.into(),
                now.into(),
            ]
        });
        let cols = ["org_id", "module", "record_id", "share_key", "level", "created_by", "created_at"];
        insert_rows(&mut tx, db.engine, "record_shares", &cols, rows, true).await?;
        let e = AuditEntry::new(org, None, "share.bulk_create").detail(serde_json::json!({"count": shares.len()}));
        audit::append(&mut tx, db.engine, &e).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Record-team memberships in one transaction; an existing (module, record, user) is left as it is.
    pub async fn bulk_team(&self, org: OrgId, members: &[(Module, RecordId, UserId, Level)]) -> Result<(), StoreError> {
        let db = self.db();
        let mut tx = db.begin_write().await?;
        let rows = members.iter().map(|(m, id, user, level)| {
            vec![Arg::from(org), m.as_str().into(), (*id).into(), (*user).into(), level.as_i64().into()]
        });
        insert_rows(
            &mut tx,
            db.engine,
            "record_team",
            &["org_id", "module", "record_id", "user_id", "level"],
            rows,
            true,
        )
        .await?;
        let e = AuditEntry::new(org, None, "team.bulk_create").detail(serde_json::json!({"count": members.len()}));
        audit::append(&mut tx, db.engine, &e).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Refreshes the query planner's statistics (after a bulk load).
    ///
    /// On SQLite only the per-index averages (`sqlite_stat1`) are kept: the bundled SQLite is built with STAT4, and
    /// with `sqlite_stat4` rows present every statement whose plan looked at a bound value (each `org_id = ?`) is
    /// compiled again at every execution, which made a single-record read a quarter slower. The list planner does
    /// not rely on value histograms (it probes and splits by grant branch instead).
    pub async fn analyze(&self) -> Result<(), StoreError> {
        let mut conn = self.db().pool.acquire().await?;
        sqlx::query("ANALYZE").execute(&mut *conn).await?;
        if self.db().engine == crate::db::Engine::Sqlite {
            let stat4: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_schema WHERE type = 'table' AND name = 'sqlite_stat4'")
                    .fetch_one(&mut *conn)
                    .await?;
            if stat4 > 0 {
                sqlx::query("DELETE FROM sqlite_stat4").execute(&mut *conn).await?;
                // Loads the statistics again, now without the histograms.
                sqlx::query("ANALYZE sqlite_schema").execute(&mut *conn).await?;
            }
        }
        Ok(())
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
