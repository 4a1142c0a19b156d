//! Password hashing (argon2id with the OWASP parameters: 19 MiB, two passes, one lane), always run off the async
//! runtime, and the organization's password policy. Hashes never leave this crate.

use super::settings::PasswordPolicy;
use crate::StoreError;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use std::sync::OnceLock;

/// The bundled list of common passwords (lower case, one a line), refused by the default policy.
const COMMON: &str = include_str!("common_passwords.txt");

fn hasher() -> Argon2<'static> {
    // OWASP Password Storage Cheat Sheet: argon2id, m = 19 MiB, t = 2, p = 1.
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or(Params::DEFAULT);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes on the calling thread: use [`hash`] from async code.
pub(crate) fn hash_blocking(password: &str) -> Result<String, StoreError> {
    hasher()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| StoreError::Config(format!("password hashing failed: {e}")))
}

/// Verifies on the calling thread: use [`verify`] from async code.
pub(crate) fn verify_blocking(password: &str, hash: &str) -> bool {
    hasher().verify_password(password.as_bytes(), hash).is_ok()
}

/// Hashes `password` on the blocking pool.
pub(crate) async fn hash(password: &str) -> Result<String, StoreError> {
    let pw = password.to_string();
    tokio::task::spawn_blocking(move || hash_blocking(&pw)).await.map_err(|e| StoreError::Config(e.to_string()))?
}

/// Verifies `password` against `hash` on the blocking pool; `None` verifies against a dummy hash of the same
/// parameters (and fails), so an unknown user costs what a known one does.
pub(crate) async fn verify(password: &str, hash: Option<String>) -> bool {
    let known = hash.is_some();
    let hash = hash.unwrap_or_else(|| dummy_hash().to_string());
    let pw = password.to_string();
    let ok = tokio::task::spawn_blocking(move || verify_blocking(&pw, &hash)).await.unwrap_or(false);
    ok && known
}

/// A hash to verify against when the user does not exist, with the current parameters.
pub(crate) fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let pw: [u8; 16] = rand::random();
        hash_blocking(&hex::encode(pw)).unwrap_or_default()
    })
}

/// Was `hash` made with other parameters than today's (an older cost, another algorithm)? Then it is replaced at
/// the next successful sign-in.
pub(crate) fn needs_rehash(hash: &str) -> bool {
    let Ok(parsed) = argon2::PasswordHash::new(hash) else { return true };
    if parsed.algorithm != Algorithm::Argon2id.ident() {
        return true;
    }
    match Params::try_from(&parsed) {
        Ok(p) => p.m_cost() != 19 * 1024 || p.t_cost() != 2 || p.p_cost() != 1,
        Err(_) => true,
    }
}

fn is_common(lower: &str) -> bool {
    static SET: OnceLock<std::collections::HashSet<&'static str>> = OnceLock::new();
    SET.get_or_init(|| COMMON.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect())
        .contains(lower)
}

/// Checks a new password against the organization's policy; the message names the rule it breaks (never the
/// password).
pub fn check_policy(policy: &PasswordPolicy, username: &str, password: &str) -> Result<(), StoreError> {
    let n = password.chars().count();
    if n < policy.min_length as usize {
        return Err(StoreError::invalid("password", format!("at least {} characters", policy.min_length)));
    }
    if n > policy.max_length as usize {
        return Err(StoreError::invalid("password", format!("at most {} characters", policy.max_length)));
    }
    let lower = password.to_lowercase();
    let user = username.trim().to_lowercase();
    if policy.forbid_username
        && !user.is_empty()
        && (lower == user || (user.chars().count() >= 3 && lower.contains(&user)))
    {
        return Err(StoreError::invalid("password", "must not contain the username"));
    }
    if policy.forbid_common {
        // Also catch a common password padded with digits or punctuation (`password123!`).
        let core = lower.trim_end_matches(|c: char| c.is_ascii_digit() || c.is_ascii_punctuation());
        if is_common(&lower) || is_common(core) || password.chars().all(|c| c == password.chars().next().unwrap_or(c)) {
            return Err(StoreError::invalid("password", "too common: choose a less predictable password"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_with_owasp_parameters_and_salted() {
        let a = hash_blocking("correct horse battery staple").expect("hash");
        let b = hash_blocking("correct horse battery staple").expect("hash");
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{a}");
        assert_ne!(a, b, "a fresh salt each time");
        assert!(verify_blocking("correct horse battery staple", &a));
        assert!(!verify_blocking("correct horse battery stapler", &a));
        assert!(!needs_rehash(&a));
        assert!(needs_rehash(
            "$argon2id$v=19$m=4096,t=3,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g"
        ));
        assert!(needs_rehash("not a hash"));
    }

    #[test]
    fn the_policy_refuses_short_long_username_and_common_passwords() {
        let p = PasswordPolicy::default();
        let bad = |pw: &str| check_policy(&p, "zhang.wei", pw).is_err();
        assert!(bad("short"));
        assert!(bad(&"x".repeat(129)));
        assert!(bad("zhang.wei-2026-secret"), "contains the username");
        assert!(bad("ZHANG.WEI.ZHANG.WEI"), "case-insensitive");
        assert!(bad("password1234"), "common");
        assert!(bad("Password1234!"), "common with a suffix");
        assert!(bad("qwertyuiop123"));
        assert!(bad("aaaaaaaaaaaaaa"), "one repeated character");
        assert!(!bad("violet-kettle-93-harbor"));
        assert!(!bad("长城很长很长很长很长很长"), "Unicode counts characters, not bytes");
        let relaxed = PasswordPolicy { forbid_common: false, forbid_username: false, ..p };
        assert!(check_policy(&relaxed, "zhang.wei", "password1234").is_ok());
    }

    #[test]
    fn the_bundled_list_is_lower_case_and_not_tiny() {
        let n = COMMON.lines().filter(|l| !l.is_empty() && !l.starts_with('#')).count();
        assert!(n >= 200, "{n} common passwords");
        assert!(COMMON.lines().filter(|l| !l.starts_with('#')).all(|l| l == l.to_lowercase()));
    }
}
