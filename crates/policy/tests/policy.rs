//! The policy crate's tests, one binary: scenarios named after what users do, and properties over random
//! organizations.

#[path = "policy/world.rs"]
mod world;

#[path = "policy/scenarios.rs"]
mod scenarios;

#[path = "policy/properties.rs"]
mod properties;
