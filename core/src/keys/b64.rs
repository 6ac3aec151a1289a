//! PASETO's base64: URL-safe, unpadded, canonical.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use super::error::KeyError;

/// Encodes as URL-safe base64 without padding (PASETO's encoding).
pub(crate) fn b64_encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes URL-safe unpadded base64, rejecting padding and non-canonical trailing bits.
pub(crate) fn b64_decode(text: &str) -> Result<Vec<u8>, KeyError> {
    // The engine's defaults already refuse `=` and stray bits; it never panics on input.
    URL_SAFE_NO_PAD.decode(text).map_err(|_| KeyError::Malformed("bad base64"))
}
