//! The grow-only counter: one slot per replica, merged by taking each slot's maximum.

use crate::replica::ReplicaId;

/// A grow-only counter (G-Counter) with delta-state shipping.
///
/// Each [`ReplicaId`] owns one slot that only it increments; the counter's value is the
/// sum of the slots. [`GCounter::merge`] keeps each slot's maximum, which is commutative,
/// associative and idempotent, so replicas that exchange states in any order, any number
/// of times, agree once each has seen the others' latest slots.
///
/// Delta-state: the counter remembers which slots it incremented since the last
/// [`GCounter::take_delta`], and that call returns a counter holding only those slots, at
/// their current values. A delta is itself a state, applied with `merge`, so a lost,
/// repeated or reordered delta is harmless; a lost one is repaired by the next delta of
/// that slot or by a full-state exchange (anti-entropy).
///
/// Arithmetic saturates at `u64::MAX`: no increment or sum can wrap, whatever a peer
/// sends. The value of a saturated counter stays `u64::MAX`, i.e. the budget is spent.
///
/// The slots are a vector sorted by replica: a counter has a handful of slots (nodes ×
/// shards), so a sorted vector is smaller and faster to merge than a tree.
#[derive(Debug, Clone, Default)]
pub struct GCounter {
    /// Ascending by replica, each replica once, no zero value.
    slots: Vec<Slot>,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    replica: ReplicaId,
    value: u64,
    /// Incremented (or forwarded) since the last `take_delta`; local bookkeeping, never
    /// part of the state that is compared, merged or encoded.
    dirty: bool,
}

impl PartialEq for GCounter {
    fn eq(&self, other: &GCounter) -> bool {
        self.slots.len() == other.slots.len()
            && self.slots.iter().zip(&other.slots).all(|(a, b)| a.replica == b.replica && a.value == b.value)
    }
}

impl Eq for GCounter {}

impl GCounter {
    /// An empty counter (value 0).
    pub fn new() -> GCounter {
        GCounter::default()
    }

    /// Adds `n` to `replica`'s slot (saturating) and returns the slot's new value. Only
    /// the replica that owns the slot may call this; `n == 0` changes nothing.
    pub fn increment(&mut self, replica: ReplicaId, n: u64) -> u64 {
        if n == 0 {
            return self.get(replica);
        }
        match self.slots.binary_search_by_key(&replica, |s| s.replica) {
            Ok(i) => match self.slots.get_mut(i) {
                Some(slot) => {
                    slot.value = slot.value.saturating_add(n);
                    slot.dirty = true;
                    slot.value
                }
                // binary_search returned an index inside the vector.
                None => 0,
            },
            Err(i) => {
                self.slots.insert(i, Slot { replica, value: n, dirty: true });
                n
            }
        }
    }

    /// The counter's value: the sum of all slots, saturating at `u64::MAX`.
    pub fn value(&self) -> u64 {
        self.slots.iter().fold(0u64, |sum, s| sum.saturating_add(s.value))
    }

    /// The value of `replica`'s slot (0 when it has none).
    pub fn get(&self, replica: ReplicaId) -> u64 {
        match self.slots.binary_search_by_key(&replica, |s| s.replica) {
            Ok(i) => self.slots.get(i).map_or(0, |s| s.value),
            Err(_) => 0,
        }
    }

    /// What `node` contributed: the sum of its slots over every shard and boot,
    /// saturating (per-node figures for `gatekeeper budget show`, per-node shares).
    pub fn node_value(&self, node: u64) -> u64 {
        self.slots.iter().filter(|s| s.replica.node == node).fold(0u64, |sum, s| sum.saturating_add(s.value))
    }

