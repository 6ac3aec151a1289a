//! Host inspection and per-core configuration advice for Gatekeeper.
//!
//! This crate will back `gatekeeper tune`: it will read the host's cores, NUMA
//! layout, io_uring support and socket limits, and recommend shard counts, pinning
//! and limits for `gatekeeper.yaml`.
//!
//! It is empty until the tuning issue lands; nothing depends on it yet.
#![forbid(unsafe_code)]
