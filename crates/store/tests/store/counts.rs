//! Maintained record counts (`record_counts`, migration 0011): whatever writes records — the API's create and
//! delete, a CSV import (committed or rolled back), the generator's bulk load, raw SQL, the migration's backfill —
//! each organization's maintained count of each record table equals its `COUNT(*)`, on every engine, and the
//! administrator's count (the complement plan, which reads it) follows.

use crate::support::*;
use crate::testdb::engines;
use crm_domain::{Action, Module, OrgId, UserId, Value, schema};
use crm_policy::{PolicyConfig, Scope};
use crm_store::{BulkRecord, CountPlan, ListQuery};
use serde_json::json;
use sqlx::Row;
use std::collections::BTreeMap;

const C: Module = Module::Customers;

/// Every record table's maintained count for `org` next to its `COUNT(*)`: (table, maintained, counted).
async fn counts(raw: &Raw, org: OrgId) -> Vec<(&'static str, i64, i64)> {
    let mut out = Vec::new();
    for table in Module::RECORDS.iter().filter_map(|m| schema(*m)).map(|s| s.table) {
        let maintained = raw
            .int(format!(
                "SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM record_counts \
                 WHERE org_id = {org} AND table_name = '{table}'"
            ))
            .await;
        out.push((table, maintained, raw.count(table, org).await));
    }
    out
}

async fn assert_counts_exact(raw: &Raw, orgs: &[OrgId], after: &str) {
    for org in orgs {
        for (table, maintained, counted) in counts(raw, *org).await {
            assert_eq!(maintained, counted, "after {after}: organization {org}'s maintained count of {table}");
        }
    }
}

/// Everything on customers and contacts, over every record: the view predicate is `true`.
fn everything() -> PolicyConfig {
    let admin = allow(role(1, "everything"), C, &Action::ALL, Scope::All);
    PolicyConfig { roles: vec![allow(admin, Module::Contacts, &Action::ALL, Scope::All)], ..PolicyConfig::default() }
}

/// `n` records named `r0 …` owned by `owner`, for `SystemAccess::seed_records`.
fn named(owner: UserId, n: usize) -> Vec<(UserId, BTreeMap<&'static str, Value>)> {
    (0..n).map(|i| (owner, BTreeMap::from([("name", Value::Text(format!("r{i}")))]))).collect()
}

fn customer(name: &str) -> BulkRecord {
    BulkRecord { owner: 0, updated_at: 1, values: vec![Value::Text(name.into())] }
}

