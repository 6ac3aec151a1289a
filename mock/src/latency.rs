//! The latency model: fixed delays, a log-normal time-to-first-token, a token rate,
//! and periodic whole-server pauses.

use std::time::Duration;

use rand::Rng;

/// Longest single delay the mock will sleep, whatever flags or headers ask (1 hour).
pub const DELAY_MS_MAX: u64 = 3_600_000;

/// How long before the first token.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Ttft {
    /// Always this long.
    Fixed(Duration),
    /// `median * exp(sigma * Z)` with `Z ~ N(0, 1)`.
    LogNormal {
        /// Median in milliseconds.
        median_ms: f64,
        /// Standard deviation of the underlying normal.
        sigma: f64,
    },
}

impl Ttft {
    /// Parses `lognormal:MEDIAN_MS:SIGMA` (the `--ttft-dist` syntax).
    pub fn parse_dist(s: &str) -> Result<Ttft, String> {
        let mut parts = s.split(':');
        let (Some("lognormal"), Some(median), Some(sigma), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("expected lognormal:MEDIAN_MS:SIGMA, got {s:?}"));
        };
        let median_ms: f64 = median.parse().map_err(|_| format!("median {median:?} is not a number"))?;
        let sigma: f64 = sigma.parse().map_err(|_| format!("sigma {sigma:?} is not a number"))?;
        Ttft::lognormal(median_ms, sigma)
    }

    /// A log-normal time to first token: median within `[0, DELAY_MS_MAX]` ms and
    /// sigma within `[0, 5]`, so a draw stays finite.
    pub fn lognormal(median_ms: f64, sigma: f64) -> Result<Ttft, String> {
        if !(median_ms >= 0.0 && median_ms <= DELAY_MS_MAX as f64) {
            return Err(format!("median must be within [0, {DELAY_MS_MAX}] ms"));
        }
        if !(0.0..=5.0).contains(&sigma) {
            return Err("sigma must be within [0, 5]".to_string());
        }
        Ok(Ttft::LogNormal { median_ms, sigma })
    }

    /// Checks a value built from the public variants: a fixed delay at most
    /// `DELAY_MS_MAX`, a log-normal within the bounds of [`Ttft::lognormal`].
    pub(crate) fn check(&self) -> Result<(), String> {
        match *self {
            Ttft::Fixed(d) if d > Duration::from_millis(DELAY_MS_MAX) => Err(format!("at most {DELAY_MS_MAX}")),
            Ttft::Fixed(_) => Ok(()),
            Ttft::LogNormal { median_ms, sigma } => Ttft::lognormal(median_ms, sigma).map(drop),
        }
    }

    /// Draws one time-to-first-token.
    pub fn sample<R: Rng>(&self, rng: &mut R) -> Duration {
        match *self {
            Ttft::Fixed(d) => d,
            Ttft::LogNormal { median_ms, sigma } => {
                let ms = median_ms * (sigma * standard_normal(rng)).exp();
                clamp_ms(ms)
            }
        }
    }
}

/// A standard normal draw by Box–Muller, so we need no `rand_distr`.
pub fn standard_normal<R: Rng>(rng: &mut R) -> f64 {
    // gen::<f64>() is in [0, 1); 1 - u is in (0, 1] so ln never sees 0.
    let u1: f64 = 1.0 - rng.gen::<f64>();
    let u2: f64 = rng.gen::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Milliseconds (possibly fractional or absurd) to a sleep no longer than the cap.
pub fn clamp_ms(ms: f64) -> Duration {
    if ms.is_nan() || ms <= 0.0 {
        return Duration::ZERO;
    }
    Duration::from_secs_f64(ms.min(DELAY_MS_MAX as f64) / 1000.0)
}

/// Periodic pauses: the server answers nothing during `[k*every, k*every + pause)`,
/// for k >= 1, so the first pause begins `every` after start.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pauses {
    /// Period.
    pub every: Duration,
    /// Length of each pause; less than `every`.
    pub pause: Duration,
}

impl Pauses {
    /// How long a request arriving `elapsed` after start must be held.
    pub fn hold(&self, elapsed: Duration) -> Duration {
        if elapsed < self.every || self.every.is_zero() {
            return Duration::ZERO;
        }
        let every_ns = self.every.as_nanos();
        let phase_ns = elapsed.as_nanos() % every_ns;
        let phase = Duration::from_nanos(u64::try_from(phase_ns).unwrap_or(u64::MAX));
        self.pause.saturating_sub(phase)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn lognormal_median_is_about_right() {
        let t = Ttft::parse_dist("lognormal:100:0.5").expect("valid");
        let mut rng = StdRng::seed_from_u64(7);
        let mut v: Vec<Duration> = (0..2001).map(|_| t.sample(&mut rng)).collect();
        v.sort();
        let median_ms = v[1000].as_secs_f64() * 1000.0;
        assert!((85.0..115.0).contains(&median_ms), "median {median_ms}");
    }

    #[test]
    fn parse_dist_rejects_garbage() {
        for bad in ["", "lognormal", "lognormal:1", "normal:1:1", "lognormal:x:1", "lognormal:1:9", "lognormal:1:1:1"] {
            assert!(Ttft::parse_dist(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn check_bounds_both_variants() {
        assert!(Ttft::Fixed(Duration::from_millis(DELAY_MS_MAX)).check().is_ok());
        assert!(Ttft::Fixed(Duration::from_millis(DELAY_MS_MAX + 1)).check().is_err());
        assert!(Ttft::LogNormal { median_ms: 10.0, sigma: 0.5 }.check().is_ok());
        assert!(Ttft::LogNormal { median_ms: f64::NAN, sigma: 0.5 }.check().is_err());
        assert!(Ttft::LogNormal { median_ms: 10.0, sigma: 6.0 }.check().is_err());
    }

    #[test]
    fn normal_has_unit_variance() {
        let mut rng = StdRng::seed_from_u64(1);
        let n = 20_000;
        let xs: Vec<f64> = (0..n).map(|_| standard_normal(&mut rng)).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.05 && (var - 1.0).abs() < 0.05, "{mean} {var}");
    }

    #[test]
    fn pauses_hold_inside_window_only() {
        let p = Pauses { every: Duration::from_secs(10), pause: Duration::from_secs(1) };
        assert_eq!(p.hold(Duration::from_millis(500)), Duration::ZERO);
        assert_eq!(p.hold(Duration::from_millis(10_250)), Duration::from_millis(750));
        assert_eq!(p.hold(Duration::from_millis(11_000)), Duration::ZERO);
        assert_eq!(p.hold(Duration::from_millis(20_900)), Duration::from_millis(100));
    }

    #[test]
    fn clamp_handles_nonsense() {
        assert_eq!(clamp_ms(f64::NAN), Duration::ZERO);
        assert_eq!(clamp_ms(-1.0), Duration::ZERO);
        assert_eq!(clamp_ms(f64::INFINITY), Duration::from_millis(DELAY_MS_MAX));
    }
}
