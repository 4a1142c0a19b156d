//! Monitoring in the store: two detectors on one database raise each incident once; the first detector replays the
//! rules' windows of the trail written before it started; the inline guards refuse when the rules cannot be read
//! (fail closed). On every engine of `testdb::engines()`.

use crate::support::*;
use crate::testdb::engines;
use crm_domain::Module;
use crm_store::{AuditEntry, StoreError};
use serde_json::json;

#[tokio::test]
async fn two_detectors_raise_each_incident_once() {
    for engine in engines() {
        let env = Env::new(engine).await;
        let org = Org::new(&env.store, "acme", &scenario_policy()).await;
        let user = org.user(&env.store, "mallory", &[]).await;
        let other = open(&env.db.url).await;
        // The first passes place the shared cursor (and read the little trail there is).
        env.store.monitor_pass().await.expect("pass");
        other.monitor_pass().await.expect("pass");
        let reveal = || AuditEntry::new(org.id, Some(user), "record.reveal").record(Module::Customers, 1);
        let export = |rows: i64| {
            AuditEntry::new(org.id, Some(user), "record.export").module(Module::Customers).detail(json!({"rows": rows}))
        };
        // Reveals spread over time while both detectors race over the same trail.
        for round in 0..12 {
            for _ in 0..5 {
                env.store.append_audit(reveal()).await.expect("append");
            }
            if round % 4 == 0 {
                env.store.append_audit(export(5000 + round)).await.expect("append");
            }
            let (a, b) = tokio::join!(env.store.monitor_pass(), other.monitor_pass());
            a.expect("pass a");
            b.expect("pass b");
        }
        for _ in 0..3 {
            let (a, b) = tokio::join!(env.store.monitor_pass(), other.monitor_pass());
            a.expect("pass a");
            b.expect("pass b");
        }
        let count = |rule: &str| format!("SELECT COUNT(*) FROM alerts WHERE org_id = {} AND rule = '{rule}'", org.id);
        assert_eq!(env.raw.int(count("reveals")).await, 1, "[{engine}] 60 reveals in ten minutes are one incident");
        assert_eq!(env.raw.int(count("large_export")).await, 3, "[{engine}] each large export is an incident");
        let raised = env
            .raw
            .int(format!("SELECT COUNT(*) FROM audit_log WHERE org_id = {} AND action = 'alert.raise'", org.id))
            .await;
        // (On a weekend or at night `off_hours` fires too: once.)
        let alerts = env.raw.int(format!("SELECT COUNT(*) FROM alerts WHERE org_id = {}", org.id)).await;
        assert!((4..=5).contains(&alerts), "[{engine}] {alerts} alerts");
        assert_eq!(raised, alerts, "[{engine}] each alert audited once");
        let reads = env.raw.int(format!("SELECT audit_seq FROM organizations WHERE id = {}", org.id)).await;
        let cursor = env.raw.int(format!("SELECT last_seq FROM monitor_cursor WHERE org_id = {}", org.id)).await;
        assert!(cursor >= reads - alerts, "[{engine}] the cursor followed the trail ({cursor} of {reads})");
        other.close().await;
        env.close().await;
    }
}

#[tokio::test]
async fn inline_guards_fail_closed() {
    for engine in engines() {
        let env = Env::new(engine).await;
        let org = Org::new(&env.store, "acme", &scenario_policy()).await;
        org.user(&env.store, "admin", &[]).await;
        let p = org.sign_in(&env.store, "admin").await;
        env.store.scoped(p.clone()).guard_delete().await.expect("readable rules admit");
        env.store.scoped(p.clone()).guard_export(10).await.expect("a small export is admitted");
        let refused = env.store.scoped(p.clone()).guard_export(5000).await;
        assert!(matches!(refused, Err(StoreError::Blocked(..))), "[{engine}] a large export without step-up");
        // Unreadable rules at a new policy version: both guards refuse.
        env.raw
            .exec(format!(
                "INSERT INTO monitor_rules (org_id, config, version, updated_at, updated_by) VALUES ({}, '{{not json', 1, 0, NULL)",
                org.id
            ))
            .await;
        env.raw
            .exec(format!("UPDATE organizations SET policy_version = policy_version + 1 WHERE id = {}", org.id))
            .await;
        let p = org.sign_in(&env.store, "admin").await;
        assert!(env.store.scoped(p.clone()).guard_delete().await.is_err(), "[{engine}] delete guard fails closed");
        assert!(env.store.scoped(p).guard_export(1).await.is_err(), "[{engine}] export guard fails closed");
        env.close().await;
    }
}

