//! Self-service for a signed-in user: change the password, list and end sessions ("sign out everywhere"), read
//! their own sign-in history, manage API tokens, enrol and manage the TOTP second factor, and step up (prove a
//! factor again before a sensitive feature). Managing credentials needs an interactive session, not an API token.

use super::events::{self, Event};
use super::settings::SecuritySettings;
use super::{Authenticated, ClientInfo, Credential, mfa, password, sessions, throttle, tokens};
use crate::system::SystemAccess;
use crate::{StoreError, now_ms};
use serde::Serialize;
use sqlx::Row;

#[derive(Debug, Clone, Serialize)]
pub struct SessionInfo {
    pub id: i64,
    /// `api` (bearer) or `cookie` (browser).
    pub kind: String,
    pub created_at: i64,
    pub last_seen_at: i64,
    pub expires_at: i64,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// The session this request came with.
    pub current: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct SignInRecord {
    pub user_id: Option<i64>,
    pub username: Option<String>,
    pub at: i64,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// `success`, `mfa_required`, `bad_password`, `locked_out`, `account_locked`, `account_deactivated`,
    /// `network_not_allowed`, `outside_sign_in_hours`, `bad_second_factor`.
    pub result: String,
    /// The second factor used: `totp` or `recovery_code`.
    pub mfa: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MfaStatus {
    pub totp_enabled: bool,
    /// An enrolment was started and awaits its confirmation code.
    pub totp_pending: bool,
    /// A role of the user requires a second factor.
    pub required: bool,
    pub recovery_codes_left: i64,
}

fn interactive(a: &Authenticated) -> Result<i64, StoreError> {
    match a.credential {
        Credential::Session { id, .. } => Ok(id),
        Credential::ApiToken { .. } => {
            Err(StoreError::Forbidden("credentials are managed from a signed-in session, not with an API token".into()))
        }
    }
}

pub(crate) const HISTORY_COLUMNS: &str = "h.user_id, u.username, h.at, h.ip, h.user_agent, h.result, h.mfa";

pub(crate) fn history_row(r: &sqlx::any::AnyRow) -> Result<SignInRecord, sqlx::Error> {
    Ok(SignInRecord {
        user_id: r.try_get("user_id")?,
        username: r.try_get("username")?,
        at: r.try_get("at")?,
        ip: r.try_get("ip")?,
        user_agent: r.try_get("user_agent")?,
        result: r.try_get("result")?,
        mfa: r.try_get("mfa")?,
    })
}

/// Ends `p`'s session and records the sign-out (the one writer of `session.sign_out`).
pub(crate) async fn end_session_of(
    sys: &SystemAccess<'_>,
    p: &crate::Principal,
    client: &ClientInfo,
) -> Result<(), StoreError> {
    let now = now_ms();
    let mut tx = sys.db().begin_write().await?;
    sessions::revoke_session(&mut tx, sys.db().engine, p.org, p.user, p.session_id, now).await?;
    let e = Event::new(p.org, Some(p.user), Some(p.user), "session.sign_out")
        .ip(client.ip_text())
        .target(format!("session:{}", p.session_id))
        .detail(serde_json::json!({"session": p.session_id}));
    events::record(&mut tx, sys.db().engine, e, now).await?;
    tx.commit().await?;
    Ok(())
}

impl SystemAccess<'_> {
    pub(crate) async fn org_security(&self, org: i64) -> Result<SecuritySettings, StoreError> {
        let mut q = self.db().sql();
        q.push("SELECT settings FROM organizations WHERE id = ").bind(org);
        let row = q.fetch_optional(&self.db().pool).await?.ok_or(StoreError::NotFound)?;
        Ok(SecuritySettings::from_org_settings(&row.try_get::<String, _>("settings")?))
    }

    /// Resolves a bearer token, API token or session cookie value on a request from `client`.
    pub async fn authenticate_from(&self, token: &str, client: &ClientInfo) -> Result<super::AuthOutcome, StoreError> {
        sessions::authenticate(self.store, token, client).await
    }

    /// Ends the current session.
    pub async fn end_session(&self, a: &Authenticated, client: &ClientInfo) -> Result<(), StoreError> {
        if let Credential::ApiToken { .. } = a.credential {
            return Err(StoreError::BadQuery(
                "an API token is not a session: revoke it at /api/v1/me/tokens/{id}".into(),
            ));
        }
        end_session_of(self, &a.principal, client).await
    }

    /// Ends a session presented by its token alone (a browser signing in again over an old cookie). Unknown
    /// tokens are ignored.
    pub async fn end_session_by_token(&self, token: &str) -> Result<(), StoreError> {
        let mut q = self.db().sql();
        q.push("UPDATE sessions SET revoked_at = ")
            .bind(now_ms())
            .push(" WHERE token_hash = ")
            .bind(crate::system::hash_token(token));
        q.push(" AND revoked_at IS NULL");
        q.execute(&self.db().pool).await?;
        Ok(())
    }

    /// The user's live sessions.
    pub async fn my_sessions(&self, a: &Authenticated) -> Result<Vec<SessionInfo>, StoreError> {
        let p = &a.principal;
        let mut q = self.db().sql();
        q.push("SELECT id, kind, created_at, last_seen_at, expires_at, ip, user_agent FROM sessions WHERE org_id = ")
            .bind(p.org)
            .push(" AND user_id = ")
            .bind(p.user)
            .push(" AND revoked_at IS NULL AND expires_at > ")
            .bind(now_ms())
            .push(" ORDER BY id DESC");
        q.fetch_all(&self.db().pool)
            .await?
            .iter()
            .map(|r| {
                let id: i64 = r.try_get("id")?;
                Ok(SessionInfo {
                    id,
                    kind: r.try_get("kind")?,
                    created_at: r.try_get("created_at")?,
                    last_seen_at: r.try_get("last_seen_at")?,
                    expires_at: r.try_get("expires_at")?,
                    ip: r.try_get("ip")?,
                    user_agent: r.try_get("user_agent")?,
                    current: a.session_id() == Some(id),
                })
            })
            .collect()
    }

    /// Ends one of the user's sessions.
    pub async fn end_my_session(&self, a: &Authenticated, id: i64, client: &ClientInfo) -> Result<(), StoreError> {
        interactive(a)?;
        let p = &a.principal;
        let now = now_ms();
        let mut tx = self.db().begin_write().await?;
        if !sessions::revoke_session(&mut tx, self.db().engine, p.org, p.user, id, now).await? {
            return Err(StoreError::NotFound);
        }
        let e = Event::new(p.org, Some(p.user), Some(p.user), "session.revoke")
            .ip(client.ip_text())
            .detail(serde_json::json!({"session": id}));
        events::record(&mut tx, self.db().engine, e, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// "Sign out everywhere": ends every session of the user, this one included; returns how many ended.
    pub async fn sign_out_everywhere(&self, a: &Authenticated, client: &ClientInfo) -> Result<u64, StoreError> {
        interactive(a)?;
        let p = &a.principal;
        let now = now_ms();
        let mut tx = self.db().begin_write().await?;
        let n = sessions::revoke_user_sessions(&mut tx, self.db().engine, p.org, p.user, None, now).await?;
        let e = Event::new(p.org, Some(p.user), Some(p.user), "session.sign_out_everywhere")
            .ip(client.ip_text())
            .detail(serde_json::json!({"sessions": n}));
        events::record(&mut tx, self.db().engine, e, now).await?;
        tx.commit().await?;
        Ok(n)
    }

    /// The user's own sign-in history, newest first.
    pub async fn my_sign_ins(&self, a: &Authenticated, limit: i64) -> Result<Vec<SignInRecord>, StoreError> {
        let p = &a.principal;
        let mut q = self.db().sql();
        q.push("SELECT ")
            .push(HISTORY_COLUMNS)
            .push(" FROM sign_in_history h LEFT JOIN users u ON u.id = h.user_id WHERE h.org_id = ");
        q.bind(p.org)
            .push(" AND h.user_id = ")
            .bind(p.user)
            .push(" ORDER BY h.id DESC LIMIT ")
            .bind(limit.clamp(1, 500));
        Ok(q.fetch_all(&self.db().pool).await?.iter().map(history_row).collect::<Result<_, _>>()?)
    }

    /// Verifies the user's password (counting a failure toward the account's lockout) and returns their username.
    async fn check_own_password(
        &self,
        a: &Authenticated,
        pw: &str,
        client: &ClientInfo,
        action: &'static str,
    ) -> Result<String, StoreError> {
        let p = &a.principal;
        let mut q = self.db().sql();
        q.push("SELECT username, password_hash FROM users WHERE org_id = ").bind(p.org).push(" AND id = ").bind(p.user);
        let row = q.fetch_one(&self.db().pool).await?;
        let username: String = row.try_get("username")?;
        let hash: String = row.try_get("password_hash")?;
        let locked =
            throttle::load(&mut *self.db().pool.acquire().await?, self.db().engine, p.user).await?.is_locked(now_ms());
        if password::verify(pw, Some(hash)).await && !locked {
            return Ok(username);
        }
        self.count_own_failure(a, client, action).await?;
        Err(StoreError::Forbidden("the current password is wrong".into()))
    }

    async fn count_own_failure(
        &self,
        a: &Authenticated,
        client: &ClientInfo,
        action: &'static str,
    ) -> Result<(), StoreError> {
        let p = &a.principal;
        let now = now_ms();
        let settings = self.org_security(p.org).await?;
        let mut tx = self.db().begin_write().await?;
        let lock = throttle::record_failure(&mut tx, self.db().engine, p.org, p.user, &settings.lockout, now).await?;
        let e = Event::new(p.org, Some(p.user), Some(p.user), action)
            .outcome("failure")
            .ip(client.ip_text())
            .detail(serde_json::json!({"failures": lock.failures, "locked": lock.is_locked(now)}));
        events::record(&mut tx, self.db().engine, e, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Changes the user's own password: the current one is verified, the new one must meet the organization's
    /// policy. Every other session of the user ends.
    pub async fn change_password(
        &self,
        a: &Authenticated,
        current: &str,
        new: &str,
        client: &ClientInfo,
    ) -> Result<(), StoreError> {
        let session = interactive(a)?;
        let p = &a.principal;
        let username = self.check_own_password(a, current, client, "password.change").await?;
        let settings = self.org_security(p.org).await?;
        password::check_policy(&settings.password, &username, new)?;
        if new == current {
            return Err(StoreError::invalid("password", "must differ from the current password"));
        }
        let hash = password::hash(new).await?;
        let now = now_ms();
        let mut tx = self.db().begin_write().await?;
        let mut q = self.db().sql();
        q.push("UPDATE users SET password_hash = ")
            .bind(hash)
            .push(", must_change_password = 0, updated_at = ")
            .bind(now);
        q.push(" WHERE org_id = ").bind(p.org).push(" AND id = ").bind(p.user);
        q.execute(&mut *tx).await?;
        let ended =
            sessions::revoke_user_sessions(&mut tx, self.db().engine, p.org, p.user, Some(session), now).await?;
        throttle::clear(&mut tx, self.db().engine, p.user).await?;
        let e = Event::new(p.org, Some(p.user), Some(p.user), "password.change")
            .ip(client.ip_text())
            .detail(serde_json::json!({"other_sessions_ended": ended}));
        events::record(&mut tx, self.db().engine, e, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Creates an API token acting as the user. A user with a second factor must have stepped up recently.
    pub async fn create_api_token(
        &self,
        a: &Authenticated,
        name: &str,
        expires_at: Option<i64>,
        client: &ClientInfo,
    ) -> Result<tokens::NewApiToken, StoreError> {
        interactive(a)?;
        if a.restriction.is_some() {
            return Err(StoreError::Forbidden("fix your account first".into()));
        }
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(StoreError::invalid("name", "1 to 100 characters"));
        }
        let now = now_ms();
        if expires_at.is_some_and(|e| e <= now) {
            return Err(StoreError::invalid("expires_at", "must be in the future"));
        }
        if a.mfa_enabled && !a.step_up_fresh() {
            return Err(StoreError::Forbidden(
                "step-up required: confirm a code at POST /api/v1/session/step-up first".into(),
            ));
        }
        let p = &a.principal;
        let mut tx = self.db().begin_write().await?;
        let t = tokens::create(&mut tx, self.db().engine, p.org, p.user, name, expires_at, now).await?;
        let e = Event::new(p.org, Some(p.user), Some(p.user), "api_token.create")
            .ip(client.ip_text())
            .detail(serde_json::json!({"token": t.info.id, "name": name, "expires_at": expires_at}));
        events::record(&mut tx, self.db().engine, e, now).await?;
        tx.commit().await?;
        Ok(t)
    }

    pub async fn my_api_tokens(&self, a: &Authenticated) -> Result<Vec<tokens::ApiTokenInfo>, StoreError> {
        let p = &a.principal;
        tokens::list(&mut *self.db().pool.acquire().await?, self.db().engine, p.org, p.user).await
    }

    pub async fn revoke_api_token(&self, a: &Authenticated, id: i64, client: &ClientInfo) -> Result<(), StoreError> {
        let p = &a.principal;
        // A token may revoke itself (an integration retiring its credential), but no other credential.
        if let Credential::ApiToken { id: mine } = a.credential
            && mine != id
        {
            interactive(a)?;
        }
        let now = now_ms();
        let mut tx = self.db().begin_write().await?;
        if !tokens::revoke(&mut tx, self.db().engine, p.org, p.user, id, now).await? {
            return Err(StoreError::NotFound);
        }
        let e = Event::new(p.org, Some(p.user), Some(p.user), "api_token.revoke")
            .ip(client.ip_text())
            .detail(serde_json::json!({"token": id}));
        events::record(&mut tx, self.db().engine, e, now).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn mfa_status(&self, a: &Authenticated) -> Result<MfaStatus, StoreError> {
        let p = &a.principal;
        let mut conn = self.db().pool.acquire().await?;
        let mut q = self.db().sql();
        q.push("SELECT secret, pending_secret FROM mfa_totp WHERE user_id = ").bind(p.user);
        let row = q.fetch_optional(&mut *conn).await?;
        let (enabled, pending) = match &row {
            Some(r) => (
                r.try_get::<Option<String>, _>("secret")?.is_some(),
                r.try_get::<Option<String>, _>("pending_secret")?.is_some(),
            ),
            None => (false, false),
        };
        let left = mfa::recovery_codes_left(&mut conn, self.db().engine, p.user).await?;
        drop(conn);
        let required = sessions::requires_mfa(self.store, p.org, p.policy_version, &p.access.roles).await?;
        Ok(MfaStatus { totp_enabled: enabled, totp_pending: pending, required, recovery_codes_left: left })
    }

    /// Starts (or restarts) TOTP enrolment: a fresh secret, pending until confirmed with a code. An enabled
    /// factor stays in force until the new one is confirmed; replacing it needs a recent step-up.
    pub async fn totp_begin(&self, a: &Authenticated) -> Result<mfa::TotpEnrollment, StoreError> {
        interactive(a)?;
        if a.mfa_enabled && !a.step_up_fresh() {
            return Err(StoreError::Forbidden(
                "step-up required: confirm a code at POST /api/v1/session/step-up first".into(),
            ));
        }
        let p = &a.principal;
        let mut q = self.db().sql();
        q.push("SELECT u.username, o.slug FROM users u JOIN organizations o ON o.id = u.org_id WHERE u.id = ")
            .bind(p.user);
        let row = q.fetch_one(&self.db().pool).await?;
        let account = format!("{}@{}", row.try_get::<String, _>("username")?, row.try_get::<String, _>("slug")?);
        let (secret, enrollment) = mfa::new_enrollment(&account)?;
        let now = now_ms();
        let mut tx = self.db().begin_write().await?;
        let mut q = self.db().sql();
        q.push("INSERT INTO mfa_totp (user_id, org_id, secret, pending_secret, last_step, created_at) VALUES (")
            .bind(p.user)
            .push(", ")
            .bind(p.org)
            .push(", NULL, ")
            .bind(secret)
            .push(", 0, ")
            .bind(now)
            .push(") ON CONFLICT (user_id) DO UPDATE SET pending_secret = excluded.pending_secret");
        q.execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(enrollment)
    }

    /// Confirms the pending enrolment with a code from the app; returns ten recovery codes (shown once). The
    /// session counts as having proved the factor.
    pub async fn totp_confirm(
        &self,
        a: &Authenticated,
        code: &str,
        client: &ClientInfo,
    ) -> Result<Vec<String>, StoreError> {
        let session = interactive(a)?;
        let p = &a.principal;
        let now = now_ms();
        let mut q = self.db().sql();
        q.push("SELECT pending_secret, last_step FROM mfa_totp WHERE user_id = ").bind(p.user);
        let row = q.fetch_optional(&self.db().pool).await?;
        let pending = match &row {
            Some(r) => r.try_get::<Option<String>, _>("pending_secret")?,
            None => None,
        };
        let Some(secret) = pending else { return Err(StoreError::invalid("code", "start an enrolment first")) };
        let Some(step) = mfa::matching_step(&secret, code, now) else {
            self.count_own_failure(a, client, "mfa.enroll").await?;
            return Err(StoreError::invalid("code", "wrong code: check the app's clock and try the current code"));
        };
        let codes = mfa::new_recovery_codes();
        let mut tx = self.db().begin_write().await?;
        let mut q = self.db().sql();
        q.push("UPDATE mfa_totp SET secret = pending_secret, pending_secret = NULL, last_step = ").bind(step);
        q.push(" WHERE user_id = ").bind(p.user).push(" AND pending_secret = ").bind(secret.as_str());
        if q.execute(&mut *tx).await? != 1 {
            return Err(StoreError::Conflict("the enrolment changed meanwhile: start again".into()));
        }
        mfa::store_recovery_codes(&mut tx, self.db().engine, p.org, p.user, &codes).await?;
        let mut q = self.db().sql();
        q.push("UPDATE sessions SET verified_at = ").bind(now).push(" WHERE id = ").bind(session);
        q.execute(&mut *tx).await?;
        let e = Event::new(p.org, Some(p.user), Some(p.user), "mfa.enroll")
            .ip(client.ip_text())
            .detail(serde_json::json!({"method": "totp"}));
        events::record(&mut tx, self.db().engine, e, now).await?;
        tx.commit().await?;
        Ok(codes)
    }

    /// Removes the user's second factor, after a code proves it; refused while a role requires one.
    pub async fn totp_disable(
        &self,
        a: &Authenticated,
        otp: Option<&str>,
        recovery_code: Option<&str>,
        client: &ClientInfo,
    ) -> Result<(), StoreError> {
        interactive(a)?;
        let p = &a.principal;
        if sessions::requires_mfa(self.store, p.org, p.policy_version, &p.access.roles).await? {
            return Err(StoreError::Forbidden("a role of yours requires a second factor".into()));
        }
        self.prove_factor(a, otp, recovery_code, client, "mfa.disable").await?;
        let now = now_ms();
        let mut tx = self.db().begin_write().await?;
        for table in ["mfa_totp", "mfa_recovery_codes"] {
            let mut q = self.db().sql();
            q.push("DELETE FROM ").push(table).push(" WHERE user_id = ").bind(p.user);
            q.execute(&mut *tx).await?;
        }
        let e = Event::new(p.org, Some(p.user), Some(p.user), "mfa.disable").ip(client.ip_text());
        events::record(&mut tx, self.db().engine, e, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Replaces the recovery codes (the old ones stop working), after a TOTP code proves the factor.
    pub async fn regenerate_recovery_codes(
        &self,
        a: &Authenticated,
        otp: &str,
        client: &ClientInfo,
    ) -> Result<Vec<String>, StoreError> {
        interactive(a)?;
        self.prove_factor(a, Some(otp), None, client, "mfa.recovery_codes").await?;
        let p = &a.principal;
        let codes = mfa::new_recovery_codes();
        let now = now_ms();
        let mut tx = self.db().begin_write().await?;
        mfa::store_recovery_codes(&mut tx, self.db().engine, p.org, p.user, &codes).await?;
        let e = Event::new(p.org, Some(p.user), Some(p.user), "mfa.recovery_codes").ip(client.ip_text());
        events::record(&mut tx, self.db().engine, e, now).await?;
        tx.commit().await?;
        Ok(codes)
    }

    /// Verifies (and consumes) a TOTP or recovery code of the user; a failure counts toward the lockout.
    async fn prove_factor(
        &self,
        a: &Authenticated,
        otp: Option<&str>,
        recovery_code: Option<&str>,
        client: &ClientInfo,
        action: &'static str,
    ) -> Result<&'static str, StoreError> {
        let p = &a.principal;
        let now = now_ms();
        let mut tx = self.db().begin_write().await?;
        let used = match (otp, recovery_code) {
            (Some(c), _) => mfa::verify_totp(&mut tx, self.db().engine, p.user, c, now).await?.then_some("totp"),
            (None, Some(c)) => {
                mfa::use_recovery_code(&mut tx, self.db().engine, p.user, c, now).await?.then_some("recovery_code")
            }
            (None, None) => None,
        };
        tx.commit().await?;
        match used {
            Some(m) => Ok(m),
            None => {
                self.count_own_failure(a, client, action).await?;
                Err(StoreError::Forbidden("wrong or already used code".into()))
            }
        }
    }

    /// Step-up: the session proves a factor again (a TOTP or recovery code; the password for users without a
    /// second factor) and counts as freshly verified for the organization's step-up window. Returns the time.
    pub async fn step_up(
        &self,
        a: &Authenticated,
        otp: Option<&str>,
        recovery_code: Option<&str>,
        pw: Option<&str>,
        client: &ClientInfo,
    ) -> Result<i64, StoreError> {
        let session = interactive(a)?;
        let p = &a.principal;
        let method = if a.mfa_enabled {
            self.prove_factor(a, otp, recovery_code, client, "session.step_up").await?
        } else {
            let Some(pw) = pw else {
                return Err(StoreError::invalid("password", "required (you have no second factor)"));
            };
            self.check_own_password(a, pw, client, "session.step_up").await?;
            "password"
        };
        let now = now_ms();
        let mut tx = self.db().begin_write().await?;
        let mut q = self.db().sql();
        q.push("UPDATE sessions SET verified_at = ").bind(now).push(" WHERE id = ").bind(session);
        q.execute(&mut *tx).await?;
        let e = Event::new(p.org, Some(p.user), Some(p.user), "session.step_up")
            .ip(client.ip_text())
            .detail(serde_json::json!({"method": method}));
        events::record(&mut tx, self.db().engine, e, now).await?;
        tx.commit().await?;
        Ok(now)
    }
}
