pub mod ops;
pub mod records;
pub mod session;
