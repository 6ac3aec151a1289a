//! Gatekeeper: an OpenAI-compatible, thread-per-core AI gateway.
//!
//! [`config::Config`] is `gatekeeper.yaml`. [`serve::start`] turns it into a
//! [`gateway::Gateway`] (process-wide tables) and starts the shards of
//! `gatekeeper-net`, each running a [`gateway::ShardGateway`] with its own upstream
//! pools, key cache and health; [`routes`] sends each path to its handler. Every chat
//! request walks [`pipeline`], one module per step: [`wire`] (parse), [`keys`],
//! [`credit`], [`budget`], [`router`], [`providers`], [`respond`] and [`audit`].
//! [`error`] is the one place errors become HTTP statuses and OpenAI error JSON;
//! [`metrics`] renders `/metrics`. ARCHITECTURE.md at the repository root is the map.
#![deny(unsafe_code)] // two exceptions: `audit::mapped` (the WAL's file mapping), `bridge::priority` (sched_setscheduler)

pub mod audit;
pub mod bridge;
pub mod budget;
pub mod calibrate;
pub mod cli;
pub mod clock;
pub mod config;
pub mod credit;
pub mod error;
pub mod gateway;
pub mod keys;
pub mod metrics;
pub mod pipeline;
pub mod providers;
pub mod reload;
pub mod respond;
pub mod router;
pub mod routes;
pub mod serve;
pub mod tables;
pub mod trace;
pub mod wire;
