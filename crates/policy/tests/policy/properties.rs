//! Properties over random small organizations: departments, people, roles, groups, partitions, sharing and
//! restriction rules, manual shares and record teams, customers and contacts under them.
//!
//! The generated [`Org`] keeps real ids (departments 10.., users 100.., roles 1.., groups 50..) so a shrunk failure
//! reads like a configuration.

use crm_domain::{Action, DeptId, GroupId, Level, Module, OrgId, Record, RoleId, UserId, Value};
use crm_policy::{
    Access, CmpOp, Criterion, Dimension, DirUser, Directory, FieldAccess, Grantee, Group, OrgDefault, PartitionGrant,
    PolicyConfig, Pred, Reason, RecordFacts, RestrictionRule, Role, RuleSource, Scope, ShareEntry, ShareKey,
    SharingRule, TeamEntry, UserStatus,
};
use proptest::prelude::*;
use proptest::sample::{select, subsequence};
use std::collections::BTreeMap;
use std::sync::Arc;

const ORG: OrgId = 1;
const DEPTS: [DeptId; 5] = [10, 11, 12, 13, 14];
const USERS: [UserId; 6] = [100, 101, 102, 103, 104, 105];
/// Owns records but is not in the directory (a user of another organization, or deleted).
const STRANGER: UserId = 999;
const ROLES: [RoleId; 3] = [1, 2, 3];
const GROUPS: [GroupId; 2] = [50, 51];
const REGIONS: [&str; 3] = ["华东", "华北", "华南"];
const TYPES: [&str; 3] = ["enterprise", "smb", "government"];
const LINES: [&str; 2] = ["cloud", "retail"];
const TITLES: [&str; 2] = ["ceo", "cto"];
/// The modules the generated records belong to.
const MODULES: [Module; 2] = [Module::Customers, Module::Contacts];

#[derive(Debug, Clone)]
pub struct UserSpec {
    pub id: UserId,
    pub manager: Option<UserId>,
    pub departments: Vec<DeptId>,
    pub roles: Vec<RoleId>,
    pub status: UserStatus,
}

#[derive(Debug, Clone)]
pub struct RoleSpec {
    pub id: RoleId,
    /// Only the granted (module, action) pairs.
    pub permissions: Vec<(Module, Action, Scope)>,
    pub view_all: bool,
    pub modify_all: bool,
}

#[derive(Debug, Clone)]
pub struct CustomerSpec {
    pub owner: UserId,
    pub region: Option<&'static str>,
    pub customer_type: Option<&'static str>,
    pub business_line: Option<&'static str>,
    pub annual_revenue: Option<i64>,
    pub team: Vec<(UserId, Level)>,
    pub shares: Vec<(ShareKey, Level)>,
}

#[derive(Debug, Clone)]
pub struct ContactSpec {
    /// Index into the customers (modulo their number).
    pub account: usize,
    /// The store loaded the parent account with the contact.
    pub parent_loaded: bool,
    pub owner: UserId,
    pub title: Option<&'static str>,
    pub team: Vec<(UserId, Level)>,
    pub shares: Vec<(ShareKey, Level)>,
}

/// A random organization; [`Org::config`], [`Org::directory`] and [`Org::records`] build the real thing. Its
/// `Debug` prints one line per thing, leaving out what is empty, so a shrunk failure reads like a configuration.
#[derive(Clone)]
pub struct Org {
    /// (department, parent): a tree rooted at 10.
    pub departments: Vec<(DeptId, Option<DeptId>)>,
    pub users: Vec<UserSpec>,
    pub roles: Vec<RoleSpec>,
    pub groups: Vec<Group>,
    pub customers_default: OrgDefault,
    pub contacts_default: OrgDefault,
    pub partition_grants: Vec<PartitionGrant>,
    pub sharing_rules: Vec<SharingRule>,
    pub restriction_rules: Vec<RestrictionRule>,
    pub customers: Vec<CustomerSpec>,
    pub contacts: Vec<ContactSpec>,
}

impl std::fmt::Debug for Org {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "Org {{")?;
        writeln!(f, "  departments (id, parent): {:?}", self.departments)?;
        for u in &self.users {
            writeln!(f, "  {u:?}")?;
        }
        for r in self.roles.iter().filter(|r| !r.permissions.is_empty() || r.view_all || r.modify_all) {
            writeln!(f, "  {r:?}")?;
        }
        for g in self.groups.iter().filter(|g| !g.users.is_empty() || !g.departments.is_empty()) {
            writeln!(
                f,
                "  Group {{ id: {}, users: {:?}, departments (id, include_sub): {:?} }}",
                g.id, g.users, g.departments
            )?;
        }
        writeln!(f, "  defaults: customers {:?}, contacts {:?}", self.customers_default, self.contacts_default)?;
        for g in &self.partition_grants {
            writeln!(f, "  {g:?}")?;
        }
        for r in &self.sharing_rules {
            writeln!(f, "  {r:?}")?;
        }
        for r in &self.restriction_rules {
            writeln!(f, "  {r:?}")?;
        }
        for (i, c) in self.customers.iter().enumerate() {
            writeln!(f, "  customer #{}: {c:?}", 1000 + i)?;
        }
        for (i, c) in self.contacts.iter().enumerate() {
            let account = 1000 + c.account % self.customers.len().max(1);
            writeln!(f, "  contact #{} of customer #{account}: {c:?}", 2000 + i)?;
        }
        write!(f, "}}")
    }
}

