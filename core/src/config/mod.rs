//! `gatekeeper.yaml`: parsing, `${ENV}` expansion, validation, and the conversion of
//! each section into the runtime type it configures.
//!
//! The field names are a contract (ARCHITECTURE.md, "Configuration"): tests outside
//! the project write configs with them. Unknown keys are rejected, and every error
//! names the path of the offending value (`providers[1].base_url: not a URL`).
//!
//! One file per section, each holding the section's types, its validation and its
//! conversion: [`server`] (listen, shards, driver, TLS, limits → `ServerLimits`),
//! [`providers`] (→ `PoolConfig`), [`models`] (deployments and failover order),
//! [`routing`], [`keys`] (→ `Verifier`), [`nats`], [`audit`]. [`env`] expands
//! `${NAME}`; [`edit`] changes a config file in place (`gatekeeper keys revoke`).
//! This module and its files import the runtime modules they configure, never the
//! other way round.

pub mod audit;
pub mod budgets;
pub mod credits;
pub mod edit;
mod env;
mod error;
pub mod health;
pub mod hot;
pub mod keys;
pub mod models;
pub mod nats;
pub mod placement;
pub mod providers;
pub mod routing;
pub mod server;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use audit::{AuditConfig, FsyncPolicy};
pub use budgets::{BudgetMode, BudgetsConfig, TenantBudget};
pub use credits::{CreditsConfig, CreditsEpoch, CreditsMode};
pub use error::{ConfigError, UnsetVar};
pub use keys::{IssuerConfig, KeysConfig};
pub use models::{FailoverEntry, ModelConfig};
pub use nats::{Compression, NatsConfig};
pub use placement::{BridgeConfig, BridgePolicy, UringConfig};
pub use providers::{ProviderConfig, ProviderKind};
pub use routing::RoutingConfig;
pub use server::{DriverChoice, Limits, Shards, TlsConfig};

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
    /// Token budgets: tenant limits, reservations, the budget table (`config/budgets.rs`).
    #[serde(default)]
    pub budgets: BudgetsConfig,
    /// How long in-flight requests may run after SIGTERM before the process exits.
    #[serde(default = "default_drain_timeout_ms")]
    pub drain_timeout_ms: u64,
    /// Address of the admin listener (plain HTTP): when set, `/metrics`, `/readyz` and
    /// `/healthz` are served there, and the API listener answers `/metrics` and `/readyz`
    /// with 404. Absent: everything on `listen`.
    #[serde(default)]
    pub admin_listen: Option<String>,
    /// The shards' CPUs: shard `i` is pinned to `cpus[i]`. Its length is the shard count
    /// (`shards` must then be `auto` or the same number). Absent: one shard per core this
    /// process may use, pinned in order.
    #[serde(default)]
    pub cpus: Option<Vec<usize>>,
    /// Where the bridge thread runs (CPU, nice).
    #[serde(default)]
    pub bridge: BridgeConfig,
    /// Each shard's io_uring ring.
    #[serde(default)]
    pub uring: UringConfig,
    /// Each shard's listen backlog (connections the kernel queues before an accept).
    /// Default 4096; the kernel caps it at `net.core.somaxconn`.
    #[serde(default = "placement::default_listen_backlog")]
    pub listen_backlog: u32,
    /// Anonymous credits (`credits.rs`); absent: off, and `zk` keys are refused.
    #[serde(default)]
    pub credits: Option<CreditsConfig>,
}

fn default_listen() -> String {
    "0.0.0.0:8080".to_string()
}

fn default_drain_timeout_ms() -> u64 {
    10_000
}

