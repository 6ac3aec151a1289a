//! The routing modes a request, a key or the config can ask for.

use serde::{Deserialize, Serialize};

/// How the router picks among candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RouteMode {
    /// Cheapest model meeting the quality threshold.
    #[default]
    Cost,
    /// Lowest predicted latency.
    Latency,
    /// Best model with the needed features.
    Capability,
}

impl RouteMode {
    /// The name used in headers, claims and config.
    pub fn as_str(self) -> &'static str {
        match self {
            RouteMode::Cost => "cost",
            RouteMode::Latency => "latency",
            RouteMode::Capability => "capability",
        }
    }
}
