//! `gk-load`: load tooling for Gatekeeper.
//!
//! The crate holds the pieces of the `gk-load` binary as a library so integration tests
//! and later subcommands share them:
//!
//! - [`mock`] — a fast mock LLM provider speaking the OpenAI, Anthropic, Groq and DeepSeek
//!   wire formats, with injectable latency and faults. `gk-load mock` runs it.
//! - [`run`] — an open-loop HTTP/1.1 load generator that measures latency from each
//!   request's intended send time (no coordinated omission). `gk-load run` runs it.
//! - [`http1`] — HTTP/1.1 pieces both sides share (chunked decoding, response heads).
//!
//! ```no_run
//! use gatekeeper_loadtest::mock::{self, MockArgs};
//! use clap::Parser;
//!
//! #[derive(Parser)]
//! struct Cli { #[command(flatten)] mock: MockArgs }
//!
//! let cli = Cli::parse_from(["x", "--listen", "127.0.0.1:0"]);
//! let config = mock::Config::from_args(&cli.mock).expect("valid flags");
//! # let _ = config;
//! ```
// Only `run::cpu` (getrusage/sysconf), `run::timer` (timerfd) and `run::uring::ring`
// (io_uring buffers the kernel writes) opt out, each block with a SAFETY comment.
#![deny(unsafe_code)]

pub mod http1;
pub mod mock;
pub mod run;
