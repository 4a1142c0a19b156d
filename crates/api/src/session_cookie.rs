//! Browser sessions: the session cookie and its CSRF token, a mechanism for the web UI to build on.
//!
//! - **Cookie**: [`SESSION_COOKIE`] holds the session token: `HttpOnly` (scripts never see it), `SameSite=Lax`
//!   (not sent on cross-site sub-requests and form posts), `Path=/`, and `Secure` when the request came over TLS
//!   (directly, or per `X-Forwarded-Proto` from a trusted proxy, or always with `--secure-cookies`). Sign in with
//!   `POST /api/v1/session` and `"cookie": true` (or call [`set_cookie`] after `SystemAccess::sign_in_with`); a
//!   session cookie presented at sign-in is revoked, and the new session always gets a new token (no fixation).
//! - **CSRF**: every session has a random CSRF token, returned at sign-in (`csrf_token`) and by `GET /api/v1/me`.
//!   A request authenticated by the cookie with a method other than GET, HEAD or OPTIONS must carry it in the
//!   [`CSRF_HEADER`] header, or, for HTML forms (`application/x-www-form-urlencoded`), in the [`CSRF_FIELD`] field
//!   read by [`crate::extract::AuthedForm`]; otherwise it is refused with 403 `/problems/csrf`. Bearer-token
//!   requests need no CSRF token: a browser never adds the header by itself.
//! - **Extractors** (`crate::extract`): `Authed` (a fully usable session), `AuthedSession` (any live session, also
//!   one restricted to changing its password or enrolling a second factor), `AuthedForm<T>` (a form post with its
//!   CSRF field), `StepUp` (a session that proved its user within the organization's step-up window).

use axum::http::{HeaderMap, HeaderValue, header};
use subtle::ConstantTimeEq;

pub const SESSION_COOKIE: &str = "crm_session";
pub const CSRF_HEADER: &str = "x-csrf-token";
pub const CSRF_FIELD: &str = "csrf_token";

/// The session cookie's value, if the request carries one.
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.trim().trim_matches('"').to_string())
        .filter(|v| !v.is_empty() && v.len() <= 256)
}

/// `Set-Cookie` for a new session.
pub fn set_cookie(token: &str, max_age_secs: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
        max_age_secs.max(0)
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("crm_session=; Path=/; Max-Age=0"))
}

/// `Set-Cookie` that removes the session cookie.
pub fn clear_cookie(secure: bool) -> HeaderValue {
    let v = if secure {
        "crm_session=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0; Secure"
    } else {
        "crm_session=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"
    };
    HeaderValue::from_static(v)
}

/// Does `given` equal the session's CSRF token (compared in constant time)?
pub fn csrf_matches(expected: Option<&str>, given: Option<&str>) -> bool {
    match (expected, given) {
        (Some(e), Some(g)) if !e.is_empty() => bool::from(e.as_bytes().ct_eq(g.trim().as_bytes())),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_http_only_lax_and_secure_over_tls() {
        let c = set_cookie("abc", 3600, true);
        let s = c.to_str().expect("ascii");
        for part in ["crm_session=abc", "HttpOnly", "SameSite=Lax", "Secure", "Path=/", "Max-Age=3600"] {
            assert!(s.contains(part), "{s} lacks {part}");
        }
        assert!(!set_cookie("abc", 1, false).to_str().expect("ascii").contains("Secure"));
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, "theme=dark; crm_session=tok123; lang=zh".parse().expect("header"));
        assert_eq!(session_cookie(&h).as_deref(), Some("tok123"));
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, "crm_sessionx=1".parse().expect("header"));
        assert_eq!(session_cookie(&h), None);
    }

    #[test]
    fn csrf_tokens_compare_exactly() {
        assert!(csrf_matches(Some("abc"), Some("abc")));
        assert!(!csrf_matches(Some("abc"), Some("abd")));
        assert!(!csrf_matches(Some("abc"), Some("ab")));
        assert!(!csrf_matches(Some("abc"), None));
        assert!(!csrf_matches(None, Some("abc")));
        assert!(!csrf_matches(Some(""), Some("")));
    }
}
