//! Audit shipping, the step loop: tail every shard's WAL, chain the records, store
//! each batch together with the WAL cursor after it.
//!
//! Order of one step: read up to a batch of frames from every lane (round robin) →
//! store the events derived from them (stable `Nats-Msg-Id`s, so a replay is
//! dropped) → build the batch's entries and store the batch with the cursor after it
//! → only then count it shipped and delete WAL parts it finished. A crash anywhere in
//! between leaves the stored cursor behind the unstored work, so the next start
//! re-reads exactly that work ([`super::resume`]).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::events::{AuxMessage, Derived, Event};
use super::retry::{retry, Policy};
use super::sink::{FileSink, NatsSink, Sink};
use super::{now_unix_ms, BridgeError, BridgeReport, Settings, Shared};
use crate::audit::chain::ChainState;
use crate::audit::message::{BatchWriter, Cursor};
use crate::audit::wal::{self, FrameKind, LaneId, LaneReader, LaneState, ReadFrames, WriterPos};
use crate::audit::{PartHandle, RecordView};
use crate::config::{FsyncPolicy, NatsConfig};
use crate::keys::SecretKey;

/// Bytes of entries per stored message; with the largest frame
/// ([`wal::FRAME_PAYLOAD_BYTES_MAX`]) a message stays under NATS' default 1 MiB payload.
const BATCH_BYTES_MAX: usize = 384 * 1024;
/// First sleep when there was nothing to read; it doubles while idle, up to
/// [`IDLE_POLL_MAX`].
const IDLE_POLL_MIN: Duration = Duration::from_millis(2);
/// Longest sleep while idle: at most this late to ship the first record after a lull.
const IDLE_POLL_MAX: Duration = Duration::from_millis(16);
/// Retries of a store: records wait in the WAL meanwhile.
const STORE_RETRY: Policy =
    Policy { backoff_first: Duration::from_millis(20), backoff_max: Duration::from_millis(500), log_every: 20 };

const _: () = assert!(BATCH_BYTES_MAX + wal::FRAME_PAYLOAD_BYTES_MAX < 1024 * 1024 - 64 * 1024);

/// One shard's WAL (of this start or an earlier one) as the shipper reads it.
pub(super) struct Lane {
    pub(super) reader: LaneReader,
    /// Frame bytes read so far (for live lanes: compared with the shard's counter).
    pub(super) read_bytes: u64,
    pub(super) exhausted: bool,
    /// `(part, offset)` below which the WAL was punched out ([`Shipper::punch_stored_ranges`]).
    pub(super) punched: (u64, u64),
    /// `(part, offset)` up to which the pages ahead of the shard were faulted in ([`prefault_ahead`]).
    pub(super) prefaulted: (u64, u64),
    /// The shard's handle on the part it writes, `(part, handle)`, kept from step to
    /// step (the shard's slot is locked once per part): the reader reads that part
    /// in place through it, and [`prefault_ahead`] faults its pages in.
    pub(super) handle: Option<(u64, PartHandle)>,
}

/// The shipper's state; its parts live in this module and in [`super::resume`],
/// [`super::checkpoints`] and [`super::housekeeping`].
pub(super) struct Shipper {
    pub(super) s: Settings,
    pub(super) shared: Arc<Shared>,
    pub(super) key: SecretKey,
    pub(super) inst: String,
    pub(super) sink: Sink,
    pub(super) lanes: BTreeMap<LaneId, Lane>,
    /// The cursor as stored last.
    pub(super) stored: Cursor,
    pub(super) chain: ChainState,
    pub(super) msg_index: u64,
    pub(super) since_checkpoint: u64,
    pub(super) last_checkpoint: Instant,
    pub(super) derived: Derived,
    pub(super) last_health: Instant,
    pub(super) last_sessions: Instant,
    pub(super) last_fsync: Instant,
    /// An `fdatasync` of the chain file failed (see [`Shipper::syncs_by_chain_file`]).
    chain_sync_failed: bool,
    /// Per lane, the part below which every part was deleted (saves an unlink per step).
    pub(super) deleted_below: BTreeMap<LaneId, u64>,
    /// Buffers reused by every step.
    msg_id_buf: String,
    /// A step's frames, from every lane.
    frames: ReadFrames,
    aux_buf: Vec<AuxMessage>,
    message_buf: Vec<u8>,
    /// Whether the kernel faults pages in on request ([`prefault_ahead`]).
    prefault_on: bool,
}

