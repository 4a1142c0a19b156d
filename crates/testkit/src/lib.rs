//! Test support for the API and binary suites, in the style of crates.io's `TestApp` and zero-to-production's
//! `spawn_app`: a fresh database per test ([`db`]), the store opened on it, the whole router called in-process
//! (`tower::ServiceExt::oneshot`, no sockets), signed-in bearer tokens, and a raw SQL connection beside the store
//! for checks that must not go through it.
//!
//! ```text
//! let (app, demo) = TestApp::builder().engine("sqlite").build_with(async |store| seed(store).await).await;
//! let token = app.token("rep.north1", "demo-2026").await;
//! let page = app.get("/api/v1/customers", &token).await.assert_status(200).json();
//! ```
//!
//! This crate does not depend on the `crm` binary crate (which dev-depends on it): callers seed through
//! [`TestAppBuilder::build_with`], or [`TestAppBuilder::build_from_template`] to seed once per process and engine and
//! give each test a copy (a file copy on SQLite, `CREATE DATABASE … TEMPLATE` on PostgreSQL). Templates live for the
//! process; those of finished processes are removed when the next template is made.

pub mod db;

pub use db::{TestDatabase, engines};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use crm_store::{DatabaseUrl, Store};
use http_body_util::BodyExt;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, AssertSqlSafe, Executor, Row};
use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tower::ServiceExt;

/// One application on its own fresh database.
pub struct TestApp {
    /// `"sqlite"` or `"postgres"`.
    pub engine: String,
    pub store: Store,
    router: Router,
    raw: AnyPool,
    tokens: Mutex<HashMap<(String, String), String>>,
    // Last, so the database outlives the pools above while the app is dropped.
    pub db: TestDatabase,
}

pub struct TestAppBuilder {
    engine: String,
}

/// Databases prepared once per process: (engine, key) → the template and what its seed returned.
type Templates = HashMap<(String, String), (TemplateDb, Arc<dyn Any + Send + Sync>)>;
static TEMPLATES: tokio::sync::Mutex<Option<Templates>> = tokio::sync::Mutex::const_new(None);

impl TestApp {
    pub fn builder() -> TestAppBuilder {
        TestAppBuilder { engine: "sqlite".into() }
    }

    /// Sends one request through the router. `token` is sent as `Authorization: Bearer <token>` unless empty.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> TestResponse {
        let mut req = Request::builder().method(method.clone()).uri(path);
        if !token.is_empty() {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let req = match body {
            Some((content_type, bytes)) => req.header(header::CONTENT_TYPE, content_type).body(Body::from(bytes)),
            None => req.body(Body::empty()),
        }
        .unwrap_or_else(|e| panic!("{method} {path}: cannot build the request: {e}"));
        self.send(req).await
    }

