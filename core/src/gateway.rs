//! The gateway's state and nothing else: process-wide tables built once from config
//! ([`Gateway`]), and each shard's own pools, caches and health ([`ShardGateway`]).
//! Which path goes where is `routes.rs`; what a chat request goes through is
//! `pipeline.rs`.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use gatekeeper_net::upstream::Pool;
use gatekeeper_net::{ShardContext, ShardStats};

use crate::audit::request::{Recorder, RefusalAllowance};
use crate::bridge::{Bridge, ShardAudit};
use crate::budget::BudgetBoard;
use crate::config::hot::HotConfig;
use crate::config::{Config, ConfigError};
use crate::keys::ShardVerifier;
use crate::metrics::{RequestIds, ShardMetrics};
use crate::providers::Upstreams;
use crate::router::{HealthBoard, ProviderAlarm, ProviderHealth, ShardHealth};
use crate::tables::Tables;

/// Process-wide state shared by every shard. What a reload may replace (providers,
/// routes, key verification) is in [`Tables`], reached through [`Gateway::hot`].
pub struct Gateway {
    /// Provider names in config order; label metrics (fixed for the process's life).
    pub provider_names: Vec<String>,
    /// Model names, sorted; label metrics (fixed for the process's life).
    pub model_names: Vec<String>,
    /// Whether keys are checked (false with `--no-auth`).
    pub auth: bool,
    /// Per-shard gateway metrics.
    pub metrics: Arc<[ShardMetrics]>,
    /// Per provider: its refusals of the gateway's own settings (for `/readyz`).
    pub alarms: Arc<[ProviderAlarm]>,
    /// Every deployment's health as each shard publishes it, and other nodes' open
    /// circuits (written by the bridge's health feed).
    pub health: Arc<HealthBoard>,
    /// Every shard's budget spend and reservations per subject and window, and other
    /// replicas' spend (`budget::BudgetBoard`).
    pub budgets: Arc<BudgetBoard>,
    /// Request id source.
    pub request_ids: RequestIds,
    /// Set when shutdown starts: `/readyz` turns 503.
    pub draining: AtomicBool,
    /// The bridge (config watch, audit shipping); `None` where neither runs, or where
    /// a gateway is built without serving (benches).
    pub bridge: Option<Arc<Bridge>>,
    /// What changes while running (revocations, tables, pushed rules); shards apply
    /// changes in [`ShardGateway::apply_config_changes`].
    pub hot: Arc<HotConfig>,
    /// `audit.unauthenticated_records_per_s`.
    pub unauthenticated_records_per_s: u32,
    /// `limits.inflight_per_shard_max`: past it, a shard sheds chat requests (503).
    pub inflight_per_shard_max: u64,
    /// `admin_listen` is set: `/metrics` and `/readyz` live there, not on the API listener.
    pub admin_listener: bool,
    /// Anonymous credits (`credits` section); `None`: off.
    pub credits: Option<Arc<crate::credit::Credits>>,
}

impl Gateway {
    /// Builds the tables from a validated config for `shards` shards.
    pub fn build(config: &Config, shards: usize, no_auth: bool) -> Result<Gateway, ConfigError> {
        let tables = Tables::build(config, no_auth)?;
        let credits = match &config.credits {
            Some(c) => Some(Arc::new(crate::credit::Credits::open(c, &config.audit.data_dir).map_err(|e| {
                crate::config::ConfigError::Invalid {
                    path: "credits".into(),
                    message: format!("cannot open the credit store under {}: {e}", config.audit.data_dir.display()),
                }
            })?)),
            None => None,
        };
        let provider_names: Vec<String> = tables.providers.iter().map(|p| p.name.clone()).collect();
        let model_names = tables.routes.model_names.clone();
        let metrics: Arc<[ShardMetrics]> =
            (0..shards).map(|_| ShardMetrics::new(model_names.len(), provider_names.len())).collect();
        let hot = Arc::new(HotConfig::from_config(config));
        hot.set_tables(tables);
        let alarms = provider_names.iter().map(|_| ProviderAlarm::default()).collect();
        let health = Arc::new(HealthBoard::new(shards, model_names.clone(), provider_names.clone()));
        let budgets = Arc::new(BudgetBoard::new(shards, config.budgets.subjects_max));
        Ok(Gateway {
            budgets,
            alarms,
            health,
            provider_names,
            model_names,
            auth: !no_auth,
            metrics,
            request_ids: RequestIds::new(),
            draining: AtomicBool::new(false),
            bridge: None,
            hot,
            unauthenticated_records_per_s: config.audit.unauthenticated_records_per_s,
            inflight_per_shard_max: u64::try_from(config.limits.inflight_per_shard_max).unwrap_or(u64::MAX),
            admin_listener: config.admin_listen.is_some(),
            credits,
        })
    }
}

