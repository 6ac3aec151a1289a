//! Capability mode: the best model for the request's task among those that pass the
//! hard filters.

use super::caps::Capability;
use super::score::Task;
use super::table::Deployment;

/// Whether `d` declares the capability that marks strength at `task` (`false` for
/// `chat`, and for a deployment that declares no capabilities at all).
pub fn strong_at(d: &Deployment, task: Task) -> bool {
    match (Capability::for_task(task), d.capabilities) {
        (Some(c), Some(caps)) => caps.has(c),
        _ => false,
    }
}

/// Capability mode's order: models strong at `task` first, then by `quality`
/// (highest first), then by price (cheapest first); `price` gives each candidate's
/// expected price. A stable sort keeps the failover order among equals.
pub fn order<T>(candidates: &mut [T], task: Task, deployment: impl Fn(&T) -> &Deployment, price: impl Fn(&T) -> f64) {
    candidates.sort_by(|a, b| {
        let (da, db) = (deployment(a), deployment(b));
        strong_at(db, task)
            .cmp(&strong_at(da, task))
            .then(db.quality.total_cmp(&da.quality))
            .then(price(a).total_cmp(&price(b)))
    });
}
