//! The permission model (`shared/docs/permission-model.md`) as pure code: no I/O.
//!
//! An organization's access configuration ([`PolicyConfig`]) and its people ([`Directory`]) are compiled for one
//! user into an [`Access`]: for every (module, action) one [`Pred`] over record facts. That one predicate is
//! evaluated two ways that cannot drift because nothing else exists to drift:
//! - in memory, here, for a single record ([`Access::decide`], [`Access::explain`]);
//! - as SQL, rendered by the store from the same tree for list queries.

mod compile;
mod config;
mod directory;
mod eval;
mod pred;

pub use compile::{Access, FieldAccess};
pub use config::{
    ConfigError, Criterion, Dimension, Grantee, Group, OrgDefault, PartitionGrant, PolicyConfig, RestrictionRule, Role,
    RuleSource, Scope, SharingRule,
};
pub use directory::{DirUser, Directory, UserStatus};
pub use eval::{Explanation, RecordFacts, ShareEntry, TeamEntry};
pub use pred::{CmpOp, Pred, Reason, ShareKey};
