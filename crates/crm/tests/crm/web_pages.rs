//! The web UI's pages in process (no browser): security headers, CSRF on forms, escaping, the not-found page for
//! records one may not see, server-side validation messages, and above all that a page never carries a field the
//! viewer may not read, not even hidden in the HTML. Runs on every engine.

use crate::support::{demo_app, token};
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use crm_testkit::{TestApp, engines};
use tower::ServiceExt;

/// A browser-like client of the UI router: keeps the session cookie and the page's CSRF token.
struct Browser {
    router: axum::Router,
    cookies: Vec<String>,
    accept_language: &'static str,
}

struct Page {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    html: String,
}

impl Page {
    /// The value of the first hidden input named `name`.
    fn hidden(&self, name: &str) -> String {
        let marker = format!("name=\"{name}\" value=\"");
        let start =
            self.html.find(&marker).unwrap_or_else(|| panic!("no {name} field in:\n{}", self.html)) + marker.len();
        self.html[start..].split('"').next().unwrap_or_default().to_string()
    }
}

impl Browser {
    fn new(app: &TestApp, accept_language: &'static str) -> Browser {
        let state = crm_api::AppState { store: app.store.clone(), metrics: crm_api::metrics_handle() };
        let router = crm_api::router_with_ui(state, crm_api::client::NetConfig::default(), crm_web::routes());
        Browser { router, cookies: Vec::new(), accept_language }
    }

    async fn send(&mut self, req: Request<Body>) -> Page {
        let res = self.router.clone().oneshot(req).await.expect("the router answers");
        for c in res.headers().get_all(header::SET_COOKIE) {
            let pair = c.to_str().unwrap_or_default().split(';').next().unwrap_or_default().to_string();
            let name = pair.split('=').next().unwrap_or_default().to_string();
            self.cookies.retain(|c| !c.starts_with(&format!("{name}=")));
            if !pair.ends_with('=') {
                self.cookies.push(pair);
            }
        }
        let status = res.status();
        let headers = res.headers().clone();
        let body = axum::body::to_bytes(res.into_body(), 16 << 20).await.expect("body");
        Page { status, headers, html: String::from_utf8_lossy(&body).into_owned() }
    }

    fn request(&self, method: &str, path: &str) -> axum::http::request::Builder {
        Request::builder()
            .method(method)
            .uri(path)
            .header(header::COOKIE, self.cookies.join("; "))
            .header(header::ACCEPT_LANGUAGE, self.accept_language)
    }

    async fn get(&mut self, path: &str) -> Page {
        let req = self.request("GET", path).body(Body::empty()).expect("request");
        self.send(req).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
        let req = self
            .request("POST", path)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(body))
            .expect("request");
        self.send(req).await
    }

    async fn sign_in(&mut self, username: &str) {
        let form = self.get("/app/sign-in").await;
        let csrf = form.hidden("signin_csrf");
        let password = crm::demo::password_for(username);
        let done =
            self.post("/app/sign-in", &[("username", username), ("password", password), ("signin_csrf", &csrf)]).await;
        assert_eq!(done.status, StatusCode::SEE_OTHER, "{username} signs in: {}", done.html);
    }
}

#[tokio::test]
async fn pages_carry_strict_security_headers_and_no_inline_script() {
    for engine in engines() {
        let (app, _) = demo_app(engine).await;
        let mut b = Browser::new(&app, "zh-CN");
        for path in ["/app/sign-in", "/app"] {
            let page = b.get(path).await;
            let csp = page.headers.get(header::CONTENT_SECURITY_POLICY).and_then(|v| v.to_str().ok()).unwrap_or("");
            for part in ["script-src 'self'", "frame-ancestors 'none'", "style-src 'self'", "form-action 'self'"] {
                assert!(csp.contains(part), "[{engine}] {path}: CSP lacks {part}: {csp}");
            }
            assert_eq!(page.headers.get(header::X_CONTENT_TYPE_OPTIONS).map(|v| v.as_bytes()), Some(&b"nosniff"[..]));
        }
        b.sign_in("rep.north1").await;
        let home = b.get("/app").await;
        assert_eq!(home.status, StatusCode::OK);
        assert!(!home.html.contains("<script>") && !home.html.contains(" onclick="), "[{engine}] no inline script");
        assert!(home.html.contains("<script src=\"/app/static/app.js\""), "[{engine}] the one script is a file");
    }
}

#[tokio::test]
async fn a_hidden_field_never_reaches_the_html_and_a_masked_one_only_masked() {
    for engine in engines() {
        let (app, _) = demo_app(engine).await;
        // A customer that customer service may see (not government), with revenue and a phone.
        let id = app
            .sql_i64("SELECT MIN(id) FROM customers WHERE customer_type <> 'government' AND annual_revenue IS NOT NULL")
            .await;
        let revenue = app.sql_i64(&format!("SELECT annual_revenue FROM customers WHERE id = {id}")).await;
        let phone = app.sql_strings(&format!("SELECT phone FROM customers WHERE id = {id}")).await.remove(0);
        let mut b = Browser::new(&app, "zh-CN");
        b.sign_in("service1").await;
        let pages = [b.get(&format!("/app/r/customers/{id}")).await, b.get("/app/r/customers").await];
        for page in &pages {
            assert_eq!(page.status, StatusCode::OK);
            let zh_money = crm_web::i18n::Lang::Zh.money(revenue);
            for leak in ["annual_revenue", "年营业额", zh_money.as_str(), &revenue.to_string(), &phone] {
                assert!(!page.html.contains(leak), "[{engine}] the page carries {leak:?}");
            }
        }
        assert!(pages[0].html.contains("****"), "[{engine}] the phone is shown masked");
        assert!(pages[0].html.contains("id=\"reveal-phone\""), "[{engine}] with a reveal button (service may reveal)");

        // Revealing needs the session's CSRF token; with it, the clear value appears once.
        let refused = b.post(&format!("/app/r/customers/{id}/reveal/phone"), &[("csrf_token", "wrong")]).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "[{engine}] a reveal without the CSRF token");
        assert!(!refused.html.contains(&phone));
        let csrf = pages[0].hidden("csrf_token");
        let revealed = b.post(&format!("/app/r/customers/{id}/reveal/phone"), &[("csrf_token", &csrf)]).await;
        assert_eq!(revealed.status, StatusCode::OK, "[{engine}] {}", revealed.html);
        assert!(revealed.html.contains(&phone), "[{engine}] the clear phone after reveal");
        let audited = app
            .sql_i64(&format!("SELECT COUNT(*) FROM audit_log WHERE action = 'record.reveal' AND record_id = {id}"))
            .await;
        assert_eq!(audited, 1, "[{engine}] the reveal is audited");

        // A representative may not reveal: no button, and the form post is refused.
        let mut rep = Browser::new(&app, "en");
        rep.sign_in("rep.north1").await;
        let own = app
            .sql_i64(
                "SELECT MIN(c.id) FROM customers c JOIN users u ON u.id = c.owner_id WHERE u.username = 'rep.north1'",
            )
            .await;
        let page = rep.get(&format!("/app/r/customers/{own}")).await;
        assert!(!page.html.contains("reveal-"), "[{engine}] nothing is masked for the owner, nothing to reveal");
    }
}