impl Config {
    /// Reads, expands and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_sections(path, None)
    }

    /// [`Config::load`] for a command that reads only the top-level `sections` (e.g.
    /// `["keys"]`): a `${VAR}` elsewhere may be unset and is left as written, so an
    /// auditor need not hold the provider secrets. `None`: every section.
    pub fn load_sections(path: &Path, sections: Option<&[&str]>) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|io| ConfigError::Read { path: path.to_path_buf(), io })?;
        let env: HashMap<String, String> = std::env::vars().collect();
        let mut config = Config::parse_sections(&text, &env, sections)?;
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
        Config::parse_sections(text, env, None)
    }

    /// [`Config::parse_with_env`] where only unset variables inside `sections` are
    /// errors (see [`Config::load_sections`]).
    pub fn parse_sections(
        text: &str,
        env: &HashMap<String, String>,
        sections: Option<&[&str]>,
    ) -> Result<Config, ConfigError> {
        let mut value: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| {
            let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
            let message = e.to_string();
            let mut message = message.find(" at line ").map_or(message.clone(), |i| message[..i].to_string());
            let bad_line = text.lines().nth(line.saturating_sub(1)).unwrap_or_default();
            if bad_line.contains("${") && bad_line.contains('{') {
                message.push_str(" (inside `{ … }`, quote a value that uses ${VAR}: \"${VAR}\")");
            }
            ConfigError::Syntax { line, column, message }
        })?;
        if value.is_null() {
            // An empty file is an empty config.
            value = serde_yaml::Value::Mapping(serde_yaml::Mapping::new());
        }
        let mut missing = env::expand_values(&mut value, env);
        if let Some(used) = sections {
            let top = |path: &str| path.split(['.', '[']).next().unwrap_or_default().to_string();
            missing.retain(|m| used.contains(&top(&m.path).as_str()));
        }
        if !missing.is_empty() {
            return Err(ConfigError::Env { missing });
        }
        let config: Config = serde_path_to_error::deserialize(value).map_err(|e| {
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
        if let Some(w) = &mut self.audit.witness_file {
            fix(w);
        }
        if let Some(k) = &mut self.audit.node_key_file {
            fix(k);
        }
    }

    /// Checks what the schema cannot: each section on its own, then the references
    /// between sections (models and the failover chain name providers).
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        server::validate(&self.listen, self.shards, &self.limits)?;
        placement::validate(self.shards, self.cpus.as_deref(), &self.bridge, &self.uring, self.listen_backlog)?;
        if let Some(admin) = &self.admin_listen {
            check_admin_listen(admin, &self.listen)?;
        }
        let names = providers::validate(&self.providers)?;
        models::validate(&self.models, &self.failover_chain, &names)?;
        routing::validate(&self.routing)?;
        health::validate(&self.routing.health)?;
        if self.models.iter().any(|m| m.name == self.routing.auto_model) {
            return Err(error::invalid(
                "routing.auto_model",
                format!("`{}` is also a model's name; the alias must differ from every model", self.routing.auto_model),
            ));
        }
        if let Some(keys) = &self.keys {
            keys::validate(keys)?;
        }
        audit::validate(&self.audit)?;
        budgets::validate(&self.budgets)?;
        if let Some(n) = &self.nats {
            nats::validate(n)?;
        }
        if let Some(c) = &self.credits {
            credits::validate(c)?;
        }
        Ok(())
    }

    /// The number of shards to start: the length of `cpus` when given, else `shards`.
    pub fn shard_count(&self) -> usize {
        placement::shard_count(self.shards, self.cpus.as_deref())
    }

    /// The admin listener's address, if one is configured (validated at load).
    pub fn admin_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        self.admin_listen.as_deref().map(|a| check_admin_listen(a, &self.listen)).transpose()
    }

    /// The deployments of `model` in failover order: providers in `failover_chain` by
    /// priority first, then any others in the order the models list names them.
    pub fn deployments_of<'a>(&'a self, model: &str) -> Vec<&'a ModelConfig> {
        models::deployments_of(&self.models, &self.failover_chain, model)
    }

    /// The routing table: every model name with its deployments in failover order.
    pub fn route_table(&self) -> crate::router::RouteTable {
        let providers: Vec<&str> = self.providers.iter().map(|p| p.name.as_str()).collect();
        models::route_table(&self.models, &self.failover_chain, &providers, &self.routing)
    }
}

