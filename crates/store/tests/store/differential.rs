//! The key promise (permission model §4, "one answer everywhere"): the SQL list filter and the in-memory
//! single-record decision are two evaluators of one policy and never disagree.
//!
//! proptest generates small random organizations: a department tree, users with managers, departments, roles and
//! statuses, roles with module permissions and scopes on customers and contacts (sometimes view-all or
//! modify-all), organization defaults (contacts sometimes controlled by their account), groups, partition grants
//! over region / customer type / business line, sharing rules by owner and by criteria, restriction rules, manual
//! shares and record-team entries, and 10-40 customers with contacts. Each world is built in a fresh organization
//! of one database per engine, through `SystemAccess` (users are inserted with SQL to skip password hashing), and
//! for every user (active or not), every action and every record of both modules:
//!
//! - `Scoped::visible_ids` (SQL) equals the ids where `Scoped::decide_each` (in memory, facts loaded by the store)
//!   is true;
//! - `Access::decide` over facts built independently from the generated world agrees, and so does
//!   `Access::explain(..).allowed`;
//! - for `view`, `Scoped::count` agrees, with every count plan (one query, the disjoint branch sum, the complement
//!   of a view-all user's exclusions), also under a filter (against a walk of the list's pages with the same
//!   filter); the run fails if no world gave the complement plan a predicate it applies to.
//!
//! At least 100,000 (user, action, record) pairs are checked per engine; `CRM_DIFFERENTIAL_PAIRS` scales it up.
//! A failure shrinks to a minimal world, printed with database ids, the user's compiled predicate and the facts.

use crate::support::{Env, Org, Raw, allow, open, role};
use crate::testdb::{TestDatabase, engines};
use crm_domain::{Action, CUSTOMER_TYPES, DeptId, Level, Module, OrgId, Record, RecordId, UserId, Value, schema};
use crm_policy::{
    CmpOp, Criterion, Dimension, Grantee, Group, OrgDefault, PartitionGrant, PolicyConfig, RecordFacts,
    RestrictionRule, Role, RuleSource, Scope, ShareEntry, ShareKey, SharingRule, TeamEntry, UserStatus,
};
use crm_store::{CountPlan, FieldFilter, ListPlan, ListQuery, Store, StoreError};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestError, TestRunner};
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

// ---------------------------------------------------------------------------------------------------------------
// The generated world. References are small indices resolved modulo the size of what they point at, so every
// shrunk world is still valid.

#[derive(Debug, Clone)]
struct WorldSpec {
    /// Department `i > 0` hangs under department `p % i`, or is a root when `None`. Department 0 is a root.
    departments: Vec<Option<u8>>,
    roles: Vec<RoleSpec>,
    users: Vec<UserSpec>,
    customers_default: OrgDefault,
    contacts_default: OrgDefault,
    groups: Vec<GroupSpec>,
    partition_grants: Vec<PartitionGrantSpec>,
    sharing_rules: Vec<SharingRuleSpec>,
    restriction_rules: Vec<RestrictionSpec>,
    customers: Vec<CustomerSpec>,
    contacts: Vec<ContactSpec>,
    shares: Vec<ShareSpec>,
    team: Vec<TeamSpec>,
}

#[derive(Debug, Clone)]
struct RoleSpec {
    customers: BTreeMap<Action, Scope>,
    contacts: BTreeMap<Action, Scope>,
    view_all: bool,
    modify_all: bool,
}

#[derive(Debug, Clone)]
struct UserSpec {
    /// The manager is an earlier user (`m % i`), so the reporting line has no cycle.
    manager: Option<u8>,
    departments: Vec<u8>,
    roles: Vec<u8>,
    status: UserStatus,
}

#[derive(Debug, Clone, Copy)]
enum GranteeSpec {
    User(u8),
    Department(u8, bool),
    Role(u8),
    Group(u8),
}

#[derive(Debug, Clone)]
struct GroupSpec {
    users: Vec<u8>,
    departments: Vec<(u8, bool)>,
}

#[derive(Debug, Clone)]
struct PartitionGrantSpec {
    grantee: GranteeSpec,
    /// 0: every module, 1: customers, 2: contacts (which have no partition field), 3: both.
    modules: u8,
    /// (dimension, values)
    partitions: Vec<(u8, Vec<u8>)>,
    level: Level,
}

#[derive(Debug, Clone)]
struct CritSpec {
    field: u8,
    op: u8,
    values: Vec<u8>,
}

#[derive(Debug, Clone)]
enum SourceSpec {
    OwnedBy(GranteeSpec),
    Criteria(Vec<CritSpec>),
}

#[derive(Debug, Clone)]
struct SharingRuleSpec {
    contacts: bool,
    source: SourceSpec,
    share_with: GranteeSpec,
    level: Level,
}

#[derive(Debug, Clone)]
struct RestrictionSpec {
    contacts: bool,
    applies_to: GranteeSpec,
    criteria: Vec<CritSpec>,
    exempt_administrators: bool,
}

/// Field values are indices into the pools below; 0 is a missing value (NULL).
#[derive(Debug, Clone)]
struct CustomerSpec {
    owner: u8,
    /// Owned by a user of another organization (the store does not check owners on the seed path).
    foreign_owner: bool,
    region: u8,
    customer_type: u8,
    business_line: u8,
    industry: u8,
    revenue: u8,
}

#[derive(Debug, Clone)]
struct ContactSpec {
    owner: u8,
    account: u8,
    /// 0: an account of this organization; 1: an id that does not exist; 2: another organization's account.
    dangling: u8,
    name: u8,
    title: u8,
}

#[derive(Debug, Clone)]
struct ShareSpec {
    contact: bool,
    record: u8,
    /// 0 user, 1 group, 2 department, 3 role.
    kind: u8,
    target: u8,
    level: Level,
}

#[derive(Debug, Clone)]
struct TeamSpec {
    contact: bool,
    record: u8,
    user: u8,
    level: Level,
}

