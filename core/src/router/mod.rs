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

use std::rc::Rc;
use std::time::Instant;

pub use decision::Decision;
pub use health::{ProviderAlarm, ProviderHealth};
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
    /// Per-provider health, for latency mode.
    pub health: &'r [Rc<ProviderHealth>],
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
pub fn route<'g>(table: &'g RouteTable, req: &RouteRequest<'_>, input: &RouteInput<'_>) -> Result<Route<'g>, RouteError> {
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
    let Some(_) = passing.first() else { return Err(RouteError::Unmet(filter::unmet_message(req, &pool))) };
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
            latency::order(&mut order, input.health, input.now);
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
