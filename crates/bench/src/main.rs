//! `crm-bench`: benchmarks at scale on the generated organization (`crm generate`), each printing a table and
//! writing machine-readable JSON (`--out`, default `target/bench-results`). See BENCHMARKS.md.
//!
//! - `decisions`: single-record decision latency for six personas, side by side with cedar-policy evaluating the
//!   same policy over the same entities, and with one SQL query per check; decisions must agree.
//! - `lists`: first page of 50 visible customers (newest first) and the visible count, per persona, against
//!   filtering the rows in the application.
//! - `change`: permission change cost and effect (move a department subtree, add a sharing rule, revoke a share).
//! - `http`: a `crm serve` process under a loopback load generator (wrk): GET record and list page, and its RSS.
//! - `monitor`: inline monitoring rule cost, and alert latency to the live feed under background audit load.
//! - `smoke`: all of the above at scale S on a temporary SQLite file, briefly (CI; no timing assertions).

mod cedar;
mod monitor;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use crm::generate::{self, Persona, Scale};
use crm_domain::{Action, Module, RecordId};
use crm_policy::{Access, RecordFacts};
use crm_store::{CountPlan, DatabaseUrl, ListPlan, ListQuery, Principal, Store};
use serde_json::json;
use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(name = "crm-bench", about = "Benchmarks at scale (see BENCHMARKS.md)")]
struct Cli {
    /// Folder for the JSON results.
    #[arg(long, global = true, default_value = "target/bench-results")]
    out: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Generate the benchmark organization (as `crm generate`) and report the time.
    Generate {
        #[arg(long)]
        database_url: String,
        #[arg(long, value_enum, default_value = "s")]
        scale: Scale,
        #[arg(long, default_value_t = 2026)]
        seed: u64,
    },
    /// Single decisions: ours, cedar-policy, one SQL query per check.
    Decisions {
        #[arg(long)]
        database_url: String,
        /// Random customers per persona (plus up to 200 the persona sees).
        #[arg(long, default_value_t = 1000)]
        samples: usize,
        /// Passes over the sample for our decisions (cedar gets a tenth).
        #[arg(long, default_value_t = 100)]
        rounds: usize,
        /// SQL checks per persona.
        #[arg(long, default_value_t = 300)]
        sql_checks: usize,
    },
    /// List first page and count per persona, against application filtering.
    Lists {
        #[arg(long)]
        database_url: String,
        #[arg(long, default_value_t = 20)]
        iters: usize,
        #[arg(long, default_value_t = 5)]
        count_iters: usize,
        /// Runs of the application-filtering baseline per persona (0 to skip).
        #[arg(long, default_value_t = 2)]
        app_iters: usize,
        /// Print each persona's count statements (every plan, with bound values) instead of timing.
        #[arg(long)]
        explain_counts: bool,
    },
    /// Permission change cost and effect.
    Change {
        #[arg(long)]
        database_url: String,
    },
    /// HTTP load on a `crm serve` process with wrk.
    Http {
        #[arg(long)]
        database_url: String,
        /// The crm binary to start.
        #[arg(long, default_value = "target/release/crm")]
        crm_bin: PathBuf,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 32)]
        connections: u32,
        #[arg(long, default_value_t = 2)]
        threads: u32,
        #[arg(long, default_value = "127.0.0.1:18080")]
        listen: String,
    },
    /// Monitoring: inline guard cost, alert latency to the live feed under audited background load.
    Monitor {
        /// Database to use (the demo organization is created there if missing); default: a temporary SQLite file.
        #[arg(long)]
        database_url: Option<String>,
        /// Calls of each inline guard.
        #[arg(long, default_value_t = 20000)]
        iters: usize,
        /// Background audited events per second.
        #[arg(long, default_value_t = 5000)]
        rate: u64,
        /// Incidents (one a second) whose alert latency is measured.
        #[arg(long, default_value_t = 30)]
        incidents: usize,
        /// Delete requests per side of the interleaved mass-delete rule on/off comparison.
        #[arg(long, default_value_t = 5000)]
        delete_pairs: usize,
        /// Only the delete comparison.
        #[arg(long)]
        deletes_only: bool,
    },
    /// Everything at scale S on a temporary SQLite database, briefly.
    Smoke,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cli.out).with_context(|| format!("creating {}", cli.out.display()))?;
    match cli.cmd {
        Cmd::Generate { database_url, scale, seed } => {
            let store = open(&database_url).await?;
            let r = generate_timed(&store, scale, seed).await?;
            write(&cli.out, &format!("generate-{}-{:?}", engine_name(&store), scale).to_lowercase(), &r)?;
        }
        Cmd::Decisions { database_url, samples, rounds, sql_checks } => {
            let store = open(&database_url).await?;
            let r = decisions(&store, samples, rounds, sql_checks).await?;
            write(&cli.out, &format!("decisions-{}", engine_name(&store)), &r)?;
        }
        Cmd::Lists { database_url, explain_counts: true, .. } => {
            let store = open(&database_url).await?;
            explain_counts(&store).await?;
        }
        Cmd::Lists { database_url, iters, count_iters, app_iters, explain_counts: false } => {
            let store = open(&database_url).await?;
            let r = lists(&store, iters, count_iters, app_iters).await?;
            write(&cli.out, &format!("lists-{}", engine_name(&store)), &r)?;
        }
        Cmd::Change { database_url } => {
            let store = open(&database_url).await?;
            let r = change(&store).await?;
            write(&cli.out, &format!("change-{}", engine_name(&store)), &r)?;
        }
        Cmd::Http { database_url, crm_bin, seconds, connections, threads, listen } => {
            let r = http(&database_url, &crm_bin, seconds, connections, threads, &listen).await?;
            write(&cli.out, "http", &r)?;
        }
        Cmd::Monitor { database_url, iters, rate, incidents, delete_pairs, deletes_only } => {
            let dir = tempfile::tempdir()?;
            let url = database_url
                .unwrap_or_else(|| format!("sqlite://{}?mode=rwc", dir.path().join("monitor.db").display()));
            let store = open(&url).await?;
            let r = monitor::monitor(&store, iters, rate, incidents, delete_pairs, deletes_only).await?;
            write(&cli.out, &format!("monitor-{}", engine_name(&store)), &r)?;
            store.close().await;
        }
        Cmd::Smoke => smoke(&cli.out).await?,
    }
    Ok(())
}

