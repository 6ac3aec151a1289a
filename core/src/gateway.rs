//! The gateway's state and nothing else: process-wide tables built once from config
//! ([`Gateway`]), and each shard's own pools, caches and health ([`ShardGateway`]).
//! Which path goes where is `routes.rs`; what a chat request goes through is
//! `pipeline.rs`.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use gatekeeper_net::upstream::Pool;
use gatekeeper_net::{ShardContext, ShardStats};

use crate::audit::request::{Recorder, RefusalAllowance};
use crate::bridge::{Bridge, ShardAudit};
use crate::config::hot::HotConfig;
use crate::config::{Config, ConfigError};
use crate::keys::{ShardVerifier, Verifier};
use crate::metrics::{RequestIds, ShardMetrics};
use crate::providers::{Provider, Upstreams};
use crate::router::{ProviderHealth, RouteTable};

/// Process-wide, read-only state shared by every shard.
pub struct Gateway {
    /// Providers in config order.
    pub providers: Vec<Provider>,
    /// Provider names in config order; label metrics.
    pub provider_names: Vec<String>,
    /// Model names and their deployments.
    pub routes: RouteTable,
    /// Offline key verification; `None` with `--no-auth`.
    pub verifier: Option<Arc<Verifier>>,
    /// Per-shard gateway metrics.
    pub metrics: Arc<[ShardMetrics]>,
    /// Request id source.
    pub request_ids: RequestIds,
    /// Set when shutdown starts: `/readyz` turns 503.
    pub draining: AtomicBool,
    /// The bridge (config watch, audit shipping); `None` where neither runs, or where
    /// a gateway is built without serving (benches).
    pub bridge: Option<Arc<Bridge>>,
    /// Revocations and other settings that change while running; shards apply changes
    /// in [`ShardGateway::apply_config_changes`].
    pub hot: Arc<HotConfig>,
    /// `audit.unauthenticated_records_per_s`.
    pub unauthenticated_records_per_s: u32,
    /// `limits.inflight_per_shard_max`: past it, a shard sheds chat requests (503).
    pub inflight_per_shard_max: u64,
    /// `admin_listen` is set: `/metrics` and `/readyz` live there, not on the API listener.
    pub admin_listener: bool,
}

impl Gateway {
    /// Builds the tables from a validated config for `shards` shards.
    pub fn build(config: &Config, shards: usize, no_auth: bool) -> Result<Gateway, ConfigError> {
        let invalid = |path: &str, message: String| ConfigError::Invalid { path: path.into(), message };
        let providers = crate::config::providers::build(&config.providers)?;
        let provider_names: Vec<String> = providers.iter().map(|p| p.name.clone()).collect();
        let routes = config.route_table();
        let verifier = match (&config.keys, no_auth) {
            (_, true) => None,
            (Some(keys), false) => {
                Some(Arc::new(Verifier::try_from(keys).map_err(|e| invalid("keys", e.to_string()))?))
            }
            (None, false) => {
                return Err(invalid(
                    "keys",
                    "no `keys` section: add an issuer (`gatekeeper keys gen-issuer --out issuer.key`, then list \
                     its public key under keys.issuers), or run with --no-auth for a local trial"
                        .into(),
                ))
            }
        };
        let metrics: Arc<[ShardMetrics]> =
            (0..shards).map(|_| ShardMetrics::new(routes.model_names.len(), providers.len())).collect();
        Ok(Gateway {
            providers,
            provider_names,
            routes,
            verifier,
            metrics,
            request_ids: RequestIds::new(),
            draining: AtomicBool::new(false),
            bridge: None,
            hot: Arc::new(HotConfig::from_config(config)),
            unauthenticated_records_per_s: config.audit.unauthenticated_records_per_s,
            inflight_per_shard_max: u64::try_from(config.limits.inflight_per_shard_max).unwrap_or(u64::MAX),
            admin_listener: config.admin_listen.is_some(),
        })
    }
}

