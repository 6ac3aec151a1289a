//! `gatekeeper-mock`: mock LLM providers for Gatekeeper's tests, demo and benchmarks.
//!
//! A mock speaks the OpenAI Chat Completions format (plus the Groq and DeepSeek
//! variants) or the Anthropic Messages format over a small hand-rolled HTTP/1.1 server
//! on tokio, with injectable latency and faults. `gk-load mock` (crate
//! `gatekeeper-loadtest`) runs one as a process; `gatekeeper demo` and the gateway's
//! integration tests run them in-process.
//!
//! Hand-off: [`MockConfig`] (a builder; defaults as `gk-load mock`) →
//! [`MockConfig::build`] (every check, one place; [`ConfigError`] names the setting) →
//! [`Mock`] → either [`Mock::start`] (its own thread and runtime; the [`MockServer`]
//! handle has the address, the [`stats`](MockServer::stats) and stops on drop) or
//! [`serve`] (an accept loop on the caller's runtime). Inside, `server` reads heads and
//! bodies with [`http`] and [`http1`], decides latency and faults from the settings,
//! [`faults`], [`schedule`], [`latency`] and the `X-Mock-*` headers, and writes answers
//! in the provider's format. [`stats`] counts what arrived, also served at
//! `GET /__mock/stats` (`POST /__mock/reset` zeroes it).
//!
//! Per-request headers override the settings. Each value is a plain value, or a comma
//! list of `NAME=VALUE` entries where only the entry naming this mock (else `*`)
//! applies, so one header forwarded by the gateway can steer several mocks:
//!
//! | header | effect |
//! |---|---|
//! | `X-Mock-Fault` | `none`, `429`, `500`, `503`, `reset`, `stall` or `cut`; beats the fault setting and the schedule |
//! | `X-Mock-Retry-After` | seconds sent with a 429 |
//! | `X-Mock-Cut-After` | streamed events sent before a `cut` (default 2) |
//! | `X-Mock-Latency-Ms` | delay before a non-streamed answer |
//! | `X-Mock-Ttft-Ms` | delay before the first token |
//! | `X-Mock-Token-Ms` | delay between tokens |
//! | `X-Mock-Tokens` | output tokens |
//!
//! ```
//! use gatekeeper_mock::{Fault, MockConfig, Mode};
//!
//! let server = MockConfig::new("127.0.0.1:0".parse().expect("address"))
//!     .name("primary")
//!     .mode(Mode::OpenAi)
//!     .api_key("sk-test")
//!     .ttft_ms(5)
//!     .fault(Fault::RateLimited)
//!     .build()
//!     .expect("valid settings")
//!     .start()
//!     .expect("bound");
//! println!("mock on {}", server.addr());
//! assert_eq!(server.stats().requests, 0);
//! server.stop().expect("stopped cleanly");
//! ```
#![forbid(unsafe_code)]

mod anthropic;
mod config;
mod error;
pub mod faults;
mod handle;
pub mod http;
pub mod http1;
pub mod latency;
mod openai;
pub mod request;
pub mod schedule;
mod server;
pub mod stats;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

pub use config::{Mock, MockConfig, Mode, PAUSE_S_MAX, RETRY_AFTER_S_MAX, THREADS_MAX, TOKENS_PER_S_MAX};
pub use error::ConfigError;
pub use faults::Fault;
pub use handle::MockServer;
pub use latency::{Pauses, Ttft};
pub use schedule::{Schedule, ScheduleError};
pub use stats::{Stats, StatsSnapshot};

/// Serves `mock` on an already-bound listener, on the caller's runtime, until
/// `shutdown` resolves; returns the counters so the caller can read them.
pub async fn serve(
    listener: TcpListener,
    mock: Mock,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<Arc<Stats>> {
    let stats = Arc::new(Stats::default());
    server::serve(listener, mock, stats.clone(), shutdown).await?;
    Ok(stats)
}
