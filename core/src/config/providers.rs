//! The `providers` section: upstream providers, their validation, and their
//! conversion into a per-shard upstream [`PoolConfig`].

use std::collections::HashSet;
use std::path::PathBuf;

use gatekeeper_net::upstream::{tls_client_config, Origin, PoolConfig};
use serde::{Deserialize, Serialize};

use super::error::{invalid, ConfigError};
use crate::providers::anthropic::AnthropicSettings;
use crate::providers::headers::{HeaderRule, DEFAULT_FORWARD_HEADERS};
use crate::providers::Provider;
pub use crate::providers::ProviderKind;

/// One upstream provider.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Unique name, used by `models[].provider` and `failover_chain`.
    pub name: String,
    /// Wire format.
    pub kind: ProviderKind,
    /// Base URL, e.g. `https://api.openai.com/v1`; `/chat/completions` is appended.
    /// `kind: anthropic`: `https://api.anthropic.com` (`/v1/messages` appended) or one
    /// ending in `/v1` (`/messages` appended).
    pub base_url: String,
    /// Sent as `Authorization: Bearer …` (`kind: anthropic`: as `x-api-key`); the
    /// client's own credential is never forwarded.
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
    /// Ask for the usage event at the end of every stream (`stream_options.include_usage`),
    /// removing it again for clients that did not ask, so every stream's tokens are
    /// counted. Default true; turn off for a server that rejects `stream_options`.
    #[serde(default = "default_true")]
    pub stream_usage: bool,
    /// Client headers passed on to this provider (case-insensitive names, or prefixes
    /// ending in `*`). Everything else the client sends stays at the gateway.
    /// Default: `user-agent`, `openai-beta`, `accept-language`.
    #[serde(default = "default_forward_headers")]
    pub forward_headers: Vec<String>,
    /// Longest `Retry-After` (from a 429 or 5xx) honoured, s: the provider is skipped
    /// for at most this long, and clients are told at most this. Default 300.
    #[serde(default = "default_retry_after_max_s")]
    pub retry_after_max_s: u64,
    /// Longest gap between two pieces of a relayed stream, ms: past it the client's
    /// stream ends with an error event and the provider is counted as stalled.
    /// Default 30 s (`read_idle_timeout_ms` bounds it from above).
    #[serde(default = "default_chunk_timeout_ms")]
    pub chunk_timeout_ms: u64,
    /// `kind: anthropic`: the `anthropic-version` header sent. Default `2023-06-01`.
    #[serde(default = "default_anthropic_version")]
    pub anthropic_version: String,
    /// `kind: anthropic`: `max_tokens` sent when the client gives none (the Messages API
    /// requires one). Default 4096.
    #[serde(default = "default_max_tokens")]
    pub max_tokens_default: u64,
}

fn default_chunk_timeout_ms() -> u64 {
    30_000
}

fn default_anthropic_version() -> String {
    crate::providers::anthropic::VERSION_DEFAULT.to_string()
}

fn default_max_tokens() -> u64 {
    crate::providers::anthropic::MAX_TOKENS_DEFAULT
}

fn default_retry_after_max_s() -> u64 {
    crate::router::health::RETRY_AFTER_MAX_DEFAULT.as_secs()
}

fn default_forward_headers() -> Vec<String> {
    DEFAULT_FORWARD_HEADERS.iter().map(|s| s.to_string()).collect()
}

