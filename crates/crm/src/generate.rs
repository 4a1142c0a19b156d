//! The benchmark data generator (`crm generate --scale s|m|l`): a large organization with a deep department tree,
//! managers, the standard roles plus generated variants (50 roles), partition grants over the three standard
//! dimensions, 200 sharing rules, 20 restriction rules, groups, and customers, contacts, opportunities, tickets,
//! manual shares and record-team memberships with realistic skew (a few owners with 10,000+ records at scale L, a
//! few accounts with 10,000+ contacts). Deterministic: the same seed and scale give the same organization.
//!
//! Records are written through the store's bulk system path ([`crm_store::BulkLoad`]: one `INSERT … SELECT` over a
//! JSON array per chunk, one transaction and one audit entry per chunk; into a fresh database the record tables'
//! secondary indexes are built once at the end) while a second thread generates the next chunk.

use crate::demo::Rng;
use crate::templates::{
    self, ROLE_ADMIN, ROLE_ANALYST, ROLE_AUDITOR, ROLE_DIRECTOR, ROLE_MANAGER, ROLE_REP, ROLE_SERVICE,
};
use crm_domain::{
    Action, CUSTOMER_TYPES, Level, Module, OrgId, PRIORITIES, REGIONS, RecordId, STAGES, TICKET_STATUSES, UserId, Value,
};
use crm_policy::{
    CmpOp, Criterion, Directory, Grantee, Group, PartitionGrant, PolicyConfig, RestrictionRule, Role, RuleSource,
    Scope, ShareKey, SharingRule,
};
use crm_store::{BulkParent, BulkRecord, BulkUser, Store, StoreError};
use std::collections::{BTreeMap, BTreeSet};

pub const BENCH_SLUG: &str = "bench";
/// Every generated user's password.
pub const BENCH_PASSWORD: &str = "bench-2026";
/// Timestamps start here (2026-01-01T00:00:00Z), so the data does not depend on the clock.
const BASE_MS: i64 = 1_767_225_600_000;
const CHUNK: usize = 50_000;
/// Owners of this many "whale" accounts of records (skew).
const WHALES: usize = 10;
const BIG_ACCOUNTS: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scale {
    S,
    M,
    L,
}

#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    pub users: usize,
    pub departments: usize,
    pub customers: usize,
    pub contacts: usize,
    pub opportunities: usize,
    pub tickets: usize,
    pub shares: usize,
    pub team: usize,
}

impl Scale {
    pub fn sizes(self) -> Sizes {
        let (users, departments, k) = match self {
            Scale::S => (100, 30, 100),
            Scale::M => (1_000, 100, 10),
            Scale::L => (10_000, 500, 1),
        };
        Sizes {
            users,
            departments,
            customers: 1_000_000 / k,
            contacts: 2_000_000 / k,
            opportunities: 1_000_000 / k,
            tickets: 500_000 / k,
            shares: 150_000 / k,
            team: 50_000 / k,
        }
    }
}

pub const ROLES: i64 = 50;
pub const SHARING_RULES: i64 = 200;
pub const RESTRICTION_RULES: i64 = 20;
const GROUPS: i64 = 10;

/// What was generated.
#[derive(Debug, Clone)]
pub struct Generated {
    pub org: OrgId,
    pub users: usize,
    pub departments: usize,
    pub records: BTreeMap<&'static str, usize>,
    pub shares: usize,
    pub team: usize,
}

const CITIES: &[&str] =
    &["北京", "天津", "上海", "杭州", "南京", "苏州", "广州", "深圳", "成都", "武汉", "西安", "沈阳"];
const BRANDS: &[&str] =
    &["华信", "恒通", "瑞达", "中科", "新元", "博远", "众诚", "海纳", "天成", "启明", "嘉禾", "锐思"];
pub const INDUSTRIES: &[&str] =
    &["technology", "manufacturing", "logistics", "finance", "healthcare", "retail", "education", "energy"];
