//! Audit log and NATS bridge: chains verify, tampering is caught and named, and no
//! record is lost or stored twice across NATS outages, process kills and restarts.
//! NATS tests run real `nats-server` processes (`-js -sd <tempdir>`) on free loopback
//! ports; they are skipped, loudly, where no `nats-server` is installed.

mod embedded;
mod gateway;
mod nats;
mod submitter;
mod tamper;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gatekeeper::audit::message::Message;
use gatekeeper::audit::AuditRecord;
use gatekeeper::bridge::{Bridge, BridgeError, BridgeReport, ShardAudit};
use gatekeeper::config::hot::HotConfig;
use gatekeeper::config::Config;

pub use submitter::Submitter;

/// The `nats-server` binary, if installed.
pub fn nats_server_bin() -> Option<PathBuf> {
    for p in ["/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"] {
        if Path::new(p).exists() {
            return Some(PathBuf::from(p));
        }
    }
    None
}

/// Skips the calling test when there is no `nats-server`.
macro_rules! need_nats {
    () => {
        if $crate::audit::nats_server_bin().is_none() {
            // CI installs nats-server (scripts/test-all): there, a missing one is a failure.
            assert!(std::env::var_os("CI").is_none(), "nats-server is not installed");
            eprintln!("SKIPPED: nats-server is not installed");
            return;
        }
    };
}
pub(crate) use need_nats;

/// A free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// A `nats-server` with JetStream, restartable on the same port and store dir.
pub struct NatsServer {
    child: Option<Child>,
    /// Client port.
    pub port: u16,
    args: Vec<String>,
    /// Store dir (kept across restarts).
    pub dir: tempfile::TempDir,
}

impl NatsServer {
    /// A single server.
    pub fn start() -> NatsServer {
        NatsServer::start_with(Vec::new())
    }

    /// A server with extra arguments (cluster flags).
    pub fn start_with(extra: Vec<String>) -> NatsServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let mut args = vec!["-js".to_string(), "-a".into(), "127.0.0.1".into(), "-p".into(), port.to_string()];
        args.push("-sd".into());
        args.push(dir.path().display().to_string());
        args.extend(extra);
        let mut s = NatsServer { child: None, port, args, dir };
        s.restart();
        s
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and store; waits until it accepts connections.
    pub fn restart(&mut self) {
        self.kill();
        let log = std::fs::File::create(self.dir.path().join(format!("server-{}.log", self.port))).expect("log");
        let child = Command::new(nats_server_bin().expect("nats-server"))
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn nats-server");
        self.child = Some(child);
        let addr: SocketAddr = format!("127.0.0.1:{}", self.port).parse().expect("addr");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start on {addr}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A config with an audit section in `data_dir` and the given extra YAML.
pub fn config(data_dir: &Path, audit_extra: &str, nats: Option<&str>) -> Config {
    let base = if audit_extra.contains("checkpoint_every") {
        ""
    } else {
        ", checkpoint_every: 100, checkpoint_interval_ms: 200"
    };
    let mut yaml =
        format!("audit: {{ data_dir: \"{}\", node_name: gw-test{base}{audit_extra} }}\n", data_dir.display());
    if let Some(n) = nats {
        yaml.push_str(&format!("nats: {{ {n} }}\n"));
    }
    Config::parse(&yaml).unwrap_or_else(|e| panic!("test config: {e}\n{yaml}"))
}

/// Starts a bridge for `shards` shards on `c`, with a hot configuration of its own.
///
/// The data-dir lock is an `flock` on an open file description, and a process that
/// another test forks in this process shares that description until its `exec`
/// closes it (`O_CLOEXEC`). A bridge restarted on the same dir right after a stop
/// can therefore see the previous start's lock for a moment: a lock refusal is
/// retried for up to 5 s (a real second writer holds it for good, and is still
/// refused after that).
pub fn start_bridge(c: &Config, shards: usize) -> Result<Bridge, BridgeError> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match Bridge::start(c, shards, Arc::new(HotConfig::from_config(c))) {
            Err(BridgeError::Audit(gatekeeper::audit::AuditError::Locked { .. })) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            other => return other,
        }
    }
}

