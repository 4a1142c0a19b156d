//! Storage scenarios through the scoped access layer, on every engine of `testdb::engines()`.

use crate::support::*;
use crate::testdb::{TestDatabase, engines};
use crm_domain::{Action, Level, Module, OrgId, RecordId, UserId, Value};
use crm_policy::{CmpOp, OrgDefault, Scope, ShareKey};
use crm_store::{FieldFilter, ListQuery, RecordOut, Scoped, StoreError};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};

const C: Module = Module::Customers;
const K: Module = Module::Contacts;

fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

fn customer(name: &str, extra: &[(&'static str, Value)]) -> BTreeMap<&'static str, Value> {
    let mut m = BTreeMap::from([("name", text(name))]);
    m.extend(extra.iter().cloned());
    m
}

fn contact(account: RecordId, name: &str) -> BTreeMap<&'static str, Value> {
    BTreeMap::from([("account_id", Value::Int(account)), ("name", text(name))])
}

async fn seed(
    env: &Env,
    org: OrgId,
    module: Module,
    rows: Vec<(UserId, BTreeMap<&'static str, Value>)>,
) -> Vec<RecordId> {
    env.store.unscoped_system_access().seed_records(org, module, &rows).await.expect("seed")
}

fn filter(field: &str, op: CmpOp, value: serde_json::Value) -> FieldFilter {
    FieldFilter { field: field.into(), op, value }
}

fn ids(items: &[RecordOut]) -> Vec<RecordId> {
    items.iter().map(id_of).collect()
}

/// Every page of a query, checking the page sizes on the way.
async fn all_pages(s: &Scoped<'_>, module: Module, q: &ListQuery) -> Vec<RecordOut> {
    let limit = q.limit.unwrap_or(50) as usize;
    let mut out = Vec::new();
    let mut q = q.clone();
    for _ in 0..1000 {
        let page = s.list(module, &q).await.expect("list page");
        assert!(page.items.len() <= limit, "page larger than the limit");
        let last = page.next_cursor.is_none();
        if !last {
            assert_eq!(page.items.len(), limit, "a page before the last one must be full");
        }
        out.extend(page.items);
        match page.next_cursor {
            Some(c) => q.after = Some(c),
            None => return out,
        }
    }
    panic!("pagination does not end");
}

fn sorted_set(v: &[RecordId]) -> BTreeSet<RecordId> {
    let set: BTreeSet<RecordId> = v.iter().copied().collect();
    assert_eq!(set.len(), v.len(), "a record was returned twice: {v:?}");
    set
}

fn bad_query(r: Result<impl std::fmt::Debug, StoreError>) -> String {
    match r {
        Err(StoreError::BadQuery(m)) => m,
        other => panic!("expected BadQuery, got {other:?}"),
    }
}

fn not_found<T: std::fmt::Debug>(what: &str, r: Result<T, StoreError>) -> String {
    match r {
        Err(e @ StoreError::NotFound) => describe(&e),
        other => panic!("{what}: expected NotFound, got {other:?}"),
    }
}

fn invalid_fields<T: std::fmt::Debug>(r: Result<T, StoreError>) -> Vec<(String, String)> {
    match r {
        Err(StoreError::Invalid(errs)) => errs.into_iter().map(|e| (e.field, e.message)).collect(),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[tokio::test]
async fn migrations_run_twice_idempotently() {
    for engine in engines() {
        let db = TestDatabase::new(engine).await;
        let first = open(&db.url).await;
        let org = Org::new(&first, "twice", &scenario_policy()).await;
        let li = org.user(&first, "li", &[SALES]).await;
        seed_one(&first, org.id, li).await;
        first.close().await;

        // Opening again runs the migrations again: nothing to apply, nothing lost, twice over.
        for _ in 0..2 {
            let again = open(&db.url).await;
            let sys = again.unscoped_system_access();
            assert_eq!(sys.organization_count().await.unwrap(), 1, "{engine}");
            assert_eq!(sys.organization_by_slug("twice").await.unwrap(), Some(org.id), "{engine}");
            let p = org.sign_in(&again, "li").await;
            assert_eq!(again.scoped(p).visible_ids(C, Action::View).await.unwrap().len(), 1, "{engine}");
            assert_eq!(sys.verify_audit(org.id).await.unwrap(), None, "{engine}");
            again.close().await;
        }
        let raw = Raw::connect(&db.url).await;
        // Every migration applied exactly once (versions need not be contiguous).
        assert_eq!(raw.int("SELECT COUNT(*) FROM schema_migrations").await, migration_files(), "{engine}");
        raw.close().await;

        // Two stores opened side by side on the same database both work.
        let a = open(&db.url).await;
        let b = open(&db.url).await;
        assert_eq!(a.unscoped_system_access().organization_count().await.unwrap(), 1);
        assert_eq!(b.unscoped_system_access().organization_count().await.unwrap(), 1);
        a.close().await;
        b.close().await;
    }
}

async fn seed_one(store: &crm_store::Store, org: OrgId, owner: UserId) -> RecordId {
    store.unscoped_system_access().seed_records(org, C, &[(owner, customer("Seed Co", &[]))]).await.expect("seed")[0]
}

#[tokio::test]
async fn a_user_creates_reads_updates_and_deletes_a_customer() {
    for engine in engines() {
        let env = Env::new(engine).await;
        let store = &env.store;
        let org = Org::new(store, "crud", &scenario_policy()).await;
        let li = org.user(store, "li", &[SALES]).await;
        let s = store.scoped(org.sign_in(store, "li").await);
        assert_eq!(s.principal().user, li);
        let seq0 = env.raw.audit_seq(org.id).await;

        let input = json!({"name": "  华为技术  ", "region": "华南", "customer_type": "enterprise",
                           "annual_revenue": 1_200_000});
        let created = s.create(C, &obj(input)).await.expect("create");
        let id = id_of(&created);
        assert_eq!(created["name"], json!("华为技术"), "{engine}: text is trimmed");
        assert_eq!(created["owner_id"], json!(li), "{engine}: the creator owns the record");
        // A masked field is not writable for this user: refused by name, not as an unknown field.
        assert_eq!(
            invalid_fields(s.create(C, &obj(json!({"name": "X", "phone": "13812345678"}))).await),
            vec![("phone".to_string(), "is read-only for you".to_string())]
        );
        assert!(!created.contains_key("email"), "{engine}: hidden field in the create response");

        let got = s.get(C, id).await.expect("get");
        assert_eq!(got["name"], json!("华为技术"));
        assert_eq!(got["region"], json!("华南"));
        assert_eq!(got["annual_revenue"], json!(1_200_000));
        assert_eq!(got["industry"], json!(null));
        assert_eq!(got["_allowed"], json!({"edit": true, "delete": true, "transfer": true, "share": true}));
        assert_eq!(s.visible_ids(C, Action::View).await.unwrap(), vec![id]);

        let updated =
            s.update(C, id, &obj(json!({"annual_revenue": 1_500_000, "industry": "telecom"}))).await.expect("update");
        assert_eq!(updated["annual_revenue"], json!(1_500_000));
        let got = s.get(C, id).await.expect("get after update");
        assert_eq!(got["industry"], json!("telecom"));
        assert_eq!(got["name"], json!("华为技术"), "{engine}: fields not in the patch are kept");
        assert!(got["updated_at"].as_i64() >= created["updated_at"].as_i64());

        s.delete(C, id).await.expect("delete");
        not_found("get after delete", s.get(C, id).await);
        not_found("update after delete", s.update(C, id, &obj(json!({"industry": "x"}))).await);
        not_found("delete twice", s.delete(C, id).await);
        assert_eq!(env.raw.count("customers", org.id).await, 0);

        // One audit entry per write, in the same order, naming the actor and the record.
        let rows = env
            .raw
            .rows(format!(
                "SELECT action, actor_id, record_id, module FROM audit_log WHERE org_id = {} AND seq > {seq0} AND action NOT IN {READ_ACTIONS} ORDER BY seq",
                org.id
            ))
            .await;
        use sqlx::Row;
        let got: Vec<(String, Option<i64>, Option<i64>, Option<String>)> =
            rows.iter().map(|r| (r.get("action"), r.get("actor_id"), r.get("record_id"), r.get("module"))).collect();
        let m = Some("customers".to_string());
        assert_eq!(
            got,
            vec![
                ("record.create".into(), Some(li), Some(id), m.clone()),
                ("record.update".into(), Some(li), Some(id), m.clone()),
                ("record.delete".into(), Some(li), Some(id), m),
            ],
            "{engine}"
        );
        assert_eq!(store.unscoped_system_access().verify_audit(org.id).await.unwrap(), None);
        env.close().await;
    }
}

#[tokio::test]
async fn keyset_pagination_returns_every_visible_record_exactly_once_in_order() {
    const NAMES: [&str; 8] = ["Acme", "acme", "阿里巴巴", "百度", "华为", "Zeta", "zeta", "Ångström"];
    for engine in engines() {
        let env = Env::new(engine).await;
        let store = &env.store;
        let org = Org::new(store, "pages", &scenario_policy()).await;
        let li = org.user(store, "li", &[SALES]).await;
        let wang = org.user(store, "wang", &[SALES]).await;
        let rows = (0..150)
            .map(|i: i64| {
                let owner = if i % 5 == 4 { wang } else { li };
                let revenue = if i % 3 == 0 { Value::Null } else { Value::Int((i * 7919 % 13) * 100_000) };
                let industry =
                    if i % 4 == 0 { Value::Null } else { text(["finance", "retail", "energy"][(i % 3) as usize]) };
                (owner, customer(NAMES[(i % 8) as usize], &[("annual_revenue", revenue), ("industry", industry)]))
            })
            .collect::<Vec<_>>();
        let seeded = seed(&env, org.id, C, rows.clone()).await;
        let mine: BTreeSet<RecordId> = seeded.iter().zip(&rows).filter(|(_, r)| r.0 == li).map(|(id, _)| *id).collect();
        assert_eq!(mine.len(), 120);
        // Many ties on the sort key: the id breaks them, and pages must neither skip nor repeat across a tie.
        env.raw.exec(format!("UPDATE customers SET updated_at = 1000 + (id % 7) WHERE org_id = {}", org.id)).await;

        let s = store.scoped(org.sign_in(store, "li").await);
        assert_eq!(s.visible_ids(C, Action::View).await.unwrap(), mine.iter().copied().collect::<Vec<_>>());
        assert_eq!(s.count(C, &ListQuery::default()).await.unwrap(), 120);

        // Default: updated_at descending, 50 a page.
        let mut sizes = Vec::new();
        let mut q = ListQuery::default();
        let mut items = Vec::new();
        loop {
            let page = s.list(C, &q).await.unwrap();
            sizes.push(page.items.len());
            items.extend(page.items);
            match page.next_cursor {
                Some(c) => q.after = Some(c),
                None => break,
            }
        }
        assert_eq!(sizes, vec![50, 50, 20], "{engine}");
        assert_eq!(sorted_set(&ids(&items)), mine, "{engine}");
        let keys: Vec<(i64, i64)> = items.iter().map(|r| (r["updated_at"].as_i64().unwrap(), id_of(r))).collect();
        assert!(keys.windows(2).all(|w| w[0] > w[1]), "{engine}: not in updated_at desc, id desc order: {keys:?}");

        // Name ascending (byte order on both engines), ties on duplicate names.
        let q = ListQuery { sort: Some("name".into()), asc: true, ..ListQuery::default() };
        let items = all_pages(&s, C, &q).await;
        assert_eq!(sorted_set(&ids(&items)), mine, "{engine}");
        let keys: Vec<(String, i64)> =
            items.iter().map(|r| (r["name"].as_str().unwrap().to_string(), id_of(r))).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{engine}: not in name asc order: {keys:?}");

        // A nullable number, ascending (missing values first), small pages.
        let q = ListQuery { sort: Some("annual_revenue".into()), asc: true, limit: Some(7), ..ListQuery::default() };
        let items = all_pages(&s, C, &q).await;
        assert_eq!(sorted_set(&ids(&items)), mine, "{engine}");
        let keys: Vec<(Option<i64>, i64)> = items.iter().map(|r| (r["annual_revenue"].as_i64(), id_of(r))).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{engine}: not in annual_revenue asc order: {keys:?}");

        // A nullable text, descending (missing values last).
        let q = ListQuery { sort: Some("industry".into()), limit: Some(9), ..ListQuery::default() };
        let items = all_pages(&s, C, &q).await;
        assert_eq!(sorted_set(&ids(&items)), mine, "{engine}");
        let keys: Vec<(Option<String>, i64)> =
            items.iter().map(|r| (r["industry"].as_str().map(str::to_string), id_of(r))).collect();
        assert!(keys.windows(2).all(|w| w[0] > w[1]), "{engine}: not in industry desc order: {keys:?}");

        // Id ascending, one page at a time of the largest size.
        let q = ListQuery { sort: Some("id".into()), asc: true, limit: Some(200), ..ListQuery::default() };
        let page = s.list(C, &q).await.unwrap();
        assert_eq!(ids(&page.items), mine.iter().copied().collect::<Vec<_>>());
        assert!(page.next_cursor.is_none());

        for limit in [0, 201] {
            bad_query(s.list(C, &ListQuery { limit: Some(limit), ..ListQuery::default() }).await);
        }
        bad_query(s.list(C, &ListQuery { after: Some("not-a-cursor".into()), ..ListQuery::default() }).await);
        env.close().await;
    }
}

struct Row {
    name: &'static str,
    revenue: Option<i64>,
    phone: Option<&'static str>,
    email: Option<&'static str>,
}

const DATA: &[Row] = &[
    Row { name: "ACME Corp", revenue: Some(1_000_000), phone: Some("13812345678"), email: Some("sales@acme.com") },
    Row { name: "acme ltd", revenue: Some(200), phone: None, email: None },
    Row { name: "Ac me", revenue: Some(100), phone: None, email: Some("ACME@other.cn") },
    Row { name: "华为技术有限公司", revenue: Some(5_000_000), phone: Some("0755-28780808"), email: None },
    Row { name: "深圳华为", revenue: None, phone: None, email: None },
    Row { name: "腾讯", revenue: Some(100), phone: Some("13900005678"), email: None },
    Row { name: "50% Off Ltd", revenue: Some(300), phone: None, email: None },
    Row { name: "Under_score", revenue: Some(500_001), phone: None, email: None },
    Row { name: "Plain", revenue: Some(500_000), phone: None, email: None },
];

#[tokio::test]
async fn filters_and_text_search() {
    for engine in engines() {
        let env = Env::new(engine).await;
        let store = &env.store;
        let org = Org::new(store, "filters", &scenario_policy()).await;
        let boss = org.user(store, "boss", &[MANAGER]).await;
        let li = org.user(store, "li", &[SALES]).await;
        let rows = DATA
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let mut m = customer(r.name, &[]);
                m.insert("annual_revenue", r.revenue.map(Value::Int).unwrap_or(Value::Null));
                m.insert("phone", r.phone.map(text).unwrap_or(Value::Null));
                m.insert("email", r.email.map(text).unwrap_or(Value::Null));
                (if i % 2 == 0 { boss } else { li }, m)
            })
            .collect::<Vec<_>>();
        let seeded = seed(&env, org.id, C, rows.clone()).await;
        let s = store.scoped(org.sign_in(store, "boss").await);
        let pick = |pred: &dyn Fn(&Row) -> bool| -> BTreeSet<RecordId> {
            DATA.iter().zip(&seeded).filter(|(r, _)| pred(r)).map(|(_, id)| *id).collect()
        };
        let check = |q: ListQuery, expected: BTreeSet<RecordId>, what: &'static str| {
            let s = &s;
            async move {
                let items = all_pages(s, C, &q).await;
                assert_eq!(sorted_set(&ids(&items)), expected, "{engine}: {what}");
                assert_eq!(s.count(C, &q).await.unwrap(), expected.len() as i64, "{engine}: count of {what}");
            }
        };
        let f = |filters: Vec<FieldFilter>| ListQuery { filters, ..ListQuery::default() };
        let search = |text: &str| ListQuery { q: Some(text.into()), ..ListQuery::default() };

        check(f(vec![]), pick(&|_| true), "everything").await;
        check(
            f(vec![filter("annual_revenue", CmpOp::Eq, json!(1_000_000))]),
            pick(&|r| r.revenue == Some(1_000_000)),
            "eq",
        )
        .await;
        check(
            f(vec![filter("annual_revenue", CmpOp::In, json!([100, 200]))]),
            pick(&|r| matches!(r.revenue, Some(100 | 200))),
            "in",
        )
        .await;
        check(
            f(vec![filter("annual_revenue", CmpOp::Gt, json!(500_000))]),
            pick(&|r| r.revenue.is_some_and(|v| v > 500_000)),
            "gt (missing values never match)",
        )
        .await;
        check(
            f(vec![
                filter("annual_revenue", CmpOp::Gt, json!(150)),
                filter("annual_revenue", CmpOp::Lte, json!(500_000)),
            ]),
            pick(&|r| r.revenue.is_some_and(|v| v > 150 && v <= 500_000)),
            "two filters",
        )
        .await;
        check(
            f(vec![filter("owner_id", CmpOp::Eq, json!(li))]),
            pick(&|r| DATA.iter().position(|x| x.name == r.name).unwrap() % 2 == 1),
            "owner",
        )
        .await;

        let contains = |r: &Row, needle: &str| {
            let n = needle.to_ascii_lowercase();
            [Some(r.name), r.phone, r.email].into_iter().flatten().any(|v| v.to_ascii_lowercase().contains(&n))
        };
        for needle in ["acme", "ACME", "AcMe", "华为", "为技", "5678", "%", "_", "off l", "@other"] {
            check(search(needle), pick(&|r| contains(r, needle)), "q").await;
        }
        assert_eq!(pick(&|r| contains(r, "acme")).len(), 3, "ACME Corp, acme ltd and Ac me's e-mail");
        assert_eq!(pick(&|r| contains(r, "%")).len(), 1, "`%` is a literal character");
        assert_eq!(pick(&|r| contains(r, "_")).len(), 1, "`_` is a literal character");
        check(search("   "), pick(&|_| true), "blank search").await;
        check(
            ListQuery {
                q: Some("acme".into()),
                filters: vec![filter("annual_revenue", CmpOp::Gte, json!(200))],
                ..ListQuery::default()
            },
            pick(&|r| contains(r, "acme") && r.revenue.is_some_and(|v| v >= 200)),
            "search and filter",
        )
        .await;
        bad_query(s.list(C, &search(&"x".repeat(101))).await);

        // The search runs over fields the caller may read only: li's phone is masked and e-mail hidden.
        let li_s = store.scoped(org.sign_in(store, "li").await);
        let mine = |pred: &dyn Fn(&Row) -> bool| -> BTreeSet<RecordId> {
            DATA.iter()
                .zip(&seeded)
                .enumerate()
                .filter(|(i, (r, _))| i % 2 == 1 && pred(r))
                .map(|(_, (_, id))| *id)
                .collect()
        };
        for needle in ["acme", "5678", "@other", "华为"] {
            let items = all_pages(&li_s, C, &search(needle)).await;
            assert_eq!(
                sorted_set(&ids(&items)),
                mine(&|r| r.name.to_ascii_lowercase().contains(&needle.to_ascii_lowercase())),
                "{engine}: li q={needle}"
            );
        }
        env.close().await;
    }
}

#[tokio::test]
async fn unknown_fields_in_filters_and_sorts_are_bad_queries() {
    for engine in engines() {
        let env = Env::new(engine).await;
        let store = &env.store;
        let org = Org::new(store, "unknown", &scenario_policy()).await;
        org.user(store, "boss", &[MANAGER]).await;
        let s = store.scoped(org.sign_in(store, "boss").await);
        let q = |filters: Vec<FieldFilter>, sort: Option<&str>| ListQuery {
            filters,
            sort: sort.map(Into::into),
            ..ListQuery::default()
        };
        let m = bad_query(s.list(C, &q(vec![filter("nosuch", CmpOp::Eq, json!("x"))], None)).await);
        assert_eq!(m, "unknown field nosuch");
        let m = bad_query(s.list(C, &q(vec![], Some("nosuch"))).await);
        assert_eq!(m, "unknown field nosuch");
        bad_query(s.count(C, &q(vec![filter("nosuch", CmpOp::Eq, json!("x"))], None)).await);
        // A field of another module is unknown here.
        bad_query(s.list(C, &q(vec![filter("title", CmpOp::Eq, json!("x"))], None)).await);
        bad_query(s.list(C, &q(vec![], Some("account_id"))).await);
        // Wrong value types and operators.
        bad_query(s.list(C, &q(vec![filter("annual_revenue", CmpOp::Eq, json!("lots"))], None)).await);
        bad_query(s.list(C, &q(vec![filter("region", CmpOp::Gt, json!("华东"))], None)).await);
        bad_query(s.list(C, &q(vec![filter("annual_revenue", CmpOp::In, json!([]))], None)).await);
        bad_query(s.list(C, &q(vec![filter("customer_type", CmpOp::Eq, json!("alien"))], None)).await);
        env.close().await;
    }
}

/// Replaces the field name in an error so two errors can be compared for their shape.
fn shape(e: String, field: &str) -> String {
    e.replace(field, "<FIELD>")
}

#[tokio::test]
async fn a_hidden_field_is_refused_exactly_like_an_unknown_field_and_never_shown() {
    for engine in engines() {
        let env = Env::new(engine).await;
        let store = &env.store;
        let org = Org::new(store, "hidden", &scenario_policy()).await;
        let li = org.user(store, "li", &[SALES]).await;
        org.user(store, "boss", &[MANAGER]).await;
        let seeded = seed(
            &env,
            org.id,
            C,
            vec![(
                li,
                customer(
                    "Secretive Ltd",
                    &[("email", text("zhang.secret@example.com")), ("phone", text("13812345678"))],
                ),
            )],
        )
        .await;
        let id = seeded[0];
        let s = store.scoped(org.sign_in(store, "li").await);
        let boss = store.scoped(org.sign_in(store, "boss").await);

        // Output: absent from get, list, create and update responses.
        let got = s.get(C, id).await.unwrap();
        assert!(!got.contains_key("email"), "{engine}: get shows a hidden field: {got:?}");
        assert!(got.contains_key("name"));
        let page = s.list(C, &ListQuery::default()).await.unwrap();
        assert_eq!(page.items.len(), 1);
        assert!(page.items.iter().all(|r| !r.contains_key("email")), "{engine}: list shows a hidden field");
        let upd = s.update(C, id, &obj(json!({"industry": "finance"}))).await.unwrap();
        assert!(!upd.contains_key("email"));
        assert_eq!(boss.get(C, id).await.unwrap()["email"], json!("zhang.secret@example.com"), "the manager sees it");

        // Filter, sort, search: the same answer as for a field that does not exist.
        let fq = |field: &str| ListQuery {
            filters: vec![filter(field, CmpOp::Eq, json!("zhang.secret@example.com"))],
            ..ListQuery::default()
        };
        let sq = |field: &str| ListQuery { sort: Some(field.into()), ..ListQuery::default() };
        let hidden = bad_query(s.list(C, &fq("email")).await);
        let unknown = bad_query(s.list(C, &fq("nosuchfield")).await);
        assert_eq!(shape(hidden, "email"), shape(unknown, "nosuchfield"), "{engine}: filter");
        let hidden = bad_query(s.count(C, &fq("email")).await);
        let unknown = bad_query(s.count(C, &fq("nosuchfield")).await);
        assert_eq!(shape(hidden, "email"), shape(unknown, "nosuchfield"), "{engine}: count filter");
        let hidden = bad_query(s.list(C, &sq("email")).await);
        let unknown = bad_query(s.list(C, &sq("nosuchfield")).await);
        assert_eq!(shape(hidden, "email"), shape(unknown, "nosuchfield"), "{engine}: sort");
        let q = ListQuery { q: Some("zhang.secret".into()), ..ListQuery::default() };
        assert!(s.list(C, &q).await.unwrap().items.is_empty(), "{engine}: search matched a hidden field");
        assert_eq!(s.count(C, &q).await.unwrap(), 0);
        assert_eq!(boss.count(C, &q).await.unwrap(), 1, "the manager's search matches it");

        // Input: refused like an unknown field, and nothing written.
        let count = env.raw.count("customers", org.id).await;
        let seq = env.raw.audit_seq(org.id).await;
        let hidden = invalid_fields(s.create(C, &obj(json!({"name": "X", "email": "a@b.cn"}))).await);
        let unknown = invalid_fields(s.create(C, &obj(json!({"name": "X", "nosuchfield": "a@b.cn"}))).await);
        assert_eq!(hidden, vec![("email".to_string(), "unknown field".to_string())], "{engine}");
        assert_eq!(unknown, vec![("nosuchfield".to_string(), "unknown field".to_string())], "{engine}");
        let hidden = invalid_fields(s.update(C, id, &obj(json!({"email": "a@b.cn"}))).await);
        let unknown = invalid_fields(s.update(C, id, &obj(json!({"nosuchfield": "a@b.cn"}))).await);
        assert_eq!(hidden[0].1, unknown[0].1, "{engine}: update");
        assert_eq!(env.raw.count("customers", org.id).await, count);
        assert_eq!(env.raw.audit_seq(org.id).await, seq, "{engine}: a refused write left an audit entry");
        assert_eq!(boss.get(C, id).await.unwrap()["email"], json!("zhang.secret@example.com"));

        // Reveal: unknown too.
        let hidden = bad_query(s.reveal(C, id, "email").await);
        let unknown = bad_query(s.reveal(C, id, "nosuchfield").await);
        assert_eq!(shape(hidden, "email"), shape(unknown, "nosuchfield"), "{engine}: reveal");
        env.close().await;
    }
}

#[tokio::test]
async fn a_masked_phone_shows_like_138_stars_5678() {
    for engine in engines() {
        let env = Env::new(engine).await;
        let store = &env.store;
        let org = Org::new(store, "masked", &scenario_policy()).await;
        let li = org.user(store, "li", &[SALES]).await;
        org.user(store, "boss", &[MANAGER]).await;
        let id = seed(&env, org.id, C, vec![(li, customer("Masked Co", &[("phone", text("13812345678"))]))]).await[0];
        let s = store.scoped(org.sign_in(store, "li").await);
        assert_eq!(s.get(C, id).await.unwrap()["phone"], json!("138****5678"), "{engine}");
        assert_eq!(s.list(C, &ListQuery::default()).await.unwrap().items[0]["phone"], json!("138****5678"), "{engine}");
        let boss = store.scoped(org.sign_in(store, "boss").await);
        assert_eq!(boss.get(C, id).await.unwrap()["phone"], json!("13812345678"), "{engine}");
        // Masked values cannot be probed by filter, sort or search, and revealing needs the right.
        bad_query(
            s.list(
                C,
                &ListQuery { filters: vec![filter("phone", CmpOp::Eq, json!("13812345678"))], ..ListQuery::default() },
            )
            .await,
        );
        bad_query(s.list(C, &ListQuery { sort: Some("phone".into()), ..ListQuery::default() }).await);
        assert_eq!(s.count(C, &ListQuery { q: Some("1234".into()), ..ListQuery::default() }).await.unwrap(), 0);
        assert!(matches!(s.reveal(C, id, "phone").await, Err(StoreError::Forbidden(_))), "{engine}");
        env.close().await;
    }
}

#[tokio::test]
async fn invalid_input_is_refused_and_writes_nothing() {
    for engine in engines() {
        let env = Env::new(engine).await;
        let store = &env.store;
        let org = Org::new(store, "invalid", &scenario_policy()).await;
        org.user(store, "boss", &[MANAGER]).await;
        let li = org.user(store, "li", &[SALES]).await;
        let wang = org.user(store, "wang", &[SALES]).await;
        let ids = seed(&env, org.id, C, vec![(li, customer("Li Co", &[])), (wang, customer("Wang Co", &[]))]).await;
        let boss = store.scoped(org.sign_in(store, "boss").await);
        let li_s = store.scoped(org.sign_in(store, "li").await);
        let before = boss.get(C, ids[0]).await.unwrap();
        let count = env.raw.count("customers", org.id).await;
        let contacts = env.raw.count("contacts", org.id).await;
        let seq = env.raw.audit_seq(org.id).await;

        let cases: Vec<(serde_json::Value, &str)> = vec![
            (json!({}), "name"),
            (json!({"region": "华东"}), "name"),
            (json!({"name": "   "}), "name"),
            (json!({"name": null}), "name"),
            (json!({"name": 12}), "name"),
            (json!({"name": "OK", "annual_revenue": "lots"}), "annual_revenue"),
            (json!({"name": "OK", "annual_revenue": 1.5}), "annual_revenue"),
            (json!({"name": "OK", "annual_revenue": -5}), "annual_revenue"),
            (json!({"name": "OK", "customer_type": "alien"}), "customer_type"),
            (json!({"name": "OK", "customer_type": 3}), "customer_type"),
            (json!({"name": "OK", "phone": "call me"}), "phone"),
            (json!({"name": "OK", "email": "not-an-address"}), "email"),
            (json!({"name": "x".repeat(201)}), "name"),
            (json!({"name": "OK", "owner_id": "li"}), "owner_id"),
        ];
        for (input, field) in &cases {
            let errs = invalid_fields(boss.create(C, &obj(input.clone())).await);
            assert!(errs.iter().any(|(f, _)| f == field), "{engine}: {input} should name {field}: {errs:?}");
        }
        // Several problems are all reported.
        let errs = invalid_fields(boss.create(C, &obj(json!({"annual_revenue": "x", "customer_type": "alien"}))).await);
        let fields: BTreeSet<&str> = errs.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, BTreeSet::from(["annual_revenue", "customer_type", "name"]), "{engine}");
        // Updates too.
        for (patch, field) in [
            (json!({"customer_type": "alien"}), "customer_type"),
            (json!({"name": ""}), "name"),
            (json!({"annual_revenue": "1"}), "annual_revenue"),
        ] {
            let errs = invalid_fields(boss.update(C, ids[0], &obj(patch.clone())).await);
            assert!(errs.iter().any(|(f, _)| f == field), "{engine}: {patch}: {errs:?}");
        }
        // A reference to a record the user may not see (checked inside the write transaction) or to none.
        for account in [ids[1], 987_654_321] {
            let errs = invalid_fields(li_s.create(K, &obj(json!({"name": "Zhang", "account_id": account}))).await);
            assert_eq!(errs, vec![("account_id".to_string(), "no such customers record".to_string())], "{engine}");
        }
        let errs = invalid_fields(li_s.create(K, &obj(json!({"name": "Zhang", "account_id": "one"}))).await);
        assert_eq!(errs[0].0, "account_id");

        assert_eq!(env.raw.count("customers", org.id).await, count, "{engine}: a refused create wrote a record");
        assert_eq!(env.raw.count("contacts", org.id).await, contacts, "{engine}: a refused create wrote a contact");
        assert_eq!(env.raw.audit_seq(org.id).await, seq, "{engine}: a refused write moved the audit sequence");
        assert_eq!(env.raw.int(format!("SELECT COUNT(*) FROM audit_log WHERE org_id = {}", org.id)).await, seq);
        let mut after = boss.get(C, ids[0]).await.unwrap();
        let mut before = before;
        after.remove("_allowed");
        before.remove("_allowed");
        assert_eq!(after, before, "{engine}: a refused update changed the record");
        env.close().await;
    }
}

#[tokio::test]
async fn a_record_the_user_may_not_read_answers_exactly_like_a_missing_one() {
    for engine in engines() {
        let env = Env::new(engine).await;
        let store = &env.store;
        let org = Org::new(store, "nf", &scenario_policy()).await;
        let li = org.user(store, "li", &[SALES]).await;
        let wang = org.user(store, "wang", &[SALES]).await;
        let other = Org::new(store, "nf-other", &scenario_policy()).await;
        let zhao = other.user(store, "zhao", &[MANAGER]).await;
        let ids = seed(&env, org.id, C, vec![(li, customer("Li Co", &[])), (wang, customer("Wang Co", &[]))]).await;
        let (mine, wangs) = (ids[0], ids[1]);
        let foreign = seed(&env, other.id, C, vec![(zhao, customer("Foreign Co", &[]))]).await[0];
        let wang_contact = seed(&env, org.id, K, vec![(wang, contact(wangs, "Wang's contact"))]).await[0];
        let missing: RecordId = 987_654_321;
        let s = store.scoped(org.sign_in(store, "li").await);
        s.get(C, mine).await.expect("own record");
        let seq = env.raw.audit_seq(org.id).await;

        let mut answers: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
        for (what, id) in [("another user's", wangs), ("another organization's", foreign), ("missing", missing)] {
            let mut add = |op: &'static str, e: String| {
                answers.entry(op).or_default().insert(e);
            };
            add("get", not_found(what, s.get(C, id).await));
            add("update", not_found(what, s.update(C, id, &obj(json!({"industry": "x"}))).await));
            add("delete", not_found(what, s.delete(C, id).await));
            add("related", not_found(what, s.related(C, id, K, &ListQuery::default()).await));
            add("explain", not_found(what, s.explain_own(C, Action::Edit, id).await));
            add("reveal", not_found(what, s.reveal(C, id, "phone").await));
            add("share", not_found(what, s.share(C, id, ShareKey::User(li), Level::Read).await));
            add("team", not_found(what, s.set_team_member(C, id, li, Some(Level::Full)).await));
        }
        for (op, set) in &answers {
            assert_eq!(set.len(), 1, "{engine}: {op} answers differently: {set:?}");
        }
        // References: another user's invisible account, another organization's account and a missing one alike.
        let mut refs: BTreeSet<Vec<(String, String)>> = BTreeSet::new();
        for account in [wangs, foreign, missing] {
            refs.insert(invalid_fields(s.create(K, &obj(json!({"name": "Zhang", "account_id": account}))).await));
        }
        assert_eq!(refs.len(), 1, "{engine}: {refs:?}");
        not_found("contact", s.get(K, wang_contact).await);
        assert_eq!(
            not_found("contact", s.get(K, wang_contact).await),
            not_found("missing contact", s.get(K, missing).await)
        );
        assert_eq!(env.raw.audit_seq(org.id).await, seq, "{engine}: refused requests wrote audit entries");
        assert_eq!(store.unscoped_system_access().verify_audit(other.id).await.unwrap(), None);

        // Once shared at read level, the record exists for li, and editing it is forbidden rather than missing.
        let w = store.scoped(org.sign_in(store, "wang").await);
        w.share(C, wangs, ShareKey::User(li), Level::Read).await.unwrap();
        s.get(C, wangs).await.expect("shared record");
        assert!(matches!(s.update(C, wangs, &obj(json!({"industry": "x"}))).await, Err(StoreError::Forbidden(_))));
        assert!(matches!(s.delete(C, wangs).await, Err(StoreError::Forbidden(_))));
        env.close().await;
    }
}

