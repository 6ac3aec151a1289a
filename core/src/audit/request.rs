//! Step 8 for one request: its [`AuditRecord`], built from what the request went
//! through and handed to the shard's WAL before the answer's last byte leaves.

use std::cell::Cell;
use std::fmt::Write as _;
use std::time::Instant;

use crate::audit::{AuditError, AuditRecord};
use crate::bridge::ShardAudit;
use crate::providers::attempt::Attempt;
use crate::providers::Provider;
use crate::router::price::write_cost_usd;
use crate::router::RouteTable;
use crate::trace::Trace;

/// A per-shard allowance of records for requests refused at the key check, so an
/// unauthenticated flood cannot fill the spool (and turn into 503 for everyone).
/// Such requests never reach a provider; past the allowance they are only counted.
#[derive(Debug)]
pub struct RefusalAllowance {
    per_s: u32,
    /// (second since start, records written in it).
    window: Cell<(u64, u32)>,
    start: Instant,
}

impl RefusalAllowance {
    /// At most `per_s` records per second.
    pub fn new(per_s: u32) -> RefusalAllowance {
        RefusalAllowance { per_s, window: Cell::new((0, 0)), start: Instant::now() }
    }

    /// Takes one record from this second's allowance; false when it is used up.
    pub fn take(&self, now: Instant) -> bool {
        let second = now.saturating_duration_since(self.start).as_secs();
        let (at, used) = self.window.get();
        let used = if at == second { used } else { 0 };
        if used >= self.per_s {
            return false;
        }
        self.window.set((second, used.saturating_add(1)));
        true
    }
}

/// What a shard needs to write a request's record.
#[derive(Clone, Copy)]
pub struct Recorder<'g> {
    /// The shard's spool; `None` when the audit log is off.
    pub audit: Option<&'g ShardAudit>,
    /// The shard's index.
    pub shard: usize,
    /// Model names and deployments.
    pub routes: &'g RouteTable,
    /// Providers in config order.
    pub providers: &'g [Provider],
}

impl Recorder<'_> {
    /// Writes the record of a request that ended with `status`. `attempts` are the
    /// failed ones (from the trace, or from the error that ended the request). `Ok`
    /// means the record survives a kill of the process; on an error the request
    /// must not be reported as a success. Fills the shard's reused record in place
    /// (every field), so its strings allocate nothing once the shard is warm.
    pub fn record(&self, request_id: &str, trace: &Trace, attempts: &[Attempt], status: u16) -> Result<(), AuditError> {
        let Some(audit) = self.audit else { return Ok(()) };
        let deployment = trace.deployment.and_then(|d| self.routes.deployment(d));
        let usage = trace.usage.unwrap_or_default();
        let claims = trace.claims.as_ref();
        let decision = trace.decision.as_ref();
        audit
            .submit_with(|r: &mut AuditRecord| {
                set(&mut r.request_id, request_id);
                r.ts_unix_ms = trace.started_unix_ms;
                r.shard = u16::try_from(self.shard).unwrap_or(u16::MAX);
                set_opt(&mut r.kid, claims.and_then(|c| c.kid.as_deref()));
                set_opt(&mut r.key_id, claims.map(|c| c.jti.as_str()));
                set_opt(&mut r.tenant, claims.and_then(|c| c.tenant.as_deref()));
                set(&mut r.model_requested, &trace.model_requested);
                set_opt(&mut r.provider, trace.provider.and_then(|p| self.providers.get(p)).map(|p| p.name.as_str()));
                set_opt(&mut r.model_upstream, deployment.map(|d| d.upstream_model.as_str()));
                set_opt(&mut r.route_mode, decision.map(|d| d.mode.as_str()));
                // Two decimals, as the header shows it (an f32's widening would print noise digits).
                r.complexity = decision.map(|d| (f64::from(d.complexity) * 100.0).round() / 100.0);
                set_opt(&mut r.task, decision.map(|d| d.task.as_str()));
                self.candidates(decision, &mut r.route_candidates);
                set_opt(&mut r.route_reason, decision.map(|d| d.reason.as_str()));
                r.stream = trace.stream;
                r.status = status;
                r.tokens_in = usage.prompt_tokens;
                r.tokens_out = usage.completion_tokens;
                // Written over the last request's cost (no allocation once warm).
                let cost = deployment.and_then(|d| {
                    write_cost_usd(
                        &mut r.cost_usd,
                        usage.prompt_tokens,
                        d.prices.0,
                        usage.completion_tokens,
                        d.prices.1,
                    )
                });
                if cost.is_none() {
                    set(&mut r.cost_usd, "0");
                }
                r.upstream_us = trace.upstream.as_micros() as u64;
                r.overhead_us = trace.overhead_us;
                r.attempts.truncate(attempts.len());
                for (i, a) in attempts.iter().enumerate() {
                    match r.attempts.get_mut(i) {
                        Some(s) => {
                            s.clear();
                            let _ = write!(s, "{a}");
                        }
                        None => r.attempts.push(a.to_string()),
                    }
                }
                r.budget_reserved_tokens = trace.budget.map(|b| b.reserved_tokens);
                // What the pipeline settles once the answer is out, for this status.
                r.budget_settled_tokens = trace.budget.map(|b| {
                    crate::budget::Outcome { status, usage: trace.usage, price_per_1k: None }.spend(b.reserved_tokens).0
                });
                set_opt(&mut r.credit_nullifier, trace.credit.as_ref().map(|(n, _)| n.as_str()));
                r.credit_amount = trace.credit.as_ref().map(|(_, a)| *a);
                r.credit_issued_epoch = trace.credit_issued.map(|(e, _)| e);
                r.credit_issued = trace.credit_issued.map(|(_, n)| n);
                r.content = None;
            })
            .inspect_err(|e| {
                tracing::error!(request_id, error = %e, "audit record not written");
            })
    }

    /// Writes `model@provider:verdict` for each candidate of `d` over `out`.
    fn candidates(&self, d: Option<&crate::router::Decision>, out: &mut Vec<String>) {
        let mut n = 0;
        for c in d.map_or(&[][..], |d| &d.candidates[..]) {
            let Some(dep) = self.routes.deployment(c.deployment) else { continue };
            let provider = self.providers.get(dep.provider).map_or("?", |p| p.name.as_str());
            if out.len() <= n {
                out.push(String::new());
            }
            if let Some(s) = out.get_mut(n) {
                s.clear();
                s.push_str(&dep.name);
                s.push('@');
                s.push_str(provider);
                s.push(':');
                c.verdict.push_code(s);
            }
            n += 1;
        }
        out.truncate(n);
    }
}

/// `s = v`, keeping `s`'s allocation.
fn set(s: &mut String, v: &str) {
    s.clear();
    s.push_str(v);
}

/// `o = v`, keeping the allocation of a `Some` that stays `Some`.
fn set_opt(o: &mut Option<String>, v: Option<&str>) {
    match (o.as_mut(), v) {
        (Some(s), Some(v)) => set(s, v),
        (None, Some(v)) => *o = Some(v.to_string()),
        (_, None) => *o = None,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn allowance_is_per_second() {
        let a = RefusalAllowance::new(3);
        let t0 = a.start;
        assert!((0..3).all(|_| a.take(t0)));
        assert!(!a.take(t0 + Duration::from_millis(999)));
        assert!(a.take(t0 + Duration::from_secs(1)), "a new second, a new allowance");
        assert!(!RefusalAllowance::new(0).take(t0));
    }
}