async fn open(url: &str) -> anyhow::Result<Store> {
    let url = DatabaseUrl::parse(url).map_err(|e| anyhow::anyhow!("{e}"))?;
    Store::open(&url).await.map_err(|e| anyhow::anyhow!("opening {url}: {e}"))
}

fn engine_name(store: &Store) -> &'static str {
    match store.engine() {
        crm_store::Engine::Sqlite => "sqlite",
        crm_store::Engine::Postgres => "postgres",
    }
}

fn write(dir: &std::path::Path, name: &str, v: &serde_json::Value) -> anyhow::Result<()> {
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(v)?)?;
    println!("(results written to {})\n", path.display());
    Ok(())
}

/// Percentiles of durations in nanoseconds.
#[derive(Debug, Clone, Copy)]
struct Stats {
    p50: f64,
    p95: f64,
    p99: f64,
    mean: f64,
    n: usize,
}

fn stats(mut v: Vec<f64>) -> Stats {
    if v.is_empty() {
        return Stats { p50: f64::NAN, p95: f64::NAN, p99: f64::NAN, mean: f64::NAN, n: 0 };
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    Stats { p50: at(0.5), p95: at(0.95), p99: at(0.99), mean: v.iter().sum::<f64>() / v.len() as f64, n: v.len() }
}

fn sj(s: &Stats) -> serde_json::Value {
    json!({"p50_ns": s.p50, "p95_ns": s.p95, "p99_ns": s.p99, "mean_ns": s.mean, "n": s.n})
}

fn ms(ns: f64) -> String {
    format!("{:.2}", ns / 1e6)
}

fn machine() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let date = std::process::Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%dT%H:%M:%SZ")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    json!({"cpu": cpu, "cores": cores, "date": date})
}

async fn generate_timed(store: &Store, scale: Scale, seed: u64) -> anyhow::Result<serde_json::Value> {
    let started = Instant::now();
    let g = generate::generate(store, scale, seed, &|_, _, _| {}).await?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "generated scale {scale:?} on {} in {secs:.1} s: {} users, {} departments, {:?}, {} shares, {} team",
        engine_name(store),
        g.users,
        g.departments,
        g.records,
        g.shares,
        g.team
    );
    Ok(json!({"machine": machine(), "scale": format!("{scale:?}"), "engine": engine_name(store), "seconds": secs,
        "users": g.users, "departments": g.departments, "records": g.records, "shares": g.shares, "team": g.team}))
}

struct Ctx {
    org: i64,
    admin: Principal,
    personas: Vec<(Persona, Principal)>,
}

async fn context(store: &Store) -> anyhow::Result<Ctx> {
    let sys = store.unscoped_system_access();
    let org = sys
        .organization_by_slug(generate::BENCH_SLUG)
        .await?
        .context("no generated organization: run `crm generate` first")?;
    let users = sys.user_ids(org).await?;
    let admin_id = users.iter().find(|(n, _)| n == "admin").map(|(_, id)| *id).context("no admin")?;
    let admin = sys.principal_for(org, admin_id).await?;
    let mut personas = Vec::new();
    for p in generate::personas(admin.access.directory(), &users) {
        let principal = sys.principal_for(org, p.user).await?;
        personas.push((p, principal));
    }
    Ok(Ctx { org, admin, personas })
}

