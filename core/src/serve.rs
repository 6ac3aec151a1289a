//! The gateway's lifecycle: config in, bridge and shards up, signals caught,
//! drained out. `gatekeeper serve` (`cli/serve.rs`) and `gatekeeper demo` run it.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use gatekeeper_net::{ServerLimits, ShardSet, ShardSetConfig};

use crate::bridge::{Bridge, ShardAudit};
use crate::config::{Config, DriverChoice, Shards};
use crate::gateway::{Gateway, ShardGateway};
use crate::routes::{AdminHandler, ShardHandler};

/// Command-line overrides of the config file.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Overrides {
    /// Listen address (overrides `listen`).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Number of shards (overrides `shards`).
    #[arg(long)]
    pub shards: Option<usize>,
    /// I/O driver (overrides `driver`).
    #[arg(long, value_enum)]
    pub driver: Option<DriverChoice>,
    /// Accept requests without an API key. For local trials only.
    #[arg(long)]
    pub no_auth: bool,
    /// Where the config came from, for the start line (not a flag).
    #[arg(skip)]
    pub config_path: Option<std::path::PathBuf>,
}

/// A running gateway.
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where the admin listener (`admin_listen`) listens, if there is one.
    pub admin_addr: Option<SocketAddr>,
    /// The shared tables.
    pub gateway: Arc<Gateway>,
    /// The config it runs with (the file plus the command line's overrides).
    pub config: Config,
    shards: ShardSet,
    /// Writes the budget snapshot; stopped (with a last snapshot) after the shards drained.
    budget_keeper: Option<crate::budget::persist::Keeper>,
    /// The admin listener's one shard; stopped after the API shards, so `/readyz` says
    /// `draining` for as long as they drain.
    admin: Option<ShardSet>,
    drain_timeout: Duration,
}

impl Running {
    /// Stops accepting, drains, and waits for the shards to exit.
    pub fn shutdown_and_join(self) {
        self.gateway.draining.store(true, Ordering::SeqCst);
        self.shards.shutdown_handle().shutdown();
        self.shards.join();
        // Every reservation is settled or released now: the last snapshot loses nothing.
        if let Some(keeper) = self.budget_keeper {
            keeper.stop();
        }
        if let Some(admin) = self.admin {
            admin.shutdown_handle().shutdown();
            admin.join();
        }
        // No shard submits any more: ship what is left and close the chain with a checkpoint.
        if let Some(bridge) = &self.gateway.bridge {
            match bridge.shutdown(self.drain_timeout) {
                Ok(None) => {}
                Ok(Some(r)) if r.drained => tracing::info!(chain = %r.chain, entries = r.entries, "audit chain closed"),
                Ok(Some(r)) => {
                    tracing::warn!(chain = %r.chain, "audit store unreachable: the rest ships on the next start")
                }
                Err(e) => tracing::error!(error = %e, "bridge failed"),
            }
        }
    }
}

/// Puts the command line's overrides into `config` (at start, and on every reload so
/// a re-read file is compared with what really runs).
pub fn apply_overrides(config: &mut Config, args: &Overrides) -> anyhow::Result<()> {
    if let Some(l) = args.listen {
        config.listen = l.to_string();
    }
    if let Some(n) = args.shards {
        anyhow::ensure!(n >= 1, "--shards must be at least 1");
        config.shards = Shards::Count(n);
        if let Some(cpus) = &config.cpus {
            crate::config::placement::check_cpus(config.shards, cpus).context("--shards")?;
        }
    }
    if let Some(d) = args.driver {
        config.driver = d;
    }
    Ok(())
}

