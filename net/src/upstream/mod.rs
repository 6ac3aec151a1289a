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