    /// Sends a request built by hand (odd headers, methods, bodies) through the router.
    pub async fn send(&self, req: Request<Body>) -> TestResponse {
        let (method, path) = (req.method().clone(), req.uri().to_string());
        let response = match self.router.clone().oneshot(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap_or_else(|e| panic!("{method} {path}: reading the body: {e}")).to_bytes();
        TestResponse { method, path, status: parts.status, headers: parts.headers, body }
    }

    pub async fn get(&self, path: &str, token: &str) -> TestResponse {
        self.request(Method::GET, path, token, None).await
    }

    pub async fn delete(&self, path: &str, token: &str) -> TestResponse {
        self.request(Method::DELETE, path, token, None).await
    }

    pub async fn post_json(&self, path: &str, token: &str, json: &serde_json::Value) -> TestResponse {
        self.post_raw(path, token, "application/json", json.to_string().into_bytes()).await
    }

    pub async fn patch_json(&self, path: &str, token: &str, json: &serde_json::Value) -> TestResponse {
        self.request(Method::PATCH, path, token, Some(("application/json", json.to_string().into_bytes()))).await
    }

    pub async fn post_raw(
        &self,
        path: &str,
        token: &str,
        content_type: &str,
        bytes: impl Into<Vec<u8>>,
    ) -> TestResponse {
        self.request(Method::POST, path, token, Some((content_type, bytes.into()))).await
    }

    /// Signs in through `POST /api/v1/session` and returns the bearer token; panics unless it succeeds.
    pub async fn sign_in(&self, username: &str, password: &str) -> String {
        let body = serde_json::json!({ "username": username, "password": password });
        let res = self.post_json("/api/v1/session", "", &body).await;
        let json = res.assert_status(200).json();
        json["token"].as_str().unwrap_or_else(|| panic!("sign-in of {username}: no token in {json}")).to_string()
    }

    /// [`TestApp::sign_in`] once per (username, password) for the life of this app: password hashing is slow.
    pub async fn token(&self, username: &str, password: &str) -> String {
        let key = (username.to_string(), password.to_string());
        if let Some(t) = self.lock_tokens().get(&key) {
            return t.clone();
        }
        let token = self.sign_in(username, password).await;
        self.lock_tokens().insert(key, token.clone());
        token
    }

    fn lock_tokens(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), String>> {
        self.tokens.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Rows of a raw SQL query on the test database, bypassing the store. Tests write only literal numbers and
    /// fixed strings into `sql`, so the same text runs on both engines.
    pub async fn sql_rows(&self, sql: &str) -> Vec<AnyRow> {
        sqlx::query(AssertSqlSafe(sql.to_string())).fetch_all(&self.raw).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// The first column of every row, as integers (ids, counts).
    pub async fn sql_i64s(&self, sql: &str) -> Vec<i64> {
        self.sql_rows(sql)
            .await
            .iter()
            .map(|r| r.try_get::<i64, _>(0).unwrap_or_else(|e| panic!("{sql}: {e}")))
            .collect()
    }

    /// The single integer a query returns (a count, a sequence number).
    pub async fn sql_i64(&self, sql: &str) -> i64 {
        match self.sql_i64s(sql).await.as_slice() {
            [v] => *v,
            other => panic!("{sql}: expected one row, got {}", other.len()),
        }
    }

    /// The first column of every row, as text (NULL as empty).
    pub async fn sql_strings(&self, sql: &str) -> Vec<String> {
        self.sql_rows(sql)
            .await
            .iter()
            .map(|r| r.try_get::<Option<String>, _>(0).unwrap_or_else(|e| panic!("{sql}: {e}")).unwrap_or_default())
            .collect()
    }
}

impl TestAppBuilder {
    /// `"sqlite"` (default) or `"postgres"` (needs `CRM_TEST_DATABASE_URL`).
    pub fn engine(mut self, engine: &str) -> Self {
        self.engine = engine.to_string();
        self
    }

    pub async fn build(self) -> TestApp {
        self.build_with(async |_: &Store| ()).await.0
    }

    /// Like [`TestAppBuilder::build_with`], but `seed` runs once per process, engine and `key` into a template
    /// database, and each app gets its own copy of it: a seed that hashes passwords (the demo organization) costs
    /// seconds, a copy milliseconds. Every copy is a fresh, independent database.
    pub async fn build_from_template<T: Clone + Send + Sync + 'static>(
        self,
        key: &str,
        seed: impl AsyncFnOnce(&Store) -> T,
    ) -> (TestApp, T) {
        let mut templates = TEMPLATES.lock().await;
        let templates = templates.get_or_insert_with(HashMap::new);
        let id = (self.engine.clone(), key.to_string());
        if !templates.contains_key(&id) {
            let db = TemplateDb::create(&self.engine, key).await;
            let url = DatabaseUrl::parse(&db.url).expect("template database URL");
            let store = Store::open(&url).await.unwrap_or_else(|e| panic!("opening the {} template: {e}", self.engine));
            let seeded: Arc<dyn Any + Send + Sync> = Arc::new(seed(&store).await);
            store.close().await;
            templates.insert(id.clone(), (db, seeded));
        }
        let (template, seeded) = &templates[&id];
        let seeded = seeded.downcast_ref::<T>().expect("one seed type per template key").clone();
        let db = template.copy().await;
        (self.open(db, async |_: &Store| ()).await.0, seeded)
    }

    /// Builds the app and runs `setup` on its store first (e.g. `crm::demo::ensure_demo`), returning its result.
    pub async fn build_with<T>(self, setup: impl AsyncFnOnce(&Store) -> T) -> (TestApp, T) {
        let db = TestDatabase::new(&self.engine).await;
        self.open(db, setup).await
    }

    async fn open<T>(self, db: TestDatabase, setup: impl AsyncFnOnce(&Store) -> T) -> (TestApp, T) {
        let raw = raw_pool(&db.url).await;
        if self.engine == "postgres" {
            // A throw-away database need not wait for its WAL to reach the disk at each commit (every read writes
            // an audit entry). Atomicity, isolation and ordering are unchanged; only crash durability is given up.
            let sql = "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET synchronous_commit = off', current_database()); END $$";
            sqlx::raw_sql(AssertSqlSafe(sql))
                .execute(&raw)
                .await
                .expect("relax commit durability of the test database");
        }
        let url = DatabaseUrl::parse(&db.url).expect("test database URL");
        let store =
            Store::open(&url).await.unwrap_or_else(|e| panic!("opening the {} test database: {e}", self.engine));
        let seeded = setup(&store).await;
        let router = crm_api::router(crm_api::AppState { store: store.clone(), metrics: crm_api::metrics_handle() });
        let app = TestApp { engine: self.engine, store, router, raw, tokens: Mutex::new(HashMap::new()), db };
        (app, seeded)
    }
}

/// A template database, kept for the life of the process. Templates left behind by processes that are gone are
/// removed when the next one is created.
struct TemplateDb {
    engine: String,
    url: String,
    /// SQLite: the file; PostgreSQL: the database name.
    location: String,
}

impl TemplateDb {
    async fn create(engine: &str, key: &str) -> TemplateDb {
        let pid = std::process::id();
        let key: String =
            key.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect();
        let alive = |name: &str, prefix: &str| {
            let pid = name.strip_prefix(prefix).and_then(|rest| rest.split('_').next()).unwrap_or("");
            pid.is_empty() || std::path::Path::new(&format!("/proc/{pid}")).exists()
        };
        match engine {
            "sqlite" => {
                let tmp = std::env::temp_dir();
                for entry in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if name.starts_with("crm_template_") && !alive(&name, "crm_template_") {
                        let _ = std::fs::remove_dir_all(entry.path());
                    }
                }
                let dir = tmp.join(format!("crm_template_{pid}_{key}"));
                let _ = std::fs::remove_dir_all(&dir);
                std::fs::create_dir_all(&dir).expect("template folder");
                let file = dir.join("crm.db").display().to_string();
                TemplateDb { engine: engine.into(), url: format!("sqlite://{file}?mode=rwc"), location: file }
            }
            _ => {
                let base = db::postgres_base_url().expect("CRM_TEST_DATABASE_URL");
                let names =
                    pg_strings(&base, r"SELECT datname FROM pg_database WHERE datname LIKE 'crm\_template\_%'").await;
                for name in names.iter().filter(|n| !alive(n, "crm_template_")) {
                    pg_admin(&base, &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
                }
                let name = format!("crm_template_{pid}_{key}");
                pg_admin(&base, &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
                pg_admin(&base, &format!("CREATE DATABASE {name}")).await;
                let url = with_database(&base, &name);
                TemplateDb { engine: engine.into(), url, location: name }
            }
        }
    }

    /// A fresh test database with the template's contents.
    async fn copy(&self) -> TestDatabase {
        let db = TestDatabase::new(&self.engine).await;
        if self.engine == "sqlite" {
            let target = db.url.trim_start_matches("sqlite://").split('?').next().unwrap_or("").to_string();
            std::fs::copy(&self.location, &target).unwrap_or_else(|e| panic!("copying the template to {target}: {e}"));
        } else {
            let base = db::postgres_base_url().expect("CRM_TEST_DATABASE_URL");
            let name = db.url.rsplit('/').next().unwrap_or("").split('?').next().unwrap_or("").to_string();
            pg_admin(&base, &format!("DROP DATABASE {name}")).await;
            pg_admin(&base, &format!("CREATE DATABASE {name} TEMPLATE {}", self.location)).await;
        }
        db
    }
}

/// `base` (a PostgreSQL URL) naming database `name` instead.
fn with_database(base: &str, name: &str) -> String {
    let (head, tail) = base.split_at(base.find('?').unwrap_or(base.len()));
    let after_scheme = head.find("://").map_or(0, |i| i + 3);
    match head.rfind('/') {
        Some(i) if i + 1 > after_scheme => format!("{}{name}{tail}", &head[..=i]),
        _ => format!("{head}/{name}{tail}"),
    }
}

async fn pg_admin(base: &str, statement: &str) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(base).await.expect("connect to CRM_TEST_DATABASE_URL");
    sqlx::raw_sql(AssertSqlSafe(statement.to_string()))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{statement}: {e}"));
}

async fn pg_strings(base: &str, query: &str) -> Vec<String> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(base).await.expect("connect to CRM_TEST_DATABASE_URL");
    let rows = sqlx::query(AssertSqlSafe(query.to_string()))
        .fetch_all(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{query}: {e}"));
    rows.iter().map(|r| r.get::<String, _>(0)).collect()
}

async fn raw_pool(url: &str) -> AnyPool {
    sqlx::any::install_default_drivers();
    let sqlite = url.starts_with("sqlite:");
    AnyPoolOptions::new()
        .max_connections(2)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                if sqlite {
                    conn.execute("PRAGMA busy_timeout=10000;").await?;
                }
                Ok(())
            })
        })
        .connect(url)
        .await
        .expect("raw connection to the test database")
}

/// A response read to the end.
pub struct TestResponse {
    pub method: Method,
    pub path: String,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl TestResponse {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics (showing the body) when it is not.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{} {}: body is not JSON ({e}): {}", self.method, self.path, self.text()))
    }

    pub fn content_type(&self) -> &str {
        self.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    #[track_caller]
    pub fn assert_status(&self, status: u16) -> &Self {
        assert_eq!(
            self.status.as_u16(),
            status,
            "{} {} answered {}: {}",
            self.method,
            self.path,
            self.status,
            self.text()
        );
        self
    }

    /// Asserts an RFC 9457 problem document with this status and `type` (e.g. `/problems/not-found`), and
    /// returns it.
    #[track_caller]
    pub fn assert_problem(&self, status: u16, kind: &str) -> serde_json::Value {
        self.assert_status(status);
        assert_eq!(
            self.content_type(),
            "application/problem+json",
            "{} {}: a {status} must be a problem document: {}",
            self.method,
            self.path,
            self.text()
        );
        let p = self.json();
        assert_eq!(p["type"], kind, "{} {}: problem type: {p}", self.method, self.path);
        assert_eq!(p["status"], status, "{} {}: problem status member: {p}", self.method, self.path);
        p
    }
}
