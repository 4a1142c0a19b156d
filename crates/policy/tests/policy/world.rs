//! A small organization built by hand: departments, users, roles, rules and records, and the checks every scenario
//! makes (the explanation agrees with the decision).

use crm_domain::{Action, DeptId, GroupId, Level, Module, OrgId, Record, RoleId, UserId, Value};
use crm_policy::{
    Access, CmpOp, Criterion, Dimension, DirUser, Directory, FieldAccess, Grantee, Group, OrgDefault, PartitionGrant,
    PolicyConfig, Reason, RecordFacts, RestrictionRule, Role, RuleSource, Scope, ShareEntry, ShareKey, SharingRule,
    TeamEntry, UserStatus,
};
use std::collections::BTreeMap;
use std::sync::Arc;

pub const ORG: OrgId = 1;

/// Builder methods on a [`Role`] (the role's permissions, administrator rights and field permissions).
pub trait RoleExt: Sized {
    fn allow(self, module: Module, actions: &[Action], scope: Scope) -> Self;
    fn view_all(self) -> Self;
    fn modify_all(self) -> Self;
    fn field(self, module: Module, field: &str, access: FieldAccess) -> Self;
}

impl RoleExt for Role {
    fn allow(mut self, module: Module, actions: &[Action], scope: Scope) -> Self {
        let m = self.permissions.entry(module).or_default();
        for a in actions {
            m.insert(*a, scope);
        }
        self
    }
    fn view_all(mut self) -> Self {
        self.view_all = true;
        self
    }
    fn modify_all(mut self) -> Self {
        self.modify_all = true;
        self
    }
    fn field(mut self, module: Module, field: &str, access: FieldAccess) -> Self {
        self.fields.entry(module).or_default().insert(field.to_string(), access);
        self
    }
}

/// Every record action.
pub const ALL_ACTIONS: &[Action] = &Action::ALL;
/// `view` and `edit`.
pub const VIEW_EDIT: &[Action] = &[Action::View, Action::Edit];

pub fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

pub fn crit(field: &str, op: CmpOp, value: serde_json::Value) -> Criterion {
    Criterion { field: field.to_string(), op, value }
}

pub struct World {
    pub org: OrgId,
    pub config: PolicyConfig,
    pub departments: Vec<(DeptId, Option<DeptId>)>,
    pub users: Vec<DirUser>,
    next_id: i64,
}

impl Default for World {
    fn default() -> Self {
        World::new()
    }
}

impl World {
    /// An empty organization with the three usual partition dimensions (region, customer type, business line).
    pub fn new() -> World {
        let dim = |key: &str| Dimension { key: key.into(), label: key.into(), field: key.into(), values: Vec::new() };
        World {
            org: ORG,
            config: PolicyConfig {
                dimensions: vec![dim("region"), dim("customer_type"), dim("business_line")],
                ..PolicyConfig::default()
            },
            departments: Vec::new(),
            users: Vec::new(),
            next_id: 1,
        }
    }

    fn id(&mut self) -> i64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    pub fn department(&mut self, parent: Option<DeptId>) -> DeptId {
        let id = self.id();
        self.departments.push((id, parent));
        id
    }

    pub fn role(&mut self, name: &str, build: impl FnOnce(Role) -> Role) -> RoleId {
        let id = self.id();
        let role = Role {
            id,
            name: name.into(),
            description: String::new(),
            permissions: BTreeMap::new(),
            view_all: false,
            modify_all: false,
            fields: BTreeMap::new(),
            reveal: Default::default(),
            require_mfa: false,
        };
        self.config.roles.push(build(role));
        id
    }

    /// An active user with a primary department and roles.
    pub fn user(&mut self, department: DeptId, roles: &[RoleId]) -> UserId {
        let id = self.id();
        self.users.push(DirUser {
            id,
            manager: None,
            departments: vec![department],
            roles: roles.to_vec(),
            status: UserStatus::Active,
        });
        id
    }

    pub fn user_mut(&mut self, id: UserId) -> &mut DirUser {
        self.users.iter_mut().find(|u| u.id == id).expect("no such user")
    }

    pub fn reports_to(&mut self, user: UserId, manager: UserId) {
        self.user_mut(user).manager = Some(manager);
    }

    pub fn group(&mut self, users: &[UserId], departments: &[(DeptId, bool)]) -> GroupId {
        let id = self.id();
        self.config.groups.push(Group {
            id,
            name: format!("group {id}"),
            users: users.to_vec(),
            departments: departments.to_vec(),
        });
        id
    }

