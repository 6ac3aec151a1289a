//! Starts the real `gatekeeper` binary on a free port in a temp dir, learns its
//! address from what it prints, and kills it on drop; mock providers run in this
//! process (`gatekeeper-mock`), each on its own thread, and stop on drop.
//! A small blocking HTTP/1.1 client reads responses byte-exactly so tests can
//! check framing, not just content.

#![allow(dead_code)]

pub mod hostile;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use gatekeeper_mock::{MockServer, StatsSnapshot};
use gatekeeper_net::chunked::{ChunkedDecoder, Decoded};

pub use gatekeeper_mock::{Fault, MockConfig};

/// The `gatekeeper` binary under test.
pub fn gatekeeper_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_gatekeeper"))
}

/// A child process killed on drop, whose stderr goes to a log file shown on failure.
pub struct Proc {
    child: Child,
    log: PathBuf,
    name: String,
    /// Addresses of the `listening on` lines printed after the first.
    listening: std::sync::mpsc::Receiver<String>,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> (Proc, SocketAddr) {
        let log_file = std::fs::File::create(&log).expect("log file");
        cmd.stdout(Stdio::piped()).stderr(log_file).stdin(Stdio::null());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            loop {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if let Some(rest) = line.split("listening on ").nth(1) {
                            let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                            let _ = tx.send(addr);
                        }
                    }
                }
            }
        });
        let mut proc = Proc { child, log, name: name.to_string(), listening: rx };
        let addr = match proc.listening.recv_timeout(Duration::from_secs(60)) {
            Ok(a) => a.parse().unwrap_or_else(|_| panic!("{name} printed a bad address: {a}")),
            Err(_) => {
                let status = proc.child.try_wait();
                panic!("{name} did not start ({status:?}); log:\n{}", proc.log_text());
            }
        };
        (proc, addr)
    }

    /// The address of the next `listening on` line (after the first), waiting at most `limit`.
    pub fn next_listening(&self, limit: Duration) -> Option<SocketAddr> {
        self.listening.recv_timeout(limit).ok().and_then(|a| a.parse().ok())
    }

    /// The process id, to read its `/proc` entries.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the process wrote to stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `signal` (`HUP`, `TERM`, …).
    pub fn signal(&self, signal: &str) {
        unsafe_free_kill(self.child.id(), signal);
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        unsafe_free_kill(self.child.id(), "TERM");
    }

    /// Waits for the process to exit, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

fn unsafe_free_kill(pid: u32, signal: &str) {
    let _ = Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status();
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- {} log ---\n{}", self.name, self.log_text());
        }
    }
}

/// A running in-process mock provider.
pub struct Mock {
    /// Where it listens.
    pub addr: SocketAddr,
    server: MockServer,
}

impl Mock {
    /// Mock settings named `name` (matched by `X-Mock-*: NAME=VALUE` headers), on a
    /// free loopback port; the rest are the `gk-load mock` defaults.
    pub fn config(name: &str) -> MockConfig {
        MockConfig::new(SocketAddr::from(([127, 0, 0, 1], 0))).name(name)
    }

    /// Starts a mock with `config`.
    pub fn start(config: MockConfig) -> Mock {
        let server = config.build().expect("valid mock settings").start().expect("start mock");
        Mock { addr: server.addr(), server }
    }

    /// Its counters, the same as `GET /__mock/stats`.
    pub fn stats(&self) -> StatsSnapshot {
        self.server.stats()
    }

    /// Chat requests the mock has received.
    pub fn requests(&self) -> u64 {
        self.stats().requests
    }
}

/// A running `gatekeeper serve`.
pub struct Gateway {
    /// The process.
    pub proc: Proc,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its temp dir (config, data).
    pub dir: tempfile::TempDir,
}

impl Gateway {
    /// Starts the gateway on `config_yaml` with extra flags (a free port is chosen).
    pub fn start(config_yaml: &str, args: &[&str]) -> Gateway {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("gatekeeper.yaml");
        std::fs::write(&config, config_yaml).expect("write config");
        let mut cmd = Command::new(gatekeeper_bin());
        cmd.arg("serve").arg("--config").arg(&config).args(["--listen", "127.0.0.1:0"]).args(args);
        cmd.env("GATEKEEPER_LOG", "info,gatekeeper=debug");
        cmd.current_dir(dir.path());
        let (proc, addr) = Proc::spawn("gatekeeper", cmd, dir.path().join("gatekeeper.log"));
        Gateway { proc, addr, dir }
    }

