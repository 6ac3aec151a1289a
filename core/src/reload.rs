//! Re-reading the config file while running (`SIGHUP`, `gatekeeper reload`).
//!
//! What can change live is applied atomically per shard with no failed request: key
//! issuers, revocations and leeway; providers' settings (address, key, timeouts,
//! pool sizes, headers); models, prices and the failover chain; routing defaults;
//! budget tenants and `budgets.reserve_tokens_default`.
//! The new tables are published through the same [`HotConfig`] write path as a
//! `BH_CONFIG` push; each shard swaps to them before its next request, and requests
//! in flight finish on the tables they started with.
//!
//! What cannot change live — the listener, shards, driver, TLS, limits, NATS, the
//! audit log, the key cache size, the budget table's size and snapshot interval, and the set of provider or model names (they label
//! metrics) — is named in the log and refused: the running value stays until a
//! restart.
//!
//! When the audit log is on, a running gateway writes its pid to
//! `<data_dir>/gatekeeper.pid` and each reload's outcome to `<data_dir>/reload.json`,
//! so `gatekeeper reload` and `gatekeeper keys revoke` can trigger one and report what
//! the gateway did.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::hot::HotConfig;
use crate::config::Config;
use crate::serve::{apply_overrides, Overrides};
use crate::tables::Tables;

/// File name of the running gateway's pid, in its data dir.
pub const PID_FILE: &str = "gatekeeper.pid";
/// File name of the last reload's outcome, in its data dir.
pub const STATUS_FILE: &str = "reload.json";

/// What one reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// Counts reloads since start (1 for the first).
    pub reload: u64,
    /// Config sections whose changes were applied.
    pub applied: Vec<String>,
    /// Changes refused, each saying what and why.
    pub refused: Vec<String>,
    /// Why nothing was applied (the file did not load, or the tables did not build).
    pub error: Option<String>,
}

/// Top-level sections that change only with a restart.
const RESTART_ONLY: [&str; 13] = [
    "listen",
    "admin_listen",
    "shards",
    "driver",
    "tls",
    "limits",
    "drain_timeout_ms",
    "nats",
    "audit",
    "cpus",
    "bridge",
    "uring",
    "listen_backlog",
];

/// The config to run after a reload from `old` to `new`: `new` with every change that
/// cannot happen live put back to `old`'s value, and what was refused.
pub fn plan(old: &Config, new: &Config) -> (Config, Vec<String>) {
    let mut eff = new.clone();
    let mut refused = Vec::new();
    let (old_v, new_v) = (section_values(old), section_values(new));
    for name in RESTART_ONLY {
        if old_v.get(name) != new_v.get(name) {
            refused.push(format!("{name}: changes only with a restart"));
        }
    }
    eff.listen.clone_from(&old.listen);
    eff.admin_listen.clone_from(&old.admin_listen);
    eff.shards = old.shards;
    eff.driver = old.driver;
    eff.tls.clone_from(&old.tls);
    eff.limits = old.limits.clone();
    eff.drain_timeout_ms = old.drain_timeout_ms;
    eff.nats.clone_from(&old.nats);
    eff.audit = old.audit.clone();
    eff.cpus.clone_from(&old.cpus);
    eff.bridge = old.bridge;
    eff.uring = old.uring;
    eff.listen_backlog = old.listen_backlog;
    let names = |c: &Config| -> (Vec<String>, Vec<String>) {
        let mut models: Vec<String> = c.models.iter().map(|m| m.name.clone()).collect();
        models.sort();
        models.dedup();
        (c.providers.iter().map(|p| p.name.clone()).collect(), models)
    };
    if names(old) != names(new) {
        refused.push(
            "providers/models: adding, removing, renaming or reordering providers or model names needs a \
             restart (they label metrics); their other settings apply live"
                .into(),
        );
        eff.providers.clone_from(&old.providers);
        eff.models.clone_from(&old.models);
        eff.failover_chain.clone_from(&old.failover_chain);
    }
    // Budget tenants and the reservation cap apply live (they are in the tables); the
    // board's size and the snapshot thread's pace are fixed at start.
    if (old.budgets.subjects_max, old.budgets.snapshot_interval_ms)
        != (new.budgets.subjects_max, new.budgets.snapshot_interval_ms)
    {
        refused.push("budgets.subjects_max, budgets.snapshot_interval_ms: change only with a restart".into());
        eff.budgets.subjects_max = old.budgets.subjects_max;
        eff.budgets.snapshot_interval_ms = old.budgets.snapshot_interval_ms;
    }
    // The budget gossip's pace and sizes are the bridge's, fixed at start; the mode and
    // the escrow split (`strict_*`) are in the tables and apply live.
    let gossip = |b: &crate::config::BudgetsConfig| {
        (b.gossip_interval_ms, b.anti_entropy_interval_ms, b.join_timeout_ms, b.message_bytes_max)
    };
    if gossip(&old.budgets) != gossip(&new.budgets) {
        refused.push(
            "budgets.gossip_interval_ms, anti_entropy_interval_ms, join_timeout_ms, message_bytes_max: \
             change only with a restart"
                .into(),
        );
        eff.budgets.gossip_interval_ms = old.budgets.gossip_interval_ms;
        eff.budgets.anti_entropy_interval_ms = old.budgets.anti_entropy_interval_ms;
        eff.budgets.join_timeout_ms = old.budgets.join_timeout_ms;
        eff.budgets.message_bytes_max = old.budgets.message_bytes_max;
    }
    match (&old.keys, &mut eff.keys) {
        (Some(o), Some(n)) if o.cache_entries_max != n.cache_entries_max => {
            refused.push("keys.cache_entries_max: changes only with a restart".into());
            n.cache_entries_max = o.cache_entries_max;
        }
        (Some(_), None) | (None, Some(_)) => {
            refused.push("keys: turning key checks on or off needs a restart".into());
            eff.keys.clone_from(&old.keys);
        }
        _ => {}
    }
    (eff, refused)
}

