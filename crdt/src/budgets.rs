//! Windowed budgets: one [`GCounter`] per (subject, window kind, epoch), bounded in size,
//! with old epochs garbage-collected.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::error::CrdtError;
use crate::gcounter::GCounter;
use crate::replica::ReplicaId;
use crate::window::{Epoch, WindowKind};

/// Longest subject (key id or tenant name), bytes. Key ids (`jti`) are at most 128 bytes;
/// the bound keeps one length byte in the encoding and hostile names short.
pub const SUBJECT_BYTES_MAX: usize = 255;

/// Whose spend a counter holds: one API key or one tenant.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Subject {
    /// An API key, by its key id (`jti`).
    Key(Box<str>),
    /// A tenant, by name (the key's `tenant` claim, `budgets.tenants.<name>`).
    Tenant(Box<str>),
}

impl Subject {
    /// The key with id `jti`.
    pub fn key(jti: &str) -> Result<Subject, CrdtError> {
        check_subject(jti).map(|()| Subject::Key(jti.into()))
    }

    /// The tenant `name`.
    pub fn tenant(name: &str) -> Result<Subject, CrdtError> {
        check_subject(name).map(|()| Subject::Tenant(name.into()))
    }

    /// The key id or tenant name.
    pub fn as_str(&self) -> &str {
        match self {
            Subject::Key(s) | Subject::Tenant(s) => s,
        }
    }

    /// The subject's tag in the binary encoding.
    pub(crate) fn tag(&self) -> u8 {
        match self {
            Subject::Key(_) => 0,
            Subject::Tenant(_) => 1,
        }
    }
}

fn check_subject(s: &str) -> Result<(), CrdtError> {
    if s.is_empty() || s.len() > SUBJECT_BYTES_MAX {
        return Err(CrdtError::SubjectLength { len: s.len(), max: SUBJECT_BYTES_MAX });
    }
    Ok(())
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Key(s) => write!(f, "key:{s}"),
            Subject::Tenant(s) => write!(f, "tenant:{s}"),
        }
    }
}

/// What a counter counts. Each measure of a (subject, window) is its own counter, so
/// the laws and the encoding treat them alike; the gateway picks which windows carry
/// which measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Measure {
    /// Settled tokens (prompt + completion).
    #[default]
    Tokens,
    /// Requests admitted (the `rpm` limit's count).
    Requests,
    /// Settled spend in nano-USD (the `usd_per_month` limit's count).
    UsdNano,
}

impl Measure {
    /// Every measure, in order.
    pub const ALL: [Measure; 3] = [Measure::Tokens, Measure::Requests, Measure::UsdNano];

    /// The measure's tag in the binary encoding (0, 1, 2).
    pub fn tag(self) -> u8 {
        match self {
            Measure::Tokens => 0,
            Measure::Requests => 1,
            Measure::UsdNano => 2,
        }
    }

    /// The measure with encoding tag `tag`.
    pub fn from_tag(tag: u8) -> Option<Measure> {
        Measure::ALL.get(usize::from(tag)).copied()
    }

    /// A short name (`tokens`, `requests`, `usd_nano`).
    pub fn name(self) -> &'static str {
        match self {
            Measure::Tokens => "tokens",
            Measure::Requests => "requests",
            Measure::UsdNano => "usd_nano",
        }
    }
}

/// One budget counter's name: whose spend, in which window, of which measure.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BudgetKey {
    /// The key or tenant.
    pub subject: Subject,
    /// The window (its kind and start).
    pub epoch: Epoch,
    /// What is counted.
    pub measure: Measure,
}

impl BudgetKey {
    /// The token counter of `subject` for the `kind` window that contains `now_unix_s`.
    pub fn at(subject: Subject, kind: WindowKind, now_unix_s: i64) -> Result<BudgetKey, CrdtError> {
        Ok(BudgetKey { subject, epoch: kind.epoch(now_unix_s)?, measure: Measure::Tokens })
    }

    /// The same subject and window, counting `measure`.
    pub fn with_measure(mut self, measure: Measure) -> BudgetKey {
        self.measure = measure;
        self
    }
}

