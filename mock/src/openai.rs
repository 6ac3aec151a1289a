//! OpenAI Chat Completions wire format, with the Groq (`x_groq`, timing usage) and
//! DeepSeek (prompt-cache usage) variants.

use serde::Serialize;

use crate::config::Mode;
use crate::request::{token, Answer};

#[derive(Serialize)]
struct Usage {
    #[serde(skip_serializing_if = "Option::is_none")]
    queue_time: Option<f64>,
    prompt_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_time: Option<f64>,
    completion_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    completion_time: Option<f64>,
    total_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    total_time: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_tokens_details: Option<PromptDetails>,
    #[serde(skip_serializing_if = "Option::is_none")]
    completion_tokens_details: Option<CompletionDetails>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_cache_hit_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_cache_miss_tokens: Option<u64>,
}

#[derive(Serialize)]
struct PromptDetails {
    cached_tokens: u64,
}

#[derive(Serialize)]
struct CompletionDetails {
    reasoning_tokens: u64,
}

fn usage(mode: Mode, a: &Answer) -> Usage {
    let completion = a.completion_tokens as u64;
    let mut u = Usage {
        queue_time: None,
        prompt_tokens: a.prompt_tokens,
        prompt_time: None,
        completion_tokens: completion,
        completion_time: None,
        total_tokens: a.total_tokens(),
        total_time: None,
        prompt_tokens_details: None,
        completion_tokens_details: None,
        prompt_cache_hit_tokens: None,
        prompt_cache_miss_tokens: None,
    };
    match mode {
        Mode::Groq => {
            // Plausible Groq LPU timings: ~20k prompt tok/s, ~500 output tok/s.
            let prompt_time = a.prompt_tokens as f64 / 20_000.0;
            let completion_time = completion as f64 / 500.0;
            u.queue_time = Some(0.012);
            u.prompt_time = Some(prompt_time);
            u.completion_time = Some(completion_time);
            u.total_time = Some(prompt_time + completion_time);
        }
        Mode::DeepSeek => {
            u.prompt_tokens_details = Some(PromptDetails { cached_tokens: 0 });
            u.prompt_cache_hit_tokens = Some(0);
            u.prompt_cache_miss_tokens = Some(a.prompt_tokens);
        }
        Mode::OpenAi | Mode::Anthropic => {
            u.prompt_tokens_details = Some(PromptDetails { cached_tokens: 0 });
            u.completion_tokens_details = Some(CompletionDetails { reasoning_tokens: 0 });
        }
    }
    u
}

#[derive(Serialize)]
struct XGroq {
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: &'a str,
    /// DeepSeek's reasoner: its chain of thought beside the answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'static str>,
    refusal: Option<()>,
}

/// What DeepSeek's reasoner thinks before it answers (the mock's is fixed).
pub const REASONING: &str = "The user wants a placeholder answer.";

/// DeepSeek's reasoning models (`deepseek-reasoner`) send `reasoning_content`.
fn reasoning(mode: Mode, a: &Answer) -> Option<&'static str> {
    (mode == Mode::DeepSeek && a.model.contains("reasoner")).then_some(REASONING)
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u32,
    message: Message<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct Completion<'a> {
    id: String,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [Choice<'a>; 1],
    usage: Usage,
    system_fingerprint: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    x_groq: Option<XGroq>,
}

const FINGERPRINT: &str = "fp_mock0000";

fn chat_id(a: &Answer) -> String {
    format!("chatcmpl-mock{:016x}", a.id)
}

fn groq_id(a: &Answer) -> String {
    format!("req_mock{:016x}", a.id)
}

fn finish_reason(a: &Answer) -> &'static str {
    if a.truncated {
        "length"
    } else {
        "stop"
    }
}

