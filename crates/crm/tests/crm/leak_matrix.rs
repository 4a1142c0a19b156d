//! The leak matrix over the demo organization. For every persona and record module, the records the persona may
//! see are computed here from the raw tables by the demo's rules as `demo.rs` and `templates.rs` state them (not
//! through the store or the policy crate); then every read path must show exactly those records and nothing else:
//! list pages (every cursor), count, text search, filters, related lists, CSV export, get by id for every record of
//! the organization, and the texts of errors.

use crate::support::{CUSTOMERS, demo_app, duplicates, enc, get_all, ids, missing_id, token, walk, writes};
use crm::demo::PERSONAS;
use crm_testkit::{TestApp, TestResponse, engines};
use serde_json::{Value, json};
use sqlx::Row;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

const MODULES: [&str; 6] = ["customers", "contacts", "opportunities", "tickets", "leads", "activities"];
/// Child modules whose related lists are checked (`/customers/{id}/{child}`).
const CHILDREN: [&str; 3] = ["contacts", "opportunities", "tickets"];

/// The sales department tree: the director in 销售部, the three regional teams below it (the east analyst sits in
/// 华东区).
const SALES: [&str; 11] = [
    "director",
    "manager.north",
    "rep.north1",
    "rep.north2",
    "manager.east",
    "rep.east1",
    "rep.east2",
    "analyst.east",
    "manager.south",
    "rep.south1",
    "rep.south2",
];

fn team(manager: &str) -> Vec<&'static str> {
    match manager {
        "manager.north" => vec!["manager.north", "rep.north1", "rep.north2"],
        "manager.east" => vec!["manager.east", "rep.east1", "rep.east2", "analyst.east"],
        "manager.south" => vec!["manager.south", "rep.south1", "rep.south2"],
        other => panic!("{other} manages no team"),
    }
}

/// The demo's key-account sharing rule: customers with annual revenue over 10,000,000,000 are shared (read) with
/// the key-account group, the east and south managers.
const KEY_ACCOUNT_MEMBERS: [&str; 2] = ["manager.east", "manager.south"];
const KEY_ACCOUNT_REVENUE: i64 = 10_000_000_000;

/// The demo's rules as a SQL condition over the row `a` of `module`'s table; `None` when the persona's roles do not
/// grant the module at all (it does not exist for them).
fn rule(org: i64, persona: &str, module: &str, a: &str) -> Option<String> {
    let owners = |names: &[&str]| {
        let list = names.iter().map(|n| format!("'{n}'")).collect::<Vec<_>>().join(", ");
        format!("{a}.owner_id IN (SELECT u.id FROM users u WHERE u.org_id = {org} AND u.username IN ({list}))")
    };
    let all = "1=1".to_string();
    // Contacts are controlled by their account: visible exactly when the customer is.
    if module == "contacts" {
        let parent = rule(org, persona, "customers", "c")?;
        return Some(format!("{a}.account_id IN (SELECT c.id FROM customers c WHERE c.org_id = {org} AND {parent})"));
    }
    Some(match (persona, module) {
        // Administrator (view and modify all) and auditor (view all).
        ("admin" | "auditor", _) => all,
        // Director: the sales department tree, every module they hold (tickets: view).
        ("director", _) => owners(&SALES),
        // Managers: their department tree; east and south also read the key accounts.
        (m, "customers") if m.starts_with("manager.") => {
            let mut c = owners(&team(m));
            if KEY_ACCOUNT_MEMBERS.contains(&m) {
                c = format!("({c} OR {a}.annual_revenue > {KEY_ACCOUNT_REVENUE})");
            }
            c
        }
        (m, _) if m.starts_with("manager.") => owners(&team(m)),
        // Representatives: own records.
        (r, _) if r.starts_with("rep.") => owners(&[r]),
        // Customer service: every customer except government ones, every ticket, own activities, nothing else.
        ("service1" | "service2", "customers") => format!("{a}.customer_type <> 'government'"),
        ("service1" | "service2", "tickets") => all,
        ("service1" | "service2", "activities") => owners(&[persona]),
        ("service1" | "service2", _) => return None,
        // The east analyst: own plus 华东 customers and opportunities (read-only); no other module.
        ("analyst.east", "customers" | "opportunities") => format!("({} OR {a}.region = '华东')", owners(&[persona])),
        ("analyst.east", _) => return None,
        (p, m) => panic!("no rule for {p} on {m}"),
    })
}

