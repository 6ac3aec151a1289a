//! The bridge thread's loop: recover, then tail the WAL, chain, store, checkpoint.
//!
//! Order of one step: read up to a batch of frames from every lane (round robin) →
//! publish the events derived from them (stable `Nats-Msg-Id`s, so a replay is
//! dropped) → build the batch's entries and store the batch together with the WAL
//! cursor after it → only then count it shipped and delete WAL parts it finished.
//! A crash anywhere in between leaves the stored cursor behind the unstored work, so
//! the next start re-reads exactly that work.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::events::{AuxMessage, Derived, Event};
use super::sink::{FileSink, NatsSink, Sink};
use super::{nats, BridgeError, BridgeReport, Settings, Shared};
use crate::audit::chain::ChainState;
use crate::audit::checkpoint::Checkpoint;
use crate::audit::message::{encode_checkpoint, BatchWriter, Cursor};
use crate::audit::wal::{self, FrameKind, LaneId, LaneReader, LaneState, ReadFrame, WriterPos};
use crate::audit::{AuditError, RecordView};
use crate::config::FsyncPolicy;
use crate::keys::SecretKey;

/// Bytes of entries per stored message; with the largest frame
/// ([`wal::FRAME_PAYLOAD_BYTES_MAX`]) a message stays under NATS' default 1 MiB payload.
const BATCH_BYTES_MAX: usize = 384 * 1024;
/// First sleep when there was nothing to read; it doubles while idle, up to
/// [`IDLE_POLL_MAX`].
const IDLE_POLL_MIN: Duration = Duration::from_millis(2);
/// Longest sleep while idle: at most this late to ship the first record after a lull.
const IDLE_POLL_MAX: Duration = Duration::from_millis(16);
/// Longest pause between store retries.
const RETRY_BACKOFF_MAX: Duration = Duration::from_millis(500);

const _: () = assert!(BATCH_BYTES_MAX + wal::FRAME_PAYLOAD_BYTES_MAX < 1024 * 1024 - 64 * 1024);

/// Unix time, ms.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// What a start records before storing anything, so the next start can find this
/// instance's chain and the cursor it started from.
#[derive(Debug, Serialize, Deserialize)]
struct StateFile {
    node: String,
    inst: String,
    sink: String,
    start_cursor: Cursor,
}

fn state_path(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("bridge").join("state.json")
}

struct Lane {
    reader: LaneReader,
    /// Frame bytes read so far (for live lanes: compared with the shard's counter).
    read_bytes: u64,
    exhausted: bool,
}

struct Worker {
    s: Settings,
    shared: Arc<Shared>,
    key: SecretKey,
    inst: String,
    sink: Sink,
    lanes: BTreeMap<LaneId, Lane>,
    /// The cursor as stored last.
    stored: Cursor,
    chain: ChainState,
    msg_index: u64,
    since_checkpoint: u64,
    last_checkpoint: Instant,
    derived: Derived,
    last_health: Instant,
    last_sessions: Instant,
    last_fsync: Instant,
    /// Per lane, the part below which every part was deleted (saves an unlink per step).
    deleted_below: BTreeMap<LaneId, u64>,
    /// Buffers reused by every step.
    msg_id_buf: String,
    frames: Vec<(LaneId, ReadFrame)>,
    scratch: Vec<ReadFrame>,
    aux_buf: Vec<AuxMessage>,
    message_buf: Vec<u8>,
}

/// Runs the bridge until shutdown. Entry point of the bridge thread.
pub(crate) async fn run(s: Settings, shared: Arc<Shared>, key: SecretKey) -> Result<BridgeReport, BridgeError> {
    let inst = format!("{:016x}", rand::random::<u64>());
    let sink = match &s.nats {
        None => Sink::File(FileSink::create(&s.data_dir, &s.node, &inst, s.audit.fsync)?),
        Some(n) => {
            let client = connect_with_retry(&s, &shared, n).await?;
            if let Some(client) = &client {
                tokio::spawn(watch_config(client.clone(), n.clone(), shared.clone()));
            }
            match client {
                Some(c) => Sink::Nats(Box::new(NatsSink::new(c, n, &s.node, &inst))),
                None => return Ok(BridgeReport::default()),
            }
        }
    };
    let derived = Derived::new(&s.node, s.audit.session_window_s, s.audit.sla_p99_ms);
    let now = Instant::now();
    let mut w = Worker {
        s,
        shared,
        key,
        inst,
        sink,
        lanes: BTreeMap::new(),
        stored: Cursor::new(),
        chain: ChainState::default(),
        msg_index: 0,
        since_checkpoint: 0,
        last_checkpoint: now,
        derived,
        last_health: now,
        last_sessions: now,
        last_fsync: now,
        deleted_below: BTreeMap::new(),
        msg_id_buf: String::new(),
        frames: Vec::new(),
        scratch: Vec::new(),
        aux_buf: Vec::new(),
        message_buf: Vec::new(),
    };
    let Some(cursor) = w.recover().await? else {
        return Ok(BridgeReport::default());
    };
    w.begin(cursor)?;
    w.main_loop().await
}