/// Sample customer ids: random ones over the id range, plus the first records the persona sees.
async fn sample_ids(
    store: &Store,
    ctx: &Ctx,
    p: &Principal,
    n: usize,
    rng: &mut crm::demo::Rng,
) -> anyhow::Result<Vec<RecordId>> {
    let admin = store.scoped(ctx.admin.clone());
    let first = admin
        .list(
            Module::Customers,
            &ListQuery { sort: Some("id".into()), asc: true, limit: Some(1), ..Default::default() },
        )
        .await?;
    let last = admin
        .list(
            Module::Customers,
            &ListQuery { sort: Some("id".into()), asc: false, limit: Some(1), ..Default::default() },
        )
        .await?;
    let id =
        |page: &crm_store::Page| page.items.first().and_then(|r| r.get("id")).and_then(|v| v.as_i64()).unwrap_or(0);
    let (lo, hi) = (id(&first), id(&last));
    let mut ids: Vec<RecordId> = (0..n).map(|_| lo + (rng.next_u64() % (hi - lo + 1).max(1) as u64) as i64).collect();
    let visible =
        store.scoped(p.clone()).list(Module::Customers, &ListQuery { limit: Some(200), ..Default::default() }).await?;
    ids.extend(visible.items.iter().filter_map(|r| r.get("id").and_then(|v| v.as_i64())));
    Ok(ids)
}

const DECISION_PERSONAS: usize = 6;

fn decision_personas(ctx: &Ctx) -> Vec<&(Persona, Principal)> {
    // admin, service, director, manager, analyst, representative.
    let wanted = ["admin", "service", "director", "manager", "analyst", "rep ("];
    wanted
        .iter()
        .filter_map(|w| ctx.personas.iter().find(|(p, _)| p.label.starts_with(w)))
        .take(DECISION_PERSONAS)
        .collect()
}

async fn decisions(
    store: &Store,
    samples: usize,
    rounds: usize,
    sql_checks: usize,
) -> anyhow::Result<serde_json::Value> {
    use cedar_policy::{Authorizer, Context as CedarContext, Entities, EntityUid, PolicySet, Request};
    let ctx = context(store).await?;
    let personas = decision_personas(&ctx);
    let mut rng = crm::demo::Rng::new(7);
    let admin_scoped = store.scoped(ctx.admin.clone());
    let mut per: Vec<(&Persona, &Principal, Vec<RecordFacts>)> = Vec::new();
    for (p, principal) in &personas {
        let ids = sample_ids(store, &ctx, principal, samples, &mut rng).await?;
        let facts = admin_scoped.facts_of(Module::Customers, &ids).await?;
        per.push((p, principal, facts));
    }
    // Cedar: the organization's policy for customers/view, all users, departments, roles, groups, sampled records.
    let (config, _) = store.unscoped_system_access().policy(ctx.org).await?;
    let dir = ctx.admin.access.directory();
    let text = cedar::policies(&config, Module::Customers);
    let policies: PolicySet = text.parse().map_err(|e| anyhow::anyhow!("cedar policies: {e:?}\n{text}"))?;
    let mut all_facts: Vec<RecordFacts> = per.iter().flat_map(|(_, _, f)| f.iter().cloned()).collect();
    all_facts.sort_by_key(|f| f.record.id);
    all_facts.dedup_by_key(|f| f.record.id);
    let entities = Entities::from_json_value(cedar::entities(&config, dir, &all_facts), None)
        .map_err(|e| anyhow::anyhow!("cedar entities: {e:?}"))?;
    let authorizer = Authorizer::new();
    let action: EntityUid = r#"Action::"view""#.parse().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let n_policies = policies.policies().count();
    println!(
        "decisions: customers/view, {} personas, {} sampled records, cedar policy set of {n_policies} policies over {} users",
        per.len(),
        all_facts.len(),
        dir.users().count()
    );

    let mut rows = Vec::new();
    println!(
        "{:<30} {:>6} {:>8} {:>8} {:>10} | {:>9} {:>9} {:>9} {:>7} | {:>9} {:>9} {:>7} | {:>7} {:>7}",
        "persona",
        "allow%",
        "p50 ns",
        "p99 ns",
        "dec/s/core",
        "cedar p50",
        "cedar p99",
        "cedar/s",
        "×cedar",
        "sql p50",
        "sql p99",
        "×sql",
        "=cedar",
        "=sql"
    );
    for (p, principal, facts) in &per {
        let access: &Access = &principal.access;
        // Ours: per-call timings, then a tight loop for throughput.
        let mut t = Vec::with_capacity(facts.len() * rounds);
        let mut allowed = 0usize;
        for _ in 0..rounds {
            for f in facts {
                let s = Instant::now();
                let d = black_box(access.decide(Module::Customers, Action::View, black_box(f)));
                t.push(s.elapsed().as_nanos() as f64);
                allowed += usize::from(d);
            }
        }
        let ours = stats(t);
        let s = Instant::now();
        let mut n = 0usize;
        for _ in 0..rounds {
            for f in facts {
                black_box(access.decide(Module::Customers, Action::View, black_box(f)));
                n += 1;
            }
        }
        let ours_rate = n as f64 / s.elapsed().as_secs_f64();
        // Cedar.
        let principal_uid: EntityUid =
            format!("User::\"{}\"", principal.user).parse().map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let requests: Vec<Request> = facts
            .iter()
            .map(|f| {
                let r: EntityUid =
                    format!("Record::\"{}\"", f.record.id).parse().map_err(|e| anyhow::anyhow!("{e:?}"))?;
                Request::new(principal_uid.clone(), action.clone(), r, CedarContext::empty(), None)
                    .map_err(|e| anyhow::anyhow!("{e:?}"))
            })
            .collect::<anyhow::Result<_>>()?;
        let mut agree_cedar = 0usize;
        for (f, req) in facts.iter().zip(&requests) {
            let c = authorizer.is_authorized(req, &policies, &entities).decision() == cedar_policy::Decision::Allow;
            agree_cedar += usize::from(c == access.decide(Module::Customers, Action::View, f));
        }
        let cedar_rounds = (rounds / 10).max(1);
        let mut t = Vec::with_capacity(requests.len() * cedar_rounds);
        for _ in 0..cedar_rounds {
            for req in &requests {
                let s = Instant::now();
                black_box(authorizer.is_authorized(black_box(req), &policies, &entities));
                t.push(s.elapsed().as_nanos() as f64);
            }
        }
        let cedar = stats(t);
        let s = Instant::now();
        for req in &requests {
            black_box(authorizer.is_authorized(black_box(req), &policies, &entities));
        }
        let cedar_rate = requests.len() as f64 / s.elapsed().as_secs_f64();
        // One SQL query per check.
        let scoped = store.scoped((*principal).clone());
        let mut t = Vec::new();
        let mut agree_sql = 0usize;
        for f in facts.iter().take(sql_checks) {
            let s = Instant::now();
            let d = scoped.sql_check(Module::Customers, Action::View, f.record.id).await?;
            t.push(s.elapsed().as_nanos() as f64);
            agree_sql += usize::from(d == access.decide(Module::Customers, Action::View, f));
        }
        let sql = stats(t);
        let checked_sql = facts.len().min(sql_checks);
        let allow_pct = 100.0 * allowed as f64 / (facts.len() * rounds).max(1) as f64;
        println!(
            "{:<30} {:>5.1}% {:>8.0} {:>8.0} {:>10.0} | {:>7.2}µs {:>7.2}µs {:>9.0} {:>6.1}× | {:>7.1}µs {:>7.1}µs {:>6.0}× | {:>3}/{:<3} {:>3}/{:<3}",
            p.label,
            allow_pct,
            ours.p50,
            ours.p99,
            ours_rate,
            cedar.p50 / 1e3,
            cedar.p99 / 1e3,
            cedar_rate,
            cedar.p50 / ours.p50,
            sql.p50 / 1e3,
            sql.p99 / 1e3,
            sql.p50 / ours.p50,
            agree_cedar,
            facts.len(),
            agree_sql,
            checked_sql
        );
        rows.push(json!({
            "persona": p.label, "username": p.username, "records": facts.len(), "allowed_pct": allow_pct,
            "ours": sj(&ours), "ours_decisions_per_sec_per_core": ours_rate,
            "cedar": sj(&cedar), "cedar_decisions_per_sec_per_core": cedar_rate, "cedar_over_ours_p50": cedar.p50 / ours.p50,
            "sql": sj(&sql), "sql_over_ours_p50": sql.p50 / ours.p50,
            "agree_cedar": agree_cedar, "agree_sql": agree_sql, "checked_sql": checked_sql,
        }));
        if agree_cedar != facts.len() || agree_sql != checked_sql {
            bail!(
                "{}: decisions disagree (cedar {agree_cedar}/{}, sql {agree_sql}/{checked_sql})",
                p.label,
                facts.len()
            );
        }
    }
    println!(
        "(per-call timings include ~20-40 ns of Instant::now overhead; dec/s/core is a tight loop without timers)"
    );
    Ok(json!({"machine": machine(), "engine": engine_name(store), "cedar_policies": n_policies, "rows": rows}))
}

