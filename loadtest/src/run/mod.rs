//! `gk-load run`: an open-loop HTTP/1.1 load generator with honest latency accounting.
//!
//! Hand-off: [`RunArgs`] (flags) → [`Config::from_args`] (validated settings, request
//! templates from `scenario`) → [`run`], which picks the engine ([`choose_engine`]) and
//! starts one of:
//!
//! - [`uring`] (default where the kernel allows it): one io_uring loop per `--threads`
//!   thread, each with its own ring, connections and share of the schedule; see its
//!   module doc for the loop and for how it keeps latency honest while batching.
//! - tokio (fallback, `--engine tokio`):
//!   - open loop: a pacer task walks the [`schedule::Arrival`] slots (slot k due at
//!     start + offset(k), computed, never accumulated), sleeping on a timerfd
//!     ([`timer::Timer`]) and releasing every slot due within `--pace-window` of the first
//!     in one wake-up, and hands each slot to a fixed set of `--inflight-max` worker tasks
//!     through a bounded queue (no thread hop per slot). A slot that finds every
//!     worker busy waits in the queue and is counted in `waited_for_slot`; its latency is
//!     still measured from the slot, so a stalled target shows in the percentiles
//!     (no coordinated omission).
//!   - closed loop (`--connections N`): N workers, each sending its next request when the
//!     previous answer ends (latency from the actual send; shown for comparison).
//!
//!   Workers take keep-alive connections from a pool (`--connections-max` idle kept),
//!   write pre-serialized request bytes and read answers with `client`.
//!
//! Both engines frame answers with [`answer::AnswerReader`] and record into one
//! `stats::Recorder` shard per thread. A reporter task drains the shards once per second
//! into the totals, the `--hdr-log` interval log and the tty progress line. At the end
//! `report::Report` is printed (summary) and written (`--json`, `--plot`).

pub mod answer;
pub mod client;
pub mod cpu;
pub mod plot;
pub mod report;
pub mod scenario;
pub mod schedule;
pub mod stats;
pub mod timer;
pub mod uring;

