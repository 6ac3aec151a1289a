//! The client side: one credential chain per epoch. A wallet holds at most one
//! credential; a spend consumes it and the change replaces it, so a wallet pays for one
//! request at a time (the draft has no split operation).

use anonymous_credit_tokens as act;
use rand_core::CryptoRngCore;

use crate::error::ZkError;
use crate::issuer::{Domain, PARAMS_VERSION};
use crate::limits::BALANCE_BITS;
use crate::message::{credits_to_scalar, scalar_to_credits};
use crate::message::{Change, IssuanceRequest, IssuanceResponse, PublicKey, Spend};

/// Cap on a serialized wallet (the largest state holds a spend, its pre-change state and
/// the previous credential).
pub const WALLET_BYTES_MAX: usize = 8_192;

/// Layout 2 records [`PARAMS_VERSION`] after the version byte; layout 1 (params
/// `2026-11-30`, L = 32) did not.
const WALLET_VERSION: u8 = 2;
/// Parameters of every layout-1 wallet.
const WALLET_V1_PARAMS: &str = "2026-11-30";

#[derive(Clone)]
enum State {
    /// No credential yet.
    Empty,
    /// Issuance request sent; the response has not been taken.
    Issuing { pre: act::PreIssuance, request: act::IssuanceRequest },
    /// A credential ready to spend.
    Ready { token: act::CreditToken },
    /// A spend sent; its change has not been taken. `token` is the spent credential,
    /// kept so a spend the gateway refused before recording it can be taken back.
    Spending { token: act::CreditToken, spend: Box<Spend>, pre: act::PreRefund },
}

/// A client's credits for one epoch of one deployment.
#[derive(Clone)]
pub struct Wallet {
    domain: Domain,
    public: PublicKey,
    state: State,
}

impl std::fmt::Debug for Wallet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Balance and state name only: the secrets stay out of logs.
        f.debug_struct("Wallet")
            .field("epoch", &self.public.epoch)
            .field("state", &self.state_name())
            .field("balance", &self.balance())
            .finish()
    }
}

impl Wallet {
    /// An empty wallet for the epoch of `public` (from the gateway's published params).
    pub fn new(domain: Domain, public: PublicKey) -> Self {
        Self { domain, public, state: State::Empty }
    }

    /// The epoch this wallet's credential belongs to.
    pub fn epoch(&self) -> u32 {
        self.public.epoch
    }