#[tokio::test]
async fn related_lists_are_shown_only_for_visible_parents() {
    for engine in engines() {
        let env = Env::new(engine).await;
        let store = &env.store;
        let org = Org::new(store, "related", &scenario_policy()).await;
        let li = org.user(store, "li", &[SALES]).await;
        let wang = org.user(store, "wang", &[SALES]).await;
        org.user(store, "boss", &[MANAGER]).await;
        let accounts =
            seed(&env, org.id, C, vec![(li, customer("Li Co", &[])), (wang, customer("Wang Co", &[]))]).await;
        let (a, b) = (accounts[0], accounts[1]);
        let k =
            seed(&env, org.id, K, vec![(li, contact(a, "c1")), (wang, contact(a, "c2")), (li, contact(b, "c3"))]).await;
        let (c1, c2, c3) = (k[0], k[1], k[2]);
        let set = |v: &[RecordId]| v.iter().copied().collect::<BTreeSet<_>>();

        let s = store.scoped(org.sign_in(store, "li").await);
        assert_eq!(set(&ids(&s.related(C, a, K, &ListQuery::default()).await.unwrap().items)), set(&[c1]), "{engine}");
        not_found("related of an invisible parent", s.related(C, b, K, &ListQuery::default()).await);
        assert_eq!(
            set(&ids(&all_pages(&s, K, &ListQuery::default()).await)),
            set(&[c1, c3]),
            "{engine}: contacts private"
        );
        let boss = store.scoped(org.sign_in(store, "boss").await);
        assert_eq!(set(&ids(&boss.related(C, a, K, &ListQuery::default()).await.unwrap().items)), set(&[c1, c2]));
        assert_eq!(set(&ids(&boss.related(C, b, K, &ListQuery::default()).await.unwrap().items)), set(&[c3]));

        // Contacts controlled by their account: visible exactly when the account is, at the next request.
        let sys = store.unscoped_system_access();
        let (mut config, _) = sys.policy(org.id).await.unwrap();
        config.defaults.insert(K, OrgDefault::ControlledByParent);
        sys.set_policy(org.id, None, &config).await.unwrap();
        let s = store.scoped(org.sign_in(store, "li").await);
        assert_eq!(
            set(&ids(&s.related(C, a, K, &ListQuery::default()).await.unwrap().items)),
            set(&[c1, c2]),
            "{engine}"
        );
        not_found("related of an invisible parent", s.related(C, b, K, &ListQuery::default()).await);
        assert_eq!(
            set(&ids(&all_pages(&s, K, &ListQuery::default()).await)),
            set(&[c1, c2]),
            "{engine}: controlled by parent"
        );
        not_found("contact of an invisible account", s.get(K, c3).await);
        env.close().await;
    }
}

