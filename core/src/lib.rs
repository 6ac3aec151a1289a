//! Gatekeeper: an OpenAI-compatible, thread-per-core AI gateway.
#![forbid(unsafe_code)]

pub mod config;
pub mod keys;
