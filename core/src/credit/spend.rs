//! A spend through the pipeline: verified before the body parse, paid after it, its
//! change signed when the answer ends.

use std::sync::Arc;
use std::time::Instant;

use gatekeeper_zk::{Issuer, Spend, VerifiedSpend};

use super::error::{from_zk, CreditError};
use super::store::{Credits, StoreError};
use crate::metrics::ShardMetrics;
use crate::wire::openai::{ChatRequest, Usage};

/// A spend whose proof verified; not yet paid (the nullifier is not recorded).
pub struct Verified {
    issuer: Arc<Issuer>,
    spend: Spend,
    amount: u64,
    /// What signing the change needs, so the proof is checked once.
    checked: VerifiedSpend,
}

/// Decodes and verifies the `X-Gatekeeper-Credit` value against the current epoch's key,
/// on the verify pool (`credits.verify_threads`; the shard awaits it). A full pool
/// queue refuses with `VerifyBusy`.
pub async fn verify(credits: &Arc<Credits>, header: &[u8], metrics: &ShardMetrics) -> Result<Verified, CreditError> {
    let c = Arc::clone(credits);
    let header = header.to_vec();
    let checked = credits
        .pool()
        .run(move || {
            let started = Instant::now();
            let result = check(&c, &header);
            (result, started.elapsed())
        })
        .await;
    let result = match checked {
        Ok((result, took)) => {
            metrics.credit_verify.record(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
            result
        }
        Err(_) => Err(CreditError::VerifyBusy),
    };
    result.map_err(|e: CreditError| e.counted(metrics))
}

/// The CPU-heavy half of [`verify`]: decode, epoch, proof.
fn check(credits: &Credits, header: &[u8]) -> Result<Verified, CreditError> {
    let text = std::str::from_utf8(header).map_err(|_| CreditError::Invalid("not base64url"))?;
    let spend = Spend::decode(text).map_err(from_zk)?;
    let issuer = credits.issuer().map_err(|_| CreditError::StoreUnavailable)?;
    let checked = issuer.verify(&spend).map_err(from_zk)?;
    Ok(Verified { issuer, spend, amount: checked.amount, checked })
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
        credits: &Arc<Credits>,
        chat: &ChatRequest<'_>,
        metrics: &ShardMetrics,
    ) -> Result<Spent, CreditError> {
        let charge = charge(chat, credits.max_tokens_default());
        if self.amount < charge {
            return Err(CreditError::Insufficient { amount: self.amount, charge }.counted(metrics));
        }
        credits.reconcile_soon();
        let recorded = credits.record_nullifier(self.spend.epoch(), &self.spend.nullifier()).await;
        if let Err(e) = recorded {
            let err = match e {
                StoreError::Replayed => {
                    // The change this spend got, if any (this node's, or another's through
                    // BH_CREDITS): useless without the wallet's secrets, so it is handed
                    // back to whoever repeats the spend, which lets a wallet killed between
                    // spend and change recover it.
                    let change = credits.change_for(self.spend.epoch(), &self.spend.nullifier()).await;
                    CreditError::Replayed { change }
                }
                StoreError::Epoch => CreditError::EpochExpired,
                StoreError::WriterBusy => {
                    tracing::warn!(
                        "credit spend refused: the credit writer's queue is full (disk slower than the spends)"
                    );
                    CreditError::StoreUnavailable
                }
                StoreError::Io(_) | StoreError::Shared(_) => {
                    tracing::warn!(error = %e, "credit spend refused: its nullifier could not be recorded");
                    CreditError::StoreUnavailable
                }
            };
            return Err(err.counted(metrics));
        }
        metrics.credit_spends.inc();
        Ok(Spent {
            credits: Arc::clone(credits),
            issuer: self.issuer,
            spend: self.spend,
            amount: self.amount,
            charge,
            checked: self.checked,
        })
    }
}

/// A paid spend: the request owes the client its change.
pub struct Spent {
    credits: Arc<Credits>,
    issuer: Arc<Issuer>,
    spend: Spend,
    amount: u64,
    charge: u64,
    checked: VerifiedSpend,
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
    /// (reported tokens, or the whole charge when none were reported). Signed only (the
    /// proof was verified once, in [`verify`]) and made
    /// durable (see [`Credits::remember_change`]) on the verify pool, inline when its
    /// queue is full: change is owed, never shed. `None` only if signing fails, which a
    /// verified spend does not.
    pub async fn change(&self, used: Used) -> Option<String> {
        let used = match used {
            Used::Nothing => 0,
            Used::Answer(Some(u)) => u.prompt_tokens.saturating_add(u.completion_tokens),
            Used::Answer(None) => self.charge,
        };
        let refund = self.amount.saturating_sub(used);
        let (issuer, checked) = (Arc::clone(&self.issuer), self.checked.clone());
        let signed = self
            .credits
            .pool()
            .run_or_inline(move || match issuer.sign_change(&checked, refund, &mut rand::rngs::OsRng) {
                Ok(c) => Some(c.encode()),
                Err(e) => {
                    tracing::error!(error = %e, "credit change could not be signed");
                    None
                }
            })
            .await;
        if let Some(text) = &signed {
            self.credits.remember_change(self.spend.epoch(), &self.spend.nullifier(), text).await;
        }
        signed
    }
}

trait Counted {
    /// Counts a refused spend in `gatekeeper_credit_rejections_total` by its reason.
    fn counted(self, metrics: &ShardMetrics) -> Self;
}

impl Counted for CreditError {
    fn counted(self, metrics: &ShardMetrics) -> Self {
        if let Some(c) = self.reason().and_then(|i| metrics.credit_rejections.get(i)) {
            c.inc();
        }
        self
    }
}
