//! The per-shard write-ahead log: the audit spool.
//!
//! Each shard appends framed records to its own files — by copying into a shared file
//! mapping of the part (`audit::mapped`), or with `write(2)` where blocks cannot be
//! reserved; once the append returns, the bytes are in the page cache and survive the
//! process being killed (and, with `audit.fsync: always`, a power cut). The bridge thread tails the
//! files, chains and ships what it reads, and deletes a file once everything in it is
//! stored. Nothing is shared between a shard and the bridge but the files and two
//! atomic counters, so a shard never waits on the bridge.
//!
//! Layout: `<data_dir>/wal/<gen>-<shard>-<part>.wal`, zero-padded. A *generation* is
//! one start of the gateway (numbers never reused, see [`allocate_generation`]); a
//! *lane* is one shard of one generation; a lane rolls to a new *part* every
//! `audit.wal_segment_bytes`. A part is complete once the next part exists, and every
//! part of an older generation is complete (its writer is gone: the data dir lock
//! guarantees one writer).
//!
//! A frame is `len: u32 LE | crc32(kind ‖ payload): u32 LE | kind: u8 | payload`.
//! A frame cut short (a crash mid-append) can only be the last one of a complete
//! part; the reader skips it, as its `submit` never returned. A mapped part is as long
//! as its mapping until it is finished (then cut to its frames), so a part a crash
//! left behind ends in zeros: a zero frame header is a part's clean end.

use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use super::error::AuditError;
use super::mapped::{MappedFile, PartHandle};

/// Bytes before a frame's payload.
pub const FRAME_HEADER_BYTES: usize = 9;
/// Largest payload of one frame. A record with content over it is written without
/// its content (see `ShardAudit::submit`).
pub const FRAME_PAYLOAD_BYTES_MAX: usize = 512 * 1024;

/// What a frame holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// An [`crate::audit::AuditRecord`] as JSON: chained into the audit log.
    Audit = 1,
    /// A pipeline event (`crate::bridge::Event` JSON): shipped to `BH_EVENTS` / `BH_ALERTS`.
    Event = 2,
}

impl FrameKind {
    fn from_u8(b: u8) -> Option<FrameKind> {
        match b {
            1 => Some(FrameKind::Audit),
            2 => Some(FrameKind::Event),
            _ => None,
        }
    }
}

/// Identifies a lane: one shard of one generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LaneId {
    /// Generation (one gateway start).
    pub gen: u64,
    /// Shard index.
    pub shard: u32,
}

impl LaneId {
    /// The cursor key, `"<gen>-<shard>"`.
    pub fn key(&self) -> String {
        format!("{}-{}", self.gen, self.shard)
    }

    /// Parses a cursor key.
    pub fn from_key(key: &str) -> Option<LaneId> {
        let (g, s) = key.split_once('-')?;
        Some(LaneId { gen: g.parse().ok()?, shard: s.parse().ok()? })
    }
}

/// The file of one part of a lane.
pub fn part_path(dir: &Path, lane: LaneId, part: u64) -> PathBuf {
    dir.join(format!("{:010}-{:04}-{:08}.wal", lane.gen, lane.shard, part))
}

/// Parses a WAL file name into its lane and part.
pub fn parse_part_name(name: &str) -> Option<(LaneId, u64)> {
    let stem = name.strip_suffix(".wal")?;
    let mut it = stem.split('-');
    let gen = it.next()?.parse().ok()?;
    let shard = it.next()?.parse().ok()?;
    let part = it.next()?.parse().ok()?;
    if it.next().is_some() {
        return None;
    }
    Some((LaneId { gen, shard }, part))
}

/// Every WAL part in `dir`, sorted by lane then part.
pub fn list_parts(dir: &Path) -> Result<Vec<(LaneId, u64)>, AuditError> {
    let io = |source| AuditError::Io { path: dir.to_path_buf(), source };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        if let Some(p) = entry.file_name().to_str().and_then(parse_part_name) {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// Picks this start's generation: one above every generation used before, recorded
/// in `<dir>/GENERATION` (written and fsynced before use) so numbers are never
/// reused even after all their files are deleted.
pub fn allocate_generation(dir: &Path) -> Result<u64, AuditError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| AuditError::Io { path, source }
    };
    super::private::create_dir_all(dir).map_err(io(dir))?;
    let file = dir.join("GENERATION");
    let recorded = match std::fs::read_to_string(&file) {
        Ok(text) => text.trim().parse::<u64>().map_err(|_| AuditError::State {
            path: file.clone(),
            message: format!("expected a number, found `{}`", text.trim()),
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(io(&file)(e)),
    };
    remove_unfinished_parts(dir)?;
    let on_disk = list_parts(dir)?.iter().map(|(l, _)| l.gen).max().unwrap_or(0);
    let gen = recorded.max(on_disk) + 1;
    write_durably(&file, gen.to_string().as_bytes())?;
    Ok(gen)
}

/// Deletes parts a killed writer was still setting up (`*.wal-new`): never renamed
/// into place, so nothing was ever appended to them.
fn remove_unfinished_parts(dir: &Path) -> Result<(), AuditError> {
    let io = |source| AuditError::Io { path: dir.to_path_buf(), source };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.extension().is_some_and(|e| e == "wal-new") {
            std::fs::remove_file(&path).map_err(|source| AuditError::Io { path: path.clone(), source })?;
        }
    }
    Ok(())
}

/// Writes `bytes` to `path` via a temp file, fsync and rename, then fsyncs the dir.
pub fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), AuditError> {
    let io = |p: &Path| {
        let path = p.to_path_buf();
        move |source| AuditError::Io { path, source }
    };
    let tmp = path.with_extension("tmp");
    let mut f = super::private::options().write(true).create(true).truncate(true).open(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))?;
    if let Some(dir) = path.parent() {
        File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
    }
    Ok(())
}

