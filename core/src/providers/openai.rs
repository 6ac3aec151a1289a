//! Requests to OpenAI and OpenAI-compatible providers (Groq, DeepSeek, vLLM, …):
//! the path and the headers. The body is `wire::openai::upstream_body`.

use gatekeeper_net::Request;

use super::headers::{self, ForwardError};
use super::Provider;

/// Path appended to the provider's base URL.
pub const PATH: &str = "/chat/completions";

/// The headers of the upstream request, into `out` (cleared first, so one buffer
/// serves every attempt): the gateway's own, then the client's the provider allows.
pub fn headers<'a>(
    out: &mut Vec<(&'a str, &'a [u8])>,
    provider: &'a Provider,
    req: &'a Request,
    stream: bool,
    request_id: &'a str,
) -> Result<(), ForwardError> {
    out.clear();
    let accept: &'static [u8] = if stream { b"text/event-stream" } else { b"application/json" };
    out.push(("Content-Type", b"application/json"));
    out.push(("Accept", accept));
    // The relay reads usage from answers and labels them itself: no compressed bodies.
    out.push(("Accept-Encoding", b"identity"));
    out.push(("X-Request-Id", request_id.as_bytes()));
    if let Some(auth) = &provider.authorization {
        out.push(("Authorization", auth.as_bytes()));
    }
    headers::forward(req, &provider.forward_headers, out)
}