const REGION_POOL: &[&str] = &["华北", "华东", "华南", "西北"];
const LINE_POOL: &[&str] = &["cloud", "erp", "ai"];
const INDUSTRY_POOL: &[&str] = &["finance", "retail", "energy"];
const REVENUE_POOL: &[i64] = &[0, 500_000, 1_000_000, 1_500_000, 2_000_000];
const TITLE_POOL: &[&str] = &["manager", "engineer", "buyer"];
const NAME_POOL: &[&str] = &["张三", "李四", "Wang", "Smith"];
/// Partition values that records may carry; each dimension's pool includes one value no record has.
const TYPE_POOL: &[&str] = &["enterprise", "smb", "government"];

fn level() -> impl Strategy<Value = Level> {
    prop::sample::select(Level::ALL.to_vec())
}

fn grantee() -> impl Strategy<Value = GranteeSpec> {
    prop_oneof![
        any::<u8>().prop_map(GranteeSpec::User),
        (any::<u8>(), any::<bool>()).prop_map(|(d, s)| GranteeSpec::Department(d, s)),
        any::<u8>().prop_map(GranteeSpec::Role),
        any::<u8>().prop_map(GranteeSpec::Group),
    ]
}

fn crit() -> impl Strategy<Value = CritSpec> {
    (any::<u8>(), any::<u8>(), prop::collection::vec(any::<u8>(), 1..=3)).prop_map(|(field, op, values)| CritSpec {
        field,
        op,
        values,
    })
}

fn scopes() -> impl Strategy<Value = BTreeMap<Action, Scope>> {
    let scope = prop::sample::select(vec![
        Scope::Own,
        Scope::Subordinates,
        Scope::Department,
        Scope::DepartmentTree,
        Scope::All,
    ]);
    prop::collection::btree_map(prop::sample::select(Action::ALL.to_vec()), scope, 0..=8)
}

fn world() -> impl Strategy<Value = WorldSpec> {
    let role = (scopes(), scopes(), prop::bool::weighted(0.15), prop::bool::weighted(0.08))
        .prop_map(|(customers, contacts, view_all, modify_all)| RoleSpec { customers, contacts, view_all, modify_all });
    let status = prop_oneof![
        6 => Just(UserStatus::Active),
        1 => Just(UserStatus::Locked),
        1 => Just(UserStatus::Deactivated),
    ];
    let user = (
        prop::option::weighted(0.7, any::<u8>()),
        // Usually one or two departments, sometimes none.
        prop::collection::vec(any::<u8>(), 0..=2),
        prop::collection::vec(any::<u8>(), 0..=2),
        status,
    )
        .prop_map(|(manager, departments, roles, status)| UserSpec { manager, departments, roles, status });
    let group = (prop::collection::vec(any::<u8>(), 0..=3), prop::collection::vec((any::<u8>(), any::<bool>()), 0..=2))
        .prop_map(|(users, departments)| GroupSpec { users, departments });
    let partition = (
        grantee(),
        0u8..4,
        prop::collection::vec((any::<u8>(), prop::collection::vec(any::<u8>(), 1..=2)), 1..=2),
        level(),
    )
        .prop_map(|(grantee, modules, partitions, level)| PartitionGrantSpec {
            grantee,
            modules,
            partitions,
            level,
        });
    let source = prop_oneof![
        grantee().prop_map(SourceSpec::OwnedBy),
        prop::collection::vec(crit(), 1..=2).prop_map(SourceSpec::Criteria),
    ];
    let sharing = (any::<bool>(), source, grantee(), level())
        .prop_map(|(contacts, source, share_with, level)| SharingRuleSpec { contacts, source, share_with, level });
    let restriction = (any::<bool>(), grantee(), prop::collection::vec(crit(), 1..=2), any::<bool>()).prop_map(
        |(contacts, applies_to, criteria, exempt_administrators)| RestrictionSpec {
            contacts,
            applies_to,
            criteria,
            exempt_administrators,
        },
    );
    let customer =
        (any::<u8>(), prop::bool::weighted(0.03), any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>())
            .prop_map(|(owner, foreign_owner, region, customer_type, business_line, industry, revenue)| CustomerSpec {
                owner,
                foreign_owner,
                region,
                customer_type,
                business_line,
                industry,
                revenue,
            });
    let dangling = prop_oneof![12 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)];
    let contact = (any::<u8>(), any::<u8>(), dangling, any::<u8>(), any::<u8>())
        .prop_map(|(owner, account, dangling, name, title)| ContactSpec { owner, account, dangling, name, title });
    let share = (any::<bool>(), any::<u8>(), 0u8..4, any::<u8>(), level())
        .prop_map(|(contact, record, kind, target, level)| ShareSpec { contact, record, kind, target, level });
    let team = (any::<bool>(), any::<u8>(), any::<u8>(), level()).prop_map(|(contact, record, user, level)| TeamSpec {
        contact,
        record,
        user,
        level,
    });
    let customers_default =
        prop::sample::select(vec![OrgDefault::Private, OrgDefault::PublicRead, OrgDefault::PublicReadWrite]);
    let contacts_default = prop::sample::select(vec![
        OrgDefault::Private,
        OrgDefault::PublicRead,
        OrgDefault::PublicReadWrite,
        OrgDefault::ControlledByParent,
    ]);
    (
        (
            prop::collection::vec(prop::option::weighted(0.85, any::<u8>()), 1..=6),
            prop::collection::vec(role, 1..=4),
            prop::collection::vec(user, 3..=12),
            customers_default,
            contacts_default,
            prop::collection::vec(group, 0..=3),
            prop::collection::vec(partition, 0..=3),
        ),
        (
            prop::collection::vec(sharing, 0..=4),
            prop::collection::vec(restriction, 0..=2),
            prop::collection::vec(customer, 10..=40),
            prop::collection::vec(contact, 0..=30),
            prop::collection::vec(share, 0..=12),
            prop::collection::vec(team, 0..=12),
        ),
    )
        .prop_map(
            |(
                (departments, roles, users, customers_default, contacts_default, groups, partition_grants),
                (sharing_rules, restriction_rules, customers, contacts, shares, team),
            )| WorldSpec {
                departments,
                roles,
                users,
                customers_default,
                contacts_default,
                groups,
                partition_grants,
                sharing_rules,
                restriction_rules,
                customers,
                contacts,
                shares,
                team,
            },
        )
}