/// A text search (`q`) and the same match in SQL over the module's searchable text columns.
fn searches(module: &str) -> Vec<(&'static str, &'static str)> {
    match module {
        "customers" => vec![
            ("有限公司", "r.name LIKE '%有限公司%'"),
            ("LTD", "LOWER(r.name) LIKE '%ltd%'"),
            ("%", "1=0"),
            ("_", "1=0"),
        ],
        "contacts" => vec![("王", "r.name LIKE '%王%'")],
        "opportunities" => vec![("项目 1", "r.name LIKE '%项目 1%'")],
        "tickets" => vec![("登录", "r.subject LIKE '%登录%'"), ("invoice", "LOWER(r.subject) LIKE '%invoice%'")],
        "leads" => vec![("公司", "(r.name LIKE '%公司%' OR r.company LIKE '%公司%')")],
        "activities" => vec![("拜访", "r.subject LIKE '%拜访%'")],
        _ => unreachable!(),
    }
}

/// A filter three ways: query-string form, JSON form, SQL.
fn filters(module: &str) -> Vec<(&'static str, Value, &'static str)> {
    let f = |field: &str, op: &str, value: Value| json!([{"field": field, "op": op, "value": value}]);
    match module {
        "customers" => vec![
            ("region:eq:华东", f("region", "eq", json!("华东")), "r.region = '华东'"),
            (
                "customer_type:in:smb,government",
                f("customer_type", "in", json!(["smb", "government"])),
                "r.customer_type IN ('smb', 'government')",
            ),
        ],
        "contacts" => vec![("title:eq:总经理", f("title", "eq", json!("总经理")), "r.title = '总经理'")],
        "opportunities" => vec![
            ("stage:in:won,lost", f("stage", "in", json!(["won", "lost"])), "r.stage IN ('won', 'lost')"),
            ("amount:gte:200000000", f("amount", "gte", json!(200_000_000)), "r.amount >= 200000000"),
        ],
        "tickets" => vec![("status:eq:open", f("status", "eq", json!("open")), "r.status = 'open'")],
        "leads" => vec![("region:eq:华南", f("region", "eq", json!("华南")), "r.region = '华南'")],
        "activities" => vec![("kind:ne:call", f("kind", "ne", json!("call")), "r.kind <> 'call'")],
        _ => unreachable!(),
    }
}

/// The personas whose roles grant `export` on customers and contacts (administrator, auditor, director, managers);
/// their export scope is their view scope.
const EXPORTERS: [&str; 6] = ["admin", "auditor", "director", "manager.north", "manager.east", "manager.south"];

fn sort_field(module: &str) -> &'static str {
    match module {
        "tickets" | "activities" => "subject",
        _ => "name",
    }
}

/// What the matrix knows about the organization before asking the API anything.
struct World {
    engine: String,
    org: i64,
    all: BTreeMap<&'static str, BTreeSet<i64>>,
    /// child module → (record id, customer id)
    parent_of: BTreeMap<&'static str, Vec<(i64, i64)>>,
    customer_names: BTreeMap<i64, String>,
    missing: i64,
    /// The one body every 404 has.
    not_found: String,
}