/// A shard's appender. Owned by the shard thread; on file systems that can reserve
/// blocks (`fallocate`) a part is a shared file mapping and an append is a copy into
/// it (`MappedFile`); elsewhere it is a plain `write(2)`. Under `fsync: always`
/// each append is also flushed (`msync` / `fdatasync`) before it returns.
#[derive(Debug)]
pub struct WalWriter {
    dir: PathBuf,
    lane: LaneId,
    part: u64,
    out: PartOut,
    part_bytes: u64,
    segment_bytes_max: u64,
    sync_each: bool,
    buf: Vec<u8>,
}

/// Where a part's frames go.
#[derive(Debug)]
enum PartOut {
    /// Mapped, `segment_bytes_max` plus the largest frame long, so an append that
    /// starts below the segment size always fits.
    Mapped(MappedFile),
    /// Appended with `write(2)` (no `fallocate` here).
    Plain(File),
}

impl WalWriter {
    /// Creates part 0 of `lane` (it must not exist).
    pub fn create(dir: &Path, lane: LaneId, segment_bytes_max: u64, sync_each: bool) -> Result<WalWriter, AuditError> {
        let out = open_part(dir, lane, 0, mapped_len(segment_bytes_max), true)?;
        if matches!(out, PartOut::Plain(_)) {
            tracing::info!(dir = %dir.display(), "audit WAL uses write(2): this file system cannot reserve blocks");
        }
        Ok(WalWriter {
            dir: dir.to_path_buf(),
            lane,
            part: 0,
            out,
            part_bytes: 0,
            segment_bytes_max,
            sync_each,
            buf: Vec::with_capacity(4096),
        })
    }

    /// Appends one frame whose payload `fill` writes into the buffer it is given.
    /// Returns the frame's size in bytes. On a failed write the part is closed and a
    /// new one started, so a torn frame is always the last of a complete part.
    pub fn append(
        &mut self,
        kind: FrameKind,
        fill: impl FnOnce(&mut Vec<u8>) -> Result<(), AuditError>,
    ) -> Result<u64, AuditError> {
        self.buf.clear();
        self.buf.extend_from_slice(&[0u8; FRAME_HEADER_BYTES]);
        self.buf[FRAME_HEADER_BYTES - 1] = kind as u8;
        fill(&mut self.buf)?;
        let payload_len = self.buf.len() - FRAME_HEADER_BYTES;
        if payload_len > FRAME_PAYLOAD_BYTES_MAX {
            return Err(AuditError::Encode(format!("frame of {payload_len} bytes over {FRAME_PAYLOAD_BYTES_MAX}")));
        }
        let crc = crc32fast::hash(&self.buf[FRAME_HEADER_BYTES - 1..]);
        self.buf[0..4].copy_from_slice(&(payload_len as u32).to_le_bytes());
        self.buf[4..8].copy_from_slice(&crc.to_le_bytes());
        let at = self.part_bytes as usize;
        let written = match &mut self.out {
            PartOut::Mapped(m) => {
                // The roll rule (below) keeps every frame inside the mapping.
                debug_assert!(at + self.buf.len() <= m.len());
                m.write_at(at, &self.buf);
                if self.sync_each {
                    m.sync_range(at, self.buf.len())
                } else {
                    Ok(())
                }
            }
            PartOut::Plain(f) => {
                f.write_all(&self.buf).and_then(|()| if self.sync_each { f.sync_data() } else { Ok(()) })
            }
        };
        if let Err(source) = written {
            let err = AuditError::Io { path: part_path(&self.dir, self.lane, self.part), source };
            // Whatever reached the file may be a torn frame: never append after it.
            let _ = self.roll();
            return Err(err);
        }
        let n = self.buf.len() as u64;
        self.part_bytes += n;
        if let PartOut::Mapped(m) = &mut self.out {
            m.publish(at + self.buf.len());
        }
        if self.part_bytes >= self.segment_bytes_max {
            // A failed roll leaves this part open; the next append tries again (a
            // mapped part has room for one more frame of any size past the segment size).
            if let Err(e) = self.roll() {
                tracing::warn!(error = %e, "could not start a new audit WAL part");
            }
        }
        Ok(n)
    }