/// Runs detection passes of both stores until the shared cursor reaches the organization's head.
async fn settle(env: &Env, other: &crm_store::Store, org: i64) {
    for _ in 0..50 {
        let (a, b) = tokio::join!(env.store.monitor_pass(), other.monitor_pass());
        a.expect("pass a");
        b.expect("pass b");
        let head = env.raw.int(format!("SELECT audit_seq FROM organizations WHERE id = {org}")).await;
        let cursor =
            env.raw.int(format!("SELECT COALESCE(MAX(last_seq), -1) FROM monitor_cursor WHERE org_id = {org}")).await;
        if cursor >= head {
            return;
        }
    }
    panic!("the detectors did not reach the head of the trail");
}

#[tokio::test]
async fn the_first_detector_replays_recent_history_and_alerts_each_incident_once() {
    for engine in engines() {
        let env = Env::new(engine).await;
        let org = Org::new(&env.store, "acme", &scenario_policy()).await;
        let user = org.user(&env.store, "mallory", &[]).await;
        let export = |rows: i64| {
            AuditEntry::new(org.id, Some(user), "record.export").module(Module::Customers).detail(json!({"rows": rows}))
        };
        // Before any detector ran: a large export three hours ago (outside every window)...
        let old = env.store.append_audit(export(7000)).await.expect("append");
        env.raw
            .exec(format!("UPDATE audit_log SET at = at - 10800000 WHERE org_id = {} AND seq <= {old}", org.id))
            .await;
        // ...and, just now, a large export and twelve reveals of masked fields (threshold 10 in 10 minutes).
        let recent = env.store.append_audit(export(5000)).await.expect("append");
        for _ in 0..12 {
            let e = AuditEntry::new(org.id, Some(user), "record.reveal").record(Module::Customers, 1);
            env.store.append_audit(e).await.expect("append");
        }
        // Two processes start their detectors at once.
        let other = open(&env.db.url).await;
        settle(&env, &other, org.id).await;
        let count = |rule: &str| format!("SELECT COUNT(*) FROM alerts WHERE org_id = {} AND rule = '{rule}'", org.id);
        assert_eq!(env.raw.int(count("reveals")).await, 1, "[{engine}] the reveals before the start are an incident");
        assert_eq!(env.raw.int(count("large_export")).await, 1, "[{engine}] the recent export only, once");
        let trigger = env
            .raw
            .int(format!("SELECT trigger_seq FROM alerts WHERE org_id = {} AND rule = 'large_export'", org.id))
            .await;
        assert_eq!(trigger, recent, "[{engine}] the export of three hours ago is outside every window");
        let alerts = env.raw.int(format!("SELECT COUNT(*) FROM alerts WHERE org_id = {}", org.id)).await;
        // A detector that starts over without the shared cursor (as if none had run) repeats no alert.
        env.raw.exec(format!("DELETE FROM monitor_cursor WHERE org_id = {}", org.id)).await;
        settle(&env, &other, org.id).await;
        let again = env.raw.int(format!("SELECT COUNT(*) FROM alerts WHERE org_id = {}", org.id)).await;
        assert_eq!(again, alerts, "[{engine}] incidents already alerted are not alerted again");
        other.close().await;
        env.close().await;
    }
}
