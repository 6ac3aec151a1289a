//! The one error type of this crate. Every variant says what was wrong with the input
//! (or which state the wallet was in); none of them carries wallet contents, so an
//! error can be shown to anyone.

/// Why a credit operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ZkError {
    /// The encoded message is longer than its cap (checked before any decoding).
    #[error("credit message too large: {len_bytes} bytes, at most {max_bytes}")]
    TooLarge {
        /// Length received (base64 characters or raw bytes, per the cap applied).
        len_bytes: usize,
        /// The cap for this message kind.
        max_bytes: usize,
    },
    /// Not base64url, too short, or the CBOR body does not decode to the expected message.
    #[error("malformed credit message: {0}")]
    Malformed(&'static str),
    /// The version byte is not one this build speaks.
    #[error("unsupported credit wire version {0}")]
    UnsupportedVersion(u8),
    /// The message belongs to another epoch than the issuer key it was checked against.
    #[error("credit epoch {got} is not the current epoch {current}")]
    WrongEpoch {
        /// Epoch the message names.
        got: u32,
        /// Epoch of the key it was checked against.
        current: u32,
    },
    /// A zero-knowledge proof (or the issuer's signature proof) did not verify.
    #[error("credit proof does not verify")]
    InvalidProof,
    /// An amount is zero where it must not be, or does not fit the balance width.
    #[error("credit amount out of range")]
    InvalidAmount,
    /// The wallet's balance does not cover the spend.
    #[error("balance does not cover a spend of {wanted} credits")]
    InsufficientBalance {
        /// Credits the caller asked to spend.
        wanted: u64,
    },
    /// The wallet is not in the state this call needs (e.g. a spend awaiting change).
    #[error("wallet state: {0}")]
    WalletState(&'static str),
    /// A wallet made under other protocol parameters ([`crate::PARAMS_VERSION`], e.g.
    /// another balance width): its credential cannot be spent with this build, nor by a
    /// gateway of this build. Start a new wallet (the gateway issues a credential for the
    /// new parameters even when the key had one of the old this epoch).
    #[error("wallet made for credit parameters {found}, not this build's")]
    OtherParams {
        /// The wallet's parameters version (`2026-11-30` for wallets that did not record it).
        found: String,
    },
    /// A deployment name that cannot be used as part of the domain separator.
    #[error("credit deployment name must be 1..=64 characters of [A-Za-z0-9._-]")]
    BadDeployment,
}

impl From<anonymous_credit_tokens::ErrorCode> for ZkError {
    fn from(e: anonymous_credit_tokens::ErrorCode) -> Self {
        use anonymous_credit_tokens::ErrorCode;
        match e {
            ErrorCode::InvalidAmount => ZkError::InvalidAmount,
            ErrorCode::MalformedRequest => ZkError::Malformed("request"),
            // NullifierReuse is never raised by the library itself (nullifier sets are
            // the caller's); any other code is a failed proof.
            _ => ZkError::InvalidProof,
        }
    }
}