    /// Closes this part and starts the next. The next part appears (by rename, fully
    /// set up) only after the last write to this one returned, which is what tells
    /// the reader this part is complete.
    fn roll(&mut self) -> Result<(), AuditError> {
        let mapped = matches!(self.out, PartOut::Mapped(_));
        let next = open_part(&self.dir, self.lane, self.part + 1, mapped_len(self.segment_bytes_max), mapped)?;
        let old = std::mem::replace(&mut self.out, next);
        if let PartOut::Mapped(m) = old {
            if let Err(source) = m.finish(self.part_bytes) {
                // Harmless: readers stop at the zeros after the last frame.
                tracing::warn!(part = self.part, error = %source, "could not trim a finished audit WAL part");
            }
        }
        self.part += 1;
        self.part_bytes = 0;
        Ok(())
    }

    /// The part being written.
    pub fn part(&self) -> u64 {
        self.part
    }

    /// A handle on the current part for another thread: to fault its pages in ahead
    /// of this writer and read the frames it appended; `None` for a part written with
    /// `write(2)`.
    pub fn part_handle(&self) -> Option<PartHandle> {
        match &self.out {
            PartOut::Mapped(m) => Some(m.handle()),
            PartOut::Plain(_) => None,
        }
    }
}

/// Length of a mapped part: the segment size plus room for one largest frame.
fn mapped_len(segment_bytes_max: u64) -> usize {
    (segment_bytes_max as usize).saturating_add(FRAME_HEADER_BYTES + FRAME_PAYLOAD_BYTES_MAX)
}

/// Creates part `part` of `lane`, mapped when `try_map` and the file system allows.
/// A mapped part is set up under a temporary name and renamed into place, so a
/// reader never sees a part that is not ready for appends.
fn open_part(dir: &Path, lane: LaneId, part: u64, len: usize, try_map: bool) -> Result<PartOut, AuditError> {
    let path = part_path(dir, lane, part);
    let io = |p: &Path| {
        let path = p.to_path_buf();
        move |source| AuditError::Io { path, source }
    };
    if try_map {
        let tmp = path.with_extension("wal-new");
        let file = super::private::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io(&tmp))?;
        match MappedFile::create(file, len) {
            Ok(m) => {
                if path.exists() {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(AuditError::Io { path, source: std::io::ErrorKind::AlreadyExists.into() });
                }
                std::fs::rename(&tmp, &path).map_err(io(&path))?;
                return Ok(PartOut::Mapped(m));
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                let unsupported = matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::ENODEV | libc::ENOSYS))
                    || e.kind() == std::io::ErrorKind::Unsupported;
                if !unsupported {
                    return Err(AuditError::Io { path, source: e });
                }
            }
        }
    }
    let file = super::private::options().append(true).create_new(true).open(&path).map_err(io(&path))?;
    Ok(PartOut::Plain(file))
}

/// One frame as read back; its payload lies in the [`ReadFrames`] it was read into.
#[derive(Debug, Clone)]
pub struct ReadFrame {
    /// The lane it was read from.
    pub lane: LaneId,
    /// What it holds.
    pub kind: FrameKind,
    /// Where its payload is in [`ReadFrames::bytes`].
    pub payload: std::ops::Range<usize>,
    /// The part it came from.
    pub part: u64,
    /// Offset just past it in that part: the lane's cursor once it is stored.
    pub end: u64,
    /// Its size in the file, header included.
    pub bytes: u64,
}

/// Frames as read back, their payloads copied one after another into one buffer
/// that is reused from batch to batch: the bridge reads every record, and a buffer
/// per frame was an allocation and a free per record (issue 15, item 5).
#[derive(Debug, Default)]
pub struct ReadFrames {
    /// The frames, in the order read.
    pub frames: Vec<ReadFrame>,
    /// Their payloads, back to back.
    pub bytes: Vec<u8>,
}

impl ReadFrames {
    /// Forgets every frame, keeping the memory.
    pub fn clear(&mut self) {
        self.frames.clear();
        self.bytes.clear();
        if self.bytes.capacity() > READ_CHUNK_BYTES * 8 {
            // A rare batch of huge frames grew it: give the memory back.
            self.bytes = Vec::new();
        }
    }

    /// Frames held.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// The frames, in the order read.
    pub fn iter(&self) -> std::slice::Iter<'_, ReadFrame> {
        self.frames.iter()
    }

    /// The payload of `f`, one of these frames (empty for a frame of another buffer
    /// that reaches past this one's bytes).
    pub fn payload(&self, f: &ReadFrame) -> &[u8] {
        self.bytes.get(f.payload.clone()).unwrap_or_default()
    }
}

/// Why a lane stopped yielding frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaneState {
    /// More may come (a live lane at its end, or the limits were reached).
    Open,
    /// A dead lane read to its end: nothing more will ever come.
    Exhausted,
}

/// The bridge's reader of one lane: where it is, and the open part.
#[derive(Debug)]
pub struct LaneReader {
    dir: PathBuf,
    /// The lane.
    pub lane: LaneId,
    /// Part being read.
    pub part: u64,
    /// Offset in that part of the next unread frame.
    pub offset: u64,
    file: Option<File>,
    /// Whether a writer may still append (a lane of the current generation).
    pub live: bool,
    /// Frames skipped as torn or corrupt, counted for metrics and logs.
    pub skipped_bytes: u64,
    chunk: Vec<u8>,
}

