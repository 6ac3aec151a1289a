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
/// `max_tokens` (or `credits.max_tokens_default` when the request gives none), in tokens,
/// rounded up to whole credits of `tokens_per_credit` tokens ([`super::unit`]).
pub fn charge(chat: &ChatRequest<'_>, max_tokens_default: u64, tokens_per_credit: u64) -> u64 {
    super::unit::credits_for(charge_tokens(chat, max_tokens_default), tokens_per_credit)
}

/// Tokens a chat request reserves: the prompt estimate plus `max_tokens` (or
/// `max_tokens_default`).
fn charge_tokens(chat: &ChatRequest<'_>, max_tokens_default: u64) -> u64 {
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
        let charge = charge(chat, credits.max_tokens_default(), credits.tokens_per_credit());
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
    /// Credits handed back for `used`: the amount paid less the use in whole credits.
    fn refund(&self, used: Used) -> u64 {
        refund_of(self.amount, self.charge, used, self.credits.tokens_per_credit())
    }

    /// The nullifier, hex (for the audit record).
    pub fn nullifier_hex(&self) -> String {
        self.spend.nullifier().to_hex()
    }

    /// Credits the spend paid.
    pub fn amount(&self) -> u64 {
        self.amount
    }

    /// The change credential, base64url: the spend's amount back minus what was used
    /// (reported tokens rounded up to whole credits, or the whole charge when none were
    /// reported; never below 0, [`super::unit::refund`]). Signed only (the
    /// proof was verified once, in [`verify`]) and made
    /// durable (see [`Credits::remember_change`]) on the verify pool, inline when its
    /// queue is full: change is owed, never shed. `None` only if signing fails, which a
    /// verified spend does not.
    pub async fn change(&self, used: Used) -> Option<String> {
        let refund = self.refund(used);
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

/// The refund of a spend of `amount` credits charged `charge` credits, after `used`, at
/// `tokens_per_credit` tokens a credit.
fn refund_of(amount: u64, charge: u64, used: Used, tokens_per_credit: u64) -> u64 {
    match used {
        Used::Nothing => amount,
        Used::Answer(Some(u)) => {
            super::unit::refund(amount, u.prompt_tokens.saturating_add(u.completion_tokens), tokens_per_credit)
        }
        // No usage reported: the whole charge (already in credits) is kept.
        Used::Answer(None) => amount.saturating_sub(charge),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::openai::parse_chat;

    fn usage(prompt: u64, completion: u64) -> Used {
        Used::Answer(Some(Usage { prompt_tokens: prompt, completion_tokens: completion }))
    }

    #[test]
    fn the_charge_is_the_reserved_tokens_in_whole_credits() {
        let body = br#"{"model":"m","max_tokens":1000,"messages":[{"role":"user","content":"hi"}]}"#;
        let chat = parse_chat(body).expect("chat");
        let tokens = charge_tokens(&chat, 4_096);
        let prompt = tokens - 1_000;
        assert!(prompt > 0, "the prompt estimate counts");
        assert_eq!(charge(&chat, 4_096, 1), tokens, "unit 1: credits are tokens");
        assert_eq!(charge(&chat, 4_096, 1_000), 2, "1,000 + {prompt} tokens round up to 2 credits");
        assert_eq!(charge(&chat, 4_096, tokens), 1, "exactly one unit");
        assert_eq!(charge(&chat, 4_096, tokens - 1), 2, "one token over a unit");
        assert_eq!(charge(&chat, 4_096, 1_000_000), 1);
        // No max_tokens: the default is reserved.
        let body = br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
        let chat = parse_chat(body).expect("chat");
        assert_eq!(charge_tokens(&chat, 4_096), prompt + 4_096);
        assert_eq!(charge(&chat, 4_096, 1_000), 5);
    }

    #[test]
    fn the_refund_is_the_paid_amount_less_the_use_in_whole_credits() {
        // Unit 1: as before the unit existed.
        assert_eq!(refund_of(5_000, 4_000, Used::Nothing, 1), 5_000);
        assert_eq!(refund_of(5_000, 4_000, usage(0, 0), 1), 5_000, "zero used");
        assert_eq!(refund_of(5_000, 4_000, usage(100, 900), 1), 4_000);
        assert_eq!(refund_of(5_000, 4_000, usage(100, 9_000), 1), 0, "used more than reserved");
        assert_eq!(refund_of(5_000, 4_000, Used::Answer(None), 1), 1_000, "no usage: the charge is kept");
        // Unit 1,000: 5 credits paid, 4 charged.
        assert_eq!(refund_of(5, 4, Used::Nothing, 1_000), 5);
        assert_eq!(refund_of(5, 4, usage(0, 0), 1_000), 5, "zero used");
        assert_eq!(refund_of(5, 4, usage(1_000, 1_000), 1_000), 3, "exactly divisible");
        assert_eq!(refund_of(5, 4, usage(1_000, 1_001), 1_000), 2, "one token more costs a credit");
        assert_eq!(refund_of(5, 4, usage(1, 0), 1_000), 4);
        assert_eq!(refund_of(5, 4, usage(3_000, 3_000), 1_000), 0, "used more than reserved");
        assert_eq!(refund_of(5, 4, usage(u64::MAX, u64::MAX), 1_000), 0);
        assert_eq!(refund_of(5, 4, Used::Answer(None), 1_000), 1);
        assert_eq!(refund_of(3, 4, Used::Answer(None), 1_000), 0, "never negative");
    }
}
