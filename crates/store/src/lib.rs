//! The only crate that knows SQL. It owns the schema and migrations, loads and caches each organization's policy
//! by version, and exposes record data only through [`Scoped`], a handle bound to one signed-in user's compiled
//! [`Access`]: every query it runs carries the organization and the user's policy predicate. The one unscoped path
//! is [`SystemAccess`], used for sign-in, the demo seed and administration, and named so it stands out in review.

mod admin;
mod audit;
mod audit_query;
mod audit_sign;
mod audit_verify;
pub mod auth;
mod baseline;
mod bulk;
mod csv_io;
mod db;
mod directory;
mod id_cursor;
mod migrate;
mod monitor;
mod monitor_detect;
mod monitor_rules;
mod records;
mod render;
mod report;
mod sqlite_inline;
mod system;
mod webhook;

pub use admin::{AccessChange, DepartmentSummary, ModulePermissions, PolicyChange, UserPatch, UserSummary, WhoCanSee};
pub use audit::{AuditEntry, RequestContext, StoredEntry, current_request_context, with_request_context};
pub use audit_query::{AuditEvent, AuditPage, AuditQuery, format_audit_time, parse_audit_time};
pub use audit_sign::{AuditPublicKey, AuditSigner};
pub use audit_verify::{
    ArchiveReport, ArchiveSummary, AuditProblem, Checkpoint, KeySource, Progress, PurgeReport, TamperKind,
    VerifyOptions, VerifyReport, verify_archive,
};
pub use auth::{
    ApiTokenInfo, AuthOutcome, Authenticated, ClientInfo, Credential, MfaStatus, NewApiToken, Restriction,
    SecuritySettings, SessionInfo, SignInFailure, SignInOutcome, SignInRecord, SignInRequest, SignedIn, TotpEnrollment,
    UserSecurity,
};
pub use bulk::{BulkLoad, BulkParent, BulkRecord, BulkUser};
pub use csv_io::{CSV_MODULES, ImportReport};
pub use db::{DatabaseUrl, Engine};
pub use monitor::{
    Alert, AlertPage, AlertQuery, AlertViewer, BaselineSettings, BlockKind, MonitorConfig, RULE_NAMES, ResponseKind,
    Rule, SECRET_PLACEHOLDER, Severity, Webhook, default_rule,
};
pub use monitor_detect::MonitorHandle;
pub use records::{CountPlan, FieldFilter, ListPlan, ListQuery, LookupItem, Page, RecordOut, Scoped, Sharing};
pub use report::ReportRow;
pub use system::{NewUser, SignIn, SystemAccess};
pub use webhook::{WebhookTrust, WebhookTrustError, hmac_sha256_hex};

use crm_domain::{OrgId, UserId, ValueError};
use crm_policy::{Access, Directory, PolicyConfig};
use db::Db;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The record does not exist or the caller may not read it: the two are indistinguishable on purpose.
    #[error("not found")]
    NotFound,
    /// The caller may read the record (or use the module) but not do this.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// Input refused, field by field.
    #[error("invalid input")]
    Invalid(Vec<ValueError>),
    /// A query parameter (filter, sort, cursor) refused.
    #[error("{0}")]
    BadQuery(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("configuration: {0}")]
    Config(String),
    /// Refused before it ran by an inline monitoring rule (nothing was written).
    #[error("blocked: {1}")]
    Blocked(monitor::BlockKind, String),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

