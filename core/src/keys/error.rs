//! The one error type of the keys module and how it maps onto the wire.

/// Why a key was refused (or key material could not be used).
///
/// [`KeyError::http_status_and_code`] is the one place that decides what a client sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The request carried no bearer token.
    #[error("no API key was provided")]
    Missing,
    /// The token is not a well-formed Gatekeeper `v4.public` token: wrong header, bad
    /// base64, too short or too long, trailing data, or claims that are not valid JSON.
    #[error("malformed API key: {0}")]
    Malformed(&'static str),
    /// The Ed25519 signature does not verify under the issuer named in the footer.
    #[error("API key signature does not verify")]
    InvalidSignature,
    /// `exp` (plus the configured leeway) is in the past.
    #[error("API key has expired")]
    Expired,
    /// `nbf` (minus the configured leeway) is in the future.
    #[error("API key is not valid yet")]
    NotYetValid,
    /// The key id (`jti`) is on the revocation list.
    #[error("API key has been revoked")]
    Revoked,
    /// The footer's `kid` names no configured issuer.
    #[error("API key was issued by an unknown issuer")]
    UnknownIssuer,
    /// The key is valid but its `models` allow-list does not cover the requested model.
    #[error("model `{model}` is not allowed for this API key")]
    ModelNotAllowed {
        /// The model the request asked for.
        model: String,
    },
    /// Key material from configuration or a file (PASERK) is unusable. Operator error,
    /// never caused by a client's token.
    #[error("invalid key material: {0}")]
    InvalidKeyMaterial(&'static str),
}

impl KeyError {
    /// The HTTP status and OpenAI-style error `code` a client receives for this error.
    pub fn http_status_and_code(&self) -> (u16, &'static str) {
        match self {
            KeyError::Missing => (401, "missing_api_key"),
            KeyError::Malformed(_) => (401, "invalid_api_key"),
            KeyError::InvalidSignature => (401, "invalid_signature"),
            KeyError::Expired => (401, "key_expired"),
            KeyError::NotYetValid => (401, "key_not_yet_valid"),
            KeyError::Revoked => (401, "key_revoked"),
            KeyError::UnknownIssuer => (401, "unknown_issuer"),
            KeyError::ModelNotAllowed { .. } => (403, "model_not_allowed"),
            KeyError::InvalidKeyMaterial(_) => (500, "server_error"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_codes() {
        let cases = [
            (KeyError::Missing, 401, "missing_api_key"),
            (KeyError::Malformed("x"), 401, "invalid_api_key"),
            (KeyError::InvalidSignature, 401, "invalid_signature"),
            (KeyError::Expired, 401, "key_expired"),
            (KeyError::NotYetValid, 401, "key_not_yet_valid"),
            (KeyError::Revoked, 401, "key_revoked"),
            (KeyError::UnknownIssuer, 401, "unknown_issuer"),
            (KeyError::ModelNotAllowed { model: "m".into() }, 403, "model_not_allowed"),
        ];
        for (e, status, code) in cases {
            assert_eq!(e.http_status_and_code(), (status, code), "{e}");
        }
    }
}