/// What one step did.
enum Step {
    /// A batch was stored; `full` when it reached a limit (more may be waiting).
    Stored { full: bool },
    /// Nothing to read.
    Idle,
    /// Shutdown passed its deadline before the store took the batch.
    Abandoned,
}

/// Ships until shutdown: to JetStream over `nats`, else to chain files.
pub(super) async fn run(
    s: Settings,
    shared: Arc<Shared>,
    key: SecretKey,
    nats: Option<(async_nats::Client, &NatsConfig)>,
) -> Result<BridgeReport, BridgeError> {
    let inst = format!("{:016x}", rand::random::<u64>());
    let sink = match nats {
        None => Sink::File(FileSink::create(&s.data_dir, &s.node, &inst, s.audit.fsync)?),
        Some((client, n)) => Sink::Nats(Box::new(NatsSink::new(client, n, &s.node, &inst))),
    };
    let derived = Derived::new(&s.node, s.audit.session_window_s, s.audit.sla_p99_ms);
    let now = Instant::now();
    let mut w = Shipper {
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
        chain_sync_failed: false,
        deleted_below: BTreeMap::new(),
        msg_id_buf: String::new(),
        frames: ReadFrames::default(),
        aux_buf: Vec::new(),
        message_buf: Vec::new(),
        prefault_on: true,
    };
    let Some(cursor) = w.recover().await? else {
        return Ok(BridgeReport::default());
    };
    w.begin(cursor)?;
    w.main_loop().await
}

