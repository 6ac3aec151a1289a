//! `gk-bench compare`: start the targets, run the phases in alternating order, write
//! the report folder.
//!
//! Phases: (1) max throughput, closed loop (`gk-load run --connections N`);
//! (2) latency at one or more fixed rates, open loop (`gk-load run --rate R`). A target
//! whose max throughput is below [`RATE_HEADROOM`] × a rate is not run at that rate: an
//! open loop above capacity only measures the queue growing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gatekeeper_units::{
    civil,
    duration::{self, Syntax, Unit},
};

use crate::error::BenchError;
use crate::load;
use crate::plan;
use crate::procs::{self, Supervisor};
use crate::report::{
    self, CompareReport, Host, LatencySection, LoadSetup, Phase, Plot, Run, Skip, TargetInfo, BASELINE, REFERENCE,
    REPORT_VERSION,
};
use crate::stats;
use crate::targets::{self, Context, Kind, Programs, Started};

/// A target must reach this multiple of an open-loop rate in the throughput phase to be
/// run at that rate.
pub const RATE_HEADROOM: f64 = 1.25;
/// The low `auto` rate is this fraction of the slowest target's max.
pub const AUTO_RATE_FRACTION: f64 = 0.5;
/// The high `auto` rate is this fraction of nginx's max. Lower than the low one because
/// an open-loop request costs the generator ~5× the CPU of a closed-loop one
/// (loadtest/README.md: ~32 vs ~6 µs), and generator, mock and target share the cores:
/// at half of nginx's max the generator itself saturated a 2-core machine.
pub const AUTO_REFERENCE_FRACTION: f64 = 0.25;
/// Most rounds per phase.
pub const ROUNDS_MAX: usize = 50;
/// Longest run.
pub const RUN_DURATION_MAX: Duration = Duration::from_secs(600);
/// Extra time a `gk-load run` gets past its duration before it is killed: its own
/// drain timeout (30 s) and start-up.
const RUN_GRACE: Duration = Duration::from_secs(45);
/// `gk-load plot` and the sanity request.
const HELPER_WAIT: Duration = Duration::from_secs(30);
/// `cargo build` of the binaries on a 2-core machine.
const BUILD_WAIT: Duration = Duration::from_secs(1800);

/// Flags of `gk-bench compare`.
#[derive(Debug, Clone, clap::Args)]
pub struct CompareArgs {
    /// Targets in run order, comma-separated: direct, nginx, gatekeeper, litellm, portkey.
    /// `direct` is required (every ratio is relative to it). Peers not installed are skipped with a note.
    #[arg(long, value_delimiter = ',', default_value = "direct,nginx,gatekeeper,litellm,portkey")]
    pub targets: Vec<String>,
    /// Rounds per phase; each round runs every target once, in order.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Length of each run (`10s`, `500ms`, `2m`, or bare seconds).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Closed-loop connections for the max-throughput phase; 0 skips that phase.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Open-loop rates for the latency phase, req/s, comma-separated; `auto` = half the
    /// slowest target's max and half nginx's max (needs the throughput phase); `none` skips the phase.
    #[arg(long, default_value = "auto")]
    pub rate: String,
    /// Request scenario (YAML, see loadtest/README.md); its model names are routed to the mock by every target.
    #[arg(long, conflicts_with_all = ["model", "prompt", "max_tokens", "stream"])]
    pub scenario: Option<PathBuf>,
    /// Model of the default request.
    #[arg(long)]
    pub model: Option<String>,
    /// Prompt of the default request.
    #[arg(long)]
    pub prompt: Option<String>,
    /// `max_tokens` of the default request.
    #[arg(long)]
    pub max_tokens: Option<u32>,
    /// Ask for streamed answers (the report then adds time to first byte).
    #[arg(long)]
    pub stream: bool,
    /// `gk-load run --threads`.
    #[arg(long, default_value_t = 1)]
    pub gen_threads: usize,
    /// `gk-load mock --threads`.
    #[arg(long, default_value_t = 1)]
    pub mock_threads: usize,
    /// Extra `gk-load mock` flags, space-separated (e.g. `--mock-args='--tokens 64 --token-ms 1'`).
    #[arg(long, allow_hyphen_values = true)]
    pub mock_args: Option<String>,
    /// Workers per proxy: nginx worker_processes, Gatekeeper --shards, LiteLLM --num_workers.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Report folder (default: bench/out/<UTC time>-compare).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Heading of the report.
    #[arg(long, default_value = "gk-bench compare")]
    pub title: String,
    /// Folder holding `gatekeeper` and `gk-load`; without it they are built with
    /// `cargo build --release -p gatekeeper -p gatekeeper-loadtest`.
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// nginx binary (default: on PATH).
    #[arg(long)]
    pub nginx: Option<PathBuf>,
    /// LiteLLM's `litellm` (default: bench/.peers/litellm/bin/litellm, then PATH).
    #[arg(long)]
    pub litellm: Option<PathBuf>,
    /// Portkey gateway's `build/start-server.js` (default: under bench/.peers/portkey/node_modules).
    #[arg(long)]
    pub portkey: Option<PathBuf>,
    /// Extra `gatekeeper.yaml` keys for the Gatekeeper target: a YAML file appended to
    /// its generated config (e.g. `bridge: { nice: 10 }`, or `audit: { enabled: false }`);
    /// it may not set `providers` or `models`, and a `cpus` list must hold `--workers` CPUs.
    #[arg(long)]
    pub gatekeeper_config: Option<PathBuf>,
}