const TRADES: &[&str] = &["科技", "制造", "物流", "金融", "医疗", "零售", "教育", "能源"];
const LINES: &[&str] = &["云服务", "企业软件", "智能硬件"];
const SURNAMES: &[&str] = &["王", "李", "张", "刘", "陈", "杨", "赵", "黄", "周", "吴"];
const GIVEN: &[&str] = &["伟", "芳", "娜", "敏", "静", "磊", "洋", "勇", "艳", "杰"];
const TITLES: &[&str] = &["总经理", "采购经理", "IT 总监", "财务总监", "CTO", "运营主管"];
const SUBJECTS: &[&str] = &["系统无法登录", "发票开具问题", "设备故障报修", "合同续签咨询", "数据导出失败", "培训需求"];

fn text(s: impl Into<String>) -> Value {
    Value::Text(s.into())
}

/// The organization's shape, computed before anything is written (deterministic from the seed).
struct Shape {
    /// (parent index, name, region index or None for non-sales departments)
    depts: Vec<(Option<usize>, String, Option<usize>)>,
    users: Vec<(BulkUser, Option<usize>)>,
    /// Users (indexes) who own sales records, and the first `WHALES` of them are the skewed owners.
    owners: Vec<usize>,
    service: Vec<usize>,
    analysts: Vec<usize>,
}

fn shape(sizes: &Sizes, rng: &mut Rng) -> Shape {
    let mut depts: Vec<(Option<usize>, String, Option<usize>)> = vec![
        (None, "总公司 Headquarters".into(), None),
        (Some(0), "客户服务部 Customer service".into(), None),
        (Some(0), "管理部 Administration".into(), None),
    ];
    let mut depth = vec![1usize, 2, 2];
    for (r, name) in REGIONS.iter().enumerate() {
        depts.push((Some(0), format!("{name}大区"), Some(r)));
        depth.push(2);
    }
    while depts.len() < sizes.departments.max(depts.len()) {
        // A random existing sales department not yet at depth 6 becomes the parent: a random recursive tree.
        let p = loop {
            let p = 3 + rng.below(depts.len() - 3);
            if depth[p] < 6 {
                break p;
            }
        };
        let region = depts[p].2;
        let n = depts.len();
        depts.push((Some(p), format!("{}-{}组", depts[p].1.split('-').next().unwrap_or(""), n), region));
        depth.push(depth[p] + 1);
    }
    let mut users: Vec<(BulkUser, Option<usize>)> = Vec::with_capacity(sizes.users);
    let user = |name: String, dept: usize, role: i64, manager: Option<usize>, region: Option<usize>| {
        (
            BulkUser {
                username: name.clone(),
                display_name: name,
                manager,
                departments: vec![dept as i64],
                roles: vec![role],
            },
            region,
        )
    };
    // Department indexes are turned into ids after the departments exist (see `generate`).
    users.push(user("admin".into(), 2, ROLE_ADMIN, None, None));
    users.push(user("auditor".into(), 2, ROLE_AUDITOR, None, None));
    let n_service = (sizes.users / 50).max(2);
    let mut service = Vec::new();
    for k in 0..n_service {
        service.push(users.len());
        users.push(user(format!("service{}", k + 1), 1, ROLE_SERVICE, None, None));
    }
    let mut dept_manager: Vec<Option<usize>> = vec![None; depts.len()];
    let mut owners = Vec::new();
    for r in 0..REGIONS.len() {
        dept_manager[3 + r] = Some(users.len());
        owners.push(users.len());
        users.push(user(format!("director.r{r}"), 3 + r, ROLE_DIRECTOR, None, Some(r)));
    }
    for (d, (parent, _, region)) in depts.iter().enumerate().skip(3 + REGIONS.len()) {
        if users.len() >= sizes.users {
            break;
        }
        let manager = parent.and_then(|p| dept_manager[p]);
        dept_manager[d] = Some(users.len());
        owners.push(users.len());
        users.push(user(format!("manager.d{d}"), d, ROLE_MANAGER, manager, *region));
    }
    let n_analysts = (sizes.users / 200).max(1);
    let mut analysts = Vec::new();
    for k in 0..n_analysts {
        let r = k % REGIONS.len();
        analysts.push(users.len());
        users.push(user(format!("analyst{}", k + 1), 3 + r, ROLE_ANALYST, dept_manager[3 + r], Some(r)));
    }
    // Representatives: in a random sales department, reporting to its manager. One in five holds a generated
    // variant role instead of the standard representative role.
    let mut k = 0;
    let managers_first = owners.len();
    while users.len() < sizes.users {
        let d = 3 + rng.below(depts.len() - 3);
        let Some(m) = dept_manager[d] else { continue };
        let role = if rng.below(5) == 0 { 8 + rng.below((ROLES - 7) as usize) as i64 } else { ROLE_REP };
        k += 1;
        owners.push(users.len());
        users.push(user(format!("rep{k}"), d, role, Some(m), depts[d].2));
    }
    // The whales are the first representatives.
    let reps: Vec<usize> = owners.split_off(managers_first);
    let mut ordered = reps.clone();
    ordered.extend(owners);
    Shape { depts, users, owners: ordered, service, analysts }
}

