//! Upstream HTTP/1.1 client: per-shard keep-alive pools to one provider each.
//!
//! A shard builds one [`Pool`] per provider from an [`Origin`] (parsed from the provider's
//! base URL), a [`PoolConfig`] of limits, and — for `https` — the process-wide
//! `Arc<rustls::ClientConfig>` from [`tls_client_config`]. [`Pool::send`] writes one request
//! on a pooled (or new) connection and returns a [`Response`] once its head has arrived;
//! [`Response::chunk`] then yields the body as it arrives, which is how SSE streams are
//! relayed. A body read to its clean end hands the connection back to the pool; a dropped
//! `Response` closes it. Every failure is an [`UpstreamError`] naming the phase or limit.
//!
//! Everything here is `!Send` and lock-free: a pool belongs to one monoio runtime thread
//! (io_uring or epoll driver, with the timer enabled).
//!
//! # Name resolution
//!
//! A host name is never resolved on the shard: the pool asks a few process-wide resolver
//! threads through a bounded queue and waits for the answer within `connect_timeout_ms`,
//! which bounds resolution, TCP connect and TLS handshake together. Answers are reused for
//! 30 s, failures for 5 s ([`UpstreamError::Resolve`] at once meanwhile); an IP literal is
//! never resolved. Details in `resolve.rs`.
//!
//! # When a request is sent twice
//!
//! [`Pool::send`] writes a request at most twice, and the second time only on a fresh
//! connection, after it took a pooled one that the upstream had closed:
//!
//! 1. Before writing, a pooled connection is checked without blocking: if the upstream has
//!    closed it or sent anything unasked since the last response, it is dropped and the
//!    request goes on a fresh connection. Nothing was written, so this is always safe.
//! 2. If writing to a pooled connection fails because the peer had closed it (`EPIPE`,
//!    reset), the upstream never received the whole request and cannot have acted on it:
//!    the request is sent again on a fresh connection.
//! 3. If the request was written whole and the connection then ends before any response
//!    byte, the upstream may have acted on it. Only an idempotent method (RFC 9110 §9.2.2:
//!    `GET`, `HEAD`, `OPTIONS`, `TRACE`, `PUT`, `DELETE`) is sent again; a `POST` fails with
//!    [`UpstreamError::ClosedEarly`] and the caller decides (the gateway tries the next
//!    provider, never the same one).
//!
//! A fresh connection is never retried, whatever happened on it. Each move to a fresh
//! connection counts in [`PoolStats::stale_retries_total`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), gatekeeper_net::upstream::UpstreamError> {
//! use gatekeeper_net::upstream::{tls_client_config, Origin, Pool, PoolConfig};
//! let tls = tls_client_config(None)?;
//! let pool = Pool::new(Origin::parse("https://api.openai.com/v1")?, PoolConfig::default(), Some(tls));
//! let mut response = pool
//!     .send("POST", "/chat/completions", &[("authorization", b"Bearer sk-...")], b"{}")
//!     .await?;
//! while let Some(piece) = response.chunk().await? {
//!     // relay `piece` to the client
//!     # let _ = piece;
//! }
//! # Ok(())
//! # }
//! ```

mod config;
mod conn;
mod error;
mod head;
mod httpdate;
mod origin;
mod pool;
mod request;
mod resolve;
mod response;
mod shared;

#[doc(hidden)]
pub mod fuzzing;

pub use config::{tls_client_config, PoolConfig};
pub use error::UpstreamError;
pub use origin::Origin;
pub use pool::Pool;
pub use response::Response;
pub use shared::PoolStats;