impl Org {
    pub fn config(&self) -> PolicyConfig {
        let dim = |key: &str| Dimension { key: key.into(), label: key.into(), field: key.into(), values: Vec::new() };
        let roles = self
            .roles
            .iter()
            .map(|r| {
                let mut permissions: BTreeMap<Module, BTreeMap<Action, Scope>> = BTreeMap::new();
                for (m, a, s) in &r.permissions {
                    permissions.entry(*m).or_default().insert(*a, *s);
                }
                Role {
                    id: r.id,
                    name: format!("role {}", r.id),
                    description: String::new(),
                    permissions,
                    view_all: r.view_all,
                    modify_all: r.modify_all,
                    fields: BTreeMap::new(),
                    reveal: Default::default(),
                    require_mfa: false,
                }
            })
            .collect();
        let config = PolicyConfig {
            roles,
            defaults: [(Module::Customers, self.customers_default), (Module::Contacts, self.contacts_default)].into(),
            dimensions: vec![dim("region"), dim("customer_type"), dim("business_line")],
            partition_grants: self.partition_grants.clone(),
            sharing_rules: self.sharing_rules.clone(),
            restriction_rules: self.restriction_rules.clone(),
            groups: self.groups.clone(),
        };
        if let Err(e) = config.validate() {
            panic!("the generator made an invalid configuration: {e}");
        }
        config
    }

    pub fn directory(&self, org: OrgId) -> Arc<Directory> {
        let users = self
            .users
            .iter()
            .map(|u| DirUser {
                id: u.id,
                manager: u.manager,
                departments: u.departments.clone(),
                roles: u.roles.clone(),
                status: u.status,
            })
            .collect();
        Arc::new(Directory::new(org, users, self.departments.clone()))
    }

    /// Every customer, then every contact (with its account as parent when loaded).
    pub fn records(&self) -> Vec<RecordFacts> {
        let facts = |module,
                     id,
                     owner,
                     fields: Vec<(&'static str, Value)>,
                     team: &[(UserId, Level)],
                     shares: &[(ShareKey, Level)]| {
            RecordFacts {
                record: Record {
                    module,
                    id,
                    org_id: ORG,
                    owner_id: owner,
                    created_at: 0,
                    updated_at: 0,
                    fields: fields.into_iter().collect(),
                },
                team: team.iter().map(|(user, level)| TeamEntry { user: *user, level: *level }).collect(),
                shares: shares.iter().map(|(key, level)| ShareEntry { key: *key, level: *level }).collect(),
                parent: None,
            }
        };
        let text = |s: &str| Value::Text(s.to_string());
        let customers: Vec<RecordFacts> = self
            .customers
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut fields = vec![("name", text("customer"))];
                fields.extend(c.region.map(|v| ("region", text(v))));
                fields.extend(c.customer_type.map(|v| ("customer_type", text(v))));
                fields.extend(c.business_line.map(|v| ("business_line", text(v))));
                fields.extend(c.annual_revenue.map(|v| ("annual_revenue", Value::Int(v))));
                facts(Module::Customers, 1000 + i as i64, c.owner, fields, &c.team, &c.shares)
            })
            .collect();
        let contacts: Vec<RecordFacts> = self
            .contacts
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let account = &customers[c.account % customers.len()];
                let mut fields = vec![("name", text("contact")), ("account_id", Value::Int(account.record.id))];
                fields.extend(c.title.map(|v| ("title", text(v))));
                let mut f = facts(Module::Contacts, 2000 + i as i64, c.owner, fields, &c.team, &c.shares);
                if c.parent_loaded {
                    f.parent = Some(Box::new(account.clone()));
                }
                f
            })
            .collect();
        customers.into_iter().chain(contacts).collect()
    }

    /// Everyone in the directory plus someone who is not.
    pub fn people(&self) -> Vec<UserId> {
        self.users.iter().map(|u| u.id).chain([STRANGER]).collect()
    }
}