fn policy(rng: &mut Rng, users: &[UserId], depts: &[i64], shape: &Shape) -> PolicyConfig {
    let mut p = templates::standard_policy();
    let scopes = [Scope::Own, Scope::Subordinates, Scope::Department, Scope::Own, Scope::DepartmentTree];
    for v in 8..=ROLES {
        let scope = scopes[(v as usize) % scopes.len()];
        let mut perms: BTreeMap<Module, BTreeMap<Action, Scope>> = BTreeMap::new();
        for m in [Module::Customers, Module::Opportunities, Module::Contacts, Module::Activities, Module::Leads] {
            let e = perms.entry(m).or_default();
            for a in [Action::View, Action::Create, Action::Edit] {
                e.insert(a, if a == Action::View { scope } else { Scope::Own });
            }
        }
        perms.entry(Module::Tickets).or_default().insert(Action::View, Scope::Own);
        p.roles.push(Role {
            id: v,
            name: format!("销售变体角色 Sales variant {v}"),
            description: "Generated for benchmarks.".into(),
            permissions: perms,
            view_all: false,
            modify_all: false,
            fields: BTreeMap::new(),
            reveal: BTreeSet::new(),
            require_mfa: false,
        });
    }
    let sales_depts: Vec<i64> = depts[3..].to_vec();
    for g in 1..=GROUPS {
        let members: BTreeSet<UserId> = (0..20).map(|_| users[*rng.pick(&shape.owners)]).collect();
        p.groups.push(Group {
            id: g,
            name: format!("项目组 Group {g}"),
            users: members.into_iter().collect(),
            departments: vec![(*rng.pick(&sales_depts), true)],
        });
    }
    for (k, a) in shape.analysts.iter().enumerate() {
        p.partition_grants.push(PartitionGrant {
            id: k as i64 + 1,
            grantee: Grantee::User { id: users[*a] },
            modules: vec![Module::Customers, Module::Opportunities],
            partitions: BTreeMap::from([
                ("region".to_string(), vec![REGIONS[(k + 1) % REGIONS.len()].to_string()]),
                ("customer_type".to_string(), vec![CUSTOMER_TYPES[(k + 2) % CUSTOMER_TYPES.len()].to_string()]),
            ]),
            level: Level::Read,
        });
    }
    for id in 1..=SHARING_RULES {
        let module = if id % 4 == 3 { Module::Opportunities } else { Module::Customers };
        let (source, share_with) = if id % 2 == 0 {
            (
                RuleSource::OwnedBy {
                    owners: Grantee::Department { id: *rng.pick(&sales_depts[REGIONS.len()..]), include_sub: true },
                },
                Grantee::Department { id: *rng.pick(&sales_depts), include_sub: false },
            )
        } else {
            let industry = INDUSTRIES[rng.below(INDUSTRIES.len())];
            let threshold = (1 + rng.below(20) as i64) * 1_000_000_000;
            let field = if module == Module::Customers { "annual_revenue" } else { "amount" };
            let threshold = if module == Module::Customers { threshold * 10 } else { threshold / 10 };
            let mut criteria = vec![Criterion { field: field.into(), op: CmpOp::Gt, value: threshold.into() }];
            if module == Module::Customers {
                criteria.insert(0, Criterion { field: "industry".into(), op: CmpOp::Eq, value: industry.into() });
            }
            let with = if id % 3 == 0 {
                Grantee::Role { id: 8 + rng.below((ROLES - 7) as usize) as i64 }
            } else {
                Grantee::Group { id: 1 + rng.below(GROUPS as usize) as i64 }
            };
            (RuleSource::Criteria { criteria }, with)
        };
        p.sharing_rules.push(SharingRule {
            id,
            name: format!("共享规则 Sharing rule {id}"),
            module,
            source,
            share_with,
            level: Level::Read,
        });
    }
    for id in 2..=RESTRICTION_RULES {
        let module = if id % 2 == 0 { Module::Customers } else { Module::Opportunities };
        let criteria = if id % 3 == 0 {
            vec![Criterion {
                field: "region".into(),
                op: CmpOp::NotIn,
                value: serde_json::json!([REGIONS[id as usize % REGIONS.len()]]),
            }]
        } else if module == Module::Customers {
            vec![Criterion { field: "customer_type".into(), op: CmpOp::Ne, value: "government".into() }]
        } else {
            vec![Criterion { field: "stage".into(), op: CmpOp::Ne, value: "lost".into() }]
        };
        p.restriction_rules.push(RestrictionRule {
            id,
            name: format!("限制规则 Restriction {id}"),
            module,
            applies_to: Grantee::Role { id: 8 + (id - 2) * 2 },
            criteria,
            exempt_administrators: false,
        });
    }
    p
}

