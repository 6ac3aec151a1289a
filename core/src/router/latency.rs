//! Latency mode: the deployment with the lowest predicted latency first.
//!
//! Power of two choices: two candidates whose circuits admit calls are drawn at
//! random, and the one with the lower predicted cost goes first — cheap, and unlike
//! always taking the global best it does not stampede one deployment with every
//! shard's requests at once. The rest follow by predicted cost as the failover
//! order; deployments whose circuit is open go last (failover skips them).
//!
//! Predicted cost: (peak-EWMA time to first byte + peak-EWMA per-token time ×
//! [`EXPECTED_TOKENS`]) × (calls in flight + 1). A cold deployment (no answer yet)
//! gets the best estimate among the candidates as its prior and wins ties, so every
//! deployment is tried and measured; with no estimate at all, [`COLD_PRIOR_US`].

use std::time::Instant;

use super::health::ShardHealth;
use super::table::Deployment;

/// Completion tokens a request is assumed to produce when weighing per-token time.
pub const EXPECTED_TOKENS: f64 = 256.0;
/// Predicted time to first byte when no candidate has been measured yet, µs.
pub const COLD_PRIOR_US: f64 = 1_000.0;

/// Reorders `candidates` so the deployment predicted fastest comes first.
pub fn order(candidates: &mut [&Deployment], health: &ShardHealth, now: Instant) {
    if candidates.len() < 2 {
        return;
    }
    let estimates: Vec<_> = candidates.iter().map(|d| health.estimate(d, now)).collect();
    let prior = estimates.iter().filter_map(|e| e.ttfb_us).reduce(f64::min).unwrap_or(COLD_PRIOR_US);
    // (open, cost, cold): sorted ascending, so admitted before open, cheap before
    // dear, and a cold candidate before a measured one of equal cost.
    let mut keyed: Vec<(bool, f64, bool, &Deployment)> = candidates
        .iter()
        .zip(&estimates)
        .map(|(d, e)| {
            let base = e.ttfb_us.unwrap_or(prior) + e.per_token_us.unwrap_or(0.0) * EXPECTED_TOKENS;
            (e.open, base * (e.inflight as f64 + 1.0), e.ttfb_us.is_none(), *d)
        })
        .collect();
    let rank = |a: &(bool, f64, bool, &Deployment), b: &(bool, f64, bool, &Deployment)| {
        a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)).then(b.2.cmp(&a.2))
    };
    // Stable: equal candidates keep their failover order.
    keyed.sort_by(rank);
    let admitted = keyed.iter().take_while(|k| !k.0).count();
    if admitted > 2 {
        let n = admitted as u64;
        let i = (health.random() % n) as usize;
        let j = (i + 1 + (health.random() % (n - 1)) as usize) % admitted;
        let pick = if rank(&keyed[i], &keyed[j]).is_le() { i } else { j };
        let chosen = keyed.remove(pick);
        keyed.insert(0, chosen);
    }
    for (slot, k) in candidates.iter_mut().zip(keyed) {
        *slot = k.3;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::router::health::{HealthBoard, HealthSettings};

    fn deployments(n: usize) -> Vec<Deployment> {
        (0..n).map(|p| Deployment { id: p, model: 0, provider: p, ..Default::default() }).collect()
    }

    fn health(n: usize) -> ShardHealth {
        let providers = (0..n).map(|p| format!("p{p}")).collect();
        ShardHealth::new(Arc::new(HealthBoard::new(1, vec!["m".into()], providers)), 0)
    }

    fn answer(h: &ShardHealth, d: &Deployment, ms: u64, s: &HealthSettings) {
        h.admit(d, Instant::now(), s).unwrap().success(Duration::from_millis(ms), s);
    }

    #[test]
    fn cold_first_then_fastest_then_away_from_open_circuits() {
        let s = HealthSettings { failures_max: 1, open_ms: 60_000, ..Default::default() };
        let ds = deployments(2);
        let h = health(2);
        let first = |h: &ShardHealth| {
            let mut c: Vec<&Deployment> = ds.iter().collect();
            order(&mut c, h, Instant::now());
            c[0].provider
        };
        assert_eq!(first(&h), 0, "all cold: failover order");
        answer(&h, &ds[0], 200, &s);
        assert_eq!(first(&h), 1, "the cold one is tried");
        answer(&h, &ds[1], 20, &s);
        assert_eq!(first(&h), 1, "the fast one wins");
        let busy: Vec<_> = (0..10).map(|_| h.admit(&ds[1], Instant::now(), &s).unwrap()).collect();
        assert_eq!(first(&h), 0, "20 ms × 11 in flight is worse than 200 ms idle");
        drop(busy);
        h.admit(&ds[1], Instant::now(), &s).unwrap().failure(&s);
        assert_eq!(first(&h), 0, "an open circuit goes last");
    }

    #[test]
    fn power_of_two_choices_spreads_over_equals_and_never_picks_the_worst() {
        let s = HealthSettings::default();
        let ds = deployments(4);
        let h = health(4);
        for (d, ms) in ds.iter().zip([10, 10, 10, 500]) {
            answer(&h, d, ms, &s);
        }
        let mut firsts = [0u32; 4];
        for _ in 0..300 {
            let mut c: Vec<&Deployment> = ds.iter().collect();
            order(&mut c, &h, Instant::now());
            firsts[c[0].provider] += 1;
            assert_eq!(c[3].provider, 3, "the slowest is last in the failover order");
        }
        assert_eq!(firsts[3], 0, "the worst of any two never goes first");
        assert!(firsts[..3].iter().all(|n| *n > 30), "equal candidates share the load: {firsts:?}");
    }
}