/// Every (user, action, record) decision of the organization, in a fixed order.
fn decisions(
    config: &PolicyConfig,
    dir: &Arc<Directory>,
    people: &[UserId],
    records: &[RecordFacts],
) -> Vec<((UserId, Action, i64), bool)> {
    let mut out = Vec::new();
    for user in people {
        let access = Access::compile(config, Arc::clone(dir), *user);
        for action in Action::ALL {
            for facts in records {
                out.push(((*user, action, facts.record.id), access.decide(facts.record.module, action, facts)));
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------------------------
// Generators

fn level() -> impl Strategy<Value = Level> {
    select(Level::ALL.to_vec())
}

fn scope() -> impl Strategy<Value = Scope> {
    select(vec![Scope::Own, Scope::Subordinates, Scope::Department, Scope::DepartmentTree, Scope::All])
}

fn status() -> impl Strategy<Value = UserStatus> {
    prop_oneof![4 => Just(UserStatus::Active), 1 => Just(UserStatus::Locked), 1 => Just(UserStatus::Deactivated)]
}

fn grantee() -> impl Strategy<Value = Grantee> {
    prop_oneof![
        select(USERS.to_vec()).prop_map(|id| Grantee::User { id }),
        (select(DEPTS.to_vec()), any::<bool>()).prop_map(|(id, include_sub)| Grantee::Department { id, include_sub }),
        select(ROLES.to_vec()).prop_map(|id| Grantee::Role { id }),
        select(GROUPS.to_vec()).prop_map(|id| Grantee::Group { id }),
    ]
}

fn share_key() -> impl Strategy<Value = ShareKey> {
    prop_oneof![
        select(USERS.to_vec()).prop_map(ShareKey::User),
        select(GROUPS.to_vec()).prop_map(ShareKey::Group),
        select(DEPTS.to_vec()).prop_map(ShareKey::Department),
        select(ROLES.to_vec()).prop_map(ShareKey::Role),
    ]
}

fn texts(values: &'static [&'static str]) -> impl Strategy<Value = serde_json::Value> {
    subsequence(values.to_vec(), 1..=values.len()).prop_map(|v| serde_json::json!(v))
}

/// A criterion that type-checks on the module.
fn criterion(module: Module) -> BoxedStrategy<Criterion> {
    let c = |field: &'static str, op, value| Criterion { field: field.into(), op, value };
    let text_ops = || select(vec![CmpOp::Eq, CmpOp::Ne]);
    let set_ops = || select(vec![CmpOp::In, CmpOp::NotIn]);
    let owner = (select(vec![CmpOp::Eq, CmpOp::Ne]), select(USERS.to_vec()))
        .prop_map(move |(op, u)| c("owner_id", op, serde_json::json!(u)));
    match module {
        Module::Customers => prop_oneof![
            (text_ops(), select(REGIONS.to_vec())).prop_map(move |(op, v)| c("region", op, serde_json::json!(v))),
            (set_ops(), texts(&REGIONS)).prop_map(move |(op, v)| c("region", op, v)),
            (text_ops(), select(TYPES.to_vec())).prop_map(move |(op, v)| c("customer_type", op, serde_json::json!(v))),
            (set_ops(), texts(&TYPES)).prop_map(move |(op, v)| c("customer_type", op, v)),
            (text_ops(), select(LINES.to_vec())).prop_map(move |(op, v)| c("business_line", op, serde_json::json!(v))),
            (select(vec![CmpOp::Gt, CmpOp::Gte, CmpOp::Lt, CmpOp::Lte]), 0..4i64).prop_map(move |(op, v)| c(
                "annual_revenue",
                op,
                serde_json::json!(v * 1_000_000)
            )),
            owner,
        ]
        .boxed(),
        _ => prop_oneof![
            (text_ops(), select(TITLES.to_vec())).prop_map(move |(op, v)| c("title", op, serde_json::json!(v))),
            owner,
        ]
        .boxed(),
    }
}

fn criteria(module: Module) -> impl Strategy<Value = Vec<Criterion>> {
    prop::collection::vec(criterion(module), 1..=2)
}

fn record_module() -> impl Strategy<Value = Module> {
    select(MODULES.to_vec())
}

fn partition_grant(id: i64) -> impl Strategy<Value = PartitionGrant> {
    let dims = prop::collection::btree_map(
        select(vec!["region", "customer_type", "business_line"]),
        any::<prop::sample::Index>(),
        1..=2,
    );
    let modules = prop_oneof![Just(vec![]), Just(vec![Module::Customers]), Just(vec![Module::Contacts])];
    (grantee(), modules, dims, level()).prop_map(move |(grantee, modules, dims, level)| {
        let partitions = dims
            .into_iter()
            .map(|(key, pick)| {
                let values: &[&str] = match key {
                    "region" => &REGIONS,
                    "customer_type" => &TYPES,
                    _ => &LINES,
                };
                // One or two values, chosen by the index.
                let first = pick.index(values.len());
                let mut vs = vec![values[first].to_string()];
                if pick.index(2) == 1 {
                    vs.push(values[(first + 1) % values.len()].to_string());
                }
                (key.to_string(), vs)
            })
            .collect();
        PartitionGrant { id, grantee, modules, partitions, level }
    })
}

fn sharing_rule(id: i64) -> impl Strategy<Value = SharingRule> {
    record_module().prop_flat_map(move |module| {
        let source = prop_oneof![
            grantee().prop_map(|owners| RuleSource::OwnedBy { owners }),
            criteria(module).prop_map(|criteria| RuleSource::Criteria { criteria }),
        ];
        (source, grantee(), level()).prop_map(move |(source, share_with, level)| SharingRule {
            id,
            name: format!("sharing {id}"),
            module,
            source,
            share_with,
            level,
        })
    })
}

fn restriction_rule(id: i64) -> impl Strategy<Value = RestrictionRule> {
    record_module().prop_flat_map(move |module| {
        (grantee(), criteria(module), any::<bool>()).prop_map(move |(applies_to, criteria, exempt)| RestrictionRule {
            id,
            name: format!("restriction {id}"),
            module,
            applies_to,
            criteria,
            exempt_administrators: exempt,
        })
    })
}

/// Rules get ids by position (`base + i`), so they stay unique while the vector shrinks.
fn numbered<S: Strategy + 'static>(
    base: i64,
    max: usize,
    make: impl Fn(i64) -> S + 'static,
) -> BoxedStrategy<Vec<S::Value>>
where
    S::Value: Clone + std::fmt::Debug,
{
    (0..=max).prop_flat_map(move |n| (0..n).map(|i| make(base + i as i64)).collect::<Vec<_>>()).boxed()
}

fn role(id: RoleId) -> impl Strategy<Value = RoleSpec> {
    let pairs: Vec<(Module, Action)> = MODULES.iter().flat_map(|m| Action::ALL.iter().map(move |a| (*m, *a))).collect();
    let n = pairs.len();
    (
        prop::collection::vec(prop::option::weighted(0.4, scope()), n),
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.08),
    )
        .prop_map(move |(scopes, view_all, modify_all)| RoleSpec {
            id,
            permissions: pairs.iter().zip(scopes).filter_map(|((m, a), s)| s.map(|s| (*m, *a, s))).collect(),
            view_all,
            modify_all,
        })
}

fn user(id: UserId) -> impl Strategy<Value = UserSpec> {
    let managers: Vec<Option<UserId>> =
        std::iter::once(None).chain(USERS.iter().filter(|u| **u < id).map(|u| Some(*u))).collect();
    (select(managers), subsequence(DEPTS.to_vec(), 1..=2), subsequence(ROLES.to_vec(), 0..=2), status())
        .prop_map(move |(manager, departments, roles, status)| UserSpec { id, manager, departments, roles, status })
}

fn group(id: GroupId) -> impl Strategy<Value = Group> {
    (subsequence(USERS.to_vec(), 0..=2), prop::collection::vec((select(DEPTS.to_vec()), any::<bool>()), 0..=2))
        .prop_map(move |(users, departments)| Group { id, name: format!("group {id}"), users, departments })
}

fn owner() -> impl Strategy<Value = UserId> {
    prop_oneof![8 => select(USERS.to_vec()), 1 => Just(STRANGER)]
}

fn team() -> impl Strategy<Value = Vec<(UserId, Level)>> {
    prop::collection::vec((select(USERS.to_vec()), level()), 0..=2)
}

fn shares() -> impl Strategy<Value = Vec<(ShareKey, Level)>> {
    prop::collection::vec((share_key(), level()), 0..=2)
}

fn customer() -> impl Strategy<Value = CustomerSpec> {
    (
        owner(),
        prop::option::of(select(REGIONS.to_vec())),
        prop::option::of(select(TYPES.to_vec())),
        prop::option::of(select(LINES.to_vec())),
        prop::option::of((0..5i64).prop_map(|v| v * 1_000_000)),
        team(),
        shares(),
    )
        .prop_map(|(owner, region, customer_type, business_line, annual_revenue, team, shares)| CustomerSpec {
            owner,
            region,
            customer_type,
            business_line,
            annual_revenue,
            team,
            shares,
        })
}

fn contact() -> impl Strategy<Value = ContactSpec> {
    (
        any::<usize>().prop_map(|i| i % 4),
        prop::bool::weighted(0.9),
        owner(),
        prop::option::of(select(TITLES.to_vec())),
        team(),
        shares(),
    )
        .prop_map(|(account, parent_loaded, owner, title, team, shares)| ContactSpec {
            account,
            parent_loaded,
            owner,
            title,
            team,
            shares,
        })
}

fn departments() -> impl Strategy<Value = Vec<(DeptId, Option<DeptId>)>> {
    // Department i hangs under one of the departments before it.
    (0..1usize, 0..2usize, 0..3usize, 0..4usize).prop_map(|(a, b, c, d)| {
        let mut out = vec![(DEPTS[0], None)];
        for (i, p) in [a, b, c, d].into_iter().enumerate() {
            out.push((DEPTS[i + 1], Some(DEPTS[p])));
        }
        out
    })
}

fn default_for(module: Module) -> BoxedStrategy<OrgDefault> {
    let common = prop_oneof![
        3 => Just(OrgDefault::Private),
        1 => Just(OrgDefault::PublicRead),
        1 => Just(OrgDefault::PublicReadWrite),
    ];
    if module == Module::Contacts {
        prop_oneof![2 => common, 1 => Just(OrgDefault::ControlledByParent)].boxed()
    } else {
        common.boxed()
    }
}

fn org() -> impl Strategy<Value = Org> {
    let people = (
        departments(),
        USERS.iter().map(|u| user(*u)).collect::<Vec<_>>(),
        ROLES.iter().map(|r| role(*r)).collect::<Vec<_>>(),
        GROUPS.iter().map(|g| group(*g)).collect::<Vec<_>>(),
        default_for(Module::Customers),
        default_for(Module::Contacts),
    );
    let rules = (
        numbered(300, 2, partition_grant),
        numbered(400, 3, sharing_rule),
        numbered(500, 2, restriction_rule),
        prop::collection::vec(customer(), 1..=4),
        prop::collection::vec(contact(), 0..=3),
    );
    (people, rules).prop_map(
        |(
            (departments, users, roles, groups, customers_default, contacts_default),
            (partition_grants, sharing_rules, restriction_rules, customers, contacts),
        )| Org {
            departments,
            users,
            roles,
            groups,
            customers_default,
            contacts_default,
            partition_grants,
            sharing_rules,
            restriction_rules,
            customers,
            contacts,
        },
    )
}

/// Something that widens access: a grant, a rule or a share, added to an organization.
#[derive(Debug, Clone)]
pub enum Widening {
    PartitionGrant(PartitionGrant),
    SharingRule(SharingRule),
    /// A manual share on the n-th record (modulo their number).
    ManualShare(usize, ShareKey, Level),
    /// A record team entry on the n-th record.
    TeamMember(usize, UserId, Level),
}

fn widening() -> impl Strategy<Value = Widening> {
    prop_oneof![
        partition_grant(900).prop_map(Widening::PartitionGrant),
        sharing_rule(900).prop_map(Widening::SharingRule),
        (any::<usize>(), share_key(), level()).prop_map(|(i, k, l)| Widening::ManualShare(i, k, l)),
        (any::<usize>(), select(USERS.to_vec()), level()).prop_map(|(i, u, l)| Widening::TeamMember(i, u, l)),
    ]
}

/// Applies the widening to the organization's configuration or to its records (a contact's loaded parent follows
/// a share on its account, as the store would load it).
fn widen(org: &Org, w: &Widening) -> Org {
    let mut out = org.clone();
    match w {
        Widening::PartitionGrant(g) => out.partition_grants.push(g.clone()),
        Widening::SharingRule(r) => out.sharing_rules.push(r.clone()),
        Widening::ManualShare(i, key, level) => {
            let n = out.customers.len() + out.contacts.len();
            match i % n {
                i if i < out.customers.len() => out.customers[i].shares.push((*key, *level)),
                i => out.contacts[i - out.customers.len()].shares.push((*key, *level)),
            }
        }
        Widening::TeamMember(i, user, level) => {
            let n = out.customers.len() + out.contacts.len();
            match i % n {
                i if i < out.customers.len() => out.customers[i].team.push((*user, *level)),
                i => out.contacts[i - out.customers.len()].team.push((*user, *level)),
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------------------------
// Properties

proptest! {
    /// Viewing as another user: the read-only access decides viewing exactly as the user's own, and allows nothing
    /// else (no write, export, share or reveal), whatever the roles and rules.
    #[test]
    fn property_read_only_access_views_as_the_user_and_does_nothing_else(org in org()) {
        let config = org.config();
        let dir = org.directory(ORG);
        let records = org.records();
        for user in org.people() {
            let access = Access::compile(&config, Arc::clone(&dir), user);
            let read_only = access.read_only();
            for module in Module::ALL {
                prop_assert_eq!(read_only.can(module, Action::View), access.can(module, Action::View));
                prop_assert!(!read_only.may_reveal(module));
            }
            for action in Action::ALL {
                for facts in &records {
                    let module = facts.record.module;
                    let expected = action == Action::View && access.decide(module, action, facts);
                    prop_assert_eq!(read_only.decide(module, action, facts), expected, "user {} {} {}", user, action, facts.record.id);
                    if action != Action::View {
                        prop_assert!(!read_only.can(module, action));
                    }
                }
            }
        }
    }

    /// Viewing as another user never shows more than the viewer sees on their own: a record is viewable exactly
    /// when both may view it, a field never shows more clearly than to either, and nothing else is allowed.
    #[test]
    fn property_viewing_as_another_user_never_shows_more_than_the_viewer_may_see(org in org()) {
        let config = org.config();
        let dir = org.directory(ORG);
        let records = org.records();
        let people = org.people();
        let compiled: Vec<Access> = people.iter().map(|u| Access::compile(&config, Arc::clone(&dir), *u)).collect();
        for viewer in &compiled {
            for user in &compiled {
                let as_user = user.read_only_within(viewer);
                for facts in &records {
                    let module = facts.record.module;
                    let both = user.decide(module, Action::View, facts) && viewer.decide(module, Action::View, facts);
                    prop_assert_eq!(as_user.decide(module, Action::View, facts), both, "viewer {} as {}", viewer.user, user.user);
                    for action in Action::ALL.into_iter().filter(|a| *a != Action::View) {
                        prop_assert!(!as_user.decide(module, action, facts));
                    }
                }
                for module in Module::ALL {
                    prop_assert!(!as_user.may_reveal(module));
                    if let Some(s) = crm_domain::schema(module) {
                        for f in s.fields {
                            let shown = as_user.field_access(module, f.name);
                            prop_assert!(shown <= user.field_access(module, f.name).min(FieldAccess::ReadOnly));
                            prop_assert!(shown <= viewer.field_access(module, f.name));
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn property_decide_agrees_with_explain_and_allowed_names_a_grant_and_no_restriction(org in org()) {
        let config = org.config();
        let dir = org.directory(ORG);
        let records = org.records();
        for user in org.people() {
            let access = Access::compile(&config, Arc::clone(&dir), user);
            for action in Action::ALL {
                for facts in &records {
                    let module = facts.record.module;
                    let decided = access.decide(module, action, facts);
                    let e = access.explain(module, action, facts);
                    prop_assert_eq!(decided, e.allowed, "user {} {} record {}: {:?}", user, action, facts.record.id, e);
                    if decided {
                        prop_assert!(!e.granted_by.is_empty(), "allowed without a grant: user {} {} {}: {:?}", user, action, facts.record.id, e);
                        prop_assert!(e.denied_by.is_empty(), "allowed yet denied: user {} {} {}: {:?}", user, action, facts.record.id, e);
                        prop_assert!(e.module_permission && access.can(module, action));
                    }
                    if !e.module_permission {
                        prop_assert!(!decided);
                    }
                    // A record answers only for its own module.
                    let other = if module == Module::Customers { Module::Contacts } else { Module::Customers };
                    prop_assert!(!access.decide(other, action, facts));
                }
            }
        }
    }

    #[test]
    fn property_labels_are_transparent(org in org()) {
        let config = org.config();
        let dir = org.directory(ORG);
        let records = org.records();
        for user in org.people() {
            let access = Access::compile(&config, Arc::clone(&dir), user);
            for module in Module::RECORDS {
                for action in Action::ALL {
                    let labelled = access.labelled_pred(module, action);
                    let plain = labelled.without_reasons();
                    prop_assert_eq!(&plain, access.pred(module, action));
                    prop_assert_eq!(plain.without_reasons(), plain.clone(), "without_reasons is idempotent");
                    prop_assert!(!contains_label(&plain));
                    for facts in records.iter().filter(|f| f.record.module == module) {
                        prop_assert_eq!(
                            access.eval_pred(labelled, facts),
                            access.eval_pred(&plain, facts),
                            "user {} {} {} record {}: {:?}", user, module, action, facts.record.id, labelled
                        );
                        prop_assert_eq!(access.eval_pred(&plain, facts), access.decide(module, action, facts));
                    }
                }
            }
        }
    }

    #[test]
    fn property_widening_never_removes_access(org in org(), w in widening()) {
        let before = decisions(&org.config(), &org.directory(ORG), &org.people(), &org.records());
        let wider = widen(&org, &w);
        let after = decisions(&wider.config(), &wider.directory(ORG), &wider.people(), &wider.records());
        for ((key, was), (_, now)) in before.iter().zip(&after) {
            prop_assert!(!was || *now, "{:?} lost access (user, action, record) {:?}", w, key);
        }
    }

    #[test]
    fn property_a_restriction_rule_never_adds_access(org in org(), rule in restriction_rule(900)) {
        let before = decisions(&org.config(), &org.directory(ORG), &org.people(), &org.records());
        let mut narrower = org.clone();
        narrower.restriction_rules.push(rule.clone());
        let after = decisions(&narrower.config(), &narrower.directory(ORG), &narrower.people(), &narrower.records());
        for ((key, was), (_, now)) in before.iter().zip(&after) {
            prop_assert!(*was || !now, "{:?} gave access (user, action, record) {:?}", rule, key);
        }
    }

    #[test]
    fn property_nothing_crosses_organizations(org in org()) {
        let config = org.config();
        let home = org.directory(ORG);
        let abroad = org.directory(ORG + 1);
        let records = org.records();
        for user in org.people() {
            let mine = Access::compile(&config, Arc::clone(&home), user);
            // The same person, roles and rules, in another organization.
            let theirs = Access::compile(&config, Arc::clone(&abroad), user);
            for action in Action::ALL {
                for facts in &records {
                    let module = facts.record.module;
                    prop_assert!(!theirs.decide(module, action, facts));
                    prop_assert!(!theirs.explain(module, action, facts).allowed);
                    // The record moved to another organization (its parent too).
                    let mut moved = facts.clone();
                    moved.record.org_id = ORG + 1;
                    if let Some(p) = moved.parent.as_mut() {
                        p.record.org_id = ORG + 1;
                    }
                    prop_assert!(!mine.decide(module, action, &moved));
                    let e = mine.explain(module, action, &moved);
                    prop_assert!(!e.allowed && e.granted_by.is_empty());
                    // A contact whose loaded parent is of another organization follows nothing.
                    if let Some(p) = facts.parent.as_ref() {
                        let mut foreign_parent = facts.clone();
                        let mut q = (**p).clone();
                        q.record.org_id = ORG + 1;
                        foreign_parent.parent = Some(Box::new(q));
                        if config.default_for(module) == OrgDefault::ControlledByParent {
                            prop_assert!(!mine.decide(module, action, &foreign_parent));
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn property_an_inactive_user_gets_nothing(org in org(), who in 0..USERS.len(), locked in any::<bool>()) {
        let mut org = org;
        org.users[who].status = if locked { UserStatus::Locked } else { UserStatus::Deactivated };
        let user = org.users[who].id;
        let access = Access::compile(&org.config(), org.directory(ORG), user);
        prop_assert!(!access.active);
        for module in Module::ALL {
            for action in Action::ALL {
                prop_assert!(!access.can(module, action));
                prop_assert!(access.pred(module, action).is_never());
                prop_assert!(access.scopes(module, action).is_empty());
            }
            prop_assert!(!access.may_reveal(module));
        }
        for facts in org.records() {
            for action in Action::ALL {
                prop_assert!(!access.decide(facts.record.module, action, &facts));
                prop_assert!(!access.explain(facts.record.module, action, &facts).allowed);
            }
            prop_assert_eq!(access.field_access(facts.record.module, "name"), FieldAccess::Hidden);
        }
        for owner in org.people() {
            prop_assert!(!access.may_assign_owner(Module::Customers, owner));
        }
    }

    #[test]
    fn property_controlled_by_parent_follows_the_account(org in org()) {
        let mut org = org;
        org.contacts_default = OrgDefault::ControlledByParent;
        let config = org.config();
        let dir = org.directory(ORG);
        let records = org.records();
        for user in org.people() {
            let access = Access::compile(&config, Arc::clone(&dir), user);
            // Restriction rules on contacts narrow further; without them a contact is visible exactly when its
            // account is (and the user may view contacts at all), administrators included.
            let plain = !config.restriction_rules.iter().any(|r| r.module == Module::Contacts);
            for facts in records.iter().filter(|f| f.record.module == Module::Contacts) {
                let account_visible = facts.parent.as_ref().is_some_and(|p| access.decide(Module::Customers, Action::View, p));
                let visible = access.decide(Module::Contacts, Action::View, facts);
                if visible {
                    prop_assert!(account_visible, "contact {} visible without its account", facts.record.id);
                }
                if plain && access.can(Module::Contacts, Action::View) {
                    prop_assert_eq!(visible, account_visible, "contact {}", facts.record.id);
                }
            }
        }
    }

    #[test]
    fn property_field_access_is_hidden_exactly_when_the_module_is_invisible(org in org()) {
        let config = org.config();
        let dir = org.directory(ORG);
        for user in org.people() {
            let access = Access::compile(&config, Arc::clone(&dir), user);
            for module in MODULES {
                let visible = access.can(module, Action::View);
                for field in ["name", "id", "owner_id"] {
                    // No field permissions are generated, so a visible module's fields are all shown.
                    prop_assert_eq!(access.field_access(module, field) != FieldAccess::Hidden, visible, "{} {}", module, field);
                }
            }
        }
    }
}

fn contains_label(p: &Pred) -> bool {
    match p {
        Pred::Because(..) => true,
        Pred::And(items) | Pred::Or(items) => items.iter().any(contains_label),
        Pred::Parent { pred, .. } => contains_label(pred),
        _ => false,
    }
}

#[test]
fn generated_organizations_are_valid_and_varied() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut allowed, mut denied, mut restricted) = (0, 0, 0);
    for _ in 0..64 {
        let org = org().new_tree(&mut runner).unwrap().current();
        let config = org.config();
        let dir = org.directory(ORG);
        for user in org.people() {
            let access = Access::compile(&config, Arc::clone(&dir), user);
            for facts in org.records() {
                let e = access.explain(facts.record.module, Action::View, &facts);
                if e.allowed {
                    allowed += 1;
                } else {
                    denied += 1;
                }
                if e.denied_by.iter().any(|r| matches!(r, Reason::Restriction { .. })) {
                    restricted += 1;
                }
            }
        }
    }
    // The generator must exercise both answers and the restriction path, or the properties prove little.
    assert!(
        allowed > 100 && denied > 100 && restricted > 10,
        "allowed {allowed}, denied {denied}, restricted {restricted}"
    );
}

// ---------------------------------------------------------------------------------------------------------------
// A reference model: the contract (permission model, sections 2 and 3) written the plain way, record by record,
// with no predicates. The compiled policy must agree with it on every decision.

struct Model<'a> {
    org: &'a Org,
    config: &'a PolicyConfig,
}

impl Model<'_> {
    fn user(&self, id: UserId) -> Option<&UserSpec> {
        self.org.users.iter().find(|u| u.id == id)
    }

    fn parent_of(&self, d: DeptId) -> Option<DeptId> {
        self.org.departments.iter().find(|(id, _)| *id == d).and_then(|(_, p)| *p)
    }

    /// `d` is `ancestor` or below it.
    fn within(&self, d: DeptId, ancestor: DeptId) -> bool {
        let mut cur = Some(d);
        while let Some(x) = cur {
            if x == ancestor {
                return true;
            }
            cur = self.parent_of(x);
        }
        false
    }

    /// `someone` reports to `manager`, directly or through others.
    fn reports_to(&self, someone: UserId, manager: UserId) -> bool {
        let mut cur = self.user(someone).and_then(|u| u.manager);
        let mut steps = 0;
        while let Some(m) = cur {
            if m == manager {
                return true;
            }
            steps += 1;
            if steps > self.org.users.len() {
                return false;
            }
            cur = self.user(m).and_then(|u| u.manager);
        }
        false
    }

    fn in_department(&self, u: &UserSpec, dept: DeptId, include_sub: bool) -> bool {
        u.departments.iter().any(|d| *d == dept || (include_sub && self.within(*d, dept)))
    }

    fn in_group(&self, u: &UserSpec, group: GroupId) -> bool {
        self.config.group(group).is_some_and(|g| {
            g.users.contains(&u.id) || g.departments.iter().any(|(d, sub)| self.in_department(u, *d, *sub))
        })
    }

    /// The person is (one of) the grantee.
    fn is(&self, id: UserId, g: &Grantee) -> bool {
        let Some(u) = self.user(id) else { return false };
        match *g {
            Grantee::User { id } => u.id == id,
            Grantee::Department { id, include_sub } => self.in_department(u, id, include_sub),
            Grantee::Role { id } => u.roles.contains(&id),
            Grantee::Group { id } => self.in_group(u, id),
        }
    }

    fn covers(&self, me: &UserSpec, scope: Scope, owner: UserId) -> bool {
        let owner_user = self.user(owner);
        let owner_in = |f: &dyn Fn(DeptId) -> bool| owner_user.is_some_and(|o| o.departments.iter().any(|d| f(*d)));
        owner == me.id
            || match scope {
                Scope::Own => false,
                Scope::Subordinates => self.reports_to(owner, me.id),
                Scope::Department => owner_in(&|d| me.departments.contains(&d)),
                Scope::DepartmentTree => owner_in(&|d| me.departments.iter().any(|mine| self.within(d, *mine))),
                Scope::All => true,
            }
    }

    fn meets(record: &Record, c: &Criterion) -> bool {
        let v = record.value(&c.field).into_owned();
        let as_value = |j: &serde_json::Value| match j {
            serde_json::Value::String(s) => Value::Text(s.clone()),
            serde_json::Value::Number(n) => Value::Int(n.as_i64().unwrap()),
            _ => Value::Null,
        };
        let list: Vec<Value> = match &c.value {
            serde_json::Value::Array(items) => items.iter().map(as_value).collect(),
            one => vec![as_value(one)],
        };
        if v.is_null() {
            return false; // NULL matches no comparison
        }
        let first = &list[0];
        let int = |x: &Value| x.as_int();
        match c.op {
            CmpOp::Eq => &v == first,
            CmpOp::Ne => &v != first,
            CmpOp::In => list.contains(&v),
            CmpOp::NotIn => !list.contains(&v),
            CmpOp::Gt => int(&v) > int(first),
            CmpOp::Gte => int(&v) >= int(first),
            CmpOp::Lt => int(&v) < int(first),
            CmpOp::Lte => int(&v) <= int(first),
        }
    }

    fn allows(&self, user: UserId, action: Action, facts: &RecordFacts) -> bool {
        let Some(me) = self.user(user) else { return false };
        let record = &facts.record;
        if me.status != UserStatus::Active || record.org_id != ORG {
            return false;
        }
        let module = record.module;
        let level = action.required_level();
        let roles: Vec<&Role> = me.roles.iter().filter_map(|r| self.config.role(*r)).collect();
        let reads = matches!(action, Action::View | Action::Export);
        let administrator = roles.iter().any(|r| r.modify_all || (r.view_all && reads));
        let scopes: Vec<(RoleId, Scope)> = roles
            .iter()
            .filter_map(|r| r.permissions.get(&module).and_then(|a| a.get(&action)).map(|s| (r.id, *s)))
            .collect();
        if !administrator && scopes.is_empty() {
            return false; // no module permission
        }
        let granted = if self.config.default_for(module) == OrgDefault::ControlledByParent {
            let parent_action = if level == Level::Read { Action::View } else { Action::Edit };
            facts.parent.as_ref().is_some_and(|p| {
                record.value("account_id").as_int() == Some(p.record.id)
                    && p.record.module == Module::Customers
                    && self.allows(user, parent_action, p)
            })
        } else {
            let by_scope = scopes.iter().any(|(_, s)| self.covers(me, *s, record.owner_id));
            let by_default = match self.config.default_for(module) {
                OrgDefault::PublicRead => level == Level::Read,
                OrgDefault::PublicReadWrite => level <= Level::Edit,
                _ => false,
            };
            let schema = crm_domain::schema(module).unwrap();
            let by_partition = self.config.partition_grants.iter().any(|g| {
                g.level >= level
                    && self.is(user, &g.grantee)
                    && (g.modules.is_empty() || g.modules.contains(&module))
                    && g.partitions.iter().all(|(key, values)| {
                        schema.field(key).is_some()
                            && record.value(key).as_text().is_some_and(|v| values.iter().any(|x| x == v))
                    })
            });
            let by_rule = self.config.sharing_rules.iter().any(|r| {
                r.module == module
                    && r.level >= level
                    && self.is(user, &r.share_with)
                    && match &r.source {
                        RuleSource::OwnedBy { owners } => self.is(record.owner_id, owners),
                        RuleSource::Criteria { criteria } => criteria.iter().all(|c| Self::meets(record, c)),
                    }
            });
            let by_share = facts.shares.iter().any(|s| {
                s.level >= level
                    && match s.key {
                        ShareKey::User(id) => id == user,
                        ShareKey::Group(id) => self.in_group(me, id),
                        ShareKey::Department(id) => me.departments.contains(&id),
                        ShareKey::Role(id) => me.roles.contains(&id),
                    }
            });
            let by_team = facts.team.iter().any(|t| t.user == user && t.level >= level);
            administrator || by_scope || by_default || by_partition || by_rule || by_share || by_team
        };
        let restricted = self.config.restriction_rules.iter().any(|r| {
            r.module == module
                && self.is(user, &r.applies_to)
                && !(r.exempt_administrators && administrator)
                && !r.criteria.iter().all(|c| Self::meets(record, c))
        });
        granted && !restricted
    }
}

proptest! {
    #[test]
    fn property_decide_matches_a_reference_model_of_the_contract(org in org()) {
        let config = org.config();
        let dir = org.directory(ORG);
        let model = Model { org: &org, config: &config };
        for user in org.people() {
            let access = Access::compile(&config, Arc::clone(&dir), user);
            for action in Action::ALL {
                for facts in &org.records() {
                    let module = facts.record.module;
                    prop_assert_eq!(
                        access.decide(module, action, facts),
                        model.allows(user, action, facts),
                        "user {} {} {} #{}: {:?}", user, action, module, facts.record.id, access.explain(module, action, facts)
                    );
                }
            }
        }
    }
}
