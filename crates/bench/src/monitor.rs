//! `crm-bench monitor`: the cost of the inline monitoring rules, and alert latency to the live feed under
//! background audit load (issue #6). On the demo organization in the given database (created if missing).
//!
//! - Inline guards: `Scoped::guard_export` (the rules cached by policy version, no query) and
//!   `Scoped::guard_delete` (one indexed COUNT over the user's deletes in the window), each called many times in a
//!   row; p50/p99 of each call.
//! - Alert latency: `rate` audited data reads per second appended by concurrent writers through the group committer
//!   (what GET requests write), while every second one large export entry (the incident) is appended; the time from
//!   the incident's append being durable to its alert arriving on this process's live feed, and the alert's
//!   `created_at - trigger_at` from the database.

use crate::{Stats, ms, sj, stats};
use anyhow::Context;
use crm_domain::Module;
use crm_store::{AuditEntry, Store};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub async fn monitor(store: &Store, iters: usize, rate: u64, incidents: usize) -> anyhow::Result<serde_json::Value> {
    let demo = crm::demo::ensure_demo(store, 90).await?;
    let sys = store.unscoped_system_access();
    let admin = sys.principal_for(demo.org, *demo.users.get("admin").context("no admin")?).await?;

    // 1. Inline guards.
    let scoped = store.scoped(admin.clone());
    scoped.guard_export(10).await?; // warm the rules cache
    let mut export_ns = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        scoped.guard_export(10).await?;
        export_ns.push(t.elapsed().as_nanos() as f64);
    }
    let mut delete_ns = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        scoped.guard_delete().await?;
        delete_ns.push(t.elapsed().as_nanos() as f64);
    }
    let (ge, gd) = (stats(export_ns), stats(delete_ns));
    println!("inline guard              p50 ms   p99 ms   (goal: p99 ≤ 0.200 ms added per request)");
    println!("export (cached rules)   {:>8} {:>8}", ms(ge.p50), ms(ge.p99));
    println!("delete (indexed COUNT)  {:>8} {:>8}   (standalone: its own round trip)", ms(gd.p50), ms(gd.p99));
    let (with_rule, without_rule) = delete_requests(store, &demo).await?;
    println!(
        "delete requests: with the rule in the DELETE p50 {} p99 {}, without the rule p50 {} p99 {} (ms)",
        ms(with_rule.p50),
        ms(with_rule.p99),
        ms(without_rule.p50),
        ms(without_rule.p99)
    );

    // 2. Alert latency under load.
    let _monitor = store.start_monitor();
    let mut feed = store.alert_feed();
    tokio::time::sleep(Duration::from_millis(500)).await; // the detector places its cursor
    let users: Vec<i64> = demo.users.values().copied().collect();
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writers = 64u64;
    let per_writer = Duration::from_secs_f64(writers as f64 / rate as f64);
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (store, stop, written) = (store.clone(), Arc::clone(&stop), Arc::clone(&written));
        let user = users[(w as usize) % users.len()];
        let org = demo.org;
        tasks.push(tokio::spawn(async move {
            let mut next = Instant::now();
            let mut i = 0i64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let e = AuditEntry::new(org, Some(user), "record.view").record(Module::Customers, 1 + i % 90);
                if store.append_audit(e).await.is_ok() {
                    written.fetch_add(1, Ordering::Relaxed);
                }
                next += per_writer;
                let now = Instant::now();
                if next > now {
                    tokio::time::sleep(next - now).await;
                } else {
                    next = now;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await; // reach the steady rate
    let load_started = Instant::now();
    let load_before = written.load(Ordering::Relaxed);
    let mut to_feed_ns = Vec::new();
    let mut db_latency_ms = Vec::new();
    let mut missed = 0;
    for k in 0..incidents {
        let e = AuditEntry::new(demo.org, Some(admin.user), "record.export")
            .module(Module::Customers)
            .detail(json!({"module": "customers", "rows": 5000 + k, "ids": []}));
        let sent = Instant::now();
        let seq = store.append_audit(e).await?;
        let deadline = sent + Duration::from_secs(5);
        let mut got = None;
        while got.is_none() && Instant::now() < deadline {
            match tokio::time::timeout(deadline - Instant::now(), feed.recv()).await {
                Ok(Ok(a)) if a.rule == "large_export" && a.trigger_seq == Some(seq) => got = Some(a),
                Ok(Ok(_)) => {}
                Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
                Ok(Err(_)) | Err(_) => break,
            }
        }
        match got {
            Some(a) => {
                to_feed_ns.push(sent.elapsed().as_nanos() as f64);
                db_latency_ms.push((a.created_at - a.trigger_at) as f64 * 1e6);
            }
            None => missed += 1,
        }
        tokio::time::sleep(Duration::from_millis(1000).saturating_sub(sent.elapsed())).await;
    }
    let load_rate = (written.load(Ordering::Relaxed) - load_before) as f64 / load_started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let (feed_s, db_s): (Stats, Stats) = (stats(to_feed_ns), stats(db_latency_ms));
    println!(
        "\nbackground load: {load_rate:.0} audited events/s (target {rate}); incidents {incidents}, missed {missed}"
    );
    println!("alert latency             p50 ms   p99 ms   max ms (goal: ≤ 1000 ms)");
    let max = |s: &Stats| if s.n == 0 { f64::NAN } else { s.p99.max(s.mean) };
    println!("append → live feed      {:>8} {:>8} {:>8}", ms(feed_s.p50), ms(feed_s.p99), ms(max(&feed_s)));
    println!("trigger_at → created_at {:>8} {:>8}", ms(db_s.p50), ms(db_s.p99));
    let mut by_rule: HashMap<String, i64> = HashMap::new();
    for a in store.scoped(admin).alerts(&Default::default()).await?.items {
        *by_rule.entry(a.rule).or_default() += 1;
    }
    Ok(json!({
        "machine": crate::machine(),
        "engine": crate::engine_name(store),
        "guard_export": sj(&ge),
        "guard_delete": sj(&gd),
        "delete_request_with_rule": sj(&with_rule),
        "delete_request_without_rule": sj(&without_rule),
        "load_events_per_s": load_rate,
        "target_events_per_s": rate,
        "incidents": incidents,
        "missed": missed,
        "append_to_feed": sj(&feed_s),
        "trigger_to_created": sj(&db_s),
        "alerts_by_rule_first_page": by_rule,
    }))
}

/// Whole delete requests (`Scoped::delete`) with the mass-delete rule on (its default limit, 100 in 10 minutes:
/// the count inside the DELETE sees 0 to 98 earlier deletes) and off. Each block is one representative creating 99
/// leads and deleting them, timed; on and off alternate over the demo's six representatives.
async fn delete_requests(store: &Store, demo: &crm::demo::DemoOrg) -> anyhow::Result<(Stats, Stats)> {
    let sys = store.unscoped_system_access();
    let admin = *demo.users.get("admin").context("no admin")?;
    let (mut with_rule, mut without_rule) = (Vec::new(), Vec::new());
    let reps = ["rep.north1", "rep.east1", "rep.south1", "rep.north2", "rep.east2", "rep.south2"];
    for (block, rep) in reps.iter().enumerate() {
        let enabled = block % 2 == 0;
        let scoped = store.scoped(sys.principal_for(demo.org, admin).await?);
        let mut config = scoped.monitor_rules().await?;
        let mut rule = config.rule("mass_delete");
        rule.enabled = enabled;
        rule.block_above = Some(100);
        rule.window_minutes = 10;
        config.rules.insert("mass_delete".into(), rule);
        scoped.set_monitor_rules(config).await?;
        let user = *demo.users.get(*rep).with_context(|| format!("no {rep}"))?;
        let scoped = store.scoped(sys.principal_for(demo.org, user).await?);
        let mut ids = Vec::new();
        for i in 0..99 {
            let r = scoped
                .create(Module::Leads, &serde_json::from_value(json!({"name": format!("delete bench {block}-{i}")}))?)
                .await?;
            ids.push(r.get("id").and_then(|v| v.as_i64()).context("created lead id")?);
        }
        for id in ids {
            let t = Instant::now();
            scoped.delete(Module::Leads, id).await?;
            let ns = t.elapsed().as_nanos() as f64;
            if enabled { with_rule.push(ns) } else { without_rule.push(ns) }
        }
    }
    Ok((stats(with_rule), stats(without_rule)))
}
