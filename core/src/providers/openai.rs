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
    headers::gateways_own(out, stream, request_id);
    if let Some(auth) = &provider.authorization {
        out.push(("Authorization", auth.as_bytes()));
    }
    headers::forward(req, &provider.forward_headers, out)
}
