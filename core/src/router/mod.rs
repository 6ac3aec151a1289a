//! Step 5, route: which deployments may serve a request, in the order to try them.
//!
//! [`route`] picks the mode (`X-Routing-Mode`, else the key's `route` claim, else
//! `routing.default_mode`), gathers the candidates (every deployment of every model
//! the key may use when the request names the auto alias; else the named model's
//! deployments), drops those the hard filters rule out ([`filter`]), scores the
//! request ([`score`]) and orders the rest by the mode: [`cost`], [`latency`] or
//! [`capability`]. The first is the choice, the rest the failover order; the
//! [`decision::Decision`] says how it came out. [`health`] keeps a provider that asked
//! us to wait out of every attempt.

pub mod capability;
pub mod caps;
pub mod cost;
pub mod decision;
pub mod filter;
pub mod health;
pub mod latency;
pub mod mode;
pub mod price;
pub mod request;
pub mod score;
pub mod table;

use std::time::Instant;

pub use decision::Decision;
pub use health::{HealthBoard, HealthSettings, ProviderAlarm, ProviderHealth, ShardHealth};
pub use mode::RouteMode;
pub use request::RouteRequest;
pub use table::{Deployment, RouteTable};

use crate::keys::Claims;
use decision::{Candidate, Reason, Verdict};

/// Why no route was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// No deployment serves the model (or the key may not use it — the key says which).
    #[error("the model `{0}` does not exist or you do not have access to it")]
    ModelNotFound(String),
    /// `X-Routing-Mode` names no mode.
    #[error("X-Routing-Mode: unknown routing mode `{0}`; expected cost, latency or capability")]
    UnknownMode(String),
    /// The auto alias, and the key may use none of the configured models.
    #[error("the key may use none of the configured models, so `{0}` has nothing to choose from")]
    NoModelAllowed(String),
    /// Every candidate fails a hard filter; says which requirement.
    #[error("{0}")]
    Unmet(String),
}

/// The deployments a request may use, in the order to try them.
#[derive(Debug, Clone)]
pub struct Route<'g> {
    /// Candidates in the order to try them (the first is the router's choice, the
    /// rest its failover order).
    pub deployments: Vec<&'g Deployment>,
    /// How the choice was made.
    pub decision: Decision,
}

/// What, besides the request's body, the decision depends on.
#[derive(Debug, Clone, Copy)]
pub struct RouteInput<'r> {
    /// The `model` the request names.
    pub model: &'r str,
    /// The `X-Routing-Mode` header, if sent.
    pub mode_header: Option<&'r [u8]>,
    /// The key's claims (`None` with `--no-auth`).
    pub claims: Option<&'r Claims>,
    /// This shard's deployment health, for latency mode (`None` outside a gateway, as
    /// in `gatekeeper route`: latency mode then keeps the configured order).
    pub health: Option<&'r ShardHealth>,
    /// Now, for latency mode.
    pub now: Instant,
}

/// The mode: `X-Routing-Mode`, else the key's `route` claim, else the default.
pub fn mode_of(header: Option<&[u8]>, claims: Option<&Claims>, table: &RouteTable) -> Result<RouteMode, RouteError> {
    if let Some(h) = header {
        let text = String::from_utf8_lossy(h);
        let name = text.trim();
        return [RouteMode::Cost, RouteMode::Latency, RouteMode::Capability]
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(name))
            .ok_or_else(|| RouteError::UnknownMode(name.chars().take(64).collect()));
    }
    Ok(claims.and_then(|c| c.route).unwrap_or(table.routing.default_mode))
}

/// Routes `req`: the candidates in the order to try them, and the decision.
pub fn route<'g>(
    table: &'g RouteTable,
    req: &RouteRequest<'_>,
    input: &RouteInput<'_>,
) -> Result<Route<'g>, RouteError> {
    let mode = mode_of(input.mode_header, input.claims, table)?;
    let threshold = input.claims.and_then(|c| c.quality).map_or(table.routing.quality_threshold, |q| q as f32);
    let auto = input.model == table.routing.auto_model;
    let pool: Vec<&'g Deployment> = if auto {
        let allowed = |d: &&Deployment| input.claims.is_none_or(|c| c.allows_model(&d.name));
        let pool: Vec<&Deployment> = table.deployments.iter().filter(allowed).collect();
        if pool.is_empty() {
            return Err(RouteError::NoModelAllowed(input.model.chars().take(200).collect()));
        }
        pool
    } else {
        match table.of_model(input.model) {
            Some((_, list)) if !list.is_empty() => list.iter().collect(),
            _ => return Err(RouteError::ModelNotFound(input.model.chars().take(200).collect())),
        }
    };
    let s = score::score(&req.prompt());
    decide(pool, req, mode, threshold, s, auto, input)
}