fn default_true() -> bool {
    true
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
impl From<&ProviderConfig> for PoolConfig {
    fn from(p: &ProviderConfig) -> Self {
        PoolConfig {
            connect_timeout_ms: p.connect_timeout_ms,
            first_byte_timeout_ms: p.first_byte_timeout_ms,
            read_idle_timeout_ms: p.read_idle_timeout_ms,
            pool_idle_timeout_ms: p.pool_idle_timeout_ms,
            connections_max: p.connections_max,
            queue_max: p.queue_max,
            ..PoolConfig::default()
        }
    }
}

/// The providers as the gateway runs them, in config order: origins parsed, TLS
/// client settings loaded (an `https` base URL, with `ca_file` if given).
pub fn build(providers: &[ProviderConfig]) -> Result<Vec<Provider>, ConfigError> {
    let mut out = Vec::with_capacity(providers.len());
    for (i, p) in providers.iter().enumerate() {
        let origin =
            Origin::parse(&p.base_url).map_err(|e| invalid(format!("providers[{i}].base_url"), e.to_string()))?;
        let tls = if origin.https {
            Some(
                tls_client_config(p.ca_file.as_deref())
                    .map_err(|e| invalid(format!("providers[{i}].ca_file"), e.to_string()))?,
            )
        } else {
            None
        };
        let forward_headers = p
            .forward_headers
            .iter()
            .enumerate()
            .map(|(j, h)| HeaderRule::parse(h).map_err(|e| invalid(format!("providers[{i}].forward_headers[{j}]"), e)))
            .collect::<Result<Vec<_>, _>>()?;
        let api_key = p.api_key.as_ref().filter(|k| !k.is_empty());
        let anthropic = (p.kind == ProviderKind::Anthropic).then(|| AnthropicSettings {
            api_key: api_key.cloned(),
            version: p.anthropic_version.clone(),
            max_tokens_default: p.max_tokens_default,
            path: crate::providers::anthropic::path_for(&origin.path_prefix),
        });
        out.push(Provider {
            name: p.name.clone(),
            kind: p.kind,
            origin,
            authorization: api_key.filter(|_| anthropic.is_none()).map(|k| format!("Bearer {k}")),
            anthropic,
            chunk_timeout: std::time::Duration::from_millis(p.chunk_timeout_ms),
            pool: PoolConfig::from(p),
            tls,
            stream_usage: p.stream_usage,
            forward_headers,
            retry_after_max: std::time::Duration::from_secs(p.retry_after_max_s),
        });
    }
    Ok(out)
}

/// Checks every provider on its own; returns the set of their names.
pub(super) fn validate(providers: &[ProviderConfig]) -> Result<HashSet<&str>, ConfigError> {
    let mut names = HashSet::new();
    for (i, p) in providers.iter().enumerate() {
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
        for (j, h) in p.forward_headers.iter().enumerate() {
            HeaderRule::parse(h).map_err(|e| invalid(format!("providers[{i}].forward_headers[{j}]"), e))?;
        }
        for (f, v) in [
            ("connect_timeout_ms", p.connect_timeout_ms),
            ("first_byte_timeout_ms", p.first_byte_timeout_ms),
            ("read_idle_timeout_ms", p.read_idle_timeout_ms),
            ("retry_after_max_s", p.retry_after_max_s),
            ("chunk_timeout_ms", p.chunk_timeout_ms),
            ("max_tokens_default", p.max_tokens_default),
        ] {
            if v == 0 {
                return Err(invalid(at(f), "must be at least 1"));
            }
        }
        if p.anthropic_version.is_empty() || !p.anthropic_version.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid(at("anthropic_version"), "must be a non-empty header value without spaces"));
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pool_setting_reaches_the_pool() {
        let p = ProviderConfig {
            name: "p".into(),
            kind: ProviderKind::Openai,
            base_url: "http://127.0.0.1:1/v1".into(),
            api_key: None,
            connect_timeout_ms: 11,
            first_byte_timeout_ms: 12,
            read_idle_timeout_ms: 13,
            pool_idle_timeout_ms: 14,
            connections_max: 15,
            queue_max: 16,
            ca_file: None,
            stream_usage: true,
            forward_headers: Vec::new(),
            retry_after_max_s: 1,
            chunk_timeout_ms: 1,
            anthropic_version: "v".into(),
            max_tokens_default: 1,
        };
        let pool = PoolConfig::from(&p);
        assert_eq!(
            (
                pool.connect_timeout_ms,
                pool.first_byte_timeout_ms,
                pool.read_idle_timeout_ms,
                pool.pool_idle_timeout_ms,
                pool.connections_max,
                pool.queue_max
            ),
            (11, 12, 13, 14, 15, 16)
        );
    }

    #[test]
    fn anthropic_keys_go_in_x_api_key_and_the_path_follows_the_base_url() {
        let yaml = |base: &str| {
            format!("{{ name: a, kind: anthropic, base_url: \"{base}\", api_key: sk-ant, anthropic_version: \"2024-01-01\" }}")
        };
        for (base, path) in
            [("https://api.anthropic.com", "/v1/messages"), ("https://api.anthropic.com/v1/", "/messages")]
        {
            let p: ProviderConfig = serde_yaml::from_str(&yaml(base)).expect("yaml");
            assert_eq!((p.max_tokens_default, p.chunk_timeout_ms), (4096, 30_000));
            let built = build(std::slice::from_ref(&p)).expect("builds");
            let a = built[0].anthropic.as_ref().expect("anthropic settings");
            assert_eq!((a.api_key.as_deref(), a.version.as_str(), a.path), (Some("sk-ant"), "2024-01-01", path));
            assert!(built[0].authorization.is_none(), "the key never goes in Authorization");
        }
        let p: ProviderConfig =
            serde_yaml::from_str("{ name: o, kind: openai, base_url: \"http://x/v1\", api_key: k }").expect("yaml");
        let built = build(std::slice::from_ref(&p)).expect("builds");
        assert!(built[0].anthropic.is_none());
        assert_eq!(built[0].authorization.as_deref(), Some("Bearer k"));
    }
}
