//! What one request went through, filled in by the pipeline's steps and read by
//! metrics, the response headers and the audit record.

use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::keys::Claims;
use crate::providers::attempt::Attempt;
use crate::wire::openai::Usage;

/// One request's trace.
#[derive(Debug)]
pub struct Trace {
    /// When the gateway started on the request.
    pub started: Instant,
    /// The same moment as Unix ms (the audit record's timestamp).
    pub started_unix_ms: u64,
    /// Time spent waiting on providers.
    pub upstream: Duration,
    /// Time spent inside the gateway, µs (set when the answer starts).
    pub overhead_us: u64,
    /// Index of the client-facing model, once routed.
    pub model: Option<usize>,
    /// The model name as the client sent it (at most 256 characters).
    pub model_requested: String,
    /// The last provider tried.
    pub provider: Option<usize>,
    /// Id of the last deployment tried ([`crate::router::Deployment::id`]).
    pub deployment: Option<usize>,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// The key's claims, once verified.
    pub claims: Option<Rc<Claims>>,
    /// Failed or skipped attempts before the answer (all of them when none answered).
    pub attempts: Vec<Attempt>,
    /// Token usage the provider reported.
    pub usage: Option<Usage>,
    /// How the router chose, once routed.
    pub decision: Option<crate::router::Decision>,
    /// What the budget step reserved and what the `x-ratelimit-*` headers say; `None`
    /// when no budget applies.
    pub budget: Option<crate::budget::BudgetTrace>,
    /// A credit-paid request: the spend's nullifier (hex) and amount, for the audit
    /// record (which then names no key or tenant).
    pub credit: Option<(String, u64)>,
    /// The change credential an error answer carries (credit-paid requests refused
    /// after their nullifier was recorded).
    pub credit_change: Option<String>,
    /// A credential issuance: its epoch and credits, for the audit record.
    pub credit_issued: Option<(u32, u64)>,
}

impl Trace {
    /// A trace starting now.
    pub fn start() -> Trace {
        Trace {
            started: Instant::now(),
            started_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            upstream: Duration::ZERO,
            overhead_us: 0,
            model: None,
            model_requested: String::new(),
            provider: None,
            deployment: None,
            stream: false,
            claims: None,
            attempts: Vec::new(),
            usage: None,
            decision: None,
            budget: None,
            credit: None,
            credit_change: None,
            credit_issued: None,
        }
    }

    /// Time since the request started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Records that `deployment` was called and took `took`: the one place an
    /// attempt moves the trace.
    pub fn called(&mut self, deployment: &crate::router::Deployment, took: Duration) {
        self.deployment = Some(deployment.id);
        self.model = Some(deployment.model);
        self.provider = Some(deployment.provider);
        self.upstream = self.upstream.saturating_add(took);
    }

    /// Fixes the gateway's own time: everything so far minus the time upstream.
    pub fn close_overhead(&mut self) -> u64 {
        self.overhead_us = self.elapsed().saturating_sub(self.upstream).as_micros() as u64;
        self.overhead_us
    }
}
