//! The issuer side: the deployment's public parameters, per-epoch keys derived from one
//! seed, issuance, and spend verification with change.

use std::sync::Arc;

use anonymous_credit_tokens as act;
use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRngCore, SeedableRng};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::ZkError;
use crate::limits::{BALANCE_BITS, CREDITS_MAX};
use crate::message::{credits_to_scalar, epoch_ctx, scalar_to_credits};
use crate::message::{Change, IssuanceRequest, IssuanceResponse, Nullifier, PublicKey, Spend};

/// Version date in the draft's domain separator. Changing the construction or its
/// parameters means a new date, hence new generators (draft §3.1).
pub const PARAMS_VERSION: &str = "2026-11-30";

/// Longest deployment name accepted in the domain separator.
pub const DEPLOYMENT_CHARS_MAX: usize = 64;

/// The deployment's public parameters: generators H1..H4 derived from the domain
/// separator `ACT-v1:gatekeeper:credits:<deployment>:<PARAMS_VERSION>`. Gateways and
/// clients of one deployment must use the same name. Building one costs about a
/// millisecond (four precomputed tables), so build it once and share it.
#[derive(Clone)]
pub struct Domain {
    name: String,
    pub(crate) params: Arc<act::Params>,
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
        Ok(Self { name: deployment.to_owned(), params: Arc::new(params) })
    }

    /// The deployment name.
    pub fn name(&self) -> &str {
        &self.name
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
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer").field("domain", &self.domain).field("epoch", &self.epoch).finish()
    }
}

/// A spend whose proof verified against the epoch key. Carries the zero-refund change so
/// a caller that refunds nothing pays for one verification only.
#[derive(Debug, Clone)]
pub struct VerifiedSpend {
    /// The serial to record against double spending.
    pub nullifier: Nullifier,
    /// Credits paid.
    pub amount: u64,
    /// Change for `balance − amount` (refund 0).
    pub change: Change,
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
        let key = act::PrivateKey::random(&mut rng);
        Self { domain: domain.clone(), epoch, key }
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

    /// Verifies a spend (epoch, context, proof) and signs its change with no refund.
    /// Does not look at nullifiers: recording them is the caller's job.
    pub fn verify(&self, spend: &Spend, rng: &mut impl CryptoRngCore) -> Result<VerifiedSpend, ZkError> {
        let change = self.change(spend, 0, rng)?;
        Ok(VerifiedSpend { nullifier: spend.nullifier(), amount: spend.amount()?, change })
    }

    /// Verifies a spend and signs its change with `refund` credits handed back
    /// (0 ≤ refund ≤ amount). The library verifies and signs in one step, so a caller
    /// that already called [`Issuer::verify`] pays for a second verification here.
    pub fn change(&self, spend: &Spend, refund: u64, rng: &mut impl CryptoRngCore) -> Result<Change, ZkError> {
        self.check_epoch(spend.epoch)?;
        if spend.inner.context() != epoch_ctx(self.epoch) {
            return Err(ZkError::InvalidProof);
        }
        let amount = scalar_to_credits(&spend.inner.charge())?;
        if refund > amount {
            return Err(ZkError::InvalidAmount);
        }
        let t = credits_to_scalar(refund)?;
        let inner = self.key.refund::<BALANCE_BITS>(&self.domain.params, &spend.inner, t, rng)?;
        Ok(Change { epoch: self.epoch, inner })
    }
}
