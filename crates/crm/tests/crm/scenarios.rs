//! The seed's sentences as scenarios on the demo organization, through HTTP. Each test is named after what a user
//! of the CRM would say.

use crate::support::{demo_app, ids, records_only, token, walk, writes};
use crm_policy::UserStatus;
use crm_testkit::{TestApp, engines};
use serde_json::{Value, json};
use std::collections::BTreeSet;

/// Ids of the organization's customers owned by these demo users.
async fn customers_of(app: &TestApp, org: i64, owners: &[&str]) -> BTreeSet<i64> {
    let list = owners.iter().map(|o| format!("'{o}'")).collect::<Vec<_>>().join(", ");
    let sql = format!(
        "SELECT c.id FROM customers c JOIN users u ON u.id = c.owner_id WHERE c.org_id = {org} AND u.username IN ({list})"
    );
    app.sql_i64s(&sql).await.into_iter().collect()
}

fn owners(items: &[Value]) -> BTreeSet<i64> {
    items.iter().filter_map(|i| i["owner_id"].as_i64()).collect()
}

#[tokio::test]
async fn a_sales_representative_sees_only_own_customers() {
    for engine in engines() {
        let (app, demo) = demo_app(engine).await;
        let rep = token(&app, "rep.north1").await;
        let own = customers_of(&app, demo.org, &["rep.north1"]).await;
        assert!(!own.is_empty(), "[{engine}] the demo gives rep.north1 customers");
        let listed = walk(&app, &rep, "/api/v1/customers?limit=10").await;
        assert_eq!(
            owners(&listed),
            BTreeSet::from([demo.users["rep.north1"]]),
            "[{engine}] owners of listed customers"
        );
        assert_eq!(ids(&listed), own, "[{engine}] the representative's customer list");
        let count = app.get("/api/v1/customers/count", &rep).await.assert_status(200).json();
        assert_eq!(count["count"], own.len(), "[{engine}] count");
        // A teammate's customer is not theirs to see.
        let teammate = *customers_of(&app, demo.org, &["rep.north2"]).await.first().expect("rep.north2 has customers");
        app.get(&format!("/api/v1/customers/{teammate}"), &rep).await.assert_problem(404, "/problems/not-found");
    }
}

#[tokio::test]
async fn a_sales_manager_sees_the_whole_teams_customers() {
    for engine in engines() {
        let (app, demo) = demo_app(engine).await;
        let manager = token(&app, "manager.north").await;
        let team = ["manager.north", "rep.north1", "rep.north2"];
        let listed = walk(&app, &manager, "/api/v1/customers?limit=50").await;
        let want: BTreeSet<i64> = team.iter().map(|u| demo.users[u]).collect();
        assert_eq!(
            owners(&listed),
            want,
            "[{engine}] every member of the 华北 team, and nobody else, owns listed customers"
        );
        assert_eq!(ids(&listed), customers_of(&app, demo.org, &team).await, "[{engine}] the team's customers");
        // view/edit with department_tree: the manager edits a representative's customer.
        let theirs = *customers_of(&app, demo.org, &["rep.north2"]).await.first().expect("rep.north2 has customers");
        let res =
            app.patch_json(&format!("/api/v1/customers/{theirs}"), &manager, &json!({"industry": "finance"})).await;
        assert_eq!(res.assert_status(200).json()["industry"], "finance", "[{engine}] the manager's edit");
        // Another region's customer (not a key account; the north manager is not in that group) stays invisible.
        let east = customers_of(&app, demo.org, &["rep.east1"]).await;
        for id in east.iter().take(3) {
            app.get(&format!("/api/v1/customers/{id}"), &manager).await.assert_problem(404, "/problems/not-found");
        }
    }
}

