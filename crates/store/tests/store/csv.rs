//! CSV export and import through the scoped access layer, on every engine of `testdb::engines()`.

use crate::support::*;
use crate::testdb::engines;
use crm_domain::{Action, Module, OrgId, RecordId, UserId, Value};
use crm_policy::{CmpOp, PolicyConfig, Scope};
use crm_store::{FieldFilter, ImportReport, ListQuery, StoreError};
use serde_json::json;
use sqlx::Row;
use std::collections::BTreeMap;

const C: Module = Module::Customers;
const K: Module = Module::Contacts;
/// View only on customers.
const VIEWER: i64 = 3;
/// Views every customer but exports only their own.
const ANALYST: i64 = 4;
/// Contacts only: customers do not exist for them.
const NO_CUSTOMERS: i64 = 5;

fn policy() -> PolicyConfig {
    let mut p = scenario_policy();
    p.roles.push(allow(role(VIEWER, "viewer"), C, &[Action::View], Scope::All));
    let analyst = allow(role(ANALYST, "analyst"), C, &[Action::View], Scope::All);
    p.roles.push(allow(analyst, C, &[Action::Export, Action::Import], Scope::Own));
    p.roles.push(allow(role(NO_CUSTOMERS, "contacts only"), K, &Action::ALL, Scope::Own));
    p
}

fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