use std::collections::{BTreeMap, VecDeque};
use std::io::{IsTerminal as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use clap::{ArgGroup, Args};
use rand::SeedableRng as _;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use report::{ConfigReport, Counts, CpuReport, Report, Throughput, REPORT_VERSION};
use scenario::{Mix, Target, Template};
use schedule::Arrival;
use stats::{Distribution, ErrorClass, Outcome, Recorder};

/// Most worker tasks (`--inflight-max`, `--connections`).
pub const WORKERS_MAX: usize = 100_000;
/// Most runtime threads.
pub const THREADS_MAX: usize = 256;
/// Slots queued between the pacer and the workers; when full the pacer blocks, and the
/// blocked slots are still timed from their schedule.
pub const SLOT_QUEUE_MAX: usize = 65_536;
/// Default `--pace-window`.
pub const DEFAULT_PACE_WINDOW: &str = "100us";
/// Longest `--pace-window`.
pub const PACE_WINDOW_MAX: Duration = Duration::from_millis(10);
/// Most slots one pacer wake-up waits for (bounds the look-ahead at very high rates).
pub const PACE_BATCH_MAX: u64 = 256;
/// Reporter interval: progress line and interval-log granularity.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// Flags of `gk-load run`.
#[derive(Args, Debug, Clone)]
#[command(group(ArgGroup::new("load").required(true).args(["rate", "rate_steps", "ramp", "connections"])))]
pub struct RunArgs {
    /// Target, `http://HOST[:PORT][/PATH]` (path defaults to /v1/chat/completions).
    #[arg(long)]
    pub url: String,
    /// Open loop at a constant rate, requests per second.
    #[arg(long)]
    pub rate: Option<String>,
    /// Open loop in steps, `RATE:DURATION,...` (e.g. `1000:10s,2000:10s`).
    #[arg(long)]
    pub rate_steps: Option<String>,
    /// Open loop with a linear ramp, `FROM:TO:DURATION` (e.g. `0:5000:30s`).
    #[arg(long)]
    pub ramp: Option<String>,
    /// Closed loop with N connections, each sending when its previous answer ends.
    #[arg(long)]
    pub connections: Option<usize>,
    /// Run length (e.g. `10s`, `500ms`, `2m`); steps and ramps default to their length.
    #[arg(long)]
    pub duration: Option<String>,
    /// Stop after this many requests.
    #[arg(long)]
    pub requests: Option<u64>,
    /// Idle keep-alive connections kept for reuse.
    #[arg(long, default_value_t = 1024)]
    pub connections_max: usize,
    /// Most requests in flight (open loop); beyond it slots wait, counted from their time.
    #[arg(long, default_value_t = 1024)]
    pub inflight_max: usize,
    /// Per-request timeout (connect + answer).
    #[arg(long, default_value = "30s")]
    pub timeout: String,
    /// YAML scenario: weighted request templates (see README).
    #[arg(long, conflicts_with_all = ["model", "stream", "body_file", "prompt", "max_tokens"])]
    pub scenario: Option<PathBuf>,
    /// Model of the default chat body.
    #[arg(long)]
    pub model: Option<String>,
    /// Prompt of the default chat body.
    #[arg(long)]
    pub prompt: Option<String>,
    /// max_tokens of the default chat body.
    #[arg(long)]
    pub max_tokens: Option<u32>,
    /// Ask for streamed answers (default chat body).
    #[arg(long)]
    pub stream: bool,
    /// Send this file as the body instead of the default chat body.
    #[arg(long, conflicts_with_all = ["model", "prompt", "max_tokens"])]
    pub body_file: Option<PathBuf>,
    /// Extra header `Name: value`, repeatable; applies to every template.
    #[arg(short = 'H', long = "header")]
    pub headers: Vec<String>,
    /// Bearer token for templates without a `bearer_file`.
    #[arg(long)]
    pub bearer: Option<String>,
    /// Write the JSON report here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write an HdrHistogram interval log (V2 compressed) here.
    #[arg(long)]
    pub hdr_log: Option<PathBuf>,
    /// Write an SVG latency-by-percentile plot here.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Threads: uring engine, one ring per thread (capped at the connections to share);
    /// tokio engine, runtime threads (1 = a current-thread runtime).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Also report this process's CPU per request (from /proc/PID/stat).
    #[arg(long)]
    pub target_pid: Option<u32>,
    /// Seed of the weighted template mix.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Open loop: a slot may wait up to this long for later slots so that one pacer
    /// wake-up sends them together (`0` = wake for every slot). Adds at most this much
    /// send lag, which latency (from each slot's own time) includes.
    #[arg(long, default_value = DEFAULT_PACE_WINDOW)]
    pub pace_window: String,
    /// I/O engine: `uring` (one io_uring loop per thread, cheapest per request), `tokio`
    /// (epoll), or `auto` (uring where the kernel allows it, else tokio with a note).
    #[arg(long, value_enum, default_value_t = EngineChoice::Auto)]
    pub engine: EngineChoice,
}

/// `--engine`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineChoice {
    /// io_uring where available, else tokio.
    Auto,
    /// io_uring only (fails where the kernel refuses a ring).
    Uring,
    /// tokio (epoll) only.
    Tokio,
}

/// The engine a run uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// [`uring`]: one io_uring loop per thread.
    Uring,
    /// tokio tasks over epoll.
    Tokio,
}

impl Engine {
    /// Name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Uring => "uring",
            Engine::Tokio => "tokio",
        }
    }
}

/// Resolves `--engine`: `auto` probes for io_uring and falls back to tokio with a
/// one-line note on stderr; `uring` fails where the ring is refused.
pub fn choose_engine(choice: EngineChoice) -> Result<Engine, String> {
    match choice {
        EngineChoice::Tokio => Ok(Engine::Tokio),
        EngineChoice::Uring => uring::probe().map(|_| Engine::Uring).map_err(|e| format!("--engine uring: {e}")),
        EngineChoice::Auto => match uring::probe() {
            Ok(_) => Ok(Engine::Uring),
            Err(e) => {
                eprintln!("gk-load: io_uring unavailable ({e}); using the tokio engine");
                Ok(Engine::Tokio)
            }
        },
    }
}

/// Open or closed loop.
#[derive(Clone, Debug, PartialEq)]
pub enum Load {
    /// Requests arrive on a schedule regardless of answers.
    Open(Arrival),
    /// N connections, each sending when its previous answer ends.
    Closed(usize),
}

