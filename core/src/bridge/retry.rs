//! The one retry loop of the bridge: connecting to NATS, the `BH_CONFIG` watch,
//! reading where the previous chain stopped, and every store.
//!
//! A failed attempt is logged (the first, then every `log_every`-th, so an outage of
//! hours does not flood the log), waits a pause that doubles from `backoff_first` up
//! to `backoff_max`, and the loop ends at the shutdown deadline (a pause never runs
//! past it). While the gateway runs that deadline never passes: a store that is away
//! is retried until it is back, and what waits meanwhile is bounded elsewhere (the
//! WAL, by `audit.spool_bytes_max`).

use std::time::Duration;

use super::Shutdown;

/// How a retried operation backs off and logs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    /// Pause after the first failed attempt.
    pub backoff_first: Duration,
    /// Longest pause between attempts.
    pub backoff_max: Duration,
    /// Log every this many failed attempts (the first one always); at least 1.
    pub log_every: u64,
}

impl Policy {
    /// The pause after failed attempt `attempt` (0-based): `backoff_first × 2^attempt`,
    /// capped at `backoff_max`.
    pub(crate) fn backoff(&self, attempt: u64) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31) as u32).unwrap_or(u32::MAX);
        self.backoff_first.saturating_mul(factor).min(self.backoff_max)
    }

    fn logs(&self, attempt: u64) -> bool {
        attempt.is_multiple_of(self.log_every.max(1))
    }
}

/// Runs `op` (given the 0-based attempt number) until it succeeds, and returns its
/// value; `None` when an attempt failed after `deadline` passed (shutdown began and
/// its drain time is up). Always makes at least one attempt, so work finished at the
/// last moment is not thrown away. `what` names the operation in the log
/// (`"storing audit records"`).
pub(crate) async fn retry<T, E: std::fmt::Display>(
    what: &str,
    policy: &Policy,
    deadline: &Shutdown,
    mut op: impl AsyncFnMut(u64) -> Result<T, E>,
) -> Option<T> {
    let mut attempt = 0u64;
    // Bounded by the deadline, checked after every failed attempt.
    loop {
        match op(attempt).await {
            Ok(value) => return Some(value),
            Err(e) if policy.logs(attempt) => tracing::warn!(error = %e, attempt, "{what} failed; retrying"),
            Err(_) => {}
        }
        if deadline.past_deadline() {
            tracing::warn!(attempts = attempt.saturating_add(1), "{what}: giving up at the deadline");
            return None;
        }
        let pause = policy.backoff(attempt);
        tokio::time::sleep(deadline.time_left().map_or(pause, |left| pause.min(left))).await;
        attempt = attempt.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    const QUICK: Policy =
        Policy { backoff_first: Duration::from_millis(10), backoff_max: Duration::from_millis(40), log_every: 1 };

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(f)
    }

    #[test]
    fn returns_the_first_success() {
        let running = Shutdown::new();
        let mut calls = Vec::new();
        let got = block_on(retry("test", &QUICK, &running, async |a| {
            calls.push(a);
            if a < 2 {
                Err("not yet")
            } else {
                Ok(a * 10)
            }
        }));
        assert_eq!(got, Some(20));
        assert_eq!(calls, [0, 1, 2], "no attempt after the success");
    }

    #[test]
    fn backs_off_exponentially_up_to_the_cap() {
        let delays: Vec<u64> = (0..5).map(|a| QUICK.backoff(a).as_millis() as u64).collect();
        assert_eq!(delays, [10, 20, 40, 40, 40]);
        assert_eq!(QUICK.backoff(u64::MAX), QUICK.backoff_max, "no overflow on huge attempt counts");
        let running = Shutdown::new();
        let mut at = Vec::new();
        let got = block_on(retry("test", &QUICK, &running, async |a| {
            at.push(Instant::now());
            if a < 4 {
                Err("not yet")
            } else {
                Ok(())
            }
        }));
        assert_eq!(got, Some(()));
        assert_eq!(at.len(), 5);
        for (attempt, w) in at.windows(2).enumerate() {
            let gap = w[1] - w[0];
            assert!(gap >= QUICK.backoff(attempt as u64), "pause after attempt {attempt}: {gap:?}");
        }
    }

    #[test]
    fn gives_up_at_the_deadline() {
        let stopping = Shutdown::new();
        let start = Instant::now();
        stopping.begin(Duration::from_millis(120));
        let mut calls = 0u32;
        let got: Option<()> = block_on(retry("test", &QUICK, &stopping, async |_| {
            calls += 1;
            Err("never")
        }));
        let took = start.elapsed();
        assert_eq!(got, None);
        // The deadline is kept in whole ms: allow for the rounding.
        assert!(took >= Duration::from_millis(119), "gave up early: {took:?}");
        // The last pause is cut to the deadline; one more attempt follows it.
        assert!(took < Duration::from_millis(120) + Duration::from_secs(2), "gave up late: {took:?}");
        assert!((3..=12).contains(&calls), "{calls} attempts");
    }

    #[test]
    fn past_the_deadline_makes_one_last_attempt() {
        let stopped = Shutdown::new();
        stopped.begin(Duration::ZERO);
        let mut calls = 0u32;
        let got: Option<()> = block_on(retry("test", &QUICK, &stopped, async |_| {
            calls += 1;
            Err("away")
        }));
        assert_eq!((got, calls), (None, 1));
        let got = block_on(retry("test", &QUICK, &stopped, async |_| Ok::<_, &str>(7)));
        assert_eq!(got, Some(7), "work finished at the last moment is kept");
    }
}
