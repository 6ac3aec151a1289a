//! A deployment's circuit breaker: closed → open on consecutive provider faults or
//! an error rate over a window; open for a cool-down (doubling on each failed probe,
//! up to a bound) or the provider's clamped `Retry-After`; then half-open, letting a
//! bounded number of probes through; a probe's success closes it, a failure opens it
//! again. Pure state and time in monotonic milliseconds, so it is tested without a
//! clock.

/// Circuit and estimator settings (`routing.health`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HealthSettings {
    /// Consecutive provider faults that open the circuit.
    pub failures_max: u32,
    /// Error rate (0–1) over the window that opens the circuit.
    pub error_rate_max: f64,
    /// The error-rate window, ms.
    pub window_ms: u64,
    /// Fewest requests in the window before the error rate counts.
    pub requests_min: u32,
    /// First cool-down of an opened circuit, ms.
    pub open_ms: u64,
    /// Longest cool-down after repeated failed probes, ms.
    pub open_max_ms: u64,
    /// Probes let through at once while half-open.
    pub half_open_probes: u32,
    /// Time constant of the peak-EWMA latency estimates, ms.
    pub decay_ms: u64,
    /// Longest a circuit another node reported open is honoured here, ms.
    pub remote_open_max_ms: u64,
}

impl Default for HealthSettings {
    fn default() -> Self {
        HealthSettings {
            failures_max: 5,
            error_rate_max: 0.5,
            window_ms: 10_000,
            requests_min: 20,
            open_ms: 5_000,
            open_max_ms: 60_000,
            half_open_probes: 1,
            decay_ms: 10_000,
            remote_open_max_ms: 30_000,
        }
    }
}

/// Buckets of the error-rate window.
const BUCKETS: usize = 10;

/// Requests and faults over the last `window_ms`, in [`BUCKETS`] slices: O(1) per
/// outcome, bounded memory, and an old burst leaves the window slice by slice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ErrorWindow {
    /// `(requests, faults)` per slice.
    buckets: [(u32, u32); BUCKETS],
    /// Slice number (`now_ms / slice_ms`) of the newest slice written.
    newest: u64,
}

impl ErrorWindow {
    fn slice_ms(window_ms: u64) -> u64 {
        (window_ms / BUCKETS as u64).max(1)
    }

    /// Moves the window to `now_ms`, clearing slices that fell out of it.
    fn advance(&mut self, now_ms: u64, window_ms: u64) {
        let slice = now_ms / Self::slice_ms(window_ms);
        if slice <= self.newest {
            return;
        }
        let gone = slice.saturating_sub(self.newest).min(BUCKETS as u64);
        for k in 1..=gone {
            let i = (self.newest.wrapping_add(k) % BUCKETS as u64) as usize;
            if let Some(b) = self.buckets.get_mut(i) {
                *b = (0, 0);
            }
        }
        self.newest = slice;
    }

    /// Counts one outcome at `now_ms`.
    pub fn add(&mut self, now_ms: u64, fault: bool, window_ms: u64) {
        self.advance(now_ms, window_ms);
        let i = (self.newest % BUCKETS as u64) as usize;
        if let Some(b) = self.buckets.get_mut(i) {
            b.0 = b.0.saturating_add(1);
            b.1 = b.1.saturating_add(u32::from(fault));
        }
    }

    /// `(requests, faults)` within the window at `now_ms`.
    pub fn totals(&mut self, now_ms: u64, window_ms: u64) -> (u64, u64) {
        self.advance(now_ms, window_ms);
        self.buckets.iter().fold((0, 0), |(r, f), b| (r + u64::from(b.0), f + u64::from(b.1)))
    }

    fn clear(&mut self) {
        self.buckets = [(0, 0); BUCKETS];
    }
}

/// Where a circuit is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Calls go through.
    Closed,
    /// Calls are skipped until `until_ms`.
    Open {
        /// Monotonic ms the cool-down ends.
        until_ms: u64,
    },
    /// The cool-down ended: up to `half_open_probes` calls go through as probes.
    HalfOpen {
        /// Probes admitted and not finished.
        probes_out: u32,
    },
}

/// Why a circuit opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum OpenReason {
    /// `failures_max` consecutive provider faults.
    Consecutive = 1,
    /// The error rate over the window passed `error_rate_max`.
    ErrorRate = 2,
    /// The provider sent `Retry-After`.
    RetryAfter = 3,
    /// A half-open probe failed.
    ProbeFailed = 4,
}