impl fmt::Display for BudgetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.measure {
            Measure::Tokens => write!(f, "{}/{}", self.subject, self.epoch),
            m => write!(f, "{}/{}/{}", self.subject, self.epoch, m.name()),
        }
    }
}

/// The bounds of one [`Budgets`] map. Leaf-crate plain values: the gateway's config fills
/// them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most counters (subject × window) held at once. Default 100,000. When reached, a
    /// new counter is refused with [`CrdtError::KeysFull`] (the gateway then refuses the
    /// request) and a merge that would pass it is refused whole; live counters are never
    /// evicted, since dropping one would re-grant its spend. [`Budgets::gc`] frees room.
    pub keys_max: usize,
    /// Most replica slots in one counter. Default 1,024: nodes × shards × restarts within
    /// one window. Past it, [`CrdtError::SlotsFull`], as for `keys_max`.
    pub slots_per_key_max: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { keys_max: 100_000, slots_per_key_max: 1_024 }
    }
}

/// Every budget counter a replica knows: a map from [`BudgetKey`] to [`GCounter`], itself
/// a state-based CRDT (the map's join is the per-key join; a missing key is the empty
/// counter).
///
/// A replica [`Budgets::add`]s settled spend to its own slot, ships
/// [`Budgets::take_delta`] (only the counters and slots changed since the last take)
/// often and [`Budgets::encode`] of the whole map now and then, and
/// [`Budgets::merge`]s what it receives. [`Budgets::gc`] drops windows that have ended.
///
/// Two maps are equal when they hold the same counters; what is marked for shipping and
/// the limits are not part of the state.
#[derive(Debug, Clone)]
pub struct Budgets {
    counters: BTreeMap<BudgetKey, GCounter>,
    /// Counters with a slot to ship; local bookkeeping, not compared or encoded.
    dirty: BTreeSet<BudgetKey>,
    limits: Limits,
    /// At least the largest slot count of any counter (not lowered by `gc`): lets a merge
    /// skip the per-key bound check when no counter could pass `slots_per_key_max`.
    slots_len_max: usize,
}

impl PartialEq for Budgets {
    fn eq(&self, other: &Budgets) -> bool {
        self.counters == other.counters
    }
}

impl Eq for Budgets {}

impl Default for Budgets {
    fn default() -> Budgets {
        Budgets::new(Limits::default())
    }
}

impl Budgets {
    /// An empty map bounded by `limits`.
    pub fn new(limits: Limits) -> Budgets {
        Budgets { counters: BTreeMap::new(), dirty: BTreeSet::new(), limits, slots_len_max: 0 }
    }

    /// The map's bounds.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Number of counters.
    pub fn len(&self) -> usize {
        self.counters.len()
    }

    /// Whether there is no counter.
    pub fn is_empty(&self) -> bool {
        self.counters.is_empty()
    }

    /// Spend recorded for `key` by every replica (0 for an unknown key), saturating.
    pub fn spent(&self, key: &BudgetKey) -> u64 {
        self.counters.get(key).map_or(0, GCounter::value)
    }

    /// The counter of `key`, with its per-replica slots.
    pub fn counter(&self, key: &BudgetKey) -> Option<&GCounter> {
        self.counters.get(key)
    }

