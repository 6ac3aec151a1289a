//! The `gatekeeper` command line: one file per subcommand, each parsing its flags
//! and calling into the library. `main.rs` only sets up logging and runs [`run`].

pub mod audit;
pub mod config;
#[cfg(feature = "demo")]
pub mod demo;
pub mod keys;
pub mod serve;

use clap::{Parser, Subcommand};

/// Gatekeeper: an OpenAI-compatible, thread-per-core AI gateway.
#[derive(Debug, Parser)]
#[command(name = "gatekeeper", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
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
    }
}
