//! Command-line interface. Every subcommand that touches data takes `--data-dir` / `--database-url`.

use crate::templates;
use crate::{admin_cli, demo};
use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use crm_store::{DatabaseUrl, NewUser, Store};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(name = "crm", version, about = "A CRM whose heart is permission management")]
pub struct Cli {
    #[command(flatten)]
    pub db: DbArgs,
    /// Log as JSON lines (for log shippers) instead of human-readable text.
    #[arg(long, global = true)]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct DbArgs {
    /// Folder for the SQLite database (created if missing). Ignored with --database-url.
    #[arg(long, global = true, env = "CRM_DATA_DIR", default_value = "./crm-data")]
    pub data_dir: PathBuf,
    /// postgres://user@host/db (or sqlite://path) instead of SQLite in --data-dir.
    #[arg(long, global = true, env = "CRM_DATABASE_URL")]
    pub database_url: Option<String>,
    /// The audit checkpoint signing key (Ed25519), kept outside the database; created on first start.
    /// Default: `<data-dir>/audit-signing.key`.
    #[arg(long, global = true, env = "CRM_AUDIT_KEY", value_name = "FILE")]
    pub audit_key: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start the server.
    Serve {
        /// Address to listen on.
        #[arg(long, env = "CRM_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Create the demo organization (if missing) and print its sign-ins.
        #[arg(long)]
        demo: bool,
        /// A reverse proxy (CIDR or address) whose X-Forwarded-For and X-Forwarded-Proto are believed; repeatable.
        /// Without one, the client address is the TCP peer's.
        #[arg(long = "trusted-proxy", env = "CRM_TRUSTED_PROXIES", value_delimiter = ',', value_name = "CIDR")]
        trusted_proxy: Vec<String>,
        /// Always mark session cookies Secure (TLS is terminated in front of the server without X-Forwarded-Proto).
        #[arg(long, env = "CRM_SECURE_COOKIES")]
        secure_cookies: bool,
        /// PEM file of extra CA certificates that https:// monitoring webhooks are checked against (a private company
        /// CA), beside the compiled-in Mozilla roots. Read once at start.
        #[arg(long, env = "CRM_WEBHOOK_CA_FILE", value_name = "FILE")]
        webhook_ca_file: Option<PathBuf>,
    },
    /// Create the demo organization (if missing) and exit.
    Demo {
        /// Number of demo customers (other records scale with it).
        #[arg(long, default_value_t = 1200)]
        customers: usize,
    },
    /// Generate the benchmark organization `bench` (deterministic by seed) into an empty database.
    Generate {
        /// s: 10,000 customers; m: 100,000; l: 1,000,000 customers, 2,000,000 contacts, 10,000 users.
        #[arg(long, value_enum, default_value = "s")]
        scale: crate::generate::Scale,
        #[arg(long, default_value_t = 2026)]
        seed: u64,
    },
    /// Audit trail tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Account recovery for operators with access to the database (break-glass).
    Account {
        #[command(subcommand)]
        command: AccountCommand,
    },
    /// Import records from a CSV file, acting with a user's permissions (all rows or none).
    Import(ImportArgs),
    /// Export as CSV the records a user may export.
    Export(ExportArgs),
    /// Policy as code: export the access configuration, or apply a file (atomically; `--dry-run` previews).
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// May a user do an action on a record, and which rule path decides?
    Explain {
        /// The user whose access is explained.
        #[arg(long)]
        user: String,
        /// customers, contacts, leads, opportunities, tickets or activities.
        #[arg(long)]
        module: String,
        /// The record id.
        #[arg(long)]
        record: i64,
        /// view, create, edit, delete, export, import, transfer or share.
        #[arg(long, default_value = "view")]
        action: String,
        #[command(flatten)]
        acting: ActingArgs,
    },
}

/// Who a command acts as: the same permission checks as the API, audited as that user.
#[derive(Args, Debug, Clone)]
pub struct ActingArgs {
    /// Organization slug (may be omitted when the database holds one organization).
    #[arg(long)]
    pub organization: Option<String>,
    /// The user whose rights the command uses.
    #[arg(long = "as", default_value = "admin")]
    pub as_user: String,
}

