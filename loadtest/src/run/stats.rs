//! What one shard of workers records: latency histograms (µs, 3 significant digits),
//! status counts and error classes. Workers record into their shard; the reporter drains
//! shards once per interval into the run totals and the interval log.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest value a histogram tracks: one hour in µs. Larger values are clamped to it.
pub const HISTOGRAM_US_MAX: u64 = 3_600_000_000;
/// Significant digits kept by every histogram.
pub const SIGFIG: u8 = 3;

/// Why a request failed without a usable HTTP answer, or with an error status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// The TCP connection could not be opened.
    Connect,
    /// No complete answer within `--timeout`.
    Timeout,
    /// The connection was reset or closed mid-answer.
    Reset,
    /// The answer was not valid HTTP/1.1.
    Protocol,
    /// A 4xx status.
    Http4xx,
    /// A 5xx status.
    Http5xx,
}

/// Counts per error class, as written to the report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorCounts {
    /// Connection refused or failed.
    pub connect: u64,
    /// No complete answer within `--timeout`.
    pub timeout: u64,
    /// Reset or closed mid-answer.
    pub reset: u64,
    /// Invalid HTTP.
    pub protocol: u64,
    /// 4xx answers.
    pub http_4xx: u64,
    /// 5xx answers.
    pub http_5xx: u64,
}

impl ErrorCounts {
    /// Adds one error of `class`.
    pub fn add(&mut self, class: ErrorClass) {
        let slot = match class {
            ErrorClass::Connect => &mut self.connect,
            ErrorClass::Timeout => &mut self.timeout,
            ErrorClass::Reset => &mut self.reset,
            ErrorClass::Protocol => &mut self.protocol,
            ErrorClass::Http4xx => &mut self.http_4xx,
            ErrorClass::Http5xx => &mut self.http_5xx,
        };
        *slot += 1;
    }

    /// All errors together.
    pub fn total(&self) -> u64 {
        self.connect + self.timeout + self.reset + self.protocol + self.http_4xx + self.http_5xx
    }

    fn merge(&mut self, o: &ErrorCounts) {
        self.connect += o.connect;
        self.timeout += o.timeout;
        self.reset += o.reset;
        self.protocol += o.protocol;
        self.http_4xx += o.http_4xx;
        self.http_5xx += o.http_5xx;
    }
}

/// A new histogram with the run's range and precision.
pub fn histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts, so this cannot fail.
    Histogram::new_with_bounds(1, HISTOGRAM_US_MAX, SIGFIG).expect("valid histogram bounds")
}

/// One finished request, as a worker reports it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Outcome {
    /// Intended send time to end of answer (or failure), µs.
    pub latency_us: u64,
    /// Intended send time to the first body byte of a stream, µs.
    pub ttfb_us: Option<u64>,
    /// Largest gap between body reads of a stream, µs.
    pub gap_max_us: Option<u64>,
    /// How late the request went out against its slot, µs (open loop).
    pub lag_us: u64,
    /// Status code, 0 when there was no answer.
    pub status: u16,
    /// Bytes written and read.
    pub bytes_out: u64,
    /// Bytes read.
    pub bytes_in: u64,
}

/// Histograms and counters of a shard, an interval, or the whole run.
#[derive(Clone, Debug)]
pub struct Recorder {
    /// Latency from intended send time, µs.
    pub latency: Histogram<u64>,
    /// The same, of 2xx answers only: what admitted requests saw when the target sheds
    /// the rest with fast errors (which would pull `latency` down).
    pub latency_ok: Histogram<u64>,
    /// Time to first body byte of streams, µs.
    pub ttfb: Histogram<u64>,
    /// Largest inter-read gap per stream, µs.
    pub gap: Histogram<u64>,
    /// Send lag behind the schedule, µs.
    pub lag: Histogram<u64>,
    /// Count per status code (0 = no answer).
    pub statuses: BTreeMap<u16, u64>,
    /// Errors by class.
    pub errors: ErrorCounts,
    /// Bytes written.
    pub bytes_out: u64,
    /// Bytes read.
    pub bytes_in: u64,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            latency: histogram(),
            latency_ok: histogram(),
            ttfb: histogram(),
            gap: histogram(),
            lag: histogram(),
            statuses: BTreeMap::new(),
            errors: ErrorCounts::default(),
            bytes_out: 0,
            bytes_in: 0,
        }
    }
}

impl Recorder {
    /// Records one finished request; `error` is its class if it failed.
    pub fn record(&mut self, o: &Outcome, error: Option<ErrorClass>) {
        // saturating_record clamps values beyond the range instead of failing.
        self.latency.saturating_record(o.latency_us.max(1));
        if (200..300).contains(&o.status) {
            self.latency_ok.saturating_record(o.latency_us.max(1));
        }
        self.lag.saturating_record(o.lag_us.max(1));
        if let Some(t) = o.ttfb_us {
            self.ttfb.saturating_record(t.max(1));
        }
        if let Some(g) = o.gap_max_us {
            self.gap.saturating_record(g.max(1));
        }
        // A BTreeMap keyed by status holds a handful of entries; insertion is rare.
        *self.statuses.entry(o.status).or_insert(0) += 1;
        if let Some(c) = error {
            self.errors.add(c);
        }
        self.bytes_out += o.bytes_out;
        self.bytes_in += o.bytes_in;
    }

