//! The process-wide health board: what every shard and the bridge read about every
//! deployment, without a lock.
//!
//! Each shard is the single writer of its own row of [`Slot`]s (its circuits, latency
//! estimates and calls in flight, published after every change); the bridge is the
//! single writer of the [`RemoteSlot`]s (circuits other nodes reported open). Readers
//! load atomics: a shard deciding a route reads every shard's slot for its
//! candidates, the bridge's health feed scans them to publish changes, `/metrics`
//! and `/readyz` render them.
//!
//! Slots are keyed by (model name, provider name) — `model * providers + provider`
//! — not by deployment id: both name lists are fixed for the process's life (they
//! label metrics; a reload cannot change them), so health carries across reloads,
//! and nodes with different tables still name the same deployment alike.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::time::Instant;

use super::circuit::OpenReason;

/// A slot's circuit state codes.
pub(super) const CLOSED: u8 = 0;
pub(super) const OPEN: u8 = 1;
pub(super) const HALF_OPEN: u8 = 2;

/// "No estimate yet" in a latency slot.
const NO_ESTIMATE: u64 = u64::MAX;

/// One shard's published view of one deployment. Written only by that shard.
#[derive(Debug)]
pub struct Slot {
    /// [`CLOSED`], [`OPEN`] or [`HALF_OPEN`].
    pub(super) state: AtomicU8,
    /// Why it last opened ([`OpenReason`] code; 0: never).
    pub(super) reason: AtomicU8,
    /// Board ms the open circuit admits again (0: not open).
    pub(super) open_until_ms: AtomicU64,
    /// Peak-EWMA time to first byte, µs, as `f64` bits ([`NO_ESTIMATE`]: cold).
    pub(super) ttfb_us: AtomicU64,
    /// Peak-EWMA time per completion token, µs, as `f64` bits.
    pub(super) per_token_us: AtomicU64,
    /// Calls in flight.
    pub(super) inflight: AtomicU64,
    /// Times the circuit opened.
    pub(super) opened_total: AtomicU64,
    /// Times it closed.
    pub(super) closed_total: AtomicU64,
}

impl Default for Slot {
    fn default() -> Self {
        Slot {
            state: AtomicU8::new(CLOSED),
            reason: AtomicU8::new(0),
            open_until_ms: AtomicU64::new(0),
            ttfb_us: AtomicU64::new(NO_ESTIMATE),
            per_token_us: AtomicU64::new(NO_ESTIMATE),
            inflight: AtomicU64::new(0),
            opened_total: AtomicU64::new(0),
            closed_total: AtomicU64::new(0),
        }
    }
}

impl Slot {
    /// Whether this shard's circuit is closed (not open, not probing).
    pub fn is_closed(&self) -> bool {
        self.state.load(Relaxed) == CLOSED
    }
}

pub(super) fn store_estimate(cell: &AtomicU64, value: Option<f64>) {
    cell.store(value.map_or(NO_ESTIMATE, f64::to_bits), Relaxed);
}

pub(super) fn load_estimate(cell: &AtomicU64) -> Option<f64> {
    let bits = cell.load(Relaxed);
    (bits != NO_ESTIMATE).then(|| f64::from_bits(bits))
}

/// A circuit another node reported open. Written only by the bridge.
#[derive(Debug, Default)]
pub struct RemoteSlot {
    /// Board ms the report expires (0: none).
    pub(super) open_until_ms: AtomicU64,
}

/// Every deployment's health, per shard and from other nodes.
#[derive(Debug)]
pub struct HealthBoard {
    epoch: Instant,
    models: Vec<String>,
    providers: Vec<String>,
    /// `shards × keys`, row by row.
    slots: Box<[Slot]>,
    remote: Box<[RemoteSlot]>,
    shards: usize,
}

/// A circuit open somewhere in this process, for `/readyz` and the health feed.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenCircuit {
    /// Model name.
    pub model: String,
    /// Provider name.
    pub provider: String,
    /// Ms until it admits again (the latest of the shards that have it open).
    pub left_ms: u64,
    /// Why it opened.
    pub reason: &'static str,
}

impl HealthBoard {
    /// A board for `shards` shards over these (process-lifetime) name lists.
    pub fn new(shards: usize, models: Vec<String>, providers: Vec<String>) -> HealthBoard {
        let keys = models.len().saturating_mul(providers.len());
        HealthBoard {
            epoch: Instant::now(),
            slots: (0..shards.saturating_mul(keys)).map(|_| Slot::default()).collect(),
            remote: (0..keys).map(|_| RemoteSlot::default()).collect(),
            models,
            providers,
            shards,
        }
    }

    /// Board time of `t`: ms since the board was made (monotonic).
    pub fn ms(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// Keys (model × provider pairs).
    pub fn keys(&self) -> usize {
        self.remote.len()
    }

    /// The key of a deployment of model `model` on provider `provider`.
    pub fn key(&self, model: usize, provider: usize) -> Option<usize> {
        (model < self.models.len() && provider < self.providers.len()).then(|| model * self.providers.len() + provider)
    }

    /// The key of a (model name, provider name) pair, as other nodes name it.
    pub fn key_of(&self, model: &str, provider: &str) -> Option<usize> {
        let m = self.models.iter().position(|n| n == model)?;
        let p = self.providers.iter().position(|n| n == provider)?;
        self.key(m, p)
    }

    /// The names of `key`.
    pub fn names(&self, key: usize) -> Option<(&str, &str)> {
        let n = self.providers.len();
        let (m, p) = (key.checked_div(n)?, key.checked_rem(n)?);
        Some((self.models.get(m)?.as_str(), self.providers.get(p)?.as_str()))
    }

    /// Shard `shard`'s slot of `key`.
    pub fn slot(&self, shard: usize, key: usize) -> Option<&Slot> {
        if shard >= self.shards {
            return None;
        }
        self.slots.get(shard.checked_mul(self.keys())?.checked_add(key)?)
    }

    /// Every shard's slot of `key`.
    pub fn slots_of(&self, key: usize) -> impl Iterator<Item = &Slot> + '_ {
        (0..self.shards).filter_map(move |s| self.slot(s, key))
    }