#[tokio::test]
async fn customer_service_reads_customers_works_tickets_and_cannot_open_opportunities() {
    for engine in engines() {
        let (app, demo) = demo_app(engine).await;
        let service = token(&app, "service1").await;
        let org = demo.org;
        let customers = walk(&app, &service, "/api/v1/customers?limit=100").await;
        assert!(!customers.is_empty(), "[{engine}] service reads customers");
        assert!(
            customers.iter().all(|c| c["customer_type"] != "government"),
            "[{engine}] service sees no government customer"
        );
        let customer = customers[0]["id"].as_i64().expect("id");

        // Opportunities do not exist for customer service.
        let unknown = app.get("/api/v1/widgets", &service).await;
        let opp = app.sql_i64(&format!("SELECT MIN(id) FROM opportunities WHERE org_id = {org}")).await;
        for path in [
            "/api/v1/opportunities".to_string(),
            format!("/api/v1/opportunities/{opp}"),
            format!("/api/v1/customers/{customer}/opportunities"),
        ] {
            let res = app.get(&path, &service).await;
            assert_eq!((res.status, res.text()), (unknown.status, unknown.text()), "[{engine}] {path}");
        }
        let me = app.get("/api/v1/me", &service).await.assert_status(200).json();
        assert!(me["modules"].get("opportunities").is_none(), "[{engine}] /me offers opportunities: {me}");

        // Tickets: create and work them, including a colleague's.
        let ticket = json!({"account_id": customer, "subject": "打印机无法连接", "priority": "high", "status": "open"});
        let created = app.post_json("/api/v1/tickets", &service, &ticket).await.assert_status(201).json();
        let id = created["id"].as_i64().expect("ticket id");
        let res = app.patch_json(&format!("/api/v1/tickets/{id}"), &service, &json!({"status": "resolved"})).await;
        assert_eq!(res.assert_status(200).json()["status"], "resolved", "[{engine}] own ticket edited");
        let colleagues = app
            .sql_i64(&format!(
                "SELECT MIN(t.id) FROM tickets t JOIN users u ON u.id = t.owner_id WHERE t.org_id = {org} AND u.username = 'service2'"
            ))
            .await;
        let res =
            app.patch_json(&format!("/api/v1/tickets/{colleagues}"), &service, &json!({"priority": "urgent"})).await;
        assert_eq!(res.assert_status(200).json()["priority"], "urgent", "[{engine}] a colleague's ticket edited");

        // Customers are read-only for service.
        let before = writes(&app, org).await;
        let res = app.patch_json(&format!("/api/v1/customers/{customer}"), &service, &json!({"name": "改名"})).await;
        res.assert_problem(403, "/problems/forbidden");
        app.delete(&format!("/api/v1/customers/{customer}"), &service).await.assert_problem(403, "/problems/forbidden");
        app.post_json("/api/v1/customers", &service, &json!({"name": "新客户"}))
            .await
            .assert_problem(403, "/problems/forbidden");
        assert_eq!(writes(&app, org).await, before, "[{engine}] refused customer edits wrote something");
    }
}

#[tokio::test]
async fn a_read_only_partition_grant_allows_view_and_refuses_edit() {
    for engine in engines() {
        let (app, demo) = demo_app(engine).await;
        let analyst = token(&app, "analyst.east").await;
        let org = demo.org;
        let east = app
            .sql_i64(&format!(
                "SELECT MIN(c.id) FROM customers c JOIN users u ON u.id = c.owner_id WHERE c.org_id = {org} AND c.region = '华东' AND u.username = 'rep.east1'"
            ))
            .await;
        let item = app.get(&format!("/api/v1/customers/{east}"), &analyst).await.assert_status(200).json();
        assert_eq!(item["region"], "华东", "[{engine}] the record is in the granted partition");
        assert_eq!(item["_allowed"]["edit"], false, "[{engine}] the record says it is read-only: {item}");
        let opp =
            app.sql_i64(&format!("SELECT MIN(id) FROM opportunities WHERE org_id = {org} AND region = '华东'")).await;
        app.get(&format!("/api/v1/opportunities/{opp}"), &analyst).await.assert_status(200);
        let before = writes(&app, org).await;
        let res = app.patch_json(&format!("/api/v1/customers/{east}"), &analyst, &json!({"industry": "finance"})).await;
        res.assert_problem(403, "/problems/forbidden");
        let res = app.patch_json(&format!("/api/v1/opportunities/{opp}"), &analyst, &json!({"stage": "won"})).await;
        res.assert_problem(403, "/problems/forbidden");
        assert_eq!(writes(&app, org).await, before, "[{engine}] refused edits wrote something");
        // Outside the partition, nothing.
        let north =
            app.sql_i64(&format!("SELECT MIN(id) FROM customers WHERE org_id = {org} AND region = '华北'")).await;
        app.get(&format!("/api/v1/customers/{north}"), &analyst).await.assert_problem(404, "/problems/not-found");
        // The analyst's own customer is editable: the refusal above comes from the grant's level.
        let own = app.post_json("/api/v1/customers", &analyst, &json!({"name": "分析客户", "region": "华北"})).await;
        let own = own.assert_status(201).json()["id"].as_i64().expect("id");
        app.patch_json(&format!("/api/v1/customers/{own}"), &analyst, &json!({"industry": "retail"}))
            .await
            .assert_status(200);
    }
}