    /// Number of requests recorded.
    pub fn count(&self) -> u64 {
        self.latency.len()
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Recorder) {
        // Same bounds on both sides, so add cannot fail.
        let _ = self.latency.add(&other.latency);
        let _ = self.latency_ok.add(&other.latency_ok);
        let _ = self.ttfb.add(&other.ttfb);
        let _ = self.gap.add(&other.gap);
        let _ = self.lag.add(&other.lag);
        for (s, n) in &other.statuses {
            *self.statuses.entry(*s).or_insert(0) += n;
        }
        self.errors.merge(&other.errors);
        self.bytes_out += other.bytes_out;
        self.bytes_in += other.bytes_in;
    }

    /// Empties the recorder, keeping its allocations.
    pub fn reset(&mut self) {
        self.latency.reset();
        self.latency_ok.reset();
        self.ttfb.reset();
        self.gap.reset();
        self.lag.reset();
        self.statuses.clear();
        self.errors = ErrorCounts::default();
        self.bytes_out = 0;
        self.bytes_in = 0;
    }
}

/// Percentiles reported in the spectrum: coarse below the median, then finer towards the
/// tail (each decade of 1 - p gets the same resolution, matching the log-scale plot).
pub fn spectrum_percentiles() -> Vec<f64> {
    let mut ps: Vec<f64> = vec![0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 55.0, 60.0, 65.0, 70.0, 75.0, 80.0, 85.0];
    // Decades: 90..99 by 1, 99..99.9 by 0.1, ... down to 99.999..99.9999 by 0.0001.
    for decade in 1..=5 {
        let scale = 10f64.powi(decade);
        for i in 0..9 {
            let p = 100.0 - 10.0 / 10f64.powi(decade - 1) + f64::from(i) * 10.0 / scale;
            ps.push(round_p(p));
        }
    }
    ps.push(99.9999);
    ps.push(100.0);
    ps
}

fn round_p(p: f64) -> f64 {
    (p * 1e6).round() / 1e6
}

/// One point of the spectrum.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Percentile, 0..=100.
    pub p: f64,
    /// Value at that percentile, µs.
    pub us: u64,
}

/// Summary of one histogram, as written to the report (`Default`: nothing recorded).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Distribution {
    /// Values recorded.
    pub count: u64,
    /// Smallest value, µs.
    pub min_us: u64,
    /// Mean, µs.
    pub mean_us: f64,
    /// Standard deviation, µs.
    pub stdev_us: f64,
    /// Largest value, µs.
    pub max_us: u64,
    /// Value at each of [`spectrum_percentiles`], µs.
    pub percentiles: Vec<Point>,
}

impl Distribution {
    /// Summarizes a histogram.
    pub fn of(h: &Histogram<u64>) -> Distribution {
        let empty = h.is_empty();
        Distribution {
            count: h.len(),
            min_us: if empty { 0 } else { h.min() },
            mean_us: if empty { 0.0 } else { h.mean() },
            stdev_us: if empty { 0.0 } else { h.stdev() },
            max_us: if empty { 0 } else { h.max() },
            percentiles: spectrum_percentiles()
                .into_iter()
                .map(|p| Point { p, us: if empty { 0 } else { h.value_at_percentile(p) } })
                .collect(),
        }
    }

    /// The value at percentile `p` if the spectrum holds it.
    pub fn at(&self, p: f64) -> Option<u64> {
        self.percentiles.iter().find(|x| (x.p - p).abs() < 1e-9).map(|x| x.us)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spectrum_is_increasing_and_fine_in_the_tail() {
        let ps = spectrum_percentiles();
        assert!(ps.windows(2).all(|w| w[0] < w[1]), "{ps:?}");
        for want in [50.0, 90.0, 99.0, 99.9, 99.99, 99.999, 99.95, 99.5, 100.0] {
            assert!(ps.iter().any(|p| (p - want).abs() < 1e-9), "{want} missing");
        }
        assert_eq!(ps[0], 0.0);
    }

    #[test]
    fn spectrum_values_of_a_uniform_histogram() {
        // 1..=100_000 µs once each: percentile p sits at about p * 1000 µs, within the
        // histogram's 3-digit precision (0.1%).
        let mut h = histogram();
        for v in 1..=100_000u64 {
            h.record(v).expect("in range");
        }
        let d = Distribution::of(&h);
        assert_eq!(d.count, 100_000);
        for (p, want) in [(50.0, 50_000.0), (90.0, 90_000.0), (99.0, 99_000.0), (99.9, 99_900.0)] {
            let got = d.at(p).expect("in spectrum") as f64;
            assert!((got - want).abs() / want < 0.002, "p{p}: {got}");
        }
        assert_eq!(d.at(100.0), Some(h.max()));
        assert!((d.mean_us - 50_000.5).abs() < 50.0);
        let e = Distribution::of(&histogram());
        assert_eq!((e.count, e.max_us, e.at(99.0)), (0, 0, Some(0)));
    }

    #[test]
    fn recorder_counts_and_merges() {
        let mut a = Recorder::default();
        let o = Outcome { latency_us: 100, status: 200, ..Outcome::default() };
        a.record(&o, None);
        a.record(&Outcome { status: 503, ..o }, Some(ErrorClass::Http5xx));
        let mut b = Recorder::default();
        b.record(&Outcome { status: 0, ..o }, Some(ErrorClass::Timeout));
        b.merge(&a);
        assert_eq!(b.count(), 3);
        assert_eq!(b.errors.total(), 2);
        assert_eq!(b.statuses[&200], 1);
        assert_eq!(b.latency_ok.len(), 1, "2xx only");
        b.reset();
        assert_eq!(b.count(), 0);
    }
}