/// Validated settings of one run.
#[derive(Debug)]
pub struct Config {
    /// Parsed target URL.
    pub url: client::Url,
    /// The URL as given.
    pub url_text: String,
    /// Load shape.
    pub load: Load,
    /// Stop after this long (since start), if set.
    pub duration: Option<Duration>,
    /// Stop after this many requests, if set.
    pub requests_max: Option<u64>,
    /// Idle keep-alive connections kept.
    pub connections_max: usize,
    /// Workers (in-flight bound).
    pub inflight_max: usize,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Request templates (at least one).
    pub templates: Vec<Template>,
    /// Weighted choice among templates.
    pub mix: Mix,
    /// Runtime threads.
    pub threads: usize,
    /// Output files.
    pub json: Option<PathBuf>,
    /// Interval log file.
    pub hdr_log: Option<PathBuf>,
    /// SVG plot file.
    pub plot: Option<PathBuf>,
    /// Target process for CPU accounting.
    pub target_pid: Option<u32>,
    /// Mix seed.
    pub seed: u64,
    /// Open loop: the pacer wakes at most once per this window.
    pub pace_window: Duration,
    /// Scenario path, for the report.
    pub scenario: Option<String>,
    /// `--engine`.
    pub engine: EngineChoice,
}

fn parse_header(h: &str) -> Result<(String, String), String> {
    let (name, value) = h.split_once(':').ok_or_else(|| format!("-H {h:?}: expected 'Name: value'"))?;
    let (name, value) = (name.trim(), value.trim());
    scenario::check_header(name, value)?;
    Ok((name.to_string(), value.to_string()))
}

impl Config {
    /// Validates flags into a config: reads the scenario, bearer and body files and
    /// pre-serializes every template. Errors name the flag or file position.
    pub fn from_args(a: &RunArgs) -> Result<Config, String> {
        let url = client::Url::parse(&a.url).map_err(|e| format!("--url: {e}"))?;
        let load = match (&a.rate, &a.rate_steps, &a.ramp, a.connections) {
            (Some(r), _, _, _) => Load::Open(Arrival::parse_constant(r).map_err(|e| format!("--rate: {e}"))?),
            (_, Some(s), _, _) => Load::Open(Arrival::parse_steps(s).map_err(|e| format!("--rate-steps: {e}"))?),
            (_, _, Some(r), _) => Load::Open(Arrival::parse_ramp(r).map_err(|e| format!("--ramp: {e}"))?),
            (_, _, _, Some(n)) if (1..=WORKERS_MAX).contains(&n) => Load::Closed(n),
            (_, _, _, Some(_)) => return Err(format!("--connections: must be 1..={WORKERS_MAX}")),
            _ => return Err("one of --rate, --rate-steps, --ramp, --connections is required".into()),
        };
        let duration =
            a.duration.as_deref().map(schedule::parse_duration).transpose().map_err(|e| format!("--duration: {e}"))?;
        let open_length = match &load {
            Load::Open(arr) => arr.length(),
            Load::Closed(_) => None,
        };
        if duration.is_none() && a.requests.is_none() && open_length.is_none() {
            return Err("give --duration or --requests".into());
        }
        if a.requests == Some(0) {
            return Err("--requests: must be > 0".into());
        }
        if !(1..=WORKERS_MAX).contains(&a.inflight_max) {
            return Err(format!("--inflight-max: must be 1..={WORKERS_MAX}"));
        }
        if a.connections_max > WORKERS_MAX {
            return Err(format!("--connections-max: at most {WORKERS_MAX}"));
        }
        if !(1..=THREADS_MAX).contains(&a.threads) {
            return Err(format!("--threads: must be 1..={THREADS_MAX}"));
        }
        let timeout = schedule::parse_duration(&a.timeout).map_err(|e| format!("--timeout: {e}"))?;
        let pace_window = match a.pace_window.trim() {
            "0" | "0s" | "0us" | "0ms" => Duration::ZERO,
            w => schedule::parse_duration(w).map_err(|e| format!("--pace-window: {e}"))?,
        };
        if pace_window > PACE_WINDOW_MAX {
            return Err(format!("--pace-window: at most {} ms", PACE_WINDOW_MAX.as_millis()));
        }
        let headers = a.headers.iter().map(|h| parse_header(h)).collect::<Result<Vec<_>, _>>()?;
        let bearer = match &a.bearer {
            Some(b) if b.bytes().all(|c| c.is_ascii_graphic()) => vec![b.as_bytes().to_vec()],
            Some(_) => return Err("--bearer: token holds non-printable bytes".into()),
            None => Vec::new(),
        };
        let target = Target { host: &url.authority, path: &url.path, headers: &headers };
        let templates = match &a.scenario {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| format!("--scenario {}: {e}", path.display()))?;
                let specs = scenario::parse_specs(&text).map_err(|e| format!("scenario {}: {e}", path.display()))?;
                let base = path.parent().unwrap_or(Path::new("."));
                let mut out = Vec::with_capacity(specs.len());
                for (i, spec) in specs.iter().enumerate() {
                    let mut t = Template::from_spec(&target, spec, base, i)
                        .map_err(|e| format!("scenario {}: {e}", path.display()))?;
                    if spec.bearer_file.is_none() && !bearer.is_empty() {
                        t = t.with_tokens(bearer.clone());
                    }
                    out.push(t);
                }
                out
            }
            None => {
                let body = match &a.body_file {
                    Some(p) => std::fs::read(p).map_err(|e| format!("--body-file {}: {e}", p.display()))?,
                    None => scenario::chat_body(
                        a.model.as_deref().unwrap_or("gpt-4o-mini"),
                        &[scenario::Message {
                            role: "user".into(),
                            content: a.prompt.clone().unwrap_or_else(|| "Hello".into()),
                        }],
                        a.stream,
                        Some(a.max_tokens.unwrap_or(16)),
                    ),
                };
                if body.len() > scenario::REQUEST_BODY_BYTES_MAX {
                    return Err("--body-file: body too large".into());
                }
                vec![Template::new(&target, None, &BTreeMap::new(), &body, bearer, a.stream, 1)]
            }
        };
        let weights: Vec<u32> = templates.iter().map(|t| t.weight).collect();
        Ok(Config {
            url_text: a.url.clone(),
            url,
            load,
            duration: duration.or(open_length),
            requests_max: a.requests,
            connections_max: a.connections_max,
            inflight_max: a.inflight_max,
            timeout,
            mix: Mix::new(&weights),
            templates,
            threads: a.threads,
            json: a.json.clone(),
            hdr_log: a.hdr_log.clone(),
            plot: a.plot.clone(),
            target_pid: a.target_pid,
            seed: a.seed,
            pace_window,
            scenario: a.scenario.as_ref().map(|p| p.display().to_string()),
            engine: a.engine,
        })
    }
}

