//! The audit trail, on every engine: every event comes from the real operation; a change and its entry commit
//! together (a failed write leaves no entry, a failed audit insert leaves no write); tampering with rows directly
//! is named with its position and kind; concurrent appenders keep one gap-free chain; the audit view applies the
//! permission model; checkpoints, archives and purges keep the trail verifiable.

use crate::support::*;
use crate::testdb::engines;
use crm_domain::{Action, DeptId, Level, Module, OrgId, UserId};
use crm_policy::{FieldAccess, PolicyConfig, Scope, ShareKey, UserStatus};
use crm_store::{
    AuditPublicKey, AuditQuery, AuditSigner, ListQuery, RequestContext, StoreError, StoredEntry, TamperKind, UserPatch,
    VerifyOptions, verify_archive, with_request_context,
};
use serde_json::{Value, json};
use sqlx::Row;

const C: Module = Module::Customers;
const K: Module = Module::Contacts;
const AUDITOR: i64 = 3;
const DELEGATE: i64 = 4;
const ADMIN: i64 = 5;
const NARROW_AUDITOR: i64 = 6;

/// The scenario policy plus: an auditor (audit view and export over everyone, customers readable in full), a
/// delegated auditor (audit over their department tree; customers readable with e-mail hidden and phone masked),
/// an administrator, and an auditor who reads only their own customers.
fn policy() -> PolicyConfig {
    let mut p = scenario_policy();
    let auditor = allow(role(AUDITOR, "auditor"), Module::Audit, &[Action::View, Action::Export], Scope::All);
    let auditor = allow(auditor, C, &[Action::View], Scope::All);
    let auditor = allow(auditor, K, &[Action::View], Scope::All);
    let delegate = allow(role(DELEGATE, "delegate"), Module::Audit, &[Action::View], Scope::DepartmentTree);
    let delegate = allow(delegate, C, &[Action::View], Scope::All);
    let delegate = field(delegate, C, "email", FieldAccess::Hidden);
    let delegate = field(delegate, C, "phone", FieldAccess::Masked);
    let mut admin = role(ADMIN, "admin");
    for m in [Module::Users, Module::Roles, Module::Sharing, Module::Audit, C, K] {
        admin = allow(admin, m, &Action::ALL, Scope::All);
    }
    admin.view_all = true;
    admin.modify_all = true;
    let narrow = allow(role(NARROW_AUDITOR, "narrow"), Module::Audit, &[Action::View], Scope::All);
    let narrow = allow(narrow, C, &[Action::View], Scope::Own);
    p.roles.extend([auditor, delegate, admin, narrow]);
    p
}

/// Entries of `org` after `seq`, as stored.
async fn entries_after(env: &Env, org: OrgId, seq: i64) -> Vec<StoredEntry> {
    env.raw
        .rows(format!(
            "SELECT org_id, seq, at, actor_id, subject_id, session_id, action, module, record_id, target, outcome, detail, request_id, ip, \
             user_agent, prev_hash, hash, hash_format FROM audit_log WHERE org_id = {org} AND seq > {seq} ORDER BY seq"
        ))
        .await
        .iter()
        .map(|r| StoredEntry {
            org_id: r.get("org_id"),
            seq: r.get("seq"),
            at: r.get("at"),
            actor_id: r.get("actor_id"),
            subject_id: r.get("subject_id"),
            session_id: r.get("session_id"),
            action: r.get("action"),
            module: r.get("module"),
            record_id: r.get("record_id"),
            target: r.get("target"),
            outcome: r.get("outcome"),
            detail: r.get("detail"),
            request_id: r.get("request_id"),
            ip: r.get("ip"),
            user_agent: r.get("user_agent"),
            prev_hash: r.get("prev_hash"),
            hash: r.get("hash"),
            hash_format: r.get("hash_format"),
        })
        .collect()
}

fn detail(e: &StoredEntry) -> Value {
    serde_json::from_str(&e.detail).expect("detail is JSON")
}

#[track_caller]
fn one<'a>(entries: &'a [StoredEntry], action: &str) -> &'a StoredEntry {
    let found: Vec<&StoredEntry> = entries.iter().filter(|e| e.action == action).collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {action} entry, got {}: {:#?}",
        found.len(),
        entries.iter().map(|e| &e.action).collect::<Vec<_>>()
    );
    found[0]
}

async fn user_in(env: &Env, org: &Org, name: &str, dept: DeptId, roles: &[i64]) -> UserId {
    let id = org.user(&env.store, name, roles).await;
    env.store.unscoped_system_access().set_user_departments(org.id, None, id, &[dept]).await.expect("department");
    id
}