// ---------------------------------------------------------------------------------------------------------------
// Resolution against database ids.

fn pick<T: Copy>(pool: &[T], i: u8) -> T {
    pool[i as usize % pool.len()]
}

/// 0 is NULL, otherwise a pool value.
fn nullable_text(pool: &[&str], i: u8) -> Value {
    match i as usize % (pool.len() + 1) {
        0 => Value::Null,
        n => Value::Text(pool[n - 1].to_string()),
    }
}

fn role_id(i: usize) -> i64 {
    i as i64 + 1
}
fn group_id(i: usize) -> i64 {
    i as i64 + 101
}

/// Everything the built world is made of, with database ids: what a failure prints.
#[derive(Debug, Clone)]
struct Built {
    org: OrgId,
    departments: Vec<(DeptId, Option<DeptId>)>,
    /// (id, manager, departments, roles, status)
    users: Vec<(UserId, Option<UserId>, Vec<DeptId>, Vec<i64>, UserStatus)>,
    config: PolicyConfig,
    customers: Vec<Record>,
    contacts: Vec<Record>,
    /// (module, record, key, level)
    shares: Vec<(Module, RecordId, ShareKey, Level)>,
    /// (module, record, user, level)
    team: Vec<(Module, RecordId, UserId, Level)>,
}

impl Built {
    fn grantee(&self, g: GranteeSpec, spec: &WorldSpec) -> Grantee {
        match g {
            GranteeSpec::User(i) => Grantee::User { id: pick_user(&self.users, i) },
            GranteeSpec::Department(i, include_sub) => {
                Grantee::Department { id: pick(&self.department_ids(), i), include_sub }
            }
            GranteeSpec::Role(i) => Grantee::Role { id: role_id(i as usize % spec.roles.len()) },
            GranteeSpec::Group(i) if spec.groups.is_empty() => {
                Grantee::Role { id: role_id(i as usize % spec.roles.len()) }
            }
            GranteeSpec::Group(i) => Grantee::Group { id: group_id(i as usize % spec.groups.len()) },
        }
    }

    fn department_ids(&self) -> Vec<DeptId> {
        self.departments.iter().map(|d| d.0).collect()
    }

    fn criterion(&self, module: Module, c: &CritSpec) -> Criterion {
        use CmpOp::*;
        const EQUALITY: &[CmpOp] = &[Eq, Ne, In, NotIn];
        const ORDERED: &[CmpOp] = &[Eq, Ne, In, NotIn, Gt, Gte, Lt, Lte];
        let users: Vec<i64> = self.users.iter().map(|u| u.0).collect();
        let customers: Vec<i64> = self.customers.iter().map(|r| r.id).collect();
        let texts = |pool: &[&str]| -> Vec<serde_json::Value> { pool.iter().map(|s| serde_json::json!(s)).collect() };
        let ints = |pool: &[i64]| -> Vec<serde_json::Value> { pool.iter().map(|i| serde_json::json!(i)).collect() };
        let (field, ops, pool): (&str, &[CmpOp], Vec<serde_json::Value>) = match module {
            Module::Customers => match c.field % 6 {
                0 => ("customer_type", EQUALITY, texts(CUSTOMER_TYPES)),
                1 => ("region", EQUALITY, texts(REGION_POOL)),
                2 => ("business_line", EQUALITY, texts(LINE_POOL)),
                3 => ("industry", EQUALITY, texts(INDUSTRY_POOL)),
                4 => ("annual_revenue", ORDERED, ints(&[0, 500_000, 750_000, 1_000_000, 2_000_000])),
                _ => ("owner_id", ORDERED, ints(&users)),
            },
            _ => match c.field % 4 {
                0 => ("title", EQUALITY, texts(TITLE_POOL)),
                1 => ("account_id", ORDERED, ints(&customers)),
                2 => ("owner_id", ORDERED, ints(&users)),
                _ => ("name", EQUALITY, texts(NAME_POOL)),
            },
        };
        let op = pick(ops, c.op);
        let values: Vec<serde_json::Value> = c.values.iter().map(|v| pool[*v as usize % pool.len()].clone()).collect();
        let value = match op {
            In | NotIn => serde_json::Value::Array(values),
            _ => values[0].clone(),
        };
        Criterion { field: field.to_string(), op, value }
    }