    pub fn default_for(&mut self, module: Module, default: OrgDefault) {
        self.config.defaults.insert(module, default);
    }

    pub fn partition_grant(&mut self, grantee: Grantee, partitions: &[(&str, &[&str])], level: Level) -> i64 {
        let id = self.id();
        self.config.partition_grants.push(PartitionGrant {
            id,
            grantee,
            modules: Vec::new(),
            partitions: partitions
                .iter()
                .map(|(k, vs)| (k.to_string(), vs.iter().map(|v| v.to_string()).collect()))
                .collect(),
            level,
        });
        id
    }

    pub fn sharing_rule(&mut self, module: Module, source: RuleSource, share_with: Grantee, level: Level) -> i64 {
        let id = self.id();
        self.config.sharing_rules.push(SharingRule {
            id,
            name: format!("rule {id}"),
            module,
            source,
            share_with,
            level,
        });
        id
    }

    pub fn restriction(&mut self, module: Module, applies_to: Grantee, criteria: Vec<Criterion>, exempt: bool) -> i64 {
        let id = self.id();
        self.config.restriction_rules.push(RestrictionRule {
            id,
            name: format!("restriction {id}"),
            module,
            applies_to,
            criteria,
            exempt_administrators: exempt,
        });
        id
    }

    pub fn directory(&self) -> Arc<Directory> {
        Arc::new(Directory::new(self.org, self.users.clone(), self.departments.clone()))
    }

    /// The user's compiled access; the configuration must validate, as the store would insist.
    pub fn access(&self, user: UserId) -> Access {
        if let Err(e) = self.config.validate() {
            panic!("invalid configuration in the test world: {e}");
        }
        Access::compile(&self.config, self.directory(), user)
    }

    /// May `user` do `action` on the record? Checks on the way that the explanation agrees with the decision, and
    /// that an allowed record names a grant and no restriction.
    pub fn allows(&self, user: UserId, action: Action, facts: &RecordFacts) -> bool {
        let access = self.access(user);
        let module = facts.record.module;
        let decided = access.decide(module, action, facts);
        let explained = access.explain(module, action, facts);
        assert_eq!(
            decided, explained.allowed,
            "decide and explain disagree for user {user} {action} {module}: {explained:?}"
        );
        if decided {
            assert!(!explained.granted_by.is_empty() && explained.denied_by.is_empty(), "{explained:?}");
        }
        decided
    }

    pub fn record(&mut self, module: Module, owner: UserId, fields: &[(&'static str, Value)]) -> RecordFacts {
        let id = 1000 + self.id();
        RecordFacts::new(Record {
            module,
            id,
            org_id: self.org,
            owner_id: owner,
            created_at: 0,
            updated_at: 0,
            fields: fields.iter().cloned().collect(),
        })
    }

    pub fn customer(&mut self, owner: UserId) -> RecordFacts {
        let name = format!("customer of {owner}");
        self.record(Module::Customers, owner, &[("name", text(&name))])
    }

    pub fn customer_with(&mut self, owner: UserId, fields: &[(&'static str, Value)]) -> RecordFacts {
        let mut facts = self.customer(owner);
        facts.record.fields.extend(fields.iter().cloned());
        facts
    }

    /// A child record (contact, opportunity, ticket) of an account, with the account loaded as its parent.
    pub fn child(
        &mut self,
        module: Module,
        owner: UserId,
        account: &RecordFacts,
        fields: &[(&'static str, Value)],
    ) -> RecordFacts {
        let mut facts = self.record(module, owner, fields);
        facts.record.fields.insert("account_id", Value::Int(account.record.id));
        facts.parent = Some(Box::new(account.clone()));
        facts
    }
}

pub fn with_team(mut facts: RecordFacts, user: UserId, level: Level) -> RecordFacts {
    facts.team.push(TeamEntry { user, level });
    facts
}

pub fn shared(mut facts: RecordFacts, key: ShareKey, level: Level) -> RecordFacts {
    facts.shares.push(ShareEntry { key, level });
    facts
}

/// The explanation's granted_by for (user, action, record).
pub fn granted_by(w: &World, user: UserId, action: Action, facts: &RecordFacts) -> Vec<Reason> {
    w.access(user).explain(facts.record.module, action, facts).granted_by
}

pub fn denied_by(w: &World, user: UserId, action: Action, facts: &RecordFacts) -> Vec<Reason> {
    w.access(user).explain(facts.record.module, action, facts).denied_by
}
