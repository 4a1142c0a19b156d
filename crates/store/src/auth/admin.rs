//! Administration of account security, permission-checked like the rest of the administration API: the
//! organization's security settings (`users: view` to read; `users: edit` and modify-all data to change), and per
//! user (in the caller's `users` scope, with `users: edit`, and only for users whose every role the caller could
//! grant): reset the password, unlock, reset the second factor, end all sessions; the sign-in history of users in
//! scope.

use super::events::{self, Event};
use super::settings::SecuritySettings;
use super::{ClientInfo, account, password, sessions, throttle, tokens};
use crate::records::Scoped;
use crate::{StoreError, now_ms};
use crm_domain::{Action, Module, UserId, ValueError};
use serde::Serialize;
use sqlx::Row;

#[derive(Debug, Clone, Serialize)]
pub struct UserSecurity {
    pub user_id: UserId,
    pub status: String,
    pub must_change_password: bool,
    pub failed_attempts: i64,
    /// Soft-locked until (ms since the epoch), when in the future.
    pub locked_until: Option<i64>,
    pub mfa_enabled: bool,
    pub recovery_codes_left: i64,
    pub live_sessions: i64,
    pub live_api_tokens: i64,
}

impl Scoped<'_> {
    /// The target must be in the caller's `users` scope for `edit`, and the caller must cover each of their roles
    /// (taking over a more powerful account is escalation).
    async fn require_user_admin(&self, user: UserId) -> Result<(), StoreError> {
        self.require_admin(Module::Users, Action::Edit)?;
        if !self.user_in_scope(user, Action::View) {
            return Err(StoreError::NotFound);
        }
        if !self.user_in_scope(user, Action::Edit) {
            return Err(StoreError::Forbidden("this user is outside your scope".into()));
        }
        let config = self.config().await?;
        let roles = self.access().directory().user(user).map(|u| u.roles.clone()).unwrap_or_default();
        for r in roles {
            if let Some(role) = config.role(r) {
                self.access().covers_role(role).map_err(StoreError::Forbidden)?;
            }
        }
        Ok(())
    }

    /// The organization's security settings.
    pub async fn admin_security_settings(&self) -> Result<SecuritySettings, StoreError> {
        self.require_admin(Module::Users, Action::View)?;
        self.store.unscoped_system_access().org_security(self.principal.org).await
    }

    /// Replaces the organization's security settings after validating them. A change that would refuse the
    /// caller's own current request (their address or the time now) is refused, so nobody locks themselves out.
    pub async fn admin_set_security_settings(
        &self,
        mut new: SecuritySettings,
        client: &ClientInfo,
    ) -> Result<SecuritySettings, StoreError> {
        self.require_admin(Module::Users, Action::Edit)?;
        if !self.access().modifies_all() {
            return Err(StoreError::Forbidden(
                "only administrators with modify-all data change the security settings".into(),
            ));
        }
        let config = self.config().await?;
        let known: Vec<i64> = config.roles.iter().map(|r| r.id).collect();
        new.validate(&known)
            .map_err(|errors| StoreError::Invalid(errors.into_iter().map(|(f, m)| ValueError::new(&f, m)).collect()))?;
        if let Err(d) = new.admits(&self.access().roles, client.ip, now_ms()) {
            return Err(StoreError::invalid(
                if d == super::Denial::Network { "network" } else { "sign_in_hours" },
                format!("this change would lock you out ({}): your own request would be refused", d.as_str()),
            ));
        }
        let db = self.db();
        let org = self.principal.org;
        let now = now_ms();
        let mut tx = db.begin_write().await?;
        let mut q = db.sql();
        q.push("SELECT settings FROM organizations WHERE id = ").bind(org);
        let doc: String = q.fetch_one(&mut *tx).await?.try_get("settings")?;
        let mut value: serde_json::Value = serde_json::from_str(&doc).unwrap_or_else(|_| serde_json::json!({}));
        if !value.is_object() {
            value = serde_json::json!({});
        }
        let before = value.get("security").cloned().unwrap_or(serde_json::Value::Null);
        let after = serde_json::to_value(&new).map_err(|e| StoreError::Config(e.to_string()))?;
        value["security"] = after.clone();
        let mut up = db.sql();
        up.push("UPDATE organizations SET settings = ").bind(value.to_string()).push(" WHERE id = ").bind(org);
        up.execute(&mut *tx).await?;
        let e = Event::new(org, Some(self.principal.user), None, "security.settings")
            .ip(client.ip_text())
            .detail(serde_json::json!({"before": before, "after": after}));
        events::record(&mut tx, db.engine, e, now).await?;
        tx.commit().await?;
        Ok(new)
    }

    /// Sets a new password for a user (or generates a one-time password when `new` is `None`), to be changed at
    /// their next sign-in. Their sessions and API tokens end and their lockout is cleared. Returns the password
    /// (the generated one is shown this once).
    pub async fn admin_reset_password(
        &self,
        user: UserId,
        new: Option<String>,
        client: &ClientInfo,
    ) -> Result<String, StoreError> {
        self.require_user_admin(user).await?;
        if user == self.principal.user {
            return Err(StoreError::invalid("user", "change your own password at /api/v1/me/password"));
        }
        let sys = self.store.unscoped_system_access();
        let settings = sys.org_security(self.principal.org).await?;
        let db = self.db();
        let mut q = db.sql();
        q.push("SELECT username FROM users WHERE org_id = ").bind(self.principal.org).push(" AND id = ").bind(user);
        let username: String = q.fetch_optional(&db.pool).await?.ok_or(StoreError::NotFound)?.try_get("username")?;
        let pw = match new {
            Some(pw) => {
                password::check_policy(&settings.password, &username, &pw)?;
                pw
            }
            None => {
                // 20 characters from a 32-letter alphabet: 100 bits.
                let bytes: [u8; 20] = rand::random();
                bytes.iter().map(|b| b"23456789abcdefghjkmnpqrstuvwxyzA"[(b & 31) as usize] as char).collect()
            }
        };
        let hash = password::hash(&pw).await?;
        let now = now_ms();
        let org = self.principal.org;
        let mut tx = db.begin_write().await?;
        let mut q = db.sql();
        q.push("UPDATE users SET password_hash = ")
            .bind(hash)
            .push(", must_change_password = 1, updated_at = ")
            .bind(now);
        q.push(" WHERE org_id = ").bind(org).push(" AND id = ").bind(user);
        q.execute(&mut *tx).await?;
        let ended = sessions::revoke_user_sessions(&mut tx, db.engine, org, user, None, now).await?;
        let tokens_ended = tokens::revoke_all(&mut tx, db.engine, org, user, now).await?;
        throttle::clear(&mut tx, db.engine, user).await?;
        let e = Event::new(org, Some(self.principal.user), Some(user), "password.reset")
            .ip(client.ip_text())
            .detail(serde_json::json!({"sessions_ended": ended, "api_tokens_revoked": tokens_ended}));
        events::record(&mut tx, db.engine, e, now).await?;
        tx.commit().await?;
        Ok(pw)
    }

    /// Lifts a soft lockout and an administrator's lock (status `locked` becomes `active`).
    pub async fn admin_unlock(&self, user: UserId, client: &ClientInfo) -> Result<(), StoreError> {
        self.require_user_admin(user).await?;
        let db = self.db();
        let org = self.principal.org;
        let mut q = db.sql();
        q.push("SELECT status FROM users WHERE org_id = ").bind(org).push(" AND id = ").bind(user);
        let status: String = q.fetch_optional(&db.pool).await?.ok_or(StoreError::NotFound)?.try_get("status")?;
        if status == "locked" {
            if user == self.principal.user {
                return Err(StoreError::invalid("status", "you cannot change your own status"));
            }
            self.store
                .unscoped_system_access()
                .set_user_status(org, Some(self.principal.user), user, crm_policy::UserStatus::Active)
                .await?;
        }
        let now = now_ms();
        let mut tx = db.begin_write().await?;
        let cleared = throttle::clear(&mut tx, db.engine, user).await?;
        let e = Event::new(org, Some(self.principal.user), Some(user), "account.unlock")
            .ip(client.ip_text())
            .detail(serde_json::json!({"soft_lockout_cleared": cleared, "was": status}));
        events::record(&mut tx, db.engine, e, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes a user's second factor (a lost phone); they enrol again at their next sign-in if a role requires
    /// it. Their sessions end.
    pub async fn admin_reset_mfa(&self, user: UserId, client: &ClientInfo) -> Result<(), StoreError> {
        self.require_user_admin(user).await?;
        if user == self.principal.user {
            return Err(StoreError::invalid("user", "manage your own second factor at /api/v1/me/mfa"));
        }
        let db = self.db();
        let org = self.principal.org;
        let now = now_ms();
        let mut tx = db.begin_write().await?;
        for table in ["mfa_totp", "mfa_recovery_codes"] {
            let mut q = db.sql();
            q.push("DELETE FROM ").push(table).push(" WHERE org_id = ").bind(org).push(" AND user_id = ").bind(user);
            q.execute(&mut *tx).await?;
        }
        let ended = sessions::revoke_user_sessions(&mut tx, db.engine, org, user, None, now).await?;
        let e = Event::new(org, Some(self.principal.user), Some(user), "mfa.reset")
            .ip(client.ip_text())
            .detail(serde_json::json!({"sessions_ended": ended}));
        events::record(&mut tx, db.engine, e, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Ends every session of a user (and, with `api_tokens`, revokes their API tokens).
    pub async fn admin_end_sessions(
        &self,
        user: UserId,
        api_tokens: bool,
        client: &ClientInfo,
    ) -> Result<u64, StoreError> {
        self.require_user_admin(user).await?;
        let db = self.db();
        let org = self.principal.org;
        let now = now_ms();
        let mut tx = db.begin_write().await?;
        let ended = sessions::revoke_user_sessions(&mut tx, db.engine, org, user, None, now).await?;
        let revoked = if api_tokens { tokens::revoke_all(&mut tx, db.engine, org, user, now).await? } else { 0 };
        let e = Event::new(org, Some(self.principal.user), Some(user), "session.revoke_all")
            .ip(client.ip_text())
            .detail(serde_json::json!({"sessions_ended": ended, "api_tokens_revoked": revoked}));
        events::record(&mut tx, db.engine, e, now).await?;
        tx.commit().await?;
        Ok(ended)
    }

    /// A user's account-security state.
    pub async fn admin_user_security(&self, user: UserId) -> Result<UserSecurity, StoreError> {
        self.require_admin(Module::Users, Action::View)?;
        if !self.user_in_scope(user, Action::View) {
            return Err(StoreError::NotFound);
        }
        let db = self.db();
        let now = now_ms();
        let mut conn = db.pool.acquire().await?;
        let mut q = db.sql();
        q.push("SELECT status, must_change_password FROM users WHERE org_id = ")
            .bind(self.principal.org)
            .push(" AND id = ")
            .bind(user);
        let row = q.fetch_optional(&mut *conn).await?.ok_or(StoreError::NotFound)?;
        let lock = throttle::load(&mut conn, db.engine, user).await?;
        let count = async |conn: &mut sqlx::AnyConnection, table: &str, live: &str| -> Result<i64, StoreError> {
            let mut q = db.sql();
            q.push("SELECT COUNT(*) AS n FROM ").push(table).push(" WHERE user_id = ").bind(user).push(live);
            Ok(q.fetch_one(&mut *conn).await?.try_get("n")?)
        };
        let live = format!(" AND revoked_at IS NULL AND expires_at > {now}");
        let sessions_n = count(&mut conn, "sessions", &live).await?;
        let tokens_live = format!(" AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > {now})");
        let tokens_n = count(&mut conn, "api_tokens", &tokens_live).await?;
        let mfa_enabled = super::mfa::enabled(&mut conn, db.engine, user).await?;
        let codes = super::mfa::recovery_codes_left(&mut conn, db.engine, user).await?;
        Ok(UserSecurity {
            user_id: user,
            status: row.try_get("status")?,
            must_change_password: row.try_get::<i64, _>("must_change_password")? != 0,
            failed_attempts: lock.failures,
            locked_until: lock.is_locked(now).then_some(lock.locked_until),
            mfa_enabled,
            recovery_codes_left: codes,
            live_sessions: sessions_n,
            live_api_tokens: tokens_n,
        })
    }

    /// Sign-in history of the users in the caller's scope (one user's, or everyone's), newest first.
    pub async fn admin_sign_ins(
        &self,
        user: Option<UserId>,
        limit: i64,
    ) -> Result<Vec<account::SignInRecord>, StoreError> {
        self.require_admin(Module::Users, Action::View)?;
        if let Some(u) = user
            && !self.user_in_scope(u, Action::View)
        {
            return Err(StoreError::NotFound);
        }
        let db = self.db();
        let limit = limit.clamp(1, 1000);
        let mut out = Vec::new();
        let mut before = i64::MAX;
        // Filter by scope in memory, paging through the history until `limit` rows in scope are found.
        loop {
            let mut q = db.sql();
            q.push("SELECT h.id, ")
                .push(account::HISTORY_COLUMNS)
                .push(" FROM sign_in_history h LEFT JOIN users u ON u.id = h.user_id WHERE h.org_id = ");
            q.bind(self.principal.org).push(" AND h.id < ").bind(before);
            if let Some(u) = user {
                q.push(" AND h.user_id = ").bind(u);
            }
            q.push(" ORDER BY h.id DESC LIMIT 500");
            let rows = q.fetch_all(&db.pool).await?;
            let Some(last) = rows.last() else { break };
            before = last.try_get("id")?;
            for r in &rows {
                let rec = account::history_row(r)?;
                if rec.user_id.is_some_and(|u| self.user_in_scope(u, Action::View)) {
                    out.push(rec);
                    if out.len() as i64 >= limit {
                        return Ok(out);
                    }
                }
            }
            if rows.len() < 500 {
                break;
            }
        }
        Ok(out)
    }
}

impl crate::system::SystemAccess<'_> {
    /// Break-glass recovery for an operator with access to the database (`crm account recover`), when no
    /// administrator can help (the only one lost their phone or is locked out): a one-time password to change at
    /// the next sign-in, the lockout and an administrator's lock lifted, the second factor removed (re-enrolled at
    /// sign-in when a role requires it), every session and API token ended. A deactivated account stays
    /// deactivated. Audited without an actor.
    pub async fn recover_account(&self, org: crm_domain::OrgId, user: UserId) -> Result<String, StoreError> {
        let db = self.db();
        let mut q = db.sql();
        q.push("SELECT status FROM users WHERE org_id = ").bind(org).push(" AND id = ").bind(user);
        let status: String = q.fetch_optional(&db.pool).await?.ok_or(StoreError::NotFound)?.try_get("status")?;
        if status == "deactivated" {
            return Err(StoreError::invalid("user", "the account is deactivated: reactivate it first"));
        }
        let bytes: [u8; 20] = rand::random();
        let pw: String = bytes.iter().map(|b| b"23456789abcdefghjkmnpqrstuvwxyzA"[(b & 31) as usize] as char).collect();
        let hash = password::hash(&pw).await?;
        let now = now_ms();
        if status == "locked" {
            self.set_user_status(org, None, user, crm_policy::UserStatus::Active).await?;
        }
        let mut tx = db.begin_write().await?;
        let mut q = db.sql();
        q.push("UPDATE users SET password_hash = ")
            .bind(hash)
            .push(", must_change_password = 1, updated_at = ")
            .bind(now);
        q.push(" WHERE org_id = ").bind(org).push(" AND id = ").bind(user);
        q.execute(&mut *tx).await?;
        for table in ["mfa_totp", "mfa_recovery_codes"] {
            let mut q = db.sql();
            q.push("DELETE FROM ").push(table).push(" WHERE org_id = ").bind(org).push(" AND user_id = ").bind(user);
            q.execute(&mut *tx).await?;
        }
        let ended = sessions::revoke_user_sessions(&mut tx, db.engine, org, user, None, now).await?;
        let revoked = tokens::revoke_all(&mut tx, db.engine, org, user, now).await?;
        throttle::clear(&mut tx, db.engine, user).await?;
        let e = Event::new(org, None, Some(user), "account.recover").detail(
            serde_json::json!({"sessions_ended": ended, "api_tokens_revoked": revoked, "was": status, "via": "cli"}),
        );
        events::record(&mut tx, db.engine, e, now).await?;
        tx.commit().await?;
        Ok(pw)
    }
}
