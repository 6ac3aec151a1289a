//! PASERK serialisation of v4 keys: `k4.secret.`, `k4.public.` and the key id `k4.pid.`.

use blake2::digest::consts::U33;
use blake2::{Blake2b, Digest as _};
use ed25519_dalek::{SigningKey, VerifyingKey, KEYPAIR_LENGTH, PUBLIC_KEY_LENGTH, SECRET_KEY_LENGTH};
use zeroize::{Zeroize as _, Zeroizing};

use super::b64::{b64_decode, b64_encode};
use super::error::KeyError;

/// Prefix of a serialised v4 secret key.
pub const SECRET_PREFIX: &str = "k4.secret.";
/// Prefix of a serialised v4 public key.
pub const PUBLIC_PREFIX: &str = "k4.public.";
/// Prefix of a v4 public key id.
pub const PID_PREFIX: &str = "k4.pid.";

/// BLAKE2b with a 264-bit (33-byte) output, as PASERK v4 ids use.
type Blake2b264 = Blake2b<U33>;

/// Serialises 32 raw public-key bytes as `k4.public.…` (no curve check: vectors include
/// keys that are valid encodings of weak points).
pub fn public_bytes_to_paserk(bytes: &[u8]) -> Result<String, KeyError> {
    if bytes.len() != PUBLIC_KEY_LENGTH {
        return Err(KeyError::InvalidKeyMaterial("a v4 public key is 32 bytes"));
    }
    Ok(format!("{PUBLIC_PREFIX}{}", b64_encode(bytes)))
}

/// The PASERK id `k4.pid.…` of 32 raw public-key bytes: `h || b64(BLAKE2b-264(h || paserk))`.
pub fn pid_of_public_bytes(bytes: &[u8]) -> Result<String, KeyError> {
    let paserk = public_bytes_to_paserk(bytes)?;
    let mut hasher = Blake2b264::new();
    hasher.update(PID_PREFIX.as_bytes());
    hasher.update(paserk.as_bytes());
    Ok(format!("{PID_PREFIX}{}", b64_encode(&hasher.finalize())))
}

/// An issuer's Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("PublicKey").field(&self.to_paserk()).finish()
    }
}

impl PublicKey {
    /// From 32 raw bytes; refuses encodings that are not curve points and weak
    /// (small-order) keys, under which signatures prove nothing.
    pub fn from_bytes(bytes: &[u8]) -> Result<PublicKey, KeyError> {
        let array: &[u8; PUBLIC_KEY_LENGTH] =
            bytes.try_into().map_err(|_| KeyError::InvalidKeyMaterial("a v4 public key is 32 bytes"))?;
        let key = VerifyingKey::from_bytes(array).map_err(|_| KeyError::InvalidKeyMaterial("not an Ed25519 point"))?;
        if key.is_weak() {
            return Err(KeyError::InvalidKeyMaterial("weak (small-order) Ed25519 key"));
        }
        Ok(PublicKey(key))
    }

    /// Parses `k4.public.…`.
    pub fn from_paserk(text: &str) -> Result<PublicKey, KeyError> {
        let body =
            text.trim().strip_prefix(PUBLIC_PREFIX).ok_or(KeyError::InvalidKeyMaterial("expected k4.public.…"))?;
        let bytes = b64_decode(body).map_err(|_| KeyError::InvalidKeyMaterial("bad base64 in k4.public key"))?;
        PublicKey::from_bytes(&bytes)
    }

    /// The `k4.public.…` form.
    pub fn to_paserk(&self) -> String {
        format!("{PUBLIC_PREFIX}{}", b64_encode(self.0.as_bytes()))
    }

    /// The key id `k4.pid.…` tokens carry in their footer.
    pub fn pid(&self) -> String {
        let mut hasher = Blake2b264::new();
        hasher.update(PID_PREFIX.as_bytes());
        hasher.update(self.to_paserk().as_bytes());
        format!("{PID_PREFIX}{}", b64_encode(&hasher.finalize()))
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; PUBLIC_KEY_LENGTH] {
        self.0.as_bytes()
    }

    pub(crate) fn verifying_key(&self) -> &VerifyingKey {
        &self.0
    }
}

/// An issuer's Ed25519 signing key. Zeroized on drop; `Debug` shows only its key id.
pub struct SecretKey(SigningKey);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretKey").field("kid", &self.public_key().pid()).field("secret", &"<redacted>").finish()
    }
}