    fn resolve_config(&self, spec: &WorldSpec) -> PolicyConfig {
        let roles = spec
            .roles
            .iter()
            .enumerate()
            .map(|(i, r)| Role {
                id: role_id(i),
                name: format!("role {}", i + 1),
                description: String::new(),
                permissions: BTreeMap::from([
                    (Module::Customers, r.customers.clone()),
                    (Module::Contacts, r.contacts.clone()),
                ]),
                view_all: r.view_all,
                modify_all: r.modify_all,
                fields: BTreeMap::new(),
                reveal: Default::default(),
                require_mfa: false,
            })
            .collect();
        let dim = |key: &str| Dimension { key: key.into(), label: key.into(), field: key.into(), values: Vec::new() };
        let depts = self.department_ids();
        let groups = spec
            .groups
            .iter()
            .enumerate()
            .map(|(i, g)| Group {
                id: group_id(i),
                name: format!("group {}", i + 1),
                users: g
                    .users
                    .iter()
                    .map(|u| pick_user(&self.users, *u))
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect(),
                departments: g
                    .departments
                    .iter()
                    .map(|(d, s)| (pick(&depts, *d), *s))
                    .collect::<BTreeMap<_, _>>()
                    .into_iter()
                    .collect(),
            })
            .collect();
        let partition_grants = spec
            .partition_grants
            .iter()
            .enumerate()
            .map(|(i, g)| PartitionGrant {
                id: i as i64 + 1,
                grantee: self.grantee(g.grantee, spec),
                modules: match g.modules {
                    0 => vec![],
                    1 => vec![Module::Customers],
                    2 => vec![Module::Contacts],
                    _ => vec![Module::Customers, Module::Contacts],
                },
                partitions: g
                    .partitions
                    .iter()
                    .map(|(d, values)| {
                        let (key, pool) = match d % 3 {
                            0 => ("region", REGION_POOL),
                            1 => ("customer_type", TYPE_POOL),
                            _ => ("business_line", LINE_POOL),
                        };
                        let vals: BTreeSet<String> = values.iter().map(|v| pick(pool, *v).to_string()).collect();
                        (key.to_string(), vals.into_iter().collect())
                    })
                    .collect(),
                level: g.level,
            })
            .collect();
        let module = |contacts: bool| if contacts { Module::Contacts } else { Module::Customers };
        let sharing_rules = spec
            .sharing_rules
            .iter()
            .enumerate()
            .map(|(i, r)| SharingRule {
                id: i as i64 + 1,
                name: format!("sharing rule {}", i + 1),
                module: module(r.contacts),
                source: match &r.source {
                    SourceSpec::OwnedBy(g) => RuleSource::OwnedBy { owners: self.grantee(*g, spec) },
                    SourceSpec::Criteria(cs) => RuleSource::Criteria {
                        criteria: cs.iter().map(|c| self.criterion(module(r.contacts), c)).collect(),
                    },
                },
                share_with: self.grantee(r.share_with, spec),
                level: r.level,
            })
            .collect();
        let restriction_rules = spec
            .restriction_rules
            .iter()
            .enumerate()
            .map(|(i, r)| RestrictionRule {
                id: i as i64 + 1,
                name: format!("restriction {}", i + 1),
                module: module(r.contacts),
                applies_to: self.grantee(r.applies_to, spec),
                criteria: r.criteria.iter().map(|c| self.criterion(module(r.contacts), c)).collect(),
                exempt_administrators: r.exempt_administrators,
            })
            .collect();
        PolicyConfig {
            roles,
            defaults: BTreeMap::from([
                (Module::Customers, spec.customers_default),
                (Module::Contacts, spec.contacts_default),
            ]),
            dimensions: vec![dim("region"), dim("customer_type"), dim("business_line")],
            partition_grants,
            sharing_rules,
            restriction_rules,
            groups,
        }
    }

    /// The facts of a record as the world says they are, built without the store.
    fn facts(&self, module: Module, id: RecordId) -> Option<RecordFacts> {
        let records = if module == Module::Customers { &self.customers } else { &self.contacts };
        let record = records.iter().find(|r| r.id == id)?.clone();
        let mut facts = RecordFacts::new(record);
        facts.team = self
            .team
            .iter()
            .filter(|t| t.0 == module && t.1 == id)
            .map(|t| TeamEntry { user: t.2, level: t.3 })
            .collect();
        facts.shares = self
            .shares
            .iter()
            .filter(|s| s.0 == module && s.1 == id)
            .map(|s| ShareEntry { key: s.2, level: s.3 })
            .collect();
        if module == Module::Contacts
            && let Some(account) = facts.record.fields.get("account_id").and_then(Value::as_int)
        {
            facts.parent = self.facts(Module::Customers, account).map(Box::new);
        }
        Some(facts)
    }
}

fn pick_user(users: &[(UserId, Option<UserId>, Vec<DeptId>, Vec<i64>, UserStatus)], i: u8) -> UserId {
    users[i as usize % users.len()].0
}

fn record(module: Module, id: RecordId, org: OrgId, owner: UserId, values: BTreeMap<&'static str, Value>) -> Record {
    let s = schema(module).expect("record module");
    let fields = s.fields.iter().map(|f| (f.name, values.get(f.name).cloned().unwrap_or(Value::Null))).collect();
    Record { module, id, org_id: org, owner_id: owner, created_at: 0, updated_at: 0, fields }
}

/// Another organization in the same database, whose user and account the generated worlds may point at.
struct Foreign {
    user: UserId,
    customer: RecordId,
}

async fn foreign_org(store: &Store, raw: &Raw) -> Foreign {
    let sys = store.unscoped_system_access();
    let config = PolicyConfig {
        defaults: BTreeMap::from([
            (Module::Customers, OrgDefault::PublicReadWrite),
            (Module::Contacts, OrgDefault::PublicReadWrite),
        ]),
        ..PolicyConfig::default()
    };
    let org = sys.create_organization("foreign", "Foreign", &config).await.expect("foreign org");
    let user = insert_user(raw, org, "foreign-owner", None, "active").await;
    let customer = sys
        .seed_records(org, Module::Customers, &[(user, BTreeMap::from([("name", Value::Text("Foreign Co".into()))]))])
        .await
        .expect("foreign customer")[0];
    Foreign { user, customer }
}

async fn insert_user(raw: &Raw, org: OrgId, username: &str, manager: Option<UserId>, status: &str) -> UserId {
    let manager = manager.map(|m| m.to_string()).unwrap_or_else(|| "NULL".into());
    raw.int(format!(
        "INSERT INTO users (org_id, username, display_name, email, password_hash, status, manager_id, must_change_password, \
         created_at, updated_at) VALUES ({org}, '{username}', '{username}', NULL, 'no-password', '{status}', {manager}, 0, 0, 0) \
         RETURNING id"
    ))
    .await
}