/// Connects to NATS, retrying until it works or shutdown passes its deadline (`None`).
async fn connect_with_retry(
    s: &Settings,
    shared: &Shared,
    n: &crate::config::NatsConfig,
) -> Result<Option<async_nats::Client>, BridgeError> {
    let timeout = Duration::from_millis(n.connect_timeout_ms);
    for attempt in 0u64.. {
        match nats::connect(&n.url, timeout, &format!("gatekeeper-bridge-{}", s.node)).await {
            Ok(c) => return Ok(Some(c)),
            Err(e) => {
                if attempt % 10 == 0 {
                    tracing::warn!(error = %e, attempt, "NATS unreachable; audit records wait in the WAL");
                }
            }
        }
        if past_deadline(shared) {
            return Ok(None);
        }
        tokio::time::sleep(backoff(attempt)).await;
    }
    Ok(None)
}

fn past_deadline(shared: &Shared) -> bool {
    shared.stop.load(Ordering::SeqCst) && now_ms() >= shared.stop_deadline_ms.load(Ordering::SeqCst)
}

fn backoff(attempt: u64) -> Duration {
    Duration::from_millis(20u64.saturating_mul(1 << attempt.min(5))).min(RETRY_BACKOFF_MAX)
}

/// Keeps the shards' `BH_CONFIG` view current: watches every key (with history, so
/// the current values arrive first) and re-watches after any error.
async fn watch_config(client: async_nats::Client, n: crate::config::NatsConfig, shared: Arc<Shared>) {
    use futures_util::StreamExt as _;
    let js = nats::context(client, Duration::from_millis(n.ack_timeout_ms));
    for attempt in 0u64.. {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let result: Result<(), String> = async {
            nats::provision(&js, &n).await.map_err(|e| e.to_string())?;
            let kv = nats::config_bucket(&js).await.map_err(|e| e.to_string())?;
            let mut watch = kv.watch_with_history(">").await.map_err(|e| e.to_string())?;
            while let Some(entry) = watch.next().await {
                let entry = entry.map_err(|e| e.to_string())?;
                let value = match entry.operation {
                    async_nats::jetstream::kv::Operation::Put => Some(&entry.value[..]),
                    _ => None,
                };
                match shared.feed.apply(&entry.key, value) {
                    Ok(true) => {
                        shared.stats.config_changes.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(key = %entry.key, revision = entry.revision, "applied BH_CONFIG change");
                    }
                    Ok(false) => {}
                    Err(e) => tracing::warn!(key = %entry.key, error = %e, "ignoring a bad BH_CONFIG value"),
                }
            }
            Err("watch ended".into())
        }
        .await;
        if let Err(e) = result {
            if attempt % 10 == 0 {
                tracing::warn!(error = %e, "BH_CONFIG watch interrupted; retrying");
            }
        }
        tokio::time::sleep(backoff(attempt)).await;
    }
}

