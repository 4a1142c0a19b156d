//! The standard roles every new organization starts with, modelled on the seed: administrator, read-only
//! auditor, sales director, sales manager, sales representative, customer service and a regional analyst.
//! Administrators edit them afterwards; they are data, not code.

use crm_domain::{Action, Module};
use crm_policy::{
    CmpOp, Criterion, Dimension, FieldAccess, Grantee, Group, OrgDefault, PartitionGrant, PolicyConfig,
    RestrictionRule, Role, RuleSource, Scope, SharingRule,
};
use std::collections::{BTreeMap, BTreeSet};

pub const ROLE_ADMIN: i64 = 1;
pub const ROLE_AUDITOR: i64 = 2;
pub const ROLE_DIRECTOR: i64 = 3;
pub const ROLE_MANAGER: i64 = 4;
pub const ROLE_REP: i64 = 5;
pub const ROLE_SERVICE: i64 = 6;
pub const ROLE_ANALYST: i64 = 7;
pub const GROUP_KEY_ACCOUNTS: i64 = 1;

fn perms(entries: &[(Module, &[Action], Scope)]) -> BTreeMap<Module, BTreeMap<Action, Scope>> {
    let mut out: BTreeMap<Module, BTreeMap<Action, Scope>> = BTreeMap::new();
    for (m, actions, scope) in entries {
        for a in *actions {
            out.entry(*m).or_default().insert(*a, *scope);
        }
    }
    out
}

fn role(id: i64, name: &str, description: &str, permissions: BTreeMap<Module, BTreeMap<Action, Scope>>) -> Role {
    Role {
        id,
        name: name.into(),
        description: description.into(),
        permissions,
        view_all: false,
        modify_all: false,
        fields: BTreeMap::new(),
        reveal: BTreeSet::new(),
        require_mfa: false,
    }
}

const ALL_ACTIONS: &[Action] = &Action::ALL;
const WORK: &[Action] =
    &[Action::View, Action::Create, Action::Edit, Action::Delete, Action::Export, Action::Transfer, Action::Share];
const OWN_WORK: &[Action] = &[Action::View, Action::Create, Action::Edit, Action::Share];
const VIEW: &[Action] = &[Action::View];

