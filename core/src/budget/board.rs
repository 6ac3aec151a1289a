//! The process-wide budget board: every shard's spend, reservations and requests per
//! budgeted subject and window, readable by every shard without a lock.
//!
//! # Layout
//!
//! A fixed array of [`Row`]s, one per subject (a key id or a tenant), found by hashing
//! with open addressing (linear probing). A row is claimed with one compare-and-swap
//! of its fingerprint from 0 and keeps its subject for the process's life; its body
//! (the subject's name and its cells) is set once right after. There are
//! `2 × subjects_max` (rounded up to a power of two) slots, so probes stay short, and
//! at most `subjects_max` are claimed: past that a new subject is refused
//! ([`BoardError::Full`]). Nothing is evicted — forgetting a subject would forget its
//! spend and grant it again.
//!
//! Each row has `shards + 1` columns of three [`Cell`]s (minute, day, month). Shard
//! `s` alone writes column `s`; the last column (the *remote* column) is written only
//! by the bridge or by the snapshot loader: the spend of other replicas (other nodes,
//! or this node's previous run). Readers sum every column.
//!
//! # Windows roll over in place (epoch-tagged cells)
//!
//! A cell carries the start of the window it counts. A writer that finds its cell on
//! an older window starts it afresh at the current one (zero spend, zero reserved); a
//! reader counts a cell only when its window is the one being checked. So an old
//! window's cells are reclaimed by the next write of the same column, with no
//! sweeper, and a row never changes identity (no tombstones, no races between a delete
//! and a concurrent insert of the same subject). A reservation made in an earlier
//! window is released only if its cell still counts that window.
//!
//! # Reading another shard's cell
//!
//! A cell is a seqlock: the writer makes its sequence odd, stores, makes it even; a
//! reader retries until it sees the same even sequence before and after. A reader
//! gives up after [`READ_RETRIES`] and then counts the cell whatever window it names
//! (it can only over-count), so a writer stopped mid-write never stalls another shard.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{fence, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

use gatekeeper_crdt::{Measure, Subject, WindowKind};

/// Window kinds in cell order (see [`super::limits::kind_index`]).
pub const KINDS: [WindowKind; 3] = [WindowKind::Minute, WindowKind::Day, WindowKind::Month];

/// Times a reader re-reads a cell that is being written before counting it anyway.
pub const READ_RETRIES: u32 = 64;

/// Polls for a just-claimed row's body before giving up on it.
const BODY_WAITS_MAX: u32 = 1_000_000;

/// "No limit seen" in a cell's limit field.
const NO_LIMIT: u64 = u64::MAX;

/// One column's count of one window; written by one thread only.
#[derive(Debug)]
#[repr(align(64))]
pub struct Cell {
    seq: AtomicU64,
    epoch_start_s: AtomicI64,
    settled_tokens: AtomicU64,
    reserved_tokens: AtomicU64,
    requests: AtomicU64,
    settled_usd_nano: AtomicU64,
    limit_tokens: AtomicU64,
}

impl Default for Cell {
    fn default() -> Self {
        Cell {
            seq: AtomicU64::new(0),
            epoch_start_s: AtomicI64::new(i64::MIN),
            settled_tokens: AtomicU64::new(0),
            reserved_tokens: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            settled_usd_nano: AtomicU64::new(0),
            limit_tokens: AtomicU64::new(NO_LIMIT),
        }
    }
}

/// What a cell holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CellValues {
    /// Start of the window counted (Unix s); `i64::MIN` for a cell never written.
    pub epoch_start_s: i64,
    /// Tokens of answered requests.
    pub settled_tokens: u64,
    /// Tokens held by requests in flight.
    pub reserved_tokens: u64,
    /// Requests admitted.
    pub requests: u64,
    /// USD of answered requests, nano-dollars.
    pub settled_usd_nano: u64,
    /// The token limit this column last admitted under (display only); `None`: none.
    pub limit_tokens: Option<u64>,
}

impl CellValues {
    /// The count of `measure` (settled tokens, requests admitted, settled nano-USD).
    pub fn measure(&self, measure: Measure) -> u64 {
        match measure {
            Measure::Tokens => self.settled_tokens,
            Measure::Requests => self.requests,
            Measure::UsdNano => self.settled_usd_nano,
        }
    }

    /// Sets the count of `measure`.
    pub fn set_measure(&mut self, measure: Measure, value: u64) {
        match measure {
            Measure::Tokens => self.settled_tokens = value,
            Measure::Requests => self.requests = value,
            Measure::UsdNano => self.settled_usd_nano = value,
        }
    }