    /// The latest board ms any shard other than `except` has `key` open until, if
    /// later than `now_ms`; with the other nodes' reports.
    pub fn open_elsewhere(&self, key: usize, except: usize, now_ms: u64) -> Option<u64> {
        let shards = (0..self.shards).filter(|s| *s != except).filter_map(|s| self.slot(s, key));
        let local = shards.map(|s| s.open_until_ms.load(Relaxed)).max().unwrap_or(0);
        let remote = self.remote.get(key).map_or(0, |r| r.open_until_ms.load(Relaxed));
        let until = local.max(remote);
        (until > now_ms).then_some(until)
    }

    /// The latest board ms any shard of this process has `key` open until (later than `now_ms`).
    pub fn open_here(&self, key: usize, now_ms: u64) -> Option<(u64, u8)> {
        self.slots_of(key)
            .map(|s| (s.open_until_ms.load(Relaxed), s.reason.load(Relaxed)))
            .filter(|(until, _)| *until > now_ms)
            .max_by_key(|(until, _)| *until)
    }

    /// Another node reported `key` open until board ms `until_ms` (0: closed there).
    /// Called only by the bridge.
    pub fn set_remote(&self, key: usize, until_ms: u64) {
        if let Some(r) = self.remote.get(key) {
            r.open_until_ms.store(until_ms, Relaxed);
        }
    }

    /// Board ms another node's report for `key` holds until, if later than `now_ms`.
    pub fn remote_open(&self, key: usize, now_ms: u64) -> Option<u64> {
        let until = self.remote.get(key)?.open_until_ms.load(Relaxed);
        (until > now_ms).then_some(until)
    }

    /// Circuits open on some shard of this process now.
    pub fn open_circuits(&self, now_ms: u64) -> Vec<OpenCircuit> {
        (0..self.keys())
            .filter_map(|key| {
                let (until, reason) = self.open_here(key, now_ms)?;
                let (model, provider) = self.names(key)?;
                let reason = OpenReason::from_code(reason).map_or("open", OpenReason::as_str);
                Some(OpenCircuit { model: model.into(), provider: provider.into(), left_ms: until - now_ms, reason })
            })
            .collect()
    }

    /// `/readyz` reasons: each open circuit, here or reported by another node.
    pub fn degraded_reasons(&self, now: Instant) -> Vec<String> {
        let now_ms = self.ms(now);
        let mut out: Vec<String> = self
            .open_circuits(now_ms)
            .into_iter()
            .map(|c| format!("{} on {}: circuit open ({}), {} ms left", c.model, c.provider, c.reason, c.left_ms))
            .collect();
        for key in 0..self.keys() {
            if let (Some(until), Some((model, provider))) = (self.remote_open(key, now_ms), self.names(key)) {
                out.push(format!("{model} on {provider}: circuit open on another node, {} ms left", until - now_ms));
            }
        }
        out
    }

    /// The Prometheus lines: circuit state per deployment (0 closed, 1 open, 2
    /// half-open; the worst shard's), transitions, and the latency estimates.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let mut lines = |name: &str, kind: &str, help: &str, value: &dyn Fn(usize) -> Option<String>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for key in 0..self.keys() {
                let (Some((m, p)), Some(v)) = (self.names(key), value(key)) else { continue };
                let _ = writeln!(out, "{name}{{model=\"{}\",provider=\"{}\"}} {v}", escape(m), escape(p));
            }
        };
        lines(
            "gatekeeper_circuit_state",
            "gauge",
            "Circuit per deployment: 0 closed, 1 open, 2 half-open (the worst shard's).",
            &|key| {
                let worst = self.slots_of(key).map(|s| s.state.load(Relaxed)).fold(CLOSED, |w, s| match (w, s) {
                    (OPEN, _) | (_, OPEN) => OPEN,
                    (HALF_OPEN, _) | (_, HALF_OPEN) => HALF_OPEN,
                    _ => CLOSED,
                });
                Some(worst.to_string())
            },
        );
        lines("gatekeeper_circuit_opened_total", "counter", "Circuit openings per deployment.", &|key| {
            Some(self.slots_of(key).map(|s| s.opened_total.load(Relaxed)).sum::<u64>().to_string())
        });
        lines("gatekeeper_circuit_closed_total", "counter", "Circuit closings per deployment.", &|key| {
            Some(self.slots_of(key).map(|s| s.closed_total.load(Relaxed)).sum::<u64>().to_string())
        });
        lines(
            "gatekeeper_deployment_ttfb_estimate_us",
            "gauge",
            "Peak-EWMA time to first byte per deployment (the slowest shard's estimate).",
            &|key| {
                let worst = self
                    .slots_of(key)
                    .filter_map(|s| load_estimate(&s.ttfb_us))
                    .fold(None, |w: Option<f64>, v| Some(w.map_or(v, |w| w.max(v))));
                worst.map(|v| format!("{v:.0}"))
            },
        );
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
