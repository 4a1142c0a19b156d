//! TOTP (RFC 6238: SHA-1, six digits, 30-second steps, one step of clock skew either way) and single-use recovery
//! codes. A code is accepted at most once: the last accepted step is stored and only a later step passes (the
//! `totp-rs` crate leaves replay protection to the caller). Recovery codes (100 bits each) are stored as salted
//! SHA-256 hashes and consumed atomically.

use crate::db::Sql;
use crate::{Engine, StoreError};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::{AnyConnection, Row};
use subtle::ConstantTimeEq;
use totp_rs::{Builder, Secret, Totp};

pub const ISSUER: &str = "CRM";
pub const RECOVERY_CODES: usize = 10;
/// Crockford's base32 alphabet: no I, L, O or U to misread.
const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// What an authenticator app needs, shown once at enrolment.
#[derive(Debug, Clone, Serialize)]
pub struct TotpEnrollment {
    /// The shared secret in base32, for manual entry.
    pub secret: String,
    /// `otpauth://totp/…` for authenticator apps.
    pub otpauth_uri: String,
    /// The URI as a QR code (SVG document).
    pub qr_svg: String,
}

fn build(secret: Vec<u8>, account: &str) -> Result<Totp, StoreError> {
    Builder::new()
        .with_secret(secret)
        .with_account_name(account.replace(':', "_"))
        .with_issuer(Some(ISSUER))
        .build()
        .map_err(|e| StoreError::Config(format!("TOTP: {e}")))
}

fn decode(secret_b32: &str) -> Option<Vec<u8>> {
    Secret::try_from_base32(secret_b32).ok().map(|s| s.as_ref().to_vec())
}

/// The code an authenticator shows at `unix_secs` for a base32 secret (for tests, tools and demos).
pub fn totp_code_at(secret_b32: &str, unix_secs: u64) -> Option<String> {
    let totp = build(decode(secret_b32)?, "x").ok()?;
    Some(totp.generate(unix_secs).to_string())
}

/// A fresh 160-bit secret with its enrolment material.
pub(crate) fn new_enrollment(account: &str) -> Result<(String, TotpEnrollment), StoreError> {
    let bytes: [u8; 20] = rand::random();
    let totp = build(bytes.to_vec(), account)?;
    let secret = totp.secret().to_base32();
    let uri = totp.to_url().map_err(|e| StoreError::Config(format!("TOTP: {e}")))?;
    let qr = qrcode::QrCode::new(uri.as_bytes()).map_err(|e| StoreError::Config(format!("QR: {e}")))?;
    let svg = qr.render::<qrcode::render::svg::Color>().min_dimensions(200, 200).build();
    Ok((secret.clone(), TotpEnrollment { secret, otpauth_uri: uri, qr_svg: svg }))
}

/// The step `code` matches for `secret_b32` at `now_ms`, if any (no replay check).
pub(crate) fn matching_step(secret_b32: &str, code: &str, now_ms: i64) -> Option<i64> {
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let totp = build(decode(secret_b32)?, "x").ok()?;
    totp.check(&code, (now_ms.max(0) / 1000) as u64).map(|s| s as i64)
}

/// Does the user have a confirmed TOTP secret?
pub(crate) async fn enabled(conn: &mut AnyConnection, engine: Engine, user: i64) -> Result<bool, StoreError> {
    let mut q = Sql::new(engine);
    q.push("SELECT 1 AS x FROM mfa_totp WHERE user_id = ").bind(user).push(" AND secret IS NOT NULL");
    Ok(q.fetch_optional(&mut *conn).await?.is_some())
}

/// Verifies a TOTP code against the user's confirmed secret and consumes its step, inside the caller's
/// transaction. A code of a step already used (or older) is refused.
pub(crate) async fn verify_totp(
    conn: &mut AnyConnection,
    engine: Engine,
    user: i64,
    code: &str,
    now: i64,
) -> Result<bool, StoreError> {
    let mut q = Sql::new(engine);
    q.push("SELECT secret FROM mfa_totp WHERE user_id = ").bind(user).push(" AND secret IS NOT NULL");
    let Some(row) = q.fetch_optional(&mut *conn).await? else { return Ok(false) };
    let secret: String = row.try_get("secret")?;
    let Some(step) = matching_step(&secret, code, now) else { return Ok(false) };
    let mut up = Sql::new(engine);
    up.push("UPDATE mfa_totp SET last_step = ")
        .bind(step)
        .push(" WHERE user_id = ")
        .bind(user)
        .push(" AND last_step < ")
        .bind(step);
    Ok(up.execute(&mut *conn).await? == 1)
}

/// Ten fresh recovery codes (`xxxxx-xxxxx-xxxxx-xxxxx`, 100 bits each).
pub(crate) fn new_recovery_codes() -> Vec<String> {
    (0..RECOVERY_CODES)
        .map(|_| {
            let bytes: [u8; 20] = rand::random();
            let chars: Vec<char> = bytes.iter().map(|b| ALPHABET[(b & 31) as usize] as char).collect();
            chars.chunks(5).map(|c| c.iter().collect::<String>()).collect::<Vec<_>>().join("-")
        })
        .collect()
}