async fn lists(store: &Store, iters: usize, count_iters: usize, app_iters: usize) -> anyhow::Result<serde_json::Value> {
    let ctx = context(store).await?;
    let total = store.scoped(ctx.admin.clone()).count(Module::Customers, &ListQuery::default()).await?;
    println!("lists on {}: customers first page of 50 by last update, {total} customers", engine_name(store));
    println!(
        "{:<30} {:>9} {:>8} | {:>8} {:>8} {:>8} | {:>9} {:>9} | {:>10} {:>8}",
        "persona", "visible", "vis %", "page p50", "p95", "p99", "count p50", "count p95", "app p50", "×app"
    );
    println!(
        "{:<30} (then the plans the page and the count choose between: one query, branch plan / disjoint branches / complement; p50 / p95)",
        ""
    );
    let mut rows = Vec::new();
    let mut personas: Vec<&(Persona, Principal)> = ctx.personas.iter().collect();
    let mut visible_of = Vec::new();
    for (p, principal) in &personas {
        let n = store.scoped(principal.clone()).count(Module::Customers, &ListQuery::default()).await?;
        visible_of.push((p.username.clone(), n));
    }
    personas.sort_by_key(|(p, _)| visible_of.iter().find(|(u, _)| *u == p.username).map(|(_, n)| *n).unwrap_or(0));
    for (p, principal) in personas {
        let scoped = store.scoped(principal.clone());
        let q = ListQuery::default();
        let mut first_ids = Vec::new();
        let mut t = Vec::new();
        // The plans the automatic choice picks between, timed interleaved with it so they share the machine's noise.
        let plans = [ListPlan::Single, ListPlan::Branches];
        let mut plan_t: Vec<Vec<f64>> = vec![Vec::new(); plans.len()];
        let ids_of = |page: &crm_store::Page| -> Vec<i64> {
            page.items.iter().filter_map(|r| r.get("id").and_then(|v| v.as_i64())).collect()
        };
        for i in 0..iters.max(1) {
            let s = Instant::now();
            let page = scoped.list(Module::Customers, &q).await?;
            t.push(s.elapsed().as_nanos() as f64);
            if i == 0 {
                first_ids = ids_of(&page);
            }
            for (k, plan) in plans.iter().enumerate() {
                let s = Instant::now();
                let other = scoped.list_with_plan(Module::Customers, &q, *plan).await?;
                plan_t[k].push(s.elapsed().as_nanos() as f64);
                if ids_of(&other) != first_ids {
                    bail!("{}: the {plan:?} plan's first page differs from the list's", p.label);
                }
            }
        }
        let page = stats(t);
        let plan_stats: Vec<Stats> = plan_t.into_iter().map(stats).collect();
        let mut t = Vec::new();
        let mut visible = 0;
        // The count plans, timed interleaved with the count (audited, automatic plan) and checked equal to it.
        let count_plans = [CountPlan::Single, CountPlan::Disjoint, CountPlan::Complement];
        let mut count_plan_t: Vec<Vec<f64>> = vec![Vec::new(); count_plans.len()];
        for _ in 0..count_iters.max(1) {
            let s = Instant::now();
            visible = scoped.count(Module::Customers, &q).await?;
            t.push(s.elapsed().as_nanos() as f64);
            for (k, plan) in count_plans.iter().enumerate() {
                let s = Instant::now();
                let n = scoped.count_with_plan(Module::Customers, &q, *plan).await?;
                count_plan_t[k].push(s.elapsed().as_nanos() as f64);
                if n != visible {
                    bail!("{}: the {plan:?} count plan says {n}, the count {visible}", p.label);
                }
            }
        }
        let count = stats(t);
        let count_plan_stats: Vec<Stats> = count_plan_t.into_iter().map(stats).collect();
        let mut t = Vec::new();
        let mut same = None;
        for _ in 0..app_iters {
            let s = Instant::now();
            let (ids, _) = scoped.app_filter_first_page(Module::Customers, 50, false).await?;
            t.push(s.elapsed().as_nanos() as f64);
            same = Some(ids == first_ids);
        }
        let app = stats(t);
        if same == Some(false) {
            bail!("{}: the application filter's first page differs from the list's", p.label);
        }
        let pct = 100.0 * visible as f64 / total.max(1) as f64;
        println!(
            "{:<30} {:>9} {:>7.3}% | {:>8} {:>8} {:>8} | {:>9} {:>9} | {:>10} {:>7.0}×",
            p.label,
            visible,
            pct,
            ms(page.p50),
            ms(page.p95),
            ms(page.p99),
            ms(count.p50),
            ms(count.p95),
            if app_iters > 0 { ms(app.p50) } else { "-".into() },
            app.p50 / page.p50
        );
        println!(
            "{:<30} one query {} / {} ms, branch plan {} / {} ms; count: one query {} / {} ms, disjoint branches {} / {} ms, complement {} / {} ms",
            "",
            ms(plan_stats[0].p50),
            ms(plan_stats[0].p95),
            ms(plan_stats[1].p50),
            ms(plan_stats[1].p95),
            ms(count_plan_stats[0].p50),
            ms(count_plan_stats[0].p95),
            ms(count_plan_stats[1].p50),
            ms(count_plan_stats[1].p95),
            ms(count_plan_stats[2].p50),
            ms(count_plan_stats[2].p95)
        );
        rows.push(json!({"persona": p.label, "username": p.username, "visible": visible, "visible_pct": pct,
            "page": sj(&page), "count": sj(&count), "app_filter_first_page": sj(&app), "app_over_page_p50": app.p50 / page.p50,
            "same_first_page": same, "single_query_page": sj(&plan_stats[0]), "branch_plan_page": sj(&plan_stats[1]),
            "single_query_count": sj(&count_plan_stats[0]), "disjoint_branches_count": sj(&count_plan_stats[1]),
            "complement_count": sj(&count_plan_stats[2])}));
    }
    println!("(times in ms; ×app = application filtering's p50 / the pushed-down query's p50, same run)");
    Ok(json!({"machine": machine(), "engine": engine_name(store), "customers": total, "rows": rows}))
}

