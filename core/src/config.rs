//! `gatekeeper.yaml`: parsing, `${ENV}` expansion and validation.
//!
//! The field names are the contract of DESIGN §4: tests outside the project write
//! configs with them. Unknown keys are rejected, and every error names the path of
//! the offending value (`providers[1].base_url: not a URL`).

pub mod hot;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// `${NAME}` named a variable that is not set.
    #[error("line {line}: environment variable {name} is not set")]
    Env {
        /// 1-based line of the reference.
        line: usize,
        /// The variable.
        name: String,
    },
    /// The YAML did not match the schema (unknown key, wrong type, missing field).
    #[error("{path}: {message}")]
    Schema {
        /// Path of the offending value, e.g. `providers[1].kind`.
        path: String,
        /// What is wrong with it.
        message: String,
    },
    /// The values parse but do not make sense together.
    #[error("{path}: {message}")]
    Invalid {
        /// Path of the offending value.
        path: String,
        /// What is wrong with it.
        message: String,
    },
}

fn invalid(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { path: path.into(), message: message.into() }
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address every shard listens on (`SO_REUSEPORT`). Default `0.0.0.0:8080`.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Number of shards: `auto` (one per available core) or a number.
    #[serde(default)]
    pub shards: Shards,
    /// I/O driver: `auto`, `uring` or `epoll`.
    #[serde(default)]
    pub driver: DriverChoice,
    /// TLS termination on the listener; absent means plain HTTP.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Limits on what clients may send, and how long they may take.
    #[serde(default)]
    pub limits: Limits,
    /// Upstream providers.
    #[serde(default)]
    pub providers: Vec<ProviderConfig>,
    /// Model deployments: a client-facing name served by one provider.
    #[serde(default)]
    pub models: Vec<ModelConfig>,
    /// Order in which a model's deployments are tried.
    #[serde(default)]
    pub failover_chain: Vec<FailoverEntry>,
    /// Routing defaults.
    #[serde(default)]
    pub routing: RoutingConfig,
    /// Offline key verification; absent means the gateway refuses to start unless `--no-auth`.
    #[serde(default)]
    pub keys: Option<KeysConfig>,
    /// NATS JetStream bridge; absent means the embedded default (local files).
    #[serde(default)]
    pub nats: Option<NatsConfig>,
    /// Audit log settings.
    #[serde(default)]
    pub audit: AuditConfig,
    /// How long in-flight requests may run after SIGTERM before the process exits.
    #[serde(default = "default_drain_timeout_ms")]
    pub drain_timeout_ms: u64,
}

fn default_listen() -> String {
    "0.0.0.0:8080".to_string()
}

fn default_drain_timeout_ms() -> u64 {
    10_000
}

/// `shards: auto | N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Shards {
    /// One shard per core this process may run on.
    #[default]
    Auto,
    /// Exactly this many shards.
    Count(usize),
}

impl Shards {
    /// The number of shards to start on this host.
    pub fn resolve(self) -> usize {
        match self {
            Shards::Count(n) => n,
            Shards::Auto => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        }
    }
}

impl<'de> Deserialize<'de> for Shards {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(usize),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Shards::Count(n)),
            Raw::S(s) if s == "auto" => Ok(Shards::Auto),
            Raw::S(s) => s
                .parse()
                .map(Shards::Count)
                .map_err(|_| serde::de::Error::custom(format!("expected `auto` or a number, got `{s}`"))),
        }
    }
}

impl Serialize for Shards {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Shards::Auto => s.serialize_str("auto"),
            Shards::Count(n) => s.serialize_u64(*n as u64),
        }
    }
}

/// Which monoio driver the shards run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DriverChoice {
    /// io_uring where the kernel offers it, epoll otherwise.
    #[default]
    Auto,
    /// io_uring only; start fails where the kernel lacks it.
    Uring,
    /// epoll only.
    Epoll,
}

