//! OpenAI's chat-completions format: the request fields the gateway reads, the
//! model splice into a provider body, OpenAI-shaped error JSON (also as an SSE
//! event), and token usage from whole answers and streams.

use std::borrow::Cow;
use std::ops::Range;

use gatekeeper_net::sse::DataLines;
use serde::de::{SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use crate::router::score::Role;

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

/// The fields of a chat-completions body the gateway reads.
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
    /// Where the `stream_options` value (an object, or `null`) sits in `body`, if the client sent one.
    pub stream_options_span: Option<Range<usize>>,
    /// Whether the client asked for the usage event at the end of a stream
    /// (`stream_options.include_usage: true`).
    pub include_usage: bool,
    /// Every text part of every message, in order (borrowed from `body` unless the
    /// JSON string had escapes). A message that is not an object is left out.
    pub texts: Vec<TextPart<'a>>,
    /// Image parts across all messages (the request needs `vision`).
    pub images: u32,
    /// Entries of `tools` (or the older `functions`).
    pub tools: u32,
    /// Whether `response_format` asks for JSON (`json_object` or `json_schema`).
    pub json_mode: bool,
}

/// One text part of one message.
#[derive(Debug, Clone)]
pub struct TextPart<'a> {
    /// Who wrote it.
    pub role: Role,
    /// Index of its message.
    pub message: u32,
    /// The text.
    pub text: Cow<'a, str>,
}

/// A JSON string, borrowed from the body when it has no escapes.
struct Str<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Str<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

/// A message's `content`: a string, a list of parts, or absent / `null`.
#[derive(Default)]
enum Content<'a> {
    #[default]
    Empty,
    Text(Cow<'a, str>),
    Parts(Vec<PartView<'a>>),
}

impl<'de: 'a, 'a> Deserialize<'de> for Content<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Content<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string, a list of content parts or null")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Content<'a>, E> {
                Ok(Content::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Content<'a>, E> {
                Ok(Content::Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Content<'a>, E> {
                Ok(Content::Text(Cow::Owned(v)))
            }
            fn visit_unit<E>(self) -> Result<Content<'a>, E> {
                Ok(Content::Empty)
            }
            fn visit_none<E>(self) -> Result<Content<'a>, E> {
                Ok(Content::Empty)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Content<'a>, A::Error> {
                let mut parts = Vec::new();
                while let Some(p) = seq.next_element::<PartView<'a>>()? {
                    parts.push(p);
                }
                Ok(Content::Parts(parts))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

#[derive(Deserialize)]
struct PartView<'a> {
    #[serde(borrow, rename = "type")]
    kind: Option<Str<'a>>,
    #[serde(borrow, default)]
    text: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct MessageView<'a> {
    #[serde(borrow, default)]
    role: Option<Str<'a>>,
    #[serde(borrow, default)]
    content: Content<'a>,
}

#[derive(Deserialize)]
struct ResponseFormatView<'a> {
    #[serde(borrow, rename = "type", default)]
    kind: Option<Str<'a>>,
}

fn role_of(name: &str) -> Role {
    match name {
        "system" | "developer" => Role::System,
        "assistant" => Role::Assistant,
        "tool" | "function" => Role::Tool,
        _ => Role::User,
    }
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
    #[serde(borrow, default, deserialize_with = "raw_even_null")]
    stream_options: Option<&'a RawValue>,
    #[serde(borrow, default)]
    tools: Option<&'a RawValue>,
    #[serde(borrow, default)]
    functions: Option<&'a RawValue>,
    #[serde(borrow, default)]
    response_format: Option<&'a RawValue>,
}

/// A present field as its raw JSON, `null` included (plain `Option` reads `null` as absent).
fn raw_even_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
struct StreamOptionsView {
    #[serde(default)]
    include_usage: Option<bool>,
}

/// Where `raw` (borrowed from `body`) sits in `body`.
fn span_of(body: &[u8], raw: &RawValue) -> Option<Range<usize>> {
    // A RawValue borrowed from `body` is a sub-slice of it, so its offset is its place.
    let start = (raw.get().as_ptr() as usize).checked_sub(body.as_ptr() as usize)?;
    let end = start.checked_add(raw.get().len())?;
    (end <= body.len()).then_some(start..end)
}

