//! Bad input: every refusal is a problem document (`application/problem+json`) with a stable `type`, and a refused
//! request writes nothing: no record, no share, no audit entry.

use crate::support::{demo_app, missing_id, token, writes};
use crm_testkit::{TestApp, TestResponse, engines};
use serde_json::{Value, json};

/// A customer of `owner` (a demo username), the first by id.
async fn customer_of(app: &TestApp, org: i64, owner: &str) -> (i64, String) {
    let sql = format!(
        "SELECT c.id FROM customers c JOIN users u ON u.id = c.owner_id WHERE c.org_id = {org} AND u.username = '{owner}' ORDER BY c.id"
    );
    let id = app.sql_i64s(&sql).await[0];
    let name = app.sql_strings(&format!("SELECT name FROM customers WHERE id = {id}")).await.remove(0);
    (id, name)
}

/// The field names a validation problem lists.
fn error_fields(p: &Value) -> Vec<String> {
    p["errors"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["field"].as_str().map(String::from)).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn refused_bodies_answer_with_a_problem_and_write_nothing() {
    for engine in engines() {
        let (app, demo) = demo_app(engine).await;
        let rep = token(&app, "rep.north1").await;
        let (own, _) = customer_of(&app, demo.org, "rep.north1").await;
        let other_rep = demo.users["rep.north2"];
        let before = writes(&app, demo.org).await;
        let oversize = format!("{{\"name\": \"{}\"}}", "客".repeat(400_000)); // 1.2 MB of UTF-8
        let customer = format!("/api/v1/customers/{own}");
        let shares = format!("/api/v1/customers/{own}/shares");

        // (what, method, path, content type, body, status, problem type, fields a validation problem must name)
        const JSON: &str = "application/json";
        #[rustfmt::skip]
        let cases: Vec<(&str, &str, &str, &str, Vec<u8>, u16, &str, &[&str])> = vec![
            ("truncated JSON", "POST", "/api/v1/customers", JSON, br#"{"name": "x","#.to_vec(), 400, "/problems/malformed-json", &[]),
            ("truncated JSON in a change", "PATCH", &customer, JSON, br#"{"name":"#.to_vec(), 400, "/problems/malformed-json", &[]),
            ("not JSON at all", "POST", &shares, JSON, b"level=read".to_vec(), 400, "/problems/malformed-json", &[]),
            ("an array where an object belongs", "POST", "/api/v1/customers", JSON, b"[1, 2, 3]".to_vec(), 422, "/problems/invalid-body", &[]),
            ("a number for a name", "POST", "/api/v1/customers", JSON, br#"{"name": 42}"#.to_vec(), 422, "/problems/validation", &["name"]),
            ("a number for a customer type", "PATCH", &customer, JSON, br#"{"customer_type": 7}"#.to_vec(), 422, "/problems/validation", &["customer_type"]),
            ("a value outside the list", "PATCH", &customer, JSON, br#"{"customer_type": "vip"}"#.to_vec(), 422, "/problems/validation", &["customer_type"]),
            ("a malformed e-mail address", "PATCH", &customer, JSON, br#"{"email": "not-an-address"}"#.to_vec(), 422, "/problems/validation", &["email"]),
            ("a name for an owner id", "PATCH", &customer, JSON, br#"{"owner_id": "rep.north2"}"#.to_vec(), 422, "/problems/validation", &["owner_id"]),
            ("a read-only field", "PATCH", &customer, JSON, br#"{"annual_revenue": 1}"#.to_vec(), 422, "/problems/validation", &["annual_revenue"]),
            ("an unknown field", "POST", "/api/v1/customers", JSON, r#"{"name": "新客户", "nickname": "x"}"#.as_bytes().to_vec(), 422, "/problems/validation", &["nickname"]),
            ("an unknown field in a change", "PATCH", &customer, JSON, br#"{"nickname": "x"}"#.to_vec(), 422, "/problems/validation", &["nickname"]),
            ("an unknown sign-in field", "POST", "/api/v1/session", JSON, br#"{"username": "admin", "password": "x", "remember": true}"#.to_vec(), 422, "/problems/invalid-body", &[]),
            ("an unknown share field", "POST", &shares, JSON, format!(r#"{{"target": {{"kind": "user", "id": {other_rep}}}, "level": "read", "note": "x"}}"#).into_bytes(), 422, "/problems/invalid-body", &[]),
            ("an unknown share level", "POST", &shares, JSON, format!(r#"{{"target": {{"kind": "user", "id": {other_rep}}}, "level": "owner"}}"#).into_bytes(), 422, "/problems/invalid-body", &[]),
            ("an unknown search member (typo of filters)", "POST", "/api/v1/customers/search", JSON, r#"{"filter": [{"field": "region", "op": "eq", "value": "华东"}]}"#.as_bytes().to_vec(), 422, "/problems/invalid-body", &[]),
            ("a customer without a name", "POST", "/api/v1/customers", JSON, br#"{"industry": "finance"}"#.to_vec(), 422, "/problems/validation", &["name"]),
            ("a blank name", "POST", "/api/v1/customers", JSON, br#"{"name": "   "}"#.to_vec(), 422, "/problems/validation", &["name"]),
            ("removing a required name", "PATCH", &customer, JSON, br#"{"name": null}"#.to_vec(), 422, "/problems/validation", &["name"]),
            ("an opportunity without account and stage", "POST", "/api/v1/opportunities", JSON, r#"{"name": "新项目"}"#.as_bytes().to_vec(), 422, "/problems/validation", &["account_id", "stage"]),
            ("a sign-in without password", "POST", "/api/v1/session", JSON, br#"{"username": "admin"}"#.to_vec(), 422, "/problems/invalid-body", &[]),
            ("a share without target", "POST", &shares, JSON, br#"{"level": "read"}"#.to_vec(), 422, "/problems/invalid-body", &[]),
            ("a body over 1 MiB", "POST", "/api/v1/customers", JSON, oversize.clone().into_bytes(), 413, "/problems/payload-too-large", &[]),
            ("a change over 1 MiB", "PATCH", &customer, JSON, oversize.clone().into_bytes(), 413, "/problems/payload-too-large", &[]),
            ("a sign-in over 1 MiB", "POST", "/api/v1/session", JSON, oversize.clone().into_bytes(), 413, "/problems/payload-too-large", &[]),
            ("JSON sent as text/plain", "POST", "/api/v1/customers", "text/plain", r#"{"name": "新客户"}"#.as_bytes().to_vec(), 415, "/problems/unsupported-media-type", &[]),
            ("a form instead of JSON", "PATCH", &customer, "application/x-www-form-urlencoded", b"name=x".to_vec(), 415, "/problems/unsupported-media-type", &[]),
            ("a CSV upload to a JSON endpoint", "POST", &shares, "text/csv", b"user,level\n5,read\n".to_vec(), 415, "/problems/unsupported-media-type", &[]),
        ];
        for (what, method, path, content_type, body, status, kind, fields) in cases {
            let method = method.parse().expect("method");
            let res = app.request(method, path, &rep, Some((content_type, body))).await;
            let p = problem(&res, status, kind, &format!("[{engine}] {what}"));
            let named = error_fields(&p);
            for f in fields {
                assert!(named.iter().any(|n| n == f), "[{engine}] {what}: the problem should name field {f}: {p}");
            }
            assert_eq!(
                writes(&app, demo.org).await,
                before,
                "[{engine}] {what}: a refused request changed data or the audit trail"
            );
        }
        // A body without any content type is refused like a wrong one.
        let res = app.request("POST".parse().expect("method"), "/api/v1/customers", &rep, None).await;
        problem(&res, 415, "/problems/unsupported-media-type", &format!("[{engine}] no content type"));
        assert_eq!(writes(&app, demo.org).await, before, "[{engine}] no content type: wrote something");

        // The fingerprint does see a write: the same request, well formed, is accepted and recorded.
        app.post_json("/api/v1/customers", &rep, &json!({"name": "新客户 测试"})).await.assert_status(201);
        assert_ne!(writes(&app, demo.org).await, before, "[{engine}] an accepted create must show in the fingerprint");
    }
}

#[track_caller]
fn problem(res: &TestResponse, status: u16, kind: &str, what: &str) -> Value {
    assert_eq!(
        res.status.as_u16(),
        status,
        "{what}: {} {} answered {}: {}",
        res.method,
        res.path,
        res.status,
        res.text()
    );
    res.assert_problem(status, kind)
}

#[tokio::test]
async fn unknown_malformed_and_invisible_ids_answer_alike() {
    for engine in engines() {
        let (app, demo) = demo_app(engine).await;
        // The north manager works the 华北 team's records; an east rep's customer is invisible to them.
        let manager = token(&app, "manager.north").await;
        let (invisible, invisible_name) = customer_of(&app, demo.org, "rep.east1").await;
        let missing = missing_id(&app).await;
        let someone = demo.users["rep.north1"];
        let before = writes(&app, demo.org).await;
        let share = json!({"target": {"kind": "user", "id": someone}, "level": "read"});
        let team = json!({"level": "read"});
        let rename = json!({"name": "改名"});

        let malformed = ["abc", "0", "-1", "1.5", "1e3", "99999999999999999999999", "%20", "null"];
        // (method, path template with {id}, body)
        let requests: Vec<(&str, String, Option<&Value>)> = vec![
            ("GET", "/api/v1/customers/{id}".into(), None),
            ("PATCH", "/api/v1/customers/{id}".into(), Some(&rename)),
            ("DELETE", "/api/v1/customers/{id}".into(), None),
            ("GET", "/api/v1/customers/{id}/explain".into(), None),
            ("GET", "/api/v1/customers/{id}/explain?action=edit".into(), None),
            ("GET", "/api/v1/customers/{id}/contacts".into(), None),
            ("GET", "/api/v1/customers/{id}/opportunities".into(), None),
            ("POST", "/api/v1/customers/{id}/shares".into(), Some(&share)),
            ("POST", "/api/v1/customers/{id}/reveal/phone".into(), None),
            ("PUT", format!("/api/v1/customers/{{id}}/team/{someone}"), Some(&team)),
            ("DELETE", format!("/api/v1/customers/{{id}}/team/{someone}"), None),
        ];
        for (method, template, body) in &requests {
            let send = async |id: &str| {
                let path = template.replace("{id}", id);
                let body = body.map(|b| ("application/json", b.to_string().into_bytes()));
                app.request(method.parse().expect("method"), &path, &manager, body).await
            };
            let reference = send(&missing.to_string()).await;
            let p = reference.assert_problem(404, "/problems/not-found");
            assert_eq!(p["detail"], "no such resource", "[{engine}] {method} {template}");
            let hidden = send(&invisible.to_string()).await;
            assert_eq!(
                (hidden.status, hidden.content_type(), hidden.text()),
                (reference.status, reference.content_type(), reference.text()),
                "[{engine}] {method} {template}: an invisible record must answer exactly like a missing one"
            );
            assert!(
                !hidden.text().contains(&invisible_name),
                "[{engine}] {method} {template}: names the hidden customer"
            );
            for bad in malformed {
                let res = send(bad).await;
                assert_eq!(
                    (res.status, res.text()),
                    (reference.status, reference.text()),
                    "[{engine}] {method} {template} with id {bad:?}: a malformed id must answer like a missing one"
                );
            }
        }
        // The same holds in the child modules.
        for (module, owner) in [
            ("opportunities", "rep.east1"),
            ("contacts", "rep.south1"),
            ("leads", "rep.east2"),
            ("activities", "rep.south2"),
        ] {
            let hidden = app
                .sql_i64s(&format!(
                    "SELECT r.id FROM {module} r JOIN users u ON u.id = r.owner_id WHERE r.org_id = {} AND u.username = '{owner}' ORDER BY r.id",
                    demo.org
                ))
                .await[0];
            let a = app.get(&format!("/api/v1/{module}/{hidden}"), &manager).await;
            let b = app.get(&format!("/api/v1/{module}/{missing}"), &manager).await;
            b.assert_problem(404, "/problems/not-found");
            assert_eq!((a.status, a.text()), (b.status, b.text()), "[{engine}] {module}: invisible vs missing");
        }
        assert_eq!(
            writes(&app, demo.org).await,
            before,
            "[{engine}] requests on unknown or invisible ids wrote something"
        );

        // The same manager does reach a record of their own team (the 404s above are about visibility).
        let (visible, _) = customer_of(&app, demo.org, "rep.north2").await;
        app.get(&format!("/api/v1/customers/{visible}"), &manager).await.assert_status(200);
    }
}

#[tokio::test]
async fn unknown_modules_answer_like_modules_you_cannot_see() {
    for engine in engines() {
        let (app, demo) = demo_app(engine).await;
        let admin = token(&app, "admin").await;
        let service = token(&app, "service1").await;
        let analyst = token(&app, "analyst.east").await;
        let before = writes(&app, demo.org).await;
        let reference = app.get("/api/v1/widgets", &admin).await;
        reference.assert_problem(404, "/problems/not-found");
        let same = |res: TestResponse, what: &str| {
            assert_eq!((res.status, res.text()), (reference.status, reference.text()), "[{engine}] {what}");
        };
        same(app.get("/api/v1/widgets/1", &admin).await, "unknown module, one record");
        same(app.get("/api/v1/widgets/count", &admin).await, "unknown module, count");
        same(app.post_json("/api/v1/widgets", &admin, &json!({"name": "x"})).await, "unknown module, create");
        same(app.post_json("/api/v1/widgets/search", &admin, &json!({})).await, "unknown module, search");
        // Administration areas are not record modules.
        same(app.get("/api/v1/audit", &admin).await, "the audit area as a record module");
        same(app.get("/api/v1/users/1", &admin).await, "the users area as a record module");
        // Customer service has no opportunities; the regional analyst has no tickets.
        let opp = app.sql_i64(&format!("SELECT MIN(id) FROM opportunities WHERE org_id = {}", demo.org)).await;
        let cust = app
            .sql_i64(&format!(
                "SELECT MIN(id) FROM customers WHERE org_id = {} AND customer_type <> 'government'",
                demo.org
            ))
            .await;
        same(app.get("/api/v1/opportunities", &service).await, "service lists opportunities");
        same(app.get("/api/v1/opportunities/count", &service).await, "service counts opportunities");
        same(app.get(&format!("/api/v1/opportunities/{opp}"), &service).await, "service opens an opportunity");
        same(
            app.post_json("/api/v1/opportunities/search", &service, &json!({})).await,
            "service searches opportunities",
        );
        same(
            app.get(&format!("/api/v1/customers/{cust}/opportunities"), &service).await,
            "service opens a customer's opportunities",
        );
        same(
            app.post_json(
                "/api/v1/opportunities",
                &service,
                &json!({"account_id": cust, "name": "x", "stage": "initial"}),
            )
            .await,
            "service creates an opportunity",
        );
        same(app.get("/api/v1/tickets", &analyst).await, "the analyst lists tickets");
        same(app.get("/api/v1/leads", &analyst).await, "the analyst lists leads");
        assert_eq!(writes(&app, demo.org).await, before, "[{engine}] requests to unknown modules wrote something");
        // The modules do exist for someone who holds them.
        app.get("/api/v1/opportunities", &admin).await.assert_status(200);
        app.get("/api/v1/tickets", &service).await.assert_status(200);
    }
}

#[tokio::test]
async fn list_queries_refuse_what_they_do_not_understand() {
    for engine in engines() {
        let (app, demo) = demo_app(engine).await;
        let admin = token(&app, "admin").await;
        let cust = app.sql_i64(&format!("SELECT MIN(id) FROM customers WHERE org_id = {}", demo.org)).await;
        let by_name = app.get("/api/v1/customers?sort=name&limit=2", &admin).await.assert_status(200).json();
        let text_cursor = by_name["next_cursor"].as_str().expect("a second page").to_string();
        let long_q = "查".repeat(101);
        let before = writes(&app, demo.org).await;
        let bad_queries = [
            ("an unknown parameter", "/api/v1/customers?foo=1".to_string()),
            ("a misspelt parameter", "/api/v1/customers?fliter=region:eq:华东".to_string()),
            ("an unknown filter field", "/api/v1/customers?filter=nonsense:eq:1".to_string()),
            ("an unknown filter operator", "/api/v1/customers?filter=name:like:x".to_string()),
            ("a filter without operator", "/api/v1/customers?filter=name".to_string()),
            ("a filter on an internal column", "/api/v1/customers?filter=created_at:gt:0".to_string()),
            ("a word for a number", "/api/v1/customers?filter=annual_revenue:gt:lots".to_string()),
            ("a value outside the list", "/api/v1/customers?filter=customer_type:eq:vip".to_string()),
            ("an unknown sort field", "/api/v1/customers?sort=nonsense".to_string()),
            ("an unknown order", "/api/v1/customers?order=sideways".to_string()),
            ("a cursor that is not hex", "/api/v1/customers?after=zz".to_string()),
            ("a cursor of random bytes", "/api/v1/customers?after=deadbeef".to_string()),
            ("a cursor of another sort order", format!("/api/v1/customers?after={text_cursor}")),
            ("limit 0", "/api/v1/customers?limit=0".to_string()),
            ("limit 201", "/api/v1/customers?limit=201".to_string()),
            ("a negative limit", "/api/v1/customers?limit=-1".to_string()),
            ("a word for a limit", "/api/v1/customers?limit=all".to_string()),
            ("search text over 100 characters", format!("/api/v1/customers?q={long_q}")),
            ("an unknown count parameter", "/api/v1/customers/count?foo=1".to_string()),
            ("paging a count", "/api/v1/customers/count?limit=5".to_string()),
            (
                "an unknown filter field on a related list",
                format!("/api/v1/customers/{cust}/contacts?filter=nonsense:eq:1"),
            ),
            ("a bad cursor on a related list", format!("/api/v1/customers/{cust}/contacts?after=zz")),
            ("an unknown action to explain", format!("/api/v1/customers/{cust}/explain?action=fly")),
        ];
        for (what, path) in bad_queries {
            let res = app.get(&path, &admin).await;
            problem(&res, 400, "/problems/bad-request", &format!("[{engine}] {what}"));
        }
        let bad_searches = [
            ("limit 0", json!({"limit": 0}), 400, "/problems/bad-request"),
            ("limit 500", json!({"limit": 500}), 400, "/problems/bad-request"),
            (
                "an unknown filter field",
                json!({"filters": [{"field": "nonsense", "op": "eq", "value": 1}]}),
                400,
                "/problems/bad-request",
            ),
            ("a bad cursor", json!({"after": "zz"}), 400, "/problems/bad-request"),
            (
                "a number for a text filter",
                json!({"filters": [{"field": "region", "op": "eq", "value": 1}]}),
                400,
                "/problems/bad-request",
            ),
            (
                "an unknown operator",
                json!({"filters": [{"field": "name", "op": "like", "value": "x"}]}),
                422,
                "/problems/invalid-body",
            ),
            ("a negative limit", json!({"limit": -5}), 422, "/problems/invalid-body"),
        ];
        for (what, body, status, kind) in bad_searches {
            let res = app.post_json("/api/v1/customers/search", &admin, &body).await;
            problem(&res, status, kind, &format!("[{engine}] search with {what}"));
        }
        assert_eq!(writes(&app, demo.org).await, before, "[{engine}] refused queries wrote something");
        // The well-formed versions are accepted.
        app.get("/api/v1/customers?filter=region:eq:华东&sort=name&order=asc&limit=200", &admin)
            .await
            .assert_status(200);
        app.get(&format!("/api/v1/customers?sort=name&after={text_cursor}"), &admin).await.assert_status(200);
        app.get(&format!("/api/v1/customers/{cust}/explain?action=edit"), &admin).await.assert_status(200);
    }
}

#[tokio::test]
async fn requests_without_a_valid_token_are_refused() {
    for engine in engines() {
        let (app, demo) = demo_app(engine).await;
        let signed_out = app.sign_in("rep.north1", crm::demo::PERSONA_PASSWORD).await;
        app.delete("/api/v1/session", &signed_out).await.assert_status(204);
        let before = writes(&app, demo.org).await;
        let cust = app.sql_i64(&format!("SELECT MIN(id) FROM customers WHERE org_id = {}", demo.org)).await;
        let reference = app.get("/api/v1/customers", "").await;
        reference.assert_problem(401, "/problems/unauthorized");
        let headers: [(&str, String); 6] = [
            ("an empty bearer token", "Bearer ".into()),
            ("an unknown token", "Bearer 0123456789abcdef".into()),
            ("a token of 300 characters", format!("Bearer {}", "a".repeat(300))),
            ("another scheme", format!("Basic {signed_out}")),
            ("a bare token", signed_out.clone()),
            ("a signed-out token", format!("Bearer {signed_out}")),
        ];
        for path in ["/api/v1/customers", "/api/v1/me", &format!("/api/v1/customers/{cust}"), "/api/v1/customers/count"]
        {
            for (what, value) in &headers {
                let req = axum::http::Request::builder().uri(path).header("authorization", value);
                let res = app.send(req.body(axum::body::Body::empty()).expect("request")).await;
                assert_eq!(
                    (res.status, res.text()),
                    (reference.status, reference.text()),
                    "[{engine}] GET {path} with {what}"
                );
                assert_eq!(
                    res.headers.get("www-authenticate"),
                    reference.headers.get("www-authenticate"),
                    "[{engine}] {what}"
                );
            }
        }
        let res = app.post_json("/api/v1/customers", "", &json!({"name": "匿名客户"})).await;
        res.assert_problem(401, "/problems/unauthorized");
        let res = app.post_json("/api/v1/session", "", &json!({"username": "rep.north1", "password": "wrong"})).await;
        res.assert_problem(401, "/problems/invalid-credentials");
        // A failed sign-in does not tell whether the user exists.
        let nobody =
            app.post_json("/api/v1/session", "", &json!({"username": "rep.nowhere", "password": "wrong"})).await;
        assert_eq!(
            (nobody.status, nobody.text()),
            (res.status, res.text()),
            "[{engine}] unknown user vs wrong password"
        );
        let after = writes(&app, demo.org).await;
        // Only the failed sign-in of the existing user is recorded: one audit entry, nothing else.
        let changed: Vec<_> = before.iter().zip(&after).filter(|(a, b)| a != b).map(|(a, _)| a.0.clone()).collect();
        assert_eq!(
            changed,
            ["audit entries", "audit sequence"],
            "[{engine}] unauthenticated requests changed {changed:?}"
        );
        assert_eq!(after.last().map(|a| a.1), before.last().map(|b| b.1 + 1), "[{engine}] exactly one audit entry");
    }
}

#[tokio::test]
async fn unsupported_methods_answer_405_with_a_problem() {
    for engine in engines() {
        let (app, demo) = demo_app(engine).await;
        let admin = token(&app, "admin").await;
        let cust = app.sql_i64(&format!("SELECT MIN(id) FROM customers WHERE org_id = {}", demo.org)).await;
        let before = writes(&app, demo.org).await;
        for (method, path, allowed) in [
            ("PUT", "/api/v1/customers".to_string(), "GET,HEAD,POST"),
            ("DELETE", "/api/v1/customers".to_string(), "GET,HEAD,POST"),
            ("POST", format!("/api/v1/customers/{cust}"), "GET,HEAD,PATCH,DELETE"),
            ("GET", "/api/v1/session".to_string(), "POST,DELETE"),
            ("GET", "/api/v1/customers/search".to_string(), "POST"),
            ("DELETE", "/api/v1/me".to_string(), "GET,HEAD"),
        ] {
            let res = app
                .request(method.parse().expect("method"), &path, &admin, Some(("application/json", b"{}".to_vec())))
                .await;
            problem(&res, 405, "/problems/method-not-allowed", &format!("[{engine}] {method} {path}"));
            let allow = res.headers.get("allow").and_then(|h| h.to_str().ok()).unwrap_or("");
            let mut got: Vec<&str> = allow.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
            let mut want: Vec<&str> = allowed.split(',').collect();
            got.sort_unstable();
            want.sort_unstable();
            assert_eq!(got, want, "[{engine}] {method} {path}: a 405 must list the allowed methods in Allow");
        }
        assert_eq!(writes(&app, demo.org).await, before, "[{engine}] refused methods wrote something");
    }
}

// The two tests below fail until the defects they name are fixed in crm-api (reported with the fix).

/// Query strings and path segments that axum's own `Query` and `Path` extractors refuse answer in plain text
/// today (records explain, and the administration API's explain, policy and id paths), not as problem documents.
#[tokio::test]
async fn refused_query_strings_and_path_ids_are_problem_documents_everywhere() {
    for engine in engines() {
        let (app, demo) = demo_app(engine).await;
        let admin = token(&app, "admin").await;
        let cust = app.sql_i64(&format!("SELECT MIN(id) FROM customers WHERE org_id = {}", demo.org)).await;
        let user = demo.users["rep.north1"];
        let before = writes(&app, demo.org).await;
        let requests = [
            ("GET", format!("/api/v1/customers/{cust}/explain?foo=1"), None),
            ("GET", format!("/api/v1/admin/explain?user={user}&module=customers&record={cust}&foo=1"), None),
            ("GET", format!("/api/v1/admin/explain?user=someone&module=customers&record={cust}"), None),
            ("GET", "/api/v1/admin/access/customers/abc".to_string(), None),
            ("GET", "/api/v1/admin/users/abc/permissions".to_string(), None),
            ("PUT", "/api/v1/admin/policy?dry_run=maybe".to_string(), Some(("application/json", b"{}".to_vec()))),
        ];
        let mut plain = Vec::new();
        for (method, path, body) in requests {
            let res = app.request(method.parse().expect("method"), &path, &admin, body).await;
            if !(res.status.is_client_error() && res.content_type() == "application/problem+json") {
                plain.push(format!("{method} {path} → {} {:?}: {}", res.status, res.content_type(), res.text()));
            }
        }
        assert!(plain.is_empty(), "[{engine}] refusals that are not problem documents:\n{}", plain.join("\n"));
        assert_eq!(writes(&app, demo.org).await, before, "[{engine}] refused requests wrote something");
    }
}

/// RFC 9110 §11.6.1: a 401 carries `WWW-Authenticate` naming the scheme to use.
#[tokio::test]
async fn a_401_tells_the_client_to_authenticate_with_a_bearer_token() {
    for engine in engines() {
        let app = TestApp::builder().engine(engine).build().await;
        for res in [app.get("/api/v1/customers", "").await, app.get("/api/v1/me", "not-a-token").await] {
            res.assert_problem(401, "/problems/unauthorized");
            let challenge = res.headers.get("www-authenticate").and_then(|h| h.to_str().ok()).unwrap_or("");
            assert!(
                challenge.starts_with("Bearer"),
                "[{engine}] {}: a 401 must carry WWW-Authenticate: Bearer, got {challenge:?}",
                res.path
            );
        }
    }
}