/// What `--duration` takes: phases are seconds to minutes long.
const DURATION_SYNTAX: Syntax =
    Syntax { units: &[Unit::Micros, Unit::Millis, Unit::Secs, Unit::Mins], bare: Some(Unit::Secs) };

/// `10s`, `500ms`, `2m`, `250us`, or bare seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = duration::parse(text, DURATION_SYNTAX).map_err(|e| format!("{text:?}: {e}"))?;
    if d.is_zero() {
        return Err(format!("{text:?}: must be positive"));
    }
    Ok(d)
}

/// What `--rate` asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum RateChoice {
    /// Derive from the throughput phase.
    Auto,
    /// Skip the latency phase.
    None,
    /// These rates.
    Fixed(Vec<f64>),
}

/// Parses `--rate`.
pub fn parse_rates(text: &str) -> Result<RateChoice, String> {
    match text.trim() {
        "auto" => Ok(RateChoice::Auto),
        "none" => Ok(RateChoice::None),
        list => {
            let mut rates = Vec::new();
            for part in list.split(',') {
                let r: f64 = part.trim().parse().map_err(|_| format!("--rate {part:?}: not a number"))?;
                if !(r.is_finite() && (1.0..=10_000_000.0).contains(&r)) {
                    return Err(format!("--rate {part:?}: must be 1..=10000000"));
                }
                rates.push(r);
            }
            Ok(RateChoice::Fixed(rates))
        }
    }
}

/// `auto` rates from median max throughputs `(target, req/s)`: [`AUTO_RATE_FRACTION`] of
/// the slowest target's, and [`AUTO_REFERENCE_FRACTION`] of nginx's (else Gatekeeper's,
/// else direct's) — a rate every target can take, and a rate where the fast proxies are
/// under real load. Rounded to 2 significant digits, deduplicated, ascending.
pub fn auto_rates(max_by_target: &[(String, f64)]) -> Vec<f64> {
    let slowest = max_by_target.iter().map(|(_, v)| *v).fold(f64::INFINITY, f64::min);
    let reference = [REFERENCE, "gatekeeper", BASELINE]
        .iter()
        .find_map(|name| max_by_target.iter().find(|(t, _)| t == name).map(|(_, v)| *v));
    let mut rates = Vec::new();
    let candidates = [Some(slowest * AUTO_RATE_FRACTION), reference.map(|v| v * AUTO_REFERENCE_FRACTION)];
    for v in candidates.into_iter().flatten() {
        let r = stats::round_significant(v, 2);
        if r.is_finite() && r >= 1.0 && !rates.contains(&r) {
            rates.push(r);
        }
    }
    rates.sort_by(f64::total_cmp);
    rates
}

