//! Provider and deployment health.
//!
//! Per deployment ([`ShardHealth`], one per shard): peak-EWMA time to first byte and
//! per-token time ([`estimator`]), calls in flight, and a circuit breaker
//! ([`circuit`]) that opens on consecutive provider faults, an error rate over a
//! window, or a provider's `Retry-After`, and skips the deployment in every mode and
//! in failover while open. Each shard publishes its state to the process-wide
//! [`HealthBoard`] (single-writer atomics, no lock); shards honour each other's open
//! circuits and the bridge's reports of other nodes' (`bridge/health.rs`, over
//! `BH_HEALTH`).
//!
//! Per provider: [`ProviderAlarm`] (the provider refusing the gateway's own settings,
//! for `/readyz`) and [`ProviderHealth`] (this shard's log throttle for it).

pub mod board;
pub mod circuit;
pub mod estimator;
pub mod shard;

pub use board::{HealthBoard, OpenCircuit};
pub use circuit::HealthSettings;
pub use shard::{Call, Estimate, ShardHealth};

use std::cell::Cell;
use std::time::{Duration, Instant};

/// Default longest `Retry-After` honoured (`providers[].retry_after_max_s`). A
/// provider's header is as hostile as a client's: a year-long (or overflowing) wait
/// must not take a provider out for good.
pub const RETRY_AFTER_MAX_DEFAULT: Duration = Duration::from_secs(300);

/// How long a provider's refusal of the gateway's own settings keeps it "degraded" on
/// `/readyz`, and the least time between two error logs about it (per shard).
pub const OPERATOR_ERROR_WINDOW: Duration = Duration::from_secs(60);

/// A provider's refusals of the gateway's own settings (401/403/404), shared by every
/// shard: the newest one's time and status, for `/readyz` and metrics.
#[derive(Debug, Default)]
pub struct ProviderAlarm {
    /// Unix ms of the newest refusal; 0: none.
    last_unix_ms: std::sync::atomic::AtomicU64,
    /// Its HTTP status.
    status: std::sync::atomic::AtomicU16,
    /// Refusals so far.
    pub total: std::sync::atomic::AtomicU64,
}

impl ProviderAlarm {
    /// Records a refusal with `status` at `now_unix_ms`.
    pub fn raise(&self, status: u16, now_unix_ms: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.status.store(status, Relaxed);
        self.last_unix_ms.store(now_unix_ms, Relaxed);
        self.total.fetch_add(1, Relaxed);
    }

    /// The newest refusal's status and age, when it is within [`OPERATOR_ERROR_WINDOW`].
    pub fn active(&self, now_unix_ms: u64) -> Option<(u16, Duration)> {
        use std::sync::atomic::Ordering::Relaxed;
        let at = self.last_unix_ms.load(Relaxed);
        let age = Duration::from_millis(now_unix_ms.saturating_sub(at));
        (at != 0 && age < OPERATOR_ERROR_WINDOW).then(|| (self.status.load(Relaxed), age))
    }
}

/// Per-shard state of one provider (its deployments' health is [`ShardHealth`]'s).
#[derive(Debug, Default)]
pub struct ProviderHealth {
    /// When this shard last logged the provider refusing the gateway's settings.
    logged_operator_error: Cell<Option<Instant>>,
}

impl ProviderHealth {
    /// Whether an operator error about this provider should be logged now (at most
    /// once per [`OPERATOR_ERROR_WINDOW`] per shard).
    pub fn should_log_operator_error(&self, now: Instant) -> bool {
        let due =
            self.logged_operator_error.get().is_none_or(|t| now.saturating_duration_since(t) >= OPERATOR_ERROR_WINDOW);
        if due {
            self.logged_operator_error.set(Some(now));
        }
        due
    }
}
