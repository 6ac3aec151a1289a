//! Gatekeeper: an OpenAI-compatible, thread-per-core AI gateway.
//!
//! [`config::Config`] is `gatekeeper.yaml`. [`serve::start`] turns it into a
//! [`gateway::Gateway`] (process-wide tables) and starts the shards of
//! `gatekeeper-net`, each running a [`gateway::ShardGateway`] with its own upstream
//! pools, key cache and health. Every chat request walks [`pipeline`]: body fields,
//! offline [`keys`] check, route, provider with failover, relay back. [`error`] is
//! the one place errors become HTTP statuses and OpenAI error JSON; [`metrics`]
//! renders `/metrics`.
#![deny(unsafe_code)] // one exception: `audit::mapped`, the WAL's file mapping

pub mod audit;
pub mod bridge;
pub mod config;
#[cfg(feature = "demo")]
pub mod demo;
pub mod error;
pub mod gateway;
pub mod keys;
pub mod metrics;
pub mod pipeline;
pub mod serve;
pub mod usage;
