//! Shared helpers: opening the store, a raw SQL connection to the same database (for checks and tampering that
//! must bypass the store), and a small organization with signed-in users.

use crate::testdb::TestDatabase;
use crm_domain::{Action, DeptId, Module, OrgId, UserId};
use crm_policy::{FieldAccess, PolicyConfig, Role, Scope};
use crm_store::{DatabaseUrl, NewUser, Principal, Store, StoreError};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, AssertSqlSafe, Executor, Row};
use std::collections::BTreeMap;

/// Data-access actions: every successful read writes one of these (SQL list, for `NOT IN`), so tests that count
/// the entries of writes leave them out.
pub const READ_ACTIONS: &str =
    "('record.view', 'record.list', 'record.count', 'record.related', 'record.explain', 'audit.query')";

pub async fn open(url: &str) -> Store {
    Store::open(&DatabaseUrl::parse(url).expect("database url")).await.expect("open store")
}

/// A connection to the test database that bypasses the store. Values are formatted into the SQL text by the
/// tests themselves (numbers and fixed strings only), so the same text runs on both engines.
pub struct Raw {
    pub pool: AnyPool,
}

impl Raw {
    pub async fn connect(url: &str) -> Raw {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if sqlite {
                        conn.execute("PRAGMA busy_timeout=10000; PRAGMA foreign_keys=ON;").await?;
                    }
                    Ok(())
                })
            })
            .connect(url)
            .await
            .expect("raw connection");
        Raw { pool }
    }

    pub async fn exec(&self, sql: impl Into<String>) -> u64 {
        let sql = sql.into();
        sqlx::query(AssertSqlSafe(sql.clone()))
            .execute(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .rows_affected()
    }

    pub async fn rows(&self, sql: impl Into<String>) -> Vec<AnyRow> {
        let sql = sql.into();
        sqlx::query(AssertSqlSafe(sql.clone())).fetch_all(&self.pool).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    pub async fn int(&self, sql: impl Into<String>) -> i64 {
        let sql = sql.into();
        let row = sqlx::query(AssertSqlSafe(sql.clone()))
            .fetch_one(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        row.try_get::<i64, _>(0).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    pub async fn audit_seq(&self, org: OrgId) -> i64 {
        self.int(format!("SELECT audit_seq FROM organizations WHERE id = {org}")).await
    }

    pub async fn count(&self, table: &str, org: OrgId) -> i64 {
        self.int(format!("SELECT COUNT(*) FROM {table} WHERE org_id = {org}")).await
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// A store on a fresh database of one engine, with a raw connection beside it.
pub struct Env {
    pub store: Store,
    pub raw: Raw,
    pub db: TestDatabase,
}

impl Env {
    pub async fn new(engine: &'static str) -> Env {
        let db = TestDatabase::new(engine).await;
        let store = open(&db.url).await;
        let raw = Raw::connect(&db.url).await;
        Env { store, raw, db }
    }

    pub async fn close(self) {
        self.raw.close().await;
        self.store.close().await;
        drop(self.db);
    }
}

pub fn role(id: i64, name: &str) -> Role {
    Role {
        id,
        name: name.into(),
        description: String::new(),
        permissions: BTreeMap::new(),
        view_all: false,
        modify_all: false,
        fields: BTreeMap::new(),
        reveal: Default::default(),
        require_mfa: false,
    }
}

pub fn allow(mut r: Role, module: Module, actions: &[Action], scope: Scope) -> Role {
    let m = r.permissions.entry(module).or_default();
    for a in actions {
        m.insert(*a, scope);
    }
    r
}

pub fn field(mut r: Role, module: Module, name: &str, access: FieldAccess) -> Role {
    r.fields.entry(module).or_default().insert(name.to_string(), access);
    r
}

pub const SALES: i64 = 1;
pub const MANAGER: i64 = 2;

/// The scenario organization's policy: `sales` acts on its own customers and contacts, sees e-mail addresses of
/// customers hidden and phone numbers masked; `manager` acts on the whole department tree and sees everything.
pub fn scenario_policy() -> PolicyConfig {
    let sales = allow(role(SALES, "sales"), Module::Customers, &Action::ALL, Scope::Own);
    let sales = allow(sales, Module::Contacts, &Action::ALL, Scope::Own);
    let sales = field(sales, Module::Customers, "email", FieldAccess::Hidden);
    let sales = field(sales, Module::Customers, "phone", FieldAccess::Masked);
    let manager = allow(role(MANAGER, "manager"), Module::Customers, &Action::ALL, Scope::DepartmentTree);
    let manager = allow(manager, Module::Contacts, &Action::ALL, Scope::DepartmentTree);
    PolicyConfig { roles: vec![sales, manager], ..PolicyConfig::default() }
}

/// An organization with one department and users created through `SystemAccess::create_user`.
pub struct Org {
    pub id: OrgId,
    pub slug: String,
    pub dept: DeptId,
}

impl Org {
    pub async fn new(store: &Store, slug: &str, config: &PolicyConfig) -> Org {
        let sys = store.unscoped_system_access();
        let id = sys.create_organization(slug, &format!("Org {slug}"), config).await.expect("organization");
        let dept = sys.create_department(id, None, "总部").await.expect("department");
        Org { id, slug: slug.to_string(), dept }
    }

    pub async fn user(&self, store: &Store, username: &str, roles: &[i64]) -> UserId {
        let u = NewUser {
            username: username.into(),
            display_name: username.into(),
            email: None,
            password: password(username),
            manager: None,
            departments: vec![self.dept],
            roles: roles.to_vec(),
            must_change_password: false,
        };
        store.unscoped_system_access().create_user(self.id, u).await.expect("user")
    }

    /// Signs in with the password and resolves the token, as a request would.
    pub async fn sign_in(&self, store: &Store, username: &str) -> Principal {
        let sys = store.unscoped_system_access();
        let s = sys.sign_in(Some(&self.slug), username, &password(username), None, None).await.expect("sign in");
        sys.authenticate(&s.token).await.expect("authenticate").expect("a live session")
    }
}

fn password(username: &str) -> String {
    format!("pw-{username}-Secret-42")
}

pub fn obj(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    match v {
        serde_json::Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

pub fn id_of(r: &serde_json::Map<String, serde_json::Value>) -> i64 {
    r.get("id").and_then(|v| v.as_i64()).expect("record id")
}

/// The error's variant and message, for comparing two errors.
pub fn describe(e: &StoreError) -> String {
    format!("{e:?} / {e}")
}
