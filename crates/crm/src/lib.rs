//! The `crm` binary's library half: command-line interface, the demo organization and the standard role
//! templates. `main.rs` only parses arguments and calls [`cli::run`].

pub mod admin_cli;
pub mod audit_cli;
pub mod cli;
pub mod demo;
pub mod generate;
pub mod templates;
