//! The order of runs: round-robin over targets, N rounds (A/B/C/A/B/C…).
//!
//! Running all of A, then all of B, lets a slow drift of the machine (another tenant,
//! thermal state, page cache) land on one target only. Alternating puts each target's
//! runs next to the others' runs in every round, and [`crate::stats`] compares targets
//! within a round, so drift slower than a round cancels out of the ratios.

/// One run in the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// Round, from 0.
    pub round: usize,
    /// Index into the target list.
    pub target: usize,
}

/// Every run of one phase, in the order to run them: round 0 over all targets in list
/// order, then round 1, and so on. `targets × rounds` slots.
pub fn alternate(targets: usize, rounds: usize) -> Vec<Slot> {
    let mut slots = Vec::with_capacity(targets.saturating_mul(rounds));
    for round in 0..rounds {
        for target in 0..targets {
            slots.push(Slot { round, target });
        }
    }
    debug_assert_eq!(slots.len(), targets * rounds);
    slots
}
