//! Anonymous credit tokens for Gatekeeper (pipeline step 3), with no I/O.
//!
//! A key with the `zk` claim obtains, once per epoch, a credential over a hidden balance
//! and a hidden serial; each request then pays with a [`Spend`] that reveals only the
//! serial (its [`Nullifier`]) and the amount, with a zero-knowledge proof that the
//! balance covers it, and gets a [`Change`] credential back (optionally with a refund).
//! The gateway learns that *some* valid credential paid, never which; two spends of one
//! wallet cannot be linked.
//!
//! The construction is *Anonymous Credit Tokens* (`draft-schlesinger-cfrg-act-01`,
//! ciphersuite ACT-Ristretto255-BLAKE3) as implemented by the draft's author in the
//! `anonymous-credit-tokens` crate, checked here against the draft's test vectors.
//! This crate adds what Gatekeeper needs around it: per-epoch issuer keys derived from
//! one seed ([`Issuer::derive`]), a versioned base64url wire frame with size caps checked
//! before decoding ([`wire`]), and the client's [`Wallet`]. `SPEC.md` holds the threat
//! model, the security argument and the wire format.
//!
//! Hand-off, one epoch:
//! 1. client [`Wallet::request_credential`] → [`IssuanceRequest`] → issuer
//!    [`Issuer::issue`] → [`IssuanceResponse`] → [`Wallet::accept_credential`];
//! 2. client [`Wallet::spend`] → [`Spend`] → issuer [`Issuer::verify`] (once; records the
//!    nullifier elsewhere) … [`Issuer::sign_change`] (no second verification) → [`Change`]
//!    → [`Wallet::accept_change`].
//!
//! Spends are verified by this crate's own [`verifier`] (same accept set as the draft
//! crate's, computed faster; `SPEC.md` §9).
//!
//! ```
//! use gatekeeper_zk::{Domain, Issuer, IssuerSeed, Wallet};
//! let mut rng = rand_core::OsRng;
//! let domain = Domain::new("example").unwrap();
//! let issuer = Issuer::derive(&domain, &IssuerSeed::from_bytes([7; 32]), 20_000);
//! let mut wallet = Wallet::new(domain, issuer.public_key());
//! let request = wallet.request_credential(&mut rng).unwrap();
//! let response = issuer.issue(&request, 1_000, &mut rng).unwrap();
//! assert_eq!(wallet.accept_credential(&response).unwrap(), 1_000);
//! let spend = wallet.spend(300, &mut rng).unwrap();
//! let verified = issuer.verify(&spend).unwrap();
//! assert_eq!(verified.amount, 300);
//! let change = issuer.sign_change(&verified, 100, &mut rng).unwrap(); // 100 unused, refunded
//! assert_eq!(wallet.accept_change(&change).unwrap(), 800);
//! ```
#![forbid(unsafe_code)]

mod error;
mod issuer;
mod limits;
mod message;
pub mod verifier;
mod wallet;
pub mod wire;

pub use error::ZkError;
pub use issuer::{Domain, EpochLength, Issuer, IssuerSeed, VerifiedSpend, DEPLOYMENT_CHARS_MAX, PARAMS_VERSION};
pub use limits::{BALANCE_BITS, CREDITS_MAX};
pub use message::{Change, IssuanceRequest, IssuanceResponse, Nullifier, PublicKey, Spend};
pub use wallet::{Wallet, WALLET_BYTES_MAX};
