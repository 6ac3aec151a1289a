//! [`Verifier`]: the shared, thread-safe part of key checking — issuers, revocations,
//! leeway — and the synchronous `verify_now` path the CLI uses.

use std::collections::HashSet;
use std::sync::Arc;

use ed25519_dalek::{Signature, VerifyingKey};

use super::claims::{Claims, Footer};
use super::error::KeyError;
use super::paserk::PublicKey;
use super::paseto;

/// Revoked key ids (`jti`). Immutable once built; replace it whole to update.
#[derive(Debug, Clone, Default)]
pub struct RevocationList {
    ids: HashSet<Box<str>>,
}

impl RevocationList {
    /// A list holding `ids`.
    pub fn new<I, S>(ids: I) -> RevocationList
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        RevocationList { ids: ids.into_iter().map(|s| Box::from(s.as_ref())).collect() }
    }

    /// Whether `jti` is revoked.
    pub fn contains(&self, jti: &str) -> bool {
        self.ids.contains(jti)
    }

    /// Number of revoked ids.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when nothing is revoked.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// One trusted issuer, looked up by the `kid` in a token's footer.
#[derive(Debug)]
struct Issuer {
    kid: Arc<str>,
    key: PublicKey,
}

#[derive(Debug)]
struct Inner {
    issuers: Vec<Issuer>,
    revoked: Arc<RevocationList>,
    leeway_s: i64,
    cache_entries_max: usize,
}

/// Verifies Gatekeeper API keys against configured issuers. Cheap to clone, `Send + Sync`;
/// build one at start, then one [`ShardVerifier`] per shard with [`Verifier::shard`].
#[derive(Debug, Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

/// A token whose structure and issuer check out, waiting for its signature check.
pub(crate) struct Prepared {
    /// `PAE(h, m, f, i)`: what the signature covers.
    pub(crate) signed: Vec<u8>,
    pub(crate) signature: Signature,
    pub(crate) key: VerifyingKey,
    /// The claims JSON, trusted only once the signature verified.
    pub(crate) payload: Vec<u8>,
    /// The issuer's key id (`k4.pid.…`).
    pub(crate) kid: Arc<str>,
}

impl Verifier {
    /// Builds a verifier from parts. `cache_entries_max` is raised to at least 1.
    pub fn new(
        issuers: impl IntoIterator<Item = PublicKey>,
        revoked: RevocationList,
        leeway_s: u64,
        cache_entries_max: usize,
    ) -> Verifier {
        let mut list: Vec<Issuer> = Vec::new();
        for key in issuers {
            if !list.iter().any(|i| i.key == key) {
                list.push(Issuer { kid: Arc::from(key.pid()), key });
            }
        }
        Verifier {
            inner: Arc::new(Inner {
                issuers: list,
                revoked: Arc::new(revoked),
                leeway_s: i64::try_from(leeway_s).unwrap_or(i64::MAX),
                cache_entries_max: cache_entries_max.max(1),
            }),
        }
    }

    /// A copy of this verifier with another revocation list (for `verify_now` callers;
    /// shards take theirs with [`ShardVerifier::set_revoked`]).
    pub fn with_revoked(&self, revoked: Arc<RevocationList>) -> Verifier {
        let issuers = self.inner.issuers.iter().map(|i| Issuer { kid: i.kid.clone(), key: i.key }).collect();
        Verifier {
            inner: Arc::new(Inner {
                issuers,
                revoked,
                leeway_s: self.inner.leeway_s,
                cache_entries_max: self.inner.cache_entries_max,
            }),
        }
    }

    /// The revocation list this verifier was built with.
    pub fn revoked(&self) -> &Arc<RevocationList> {
        &self.inner.revoked
    }

    /// Whether `other` trusts the same issuers with the same leeway and cache size
    /// (revocations aside): a shard can keep its cache across such a reload.
    pub fn same_settings(&self, other: &Verifier) -> bool {
        let (a, b) = (&self.inner, &other.inner);
        a.leeway_s == b.leeway_s
            && a.cache_entries_max == b.cache_entries_max
            && a.issuers.len() == b.issuers.len()
            && a.issuers.iter().zip(&b.issuers).all(|(x, y)| x.kid == y.kid)
    }

