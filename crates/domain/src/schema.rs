//! The field schema of every record module. One table drives validation, SQL columns, filters, sorting, search,
//! CSV headers, field permissions and the OpenAPI description, so adding a field is one line here.

use crate::{Module, Value, ValueError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// Free text up to `max` characters.
    Text {
        max: usize,
    },
    Email,
    Phone,
    /// Whole number.
    Int,
    /// Money in cents.
    Money,
    /// `YYYY-MM-DD`.
    Date,
    /// One of a fixed list of codes.
    Enum(&'static [&'static str]),
    /// The id of a record of another module (checked by the store to exist and be visible).
    Ref(Module),
}

impl FieldKind {
    /// Kinds that order numerically or chronologically, so range comparisons mean the same on every engine.
    pub fn is_ordered(self) -> bool {
        matches!(self, FieldKind::Int | FieldKind::Money | FieldKind::Date | FieldKind::Ref(_))
    }
    pub fn is_integer(self) -> bool {
        matches!(self, FieldKind::Int | FieldKind::Money | FieldKind::Ref(_))
    }
    pub fn name(self) -> &'static str {
        match self {
            FieldKind::Text { .. } => "text",
            FieldKind::Email => "email",
            FieldKind::Phone => "phone",
            FieldKind::Int => "integer",
            FieldKind::Money => "money",
            FieldKind::Date => "date",
            FieldKind::Enum(_) => "enum",
            FieldKind::Ref(_) => "reference",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct FieldDef {
    pub name: &'static str,
    pub kind: FieldKind,
    pub required: bool,
    /// Matched by the `q` text search.
    pub searchable: bool,
    /// A data-partition dimension (region, customer type, business line).
    pub partition: bool,
    /// Personal data that a field permission may mask (`138****5678`).
    pub sensitive: bool,
}

const fn f(name: &'static str, kind: FieldKind) -> FieldDef {
    FieldDef { name, kind, required: false, searchable: false, partition: false, sensitive: false }
}
const fn req(mut d: FieldDef) -> FieldDef {
    d.required = true;
    d
}
const fn search(mut d: FieldDef) -> FieldDef {
    d.searchable = true;
    d
}
const fn part(mut d: FieldDef) -> FieldDef {
    d.partition = true;
    d
}
const fn sens(mut d: FieldDef) -> FieldDef {
    d.sensitive = true;
    d
}

pub const REGIONS: &[&str] = &["华北", "华东", "华南", "华中", "西南", "西北", "东北"];
pub const CUSTOMER_TYPES: &[&str] = &["enterprise", "smb", "government"];
pub const STAGES: &[&str] = &["initial", "qualified", "proposal", "negotiation", "won", "lost"];
pub const PRIORITIES: &[&str] = &["low", "normal", "high", "urgent"];
pub const TICKET_STATUSES: &[&str] = &["open", "pending", "resolved", "closed"];
pub const LEAD_STATUSES: &[&str] = &["new", "working", "qualified", "disqualified"];
pub const ACTIVITY_KINDS: &[&str] = &["note", "call", "meeting", "task"];

const T: FieldKind = FieldKind::Text { max: 200 };
const LONG: FieldKind = FieldKind::Text { max: 4000 };
/// Business lines are organization data (any short code), not a fixed list.
const CODE: FieldKind = FieldKind::Text { max: 64 };

static CUSTOMERS: &[FieldDef] = &[
    req(search(f("name", T))),
    f("industry", CODE),
    part(f("customer_type", FieldKind::Enum(CUSTOMER_TYPES))),
    part(f("region", CODE)),
    part(f("business_line", CODE)),
    sens(search(f("phone", FieldKind::Phone))),
    sens(search(f("email", FieldKind::Email))),
    f("address", T),
    f("annual_revenue", FieldKind::Money),
];
static CONTACTS: &[FieldDef] = &[
    req(f("account_id", FieldKind::Ref(Module::Customers))),
    req(search(f("name", T))),
    f("title", T),
    sens(search(f("phone", FieldKind::Phone))),
    sens(search(f("email", FieldKind::Email))),
];
static LEADS: &[FieldDef] = &[
    req(search(f("name", T))),
    search(f("company", T)),
    sens(search(f("phone", FieldKind::Phone))),
    sens(search(f("email", FieldKind::Email))),
    f("source", CODE),
    f("status", FieldKind::Enum(LEAD_STATUSES)),
    part(f("region", CODE)),
    part(f("business_line", CODE)),
];
static OPPORTUNITIES: &[FieldDef] = &[
    req(f("account_id", FieldKind::Ref(Module::Customers))),
    req(search(f("name", T))),
    req(f("stage", FieldKind::Enum(STAGES))),
    f("amount", FieldKind::Money),
    f("close_date", FieldKind::Date),
    part(f("region", CODE)),
    part(f("business_line", CODE)),
];
static TICKETS: &[FieldDef] = &[
    req(f("account_id", FieldKind::Ref(Module::Customers))),
    f("contact_id", FieldKind::Ref(Module::Contacts)),
    req(search(f("subject", T))),
    f("description", LONG),
    req(f("priority", FieldKind::Enum(PRIORITIES))),
    req(f("status", FieldKind::Enum(TICKET_STATUSES))),
    part(f("region", CODE)),
];
static ACTIVITIES: &[FieldDef] = &[
    req(f("kind", FieldKind::Enum(ACTIVITY_KINDS))),
    req(search(f("subject", T))),
    f("body", LONG),
    f("due_date", FieldKind::Date),
    f("account_id", FieldKind::Ref(Module::Customers)),
    f("contact_id", FieldKind::Ref(Module::Contacts)),
    f("opportunity_id", FieldKind::Ref(Module::Opportunities)),
    f("ticket_id", FieldKind::Ref(Module::Tickets)),
    f("lead_id", FieldKind::Ref(Module::Leads)),
];

/// A record module's table name and fields.
#[derive(Debug, Clone, Copy)]
pub struct ModuleSchema {
    pub module: Module,
    pub table: &'static str,
    pub fields: &'static [FieldDef],
    /// The reference field that makes this module's records children of another module's (for "controlled by
    /// parent" and related lists).
    pub parent: Option<(&'static str, Module)>,
}

impl ModuleSchema {
    pub fn field(&self, name: &str) -> Option<&'static FieldDef> {
        self.fields.iter().find(|d| d.name == name)
    }

    /// The fields a list may be sorted by besides `updated_at`, `created_at` and `id`.
    pub fn is_system_column(name: &str) -> bool {
        matches!(name, "id" | "owner_id" | "created_at" | "updated_at")
    }

    /// Validates a value for a field, normalising it (trimmed text, parsed money). `Null` is refused for required
    /// fields.
    pub fn validate(&self, def: &FieldDef, raw: &serde_json::Value) -> Result<Value, ValueError> {
        let err = |m: &str| ValueError::new(def.name, m);
        if raw.is_null() {
            return if def.required { Err(err("is required")) } else { Ok(Value::Null) };
        }
        match def.kind {
            FieldKind::Int | FieldKind::Money | FieldKind::Ref(_) => {
                let i = raw.as_i64().ok_or_else(|| err("must be a whole number"))?;
                if matches!(def.kind, FieldKind::Money) && i < 0 {
                    return Err(err("must not be negative"));
                }
                Ok(Value::Int(i))
            }
            _ => {
                let s = raw.as_str().ok_or_else(|| err("must be a string"))?.trim();
                if s.is_empty() {
                    return if def.required { Err(err("is required")) } else { Ok(Value::Null) };
                }
                if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
                    return Err(err("must not contain control characters"));
                }
                check_text(def, s).map_err(|m| err(&m))?;
                Ok(Value::Text(s.to_string()))
            }
        }
    }
}

fn check_text(def: &FieldDef, s: &str) -> Result<(), String> {
    let len = s.chars().count();
    match def.kind {
        FieldKind::Text { max } if len > max => Err(format!("must be at most {max} characters")),
        FieldKind::Email => {
            let ok = len <= 254
                && s.split_once('@').is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.starts_with('.'))
                && !s.contains(char::is_whitespace);
            if ok { Ok(()) } else { Err("must be an e-mail address".into()) }
        }
        FieldKind::Phone => {
            let ok = (3..=32).contains(&len)
                && s.chars().all(|c| c.is_ascii_digit() || " +-()".contains(c))
                && s.chars().any(|c| c.is_ascii_digit());
            if ok { Ok(()) } else { Err("must be a phone number (digits, spaces, + - ( ))".into()) }
        }
        FieldKind::Date => {
            let b = s.as_bytes();
            let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
            let shape = b.len() == 10 && b[4] == b'-' && b[7] == b'-' && digits(0..4) && digits(5..7) && digits(8..10);
            let month: u32 = if shape { s[5..7].parse().unwrap_or(0) } else { 0 };
            let day: u32 = if shape { s[8..10].parse().unwrap_or(0) } else { 0 };
            if shape && (1..=12).contains(&month) && (1..=31).contains(&day) {
                Ok(())
            } else {
                Err("must be a date YYYY-MM-DD".into())
            }
        }
        FieldKind::Enum(codes) if !codes.contains(&s) => Err(format!("must be one of: {}", codes.join(", "))),
        _ => Ok(()),
    }
}

