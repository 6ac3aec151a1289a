//! What a config reload may replace while the gateway runs: the providers, the
//! routing table and key verification. One immutable [`Tables`] is current at a time
//! (held by `config::hot::HotConfig`); a shard swaps to a new one between requests,
//! and a request keeps the one it started with to its end.

use std::sync::Arc;

use crate::config::{Config, ConfigError};
use crate::keys::Verifier;
use crate::providers::Provider;
use crate::router::RouteTable;

/// Providers, routes and key verification built from one config.
pub struct Tables {
    /// Providers in config order.
    pub providers: Vec<Provider>,
    /// Model names and their deployments.
    pub routes: RouteTable,
    /// Offline key verification; `None` with `--no-auth`.
    pub verifier: Option<Verifier>,
    /// The provider settings each provider was built from (to tell which pools a
    /// reload must rebuild).
    pub provider_configs: Vec<crate::config::ProviderConfig>,
    /// `routing.health`: circuits and latency estimates.
    pub health: crate::router::HealthSettings,
    /// The config file these tables came from, before any pushed routing change
    /// (`BH_CONFIG`): pushes are applied over it, so deleting one restores the file's
    /// values. `None` for [`Tables::empty`].
    pub base: Option<Arc<Config>>,
    /// Whether they were built for `--no-auth`.
    pub no_auth: bool,
    /// `budgets`: tenant limits and the reservation cap.
    pub budgets: crate::budget::BudgetSettings,
}

impl Tables {
    /// No providers, no routes, no keys (a gateway assembled without a config).
    pub fn empty() -> Tables {
        Tables {
            providers: Vec::new(),
            routes: RouteTable::default(),
            verifier: None,
            provider_configs: Vec::new(),
            health: Default::default(),
            base: None,
            no_auth: false,
            budgets: Default::default(),
        }
    }

    /// Builds the tables from a validated config.
    pub fn build(config: &Config, no_auth: bool) -> Result<Arc<Tables>, ConfigError> {
        Tables::build_over(Arc::new(config.clone()), config, no_auth)
    }

    /// Builds the tables from `config`, which is `base` with pushed changes applied.
    pub fn build_over(base: Arc<Config>, config: &Config, no_auth: bool) -> Result<Arc<Tables>, ConfigError> {
        let invalid = |path: &str, message: String| ConfigError::Invalid { path: path.into(), message };
        let providers = crate::config::providers::build(&config.providers)?;
        let verifier = match (&config.keys, no_auth) {
            (_, true) => None,
            (Some(keys), false) => Some(Verifier::try_from(keys).map_err(|e| invalid("keys", e.to_string()))?),
            (None, false) => {
                return Err(invalid(
                    "keys",
                    "no `keys` section: add an issuer (`gatekeeper keys gen-issuer --out issuer.key`, then list \
                     its public key under keys.issuers), or run with --no-auth for a local trial"
                        .into(),
                ))
            }
        };
        Ok(Arc::new(Tables {
            providers,
            routes: config.route_table(),
            verifier,
            provider_configs: config.providers.clone(),
            health: (&config.routing.health).into(),
            base: Some(base),
            no_auth,
            budgets: (&config.budgets).into(),
        }))
    }

    /// Whether provider `index` needs a new connection pool under `next` (its address,
    /// TLS or pool settings changed); other changes (key, headers) reuse the pool.
    pub fn pool_changed(&self, next: &Tables, index: usize) -> bool {
        let key = |c: &crate::config::ProviderConfig| {
            (
                c.base_url.clone(),
                c.ca_file.clone(),
                c.connect_timeout_ms,
                c.first_byte_timeout_ms,
                c.read_idle_timeout_ms,
                c.pool_idle_timeout_ms,
                c.connections_max,
                c.queue_max,
            )
        };
        match (self.provider_configs.get(index), next.provider_configs.get(index)) {
            (Some(a), Some(b)) => key(a) != key(b),
            _ => true,
        }
    }
}
