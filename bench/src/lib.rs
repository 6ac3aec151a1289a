//! Benchmarks for Gatekeeper: criterion benches per pipeline stage and `gk-bench`, a
//! side-by-side load comparison against other proxies and gateways.
//!
//! `gk-bench compare` starts every target itself — the mock provider (`gk-load mock`,
//! the "direct" baseline), nginx `proxy_pass`, Gatekeeper, and where installed LiteLLM
//! and the Portkey gateway — then drives each with `gk-load run`, alternating targets
//! round by round so machine drift hits all alike, and writes a report folder.
//! The pieces hand off in this order:
//!
//! - [`plan`] decides the order of the runs (round-robin over targets, N rounds);
//! - [`procs`] starts and supervises child processes, waits for readiness with a bound,
//!   and kills every process group it started on drop (also on error or Ctrl-C);
//! - [`targets`] knows how to configure and start each kind of target;
//! - [`load`] reads the numbers out of one `gk-load run --json` report;
//! - [`stats`] holds the medians and the per-round ratio math;
//! - [`report`] is `report.json` ([`report::CompareReport`]), its markdown table and the
//!   throughput bar chart; rendering is pure, so a golden test pins it byte for byte;
//! - [`compare`] ties them together for the CLI.
//!
//! ```no_run
//! use gatekeeper_bench::report::{render_markdown, CompareReport};
//! let text = std::fs::read_to_string("bench/results/x/report.json").expect("report");
//! let report: CompareReport = serde_json::from_str(&text).expect("valid report.json");
//! print!("{}", render_markdown(&report));
//! ```
//!
//! The criterion stage benches live in `bench/benches/stages.rs`; `bench/README.md`
//! says how to run both and how to read them.
#![forbid(unsafe_code)]

pub mod compare;
pub mod error;
pub mod load;
pub mod plan;
pub mod procs;
pub mod report;
pub mod stats;
pub mod targets;

pub use error::BenchError;