/// Shard `shard`'s audit handle (audit is on in these tests).
pub fn shard_audit(bridge: &Bridge, shard: usize) -> ShardAudit {
    bridge.shard(shard).expect("shard audit").expect("audit is on")
}

/// Stops `bridge`, letting it drain for at most `timeout`; what audit shipping did.
pub fn stop_bridge(bridge: &Bridge, timeout: Duration) -> BridgeReport {
    bridge.shutdown(timeout).expect("shutdown").expect("audit is on: a report")
}

/// A synthetic record.
pub fn record(id: &str, shard: u16) -> AuditRecord {
    AuditRecord {
        request_id: id.to_string(),
        ts_unix_ms: 1_700_000_000_000,
        shard,
        model_requested: "m".into(),
        provider: Some("mock".into()),
        status: 200,
        tokens_in: 5,
        tokens_out: 7,
        upstream_us: 1200,
        ..AuditRecord::default()
    }
}

/// Submits `per_shard` records from each of `shards` threads through `bridge`;
/// returns every request id submitted.
pub fn submit_all(bridge: &Bridge, shards: usize, per_shard: usize, prefix: &str) -> Vec<String> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..shards)
            .map(|s| {
                let audit = shard_audit(bridge, s);
                scope.spawn(move || {
                    (0..per_shard)
                        .map(|i| {
                            let id = format!("{prefix}-{s}-{i}");
                            audit.submit(&record(&id, s as u16)).expect("submit");
                            id
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("submit thread")).collect()
    })
}

/// Stored messages of a data dir's chain files, in file order, as (location, bytes).
pub fn file_messages(data_dir: &Path) -> Vec<(PathBuf, Vec<Vec<u8>>)> {
    gatekeeper::audit::verify::chain_files(data_dir)
        .expect("chain files")
        .into_iter()
        .map(|p| {
            let text = std::fs::read(&p).expect("read chain file");
            let lines = text.split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(<[u8]>::to_vec).collect();
            (p, lines)
        })
        .collect()
}

/// Request ids of every entry in `messages`, in order.
pub fn request_ids<'a>(messages: impl IntoIterator<Item = &'a Vec<u8>>) -> Vec<String> {
    let mut out = Vec::new();
    for m in messages {
        let msg: Message = serde_json::from_slice(m).expect("message");
        for e in &msg.entries {
            let v: serde_json::Value = serde_json::from_str(e.get()).expect("entry");
            out.push(v["record"]["request_id"].as_str().expect("request_id").to_string());
        }
    }
    out
}

/// Asserts every id in `submitted` appears exactly once in `stored`.
pub fn assert_exactly_once(submitted: &[String], stored: &[String]) {
    let mut counts: HashMap<&str, u32> = HashMap::new();
    for id in stored {
        *counts.entry(id.as_str()).or_default() += 1;
    }
    let dups: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).map(|(id, n)| format!("{id}×{n}")).take(10).collect();
    assert!(dups.is_empty(), "stored more than once: {dups:?}");
    let missing: Vec<_> = submitted.iter().filter(|id| !counts.contains_key(id.as_str())).take(10).collect();
    assert!(
        missing.is_empty(),
        "submitted but not stored ({} of {}): {missing:?}",
        submitted.iter().filter(|id| !counts.contains_key(id.as_str())).count(),
        submitted.len()
    );
}

/// Writes a config file for the submit helper.
pub fn write_config(dir: &Path, yaml_audit_extra: &str, nats: Option<&str>, data_dir: &Path) -> PathBuf {
    let mut yaml = format!(
        "audit: {{ data_dir: \"{}\", node_name: gw-test, checkpoint_every: 100, checkpoint_interval_ms: 200{yaml_audit_extra} }}\n",
        data_dir.display()
    );
    if let Some(n) = nats {
        yaml.push_str(&format!("nats: {{ {n} }}\n"));
    }
    let path = dir.join("gatekeeper.yaml");
    std::fs::write(&path, yaml).expect("write config");
    path
}

/// Runs `gatekeeper audit verify` with `args`; returns (exit ok, stdout+stderr).
pub fn verify_cli(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gatekeeper"))
        .args(["audit", "verify"])
        .args(args)
        .env("GATEKEEPER_LOG", "warn")
        .output()
        .expect("run gatekeeper audit verify");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}
