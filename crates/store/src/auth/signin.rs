//! The sign-in flow. Every failure (unknown user, wrong password, soft-locked, locked or deactivated account,
//! refused by the network or time policy, wrong second factor) gives the caller the same answer, after the same
//! work: one argon2id verification (against a dummy hash for an unknown user) and one write transaction. Only the
//! per-network rate limit answers differently, and it depends on the client, not on the account.
//!
//! A user with a confirmed second factor completes sign-in with a TOTP or recovery code, either in the same
//! request or through the short-lived `mfa_token` the first step returns. A user whose role requires a second
//! factor but who has none yet gets a session restricted to enrolling one.

use super::events::{self, Attempt, Event};
use super::settings::SecuritySettings;
use super::{ClientInfo, mfa, password, random_token, sessions, throttle};
use crate::system::{SystemAccess, hash_token};
use crate::{StoreError, now_ms};
use sqlx::Row;

/// How long an `mfa_token` (the pending second step) lives, and how many wrong codes it takes.
const CHALLENGE_MS: i64 = 5 * 60_000;
const CHALLENGE_ATTEMPTS: i64 = 5;
const CHALLENGE_PREFIX: &str = "crm_mfa_";

#[derive(Debug, Clone, Default)]
pub struct SignInRequest<'a> {
    /// Organization slug; needed only when the username exists in several organizations.
    pub organization: Option<&'a str>,
    pub username: &'a str,
    pub password: &'a str,
    /// A TOTP code, to complete sign-in in one request.
    pub otp: Option<&'a str>,
    /// A recovery code instead of a TOTP code.
    pub recovery_code: Option<&'a str>,
    /// A browser session (cookie) rather than a bearer token.
    pub cookie: bool,
}

/// A new session.
#[derive(Debug, Clone)]
pub struct SignedIn {
    /// Shown once; only its hash is stored.
    pub token: String,
    pub session_id: i64,
    pub org: i64,
    pub user: i64,
    pub expires_at: i64,
    pub must_change_password: bool,
    /// A role requires a second factor the user has not enrolled: the session may only enrol one.
    pub mfa_enrollment_required: bool,
    /// The second factor used: `totp` or `recovery_code`.
    pub mfa: Option<&'static str>,
    /// The session's CSRF token (echo it on state-changing requests made with the cookie).
    pub csrf_token: String,
    pub cookie: bool,
}

#[derive(Debug)]
pub enum SignInOutcome {
    Signed(SignedIn),
    /// The password was right; send a code with this token to `POST /api/v1/session/mfa`.
    MfaRequired {
        mfa_token: String,
        expires_at: i64,
    },
}

#[derive(Debug)]
pub enum SignInFailure {
    /// Wrong credentials, or any other reason not to tell the caller.
    Invalid,
    /// The client network made too many attempts; try again after this many seconds.
    RateLimited {
        retry_after_secs: i64,
    },
    Store(StoreError),
}

impl From<StoreError> for SignInFailure {
    fn from(e: StoreError) -> Self {
        SignInFailure::Store(e)
    }
}
impl From<sqlx::Error> for SignInFailure {
    fn from(e: sqlx::Error) -> Self {
        SignInFailure::Store(StoreError::Db(e))
    }
}

struct Candidate {
    id: i64,
    org: i64,
    hash: String,
    status: String,
    must_change_password: bool,
    version: i64,
    settings: SecuritySettings,
}