async fn seed(
    env: &Env,
    org: OrgId,
    module: Module,
    rows: Vec<(UserId, BTreeMap<&'static str, Value>)>,
) -> Vec<RecordId> {
    env.store.unscoped_system_access().seed_records(org, module, &rows).await.expect("seed")
}

/// The CSV as rows of cells, header first.
fn parse(csv_text: &str) -> Vec<Vec<String>> {
    ::csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(csv_text.as_bytes())
        .records()
        .map(|r| r.expect("well-formed CSV").iter().map(str::to_string).collect())
        .collect()
}

fn invalid(r: Result<impl std::fmt::Debug, StoreError>) -> Vec<(String, String)> {
    match r {
        Err(StoreError::Invalid(errs)) => errs.into_iter().map(|e| (e.field, e.message)).collect(),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

/// The audit entries of an organization after `seq`: (action, actor, module, detail).
async fn audit_after(env: &Env, org: OrgId, seq: i64) -> Vec<(String, Option<i64>, Option<String>, serde_json::Value)> {
    let rows = env
        .raw
        .rows(format!(
            "SELECT action, actor_id, module, detail FROM audit_log WHERE org_id = {org} AND seq > {seq} AND action NOT IN {READ_ACTIONS} ORDER BY seq"
        ))
        .await;
    rows.iter()
        .map(|r| {
            let detail: String = r.get("detail");
            (
                r.get("action"),
                r.get("actor_id"),
                r.get("module"),
                serde_json::from_str(&detail).expect("detail is JSON"),
            )
        })
        .collect()
}

const TRICKY: [(&str, &str, &str); 4] = [
    // name, address, industry
    ("华为技术有限公司, 深圳", "广东省深圳市龙岗区\n坂田华为基地 \"H区\"", "telecom"),
    ("\"Quoted\" Co., Ltd.", "Line one\nLine two, with comma\n第三行", "=HYPERLINK(\"http://x\")"),
    ("腾讯", "", "-"),
    ("O'Brien & 张三", "'quoted' address", "'leading quote"),
];

#[tokio::test]
async fn export_then_import_round_trips_chinese_commas_quotes_and_newlines() {
    for engine in engines() {
        let env = Env::new(engine).await;
        let store = &env.store;
        let org = Org::new(store, "roundtrip", &policy()).await;
        let boss = org.user(store, "boss", &[MANAGER]).await;
        let li = org.user(store, "li", &[SALES]).await;
        let rows = TRICKY
            .iter()
            .enumerate()
            .map(|(i, (name, address, industry))| {
                let mut m =
                    BTreeMap::from([("name", text(name)), ("industry", text(industry)), ("region", text("华南"))]);
                if !address.is_empty() {
                    m.insert("address", text(address));
                }
                m.insert("customer_type", text("enterprise"));
                m.insert("phone", text("+86 755 2878 0808"));
                m.insert("email", text("info@huawei.com"));
                m.insert("annual_revenue", if i == 2 { Value::Null } else { Value::Int(12_345_678_900 + i as i64) });
                (if i % 2 == 0 { boss } else { li }, m)
            })
            .collect::<Vec<_>>();
        let seeded = seed(&env, org.id, C, rows).await;
        let s = store.scoped(org.sign_in(store, "boss").await);
        let seq0 = env.raw.audit_seq(org.id).await;

        let (first, n) = s.export_csv(C, &ListQuery::default()).await.expect("export");
        assert_eq!(n, TRICKY.len(), "{engine}");
        assert!(!first.starts_with('\u{feff}'), "no byte-order mark by default");
        assert!(first.contains("\r\n"), "{engine}: RFC 4180 line ends");
        let table = parse(&first);
        assert_eq!(
            table[0],
            [
                "id",
                "owner_id",
                "name",
                "industry",
                "customer_type",
                "region",
                "business_line",
                "phone",
                "email",
                "address",
                "annual_revenue"
            ],
            "{engine}"
        );
        assert_eq!(table.len(), 1 + TRICKY.len());
        let ids: Vec<RecordId> = table[1..].iter().map(|r| r[0].parse().unwrap()).collect();
        assert_eq!(ids, seeded, "{engine}: id order");
        assert_eq!(table[1][2], "华为技术有限公司, 深圳");
        assert_eq!(table[2][3], "'=HYPERLINK(\"http://x\")", "{engine}: a formula is exported as text");

        let report = s.import_csv(C, first.as_bytes(), None).await.expect("import the export");
        assert_eq!(report, ImportReport { created: TRICKY.len() });
        assert_eq!(env.raw.count("customers", org.id).await, 2 * TRICKY.len() as i64);

        // Exported again, the imported copies carry the same cells as the originals, owners included.
        let (second, n) = s.export_csv(C, &ListQuery::default()).await.expect("second export");
        assert_eq!(n, 2 * TRICKY.len());
        let table2 = parse(&second);
        let (orig, copies) = table2[1..].split_at(TRICKY.len());
        assert_eq!(orig, &table[1..], "{engine}: the originals are unchanged");
        for (o, c) in orig.iter().zip(copies) {
            assert_ne!(o[0], c[0], "new records");
            assert_eq!(o[1..], c[1..], "{engine}: cells differ after the round trip");
        }
        // And the stored values are exactly the original text.
        for ((name, address, industry), c) in TRICKY.iter().zip(copies) {
            let got = s.get(C, c[0].parse().unwrap()).await.unwrap();
            assert_eq!(got["name"], json!(name), "{engine}");
            assert_eq!(got["industry"], json!(industry), "{engine}");
            assert_eq!(got["address"], if address.is_empty() { json!(null) } else { json!(address) }, "{engine}");
            assert_eq!(got["phone"], json!("+86 755 2878 0808"));
        }

        // A byte-order mark and CRLF inside a quoted cell are accepted too.
        let with_bom = "\u{feff}name,address\r\n\"北京, 海淀\",\"一行\r\n两行\"\r\n";
        assert_eq!(s.import_csv(C, with_bom.as_bytes(), None).await.unwrap().created, 1);
        let got = s.list(C, &ListQuery { q: Some("北京, 海淀".into()), ..ListQuery::default() }).await.unwrap();
        assert_eq!(got.items.len(), 1, "{engine}");
        assert_eq!(got.items[0]["address"], json!("一行\n两行"));

        // One audit entry per export and per import, naming the module, the count and the records.
        let entries = audit_after(&env, org.id, seq0).await;
        let actions: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(actions, ["record.export", "record.import", "record.export", "record.import"], "{engine}");
        assert!(entries.iter().all(|e| e.1 == Some(boss) && e.2.as_deref() == Some("customers")));
        assert_eq!(entries[0].3["rows"], json!(TRICKY.len()));
        assert_eq!(entries[0].3["ids"], json!(seeded));
        assert_eq!(entries[1].3["count"], json!(TRICKY.len()));
        assert_eq!(entries[1].3["ids"].as_array().unwrap().len(), TRICKY.len());
        assert_eq!(store.unscoped_system_access().verify_audit(org.id).await.unwrap(), None);
        env.close().await;
    }
}

#[tokio::test]
async fn an_error_on_line_3_is_reported_by_line_and_nothing_is_written() {
    for engine in engines() {
        let env = Env::new(engine).await;
        let store = &env.store;
        let org = Org::new(store, "line3", &policy()).await;
        let li = org.user(store, "li", &[SALES]).await;
        let wang = org.user(store, "wang", &[SALES]).await;
        let mine = seed(&env, org.id, C, vec![(li, BTreeMap::from([("name", text("Li Co"))]))]).await[0];
        let theirs = seed(&env, org.id, C, vec![(wang, BTreeMap::from([("name", text("Wang Co"))]))]).await[0];
        let s = store.scoped(org.sign_in(store, "li").await);
        let count = env.raw.count("customers", org.id).await;
        let contacts = env.raw.count("contacts", org.id).await;
        let seq = env.raw.audit_seq(org.id).await;

        let file = "name,region,annual_revenue\n好公司,华东,100\n,华北,abc\n另一家,华南,\n";
        let errs = invalid(s.import_csv(C, file.as_bytes(), None).await);
        assert_eq!(
            errs,
            vec![
                ("line 3: annual_revenue".to_string(), "must be a whole number".to_string()),
                ("line 3: name".to_string(), "is required".to_string()),
            ],
            "{engine}"
        );

        // Line numbers are those of the file, also after a cell that spans lines.
        let file = "name,address\n\"A\",\"two\nlines\"\nB,x\n\"\",y\n";
        assert_eq!(
            invalid(s.import_csv(C, file.as_bytes(), None).await),
            vec![("line 5: name".to_string(), "is required".to_string())]
        );

        // Rows with a wrong number of cells, owners the importer may not assign, several lines at once.
        let file = format!("name,owner_id\nA,{li}\nB\nC,{wang}\nD,nobody\n");
        let errs = invalid(s.import_csv(C, file.as_bytes(), None).await);
        let fields: Vec<&str> = errs.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(fields, ["line 3", "line 4: owner_id", "line 5: owner_id"], "{engine}: {errs:?}");

        // A reference the importer may not see is found inside the transaction, after earlier rows were inserted:
        // they are rolled back.
        let file = format!("account_id,name\n{mine},张三\n{theirs},李四\n{mine},王五\n");
        assert_eq!(
            invalid(s.import_csv(K, file.as_bytes(), None).await),
            vec![("line 3: account_id".to_string(), "no such customers record".to_string())],
            "{engine}"
        );

        assert_eq!(env.raw.count("customers", org.id).await, count, "{engine}: a refused import wrote records");
        assert_eq!(env.raw.count("contacts", org.id).await, contacts, "{engine}: a refused import wrote records");
        assert_eq!(env.raw.audit_seq(org.id).await, seq, "{engine}: a refused import left an audit entry");

        // The same contacts without the bad line go in, with progress reported up to the total.
        let file = format!("account_id,name\n{mine},张三\n{mine},王五\n");
        let seen = std::cell::RefCell::new(Vec::new());
        let progress = |done: usize, total: usize| seen.borrow_mut().push((done, total));
        assert_eq!(s.import_csv(K, file.as_bytes(), Some(&progress)).await.unwrap().created, 2);
        assert_eq!(seen.borrow().last(), Some(&(2, 2)));
        assert_eq!(env.raw.count("contacts", org.id).await, contacts + 2);
        assert_eq!(env.raw.audit_seq(org.id).await, seq + 1, "{engine}: one audit entry for the import");
        env.close().await;
    }
}

#[tokio::test]
async fn invalid_utf8_is_refused_with_its_line_number() {
    for engine in engines() {
        let env = Env::new(engine).await;
        let store = &env.store;
        let org = Org::new(store, "utf8", &policy()).await;
        org.user(store, "li", &[SALES]).await;
        let s = store.scoped(org.sign_in(store, "li").await);
        let seq = env.raw.audit_seq(org.id).await;
        // "你好" in GBK on the third line.
        let mut file = b"name,region\nGood,\n".to_vec();
        file.extend_from_slice(b"\xC4\xE3\xBA\xC3,\n");
        let errs = invalid(s.import_csv(C, &file, None).await);
        assert_eq!(errs.len(), 1, "{engine}");
        assert_eq!(errs[0].0, "line 3");
        assert!(errs[0].1.contains("UTF-8"), "{}", errs[0].1);
        assert_eq!(env.raw.count("customers", org.id).await, 0);
        assert_eq!(env.raw.audit_seq(org.id).await, seq);
        env.close().await;
    }
}

#[tokio::test]
async fn a_hidden_column_is_refused_like_an_unknown_one() {
    for engine in engines() {
        let env = Env::new(engine).await;
        let store = &env.store;
        let org = Org::new(store, "hiddencol", &policy()).await;
        org.user(store, "li", &[SALES]).await;
        let s = store.scoped(org.sign_in(store, "li").await);
        let seq = env.raw.audit_seq(org.id).await;

        let hidden = invalid(s.import_csv(C, "name,email\nA,a@b.cn\n".as_bytes(), None).await);
        let unknown = invalid(s.import_csv(C, "name,nosuch\nA,a@b.cn\n".as_bytes(), None).await);
        assert_eq!(hidden, vec![("line 1: email".to_string(), "unknown field".to_string())], "{engine}");
        assert_eq!(unknown, vec![("line 1: nosuch".to_string(), "unknown field".to_string())], "{engine}");
        // A masked column is read-only for this user, as in create; so are duplicate and missing columns refused.
        let masked = invalid(s.import_csv(C, "name,phone\nA,13812345678\n".as_bytes(), None).await);
        assert_eq!(masked, vec![("line 1: phone".to_string(), "is read-only for you".to_string())]);
        let dup = invalid(s.import_csv(C, "name,name\nA,B\n".as_bytes(), None).await);
        assert_eq!(dup[0].0, "line 1: name");
        let missing = invalid(s.import_csv(C, "region\n华东\n".as_bytes(), None).await);
        assert_eq!(missing, vec![("line 1: name".to_string(), "is required: add this column".to_string())]);
        for empty in ["", "\u{feff}"] {
            assert_eq!(
                invalid(s.import_csv(C, empty.as_bytes(), None).await)[0].0,
                "line 1",
                "a header row is required"
            );
        }
        // A header alone imports nothing.
        assert_eq!(s.import_csv(C, "name\n".as_bytes(), None).await.unwrap().created, 0);

        assert_eq!(env.raw.count("customers", org.id).await, 0, "{engine}");
        assert_eq!(env.raw.audit_seq(org.id).await, seq + 1, "{engine}: only the empty import is audited");
        env.close().await;
    }
}

#[tokio::test]
async fn an_export_holds_only_exportable_rows_and_no_hidden_field() {
    for engine in engines() {
        let env = Env::new(engine).await;
        let store = &env.store;
        let org = Org::new(store, "exportscope", &policy()).await;
        let li = org.user(store, "li", &[SALES]).await;
        let wang = org.user(store, "wang", &[SALES]).await;
        let ana = org.user(store, "ana", &[ANALYST]).await;
        let row = |name: &str, phone: &str, email: &str| {
            BTreeMap::from([
                ("name", text(name)),
                ("phone", text(phone)),
                ("email", text(email)),
                ("region", text("华东")),
            ])
        };
        let ids = seed(
            &env,
            org.id,
            C,
            vec![
                (li, row("李的客户", "13812345678", "secret.li@example.com")),
                (wang, row("王的客户", "13900001111", "secret.wang@example.com")),
                (li, row("Li Two", "13700002222", "two.li@example.com")),
                (ana, row("Ana Co", "13600003333", "ana@example.com")),
            ],
        )
        .await;

        let s = store.scoped(org.sign_in(store, "li").await);
        let (text_out, n) = s.export_csv(C, &ListQuery::default()).await.expect("export");
        let table = parse(&text_out);
        assert_eq!(n, 2, "{engine}");
        assert_eq!(
            table[0],
            [
                "id",
                "owner_id",
                "name",
                "industry",
                "customer_type",
                "region",
                "business_line",
                "phone",
                "address",
                "annual_revenue"
            ]
        );
        assert!(
            !text_out.contains("email") && !text_out.contains("secret"),
            "{engine}: hidden field exported: {text_out}"
        );
        assert!(
            !text_out.contains("王的客户") && !text_out.contains("Ana Co"),
            "{engine}: another owner's row exported"
        );
        let rows: Vec<(String, String)> = table[1..].iter().map(|r| (r[0].clone(), r[7].clone())).collect();
        assert_eq!(
            rows,
            [(ids[0].to_string(), "138****5678".to_string()), (ids[2].to_string(), "137****2222".to_string())],
            "{engine}"
        );

        // Filters and search narrow it, and are recorded in the audit entry.
        let seq = env.raw.audit_seq(org.id).await;
        let q = ListQuery {
            q: Some("two".into()),
            filters: vec![FieldFilter { field: "region".into(), op: CmpOp::Eq, value: json!("华东") }],
            ..ListQuery::default()
        };
        let (narrow, n) = s.export_csv(C, &q).await.unwrap();
        assert_eq!((n, parse(&narrow).len()), (1, 2), "{engine}");
        let entries = audit_after(&env, org.id, seq).await;
        assert_eq!(entries.len(), 1);
        let (action, actor, module, detail) = &entries[0];
        assert_eq!((action.as_str(), *actor, module.as_deref()), ("record.export", Some(li), Some("customers")));
        assert_eq!(detail["rows"], json!(1));
        assert_eq!(detail["q"], json!("two"));
        assert_eq!(detail["filters"][0]["field"], json!("region"));
        assert_eq!(detail["ids"], json!([ids[2]]));
        // A hidden field cannot be used to narrow an export either.
        let q = ListQuery {
            filters: vec![FieldFilter { field: "email".into(), op: CmpOp::Eq, value: json!("x") }],
            ..ListQuery::default()
        };
        assert!(matches!(s.export_csv(C, &q).await, Err(StoreError::BadQuery(_))));

        // The export predicate, not the view predicate: the analyst views all four but exports only their own.
        let a = store.scoped(org.sign_in(store, "ana").await);
        assert_eq!(a.count(C, &ListQuery::default()).await.unwrap(), 4);
        let (text_out, n) = a.export_csv(C, &ListQuery::default()).await.unwrap();
        assert_eq!(n, 1, "{engine}");
        assert_eq!(parse(&text_out)[1][0], ids[3].to_string());
        assert!(text_out.contains("ana@example.com"), "the analyst's role shows e-mail addresses");
        env.close().await;
    }
}

#[tokio::test]
async fn import_and_export_need_their_permissions() {
    for engine in engines() {
        let env = Env::new(engine).await;
        let store = &env.store;
        let org = Org::new(store, "csvperm", &policy()).await;
        let li = org.user(store, "li", &[SALES]).await;
        org.user(store, "viewer", &[VIEWER]).await;
        org.user(store, "outsider", &[NO_CUSTOMERS]).await;
        org.user(store, "boss", &[MANAGER]).await;
        seed(&env, org.id, C, vec![(li, BTreeMap::from([("name", text("Li Co"))]))]).await;
        let v = store.scoped(org.sign_in(store, "viewer").await);
        let o = store.scoped(org.sign_in(store, "outsider").await);
        let b = store.scoped(org.sign_in(store, "boss").await);
        let count = env.raw.count("customers", org.id).await;
        let seq = env.raw.audit_seq(org.id).await;
        let file = "name\nNew Co\n".as_bytes();

        // View-only: the module exists, the action does not.
        assert!(matches!(v.import_csv(C, file, None).await, Err(StoreError::Forbidden(_))), "{engine}");
        assert!(matches!(v.export_csv(C, &ListQuery::default()).await, Err(StoreError::Forbidden(_))), "{engine}");
        // No customers module at all: it does not exist for them.
        assert!(matches!(o.import_csv(C, file, None).await, Err(StoreError::NotFound)), "{engine}");
        assert!(matches!(o.export_csv(C, &ListQuery::default()).await, Err(StoreError::NotFound)), "{engine}");
        // Modules without CSV are not found, whatever the permissions.
        assert!(matches!(b.import_csv(Module::Leads, file, None).await, Err(StoreError::NotFound)));
        assert!(matches!(b.export_csv(Module::Users, &ListQuery::default()).await, Err(StoreError::NotFound)));
        // The refusal comes before the file is read: a broken file gets the same answer.
        assert!(matches!(v.import_csv(C, b"\xff\xfe", None).await, Err(StoreError::Forbidden(_))));

        assert_eq!(env.raw.count("customers", org.id).await, count, "{engine}");
        assert_eq!(env.raw.audit_seq(org.id).await, seq, "{engine}");
        env.close().await;
    }
}