#[tokio::test]
async fn every_event_comes_from_the_real_operation() {
    for engine in engines() {
        let env = Env::new(engine).await;
        let store = &env.store;
        let sys = store.unscoped_system_access();
        let org = Org::new(store, "events", &policy()).await;
        let admin = org.user(store, "boss", &[ADMIN]).await;
        let li = org.user(store, "li", &[MANAGER]).await;
        let wang = org.user(store, "wang", &[MANAGER]).await;
        let seq0 = env.raw.audit_seq(org.id).await;

        let ctx = RequestContext::new(Some("req-42".into()), Some("203.0.113.7".into()), Some("tests/1.0".into()));
        with_request_context(ctx, async {
            // Sign-in: success (a session), failure (wrong password), sign-out.
            let signed = sys
                .sign_in(Some("events"), "li", "pw-li-Secret-42", Some("203.0.113.7".into()), Some("tests/1.0".into()))
                .await
                .unwrap();
            let p = sys.authenticate(&signed.token).await.unwrap().unwrap();
            let _ = sys
                .sign_in(Some("events"), "li", "wrong", Some("198.51.100.1".into()), Some("curl".into()))
                .await
                .unwrap_err();
            let s = store.scoped(p.clone());

            // Writes and reads through the scoped handle.
            let a = id_of(
                &s.create(C, &obj(json!({"name": "A", "email": "a@example.com", "phone": "13812345678"})))
                    .await
                    .unwrap(),
            );
            s.update(C, a, &obj(json!({"industry": "finance"}))).await.unwrap();
            let k = id_of(&s.create(K, &obj(json!({"name": "Zhang", "account_id": a}))).await.unwrap());
            s.get(C, a).await.unwrap();
            s.list(C, &ListQuery { q: Some("A".into()), ..ListQuery::default() }).await.unwrap();
            s.count(C, &ListQuery::default()).await.unwrap();
            s.related(C, a, K, &ListQuery::default()).await.unwrap();
            s.explain_own(C, Action::Edit, a).await.unwrap();
            s.export_csv(C, &ListQuery::default()).await.unwrap();
            s.share(C, a, ShareKey::User(wang), Level::Read).await.unwrap();
            s.set_team_member(C, a, wang, Some(Level::Edit)).await.unwrap();
            s.delete(K, k).await.unwrap();
            let m = store.scoped(org.sign_in(store, "wang").await);
            m.reveal(C, a, "phone").await.unwrap();

            // Administration through the permission-checked handle.
            let b = store.scoped(sys.principal_for(org.id, admin).await.unwrap());
            let team = b.admin_create_department(org.dept, "华东").await.unwrap();
            // The next request sees the new department.
            let b = store.scoped(sys.principal_for(org.id, admin).await.unwrap());
            b.admin_update_user(
                wang,
                &UserPatch { departments: Some(vec![team]), roles: Some(vec![MANAGER, SALES]), ..Default::default() },
            )
            .await
            .unwrap();
            b.admin_update_user(
                wang,
                &UserPatch { manager_id: Some(Some(admin)), status: Some(UserStatus::Locked), ..Default::default() },
            )
            .await
            .unwrap();
            let mut changed = policy();
            changed.roles.retain(|r| r.id != NARROW_AUDITOR);
            b.admin_set_policy(&changed, false).await.unwrap();
            b.audit_query(&AuditQuery::default()).await.unwrap();
            // Administrators' reads of people and access are data access too.
            b.admin_users().await.unwrap();
            b.admin_policy().await.unwrap();
            b.explain_for(wang, C, Action::View, a).await.unwrap();
            b.who_can_see(C, a).await.unwrap();
            b.effective_permissions(wang).await.unwrap();
            sys.sign_out(&p).await.unwrap();
        })
        .await;

        let entries = entries_after(&env, org.id, seq0).await;
        let ok = |e: &StoredEntry| e.outcome == "success";
        let signed =
            entries.iter().find(|e| e.action == "session.sign_in" && e.outcome == "success").expect("sign-in entry");
        assert_eq!((signed.actor_id, signed.subject_id), (Some(li), Some(li)), "{engine}");
        assert!(signed.session_id.is_some(), "{engine}: the session is named");
        assert_eq!(signed.ip.as_deref(), Some("203.0.113.7"));
        assert_eq!(signed.user_agent.as_deref(), Some("tests/1.0"));
        assert_eq!(signed.request_id.as_deref(), Some("req-42"), "{engine}: the request id");
        let failed = entries
            .iter()
            .find(|e| e.action == "session.sign_in" && e.outcome == "failure")
            .unwrap_or_else(|| panic!("{engine}: no failed sign-in entry: {entries:#?}"));
        assert_eq!((failed.actor_id, failed.subject_id), (None, Some(li)), "{engine}");
        assert_eq!((failed.ip.as_deref(), failed.user_agent.as_deref()), (Some("198.51.100.1"), Some("curl")));
        let session = signed.session_id;
        let out = one(&entries, "session.sign_out");
        assert_eq!((out.actor_id, out.session_id), (Some(li), session), "{engine}");

        let create =
            entries.iter().find(|e| e.action == "record.create" && e.module.as_deref() == Some("customers")).unwrap();
        assert_eq!(
            detail(create)["after"]["email"],
            json!("a@example.com"),
            "{engine}: clear values are kept; views redact"
        );
        assert_eq!(create.session_id, session, "{engine}: writes name the session");
        assert_eq!(create.request_id.as_deref(), Some("req-42"));
        let update = one(&entries, "record.update");
        assert_eq!(detail(update)["before"], json!({"industry": null}));
        assert_eq!(detail(update)["after"], json!({"industry": "finance"}));
        let a = create.record_id.unwrap();
        assert_eq!(one(&entries, "record.view").record_id, Some(a));
        let list = one(&entries, "record.list");
        assert_eq!(
            (detail(list)["rows"].clone(), detail(list)["ids"].clone(), detail(list)["query"]["q"].clone()),
            (json!(1), json!([a]), json!("A"))
        );
        assert_eq!(detail(one(&entries, "record.count"))["count"], json!(1));
        let related = one(&entries, "record.related");
        assert_eq!(
            (related.module.as_deref(), detail(related)["parent"].clone()),
            (Some("contacts"), json!({"module": "customers", "id": a}))
        );
        assert_eq!(detail(one(&entries, "record.explain"))["action"], json!("edit"));
        let export = one(&entries, "record.export");
        assert_eq!((detail(export)["rows"].clone(), detail(export)["ids"].clone()), (json!(1), json!([a])), "{engine}");
        assert_eq!(detail(one(&entries, "record.share"))["level"], json!("read"));
        assert_eq!(detail(one(&entries, "record.team"))["user"], json!(wang));
        assert_eq!(detail(one(&entries, "record.delete"))["before"]["name"], json!("Zhang"));
        let reveal = one(&entries, "record.reveal");
        assert_eq!(
            (reveal.actor_id, reveal.record_id, detail(reveal)["field"].clone()),
            (Some(wang), Some(a), json!("phone"))
        );
        assert!(one(&entries, "department.create").target.as_deref().is_some_and(|t| t.starts_with("department:")));
        for action in ["user.departments", "user.roles", "user.manager", "user.status"] {
            let e = one(&entries, action);
            assert_eq!((e.actor_id, e.subject_id), (Some(admin), Some(wang)), "{engine}: {action}");
        }
        for action in ["admin.users.read", "admin.policy.read", "admin.who_can_see"] {
            assert_eq!(one(&entries, action).actor_id, Some(admin), "{engine}: {action}");
        }
        let explain = one(&entries, "admin.explain");
        assert_eq!((explain.subject_id, explain.record_id), (Some(wang), Some(a)), "{engine}");
        assert_eq!(one(&entries, "admin.permissions.read").subject_id, Some(wang), "{engine}");
        assert!(
            detail(one(&entries, "admin.who_can_see"))["users"].as_array().is_some_and(|u| u.contains(&json!(li))),
            "{engine}: who can see names the owner"
        );
        let pol = one(&entries, "policy.update");
        let removed = &detail(pol)["changes"]["roles"]["removed"];
        assert_eq!(
            removed[0]["id"],
            json!(NARROW_AUDITOR),
            "{engine}: the policy change names what changed: {removed}"
        );
        assert_eq!(detail(one(&entries, "audit.query"))["query"], json!(AuditQuery::default()));
        assert!(entries.iter().filter(|e| e.action != "session.sign_in").all(ok), "{engine}");
        // Every entry carries the organization in its hash and the chain verifies.
        assert_eq!(sys.verify_audit(org.id).await.unwrap(), None, "{engine}");
        env.close().await;
    }
}

