//! The demo organization, modelled on the seed: a company with regional sales departments (华北, 华东, 华南),
//! a sales manager per region with representatives under them, a customer-service team, an administrator, a
//! read-only auditor and a regional analyst, and a few thousand realistic records. Deterministic: the same seed
//! gives the same organization.

use crate::templates::{
    self, ROLE_ADMIN, ROLE_ANALYST, ROLE_AUDITOR, ROLE_DIRECTOR, ROLE_MANAGER, ROLE_REP, ROLE_SERVICE,
};
use crm_domain::{Module, OrgId, UserId, Value};
use crm_store::{NewUser, Store, StoreError};
use std::collections::BTreeMap;

pub const DEMO_SLUG: &str = "demo";
pub const ADMIN_PASSWORD: &str = "admin-demo-2026";
pub const PERSONA_PASSWORD: &str = "demo-2026";

/// A demo persona, as listed in the README.
#[derive(Debug, Clone)]
pub struct Persona {
    pub username: &'static str,
    pub name: &'static str,
    pub sees: &'static str,
}

pub const PERSONAS: &[Persona] = &[
    Persona {
        username: "admin", name: "系统管理员 Administrator", sees: "everything; manages users, roles and rules"
    },
    Persona {
        username: "auditor", name: "审计员 Auditor (read-only)", sees: "everything, read-only; the audit trail"
    },
    Persona {
        username: "director",
        name: "销售总监 Sales director",
        sees: "every record of the sales department tree",
    },
    Persona { username: "manager.north", name: "华北销售经理 North manager", sees: "the 华北 team's records" },
    Persona { username: "rep.north1", name: "华北销售代表 North rep", sees: "own records only" },
    Persona { username: "rep.north2", name: "华北销售代表 North rep", sees: "own records only" },
    Persona {
        username: "manager.east",
        name: "华东销售经理 East manager",
        sees: "the 华东 team's records; key accounts (read)",
    },
    Persona { username: "rep.east1", name: "华东销售代表 East rep", sees: "own records only" },
    Persona { username: "rep.east2", name: "华东销售代表 East rep", sees: "own records only" },
    Persona {
        username: "manager.south",
        name: "华南销售经理 South manager",
        sees: "the 华南 team's records; key accounts (read)",
    },
    Persona { username: "rep.south1", name: "华南销售代表 South rep", sees: "own records only" },
    Persona { username: "rep.south2", name: "华南销售代表 South rep", sees: "own records only" },
    Persona {
        username: "service1",
        name: "客服专员 Customer service",
        sees: "all customers except government ones (read-only, phone masked), all tickets, no opportunities",
    },
    Persona { username: "service2", name: "客服专员 Customer service", sees: "as service1" },
    Persona {
        username: "analyst.east",
        name: "华东区域分析师 East analyst",
        sees: "own records plus 华东 customers and opportunities, read-only",
    },
];

pub fn password_for(username: &str) -> &'static str {
    if username == "admin" { ADMIN_PASSWORD } else { PERSONA_PASSWORD }
}

/// A small deterministic generator (SplitMix64), so the demo is the same on every machine.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const CITIES: &[&str] =
    &["北京", "天津", "上海", "杭州", "南京", "苏州", "广州", "深圳", "厦门", "石家庄", "宁波", "东莞"];
const BRANDS: &[&str] =
    &["华信", "恒通", "瑞达", "中科", "新元", "博远", "众诚", "海纳", "天成", "启明", "嘉禾", "锐思", "德胜", "鼎盛"];
const TRADES: &[(&str, &str)] = &[
    ("科技", "technology"),
    ("制造", "manufacturing"),
    ("物流", "logistics"),
    ("金融", "finance"),
    ("医疗", "healthcare"),
    ("零售", "retail"),
    ("教育", "education"),
    ("能源", "energy"),
];
const EN_NAMES: &[&str] =
    &["Acme", "Globex", "Initech", "Umbrella", "Stark", "Wayne", "Soylent", "Hooli", "Vandelay", "Wonka"];
