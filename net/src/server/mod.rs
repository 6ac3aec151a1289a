//! The client side of a shard: accept, read requests under limits, hand them to the
//! application, write answers, keep the connection alive or close it.
//!
//! `accept` takes connections under the per-shard cap and runs each in its own task,
//! contained by `unwind` so a panic costs one connection; `connection` serves one
//! connection's requests in order, reading each through `read` with bodies charged to
//! the shard's `budget`; the application answers through its [`Handler`].

pub(crate) mod accept;
mod budget;
mod connection;
pub mod handler;
pub mod limits;
mod read;
mod unwind;

pub use handler::Handler;
pub use limits::ServerLimits;