/// A chunk of generated rows; reference fields hold indexes that the writer turns into ids.
enum Chunk {
    Records(Module, Vec<BulkRecord>),
    /// (module, record index, key, level)
    Shares(Vec<(Module, usize, ShareKey, Level)>),
    Team(Vec<(Module, usize, UserId, Level)>),
}

struct Producer {
    rng: Rng,
    sizes: Sizes,
    /// User ids of the record owners (the first `WHALES` are the skewed ones).
    owners: Vec<UserId>,
    service: Vec<UserId>,
    /// Region of each owner (parallel to `owners`).
    owner_region: Vec<Option<usize>>,
    everyone: Vec<UserId>,
    depts: Vec<i64>,
}

impl Producer {
    /// The owner position of the next record: one in ten goes to a whale.
    fn owner(&mut self) -> usize {
        if self.rng.below(10) == 0 {
            self.rng.below(WHALES.min(self.owners.len()))
        } else {
            self.rng.below(self.owners.len())
        }
    }
    fn account(&mut self) -> usize {
        if self.rng.below(20) == 0 { self.rng.below(BIG_ACCOUNTS) } else { self.rng.below(self.sizes.customers) }
    }
    fn when(&mut self, i: usize, n: usize) -> i64 {
        // Spread over a year, mostly in insertion order, with a little jitter.
        BASE_MS + (i as i64) * (365 * 86_400_000 / n.max(1) as i64) + self.rng.below(3_600_000) as i64
    }