/// TLS termination on the listener.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// Every limit on a client connection. Exceeding one is answered, never crashes a shard.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request head (request line + headers), bytes. Default 16 KiB. Exceeded: 431 and close.
    pub header_bytes_max: usize,
    /// Most header fields in one request. Default 100. Exceeded: 431 and close.
    pub header_count_max: usize,
    /// Largest request body after de-chunking, bytes. Default 4 MiB. Exceeded: 413 and close.
    pub body_bytes_max: usize,
    /// Time from a connection's first byte of a request to the end of its head, ms.
    /// Default 10 s. Exceeded (slowloris): 408 and close.
    pub header_timeout_ms: u64,
    /// Time to receive the whole body once the head is in, ms. Default 30 s. Exceeded: 408 and close.
    pub body_timeout_ms: u64,
    /// Time a keep-alive connection may sit idle between requests, ms. Default 60 s. Exceeded: closed silently.
    pub idle_timeout_ms: u64,
    /// Open client connections per shard. Default 10,000. Exceeded: 503 and close.
    pub connections_per_shard_max: usize,
    /// Requests read ahead of the one being answered on one connection (pipelining). Default 16.
    /// Exceeded: the shard stops reading that connection until answers drain.
    pub pipeline_depth_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_bytes_max: 16 * 1024,
            header_count_max: 100,
            body_bytes_max: 4 * 1024 * 1024,
            header_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
            idle_timeout_ms: 60_000,
            connections_per_shard_max: 10_000,
            pipeline_depth_max: 16,
        }
    }
}

/// Wire format spoken to a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// api.openai.com.
    Openai,
    /// Anthropic Messages API.
    Anthropic,
    /// Any server speaking OpenAI's chat-completions API (Groq, DeepSeek, vLLM, …).
    OpenaiCompatible,
}

/// One upstream provider.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Unique name, used by `models[].provider` and `failover_chain`.
    pub name: String,
    /// Wire format.
    pub kind: ProviderKind,
    /// Base URL, e.g. `https://api.openai.com/v1`; `/chat/completions` is appended.
    pub base_url: String,
    /// Sent as `Authorization: Bearer …`; the client's own credential is never forwarded.
    #[serde(default)]
    pub api_key: Option<String>,
    /// TCP (and TLS) connect timeout, ms. Default 2 s.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Time from sending the request to the first byte of the response head, ms. Default 30 s.
    #[serde(default = "default_first_byte_timeout_ms")]
    pub first_byte_timeout_ms: u64,
    /// Longest gap between two reads of a response body (streams included), ms. Default 60 s.
    #[serde(default = "default_read_idle_timeout_ms")]
    pub read_idle_timeout_ms: u64,
    /// How long an idle pooled connection is kept, ms. Default 90 s.
    #[serde(default = "default_pool_idle_timeout_ms")]
    pub pool_idle_timeout_ms: u64,
    /// Connections per shard to this provider, busy and idle together. Default 256.
    #[serde(default = "default_connections_max")]
    pub connections_max: usize,
    /// Requests per shard that may wait for a connection when all are busy. Default 4096.
    /// Exceeded: that attempt fails at once (and fails over).
    #[serde(default = "default_queue_max")]
    pub queue_max: usize,
    /// Extra PEM CA certificates trusted for this provider, beside the webpki roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

fn default_connect_timeout_ms() -> u64 {
    2_000
}
fn default_first_byte_timeout_ms() -> u64 {
    30_000
}
fn default_read_idle_timeout_ms() -> u64 {
    60_000
}
fn default_pool_idle_timeout_ms() -> u64 {
    90_000
}
fn default_connections_max() -> usize {
    256
}
fn default_queue_max() -> usize {
    4096
}

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
    /// Context window in tokens.
    #[serde(default)]
    pub context_window: Option<u64>,
    /// Features: `tools`, `json_mode`, `vision`, …
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Quality score 0–1 used by cost routing.
    #[serde(default)]
    pub quality: Option<f64>,
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

