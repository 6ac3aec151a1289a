//! The bridge: one thread, beside the shards, running a tokio runtime for two
//! independent jobs.
//!
//! - **Config watch** (whenever `nats` is set): follows the `BH_CONFIG` bucket and
//!   applies every change to the gateway's [`HotConfig`], which shards read with one
//!   atomic load per request.
//! - **Audit shipping** (whenever `audit.enabled`): each shard appends records and
//!   events to its own WAL through its [`ShardAudit`] and never waits on another
//!   thread; the bridge chains the records into this node instance's signed hash
//!   chain and stores batches and checkpoints in JetStream, or in chain files under
//!   the data dir without `nats`. The WAL is the spool: while the store is away,
//!   records wait there, bounded by `audit.spool_bytes_max` (then `submit` fails and
//!   the request is answered 503 `audit_unavailable`, or its stream is cut before
//!   `[DONE]`, so nothing acknowledged goes unaudited). Routing decisions, failovers,
//!   health and sessions are derived from the records ([`events`]).
//!
//! `serve` starts the bridge when either job is on, hands each shard its
//! [`ShardAudit`] at shard start, and calls [`Bridge::shutdown`] after the shards
//! stopped: what is left is shipped and the chain closed with a final checkpoint.
//!
//! The parts, one job each: `connection` (the NATS client), `watch` (config watch),
//! `shipper` (WAL → chain → store, the step loop), `resume` (where a start picks
//! up), `checkpoints`, `housekeeping` (fsync, reports, WAL deletion), `retry` (the
//! one bounded retry loop), [`sink`] (files or JetStream), [`nats`] (JetStream
//! plumbing) and [`events`]; `health` (the health feed: circuit changes between
//! nodes over `BH_HEALTH`, whenever `nats` is set). `gatekeeper config push` is `cli/config.rs`.

pub mod budget;
mod checkpoints;
mod connection;
pub mod credits;
pub mod events;
mod health;
mod housekeeping;
mod metrics;
pub mod nats;
mod priority;
mod resume;
mod retry;
mod shipper;
pub mod sink;
mod thread;
mod watch;

use std::cell::RefCell;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use events::Event;
pub use nats::NatsError;

use crate::audit::checkpoint::load_or_create_node_key;
use crate::audit::wal::{self, FrameKind, LaneId, WalWriter};
use crate::audit::{AuditError, AuditRecord, PartHandle};
use crate::config::hot::HotConfig;
use crate::config::{AuditConfig, Config, FsyncPolicy};
use crate::keys::SecretKey;

/// Unix time, ms (the clock records and checkpoints use).
pub fn now_unix_ms() -> u64 {
    crate::clock::unix_ms()
}

/// Why the bridge could not start or stopped short.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BridgeError {
    /// Local files (data dir, WAL, chain files, key).
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// NATS.
    #[error(transparent)]
    Nats(#[from] NatsError),
    /// The bridge thread or its runtime could not start.
    #[error("bridge thread: {0}")]
    Thread(String),
}

/// Per-shard counters shared by a shard (writer) and the bridge (reader).
///
/// Aligned to 128 bytes (two cache lines: the adjacent-line prefetcher pairs them) so
/// that each shard's counters sit alone: the shards update theirs on every request,
/// and two lanes in one line made the shards' cores pass it back and forth each time.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct LaneCounters {
    /// WAL bytes the shard appended (whole frames).
    written: AtomicU64,
    /// The WAL part the shard appends to; stored after `written`, so a reader that
    /// sees a later part also sees every byte of the earlier ones counted.
    part: AtomicU64,
    /// WAL bytes of this shard the bridge has stored.
    shipped: AtomicU64,
    /// Whether a `ShardAudit` was made for this shard.
    opened: AtomicBool,
    /// The part the shard writes and a handle on it (mapped parts only), through
    /// which the bridge faults its pages in ahead of the shard and reads its frames.
    /// Locked by the shard once per part, by the bridge once per part.
    handle: Mutex<Option<(u64, PartHandle)>>,
}

