//! The numbers `gk-bench` takes from one `gk-load run --json` report.
//!
//! Only the fields documented in `loadtest/README.md` are read, and unknown ones are
//! ignored, so the load tool can grow its report without breaking this reader.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::BenchError;

#[derive(Deserialize)]
struct Raw {
    version: u32,
    elapsed_s: f64,
    requests: RawCounts,
    #[serde(default)]
    errors: BTreeMap<String, u64>,
    latency_us: RawDistribution,
    #[serde(default)]
    ttfb_us: Option<RawDistribution>,
    #[serde(default)]
    cpu: Option<RawCpu>,
}

#[derive(Deserialize)]
struct RawCounts {
    sent: u64,
    completed: u64,
    ok: u64,
}

#[derive(Deserialize)]
struct RawDistribution {
    count: u64,
    max_us: f64,
    percentiles: Vec<RawPoint>,
}

#[derive(Deserialize)]
struct RawPoint {
    p: f64,
    us: f64,
}

#[derive(Deserialize)]
struct RawCpu {
    #[serde(default)]
    generator_us_per_request: Option<f64>,
    #[serde(default)]
    target_us_per_request: Option<f64>,
}

/// Latency percentiles of one run, milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest value.
    pub max_ms: f64,
}

/// What one run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunNumbers {
    /// Requests sent.
    pub sent: u64,
    /// Answers with a 2xx status.
    pub ok: u64,
    /// Requests that did not end in a 2xx answer (errors of any class, or no answer).
    pub failed: u64,
    /// Failures by class, as `gk-load` counts them (`connect`, `timeout`, `http_5xx`, …); zeros left out.
    pub errors: BTreeMap<String, u64>,
    /// Seconds from the first send to the last answer.
    pub elapsed_s: f64,
    /// 2xx answers per second: the throughput that counts (fast errors do not).
    pub ok_per_s: f64,
    /// Latency from each request's intended send time to its answer's end.
    pub latency: Percentiles,
    /// Time to the first body byte, for streamed answers; `None` when nothing streamed.
    pub ttfb: Option<Percentiles>,
    /// Generator CPU per request, µs.
    pub generator_cpu_us_per_request: Option<f64>,
    /// Target process CPU per request, µs (only for targets whose pid was given).
    pub target_cpu_us_per_request: Option<f64>,
}

/// Reads a `gk-load run --json` report.
pub fn read(path: &Path) -> Result<RunNumbers, BenchError> {
    let bad = |message: String| BenchError::BadLoadReport { path: path.to_path_buf(), message };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    parse(&text).map_err(bad)
}

/// Parses the text of a `gk-load run --json` report.
pub fn parse(text: &str) -> Result<RunNumbers, String> {
    let raw: Raw = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if raw.version != 1 {
        return Err(format!("report version {} (this gk-bench reads version 1)", raw.version));
    }
    let latency = percentiles(&raw.latency_us).ok_or("latency_us has no p50/p99/p99.9")?;
    let ttfb = raw.ttfb_us.as_ref().filter(|d| d.count > 0).and_then(percentiles);
    let ok_per_s = if raw.elapsed_s > 0.0 { raw.requests.ok as f64 / raw.elapsed_s } else { 0.0 };
    debug_assert!(raw.requests.completed <= raw.requests.sent || raw.requests.sent == 0);
    Ok(RunNumbers {
        sent: raw.requests.sent,
        ok: raw.requests.ok,
        failed: raw.requests.sent.saturating_sub(raw.requests.ok),
        errors: raw.errors.into_iter().filter(|(_, n)| *n > 0).collect(),
        elapsed_s: raw.elapsed_s,
        ok_per_s,
        latency,
        ttfb,
        generator_cpu_us_per_request: raw.cpu.as_ref().and_then(|c| c.generator_us_per_request),
        target_cpu_us_per_request: raw.cpu.as_ref().and_then(|c| c.target_us_per_request),
    })
}

fn percentiles(d: &RawDistribution) -> Option<Percentiles> {
    let at = |p: f64| d.percentiles.iter().find(|x| (x.p - p).abs() < 1e-6).map(|x| x.us / 1000.0);
    Some(Percentiles { p50_ms: at(50.0)?, p99_ms: at(99.0)?, p999_ms: at(99.9)?, max_ms: d.max_us / 1000.0 })
}