#[tokio::test]
async fn maintained_counts_follow_every_write_path() {
    for engine in engines() {
        let env = Env::new(engine).await;
        let store = &env.store;
        let a = Org::new(store, "counted-a", &everything()).await;
        let b = Org::new(store, "counted-b", &everything()).await;
        let admin_a = a.user(store, "admin", &[1]).await;
        assert_eq!(
            store
                .scoped(a.sign_in(store, "admin").await)
                .count_statement(C, &ListQuery::default(), CountPlan::Auto)
                .ok(),
            store
                .scoped(a.sign_in(store, "admin").await)
                .count_statement(C, &ListQuery::default(), CountPlan::Complement)
                .ok(),
            "{engine}: the automatic plan of a view-all count is the complement"
        );
        let admin_b = b.user(store, "admin", &[1]).await;
        let orgs = [a.id, b.id];
        assert_counts_exact(&env.raw, &orgs, "creating the organizations").await;
        let s = store.scoped(a.sign_in(store, "admin").await);
        let admin_count = || async { s.count_with_plan(C, &ListQuery::default(), CountPlan::Complement).await };

        // The API: create (customers and a contact of one of them), then delete.
        let mut ids = Vec::new();
        for name in ["一", "二", "三"] {
            ids.push(id_of(&s.create(C, &obj(json!({"name": name}))).await.expect("create")));
        }
        s.create(Module::Contacts, &obj(json!({"name": "联系人", "account_id": ids[0]}))).await.expect("contact");
        assert_counts_exact(&env.raw, &orgs, "API creates").await;
        assert_eq!(admin_count().await.ok(), Some(3), "{engine}: the administrator's count after creates");
        s.delete(C, ids[2]).await.expect("delete");
        assert_counts_exact(&env.raw, &orgs, "an API delete").await;
        assert_eq!(admin_count().await.ok(), Some(2), "{engine}: the administrator's count after a delete");

        // A CSV import adds its rows; a refused one (a bad line) adds nothing, as nothing of it is written.
        let report = s.import_csv(C, "name,region\n甲,华东\n乙,华南\n".as_bytes(), None).await.expect("import");
        assert_eq!(report.created, 2);
        assert!(s.import_csv(C, "name,annual_revenue\n丙,1\n丁,many\n".as_bytes(), None).await.is_err());
        assert_counts_exact(&env.raw, &orgs, "a CSV import and a refused one").await;
        assert_eq!(admin_count().await.ok(), Some(4), "{engine}: the administrator's count after the import");

        // The bulk load into a database holding other organizations (indexes kept).
        let sys = store.unscoped_system_access();
        let mut load = sys.bulk_load(b.id).await.expect("bulk load");
        assert!(!load.fresh());
        let rows: Vec<BulkRecord> =
            (0..300).map(|i| BulkRecord { owner: admin_b, ..customer(&format!("bulk {i}")) }).collect();
        load.records(C, &rows).await.expect("bulk records");
        load.records(C, &rows[..7]).await.expect("bulk records");
        load.finish().await.expect("finish");
        assert_counts_exact(&env.raw, &orgs, "a bulk load").await;

        // Raw SQL: a multi-row insert, a multi-row delete, records moved to another organization.
        env.raw
            .exec(format!(
                "INSERT INTO customers (org_id, owner_id, name, created_by, updated_by, created_at, updated_at) \
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 40) \
                 SELECT {}, {admin_a}, 'raw', {admin_a}, {admin_a}, 0, 0 FROM n",
                a.id
            ))
            .await;
        assert!(env.raw.exec(format!("DELETE FROM customers WHERE org_id = {} AND id % 3 = 0", b.id)).await > 0);
        let moved = env
            .raw
            .exec(format!(
                "UPDATE customers SET org_id = {}, owner_id = {admin_b} WHERE org_id = {} AND name = 'raw' AND id % 2 = 0",
                b.id, a.id
            ))
            .await;
        assert!(moved > 0);
        assert_counts_exact(&env.raw, &orgs, "raw inserts, deletes and moves").await;
        // Emptying a table: a DELETE without WHERE (SQLite skips row-by-row deletion for it unless the table has
        // triggers), and on PostgreSQL a TRUNCATE, which fires no delete trigger.
        sys.seed_records(a.id, Module::Leads, &named(admin_a, 3)).await.expect("leads a");
        sys.seed_records(b.id, Module::Leads, &named(admin_b, 2)).await.expect("leads b");
        assert_counts_exact(&env.raw, &orgs, "seeding leads").await;
        assert_eq!(env.raw.exec("DELETE FROM leads").await, 5);
        assert_counts_exact(&env.raw, &orgs, "deleting every lead").await;
        if engine != "sqlite" {
            sys.seed_records(b.id, Module::Leads, &named(admin_b, 4)).await.expect("leads again");
            env.raw.exec("TRUNCATE leads").await;
            assert_counts_exact(&env.raw, &orgs, "TRUNCATE").await;
        }
        let counted = env.raw.count("customers", a.id).await;
        assert_eq!(admin_count().await.ok(), Some(counted), "{engine}: the administrator's count after raw SQL");
        env.close().await;
    }
}

/// The generator's path: a bulk load into a fresh database (indexes set aside and rebuilt) counts every row.
#[tokio::test]
async fn a_fresh_bulk_load_is_counted() {
    for engine in engines() {
        let env = Env::new(engine).await;
        let org = Org::new(&env.store, "fresh", &PolicyConfig::default()).await;
        let owner = org.user(&env.store, "owner", &[]).await;
        let sys = env.store.unscoped_system_access();
        let mut load = sys.bulk_load(org.id).await.expect("bulk load");
        assert!(load.fresh(), "{engine}: the only organization");
        let rows: Vec<BulkRecord> = (0..2_500).map(|i| BulkRecord { owner, ..customer(&format!("c{i}")) }).collect();
        load.records(C, &rows).await.expect("customers");
        load.records(C, &rows[..500]).await.expect("more customers");
        load.finish().await.expect("finish");
        assert_counts_exact(&env.raw, &[org.id], "a fresh bulk load").await;
        assert_eq!(counts(&env.raw, org.id).await[0], ("customers", 3_000, 3_000), "{engine}");

        // A load that stops before its end (the process died): the next start puts the triggers back and counts.
        let mut load = sys.bulk_load(org.id).await.expect("bulk load again");
        assert!(load.fresh(), "{engine}: still the only organization");
        load.records(Module::Leads, &rows[..40]).await.expect("leads");
        drop(load);
        env.store.close().await;
        let store = open(&env.db.url).await;
        assert_counts_exact(&env.raw, &[org.id], "a bulk load cut short and a restart").await;
        assert_eq!(counts(&env.raw, org.id).await[2], ("leads", 40, 40), "{engine}");
        store.unscoped_system_access().seed_records(org.id, Module::Leads, &named(owner, 2)).await.expect("seed");
        assert_eq!(counts(&env.raw, org.id).await[2], ("leads", 42, 42), "{engine}: counted by the triggers again");
        store.close().await;
        env.raw.close().await;
        drop(env.db);
    }
}