/// The body of a non-streamed `chat.completion`.
pub fn completion_body(mode: Mode, a: &Answer) -> Vec<u8> {
    let content = a.content();
    let body = Completion {
        id: chat_id(a),
        object: "chat.completion",
        created: a.created,
        model: &a.model,
        choices: [Choice {
            index: 0,
            message: Message {
                role: "assistant",
                content: &content,
                reasoning_content: reasoning(mode, a),
                refusal: None,
            },
            logprobs: None,
            finish_reason: finish_reason(a),
        }],
        usage: usage(mode, a),
        system_fingerprint: FINGERPRINT,
        x_groq: (mode == Mode::Groq).then(|| XGroq { id: groq_id(a), usage: None }),
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

#[derive(Serialize)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'static str>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize)]
struct Chunk<'a> {
    id: String,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: &'static str,
    choices: Vec<ChunkChoice<'a>>,
    /// Present (null or a value) only when the client asked for usage, as OpenAI does.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<Usage>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    x_groq: Option<XGroq>,
}

/// What one stream event is, for pacing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The first content event: sent after the time-to-first-token.
    First,
    /// A later token: sent one token interval after the previous one.
    Token,
    /// Bookkeeping (finish, usage, done): sent at once.
    Trailer,
}

/// Number of content chunks: one per token, at least one to carry the role.
fn content_chunks(a: &Answer) -> usize {
    a.completion_tokens.max(1)
}

/// Appends SSE event `i` of the stream (`data: …\n\n`) to `out`; `None` past the end.
pub fn stream_event(mode: Mode, a: &Answer, i: usize, out: &mut Vec<u8>) -> Option<EventKind> {
    let n = content_chunks(a);
    let usage_slot = |u: Option<Usage>| a.include_usage.then_some(u);
    let chunk = |choices, usage, x_groq| Chunk {
        id: chat_id(a),
        object: "chat.completion.chunk",
        created: a.created,
        model: &a.model,
        system_fingerprint: FINGERPRINT,
        choices,
        usage,
        x_groq,
    };
    let (chunk, kind) = if i < n {
        let delta = Delta {
            role: (i == 0).then_some("assistant"),
            content: Some(if a.completion_tokens == 0 { "" } else { token(i) }),
            // The reasoner's thought rides on the first chunk (DeepSeek spreads it over
            // chunks of its own before the answer; one is enough to test a relay).
            reasoning_content: reasoning(mode, a).filter(|_| i == 0),
        };
        let choice = ChunkChoice { index: 0, delta, logprobs: None, finish_reason: None };
        let x_groq = (mode == Mode::Groq && i == 0).then(|| XGroq { id: groq_id(a), usage: None });
        let kind = if i == 0 { EventKind::First } else { EventKind::Token };
        (chunk(vec![choice], usage_slot(None), x_groq), kind)
    } else if i == n {
        let choice = ChunkChoice {
            index: 0,
            delta: Delta { role: None, content: None, reasoning_content: None },
            logprobs: None,
            finish_reason: Some(finish_reason(a)),
        };
        // Groq reports usage on the last chunk under x_groq, whatever stream_options say.
        let x_groq = (mode == Mode::Groq).then(|| XGroq { id: groq_id(a), usage: Some(usage(mode, a)) });
        (chunk(vec![choice], usage_slot(None), x_groq), EventKind::Trailer)
    } else if i == n + 1 && a.include_usage {
        (chunk(Vec::new(), Some(Some(usage(mode, a))), None), EventKind::Trailer)
    } else if i == n + 1 + usize::from(a.include_usage) {
        out.extend_from_slice(b"data: [DONE]\n\n");
        return Some(EventKind::Trailer);
    } else {
        return None;
    };
    out.extend_from_slice(b"data: ");
    // Serializing our own structs into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &chunk);
    out.extend_from_slice(b"\n\n");
    Some(kind)
}

#[derive(Serialize)]
struct ErrorInner<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<()>,
    code: Option<&'a str>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorInner<'a>,
}

/// An error body in OpenAI's shape.
pub fn error_body(message: &str, kind: &str, code: Option<&str>) -> Vec<u8> {
    let body = ErrorBody { error: ErrorInner { message, kind, param: None, code } };
    serde_json::to_vec(&body).unwrap_or_default()
}

