//! The bridge (DESIGN §2): one thread running a tokio runtime that ships what the
//! shards hand it — audit records into a signed hash chain, events, health, session
//! state — to NATS JetStream, or to files under the data dir when no `nats` section
//! is configured; and that watches the `BH_CONFIG` bucket and hands changes to the
//! shards.
//!
//! How the parts hand off:
//! - [`Bridge::start`] (at serve time) takes the data dir lock, picks this start's WAL
//!   generation, loads or creates the node key and starts the thread.
//! - Each shard gets a [`ShardAudit`] from [`Bridge::shard`]. [`ShardAudit::submit`]
//!   appends a record to the shard's own WAL file (a copy into its mapping) and returns: the
//!   record now survives a kill of the process, and the shard never waited on another
//!   thread. The WAL is the spool: while NATS is away (or the bridge is behind), records
//!   wait there, bounded by `audit.spool_bytes_max`, and are shipped in order later.
//! - The worker (`worker.rs`) tails every shard's WAL, chains records into this node
//!   instance's chain, stores batches and signed checkpoints through a [`sink::Sink`],
//!   and keeps its WAL cursor inside each stored message, so a restart resumes exactly
//!   where the store says it stopped: nothing lost, nothing stored twice.
//! - [`feed::ConfigFeed`] carries `BH_CONFIG` changes to shards without a lock on the
//!   request path.
//! - [`Bridge::shutdown`] (at drain, after the shards stopped) ships what is left and
//!   closes the chain with a final checkpoint.

pub mod cli;
pub mod events;
pub mod feed;
pub mod nats;
pub mod sink;
mod worker;

use std::cell::RefCell;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use events::Event;
pub use feed::ConfigFeed;
pub use nats::NatsError;

use crate::audit::checkpoint::load_or_create_node_key;
use crate::audit::wal::{self, FrameKind, LaneId, WalWriter};
use crate::audit::{AuditError, AuditRecord};
use crate::config::{AuditConfig, Config, FsyncPolicy, NatsConfig};

/// Unix time, ms (the clock records and checkpoints use).
pub fn now_unix_ms() -> u64 {
    worker::now_ms()
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
#[derive(Debug, Default)]
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
}

/// Counters for `/metrics` and tests.
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
    /// `BH_CONFIG` changes applied.
    pub config_changes: AtomicU64,
}

/// Settings the worker runs with, resolved from the config at start.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    data_dir: PathBuf,
    wal_dir: PathBuf,
    node: String,
    gen: u64,
    shards: usize,
    audit: AuditConfig,
    nats: Option<NatsConfig>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    lanes: Box<[LaneCounters]>,
    stop: AtomicBool,
    /// Unix ms after which a stopping worker gives up shipping.
    stop_deadline_ms: AtomicU64,
    stats: BridgeStats,
    feed: Arc<ConfigFeed>,
    inst: Mutex<Option<String>>,
}

/// The running bridge. `Send + Sync`: share it in an `Arc`.
#[derive(Debug)]
pub struct Bridge {
    settings: Settings,
    shared: Arc<Shared>,
    thread: Mutex<Option<std::thread::JoinHandle<Result<BridgeReport, BridgeError>>>>,
    // Held for the process's life: one writer per data dir.
    _lock: File,
}

