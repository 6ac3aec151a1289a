//! `gk-load` — Gatekeeper's load tool. Subcommands: `mock` (a mock LLM provider), `run`
//! (the open-loop load generator) and `plot` (SVG of one or more `run --json` reports).
#![forbid(unsafe_code)]

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use gatekeeper_loadtest::{mock, run};

/// Gatekeeper load tool.
#[derive(Parser, Debug)]
#[command(name = "gk-load", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a mock LLM provider (OpenAI / Anthropic / Groq / DeepSeek wire formats).
    Mock(mock::MockArgs),
    /// Generate load (open loop by default) and report latency from intended send times.
    Run(Box<run::RunArgs>),
    /// Plot latency-by-percentile of one or more `run --json` reports as SVG.
    Plot(PlotArgs),
}

/// Flags of `gk-load plot`.
#[derive(clap::Args, Debug)]
struct PlotArgs {
    /// Reports written by `gk-load run --json` (up to 8); each becomes one line.
    #[arg(required = true)]
    reports: Vec<PathBuf>,
    /// The SVG file to write.
    #[arg(long)]
    out: PathBuf,
    /// Plot title.
    #[arg(long, default_value = "Latency by percentile (from intended send time)")]
    title: String,
}

fn plot(args: &PlotArgs) -> anyhow::Result<()> {
    if args.reports.len() > run::plot::SERIES_MAX {
        anyhow::bail!("at most {} reports", run::plot::SERIES_MAX);
    }
    let mut series = Vec::with_capacity(args.reports.len());
    for p in &args.reports {
        let text = std::fs::read_to_string(p).with_context(|| format!("{}", p.display()))?;
        let label = p.file_stem().map_or_else(String::new, |s| s.to_string_lossy().into_owned());
        let s = run::plot::series_from_json(&label, &text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
        series.push(s);
    }
    let svg = run::plot::render_svg(&args.title, &series);
    std::fs::write(&args.out, svg).with_context(|| format!("{}", args.out.display()))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Mock(args) => {
            let mock = args.to_config().and_then(|c| c.build()).context("invalid mock flags")?;
            mock::run(mock).context("mock server failed")
        }
        Command::Run(args) => {
            let config = run::Config::from_args(&args).map_err(|e| anyhow::anyhow!(e)).context("invalid run flags")?;
            let report = run::run(config).map_err(|e| anyhow::anyhow!(e))?;
            print!("{}", report.summary());
            Ok(())
        }
        Command::Plot(args) => plot(&args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn fault_conflicts_with_schedule_and_pause_needs_both() {
        let base = ["gk-load", "mock", "--listen", "127.0.0.1:0"];
        let with = |extra: &[&str]| Cli::try_parse_from(base.iter().chain(extra));
        assert!(with(&["--fault", "500", "--schedule", "x.yaml"]).is_err());
        assert!(with(&["--pause-every-s", "10"]).is_err());
        assert!(with(&["--pause-every-s", "10", "--pause-s", "1", "--mode", "deepseek"]).is_ok());
    }

    #[test]
    fn run_needs_exactly_one_load_shape() {
        let base = ["gk-load", "run", "--url", "http://127.0.0.1:1/"];
        let with = |extra: &[&str]| Cli::try_parse_from(base.iter().chain(extra));
        assert!(with(&["--duration", "1s"]).is_err(), "no load shape");
        assert!(with(&["--rate", "10", "--connections", "2"]).is_err());
        assert!(with(&["--rate", "10", "--duration", "1s"]).is_ok());
        assert!(with(&["--scenario", "s.yaml", "--model", "m", "--rate", "1"]).is_err());
        let Ok(cli) = with(&["--rate", "10", "--requests", "5", "-H", "X-A: 1", "-H", "X-B: 2"]) else {
            panic!("valid flags");
        };
        let Command::Run(args) = cli.command else {
            panic!("run");
        };
        assert_eq!(args.headers.len(), 2);
        let cfg = run::Config::from_args(&args).expect("valid config");
        assert_eq!(cfg.requests_max, Some(5));
        let Ok(Command::Run(bad)) = with(&["--rate", "10"]).map(|c| c.command) else {
            panic!("parses");
        };
        assert!(run::Config::from_args(&bad).is_err(), "needs --duration or --requests");
    }
}