#[tokio::test]
async fn deleting_a_customer_with_contacts_is_a_conflict() {
    for engine in engines() {
        let env = Env::new(engine).await;
        let store = &env.store;
        let org = Org::new(store, "conflict", &scenario_policy()).await;
        let li = org.user(store, "li", &[SALES]).await;
        let a = seed(&env, org.id, C, vec![(li, customer("Li Co", &[]))]).await[0];
        let s = store.scoped(org.sign_in(store, "li").await);
        let c = s.create(K, &obj(json!({"name": "Zhang", "account_id": a}))).await.unwrap();
        let seq = env.raw.audit_seq(org.id).await;
        match s.delete(C, a).await {
            Err(StoreError::Conflict(m)) => assert!(m.contains("contacts"), "{engine}: {m}"),
            other => panic!("{engine}: expected Conflict, got {other:?}"),
        }
        s.get(C, a).await.expect("still there");
        s.get(K, id_of(&c)).await.expect("contact still there");
        let writes = format!(
            "SELECT COUNT(*) FROM audit_log WHERE org_id = {} AND seq > {seq} AND action NOT IN {READ_ACTIONS}",
            org.id
        );
        assert_eq!(env.raw.int(writes).await, 0, "{engine}: the refused delete left an entry");
        s.delete(K, id_of(&c)).await.unwrap();
        s.delete(C, a).await.expect("no more contacts");
        not_found("deleted", s.get(C, a).await);
        env.close().await;
    }
}

