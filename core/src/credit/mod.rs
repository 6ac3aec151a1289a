//! Step 3, anonymous credits: a key with the `zk` claim pays each request with a
//! zero-knowledge credit spend instead of being billed by name.
//!
//! Credit spends are not accepted yet, so this step fails closed: a key that
//! requires them is refused rather than served without a proof. Every other key
//! passes. Issuance, spend verification and nullifiers plug in here.

use crate::keys::Claims;

/// What pays for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payment {
    /// The bearer key's owner (budgets apply to its key id and tenant).
    Key,
    /// Nobody identified: the gateway runs with `--no-auth`.
    Unauthenticated,
}

/// Why a request was refused at the credit step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CreditError {
    /// The key requires credit spends, which this gateway does not verify yet.
    #[error("this key requires anonymous credit spends (zk), which this gateway does not accept yet")]
    NotAccepted,
}

impl CreditError {
    /// HTTP status and OpenAI `code`.
    pub fn http_status_and_code(&self) -> (u16, &'static str) {
        match self {
            CreditError::NotAccepted => (403, "credits_not_accepted"),
        }
    }
}

/// Decides what pays for the request.
pub fn check(claims: Option<&Claims>) -> Result<Payment, CreditError> {
    match claims {
        Some(c) if c.zk => Err(CreditError::NotAccepted),
        Some(_) => Ok(Payment::Key),
        None => Ok(Payment::Unauthenticated),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zk_keys_fail_closed() {
        let plain = Claims { jti: "k".into(), ..Claims::default() };
        assert_eq!(check(Some(&plain)), Ok(Payment::Key));
        assert_eq!(check(None), Ok(Payment::Unauthenticated));
        let zk = Claims { zk: true, ..plain };
        assert_eq!(check(Some(&zk)), Err(CreditError::NotAccepted));
    }
}
