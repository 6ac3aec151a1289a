//! Budgets across nodes: the bridge gossips this node's settled token spend, its
//! request counts and its settled USD over core NATS and writes the other nodes'
//! counts into the [`BudgetBoard`]'s remote column.
//!
//! # The replica
//!
//! The bridge keeps one full-state [`Budgets`] map (per subject, window and
//! [`Measure`]: tokens in every window, requests in the minute, nano-USD in the month;
//! see [`gossiped`]) with
//! one counter slot per writer: `ReplicaId { node, shard, incarnation }`, `node` being
//! a 64-bit FNV-1a hash of the node name (`audit.node_name`, else the host name) and
//! `incarnation` this boot's, above every one this node used before (the largest of
//! the boot time in seconds and [`Budgets::incarnation_max`]` + 1` over the snapshot
//! pulled at join). Every `budgets.gossip_interval_ms` it reads each shard column's
//! counts, raises that shard's slots to them, and publishes
//! [`Budgets::take_delta`] on `bh.budget.delta.<node>`; every
//! `budgets.anti_entropy_interval_ms` (and right after a reconnect) it publishes the
//! whole map on `bh.budget.full.<node>`. It merges what other nodes publish (its own
//! subjects are ignored) and, for every counter of a current window that changed,
//! writes into the remote column
//!
//! `remote = max(floor, Σ slots other than this boot's) − seed`
//!
//! - `floor`: what the remote column held when the bridge started — spend restored from
//!   `budgets.snapshot` (this node's earlier runs and what they had heard of).
//! - `seed`: what this node's earlier incarnations spent, as the join snapshot reported
//!   it; copied into shard 0's own column before the shards start (so strict mode's
//!   escrow counts it as this node's own) and therefore subtracted here, and from what
//!   shard 0's slot ships, so no node counts it twice.
//!
//! Each measure has its own floor and seed, and the same rules. Requests are counted
//! at admission (what `rpm` checks), so a request counts cluster-wide once its
//! node's next collect ships it; USD at settlement, like tokens. Reservations are not
//! gossiped (they are shard-local, short-lived). The over-spend bound this gives is in
//! `crate::budget`'s docs and the README ("Budgets across nodes").
//!
//! # Join
//!
//! A starting node asks its peers for their state before it admits traffic: one
//! request on `bh.budget.snapshot.<node>` with a private inbox; every peer answers with
//! its full map (in as many messages as `budgets.message_bytes_max` needs) and then an
//! empty map, which ends its answer. The first complete answer ends the join; NATS's
//! "no responders" (no other node runs) ends it at once — a node subscribes to others'
//! requests only after its own join, so its own subscription never answers. The same
//! request is sent again after every reconnect (a healed partition), beside a full
//! state of its own. `serve` starts the shards only after the join ended or
//! `budgets.join_timeout_ms` passed (then the node admits with what it has — its
//! snapshot file and whatever gossip arrives later; the seed is then 0, and its earlier
//! incarnations' spend lands in the remote column instead). The total a node sees for
//! a window, `seed + remote + its shards`, is never below the snapshot file's floor.
//!
//! # Alerts and sessions
//!
//! Every gossip interval [`Watch::alerts`] looks for subjects whose spend (all nodes'
//! as this node knows it) crossed 80 % or 100 % of a token limit in the current window
//! and publishes `bh.alerts.budget_threshold` / `bh.alerts.budget_exhausted` once per
//! window and subject, with a `Nats-Msg-Id` every node computes alike (so `BH_ALERTS`
//! keeps one when several nodes see the crossing). Every anti-entropy period
//! [`Watch::sessions`] publishes each subject whose spend changed on
//! `bh.sessions.budget.{key|tenant}.<name>` (`BH_SESSIONS`).
//!
//! # Untrusted input
//!
//! Every message is size-checked against `budgets.message_bytes_max` before decoding
//! and decoded with the crate's [`CrdtLimits`] (sized for the board); a bad message is
//! counted in [`GossipStats::dropped`] and dropped. A message that would push the
//! replica past its bounds is refused whole (the crate's merge is all or nothing).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use gatekeeper_crdt::{BudgetKey, Budgets, Limits as CrdtLimits, Measure, ReplicaId, Subject, WindowKind};

use super::events::subject_token;
use crate::budget::{BudgetBoard, CellValues, SubjectRef, KINDS};