/// Applies overrides, builds the gateway and starts its shards.
pub fn start(mut config: Config, args: &Overrides) -> anyhow::Result<Running> {
    apply_overrides(&mut config, args)?;
    let shards = config.shard_count();
    warn_above_somaxconn(config.listen_backlog);
    match gatekeeper_net::shard::raise_fd_limit() {
        Ok(n) if (n as usize) < shards.saturating_mul(config.limits.connections_per_shard_max) => tracing::warn!(
            fd_limit = n,
            "open-file limit is below shards × connections_per_shard_max; accepts will fail before the cap"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
    }
    let listen: SocketAddr =
        config.listen.parse().with_context(|| format!("listen: not an address: {}", config.listen))?;
    // Checked again after the overrides: `--listen` may have moved onto it.
    let admin_listen = config.admin_addr()?;
    // Before anything is created (data dir, node key, WAL): the shards bind with
    // SO_REUSEPORT, which would silently share the port with another gateway.
    ensure_free(listen, "listen", "--listen")?;
    if let Some(admin) = admin_listen {
        ensure_free(admin, "admin_listen", "admin_listen")?;
    }
    if args.no_auth {
        tracing::warn!("AUTHENTICATION IS DISABLED (--no-auth): any client can use every model. Local trials only.");
    }
    let mut gateway = Gateway::build(&config, shards, args.no_auth)?;
    let mut audits: Vec<Option<ShardAudit>> = (0..shards).map(|_| None).collect();
    // (Before the bridge: its budget gossip takes the restored spend as its floor.)
    // Spend settled by earlier runs in the windows still open, before any shard admits.
    let snapshot = config.audit.data_dir.join(crate::budget::persist::SNAPSHOT_FILE);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let restored = crate::budget::persist::load(&gateway.budgets, &snapshot, now).context("loading budget spend")?;
    if restored > 0 {
        tracing::info!(windows = restored, file = %snapshot.display(), "budget spend restored");
    }
    // The bridge watches BH_CONFIG whenever `nats` is set, and ships audit records when audit is on.
    // With NATS, credit nullifiers are claimed across nodes through the bridge.
    let claims = match (&gateway.credits, &config.nats) {
        (Some(credits), Some(_)) => {
            let (tx, rx) = crate::bridge::credits::queue();
            credits.share_nullifiers(tx);
            Some(rx)
        }
        _ => None,
    };
    if config.audit.enabled || config.nats.is_some() {
        let bridge = Arc::new(
            Bridge::start_with_feeds(
                &config,
                shards,
                gateway.hot.clone(),
                Some(gateway.health.clone()),
                Some(gateway.budgets.clone()),
                claims,
            )
            .context("starting the bridge")?,
        );
        // Budgets across nodes: no shard admits before the peers' spend is in (or the
        // bounded wait passed; then the node starts with what it has).
        if let Some(join) = bridge.budget_join() {
            let outcome = join.wait(Duration::from_millis(config.budgets.join_timeout_ms));
            tracing::info!(?outcome, "budget join");
        }
        // Made here, on the main thread, so a bad data dir fails the start, not a shard.
        audits = (0..shards).map(|i| bridge.shard(i)).collect::<Result<_, _>>()?;
        gateway.bridge = Some(bridge);
    }
    if !config.audit.enabled {
        tracing::warn!("audit.enabled is false: requests are not audited");
    }
    let budget_keeper = crate::budget::persist::Keeper::start(
        gateway.budgets.clone(),
        snapshot,
        Duration::from_millis(config.budgets.snapshot_interval_ms),
    )
    .context("starting the budget snapshot thread")?;
    // Each shard takes its own spool once, at shard start; never touched on the request path.
    let audits = Arc::new(std::sync::Mutex::new(audits));
    let gateway = Arc::new(gateway);
    let tls = match &config.tls {
        Some(t) => Some(gatekeeper_net::tls::server_config(&t.cert_file, &t.key_file)?),
        None => None,
    };
    let set_config = ShardSetConfig {
        shards,
        driver: config.driver.into(),
        listen,
        pin: true,
        cpus: config.cpus.clone(),
        uring: (&config.uring).into(),
        tls,
        limits: ServerLimits::from(&config.limits),
        drain_timeout: Duration::from_millis(config.drain_timeout_ms),
        backlog: config.listen_backlog,
    };
    let admin_config = admin_listen.map(|listen| ShardSetConfig {
        shards: 1,
        listen,
        pin: false,
        cpus: None,
        tls: None,
        backlog: 128,
        ..set_config.clone()
    });
    let gw = gateway.clone();
    let set = ShardSet::start(set_config, move |ctx| {
        let audit = audits.lock().unwrap_or_else(|p| p.into_inner()).get_mut(ctx.index).and_then(Option::take);
        ShardHandler(ShardGateway::new(gw.clone(), ctx, audit))
    })?;
    let drivers: Vec<&str> = set.stats().iter().map(|s| s.driver().map_or("?", |d| d.name())).collect();
    let admin = match admin_config {
        Some(admin_config) => {
            let (gw, net_stats) = (gateway.clone(), set.stats());
            let started =
                ShardSet::start(admin_config, move |_| AdminHandler { gw: gw.clone(), net_stats: net_stats.clone() });
            match started {
                Ok(admin) => Some(admin),
                Err(e) => {
                    set.shutdown_handle().shutdown();
                    set.join();
                    return Err(e).context("starting the admin listener");
                }
            }
        }
        None => None,
    };
    let admin_addr = admin.as_ref().map(ShardSet::local_addr);
    let auth = match &config.keys {
        _ if args.no_auth => "DISABLED (--no-auth)".to_string(),
        Some(k) => format!("keys ({} issuers)", k.issuers.len()),
        None => "none".to_string(),
    };
    let audit = match (&config.nats, config.audit.enabled) {
        (_, false) => "off".to_string(),
        (Some(n), true) => format!("nats {}", n.url),
        (None, true) => format!("files {}", config.audit.data_dir.display()),
    };
    let config_path = args.config_path.as_ref().map_or_else(|| "(built in)".to_string(), |p| p.display().to_string());
    // The one line that says what this start is.
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %config_path,
        listen = %set.local_addr(),
        admin = %admin_addr.map_or_else(|| "(none)".to_string(), |a| a.to_string()),
        shards,
        drivers = ?drivers,
        tls = config.tls.is_some(),
        auth = %auth,
        audit = %audit,
        "gatekeeper started"
    );
    Ok(Running {
        addr: set.local_addr(),
        admin_addr,
        gateway,
        shards: set,
        budget_keeper: Some(budget_keeper),
        admin,
        drain_timeout: Duration::from_millis(config.drain_timeout_ms),
        config,
    })
}

