//! Finding the bad signatures in a failed batch, with bounded extra work.
//!
//! A batch check says only "all good" or "something is bad". Bisection finds a lone
//! forgery in `log n` steps, but unchecked it costs `n log n` when everything is forged,
//! which would let an attacker multiply our work by sending forgeries. So bisection runs
//! on a budget: a sub-batch is checked only if, after paying for it, every item still
//! unresolved could be checked one by one and the total stay within
//! [`WORK_BUDGET_FACTOR`] × (checking the whole batch one by one). Otherwise the group is
//! checked one by one. Costs are in units of one single verification, from
//! `benches/keys.rs`.

use std::ops::Range;

/// Groups smaller than this are checked one by one: a batch's fixed cost outweighs it.
pub(crate) const SINGLE_BELOW: usize = 4;

/// Cost of one single verification, in work units.
pub(crate) const SINGLE_COST: u64 = 100;
/// Cost of one signature inside a batch check, in work units. Measured with
/// `benches/keys.rs` (`ed25519_single` 31 µs; `batch_verify/4` 70 µs, `/64` 762 µs):
/// a batch costs about 24 µs plus 11.5 µs per signature; rounded up here.
pub(crate) const BATCH_ITEM_COST: u64 = 40;
/// Fixed cost of starting a batch check, in work units (see [`BATCH_ITEM_COST`]).
pub(crate) const BATCH_FIXED_COST: u64 = 80;
/// Resolving a failed batch never costs more than this many times checking it one by one.
pub(crate) const WORK_BUDGET_FACTOR: u64 = 2;

const _: () = assert!(BATCH_ITEM_COST < SINGLE_COST);

/// Work done resolving batches, in signatures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Work {
    /// Signatures passed through batch checks (each batch counts its length).
    pub batch_signatures: u64,
    /// Signatures checked one by one.
    pub single_signatures: u64,
    /// Batch checks run.
    pub batches: u64,
}

impl Work {
    /// This work in cost units (one single verification = [`SINGLE_COST`]).
    pub(crate) fn cost(&self) -> u64 {
        self.batches * BATCH_FIXED_COST + self.batch_signatures * BATCH_ITEM_COST + self.single_signatures * SINGLE_COST
    }
}

struct Resolver<'a> {
    ok: &'a mut [bool],
    batch: &'a mut dyn FnMut(Range<usize>) -> bool,
    single: &'a mut dyn FnMut(usize) -> bool,
    work: Work,
    budget: u64,
    /// Items whose outcome is not known yet.
    unresolved: u64,
}

/// Fills `ok[i]` with whether item `i` verifies, for all `i < ok.len()`.
///
/// `batch(range)` checks a contiguous group at once; `single(i)` checks one item.
pub(crate) fn resolve(
    ok: &mut [bool],
    batch: &mut dyn FnMut(Range<usize>) -> bool,
    single: &mut dyn FnMut(usize) -> bool,
) -> Work {
    let n = ok.len();
    let mut r = Resolver {
        ok,
        batch,
        single,
        work: Work::default(),
        budget: WORK_BUDGET_FACTOR * n as u64 * SINGLE_COST,
        unresolved: n as u64,
    };
    if n < SINGLE_BELOW {
        r.singles(0..n);
    } else if !r.check(0..n) {
        r.known_bad(0..n);
    }
    debug_assert_eq!(r.unresolved, 0);
    debug_assert!(
        r.work.cost() <= r.budget.max(n as u64 * SINGLE_COST + BATCH_FIXED_COST + n as u64 * BATCH_ITEM_COST)
    );
    r.work
}

impl Resolver<'_> {
    /// Whether a batch check of `len` items fits the budget, leaving room to check every
    /// unresolved item one by one afterwards.
    fn affordable(&self, len: usize) -> bool {
        let after = self.work.cost() + BATCH_FIXED_COST + len as u64 * BATCH_ITEM_COST + self.unresolved * SINGLE_COST;
        len >= SINGLE_BELOW && after <= self.budget
    }

    /// `range` holds at least one bad item.
    fn known_bad(&mut self, range: Range<usize>) {
        let mid = range.start + range.len() / 2;
        let (left, right) = (range.start..mid, mid..range.end);
        if !self.affordable(left.len()) {
            self.singles(range);
        } else if self.check(left.clone()) {
            // The left half is clean, so the right half holds the bad one: no re-check.
            self.known_bad(right);
        } else {
            self.known_bad(left);
            self.unknown(right);
        }
    }

    /// `range` may or may not hold bad items.
    fn unknown(&mut self, range: Range<usize>) {
        if !self.affordable(range.len()) {
            self.singles(range);
        } else if !self.check(range.clone()) {
            self.known_bad(range);
        }
    }

    /// Batch-checks `range`; on success marks it good.
    fn check(&mut self, range: Range<usize>) -> bool {
        self.work.batches += 1;
        self.work.batch_signatures += range.len() as u64;
        let good = (self.batch)(range.clone());
        if good {
            self.unresolved -= range.len() as u64;
            if let Some(slots) = self.ok.get_mut(range) {
                slots.fill(true);
            }
        }
        good
    }

    fn singles(&mut self, range: Range<usize>) {
        for i in range {
            self.work.single_signatures += 1;
            self.unresolved -= 1;
            let good = (self.single)(i);
            if let Some(slot) = self.ok.get_mut(i) {
                *slot = good;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(valid: &[bool]) -> (Vec<bool>, Work) {
        let mut ok = vec![false; valid.len()];
        let work = resolve(&mut ok, &mut |r: Range<usize>| valid[r].iter().all(|&v| v), &mut |i| valid[i]);
        (ok, work)
    }

    /// One-by-one cost of `n` items: the yardstick of the bound.
    fn one_by_one(n: usize) -> u64 {
        n as u64 * SINGLE_COST
    }

    #[test]
    fn lone_forgery_is_found_by_bisection() {
        for bad in 0..64 {
            let mut valid = vec![true; 64];
            valid[bad] = false;
            let (ok, work) = run(&valid);
            assert_eq!(ok, valid, "bad at {bad}");
            assert!(work.single_signatures < 2 * SINGLE_BELOW as u64, "bad at {bad}: {work:?}");
            assert!(work.cost() <= 2 * one_by_one(64), "bad at {bad}: {work:?}");
        }
    }

    #[test]
    fn worst_case_work_is_bounded() {
        // Everything forged is the worst case for bisection: count it exactly.
        let (ok, work) = run(&[false; 64]);
        assert!(ok.iter().all(|&v| !v));
        assert!(work.cost() <= 2 * one_by_one(64), "{work:?}");
        assert_eq!(work.single_signatures, 64, "{work:?}");
        let (_, clean) = run(&[true; 64]);
        assert_eq!(clean, Work { batch_signatures: 64, single_signatures: 0, batches: 1 });
    }

    proptest! {
        #[test]
        fn any_pattern_is_exact_and_bounded(valid in proptest::collection::vec(proptest::bool::weighted(0.8), 1..=64)) {
            let (ok, work) = run(&valid);
            prop_assert_eq!(&ok, &valid);
            let n = valid.len();
            // A batch that passes costs what it costs; one that fails stays within budget.
            if valid.iter().any(|v| !v) && n >= SINGLE_BELOW {
                prop_assert!(work.cost() <= 2 * one_by_one(n), "{:?}", work);
            }
        }
    }
}
