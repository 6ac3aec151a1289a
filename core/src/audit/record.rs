//! What the audit log records about one request (DESIGN §1 step 8).

use serde::{Deserialize, Serialize};

/// One request as the audit log sees it. No prompt or completion text unless
/// `audit.include_content` is on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// `X-Request-Id` as answered.
    pub request_id: String,
    /// When the request arrived, Unix milliseconds.
    pub ts_unix_ms: u64,
    /// Shard that served it.
    pub shard: u16,
    /// Issuer key id (`k4.pid.…`) of the caller's key; `None` with `--no-auth`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// The caller's key id (`jti`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// Tenant from the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Model the client asked for.
    pub model_requested: String,
    /// Provider that answered (or was last tried).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Upstream model id used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_upstream: Option<String>,
    /// Routing mode, once routing exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_mode: Option<String>,
    /// Task complexity score 0–1, once routing exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub complexity: Option<f64>,
    /// Whether the answer was streamed.
    pub stream: bool,
    /// HTTP status sent to the client.
    pub status: u16,
    /// Prompt tokens, from the provider's `usage`.
    pub tokens_in: u64,
    /// Completion tokens, from the provider's `usage`.
    pub tokens_out: u64,
    /// Cost in USD from the deployment's prices.
    pub cost_usd: f64,
    /// Time spent waiting on providers, µs.
    pub upstream_us: u64,
    /// Time spent inside the gateway, µs.
    pub overhead_us: u64,
    /// Deployments tried before the answer (or all of them, on failure), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<String>,
    /// Request and response bodies, only with `audit.include_content: true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<serde_json::Value>,
}