/// The standard access configuration.
pub fn standard_policy() -> PolicyConfig {
    use Module::*;
    let mut admin = role(
        ROLE_ADMIN,
        "系统管理员 Administrator",
        "View and modify all data; manage users, roles, sharing, audit and monitoring.",
        perms(&[
            (Users, ALL_ACTIONS, Scope::All),
            (Roles, ALL_ACTIONS, Scope::All),
            (Sharing, ALL_ACTIONS, Scope::All),
            (Audit, ALL_ACTIONS, Scope::All),
            (Monitoring, ALL_ACTIONS, Scope::All),
            (Reports, ALL_ACTIONS, Scope::All),
        ]),
    );
    admin.view_all = true;
    admin.modify_all = true;
    admin.reveal = Module::RECORDS.into_iter().collect();

    let mut auditor = role(
        ROLE_AUDITOR,
        "审计员 Auditor",
        "Read-only: sees all data and the audit trail, changes nothing.",
        perms(&[(Audit, VIEW, Scope::All), (Reports, VIEW, Scope::All), (Users, VIEW, Scope::All)]),
    );
    auditor.view_all = true;

    let director = role(
        ROLE_DIRECTOR,
        "销售总监 Sales director",
        "Works every record of the sales department tree.",
        perms(&[
            (Customers, WORK, Scope::DepartmentTree),
            (Contacts, WORK, Scope::DepartmentTree),
            (Leads, WORK, Scope::DepartmentTree),
            (Opportunities, WORK, Scope::DepartmentTree),
            (Activities, WORK, Scope::DepartmentTree),
            (Tickets, VIEW, Scope::DepartmentTree),
            (Reports, VIEW, Scope::DepartmentTree),
        ]),
    );
    let manager = role(
        ROLE_MANAGER,
        "销售经理 Sales manager",
        "Sees and edits the whole team's records (本部门及下属部门).",
        perms(&[
            (Customers, WORK, Scope::DepartmentTree),
            (Contacts, WORK, Scope::DepartmentTree),
            (Leads, WORK, Scope::DepartmentTree),
            (Opportunities, WORK, Scope::DepartmentTree),
            (Activities, WORK, Scope::DepartmentTree),
            (Tickets, VIEW, Scope::DepartmentTree),
            (Reports, VIEW, Scope::DepartmentTree),
        ]),
    );
    let mut rep = role(
        ROLE_REP,
        "销售代表 Sales representative",
        "Sees and edits own customers, contacts, leads, opportunities and activities (本人).",
        perms(&[
            (Customers, OWN_WORK, Scope::Own),
            (Contacts, &[Action::View, Action::Create, Action::Edit, Action::Delete], Scope::Own),
            (Leads, &[Action::View, Action::Create, Action::Edit, Action::Delete], Scope::Own),
            (Opportunities, OWN_WORK, Scope::Own),
            (Activities, &[Action::View, Action::Create, Action::Edit, Action::Delete], Scope::Own),
            (Tickets, &[Action::View, Action::Create], Scope::Own),
        ]),
    );
    rep.fields.insert(Customers, BTreeMap::from([("annual_revenue".to_string(), FieldAccess::ReadOnly)]));

    let mut service = role(
        ROLE_SERVICE,
        "客服专员 Customer service",
        "Reads customers, works all service tickets, has no access to opportunities.",
        perms(&[
            (Customers, VIEW, Scope::All),
            (Contacts, VIEW, Scope::All),
            (Tickets, ALL_ACTIONS, Scope::All),
            (Activities, &[Action::View, Action::Create, Action::Edit], Scope::Own),
        ]),
    );
    service.fields.insert(
        Customers,
        BTreeMap::from([
            ("annual_revenue".to_string(), FieldAccess::Hidden),
            ("phone".to_string(), FieldAccess::Masked),
            ("email".to_string(), FieldAccess::Masked),
        ]),
    );
    service.fields.insert(
        Contacts,
        BTreeMap::from([("phone".to_string(), FieldAccess::Masked), ("email".to_string(), FieldAccess::Masked)]),
    );
    service.reveal = [Customers, Contacts].into_iter().collect();

    let analyst = role(
        ROLE_ANALYST,
        "区域分析师 Regional analyst",
        "Own records only; partition grants add read-only regions.",
        perms(&[
            (Customers, OWN_WORK, Scope::Own),
            (Opportunities, OWN_WORK, Scope::Own),
            (Contacts, VIEW, Scope::Own),
        ]),
    );

    let dims = [
        ("region", "区域 Region"),
        ("customer_type", "客户类型 Customer type"),
        ("business_line", "业务线 Business line"),
    ];
    PolicyConfig {
        roles: vec![admin, auditor, director, manager, rep, service, analyst],
        defaults: BTreeMap::from([(Contacts, OrgDefault::ControlledByParent)]),
        dimensions: dims
            .iter()
            .map(|(k, l)| Dimension { key: (*k).into(), label: (*l).into(), field: (*k).into(), values: Vec::new() })
            .collect(),
        partition_grants: Vec::new(),
        sharing_rules: Vec::new(),
        restriction_rules: vec![RestrictionRule {
            id: 1,
            name: "客服不查看政府客户 Service never sees government customers".into(),
            module: Customers,
            applies_to: Grantee::Role { id: ROLE_SERVICE },
            criteria: vec![Criterion { field: "customer_type".into(), op: CmpOp::Ne, value: "government".into() }],
            exempt_administrators: false,
        }],
        groups: Vec::new(),
    }
}

/// The demo's additions: a read-only partition grant for the 华东 analyst and a key-account sharing rule.
pub fn demo_policy(analyst: i64, key_account_members: Vec<i64>) -> PolicyConfig {
    let mut p = standard_policy();
    p.partition_grants.push(PartitionGrant {
        id: 1,
        grantee: Grantee::User { id: analyst },
        modules: vec![Module::Customers, Module::Opportunities],
        partitions: BTreeMap::from([("region".to_string(), vec!["华东".to_string()])]),
        level: crm_domain::Level::Read,
    });
    p.groups.push(Group {
        id: GROUP_KEY_ACCOUNTS,
        name: "大客户小组 Key accounts".into(),
        users: key_account_members,
        departments: Vec::new(),
    });
    p.sharing_rules.push(SharingRule {
        id: 1,
        name: "大客户共享 Key accounts (revenue over ¥100M) shared with the key-account group".into(),
        module: Module::Customers,
        source: RuleSource::Criteria {
            criteria: vec![Criterion {
                field: "annual_revenue".into(),
                op: CmpOp::Gt,
                value: 10_000_000_000i64.into(),
            }],
        },
        share_with: Grantee::Group { id: GROUP_KEY_ACCOUNTS },
        level: crm_domain::Level::Read,
    });
    p
}
