//! The grid `--calibrate` measures, what each point measured, and how the best point
//! is chosen and tabled.

use std::net::SocketAddr;
use std::path::Path;

use gatekeeper_tuning::Advice;
use serde::Serialize;

/// A point within this share of the best maximum throughput may be recommended for
/// its tail latency.
pub const THROUGHPUT_KEPT: f64 = 0.95;
/// Most points a grid holds (the SVG and the table stay readable).
pub const POINTS_MAX: usize = 8;
/// The nice value the grid tries for the bridge thread.
const BRIDGE_NICE: i32 = 10;
/// The smaller ring the grid tries.
const SMALL_RING_ENTRIES: u32 = 256;
/// The longer audit batching wait the grid tries, ms (the default is 50).
const LONG_BATCH_WAIT_MS: u64 = 200;

/// Which grid to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GridSize {
    /// The advice and one alternative per setting (up to 6 points).
    Small,
    /// The advice and the other bridge placement (2 points), for a smoke run.
    Tiny,
}

/// One set of settings the grid measures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Point {
    /// Short name (table row, plot label).
    pub name: String,
    /// `cpus` (its length is the shard count).
    pub cpus: Vec<usize>,
    /// `bridge.cpu`.
    pub bridge_cpu: Option<usize>,
    /// `bridge.nice`.
    pub bridge_nice: Option<i32>,
    /// `uring.entries`.
    pub uring_entries: u32,
    /// `audit.batch_wait_ms`.
    pub audit_batch_wait_ms: u64,
}

impl Point {
    /// The settings as `gatekeeper.yaml` keys (what the recommendation prints).
    pub fn yaml(&self) -> String {
        let cpus: Vec<String> = self.cpus.iter().map(usize::to_string).collect();
        let mut y = format!("shards: {}\ncpus: [{}]\n", self.cpus.len(), cpus.join(", "));
        let bridge: Vec<String> =
            [self.bridge_cpu.map(|c| format!("cpu: {c}")), self.bridge_nice.map(|n| format!("nice: {n}"))]
                .into_iter()
                .flatten()
                .collect();
        if !bridge.is_empty() {
            y.push_str(&format!("bridge: {{ {} }}\n", bridge.join(", ")));
        }
        y.push_str(&format!("uring: {{ entries: {} }}\n", self.uring_entries));
        y.push_str(&format!("audit: {{ batch_wait_ms: {} }}\n", self.audit_batch_wait_ms));
        y
    }

    /// A whole config for the gateway under test: this point, one mock provider, the
    /// audit log (on, as by default) in `data_dir`.
    pub(super) fn config(&self, mock: SocketAddr, data_dir: &Path) -> String {
        let cpus: Vec<String> = self.cpus.iter().map(usize::to_string).collect();
        let mut y = format!(
            "cpus: [{}]\nuring: {{ entries: {} }}\ndrain_timeout_ms: 1000\n\
             providers:\n  - {{ name: mock, kind: openai_compatible, base_url: \"http://{mock}/v1\" }}\n\
             models:\n  - {{ name: m, provider: mock, upstream_model: m }}\n\
             audit: {{ data_dir: \"{}\", batch_wait_ms: {} }}\n",
            cpus.join(", "),
            self.uring_entries,
            data_dir.display(),
            self.audit_batch_wait_ms
        );
        if self.bridge_cpu.is_some() || self.bridge_nice.is_some() {
            let cpu = self.bridge_cpu.map_or(String::new(), |c| format!("cpu: {c}, "));
            let nice = self.bridge_nice.map_or(String::new(), |n| format!("nice: {n}"));
            y.push_str(&format!("bridge: {{ {} }}\n", format!("{cpu}{nice}").trim_end_matches(", ")));
        }
        y
    }
}