/// Bytes read from a part per `read_at`.
const READ_CHUNK_BYTES: usize = 256 * 1024;
/// Parts a reader may step over in one call (each step is one missing/complete part).
const PART_STEPS_MAX: usize = 64;

impl LaneReader {
    /// A reader positioned at `part`/`offset`.
    pub fn new(dir: &Path, lane: LaneId, part: u64, offset: u64, live: bool) -> LaneReader {
        LaneReader { dir: dir.to_path_buf(), lane, part, offset, file: None, live, skipped_bytes: 0, chunk: Vec::new() }
    }

    /// Reads complete frames into `out`, at most `frames_max` of them and roughly
    /// `bytes_max` bytes, moving to later parts as they complete. For a lane whose
    /// writer runs in this process, `writer` says where it is, which spares a file
    /// system lookup per call and bounds reads to what was written; without it, part
    /// completeness is learnt from the next part's file. `mapped`: the writer's handle
    /// on a part, `(part, handle)`: that part's frames are then read in place from
    /// the mapping the writer copies them into, not with `pread`.
    pub fn read(
        &mut self,
        out: &mut ReadFrames,
        frames_max: usize,
        bytes_max: usize,
        writer: Option<WriterPos>,
        mapped: Option<(u64, &PartHandle)>,
    ) -> Result<LaneState, AuditError> {
        let start = out.len();
        let mut bytes = 0usize;
        for _ in 0..PART_STEPS_MAX {
            if self.file.is_none() {
                let path = part_path(&self.dir, self.lane, self.part);
                match File::open(&path) {
                    Ok(f) => self.file = Some(f),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        // Part not created yet (live), or a later part already exists
                        // (the writer rolled past an empty part), or the lane is gone.
                        if self.next_part_exists() {
                            self.advance_part();
                            continue;
                        }
                        return Ok(if self.live { LaneState::Open } else { LaneState::Exhausted });
                    }
                    Err(source) => return Err(AuditError::Io { path, source }),
                }
            }
            // Checked before reading: if the next part exists now, this part was
            // complete before our read, so a short frame at its end is torn.
            let complete = match writer {
                Some(w) => w.part > self.part,
                None => !self.live || self.next_part_exists(),
            };
            // In the part being written, only the bytes the writer counted are frames.
            let avail = match writer {
                Some(w) if w.part == self.part => Some(w.avail_bytes.saturating_sub(bytes as u64)),
                _ => None,
            };
            let handle = mapped.filter(|(p, _)| *p == self.part && avail.is_some()).map(|(_, h)| h);
            let stop =
                self.read_part(out, frames_max - (out.len() - start), bytes_max.saturating_sub(bytes), avail, handle)?;
            bytes = out.frames[start..].iter().map(|f| f.bytes as usize).sum();
            match stop {
                PartStop::Limit => return Ok(LaneState::Open),
                PartStop::End { leftover } => {
                    if !complete {
                        return Ok(LaneState::Open);
                    }
                    if leftover > 0 {
                        tracing::warn!(lane = %self.lane.key(), part = self.part, offset = self.offset, bytes = leftover,
                            "skipping a torn or corrupt audit WAL tail (its submit never returned)");
                        self.skipped_bytes += leftover;
                    }
                    if writer.is_some_and(|w| w.part > self.part) || self.next_part_exists() {
                        self.advance_part();
                        continue;
                    }
                    // Dead lane, last part read to its end.
                    self.offset += leftover;
                    return Ok(LaneState::Exhausted);
                }
            }
        }
        Ok(LaneState::Open)
    }

    /// Drops the bytes of the part being read below `offset` (rounded down to whole
    /// pages) from the file and the page cache (`fallocate(PUNCH_HOLE)`), so that
    /// dirty pages whose records are already stored elsewhere, durably, are never
    /// written back. Only the part this reader is in, and only below where it has
    /// read: the writer never touches those bytes again, and a reader resuming from
    /// a stored cursor starts at or after it. Returns the offset punched up to
    /// (0: nothing, e.g. another part, or a file system without holes).
    pub fn punch_below(&mut self, part: u64, offset: u64) -> u64 {
        let page = rustix::param::page_size() as u64;
        let end = offset.min(self.offset) / page * page;
        if part != self.part || end == 0 {
            return 0;
        }
        // The reader's own handle is read-only; punching needs one open for writing.
        let path = part_path(&self.dir, self.lane, part);
        let file = match std::fs::OpenOptions::new().write(true).open(&path) {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "could not open a WAL part to drop its shipped range");
                return 0;
            }
        };
        let flags = rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE;
        match rustix::fs::fallocate(&file, flags, 0, end) {
            Ok(()) => end,
            Err(e) => {
                tracing::debug!(lane = %self.lane.key(), part, error = %e, "could not drop a shipped WAL range");
                0
            }
        }
    }

    fn next_part_exists(&self) -> bool {
        part_path(&self.dir, self.lane, self.part + 1).exists()
    }

    fn advance_part(&mut self) {
        self.part += 1;
        self.offset = 0;
        self.file = None;
    }

    /// Reads frames from the open part until its end or a limit: in place from the
    /// writer's mapping when there is a `handle` (the bytes it published), else in
    /// chunks of [`READ_CHUNK_BYTES`] (one `pread` for many frames), not per frame.
    /// `avail`: bytes known to hold whole frames from the current offset (the part
    /// being written); `None` reads to the file's end.
    fn read_part(
        &mut self,
        out: &mut ReadFrames,
        frames_max: usize,
        bytes_max: usize,
        avail: Option<u64>,
        handle: Option<&PartHandle>,
    ) -> Result<PartStop, AuditError> {
        let Some(file) = &self.file else {
            return Ok(PartStop::End { leftover: 0 });
        };
        let io = |source| AuditError::Io { path: part_path(&self.dir, self.lane, self.part), source };
        let len = match avail {
            Some(n) => self.offset + n,
            None => file.metadata().map_err(io)?.len(),
        };
        // In place: the bytes the writer published from here (at least `avail`).
        let start = self.offset;
        let published = handle.map_or(&[][..], |h| usize::try_from(start).map_or(&[][..], |s| h.published_from(s)));
        // Where `want` bytes at `at` lie in `published`, if they all do.
        let in_place = |at: u64, want: usize| {
            let from = usize::try_from(at.checked_sub(start)?).ok()?;
            published.get(from..from.checked_add(want)?)
        };
        // The first `valid` bytes of `chunk` are the part's bytes from `chunk_at`;
        // parts are append-only, so bytes once read never change.
        let mut valid = 0;
        let mut chunk_at = self.offset;
        let mut taken = 0usize;
        let mut bytes = 0usize;
        // Bounded: each round consumes at least one frame or ends.
        loop {
            if taken >= frames_max || bytes >= bytes_max {
                return Ok(PartStop::Limit);
            }
            let left = len.saturating_sub(self.offset);
            if left < FRAME_HEADER_BYTES as u64 {
                return Ok(PartStop::End { leftover: left });
            }
            let header = match in_place(self.offset, FRAME_HEADER_BYTES) {
                Some(mapped) => mapped,
                None => fill(file, &mut self.chunk, &mut valid, &mut chunk_at, self.offset, FRAME_HEADER_BYTES, left)
                    .map_err(io)?,
            };
            if header.iter().all(|&b| b == 0) {
                // The zeros after the last frame of a mapped part (one left at full
                // size by a crash, or not yet trimmed): the part's clean end.
                return Ok(PartStop::End { leftover: 0 });
            }
            let payload_len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
            let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
            let frame_len = FRAME_HEADER_BYTES + payload_len;
            if payload_len > FRAME_PAYLOAD_BYTES_MAX || (frame_len as u64) > left {
                return Ok(PartStop::End { leftover: left });
            }
            let frame = match in_place(self.offset, frame_len) {
                Some(mapped) => mapped,
                None => {
                    fill(file, &mut self.chunk, &mut valid, &mut chunk_at, self.offset, frame_len, left).map_err(io)?
                }
            };
            // The CRC covers the kind byte and the payload.
            let body = &frame[FRAME_HEADER_BYTES - 1..];
            let Some(kind) = FrameKind::from_u8(body[0]).filter(|_| crc32fast::hash(body) == crc) else {
                // Corrupt: nothing after it in this part can be trusted to be aligned.
                return Ok(PartStop::End { leftover: left });
            };
            let at = out.bytes.len();
            out.bytes.extend_from_slice(&body[1..]);
            self.offset += frame_len as u64;
            let payload = at..out.bytes.len();
            out.frames.push(ReadFrame {
                lane: self.lane,
                kind,
                payload,
                part: self.part,
                end: self.offset,
                bytes: frame_len as u64,
            });
            taken += 1;
            bytes += frame_len;
        }
    }
}

