//! An organization's access configuration: roles, defaults, partitions, sharing and restriction rules, groups.
//! It is one versioned document per organization (exported and applied as policy-as-code); every change bumps the
//! organization's policy version, which is how every server process notices it at the next request.

use crate::pred::CmpOp;
use crm_domain::{Action, DeptId, FieldKind, GroupId, Level, Module, RoleId, UserId, Value, schema};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The classic five data scopes (数据范围).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Own,
    Subordinates,
    Department,
    DepartmentTree,
    All,
}

/// Organization-wide default per module (数据共享默认设置).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrgDefault {
    #[default]
    Private,
    PublicRead,
    PublicReadWrite,
    /// Access follows the parent record (contacts, opportunities and tickets follow their account).
    ControlledByParent,
}

/// Whom a grant, rule or share targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Grantee {
    User { id: UserId },
    Department { id: DeptId, include_sub: bool },
    Role { id: RoleId },
    Group { id: GroupId },
}

/// A role (角色): module permissions with a data scope per action, field permissions, administrator rights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Role {
    pub id: RoleId,
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// module → action → data scope.
    #[serde(default)]
    pub permissions: BTreeMap<Module, BTreeMap<Action, Scope>>,
    /// "View all data": read every record of every record module of the organization.
    #[serde(default)]
    pub view_all: bool,
    /// "Modify all data": every action on every record of every record module.
    #[serde(default)]
    pub modify_all: bool,
    /// module → field → access; fields not listed are editable.
    #[serde(default)]
    pub fields: BTreeMap<Module, BTreeMap<String, crate::FieldAccess>>,
    /// Modules on which masked fields may be revealed (each use audited).
    #[serde(default)]
    pub reveal: BTreeSet<Module>,
    /// Sign-in requires a second factor for holders of this role.
    #[serde(default)]
    pub require_mfa: bool,
}

/// An organization-defined partition dimension (数据分区) over a record field, e.g. region or industry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dimension {
    pub key: String,
    pub label: String,
    /// The record field holding the dimension's value.
    pub field: String,
    /// Allowed values, for pickers; empty means any.
    #[serde(default)]
    pub values: Vec<String>,
}

/// `field op value(s)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Criterion {
    pub field: String,
    pub op: CmpOp,
    /// One value, or a list for `in` / `not_in`.
    pub value: serde_json::Value,
}

/// A partition grant: the grantee may access records whose dimension values match, at a level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionGrant {
    pub id: i64,
    pub grantee: Grantee,
    /// Record modules it covers; empty = every record module that has the dimensions' fields.
    #[serde(default)]
    pub modules: Vec<Module>,
    /// Dimension key → accepted values, AND-ed across dimensions (`region = 华东 AND business_line = cloud`).
    pub partitions: BTreeMap<String, Vec<String>>,
    pub level: Level,
}

/// What records a sharing rule shares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RuleSource {
    /// Records owned by these people.
    OwnedBy { owners: Grantee },
    /// Records meeting every criterion.
    Criteria { criteria: Vec<Criterion> },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharingRule {
    pub id: i64,
    pub name: String,
    pub module: Module,
    pub source: RuleSource,
    pub share_with: Grantee,
    pub level: Level,
}

/// Narrows access: for users the rule applies to, records of the module must meet every criterion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestrictionRule {
    pub id: i64,
    pub name: String,
    pub module: Module,
    pub applies_to: Grantee,
    pub criteria: Vec<Criterion>,
    /// Administrators' view-all / modify-all is narrowed too unless this is set.
    #[serde(default)]
    pub exempt_administrators: bool,
}

/// A named set of users and departments, used as a target of sharing (用户组).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    pub id: GroupId,
    pub name: String,
    #[serde(default)]
    pub users: Vec<UserId>,
    /// (department, include sub-departments)
    #[serde(default)]
    pub departments: Vec<(DeptId, bool)>,
}

/// An organization's whole access configuration.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    #[serde(default)]
    pub roles: Vec<Role>,
    /// Modules not listed are private.
    #[serde(default)]
    pub defaults: BTreeMap<Module, OrgDefault>,
    #[serde(default)]
    pub dimensions: Vec<Dimension>,
    #[serde(default)]
    pub partition_grants: Vec<PartitionGrant>,
    #[serde(default)]
    pub sharing_rules: Vec<SharingRule>,
    #[serde(default)]
    pub restriction_rules: Vec<RestrictionRule>,
    #[serde(default)]
    pub groups: Vec<Group>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