/// A shard's tables: the shared [`Tables`] plus this shard's own pools, provider
/// health and key cache for them. Replaced whole when a reload changes the tables;
/// a request holds the one it started with.
pub struct ShardTables {
    /// The shared tables.
    pub tables: Arc<Tables>,
    /// One pool per provider (kept across reloads that leave a provider's address and
    /// pool settings alone).
    pub pools: Vec<Rc<Pool>>,
    /// One record per provider (kept with its pool): its operator-error log throttle.
    /// Deployment health is [`ShardGateway::health`], kept across every reload.
    pub health: Vec<Rc<ProviderHealth>>,
    /// This shard's key verifier (kept across reloads that leave key settings alone).
    pub keys: Option<Rc<ShardVerifier>>,
}

impl ShardTables {
    /// Pools, health and verifier for `tables`, reusing what `prev` has for whatever
    /// did not change.
    fn build(tables: Arc<Tables>, prev: Option<&ShardTables>) -> ShardTables {
        let mut pools = Vec::with_capacity(tables.providers.len());
        let mut health = Vec::with_capacity(tables.providers.len());
        for (i, p) in tables.providers.iter().enumerate() {
            let kept = prev
                .filter(|prev| !prev.tables.pool_changed(&tables, i))
                .and_then(|prev| Some((Rc::clone(prev.pools.get(i)?), Rc::clone(prev.health.get(i)?))));
            let (pool, h) = kept.unwrap_or_else(|| {
                (
                    Rc::new(Pool::new(p.origin.clone(), p.pool.clone(), p.tls.clone())),
                    Rc::new(ProviderHealth::default()),
                )
            });
            pools.push(pool);
            health.push(h);
        }
        let same_keys = |prev: &ShardTables| match (&prev.tables.verifier, &tables.verifier) {
            (Some(a), Some(b)) => a.same_settings(b),
            (None, None) => true,
            _ => false,
        };
        let keys = match prev.filter(|p| same_keys(p)) {
            Some(prev) => prev.keys.clone(),
            None => tables.verifier.as_ref().map(|v| Rc::new(ShardVerifier::new(v.clone()))),
        };
        ShardTables { tables, pools, health, keys }
    }
}

/// A shard's view of the gateway: its own pools, caches and health.
pub struct ShardGateway {
    /// Shared state.
    pub gw: Arc<Gateway>,
    /// This shard's index.
    pub index: usize,
    /// The tables this shard serves new requests with.
    current: RefCell<Rc<ShardTables>>,
    /// Connection statistics of every shard.
    pub net_stats: Arc<[ShardStats]>,
    inflight: Cell<u64>,
    /// This shard's audit spool; `None` when the audit log is off.
    pub audit: Option<ShardAudit>,
    /// [`HotConfig`] generation this shard last applied.
    pub config_seen: Cell<u64>,
    /// Records left this second for requests refused at the key check.
    pub refusals: RefusalAllowance,
    /// This shard's health of every deployment, keyed by (model, provider) name, so it
    /// carries across reloads (the names are fixed for the process's life).
    pub health: ShardHealth,
}