/// `admin_listen` is an address, and not the API's: with `SO_REUSEPORT` both would bind it
/// and split its connections between them.
fn check_admin_listen(admin: &str, listen: &str) -> Result<SocketAddr, ConfigError> {
    let addr: SocketAddr =
        admin.parse().map_err(|_| error::invalid("admin_listen", format!("not an address (ip:port): `{admin}`")))?;
    if addr.port() != 0 && listen.parse::<SocketAddr>().is_ok_and(|l| l == addr) {
        return Err(error::invalid("admin_listen", "must differ from `listen`"));
    }
    Ok(addr)
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
  issuers: [ { public_key: k4.public.zD3YbqHMDu9JFcrjPt3wangA2ttKYW3rZrrN07dhI1o } ]
  revoked: []
  leeway_s: 30
nats: { url: nats://127.0.0.1:4222, replicas: 1 }
audit: { data_dir: ./data, checkpoint_every: 1000, checkpoint_interval_ms: 1000, include_content: false }
"#;

    fn env() -> HashMap<String, String> {
        [("OPENAI_API_KEY", "sk-o"), ("GROQ_API_KEY", "gsk-g"), ("ANTHROPIC_API_KEY", "sk-ant-a")]
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
        assert_eq!(
            e,
            "environment variables are not set: OPENAI_API_KEY (at providers[0].api_key), \
             GROQ_API_KEY (at providers[1].api_key)"
        );
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
    fn unset_variables_outside_the_sections_used_are_left_alone() {
        let text = SAMPLE;
        let c = Config::parse_sections(text, &HashMap::new(), Some(&["keys", "audit"])).expect("keys only");
        assert_eq!(c.providers[0].api_key.as_deref(), Some("${OPENAI_API_KEY}"), "left as written");
        let with_secret = text.replace("revoked: []", "revoked: [\"${REVOKED}\"]");
        let e = Config::parse_sections(&with_secret, &HashMap::new(), Some(&["keys"])).map(|_| ()).unwrap_err();
        assert_eq!(e.to_string(), "environment variable is not set: REVOKED (at keys.revoked[0])");
    }

    #[test]
    fn syntax_errors_name_line_and_column() {
        let e = Config::parse_with_env("listen: 127.0.0.1:1\nproviders:\n  - { name: a, api_key: ${X} }\n", &env());
        let e = e.map(|_| ()).unwrap_err().to_string();
        assert!(e.starts_with("line 3, column "), "{e}");
        assert!(e.contains("quote a value that uses ${VAR}"), "{e}");
        let quoted = SAMPLE.replace("api_key: ${GROQ_API_KEY}", "api_key: \"${GROQ_API_KEY}\"");
        assert!(Config::parse_with_env(&quoted, &env()).is_ok());
    }

    #[test]
    fn the_example_config_is_valid_but_for_its_issuer_placeholder() {
        let text = include_str!("../../../examples/gatekeeper.yaml");
        let e = Config::parse_with_env(text, &env()).map(|_| ()).unwrap_err();
        assert!(e.to_string().starts_with("keys.issuers[0].public_key:"), "{e}");
        let real = text
            .replace("k4.public.REPLACE-WITH-YOUR-ISSUER-KEY", "k4.public.zD3YbqHMDu9JFcrjPt3wangA2ttKYW3rZrrN07dhI1o");
        let c = Config::parse_with_env(&real, &env()).expect("valid with a real key");
        assert_eq!(c.providers[1].api_key.as_deref(), Some("gsk-g"));
        assert_eq!((c.providers[2].kind, c.providers[2].max_tokens_default), (ProviderKind::Anthropic, 4096));
    }

    #[test]
    fn admin_listen_is_an_address_of_its_own() {
        let c = Config::parse_with_env(&format!("admin_listen: 127.0.0.1:9090\n{SAMPLE}"), &env()).expect("valid");
        assert_eq!(c.admin_addr().ok().flatten(), Some("127.0.0.1:9090".parse().expect("addr")));
        let e = err_text(&format!("admin_listen: localhost\n{SAMPLE}"));
        assert_eq!(e, "admin_listen: not an address (ip:port): `localhost`");
        let e = err_text(&format!("admin_listen: 127.0.0.1:8080\n{SAMPLE}"));
        assert_eq!(e, "admin_listen: must differ from `listen`");
        assert!(Config::parse_with_env(SAMPLE, &env()).expect("valid").admin_addr().ok().flatten().is_none());
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
