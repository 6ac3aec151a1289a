//! `gatekeeper audit …`: verify stored chains.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;

use crate::audit::verify::{verify_dir_witnessed, Audit, Summary, VerifyError};
use crate::config::Config;

/// `gatekeeper audit …` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum AuditCommand {
    /// Check every chain and checkpoint; exit 0 only if all verify, else name the first
    /// bad entry and exit 1. Without --nats/--dir, uses the config's nats.url, else its
    /// audit.data_dir.
    Verify(VerifyArgs),
}

/// Flags of `gatekeeper audit verify`.
#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    /// Read the audit stream from this NATS server.
    #[arg(long, value_name = "URL", conflicts_with = "dir")]
    pub nats: Option<String>,
    /// Read chain files from this data dir (or its `audit/` folder).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Audit stream name (with --nats). Default: the config's, else BH_AUDIT.
    #[arg(long, value_name = "NAME")]
    pub stream: Option<String>,
    /// Config file for defaults and `audit.node_public_keys`.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Trusted node public key (`k4.public.…`); repeatable; added to the config's list.
    #[arg(long = "public-key", value_name = "KEY")]
    pub public_keys: Vec<String>,
    /// A witness file (`audit.witness_file`): every checkpoint in it must be in the log,
    /// so a tail cut off together with its checkpoints is found.
    #[arg(long, value_name = "FILE")]
    pub witness: Option<PathBuf>,
}

/// Runs an `audit` subcommand, printing to stdout.
pub fn run(cmd: AuditCommand) -> anyhow::Result<()> {
    match cmd {
        AuditCommand::Verify(args) => {
            let summary = verify(&args)?;
            println!("{summary}");
            Ok(())
        }
    }
}

/// Verifies what `args` point at.
pub fn verify(args: &VerifyArgs) -> anyhow::Result<Summary> {
    // With --dir or --nats nothing else is needed: an auditor need not hold the
    // gateway's config (or its secrets).
    let default_config = PathBuf::from("gatekeeper.yaml");
    let implicit = args.dir.is_none() && args.nats.is_none() && default_config.exists();
    let config_path = args.config.clone().or_else(|| implicit.then_some(default_config));
    let config = match &config_path {
        Some(p) => Some(
            Config::load_sections(p, Some(&["audit", "nats"])).with_context(|| format!("config {}", p.display()))?,
        ),
        None => None,
    };
    let mut keys = args.public_keys.clone();
    if let Some(c) = &config {
        keys.extend(c.audit.node_public_keys.iter().cloned());
    }
    let nats = args.nats.clone().or_else(|| {
        if args.dir.is_some() {
            None
        } else {
            config.as_ref().and_then(|c| c.nats.as_ref()).map(|n| n.url.clone())
        }
    });
    if let Some(url) = nats {
        let stream = args
            .stream
            .clone()
            .or_else(|| config.as_ref().and_then(|c| c.nats.as_ref()).map(|n| n.audit_stream.clone()))
            .unwrap_or_else(|| "BH_AUDIT".into());
        return verify_nats_witnessed(&url, &stream, keys, args.witness.as_deref());
    }
    let dir = args
        .dir
        .clone()
        .or_else(|| config.as_ref().map(|c| c.audit.data_dir.clone()))
        .unwrap_or_else(|| PathBuf::from("./data"));
    match verify_dir_witnessed(&dir, keys, args.witness.as_deref()) {
        Ok(s) => Ok(s),
        Err(VerifyError::Failed(f)) => Err(anyhow::anyhow!("FAILED: {f}")),
        Err(e) => Err(e.into()),
    }
}

/// Verifies every chain in a JetStream audit stream.
pub fn verify_nats(url: &str, stream: &str, keys: Vec<String>) -> anyhow::Result<Summary> {
    verify_nats_witnessed(url, stream, keys, None)
}

/// [`verify_nats`], then every checkpoint of `witness` must be in the stream.
pub fn verify_nats_witnessed(
    url: &str,
    stream: &str,
    keys: Vec<String>,
    witness: Option<&std::path::Path>,
) -> anyhow::Result<Summary> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let messages = rt.block_on(async {
        let client = crate::bridge::nats::connect(url, Duration::from_secs(5), "gatekeeper-audit-verify").await?;
        let js = crate::bridge::nats::context(client, Duration::from_secs(10));
        crate::bridge::nats::read_audit(&js, stream).await
    })?;
    let mut audit = Audit::new(keys);
    for m in &messages {
        // `bh.audit.<node>.<inst>`: the store's own say of which chain this is.
        let hint = m.subject.strip_prefix("bh.audit.").and_then(|rest| rest.split_once('.'));
        audit
            .feed(&m.payload, hint, &format!("stream {stream} seq {}", m.seq))
            .map_err(|f| anyhow::anyhow!("FAILED: {f}"))?;
    }
    let witnessed = match witness.map(|w| audit.witness_file(w)).transpose() {
        Ok(n) => n,
        Err(VerifyError::Failed(f)) => return Err(anyhow::anyhow!("FAILED: {f}")),
        Err(e) => return Err(e.into()),
    };
    Ok(Summary { witnessed, ..audit.finish() })
}
