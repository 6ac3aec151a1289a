//! `gatekeeper tune`: inspects the host and recommends per-core settings, each with the
//! fact behind it (`gatekeeper_tuning`); `--json`, `--emit-config` (a `gatekeeper.yaml`
//! fragment), `--apply` (writes the advised sysctls after asking on a terminal; nothing
//! else, never without asking) and `--calibrate` (measures a grid of settings, see
//! `calibrate/`).

use std::io::{BufRead, IsTerminal as _, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use gatekeeper_tuning::{advise, Advice, HostFacts, SyscallFacts};

use crate::calibrate::{self, GridSize};

/// Flags of `gatekeeper tune`.
#[derive(Debug, Clone, clap::Args)]
pub struct TuneArgs {
    /// Print the host facts and the advice as one JSON object.
    #[arg(long, conflicts_with = "emit_config")]
    pub json: bool,
    /// Print only the `gatekeeper.yaml` fragment (with `--calibrate`: the best point's).
    #[arg(long)]
    pub emit_config: bool,
    /// Write the advised sysctls, asking before each on the terminal (stdin must be one).
    /// Nothing else on the host is ever changed.
    #[arg(long, conflicts_with_all = ["json", "emit_config", "calibrate"])]
    pub apply: bool,
    /// Read `proc/` and `sys/` under this directory instead of `/` (a recorded host;
    /// its `syscalls.json`, when present, replaces the syscall probes). `--apply` then
    /// writes under it too.
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
    /// Measure a grid of settings around the advice (each point: max throughput, then
    /// p99 at half of it) and recommend the best.
    #[arg(long)]
    pub calibrate: bool,
    /// `--calibrate`: length of each run (two runs per point).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,
    /// `--calibrate`: `small` (up to 6 points) or `tiny` (2 points).
    #[arg(long, value_enum, default_value = "small")]
    pub grid: GridSize,
    /// `--calibrate`: closed-loop connections for the throughput runs.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// `--calibrate`: the latency runs' open-loop rate as a fraction of each point's max
    /// throughput (0.05..=1). On a small host where the load generator shares the cores,
    /// 0.25 keeps the generator from being the bottleneck.
    #[arg(long, default_value_t = 0.5, value_parser = parse_load)]
    pub latency_load: f64,
    /// `--calibrate`: where the table, JSON, SVG plot, configs and logs go.
    #[arg(long, default_value = "gatekeeper-tune")]
    pub out: PathBuf,
    /// `--calibrate`: the `gk-load` binary; default: next to this binary, else on PATH.
    #[arg(long)]
    pub gk_load: Option<PathBuf>,
}

/// Longest `--duration`: a grid of 6 points runs 12 of these.
const DURATION_MAX: Duration = Duration::from_secs(600);

fn parse_duration(text: &str) -> Result<Duration, String> {
    use gatekeeper_units::duration::{Syntax, Unit};
    const SYNTAX: Syntax = Syntax { units: &[Unit::Millis, Unit::Secs, Unit::Mins], bare: None };
    let d = gatekeeper_units::duration::parse(text, SYNTAX).map_err(|e| e.to_string())?;
    if d < Duration::from_millis(100) || d > DURATION_MAX {
        return Err(format!("must be within 100ms..={}s", DURATION_MAX.as_secs()));
    }
    Ok(d)
}

fn parse_load(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(f) if (0.05..=1.0).contains(&f) => Ok(f),
        _ => Err("a fraction within 0.05..=1 (0.5: half of the max)".into()),
    }
}

/// Runs `gatekeeper tune`.
pub fn run(args: &TuneArgs) -> anyhow::Result<()> {
    let facts = read_facts(&args.root)?;
    let advice = advise(&facts);
    if args.calibrate {
        return calibrate(args, &advice);
    }
    let mut stdout = std::io::stdout().lock();
    if args.json {
        let doc = serde_json::json!({ "facts": facts, "advice": advice });
        writeln!(stdout, "{}", serde_json::to_string_pretty(&doc)?)?;
    } else if args.emit_config {
        write!(stdout, "{}", advice.config_yaml())?;
    } else if args.apply {
        let interactive = std::io::stdin().is_terminal();
        apply(&advice, &args.root, interactive, &mut std::io::stdin().lock(), &mut stdout)?;
    } else {
        write!(stdout, "{}", advice.render_text(&facts))?;
    }
    Ok(())
}