/// State shared by the pacer, workers and reporter.
struct Shared {
    cfg: Config,
    addr: SocketAddr,
    start: Instant,
    /// Idle keep-alive connections.
    pool: Mutex<Vec<TcpStream>>,
    /// One recorder per runtime thread; workers pick theirs by id.
    shards: Vec<Mutex<Recorder>>,
    /// Workers currently handling a request.
    busy: AtomicUsize,
    /// Requests started.
    sent: AtomicU64,
    waited: AtomicU64,
    retried: AtomicU64,
    /// Set when workers should stop taking new requests (closed loop end).
    stop: AtomicBool,
    /// Open loop: slots handed from the pacer to the workers.
    slots: SlotQueue,
}

/// A bounded FIFO of slot offsets from the pacer task to the worker tasks. Both sides run
/// on the runtime, so a hand-off is a task wake-up, not a thread wake-up.
struct SlotQueue {
    queue: Mutex<VecDeque<Duration>>,
    closed: AtomicBool,
    /// Signalled when a slot is pushed or the queue closes.
    filled: Notify,
    /// Signalled when a full queue loses a slot.
    drained: Notify,
}

impl SlotQueue {
    fn new() -> SlotQueue {
        SlotQueue {
            queue: Mutex::new(VecDeque::new()),
            closed: AtomicBool::new(false),
            filled: Notify::new(),
            drained: Notify::new(),
        }
    }

