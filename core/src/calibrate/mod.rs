//! `gatekeeper tune --calibrate`: measures a small grid of settings on this host and
//! recommends the best point.
//!
//! Every point runs the real gateway (this binary, `serve`, as a child process) with
//! its settings in front of `gk-load mock`, and drives it with `gk-load run` (child
//! processes too: `core` does not depend on the load generator's crate). Per point: the
//! closed-loop maximum throughput, then the open-loop latency at half of that rate
//! (`--latency-load`, default 0.5); the
//! recommendation is the point with the lowest p99 among those within
//! [`THROUGHPUT_KEPT`] of the best throughput. The grid varies one setting at a time
//! around the advice ([`grid`]): shard count, the bridge thread's placement, ring size
//! and audit batching.

mod grid;
mod svg;

use std::io::BufRead as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

pub use grid::{best, grid, table, Calibration, GridSize, Measured, Point, POINTS_MAX, THROUGHPUT_KEPT};
pub use svg::render_svg;

/// How long a child process may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a gateway may take to drain and exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// How to run the grid.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The `gatekeeper` binary to serve with (this one).
    pub gatekeeper: PathBuf,
    /// The `gk-load` binary (mock and load).
    pub gk_load: PathBuf,
    /// Each run's length.
    pub duration: Duration,
    /// Closed-loop connections.
    pub connections: usize,
    /// The latency run's rate as a fraction of the point's max throughput (0.5: half).
    pub latency_load: f64,
    /// Where configs, logs and load reports go.
    pub work_dir: PathBuf,
}

/// Runs every point of `points` in turn; progress on stderr.
pub fn run(plan: &Plan, points: Vec<Point>) -> anyhow::Result<Calibration> {
    std::fs::create_dir_all(&plan.work_dir).with_context(|| format!("{}", plan.work_dir.display()))?;
    let mut mock_cmd = Command::new(&plan.gk_load);
    mock_cmd.args(["mock", "--listen", "127.0.0.1:0", "--threads", "1"]);
    let (mock, mock_addr) = Spawned::start("gk-load mock", mock_cmd, &plan.work_dir.join("mock.log"))?;
    let mut measured = Vec::with_capacity(points.len());
    for (i, point) in points.into_iter().enumerate() {
        eprintln!("calibrate: point {} of the grid: {}", i + 1, point.name);
        measured.push(measure(plan, i, point, mock_addr)?);
    }
    drop(mock);
    let best = best(&measured).context("no point was measured")?;
    Ok(Calibration {
        duration_s: plan.duration.as_secs_f64(),
        connections: plan.connections,
        latency_load: plan.latency_load,
        points: measured,
        best,
    })
}

fn measure(plan: &Plan, i: usize, point: Point, mock: SocketAddr) -> anyhow::Result<Measured> {
    let dir = plan.work_dir.join(format!("point-{i}"));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("gatekeeper.yaml");
    std::fs::write(&config, point.config(mock, &dir.join("data")))?;
    let mut cmd = Command::new(&plan.gatekeeper);
    cmd.arg("serve").arg("--config").arg(&config).args(["--listen", "127.0.0.1:0", "--no-auth"]);
    cmd.env("GATEKEEPER_LOG", "warn");
    let (gateway, addr) = Spawned::start("gatekeeper serve", cmd, &dir.join("gatekeeper.log"))?;
    let url = format!("http://{addr}/v1/chat/completions");
    let secs = format!("{}ms", plan.duration.as_millis().max(1));
    let closed = load(
        plan,
        &dir.join("max.json"),
        &url,
        &["--connections", &plan.connections.to_string(), "--duration", &secs],
    )?;
    let max_rps = closed.rate;
    let half = (max_rps * plan.latency_load).floor().max(1.0);
    let open = load(plan, &dir.join("half.json"), &url, &["--rate", &format!("{half}"), "--duration", &secs])?;
    drop(gateway);
    let sent = closed.completed.saturating_add(open.completed);
    let ok_ratio = if sent == 0 { 0.0 } else { closed.ok.saturating_add(open.ok) as f64 / sent as f64 };
    Ok(Measured { point, max_rps, latency_rps: half, p50_us: open.p50_us, p99_us: open.p99_us, ok_ratio })
}

/// The numbers read back from one `gk-load run --json` report.
struct LoadResult {
    rate: f64,
    completed: u64,
    ok: u64,
    p50_us: u64,
    p99_us: u64,
}

fn load(plan: &Plan, json: &Path, url: &str, args: &[&str]) -> anyhow::Result<LoadResult> {
    let status = Command::new(&plan.gk_load)
        .args(["run", "--url", url, "--model", "m", "--max-tokens", "16", "--timeout", "10s"])
        .args(args)
        .arg("--json")
        .arg(json)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .with_context(|| format!("running {}", plan.gk_load.display()))?;
    if !status.success() {
        bail!("gk-load run {args:?} failed: {status}");
    }
    let text = std::fs::read_to_string(json).with_context(|| format!("{}", json.display()))?;
    parse_report(&text).with_context(|| format!("{}: not a gk-load report", json.display()))
}

/// Reads rate, counts and the latency percentiles from a `gk-load run --json` report.
fn parse_report(text: &str) -> anyhow::Result<LoadResult> {
    let v: serde_json::Value = serde_json::from_str(text)?;
    let num = |p: &str| v.pointer(p).and_then(serde_json::Value::as_f64).with_context(|| format!("no {p}"));
    let pct = |want: f64| -> anyhow::Result<u64> {
        let points = v.pointer("/latency_us/percentiles").and_then(|p| p.as_array()).context("no percentiles")?;
        points
            .iter()
            .filter_map(|p| Some((p.get("p")?.as_f64()?, p.get("us")?.as_u64()?)))
            .find(|(p, _)| *p >= want)
            .map(|(_, us)| us)
            .with_context(|| format!("no p{want}"))
    };
    Ok(LoadResult {
        rate: num("/rate_achieved")?,
        completed: num("/requests/completed")? as u64,
        ok: num("/requests/ok")? as u64,
        p50_us: pct(50.0)?,
        p99_us: pct(99.0)?,
    })
}

