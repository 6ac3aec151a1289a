//! Cost mode: the cheapest deployment whose expected quality for this request meets
//! the threshold.
//!
//! Expected quality is `1 − (1 − quality) × complexity`: on a trivial request
//! (complexity 0) every model is expected to answer well; on the hardest (1) a model
//! is expected to do as well as its configured `quality`, and in between its
//! shortfall grows in proportion to the request's complexity. It rises with `quality`
//! and falls with complexity, so a higher threshold only ever removes candidates.

use super::request::RouteRequest;
use super::table::Deployment;

/// Expected quality of a model of `quality` on a request of `complexity` (both 0–1).
pub fn expected_quality(quality: f32, complexity: f32) -> f32 {
    let (q, c) = (quality.clamp(0.0, 1.0), complexity.clamp(0.0, 1.0));
    1.0 - (1.0 - q) * c
}

/// Completion tokens the price assumes: `max_tokens` when given, else the model's
/// `output_tokens_typical`.
pub fn expected_output_tokens(d: &Deployment, req: &RouteRequest<'_>) -> u64 {
    req.max_tokens.unwrap_or(u64::from(d.output_tokens_typical))
}

/// Expected price in USD: `price_per_1k_input × prompt tokens + price_per_1k_output ×
/// expected output`, per 1,000 tokens (a float: for ranking, never for billing).
pub fn expected_price(d: &Deployment, req: &RouteRequest<'_>) -> f64 {
    let input = d.price_per_1k_input * req.prompt_tokens as f64;
    let output = d.price_per_1k_output * expected_output_tokens(d, req) as f64;
    (input + output) / 1000.0
}

/// Cost mode's order over candidates that passed the filters: those meeting
/// `threshold` by price (cheapest first), then the rest by expected quality (best
/// first), ties by price; a stable sort keeps the failover order among equals.
/// `eq` and `price` read each candidate's expected quality and price.
pub fn order<T>(candidates: &mut [T], threshold: f32, eq: impl Fn(&T) -> f32, price: impl Fn(&T) -> f64) {
    candidates.sort_by(|a, b| {
        let (ma, mb) = (eq(a) >= threshold, eq(b) >= threshold);
        mb.cmp(&ma).then_with(|| {
            if ma {
                price(a).total_cmp(&price(b))
            } else {
                eq(b).total_cmp(&eq(a)).then(price(a).total_cmp(&price(b)))
            }
        })
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_quality_runs_from_one_to_the_models_quality() {
        assert_eq!(expected_quality(0.4, 0.0), 1.0);
        assert!((expected_quality(0.4, 1.0) - 0.4).abs() < 1e-6);
        assert!((expected_quality(0.4, 0.5) - 0.7).abs() < 1e-6);
        assert!(expected_quality(0.9, 0.5) > expected_quality(0.4, 0.5));
        assert!(expected_quality(0.4, 0.2) > expected_quality(0.4, 0.6));
    }

    #[test]
    fn cheapest_meeting_the_threshold_first_then_best_of_the_rest() {
        // (name, expected quality, price)
        let mut c = vec![("a", 0.9, 3.0), ("b", 0.75, 1.0), ("c", 0.5, 0.1), ("d", 0.6, 0.2)];
        order(&mut c, 0.7, |x| x.1, |x| x.2);
        assert_eq!(c.iter().map(|x| x.0).collect::<Vec<_>>(), ["b", "a", "d", "c"]);
        order(&mut c, 0.95, |x| x.1, |x| x.2);
        assert_eq!(c.iter().map(|x| x.0).collect::<Vec<_>>(), ["a", "b", "d", "c"]);
    }
}
