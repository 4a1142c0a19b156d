//! The CRM's vocabulary: modules, actions, access levels, the field schema of every module and the values records
//! carry. Pure data and validation; no I/O. Every other crate speaks these types.

mod module;
mod schema;
mod value;

pub use module::{Action, Level, Module};
pub use schema::{
    ACTIVITY_KINDS, CUSTOMER_TYPES, FieldDef, FieldKind, LEAD_STATUSES, ModuleSchema, PRIORITIES, REGIONS, STAGES,
    TICKET_STATUSES, schema,
};
pub use value::{Record, Value, ValueError};

/// Identifiers are plain 64-bit integers: portable across SQLite and PostgreSQL (and PostgreSQL-wire distributed
/// engines), cheap to compare in the policy's hot path.
pub type OrgId = i64;
pub type UserId = i64;
pub type DeptId = i64;
pub type RoleId = i64;
pub type GroupId = i64;
pub type RecordId = i64;
