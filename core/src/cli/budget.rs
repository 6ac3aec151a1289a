//! `gatekeeper budget show KEY_ID`: a key's (or tenant's) budget windows as the
//! running gateway counts them — limit, spent, reserved, requests, and each shard's
//! (and other replicas') share. It asks the gateway over HTTP
//! (`GET /v1/budgets/key/KEY_ID`), on the admin listener when `admin_listen` is set,
//! else on `listen`, the same place `/metrics` is served.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;

use crate::budget::go_duration;
use crate::budget::report::{percent_encode, SubjectReport};
use crate::config::Config;

/// Longest answer read from the gateway, bytes.
const ANSWER_BYTES_MAX: u64 = 1 << 20;

/// `gatekeeper budget …`.
#[derive(Debug, clap::Subcommand)]
pub enum BudgetCommand {
    /// A key's budget windows: limit, spent, reserved, per-shard contributions.
    Show(ShowArgs),
}

/// Flags of `gatekeeper budget show`.
#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// The key id (`jti`); with `--tenant`, the tenant's name.
    pub key_id: String,
    /// The running gateway's config file (its `admin_listen` or `listen` is asked).
    #[arg(long, default_value = "gatekeeper.yaml")]
    pub config: PathBuf,
    /// Ask this address (`host:port`) instead of the config's.
    #[arg(long)]
    pub addr: Option<SocketAddr>,
    /// Show the tenant named KEY_ID instead of a key.
    #[arg(long)]
    pub tenant: bool,
    /// Print the gateway's JSON.
    #[arg(long)]
    pub json: bool,
    /// Ask every node over NATS instead (the cluster-wide spend and each node's
    /// contribution; see `budget_nodes.rs`).
    #[arg(long, conflicts_with = "addr")]
    pub nats: Option<String>,
    /// With `--nats`: how long to wait for the nodes' answers, ms.
    #[arg(long, default_value_t = 2000)]
    pub wait_ms: u64,
}

/// Runs `gatekeeper budget`.
pub fn run(cmd: BudgetCommand) -> anyhow::Result<()> {
    match cmd {
        BudgetCommand::Show(args) => show(&args),
    }
}

fn show(args: &ShowArgs) -> anyhow::Result<()> {
    if let Some(url) = &args.nats {
        let wait = Duration::from_millis(args.wait_ms);
        return super::budget_nodes::show(url, &args.key_id, args.tenant, wait, args.json);
    }
    let addr = match args.addr {
        Some(a) => a,
        None => address_of(&args.config)?,
    };
    let kind = if args.tenant { "tenant" } else { "key" };
    let path = format!("/v1/budgets/{kind}/{}", percent_encode(&args.key_id));
    let body = get(addr, &path).with_context(|| format!("asking the gateway at {addr}"))?;
    if args.json {
        println!("{}", String::from_utf8_lossy(&body));
        return Ok(());
    }
    let report: SubjectReport = serde_json::from_slice(&body).context("the gateway's answer is not a budget report")?;
    print!("{}", render(&report));
    Ok(())
}

/// Where the config's gateway serves `/v1/budgets/`: `admin_listen`, else `listen`
/// (an unspecified address is asked on loopback).
fn address_of(config: &std::path::Path) -> anyhow::Result<SocketAddr> {
    let c = Config::load_sections(config, Some(&["listen", "admin_listen"]))
        .with_context(|| format!("config {}", config.display()))?;
    let text = c.admin_listen.clone().unwrap_or(c.listen);
    let mut addr: SocketAddr = text.parse().with_context(|| format!("not an address: {text}"))?;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    anyhow::ensure!(addr.port() != 0, "the config listens on port 0; pass the gateway's address with --addr");
    Ok(addr)
}

/// `GET path` over HTTP/1.1; the body of a 200.
fn get(addr: SocketAddr, path: &str) -> anyhow::Result<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut raw = Vec::new();
    s.take(ANSWER_BYTES_MAX).read_to_end(&mut raw)?;
    let n = raw.windows(4).position(|w| w == b"\r\n\r\n").context("incomplete answer")? + 4;
    let head = String::from_utf8_lossy(raw.get(..n).unwrap_or_default()).to_ascii_lowercase();
    let status: u16 = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).context("no status")?;
    let chunked = head.lines().any(|l| l.starts_with("transfer-encoding:") && l.contains("chunked"));
    let body = raw.get(n..).unwrap_or_default();
    let body = if chunked { dechunk(body)? } else { body.to_vec() };
    anyhow::ensure!(status == 200, "HTTP {status}: {}", String::from_utf8_lossy(&body));
    Ok(body)
}

fn dechunk(mut b: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = b.windows(2).position(|w| w == b"\r\n").context("bad chunk")?;
        let size = std::str::from_utf8(b.get(..line_end).unwrap_or_default())?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or_default().trim(), 16)?;
        b = b.get(line_end + 2..).unwrap_or_default();
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(b.get(..size).context("short chunk")?);
        b = b.get(size + 2..).unwrap_or_default();
    }
}

/// The report as a table.
pub fn render(r: &SubjectReport) -> String {
    use std::fmt::Write as _;
    let mut out = format!("{} {}", r.subject, r.name);
    out.push_str(if r.tracked { "\n" } else { " (no budgeted request since the gateway started)\n" });
    let _ = writeln!(
        out,
        "{:<7} {:>12} {:>12} {:>10} {:>9} {:>14} {:>10}",
        "window", "limit", "spent", "reserved", "requests", "spent_usd", "resets_in"
    );
    for w in &r.windows {
        let limit = w.limit_tokens.map_or_else(|| "-".to_string(), |l| l.to_string());
        let mut reset = String::new();
        go_duration(&mut reset, w.reset_s);
        let _ = writeln!(
            out,
            "{:<7} {:>12} {:>12} {:>10} {:>9} {:>14.9} {:>10}",
            w.window, limit, w.spent_tokens, w.reserved_tokens, w.requests, w.spent_usd, reset
        );
        for c in &w.columns {
            let _ =
                writeln!(out, "  {:<9} {:>23} {:>10} {:>9}", c.column, c.spent_tokens, c.reserved_tokens, c.requests);
        }
    }
    out
}
