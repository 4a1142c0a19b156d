//! `crm audit …`: verify the trail (optionally against an exported public key and an archive), export the public
//! key, export the trail, purge after archiving, set retention, sign a checkpoint now, and measure throughput.
//! Also the server's checkpoint signer: the key file is created on first start and a background task signs a
//! checkpoint for every organization whose trail moved, every [`CHECKPOINT_ENTRIES`] entries or every
//! [`CHECKPOINT_INTERVAL`].

use crate::cli::DbArgs;
use anyhow::{Context, anyhow, bail};
use clap::{Subcommand, ValueEnum};
use crm_store::{AuditEntry, AuditPublicKey, AuditSigner, Store, VerifyOptions};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A checkpoint at least this often while entries are appended.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(60);
/// … and at least every this many entries (checked every few seconds).
pub const CHECKPOINT_ENTRIES: i64 = 10_000;

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Check every link and checkpoint of every organization's audit chain; names the first bad sequence number
    /// and what is wrong there. Exit code 0 only when the trail is intact.
    Verify {
        /// The exported public key (`crm audit export-key`) to check checkpoint signatures with, instead of the
        /// keys registered in the database.
        #[arg(long, value_name = "FILE")]
        public_key: Option<PathBuf>,
        /// An archive (`crm audit export --format jsonl` or a purge's): checked on its own and against the database.
        #[arg(long, value_name = "FILE")]
        archive: Option<PathBuf>,
        /// Check only the archive, without a database.
        #[arg(long, requires = "archive")]
        offline: bool,
        /// Only this organization (slug).
        #[arg(long)]
        organization: Option<String>,
    },
    /// Print the public key of the checkpoint signing key (creating the key if it does not exist yet).
    ExportKey {
        /// Write it to this file instead of standard output.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Export an organization's trail: `jsonl` is the verifiable archive (every column, the checkpoints and keys),
    /// `csv` a table for people.
    Export {
        #[arg(long, value_enum, default_value = "jsonl")]
        format: ExportFormat,
        /// The organization's slug (may be omitted when there is one).
        #[arg(long)]
        organization: Option<String>,
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Delete entries older than a date after writing them to an archive (a new file); leaves a signed checkpoint
    /// that anchors the rest. Without --before, the organization's retention decides.
    Purge {
        /// YYYY-MM-DD, an RFC 3339 time, or milliseconds since the epoch.
        #[arg(long)]
        before: Option<String>,
        #[arg(long, value_name = "FILE")]
        archive: PathBuf,
        #[arg(long)]
        organization: Option<String>,
    },
    /// Set how many days of trail an organization keeps (purged only with an archive).
    Retention {
        #[arg(long, conflicts_with = "forever")]
        days: Option<i64>,
        #[arg(long)]
        forever: bool,
        #[arg(long)]
        organization: Option<String>,
    },
    /// Sign a checkpoint now for every organization whose trail moved.
    Checkpoint,
    /// Measure durable appends (group commit, many concurrent writers) and verification.
    Bench {
        /// Events to append.
        #[arg(long, default_value_t = 200_000)]
        events: u64,
        /// Concurrent appenders.
        #[arg(long, default_value_t = 512)]
        concurrency: usize,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ExportFormat {
    Jsonl,
    Csv,
}

/// Loads the signing key (creating it on first start) and registers its public key in the database.
pub async fn start_signing(store: &Store, path: &Path) -> anyhow::Result<Arc<AuditSigner>> {
    let (signer, created) = AuditSigner::load_or_create(path)?;
    if created {
        tracing::info!(path = %path.display(), key_id = signer.key_id(), "created the audit checkpoint signing key: back it up; export the public key with `crm audit export-key`");
    }
    store.unscoped_system_access().register_audit_key(signer.public_key()).await?;
    Ok(Arc::new(signer))
}

/// The server's checkpoint task: every few seconds, signs a checkpoint for each organization with
/// [`CHECKPOINT_ENTRIES`] unsigned entries or unsigned entries older than [`CHECKPOINT_INTERVAL`].
pub fn spawn_checkpointer(store: Store, signer: Arc<AuditSigner>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            let sys = store.unscoped_system_access();
            let Ok(orgs) = sys.organizations().await else { continue };
            for (org, slug) in orgs {
                match sys.audit_checkpoint_due(org, CHECKPOINT_ENTRIES, CHECKPOINT_INTERVAL.as_millis() as i64).await {
                    Ok(true) => {
                        if let Err(e) = sys.audit_checkpoint(org, &signer).await {
                            tracing::error!(organization = %slug, error = %e, "audit checkpoint refused");
                        }
                    }
                    Ok(false) => {}
                    Err(e) => tracing::warn!(organization = %slug, error = %e, "audit checkpoint check failed"),
                }
            }
        }
    })
}

