//! Arrival schedules: when request slot k is due, as an offset from the run's start.
//!
//! Slot times are computed from k directly (never by adding up sleeps), so rounding and
//! late wake-ups cannot accumulate into drift: a generator that falls behind sends the
//! overdue slots at once and is back on the same timeline.

use std::time::Duration;

use gatekeeper_units::duration::{self, Syntax, Unit};

/// Highest rate accepted, in requests per second.
pub const RATE_MAX: f64 = 10_000_000.0;
/// Most steps in `--rate-steps`.
pub const STEPS_MAX: usize = 1024;
/// Longest duration accepted anywhere (a week), so `Duration::from_secs_f64` never panics.
pub const DURATION_S_MAX: f64 = 7.0 * 86_400.0;

/// One constant-rate step of `--rate-steps`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Step {
    /// Requests per second during the step.
    pub rate: f64,
    /// How long the step lasts.
    pub duration: Duration,
}

/// An open-loop arrival schedule.
#[derive(Clone, Debug, PartialEq)]
pub enum Arrival {
    /// `--rate R`: slot k at k/R.
    Constant {
        /// Requests per second.
        rate: f64,
    },
    /// `--rate-steps`: constant rates one after another; ends after the last step.
    Steps {
        /// The steps, in order.
        steps: Vec<Step>,
    },
    /// `--ramp FROM:TO:DURATION`: the rate moves linearly from `from` to `to`; ends then.
    Ramp {
        /// Rate at the start, requests per second.
        from: f64,
        /// Rate at the end, requests per second.
        to: f64,
        /// Length of the ramp.
        duration: Duration,
    },
}

/// The durations `--duration`, `--timeout`, `--pace-window` and the schedules take.
const DURATION_SYNTAX: Syntax =
    Syntax { units: &[Unit::Micros, Unit::Millis, Unit::Secs, Unit::Mins, Unit::Hours], bare: Some(Unit::Secs) };

/// Parses `10s`, `500ms`, `2m`, `1h`, `250us` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = duration::parse(text, DURATION_SYNTAX).map_err(|e| format!("bad duration {text:?}: {e}"))?;
    if d.is_zero() || d.as_secs_f64() > DURATION_S_MAX {
        return Err(format!("duration {text:?} must be > 0 and at most a week"));
    }
    Ok(d)
}

fn parse_rate(text: &str, zero_ok: bool) -> Result<f64, String> {
    let r: f64 = text.trim().parse().map_err(|_| format!("bad rate {text:?}"))?;
    let low_ok = if zero_ok { r >= 0.0 } else { r > 0.0 };
    if !(low_ok && r <= RATE_MAX) {
        return Err(format!("rate {text:?} must be in (0, {RATE_MAX}]"));
    }
    Ok(r)
}

impl Arrival {
    /// Parses `--rate-steps "1000:10s,2000:10s"`.
    pub fn parse_steps(text: &str) -> Result<Arrival, String> {
        let mut steps = Vec::new();
        for part in text.split(',') {
            if steps.len() == STEPS_MAX {
                return Err(format!("at most {STEPS_MAX} steps"));
            }
            let (rate, dur) = part.split_once(':').ok_or_else(|| format!("step {part:?}: expected RATE:DURATION"))?;
            steps.push(Step { rate: parse_rate(rate, false)?, duration: parse_duration(dur)? });
        }
        Ok(Arrival::Steps { steps })
    }

    /// Parses `--ramp FROM:TO:DURATION` (FROM may be 0; not both 0).
    pub fn parse_ramp(text: &str) -> Result<Arrival, String> {
        let parts: Vec<&str> = text.splitn(3, ':').collect();
        let [from, to, dur] = parts[..] else {
            return Err(format!("ramp {text:?}: expected FROM:TO:DURATION"));
        };
        let (from, to) = (parse_rate(from, true)?, parse_rate(to, true)?);
        if from == 0.0 && to == 0.0 {
            return Err("ramp: FROM and TO cannot both be 0".to_string());
        }
        Ok(Arrival::Ramp { from, to, duration: parse_duration(dur)? })
    }

    /// Parses `--rate R`.
    pub fn parse_constant(text: &str) -> Result<Arrival, String> {
        Ok(Arrival::Constant { rate: parse_rate(text, false)? })
    }

    /// The schedule's own length, if it has one (steps and ramps end).
    pub fn length(&self) -> Option<Duration> {
        match self {
            Arrival::Constant { .. } => None,
            Arrival::Steps { steps } => Some(steps.iter().map(|s| s.duration).sum()),
            Arrival::Ramp { duration, .. } => Some(*duration),
        }
    }