    /// An empty count of the window starting at `epoch_start_s`.
    pub fn fresh(epoch_start_s: i64) -> CellValues {
        CellValues {
            epoch_start_s,
            settled_tokens: 0,
            reserved_tokens: 0,
            requests: 0,
            settled_usd_nano: 0,
            limit_tokens: None,
        }
    }
}

impl Cell {
    /// The values, read by their only writer (no retry needed).
    pub fn load_own(&self) -> CellValues {
        self.load_relaxed()
    }

    fn load_relaxed(&self) -> CellValues {
        let limit = self.limit_tokens.load(Ordering::Relaxed);
        CellValues {
            epoch_start_s: self.epoch_start_s.load(Ordering::Relaxed),
            settled_tokens: self.settled_tokens.load(Ordering::Relaxed),
            reserved_tokens: self.reserved_tokens.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            settled_usd_nano: self.settled_usd_nano.load(Ordering::Relaxed),
            limit_tokens: (limit != NO_LIMIT).then_some(limit),
        }
    }

    /// Stores `v`. Only the column's one writer may call this.
    pub fn store(&self, v: CellValues) {
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        self.epoch_start_s.store(v.epoch_start_s, Ordering::Relaxed);
        self.settled_tokens.store(v.settled_tokens, Ordering::Relaxed);
        self.reserved_tokens.store(v.reserved_tokens, Ordering::Relaxed);
        self.requests.store(v.requests, Ordering::Relaxed);
        self.settled_usd_nano.store(v.settled_usd_nano, Ordering::Relaxed);
        self.limit_tokens.store(v.limit_tokens.unwrap_or(NO_LIMIT), Ordering::Relaxed);
        self.seq.store(s.wrapping_add(2), Ordering::Release);
    }

    /// A consistent read from any thread: the values, and whether they are consistent
    /// (false after [`READ_RETRIES`] torn reads; then count them whatever their window).
    pub fn read(&self) -> (CellValues, bool) {
        for _ in 0..READ_RETRIES {
            let before = self.seq.load(Ordering::Acquire);
            if before % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let v = self.load_relaxed();
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) == before {
                return (v, true);
            }
        }
        (self.load_relaxed(), false)
    }

    /// The values counted for the window starting at `epoch_start_s`: zero for a cell on
    /// another window (a torn read counts whatever it saw).
    pub fn read_window(&self, epoch_start_s: i64) -> CellValues {
        match self.read() {
            (v, true) if v.epoch_start_s != epoch_start_s => CellValues::fresh(epoch_start_s),
            (v, _) => v,
        }
    }
}

/// A subject's row: its name and `(shards + 1) × 3` cells.
#[derive(Debug)]
pub struct RowBody {
    /// Whose row it is.
    pub subject: Subject,
    cells: Box<[Cell]>,
}

#[derive(Debug, Default)]
struct Slot {
    /// 0: free; else the subject's fingerprint (never 0).
    fp: AtomicU64,
    body: OnceLock<RowBody>,
}

/// A subject named without allocating: a key id or a tenant name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubjectRef<'a> {
    /// A tenant (else a key id).
    pub tenant: bool,
    /// The key id or tenant name.
    pub name: &'a str,
}

impl SubjectRef<'_> {
    /// Whether `s` is this subject.
    pub fn matches(&self, s: &Subject) -> bool {
        matches!(s, Subject::Tenant(_)) == self.tenant && s.as_str() == self.name
    }

    /// The owned subject (fails only for a name of 0 or more than 255 bytes).
    pub fn to_subject(&self) -> Option<Subject> {
        if self.tenant {
            Subject::tenant(self.name).ok()
        } else {
            Subject::key(self.name).ok()
        }
    }
}

/// Why the board could not give a subject a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BoardError {
    /// The name is empty or longer than 255 bytes (no key id or configured tenant is).
    #[error("a budget subject must be 1 to 255 bytes")]
    BadSubject,
    /// Every one of `budgets.subjects_max` rows is taken.
    #[error("the budget table is full ({subjects_max} subjects, budgets.subjects_max)")]
    Full {
        /// The configured bound.
        subjects_max: usize,
    },
}

/// The board: see the module docs.
#[derive(Debug)]
pub struct BudgetBoard {
    slots: Box<[Slot]>,
    /// `slots.len() - 1` (a power of two minus one).
    mask: usize,
    shards: usize,
    subjects_max: usize,
    claimed: AtomicUsize,
    hasher: std::hash::RandomState,
}

/// A claimed row (an index into the board).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowId(usize);

