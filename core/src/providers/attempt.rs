//! What happened at each deployment tried for one request, and the one rule that
//! decides whether to fail over.

use std::fmt;

use gatekeeper_net::upstream::UpstreamError;

/// One deployment tried (or skipped) while serving a request.
#[derive(Debug)]
pub struct Attempt {
    /// Provider index in config order.
    pub provider: usize,
    /// Provider name.
    pub provider_name: String,
    /// What happened.
    pub outcome: AttemptOutcome,
}

/// How one attempt ended.
#[derive(Debug)]
pub enum AttemptOutcome {
    /// Connect, TLS, I/O, protocol failure or a timeout, before the answer was ours.
    Failed(UpstreamError),
    /// The provider answered with a status that allows failover (429, 5xx).
    Status(u16),
    /// Skipped: the provider asked us to wait (Retry-After) this many more seconds.
    Skipped {
        /// Seconds left until the provider may be tried again.
        retry_after_s: u64,
    },
    /// The answer's stream began, then nothing came for `chunk_timeout_ms` (too late
    /// to fail over; recorded for the audit record).
    Stalled {
        /// The provider's `chunk_timeout_ms`.
        chunk_timeout_ms: u64,
    },
}

impl AttemptOutcome {
    /// The outcome of an upstream status that did not end the request: `None` when
    /// the status is an answer to relay. 429 and 5xx fail over; so do 401, 403 and 404,
    /// which say the gateway's own configuration is wrong for this provider (its
    /// `api_key`, `base_url` or `upstream_model`): the client's key is not at fault
    /// and must not see them as its own.
    pub fn from_status(status: u16) -> Option<AttemptOutcome> {
        (status == 429 || status >= 500 || is_operator_status(status)).then_some(AttemptOutcome::Status(status))
    }

    /// Whether the provider refused the gateway's own settings (401, 403, 404): an
    /// operator's mistake, logged at error level and shown on `/readyz`.
    pub fn is_operator_error(&self) -> bool {
        matches!(self, AttemptOutcome::Status(s) if is_operator_status(*s))
    }

    /// Whether the next deployment may be tried after this outcome. The one place
    /// failover is decided. A request the upstream client refuses to write (bad
    /// header bytes from the client) fails the same way everywhere: no failover.
    pub fn retryable(&self) -> bool {
        match self {
            AttemptOutcome::Failed(e) => !is_client_caused(e),
            AttemptOutcome::Status(_) | AttemptOutcome::Skipped { .. } => true,
            AttemptOutcome::Stalled { .. } => false,
        }
    }

    /// Whether the outcome counts against the provider (metrics, health). A skip is
    /// not a failure, and neither is a request that was the client's fault or one that
    /// hit the gateway's own limit.
    pub fn is_provider_fault(&self) -> bool {
        match self {
            AttemptOutcome::Failed(e) => !is_client_caused(e) && !is_gateway_limit(e),
            AttemptOutcome::Status(_) | AttemptOutcome::Stalled { .. } => true,
            AttemptOutcome::Skipped { .. } => false,
        }
    }

    /// Whether the attempt never left the gateway because of the gateway's own bound: the
    /// shard's pool for the provider had `connections_max` busy and `queue_max` waiting (or
    /// none freed in time). The next deployment may have room; if none has, the client
    /// hears 503 `overloaded`, not that a provider failed.
    pub fn is_gateway_limit(&self) -> bool {
        matches!(self, AttemptOutcome::Failed(e) if is_gateway_limit(e))
    }

    /// Whether this was a timeout (connect, write, first byte, read idle).
    pub fn is_timeout(&self) -> bool {
        matches!(self, AttemptOutcome::Failed(e) if e.is_timeout())
    }
}

/// What a provider answering this status says about the gateway's config for it.
pub fn operator_cause(status: u16) -> Option<&'static str> {
    match status {
        401 => Some("the provider refused the gateway's api_key"),
        403 => {
            Some("the provider forbids the gateway's api_key this request (check the key's project and permissions)")
        }
        404 => Some("the provider has no such path or model (check base_url and upstream_model)"),
        _ => None,
    }
}

/// Whether `status` is a provider refusing the gateway's own settings (401/403/404).
pub fn is_operator_status(status: u16) -> bool {
    operator_cause(status).is_some()
}

/// Errors that are the gateway's own limit, not the provider's doing.
fn is_gateway_limit(e: &UpstreamError) -> bool {
    matches!(e, UpstreamError::PoolExhausted)
}

/// Errors caused by what the client sent, not by the provider.
fn is_client_caused(e: &UpstreamError) -> bool {
    matches!(e, UpstreamError::InvalidRequest(_))
}

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = &self.provider_name;
        match &self.outcome {
            AttemptOutcome::Failed(e) => write!(f, "{name}: {e}"),
            AttemptOutcome::Status(s) => match operator_cause(*s) {
                Some(cause) => write!(f, "{name}: HTTP {s}: {cause}"),
                None => write!(f, "{name}: HTTP {s}"),
            },
            AttemptOutcome::Skipped { retry_after_s } => {
                write!(f, "{name}: skipped (Retry-After, {retry_after_s} s left)")
            }
            AttemptOutcome::Stalled { chunk_timeout_ms } => {
                write!(f, "{name}: stream stalled (nothing for {chunk_timeout_ms} ms)")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failover_rule() {
        assert!(AttemptOutcome::from_status(200).is_none());
        assert!(AttemptOutcome::from_status(400).is_none());
        assert!(AttemptOutcome::from_status(429).is_some_and(|o| o.retryable() && o.is_provider_fault()));
        assert!(AttemptOutcome::from_status(503).is_some_and(|o| o.retryable()));
        let timeout = AttemptOutcome::Failed(UpstreamError::FirstByteTimeout);
        assert!(timeout.retryable() && timeout.is_provider_fault() && timeout.is_timeout());
        let client = AttemptOutcome::Failed(UpstreamError::InvalidRequest("header bytes"));
        assert!(!client.retryable() && !client.is_provider_fault());
        let skipped = AttemptOutcome::Skipped { retry_after_s: 3 };
        assert!(skipped.retryable() && !skipped.is_provider_fault());
        let full = AttemptOutcome::Failed(UpstreamError::PoolExhausted);
        assert!(full.retryable() && !full.is_provider_fault() && full.is_gateway_limit());
        assert!(!timeout.is_gateway_limit());
        let unresolvable = AttemptOutcome::Failed(UpstreamError::Resolve("x.invalid: no such name".into()));
        assert!(unresolvable.retryable() && unresolvable.is_provider_fault());
    }
}
