//! Conflict-free replicated token budgets for Gatekeeper.
//!
//! This crate will hold the epoch-keyed grow-only counters (GCounters) that back
//! per-key token windows (minute / day / month), with delta extraction and merge,
//! so that every shard and every node can enforce one budget without a coordinator
//! (pipeline step 4; see ARCHITECTURE.md). It performs no I/O: the `gatekeeper` crate moves deltas
//! between shards and nodes.
//!
//! It is empty until the budget issue lands; nothing depends on it yet.
#![forbid(unsafe_code)]
