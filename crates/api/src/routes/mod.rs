pub mod admin;
pub mod ops;
pub mod records;
pub mod session;
