//! A shard's own health state for every deployment: circuits, latency estimates,
//! calls in flight. `RefCell`s owned by the shard; every change is published to the
//! shard's row of the [`HealthBoard`] for the other shards, the bridge and metrics.

use std::cell::{Cell, RefCell};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::board::{self, HealthBoard, Slot};
use super::circuit::{Admission, Circuit, HealthSettings, State, Transition};
use super::estimator::PeakEwma;
use crate::router::table::Deployment;

/// One deployment as this shard sees it.
#[derive(Debug, Clone, Copy, Default)]
struct DeploymentHealth {
    circuit: Circuit,
    ttfb: PeakEwma,
    per_token: PeakEwma,
    inflight: u64,
}

/// This shard's health of every deployment (keyed like the [`HealthBoard`]).
#[derive(Debug)]
pub struct ShardHealth {
    board: Arc<HealthBoard>,
    shard: usize,
    cells: RefCell<Vec<DeploymentHealth>>,
    /// xorshift64 state for the latency mode's random picks.
    rng: Cell<u64>,
}

/// What a candidate looks like to the latency mode.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// Peak-EWMA time to first byte, µs (this shard's, else another shard's); `None`: cold.
    pub ttfb_us: Option<f64>,
    /// Peak-EWMA time per completion token, µs.
    pub per_token_us: Option<f64>,
    /// Calls in flight on every shard.
    pub inflight: u64,
    /// The circuit skips it now (here, on another shard or another node).
    pub open: bool,
}

impl ShardHealth {
    /// Shard `shard`'s health over `board`.
    pub fn new(board: Arc<HealthBoard>, shard: usize) -> ShardHealth {
        let cells = RefCell::new(vec![DeploymentHealth::default(); board.keys()]);
        // Seeded per shard and start, so shards do not pick in lockstep.
        let seed = (shard as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ u64::from(std::process::id())
            ^ std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos().into());
        ShardHealth { board, shard, cells, rng: Cell::new(seed | 1) }
    }

    /// The board this shard publishes to.
    pub fn board(&self) -> &HealthBoard {
        &self.board
    }

    /// A random number (xorshift64; not for secrets).
    pub fn random(&self) -> u64 {
        let mut x = self.rng.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.set(x);
        x
    }

    fn key(&self, d: &Deployment) -> Option<usize> {
        self.board.key(d.model, d.provider)
    }

    fn slot(&self, key: usize) -> Option<&Slot> {
        self.board.slot(self.shard, key)
    }

    /// A deployment's estimates and whether a circuit skips it at `now`.
    pub fn estimate(&self, d: &Deployment, now: Instant) -> Estimate {
        let cold = Estimate { ttfb_us: None, per_token_us: None, inflight: 0, open: false };
        let Some(key) = self.key(d) else { return cold };
        let now_ms = self.board.ms(now);
        let cells = self.cells.borrow();
        let Some(own) = cells.get(key) else { return cold };
        let elsewhere = || self.board.slots_of(key);
        // A shard that never called it borrows another shard's estimate.
        let borrowed = |f: fn(&Slot) -> &std::sync::atomic::AtomicU64| {
            elsewhere().filter_map(|s| board::load_estimate(f(s))).reduce(f64::max)
        };
        Estimate {
            ttfb_us: own.ttfb.get().or_else(|| borrowed(|s| &s.ttfb_us)),
            per_token_us: own.per_token.get().or_else(|| borrowed(|s| &s.per_token_us)),
            inflight: elsewhere().map(|s| s.inflight.load(Relaxed)).sum(),
            open: own.circuit.open_until(now_ms).is_some()
                || (own.circuit.state(now_ms) == State::Closed
                    && self.board.open_elsewhere(key, self.shard, now_ms).is_some()),
        }
    }

