//! Sessions: a random 256-bit token, shown once to the client and stored only as its SHA-256 hash; an absolute
//! lifetime fixed at sign-in and an idle timeout, both from the organization's policy; a CSRF token per session
//! for cookie clients; revocation one at a time, everywhere, or on account events (deactivation, lock, password
//! reset, roles reduced). Every request re-checks the user's status and the network and time policies.

use super::settings::{SecuritySettings, SessionPolicy};
use super::{AuthOutcome, Authenticated, ClientInfo, Credential, Restriction, random_token, tokens};
use crate::db::{Columns, Sql};
use crate::system::hash_token;
use crate::{Engine, Principal, Store, StoreError, now_ms};
use sqlx::{AnyConnection, Row};

pub(crate) struct NewSession {
    pub id: i64,
    pub token: String,
    pub csrf_token: String,
    pub expires_at: i64,
}

/// Creates a session inside the caller's transaction. A fresh token every time: a client never chooses its
/// session id (no fixation).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn create(
    conn: &mut AnyConnection,
    engine: Engine,
    org: i64,
    user: i64,
    cookie: bool,
    client: &ClientInfo,
    verified_at: Option<i64>,
    policy: &SessionPolicy,
    now: i64,
) -> Result<NewSession, StoreError> {
    let token = random_token();
    let csrf_token = random_token();
    let expires_at = now + i64::from(policy.absolute_hours) * 3600 * 1000;
    let mut q = Sql::new(engine);
    q.push("INSERT INTO sessions (org_id, user_id, token_hash, kind, created_at, last_seen_at, expires_at, ip, user_agent, csrf_token, verified_at) VALUES (")
        .bind(org)
        .push(", ")
        .bind(user)
        .push(", ")
        .bind(hash_token(&token))
        .push(", ")
        .bind(if cookie { "cookie" } else { "api" })
        .push(", ")
        .bind(now)
        .push(", ")
        .bind(now)
        .push(", ")
        .bind(expires_at)
        .push(", ")
        .bind(client.ip_text())
        .push(", ")
        .bind(client.user_agent.clone())
        .push(", ")
        .bind(csrf_token.as_str())
        .push(", ")
        .bind(verified_at)
        .push(") RETURNING id");
    let id: i64 = q.fetch_one(&mut *conn).await?.try_get("id")?;
    Ok(NewSession { id, token, csrf_token, expires_at })
}

/// Revokes the user's live sessions (all, or all but `except`) and pending sign-in challenges; returns how many
/// sessions ended.
pub(crate) async fn revoke_user_sessions(
    conn: &mut AnyConnection,
    engine: Engine,
    org: i64,
    user: i64,
    except: Option<i64>,
    now: i64,
) -> Result<u64, StoreError> {
    let mut q = Sql::new(engine);
    q.push("UPDATE sessions SET revoked_at = ").bind(now).push(" WHERE org_id = ").bind(org);
    q.push(" AND user_id = ").bind(user).push(" AND revoked_at IS NULL");
    if let Some(id) = except {
        q.push(" AND id <> ").bind(id);
    }
    let n = q.execute(&mut *conn).await?;
    let mut c = Sql::new(engine);
    c.push("UPDATE sign_in_challenges SET used_at = ")
        .bind(now)
        .push(" WHERE user_id = ")
        .bind(user)
        .push(" AND used_at IS NULL");
    c.execute(&mut *conn).await?;
    Ok(n)
}

/// Revokes one session by id (of this user).
pub(crate) async fn revoke_session(
    conn: &mut AnyConnection,
    engine: Engine,
    org: i64,
    user: i64,
    id: i64,
    now: i64,
) -> Result<bool, StoreError> {
    let mut q = Sql::new(engine);
    q.push("UPDATE sessions SET revoked_at = ").bind(now).push(" WHERE org_id = ").bind(org);
    q.push(" AND user_id = ").bind(user).push(" AND id = ").bind(id).push(" AND revoked_at IS NULL");
    Ok(q.execute(&mut *conn).await? == 1)
}

/// What authenticating a credential read from the database.
pub(crate) struct Row0 {
    pub org: i64,
    pub user: i64,
    pub status: String,
    pub must_change_password: bool,
    pub version: i64,
    pub settings: SecuritySettings,
    pub mfa_enabled: bool,
    pub credential: Credential,
    pub csrf_token: Option<String>,
    pub verified_at: Option<i64>,
}

