//! Sign-in and account security through HTTP, on the demo organization: the fixed `POST /api/v1/session` with
//! and without a second factor, enumeration (identical answers, and timing checked statistically), brute force
//! against one account and from one network, session fixation and revocation on every account event, CSRF for
//! cookie sessions, TOTP replay, single-use recovery codes, IP allowlists and sign-in hours on live sessions, API
//! tokens that never exceed their user, and the sign-in history.

use crate::support::{demo_app, token};
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, header};
use crm::demo::{ADMIN_PASSWORD, PERSONA_PASSWORD, password_for};
use crm::templates::ROLE_REP;
use crm_testkit::{TestApp, TestResponse, engines};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Instant;

/// A request from a client at `ip` (the TCP peer a real server would see).
fn from(ip: &str, method: Method, path: &str) -> axum::http::request::Builder {
    let addr: SocketAddr =
        if ip.contains(':') { format!("[{ip}]:40000") } else { format!("{ip}:40000") }.parse().expect("address");
    let mut b = Request::builder().method(method).uri(path);
    if let Some(ext) = b.extensions_mut() {
        ext.insert(ConnectInfo(addr));
    }
    b
}

async fn post_from(app: &TestApp, ip: &str, path: &str, bearer: &str, body: &Value) -> TestResponse {
    let mut b = from(ip, Method::POST, path).header(header::CONTENT_TYPE, "application/json");
    if !bearer.is_empty() {
        b = b.header(header::AUTHORIZATION, format!("Bearer {bearer}"));
    }
    app.send(b.body(Body::from(body.to_string())).expect("request")).await
}

async fn get_from(app: &TestApp, ip: &str, path: &str, bearer: &str) -> TestResponse {
    let b = from(ip, Method::GET, path).header(header::AUTHORIZATION, format!("Bearer {bearer}"));
    app.send(b.body(Body::empty()).expect("request")).await
}

async fn sign_in_from(app: &TestApp, ip: &str, body: Value) -> TestResponse {
    post_from(app, ip, "/api/v1/session", "", &body).await
}

fn creds(username: &str, password: &str) -> Value {
    json!({"username": username, "password": password})
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs()
}

fn code(secret: &str) -> String {
    crm_store::auth::totp_code_at(secret, now_secs()).expect("TOTP code")
}

/// The code of the next 30-second step (a phone whose clock runs a little ahead; accepted within one step of
/// skew). Used right after enrolment, whose confirmation spent the current step.
fn next_code(secret: &str) -> String {
    crm_store::auth::totp_code_at(secret, now_secs() + 30).expect("TOTP code")
}

/// Changes the demo policy through the administration API: `f` edits the roles.
async fn edit_roles(app: &TestApp, admin: &str, f: impl Fn(&mut Value)) {
    let doc = app.get("/api/v1/admin/policy", admin).await.assert_status(200).json();
    let mut policy = doc["policy"].clone();
    for r in policy["roles"].as_array_mut().expect("roles") {
        f(r);
    }
    app.request(
        Method::PUT,
        "/api/v1/admin/policy",
        admin,
        Some(("application/json", policy.to_string().into_bytes())),
    )
    .await
    .assert_status(200);
}

/// Enrols TOTP for the holder of `bearer` over HTTP; returns the secret and the recovery codes.
async fn enrol(app: &TestApp, bearer: &str) -> (String, Vec<String>) {
    let e = app.post_json("/api/v1/me/mfa/totp", bearer, &json!({})).await.assert_status(200).json();
    let secret = e["secret"].as_str().expect("secret").to_string();
    assert!(
        e["otpauth_uri"].as_str().is_some_and(|u| u.starts_with("otpauth://totp/CRM:") && u.contains("issuer=CRM")),
        "{e}"
    );
    assert!(e["qr_svg"].as_str().is_some_and(|s| s.contains("<svg")));
    app.post_json("/api/v1/me/mfa/totp/confirm", bearer, &json!({"code": "000001"})).await;
    let done = app
        .post_json("/api/v1/me/mfa/totp/confirm", bearer, &json!({"code": code(&secret)}))
        .await
        .assert_status(200)
        .json();
    let codes: Vec<String> = done["recovery_codes"]
        .as_array()
        .expect("codes")
        .iter()
        .map(|c| c.as_str().expect("code").to_string())
        .collect();
    (secret, codes)
}

