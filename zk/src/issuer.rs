//! The issuer side: the deployment's public parameters, per-epoch keys derived from one
//! seed, issuance, and spend verification with change.

use std::sync::Arc;

use anonymous_credit_tokens as act;
use curve25519_dalek::Scalar;
use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRngCore, SeedableRng};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::ZkError;
use crate::limits::{BALANCE_BITS, CREDITS_MAX};
use crate::message::{credits_to_scalar, epoch_ctx};
use crate::message::{Change, IssuanceRequest, IssuanceResponse, Nullifier, PublicKey, Spend};
use crate::verifier::{self, Checked, Generators, IssuerSecret};

/// Version in the draft's domain separator. Changing the construction or its parameters
/// (such as [`crate::BALANCE_BITS`]) means a new version, hence new generators (draft
/// §3.1): credentials, spends and wallets of another version do not verify. History:
/// `2026-11-30` (L = 32), `2026-11-30.l24` (L = 24).
pub const PARAMS_VERSION: &str = "2026-11-30.l24";

/// Longest deployment name accepted in the domain separator.
pub const DEPLOYMENT_CHARS_MAX: usize = 64;

/// The deployment's public parameters: generators H1..H4 derived from the domain
/// separator `ACT-v1:gatekeeper:credits:<deployment>:<PARAMS_VERSION>`. Gateways and
/// clients of one deployment must use the same name. Building one costs a few
/// milliseconds (the crate's four tables and the verifier's), so build it once and share it.
#[derive(Clone)]
pub struct Domain {
    name: String,
    pub(crate) params: Arc<act::Params>,
    pub(crate) gens: Arc<Generators>,
}

impl std::fmt::Debug for Domain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Domain").field("name", &self.name).finish()
    }
}

impl Domain {
    /// Parameters for `deployment` (1..=64 characters of `[A-Za-z0-9._-]`).
    pub fn new(deployment: &str) -> Result<Self, ZkError> {
        let ok = !deployment.is_empty()
            && deployment.len() <= DEPLOYMENT_CHARS_MAX
            && deployment.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !ok {
            return Err(ZkError::BadDeployment);
        }
        // The library asserts that no component contains ':'; the check above rules it out.
        let params = act::Params::new("gatekeeper", "credits", deployment, PARAMS_VERSION);
        let gens =
            Generators::new("gatekeeper", "credits", deployment, PARAMS_VERSION).ok_or(ZkError::BadDeployment)?;
        Ok(Self { name: deployment.to_owned(), params: Arc::new(params), gens: Arc::new(gens) })
    }

    /// The deployment name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The draft crate's parameters (for tests and benchmarks against the crate).
    pub fn params(&self) -> &act::Params {
        &self.params
    }

    /// The verifier's generators and tables ([`crate::verifier`]).
    pub fn generators(&self) -> &Generators {
        &self.gens
    }
}

/// The secret every epoch key is derived from. Debug output is redacted and the bytes
/// are wiped on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct IssuerSeed([u8; 32]);

impl std::fmt::Debug for IssuerSeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IssuerSeed(<redacted>)")
    }
}

impl IssuerSeed {
    /// A seed from 32 secret bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// A fresh random seed.
    pub fn random(rng: &mut impl CryptoRngCore) -> Self {
        let mut b = [0u8; 32];
        rng.fill_bytes(&mut b);
        Self(b)
    }

    /// The seed's bytes (to persist it).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// Epoch lengths the gateway supports; an epoch is `unix_seconds / seconds()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpochLength {
    /// One hour.
    Hour,
    /// One day (UTC).
    Day,
}

impl EpochLength {
    /// Length in seconds.
    pub const fn seconds(self) -> u64 {
        match self {
            EpochLength::Hour => 3_600,
            EpochLength::Day => 86_400,
        }
    }

    /// The epoch containing `unix_s` (saturating at `u32::MAX`, the year ~492,000 for days).
    pub fn epoch_at(self, unix_s: u64) -> u32 {
        u32::try_from(unix_s / self.seconds()).unwrap_or(u32::MAX)
    }

    /// Unix seconds at which `epoch` starts.
    pub fn start_s(self, epoch: u32) -> u64 {
        u64::from(epoch).saturating_mul(self.seconds())
    }
}

/// One epoch's issuer: signs credentials for the epoch and verifies its spends.
/// The key is derived, so every node with the same seed derives the same key and the
/// key for the next epoch exists before the epoch starts (rotation needs no exchange).
pub struct Issuer {
    domain: Domain,
    epoch: u32,
    key: act::PrivateKey,
    secret: IssuerSecret,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer").field("domain", &self.domain).field("epoch", &self.epoch).finish()
    }
}

/// A spend whose proof verified against the epoch key, with what signing its change
/// needs ([`Issuer::sign_change`]), so the proof is never checked twice.
#[derive(Debug, Clone)]
pub struct VerifiedSpend {
    /// The serial to record against double spending.
    pub nullifier: Nullifier,
    /// Credits paid.
    pub amount: u64,
    epoch: u32,
    checked: Checked,
}

