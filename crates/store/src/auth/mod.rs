//! Sign-in and account security (OWASP ASVS level 2 as the yardstick).
//!
//! - [`password`]: argon2id with OWASP parameters off the async runtime; the organization's password policy.
//! - [`signin`]: the sign-in flow: per-network limits, the account's soft lockout, the dummy-hash path for unknown
//!   users (one response and one timing class for every failure), network and time policies, the TOTP second
//!   factor with an `mfa_token` challenge, and sessions.
//! - [`sessions`]: random 256-bit session tokens stored as SHA-256 hashes, idle and absolute timeouts, a CSRF
//!   token per session for cookie clients, and revocation; [`tokens`]: API tokens for integrations, bound to a
//!   user and never exceeding them.
//! - [`mfa`]: RFC 6238 TOTP with replay refusal; ten single-use recovery codes.
//! - [`throttle`]: counters in the database (they hold across processes and restarts).
//! - [`settings`]: the organization's security settings and the pure network and sign-in-hours checks.
//! - [`events`]: the single writer of account-security events (audit trail and sign-in history).
//! - [`account`] and [`admin`]: self-service and administration, permission-checked like the rest of the
//!   administration API.

pub(crate) mod account;
pub(crate) mod admin;
pub(crate) mod events;
pub(crate) mod mfa;
pub(crate) mod password;
pub(crate) mod sessions;
pub(crate) mod settings;
pub(crate) mod signin;
pub(crate) mod throttle;
pub(crate) mod tokens;

use crate::Principal;
use std::net::IpAddr;

/// Who is calling, as far as the HTTP edge can tell.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    /// The client address (the TCP peer, or the address a trusted proxy forwarded); `None` when unknown.
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

impl ClientInfo {
    pub(crate) fn ip_text(&self) -> Option<String> {
        self.ip.map(|ip| settings::normalize_ip(ip).to_string())
    }
}

/// How a request authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// An interactive session: a bearer token from `POST /api/v1/session`, or a browser's session cookie.
    Session { id: i64, cookie: bool },
    /// An API token of an integration.
    ApiToken { id: i64 },
}

/// A live session that may do nothing but fix its account first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restriction {
    /// The password must be changed (first sign-in, administrator's reset).
    PasswordChange,
    /// A role of the user requires a second factor the user has not enrolled yet.
    MfaEnrollment,
}

impl Restriction {
    pub fn as_str(self) -> &'static str {
        match self {
            Restriction::PasswordChange => "password_change",
            Restriction::MfaEnrollment => "mfa_enrollment",
        }
    }
}

/// A request's authentication: the principal and what the session knows about itself.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub principal: Principal,
    pub credential: Credential,
    /// The session's CSRF token (sessions only): cookie clients echo it in `X-CSRF-Token` or a `csrf_token` form
    /// field on every state-changing request.
    pub csrf_token: Option<String>,
    /// When the session last proved who it is (its sign-in, or a step-up: a second factor, or the password for
    /// users without one), ms since the epoch.
    pub verified_at: Option<i64>,
    /// Set while the account must be fixed before anything else.
    pub restriction: Option<Restriction>,
    /// How long a step-up stays fresh under the organization's policy, in ms.
    pub step_up_ms: i64,
    /// Whether the user has a confirmed second factor.
    pub mfa_enabled: bool,
    /// The organization's time zone (IANA name, from its security settings), for showing times to the user.
    pub time_zone: String,
}

impl Authenticated {
    /// Did this session prove its user recently enough for a sensitive feature (export, reveal)? Users with a
    /// second factor prove it with a code; a fresh sign-in counts.
    pub fn step_up_fresh(&self) -> bool {
        self.verified_at.is_some_and(|at| crate::now_ms() - at <= self.step_up_ms)
    }
    pub fn session_id(&self) -> Option<i64> {
        match self.credential {
            Credential::Session { id, .. } => Some(id),
            Credential::ApiToken { .. } => None,
        }
    }
}

/// The result of checking a credential on a request.
#[derive(Debug)]
pub enum AuthOutcome {
    Valid(Box<Authenticated>),
    /// Unknown, revoked, expired or idle credential, or an inactive user: sign in again.
    Invalid,
    /// A live credential the organization's network or time policy refuses right now.
    Denied(settings::Denial),
}

/// Hex of 32 random bytes (256 bits) from the operating system's generator via `rand`'s CSPRNG.
pub(crate) fn random_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

pub use account::{MfaStatus, SessionInfo, SignInRecord};
pub use admin::UserSecurity;
pub use mfa::{TotpEnrollment, totp_code_at};
pub use password::check_policy;
pub use settings::{
    Day, Denial, HoursWindow, LockoutPolicy, NetworkPolicy, PasswordPolicy, SecuritySettings, SessionPolicy,
    normalize_ip, parse_network,
};
pub use signin::{SignInFailure, SignInOutcome, SignInRequest, SignedIn};
pub use throttle::{IP_ATTEMPTS_PER_MINUTE, IP_FAILURES_PER_WINDOW};
pub use tokens::{API_TOKEN_PREFIX, ApiTokenInfo, NewApiToken};
