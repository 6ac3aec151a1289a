//! Everything a request can fail with — each pipeline step's own error type, folded
//! into [`GatewayError`] — and the one function that turns it into an HTTP status
//! and OpenAI-shaped error JSON.

use gatekeeper_net::ProtocolError;

use crate::budget::{BudgetError, LimitKind};
use crate::credit::error::CreditError;
use crate::keys::KeyError;
use crate::providers::attempt::{Attempt, AttemptOutcome};
use crate::providers::ProviderError;
use crate::router::RouteError;
use crate::wire::openai::{error_json, RequestError};

/// Why the gateway refused or could not complete a request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// The client broke HTTP or a limit (from the `net` crate).
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// Step 1: the body is not a chat-completions request.
    #[error(transparent)]
    BadRequest(#[from] RequestError),
    /// Step 2: the API key was refused.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// Step 3: the credit check refused the request.
    #[error(transparent)]
    Credit(#[from] CreditError),
    /// Step 4: over budget.
    #[error(transparent)]
    Budget(#[from] BudgetError),
    /// Step 5: no route.
    #[error(transparent)]
    Route(#[from] RouteError),
    /// Step 6: no provider answered.
    #[error(transparent)]
    Upstream(#[from] ProviderError),
    /// No route matches the path.
    #[error("unknown path {0}")]
    NotFound(String),
    /// The path exists, the method does not.
    #[error("method {method} not allowed on {path}")]
    MethodNotAllowed {
        /// What was asked.
        method: String,
        /// Where.
        path: &'static str,
    },
    /// The gateway is shutting down or over a limit of its own.
    #[error("{0}")]
    Unavailable(&'static str),
    /// Step 8: the audit log could not take the request's record, so it is not answered.
    #[error("the audit log is unavailable; the request was not completed")]
    AuditUnavailable,
}

/// What an error becomes on the wire.
#[derive(Debug)]
pub struct ErrorResponse {
    /// HTTP status.
    pub status: u16,
    /// `Retry-After` seconds, when the client should wait.
    pub retry_after_s: Option<u64>,
    /// OpenAI-shaped JSON body.
    pub body: Vec<u8>,
    /// More headers: `x-ratelimit-*` on a budget refusal.
    pub headers: Vec<(&'static str, String)>,
}

/// Status, OpenAI `type`, `code`, `param`, `Retry-After`.
type Shape = (u16, &'static str, Option<&'static str>, Option<&'static str>, Option<u64>);

impl GatewayError {
    /// The attempts made before the request failed (empty unless providers were tried).
    pub fn attempts(&self) -> &[Attempt] {
        match self {
            GatewayError::Upstream(ProviderError::Exhausted { attempts }) => attempts,
            _ => &[],
        }
    }

    /// The one place that decides status, OpenAI `type` and `code` for every error.
    pub fn to_response(&self) -> ErrorResponse {
        let (status, kind, code, param, retry_after_s): Shape = match self {
            GatewayError::Protocol(p) => {
                let kind = match p.status() {
                    408 => "timeout_error",
                    503 => "server_error",
                    _ => "invalid_request_error",
                };
                let retry = (p.status() == 503).then_some(1);
                (p.status(), kind, Some(p.code()), None, retry)
            }
            GatewayError::BadRequest(e) => (400, "invalid_request_error", None, e.param, None),
            GatewayError::Key(k) => {
                let (status, code) = k.http_status_and_code();
                let kind = if status == 403 { "permission_error" } else { "authentication_error" };
                (status, kind, Some(code), None, None)
            }
            GatewayError::Credit(c) => {
                let (status, code) = c.http_status_and_code();
                let kind = match status {
                    401 => "authentication_error",
                    400 => "invalid_request_error",
                    429 => "rate_limit_error",
                    503 => "server_error",
                    _ => "permission_error",
                };
                let retry = (status == 503).then_some(1);
                (status, kind, Some(code), None, retry)
            }
            GatewayError::Budget(BudgetError::Exceeded { refusal, .. }) => {
                let kind = match refusal.kind {
                    LimitKind::TokensPerMinute => "tokens",
                    LimitKind::Requests => "requests",
                    _ => "insufficient_quota",
                };
                (429, kind, Some(refusal.kind.code()), None, Some(refusal.retry_after_s))
            }
            GatewayError::Budget(BudgetError::Table(_)) => {
                (503, "server_error", Some("budget_table_full"), None, Some(1))
            }
            GatewayError::Budget(_) => (503, "server_error", Some("budget_unavailable"), None, Some(1)),
            GatewayError::Route(RouteError::ModelNotFound(_)) => {
                (404, "invalid_request_error", Some("model_not_found"), Some("model"), None)
            }
            GatewayError::Route(RouteError::UnknownMode(_)) => {
                (400, "invalid_request_error", Some("invalid_routing_mode"), None, None)
            }
            GatewayError::Route(RouteError::NoModelAllowed(_)) => {
                (403, "permission_error", Some("model_not_allowed"), Some("model"), None)
            }
            GatewayError::Route(RouteError::Unmet(_)) => {
                (400, "invalid_request_error", Some("no_model_meets_requirements"), None, None)
            }
            GatewayError::Upstream(ProviderError::Exhausted { attempts }) => upstream_shape(attempts),
            GatewayError::Upstream(ProviderError::Unforwardable(_)) => {
                (400, "invalid_request_error", Some("unforwardable_request"), None, None)
            }
            GatewayError::Upstream(ProviderError::Untranslatable(e)) => {
                (400, "invalid_request_error", Some("unsupported_parameter"), e.param, None)
            }
            GatewayError::NotFound(_) => (404, "invalid_request_error", Some("unknown_url"), None, None),
            GatewayError::MethodNotAllowed { .. } => {
                (405, "invalid_request_error", Some("method_not_allowed"), None, None)
            }
            GatewayError::Unavailable(_) => (503, "server_error", Some("overloaded"), None, Some(1)),
            GatewayError::AuditUnavailable => (503, "server_error", Some("audit_unavailable"), None, Some(1)),
        };
        let headers = match self {
            GatewayError::Budget(BudgetError::Exceeded { view, .. }) => view.pairs(),
            _ => Vec::new(),
        };
        ErrorResponse { status, retry_after_s, body: error_json(&self.to_string(), kind, param, code), headers }
    }
}

fn upstream_shape(attempts: &[Attempt]) -> Shape {
    let skipped = |a: &&Attempt| matches!(a.outcome, AttemptOutcome::Skipped { .. });
    let tried: Vec<&Attempt> = attempts.iter().filter(|a| !skipped(a)).collect();
    if !attempts.is_empty() && tried.is_empty() {
        // Every provider told us to wait: pass that on rather than call it a failure.
        let wait = attempts
            .iter()
            .filter_map(|a| match a.outcome {
                AttemptOutcome::Skipped { retry_after_s } => Some(retry_after_s),
                _ => None,
            })
            .min();
        return (503, "server_error", Some("providers_rate_limited"), None, wait.map(|s| s.max(1)));
    }
    if !tried.is_empty() && tried.iter().all(|a| a.outcome.is_gateway_limit()) {
        // No provider was called: every pool tried was full. That is the gateway's overload.
        return (503, "server_error", Some("overloaded"), None, Some(1));
    }
    if !tried.is_empty() && tried.iter().all(|a| a.outcome.is_timeout()) {
        (504, "server_error", Some("upstream_timeout"), None, None)
    } else {
        (502, "server_error", Some("upstream_failed"), None, None)
    }
}

#[cfg(test)]
mod tests {
    use gatekeeper_net::upstream::UpstreamError;

    use super::*;

    fn body(e: &GatewayError) -> serde_json::Value {
        serde_json::from_slice(&e.to_response().body).expect("json")
    }

    fn attempt(name: &str, outcome: AttemptOutcome) -> Attempt {
        Attempt { provider: 0, provider_name: name.into(), outcome }
    }

    fn exhausted(attempts: Vec<Attempt>) -> GatewayError {
        GatewayError::Upstream(ProviderError::Exhausted { attempts })
    }

    #[test]
    fn protocol_errors_keep_their_status() {
        let e = GatewayError::from(ProtocolError::BodyTooLarge { limit_bytes: 10 });
        assert_eq!(e.to_response().status, 413);
        assert_eq!(body(&e)["error"]["code"], "body_too_large");
        assert_eq!(body(&e)["error"]["type"], "invalid_request_error");
    }

    #[test]
    fn upstream_all_timeouts_is_504_mixed_is_502() {
        let t = |p: &str| attempt(p, AttemptOutcome::Failed(UpstreamError::FirstByteTimeout));
        let s = |p: &str| attempt(p, AttemptOutcome::Status(503));
        assert_eq!(exhausted(vec![t("a"), t("b")]).to_response().status, 504);
        let e = exhausted(vec![t("a"), s("b")]);
        assert_eq!(e.to_response().status, 502);
        let msg = body(&e)["error"]["message"].as_str().unwrap_or_default().to_string();
        assert_eq!(
            msg,
            "all providers failed: a: upstream sent no response within the first-byte timeout; b: HTTP 503"
        );
    }

    #[test]
    fn all_skipped_is_503_with_retry_after() {
        let k = |p: &str, s| attempt(p, AttemptOutcome::Skipped { retry_after_s: s });
        let r = exhausted(vec![k("a", 7), k("b", 3)]).to_response();
        assert_eq!((r.status, r.retry_after_s), (503, Some(3)));
    }

    #[test]
    fn full_pools_are_overload_not_provider_failure() {
        let full = |p: &str| attempt(p, AttemptOutcome::Failed(UpstreamError::PoolExhausted));
        let skipped = attempt("c", AttemptOutcome::Skipped { retry_after_s: 9 });
        let e = exhausted(vec![full("a"), skipped, full("b")]);
        let r = e.to_response();
        assert_eq!((r.status, r.retry_after_s), (503, Some(1)));
        assert_eq!(body(&e)["error"]["code"], "overloaded");
        let mixed = exhausted(vec![full("a"), attempt("b", AttemptOutcome::Status(500))]);
        assert_eq!(mixed.to_response().status, 502, "a provider did fail");
    }

    #[test]
    fn a_request_no_provider_can_take_is_the_clients() {
        let e = GatewayError::Upstream(ProviderError::Unforwardable("header bytes".into()));
        assert_eq!(e.to_response().status, 400);
        assert_eq!(body(&e)["error"]["code"], "unforwardable_request");
    }
}
