//! `gk-load` — Gatekeeper's load tool. Subcommands: `mock` (a mock LLM provider).
//! `run` (the open-loop load generator) is reserved for a later change.
#![forbid(unsafe_code)]

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use gatekeeper_loadtest::mock;

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
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Mock(args) => {
            let config = mock::Config::from_args(&args).context("invalid mock flags")?;
            mock::run(config, args.threads).context("mock server failed")
        }
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
        assert!(with(&[
            "--pause-every-s",
            "10",
            "--pause-s",
            "1",
            "--mode",
            "deepseek"
        ])
        .is_ok());
    }
}
