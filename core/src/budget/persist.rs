//! Settled spend survives a restart of a single node: a snapshot of every current
//! window's settled tokens and USD, in `gatekeeper-crdt`'s encoding, written to
//! `<audit.data_dir>/budgets.snapshot` every `budgets.snapshot_interval_ms` and once
//! more after the shards drained at shutdown, and loaded into the board's remote
//! column at start.
//!
//! The bound: after a clean stop (SIGTERM/SIGINT, drained) nothing is re-granted; after
//! a crash, what was settled since the last snapshot (at most one
//! `snapshot_interval_ms` of spend) is. Reservations in flight are not persisted: a
//! restart ends those requests.
//!
//! A snapshot sums every column (the shards' and the remote one, which holds what
//! earlier runs left) per subject and window, as one counter slot
//! (`ReplicaId { node: 0, shard: 0, incarnation: 0 }`): it is this node's whole
//! local history, not a replica's delta. File form: `GKB1`, a u32 (big-endian) length
//! and that many bytes of the tokens `Budgets` (settled tokens under
//! [`Measure::Tokens`], admitted requests of the minute window under
//! [`Measure::Requests`], so `rpm` survives a restart too), then the USD (nano-dollar)
//! `Budgets`.
//! It is written to a temporary file, synced and renamed over the old one, so a crash
//! mid-write leaves the previous snapshot.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::Duration;

use gatekeeper_crdt::{BudgetKey, Budgets, Limits as CrdtLimits, Measure, ReplicaId, Subject};

use super::board::{BudgetBoard, CellValues, SubjectRef, KINDS};
use super::limits::kind_index;

/// The snapshot's file name under `audit.data_dir`.
pub const SNAPSHOT_FILE: &str = "budgets.snapshot";

/// The file's first bytes (and format version).
const MAGIC: &[u8; 4] = b"GKB1";

/// The one slot a snapshot counts in.
const SNAPSHOT_REPLICA: ReplicaId = ReplicaId::new(0, 0, 0);

/// Why a snapshot could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// Reading or writing the file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not a snapshot this version reads.
    #[error("{path}: not a budget snapshot: {why}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

fn crdt_limits(board: &BudgetBoard) -> CrdtLimits {
    // Per subject, current or just ended: one token counter per window kind and the
    // minute's request counter.
    let keys_max = board.subjects_max().saturating_mul((KINDS.len() + 1) * 2).max(CrdtLimits::default().keys_max);
    CrdtLimits { keys_max, ..CrdtLimits::default() }
}

/// Every window's settled tokens and nano-USD on the board, summed over all columns.
pub fn collect(board: &BudgetBoard) -> (Budgets, Budgets) {
    let limits = crdt_limits(board);
    let (mut tokens, mut usd) = (Budgets::new(limits), Budgets::new(limits));
    for (_, row) in board.rows() {
        for (k, kind) in KINDS.iter().enumerate() {
            // Columns may count different windows (one rolled over, another not yet).
            let mut sums: Vec<CellValues> = Vec::new();
            for c in 0..row.columns() {
                let Some((v, _)) = row.cell(c, k).map(|cell| cell.read()) else { continue };
                if v.epoch_start_s == i64::MIN {
                    continue;
                }
                match sums.iter_mut().find(|s| s.epoch_start_s == v.epoch_start_s) {
                    Some(s) => {
                        s.settled_tokens = s.settled_tokens.saturating_add(v.settled_tokens);
                        s.settled_usd_nano = s.settled_usd_nano.saturating_add(v.settled_usd_nano);
                        s.requests = s.requests.saturating_add(v.requests);
                    }
                    None => sums.push(v),
                }
            }
            for s in sums {
                let Ok(key) = BudgetKey::at(row.subject.clone(), *kind, s.epoch_start_s) else { continue };
                // Bounds are sized for the board, so these cannot be refused in practice;
                // a refused counter is left out of this snapshot, not the board.
                if s.settled_tokens > 0 {
                    let _ = tokens.add(SNAPSHOT_REPLICA, &key, s.settled_tokens);
                }
                if s.settled_usd_nano > 0 {
                    let _ = usd.add(SNAPSHOT_REPLICA, &key, s.settled_usd_nano);
                }
                if k == 0 && s.requests > 0 {
                    let _ = tokens.add(SNAPSHOT_REPLICA, &key.with_measure(Measure::Requests), s.requests);
                }
            }
        }
    }
    (tokens, usd)
}

