//! JSON strings as serde_json writes them, and the 8-bytes-a-step scan for the bytes
//! it escapes: shared by the shard's record writer, the bridge's record parse and
//! the lists it keeps ([`super::strlist`]).

/// A JSON string with serde_json's escapes: `\"`, `\\`, `\b \t \n \f \r`, other
/// control bytes as `\u00xx` (lowercase hex); everything else, UTF-8 included, as is.
pub(crate) fn push_json_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.push(b'"');
    // Nearly every string needs no escape: one pass that checks 8 bytes at a time,
    // then one copy.
    if first_special(bytes).is_none() {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            0x0c => b"\\f",
            b'\r' => b"\\r",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if short.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 15) as usize]);
        } else {
            out.extend_from_slice(short);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Where the first byte of `bytes` is that a JSON string cannot hold as is (`"`,
/// `\\` or a control byte below 0x20), 8 bytes per step: strings are most of a
/// record's bytes, and both the shard (writing) and the bridge (parsing) scan them.
pub(crate) fn first_special(bytes: &[u8]) -> Option<usize> {
    let mut chunks = bytes.chunks_exact(8);
    let mut at = 0;
    for chunk in chunks.by_ref() {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        if let Some(i) = special_in(u64::from_le_bytes(word)) {
            return Some(at + i);
        }
        at += 8;
    }
    // The last 0–7 bytes: one more word, padded with a byte that is never special.
    let rest = chunks.remainder();
    if rest.is_empty() {
        return None;
    }
    let mut word = [b'a'; 8];
    word[..rest.len()].copy_from_slice(rest);
    special_in(u64::from_le_bytes(word)).map(|i| at + i)
}

/// The first of the 8 bytes of `x` (little-endian) that is `"`, `\\` or below 0x20.
fn special_in(x: u64) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Per byte, the high bit is set where it is 0 after the xor / below 0x20.
    // Borrows only run upwards, so the lowest flagged byte is always a real hit
    // (a byte above it may be flagged falsely, which the lowest bit ignores).
    let quote = x ^ (ONES * u64::from(b'"'));
    let slash = x ^ (ONES * u64::from(b'\\'));
    let hits =
        (quote.wrapping_sub(ONES) & !quote | slash.wrapping_sub(ONES) & !slash | x.wrapping_sub(ONES * 0x20) & !x)
            & HIGH;
    (hits != 0).then(|| (hits.trailing_zeros() / 8) as usize)
}
