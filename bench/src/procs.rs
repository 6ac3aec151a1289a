//! Child processes: started in their own process group, waited for with a bound, and
//! all stopped when the [`Supervisor`] drops — on success, on error, and after Ctrl-C.
//!
//! Each child gets its own process group so that a peer which forks (LiteLLM's workers,
//! nginx's workers) is stopped whole, and so that Ctrl-C reaches only `gk-bench`, which
//! then stops everything in order instead of leaving half of it running.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crate::error::BenchError;

/// How often waits look at their condition again.
const POLL: Duration = Duration::from_millis(50);
/// How long a stopped child may take to exit after SIGTERM before it gets SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// The most of an HTTP answer a probe reads, bytes.
const PROBE_BYTES_MAX: u64 = 1 << 20;
/// How much of a log's end goes into an error message, bytes.
const LOG_TAIL_BYTES: u64 = 2048;

/// Sets a flag on SIGINT/SIGTERM; a second signal while the flag is set exits at once.
pub fn interrupt_flag() -> Result<Arc<AtomicBool>, BenchError> {
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // Registered first so that it sees the flag before the second handler sets it.
        signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&flag))
            .map_err(BenchError::io("installing a signal handler"))?;
        signal_hook::flag::register(signal, Arc::clone(&flag))
            .map_err(BenchError::io("installing a signal handler"))?;
    }
    Ok(flag)
}

struct Managed {
    name: String,
    child: Child,
    log: PathBuf,
}

/// Owns every long-running child of a comparison and stops them all on drop.
pub struct Supervisor {
    children: Vec<Managed>,
    interrupted: Arc<AtomicBool>,
}

impl Supervisor {
    /// A supervisor that gives up its waits when `interrupted` is set.
    pub fn new(interrupted: Arc<AtomicBool>) -> Supervisor {
        Supervisor { children: Vec::new(), interrupted }
    }

