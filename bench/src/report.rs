//! `report.json` of a comparison, and what is rendered from it: `report.md` (tables of
//! throughput and latency, with ratios to the direct baseline) and `throughput.svg`.
//!
//! Rendering is a pure function of [`CompareReport`]: the same JSON always gives the
//! same bytes, which `tests/it.rs` checks against committed golden files.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::load::RunNumbers;
use crate::stats::{self, Spread};

/// Version of the `report.json` layout.
pub const REPORT_VERSION: u32 = 1;
/// The target every ratio and added latency is relative to.
pub const BASELINE: &str = "direct";
/// The second reference for throughput: a plain reverse proxy.
pub const REFERENCE: &str = "nginx";

/// Everything one `gk-bench compare` measured (`report.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompareReport {
    /// [`REPORT_VERSION`].
    pub version: u32,
    /// Heading of the report.
    pub title: String,
    /// The command line that produced it.
    pub command: String,
    /// Start time, UTC, `YYYY-MM-DDTHH:MM:SSZ`.
    pub started_utc: String,
    /// The machine.
    pub host: Host,
    /// How load was driven.
    pub load: LoadSetup,
    /// Every target asked for, in run order, with why it was skipped if it was.
    pub targets: Vec<TargetInfo>,
    /// Every run, in the order it ran.
    pub runs: Vec<Run>,
    /// Max throughput per target (closed loop); empty when that phase was skipped.
    pub throughput: Vec<ThroughputRow>,
    /// Latency per open-loop rate.
    pub latency: Vec<LatencySection>,
    /// Plot files in the report folder.
    pub plots: Vec<Plot>,
    /// Anything a reader should know (peers skipped, errors seen, rates chosen).
    pub notes: Vec<String>,
}

/// The machine the comparison ran on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Host {
    /// CPUs this process may use.
    pub cpus: usize,
    /// `uname -sr`-like text.
    pub os: String,
}

/// How load was driven.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadSetup {
    /// What each request is (scenario file or flags).
    pub request: String,
    /// Seconds per run.
    pub duration_s: f64,
    /// Rounds per phase.
    pub rounds: usize,
    /// Closed-loop connections of the throughput phase; `None` when it was skipped.
    pub connections: Option<usize>,
    /// Open-loop rates of the latency phase, req/s.
    pub rates: Vec<f64>,
    /// `gk-load run --threads`.
    pub generator_threads: usize,
    /// How the mock provider ran.
    pub mock: String,
}

/// One target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetInfo {
    /// Short name (`direct`, `nginx`, `gatekeeper`, `litellm`, `portkey`).
    pub name: String,
    /// How it was set up.
    pub description: String,
    /// Version, where it could be read.
    pub version: Option<String>,
    /// Why it did not run at all, or `None`.
    pub skipped: Option<String>,
}

/// The two phases of a comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Closed loop: max throughput.
    Throughput,
    /// Open loop at a fixed rate: latency.
    Latency,
}

/// One `gk-load run`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// Which phase.
    pub phase: Phase,
    /// Open-loop rate, req/s (latency phase only).
    pub rate: Option<f64>,
    /// Round, from 0.
    pub round: usize,
    /// Target name.
    pub target: String,
    /// What it measured.
    pub numbers: RunNumbers,
    /// Its `gk-load` JSON, relative to the report folder (under `raw/`, not committed).
    pub raw: String,
}

/// Max throughput of one target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThroughputRow {
    /// Target name.
    pub target: String,
    /// 2xx answers per second over rounds.
    pub ok_per_s: Spread,
    /// Per-round ratio to [`BASELINE`].
    pub vs_direct: Option<Spread>,
    /// Per-round ratio to [`REFERENCE`].
    pub vs_nginx: Option<Spread>,
    /// Requests sent over all rounds.
    pub sent: u64,
    /// Requests that did not end 2xx over all rounds.
    pub failed: u64,
    /// Target CPU per request, µs, median over rounds (where its pid was known).
    pub target_cpu_us_per_request: Option<f64>,
}

/// Latency of every target at one open-loop rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencySection {
    /// Offered rate, req/s.
    pub rate: f64,
    /// One row per target that ran at this rate.
    pub rows: Vec<LatencyRow>,
    /// Targets not run at this rate, and why.
    pub skipped: Vec<Skip>,
}

/// A target left out of a phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Skip {
    /// Target name.
    pub target: String,
    /// Why.
    pub reason: String,
}