    /// The slots in replica order.
    pub fn slots(&self) -> impl ExactSizeIterator<Item = (ReplicaId, u64)> + '_ {
        self.slots.iter().map(|s| (s.replica, s.value))
    }

    /// The number of slots.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the counter has no slot.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Joins `other` into `self` (each slot becomes the larger of the two) and returns
    /// whether anything changed. The joined slots are not marked for shipping: a slot is
    /// shipped by its owner (use [`GCounter::merge_forward`] to relay).
    pub fn merge(&mut self, other: &GCounter) -> bool {
        self.join(other, false)
    }

    /// [`GCounter::merge`], and marks every slot that grew for the next
    /// [`GCounter::take_delta`]: for a relay that collects slots from its own writers
    /// (e.g. a node's shards) and ships them on as one delta.
    pub fn merge_forward(&mut self, other: &GCounter) -> bool {
        self.join(other, true)
    }

    fn join(&mut self, other: &GCounter, mark: bool) -> bool {
        if self.slots.is_empty() {
            // A counter seen for the first time (a joining node, a new key): a copy.
            self.slots = other.slots.iter().filter(|s| s.value > 0).map(|s| Slot { dirty: mark, ..*s }).collect();
            return !self.slots.is_empty();
        }
        let mut changed = false;
        let mut added: Vec<Slot> = Vec::new();
        // Both sides are sorted: one walk, `i` never moves back.
        let mut i = 0;
        for theirs in &other.slots {
            while self.slots.get(i).is_some_and(|mine| mine.replica < theirs.replica) {
                i += 1;
            }
            match self.slots.get_mut(i) {
                Some(mine) if mine.replica == theirs.replica => {
                    if theirs.value > mine.value {
                        mine.value = theirs.value;
                        mine.dirty |= mark;
                        changed = true;
                    }
                }
                // A zero slot says nothing; keeping none keeps states canonical.
                _ if theirs.value == 0 => {}
                _ => added.push(Slot { replica: theirs.replica, value: theirs.value, dirty: mark }),
            }
        }
        if !added.is_empty() {
            self.slots.extend(added);
            self.slots.sort_unstable_by_key(|s| s.replica);
            changed = true;
        }
        changed
    }

    /// The slots incremented since the last call, at their current values, as a counter
    /// to ship and [`GCounter::merge`] elsewhere; clears the record.
    pub fn take_delta(&mut self) -> GCounter {
        let mut slots = Vec::new();
        for slot in self.slots.iter_mut().filter(|s| s.dirty) {
            slot.dirty = false;
            slots.push(Slot { dirty: false, ..*slot });
        }
        GCounter { slots }
    }

    /// Whether a slot was incremented since the last [`GCounter::take_delta`].
    pub fn has_delta(&self) -> bool {
        self.slots.iter().any(|s| s.dirty)
    }

    /// How many of `other`'s slots `self` lacks: the slots a merge would add.
    pub fn new_slots_in(&self, other: &GCounter) -> usize {
        other.slots.iter().filter(|s| s.value > 0 && self.get(s.replica) == 0).count()
    }

    /// The largest incarnation among the slots of `node`'s `shard`, if any.
    pub fn incarnation_max(&self, node: u64, shard: u16) -> Option<u32> {
        self.slots
            .iter()
            .filter(|s| s.replica.node == node && s.replica.shard == shard)
            .map(|s| s.replica.incarnation)
            .max()
    }

    /// Builds a counter from nonzero slots already known to be in strictly ascending
    /// order (the decoder's output); nothing is marked for shipping.
    pub(crate) fn from_sorted_slots(slots: Vec<(ReplicaId, u64)>) -> GCounter {
        debug_assert!(slots.windows(2).all(|w| w[0].0 < w[1].0) && slots.iter().all(|s| s.1 > 0));
        GCounter { slots: slots.into_iter().map(|(replica, value)| Slot { replica, value, dirty: false }).collect() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: ReplicaId = ReplicaId::new(1, 0, 0);
    const B: ReplicaId = ReplicaId::new(2, 0, 0);

    #[test]
    fn increments_merge_and_deltas() {
        let mut a = GCounter::new();
        assert_eq!(a.increment(A, 5), 5);
        assert_eq!(a.increment(A, 0), 5);
        assert_eq!(a.increment(A, 2), 7);
        let mut b = GCounter::new();
        b.increment(B, 3);
        assert!(a.merge(&b));
        assert!(!a.merge(&b), "a second merge changes nothing");
        assert_eq!(a.value(), 10);
        let delta = a.take_delta();
        assert_eq!(delta.slots().collect::<Vec<_>>(), vec![(A, 7)], "only the own slot is shipped");
        assert!(!a.has_delta());
        assert!(a.take_delta().is_empty());
        let mut relay = GCounter::new();
        assert!(relay.merge_forward(&a));
        assert_eq!(relay.take_delta(), a, "a relay ships what it collected");
    }

    #[test]
    fn saturates_instead_of_wrapping() {
        let mut c = GCounter::new();
        c.increment(A, u64::MAX - 1);
        assert_eq!(c.increment(A, 10), u64::MAX);
        c.increment(B, u64::MAX);
        assert_eq!(c.value(), u64::MAX);
        let mut other = GCounter::new();
        other.increment(A, 1);
        c.merge(&other);
        assert_eq!(c.get(A), u64::MAX, "merge keeps the maximum");
    }

    #[test]
    fn incarnations() {
        let mut c = GCounter::new();
        assert_eq!(c.incarnation_max(1, 0), None);
        c.increment(ReplicaId::new(1, 0, 3), 1);
        c.increment(ReplicaId::new(1, 0, 7), 1);
        c.increment(ReplicaId::new(1, 1, 9), 1);
        c.increment(ReplicaId::new(2, 0, 11), 1);
        assert_eq!(c.incarnation_max(1, 0), Some(7));
        assert_eq!(c.incarnation_max(1, 1), Some(9));
        assert_eq!(c.incarnation_max(0, 0), None);
        assert_eq!((c.node_value(1), c.node_value(2), c.node_value(3)), (3, 1, 0));
    }
}