/// Each persona's count statements, one per plan, to read with the engine's EXPLAIN.
async fn explain_counts(store: &Store) -> anyhow::Result<()> {
    let ctx = context(store).await?;
    for (p, principal) in &ctx.personas {
        let scoped = store.scoped(principal.clone());
        for plan in [CountPlan::Auto, CountPlan::Single, CountPlan::Disjoint, CountPlan::Complement] {
            let sql = scoped.count_statement(Module::Customers, &ListQuery::default(), plan)?;
            println!("{} ({}) {plan:?}: {}", p.label, p.username, sql.as_deref().unwrap_or("(sees nothing)"));
        }
    }
    Ok(())
}

async fn change(store: &Store) -> anyhow::Result<serde_json::Value> {
    let ctx = context(store).await?;
    let sys = store.unscoped_system_access();
    let mut out = serde_json::Map::new();
    // 1. Move a department subtree (the largest one below a region) under another region; the director of the
    //    new region sees its records at the next request, the old one no longer does.
    let dir = ctx.admin.access.directory();
    let users = sys.user_ids(ctx.org).await?;
    let id_of = |n: &str| users.iter().find(|(u, _)| u == n).map(|(_, id)| *id);
    let region_of = |u: i64| dir.user(u).and_then(|x| x.departments.first().copied());
    let mut per_dept: std::collections::BTreeMap<i64, usize> = Default::default();
    for u in dir.users() {
        if let Some(d) = u.departments.first() {
            *per_dept.entry(*d).or_default() += 1;
        }
    }
    let size = |d: i64| dir.subtree(d).iter().map(|x| per_dept.get(x).copied().unwrap_or(0)).sum::<usize>();
    // The largest department directly below a region, moved under the next region.
    let mut best: Option<(usize, i64, i64, usize)> = None; // (users, department, from director index, ...)
    for r in 0..7usize {
        let Some(d) = id_of(&format!("director.r{r}")) else { continue };
        let Some(region) = region_of(d) else { continue };
        for c in dir.subtree(region) {
            if dir.department_parent(c) == Some(region) && best.is_none_or(|b| size(c) > b.0) {
                best = Some((size(c), c, d, r));
            }
        }
    }
    let (_, moved, d_from, r) = best.context("no department below any region")?;
    let d_to = id_of(&format!("director.r{}", (r + 1) % 7)).context("director")?;
    let (r_from, r_to) = (region_of(d_from).context("region")?, region_of(d_to).context("region")?);
    let moved_users = size(moved);
    let count_for = async |u: i64| -> anyhow::Result<i64> {
        let p = sys.principal_for(ctx.org, u).await?;
        Ok(store.scoped(p).count(Module::Customers, &ListQuery::default()).await?)
    };
    let before = (count_for(d_from).await?, count_for(d_to).await?);
    let s = Instant::now();
    sys.move_department(ctx.org, None, moved, Some(r_to)).await?;
    let write_ms = s.elapsed().as_secs_f64() * 1e3;
    let s = Instant::now();
    let p = sys.principal_for(ctx.org, d_to).await?;
    let first_page = store.scoped(p).list(Module::Customers, &ListQuery::default()).await?;
    let next_request_ms = s.elapsed().as_secs_f64() * 1e3;
    let after = (count_for(d_from).await?, count_for(d_to).await?);
    sys.move_department(ctx.org, None, moved, Some(r_from)).await?;
    println!(
        "move a department subtree of {moved_users} users: write {write_ms:.1} ms; next request (recompile + first page) {next_request_ms:.1} ms; \
         old director sees {} → {}, new director {} → {} customers",
        before.0, after.0, before.1, after.1
    );
    if !(after.0 < before.0 && after.1 > before.1) || first_page.items.is_empty() {
        bail!("the department move did not show at the next request");
    }
    out.insert("move_department".into(), json!({"users_in_subtree": moved_users, "write_ms": write_ms, "next_request_ms": next_request_ms,
        "old_director_before": before.0, "old_director_after": after.0, "new_director_before": before.1, "new_director_after": after.1}));

    // 2. Add a criteria sharing rule: every finance customer shared read-only with one representative.
    let rep =
        ctx.personas.iter().find(|(p, _)| p.label.starts_with("rep (")).map(|(p, _)| p.user).context("rep persona")?;
    let before = count_for(rep).await?;
    let (mut config, _) = sys.policy(ctx.org).await?;
    let original = config.clone();
    config.sharing_rules.push(crm_policy::SharingRule {
        id: 10_000,
        name: "bench: finance customers to one rep".into(),
        module: Module::Customers,
        source: crm_policy::RuleSource::Criteria {
            criteria: vec![crm_policy::Criterion {
                field: "industry".into(),
                op: crm_policy::CmpOp::Eq,
                value: "finance".into(),
            }],
        },
        share_with: crm_policy::Grantee::User { id: rep },
        level: crm_domain::Level::Read,
    });
    let s = Instant::now();
    sys.set_policy(ctx.org, None, &config).await?;
    let write_ms = s.elapsed().as_secs_f64() * 1e3;
    let s = Instant::now();
    let after = count_for(rep).await?;
    let next_request_ms = s.elapsed().as_secs_f64() * 1e3;
    sys.set_policy(ctx.org, None, &original).await?;
    println!(
        "add a criteria sharing rule: write {write_ms:.1} ms; next request (recompile + count) {next_request_ms:.1} ms; rep sees {before} → {after}"
    );
    if after <= before {
        bail!("the sharing rule did not show at the next request");
    }
    out.insert(
        "add_sharing_rule".into(),
        json!({"write_ms": write_ms, "next_request_count_ms": next_request_ms, "before": before, "after": after}),
    );

    // 3. Revoke access: the administrator shares a record the rep cannot see with the rep (a manual share), the rep
    //    sees it; the share is revoked and the very next request no longer shows it.
    let p_rep = sys.principal_for(ctx.org, rep).await?;
    let rep_scoped = store.scoped(p_rep.clone());
    let admin_scoped = store.scoped(ctx.admin.clone());
    let target = admin_scoped.list(Module::Customers, &ListQuery { limit: Some(200), ..Default::default() }).await?;
    let mut chosen = None;
    for r in &target.items {
        let id = r.get("id").and_then(|v| v.as_i64()).unwrap_or(0);
        if rep_scoped.get(Module::Customers, id).await.is_err() {
            chosen = Some(id);
            break;
        }
    }
    let id = chosen.context("no record hidden from the rep")?;
    let key = crm_policy::ShareKey::User(rep);
    admin_scoped.share(Module::Customers, id, key, crm_domain::Level::Read).await?;
    let visible_before = store.scoped(sys.principal_for(ctx.org, rep).await?).get(Module::Customers, id).await.is_ok();
    let s = Instant::now();
    admin_scoped.unshare(Module::Customers, id, key).await?;
    let write_ms = s.elapsed().as_secs_f64() * 1e3;
    let s = Instant::now();
    let visible_after = store.scoped(sys.principal_for(ctx.org, rep).await?).get(Module::Customers, id).await.is_ok();
    let next_ms = s.elapsed().as_secs_f64() * 1e3;
    println!(
        "revoke a manual share: write {write_ms:.1} ms; next request {next_ms:.1} ms; visible before {visible_before}, after {visible_after}"
    );
    if !visible_before || visible_after {
        bail!("the revocation did not show at the next request");
    }
    let row = json!({"grant": "manual share", "write_ms": write_ms, "next_request_ms": next_ms, "visible_before": visible_before, "visible_after": visible_after});
    out.insert("revoke_share".into(), row);
    Ok(json!({"machine": machine(), "engine": engine_name(store), "results": out}))
}

