//! `gatekeeper audit …`: verify stored chains.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;

use super::verify::{verify_dir, Audit, Summary, VerifyError};
use crate::config::Config;

/// `gatekeeper audit …` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum AuditCommand {
    /// Check every chain and checkpoint; exit 0 only if all verify, else name the first
    /// bad entry and exit 1. Without --nats/--dir, uses the config's nats.url, else its
    /// audit.data_dir.
    Verify(VerifyArgs),
    /// Test and bench helper: runs the real bridge and submits synthetic records from
    /// one thread per shard, printing `submitted <request_id>` once each `submit`
    /// returned; then drains and prints `done`.
    #[command(hide = true)]
    Submit(SubmitArgs),
}

/// Flags of the hidden `gatekeeper audit submit`.
#[derive(Debug, Clone, clap::Args)]
pub struct SubmitArgs {
    /// Gateway config (its `audit` and `nats` sections are used).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Records per shard.
    #[arg(long, default_value_t = 1000)]
    pub records: u64,
    /// Shards (threads).
    #[arg(long, default_value_t = 2)]
    pub shards: usize,
    /// Request id prefix.
    #[arg(long, default_value = "req")]
    pub prefix: String,
    /// Pause between records of one shard, µs.
    #[arg(long, default_value_t = 0)]
    pub interval_us: u64,
    /// How long the final drain may wait for the store, ms.
    #[arg(long, default_value_t = 30_000)]
    pub drain_ms: u64,
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
}

/// Runs an `audit` subcommand, printing to stdout.
pub fn run(cmd: AuditCommand) -> anyhow::Result<()> {
    match cmd {
        AuditCommand::Verify(args) => {
            let summary = verify(&args)?;
            println!("{summary}");
            Ok(())
        }
        AuditCommand::Submit(args) => submit(&args),
    }
}

fn submit(args: &SubmitArgs) -> anyhow::Result<()> {
    use std::io::Write as _;
    let config = Config::load(&args.config).with_context(|| format!("config {}", args.config.display()))?;
    let bridge = crate::bridge::Bridge::start(&config, args.shards)?;
    let out = std::sync::Mutex::new(std::io::stdout());
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let mut handles = Vec::new();
        for shard in 0..args.shards {
            let audit = bridge.shard(shard)?;
            let out = &out;
            handles.push(scope.spawn(move || -> anyhow::Result<()> {
                for i in 0..args.records {
                    let record = super::AuditRecord {
                        request_id: format!("{}-{shard}-{i}", args.prefix),
                        ts_unix_ms: crate::bridge::now_unix_ms(),
                        shard: shard as u16,
                        model_requested: "m".into(),
                        provider: Some("mock".into()),
                        status: 200,
                        upstream_us: 1000 + i % 100,
                        ..super::AuditRecord::default()
                    };
                    audit.submit(&record)?;
                    let mut o = out.lock().unwrap_or_else(|p| p.into_inner());
                    writeln!(o, "submitted {}", record.request_id)?;
                    o.flush()?;
                    drop(o);
                    if args.interval_us > 0 {
                        std::thread::sleep(Duration::from_micros(args.interval_us));
                    }
                }
                Ok(())
            }));
        }
        for h in handles {
            h.join().map_err(|_| anyhow::anyhow!("a submit thread panicked"))??;
        }
        Ok(())
    })?;
    let report = bridge.shutdown(Duration::from_millis(args.drain_ms))?;
    println!(
        "done {} entries={} checkpoints={} drained={}",
        report.chain, report.entries, report.checkpoints, report.drained
    );
    Ok(())
}

/// Verifies what `args` point at.
pub fn verify(args: &VerifyArgs) -> anyhow::Result<Summary> {
    let default_config = PathBuf::from("gatekeeper.yaml");
    let config_path = args.config.clone().or_else(|| default_config.exists().then_some(default_config));
    let config = match &config_path {
        Some(p) => Some(Config::load(p).with_context(|| format!("config {}", p.display()))?),
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
        return verify_nats(&url, &stream, keys);
    }
    let dir = args
        .dir
        .clone()
        .or_else(|| config.as_ref().map(|c| c.audit.data_dir.clone()))
        .unwrap_or_else(|| PathBuf::from("./data"));
    match verify_dir(&dir, keys) {
        Ok(s) => Ok(s),
        Err(VerifyError::Failed(f)) => Err(anyhow::anyhow!("FAILED: {f}")),
        Err(e) => Err(e.into()),
    }
}

/// Verifies every chain in a JetStream audit stream.
pub fn verify_nats(url: &str, stream: &str, keys: Vec<String>) -> anyhow::Result<Summary> {
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
    Ok(audit.finish())
}
