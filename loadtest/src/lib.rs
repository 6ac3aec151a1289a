//! `gk-load`: load tooling for Gatekeeper.
//!
//! The crate holds the pieces of the `gk-load` binary as a library so integration tests
//! and later subcommands share them:
//!
//! - [`mock`] — a fast mock LLM provider speaking the OpenAI, Anthropic, Groq and DeepSeek
//!   wire formats, with injectable latency and faults. `gk-load mock` runs it.
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
#![forbid(unsafe_code)]

pub mod mock;
