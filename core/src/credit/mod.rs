//! Step 3, anonymous credits (`gatekeeper-zk`, `zk/SPEC.md`): a key with the `zk` claim
//! obtains one credential per epoch (`POST /v1/credits/issue`) and pays each chat
//! request with a zero-knowledge spend in `X-Gatekeeper-Credit` instead of a bearer key.
//!
//! A spend is checked in two halves around the body parse: [`verify`] (decode, epoch,
//! proof) before it, so a client without a valid spend learns nothing about its body;
//! [`Spent::pay`] (the amount covers `prompt estimate + max_tokens`, the nullifier is
//! durably recorded) after it. From then on the request owes the client its change
//! ([`Spent::change`]): in a response header for whole answers and errors, in a final
//! SSE comment for streams.
//!
//! Without a `credits` section, spends are not accepted and `zk` keys are refused.

mod http;
mod store;

use std::sync::Arc;
use std::time::Instant;

use gatekeeper_zk::{Issuer, Spend, ZkError};

pub use http::{issue, params};
pub use store::{Credits, StoreError};

use crate::keys::Claims;
use crate::metrics::ShardMetrics;
use crate::wire::openai::{ChatRequest, Usage};

/// Response header carrying the change credential of a whole answer or an error.
pub const CHANGE_HEADER: &str = "X-Gatekeeper-Credit-Change";
/// Prefix of the SSE comment line carrying a stream's change credential.
pub const CHANGE_SSE_PREFIX: &str = ": gatekeeper-credit-change ";

/// Metric labels of [`CreditError::reason`], in `ShardMetrics::credit_rejections` order.
pub const REJECTION_REASONS: [&str; 5] = ["invalid", "replayed", "epoch", "insufficient", "store_unavailable"];

/// What pays for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payment {
    /// The bearer key's owner (budgets apply to its key id and tenant).
    Key,
    /// Nobody identified: the gateway runs with `--no-auth`.
    Unauthenticated,
    /// An anonymous credit spend (no key, no tenant: no budget applies).
    Credit,
}

