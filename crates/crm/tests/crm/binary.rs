//! The real `crm` binary, end to end: `serve --demo` on a free port, health, sign-in, OpenAPI, metrics, a clean
//! exit on SIGTERM, then `audit verify` on the same database. SQLite in a temporary folder; PostgreSQL with
//! `--database-url` to a fresh test database when `CRM_TEST_DATABASE_URL` is set.

use crm_testkit::{TestDatabase, engines};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_crm");

/// The server process; killed (by its own pid) if the test fails before it stops.
struct Server {
    child: Child,
    log: std::path::PathBuf,
}

impl Server {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
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

fn crm(db_args: &[String], args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(db_args).args(args);
    for var in ["CRM_DATA_DIR", "CRM_DATABASE_URL", "CRM_LISTEN", "CRM_LOG"] {
        cmd.env_remove(var);
    }
    cmd
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

async fn serve_demo(db_args: &[String], dir: &Path) -> (Server, String) {
    let port = free_port();
    let log = dir.join("server.log");
    let out = std::fs::File::create(&log).expect("log file");
    let err = out.try_clone().expect("log file");
    let child = crm(db_args, &["serve", "--demo", "--listen", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("start the crm binary");
    (Server { child, log }, format!("http://127.0.0.1:{port}"))
}

#[tokio::test]
async fn the_binary_serves_the_demo_and_stops_cleanly_on_sigterm() {
    for engine in engines() {
        let dir = tempfile::tempdir().expect("temporary folder");
        // Kept alive until the end of the iteration: PostgreSQL drops it on drop.
        let pg = if engine == "postgres" { Some(TestDatabase::new("postgres").await) } else { None };
        // The data folder is always a temporary one: with --database-url the server still keeps files there (its
        // audit signing key), and the default (./crm-data) would land in the source tree.
        let mut db_args = vec!["--data-dir".to_string(), dir.path().join("data").display().to_string()];
        if let Some(db) = &pg {
            db_args.extend(["--database-url".to_string(), db.url.clone()]);
        }
        let (mut server, base) = serve_demo(&db_args, dir.path()).await;
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("HTTP client");

        // Healthy within 60 s (the demo is seeded before the server listens).
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("[{engine}] the server exited early with {status}:\n{}", server.log());
            }
            match http.get(format!("{base}/healthz")).send().await {
                Ok(r) if r.status() == 200 => break,
                _ if started.elapsed() > Duration::from_secs(60) => {
                    panic!("[{engine}] /healthz not 200 within 60 s:\n{}", server.log())
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }

        let res = http
            .post(format!("{base}/api/v1/session"))
            .json(&serde_json::json!({"username": "admin", "password": crm::demo::ADMIN_PASSWORD}))
            .send()
            .await
            .expect("sign in");
        assert_eq!(res.status(), 200, "[{engine}] admin sign-in");
        let session: serde_json::Value = res.json().await.expect("sign-in JSON");
        let token = session["token"].as_str().expect("token").to_string();
        let me = http.get(format!("{base}/api/v1/me")).bearer_auth(&token).send().await.expect("me");
        assert_eq!(me.status(), 200, "[{engine}] the token works");
        let customers: serde_json::Value = http
            .get(format!("{base}/api/v1/customers/count"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("count")
            .json()
            .await
            .expect("JSON");
        assert_eq!(customers["count"], 1200, "[{engine}] the demo organization's customers");

        let res = http.get(format!("{base}/api/openapi.json")).send().await.expect("openapi");
        assert_eq!(res.status(), 200, "[{engine}] OpenAPI document");
        let doc: serde_json::Value = res.json().await.expect("the OpenAPI document is JSON");
        assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with('3')), "[{engine}] not an OpenAPI 3 document");
        assert!(doc["paths"].get("/api/v1/{module}").is_some(), "[{engine}] the record API is documented");

        let metrics =
            http.get(format!("{base}/metrics")).send().await.expect("metrics").text().await.expect("metrics text");
        assert!(
            metrics.contains("crm_http_requests_total"),
            "[{engine}] /metrics lacks the request counter:\n{metrics}"
        );
        drop(http);

        // SIGTERM: the server finishes and exits successfully within 30 s.
        let pid = server.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().expect("run kill");
        assert!(sent.success(), "[{engine}] kill -TERM {pid}");
        let stopping = Instant::now();
        let status = loop {
            if let Some(status) = server.child.try_wait().expect("wait for the server") {
                break status;
            }
            if stopping.elapsed() > Duration::from_secs(30) {
                panic!("[{engine}] still running 30 s after SIGTERM:\n{}", server.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(status.success(), "[{engine}] exit status after SIGTERM: {status}\n{}", server.log());

        // The audit chain the server wrote (organization, users, seed, sign-in) verifies.
        let out = crm(&db_args, &["audit", "verify"]).output().expect("run audit verify");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "[{engine}] audit verify exited {}:\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("demo: audit chain intact"), "[{engine}] audit verify said:\n{stdout}");
    }
}