impl LaneCounters {
    /// WAL bytes the shard wrote that the bridge has not stored yet.
    fn backlog_bytes(&self) -> u64 {
        self.written.load(Ordering::Relaxed).saturating_sub(self.shipped.load(Ordering::Relaxed))
    }

    /// The handle on `part`, if that is the part the shard writes.
    fn handle(&self, part: u64) -> Option<PartHandle> {
        let slot = self.handle.lock().unwrap_or_else(|p| p.into_inner());
        slot.as_ref().filter(|(p, _)| *p == part).map(|(_, h)| h.clone())
    }

    /// Publishes the shard's current part and the handle on it.
    fn set_handle(&self, part: u64, handle: Option<PartHandle>) {
        *self.handle.lock().unwrap_or_else(|p| p.into_inner()) = handle.map(|h| (part, h));
    }
}

/// Counters for `/metrics` (`metrics.rs`) and tests.
#[derive(Debug, Default)]
pub struct BridgeStats {
    /// Entries stored in this instance's chain.
    pub entries_stored: AtomicU64,
    /// Checkpoints stored.
    pub checkpoints_stored: AtomicU64,
    /// Failed store attempts (each is retried).
    pub store_failures: AtomicU64,
    /// Torn or corrupt WAL bytes skipped (writes whose `submit` never returned).
    pub wal_bytes_skipped: AtomicU64,
    /// Records `submit` refused because a shard's spool was full.
    pub spool_full_total: AtomicU64,
    /// `BH_CONFIG` changes applied to the hot configuration.
    pub config_changes: AtomicU64,
    /// Checkpoints that could not be appended to `audit.witness_file`.
    pub witness_failures: AtomicU64,
    /// The newest stored checkpoint: chain (`node/inst`), entries covered, hex root.
    pub latest_checkpoint: Mutex<Option<(String, u64, String)>>,
    /// The budget gossip's counters (with `nats` and a budget board).
    pub budget: Arc<budget::GossipStats>,
}

/// What audit shipping runs with, resolved at start.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    data_dir: PathBuf,
    wal_dir: PathBuf,
    node: String,
    gen: u64,
    shards: usize,
    audit: AuditConfig,
}

/// The stop signal the bridge thread's loops watch, and the deadline past which a
/// stopping bridge gives up shipping.
#[derive(Debug)]
pub(crate) struct Shutdown {
    stop: AtomicBool,
    /// Unix ms after which a stopping bridge gives up; meaningless until `stop`.
    deadline_ms: AtomicU64,
    wake: tokio::sync::Notify,
}

impl Shutdown {
    fn new() -> Shutdown {
        Shutdown {
            stop: AtomicBool::new(false),
            deadline_ms: AtomicU64::new(u64::MAX),
            wake: tokio::sync::Notify::new(),
        }
    }

    /// Asks the bridge to stop, shipping what it can for at most `drain`.
    fn begin(&self, drain: Duration) {
        let drain_ms = u64::try_from(drain.as_millis()).unwrap_or(u64::MAX);
        self.deadline_ms.store(now_unix_ms().saturating_add(drain_ms), Ordering::SeqCst);
        self.stop.store(true, Ordering::SeqCst);
        // A permit is kept when nobody waits yet, so the wake-up cannot be missed.
        self.wake.notify_one();
    }

    /// Whether shutdown began.
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Whether shutdown began and its drain deadline passed.
    fn past_deadline(&self) -> bool {
        self.stopping() && now_unix_ms() >= self.deadline_ms.load(Ordering::SeqCst)
    }

    /// The drain time left once shutdown began; `None` while running.
    fn time_left(&self) -> Option<Duration> {
        if !self.stopping() {
            return None;
        }
        let left_ms = self.deadline_ms.load(Ordering::SeqCst).saturating_sub(now_unix_ms());
        Some(Duration::from_millis(left_ms))
    }

    /// Returns once shutdown began.
    async fn stopped(&self) {
        // Bounded by `begin`, which sets the flag before it wakes this waiter.
        while !self.stopping() {
            self.wake.notified().await;
        }
    }
}