/// The canonical form of a typed recovery code: lower case, separators dropped, Crockford's look-alikes mapped.
fn normalize_code(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| match c.to_ascii_lowercase() {
            'o' => '0',
            'i' | 'l' => '1',
            c => c,
        })
        .collect()
}

fn code_hash(salt: &str, code: &str) -> String {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update([0u8]);
    h.update(normalize_code(code).as_bytes());
    hex::encode(h.finalize())
}

/// Replaces the user's recovery codes with `codes` (stored hashed).
pub(crate) async fn store_recovery_codes(
    conn: &mut AnyConnection,
    engine: Engine,
    org: i64,
    user: i64,
    codes: &[String],
) -> Result<(), StoreError> {
    let mut q = Sql::new(engine);
    q.push("DELETE FROM mfa_recovery_codes WHERE user_id = ").bind(user);
    q.execute(&mut *conn).await?;
    for c in codes {
        let salt = hex::encode(rand::random::<[u8; 16]>());
        let mut q = Sql::new(engine);
        q.push("INSERT INTO mfa_recovery_codes (org_id, user_id, salt, code_hash, used_at) VALUES (")
            .bind(org)
            .push(", ")
            .bind(user)
            .push(", ")
            .bind(salt.as_str())
            .push(", ")
            .bind(code_hash(&salt, c))
            .push(", NULL)");
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Consumes one unused recovery code, inside the caller's transaction; each code works once.
pub(crate) async fn use_recovery_code(
    conn: &mut AnyConnection,
    engine: Engine,
    user: i64,
    code: &str,
    now: i64,
) -> Result<bool, StoreError> {
    if normalize_code(code).len() != 20 {
        return Ok(false);
    }
    let mut q = Sql::new(engine);
    q.push("SELECT id, salt, code_hash FROM mfa_recovery_codes WHERE user_id = ")
        .bind(user)
        .push(" AND used_at IS NULL");
    let mut found = None;
    for r in q.fetch_all(&mut *conn).await? {
        let salt: String = r.try_get("salt")?;
        let stored: String = r.try_get("code_hash")?;
        // Every unused code is compared (constant time each), so the time does not tell which one matched.
        if bool::from(code_hash(&salt, code).as_bytes().ct_eq(stored.as_bytes())) {
            found = Some(r.try_get::<i64, _>("id")?);
        }
    }
    let Some(id) = found else { return Ok(false) };
    let mut up = Sql::new(engine);
    up.push("UPDATE mfa_recovery_codes SET used_at = ")
        .bind(now)
        .push(" WHERE id = ")
        .bind(id)
        .push(" AND used_at IS NULL");
    Ok(up.execute(&mut *conn).await? == 1)
}

/// Unused recovery codes left.
pub(crate) async fn recovery_codes_left(
    conn: &mut AnyConnection,
    engine: Engine,
    user: i64,
) -> Result<i64, StoreError> {
    let mut q = Sql::new(engine);
    q.push("SELECT COUNT(*) AS n FROM mfa_recovery_codes WHERE user_id = ").bind(user).push(" AND used_at IS NULL");
    Ok(q.fetch_one(&mut *conn).await?.try_get("n")?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6238_test_vector_for_sha1() {
        // RFC 6238 appendix B: secret "12345678901234567890", T = 59 s → 94287082 (8 digits); six digits: 287082.
        let secret = totp_rs::Secret::from(b"12345678901234567890".to_vec()).to_base32();
        assert_eq!(totp_code_at(&secret, 59).as_deref(), Some("287082"));
        assert_eq!(totp_code_at(&secret, 1_111_111_109).as_deref(), Some("081804"));
    }

    #[test]
    fn codes_match_their_step_and_one_step_of_skew() {
        let (secret, e) = new_enrollment("alice@acme").expect("enrolment");
        assert!(e.otpauth_uri.starts_with("otpauth://totp/CRM:alice%40acme?secret="), "{}", e.otpauth_uri);
        assert!(e.qr_svg.contains("<svg"));
        let now = 1_800_000_000_000i64;
        let code = totp_code_at(&secret, (now / 1000) as u64).expect("code");
        let step = now / 1000 / 30;
        assert_eq!(matching_step(&secret, &code, now), Some(step));
        assert_eq!(matching_step(&secret, &code, now + 30_000), Some(step), "one step late is accepted");
        assert_eq!(matching_step(&secret, &code, now + 90_000), None, "three steps late is not");
        assert_eq!(matching_step(&secret, "12345", now), None);
        assert_eq!(matching_step(&secret, "abcdef", now), None);
    }

    #[test]
    fn recovery_codes_are_distinct_and_forgiving_to_type() {
        let codes = new_recovery_codes();
        assert_eq!(codes.len(), 10);
        assert_eq!(codes.iter().collect::<std::collections::BTreeSet<_>>().len(), 10);
        assert!(codes.iter().all(|c| c.len() == 23 && c.matches('-').count() == 3));
        let c = &codes[0];
        assert_eq!(code_hash("s", c), code_hash("s", &c.to_uppercase().replace('-', " ")));
        assert_eq!(normalize_code("O1L-I0"), "01110");
    }
}
