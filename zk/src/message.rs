//! The four protocol messages as Gatekeeper sends them: each is the draft's message
//! plus the epoch whose issuer key it belongs to, framed by [`crate::wire`].

use std::borrow::Cow;

use anonymous_credit_tokens as act;
use curve25519_dalek::Scalar;

use crate::error::ZkError;
use crate::limits::BALANCE_BITS;
use crate::verifier::SpendFields;
use crate::wire::{self, CHANGE_BYTES_MAX, ISSUANCE_REQUEST_BYTES_MAX, ISSUANCE_RESPONSE_BYTES_MAX};
use crate::wire::{PUBLIC_KEY_BYTES_MAX, SPEND_BYTES_MAX};

/// A spend's nullifier: the spent credential's serial, revealed once. Recording it stops
/// the credential from being spent twice; it is uniformly random and says nothing about
/// the wallet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Nullifier(pub [u8; 32]);

impl Nullifier {
    /// Lower-case hex, as audit records and nullifier files write it.
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
        s
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl std::fmt::Display for Nullifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Client → issuer: a blinded commitment to a fresh serial, with a proof of knowledge.
#[derive(Debug, Clone)]
pub struct IssuanceRequest {
    pub(crate) epoch: u32,
    pub(crate) inner: act::IssuanceRequest,
}

/// Issuer → client: a BBS-style signature over (credits, epoch context, hidden serial).
#[derive(Debug, Clone)]
pub struct IssuanceResponse {
    pub(crate) epoch: u32,
    pub(crate) inner: act::IssuanceResponse,
}

/// Client → issuer: spend of `amount` credits, revealing the nullifier, with a proof
/// that the hidden balance covers it (a [`BALANCE_BITS`]-bit range proof on the rest).
/// Kept as the CBOR body received or proved (sent unchanged) and its decoded form.
#[derive(Debug, Clone)]
pub struct Spend {
    pub(crate) epoch: u32,
    pub(crate) body: Vec<u8>,
    repr: SpendRepr,
}

/// A decoded spend carries what the verifier needs; a spend this process's wallet
/// proved carries the crate's proof, which taking the change needs, so neither side
/// decodes what it does not use.
#[derive(Debug, Clone)]
enum SpendRepr {
    Decoded(Box<SpendFields<BALANCE_BITS>>),
    Proved(Box<act::SpendProof<BALANCE_BITS>>),
}

/// Issuer → client: the signature on the change credential (balance − amount + refund),
/// bound to one spend.
#[derive(Debug, Clone)]
pub struct Change {
    pub(crate) epoch: u32,
    pub(crate) inner: act::Refund,
}

/// What a client needs to talk to an issuer for one epoch: the epoch and its public key.
#[derive(Debug, Clone)]
pub struct PublicKey {
    pub(crate) epoch: u32,
    pub(crate) inner: act::PublicKey,
}

fn cbor_err(_: act::cbor::CborError) -> ZkError {
    ZkError::Malformed("cbor")
}

/// Credits as a scalar; `None` when they do not fit [`BALANCE_BITS`].
pub(crate) fn credits_to_scalar(credits: u64) -> Result<Scalar, ZkError> {
    act::credit_to_scalar::<BALANCE_BITS>(u128::from(credits)).map_err(ZkError::from)
}

/// A scalar that must hold a credit amount, as `u64`.
pub(crate) fn scalar_to_credits(s: &Scalar) -> Result<u64, ZkError> {
    let v = act::scalar_to_credit::<BALANCE_BITS>(s).map_err(ZkError::from)?;
    u64::try_from(v).map_err(|_| ZkError::InvalidAmount)
}

/// The request context every credential of `epoch` carries. It is the same for every
/// client of the epoch, so revealing it at spend time links nothing.
pub(crate) fn epoch_ctx(epoch: u32) -> Scalar {
    Scalar::from(u64::from(epoch))
}

macro_rules! framed {
    ($ty:ident, $inner:ty, $max:expr) => {
        impl $ty {
            /// Epoch this message belongs to.
            pub fn epoch(&self) -> u32 {
                self.epoch
            }

            /// Framed, base64url text (see [`crate::wire`]).
            pub fn encode(&self) -> String {
                // The library's encoder writes fixed-size byte strings into a Vec; it
                // cannot fail on a well-formed value.
                let body = self.inner.to_cbor().unwrap_or_default();
                wire::encode(self.epoch, &body)
            }

            /// Decodes framed text; size is checked before anything else. Never panics.
            pub fn decode(text: &str) -> Result<Self, ZkError> {
                let (epoch, body) = wire::decode(text, $max)?;
                let inner = <$inner>::from_cbor(&body).map_err(cbor_err)?;
                Ok(Self { epoch, inner })
            }
        }
    };
}

framed!(IssuanceRequest, act::IssuanceRequest, ISSUANCE_REQUEST_BYTES_MAX);
framed!(IssuanceResponse, act::IssuanceResponse, ISSUANCE_RESPONSE_BYTES_MAX);
framed!(Change, act::Refund, CHANGE_BYTES_MAX);
framed!(PublicKey, act::PublicKey, PUBLIC_KEY_BYTES_MAX);

impl Spend {
    /// Epoch this message belongs to.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// Framed, base64url text (see [`crate::wire`]): the CBOR body as received or proved.
    pub fn encode(&self) -> String {
        wire::encode(self.epoch, &self.body)
    }