fn read_facts(root: &Path) -> anyhow::Result<HostFacts> {
    if root == Path::new("/") {
        return Ok(gatekeeper_tuning::inspect());
    }
    if !root.is_dir() {
        bail!("--root {}: not a directory", root.display());
    }
    let recorded = root.join("syscalls.json");
    let mut facts = gatekeeper_tuning::read_host(root, SyscallFacts::default());
    facts.syscalls = match std::fs::read_to_string(&recorded) {
        Ok(text) => serde_json::from_str(&text).with_context(|| format!("{}", recorded.display()))?,
        Err(_) => gatekeeper_tuning::probe_syscalls(facts.kernel),
    };
    Ok(facts)
}

/// `--apply`: prints every advised sysctl, then (on a terminal only) asks before writing
/// each under `root`'s `proc/sys`. Returns how many were written.
fn apply(
    advice: &Advice,
    root: &Path,
    interactive: bool,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
) -> anyhow::Result<usize> {
    if advice.sysctls.is_empty() {
        writeln!(out, "nothing to apply: every sysctl gatekeeper tune checks already holds its advised value")?;
        return Ok(0);
    }
    writeln!(out, "gatekeeper tune --apply would run:")?;
    for s in &advice.sysctls {
        let now = s.current.as_deref().map_or(String::new(), |c| format!("   # now {c}"));
        writeln!(out, "  {}{now}", s.command())?;
    }
    if !interactive {
        bail!(
            "--apply asks before changing the host and stdin is not a terminal: nothing was changed. \
             Run the commands above yourself, or rerun `gatekeeper tune --apply` from a terminal."
        );
    }
    let mut written = 0;
    for s in &advice.sysctls {
        write!(out, "apply `{}`? [y/N] ", s.command())?;
        out.flush()?;
        let mut answer = String::new();
        input.read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            writeln!(out, "  skipped")?;
            continue;
        }
        let path = root.join(s.path().strip_prefix("/").unwrap_or(&s.path()));
        std::fs::write(&path, format!("{}\n", s.value)).with_context(|| format!("writing {}", path.display()))?;
        written += 1;
        writeln!(out, "  set {} = {}", s.key, s.value)?;
    }
    Ok(written)
}

