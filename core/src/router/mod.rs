//! Step 5, route: which deployments may serve a request, in the order to try them.
//!
//! Today a request names a model and the route is that model's deployments in
//! failover order ([`route`]); [`health`] keeps, per deployment, the circuits that
//! skip it (in every mode and in failover) and the latency estimates [`latency`]
//! orders by. Cost, latency and capability routing ([`RouteMode`]) plug in here: they
//! reorder or filter the same candidates.

pub mod health;
pub mod latency;
pub mod mode;
pub mod price;
pub mod score;
pub mod table;

pub use health::{HealthBoard, HealthSettings, ProviderAlarm, ProviderHealth, ShardHealth};
pub use mode::RouteMode;
pub use table::{Deployment, RouteTable};

/// Why no route was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// No deployment serves the model (or the key may not use it — the key says which).
    #[error("the model `{0}` does not exist or you do not have access to it")]
    ModelNotFound(String),
}

/// The deployments a request may use, in the order to try them.
#[derive(Debug, Clone)]
pub struct Route<'g> {
    /// Candidates in the order to try them (the first is the router's choice, the
    /// rest its failover order).
    pub deployments: Vec<&'g Deployment>,
}

/// The deployments of the requested model, in failover order.
pub fn route<'g>(table: &'g RouteTable, model: &str) -> Result<Route<'g>, RouteError> {
    match table.of_model(model) {
        Some((_, list)) if !list.is_empty() => Ok(Route { deployments: list.iter().collect() }),
        _ => Err(RouteError::ModelNotFound(model.chars().take(200).collect())),
    }
}
