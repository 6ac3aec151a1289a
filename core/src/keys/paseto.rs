//! PASETO `v4.public` on raw bytes: PAE, signing, parsing untrusted tokens, verifying.
//!
//! This layer knows nothing of Gatekeeper's claims; [`super::claims`] and
//! [`super::verifier`] build on it. Every function that reads a token treats it as
//! hostile: lengths are checked before anything is decoded, base64 must be canonical
//! (URL-safe, unpadded, no stray bits), and nothing follows the optional footer.

use ed25519_dalek::{Signature, Signer as _, SIGNATURE_LENGTH};

use super::b64::{b64_decode, b64_encode};
use super::error::KeyError;
use super::paserk::{PublicKey, SecretKey};

/// The only header this module accepts.
pub const HEADER: &str = "v4.public.";

/// Longest token accepted, bytes. Gatekeeper's claims are a few hundred bytes; the bound
/// keeps decoding and hashing of hostile input small.
pub const TOKEN_BYTES_MAX: usize = 8 * 1024;

/// Longest decoded footer accepted, bytes (PASETO advises bounding footer parsing).
pub const FOOTER_BYTES_MAX: usize = 512;

/// Pre-Authentication Encoding: `LE64(n) || LE64(len(p_i)) || p_i …`, with the top bit of
/// every length cleared as the spec requires.
pub fn pae(pieces: &[&[u8]]) -> Vec<u8> {
    let total = 8 + pieces.iter().map(|p| 8 + p.len()).sum::<usize>();
    let mut out = Vec::with_capacity(total);
    let le64 = |n: usize| ((n as u64) & (u64::MAX >> 1)).to_le_bytes();
    out.extend_from_slice(&le64(pieces.len()));
    for piece in pieces {
        out.extend_from_slice(&le64(piece.len()));
        out.extend_from_slice(piece);
    }
    debug_assert_eq!(out.len(), total);
    out
}

/// A structurally valid `v4.public` token whose signature has not been checked yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// The signed payload (`m`), still untrusted.
    pub message: Vec<u8>,
    /// The detached Ed25519 signature.
    pub signature: Signature,
    /// The decoded footer (`f`), empty when the token has none.
    pub footer: Vec<u8>,
}

impl Parsed {
    /// The bytes the signature covers: `PAE(h, m, f, i)`.
    pub fn signed_bytes(&self, implicit: &[u8]) -> Vec<u8> {
        pae(&[HEADER.as_bytes(), &self.message, &self.footer, implicit])
    }
}

/// Splits and decodes a token without checking its signature.
pub fn parse(token: &str) -> Result<Parsed, KeyError> {
    if token.len() > TOKEN_BYTES_MAX {
        return Err(KeyError::Malformed("token too long"));
    }
    let rest = token.strip_prefix(HEADER).ok_or(KeyError::Malformed("not a v4.public token"))?;
    let (body, footer) = match rest.split_once('.') {
        None => (rest, None),
        Some((body, footer)) => (body, Some(footer)),
    };
    let footer = match footer {
        None => Vec::new(),
        // A present-but-empty footer, or a further `.`, is not a token PASETO produces.
        Some("") => return Err(KeyError::Malformed("empty footer")),
        Some(f) if f.contains('.') => return Err(KeyError::Malformed("trailing data after footer")),
        Some(f) => {
            if f.len() > FOOTER_BYTES_MAX.div_ceil(3) * 4 {
                return Err(KeyError::Malformed("footer too long"));
            }
            b64_decode(f)?
        }
    };
    let mut message = b64_decode(body)?;
    let split = message.len().checked_sub(SIGNATURE_LENGTH).ok_or(KeyError::Malformed("token too short"))?;
    let sig_bytes: [u8; SIGNATURE_LENGTH] =
        message.get(split..).and_then(|s| s.try_into().ok()).ok_or(KeyError::Malformed("token too short"))?;
    message.truncate(split);
    Ok(Parsed { message, signature: Signature::from_bytes(&sig_bytes), footer })
}

/// Signs `message` with an optional `footer` and implicit assertion.
pub fn sign(secret: &SecretKey, message: &[u8], footer: &[u8], implicit: &[u8]) -> String {
    let signed = pae(&[HEADER.as_bytes(), message, footer, implicit]);
    let signature = secret.signing_key().sign(&signed);
    let mut body = Vec::with_capacity(message.len() + SIGNATURE_LENGTH);
    body.extend_from_slice(message);
    body.extend_from_slice(&signature.to_bytes());
    let mut token = String::with_capacity(HEADER.len() + body.len() * 4 / 3 + footer.len() * 4 / 3 + 8);
    token.push_str(HEADER);
    token.push_str(&b64_encode(&body));
    if !footer.is_empty() {
        token.push('.');
        token.push_str(&b64_encode(footer));
    }
    token
}