#[tokio::test]
async fn the_audit_chain_verifies_and_detects_tampering() {
    for engine in engines() {
        let env = Env::new(engine).await;
        let store = &env.store;
        let sys = store.unscoped_system_access();
        let org = Org::new(store, "audit", &scenario_policy()).await;
        let bystander = Org::new(store, "audit-bystander", &scenario_policy()).await;
        let li = org.user(store, "li", &[SALES]).await;
        let wang = org.user(store, "wang", &[SALES]).await;
        bystander.user(store, "zhao", &[SALES]).await;
        let s = store.scoped(org.sign_in(store, "li").await);
        let a = id_of(&s.create(C, &obj(json!({"name": "A", "region": "华东"}))).await.unwrap());
        let b = id_of(&s.create(C, &obj(json!({"name": "B"}))).await.unwrap());
        s.update(C, a, &obj(json!({"industry": "finance"}))).await.unwrap();
        s.share(C, a, ShareKey::User(wang), Level::Edit).await.unwrap();
        s.set_team_member(C, a, wang, Some(Level::Read)).await.unwrap();
        s.create(K, &obj(json!({"name": "Zhang", "account_id": a}))).await.unwrap();
        s.delete(C, b).await.unwrap();
        let _ = sys.sign_in(Some("audit"), "li", "wrong password", None, None).await.unwrap_err();
        let (config, _) = sys.policy(org.id).await.unwrap();
        sys.set_policy(org.id, None, &config).await.unwrap();
        let seq = env.raw.audit_seq(org.id).await;
        assert!(seq >= 12, "{engine}: {seq}");
        assert_eq!(env.raw.int(format!("SELECT COUNT(*) FROM audit_log WHERE org_id = {}", org.id)).await, seq);
        assert_eq!(sys.verify_audit(org.id).await.unwrap(), None, "{engine}");
        assert_eq!(sys.verify_audit(bystander.id).await.unwrap(), None, "{engine}");

        // Rewriting an entry's content is detected at that entry, and only in that organization.
        let detail = |seq: i64| format!("SELECT detail FROM audit_log WHERE org_id = {} AND seq = {seq}", org.id);
        use sqlx::Row;
        let original: String = env.raw.rows(detail(5)).await[0].get("detail");
        let n = env
            .raw
            .exec(format!("UPDATE audit_log SET detail = '{{\"forged\":true}}' WHERE org_id = {} AND seq = 5", org.id))
            .await;
        assert_eq!(n, 1);
        assert_eq!(sys.verify_audit(org.id).await.unwrap(), Some((5, "entry modified".into())), "{engine}");
        assert_eq!(sys.verify_audit(bystander.id).await.unwrap(), None, "{engine}");
        env.raw
            .exec(format!(
                "UPDATE audit_log SET detail = '{}' WHERE org_id = {} AND seq = 5",
                original.replace('\'', "''"),
                org.id
            ))
            .await;
        assert_eq!(sys.verify_audit(org.id).await.unwrap(), None, "{engine}: restored");

        // The actor, the time, the action.
        for (column, value) in
            [("actor_id", wang.to_string()), ("at", "at + 1".to_string()), ("action", "'record.view'".to_string())]
        {
            let saved = env
                .raw
                .rows(format!("SELECT actor_id, at, action FROM audit_log WHERE org_id = {} AND seq = 4", org.id))
                .await;
            let (actor, at, action): (Option<i64>, i64, String) =
                (saved[0].get("actor_id"), saved[0].get("at"), saved[0].get("action"));
            env.raw
                .exec(format!("UPDATE audit_log SET {column} = {value} WHERE org_id = {} AND seq = 4", org.id))
                .await;
            assert_eq!(sys.verify_audit(org.id).await.unwrap().map(|(s, _)| s), Some(4), "{engine}: {column}");
            let actor = actor.map(|a| a.to_string()).unwrap_or("NULL".into());
            env.raw
                .exec(format!("UPDATE audit_log SET actor_id = {actor}, at = {at}, action = '{action}' WHERE org_id = {} AND seq = 4", org.id))
                .await;
            assert_eq!(sys.verify_audit(org.id).await.unwrap(), None, "{engine}: restored {column}");
        }

        // A forged hash is detected at its entry.
        let hash3: String =
            env.raw.rows(format!("SELECT hash FROM audit_log WHERE org_id = {} AND seq = 3", org.id)).await[0]
                .get("hash");
        env.raw.exec(format!("UPDATE audit_log SET hash = 'deadbeef' WHERE org_id = {} AND seq = 3", org.id)).await;
        assert_eq!(sys.verify_audit(org.id).await.unwrap().map(|(s, _)| s), Some(3), "{engine}");
        env.raw.exec(format!("UPDATE audit_log SET hash = '{hash3}' WHERE org_id = {} AND seq = 3", org.id)).await;
        assert_eq!(sys.verify_audit(org.id).await.unwrap(), None, "{engine}: restored hash");
        // Removing an entry is detected as a gap.
        env.raw.exec(format!("DELETE FROM audit_log WHERE org_id = {} AND seq = 2", org.id)).await;
        let (at, why) = sys.verify_audit(org.id).await.unwrap().expect("gap detected");
        assert_eq!(at, 2, "{engine}: {why}");
        assert!(why.contains("missing"), "{engine}: {why}");
        // Removing the newest entries is detected too: the trail no longer reaches the organization's head.
        assert_eq!(sys.verify_audit(bystander.id).await.unwrap(), None, "{engine}");
        let last = env.raw.audit_seq(bystander.id).await;
        env.raw.exec(format!("DELETE FROM audit_log WHERE org_id = {} AND seq = {last}", bystander.id)).await;
        let found = sys.verify_audit(bystander.id).await.unwrap();
        assert_eq!(found.as_ref().map(|(s, _)| *s), Some(last), "{engine}: truncated trail not detected: {found:?}");
        let _ = li;
        env.close().await;
    }
}