impl SecretKey {
    /// A fresh key from the operating system's CSPRNG.
    pub fn generate() -> SecretKey {
        let mut seed = Zeroizing::new([0u8; SECRET_KEY_LENGTH]);
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, seed.as_mut());
        SecretKey::from_seed(&seed)
    }

    /// From a 32-byte Ed25519 seed.
    pub fn from_seed(seed: &[u8; SECRET_KEY_LENGTH]) -> SecretKey {
        SecretKey(SigningKey::from_bytes(seed))
    }

    /// From the 64-byte `seed || public` form PASERK uses; the public half must match.
    pub fn from_keypair_bytes(bytes: &[u8]) -> Result<SecretKey, KeyError> {
        let array: &[u8; KEYPAIR_LENGTH] =
            bytes.try_into().map_err(|_| KeyError::InvalidKeyMaterial("a v4 secret key is 64 bytes"))?;
        SigningKey::from_keypair_bytes(array)
            .map(SecretKey)
            .map_err(|_| KeyError::InvalidKeyMaterial("secret key's public half does not match its seed"))
    }

    /// Parses `k4.secret.…`.
    pub fn from_paserk(text: &str) -> Result<SecretKey, KeyError> {
        let body =
            text.trim().strip_prefix(SECRET_PREFIX).ok_or(KeyError::InvalidKeyMaterial("expected k4.secret.…"))?;
        let mut bytes = b64_decode(body).map_err(|_| KeyError::InvalidKeyMaterial("bad base64 in k4.secret key"))?;
        let key = SecretKey::from_keypair_bytes(&bytes);
        bytes.zeroize();
        key
    }

    /// The `k4.secret.…` form, zeroized when dropped.
    pub fn to_paserk(&self) -> Zeroizing<String> {
        let bytes = Zeroizing::new(self.0.to_keypair_bytes());
        Zeroizing::new(format!("{SECRET_PREFIX}{}", b64_encode(bytes.as_ref())))
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    pub(crate) fn signing_key(&self) -> &SigningKey {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn vectors(file: &str) -> Vec<Value> {
        let path = format!("{}/tests/data/paseto/{file}", env!("CARGO_MANIFEST_DIR"));
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        doc["tests"].as_array().unwrap().clone()
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn k4_pid_vectors() {
        let tests = vectors("k4.pid.json");
        for t in &tests {
            let name = t["name"].as_str().unwrap();
            let got = pid_of_public_bytes(&hex(t["key"].as_str().unwrap()));
            if t["expect-fail"].as_bool().unwrap() {
                assert!(got.is_err(), "{name}");
            } else {
                assert_eq!(got.unwrap(), t["paserk"].as_str().unwrap(), "{name}");
            }
        }
        assert_eq!(tests.len(), 5);
    }

    #[test]
    fn k4_public_vectors() {
        for t in &vectors("k4.public.json") {
            let name = t["name"].as_str().unwrap();
            let key = hex(t["key"].as_str().unwrap());
            let got = public_bytes_to_paserk(&key);
            if t["expect-fail"].as_bool().unwrap() {
                assert!(got.is_err(), "{name}");
                assert!(PublicKey::from_bytes(&key).is_err(), "{name}");
                continue;
            }
            let paserk = t["paserk"].as_str().unwrap();
            assert_eq!(got.unwrap(), paserk, "{name}");
            // Decoding: every vector key that is a strong point round-trips.
            if let Ok(pk) = PublicKey::from_bytes(&key) {
                assert_eq!(PublicKey::from_paserk(paserk).unwrap(), pk, "{name}");
                assert_eq!(pk.to_paserk(), paserk, "{name}");
                assert_eq!(pk.pid(), pid_of_public_bytes(&key).unwrap(), "{name}");
            }
        }
    }

    #[test]
    fn k4_secret_vectors() {
        for t in &vectors("k4.secret.json") {
            let name = t["name"].as_str().unwrap();
            let key = hex(t["key"].as_str().unwrap());
            let got = SecretKey::from_keypair_bytes(&key);
            if t["expect-fail"].as_bool().unwrap() {
                assert!(got.is_err(), "{name}");
                continue;
            }
            let sk = got.unwrap();
            let paserk = t["paserk"].as_str().unwrap();
            assert_eq!(sk.to_paserk().as_str(), paserk, "{name}");
            let seed: [u8; 32] = hex(t["secret-key-seed"].as_str().unwrap()).try_into().unwrap();
            assert_eq!(SecretKey::from_seed(&seed).to_paserk().as_str(), paserk, "{name}");
            let back = SecretKey::from_paserk(paserk).unwrap();
            assert_eq!(back.public_key().as_bytes().as_slice(), hex(t["public-key"].as_str().unwrap()), "{name}");
        }
    }

    #[test]
    fn wrong_version_and_mismatched_halves_are_refused() {
        let sk = SecretKey::from_seed(&[1; 32]);
        let text = sk.to_paserk();
        assert!(SecretKey::from_paserk(&text.replace("k4.", "k3.")).is_err());
        assert!(PublicKey::from_paserk(&sk.public_key().to_paserk().replace("k4.", "k2.")).is_err());
        assert!(PublicKey::from_paserk(&text).is_err());
        let mut bytes = sk.0.to_keypair_bytes();
        bytes[63] ^= 1;
        assert!(SecretKey::from_keypair_bytes(&bytes).is_err());
        assert!(PublicKey::from_paserk("k4.public.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").is_err(), "weak key");
    }

    #[test]
    fn debug_redacts_the_secret() {
        let sk = SecretKey::from_seed(&[3; 32]);
        let debug = format!("{sk:?}");
        let secret = sk.to_paserk();
        let body = secret.strip_prefix(SECRET_PREFIX).unwrap();
        assert!(!debug.contains(&body[..20]), "{debug}");
        assert!(debug.contains("redacted") && debug.contains("k4.pid."), "{debug}");
    }
}