/// Model names a scenario file asks for (a list of templates, or `requests:` of them).
pub fn scenario_models(text: &str) -> Result<Vec<String>, String> {
    let doc: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    let list = match &doc {
        serde_yaml::Value::Sequence(s) => s,
        serde_yaml::Value::Mapping(m) => {
            m.get("requests").and_then(|r| r.as_sequence()).ok_or("expected a list of templates or `requests:`")?
        }
        _ => return Err("expected a list of templates or `requests:`".into()),
    };
    let mut models = Vec::new();
    for (i, t) in list.iter().enumerate() {
        let m = t.get("model").and_then(|m| m.as_str()).ok_or_else(|| format!("requests[{i}].model: missing"))?;
        if !models.iter().any(|x| x == m) {
            models.push(m.to_string());
        }
    }
    if models.is_empty() {
        return Err("no request templates".into());
    }
    Ok(models)
}

/// Runs a comparison and returns the report folder. `command` is recorded in the report.
pub fn run(args: &CompareArgs, command: &str) -> Result<PathBuf, BenchError> {
    let kinds = validate(args)?;
    let rate_choice = parse_rates(&args.rate).map_err(BenchError::Invalid)?;
    if rate_choice == RateChoice::Auto && args.connections == 0 {
        return Err(BenchError::Invalid("--rate auto needs the throughput phase (--connections > 0)".into()));
    }
    let models = match &args.scenario {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(BenchError::io(format!("reading {}", path.display())))?;
            scenario_models(&text).map_err(|e| BenchError::Invalid(format!("scenario {}: {e}", path.display())))?
        }
        None => vec![args.model.clone().unwrap_or_else(|| "gpt-4o-mini".into())],
    };
    let started_utc = utc_now();
    let out = args.out.clone().unwrap_or_else(|| {
        workspace_root().join("bench/out").join(format!("{}-compare", started_utc.replace(':', "")))
    });
    let raw = out.join("raw");
    std::fs::create_dir_all(&raw).map_err(BenchError::io(format!("creating {}", raw.display())))?;
    let out = out.canonicalize().map_err(BenchError::io(format!("resolving {}", out.display())))?;
    let raw = out.join("raw");

    let interrupted = procs::interrupt_flag()?;
    let programs = find_programs(args)?;
    let mut sup = Supervisor::new(interrupted);
    let mock_extra: Vec<String> =
        args.mock_args.as_deref().unwrap_or("").split_whitespace().map(str::to_string).collect();
    let (mock_pid, mock) = targets::start_mock(&mut sup, &programs.gk_load, &raw, args.mock_threads, &mock_extra)?;
    let gatekeeper_extra = match &args.gatekeeper_config {
        Some(path) => Some(gatekeeper_extra(path)?),
        None => None,
    };
    let ctx =
        Context { mock, mock_pid, models: models.clone(), workers: args.workers, dir: raw.clone(), gatekeeper_extra };
    eprintln!("gk-bench: mock provider on {mock}");

    let mut infos = Vec::new();
    let mut started: Vec<Started> = Vec::new();
    let mut notes = Vec::new();
    for kind in kinds {
        let mut info =
            TargetInfo { name: kind.name().into(), description: String::new(), version: None, skipped: None };
        let outcome = match targets::missing(kind, &programs) {
            Some(why) => Err(why),
            None => targets::start(kind, &ctx, &programs, &mut sup)
                .map_err(|e| match e {
                    BenchError::Interrupted => e.to_string(),
                    e => format!("did not start: {e}"),
                })
                .and_then(|s| sanity(&s, &models[0]).map(|()| s)),
        };
        sup.check_interrupt()?;
        match outcome {
            Ok(s) => {
                eprintln!("gk-bench: {} on {}", kind.name(), s.addr);
                info.description = s.description.clone();
                info.version = s.version.clone();
                started.push(s);
            }
            Err(why) if kind == Kind::Direct => return Err(BenchError::Invalid(format!("direct baseline: {why}"))),
            Err(why) => {
                eprintln!("gk-bench: skipping {}: {why}", kind.name());
                info.skipped = Some(first_line(&why));
                notes.push(format!("`{}` skipped: {}", kind.name(), why.replace('\n', " ")));
            }
        }
        infos.push(info);
    }

    let mut bench = Bench { args, programs: &programs, sup: &mut sup, raw: &raw, runs: Vec::new(), notes };
    let mut alive: Vec<Started> = started;
    if args.connections > 0 {
        alive = bench.phase(&alive, None)?;
    }
    let names = |v: &[Started]| v.iter().map(|s| s.kind.name().to_string()).collect::<Vec<_>>();
    let all_names: Vec<String> = infos.iter().map(|i| i.name.clone()).collect();
    let throughput = report::summarize_throughput(&all_names, &bench.runs);
    let rates = match rate_choice {
        RateChoice::None => vec![],
        RateChoice::Fixed(r) => r,
        RateChoice::Auto => {
            let maxes: Vec<(String, f64)> = throughput
                .iter()
                .filter(|t| alive.iter().any(|s| s.kind.name() == t.target))
                .map(|t| (t.target.clone(), t.ok_per_s.median))
                .collect();
            let rates = auto_rates(&maxes);
            bench.notes.push(format!(
                "Open-loop rates chosen by `--rate auto`: {} req/s ({AUTO_RATE_FRACTION} × the slowest target's max, \
                 {AUTO_REFERENCE_FRACTION} × {REFERENCE}'s max).",
                rates.iter().map(|r| report::thousands(*r)).collect::<Vec<_>>().join(" and "),
            ));
            rates
        }
    };
    let mut latency = Vec::new();
    for &rate in &rates {
        let mut skipped = Vec::new();
        let eligible: Vec<Started> = alive
            .iter()
            .filter(|s| {
                let max = throughput.iter().find(|t| t.target == s.kind.name()).map(|t| t.ok_per_s.median);
                match max {
                    Some(m) if m < rate * RATE_HEADROOM => {
                        skipped.push(Skip {
                            target: s.kind.name().into(),
                            reason: format!(
                                "its max throughput ({} req/s) is below {RATE_HEADROOM} × this rate; an open loop would only measure its queue",
                                report::thousands(m)
                            ),
                        });
                        false
                    }
                    _ => true,
                }
            })
            .cloned()
            .collect();
        let before = names(&alive);
        alive = bench
            .phase(&eligible, Some(rate))?
            .into_iter()
            .chain(alive.iter().filter(|s| !eligible.iter().any(|e| e.kind == s.kind)).cloned())
            .collect();
        alive.sort_by_key(|s| before.iter().position(|n| n == s.kind.name()));
        let rows = report::summarize_latency(&all_names, &bench.runs, rate);
        latency.push(LatencySection { rate, rows, skipped });
    }

    let mut r = CompareReport {
        version: REPORT_VERSION,
        title: args.title.clone(),
        command: command.to_string(),
        started_utc,
        host: host(),
        load: LoadSetup {
            request: describe_request(args),
            duration_s: args.duration.as_secs_f64(),
            rounds: args.rounds,
            connections: (args.connections > 0).then_some(args.connections),
            rates: rates.clone(),
            generator_threads: args.gen_threads,
            mock: format!(
                "`gk-load mock --threads {}{}`",
                args.mock_threads,
                if mock_extra.is_empty() { String::new() } else { format!(" {}", mock_extra.join(" ")) }
            ),
        },
        targets: infos,
        runs: std::mem::take(&mut bench.runs),
        throughput,
        latency,
        plots: Vec::new(),
        notes: std::mem::take(&mut bench.notes),
    };
    drop(bench);
    sup.stop_all();
    write_plots(&mut r, &out, &programs.gk_load);
    write_report(&r, &out)?;
    Ok(out)
}

