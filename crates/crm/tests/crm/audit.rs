//! The audit trail through the real `crm` binary: `crm audit verify` names tampering done directly in the database
//! (edit, delete, insert, reorder) with its position and exits non-zero; two server processes appending to one
//! database keep one gap-free chain; a server killed with SIGKILL in the middle of a write load loses no
//! acknowledged write or its entry, and the chain verifies afterwards.

use crm_testkit::{TestDatabase, engines};
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, AssertSqlSafe, Executor, Row};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_crm");

/// A fresh database of `engine` and the arguments that point the binary at it (with a key file in `dir`).
pub(crate) async fn database(engine: &str, dir: &std::path::Path) -> (TestDatabase, Vec<String>) {
    let db = TestDatabase::new(engine).await;
    let args = vec![
        "--database-url".into(),
        db.url.clone(),
        "--audit-key".into(),
        dir.join("audit-signing.key").display().to_string(),
    ];
    (db, args)
}

fn crm(args: &[String], more: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args).args(more);
    for var in ["CRM_DATA_DIR", "CRM_DATABASE_URL", "CRM_LISTEN", "CRM_LOG", "CRM_AUDIT_KEY"] {
        cmd.env_remove(var);
    }
    cmd
}

fn run(args: &[String], more: &[&str]) -> Output {
    crm(args, more).output().expect("run crm")
}

