//! `gatekeeper config push FILE`: writes hot configuration into the `BH_CONFIG` bucket.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;

use crate::bridge::nats;
use crate::config::hot::{HotConfig, KEY_CAPABILITIES, KEY_REVOCATIONS, KEY_ROUTING};
use crate::config::{Config, NatsConfig};

/// `gatekeeper config …` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ConfigCommand {
    /// Write FILE's `revocations`, `routing` and `capabilities` sections (YAML or JSON)
    /// to the BH_CONFIG KV bucket; every gateway watching it applies them without a restart.
    Push {
        /// The file: `{revocations: [jti, …], routing: {…}, capabilities: {…}}`, any subset.
        file: PathBuf,
        /// NATS server; default: the config's nats.url.
        #[arg(long, value_name = "URL")]
        nats: Option<String>,
        /// Gateway config to read nats settings from.
        #[arg(long, value_name = "FILE", default_value = "gatekeeper.yaml")]
        config: PathBuf,
    },
}

/// The sections `config push` understands.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PushFile {
    #[serde(default)]
    revocations: Option<serde_json::Value>,
    #[serde(default)]
    routing: Option<serde_json::Value>,
    #[serde(default)]
    capabilities: Option<serde_json::Value>,
}

/// Runs a `config` subcommand.
pub fn run(cmd: ConfigCommand) -> anyhow::Result<()> {
    match cmd {
        ConfigCommand::Push { file, nats, config } => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            let push: PushFile = serde_yaml::from_str(&text)
                .with_context(|| format!("{}: expected revocations/routing/capabilities", file.display()))?;
            let settings = match (nats, config.exists()) {
                (Some(url), _) => NatsConfig { url, ..default_nats() },
                (None, true) => Config::load_sections(&config, Some(&["nats"]))?
                    .nats
                    .context("the config has no nats section; pass --nats URL")?,
                (None, false) => anyhow::bail!("pass --nats URL or --config FILE"),
            };
            for (key, rev) in push_values(&settings, &push)? {
                println!("{key}: revision {rev}");
            }
            Ok(())
        }
    }
}

fn default_nats() -> NatsConfig {
    serde_yaml::from_str("url: x").unwrap_or_else(|_| unreachable!("a url alone is a valid nats section"))
}

fn push_values(settings: &NatsConfig, push: &PushFile) -> anyhow::Result<Vec<(&'static str, u64)>> {
    let mut values: Vec<(&'static str, Vec<u8>)> = Vec::new();
    if let Some(v) = &push.revocations {
        let list = match v {
            serde_json::Value::Array(_) => serde_json::json!({ "revoked": v }),
            other => other.clone(),
        };
        values.push((KEY_REVOCATIONS, serde_json::to_vec(&list)?));
    }
    if let Some(v) = &push.routing {
        values.push((KEY_ROUTING, serde_json::to_vec(v)?));
    }
    if let Some(v) = &push.capabilities {
        values.push((KEY_CAPABILITIES, serde_json::to_vec(v)?));
    }
    anyhow::ensure!(!values.is_empty(), "nothing to push: the file has no revocations, routing or capabilities");
    // Check what shards will parse before anything is written.
    let probe = HotConfig::new(Vec::new());
    for (k, v) in &values {
        probe.apply(k, Some(v))?;
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let client =
            nats::connect(&settings.url, Duration::from_millis(settings.connect_timeout_ms), "gatekeeper-config-push")
                .await?;
        let js = nats::context(client, Duration::from_millis(settings.ack_timeout_ms));
        // Only the bucket: a problem with the audit streams must not hold up a revocation.
        nats::provision_config_bucket(&js, settings).await?;
        let kv = nats::config_bucket(&js).await?;
        let mut out = Vec::new();
        for (k, v) in values {
            let rev = kv.put(k, v.into()).await.with_context(|| format!("writing {k}"))?;
            out.push((k, rev));
        }
        Ok(out)
    })
}