    fn run(mut self, tx: tokio::sync::mpsc::Sender<Chunk>) {
        let s = self.sizes;
        let mut customer_owner: Vec<u32> = Vec::with_capacity(s.customers);
        for start in (0..s.customers).step_by(CHUNK) {
            let mut rows = Vec::with_capacity(CHUNK);
            for i in start..(start + CHUNK).min(s.customers) {
                let o = self.owner();
                customer_owner.push(o as u32);
                let t = self.rng.below(INDUSTRIES.len());
                let ctype = [
                    "enterprise",
                    "enterprise",
                    "enterprise",
                    "smb",
                    "smb",
                    "smb",
                    "smb",
                    "smb",
                    "government",
                    "government",
                ][self.rng.below(10)];
                let region = self.owner_region[o].map(|r| REGIONS[r]).unwrap_or(REGIONS[0]);
                let revenue =
                    (self.rng.below(2000) as i64 + 1) * 10_000_000 * if ctype == "enterprise" { 10 } else { 1 };
                let updated_at = self.when(i, s.customers);
                let values = vec![
                    text(format!("{}{}{}有限公司 #{i}", self.rng.pick(CITIES), self.rng.pick(BRANDS), TRADES[t])),
                    text(INDUSTRIES[t]),
                    text(ctype),
                    text(region),
                    text(*self.rng.pick(LINES)),
                    text(format!("1{}{:09}", [3, 5, 8][self.rng.below(3)], self.rng.next_u64() % 1_000_000_000)),
                    text(format!("contact{i}@customer{}.example", i % 997)),
                    text(format!(
                        "{}市{}路{}号",
                        self.rng.pick(CITIES),
                        self.rng.pick(BRANDS),
                        1 + self.rng.below(300)
                    )),
                    Value::Int(revenue),
                ];
                rows.push(BulkRecord { owner: self.owners[o], updated_at, values });
            }
            if tx.blocking_send(Chunk::Records(Module::Customers, rows)).is_err() {
                return;
            }
        }
        let owner_of = |c: usize| customer_owner[c] as usize;
        for start in (0..s.contacts).step_by(CHUNK) {
            let mut rows = Vec::with_capacity(CHUNK);
            for i in start..(start + CHUNK).min(s.contacts) {
                let c = self.account();
                let name = format!("{}{}{}", self.rng.pick(SURNAMES), self.rng.pick(GIVEN), self.rng.pick(GIVEN));
                let values = vec![
                    Value::Int(c as i64),
                    text(name),
                    text(*self.rng.pick(TITLES)),
                    text(format!("1{}{:09}", [3, 5, 8][self.rng.below(3)], self.rng.next_u64() % 1_000_000_000)),
                    text(format!("p{i}@customer{}.example", c % 997)),
                ];
                let updated_at = self.when(i, s.contacts);
                rows.push(BulkRecord { owner: self.owners[owner_of(c)], updated_at, values });
            }
            if tx.blocking_send(Chunk::Records(Module::Contacts, rows)).is_err() {
                return;
            }
        }
        for start in (0..s.opportunities).step_by(CHUNK) {
            let mut rows = Vec::with_capacity(CHUNK);
            for i in start..(start + CHUNK).min(s.opportunities) {
                let c = self.account();
                let o = owner_of(c);
                let region = self.owner_region[o].map(|r| REGIONS[r]).unwrap_or(REGIONS[0]);
                let values = vec![
                    Value::Int(c as i64),
                    text(format!("{}项目 {}", self.rng.pick(LINES), i + 1)),
                    text(*self.rng.pick(STAGES)),
                    Value::Int((self.rng.below(500) as i64 + 1) * 1_000_000),
                    text(format!("2027-{:02}-{:02}", 1 + self.rng.below(12), 1 + self.rng.below(28))),
                    text(region),
                    text(*self.rng.pick(LINES)),
                ];
                let updated_at = self.when(i, s.opportunities);
                rows.push(BulkRecord { owner: self.owners[o], updated_at, values });
            }
            if tx.blocking_send(Chunk::Records(Module::Opportunities, rows)).is_err() {
                return;
            }
        }
        for start in (0..s.tickets).step_by(CHUNK) {
            let mut rows = Vec::with_capacity(CHUNK);
            for i in start..(start + CHUNK).min(s.tickets) {
                let c = self.account();
                let region = self.owner_region[owner_of(c)].map(|r| REGIONS[r]).unwrap_or(REGIONS[0]);
                let values = vec![
                    Value::Int(c as i64),
                    Value::Null,
                    text(*self.rng.pick(SUBJECTS)),
                    text("客户来电反馈,需跟进处理。"),
                    text(*self.rng.pick(PRIORITIES)),
                    text(*self.rng.pick(TICKET_STATUSES)),
                    text(region),
                ];
                let owner = *self.rng.pick(&self.service);
                let updated_at = self.when(i, s.tickets);
                rows.push(BulkRecord { owner, updated_at, values });
            }
            if tx.blocking_send(Chunk::Records(Module::Tickets, rows)).is_err() {
                return;
            }
        }
        // Manual shares: mostly with single users, some with groups and departments. The representative persona
        // (see `personas`) gets a few, so its list mixes owned and shared records.
        let mut shares = Vec::with_capacity(s.shares);
        let rep_persona = self.owners[WHALES.min(self.owners.len() - 1)];
        for k in 0..s.shares {
            let (module, n) = if self.rng.below(10) < 7 {
                (Module::Customers, s.customers)
            } else {
                (Module::Opportunities, s.opportunities)
            };
            let key = match self.rng.below(10) {
                _ if k < 25 => ShareKey::User(rep_persona),
                0 => ShareKey::Group(1 + self.rng.below(GROUPS as usize) as i64),
                1 => ShareKey::Department(*self.rng.pick(&self.depts)),
                _ => ShareKey::User(*self.rng.pick(&self.everyone)),
            };
            let module = if k < 25 { Module::Customers } else { module };
            let level = if self.rng.below(5) == 0 { Level::Edit } else { Level::Read };
            shares.push((module, self.rng.below(n), key, level));
            if shares.len() == CHUNK && tx.blocking_send(Chunk::Shares(std::mem::take(&mut shares))).is_err() {
                return;
            }
        }
        if !shares.is_empty() && tx.blocking_send(Chunk::Shares(shares)).is_err() {
            return;
        }
        let mut team = Vec::with_capacity(s.team);
        for k in 0..s.team {
            let (module, n) = if self.rng.below(10) < 7 {
                (Module::Opportunities, s.opportunities)
            } else {
                (Module::Customers, s.customers)
            };
            let user = if k < 10 { rep_persona } else { *self.rng.pick(&self.owners) };
            team.push((module, self.rng.below(n), user, Level::Edit));
            if team.len() == CHUNK && tx.blocking_send(Chunk::Team(std::mem::take(&mut team))).is_err() {
                return;
            }
        }
        if !team.is_empty() {
            let _ = tx.blocking_send(Chunk::Team(team));
        }
    }
}

