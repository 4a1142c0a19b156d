//! Counters that must hold across server processes and restarts, kept in the database: per-client-network
//! sign-in limits (fixed windows in `auth_throttle`) and the per-account soft lockout (`auth_lockouts`).
//!
//! The soft lockout is a small state machine per account: each failed sign-in (wrong password, wrong second
//! factor) adds one to `failures`; from the organization's threshold on, each failure locks the account for a
//! delay that doubles with every further failure, up to a cap. While locked, every sign-in fails the same way
//! as a wrong password, even with the right one, and does not grow the delay; a successful sign-in or an
//! administrator's unlock resets it, and failures older than a day are forgotten. It blocks new sign-ins only:
//! existing sessions of the account keep working (an administrator's explicit lock ends them).

use super::settings::LockoutPolicy;
use crate::StoreError;
use crate::db::Sql;
use sqlx::{AnyConnection, Row};
use std::net::IpAddr;

/// Sign-in attempts (any outcome) a client network may make per minute.
pub const IP_ATTEMPTS_PER_MINUTE: i64 = 60;
/// Failed sign-ins a client network may make per 15 minutes.
pub const IP_FAILURES_PER_WINDOW: i64 = 30;
const ATTEMPT_WINDOW_MS: i64 = 60_000;
const FAILURE_WINDOW_MS: i64 = 15 * 60_000;
/// Consecutive failures further apart than this start counting again.
const FAILURE_MEMORY_MS: i64 = 24 * 3600 * 1000;