/// Where a lane's writer is, as the bridge learns it from the shard's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterPos {
    /// The part it appends to (every earlier part is complete).
    pub part: u64,
    /// Frame bytes it wrote that the reader has not read yet.
    pub avail_bytes: u64,
}

/// The `n` bytes of the part at `offset`, from `chunk` (whose first `*valid` bytes
/// are the part's bytes from `*chunk_at`) or, when they are not all there, from one
/// `pread` of at least `n` and up to [`READ_CHUNK_BYTES`] bytes starting at `offset`
/// (`left` bytes remain in the part from `offset`; `n <= left`). `chunk` keeps its
/// length between reads, so its memory is zeroed once, not before every `pread`.
fn fill<'c>(
    file: &File,
    chunk: &'c mut Vec<u8>,
    valid: &mut usize,
    chunk_at: &mut u64,
    offset: u64,
    n: usize,
    left: u64,
) -> std::io::Result<&'c [u8]> {
    debug_assert!(n as u64 <= left && offset >= *chunk_at);
    let start = (offset - *chunk_at) as usize;
    if start + n > *valid {
        let want = (left.min(READ_CHUNK_BYTES as u64) as usize).max(n);
        if chunk.len() > READ_CHUNK_BYTES && want <= READ_CHUNK_BYTES {
            // A rare huge frame grew it: give the memory back.
            *chunk = Vec::new();
        }
        if chunk.len() < want {
            chunk.resize(want, 0);
        }
        *valid = 0;
        let buf = &mut chunk[..want];
        file.read_exact_at(buf, offset)?;
        *chunk_at = offset;
        *valid = want;
        return Ok(&chunk[..n]);
    }
    Ok(&chunk[start..start + n])
}