impl World {
    async fn expected(&self, app: &TestApp, persona: &str, module: &str, extra: &str) -> Option<BTreeSet<i64>> {
        let cond = rule(self.org, persona, module, "r")?;
        let sql = format!("SELECT r.id FROM {module} r WHERE r.org_id = {} AND ({cond}) AND ({extra})", self.org);
        Some(app.sql_i64s(&sql).await.into_iter().collect())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_read_path_shows_each_persona_exactly_the_records_the_rules_grant() {
    for engine in engines() {
        let (app, demo) = demo_app(engine).await;
        let org = demo.org;
        let mut all = BTreeMap::new();
        for m in MODULES {
            all.insert(
                m,
                app.sql_i64s(&format!("SELECT id FROM {m} WHERE org_id = {org}")).await.into_iter().collect(),
            );
        }
        let mut parent_of = BTreeMap::new();
        for child in CHILDREN {
            let rows = app
                .sql_rows(&format!(
                    "SELECT id, account_id FROM {child} WHERE org_id = {org} AND account_id IS NOT NULL"
                ))
                .await;
            parent_of.insert(child, rows.iter().map(|r| (r.get::<i64, _>(0), r.get::<i64, _>(1))).collect());
        }
        let names = app.sql_rows(&format!("SELECT id, name FROM customers WHERE org_id = {org}")).await;
        let customer_names = names.iter().map(|r| (r.get::<i64, _>(0), r.get::<String, _>(1))).collect();
        let admin = token(&app, "admin").await;
        let not_found = app.get("/api/v1/widgets", &admin).await;
        not_found.assert_problem(404, "/problems/not-found");
        let world = World {
            engine: engine.to_string(),
            org,
            all,
            parent_of,
            customer_names,
            missing: missing_id(&app).await,
            not_found: not_found.text(),
        };
        assert_eq!(world.all["customers"].len(), CUSTOMERS, "[{engine}] the demo seeds {CUSTOMERS} customers");
        let before = writes(&app, org).await;

        let app = Arc::new(app);
        let world = Arc::new(world);
        let mut tasks = tokio::task::JoinSet::new();
        for p in PERSONAS {
            let (app, world) = (Arc::clone(&app), Arc::clone(&world));
            tasks.spawn(async move { check_persona(&app, &world, p.username).await });
        }
        let mut seen = BTreeSet::new();
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok(persona) => {
                    seen.insert(persona);
                }
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => panic!("[{engine}] persona task: {e}"),
            }
        }
        assert_eq!(seen.len(), PERSONAS.len(), "[{engine}] every persona was checked");
        // Reading the whole organization as everyone changed no record, share or team (the audit trail grows: sign-ins
        // and reads are audited).
        let after = writes(&app, org).await;
        let changed: Vec<_> = before.iter().zip(&after).filter(|(a, b)| a != b).map(|(a, _)| a.0.as_str()).collect();
        assert!(changed.iter().all(|c| c.starts_with("audit")), "[{engine}] reads changed {changed:?}");
    }
}