/// A child process that printed `listening on ADDR`; killed when dropped.
struct Spawned(Child);

impl Spawned {
    fn start(what: &str, mut cmd: Command, log: &Path) -> anyhow::Result<(Spawned, SocketAddr)> {
        let log_file = std::fs::File::create(log).with_context(|| format!("{}", log.display()))?;
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads until the address shows, then keeps draining so the child never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sent = false;
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if !sent {
                    if let Some(addr) = listening_addr(&line) {
                        let _ = tx.send(addr);
                        sent = true;
                    }
                }
            }
        });
        let spawned = Spawned(child);
        let deadline = Instant::now() + START_TIMEOUT;
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(addr) => Ok((spawned, addr)),
            Err(_) => bail!("{what} printed no address within {START_TIMEOUT:?}; see {}", log.display()),
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let pid = i32::try_from(self.0.id()).ok().and_then(rustix::process::Pid::from_raw);
        if let Some(pid) = pid {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            let deadline = Instant::now() + STOP_TIMEOUT;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.0.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `… listening on 127.0.0.1:1234 (http)` → the address.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let rest = line.split_once("listening on ")?.1;
    rest.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use gatekeeper_tuning::{advise, Advice, CpuFacts, HostFacts};

    use super::*;

    fn host(cpus: u32) -> Advice {
        let online: Vec<u32> = (0..cpus).collect();
        advise(&HostFacts {
            cpus: CpuFacts { online: Some(online.clone()), allowed: Some(online), ..CpuFacts::default() },
            ..HostFacts::default()
        })
    }

    fn m(name: &str, max_rps: f64, p99_us: u64, ok_ratio: f64) -> Measured {
        let point = Point {
            name: name.into(),
            cpus: vec![0],
            bridge_cpu: None,
            bridge_nice: None,
            uring_entries: 4096,
            audit_batch_wait_ms: 50,
        };
        Measured { point, max_rps, latency_rps: max_rps / 2.0, p50_us: p99_us / 2, p99_us, ok_ratio }
    }

    #[test]
    fn the_grid_varies_one_setting_at_a_time_around_the_advice() {
        let g = grid(&host(2), GridSize::Small);
        let names: Vec<&str> = g.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            ["advised", "bridge own core", "bridge nice 10", "1 shard", "ring 256", "audit batch 200 ms"]
        );
        assert_eq!((g[0].cpus.as_slice(), g[0].bridge_nice), (&[0, 1][..], None), "SCHED_IDLE on the shards' cores");
        assert_eq!((g[2].bridge_cpu, g[2].bridge_nice), (None, Some(10)));
        assert_eq!((g[1].cpus.as_slice(), g[1].bridge_cpu), (&[0][..], Some(1)));
        let tiny = grid(&host(2), GridSize::Tiny);
        assert_eq!(tiny.len(), 2);
        // With a core of its own advised, the alternative is nice.
        let big = grid(&host(8), GridSize::Tiny);
        assert_eq!(big[0].bridge_cpu, Some(7));
        assert_eq!((big[1].bridge_cpu, big[1].bridge_nice), (None, Some(10)));
        assert!(g.len() <= POINTS_MAX);
    }

    #[test]
    fn every_point_is_a_config_the_gateway_accepts() {
        for p in grid(&host(2), GridSize::Small).into_iter().chain(grid(&host(8), GridSize::Small)) {
            let text = p.config("127.0.0.1:9".parse().expect("addr"), Path::new("/tmp/d"));
            let c = crate::config::Config::parse(&text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", p.name));
            assert_eq!(c.shard_count(), p.cpus.len());
            assert_eq!(c.bridge.nice, p.bridge_nice);
            crate::config::Config::parse(&p.yaml()).unwrap_or_else(|e| panic!("{}: {e}", p.name));
        }
    }

    #[test]
    fn the_best_point_has_the_lowest_p99_within_five_percent_of_the_top_throughput() {
        let points = [m("a", 1000.0, 900, 1.0), m("b", 960.0, 700, 1.0), m("c", 940.0, 100, 1.0)];
        assert_eq!(best(&points), Some(1), "c is below 95% of the top");
        let points = [m("a", 1000.0, 900, 1.0), m("b", 990.0, 100, 0.5)];
        assert_eq!(best(&points), Some(0), "errors disqualify");
        assert_eq!(best(&[]), None);
    }

    #[test]
    fn reports_and_addresses_parse() {
        let report = r#"{"rate_achieved": 1234.5, "requests": {"completed": 10, "ok": 9},
            "latency_us": {"percentiles": [{"p": 50.0, "us": 400}, {"p": 90.0, "us": 800}, {"p": 99.0, "us": 1500}]}}"#;
        let r = parse_report(report).expect("parses");
        assert_eq!((r.rate, r.completed, r.ok, r.p50_us, r.p99_us), (1234.5, 10, 9, 400, 1500));
        assert!(parse_report("{}").is_err());
        assert_eq!(listening_addr("gatekeeper listening on 127.0.0.1:8080 (http)"), "127.0.0.1:8080".parse().ok());
        assert_eq!(listening_addr("listening on 127.0.0.1:9"), "127.0.0.1:9".parse().ok());
        assert_eq!(listening_addr("started"), None);
    }
}