/// The kernel silently caps every listen backlog at `net.core.somaxconn`; says so when
/// `listen_backlog` asks for more (`gatekeeper tune` advises the sysctl).
fn warn_above_somaxconn(listen_backlog: u32) {
    let somaxconn =
        std::fs::read_to_string("/proc/sys/net/core/somaxconn").ok().and_then(|s| s.trim().parse::<u32>().ok());
    if let Some(max) = somaxconn.filter(|&m| m < listen_backlog) {
        tracing::warn!(
            listen_backlog,
            somaxconn = max,
            "listen_backlog is above net.core.somaxconn; the kernel uses {max}"
        );
    }
}

/// Refuses to start on an address another process listens on. The shards bind with
/// `SO_REUSEPORT`, so the kernel would otherwise split connections between this
/// gateway and whatever holds the port (another gateway, with other keys). A probe
/// bound without it fails while any socket listens there; `SO_REUSEADDR` lets it pass
/// connections lingering in TIME_WAIT from a previous run. Port 0 (any free port) is
/// never taken.
fn ensure_free(addr: SocketAddr, key: &str, how: &str) -> anyhow::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let probe = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)
        .context("creating a socket")?;
    probe.set_reuse_address(true).context("setting SO_REUSEADDR")?;
    match probe.bind(&addr.into()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(anyhow::anyhow!(
            "{key}: another process already listens on {addr} (is another gateway running?); \
             stop it or pick another address with {how}"
        )),
        Err(e) => Err(anyhow::anyhow!("{key}: cannot listen on {addr}: {e}")),
    }
}

/// SIGTERM, SIGINT and SIGHUP, caught from the moment [`Signals::install`] returns.
pub struct Signals(signal_hook::iterator::Signals);

/// What a signal asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM or SIGINT: drain and stop.
    Stop,
    /// SIGHUP: re-read the config file.
    Reload,
}

impl Signals {
    /// Installs the handlers; the signals are held until [`Signals::next_signal`].
    pub fn install() -> anyhow::Result<Signals> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let signals =
            signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP]).context("installing signal handlers")?;
        Ok(Signals(signals))
    }

    /// Blocks until the next signal.
    pub fn next_signal(&mut self) -> Signal {
        match self.0.forever().next() {
            Some(signal_hook::consts::SIGHUP) => Signal::Reload,
            Some(sig) => {
                tracing::info!(signal = sig, "signal received");
                Signal::Stop
            }
            None => Signal::Stop,
        }
    }

    /// Blocks until SIGTERM or SIGINT (a SIGHUP is logged and ignored).
    pub fn wait(mut self) {
        while self.next_signal() == Signal::Reload {
            tracing::info!("SIGHUP ignored: nothing to reload here");
        }
    }
}