/// Why a request was refused at the credit step. Messages say what was wrong with the
/// spend, never anything about a wallet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CreditError {
    /// A `zk` key, and this gateway has no `credits` section.
    #[error("this key requires anonymous credit spends (zk), which this gateway does not accept")]
    NotAccepted,
    /// A `zk` key used as a bearer key on a chat request.
    #[error("this key pays with anonymous credits: get a credential at POST /v1/credits/issue and send spends in X-Gatekeeper-Credit")]
    CreditsRequired,
    /// Issuance for a key without the `zk` claim.
    #[error("this key has no zk claim; credentials are issued to zk keys only")]
    NotZkKey,
    /// The spend does not decode, or its proof does not verify.
    #[error("the credit spend is invalid: {0}")]
    Invalid(&'static str),
    /// The spend's nullifier was already recorded.
    #[error("this credit spend was already used")]
    Replayed,
    /// The spend belongs to another epoch than the current one.
    #[error("the credit spend is not for the current epoch; get a new credential")]
    EpochExpired,
    /// The spend's amount does not cover the request's charge.
    #[error("the credit spend pays {amount} credits; this request needs {charge} (prompt estimate + max_tokens)")]
    Insufficient {
        /// Credits the spend pays.
        amount: u64,
        /// Credits the request needs.
        charge: u64,
    },
    /// The nullifier (or the issuance record) could not be durably written.
    #[error("the credit store is unavailable; nothing was spent, retry shortly")]
    StoreUnavailable,
    /// The issuance request body is not a valid request.
    #[error("invalid credential request: {0}")]
    BadIssuanceRequest(&'static str),
    /// This key already got a credential this epoch (for another request).
    #[error("this key already obtained its credential for this epoch")]
    AlreadyIssued,
}

impl CreditError {
    /// HTTP status and OpenAI `code`.
    pub fn http_status_and_code(&self) -> (u16, &'static str) {
        match self {
            CreditError::NotAccepted => (403, "credits_not_accepted"),
            CreditError::CreditsRequired => (403, "credits_required"),
            CreditError::NotZkKey => (403, "credits_not_allowed"),
            CreditError::Invalid(_) => (401, "credit_invalid"),
            CreditError::Replayed => (429, "credit_replayed"),
            CreditError::EpochExpired => (401, "credit_epoch_expired"),
            CreditError::Insufficient { .. } => (429, "credit_insufficient"),
            CreditError::StoreUnavailable => (503, "credit_store_unavailable"),
            CreditError::BadIssuanceRequest(_) => (400, "credit_request_invalid"),
            CreditError::AlreadyIssued => (429, "credit_already_issued"),
        }
    }

    /// Index into [`REJECTION_REASONS`] for a refused spend.
    fn reason(&self) -> Option<usize> {
        match self {
            CreditError::Invalid(_) => Some(0),
            CreditError::Replayed => Some(1),
            CreditError::EpochExpired => Some(2),
            CreditError::Insufficient { .. } => Some(3),
            CreditError::StoreUnavailable => Some(4),
            _ => None,
        }
    }

    fn count(self, metrics: &ShardMetrics) -> Self {
        if let Some(i) = self.reason() {
            if let Some(c) = metrics.credit_rejections.get(i) {
                c.inc();
            }
        }
        self
    }
}

fn from_zk(e: ZkError) -> CreditError {
    match e {
        ZkError::WrongEpoch { .. } => CreditError::EpochExpired,
        ZkError::TooLarge { .. } => CreditError::Invalid("too large"),
        ZkError::UnsupportedVersion(_) => CreditError::Invalid("unsupported version"),
        ZkError::Malformed(_) => CreditError::Invalid("malformed"),
        ZkError::InvalidAmount => CreditError::Invalid("amount out of range"),
        _ => CreditError::Invalid("proof does not verify"),
    }
}

/// Decides what pays for a key-authenticated (or `--no-auth`) request.
pub fn check(claims: Option<&Claims>, credits_on: bool) -> Result<Payment, CreditError> {
    match claims {
        Some(c) if c.zk && credits_on => Err(CreditError::CreditsRequired),
        Some(c) if c.zk => Err(CreditError::NotAccepted),
        Some(_) => Ok(Payment::Key),
        None => Ok(Payment::Unauthenticated),
    }
}

/// A spend whose proof verified; not yet paid (the nullifier is not recorded).
pub struct Verified {
    issuer: Arc<Issuer>,
    spend: Spend,
    amount: u64,
}

/// Decodes and verifies the `X-Gatekeeper-Credit` value against the current epoch's key.
pub fn verify(credits: &Credits, header: &[u8], metrics: &ShardMetrics) -> Result<Verified, CreditError> {
    let started = Instant::now();
    let result = (|| {
        let text = std::str::from_utf8(header).map_err(|_| CreditError::Invalid("not base64url"))?;
        let spend = Spend::decode(text).map_err(from_zk)?;
        let issuer = credits.issuer().map_err(|_| CreditError::StoreUnavailable)?;
        let verified = issuer.verify(&spend, &mut rand::rngs::OsRng).map_err(from_zk)?;
        Ok(Verified { issuer, spend, amount: verified.amount })
    })();
    metrics.credit_verify.record(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
    result.map_err(|e: CreditError| e.count(metrics))
}

/// Credits a chat request is charged before it is forwarded: the prompt estimate plus
/// `max_tokens` (or `credits.max_tokens_default` when the request gives none).
pub fn charge(chat: &ChatRequest<'_>, max_tokens_default: u64) -> u64 {
    let route = crate::router::RouteRequest::from_chat(chat);
    route.prompt_tokens.saturating_add(chat.max_tokens.unwrap_or(max_tokens_default))
}

impl Verified {
    /// Pays: checks the amount covers `chat`'s charge, then records the nullifier
    /// durably (fail closed: 503 when it cannot be written, nothing spent).
    pub async fn pay(
        self,
        credits: &Credits,
        chat: &ChatRequest<'_>,
        metrics: &ShardMetrics,
    ) -> Result<Spent, CreditError> {
        let charge = charge(chat, credits.max_tokens_default());
        if self.amount < charge {
            return Err(CreditError::Insufficient { amount: self.amount, charge }.count(metrics));
        }
        credits.record_nullifier(self.spend.epoch(), &self.spend.nullifier()).await.map_err(|e| {
            let err = match e {
                StoreError::Replayed => CreditError::Replayed,
                StoreError::Epoch => CreditError::EpochExpired,
                StoreError::Io(_) | StoreError::Shared(_) => {
                    tracing::warn!(error = %e, "credit spend refused: its nullifier could not be recorded");
                    CreditError::StoreUnavailable
                }
            };
            err.count(metrics)
        })?;
        metrics.credit_spends.inc();
        Ok(Spent { issuer: self.issuer, spend: self.spend, amount: self.amount, charge })
    }
}

/// A paid spend: the request owes the client its change.
pub struct Spent {
    issuer: Arc<Issuer>,
    spend: Spend,
    amount: u64,
    charge: u64,
}

/// What the request used, for the refund.
#[derive(Debug, Clone, Copy)]
pub enum Used {
    /// Nothing reached a provider (an error before forwarding, every attempt failed).
    Nothing,
    /// An answer: its reported usage, or the whole charge when it reported none.
    Answer(Option<Usage>),
}

impl Spent {
    /// The nullifier, hex (for the audit record).
    pub fn nullifier_hex(&self) -> String {
        self.spend.nullifier().to_hex()
    }

    /// Credits the spend paid.
    pub fn amount(&self) -> u64 {
        self.amount
    }

    /// The change credential, base64url: the spend's amount back minus what was used
    /// (reported tokens, or the whole charge when none were reported). `None` only if
    /// signing fails, which a verified spend does not.
    pub fn change(&self, used: Used) -> Option<String> {
        let used = match used {
            Used::Nothing => 0,
            Used::Answer(Some(u)) => u.prompt_tokens.saturating_add(u.completion_tokens),
            Used::Answer(None) => self.charge,
        };
        let refund = self.amount.saturating_sub(used);
        match self.issuer.change(&self.spend, refund, &mut rand::rngs::OsRng) {
            Ok(c) => Some(c.encode()),
            Err(e) => {
                tracing::error!(error = %e, "credit change could not be signed");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zk_keys_need_credits() {
        let plain = Claims { jti: "k".into(), ..Claims::default() };
        assert_eq!(check(Some(&plain), true), Ok(Payment::Key));
        assert_eq!(check(None, false), Ok(Payment::Unauthenticated));
        let zk = Claims { zk: true, ..plain };
        assert_eq!(check(Some(&zk), false), Err(CreditError::NotAccepted));
        assert_eq!(check(Some(&zk), true), Err(CreditError::CreditsRequired));
    }

    #[test]
    fn every_refusal_has_its_own_code() {
        let errors = [
            CreditError::Invalid("x"),
            CreditError::Replayed,
            CreditError::EpochExpired,
            CreditError::Insufficient { amount: 1, charge: 2 },
            CreditError::StoreUnavailable,
        ];
        let codes: std::collections::HashSet<_> = errors.iter().map(|e| e.http_status_and_code().1).collect();
        assert_eq!(codes.len(), errors.len());
        for (i, e) in errors.iter().enumerate() {
            assert_eq!(e.reason(), Some(i));
        }
    }
}