    fn state_name(&self) -> &'static str {
        match self.state {
            State::Empty => "empty",
            State::Issuing { .. } => "issuing",
            State::Ready { .. } => "ready",
            State::Spending { .. } => "spending",
        }
    }

    /// Credits of the credential held, `None` when there is none (empty, issuing) or it
    /// is out for a spend. While spending, see [`Wallet::pending_spend`].
    pub fn balance(&self) -> Option<u64> {
        match &self.state {
            State::Ready { token } => scalar_to_credits(&token.credits()).ok(),
            _ => None,
        }
    }

    /// The issuance request to send. Calling it again before the response arrives
    /// returns the same request, so a retried issuance cannot strand a credential.
    pub fn request_credential(&mut self, rng: &mut impl CryptoRngCore) -> Result<IssuanceRequest, ZkError> {
        let epoch = self.public.epoch;
        match &self.state {
            State::Empty => {
                let pre = act::PreIssuance::random(&mut *rng);
                let request = pre.request(&self.domain.params, &mut *rng);
                let out = IssuanceRequest { epoch, inner: request.clone() };
                self.state = State::Issuing { pre, request };
                Ok(out)
            }
            State::Issuing { request, .. } => Ok(IssuanceRequest { epoch, inner: request.clone() }),
            _ => Err(ZkError::WalletState("already holds a credential")),
        }
    }

    /// Takes the issuer's response; returns the credential's credits.
    pub fn accept_credential(&mut self, response: &IssuanceResponse) -> Result<u64, ZkError> {
        let State::Issuing { pre, request } = &self.state else {
            return Err(ZkError::WalletState("no issuance in progress"));
        };
        if response.epoch != self.public.epoch {
            return Err(ZkError::WrongEpoch { got: response.epoch, current: self.public.epoch });
        }
        let token =
            pre.to_credit_token::<BALANCE_BITS>(&self.domain.params, &self.public.inner, request, &response.inner)?;
        let credits = scalar_to_credits(&token.credits())?;
        self.state = State::Ready { token };
        Ok(credits)
    }

    /// A spend of `amount` credits. The credential is out until [`Wallet::accept_change`]
    /// (or [`Wallet::cancel_spend`]). A spend above the balance cannot be produced.
    pub fn spend(&mut self, amount: u64, rng: &mut impl CryptoRngCore) -> Result<Spend, ZkError> {
        let State::Ready { token } = &self.state else {
            return Err(ZkError::WalletState("no credential ready to spend"));
        };
        let balance = scalar_to_credits(&token.credits())?;
        if amount > balance {
            return Err(ZkError::InsufficientBalance { wanted: amount });
        }
        let s = credits_to_scalar(amount)?;
        let (proof, pre) = token.prove_spend::<BALANCE_BITS>(&self.domain.params, s, rng)?;
        let spend = Spend::from_proof(self.public.epoch, proof)?;
        self.state = State::Spending { token: token.clone(), spend: Box::new(spend.clone()), pre };
        Ok(spend)
    }

    /// The spend awaiting its change, to resend after a crash or a lost answer.
    pub fn pending_spend(&self) -> Option<&Spend> {
        match &self.state {
            State::Spending { spend, .. } => Some(spend),
            _ => None,
        }
    }

    /// Takes the change for the pending spend; returns the new balance.
    pub fn accept_change(&mut self, change: &Change) -> Result<u64, ZkError> {
        let State::Spending { spend, pre, .. } = &self.state else {
            return Err(ZkError::WalletState("no spend awaits change"));
        };
        if change.epoch != self.public.epoch {
            return Err(ZkError::WrongEpoch { got: change.epoch, current: self.public.epoch });
        }
        let token = pre.to_credit_token::<BALANCE_BITS>(
            &self.domain.params,
            &*spend.proof()?,
            &change.inner,
            &self.public.inner,
        )?;
        let credits = scalar_to_credits(&token.credits())?;
        self.state = State::Ready { token };
        Ok(credits)
    }

    /// Takes back the credential of a spend the gateway refused *before recording its
    /// nullifier* (a malformed request, 503 fail-closed). After a replay refusal the
    /// credential is spent and this only makes the next spend fail the same way.
    pub fn cancel_spend(&mut self) -> Result<u64, ZkError> {
        let State::Spending { token, .. } = &self.state else {
            return Err(ZkError::WalletState("no spend to cancel"));
        };
        let token = token.clone();
        let credits = scalar_to_credits(&token.credits())?;
        self.state = State::Ready { token };
        Ok(credits)
    }

    /// The wallet as bytes, for a wallet file. Holds secrets: store it 0600.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1024);
        out.push(WALLET_VERSION);
        put(&mut out, PARAMS_VERSION.as_bytes());
        out.extend_from_slice(&self.public.epoch.to_be_bytes());
        put(&mut out, &self.public.inner.to_cbor().unwrap_or_default());
        match &self.state {
            State::Empty => out.push(0),
            State::Issuing { pre, request } => {
                out.push(1);
                put(&mut out, &pre.to_cbor().unwrap_or_default());
                put(&mut out, &request.to_cbor().unwrap_or_default());
            }
            State::Ready { token } => {
                out.push(2);
                put(&mut out, &token.to_cbor().unwrap_or_default());
            }
            State::Spending { token, spend, pre } => {
                out.push(3);
                put(&mut out, &token.to_cbor().unwrap_or_default());
                put(&mut out, &spend.body);
                put(&mut out, &pre.to_cbor().unwrap_or_default());
            }
        }
        out
    }

    /// A wallet from [`Wallet::to_bytes`] output. Never panics on hostile bytes. A wallet
    /// of other parameters (an older build's, see [`PARAMS_VERSION`]) is refused with
    /// [`ZkError::OtherParams`]: its credential is worthless under these parameters.
    pub fn from_bytes(domain: Domain, bytes: &[u8]) -> Result<Self, ZkError> {
        if bytes.len() > WALLET_BYTES_MAX {
            return Err(ZkError::TooLarge { len_bytes: bytes.len(), max_bytes: WALLET_BYTES_MAX });
        }
        let mut r = Reader(bytes);
        match r.byte()? {
            1 => return Err(ZkError::OtherParams { found: WALLET_V1_PARAMS.to_owned() }),
            WALLET_VERSION => {}
            version => return Err(ZkError::UnsupportedVersion(version)),
        }
        let params = r.blob()?;
        if params != PARAMS_VERSION.as_bytes() {
            return Err(ZkError::OtherParams { found: String::from_utf8_lossy(params).into_owned() });
        }
        let epoch = u32::from_be_bytes(r.array::<4>()?);
        let public = PublicKey { epoch, inner: act::PublicKey::from_cbor(r.blob()?).map_err(bad)? };
        let state = match r.byte()? {
            0 => State::Empty,
            1 => State::Issuing {
                pre: act::PreIssuance::from_cbor(r.blob()?).map_err(bad)?,
                request: act::IssuanceRequest::from_cbor(r.blob()?).map_err(bad)?,
            },
            2 => State::Ready { token: act::CreditToken::from_cbor(r.blob()?).map_err(bad)? },
            3 => State::Spending {
                token: act::CreditToken::from_cbor(r.blob()?).map_err(bad)?,
                spend: Box::new(
                    Spend::from_body(epoch, r.blob()?.to_vec()).map_err(|_| ZkError::Malformed("wallet spend"))?,
                ),
                pre: act::PreRefund::from_cbor(r.blob()?).map_err(bad)?,
            },
            _ => return Err(ZkError::Malformed("wallet state tag")),
        };
        if !r.0.is_empty() {
            return Err(ZkError::Malformed("trailing bytes after wallet"));
        }
        Ok(Self { domain, public, state })
    }
}

fn bad(_: act::cbor::CborError) -> ZkError {
    ZkError::Malformed("wallet cbor")
}

fn put(out: &mut Vec<u8>, blob: &[u8]) {
    // Every blob is far below 64 KiB (the largest, a spend, is ~3.8 KB).
    let len = u16::try_from(blob.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(blob.get(..usize::from(len)).unwrap_or(blob));
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, ZkError> {
        let (&b, rest) = self.0.split_first().ok_or(ZkError::Malformed("truncated wallet"))?;
        self.0 = rest;
        Ok(b)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ZkError> {
        let (a, rest) = self.0.split_first_chunk::<N>().ok_or(ZkError::Malformed("truncated wallet"))?;
        self.0 = rest;
        Ok(*a)
    }

    fn blob(&mut self) -> Result<&'a [u8], ZkError> {
        let len = usize::from(u16::from_be_bytes(self.array::<2>()?));
        if len > self.0.len() {
            return Err(ZkError::Malformed("truncated wallet"));
        }
        let (blob, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(blob)
    }
}