#[tokio::test]
async fn removing_a_user_from_a_department_revokes_access_on_the_next_request() {
    for engine in engines() {
        let (app, demo) = demo_app(engine).await;
        let org = demo.org;
        let manager = token(&app, "manager.north").await;
        let reps = customers_of(&app, org, &["rep.north1", "rep.north2"]).await;
        let own = customers_of(&app, org, &["manager.north"]).await;
        let listed = ids(&walk(&app, &manager, "/api/v1/customers?limit=100").await);
        assert!(reps.is_subset(&listed), "[{engine}] before: the manager sees the team's customers");
        let north =
            app.sql_i64(&format!("SELECT id FROM departments WHERE org_id = {org} AND name LIKE '华北区%'")).await;
        let administration =
            app.sql_i64(&format!("SELECT id FROM departments WHERE org_id = {org} AND name LIKE '管理部%'")).await;
        let sys = app.store.unscoped_system_access();
        let user = demo.users["manager.north"];

        sys.set_user_departments(org, None, user, &[administration]).await.expect("move the manager out of 华北区");
        let listed = ids(&walk(&app, &manager, "/api/v1/customers?limit=100").await);
        assert!(
            listed.is_disjoint(&reps),
            "[{engine}] after: still sees the team's customers {:?}",
            listed.intersection(&reps)
        );
        assert_eq!(listed, own, "[{engine}] after: exactly their own customers remain");
        let one = *reps.first().expect("the team has customers");
        app.get(&format!("/api/v1/customers/{one}"), &manager).await.assert_problem(404, "/problems/not-found");
        let count = app.get("/api/v1/customers/count", &manager).await.assert_status(200).json();
        assert_eq!(count["count"], own.len(), "[{engine}] after: count");

        // Putting them back restores access just as fast; the same token worked throughout.
        sys.set_user_departments(org, None, user, &[north]).await.expect("move the manager back");
        app.get(&format!("/api/v1/customers/{one}"), &manager).await.assert_status(200);
    }
}

#[tokio::test]
async fn a_deactivated_users_token_stops_working_at_once() {
    for engine in engines() {
        let (app, demo) = demo_app(engine).await;
        let org = demo.org;
        let rep = token(&app, "rep.north1").await;
        let manager = token(&app, "manager.north").await;
        app.get("/api/v1/me", &rep).await.assert_status(200);
        let user = demo.users["rep.north1"];
        let sys = app.store.unscoped_system_access();
        sys.set_user_status(org, None, user, UserStatus::Deactivated).await.expect("deactivate");
        app.get("/api/v1/me", &rep).await.assert_problem(401, "/problems/unauthorized");
        app.get("/api/v1/customers", &rep).await.assert_problem(401, "/problems/unauthorized");
        let again =
            app.post_json("/api/v1/session", "", &json!({"username": "rep.north1", "password": "demo-2026"})).await;
        again.assert_problem(401, "/problems/invalid-credentials");
        // Their customers keep their owner and stay visible to the manager.
        let theirs = customers_of(&app, org, &["rep.north1"]).await;
        let seen = ids(&walk(&app, &manager, "/api/v1/customers?limit=100").await);
        assert!(theirs.is_subset(&seen), "[{engine}] the deactivated rep's customers vanished from the manager's list");
        // Reactivation does not revive the old token; a fresh sign-in works.
        sys.set_user_status(org, None, user, UserStatus::Active).await.expect("reactivate");
        app.get("/api/v1/me", &rep).await.assert_problem(401, "/problems/unauthorized");
        let fresh = app.sign_in("rep.north1", "demo-2026").await;
        app.get("/api/v1/me", &fresh).await.assert_status(200);
    }
}