/// Latency of one target at one rate; every value in ms, median over rounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyRow {
    /// Target name.
    pub target: String,
    /// Median latency.
    pub p50_ms: Spread,
    /// 99th percentile.
    pub p99_ms: Spread,
    /// 99.9th percentile.
    pub p999_ms: Spread,
    /// Per-round p50 minus the baseline's p50.
    pub added_p50_ms: Option<Spread>,
    /// Per-round p99 minus the baseline's p99.
    pub added_p99_ms: Option<Spread>,
    /// Per-round p50 ratio to the baseline.
    pub p50_vs_direct: Option<Spread>,
    /// Per-round p99 ratio to the baseline.
    pub p99_vs_direct: Option<Spread>,
    /// Time to first byte, p50, for streamed answers.
    pub ttfb_p50_ms: Option<Spread>,
    /// Time to first byte, p99, for streamed answers.
    pub ttfb_p99_ms: Option<Spread>,
    /// Requests sent over all rounds.
    pub sent: u64,
    /// Requests that did not end 2xx over all rounds.
    pub failed: u64,
}

/// A plot in the report folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plot {
    /// Caption.
    pub title: String,
    /// File name, relative to the report folder.
    pub file: String,
}

type Series = Vec<(usize, f64)>;

fn series(runs: &[&Run], f: impl Fn(&RunNumbers) -> Option<f64>) -> Series {
    runs.iter().filter_map(|r| f(&r.numbers).map(|v| (r.round, v))).collect()
}

fn values(s: &Series) -> Vec<f64> {
    s.iter().map(|(_, v)| *v).collect()
}

/// Max-throughput rows for `targets` (in that order) from the throughput runs.
pub fn summarize_throughput(targets: &[String], runs: &[Run]) -> Vec<ThroughputRow> {
    let of = |name: &str| -> Vec<&Run> {
        runs.iter().filter(|r| r.phase == Phase::Throughput && r.target == name).collect()
    };
    let ok_per_s = |rs: &[&Run]| series(rs, |n| Some(n.ok_per_s));
    let base = ok_per_s(&of(BASELINE));
    let reference = ok_per_s(&of(REFERENCE));
    targets
        .iter()
        .filter_map(|name| {
            let rs = of(name);
            let mine = ok_per_s(&rs);
            Some(ThroughputRow {
                target: name.clone(),
                ok_per_s: stats::spread(&values(&mine))?,
                vs_direct: stats::paired_ratio(&mine, &base),
                vs_nginx: stats::paired_ratio(&mine, &reference),
                sent: rs.iter().map(|r| r.numbers.sent).sum(),
                failed: rs.iter().map(|r| r.numbers.failed).sum(),
                target_cpu_us_per_request: stats::median(&values(&series(&rs, |n| n.target_cpu_us_per_request))),
            })
        })
        .collect()
}

/// Latency rows for `targets` (in that order) at `rate` from the latency runs.
pub fn summarize_latency(targets: &[String], runs: &[Run], rate: f64) -> Vec<LatencyRow> {
    let of = |name: &str| -> Vec<&Run> {
        runs.iter()
            .filter(|r| r.phase == Phase::Latency && r.target == name && r.rate.is_some_and(|x| x == rate))
            .collect()
    };
    let base = of(BASELINE);
    let (b50, b99) = (series(&base, |n| Some(n.latency.p50_ms)), series(&base, |n| Some(n.latency.p99_ms)));
    targets
        .iter()
        .filter_map(|name| {
            let rs = of(name);
            let p50 = series(&rs, |n| Some(n.latency.p50_ms));
            let p99 = series(&rs, |n| Some(n.latency.p99_ms));
            let p999 = series(&rs, |n| Some(n.latency.p999_ms));
            Some(LatencyRow {
                target: name.clone(),
                p50_ms: stats::spread(&values(&p50))?,
                p99_ms: stats::spread(&values(&p99))?,
                p999_ms: stats::spread(&values(&p999))?,
                added_p50_ms: stats::paired_difference(&p50, &b50),
                added_p99_ms: stats::paired_difference(&p99, &b99),
                p50_vs_direct: stats::paired_ratio(&p50, &b50),
                p99_vs_direct: stats::paired_ratio(&p99, &b99),
                ttfb_p50_ms: stats::spread(&values(&series(&rs, |n| n.ttfb.map(|t| t.p50_ms)))),
                ttfb_p99_ms: stats::spread(&values(&series(&rs, |n| n.ttfb.map(|t| t.p99_ms)))),
                sent: rs.iter().map(|r| r.numbers.sent).sum(),
                failed: rs.iter().map(|r| r.numbers.failed).sum(),
            })
        })
        .collect()
}