/// The `--gatekeeper-config` file: a YAML mapping that leaves the provider and models
/// to the benchmark; returned as text to append.
fn gatekeeper_extra(path: &std::path::Path) -> Result<String, BenchError> {
    let text = std::fs::read_to_string(path).map_err(BenchError::io(format!("reading {}", path.display())))?;
    let invalid = |why: String| BenchError::Invalid(format!("--gatekeeper-config {}: {why}", path.display()));
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    let map = doc.as_mapping().ok_or_else(|| invalid("expected a mapping of gatekeeper.yaml keys".into()))?;
    for key in ["providers", "models", "failover_chain"] {
        if map.contains_key(key) {
            return Err(invalid(format!("`{key}` is the benchmark's own (the mock); leave it out")));
        }
    }
    Ok(if text.ends_with('\n') { text } else { format!("{text}\n") })
}

fn validate(args: &CompareArgs) -> Result<Vec<Kind>, BenchError> {
    let mut kinds = Vec::new();
    for name in &args.targets {
        let kind = Kind::from_name(name.trim()).ok_or_else(|| {
            BenchError::Invalid(format!(
                "--targets: unknown target {name:?} (direct, nginx, gatekeeper, litellm, portkey)"
            ))
        })?;
        if kinds.contains(&kind) {
            return Err(BenchError::Invalid(format!("--targets: {name} named twice")));
        }
        kinds.push(kind);
    }
    if !kinds.contains(&Kind::Direct) {
        return Err(BenchError::Invalid("--targets must include direct: every ratio is relative to it".into()));
    }
    if !(1..=ROUNDS_MAX).contains(&args.rounds) {
        return Err(BenchError::Invalid(format!("--rounds must be 1..={ROUNDS_MAX}")));
    }
    if args.duration > RUN_DURATION_MAX {
        return Err(BenchError::Invalid(format!("--duration must be at most {} s", RUN_DURATION_MAX.as_secs())));
    }
    if args.connections > 10_000 || !(1..=64).contains(&args.workers) || !(1..=64).contains(&args.gen_threads) {
        return Err(BenchError::Invalid("--connections ≤ 10000, --workers and --gen-threads 1..=64".into()));
    }
    Ok(kinds)
}