#[tokio::test]
async fn a_record_one_may_not_see_is_the_not_found_page_and_values_are_escaped() {
    for engine in engines() {
        let (app, _) = demo_app(engine).await;
        let hidden = app
            .sql_i64(
                "SELECT MIN(c.id) FROM customers c JOIN users u ON u.id = c.owner_id WHERE u.username = 'rep.south1'",
            )
            .await;
        let mut b = Browser::new(&app, "en");
        b.sign_in("rep.north1").await;
        let not_allowed = b.get(&format!("/app/r/customers/{hidden}")).await;
        let missing = b.get("/app/r/customers/999999999").await;
        assert_eq!(not_allowed.status, StatusCode::NOT_FOUND);
        assert_eq!(not_allowed.html, missing.html, "[{engine}] another's record looks exactly like a missing one");
        assert!(missing.html.contains("No such record"), "[{engine}] in English");
        let unknown = b.get("/app/no/such/page").await;
        assert_eq!(unknown.status, StatusCode::NOT_FOUND);
        assert!(unknown.html.contains("No such record"), "[{engine}] unknown pages are UI pages too");

        // A customer name with markup is shown as text.
        let admin = token(&app, "admin").await;
        let own = app
            .sql_i64(
                "SELECT MIN(c.id) FROM customers c JOIN users u ON u.id = c.owner_id WHERE u.username = 'rep.north1'",
            )
            .await;
        app.patch_json(
            &format!("/api/v1/customers/{own}"),
            &admin,
            &serde_json::json!({"name": "<script>alert(1)</script>"}),
        )
        .await
        .assert_status(200);
        let page = b.get(&format!("/app/r/customers/{own}")).await;
        assert!(!page.html.contains("<script>alert(1)"), "[{engine}] markup in data is escaped");
        assert!(page.html.contains("&#60;script&#62;") || page.html.contains("&lt;script&gt;"), "[{engine}]");

        // The edit form answers a bad value with the store's message next to the field, keeping what was typed.
        let form = b.get(&format!("/app/r/customers/{own}/edit")).await;
        assert_eq!(form.status, StatusCode::OK);
        assert!(!form.html.contains("name=\"annual_revenue\""), "[{engine}] read-only revenue is not an input");
        let csrf = form.hidden("csrf_token");
        let bad = b
            .post(
                &format!("/app/r/customers/{own}/edit"),
                &[("csrf_token", &csrf), ("name", "Acme"), ("email", "not-an-email")],
            )
            .await;
        assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "[{engine}] {}", bad.html);
        assert!(bad.html.contains("id=\"err-email\"") && bad.html.contains("not-an-email"), "[{engine}]");
        assert!(bad.html.contains("must be an e-mail address"), "[{engine}] the store's message, in English");
        // The same in Chinese: a known store message is translated.
        let mut zh = Browser::new(&app, "zh-CN");
        zh.sign_in("rep.north1").await;
        let zh_form = zh.get(&format!("/app/r/customers/{own}/edit")).await;
        let zh_csrf = zh_form.hidden("csrf_token");
        let zh_bad = zh
            .post(
                &format!("/app/r/customers/{own}/edit"),
                &[("csrf_token", &zh_csrf), ("name", "Acme"), ("email", "not-an-email")],
            )
            .await;
        assert!(zh_bad.html.contains("必须是电子邮箱地址"), "[{engine}] translated: {}", zh_bad.html);
        let good =
            b.post(&format!("/app/r/customers/{own}/edit"), &[("csrf_token", &csrf), ("name", "Acme 北方")]).await;
        assert_eq!(good.status, StatusCode::SEE_OTHER, "[{engine}] {}", good.html);
        assert!(b.get(&format!("/app/r/customers/{own}")).await.html.contains("Acme 北方"));
    }
}

#[tokio::test]
async fn the_language_follows_the_browser_then_the_switch() {
    for engine in engines() {
        let (app, _) = demo_app(engine).await;
        let mut b = Browser::new(&app, "en-US,en;q=0.9");
        let page = b.get("/app/sign-in").await;
        assert!(page.html.contains("<html lang=\"en\">") && page.html.contains(">Sign in<"), "[{engine}]");
        let wrong = b
            .post(
                "/app/sign-in",
                &[("username", "rep.north1"), ("password", "wrong"), ("signin_csrf", &page.hidden("signin_csrf"))],
            )
            .await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
        assert!(wrong.html.contains("Invalid username or password."), "[{engine}] the error in English");
        let switched = b.get("/app/lang/zh?back=/app/sign-in").await;
        assert_eq!(switched.status, StatusCode::SEE_OTHER);
        assert_eq!(switched.headers.get(header::LOCATION).map(|v| v.as_bytes()), Some(&b"/app/sign-in"[..]));
        let page = b.get("/app/sign-in").await;
        assert!(page.html.contains("<html lang=\"zh-CN\">") && page.html.contains(">登录<"), "[{engine}]");
        // The switch never sends anyone to another site.
        let away = b.get("/app/lang/en?back=https://evil.example/").await;
        assert_eq!(away.headers.get(header::LOCATION).map(|v| v.as_bytes()), Some(&b"/app"[..]), "[{engine}]");
    }
}

