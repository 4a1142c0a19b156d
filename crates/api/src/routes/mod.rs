pub mod admin;
pub mod csv;
pub mod ops;
pub mod records;
pub mod session;
