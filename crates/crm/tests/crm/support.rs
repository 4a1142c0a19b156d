//! Shared helpers: the demo organization on a fresh database, cursor walking, and a fingerprint of everything a
//! request could have written.

use crm::demo::{self, DemoOrg};
use crm_testkit::TestApp;
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::Arc;

/// Small enough to seed in a moment, large enough that every persona sees some records and misses others
/// (30 customers per region, about 15 of them government, 150 contacts, 60 opportunities, 30 tickets).
pub const CUSTOMERS: usize = 90;

/// A fresh database of `engine` with the demo organization seeded at [`CUSTOMERS`] (seeded once per process and
/// engine, copied for each test).
pub async fn demo_app(engine: &str) -> (TestApp, DemoOrg) {
    TestApp::builder()
        .engine(engine)
        .build_from_template("demo", async |store: &crm_store::Store| {
            demo::ensure_demo(store, CUSTOMERS).await.expect("seed the demo organization")
        })
        .await
}

/// A persona's bearer token (signed in once per app).
pub async fn token(app: &TestApp, username: &str) -> String {
    app.token(username, demo::password_for(username)).await
}

/// URL-encodes one query value.
pub fn enc(v: &str) -> String {
    form_urlencoded::byte_serialize(v.as_bytes()).collect()
}

/// Every item of a list, following `next_cursor` to the end. `path` may already carry a query string.
pub async fn walk(app: &TestApp, token: &str, path: &str) -> Vec<Value> {
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut items = Vec::new();
    let mut url = path.to_string();
    for _ in 0..1000 {
        let page = app.get(&url, token).await.assert_status(200).json();
        items.extend(page["items"].as_array().unwrap_or_else(|| panic!("GET {url}: no items: {page}")).iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => url = format!("{path}{sep}after={c}"),
            None => return items,
        }
    }
    panic!("GET {path}: more than 1000 pages");
}

/// GETs many paths, a few at a time (reads are audited, and concurrent requests share the audit trail's group
/// commits); the responses come back in the order of `paths`.
pub async fn get_all(app: &Arc<TestApp>, token: &str, paths: Vec<String>) -> Vec<crm_testkit::TestResponse> {
    const IN_FLIGHT: usize = 6;
    let n = paths.len();
    let mut lanes: Vec<Vec<(usize, String)>> = vec![Vec::new(); IN_FLIGHT];
    for (i, p) in paths.into_iter().enumerate() {
        lanes[i % IN_FLIGHT].push((i, p));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for lane in lanes {
        let (app, token) = (Arc::clone(app), token.to_string());
        tasks.spawn(async move {
            let mut out = Vec::with_capacity(lane.len());
            for (i, path) in lane {
                out.push((i, app.get(&path, &token).await));
            }
            out
        });
    }
    let mut responses: Vec<Option<crm_testkit::TestResponse>> = (0..n).map(|_| None).collect();
    while let Some(done) = tasks.join_next().await {
        let lane = done.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        for (i, res) in lane {
            responses[i] = Some(res);
        }
    }
    responses.into_iter().map(|r| r.expect("every path answered")).collect()
}

pub fn ids(items: &[Value]) -> BTreeSet<i64> {
    items.iter().map(|i| i["id"].as_i64().unwrap_or_else(|| panic!("item without id: {i}"))).collect()
}

/// Ids listed more than once (a cursor that repeats or skips shows up here or as a set difference).
pub fn duplicates(items: &[Value]) -> Vec<i64> {
    let mut seen = BTreeSet::new();
    items.iter().filter_map(|i| i["id"].as_i64()).filter(|id| !seen.insert(*id)).collect()
}

pub const RECORD_TABLES: [&str; 6] = ["customers", "contacts", "leads", "opportunities", "tickets", "activities"];

/// Everything a refused request must leave unchanged: row counts and the latest change of every record table,
/// shares, teams, and the length of the organization's audit chain.
pub async fn writes(app: &TestApp, org: i64) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for t in RECORD_TABLES {
        out.push((format!("{t} rows"), app.sql_i64(&format!("SELECT COUNT(*) FROM {t} WHERE org_id = {org}")).await));
        out.push((
            format!("{t} last change"),
            app.sql_i64(&format!("SELECT COALESCE(MAX(updated_at), 0) FROM {t} WHERE org_id = {org}")).await,
        ));
        out.push((
            format!("{t} owners"),
            app.sql_i64(&format!(
                "SELECT CAST(COALESCE(SUM(owner_id * id), 0) AS BIGINT) FROM {t} WHERE org_id = {org}"
            ))
            .await,
        ));
    }
    for t in ["record_shares", "record_team"] {
        out.push((format!("{t} rows"), app.sql_i64(&format!("SELECT COUNT(*) FROM {t} WHERE org_id = {org}")).await));
    }
    out.push((
        "audit entries".into(),
        app.sql_i64(&format!("SELECT COUNT(*) FROM audit_log WHERE org_id = {org}")).await,
    ));
    out.push((
        "audit sequence".into(),
        app.sql_i64(&format!("SELECT audit_seq FROM organizations WHERE id = {org}")).await,
    ));
    out
}

/// The part of [`writes`] about records, shares and teams (successful reads add audit entries; refusals must not
/// change records even where the requests around them are audited).
pub fn records_only(w: &[(String, i64)]) -> Vec<(String, i64)> {
    w.iter().filter(|(k, _)| !k.starts_with("audit")).cloned().collect()
}

/// A record id no table of the organization uses.
pub async fn missing_id(app: &TestApp) -> i64 {
    let mut max = 0;
    for t in RECORD_TABLES {
        max = max.max(app.sql_i64(&format!("SELECT COALESCE(MAX(id), 0) FROM {t}")).await);
    }
    max + 1000
}
