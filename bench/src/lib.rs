//! Benchmarks for Gatekeeper.
//!
//! Criterion benches per pipeline stage live under `bench/benches`, and the
//! side-by-side end-to-end comparison (direct to the mock, nginx, Gatekeeper) is
//! driven by `bench/compare.sh`; `bench/RESULTS.md` records what they measured and
//! with which command. The `gk-bench` comparison tool lands with the load-harness issue.
#![forbid(unsafe_code)]
