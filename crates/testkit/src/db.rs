//! A fresh, empty database per test: a SQLite file in a temporary folder, or a new database on the PostgreSQL
//! server named by `CRM_TEST_DATABASE_URL`. Shared by the store's and the API's test suites.

use std::sync::atomic::{AtomicU64, Ordering};

/// Which engines the suites run on: SQLite always, PostgreSQL when `CRM_TEST_DATABASE_URL` is set.
pub fn engines() -> Vec<&'static str> {
    let mut v = vec!["sqlite"];
    if postgres_base_url().is_some() {
        v.push("postgres");
    } else {
        warn_once();
    }
    v
}

fn warn_once() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        eprintln!("!!! CRM_TEST_DATABASE_URL is not set: PostgreSQL suites SKIPPED, SQLite only !!!");
    });
}

pub fn postgres_base_url() -> Option<String> {
    std::env::var("CRM_TEST_DATABASE_URL").ok().filter(|s| !s.is_empty())
}

/// A database that exists for one test. The SQLite folder is removed on drop; PostgreSQL test databases are
/// named `crm_test_*` and dropped on drop (best effort).
pub struct TestDatabase {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    pg_name: Option<(String, String)>,
}

impl TestDatabase {
    pub async fn new(engine: &str) -> TestDatabase {
        match engine {
            "sqlite" => {
                let dir = tempfile::tempdir().expect("temporary folder");
                let url = format!("sqlite://{}?mode=rwc", dir.path().join("crm.db").display());
                TestDatabase { url, _dir: Some(dir), pg_name: None }
            }
            _ => {
                static N: AtomicU64 = AtomicU64::new(0);
                let base = postgres_base_url().expect("CRM_TEST_DATABASE_URL");
                let name = format!(
                    "crm_test_{}_{}_{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed),
                    rand::random::<u32>()
                );
                admin(&base, &format!("CREATE DATABASE {name}")).await;
                let url = replace_db(&base, &name);
                TestDatabase { url, _dir: None, pg_name: Some((base, name)) }
            }
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some((base, name)) = self.pg_name.take() {
            // Dropping needs a runtime; do it on a short-lived thread so drop works inside and outside tokio.
            let _ = std::thread::spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    rt.block_on(admin(&base, &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")));
                }
            })
            .join();
        }
    }
}

fn replace_db(base: &str, name: &str) -> String {
    let (head, tail) = match base.find('?') {
        Some(q) => (&base[..q], &base[q..]),
        None => (base, ""),
    };
    let cut = head.rfind('/').map(|i| i + 1).unwrap_or(head.len());
    let after_scheme = head.find("://").map(|i| i + 3).unwrap_or(0);
    if cut <= after_scheme { format!("{head}/{name}{tail}") } else { format!("{}{name}{tail}", &head[..cut]) }
}

async fn admin(base: &str, statement: &str) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(base).await.expect("connect to CRM_TEST_DATABASE_URL");
    sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_string())).execute(&mut conn).await.expect(statement);
}
