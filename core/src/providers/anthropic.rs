//! Requests to Anthropic's Messages API: the path and the headers. The body is
//! `wire::anthropic::messages_body`, and answers go back through
//! `wire::anthropic` in `respond`.

use gatekeeper_net::Request;

use super::headers::{self, ForwardError};
use super::Provider;

/// `anthropic-version` sent when `providers[].anthropic_version` is not set.
pub const VERSION_DEFAULT: &str = "2023-06-01";

/// `max_tokens` sent when neither the client nor `providers[].max_tokens_default` set one.
pub const MAX_TOKENS_DEFAULT: u64 = 4096;

/// What a `kind: anthropic` provider needs beyond what every provider has.
#[derive(Debug, Clone)]
pub struct AnthropicSettings {
    /// Sent as `x-api-key`.
    pub api_key: Option<String>,
    /// Sent as `anthropic-version` (`providers[].anthropic_version`).
    pub version: String,
    /// `max_tokens` when the client sends none (`providers[].max_tokens_default`).
    pub max_tokens_default: u64,
    /// Path after the base URL's own path: `/v1/messages`, or `/messages` when the
    /// base URL already ends in `/v1`.
    pub path: &'static str,
}

/// The request path for a base URL whose path is `prefix` (no trailing slash): both
/// `https://api.anthropic.com` and `https://api.anthropic.com/v1` reach `/v1/messages`.
pub fn path_for(prefix: &str) -> &'static str {
    if prefix.ends_with("/v1") {
        "/messages"
    } else {
        "/v1/messages"
    }
}

/// The headers of the upstream request, into `out` (cleared first): the gateway's own,
/// the key as `x-api-key` with `anthropic-version`, then the client's the provider allows.
pub fn headers<'a>(
    out: &mut Vec<(&'a str, &'a [u8])>,
    provider: &'a Provider,
    settings: &'a AnthropicSettings,
    req: &'a Request,
    stream: bool,
    request_id: &'a str,
) -> Result<(), ForwardError> {
    headers::gateways_own(out, stream, request_id);
    out.push(("anthropic-version", settings.version.as_bytes()));
    if let Some(key) = &settings.api_key {
        out.push(("x-api-key", key.as_bytes()));
    }
    headers::forward(req, &provider.forward_headers, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_with_or_without_v1_reach_the_same_path() {
        assert_eq!(path_for(""), "/v1/messages");
        assert_eq!(path_for("/v1"), "/messages");
        assert_eq!(path_for("/proxy"), "/v1/messages");
        assert_eq!(path_for("/proxy/v1"), "/messages");
    }
}
