//! The run's results: the `--json` document and the summary table printed on stdout.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::stats::{Distribution, ErrorCounts};

/// Version of the JSON layout; bumped when a field changes meaning.
pub const REPORT_VERSION: u32 = 1;

/// How the run was configured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConfigReport {
    /// Target URL.
    pub url: String,
    /// `open` (arrival schedule) or `closed` (fixed connections).
    pub mode: String,
    /// The arrival schedule, e.g. `rate 1000/s`; `closed N connections` in closed loop.
    pub schedule: String,
    /// Mean target rate, requests/s (open loop only).
    pub rate_target: Option<f64>,
    /// Run length limit, seconds.
    pub duration_s: Option<f64>,
    /// Request count limit.
    pub requests_max: Option<u64>,
    /// Closed-loop connections.
    pub connections: Option<usize>,
    /// Keep-alive pool size.
    pub connections_max: usize,
    /// Bound on requests in flight.
    pub inflight_max: usize,
    /// Runtime worker threads.
    pub threads: usize,
    /// Per-request timeout, seconds.
    pub timeout_s: f64,
    /// Scenario file, if any.
    pub scenario: Option<String>,
    /// Number of request templates.
    pub templates: usize,
    /// RNG seed of the template mix.
    pub seed: u64,
    /// Open loop: the pacer's batching window (`--pace-window`), µs; 0 = none.
    #[serde(default)]
    pub pace_window_us: u64,
    /// The I/O engine that ran: `tokio`, or `uring (SETUP)` with the ring's set-up flags.
    #[serde(default)]
    pub engine: String,
}

/// Request counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Requests started.
    pub sent: u64,
    /// Requests finished (answer or error); equals `sent` after a clean run.
    pub completed: u64,
    /// Finished with a 2xx status.
    pub ok: u64,
    /// Open loop: requests whose slot came while `inflight_max` were in flight, so they
    /// waited for a worker (their latency still counts from the slot).
    pub waited_for_slot: u64,
    /// Requests retried once on a fresh connection after a reused one was found closed.
    pub retried: u64,
}

/// Bytes moved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    /// Bytes written.
    pub bytes_out: u64,
    /// Bytes read.
    pub bytes_in: u64,
    /// Bytes written per second of the run.
    pub bytes_out_per_s: f64,
    /// Bytes read per second of the run.
    pub bytes_in_per_s: f64,
}

/// CPU time of the generator and, with `--target-pid`, the target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuReport {
    /// Generator user time over the run, seconds.
    pub generator_user_s: f64,
    /// Generator system time over the run, seconds.
    pub generator_sys_s: f64,
    /// Generator (user + sys) per completed request, µs.
    pub generator_us_per_request: f64,
    /// The `--target-pid`.
    pub target_pid: Option<u32>,
    /// Target user time over the run, seconds.
    pub target_user_s: Option<f64>,
    /// Target system time over the run, seconds.
    pub target_sys_s: Option<f64>,
    /// Target (user + sys) per completed request, µs (clock-tick resolution, 10 ms).
    pub target_us_per_request: Option<f64>,
    /// generator_us_per_request / target_us_per_request.
    pub generator_to_target_ratio: Option<f64>,
}

/// The whole `--json` document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// [`REPORT_VERSION`].
    pub version: u32,
    /// Configuration.
    pub config: ConfigReport,
    /// Wall-clock start, ms since the Unix epoch.
    pub started_unix_ms: u64,
    /// Start to last answer, seconds.
    pub elapsed_s: f64,
    /// Completed requests / elapsed_s.
    pub rate_achieved: f64,
    /// Request counts.
    pub requests: Counts,
    /// Count per status code; `"0"` = no answer.
    pub statuses: BTreeMap<String, u64>,
    /// Errors by class.
    pub errors: ErrorCounts,
    /// Latency from intended send time to end of answer, every request.
    pub latency_us: Distribution,
    /// The same, of 2xx answers only (the admitted requests when the target sheds load).
    #[serde(default)]
    pub latency_ok_us: Distribution,
    /// Streams: intended send time to first body byte.
    pub ttfb_us: Distribution,
    /// Streams: largest gap between body reads, per request.
    pub chunk_gap_max_us: Distribution,
    /// How late each request left against its slot (generator lag).
    pub send_lag_us: Distribution,
    /// Bytes moved.
    pub throughput: Throughput,
    /// CPU time.
    pub cpu: CpuReport,
}

fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1000.0)
}

fn pcts(d: &Distribution) -> String {
    let at = |p| d.at(p).map_or_else(|| "-".to_string(), ms);
    format!(
        "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (ms, n={})",
        at(50.0),
        at(90.0),
        at(99.0),
        at(99.9),
        ms(d.max_us),
        d.count
    )
}

impl Report {
    /// The summary table printed on stdout.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let c = &self.config;
        let e = &self.errors;
        let r = &self.requests;
        // Writes into a String cannot fail.
        let _ = writeln!(s, "gk-load run  {}  ({} loop, {}, engine {})", c.url, c.mode, c.schedule, c.engine);
        let _ = writeln!(
            s,
            "  requests    {} sent, {} completed, {} 2xx, {} waited for a slot, {} retried",
            r.sent, r.completed, r.ok, r.waited_for_slot, r.retried
        );
        let target = c.rate_target.map_or_else(String::new, |t| format!("target {t:.1}/s, "));
        let _ = writeln!(s, "  rate        {target}achieved {:.1}/s over {:.3} s", self.rate_achieved, self.elapsed_s);
        let _ = writeln!(
            s,
            "  errors      {} (connect {}, timeout {}, reset {}, protocol {}, http_4xx {}, http_5xx {})",
            e.total(),
            e.connect,
            e.timeout,
            e.reset,
            e.protocol,
            e.http_4xx,
            e.http_5xx
        );
        let _ = writeln!(s, "  latency     {}", pcts(&self.latency_us));
        if self.latency_ok_us.count != self.latency_us.count {
            let _ = writeln!(s, "  latency 2xx {}", pcts(&self.latency_ok_us));
        }
        if self.ttfb_us.count > 0 {
            let _ = writeln!(s, "  ttfb        {}", pcts(&self.ttfb_us));
            let _ = writeln!(s, "  chunk gap   {}", pcts(&self.chunk_gap_max_us));
        }
        if c.mode == "open" {
            let _ = writeln!(s, "  send lag    {}", pcts(&self.send_lag_us));
        }
        let t = &self.throughput;
        let _ =
            writeln!(s, "  throughput  {:.2} MB/s in, {:.2} MB/s out", t.bytes_in_per_s / 1e6, t.bytes_out_per_s / 1e6);
        let u = &self.cpu;
        let _ = writeln!(
            s,
            "  gen CPU     {:.2} µs/request (user {:.3} s, sys {:.3} s)",
            u.generator_us_per_request, u.generator_user_s, u.generator_sys_s
        );
        if let (Some(pid), Some(t)) = (u.target_pid, u.target_us_per_request) {
            let _ = writeln!(
                s,
                "  target CPU  {t:.2} µs/request (pid {pid}); generator/target {:.2}",
                u.generator_to_target_ratio.unwrap_or(0.0)
            );
        }
        s
    }
}
