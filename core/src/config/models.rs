//! The `models` and `failover_chain` sections: which provider serves which
//! client-facing model name, and in which order a model's deployments are tried.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::error::{invalid, ConfigError};
use super::routing::RoutingConfig;
use crate::router::caps::{Capability, Caps};
use crate::router::price::{Price, SCALE_MAX};
use crate::router::table::{RoutingSettings, OUTPUT_TOKENS_TYPICAL_DEFAULT, QUALITY_DEFAULT};
use crate::router::{Deployment, RouteTable};

/// Largest `output_tokens_typical` accepted.
pub const OUTPUT_TOKENS_TYPICAL_MAX: u32 = 1_000_000;

/// One deployment of a client-facing model name on a provider.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// What clients ask for.
    pub name: String,
    /// Which provider serves it.
    pub provider: String,
    /// The provider's own model id, written into the forwarded body.
    pub upstream_model: String,
    /// USD per 1,000 prompt tokens.
    #[serde(default)]
    pub price_per_1k_input: f64,
    /// USD per 1,000 completion tokens.
    #[serde(default)]
    pub price_per_1k_output: f64,
    /// Context window in tokens (absent: not checked).
    #[serde(default)]
    pub context_window: Option<u64>,
    /// Features and strengths: `tools`, `json_mode`, `vision`, `code`, `math`,
    /// `reasoning`, `legal`, `writing` (absent: unknown, the filters let it pass).
    #[serde(default)]
    pub capabilities: Option<Vec<String>>,
    /// Quality 0–1 used by cost and capability routing (absent: 0.5).
    #[serde(default)]
    pub quality: Option<f64>,
    /// Typical completion length in tokens, for the expected price of a request that
    /// sets no `max_tokens` (absent: 256).
    #[serde(default)]
    pub output_tokens_typical: Option<u32>,
}

/// One step of the failover chain.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FailoverEntry {
    /// Provider name.
    pub provider: String,
    /// Lower is tried first.
    pub priority: u32,
}
/// Checks the models and the failover chain against the provider names.
pub(super) fn validate(
    models: &[ModelConfig],
    chain: &[FailoverEntry],
    providers: &HashSet<&str>,
) -> Result<(), ConfigError> {
    let mut seen = HashSet::new();
    for (i, m) in models.iter().enumerate() {
        if m.name.is_empty() {
            return Err(invalid(format!("models[{i}].name"), "must not be empty"));
        }
        if !providers.contains(m.provider.as_str()) {
            return Err(invalid(format!("models[{i}].provider"), format!("unknown provider `{}`", m.provider)));
        }
        if !seen.insert((m.name.as_str(), m.provider.as_str())) {
            return Err(invalid(
                format!("models[{i}]"),
                format!("model `{}` appears twice for provider `{}`", m.name, m.provider),
            ));
        }
        for (field, price) in
            [("price_per_1k_input", m.price_per_1k_input), ("price_per_1k_output", m.price_per_1k_output)]
        {
            if Price::from_f64(price).is_none() {
                return Err(invalid(
                    format!("models[{i}].{field}"),
                    format!("must be a number from 0 with at most {SCALE_MAX} decimal places"),
                ));
            }
        }
        if let Some(q) = m.quality {
            if !(0.0..=1.0).contains(&q) {
                return Err(invalid(format!("models[{i}].quality"), "must be between 0 and 1"));
            }
        }
        for (j, c) in m.capabilities.iter().flatten().enumerate() {
            if Capability::from_name(c).is_none() {
                let known: Vec<&str> = Capability::ALL.iter().map(|c| c.as_str()).collect();
                return Err(invalid(
                    format!("models[{i}].capabilities[{j}]"),
                    format!("unknown capability `{c}` (known: {})", known.join(", ")),
                ));
            }
        }
        if m.context_window == Some(0) {
            return Err(invalid(format!("models[{i}].context_window"), "must be at least 1"));
        }
        if let Some(n) = m.output_tokens_typical {
            if n == 0 || n > OUTPUT_TOKENS_TYPICAL_MAX {
                return Err(invalid(
                    format!("models[{i}].output_tokens_typical"),
                    format!("must be 1 to {OUTPUT_TOKENS_TYPICAL_MAX}"),
                ));
            }
        }
    }
    let mut chained = HashSet::new();
    for (i, f) in chain.iter().enumerate() {
        if !providers.contains(f.provider.as_str()) {
            return Err(invalid(format!("failover_chain[{i}].provider"), format!("unknown provider `{}`", f.provider)));
        }
        if !chained.insert(f.provider.as_str()) {
            return Err(invalid(format!("failover_chain[{i}].provider"), "listed twice"));
        }
    }
    Ok(())
}

/// The deployments of `model` in failover order: providers in `chain` by priority
/// first, then any others in the order `models` names them.
pub fn deployments_of<'a>(models: &'a [ModelConfig], chain: &[FailoverEntry], model: &str) -> Vec<&'a ModelConfig> {
    let mut out: Vec<&ModelConfig> = models.iter().filter(|m| m.name == model).collect();
    let rank = |provider: &str| chain.iter().find(|f| f.provider == provider).map_or(u32::MAX, |f| f.priority);
    // Stable sort keeps file order among providers of equal rank.
    out.sort_by_key(|m| rank(&m.provider));
    out
}

/// The routing table: every model name with its deployments in failover order;
/// `providers` are the provider names in config order. Deployments whose provider is
/// not configured are left out (validation refuses them, so none are).
pub fn route_table(
    models: &[ModelConfig],
    chain: &[FailoverEntry],
    providers: &[&str],
    routing: &RoutingConfig,
) -> RouteTable {
    let mut model_names: Vec<String> = models.iter().map(|m| m.name.clone()).collect();
    model_names.sort();
    model_names.dedup();
    let mut deployments = Vec::with_capacity(models.len());
    let mut by_model = std::collections::HashMap::with_capacity(model_names.len());
    for (index, name) in model_names.iter().enumerate() {
        let start = deployments.len();
        for m in deployments_of(models, chain, name) {
            let Some(provider) = providers.iter().position(|p| *p == m.provider) else { continue };
            let (Ok(json), Some(input), Some(output)) = (
                serde_json::to_string(&m.upstream_model),
                Price::from_f64(m.price_per_1k_input),
                Price::from_f64(m.price_per_1k_output),
            ) else {
                continue;
            };
            deployments.push(Deployment {
                id: deployments.len(),
                model: index,
                provider,
                upstream_model: m.upstream_model.clone(),
                upstream_model_json: json,
                price_per_1k_input: m.price_per_1k_input,
                price_per_1k_output: m.price_per_1k_output,
                prices: (input, output),
                name: name.clone(),
                quality: m.quality.map_or(QUALITY_DEFAULT, |q| q as f32),
                capabilities: m.capabilities.as_ref().map(|list| {
                    let known: Vec<Capability> = list.iter().filter_map(|c| Capability::from_name(c)).collect();
                    Caps::of(&known)
                }),
                context_window: m.context_window,
                output_tokens_typical: m.output_tokens_typical.unwrap_or(OUTPUT_TOKENS_TYPICAL_DEFAULT),
            });
        }
        by_model.insert(name.clone(), (index, start..deployments.len()));
    }
    let routing = RoutingSettings {
        default_mode: routing.default_mode,
        quality_threshold: routing.quality_threshold as f32,
        auto_model: routing.auto_model.clone(),
    };
    RouteTable { model_names, deployments, by_model, routing }
}