static SCHEMAS: [ModuleSchema; 6] = [
    ModuleSchema { module: Module::Customers, table: "customers", fields: CUSTOMERS, parent: None },
    ModuleSchema {
        module: Module::Contacts,
        table: "contacts",
        fields: CONTACTS,
        parent: Some(("account_id", Module::Customers)),
    },
    ModuleSchema { module: Module::Leads, table: "leads", fields: LEADS, parent: None },
    ModuleSchema {
        module: Module::Opportunities,
        table: "opportunities",
        fields: OPPORTUNITIES,
        parent: Some(("account_id", Module::Customers)),
    },
    ModuleSchema {
        module: Module::Tickets,
        table: "tickets",
        fields: TICKETS,
        parent: Some(("account_id", Module::Customers)),
    },
    ModuleSchema { module: Module::Activities, table: "activities", fields: ACTIVITIES, parent: None },
];

/// The schema of a record module; `None` for administration modules.
pub fn schema(module: Module) -> Option<&'static ModuleSchema> {
    SCHEMAS.iter().find(|s| s.module == module)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_record_module_has_a_schema_and_administration_modules_do_not() {
        for m in Module::ALL {
            assert_eq!(schema(m).is_some(), m.is_record_module(), "{m}");
        }
    }

    #[test]
    fn validation_accepts_good_values_and_names_the_field_when_refusing() {
        let s = schema(Module::Customers).unwrap();
        let name = s.field("name").unwrap();
        assert_eq!(s.validate(name, &json!("  华为 ")).unwrap(), Value::Text("华为".into()));
        assert_eq!(s.validate(name, &json!(null)).unwrap_err().field, "name");
        assert!(s.validate(name, &json!(12)).is_err());
        let phone = s.field("phone").unwrap();
        assert!(s.validate(phone, &json!("138 0013 8000")).is_ok());
        assert!(s.validate(phone, &json!("call me")).is_err());
        let o = schema(Module::Opportunities).unwrap();
        assert!(o.validate(o.field("close_date").unwrap(), &json!("2026-02-30")).is_ok());
        assert!(o.validate(o.field("close_date").unwrap(), &json!("2026-13-01")).is_err());
        assert!(o.validate(o.field("stage").unwrap(), &json!("won")).is_ok());
        assert!(o.validate(o.field("stage").unwrap(), &json!("maybe")).is_err());
        assert!(o.validate(o.field("amount").unwrap(), &json!(-5)).is_err());
    }
}