const SURNAMES: &[&str] = &["王", "李", "张", "刘", "陈", "杨", "赵", "黄", "周", "吴", "徐", "孙", "马", "朱"];
const GIVEN: &[&str] =
    &["伟", "芳", "娜", "敏", "静", "磊", "洋", "勇", "艳", "杰", "涛", "明", "超", "丽", "强", "婷"];
const EN_PEOPLE: &[&str] =
    &["Alice Chen", "Bob Li", "Carol Wang", "David Zhang", "Emma Liu", "Frank Zhou", "Grace Wu", "Henry Sun"];
const BUSINESS_LINES: &[&str] = &["云服务", "企业软件", "智能硬件"];
const TITLES: &[&str] = &["总经理", "采购经理", "IT 总监", "财务总监", "CTO", "Procurement Lead", "运营主管"];
const SUBJECTS: &[&str] = &[
    "系统无法登录",
    "发票开具问题",
    "设备故障报修",
    "合同续签咨询",
    "数据导出失败",
    "培训需求",
    "Invoice correction",
    "API rate limit",
];

fn text(s: impl Into<String>) -> Value {
    Value::Text(s.into())
}

fn person(rng: &mut Rng) -> String {
    if rng.below(6) == 0 {
        rng.pick(EN_PEOPLE).to_string()
    } else {
        format!("{}{}{}", rng.pick(SURNAMES), rng.pick(GIVEN), if rng.below(2) == 0 { rng.pick(GIVEN) } else { "" })
    }
}

fn phone(rng: &mut Rng) -> String {
    format!("1{}{:09}", [3, 5, 8][rng.below(3)], rng.next_u64() % 1_000_000_000)
}

/// Who was created, for tests and the CLI.
#[derive(Debug, Clone)]
pub struct DemoOrg {
    pub org: OrgId,
    pub users: BTreeMap<&'static str, UserId>,
}

/// Creates the demo organization unless it exists; returns it either way.
pub async fn ensure_demo(store: &Store, scale: usize) -> Result<DemoOrg, StoreError> {
    let sys = store.unscoped_system_access();
    if let Some(org) = sys.organization_by_slug(DEMO_SLUG).await? {
        let users = sys
            .user_ids(org)
            .await?
            .into_iter()
            .filter_map(|(name, id)| PERSONAS.iter().find(|p| p.username == name).map(|p| (p.username, id)))
            .collect();
        return Ok(DemoOrg { org, users });
    }
    let org = sys.create_organization(DEMO_SLUG, "示例科技有限公司 Demo Co.", &templates::standard_policy()).await?;
    let hq = sys.create_department(org, None, "总公司 Headquarters").await?;
    let sales = sys.create_department(org, Some(hq), "销售部 Sales").await?;
    let north = sys.create_department(org, Some(sales), "华北区 North").await?;
    let east = sys.create_department(org, Some(sales), "华东区 East").await?;
    let south = sys.create_department(org, Some(sales), "华南区 South").await?;
    let service = sys.create_department(org, Some(hq), "客户服务部 Customer service").await?;
    let admin_dept = sys.create_department(org, Some(hq), "管理部 Administration").await?;

    let mut users = BTreeMap::new();
    let add = async |username: &'static str,
                     display: &str,
                     dept: i64,
                     role: i64,
                     manager: Option<UserId>|
           -> Result<UserId, StoreError> {
        let id = sys
            .create_user(
                org,
                NewUser {
                    username: username.into(),
                    display_name: display.into(),
                    email: Some(format!("{username}@demo.example")),
                    password: password_for(username).into(),
                    manager,
                    departments: vec![dept],
                    roles: vec![role],
                    must_change_password: false,
                },
            )
            .await?;
        Ok(id)
    };
    users.insert("admin", add("admin", "系统管理员", admin_dept, ROLE_ADMIN, None).await?);
    users.insert("auditor", add("auditor", "审计员 孙静", admin_dept, ROLE_AUDITOR, None).await?);
    let director = add("director", "销售总监 周明", sales, ROLE_DIRECTOR, None).await?;
    users.insert("director", director);
    for (region, dept, manager_name, reps) in [
        ("north", north, "manager.north", ["rep.north1", "rep.north2"]),
        ("east", east, "manager.east", ["rep.east1", "rep.east2"]),
        ("south", south, "manager.south", ["rep.south1", "rep.south2"]),
    ] {
        let m = add(manager_name, &format!("销售经理 ({region})"), dept, ROLE_MANAGER, Some(director)).await?;
        users.insert(manager_name, m);
        for r in reps {
            users.insert(r, add(r, &format!("销售代表 {r}"), dept, ROLE_REP, Some(m)).await?);
        }
    }
    users.insert("service1", add("service1", "客服 陈芳", service, ROLE_SERVICE, None).await?);
    users.insert("service2", add("service2", "客服 刘洋", service, ROLE_SERVICE, None).await?);
    users.insert("analyst.east", add("analyst.east", "区域分析师 赵磊", east, ROLE_ANALYST, None).await?);

    let policy = templates::demo_policy(users["analyst.east"], vec![users["manager.east"], users["manager.south"]]);
    sys.set_policy(org, None, &policy).await?;

    seed_records(store, org, &users, scale).await?;
    Ok(DemoOrg { org, users })
}