enum PartStop {
    Limit,
    End { leftover: u64 },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(w: &mut WalWriter, text: &str) {
        w.append(FrameKind::Audit, |b| {
            b.extend_from_slice(text.as_bytes());
            Ok(())
        })
        .unwrap();
    }

    fn frame_bytes(w: &mut WalWriter, text: &str) -> u64 {
        w.append(FrameKind::Audit, |b| {
            b.extend_from_slice(text.as_bytes());
            Ok(())
        })
        .unwrap()
    }

    fn texts(frames: &ReadFrames) -> Vec<String> {
        frames.iter().map(|f| String::from_utf8(frames.payload(f).to_vec()).unwrap()).collect()
    }

    /// Punching a mapped part below the reader frees the pages and blocks of what was
    /// read (whole pages only, never past the reader), while the writer goes on
    /// appending through its mapping and the reader reads on unharmed.
    #[test]
    fn punching_below_the_reader_drops_only_what_was_read() {
        use std::os::unix::fs::MetadataExt as _;
        let dir = tempfile::tempdir().unwrap();
        let lane = LaneId { gen: 1, shard: 0 };
        let mut w = WalWriter::create(dir.path(), lane, 1 << 20, false).unwrap();
        let text = "x".repeat(1000);
        for _ in 0..40 {
            frame(&mut w, &text);
        }
        let path = part_path(dir.path(), lane, 0);
        let blocks = || std::fs::metadata(&path).unwrap().blocks() * 512;
        let mut r = LaneReader::new(dir.path(), lane, 0, 0, true);
        let mut out = ReadFrames::default();
        r.read(&mut out, 30, 1 << 20, None, None).unwrap();
        assert_eq!(out.len(), 30);
        let read_to = r.offset;
        let page = rustix::param::page_size() as u64;
        // Another part, or nothing below a page: no call.
        assert_eq!(r.punch_below(1, read_to), 0);
        assert_eq!(r.punch_below(0, page - 1), 0);
        let before = blocks();
        // Asking past the reader punches only up to it, rounded down to a page.
        let upto = r.punch_below(0, read_to + 10 * page);
        assert_eq!(upto, read_to / page * page);
        assert!(blocks() + upto <= before, "blocks {before} -> {} after punching {upto}", blocks());
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes[..upto as usize].iter().all(|b| *b == 0), "the punched range reads as zeros");
        // Frames from the reader on are intact, and appends go on through the mapping.
        for _ in 0..5 {
            frame(&mut w, &text);
        }
        out.clear();
        r.read(&mut out, 100, 1 << 20, None, None).unwrap();
        assert_eq!(out.len(), 15);
        assert!(texts(&out).iter().all(|t| *t == text));
    }

    #[test]
    fn names_round_trip() {
        let lane = LaneId { gen: 3, shard: 12 };
        let p = part_path(Path::new("/x"), lane, 7);
        assert_eq!(p.file_name().unwrap(), "0000000003-0012-00000007.wal");
        assert_eq!(parse_part_name("0000000003-0012-00000007.wal"), Some((lane, 7)));
        assert_eq!(LaneId::from_key(&lane.key()), Some(lane));
        assert_eq!(parse_part_name("x.wal"), None);
    }

    #[test]
    fn generations_never_repeat() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(allocate_generation(dir.path()).unwrap(), 1);
        assert_eq!(allocate_generation(dir.path()).unwrap(), 2);
        WalWriter::create(dir.path(), LaneId { gen: 9, shard: 0 }, 1 << 20, false).unwrap();
        assert_eq!(allocate_generation(dir.path()).unwrap(), 10);
    }

    #[test]
    fn reader_follows_parts_and_waits_on_a_live_tail() {
        let dir = tempfile::tempdir().unwrap();
        let lane = LaneId { gen: 1, shard: 0 };
        // Tiny segments: every frame rolls the part.
        let mut w = WalWriter::create(dir.path(), lane, 10, false).unwrap();
        let mut r = LaneReader::new(dir.path(), lane, 0, 0, true);
        let mut out = ReadFrames::default();
        assert_eq!(r.read(&mut out, 100, 1 << 20, None, None).unwrap(), LaneState::Open);
        assert!(out.is_empty());
        for i in 0..5 {
            frame(&mut w, &format!("r{i}"));
        }
        assert_eq!(r.read(&mut out, 3, 1 << 20, None, None).unwrap(), LaneState::Open);
        assert_eq!(texts(&out), ["r0", "r1", "r2"]);
        assert_eq!(r.read(&mut out, 100, 1 << 20, None, None).unwrap(), LaneState::Open);
        assert_eq!(texts(&out), ["r0", "r1", "r2", "r3", "r4"]);
        assert_eq!(w.part(), 5);
        // The lane dies (a restart): the reader drains it and calls it exhausted.
        r.live = false;
        assert_eq!(r.read(&mut out, 100, 1 << 20, None, None).unwrap(), LaneState::Exhausted);
        assert_eq!(out.len(), 5);
    }

    /// Frames are read in chunks: frames straddling a chunk's end, and frames larger
    /// than a chunk, must come back whole and in order, whatever the limits.
    #[test]
    fn chunked_reads_return_every_frame_whole() {
        let dir = tempfile::tempdir().unwrap();
        let lane = LaneId { gen: 1, shard: 0 };
        let mut w = WalWriter::create(dir.path(), lane, 1 << 30, false).unwrap();
        let sizes = [1usize, 100, READ_CHUNK_BYTES - 20, 7, READ_CHUNK_BYTES + 5000, 3, FRAME_PAYLOAD_BYTES_MAX, 50];
        let mut want = Vec::new();
        for (i, n) in sizes.iter().cycle().take(40).enumerate() {
            let text: String = std::iter::repeat_n(char::from(b'a' + (i % 26) as u8), *n).collect();
            frame(&mut w, &text);
            want.push(text);
        }
        let mut r = LaneReader::new(dir.path(), lane, 0, 0, true);
        let mut out = ReadFrames::default();
        // Bounded: each call returns at least one frame.
        for _ in 0..want.len() {
            if out.len() == want.len() {
                break;
            }
            assert_eq!(r.read(&mut out, 3, 600 * 1024, None, None).unwrap(), LaneState::Open);
        }
        assert_eq!(texts(&out), want);
        let ends: Vec<u64> = out.iter().map(|f| f.end).collect();
        let total: u64 = want.iter().map(|t| (t.len() + FRAME_HEADER_BYTES) as u64).sum();
        assert_eq!(*ends.last().unwrap(), total);
    }

    #[test]
    fn torn_tail_is_skipped_only_once_the_part_is_complete() {
        let dir = tempfile::tempdir().unwrap();
        let lane = LaneId { gen: 1, shard: 0 };
        let mut w = WalWriter::create(dir.path(), lane, 1 << 20, false).unwrap();
        frame(&mut w, "a");
        // A torn frame: a header promising more than was written (what a kill in the
        // middle of an append leaves), right after the first frame.
        let f = std::fs::OpenOptions::new().write(true).open(part_path(dir.path(), lane, 0)).unwrap();
        f.write_all_at(&[50, 0, 0, 0, 1, 2, 3, 4, 1, b'x'], (FRAME_HEADER_BYTES + 1) as u64).unwrap();
        f.set_len((FRAME_HEADER_BYTES + 1 + 10) as u64).unwrap();
        let mut r = LaneReader::new(dir.path(), lane, 0, 0, true);
        let mut out = ReadFrames::default();
        assert_eq!(r.read(&mut out, 100, 1 << 20, None, None).unwrap(), LaneState::Open);
        assert_eq!(texts(&out), ["a"]);
        // The writer is gone: the torn frame is skipped and the lane ends.
        r.live = false;
        assert_eq!(r.read(&mut out, 100, 1 << 20, None, None).unwrap(), LaneState::Exhausted);
        assert_eq!(texts(&out), ["a"]);
        assert_eq!(r.skipped_bytes, 10);
    }

    /// A mapped part left at full size by a kill: its frames, then zeros. A reader
    /// returns every frame and ends the lane there without calling anything torn.
    #[test]
    fn killed_writers_zero_tail_is_a_clean_end() {
        let dir = tempfile::tempdir().unwrap();
        let lane = LaneId { gen: 1, shard: 0 };
        let mut w = WalWriter::create(dir.path(), lane, 1 << 20, false).unwrap();
        assert!(matches!(w.out, PartOut::Mapped(_)), "this file system should allow mapped parts");
        for i in 0..3 {
            frame(&mut w, &format!("r{i}"));
        }
        std::mem::forget(w); // no roll, no trim: what SIGKILL leaves
        let path = part_path(dir.path(), lane, 0);
        assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, mapped_len(1 << 20));
        let mut r = LaneReader::new(dir.path(), lane, 0, 0, false);
        let mut out = ReadFrames::default();
        assert_eq!(r.read(&mut out, 100, 1 << 20, None, None).unwrap(), LaneState::Exhausted);
        assert_eq!(texts(&out), ["r0", "r1", "r2"]);
        assert_eq!(r.skipped_bytes, 0);
    }

    /// With the writer's position, a reader reads only what was counted as written
    /// and moves on from a part as soon as the writer has.
    #[test]
    fn writer_position_bounds_reads_and_completes_parts() {
        let dir = tempfile::tempdir().unwrap();
        let lane = LaneId { gen: 1, shard: 0 };
        let mut w = WalWriter::create(dir.path(), lane, 20, false).unwrap();
        let mut written = 0;
        for i in 0..4 {
            written += frame_bytes(&mut w, &format!("frame-{i}"));
        }
        // 16-byte frames, 20-byte segments: two frames per part.
        assert_eq!(w.part(), 2);
        let mut r = LaneReader::new(dir.path(), lane, 0, 0, true);
        let mut out = ReadFrames::default();
        // The writer says only the first two frames are written: no more is read.
        let pos = WriterPos { part: 1, avail_bytes: written / 2 };
        assert_eq!(r.read(&mut out, 100, 1 << 20, Some(pos), None).unwrap(), LaneState::Open);
        assert_eq!(texts(&out), ["frame-0", "frame-1"]);
        let pos = WriterPos { part: w.part(), avail_bytes: written / 2 };
        assert_eq!(r.read(&mut out, 100, 1 << 20, Some(pos), None).unwrap(), LaneState::Open);
        assert_eq!(texts(&out), ["frame-0", "frame-1", "frame-2", "frame-3"]);
        assert_eq!((r.part, r.offset), (2, 0));
        assert_eq!(r.skipped_bytes, 0);
    }

    /// Through the writer's handle the reader reads the part being written in place:
    /// the same frames as with `pread`, bounded the same way by the writer's count.
    #[test]
    fn frames_read_through_the_writers_mapping_are_the_files_frames() {
        let dir = tempfile::tempdir().unwrap();
        let lane = LaneId { gen: 1, shard: 0 };
        let mut w = WalWriter::create(dir.path(), lane, 1 << 20, false).unwrap();
        let Some(handle) = w.part_handle() else { return }; // no fallocate here: nothing mapped
        let mut written = 0;
        for i in 0..5 {
            written += frame_bytes(&mut w, &format!("frame-{i}"));
        }
        let read = |pos: WriterPos, mapped: Option<(u64, &PartHandle)>| {
            let mut r = LaneReader::new(dir.path(), lane, 0, 0, true);
            let mut out = ReadFrames::default();
            assert_eq!(r.read(&mut out, 100, 1 << 20, Some(pos), mapped).unwrap(), LaneState::Open);
            (texts(&out), r.offset, out.frames.iter().map(|f| (f.end, f.bytes)).collect::<Vec<_>>())
        };
        let all = WriterPos { part: 0, avail_bytes: written };
        let by_pread = read(all, None);
        assert_eq!(by_pread.0, ["frame-0", "frame-1", "frame-2", "frame-3", "frame-4"]);
        assert_eq!(read(all, Some((0, &handle))), by_pread);
        // A count of three frames: three, in place too.
        let three = WriterPos { part: 0, avail_bytes: written / 5 * 3 };
        assert_eq!(read(three, Some((0, &handle))).0, ["frame-0", "frame-1", "frame-2"]);
        // A handle on another part is not used for this one.
        assert_eq!(read(all, Some((7, &handle))), by_pread);
    }

    /// Where blocks cannot be reserved the writer appends with `write(2)`: the same
    /// frames come back, and parts roll the same way.
    #[test]
    fn plain_writes_read_back_like_mapped_ones() {
        let dir = tempfile::tempdir().unwrap();
        let lane = LaneId { gen: 1, shard: 0 };
        let out = open_part(dir.path(), lane, 0, mapped_len(20), false).unwrap();
        assert!(matches!(out, PartOut::Plain(_)));
        let mut w = WalWriter {
            dir: dir.path().to_path_buf(),
            lane,
            part: 0,
            out,
            part_bytes: 0,
            segment_bytes_max: 20,
            sync_each: true,
            buf: Vec::new(),
        };
        for i in 0..5 {
            frame(&mut w, &format!("frame-{i}"));
        }
        assert_eq!(w.part(), 2);
        assert!(matches!(w.out, PartOut::Plain(_)), "a plain lane stays plain across rolls");
        assert_eq!(std::fs::metadata(part_path(dir.path(), lane, 0)).unwrap().len(), 32, "no zero tail");
        let mut r = LaneReader::new(dir.path(), lane, 0, 0, false);
        let mut out = ReadFrames::default();
        assert_eq!(r.read(&mut out, 100, 1 << 20, None, None).unwrap(), LaneState::Exhausted);
        assert_eq!(texts(&out), ["frame-0", "frame-1", "frame-2", "frame-3", "frame-4"]);
    }

    #[test]
    fn corrupt_frame_is_not_returned() {
        let dir = tempfile::tempdir().unwrap();
        let lane = LaneId { gen: 1, shard: 0 };
        let mut w = WalWriter::create(dir.path(), lane, 1 << 20, false).unwrap();
        frame(&mut w, "good");
        frame(&mut w, "flip");
        let path = part_path(dir.path(), lane, 0);
        let mut bytes = std::fs::read(&path).unwrap();
        // The last byte of the second frame (a mapped part goes on with zeros).
        let last = 2 * FRAME_HEADER_BYTES + 4 + 4 - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let mut r = LaneReader::new(dir.path(), lane, 0, 0, false);
        let mut out = ReadFrames::default();
        assert_eq!(r.read(&mut out, 100, 1 << 20, None, None).unwrap(), LaneState::Exhausted);
        assert_eq!(texts(&out), ["good"]);
    }
}