/// Generates the benchmark organization (slug `bench`). `progress(phase, done, total)` is called as rows are
/// written. Fails if the organization exists.
pub async fn generate(
    store: &Store,
    scale: Scale,
    seed: u64,
    progress: &(dyn Fn(&str, u64, u64) + Sync),
) -> Result<Generated, StoreError> {
    let sizes = scale.sizes();
    let sys = store.unscoped_system_access();
    if sys.organization_by_slug(BENCH_SLUG).await?.is_some() {
        return Err(StoreError::Conflict(format!(
            "organization {BENCH_SLUG:?} exists already: generate into a fresh database"
        )));
    }
    let started = std::time::Instant::now();
    let mut rng = Rng::new(seed);
    let shape = shape(&sizes, &mut rng);
    let org =
        sys.create_organization(BENCH_SLUG, "基准测试集团 Benchmark Group", &templates::standard_policy()).await?;
    progress("directory", 0, 3);
    let dept_rows: Vec<(BulkParent, String)> = shape
        .depts
        .iter()
        .map(|(p, name, _)| (p.map(BulkParent::Batch).unwrap_or(BulkParent::None), name.clone()))
        .collect();
    let dept_ids = sys.bulk_departments(org, &dept_rows).await?;
    progress("directory", 1, 3);
    let users: Vec<BulkUser> = shape
        .users
        .iter()
        .map(|(u, _)| BulkUser {
            departments: u.departments.iter().map(|d| dept_ids[*d as usize]).collect(),
            ..u.clone()
        })
        .collect();
    let user_ids = sys.bulk_users(org, &users, BENCH_PASSWORD).await?;
    progress("directory", 2, 3);
    let config = policy(&mut rng, &user_ids, &dept_ids, &shape);
    sys.set_policy(org, None, &config).await?;
    progress("directory", 3, 3);

    let producer = Producer {
        rng: Rng::new(seed ^ 0x5eed),
        sizes,
        owners: shape.owners.iter().map(|u| user_ids[*u]).collect(),
        owner_region: shape.owners.iter().map(|u| shape.users[*u].1).collect(),
        service: shape.service.iter().map(|u| user_ids[*u]).collect(),
        everyone: user_ids.clone(),
        depts: dept_ids.clone(),
    };
    tracing::info!(seconds = started.elapsed().as_secs_f64(), "directory and policy written");
    let mut load = sys.bulk_load(org).await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Chunk>(2);
    let worker = std::thread::spawn(move || producer.run(tx));
    let total =
        (sizes.customers + sizes.contacts + sizes.opportunities + sizes.tickets + sizes.shares + sizes.team) as u64;
    let mut done = 0u64;
    let mut base: BTreeMap<Module, RecordId> = BTreeMap::new();
    let mut written: BTreeMap<Module, usize> = BTreeMap::new();
    let (mut shares, mut team) = (0usize, 0usize);
    while let Some(chunk) = rx.recv().await {
        match chunk {
            Chunk::Records(module, mut rows) => {
                if module != Module::Customers {
                    let c = base.get(&Module::Customers).copied().unwrap_or(0);
                    for r in &mut rows {
                        if let Some(Value::Int(i)) = r.values.first_mut() {
                            *i += c;
                        }
                    }
                }
                let first = load.records(module, &rows).await?;
                let expected = base.get(&module).map(|b| b + written[&module] as i64);
                if let Some(e) = expected.filter(|e| *e != first) {
                    return Err(StoreError::Conflict(format!(
                        "{module}: ids not consecutive ({first} after {e}); is another writer active?"
                    )));
                }
                base.entry(module).or_insert(first);
                *written.entry(module).or_default() += rows.len();
                done += rows.len() as u64;
            }
            Chunk::Shares(rows) => {
                let rows: Vec<_> = rows.into_iter().map(|(m, i, k, l)| (m, base[&m] + i as i64, k, l)).collect();
                load.shares(&rows).await?;
                shares += rows.len();
                done += rows.len() as u64;
            }
            Chunk::Team(rows) => {
                let rows: Vec<_> = rows.into_iter().map(|(m, i, u, l)| (m, base[&m] + i as i64, u, l)).collect();
                load.team(&rows).await?;
                team += rows.len();
                done += rows.len() as u64;
            }
        }
        progress("records", done, total);
    }
    worker.join().map_err(|_| StoreError::Config("the generator thread panicked".into()))?;
    tracing::info!(seconds = started.elapsed().as_secs_f64(), fresh = load.fresh(), "records written");
    progress("indexes", 0, 1);
    load.finish().await?;
    tracing::info!(seconds = started.elapsed().as_secs_f64(), "indexes built, statistics refreshed");
    progress("indexes", 1, 1);
    Ok(Generated {
        org,
        users: user_ids.len(),
        departments: dept_ids.len(),
        records: written.into_iter().map(|(m, n)| (m.as_str(), n)).collect(),
        shares,
        team,
    })
}

