//! Medians and the ratio math of a comparison.
//!
//! Every ratio is taken within one round — a target's run against the baseline's run of
//! the same round, which ran moments before or after it — and the median over rounds is
//! reported with the smallest and largest round's value as its spread. Dividing the
//! medians of two targets instead would mix rounds and bring the drift back.

use serde::{Deserialize, Serialize};

/// A value over rounds: its median and range.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    /// Median over rounds (mean of the middle two for an even count).
    pub median: f64,
    /// Smallest round's value.
    pub min: f64,
    /// Largest round's value.
    pub max: f64,
    /// Rounds that contributed.
    pub n: usize,
}

/// Median, min and max of the finite values; `None` when there are none.
pub fn spread(values: &[f64]) -> Option<Spread> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
    Some(Spread { median, min: v[0], max: v[n - 1], n })
}

/// The median of the finite values.
pub fn median(values: &[f64]) -> Option<f64> {
    spread(values).map(|s| s.median)
}

/// `a / b`, or `None` when `b` is not a positive finite number (no baseline to divide by).
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    (b.is_finite() && b > 0.0 && a.is_finite()).then(|| a / b)
}

/// Per-round `f(target, baseline)` for every round both ran, in round order.
/// `target` and `base` are `(round, value)` pairs; rounds missing on either side are skipped.
pub fn paired(target: &[(usize, f64)], base: &[(usize, f64)], f: impl Fn(f64, f64) -> Option<f64>) -> Vec<f64> {
    let mut out: Vec<(usize, f64)> = target
        .iter()
        .filter_map(|&(round, t)| {
            let &(_, b) = base.iter().find(|(r, _)| *r == round)?;
            f(t, b).map(|v| (round, v))
        })
        .collect();
    out.sort_by_key(|(r, _)| *r);
    out.into_iter().map(|(_, v)| v).collect()
}

/// Per-round ratios target / baseline, summarized; `None` when no round pairs up.
pub fn paired_ratio(target: &[(usize, f64)], base: &[(usize, f64)]) -> Option<Spread> {
    spread(&paired(target, base, ratio))
}

/// Per-round differences target − baseline, summarized; `None` when no round pairs up.
pub fn paired_difference(target: &[(usize, f64)], base: &[(usize, f64)]) -> Option<Spread> {
    spread(&paired(target, base, |t, b| Some(t - b)))
}

/// `x` rounded to `digits` significant digits (`digits` ≥ 1); used to pick clean
/// open-loop rates such as 4,900 req/s from a measured 4,873.
pub fn round_significant(x: f64, digits: u32) -> f64 {
    if !x.is_finite() || x == 0.0 {
        return x;
    }
    let digits = digits.max(1) as i32;
    let magnitude = x.abs().log10().floor() as i32;
    let scale = 10f64.powi(digits - 1 - magnitude);
    (x * scale).round() / scale
}
