//! Per-shard statistics: single-writer counters and gauges that any thread may read.
//!
//! Each shard owns one [`ShardStats`] in an array shared by all shards; the shard's
//! connection tasks reach their own entry through [`StatsRef`].

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use crate::driver::Driver;

/// A counter written by one shard only, read by any.
///
/// Single-writer lets an increment be a plain load and store, with no locked
/// instruction on the hot path.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one. Only the owning shard may call this.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`. Only the owning shard may call this.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }

    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value written by one shard only, read by any.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    /// Sets the value. Only the owning shard may call this.
    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// Raises the value to `v` if it is lower (a high-water mark). Only the owning shard
    /// may call this, which is what makes the read-compare-store safe.
    #[inline]
    pub fn raise(&self, v: u64) {
        if v > self.get() {
            self.set(v);
        }
    }

    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Connection-level statistics of one shard.
#[derive(Debug, Default)]
pub struct ShardStats {
    driver: AtomicU8,
    /// Client connections open now.
    pub connections_open: Gauge,
    /// Client connections accepted since start.
    pub connections_accepted_total: Counter,
    /// Connections refused because the shard was at `connections_per_shard_max`.
    pub connections_rejected_total: Counter,
    /// TLS handshakes that failed or timed out.
    pub tls_handshake_failures_total: Counter,
    /// Requests read and handed to the application.
    pub requests_total: Counter,
    /// Requests refused for breaking the protocol or a limit.
    pub protocol_errors_total: Counter,
    /// High-water mark of requests parsed and waiting behind the one being answered on
    /// one connection of this shard; never above `pipeline_depth_max`.
    pub pipeline_depth_peak: Gauge,
    /// Request body bytes the shard holds now: declared lengths of bodies being read,
    /// and bodies whose requests are being answered; never above `body_bytes_in_flight_max`.
    pub body_bytes_in_flight: Gauge,
    /// Connections closed because a write to the client made no progress for
    /// `write_timeout_ms`.
    pub write_timeouts_total: Counter,
    /// Connection tasks that panicked; each closed its own connection and the shard went on.
    pub panics_total: Counter,
}

impl ShardStats {
    /// The driver this shard runs, once it has started.
    pub fn driver(&self) -> Option<Driver> {
        match self.driver.load(Ordering::Relaxed) {
            1 => Some(Driver::Uring),
            2 => Some(Driver::Epoll),
            _ => None,
        }
    }

    pub(crate) fn set_driver(&self, d: Driver) {
        self.driver.store(if d == Driver::Uring { 1 } else { 2 }, Ordering::Relaxed);
    }
}

/// One shard's entry in the shared statistics array.
pub(crate) struct StatsRef {
    all: Arc<[ShardStats]>,
    index: usize,
}

impl StatsRef {
    /// The entry of shard `index`; `index` must be in bounds of `all`.
    pub(crate) fn new(all: Arc<[ShardStats]>, index: usize) -> StatsRef {
        assert!(index < all.len(), "shard index {index} out of {} stats entries", all.len());
        StatsRef { all, index }
    }
}

impl std::ops::Deref for StatsRef {
    type Target = ShardStats;
    fn deref(&self) -> &ShardStats {
        &self.all[self.index]
    }
}