#[tokio::test]
async fn the_fixed_sign_in_works_unchanged_and_the_mfa_step_extends_it() {
    for engine in engines() {
        let (app, _demo) = demo_app(engine).await;
        // Clients without a second factor: {username, password} → {token, …}, exactly as before.
        let res = app
            .post_json("/api/v1/session", "", &creds("rep.north1", PERSONA_PASSWORD))
            .await
            .assert_status(200)
            .json();
        let rep = res["token"].as_str().expect("token").to_string();
        assert_eq!(res["token_type"], "Bearer");
        assert_eq!(res["must_change_password"], false);
        assert!(res.get("mfa_required").is_none() && res.get("csrf_token").is_none(), "{res}");
        app.get("/api/v1/me", &rep).await.assert_status(200);

        // The organization requires a second factor of representatives.
        let admin = token(&app, "admin").await;
        edit_roles(&app, &admin, |r| {
            if r["id"] == ROLE_REP {
                r["require_mfa"] = json!(true);
            }
        })
        .await;
        // Without a factor yet: a session that may only enrol one.
        let res = app
            .post_json("/api/v1/session", "", &creds("rep.north1", PERSONA_PASSWORD))
            .await
            .assert_status(200)
            .json();
        assert_eq!(res["mfa_enrollment_required"], true, "{res}");
        let restricted = res["token"].as_str().expect("token").to_string();
        app.get("/api/v1/customers", &restricted).await.assert_problem(403, "/problems/mfa-enrollment-required");
        assert_eq!(app.get("/api/v1/me", &restricted).await.assert_status(200).json()["restriction"], "mfa_enrollment");
        let (secret, codes) = enrol(&app, &restricted).await;
        app.get("/api/v1/customers", &restricted).await.assert_status(200);

        // Now the password alone answers 200 with an MFA challenge and no bearer token.
        let res = app
            .post_json("/api/v1/session", "", &creds("rep.north1", PERSONA_PASSWORD))
            .await
            .assert_status(200)
            .json();
        assert_eq!(res["mfa_required"], true, "{res}");
        assert!(res.get("token").is_none(), "{res}");
        let mfa_token = res["mfa_token"].as_str().expect("mfa_token").to_string();
        let wrong = app.post_json("/api/v1/session/mfa", "", &json!({"mfa_token": mfa_token, "otp": "000000"})).await;
        wrong.assert_problem(401, "/problems/invalid-credentials");
        // The confirmation code's step is spent (a replay would be refused): the app shows the next one.
        let replay =
            app.post_json("/api/v1/session/mfa", "", &json!({"mfa_token": mfa_token, "otp": code(&secret)})).await;
        replay.assert_problem(401, "/problems/invalid-credentials");
        let done = app
            .post_json("/api/v1/session/mfa", "", &json!({"mfa_token": mfa_token, "otp": next_code(&secret)}))
            .await
            .assert_status(200)
            .json();
        assert_eq!(done["mfa"], "totp");
        let t = done["token"].as_str().expect("token");
        app.get("/api/v1/customers", t).await.assert_status(200);
        // The challenge is spent.
        let again =
            app.post_json("/api/v1/session/mfa", "", &json!({"mfa_token": mfa_token, "recovery_code": codes[0]})).await;
        again.assert_problem(401, "/problems/invalid-credentials");
        // One request with a recovery code also works; the same code never again.
        let body = json!({"username": "rep.north1", "password": PERSONA_PASSWORD, "recovery_code": codes[0]});
        assert_eq!(app.post_json("/api/v1/session", "", &body).await.assert_status(200).json()["mfa"], "recovery_code");
        app.post_json("/api/v1/session", "", &body).await.assert_problem(401, "/problems/invalid-credentials");
        // Other personas still sign in with their password alone.
        app.sign_in("manager.north", PERSONA_PASSWORD).await;
    }
}

#[tokio::test]
async fn totp_codes_cannot_be_replayed() {
    for engine in engines() {
        let (app, _demo) = demo_app(engine).await;
        let rep = token(&app, "rep.east1").await;
        let (secret, _) = enrol(&app, &rep).await;
        // A code is accepted once: its replay within the same 30 seconds is refused, and so is any code of an
        // earlier step (the enrolment's own confirmation code included).
        let body = |otp: String| json!({"username": "rep.east1", "password": PERSONA_PASSWORD, "otp": otp});
        let ahead = next_code(&secret);
        app.post_json("/api/v1/session", "", &body(ahead.clone())).await.assert_status(200);
        app.post_json("/api/v1/session", "", &body(ahead)).await.assert_problem(401, "/problems/invalid-credentials");
        app.post_json("/api/v1/session", "", &body(code(&secret)))
            .await
            .assert_problem(401, "/problems/invalid-credentials");
        let uses = app.sql_i64("SELECT COUNT(*) FROM sign_in_history WHERE result = 'bad_second_factor'").await;
        assert_eq!(uses, 2, "[{engine}] the replays are in the history");
    }
}

/// The answer of a failed sign-in, without the request-specific headers.
fn answer(res: &TestResponse) -> (u16, String, String) {
    (res.status.as_u16(), res.content_type().to_string(), res.text())
}