/// Reads `model`, `stream`, `max_tokens`, `stream_options` and checks `messages`,
/// validating the whole body as one JSON object.
pub fn parse_chat(body: &[u8]) -> Result<ChatRequest<'_>, RequestError> {
    let bad = |message: String, param: Option<&'static str>| RequestError { message, param };
    if body.is_empty() {
        return Err(bad("request body is empty; expected a JSON chat-completions request".into(), None));
    }
    // serde would also read a struct from a JSON array; the body must be an object.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(bad("request body must be a JSON object".into(), None));
    }
    let view: ChatView<'_> =
        serde_json::from_slice(body).map_err(|e| bad(format!("request body is not valid JSON: {e}"), None))?;
    let raw_model = view.model.ok_or_else(|| bad("you must provide a model parameter".into(), Some("model")))?;
    let model: Cow<'_, str> =
        serde_json::from_str(raw_model.get()).map_err(|_| bad("model must be a string".into(), Some("model")))?;
    if model.is_empty() {
        return Err(bad("model must not be empty".into(), Some("model")));
    }
    let messages = match view.messages.map(|m| serde_json::from_str::<Vec<&RawValue>>(m.get())) {
        Some(Ok(list)) if !list.is_empty() => list,
        Some(Ok(_)) => return Err(bad("messages must not be empty".into(), Some("messages"))),
        Some(Err(_)) => return Err(bad("messages must be an array".into(), Some("messages"))),
        None => return Err(bad("you must provide a messages parameter".into(), Some("messages"))),
    };
    let (texts, images) = message_texts(&messages);
    let count = |raw: Option<&RawValue>| {
        raw.and_then(|r| serde_json::from_str::<Vec<&RawValue>>(r.get()).ok()).map_or(0, |l| l.len())
    };
    let tools = u32::try_from(count(view.tools).max(count(view.functions))).unwrap_or(u32::MAX);
    let json_mode = view
        .response_format
        .and_then(|r| serde_json::from_str::<ResponseFormatView<'_>>(r.get()).ok())
        .and_then(|f| f.kind)
        .is_some_and(|k| k.0 == "json_object" || k.0 == "json_schema");
    let internal = || bad("request body could not be read".into(), None);
    let model_span = span_of(body, raw_model).ok_or_else(internal)?;
    let (stream_options_span, include_usage) = match view.stream_options {
        // `"stream_options": null` means no options; its span is kept so an edit replaces it.
        Some(raw) if raw.get() == "null" => (Some(span_of(body, raw).ok_or_else(internal)?), false),
        Some(raw) => {
            let opts: StreamOptionsView = serde_json::from_str(raw.get())
                .map_err(|_| bad("stream_options must be an object".into(), Some("stream_options")))?;
            (Some(span_of(body, raw).ok_or_else(internal)?), opts.include_usage.unwrap_or(false))
        }
        _ => (None, false),
    };
    Ok(ChatRequest {
        body,
        model,
        model_span,
        stream: view.stream.unwrap_or(false),
        max_tokens: view.max_completion_tokens.or(view.max_tokens),
        stream_options_span,
        include_usage,
        texts,
        images,
        tools,
        json_mode,
    })
}

/// The text parts of `messages` and the number of image parts. A message that does
/// not read as `{role, content}` is skipped rather than refused: the gateway forwards
/// bodies it does not fully understand, and the provider judges them.
fn message_texts<'a>(messages: &[&'a RawValue]) -> (Vec<TextPart<'a>>, u32) {
    let mut texts = Vec::with_capacity(messages.len());
    let mut images = 0u32;
    for (i, raw) in messages.iter().enumerate() {
        let Ok(m) = serde_json::from_str::<MessageView<'a>>(raw.get()) else { continue };
        let role = m.role.as_ref().map_or(Role::User, |r| role_of(&r.0));
        let message = u32::try_from(i).unwrap_or(u32::MAX);
        match m.content {
            Content::Empty => {}
            Content::Text(text) => texts.push(TextPart { role, message, text }),
            Content::Parts(parts) => {
                for p in parts {
                    match (p.kind.as_ref().map(|k| k.0.as_ref()), p.text) {
                        (Some("image_url" | "image" | "input_image"), _) => images = images.saturating_add(1),
                        (_, Some(text)) => texts.push(TextPart { role, message, text: text.0 }),
                        _ => {}
                    }
                }
            }
        }
    }
    (texts, images)
}