/// What the bridge did, returned by [`Bridge::shutdown`].
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
    /// Starts the bridge for a gateway with `shards` shards: locks the data dir, picks
    /// the WAL generation, loads (or creates) the node key, and starts the thread.
    /// Call once at serve time, before the shards start.
    pub fn start(config: &Config, shards: usize) -> Result<Bridge, BridgeError> {
        let audit = config.audit.clone();
        let data_dir = audit.data_dir.clone();
        let io = |p: &Path| {
            let path = p.to_path_buf();
            move |source| AuditError::Io { path, source }
        };
        std::fs::create_dir_all(&data_dir).map_err(io(&data_dir))?;
        let lock_path = data_dir.join("LOCK");
        let lock = std::fs::OpenOptions::new()
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
        let node = audit.node_name.clone().unwrap_or_else(host_node_name);
        let base_revoked = config.keys.as_ref().map(|k| k.revoked.clone()).unwrap_or_default();
        let shared = Arc::new(Shared {
            lanes: (0..shards).map(|_| LaneCounters::default()).collect(),
            stop: AtomicBool::new(false),
            stop_deadline_ms: AtomicU64::new(u64::MAX),
            stats: BridgeStats::default(),
            feed: Arc::new(ConfigFeed::new(base_revoked)),
            inst: Mutex::new(None),
        });
        let settings = Settings { data_dir, wal_dir, node, gen, shards, audit, nats: config.nats.clone() };
        let (s, sh) = (settings.clone(), shared.clone());
        let thread = std::thread::Builder::new()
            .name("gk-bridge".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| BridgeError::Thread(e.to_string()))?;
                rt.block_on(worker::run(s, sh, key))
            })
            .map_err(|e| BridgeError::Thread(e.to_string()))?;
        tracing::info!(node = %settings.node, generation = gen, nats = settings.nats.is_some(), "audit bridge started");
        Ok(Bridge { settings, shared, thread: Mutex::new(Some(thread)), _lock: lock })
    }

    /// The audit handle of shard `index`: creates its WAL file. Call once per shard,
    /// on any thread (the handle is `Send`, and used only by its shard afterwards).
    pub fn shard(&self, index: usize) -> Result<ShardAudit, AuditError> {
        let counters = self.shared.lanes.get(index).ok_or_else(|| AuditError::Encode(format!("no shard {index}")))?;
        let lane = LaneId { gen: self.settings.gen, shard: index as u32 };
        let a = &self.settings.audit;
        let writer =
            WalWriter::create(&self.settings.wal_dir, lane, a.wal_segment_bytes, a.fsync == FsyncPolicy::Always)?;
        counters.opened.store(true, Ordering::Release);
        Ok(ShardAudit {
            writer: RefCell::new(writer),
            shared: self.shared.clone(),
            index,
            include_content: a.include_content,
            spool_bytes_max: a.spool_bytes_max,
        })
    }

    /// The hot configuration the bridge keeps current from `BH_CONFIG`.
    pub fn config_feed(&self) -> Arc<ConfigFeed> {
        self.shared.feed.clone()
    }

    /// Counters.
    pub fn stats(&self) -> &BridgeStats {
        &self.shared.stats
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.settings.node
    }

    /// This instance's id, once the worker has started its chain.
    pub fn instance(&self) -> Option<String> {
        self.shared.inst.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Ships what is left, closes the chain with a final checkpoint and joins the
    /// thread. Call at drain, after the shards stopped submitting. Waits at most
    /// `timeout` for the store (NATS may be away); what is not stored by then stays in
    /// the WAL and ships on the next start.
    pub fn shutdown(&self, timeout: Duration) -> Result<BridgeReport, BridgeError> {
        let deadline = worker::now_ms().saturating_add(timeout.as_millis() as u64);
        self.shared.stop_deadline_ms.store(deadline, Ordering::SeqCst);
        self.shared.stop.store(true, Ordering::SeqCst);
        let handle = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        match handle {
            Some(h) => h.join().map_err(|_| BridgeError::Thread("the bridge thread panicked".into()))?,
            None => Ok(BridgeReport::default()),
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        // Not a substitute for `shutdown`: a short, final try.
        if let Err(e) = self.shutdown(Duration::from_millis(500)) {
            tracing::warn!(error = %e, "audit bridge stopped with an error");
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

/// A shard's audit handle. `!Sync`: one per shard thread.
#[derive(Debug)]
pub struct ShardAudit {
    writer: RefCell<WalWriter>,
    shared: Arc<Shared>,
    index: usize,
    include_content: bool,
    spool_bytes_max: u64,
}

impl ShardAudit {
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
        let n = writer.append(FrameKind::Audit, |buf| {
            serde_json::to_writer(&mut *buf, record).map_err(|e| AuditError::Encode(e.to_string()))
        })?;
        self.published(n, writer.part());
        Ok(())
    }

    /// Reports an event for `BH_ALERTS` / `BH_EVENTS` (budget exhausted, circuit
    /// opened/closed). Durable like a record; same cost and errors as [`ShardAudit::submit`].
    pub fn event(&self, event: &Event) -> Result<(), AuditError> {
        self.check_backlog()?;
        let mut writer = self.writer.borrow_mut();
        let n = writer.append(FrameKind::Event, |buf| {
            serde_json::to_writer(&mut *buf, event).map_err(|e| AuditError::Encode(e.to_string()))
        })?;
        self.published(n, writer.part());
        Ok(())
    }

    /// Tells the bridge about `n` more frame bytes and the part now being written
    /// (in this order: see [`LaneCounters::part`]).
    fn published(&self, n: u64, part: u64) {
        let lane = &self.shared.lanes[self.index];
        lane.written.fetch_add(n, Ordering::Release);
        lane.part.store(part, Ordering::Release);
    }

    /// The hot configuration feed (for the shard's revocation check).
    pub fn config_feed(&self) -> &Arc<ConfigFeed> {
        &self.shared.feed
    }

    /// WAL bytes of this shard not yet stored.
    pub fn backlog_bytes(&self) -> u64 {
        let c = &self.shared.lanes[self.index];
        c.written.load(Ordering::Relaxed).saturating_sub(c.shipped.load(Ordering::Relaxed))
    }

    fn check_backlog(&self) -> Result<(), AuditError> {
        let bytes = self.backlog_bytes();
        if bytes >= self.spool_bytes_max {
            self.shared.stats.spool_full_total.fetch_add(1, Ordering::Relaxed);
            return Err(AuditError::SpoolFull { shard: self.index, bytes });
        }
        Ok(())
    }
}