/// State shared by the handle, the shards' [`ShardAudit`]s and the bridge thread.
#[derive(Debug)]
pub(crate) struct Shared {
    /// One per shard with audit on; none without.
    lanes: Box<[LaneCounters]>,
    shutdown: Shutdown,
    stats: BridgeStats,
    /// This start's chain instance, once the shipper began it.
    inst: Mutex<Option<String>>,
    /// The bridge thread's scheduling class (`bridge.policy`), which the shards raise.
    priority: priority::Priority,
}

/// The audit side of a running bridge (with `audit.enabled`).
#[derive(Debug)]
struct AuditSide {
    settings: Settings,
    // Held for the process's life: one writer per data dir.
    _lock: File,
}

impl AuditSide {
    /// Locks the data dir, picks this start's WAL generation and loads (or creates)
    /// the node key.
    fn open(audit: &AuditConfig, node: &str, shards: usize) -> Result<(AuditSide, SecretKey), BridgeError> {
        let data_dir = audit.data_dir.clone();
        let io = |p: &Path| {
            let path = p.to_path_buf();
            move |source| AuditError::Io { path, source }
        };
        crate::audit::private::create_dir_all(&data_dir).map_err(io(&data_dir))?;
        crate::audit::private::warn_if_open(&data_dir);
        let lock_path = data_dir.join("LOCK");
        let lock = crate::audit::private::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive)
            .map_err(|_| AuditError::Locked { path: lock_path.clone() })?;
        let wal_dir = data_dir.join("wal");
        let gen = wal::allocate_generation(&wal_dir)?;
        let key_path = audit.node_key_file.clone().unwrap_or_else(|| data_dir.join("node.key"));
        let key = load_or_create_node_key(&key_path)?;
        let settings = Settings { data_dir, wal_dir, node: node.to_string(), gen, shards, audit: audit.clone() };
        Ok((AuditSide { settings, _lock: lock }, key))
    }
}

/// The running bridge. `Send + Sync`: share it in an `Arc`.
#[derive(Debug)]
pub struct Bridge {
    node: String,
    audit: Option<AuditSide>,
    shared: Arc<Shared>,
    budget_join: Option<Arc<budget::Join>>,
    /// Whether `nats` is configured (the config watch runs).
    nats_on: bool,
    thread: Mutex<Option<std::thread::JoinHandle<ThreadResult>>>,
}

/// What the bridge thread returns: the audit report, with audit on.
type ThreadResult = Result<Option<BridgeReport>, BridgeError>;

/// What audit shipping did, returned by [`Bridge::shutdown`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BridgeReport {
    /// This instance's chain: `node/inst`.
    pub chain: String,
    /// Entries stored.
    pub entries: u64,
    /// Checkpoints stored (the final one included).
    pub checkpoints: u64,
    /// Whether every submitted record was stored and the chain closed with a final
    /// checkpoint. False when the store was unreachable until the deadline: the rest
    /// stays in the WAL and ships on the next start.
    pub drained: bool,
}

impl Bridge {
    /// Starts the bridge for a gateway with `shards` shards. With `audit.enabled` it
    /// locks the data dir, picks the WAL generation and loads (or creates) the node
    /// key; with `nats` it watches `BH_CONFIG` and applies changes to `hot`. Call
    /// once at serve time, before the shards start.
    pub fn start(config: &Config, shards: usize, hot: Arc<HotConfig>) -> Result<Bridge, BridgeError> {
        Bridge::start_with_health(config, shards, hot, None)
    }

    /// [`Bridge::start`], with the health feed (`health.rs`) over `board` when `nats`
    /// is set: circuit changes published on `BH_HEALTH` and other nodes' consumed.
    pub fn start_with_health(
        config: &Config,
        shards: usize,
        hot: Arc<HotConfig>,
        board: Option<Arc<crate::router::HealthBoard>>,
    ) -> Result<Bridge, BridgeError> {
        Bridge::start_with_feeds(config, shards, hot, board, None, None)
    }