fn stdout(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

async fn raw(url: &str) -> AnyPool {
    sqlx::any::install_default_drivers();
    let sqlite = url.starts_with("sqlite:");
    AnyPoolOptions::new()
        .max_connections(1)
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
        .expect("raw connection")
}

async fn exec(pool: &AnyPool, sql: &str) {
    sqlx::query(AssertSqlSafe(sql.to_string())).execute(pool).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
}

async fn int(pool: &AnyPool, sql: &str) -> i64 {
    sqlx::query(AssertSqlSafe(sql.to_string()))
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get::<i64, _>(0)
}

/// A server process, killed by its own pid if the test ends first.
pub(crate) struct Server {
    child: Child,
    log: std::path::PathBuf,
    pub(crate) base: String,
}

impl Server {
    pub(crate) async fn start(args: &[String], dir: &std::path::Path, name: &str) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().expect("addr").port();
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = crm(args, &["serve", "--listen", &format!("127.0.0.1:{port}")])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start crm serve");
        let mut s = Server { child, log, base: format!("http://127.0.0.1:{port}") };
        let http = reqwest::Client::new();
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = s.child.try_wait() {
                panic!("{name} exited early with {status}:\n{}", s.log());
            }
            if let Ok(r) = http.get(format!("{}/healthz", s.base)).send().await
                && r.status() == 200
            {
                return s;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "{name} not healthy within 60 s:\n{}", s.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill9(&mut self) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-KILL", &pid]).status().expect("run kill");
        assert!(sent.success(), "kill -KILL {pid}");
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub(crate) async fn token(http: &reqwest::Client, base: &str, username: &str) -> String {
    let res = http
        .post(format!("{base}/api/v1/session"))
        .json(&serde_json::json!({"username": username, "password": crm::demo::password_for(username)}))
        .send()
        .await
        .expect("sign in");
    assert_eq!(res.status(), 200, "sign-in of {username}");
    let v: serde_json::Value = res.json().await.expect("JSON");
    v["token"].as_str().expect("token").to_string()
}

pub(crate) fn seed(args: &[String]) {
    let o = run(args, &["demo", "--customers", "30"]);
    assert!(o.status.success(), "crm demo: {}", stdout(&o));
}

#[tokio::test]
async fn audit_verify_names_tampering_with_its_position() {
    for engine in engines() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let (db, args) = database(engine, dir.path()).await;
        seed(&args);
        let pool = raw(&db.url).await;
        let org = int(&pool, "SELECT id FROM organizations WHERE slug = 'demo'").await;
        let head = int(&pool, &format!("SELECT audit_seq FROM organizations WHERE id = {org}")).await;
        assert!(head > 20, "[{engine}] {head}");
        let intact = run(&args, &["audit", "verify"]);
        assert!(intact.status.success(), "[{engine}] {}", stdout(&intact));
        assert!(stdout(&intact).contains("demo: audit chain intact"), "[{engine}] {}", stdout(&intact));

        // A checkpoint, checked against the exported public key; another key is refused.
        assert!(run(&args, &["audit", "checkpoint"]).status.success());
        let key = dir.path().join("public.key");
        assert!(run(&args, &["audit", "export-key", "--output", &key.display().to_string()]).status.success());
        let o = run(&args, &["audit", "verify", "--public-key", &key.display().to_string()]);
        assert!(o.status.success() && stdout(&o).contains("the given public key"), "[{engine}] {}", stdout(&o));
        let other_dir = tempfile::tempdir().expect("temporary folder");
        let other = other_dir.path().join("other.pub");
        let other_args = vec!["--audit-key".to_string(), other_dir.path().join("k").display().to_string()];
        assert!(run(&other_args, &["audit", "export-key", "--output", &other.display().to_string()]).status.success());
        let o = run(&args, &["audit", "verify", "--public-key", &other.display().to_string()]);
        assert_eq!(o.status.code(), Some(2), "[{engine}] another key must not verify: {}", stdout(&o));
        assert!(stdout(&o).contains(&format!("seq {head}: bad checkpoint")), "[{engine}] {}", stdout(&o));

        // The archive: exported, verified offline and against the database.
        let archive = dir.path().join("trail.jsonl");
        assert!(
            run(&args, &["audit", "export", "--format", "jsonl", "--output", &archive.display().to_string()])
                .status
                .success()
        );
        let o = run(
            &args,
            &[
                "audit",
                "verify",
                "--offline",
                "--archive",
                &archive.display().to_string(),
                "--public-key",
                &key.display().to_string(),
            ],
        );
        assert!(o.status.success() && stdout(&o).contains("intact"), "[{engine}] {}", stdout(&o));

        exec(&pool, "CREATE TABLE audit_backup AS SELECT * FROM audit_log").await;
        let cases: [(&str, &[&str], String); 5] = [
            ("edited", &["UPDATE audit_log SET detail = '{}' WHERE seq = 7"], "seq 7: modified".into()),
            ("deleted", &["DELETE FROM audit_log WHERE seq = 9"], "seq 9: deleted".into()),
            (
                "inserted",
                &[
                    "UPDATE audit_log SET seq = -seq WHERE seq >= 11",
                    "UPDATE audit_log SET seq = -seq + 1 WHERE seq < 0",
                    "INSERT INTO audit_log (org_id, seq, at, action, outcome, detail, prev_hash, hash, hash_format) \
                     SELECT org_id, 11, at, 'record.view', 'success', '{}', hash, 'f0rged', 2 FROM audit_backup WHERE seq = 10",
                ],
                "seq 11: inserted".into(),
            ),
            (
                "reordered",
                &[
                    "UPDATE audit_log SET seq = -1 WHERE seq = 13",
                    "UPDATE audit_log SET seq = 13 WHERE seq = 14",
                    "UPDATE audit_log SET seq = 14 WHERE seq = -1",
                ],
                "seq 13: reordered".into(),
            ),
            ("truncated", &["DELETE FROM audit_log WHERE seq > 18"], "seq 19: truncated".into()),
        ];
        for (what, statements, expected) in cases {
            for s in statements {
                exec(&pool, &s.replace("WHERE seq", &format!("WHERE org_id = {org} AND seq"))).await;
            }
            let o = run(&args, &["audit", "verify"]);
            assert_eq!(o.status.code(), Some(2), "[{engine}] {what}: exit code: {}", stdout(&o));
            assert!(
                stdout(&o).contains(&format!("demo: FIRST BAD ENTRY {expected}")),
                "[{engine}] {what}: {}",
                stdout(&o)
            );
            // The database no longer matches the archive taken before.
            let o = run(&args, &["audit", "verify", "--archive", &archive.display().to_string()]);
            assert_eq!(o.status.code(), Some(2), "[{engine}] {what} against the archive");
            exec(&pool, &format!("DELETE FROM audit_log WHERE org_id = {org}")).await;
            exec(&pool, "INSERT INTO audit_log SELECT * FROM audit_backup").await;
            let o = run(&args, &["audit", "verify"]);
            assert!(o.status.success(), "[{engine}] restored after {what}: {}", stdout(&o));
        }
        pool.close().await;
    }
}

/// Appends load through two processes, HTTP writes and reads, until `stop`; returns the created ids.
async fn load(base: String, token: String, stop: Arc<AtomicBool>, tag: String) -> (Vec<i64>, usize) {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
    let mut created = Vec::new();
    let mut reads = 0;
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let res = http
            .post(format!("{base}/api/v1/customers"))
            .bearer_auth(&token)
            .json(&serde_json::json!({"name": format!("{tag}-{n}")}))
            .send()
            .await;
        match res {
            Ok(r) if r.status() == 201 => {
                let v: serde_json::Value = match r.json().await {
                    Ok(v) => v,
                    Err(_) => break,
                };
                created.push(v["id"].as_i64().expect("id"));
            }
            Ok(r) => panic!("{tag}: create answered {}", r.status()),
            Err(_) => break,
        }
        match http.get(format!("{base}/api/v1/customers?limit=5")).bearer_auth(&token).send().await {
            Ok(r) if r.status() == 200 => {
                if r.bytes().await.is_ok() {
                    reads += 1;
                }
            }
            Ok(r) => panic!("{tag}: list answered {}", r.status()),
            Err(_) => break,
        }
    }
    (created, reads)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_server_processes_keep_one_gap_free_chain() {
    for engine in engines() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let (db, args) = database(engine, dir.path()).await;
        seed(&args);
        let a = Server::start(&args, dir.path(), "a").await;
        let b = Server::start(&args, dir.path(), "b").await;
        let http = reqwest::Client::new();
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for (i, server) in [&a, &b, &a, &b].into_iter().enumerate() {
            let t = token(&http, &server.base, "admin").await;
            tasks.push(tokio::spawn(load(server.base.clone(), t, Arc::clone(&stop), format!("{engine}-{i}"))));
        }
        tokio::time::sleep(Duration::from_secs(4)).await;
        stop.store(true, Ordering::Relaxed);
        let mut created = 0;
        for t in tasks {
            let (ids, reads) = t.await.expect("load task");
            assert!(!ids.is_empty() && reads > 0, "[{engine}] no load went through:\n{}\n{}", a.log(), b.log());
            created += ids.len();
        }
        let pool = raw(&db.url).await;
        let org = int(&pool, "SELECT id FROM organizations WHERE slug = 'demo'").await;
        let head = int(&pool, &format!("SELECT audit_seq FROM organizations WHERE id = {org}")).await;
        assert_eq!(
            int(&pool, &format!("SELECT COUNT(*) FROM audit_log WHERE org_id = {org}")).await,
            head,
            "[{engine}] gaps or duplicates"
        );
        assert_eq!(int(&pool, &format!("SELECT MAX(seq) FROM audit_log WHERE org_id = {org}")).await, head);
        assert!(
            int(&pool, &format!("SELECT COUNT(*) FROM audit_log WHERE org_id = {org} AND action = 'record.create'"))
                .await
                >= created as i64
        );
        pool.close().await;
        drop((a, b));
        let o = run(&args, &["audit", "verify"]);
        assert!(o.status.success(), "[{engine}] {}", stdout(&o));
        eprintln!("[{engine}] two processes: {created} creates, trail head {head}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_load_loses_no_acknowledged_write_or_entry() {
    for engine in engines() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let (db, args) = database(engine, dir.path()).await;
        seed(&args);
        let mut server = Server::start(&args, dir.path(), "victim").await;
        let http = reqwest::Client::new();
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for i in 0..6 {
            let t = token(&http, &server.base, "admin").await;
            tasks.push(tokio::spawn(load(server.base.clone(), t, Arc::clone(&stop), format!("kill-{i}"))));
        }
        tokio::time::sleep(Duration::from_millis(2500)).await;
        server.kill9();
        stop.store(true, Ordering::Relaxed);
        let mut acknowledged = Vec::new();
        let mut reads = 0;
        for t in tasks {
            let (ids, r) = t.await.expect("load task");
            acknowledged.extend(ids);
            reads += r;
        }
        assert!(acknowledged.len() > 5, "[{engine}] too little load before the kill: {}", acknowledged.len());
        let pool = raw(&db.url).await;
        let org = int(&pool, "SELECT id FROM organizations WHERE slug = 'demo'").await;
        for id in &acknowledged {
            assert_eq!(
                int(&pool, &format!("SELECT COUNT(*) FROM customers WHERE id = {id}")).await,
                1,
                "[{engine}] acknowledged create {id} lost"
            );
            let entries = int(&pool, &format!("SELECT COUNT(*) FROM audit_log WHERE org_id = {org} AND action = 'record.create' AND record_id = {id}")).await;
            assert_eq!(entries, 1, "[{engine}] the entry of acknowledged create {id}");
        }
        let lists =
            int(&pool, &format!("SELECT COUNT(*) FROM audit_log WHERE org_id = {org} AND action = 'record.list'"))
                .await;
        assert!(lists >= reads as i64, "[{engine}] {reads} acknowledged reads but {lists} entries");
        pool.close().await;
        // Restart: the store opens, and the whole chain verifies.
        let again = Server::start(&args, dir.path(), "restarted").await;
        drop(again);
        let o = run(&args, &["audit", "verify"]);
        assert!(o.status.success(), "[{engine}] after SIGKILL: {}", stdout(&o));
        eprintln!(
            "[{engine}] SIGKILL: {} acknowledged creates and {reads} reads, all with their entries",
            acknowledged.len()
        );
    }
}

#[tokio::test]
async fn the_audit_api_shows_events_within_scope_with_request_context() {
    use axum::body::Body;
    use axum::http::Request;
    for engine in engines() {
        let (app, demo) = crate::support::demo_app(engine).await;
        let admin = crate::support::token(&app, "admin").await;
        let rep = crate::support::token(&app, "rep.north1").await;
        let auditor = crate::support::token(&app, "auditor").await;

        // A read with a request id and a user agent: its entry names them, the session and the customer.
        let cust = app
            .sql_i64(&format!(
                "SELECT MIN(id) FROM customers WHERE org_id = {} AND owner_id = {}",
                demo.org, demo.users["rep.north1"]
            ))
            .await;
        let req = Request::builder()
            .uri(format!("/api/v1/customers/{cust}"))
            .header("authorization", format!("Bearer {rep}"))
            .header("x-request-id", "audit-test-1")
            .header("user-agent", "audit-test/1.0")
            .body(Body::empty())
            .expect("request");
        app.send(req).await.assert_status(200);
        let page = app.get("/api/v1/audit/events?action=record.view&limit=5", &admin).await.assert_status(200).json();
        let e = &page["items"][0];
        assert_eq!(
            (e["record_id"].as_i64(), e["actor_id"].as_i64()),
            (Some(cust), Some(demo.users["rep.north1"])),
            "[{engine}] {page}"
        );
        assert_eq!(e["request_id"], "audit-test-1", "[{engine}] {e}");
        assert_eq!(e["user_agent"], "audit-test/1.0", "[{engine}] {e}");
        assert!(e["session_id"].as_i64().is_some(), "[{engine}] {e}");

        // Filters, pagination, and the auditor's read-only view.
        let signins = app.get("/api/v1/audit/events?action=session.&limit=2", &auditor).await.assert_status(200).json();
        assert!(signins["items"].as_array().is_some_and(
            |i| !i.is_empty() && i.iter().all(|e| e["action"].as_str().is_some_and(|a| a.starts_with("session.")))
        ));
        let cursor = signins["next_cursor"].as_str().expect("a second page").to_string();
        app.get(&format!("/api/v1/audit/events?action=session.&limit=2&after={cursor}"), &auditor)
            .await
            .assert_status(200);
        app.get("/api/v1/audit/events?from=2026-01-01&to=2100-01-01T00:00:00Z", &auditor).await.assert_status(200);
        app.get("/api/v1/audit/events?bogus=1", &auditor).await.assert_problem(400, "/problems/bad-request");
        app.get("/api/v1/audit/export?format=csv", &auditor).await.assert_problem(403, "/problems/forbidden");
        // Without the audit module the trail does not exist.
        app.get("/api/v1/audit/events", &rep).await.assert_problem(404, "/problems/not-found");

        // Export as CSV and JSON Lines.
        let csv = app.get("/api/v1/audit/export?format=csv&action=record.view", &admin).await;
        csv.assert_status(200);
        assert!(csv.content_type().starts_with("text/csv"), "[{engine}]");
        assert!(csv.text().starts_with("seq,time,actor_id"), "[{engine}] {}", csv.text());
        let jsonl = app.get("/api/v1/audit/export?format=jsonl", &admin).await;
        jsonl.assert_status(200);
        for line in jsonl.text().lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            assert!(v["seq"].as_i64().is_some() && v.get("hash").is_none(), "[{engine}] {v}");
        }
        // The API is documented.
        let doc = app.get("/api/openapi.json", "").await.assert_status(200).json();
        assert!(
            doc["paths"].get("/api/v1/audit/events").is_some() && doc["paths"].get("/api/v1/audit/export").is_some(),
            "[{engine}]"
        );
        assert_eq!(
            app.store.unscoped_system_access().verify_audit(demo.org).await.expect("verify"),
            None,
            "[{engine}]"
        );
    }
}