    /// Admits a call to `d` at `now`, or says how many whole seconds (at least 1) until
    /// it may be called: its circuit is open here, on another shard or another node.
    pub fn admit<'h>(&'h self, d: &Deployment, now: Instant, s: &HealthSettings) -> Result<Call<'h>, u64> {
        let Some(key) = self.key(d) else {
            return Ok(Call { health: self, key: usize::MAX, admission: Admission::Call, done: Cell::new(true) });
        };
        let now_ms = self.board.ms(now);
        let (admission, wait_ms) = {
            let mut cells = self.cells.borrow_mut();
            let Some(cell) = cells.get_mut(key) else { return Err(1) };
            let admission = cell.circuit.admit(now_ms, s);
            // A probe is this shard's to make; an ordinary call also honours the
            // circuits other shards and nodes have open.
            let wait_ms = match admission {
                Admission::Skip { wait_ms } => Some(wait_ms),
                Admission::Call => self.board.open_elsewhere(key, self.shard, now_ms).map(|u| u - now_ms),
                Admission::Probe => None,
            };
            if wait_ms.is_none() {
                cell.inflight = cell.inflight.saturating_add(1);
            }
            (admission, wait_ms)
        };
        self.publish(key, now_ms);
        if let Some(wait_ms) = wait_ms {
            return Err(wait_ms.div_ceil(1_000).max(1));
        }
        Ok(Call { health: self, key, admission, done: Cell::new(false) })
    }

    fn with<R>(&self, key: usize, f: impl FnOnce(&mut DeploymentHealth) -> R) -> Option<R> {
        let r = self.cells.borrow_mut().get_mut(key).map(f);
        self.publish(key, self.board.ms(Instant::now()));
        r
    }

    /// Copies `key`'s state into this shard's slot.
    fn publish(&self, key: usize, now_ms: u64) {
        let (Some(slot), Some(cell)) = (self.slot(key), self.cells.borrow().get(key).copied()) else { return };
        let state = match cell.circuit.state(now_ms) {
            State::Closed => board::CLOSED,
            State::Open { .. } => board::OPEN,
            State::HalfOpen { .. } => board::HALF_OPEN,
        };
        slot.open_until_ms.store(cell.circuit.open_until(now_ms).unwrap_or(0), Relaxed);
        slot.state.store(state, Relaxed);
        board::store_estimate(&slot.ttfb_us, cell.ttfb.get());
        board::store_estimate(&slot.per_token_us, cell.per_token.get());
        slot.inflight.store(cell.inflight, Relaxed);
    }

    fn transition(&self, key: usize, t: Option<Transition>) {
        let (Some(t), Some(slot)) = (t, self.slot(key)) else { return };
        let (model, provider) = self.board.names(key).unwrap_or(("?", "?"));
        match t {
            Transition::Opened { reason, open_ms } => {
                slot.reason.store(reason as u8, Relaxed);
                slot.opened_total.fetch_add(1, Relaxed);
                tracing::warn!(
                    shard = self.shard,
                    model,
                    provider,
                    reason = reason.as_str(),
                    open_ms,
                    "circuit opened"
                );
            }
            Transition::Closed => {
                slot.closed_total.fetch_add(1, Relaxed);
                tracing::info!(shard = self.shard, model, provider, "circuit closed");
            }
        }
    }
}

/// One admitted call: counted in flight until dropped. Say how it went with
/// [`Call::success`], [`Call::failure`] or [`Call::retry_after`]; dropped without a
/// word (the client left, our own pool was full) it frees its probe place, if any.
#[derive(Debug)]
pub struct Call<'h> {
    health: &'h ShardHealth,
    key: usize,
    admission: Admission,
    /// Whether the circuit heard the outcome.
    done: Cell<bool>,
}

