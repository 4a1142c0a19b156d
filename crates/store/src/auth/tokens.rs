//! API tokens for integrations: named, optionally expiring, listed, revocable, shown once and stored only as a
//! SHA-256 hash. A token acts as its user, with the user's current rights (compiled at every request like a
//! session's), so it never exceeds them and follows every change of them; it dies when the user is deactivated or
//! their password is reset by an administrator. A token cannot manage credentials (passwords, second factors,
//! other tokens).

use super::sessions::Row0;
use super::settings::SecuritySettings;
use super::{Credential, random_token};
use crate::db::Sql;
use crate::system::hash_token;
use crate::{Engine, Store, StoreError};
use serde::Serialize;
use sqlx::{AnyConnection, Row};

/// Every API token starts with this, so it is recognisable in logs and secret scanners.
pub const API_TOKEN_PREFIX: &str = "crm_pat_";
/// Live tokens a user may hold.
pub const MAX_TOKENS_PER_USER: i64 = 50;

#[derive(Debug, Clone, Serialize)]
pub struct ApiTokenInfo {
    pub id: i64,
    pub name: String,
    /// The token's first characters, to recognise it.
    pub prefix: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NewApiToken {
    #[serde(flatten)]
    pub info: ApiTokenInfo,
    /// Shown once: send as `Authorization: Bearer <token>`.
    pub token: String,
}

pub(crate) async fn create(
    conn: &mut AnyConnection,
    engine: Engine,
    org: i64,
    user: i64,
    name: &str,
    expires_at: Option<i64>,
    now: i64,
) -> Result<NewApiToken, StoreError> {
    let mut c = Sql::new(engine);
    c.push("SELECT COUNT(*) AS n FROM api_tokens WHERE user_id = ")
        .bind(user)
        .push(" AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ")
        .bind(now)
        .push(")");
    if c.fetch_one(&mut *conn).await?.try_get::<i64, _>("n")? >= MAX_TOKENS_PER_USER {
        return Err(StoreError::Conflict(format!(
            "at most {MAX_TOKENS_PER_USER} live API tokens per user: revoke one first"
        )));
    }
    let token = format!("{API_TOKEN_PREFIX}{}", random_token());
    let prefix: String = token.chars().take(API_TOKEN_PREFIX.len() + 6).collect();
    let mut q = Sql::new(engine);
    q.push("INSERT INTO api_tokens (org_id, user_id, name, token_hash, prefix, created_at, expires_at, last_used_at, revoked_at) VALUES (")
        .bind(org)
        .push(", ")
        .bind(user)
        .push(", ")
        .bind(name)
        .push(", ")
        .bind(hash_token(&token))
        .push(", ")
        .bind(prefix.as_str())
        .push(", ")
        .bind(now)
        .push(", ")
        .bind(expires_at)
        .push(", NULL, NULL) RETURNING id");
    let id: i64 = q.fetch_one(&mut *conn).await?.try_get("id")?;
    Ok(NewApiToken {
        info: ApiTokenInfo {
            id,
            name: name.to_string(),
            prefix,
            created_at: now,
            expires_at,
            last_used_at: None,
            revoked_at: None,
        },
        token,
    })
}

pub(crate) async fn list(
    conn: &mut AnyConnection,
    engine: Engine,
    org: i64,
    user: i64,
) -> Result<Vec<ApiTokenInfo>, StoreError> {
    let mut q = Sql::new(engine);
    q.push("SELECT id, name, prefix, created_at, expires_at, last_used_at, revoked_at FROM api_tokens WHERE org_id = ")
        .bind(org)
        .push(" AND user_id = ")
        .bind(user)
        .push(" ORDER BY id");
    q.fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|r| {
            Ok(ApiTokenInfo {
                id: r.try_get("id")?,
                name: r.try_get("name")?,
                prefix: r.try_get("prefix")?,
                created_at: r.try_get("created_at")?,
                expires_at: r.try_get("expires_at")?,
                last_used_at: r.try_get("last_used_at")?,
                revoked_at: r.try_get("revoked_at")?,
            })
        })
        .collect()
}

pub(crate) async fn revoke(
    conn: &mut AnyConnection,
    engine: Engine,
    org: i64,
    user: i64,
    id: i64,
    now: i64,
) -> Result<bool, StoreError> {
    let mut q = Sql::new(engine);
    q.push("UPDATE api_tokens SET revoked_at = ").bind(now).push(" WHERE org_id = ").bind(org);
    q.push(" AND user_id = ").bind(user).push(" AND id = ").bind(id).push(" AND revoked_at IS NULL");
    Ok(q.execute(&mut *conn).await? == 1)
}

pub(crate) async fn revoke_all(
    conn: &mut AnyConnection,
    engine: Engine,
    org: i64,
    user: i64,
    now: i64,
) -> Result<u64, StoreError> {
    let mut q = Sql::new(engine);
    q.push("UPDATE api_tokens SET revoked_at = ").bind(now).push(" WHERE org_id = ").bind(org);
    q.push(" AND user_id = ").bind(user).push(" AND revoked_at IS NULL");
    q.execute(&mut *conn).await
}

pub(crate) async fn lookup(store: &Store, token: &str, now: i64) -> Result<Option<Row0>, StoreError> {
    let db = &store.db;
    let mut q = db.sql();
    q.push(
        "SELECT t.id, t.org_id, t.user_id, t.expires_at, t.last_used_at, t.revoked_at, \
         u.status, u.must_change_password, o.policy_version, o.settings, \
         (SELECT COUNT(*) FROM mfa_totp m WHERE m.user_id = t.user_id AND m.secret IS NOT NULL) AS mfa_enabled \
         FROM api_tokens t JOIN users u ON u.id = t.user_id JOIN organizations o ON o.id = t.org_id WHERE t.token_hash = ",
    )
    .bind(hash_token(token));
    let Some(r) = q.fetch_optional(&db.pool).await? else { return Ok(None) };
    let revoked: Option<i64> = r.try_get("revoked_at")?;
    let expires: Option<i64> = r.try_get("expires_at")?;
    if revoked.is_some() || expires.is_some_and(|e| e <= now) {
        return Ok(None);
    }
    let id: i64 = r.try_get("id")?;
    let last_used: Option<i64> = r.try_get("last_used_at")?;
    if last_used.is_none_or(|t| now - t > 60_000) {
        let mut up = db.sql();
        up.push("UPDATE api_tokens SET last_used_at = ").bind(now).push(" WHERE id = ").bind(id);
        up.execute(&db.pool).await?;
    }
    Ok(Some(Row0 {
        org: r.try_get("org_id")?,
        user: r.try_get("user_id")?,
        status: r.try_get("status")?,
        must_change_password: r.try_get::<i64, _>("must_change_password")? != 0,
        version: r.try_get("policy_version")?,
        settings: SecuritySettings::from_org_settings(&r.try_get::<String, _>("settings")?),
        mfa_enabled: r.try_get::<i64, _>("mfa_enabled")? > 0,
        credential: Credential::ApiToken { id },
        csrf_token: None,
        verified_at: None,
    }))
}