/// One phase's state.
struct Bench<'a> {
    args: &'a CompareArgs,
    programs: &'a Programs,
    sup: &'a mut Supervisor,
    raw: &'a Path,
    runs: Vec<Run>,
    notes: Vec<String>,
}

impl Bench<'_> {
    /// Runs every target of `targets` `rounds` times, alternating; returns those still
    /// standing. A peer that fails a run is dropped with a note; the baseline failing ends the comparison.
    fn phase(&mut self, targets: &[Started], rate: Option<f64>) -> Result<Vec<Started>, BenchError> {
        let mut failed: Vec<Kind> = Vec::new();
        let phase_name = rate.map_or_else(|| "throughput".to_string(), |r| format!("latency-{}", r.round() as u64));
        for slot in plan::alternate(targets.len(), self.args.rounds) {
            let t = &targets[slot.target];
            if failed.contains(&t.kind) {
                continue;
            }
            let file = format!("{phase_name}-r{}-{}.json", slot.round, t.kind.name());
            eprintln!("gk-bench: {phase_name} round {} {}", slot.round + 1, t.kind.name());
            match self.one_run(t, rate, &file) {
                Ok(numbers) => {
                    eprintln!(
                        "           {:>10.0} 2xx/s  p50 {:.3} ms  p99 {:.3} ms  failed {}",
                        numbers.ok_per_s, numbers.latency.p50_ms, numbers.latency.p99_ms, numbers.failed
                    );
                    if numbers.failed > 0 {
                        self.notes.push(format!(
                            "`{}` {phase_name} round {}: {} of {} requests failed ({:?}).",
                            t.kind.name(),
                            slot.round + 1,
                            numbers.failed,
                            numbers.sent,
                            numbers.errors
                        ));
                    }
                    self.runs.push(Run {
                        phase: if rate.is_some() { Phase::Latency } else { Phase::Throughput },
                        rate,
                        round: slot.round,
                        target: t.kind.name().into(),
                        numbers,
                        raw: format!("raw/{file}"),
                    });
                }
                Err(BenchError::Interrupted) => return Err(BenchError::Interrupted),
                Err(e) if t.kind == Kind::Direct => return Err(e),
                Err(e) => {
                    eprintln!("gk-bench: dropping {}: {e}", t.kind.name());
                    self.notes.push(format!(
                        "`{}` dropped during {phase_name}: {}",
                        t.kind.name(),
                        first_line(&e.to_string())
                    ));
                    failed.push(t.kind);
                }
            }
        }
        Ok(targets.iter().filter(|t| !failed.contains(&t.kind)).cloned().collect())
    }

    fn one_run(&mut self, t: &Started, rate: Option<f64>, file: &str) -> Result<load::RunNumbers, BenchError> {
        if let Some(pid) = t.watch_pid {
            self.sup.check_alive(pid)?;
        }
        let a = self.args;
        let json = self.raw.join(file);
        let mut cmd = Command::new(&self.programs.gk_load);
        cmd.arg("run").arg("--url").arg(format!("http://{}/v1/chat/completions", t.addr));
        match rate {
            Some(r) => cmd.arg("--rate").arg(format!("{r}")),
            None => cmd.arg("--connections").arg(a.connections.to_string()),
        };
        cmd.arg("--duration").arg(format!("{}ms", a.duration.as_millis()));
        cmd.arg("--threads").arg(a.gen_threads.to_string()).arg("--json").arg(&json);
        if let Some(s) = &a.scenario {
            cmd.arg("--scenario").arg(s);
        } else {
            if let Some(m) = &a.model {
                cmd.arg("--model").arg(m);
            }
            if let Some(p) = &a.prompt {
                cmd.arg("--prompt").arg(p);
            }
            if let Some(n) = a.max_tokens {
                cmd.arg("--max-tokens").arg(n.to_string());
            }
            if a.stream {
                cmd.arg("--stream");
            }
        }
        for h in &t.headers {
            cmd.arg("-H").arg(h);
        }
        if let Some(pid) = t.pid {
            cmd.arg("--target-pid").arg(pid.to_string());
        }
        let log = self.raw.join(file.replace(".json", ".log"));
        self.sup.run_to_end(&format!("gk-load run ({})", t.kind.name()), cmd, &log, a.duration + RUN_GRACE)?;
        if let Some(pid) = t.watch_pid {
            self.sup.check_alive(pid)?;
        }
        load::read(&json)
    }
}