impl PolicyConfig {
    pub fn role(&self, id: RoleId) -> Option<&Role> {
        self.roles.iter().find(|r| r.id == id)
    }
    pub fn group(&self, id: GroupId) -> Option<&Group> {
        self.groups.iter().find(|g| g.id == id)
    }
    pub fn dimension(&self, key: &str) -> Option<&Dimension> {
        self.dimensions.iter().find(|d| d.key == key)
    }
    pub fn default_for(&self, module: Module) -> OrgDefault {
        self.defaults.get(&module).copied().unwrap_or_default()
    }

    /// Checks references and types: unique ids, known roles and groups, criteria fields that exist with values of
    /// the field's type, operators that fit the field, partition dimensions that exist. Directory references
    /// (users, departments) are checked by `validate_against`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        unique(self.roles.iter().map(|r| r.id), "role")?;
        unique(self.groups.iter().map(|g| g.id), "group")?;
        unique(self.partition_grants.iter().map(|g| g.id), "partition grant")?;
        unique(self.sharing_rules.iter().map(|r| r.id), "sharing rule")?;
        unique(self.restriction_rules.iter().map(|r| r.id), "restriction rule")?;
        for role in &self.roles {
            if role.name.trim().is_empty() {
                return Err(invalid(format!("role {}: name is required", role.id)));
            }
            for (module, fields) in &role.fields {
                let s = schema(*module).ok_or_else(|| invalid(format!("role {}: {module} has no fields", role.id)))?;
                for (field, access) in fields {
                    let def = s
                        .field(field)
                        .ok_or_else(|| invalid(format!("role {}: unknown field {module}.{field}", role.id)))?;
                    if *access == crate::FieldAccess::Masked && !def.sensitive {
                        return Err(invalid(format!("role {}: {module}.{field} cannot be masked", role.id)));
                    }
                }
            }
        }
        for (module, d) in &self.defaults {
            if !module.is_record_module() {
                return Err(invalid(format!("defaults: {module} is not a record module")));
            }
            if *d == OrgDefault::ControlledByParent && schema(*module).and_then(|s| s.parent).is_none() {
                return Err(invalid(format!("defaults: {module} has no parent module")));
            }
        }
        for d in &self.dimensions {
            if !Module::RECORDS.iter().any(|m| schema(*m).is_some_and(|s| s.field(&d.field).is_some())) {
                return Err(invalid(format!("dimension {}: no module has the field {}", d.key, d.field)));
            }
        }
        unique_str(self.dimensions.iter().map(|d| d.key.as_str()), "dimension")?;
        for g in &self.partition_grants {
            self.check_grantee(&g.grantee)?;
            if g.partitions.is_empty() {
                return Err(invalid(format!("partition grant {}: names no partition", g.id)));
            }
            for (key, values) in &g.partitions {
                self.dimension(key)
                    .ok_or_else(|| invalid(format!("partition grant {}: unknown dimension {key}", g.id)))?;
                if values.is_empty() {
                    return Err(invalid(format!("partition grant {}: dimension {key} has no value", g.id)));
                }
            }
            for m in &g.modules {
                if !m.is_record_module() {
                    return Err(invalid(format!("partition grant {}: {m} is not a record module", g.id)));
                }
            }
        }
        for r in &self.sharing_rules {
            self.check_grantee(&r.share_with)?;
            match &r.source {
                RuleSource::OwnedBy { owners } => self.check_grantee(owners)?,
                RuleSource::Criteria { criteria } => {
                    if criteria.is_empty() {
                        return Err(invalid(format!("sharing rule {}: no criteria", r.id)));
                    }
                    for c in criteria {
                        c.typed(r.module).map_err(|e| invalid(format!("sharing rule {}: {e}", r.id)))?;
                    }
                }
            }
        }
        for r in &self.restriction_rules {
            self.check_grantee(&r.applies_to)?;
            if r.criteria.is_empty() {
                return Err(invalid(format!("restriction rule {}: no criteria", r.id)));
            }
            for c in &r.criteria {
                c.typed(r.module).map_err(|e| invalid(format!("restriction rule {}: {e}", r.id)))?;
            }
        }
        Ok(())
    }

    fn check_grantee(&self, g: &Grantee) -> Result<(), ConfigError> {
        match g {
            Grantee::Role { id } if self.role(*id).is_none() => Err(invalid(format!("unknown role {id}"))),
            Grantee::Group { id } if self.group(*id).is_none() => Err(invalid(format!("unknown group {id}"))),
            _ => Ok(()),
        }
    }

    /// The fields of `module` a grant's partitions refer to, or `None` when the module lacks one of them (the
    /// grant then does not apply to that module).
    pub(crate) fn partition_fields(
        &self,
        module: Module,
        grant: &PartitionGrant,
    ) -> Option<Vec<(String, Vec<String>)>> {
        if !grant.modules.is_empty() && !grant.modules.contains(&module) {
            return None;
        }
        let s = schema(module)?;
        grant
            .partitions
            .iter()
            .map(|(key, values)| {
                let d = self.dimension(key)?;
                s.field(&d.field)?;
                Some((d.field.clone(), values.clone()))
            })
            .collect()
    }
}

