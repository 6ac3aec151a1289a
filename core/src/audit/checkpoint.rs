//! Signed checkpoints and the node key that signs them.
//!
//! A checkpoint commits to a chain's first `size` entries: the RFC 6962 Merkle root
//! over their entry hashes and the hash of entry `size` (the head). It is signed with the node's
//! Ed25519 key over [`Checkpoint::signed_bytes`], a line-oriented, unambiguous
//! encoding (identifiers cannot hold a newline). The key lives in the data dir as a
//! PASERK `k4.secret.…` file created with mode 0600 on first start; verifiers trust
//! the `k4.public.…` keys listed in `audit.node_public_keys`.

use std::io::Write as _;
use std::path::Path;

use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, Verifier as _};
use serde::{Deserialize, Serialize};

use super::error::AuditError;
use super::merkle::{to_hex, Hash};
use crate::keys::{PublicKey, SecretKey};

/// Domain separation for checkpoint signatures.
/// v2: Merkle leaves are entry hashes (v1 hashed the entries' bytes as leaves).
const SIGNING_CONTEXT: &str = "gatekeeper-audit-checkpoint-v2";

/// A signed statement about a chain's first `size` entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// Node name.
    pub node: String,
    /// Instance id.
    pub inst: String,
    /// Entries covered: 1..=size.
    pub size: u64,
    /// Hex RFC 6962 root whose leaves are the entries' hashes (SHA-256 of their canonical bytes).
    pub root: String,
    /// Hex SHA-256 of entry `size` (64 zeros when `size` is 0).
    pub head: String,
    /// When it was made, Unix ms.
    pub ts: u64,
    /// True for the last checkpoint of a cleanly stopped instance.
    #[serde(default)]
    pub last: bool,
    /// Signer's public key, PASERK `k4.public.…`.
    pub key: String,
    /// Base64 (standard, padded) Ed25519 signature over [`Checkpoint::signed_bytes`].
    pub sig: String,
}

impl Checkpoint {
    /// The bytes the signature covers.
    pub fn signed_bytes(&self) -> Vec<u8> {
        format!(
            "{SIGNING_CONTEXT}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}",
            self.node, self.inst, self.size, self.root, self.head, self.ts, self.last, self.key
        )
        .into_bytes()
    }

    /// Builds and signs a checkpoint.
    #[allow(clippy::too_many_arguments)]
    pub fn sign(
        key: &SecretKey,
        node: &str,
        inst: &str,
        size: u64,
        root: &Hash,
        head: &Hash,
        ts_ms: u64,
        last: bool,
    ) -> Checkpoint {
        let mut c = Checkpoint {
            node: node.to_string(),
            inst: inst.to_string(),
            size,
            root: to_hex(root),
            head: to_hex(head),
            ts: ts_ms,
            last,
            key: key.public_key().to_paserk(),
            sig: String::new(),
        };
        let sig = key.signing_key().sign(&c.signed_bytes());
        c.sig = base64::engine::general_purpose::STANDARD.encode(sig.to_bytes());
        c
    }

    /// Checks the signature against the key the checkpoint names.
    pub fn verify_signature(&self) -> Result<(), &'static str> {
        let key = PublicKey::from_paserk(&self.key).map_err(|_| "key is not a k4.public PASERK")?;
        let raw = base64::engine::general_purpose::STANDARD.decode(&self.sig).map_err(|_| "signature is not base64")?;
        let sig = Signature::from_slice(&raw).map_err(|_| "signature is not 64 bytes")?;
        key.verifying_key().verify(&self.signed_bytes(), &sig).map_err(|_| "signature does not verify")
    }
}

/// Loads the node key from `path`, creating it (mode 0600, parent dirs too) when absent.
pub fn load_or_create_node_key(path: &Path) -> Result<SecretKey, AuditError> {
    let io = |source| AuditError::Io { path: path.to_path_buf(), source };
    match std::fs::read_to_string(path) {
        Ok(_) if super::private::is_open_to_others(path).map_err(io)? => Err(AuditError::NodeKey {
            path: path.to_path_buf(),
            message: format!("other users may read this signing key; `chmod 600 {}`", path.display()),
        }),
        Ok(text) => SecretKey::from_paserk(&text)
            .map_err(|e| AuditError::NodeKey { path: path.to_path_buf(), message: e.to_string() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                super::private::create_dir_all(dir).map_err(io)?;
            }
            let key = SecretKey::generate();
            let mut file = super::private::options().write(true).create_new(true).open(path).map_err(io)?;
            file.write_all(key.to_paserk().as_bytes()).map_err(io)?;
            file.write_all(b"\n").map_err(io)?;
            file.sync_all().map_err(io)?;
            tracing::info!(path = %path.display(), public_key = %key.public_key().to_paserk(),
                "created the audit node key; list its public key under audit.node_public_keys for verifiers");
            Ok(key)
        }
        Err(e) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(key: &SecretKey) -> Checkpoint {
        Checkpoint::sign(key, "gw-1", "abcd", 3, &[1; 32], &[2; 32], 1_700_000_000_000, false)
    }

    #[test]
    fn signature_verifies_and_covers_every_field() {
        let key = SecretKey::from_seed(&[7; 32]);
        let c = sample(&key);
        assert_eq!(c.verify_signature(), Ok(()));
        let tampered: Vec<Checkpoint> = vec![
            Checkpoint { node: "gw-2".into(), ..c.clone() },
            Checkpoint { inst: "abce".into(), ..c.clone() },
            Checkpoint { size: 4, ..c.clone() },
            Checkpoint { root: to_hex(&[3; 32]), ..c.clone() },
            Checkpoint { head: to_hex(&[3; 32]), ..c.clone() },
            Checkpoint { ts: 1, ..c.clone() },
            Checkpoint { last: true, ..c.clone() },
            Checkpoint { key: SecretKey::from_seed(&[8; 32]).public_key().to_paserk(), ..c.clone() },
        ];
        for t in tampered {
            assert_eq!(t.verify_signature(), Err("signature does not verify"), "{t:?}");
        }
        assert!(Checkpoint { sig: "!!".into(), ..c.clone() }.verify_signature().is_err());
        assert!(Checkpoint { key: "k4.public.x".into(), ..c }.verify_signature().is_err());
    }

    #[test]
    fn json_round_trip() {
        let c = sample(&SecretKey::from_seed(&[7; 32]));
        let text = serde_json::to_string(&c).unwrap();
        let back: Checkpoint = serde_json::from_str(&text).unwrap();
        assert_eq!(back, c);
        assert_eq!(back.verify_signature(), Ok(()));
    }

    #[test]
    fn node_key_is_created_once_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/node.key");
        let a = load_or_create_node_key(&path).unwrap();
        let b = load_or_create_node_key(&path).unwrap();
        assert_eq!(a.public_key(), b.public_key());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        std::fs::write(&path, "garbage").unwrap();
        assert!(matches!(load_or_create_node_key(&path), Err(AuditError::NodeKey { .. })));
    }
}
