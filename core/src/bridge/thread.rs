//! What the bridge thread runs: connect to NATS when it is configured, then the config
//! watch and audit shipping side by side until shutdown.

use std::sync::Arc;

use super::{
    budget, connection, credits, health, shipper, watch, BridgeError, BridgeReport, Settings, Shared, ThreadResult,
};
use crate::config::hot::HotConfig;
use crate::config::{BridgeConfig, NatsConfig};
use crate::keys::SecretKey;

/// The jobs of one bridge thread.
pub(super) struct Jobs {
    /// This node's name (the NATS client's name).
    pub node: String,
    /// Where to connect; the config watch runs whenever it is set.
    pub nats: Option<NatsConfig>,
    /// What the config watch keeps current.
    pub hot: Arc<HotConfig>,
    /// Audit shipping's settings and node key, with audit on.
    pub audit: Option<(Settings, SecretKey)>,
    /// The health feed, run whenever NATS is set.
    pub health: Option<health::Feed>,
    /// The budget gossip, run whenever NATS is set and the gateway budgets.
    pub budget: Option<budget::Feed>,
    /// Credit nullifier claims, answered whenever NATS is set.
    pub credits: Option<credits::Job>,
}

/// Puts the calling thread where `bridge:` says: pinned to `cpu`, at priority `nice`.
/// The error names the key and what the kernel said.
pub(super) fn place(placement: &BridgeConfig) -> Result<(), String> {
    if let Some(cpu) = placement.cpu {
        if cpu >= rustix::thread::CpuSet::MAX_CPU {
            return Err(format!("bridge.cpu: {cpu} is beyond the affinity mask"));
        }
        let mut set = rustix::thread::CpuSet::new();
        set.set(cpu);
        rustix::thread::sched_setaffinity(None, &set)
            .map_err(|e| format!("bridge.cpu: cannot pin the bridge thread to CPU {cpu}: {e}"))?;
    }
    if let Some(nice) = placement.nice {
        // PRIO_PROCESS with a thread id sets that thread's nice on Linux, not the process's.
        rustix::process::setpriority_process(Some(rustix::thread::gettid()), nice).map_err(|e| {
            format!("bridge.nice: cannot set {nice}: {e} (a negative nice needs CAP_SYS_NICE or RLIMIT_NICE)")
        })?;
    }
    Ok(())
}

/// Runs the jobs on this thread until shutdown; the shipping report with audit on.
pub(super) fn run_here(jobs: Jobs, shared: Arc<Shared>) -> ThreadResult {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| BridgeError::Thread(e.to_string()))?;
    // One thread runs every task, so tasks need not be `Send` (the retry loop's
    // borrowing closures are not).
    tokio::task::LocalSet::new().block_on(&rt, run(jobs, shared))
}

async fn run(jobs: Jobs, shared: Arc<Shared>) -> ThreadResult {
    let Jobs { node, nats, hot, audit, health, budget, credits } = jobs;
    let client = match &nats {
        None => None,
        Some(n) => match connection::connect(n, &node, &shared.shutdown).await {
            Some(client) => Some((client, n)),
            // Shutdown came before NATS ever answered: what was submitted stays in the WAL.
            None => return Ok(audit.map(|_| BridgeReport::default())),
        },
    };
    // Its own task, so that changes keep landing while shipping waits on a store.
    let watch = client
        .as_ref()
        .map(|(c, n)| tokio::task::spawn_local(watch::run(c.clone(), (*n).clone(), hot, shared.clone())));
    let feed = client
        .as_ref()
        .zip(health)
        .map(|((c, _), feed)| tokio::task::spawn_local(health::run(c.clone(), node.clone(), feed)));
    let gossip = client
        .as_ref()
        .zip(budget)
        .map(|((c, _), feed)| tokio::task::spawn_local(budget::run(c.clone(), node.clone(), feed)));
    let claims = client
        .as_ref()
        .zip(credits)
        .map(|((c, n), job)| tokio::task::spawn_local(credits::run(c.clone(), (*n).clone(), job)));
    let report = match audit {
        Some((settings, key)) => shipper::run(settings, shared.clone(), key, client).await.map(Some),
        None => {
            shared.shutdown.stopped().await;
            Ok(None)
        }
    };
    for task in [watch, feed, gossip, claims].into_iter().flatten() {
        task.abort();
        // Dropped here, inside the runtime: a NATS subscription's drop spawns its
        // unsubscribe, which panics outside one (and two such panics abort the process).
        let _ = task.await;
    }
    report
}