#[tokio::test]
async fn transferring_a_customer_to_a_colleague_outside_your_scope_is_refused() {
    for engine in engines() {
        let (app, demo) = demo_app(engine).await;
        let org = demo.org;
        let manager = token(&app, "manager.north").await;
        let rep = token(&app, "rep.north1").await;
        let id = *customers_of(&app, org, &["rep.north1"]).await.first().expect("rep.north1 has customers");
        let owner = async || app.sql_i64(&format!("SELECT owner_id FROM customers WHERE id = {id}")).await;
        let before = writes(&app, org).await;
        let res = app
            .patch_json(&format!("/api/v1/customers/{id}"), &manager, &json!({"owner_id": demo.users["rep.east1"]}))
            .await;
        let p = res.assert_problem(422, "/problems/validation");
        assert_eq!(p["errors"][0]["field"], "owner_id", "[{engine}] the refusal names the owner: {p}");
        assert_eq!(owner().await, demo.users["rep.north1"], "[{engine}] the owner did not change");
        // A representative may not transfer at all, not even within the team.
        let res = app
            .patch_json(&format!("/api/v1/customers/{id}"), &rep, &json!({"owner_id": demo.users["rep.north2"]}))
            .await;
        res.assert_problem(403, "/problems/forbidden");
        assert_eq!(writes(&app, org).await, before, "[{engine}] refused transfers wrote something");
        // Within the manager's department tree the transfer goes through.
        let res = app
            .patch_json(&format!("/api/v1/customers/{id}"), &manager, &json!({"owner_id": demo.users["rep.north2"]}))
            .await;
        assert_eq!(res.assert_status(200).json()["owner_id"], demo.users["rep.north2"], "[{engine}] transfer in scope");
        assert_eq!(owner().await, demo.users["rep.north2"], "[{engine}] stored owner");
        // The previous owner lost it on the next request.
        app.get(&format!("/api/v1/customers/{id}"), &rep).await.assert_problem(404, "/problems/not-found");
    }
}

#[tokio::test]
async fn a_representative_shares_an_own_customer_with_a_colleague_for_reading() {
    for engine in engines() {
        let (app, demo) = demo_app(engine).await;
        let org = demo.org;
        let owner = token(&app, "rep.north1").await;
        let colleague = token(&app, "rep.north2").await;
        let id = *customers_of(&app, org, &["rep.north1"]).await.first().expect("rep.north1 has customers");
        let path = format!("/api/v1/customers/{id}");
        app.get(&path, &colleague).await.assert_problem(404, "/problems/not-found");
        let count = |v: Value| v["count"].as_i64().expect("count");
        let n_before = count(app.get("/api/v1/customers/count", &colleague).await.assert_status(200).json());

        let share = json!({"target": {"kind": "user", "id": demo.users["rep.north2"]}, "level": "read"});
        app.post_json(&format!("{path}/shares"), &owner, &share).await.assert_status(204);

        // Read access at once, with the same token, on every read path.
        let item = app.get(&path, &colleague).await.assert_status(200).json();
        assert_eq!(item["_allowed"]["edit"], false, "[{engine}] a read share is read-only: {item}");
        assert!(ids(&walk(&app, &colleague, "/api/v1/customers?limit=100").await).contains(&id), "[{engine}] listed");
        let n_after = count(app.get("/api/v1/customers/count", &colleague).await.assert_status(200).json());
        assert_eq!(n_after, n_before + 1, "[{engine}] counted");
        let why = app.get(&format!("{path}/explain"), &colleague).await.assert_status(200).json();
        assert!(sources(&why).contains(&"manual_share".to_string()), "[{engine}] explained by the share: {why}");

        // Edit is refused at read level, and the colleague cannot pass it on.
        let before = writes(&app, org).await;
        app.patch_json(&path, &colleague, &json!({"industry": "finance"}))
            .await
            .assert_problem(403, "/problems/forbidden");
        let onward = json!({"target": {"kind": "user", "id": demo.users["rep.east1"]}, "level": "read"});
        app.post_json(&format!("{path}/shares"), &colleague, &onward).await.assert_problem(403, "/problems/forbidden");
        assert_eq!(writes(&app, org).await, before, "[{engine}] refused edits wrote something");
        let east = token(&app, "rep.east1").await;
        app.get(&path, &east).await.assert_problem(404, "/problems/not-found");
    }
}

