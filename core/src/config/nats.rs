//! The `nats` section: the JetStream connection, stream retention and encoding.
//! Absent: the embedded default (local files, single node).

use serde::{Deserialize, Serialize};

use super::error::{invalid, ConfigError};

/// NATS JetStream bridge.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// Server URL; several, comma-separated, for a cluster.
    pub url: String,
    /// Stream replicas (1, 3 or 5 in a cluster). Default 1.
    #[serde(default = "default_replicas")]
    pub replicas: usize,
    /// Time to connect, and between reconnect attempts, ms. Default 2 s.
    #[serde(default = "default_nats_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Time to wait for a JetStream publish acknowledgement before retrying, ms. Default 5 s.
    #[serde(default = "default_nats_ack_timeout_ms")]
    pub ack_timeout_ms: u64,
    /// JetStream duplicate window (`Nats-Msg-Id` de-duplication) of every stream, ms. Default 2 min.
    #[serde(default = "default_nats_duplicate_window_ms")]
    pub duplicate_window_ms: u64,
    /// Oldest `BH_AUDIT` message kept, s; 0 keeps everything (the default).
    #[serde(default)]
    pub audit_max_age_s: u64,
    /// Oldest `BH_EVENTS` message kept, s. Default 7 days.
    #[serde(default = "default_events_max_age_s")]
    pub events_max_age_s: u64,
    /// Oldest `BH_HEALTH` message kept, s. Default 1 day.
    #[serde(default = "default_health_max_age_s")]
    pub health_max_age_s: u64,
    /// Oldest `BH_ALERTS` message kept, s. Default 30 days.
    #[serde(default = "default_alerts_max_age_s")]
    pub alerts_max_age_s: u64,
    /// Oldest `BH_SESSIONS` message kept, s (the newest per key is kept regardless of
    /// count). Default 1 day.
    #[serde(default = "default_sessions_max_age_s")]
    pub sessions_max_age_s: u64,
    /// Largest size of each stream other than `BH_AUDIT`, bytes; the oldest messages go
    /// first. Default 1 GiB.
    #[serde(default = "default_stream_bytes_max")]
    pub stream_bytes_max: i64,
    /// Name of the audit stream. Default `BH_AUDIT` (tests use others).
    #[serde(default = "default_audit_stream")]
    pub audit_stream: String,
    /// How `BH_AUDIT` batch messages are encoded. Default `lz4`.
    #[serde(default)]
    pub compression: Compression,
}

/// Encoding of stored `BH_AUDIT` batch messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// An LZ4 frame (what `lz4 -d` reads), marked with the header `Content-Encoding: lz4`.
    /// Batches shrink ~4×, and nats-server's work (which grows with bytes) with them;
    /// the chain's hashes cover the entries' JSON, so verification is unchanged.
    #[default]
    Lz4,
    /// Plain JSON.
    None,
}

fn default_replicas() -> usize {
    1
}
fn default_nats_connect_timeout_ms() -> u64 {
    2_000
}
fn default_nats_ack_timeout_ms() -> u64 {
    5_000
}
fn default_nats_duplicate_window_ms() -> u64 {
    120_000
}
fn default_events_max_age_s() -> u64 {
    7 * 86_400
}
fn default_health_max_age_s() -> u64 {
    86_400
}
fn default_alerts_max_age_s() -> u64 {
    30 * 86_400
}
fn default_sessions_max_age_s() -> u64 {
    86_400
}
fn default_stream_bytes_max() -> i64 {
    1 << 30
}
fn default_audit_stream() -> String {
    "BH_AUDIT".to_string()
}
/// Checks URLs, replicas, timeouts, sizes and the audit stream's name.
pub(super) fn validate(n: &NatsConfig) -> Result<(), ConfigError> {
    if n.url.split(',').any(|u| u.trim().is_empty()) {
        return Err(invalid("nats.url", "must not be empty"));
    }
    if !matches!(n.replicas, 1..=5) {
        return Err(invalid("nats.replicas", "must be between 1 and 5"));
    }
    for (path, value) in [
        ("nats.connect_timeout_ms", n.connect_timeout_ms),
        ("nats.ack_timeout_ms", n.ack_timeout_ms),
        ("nats.duplicate_window_ms", n.duplicate_window_ms),
    ] {
        if value == 0 {
            return Err(invalid(path, "must be at least 1"));
        }
    }
    if n.stream_bytes_max < 1 << 20 {
        return Err(invalid("nats.stream_bytes_max", "must be at least 1 MiB"));
    }
    if !n.audit_stream.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') || n.audit_stream.is_empty()
    {
        return Err(invalid("nats.audit_stream", "must be a stream name (A-Z a-z 0-9 _ -)"));
    }
    Ok(())
}
