//! The credit store's durable appender: one thread that appends records to the store's
//! per-epoch files and fsyncs them with group commit, so that no shard waits on a disk.
//!
//! A caller queues a record ([`Appender::queue`], never blocking: a full queue refuses at
//! once) and awaits its [`Queued`] answer, which comes once the record's file was fsync'd
//! (or the write failed). The thread takes everything queued while it was busy, up to
//! [`APPEND_BATCH_MAX`] records, writes each to its file (one per kind and epoch), then
//! fsyncs every file it touched once: a spend waits for at most one fsync after the one
//! in progress, however many spends there are, and the fsyncs no longer run on a shard
//! nor under the store's mutex.
//!
//! Records reach a file in queue order. The store queues under its mutex, so the order on
//! disk is the order the mutex granted; a [`Appender::replace`] of a file is applied in
//! that order too (after the appends queued before it, before those queued after).

use std::collections::HashMap;
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};

use crate::audit::private;

/// Records (of every kind) that may wait for the appender; past it [`Appender::queue`]
/// refuses with [`AppendError::Full`]. At a few ms per fsync and up to
/// [`APPEND_BATCH_MAX`] records per fsync, a full queue is several fsyncs of waiting:
/// a spend refused then (503) is better retried than queued longer.
pub const APPEND_QUEUE_MAX: usize = 4_096;
/// Records one batch (one fsync per file) covers at most, so the first of a long queue
/// is answered without waiting for all of it to be written.
pub const APPEND_BATCH_MAX: usize = 256;

/// The per-epoch files the appender writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Log {
    /// `nullifiers-<epoch>.bin`: the spent nullifiers, raw 32-byte records.
    Nullifiers,
    /// `unconfirmed-<epoch>.bin`: soft mode's nullifiers not yet in `BH_CREDITS`, raw
    /// 32-byte records.
    Unconfirmed,
    /// `changes-<epoch>.jsonl`: the change each spend got, one JSON line each.
    Changes,
    /// `issued-<epoch>.jsonl`: the credential each key got, one JSON line each.
    Issued,
}

impl Log {
    /// The file of `epoch` under `dir`.
    pub fn path(self, dir: &Path, epoch: u32) -> PathBuf {
        dir.join(match self {
            Log::Nullifiers => format!("nullifiers-{epoch}.bin"),
            Log::Unconfirmed => format!("unconfirmed-{epoch}.bin"),
            Log::Changes => format!("changes-{epoch}.jsonl"),
            Log::Issued => format!("issued-{epoch}.jsonl"),
        })
    }
}

/// Why a record was not made durable.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// [`APPEND_QUEUE_MAX`] records are already waiting: nothing was queued.
    #[error("the credit store's writer queue is full")]
    Full,
    /// The appender thread is gone (it panicked, or the process is stopping).
    #[error("the credit store's writer stopped")]
    Stopped,
    /// Writing or fsyncing the file failed: the record may be on disk in part or whole,
    /// but was not acknowledged (what the batch wrote to the file is cut off again, best
    /// effort, so a later record starts on a record boundary).
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The queue to the appender thread.
pub struct Appender {
    tx: SyncSender<Job>,
}

/// The answer to one queued record: await it with [`Queued::wait`].
#[must_use = "a queued record is durable only once its answer says so"]
pub struct Queued(tokio::sync::oneshot::Receiver<std::io::Result<()>>);

/// One request to the appender thread.
pub enum Job {
    /// Appends `bytes` to `log`'s file of `epoch`.
    Append { log: Log, epoch: u32, bytes: Vec<u8>, done: Done },
    /// Replaces `log`'s file of `epoch` with `bytes` (written aside, fsync'd, renamed over).
    Replace { log: Log, epoch: u32, bytes: Vec<u8>, done: Done },
}

type Done = tokio::sync::oneshot::Sender<std::io::Result<()>>;

impl Appender {
    /// Starts the appender thread writing under `dir`, with a queue of `depth` records.
    pub fn start(dir: &Path, depth: usize) -> std::io::Result<Appender> {
        let (appender, rx) = Appender::channel(depth);
        let dir = dir.to_path_buf();
        std::thread::Builder::new().name("gk-credit-writer".into()).spawn(move || write_batches(&dir, &rx))?;
        Ok(appender)
    }

    /// The queue alone, `depth` records deep (at least 1: a zero-capacity channel would
    /// refuse whenever the thread is busy); whoever holds the receiver runs
    /// [`write_batches`] on it. Tests hold it to decide when the writes happen.
    pub fn channel(depth: usize) -> (Appender, Receiver<Job>) {
        let (tx, rx) = sync_channel(depth.max(1));
        (Appender { tx }, rx)
    }

    /// Queues `bytes` for `log`'s file of `epoch`, without waiting: `Full` at once when
    /// the queue is.
    pub fn queue(&self, log: Log, epoch: u32, bytes: Vec<u8>) -> Result<Queued, AppendError> {
        let (done, answer) = tokio::sync::oneshot::channel();
        self.send(Job::Append { log, epoch, bytes, done })?;
        Ok(Queued(answer))
    }

