//! The `audit` section: the audit log's data dir, checkpoints, fsync policy, spool
//! bounds and batching, and the bridge's report periods.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::error::{invalid, ConfigError};

/// When audit bytes are forced to disk with `fsync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// After every record, on the shard: survives power loss, costs a disk flush per request.
    Always,
    /// Every `audit.fsync_interval_ms`, on the bridge thread: a kill loses nothing (page
    /// cache), a power cut at most that interval.
    #[default]
    Interval,
    /// Never: left to the kernel.
    Never,
}

/// Audit log settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Whether requests are audited at all. Default true; `false` runs no bridge and
    /// writes nothing (for benchmarks and throwaway trials).
    pub enabled: bool,
    /// Directory for the WAL (spool), node key, bridge state and, without NATS, the chain files.
    pub data_dir: PathBuf,
    /// Entries between signed checkpoints.
    pub checkpoint_every: u64,
    /// Longest time between signed checkpoints while entries arrive, ms.
    pub checkpoint_interval_ms: u64,
    /// Checkpoint interval when idle (a heartbeat showing the node is alive), ms. Default 60 s.
    pub heartbeat_interval_ms: u64,
    /// Whether prompt and completion text is recorded.
    pub include_content: bool,
    /// This node's name in chains and subjects (`A-Z a-z 0-9 _ -`). Default: the host name.
    pub node_name: Option<String>,
    /// Node signing key (PASERK `k4.secret.…`), created 0600 on first start. Default `<data_dir>/node.key`.
    pub node_key_file: Option<PathBuf>,
    /// Public keys (`k4.public.…`) `gatekeeper audit verify` trusts for checkpoints.
    pub node_public_keys: Vec<String>,
    /// When WAL and chain files are fsynced. Default `interval`.
    pub fsync: FsyncPolicy,
    /// Period of `fsync: interval`, ms. Default 200.
    pub fsync_interval_ms: u64,
    /// Un-shipped WAL bytes per shard before `submit` refuses records (and the request
    /// gets 503): bounds the spool while NATS is away. Default 1 GiB.
    pub spool_bytes_max: u64,
    /// Size at which a shard starts a new WAL file, bytes. Default 64 MiB.
    pub wal_segment_bytes: u64,
    /// Entries per stored batch (one JetStream message, or one chain-file line). Default 1024.
    pub batch_entries_max: usize,
    /// How long the bridge lets records gather after a batch that did not fill up,
    /// ms. Default 50. Records are durable in the WAL from the start; this only
    /// delays their shipping, and under load turns many small messages (each costing
    /// a round trip and nats-server work) into few large ones.
    pub batch_wait_ms: u64,
    /// Period of `BH_HEALTH` provider latency/error reports, ms. Default 5 s.
    pub health_interval_ms: u64,
    /// A provider whose p99 latency over a health period exceeds this raises an SLA alert, ms.
    pub sla_p99_ms: Option<u64>,
    /// Period of `BH_SESSIONS` flushes, ms. Default 10 s.
    pub sessions_flush_ms: u64,
    /// Window over which a session counts requests and tokens, s. Default 1 hour.
    pub session_window_s: u64,
    /// Records per second and shard for requests refused at the key check (401). More
    /// are counted (`gatekeeper_audit_unauthenticated_unrecorded_total`), not recorded, so
    /// an unauthenticated flood cannot fill the spool. They never reach a provider.
    /// Default 100.
    pub unauthenticated_records_per_s: u32,
    /// A file outside the data dir (ideally another volume or host) to which every
    /// signed checkpoint is appended as a JSON line. Cutting the log's tail together
    /// with the checkpoints covering it cannot be hidden from it:
    /// `gatekeeper audit verify --witness FILE` proves the log still holds everything
    /// the witness saw.
    pub witness_file: Option<PathBuf>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            enabled: true,
            data_dir: PathBuf::from("./data"),
            checkpoint_every: 10_000,
            checkpoint_interval_ms: 1000,
            heartbeat_interval_ms: 60_000,
            include_content: false,
            node_name: None,
            node_key_file: None,
            node_public_keys: Vec::new(),
            fsync: FsyncPolicy::Interval,
            fsync_interval_ms: 200,
            spool_bytes_max: 1 << 30,
            wal_segment_bytes: 64 << 20,
            batch_entries_max: 1024,
            batch_wait_ms: 50,
            health_interval_ms: 5_000,
            sla_p99_ms: None,
            sessions_flush_ms: 10_000,
            session_window_s: 3_600,
            unauthenticated_records_per_s: 100,
            witness_file: None,
        }
    }
}
/// Checks floors, ceilings, the node name and the trusted node keys.
pub(super) fn validate(a: &AuditConfig) -> Result<(), ConfigError> {
    let floors: [(&str, u64, u64); 9] = [
        ("audit.checkpoint_every", a.checkpoint_every, 1),
        ("audit.checkpoint_interval_ms", a.checkpoint_interval_ms, 1),
        ("audit.heartbeat_interval_ms", a.heartbeat_interval_ms, 1),
        ("audit.fsync_interval_ms", a.fsync_interval_ms, 1),
        ("audit.spool_bytes_max", a.spool_bytes_max, 1 << 20),
        ("audit.wal_segment_bytes", a.wal_segment_bytes, 1 << 16),
        ("audit.batch_entries_max", a.batch_entries_max as u64, 1),
        ("audit.health_interval_ms", a.health_interval_ms, 100),
        ("audit.sessions_flush_ms", a.sessions_flush_ms, 100),
    ];
    for (path, value, min) in floors {
        if value < min {
            return Err(invalid(path, format!("must be at least {min}")));
        }
    }
    if a.batch_entries_max > 4096 {
        return Err(invalid("audit.batch_entries_max", "must be at most 4096"));
    }
    if a.batch_wait_ms > 1000 {
        return Err(invalid("audit.batch_wait_ms", "must be at most 1000"));
    }
    if a.session_window_s == 0 {
        return Err(invalid("audit.session_window_s", "must be at least 1"));
    }
    if let Some(name) = &a.node_name {
        if !crate::audit::chain::is_identifier(name) {
            return Err(invalid("audit.node_name", "1-64 of A-Z a-z 0-9 _ - (it names NATS subjects and files)"));
        }
    }
    for (i, k) in a.node_public_keys.iter().enumerate() {
        if crate::keys::PublicKey::from_paserk(k).is_err() {
            return Err(invalid(format!("audit.node_public_keys[{i}]"), "expected a PASERK k4.public.… key"));
        }
    }
    Ok(())
}