    /// Starts `cmd` with stdout and stderr to `log`; returns its pid.
    pub fn spawn(&mut self, name: &str, mut cmd: Command, log: &Path) -> Result<u32, BenchError> {
        let out = File::create(log).map_err(BenchError::io(format!("creating {}", log.display())))?;
        let err = out.try_clone().map_err(BenchError::io("duplicating a log handle"))?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err).process_group(0);
        let child = cmd.spawn().map_err(BenchError::io(format!("starting {name} ({:?})", cmd.get_program())))?;
        let pid = child.id();
        self.children.push(Managed { name: name.to_string(), child, log: log.to_path_buf() });
        Ok(pid)
    }

    /// Starts one of our binaries, which prints `listening on ADDR` once bound, and
    /// returns its pid and that address; waits at most `wait`.
    pub fn spawn_listening(
        &mut self,
        name: &str,
        mut cmd: Command,
        log: &Path,
        wait: Duration,
    ) -> Result<(u32, SocketAddr), BenchError> {
        let mut out = File::create(log).map_err(BenchError::io(format!("creating {}", log.display())))?;
        let err = out.try_clone().map_err(BenchError::io("duplicating a log handle"))?;
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(err).process_group(0);
        let mut child = cmd.spawn().map_err(BenchError::io(format!("starting {name} ({:?})", cmd.get_program())))?;
        let pid = child.id();
        let stdout = child.stdout.take();
        self.children.push(Managed { name: name.to_string(), child, log: log.to_path_buf() });
        let (tx, rx) = mpsc::sync_channel::<SocketAddr>(1);
        if let Some(stdout) = stdout {
            // Copies stdout to the log and reports the first address; ends when the child
            // closes its stdout, i.e. when it exits.
            std::thread::spawn(move || {
                let mut sent = false;
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let _ = writeln!(out, "{line}");
                    if !sent {
                        if let Some(addr) = listening_addr(&line) {
                            sent = tx.send(addr).is_ok();
                        }
                    }
                }
            });
        }
        let start = Instant::now();
        loop {
            match rx.recv_timeout(POLL) {
                Ok(addr) => return Ok((pid, addr)),
                Err(mpsc::RecvTimeoutError::Disconnected) => return Err(self.exited_or_not_ready(pid, name, start)),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            self.check_interrupt()?;
            self.check_alive(pid)?;
            if start.elapsed() >= wait {
                return Err(self.exited_or_not_ready(pid, name, start));
            }
        }
    }

    fn exited_or_not_ready(&mut self, pid: u32, name: &str, start: Instant) -> BenchError {
        if let Err(e) = self.check_alive(pid) {
            return e;
        }
        let log = self.children.iter().find(|m| m.child.id() == pid).map(|m| m.log.clone());
        BenchError::NotReady {
            what: name.to_string(),
            waited_ms: start.elapsed().as_millis() as u64,
            detail: log.map_or_else(String::new, |l| log_tail_detail(&l)),
        }
    }

    /// Errors when the child `pid` has exited.
    pub fn check_alive(&mut self, pid: u32) -> Result<(), BenchError> {
        let Some(m) = self.children.iter_mut().find(|m| m.child.id() == pid) else {
            return Ok(());
        };
        match m.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(BenchError::Failed {
                what: m.name.clone(),
                status: format!("exited early: {status}"),
                detail: log_tail_detail(&m.log),
            }),
            Err(e) => Err(BenchError::Io { what: format!("checking {}", m.name), source: e }),
        }
    }

    /// Errors with [`BenchError::Interrupted`] once a signal arrived.
    pub fn check_interrupt(&self) -> Result<(), BenchError> {
        if self.interrupted.load(Ordering::Relaxed) {
            return Err(BenchError::Interrupted);
        }
        Ok(())
    }

    /// Polls `http://addr/path` until it answers any HTTP status below 500 (or `accept`
    /// says yes), the child `pid` exits, or `wait` passes.
    pub fn wait_http(
        &mut self,
        name: &str,
        pid: u32,
        addr: SocketAddr,
        path: &str,
        wait: Duration,
    ) -> Result<(), BenchError> {
        let start = Instant::now();
        loop {
            if let Ok((status, _)) = http_request(addr, "GET", path, &[], b"", Duration::from_secs(2)) {
                if status < 500 {
                    return Ok(());
                }
            }
            self.check_interrupt()?;
            self.check_alive(pid)?;
            if start.elapsed() >= wait {
                return Err(self.exited_or_not_ready(pid, name, start));
            }
            std::thread::sleep(POLL * 4);
        }
    }

    /// Runs `cmd` to its end (a `gk-load run`), output to `log`; kills it when it runs
    /// past `limit` or a signal arrives.
    pub fn run_to_end(&self, name: &str, mut cmd: Command, log: &Path, limit: Duration) -> Result<(), BenchError> {
        let status = run_logged(name, &mut cmd, log, limit, Some(&self.interrupted))?;
        check_status(name, status, log)
    }

    /// Stops every child, newest first.
    pub fn stop_all(&mut self) {
        while let Some(mut m) = self.children.pop() {
            stop(&mut m.child);
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// Runs `cmd` to its end with output captured, for short helper commands (`nginx -v`,
/// `gk-load plot`); kills it after `limit`. Returns stdout and stderr together.
pub fn output_within(cmd: &mut Command, limit: Duration) -> Result<(ExitStatus, String), BenchError> {
    let name = format!("{:?}", cmd.get_program());
    let path = std::env::temp_dir().join(format!("gk-bench-{}-{}", std::process::id(), unique()));
    let result = run_logged(&name, cmd, &path, limit, None);
    let mut text = String::new();
    if let Ok(f) = File::open(&path) {
        let _ = f.take(PROBE_BYTES_MAX).read_to_string(&mut text);
    }
    let _ = std::fs::remove_file(&path);
    Ok((result?, text))
}

/// Runs `cmd` with stdout and stderr to `log` in its own process group, and waits for it:
/// stopped after `limit`, or when `interrupted` is set.
fn run_logged(
    name: &str,
    cmd: &mut Command,
    log: &Path,
    limit: Duration,
    interrupted: Option<&AtomicBool>,
) -> Result<ExitStatus, BenchError> {
    let out = File::create(log).map_err(BenchError::io(format!("creating {}", log.display())))?;
    let err = out.try_clone().map_err(BenchError::io("duplicating a log handle"))?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err).process_group(0);
    let mut child = cmd.spawn().map_err(BenchError::io(format!("starting {name}")))?;
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().map_err(BenchError::io(format!("waiting for {name}")))? {
            return Ok(status);
        }
        if interrupted.is_some_and(|i| i.load(Ordering::Relaxed)) {
            stop(&mut child);
            return Err(BenchError::Interrupted);
        }
        if start.elapsed() >= limit {
            stop(&mut child);
            return Err(BenchError::Timeout { what: name.to_string(), limit_s: limit.as_secs() });
        }
        std::thread::sleep(POLL);
    }
}