/// Builds the world in a new organization: departments and records through `SystemAccess`, users, shares and
/// team entries with SQL, and the policy last (bumping the policy version once more).
async fn build(store: &Store, raw: &Raw, foreign: &Foreign, spec: &WorldSpec, n: u64) -> Built {
    let sys = store.unscoped_system_access();
    let org =
        sys.create_organization(&format!("world-{n}"), "World", &PolicyConfig::default()).await.expect("organization");
    let mut departments: Vec<(DeptId, Option<DeptId>)> = Vec::new();
    for (i, parent) in spec.departments.iter().enumerate() {
        let parent = match (i, parent) {
            (0, _) | (_, None) => None,
            (i, Some(p)) => Some(departments[*p as usize % i].0),
        };
        let id = sys.create_department(org, parent, &format!("dept {i}")).await.expect("department");
        departments.push((id, parent));
    }
    let dept_ids: Vec<DeptId> = departments.iter().map(|d| d.0).collect();
    let mut users: Vec<(UserId, Option<UserId>, Vec<DeptId>, Vec<i64>, UserStatus)> = Vec::new();
    for (i, u) in spec.users.iter().enumerate() {
        let manager = match (i, u.manager) {
            (0, _) | (_, None) => None,
            (i, Some(m)) => Some(users[m as usize % i].0),
        };
        let id = insert_user(raw, org, &format!("user{i}"), manager, u.status.as_str()).await;
        let mut depts: Vec<DeptId> = Vec::new();
        for d in &u.departments {
            let d = pick(&dept_ids, *d);
            if !depts.contains(&d) {
                depts.push(d);
            }
        }
        let roles: Vec<i64> = u
            .roles
            .iter()
            .map(|r| role_id(*r as usize % spec.roles.len()))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        users.push((id, manager, depts, roles, u.status));
    }
    let mut batch = String::new();
    for (id, _, depts, roles, _) in &users {
        for (i, d) in depts.iter().enumerate() {
            let primary = i64::from(i == 0);
            let _ = write!(
                batch,
                "INSERT INTO user_departments (org_id, user_id, department_id, is_primary) VALUES ({org}, {id}, {d}, {primary});"
            );
        }
        for r in roles {
            let _ = write!(batch, "INSERT INTO user_roles (org_id, user_id, role_id) VALUES ({org}, {id}, {r});");
        }
    }
    raw_batch(raw, &batch).await;

    let user_ids: Vec<UserId> = users.iter().map(|u| u.0).collect();
    let customer_rows: Vec<(UserId, BTreeMap<&'static str, Value>)> = spec
        .customers
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let owner = if c.foreign_owner { foreign.user } else { pick(&user_ids, c.owner) };
            let revenue = match c.revenue as usize % (REVENUE_POOL.len() + 1) {
                0 => Value::Null,
                n => Value::Int(REVENUE_POOL[n - 1]),
            };
            let fields = BTreeMap::from([
                ("name", Value::Text(format!("Customer {i}"))),
                ("region", nullable_text(&REGION_POOL[..3], c.region)),
                ("customer_type", nullable_text(TYPE_POOL, c.customer_type)),
                ("business_line", nullable_text(&LINE_POOL[..2], c.business_line)),
                ("industry", nullable_text(&INDUSTRY_POOL[..2], c.industry)),
                ("annual_revenue", revenue),
            ]);
            (owner, fields)
        })
        .collect();
    let customer_ids = sys.seed_records(org, Module::Customers, &customer_rows).await.expect("customers");
    let customers: Vec<Record> = customer_ids
        .iter()
        .zip(customer_rows)
        .map(|(id, (owner, f))| record(Module::Customers, *id, org, owner, f))
        .collect();

    let contact_rows: Vec<(UserId, BTreeMap<&'static str, Value>)> = spec
        .contacts
        .iter()
        .map(|c| {
            let account = match c.dangling {
                0 => pick(&customer_ids, c.account),
                1 => 900_000_000_000 + i64::from(c.account),
                _ => foreign.customer,
            };
            let fields = BTreeMap::from([
                ("account_id", Value::Int(account)),
                ("name", Value::Text(pick(NAME_POOL, c.name).to_string())),
                ("title", nullable_text(TITLE_POOL, c.title)),
            ]);
            (pick(&user_ids, c.owner), fields)
        })
        .collect();
    let contact_ids = if contact_rows.is_empty() {
        Vec::new()
    } else {
        sys.seed_records(org, Module::Contacts, &contact_rows).await.expect("contacts")
    };
    let contacts: Vec<Record> = contact_ids
        .iter()
        .zip(contact_rows)
        .map(|(id, (owner, f))| record(Module::Contacts, *id, org, owner, f))
        .collect();

    let mut built = Built {
        org,
        departments,
        users,
        config: PolicyConfig::default(),
        customers,
        contacts,
        shares: Vec::new(),
        team: Vec::new(),
    };

    // Manual shares and team entries, one per (record, key) as the tables' keys require.
    let target = |contact: bool, i: u8| -> Option<(Module, RecordId)> {
        if contact {
            (!contact_ids.is_empty()).then(|| (Module::Contacts, pick(&contact_ids, i)))
        } else {
            Some((Module::Customers, pick(&customer_ids, i)))
        }
    };
    let mut batch = String::new();
    let mut seen = BTreeSet::new();
    for s in &spec.shares {
        let Some((module, id)) = target(s.contact, s.record) else { continue };
        let key = match s.kind % 4 {
            0 => ShareKey::User(pick(&user_ids, s.target)),
            // A group id may name no group: such a share reaches nobody.
            1 => ShareKey::Group(group_id(s.target as usize % (spec.groups.len() + 1))),
            2 => ShareKey::Department(pick(&dept_ids, s.target)),
            _ => ShareKey::Role(role_id(s.target as usize % spec.roles.len())),
        };
        if seen.insert((module, id, key)) {
            let _ = write!(
                batch,
                "INSERT INTO record_shares (org_id, module, record_id, share_key, level, created_by, created_at) VALUES \
                 ({org}, '{}', {id}, '{}', {}, {}, 0);",
                module.as_str(),
                key.encode(),
                s.level.as_i64(),
                user_ids[0]
            );
            built.shares.push((module, id, key, s.level));
        }
    }
    let mut seen = BTreeSet::new();
    for t in &spec.team {
        let Some((module, id)) = target(t.contact, t.record) else { continue };
        let user = pick(&user_ids, t.user);
        if seen.insert((module, id, user)) {
            let _ = write!(
                batch,
                "INSERT INTO record_team (org_id, module, record_id, user_id, level) VALUES ({org}, '{}', {id}, {user}, {});",
                module.as_str(),
                t.level.as_i64()
            );
            built.team.push((module, id, user, t.level));
        }
    }
    raw_batch(raw, &batch).await;

    let config = built.resolve_config(spec);
    sys.set_policy(org, None, &config).await.unwrap_or_else(|e| panic!("generated policy refused: {e}\n{config:#?}"));
    built.config = config;
    built
}