/// A shard's view of the gateway: its own pools, caches and health.
pub struct ShardGateway {
    /// Shared tables.
    pub gw: Arc<Gateway>,
    /// This shard's index.
    pub index: usize,
    /// One pool per provider.
    pub pools: Vec<Pool>,
    /// One health record per provider.
    pub health: Vec<ProviderHealth>,
    /// This shard's key verifier.
    pub keys: Option<ShardVerifier>,
    /// Connection statistics of every shard.
    pub net_stats: Arc<[ShardStats]>,
    inflight: Cell<u64>,
    /// This shard's audit spool; `None` when the audit log is off.
    pub audit: Option<ShardAudit>,
    /// [`HotConfig`] generation this shard last applied.
    pub config_seen: Cell<u64>,
    /// Records left this second for requests refused at the key check.
    pub refusals: RefusalAllowance,
}

/// How often a shard copies its pool and key statistics into the shared metrics.
const STATS_EVERY: Duration = Duration::from_millis(500);

impl ShardGateway {
    /// Builds the shard's state; runs on the shard's own thread.
    pub fn new(gw: Arc<Gateway>, ctx: &ShardContext, audit: Option<ShardAudit>) -> Rc<ShardGateway> {
        let pools = gw.providers.iter().map(|p| Pool::new(p.origin.clone(), p.pool.clone(), p.tls.clone())).collect();
        let health = gw.providers.iter().map(|_| ProviderHealth::default()).collect();
        let keys = gw.verifier.as_ref().map(|v| ShardVerifier::new(Verifier::clone(v)));
        let gw_refusals_per_s = gw.unauthenticated_records_per_s;
        let shard = Rc::new(ShardGateway {
            gw,
            index: ctx.index,
            pools,
            health,
            keys,
            net_stats: ctx.stats.clone(),
            inflight: Cell::new(0),
            audit,
            config_seen: Cell::new(0),
            refusals: RefusalAllowance::new(gw_refusals_per_s),
        });
        let weak = Rc::downgrade(&shard);
        monoio::spawn(async move {
            while let Some(shard) = weak.upgrade() {
                shard.publish_stats();
                drop(shard);
                monoio::time::sleep(STATS_EVERY).await;
            }
        });
        shard
    }

    /// This shard's metrics.
    pub fn metrics(&self) -> &ShardMetrics {
        &self.gw.metrics[self.index]
    }

    /// What the provider step calls providers with.
    pub fn upstreams(&self) -> Upstreams<'_> {
        Upstreams { providers: &self.gw.providers, pools: &self.pools, health: &self.health, metrics: self.metrics() }
    }

    /// What the audit step writes records with.
    pub fn recorder(&self) -> Recorder<'_> {
        Recorder {
            audit: self.audit.as_ref(),
            shard: self.index,
            routes: &self.gw.routes,
            providers: &self.gw.providers,
        }
    }

    /// Applies a hot revocation change, if there was one since the last look (one
    /// atomic load when nothing changed).
    pub fn apply_config_changes(&self) {
        if let Some(keys) = &self.keys {
            if let Some(list) = self.gw.hot.revocations_if_changed(&self.config_seen) {
                keys.set_revoked(list);
            }
        }
    }

    /// Chat requests this shard is serving now.
    pub fn inflight(&self) -> u64 {
        self.inflight.get()
    }

    /// Moves the in-flight request count by `delta`.
    pub fn inflight_add(&self, delta: i64) {
        let n = self.inflight.get().saturating_add_signed(delta);
        self.inflight.set(n);
        self.metrics().inflight.set(n);
    }

    fn publish_stats(&self) {
        if let Some(keys) = &self.keys {
            let (s, g) = (keys.stats(), &self.metrics().keys);
            g.cache_hits.set(s.cache_hits);
            g.cache_misses.set(s.cache_misses);
            g.batches.set(s.work.batches);
            g.batch_signatures.set(s.work.batch_signatures);
            g.single_signatures.set(s.work.single_signatures);
        }
        for (pool, gauges) in self.pools.iter().zip(self.metrics().pools.iter()) {
            let s = pool.stats();
            gauges.idle.set(s.idle as u64);
            gauges.busy.set(s.busy as u64);
            gauges.connects_total.set(s.connects_total);
            gauges.reuses_total.set(s.reuses_total);
            gauges.exhausted_total.set(s.exhausted_total);
        }
    }
}
