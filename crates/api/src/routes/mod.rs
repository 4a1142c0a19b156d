pub mod account;
pub mod admin;
pub mod audit;
pub mod csv;
pub mod ops;
pub mod records;
pub mod security;
pub mod session;