async fn raw_batch(raw: &Raw, sql: &str) {
    if sql.is_empty() {
        return;
    }
    let mut tx = raw.pool.begin().await.expect("begin");
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(&mut *tx)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    tx.commit().await.expect("commit");
}

// ---------------------------------------------------------------------------------------------------------------
// The check.

const MODULES: [Module; 2] = [Module::Customers, Module::Contacts];

/// Pairs checked and, of those, pairs allowed.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    pairs: u64,
    allowed: u64,
    /// Counts the complement plan answered with its own statement (a view-all predicate with exclusions).
    complements: u64,
}

/// Checks every (user, action, record) of the built world. Users are checked concurrently (each on its own
/// connection); the first failure in user order is reported, so a failing world fails the same way every time.
async fn check(store: &Store, built: &std::sync::Arc<Built>) -> Result<Tally, String> {
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (user, ..)) in built.users.iter().enumerate() {
        let (store, built, user) = (store.clone(), std::sync::Arc::clone(built), *user);
        tasks.spawn(async move { (i, check_user(&store, &built, user).await) });
    }
    let mut results = tasks.join_all().await;
    results.sort_by_key(|(i, _)| *i);
    let mut total = Tally::default();
    for (_, r) in results {
        let t = r?;
        total.pairs += t.pairs;
        total.allowed += t.allowed;
        total.complements += t.complements;
    }
    Ok(total)
}

async fn check_user(store: &Store, built: &Built, user: UserId) -> Result<Tally, String> {
    let sys = store.unscoped_system_access();
    let mut tally = Tally::default();
    {
        let principal = sys.principal_for(built.org, user).await.map_err(|e| format!("principal_for {user}: {e}"))?;
        let scoped = store.scoped(principal);
        let access = scoped.access();
        for module in MODULES {
            let records = if module == Module::Customers { &built.customers } else { &built.contacts };
            let all: Vec<RecordId> = records.iter().map(|r| r.id).collect();
            for action in Action::ALL {
                let fail = |what: String, id: Option<RecordId>| {
                    let facts = id.and_then(|id| built.facts(module, id));
                    format!(
                        "{what}\nuser {user}, {module} {action}\ncompiled predicate: {:#?}\nrecord facts: {facts:#?}",
                        access.labelled_pred(module, action)
                    )
                };
                let sql =
                    scoped.visible_ids(module, action).await.map_err(|e| fail(format!("visible_ids: {e}"), None))?;
                let each =
                    scoped.decide_each(module, action).await.map_err(|e| fail(format!("decide_each: {e}"), None))?;
                let each_ids: Vec<RecordId> = each.iter().map(|(id, _)| *id).collect();
                if each_ids != all {
                    return Err(fail(format!("decide_each covers {each_ids:?}, the organization has {all:?}"), None));
                }
                let memory: Vec<RecordId> = each.iter().filter(|(_, d)| *d).map(|(id, _)| *id).collect();
                if sql != memory {
                    let s: BTreeSet<_> = sql.iter().copied().collect();
                    let m: BTreeSet<_> = memory.iter().copied().collect();
                    let only_sql: Vec<_> = s.difference(&m).collect();
                    let only_memory: Vec<_> = m.difference(&s).collect();
                    let first = only_sql.first().or(only_memory.first()).map(|i| **i);
                    return Err(fail(
                        format!(
                            "SQL and in-memory evaluators disagree: only in SQL {only_sql:?}, only in memory {only_memory:?}"
                        ),
                        first,
                    ));
                }
                for (id, decided) in &each {
                    let facts =
                        built.facts(module, *id).ok_or_else(|| fail(format!("record {id} not in the world"), None))?;
                    let model = access.decide(module, action, &facts);
                    if model != *decided {
                        return Err(fail(
                            format!(
                                "the store's facts decide {decided}, the world's facts decide {model} for record {id}"
                            ),
                            Some(*id),
                        ));
                    }
                    let explained = access.explain(module, action, &facts);
                    if explained.allowed != *decided {
                        return Err(fail(
                            format!("explain says {explained:?}, decide says {decided} for record {id}"),
                            Some(*id),
                        ));
                    }
                }
                tally.pairs += each.len() as u64;
                tally.allowed += memory.len() as u64;
                if action == Action::View {
                    match scoped.count(module, &ListQuery::default()).await {
                        Ok(n) if n == memory.len() as i64 => {}
                        Err(StoreError::NotFound) if memory.is_empty() && !access.can(module, Action::View) => {}
                        other => return Err(fail(format!("count says {other:?}, {} visible", memory.len()), None)),
                    }
                    if access.can(module, Action::View) {
                        check_list_plans(&scoped, module, &memory).await.map_err(|e| fail(e, None))?;
                        check_count_plans(&scoped, module, memory.len()).await.map_err(|e| fail(e, None))?;
                        let plain = scoped.count_statement(module, &ListQuery::default(), CountPlan::Single);
                        let complement = scoped.count_statement(module, &ListQuery::default(), CountPlan::Complement);
                        if plain.map_err(|e| fail(e.to_string(), None))?
                            != complement.map_err(|e| fail(e.to_string(), None))?
                        {
                            tally.complements += 1;
                        }
                    }
                }
            }
        }
    }
    Ok(tally)
}