/// The sections of `c` as JSON values, to compare.
fn section_values(c: &Config) -> serde_json::Map<String, serde_json::Value> {
    match serde_json::to_value(c) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    }
}

/// The sections that differ between `a` and `b`.
fn changed_sections(a: &Config, b: &Config) -> Vec<String> {
    let (a, b) = (section_values(a), section_values(b));
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter().filter(|k| a.get(*k) != b.get(*k)).cloned().collect()
}

/// A running gateway's reloadable state.
pub struct Reloader {
    path: PathBuf,
    current: Config,
    overrides: Overrides,
    hot: std::sync::Arc<HotConfig>,
    reloads: u64,
    /// `<data_dir>` when the audit log is on (pid and status files go there).
    data_dir: Option<PathBuf>,
}

impl Reloader {
    /// State for reloading `path`, currently running as `current`.
    pub fn new(path: PathBuf, current: Config, overrides: Overrides, hot: std::sync::Arc<HotConfig>) -> Reloader {
        let data_dir = current.audit.enabled.then(|| current.audit.data_dir.clone());
        Reloader { path, current, overrides, hot, reloads: 0, data_dir }
    }

    /// Writes this process's pid where `gatekeeper reload` looks for it.
    pub fn write_pid(&self) {
        if let Some(dir) = &self.data_dir {
            let path = dir.join(PID_FILE);
            if let Err(e) = write_private(&path, format!("{}\n", std::process::id()).as_bytes()) {
                tracing::warn!(path = %path.display(), error = %e, "could not write the pid file; `gatekeeper reload` will not find this gateway");
            }
        }
    }

    /// Removes the pid file (at a clean stop).
    pub fn remove_pid(&self) {
        if let Some(dir) = &self.data_dir {
            let _ = std::fs::remove_file(dir.join(PID_FILE));
        }
    }

    /// Re-reads the file and applies what can change live; logs and records the outcome.
    pub fn reload(&mut self) -> Outcome {
        self.reloads = self.reloads.saturating_add(1);
        let mut outcome = Outcome { reload: self.reloads, ..Outcome::default() };
        let loaded = Config::load(&self.path)
            .map_err(|e| format!("{}: {e}", self.path.display()))
            .and_then(|mut c| apply_overrides(&mut c, &self.overrides).map(|()| c).map_err(|e| e.to_string()));
        match loaded {
            Err(e) => outcome.error = Some(e),
            Ok(new) => {
                let (eff, refused) = plan(&self.current, &new);
                outcome.refused = refused;
                match Tables::build(&eff, self.overrides.no_auth) {
                    Err(e) => outcome.error = Some(e.to_string()),
                    Ok(tables) => {
                        outcome.applied = changed_sections(&self.current, &eff);
                        let revoked = eff.keys.as_ref().map(|k| k.revoked.clone()).unwrap_or_default();
                        self.hot.reload(revoked, Some(tables));
                        self.current = eff;
                    }
                }
            }
        }
        match &outcome.error {
            Some(e) => tracing::error!(error = %e, "config reload failed; nothing changed"),
            None => tracing::info!(applied = ?outcome.applied, "config reloaded"),
        }
        for r in &outcome.refused {
            tracing::warn!(refused = %r, "config change not applied live");
        }
        if let Some(dir) = &self.data_dir {
            let path = dir.join(STATUS_FILE);
            let written =
                serde_json::to_vec(&outcome).map_err(std::io::Error::other).and_then(|b| write_private(&path, &b));
            if let Err(e) = written {
                tracing::warn!(path = %path.display(), error = %e, "could not record the reload's outcome");
            }
        }
        outcome
    }
}

