//! The routing table: every client-facing model name and its deployments, built
//! once from config (`config::models`) and shared read-only by every shard.

use std::collections::HashMap;
use std::ops::Range;

use super::caps::Caps;
use super::mode::RouteMode;
use super::price::Price;

/// Quality assumed for a model whose config gives none.
pub const QUALITY_DEFAULT: f32 = 0.5;
/// Completion tokens assumed for a model whose config gives no `output_tokens_typical`,
/// when the request sets no `max_tokens`.
pub const OUTPUT_TOKENS_TYPICAL_DEFAULT: u32 = 256;

/// One deployment of a model name on a provider.
#[derive(Debug, Clone, Default)]
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
    /// The client-facing model name (`X-Gatekeeper-Model`).
    pub name: String,
    /// Quality 0–1 (`models[].quality`, else [`QUALITY_DEFAULT`]).
    pub quality: f32,
    /// Declared capabilities; `None` when the config lists none (the filters then
    /// know nothing and let the deployment pass).
    pub capabilities: Option<Caps>,
    /// Context window in tokens; `None`: not declared (no limit checked).
    pub context_window: Option<u64>,
    /// Typical completion length in tokens, for the expected price when the request
    /// sets no `max_tokens`.
    pub output_tokens_typical: u32,
}

/// The `routing` section as the router uses it.
#[derive(Debug, Clone, PartialEq)]
pub struct RoutingSettings {
    /// Mode when neither the request nor the key names one.
    pub default_mode: RouteMode,
    /// Expected quality cost mode requires when the key sets none.
    pub quality_threshold: f32,
    /// The model name that lets the router choose among every model the key may use.
    pub auto_model: String,
}

impl Default for RoutingSettings {
    fn default() -> Self {
        RoutingSettings { default_mode: RouteMode::Cost, quality_threshold: 0.7, auto_model: "auto".into() }
    }
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
    /// Modes, threshold and the auto alias.
    pub routing: RoutingSettings,
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
