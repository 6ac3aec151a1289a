//! The fitted model: log-odds z = bias + Σ weightᵢ · (xᵢ − meanᵢ) / scaleᵢ of a logistic
//! regression on the expected accuracy gain of the strong model, reported as the share
//! of the labelled prompts with lower log-odds (a percentile).
//!
//! The percentile keeps the fit's ranking (all that APGR measures) and spreads the score
//! over 0–1: a router that sends requests above complexity `t` to the strong model sends
//! about `1 − t` of traffic like the labelled prompts there. The raw probability would
//! sit in a narrow band around the data's mean gain.

use super::features::Features;
use super::weights::{BIAS, LOGIT_PERCENTILES, WEIGHTS};

/// The model's log-odds for `features`.
pub fn logit(features: &Features) -> f32 {
    let mut z = BIAS;
    let log_options = f64::from(features.0[1]);
    for (i, (x, [mean, scale, weight])) in features.0.iter().zip(WEIGHTS.iter()).enumerate() {
        if !super::features::absent(i, log_options) {
            z += weight * (x - mean) / scale;
        }
    }
    z
}

/// The complexity of `features`: in [0, 1] and finite for any input (a NaN, which the
/// feature code never produces, scores 0.5).
pub fn complexity(features: &Features) -> f32 {
    percentile(logit(features))
}

/// Where `z` falls among the training prompts' log-odds, interpolated linearly between
/// the table's steps; below the lowest 0, above the highest 1.
fn percentile(z: f32) -> f32 {
    if z.is_nan() {
        return 0.5;
    }
    let table = &LOGIT_PERCENTILES;
    let steps = (table.len() - 1) as f32;
    // The number of table entries ≤ z: z lies between entry i − 1 and entry i.
    let i = table.partition_point(|&q| q <= z);
    let (Some(&lo), Some(&hi)) = (i.checked_sub(1).and_then(|j| table.get(j)), table.get(i)) else {
        return if i == 0 { 0.0 } else { 1.0 };
    };
    let within = if hi > lo { (z - lo) / (hi - lo) } else { 0.0 };
    ((i as f32 - 1.0 + within) / steps).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_ascending_and_span_the_table() {
        assert!(LOGIT_PERCENTILES.windows(2).all(|w| w[0] <= w[1]));
        let (first, last) = (LOGIT_PERCENTILES[0], LOGIT_PERCENTILES[LOGIT_PERCENTILES.len() - 1]);
        assert_eq!(percentile(first - 1.0), 0.0);
        assert_eq!(percentile(last + 1.0), 1.0);
        assert_eq!(percentile(f32::NAN), 0.5);
        assert_eq!(percentile(f32::INFINITY), 1.0);
        assert_eq!(percentile(f32::NEG_INFINITY), 0.0);
        let mid = LOGIT_PERCENTILES[50];
        assert!((percentile(mid) - 0.5).abs() < 0.05, "{}", percentile(mid));
    }

    #[test]
    fn percentile_is_monotone() {
        let (first, last) = (LOGIT_PERCENTILES[0], LOGIT_PERCENTILES[LOGIT_PERCENTILES.len() - 1]);
        let mut previous = -1.0;
        for k in 0..=1000 {
            let z = first - 0.1 + (last - first + 0.2) * k as f32 / 1000.0;
            let p = percentile(z);
            assert!(p >= previous, "{z}: {p} < {previous}");
            previous = p;
        }
    }
}
