//! Sign-in and account security at the store: lockout and per-network limits that hold across processes, TOTP
//! with replay refusal and single-use recovery codes, session revocation on every account event, API tokens that
//! never exceed their user, network and time policies on sign-in and on live sessions, password policy and hash
//! upgrades. On every engine of `testdb::engines()`.

use crate::support::*;
use crate::testdb::engines;
use crm_domain::{Action, Module, UserId};
use crm_policy::{PolicyConfig, Scope, UserStatus};
use crm_store::auth::{HoursWindow, totp_code_at};
use crm_store::{
    AuthOutcome, Authenticated, ClientInfo, NewUser, SecuritySettings, SignInFailure, SignInOutcome, SignInRequest,
    SignedIn, Store, StoreError,
};
use std::net::IpAddr;

const ADMIN: i64 = 10;
const REP: i64 = 11;
const EXTRA: i64 = 12;

/// An administrator (users and roles, modify-all), a representative (own customers), and an extra role that adds
/// nothing but can be taken away.
fn policy() -> PolicyConfig {
    let mut admin = allow(role(ADMIN, "admin"), Module::Users, &Action::ALL, Scope::All);
    admin = allow(admin, Module::Roles, &Action::ALL, Scope::All);
    admin = allow(admin, Module::Customers, &Action::ALL, Scope::All);
    admin.view_all = true;
    admin.modify_all = true;
    let rep = allow(role(REP, "rep"), Module::Customers, &Action::ALL, Scope::Own);
    let extra = allow(role(EXTRA, "extra"), Module::Customers, &[Action::View], Scope::All);
    PolicyConfig { roles: vec![admin, rep, extra], ..PolicyConfig::default() }
}

fn pw(username: &str) -> String {
    format!("pw-{username}-Secret-42")
}

fn client(ip: &str) -> ClientInfo {
    ClientInfo { ip: Some(ip.parse::<IpAddr>().expect("ip")), user_agent: Some("store-test".into()) }
}

async fn attempt(
    store: &Store,
    username: &str,
    password: &str,
    c: &ClientInfo,
) -> Result<SignInOutcome, SignInFailure> {
    let req = SignInRequest { organization: Some("acme"), username, password, ..Default::default() };
    store.unscoped_system_access().sign_in_with(&req, c).await
}

async fn signed(store: &Store, username: &str, c: &ClientInfo) -> SignedIn {
    match attempt(store, username, &pw(username), c).await {
        Ok(SignInOutcome::Signed(s)) => s,
        other => panic!("{username} should sign in: {other:?}"),
    }
}

fn is_invalid(r: &Result<SignInOutcome, SignInFailure>) -> bool {
    matches!(r, Err(SignInFailure::Invalid))
}

async fn auth(store: &Store, token: &str, c: &ClientInfo) -> Option<Authenticated> {
    match store.unscoped_system_access().authenticate_from(token, c).await.expect("authenticate") {
        AuthOutcome::Valid(a) => Some(*a),
        _ => None,
    }
}

async fn outcome(store: &Store, token: &str, c: &ClientInfo) -> &'static str {
    match store.unscoped_system_access().authenticate_from(token, c).await.expect("authenticate") {
        AuthOutcome::Valid(_) => "valid",
        AuthOutcome::Invalid => "invalid",
        AuthOutcome::Denied(_) => "denied",
    }
}

struct World {
    env: Env,
    org: Org,
    admin: UserId,
    rep: UserId,
}

async fn world(engine: &'static str) -> World {
    let env = Env::new(engine).await;
    let org = Org::new(&env.store, "acme", &policy()).await;
    let admin = org.user(&env.store, "boss", &[ADMIN]).await;
    let rep = org.user(&env.store, "rep", &[REP, EXTRA]).await;
    World { env, org, admin, rep }
}

impl World {
    async fn admin_principal(&self) -> crm_store::Principal {
        self.org.sign_in(&self.env.store, "boss").await
    }
    async fn set_security(&self, s: SecuritySettings) {
        let p = self.admin_principal().await;
        self.env.store.scoped(p).admin_set_security_settings(s, &ClientInfo::default()).await.expect("settings");
    }
    async fn history(&self, user: UserId) -> Vec<String> {
        let rows =
            self.env.raw.rows(format!("SELECT result FROM sign_in_history WHERE user_id = {user} ORDER BY id")).await;
        rows.iter().map(|r| sqlx::Row::try_get::<String, _>(r, 0).expect("result")).collect()
    }
}