/// Every list plan walks the same pages, in the same order, over exactly the visible records: one query, a probe
/// of a few rows, and one query per grant branch; by last update and by name, both directions, small pages.
async fn check_list_plans(scoped: &crm_store::Scoped<'_>, module: Module, visible: &[RecordId]) -> Result<(), String> {
    let want: BTreeSet<RecordId> = visible.iter().copied().collect();
    for (sort, asc) in [(None, false), (Some("name"), true)] {
        let mut walks: Vec<(ListPlan, Vec<RecordId>)> = Vec::new();
        for plan in [ListPlan::Single, ListPlan::Probe(3), ListPlan::Branches, ListPlan::Auto] {
            let mut q = ListQuery { sort: sort.map(str::to_string), asc, limit: Some(2), ..ListQuery::default() };
            let mut ids = Vec::new();
            loop {
                let page = scoped.list_with_plan(module, &q, plan).await.map_err(|e| format!("{plan:?} list: {e}"))?;
                ids.extend(page.items.iter().filter_map(|r| r.get("id").and_then(|v| v.as_i64())));
                match page.next_cursor {
                    Some(c) if ids.len() <= visible.len() => q.after = Some(c),
                    _ => break,
                }
            }
            walks.push((plan, ids));
        }
        let (first_plan, first) = &walks[0];
        let got: BTreeSet<RecordId> = first.iter().copied().collect();
        if got != want || first.len() != want.len() {
            return Err(format!("{first_plan:?} pages (sort {sort:?}) list {first:?}, visible {visible:?}"));
        }
        for (plan, ids) in &walks[1..] {
            if ids != first {
                return Err(format!("{plan:?} pages (sort {sort:?}) list {ids:?}, {first_plan:?} lists {first:?}"));
            }
        }
    }
    Ok(())
}

/// Every count plan gives the visible count; under a filter, each gives what a walk of the list's pages shows.
async fn check_count_plans(scoped: &crm_store::Scoped<'_>, module: Module, visible: usize) -> Result<(), String> {
    for plan in [CountPlan::Single, CountPlan::Disjoint, CountPlan::Complement, CountPlan::Auto] {
        let n = scoped.count_with_plan(module, &ListQuery::default(), plan).await;
        if n.as_ref().ok() != Some(&(visible as i64)) {
            return Err(format!("{plan:?} count says {n:?}, {visible} visible"));
        }
    }
    let (field, value) =
        if module == Module::Customers { ("region", REGION_POOL[0]) } else { ("title", TITLE_POOL[0]) };
    let filters = vec![FieldFilter { field: field.into(), op: CmpOp::Ne, value: serde_json::json!(value) }];
    let mut q = ListQuery { filters: filters.clone(), limit: Some(200), ..ListQuery::default() };
    let mut listed = 0usize;
    loop {
        match scoped.list_with_plan(module, &q, ListPlan::Single).await {
            Ok(page) => {
                listed += page.items.len();
                match page.next_cursor {
                    Some(c) => q.after = Some(c),
                    None => break,
                }
            }
            // The field is hidden from this user: every count plan must refuse the filter too.
            Err(StoreError::BadQuery(_)) => {
                for plan in [CountPlan::Single, CountPlan::Disjoint, CountPlan::Complement, CountPlan::Auto] {
                    let q = ListQuery { filters: filters.clone(), ..ListQuery::default() };
                    if !matches!(scoped.count_with_plan(module, &q, plan).await, Err(StoreError::BadQuery(_))) {
                        return Err(format!("{plan:?} count accepts a filter the list refuses"));
                    }
                }
                return Ok(());
            }
            Err(e) => return Err(format!("filtered list: {e}")),
        }
    }
    for plan in [CountPlan::Single, CountPlan::Disjoint, CountPlan::Complement, CountPlan::Auto] {
        let q = ListQuery { filters: filters.clone(), ..ListQuery::default() };
        let n = scoped.count_with_plan(module, &q, plan).await;
        if n.as_ref().ok() != Some(&(listed as i64)) {
            return Err(format!("{plan:?} count with {field} <> {value} says {n:?}, the list shows {listed}"));
        }
    }
    Ok(())
}

