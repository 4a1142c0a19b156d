//! The store's one integration-test binary (one binary keeps link time down). Runs on SQLite always and on
//! PostgreSQL when CRM_TEST_DATABASE_URL is set.
//!
//! - `scenarios`: storage behaviour through `Scoped` and `SystemAccess`, on every engine of `testdb::engines()`.
//! - `differential`: random organizations; the SQL list filter and the in-memory decision must agree on every
//!   (user, action, record).

#[path = "../../testkit/src/db.rs"]
mod testdb;

#[path = "store/support.rs"]
mod support;

#[path = "store/differential.rs"]
mod differential;
#[path = "store/scenarios.rs"]
mod scenarios;
#[path = "store/csv.rs"]
mod csv;
