//! The outer frame every credit message travels in: one version byte, the epoch as a
//! big-endian `u32`, then the draft's CBOR encoding of the message (draft §4), all as
//! unpadded base64url so it fits an HTTP header. Lengths are checked against a per-kind
//! cap before any base64 or CBOR decoding, so hostile input costs at most one bounded
//! copy.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;

use crate::error::ZkError;

/// The wire version this build writes and the only one it reads.
pub const WIRE_VERSION: u8 = 1;

/// Bytes before the CBOR body: version (1) + epoch (4).
pub const FRAME_HEADER_BYTES: usize = 5;

/// Cap on a decoded spend frame. A spend at [`crate::BALANCE_BITS`] = 24 is 3,828 bytes
/// (asserted in the tests); the cap leaves room for CBOR length-prefix variation only.
pub const SPEND_BYTES_MAX: usize = 4_096;
/// Cap on a decoded issuance request frame (4 fields of 32 bytes + CBOR, ~150 bytes).
pub const ISSUANCE_REQUEST_BYTES_MAX: usize = 256;
/// Cap on a decoded issuance response frame (6 fields of 32 bytes + CBOR, ~220 bytes).
pub const ISSUANCE_RESPONSE_BYTES_MAX: usize = 384;
/// Cap on a decoded change (refund) frame (5 fields of 32 bytes + CBOR, ~185 bytes).
pub const CHANGE_BYTES_MAX: usize = 384;
/// Cap on a decoded public key frame (one 32-byte point + CBOR, ~40 bytes).
pub const PUBLIC_KEY_BYTES_MAX: usize = 128;

/// Base64url characters needed for `raw_bytes` bytes without padding (and an upper
/// bound with padding, which decoding also accepts).
pub const fn base64_len_max(raw_bytes: usize) -> usize {
    raw_bytes.div_ceil(3) * 4
}

/// Header value length cap for a spend (`X-Gatekeeper-Credit`), in characters.
pub const SPEND_HEADER_CHARS_MAX: usize = base64_len_max(SPEND_BYTES_MAX);

const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_encode_padding(false).with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Frames `body` for `epoch` and returns the base64url text.
pub fn encode(epoch: u32, body: &[u8]) -> String {
    let mut raw = Vec::with_capacity(FRAME_HEADER_BYTES.saturating_add(body.len()));
    raw.push(WIRE_VERSION);
    raw.extend_from_slice(&epoch.to_be_bytes());
    raw.extend_from_slice(body);
    B64.encode(raw)
}

/// Unframes base64url `text` into `(epoch, cbor body)`, refusing anything whose decoded
/// length could exceed `raw_bytes_max`.
pub fn decode(text: &str, raw_bytes_max: usize) -> Result<(u32, Vec<u8>), ZkError> {
    let text = text.trim();
    let chars_max = base64_len_max(raw_bytes_max);
    if text.len() > chars_max {
        return Err(ZkError::TooLarge { len_bytes: text.len(), max_bytes: chars_max });
    }
    let raw = B64.decode(text).map_err(|_| ZkError::Malformed("not base64url"))?;
    if raw.len() > raw_bytes_max {
        return Err(ZkError::TooLarge { len_bytes: raw.len(), max_bytes: raw_bytes_max });
    }
    let Some((&version, rest)) = raw.split_first() else {
        return Err(ZkError::Malformed("empty"));
    };
    if version != WIRE_VERSION {
        return Err(ZkError::UnsupportedVersion(version));
    }
    let Some((epoch_bytes, body)) = rest.split_first_chunk::<4>() else {
        return Err(ZkError::Malformed("shorter than the frame header"));
    };
    Ok((u32::from_be_bytes(*epoch_bytes), body.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trips() {
        let text = encode(7, b"abc");
        assert_eq!(decode(&text, 8), Ok((7, b"abc".to_vec())));
    }

    #[test]
    fn caps_apply_at_the_edge_and_one_past() {
        // 3 body bytes + 5 header = 8 raw bytes.
        let text = encode(1, b"abc");
        assert!(decode(&text, 8).is_ok());
        assert!(matches!(decode(&text, 7), Err(ZkError::TooLarge { .. })));
    }

    #[test]
    fn rejects_wrong_version_short_and_non_base64() {
        assert_eq!(decode(&B64.encode([2, 0, 0, 0, 1]), 64), Err(ZkError::UnsupportedVersion(2)));
        assert!(matches!(decode(&B64.encode([1, 0, 0]), 64), Err(ZkError::Malformed(_))));
        assert!(matches!(decode("", 64), Err(ZkError::Malformed(_))));
        assert!(matches!(decode("***", 64), Err(ZkError::Malformed(_))));
    }
}