/// One chat request through the target, expecting 2xx: a target that cannot answer is
/// skipped up front rather than measured as fast failures.
fn sanity(t: &Started, model: &str) -> Result<(), String> {
    let body = serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": "Hello"}],
        "max_tokens": 16
    })
    .to_string();
    let (status, answer) =
        procs::http_request(t.addr, "POST", "/v1/chat/completions", &t.headers, body.as_bytes(), HELPER_WAIT)
            .map_err(|e| format!("sanity request failed: {e}"))?;
    if (200..300).contains(&status) {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&answer);
    let excerpt: String = text.chars().take(300).collect();
    Err(format!("sanity request answered {status}: {}", excerpt.replace(['\r', '\n'], " ")))
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or("").to_string()
}

fn describe_request(args: &CompareArgs) -> String {
    if let Some(s) = &args.scenario {
        return format!("scenario `{}`", s.display());
    }
    format!(
        "`{}` chat request, prompt {:?}, max_tokens {}, {}",
        args.model.as_deref().unwrap_or("gpt-4o-mini"),
        args.prompt.as_deref().unwrap_or("Hello"),
        args.max_tokens.unwrap_or(16),
        if args.stream { "streamed" } else { "not streamed" }
    )
}

/// Writes `throughput.svg` and, per rate, `latency-R.svg` via `gk-load plot` (one
/// series per target: its median-p99 round); failures become notes.
fn write_plots(r: &mut CompareReport, out: &Path, gk_load: &Path) {
    if let Some(svg) = report::render_throughput_svg(r) {
        match std::fs::write(out.join(report::THROUGHPUT_SVG), svg) {
            Ok(()) => r.plots.push(Plot { title: "max throughput".into(), file: report::THROUGHPUT_SVG.into() }),
            Err(e) => r.notes.push(format!("throughput plot not written: {e}")),
        }
    }
    for section in &r.latency {
        let dir = out.join(format!("raw/plot-{}", section.rate.round() as u64));
        if std::fs::create_dir_all(&dir).is_err() {
            continue;
        }
        let mut inputs = Vec::new();
        for row in &section.rows {
            let mut runs: Vec<&Run> = r
                .runs
                .iter()
                .filter(|x| x.phase == Phase::Latency && x.rate == Some(section.rate) && x.target == row.target)
                .collect();
            runs.sort_by(|a, b| a.numbers.latency.p99_ms.total_cmp(&b.numbers.latency.p99_ms));
            let Some(mid) = runs.get(runs.len() / 2) else { continue };
            // gk-load plot labels each series by file stem, so copy to `<target>.json`.
            let dest = dir.join(format!("{}.json", row.target));
            if std::fs::copy(out.join(&mid.raw), &dest).is_ok() {
                inputs.push(dest);
            }
        }
        let file = report::latency_svg(section.rate);
        let title =
            format!("latency at {} req/s (open loop), median-p99 round per target", report::thousands(section.rate));
        let mut cmd = Command::new(gk_load);
        cmd.arg("plot").args(&inputs).arg("--out").arg(out.join(&file)).arg("--title").arg(&title);
        match procs::output_within(&mut cmd, HELPER_WAIT) {
            Ok((status, _)) if status.success() => r.plots.push(Plot { title, file }),
            Ok((status, text)) => {
                r.notes.push(format!("{file} not drawn: gk-load plot {status}: {}", first_line(&text)))
            }
            Err(e) => r.notes.push(format!("{file} not drawn: {e}")),
        }
    }
}