#[tokio::test]
async fn sharing_from_the_record_page_opens_it_to_a_colleague() {
    for engine in engines() {
        let (app, _) = demo_app(engine).await;
        let own = app
            .sql_i64(
                "SELECT MIN(c.id) FROM customers c JOIN users u ON u.id = c.owner_id WHERE u.username = 'rep.north1'",
            )
            .await;
        let mut colleague = Browser::new(&app, "zh-CN");
        colleague.sign_in("rep.north2").await;
        assert_eq!(colleague.get(&format!("/app/r/customers/{own}")).await.status, StatusCode::NOT_FOUND);

        let mut owner = Browser::new(&app, "zh-CN");
        owner.sign_in("rep.north1").await;
        let page = owner.get(&format!("/app/r/customers/{own}")).await;
        assert!(page.html.contains("id=\"share-dialog\""), "[{engine}] the owner may share");
        let csrf = page.hidden("csrf_token");
        let unknown = owner
            .post(
                &format!("/app/r/customers/{own}/share"),
                &[("csrf_token", &csrf), ("username", "nobody"), ("level", "read"), ("kind", "share")],
            )
            .await;
        assert_eq!(unknown.status, StatusCode::UNPROCESSABLE_ENTITY, "[{engine}]");
        assert!(unknown.html.contains("没有这个用户"), "[{engine}] {}", unknown.html);
        let shared = owner
            .post(
                &format!("/app/r/customers/{own}/share"),
                &[("csrf_token", &csrf), ("username", "rep.north2"), ("level", "read"), ("kind", "share")],
            )
            .await;
        assert_eq!(shared.status, StatusCode::SEE_OTHER, "[{engine}] {}", shared.html);
        assert!(owner.get(&format!("/app/r/customers/{own}?done=shared")).await.html.contains("已共享"));
        let seen = colleague.get(&format!("/app/r/customers/{own}")).await;
        assert_eq!(seen.status, StatusCode::OK, "[{engine}] shared records open for the colleague at once");
    }
}

#[tokio::test]
async fn administrators_manage_users_and_read_the_configuration_from_the_console() {
    for engine in engines() {
        let (app, _) = demo_app(engine).await;
        let mut admin = Browser::new(&app, "en");
        admin.sign_in("admin").await;
        let index = admin.get("/app/admin").await;
        assert_eq!(index.status, StatusCode::OK);
        for link in ["admin-users", "admin-departments", "admin-policy", "admin-explain"] {
            assert!(index.html.contains(&format!("id=\"{link}\"")), "[{engine}] the console links {link}");
        }
        let policy = admin.get("/app/admin/policy").await;
        assert!(policy.html.contains("Service never sees government customers"), "[{engine}] restriction rules");
        assert!(policy.html.contains("Controlled by parent"), "[{engine}] defaults");
        let tree = admin.get("/app/admin/departments").await;
        assert!(tree.html.contains("华北区 North") && tree.html.contains("data-depth=\"2\""), "[{engine}] the tree");

        // Move 华北区 under 华南区; moving 华南区 under it in turn would be a cycle: refused, nothing changes.
        let dept = |name: &'static str| {
            let app = &app;
            async move { app.sql_i64(&format!("SELECT id FROM departments WHERE name = '{name}'")).await }
        };
        let (north, south) = (dept("华北区 North").await, dept("华南区 South").await);
        let parent_of = |id: i64| {
            let app = &app;
            async move { app.sql_i64(&format!("SELECT COALESCE(parent_id, 0) FROM departments WHERE id = {id}")).await }
        };
        let south_parent = parent_of(south).await;
        let csrf = tree.hidden("csrf_token");
        let (n, s) = (north.to_string(), south.to_string());
        let moved = admin
            .post("/app/admin/departments/move", &[("csrf_token", &csrf), ("department", &n), ("parent", &s)])
            .await;
        assert_eq!(moved.status, StatusCode::SEE_OTHER, "[{engine}] {}", moved.html);
        assert_eq!(parent_of(north).await, south, "[{engine}] moved");
        let cycle = admin
            .post("/app/admin/departments/move", &[("csrf_token", &csrf), ("department", &s), ("parent", &n)])
            .await;
        assert_eq!(cycle.status, StatusCode::UNPROCESSABLE_ENTITY, "[{engine}] {}", cycle.html);
        assert!(cycle.html.contains("cycle"), "[{engine}] the refusal says why: {}", cycle.html);
        assert_eq!(parent_of(south).await, south_parent, "[{engine}] the refused move changed nothing");
        let refused = admin
            .post("/app/admin/departments/move", &[("csrf_token", "forged"), ("department", &n), ("parent", &n)])
            .await;
        assert_ne!(refused.status, StatusCode::SEE_OTHER, "[{engine}] a forged form moves nothing");

        // Create a user, then deactivate one: their next sign-in fails.
        let users = admin.get("/app/admin/users").await;
        let csrf = users.hidden("csrf_token");
        let rep_role = crm::templates::ROLE_REP.to_string();
        let north = app.sql_i64("SELECT id FROM departments WHERE name = '华北区 North'").await.to_string();
        let created = admin
            .post(
                "/app/admin/users/new",
                &[
                    ("csrf_token", &csrf),
                    ("username", "rep.north3"),
                    ("display_name", "新代表"),
                    ("email", ""),
                    ("password", "a-long-enough-password-2026"),
                    ("department", &north),
                    ("role", &rep_role),
                ],
            )
            .await;
        assert_eq!(created.status, StatusCode::SEE_OTHER, "[{engine}] {}", created.html);
        assert!(admin.get("/app/admin/users").await.html.contains("id=\"user-rep.north3\""), "[{engine}]");
        let id = app.sql_i64("SELECT id FROM users WHERE username = 'rep.south2'").await;
        let done = admin
            .post(&format!("/app/admin/users/{id}/status"), &[("csrf_token", &csrf), ("status", "deactivated")])
            .await;
        assert_eq!(done.status, StatusCode::SEE_OTHER, "[{engine}] {}", done.html);
        let mut gone = Browser::new(&app, "en");
        let form = gone.get("/app/sign-in").await;
        let refused = gone
            .post(
                "/app/sign-in",
                &[
                    ("username", "rep.south2"),
                    ("password", crm::demo::PERSONA_PASSWORD),
                    ("signin_csrf", &form.hidden("signin_csrf")),
                ],
            )
            .await;
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "[{engine}] a deactivated user cannot sign in");

        // Explain access: why rep.north1 sees their own customer, and who else can.
        let rep = app.sql_i64("SELECT id FROM users WHERE username = 'rep.north1'").await;
        let own = app.sql_i64(&format!("SELECT MIN(id) FROM customers WHERE owner_id = {rep}")).await;
        let why = admin.get(&format!("/app/admin/explain?user={rep}&module=customers&record={own}")).await;
        assert!(why.html.contains("id=\"explain-result\"") && why.html.contains("Allowed"), "[{engine}]");
        assert!(why.html.contains("Role data scope"), "[{engine}] names the rule: {}", why.html);
        assert!(why.html.contains("id=\"who-can-see\"") && why.html.contains("manager.north"), "[{engine}]");

        // A representative has no console.
        let mut rep_browser = Browser::new(&app, "en");
        rep_browser.sign_in("rep.north1").await;
        assert_eq!(rep_browser.get("/app/admin").await.status, StatusCode::NOT_FOUND, "[{engine}]");
        assert_eq!(rep_browser.get("/app/admin/users").await.status, StatusCode::NOT_FOUND, "[{engine}]");
        // API tokens: created on the account page and shown once.
        let account = rep_browser.get("/app/account").await;
        let made = rep_browser
            .post("/app/account/tokens", &[("csrf_token", &account.hidden("csrf_token")), ("name", "报表同步")])
            .await;
        assert!(made.html.contains("id=\"new-token\"") && made.html.contains("crm_pat_"), "[{engine}]");
        assert!(!rep_browser.get("/app/account").await.html.contains("id=\"new-token\""), "[{engine}] shown once");
    }
}