    /// [`Bridge::start_with_health`], with the budget gossip (`budget.rs`) over
    /// `budgets` when `nats` is set (call [`Bridge::budget_join`]'s `wait` before the
    /// shards start; load the budget snapshot file into `budgets` before this), and
    /// answering the shards' credit nullifier claims from `claims` (`credits.rs`) when
    /// `nats` is set.
    pub fn start_with_feeds(
        config: &Config,
        shards: usize,
        hot: Arc<HotConfig>,
        board: Option<Arc<crate::router::HealthBoard>>,
        budgets: Option<Arc<crate::budget::BudgetBoard>>,
        claims: Option<tokio::sync::mpsc::Receiver<credits::Claim>>,
    ) -> Result<Bridge, BridgeError> {
        let node = config.audit.node_name.clone().unwrap_or_else(host_node_name);
        let (audit, key) = match config.audit.enabled {
            true => AuditSide::open(&config.audit, &node, shards).map(|(side, key)| (Some(side), Some(key)))?,
            false => (None, None),
        };
        let lanes = if audit.is_some() { shards } else { 0 };
        let join = budgets.as_ref().filter(|_| config.nats.is_some()).map(|_| Arc::new(budget::Join::default()));
        let stats = BridgeStats::default();
        let gossip = budgets.zip(join.clone()).map(|(board, join)| budget::Feed {
            board,
            every: Duration::from_millis(config.budgets.gossip_interval_ms),
            full_every: Duration::from_millis(config.budgets.anti_entropy_interval_ms),
            message_bytes_max: config.budgets.message_bytes_max,
            join_timeout: Duration::from_millis(config.budgets.join_timeout_ms),
            join,
            stats: stats.budget.clone(),
        });
        let shared = Arc::new(Shared {
            lanes: (0..lanes).map(|_| LaneCounters::default()).collect(),
            shutdown: Shutdown::new(),
            stats,
            inst: Mutex::new(None),
            priority: priority::Priority::new(
                config.bridge.raise_backlog_bytes.min(config.audit.spool_bytes_max / 2),
                priority::Priority::late_ms(config.audit.batch_wait_ms, config.audit.fsync_interval_ms),
            ),
        });
        let jobs = thread::Jobs {
            node: node.clone(),
            nats: config.nats.clone(),
            hot,
            audit: audit.as_ref().map(|a| a.settings.clone()).zip(key),
            credits: claims.zip(config.credits.as_ref()).map(|(rx, c)| credits::Job {
                rx,
                max_age: Duration::from_secs(match c.epoch {
                    crate::config::CreditsEpoch::Day => 2 * 86_400,
                    crate::config::CreditsEpoch::Hour => 2 * 3_600,
                }),
            }),
            health: board.map(|board| health::Feed {
                board,
                every: Duration::from_millis(config.routing.health.feed_ms),
                remote_open_max_ms: config.routing.health.remote_open_max_ms,
            }),
            budget: gossip,
        };
        let sh = shared.clone();
        let placement = config.bridge;
        let idle = placement.idle(audit.is_some(), config.nats.is_some());
        // The thread places itself (CPU, nice) before any job runs and says whether it
        // could; a placement the config asked for and did not get fails the start.
        let (placed_tx, placed_rx) = std::sync::mpsc::sync_channel::<Result<(), String>>(1);
        let thread = std::thread::Builder::new()
            .name("gk-bridge".into())
            .spawn(move || {
                let placed = thread::place(&placement);
                let ok = placed.is_ok();
                let _ = placed_tx.send(placed);
                if !ok {
                    return Ok(None);
                }
                if idle {
                    match sh.priority.enter_idle() {
                        Ok(()) => tracing::debug!("bridge thread runs SCHED_IDLE while it keeps up"),
                        Err(e) => {
                            tracing::warn!("bridge.policy idle not taken, the bridge runs as a normal thread: {e}")
                        }
                    }
                }
                thread::run_here(jobs, sh)
            })
            .map_err(|e| BridgeError::Thread(e.to_string()))?;
        match placed_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(BridgeError::Thread(e));
            }
            Err(_) => return Err(BridgeError::Thread("the bridge thread died while starting".into())),
        }
        let generation = audit.as_ref().map(|a| a.settings.gen);
        tracing::info!(node = %node, audit = audit.is_some(), ?generation, nats = config.nats.is_some(), "bridge started");
        Ok(Bridge {
            node,
            audit,
            shared,
            budget_join: join,
            nats_on: config.nats.is_some(),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The budget gossip's join, when it runs: `serve` waits on it before the shards
    /// start (see `budget.rs`, "Join").
    pub fn budget_join(&self) -> Option<&budget::Join> {
        self.budget_join.as_deref()
    }

    /// The audit handle of shard `index`, which creates its WAL file; `None` when
    /// audit is off. Call once per shard, on any thread (the handle is `Send`, and
    /// used only by its shard afterwards).
    pub fn shard(&self, index: usize) -> Result<Option<ShardAudit>, AuditError> {
        let Some(side) = &self.audit else { return Ok(None) };
        let counters = self.shared.lanes.get(index).ok_or_else(|| AuditError::Encode(format!("no shard {index}")))?;
        let s = &side.settings;
        let lane = LaneId { gen: s.gen, shard: index as u32 };
        let a = &s.audit;
        let writer = WalWriter::create(&s.wal_dir, lane, a.wal_segment_bytes, a.fsync == FsyncPolicy::Always)?;
        counters.set_handle(writer.part(), writer.part_handle());
        counters.opened.store(true, Ordering::Release);
        Ok(Some(ShardAudit {
            writer: RefCell::new(writer),
            shared: self.shared.clone(),
            index,
            include_content: a.include_content,
            spool_bytes_max: a.spool_bytes_max,
            scratch: RefCell::new(AuditRecord::default()),
        }))
    }

    /// Counters.
    pub fn stats(&self) -> &BridgeStats {
        &self.shared.stats
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// This instance's id, once the shipper has started its chain.
    pub fn instance(&self) -> Option<String> {
        self.shared.inst.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Stops the bridge and joins its thread. Call at drain, after the shards
    /// stopped submitting. With audit on, ships what is left and closes the chain
    /// with a final checkpoint, waiting at most `timeout` for the store (NATS may be
    /// away; what is not stored by then stays in the WAL and ships on the next start),
    /// and returns what it did; `None` without audit (or when already stopped).
    pub fn shutdown(&self, timeout: Duration) -> Result<Option<BridgeReport>, BridgeError> {
        // Without audit there is nothing to drain: stop at once.
        let drain = if self.audit.is_some() { timeout } else { Duration::ZERO };
        self.shared.shutdown.begin(drain);
        let handle = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        match handle {
            Some(h) => h.join().map_err(|_| BridgeError::Thread("the bridge thread panicked".into()))?,
            None => Ok(None),
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        // Not a substitute for `shutdown`: a short, final try.
        if let Err(e) = self.shutdown(Duration::from_millis(500)) {
            tracing::warn!(error = %e, "bridge stopped with an error");
        }
    }
}

/// The host name as a node name: `/proc/sys/kernel/hostname` (or `$HOSTNAME`), made
/// an identifier; `node` if neither says.
fn host_node_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let name = events::subject_token(raw.trim());
    if name == "_" {
        "node".into()
    } else {
        name
    }
}

/// A shard's audit handle. `Send` but `!Sync`: one per shard thread, used only by it.
#[derive(Debug)]
pub struct ShardAudit {
    writer: RefCell<WalWriter>,
    shared: Arc<Shared>,
    index: usize,
    include_content: bool,
    spool_bytes_max: u64,
    /// The record [`ShardAudit::submit_with`] refills: its strings keep their
    /// capacity from one request to the next.
    scratch: RefCell<AuditRecord>,
}

impl ShardAudit {
    /// [`ShardAudit::submit`] of a record that `fill` writes over this shard's reused
    /// one (every field: it holds the previous request's values), so a record costs
    /// no allocation once the shard is warm. Same guarantees and errors as `submit`.
    pub fn submit_with(&self, fill: impl FnOnce(&mut AuditRecord)) -> Result<(), AuditError> {
        match self.scratch.try_borrow_mut() {
            Ok(mut r) => {
                fill(&mut r);
                self.submit(&r)
            }
            // Only if `fill` itself submitted: a fresh record, no panic.
            Err(_) => {
                let mut r = AuditRecord::default();
                fill(&mut r);
                self.submit(&r)
            }
        }
    }

    /// Appends a finished request's record to this shard's WAL. When it returns `Ok`,
    /// the record survives a kill of the process (and a power cut, with
    /// `audit.fsync: always`) and will be chained and shipped exactly once. Never
    /// waits on another thread; costs one copy into the mapped WAL part (plus `msync`
    /// under `always`).
    ///
    /// Errors: [`AuditError::SpoolFull`] when this shard's unshipped backlog reached
    /// `audit.spool_bytes_max` (answer 503), [`AuditError::Io`] when the write failed
    /// (disk full). `content` is dropped unless `audit.include_content` is on, and
    /// replaced by `{"dropped":"too large"}` when it would make the record too big.
    pub fn submit(&self, record: &AuditRecord) -> Result<(), AuditError> {
        self.check_backlog()?;
        let strip = record.content.is_some() && !self.include_content;
        let result = if strip {
            self.append_record(&AuditRecord { content: None, ..record.clone() })
        } else {
            self.append_record(record)
        };
        match result {
            Err(AuditError::Encode(_)) if record.content.is_some() => self.append_record(&AuditRecord {
                content: Some(serde_json::json!({ "dropped": "too large" })),
                ..record.clone()
            }),
            other => other,
        }
    }

    fn append_record(&self, record: &AuditRecord) -> Result<(), AuditError> {
        let mut writer = self.writer.borrow_mut();
        let part = writer.part();
        let n = writer
            .append(FrameKind::Audit, |buf| record.write_json(buf).map_err(|e| AuditError::Encode(e.to_string())))?;
        self.published(n, part, &writer);
        Ok(())
    }

    /// Reports an event for `BH_ALERTS` / `BH_EVENTS` (budget exhausted, circuit
    /// opened/closed). Durable like a record; same cost and errors as [`ShardAudit::submit`].
    pub fn event(&self, event: &Event) -> Result<(), AuditError> {
        self.check_backlog()?;
        let mut writer = self.writer.borrow_mut();
        let part = writer.part();
        let n = writer.append(FrameKind::Event, |buf| {
            serde_json::to_writer(&mut *buf, event).map_err(|e| AuditError::Encode(e.to_string()))
        })?;
        self.published(n, part, &writer);
        Ok(())
    }

    /// Tells the bridge about `n` more frame bytes and the part now being written
    /// (in this order: see [`LaneCounters::part`]); `before`: the part before the
    /// append (it rolls to a new one past the segment size).
    fn published(&self, n: u64, before: u64, writer: &WalWriter) {
        let lane = &self.shared.lanes[self.index];
        let part = writer.part();
        // This shard is `written`'s only writer: a plain store, no locked add.
        lane.written.store(lane.written.load(Ordering::Relaxed).wrapping_add(n), Ordering::Release);
        lane.part.store(part, Ordering::Release);
        if part != before {
            lane.set_handle(part, writer.part_handle());
        }
    }

    /// WAL bytes of this shard not yet stored.
    pub fn backlog_bytes(&self) -> u64 {
        self.shared.lanes[self.index].backlog_bytes()
    }

    fn check_backlog(&self) -> Result<(), AuditError> {
        let bytes = self.backlog_bytes();
        self.shared.priority.check(bytes);
        if bytes >= self.spool_bytes_max {
            self.shared.stats.spool_full_total.fetch_add(1, Ordering::Relaxed);
            return Err(AuditError::SpoolFull { shard: self.index, bytes });
        }
        Ok(())
    }
}
