//! The `gatekeeper` command line: one file per subcommand, each parsing its flags
//! and calling into the library. `main.rs` only sets up logging and runs [`run`].

pub mod audit;
pub mod budget;
mod budget_nodes;
pub mod client;
pub mod config;
#[cfg(feature = "demo")]
pub mod demo;
pub mod keys;
pub mod reload;
pub mod route;
pub mod serve;
pub mod tune;

use clap::{Parser, Subcommand};

/// Gatekeeper: an OpenAI-compatible, thread-per-core AI gateway.
#[derive(Debug, Parser)]
#[command(name = "gatekeeper", version, about)]
pub struct Cli {
    /// Log format on stderr: `text` (colour only on a terminal) or `json` (one object
    /// per line, for log shippers). The level comes from `GATEKEEPER_LOG` (default `info`).
    #[arg(long, value_enum, global = true, default_value = "text")]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Sets up logging on stderr.
pub fn init_logging(format: LogFormat) {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_env("GATEKEEPER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve(serve::ServeArgs),
    /// Offline trial: mock providers, the gateway and a demo key, all in this process.
    #[cfg(feature = "demo")]
    Demo(demo::DemoArgs),
    /// Issue, inspect and revoke API keys.
    #[command(subcommand)]
    Keys(Box<keys::KeysCommand>),
    /// Verify the audit log.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Push hot configuration (revocations, routing, capabilities) to NATS.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Make the running gateway re-read its config file (as SIGHUP does).
    Reload(reload::ReloadArgs),
    /// Score prompts and show the router's decision under a config.
    #[command(subcommand)]
    Route(route::RouteCommand),
    /// Inspect the host and recommend per-core settings (`--calibrate` measures them).
    Tune(Box<tune::TuneArgs>),
    /// Show a key's token budgets as the running gateway counts them.
    #[command(subcommand)]
    Budget(budget::BudgetCommand),
    /// Local OpenAI-compatible sidecar paying each request with an anonymous credit spend.
    Client(client::ClientArgs),
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(&args),
        #[cfg(feature = "demo")]
        Command::Demo(args) => demo::run(&args),
        Command::Keys(cmd) => keys::run(*cmd),
        Command::Audit(cmd) => audit::run(cmd),
        Command::Config(cmd) => config::run(cmd),
        Command::Reload(args) => reload::run(&args),
        Command::Route(cmd) => route::run(cmd),
        Command::Tune(args) => tune::run(&args),
        Command::Budget(cmd) => budget::run(cmd),
        Command::Client(args) => client::run(&args),
    }
}
