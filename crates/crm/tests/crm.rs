//! The crm crate's one integration-test binary: one binary links once, which matters on a two-core machine.
//! Every suite runs on each engine of `crm_testkit::engines()`: SQLite always, PostgreSQL when
//! `CRM_TEST_DATABASE_URL` is set (a fresh database per test either way).
//!
//! - `bad_input`: refusals are problem documents with a stable type, and a refused request writes nothing.
//! - `leak_matrix`: for every demo persona and module, every read path shows exactly the records the demo's rules
//!   grant, computed independently from the raw tables.
//! - `scenarios`: the seed's sentences, through HTTP.
//! - `audit`: the audit trail through the binary: `audit verify` names tampering, two server processes keep one
//!   chain, SIGKILL mid-load loses no acknowledged write or entry.
//! - `auth`: sign-in and account security through HTTP: the fixed sign-in with its MFA step, enumeration
//!   (answers and timing), brute force and limits, fixation, revocation, CSRF, TOTP and recovery codes, IP and
//!   hours policies, API tokens, sign-in history.
//! - `monitoring`: real-time monitoring: every rule fired by scripted attacks through HTTP, exactly once and within a
//!   second; inline blocking; responses at the next request; alert lifecycle and scope; baselines; the live feed and
//!   two instances on one database; the signed webhook.
//! - `binary`: the real `crm` binary: serve the demo, sign in, OpenAPI, metrics, graceful SIGTERM, audit verify.
//! - `browser`: the web UI in headless chromium against the real binary (personas, language switch, reveal and
//!   its audit entry, an administrator changing a representative's scope, MFA enrolment and sign-in).
//! - `web_pages`: the web UI's pages in process: security headers, CSRF, escaping, no hidden field in the HTML.

// Table-driven tests spell out their row types inline on purpose.
#![allow(clippy::type_complexity)]

#[path = "crm/support.rs"]
mod support;

#[path = "crm/bad_input.rs"]
mod bad_input;

#[path = "crm/audit.rs"]
mod audit;
#[path = "crm/auth.rs"]
mod auth;
#[path = "crm/binary.rs"]
mod binary;
#[path = "crm/browser.rs"]
mod browser;
#[path = "crm/leak_matrix.rs"]
mod leak_matrix;
#[path = "crm/monitoring.rs"]
mod monitoring;
#[path = "crm/scenarios.rs"]
mod scenarios;
#[path = "crm/web_pages.rs"]
mod web_pages;