impl OpenReason {
    /// Words for logs, events and `/readyz`.
    pub fn as_str(self) -> &'static str {
        match self {
            OpenReason::Consecutive => "consecutive failures",
            OpenReason::ErrorRate => "error rate over the window",
            OpenReason::RetryAfter => "Retry-After",
            OpenReason::ProbeFailed => "half-open probe failed",
        }
    }

    /// The reason stored as `code` (see the `repr`), if any.
    pub fn from_code(code: u8) -> Option<OpenReason> {
        [OpenReason::Consecutive, OpenReason::ErrorRate, OpenReason::RetryAfter, OpenReason::ProbeFailed]
            .into_iter()
            .find(|r| *r as u8 == code)
    }
}

/// A state change, for logs, metrics, events and the other shards and nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The circuit opened for `open_ms`.
    Opened {
        /// Why.
        reason: OpenReason,
        /// For how long, ms.
        open_ms: u64,
    },
    /// The circuit closed.
    Closed,
}

/// May a call go through now?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Yes, as an ordinary call.
    Call,
    /// Yes, as one of the half-open probes: its outcome decides the circuit.
    Probe,
    /// No: open (or every probe is out) for `wait_ms` more.
    Skip {
        /// Ms until the circuit may admit again (0: a probe is out; retry soon).
        wait_ms: u64,
    },
}

/// One deployment's circuit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Circuit {
    state: State,
    /// Provider faults in a row while closed.
    consecutive: u32,
    /// Opens since the circuit was last closed by a probe: the cool-down doubles with each.
    opens: u32,
    window: ErrorWindow,
}

impl Default for Circuit {
    fn default() -> Self {
        Circuit { state: State::Closed, consecutive: 0, opens: 0, window: ErrorWindow::default() }
    }
}

impl Circuit {
    /// Where the circuit is (an open circuit past its deadline reads as half-open).
    pub fn state(&self, now_ms: u64) -> State {
        match self.state {
            State::Open { until_ms } if now_ms >= until_ms => State::HalfOpen { probes_out: 0 },
            s => s,
        }
    }

    /// Admits or skips a call at `now_ms`.
    pub fn admit(&mut self, now_ms: u64, s: &HealthSettings) -> Admission {
        if let State::Open { until_ms } = self.state {
            if now_ms < until_ms {
                return Admission::Skip { wait_ms: until_ms - now_ms };
            }
            self.state = State::HalfOpen { probes_out: 0 };
        }
        match &mut self.state {
            State::Closed => Admission::Call,
            State::HalfOpen { probes_out } if *probes_out < s.half_open_probes.max(1) => {
                *probes_out += 1;
                Admission::Probe
            }
            State::HalfOpen { .. } | State::Open { .. } => Admission::Skip { wait_ms: 0 },
        }
    }

    /// A call admitted as `admission` succeeded.
    pub fn success(&mut self, now_ms: u64, admission: Admission, s: &HealthSettings) -> Option<Transition> {
        self.window.add(now_ms, false, s.window_ms);
        self.consecutive = 0;
        match (admission, self.state) {
            (Admission::Probe, State::HalfOpen { .. }) => {
                self.close();
                Some(Transition::Closed)
            }
            _ => None,
        }
    }

    /// A call admitted as `admission` failed by the provider's fault.
    pub fn failure(&mut self, now_ms: u64, admission: Admission, s: &HealthSettings) -> Option<Transition> {
        self.window.add(now_ms, true, s.window_ms);
        match (admission, self.state) {
            (Admission::Probe, State::HalfOpen { .. }) => Some(self.open(now_ms, OpenReason::ProbeFailed, s)),
            (_, State::Closed) => {
                self.consecutive = self.consecutive.saturating_add(1);
                if self.consecutive >= s.failures_max.max(1) {
                    return Some(self.open(now_ms, OpenReason::Consecutive, s));
                }
                let (requests, faults) = self.window.totals(now_ms, s.window_ms);
                if requests >= u64::from(s.requests_min) && faults as f64 > s.error_rate_max * requests as f64 {
                    return Some(self.open(now_ms, OpenReason::ErrorRate, s));
                }
                None
            }
            // A call admitted before the circuit opened, finishing late: already counted.
            _ => None,
        }
    }

    /// A probe ended with neither success nor a provider fault (the client left, our
    /// own pool was full): its place is free for another.
    pub fn release(&mut self, admission: Admission) {
        if let (Admission::Probe, State::HalfOpen { probes_out }) = (admission, &mut self.state) {
            *probes_out = probes_out.saturating_sub(1);
        }
    }