fn calibrate(args: &TuneArgs, advice: &Advice) -> anyhow::Result<()> {
    let gatekeeper = std::env::current_exe().context("finding this binary")?;
    let gk_load = match &args.gk_load {
        Some(p) => p.clone(),
        None => {
            let sibling = gatekeeper.with_file_name("gk-load");
            if sibling.is_file() {
                sibling
            } else {
                PathBuf::from("gk-load")
            }
        }
    };
    let plan = calibrate::Plan {
        gatekeeper,
        gk_load,
        duration: args.duration,
        connections: args.connections.max(1),
        latency_load: args.latency_load,
        work_dir: args.out.clone(),
    };
    let points = calibrate::grid(advice, args.grid);
    eprintln!(
        "calibrate: {} points × 2 runs of {:?} (the machine should be otherwise idle; figures from a shared one are noisy)",
        points.len(),
        args.duration
    );
    let result = calibrate::run(&plan, points)?;
    let best = &result.points[result.best].point;
    let table = calibrate::table(&result);
    std::fs::write(args.out.join("calibration.json"), serde_json::to_string_pretty(&result)?)?;
    std::fs::write(args.out.join("calibration.svg"), calibrate::render_svg(&result))?;
    std::fs::write(args.out.join("calibration.md"), &table)?;
    std::fs::write(args.out.join("recommended.yaml"), best.yaml())?;
    let mut stdout = std::io::stdout().lock();
    if args.json {
        writeln!(stdout, "{}", serde_json::to_string_pretty(&result)?)?;
    } else if args.emit_config {
        write!(stdout, "{}", best.yaml())?;
    } else {
        writeln!(stdout, "{table}")?;
        writeln!(
            stdout,
            "recommended: {} (lowest p99 at {:.2}× load among points within {:.0}% of the best throughput)",
            best.name,
            args.latency_load,
            calibrate::THROUGHPUT_KEPT * 100.0
        )?;
        for l in best.yaml().lines() {
            writeln!(stdout, "  {l}")?;
        }
        writeln!(stdout, "plot: {}", args.out.join("calibration.svg").display())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tuning/tests/fixtures").join(name)
    }

    /// A copy of a recorded host, so `--apply` may write into it.
    fn copy_of(name: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let status = std::process::Command::new("cp")
            .arg("-r")
            .arg(format!("{}/.", fixture(name).display()))
            .arg(dir.path())
            .status()
            .expect("cp");
        assert!(status.success());
        dir
    }

    #[test]
    fn every_recorded_hosts_fragment_is_a_config_the_gateway_accepts() {
        for name in ["vm-2vcpu", "smt-16c", "numa-2x32", "container-quota", "no-uring"] {
            let advice = advise(&read_facts(&fixture(name)).expect("facts"));
            let yaml = advice.config_yaml();
            let c = crate::config::Config::parse(&yaml).unwrap_or_else(|e| panic!("{name}: {e}\n{yaml}"));
            assert_eq!(c.shard_count(), advice.shards, "{name}");
            let cpus: Vec<usize> = advice.cpus.iter().map(|&c| c as usize).collect();
            assert_eq!(c.cpus.as_deref(), Some(&cpus[..]), "{name}");
            assert_eq!(c.bridge.cpu, advice.bridge.cpu.map(|c| c as usize), "{name}");
            assert_eq!(c.bridge.nice, advice.bridge.nice, "{name}");
            if advice.bridge.idle {
                assert!(c.bridge.idle(true, false), "{name}: SCHED_IDLE with the embedded audit log");
            }
            assert_eq!(c.uring.entries, advice.uring.entries, "{name}");
            assert_eq!(u64::from(c.listen_backlog), advice.listen_backlog, "{name}");
            assert_eq!(c.limits.connections_per_shard_max as u64, advice.connections_per_shard_max, "{name}");
        }
    }

    #[test]
    fn apply_refuses_without_a_terminal_and_changes_nothing() {
        let host = copy_of("no-uring");
        let somaxconn = host.path().join("proc/sys/net/core/somaxconn");
        let advice = advise(&read_facts(host.path()).expect("facts"));
        let mut out = Vec::new();
        let e = apply(&advice, host.path(), false, &mut std::io::empty(), &mut out).expect_err("refused");
        assert!(e.to_string().contains("nothing was changed"), "{e}");
        let printed = String::from_utf8_lossy(&out);
        assert!(printed.contains("sysctl -w net.core.somaxconn=\"4096\"   # now 128"), "{printed}");
        assert_eq!(std::fs::read_to_string(&somaxconn).expect("read").trim(), "128", "unchanged");
    }

    #[test]
    fn apply_on_a_terminal_writes_only_what_was_agreed_to() {
        let host = copy_of("no-uring");
        let advice = advise(&read_facts(host.path()).expect("facts"));
        let keys: Vec<&str> = advice.sysctls.iter().map(|s| s.key.as_str()).collect();
        assert_eq!(keys, ["net.core.somaxconn", "net.ipv4.ip_local_port_range"]);
        let mut out = Vec::new();
        let written = apply(&advice, host.path(), true, &mut &b"y\nn\n"[..], &mut out).expect("applied");
        assert_eq!(written, 1);
        let read = |rel: &str| std::fs::read_to_string(host.path().join(rel)).expect("read");
        assert_eq!(read("proc/sys/net/core/somaxconn").trim(), "4096");
        assert_eq!(read("proc/sys/net/ipv4/ip_local_port_range").trim(), "49152\t60999", "answered no");
    }

    #[test]
    fn durations_have_bounds() {
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert!(parse_duration("99ms").is_err());
        assert_eq!(parse_duration("10m"), Ok(DURATION_MAX));
        assert!(parse_duration("601s").is_err());
        assert!(parse_duration("5").is_err(), "a unit is required");
        assert_eq!(parse_load("0.05"), Ok(0.05));
        assert_eq!(parse_load("1"), Ok(1.0));
        assert!(parse_load("0.04").is_err() && parse_load("1.01").is_err() && parse_load("x").is_err());
    }
}
