//! The store's one integration-test binary (one binary keeps link time down). Runs on SQLite always and on
//! PostgreSQL when CRM_TEST_DATABASE_URL is set.

#[path = "../../testkit/src/db.rs"]
mod testdb;