/// A candidate while it is being ranked.
struct Ranked<'g> {
    d: &'g Deployment,
    price: f64,
    eq: f32,
}

fn decide<'g>(
    pool: Vec<&'g Deployment>,
    req: &RouteRequest<'_>,
    mode: RouteMode,
    threshold: f32,
    s: score::Score,
    auto: bool,
    input: &RouteInput<'_>,
) -> Result<Route<'g>, RouteError> {
    let mut passing = Vec::with_capacity(pool.len());
    let mut filtered = Vec::new();
    for &d in &pool {
        let ranked =
            Ranked { d, price: cost::expected_price(d, req), eq: cost::expected_quality(d.quality, s.complexity) };
        match filter::check(d, req) {
            Ok(()) => passing.push(ranked),
            Err(r) => filtered.push((ranked, r)),
        }
    }
    if passing.is_empty() {
        return Err(RouteError::Unmet(filter::unmet_message(req, &pool)));
    }
    let reason = match mode {
        RouteMode::Cost => {
            cost::order(&mut passing, threshold, |c| c.eq, |c| c.price);
            match passing.first() {
                Some(c) if c.eq >= threshold => Reason::Cheapest,
                _ => Reason::NoneMetThreshold,
            }
        }
        RouteMode::Capability => {
            capability::order(&mut passing, s.task, |c| c.d, |c| c.price);
            match passing.first() {
                Some(c) if capability::strong_at(c.d, s.task) => Reason::StrongAtTask,
                _ => Reason::BestQuality,
            }
        }
        RouteMode::Latency => {
            let mut order: Vec<&Deployment> = passing.iter().map(|c| c.d).collect();
            if let Some(health) = input.health {
                latency::order(&mut order, health, input.now);
            }
            // Candidates are few (one per configured deployment): a linear lookup is fine.
            passing.sort_by_key(|c| order.iter().position(|d| d.id == c.d.id).unwrap_or(usize::MAX));
            Reason::Fastest
        }
    };
    let mut candidates = Vec::with_capacity(pool.len());
    for (i, c) in passing.iter().enumerate() {
        let verdict = if i == 0 { Verdict::Chosen } else { Verdict::Failover };
        candidates.push(Candidate { deployment: c.d.id, price_usd: c.price, expected_quality: c.eq, verdict });
    }
    for (c, r) in &filtered {
        candidates.push(Candidate {
            deployment: c.d.id,
            price_usd: c.price,
            expected_quality: c.eq,
            verdict: Verdict::Filtered(*r),
        });
    }
    Ok(Route {
        deployments: passing.iter().map(|c| c.d).collect(),
        decision: Decision { mode, complexity: s.complexity, task: s.task, threshold, auto, candidates, reason },
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::caps::{Capability, Caps};
    use super::score::{Score, Task};
    use super::*;
    use crate::router::price::Price;

    /// One model of a test table: name, quality, price per 1k in, out, capabilities, context.
    type Spec = (String, f32, f64, f64, Option<Caps>, Option<u64>);

    /// A table of `models`, one deployment each.
    fn table(models: &[Spec]) -> RouteTable {
        let mut t = RouteTable::default();
        for (i, (name, quality, pin, pout, caps, ctx)) in models.iter().enumerate() {
            t.model_names.push(name.clone());
            t.by_model.insert(name.clone(), (i, i..i + 1));
            t.deployments.push(Deployment {
                id: i,
                model: i,
                provider: i,
                upstream_model: name.clone(),
                upstream_model_json: format!("\"{name}\""),
                price_per_1k_input: *pin,
                price_per_1k_output: *pout,
                prices: (Price::default(), Price::default()),
                name: name.clone(),
                quality: *quality,
                capabilities: *caps,
                context_window: *ctx,
                output_tokens_typical: 256,
            });
        }
        t
    }

    fn input<'r>(model: &'r str, claims: Option<&'r Claims>) -> RouteInput<'r> {
        RouteInput { model, mode_header: None, claims, health: None, now: Instant::now() }
    }

    fn caps_strategy() -> impl Strategy<Value = Option<Caps>> {
        proptest::option::weighted(
            0.85,
            proptest::collection::vec(proptest::sample::select(Capability::ALL.to_vec()), 0..5)
                .prop_map(|l| Caps::of(&l)),
        )
    }

    fn models_strategy() -> impl Strategy<Value = Vec<Spec>> {
        proptest::collection::vec(
            (0.0f32..=1.0, 0.0f64..0.02, 0.0f64..0.08, caps_strategy(), proptest::option::of(1_000u64..300_000)),
            1..7,
        )
        .prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(i, (q, pin, pout, caps, ctx))| (format!("team-{}-m{i}", i % 3), q, pin, pout, caps, ctx))
                .collect()
        })
    }

    fn request_strategy() -> impl Strategy<Value = RouteRequest<'static>> {
        (1u64..50_000, proptest::option::of(1u64..200_000), 0u32..3, any::<bool>(), any::<bool>()).prop_map(
            |(prompt_tokens, max_tokens, tools, vision, json_mode)| RouteRequest {
                turns: Vec::new(),
                prompt_tokens,
                max_tokens,
                tools,
                vision,
                json_mode,
            },
        )
    }

    fn task_strategy() -> impl Strategy<Value = Task> {
        proptest::sample::select(Task::ALL.to_vec())
    }

    proptest! {
        #[test]
        fn a_higher_threshold_never_picks_a_cheaper_model(
            models in models_strategy(),
            req in request_strategy(),
            complexity in 0.0f32..=1.0,
            t1 in 0.0f32..=1.0,
            t2 in 0.0f32..=1.0,
        ) {
            let (low, high) = if t1 <= t2 { (t1, t2) } else { (t2, t1) };
            let t = table(&models);
            let pool: Vec<&Deployment> = t.deployments.iter().collect();
            let s = Score { complexity, task: Task::Chat };
            let i = input("auto", None);
            let a = decide(pool.clone(), &req, RouteMode::Cost, low, s, true, &i);
            let b = decide(pool, &req, RouteMode::Cost, high, s, true, &i);
            match (a, b) {
                (Ok(a), Ok(b)) => {
                    let (pa, pb) = (&a.decision.candidates[0], &b.decision.candidates[0]);
                    prop_assert!(pb.price_usd >= pa.price_usd, "{high} chose {} at {}, {low} chose {} at {}",
                        pb.deployment, pb.price_usd, pa.deployment, pa.price_usd);
                }
                (Err(_), Err(_)) => {}
                _ => prop_assert!(false, "the threshold changed whether anything passes the filters"),
            }
        }

        #[test]
        fn the_filters_are_never_violated(
            models in models_strategy(),
            req in request_strategy(),
            complexity in 0.0f32..=1.0,
            task in task_strategy(),
            mode in proptest::sample::select(vec![RouteMode::Cost, RouteMode::Latency, RouteMode::Capability]),
        ) {
            let t = table(&models);
            let pool: Vec<&Deployment> = t.deployments.iter().collect();
            let s = Score { complexity, task };
            match decide(pool, &req, mode, 0.7, s, true, &input("auto", None)) {
                Ok(route) => {
                    prop_assert!(!route.deployments.is_empty());
                    for d in &route.deployments {
                        prop_assert!(filter::check(d, &req).is_ok(), "{} routed but fails a filter", d.name);
                    }
                    prop_assert_eq!(route.decision.chosen(), route.deployments.first().map(|d| d.id));
                }
                Err(RouteError::Unmet(message)) => {
                    prop_assert!(t.deployments.iter().all(|d| filter::check(d, &req).is_err()));
                    prop_assert!(
                        message.starts_with("no model meets") || message.starts_with("no single model meets"),
                        "{message}"
                    );
                }
                Err(e) => prop_assert!(false, "unexpected {e}"),
            }
        }

        #[test]
        fn the_auto_alias_never_picks_a_model_outside_the_keys_globs(
            models in models_strategy(),
            globs in proptest::collection::vec(
                proptest::sample::select(vec!["team-0-*", "team-1-*", "*-m2", "team-2-m5", "nothing*", "*"]), 0..3),
            mode in proptest::sample::select(vec![RouteMode::Cost, RouteMode::Latency, RouteMode::Capability]),
            text in "[a-z ]{0,80}",
        ) {
            let t = table(&models);
            let claims = Claims {
                jti: "k".into(),
                models: globs.iter().map(|g| g.to_string()).collect(),
                route: Some(mode),
                ..Claims::default()
            };
            let req = RouteRequest::from_prompt(&text);
            match route(&t, &req, &input("auto", Some(&claims))) {
                Ok(r) => {
                    prop_assert_eq!(r.decision.mode, mode);
                    for d in r.deployments {
                        prop_assert!(claims.allows_model(&d.name), "{} is outside {:?}", d.name, globs);
                    }
                    for c in &r.decision.candidates {
                        let d = t.deployment(c.deployment).unwrap();
                        prop_assert!(claims.allows_model(&d.name));
                    }
                }
                Err(RouteError::NoModelAllowed(_)) => {
                    prop_assert!(t.deployments.iter().all(|d| !claims.allows_model(&d.name)));
                }
                Err(RouteError::Unmet(_)) => {}
                Err(e) => prop_assert!(false, "unexpected {e}"),
            }
        }
    }

    #[test]
    fn the_header_beats_the_key_which_beats_the_config() {
        let t = table(&[("a".into(), 0.5, 0.001, 0.001, None, None)]);
        let key = Claims { jti: "k".into(), route: Some(RouteMode::Latency), ..Claims::default() };
        assert_eq!(mode_of(None, None, &t), Ok(RouteMode::Cost));
        assert_eq!(mode_of(None, Some(&key), &t), Ok(RouteMode::Latency));
        assert_eq!(mode_of(Some(b"Capability"), Some(&key), &t), Ok(RouteMode::Capability));
        let e = mode_of(Some(b"fastest"), None, &t).unwrap_err();
        assert!(e.to_string().starts_with("X-Routing-Mode: unknown routing mode `fastest`"), "{e}");
    }

    #[test]
    fn the_keys_quality_claim_replaces_the_threshold() {
        // cheap: quality 0.4; dear: quality 0.95. At complexity 1 only `dear` meets 0.9.
        let t =
            table(&[("cheap".into(), 0.4, 0.0001, 0.0001, None, None), ("dear".into(), 0.95, 0.01, 0.01, None, None)]);
        let long = "x".repeat(40_000);
        let req = RouteRequest::from_prompt(&long);
        let lenient = Claims { jti: "k".into(), quality: Some(0.0), ..Claims::default() };
        let strict = Claims { jti: "k".into(), quality: Some(1.0), ..Claims::default() };
        let pick = |c: &Claims| {
            let r = route(&t, &req, &input("auto", Some(c))).unwrap();
            (r.deployments[0].name.clone(), r.decision.reason)
        };
        assert_eq!(pick(&lenient), ("cheap".to_string(), decision::Reason::Cheapest));
        assert_eq!(pick(&strict).0, "dear");
    }

    #[test]
    fn a_named_model_chooses_among_its_own_deployments_only() {
        let mut t = table(&[("a".into(), 0.5, 0.01, 0.01, None, None), ("b".into(), 0.5, 0.0, 0.0, None, None)]);
        // A second, cheaper deployment of `a`.
        let mut second = t.deployments[0].clone();
        second.id = 2;
        second.provider = 2;
        second.price_per_1k_input = 0.0001;
        t.deployments.push(second);
        t.by_model = HashMap::from([("a".to_string(), (0, 0..1)), ("b".to_string(), (1, 1..2))]);
        // Regroup so `a`'s deployments are contiguous: [a@0, a@2, b@1].
        t.deployments.swap(1, 2);
        for (i, d) in t.deployments.iter_mut().enumerate() {
            d.id = i;
        }
        t.by_model = HashMap::from([("a".to_string(), (0, 0..2)), ("b".to_string(), (1, 2..3))]);
        let req = RouteRequest::from_prompt("hi");
        let r = route(&t, &req, &input("a", None)).unwrap();
        assert!(r.deployments.iter().all(|d| d.name == "a"));
        assert_eq!(r.deployments[0].provider, 2, "the cheaper deployment first");
        assert!(!r.decision.auto);
        assert!(matches!(route(&t, &req, &input("zzz", None)), Err(RouteError::ModelNotFound(_))));
    }
}
