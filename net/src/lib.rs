//! Shard runtime, HTTP/1.1 server and upstream client for Gatekeeper.

pub mod upstream;