#[tokio::test]
async fn failures_are_indistinguishable_in_their_answers() {
    for engine in engines() {
        let (app, demo) = demo_app(engine).await;
        let admin = token(&app, "admin").await;
        let reference = answer(&sign_in_from(&app, "198.18.0.1", creds("rep.north1", "wrong-password")).await);
        assert_eq!(reference.0, 401);
        // Soft-lock rep.north2, lock rep.south1, deactivate rep.south2 (an administrator's acts).
        for _ in 0..5 {
            sign_in_from(&app, "198.18.0.2", creds("rep.north2", "wrong-password")).await;
        }
        let patch = |s: &str| json!({"status": s});
        app.patch_json(&format!("/api/v1/admin/users/{}", demo.users["rep.south1"]), &admin, &patch("locked"))
            .await
            .assert_status(204);
        app.patch_json(&format!("/api/v1/admin/users/{}", demo.users["rep.south2"]), &admin, &patch("deactivated"))
            .await
            .assert_status(204);
        for (what, body) in [
            ("an unknown user", creds("nobody.here", "wrong-password")),
            ("an unknown user with a known password", creds("nobody.here", PERSONA_PASSWORD)),
            ("a soft-locked account with its right password", creds("rep.north2", PERSONA_PASSWORD)),
            ("a locked account with its right password", creds("rep.south1", PERSONA_PASSWORD)),
            ("a deactivated account with its right password", creds("rep.south2", PERSONA_PASSWORD)),
            ("an empty password", creds("rep.north1", "")),
            ("an overlong password", creds("rep.north1", &"x".repeat(2000))),
        ] {
            let res = sign_in_from(&app, "198.18.0.3", body).await;
            assert_eq!(answer(&res), reference, "[{engine}] {what}");
            assert!(res.headers.get(header::SET_COOKIE).is_none());
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

/// The per-network failure limit counts in fixed 15-minute windows aligned to the clock; a test that floods one
/// network waits out the last 90 seconds of a window so its flood and its checks fall in the same window.
async fn away_from_the_failure_window_edge() {
    let window = 15 * 60_000u128;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    let left = window - now % window;
    if left < 90_000 {
        tokio::time::sleep(std::time::Duration::from_millis((left + 1_000) as u64)).await;
    }
}

#[tokio::test]
async fn unknown_users_cost_the_same_time_as_known_ones() {
    for engine in engines() {
        let (app, _demo) = demo_app(engine).await;
        // Interleaved samples, each from its own address so no per-network limit interferes.
        let (mut unknown, mut known, mut limited) = (Vec::new(), Vec::new(), Vec::new());
        let rounds = 15;
        for i in 0..rounds {
            for (kind, body) in [
                (0, creds(&format!("ghost{i}"), "wrong-password")),
                (1, creds(["rep.north1", "rep.east2", "service1"][i % 3], "wrong-password")),
            ] {
                let ip = format!("198.19.{kind}.{i}");
                let started = Instant::now();
                let res = sign_in_from(&app, &ip, body).await;
                let t = started.elapsed().as_secs_f64();
                res.assert_problem(401, "/problems/invalid-credentials");
                if kind == 0 { unknown.push(t) } else { known.push(t) }
            }
        }
        // A negative control shows the measurement can see a missing hash: a rate-limited network is answered
        // without one.
        away_from_the_failure_window_edge().await;
        for i in 0..crm_store::auth::IP_FAILURES_PER_WINDOW {
            sign_in_from(&app, "198.19.9.9", creds(&format!("flood{i}"), "x")).await;
        }
        for _ in 0..rounds {
            let started = Instant::now();
            sign_in_from(&app, "198.19.9.9", creds("rep.north1", "x"))
                .await
                .assert_problem(429, "/problems/too-many-requests");
            limited.push(started.elapsed().as_secs_f64());
        }
        let (u, k, l) = (median(unknown), median(known), median(limited));
        eprintln!(
            "[{engine}] median sign-in failure: unknown user {:.1} ms, known user {:.1} ms, no hashing {:.1} ms",
            u * 1e3,
            k * 1e3,
            l * 1e3
        );
        assert!(
            l < 0.6 * u.min(k),
            "[{engine}] the control is not faster ({l} vs {u}/{k}): the comparison has no power"
        );
        let ratio = u / k;
        assert!(
            (0.6..=1.67).contains(&ratio),
            "[{engine}] unknown {u:.4}s vs known {k:.4}s (ratio {ratio:.2}): a timing oracle"
        );
    }
}

#[tokio::test]
async fn brute_force_on_one_account_locks_it_and_an_administrator_unlocks_it() {
    for engine in engines() {
        let (app, demo) = demo_app(engine).await;
        let victim = demo.users["rep.north1"];
        // The victim's existing session survives the attack.
        let session = app.sign_in("rep.north1", PERSONA_PASSWORD).await;
        for i in 0..6 {
            // From many networks, so the per-network limit is not what stops it.
            sign_in_from(&app, &format!("203.0.113.{i}"), creds("rep.north1", &format!("guess-{i}")))
                .await
                .assert_problem(401, "/problems/invalid-credentials");
        }
        // Even the right password fails now.
        sign_in_from(&app, "198.51.100.20", creds("rep.north1", PERSONA_PASSWORD))
            .await
            .assert_problem(401, "/problems/invalid-credentials");
        app.get("/api/v1/me", &session).await.assert_status(200);
        // The administrator sees it and unlocks; a representative may not.
        let admin = token(&app, "admin").await;
        let sec = app.get(&format!("/api/v1/admin/users/{victim}/security"), &admin).await.assert_status(200).json();
        assert!(
            sec["locked_until"].as_i64().is_some() && sec["failed_attempts"].as_i64() >= Some(5),
            "[{engine}] {sec}"
        );
        let other = token(&app, "rep.north2").await;
        app.post_json(&format!("/api/v1/admin/users/{victim}/unlock"), &other, &json!({}))
            .await
            .assert_problem(404, "/problems/not-found");
        app.post_json(&format!("/api/v1/admin/users/{victim}/unlock"), &admin, &json!({})).await.assert_status(204);
        sign_in_from(&app, "198.51.100.20", creds("rep.north1", PERSONA_PASSWORD)).await.assert_status(200);
        // The victim's history shows the attack; the audit trail has every attempt and the unlock.
        let h = app.get("/api/v1/me/sign-ins?limit=20", &session).await.assert_status(200).json();
        let results: Vec<&str> = h.as_array().expect("history").iter().filter_map(|r| r["result"].as_str()).collect();
        assert!(
            results.contains(&"locked_out") && results.iter().filter(|r| **r == "bad_password").count() >= 5,
            "[{engine}] {results:?}"
        );
        assert!(h[0]["ip"].is_string() && h[0].get("user_agent").is_some(), "[{engine}] {h}");
        let n = app
            .sql_i64(&format!(
                "SELECT COUNT(*) FROM audit_log WHERE action = 'account.unlock' AND org_id = {}",
                demo.org
            ))
            .await;
        assert_eq!(n, 1);
    }
}

#[tokio::test]
async fn one_network_is_rate_limited_and_others_are_not() {
    for engine in engines() {
        let (app, _demo) = demo_app(engine).await;
        away_from_the_failure_window_edge().await;
        for i in 0..crm_store::auth::IP_FAILURES_PER_WINDOW {
            sign_in_from(&app, "203.0.113.99", creds(&format!("spray{i}"), "Password1"))
                .await
                .assert_problem(401, "/problems/invalid-credentials");
        }
        let res = sign_in_from(&app, "203.0.113.99", creds("rep.north1", PERSONA_PASSWORD)).await;
        res.assert_problem(429, "/problems/too-many-requests");
        let retry: i64 = res
            .headers
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .expect("Retry-After");
        assert!((1..=900).contains(&retry), "[{engine}] Retry-After {retry}");
        // The same IPv4 client over a dual-stack socket is the same network.
        sign_in_from(&app, "::ffff:203.0.113.99", creds("rep.north1", PERSONA_PASSWORD))
            .await
            .assert_problem(429, "/problems/too-many-requests");
        sign_in_from(&app, "203.0.113.100", creds("rep.north1", PERSONA_PASSWORD)).await.assert_status(200);
    }
}

/// A cookie sign-in from a browser; returns the cookie value and the CSRF token.
async fn cookie_sign_in(app: &TestApp, username: &str, old_cookie: Option<&str>) -> (String, String) {
    let mut b = from("198.51.100.30", Method::POST, "/api/v1/session").header(header::CONTENT_TYPE, "application/json");
    if let Some(c) = old_cookie {
        b = b.header(header::COOKIE, format!("crm_session={c}"));
    }
    let body = json!({"username": username, "password": password_for(username), "cookie": true});
    let res = app.send(b.body(Body::from(body.to_string())).expect("request")).await;
    let json = res.assert_status(200).json();
    assert!(json.get("token").is_none(), "a cookie session's token stays out of the body: {json}");
    let set = res.headers.get(header::SET_COOKIE).and_then(|v| v.to_str().ok()).expect("Set-Cookie").to_string();
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(set.contains(attr), "{set} lacks {attr}");
    }
    assert!(!set.contains("Secure"), "plain HTTP without a trusted proxy: not Secure ({set})");
    let value = set.split(';').next().and_then(|kv| kv.strip_prefix("crm_session=")).expect("cookie value").to_string();
    (value, json["csrf_token"].as_str().expect("csrf_token").to_string())
}

async fn with_cookie(
    app: &TestApp,
    method: Method,
    path: &str,
    cookie: &str,
    csrf: Option<&str>,
    body: Option<Value>,
) -> TestResponse {
    let mut b = from("198.51.100.30", method, path).header(header::COOKIE, format!("theme=dark; crm_session={cookie}"));
    if let Some(t) = csrf {
        b = b.header("x-csrf-token", t);
    }
    let req = match body {
        Some(v) => b.header(header::CONTENT_TYPE, "application/json").body(Body::from(v.to_string())),
        None => b.body(Body::empty()),
    };
    app.send(req.expect("request")).await
}

#[tokio::test]
async fn cookie_sessions_refuse_state_changes_without_the_csrf_token() {
    for engine in engines() {
        let (app, demo) = demo_app(engine).await;
        let (cookie, csrf) = cookie_sign_in(&app, "rep.north1", None).await;
        // Reads need no token.
        let me = with_cookie(&app, Method::GET, "/api/v1/me", &cookie, None, None).await.assert_status(200).json();
        assert_eq!(me["csrf_token"], csrf.as_str(), "[{engine}] the page can fetch its CSRF token");
        let mine =
            app.sql_i64(&format!("SELECT MIN(id) FROM customers WHERE owner_id = {}", demo.users["rep.north1"])).await;
        let path = format!("/api/v1/customers/{mine}");
        let edit = json!({"industry": "finance"});
        // State changes without it, or with a wrong one, are refused and change nothing.
        with_cookie(&app, Method::PATCH, &path, &cookie, None, Some(edit.clone()))
            .await
            .assert_problem(403, "/problems/csrf");
        with_cookie(&app, Method::PATCH, &path, &cookie, Some("forged"), Some(edit.clone()))
            .await
            .assert_problem(403, "/problems/csrf");
        let (_, other_csrf) = cookie_sign_in(&app, "rep.north2", None).await;
        with_cookie(&app, Method::PATCH, &path, &cookie, Some(&other_csrf), Some(edit.clone()))
            .await
            .assert_problem(403, "/problems/csrf");
        with_cookie(&app, Method::POST, "/api/v1/customers", &cookie, None, Some(json!({"name": "CSRF Co."})))
            .await
            .assert_problem(403, "/problems/csrf");
        with_cookie(&app, Method::DELETE, "/api/v1/session", &cookie, None, None)
            .await
            .assert_problem(403, "/problems/csrf");
        let industry = app.sql_strings(&format!("SELECT industry FROM customers WHERE id = {mine}")).await;
        assert_ne!(industry, ["finance"], "[{engine}] a refused request wrote");
        // With the token they work.
        with_cookie(&app, Method::PATCH, &path, &cookie, Some(&csrf), Some(edit)).await.assert_status(200);
        // A bearer token needs none; a cookie holding a bearer token is not accepted.
        let bearer = app.sign_in("rep.north1", PERSONA_PASSWORD).await;
        app.patch_json(&path, &bearer, &json!({"industry": "retail"})).await.assert_status(200);
        with_cookie(&app, Method::GET, "/api/v1/me", &bearer, None, None)
            .await
            .assert_problem(401, "/problems/unauthorized");
        // Sign-out with the token clears the cookie and ends the session.
        let out = with_cookie(&app, Method::DELETE, "/api/v1/session", &cookie, Some(&csrf), None).await;
        out.assert_status(204);
        assert!(
            out.headers.get(header::SET_COOKIE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("Max-Age=0"))
        );
        with_cookie(&app, Method::GET, "/api/v1/me", &cookie, None, None)
            .await
            .assert_problem(401, "/problems/unauthorized");
    }
}

#[tokio::test]
async fn a_session_cookie_planted_before_sign_in_is_never_adopted() {
    for engine in engines() {
        let (app, _demo) = demo_app(engine).await;
        // An attacker plants a value of their choosing: sign-in ignores it and issues a fresh one.
        let planted = "a".repeat(64);
        let (fresh, _) = cookie_sign_in(&app, "rep.north1", Some(&planted)).await;
        assert_ne!(fresh, planted);
        with_cookie(&app, Method::GET, "/api/v1/me", &planted, None, None)
            .await
            .assert_problem(401, "/problems/unauthorized");
        // An attacker plants their own live session: the victim's sign-in ends it rather than continuing it.
        let (attackers, _) = cookie_sign_in(&app, "rep.north2", None).await;
        let (victims, _) = cookie_sign_in(&app, "rep.north1", Some(&attackers)).await;
        assert_ne!(victims, attackers);
        with_cookie(&app, Method::GET, "/api/v1/me", &attackers, None, None)
            .await
            .assert_problem(401, "/problems/unauthorized");
        let me = with_cookie(&app, Method::GET, "/api/v1/me", &victims, None, None).await.assert_status(200).json();
        assert_eq!(me["user_id"], _demo.users["rep.north1"]);
        // Tokens are 256 bits, stored only as hashes.
        assert_eq!(victims.len(), 64);
        let stored = app.sql_strings("SELECT token_hash FROM sessions").await;
        assert!(!stored.contains(&victims), "[{engine}] a session token stored in clear");
    }
}

#[tokio::test]
async fn sessions_die_at_once_on_every_account_event() {
    for engine in engines() {
        let (app, demo) = demo_app(engine).await;
        let admin = token(&app, "admin").await;
        let user = demo.users["rep.east1"];
        let fresh = async || app.sign_in("rep.east1", PERSONA_PASSWORD).await;
        let dead = async |t: &str, what: &str| {
            app.get("/api/v1/me", t).await.assert_problem(401, "/problems/unauthorized");
            eprintln!("[{engine}] {what}: session ended");
        };
        let upath = format!("/api/v1/admin/users/{user}");
        // Deactivated (and reactivated), locked (and unlocked).
        let t = fresh().await;
        app.patch_json(&upath, &admin, &json!({"status": "deactivated"})).await.assert_status(204);
        dead(&t, "deactivated").await;
        app.patch_json(&upath, &admin, &json!({"status": "active"})).await.assert_status(204);
        let t = fresh().await;
        app.patch_json(&upath, &admin, &json!({"status": "locked"})).await.assert_status(204);
        dead(&t, "locked").await;
        app.post_json(&format!("{upath}/unlock"), &admin, &json!({})).await.assert_status(204);
        // Roles reduced (adding one keeps the session).
        let t = fresh().await;
        app.patch_json(&upath, &admin, &json!({"roles": [ROLE_REP, crm::templates::ROLE_SERVICE]}))
            .await
            .assert_status(204);
        app.get("/api/v1/me", &t).await.assert_status(200);
        app.patch_json(&upath, &admin, &json!({"roles": [ROLE_REP]})).await.assert_status(204);
        dead(&t, "a role removed").await;
        // Password reset by an administrator: the one-time password must be changed first.
        let t = fresh().await;
        let otp =
            app.post_json(&format!("{upath}/password"), &admin, &json!({})).await.assert_status(200).json()["password"]
                .as_str()
                .expect("password")
                .to_string();
        dead(&t, "password reset").await;
        let restricted = app.sign_in("rep.east1", &otp).await;
        app.get("/api/v1/customers", &restricted).await.assert_problem(403, "/problems/password-change-required");
        let weak = app
            .post_json(
                "/api/v1/me/password",
                &restricted,
                &json!({"current_password": otp, "new_password": "password123"}),
            )
            .await;
        weak.assert_problem(422, "/problems/validation");
        app.post_json(
            "/api/v1/me/password",
            &restricted,
            &json!({"current_password": otp, "new_password": "rep.east1-2027-harbor"}),
        )
        .await
        .assert_problem(422, "/problems/validation");
        app.post_json(
            "/api/v1/me/password",
            &restricted,
            &json!({"current_password": otp, "new_password": "violet-kettle-93-harbor"}),
        )
        .await
        .assert_status(204);
        app.get("/api/v1/customers", &restricted).await.assert_status(200);
        // Sign out everywhere.
        let a = app.sign_in("rep.east1", "violet-kettle-93-harbor").await;
        let b = app.sign_in("rep.east1", "violet-kettle-93-harbor").await;
        let listed = app.get("/api/v1/me/sessions", &a).await.assert_status(200).json();
        assert!(listed.as_array().is_some_and(|s| s.len() >= 3), "[{engine}] {listed}");
        assert_eq!(app.delete("/api/v1/me/sessions", &a).await.assert_status(200).json()["ended"], 3);
        dead(&a, "everywhere (this one)").await;
        dead(&b, "everywhere (another)").await;
        dead(&restricted, "everywhere (a third)").await;
        // An administrator ends someone's sessions.
        let t = app.sign_in("rep.east1", "violet-kettle-93-harbor").await;
        app.delete(&format!("{upath}/sessions"), &admin).await.assert_status(200);
        dead(&t, "ended by an administrator").await;
        // Delegated scope: a representative cannot reset anybody's password.
        let rep = token(&app, "rep.north1").await;
        app.post_json(&format!("{upath}/password"), &rep, &json!({})).await.assert_problem(404, "/problems/not-found");
        // Password hashes never leave the server.
        let users = app.get("/api/v1/admin/users", &admin).await.assert_status(200).text();
        assert!(!users.contains("argon2") && !users.contains("password_hash"), "[{engine}] a hash in the users list");
    }
}

#[tokio::test]
async fn api_tokens_never_exceed_their_user() {
    for engine in engines() {
        let (app, demo) = demo_app(engine).await;
        let rep = token(&app, "rep.north1").await;
        let created =
            app.post_json("/api/v1/me/tokens", &rep, &json!({"name": "ERP sync"})).await.assert_status(201).json();
        let t = created["token"].as_str().expect("token").to_string();
        assert!(t.starts_with("crm_pat_"));
        // Same records as the user's session, and not one more.
        let by_session = app.get("/api/v1/customers/count", &rep).await.assert_status(200).json();
        let by_token = app.get("/api/v1/customers/count", &t).await.assert_status(200).json();
        assert_eq!(by_session, by_token, "[{engine}] the token sees what its user sees");
        let someone_elses =
            app.sql_i64(&format!("SELECT MIN(id) FROM customers WHERE owner_id = {}", demo.users["rep.north2"])).await;
        app.get(&format!("/api/v1/customers/{someone_elses}"), &t).await.assert_problem(404, "/problems/not-found");
        app.get("/api/v1/admin/users", &t).await.assert_problem(404, "/problems/not-found");
        // A token manages no credentials.
        app.post_json("/api/v1/me/tokens", &t, &json!({"name": "child"}))
            .await
            .assert_problem(403, "/problems/forbidden");
        app.post_json(
            "/api/v1/me/password",
            &t,
            &json!({"current_password": PERSONA_PASSWORD, "new_password": "violet-kettle-93-harbor"}),
        )
        .await
        .assert_problem(403, "/problems/forbidden");
        // Listed without the secret.
        let listed = app.get("/api/v1/me/tokens", &rep).await.assert_status(200).text();
        assert!(listed.contains("ERP sync") && !listed.contains(&t), "[{engine}] {listed}");
        let stored = app.sql_strings("SELECT token_hash FROM api_tokens").await;
        assert!(!stored.iter().any(|h| h.contains(&t[8..])));
        // The user's rights shrink: so do the token's, at once.
        let admin = token(&app, "admin").await;
        app.patch_json(&format!("/api/v1/admin/users/{}", demo.users["rep.north1"]), &admin, &json!({"roles": []}))
            .await
            .assert_status(204);
        let unknown = app.get("/api/v1/widgets", &t).await;
        let gone = app.get("/api/v1/customers", &t).await;
        assert_eq!(
            (gone.status, gone.text()),
            (unknown.status, unknown.text()),
            "[{engine}] customers still exist for the token"
        );
        // Revoked: dead.
        let rep = app.sign_in("rep.north1", PERSONA_PASSWORD).await;
        let id = created["id"].as_i64().expect("id");
        app.delete(&format!("/api/v1/me/tokens/{id}"), &rep).await.assert_status(204);
        app.get("/api/v1/me", &t).await.assert_problem(401, "/problems/unauthorized");
        // Deactivation kills every token for good.
        let t2 =
            app.post_json("/api/v1/me/tokens", &rep, &json!({"name": "two"})).await.assert_status(201).json()["token"]
                .as_str()
                .expect("token")
                .to_string();
        let upath = format!("/api/v1/admin/users/{}", demo.users["rep.north1"]);
        app.patch_json(&upath, &admin, &json!({"status": "deactivated"})).await.assert_status(204);
        app.patch_json(&upath, &admin, &json!({"status": "active"})).await.assert_status(204);
        app.get("/api/v1/me", &t2).await.assert_problem(401, "/problems/unauthorized");
        let audited = app
            .sql_i64("SELECT COUNT(*) FROM audit_log WHERE action IN ('api_token.create', 'api_token.revoke')")
            .await;
        assert_eq!(audited, 3, "[{engine}] token events audited");
    }
}

#[tokio::test]
async fn ip_allowlists_hold_at_sign_in_and_on_every_request() {
    for engine in engines() {
        let (app, _demo) = demo_app(engine).await;
        let office = "10.20.30.40";
        let admin_session = post_from(&app, office, "/api/v1/session", "", &creds("admin", ADMIN_PASSWORD))
            .await
            .assert_status(200)
            .json();
        let admin = admin_session["token"].as_str().expect("token").to_string();
        let rep = sign_in_from(&app, "198.51.100.7", creds("rep.north1", PERSONA_PASSWORD))
            .await
            .assert_status(200)
            .json()["token"]
            .as_str()
            .expect("token")
            .to_string();
        let mut settings = app.get("/api/v1/admin/security", &admin).await.assert_status(200).json();
        settings["network"]["allow"] = json!(["10.0.0.0/8", "2001:db8::/32"]);
        // From outside the new list, the change would lock the administrator out: refused.
        let body = settings.to_string();
        let put = |ip: &'static str| {
            let b = from(ip, Method::PUT, "/api/v1/admin/security")
                .header(header::AUTHORIZATION, format!("Bearer {admin}"))
                .header(header::CONTENT_TYPE, "application/json");
            app.send(b.body(Body::from(body.clone())).expect("request"))
        };
        put("198.51.100.1").await.assert_problem(422, "/problems/validation");
        let saved = put(office).await.assert_status(200).json();
        assert_eq!(saved["network"]["allow"], json!(["10.0.0.0/8", "2001:db8::/32"]));
        // The representative's live session from home is refused on its next request.
        get_from(&app, "198.51.100.7", "/api/v1/me", &rep).await.assert_problem(403, "/problems/access-restricted");
        get_from(&app, "10.1.1.1", "/api/v1/me", &rep).await.assert_status(200);
        get_from(&app, "::ffff:10.1.1.1", "/api/v1/me", &rep).await.assert_status(200);
        get_from(&app, "2001:db8:1::9", "/api/v1/me", &rep).await.assert_status(200);
        get_from(&app, "2001:db9::9", "/api/v1/me", &rep).await.assert_problem(403, "/problems/access-restricted");
        // An in-process request without an address is refused too (unknown is not inside the list).
        app.get("/api/v1/me", &rep).await.assert_problem(403, "/problems/access-restricted");
        // Sign-in from outside fails like any failure.
        sign_in_from(&app, "198.51.100.7", creds("rep.north1", PERSONA_PASSWORD))
            .await
            .assert_problem(401, "/problems/invalid-credentials");
        sign_in_from(&app, "10.9.9.9", creds("rep.north1", PERSONA_PASSWORD)).await.assert_status(200);
        // X-Forwarded-For from an untrusted peer is ignored.
        let b = from("198.51.100.7", Method::GET, "/api/v1/me")
            .header(header::AUTHORIZATION, format!("Bearer {rep}"))
            .header("x-forwarded-for", "10.1.1.1");
        app.send(b.body(Body::empty()).expect("request")).await.assert_problem(403, "/problems/access-restricted");
    }
}

#[tokio::test]
async fn sign_in_hours_hold_at_sign_in_and_on_every_request() {
    for engine in engines() {
        let (app, _demo) = demo_app(engine).await;
        let admin = token(&app, "admin").await;
        let rep = token(&app, "rep.north1").await;
        let minute = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() / 60
            % 1440) as i64;
        let hm = |m: i64| format!("{:02}:{:02}", m.rem_euclid(1440) / 60, m.rem_euclid(1440) % 60);
        let mut settings = app.get("/api/v1/admin/security", &admin).await.assert_status(200).json();
        // A window that ends an hour ago and starts in an hour: it runs across midnight whatever the time is.
        settings["time_zone"] = json!("Asia/Shanghai");
        let shanghai = minute + 8 * 60;
        settings["sign_in_hours"] =
            json!({ ROLE_REP.to_string(): [{"start": hm(shanghai + 60), "end": hm(shanghai - 60)}] });
        app.request(
            Method::PUT,
            "/api/v1/admin/security",
            &admin,
            Some(("application/json", settings.to_string().into_bytes())),
        )
        .await
        .assert_status(200);
        app.get("/api/v1/me", &rep).await.assert_problem(403, "/problems/access-restricted");
        app.post_json("/api/v1/session", "", &creds("rep.north1", PERSONA_PASSWORD))
            .await
            .assert_problem(401, "/problems/invalid-credentials");
        app.get("/api/v1/me", &admin).await.assert_status(200);
        // The complement: now is inside.
        settings["sign_in_hours"] =
            json!({ ROLE_REP.to_string(): [{"start": hm(shanghai - 60), "end": hm(shanghai + 60)}] });
        app.request(
            Method::PUT,
            "/api/v1/admin/security",
            &admin,
            Some(("application/json", settings.to_string().into_bytes())),
        )
        .await
        .assert_status(200);
        app.get("/api/v1/me", &rep).await.assert_status(200);
        // Settings are refused when malformed, and their change is audited.
        settings["time_zone"] = json!("Mars/Olympus_Mons");
        app.request(
            Method::PUT,
            "/api/v1/admin/security",
            &admin,
            Some(("application/json", settings.to_string().into_bytes())),
        )
        .await
        .assert_problem(422, "/problems/validation");
        assert_eq!(app.sql_i64("SELECT COUNT(*) FROM audit_log WHERE action = 'security.settings'").await, 2);
        // Only administrators with modify-all change them; a representative does not see them.
        app.get("/api/v1/admin/security", &rep).await.assert_problem(404, "/problems/not-found");
    }
}

