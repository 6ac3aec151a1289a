//! The `gatekeeper` command.

use clap::{Parser, Subcommand};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Gatekeeper: an OpenAI-compatible, thread-per-core AI gateway.
#[derive(Debug, Parser)]
#[command(name = "gatekeeper", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway.
    Serve(gatekeeper::serve::ServeArgs),
    /// Offline trial: mock providers, the gateway and a demo key, all in this process.
    #[cfg(feature = "demo")]
    Demo(gatekeeper::demo::DemoArgs),
    /// Issue, inspect and revoke API keys.
    #[command(subcommand)]
    Keys(Box<gatekeeper::keys::cli::KeysCommand>),
    /// Verify the audit log.
    #[command(subcommand)]
    Audit(gatekeeper::audit::cli::AuditCommand),
    /// Push hot configuration (revocations, routing, capabilities) to NATS.
    #[command(subcommand)]
    Config(gatekeeper::bridge::cli::ConfigCommand),
}

fn main() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GATEKEEPER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => gatekeeper::serve::run(&args),
        #[cfg(feature = "demo")]
        Command::Demo(args) => gatekeeper::demo::run(&args),
        Command::Keys(cmd) => gatekeeper::keys::cli::run(*cmd),
        Command::Audit(cmd) => gatekeeper::audit::cli::run(cmd),
        Command::Config(cmd) => gatekeeper::bridge::cli::run(cmd),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
