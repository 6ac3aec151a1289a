//! `gk-load`: load tooling for Gatekeeper.
//!
//! The crate holds the pieces of the `gk-load` binary as a library so integration tests
//! and later subcommands share them:
//!
//! - [`mock`] — the flags of `gk-load mock`, which runs a mock LLM provider from the
//!   `gatekeeper-mock` crate (OpenAI, Anthropic, Groq and DeepSeek wire formats, with
//!   injectable latency and faults).
//! - [`run`] — an open-loop HTTP/1.1 load generator that measures latency from each
//!   request's intended send time (no coordinated omission). `gk-load run` runs it.
//! - [`http1`] — response-head parsing for the client, plus the chunked decoder it
//!   shares with the mock.
//!
//! ```no_run
//! use gatekeeper_loadtest::mock::MockArgs;
//! use clap::Parser;
//!
//! #[derive(Parser)]
//! struct Cli { #[command(flatten)] mock: MockArgs }
//!
//! let cli = Cli::parse_from(["x", "--listen", "127.0.0.1:0"]);
//! let mock = cli.mock.to_config().and_then(|c| c.build()).expect("valid flags");
//! # let _ = mock;
//! ```
// Only `run::cpu` (getrusage/sysconf), `run::timer` (timerfd) and `run::uring::ring`
// (io_uring buffers the kernel writes) opt out, each block with a SAFETY comment.
#![deny(unsafe_code)]

pub mod http1;
pub mod mock;
pub mod run;