#[tokio::test]
async fn csv_import_reports_every_bad_row_and_imports_all_or_nothing() {
    for engine in engines() {
        let (app, _) = demo_app(engine).await;
        // Representatives get the import right on customers (the demo's roles have none).
        let admin = token(&app, "admin").await;
        let mut policy = app.get("/api/v1/admin/policy", &admin).await.assert_status(200).json()["policy"].clone();
        let rep_role = policy["roles"]
            .as_array_mut()
            .and_then(|roles| roles.iter_mut().find(|r| r["id"] == crm::templates::ROLE_REP))
            .expect("the representative role");
        rep_role["permissions"]["customers"]["import"] = "own".into();
        let body = serde_json::to_vec(&policy).expect("JSON");
        app.request(axum::http::Method::PUT, "/api/v1/admin/policy", &admin, Some(("application/json", body)))
            .await
            .assert_status(200);

        let before = app.sql_i64("SELECT COUNT(*) FROM customers").await;
        let mut rep = Browser::new(&app, "en");
        rep.sign_in("rep.north1").await;
        let list = rep.get("/app/r/customers").await;
        assert!(list.html.contains("id=\"import-csv-link\""), "[{engine}] the list offers the import");
        let form = rep.get("/app/r/customers/import").await;
        assert!(
            form.html.contains("id=\"import-progress\"") && form.html.contains("for=\"import-progress\""),
            "[{engine}] the import shows a labelled progress bar"
        );
        assert_eq!(form.status, StatusCode::OK);
        let csrf = form.hidden("csrf_token");
        let bad_csv = "name,email,customer_type\n北京新客户有限公司,ok@example.com,smb\n,not-an-email,smb\n";
        let bad = rep.post("/app/r/customers/import", &[("csrf_token", &csrf), ("csv", bad_csv)]).await;
        assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "[{engine}] {}", bad.html);
        assert!(bad.html.contains("id=\"import-errors\"") && bad.html.contains("email"), "[{engine}] {}", bad.html);
        assert_eq!(app.sql_i64("SELECT COUNT(*) FROM customers").await, before, "[{engine}] nothing imported");
        let good_csv = "name,customer_type\n北京新客户有限公司,smb\nNew Customer Ltd.,enterprise\n";
        let good = rep.post("/app/r/customers/import", &[("csrf_token", &csrf), ("csv", good_csv)]).await;
        assert!(good.html.contains("2 records imported."), "[{engine}] {}", good.html);
        assert_eq!(app.sql_i64("SELECT COUNT(*) FROM customers").await, before + 2, "[{engine}]");

        // Without the right the page does not exist.
        let mut other = Browser::new(&app, "en");
        other.sign_in("service1").await;
        assert_eq!(other.get("/app/r/customers/import").await.status, StatusCode::NOT_FOUND, "[{engine}]");
    }
}

#[tokio::test]
async fn sign_in_policies_are_shown_and_validated_before_they_change() {
    for engine in engines() {
        let (app, _) = demo_app(engine).await;
        let mut admin = Browser::new(&app, "zh-CN");
        admin.sign_in("admin").await;
        let page = admin.get("/app/admin/security").await;
        assert_eq!(page.status, StatusCode::OK, "[{engine}] {}", page.html);
        assert!(page.html.contains("IP 白名单") && page.html.contains("id=\"role-security\""), "[{engine}]");
        let csrf = page.hidden("csrf_token");
        let audit = admin.get("/app/audit").await;
        assert!(audit.html.contains(" UTC</td>") && !audit.html.contains(" CST</td>"), "[{engine}] times in UTC first");
        let bad = admin
            .post("/app/admin/security", &[("csrf_token", &csrf), ("allowlist", ""), ("time_zone", "Mars/Olympus")])
            .await;
        assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "[{engine}] {}", bad.html);
        assert!(bad.html.contains("time_zone") && bad.html.contains("Mars/Olympus"), "[{engine}]");
        let good = admin
            .post("/app/admin/security", &[("csrf_token", &csrf), ("allowlist", ""), ("time_zone", "Asia/Shanghai")])
            .await;
        assert_eq!(good.status, StatusCode::SEE_OTHER, "[{engine}] {}", good.html);
        assert!(admin.get("/app/admin/security").await.html.contains("value=\"Asia/Shanghai\""), "[{engine}]");
        // Per role: representatives only from the office network, on weekdays and Saturday mornings.
        let rep = crm::templates::ROLE_REP;
        let (networks, hours) = (format!("networks_{rep}"), format!("hours_{rep}"));
        let form = |n: &'static str, h: &'static str| {
            vec![
                ("csrf_token".to_string(), csrf.clone()),
                ("allowlist".to_string(), String::new()),
                ("time_zone".to_string(), "Asia/Shanghai".to_string()),
                (networks.clone(), n.to_string()),
                (hours.clone(), h.to_string()),
            ]
        };
        let fields = form("10.0.0.0/8, 192.168.1.0/24", "mon-fri 09:00-18:00; sat 10:00-14:00");
        let pairs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let saved = admin.post("/app/admin/security", &pairs).await;
        assert_eq!(saved.status, StatusCode::SEE_OTHER, "[{engine}] {}", saved.html);
        let shown = admin.get("/app/admin/security").await.html;
        assert!(shown.contains("value=\"10.0.0.0/8, 192.168.1.0/24\""), "[{engine}] the role's networks are shown");
        assert!(shown.contains("value=\"mon,tue,wed,thu,fri 09:00-18:00; sat 10:00-14:00\""), "[{engine}] hours");
        let refusals =
            [("", "someday 09:00-18:00", "someday"), ("", "mon 25:00-26:00", "25:00"), ("not-a-net", "", "not-a-net")];
        for (n, h, says) in refusals {
            let fields = form(n, h);
            let pairs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let refused = admin.post("/app/admin/security", &pairs).await;
            assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "[{engine}] {n} {h}: {}", refused.html);
            assert!(refused.html.contains(says), "[{engine}] the refusal names {says}: {}", refused.html);
        }
        let unchanged = admin.get("/app/admin/security").await.html;
        assert!(unchanged.contains("value=\"10.0.0.0/8, 192.168.1.0/24\""), "[{engine}] refused saves changed nothing");
        // From the next page on, times are shown in the organization's time zone.
        let audit = admin.get("/app/audit").await;
        assert!(audit.html.contains(" CST</td>") && !audit.html.contains(" UTC</td>"), "[{engine}] times in CST");
        let id = app.sql_i64("SELECT MIN(id) FROM customers").await;
        let record = admin.get(&format!("/app/r/customers/{id}")).await;
        assert!(record.html.contains(" CST</dd>"), "[{engine}] record times in CST");
    }
}