/// Seeds `scale` customers (default demo: 1,200) with contacts, opportunities, tickets, leads and activities.
async fn seed_records(
    store: &Store,
    org: OrgId,
    users: &BTreeMap<&'static str, UserId>,
    scale: usize,
) -> Result<(), StoreError> {
    let sys = store.unscoped_system_access();
    let mut rng = Rng::new(2026);
    let regions = [
        ("华北", ["manager.north", "rep.north1", "rep.north2"]),
        ("华东", ["manager.east", "rep.east1", "rep.east2"]),
        ("华南", ["manager.south", "rep.south1", "rep.south2"]),
    ];
    let mut customers = Vec::with_capacity(scale);
    for i in 0..scale {
        let (region, owners) = &regions[i % 3];
        // Reps own most customers; managers a few.
        let owner = users[owners[if rng.below(5) == 0 { 0 } else { 1 + rng.below(2) }]];
        let (trade_cn, trade_en) = *rng.pick(TRADES);
        let name = if rng.below(8) == 0 {
            format!("{} {} {}", rng.pick(EN_NAMES), trade_en, ["Ltd.", "Inc.", "Group"][rng.below(3)])
        } else {
            format!("{}{}{}有限公司", rng.pick(CITIES), rng.pick(BRANDS), trade_cn)
        };
        let ctype = ["enterprise", "enterprise", "smb", "smb", "smb", "government"][rng.below(6)];
        let revenue = (rng.below(2000) as i64 + 1) * 10_000_000 * if ctype == "enterprise" { 10 } else { 1 };
        let fields = BTreeMap::from([
            ("name", text(format!("{name} #{i}"))),
            ("industry", text(trade_en)),
            ("customer_type", text(ctype)),
            ("region", text(*region)),
            ("business_line", text(*rng.pick(BUSINESS_LINES))),
            ("phone", text(phone(&mut rng))),
            ("email", text(format!("contact{i}@customer{}.example", i % 97))),
            ("address", text(format!("{}市{}路{}号", rng.pick(CITIES), rng.pick(BRANDS), 1 + rng.below(300)))),
            ("annual_revenue", Value::Int(revenue)),
        ]);
        customers.push((owner, fields));
    }
    let customer_ids = sys.seed_records(org, Module::Customers, &customers).await?;
    let owner_of = |i: usize| customers[i].0;
    let region_of = |i: usize| customers[i].1.get("region").cloned().unwrap_or(Value::Null);
    let line_of = |i: usize| customers[i].1.get("business_line").cloned().unwrap_or(Value::Null);

    let contacts: Vec<_> = (0..scale * 5 / 3)
        .map(|_| {
            let c = rng.below(customer_ids.len());
            let fields = BTreeMap::from([
                ("account_id", Value::Int(customer_ids[c])),
                ("name", text(person(&mut rng))),
                ("title", text(*rng.pick(TITLES))),
                ("phone", text(phone(&mut rng))),
                ("email", text(format!("p{}@customer{}.example", rng.below(100_000), c % 97))),
            ]);
            (owner_of(c), fields)
        })
        .collect();
    sys.seed_records(org, Module::Contacts, &contacts).await?;

    let stages = crm_domain::STAGES;
    let opportunities: Vec<_> = (0..scale * 2 / 3)
        .map(|k| {
            let c = rng.below(customer_ids.len());
            let fields = BTreeMap::from([
                ("account_id", Value::Int(customer_ids[c])),
                ("name", text(format!("{}项目 {}", rng.pick(BUSINESS_LINES), k + 1))),
                ("stage", text(*rng.pick(stages))),
                ("amount", Value::Int((rng.below(500) as i64 + 1) * 1_000_000)),
                ("close_date", text(format!("2027-{:02}-{:02}", 1 + rng.below(12), 1 + rng.below(28)))),
                ("region", region_of(c)),
                ("business_line", line_of(c)),
            ]);
            (owner_of(c), fields)
        })
        .collect();
    sys.seed_records(org, Module::Opportunities, &opportunities).await?;

    let service = [users["service1"], users["service2"]];
    let tickets: Vec<_> = (0..scale / 3)
        .map(|_| {
            let c = rng.below(customer_ids.len());
            let fields = BTreeMap::from([
                ("account_id", Value::Int(customer_ids[c])),
                ("subject", text(*rng.pick(SUBJECTS))),
                ("description", text("客户来电反馈,需跟进处理。")),
                ("priority", text(*rng.pick(crm_domain::PRIORITIES))),
                ("status", text(*rng.pick(crm_domain::TICKET_STATUSES))),
                ("region", region_of(c)),
            ]);
            (*rng.pick(&service), fields)
        })
        .collect();
    sys.seed_records(org, Module::Tickets, &tickets).await?;

    let leads: Vec<_> = (0..scale / 4)
        .map(|i| {
            let (region, owners) = &regions[i % 3];
            let fields = BTreeMap::from([
                ("name", text(person(&mut rng))),
                ("company", text(format!("{}{}{}公司", rng.pick(CITIES), rng.pick(BRANDS), rng.pick(TRADES).0))),
                ("phone", text(phone(&mut rng))),
                ("source", text(["展会", "官网", "转介绍", "电话营销"][rng.below(4)])),
                ("status", text(*rng.pick(crm_domain::LEAD_STATUSES))),
                ("region", text(*region)),
                ("business_line", text(*rng.pick(BUSINESS_LINES))),
            ]);
            (users[owners[1 + rng.below(2)]], fields)
        })
        .collect();
    sys.seed_records(org, Module::Leads, &leads).await?;

    let activities: Vec<_> = (0..scale / 2)
        .map(|_| {
            let c = rng.below(customer_ids.len());
            let kind = *rng.pick(crm_domain::ACTIVITY_KINDS);
            let fields = BTreeMap::from([
                ("kind", text(kind)),
                (
                    "subject",
                    text(format!("{}: {}", kind, ["拜访客户", "电话回访", "发送报价", "需求调研"][rng.below(4)])),
                ),
                ("due_date", text(format!("2026-12-{:02}", 1 + rng.below(28)))),
                ("account_id", Value::Int(customer_ids[c])),
            ]);
            (owner_of(c), fields)
        })
        .collect();
    sys.seed_records(org, Module::Activities, &activities).await?;
    Ok(())
}