/// Records written before the counts existed (a database migrated from an earlier version) are counted by the
/// migration itself: here the migration is undone by hand over existing rows and applied again by the next start.
#[tokio::test]
async fn the_migration_counts_existing_records() {
    for engine in engines() {
        let env = Env::new(engine).await;
        let a = Org::new(&env.store, "old-a", &PolicyConfig::default()).await;
        let b = Org::new(&env.store, "old-b", &PolicyConfig::default()).await;
        let owner_a = a.user(&env.store, "owner", &[]).await;
        let owner_b = b.user(&env.store, "owner", &[]).await;
        let sys = env.store.unscoped_system_access();
        sys.seed_records(a.id, C, &named(owner_a, 5)).await.expect("seed a");
        sys.seed_records(b.id, C, &named(owner_b, 2)).await.expect("seed b");
        sys.seed_records(b.id, Module::Leads, &named(owner_b, 3)).await.expect("seed leads");
        env.store.close().await;

        // Back to the schema before migration 0011, rows kept.
        if engine == "sqlite" {
            let triggers: Vec<String> = env
                .raw
                .rows("SELECT name FROM sqlite_schema WHERE type = 'trigger' AND name LIKE '%_count_%'")
                .await
                .iter()
                .map(|r| r.get::<String, _>(0))
                .collect();
            assert_eq!(triggers.len(), 18, "insert, delete and move triggers on six tables");
            for t in triggers {
                env.raw.exec(format!("DROP TRIGGER {t}")).await;
            }
        } else {
            for f in
                ["record_counts_inserted", "record_counts_deleted", "record_counts_moved", "record_counts_truncated"]
            {
                // CASCADE drops the triggers that call it.
                env.raw.exec(format!("DROP FUNCTION {f}() CASCADE")).await;
            }
        }
        env.raw.exec("DROP TABLE record_counts").await;
        env.raw.exec("DELETE FROM schema_migrations WHERE version = 11").await;

        let store = open(&env.db.url).await;
        assert_counts_exact(&env.raw, &[a.id, b.id], "the migration over existing rows").await;
        assert_eq!(counts(&env.raw, b.id).await[2], ("leads", 3, 3), "{engine}");
        // And the triggers are back.
        store.unscoped_system_access().seed_records(a.id, C, &named(owner_a, 1)).await.expect("seed after");
        assert_counts_exact(&env.raw, &[a.id, b.id], "a write after the migration").await;
        store.close().await;
        env.raw.close().await;
        drop(env.db);
    }
}

/// Writers at the same time in one organization — API creates and two CSV imports (each many inserts in one
/// transaction) on the pool's several connections — all succeed and are all counted; on PostgreSQL they add to
/// different slots of the count, and two imports never wait on each other's slots in opposite orders.
#[tokio::test]
async fn concurrent_writers_are_all_counted() {
    for engine in engines() {
        let env = Env::new(engine).await;
        let store = &env.store;
        let org = Org::new(store, "busy", &everything()).await;
        org.user(store, "admin", &[1]).await;
        let s = store.scoped(org.sign_in(store, "admin").await);
        let file = |tag: &str| {
            let mut f = String::from("name\n");
            (0..60).for_each(|i| f.push_str(&format!("{tag} {i}\n")));
            f
        };
        let (one, two) = (file("one"), file("two"));
        let create = |name: &'static str| {
            let s = &s;
            async move { s.create(C, &obj(json!({ "name": name }))).await.map(|_| 1) }
        };
        let (i1, i2, c1, c2, c3, c4) = tokio::join!(
            s.import_csv(C, one.as_bytes(), None),
            s.import_csv(C, two.as_bytes(), None),
            create("a"),
            create("b"),
            create("c"),
            create("d"),
        );
        assert_eq!(i1.expect("first import").created + i2.expect("second import").created, 120, "{engine}");
        for c in [c1, c2, c3, c4] {
            c.expect("create");
        }
        assert_counts_exact(&env.raw, &[org.id], "concurrent writers").await;
        assert_eq!(s.count_with_plan(C, &ListQuery::default(), CountPlan::Complement).await.ok(), Some(124));
        env.close().await;
    }
}
