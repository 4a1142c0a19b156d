//! The checkpoint signing key: Ed25519, kept in a file outside the database (default `<data-dir>/audit-signing.key`,
//! created on first start with mode 0600), so someone who can rewrite the database cannot forge a checkpoint.
//! The public key is exported as one line of text (`crm audit export-key`) for verifiers that must not trust the
//! database.

use crate::StoreError;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::Path;

const SECRET_TAG: &str = "ed25519-secret";
const PUBLIC_TAG: &str = "ed25519-public";

/// The key that signs checkpoints.
pub struct AuditSigner {
    key: SigningKey,
    public: AuditPublicKey,
}

/// A public key that verifies checkpoints; `key_id` is the first 16 hex digits of its SHA-256.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditPublicKey {
    key: VerifyingKey,
    key_id: String,
}

fn config(m: impl Into<String>) -> StoreError {
    StoreError::Config(m.into())
}

fn hex32(s: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(s.trim()).ok()?;
    bytes.try_into().ok()
}

impl AuditSigner {
    pub fn from_seed(seed: [u8; 32]) -> AuditSigner {
        let key = SigningKey::from_bytes(&seed);
        let public = AuditPublicKey::new(key.verifying_key());
        AuditSigner { key, public }
    }

    /// A fresh random key (tests and first start).
    pub fn generate() -> AuditSigner {
        AuditSigner::from_seed(rand::random())
    }

    /// Reads the key file, or creates it (mode 0600, written in full before it appears under its name, so two
    /// processes starting at once agree on one key). Returns the signer and whether it was created.
    pub fn load_or_create(path: &Path) -> Result<(AuditSigner, bool), StoreError> {
        match std::fs::read_to_string(path) {
            Ok(text) => return Ok((AuditSigner::parse(&text, path)?, false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(config(format!("reading the audit signing key {}: {e}", path.display()))),
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| config(format!("creating {}: {e}", dir.display())))?;
        }
        let signer = AuditSigner::generate();
        let text = format!(
            "# CRM audit checkpoint signing key (Ed25519). Keep it secret, outside the database, and backed up.\n\
             # Public key: `crm audit export-key`.\n{SECRET_TAG} {}\n",
            hex::encode(signer.key.to_bytes())
        );
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let mut f = opts.open(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()
        };
        write().map_err(|e| config(format!("writing the audit signing key {}: {e}", tmp.display())))?;
        // A hard link never replaces an existing file: if another process won the race, use its key.
        let linked = std::fs::hard_link(&tmp, path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
                    && let Ok(d) = std::fs::File::open(dir)
                {
                    let _ = d.sync_all();
                }
                Ok((signer, true))
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let text =
                    std::fs::read_to_string(path).map_err(|e| config(format!("reading {}: {e}", path.display())))?;
                Ok((AuditSigner::parse(&text, path)?, false))
            }
            Err(e) => Err(config(format!("creating the audit signing key {}: {e}", path.display()))),
        }
    }

    fn parse(text: &str, path: &Path) -> Result<AuditSigner, StoreError> {
        let seed = text
            .lines()
            .find_map(|l| l.trim().strip_prefix(SECRET_TAG))
            .and_then(hex32)
            .ok_or_else(|| config(format!("{} is not an audit signing key file", path.display())))?;
        Ok(AuditSigner::from_seed(seed))
    }

    pub fn public_key(&self) -> &AuditPublicKey {
        &self.public
    }

    pub fn key_id(&self) -> &str {
        &self.public.key_id
    }

    /// Hex signature of `msg`.
    pub(crate) fn sign(&self, msg: &[u8]) -> String {
        hex::encode(self.key.sign(msg).to_bytes())
    }
}

impl AuditPublicKey {
    fn new(key: VerifyingKey) -> AuditPublicKey {
        let key_id = hex::encode(&Sha256::digest(key.as_bytes())[..8]);
        AuditPublicKey { key, key_id }
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// 64 hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.key.as_bytes())
    }

    pub fn from_hex(s: &str) -> Result<AuditPublicKey, StoreError> {
        let bytes = hex32(s).ok_or_else(|| config("an audit public key is 64 hex digits"))?;
        VerifyingKey::from_bytes(&bytes)
            .map(AuditPublicKey::new)
            .map_err(|e| config(format!("invalid audit public key: {e}")))
    }

    /// The exported form: a comment and `ed25519-public <hex>`.
    pub fn to_text(&self) -> String {
        format!("# CRM audit checkpoint public key, id {}\n{PUBLIC_TAG} {}\n", self.key_id, self.to_hex())
    }

    /// Reads the exported form (or a bare hex key).
    pub fn parse(text: &str) -> Result<AuditPublicKey, StoreError> {
        let line = text
            .lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(PUBLIC_TAG).or_else(|| (l.len() == 64 && !l.starts_with('#')).then_some(l)))
            .ok_or_else(|| config("not an audit public key file (expected a line `ed25519-public <hex>`)"))?;
        AuditPublicKey::from_hex(line)
    }

    pub(crate) fn verify(&self, msg: &[u8], signature_hex: &str) -> bool {
        let Some(bytes) = hex::decode(signature_hex.trim()).ok().and_then(|b| <[u8; 64]>::try_from(b).ok()) else {
            return false;
        };
        self.key.verify_strict(msg, &Signature::from_bytes(&bytes)).is_ok()
    }
}

/// What a checkpoint signature covers.
pub(crate) fn checkpoint_message(org: i64, seq: i64, at: i64, kind: &str, head: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(128);
    m.extend_from_slice(b"crm-audit-checkpoint-v1\0");
    m.extend_from_slice(&org.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(&at.to_be_bytes());
    m.extend_from_slice(&(kind.len() as u64).to_be_bytes());
    m.extend_from_slice(kind.as_bytes());
    m.extend_from_slice(&(head.len() as u64).to_be_bytes());
    m.extend_from_slice(head.as_bytes());
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_signatures_verify() {
        let dir = std::env::temp_dir().join(format!("crm-audit-key-{}", rand::random::<u64>()));
        let path = dir.join("audit-signing.key");
        let (a, created) = AuditSigner::load_or_create(&path).unwrap();
        assert!(created);
        let (b, created) = AuditSigner::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(a.public_key(), b.public_key());
        let public = AuditPublicKey::parse(&a.public_key().to_text()).unwrap();
        let msg = checkpoint_message(1, 2, 3, "periodic", "abc");
        let sig = b.sign(&msg);
        assert!(public.verify(&msg, &sig));
        assert!(!public.verify(&checkpoint_message(1, 2, 3, "periodic", "abd"), &sig));
        assert!(!AuditSigner::generate().public_key().verify(&msg, &sig));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