    /// Runs `gatekeeper serve` expecting it to fail at start; returns its stderr.
    pub fn start_failure(config_yaml: &str, args: &[&str]) -> String {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("gatekeeper.yaml");
        std::fs::write(&config, config_yaml).expect("write config");
        let out = Command::new(gatekeeper_bin())
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run gatekeeper");
        assert!(!out.status.success(), "gatekeeper started on a config it should refuse");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

/// A provider block for a config. The mock's `X-Mock-*` control headers are
/// forwarded (besides the defaults), so tests choose faults per request.
pub fn provider(name: &str, mock: &Mock, extra: &str) -> String {
    format!(
        "  - {{ name: {name}, kind: openai_compatible, base_url: \"http://{}/v1\", api_key: sk-{name}, forward_headers: [user-agent, \"x-mock-*\"]{extra} }}\n",
        mock.addr
    )
}

/// A config with the given providers serving model `m` in the order given.
pub fn config_for(providers: &[(&str, &Mock, &str)], top: &str) -> String {
    let mut c = String::from(top);
    c.push_str("providers:\n");
    for (name, mock, extra) in providers {
        c.push_str(&provider(name, mock, extra));
    }
    c.push_str("models:\n");
    for (name, _, _) in providers {
        c.push_str(&format!("  - {{ name: m, provider: {name}, upstream_model: up-{name} }}\n"));
    }
    c.push_str("failover_chain:\n");
    for (i, (name, _, _)) in providers.iter().enumerate() {
        c.push_str(&format!("  - {{ provider: {name}, priority: {} }}\n", i + 1));
    }
    c
}

/// A parsed response.
#[derive(Debug)]
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Body, de-chunked.
    pub body: Vec<u8>,
    /// Whether the body was chunked and ended with the terminating chunk.
    pub chunked_complete: Option<bool>,
}

impl Resp {
    /// First value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Connects with a read timeout so a stuck server fails the test instead of hanging it.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    s.set_nodelay(true).expect("nodelay");
    s
}

/// Sends raw bytes on a new connection and reads one response.
pub fn request(addr: SocketAddr, raw: &[u8]) -> Resp {
    let mut s = connect(addr);
    s.write_all(raw).expect("write");
    let mut reader = Reader::new(s);
    reader.response().expect("a response")
}

/// A chat-completions request as raw bytes.
pub fn chat_request(body: &str, extra_headers: &str) -> Vec<u8> {
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra_headers}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A small valid chat body.
pub fn chat_body(model: &str, stream: bool) -> String {
    format!(
        r#"{{"model":"{model}","stream":{stream},"messages":[{{"role":"user","content":"Say hello to the gateway"}}]}}"#
    )
}

/// Posts a chat completion on a new connection.
pub fn chat(addr: SocketAddr, model: &str, stream: bool, extra_headers: &str) -> Resp {
    request(addr, &chat_request(&chat_body(model, stream), extra_headers))
}

/// Reads responses off one connection, keeping what is buffered between them.
pub struct Reader {
    /// The connection.
    pub stream: TcpStream,
    buf: BytesMut,
}

/// Events of a streamed body with the time each piece arrived.
pub struct Timed {
    /// (arrival, bytes) per read.
    pub pieces: Vec<(Instant, Vec<u8>)>,
}

impl Reader {
    /// Wraps a connection.
    pub fn new(stream: TcpStream) -> Reader {
        Reader { stream, buf: BytesMut::new() }
    }

    fn fill(&mut self) -> std::io::Result<usize> {
        let mut tmp = [0u8; 16384];
        let n = self.stream.read(&mut tmp)?;
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(n)
    }

    /// Reads one whole response.
    pub fn response(&mut self) -> std::io::Result<Resp> {
        self.response_timed(None)
    }

