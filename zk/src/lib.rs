//! Anonymous credit tokens for Gatekeeper.
//!
//! This crate will hold credit issuance, spend and verification (ristretto points,
//! bulletproofs range proofs, merlin transcripts, nullifiers against double spends),
//! so a caller can prove its hidden balance covers a request without revealing the
//! balance or who it is (pipeline step 3; see ARCHITECTURE.md). It performs no I/O.
//!
//! It is empty until the zero-knowledge credit issue lands; nothing depends on it yet.
#![forbid(unsafe_code)]
