//! The store's one integration-test binary (one binary keeps link time down). Runs on SQLite always and on
//! PostgreSQL when CRM_TEST_DATABASE_URL is set.
//!
//! - `scenarios`: storage behaviour through `Scoped` and `SystemAccess`, on every engine of `testdb::engines()`.
//! - `audit`: the audit trail: events from real operations, atomicity, tampering named by position, concurrent
//!   appenders, the permission-filtered view, checkpoints, archives and purges.
//! - `auth`: sign-in and account security: lockout and limits across processes, TOTP and recovery codes,
//!   session revocation, API tokens, network and time policies, password policy.
//! - `counts`: the maintained record counts equal `COUNT(*)` after every write path, on every engine.
//! - `monitor`: two detectors on one database raise each incident once; inline guards fail closed.
//! - `differential`: random organizations; the SQL list filter and the in-memory decision must agree on every
//!   (user, action, record).

// Table-driven tests spell out their row types inline on purpose.
#![allow(clippy::type_complexity)]

#[path = "../../testkit/src/db.rs"]
mod testdb;

#[path = "store/support.rs"]
mod support;

#[path = "store/audit.rs"]
mod audit;
#[path = "store/auth.rs"]
mod auth;
#[path = "store/counts.rs"]
mod counts;
#[path = "store/csv.rs"]
mod csv;
#[path = "store/differential.rs"]
mod differential;
#[path = "store/monitor.rs"]
mod monitor;
#[path = "store/scenarios.rs"]
mod scenarios;