/// Subject prefix of every budget message.
const PREFIX: &str = "bh.budget";
/// Header naming the node on its snapshot answers.
pub const NODE_HEADER: &str = "Gatekeeper-Node";
/// Seconds a window's counter is kept after it ended (late settlements and deltas).
const GC_GRACE_S: u32 = 300;

/// What the gossip runs with (from `budgets` in the config).
#[derive(Debug, Clone)]
pub(crate) struct Feed {
    /// The board the shards write.
    pub board: Arc<BudgetBoard>,
    /// Delta period.
    pub every: Duration,
    /// Full-state period.
    pub full_every: Duration,
    /// Longest message sent or decoded, bytes.
    pub message_bytes_max: usize,
    /// How long the join may take.
    pub join_timeout: Duration,
    /// Serve's side of the join.
    pub join: Arc<Join>,
    /// Counters.
    pub stats: Arc<GossipStats>,
}

/// Counters of the budget gossip (for tests and logs).
#[derive(Debug, Default)]
pub struct GossipStats {
    /// Messages published (deltas, full states, snapshot answers).
    pub sent: AtomicU64,
    /// Bytes published.
    pub sent_bytes: AtomicU64,
    /// Other nodes' messages merged.
    pub merged: AtomicU64,
    /// Messages dropped: too big, undecodable, or past the replica's bounds.
    pub dropped: AtomicU64,
    /// Subjects whose board row could not be claimed (table full).
    pub rows_refused: AtomicU64,
}

/// How a join ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinOutcome {
    /// A peer's full state was merged: `counters` in it.
    Snapshot {
        /// Counters received.
        counters: usize,
    },
    /// No other node answers on NATS: this is the first.
    NoPeer,
    /// `budgets.join_timeout_ms` passed first (NATS away, or peers silent).
    TimedOut,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JoinState {
    Waiting,
    Done(JoinOutcome),
    GaveUp,
}

/// The hand-off between `serve` (waits before starting the shards) and the gossip
/// task (seeds the board and ends the join).
#[derive(Debug)]
pub struct Join {
    state: Mutex<JoinState>,
    changed: Condvar,
}

impl Default for Join {
    fn default() -> Join {
        Join { state: Mutex::new(JoinState::Waiting), changed: Condvar::new() }
    }
}

impl Join {
    /// Waits at most `timeout` for the join; after it, the gossip task no longer seeds
    /// the board (the shards may be running).
    pub fn wait(&self, timeout: Duration) -> JoinOutcome {
        let deadline = Instant::now() + timeout;
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            match *state {
                JoinState::Done(outcome) => return outcome,
                JoinState::GaveUp => return JoinOutcome::TimedOut,
                JoinState::Waiting => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                *state = JoinState::GaveUp;
                return JoinOutcome::TimedOut;
            }
            state = self.changed.wait_timeout(state, left).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    /// Ends the join with `outcome`, running `seed` first if `serve` still waits.
    fn complete(&self, outcome: JoinOutcome, seed: impl FnOnce()) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if *state == JoinState::Waiting {
            seed();
            *state = JoinState::Done(outcome);
            self.changed.notify_all();
        }
    }
}