/// The client network a limit applies to: an IPv4 address, an IPv6 /64 (one subscriber's prefix), or `unknown`
/// when the server could not tell the address (in-process callers).
pub fn client_bucket(ip: Option<IpAddr>) -> String {
    match ip.map(super::settings::normalize_ip) {
        Some(IpAddr::V4(v4)) => format!("ip:{v4}"),
        Some(IpAddr::V6(v6)) => {
            let s = v6.segments();
            format!("ip:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        None => "ip:unknown".into(),
    }
}

fn window_start(now: i64, window: i64) -> i64 {
    now - now.rem_euclid(window)
}

/// Seconds until the client may try again, when it is over a limit.
pub(crate) async fn client_retry_after(
    conn: &mut AnyConnection,
    sql: Sql,
    bucket: &str,
    now: i64,
) -> Result<Option<i64>, StoreError> {
    let mut q = sql;
    let (a, f) = (format!("a:{bucket}"), format!("f:{bucket}"));
    q.push("SELECT bucket, window_start, hits FROM auth_throttle WHERE bucket IN (")
        .bind(a.as_str())
        .push(", ")
        .bind(f.as_str())
        .push(")");
    let mut retry = None;
    for r in q.fetch_all(&mut *conn).await? {
        let key: String = r.try_get("bucket")?;
        let start: i64 = r.try_get("window_start")?;
        let hits: i64 = r.try_get("hits")?;
        let (window, limit) = if key == a {
            (ATTEMPT_WINDOW_MS, IP_ATTEMPTS_PER_MINUTE)
        } else {
            (FAILURE_WINDOW_MS, IP_FAILURES_PER_WINDOW)
        };
        if start == window_start(now, window) && hits >= limit {
            let secs = (start + window - now + 999) / 1000;
            retry = Some(retry.map_or(secs, |r: i64| r.max(secs)));
        }
    }
    Ok(retry)
}

async fn hit(conn: &mut AnyConnection, sql: Sql, key: &str, window: i64, now: i64) -> Result<(), StoreError> {
    let mut q = sql;
    q.push("INSERT INTO auth_throttle (bucket, window_start, hits) VALUES (")
        .bind(key)
        .push(", ")
        .bind(window_start(now, window))
        .push(", 1) ON CONFLICT (bucket) DO UPDATE SET hits = CASE WHEN auth_throttle.window_start = excluded.window_start THEN auth_throttle.hits + 1 ELSE 1 END, window_start = excluded.window_start");
    q.execute(&mut *conn).await?;
    Ok(())
}

/// Counts one attempt (and one failure when `failed`) for the client network.
pub(crate) async fn count_client(
    conn: &mut AnyConnection,
    engine: crate::Engine,
    bucket: &str,
    failed: bool,
    now: i64,
) -> Result<(), StoreError> {
    hit(conn, Sql::new(engine), &format!("a:{bucket}"), ATTEMPT_WINDOW_MS, now).await?;
    if failed {
        hit(conn, Sql::new(engine), &format!("f:{bucket}"), FAILURE_WINDOW_MS, now).await?;
    }
    // Old windows are dead weight: sweep now and then.
    if rand::random::<u8>() == 0 {
        let mut q = Sql::new(engine);
        q.push("DELETE FROM auth_throttle WHERE window_start < ").bind(now - 24 * 3600 * 1000);
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// One account's lockout state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lockout {
    pub failures: i64,
    pub last_failure_at: i64,
    pub locked_until: i64,
}

impl Lockout {
    pub fn is_locked(&self, now: i64) -> bool {
        self.locked_until > now
    }
}

pub(crate) async fn load(conn: &mut AnyConnection, engine: crate::Engine, user: i64) -> Result<Lockout, StoreError> {
    let mut q = Sql::new(engine);
    q.push("SELECT failures, last_failure_at, locked_until FROM auth_lockouts WHERE user_id = ").bind(user);
    Ok(match q.fetch_optional(&mut *conn).await? {
        Some(r) => Lockout {
            failures: r.try_get("failures")?,
            last_failure_at: r.try_get("last_failure_at")?,
            locked_until: r.try_get("locked_until")?,
        },
        None => Lockout::default(),
    })
}

/// Records a failure (inside the caller's transaction) and returns the new state. Failures while locked are not
/// counted: they neither extend nor grow the lock.
pub(crate) async fn record_failure(
    conn: &mut AnyConnection,
    engine: crate::Engine,
    org: i64,
    user: i64,
    policy: &LockoutPolicy,
    now: i64,
) -> Result<Lockout, StoreError> {
    let cur = load(conn, engine, user).await?;
    if cur.is_locked(now) {
        return Ok(cur);
    }
    let failures = if now - cur.last_failure_at > FAILURE_MEMORY_MS { 1 } else { cur.failures + 1 };
    let delay = policy.delay_ms(failures);
    let next = Lockout { failures, last_failure_at: now, locked_until: if delay > 0 { now + delay } else { 0 } };
    let mut q = Sql::new(engine);
    q.push("INSERT INTO auth_lockouts (user_id, org_id, failures, last_failure_at, locked_until) VALUES (")
        .bind(user)
        .push(", ")
        .bind(org)
        .push(", ")
        .bind(next.failures)
        .push(", ")
        .bind(now)
        .push(", ")
        .bind(next.locked_until)
        .push(") ON CONFLICT (user_id) DO UPDATE SET failures = excluded.failures, last_failure_at = excluded.last_failure_at, locked_until = excluded.locked_until");
    q.execute(&mut *conn).await?;
    Ok(next)
}

/// Clears the account's failures (a successful sign-in, an administrator's unlock, a password reset).
pub(crate) async fn clear(conn: &mut AnyConnection, engine: crate::Engine, user: i64) -> Result<bool, StoreError> {
    let mut q = Sql::new(engine);
    q.push("DELETE FROM auth_lockouts WHERE user_id = ").bind(user);
    Ok(q.execute(&mut *conn).await? > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_are_limited_by_their_64_prefix_and_mapped_ipv4_as_ipv4() {
        let b = |s: &str| client_bucket(Some(s.parse().expect("ip")));
        assert_eq!(b("2001:db8:1:2:aaaa::1"), b("2001:db8:1:2:bbbb::9"));
        assert_ne!(b("2001:db8:1:2::1"), b("2001:db8:1:3::1"));
        assert_eq!(b("::ffff:192.0.2.4"), b("192.0.2.4"));
        assert_eq!(client_bucket(None), "ip:unknown");
    }
}