/// Several server processes starting at once on a fresh database: every one of them migrates successfully.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_survive_several_processes_starting_at_once() {
    for engine in engines() {
        for _ in 0..3 {
            let db = TestDatabase::new(engine).await;
            let url = crm_store::DatabaseUrl::parse(&db.url).unwrap();
            let (a, b, c) =
                tokio::join!(crm_store::Store::open(&url), crm_store::Store::open(&url), crm_store::Store::open(&url));
            for (name, s) in [("a", a), ("b", b), ("c", c)] {
                let s = s.unwrap_or_else(|e| panic!("{engine}: store {name} failed to start: {e:?}"));
                assert_eq!(s.unscoped_system_access().organization_count().await.unwrap(), 0);
                s.close().await;
            }
            let raw = Raw::connect(&db.url).await;
            assert_eq!(raw.int("SELECT COUNT(*) FROM schema_migrations").await, migration_files(), "{engine}");
            raw.close().await;
        }
    }
}

#[tokio::test]
async fn sharing_never_hands_out_more_than_the_sharer_holds_and_a_revoked_share_ends_access_at_once() {
    const SHARER: i64 = 3;
    for engine in engines() {
        let env = Env::new(engine).await;
        let store = &env.store;
        let mut config = scenario_policy();
        // Zhou reads and shares every customer but edits and deletes only his own.
        let sharer = allow(role(SHARER, "sharer"), C, &[Action::View, Action::Share], Scope::All);
        config.roles.push(allow(sharer, C, &[Action::Create, Action::Edit, Action::Delete], Scope::Own));
        let org = Org::new(store, "share-cap", &config).await;
        let li = org.user(store, "li", &[SALES]).await;
        let wang = org.user(store, "wang", &[SALES]).await;
        let zhou = org.user(store, "zhou", &[SHARER]).await;
        let ids = seed(&env, org.id, C, vec![(wang, customer("Wang Co", &[])), (zhou, customer("Zhou Co", &[]))]).await;
        let (wangs, zhous) = (ids[0], ids[1]);
        let z = store.scoped(org.sign_in(store, "zhou").await);

        // On Wang's record Zhou holds read (and share): he may hand out read, nothing more, by share or by team.
        z.share(C, wangs, ShareKey::User(li), Level::Read).await.expect("read share");
        for level in [Level::Edit, Level::Full] {
            let refused = z.share(C, wangs, ShareKey::User(li), level).await;
            assert!(matches!(refused, Err(StoreError::Forbidden(_))), "{engine}: share at {level:?}: {refused:?}");
            let refused = z.set_team_member(C, wangs, li, Some(level)).await;
            assert!(matches!(refused, Err(StoreError::Forbidden(_))), "{engine}: team at {level:?}: {refused:?}");
        }
        // On his own record he holds everything, so he may share it fully.
        z.share(C, zhous, ShareKey::User(li), Level::Full).await.expect("full share of his own record");

        let l = store.scoped(org.sign_in(store, "li").await);
        l.get(C, wangs).await.expect("shared at read");
        let edit = l.update(C, wangs, &obj(json!({"industry": "x"}))).await;
        assert!(matches!(edit, Err(StoreError::Forbidden(_))), "{engine}: the refused edit share leaked: {edit:?}");
        let sharing = z.sharing(C, wangs).await.expect("sharing");
        assert_eq!(sharing.shares.len(), 1, "{engine}: {sharing:?}");
        assert_eq!((sharing.shares[0].key, sharing.shares[0].level), (ShareKey::User(li), Level::Read));
        assert!(sharing.team.is_empty(), "{engine}: refused team changes were written: {sharing:?}");
        // Li may read Wang's record but not share it, so she does not see whom it is shared with.
        assert!(matches!(l.sharing(C, wangs).await, Err(StoreError::Forbidden(_))), "{engine}");

        // Pickers suggest exactly what the lists show: Li's shared records, nothing else.
        let suggested: BTreeSet<i64> = l.lookup(C, "co", 20).await.unwrap().iter().map(|i| i.id).collect();
        assert_eq!(suggested, BTreeSet::from([wangs, zhous]), "{engine}");
        let w = store.scoped(org.sign_in(store, "wang").await);
        let suggested = w.lookup(C, "co", 20).await.unwrap();
        assert_eq!(suggested.iter().map(|i| (i.id, i.label.as_str())).collect::<Vec<_>>(), [(wangs, "Wang Co")]);
        assert!(matches!(w.lookup(C, "co", 21).await, Err(StoreError::BadQuery(_))), "{engine}");

        // A revoked share ends access at the next request; revoking it twice is refused, not silently accepted.
        z.unshare(C, wangs, ShareKey::User(li)).await.expect("revoke");
        not_found("a revoked share", l.get(C, wangs).await);
        let again = z.unshare(C, wangs, ShareKey::User(li)).await;
        assert!(matches!(again, Err(StoreError::Invalid(_))), "{engine}: {again:?}");
        env.close().await;
    }
}

/// How many migrations the store ships (one `.sql` file each).
fn migration_files() -> i64 {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/migrations");
    std::fs::read_dir(dir)
        .expect("migrations folder")
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "sql"))
        .count() as i64
}
