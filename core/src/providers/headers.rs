//! Which client headers reach a provider: an allowlist per provider
//! (`providers[].forward_headers`), never a hop-by-hop header, a header the client's
//! `Connection` names, a credential, or one the gateway sets itself. Everything else
//! a client sends stays at the gateway — it must not choose, say, which
//! `OpenAI-Organization` the operator's key bills.

use gatekeeper_net::Request;

/// Forwarded when a provider names no list of its own.
pub const DEFAULT_FORWARD_HEADERS: [&str; 3] = ["user-agent", "openai-beta", "accept-language"];

/// Longest client header value forwarded, bytes.
pub const FORWARD_VALUE_BYTES_MAX: usize = 4096;

/// Most client header bytes (names and values) forwarded to one provider.
pub const FORWARD_BYTES_MAX: usize = 16 * 1024;

/// Names no allowlist may contain: hop-by-hop and framing headers, credentials, and
/// what the gateway writes itself.
pub const NEVER_FORWARDED: [&str; 19] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "authorization",
    "x-api-key",
    "api-key",
    "cookie",
    "accept-encoding",
    "content-type",
    "x-request-id",
];

/// One allowlist entry: an exact name, or a prefix (`x-stainless-*`). Lowercase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderRule {
    /// This name exactly.
    Exact(String),
    /// Every name starting with this.
    Prefix(String),
}

impl HeaderRule {
    /// Parses a config entry; `Err` says why it cannot be forwarded.
    pub fn parse(entry: &str) -> Result<HeaderRule, String> {
        let lower = entry.to_ascii_lowercase();
        let (name, prefix) = match lower.strip_suffix('*') {
            Some(p) => (p.to_string(), true),
            None => (lower, false),
        };
        let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'+-.^_`|~".contains(&b);
        if name.is_empty() || !name.bytes().all(token) {
            return Err(format!("`{entry}` is not a header name (or a prefix ending in `*`)"));
        }
        let blocked = NEVER_FORWARDED.iter().find(|n| if prefix { n.starts_with(&name) } else { **n == name });
        if let Some(n) = blocked {
            return Err(format!("`{n}` is never forwarded (hop-by-hop, a credential, or set by the gateway)"));
        }
        Ok(if prefix { HeaderRule::Prefix(name) } else { HeaderRule::Exact(name) })
    }

    fn matches(&self, name: &str) -> bool {
        match self {
            HeaderRule::Exact(n) => name.eq_ignore_ascii_case(n),
            HeaderRule::Prefix(p) => {
                name.len() >= p.len() && name.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes())
            }
        }
    }
}

/// Why a client header cannot be forwarded: the request is refused (400) before
/// any provider is called, and no provider is blamed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    /// One forwarded header's value is too long.
    #[error("header {0} is longer than {FORWARD_VALUE_BYTES_MAX} bytes")]
    ValueTooLong(String),
    /// The forwarded headers together are too long.
    #[error("forwarded headers exceed {FORWARD_BYTES_MAX} bytes")]
    TooLong,
}

/// Appends to `out` the client headers `rules` allow, skipping any named in the
/// client's `Connection` header.
pub fn forward<'r>(
    req: &'r Request,
    rules: &[HeaderRule],
    out: &mut Vec<(&'r str, &'r [u8])>,
) -> Result<(), ForwardError> {
    let connection = req.header("connection").unwrap_or_default();
    let mut total = 0usize;
    for (name, value) in req.headers() {
        if !rules.iter().any(|r| r.matches(name)) || names_in(connection, name) {
            continue;
        }
        if value.len() > FORWARD_VALUE_BYTES_MAX {
            return Err(ForwardError::ValueTooLong(name.chars().take(64).collect()));
        }
        total = total.saturating_add(name.len()).saturating_add(value.len());
        if total > FORWARD_BYTES_MAX {
            return Err(ForwardError::TooLong);
        }
        out.push((name, value));
    }
    Ok(())
}

/// Whether the comma-separated `Connection` value lists `name`.
fn names_in(connection: &[u8], name: &str) -> bool {
    connection.split(|b| *b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(name.as_bytes()))
}

/// Starts the upstream request's headers in `out` (cleared first, so one buffer serves
/// every attempt) with the gateway's own, whatever the provider's kind: JSON in, JSON or
/// SSE out, the request id, and no compressed answers — the relay reads usage from
/// answers (and translates some) and labels them itself.
pub fn gateways_own<'a>(out: &mut Vec<(&'a str, &'a [u8])>, stream: bool, request_id: &'a str) {
    out.clear();
    let accept: &'static [u8] = if stream { b"text/event-stream" } else { b"application/json" };
    out.push(("Content-Type", b"application/json"));
    out.push(("Accept", accept));
    out.push(("Accept-Encoding", b"identity"));
    out.push(("X-Request-Id", request_id.as_bytes()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_refuse_what_must_never_be_forwarded() {
        assert_eq!(HeaderRule::parse("User-Agent"), Ok(HeaderRule::Exact("user-agent".into())));
        assert_eq!(HeaderRule::parse("x-stainless-*"), Ok(HeaderRule::Prefix("x-stainless-".into())));
        assert!(HeaderRule::parse("Authorization").is_err());
        assert!(HeaderRule::parse("x-request-id").is_err());
        assert!(HeaderRule::parse("con*").is_err(), "a prefix covering `connection`");
        assert!(HeaderRule::parse("bad name").is_err());
        assert!(HeaderRule::parse("*").is_err());
        assert!(HeaderRule::Prefix("x-s-".into()).matches("X-S-Lang"));
        assert!(!HeaderRule::Prefix("x-s-".into()).matches("x-s"));
    }

    #[test]
    fn connection_names_are_split_and_trimmed() {
        assert!(names_in(b"keep-alive, OpenAI-Beta", "openai-beta"));
        assert!(!names_in(b"keep-alive", "openai-beta"));
    }
}
