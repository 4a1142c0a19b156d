use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// An area of the CRM. Record modules hold customer data; the others are administration areas whose `view` and
/// `edit` gate the administration API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Module {
    Customers,
    Contacts,
    Leads,
    Opportunities,
    Tickets,
    Activities,
    Reports,
    Users,
    Roles,
    Sharing,
    Audit,
    Monitoring,
}

impl Module {
    pub const ALL: [Module; 12] = [
        Module::Customers,
        Module::Contacts,
        Module::Leads,
        Module::Opportunities,
        Module::Tickets,
        Module::Activities,
        Module::Reports,
        Module::Users,
        Module::Roles,
        Module::Sharing,
        Module::Audit,
        Module::Monitoring,
    ];
    /// Modules whose records are customer data, stored in their own table.
    pub const RECORDS: [Module; 6] = [
        Module::Customers,
        Module::Contacts,
        Module::Leads,
        Module::Opportunities,
        Module::Tickets,
        Module::Activities,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Module::Customers => "customers",
            Module::Contacts => "contacts",
            Module::Leads => "leads",
            Module::Opportunities => "opportunities",
            Module::Tickets => "tickets",
            Module::Activities => "activities",
            Module::Reports => "reports",
            Module::Users => "users",
            Module::Roles => "roles",
            Module::Sharing => "sharing",
            Module::Audit => "audit",
            Module::Monitoring => "monitoring",
        }
    }

    pub fn is_record_module(self) -> bool {
        Self::RECORDS.contains(&self)
    }
}

impl fmt::Display for Module {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Module {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Module::ALL.into_iter().find(|m| m.as_str() == s).ok_or(())
    }
}

/// What a user does with a module's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    View,
    Create,
    Edit,
    Delete,
    Export,
    Import,
    Transfer,
    Share,
}

impl Action {
    pub const ALL: [Action; 8] = [
        Action::View,
        Action::Create,
        Action::Edit,
        Action::Delete,
        Action::Export,
        Action::Import,
        Action::Transfer,
        Action::Share,
    ];

    /// The record access level an action needs (permission model §3): view and export read, create, import and
    /// edit write, delete, transfer and share need full access.
    pub fn required_level(self) -> Level {
        match self {
            Action::View | Action::Export => Level::Read,
            Action::Create | Action::Edit | Action::Import => Level::Edit,
            Action::Delete | Action::Transfer | Action::Share => Level::Full,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::View => "view",
            Action::Create => "create",
            Action::Edit => "edit",
            Action::Delete => "delete",
            Action::Export => "export",
            Action::Import => "import",
            Action::Transfer => "transfer",
            Action::Share => "share",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Action {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Action::ALL.into_iter().find(|a| a.as_str() == s).ok_or(())
    }
}

/// Record access level: `read` < `edit` < `full` (full = delete, transfer, share). Stored as 1, 2, 3 so the store
/// can compare with `>=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Read = 1,
    Edit = 2,
    Full = 3,
}

impl Level {
    pub const ALL: [Level; 3] = [Level::Read, Level::Edit, Level::Full];
    pub fn as_i64(self) -> i64 {
        self as i64
    }
    pub fn from_i64(v: i64) -> Option<Level> {
        match v {
            1 => Some(Level::Read),
            2 => Some(Level::Edit),
            3 => Some(Level::Full),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Read => "read",
            Level::Edit => "edit",
            Level::Full => "full",
        }
    }
}

impl FromStr for Level {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Level::ALL.into_iter().find(|l| l.as_str() == s).ok_or(())
    }
}