    /// The provider asked (`Retry-After`, already clamped) not to be called for `wait_ms`.
    pub fn retry_after(&mut self, now_ms: u64, wait_ms: u64) -> Option<Transition> {
        if wait_ms == 0 {
            return None;
        }
        let until_ms = now_ms.saturating_add(wait_ms);
        match self.state {
            // Never shortens a longer cool-down already running.
            State::Open { until_ms: cur } if cur >= until_ms => None,
            _ => {
                self.state = State::Open { until_ms };
                self.consecutive = 0;
                Some(Transition::Opened { reason: OpenReason::RetryAfter, open_ms: wait_ms })
            }
        }
    }

    /// Monotonic ms an open circuit admits again; `None` unless open now.
    pub fn open_until(&self, now_ms: u64) -> Option<u64> {
        match self.state {
            State::Open { until_ms } if until_ms > now_ms => Some(until_ms),
            _ => None,
        }
    }

    fn open(&mut self, now_ms: u64, reason: OpenReason, s: &HealthSettings) -> Transition {
        let doublings = self.opens.min(20);
        let open_ms = s.open_ms.saturating_mul(1u64 << doublings).min(s.open_max_ms.max(s.open_ms)).max(1);
        self.opens = self.opens.saturating_add(1);
        self.consecutive = 0;
        self.window.clear();
        self.state = State::Open { until_ms: now_ms.saturating_add(open_ms) };
        Transition::Opened { reason, open_ms }
    }