async fn org_of(store: &Store, slug: Option<&str>) -> anyhow::Result<(i64, String)> {
    let orgs = store.unscoped_system_access().organizations().await?;
    match slug {
        Some(s) => orgs.into_iter().find(|(_, x)| x == s).ok_or_else(|| anyhow!("no organization {s:?}")),
        None if orgs.len() == 1 => Ok(orgs.into_iter().next().unwrap_or_default()),
        None => bail!("several organizations exist: name one with --organization"),
    }
}

fn read_key(path: &Path) -> anyhow::Result<AuditPublicKey> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(AuditPublicKey::parse(&text)?)
}

fn progress_bar(prefix: &str) -> (indicatif::ProgressBar, crm_store::Progress) {
    use indicatif::{ProgressBar, ProgressStyle};
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:40}] {pos}/{len} entries ({per_sec}, {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(prefix.to_string());
    let b = bar.clone();
    let p: crm_store::Progress = Arc::new(move |done, total| {
        if total > 0 {
            b.set_length(total);
        }
        b.set_position(done);
    });
    (bar, p)
}

fn describe(p: &crm_store::AuditProblem) -> String {
    format!("FIRST BAD ENTRY seq {}: {} — {}", p.seq, p.kind.as_str(), p.detail)
}

pub async fn run(db: &DbArgs, command: AuditCommand) -> anyhow::Result<ExitCode> {
    match command {
        AuditCommand::Verify { public_key, archive, offline, organization } => {
            verify(db, public_key, archive, offline, organization).await
        }
        AuditCommand::ExportKey { output } => {
            let path = db.audit_key_path();
            let (signer, created) = AuditSigner::load_or_create(&path)?;
            if created {
                eprintln!("created the audit signing key {} (back it up)", path.display());
            }
            let text = signer.public_key().to_text();
            match output {
                Some(o) => std::fs::write(&o, text).with_context(|| format!("writing {}", o.display()))?,
                None => print!("{text}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Export { format, organization, output } => {
            let store = db.open().await?;
            let (org, slug) = org_of(&store, organization.as_deref()).await?;
            let sys = store.unscoped_system_access();
            let mut out: Box<dyn std::io::Write + Send> = match &output {
                Some(p) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout())),
            };
            let n = match format {
                ExportFormat::Jsonl => sys.write_audit_archive(org, None, &mut out).await?.entries,
                ExportFormat::Csv => {
                    let mut buf = Vec::new();
                    sys.write_audit_archive(org, None, &mut buf).await?;
                    csv_from_archive(&buf, &mut out)?
                }
            };
            out.flush()?;
            drop(out);
            eprintln!("exported {n} audit entries of {slug}");
            store.close().await;
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Purge { before, archive, organization } => {
            let store = db.open().await?;
            let (org, slug) = org_of(&store, organization.as_deref()).await?;
            let sys = store.unscoped_system_access();
            let before = match before {
                Some(b) => crm_store::parse_audit_time(&b).ok_or_else(|| anyhow!("--before: not a date: {b}"))?,
                None => match sys.audit_retention(org).await? {
                    Some(days) => now_ms() - days * 86_400_000,
                    None => bail!("{slug} keeps its trail forever: pass --before or set a retention"),
                },
            };
            let signer = start_signing(&store, &db.audit_key_path()).await?;
            let r = sys.purge_audit(org, None, before, &archive, &signer).await?;
            println!(
                "{slug}: purged {} entries through seq {} into {} (sha256 {}); the rest is anchored by a signed checkpoint",
                r.purged,
                r.through_seq,
                archive.display(),
                r.archive.sha256
            );
            store.close().await;
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Retention { days, forever, organization } => {
            if days.is_none() && !forever {
                bail!("pass --days N or --forever");
            }
            let store = db.open().await?;
            let (org, slug) = org_of(&store, organization.as_deref()).await?;
            store.unscoped_system_access().set_audit_retention(org, None, days).await?;
            match days {
                Some(d) => println!("{slug} keeps {d} days of audit trail (purged only with an archive)"),
                None => println!("{slug} keeps its audit trail forever"),
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Checkpoint => {
            let store = db.open().await?;
            let signer = start_signing(&store, &db.audit_key_path()).await?;
            let (signed, failed) = store.unscoped_system_access().audit_checkpoint_all(&signer).await?;
            println!("signed {signed} checkpoints ({failed} refused: their trail does not verify)");
            store.close().await;
            Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(2) })
        }
        AuditCommand::Bench { events, concurrency } => bench(db, events, concurrency).await,
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default()
}

/// The archive's entries as a CSV table.
fn csv_from_archive(archive: &[u8], out: &mut dyn std::io::Write) -> anyhow::Result<u64> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record([
        "seq",
        "time",
        "actor_id",
        "subject_id",
        "session_id",
        "ip",
        "user_agent",
        "request_id",
        "action",
        "module",
        "record_id",
        "target",
        "outcome",
        "detail",
        "hash",
    ])?;
    let mut n = 0;
    for line in archive.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let v: serde_json::Value = serde_json::from_slice(line)?;
        if v["type"] != "entry" {
            continue;
        }
        n += 1;
        let s = |k: &str| match &v[k] {
            serde_json::Value::Null => String::new(),
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let time = v["at"].as_i64().map(crm_store::format_audit_time).unwrap_or_default();
        w.write_record([
            s("seq"),
            time,
            s("actor_id"),
            s("subject_id"),
            s("session_id"),
            s("ip"),
            s("user_agent"),
            s("request_id"),
            s("action"),
            s("module"),
            s("record_id"),
            s("target"),
            s("outcome"),
            s("detail"),
            s("hash"),
        ])?;
    }
    w.flush()?;
    Ok(n)
}

async fn verify(
    db: &DbArgs,
    public_key: Option<PathBuf>,
    archive: Option<PathBuf>,
    offline: bool,
    organization: Option<String>,
) -> anyhow::Result<ExitCode> {
    let keys = match &public_key {
        Some(p) => Some(vec![read_key(p)?]),
        None => None,
    };
    let mut intact = true;
    let archive_report = match &archive {
        None => None,
        Some(path) => {
            let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
            let (bar, progress) = progress_bar("archive");
            let r = crm_store::verify_archive(std::io::BufReader::new(file), keys.as_deref(), Some(progress))?;
            bar.finish_and_clear();
            let a = &r.summary;
            match &r.problem {
                None => println!(
                    "archive {} ({}, seq {} to {}, {} entries, {} checkpoints): intact{}",
                    path.display(),
                    a.slug,
                    a.from_seq,
                    a.to_seq,
                    a.entries,
                    a.checkpoints,
                    if r.anchored { "" } else { " (its first entry follows an earlier archive)" }
                ),
                Some(p) => {
                    intact = false;
                    println!("archive {}: {}", path.display(), describe(p));
                }
            }
            if keys.is_none() {
                println!(
                    "note: checkpoint signatures were checked against the keys the archive lists; pass --public-key for a check that does not trust them"
                );
            }
            Some(r)
        }
    };
    if offline {
        return Ok(if intact { ExitCode::SUCCESS } else { ExitCode::from(2) });
    }
    let store = db.open().await?;
    let sys = store.unscoped_system_access();
    let mut orgs = sys.organizations().await?;
    if let Some(slug) = &organization {
        orgs.retain(|(_, s)| s == slug);
        if orgs.is_empty() {
            bail!("no organization {slug:?}");
        }
    }
    for (org, slug) in orgs {
        let (bar, progress) = progress_bar(&slug);
        let opts = VerifyOptions { keys: keys.clone(), progress: Some(progress), ..Default::default() };
        let report = sys.verify_audit_trail(org, &opts).await?;
        bar.finish_and_clear();
        let mut problem = report.problem.clone();
        if problem.is_none()
            && let Some(a) = archive_report.as_ref().filter(|a| a.summary.org_id == org && a.problem.is_none())
        {
            problem = sys.audit_cross_check(&report, a).await?;
        }
        match problem {
            None => println!(
                "{slug}: audit chain intact ({} entries, seq {} to {}, signed through seq {}, {} checkpoints checked against {})",
                report.entries,
                report.first_seq,
                report.last_seq,
                report.signed_through,
                report.checkpoints,
                match report.key_source {
                    crm_store::KeySource::Given => "the given public key",
                    crm_store::KeySource::Database => "the keys registered in the database",
                }
            ),
            Some(p) => {
                intact = false;
                println!("{slug}: {}", describe(&p));
            }
        }
    }
    store.close().await;
    Ok(if intact { ExitCode::SUCCESS } else { ExitCode::from(2) })
}

async fn bench(db: &DbArgs, events: u64, concurrency: usize) -> anyhow::Result<ExitCode> {
    use std::sync::atomic::{AtomicU64, Ordering};
    let store = db.open().await?;
    let sys = store.unscoped_system_access();
    let slug = format!("audit-bench-{}", now_ms());
    let org = sys.create_organization(&slug, "Audit benchmark", &crm_policy::PolicyConfig::default()).await?;
    println!("engine {:?}, organization {slug}: {events} events, {concurrency} concurrent appenders", store.engine());
    let left = Arc::new(AtomicU64::new(events));
    let (started, cpu) = (Instant::now(), cpu_seconds());
    let mut tasks = Vec::new();
    for t in 0..concurrency {
        let store = store.clone();
        let left = Arc::clone(&left);
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1)).is_ok() {
                let ids: Vec<i64> = (0..20).map(|i| (n as i64) * 20 + i).collect();
                let e = AuditEntry::new(org, Some(1 + t as i64 % 50), "record.list")
                    .module(crm_domain::Module::Customers)
                    .session(1 + t as i64)
                    .detail(
                        serde_json::json!({"query": {"filters": [], "q": null, "limit": 20}, "rows": 20, "ids": ids}),
                    );
                store.append_audit(e).await?;
                n += 1;
            }
            Ok::<u64, crm_store::StoreError>(n)
        }));
    }
    for t in tasks {
        t.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "append: {events} durable events in {secs:.2} s = {:.0} events/s{}",
        events as f64 / secs,
        cpu_note(cpu, events)
    );
    let (started, cpu) = (Instant::now(), cpu_seconds());
    let report = sys.verify_audit_trail(org, &VerifyOptions::default()).await?;
    let secs = started.elapsed().as_secs_f64();
    if let Some(p) = &report.problem {
        bail!("the benchmark trail does not verify: {}", describe(p));
    }
    println!(
        "verify: {} events in {secs:.2} s = {:.0} events/s{}",
        report.entries,
        report.entries as f64 / secs,
        cpu_note(cpu, report.entries)
    );
    store.close().await;
    Ok(ExitCode::SUCCESS)
}

/// CPU time of this process so far (user and system, every thread), where the system tells it (Linux).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let (user, system): (f64, f64) = (fields.next()?.parse().ok()?, fields.next()?.parse().ok()?);
    // Clock ticks: 100 a second on Linux.
    Some((user + system) / 100.0)
}

/// `, 1.23 s CPU (4.5 µs per event)` since `before`: on a shared machine the CPU cost per event is steadier than
/// the rate. The database server's CPU is not included (PostgreSQL).
fn cpu_note(before: Option<f64>, events: u64) -> String {
    match (before, cpu_seconds()) {
        (Some(b), Some(a)) if events > 0 => {
            format!(", {:.2} s CPU in this process ({:.1} µs per event)", a - b, (a - b) * 1e6 / events as f64)
        }
        _ => String::new(),
    }
}
