//! Everything a request can fail with, and the one function that turns it into an
//! HTTP status and OpenAI-shaped error JSON.

use std::fmt::Write as _;

use gatekeeper_net::ProtocolError;

use crate::keys::KeyError;

/// Why the gateway refused or could not complete a request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// The client broke HTTP or a limit (from the `net` crate).
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The body is not a chat-completions request.
    #[error("{message}")]
    BadRequest {
        /// What is wrong.
        message: String,
        /// The offending field, if one.
        param: Option<&'static str>,
    },
    /// The API key was refused.
    #[error(transparent)]
    Key(#[from] KeyError),
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
    /// No deployment serves the model (or the key may not use it — the key says which).
    #[error("the model `{0}` does not exist or you do not have access to it")]
    ModelNotFound(String),
    /// Every deployment failed or was skipped.
    #[error("all providers failed: {}", summary(.attempts))]
    Upstream {
        /// What happened at each deployment, in order.
        attempts: Vec<Attempt>,
    },
    /// The gateway is shutting down or over a limit of its own.
    #[error("{0}")]
    Unavailable(&'static str),
    /// The audit log could not take the request's record, so it is not answered.
    #[error("the audit log is unavailable; the request was not completed")]
    AuditUnavailable,
}

/// One deployment tried (or skipped) while serving a request.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// Provider name.
    pub provider: String,
    /// What happened.
    pub outcome: AttemptOutcome,
}

/// How one attempt ended.
#[derive(Debug, Clone)]
pub enum AttemptOutcome {
    /// Connect, TLS or I/O failure before any answer.
    Failed(String),
    /// A connect, first-byte or read timeout.
    TimedOut(String),
    /// The provider answered with a status that allows failover (429, 5xx).
    Status(u16),
    /// Skipped: the provider asked us to wait (Retry-After) this many more seconds.
    Skipped {
        /// Seconds left until the provider may be tried again.
        retry_after_s: u64,
    },
}

impl std::fmt::Display for Attempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.outcome {
            AttemptOutcome::Failed(e) | AttemptOutcome::TimedOut(e) => write!(f, "{}: {e}", self.provider),
            AttemptOutcome::Status(s) => write!(f, "{}: HTTP {s}", self.provider),
            AttemptOutcome::Skipped { retry_after_s } => {
                write!(f, "{}: skipped (Retry-After, {retry_after_s} s left)", self.provider)
            }
        }
    }
}

fn summary(attempts: &[Attempt]) -> String {
    let mut out = String::new();
    for (i, a) in attempts.iter().enumerate() {
        if i > 0 {
            out.push_str("; ");
        }
        let _ = write!(out, "{a}");
    }
    if attempts.is_empty() {
        out.push_str("no deployment was tried");
    }
    out
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
}

impl GatewayError {
    /// The one place that decides status, OpenAI `type` and `code` for every error.
    pub fn to_response(&self) -> ErrorResponse {
        let (status, kind, code, param, retry_after_s): (u16, &str, Option<&str>, Option<&str>, Option<u64>) =
            match self {
                GatewayError::Protocol(p) => {
                    let kind = match p.status() {
                        408 => "timeout_error",
                        503 => "server_error",
                        _ => "invalid_request_error",
                    };
                    let retry = (p.status() == 503).then_some(1);
                    (p.status(), kind, Some(p.code()), None, retry)
                }
                GatewayError::BadRequest { param, .. } => (400, "invalid_request_error", None, *param, None),
                GatewayError::Key(k) => {
                    let (status, code) = k.http_status_and_code();
                    let kind = if status == 403 { "permission_error" } else { "authentication_error" };
                    (status, kind, Some(code), None, None)
                }
                GatewayError::NotFound(_) => (404, "invalid_request_error", Some("unknown_url"), None, None),
                GatewayError::MethodNotAllowed { .. } => {
                    (405, "invalid_request_error", Some("method_not_allowed"), None, None)
                }
                GatewayError::ModelNotFound(_) => {
                    (404, "invalid_request_error", Some("model_not_found"), Some("model"), None)
                }
                GatewayError::Upstream { attempts } => upstream_status(attempts),
                GatewayError::Unavailable(_) => (503, "server_error", Some("overloaded"), None, Some(1)),
                GatewayError::AuditUnavailable => (503, "server_error", Some("audit_unavailable"), None, Some(1)),
            };
        ErrorResponse { status, retry_after_s, body: error_json(&self.to_string(), kind, param, code) }
    }
}

fn upstream_status(
    attempts: &[Attempt],
) -> (u16, &'static str, Option<&'static str>, Option<&'static str>, Option<u64>) {
    let skipped_min = attempts
        .iter()
        .filter_map(|a| match a.outcome {
            AttemptOutcome::Skipped { retry_after_s } => Some(retry_after_s),
            _ => None,
        })
        .min();
    let all_skipped =
        !attempts.is_empty() && attempts.iter().all(|a| matches!(a.outcome, AttemptOutcome::Skipped { .. }));
    let tried: Vec<&Attempt> =
        attempts.iter().filter(|a| !matches!(a.outcome, AttemptOutcome::Skipped { .. })).collect();
    if all_skipped {
        // Every provider told us to wait: pass that on rather than call it a failure.
        return (503, "server_error", Some("providers_rate_limited"), None, skipped_min.map(|s| s.max(1)));
    }
    let all_timeouts = !tried.is_empty() && tried.iter().all(|a| matches!(a.outcome, AttemptOutcome::TimedOut(_)));
    if all_timeouts {
        (504, "server_error", Some("upstream_timeout"), None, None)
    } else {
        (502, "server_error", Some("upstream_failed"), None, None)
    }
}

/// `{"error":{"message","type","param","code"}}`.
pub fn error_json(message: &str, kind: &str, param: Option<&str>, code: Option<&str>) -> Vec<u8> {
    let value = serde_json::json!({
        "error": { "message": message, "type": kind, "param": param, "code": code }
    });
    serde_json::to_vec(&value).unwrap_or_else(|_| b"{\"error\":{\"message\":\"internal error\"}}".to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(e: &GatewayError) -> serde_json::Value {
        serde_json::from_slice(&e.to_response().body).expect("json")
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
        let t =
            |p: &str| Attempt { provider: p.into(), outcome: AttemptOutcome::TimedOut("first byte timeout".into()) };
        let s = |p: &str| Attempt { provider: p.into(), outcome: AttemptOutcome::Status(503) };
        let e = GatewayError::Upstream { attempts: vec![t("a"), t("b")] };
        assert_eq!(e.to_response().status, 504);
        let e = GatewayError::Upstream { attempts: vec![t("a"), s("b")] };
        let r = e.to_response();
        assert_eq!(r.status, 502);
        let msg = body(&e)["error"]["message"].as_str().unwrap_or_default().to_string();
        assert_eq!(msg, "all providers failed: a: first byte timeout; b: HTTP 503");
    }

    #[test]
    fn all_skipped_is_503_with_retry_after() {
        let k = |p: &str, s| Attempt { provider: p.into(), outcome: AttemptOutcome::Skipped { retry_after_s: s } };
        let r = GatewayError::Upstream { attempts: vec![k("a", 7), k("b", 3)] }.to_response();
        assert_eq!((r.status, r.retry_after_s), (503, Some(3)));
    }
}
