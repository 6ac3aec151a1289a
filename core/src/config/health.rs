//! `routing.health`: the circuit breakers and latency estimators of every deployment
//! (`router::health`), and how fast circuit changes travel between nodes.

use serde::{Deserialize, Serialize};

use super::error::{invalid, ConfigError};
use crate::router::health::HealthSettings;

/// `routing.health`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Consecutive provider faults that open a deployment's circuit. Default 5.
    pub failures_max: u32,
    /// Error rate (0–1) over `window_ms` that opens it. Default 0.5.
    pub error_rate_max: f64,
    /// The error-rate window, ms. Default 10 s.
    pub window_ms: u64,
    /// Fewest requests in the window before the error rate counts. Default 20.
    pub requests_min: u32,
    /// First cool-down of an opened circuit, ms; it doubles with each failed probe. Default 5 s.
    pub open_ms: u64,
    /// Longest cool-down, ms. Default 60 s.
    pub open_max_ms: u64,
    /// Probes let through at once while half-open. Default 1.
    pub half_open_probes: u32,
    /// Time constant of the peak-EWMA latency estimates, ms. Default 10 s.
    pub decay_ms: u64,
    /// Longest a circuit another node reported open is honoured, ms. Default 30 s.
    pub remote_open_max_ms: u64,
    /// How often the bridge looks for circuit changes to publish on `BH_HEALTH`, ms;
    /// open circuits are published again every ten periods. Default 100.
    pub feed_ms: u64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        let s = HealthSettings::default();
        HealthConfig {
            failures_max: s.failures_max,
            error_rate_max: s.error_rate_max,
            window_ms: s.window_ms,
            requests_min: s.requests_min,
            open_ms: s.open_ms,
            open_max_ms: s.open_max_ms,
            half_open_probes: s.half_open_probes,
            decay_ms: s.decay_ms,
            remote_open_max_ms: s.remote_open_max_ms,
            feed_ms: 100,
        }
    }
}

impl From<&HealthConfig> for HealthSettings {
    fn from(c: &HealthConfig) -> HealthSettings {
        HealthSettings {
            failures_max: c.failures_max,
            error_rate_max: c.error_rate_max,
            window_ms: c.window_ms,
            requests_min: c.requests_min,
            open_ms: c.open_ms,
            open_max_ms: c.open_max_ms,
            half_open_probes: c.half_open_probes,
            decay_ms: c.decay_ms,
            remote_open_max_ms: c.remote_open_max_ms,
        }
    }
}

/// Checks every bound, naming the key.
pub(super) fn validate(h: &HealthConfig) -> Result<(), ConfigError> {
    const DAY_MS: u64 = 86_400_000;
    let ranges: [(&str, u64, u64, u64); 9] = [
        ("routing.health.failures_max", u64::from(h.failures_max), 1, 1_000_000),
        ("routing.health.window_ms", h.window_ms, 10, DAY_MS),
        ("routing.health.requests_min", u64::from(h.requests_min), 1, 1_000_000),
        ("routing.health.open_ms", h.open_ms, 1, DAY_MS),
        ("routing.health.open_max_ms", h.open_max_ms, 1, DAY_MS),
        ("routing.health.half_open_probes", u64::from(h.half_open_probes), 1, 1_000),
        ("routing.health.decay_ms", h.decay_ms, 1, DAY_MS),
        ("routing.health.remote_open_max_ms", h.remote_open_max_ms, 0, DAY_MS),
        ("routing.health.feed_ms", h.feed_ms, 10, 60_000),
    ];
    for (path, value, min, max) in ranges {
        if !(min..=max).contains(&value) {
            return Err(invalid(path, format!("must be between {min} and {max}")));
        }
    }
    if !(h.error_rate_max > 0.0 && h.error_rate_max <= 1.0) {
        return Err(invalid("routing.health.error_rate_max", "must be above 0 and at most 1"));
    }
    if h.open_max_ms < h.open_ms {
        return Err(invalid("routing.health.open_max_ms", "must be at least routing.health.open_ms"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bounds_name_their_key() {
        assert!(validate(&HealthConfig::default()).is_ok());
        let bad = |h: HealthConfig| validate(&h).unwrap_err().to_string();
        assert!(bad(HealthConfig { failures_max: 0, ..Default::default() }).contains("routing.health.failures_max"));
        assert!(bad(HealthConfig { error_rate_max: 0.0, ..Default::default() }).contains("error_rate_max"));
        assert!(bad(HealthConfig { error_rate_max: f64::NAN, ..Default::default() }).contains("error_rate_max"));
        assert!(bad(HealthConfig { open_ms: 10, open_max_ms: 5, ..Default::default() }).contains("open_max_ms"));
        assert!(bad(HealthConfig { feed_ms: 1, ..Default::default() }).contains("routing.health.feed_ms"));
        assert!(bad(HealthConfig { half_open_probes: 0, ..Default::default() }).contains("half_open_probes"));
    }
}
