//! A separate process that writes audit records through the real bridge, so a test
//! can SIGKILL it mid-run and check that a restart ships everything once.
//!
//! The process is this test binary run again with only [`submitter_process`]
//! selected and its settings in [`SETTINGS_ENV`]: always the code under test, built
//! by the same `cargo test`, and no helper in the production CLI. It reports
//! `submitted <request_id>` on stderr once each `submit` returned, then drains and
//! reports `done <chain> entries=… checkpoints=… drained=…`.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use gatekeeper::audit::AuditRecord;
use gatekeeper::config::Config;

use super::{shard_audit, start_bridge};

/// Environment variable carrying a child's [`Settings`] as JSON.
const SETTINGS_ENV: &str = "GK_TEST_AUDIT_SUBMITTER";
/// The child's entry, as libtest names it.
const ENTRY: &str = "audit::submitter::submitter_process";

/// What a submitter process does.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Settings {
    /// Gateway config (its `audit` and `nats` sections are used).
    config: PathBuf,
    /// Shards (one thread each).
    shards: usize,
    /// Records per shard.
    records: u64,
    /// Request id prefix: ids are `<prefix>-<shard>-<i>`.
    prefix: String,
    /// Pause between records of one shard, µs.
    interval_us: u64,
    /// How long the final drain may wait for the store, ms.
    drain_ms: u64,
}

/// Not only a test: the entry of a submitter process when [`SETTINGS_ENV`] is set.
/// Run by `cargo test`, it submits a few records into a temp data dir the same way
/// and checks what it reports.
#[test]
fn submitter_process() {
    if let Ok(json) = std::env::var(SETTINGS_ENV) {
        let settings: Settings = serde_json::from_str(&json).expect("submitter settings");
        submit(&settings, Box::new(std::io::stderr()));
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let config = super::write_config(dir.path(), "", None, &dir.path().join("data"));
    let settings = Settings { config, shards: 2, records: 20, prefix: "self".into(), interval_us: 0, drain_ms: 10_000 };
    let out = SharedBuf::default();
    submit(&settings, Box::new(out.clone()));
    let text = String::from_utf8(out.0.lock().expect("buffer").clone()).expect("utf-8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.iter().filter(|l| l.starts_with("submitted self-")).count(), 40, "{text}");
    let done = lines.last().copied().unwrap_or_default();
    assert!(
        done.starts_with("done gw-test/") && done.contains(" entries=40 ") && done.ends_with(" drained=true"),
        "{done}"
    );
}

/// An in-memory output the self-test reads back.
#[derive(Clone, Default)]
struct SharedBuf(std::sync::Arc<Mutex<Vec<u8>>>);

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("buffer").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs the bridge on `settings.config` and submits from one thread per shard,
/// reporting to `out`.
fn submit(settings: &Settings, out: Box<dyn Write + Send>) {
    let config = Config::load(&settings.config).expect("submitter config");
    let bridge = start_bridge(&config, settings.shards).expect("bridge");
    let out = Mutex::new(out);
    // One write per line: a kill never leaves half an id for the parent to read.
    let say = |line: String| {
        let mut o = out.lock().unwrap_or_else(|p| p.into_inner());
        o.write_all(line.as_bytes()).and_then(|()| o.flush()).expect("report");
    };
    std::thread::scope(|scope| {
        for shard in 0..settings.shards {
            let (audit, say) = (shard_audit(&bridge, shard), &say);
            scope.spawn(move || {
                for i in 0..settings.records {
                    let record = AuditRecord {
                        request_id: format!("{}-{shard}-{i}", settings.prefix),
                        ts_unix_ms: gatekeeper::bridge::now_unix_ms(),
                        shard: shard as u16,
                        model_requested: "m".into(),
                        provider: Some("mock".into()),
                        status: 200,
                        upstream_us: 1000 + i % 100,
                        ..AuditRecord::default()
                    };
                    audit.submit(&record).expect("submit");
                    say(format!("submitted {}\n", record.request_id));
                    if settings.interval_us > 0 {
                        std::thread::sleep(Duration::from_micros(settings.interval_us));
                    }
                }
            });
        }
    });
    let r = super::stop_bridge(&bridge, Duration::from_millis(settings.drain_ms));
    say(format!("done {} entries={} checkpoints={} drained={}\n", r.chain, r.entries, r.checkpoints, r.drained));
}

/// A submitter process whose report lines are collected as they come.
pub struct Submitter {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    /// Request ids whose `submit` returned.
    pub submitted: Vec<String>,
}

impl Submitter {
    /// Starts a submitter process.
    pub fn start(config_file: &Path, shards: usize, records: u64, prefix: &str, interval_us: u64) -> Submitter {
        let settings = Settings {
            config: config_file.to_path_buf(),
            shards,
            records,
            prefix: prefix.to_string(),
            interval_us,
            drain_ms: 30_000,
        };
        let mut child = Command::new(std::env::current_exe().expect("the test binary"))
            .args([ENTRY, "--exact", "--nocapture", "--test-threads", "1"])
            .env(SETTINGS_ENV, serde_json::to_string(&settings).expect("settings JSON"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the submitter process");
        let report = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(report).lines() {
                let Ok(line) = line else { break };
                if !line.starts_with("submitted ") && !line.starts_with("done ") {
                    // Not a report (a panic message): show it with the test's output.
                    eprintln!("submitter: {line}");
                }
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Submitter { child, lines: rx, submitted: Vec::new() }
    }

    fn take(&mut self, line: String) -> bool {
        if let Some(id) = line.strip_prefix("submitted ") {
            self.submitted.push(id.to_string());
            false
        } else {
            line.starts_with("done ")
        }
    }

    /// Waits until at least `n` records were submitted.
    pub fn wait_submitted(&mut self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.submitted.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).expect("submitter output");
            self.take(line);
        }
    }

    /// SIGKILLs the process, keeping every id it reported before dying.
    pub fn kill(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(500)) {
            self.take(line);
        }
        self.submitted
    }

    /// Waits for a clean finish (`done …`) and exit 0.
    pub fn finish(mut self) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if self.take(line) {
                        break;
                    }
                }
                Err(e) => panic!("submitter ended without `done`: {e}"),
            }
        }
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "submitter exited {status}");
        self.submitted
    }
}