/// `1234567.8` → `1,234,568`.
pub fn thousands(x: f64) -> String {
    if !x.is_finite() {
        return "–".into();
    }
    let n = x.round().abs() as u64;
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if x.round() < 0.0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn ms(x: f64) -> String {
    format!("{x:.3}")
}

fn signed_ms(x: f64) -> String {
    format!("{x:+.3}")
}

/// A ratio with two decimals, or two significant digits below 0.1 (LiteLLM at 0.0010× of
/// direct must not print as 0.00×).
fn times(x: f64) -> String {
    if x.is_finite() && x > 0.0 && x < 0.1 {
        let decimals = (1 - x.log10().floor() as i32).clamp(2, 12) as usize;
        return format!("{x:.decimals$}×");
    }
    format!("{x:.2}×")
}

/// `median (min–max)` when rounds differ, else just the median.
fn with_range(s: &Spread, f: impl Fn(f64) -> String) -> String {
    if s.n > 1 && s.min != s.max {
        format!("{} ({}–{})", f(s.median), f(s.min), f(s.max))
    } else {
        f(s.median)
    }
}

fn opt(s: &Option<Spread>, f: impl Fn(f64) -> String) -> String {
    s.as_ref().map_or_else(|| "–".into(), |s| with_range(s, f))
}

fn failed(sent: u64, failed: u64) -> String {
    if failed == 0 {
        "0".into()
    } else {
        format!("{failed} ({:.2} %)", 100.0 * failed as f64 / sent.max(1) as f64)
    }
}

/// `report.md`.
pub fn render_markdown(r: &CompareReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# {}\n", r.title);
    let _ = writeln!(s, "{} · {} CPUs · {}\n", r.started_utc, r.host.cpus, r.host.os);
    let _ = writeln!(s, "```sh\n{}\n```\n", r.command);
    let _ = writeln!(
        s,
        "Load: {}; `gk-load run` with {} thread(s), {} s per run, {} rounds per phase, runs alternating \
         round-robin over the targets (A/B/C/A/B/C). Mock provider: {}. Ratios and added latency are taken \
         per round against `{BASELINE}` in the same round; each cell is the median over rounds, with the \
         smallest and largest round in parentheses.\n",
        r.load.request, r.load.generator_threads, r.load.duration_s, r.load.rounds, r.load.mock
    );
    render_targets(&mut s, r);
    render_throughput(&mut s, r);
    for section in &r.latency {
        render_latency(&mut s, r, section);
    }
    if !r.notes.is_empty() {
        let _ = writeln!(s, "## Notes\n");
        for n in &r.notes {
            let _ = writeln!(s, "- {n}");
        }
        s.push('\n');
    }
    let _ = writeln!(
        s,
        "## Reading this\n\n\
         - **2xx req/s** is the closed-loop maximum: every connection sends its next request when the \
         previous answer ends. Only 2xx answers count, so a target that fails fast does not look fast.\n\
         - **Latency** is measured in an open loop from each request's intended send time, so stalls \
         show up in the tail as users at that rate would see them. Closed-loop latency is not reported.\n\
         - **added** is the target's percentile minus `{BASELINE}`'s in the same round: what the proxy \
         adds on top of the provider. **×** columns are ratios to `{BASELINE}`.\n\
         - This machine is shared and noisy: compare ratios within one report, not absolute numbers \
         across reports."
    );
    s
}

fn render_targets(s: &mut String, r: &CompareReport) {
    let _ = writeln!(s, "## Targets\n\n| target | setup | version |\n|---|---|---|");
    for t in &r.targets {
        let setup = match &t.skipped {
            Some(why) => format!("**skipped**: {why}"),
            None => t.description.clone(),
        };
        let _ = writeln!(s, "| {} | {} | {} |", t.name, setup, t.version.as_deref().unwrap_or("–"));
    }
    s.push('\n');
}

fn render_throughput(s: &mut String, r: &CompareReport) {
    if r.throughput.is_empty() {
        return;
    }
    let connections = r.load.connections.map_or_else(|| "?".into(), |c| c.to_string());
    let _ = writeln!(s, "## Max throughput (closed loop, {connections} connections)\n");
    let has_nginx = r.throughput.iter().any(|t| t.vs_nginx.is_some());
    let _ = write!(s, "| target | 2xx req/s | × {BASELINE} |");
    if has_nginx {
        let _ = write!(s, " × {REFERENCE} |");
    }
    let _ = writeln!(s, " failed | target CPU µs/req |");
    let _ = writeln!(s, "|---|--:|--:|{}--:|--:|", if has_nginx { "--:|" } else { "" });
    for t in &r.throughput {
        let _ = write!(s, "| {} | {} | {} |", t.target, with_range(&t.ok_per_s, thousands), opt(&t.vs_direct, times));
        if has_nginx {
            let _ = write!(s, " {} |", opt(&t.vs_nginx, times));
        }
        let cpu = t.target_cpu_us_per_request.map_or_else(|| "–".into(), |c| format!("{c:.1}"));
        let _ = writeln!(s, " {} | {cpu} |", failed(t.sent, t.failed));
    }
    s.push('\n');
    if let Some(p) = r.plots.iter().find(|p| p.file == THROUGHPUT_SVG) {
        let _ = writeln!(s, "![{}]({})\n", p.title, p.file);
    }
}

fn render_latency(s: &mut String, r: &CompareReport, section: &LatencySection) {
    let _ = writeln!(s, "## Latency at {} req/s (open loop)\n", thousands(section.rate));
    let streamed = section.rows.iter().any(|row| row.ttfb_p50_ms.is_some());
    let _ = write!(
        s,
        "| target | p50 ms | p99 ms | p99.9 ms | added p50 ms | added p99 ms | p50 × {BASELINE} | p99 × {BASELINE} |"
    );
    if streamed {
        let _ = write!(s, " ttfb p50 ms | ttfb p99 ms |");
    }
    let _ = writeln!(s, " failed |");
    let _ = writeln!(s, "|---|--:|--:|--:|--:|--:|--:|--:|{}--:|", if streamed { "--:|--:|" } else { "" });
    for row in &section.rows {
        let _ = write!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            row.target,
            with_range(&row.p50_ms, ms),
            with_range(&row.p99_ms, ms),
            with_range(&row.p999_ms, ms),
            opt(&row.added_p50_ms, signed_ms),
            opt(&row.added_p99_ms, signed_ms),
            opt(&row.p50_vs_direct, times),
            opt(&row.p99_vs_direct, times),
        );
        if streamed {
            let _ = write!(s, " {} | {} |", opt(&row.ttfb_p50_ms, ms), opt(&row.ttfb_p99_ms, ms));
        }
        let _ = writeln!(s, " {} |", failed(row.sent, row.failed));
    }
    s.push('\n');
    for skip in &section.skipped {
        let _ = writeln!(s, "Not run at this rate: `{}` — {}\n", skip.target, skip.reason);
    }
    if let Some(p) = r.plots.iter().find(|p| p.file == latency_svg(section.rate)) {
        let _ = writeln!(s, "![{}]({})\n", p.title, p.file);
    }
}

