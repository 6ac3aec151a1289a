//! The four protocol messages as Gatekeeper sends them: each is the draft's message
//! plus the epoch whose issuer key it belongs to, framed by [`crate::wire`].

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
/// Kept as the CBOR body received (re-sent unchanged) and its decoded fields.
#[derive(Debug, Clone)]
pub struct Spend {
    pub(crate) epoch: u32,
    pub(crate) body: Vec<u8>,
    pub(crate) fields: SpendFields<BALANCE_BITS>,
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
        Ok(Self { epoch, body, fields })
    }

    /// The crate's form of the proof (the wallet needs it to take the change).
    pub(crate) fn proof(&self) -> Result<act::SpendProof<BALANCE_BITS>, ZkError> {
        act::SpendProof::from_cbor(&self.body).map_err(cbor_err)
    }

    /// The spent credential's serial.
    pub fn nullifier(&self) -> Nullifier {
        Nullifier(self.fields.nullifier().to_bytes())
    }

    /// Credits this spend pays; an error when the encoded amount does not fit the
    /// balance width (such a spend can never verify).
    pub fn amount(&self) -> Result<u64, ZkError> {
        scalar_to_credits(&self.fields.charge())
    }
}

impl Change {
    /// Credits the issuer handed back on top of `balance − amount`.
    pub fn refund(&self) -> Result<u64, ZkError> {
        scalar_to_credits(&self.inner.partial_return())
    }
}