    /// Every counter, in key order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&BudgetKey, &GCounter)> {
        self.counters.iter()
    }

    /// Adds `n` to `replica`'s slot of `key` and returns the key's new total spend.
    /// `n == 0` changes nothing. Saturates at `u64::MAX`; refuses only at the bounds.
    pub fn add(&mut self, replica: ReplicaId, key: &BudgetKey, n: u64) -> Result<u64, CrdtError> {
        if n == 0 {
            return Ok(self.spent(key));
        }
        let counter = match self.counters.get_mut(key) {
            Some(counter) => {
                if counter.get(replica) == 0 && counter.len() >= self.limits.slots_per_key_max {
                    return Err(CrdtError::SlotsFull { slots_per_key_max: self.limits.slots_per_key_max });
                }
                counter
            }
            None => {
                if self.counters.len() >= self.limits.keys_max {
                    return Err(CrdtError::KeysFull { keys_max: self.limits.keys_max });
                }
                if self.limits.slots_per_key_max == 0 {
                    return Err(CrdtError::SlotsFull { slots_per_key_max: 0 });
                }
                self.counters.entry(key.clone()).or_default()
            }
        };
        counter.increment(replica, n);
        self.slots_len_max = self.slots_len_max.max(counter.len());
        let spent = counter.value();
        if !self.dirty.contains(key) {
            self.dirty.insert(key.clone());
        }
        Ok(spent)
    }

    /// Joins `other` into `self`: every counter becomes the per-slot maximum of the two.
    /// Returns whether anything changed. All or nothing: when the result would pass a
    /// bound, nothing is merged and the error names the bound. Joined slots are not
    /// marked for shipping (their owner ships them).
    pub fn merge(&mut self, other: &Budgets) -> Result<bool, CrdtError> {
        self.join(other, false)
    }

    /// [`Budgets::merge`], marking what grew for the next [`Budgets::take_delta`]: for a
    /// relay, e.g. the node's bridge collecting its shards' slots into one delta.
    pub fn merge_forward(&mut self, other: &Budgets) -> Result<bool, CrdtError> {
        self.join(other, true)
    }

    fn join(&mut self, other: &Budgets, mark: bool) -> Result<bool, CrdtError> {
        self.check_room_for(other)?;
        let mut changed = false;
        for (key, theirs) in other.counters.iter().filter(|(_, c)| !c.is_empty()) {
            let mine = match self.counters.get_mut(key) {
                Some(mine) => mine,
                None => self.counters.entry(key.clone()).or_default(),
            };
            let grew = if mark { mine.merge_forward(theirs) } else { mine.merge(theirs) };
            self.slots_len_max = self.slots_len_max.max(mine.len());
            if grew && mark && !self.dirty.contains(key) {
                self.dirty.insert(key.clone());
            }
            changed |= grew;
        }
        Ok(changed)
    }

    /// Whether merging `other` keeps both bounds.
    fn check_room_for(&self, other: &Budgets) -> Result<(), CrdtError> {
        let slots_max = self.limits.slots_per_key_max;
        // The common case, without a lookup per key: even if every key were new and no
        // slot shared, both bounds would hold.
        if self.counters.len().saturating_add(other.counters.len()) <= self.limits.keys_max
            && self.slots_len_max.saturating_add(other.slots_len_max) <= slots_max
        {
            return Ok(());
        }
        let mut new_keys = 0usize;
        for (key, theirs) in &other.counters {
            let slots = match self.counters.get(key) {
                None => {
                    new_keys += 1;
                    theirs.len()
                }
                // The exact count only when the quick upper bound could pass the limit.
                Some(mine) if mine.len().saturating_add(theirs.len()) > slots_max => {
                    mine.len().saturating_add(mine.new_slots_in(theirs))
                }
                Some(_) => 0,
            };
            if slots > slots_max {
                return Err(CrdtError::SlotsFull { slots_per_key_max: slots_max });
            }
        }
        if self.counters.len().saturating_add(new_keys) > self.limits.keys_max {
            return Err(CrdtError::KeysFull { keys_max: self.limits.keys_max });
        }
        Ok(())
    }

    /// The counters and slots changed by [`Budgets::add`] (or a forwarding merge) since
    /// the last call, at their current values: the delta to ship. Clears the record.
    pub fn take_delta(&mut self) -> Budgets {
        let mut delta = Budgets::new(self.limits);
        for key in std::mem::take(&mut self.dirty) {
            if let Some(counter) = self.counters.get_mut(&key) {
                let slots = counter.take_delta();
                if !slots.is_empty() {
                    delta.slots_len_max = delta.slots_len_max.max(slots.len());
                    delta.counters.insert(key, slots);
                }
            }
        }
        delta
    }

    /// Whether there is anything for [`Budgets::take_delta`] to ship.
    pub fn has_delta(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Drops every counter whose window ended at least `grace_s` seconds before
    /// `now_unix_s`, and returns how many were dropped.
    ///
    /// The grace keeps a window that has just ended for late deltas and for settling
    /// requests admitted in it (a request admitted at 12:00:59 may settle at 12:01:20);
    /// a value a little above the longest request plus the gossip delay suits. A delta
    /// that arrives after its window was dropped re-creates the counter, harmlessly (no
    /// current window reads it), and the next `gc` drops it again.
    pub fn gc(&mut self, now_unix_s: i64, grace_s: u32) -> usize {
        let before = self.counters.len();
        let live = |key: &BudgetKey| match key.epoch.end_unix_s() {
            Some(end) => end.saturating_add(i64::from(grace_s)) > now_unix_s,
            None => true,
        };
        self.counters.retain(|key, _| live(key));
        self.dirty.retain(live);
        before - self.counters.len()
    }

    /// The largest boot incarnation of `node` in any slot, to help a restarted node pick
    /// a new one. Safe only with a snapshot known to hold every slot the node ever
    /// shipped; otherwise combine it with a persisted boot counter or the boot time
    /// (see the crate docs, "Restarts").
    pub fn incarnation_max(&self, node: u64) -> Option<u32> {
        self.counters.values().flat_map(|c| c.slots()).filter(|(r, _)| r.node == node).map(|(r, _)| r.incarnation).max()
    }

    /// A map from counters already checked against `limits` (the decoder's output).
    pub(crate) fn from_counters(counters: BTreeMap<BudgetKey, GCounter>, limits: Limits) -> Budgets {
        let slots_len_max = counters.values().map(GCounter::len).max().unwrap_or(0);
        Budgets { counters, dirty: BTreeSet::new(), limits, slots_len_max }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const R1: ReplicaId = ReplicaId::new(1, 0, 0);
    const R2: ReplicaId = ReplicaId::new(2, 0, 0);
    /// 2024-03-01T00:00:00Z.
    const MAR: i64 = 1_709_251_200;

    fn key(kind: WindowKind, now: i64) -> BudgetKey {
        BudgetKey::at(Subject::key("k1").unwrap(), kind, now).unwrap()
    }

    #[test]
    fn windows_roll_over_at_their_edges() {
        let mut b = Budgets::default();
        for kind in WindowKind::ALL {
            b.add(R1, &key(kind, MAR - 1), 10).unwrap();
        }
        // One second later every window is new (a minute, a day and a month end together).
        for kind in WindowKind::ALL {
            assert_eq!(b.spent(&key(kind, MAR - 1)), 10);
            assert_eq!(b.spent(&key(kind, MAR)), 0, "{kind}");
        }
        b.add(R1, &key(WindowKind::Minute, MAR + 59), 1).unwrap();
        assert_eq!(b.spent(&key(WindowKind::Minute, MAR)), 1, "same minute");
        assert_eq!(b.spent(&key(WindowKind::Minute, MAR + 60)), 0, "next minute");
        assert_eq!(b.spent(&key(WindowKind::Month, MAR + 30 * 86_400)), 0, "March 31 is still March");
    }

    #[test]
    fn gc_drops_ended_windows_after_the_grace() {
        let mut b = Budgets::default();
        for kind in WindowKind::ALL {
            b.add(R1, &key(kind, MAR - 1), 1).unwrap();
            b.add(R1, &key(kind, MAR), 1).unwrap();
        }
        assert_eq!(b.len(), 6);
        assert_eq!(b.gc(MAR + 29, 30), 0, "within the grace");
        assert_eq!(b.gc(MAR + 30, 30), 3, "the previous minute, day and month all end at MAR");
        assert_eq!(b.len(), 3);
        assert_eq!(b.gc(MAR + 90, 30), 1);
        assert_eq!(b.spent(&key(WindowKind::Day, MAR)), 1);
        assert_eq!(b.spent(&key(WindowKind::Month, MAR)), 1);
        assert!(
            b.take_delta().iter().all(|(k, _)| k.epoch.end_unix_s().unwrap() > MAR),
            "ended windows are not shipped"
        );
    }

    #[test]
    fn bounds_refuse_instead_of_growing() {
        let mut b = Budgets::new(Limits { keys_max: 2, slots_per_key_max: 2 });
        b.add(R1, &key(WindowKind::Minute, 0), 1).unwrap();
        b.add(R1, &key(WindowKind::Day, 0), 1).unwrap();
        assert_eq!(b.add(R1, &key(WindowKind::Month, 0), 1), Err(CrdtError::KeysFull { keys_max: 2 }));
        assert_eq!(b.add(R1, &key(WindowKind::Month, 0), 0), Ok(0), "nothing to add, nothing refused");
        b.add(R2, &key(WindowKind::Minute, 0), 1).unwrap();
        let r3 = ReplicaId::new(3, 0, 0);
        assert_eq!(b.add(r3, &key(WindowKind::Minute, 0), 1), Err(CrdtError::SlotsFull { slots_per_key_max: 2 }));
        assert_eq!(b.add(R2, &key(WindowKind::Minute, 0), 1), Ok(3), "existing slots still grow");

        let mut other = Budgets::default();
        other.add(r3, &key(WindowKind::Day, 0), 5).unwrap();
        other.add(r3, &key(WindowKind::Month, 0), 5).unwrap();
        let before = b.clone();
        assert_eq!(b.merge(&other), Err(CrdtError::KeysFull { keys_max: 2 }));
        assert_eq!(b, before, "a refused merge changes nothing");
        let mut one = Budgets::default();
        one.add(r3, &key(WindowKind::Minute, 0), 5).unwrap();
        assert_eq!(b.merge(&one), Err(CrdtError::SlotsFull { slots_per_key_max: 2 }));
        assert_eq!(b, before);
        // The same slot arriving as a shipped delta or as decoded bytes is refused alike.
        let delta = one.take_delta();
        assert_eq!(b.merge(&delta), Err(CrdtError::SlotsFull { slots_per_key_max: 2 }));
        let decoded = Budgets::decode(&delta.encode(), Limits::default()).unwrap();
        assert_eq!(b.merge(&decoded), Err(CrdtError::SlotsFull { slots_per_key_max: 2 }));
        assert_eq!(b, before);
        // A map at its bounds refuses the delta too.
        let mut small = Budgets::new(Limits { keys_max: 1, slots_per_key_max: 1 });
        small.add(R1, &key(WindowKind::Minute, 0), 1).unwrap();
        assert_eq!(small.merge(&delta), Err(CrdtError::SlotsFull { slots_per_key_max: 1 }));
    }

    #[test]
    fn subjects_are_bounded() {
        assert!(Subject::key("").is_err());
        assert!(Subject::tenant(&"t".repeat(SUBJECT_BYTES_MAX)).is_ok());
        assert_eq!(
            Subject::tenant(&"t".repeat(SUBJECT_BYTES_MAX + 1)),
            Err(CrdtError::SubjectLength { len: SUBJECT_BYTES_MAX + 1, max: SUBJECT_BYTES_MAX })
        );
        assert_ne!(Subject::key("a").unwrap(), Subject::tenant("a").unwrap());
    }

    #[test]
    fn a_restarted_node_never_regrants() {
        let k = key(WindowKind::Day, MAR);
        let (node, shard) = (7, 0);
        let boot1 = ReplicaId::new(node, shard, 1);
        let mut before_crash = Budgets::default();
        before_crash.add(boot1, &k, 900).unwrap();
        let mut peer = Budgets::default();
        peer.merge(&before_crash.take_delta()).unwrap();
        let peer_at_restart = peer.clone();

        // The node restarts with nothing, pulls the peer's snapshot, then counts on under
        // a new incarnation.
        let mut restarted = Budgets::decode(&peer.encode(), Limits::default()).unwrap();
        let boot2 = ReplicaId::new(node, shard, restarted.incarnation_max(node).unwrap() + 1);
        assert_eq!(boot2.incarnation, 2);
        assert_eq!(restarted.add(boot2, &k, 50).unwrap(), 950, "the old boot's spend still counts");
        peer.merge(&restarted.take_delta()).unwrap();
        assert_eq!(peer.spent(&k), 950);
        // Had it counted its old slot again from 0, the merge would hide the new spend.
        let mut reused = Budgets::default();
        reused.add(boot1, &k, 50).unwrap();
        let mut naive = peer_at_restart;
        naive.merge(&reused).unwrap();
        assert_eq!(naive.spent(&k), 900, "max(900, 50): the re-grant a new incarnation avoids");
    }
}