    /// Queues a slot, waiting while the queue holds `SLOT_QUEUE_MAX` (the slot keeps its
    /// intended time, so the wait shows in its latency).
    async fn push(&self, slot: Duration) {
        // Bounded by the workers: each pop of a full queue signals `drained`.
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            {
                let mut q = lock(&self.queue);
                if q.len() < SLOT_QUEUE_MAX {
                    q.push_back(slot);
                    drop(q);
                    self.filled.notify_one();
                    return;
                }
            }
            drained.await;
        }
    }

    /// Next slot; `None` once the queue is closed and empty.
    async fn pop(&self) -> Option<Duration> {
        // Bounded by the pacer: it pushes finitely many slots and then closes the queue.
        loop {
            let filled = self.filled.notified();
            tokio::pin!(filled);
            filled.as_mut().enable();
            {
                let mut q = lock(&self.queue);
                if let Some(slot) = q.pop_front() {
                    let was_full = q.len() + 1 == SLOT_QUEUE_MAX;
                    let more = !q.is_empty();
                    drop(q);
                    if was_full {
                        self.drained.notify_one();
                    }
                    if more {
                        // Pass the wake-up on: notify_one keeps one permit, not a count.
                        self.filled.notify_one();
                    }
                    return Some(slot);
                }
                if self.closed.load(Ordering::Acquire) {
                    return None;
                }
            }
            filled.await;
        }
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.filled.notify_waiters();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means another worker panicked; the data is still counters.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// One request from the worker's point of view: pick a template, get a connection,
/// exchange (retrying once on a stale keep-alive connection), return the connection.
async fn one_request(
    sh: &Shared,
    out: &mut Vec<u8>,
    rbuf: &mut Vec<u8>,
    rng: &mut rand::rngs::StdRng,
    intended: Instant,
) -> (Outcome, Option<ErrorClass>) {
    let template = &sh.cfg.templates[sh.cfg.mix.pick(rng)];
    template.write_request(out);
    let mut outcome = Outcome { bytes_out: out.len() as u64, ..Outcome::default() };
    let attempt = async {
        // Two attempts at most: the second only when a reused connection turned out to be
        // closed before any answer byte (the server's idle timeout raced us).
        for attempt in 0..2 {
            let pooled = if attempt == 0 { lock(&sh.pool).pop() } else { None };
            let reused = pooled.is_some();
            let mut stream = match pooled {
                Some(s) => s,
                None => client::connect(sh.addr).await.map_err(|c| (c, 0u64))?,
            };
            match client::exchange(&mut stream, out, rbuf).await {
                Ok(ans) => {
                    if ans.keep_alive {
                        let mut pool = lock(&sh.pool);
                        if pool.len() < sh.cfg.connections_max {
                            pool.push(stream);
                        }
                    }
                    return Ok(ans);
                }
                Err(f) if reused && f.nothing_read && attempt == 0 => {
                    sh.retried.fetch_add(1, Ordering::Relaxed);
                }
                Err(f) => return Err((f.class, 0)),
            }
        }
        Err((ErrorClass::Reset, 0))
    };
    match tokio::time::timeout(sh.cfg.timeout, attempt).await {
        Ok(Ok(ans)) => {
            let class = ans.fill(&mut outcome, intended);
            (outcome, class)
        }
        Ok(Err((class, _))) => (outcome, Some(class)),
        Err(_) => (outcome, Some(ErrorClass::Timeout)),
    }
}

/// Runs one request due at `intended` and records it.
async fn timed_request(
    sh: &Shared,
    shard: usize,
    intended: Instant,
    bufs: &mut (Vec<u8>, Vec<u8>),
    rng: &mut rand::rngs::StdRng,
) {
    let sent_at = Instant::now();
    sh.sent.fetch_add(1, Ordering::Relaxed);
    let (mut outcome, class) = one_request(sh, &mut bufs.0, &mut bufs.1, rng, intended).await;
    let end = Instant::now();
    outcome.latency_us = us(end.saturating_duration_since(intended));
    outcome.lag_us = us(sent_at.saturating_duration_since(intended));
    lock(&sh.shards[shard]).record(&outcome, class);
}

fn worker_state(sh: &Shared, id: usize) -> ((Vec<u8>, Vec<u8>), rand::rngs::StdRng) {
    let bufs = (Vec::with_capacity(1024), Vec::with_capacity(client::READ_BUFFER_BYTES));
    let rng = rand::rngs::StdRng::seed_from_u64(sh.cfg.seed ^ (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    (bufs, rng)
}

async fn open_worker(sh: Arc<Shared>, id: usize) {
    let (mut bufs, mut rng) = worker_state(&sh, id);
    let shard = id % sh.shards.len();
    // Ends when the pacer has closed the queue and it is empty; the pacer queues a
    // bounded number of slots.
    while let Some(offset) = sh.slots.pop().await {
        sh.busy.fetch_add(1, Ordering::Relaxed);
        timed_request(&sh, shard, sh.start + offset, &mut bufs, &mut rng).await;
        sh.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn closed_worker(sh: Arc<Shared>, id: usize) {
    let (mut bufs, mut rng) = worker_state(&sh, id);
    let shard = id % sh.shards.len();
    let end = sh.cfg.duration.map(|d| sh.start + d);
    let max = sh.cfg.requests_max.unwrap_or(u64::MAX);
    // Bounded by --requests or --duration (one of them is required).
    loop {
        if sh.stop.load(Ordering::Relaxed) || end.is_some_and(|e| Instant::now() >= e) {
            break;
        }
        if sh.sent.load(Ordering::Relaxed) >= max {
            break;
        }
        timed_request(&sh, shard, Instant::now(), &mut bufs, &mut rng).await;
    }
}

/// The pacer task: sleeps on a timerfd (microsecond precision, unlike tokio's 1 ms
/// timer wheel) to the next slot, then queues every slot whose time has come, so one
/// wake-up releases all slots that fell due meanwhile; each keeps its own offset.
async fn pace(sh: Arc<Shared>, arrival: Arrival) -> Result<(), String> {
    let result = pace_slots(&sh, &arrival).await;
    sh.slots.close();
    result
}

async fn pace_slots(sh: &Shared, arrival: &Arrival) -> Result<(), String> {
    let timer = timer::Timer::new().map_err(|e| format!("pacer timer: {e}"))?;
    let max = sh.cfg.requests_max.unwrap_or(u64::MAX);
    let end = sh.cfg.duration;
    let inflight_max = sh.cfg.inflight_max;
    let window = sh.cfg.pace_window;
    // Offset of slot k, or None past the schedule's end, --duration or --requests.
    let slot = |k: u64| arrival.slot(k).filter(|o| k < max && end.is_none_or(|e| *o < e));
    // Bounded by --requests, --duration or the schedule's own end.
    for k in 0..max {
        let Some(offset) = slot(k) else { break };
        let due = sh.start + offset;
        if due > Instant::now() {
            // Wake for the last slot due within `window` of this one, so one wake-up sends
            // them all; slot k then leaves at most `window` late (its latency shows it).
            let mut wake = offset;
            let mut j = k + 1;
            while j - k < PACE_BATCH_MAX {
                match slot(j) {
                    Some(o) if o <= offset + window => wake = o,
                    _ => break,
                }
                j += 1;
            }
            timer.sleep_until(sh.start + wake).await.map_err(|e| format!("pacer timer: {e}"))?;
        }
        if sh.busy.load(Ordering::Relaxed) >= inflight_max {
            sh.waited.fetch_add(1, Ordering::Relaxed);
        }
        sh.slots.push(offset).await;
    }
    Ok(())
}

/// Drains every shard into `interval`.
fn drain(sh: &Shared, interval: &mut Recorder) {
    for s in &sh.shards {
        let mut g = lock(s);
        interval.merge(&g);
        g.reset();
    }
}

type LogSerializer = hdrhistogram::serialization::V2DeflateSerializer;

/// Once per interval: drain shards, log the interval, show progress. Returns the totals.
async fn reporter(
    sh: Arc<Shared>,
    mut done: tokio::sync::oneshot::Receiver<()>,
    started: SystemTime,
) -> Result<Recorder, String> {
    use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
    let tty = std::io::stderr().is_terminal();
    let mut total = Recorder::default();
    let mut interval = Recorder::default();
    let mut file = match &sh.cfg.hdr_log {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).map_err(|e| format!("--hdr-log {}: {e}", p.display()))?,
        )),
        None => None,
    };
    let mut ser = LogSerializer::new();
    let mut log = match file.as_mut() {
        Some(f) => Some(
            IntervalLogWriterBuilder::new()
                .add_comment("gk-load run: latency_us from intended send time; tag ttfb = streams' first byte")
                .with_start_time(started)
                .with_base_time(started)
                .with_max_value_divisor(1000.0)
                .begin_log_with(f, &mut ser)
                .map_err(|e| format!("--hdr-log: {e}"))?,
        ),
        None => None,
    };
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + INTERVAL, INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = Duration::ZERO;
    let ttfb_tag = Tag::new("ttfb");
    // Ends when `done` fires after the workers finish; one pass per interval until then.
    loop {
        let finished = tokio::select! {
            _ = tick.tick() => false,
            _ = &mut done => true,
        };
        drain(&sh, &mut interval);
        let now = sh.start.elapsed();
        if let Some(log) = log.as_mut() {
            let len = now.saturating_sub(last);
            log.write_histogram(&interval.latency, last, len, None).map_err(|e| format!("--hdr-log: {e:?}"))?;
            if !interval.ttfb.is_empty() {
                log.write_histogram(&interval.ttfb, last, len, ttfb_tag).map_err(|e| format!("--hdr-log: {e:?}"))?;
            }
        }
        last = now;
        total.merge(&interval);
        if tty {
            let secs = now.as_secs_f64().max(1e-9);
            let mut err = std::io::stderr().lock();
            let _ = write!(
                err,
                "\r\x1b[K{:>5.0}s  {:>9.0} req/s  in flight {:>5}  p50 {:.3} ms  p99 {:.3} ms  errors {}",
                now.as_secs_f64(),
                total.count() as f64 / secs,
                sh.busy.load(Ordering::Relaxed),
                total.latency.value_at_quantile(0.5) as f64 / 1000.0,
                total.latency.value_at_quantile(0.99) as f64 / 1000.0,
                total.errors.total()
            );
            if finished {
                let _ = writeln!(err);
            }
        }
        interval.reset();
        if finished {
            break;
        }
    }
    drop(log);
    if let Some(mut f) = file {
        f.flush().map_err(|e| format!("--hdr-log: {e}"))?;
    }
    Ok(total)
}

/// Runs the load described by `cfg` and returns the report (also written to the
/// `--json`, `--plot` and `--hdr-log` files).
pub fn run(cfg: Config) -> Result<Report, String> {
    let engine = choose_engine(cfg.engine)?;
    let threads = cfg.threads;
    // The uring engine runs its own threads; the runtime only hosts the reporter.
    let runtime = if threads <= 1 || engine == Engine::Uring {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()
    }
    .map_err(|e| format!("runtime: {e}"))?;
    runtime.block_on(run_async(cfg, engine))
}

async fn run_async(cfg: Config, engine: Engine) -> Result<Report, String> {
    let addr = cfg.url.resolve().await.map_err(|e| format!("--url {}: {e}", cfg.url_text))?;
    let shards = (0..cfg.threads).map(|_| Mutex::new(Recorder::default())).collect();
    let target_before = cfg.target_pid.and_then(cpu::pid_cpu);
    let cpu_before = cpu::self_cpu();
    let started = SystemTime::now();
    let sh = Arc::new(Shared {
        addr,
        start: Instant::now(),
        pool: Mutex::new(Vec::with_capacity(cfg.connections_max.min(4096))),
        shards,
        busy: AtomicUsize::new(0),
        sent: AtomicU64::new(0),
        waited: AtomicU64::new(0),
        retried: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        slots: SlotQueue::new(),
        cfg,
    });
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let rep = tokio::spawn(reporter(Arc::clone(&sh), done_rx, started));
    let mut workers = tokio::task::JoinSet::new();
    let mut pacer = None;
    let mut engine_name = engine.name().to_string();
    match sh.cfg.load.clone() {
        _ if engine == Engine::Uring => {
            let shared = Arc::clone(&sh);
            let setup = tokio::task::spawn_blocking(move || uring::run(&shared))
                .await
                .map_err(|e| format!("uring engine: {e}"))??;
            engine_name = format!("uring ({setup})");
        }
        Load::Open(arrival) => {
            for id in 0..sh.cfg.inflight_max {
                workers.spawn(open_worker(Arc::clone(&sh), id));
            }
            pacer = Some(tokio::spawn(pace(Arc::clone(&sh), arrival)));
        }
        Load::Closed(n) => {
            for id in 0..n {
                workers.spawn(closed_worker(Arc::clone(&sh), id));
            }
        }
    }
    // Bounded: each worker ends after the pacer stops or its limit is reached.
    while workers.join_next().await.is_some() {}
    let elapsed = sh.start.elapsed();
    sh.stop.store(true, Ordering::Relaxed);
    if let Some(p) = pacer {
        // The pacer has already ended: workers only finish after it closes the queue.
        p.await.map_err(|e| format!("pacer: {e}"))??;
    }
    let cpu_used = cpu::self_cpu().since(&cpu_before);
    let target_used = match (sh.cfg.target_pid, target_before) {
        (Some(pid), Some(before)) => cpu::pid_cpu(pid).map(|a| a.since(&before)),
        _ => None,
    };
    let _ = done_tx.send(());
    let total = rep.await.map_err(|e| format!("reporter: {e}"))??;
    let mut report = build_report(&sh, &total, elapsed, started, cpu_used, target_used);
    report.config.engine = engine_name;
    write_outputs(&sh.cfg, &report)?;
    Ok(report)
}

fn build_report(
    sh: &Shared,
    total: &Recorder,
    elapsed: Duration,
    started: SystemTime,
    cpu_used: cpu::CpuTime,
    target_used: Option<cpu::CpuTime>,
) -> Report {
    let c = &sh.cfg;
    let completed = total.count();
    let secs = elapsed.as_secs_f64().max(1e-9);
    let per_req = |t: Duration| t.as_secs_f64() * 1e6 / completed.max(1) as f64;
    let gen_us = per_req(cpu_used.total());
    let target_us = target_used.map(|t| per_req(t.total()));
    let (mode, schedule, rate_target, connections) = match &c.load {
        Load::Open(a) => ("open", a.describe(), Some(a.mean_rate()), None),
        Load::Closed(n) => ("closed", format!("closed {n} connections"), None, Some(*n)),
    };
    Report {
        version: REPORT_VERSION,
        config: ConfigReport {
            url: c.url_text.clone(),
            mode: mode.into(),
            schedule,
            rate_target,
            duration_s: c.duration.map(|d| d.as_secs_f64()),
            requests_max: c.requests_max,
            connections,
            connections_max: c.connections_max,
            inflight_max: c.inflight_max,
            threads: c.threads,
            timeout_s: c.timeout.as_secs_f64(),
            scenario: c.scenario.clone(),
            templates: c.templates.len(),
            seed: c.seed,
            pace_window_us: us(c.pace_window),
            engine: String::new(),
        },
        started_unix_ms: started
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0)),
        elapsed_s: secs,
        rate_achieved: completed as f64 / secs,
        requests: Counts {
            sent: sh.sent.load(Ordering::Relaxed),
            completed,
            ok: total.statuses.iter().filter(|(s, _)| (200..300).contains(*s)).map(|(_, n)| n).sum(),
            waited_for_slot: sh.waited.load(Ordering::Relaxed),
            retried: sh.retried.load(Ordering::Relaxed),
        },
        statuses: total.statuses.iter().map(|(s, n)| (s.to_string(), *n)).collect(),
        errors: total.errors,
        latency_us: Distribution::of(&total.latency),
        latency_ok_us: Distribution::of(&total.latency_ok),
        ttfb_us: Distribution::of(&total.ttfb),
        chunk_gap_max_us: Distribution::of(&total.gap),
        send_lag_us: Distribution::of(&total.lag),
        throughput: Throughput {
            bytes_out: total.bytes_out,
            bytes_in: total.bytes_in,
            bytes_out_per_s: total.bytes_out as f64 / secs,
            bytes_in_per_s: total.bytes_in as f64 / secs,
        },
        cpu: CpuReport {
            generator_user_s: cpu_used.user.as_secs_f64(),
            generator_sys_s: cpu_used.sys.as_secs_f64(),
            generator_us_per_request: gen_us,
            target_pid: c.target_pid,
            target_user_s: target_used.map(|t| t.user.as_secs_f64()),
            target_sys_s: target_used.map(|t| t.sys.as_secs_f64()),
            target_us_per_request: target_us,
            generator_to_target_ratio: target_us.filter(|&t| t > 0.0).map(|t| gen_us / t),
        },
    }
}

fn write_outputs(c: &Config, report: &Report) -> Result<(), String> {
    if let Some(p) = &c.json {
        let text = serde_json::to_string_pretty(report).map_err(|e| format!("--json: {e}"))?;
        std::fs::write(p, text + "\n").map_err(|e| format!("--json {}: {e}", p.display()))?;
    }
    if let Some(p) = &c.plot {
        let series = plot::Series {
            label: format!("{} ({})", report.config.schedule, report.config.url),
            points: report.latency_us.percentiles.clone(),
        };
        let svg = plot::render_svg("Latency by percentile (from intended send time)", &[series]);
        std::fs::write(p, svg).map_err(|e| format!("--plot {}: {e}", p.display()))?;
    }
    Ok(())
}