    /// Decodes framed text; size is checked before anything else. Refuses exactly what
    /// the draft's crate refuses (see [`crate::verifier::SpendFields`]). Never panics.
    pub fn decode(text: &str) -> Result<Self, ZkError> {
        let (epoch, body) = wire::decode(text, SPEND_BYTES_MAX)?;
        Self::from_body(epoch, body)
    }

    pub(crate) fn from_body(epoch: u32, body: Vec<u8>) -> Result<Self, ZkError> {
        let fields = SpendFields::from_cbor(&body)?;
        Ok(Self { epoch, body, repr: SpendRepr::Decoded(Box::new(fields)) })
    }

    pub(crate) fn from_proof(epoch: u32, proof: act::SpendProof<BALANCE_BITS>) -> Result<Self, ZkError> {
        let body = proof.to_cbor().map_err(cbor_err)?;
        Ok(Self { epoch, body, repr: SpendRepr::Proved(Box::new(proof)) })
    }

    /// The verifier's form of the proof.
    pub(crate) fn fields(&self) -> Result<Cow<'_, SpendFields<BALANCE_BITS>>, ZkError> {
        match &self.repr {
            SpendRepr::Decoded(f) => Ok(Cow::Borrowed(&**f)),
            SpendRepr::Proved(_) => SpendFields::from_cbor(&self.body).map(Cow::Owned),
        }
    }

    /// The crate's form of the proof (the wallet needs it to take the change).
    pub(crate) fn proof(&self) -> Result<Cow<'_, act::SpendProof<BALANCE_BITS>>, ZkError> {
        match &self.repr {
            SpendRepr::Proved(p) => Ok(Cow::Borrowed(p)),
            SpendRepr::Decoded(_) => act::SpendProof::from_cbor(&self.body).map(Cow::Owned).map_err(cbor_err),
        }
    }

    fn scalars(&self) -> (Scalar, Scalar) {
        match &self.repr {
            SpendRepr::Decoded(f) => (f.nullifier(), f.charge()),
            SpendRepr::Proved(p) => (p.nullifier(), p.charge()),
        }
    }

    /// The spent credential's serial.
    pub fn nullifier(&self) -> Nullifier {
        Nullifier(self.scalars().0.to_bytes())
    }

    /// Credits this spend pays; an error when the encoded amount does not fit the
    /// balance width (such a spend can never verify).
    pub fn amount(&self) -> Result<u64, ZkError> {
        scalar_to_credits(&self.scalars().1)
    }
}

impl Change {
    /// Credits the issuer handed back on top of `balance − amount`.
    pub fn refund(&self) -> Result<u64, ZkError> {
        scalar_to_credits(&self.inner.partial_return())
    }
}