#[tokio::test]
async fn sign_in_history_is_visible_to_the_user_and_to_administrators_in_scope() {
    for engine in engines() {
        let (app, demo) = demo_app(engine).await;
        let b = from("198.51.100.44", Method::POST, "/api/v1/session")
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::USER_AGENT, "HistoryTest/1.0");
        app.send(b.body(Body::from(creds("rep.south1", "nope-nope").to_string())).expect("request"))
            .await
            .assert_status(401);
        let rep = token(&app, "rep.south1").await;
        let mine = app.get("/api/v1/me/sign-ins", &rep).await.assert_status(200).json();
        let rows = mine.as_array().expect("rows");
        assert_eq!(rows.len(), 2, "[{engine}] {mine}");
        assert_eq!(rows[1]["result"], "bad_password");
        assert_eq!(rows[1]["ip"], "198.51.100.44");
        assert_eq!(rows[1]["user_agent"], "HistoryTest/1.0");
        assert_eq!(rows[0]["result"], "success");
        assert!(rows[0]["at"].as_i64().is_some() && rows[0].get("mfa").is_some());
        // The administrator sees it; another representative sees only their own.
        let admin = token(&app, "admin").await;
        let all = app
            .get(&format!("/api/v1/admin/sign-ins?user={}", demo.users["rep.south1"]), &admin)
            .await
            .assert_status(200)
            .json();
        assert_eq!(all.as_array().map(Vec::len), Some(2));
        let other = token(&app, "rep.south2").await;
        let theirs = app.get("/api/v1/me/sign-ins", &other).await.assert_status(200).json();
        assert!(theirs.as_array().expect("rows").iter().all(|r| r["username"] == "rep.south2"), "[{engine}] {theirs}");
        app.get("/api/v1/admin/sign-ins", &other).await.assert_problem(404, "/problems/not-found");
    }
}

