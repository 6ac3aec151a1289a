//! Peak-EWMA: a latency estimate that believes bad news at once and good news slowly.
//!
//! A sample worse than the estimate replaces it; a better one pulls it down with a
//! weight that grows with the time since the last sample (`1 - e^(-Δt/τ)`), so a
//! deployment that just had a slow answer is avoided until enough fast answers (or
//! enough quiet time) say otherwise. The same idea as Finagle's and linkerd's load
//! balancers.

/// One peak-EWMA estimate, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PeakEwma {
    /// The estimate, µs; meaningless while `samples == 0`.
    value_us: f64,
    /// Monotonic ms of the last sample.
    at_ms: u64,
    /// Samples seen (saturating): 0 means cold.
    samples: u32,
}

impl PeakEwma {
    /// Adds a sample of `sample_us` taken at `now_ms`, decaying with time constant
    /// `decay_ms` (at least 1).
    pub fn observe(&mut self, sample_us: f64, now_ms: u64, decay_ms: u64) {
        let sample_us = if sample_us.is_finite() { sample_us.max(0.0) } else { return };
        if self.samples == 0 || sample_us >= self.value_us {
            self.value_us = sample_us;
        } else {
            let elapsed = now_ms.saturating_sub(self.at_ms) as f64;
            let keep = (-elapsed / decay_ms.max(1) as f64).exp();
            // A burst of samples within the same millisecond still moves the estimate a
            // little: at least 1/32 of the way, or fast answers would never count.
            let keep = keep.min(31.0 / 32.0);
            self.value_us = self.value_us * keep + sample_us * (1.0 - keep);
        }
        self.at_ms = self.at_ms.max(now_ms);
        self.samples = self.samples.saturating_add(1);
    }

    /// The estimate, µs; `None` before the first sample.
    pub fn get(&self) -> Option<f64> {
        (self.samples > 0).then_some(self.value_us)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jumps_up_at_once_and_decays_toward_better_samples() {
        let mut e = PeakEwma::default();
        assert_eq!(e.get(), None, "cold");
        e.observe(20_000.0, 0, 1_000);
        assert_eq!(e.get(), Some(20_000.0));
        e.observe(200_000.0, 10, 1_000);
        assert_eq!(e.get(), Some(200_000.0), "a worse sample is believed at once");
        e.observe(20_000.0, 1_010, 1_000);
        let after_one_tau = e.get().unwrap();
        // e^-1 of the way back: 20k + 180k/e.
        assert!((after_one_tau - (20_000.0 + 180_000.0 / std::f64::consts::E)).abs() < 1.0, "{after_one_tau}");
        for i in 0..20 {
            e.observe(20_000.0, 1_010 + (i + 1) * 1_000, 1_000);
        }
        assert!((e.get().unwrap() - 20_000.0).abs() < 1.0, "converged to the better latency");
    }

    #[test]
    fn same_instant_samples_still_move_it_and_bad_input_is_ignored() {
        let mut e = PeakEwma::default();
        e.observe(100.0, 5, 10_000);
        e.observe(0.0, 5, 10_000);
        assert!(e.get().unwrap() < 100.0);
        let before = e.get();
        e.observe(f64::NAN, 6, 10_000);
        e.observe(f64::INFINITY, 6, 10_000);
        assert_eq!(e.get(), before);
        e.observe(1.0, 0, 0);
        assert!(e.get().unwrap() >= 0.0, "a clock going back or a zero decay never panics");
    }
}