/// A node name's 64-bit id in replica ids (FNV-1a: stable across builds and hosts).
pub fn node_id(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// Counters gossiped per subject and window set: every [`gossiped`] measure of every
/// window kind (5: three token windows, minute requests, month USD).
pub const COUNTERS_PER_SUBJECT: usize = 5;

/// The bounds a decoded message and the replica live within: the
/// [`COUNTERS_PER_SUBJECT`] counters per board subject, current and just ended.
pub fn crdt_limits(board: &BudgetBoard) -> CrdtLimits {
    let keys_max = board.subjects_max().saturating_mul(COUNTERS_PER_SUBJECT * 2).max(CrdtLimits::default().keys_max);
    CrdtLimits { keys_max, ..CrdtLimits::default() }
}

/// Why a message was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Dropped {
    /// Over `budgets.message_bytes_max`.
    #[error("budget message of {len} bytes is over budgets.message_bytes_max ({max})")]
    TooBig {
        /// Its size.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// Not a state this build decodes, or past the replica's bounds.
    #[error("budget message refused: {0}")]
    Bad(#[from] gatekeeper_crdt::CrdtError),
}

/// The node's replica and its bookkeeping against the board: everything the gossip
/// task does that is not I/O.
#[derive(Debug)]
pub struct Replica {
    node: u64,
    incarnation: u32,
    state: Budgets,
    message_bytes_max: usize,
    /// Remote column values at start, per (subject, kind, measure): (window start, count).
    floors: HashMap<Tally, (i64, u64)>,
    /// Earlier incarnations' counts copied into shard 0's column at join.
    seeds: HashMap<Tally, (i64, u64)>,
    /// Per shard cell (by address: the board lives as long as the process) and measure,
    /// the (window start, count) last collected, so unchanged cells cost no lookup.
    collected: HashMap<(usize, Measure), (i64, u64)>,
}

/// A floor's or seed's name: subject, window kind index, measure.
type Tally = (Subject, usize, Measure);

/// The measures gossiped for window kind index `k`: tokens in every window, requests
/// in the minute (what `rpm` counts), nano-USD in the month (what `usd_per_month`
/// counts). Other windows' request and USD counts stay per node: no limit reads them,
/// and leaving them out keeps the gossip at 5 counters per subject, not 9.
pub fn gossiped(k: usize) -> &'static [Measure] {
    match k {
        0 => &[Measure::Tokens, Measure::Requests],
        2 => &[Measure::Tokens, Measure::UsdNano],
        _ => &[Measure::Tokens],
    }
}

impl Replica {
    /// A replica for node `node`, remembering the board's remote column as its floor.
    /// Call before the bridge or anything else writes the remote column, after the
    /// budget snapshot file was loaded.
    pub fn new(node: u64, board: &BudgetBoard, message_bytes_max: usize) -> Replica {
        let mut floors = HashMap::new();
        for (_, row) in board.rows() {
            for k in 0..KINDS.len() {
                let Some((v, _)) = row.remote_cell(k).map(|c| c.read()) else { continue };
                for &m in gossiped(k) {
                    if v.epoch_start_s != i64::MIN && v.measure(m) > 0 {
                        floors.insert((row.subject.clone(), k, m), (v.epoch_start_s, v.measure(m)));
                    }
                }
            }
        }
        Replica {
            node,
            incarnation: 0,
            state: Budgets::new(crdt_limits(board)),
            message_bytes_max,
            floors,
            seeds: HashMap::new(),
            collected: HashMap::new(),
        }
    }

    /// This boot's incarnation (0 until [`Replica::begin`]).
    pub fn incarnation(&self) -> u32 {
        self.incarnation
    }

    /// The replica's state.
    pub fn state(&self) -> &Budgets {
        &self.state
    }

    /// Decodes and merges another node's message; returns the decoded map (its keys
    /// are what changed).
    pub fn merge_bytes(&mut self, bytes: &[u8]) -> Result<Budgets, Dropped> {
        if bytes.len() > self.message_bytes_max {
            return Err(Dropped::TooBig { len: bytes.len(), max: self.message_bytes_max });
        }
        let theirs = Budgets::decode(bytes, self.state.limits())?;
        self.state.merge(&theirs)?;
        Ok(theirs)
    }

    /// Picks this boot's incarnation (above `boot_unix_s` and every one of this node's
    /// slots known), after the join snapshot was merged.
    pub fn begin(&mut self, boot_unix_s: u64) {
        let known = self.state.incarnation_max(self.node).map_or(0, |i| i.saturating_add(1));
        self.incarnation = u32::try_from(boot_unix_s).unwrap_or(u32::MAX).max(known).max(1);
    }

    /// Copies what this node's earlier incarnations spent in the windows current at
    /// `now_unix_s` into shard 0's column. Only while no shard runs (the column's
    /// writer): `serve` waits for the join.
    pub fn seed(&mut self, board: &BudgetBoard, now_unix_s: i64) {
        for (key, counter) in self.state.iter() {
            let Some(k) = current_kind(key, now_unix_s) else { continue };
            let mine: u64 = counter
                .slots()
                .filter(|(r, _)| r.node == self.node && r.incarnation != self.incarnation)
                .fold(0u64, |a, (_, v)| a.saturating_add(v));
            if mine == 0 {
                continue;
            }
            let Some(row) = board.find_or_claim(subject_ref(&key.subject)).ok().and_then(|r| board.row(r)) else {
                continue;
            };
            let Some(cell) = row.cell(0, k) else { continue };
            let start = key.epoch.start_unix_s();
            let mut v = cell.load_own();
            if v.epoch_start_s != start {
                v = CellValues::fresh(start);
            }
            v.set_measure(key.measure, v.measure(key.measure).saturating_add(mine));
            cell.store(v);
            self.seeds.insert((key.subject.clone(), k, key.measure), (start, mine));
        }
    }

    /// Raises this boot's slots to the shards' counts (settled tokens, and the
    /// [`gossiped`] request and USD counts). Returns how many slots
    /// grew; counters the replica has no room for are counted in `refused`.
    pub fn collect(&mut self, board: &BudgetBoard, refused: &AtomicU64) -> usize {
        let mut grew = 0;
        for (_, row) in board.rows() {
            for (k, kind) in KINDS.iter().enumerate() {
                for shard in 0..board.shards() {
                    let Some(cell) = row.cell(shard, k) else { continue };
                    let (v, true) = cell.read() else { continue };
                    for &m in gossiped(k) {
                        if v.epoch_start_s == i64::MIN || v.measure(m) == 0 {
                            continue;
                        }
                        let seen = (v.epoch_start_s, v.measure(m));
                        if self.collected.insert((cell as *const _ as usize, m), seen) == Some(seen) {
                            continue;
                        }
                        let mut value = v.measure(m);
                        if shard == 0 && !self.seeds.is_empty() {
                            if let Some((start, seed)) = self.seeds.get(&(row.subject.clone(), k, m)) {
                                if *start == v.epoch_start_s {
                                    value = value.saturating_sub(*seed);
                                }
                            }
                        }
                        let Ok(key) = BudgetKey::at(row.subject.clone(), *kind, v.epoch_start_s) else { continue };
                        let key = key.with_measure(m);
                        let replica =
                            ReplicaId::new(self.node, u16::try_from(shard).unwrap_or(u16::MAX), self.incarnation);
                        let have = self.state.counter(&key).map_or(0, |c| c.get(replica));
                        if value > have {
                            match self.state.add(replica, &key, value - have) {
                                Ok(_) => grew += 1,
                                Err(_) => {
                                    refused.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                    }
                }
            }
        }
        grew
    }

    /// The delta to ship, as messages within the size bound.
    pub fn take_delta_messages(&mut self) -> Vec<Vec<u8>> {
        let delta = self.state.take_delta();
        if delta.is_empty() {
            return Vec::new();
        }
        chunks(&delta, self.message_bytes_max)
    }

    /// The whole state, as messages within the size bound (at least one).
    pub fn full_messages(&self) -> Vec<Vec<u8>> {
        chunks(&self.state, self.message_bytes_max)
    }

    /// Writes the remote column of every subject in `changed` whose window is current
    /// at `now_unix_s`: `max(floor, other slots) − seed` (see the module docs).
    pub fn write_remote(&self, board: &BudgetBoard, changed: &Budgets, now_unix_s: i64, refused: &AtomicU64) {
        for (key, _) in changed.iter() {
            let Some(k) = current_kind(key, now_unix_s) else { continue };
            let Some(counter) = self.state.counter(key) else { continue };
            let start = key.epoch.start_unix_s();
            let others = counter
                .slots()
                .filter(|(r, _)| !(r.node == self.node && r.incarnation == self.incarnation))
                .fold(0u64, |a, (_, v)| a.saturating_add(v));
            let id = (key.subject.clone(), k, key.measure);
            let at = |m: &HashMap<Tally, (i64, u64)>| m.get(&id).filter(|(s, _)| *s == start).map_or(0, |x| x.1);
            let value = others.max(at(&self.floors)).saturating_sub(at(&self.seeds));
            let row = match board.find_or_claim(subject_ref(&key.subject)) {
                Ok(r) => board.row(r),
                Err(_) => {
                    refused.fetch_add(1, Ordering::Relaxed);
                    None
                }
            };
            let Some(cell) = row.and_then(|r| r.remote_cell(k)) else { continue };
            let mut v = cell.load_own();
            if v.epoch_start_s != start {
                v = CellValues::fresh(start);
            } else if v.measure(key.measure) == value {
                continue;
            }
            // Only ever lower than the cell once: at the join, when the seed moved this
            // node's earlier spend from the snapshot file's floor into shard 0's column.
            v.set_measure(key.measure, value);
            cell.store(v);
        }
    }

    /// Every node's contribution to `key` (of its measure), by node id (for `budget show`).
    pub fn contributions(&self, key: &BudgetKey) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for (r, v) in self.state.counter(key).into_iter().flat_map(|c| c.slots()) {
            match out.iter_mut().find(|(n, _)| *n == r.node) {
                Some((_, t)) => *t = t.saturating_add(v),
                None => out.push((r.node, v)),
            }
        }
        out
    }

    /// Drops windows that ended more than [`GC_GRACE_S`] ago.
    pub fn gc(&mut self, now_unix_s: i64) {
        self.state.gc(now_unix_s, GC_GRACE_S);
        let live = |start: i64, k: usize| {
            KINDS.get(k).and_then(|kind| kind.epoch(now_unix_s).ok()).is_some_and(|e| e.start_unix_s() <= start)
        };
        self.floors.retain(|(_, k, _), (start, _)| live(*start, *k));
        self.seeds.retain(|(_, k, _), (start, _)| live(*start, *k));
    }
}

/// Percent of a limit at which `BH_ALERTS` gets a `budget_threshold` alert.
pub const ALERT_PERCENT: u64 = 80;

/// One message for `BH_ALERTS` or `BH_SESSIONS`: subject, `Nats-Msg-Id`, JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// Subject (`bh.alerts.…` or `bh.sessions.budget.…`).
    pub subject: String,
    /// Identical on every node for the same alert, so JetStream keeps one.
    pub msg_id: String,
    /// The JSON body.
    pub body: String,
}

/// What `BH_ALERTS` and `BH_SESSIONS` were last told per subject and window kind.
#[derive(Debug, Default)]
pub struct Watch {
    /// (window start, highest level alerted: 0 none, 1 the threshold, 2 exhausted).
    alerted: HashMap<(Subject, usize), (i64, u8)>,
    /// Settled tokens per window kind last published to `BH_SESSIONS`.
    published: HashMap<Subject, [u64; 3]>,
}

impl Watch {
    /// Alerts due now: for every subject with a token limit, the first time in a window
    /// that its spend (settled plus reserved, all columns) reaches [`ALERT_PERCENT`] of
    /// the limit (`bh.alerts.budget_threshold`), and the first time it reaches the limit
    /// (`bh.alerts.budget_exhausted`). Once per window and subject on this node; every
    /// node sees the same crossing, so the message id is the same on all of them.
    pub fn alerts(&mut self, board: &BudgetBoard, node: &str, now_unix_s: i64) -> Vec<Notice> {
        let mut out = Vec::new();
        for (_, row) in board.rows() {
            for (k, kind) in KINDS.iter().enumerate() {
                let Ok(epoch) = kind.epoch(now_unix_s) else { continue };
                let start = epoch.start_unix_s();
                let t = row.total(k, start);
                let Some(limit) = t.limit_tokens.filter(|l| *l > 0) else { continue };
                let spent = t.settled_tokens.saturating_add(t.reserved_tokens);
                let level = if spent >= limit {
                    2
                } else if u128::from(spent) * 100 >= u128::from(limit) * u128::from(ALERT_PERCENT) {
                    1
                } else {
                    0
                };
                let id = (row.subject.clone(), k);
                let before = self.alerted.get(&id).filter(|(s, _)| *s == start).map_or(0, |x| x.1);
                if level <= before {
                    continue;
                }
                self.alerted.insert(id, (start, level));
                let what = if level == 2 { "budget_exhausted" } else { "budget_threshold" };
                let (subject_kind, name) = match &row.subject {
                    Subject::Key(k) => ("key_id", k),
                    Subject::Tenant(t) => ("tenant", t),
                };
                let body = serde_json::json!({
                    "kind": what,
                    subject_kind: name.as_ref(),
                    "window": kind.name(),
                    "window_start_unix_s": start,
                    "limit": limit,
                    "spent_tokens": spent,
                    "percent": if level == 2 { 100 } else { ALERT_PERCENT },
                    "node": node,
                    "ts_unix_ms": super::now_unix_ms(),
                });
                out.push(Notice {
                    subject: format!("bh.alerts.{what}"),
                    msg_id: format!("{what}.{}.{}.{start}", row.subject, kind.name()),
                    body: body.to_string(),
                });
            }
        }
        let oldest = now_unix_s.saturating_sub(2 * 31 * 86_400);
        self.alerted.retain(|_, (start, _)| *start >= oldest);
        out
    }

    /// `BH_SESSIONS` messages (`bh.sessions.budget.<subject>`) for every subject whose
    /// settled tokens changed since the last call: its windows as this node sees them.
    pub fn sessions(&mut self, board: &BudgetBoard, node: &str, now_unix_s: i64) -> Vec<Notice> {
        let mut out = Vec::new();
        for (_, row) in board.rows() {
            let mut spent = [0u64; 3];
            let mut windows = Vec::with_capacity(KINDS.len());
            for (k, kind) in KINDS.iter().enumerate() {
                let Ok(epoch) = kind.epoch(now_unix_s) else { continue };
                let t = row.total(k, epoch.start_unix_s());
                spent[k] = t.settled_tokens;
                windows.push(serde_json::json!({
                    "window": kind.name(),
                    "start_unix_s": epoch.start_unix_s(),
                    "limit_tokens": t.limit_tokens,
                    "spent_tokens": t.settled_tokens,
                    "reserved_tokens": t.reserved_tokens,
                    "requests": t.requests,
                }));
            }
            if self.published.get(&row.subject) == Some(&spent) {
                continue;
            }
            self.published.insert(row.subject.clone(), spent);
            let (subject_kind, name) = match &row.subject {
                Subject::Key(k) => ("key_id", k),
                Subject::Tenant(t) => ("tenant", t),
            };
            let token = subject_token(name);
            let body = serde_json::json!({
                "kind": "budget",
                subject_kind: name.as_ref(),
                "windows": windows,
                "node": node,
                "ts_unix_ms": super::now_unix_ms(),
            });
            let tag = if subject_kind == "tenant" { "tenant" } else { "key" };
            out.push(Notice {
                subject: format!("bh.sessions.budget.{tag}.{token}"),
                msg_id: format!("{node}.budget.{}.{}", row.subject, super::now_unix_ms()),
                body: body.to_string(),
            });
        }
        out
    }
}

/// The kind index of `key` when its window is the one current at `now_unix_s`.
fn current_kind(key: &BudgetKey, now_unix_s: i64) -> Option<usize> {
    let kind: WindowKind = key.epoch.kind();
    let k = KINDS.iter().position(|x| *x == kind)?;
    let current = kind.epoch(now_unix_s).ok()?;
    (current.start_unix_s() == key.epoch.start_unix_s()).then_some(k)
}

fn subject_ref(s: &Subject) -> SubjectRef<'_> {
    SubjectRef { tenant: matches!(s, Subject::Tenant(_)), name: s.as_str() }
}

/// `b` encoded in messages of at most `max` bytes, halving the counters until each
/// fits. One counter at the crate's bounds is under 30 KB, below the smallest
/// `budgets.message_bytes_max` (64 KiB), so every message fits.
fn chunks(b: &Budgets, max: usize) -> Vec<Vec<u8>> {
    let bytes = b.encode();
    if bytes.len() <= max || b.len() <= 1 {
        return vec![bytes];
    }
    let half = b.len() / 2;
    let (mut left, mut right) = (Budgets::new(b.limits()), Budgets::new(b.limits()));
    for (i, (key, counter)) in b.iter().enumerate() {
        let part = if i < half { &mut left } else { &mut right };
        for (r, v) in counter.slots() {
            // Within the source's own bounds: cannot be refused.
            let _ = part.add(r, key, v);
        }
    }
    let mut out = chunks(&left, max);
    out.extend(chunks(&right, max));
    out
}

/// Runs the gossip until the bridge thread aborts it.
pub(super) async fn run(client: async_nats::Client, node: String, feed: Feed) {
    let me = subject_token(&node);
    let mut replica = Replica::new(node_id(&node), &feed.board, feed.message_bytes_max);
    // Deltas and full states from before the join's answer are kept (merge is
    // idempotent); snapshot requests are followed only after the join, so that a node's
    // own request finds no responder when it is alone ("no responders" ends the join).
    let mut subs = futures_util::stream::SelectAll::new();
    for kind in ["delta", "full"] {
        match client.subscribe(format!("{PREFIX}.{kind}.*")).await {
            Ok(s) => subs.push(s),
            Err(e) => tracing::warn!(error = %e, "cannot follow other nodes' budgets"),
        }
    }
    // One inbox for the life of the task: the join's answers, and those to the request
    // sent again after every reconnect.
    let inbox = client.new_inbox();
    let mut answers = client.subscribe(inbox.clone()).await.ok().map(|s| (inbox, s));
    let outcome = join(&client, &me, &mut answers, &mut replica, &feed).await;
    replica.begin(super::now_unix_ms() / 1000);
    let board = feed.board.clone();
    let stats = feed.stats.clone();
    // Everything merged so far becomes the remote column (and the seed, if serve waits).
    let joined = replica.state().clone();
    feed.join.complete(outcome, || replica.seed(&board, crate::clock::unix_s_i64()));
    replica.write_remote(&board, &joined, crate::clock::unix_s_i64(), &stats.rows_refused);
    tracing::info!(?outcome, incarnation = replica.incarnation(), "budget gossip joined");
    match client.subscribe(format!("{PREFIX}.snapshot.*")).await {
        Ok(s) => subs.push(s),
        Err(e) => tracing::warn!(error = %e, "cannot answer other nodes' budget snapshot requests"),
    }

    let mut tick = tokio::time::interval(feed.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut full = tokio::time::interval(feed.full_every);
    full.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut connected = true;
    let mut watch = Watch::default();
    loop {
        tokio::select! {
            _ = tick.tick() => {
                replica.collect(&board, &stats.rows_refused);
                let up = client.connection_state() == async_nats::connection::State::Connected;
                // While disconnected the crossings wait (the watch remembers only sent ones).
                if up {
                    notify(&client, watch.alerts(&board, &node, crate::clock::unix_s_i64())).await;
                }
                // While disconnected, deltas are dropped: the full state after the
                // reconnect carries them.
                let messages = replica.take_delta_messages();
                if up {
                    publish(&client, format!("{PREFIX}.delta.{me}"), messages, &stats).await;
                    if !connected {
                        // Healed: tell the others what happened here, and ask them what
                        // happened there (a full state they published before this
                        // node's subscription came back would be lost otherwise).
                        publish(&client, format!("{PREFIX}.full.{me}"), replica.full_messages(), &stats).await;
                        if let Some((inbox, _)) = &answers {
                            ask(&client, &me, inbox).await;
                        }
                    }
                }
                connected = up;
            }
            _ = full.tick() => {
                replica.gc(crate::clock::unix_s_i64());
                if connected {
                    publish(&client, format!("{PREFIX}.full.{me}"), replica.full_messages(), &stats).await;
                    notify(&client, watch.sessions(&board, &node, crate::clock::unix_s_i64())).await;
                }
            }
            msg = next(&mut subs) => match msg {
                Some(m) => consume(&client, (&me, &node), &mut replica, &feed, m).await,
                None => subs.clear(),
            },
            msg = next_answer(&mut answers) => match msg {
                Some(m) if m.status.is_none() => merge(&mut replica, &feed, &m.payload, "a snapshot answer"),
                Some(_) => {}
                None => answers = None,
            },
        }
    }
}

/// Pulls a peer's state: see the module docs, "Join".
async fn join(
    client: &async_nats::Client,
    me: &str,
    answers: &mut Option<(String, async_nats::Subscriber)>,
    replica: &mut Replica,
    feed: &Feed,
) -> JoinOutcome {
    let deadline = tokio::time::Instant::now() + feed.join_timeout;
    let Some((inbox, answers)) = answers.as_mut() else { return JoinOutcome::TimedOut };
    if !ask(client, me, inbox).await {
        return JoinOutcome::TimedOut;
    }
    let mut counters = 0usize;
    loop {
        let msg = match tokio::time::timeout_at(deadline, answers.next()).await {
            Ok(Some(m)) => m,
            Ok(None) | Err(_) => return JoinOutcome::TimedOut,
        };
        if msg.status == Some(async_nats::StatusCode::NO_RESPONDERS) {
            return JoinOutcome::NoPeer;
        }
        match replica.merge_bytes(&msg.payload) {
            Ok(b) if b.is_empty() => return JoinOutcome::Snapshot { counters },
            Ok(b) => {
                counters = counters.saturating_add(b.len());
                feed.stats.merged.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                feed.stats.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "dropping a budget snapshot message");
            }
        }
    }
}

/// Every running node's replica as one merged map, and the names of the nodes that
/// answered: for `gatekeeper budget show --nats`. Waits at most `wait` (less when every
/// answer ended and nothing more came for a tenth of it).
pub async fn ask_nodes(url: &str, wait: Duration, limits: CrdtLimits) -> anyhow::Result<(Budgets, Vec<String>)> {
    let client = super::nats::connect(url, wait, "gatekeeper-budget-show").await?;
    let inbox = client.new_inbox();
    let mut answers = client.subscribe(inbox.clone()).await?;
    let me = format!("cli-{}", std::process::id());
    client.publish_with_reply(format!("{PREFIX}.snapshot.{me}"), inbox, bytes::Bytes::new()).await?;
    let deadline = tokio::time::Instant::now() + wait;
    let quiet = wait / 10;
    let (mut state, mut names) = (Budgets::new(limits), Vec::new());
    let mut open = 0usize;
    loop {
        // Once an answer ended, stop after a quiet spell; before, wait for the deadline.
        let until =
            if names.is_empty() || open > 0 { deadline } else { (tokio::time::Instant::now() + quiet).min(deadline) };
        let msg = match tokio::time::timeout_at(until, answers.next()).await {
            Ok(Some(m)) => m,
            Ok(None) | Err(_) => break,
        };
        if msg.status == Some(async_nats::StatusCode::NO_RESPONDERS) {
            break;
        }
        let name = msg.headers.as_ref().and_then(|h| h.get(NODE_HEADER)).map(|v| v.as_str().to_string());
        let Ok(b) = Budgets::decode(&msg.payload, limits) else { continue };
        if let Some(name) = name {
            if !names.contains(&name) {
                names.push(name);
                open += 1;
            }
        }
        if b.is_empty() {
            open = open.saturating_sub(1);
        } else {
            state.merge(&b)?;
        }
    }
    Ok((state, names))
}

/// Asks every peer for its full state, answered to `inbox`.
async fn ask(client: &async_nats::Client, me: &str, inbox: &str) -> bool {
    client.publish_with_reply(format!("{PREFIX}.snapshot.{me}"), inbox.to_string(), bytes::Bytes::new()).await.is_ok()
}

/// Handles one message on `bh.budget.>`.
async fn consume(
    client: &async_nats::Client,
    (me, node): (&str, &str),
    replica: &mut Replica,
    feed: &Feed,
    msg: async_nats::Message,
) {
    let mut parts = msg.subject.as_str().splitn(4, '.');
    let (kind, from) = (parts.nth(2).unwrap_or_default(), parts.next().unwrap_or_default());
    if from == me {
        return;
    }
    match kind {
        "snapshot" => {
            if let Some(reply) = msg.reply {
                let mut messages = replica.full_messages();
                messages.push(Budgets::new(replica.state().limits()).encode());
                // Named, so `budget show --nats` can say whose slots are whose.
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(NODE_HEADER, node);
                for m in messages {
                    let len = m.len() as u64;
                    match client.publish_with_headers(reply.clone(), headers.clone(), m.into()).await {
                        Ok(()) => {
                            feed.stats.sent.fetch_add(1, Ordering::Relaxed);
                            feed.stats.sent_bytes.fetch_add(len, Ordering::Relaxed);
                        }
                        Err(e) => tracing::debug!(error = %e, "budget snapshot answer not published"),
                    }
                }
            }
        }
        "delta" | "full" => merge(replica, feed, &msg.payload, from),
        _ => {}
    }
}

/// Merges one message from `from` and writes what it changed to the board.
fn merge(replica: &mut Replica, feed: &Feed, payload: &[u8], from: &str) {
    match replica.merge_bytes(payload) {
        Ok(changed) => {
            feed.stats.merged.fetch_add(1, Ordering::Relaxed);
            replica.write_remote(&feed.board, &changed, crate::clock::unix_s_i64(), &feed.stats.rows_refused);
        }
        Err(e) => {
            feed.stats.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(error = %e, from, "dropping a budget message");
        }
    }
}

/// The next answer on the inbox, or never without one.
async fn next_answer(answers: &mut Option<(String, async_nats::Subscriber)>) -> Option<async_nats::Message> {
    match answers {
        Some((_, s)) => s.next().await,
        None => std::future::pending().await,
    }
}

async fn publish(client: &async_nats::Client, subject: String, messages: Vec<Vec<u8>>, stats: &GossipStats) {
    for m in messages {
        let len = m.len() as u64;
        // Telemetry-like: one attempt; the next delta or full state supersedes a lost one.
        match client.publish(subject.clone(), m.into()).await {
            Ok(()) => {
                stats.sent.fetch_add(1, Ordering::Relaxed);
                stats.sent_bytes.fetch_add(len, Ordering::Relaxed);
            }
            Err(e) => tracing::debug!(error = %e, "budget message not published"),
        }
    }
}

/// Publishes alerts and session states with their `Nats-Msg-Id` (stored by the
/// `BH_ALERTS` / `BH_SESSIONS` streams where they exist).
async fn notify(client: &async_nats::Client, notices: Vec<Notice>) {
    for n in notices {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", n.msg_id.as_str());
        if let Err(e) = client.publish_with_headers(n.subject, headers, n.body.into()).await {
            tracing::debug!(error = %e, "budget notice not published");
        }
    }
}

/// The next message, or never when there is no subscription.
async fn next(subs: &mut futures_util::stream::SelectAll<async_nats::Subscriber>) -> Option<async_nats::Message> {
    if subs.is_empty() {
        return std::future::pending().await;
    }
    subs.next().await
}

#[cfg(test)]
mod tests;