/// Asks the gateway running with the config at `config_path` to reload, and waits up
/// to `wait` for its outcome. `Ok(None)`: no running gateway was found (it has no pid
/// file, or that process is gone).
pub fn signal_running(config_path: &Path, wait: Duration) -> anyhow::Result<Option<(u32, Outcome)>> {
    let config = Config::load_sections(config_path, Some(&["audit"]))?;
    if !config.audit.enabled {
        anyhow::bail!(
            "audit.enabled is false, so the gateway keeps no pid file; send it SIGHUP yourself (`kill -HUP PID`)"
        );
    }
    let dir = &config.audit.data_dir;
    let Ok(text) = std::fs::read_to_string(dir.join(PID_FILE)) else { return Ok(None) };
    let Some(pid) = text.trim().parse::<i32>().ok().and_then(rustix::process::Pid::from_raw) else {
        return Ok(None);
    };
    let status_path = dir.join(STATUS_FILE);
    let before = read_status(&status_path).map_or(0, |o| o.reload);
    if rustix::process::kill_process(pid, rustix::process::Signal::HUP).is_err() {
        return Ok(None);
    }
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if let Some(o) = read_status(&status_path).filter(|o| o.reload > before) {
            return Ok(Some((pid.as_raw_nonzero().get().unsigned_abs(), o)));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    anyhow::bail!("sent SIGHUP to pid {}, but it reported no reload within {wait:?}", pid.as_raw_nonzero())
}

/// Replaces `path`'s contents, creating it 0600 like everything in the data dir.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    crate::audit::private::options().write(true).create(true).truncate(true).open(path)?.write_all(bytes)
}

fn read_status(path: &Path) -> Option<Outcome> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "listen: 127.0.0.1:1\nproviders:\n  - { name: a, kind: openai_compatible, base_url: \"http://127.0.0.1:2/v1\" }\nmodels:\n  - { name: m, provider: a, upstream_model: x }\n";

    fn parse(text: &str) -> Config {
        Config::parse(text).expect("config")
    }

    #[test]
    fn live_changes_pass_and_restart_only_changes_are_refused() {
        let old = parse(BASE);
        let new = parse(&BASE.replace("upstream_model: x", "upstream_model: y, price_per_1k_input: 1.5"));
        let (eff, refused) = plan(&old, &new);
        assert!(refused.is_empty(), "{refused:?}");
        assert_eq!(eff.models[0].upstream_model, "y");
        assert_eq!(changed_sections(&old, &eff), ["models"]);

        let new = parse(&BASE.replace("listen: 127.0.0.1:1", "listen: 127.0.0.1:3\nlimits: { body_bytes_max: 5 }"));
        let (eff, refused) = plan(&old, &new);
        assert_eq!(refused.len(), 2, "{refused:?}");
        assert!(refused[0].starts_with("listen:") && refused[1].starts_with("limits:"));
        assert_eq!(eff.listen, "127.0.0.1:1");
        assert_eq!(eff.limits, old.limits);
        assert!(changed_sections(&old, &eff).is_empty());
    }

    #[test]
    fn new_names_are_refused_but_other_settings_apply() {
        let old = parse(BASE);
        let new = parse(&format!(
            "{BASE}  - {{ name: m2, provider: a, upstream_model: z }}\nrouting: {{ quality_threshold: 0.5 }}\n"
        ));
        let (eff, refused) = plan(&old, &new);
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert!(refused[0].starts_with("providers/models:"));
        assert_eq!(eff.models.len(), 1);
        assert_eq!(changed_sections(&old, &eff), ["routing"]);
    }

    #[test]
    fn budget_tenants_apply_live_but_the_table_size_waits_for_a_restart() {
        let old = parse(BASE);
        let new = parse(&format!("{BASE}budgets: {{ tenants: {{ acme: {{ rpm: 5 }} }}, subjects_max: 10 }}\n"));
        let (eff, refused) = plan(&old, &new);
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert!(refused[0].starts_with("budgets.subjects_max"));
        assert_eq!((eff.budgets.subjects_max, eff.budgets.tenants.len()), (old.budgets.subjects_max, 1));
        assert_eq!(changed_sections(&old, &eff), ["budgets"]);
        let new = parse(&format!("{BASE}budgets: {{ gossip_interval_ms: 50, mode: strict, strict_nodes: 3 }}\n"));
        let (eff, refused) = plan(&old, &new);
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert!(refused[0].starts_with("budgets.gossip_interval_ms"));
        assert_eq!(eff.budgets.gossip_interval_ms, 100, "kept");
        assert_eq!((eff.budgets.mode, eff.budgets.strict_nodes), (crate::config::BudgetMode::Strict, 3), "live");
    }
}
