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

mod appender;
pub mod error;
mod http;
pub mod pool;
pub mod spend;
mod store;
pub mod unit;

pub use error::{CreditError, Payment, CHANGE_HEADER, CHANGE_SSE_PREFIX, REJECTION_REASONS};
pub use http::{issue, params};
pub use spend::{charge, verify, Spent, Used, Verified};
pub use store::{Allowance, Credits, StoreError};

use crate::keys::Claims;

/// Decides what pays for a key-authenticated (or `--no-auth`) request.
pub fn check(claims: Option<&Claims>, credits_on: bool) -> Result<Payment, CreditError> {
    match claims {
        Some(c) if c.zk && credits_on => Err(CreditError::CreditsRequired),
        Some(c) if c.zk => Err(CreditError::NotAccepted),
        Some(_) => Ok(Payment::Key),
        None => Ok(Payment::Unauthenticated),
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
            CreditError::Replayed { change: None },
            CreditError::EpochExpired,
            CreditError::Insufficient { amount: 1, charge: 2 },
            CreditError::StoreUnavailable,
            CreditError::VerifyBusy,
        ];
        let codes: std::collections::HashSet<_> = errors.iter().map(|e| e.http_status_and_code().1).collect();
        assert_eq!(codes.len(), errors.len());
        for (i, e) in errors.iter().enumerate() {
            assert_eq!(e.reason(), Some(i));
        }
    }
}