/// Parses `token` and checks its signature under `public`; returns the parts on success.
pub fn verify(public: &PublicKey, token: &str, implicit: &[u8]) -> Result<Parsed, KeyError> {
    let parsed = parse(token)?;
    public
        .verifying_key()
        .verify_strict(&parsed.signed_bytes(implicit), &parsed.signature)
        .map_err(|_| KeyError::InvalidSignature)?;
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn vectors(file: &str) -> Vec<Value> {
        let path = format!("{}/tests/data/paseto/{file}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        let doc: Value = serde_json::from_str(&text).unwrap();
        doc["tests"].as_array().unwrap().clone()
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    fn str_of<'a>(v: &'a Value, k: &str) -> &'a str {
        v[k].as_str().unwrap_or("")
    }

    #[test]
    fn official_v4_public_vectors() {
        let tests = vectors("v4.json");
        let public =
            PublicKey::from_bytes(&hex("1eb9dbbbbc047c03fd70604e0071f0987e16b28b757225c11f00415d0e20b1a2")).unwrap();
        let mut seen_s = 0;
        let mut seen_f = 0;
        for t in &tests {
            let name = str_of(t, "name");
            let token = str_of(t, "token");
            let implicit = str_of(t, "implicit-assertion").as_bytes();
            if name.starts_with("4-S-") {
                seen_s += 1;
                let secret = SecretKey::from_keypair_bytes(&hex(str_of(t, "secret-key"))).unwrap();
                let pk = PublicKey::from_bytes(&hex(str_of(t, "public-key"))).unwrap();
                assert_eq!(secret.public_key(), pk, "{name}");
                let payload = str_of(t, "payload").as_bytes();
                let footer = str_of(t, "footer").as_bytes();
                assert_eq!(sign(&secret, payload, footer, implicit), token, "{name} signs exactly");
                let parsed = verify(&pk, token, implicit).unwrap();
                assert_eq!(parsed.message, payload, "{name}");
                assert_eq!(parsed.footer, footer, "{name}");
                // The implicit assertion is bound into the signature.
                if !implicit.is_empty() {
                    assert!(verify(&pk, token, b"").is_err(), "{name}");
                }
            } else if name.starts_with("4-F-") {
                seen_f += 1;
                assert!(t["expect-fail"].as_bool().unwrap());
                assert!(verify(&public, token, implicit).is_err(), "{name} must fail");
            }
        }
        assert_eq!((seen_s, seen_f), (3, 5));
    }

    #[test]
    fn parse_rejects_structural_garbage() {
        let secret = SecretKey::from_seed(&[7; 32]);
        let good = sign(&secret, b"{}", b"{\"kid\":\"x\"}", b"");
        assert!(parse(&good).is_ok());
        let body_only = sign(&secret, b"{}", b"", b"");
        for bad in [
            String::new(),
            "v4.public.".to_string(),
            "v4.public".to_string(),
            "v4.local.AAAA".to_string(),
            "V4.public.AAAA".to_string(),
            format!("{good}."),
            format!("{good}.AAAA"),
            format!("{body_only}."),
            format!("{body_only}="),
            format!("{body_only}=="),
            format!(" {good}"),
            format!("{good}\n"),
            "v4.public.AAAA".to_string(),
            format!("v4.public.{}", b64_encode(&[0u8; 63])),
            "v4.public.+/+/".to_string(),
            format!("v4.public.{}", "A".repeat(TOKEN_BYTES_MAX)),
        ] {
            assert!(parse(&bad).is_err() || verify(&secret.public_key(), &bad, b"").is_err(), "{bad:?}");
        }
        // Non-canonical trailing bits: `AB` and `AA` decode to the same byte in lax decoders.
        assert!(b64_decode("AB").is_err());
        assert_eq!(b64_decode("AA").unwrap(), [0]);
    }

    #[test]
    fn every_single_byte_flip_fails() {
        let secret = SecretKey::from_seed(&[9; 32]);
        let public = secret.public_key();
        let token = sign(&secret, b"{\"jti\":\"abc\"}", b"{\"kid\":\"k4.pid.x\"}", b"");
        assert!(verify(&public, &token, b"").is_ok());
        let bytes = token.as_bytes();
        for i in 0..bytes.len() {
            for flip in [0x01u8, 0x20, 0x80] {
                let mut forged = bytes.to_vec();
                forged[i] ^= flip;
                let Ok(text) = String::from_utf8(forged) else {
                    continue;
                };
                assert!(verify(&public, &text, b"").is_err(), "byte {i} ^ {flip:#x} accepted");
            }
        }
    }

    #[test]
    fn pae_matches_spec_examples() {
        assert_eq!(pae(&[]), [0u8; 8]);
        assert_eq!(pae(&[b""]), [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let mut expect = vec![1, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0];
        expect.extend_from_slice(b"test");
        assert_eq!(pae(&[b"test"]), expect);
    }
}