/// Checks one persona on every module; returns its name.
async fn check_persona(app: &Arc<TestApp>, w: &World, persona: &'static str) -> &'static str {
    let engine = &w.engine;
    let tok = token(app, persona).await;
    let is_404 = |res: &TestResponse, what: &str| {
        assert_eq!(
            (res.status.as_u16(), res.text()),
            (404, w.not_found.clone()),
            "[{engine}] {persona}: {what} must answer exactly like a missing record"
        );
    };
    let mut visible_customers = BTreeSet::new();
    for module in MODULES {
        let Some(expected) = w.expected(app, persona, module, "1=1").await else {
            // The module does not exist for this persona: every path answers like an unknown module.
            is_404(&app.get(&format!("/api/v1/{module}"), &tok).await, &format!("listing {module}"));
            is_404(&app.get(&format!("/api/v1/{module}/count"), &tok).await, &format!("counting {module}"));
            is_404(
                &app.post_json(&format!("/api/v1/{module}/search"), &tok, &json!({})).await,
                &format!("searching {module}"),
            );
            is_404(&app.get(&format!("/api/v1/{module}/lookup?q=a"), &tok).await, &format!("picking {module}"));
            let paths = w.all[module].iter().map(|id| format!("/api/v1/{module}/{id}")).collect();
            for res in get_all(app, &tok, paths).await {
                is_404(&res, &format!("GET {}", res.path));
            }
            continue;
        };
        let what = |s: &str| format!("[{engine}] {persona} {module}: {s}");

        // List pages, walking every cursor, in the default order and sorted by a text field.
        let items = walk(app, &tok, &format!("/api/v1/{module}?limit=13")).await;
        assert!(duplicates(&items).is_empty(), "{}", what(&format!("pages repeat {:?}", duplicates(&items))));
        assert_same(&ids(&items), &expected, &what("the list"));
        items.iter().for_each(|i| check_fields(persona, module, i, &what("a list item")));
        let field = sort_field(module);
        let sorted = walk(app, &tok, &format!("/api/v1/{module}?sort={field}&order=asc&limit=13")).await;
        assert_same(&ids(&sorted), &expected, &what(&format!("the list sorted by {field}")));
        let keys: Vec<&str> = sorted.iter().map(|i| i[field].as_str().unwrap_or("")).collect();
        assert!(keys.windows(2).all(|p| p[0] <= p[1]), "{}", what(&format!("not in {field} order: {keys:?}")));

        // Count.
        let count = app.get(&format!("/api/v1/{module}/count"), &tok).await.assert_status(200).json();
        assert_eq!(count["count"], expected.len(), "{}", what("count"));

        // Report totals: grouped by owner, the groups add up to exactly the visible set and name only its owners.
        let report = app.get(&format!("/api/v1/{module}/report?group_by=owner_id"), &tok).await;
        if report.status == 200 {
            let rows = report.json();
            let rows = rows.as_array().cloned().unwrap_or_default();
            let total: i64 = rows.iter().filter_map(|r| r["count"].as_i64()).sum();
            assert_eq!(total, expected.len() as i64, "{}", what("report total"));
            let owners: BTreeSet<i64> = rows.iter().filter_map(|r| r["key"].as_i64()).collect();
            let want: BTreeSet<i64> = items.iter().filter_map(|i| i["owner_id"].as_i64()).collect();
            assert_eq!(owners, want, "{}", what("report groups"));
        } else {
            is_404(&report, &what("a report without the reports module"));
        }

        // Text search, by query string and by JSON body.
        for (q, matches) in searches(module) {
            let want = w.expected(app, persona, module, matches).await.unwrap_or_default();
            let got = walk(app, &tok, &format!("/api/v1/{module}?q={}&limit=50", enc(q))).await;
            assert_same(&ids(&got), &want, &what(&format!("search {q:?}")));
            let body = app.post_json(&format!("/api/v1/{module}/search"), &tok, &json!({"q": q, "limit": 200})).await;
            assert_same(
                &ids(body.assert_status(200).json()["items"].as_array().unwrap_or(&vec![])),
                &want,
                &what(&format!("POST search {q:?}")),
            );
            let n = app.get(&format!("/api/v1/{module}/count?q={}", enc(q)), &tok).await.assert_status(200).json();
            assert_eq!(n["count"], want.len(), "{}", what(&format!("count of search {q:?}")));
            // Picker suggestions: only records of the visible set, as many as fit.
            let picks = app.get(&format!("/api/v1/{module}/lookup?q={}&limit=20", enc(q)), &tok).await;
            let picks = ids(picks.assert_status(200).json().as_array().unwrap_or(&vec![]));
            assert!(
                picks.is_subset(&want),
                "{}",
                what(&format!("lookup {q:?} suggests {:?}", picks.difference(&want)))
            );
            assert_eq!(picks.len(), want.len().min(20), "{}", what(&format!("lookup {q:?}")));
        }

        // Filters, by query string and by JSON body.
        for (filter, json_filters, condition) in filters(module) {
            let want = w.expected(app, persona, module, condition).await.unwrap_or_default();
            let got = walk(app, &tok, &format!("/api/v1/{module}?filter={}&limit=50", enc(filter))).await;
            assert_same(&ids(&got), &want, &what(&format!("filter {filter}")));
            let body = app
                .post_json(&format!("/api/v1/{module}/search"), &tok, &json!({"filters": json_filters, "limit": 200}))
                .await;
            assert_same(
                &ids(body.assert_status(200).json()["items"].as_array().unwrap_or(&vec![])),
                &want,
                &what(&format!("POST filter {filter}")),
            );
            let n = app
                .get(&format!("/api/v1/{module}/count?filter={}", enc(filter)), &tok)
                .await
                .assert_status(200)
                .json();
            assert_eq!(n["count"], want.len(), "{}", what(&format!("count with filter {filter}")));
        }

        // Every record of the organization by id: visible ones open, the others answer like a missing one.
        let paths = w.all[module].iter().map(|id| format!("/api/v1/{module}/{id}")).collect();
        for (id, res) in w.all[module].iter().zip(get_all(app, &tok, paths).await) {
            if expected.contains(id) {
                let item = res.assert_status(200).json();
                assert_eq!(item["id"], *id, "{}", what("get by id"));
                check_fields(persona, module, &item, &what(&format!("record {id}")));
            } else {
                is_404(&res, &format!("{module} {id}, which they may not see"));
            }
        }
        is_404(&app.get(&format!("/api/v1/{module}/{}", w.missing), &tok).await, "a missing id");
        if module == "customers" {
            visible_customers = expected;
        }
    }

    // CSV export, for those whose roles grant it: exactly the visible records, with the same field permissions.
    for module in ["customers", "contacts"] {
        let res = app.get(&format!("/api/v1/{module}/export.csv"), &tok).await;
        let Some(want) = w.expected(app, persona, module, "1=1").await else {
            is_404(&res, &format!("exporting {module}"));
            continue;
        };
        if !EXPORTERS.contains(&persona) {
            res.assert_problem(403, "/problems/forbidden");
            continue;
        }
        res.assert_status(200);
        assert!(
            res.content_type().starts_with("text/csv"),
            "[{engine}] {persona}: export content type {}",
            res.content_type()
        );
        let mut reader = csv::Reader::from_reader(res.body.as_ref());
        let header: Vec<String> = reader.headers().expect("CSV header").iter().map(String::from).collect();
        assert_eq!(header.first().map(String::as_str), Some("id"), "[{engine}] {persona}: export columns {header:?}");
        if module == "customers" {
            assert!(header.iter().any(|h| h == "annual_revenue"), "[{engine}] {persona}: export columns {header:?}");
        }
        let exported: BTreeSet<i64> =
            reader.records().map(|r| r.expect("CSV row")[0].parse::<i64>().expect("numeric id")).collect();
        assert_same(&exported, &want, &format!("[{engine}] {persona} {module}: the CSV export"));
    }

    // Related lists: every visible customer lists exactly the visible children; an invisible customer is a 404
    // however it is reached (checked on a few of them: get by id above already covers each one).
    let mut child_rules = BTreeMap::new();
    for child in CHILDREN {
        child_rules.insert(child, w.expected(app, persona, child, "1=1").await);
    }
    let hidden_sample: BTreeSet<i64> = w.all["customers"].difference(&visible_customers).copied().take(5).collect();
    let pairs: Vec<(i64, &str)> =
        visible_customers.union(&hidden_sample).flat_map(|c| CHILDREN.map(|child| (*c, child))).collect();
    // Every customer has fewer than 200 children: one page each.
    let paths = pairs.iter().map(|(c, child)| format!("/api/v1/customers/{c}/{child}?limit=200")).collect();
    for ((customer, child), res) in pairs.iter().zip(get_all(app, &tok, paths).await) {
        let path = &res.path;
        match (visible_customers.contains(customer), &child_rules[child]) {
            (true, Some(visible)) => {
                let of_customer: BTreeSet<i64> =
                    w.parent_of[child].iter().filter(|(_, c)| c == customer).map(|(id, _)| *id).collect();
                let want: BTreeSet<i64> = visible.intersection(&of_customer).copied().collect();
                let page = res.assert_status(200).json();
                assert!(page["next_cursor"].is_null(), "[{engine}] {persona}: {path} has a second page");
                let got = page["items"].as_array().cloned().unwrap_or_default();
                assert_same(&ids(&got), &want, &format!("[{engine}] {persona}: {path}"));
                got.iter().for_each(|i| check_fields(persona, child, i, &format!("[{engine}] {persona}: {path}")));
            }
            (true, None) => is_404(&res, &format!("{path} (no {child} module)")),
            (false, _) => is_404(&res, &format!("{path} of a customer they may not see")),
        }
    }

    // Invisible customers stay invisible to search and filters, and errors never name them.
    let invisible: Vec<i64> = w.all["customers"].difference(&visible_customers).copied().take(5).collect();
    let module_exists = rule(w.org, persona, "customers", "r").is_some();
    for id in &invisible {
        let name = &w.customer_names[id];
        if module_exists {
            let by_q = walk(app, &tok, &format!("/api/v1/customers?q={}", enc(name))).await;
            assert!(
                ids(&by_q).is_disjoint(&BTreeSet::from([*id])),
                "[{engine}] {persona}: search finds hidden customer {name}"
            );
            let by_name =
                walk(app, &tok, &format!("/api/v1/customers?filter={}", enc(&format!("name:eq:{name}")))).await;
            assert!(
                by_name.is_empty(),
                "[{engine}] {persona}: filtering by the hidden name {name} returned {by_name:?}"
            );
        }
        let refer = |account: i64| json!({"account_id": account, "name": "测试联系人"});
        let hidden = app.post_json("/api/v1/contacts", &tok, &refer(*id)).await;
        let missing = app.post_json("/api/v1/contacts", &tok, &refer(w.missing)).await;
        assert!(
            hidden.status.is_client_error(),
            "[{engine}] {persona}: a contact under a hidden customer was accepted"
        );
        assert_eq!(
            (hidden.status, hidden.text()),
            (missing.status, missing.text()),
            "[{engine}] {persona}: a hidden account must be refused exactly like a missing one"
        );
        assert!(!hidden.text().contains(name.as_str()), "[{engine}] {persona}: an error names hidden customer {name}");
    }
    persona
}

#[track_caller]
fn assert_same(got: &BTreeSet<i64>, want: &BTreeSet<i64>, what: &str) {
    let leaked: Vec<_> = got.difference(want).collect();
    let lost: Vec<_> = want.difference(got).collect();
    assert!(
        leaked.is_empty() && lost.is_empty(),
        "{what}: shows {} records it should not {leaked:?} and misses {} it should show {lost:?}",
        leaked.len(),
        lost.len()
    );
}

fn is_masked_phone(v: &str) -> bool {
    let c: Vec<char> = v.chars().collect();
    c.len() == 11
        && c[..3].iter().all(char::is_ascii_digit)
        && c[3..7].iter().all(|x| *x == '*')
        && c[7..].iter().all(char::is_ascii_digit)
}

fn is_masked_email(v: &str) -> bool {
    v.split_once('@').is_some_and(|(local, _)| local.chars().count() == 4 && local.ends_with("***"))
}

/// Field permissions in an output: customer service never sees annual revenue and sees phone and e-mail masked;
/// everyone else who views customers sees them in clear.
#[track_caller]
fn check_fields(persona: &str, module: &str, item: &Value, what: &str) {
    let service = persona.starts_with("service");
    let text = |f: &str| item[f].as_str().map(str::to_string);
    if module == "customers" {
        assert_eq!(item.get("annual_revenue").is_some(), !service, "{what}: annual revenue present? {item}");
    }
    if module == "customers" || module == "contacts" {
        if let Some(phone) = text("phone") {
            let clear = phone.chars().all(|c| c.is_ascii_digit());
            assert!(if service { is_masked_phone(&phone) } else { clear }, "{what}: phone {phone:?}");
        }
        if let Some(email) = text("email") {
            assert_eq!(is_masked_email(&email), service, "{what}: e-mail {email:?}");
        }
    }
    if service {
        assert!(!item.to_string().contains("annual_revenue"), "{what}: mentions annual_revenue: {item}");
    }
}

#[tokio::test]
async fn customer_service_never_sees_annual_revenue_nor_a_clear_phone_number() {
    for engine in engines() {
        let (app, demo) = demo_app(engine).await;
        let service = token(&app, "service1").await;
        let admin = token(&app, "admin").await;
        let org = demo.org;
        let row = &app
            .sql_rows(&format!(
                "SELECT id, phone, annual_revenue FROM customers WHERE org_id = {org} AND customer_type <> 'government' ORDER BY id"
            ))
            .await[0];
        let (id, phone, revenue): (i64, String, i64) = (row.get(0), row.get(1), row.get(2));

        // A hidden field is refused as a filter or sort key exactly like a field that does not exist.
        let pairs = [
            ("/api/v1/customers?filter=annual_revenue:gt:0", "/api/v1/customers?filter=no_such_field:gt:0"),
            ("/api/v1/customers?sort=annual_revenue", "/api/v1/customers?sort=no_such_field"),
            (
                "/api/v1/customers/count?filter=annual_revenue:gte:0",
                "/api/v1/customers/count?filter=no_such_field:gte:0",
            ),
        ];
        for (hidden, unknown) in pairs {
            let a = app.get(hidden, &service).await;
            let b = app.get(unknown, &service).await;
            b.assert_problem(400, "/problems/bad-request");
            assert_eq!(
                (a.status, a.text()),
                (b.status, b.text().replace("no_such_field", "annual_revenue")),
                "[{engine}] {hidden} must be refused like {unknown}"
            );
        }
        let search = |field: &str| json!({"filters": [{"field": field, "op": "gt", "value": 0}], "sort": field});
        let a = app.post_json("/api/v1/customers/search", &service, &search("annual_revenue")).await;
        let b = app.post_json("/api/v1/customers/search", &service, &search("no_such_field")).await;
        b.assert_problem(400, "/problems/bad-request");
        assert_eq!(
            (a.status, a.text()),
            (b.status, b.text().replace("no_such_field", "annual_revenue")),
            "[{engine}] search body"
        );
        // The administrator may filter on it: the refusal above is about the field permission.
        app.get("/api/v1/customers?filter=annual_revenue:gt:0&sort=annual_revenue", &admin).await.assert_status(200);

        // A masked field does not match a search: its clear value is no oracle.
        let found = walk(&app, &admin, &format!("/api/v1/customers?q={phone}")).await;
        assert!(ids(&found).contains(&id), "[{engine}] the administrator finds the customer by phone");
        let found = walk(&app, &service, &format!("/api/v1/customers?q={phone}")).await;
        assert!(found.is_empty(), "[{engine}] customer service found customers by a clear phone number: {found:?}");
        let n = app.get(&format!("/api/v1/customers/count?q={phone}"), &service).await.assert_status(200).json();
        assert_eq!(n["count"], 0, "[{engine}] count by clear phone");

        // The record itself: no revenue, masked phone, and neither value anywhere in the body.
        let res = app.get(&format!("/api/v1/customers/{id}"), &service).await;
        let item = res.assert_status(200).json();
        check_fields("service1", "customers", &item, &format!("[{engine}] customer {id}"));
        assert!(!res.text().contains(&phone), "[{engine}] the clear phone number is in the body");
        assert!(!res.text().contains(&revenue.to_string()), "[{engine}] the annual revenue is in the body");
        let explained = app.get(&format!("/api/v1/customers/{id}/explain"), &service).await;
        assert!(
            !explained.assert_status(200).text().contains(&revenue.to_string()),
            "[{engine}] explain shows the revenue"
        );

        // Revealing the phone is allowed to service (audited); revealing the hidden revenue is like an unknown field.
        let before = app.sql_i64(&format!("SELECT audit_seq FROM organizations WHERE id = {org}")).await;
        let shown = app.post_json(&format!("/api/v1/customers/{id}/reveal/phone"), &service, &json!({})).await;
        assert_eq!(shown.assert_status(200).json()["value"], phone.as_str(), "[{engine}] reveal");
        let after = app.sql_i64(&format!("SELECT audit_seq FROM organizations WHERE id = {org}")).await;
        assert_eq!(after, before + 1, "[{engine}] a reveal is audited");
        let a = app.post_json(&format!("/api/v1/customers/{id}/reveal/annual_revenue"), &service, &json!({})).await;
        let b = app.post_json(&format!("/api/v1/customers/{id}/reveal/no_such_field"), &service, &json!({})).await;
        assert_eq!(
            (a.status, a.text()),
            (b.status, b.text().replace("no_such_field", "annual_revenue")),
            "[{engine}] revealing a hidden field must answer like an unknown field"
        );
        assert!(!a.text().contains(&revenue.to_string()), "[{engine}] the refusal shows the revenue");
    }
}