impl BudgetBoard {
    /// A board for `shards` shards and at most `subjects_max` subjects.
    pub fn new(shards: usize, subjects_max: usize) -> BudgetBoard {
        let slots = subjects_max.max(1).saturating_mul(2).checked_next_power_of_two().unwrap_or(1 << 30);
        BudgetBoard {
            slots: (0..slots).map(|_| Slot::default()).collect(),
            mask: slots - 1,
            shards: shards.max(1),
            subjects_max,
            claimed: AtomicUsize::new(0),
            hasher: std::hash::RandomState::new(),
        }
    }

    /// Shards writing this board (columns `0..shards`; column `shards` is remote).
    pub fn shards(&self) -> usize {
        self.shards
    }

    /// `budgets.subjects_max`.
    pub fn subjects_max(&self) -> usize {
        self.subjects_max
    }

    /// Subjects with a row.
    pub fn subjects(&self) -> usize {
        self.claimed.load(Ordering::Relaxed).min(self.subjects_max)
    }

    fn fingerprint(&self, subject: SubjectRef<'_>) -> u64 {
        let mut h = self.hasher.build_hasher();
        h.write_u8(u8::from(subject.tenant));
        h.write(subject.name.as_bytes());
        h.finish().max(1)
    }

    /// The subject's row, if it has one.
    pub fn find(&self, subject: SubjectRef<'_>) -> Option<RowId> {
        let fp = self.fingerprint(subject);
        let start = fp as usize & self.mask;
        for i in 0..self.slots.len() {
            let at = (start + i) & self.mask;
            let slot = &self.slots[at];
            match slot.fp.load(Ordering::Acquire) {
                0 => return None,
                f if f == fp && Self::body_of(slot).is_some_and(|b| subject.matches(&b.subject)) => {
                    return Some(RowId(at))
                }
                _ => {}
            }
        }
        None
    }

    /// The subject's row, claimed now if it has none.
    pub fn find_or_claim(&self, subject: SubjectRef<'_>) -> Result<RowId, BoardError> {
        let fp = self.fingerprint(subject);
        let start = fp as usize & self.mask;
        for i in 0..self.slots.len() {
            let at = (start + i) & self.mask;
            let slot = &self.slots[at];
            let mut seen = slot.fp.load(Ordering::Acquire);
            if seen == 0 {
                let owned = subject.to_subject().ok_or(BoardError::BadSubject)?;
                if self.claimed.fetch_add(1, Ordering::Relaxed) >= self.subjects_max {
                    self.claimed.fetch_sub(1, Ordering::Relaxed);
                    return Err(BoardError::Full { subjects_max: self.subjects_max });
                }
                match slot.fp.compare_exchange(0, fp, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => {
                        let cells = (0..(self.shards + 1) * KINDS.len()).map(|_| Cell::default()).collect();
                        // Only the claimer sets the body.
                        let _ = slot.body.set(RowBody { subject: owned, cells });
                        return Ok(RowId(at));
                    }
                    Err(now) => {
                        self.claimed.fetch_sub(1, Ordering::Relaxed);
                        seen = now;
                    }
                }
            }
            if seen == fp && Self::body_of(slot).is_some_and(|b| subject.matches(&b.subject)) {
                return Ok(RowId(at));
            }
        }
        Err(BoardError::Full { subjects_max: self.subjects_max })
    }

    /// The body of a claimed slot; its claimer sets it right after the claim, so a
    /// reader that sees the fingerprint first waits those few instructions (spinning,
    /// then yielding; `None` only if the claimer never finishes, i.e. it died).
    fn body_of(slot: &Slot) -> Option<&RowBody> {
        for i in 0..BODY_WAITS_MAX {
            if let Some(b) = slot.body.get() {
                return Some(b);
            }
            if i < 1024 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        None
    }

    /// The row's body.
    pub fn row(&self, row: RowId) -> Option<&RowBody> {
        self.slots.get(row.0).and_then(|s| s.body.get())
    }

    /// Every claimed row (for the bridge, snapshots and `budget show`).
    pub fn rows(&self) -> impl Iterator<Item = (RowId, &RowBody)> {
        self.slots.iter().enumerate().filter_map(|(i, s)| Some((RowId(i), s.body.get()?)))
    }
}

impl RowBody {
    /// Column `column`'s cell for window kind index `kind` (column `shards` is remote).
    pub fn cell(&self, column: usize, kind: usize) -> Option<&Cell> {
        self.cells.get(column.checked_mul(KINDS.len())?.checked_add(kind)?)
    }

    /// The remote column's cell for window kind index `kind`: written only by the
    /// bridge (other nodes' spend, stage 2) or the snapshot loader at start (this
    /// node's earlier runs).
    pub fn remote_cell(&self, kind: usize) -> Option<&Cell> {
        self.cell(self.columns().checked_sub(1)?, kind)
    }