impl Call<'_> {
    /// Whether this call is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.admission == Admission::Probe
    }

    /// The provider answered (the head, `elapsed` after the call started).
    pub fn success(&self, elapsed: Duration, s: &HealthSettings) {
        let now_ms = self.health.board.ms(Instant::now());
        let admission = self.admission;
        let t = self.health.with(self.key, |c| {
            c.ttfb.observe(elapsed.as_micros() as f64, now_ms, s.decay_ms);
            c.circuit.success(now_ms, admission, s)
        });
        self.done.set(true);
        self.health.transition(self.key, t.flatten());
    }

    /// The provider failed this call (a provider fault: see `AttemptOutcome::is_provider_fault`).
    pub fn failure(&self, s: &HealthSettings) {
        let now_ms = self.health.board.ms(Instant::now());
        let admission = self.admission;
        let t = self.health.with(self.key, |c| c.circuit.failure(now_ms, admission, s));
        self.done.set(true);
        self.health.transition(self.key, t.flatten());
    }

    /// The provider asked not to be called for `wait` (already clamped).
    pub fn retry_after(&self, wait: Duration) {
        let now_ms = self.health.board.ms(Instant::now());
        let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        let t = self.health.with(self.key, |c| c.circuit.retry_after(now_ms, wait_ms));
        self.health.transition(self.key, t.flatten());
    }

    /// A stream ended whole after `streamed` (first byte to end) with `tokens`
    /// completion tokens: one per-token sample.
    pub fn stream_done(&self, streamed: Duration, tokens: u64, s: &HealthSettings) {
        if tokens == 0 {
            return;
        }
        let now_ms = self.health.board.ms(Instant::now());
        let per_token_us = streamed.as_micros() as f64 / tokens as f64;
        self.health.with(self.key, |c| c.per_token.observe(per_token_us, now_ms, s.decay_ms));
    }
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        if self.key == usize::MAX {
            return;
        }
        let (admission, done) = (self.admission, self.done.get());
        self.health.with(self.key, |c| {
            c.inflight = c.inflight.saturating_sub(1);
            if !done {
                c.circuit.release(admission);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(model: usize, provider: usize) -> Deployment {
        Deployment { id: 0, model, provider, ..Default::default() }
    }

    fn board(shards: usize) -> Arc<HealthBoard> {
        Arc::new(HealthBoard::new(shards, vec!["m".into()], vec!["a".into(), "b".into()]))
    }

    #[test]
    fn in_flight_counts_until_the_call_drops_however_it_ends() {
        let b = board(2);
        let (h0, h1) = (ShardHealth::new(b.clone(), 0), ShardHealth::new(b.clone(), 1));
        let s = HealthSettings::default();
        let d = deployment(0, 1);
        let now = Instant::now();
        let calls: Vec<_> = (0..3).map(|_| h0.admit(&d, now, &s).unwrap()).collect();
        let other = h1.admit(&d, now, &s).unwrap();
        assert_eq!(h0.estimate(&d, now).inflight, 4, "in flight on every shard");
        calls[0].success(Duration::from_millis(5), &s);
        calls[1].failure(&s);
        drop(calls);
        drop(other);
        assert_eq!(h1.estimate(&d, now).inflight, 0);
        assert_eq!(h1.estimate(&d, now).ttfb_us, Some(5_000.0), "borrowed from the shard that called it");
    }

    #[test]
    fn a_circuit_open_on_one_shard_or_node_is_skipped_by_the_others() {
        let b = board(2);
        let (h0, h1) = (ShardHealth::new(b.clone(), 0), ShardHealth::new(b.clone(), 1));
        let s = HealthSettings { failures_max: 2, open_ms: 60_000, ..Default::default() };
        let d = deployment(0, 0);
        let now = Instant::now();
        for _ in 0..2 {
            h0.admit(&d, now, &s).unwrap().failure(&s);
        }
        assert_eq!(h0.admit(&d, now, &s).err(), Some(60));
        assert!(h1.estimate(&d, now).open);
        assert!(h1.admit(&d, now, &s).is_err(), "shard 1 honours shard 0's open circuit");
        assert!(h1.admit(&deployment(0, 1), now, &s).is_ok(), "other deployments are untouched");
        assert_eq!(b.open_circuits(b.ms(now)).len(), 1);
        assert_eq!(b.open_circuits(b.ms(now))[0].provider, "a");
        let key = b.key_of("m", "b").unwrap();
        b.set_remote(key, b.ms(now) + 1_500);
        assert_eq!(h1.admit(&deployment(0, 1), now, &s).err(), Some(2), "another node's report counts");
        assert!(h1.admit(&deployment(0, 1), now + Duration::from_secs(2), &s).is_ok(), "and expires by itself");
        let mut text = String::new();
        b.render_metrics(&mut text);
        assert!(text.contains("gatekeeper_circuit_state{model=\"m\",provider=\"a\"} 1"), "{text}");
        assert!(text.contains("gatekeeper_circuit_opened_total{model=\"m\",provider=\"a\"} 1"), "{text}");
        assert_eq!(b.degraded_reasons(now).len(), 2, "{:?}", b.degraded_reasons(now));
    }

    #[test]
    fn a_dropped_probe_frees_its_place() {
        let b = board(1);
        let h = ShardHealth::new(b, 0);
        let s = HealthSettings { failures_max: 1, open_ms: 1, half_open_probes: 1, ..Default::default() };
        let d = deployment(0, 0);
        let t0 = Instant::now();
        h.admit(&d, t0, &s).unwrap().failure(&s);
        let later = Instant::now() + Duration::from_millis(50);
        let probe = h.admit(&d, later, &s).unwrap();
        assert!(probe.is_probe());
        assert!(h.admit(&d, later, &s).is_err(), "one probe at a time");
        drop(probe);
        let probe = h.admit(&d, later, &s).unwrap();
        assert!(probe.is_probe());
        probe.success(Duration::from_millis(1), &s);
        drop(probe);
        assert!(!h.admit(&d, later, &s).unwrap().is_probe(), "closed");
    }
}