fn sources(explanation: &Value) -> Vec<String> {
    explanation["granted_by"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["source"].as_str().map(String::from))
        .collect()
}

#[tokio::test]
async fn explain_names_the_rule_that_grants_access() {
    for engine in engines() {
        let (app, demo) = demo_app(engine).await;
        let org = demo.org;
        // A representative's own customer: the role's data scope `own`.
        let rep = token(&app, "rep.north1").await;
        let own = *customers_of(&app, org, &["rep.north1"]).await.first().expect("own customer");
        let why = app.get(&format!("/api/v1/customers/{own}/explain"), &rep).await.assert_status(200).json();
        assert_eq!(why["allowed"], true, "[{engine}] {why}");
        assert_eq!(sources(&why), ["role_scope"], "[{engine}] own customer: {why}");
        assert_eq!(why["granted_by"][0]["scope"], "own", "[{engine}] {why}");

        // The analyst on a 华东 customer of someone else: the partition grant, for view but not for edit.
        let analyst = token(&app, "analyst.east").await;
        let east = app
            .sql_i64(&format!(
                "SELECT MIN(c.id) FROM customers c JOIN users u ON u.id = c.owner_id WHERE c.org_id = {org} AND c.region = '华东' AND u.username = 'rep.east2'"
            ))
            .await;
        let why = app.get(&format!("/api/v1/customers/{east}/explain"), &analyst).await.assert_status(200).json();
        assert_eq!(
            (why["allowed"].clone(), sources(&why)),
            (json!(true), vec!["partition_grant".to_string()]),
            "[{engine}] {why}"
        );
        let why =
            app.get(&format!("/api/v1/customers/{east}/explain?action=edit"), &analyst).await.assert_status(200).json();
        assert_eq!(why["allowed"], false, "[{engine}] the grant is read-only: {why}");

        // The east manager on a key account of the south: the sharing rule.
        let manager = token(&app, "manager.east").await;
        let key = app
            .sql_i64(&format!(
                "SELECT MIN(id) FROM customers WHERE org_id = {org} AND region = '华南' AND annual_revenue > 10000000000"
            ))
            .await;
        let why = app.get(&format!("/api/v1/customers/{key}/explain"), &manager).await.assert_status(200).json();
        assert_eq!(sources(&why), ["sharing_rule"], "[{engine}] key account: {why}");

        // Customer service on a government customer: nothing to explain, it does not exist for them.
        let service = token(&app, "service1").await;
        let gov = app
            .sql_i64(&format!("SELECT MIN(id) FROM customers WHERE org_id = {org} AND customer_type = 'government'"))
            .await;
        app.get(&format!("/api/v1/customers/{gov}/explain"), &service).await.assert_problem(404, "/problems/not-found");
        // The administrator sees it through view-all / modify-all.
        let admin = token(&app, "admin").await;
        let why = app.get(&format!("/api/v1/customers/{gov}/explain"), &admin).await.assert_status(200).json();
        assert_eq!(sources(&why), ["administrator"], "[{engine}] administrator: {why}");
    }
}

/// Signs in with an organization slug (needed when the username exists in several organizations).
async fn sign_in_at(app: &TestApp, organization: &str, username: &str, password: &str) -> String {
    let body = json!({"username": username, "password": password, "organization": organization});
    let res = app.post_json("/api/v1/session", "", &body).await;
    res.assert_status(200).json()["token"].as_str().expect("token").to_string()
}