fn parse_wrk(text: &str) -> serde_json::Value {
    let rps = text
        .lines()
        .find(|l| l.starts_with("Requests/sec:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok());
    let pct = |p: &str| -> Option<f64> {
        let l = text.lines().find(|l| l.trim_start().starts_with(p))?;
        let v = l.split_whitespace().nth(1)?;
        let (num, unit) = v.split_at(v.find(|c: char| c.is_alphabetic())?);
        let n: f64 = num.parse().ok()?;
        Some(match unit {
            "us" => n / 1e3,
            "ms" => n,
            "s" => n * 1e3,
            "m" => n * 60e3,
            _ => return None,
        })
    };
    let non2xx =
        text.lines().find(|l| l.contains("Non-2xx")).and_then(|l| l.split(':').nth(1)).map(|v| v.trim().to_string());
    // "  123456 requests in 8.00s, …"
    let requests = text
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok());
    json!({"requests_per_sec": rps, "requests": requests, "p50_ms": pct("50%"), "p90_ms": pct("90%"), "p99_ms": pct("99%"), "non_2xx": non2xx})
}

fn rss_kb(pid: u32) -> (Option<u64>, Option<u64>) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let get = |k: &str| {
        s.lines().find(|l| l.starts_with(k)).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok())
    };
    (get("VmRSS:"), get("VmHWM:"))
}