#[tokio::test]
async fn a_default_changed_in_the_console_holds_at_the_next_page_and_is_explained() {
    for engine in engines() {
        let (app, _) = demo_app(engine).await;
        let all = app.sql_i64("SELECT COUNT(*) FROM customers").await;
        let mut rep = Browser::new(&app, "zh-CN");
        rep.sign_in("rep.north1").await;
        let own = rep.get("/app/r/customers").await;
        assert!(!own.html.contains(&format!("data-count=\"{all}\"")), "[{engine}] a representative starts with own");
        let first = app
            .sql_i64(
                "SELECT MIN(c.id) FROM customers c JOIN users u ON u.id = c.owner_id WHERE u.username = 'rep.north1'",
            )
            .await;
        let why = rep.get(&format!("/app/r/customers/{first}/why")).await;
        assert!(why.html.contains("角色数据范围") && why.html.contains("本人"), "[{engine}] {}", why.html);

        let mut admin = Browser::new(&app, "zh-CN");
        admin.sign_in("admin").await;
        let page = admin.get("/app/admin/policy").await;
        assert!(page.html.contains("id=\"defaults-form\""), "[{engine}]");
        let saved = admin
            .post(
                "/app/admin/policy/defaults",
                &[("csrf_token", &page.hidden("csrf_token")), ("default.customers", "public_read")],
            )
            .await;
        assert_eq!(saved.status, StatusCode::SEE_OTHER, "[{engine}] {}", saved.html);
        let public = rep.get("/app/r/customers").await;
        assert!(public.html.contains(&format!("data-count=\"{all}\"")), "[{engine}] public read-only: every customer");
        let other = app
            .sql_i64(
                "SELECT MIN(c.id) FROM customers c JOIN users u ON u.id = c.owner_id WHERE u.username = 'rep.south1'",
            )
            .await;
        let why = rep.get(&format!("/app/r/customers/{other}/why")).await;
        assert!(why.html.contains("数据共享默认设置"), "[{engine}] the default is named: {}", why.html);
    }
}

#[tokio::test]
async fn a_sharing_rule_built_in_the_editor_opens_records_until_it_is_removed() {
    for engine in engines() {
        let (app, _) = demo_app(engine).await;
        let count = |html: &str| -> i64 {
            let start = html.find("data-count=\"").expect("a count") + "data-count=\"".len();
            html[start..].split('"').next().and_then(|n| n.parse().ok()).expect("a number")
        };
        let mut rep = Browser::new(&app, "zh-CN");
        rep.sign_in("rep.north1").await;
        let own = count(&rep.get("/app/r/customers").await.html);

        let mut admin = Browser::new(&app, "zh-CN");
        admin.sign_in("admin").await;
        let page = admin.get("/app/admin/rules").await;
        assert!(page.html.contains("客服不查看政府客户"), "[{engine}] the existing restriction rule is listed");
        let csrf = page.hidden("csrf_token");
        let rep_role = format!("role:{}", crm::templates::ROLE_REP);
        let created = admin
            .post(
                "/app/admin/rules",
                &[
                    ("csrf_token", &csrf),
                    ("kind", "sharing"),
                    ("name", "华南大客户共享给销售代表"),
                    ("module", "customers"),
                    ("field0", "region"),
                    ("op0", "eq"),
                    ("value0", "华南"),
                    ("field1", "customer_type"),
                    ("op1", "in"),
                    ("value1", "enterprise,government"),
                    ("field2", ""),
                    ("op2", "eq"),
                    ("value2", ""),
                    ("grantee", &rep_role),
                    ("level", "read"),
                ],
            )
            .await;
        assert_eq!(created.status, StatusCode::SEE_OTHER, "[{engine}] {}", created.html);
        let south_big = app
            .sql_i64(
                "SELECT COUNT(*) FROM customers WHERE region = '华南' AND customer_type IN ('enterprise', 'government')",
            )
            .await;
        let widened = count(&rep.get("/app/r/customers").await.html);
        assert_eq!(widened, own + south_big, "[{engine}] the rule holds at the representative's next page");

        // A rule naming a field the module does not have is refused with the store's reason.
        let refused = admin
            .post(
                "/app/admin/rules",
                &[
                    ("csrf_token", &csrf),
                    ("kind", "restriction"),
                    ("name", "bad"),
                    ("module", "customers"),
                    ("field0", "stage"),
                    ("op0", "eq"),
                    ("value0", "won"),
                    ("grantee", &rep_role),
                    ("level", "read"),
                ],
            )
            .await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "[{engine}] {}", refused.html);

        let id = {
            let listed = admin.get("/app/admin/rules").await;
            assert!(listed.html.contains("华南大客户共享给销售代表"), "[{engine}]");
            let marker = "/app/admin/rules/sharing/";
            let mut ids: Vec<i64> = listed
                .html
                .match_indices(marker)
                .filter_map(|(i, _)| listed.html[i + marker.len()..].split('/').next()?.parse().ok())
                .collect();
            ids.sort();
            *ids.last().expect("the new rule's delete form")
        };
        let removed = admin.post(&format!("/app/admin/rules/sharing/{id}/delete"), &[("csrf_token", &csrf)]).await;
        assert_eq!(removed.status, StatusCode::SEE_OTHER, "[{engine}] {}", removed.html);
        assert_eq!(count(&rep.get("/app/r/customers").await.html), own, "[{engine}] removed: back to own");
    }
}