fn unique(ids: impl Iterator<Item = i64>, what: &str) -> Result<(), ConfigError> {
    let mut seen = BTreeSet::new();
    for id in ids {
        if !seen.insert(id) {
            return Err(invalid(format!("duplicate {what} id {id}")));
        }
    }
    Ok(())
}

fn unique_str<'a>(ids: impl Iterator<Item = &'a str>, what: &str) -> Result<(), ConfigError> {
    let mut seen = BTreeSet::new();
    for id in ids {
        if !seen.insert(id) {
            return Err(invalid(format!("duplicate {what} {id}")));
        }
    }
    Ok(())
}

impl Criterion {
    /// Type-checks the criterion against the module's field and returns its values in storage form.
    pub fn typed(&self, module: Module) -> Result<Vec<Value>, String> {
        let s = schema(module).ok_or_else(|| format!("{module} has no fields"))?;
        let kind = if self.field == "owner_id" {
            FieldKind::Ref(Module::Users)
        } else {
            s.field(&self.field).ok_or_else(|| format!("unknown field {module}.{}", self.field))?.kind
        };
        if matches!(self.op, CmpOp::Gt | CmpOp::Gte | CmpOp::Lt | CmpOp::Lte) && !kind.is_ordered() {
            return Err(format!("{}: a {} field cannot be compared by order", self.field, kind.name()));
        }
        let raw: Vec<&serde_json::Value> = match (self.op, &self.value) {
            (CmpOp::In | CmpOp::NotIn, serde_json::Value::Array(items)) if !items.is_empty() => items.iter().collect(),
            (CmpOp::In | CmpOp::NotIn, _) => return Err(format!("{}: `in` needs a non-empty list", self.field)),
            (_, v) => vec![v],
        };
        raw.into_iter()
            .map(|v| match (kind.is_integer(), v) {
                (true, serde_json::Value::Number(n)) => {
                    n.as_i64().map(Value::Int).ok_or_else(|| format!("{}: must be a whole number", self.field))
                }
                (true, _) => Err(format!("{}: must be a whole number", self.field)),
                (false, serde_json::Value::String(t)) => {
                    if let FieldKind::Enum(codes) = kind
                        && !codes.contains(&t.as_str())
                    {
                        return Err(format!("{}: must be one of {}", self.field, codes.join(", ")));
                    }
                    Ok(Value::Text(t.clone()))
                }
                (false, _) => Err(format!("{}: must be text", self.field)),
            })
            .collect()
    }
}

impl Scope {
    /// Does a grant with this scope include everything a grant with `other` includes, for every user? Used to
    /// refuse escalation: an administrator may hand out only scopes their own covers.
    pub fn covers(self, other: Scope) -> bool {
        use Scope::*;
        match self {
            All => true,
            DepartmentTree => matches!(other, DepartmentTree | Department | Own),
            Department => matches!(other, Department | Own),
            Subordinates => matches!(other, Subordinates | Own),
            Own => other == Own,
        }
    }
}
