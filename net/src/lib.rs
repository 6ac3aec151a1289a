//! Shard runtime, HTTP/1.1 server and upstream client for Gatekeeper.
//!
//! [`ShardSet::start`] binds one `SO_REUSEPORT` listener per shard and runs each
//! shard on its own pinned thread with its own monoio runtime (io_uring, or epoll
//! where the kernel lacks it). Every accepted connection is read by the server
//! ([`server`]) under [`ServerLimits`]; each complete [`Request`] goes to the
//! application's [`Handler`], which answers through a [`Responder`] — whole, or as a
//! stream relayed chunk by chunk. The application reaches providers through
//! [`upstream::Pool`], one keep-alive pool per provider per shard.
//!
//! This crate knows HTTP and sockets, nothing of keys, models or providers.

// Every syscall goes through monoio, socket2 or rustix, so nothing here needs `unsafe`; a
// module that ever does must opt in with `#[allow(unsafe_code)]` and a `// SAFETY:` note.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod chunked;
mod drain;
mod driver;
pub mod error;
pub mod http;
pub mod server;
pub mod shard;
pub mod sse;
mod stats;
pub mod stream;
mod timers;
pub mod tls;
pub mod upstream;

pub use driver::{Driver, DriverChoice, UringSettings, URING_ENTRIES_DEFAULT};
pub use error::{ProtocolError, StartError};
pub use http::request::{BodyFraming, Request};
pub use http::response::Responder;
pub use server::{Handler, ServerLimits};
pub use shard::{ShardContext, ShardSet, ShardSetConfig, ShutdownHandle};
pub use stats::{Counter, Gauge, ShardStats};

/// Entry points for the fuzzers; not part of the API.
#[doc(hidden)]
pub mod fuzzing {
    /// Parses `data` as a request head under small limits.
    pub fn request_head(data: &[u8]) {
        let mut buf = bytes::BytesMut::from(data);
        let _ = crate::http::request::parse_head(&mut buf, 4096, 32);
    }

    pub use crate::upstream::fuzzing::{chunked, response_head};
}
