//! Step 8 for one request: its [`AuditRecord`], built from what the request went
//! through and handed to the shard's WAL before the answer's last byte leaves.

use std::cell::Cell;
use std::time::Instant;

use crate::audit::{AuditError, AuditRecord};
use crate::bridge::ShardAudit;
use crate::providers::attempt::Attempt;
use crate::providers::Provider;
use crate::router::price::cost_usd;
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
    /// `model@provider:verdict` for each candidate of `d`.
    fn candidates(&self, d: &crate::router::Decision) -> Vec<String> {
        d.candidates
            .iter()
            .filter_map(|c| {
                let dep = self.routes.deployment(c.deployment)?;
                let provider = self.providers.get(dep.provider).map_or("?", |p| p.name.as_str());
                Some(format!("{}@{provider}:{}", dep.name, c.verdict.code()))
            })
            .collect()
    }

    /// Writes the record of a request that ended with `status`. `attempts` are the
    /// failed ones (from the trace, or from the error that ended the request). `Ok`
    /// means the record survives a kill of the process; on an error the request
    /// must not be reported as a success.
    pub fn record(&self, request_id: &str, trace: &Trace, attempts: &[Attempt], status: u16) -> Result<(), AuditError> {
        let Some(audit) = self.audit else { return Ok(()) };
        let deployment = trace.deployment.and_then(|d| self.routes.deployment(d));
        let usage = trace.usage.unwrap_or_default();
        let record = AuditRecord {
            request_id: request_id.to_string(),
            ts_unix_ms: trace.started_unix_ms,
            shard: u16::try_from(self.shard).unwrap_or(u16::MAX),
            kid: trace.claims.as_ref().and_then(|c| c.kid.as_deref()).map(str::to_string),
            key_id: trace.claims.as_ref().map(|c| c.jti.clone()),
            tenant: trace.claims.as_ref().and_then(|c| c.tenant.clone()),
            model_requested: trace.model_requested.clone(),
            provider: trace.provider.and_then(|p| self.providers.get(p)).map(|p| p.name.clone()),
            model_upstream: deployment.map(|d| d.upstream_model.clone()),
            route_mode: trace.decision.as_ref().map(|d| d.mode.as_str().to_string()),
            // Two decimals, as the header shows it (an f32's widening would print noise digits).
            complexity: trace.decision.as_ref().map(|d| (f64::from(d.complexity) * 100.0).round() / 100.0),
            task: trace.decision.as_ref().map(|d| d.task.as_str().to_string()),
            route_candidates: trace.decision.as_ref().map_or_else(Vec::new, |d| self.candidates(d)),
            route_reason: trace.decision.as_ref().map(|d| d.reason.as_str().to_string()),
            stream: trace.stream,
            status,
            tokens_in: usage.prompt_tokens,
            tokens_out: usage.completion_tokens,
            cost_usd: deployment
                .and_then(|d| cost_usd(usage.prompt_tokens, d.prices.0, usage.completion_tokens, d.prices.1))
                .unwrap_or_else(|| "0".into()),
            upstream_us: trace.upstream.as_micros() as u64,
            overhead_us: trace.overhead_us,
            attempts: attempts.iter().map(ToString::to_string).collect(),
            credit_nullifier: trace.credit.as_ref().map(|(n, _)| n.clone()),
            credit_amount: trace.credit.as_ref().map(|(_, a)| *a),
            content: None,
        };
        audit.submit(&record).inspect_err(|e| {
            tracing::error!(request_id = %record.request_id, error = %e, "audit record not written");
        })
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