/// The edit that makes a stream end with its usage event when the client did not
/// ask for it: the client's `stream_options` with `include_usage: true` (replacing
/// the client's value), or a whole `"stream_options":{…},` member to add. `None`
/// when nothing needs changing (not a stream, or the client asked already).
pub fn stream_usage_edit(chat: &ChatRequest<'_>) -> Option<Vec<u8>> {
    if !chat.stream || chat.include_usage {
        return None;
    }
    let mut options = match &chat.stream_options_span {
        Some(span) => serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&chat.body[span.clone()])
            .unwrap_or_default(),
        None => serde_json::Map::new(),
    };
    options.insert("include_usage".into(), serde_json::Value::Bool(true));
    let value = serde_json::to_vec(&options).ok()?;
    if chat.stream_options_span.is_some() {
        return Some(value);
    }
    let mut member = b"\"stream_options\":".to_vec();
    member.extend_from_slice(&value);
    member.push(b',');
    Some(member)
}

/// The body sent upstream, as pieces written back to back: the client's body with
/// its `model` replaced by the deployment's upstream id and, when given, the
/// [`stream_usage_edit`] applied — nothing copied until the pool writes.
pub fn upstream_body<'a>(
    chat: &ChatRequest<'a>,
    upstream_model_json: &'a str,
    usage_edit: Option<&'a [u8]>,
) -> [&'a [u8]; 5] {
    let body = chat.body;
    let m = chat.model_span.clone();
    let model = upstream_model_json.as_bytes();
    let Some(edit) = usage_edit else {
        return [&body[..m.start], model, &body[m.end..], b"", b""];
    };
    match chat.stream_options_span.clone() {
        Some(s) if s.start >= m.end => [&body[..m.start], model, &body[m.end..s.start], edit, &body[s.end..]],
        Some(s) => [&body[..s.start], edit, &body[s.end..m.start], model, &body[m.end..]],
        None => {
            // Added as the object's first member: the body is an object holding at
            // least `model` and `messages`, so the member's trailing comma is right.
            let open = body.iter().position(|b| *b == b'{').map_or(0, |i| i + 1).min(m.start);
            [&body[..open], edit, &body[open..m.start], model, &body[m.end..]]
        }
    }
}

/// `{"error":{"message","type","param","code"}}`.
pub fn error_json(message: &str, kind: &str, param: Option<&str>, code: Option<&str>) -> Vec<u8> {
    let value = serde_json::json!({
        "error": { "message": message, "type": kind, "param": param, "code": code }
    });
    serde_json::to_vec(&value).unwrap_or_else(|_| b"{\"error\":{\"message\":\"internal error\"}}".to_vec())
}