/// The snapshot file's bytes.
pub fn encode(tokens: &Budgets, usd: &Budgets) -> Vec<u8> {
    let (t, u) = (tokens.encode(), usd.encode());
    let mut out = Vec::with_capacity(8 + t.len() + u.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&u32::try_from(t.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(&t);
    out.extend_from_slice(&u);
    out
}

/// Reads a snapshot file's bytes.
pub fn decode(bytes: &[u8], limits: CrdtLimits) -> Result<(Budgets, Budgets), String> {
    let rest = bytes.strip_prefix(MAGIC).ok_or("unknown format (no GKB1 header)")?;
    let len: [u8; 4] = rest.get(..4).and_then(|b| b.try_into().ok()).ok_or("truncated")?;
    let len = usize::try_from(u32::from_be_bytes(len)).map_err(|_| "length out of range")?;
    let tokens = rest.get(4..4usize.saturating_add(len)).ok_or("truncated")?;
    let usd = rest.get(4 + len..).ok_or("truncated")?;
    let tokens = Budgets::decode(tokens, limits).map_err(|e| format!("tokens: {e}"))?;
    let usd = Budgets::decode(usd, limits).map_err(|e| format!("usd: {e}"))?;
    Ok((tokens, usd))
}

/// Writes the board's snapshot to `path` (temporary file, sync, rename). Writes
/// nothing while the board has no subject.
pub fn write(board: &BudgetBoard, path: &Path) -> Result<bool, PersistError> {
    if board.subjects() == 0 {
        return Ok(false);
    }
    let (tokens, usd) = collect(board);
    let bytes = encode(&tokens, &usd);
    let io = |source| PersistError::Io { path: path.to_path_buf(), source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("snapshot.tmp");
    {
        use std::io::Write as _;
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(true)
}

/// Loads the snapshot at `path` (if there is one) into the board's remote column:
/// only windows that contain `now_unix_s` (ended ones no longer matter). Call before
/// any shard serves. Returns the windows restored.
pub fn load(board: &BudgetBoard, path: &Path, now_unix_s: i64) -> Result<usize, PersistError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(source) => return Err(PersistError::Io { path: path.to_path_buf(), source }),
    };
    let format = |why: String| PersistError::Format { path: path.to_path_buf(), why };
    let (tokens, usd) = decode(&bytes, crdt_limits(board)).map_err(format)?;
    let remote = board.shards();
    let mut restored = 0;
    // One pass per (subject, window): the request counters travel in the tokens map
    // under their own measure and are read back beside the window's tokens and USD.
    let keys = tokens.iter().map(|(k, _)| k).chain(usd.iter().map(|(k, _)| k));
    let mut seen = std::collections::BTreeSet::new();
    for key in keys {
        let key = key.clone().with_measure(Measure::Tokens);
        if !key.epoch.contains(now_unix_s) || !seen.insert(key.clone()) {
            continue;
        }
        let subject = match &key.subject {
            Subject::Key(s) => SubjectRef { tenant: false, name: s },
            Subject::Tenant(s) => SubjectRef { tenant: true, name: s },
        };
        let row = match board.find_or_claim(subject) {
            Ok(row) => row,
            Err(e) => {
                // A smaller `budgets.subjects_max` than the last run's: what does not fit
                // is not restored (and said so), rather than refusing to start.
                tracing::warn!(error = %e, subject = %key.subject, "budget spend not restored");
                continue;
            }
        };
        let Some(cell) = board.row(row).and_then(|r| r.cell(remote, kind_index(key.epoch.kind()))) else { continue };
        let mut v = cell.load_own();
        if v.epoch_start_s != key.epoch.start_unix_s() {
            v = CellValues::fresh(key.epoch.start_unix_s());
        }
        v.settled_tokens = v.settled_tokens.saturating_add(tokens.spent(&key));
        v.settled_usd_nano = v.settled_usd_nano.saturating_add(usd.spent(&key));
        v.requests = v.requests.saturating_add(tokens.spent(&key.clone().with_measure(Measure::Requests)));
        cell.store(v);
        restored += 1;
    }
    Ok(restored)
}

/// The thread that writes the snapshot every interval, and once more when stopped.
pub struct Keeper {
    stop: Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Keeper {
    /// Starts writing `board`'s snapshot to `path` every `interval`.
    pub fn start(board: Arc<BudgetBoard>, path: PathBuf, interval: Duration) -> std::io::Result<Keeper> {
        let (stop, stopped): (Sender<()>, Receiver<()>) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new().name("gk-budgets".into()).spawn(move || loop {
            let last = match stopped.recv_timeout(interval) {
                Err(RecvTimeoutError::Timeout) => false,
                Ok(()) | Err(RecvTimeoutError::Disconnected) => true,
            };
            if let Err(e) = write(&board, &path) {
                tracing::warn!(error = %e, "budget snapshot not written");
            }
            if last {
                return;
            }
        })?;
        Ok(Keeper { stop, thread })
    }

    /// Writes a last snapshot and stops (call after the shards drained).
    pub fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2024-02-29T23:59:30Z.
    const T: i64 = 1_709_251_170;

    fn spend(board: &BudgetBoard, column: usize, name: &str, tokens: u64, now: i64) {
        let row = board.find_or_claim(SubjectRef { tenant: false, name }).expect("row");
        for (k, kind) in KINDS.iter().enumerate() {
            let start = kind.epoch(now).expect("epoch").start_unix_s();
            let cell = board.row(row).and_then(|r| r.cell(column, k)).expect("cell");
            let mut v = cell.load_own();
            if v.epoch_start_s != start {
                v = CellValues::fresh(start);
            }
            v.settled_tokens += tokens;
            v.settled_usd_nano += tokens * 10;
            cell.store(v);
        }
    }

    fn total(board: &BudgetBoard, name: &str, k: usize, now: i64) -> (u64, u64) {
        let row = board.find(SubjectRef { tenant: false, name }).and_then(|r| board.row(r));
        let start = KINDS[k].epoch(now).expect("epoch").start_unix_s();
        row.map_or((0, 0), |r| {
            let t = r.total(k, start);
            (t.settled_tokens, t.settled_usd_nano)
        })
    }

    #[test]
    fn a_restart_keeps_the_current_windows_spend_through_several_runs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(SNAPSHOT_FILE);
        let first = BudgetBoard::new(2, 8);
        spend(&first, 0, "a", 100, T);
        spend(&first, 1, "a", 50, T);
        assert!(write(&first, &path).expect("written"));
        let second = BudgetBoard::new(3, 8);
        assert_eq!(load(&second, &path, T + 5).expect("loaded"), 3);
        assert_eq!(total(&second, "a", 0, T + 5), (150, 1500));
        spend(&second, 2, "a", 7, T + 5);
        assert!(write(&second, &path).expect("written"));
        let third = BudgetBoard::new(1, 8);
        load(&third, &path, T + 6).expect("loaded");
        assert_eq!(total(&third, "a", 0, T + 6), (157, 1570), "earlier runs' spend carries on");
        // 2024-03-01: minute, day and month all ended.
        let later = BudgetBoard::new(1, 8);
        assert_eq!(load(&later, &path, T + 30).expect("loaded"), 0, "ended windows are not restored");
    }

    #[test]
    fn the_minutes_requests_survive_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(SNAPSHOT_FILE);
        let first = BudgetBoard::new(2, 8);
        spend(&first, 0, "a", 10, T);
        let row = first.find(SubjectRef { tenant: false, name: "a" }).and_then(|r| first.row(r)).expect("row");
        for (column, n) in [(0, 4), (1, 3)] {
            let cell = row.cell(column, 0).expect("cell");
            let mut v = cell.load_own();
            if v.epoch_start_s == i64::MIN {
                v = CellValues::fresh(KINDS[0].epoch(T).expect("epoch").start_unix_s());
            }
            v.requests = n;
            cell.store(v);
        }
        assert!(write(&first, &path).expect("written"));
        let second = BudgetBoard::new(1, 8);
        assert_eq!(load(&second, &path, T + 5).expect("loaded"), 3, "one per window, requests beside tokens");
        let body = second.find(SubjectRef { tenant: false, name: "a" }).and_then(|r| second.row(r)).expect("row");
        let minute = body.total(0, KINDS[0].epoch(T).expect("epoch").start_unix_s());
        assert_eq!((minute.requests, minute.settled_tokens), (7, 10));
    }

    #[test]
    fn a_smaller_table_restores_what_fits_and_starts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(SNAPSHOT_FILE);
        let big = BudgetBoard::new(1, 8);
        for name in ["a", "b", "c"] {
            spend(&big, 0, name, 5, T);
        }
        write(&big, &path).expect("written");
        let small = BudgetBoard::new(1, 2);
        assert_eq!(load(&small, &path, T).expect("loaded"), 6, "two subjects × three windows");
        assert_eq!(small.subjects(), 2);
    }

    #[test]
    fn no_file_is_no_spend_and_a_damaged_file_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(SNAPSHOT_FILE);
        let board = BudgetBoard::new(1, 8);
        assert_eq!(load(&board, &path, T).expect("nothing to load"), 0);
        assert!(!write(&board, &path).expect("nothing to write"), "an empty board writes no file");
        std::fs::write(&path, b"GKB1\0\0\0\x09junk").expect("write");
        assert!(matches!(load(&board, &path, T), Err(PersistError::Format { .. })));
        std::fs::write(&path, b"something else").expect("write");
        assert!(matches!(load(&board, &path, T), Err(PersistError::Format { .. })));
    }
}