    /// Queues the replacement of `log`'s file of `epoch` by `bytes`.
    pub fn replace(&self, log: Log, epoch: u32, bytes: Vec<u8>) -> Result<Queued, AppendError> {
        let (done, answer) = tokio::sync::oneshot::channel();
        self.send(Job::Replace { log, epoch, bytes, done })?;
        Ok(Queued(answer))
    }

    /// Queues `bytes` and awaits their fsync.
    pub async fn append(&self, log: Log, epoch: u32, bytes: Vec<u8>) -> Result<(), AppendError> {
        self.queue(log, epoch, bytes)?.wait().await
    }

    fn send(&self, job: Job) -> Result<(), AppendError> {
        match self.tx.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(AppendError::Full),
            Err(TrySendError::Disconnected(_)) => Err(AppendError::Stopped),
        }
    }
}

impl Queued {
    /// `Ok` once the record's file was fsync'd with it.
    pub async fn wait(self) -> Result<(), AppendError> {
        Ok(self.0.await.map_err(|_| AppendError::Stopped)??)
    }
}

/// The appender thread: batches of appends, each followed by one fsync per file touched;
/// a replace ends the batch before it. Returns when every [`Appender`] is dropped.
pub fn write_batches(dir: &Path, rx: &Receiver<Job>) {
    // The last file written per kind, kept open across batches (the epoch changes once a
    // day or hour; a failed file is reopened, since a failed fsync leaves it unknown).
    let mut files: HashMap<Log, (u32, File)> = HashMap::new();
    let mut batch = Vec::with_capacity(APPEND_BATCH_MAX);
    let mut next: Option<Job> = None;
    loop {
        let job = match next.take() {
            Some(job) => job,
            None => match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
        };
        match job {
            Job::Replace { log, epoch, bytes, done } => {
                // Open handles point at the file being renamed over.
                files.remove(&log);
                let replaced = rewrite(&log.path(dir, epoch), &bytes).map(|f| {
                    files.insert(log, (epoch, f));
                });
                let _ = done.send(replaced);
                continue;
            }
            Job::Append { log, epoch, bytes, done } => batch.push((log, epoch, bytes, done)),
        }
        while batch.len() < APPEND_BATCH_MAX {
            match rx.try_recv() {
                Ok(Job::Append { log, epoch, bytes, done }) => batch.push((log, epoch, bytes, done)),
                Ok(replace) => {
                    next = Some(replace);
                    break;
                }
                Err(_) => break,
            }
        }
        write_batch(dir, &mut files, &mut batch);
    }
}

/// The records of one batch bound for one file.
struct Group {
    log: Log,
    epoch: u32,
    file: Option<File>,
    /// The file's length before this batch: what a failure cuts back to.
    start: u64,
    error: Option<std::io::Error>,
    done: Vec<Done>,
}

fn write_batch(dir: &Path, files: &mut HashMap<Log, (u32, File)>, batch: &mut Vec<(Log, u32, Vec<u8>, Done)>) {
    let mut groups: Vec<Group> = Vec::new();
    for (log, epoch, bytes, done) in batch.drain(..) {
        let group = match groups.iter().position(|g| g.log == log && g.epoch == epoch) {
            Some(i) => groups.get_mut(i),
            None => {
                groups.push(Group::open(dir, files, log, epoch));
                groups.last_mut()
            }
        };
        let Some(group) = group else { continue };
        if group.error.is_none() {
            if let Some(f) = group.file.as_mut() {
                if let Err(e) = f.write_all(&bytes) {
                    group.error = Some(e);
                }
            }
        }
        group.done.push(done);
    }
    for group in groups {
        group.finish(files);
    }
}

impl Group {
    fn open(dir: &Path, files: &mut HashMap<Log, (u32, File)>, log: Log, epoch: u32) -> Group {
        let file = match files.remove(&log) {
            Some((e, f)) if e == epoch => Ok(f),
            // Another epoch's handle is dropped: its records were fsync'd by their batch.
            _ => private::options().append(true).create(true).open(log.path(dir, epoch)),
        };
        let (file, start, error) = match file.and_then(|f| f.metadata().map(|m| (f, m.len()))) {
            Ok((f, len)) => (Some(f), len, None),
            Err(e) => (None, 0, Some(e)),
        };
        Group { log, epoch, file, start, error, done: Vec::new() }
    }

    /// Fsyncs the file, then answers every record of the group.
    fn finish(mut self, files: &mut HashMap<Log, (u32, File)>) {
        if self.error.is_none() {
            if let Some(Err(e)) = self.file.as_ref().map(File::sync_data) {
                self.error = Some(e);
            }
        }
        match self.error {
            None => {
                if let Some(f) = self.file {
                    files.insert(self.log, (self.epoch, f));
                }
                for done in self.done {
                    let _ = done.send(Ok(()));
                }
            }
            Some(e) => {
                // Nothing of this batch was acknowledged: cut it off, so a torn record does
                // not shift every later one (the file is reopened for the next batch).
                if let Some(f) = &self.file {
                    let _ = f.set_len(self.start);
                }
                for done in self.done {
                    let _ = done.send(Err(std::io::Error::new(e.kind(), e.to_string())));
                }
            }
        }
    }
}