    /// Reads one response, noting when each body piece arrived.
    pub fn response_timed(&mut self, mut timed: Option<&mut Timed>) -> std::io::Result<Resp> {
        let (status, headers) = loop {
            let mut hs = [httparse::EMPTY_HEADER; 64];
            let mut r = httparse::Response::new(&mut hs);
            match r.parse(&self.buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let status = r.code.unwrap_or(0);
                    let headers: Vec<(String, String)> = r
                        .headers
                        .iter()
                        .map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).into_owned()))
                        .collect();
                    let _ = self.buf.split_to(n);
                    if status == 100 {
                        continue;
                    }
                    break (status, headers);
                }
                Ok(httparse::Status::Partial) => {
                    if self.fill()? == 0 {
                        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed before head"));
                    }
                }
                Err(e) => return Err(std::io::Error::other(format!("bad response head: {e}"))),
            }
        };
        let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let mut body = Vec::new();
        let mut chunked_complete = None;
        if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            let mut dec = ChunkedDecoder::new(u64::MAX >> 4);
            let mut complete = false;
            loop {
                match dec.decode(&mut self.buf) {
                    Ok(Decoded::Data(d)) => {
                        if let Some(t) = timed.as_deref_mut() {
                            t.pieces.push((Instant::now(), d.to_vec()));
                        }
                        body.extend_from_slice(&d);
                    }
                    Ok(Decoded::End) => {
                        complete = true;
                        break;
                    }
                    Ok(Decoded::NeedMore) => match self.fill() {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    },
                    Err(e) => return Err(std::io::Error::other(format!("bad chunked body: {e}"))),
                }
            }
            chunked_complete = Some(complete);
        } else if let Some(len) = get("content-length") {
            let len: usize = len.trim().parse().map_err(|_| std::io::Error::other("bad content-length"))?;
            while self.buf.len() < len {
                if self.fill()? == 0 {
                    return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed mid-body"));
                }
            }
            body = self.buf.split_to(len).to_vec();
        } else {
            loop {
                match self.fill() {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            body = self.buf.split().to_vec();
        }
        Ok(Resp { status, headers, body, chunked_complete })
    }

    /// True when the server has closed the connection (reads EOF within `limit`).
    pub fn closed_within(&mut self, limit: Duration) -> bool {
        let _ = self.stream.set_read_timeout(Some(limit));
        let mut tmp = [0u8; 1024];
        loop {
            match self.stream.read(&mut tmp) {
                Ok(0) => return true,
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }
}

/// SSE `data:` payloads of a streamed body.
pub fn sse_data(body: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(body)
        .split("\n\n")
        .filter_map(|ev| ev.lines().find_map(|l| l.strip_prefix("data: ").map(str::to_string)))
        .collect()
}

/// A Python interpreter with the official `openai` package: `GK_PYTHON` if set,
/// else a venv under the target dir, created (and `openai` installed) on first use.
pub fn python_with_openai() -> PathBuf {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        if let Some(p) = std::env::var_os("GK_PYTHON") {
            return PathBuf::from(p);
        }
        let target = gatekeeper_bin().parent().and_then(Path::parent).map(Path::to_path_buf).unwrap_or_default();
        let venv = target.join("gk-venv");
        let python = venv.join("bin").join("python");
        let has_openai = |py: &Path| {
            Command::new(py).args(["-c", "import openai"]).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
        };
        if !has_openai(&python) {
            let ok = Command::new("python3").arg("-m").arg("venv").arg(&venv).status().is_ok_and(|s| s.success());
            assert!(ok, "python3 -m venv failed (install python3-venv)");
            let ok = Command::new(&python)
                .args(["-m", "pip", "install", "-q", "--disable-pip-version-check", "openai>=1.40,<3"])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "pip install openai failed");
        }
        python
    })
    .clone()
}

/// Runs `tests/sdk/openai_e2e.py` against a gateway; panics with its output on failure.
pub fn run_openai_sdk(addr: SocketAddr, good_key: &str, bad_key: Option<&str>) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/openai_e2e.py");
    let mut cmd = Command::new(python_with_openai());
    cmd.arg(script).arg(format!("http://{addr}/v1")).arg(good_key);
    if let Some(b) = bad_key {
        cmd.arg(b);
    }
    let out = cmd.output().expect("run python");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "openai SDK run failed:\n{text}");
    assert!(text.contains("openai-sdk-e2e: ok"), "{text}");
}

/// A self-signed certificate for `localhost` written into `dir`: the config's `tls:`
/// line naming it, and the certificate (for the client's roots).
pub fn self_signed_tls(dir: &Path) -> (String, rcgen::CertifiedKey) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_file, certified.cert.pem()).expect("write cert");
    std::fs::write(&key_file, certified.key_pair.serialize_pem()).expect("write key");
    let line = format!("tls: {{ cert_file: \"{}\", key_file: \"{}\" }}\n", cert_file.display(), key_file.display());
    (line, certified)
}

/// Steady background load: `connections` keep-alive clients each sending `raw` (a whole
/// HTTP request) back to back until [`Load::stop`], counting 200s and everything else.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    counts: std::sync::Arc<[std::sync::atomic::AtomicU64; 2]>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    /// Starts the clients.
    pub fn start(addr: SocketAddr, connections: usize, raw: Vec<u8>) -> Load {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let counts = std::sync::Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
        let raw = std::sync::Arc::new(raw);
        let threads = (0..connections)
            .map(|_| {
                let (stop, counts, raw) = (stop.clone(), counts.clone(), raw.clone());
                std::thread::spawn(move || {
                    let mut reader = Reader::new(connect(addr));
                    while !stop.load(Ordering::Relaxed) {
                        reader.stream.write_all(&raw).expect("write");
                        let ok = matches!(reader.response(), Ok(r) if r.status == 200);
                        counts[usize::from(!ok)].fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        Load { stop, counts, threads }
    }

    /// Stops the clients; (answers that were 200, the others).
    pub fn stop(self) -> (u64, u64) {
        use std::sync::atomic::Ordering;
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("load thread");
        }
        (self.counts[0].load(Ordering::Relaxed), self.counts[1].load(Ordering::Relaxed))
    }
}