#[tokio::test]
async fn brute_force_against_one_account_locks_it_softly_and_unlock_works() {
    for engine in engines() {
        let w = world(engine).await;
        let store = &w.env.store;
        let c = client("198.51.100.1");
        // The real user is signed in before the attack.
        let before = signed(store, "rep", &client("198.51.100.50")).await;
        for i in 0..5 {
            assert!(
                is_invalid(&attempt(store, "rep", "wrong-password", &client(&format!("203.0.113.{i}"))).await),
                "[{engine}] failure {i}"
            );
        }
        // Locked now: the right password fails exactly like a wrong one.
        assert!(
            is_invalid(&attempt(store, "rep", &pw("rep"), &c).await),
            "[{engine}] the right password during the lockout"
        );
        let locked_until =
            w.env.raw.int(format!("SELECT locked_until FROM auth_lockouts WHERE user_id = {}", w.rep)).await;
        assert!(locked_until > 0, "[{engine}] a lock is recorded");
        // Other accounts are not affected.
        assert_eq!(signed(store, "boss", &c).await.user, w.admin, "[{engine}] the administrator signs in meanwhile");
        // Attempts during the lock do not grow it.
        assert!(is_invalid(&attempt(store, "rep", "wrong-again", &c).await));
        assert_eq!(
            w.env.raw.int(format!("SELECT locked_until FROM auth_lockouts WHERE user_id = {}", w.rep)).await,
            locked_until
        );
        // Another process on the same database sees the same lock (counters live in the database).
        let other = open(&w.env.db.url).await;
        assert!(
            is_invalid(&attempt(&other, "rep", &pw("rep"), &c).await),
            "[{engine}] a second process honours the lock"
        );
        // Failed attempts by someone else never sign the real user out.
        assert!(
            auth(store, &before.token, &ClientInfo::default()).await.is_some(),
            "[{engine}] the soft lockout ended a session"
        );
        // The history tells the user what happened.
        let h = w.history(w.rep).await;
        assert_eq!(h.iter().filter(|r| *r == "bad_password").count(), 5, "[{engine}] {h:?}");
        assert!(h.iter().filter(|r| *r == "locked_out").count() >= 3, "[{engine}] {h:?}");
        // An administrator unlocks; the next sign-in works and resets the counter.
        let admin = w.admin_principal().await;
        store.scoped(admin.clone()).admin_unlock(w.rep, &ClientInfo::default()).await.expect("unlock");
        signed(store, "rep", &c).await;
        assert_eq!(w.env.raw.int(format!("SELECT COUNT(*) FROM auth_lockouts WHERE user_id = {}", w.rep)).await, 0);
        // The lockout expires by itself too: move it into the past.
        for _ in 0..5 {
            let _ = attempt(store, "rep", "wrong-password", &c).await;
        }
        assert!(is_invalid(&attempt(store, "rep", &pw("rep"), &c).await));
        w.env.raw.exec(format!("UPDATE auth_lockouts SET locked_until = 1 WHERE user_id = {}", w.rep)).await;
        signed(store, "rep", &c).await;
        // Every attempt is in the audit trail.
        let audited = w.env.raw.int(format!("SELECT COUNT(*) FROM audit_log WHERE org_id = {} AND action = 'session.sign_in' AND outcome = 'failure'", w.org.id)).await;
        assert!(audited >= 12, "[{engine}] {audited} failed sign-ins audited");
        other.close().await;
        w.env.close().await;
    }
}

