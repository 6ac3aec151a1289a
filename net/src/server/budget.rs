//! The shard's budget of request-body bytes in flight, so that many clients declaring large
//! bodies (and sending none) cannot make a shard hold more than `body_bytes_in_flight_max`:
//! past it, a request is shed with 503 before its body is read.

use std::cell::Cell;
use std::rc::Rc;

use crate::stats::StatsRef;

/// Body bytes one shard holds or has promised to hold; shared by its connections.
pub(crate) struct BodyBudget {
    used: Cell<usize>,
    max: usize,
    /// `used` is mirrored in the shard's `body_bytes_in_flight`, for `/metrics`.
    stats: Rc<StatsRef>,
}

impl BodyBudget {
    /// An empty budget of `max` bytes.
    pub(crate) fn new(max: usize, stats: Rc<StatsRef>) -> Self {
        stats.body_bytes_in_flight.set(0);
        BodyBudget { used: Cell::new(0), max, stats }
    }

    /// The limit, for the error that names it.
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// Takes `bytes` from the budget; `None`, taking nothing, when they do not fit.
    pub(crate) fn charge(&self, bytes: usize) -> Option<BodyCharge<'_>> {
        let mut charge = self.nothing();
        charge.grow(bytes).then_some(charge)
    }

    /// A charge of no bytes (a request without a body), which may grow later.
    pub(crate) fn nothing(&self) -> BodyCharge<'_> {
        BodyCharge { budget: self, bytes: 0 }
    }

    fn set(&self, used: usize) {
        self.used.set(used);
        self.stats.body_bytes_in_flight.set(used as u64);
    }
}

/// Bytes taken from a [`BodyBudget`] for one body, given back when dropped.
pub(crate) struct BodyCharge<'b> {
    budget: &'b BodyBudget,
    bytes: usize,
}

impl BodyCharge<'_> {
    /// Takes `more` bytes for the same body; false, taking nothing, when they do not fit.
    pub(crate) fn grow(&mut self, more: usize) -> bool {
        let used = self.budget.used.get();
        match used.checked_add(more) {
            Some(after) if after <= self.budget.max => {
                self.budget.set(after);
                self.bytes += more;
                true
            }
            _ => false,
        }
    }
}

impl Drop for BodyCharge<'_> {
    fn drop(&mut self) {
        let used = self.budget.used.get();
        debug_assert!(used >= self.bytes, "a charge gives back more than was taken");
        self.budget.set(used.saturating_sub(self.bytes));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::stats::ShardStats;

    #[test]
    fn charges_fit_up_to_the_limit_exactly_and_come_back_on_drop() {
        let all: Arc<[ShardStats]> = Arc::from(vec![ShardStats::default()]);
        let budget = BodyBudget::new(100, Rc::new(StatsRef::new(all.clone(), 0)));
        let gauge = &all[0].body_bytes_in_flight;
        let a = budget.charge(60).expect("fits");
        let mut b = budget.charge(40).expect("fits exactly");
        assert!(budget.charge(1).is_none(), "one byte over");
        assert_eq!(gauge.get(), 100);
        drop(a);
        assert!(b.grow(60), "room again");
        assert!(!b.grow(1));
        assert_eq!(gauge.get(), 100);
        drop(b);
        assert_eq!(gauge.get(), 0);
        assert!(budget.charge(usize::MAX).is_none(), "no overflow");
        assert!(budget.charge(0).is_some());
    }
}
