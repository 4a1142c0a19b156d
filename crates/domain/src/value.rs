use crate::{Module, OrgId, RecordId, UserId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A field value. Money is stored in cents, dates as `YYYY-MM-DD` text: two representations that compare the same
/// way in Rust, SQLite and PostgreSQL, which the policy's two evaluators rely on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
}

impl Value {
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Text(s) => serde_json::Value::from(s.clone()),
        }
    }
}

/// Why a value was refused: the field and a message a user understands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("{field}: {message}")]
pub struct ValueError {
    pub field: String,
    pub message: String,
}

impl ValueError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ValueError { field: field.into(), message: message.into() }
    }
}

/// One record of a record module as stored: system columns plus the module's fields by name.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Record {
    pub module: Module,
    pub id: RecordId,
    pub org_id: OrgId,
    pub owner_id: UserId,
    pub created_at: i64,
    pub updated_at: i64,
    pub fields: BTreeMap<&'static str, Value>,
}

impl Record {
    /// A field's value, system columns included, so criteria and sorting can name `owner_id` or `updated_at`.
    pub fn value(&self, field: &str) -> std::borrow::Cow<'_, Value> {
        use std::borrow::Cow;
        match field {
            "id" => Cow::Owned(Value::Int(self.id)),
            "owner_id" => Cow::Owned(Value::Int(self.owner_id)),
            "created_at" => Cow::Owned(Value::Int(self.created_at)),
            "updated_at" => Cow::Owned(Value::Int(self.updated_at)),
            _ => match self.fields.get(field) {
                Some(v) => Cow::Borrowed(v),
                None => Cow::Owned(Value::Null),
            },
        }
    }
}