    /// Offset from start at which slot `k` (0-based) is due; `None` once the schedule has
    /// ended. Offsets never decrease with k.
    pub fn slot(&self, k: u64) -> Option<Duration> {
        let kf = k as f64;
        let secs = match self {
            Arrival::Constant { rate } => kf / rate,
            Arrival::Steps { steps } => {
                // Walk the steps: each holds floor-free fractional slot counts so a step
                // boundary never loses or duplicates a slot. Bounded by STEPS_MAX.
                let mut t0 = 0.0;
                let mut n0 = 0.0;
                let mut found = None;
                for s in steps {
                    let d = s.duration.as_secs_f64();
                    let n = s.rate * d;
                    if kf < n0 + n {
                        found = Some(t0 + (kf - n0) / s.rate);
                        break;
                    }
                    t0 += d;
                    n0 += n;
                }
                found?
            }
            Arrival::Ramp { from, to, duration } => {
                // Rate r(t) = a + s·t, so slots due by t are N(t) = a·t + s·t²/2. Slot k is
                // due when N(t) = k: t = 2k / (a + sqrt(a² + 2·s·k)), the root form that
                // stays exact when s = 0 and never divides by zero when a = 0, k > 0.
                let d = duration.as_secs_f64();
                let s = (to - from) / d;
                let disc = from * from + 2.0 * s * kf;
                if disc < 0.0 {
                    return None; // Falling ramp that ends before slot k would be due.
                }
                let denom = from + disc.sqrt();
                let t = if k == 0 { 0.0 } else { 2.0 * kf / denom };
                if !(t.is_finite() && t < d) {
                    return None;
                }
                t
            }
        };
        if !(secs.is_finite() && secs <= DURATION_S_MAX) {
            return None;
        }
        Some(Duration::from_secs_f64(secs))
    }

    /// Mean rate over the schedule (requests per second), for the report.
    pub fn mean_rate(&self) -> f64 {
        match self {
            Arrival::Constant { rate } => *rate,
            Arrival::Steps { steps } => {
                let n: f64 = steps.iter().map(|s| s.rate * s.duration.as_secs_f64()).sum();
                n / self.length().map_or(1.0, |d| d.as_secs_f64())
            }
            Arrival::Ramp { from, to, .. } => (from + to) / 2.0,
        }
    }

    /// A short description for the report, e.g. `rate 1000/s` or `ramp 0->500/s over 10s`.
    pub fn describe(&self) -> String {
        match self {
            Arrival::Constant { rate } => format!("rate {rate}/s"),
            Arrival::Steps { steps } => {
                let parts: Vec<String> =
                    steps.iter().map(|s| format!("{}:{}s", s.rate, s.duration.as_secs_f64())).collect();
                format!("steps {}", parts.join(","))
            }
            Arrival::Ramp { from, to, duration } => {
                format!("ramp {from}->{to}/s over {}s", duration.as_secs_f64())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(a: &Arrival, k: u64) -> Option<f64> {
        a.slot(k).map(|d| d.as_secs_f64())
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }

    #[test]
    fn constant_slots_have_no_drift() {
        let a = Arrival::parse_constant("1000").expect("valid");
        assert!(close(secs(&a, 0), 0.0));
        assert!(close(secs(&a, 1), 0.001));
        // Slot ten million is exactly 10,000 s out: computed, not accumulated.
        assert!(close(secs(&a, 10_000_000), 10_000.0));
        let b = Arrival::parse_constant("3").expect("valid");
        assert!(close(secs(&b, 3), 1.0));
    }

    #[test]
    fn steps_switch_rate_at_boundaries_and_end() {
        let a = Arrival::parse_steps("10:1s,100:0.5s").expect("valid");
        assert!(close(secs(&a, 9), 0.9));
        assert!(close(secs(&a, 10), 1.0), "first slot of step 2 at its start");
        assert!(close(secs(&a, 11), 1.01));
        assert!(close(secs(&a, 59), 1.49));
        assert_eq!(a.slot(60), None, "10 + 50 slots in all");
        assert_eq!(a.length(), Some(Duration::from_millis(1500)));
        assert!((a.mean_rate() - 40.0).abs() < 1e-9);
        assert!(Arrival::parse_steps("10:1s,x:2s").is_err());
        assert!(Arrival::parse_steps("10").is_err());
        assert!(Arrival::parse_steps("0:1s").is_err());
    }

    #[test]
    fn ramp_slots_follow_the_integral() {
        // 0 -> 100/s over 10 s: N(t) = 5 t², so slot k at sqrt(k/5); 500 slots in all.
        let a = Arrival::parse_ramp("0:100:10s").expect("valid");
        assert!(close(secs(&a, 0), 0.0));
        assert!(close(secs(&a, 5), 1.0));
        assert!(close(secs(&a, 20), 2.0));
        assert!(close(secs(&a, 499), (499.0f64 / 5.0).sqrt()));
        assert_eq!(a.slot(500), None);
        // Flat ramp = constant.
        let f = Arrival::parse_ramp("50:50:2s").expect("valid");
        assert!(close(secs(&f, 10), 0.2));
        assert_eq!(f.slot(100), None);
        // Falling ramp 100 -> 0 over 2 s: N(t) = 100 t - 25 t²; slot 75 at t = 1.
        let d = Arrival::parse_ramp("100:0:2s").expect("valid");
        assert!(close(secs(&d, 75), 1.0));
        assert!(d.slot(101).is_none());
        assert!(Arrival::parse_ramp("0:0:1s").is_err());
        assert!(Arrival::parse_ramp("1:2").is_err());
    }

    #[test]
    fn slots_never_go_backwards() {
        for a in [
            Arrival::parse_ramp("1000:10:3s").expect("valid"),
            Arrival::parse_steps("7:1s,3:2s,1000:0.1s").expect("valid"),
        ] {
            let mut last = Duration::ZERO;
            let mut k = 0;
            while let Some(t) = a.slot(k) {
                assert!(t >= last, "{a:?} slot {k}");
                last = t;
                k += 1;
                assert!(k < 1_000_000);
            }
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("10x").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("").is_err());
    }
}