#[tokio::test]
async fn the_lockout_delay_grows_with_each_failure_after_the_threshold() {
    for engine in engines() {
        let w = world(engine).await;
        let c = client("198.51.100.2");
        let mut delays = Vec::new();
        for _ in 0..3 {
            for _ in 0..if delays.is_empty() { 5 } else { 1 } {
                let _ = attempt(&w.env.store, "rep", "wrong", &c).await;
            }
            let row = w
                .env
                .raw
                .rows(format!("SELECT locked_until, last_failure_at FROM auth_lockouts WHERE user_id = {}", w.rep))
                .await;
            let until: i64 = sqlx::Row::try_get(&row[0], 0).expect("until");
            let at: i64 = sqlx::Row::try_get(&row[0], 1).expect("at");
            delays.push(until - at);
            // Let the lock lapse (as if time passed) so the next failure counts.
            w.env.raw.exec(format!("UPDATE auth_lockouts SET locked_until = 1 WHERE user_id = {}", w.rep)).await;
        }
        assert_eq!(delays, [60_000, 120_000, 240_000], "[{engine}] doubling from the organization's base delay");
        w.env.close().await;
    }
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
async fn one_network_is_limited_across_accounts_and_processes() {
    for engine in engines() {
        let w = world(engine).await;
        let attacker = client("203.0.113.77");
        away_from_the_failure_window_edge().await;
        for i in 0..crm_store::auth::IP_FAILURES_PER_WINDOW {
            let r = attempt(&w.env.store, &format!("nobody{i}"), "guess", &attacker).await;
            assert!(is_invalid(&r), "[{engine}] attempt {i}: {r:?}");
        }
        // Over the limit: refused before any password is checked, even a right one.
        let r = attempt(&w.env.store, "rep", &pw("rep"), &attacker).await;
        assert!(
            matches!(r, Err(SignInFailure::RateLimited { retry_after_secs }) if retry_after_secs > 0),
            "[{engine}] {r:?}"
        );
        // A restarted server (a new store on the same database) keeps the count.
        let restarted = open(&w.env.db.url).await;
        assert!(matches!(
            attempt(&restarted, "rep", &pw("rep"), &attacker).await,
            Err(SignInFailure::RateLimited { .. })
        ));
        // IPv6 clients are counted by /64, and mapped IPv4 as IPv4.
        let mapped = client("::ffff:203.0.113.77");
        assert!(matches!(
            attempt(&restarted, "rep", &pw("rep"), &mapped).await,
            Err(SignInFailure::RateLimited { .. })
        ));
        // Other networks are not affected.
        signed(&restarted, "rep", &client("198.51.100.3")).await;
        signed(&restarted, "boss", &client("2001:db8::1")).await;
        restarted.close().await;
        w.env.close().await;
    }
}

#[tokio::test]
async fn unknown_users_and_inactive_accounts_fail_like_a_wrong_password() {
    for engine in engines() {
        let w = world(engine).await;
        let store = &w.env.store;
        let c = client("198.51.100.4");
        assert!(is_invalid(&attempt(store, "ghost", "whatever", &c).await));
        assert!(is_invalid(&attempt(store, "rep", "wrong", &c).await));
        let sys = store.unscoped_system_access();
        sys.set_user_status(w.org.id, None, w.rep, UserStatus::Locked).await.expect("lock");
        assert!(is_invalid(&attempt(store, "rep", &pw("rep"), &c).await));
        sys.set_user_status(w.org.id, None, w.rep, UserStatus::Deactivated).await.expect("deactivate");
        assert!(is_invalid(&attempt(store, "rep", &pw("rep"), &c).await));
        assert_eq!(w.history(w.rep).await, ["bad_password", "account_locked", "account_deactivated"], "[{engine}]");
        // The compatibility path answers the same for all of them.
        let a = sys.sign_in(Some("acme"), "ghost", "x", None, None).await.expect_err("unknown");
        let b = sys.sign_in(Some("acme"), "rep", &pw("rep"), None, None).await.expect_err("deactivated");
        assert_eq!(describe(&a), describe(&b));
        w.env.close().await;
    }
}

#[tokio::test]
async fn sessions_end_on_every_account_event_but_not_on_role_additions() {
    for engine in engines() {
        let w = world(engine).await;
        let store = &w.env.store;
        let sys = store.unscoped_system_access();
        let c = ClientInfo::default();
        let org = w.org.id;
        let live = async |token: &str| auth(store, token, &c).await.is_some();

        // Admin lock (explicit) ends sessions; reactivation does not revive them.
        let s = signed(store, "rep", &c).await;
        sys.set_user_status(org, None, w.rep, UserStatus::Locked).await.expect("lock");
        assert!(!live(&s.token).await, "[{engine}] lock");
        sys.set_user_status(org, None, w.rep, UserStatus::Active).await.expect("unlock");
        assert!(!live(&s.token).await, "[{engine}] reactivation revived a session");

        // Deactivation.
        let s = signed(store, "rep", &c).await;
        sys.set_user_status(org, None, w.rep, UserStatus::Deactivated).await.expect("deactivate");
        assert!(!live(&s.token).await, "[{engine}] deactivation");
        sys.set_user_status(org, None, w.rep, UserStatus::Active).await.expect("reactivate");

        // A role taken away ends sessions; a role added does not.
        let s = signed(store, "rep", &c).await;
        sys.set_user_roles(org, None, w.rep, &[REP, EXTRA, ADMIN]).await.expect("add");
        assert!(live(&s.token).await, "[{engine}] adding a role ended the session");
        sys.set_user_roles(org, None, w.rep, &[REP]).await.expect("reduce");
        assert!(!live(&s.token).await, "[{engine}] a reduced role set kept the session");

        // An administrator's password reset ends every session; the user must change it at sign-in.
        let s = signed(store, "rep", &c).await;
        let admin = w.admin_principal().await;
        let otp = store.scoped(admin.clone()).admin_reset_password(w.rep, None, &c).await.expect("reset");
        assert!(!live(&s.token).await, "[{engine}] password reset");
        let fresh = match attempt(store, "rep", &otp, &c).await {
            Ok(SignInOutcome::Signed(s)) => s,
            other => panic!("one-time password: {other:?}"),
        };
        assert!(fresh.must_change_password);
        let a = auth(store, &fresh.token, &c).await.expect("restricted session");
        assert_eq!(a.restriction, Some(crm_store::Restriction::PasswordChange));
        // Changing it lifts the restriction and ends the user's other sessions.
        let other = match attempt(store, "rep", &otp, &c).await {
            Ok(SignInOutcome::Signed(s)) => s,
            other => panic!("{other:?}"),
        };
        sys.change_password(&a, &otp, "a-brand-new-passphrase-77", &c).await.expect("change");
        assert!(!live(&other.token).await, "[{engine}] the other session survived the change");
        let a = auth(store, &fresh.token, &c).await.expect("the changing session lives on");
        assert_eq!(a.restriction, None);

        // Sign out everywhere, and sign out.
        let s2 = match attempt(store, "rep", "a-brand-new-passphrase-77", &c).await {
            Ok(SignInOutcome::Signed(s)) => s,
            other => panic!("{other:?}"),
        };
        assert_eq!(sys.sign_out_everywhere(&a, &c).await.expect("everywhere"), 2);
        assert!(!live(&fresh.token).await && !live(&s2.token).await, "[{engine}] sign out everywhere");
        let s3 = match attempt(store, "rep", "a-brand-new-passphrase-77", &c).await {
            Ok(SignInOutcome::Signed(s)) => s,
            other => panic!("{other:?}"),
        };
        let a3 = auth(store, &s3.token, &c).await.expect("live");
        sys.end_session(&a3, &c).await.expect("sign out");
        assert!(!live(&s3.token).await);
        for action in ["password.reset", "password.change", "session.sign_out_everywhere", "session.sign_out"] {
            let n = w
                .env
                .raw
                .int(format!("SELECT COUNT(*) FROM audit_log WHERE org_id = {org} AND action = '{action}'"))
                .await;
            assert_eq!(n, 1, "[{engine}] audit entries for {action}");
        }
        w.env.close().await;
    }
}

#[tokio::test]
async fn sessions_expire_when_idle_and_at_their_absolute_end() {
    for engine in engines() {
        let w = world(engine).await;
        let store = &w.env.store;
        let c = ClientInfo::default();
        let s = signed(store, "rep", &c).await;
        assert!(s.expires_at - s.session_id > 0);
        let idle = 2 * 3600 * 1000 + 1000;
        w.env
            .raw
            .exec(format!("UPDATE sessions SET last_seen_at = last_seen_at - {idle} WHERE id = {}", s.session_id))
            .await;
        assert_eq!(outcome(store, &s.token, &c).await, "invalid", "[{engine}] idle for over two hours");
        let s = signed(store, "rep", &c).await;
        w.env.raw.exec(format!("UPDATE sessions SET expires_at = 1 WHERE id = {}", s.session_id)).await;
        assert_eq!(outcome(store, &s.token, &c).await, "invalid", "[{engine}] past the absolute end");
        // The organization's policy sets the idle limit.
        let mut settings = SecuritySettings::default();
        settings.sessions.idle_minutes = 5;
        w.set_security(settings).await;
        let s = signed(store, "rep", &c).await;
        w.env
            .raw
            .exec(format!("UPDATE sessions SET last_seen_at = last_seen_at - 360000 WHERE id = {}", s.session_id))
            .await;
        assert_eq!(
            outcome(store, &s.token, &c).await,
            "invalid",
            "[{engine}] idle for six minutes under a five-minute policy"
        );
        w.env.close().await;
    }
}

/// Enrols TOTP for a signed-in user; returns the secret and the recovery codes.
async fn enrol(store: &Store, a: &Authenticated) -> (String, Vec<String>) {
    let sys = store.unscoped_system_access();
    let e = sys.totp_begin(a).await.expect("begin");
    assert!(e.otpauth_uri.starts_with("otpauth://totp/"), "{}", e.otpauth_uri);
    assert!(e.qr_svg.contains("<svg"));
    let now = now_secs();
    assert!(
        sys.totp_confirm(a, "000000", &ClientInfo::default()).await.is_err()
            || totp_code_at(&e.secret, now).as_deref() == Some("000000")
    );
    let code = totp_code_at(&e.secret, now).expect("code");
    let codes = sys.totp_confirm(a, &code, &ClientInfo::default()).await.expect("confirm");
    (e.secret, codes)
}

/// `rep` signs in with the password and a TOTP or recovery code.
async fn codes_sign_in(store: &Store, otp: Option<String>, rc: Option<String>) -> Result<SignInOutcome, SignInFailure> {
    let password = pw("rep");
    let r = SignInRequest {
        organization: Some("acme"),
        username: "rep",
        password: &password,
        otp: otp.as_deref(),
        recovery_code: rc.as_deref(),
        ..Default::default()
    };
    store.unscoped_system_access().sign_in_with(&r, &ClientInfo::default()).await
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs()
}

#[tokio::test]
async fn totp_codes_are_single_use_and_recovery_codes_work_once() {
    for engine in engines() {
        let w = world(engine).await;
        let store = &w.env.store;
        let sys = store.unscoped_system_access();
        let c = ClientInfo::default();
        let s = signed(store, "rep", &c).await;
        let a = auth(store, &s.token, &c).await.expect("live");
        let (secret, codes) = enrol(store, &a).await;
        assert_eq!(codes.len(), 10);
        // The enrolment code itself cannot be replayed for a sign-in.
        let enrol_code = totp_code_at(&secret, now_secs()).expect("code");
        let with = |otp: Option<String>, rc: Option<String>| codes_sign_in(store, otp, rc);
        assert!(is_invalid(&with(Some(enrol_code.clone()), None).await), "[{engine}] the enrolment code was replayed");
        // The password alone now yields a challenge, not a session.
        let token = match with(None, None).await {
            Ok(SignInOutcome::MfaRequired { mfa_token, .. }) => mfa_token,
            other => panic!("[{engine}] expected a challenge: {other:?}"),
        };
        // A wrong code fails; then a recovery code completes the challenge.
        assert!(matches!(sys.complete_mfa(&token, Some("123456"), None, false, &c).await, Err(SignInFailure::Invalid)));
        let done = sys.complete_mfa(&token, None, Some(&codes[0]), false, &c).await.expect("recovery code");
        assert_eq!(done.mfa, Some("recovery_code"));
        // The challenge is spent, and so is the recovery code.
        assert!(
            sys.complete_mfa(&token, None, Some(&codes[1]), false, &c).await.is_err(),
            "[{engine}] a used challenge"
        );
        assert!(is_invalid(&with(None, Some(codes[0].clone())).await), "[{engine}] a recovery code worked twice");
        // Another recovery code, typed sloppily, works once.
        let sloppy = codes[1].to_uppercase().replace('-', " ");
        assert!(
            matches!(with(None, Some(sloppy.clone())).await, Ok(SignInOutcome::Signed(_))),
            "[{engine}] recovery code 2"
        );
        assert!(is_invalid(&with(None, Some(sloppy)).await));
        let left = sys
            .mfa_status(&auth(store, &done.token, &c).await.expect("live"))
            .await
            .expect("status")
            .recovery_codes_left;
        assert_eq!(left, 8, "[{engine}] recovery codes left");
        // A fresh code works once; its replay and an older step's code are refused.
        w.env.raw.exec(format!("UPDATE mfa_totp SET last_step = 0 WHERE user_id = {}", w.rep)).await;
        let t = now_secs();
        let current = totp_code_at(&secret, t).expect("code");
        let previous = totp_code_at(&secret, t - 30).expect("code");
        let signed_in = with(Some(current.clone()), None).await;
        assert!(
            matches!(signed_in, Ok(SignInOutcome::Signed(ref s)) if s.mfa == Some("totp")),
            "[{engine}] {signed_in:?}"
        );
        assert!(is_invalid(&with(Some(current.clone()), None).await), "[{engine}] a TOTP code replayed");
        if previous != current {
            assert!(is_invalid(&with(Some(previous), None).await), "[{engine}] an older step after a newer one");
        }
        let h = w.history(w.rep).await;
        assert!(
            h.contains(&"mfa_required".to_string()) && h.contains(&"bad_second_factor".to_string()),
            "[{engine}] {h:?}"
        );
        w.env.close().await;
    }
}

#[tokio::test]
async fn a_role_that_requires_mfa_restricts_sessions_until_enrolment() {
    for engine in engines() {
        let w = world(engine).await;
        let store = &w.env.store;
        let sys = store.unscoped_system_access();
        let c = ClientInfo::default();
        let mut p = policy();
        p.roles.iter_mut().filter(|r| r.id == REP).for_each(|r| r.require_mfa = true);
        sys.set_policy(w.org.id, None, &p).await.expect("policy");
        let s = signed(store, "rep", &c).await;
        assert!(s.mfa_enrollment_required);
        let a = auth(store, &s.token, &c).await.expect("live");
        assert_eq!(a.restriction, Some(crm_store::Restriction::MfaEnrollment));
        // API tokens cannot be made to escape the restriction.
        assert!(sys.create_api_token(&a, "ci", None, &c).await.is_err());
        enrol(store, &a).await;
        let a = auth(store, &s.token, &c).await.expect("live");
        assert_eq!(a.restriction, None, "[{engine}] enrolment lifts the restriction");
        assert!(a.step_up_fresh(), "[{engine}] confirming the factor counts as a fresh proof");
        // The factor cannot be removed while the role requires it.
        assert!(sys.totp_disable(&a, Some("000000"), None, &c).await.is_err());
        w.env.close().await;
    }
}

#[tokio::test]
async fn api_tokens_act_as_their_user_and_never_beyond() {
    for engine in engines() {
        let w = world(engine).await;
        let store = &w.env.store;
        let sys = store.unscoped_system_access();
        let c = ClientInfo::default();
        let s = signed(store, "rep", &c).await;
        let a = auth(store, &s.token, &c).await.expect("live");
        let t = sys.create_api_token(&a, "nightly sync", None, &c).await.expect("token");
        assert!(t.token.starts_with("crm_pat_") && t.token.len() == 8 + 64);
        let stored = w.env.raw.rows(format!("SELECT token_hash FROM api_tokens WHERE id = {}", t.info.id)).await;
        let hash: String = sqlx::Row::try_get(&stored[0], 0).expect("hash");
        assert_ne!(hash, t.token, "stored hashed");
        assert!(!hash.contains(&t.token[8..]));
        let ta = auth(store, &t.token, &c).await.expect("the token works");
        assert_eq!(ta.principal.user, w.rep);
        assert_eq!(ta.principal.access.roles, a.principal.access.roles, "[{engine}] the user's rights, no more");
        assert!(ta.principal.access.can(Module::Customers, Action::View));
        assert!(!ta.principal.access.can(Module::Users, Action::View), "[{engine}] the token does not administer");
        // A token manages no credentials.
        assert!(sys.create_api_token(&ta, "child", None, &c).await.is_err(), "[{engine}] a token minted a token");
        assert!(sys.change_password(&ta, &pw("rep"), "another-passphrase-42", &c).await.is_err());
        assert!(sys.totp_begin(&ta).await.is_err());
        // Reduced rights reach the token at once.
        sys.set_user_roles(w.org.id, None, w.rep, &[]).await.expect("no roles");
        let ta = auth(store, &t.token, &c).await.expect("still a token");
        assert!(!ta.principal.access.can(Module::Customers, Action::View), "[{engine}] the token kept a removed right");
        // Listing shows no secret; revocation and expiry end it.
        let listed = sys.my_api_tokens(&a).await.expect("list");
        assert_eq!(listed.len(), 1);
        assert!(serde_json::to_string(&listed).expect("json").contains("nightly sync"));
        assert!(!serde_json::to_string(&listed).expect("json").contains(&t.token));
        let s = signed(store, "rep", &c).await;
        let a = auth(store, &s.token, &c).await.expect("live");
        let t2 = sys.create_api_token(&a, "expiring", Some(crm_now() + 60_000), &c).await.expect("token");
        assert!(auth(store, &t2.token, &c).await.is_some());
        w.env.raw.exec(format!("UPDATE api_tokens SET expires_at = 1 WHERE id = {}", t2.info.id)).await;
        assert!(auth(store, &t2.token, &c).await.is_none(), "[{engine}] an expired token");
        sys.revoke_api_token(&a, t.info.id, &c).await.expect("revoke");
        assert!(auth(store, &t.token, &c).await.is_none(), "[{engine}] a revoked token");
        // Deactivation kills tokens for good.
        let t3 = sys.create_api_token(&a, "third", None, &c).await.expect("token");
        sys.set_user_status(w.org.id, None, w.rep, UserStatus::Deactivated).await.expect("deactivate");
        sys.set_user_status(w.org.id, None, w.rep, UserStatus::Active).await.expect("reactivate");
        assert!(auth(store, &t3.token, &c).await.is_none(), "[{engine}] a token survived deactivation");
        w.env.close().await;
    }
}

fn crm_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64
}