impl Shipper {
    /// Steps until shutdown finds nothing left (then closes the chain) or passes its
    /// deadline. Bounded: once stopping, the shards write nothing more, so the WAL
    /// runs dry or the store gives up at the deadline.
    async fn main_loop(&mut self) -> Result<BridgeReport, BridgeError> {
        let mut idle = IDLE_POLL_MIN;
        loop {
            let stopping = self.shared.shutdown.stopping();
            self.turn_priority(stopping);
            self.checkpoint_if_due().await;
            if self.fsync_due() && !self.sync_interval().await? {
                return Ok(self.report(false));
            }
            self.housekeeping().await;
            match self.step().await? {
                Step::Stored { full: true } => idle = IDLE_POLL_MIN,
                Step::Stored { full: false } => {
                    idle = IDLE_POLL_MIN;
                    if !stopping {
                        // Let the next batch gather more records (`audit.batch_wait_ms`),
                        // but not past the next `fsync: interval` tick.
                        let wait = Duration::from_millis(self.s.audit.batch_wait_ms).min(self.until_fsync_due());
                        tokio::time::sleep(wait).await;
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
        self.final_sync();
        Ok(self.report(drained))
    }

    /// Each turn of the loop under `bridge.policy: idle`: tells the shards the bridge
    /// runs, and goes back to idle once it caught up after a shard raised it; a normal
    /// thread for good once shutdown began.
    fn turn_priority(&self, stopping: bool) {
        let p = &self.shared.priority;
        if stopping {
            p.stay_normal();
            return;
        }
        p.beat();
        if !p.is_idle() {
            let behind = self.shared.lanes.iter().map(|l| l.backlog_bytes()).max().unwrap_or(0);
            p.lower_if_caught_up(behind);
        }
    }

    fn report(&self, drained: bool) -> BridgeReport {
        BridgeReport {
            chain: format!("{}/{}", self.s.node, self.inst),
            entries: self.chain.seq,
            checkpoints: self.shared.stats.checkpoints_stored.load(Ordering::Relaxed),
            drained,
        }
    }

    /// Whether WAL parts and dead lanes may be deleted as soon as their records are
    /// stored. Not with the embedded chain file under `fsync: interval`: its lines
    /// are durable only after the next tick's `fdatasync`, and until then the WAL
    /// part is their other copy (see [`Shipper::sync_interval`]).
    fn deletes_after_store(&self) -> bool {
        !self.syncs_by_chain_file()
    }

    /// Whether `fsync: interval` ticks make records durable through the chain file
    /// (embedded sink) rather than the WAL. Not after an `fdatasync` of the chain file
    /// failed: Linux may then have dropped its dirty pages and a later call succeeds
    /// anyway, so for the rest of this process the WAL is fsynced as with JetStream.
    fn syncs_by_chain_file(&self) -> bool {
        matches!(self.sink, Sink::File(_)) && self.s.audit.fsync == FsyncPolicy::Interval && !self.chain_sync_failed
    }

    /// Whether an `fsync: interval` tick is due.
    fn fsync_due(&self) -> bool {
        self.s.audit.fsync == FsyncPolicy::Interval && self.until_fsync_due().is_zero()
    }

    /// Time left until the next `fsync: interval` tick (the longest wait, for other policies).
    fn until_fsync_due(&self) -> Duration {
        if self.s.audit.fsync != FsyncPolicy::Interval {
            return Duration::MAX;
        }
        Duration::from_millis(self.s.audit.fsync_interval_ms).saturating_sub(self.last_fsync.elapsed())
    }

    /// One `fsync: interval` tick: makes every record the shards wrote before it
    /// durable. False: abandoned at shutdown.
    ///
    /// With JetStream the WAL is what survives a power cut here (nats-server syncs on
    /// its own schedule), so its live parts are fsynced, as always.
    ///
    /// With the embedded chain file the WAL needs only to survive a *process* crash
    /// (the page cache does that) until the chain file holds its records and is
    /// fsynced. So the tick first ships what the shards wrote before it (up to
    /// [`SYNC_CATCH_UP_STEPS_MAX`] batches, without waiting for batches to fill),
    /// then fsyncs the chain file, and fsyncs the WAL only of a lane the shipping
    /// could not catch up with — the old tick, and the same promise: a power cut
    /// loses at most the records of the last `fsync_interval_ms` (plus one tick's
    /// duration). Only then are WAL parts whose records the chain file holds deleted,
    /// and the stored range of each live part punched out: the WAL's dirty pages are
    /// dropped before the kernel writes them back, so the audit log goes to disk once
    /// (the chain file) instead of twice.
    async fn sync_interval(&mut self) -> Result<bool, BridgeError> {
        self.last_fsync = Instant::now();
        if !self.syncs_by_chain_file() {
            fsync_lanes(&self.s, &self.lanes);
            if let Err(e) = self.sink.sync() {
                tracing::warn!(error = %e, "fsync of the audit chain file failed");
            }
            return Ok(true);
        }
        // What each live lane's shard had written when the tick began.
        let written: Vec<(LaneId, u64)> = self
            .lanes
            .iter()
            .filter(|(_, l)| l.reader.live)
            .filter_map(|(id, _)| {
                let c = self.shared.lanes.get(id.shard as usize).filter(|_| id.gen == self.s.gen)?;
                Some((*id, c.written.load(Ordering::Acquire)))
            })
            .collect();
        let behind = |lanes: &BTreeMap<LaneId, Lane>| {
            written.iter().filter(|(id, w)| lanes.get(id).is_some_and(|l| l.read_bytes < *w)).count()
        };
        for _ in 0..SYNC_CATCH_UP_STEPS_MAX {
            if behind(&self.lanes) == 0 {
                break;
            }
            match self.step().await? {
                Step::Stored { .. } => {}
                Step::Idle => break,
                Step::Abandoned => return Ok(false),
            }
        }
        // Every frame read was stored by its step (a step stores all it read or abandons).
        let lagging: BTreeMap<LaneId, &Lane> = self
            .lanes
            .iter()
            .filter(|(id, l)| written.iter().any(|(w_id, w)| w_id == *id && l.read_bytes < *w))
            .map(|(id, l)| (*id, l))
            .collect();
        match self.sink.sync() {
            Ok(()) => {
                if !lagging.is_empty() {
                    fsync_lane_parts(&self.s, lagging.values().copied());
                }
                self.delete_finished_parts();
                self.punch_stored_ranges();
            }
            Err(e) => {
                // The chain file's lines are not known to be on disk: keep and fsync every
                // WAL part, from now on.
                tracing::error!(error = %e, "fsync of the audit chain file failed; fsyncing the WAL from now on");
                self.chain_sync_failed = true;
                fsync_lanes(&self.s, &self.lanes);
            }
        }
        Ok(true)
    }

    /// After the chain file's fsync: drops the stored (now durable) range of each live
    /// lane's current WAL part, so its dirty pages are never written back even when
    /// the part lives longer than the kernel's write-back delay (a quiet gateway).
    fn punch_stored_ranges(&mut self) {
        for (id, lane) in self.lanes.iter_mut().filter(|(_, l)| l.reader.live) {
            let Some(&(part, offset)) = self.stored.get(&id.key()) else { continue };
            if lane.punched == (part, offset) {
                continue;
            }
            // Below a page boundary already punched, a call would only cost.
            let page = rustix::param::page_size() as u64;
            if lane.punched.0 == part && offset / page <= lane.punched.1 / page {
                continue;
            }
            let upto = lane.reader.punch_below(part, offset);
            if upto > 0 {
                lane.punched = (part, upto);
            }
        }
    }

    /// Reads, chains and stores one batch.
    async fn step(&mut self) -> Result<Step, BridgeError> {
        let limit = (self.s.audit.batch_entries_max as u64)
            .min(self.s.audit.checkpoint_every.saturating_sub(self.since_checkpoint))
            .max(1) as usize;
        let mut frames = std::mem::take(&mut self.frames);
        frames.clear();
        let bytes = self.read_frames(&mut frames, limit)?;
        let full = frames.len() >= limit || bytes >= BATCH_BYTES_MAX;
        if frames.is_empty() {
            // Parts may have been skipped over (torn tails, empty parts): the next
            // stored message's cursor remembers that; nothing to store now.
            self.frames = frames;
            if self.deletes_after_store() {
                self.retire_exhausted_lanes();
            }
            return Ok(Step::Idle);
        }
        let mut cursor = self.stored.clone();
        for (id, lane) in &self.lanes {
            cursor.insert(id.key(), (lane.reader.part, lane.reader.offset));
        }
        let mut aux = std::mem::take(&mut self.aux_buf);
        aux.clear();
        let mut message = std::mem::take(&mut self.message_buf);
        let mut chain = self.chain.clone();
        let n = self.chain_frames(&frames, &cursor, &mut chain, &mut message, &mut aux);
        let stored = self.store_step(&aux, &message, n, chain).await;
        self.derived.reuse_routes_body(&mut aux);
        self.aux_buf = aux;
        self.message_buf = message;
        if !stored {
            self.frames = frames;
            return Ok(Step::Abandoned);
        }
        // Events-only batches have no chain message to carry the cursor: it is carried
        // by the next one, and the events' stable ids make their replay harmless.
        if n > 0 {
            self.stored = cursor;
        }
        // One add per lane (frames come lane by lane), not per frame: the shard reads
        // this line on every request.
        for run in frames.frames.chunk_by(|a, b| a.lane == b.lane) {
            let lane = run[0].lane;
            if let Some(c) = self.shared.lanes.get(lane.shard as usize).filter(|_| lane.gen == self.s.gen) {
                c.shipped.fetch_add(run.iter().map(|f| f.bytes).sum(), Ordering::Relaxed);
            }
        }
        self.frames = frames;
        if self.deletes_after_store() {
            self.delete_finished_parts();
        }
        if self.checkpoint_due_by_count() && !self.checkpoint(false).await {
            return Ok(Step::Abandoned);
        }
        Ok(Step::Stored { full })
    }

    /// Reads up to `limit` frames (and about [`BATCH_BYTES_MAX`] bytes) into `frames`,
    /// lane by lane; returns the bytes read.
    fn read_frames(&mut self, frames: &mut ReadFrames, limit: usize) -> Result<usize, BridgeError> {
        let mut bytes = 0usize;
        let syncs_by_chain_file = self.syncs_by_chain_file();
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
                if lane.handle.as_ref().is_none_or(|(p, _)| *p != part) {
                    lane.handle = c.handle(part).map(|h| (part, h));
                }
                writer = Some(WriterPos { part, avail_bytes: written.saturating_sub(lane.read_bytes) });
            }
            let first = frames.len();
            let skipped_before = lane.reader.skipped_bytes;
            let mapped = lane.handle.as_ref().map(|(p, h)| (*p, h));
            let state = lane.reader.read(frames, limit - first, BATCH_BYTES_MAX - bytes, writer, mapped)?;
            // Only while the WAL is punched rather than fsynced (the embedded chain file):
            // populated pages are dirty zeros, which an fsync of the part would write out
            // before the records do (twice the WAL's disk writes, and slower ticks).
            if let Some(w) = writer.filter(|_| self.prefault_on && syncs_by_chain_file) {
                self.prefault_on = prefault_ahead(lane, w.part);
            }
            self.shared
                .stats
                .wal_bytes_skipped
                .fetch_add(lane.reader.skipped_bytes.saturating_sub(skipped_before), Ordering::Relaxed);
            lane.exhausted = state == LaneState::Exhausted;
            for f in &frames.frames[first..] {
                lane.read_bytes += f.bytes;
                bytes += f.bytes as usize;
            }
        }
        Ok(bytes)
    }

    /// Chains the audit records of `frames` into `message` (a batch carrying
    /// `cursor`), advancing `chain`, and turns records and events into `aux`
    /// messages. Returns the number of entries.
    fn chain_frames(
        &mut self,
        frames: &ReadFrames,
        cursor: &Cursor,
        chain: &mut ChainState,
        message: &mut Vec<u8>,
        aux: &mut Vec<AuxMessage>,
    ) -> u64 {
        let ts = now_unix_ms();
        let (node, inst) = (self.s.node.as_str(), self.inst.as_str());
        let mut batch = BatchWriter::begin(message, node, inst, cursor);
        let mut msg_id = std::mem::take(&mut self.msg_id_buf);
        // `msg_id` starts with `<node>.w<gen>-<shard>-` of `prefix_lane` (its first
        // `prefix_len` bytes): frames come lane by lane, so it is rarely rewritten.
        let mut prefix_lane = None;
        let mut prefix_len = 0;
        for f in frames.iter() {
            let id = &f.lane;
            // The record's stable WAL position (`<node>.w<gen>-<shard>-<part>-<end>`),
            // written into a reused buffer: this runs once per record.
            if prefix_lane != Some(*id) {
                msg_id.clear();
                msg_id.push_str(node);
                msg_id.push_str(".w");
                push_decimal(&mut msg_id, id.gen);
                msg_id.push('-');
                push_decimal(&mut msg_id, u64::from(id.shard));
                msg_id.push('-');
                prefix_lane = Some(*id);
                prefix_len = msg_id.len();
            }
            msg_id.truncate(prefix_len);
            push_decimal(&mut msg_id, f.part);
            msg_id.push('-');
            push_decimal(&mut msg_id, f.end);
            let payload = frames.payload(f);
            match f.kind {
                FrameKind::Audit => match RecordView::parse(payload) {
                    Ok(r) => {
                        self.derived.record(&r, &msg_id, aux);
                        // The entry holds the record's bytes exactly as the shard wrote them.
                        batch.entry(|out| chain.append(out, node, inst, ts, payload));
                    }
                    Err(_) => {
                        // Keep it verifiable whatever it holds.
                        let record = serde_json::to_vec(
                            &serde_json::json!({ "unreadable_record": String::from_utf8_lossy(payload) }),
                        )
                        .unwrap_or_default();
                        batch.entry(|out| chain.append(out, node, inst, ts, &record));
                    }
                },
                FrameKind::Event => match serde_json::from_slice::<Event>(payload) {
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
        self.derived.flush_routes(aux);
        let n = batch.len() as u64;
        batch.finish();
        n
    }

    /// Stores a step's events, then its chain message of `n` entries (none when `n`
    /// is 0) and advances the chain to `chain`. False: abandoned at shutdown.
    async fn store_step(&mut self, aux: &[AuxMessage], message: &[u8], n: u64, chain: ChainState) -> bool {
        if !self.store_aux(aux).await {
            return false;
        }
        if n > 0 {
            let msg_id = self.next_msg_id();
            if !self.store(&msg_id, message).await {
                return false;
            }
            self.chain = chain;
            self.since_checkpoint += n;
            self.shared.stats.entries_stored.fetch_add(n, Ordering::Relaxed);
        }
        true
    }

    /// The `Nats-Msg-Id` of this chain's next message.
    pub(super) fn next_msg_id(&mut self) -> String {
        self.msg_index += 1;
        format!("{}.{}.{}", self.s.node, self.inst, self.msg_index)
    }

    /// Stores a chain message, retrying until it is stored or shutdown passes its
    /// deadline (false).
    pub(super) async fn store(&mut self, msg_id: &str, bytes: &[u8]) -> bool {
        self.store_with_retry("storing audit records (they wait in the WAL)", Stored::Chain(msg_id, bytes)).await
    }

    /// Stores events, retrying like [`Shipper::store`].
    async fn store_aux(&mut self, aux: &[AuxMessage]) -> bool {
        self.store_with_retry("publishing events", Stored::Events(aux)).await
    }

    /// The one retry loop both stores share: a failure is counted and, since the WAL
    /// must keep its fsync promise while the store is away, the live WAL is fsynced.
    async fn store_with_retry(&mut self, what: &str, item: Stored<'_>) -> bool {
        let (sink, shared, s, lanes) = (&mut self.sink, &self.shared, &self.s, &self.lanes);
        retry(what, &STORE_RETRY, &shared.shutdown, async |_| {
            let result = match item {
                Stored::Chain(msg_id, bytes) => sink.store(msg_id, bytes).await,
                Stored::Events(aux) => sink.store_aux(aux).await,
            };
            if result.is_err() {
                shared.stats.store_failures.fetch_add(1, Ordering::Relaxed);
                fsync_lanes(s, lanes);
            }
            result
        })
        .await
        .is_some()
    }
}

/// How far ahead of each shard's WAL writer the bridge faults pages in
/// ([`prefault_ahead`]): a few steps' worth of records at 30,000 requests/s per shard.
const WAL_PREFAULT_AHEAD_BYTES: u64 = 2 << 20;

/// Faults in the pages of `lane`'s part `writer_part` from where its reader stands
/// (which, caught up, is where the shard writes) to [`WAL_PREFAULT_AHEAD_BYTES`] past
/// it, on the bridge's thread: each page's allocation, zero-fill and `page_mkwrite`
/// then happen here, in one call, instead of in a page fault on the shard's thread in
/// the middle of a request. False: the kernel cannot (before Linux 5.14), stop asking.
fn prefault_ahead(lane: &mut Lane, writer_part: u64) -> bool {
    let reader = &lane.reader;
    if writer_part != reader.part {
        return true;
    }
    let Some((_, handle)) = lane.handle.as_ref().filter(|(p, _)| *p == writer_part) else { return true };
    let from = match lane.prefaulted {
        (part, upto) if part == reader.part => upto.max(reader.offset),
        _ => reader.offset,
    };
    let end = reader.offset.saturating_add(WAL_PREFAULT_AHEAD_BYTES).min(handle.mapped_bytes() as u64);
    // Small steps are not worth a call: wait for a quarter of the window.
    if end <= from || (end - from < WAL_PREFAULT_AHEAD_BYTES / 4 && from > reader.offset) {
        return true;
    }
    match handle.populate(from as usize, (end - from) as usize) {
        Ok(()) => {
            lane.prefaulted = (reader.part, end);
            true
        }
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            tracing::debug!("MADV_POPULATE_WRITE unsupported: the shards fault their WAL pages in themselves");
            false
        }
        // Past a part the shard just finished and trimmed: the next step sees the new part.
        Err(_) => true,
    }
}

/// Parts of one lane visited per pass: far more than a lane holds between passes.
pub(super) const PARTS_PER_PASS_MAX: u64 = 64;

/// Batches an `fsync: interval` tick may ship to catch up with what the shards wrote
/// before it; a lane still behind after them has its WAL fsynced instead.
const SYNC_CATCH_UP_STEPS_MAX: usize = 8;

/// `fsync: interval`: forces unshipped WAL parts of live lanes to disk.
pub(super) fn fsync_lanes(s: &Settings, lanes: &BTreeMap<LaneId, Lane>) {
    if s.audit.fsync != FsyncPolicy::Interval {
        return;
    }
    fsync_lane_parts(s, lanes.values());
}

/// Fsyncs the WAL parts of the live lanes among `lanes`, from each reader's part on.
fn fsync_lane_parts<'a>(s: &Settings, lanes: impl Iterator<Item = &'a Lane>) {
    for lane in lanes.filter(|l| l.reader.live) {
        // From the reader's position to the newest part.
        let first = lane.reader.part;
        for part in first..first.saturating_add(PARTS_PER_PASS_MAX) {
            let path = wal::part_path(&s.wal_dir, lane.reader.lane, part);
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

/// Appends `n` in decimal, as `n.to_string()` writes it, without the formatting
/// machinery (this runs for every record's message id).
fn push_decimal(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    // Bounded: a u64 has at most 20 decimal digits.
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // ASCII digits: one copy instead of a push (and its UTF-8 encoding) per digit.
    out.push_str(std::str::from_utf8(digits.get(i..).unwrap_or_default()).unwrap_or_default());
}

/// What [`Shipper::store_with_retry`] stores.
#[derive(Clone, Copy)]
enum Stored<'a> {
    /// A chain message with its id.
    Chain(&'a str, &'a [u8]),
    /// Derived events.
    Events(&'a [AuxMessage]),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Message ids are stable across a replay only if they are the bytes `write!`
    /// gave before: the hand-written decimals must equal `to_string`.
    #[test]
    fn decimals_are_to_strings() {
        let mut edges = vec![0, 1, 9, 10, 99, 100, u64::from(u32::MAX), u64::MAX - 1, u64::MAX];
        edges.extend((1..20).flat_map(|k| [10u64.pow(k) - 1, 10u64.pow(k)]));
        for n in edges {
            let mut out = String::from("x-");
            push_decimal(&mut out, n);
            assert_eq!(out, format!("x-{n}"));
        }
    }
}