    /// Key ids (`k4.pid.…`) of the trusted issuers.
    pub fn issuer_kids(&self) -> impl Iterator<Item = &str> {
        self.inner.issuers.iter().map(|i| &*i.kid)
    }

    /// Verified tokens each shard caches.
    pub fn cache_entries_max(&self) -> usize {
        self.inner.cache_entries_max
    }

    /// Verifies `token` now, synchronously and without a cache: signature, issuer,
    /// `exp`/`nbf` with leeway, and revocation.
    pub fn verify_now(&self, token: &str, now_unix_s: i64) -> Result<Claims, KeyError> {
        let prepared = self.prepare(token)?;
        if !verify_one(&prepared.key, &prepared.signed, &prepared.signature) {
            return Err(KeyError::InvalidSignature);
        }
        self.accept(&prepared, &self.inner.revoked, now_unix_s)
    }

    /// Structure and issuer checks: everything short of the signature.
    pub(crate) fn prepare(&self, token: &str) -> Result<Prepared, KeyError> {
        if token.is_empty() {
            return Err(KeyError::Missing);
        }
        let parsed = paseto::parse(token)?;
        let footer = Footer::from_bytes(&parsed.footer)?;
        let issuer = self.inner.issuers.iter().find(|i| *i.kid == footer.kid).ok_or(KeyError::UnknownIssuer)?;
        Ok(Prepared {
            signed: parsed.signed_bytes(b""),
            signature: parsed.signature,
            key: *issuer.key.verifying_key(),
            payload: parsed.message,
            kid: Arc::clone(&issuer.kid),
        })
    }

    /// Claims checks on a payload whose signature verified.
    pub(crate) fn accept(
        &self,
        prepared: &Prepared,
        revoked: &RevocationList,
        now_unix_s: i64,
    ) -> Result<Claims, KeyError> {
        let mut claims = Claims::from_payload(&prepared.payload)?;
        claims.kid = Some(Arc::clone(&prepared.kid));
        if revoked.contains(&claims.jti) {
            return Err(KeyError::Revoked);
        }
        let (from, until) = self.window(&claims);
        if now_unix_s > until {
            return Err(KeyError::Expired);
        }
        if now_unix_s < from {
            return Err(KeyError::NotYetValid);
        }
        Ok(claims)
    }

    /// The inclusive span of Unix seconds in which `claims` are accepted, leeway included.
    pub(crate) fn window(&self, claims: &Claims) -> (i64, i64) {
        let leeway = self.inner.leeway_s;
        let from = claims.nbf.map_or(i64::MIN, |nbf| nbf.saturating_sub(leeway));
        let until = claims.exp.map_or(i64::MAX, |exp| exp.saturating_add(leeway));
        (from, until)
    }
}

/// One signature check, the same rule the batch fallback uses.
pub(crate) fn verify_one(key: &VerifyingKey, signed: &[u8], signature: &Signature) -> bool {
    key.verify_strict(signed, signature).is_ok()
}

/// A token's claims and footer kid decoded WITHOUT checking anything (for `keys inspect`).
#[derive(Debug, Clone)]
pub struct Unverified {
    /// The payload as JSON (shown even when it is not valid Gatekeeper claims).
    pub payload: serde_json::Value,
    /// The footer's `kid`, when the footer is a JSON object with one.
    pub kid: Option<String>,
}

/// Decodes a token for display; trusts nothing in it.
pub fn decode_unverified(token: &str) -> Result<Unverified, KeyError> {
    let parsed = paseto::parse(token)?;
    let payload =
        serde_json::from_slice(&parsed.message).map_err(|_| KeyError::Malformed("claims are not valid JSON"))?;
    let kid = serde_json::from_slice::<serde_json::Value>(&parsed.footer)
        .ok()
        .and_then(|v| v.get("kid").and_then(|k| k.as_str()).map(str::to_string));
    Ok(Unverified { payload, kid })
}