/// Resolves a bearer token or session cookie on a request: the session (or API token) must be live, its user
/// active, and the organization's network and time policy must admit the client now.
pub(crate) async fn authenticate(store: &Store, token: &str, client: &ClientInfo) -> Result<AuthOutcome, StoreError> {
    let now = now_ms();
    let found = if token.starts_with(tokens::API_TOKEN_PREFIX) {
        tokens::lookup(store, token, now).await?
    } else {
        lookup_session(store, token, now).await?
    };
    let Some(r) = found else { return Ok(AuthOutcome::Invalid) };
    if r.status != "active" {
        return Ok(AuthOutcome::Invalid);
    }
    let access = store.access_at(r.org, r.user, r.version).await?;
    if let Err(d) = r.settings.admits(&access.roles, client.ip, now) {
        tracing::info!(org = r.org, user = r.user, denial = d.as_str(), "request refused by the organization's policy");
        return Ok(AuthOutcome::Denied(d));
    }
    let restriction = if r.must_change_password {
        Some(Restriction::PasswordChange)
    } else if !r.mfa_enabled && requires_mfa(store, r.org, r.version, &access.roles).await? {
        Some(Restriction::MfaEnrollment)
    } else {
        None
    };
    let session_id = match r.credential {
        Credential::Session { id, .. } => id,
        Credential::ApiToken { .. } => 0,
    };
    let principal = Principal { org: r.org, user: r.user, session_id, access, policy_version: r.version };
    let step_up_ms = i64::from(r.settings.sessions.step_up_minutes) * 60_000;
    let time_zone = r.settings.time_zone.clone();
    crate::audit::note_auth(r.org, r.user, r.verified_at.is_some_and(|at| now - at <= step_up_ms));
    Ok(AuthOutcome::Valid(Box::new(Authenticated {
        principal,
        credential: r.credential,
        csrf_token: r.csrf_token,
        verified_at: r.verified_at,
        restriction,
        step_up_ms,
        mfa_enabled: r.mfa_enabled,
        time_zone,
    })))
}

/// Does any role the user holds require a second factor?
pub(crate) async fn requires_mfa(store: &Store, org: i64, version: i64, roles: &[i64]) -> Result<bool, StoreError> {
    let policy = store.org_policy(org, version).await?;
    Ok(policy.config.roles.iter().any(|r| r.require_mfa && roles.contains(&r.id)))
}

async fn lookup_session(store: &Store, token: &str, now: i64) -> Result<Option<Row0>, StoreError> {
    let db = &store.db;
    let mut q = db.sql();
    q.push(
        "SELECT s.id, s.org_id, s.user_id, s.kind, s.expires_at, s.last_seen_at, s.revoked_at, s.csrf_token, s.verified_at, \
         u.status, u.must_change_password, o.policy_version, o.settings, \
         (SELECT COUNT(*) FROM mfa_totp m WHERE m.user_id = s.user_id AND m.secret IS NOT NULL) AS mfa_enabled \
         FROM sessions s JOIN users u ON u.id = s.user_id JOIN organizations o ON o.id = s.org_id WHERE s.token_hash = ",
    )
    .bind(hash_token(token));
    // Every request makes this read: it runs inline on SQLite (`Db::read_first`).
    let Some(r) = db.read_first(&q).await? else { return Ok(None) };
    let settings = SecuritySettings::from_org_settings(&r.req_text("settings")?);
    let revoked: Option<i64> = r.int("revoked_at")?;
    let expires: i64 = r.req_int("expires_at")?;
    let last_seen: i64 = r.req_int("last_seen_at")?;
    let idle_ms = i64::from(settings.sessions.idle_minutes) * 60_000;
    if revoked.is_some() || expires <= now || now - last_seen > idle_ms {
        return Ok(None);
    }
    let id: i64 = r.req_int("id")?;
    crate::audit::note_session(id);
    if now - last_seen > 60_000 {
        // Idle tracking at minute granularity: one small write a minute per session, not one per request.
        let mut up = db.sql();
        up.push("UPDATE sessions SET last_seen_at = ").bind(now).push(" WHERE id = ").bind(id);
        up.execute(&db.pool).await?;
    }
    let kind = r.req_text("kind")?;
    Ok(Some(Row0 {
        org: r.req_int("org_id")?,
        user: r.req_int("user_id")?,
        status: r.req_text("status")?,
        must_change_password: r.req_int("must_change_password")? != 0,
        version: r.req_int("policy_version")?,
        settings,
        mfa_enabled: r.req_int("mfa_enabled")? > 0,
        credential: Credential::Session { id, cookie: kind == "cookie" },
        csrf_token: r.text("csrf_token")?,
        verified_at: r.int("verified_at")?,
    }))
}