/// File name of the throughput bar chart.
pub const THROUGHPUT_SVG: &str = "throughput.svg";

/// File name of the percentile plot at `rate`.
pub fn latency_svg(rate: f64) -> String {
    format!("latency-{}.svg", rate.round() as u64)
}

/// A horizontal bar chart of each target's median 2xx req/s, labelled with its ratio to
/// the baseline; `None` when there are no throughput rows.
pub fn render_throughput_svg(r: &CompareReport) -> Option<String> {
    const WIDTH: f64 = 760.0;
    const LABEL_W: f64 = 110.0;
    const BAR_W: f64 = 440.0;
    const ROW_H: f64 = 30.0;
    const TOP: f64 = 46.0;
    let rows = &r.throughput;
    let top = rows.iter().map(|t| t.ok_per_s.max).fold(0.0, f64::max);
    if rows.is_empty() || top <= 0.0 {
        return None;
    }
    let height = TOP + ROW_H * rows.len() as f64 + 24.0;
    let connections = r.load.connections.map_or_else(|| "?".into(), |c| c.to_string());
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" viewBox=\"0 0 {WIDTH} {height}\" \
         font-family=\"sans-serif\" font-size=\"12\">"
    );
    let _ = writeln!(s, "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>");
    let _ = writeln!(
        s,
        "<text x=\"{:.1}\" y=\"22\" font-size=\"14\" font-weight=\"bold\">Max throughput, 2xx req/s (closed loop, {} connections; median of {} rounds, whiskers min–max)</text>",
        10.0,
        escape(&connections),
        r.load.rounds
    );
    for (i, t) in rows.iter().enumerate() {
        let y = TOP + ROW_H * i as f64;
        let w = BAR_W * t.ok_per_s.median / top;
        let color = if t.target == "gatekeeper" { "#d9480f" } else { "#4263eb" };
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LABEL_W - 8.0,
            y + 15.0,
            escape(&t.target)
        );
        let _ = writeln!(
            s,
            "<rect x=\"{LABEL_W:.1}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"{:.1}\" fill=\"{color}\"/>",
            y + 3.0,
            ROW_H - 10.0
        );
        let (x0, x1) = (LABEL_W + BAR_W * t.ok_per_s.min / top, LABEL_W + BAR_W * t.ok_per_s.max / top);
        let _ = writeln!(
            s,
            "<line x1=\"{x0:.1}\" y1=\"{:.1}\" x2=\"{x1:.1}\" y2=\"{:.1}\" stroke=\"black\" stroke-width=\"1.5\"/>",
            y + 13.0,
            y + 13.0
        );
        let ratio = t.vs_direct.map_or_else(String::new, |v| format!(" ({} {BASELINE})", times(v.median)));
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\">{}{}</text>",
            LABEL_W + BAR_W + 10.0,
            y + 15.0,
            thousands(t.ok_per_s.median),
            escape(&ratio)
        );
    }
    let _ = writeln!(s, "</svg>");
    Some(s)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
