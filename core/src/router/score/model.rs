//! The fitted logistic regression: complexity = σ(bias + Σ coefᵢ · (xᵢ − meanᵢ) / scaleᵢ).

use super::features::Features;
use super::weights::{BIAS, WEIGHTS};

/// The complexity of `features`: in [0, 1], finite, for any input (a non-finite
/// feature, which the feature code never produces, scores 0.5 rather than NaN).
pub fn complexity(features: &Features) -> f32 {
    let mut z = BIAS;
    for (x, [mean, scale, coef]) in features.0.iter().zip(WEIGHTS.iter()) {
        z += coef * (x - mean) / scale;
    }
    if !z.is_finite() {
        return if z.is_nan() {
            0.5
        } else if z > 0.0 {
            1.0
        } else {
            0.0
        };
    }
    1.0 / (1.0 + (-z).exp())
}
