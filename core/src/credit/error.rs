//! What step 3 refuses with, and the names the other steps and the metrics share.

use gatekeeper_zk::ZkError;

/// Response header carrying the change credential of a whole answer or an error.
pub const CHANGE_HEADER: &str = "X-Gatekeeper-Credit-Change";
/// Prefix of the SSE comment line carrying a stream's change credential.
pub const CHANGE_SSE_PREFIX: &str = ": gatekeeper-credit-change ";

/// Metric labels of [`CreditError::reason`], in `ShardMetrics::credit_rejections` order.
pub const REJECTION_REASONS: [&str; 6] =
    ["invalid", "replayed", "epoch", "insufficient", "store_unavailable", "verify_busy"];

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
    /// The spend's nullifier was already recorded. `change`: the change that spend got on
    /// this node, handed back (`X-Gatekeeper-Credit-Change`) so a wallet that lost it can
    /// recover; it is useless to anyone without the wallet's secrets.
    #[error("this credit spend was already used")]
    Replayed {
        /// The change credential recorded for the spend, if any.
        change: Option<String>,
    },
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
    /// The verify pool's queue is full (`credits.verify_queue_depth`): the spend was not
    /// checked, nothing was spent.
    #[error("too many credit spends are waiting to be verified; nothing was spent, retry shortly")]
    VerifyBusy,
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
            CreditError::Replayed { .. } => (429, "credit_replayed"),
            CreditError::EpochExpired => (401, "credit_epoch_expired"),
            CreditError::Insufficient { .. } => (429, "credit_insufficient"),
            CreditError::StoreUnavailable => (503, "credit_store_unavailable"),
            CreditError::VerifyBusy => (503, "credit_verify_busy"),
            CreditError::BadIssuanceRequest(_) => (400, "credit_request_invalid"),
            CreditError::AlreadyIssued => (429, "credit_already_issued"),
        }
    }

    /// Index into [`REJECTION_REASONS`] for a refused spend.
    pub(super) fn reason(&self) -> Option<usize> {
        match self {
            CreditError::Invalid(_) => Some(0),
            CreditError::Replayed { .. } => Some(1),
            CreditError::EpochExpired => Some(2),
            CreditError::Insufficient { .. } => Some(3),
            CreditError::StoreUnavailable => Some(4),
            CreditError::VerifyBusy => Some(5),
            _ => None,
        }
    }
}

pub(super) fn from_zk(e: ZkError) -> CreditError {
    match e {
        ZkError::WrongEpoch { .. } => CreditError::EpochExpired,
        ZkError::TooLarge { .. } => CreditError::Invalid("too large"),
        ZkError::UnsupportedVersion(_) => CreditError::Invalid("unsupported version"),
        ZkError::Malformed(_) => CreditError::Invalid("malformed"),
        ZkError::InvalidAmount => CreditError::Invalid("amount out of range"),
        _ => CreditError::Invalid("proof does not verify"),
    }
}