#[tokio::test]
async fn network_and_time_policies_hold_at_sign_in_and_on_live_sessions() {
    for engine in engines() {
        let w = world(engine).await;
        let store = &w.env.store;
        let office = client("10.1.2.3");
        let home = client("198.51.100.9");
        let s = signed(store, "rep", &home).await;
        assert_eq!(outcome(store, &s.token, &home).await, "valid");
        let mut settings = SecuritySettings::default();
        settings.network.roles.insert(REP, vec!["10.0.0.0/8".into(), "2001:db8::/32".into()]);
        w.set_security(settings.clone()).await;
        // The live session from home is refused at its next request, and works again from the office.
        assert_eq!(
            outcome(store, &s.token, &home).await,
            "denied",
            "[{engine}] live session from outside the allowlist"
        );
        assert_eq!(outcome(store, &s.token, &office).await, "valid");
        assert_eq!(outcome(store, &s.token, &client("::ffff:10.9.9.9")).await, "valid", "[{engine}] IPv4-mapped");
        assert_eq!(outcome(store, &s.token, &client("2001:db8:5::1")).await, "valid", "[{engine}] IPv6");
        assert_eq!(outcome(store, &s.token, &ClientInfo::default()).await, "denied", "[{engine}] an unknown address");
        assert!(is_invalid(&attempt(store, "rep", &pw("rep"), &home).await), "[{engine}] sign-in from outside");
        signed(store, "rep", &office).await;
        // The administrator's role has no list: not affected.
        signed(store, "boss", &home).await;
        // Sign-in hours: a window that is never now (one minute, two hours ago… in UTC).
        let now = crm_now() / 60_000 % 1440;
        let start = (now + 120) % 1440;
        let hm = |m: i64| format!("{:02}:{:02}", m / 60, m % 60);
        settings.network.roles.clear();
        settings.time_zone = "UTC".into();
        settings
            .sign_in_hours
            .insert(REP, vec![HoursWindow { days: vec![], start: hm(start), end: hm((start + 1) % 1440) }]);
        w.set_security(settings.clone()).await;
        assert_eq!(outcome(store, &s.token, &office).await, "denied", "[{engine}] outside sign-in hours");
        assert!(is_invalid(&attempt(store, "rep", &pw("rep"), &office).await));
        // A window around now admits.
        settings.sign_in_hours.insert(
            REP,
            vec![HoursWindow { days: vec![], start: hm((now + 1380) % 1440), end: hm((now + 60) % 1440) }],
        );
        w.set_security(settings).await;
        assert_eq!(
            outcome(store, &s.token, &office).await,
            "valid",
            "[{engine}] inside sign-in hours (across midnight when near it)"
        );
        let h = w.history(w.rep).await;
        assert!(
            h.contains(&"network_not_allowed".to_string()) && h.contains(&"outside_sign_in_hours".to_string()),
            "[{engine}] {h:?}"
        );
        w.env.close().await;
    }
}