#[tokio::test]
async fn step_up_is_fresh_after_a_code_and_gates_sensitive_features() {
    for engine in engines() {
        let (app, _demo) = demo_app(engine).await;
        let rep = token(&app, "rep.north1").await;
        let (secret, codes) = enrol(&app, &rep).await;
        // A new session after enrolment signs in with a code; creating a token needs a fresh proof.
        let s = app
            .post_json(
                "/api/v1/session",
                "",
                &json!({"username": "rep.north1", "password": PERSONA_PASSWORD, "recovery_code": codes[3]}),
            )
            .await
            .assert_status(200)
            .json();
        let t = s["token"].as_str().expect("token").to_string();
        app.post_json("/api/v1/me/tokens", &t, &json!({"name": "fresh"})).await.assert_status(201);
        // Age the proof beyond the window: step-up needed.
        app.sql_rows("UPDATE sessions SET verified_at = 1 WHERE id = (SELECT MAX(id) FROM sessions)").await;
        app.post_json("/api/v1/me/tokens", &t, &json!({"name": "stale"}))
            .await
            .assert_problem(403, "/problems/step-up-required");
        app.post_json("/api/v1/session/step-up", &t, &json!({"password": PERSONA_PASSWORD}))
            .await
            .assert_problem(403, "/problems/forbidden");
        app.post_json("/api/v1/session/step-up", &t, &json!({"recovery_code": codes[4]})).await.assert_status(200);
        app.post_json("/api/v1/me/tokens", &t, &json!({"name": "stepped up"})).await.assert_status(201);
        // Recovery codes are replaced with a TOTP code; the old ones stop working.
        app.sql_rows("UPDATE mfa_totp SET last_step = 0").await;
        let fresh = app
            .post_json("/api/v1/me/mfa/recovery-codes", &t, &json!({"code": code(&secret)}))
            .await
            .assert_status(200)
            .json();
        assert_eq!(fresh["recovery_codes"].as_array().map(Vec::len), Some(10));
        let old = json!({"username": "rep.north1", "password": PERSONA_PASSWORD, "recovery_code": codes[5]});
        app.post_json("/api/v1/session", "", &old).await.assert_problem(401, "/problems/invalid-credentials");
    }
}
