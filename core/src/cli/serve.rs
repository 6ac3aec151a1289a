//! `gatekeeper serve`: runs the gateway until SIGTERM or SIGINT, then drains; SIGHUP
//! re-reads the config file (`reload.rs`).

use std::path::PathBuf;

use anyhow::Context as _;

use crate::config::Config;
use crate::reload::Reloader;
use crate::serve::{start, Overrides, Signal, Signals};

/// Flags of `gatekeeper serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Config file.
    #[arg(long, default_value = "gatekeeper.yaml")]
    pub config: PathBuf,
    /// What the command line overrides.
    #[command(flatten)]
    pub overrides: Overrides,
}

/// Runs `gatekeeper serve` until SIGTERM or SIGINT, then drains and returns.
pub fn run(args: &ServeArgs) -> anyhow::Result<()> {
    let config = Config::load(&args.config).with_context(|| format!("config {}", args.config.display()))?;
    let tls = config.tls.is_some();
    // Handlers go in before the address is printed: whoever reads it may signal at once.
    let mut signals = Signals::install()?;
    let overrides = Overrides { config_path: Some(args.config.clone()), ..args.overrides.clone() };
    let running = start(config, &overrides)?;
    let scheme = if tls { "https" } else { "http" };
    println!("gatekeeper listening on {} ({scheme})", running.addr);
    if let Some(admin) = running.admin_addr {
        println!("gatekeeper admin listening on {admin}");
    }
    let mut reloader =
        Reloader::new(args.config.clone(), running.config.clone(), overrides.clone(), running.gateway.hot.clone());
    reloader.write_pid();
    while signals.next_signal() == Signal::Reload {
        reloader.reload();
    }
    tracing::info!("shutdown requested; draining");
    running.shutdown_and_join();
    reloader.remove_pid();
    tracing::info!("stopped");
    Ok(())
}