/// Writes `report.json` and `report.md` into `out`.
pub fn write_report(r: &CompareReport, out: &Path) -> Result<(), BenchError> {
    let json =
        serde_json::to_string_pretty(r).map_err(|e| BenchError::Invalid(format!("serializing the report: {e}")))?;
    let path = out.join("report.json");
    std::fs::write(&path, json + "\n").map_err(BenchError::io(format!("writing {}", path.display())))?;
    let path = out.join("report.md");
    std::fs::write(&path, report::render_markdown(r)).map_err(BenchError::io(format!("writing {}", path.display())))
}

/// The workspace this binary was built from (for `cargo build` and default paths).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn find_programs(args: &CompareArgs) -> Result<Programs, BenchError> {
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => build_release()?,
    };
    let bin = |name: &str| -> Result<PathBuf, BenchError> {
        let p = bin_dir.join(name);
        if p.is_file() {
            Ok(p)
        } else {
            Err(BenchError::Missing {
                what: p.display().to_string(),
                hint: "cargo build --release -p gatekeeper -p gatekeeper-loadtest, or --bin-dir".into(),
            })
        }
    };
    let peers = workspace_root().join("bench/.peers");
    let existing = |p: PathBuf| p.is_file().then_some(p);
    Ok(Programs {
        gatekeeper: bin("gatekeeper")?,
        gk_load: bin("gk-load")?,
        nginx: args.nginx.clone().or_else(|| targets::on_path("nginx")).or_else(|| existing("/usr/sbin/nginx".into())),
        litellm: args
            .litellm
            .clone()
            .or_else(|| existing(peers.join("litellm/bin/litellm")))
            .or_else(|| targets::on_path("litellm")),
        portkey: args
            .portkey
            .clone()
            .or_else(|| existing(peers.join("portkey/node_modules/@portkey-ai/gateway/build/start-server.js"))),
        node: targets::on_path("node"),
    })
}

/// `cargo build --release -p gatekeeper -p gatekeeper-loadtest`; returns the folder of the binaries.
fn build_release() -> Result<PathBuf, BenchError> {
    let root = workspace_root();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("gk-bench: cargo build --release -p gatekeeper -p gatekeeper-loadtest");
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root).args(["build", "--release", "-p", "gatekeeper", "-p", "gatekeeper-loadtest"]);
    let (status, text) = procs::output_within(&mut cmd, BUILD_WAIT)?;
    if !status.success() {
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        return Err(BenchError::Failed {
            what: "cargo build".into(),
            status: status.to_string(),
            detail: format!(":\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n")),
        });
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    Ok(target.join("release"))
}

fn host() -> Host {
    let read = |p: &str| std::fs::read_to_string(p).map(|s| s.trim().to_string()).unwrap_or_default();
    Host {
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        os: format!("{} {}", read("/proc/sys/kernel/ostype"), read("/proc/sys/kernel/osrelease")).trim().to_string(),
    }
}

/// Now, UTC, as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_now() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    utc_from_unix(secs)
}

/// A Unix time as `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian).
pub fn utc_from_unix(secs: u64) -> String {
    // u64::MAX / 86_400 is far below i64::MAX, so the day always converts.
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX);
    let rem = secs % 86_400;
    let (y, m, d) = civil::civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::gatekeeper_extra;

    #[test]
    fn gatekeeper_config_is_a_mapping_that_leaves_the_mock_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = |text: &str| {
            let p = dir.path().join("extra.yaml");
            std::fs::write(&p, text).expect("write");
            p
        };
        assert_eq!(gatekeeper_extra(&file("bridge: { nice: 10 }")).ok().as_deref(), Some("bridge: { nice: 10 }\n"));
        let e = gatekeeper_extra(&file("providers: []\n")).map(|_| ()).unwrap_err().to_string();
        assert!(e.contains("`providers` is the benchmark's own"), "{e}");
        assert!(gatekeeper_extra(&file("- a\n")).is_err(), "not a mapping");
        assert!(gatekeeper_extra(&dir.path().join("absent.yaml")).is_err());
    }
}
