//! Anthropic Messages answers → OpenAI chat completions: a whole `message`, and the
//! error JSON of a refused request.
//!
//! The completion's `model` is the upstream model id the provider reports, as on the
//! OpenAI path (whose answers are relayed as the provider wrote them); its `id` is the
//! Anthropic message id; `created` is when the gateway translated it.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::wire::openai::{error_json, Usage};

/// Token usage as Anthropic reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct AnthropicUsage {
    /// Prompt tokens not read from or written to the prompt cache.
    #[serde(default)]
    pub input_tokens: Option<u64>,
    /// Prompt tokens written to the cache.
    #[serde(default)]
    pub cache_creation_input_tokens: Option<u64>,
    /// Prompt tokens read from the cache.
    #[serde(default)]
    pub cache_read_input_tokens: Option<u64>,
    /// Tokens generated.
    #[serde(default)]
    pub output_tokens: Option<u64>,
}

impl AnthropicUsage {
    /// The same counts in OpenAI's terms: every prompt token, cached or not, is a prompt token.
    pub fn to_openai(self) -> Usage {
        let prompt = self
            .input_tokens
            .unwrap_or(0)
            .saturating_add(self.cache_creation_input_tokens.unwrap_or(0))
            .saturating_add(self.cache_read_input_tokens.unwrap_or(0));
        Usage { prompt_tokens: prompt, completion_tokens: self.output_tokens.unwrap_or(0) }
    }

    /// Takes every count `later` reports (a stream's `message_delta` repeats or updates them).
    pub fn update(&mut self, later: AnthropicUsage) {
        self.input_tokens = later.input_tokens.or(self.input_tokens);
        self.cache_creation_input_tokens = later.cache_creation_input_tokens.or(self.cache_creation_input_tokens);
        self.cache_read_input_tokens = later.cache_read_input_tokens.or(self.cache_read_input_tokens);
        self.output_tokens = later.output_tokens.or(self.output_tokens);
    }
}

/// The usage object of an OpenAI answer.
#[derive(Serialize)]
pub(super) struct UsageOut {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_tokens_details: Option<CachedOut>,
}

#[derive(Serialize)]
pub(super) struct CachedOut {
    cached_tokens: u64,
}

impl From<AnthropicUsage> for UsageOut {
    fn from(u: AnthropicUsage) -> UsageOut {
        let o = u.to_openai();
        UsageOut {
            prompt_tokens: o.prompt_tokens,
            completion_tokens: o.completion_tokens,
            total_tokens: o.prompt_tokens.saturating_add(o.completion_tokens),
            prompt_tokens_details: u.cache_read_input_tokens.map(|cached_tokens| CachedOut { cached_tokens }),
        }
    }
}

/// OpenAI's `finish_reason` for an Anthropic `stop_reason`.
pub fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        // end_turn, stop_sequence, pause_turn and anything newer.
        _ => "stop",
    }
}

#[derive(Deserialize)]
struct MessageIn<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    content: Vec<BlockIn<'a>>,
    #[serde(borrow, default)]
    stop_reason: Option<Cow<'a, str>>,
    #[serde(default)]
    usage: Option<AnthropicUsage>,
}

#[derive(Deserialize)]
pub(super) struct BlockIn<'a> {
    #[serde(borrow, rename = "type")]
    pub(super) kind: Cow<'a, str>,
    #[serde(borrow, default)]
    pub(super) text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) thinking: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) input: Option<&'a RawValue>,
}

#[derive(Serialize)]
struct CompletionOut<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [ChoiceOut<'a>; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<UsageOut>,
}

#[derive(Serialize)]
struct ChoiceOut<'a> {
    index: u32,
    message: AssistantOut<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize)]
struct AssistantOut<'a> {
    role: &'static str,
    content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCallOut<'a>>,
    refusal: Option<()>,
}

#[derive(Serialize)]
pub(super) struct ToolCallOut<'a> {
    pub(super) id: &'a str,
    #[serde(rename = "type")]
    pub(super) kind: &'static str,
    pub(super) function: FunctionOut<'a>,
}