/// How often a shard copies its pool and key statistics into the shared metrics.
const STATS_EVERY: Duration = Duration::from_millis(500);

impl ShardGateway {
    /// Builds the shard's state; runs on the shard's own thread.
    pub fn new(gw: Arc<Gateway>, ctx: &ShardContext, audit: Option<ShardAudit>) -> Rc<ShardGateway> {
        // Set by `Gateway::build`; a gateway assembled otherwise serves with no providers.
        let tables = gw.hot.tables().unwrap_or_else(|| Arc::new(Tables::empty()));
        let current = RefCell::new(Rc::new(ShardTables::build(tables, None)));
        let gw_refusals_per_s = gw.unauthenticated_records_per_s;
        let health = ShardHealth::new(gw.health.clone(), ctx.index);
        let shard = Rc::new(ShardGateway {
            health,
            gw,
            index: ctx.index,
            current,
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
                // Soft-mode spends taken during a NATS outage are published without
                // waiting for the next spend, so an idle node's double spends are found too
                // (rate-limited inside; a no-op outside soft mode or with nothing pending).
                if let Some(credits) = &shard.gw.credits {
                    credits.reconcile_soon();
                }
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

    /// The tables new requests are served with; a request keeps this `Rc` to its end,
    /// so a reload never changes the ground under it.
    pub fn tables(&self) -> Rc<ShardTables> {
        Rc::clone(&self.current.borrow())
    }

    /// What the provider step calls providers with, over `t`.
    pub fn upstreams<'a>(&'a self, t: &'a ShardTables) -> Upstreams<'a> {
        Upstreams {
            providers: &t.tables.providers,
            pools: &t.pools,
            health: &t.health,
            circuits: &self.health,
            settings: &t.tables.health,
            metrics: self.metrics(),
            alarms: &self.gw.alarms,
        }
    }

    /// What the budget step admits with, over `t`'s settings.
    pub fn budget<'a>(&'a self, t: &'a ShardTables) -> crate::budget::BudgetContext<'a> {
        crate::budget::BudgetContext {
            board: &self.gw.budgets,
            shard: self.index,
            settings: &t.tables.budgets,
            metrics: self.metrics(),
        }
    }

    /// What the audit step writes records with, over `t`.
    pub fn recorder<'a>(&'a self, t: &'a ShardTables) -> Recorder<'a> {
        Recorder {
            audit: self.audit.as_ref(),
            shard: self.index,
            routes: &t.tables.routes,
            providers: &t.tables.providers,
        }
    }

    /// Applies hot changes (revocations, reloaded tables), if there were any since the
    /// last look: one atomic load when nothing changed.
    pub fn apply_config_changes(&self) {
        let Some(snapshot) = self.gw.hot.changes_since(&self.config_seen) else { return };
        let cur = self.tables();
        let next = match snapshot.tables {
            Some(tables) if !Arc::ptr_eq(&tables, &cur.tables) => {
                let next = Rc::new(ShardTables::build(tables, Some(&cur)));
                *self.current.borrow_mut() = Rc::clone(&next);
                next
            }
            _ => cur,
        };
        if let Some(keys) = &next.keys {
            keys.set_revoked(snapshot.revoked);
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
        let t = self.tables();
        if let Some(keys) = &t.keys {
            let (s, g) = (keys.stats(), &self.metrics().keys);
            g.cache_hits.set(s.cache_hits);
            g.cache_misses.set(s.cache_misses);
            g.batches.set(s.work.batches);
            g.batch_signatures.set(s.work.batch_signatures);
            g.single_signatures.set(s.work.single_signatures);
        }
        for (pool, gauges) in t.pools.iter().zip(self.metrics().pools.iter()) {
            let s = pool.stats();
            gauges.idle.set(s.idle as u64);
            gauges.busy.set(s.busy as u64);
            gauges.connects_total.set(s.connects_total);
            gauges.reuses_total.set(s.reuses_total);
            gauges.exhausted_total.set(s.exhausted_total);
        }
    }
}
