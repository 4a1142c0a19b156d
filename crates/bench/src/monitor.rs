//! `crm-bench monitor`: the cost of the inline monitoring rules, and alert latency to the live feed under
//! background audit load (issue #6). On the demo organization in the given database (created if missing).
//!
//! - The mass-delete rule's overhead on whole delete requests: thousands of `Scoped::delete` calls with the rule on
//!   and off, interleaved request by request (see [`delete_overhead`]); p50/p95/p99 of each side and of the paired
//!   difference. `--deletes-only` runs just this.
//! - Inline guards: `Scoped::guard_export` (the rules cached by policy version, no query) and
//!   `Scoped::guard_delete` (the delete rule's capped count as a statement of its own), each called many times in
//!   a row; p50/p99 of each call.
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

pub async fn monitor(
    store: &Store,
    iters: usize,
    rate: u64,
    incidents: usize,
    delete_pairs: usize,
    deletes_only: bool,
) -> anyhow::Result<serde_json::Value> {
    let demo = crm::demo::ensure_demo(store, 90).await?;
    let overhead = delete_overhead(store, &demo, delete_pairs).await?;
    if deletes_only {
        return Ok(
            json!({"machine": crate::machine(), "engine": crate::engine_name(store), "delete_overhead": overhead}),
        );
    }
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
    println!("export (cached rules)   {:>8} {:>8}", ms3(ge.p50), ms3(ge.p99));
    println!("delete (indexed COUNT)  {:>8} {:>8}   (standalone: its own round trip)", ms3(gd.p50), ms3(gd.p99));

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
        "load_events_per_s": load_rate,
        "target_events_per_s": rate,
        "incidents": incidents,
        "missed": missed,
        "append_to_feed": sj(&feed_s),
        "trigger_to_created": sj(&db_s),
        "alerts_by_rule_first_page": by_rule,
        "delete_overhead": overhead,
    }))
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The mass-delete rule's overhead on whole delete requests (`Scoped::delete`), interleaved request by request.
///
/// Two sets of representatives with the same rights, department and data: the ones of set "on" hold a copy of the
/// representative role that the rule watches (`roles`), the others the original, which it does not. The rule stays
/// at its default limit (100 deletes in 10 minutes), so every "on" delete carries the capped count inside its
/// `DELETE`; each user makes 99 deletes, so that count sees 0 to 98 earlier deletes (the whole range below the
/// limit, where it does the most work at 98). Pair i deletes one lead of "on" user i / 99 and one of "off" user
/// i / 99, the order alternating from pair to pair; the rules and every user's access are loaded once, before.
/// Reports p50/p95/p99 of each side and of the paired difference (on − off).
async fn delete_overhead(store: &Store, demo: &crm::demo::DemoOrg, pairs: usize) -> anyhow::Result<serde_json::Value> {
    use crm_store::NewUser;
    const PER_USER: usize = 99;
    if pairs == 0 {
        return Ok(serde_json::Value::Null);
    }
    let sys = store.unscoped_system_access();
    let admin_id = *demo.users.get("admin").context("no admin")?;
    let (mut policy, _) = sys.policy(demo.org).await?;
    let rep_role = policy.role(crm::templates::ROLE_REP).context("no representative role")?.clone();
    let watched = policy.roles.iter().map(|r| r.id).max().unwrap_or(0) + 1;
    let mut copy = rep_role.clone();
    copy.id = watched;
    copy.name = format!("{} (bench {watched})", rep_role.name);
    policy.roles.push(copy);
    sys.set_policy(demo.org, Some(admin_id), &policy).await?;

    let users_per_side = pairs.div_ceil(PER_USER);
    let run = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis();
    let mut sides: [Vec<i64>; 2] = [Vec::new(), Vec::new()];
    println!("delete overhead: creating {} users and {} leads", 2 * users_per_side, 2 * users_per_side * PER_USER);
    for (side, list) in sides.iter_mut().enumerate() {
        let role = if side == 0 { watched } else { crm::templates::ROLE_REP };
        for i in 0..users_per_side {
            let username = format!("bench.del{run}.{}{i}", ["on", "off"][side]);
            let id = sys
                .create_user(
                    demo.org,
                    NewUser {
                        username: username.clone(),
                        display_name: username,
                        email: None,
                        password: "bench-delete-2026".into(),
                        manager: None,
                        departments: Vec::new(),
                        roles: vec![role],
                        must_change_password: false,
                    },
                )
                .await?;
            list.push(id);
        }
    }
    let mut leads: HashMap<i64, Vec<i64>> = HashMap::new();
    for &u in sides.iter().flatten() {
        let rows: Vec<(i64, std::collections::BTreeMap<&'static str, crm_domain::Value>)> = (0..PER_USER)
            .map(|k| (u, [("name", crm_domain::Value::Text(format!("delete bench {u}-{k}")))].into()))
            .collect();
        leads.insert(u, sys.seed_records(demo.org, Module::Leads, &rows).await?);
    }
    {
        let scoped = store.scoped(sys.principal_for(demo.org, admin_id).await?);
        let mut config = scoped.monitor_rules().await?;
        let mut rule = config.rule("mass_delete");
        rule.enabled = true;
        rule.block_above = Some(100);
        rule.window_minutes = 10;
        rule.roles = vec![watched];
        config.rules.insert("mass_delete".into(), rule);
        scoped.set_monitor_rules(config).await?;
    }
    // Principals after the last policy change, so no request recompiles access or reloads the rules.
    let mut principals = HashMap::new();
    for &u in sides.iter().flatten() {
        principals.insert(u, sys.principal_for(demo.org, u).await?);
    }
    // Warm the rules cache.
    store.scoped(principals[&sides[0][0]].clone()).guard_delete().await?;

    let load_before = load_average();
    let started = Instant::now();
    let (mut on, mut off, mut diff) = (Vec::with_capacity(pairs), Vec::with_capacity(pairs), Vec::with_capacity(pairs));
    for i in 0..pairs {
        let (k, j) = (i / PER_USER, i % PER_USER);
        let mut took = [0f64; 2];
        let order = if i % 2 == 0 { [0, 1] } else { [1, 0] };
        for side in order {
            let u = sides[side][k];
            let id = leads[&u][j];
            let scoped = store.scoped(principals[&u].clone());
            let t = Instant::now();
            scoped.delete(Module::Leads, id).await.with_context(|| format!("delete {id} by {u} (side {side})"))?;
            took[side] = t.elapsed().as_nanos() as f64;
        }
        on.push(took[0]);
        off.push(took[1]);
        diff.push(took[0] - took[1]);
    }
    let secs = started.elapsed().as_secs_f64();
    // The count alone, at the statement: the last "on" user has 99 deletes in the window (the most the capped count
    // reads below the limit); `guard_delete` (SELECT <count>) and the same statement with a constant, interleaved.
    let last = store.scoped(principals[&sides[0][users_per_side - 1]].clone());
    let (mut count_ns, mut constant_ns, mut count_diff) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..pairs {
        let mut took = [0f64; 2];
        for side in if i % 2 == 0 { [0, 1] } else { [1, 0] } {
            let t = Instant::now();
            if side == 0 {
                last.guard_delete().await?;
            } else {
                last.guard_delete_without_count().await?;
            }
            took[side] = t.elapsed().as_nanos() as f64;
        }
        count_ns.push(took[0]);
        constant_ns.push(took[1]);
        count_diff.push(took[0] - took[1]);
    }
    let load_after = load_average();
    {
        // Back to the default rule (every user watched) for the guard measurements.
        let scoped = store.scoped(sys.principal_for(demo.org, admin_id).await?);
        let mut config = scoped.monitor_rules().await?;
        config.rules.insert("mass_delete".into(), crm_store::default_rule("mass_delete"));
        scoped.set_monitor_rules(config).await?;
    }
    let (on_s, off_s, diff_s) = (stats(on), stats(off), stats(diff));
    println!(
        "\ndelete requests, mass-delete rule on/off interleaved ({pairs} pairs, {secs:.1} s, load average {load_before} → {load_after})"
    );
    println!("                          p50 ms   p95 ms   p99 ms  mean ms");
    for (name, s) in [("rule on", &on_s), ("rule off", &off_s), ("paired on − off", &diff_s)] {
        println!("{name:<22} {:>8} {:>8} {:>8} {:>8}", ms3(s.p50), ms3(s.p95), ms3(s.p99), ms3(s.mean));
    }
    println!(
        "on − off by percentile   {:>8} {:>8} {:>8} {:>8}   (goal: ≤ 0.200 ms at p99)",
        ms3(on_s.p50 - off_s.p50),
        ms3(on_s.p95 - off_s.p95),
        ms3(on_s.p99 - off_s.p99),
        ms3(on_s.mean - off_s.mean)
    );
    let (count_s, constant_s, count_diff_s) = (stats(count_ns), stats(constant_ns), stats(count_diff));
    println!("statement alone: SELECT <count of 99> vs SELECT <constant>, interleaved ({pairs} pairs)");
    for (name, s) in [("with the count", &count_s), ("constant", &constant_s), ("paired difference", &count_diff_s)] {
        println!("{name:<22} {:>8} {:>8} {:>8} {:>8}", ms3(s.p50), ms3(s.p95), ms3(s.p99), ms3(s.mean));
    }
    Ok(json!({
        "statement_with_count": sj(&count_s),
        "statement_with_constant": sj(&constant_s),
        "statement_paired_difference": sj(&count_diff_s),
        "pairs": pairs,
        "seconds": secs,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "rule_on": sj(&on_s),
        "rule_off": sj(&off_s),
        "paired_difference": sj(&diff_s),
        "percentile_difference_ns": {"p50": on_s.p50 - off_s.p50, "p95": on_s.p95 - off_s.p95, "p99": on_s.p99 - off_s.p99, "mean": on_s.mean - off_s.mean},
    }))
}

fn ms3(ns: f64) -> String {
    format!("{:.3}", ns / 1e6)
}