#[tokio::test]
async fn a_failed_write_leaves_no_entry_and_a_failed_audit_insert_leaves_no_write() {
    for engine in engines() {
        let env = Env::new(engine).await;
        let store = &env.store;
        let sys = store.unscoped_system_access();
        let org = Org::new(store, "atomic", &policy()).await;
        let li = org.user(store, "li", &[SALES]).await;
        let s = store.scoped(org.sign_in(store, "li").await);
        let a = id_of(&s.create(C, &obj(json!({"name": "A"}))).await.unwrap());

        // A refused write: nothing written, no entry.
        let seq = env.raw.audit_seq(org.id).await;
        assert!(matches!(s.update(C, a, &obj(json!({"nonsense": 1}))).await, Err(StoreError::Invalid(_))));
        assert!(s.create(C, &obj(json!({"name": "B", "owner_id": 999_999}))).await.is_err());
        assert_eq!(env.raw.audit_seq(org.id).await, seq, "{engine}: a refused write left an entry");
        assert_eq!(env.raw.count("customers", org.id).await, 1);

        // The audit insert fails: the change it belongs to is rolled back.
        match engine {
            "sqlite" => {
                env.raw.exec("CREATE TRIGGER audit_down BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'audit down'); END").await;
            }
            _ => {
                env.raw
                    .exec("CREATE FUNCTION audit_down() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'audit down'; END $$ LANGUAGE plpgsql")
                    .await;
                env.raw.exec("CREATE TRIGGER audit_down BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION audit_down()").await;
            }
        }
        let version = env.raw.int(format!("SELECT policy_version FROM organizations WHERE id = {}", org.id)).await;
        assert!(s.create(C, &obj(json!({"name": "B"}))).await.is_err(), "{engine}: create without its entry");
        assert!(s.update(C, a, &obj(json!({"industry": "x"}))).await.is_err(), "{engine}: update without its entry");
        assert!(s.delete(C, a).await.is_err(), "{engine}: delete without its entry");
        assert!(sys.set_user_status(org.id, None, li, UserStatus::Locked).await.is_err());
        assert!(sys.set_policy(org.id, None, &policy()).await.is_err());
        assert!(s.get(C, a).await.is_err(), "{engine}: a read is not answered without its durable entry");
        assert!(s.list(C, &ListQuery::default()).await.is_err(), "{engine}: nor a list");
        assert_eq!(env.raw.count("customers", org.id).await, 1, "{engine}");
        let industry = env.raw.rows(format!("SELECT industry FROM customers WHERE id = {a}")).await[0]
            .get::<Option<String>, _>("industry");
        assert_eq!(industry, None, "{engine}: the update was rolled back");
        assert_eq!(
            env.raw.int(format!("SELECT policy_version FROM organizations WHERE id = {}", org.id)).await,
            version
        );
        assert_eq!(
            env.raw.rows(format!("SELECT status FROM users WHERE id = {li}")).await[0].get::<String, _>("status"),
            "active"
        );
        assert_eq!(env.raw.audit_seq(org.id).await, seq, "{engine}: no sequence number was used up");

        env.raw
            .exec("DROP TRIGGER audit_down".to_string() + if engine == "sqlite" { "" } else { " ON audit_log" })
            .await;
        s.update(C, a, &obj(json!({"industry": "x"}))).await.unwrap();
        assert_eq!(env.raw.audit_seq(org.id).await, seq + 1);
        assert_eq!(sys.verify_audit(org.id).await.unwrap(), None, "{engine}");
        env.close().await;
    }
}

/// A trail of a few dozen entries in `org`, with a checkpoint signed by `signer` in the middle.
async fn trail(env: &Env, slug: &str, signer: Option<&AuditSigner>) -> (OrgId, i64) {
    let store = &env.store;
    let org = Org::new(store, slug, &policy()).await;
    org.user(store, "li", &[SALES]).await;
    let s = store.scoped(org.sign_in(store, "li").await);
    for i in 0..12 {
        let id = id_of(&s.create(C, &obj(json!({"name": format!("C{i}")}))).await.unwrap());
        s.get(C, id).await.unwrap();
        if i == 3
            && let Some(k) = signer
        {
            store.unscoped_system_access().audit_checkpoint(org.id, k).await.unwrap().expect("a checkpoint");
        }
    }
    (org.id, env.raw.audit_seq(org.id).await)
}

async fn backup(env: &Env, org: OrgId) {
    env.raw.exec("DROP TABLE IF EXISTS audit_backup").await;
    env.raw.exec(format!("CREATE TABLE audit_backup AS SELECT * FROM audit_log WHERE org_id = {org}")).await;
}

async fn restore(env: &Env, org: OrgId) {
    env.raw.exec(format!("DELETE FROM audit_log WHERE org_id = {org}")).await;
    env.raw.exec("INSERT INTO audit_log SELECT * FROM audit_backup").await;
}

async fn first_problem(env: &Env, org: OrgId, keys: Option<Vec<AuditPublicKey>>) -> Option<(i64, TamperKind, String)> {
    let opts = VerifyOptions { keys, ..Default::default() };
    let r = env.store.unscoped_system_access().verify_audit_trail(org, &opts).await.unwrap();
    r.problem.map(|p| (p.seq, p.kind, p.detail))
}