/// Routing defaults.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    /// `cost`, `latency` or `capability`.
    pub default_mode: String,
    /// Minimum quality (0–1) cost routing accepts.
    pub quality_threshold: f64,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig { default_mode: "cost".to_string(), quality_threshold: 0.7 }
    }
}

/// Offline key verification.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct KeysConfig {
    /// Trusted issuers; several at once allow rotation.
    #[serde(default)]
    pub issuers: Vec<IssuerConfig>,
    /// Revoked key ids (`jti`).
    #[serde(default)]
    pub revoked: Vec<String>,
    /// Clock skew tolerated on `exp` / `nbf`, seconds.
    #[serde(default = "default_leeway_s")]
    pub leeway_s: u64,
    /// Verified tokens cached per shard.
    #[serde(default = "default_cache_entries_max")]
    pub cache_entries_max: usize,
}

fn default_leeway_s() -> u64 {
    30
}
fn default_cache_entries_max() -> usize {
    65_536
}

/// One trusted issuer.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// PASERK `k4.public.…`.
    pub public_key: String,
}

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
        }
    }
}

impl Config {
    /// Reads, expands and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        let mut config = Config::parse(&text)?;
        config.resolve_paths(path.parent().unwrap_or(Path::new(".")));
        Ok(config)
    }

    /// Parses and validates YAML text after `${ENV}` expansion from the process environment.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let env: HashMap<String, String> = std::env::vars().collect();
        Config::parse_with_env(text, &env)
    }

    /// Parses and validates YAML text, expanding `${NAME}` from `env`.
    pub fn parse_with_env(text: &str, env: &HashMap<String, String>) -> Result<Config, ConfigError> {
        let expanded = expand_env(text, env)?;
        let de = serde_yaml::Deserializer::from_str(&expanded);
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let message = e.into_inner().to_string();
            // serde_yaml appends " at line L column C"; the path says where already.
            let message = match message.find(" at line ") {
                Some(i) => message[..i].to_string(),
                None => message,
            };
            // serde_yaml may also lead with the location (`failover_chain[1]: unknown field …`).
            let message = match message.split_once(": ") {
                Some((head, rest)) if !head.contains(' ') && path.starts_with(head) => rest.to_string(),
                _ => message,
            };
            ConfigError::Schema { path: if path == "." { "(root)".to_string() } else { path }, message }
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Makes relative file paths relative to the config file's directory.
    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(tls) = &mut self.tls {
            fix(&mut tls.cert_file);
            fix(&mut tls.key_file);
        }
        for p in &mut self.providers {
            if let Some(ca) = &mut p.ca_file {
                fix(ca);
            }
        }
        fix(&mut self.audit.data_dir);
        if let Some(k) = &mut self.audit.node_key_file {
            fix(k);
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.listen.parse::<SocketAddr>().is_err() {
            return Err(invalid("listen", format!("not an address (ip:port): `{}`", self.listen)));
        }
        if self.shards == Shards::Count(0) {
            return Err(invalid("shards", "must be at least 1"));
        }
        self.validate_limits()?;
        let mut names = std::collections::HashSet::new();
        for (i, p) in self.providers.iter().enumerate() {
            let at = |f: &str| format!("providers[{i}].{f}");
            if p.name.is_empty() {
                return Err(invalid(at("name"), "must not be empty"));
            }
            if !names.insert(p.name.as_str()) {
                return Err(invalid(at("name"), format!("duplicate provider name `{}`", p.name)));
            }
            match url::Url::parse(&p.base_url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {}
                _ => return Err(invalid(at("base_url"), "not a URL")),
            }
            if p.connections_max == 0 {
                return Err(invalid(at("connections_max"), "must be at least 1"));
            }
            for (f, v) in [
                ("connect_timeout_ms", p.connect_timeout_ms),
                ("first_byte_timeout_ms", p.first_byte_timeout_ms),
                ("read_idle_timeout_ms", p.read_idle_timeout_ms),
            ] {
                if v == 0 {
                    return Err(invalid(at(f), "must be at least 1"));
                }
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (i, m) in self.models.iter().enumerate() {
            if m.name.is_empty() {
                return Err(invalid(format!("models[{i}].name"), "must not be empty"));
            }
            if !names.contains(m.provider.as_str()) {
                return Err(invalid(format!("models[{i}].provider"), format!("unknown provider `{}`", m.provider)));
            }
            if !seen.insert((m.name.as_str(), m.provider.as_str())) {
                return Err(invalid(
                    format!("models[{i}]"),
                    format!("model `{}` appears twice for provider `{}`", m.name, m.provider),
                ));
            }
            if m.price_per_1k_input < 0.0 || m.price_per_1k_output < 0.0 {
                return Err(invalid(format!("models[{i}]"), "prices must not be negative"));
            }
            if let Some(q) = m.quality {
                if !(0.0..=1.0).contains(&q) {
                    return Err(invalid(format!("models[{i}].quality"), "must be between 0 and 1"));
                }
            }
        }
        let mut chained = std::collections::HashSet::new();
        for (i, f) in self.failover_chain.iter().enumerate() {
            if !names.contains(f.provider.as_str()) {
                return Err(invalid(
                    format!("failover_chain[{i}].provider"),
                    format!("unknown provider `{}`", f.provider),
                ));
            }
            if !chained.insert(f.provider.as_str()) {
                return Err(invalid(format!("failover_chain[{i}].provider"), "listed twice"));
            }
        }
        if !matches!(self.routing.default_mode.as_str(), "cost" | "latency" | "capability") {
            return Err(invalid("routing.default_mode", "expected cost, latency or capability"));
        }
        if !(0.0..=1.0).contains(&self.routing.quality_threshold) {
            return Err(invalid("routing.quality_threshold", "must be between 0 and 1"));
        }
        if let Some(keys) = &self.keys {
            for (i, iss) in keys.issuers.iter().enumerate() {
                if !iss.public_key.starts_with("k4.public.") {
                    return Err(invalid(format!("keys.issuers[{i}].public_key"), "expected a PASERK k4.public.… key"));
                }
            }
            if keys.cache_entries_max == 0 {
                return Err(invalid("keys.cache_entries_max", "must be at least 1"));
            }
        }
        self.validate_audit()?;
        self.validate_nats()
    }

    fn validate_audit(&self) -> Result<(), ConfigError> {
        let a = &self.audit;
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

    fn validate_nats(&self) -> Result<(), ConfigError> {
        let Some(n) = &self.nats else {
            return Ok(());
        };
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
        if !n.audit_stream.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            || n.audit_stream.is_empty()
        {
            return Err(invalid("nats.audit_stream", "must be a stream name (A-Z a-z 0-9 _ -)"));
        }
        Ok(())
    }

    fn validate_limits(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        let checks: [(&str, u64, u64); 8] = [
            ("limits.header_bytes_max", l.header_bytes_max as u64, 256),
            ("limits.header_count_max", l.header_count_max as u64, 4),
            ("limits.body_bytes_max", l.body_bytes_max as u64, 1),
            ("limits.header_timeout_ms", l.header_timeout_ms, 1),
            ("limits.body_timeout_ms", l.body_timeout_ms, 1),
            ("limits.idle_timeout_ms", l.idle_timeout_ms, 1),
            ("limits.connections_per_shard_max", l.connections_per_shard_max as u64, 1),
            ("limits.pipeline_depth_max", l.pipeline_depth_max as u64, 1),
        ];
        for (path, value, min) in checks {
            if value < min {
                return Err(invalid(path, format!("must be at least {min}")));
            }
        }
        if l.header_bytes_max > 1024 * 1024 {
            return Err(invalid("limits.header_bytes_max", "must be at most 1 MiB"));
        }
        if l.header_count_max > 1024 {
            return Err(invalid("limits.header_count_max", "must be at most 1024"));
        }
        Ok(())
    }

    /// The deployments of `model` in failover order: providers in `failover_chain` by
    /// priority first, then any others in the order the models list names them.
    pub fn deployments_of<'a>(&'a self, model: &str) -> Vec<&'a ModelConfig> {
        let mut out: Vec<&ModelConfig> = self.models.iter().filter(|m| m.name == model).collect();
        let rank = |provider: &str| {
            self.failover_chain.iter().find(|f| f.provider == provider).map(|f| f.priority).unwrap_or(u32::MAX)
        };
        // Stable sort keeps file order among providers of equal rank.
        out.sort_by_key(|m| rank(&m.provider));
        out
    }
}

/// Replaces `${NAME}` with the variable's value. `$${` is a literal `${`.
fn expand_env(text: &str, env: &HashMap<String, String>) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(text.len());
    for (line_index, line) in text.split_inclusive('\n').enumerate() {
        let mut rest = line;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            if let Some(stripped) = after.strip_prefix("${") {
                out.push_str("${");
                rest = stripped;
            } else if let Some(body) = after.strip_prefix('{') {
                let Some(end) = body.find('}') else {
                    out.push('$');
                    rest = after;
                    continue;
                };
                let name = &body[..end];
                let value =
                    env.get(name).ok_or_else(|| ConfigError::Env { line: line_index + 1, name: name.to_string() })?;
                out.push_str(value);
                rest = &body[end + 1..];
            } else {
                out.push('$');
                rest = after;
            }
        }
        out.push_str(rest);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
listen: 127.0.0.1:8080
shards: 2
driver: epoll
limits: { header_bytes_max: 16384, body_bytes_max: 4194304, header_timeout_ms: 10000,
          idle_timeout_ms: 60000, connections_per_shard_max: 10000 }
providers:
  - name: openai
    kind: openai
    base_url: https://api.openai.com/v1
    api_key: ${OPENAI_API_KEY}
    connect_timeout_ms: 2000
    first_byte_timeout_ms: 30000
    connections_max: 256
  - name: groq
    kind: openai_compatible
    base_url: https://api.groq.com/openai/v1
    api_key: ${GROQ_API_KEY}
models:
  - name: gpt-4o-mini
    provider: openai
    upstream_model: gpt-4o-mini
    price_per_1k_input: 0.00015
    price_per_1k_output: 0.0006
    context_window: 128000
    capabilities: [tools, json_mode, vision]
  - name: gpt-4o-mini
    provider: groq
    upstream_model: llama-3.1-8b-instant
failover_chain:
  - { provider: groq, priority: 3 }
  - { provider: openai, priority: 1 }
routing: { default_mode: cost, quality_threshold: 0.7 }
keys:
  issuers: [ { public_key: k4.public.AAAA } ]
  revoked: []
  leeway_s: 30
nats: { url: nats://127.0.0.1:4222, replicas: 1 }
audit: { data_dir: ./data, checkpoint_every: 1000, checkpoint_interval_ms: 1000, include_content: false }
"#;

    fn env() -> HashMap<String, String> {
        [("OPENAI_API_KEY", "sk-o"), ("GROQ_API_KEY", "gsk-g")]
            .into_iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    fn err_text(text: &str) -> String {
        match Config::parse_with_env(text, &env()) {
            Ok(_) => panic!("config was accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn design_sample_parses() {
        let c = Config::parse_with_env(SAMPLE, &env()).expect("sample parses");
        assert_eq!(c.shards, Shards::Count(2));
        assert_eq!(c.driver, DriverChoice::Epoll);
        assert_eq!(c.providers[0].api_key.as_deref(), Some("sk-o"));
        assert_eq!(c.providers[1].api_key.as_deref(), Some("gsk-g"));
        assert_eq!(c.limits.header_count_max, Limits::default().header_count_max);
        let order: Vec<_> = c.deployments_of("gpt-4o-mini").iter().map(|m| m.provider.as_str()).collect();
        assert_eq!(order, ["openai", "groq"]);
    }

    #[test]
    fn unknown_key_names_its_path() {
        let text = SAMPLE.replace("connections_max: 256", "connections_max: 256\n    colour: red");
        let e = err_text(&text);
        assert!(e.starts_with("providers[0]"), "{e}");
        assert!(e.contains("colour"), "{e}");
    }

    #[test]
    fn bad_url_names_its_path() {
        let e = err_text(&SAMPLE.replace("https://api.groq.com/openai/v1", "not a url"));
        assert_eq!(e, "providers[1].base_url: not a URL");
    }

    #[test]
    fn wrong_type_names_its_path() {
        let e = err_text(&SAMPLE.replace("body_bytes_max: 4194304", "body_bytes_max: lots"));
        assert!(e.starts_with("limits.body_bytes_max:"), "{e}");
    }

    #[test]
    fn missing_env_is_named() {
        let e = Config::parse_with_env(SAMPLE, &HashMap::new()).map(|_| ()).unwrap_err().to_string();
        assert!(e.contains("OPENAI_API_KEY"), "{e}");
        assert!(e.starts_with("line 11:"), "{e}");
    }

    #[test]
    fn literal_dollar_brace_survives() {
        let mut env = env();
        env.insert("X".into(), "y".into());
        assert_eq!(expand_env("a: $${X} ${X} $5", &env).expect("expands"), "a: ${X} y $5");
    }

    #[test]
    fn unknown_provider_in_models_and_chain() {
        let e = err_text(&SAMPLE.replace("provider: groq\n    upstream_model", "provider: nope\n    upstream_model"));
        assert!(e.starts_with("models[1].provider"), "{e}");
        let e = err_text(&SAMPLE.replace("{ provider: groq, priority: 3 }", "{ provider: nope, priority: 3 }"));
        assert!(e.starts_with("failover_chain[0].provider"), "{e}");
    }

    #[test]
    fn limits_have_floors() {
        let e = err_text(&SAMPLE.replace("header_bytes_max: 16384", "header_bytes_max: 10"));
        assert!(e.starts_with("limits.header_bytes_max"), "{e}");
        let e = err_text(&SAMPLE.replace("shards: 2", "shards: 0"));
        assert!(e.starts_with("shards"), "{e}");
        let e = err_text(&SAMPLE.replace("shards: 2", "shards: many"));
        assert!(e.starts_with("shards"), "{e}");
    }

    #[test]
    fn audit_and_nats_fields_are_validated() {
        let e = err_text(&SAMPLE.replace("include_content: false", "include_content: false, fsync: sometimes"));
        assert!(e.starts_with("audit.fsync"), "{e}");
        let e = err_text(&SAMPLE.replace("include_content: false", "include_content: false, node_name: \"a.b\""));
        assert!(e.starts_with("audit.node_name"), "{e}");
        let e = err_text(&SAMPLE.replace("include_content: false", "include_content: false, node_public_keys: [nope]"));
        assert!(e.starts_with("audit.node_public_keys[0]"), "{e}");
        let e = err_text(&SAMPLE.replace("replicas: 1", "replicas: 7"));
        assert!(e.starts_with("nats.replicas"), "{e}");
        let c = Config::parse_with_env(
            &SAMPLE.replace("include_content: false", "include_content: false, fsync: always, node_name: gw-1"),
            &env(),
        )
        .expect("valid");
        assert_eq!(c.audit.fsync, FsyncPolicy::Always);
        assert_eq!(c.nats.as_ref().map(|n| n.audit_stream.as_str()), Some("BH_AUDIT"));
    }

    #[test]
    fn empty_config_gets_defaults() {
        let c = Config::parse_with_env("{}", &env()).expect("defaults");
        assert_eq!(c.listen, "0.0.0.0:8080");
        assert_eq!(c.shards, Shards::Auto);
        assert!(c.keys.is_none());
        assert_eq!(c.limits, Limits::default());
    }
}
