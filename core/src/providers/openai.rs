//! Requests to OpenAI and OpenAI-compatible providers (Groq, DeepSeek, vLLM, …):
//! the path, the headers, and the client's body with its model replaced.

use gatekeeper_net::Request;

use super::Provider;
use crate::router::Deployment;
use crate::wire::openai::{splice_model, ChatRequest};

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

/// The body: the client's, with `model` replaced by the deployment's upstream id, as
/// pieces written back to back (nothing copied per attempt).
pub fn body<'a>(chat: &ChatRequest<'a>, deployment: &'a Deployment) -> [&'a [u8]; 3] {
    splice_model(chat, &deployment.upstream_model_json)
}
