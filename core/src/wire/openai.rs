//! OpenAI's chat-completions format: the request fields the gateway reads, the
//! model splice into a provider body, OpenAI-shaped error JSON (also as an SSE
//! event), and token usage from whole answers and streams.

use std::borrow::Cow;
use std::ops::Range;

use gatekeeper_net::sse::DataLines;
use serde::Deserialize;
use serde_json::value::RawValue;

/// A body that is not a chat-completions request: answered 400 with `param` naming
/// the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RequestError {
    /// What is wrong.
    pub message: String,
    /// The offending field, if one.
    pub param: Option<&'static str>,
}

/// The fields of a chat-completions body the gateway reads .
#[derive(Debug)]
pub struct ChatRequest<'a> {
    /// The body as the client sent it.
    pub body: &'a [u8],
    /// Requested model name.
    pub model: Cow<'a, str>,
    /// Where the `model` value (with its quotes) sits in `body`, so it can be replaced without re-serializing.
    pub model_span: Range<usize>,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// `max_tokens` or `max_completion_tokens`, if given.
    pub max_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct ChatView<'a> {
    #[serde(borrow)]
    model: Option<&'a RawValue>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(borrow, default)]
    messages: Option<&'a RawValue>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
}

/// Reads `model`, `stream`, `max_tokens` and checks `messages`, validating the whole body as JSON.
pub fn parse_chat(body: &[u8]) -> Result<ChatRequest<'_>, RequestError> {
    let bad = |message: String, param: Option<&'static str>| RequestError { message, param };
    if body.is_empty() {
        return Err(bad("request body is empty; expected a JSON chat-completions request".into(), None));
    }
    let view: ChatView<'_> =
        serde_json::from_slice(body).map_err(|e| bad(format!("request body is not valid JSON: {e}"), None))?;
    let raw_model = view.model.ok_or_else(|| bad("you must provide a model parameter".into(), Some("model")))?;
    let model: Cow<'_, str> =
        serde_json::from_str(raw_model.get()).map_err(|_| bad("model must be a string".into(), Some("model")))?;
    if model.is_empty() {
        return Err(bad("model must not be empty".into(), Some("model")));
    }
    match view.messages.map(|m| serde_json::from_str::<Vec<&RawValue>>(m.get())) {
        Some(Ok(list)) if !list.is_empty() => {}
        Some(Ok(_)) => return Err(bad("messages must not be empty".into(), Some("messages"))),
        Some(Err(_)) => return Err(bad("messages must be an array".into(), Some("messages"))),
        None => return Err(bad("you must provide a messages parameter".into(), Some("messages"))),
    }
    // RawValue borrowed from `body` is a sub-slice of it, so its offset is its place in the body.
    let start = raw_model.get().as_ptr() as usize - body.as_ptr() as usize;
    let model_span = start..start + raw_model.get().len();
    debug_assert!(model_span.end <= body.len());
    Ok(ChatRequest {
        body,
        model,
        model_span,
        stream: view.stream.unwrap_or(false),
        max_tokens: view.max_completion_tokens.or(view.max_tokens),
    })
}

/// The client's body with its `model` value replaced by the deployment's upstream id, as
/// three pieces sent back to back: nothing is copied until the pool writes its request.
pub fn splice_model<'a>(chat: &ChatRequest<'a>, upstream_model_json: &'a str) -> [&'a [u8]; 3] {
    let body = chat.body;
    [&body[..chat.model_span.start], upstream_model_json.as_bytes(), &body[chat.model_span.end..]]
}

/// `{"error":{"message","type","param","code"}}`.
pub fn error_json(message: &str, kind: &str, param: Option<&str>, code: Option<&str>) -> Vec<u8> {
    let value = serde_json::json!({
        "error": { "message": message, "type": kind, "param": param, "code": code }
    });
    serde_json::to_vec(&value).unwrap_or_else(|_| b"{\"error\":{\"message\":\"internal error\"}}".to_vec())
}

/// An SSE event carrying an OpenAI-shaped error (what OpenAI's SDKs raise on).
pub fn stream_error_event(message: &str) -> Vec<u8> {
    let json = error_json(message, "server_error", None, Some("upstream_stream_error"));
    let mut event = Vec::with_capacity(json.len() + 10);
    event.extend_from_slice(b"\n\ndata: ");
    event.extend_from_slice(&json);
    event.extend_from_slice(b"\n\n");
    event
}

/// Prompt and completion tokens of one answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Usage {
    /// Tokens in the prompt.
    #[serde(default)]
    pub prompt_tokens: u64,
    /// Tokens generated.
    #[serde(default)]
    pub completion_tokens: u64,
}