    fn close(&mut self) {
        self.state = State::Closed;
        self.consecutive = 0;
        self.opens = 0;
        self.window.clear();
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn settings() -> HealthSettings {
        HealthSettings { failures_max: 3, open_ms: 100, open_max_ms: 350, half_open_probes: 2, ..Default::default() }
    }

    #[test]
    fn opens_on_consecutive_failures_then_half_opens_and_closes_on_a_probe() {
        let s = settings();
        let mut c = Circuit::default();
        for t in 0..2 {
            assert_eq!(c.admit(t, &s), Admission::Call);
            assert_eq!(c.failure(t, Admission::Call, &s), None);
        }
        assert_eq!(c.success(2, Admission::Call, &s), None, "a success resets the count");
        for t in 3..5 {
            assert_eq!(c.failure(t, Admission::Call, &s), None);
        }
        let opened = c.failure(5, Admission::Call, &s);
        assert_eq!(opened, Some(Transition::Opened { reason: OpenReason::Consecutive, open_ms: 100 }));
        assert_eq!(c.admit(50, &s), Admission::Skip { wait_ms: 55 });
        assert_eq!(c.state(105), State::HalfOpen { probes_out: 0 });
        assert_eq!(c.admit(105, &s), Admission::Probe);
        assert_eq!(c.admit(105, &s), Admission::Probe);
        assert_eq!(c.admit(105, &s), Admission::Skip { wait_ms: 0 }, "probes are bounded");
        c.release(Admission::Probe);
        assert_eq!(c.admit(106, &s), Admission::Probe, "a released probe frees its place");
        assert_eq!(c.success(110, Admission::Call, &s), None, "only a probe decides");
        assert_eq!(c.success(110, Admission::Probe, &s), Some(Transition::Closed));
        assert_eq!(c.admit(111, &s), Admission::Call);
    }

    #[test]
    fn failed_probes_double_the_cool_down_up_to_the_bound() {
        let s = settings();
        let mut c = Circuit::default();
        let mut now = 0;
        for _ in 0..3 {
            c.failure(now, Admission::Call, &s);
        }
        let mut opened = vec![];
        for _ in 0..4 {
            now = c.open_until(now).unwrap();
            assert_eq!(c.admit(now, &s), Admission::Probe);
            match c.failure(now, Admission::Probe, &s) {
                Some(Transition::Opened { reason: OpenReason::ProbeFailed, open_ms }) => opened.push(open_ms),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(opened, vec![200, 350, 350, 350]);
        now = c.open_until(now).unwrap();
        assert_eq!(c.admit(now, &s), Admission::Probe);
        assert_eq!(c.success(now, Admission::Probe, &s), Some(Transition::Closed));
        for _ in 0..3 {
            c.failure(now, Admission::Call, &s);
        }
        assert_eq!(c.open_until(now), Some(now + 100), "a close resets the back-off");
    }

    #[test]
    fn error_rate_over_the_window_opens_with_enough_requests() {
        let s =
            HealthSettings { failures_max: 100, requests_min: 10, error_rate_max: 0.5, window_ms: 1_000, ..settings() };
        let mut c = Circuit::default();
        // Alternate, success first: at most 50 %, never "over 50 %".
        for t in 0..20 {
            let r = if t % 2 == 1 { c.failure(t, Admission::Call, &s) } else { c.success(t, Admission::Call, &s) };
            assert_eq!(r, None, "at {t}");
        }
        assert!(matches!(
            c.failure(20, Admission::Call, &s),
            Some(Transition::Opened { reason: OpenReason::ErrorRate, .. })
        ));
        // A burst long ago has left the window.
        let mut c = Circuit::default();
        for t in 0..9 {
            c.failure(t, Admission::Call, &s);
        }
        for t in 0..9 {
            c.success(5_000 + t, Admission::Call, &s);
        }
        assert_eq!(c.failure(5_010, Admission::Call, &s), None, "1 fault in 10 recent requests");
    }

    #[test]
    fn window_counts_and_forgets() {
        let mut w = ErrorWindow::default();
        w.add(0, true, 1_000);
        w.add(150, false, 1_000);
        assert_eq!(w.totals(900, 1_000), (2, 1));
        assert_eq!(w.totals(1_050, 1_000), (1, 0), "the first slice left the window");
        assert_eq!(w.totals(u64::MAX, 1_000), (0, 0));
        w.add(u64::MAX, true, 0);
        assert_eq!(w.totals(u64::MAX, 0), (1, 1), "a zero window is one 1 ms slice, never a division by 0");
    }

    #[test]
    fn retry_after_opens_for_the_wait_and_never_shortens() {
        let s = settings();
        let mut c = Circuit::default();
        assert_eq!(c.retry_after(0, 0), None, "Retry-After: 0 asks for nothing");
        assert_eq!(
            c.retry_after(0, 7_000),
            Some(Transition::Opened { reason: OpenReason::RetryAfter, open_ms: 7_000 })
        );
        assert_eq!(c.admit(6_999, &s), Admission::Skip { wait_ms: 1 });
        assert_eq!(c.retry_after(10, 1_000), None, "a shorter wait does not shorten it");
        assert_eq!(c.admit(7_000, &s), Admission::Probe);
        assert_eq!(
            c.retry_after(u64::MAX - 1, u64::MAX),
            Some(Transition::Opened { reason: OpenReason::RetryAfter, open_ms: u64::MAX })
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        Admit,
        Succeed(usize),
        Fail(usize),
        Release(usize),
        RetryAfter(u64),
        Wait(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => Just(Op::Admit),
            2 => (0usize..8).prop_map(Op::Succeed),
            3 => (0usize..8).prop_map(Op::Fail),
            1 => (0usize..8).prop_map(Op::Release),
            1 => (0u64..2_000).prop_map(Op::RetryAfter),
            2 => (0u64..500).prop_map(Op::Wait),
        ]
    }

    proptest! {
        /// Whatever happens, an open circuit admits again once its deadline passed,
        /// probes out never exceed the bound, and a deadline is never further than
        /// the longest cool-down or Retry-After asked for.
        #[test]
        fn never_stuck_open_and_probes_bounded(ops in proptest::collection::vec(op(), 1..200),
                                               probes in 1u32..4, failures_max in 1u32..6) {
            let s = HealthSettings { failures_max, half_open_probes: probes, open_ms: 50, open_max_ms: 400,
                                     requests_min: 5, window_ms: 1_000, ..Default::default() };
            let mut c = Circuit::default();
            let mut now = 0u64;
            let mut out: Vec<Admission> = Vec::new();
            for op in ops {
                match op {
                    Op::Admit => {
                        let a = c.admit(now, &s);
                        if let Admission::Skip { wait_ms } = a {
                            prop_assert!(wait_ms <= 2_000, "waits at most the longest ask");
                        } else {
                            out.push(a);
                        }
                    }
                    Op::Succeed(i) if i < out.len() => { let a = out.remove(i); c.success(now, a, &s); }
                    Op::Fail(i) if i < out.len() => { let a = out.remove(i); c.failure(now, a, &s); }
                    Op::Release(i) if i < out.len() => { let a = out.remove(i); c.release(a); }
                    Op::RetryAfter(ms) => { c.retry_after(now, ms); }
                    Op::Wait(ms) => now += ms,
                    _ => {}
                }
                if let State::HalfOpen { probes_out } = c.state(now) {
                    prop_assert!(probes_out <= probes);
                }
                if let Some(until) = c.open_until(now) {
                    prop_assert!(until - now <= 2_000);
                    let mut probe = c;
                    prop_assert_eq!(probe.admit(until, &s), Admission::Probe,
                        "an open circuit admits a probe at its deadline");
                }
            }
        }
    }
}