/// A view-all user kept away from government customers by a restriction rule counts exactly the customers the
/// list shows (a customer of no type is not admitted by `<>`), with every count plan, beside another organization
/// of the same database with many more customers, before and after most of those are deleted (the complement
/// starts from the organization's own maintained count, which neither changes).
#[tokio::test]
async fn complement_count_is_exact_beside_another_organization() {
    for engine in engines() {
        let env = Env::new(engine).await;
        let crowd = Org::new(&env.store, "crowd", &PolicyConfig::default()).await;
        let crowd_owner = crowd.user(&env.store, "crowd-owner", &[]).await;
        env.raw
            .exec(format!(
                "INSERT INTO customers (org_id, owner_id, name, created_by, updated_by, created_at, updated_at) \
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000) \
                 SELECT {}, {crowd_owner}, 'crowd', {crowd_owner}, {crowd_owner}, 0, 0 FROM n",
                crowd.id
            ))
            .await;
        let clerk_role = allow(role(1, "service"), Module::Customers, &[Action::View], Scope::All);
        let config = PolicyConfig {
            roles: vec![clerk_role],
            restriction_rules: vec![RestrictionRule {
                id: 1,
                name: "no government customers".into(),
                module: Module::Customers,
                applies_to: Grantee::Role { id: 1 },
                criteria: vec![Criterion { field: "customer_type".into(), op: CmpOp::Ne, value: "government".into() }],
                exempt_administrators: false,
            }],
            ..PolicyConfig::default()
        };
        let org = Org::new(&env.store, "served", &config).await;
        let clerk = org.user(&env.store, "clerk", &[1]).await;
        let types = [Some("government"), Some("enterprise"), None, Some("smb"), Some("government"), Some("smb")];
        let rows: Vec<(UserId, BTreeMap<&'static str, Value>)> = types
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let mut fields = BTreeMap::from([("name", Value::Text(format!("customer {i}")))]);
                if let Some(t) = t {
                    fields.insert("customer_type", Value::Text((*t).into()));
                }
                (clerk, fields)
            })
            .collect();
        env.store.unscoped_system_access().seed_records(org.id, Module::Customers, &rows).await.expect("customers");
        let scoped = env.store.scoped(org.sign_in(&env.store, "clerk").await);
        let visible = scoped.visible_ids(Module::Customers, Action::View).await.expect("visible ids");
        assert_eq!(visible.len(), 3, "{engine}: enterprise and two smb customers are visible");
        for crowded in [true, false] {
            if !crowded {
                env.raw.exec(format!("DELETE FROM customers WHERE org_id = {} AND id % 100 <> 0", crowd.id)).await;
            }
            for plan in [CountPlan::Single, CountPlan::Disjoint, CountPlan::Complement, CountPlan::Auto] {
                let n = scoped.count_with_plan(Module::Customers, &ListQuery::default(), plan).await;
                assert_eq!(
                    n.ok(),
                    Some(3),
                    "{engine}: {plan:?} count (other organization's rows all there: {crowded})"
                );
            }
        }
        env.close().await;
    }
}

fn target_pairs() -> u64 {
    std::env::var("CRM_DIFFERENTIAL_PAIRS").ok().and_then(|v| v.trim().replace('_', "").parse().ok()).unwrap_or(100_000)
}

fn run_differential(engine: &'static str) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let target = target_pairs();
    let started = std::time::Instant::now();
    let (db, store, raw, foreign) = rt.block_on(async {
        let db = TestDatabase::new(engine).await;
        let store = open(&db.url).await;
        let raw = Raw::connect(&db.url).await;
        let foreign = foreign_org(&store, &raw).await;
        (db, store, raw, foreign)
    });
    let pairs = Cell::new(0u64);
    let allowed = Cell::new(0u64);
    let complements = Cell::new(0u64);
    let cases = Cell::new(0u64);
    let worlds = Cell::new(0u64);
    // One seed per run, printed, so a run can be replayed with PROPTEST_RNG_SEED; batch `n` uses `seed + n`.
    let seed = match Config::default().rng_seed {
        RngSeed::Fixed(s) => s,
        RngSeed::Random => rand::random::<u64>() >> 1,
    };
    let mut batch_no = 0u64;
    while pairs.get() < target {
        // Size each batch of cases from the average so far (about 2,500 pairs a world at first).
        let per_case = if cases.get() == 0 { 2_500 } else { pairs.get() / cases.get() }.max(1);
        let batch = ((target - pairs.get()).div_ceil(per_case)).clamp(1, 10_000) as u32;
        let config = Config {
            cases: batch,
            // Every shrink step builds a world: bound the time a failure takes to report.
            max_shrink_iters: 4_000,
            max_shrink_time: 150_000,
            failure_persistence: None,
            rng_seed: RngSeed::Fixed(seed.wrapping_add(batch_no)),
            ..Config::default()
        };
        batch_no += 1;
        let mut runner = TestRunner::new(config);
        let result = runner.run(&world(), |spec| {
            worlds.set(worlds.get() + 1);
            let checked = rt.block_on(async {
                let built = std::sync::Arc::new(build(&store, &raw, &foreign, &spec, worlds.get()).await);
                check(&store, &built).await.map_err(|e| format!("{e}\n\nworld (database ids):\n{built:#?}"))
            });
            match checked {
                Ok(t) => {
                    pairs.set(pairs.get() + t.pairs);
                    allowed.set(allowed.get() + t.allowed);
                    complements.set(complements.get() + t.complements);
                    cases.set(cases.get() + 1);
                    Ok(())
                }
                Err(e) => Err(TestCaseError::fail(e)),
            }
        });
        match result {
            Ok(()) => {}
            Err(TestError::Fail(reason, spec)) => {
                panic!(
                    "{engine}: differential failure (shrunk; PROPTEST_RNG_SEED={seed} replays this run)\n{reason}\n\n\
                     minimal generated world:\n{spec:#?}"
                )
            }
            Err(e) => panic!("{engine}: {e}"),
        }
    }
    eprintln!(
        "differential [{engine}]: {} (user, action, record) pairs checked ({} allowed) in {} worlds ({:.1}s; target \
         {target}, CRM_DIFFERENTIAL_PAIRS to change; PROPTEST_RNG_SEED={seed})",
        pairs.get(),
        allowed.get(),
        cases.get(),
        started.elapsed().as_secs_f64()
    );
    assert!(pairs.get() >= target);
    eprintln!("differential [{engine}]: {} counts by the complement plan's own statement", complements.get());
    assert!(complements.get() > 0, "{engine}: no world gave the complement count plan a predicate it applies to");
    rt.block_on(async {
        raw.close().await;
        store.close().await;
    });
    drop(db);
}

#[test]
fn differential_sql_filter_equals_in_memory_decision_sqlite() {
    run_differential("sqlite");
}

#[test]
fn differential_sql_filter_equals_in_memory_decision_postgres() {
    if !engines().contains(&"postgres") {
        eprintln!("differential [postgres]: SKIPPED, CRM_TEST_DATABASE_URL is not set");
        return;
    }
    run_differential("postgres");
}