impl Usage {
    /// USD cost at the given prices per 1,000 tokens.
    pub fn cost_usd(&self, price_per_1k_input: f64, price_per_1k_output: f64) -> f64 {
        (self.prompt_tokens as f64 * price_per_1k_input + self.completion_tokens as f64 * price_per_1k_output) / 1000.0
    }
}

#[derive(Deserialize)]
struct WithUsage {
    #[serde(default)]
    usage: Option<Usage>,
}

/// The `usage` block of a chat-completions JSON body, if it has one.
pub fn usage_from_body(body: &[u8]) -> Option<Usage> {
    serde_json::from_slice::<WithUsage>(body).ok()?.usage
}

/// Watches a relayed SSE stream for the event carrying `usage`
/// (sent last when the client asked for `stream_options.include_usage`).
#[derive(Debug, Default)]
pub struct StreamUsage {
    lines: DataLines,
    usage: Option<Usage>,
}

impl StreamUsage {
    /// Looks at the next relayed piece.
    pub fn feed(&mut self, piece: &[u8]) {
        let usage = &mut self.usage;
        self.lines.feed(piece, |data| {
            // Only events that mention usage are parsed; the rest pass untouched.
            if contains(data, b"\"usage\"") {
                if let Some(u) = usage_from_body(data) {
                    *usage = Some(u);
                }
            }
        });
    }

    /// The last usage seen.
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_finds_model_span() {
        let body = br#"{"messages":[{"role":"user","content":"hi"}], "model" : "gpt-4o-mini","stream":true}"#;
        let chat = parse_chat(body).expect("valid");
        assert_eq!(chat.model, "gpt-4o-mini");
        assert_eq!(&body[chat.model_span.clone()], br#""gpt-4o-mini""#);
        assert!(chat.stream);
        let spliced = splice_model(&chat, "\"llama-3.1-8b\"").concat();
        let v: serde_json::Value = serde_json::from_slice(&spliced).expect("still JSON");
        assert_eq!(v["model"], "llama-3.1-8b");
        assert_eq!(v["messages"][0]["content"], "hi");
    }

    #[test]
    fn escaped_model_names_decode() {
        let body = br#"{"model":"gpt\u002d4","messages":[{"role":"user","content":"x"}]}"#;
        assert_eq!(parse_chat(body).expect("valid").model, "gpt-4");
    }

    #[test]
    fn bad_bodies_name_the_param() {
        let param = |b: &[u8]| match parse_chat(b) {
            Err(RequestError { param, .. }) => param,
            other => panic!("expected BadRequest, got {other:?}"),
        };
        assert_eq!(param(b""), None);
        assert_eq!(param(b"{not json"), None);
        assert_eq!(param(b"[1,2]"), None);
        assert_eq!(param(br#"{"messages":[{"role":"user","content":"x"}]}"#), Some("model"));
        assert_eq!(param(br#"{"model":5,"messages":[{}]}"#), Some("model"));
        assert_eq!(param(br#"{"model":"m"}"#), Some("messages"));
        assert_eq!(param(br#"{"model":"m","messages":[]}"#), Some("messages"));
        assert_eq!(param(br#"{"model":"m","messages":{}}"#), Some("messages"));
        assert_eq!(param(br#"{"model":"m","model":"n","messages":[{}]}"#), None);
        assert_eq!(param(br#"{"model":"m","messages":[{}]} trailing"#), None);
    }

    #[test]
    fn stream_error_event_is_sse_json() {
        let ev = stream_error_event("boom");
        let text = String::from_utf8(ev).expect("utf8");
        let data = text.trim().strip_prefix("data: ").expect("data line");
        let v: serde_json::Value = serde_json::from_str(data).expect("json");
        assert_eq!(v["error"]["code"], "upstream_stream_error");
    }

    proptest::proptest! {
        #[test]
        fn parse_chat_never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = parse_chat(&data);
        }
    }

    #[test]
    fn reads_usage_from_a_body() {
        let body = br#"{"id":"x","usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}}"#;
        assert_eq!(usage_from_body(body), Some(Usage { prompt_tokens: 7, completion_tokens: 3 }));
        assert_eq!(usage_from_body(b"{\"id\":1}"), None);
        assert_eq!(usage_from_body(b"not json"), None);
    }

    #[test]
    fn reads_usage_from_a_stream_split_anywhere() {
        let wire: &[u8] = b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n";
        for cut in 0..wire.len() {
            let mut s = StreamUsage::default();
            s.feed(&wire[..cut]);
            s.feed(&wire[cut..]);
            assert_eq!(s.usage(), Some(Usage { prompt_tokens: 5, completion_tokens: 2 }), "cut at {cut}");
        }
    }

    #[test]
    fn cost_uses_both_prices() {
        let u = Usage { prompt_tokens: 1000, completion_tokens: 2000 };
        assert!((u.cost_usd(0.5, 1.0) - 2.5).abs() < 1e-12);
    }
}