impl Worker {
    /// Finds where the previous start stopped: the cursor in its chain's last stored
    /// message, else the cursor it started from. `None`: shutdown came first.
    async fn recover(&mut self) -> Result<Option<Cursor>, BridgeError> {
        let path = state_path(&self.s.data_dir);
        let prev: Option<StateFile> =
            match std::fs::read(&path) {
                Ok(bytes) => Some(serde_json::from_slice(&bytes).map_err(|e| {
                    BridgeError::Audit(AuditError::State { path: path.clone(), message: e.to_string() })
                })?),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(source) => return Err(BridgeError::Audit(AuditError::Io { path, source })),
            };
        let Some(prev) = prev else {
            return Ok(Some(Cursor::new()));
        };
        let fsync_interval = self.s.audit.fsync == FsyncPolicy::Interval;
        let (wal_dir, lanes) = (self.s.wal_dir.clone(), self.s.shards);
        match (prev.sink.as_str(), &mut self.sink) {
            ("file", _) => Ok(Some(
                FileSink::recover_cursor(&self.s.data_dir, &prev.node, &prev.inst)?.unwrap_or(prev.start_cursor),
            )),
            ("nats", Sink::Nats(n)) => {
                for attempt in 0u64.. {
                    match n.recover_cursor(&prev.node, &prev.inst).await {
                        Ok(c) => return Ok(Some(c.unwrap_or(prev.start_cursor))),
                        Err(e) => {
                            self.shared.stats.store_failures.fetch_add(1, Ordering::Relaxed);
                            if attempt % 10 == 0 {
                                tracing::warn!(error = %e, "cannot read the previous chain's position from NATS yet; retrying");
                            }
                        }
                    }
                    if past_deadline(&self.shared) {
                        return Ok(None);
                    }
                    if fsync_interval {
                        fsync_live_wal(&wal_dir, self.s.gen, lanes);
                    }
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Ok(None)
            }
            (kind, _) => {
                tracing::warn!(previous = kind, "the previous start stored to another kind of sink; resuming from its start cursor (records it stored may be chained again)");
                Ok(Some(prev.start_cursor))
            }
        }
    }

    /// Records this instance, opens every lane at the recovered cursor and deletes WAL
    /// parts the cursor is past.
    fn begin(&mut self, cursor: Cursor) -> Result<(), BridgeError> {
        let state = StateFile {
            node: self.s.node.clone(),
            inst: self.inst.clone(),
            sink: self.sink.kind().into(),
            start_cursor: cursor.clone(),
        };
        let path = state_path(&self.s.data_dir);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| AuditError::Io { path: dir.to_path_buf(), source })?;
        }
        wal::write_durably(&path, &serde_json::to_vec(&state).unwrap_or_default())?;
        *self.shared.inst.lock().unwrap_or_else(|p| p.into_inner()) = Some(self.inst.clone());
        for (key, (part, offset)) in &cursor {
            if let Some(lane) = LaneId::from_key(key) {
                self.open_lane(lane, *part, *offset);
            }
        }
        for (lane, part) in wal::list_parts(&self.s.wal_dir)? {
            if !self.lanes.contains_key(&lane) {
                // Not in the cursor: nothing of it was ever stored; start at its first part.
                self.open_lane(lane, part, 0);
            }
        }
        for shard in 0..self.s.shards {
            self.open_lane(LaneId { gen: self.s.gen, shard: shard as u32 }, 0, 0);
        }
        self.stored = cursor;
        self.delete_finished_parts();
        tracing::info!(node = %self.s.node, inst = %self.inst, lanes = self.lanes.len(), sink = self.sink.kind(), "audit chain started");
        Ok(())
    }

    fn open_lane(&mut self, lane: LaneId, part: u64, offset: u64) {
        let live = lane.gen == self.s.gen;
        self.lanes.entry(lane).or_insert_with(|| Lane {
            reader: LaneReader::new(&self.s.wal_dir, lane, part, offset, live),
            read_bytes: 0,
            exhausted: false,
        });
    }

    async fn main_loop(&mut self) -> Result<BridgeReport, BridgeError> {
        let mut idle = IDLE_POLL_MIN;
        loop {
            let stopping = self.shared.stop.load(Ordering::SeqCst);
            self.housekeeping().await;
            match self.step().await? {
                Step::Stored { full: true } => idle = IDLE_POLL_MIN,
                Step::Stored { full: false } => {
                    idle = IDLE_POLL_MIN;
                    if !stopping {
                        // Let the next batch gather more records (`audit.batch_wait_ms`).
                        tokio::time::sleep(Duration::from_millis(self.s.audit.batch_wait_ms)).await;
                    }
                }
                Step::Idle if stopping => break,
                Step::Idle => {
                    tokio::time::sleep(idle).await;
                    idle = (idle * 2).min(IDLE_POLL_MAX);
                }
                Step::Abandoned => return Ok(self.report(false)),
            }
        }
        // Drained: close the chain.
        let drained = self.checkpoint(true).await;
        self.fsync_wal();
        if let Err(e) = self.sink.sync() {
            tracing::warn!(error = %e, "final sync of the audit chain file failed");
        }
        Ok(self.report(drained))
    }

    fn report(&self, drained: bool) -> BridgeReport {
        BridgeReport {
            chain: format!("{}/{}", self.s.node, self.inst),
            entries: self.chain.seq,
            checkpoints: self.shared.stats.checkpoints_stored.load(Ordering::Relaxed),
            drained,
        }
    }

    /// Reads, chains and stores one batch.
    async fn step(&mut self) -> Result<Step, BridgeError> {
        let limit = (self.s.audit.batch_entries_max as u64)
            .min(self.s.audit.checkpoint_every.saturating_sub(self.since_checkpoint))
            .max(1) as usize;
        let mut frames = std::mem::take(&mut self.frames);
        frames.clear();
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut bytes = 0usize;
        for (id, lane) in self.lanes.iter_mut() {
            if frames.len() >= limit || bytes >= BATCH_BYTES_MAX || lane.exhausted {
                continue;
            }
            let mut writer = None;
            if lane.reader.live {
                let Some(c) = self.shared.lanes.get(id.shard as usize) else { continue };
                // Part first: see `LaneCounters::part`.
                let part = c.part.load(Ordering::Acquire);
                let written = c.written.load(Ordering::Acquire);
                if written == lane.read_bytes {
                    continue;
                }
                writer = Some(WriterPos { part, avail_bytes: written.saturating_sub(lane.read_bytes) });
            }
            scratch.clear();
            let skipped_before = lane.reader.skipped_bytes;
            let state = lane.reader.read(&mut scratch, limit - frames.len(), BATCH_BYTES_MAX - bytes, writer)?;
            self.shared
                .stats
                .wal_bytes_skipped
                .fetch_add(lane.reader.skipped_bytes - skipped_before, Ordering::Relaxed);
            lane.exhausted = state == LaneState::Exhausted;
            for f in scratch.drain(..) {
                lane.read_bytes += f.bytes;
                bytes += f.bytes as usize;
                frames.push((*id, f));
            }
        }
        self.scratch = scratch;
        let full = frames.len() >= limit || bytes >= BATCH_BYTES_MAX;
        if frames.is_empty() {
            // Parts may have been skipped over (torn tails, empty parts): the next
            // stored message's cursor remembers that; nothing to store now.
            self.frames = frames;
            self.retire_exhausted_lanes();
            return Ok(Step::Idle);
        }
        let mut cursor = self.stored.clone();
        for (id, lane) in &self.lanes {
            cursor.insert(id.key(), (lane.reader.part, lane.reader.offset));
        }
        let ts = now_ms();
        let mut aux = std::mem::take(&mut self.aux_buf);
        aux.clear();
        let mut message = std::mem::take(&mut self.message_buf);
        let mut chain = self.chain.clone();
        let (node, inst) = (self.s.node.as_str(), self.inst.as_str());
        let mut batch = BatchWriter::begin(&mut message, node, inst, &cursor);
        let mut msg_id = std::mem::take(&mut self.msg_id_buf);
        for (id, f) in &frames {
            // The record's stable WAL position (`<node>.w<gen>-<shard>-<part>-<end>`),
            // written into a reused buffer: this runs once per record.
            msg_id.clear();
            let _ = write!(msg_id, "{node}.w{}-{}-{}-{}", id.gen, id.shard, f.part, f.end);
            match f.kind {
                FrameKind::Audit => match RecordView::parse(&f.payload) {
                    Ok(r) => {
                        self.derived.record(&r, &msg_id, &mut aux);
                        // The entry holds the record's bytes exactly as the shard wrote them.
                        batch.entry(|out| chain.append(out, node, inst, ts, &f.payload));
                    }
                    Err(_) => {
                        // Keep it verifiable whatever it holds.
                        let record = serde_json::to_vec(
                            &serde_json::json!({ "unreadable_record": String::from_utf8_lossy(&f.payload) }),
                        )
                        .unwrap_or_default();
                        batch.entry(|out| chain.append(out, node, inst, ts, &record));
                    }
                },
                FrameKind::Event => match serde_json::from_slice::<Event>(&f.payload) {
                    Ok(ev) => {
                        let (stream, suffix) = ev.route();
                        let mut body = serde_json::to_value(&ev).unwrap_or_default();
                        body["node"] = serde_json::Value::from(node);
                        body["ts_unix_ms"] = serde_json::Value::from(ts);
                        let msg_id = msg_id.clone();
                        aux.push(AuxMessage {
                            stream,
                            suffix,
                            msg_id,
                            body: body.to_string().into_bytes(),
                            bulk: false,
                        });
                    }
                    Err(e) => tracing::warn!(error = %e, "skipping an unreadable event in the WAL"),
                },
            }
        }
        self.msg_id_buf = msg_id;
        // One `BH_EVENTS` message carries the batch's routing decisions.
        self.derived.flush_routes(&mut aux);
        let n = batch.len() as u64;
        batch.finish();
        let stored = self.store_step(&aux, &message, n, chain).await;
        self.aux_buf = aux;
        self.message_buf = message;
        if !stored {
            return Ok(Step::Abandoned);
        }
        // Events-only batches have no chain message to carry the cursor: it is carried
        // by the next one, and the events' stable ids make their replay harmless.
        if n > 0 {
            self.stored = cursor;
        }
        for (id, f) in &frames {
            if let Some(c) = self.shared.lanes.get(id.shard as usize).filter(|_| id.gen == self.s.gen) {
                c.shipped.fetch_add(f.bytes, Ordering::Relaxed);
            }
        }
        self.frames = frames;
        self.delete_finished_parts();
        if self.since_checkpoint >= self.s.audit.checkpoint_every && !self.checkpoint(false).await {
            return Ok(Step::Abandoned);
        }
        Ok(Step::Stored { full })
    }

    /// Stores a step's events, then its chain message of `n` entries (none when `n`
    /// is 0) and advances the chain to `chain`. False: abandoned at shutdown.
    async fn store_step(&mut self, aux: &[AuxMessage], message: &[u8], n: u64, chain: ChainState) -> bool {
        if !self.store_aux(aux).await {
            return false;
        }
        if n > 0 {
            self.msg_index += 1;
            let msg_id = format!("{}.{}.{}", self.s.node, self.inst, self.msg_index);
            if !self.store(&msg_id, message).await {
                return false;
            }
            self.chain = chain;
            self.since_checkpoint += n;
            self.shared.stats.entries_stored.fetch_add(n, Ordering::Relaxed);
        }
        true
    }

    /// Stores a chain message, retrying until it is stored or shutdown passes its
    /// deadline (false).
    async fn store(&mut self, msg_id: &str, bytes: &[u8]) -> bool {
        for attempt in 0u64.. {
            match self.sink.store(msg_id, bytes).await {
                Ok(()) => return true,
                Err(e) => {
                    self.shared.stats.store_failures.fetch_add(1, Ordering::Relaxed);
                    if attempt % 20 == 0 {
                        tracing::warn!(error = %e, attempt, "audit store failed; records wait in the WAL and are retried");
                    }
                }
            }
            if past_deadline(&self.shared) {
                return false;
            }
            // The WAL must keep its fsync promise even while the store is away.
            self.fsync_wal();
            tokio::time::sleep(backoff(attempt)).await;
        }
        false
    }

    async fn store_aux(&mut self, aux: &[AuxMessage]) -> bool {
        for attempt in 0u64.. {
            match self.sink.store_aux(aux).await {
                Ok(()) => return true,
                Err(e) => {
                    self.shared.stats.store_failures.fetch_add(1, Ordering::Relaxed);
                    if attempt % 20 == 0 {
                        tracing::warn!(error = %e, attempt, "event publish failed; retrying");
                    }
                }
            }
            if past_deadline(&self.shared) {
                return false;
            }
            self.fsync_wal();
            tokio::time::sleep(backoff(attempt)).await;
        }
        false
    }

    /// Signs and stores a checkpoint over the whole chain so far.
    async fn checkpoint(&mut self, last: bool) -> bool {
        let c = Checkpoint::sign(
            &self.key,
            &self.s.node,
            &self.inst,
            self.chain.seq,
            &self.chain.tree.root(),
            &self.chain.head,
            now_ms(),
            last,
        );
        self.msg_index += 1;
        let msg_id = format!("{}.{}.{}", self.s.node, self.inst, self.msg_index);
        let bytes = encode_checkpoint(&self.s.node, &self.inst, &self.stored, &c);
        if !self.store(&msg_id, &bytes).await {
            return false;
        }
        self.since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
        self.shared.stats.checkpoints_stored.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Timed duties: WAL/chain fsync, checkpoints by time and heartbeat, health and
    /// session reports.
    async fn housekeeping(&mut self) {
        let a = &self.s.audit;
        let (health_ms, sessions_ms) = (a.health_interval_ms, a.sessions_flush_ms);
        let (checkpoint_ms, heartbeat_ms) = (a.checkpoint_interval_ms, a.heartbeat_interval_ms);
        if a.fsync == FsyncPolicy::Interval && self.last_fsync.elapsed() >= Duration::from_millis(a.fsync_interval_ms) {
            self.fsync_wal();
            if let Err(e) = self.sink.sync() {
                tracing::warn!(error = %e, "fsync of the audit chain file failed");
            }
            self.last_fsync = Instant::now();
        }
        let since = self.last_checkpoint.elapsed();
        let due = (self.since_checkpoint > 0 && since >= Duration::from_millis(checkpoint_ms))
            || since >= Duration::from_millis(heartbeat_ms);
        if due {
            self.checkpoint(false).await;
        }
        let mut aux = Vec::new();
        if self.last_health.elapsed() >= Duration::from_millis(health_ms) {
            self.derived.health(now_ms(), health_ms, &mut aux);
            self.last_health = Instant::now();
        }
        if self.last_sessions.elapsed() >= Duration::from_millis(sessions_ms) {
            self.derived.sessions(now_ms(), &mut aux);
            self.last_sessions = Instant::now();
        }
        // Telemetry: one attempt; a lost report is superseded by the next.
        if let Err(e) = self.sink.store_aux(&aux).await {
            tracing::debug!(error = %e, "health/session report not published");
        }
    }

    /// `fsync: interval`: forces unshipped WAL parts of live lanes to disk.
    fn fsync_wal(&self) {
        if self.s.audit.fsync != FsyncPolicy::Interval {
            return;
        }
        for lane in self.lanes.values().filter(|l| l.reader.live) {
            // Bounded: parts from the reader's position to the newest.
            for part in lane.reader.part..lane.reader.part + 64 {
                let path = wal::part_path(&self.s.wal_dir, lane.reader.lane, part);
                match std::fs::File::open(&path) {
                    Ok(f) => {
                        if let Err(e) = f.sync_data() {
                            tracing::warn!(path = %path.display(), error = %e, "WAL fsync failed");
                        }
                    }
                    Err(_) => break,
                }
            }
        }
    }

    /// Deletes WAL parts every stored message has moved past.
    fn delete_finished_parts(&mut self) {
        for (key, (part, _)) in &self.stored {
            let Some(lane) = LaneId::from_key(key) else { continue };
            // Parts below the stored one are finished; walk down until one is missing.
            // `part - 1` was deleted already when the last pass saw the same part.
            let below = self.deleted_below.entry(lane).or_insert(0);
            if *below >= *part {
                continue;
            }
            *below = *part;
            for p in (0..*part).rev() {
                let path = wal::part_path(&self.s.wal_dir, lane, p);
                if std::fs::remove_file(&path).is_err() {
                    break;
                }
            }
        }
        self.retire_exhausted_lanes();
    }

    /// Drops dead lanes whose every byte is stored: deletes their last part and takes
    /// them out of the cursor (their generation is never reused).
    fn retire_exhausted_lanes(&mut self) {
        let done: Vec<LaneId> = self
            .lanes
            .iter()
            .filter(|(id, l)| match self.stored.get(&id.key()) {
                Some(at) => l.exhausted && *at == (l.reader.part, l.reader.offset),
                // Never stored and nothing in it: an idle shard's empty files.
                None => l.exhausted && l.read_bytes == 0 && l.reader.skipped_bytes == 0,
            })
            .map(|(id, _)| *id)
            .collect();
        for id in done {
            let last = self.lanes.get(&id).map_or(0, |l| l.reader.part);
            let mut deleted = true;
            for part in (0..=last).rev().take(64) {
                let path = wal::part_path(&self.s.wal_dir, id, part);
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "could not delete a shipped WAL part");
                        deleted = false;
                    }
                }
            }
            if !deleted {
                continue;
            }
            self.lanes.remove(&id);
            self.stored.remove(&id.key());
            self.deleted_below.remove(&id);
        }
    }
}

/// Fsyncs every part of the current generation's lanes (used before lanes are open).
fn fsync_live_wal(wal_dir: &Path, gen: u64, shards: usize) {
    for shard in 0..shards {
        for part in 0..64 {
            match std::fs::File::open(wal::part_path(wal_dir, LaneId { gen, shard: shard as u32 }, part)) {
                Ok(f) => {
                    let _ = f.sync_data();
                }
                Err(_) => break,
            }
        }
    }
}

enum Step {
    /// A batch was stored; `full` when it reached a limit (more may be waiting).
    Stored {
        full: bool,
    },
    Idle,
    Abandoned,
}