/// An SSE event carrying an OpenAI-shaped error with `code` (what OpenAI's SDKs raise on).
pub fn stream_error_event(message: &str, code: &str) -> Vec<u8> {
    let json = error_json(message, "server_error", None, Some(code));
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

#[derive(Deserialize)]
struct WithUsage {
    #[serde(default)]
    usage: Option<Usage>,
    /// Groq's streams report usage here on their last chunk, asked or not.
    #[serde(default)]
    x_groq: Option<GroqExtra>,
}

#[derive(Deserialize)]
struct GroqExtra {
    #[serde(default)]
    usage: Option<Usage>,
}

/// The `usage` block of a chat-completions JSON body (or chunk), if it has one; Groq's
/// `x_groq.usage` when the standard one is missing.
pub fn usage_from_body(body: &[u8]) -> Option<Usage> {
    let w = serde_json::from_slice::<WithUsage>(body).ok()?;
    w.usage.or(w.x_groq.and_then(|g| g.usage))
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

/// Longest event held back while deciding whether to strip it, bytes. A longer one
/// is passed on as it is (it cannot be a usage event).
pub const EVENT_BYTES_MAX: usize = 64 * 1024;

/// Removes the usage-only event (`"choices":[]` with a `usage` object) from a relayed
/// stream, for clients that did not ask for it while the gateway did (to count
/// every stream's tokens). Events pass on whole as soon as their blank line arrives;
/// only a trailing partial event is held back.
#[derive(Debug, Default)]
pub struct UsageEventFilter {
    pending: Vec<u8>,
    /// The pending event outgrew [`EVENT_BYTES_MAX`]: passed on up to its end.
    passing: bool,
}

impl UsageEventFilter {
    /// Feeds the next piece; appends to `out` what the client gets now.
    pub fn feed(&mut self, mut piece: &[u8], out: &mut Vec<u8>) {
        while !piece.is_empty() {
            if self.passing {
                match find_event_end(&self.pending, piece) {
                    Some(n) => {
                        out.extend_from_slice(&piece[..n]);
                        piece = &piece[n..];
                        self.passing = false;
                        self.pending.clear();
                    }
                    None => {
                        out.extend_from_slice(piece);
                        // Keep the tail: a blank line may straddle two pieces.
                        keep_tail(&mut self.pending, piece);
                        return;
                    }
                }
                continue;
            }
            match find_event_end(&self.pending, piece) {
                Some(n) => {
                    self.pending.extend_from_slice(&piece[..n]);
                    piece = &piece[n..];
                    if !is_usage_only_event(&self.pending) {
                        out.extend_from_slice(&self.pending);
                    }
                    self.pending.clear();
                }
                None if self.pending.len().saturating_add(piece.len()) > EVENT_BYTES_MAX => {
                    out.extend_from_slice(&self.pending);
                    out.extend_from_slice(piece);
                    self.pending.clear();
                    keep_tail(&mut self.pending, piece);
                    self.passing = true;
                    return;
                }
                None => {
                    self.pending.extend_from_slice(piece);
                    return;
                }
            }
        }
    }

    /// What is still held back at the end of the stream (an unterminated event).
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.passing {
            out.extend_from_slice(&self.pending);
        }
        self.pending.clear();
    }
}

/// Keeps the last bytes of `piece` in `tail` (enough to find a `\r\n\r\n` across pieces).
fn keep_tail(tail: &mut Vec<u8>, piece: &[u8]) {
    tail.clear();
    tail.extend_from_slice(&piece[piece.len().saturating_sub(3)..]);
}

/// Bytes of `piece` up to and including the blank line that ends the event begun in
/// `pending` (which holds the event's earlier bytes, or the tail of passed bytes).
fn find_event_end(pending: &[u8], piece: &[u8]) -> Option<usize> {
    // The last two bytes seen before `piece`, to catch a `\n\n` or `\n\r\n` split.
    let mut prev = [pending.len().checked_sub(2).map(|i| pending[i]), pending.last().copied()];
    for (i, &b) in piece.iter().enumerate() {
        if b == b'\n' && (prev[1] == Some(b'\n') || (prev[1] == Some(b'\r') && prev[0] == Some(b'\n'))) {
            return Some(i + 1);
        }
        prev = [prev[1], Some(b)];
    }
    None
}

/// Whether one SSE event is the usage-only chunk of an OpenAI stream.
fn is_usage_only_event(event: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct UsageChunk<'a> {
        #[serde(borrow, default)]
        choices: Option<Vec<&'a RawValue>>,
        #[serde(default)]
        usage: Option<Usage>,
    }
    let mut data = event.split(|b| *b == b'\n').filter_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        line.strip_prefix(b"data:").map(|d| d.strip_prefix(b" ").unwrap_or(d))
    });
    let (Some(payload), None) = (data.next(), data.next()) else { return false };
    if !contains(payload, b"\"usage\"") {
        return false;
    }
    matches!(
        serde_json::from_slice::<UsageChunk<'_>>(payload),
        Ok(UsageChunk { choices: Some(c), usage: Some(_) }) if c.is_empty()
    )
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
        let spliced = upstream_body(&chat, "\"llama-3.1-8b\"", None).concat();
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
        let ev = stream_error_event("boom", "upstream_stream_error");
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
        let groq = br#"{"choices":[],"x_groq":{"id":"req_1","usage":{"prompt_tokens":4,"completion_tokens":2}}}"#;
        assert_eq!(usage_from_body(groq), Some(Usage { prompt_tokens: 4, completion_tokens: 2 }));
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

    const STREAM: &[u8] = b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n";

    #[test]
    fn usage_event_is_stripped_wherever_the_stream_is_cut() {
        let want: &[u8] = b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\ndata: [DONE]\n\n";
        for cut in 0..STREAM.len() {
            for cut2 in cut..STREAM.len() {
                let mut f = UsageEventFilter::default();
                let mut out = Vec::new();
                f.feed(&STREAM[..cut], &mut out);
                f.feed(&STREAM[cut..cut2], &mut out);
                f.feed(&STREAM[cut2..], &mut out);
                f.finish(&mut out);
                assert_eq!(out, want, "cuts at {cut}, {cut2}");
            }
        }
        let crlf = String::from_utf8_lossy(STREAM).replace('\n', "\r\n");
        let mut f = UsageEventFilter::default();
        let mut out = Vec::new();
        f.feed(crlf.as_bytes(), &mut out);
        f.finish(&mut out);
        assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(want).replace('\n', "\r\n"));
    }

    #[test]
    fn oversized_events_pass_untouched() {
        let big = format!("data: {{\"choices\":[],\"x\":\"{}\"}}\n\n", "a".repeat(EVENT_BYTES_MAX));
        let wire = [big.as_bytes(), STREAM].concat();
        let mut out = Vec::new();
        let mut f = UsageEventFilter::default();
        for piece in wire.chunks(1000) {
            f.feed(piece, &mut out);
        }
        f.finish(&mut out);
        assert!(out.starts_with(big.as_bytes()));
        assert!(!String::from_utf8_lossy(&out).contains("prompt_tokens"));
    }

    #[test]
    fn usage_edit_adds_or_merges_stream_options() {
        let edited = |body: &str| {
            let chat = parse_chat(body.as_bytes()).expect("valid");
            let edit = stream_usage_edit(&chat);
            let sent = upstream_body(&chat, "\"up\"", edit.as_deref()).concat();
            serde_json::from_slice::<serde_json::Value>(&sent).expect("still JSON")
        };
        let v = edited(r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"x"}]}"#);
        assert_eq!((v["model"].as_str(), v["stream_options"]["include_usage"].as_bool()), (Some("up"), Some(true)));
        let v = edited(r#" { "stream_options": {"foo": 1}, "model":"m","stream":true,"messages":[{}]}"#);
        assert_eq!(v["stream_options"], serde_json::json!({"foo": 1, "include_usage": true}));
        assert_eq!(v["model"], "up");
        let v = edited(r#"{"model":"m","stream":true,"messages":[{}],"stream_options":{"include_usage":false}}"#);
        assert_eq!(v["stream_options"]["include_usage"], true);
        let v = edited(r#"{"model":"m","stream":true,"messages":[{}],"stream_options":null}"#);
        assert_eq!(v["stream_options"]["include_usage"], true);
        let asked =
            parse_chat(br#"{"model":"m","stream":true,"messages":[{}],"stream_options":{"include_usage":true}}"#);
        assert!(asked.is_ok_and(|c| c.include_usage && stream_usage_edit(&c).is_none()));
        let plain = parse_chat(br#"{"model":"m","messages":[{}]}"#).expect("valid");
        assert!(stream_usage_edit(&plain).is_none());
        assert!(parse_chat(br#"{"model":"m","messages":[{}],"stream_options":5}"#).is_err());
    }

    proptest::proptest! {
        #[test]
        fn usage_filter_never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..512), cut in 0usize..512) {
            let mut f = UsageEventFilter::default();
            let mut out = Vec::new();
            let cut = cut.min(data.len());
            f.feed(&data[..cut], &mut out);
            f.feed(&data[cut..], &mut out);
            f.finish(&mut out);
        }
    }
}
