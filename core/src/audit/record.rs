//! What the audit log records about one request (pipeline step 8).

use std::borrow::Cow;

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
    /// Routing mode (`cost`, `latency`, `capability`), once routed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_mode: Option<String>,
    /// Request complexity score 0–1, once routed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub complexity: Option<f64>,
    /// The request's task (`chat`, `code`, `math`, `reasoning`, `legal`, `writing`), once routed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// Candidates the router considered, in try order, each `model@provider:verdict`
    /// (`chosen`, `failover`, `filtered:<requirement>`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route_candidates: Vec<String>,
    /// Why the chosen candidate won (`cheapest_meeting_threshold`, `strong_at_task`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_reason: Option<String>,
    /// Whether the answer was streamed.
    pub stream: bool,
    /// HTTP status sent to the client.
    pub status: u16,
    /// Prompt tokens, from the provider's `usage`.
    pub tokens_in: u64,
    /// Completion tokens, from the provider's `usage`.
    pub tokens_out: u64,
    /// Cost in USD from the deployment's prices, as an exact decimal (`"0.00002235"`).
    pub cost_usd: String,
    /// Time spent waiting on providers, µs.
    pub upstream_us: u64,
    /// Time spent inside the gateway, µs.
    pub overhead_us: u64,
    /// Deployments tried before the answer (or all of them, on failure), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<String>,
    /// A credit-paid request's nullifier (hex): the only thing that identifies the
    /// payment, and it links nothing (no key id or tenant is recorded with it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credit_nullifier: Option<String>,
    /// Credits the spend paid (before its refund).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credit_amount: Option<u64>,
    /// Request and response bodies, only with `audit.include_content: true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<serde_json::Value>,
}

/// The fields of a stored [`AuditRecord`] the bridge derives events, health and
/// sessions from, borrowed from the record's JSON where no unescaping is needed.
/// Parsing one skips `content` without building it.
#[derive(Debug, Deserialize)]
pub struct RecordView<'a> {
    /// `X-Request-Id` as answered.
    #[serde(borrow)]
    pub request_id: Cow<'a, str>,
    /// When the request arrived, Unix milliseconds.
    pub ts_unix_ms: u64,
    /// The caller's key id (`jti`).
    #[serde(default, borrow)]
    pub key_id: Option<Cow<'a, str>>,
    /// Tenant from the key.
    #[serde(default, borrow)]
    pub tenant: Option<Cow<'a, str>>,
    /// Model the client asked for.
    #[serde(borrow)]
    pub model_requested: Cow<'a, str>,
    /// Provider that answered (or was last tried).
    #[serde(default, borrow)]
    pub provider: Option<Cow<'a, str>>,
    /// Upstream model id used.
    #[serde(default, borrow)]
    pub model_upstream: Option<Cow<'a, str>>,
    /// Routing mode.
    #[serde(default, borrow)]
    pub route_mode: Option<Cow<'a, str>>,
    /// Request complexity score.
    #[serde(default)]
    pub complexity: Option<f64>,
    /// The request's task.
    #[serde(default, borrow)]
    pub task: Option<Cow<'a, str>>,
    /// Candidates considered, `model@provider:verdict`.
    #[serde(default, borrow)]
    pub route_candidates: Vec<Cow<'a, str>>,
    /// Why the chosen candidate won.
    #[serde(default, borrow)]
    pub route_reason: Option<Cow<'a, str>>,
    /// HTTP status sent to the client.
    pub status: u16,
    /// Prompt tokens.
    pub tokens_in: u64,
    /// Completion tokens.
    pub tokens_out: u64,
    /// Time spent waiting on providers, µs.
    pub upstream_us: u64,
    /// Deployments tried, in order.
    #[serde(default, borrow)]
    pub attempts: Vec<Cow<'a, str>>,
}

impl<'a> RecordView<'a> {
    /// Parses a record's JSON (as [`AuditRecord`] serializes it).
    pub fn parse(json: &'a [u8]) -> Result<RecordView<'a>, serde_json::Error> {
        serde_json::from_slice(json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_reads_what_the_record_wrote() {
        let r = AuditRecord {
            request_id: "r\"1".into(),
            ts_unix_ms: 7,
            key_id: Some("k".into()),
            model_requested: "m".into(),
            provider: Some("p".into()),
            status: 502,
            tokens_in: 3,
            tokens_out: 4,
            upstream_us: 9,
            attempts: vec!["a: 502".into(), "b".into()],
            content: Some(serde_json::json!({"messages": [{"role": "user"}]})),
            ..AuditRecord::default()
        };
        let bytes = serde_json::to_vec(&r).unwrap();
        let v = RecordView::parse(&bytes).unwrap();
        assert_eq!((v.request_id.as_ref(), v.ts_unix_ms, v.status), ("r\"1", 7, 502));
        assert_eq!((v.key_id.as_deref(), v.tenant.as_deref(), v.provider.as_deref()), (Some("k"), None, Some("p")));
        assert_eq!((v.tokens_in, v.tokens_out, v.upstream_us), (3, 4, 9));
        assert_eq!(v.attempts, ["a: 502", "b"]);
    }
}