fn unique() -> u64 {
    use std::sync::atomic::AtomicU64;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn check_status(name: &str, status: ExitStatus, log: &Path) -> Result<(), BenchError> {
    if status.success() {
        return Ok(());
    }
    Err(BenchError::Failed { what: name.to_string(), status: status.to_string(), detail: log_tail_detail(log) })
}

/// SIGTERM to the child's process group, SIGKILL after [`STOP_GRACE`], then reaps it.
fn stop(child: &mut Child) {
    let pid = child.id();
    if matches!(child.try_wait(), Ok(None)) {
        signal_group(pid, "TERM");
        let start = Instant::now();
        while start.elapsed() < STOP_GRACE {
            if !matches!(child.try_wait(), Ok(None)) {
                break;
            }
            std::thread::sleep(POLL);
        }
    }
    // Whatever the leader did, members of its group (workers) may still run.
    signal_group(pid, "KILL");
    let _ = child.kill();
    let _ = child.wait();
}

/// Sends a signal to process group `pgid` through kill(1), which keeps this crate free of
/// `unsafe`; a group that is already gone is not an error.
fn signal_group(pgid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args(["-s", signal, "--", &format!("-{pgid}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The address in a `listening on ADDR` line (`gk-load mock`, `gatekeeper serve`).
pub fn listening_addr(line: &str) -> Option<SocketAddr> {
    let (_, rest) = line.split_once("listening on ")?;
    rest.split_whitespace().next()?.parse().ok()
}

/// `": <last lines of the log>"`, or empty when it cannot be read.
pub fn log_tail_detail(log: &Path) -> String {
    let Ok(mut f) = File::open(log) else {
        return String::new();
    };
    let len = f.metadata().map_or(0, |m| m.len());
    let mut buf = Vec::new();
    use std::io::Seek as _;
    let _ = f.seek(std::io::SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)));
    let _ = f.take(LOG_TAIL_BYTES).read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).trim().to_string();
    if text.is_empty() {
        format!(" (log {} is empty)", log.display())
    } else {
        format!("; end of {}:\n{text}", log.display())
    }
}

/// A loopback port that was free a moment ago, for peers that cannot report the port
/// they bound. Another process could take it before the peer binds; the peer then fails
/// to start and the error says so.
pub fn free_port() -> Result<u16, BenchError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(BenchError::io("finding a free port"))?;
    Ok(l.local_addr().map_err(BenchError::io("finding a free port"))?.port())
}

/// One HTTP/1.1 request with `Connection: close`; returns the status and the whole
/// answer (head and body, at most 1 MiB). Every step is bounded by `timeout`.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[String],
    body: &[u8],
    timeout: Duration,
) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if !body.is_empty() {
        head.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
    }
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut answer = Vec::new();
    let deadline = Instant::now() + timeout;
    let mut reader = s.take(PROBE_BYTES_MAX);
    let mut buf = [0u8; 8192];
    while Instant::now() < deadline {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let status = parse_status(&answer)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "no HTTP status line in the answer"))?;
    Ok((status, answer))
}

fn parse_status(answer: &[u8]) -> Option<u16> {
    let line = answer.split(|b| *b == b'\n').next()?;
    let text = std::str::from_utf8(line).ok()?;
    let mut parts = text.split_whitespace();
    parts.next().filter(|v| v.starts_with("HTTP/"))?;
    parts.next()?.parse().ok()
}