#[tokio::test]
async fn an_administrator_cannot_lock_themself_out_or_set_invalid_settings() {
    for engine in engines() {
        let w = world(engine).await;
        let admin = w.admin_principal().await;
        let rep = w.org.sign_in(&w.env.store, "rep").await;
        let scoped = w.env.store.scoped(admin);
        let mut s = SecuritySettings::default();
        s.network.allow = vec!["10.0.0.0/8".into()];
        let err = scoped.admin_set_security_settings(s.clone(), &client("198.51.100.1")).await.expect_err("locks out");
        assert!(matches!(err, StoreError::Invalid(_)), "[{engine}] {err:?}");
        scoped.admin_set_security_settings(s.clone(), &client("10.0.0.1")).await.expect("from inside");
        let mut bad = s.clone();
        bad.time_zone = "Nowhere/Never".into();
        bad.network.allow.push("10.0.0.0/99".into());
        let err = scoped.admin_set_security_settings(bad, &client("10.0.0.1")).await.expect_err("invalid");
        match err {
            StoreError::Invalid(errors) => assert_eq!(errors.len(), 2, "[{engine}] {errors:?}"),
            other => panic!("{other:?}"),
        }
        // A representative may not read or change them.
        assert!(matches!(w.env.store.scoped(rep.clone()).admin_security_settings().await, Err(StoreError::NotFound)));
        assert!(matches!(
            w.env.store.scoped(rep).admin_set_security_settings(s, &client("10.0.0.1")).await,
            Err(StoreError::NotFound)
        ));
        w.env.close().await;
    }
}

