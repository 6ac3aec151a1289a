//! Offline API keys: PASETO `v4.public` tokens verified against configured issuers.
//!
//! A key is a `v4.public` token (Ed25519 over PASETO's PAE) whose payload is
//! [`Claims`] JSON and whose footer is `{"kid":"k4.pid.…"}`, the PASERK id of the
//! issuer's public key. Nothing here makes a network call.
//!
//! How the parts hand off:
//! - [`SecretKey`] / [`PublicKey`] read and write PASERK (`k4.secret.`, `k4.public.`,
//!   `k4.pid.`); [`issue`] signs [`Claims`] into a token.
//! - [`Verifier`] (`Send + Sync`, one per process) holds the issuers, the revocation
//!   list and the leeway; [`Verifier::verify_now`] is the synchronous check.
//! - [`ShardVerifier`] (one per shard thread, [`ShardVerifier::new`]) adds a bounded cache and micro-batched
//!   signature checks: [`ShardVerifier::verify`] is what the pipeline awaits.
//! - [`KeyError::http_status_and_code`] decides what a refused client sees.
//!
//! ```
//! use gatekeeper::keys::{issue, Claims, Footer, RevocationList, SecretKey, Verifier};
//!
//! let issuer = SecretKey::generate();
//! let claims = Claims { jti: "key-1".into(), models: vec!["gpt-4o*".into()], ..Claims::default() };
//! let token = issue(&issuer, &claims, &Footer::for_key(&issuer.public_key())).unwrap();
//!
//! let verifier = Verifier::new([issuer.public_key()], RevocationList::default(), 30, 1024);
//! let got = verifier.verify_now(&token, 1_700_000_000).unwrap();
//! assert!(got.allows_model("gpt-4o-mini"));
//! ```

mod b64;
mod batch;
mod bearer;
mod claims;
mod error;
pub mod paserk;
pub mod paseto;
mod shard;
pub(crate) mod time;
mod verifier;

#[cfg(test)]
mod tests;

pub use batch::Work;
pub use bearer::{authenticate, bearer_token};
pub use claims::{Budget, Claims, Footer, BUDGET_CLAIM_MAX, JTI_BYTES_MAX};
pub use error::KeyError;
pub use paserk::{PublicKey, SecretKey};
pub use shard::{ShardStats, ShardVerifier, BATCH_MAX, QUEUE_MAX};
pub use verifier::{decode_unverified, RevocationList, Unverified, Verifier};

/// Signs `claims` with `secret` into a `v4.public` token carrying `footer`.
///
/// Fails only when the claims break their own rules (empty `jti`, `quality` outside
/// 0–1, a time outside years 0000–9999).
pub fn issue(secret: &SecretKey, claims: &Claims, footer: &Footer) -> Result<String, KeyError> {
    let payload = claims.to_payload()?;
    Ok(paseto::sign(secret, &payload, &footer.to_bytes(), b""))
}

/// Entry points for the fuzz targets in `fuzz/`; not a stable API.
#[doc(hidden)]
pub mod fuzzing {
    use std::sync::OnceLock;

    use super::{Claims, Footer, PublicKey, RevocationList, SecretKey, Verifier};

    /// A verifier trusting one fixed issuer (seed `[42; 32]`), built once.
    fn verifier() -> &'static Verifier {
        static VERIFIER: OnceLock<Verifier> = OnceLock::new();
        VERIFIER.get_or_init(|| {
            Verifier::new([SecretKey::from_seed(&[42; 32]).public_key()], RevocationList::new(["revoked"]), 30, 16)
        })
    }

    /// Runs every reader of untrusted bytes on `data`: token parsing, footer and claims
    /// decoding, PASERK parsing and full verification against a fixed issuer. Must never
    /// panic.
    pub fn parse_token(data: &[u8]) {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        if let Ok(parsed) = super::paseto::parse(text) {
            let _ = Footer::from_bytes(&parsed.footer);
            let _ = Claims::from_payload(&parsed.message);
        }
        let _ = super::decode_unverified(text);
        let _ = verifier().verify_now(text, 1_700_000_000);
        let _ = PublicKey::from_paserk(text);
        let _ = SecretKey::from_paserk(text);
        let shard = super::ShardVerifier::new(verifier().clone());
        let _ = shard.verify_now(text, 1_700_000_000);
    }
}