#[tokio::test]
async fn an_administrator_assigns_roles_and_resets_a_password_from_the_user_page() {
    for engine in engines() {
        let (app, _) = demo_app(engine).await;
        let count = |html: &str| -> i64 {
            let start = html.find("data-count=\"").expect("a count") + "data-count=\"".len();
            html[start..].split('"').next().and_then(|n| n.parse().ok()).expect("a number")
        };
        let mut rep = Browser::new(&app, "en");
        rep.sign_in("rep.north2").await;
        let own = count(&rep.get("/app/r/customers").await.html);
        let id = app.sql_i64("SELECT id FROM users WHERE username = 'rep.north2'").await;
        let north = app.sql_i64("SELECT id FROM departments WHERE name = '华北区 North'").await.to_string();

        let mut admin = Browser::new(&app, "en");
        admin.sign_in("admin").await;
        let page = admin.get(&format!("/app/admin/users/{id}")).await;
        assert_eq!(page.status, StatusCode::OK, "[{engine}] {}", page.html);
        let csrf = page.hidden("csrf_token");
        let rep_role = format!("role.{}", crm::templates::ROLE_REP);
        let manager_role = format!("role.{}", crm::templates::ROLE_MANAGER);
        let saved = admin
            .post(
                &format!("/app/admin/users/{id}"),
                &[("csrf_token", &csrf), (&rep_role, "1"), (&manager_role, "1"), ("department", &north)],
            )
            .await;
        assert_eq!(saved.status, StatusCode::SEE_OTHER, "[{engine}] {}", saved.html);
        let team = count(&rep.get("/app/r/customers").await.html);
        assert!(team > own, "[{engine}] the manager role widens at the next page: {team} > {own}");

        let reset = admin.post(&format!("/app/admin/users/{id}/reset-password"), &[("csrf_token", &csrf)]).await;
        assert!(reset.html.contains("id=\"one-time-password\""), "[{engine}] {}", reset.html);
        let gone = rep.get("/app").await;
        assert_eq!(gone.status, StatusCode::SEE_OTHER, "[{engine}] a reset ends the user's sessions");
    }
}

#[tokio::test]
async fn groups_are_created_with_usernames_and_kept_while_a_rule_names_them() {
    for engine in engines() {
        let (app, _) = demo_app(engine).await;
        let mut admin = Browser::new(&app, "en");
        admin.sign_in("admin").await;
        let page = admin.get("/app/admin/groups").await;
        assert!(page.html.contains("大客户小组") && page.html.contains("manager.east"), "[{engine}] {}", page.html);
        let csrf = page.hidden("csrf_token");
        let unknown = admin
            .post("/app/admin/groups", &[("csrf_token", &csrf), ("name", "x"), ("members", "rep.north1, nobody")])
            .await;
        assert_eq!(unknown.status, StatusCode::UNPROCESSABLE_ENTITY, "[{engine}]");
        assert!(unknown.html.contains("nobody"), "[{engine}] names the unknown user");
        let made = admin
            .post(
                "/app/admin/groups",
                &[("csrf_token", &csrf), ("name", "华北小组"), ("members", "rep.north1 rep.north2")],
            )
            .await;
        assert_eq!(made.status, StatusCode::SEE_OTHER, "[{engine}] {}", made.html);
        let listed = admin.get("/app/admin/groups").await;
        assert!(listed.html.contains("华北小组") && listed.html.contains("rep.north1, rep.north2"), "[{engine}]");
        let in_use = crm::templates::GROUP_KEY_ACCOUNTS;
        let refused = admin.post(&format!("/app/admin/groups/{in_use}/delete"), &[("csrf_token", &csrf)]).await;
        assert!(refused.status.is_client_error(), "[{engine}] a group a rule names stays: {}", refused.status);
        assert!(admin.get("/app/admin/groups").await.html.contains("大客户小组"), "[{engine}]");
    }
}

#[tokio::test]
async fn a_partition_grant_added_in_the_console_adds_a_region_until_removed() {
    for engine in engines() {
        let (app, _) = demo_app(engine).await;
        let count = |html: &str| -> i64 {
            let start = html.find("data-count=\"").expect("a count") + "data-count=\"".len();
            html[start..].split('"').next().and_then(|n| n.parse().ok()).expect("a number")
        };
        let mut rep = Browser::new(&app, "zh-CN");
        rep.sign_in("rep.north1").await;
        let own = count(&rep.get("/app/r/customers").await.html);
        let rep_id = app.sql_i64("SELECT id FROM users WHERE username = 'rep.north1'").await;

        let mut admin = Browser::new(&app, "zh-CN");
        admin.sign_in("admin").await;
        let page = admin.get("/app/admin/partitions").await;
        assert!(page.html.contains("analyst.east") && page.html.contains("华东"), "[{engine}] the demo's grant");
        let csrf = page.hidden("csrf_token");
        let made = admin
            .post(
                "/app/admin/partitions",
                &[
                    ("csrf_token", &csrf),
                    ("grantee", &format!("user:{rep_id}")),
                    ("module.customers", "1"),
                    ("dimension", "region"),
                    ("values", "华南"),
                    ("level", "read"),
                ],
            )
            .await;
        assert_eq!(made.status, StatusCode::SEE_OTHER, "[{engine}] {}", made.html);
        let south = app.sql_i64("SELECT COUNT(*) FROM customers WHERE region = '华南'").await;
        assert_eq!(count(&rep.get("/app/r/customers").await.html), own + south, "[{engine}] 华南 added");

        let listed = admin.get("/app/admin/partitions").await;
        let marker = "/app/admin/partitions/";
        let id = listed
            .html
            .match_indices(marker)
            .filter_map(|(i, _)| listed.html[i + marker.len()..].split('/').next()?.parse::<i64>().ok())
            .max()
            .expect("the new grant's delete form");
        let removed = admin.post(&format!("/app/admin/partitions/{id}/delete"), &[("csrf_token", &csrf)]).await;
        assert_eq!(removed.status, StatusCode::SEE_OTHER, "[{engine}]");
        assert_eq!(count(&rep.get("/app/r/customers").await.html), own, "[{engine}] removed: back to own");
    }
}

