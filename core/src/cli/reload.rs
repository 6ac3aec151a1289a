//! `gatekeeper reload`: asks the running gateway to re-read its config file (as
//! SIGHUP does) and prints what it applied and what it refused.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;

use crate::reload::signal_running;

/// Flags of `gatekeeper reload`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReloadArgs {
    /// The running gateway's config file (its `audit.data_dir` holds the pid).
    #[arg(long, default_value = "gatekeeper.yaml")]
    pub config: PathBuf,
}

/// Runs `gatekeeper reload`.
pub fn run(args: &ReloadArgs) -> anyhow::Result<()> {
    let found = signal_running(&args.config, Duration::from_secs(5))
        .with_context(|| format!("config {}", args.config.display()))?;
    let Some((pid, outcome)) = found else {
        anyhow::bail!("no running gateway found for {} (no live pid in its audit.data_dir)", args.config.display());
    };
    if let Some(e) = &outcome.error {
        anyhow::bail!("gateway (pid {pid}) could not reload, nothing changed: {e}");
    }
    match outcome.applied.as_slice() {
        [] => println!("gateway (pid {pid}) reloaded {}: nothing changed", args.config.display()),
        sections => println!("gateway (pid {pid}) reloaded {}: applied {}", args.config.display(), sections.join(", ")),
    }
    for r in &outcome.refused {
        println!("  not applied (restart needed): {r}");
    }
    Ok(())
}
