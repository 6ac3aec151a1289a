//! The `keys` section: trusted issuers, revocations, leeway and cache size, and
//! their conversion into a [`Verifier`].

use serde::{Deserialize, Serialize};

use super::error::{invalid, ConfigError};
use crate::keys::{KeyError, PublicKey, RevocationList, Verifier};

/// Offline key verification.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct KeysConfig {
    /// Trusted issuers; several at once allow rotation.
    #[serde(default)]
    pub issuers: Vec<IssuerConfig>,
    /// Revoked key ids (`jti`).
    #[serde(default)]
    pub revoked: Vec<String>,
    /// Clock skew tolerated on `exp` / `nbf`, seconds.
    #[serde(default = "default_leeway_s")]
    pub leeway_s: u64,
    /// Verified tokens cached per shard.
    #[serde(default = "default_cache_entries_max")]
    pub cache_entries_max: usize,
}

fn default_leeway_s() -> u64 {
    30
}
fn default_cache_entries_max() -> usize {
    65_536
}

/// One trusted issuer.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// PASERK `k4.public.…`.
    pub public_key: String,
}
impl TryFrom<&KeysConfig> for Verifier {
    type Error = KeyError;

    fn try_from(config: &KeysConfig) -> Result<Verifier, KeyError> {
        let issuers =
            config.issuers.iter().map(|i| PublicKey::from_paserk(&i.public_key)).collect::<Result<Vec<_>, _>>()?;
        Ok(Verifier::new(issuers, RevocationList::new(&config.revoked), config.leeway_s, config.cache_entries_max))
    }
}

/// Checks issuer keys and the cache size.
pub(super) fn validate(keys: &KeysConfig) -> Result<(), ConfigError> {
    for (i, iss) in keys.issuers.iter().enumerate() {
        let at = format!("keys.issuers[{i}].public_key");
        if !iss.public_key.starts_with("k4.public.") {
            return Err(invalid(at, "expected a PASERK k4.public.… key (`gatekeeper keys gen-issuer` prints one)"));
        }
        if let Err(e) = PublicKey::from_paserk(&iss.public_key) {
            return Err(invalid(at, format!("{e}; copy the whole line `gatekeeper keys gen-issuer` printed")));
        }
    }
    if keys.cache_entries_max == 0 {
        return Err(invalid("keys.cache_entries_max", "must be at least 1"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{issue, Claims, Footer, SecretKey};

    #[test]
    fn builds_a_verifier_and_refuses_bad_keys() {
        const NOW: i64 = 1_700_000_000;
        let a = SecretKey::from_seed(&[1; 32]);
        let token = |jti: &str| {
            let claims = Claims { jti: jti.into(), ..Claims::default() };
            issue(&a, &claims, &Footer::for_key(&a.public_key())).expect("issue")
        };
        let config = KeysConfig {
            issuers: vec![IssuerConfig { public_key: a.public_key().to_paserk() }],
            revoked: vec!["gone".into()],
            leeway_s: 5,
            cache_entries_max: 8,
        };
        let v = Verifier::try_from(&config).expect("verifier");
        assert_eq!(v.issuer_kids().collect::<Vec<_>>(), [a.public_key().pid()]);
        assert_eq!(v.verify_now(&token("gone"), NOW), Err(KeyError::Revoked));
        assert!(v.verify_now(&token("here"), NOW).is_ok());
        let mut bad = config.clone();
        bad.issuers[0].public_key = "k4.public.nope".into();
        assert!(matches!(Verifier::try_from(&bad), Err(KeyError::InvalidKeyMaterial(_))));
    }
}