/// Raises a large-export alert about the administrator through real operations: the monitor runs, the export
/// rule's threshold is lowered through the rules API (as an administrator would), and the admin exports customers.
async fn raise_large_export_alert(app: &TestApp, org: i64) -> (crm_store::MonitorHandle, serde_json::Value) {
    use std::time::{Duration, Instant};
    let monitor = app.store.start_monitor();
    // The detector's first pass places its cursor at the present: wait for it, so the export comes after.
    let started = Instant::now();
    while app.sql_i64s(&format!("SELECT last_seq FROM monitor_cursor WHERE org_id = {org}")).await.is_empty() {
        assert!(started.elapsed() < Duration::from_secs(30), "the detector did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let admin = token(app, "admin").await;
    let mut doc = app.get("/api/v1/admin/monitoring/rules", &admin).await.assert_status(200).json();
    doc["rules"]["large_export"]["threshold"] = serde_json::json!(5);
    doc["rules"]["large_export"]["block_above"] = serde_json::Value::Null;
    let body = doc.to_string().into_bytes();
    app.request(axum::http::Method::PUT, "/api/v1/admin/monitoring/rules", &admin, Some(("application/json", body)))
        .await
        .assert_status(200);
    let step_up = serde_json::json!({"password": crm::demo::password_for("admin")});
    app.post_json("/api/v1/session/step-up", &admin, &step_up).await.assert_status(200);
    app.get("/api/v1/customers/export.csv", &admin).await.assert_status(200);
    let started = Instant::now();
    loop {
        let page = app.get("/api/v1/alerts?rule=large_export", &admin).await.assert_status(200).json();
        if let Some(a) = page["items"].as_array().and_then(|items| items.first()) {
            return (monitor, a.clone());
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no large_export alert within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_alerts_dashboard_shows_what_the_store_returns_and_runs_the_lifecycle_through_checked_forms() {
    for engine in engines() {
        let (app, demo) = demo_app(engine).await;
        let (_monitor, alert) = raise_large_export_alert(&app, demo.org).await;
        let id = alert["id"].as_i64().expect("alert id");
        let rows = alert["detail"]["rows"].as_i64().expect("rows in the detail");

        let mut admin = Browser::new(&app, "zh-CN");
        admin.sign_in("admin").await;
        let home = admin.get("/app").await;
        assert!(home.html.contains("id=\"nav-alerts\""), "[{engine}] the admin's navigation links the dashboard");
        let list = admin.get("/app/alerts").await;
        assert_eq!(list.status, StatusCode::OK, "[{engine}] {}", list.html);
        assert!(list.html.contains(&format!("data-id=\"{id}\"")), "[{engine}] the alert is listed");
        assert!(
            list.html.contains("大量导出") && list.html.contains("待处理"),
            "[{engine}] rule and status translated"
        );
        assert!(list.html.contains("<script src=\"/app/static/alerts.js\""), "[{engine}] the live feed is a file");
        assert!(!list.html.contains("<script>"), "[{engine}] no inline script");
        // Filters: another status or rule leaves it out; the subject by username keeps it.
        let resolved = admin.get("/app/alerts?status=resolved").await;
        assert!(!resolved.html.contains(&format!("data-id=\"{id}\"")), "[{engine}] status filter");
        let other = admin.get("/app/alerts?rule=mass_delete").await;
        assert!(!other.html.contains(&format!("data-id=\"{id}\"")), "[{engine}] rule filter");
        let mine = admin.get("/app/alerts?subject=admin&rule=large_export").await;
        assert!(mine.html.contains(&format!("data-id=\"{id}\"")), "[{engine}] subject filter by username");

        // The detail: what was compared, as the store returned it.
        let detail = admin.get(&format!("/app/alerts/{id}")).await;
        assert_eq!(detail.status, StatusCode::OK);
        let zh_rows = crm_web::i18n::Lang::Zh.number(rows);
        assert!(
            detail.html.contains(&format!("data-key=\"rows\">{zh_rows}</dd>")),
            "[{engine}] the row count: {}",
            detail.html
        );
        assert!(detail.html.contains("data-key=\"threshold\">5</dd>"), "[{engine}] the threshold compared");

        // Acknowledge: refused without the CSRF token, done with it.
        let refused = admin.post(&format!("/app/alerts/{id}/acknowledge"), &[("csrf_token", "wrong")]).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "[{engine}] acknowledge without CSRF");
        let csrf = detail.hidden("csrf_token");
        let acked = admin.post(&format!("/app/alerts/{id}/acknowledge"), &[("csrf_token", &csrf)]).await;
        assert_eq!(acked.status, StatusCode::SEE_OTHER, "[{engine}] {}", acked.html);
        let detail = admin.get(&format!("/app/alerts/{id}")).await;
        assert!(detail.html.contains("data-status=\"acknowledged\""), "[{engine}] acknowledged");
        assert!(!detail.html.contains("id=\"acknowledge\""), "[{engine}] no second acknowledge button");

        // Assign to the auditor.
        let auditor = demo.users["auditor"];
        let assigned = admin
            .post(&format!("/app/alerts/{id}/assign"), &[("csrf_token", &csrf), ("assignee", &auditor.to_string())])
            .await;
        assert_eq!(assigned.status, StatusCode::SEE_OTHER, "[{engine}] {}", assigned.html);
        let detail = admin.get(&format!("/app/alerts/{id}")).await;
        assert!(detail.html.contains("id=\"alert-assignee\">auditor</dd>"), "[{engine}] assigned: {}", detail.html);

        // Resolve: a note is required; the note is shown escaped.
        let blank = admin.post(&format!("/app/alerts/{id}/resolve"), &[("csrf_token", &csrf), ("note", "  ")]).await;
        assert_eq!(blank.status, StatusCode::UNPROCESSABLE_ENTITY, "[{engine}]");
        assert!(blank.html.contains("请填写处理说明"), "[{engine}] the translated reason");
        let note = "Export for the <b>audit</b>, approved";
        let done = admin.post(&format!("/app/alerts/{id}/resolve"), &[("csrf_token", &csrf), ("note", note)]).await;
        assert_eq!(done.status, StatusCode::SEE_OTHER, "[{engine}] {}", done.html);
        let detail = admin.get(&format!("/app/alerts/{id}")).await;
        assert!(detail.html.contains("data-status=\"resolved\""), "[{engine}] resolved");
        let escaped = detail.html.contains("&lt;b&gt;audit") || detail.html.contains("&#60;b&#62;audit");
        assert!(escaped && !detail.html.contains("<b>audit"), "[{engine}] the note is shown escaped");
        assert!(!detail.html.contains("id=\"resolve-form\""), "[{engine}] no actions on a resolved alert");
        let admin_token = token(&app, "admin").await;
        let stored = app.get(&format!("/api/v1/alerts/{id}"), &admin_token).await.assert_status(200).json();
        assert_eq!(stored["status"], "resolved");
        assert_eq!(stored["assignee_id"], auditor);
        assert_eq!(stored["resolution_note"], note);

        // English labels.
        let mut en = Browser::new(&app, "en");
        en.sign_in("admin").await;
        let list = en.get("/app/alerts").await;
        assert!(list.html.contains("Large export") && list.html.contains("Resolved"), "[{engine}] English");

        // A representative may not see alerts: no link, and the same not-found page as a missing page.
        let mut rep = Browser::new(&app, "zh-CN");
        rep.sign_in("rep.north1").await;
        assert!(!rep.get("/app").await.html.contains("nav-alerts"), "[{engine}] no link for a representative");
        let missing = rep.get("/app/no-such-page").await;
        for path in ["/app/alerts".to_string(), format!("/app/alerts/{id}")] {
            let page = rep.get(&path).await;
            assert_eq!(page.status, StatusCode::NOT_FOUND, "[{engine}] {path}");
            assert_eq!(page.html, missing.html, "[{engine}] {path}: the same page as a missing one");
        }
    }
}

#[tokio::test]
async fn an_administrator_views_as_a_user_exactly_their_records_read_only_and_audited() {
    use crm_domain::Module;
    for engine in engines() {
        let (app, demo) = demo_app(engine).await;
        let count = |html: &str| -> i64 {
            let start = html.find("data-count=\"").expect("a count") + "data-count=\"".len();
            html[start..].split('"').next().and_then(|n| n.parse().ok()).expect("a number")
        };
        let rep_id = demo.users["rep.north1"];
        let admin_id = demo.users["admin"];
        let mut rep = Browser::new(&app, "zh-CN");
        rep.sign_in("rep.north1").await;
        let rep_list = rep.get("/app/r/customers").await;
        let own = count(&rep_list.html);
        let mut admin = Browser::new(&app, "zh-CN");
        admin.sign_in("admin").await;
        let everything = count(&admin.get("/app/r/customers").await.html);
        assert!(own < everything, "[{engine}] the representative sees fewer customers than the admin");

        let user_page = admin.get(&format!("/app/admin/users/{rep_id}")).await;
        assert!(user_page.html.contains("id=\"view-as\""), "[{engine}] the user page offers the view");
        let before = app.sql_i64(&format!("SELECT COUNT(*) FROM audit_log WHERE actor_id = {admin_id}")).await;
        let list = admin.get(&format!("/app/admin/users/{rep_id}/view/r/customers")).await;
        assert_eq!(list.status, StatusCode::OK, "[{engine}] {}", list.html);
        assert!(list.html.contains("id=\"view-as-banner\"") && list.html.contains("rep.north1"), "[{engine}] banner");
        assert_eq!(count(&list.html), own, "[{engine}] exactly the user's count, not the admin's");
        // The same first page of records as the user's own list.
        let ids = |html: &str, marker: &str| -> Vec<i64> {
            html.match_indices(marker)
                .filter_map(|(i, _)| html[i + marker.len()..].split('"').next()?.parse().ok())
                .collect()
        };
        let seen = ids(&list.html, &format!("/app/admin/users/{rep_id}/view/r/customers/"));
        assert_eq!(seen, ids(&rep_list.html, "href=\"/app/r/customers/"), "[{engine}] the same records");
        assert!(!list.html.contains("export-csv") && !list.html.contains("import-csv"), "[{engine}] no export/import");

        // A record page: read-only (no edit, share or reveal form; the only form is sign-out).
        let first = seen[0];
        let record = admin.get(&format!("/app/admin/users/{rep_id}/view/r/customers/{first}")).await;
        assert_eq!(record.status, StatusCode::OK, "[{engine}] {}", record.html);
        assert_eq!(record.html.matches("<form").count(), 1, "[{engine}] only the sign-out form: {}", record.html);
        assert!(!record.html.contains("/reveal/") && !record.html.contains("/edit"), "[{engine}] no write links");
        // A customer the user may not see: not found, although the administrator may see it.
        let hidden = app
            .sql_i64(&format!("SELECT MIN(id) FROM customers WHERE owner_id <> {rep_id} AND region <> '华北'"))
            .await;
        assert_eq!(admin.get(&format!("/app/r/customers/{hidden}")).await.status, StatusCode::OK);
        let other = admin.get(&format!("/app/admin/users/{rep_id}/view/r/customers/{hidden}")).await;
        assert_eq!(other.status, StatusCode::NOT_FOUND, "[{engine}] outside the user's view");

        // Audited: the administrator is the actor, the user the subject.
        let entries = app
            .sql_strings(&format!(
                "SELECT action FROM audit_log WHERE actor_id = {admin_id} AND subject_id = {rep_id} ORDER BY seq"
            ))
            .await;
        for action in ["admin.view_as", "record.list", "record.view"] {
            assert!(entries.iter().any(|a| a == action), "[{engine}] {action} audited: {entries:?}");
        }
        let after = app.sql_i64(&format!("SELECT COUNT(*) FROM audit_log WHERE actor_id = {admin_id}")).await;
        assert!(after > before);
        let as_rep = app
            .sql_i64(&format!("SELECT COUNT(*) FROM audit_log WHERE actor_id = {rep_id} AND action = 'admin.view_as'"))
            .await;
        assert_eq!(as_rep, 0, "[{engine}] nothing is attributed to the user");

        // Writes are impossible through the handle, even on the user's own record.
        let sys = app.store.unscoped_system_access();
        let principal = sys.principal_for(demo.org, admin_id).await.expect("admin principal");
        let scoped = app.store.scoped(principal);
        let viewed = scoped.view_as(rep_id).await.expect("view as the representative");
        let mut patch = serde_json::Map::new();
        patch.insert("name".into(), serde_json::json!("changed"));
        assert!(viewed.update(Module::Customers, first, &patch).await.is_err(), "[{engine}] no edit");
        assert!(!viewed.access().may_reveal(Module::Customers), "[{engine}] no reveal right");
        assert!(viewed.export_csv(Module::Customers, &Default::default()).await.is_err(), "[{engine}] no export");

        // Outside the admin pages: a representative may not view as anyone.
        let refused = rep.get(&format!("/app/admin/users/{admin_id}/view/r/customers")).await;
        assert_eq!(refused.status, StatusCode::NOT_FOUND, "[{engine}]");
    }
}
