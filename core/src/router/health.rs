//! A shard's view of each provider's health. Today: the `Retry-After` a provider
//! sent, which keeps it out of every route until it passes. Owned by one shard
//! (`Cell`s, no locks); other shards keep their own.

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

/// Per-shard health of one provider.
#[derive(Debug, Default)]
pub struct ProviderHealth {
    /// The provider asked us (Retry-After) not to call before this instant.
    blocked_until: Cell<Option<Instant>>,
    /// When this shard last logged the provider refusing the gateway's settings.
    logged_operator_error: Cell<Option<Instant>>,
    /// Streams that stalled past `chunk_timeout_ms`, and when the last one did.
    stalls: Cell<(u64, Option<Instant>)>,
}

impl ProviderHealth {
    /// `Ok` when the provider may be called at `now`; otherwise the whole seconds
    /// left until it may (at least 1).
    pub fn admit(&self, now: Instant) -> Result<(), u64> {
        match self.blocked_until.get() {
            Some(until) if until > now => {
                let left = until.duration_since(now).as_secs_f64().ceil() as u64;
                Err(left.max(1))
            }
            Some(_) => {
                self.blocked_until.set(None);
                Ok(())
            }
            None => Ok(()),
        }
    }

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

    /// Records a relayed stream that stalled at `now` (the provider sent nothing for
    /// `chunk_timeout_ms` after the answer began). Counted against the provider; the
    /// routing decision reads it through [`ProviderHealth::stalls`].
    pub fn stalled(&self, now: Instant) {
        let (n, _) = self.stalls.get();
        self.stalls.set((n.saturating_add(1), Some(now)));
    }

    /// Streams stalled so far on this shard, and when the last one did.
    pub fn stalls(&self) -> (u64, Option<Instant>) {
        self.stalls.get()
    }

    /// Records a provider's `Retry-After`, clamped to `max`.
    pub fn retry_after(&self, now: Instant, wait: Duration, max: Duration) {
        let wait = wait.min(max);
        // Cannot overflow after the clamp on any real clock; checked all the same.
        if let Some(until) = now.checked_add(wait) {
            self.blocked_until.set(Some(until));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_for_the_wait_and_clears_after() {
        let h = ProviderHealth::default();
        let t0 = Instant::now();
        assert_eq!(h.admit(t0), Ok(()));
        h.retry_after(t0, Duration::from_secs(7), RETRY_AFTER_MAX_DEFAULT);
        assert_eq!(h.admit(t0), Err(7));
        assert_eq!(h.admit(t0 + Duration::from_millis(6_500)), Err(1));
        assert_eq!(h.admit(t0 + Duration::from_secs(7)), Ok(()));
        assert_eq!(h.admit(t0), Ok(()), "cleared once passed");
    }

    #[test]
    fn stalls_are_counted() {
        let h = ProviderHealth::default();
        let t0 = Instant::now();
        assert_eq!(h.stalls(), (0, None));
        h.stalled(t0);
        h.stalled(t0 + Duration::from_secs(1));
        assert_eq!(h.stalls(), (2, Some(t0 + Duration::from_secs(1))));
    }

    #[test]
    fn huge_waits_are_clamped() {
        let h = ProviderHealth::default();
        let t0 = Instant::now();
        h.retry_after(t0, Duration::from_secs(u64::MAX), RETRY_AFTER_MAX_DEFAULT);
        assert_eq!(h.admit(t0), Err(RETRY_AFTER_MAX_DEFAULT.as_secs()));
        h.retry_after(t0, Duration::MAX, Duration::MAX);
        assert!(h.admit(t0).is_err(), "an unclamped overflow is ignored, never a panic");
    }
}