impl StoreError {
    /// The database could not serve the request in time (pool exhausted): worth a 503 and a retry.
    pub fn is_busy(&self) -> bool {
        matches!(self, StoreError::Db(sqlx::Error::PoolTimedOut))
    }
    pub fn invalid(field: &str, message: impl Into<String>) -> StoreError {
        StoreError::Invalid(vec![ValueError::new(field, message)])
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default()
}

/// An organization's policy at one version.
pub(crate) struct OrgPolicy {
    pub version: i64,
    pub config: Arc<PolicyConfig>,
    pub directory: Arc<Directory>,
}

/// The signed-in user a request acts for.
#[derive(Clone, Debug)]
pub struct Principal {
    pub org: OrgId,
    pub user: UserId,
    pub session_id: i64,
    pub access: Arc<Access>,
    pub policy_version: i64,
}

#[derive(Default)]
struct Cache {
    orgs: HashMap<OrgId, Arc<OrgPolicy>>,
    access: HashMap<(OrgId, UserId), (i64, Arc<Access>)>,
}

/// The data store over SQLite or PostgreSQL.
#[derive(Clone)]
pub struct Store {
    db: Db,
    cache: Arc<Mutex<Cache>>,
    /// The audit group committer (data access and other events outside a change's transaction).
    audit: Arc<audit::AuditWriter>,
    /// Monitoring state of this process (rules cache, live feed).
    monitor: Arc<monitor::Shared>,
}

impl Store {
    /// Connects and runs migrations.
    pub async fn open(url: &DatabaseUrl) -> Result<Store, StoreError> {
        let db = Db::connect(url).await?;
        migrate::run(&db).await?;
        let audit = Arc::new(audit::AuditWriter::start(db.clone())?);
        Ok(Store {
            db,
            cache: Arc::new(Mutex::new(Cache::default())),
            audit,
            monitor: Arc::new(monitor::Shared::new()),
        })
    }

    pub fn engine(&self) -> Engine {
        self.db.engine
    }

    /// Closes the pool (and the audit group committer's connection), waiting for connections in use.
    pub async fn close(&self) {
        self.audit.close().await;
        self.db.pool.close().await;
    }

    /// Cheap liveness check for `/readyz`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut q = self.db.sql();
        q.push("SELECT 1");
        q.fetch_one(&self.db.pool).await.map(|_| ())
    }

    /// The scoped handle for a signed-in principal: the only way to reach records.
    pub fn scoped(&self, principal: Principal) -> Scoped<'_> {
        Scoped::new(self, principal)
    }

    /// The audited system path: sign-in, seeding, administration. Not for request handlers that show records.
    pub fn unscoped_system_access(&self) -> SystemAccess<'_> {
        SystemAccess::new(self)
    }

    /// The compiled access of `user` at `version` of the organization's policy, compiled at most once per
    /// version and process.
    pub(crate) async fn access_at(&self, org: OrgId, user: UserId, version: i64) -> Result<Arc<Access>, StoreError> {
        if let Some((v, a)) = self.lock().access.get(&(org, user))
            && *v == version
        {
            return Ok(Arc::clone(a));
        }
        let policy = self.org_policy(org, version).await?;
        let access = Arc::new(Access::compile(&policy.config, Arc::clone(&policy.directory), user));
        self.lock().access.insert((org, user), (policy.version, Arc::clone(&access)));
        Ok(access)
    }

    /// The organization's policy at its current version: one small query, and the cached snapshot unless a change
    /// landed since it was loaded (a full reload of a 10,000-user directory costs ~100 ms).
    pub(crate) async fn current_org_policy(&self, org: OrgId) -> Result<Arc<OrgPolicy>, StoreError> {
        let mut q = self.db.sql();
        q.push("SELECT policy_version FROM organizations WHERE id = ").bind(org);
        let version: i64 =
            sqlx::Row::try_get(&q.fetch_optional(&self.db.pool).await?.ok_or(StoreError::NotFound)?, "policy_version")?;
        self.org_policy(org, version).await
    }

    pub(crate) async fn org_policy(&self, org: OrgId, version: i64) -> Result<Arc<OrgPolicy>, StoreError> {
        if let Some(p) = self.lock().orgs.get(&org)
            && p.version == version
        {
            return Ok(Arc::clone(p));
        }
        let policy = Arc::new(directory::load(&self.db, org).await?);
        let mut cache = self.lock();
        if policy.version != version {
            // Another change landed while loading: drop this user's stale compiled access; the loaded snapshot is
            // consistent in itself and newer than `version`.
            cache.access.retain(|(o, _), _| *o != org);
        }
        cache.orgs.insert(org, Arc::clone(&policy));
        Ok(policy)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        // A poisoned cache only means a panic elsewhere while holding it; its contents are still valid snapshots.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}