/// The error body OpenAI sends with `status` for the mock's canned failures.
pub fn status_error_body(status: u16, message: &str) -> Vec<u8> {
    match status {
        401 => error_body(message, "invalid_request_error", Some("invalid_api_key")),
        404 => error_body(message, "invalid_request_error", Some("unknown_url")),
        429 => error_body(message, "requests", Some("rate_limit_exceeded")),
        500 | 503 => error_body(message, "server_error", None),
        _ => error_body(message, "invalid_request_error", None),
    }
}

/// `GET /v1/models`.
pub fn models_body(mode: Mode, created: u64) -> Vec<u8> {
    let (ids, owner): (&[&str], &str) = match mode {
        Mode::Groq => (&["llama-3.1-8b-instant", "llama-3.3-70b-versatile"], "Meta"),
        Mode::DeepSeek => (&["deepseek-chat", "deepseek-reasoner"], "deepseek"),
        Mode::OpenAi | Mode::Anthropic => (&["gpt-4o-mini", "gpt-4o"], "openai"),
    };
    let data: Vec<serde_json::Value> = ids
        .iter()
        .map(|id| serde_json::json!({"id": id, "object": "model", "created": created, "owned_by": owner}))
        .collect();
    serde_json::to_vec(&serde_json::json!({"object": "list", "data": data})).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn answer(tokens: usize, include_usage: bool) -> Answer {
        Answer {
            id: 7,
            created: 1,
            model: "m\"x".into(),
            prompt_tokens: 5,
            completion_tokens: tokens,
            truncated: false,
            include_usage,
            tool: None,
        }
    }

    #[test]
    fn completion_shapes_per_mode() {
        let a = answer(3, false);
        let v: Value = serde_json::from_slice(&completion_body(Mode::OpenAi, &a)).expect("json");
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["model"], "m\"x");
        assert_eq!(v["choices"][0]["message"]["content"], "lorem ipsum dolor ");
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert_eq!(v["usage"]["total_tokens"], 8);
        assert!(v.get("x_groq").is_none());
        let g: Value = serde_json::from_slice(&completion_body(Mode::Groq, &a)).expect("json");
        assert!(g["x_groq"]["id"].as_str().expect("id").starts_with("req_"));
        assert!(g["usage"]["total_time"].is_f64());
        let d: Value = serde_json::from_slice(&completion_body(Mode::DeepSeek, &a)).expect("json");
        assert_eq!(d["usage"]["prompt_cache_miss_tokens"], 5);
        assert_eq!(d["usage"]["prompt_cache_hit_tokens"], 0);
    }

    fn events(mode: Mode, a: &Answer) -> Vec<String> {
        let mut v = Vec::new();
        for i in 0..1000 {
            let mut out = Vec::new();
            if stream_event(mode, a, i, &mut out).is_none() {
                break;
            }
            v.push(String::from_utf8(out).expect("utf8"));
        }
        v
    }

    #[test]
    fn stream_sequence() {
        let a = answer(2, true);
        let ev = events(Mode::OpenAi, &a);
        assert_eq!(ev.len(), 5, "2 tokens, finish, usage, done");
        assert!(ev[0].contains("\"role\":\"assistant\""));
        assert!(ev[1].contains("\"content\":\"ipsum \""));
        assert!(ev[2].contains("\"finish_reason\":\"stop\""));
        assert!(ev[3].contains("\"choices\":[]") && ev[3].contains("\"total_tokens\":7"));
        assert_eq!(ev[4], "data: [DONE]\n\n");
        let no_usage = events(Mode::OpenAi, &answer(0, false));
        assert_eq!(no_usage.len(), 3, "role chunk, finish, done");
        assert!(!no_usage[0].contains("usage"));
        let groq = events(Mode::Groq, &answer(1, false));
        assert!(groq[0].contains("x_groq") && groq[1].contains("\"x_groq\":{\"id\""));
    }

    #[test]
    fn errors() {
        let v: Value = serde_json::from_slice(&status_error_body(429, "slow down")).expect("json");
        assert_eq!(v["error"]["code"], "rate_limit_exceeded");
        assert!(v["error"]["param"].is_null());
        let v: Value = serde_json::from_slice(&status_error_body(400, "bad")).expect("json");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert!(v["error"]["code"].is_null());
    }
}