#[derive(Subcommand, Debug)]
pub enum AccountCommand {
    /// Give a user a one-time password (printed once, changed at sign-in), lift their lockout and lock, remove
    /// their second factor, and end their sessions and API tokens. Audited.
    Recover {
        /// The username.
        #[arg(long)]
        user: String,
        /// Organization slug (may be omitted when the database holds one organization).
        #[arg(long)]
        organization: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Write the access configuration (roles, scopes, field permissions, defaults, partitions and grants, sharing
    /// and restriction rules, groups) as pretty JSON.
    Export {
        /// Write to this file instead of standard output.
        #[arg(long)]
        output: Option<PathBuf>,
        #[command(flatten)]
        acting: ActingArgs,
    },
    /// Apply a policy file atomically, printing who gains and loses access.
    Apply {
        file: PathBuf,
        /// Only print what would change.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        acting: ActingArgs,
    },
}

pub use crate::audit_cli::AuditCommand;

impl DbArgs {
    /// The audit signing key file: `--audit-key`, or `audit-signing.key` in the data folder.
    pub fn audit_key_path(&self) -> PathBuf {
        self.audit_key.clone().unwrap_or_else(|| self.data_dir.join("audit-signing.key"))
    }

    pub fn url(&self) -> anyhow::Result<DatabaseUrl> {
        if let Some(url) = &self.database_url {
            return DatabaseUrl::parse(url).map_err(|e| anyhow::anyhow!("{e}"));
        }
        std::fs::create_dir_all(&self.data_dir)
            .with_context(|| format!("creating data folder {}", self.data_dir.display()))?;
        Ok(DatabaseUrl::sqlite_file(&self.data_dir.join("crm.db")))
    }

    pub async fn open(&self) -> anyhow::Result<Store> {
        let url = self.url()?;
        Store::open(&url).await.map_err(|e| anyhow::anyhow!("opening {url}: {e}"))
    }
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CRM_LOG")
        .unwrap_or_else(|_| "info,tower_http=warn,sqlx=warn".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

pub fn run(cli: Cli) -> ExitCode {
    init_logging(cli.log_json);
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { listen, demo, trusted_proxy, secure_cookies, webhook_ca_file } => {
            // Read before anything starts: a wrong path stops the server here, not at the first alert.
            let webhook_trust = match &webhook_ca_file {
                Some(path) => crm_store::WebhookTrust::with_ca_file(path).context("--webhook-ca-file")?,
                None => crm_store::WebhookTrust::mozilla_roots(),
            };
            let mut net = crm_api::client::NetConfig { trusted_proxies: Vec::new(), secure_cookies };
            for p in &trusted_proxy {
                net.trusted_proxies
                    .push(crm_store::auth::parse_network(p).map_err(|e| anyhow::anyhow!("--trusted-proxy: {e}"))?);
            }
            serve(&cli.db, listen, demo, net, &webhook_trust).await
        }
        Command::Demo { customers } => {
            let store = cli.db.open().await?;
            let org = demo::ensure_demo(&store, customers).await?;
            print_demo_sign_ins(None);
            println!("demo organization id {}", org.org);
            Ok(ExitCode::SUCCESS)
        }
        Command::Generate { scale, seed } => generate(&cli.db, scale, seed).await,
        Command::Import(args) => import_csv(&cli.db, &args).await,
        Command::Policy { command } => {
            let store = cli.db.open().await?;
            match command {
                PolicyCommand::Export { output, acting } => {
                    let p = admin_cli::principal(&store, acting.organization.as_deref(), &acting.as_user).await?;
                    let text = admin_cli::export(&store, p).await?;
                    match output {
                        Some(path) => {
                            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?
                        }
                        None => print!("{text}"),
                    }
                }
                PolicyCommand::Apply { file, dry_run, acting } => {
                    let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
                    let p = admin_cli::principal(&store, acting.organization.as_deref(), &acting.as_user).await?;
                    admin_cli::apply(&store, p, &text, dry_run).await?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Explain { user, module, record, action, acting } => {
            let store = cli.db.open().await?;
            let p = admin_cli::principal(&store, acting.organization.as_deref(), &acting.as_user).await?;
            let allowed = admin_cli::explain(&store, p, &user, &module, record, &action).await?;
            Ok(if allowed { ExitCode::SUCCESS } else { ExitCode::from(3) })
        }
        Command::Export(args) => export_csv(&cli.db, &args).await,
        Command::Audit { command } => crate::audit_cli::run(&cli.db, command).await,
        Command::Account { command: AccountCommand::Recover { user, organization } } => {
            let store = cli.db.open().await?;
            let p = act_as(&store, organization.as_deref(), &user).await?;
            let password = store.unscoped_system_access().recover_account(p.org, p.user).await?;
            println!("{user}: one-time password (shown once, change it at sign-in): {password}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn generate(db: &DbArgs, scale: crate::generate::Scale, seed: u64) -> anyhow::Result<ExitCode> {
    use indicatif::{ProgressBar, ProgressStyle};
    let store = db.open().await?;
    let started = std::time::Instant::now();
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>9} [{bar:40}] {pos}/{len} ({per_sec}, {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let progress = |phase: &str, done: u64, total: u64| {
        bar.set_prefix(phase.to_string());
        bar.set_length(total);
        bar.set_position(done);
    };
    let result = crate::generate::generate(&store, scale, seed, &progress).await;
    bar.finish_and_clear();
    let g = result?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "generated organization {:?} (id {}) at scale {scale:?}, seed {seed}, in {secs:.1} s: {} users, {} departments, {:?}, {} shares, {} team memberships",
        crate::generate::BENCH_SLUG,
        g.org,
        g.users,
        g.departments,
        g.records,
        g.shares,
        g.team
    );
    println!("every user's password: {}", crate::generate::BENCH_PASSWORD);
    store.close().await;
    Ok(ExitCode::SUCCESS)
}

fn print_demo_sign_ins(url: Option<&str>) {
    if let Some(url) = url {
        println!("\nCRM demo is running: open {url}  (API docs: {url}/api/docs)\n");
    }
    println!("Demo sign-ins (demo mode only):");
    for p in demo::PERSONAS {
        println!("  {:<14} {:<18} {} — sees {}", p.username, demo::password_for(p.username), p.name, p.sees);
    }
    println!();
}

/// Outside demo mode, the first start creates the organization's administrator with a one-time password, printed
/// once and never stored in clear.
async fn first_start(store: &Store) -> anyhow::Result<()> {
    let sys = store.unscoped_system_access();
    if sys.organization_count().await? > 0 {
        return Ok(());
    }
    // A real organization starts with a second factor required of administrators (the demo does not).
    let mut policy = templates::standard_policy();
    for role in policy.roles.iter_mut().filter(|r| r.id == templates::ROLE_ADMIN) {
        role.require_mfa = true;
    }
    let org = sys.create_organization("default", "My organization", &policy).await?;
    let root = sys.create_department(org, None, "总公司 Headquarters").await?;
    let password = hex_password();
    sys.create_user(
        org,
        NewUser {
            username: "admin".into(),
            display_name: "Administrator".into(),
            email: None,
            password: password.clone(),
            manager: None,
            departments: vec![root],
            roles: vec![templates::ROLE_ADMIN],
            must_change_password: true,
        },
    )
    .await?;
    println!("\nFirst start: created organization \"default\" with administrator `admin`.");
    println!("One-time password (shown once, change it at first sign-in): {password}");
    println!(
        "Administrators need a second factor: after the password change, enrol an authenticator app\n(POST /api/v1/me/mfa/totp, then /api/v1/me/mfa/totp/confirm).\n"
    );
    Ok(())
}

fn hex_password() -> String {
    let bytes: [u8; 12] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn serve(
    db: &DbArgs,
    listen: SocketAddr,
    with_demo: bool,
    net: crm_api::client::NetConfig,
    webhook_trust: &crm_store::WebhookTrust,
) -> anyhow::Result<ExitCode> {
    let store = db.open().await?;
    store.set_webhook_trust(webhook_trust).context("webhook client")?;
    if with_demo {
        demo::ensure_demo(&store, 1200).await?;
    } else {
        first_start(&store).await?;
    }
    // The audit checkpoint signer: its key lives outside the database.
    let signer = crate::audit_cli::start_signing(&store, &db.audit_key_path()).await?;
    let checkpointer = crate::audit_cli::spawn_checkpointer(store.clone(), std::sync::Arc::clone(&signer));
    // Real-time monitoring: this process's detector and live-feed poller (every process runs both; see
    // ARCHITECTURE.md, "Monitoring").
    let monitor = store.start_monitor();
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("listening on {listen}"))?;
    let local = listener.local_addr()?;
    let state = crm_api::AppState { store: store.clone(), metrics: crm_api::metrics_handle() };
    let app = crm_api::router_with_ui(state, net, crm_web::routes());
    if with_demo {
        print_demo_sign_ins(Some(&format!("http://{local}")));
    }
    tracing::info!(%local, engine = ?store.engine(), "serving");
    crm_api::serve(listener, app, shutdown_signal(), Duration::from_secs(30)).await?;
    checkpointer.abort();
    drop(monitor);
    // A last checkpoint, so a clean stop leaves the whole trail signed.
    if let Err(e) = store.unscoped_system_access().audit_checkpoint_all(&signer).await {
        tracing::warn!(error = %e, "final audit checkpoint failed");
    }
    store.close().await;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down: finishing in-flight requests");
}

// ---- CSV import and export -------------------------------------------------------------------------------------

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The module to import into.
    #[arg(value_parser = ["customers", "contacts"])]
    pub module: String,
    /// The CSV file: UTF-8 (a byte-order mark is fine), a header row of field names, one record per row.
    pub file: PathBuf,
    /// The user whose permissions apply (import permission, field permissions, owners they may assign).
    #[arg(long = "as", value_name = "USERNAME")]
    pub as_user: String,
    /// The organization's slug; needed when the database holds several.
    #[arg(long, value_name = "SLUG")]
    pub organization: Option<String>,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The module to export.
    #[arg(value_parser = ["customers", "contacts"])]
    pub module: String,
    /// The user whose permissions apply (export permission and scope, field permissions).
    #[arg(long = "as", value_name = "USERNAME", default_value = "admin")]
    pub as_user: String,
    /// The organization's slug; needed when the database holds several.
    #[arg(long, value_name = "SLUG")]
    pub organization: Option<String>,
    /// Write the CSV to this file instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Text search, as `q` of the list API.
    #[arg(long)]
    pub q: Option<String>,
    /// A filter `field:op:value` as in the list API (op: eq, ne, in, not_in, gt, gte, lt, lte); repeatable.
    #[arg(long = "filter", value_name = "FIELD:OP:VALUE")]
    pub filters: Vec<String>,
    /// Start the file with a UTF-8 byte-order mark, for spreadsheets that need it to read Chinese text.
    #[arg(long)]
    pub bom: bool,
}

/// The principal of `username` in the organization named by `slug` (or the only one).
async fn act_as(store: &Store, slug: Option<&str>, username: &str) -> anyhow::Result<crm_store::Principal> {
    let sys = store.unscoped_system_access();
    let org = match slug {
        Some(slug) => {
            sys.organization_by_slug(slug).await?.ok_or_else(|| anyhow::anyhow!("no organization {slug:?}"))?
        }
        None => match sys.organizations().await?.as_slice() {
            [(id, _)] => *id,
            [] => anyhow::bail!("the database holds no organization yet"),
            several => {
                let slugs: Vec<&str> = several.iter().map(|(_, s)| s.as_str()).collect();
                anyhow::bail!(
                    "the database holds several organizations ({}): choose one with --organization SLUG",
                    slugs.join(", ")
                )
            }
        },
    };
    let user = sys.user_ids(org).await?.into_iter().find(|(u, _)| u == username).map(|(_, id)| id);
    let user = user.ok_or_else(|| anyhow::anyhow!("no user {username:?} in this organization"))?;
    Ok(sys.principal_for(org, user).await?)
}

fn csv_module(name: &str) -> anyhow::Result<crm_domain::Module> {
    name.parse().map_err(|_| anyhow::anyhow!("unknown module {name}"))
}

/// Prints a refused import or export; validation errors one per line, with their line numbers.
fn print_store_error(what: &str, username: &str, module: crm_domain::Module, e: &crm_store::StoreError) {
    use crm_store::StoreError;
    match e {
        StoreError::Invalid(errors) => {
            eprintln!(
                "error: {what} refused, nothing was written ({} problem{}):",
                errors.len(),
                if errors.len() == 1 { "" } else { "s" }
            );
            for err in errors {
                eprintln!("  {}: {}", err.field, err.message);
            }
        }
        StoreError::NotFound => eprintln!("error: {module} does not exist for {username}"),
        StoreError::Forbidden(m) => eprintln!("error: {username}: {m}"),
        other => eprintln!("error: {what} failed: {other}"),
    }
}

async fn import_csv(db: &DbArgs, args: &ImportArgs) -> anyhow::Result<ExitCode> {
    use indicatif::{ProgressBar, ProgressStyle};
    let module = csv_module(&args.module)?;
    let bytes = std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let store = db.open().await?;
    let principal = act_as(&store, args.organization.as_deref(), &args.as_user).await?;
    let scoped = store.scoped(principal);

    // A spinner while the rows are checked, then a bar while they are inserted (hidden when stderr is no terminal).
    let bar = ProgressBar::new_spinner();
    bar.set_message(format!("checking {}", args.file.display()));
    bar.enable_steady_tick(Duration::from_millis(120));
    let style = ProgressStyle::with_template("importing {prefix} [{bar:40}] {pos}/{len} rows ({eta})")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let progress = |done: usize, total: usize| {
        if bar.length() != Some(total as u64) {
            bar.set_length(total as u64);
            bar.set_prefix(module.as_str());
            bar.set_style(style.clone());
        }
        bar.set_position(done as u64);
    };
    let result = scoped.import_csv(module, &bytes, Some(&progress)).await;
    bar.finish_and_clear();
    store.close().await;
    match result {
        Ok(report) => {
            println!(
                "imported {} records into {module} from {} as {}",
                report.created,
                args.file.display(),
                args.as_user
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            print_store_error("the import was", &args.as_user, module, &e);
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Percent-encodes a query-string component.
fn query_component(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn export_csv(db: &DbArgs, args: &ExportArgs) -> anyhow::Result<ExitCode> {
    let module = csv_module(&args.module)?;
    // The list API's own parser, so the CLI accepts exactly what `?q=&filter=` accepts.
    let mut raw: Vec<String> = args.filters.iter().map(|f| format!("filter={}", query_component(f))).collect();
    raw.extend(args.q.iter().map(|q| format!("q={}", query_component(q))));
    let q = crm_api::routes::records::parse_list_query(module, Some(&raw.join("&")))
        .map_err(|e| anyhow::anyhow!("{}", e.detail))?;
    let store = db.open().await?;
    let principal = act_as(&store, args.organization.as_deref(), &args.as_user).await?;
    let result = store.scoped(principal).export_csv(module, &q).await;
    store.close().await;
    let (text, rows) = match result {
        Ok(r) => r,
        Err(e) => {
            print_store_error("the export was", &args.as_user, module, &e);
            return Ok(ExitCode::FAILURE);
        }
    };
    let bom = if args.bom { "\u{feff}" } else { "" };
    match &args.output {
        Some(path) => {
            std::fs::write(path, format!("{bom}{text}")).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("exported {rows} records of {module} to {} as {}", path.display(), args.as_user);
        }
        None => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            out.write_all(bom.as_bytes())
                .and_then(|()| out.write_all(text.as_bytes()))
                .and_then(|()| out.flush())
                .context("writing the CSV")?;
            eprintln!("exported {rows} records of {module} as {}", args.as_user);
        }
    }
    Ok(ExitCode::SUCCESS)
}