#[tokio::test]
async fn password_policy_and_hash_upgrades() {
    for engine in engines() {
        let w = world(engine).await;
        let store = &w.env.store;
        let admin = w.admin_principal().await;
        let new = |username: &str, password: &str| NewUser {
            username: username.into(),
            display_name: username.into(),
            email: None,
            password: password.into(),
            manager: None,
            departments: vec![w.org.dept],
            roles: vec![REP],
            must_change_password: true,
        };
        for bad in ["short", "password1234", "qwertyuiop!!", "newbie-newbie-2026"] {
            let r = store.scoped(admin.clone()).admin_create_user(new("newbie", bad)).await;
            assert!(matches!(r, Err(StoreError::Invalid(_))), "[{engine}] {bad:?} accepted: {r:?}");
        }
        store
            .scoped(admin.clone())
            .admin_create_user(new("newbie", "violet-kettle-93-harbor"))
            .await
            .expect("a good password");
        // A hash made with weaker parameters is replaced at the next successful sign-in.
        let weak = {
            use argon2::password_hash::PasswordHasher;
            let params = argon2::Params::new(8 * 1024, 1, 1, None).expect("params");
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
                .hash_password(pw("rep").as_bytes())
                .expect("hash")
                .to_string()
        };
        w.env.raw.exec(format!("UPDATE users SET password_hash = '{weak}' WHERE id = {}", w.rep)).await;
        signed(store, "rep", &ClientInfo::default()).await;
        let rows = w.env.raw.rows(format!("SELECT password_hash FROM users WHERE id = {}", w.rep)).await;
        let now: String = sqlx::Row::try_get(&rows[0], 0).expect("hash");
        assert!(now.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "[{engine}] not upgraded: {now}");
        w.env.close().await;
    }
}