#[tokio::test]
async fn tampering_is_named_with_its_position_and_kind() {
    for engine in engines() {
        let env = Env::new(engine).await;
        let signer = AuditSigner::generate();
        env.store.unscoped_system_access().register_audit_key(signer.public_key()).await.unwrap();
        let (org, head) = trail(&env, "tamper", Some(&signer)).await;
        let (bystander, _) = trail(&env, "bystander", None).await;
        assert!(head > 25, "{engine}: {head}");
        assert_eq!(first_problem(&env, org, None).await, None, "{engine}");
        backup(&env, org).await;
        let w = |sql: String| sql.replace("{org}", &org.to_string());
        let check = async |what: &str, expected: (i64, TamperKind)| {
            let got = first_problem(&env, org, None).await.unwrap_or_else(|| panic!("{engine}: {what} not detected"));
            assert_eq!((got.0, got.1), expected, "{engine}: {what}: {}", got.2);
            assert_eq!(
                first_problem(&env, bystander, None).await,
                None,
                "{engine}: {what} spilled into another organization"
            );
            restore(&env, org).await;
            assert_eq!(first_problem(&env, org, None).await, None, "{engine}: restored after {what}");
        };

        // Edited: content, actor, time, organization of the hash.
        env.raw
            .exec(w("UPDATE audit_log SET detail = '{\"forged\":true}' WHERE org_id = {org} AND seq = 10".into()))
            .await;
        check("an edited detail", (10, TamperKind::Modified)).await;
        env.raw.exec(w("UPDATE audit_log SET actor_id = NULL WHERE org_id = {org} AND seq = 11".into())).await;
        check("an edited actor", (11, TamperKind::Modified)).await;
        env.raw.exec(w("UPDATE audit_log SET hash = 'deadbeef' WHERE org_id = {org} AND seq = 12".into())).await;
        check("an edited hash", (12, TamperKind::Modified)).await;

        // Deleted: a hole, and a hole hidden by renumbering the later entries.
        env.raw.exec(w("DELETE FROM audit_log WHERE org_id = {org} AND seq = 14".into())).await;
        check("a deleted entry", (14, TamperKind::Deleted)).await;
        env.raw.exec(w("DELETE FROM audit_log WHERE org_id = {org} AND seq = 15".into())).await;
        env.raw.exec(w("UPDATE audit_log SET seq = -seq WHERE org_id = {org} AND seq > 15".into())).await;
        env.raw.exec(w("UPDATE audit_log SET seq = -seq - 1 WHERE org_id = {org} AND seq < 0".into())).await;
        check("a deleted entry with renumbering", (15, TamperKind::Deleted)).await;

        // Inserted: later entries moved up one, and a row put in the gap (carelessly, then with a correct hash).
        for careful in [false, true] {
            env.raw.exec(w("UPDATE audit_log SET seq = -seq WHERE org_id = {org} AND seq >= 17".into())).await;
            env.raw.exec(w("UPDATE audit_log SET seq = -seq + 1 WHERE org_id = {org} AND seq < 0".into())).await;
            let prev: String =
                env.raw.rows(w("SELECT hash FROM audit_log WHERE org_id = {org} AND seq = 16".into())).await[0]
                    .get("hash");
            let mut forged = StoredEntry {
                org_id: org,
                seq: 17,
                at: 1,
                actor_id: None,
                subject_id: None,
                session_id: None,
                action: "record.view".into(),
                module: None,
                record_id: None,
                target: None,
                outcome: "success".into(),
                detail: "{}".into(),
                request_id: None,
                ip: None,
                user_agent: None,
                prev_hash: prev,
                hash: "f0rged".into(),
                hash_format: 2,
            };
            if careful {
                forged.hash = forged.compute_hash(&mut Vec::new());
            }
            env.raw
                .exec(format!(
                    "INSERT INTO audit_log (org_id, seq, at, action, outcome, detail, prev_hash, hash, hash_format) VALUES ({org}, 17, 1, 'record.view', 'success', '{{}}', '{}', '{}', 2)",
                    forged.prev_hash, forged.hash
                ))
                .await;
            check(
                if careful { "an inserted entry with a correct hash" } else { "an inserted entry" },
                (17, TamperKind::Inserted),
            )
            .await;
        }

        // Reordered: two entries swap places.
        env.raw.exec(w("UPDATE audit_log SET seq = -1 WHERE org_id = {org} AND seq = 20".into())).await;
        env.raw.exec(w("UPDATE audit_log SET seq = 20 WHERE org_id = {org} AND seq = 21".into())).await;
        env.raw.exec(w("UPDATE audit_log SET seq = 21 WHERE org_id = {org} AND seq = -1".into())).await;
        check("two swapped entries", (20, TamperKind::Reordered)).await;

        // Truncated: the newest entries removed (the organization's head still names them).
        env.raw.exec(format!("DELETE FROM audit_log WHERE org_id = {org} AND seq > {}", head - 3)).await;
        check("a truncated trail", (head - 2, TamperKind::Truncated)).await;

        // A rewrite that recomputes every hash after an edit passes the links, but not the signed checkpoint.
        let mut rows = entries_after(&env, org, 0).await;
        let checkpoint = env.raw.int(format!("SELECT MAX(seq) FROM audit_checkpoints WHERE org_id = {org}")).await;
        assert!(checkpoint > 5, "{engine}");
        rows[2].detail = "{\"rewritten\":true}".into();
        let mut prev = rows[1].hash.clone();
        for r in rows.iter_mut().skip(2) {
            r.prev_hash = prev;
            r.hash = r.compute_hash(&mut Vec::new());
            prev = r.hash.clone();
            env.raw
                .exec(format!(
                    "UPDATE audit_log SET detail = '{}', prev_hash = '{}', hash = '{}' WHERE org_id = {org} AND seq = {}",
                    r.detail.replace('\'', "''"),
                    r.prev_hash,
                    r.hash,
                    r.seq
                ))
                .await;
        }
        let old_head: String =
            env.raw.rows(format!("SELECT audit_head FROM organizations WHERE id = {org}")).await[0].get("audit_head");
        env.raw.exec(format!("UPDATE organizations SET audit_head = '{prev}' WHERE id = {org}")).await;
        let got = first_problem(&env, org, None).await.expect("a rewritten chain");
        assert_eq!((got.0, got.1), (1, TamperKind::Modified), "{engine}: a rewritten chain: {}", got.2);
        assert!(got.2.contains("signed checkpoint"), "{engine}: {}", got.2);
        restore(&env, org).await;
        env.raw.exec(format!("UPDATE organizations SET audit_head = '{old_head}' WHERE id = {org}")).await;
        assert_eq!(first_problem(&env, org, None).await, None, "{engine}");

        // A forged checkpoint, and a checkpoint checked against another key.
        env.raw.exec(format!("UPDATE audit_checkpoints SET head = 'abc' WHERE org_id = {org}")).await;
        let got = first_problem(&env, org, None).await.expect("forged checkpoint");
        assert_eq!((got.0, got.1), (checkpoint, TamperKind::Checkpoint), "{engine}: {}", got.2);
        env.raw.exec(format!("UPDATE audit_checkpoints SET head = (SELECT hash FROM audit_log WHERE org_id = {org} AND seq = {checkpoint}) WHERE org_id = {org}")).await;
        assert_eq!(
            first_problem(&env, org, Some(vec![signer.public_key().clone()])).await,
            None,
            "{engine}: the exported key verifies"
        );
        let other = AuditSigner::generate();
        let got = first_problem(&env, org, Some(vec![other.public_key().clone()])).await.expect("untrusted key");
        assert_eq!((got.0, got.1), (checkpoint, TamperKind::Checkpoint), "{engine}");
        env.raw.exec("DROP TABLE audit_backup").await;
        env.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appenders_keep_one_gap_free_chain() {
    for engine in engines() {
        let env = Env::new(engine).await;
        let org = Org::new(&env.store, "busy", &policy()).await;
        org.user(&env.store, "li", &[SALES]).await;
        // Two stores on one database: two pools and two group committers, as two server processes have.
        let other = open(&env.db.url).await;
        let mut tasks = Vec::new();
        // The appenders keep going (at least 15 requests each) until the verifier below is done.
        let verifying = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        for (i, store) in [env.store.clone(), other.clone()].into_iter().cycle().take(8).enumerate() {
            let p = org.sign_in(&store, "li").await;
            let verifying = verifying.clone();
            tasks.push(tokio::spawn(async move {
                let s = store.scoped(p);
                let mut n = 0;
                while n < 15 || verifying.load(std::sync::atomic::Ordering::Relaxed) {
                    if n % 5 == 0 {
                        s.create(C, &obj(json!({"name": format!("T{i}-{n}")}))).await.unwrap();
                    } else {
                        s.count(C, &ListQuery::default()).await.unwrap();
                    }
                    n += 1;
                }
            }));
        }
        // Verification while the appends run finds nothing wrong: appends that land during it are not "inserted".
        let verifier = {
            let store = env.store.clone();
            let org = org.id;
            let verifying = verifying.clone();
            tokio::spawn(async move {
                let mut runs = 0;
                let mut problems = Vec::new();
                for _ in 0..40 {
                    let r = store.unscoped_system_access().verify_audit_trail(org, &VerifyOptions::default()).await;
                    match r {
                        Ok(r) => problems.extend(r.problem.map(|p| p.message())),
                        Err(e) => problems.push(e.to_string()),
                    }
                    runs += 1;
                }
                verifying.store(false, std::sync::atomic::Ordering::Relaxed);
                (runs, problems)
            })
        };
        for t in tasks {
            t.await.unwrap();
        }
        let (runs, problems) = verifier.await.unwrap();
        assert!(runs > 0 && problems.is_empty(), "{engine}: verification during appends reported {problems:?}");
        let head = env.raw.audit_seq(org.id).await;
        assert_eq!(
            env.raw.int(format!("SELECT COUNT(*) FROM audit_log WHERE org_id = {}", org.id)).await,
            head,
            "{engine}"
        );
        assert_eq!(env.raw.int(format!("SELECT MIN(seq) FROM audit_log WHERE org_id = {}", org.id)).await, 1);
        assert_eq!(env.raw.int(format!("SELECT MAX(seq) FROM audit_log WHERE org_id = {}", org.id)).await, head);
        assert!(head >= 8 * 15, "{engine}: {head}");
        assert_eq!(env.store.unscoped_system_access().verify_audit(org.id).await.unwrap(), None, "{engine}");
        // A row written past the organization's head was never appended.
        let org_id = org.id;
        env.raw
            .exec(format!(
                "INSERT INTO audit_log (org_id, seq, at, action, outcome, detail, prev_hash, hash, hash_format) \
                 SELECT org_id, seq + 1, at, 'record.view', 'success', '{{}}', hash, 'f0rged', 2 FROM audit_log \
                 WHERE org_id = {org_id} AND seq = {head}"
            ))
            .await;
        let problem = first_problem(&env, org.id, None).await.map(|(seq, kind, _)| (seq, kind));
        assert_eq!(problem, Some((head + 1, TamperKind::Inserted)), "{engine}");
        other.close().await;
        env.close().await;
    }
}

#[tokio::test]
async fn the_audit_view_applies_scope_and_field_permissions() {
    for engine in engines() {
        let env = Env::new(engine).await;
        let store = &env.store;
        let sys = store.unscoped_system_access();
        let org = Org::new(store, "view", &policy()).await;
        let a = sys.create_department(org.id, Some(org.dept), "A").await.unwrap();
        let a1 = sys.create_department(org.id, Some(a), "A1").await.unwrap();
        let b = sys.create_department(org.id, Some(org.dept), "B").await.unwrap();
        let sales_a = user_in(&env, &org, "sales.a", a1, &[MANAGER]).await;
        let sales_b = user_in(&env, &org, "sales.b", b, &[MANAGER]).await;
        user_in(&env, &org, "auditor", org.dept, &[AUDITOR]).await;
        user_in(&env, &org, "delegate", a, &[DELEGATE]).await;
        user_in(&env, &org, "narrow", org.dept, &[NARROW_AUDITOR]).await;
        let sa = store.scoped(org.sign_in(store, "sales.a").await);
        let x = id_of(
            &sa.create(C, &obj(json!({"name": "X", "email": "x@example.com", "phone": "13812345678"}))).await.unwrap(),
        );
        let sb = store.scoped(org.sign_in(store, "sales.b").await);
        let y = id_of(&sb.create(C, &obj(json!({"name": "Y", "email": "y@example.com"}))).await.unwrap());
        sb.list(C, &ListQuery::default()).await.unwrap();

        let auditor = store.scoped(org.sign_in(store, "auditor").await);
        let all = auditor
            .audit_query(&AuditQuery { action: Some("record.create".into()), ..Default::default() })
            .await
            .unwrap();
        let created: Vec<(Option<i64>, Option<i64>)> = all.items.iter().map(|e| (e.actor_id, e.record_id)).collect();
        assert_eq!(created, vec![(Some(sales_b), Some(y)), (Some(sales_a), Some(x))], "{engine}: newest first");
        assert_eq!(all.items[1].detail["after"]["email"], json!("x@example.com"), "{engine}: the auditor reads e-mail");

        // The delegated auditor: only their department tree's actors; e-mail hidden, phone masked.
        let delegate = store.scoped(org.sign_in(store, "delegate").await);
        let page =
            delegate.audit_query(&AuditQuery { module: Some("customers".into()), ..Default::default() }).await.unwrap();
        assert!(!page.items.is_empty());
        assert!(
            page.items.iter().all(|e| e.actor_id == Some(sales_a)),
            "{engine}: events of actors outside the scope leaked"
        );
        let create = page.items.iter().find(|e| e.action == "record.create").expect("the create of X");
        assert_eq!(create.detail["after"].get("email"), None, "{engine}: a hidden field in an audit value");
        assert_eq!(create.detail["after"]["phone"], json!("138****5678"), "{engine}: masked");
        let text = serde_json::to_string(&page).unwrap();
        assert!(!text.contains("x@example.com") && !text.contains("13812345678"), "{engine}: {text}");

        // An auditor who may read only their own customers sees the events, not the records' values.
        let narrow = store.scoped(org.sign_in(store, "narrow").await);
        let page =
            narrow.audit_query(&AuditQuery { action: Some("record.".into()), ..Default::default() }).await.unwrap();
        assert!(page.items.iter().any(|e| e.action == "record.create"));
        for e in &page.items {
            assert_eq!(e.record_id, None, "{engine}: a record id the viewer may not read");
            assert!(!e.detail.to_string().contains("example.com"), "{engine}: {}", e.detail);
            if let Some(ids) = e.detail.get("ids") {
                assert_eq!(ids, &json!([]), "{engine}");
            }
        }
        // Without the audit module the trail does not exist for the user.
        assert!(matches!(sa.audit_query(&AuditQuery::default()).await, Err(StoreError::NotFound)));
        assert!(matches!(delegate.audit_export(&AuditQuery::default(), "csv").await, Err(StoreError::Forbidden(_))));

        // Filters and keyset pagination.
        let auditor_ref = &auditor;
        let by = |q: AuditQuery| async move { auditor_ref.audit_query(&q).await.unwrap().items };
        assert!(
            by(AuditQuery { actor: Some(sales_b), ..Default::default() })
                .await
                .iter()
                .all(|e| e.actor_id == Some(sales_b))
        );
        let rec = by(AuditQuery { module: Some("customers".into()), record: Some(x), ..Default::default() }).await;
        assert!(!rec.is_empty() && rec.iter().all(|e| e.record_id == Some(x)));
        assert!(by(AuditQuery { outcome: Some("failure".into()), ..Default::default() }).await.is_empty());
        assert!(by(AuditQuery { from: Some(i64::MAX - 1), ..Default::default() }).await.is_empty());
        assert!(
            by(AuditQuery { action: Some("session.".into()), ..Default::default() })
                .await
                .iter()
                .all(|e| e.action.starts_with("session."))
        );
        // (Record events only: every query adds an `audit.query` entry of its own.)
        let whole = by(AuditQuery { limit: Some(500), action: Some("record.".into()), ..Default::default() }).await;
        let mut walked = Vec::new();
        let mut q = AuditQuery { limit: Some(2), action: Some("record.".into()), ..Default::default() };
        loop {
            let page = auditor.audit_query(&q).await.unwrap();
            walked.extend(page.items.iter().map(|e| e.seq));
            match page.next_cursor {
                Some(c) => q.after = Some(c),
                None => break,
            }
        }
        let expected: Vec<i64> = whole.iter().map(|e| e.seq).collect();
        assert_eq!(walked, expected, "{engine}: pages repeat or skip");
        assert!(walked.len() >= 3);

        // Export: CSV with a header, JSON Lines one event per line; both recorded.
        let admin = user_in(&env, &org, "admin", org.dept, &[ADMIN]).await;
        let boss = store.scoped(sys.principal_for(org.id, admin).await.unwrap());
        let (csv, n) = boss
            .audit_export(&AuditQuery { action: Some("record.create".into()), ..Default::default() }, "csv")
            .await
            .unwrap();
        assert_eq!(n, 2);
        assert!(csv.starts_with("seq,time,actor_id"), "{engine}: {csv}");
        assert_eq!(csv.lines().count(), 3);
        let (jsonl, n) = boss.audit_export(&AuditQuery::default(), "jsonl").await.unwrap();
        assert_eq!(jsonl.lines().count(), n);
        for l in jsonl.lines() {
            let v: Value = serde_json::from_str(l).unwrap();
            assert!(v["seq"].as_i64().is_some());
        }
        let seq = env.raw.audit_seq(org.id).await;
        let last: String =
            env.raw.rows(format!("SELECT action FROM audit_log WHERE org_id = {} AND seq = {seq}", org.id)).await[0]
                .get("action");
        assert_eq!(last, "audit.export", "{engine}");
        env.close().await;
    }
}

#[tokio::test]
async fn checkpoints_archives_and_purges_keep_the_trail_verifiable() {
    for engine in engines() {
        let env = Env::new(engine).await;
        let sys = env.store.unscoped_system_access();
        let signer = AuditSigner::generate();
        sys.register_audit_key(signer.public_key()).await.unwrap();
        let (org, head) = trail(&env, "keep", Some(&signer)).await;
        let keys = vec![AuditPublicKey::parse(&signer.public_key().to_text()).unwrap()];
        let cp = sys.audit_checkpoint(org, &signer).await.unwrap().expect("a checkpoint at the head");
        assert_eq!(cp.seq, head);
        assert_eq!(sys.audit_checkpoint(org, &signer).await.unwrap(), None, "{engine}: nothing new to sign");
        let report = sys
            .verify_audit_trail(org, &VerifyOptions { keys: Some(keys.clone()), ..Default::default() })
            .await
            .unwrap();
        assert_eq!(
            (report.problem.clone(), report.signed_through, report.entries as i64),
            (None, head, head),
            "{engine}"
        );

        // Retention is per organization and audited.
        sys.set_audit_retention(org, None, Some(30)).await.unwrap();
        assert_eq!(sys.audit_retention(org).await.unwrap(), Some(30));

        // Purge everything but the last entries: only after the archive is written; the rest still verifies.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keep.jsonl");
        let cut: i64 =
            env.raw.int(format!("SELECT at FROM audit_log WHERE org_id = {org} AND seq = {}", head - 2)).await;
        let purge = sys.purge_audit(org, None, cut, &path, &signer).await.unwrap();
        assert!(purge.through_seq >= 10 && purge.through_seq < head, "{engine}: {purge:?}");
        assert_eq!(
            env.raw.int(format!("SELECT MIN(seq) FROM audit_log WHERE org_id = {org}")).await,
            purge.through_seq + 1
        );
        let after = sys
            .verify_audit_trail(org, &VerifyOptions { keys: Some(keys.clone()), ..Default::default() })
            .await
            .unwrap();
        assert_eq!(after.problem, None, "{engine}");
        assert_eq!(after.first_seq, purge.through_seq + 1);
        let file = std::fs::File::open(&path).unwrap();
        let archive = verify_archive(std::io::BufReader::new(file), Some(&keys), None).unwrap();
        assert_eq!(archive.problem, None, "{engine}");
        assert!(archive.anchored);
        assert_eq!((archive.summary.from_seq, archive.summary.to_seq), (1, purge.through_seq));
        assert_eq!(sys.audit_cross_check(&after, &archive).await.unwrap(), None, "{engine}");
        assert!(
            sys.purge_audit(org, None, cut, &path, &signer).await.is_err(),
            "{engine}: an existing archive is never overwritten"
        );

        // Deleting the purge anchor, or more old entries, is detected.
        env.raw.exec(format!("DELETE FROM audit_log WHERE org_id = {org} AND seq = {}", purge.through_seq + 1)).await;
        let got = sys
            .verify_audit_trail(org, &VerifyOptions { keys: Some(keys.clone()), ..Default::default() })
            .await
            .unwrap()
            .problem
            .unwrap();
        assert_eq!((got.seq, got.kind), (purge.through_seq + 1, TamperKind::Deleted), "{engine}");
        env.raw.exec(format!("DELETE FROM audit_checkpoints WHERE org_id = {org} AND kind = 'purge'")).await;
        let got = sys
            .verify_audit_trail(org, &VerifyOptions { keys: Some(keys.clone()), ..Default::default() })
            .await
            .unwrap()
            .problem
            .unwrap();
        assert_eq!((got.seq, got.kind), (1, TamperKind::Deleted), "{engine}: {}", got.detail);

        // An archive edited offline is caught by itself.
        let text = std::fs::read_to_string(&path).unwrap();
        let edited = text.replacen("\"action\":\"record.create\"", "\"action\":\"record.delete\"", 1);
        let report = verify_archive(std::io::Cursor::new(edited), Some(&keys), None).unwrap();
        assert_eq!(report.problem.map(|p| p.kind), Some(TamperKind::Modified), "{engine}");
        let cut_short: String = text.lines().take(text.lines().count() - 3).map(|l| format!("{l}\n")).collect();
        let report = verify_archive(std::io::Cursor::new(cut_short), Some(&keys), None).unwrap();
        assert_eq!(report.problem.map(|p| p.kind), Some(TamperKind::Truncated), "{engine}");
        env.close().await;
    }
}

/// Verification reads and hashes ranges of the trail in parallel: tampering at the edges of a range, in a later
/// range, or in two ranges at once is named at the same first bad entry, with the same kind, as by the sequential
/// verifier, whatever the number of ranges; an intact trail gives the same report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_at_range_boundaries_is_named_like_the_sequential_check() {
    for engine in engines() {
        let env = Env::new(engine).await;
        let sys = env.store.unscoped_system_access();
        let signer = AuditSigner::generate();
        sys.register_audit_key(signer.public_key()).await.unwrap();
        let (org, head) = trail(&env, "ranges", Some(&signer)).await;
        let (bystander, _) = trail(&env, "bystander", None).await;
        assert!(head > 25, "{engine}: {head}");
        backup(&env, org).await;
        let opts = VerifyOptions::default();
        let whole = sys.verify_audit_trail_in_ranges(org, &opts, 1).await.unwrap();
        assert_eq!(whole.problem, None, "{engine}");
        for ranges in [2usize, 3, 5, 16] {
            let r = sys.verify_audit_trail_in_ranges(org, &opts, ranges).await.unwrap();
            assert_eq!(
                (r.problem, r.entries, r.last_seq, r.last_hash.clone(), r.signed_through),
                (None, whole.entries, whole.last_seq, whole.last_hash.clone(), whole.signed_through),
                "{engine}: {ranges} ranges"
            );
        }
        // Where ranges start with 2 and 3 of them (the trail is cut into equal parts from seq 1).
        let per2 = (head + 1) / 2;
        let per3 = (head + 2) / 3;
        let edit = |seq: i64| {
            format!("UPDATE audit_log SET detail = '{{\"forged\":true}}' WHERE org_id = {org} AND seq = {seq}")
        };
        let delete = |seq: i64| format!("DELETE FROM audit_log WHERE org_id = {org} AND seq = {seq}");
        let relink = |seq: i64| format!("UPDATE audit_log SET prev_hash = 'ab' WHERE org_id = {org} AND seq = {seq}");
        let swap = |seq: i64| {
            vec![
                format!("UPDATE audit_log SET seq = -1 WHERE org_id = {org} AND seq = {seq}"),
                format!("UPDATE audit_log SET seq = {seq} WHERE org_id = {org} AND seq = {}", seq + 1),
                format!("UPDATE audit_log SET seq = {} WHERE org_id = {org} AND seq = -1", seq + 1),
            ]
        };
        let cases: Vec<(String, Vec<String>, i64, TamperKind)> = vec![
            ("the last entry of the first half".into(), vec![edit(per2)], per2, TamperKind::Modified),
            ("the first entry of the second half".into(), vec![edit(per2 + 1)], per2 + 1, TamperKind::Modified),
            ("the first entry of the third range".into(), vec![edit(2 * per3 + 1)], 2 * per3 + 1, TamperKind::Modified),
            (
                "the link of the second half's first entry".into(),
                vec![relink(per2 + 1)],
                per2 + 1,
                TamperKind::Modified,
            ),
            ("a deleted first entry of the second half".into(), vec![delete(per2 + 1)], per2 + 1, TamperKind::Deleted),
            ("a deleted last entry of the first half".into(), vec![delete(per2)], per2, TamperKind::Deleted),
            ("entries swapped across the halves".into(), swap(per2), per2, TamperKind::Reordered),
            ("the first entry".into(), vec![edit(1)], 1, TamperKind::Modified),
            ("an entry near the end".into(), vec![edit(head - 1)], head - 1, TamperKind::Modified),
            ("two halves at once".into(), vec![edit(head - 2), edit(per2 - 2)], per2 - 2, TamperKind::Modified),
            ("the last entry".into(), vec![delete(head)], head, TamperKind::Truncated),
        ];
        for (what, statements, seq, kind) in cases {
            for s in &statements {
                env.raw.exec(s.clone()).await;
            }
            let sequential = sys.verify_audit(org).await.unwrap();
            assert_eq!(sequential.as_ref().map(|p| p.0), Some(seq), "{engine}: {what}: {sequential:?}");
            for ranges in [1usize, 2, 3, 5, 16] {
                let got = sys.verify_audit_trail_in_ranges(org, &opts, ranges).await.unwrap().problem;
                let got = got.unwrap_or_else(|| panic!("{engine}: {what} not detected with {ranges} ranges"));
                assert_eq!((got.seq, got.kind), (seq, kind), "{engine}: {what}, {ranges} ranges: {}", got.detail);
                assert_eq!(Some(got.message()), sequential.as_ref().map(|p| p.1.clone()), "{engine}: {what}");
            }
            assert_eq!(sys.verify_audit_trail_in_ranges(bystander, &opts, 3).await.unwrap().problem, None);
            restore(&env, org).await;
        }
        assert_eq!(sys.verify_audit_trail_in_ranges(org, &opts, 2).await.unwrap().problem, None, "{engine}");
        env.raw.exec("DROP TABLE audit_backup").await;
        env.close().await;
    }
}

/// Every query over the trail that selects a few entries out of many reads them through an index, so neither the
/// audit view nor a monitoring count slows down as the trail grows (migration 8 left `audit_log` with fewer, partly
/// partial, indexes). The SQL below has the shapes the store sends (`audit_query.rs`, `monitor_detect.rs`,
/// `monitor.rs`); SQLite's plan names the index it reads. PostgreSQL is left out: on a small table its planner
/// rightly prefers a sequential scan, so its plans say nothing about a large trail.
#[tokio::test]
async fn the_audit_view_filters_and_monitoring_counts_read_the_trail_through_indexes() {
    let env = Env::new("sqlite").await;
    let view = "SELECT seq FROM audit_log WHERE org_id = 1 AND (module IS NULL OR module IN ('customers', 'audit'))";
    let (at, seq) = (1_700_000_000_000i64, 500i64);
    let cases: Vec<(&str, String, &str)> = vec![
        ("view: newest first", format!("{view} ORDER BY seq DESC LIMIT 51"), "sqlite_autoindex_audit_log_1"),
        ("view: actor", format!("{view} AND actor_id = 7 ORDER BY seq DESC LIMIT 51"), "audit_log_actor"),
        (
            "view: module and record",
            format!("{view} AND module = 'customers' AND record_id = 42 ORDER BY seq DESC LIMIT 51"),
            "audit_log_record",
        ),
        ("view: action", format!("{view} AND action = 'record.delete' ORDER BY seq DESC LIMIT 51"), "audit_log_action"),
        (
            "view: a viewer limited to some users",
            format!(
                "{view} AND (actor_id IN (3, 4) OR subject_id IN (3, 4)) AND action = 'user.roles' ORDER BY seq DESC LIMIT 51"
            ),
            "audit_log_",
        ),
        (
            "monitoring: failed sign-ins of an account",
            format!(
                "SELECT COUNT(*) AS n FROM audit_log WHERE org_id = 1 AND subject_id = 7 AND action = 'session.sign_in' AND outcome = 'failure' AND at > {at} AND seq <= {seq}"
            ),
            "audit_log_sign_in_subject",
        ),
        (
            "monitoring: failed sign-ins from an address",
            format!(
                "SELECT COUNT(*) AS n FROM audit_log WHERE org_id = 1 AND ip = '203.0.113.7' AND action = 'session.sign_in' AND outcome = 'failure' AND at > {at} AND seq <= {seq}"
            ),
            "audit_log_sign_in_ip",
        ),
        (
            "monitoring: a user's known networks",
            format!(
                "SELECT DISTINCT ip FROM audit_log WHERE org_id = 1 AND subject_id = 7 AND action = 'session.sign_in' AND outcome = 'success' AND seq < {seq} AND ip IS NOT NULL LIMIT 1000"
            ),
            "audit_log_s",
        ),
        (
            "monitoring: the mass-delete guard",
            format!(
                "SELECT COUNT(*) FROM (SELECT 1 AS x FROM audit_log WHERE org_id = 1 AND actor_id = 7 AND action = 'record.delete' AND at > {at} LIMIT 10) counted"
            ),
            "audit_log_actor_watched",
        ),
    ];
    let mut windowed: Vec<(String, String, &str)> = Vec::new();
    for action in ["record.export", "record.delete", "record.transfer", "record.reveal"] {
        windowed.push((
            format!("monitoring: {action} per user"),
            format!("SELECT COUNT(*) AS n FROM audit_log WHERE org_id = 1 AND actor_id = 7 AND action = '{action}' AND at > {at} AND seq <= {seq}"),
            "audit_log_actor_watched",
        ));
    }
    let all = cases.into_iter().map(|(n, q, i)| (n.to_string(), q, i)).chain(windowed);
    for (name, sql, index) in all {
        let plan: Vec<String> = env
            .raw
            .rows(format!("EXPLAIN QUERY PLAN {sql}"))
            .await
            .iter()
            .map(|r| r.try_get::<String, _>(3).expect("plan detail"))
            .collect();
        let plan = plan.join(" | ");
        assert!(!plan.contains("SCAN audit_log"), "{name}: reads the whole trail: {plan}");
        assert!(
            plan.contains(&format!("USING INDEX {index}")) || plan.contains(&format!("USING COVERING INDEX {index}")),
            "{name}: expected an index starting with {index}: {plan}"
        );
    }
    env.close().await;
}