/// Replaces `path` with `bytes` (written, fsync'd, renamed over); returns it opened for
/// appending.
fn rewrite(path: &Path, bytes: &[u8]) -> std::io::Result<File> {
    let tmp = path.with_extension("tmp");
    let mut f = private::options().write(true).create(true).truncate(true).open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    private::options().read(true).append(true).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().build().expect("runtime");
        rt.block_on(f)
    }

    #[test]
    fn one_batch_writes_each_kind_and_epoch_to_its_own_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let (appender, rx) = Appender::channel(16);
        // Queued before the thread runs: all of it is one batch.
        let answers = [
            appender.queue(Log::Nullifiers, 7, vec![1; 32]).expect("q"),
            appender.queue(Log::Changes, 7, b"{}\n".to_vec()).expect("q"),
            appender.queue(Log::Nullifiers, 8, vec![2; 32]).expect("q"),
            appender.queue(Log::Nullifiers, 7, vec![3; 32]).expect("q"),
            appender.queue(Log::Unconfirmed, 7, vec![4; 32]).expect("q"),
        ];
        let path = dir.path().to_path_buf();
        let writer = std::thread::spawn(move || write_batches(&path, &rx));
        for a in answers {
            block_on(a.wait()).expect("durable");
        }
        let read = |log: Log, epoch| std::fs::read(log.path(dir.path(), epoch)).expect("file");
        assert_eq!(read(Log::Nullifiers, 7), [[1u8; 32], [3; 32]].concat(), "in queue order");
        assert_eq!(read(Log::Nullifiers, 8), [2u8; 32]);
        assert_eq!(read(Log::Unconfirmed, 7), [4u8; 32]);
        assert_eq!(read(Log::Changes, 7), b"{}\n");
        drop(appender);
        writer.join().expect("the thread ends with its queue");
    }

    #[test]
    fn the_queue_refuses_at_its_depth() {
        let (appender, rx) = Appender::channel(APPEND_QUEUE_MAX);
        let mut answers = Vec::new();
        for i in 0..APPEND_QUEUE_MAX {
            answers.push(appender.queue(Log::Nullifiers, 1, i.to_le_bytes().repeat(4)).expect("below the depth"));
        }
        assert!(matches!(appender.queue(Log::Changes, 1, b"x\n".to_vec()), Err(AppendError::Full)));
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().to_path_buf();
        std::thread::spawn(move || write_batches(&path, &rx));
        for a in answers {
            block_on(a.wait()).expect("durable");
        }
        assert_eq!(
            std::fs::metadata(Log::Nullifiers.path(dir.path(), 1)).expect("file").len(),
            (APPEND_QUEUE_MAX * 32) as u64
        );
        block_on(appender.append(Log::Changes, 1, b"x\n".to_vec())).expect("room again once drained");
    }

    #[test]
    fn a_failed_write_is_cut_off_and_the_file_reopened() {
        let dir = tempfile::tempdir().expect("tmp");
        let appender = Appender::start(dir.path(), 16).expect("start");
        block_on(appender.append(Log::Nullifiers, 1, vec![1; 32])).expect("first");
        // A file that fails every write (ENOSPC) in place of epoch 2's, as a full disk would.
        let path = Log::Nullifiers.path(dir.path(), 2);
        std::os::unix::fs::symlink("/dev/full", &path).expect("symlink");
        let err = block_on(appender.append(Log::Nullifiers, 2, vec![2; 32]));
        assert!(matches!(err, Err(AppendError::Io(_))), "{err:?}");
        std::fs::remove_file(&path).expect("unlink");
        block_on(appender.append(Log::Nullifiers, 2, vec![3; 32])).expect("reopened");
        assert_eq!(std::fs::read(&path).expect("file"), [3u8; 32]);
    }

    #[test]
    fn a_replace_applies_between_the_appends_around_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let (appender, rx) = Appender::channel(16);
        let before = appender.queue(Log::Unconfirmed, 3, vec![1; 32]).expect("q");
        let replaced = appender.replace(Log::Unconfirmed, 3, vec![9; 32]).expect("q");
        let after = appender.queue(Log::Unconfirmed, 3, vec![2; 32]).expect("q");
        let path = dir.path().to_path_buf();
        std::thread::spawn(move || write_batches(&path, &rx));
        for a in [before, replaced, after] {
            block_on(a.wait()).expect("durable");
        }
        let file = std::fs::read(Log::Unconfirmed.path(dir.path(), 3)).expect("file");
        assert_eq!(file, [[9u8; 32], [2; 32]].concat(), "the append after the replace lands in the new file");
    }
}