#[tokio::test]
async fn an_operator_recovers_an_account_that_lost_its_second_factor() {
    for engine in engines() {
        let w = world(engine).await;
        let store = &w.env.store;
        let sys = store.unscoped_system_access();
        let c = ClientInfo::default();
        let s = signed(store, "boss", &c).await;
        let a = auth(store, &s.token, &c).await.expect("live");
        enrol(store, &a).await;
        let t = sys.create_api_token(&a, "ops", None, &c).await.expect("token");
        for _ in 0..5 {
            let _ = attempt(store, "boss", "wrong", &c).await;
        }
        let otp = sys.recover_account(w.org.id, w.admin).await.expect("recover");
        assert!(
            auth(store, &s.token, &c).await.is_none() && auth(store, &t.token, &c).await.is_none(),
            "[{engine}] credentials survived"
        );
        let fresh = match attempt(store, "boss", &otp, &c).await {
            Ok(SignInOutcome::Signed(s)) => s,
            other => panic!("[{engine}] the one-time password, without a second factor: {other:?}"),
        };
        assert!(fresh.must_change_password && fresh.mfa.is_none());
        let n = w
            .env
            .raw
            .int(format!("SELECT COUNT(*) FROM audit_log WHERE org_id = {} AND action = 'account.recover'", w.org.id))
            .await;
        assert_eq!(n, 1);
        w.env.close().await;
    }
}
