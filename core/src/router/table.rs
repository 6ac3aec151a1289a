//! The routing table: every client-facing model name and its deployments, built
//! once from config (`config::models`) and shared read-only by every shard.

use std::collections::HashMap;
use std::ops::Range;

use super::price::Price;

/// One deployment of a model name on a provider.
#[derive(Debug, Clone)]
pub struct Deployment {
    /// Its place in [`RouteTable::deployments`]: labels per-deployment state (health).
    pub id: usize,
    /// Index of its client-facing model name in [`RouteTable::model_names`].
    pub model: usize,
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
    /// Every deployment, grouped by model (in `model_names` order), each model's in
    /// failover order; a deployment's index here is its `id`.
    pub deployments: Vec<Deployment>,
    /// Per model name: its index in `model_names` and its deployments' ids.
    pub by_model: HashMap<String, (usize, Range<usize>)>,
}

impl RouteTable {
    /// The deployment with id `id`.
    pub fn deployment(&self, id: usize) -> Option<&Deployment> {
        self.deployments.get(id)
    }

    /// The deployments of `model` in failover order, with the model's index.
    pub fn of_model(&self, model: &str) -> Option<(usize, &[Deployment])> {
        let (index, range) = self.by_model.get(model)?;
        Some((*index, self.deployments.get(range.clone())?))
    }

    /// The provider that serves `model` first, if any.
    pub fn first_provider(&self, model: &str) -> Option<usize> {
        self.of_model(model).and_then(|(_, d)| d.first()).map(|d| d.provider)
    }
}
