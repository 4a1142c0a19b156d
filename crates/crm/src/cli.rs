//! Command-line interface. Every subcommand that touches data takes `--data-dir` / `--database-url`.

use crate::demo;
use crate::templates;
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
    },
    /// Create the demo organization (if missing) and exit.
    Demo {
        /// Number of demo customers (other records scale with it).
        #[arg(long, default_value_t = 1200)]
        customers: usize,
    },
    /// Audit trail tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Check every link of every organization's audit chain; exit code 0 only when intact.
    Verify,
}

impl DbArgs {
    pub fn url(&self) -> anyhow::Result<DatabaseUrl> {
        if let Some(url) = &self.database_url {
            return DatabaseUrl::parse(url).map_err(|e| anyhow::anyhow!("{e}"));
        }
        std::fs::create_dir_all(&self.data_dir).with_context(|| format!("creating data folder {}", self.data_dir.display()))?;
        Ok(DatabaseUrl::sqlite_file(&self.data_dir.join("crm.db")))
    }

    pub async fn open(&self) -> anyhow::Result<Store> {
        let url = self.url()?;
        Store::open(&url).await.map_err(|e| anyhow::anyhow!("opening {url}: {e}"))
    }
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CRM_LOG").unwrap_or_else(|_| "info,tower_http=warn,sqlx=warn".into());
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
        Command::Serve { listen, demo } => serve(&cli.db, listen, demo).await,
        Command::Demo { customers } => {
            let store = cli.db.open().await?;
            let org = demo::ensure_demo(&store, customers).await?;
            print_demo_sign_ins(None);
            println!("demo organization id {}", org.org);
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit { command: AuditCommand::Verify } => {
            let store = cli.db.open().await?;
            let sys = store.unscoped_system_access();
            let mut intact = true;
            for (org, slug) in sys.organizations().await? {
                match sys.verify_audit(org).await? {
                    None => println!("{slug}: audit chain intact"),
                    Some((seq, problem)) => {
                        intact = false;
                        println!("{slug}: FIRST BAD ENTRY seq {seq}: {problem}");
                    }
                }
            }
            Ok(if intact { ExitCode::SUCCESS } else { ExitCode::from(2) })
        }
    }
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
    let org = sys.create_organization("default", "My organization", &templates::standard_policy()).await?;
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
    println!("One-time password (shown once, change it at first sign-in): {password}\n");
    Ok(())
}

fn hex_password() -> String {
    let bytes: [u8; 12] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn serve(db: &DbArgs, listen: SocketAddr, with_demo: bool) -> anyhow::Result<ExitCode> {
    let store = db.open().await?;
    if with_demo {
        demo::ensure_demo(&store, 1200).await?;
    } else {
        first_start(&store).await?;
    }
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("listening on {listen}"))?;
    let local = listener.local_addr()?;
    let state = crm_api::AppState { store: store.clone(), metrics: crm_api::metrics_handle() };
    let app = crm_api::router(state);
    if with_demo {
        print_demo_sign_ins(Some(&format!("http://{local}")));
    }
    tracing::info!(%local, engine = ?store.engine(), "serving");
    crm_api::serve(listener, app, shutdown_signal(), Duration::from_secs(30)).await?;
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