/// What the attempt came to, before writing it down.
enum Decision {
    Fail { result: &'static str, counts: bool },
    Challenge,
    Session { mfa: Option<&'static str>, enrollment_required: bool },
}

impl SystemAccess<'_> {
    /// Signs in. See the module documentation for what each outcome means.
    pub async fn sign_in_with(
        &self,
        req: &SignInRequest<'_>,
        client: &ClientInfo,
    ) -> Result<SignInOutcome, SignInFailure> {
        let db = self.db();
        let now = now_ms();
        let bucket = throttle::client_bucket(client.ip);
        if let Some(secs) = throttle::client_retry_after(&mut *db.pool.acquire().await?, db.sql(), &bucket, now).await?
        {
            tracing::warn!(client = %bucket, "sign-in refused: too many attempts from this network");
            return Err(SignInFailure::RateLimited { retry_after_secs: secs });
        }
        let mut q = db.sql();
        q.push(
            "SELECT u.id, u.org_id, u.password_hash, u.status, u.must_change_password, o.policy_version, o.settings \
             FROM users u JOIN organizations o ON o.id = u.org_id WHERE u.username = ",
        )
        .bind(req.username);
        if let Some(slug) = req.organization {
            q.push(" AND o.slug = ").bind(slug);
        }
        let rows = q.fetch_all(&db.pool).await?;
        // An unknown username, or one that exists in several organizations without a slug to choose, is checked
        // against the dummy hash: the same work as a known one.
        let cand = match rows.as_slice() {
            [r] => Some(Candidate {
                id: r.try_get("id")?,
                org: r.try_get("org_id")?,
                hash: r.try_get("password_hash")?,
                status: r.try_get("status")?,
                must_change_password: r.try_get::<i64, _>("must_change_password")? != 0,
                version: r.try_get("policy_version")?,
                settings: SecuritySettings::from_org_settings(&r.try_get::<String, _>("settings")?),
            }),
            _ => None,
        };
        let password_ok = password::verify(req.password, cand.as_ref().map(|c| c.hash.clone())).await;
        let Some(c) = cand else {
            let mut tx = db.begin_write().await?;
            throttle::count_client(&mut tx, db.engine, &bucket, true, now).await?;
            tx.commit().await?;
            return Err(SignInFailure::Invalid);
        };

        let mut conn = db.pool.acquire().await?;
        let lock = throttle::load(&mut conn, db.engine, c.id).await?;
        let mfa_enabled = mfa::enabled(&mut conn, db.engine, c.id).await?;
        drop(conn);
        let policy = self.store.org_policy(c.org, c.version).await?;
        let roles = policy.directory.user(c.id).map(|u| u.roles.clone()).unwrap_or_default();
        let role_requires_mfa = policy.config.roles.iter().any(|r| r.require_mfa && roles.contains(&r.id));

        let mut tx = db.begin_write().await?;
        let decision = if lock.is_locked(now) {
            Decision::Fail { result: "locked_out", counts: false }
        } else if !password_ok {
            Decision::Fail { result: "bad_password", counts: true }
        } else if c.status != "active" {
            Decision::Fail {
                result: if c.status == "locked" { "account_locked" } else { "account_deactivated" },
                counts: false,
            }
        } else if let Err(d) = c.settings.admits(&roles, client.ip, now) {
            Decision::Fail { result: d.as_str(), counts: false }
        } else if mfa_enabled {
            if let Some(code) = req.otp {
                if mfa::verify_totp(&mut tx, db.engine, c.id, code, now).await? {
                    Decision::Session { mfa: Some("totp"), enrollment_required: false }
                } else {
                    Decision::Fail { result: "bad_second_factor", counts: true }
                }
            } else if let Some(code) = req.recovery_code {
                if mfa::use_recovery_code(&mut tx, db.engine, c.id, code, now).await? {
                    Decision::Session { mfa: Some("recovery_code"), enrollment_required: false }
                } else {
                    Decision::Fail { result: "bad_second_factor", counts: true }
                }
            } else {
                Decision::Challenge
            }
        } else {
            Decision::Session { mfa: None, enrollment_required: role_requires_mfa }
        };
        // A failure is written down too: commit unless the database itself failed.
        let outcome = self.conclude(&mut tx, &c, decision, req.cookie, req.username, client, &bucket, now, None).await;
        if let Err(SignInFailure::Store(e)) = outcome {
            return Err(SignInFailure::Store(e));
        }
        tx.commit().await?;
        if matches!(outcome, Ok(SignInOutcome::Signed(_))) && password::needs_rehash(&c.hash) {
            self.rehash(c.id, req.password).await;
        }
        outcome
    }

    /// The second step: a code for the `mfa_token` the first step returned.
    pub async fn complete_mfa(
        &self,
        mfa_token: &str,
        otp: Option<&str>,
        recovery_code: Option<&str>,
        cookie: bool,
        client: &ClientInfo,
    ) -> Result<SignedIn, SignInFailure> {
        let db = self.db();
        let now = now_ms();
        let bucket = throttle::client_bucket(client.ip);
        if let Some(secs) = throttle::client_retry_after(&mut *db.pool.acquire().await?, db.sql(), &bucket, now).await?
        {
            return Err(SignInFailure::RateLimited { retry_after_secs: secs });
        }
        let mut q = db.sql();
        q.push(
            "SELECT ch.id, ch.user_id, ch.expires_at, ch.attempts, ch.used_at, u.org_id, u.username, u.password_hash, u.status, \
             u.must_change_password, o.policy_version, o.settings FROM sign_in_challenges ch JOIN users u ON u.id = ch.user_id \
             JOIN organizations o ON o.id = u.org_id WHERE ch.token_hash = ",
        )
        .bind(hash_token(mfa_token));
        let row = if mfa_token.starts_with(CHALLENGE_PREFIX) { q.fetch_optional(&db.pool).await? } else { None };
        let live = row.as_ref().map(|r| -> Result<bool, sqlx::Error> {
            Ok(r.try_get::<Option<i64>, _>("used_at")?.is_none()
                && r.try_get::<i64, _>("expires_at")? > now
                && r.try_get::<i64, _>("attempts")? < CHALLENGE_ATTEMPTS)
        });
        let (Some(r), Some(Ok(true))) = (row, live) else {
            let mut tx = db.begin_write().await?;
            throttle::count_client(&mut tx, db.engine, &bucket, true, now).await?;
            tx.commit().await?;
            return Err(SignInFailure::Invalid);
        };
        let challenge: i64 = r.try_get("id")?;
        let c = Candidate {
            id: r.try_get("user_id")?,
            org: r.try_get("org_id")?,
            hash: r.try_get("password_hash")?,
            status: r.try_get("status")?,
            must_change_password: r.try_get::<i64, _>("must_change_password")? != 0,
            version: r.try_get("policy_version")?,
            settings: SecuritySettings::from_org_settings(&r.try_get::<String, _>("settings")?),
        };
        let username: String = r.try_get("username")?;
        let lock = throttle::load(&mut *db.pool.acquire().await?, db.engine, c.id).await?;
        let policy = self.store.org_policy(c.org, c.version).await?;
        let roles = policy.directory.user(c.id).map(|u| u.roles.clone()).unwrap_or_default();

        let mut tx = db.begin_write().await?;
        let decision = if lock.is_locked(now) {
            Decision::Fail { result: "locked_out", counts: false }
        } else if c.status != "active" {
            Decision::Fail {
                result: if c.status == "locked" { "account_locked" } else { "account_deactivated" },
                counts: false,
            }
        } else if let Err(d) = c.settings.admits(&roles, client.ip, now) {
            Decision::Fail { result: d.as_str(), counts: false }
        } else {
            let ok = match (otp, recovery_code) {
                (Some(code), _) => mfa::verify_totp(&mut tx, db.engine, c.id, code, now).await?.then_some("totp"),
                (None, Some(code)) => {
                    mfa::use_recovery_code(&mut tx, db.engine, c.id, code, now).await?.then_some("recovery_code")
                }
                (None, None) => None,
            };
            match ok {
                Some(m) => Decision::Session { mfa: Some(m), enrollment_required: false },
                None => Decision::Fail { result: "bad_second_factor", counts: true },
            }
        };
        let outcome =
            self.conclude(&mut tx, &c, decision, cookie, &username, client, &bucket, now, Some(challenge)).await;
        if let Err(SignInFailure::Store(e)) = outcome {
            return Err(SignInFailure::Store(e));
        }
        tx.commit().await?;
        match outcome? {
            SignInOutcome::Signed(s) => Ok(s),
            SignInOutcome::MfaRequired { .. } => Err(SignInFailure::Invalid),
        }
    }

    /// Writes down an attempt in one transaction (client counters, the account's lockout, the session or
    /// challenge, the audit entry and the history row) and turns it into the caller's answer.
    #[allow(clippy::too_many_arguments)]
    async fn conclude(
        &self,
        tx: &mut sqlx::AnyConnection,
        c: &Candidate,
        decision: Decision,
        cookie: bool,
        username: &str,
        client: &ClientInfo,
        bucket: &str,
        now: i64,
        challenge: Option<i64>,
    ) -> Result<SignInOutcome, SignInFailure> {
        let engine = self.db().engine;
        let failed = matches!(decision, Decision::Fail { .. });
        throttle::count_client(&mut *tx, engine, bucket, failed, now).await?;
        let ua = client.user_agent.clone();
        let base = Event::new(c.org, None, Some(c.id), "session.sign_in").ip(client.ip_text());
        match decision {
            Decision::Fail { result, counts } => {
                let mut detail = serde_json::json!({"username": username});
                if counts {
                    let lock =
                        throttle::record_failure(&mut *tx, engine, c.org, c.id, &c.settings.lockout, now).await?;
                    detail["failures"] = lock.failures.into();
                    if lock.is_locked(now) {
                        detail["locked_until"] = lock.locked_until.into();
                    }
                }
                if let Some(id) = challenge {
                    let mut q = self.db().sql();
                    q.push("UPDATE sign_in_challenges SET attempts = attempts + 1 WHERE id = ").bind(id);
                    q.execute(&mut *tx).await?;
                }
                let e = base
                    .outcome("failure")
                    .target(format!("username:{username}"))
                    .detail(detail)
                    .attempt(Attempt { result, mfa: None, session_id: None, user_agent: ua });
                events::record(&mut *tx, engine, e, now).await?;
                Err(SignInFailure::Invalid)
            }
            Decision::Challenge => {
                let token = format!("{CHALLENGE_PREFIX}{}", random_token());
                let expires_at = now + CHALLENGE_MS;
                let mut q = self.db().sql();
                q.push("INSERT INTO sign_in_challenges (org_id, user_id, token_hash, created_at, expires_at, attempts, used_at, ip, user_agent) VALUES (")
                    .bind(c.org)
                    .push(", ")
                    .bind(c.id)
                    .push(", ")
                    .bind(hash_token(&token))
                    .push(", ")
                    .bind(now)
                    .push(", ")
                    .bind(expires_at)
                    .push(", 0, NULL, ")
                    .bind(client.ip_text())
                    .push(", ")
                    .bind(ua.clone())
                    .push(")");
                q.execute(&mut *tx).await?;
                let e = Event { action: "session.sign_in_challenge", ..base }
                    .detail(serde_json::json!({"username": username}))
                    .attempt(Attempt { result: "mfa_required", mfa: None, session_id: None, user_agent: ua });
                events::record(&mut *tx, engine, e, now).await?;
                Ok(SignInOutcome::MfaRequired { mfa_token: token, expires_at })
            }
            Decision::Session { mfa, enrollment_required } => {
                throttle::clear(&mut *tx, engine, c.id).await?;
                if let Some(id) = challenge {
                    let mut q = self.db().sql();
                    q.push("UPDATE sign_in_challenges SET used_at = ").bind(now).push(" WHERE id = ").bind(id);
                    q.execute(&mut *tx).await?;
                }
                let verified_at = Some(now);
                let s = sessions::create(
                    &mut *tx,
                    engine,
                    c.org,
                    c.id,
                    cookie,
                    client,
                    verified_at,
                    &c.settings.sessions,
                    now,
                )
                .await?;
                let e = Event { actor: Some(c.id), ..base }
                    .detail(serde_json::json!({"kind": if cookie { "cookie" } else { "api" }}))
                    .attempt(Attempt { result: "success", mfa, session_id: Some(s.id), user_agent: ua });
                events::record(&mut *tx, engine, e, now).await?;
                Ok(SignInOutcome::Signed(SignedIn {
                    token: s.token,
                    session_id: s.id,
                    org: c.org,
                    user: c.id,
                    expires_at: s.expires_at,
                    must_change_password: c.must_change_password,
                    mfa_enrollment_required: enrollment_required,
                    mfa,
                    csrf_token: s.csrf_token,
                    cookie,
                }))
            }
        }
    }

    /// Replaces a hash made with outdated parameters after a successful sign-in (best effort).
    async fn rehash(&self, user: i64, pw: &str) {
        let Ok(hash) = password::hash(pw).await else { return };
        let mut q = self.db().sql();
        q.push("UPDATE users SET password_hash = ").bind(hash).push(" WHERE id = ").bind(user);
        if let Err(e) = q.execute(&self.db().pool).await {
            tracing::warn!(user, error = %e, "could not upgrade a password hash");
        }
    }
}