/// A benchmark persona: a generated user chosen for how much of the data they see.
#[derive(Debug, Clone)]
pub struct Persona {
    pub label: &'static str,
    pub username: String,
    pub user: UserId,
}

/// Chooses the personas of a generated organization from its directory: administrator (100 %), customer service
/// (all but government customers), a regional director (one region's tree), a manager of about 1 % and of about
/// 0.1 % of the sales force, a partition-grant analyst, a whale representative (10,000+ records at scale L) and an
/// ordinary representative with manual shares and team memberships (about 0.01 %).
pub fn personas(dir: &Directory, users: &[(String, UserId)]) -> Vec<Persona> {
    let by_name: BTreeMap<&str, UserId> = users.iter().map(|(n, id)| (n.as_str(), *id)).collect();
    let mut out = Vec::new();
    let mut add = |label: &'static str, name: &str| {
        if let Some(id) = by_name.get(name) {
            out.push(Persona { label, username: name.to_string(), user: *id });
        }
    };
    add("admin (view all)", "admin");
    add("service (all − government)", "service1");
    add("director (region tree)", "director.r1");
    // Managers by the share of the sales force in their department tree.
    let mut per_dept: BTreeMap<i64, usize> = BTreeMap::new();
    let mut sales = 0usize;
    for u in dir.users() {
        if let Some(d) = u.departments.first() {
            *per_dept.entry(*d).or_default() += 1;
        }
        sales += 1;
    }
    let managers: Vec<(&str, f64)> = users
        .iter()
        .filter(|(n, _)| n.starts_with("manager."))
        .filter_map(|(n, id)| {
            let d = *dir.user(*id)?.departments.first()?;
            let n_users: usize = dir.subtree(d).iter().map(|x| per_dept.get(x).copied().unwrap_or(0)).sum();
            Some((n.as_str(), n_users as f64 / sales.max(1) as f64))
        })
        .collect();
    let closest = |target: f64| {
        managers
            .iter()
            .min_by(|a, b| (a.1 - target).abs().total_cmp(&(b.1 - target).abs()).then(a.0.cmp(b.0)))
            .map(|m| m.0.to_string())
    };
    if let Some(m) = closest(0.01) {
        add("manager (~1 % tree)", &m);
    }
    if let Some(m) = closest(0.001) {
        add("team lead (~0.1 % tree)", &m);
    }
    add("analyst (partition grant)", "analyst1");
    add("whale rep (10k+ owned)", "rep1");
    add("rep (own + shares + team)", &format!("rep{}", WHALES + 1));
    out
}