    /// Columns (shards + the remote one).
    pub fn columns(&self) -> usize {
        self.cells.len() / KINDS.len()
    }

    /// The window `epoch_start_s` of kind `kind` summed over every column.
    pub fn total(&self, kind: usize, epoch_start_s: i64) -> CellValues {
        let mut t = CellValues::fresh(epoch_start_s);
        for c in 0..self.columns() {
            if let Some(cell) = self.cell(c, kind) {
                let v = cell.read_window(epoch_start_s);
                t.settled_tokens = t.settled_tokens.saturating_add(v.settled_tokens);
                t.reserved_tokens = t.reserved_tokens.saturating_add(v.reserved_tokens);
                t.requests = t.requests.saturating_add(v.requests);
                t.settled_usd_nano = t.settled_usd_nano.saturating_add(v.settled_usd_nano);
                t.limit_tokens = match (t.limit_tokens, v.limit_tokens) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> SubjectRef<'_> {
        SubjectRef { tenant: false, name: s }
    }

    #[test]
    fn a_subject_keeps_its_row_and_kinds_do_not_collide() {
        let b = BudgetBoard::new(2, 8);
        let a = b.find_or_claim(key("a")).expect("row");
        assert_eq!(b.find_or_claim(key("a")), Ok(a));
        assert_eq!(b.find(key("a")), Some(a));
        let t = b.find_or_claim(SubjectRef { tenant: true, name: "a" }).expect("row");
        assert_ne!(a, t, "key `a` and tenant `a` are different subjects");
        assert_eq!(b.find(key("zz")), None);
        assert_eq!(b.row(a).map(|r| r.columns()), Some(3));
    }

    #[test]
    fn sizes_are_what_budgets_subjects_max_documents() {
        // README: about 120 bytes per row up front, 192 × (shards + 1) per subject seen.
        assert!(std::mem::size_of::<Slot>() <= 120, "{}", std::mem::size_of::<Slot>());
        assert_eq!(std::mem::size_of::<Cell>() * KINDS.len(), 192);
    }

    #[test]
    fn the_table_refuses_past_subjects_max_and_never_evicts() {
        let b = BudgetBoard::new(1, 3);
        for s in ["a", "b", "c"] {
            assert!(b.find_or_claim(key(s)).is_ok(), "{s}: at the bound");
        }
        assert_eq!(b.find_or_claim(key("d")), Err(BoardError::Full { subjects_max: 3 }), "one past");
        assert!(b.find_or_claim(key("a")).is_ok(), "known subjects still find their row");
        assert_eq!(b.subjects(), 3);
    }

    #[test]
    fn cells_are_epoch_tagged() {
        let b = BudgetBoard::new(2, 4);
        let row = b.row(b.find_or_claim(key("k")).expect("row")).expect("body");
        let cell = row.cell(1, 0).expect("cell");
        cell.store(CellValues { settled_tokens: 5, reserved_tokens: 2, ..CellValues::fresh(60) });
        row.cell(2, 0).expect("remote").store(CellValues { settled_tokens: 7, ..CellValues::fresh(60) });
        let t = row.total(0, 60);
        assert_eq!((t.settled_tokens, t.reserved_tokens), (12, 2));
        let next = row.total(0, 120);
        assert_eq!((next.settled_tokens, next.reserved_tokens), (0, 0), "another window counts nothing");
    }

    #[test]
    fn concurrent_claims_of_one_subject_find_one_row() {
        let b = std::sync::Arc::new(BudgetBoard::new(4, 64));
        let rows: Vec<RowId> = (0..4)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || b.find_or_claim(key("same")).expect("row"))
            })
            .map(|t| t.join().expect("thread"))
            .collect();
        assert!(rows.windows(2).all(|w| w[0] == w[1]), "{rows:?}");
        assert_eq!(b.subjects(), 1);
    }

    #[test]
    fn a_reader_sees_whole_writes() {
        let b = std::sync::Arc::new(BudgetBoard::new(1, 1));
        let id = b.find_or_claim(key("k")).expect("row");
        let writer = {
            let b = b.clone();
            std::thread::spawn(move || {
                let cell = b.row(id).and_then(|r| r.cell(0, 0)).expect("cell");
                for i in 0..20_000u64 {
                    cell.store(CellValues { settled_tokens: i, reserved_tokens: i, ..CellValues::fresh(0) });
                }
            })
        };
        let cell = b.row(id).and_then(|r| r.cell(0, 0)).expect("cell");
        for _ in 0..20_000 {
            if let (v, true) = cell.read() {
                assert_eq!(v.settled_tokens, v.reserved_tokens, "torn read");
            }
        }
        writer.join().expect("writer");
    }
}