/// The grid around `advice`: the advice itself first, then one setting changed at a time.
pub fn grid(advice: &Advice, size: GridSize) -> Vec<Point> {
    let cpus: Vec<usize> = if advice.cpus.is_empty() {
        (0..advice.shards.max(1)).collect()
    } else {
        advice.cpus.iter().map(|&c| c as usize).collect()
    };
    let base = Point {
        name: "advised".into(),
        cpus: cpus.clone(),
        bridge_cpu: advice.bridge.cpu.map(|c| c as usize),
        bridge_nice: advice.bridge.nice,
        uring_entries: advice.uring.entries,
        audit_batch_wait_ms: 50,
    };
    let mut points = vec![base.clone()];
    // The other bridge placement: a core of its own if the advice shares (SCHED_IDLE on
    // the shards' cores), else nice.
    let other_bridge = if base.bridge_cpu.is_none() && cpus.len() >= 2 {
        let (last, rest) = cpus.split_last().map(|(l, r)| (*l, r.to_vec())).unwrap_or((0, Vec::new()));
        Point { name: "bridge own core".into(), cpus: rest, bridge_cpu: Some(last), bridge_nice: None, ..base.clone() }
    } else {
        Point {
            name: format!("bridge nice {BRIDGE_NICE}"),
            bridge_cpu: None,
            bridge_nice: Some(BRIDGE_NICE),
            ..base.clone()
        }
    };
    points.push(other_bridge);
    if size == GridSize::Tiny {
        return points;
    }
    if base.bridge_cpu.is_some() || base.bridge_nice.is_some() {
        points.push(Point { name: "bridge unplaced".into(), bridge_cpu: None, bridge_nice: None, ..base.clone() });
    } else {
        // The advice shares the cores as SCHED_IDLE (`bridge.policy: auto`); nice makes
        // it a normal thread at a lower priority, the other way to share them.
        points.push(Point {
            name: format!("bridge nice {BRIDGE_NICE}"),
            bridge_nice: Some(BRIDGE_NICE),
            ..base.clone()
        });
    }
    if cpus.len() > 1 {
        points.push(Point { name: "1 shard".into(), cpus: vec![cpus[0]], ..base.clone() });
    }
    if base.uring_entries != SMALL_RING_ENTRIES {
        points.push(Point {
            name: format!("ring {SMALL_RING_ENTRIES}"),
            uring_entries: SMALL_RING_ENTRIES,
            ..base.clone()
        });
    }
    points.push(Point {
        name: format!("audit batch {LONG_BATCH_WAIT_MS} ms"),
        audit_batch_wait_ms: LONG_BATCH_WAIT_MS,
        ..base.clone()
    });
    points.truncate(POINTS_MAX);
    points
}

/// What one point measured.
#[derive(Debug, Clone, Serialize)]
pub struct Measured {
    /// The settings.
    pub point: Point,
    /// Closed-loop maximum throughput, requests per second.
    pub max_rps: f64,
    /// The open-loop rate of the latency run (`latency_load` × `max_rps`), requests per second.
    pub latency_rps: f64,
    /// Latency at that rate from intended send time, µs.
    pub p50_us: u64,
    /// p99 of the same.
    pub p99_us: u64,
    /// Share of 2xx answers over both runs.
    pub ok_ratio: f64,
}

/// The whole calibration: what ran and what it recommends.
#[derive(Debug, Clone, Serialize)]
pub struct Calibration {
    /// Seconds per run.
    pub duration_s: f64,
    /// Closed-loop connections.
    pub connections: usize,
    /// The latency runs' rate as a fraction of each point's max throughput.
    pub latency_load: f64,
    /// Every point, in grid order.
    pub points: Vec<Measured>,
    /// Index into `points` of the recommendation.
    pub best: usize,
}

/// The point to recommend: lowest p99 among those within [`THROUGHPUT_KEPT`] of the
/// best throughput (a point that answered errors is never chosen over one that did not).
pub fn best(points: &[Measured]) -> Option<usize> {
    let top = points.iter().map(|m| m.max_rps).fold(0.0, f64::max);
    let clean = points.iter().any(|m| m.ok_ratio >= 0.999);
    points
        .iter()
        .enumerate()
        .filter(|(_, m)| m.max_rps >= top * THROUGHPUT_KEPT && (!clean || m.ok_ratio >= 0.999))
        .min_by_key(|(_, m)| m.p99_us)
        .map(|(i, _)| i)
}

/// The measured table, as Markdown.
pub fn table(c: &Calibration) -> String {
    let load = format!("{:.2}× max", c.latency_load);
    let mut t = format!(
        "| point | shards | bridge | ring | audit batch | max req/s | p50 ms @ {load} | p99 ms @ {load} | ok |\n"
    );
    t.push_str("|---|---|---|---|---|---|---|---|---|\n");
    for (i, m) in c.points.iter().enumerate() {
        let p = &m.point;
        let bridge = match (p.bridge_cpu, p.bridge_nice) {
            (Some(cpu), _) => format!("CPU {cpu}"),
            (None, Some(n)) => format!("nice {n}"),
            (None, None) => "unplaced".into(),
        };
        t.push_str(&format!(
            "| {}{} | {} | {bridge} | {} | {} ms | {:.0} | {:.3} | {:.3} | {:.1}% |\n",
            p.name,
            if i == c.best { " ✔" } else { "" },
            p.cpus.len(),
            p.uring_entries,
            p.audit_batch_wait_ms,
            m.max_rps,
            m.p50_us as f64 / 1000.0,
            m.p99_us as f64 / 1000.0,
            m.ok_ratio * 100.0
        ));
    }
    t
}
