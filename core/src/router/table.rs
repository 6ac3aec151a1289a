//! The routing table: every client-facing model name and its deployments, built
//! once from config (`config::models`) and shared read-only by every shard.

use std::collections::HashMap;

use super::price::Price;

/// One deployment of a model name on a provider.
#[derive(Debug, Clone)]
pub struct Deployment {
    /// Index of the provider in config order.
    pub provider: usize,
    /// The provider's model id.
    pub upstream_model: String,
    /// The upstream model id as a JSON string literal, ready to splice into a body.
    pub upstream_model_json: String,
    /// USD per 1,000 prompt tokens.
    pub price_per_1k_input: f64,
    /// USD per 1,000 completion tokens.
    pub price_per_1k_output: f64,
    /// The same prices, exact, for costs.
    pub prices: (Price, Price),
}

/// Model names and their deployments.
#[derive(Debug, Default)]
pub struct RouteTable {
    /// Client-facing model names, sorted; their index labels metrics.
    pub model_names: Vec<String>,
    /// Per model name: its index in `model_names` and its deployments in failover order.
    pub deployments: HashMap<String, (usize, Vec<Deployment>)>,
}

impl RouteTable {
    /// The deployment `index` of model `model` (indexes as in a [`super::Route`]).
    pub fn deployment(&self, model: usize, index: usize) -> Option<&Deployment> {
        let name = self.model_names.get(model)?;
        self.deployments.get(name)?.1.get(index)
    }

    /// The provider that serves `model` first, if any.
    pub fn first_provider(&self, model: &str) -> Option<usize> {
        self.deployments.get(model).and_then(|(_, d)| d.first()).map(|d| d.provider)
    }
}