/// CPU time (user + system) the process has used, in clock ticks (100 a second on Linux): the server's CPU per
/// request is the fairer measure on a shared, loaded machine, where throughput mostly says how much CPU it got.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at the last ')'.
    let rest = s.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

async fn sign_in(client: &reqwest::Client, base: &str, username: &str) -> anyhow::Result<String> {
    let r: serde_json::Value = client
        .post(format!("{base}/api/v1/session"))
        .json(
            &json!({"username": username, "password": generate::BENCH_PASSWORD, "organization": generate::BENCH_SLUG}),
        )
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    r["token"].as_str().map(str::to_string).context("no token")
}

async fn http(
    url: &str,
    crm_bin: &std::path::Path,
    seconds: u64,
    connections: u32,
    threads: u32,
    listen: &str,
) -> anyhow::Result<serde_json::Value> {
    let mut child = std::process::Command::new(crm_bin)
        .args(["--database-url", url, "serve", "--listen", listen])
        .env("CRM_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", crm_bin.display()))?;
    let pid = child.id();
    let base = format!("http://{listen}");
    let client = reqwest::Client::new();
    let result = async {
        let mut up = false;
        for _ in 0..600 {
            if client.get(format!("{base}/healthz")).send().await.is_ok_and(|r| r.status().is_success()) {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if !up {
            bail!("the server did not come up");
        }
        let (rss_idle, _) = rss_kb(pid);
        let mut rows = Vec::new();
        println!("http: {connections} connections, {threads} wrk threads, {seconds} s per run, bearer authentication");
        println!(
            "{:<44} {:>10} {:>9} {:>9} {:>9} {:>14}",
            "request", "req/s", "p50 ms", "p90 ms", "p99 ms", "server CPU/req"
        );
        for persona in ["rep11", "manager.d10", "admin"] {
            let token = sign_in(&client, &base, persona).await?;
            let list: serde_json::Value = client
                .get(format!("{base}/api/v1/customers?limit=1"))
                .bearer_auth(&token)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            let id = list["items"][0]["id"].as_i64().context("the persona sees no customer")?;
            // The first persona also measures the layers under a GET: the HTTP stack alone (`/healthz`: no
            // authentication, no database) and authentication alone (`/api/v1/me`: the session lookup, no record
            // read, no audit entry), so the cost of each layer per request can be read off one run.
            let mut requests = vec![
                ("GET record", format!("/api/v1/customers/{id}")),
                ("list page (50)", "/api/v1/customers?limit=50".to_string()),
            ];
            if persona == "rep11" {
                requests.insert(0, ("authentication only (/me)", "/api/v1/me".to_string()));
                requests.insert(0, ("HTTP only (/healthz)", "/healthz".to_string()));
            }
            for (what, path) in requests {
                let cpu_before = cpu_ticks(pid);
                let out = std::process::Command::new("wrk")
                    .args([
                        "-t",
                        &threads.to_string(),
                        "-c",
                        &connections.to_string(),
                        "-d",
                        &format!("{seconds}s"),
                        "--latency",
                    ])
                    .args(["-H", &format!("authorization: Bearer {token}")])
                    .arg(format!("{base}{path}"))
                    .output()
                    .context("running wrk (apt-get install -y wrk)")?;
                let text = String::from_utf8_lossy(&out.stdout).to_string();
                let mut r = parse_wrk(&text);
                let requests = r["requests"].as_f64().unwrap_or(0.0);
                let cpu_us = match (cpu_before, cpu_ticks(pid)) {
                    (Some(a), Some(b)) if requests > 0.0 => Some((b - a) as f64 * 10_000.0 / requests),
                    _ => None,
                };
                r["server_cpu_us_per_request"] = json!(cpu_us);
                let f = |k: &str| r[k].as_f64().map(|v| format!("{v:.2}")).unwrap_or("-".into());
                println!(
                    "{:<44} {:>10} {:>9} {:>9} {:>9} {:>14}",
                    format!("{what} as {persona}"),
                    f("requests_per_sec"),
                    f("p50_ms"),
                    f("p90_ms"),
                    f("p99_ms"),
                    cpu_us.map(|v| format!("{v:.0} µs")).unwrap_or("-".into())
                );
                if let Some(n) = r["non_2xx"].as_str() {
                    println!("  !! non-2xx responses: {n}");
                }
                rows.push(json!({"request": what, "persona": persona, "path": path, "wrk": r}));
            }
        }
        let (rss, hwm) = rss_kb(pid);
        println!(
            "server RSS: idle {} MB, after load {} MB, peak {} MB",
            rss_idle.unwrap_or(0) / 1024,
            rss.unwrap_or(0) / 1024,
            hwm.unwrap_or(0) / 1024
        );
        Ok(json!({"machine": machine(), "database": DatabaseUrl::parse(url).map(|u| u.to_string()).unwrap_or_default(),
            "connections": connections, "threads": threads, "seconds": seconds, "rows": rows,
            "rss_idle_kb": rss_idle, "rss_after_kb": rss, "rss_peak_kb": hwm}))
    }
    .await;
    // SAFETY-free: end only the child we started, by its pid.
    let _ = std::process::Command::new("kill").arg(pid.to_string()).status();
    let _ = child.wait();
    result
}

/// CI smoke: scale S on a temporary SQLite file, every benchmark briefly, correctness checks only.
async fn smoke(out: &std::path::Path) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("bench.db").display());
    let store = open(&url).await?;
    let g = generate_timed(&store, Scale::S, 2026).await?;
    write(out, "smoke-generate", &g)?;
    let d = decisions(&store, 100, 3, 20).await?;
    write(out, "smoke-decisions", &d)?;
    let l = lists(&store, 2, 1, 1).await?;
    write(out, "smoke-lists", &l)?;
    let c = change(&store).await?;
    write(out, "smoke-change", &c)?;
    // HTTP in-process (no wrk needed): sign in, a record and a list page with authentication on.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = crm_api::router(crm_api::AppState { store: store.clone(), metrics: crm_api::metrics_handle() });
    let server = tokio::spawn(async move { axum_serve(listener, app).await });
    let base = format!("http://{addr}");
    let client = reqwest::Client::new();
    let token = sign_in(&client, &base, "rep11").await?;
    let list: serde_json::Value = client
        .get(format!("{base}/api/v1/customers?limit=50"))
        .bearer_auth(&token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let id = list["items"][0]["id"].as_i64().context("rep11 sees no customer")?;
    client.get(format!("{base}/api/v1/customers/{id}")).bearer_auth(&token).send().await?.error_for_status()?;
    let s = Instant::now();
    for _ in 0..50 {
        client.get(format!("{base}/api/v1/customers/{id}")).bearer_auth(&token).send().await?.error_for_status()?;
    }
    println!("http smoke: 50 authenticated GETs in {:.1} ms", s.elapsed().as_secs_f64() * 1e3);
    server.abort();
    store.close().await;
    // Each stage above fails the run on a wrong answer; reaching here means all five passed.
    println!("smoke: 5 passed, 0 failed");
    Ok(())
}

async fn axum_serve(listener: tokio::net::TcpListener, app: axum::Router) {
    let _ = crm_api::serve(listener, app, std::future::pending(), Duration::from_secs(1)).await;
}
