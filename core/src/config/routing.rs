//! The `routing` section: the mode used when neither the request nor the key names
//! one, and the quality a cost-routed answer must reach.

use serde::{Deserialize, Serialize};

use super::error::{invalid, ConfigError};
use crate::router::mode::RouteMode;

/// Routing defaults.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    /// `cost`, `latency` or `capability`.
    pub default_mode: RouteMode,
    /// Minimum expected quality (0–1) cost routing accepts (a key's `quality` claim
    /// overrides it).
    pub quality_threshold: f64,
    /// Circuit breakers and latency estimators (`config/health.rs`).
    pub health: super::health::HealthConfig,
    /// The model name that lets the router choose among every model the key may use.
    pub auto_model: String,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            default_mode: RouteMode::Cost,
            quality_threshold: 0.7,
            health: Default::default(),
            auto_model: "auto".into(),
        }
    }
}

/// Checks the threshold (the mode is checked by its type).
pub(super) fn validate(r: &RoutingConfig) -> Result<(), ConfigError> {
    if !(0.0..=1.0).contains(&r.quality_threshold) {
        return Err(invalid("routing.quality_threshold", "must be between 0 and 1"));
    }
    if r.auto_model.is_empty() || r.auto_model.len() > 256 {
        return Err(invalid("routing.auto_model", "must be 1 to 256 bytes"));
    }
    Ok(())
}