impl Issuer {
    /// The key for `epoch`: a ChaCha20 stream keyed by
    /// `BLAKE3-derive_key("gatekeeper-zk v1 issuer epoch key", seed ‖ epoch_be)` feeds the
    /// draft's KeyGen.
    pub fn derive(domain: &Domain, seed: &IssuerSeed, epoch: u32) -> Self {
        let mut material = [0u8; 36];
        material[..32].copy_from_slice(&seed.0);
        material[32..].copy_from_slice(&epoch.to_be_bytes());
        let mut key_seed = blake3::derive_key("gatekeeper-zk v1 issuer epoch key", &material);
        material.zeroize();
        let mut rng = ChaCha20Rng::from_seed(key_seed);
        key_seed.zeroize();
        // The crate's KeyGen is `x = Scalar::random(rng)`; drawing the same scalar from a
        // copy of the stream gives the verifier `x` without a fallible decode (the test
        // `the_secret_scalar_is_the_keys` checks it against the key's CBOR and `W`).
        let mut copy = rng.clone();
        let mut x = Scalar::random(&mut copy);
        let secret = IssuerSecret::from_scalar(&x);
        x.zeroize();
        let key = act::PrivateKey::random(&mut rng);
        Self { domain: domain.clone(), epoch, key, secret }
    }

    /// The epoch this key signs for.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The deployment parameters.
    pub fn domain(&self) -> &Domain {
        &self.domain
    }

    /// The public key clients need for this epoch.
    pub fn public_key(&self) -> PublicKey {
        PublicKey { epoch: self.epoch, inner: self.key.public().clone() }
    }

    fn check_epoch(&self, got: u32) -> Result<(), ZkError> {
        if got == self.epoch {
            Ok(())
        } else {
            Err(ZkError::WrongEpoch { got, current: self.epoch })
        }
    }

    /// Blindly signs a credential of `credits` (1..=[`CREDITS_MAX`]) over the request's
    /// hidden serial, after checking the request's proof of knowledge.
    pub fn issue(
        &self,
        request: &IssuanceRequest,
        credits: u64,
        rng: &mut impl CryptoRngCore,
    ) -> Result<IssuanceResponse, ZkError> {
        self.check_epoch(request.epoch)?;
        if credits == 0 || credits > CREDITS_MAX {
            return Err(ZkError::InvalidAmount);
        }
        let c = credits_to_scalar(credits)?;
        let inner =
            self.key.issue::<BALANCE_BITS>(&self.domain.params, &request.inner, c, epoch_ctx(self.epoch), rng)?;
        Ok(IssuanceResponse { epoch: self.epoch, inner })
    }

    /// Verifies a spend (epoch, context, charge width, proof) once. Does not look at
    /// nullifiers: recording them is the caller's job. The change is signed later with
    /// [`Issuer::sign_change`], without verifying again.
    pub fn verify(&self, spend: &Spend) -> Result<VerifiedSpend, ZkError> {
        self.check_epoch(spend.epoch)?;
        let fields = spend.fields()?;
        if fields.context() != epoch_ctx(self.epoch) {
            return Err(ZkError::InvalidProof);
        }
        let amount = spend.amount()?;
        let checked = verifier::verify::<BALANCE_BITS>(&self.domain.gens, &self.secret, &fields)?;
        Ok(VerifiedSpend { nullifier: spend.nullifier(), amount, epoch: self.epoch, checked })
    }

    /// Signs the change of a spend this key verified, with `refund` credits handed back
    /// (0 ≤ refund ≤ amount): a credential on `balance − amount + refund`.
    pub fn sign_change(
        &self,
        verified: &VerifiedSpend,
        refund: u64,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Change, ZkError> {
        self.check_epoch(verified.epoch)?;
        if refund > verified.amount {
            return Err(ZkError::InvalidAmount);
        }
        let t = credits_to_scalar(refund)?;
        let body = verified.checked.sign_change::<BALANCE_BITS>(&self.domain.gens, &self.secret, t, rng)?;
        let inner = act::Refund::from_cbor(&body).map_err(|_| ZkError::Malformed("cbor"))?;
        Ok(Change { epoch: self.epoch, inner })
    }

    /// Verifies a spend and signs its change in one step ([`Issuer::verify`] then
    /// [`Issuer::sign_change`]).
    pub fn change(&self, spend: &Spend, refund: u64, rng: &mut impl CryptoRngCore) -> Result<Change, ZkError> {
        let verified = self.verify(spend)?;
        self.sign_change(&verified, refund, rng)
    }

    /// The draft crate's own verify-and-sign (`PrivateKey::refund`), kept as the
    /// reference the fast path is tested and measured against.
    pub fn change_reference(
        &self,
        spend: &Spend,
        refund: u64,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Change, ZkError> {
        self.check_epoch(spend.epoch)?;
        let proof = spend.proof()?;
        if proof.context() != epoch_ctx(self.epoch) {
            return Err(ZkError::InvalidProof);
        }
        let amount = spend.amount()?;
        if refund > amount {
            return Err(ZkError::InvalidAmount);
        }
        let t = credits_to_scalar(refund)?;
        let inner = self.key.refund::<BALANCE_BITS>(&self.domain.params, &proof, t, rng)?;
        Ok(Change { epoch: self.epoch, inner })
    }

    /// The epoch key's secret, for the low-level [`crate::verifier`] functions.
    pub fn secret(&self) -> &IssuerSecret {
        &self.secret
    }

    /// The crate's form of the epoch key (for tests and benchmarks against the crate).
    pub fn private_key(&self) -> &act::PrivateKey {
        &self.key
    }
}