#[tokio::test]
async fn nothing_crosses_between_two_organizations() {
    use crm_domain::{Module, Value};
    use std::collections::BTreeMap;
    for engine in engines() {
        let (app, demo) = demo_app(engine).await;
        let org = demo.org;
        // A second organization whose administrator is also called `admin`.
        let sys = app.store.unscoped_system_access();
        let rival = sys
            .create_organization("rival", "竞争对手 Rival Co.", &crm::templates::standard_policy())
            .await
            .expect("organization");
        let hq = sys.create_department(rival, None, "总部").await.expect("department");
        let rival_admin = sys
            .create_user(
                rival,
                crm_store::NewUser {
                    username: "admin".into(),
                    display_name: "Rival admin".into(),
                    email: None,
                    password: "rival-secret-2026".into(),
                    manager: None,
                    departments: vec![hq],
                    roles: vec![crm::templates::ROLE_ADMIN],
                    must_change_password: false,
                },
            )
            .await
            .expect("user");
        let secret = |i: i64| {
            BTreeMap::from([
                ("name", Value::Text(format!("机密客户 Rival secret {i}"))),
                ("region", Value::Text("华东".into())),
            ])
        };
        let theirs = sys
            .seed_records(rival, Module::Customers, &[(rival_admin, secret(1)), (rival_admin, secret(2))])
            .await
            .expect("seed");

        // The username alone is ambiguous now; the organization slug picks the account.
        let res = app
            .post_json("/api/v1/session", "", &json!({"username": "admin", "password": crm::demo::ADMIN_PASSWORD}))
            .await;
        res.assert_problem(401, "/problems/invalid-credentials");
        let ours = sign_in_at(&app, "demo", "admin", crm::demo::ADMIN_PASSWORD).await;
        let other = sign_in_at(&app, "rival", "admin", "rival-secret-2026").await;
        let before = writes(&app, org).await;

        // The demo administrator (view and modify all data) sees nothing of the rival.
        let missing = crate::support::missing_id(&app).await;
        let listed = ids(&walk(&app, &ours, "/api/v1/customers?limit=200").await);
        assert_eq!(listed.len(), crate::support::CUSTOMERS, "[{engine}] the demo administrator's customers");
        assert!(listed.iter().all(|id| !theirs.contains(id)), "[{engine}] rival customers listed");
        let count = app.get("/api/v1/customers/count", &ours).await.assert_status(200).json();
        assert_eq!(count["count"], crate::support::CUSTOMERS, "[{engine}] count");
        assert!(
            walk(&app, &ours, "/api/v1/customers?q=Rival").await.is_empty(),
            "[{engine}] search finds rival records"
        );
        let by_owner = walk(&app, &ours, &format!("/api/v1/customers?filter=owner_id:eq:{rival_admin}")).await;
        assert!(by_owner.is_empty(), "[{engine}] filter by a rival owner");
        for id in &theirs {
            for path in ["", "/explain", "/contacts"] {
                let a = app.get(&format!("/api/v1/customers/{id}{path}"), &ours).await;
                let b = app.get(&format!("/api/v1/customers/{missing}{path}"), &ours).await;
                assert_eq!((a.status, a.text()), (b.status, b.text()), "[{engine}] rival customer {id}{path}");
                a.assert_problem(404, "/problems/not-found");
            }
            let a = app.patch_json(&format!("/api/v1/customers/{id}"), &ours, &json!({"name": "x"})).await;
            a.assert_problem(404, "/problems/not-found");
            let a = app.post_json("/api/v1/contacts", &ours, &json!({"account_id": id, "name": "x"})).await;
            let b = app.post_json("/api/v1/contacts", &ours, &json!({"account_id": missing, "name": "x"})).await;
            assert_eq!((a.status, a.text()), (b.status, b.text()), "[{engine}] a contact under a rival customer");
        }
        // Nor can a rival user be given a record, a share or a team seat.
        let mine = *listed.first().expect("a demo customer");
        let res = app.patch_json(&format!("/api/v1/customers/{mine}"), &ours, &json!({"owner_id": rival_admin})).await;
        res.assert_problem(422, "/problems/validation");
        let share = json!({"target": {"kind": "user", "id": rival_admin}, "level": "read"});
        app.post_json(&format!("/api/v1/customers/{mine}/shares"), &ours, &share)
            .await
            .assert_problem(422, "/problems/validation");
        let team = app
            .request(
                "PUT".parse().expect("method"),
                &format!("/api/v1/customers/{mine}/team/{rival_admin}"),
                &ours,
                Some(("application/json", br#"{"level": "full"}"#.to_vec())),
            )
            .await;
        team.assert_problem(422, "/problems/validation");
        let users = app.get("/api/v1/admin/users", &ours).await.assert_status(200).json();
        let user_ids: Vec<i64> = users.as_array().expect("user list").iter().filter_map(|u| u["id"].as_i64()).collect();
        assert!(!user_ids.contains(&rival_admin), "[{engine}] the rival's administrator is listed among our users");
        let id = theirs[0];
        app.get(&format!("/api/v1/admin/access/customers/{id}"), &ours)
            .await
            .assert_problem(404, "/problems/not-found");
        // Asking why a rival user may see our record answers exactly as for a user id that does not exist.
        let why = |user: i64| format!("/api/v1/admin/explain?user={user}&module=customers&record={mine}");
        let (a, b) = (app.get(&why(rival_admin), &ours).await, app.get(&why(missing), &ours).await);
        assert_eq!((a.status, a.text()), (b.status, b.text()), "[{engine}] explain for a rival user");
        assert!(
            !a.text().contains("\"allowed\":true"),
            "[{engine}] a rival user is said to see our record: {}",
            a.text()
        );
        // Our reads are audited (in our trail); nothing else changed.
        assert_eq!(records_only(&writes(&app, org).await), records_only(&before), "[{engine}] records changed");

        // And the other way round: the rival's requests touch nothing of ours, not even our audit trail.
        let ours_before = writes(&app, org).await;
        let listed = ids(&walk(&app, &other, "/api/v1/customers?limit=200").await);
        assert_eq!(
            listed,
            theirs.iter().copied().collect::<BTreeSet<_>>(),
            "[{engine}] the rival sees exactly its own customers"
        );
        app.get(&format!("/api/v1/customers/{mine}"), &other).await.assert_problem(404, "/problems/not-found");
        let rival_audit = app.sql_i64(&format!("SELECT COUNT(*) FROM audit_log WHERE org_id = {rival}")).await;
        assert!(rival_audit > 0, "[{engine}] the rival's own actions are in its own trail");
        assert_eq!(
            writes(&app, org).await,
            ours_before,
            "[{engine}] the rival's activity wrote into the demo organization"
        );
    }
}

/// Reports go through the same policy as lists: a manager's pipeline report counts and totals only the team's
/// opportunities, and a user without the reports module has none.
#[tokio::test]
async fn a_managers_pipeline_report_totals_only_the_teams_opportunities() {
    for engine in engines() {
        let (app, demo) = demo_app(engine).await;
        let manager = token(&app, "manager.north").await;
        let team = "'manager.north', 'rep.north1', 'rep.north2'";
        let expected = app
            .sql_rows(&format!(
                "SELECT o.stage, COUNT(*) AS n, CAST(COALESCE(SUM(o.amount), 0) AS BIGINT) AS total FROM opportunities o \
                 JOIN users u ON u.id = o.owner_id WHERE o.org_id = {} AND u.username IN ({team}) GROUP BY o.stage",
                demo.org
            ))
            .await
            .iter()
            .map(|r| {
                use sqlx::Row;
                (r.get::<String, _>("stage"), (r.get::<i64, _>("n"), r.get::<i64, _>("total")))
            })
            .collect::<std::collections::BTreeMap<_, _>>();
        assert!(!expected.is_empty(), "[{engine}] the demo gives the north team opportunities");
        let report =
            app.get("/api/v1/opportunities/report?group_by=stage&sum=amount", &manager).await.assert_status(200).json();
        let got = report
            .as_array()
            .expect("report rows")
            .iter()
            .map(|r| {
                let key = r["key"].as_str().expect("stage").to_string();
                (key, (r["count"].as_i64().expect("count"), r["total"].as_i64().expect("total")))
            })
            .collect::<std::collections::BTreeMap<_, _>>();
        assert_eq!(got, expected, "[{engine}] the north manager's pipeline by stage");

        // Filters narrow the report exactly as they narrow the list.
        let won = app.get("/api/v1/opportunities/report?group_by=stage&filter=stage:eq:won", &manager).await.json();
        assert_eq!(won.as_array().map(Vec::len), Some(usize::from(expected.contains_key("won"))), "[{engine}] filter");

        // An unknown grouping field is refused; a representative has no reports module at all; group_by is required.
        let admin = token(&app, "admin").await;
        let unknown = app.get("/api/v1/customers/report?group_by=no_such_field", &admin).await;
        unknown.assert_problem(400, "/problems/bad-request");
        let rep = token(&app, "rep.north1").await;
        app.get("/api/v1/opportunities/report?group_by=stage", &rep).await.assert_problem(404, "/problems/not-found");
        app.get("/api/v1/opportunities/report", &manager).await.assert_problem(400, "/problems/bad-request");
    }
}
