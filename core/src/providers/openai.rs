//! Requests to OpenAI and OpenAI-compatible providers (Groq, DeepSeek, vLLM, …):
//! the path and the headers. The body is `wire::openai::upstream_body`.

use gatekeeper_net::Request;

use super::Provider;

/// Path appended to the provider's base URL.
pub const PATH: &str = "/chat/completions";

/// Client headers never forwarded upstream: hop-by-hop, framing, the client's own
/// credential, and what the gateway sets itself.
const NOT_FORWARDED: [&str; 17] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "authorization",
    "cookie",
    "accept-encoding",
    "content-type",
    "x-request-id",
    "x-routing-mode",
];

/// The headers of the upstream request, into `out` (cleared first, so one buffer
/// serves every attempt).
pub fn headers<'a>(
    out: &mut Vec<(&'a str, &'a [u8])>,
    provider: &'a Provider,
    req: &'a Request,
    stream: bool,
    request_id: &'a str,
) {
    out.clear();
    let accept: &'static [u8] = if stream { b"text/event-stream" } else { b"application/json" };
    out.push(("Content-Type", b"application/json"));
    out.push(("Accept", accept));
    out.push(("X-Request-Id", request_id.as_bytes()));
    if let Some(auth) = &provider.authorization {
        out.push(("Authorization", auth.as_bytes()));
    }
    out.extend(req.headers().filter(|(n, _)| !NOT_FORWARDED.iter().any(|x| n.eq_ignore_ascii_case(x))));
}