#[derive(Serialize)]
pub(super) struct FunctionOut<'a> {
    pub(super) name: &'a str,
    pub(super) arguments: Cow<'a, str>,
}

/// Why a provider's answer could not be translated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the provider's answer is not a Messages API message: {0}")]
pub struct AnswerError(pub String);

/// Translates a whole Messages API `message` into a `chat.completion`; returns its
/// JSON and the usage it reported.
pub fn chat_completion(body: &[u8], created: u64) -> Result<(Vec<u8>, Option<Usage>), AnswerError> {
    let m: MessageIn<'_> = serde_json::from_slice(body).map_err(|e| AnswerError(e.to_string()))?;
    let mut text: Option<String> = None;
    let mut thinking: Option<String> = None;
    let mut tool_calls = Vec::new();
    for b in &m.content {
        match b.kind.as_ref() {
            "text" => text.get_or_insert_with(String::new).push_str(b.text.as_deref().unwrap_or("")),
            "thinking" => thinking.get_or_insert_with(String::new).push_str(b.thinking.as_deref().unwrap_or("")),
            "tool_use" => tool_calls.push(ToolCallOut {
                id: b.id.as_deref().unwrap_or(""),
                kind: "function",
                function: FunctionOut {
                    name: b.name.as_deref().unwrap_or(""),
                    arguments: Cow::Borrowed(b.input.map_or("{}", RawValue::get)),
                },
            }),
            // redacted_thinking, server tool blocks: nothing an OpenAI client can read.
            _ => {}
        }
    }
    let usage = m.usage;
    let out = CompletionOut {
        id: m.id.as_deref().unwrap_or(""),
        object: "chat.completion",
        created,
        model: m.model.as_deref().unwrap_or(""),
        choices: [ChoiceOut {
            index: 0,
            message: AssistantOut {
                role: "assistant",
                content: text,
                reasoning_content: thinking,
                tool_calls,
                refusal: None,
            },
            logprobs: None,
            finish_reason: m.stop_reason.as_deref().map(finish_reason),
        }],
        usage: usage.map(UsageOut::from),
    };
    let json = serde_json::to_vec(&out).map_err(|e| AnswerError(e.to_string()))?;
    Ok((json, usage.map(AnthropicUsage::to_openai)))
}

#[derive(Deserialize)]
struct ErrorBodyIn<'a> {
    #[serde(borrow)]
    error: ErrorIn<'a>,
}

#[derive(Deserialize)]
pub(super) struct ErrorIn<'a> {
    #[serde(borrow, rename = "type", default)]
    pub(super) kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) message: Option<Cow<'a, str>>,
}

/// OpenAI's error `type` for an Anthropic error type.
pub(super) fn openai_error_type(kind: &str) -> &'static str {
    match kind {
        "invalid_request_error" | "request_too_large" | "not_found_error" => "invalid_request_error",
        "authentication_error" => "authentication_error",
        "permission_error" => "permission_error",
        "rate_limit_error" => "rate_limit_error",
        _ => "server_error",
    }
}

/// An Anthropic error body (`{"type":"error","error":{"type","message"}}`) as
/// OpenAI-shaped error JSON with the same message; the Anthropic error type becomes
/// the `code`. A body of another shape is described, not passed on.
pub fn error_body(status: u16, body: &[u8]) -> Vec<u8> {
    match serde_json::from_slice::<ErrorBodyIn<'_>>(body) {
        Ok(ErrorBodyIn { error: ErrorIn { kind, message } }) => {
            let kind = kind.as_deref().unwrap_or("api_error");
            let message = message.as_deref().unwrap_or("the provider refused the request");
            error_json(message, openai_error_type(kind), None, Some(kind))
        }
        Err(_) => {
            let kind = if status < 500 { "invalid_request_error" } else { "server_error" };
            error_json(&format!("the provider answered HTTP {status}"), kind, None, None)
        }
    }
}
