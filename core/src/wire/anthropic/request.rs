//! OpenAI chat-completions request → Anthropic Messages request.
//!
//! The client's body is read through borrowed views (strings are copied only when
//! they hold escapes) and written out once. What the translation does with each
//! OpenAI field:
//!
//! - `messages`: `system` and `developer` messages are lifted into the top-level
//!   `system` (joined by a blank line); `tool` messages become `user` messages holding
//!   `tool_result` blocks; an assistant's `tool_calls` become `tool_use` blocks (the
//!   arguments string parsed into an object); consecutive messages of one role are
//!   merged into one, as the Messages API wants strictly alternating turns.
//! - content parts: `text`; `image_url` (a `data:` URL becomes a base64 source with its
//!   media type, an `http(s)` URL a url source). Other parts are refused.
//! - `max_completion_tokens`, else `max_tokens`, else `providers[].max_tokens_default`.
//! - `stop` (string or list) → `stop_sequences`; `temperature`, `top_p` as given;
//!   `tools` (functions) → `{name, description, input_schema}`; `tool_choice`
//!   `auto`/`none`/`required`/named → `auto`/`none`/`any`/`tool`;
//!   `parallel_tool_calls: false` → `disable_parallel_tool_use`; `user` → `metadata.user_id`.
//! - Refused with 400 naming the field, because dropping them would change the answer:
//!   `n` > 1, `logprobs: true`, `top_logprobs`, a non-empty `logit_bias`, a
//!   `response_format` other than `text`, non-zero `presence_penalty` or
//!   `frequency_penalty`, `functions`, `function_call`, `audio`, a `modalities` other
//!   than text, `prediction`.
//! - Dropped (no effect on the answer's content, or gateway-only): `stream_options`
//!   (read by the gateway), `seed`, `store`, `metadata`, `service_tier`,
//!   `reasoning_effort`, and any field the gateway does not know.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::wire::openai::RequestError;

/// Builds the Messages API body for the client's chat-completions `body`, sent to
/// `upstream_model` with `max_tokens_default` when the client set no output cap.
pub fn messages_body(body: &[u8], upstream_model: &str, max_tokens_default: u64) -> Result<Vec<u8>, RequestError> {
    let chat: ChatIn<'_> = serde_json::from_slice(body)
        .map_err(|e| bad(format!("request body cannot be sent to an Anthropic provider: {e}"), None))?;
    refuse_unsupported(&chat)?;
    let (system, messages) = translate_messages(&chat.messages)?;
    let max_tokens = chat.max_completion_tokens.or(chat.max_tokens).unwrap_or(max_tokens_default);
    if max_tokens == 0 {
        return Err(bad("max_tokens must be at least 1".into(), Some("max_tokens")));
    }
    let stop_sequences = match chat.stop {
        None => None,
        Some(Stop::One(s)) => Some(vec![s]),
        Some(Stop::Many(v)) => Some(v),
    };
    let tools = chat.tools.as_deref().map(translate_tools).transpose()?;
    let tool_choice = translate_tool_choice(chat.tool_choice.as_ref(), chat.parallel_tool_calls)?;
    let out = MessagesOut {
        model: upstream_model,
        max_tokens,
        system,
        messages,
        stop_sequences,
        temperature: chat.temperature,
        top_p: chat.top_p,
        tools,
        tool_choice,
        metadata: chat.user.map(|user_id| MetadataOut { user_id }),
        stream: chat.stream.unwrap_or(false),
    };
    serde_json::to_vec(&out).map_err(|e| bad(format!("request cannot be translated: {e}"), None))
}

fn bad(message: String, param: Option<&'static str>) -> RequestError {
    RequestError { message, param }
}

/// The fields of a chat-completions body the translation reads.
#[derive(Deserialize)]
struct ChatIn<'a> {
    #[serde(borrow)]
    messages: Vec<MessageIn<'a>>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
    #[serde(borrow, default)]
    stop: Option<Stop<'a>>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(borrow, default)]
    tools: Option<Vec<ToolIn<'a>>>,
    #[serde(borrow, default)]
    tool_choice: Option<ToolChoiceIn<'a>>,
    #[serde(default)]
    parallel_tool_calls: Option<bool>,
    #[serde(borrow, default)]
    user: Option<Cow<'a, str>>,
    #[serde(default)]
    stream: Option<bool>,
    // Refused when they would change the answer.
    #[serde(default)]
    n: Option<u64>,
    #[serde(default)]
    logprobs: Option<bool>,
    #[serde(borrow, default)]
    top_logprobs: Option<&'a RawValue>,
    #[serde(borrow, default)]
    logit_bias: Option<&'a RawValue>,
    #[serde(borrow, default)]
    response_format: Option<ResponseFormatIn<'a>>,
    #[serde(default)]
    presence_penalty: Option<f64>,
    #[serde(default)]
    frequency_penalty: Option<f64>,
    #[serde(borrow, default)]
    functions: Option<&'a RawValue>,
    #[serde(borrow, default)]
    function_call: Option<&'a RawValue>,
    #[serde(borrow, default)]
    audio: Option<&'a RawValue>,
    #[serde(borrow, default)]
    modalities: Option<Vec<Cow<'a, str>>>,
    #[serde(borrow, default)]
    prediction: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Stop<'a> {
    #[serde(borrow)]
    One(Cow<'a, str>),
    Many(Vec<Cow<'a, str>>),
}

#[derive(Deserialize)]
struct ResponseFormatIn<'a> {
    #[serde(borrow, rename = "type")]
    kind: Cow<'a, str>,
}

fn is_null(raw: Option<&RawValue>) -> bool {
    raw.is_none_or(|r| r.get() == "null")
}

fn refuse_unsupported(chat: &ChatIn<'_>) -> Result<(), RequestError> {
    let refuse = |param: &'static str, why: &str| {
        Err(bad(format!("{param}: {why} is not supported by this model's provider (Anthropic)"), Some(param)))
    };
    if chat.n.is_some_and(|n| n > 1) {
        return refuse("n", "more than one choice");
    }
    if chat.logprobs == Some(true) {
        return refuse("logprobs", "log probabilities");
    }
    if !is_null(chat.top_logprobs) {
        return refuse("top_logprobs", "log probabilities");
    }
    if chat.logit_bias.is_some_and(|r| !matches!(r.get().trim(), "null" | "{}")) {
        return refuse("logit_bias", "a logit bias");
    }
    if chat.response_format.as_ref().is_some_and(|f| f.kind != "text") {
        return refuse("response_format", "a structured response format");
    }
    if chat.presence_penalty.is_some_and(|p| p != 0.0) {
        return refuse("presence_penalty", "a presence penalty");
    }
    if chat.frequency_penalty.is_some_and(|p| p != 0.0) {
        return refuse("frequency_penalty", "a frequency penalty");
    }
    if !is_null(chat.functions) {
        return refuse("functions", "the legacy functions field (use tools)");
    }
    if !is_null(chat.function_call) {
        return refuse("function_call", "the legacy function_call field (use tool_choice)");
    }
    if !is_null(chat.audio) {
        return refuse("audio", "audio output");
    }
    if chat.modalities.as_ref().is_some_and(|m| m.iter().any(|m| m != "text")) {
        return refuse("modalities", "a non-text output modality");
    }
    if !is_null(chat.prediction) {
        return refuse("prediction", "predicted output");
    }
    Ok(())
}

#[derive(Deserialize)]
struct MessageIn<'a> {
    #[serde(borrow)]
    role: Cow<'a, str>,
    #[serde(borrow, default)]
    content: Option<ContentIn<'a>>,
    #[serde(borrow, default)]
    tool_calls: Option<Vec<ToolCallIn<'a>>>,
    #[serde(borrow, default)]
    tool_call_id: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ContentIn<'a> {
    #[serde(borrow)]
    Text(Cow<'a, str>),
    Parts(Vec<PartIn<'a>>),
}

#[derive(Deserialize)]
struct PartIn<'a> {
    #[serde(borrow, rename = "type")]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    image_url: Option<ImageUrlIn<'a>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ImageUrlIn<'a> {
    #[serde(borrow)]
    Object(UrlIn<'a>),
    #[serde(borrow)]
    Url(Cow<'a, str>),
}

#[derive(Deserialize)]
struct UrlIn<'a> {
    #[serde(borrow)]
    url: Cow<'a, str>,
}

#[derive(Deserialize)]
struct ToolCallIn<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    function: FunctionCallIn<'a>,
}

#[derive(Deserialize)]
struct FunctionCallIn<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow, default)]
    arguments: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct ToolIn<'a> {
    #[serde(borrow, rename = "type")]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    function: Option<FunctionIn<'a>>,
}

#[derive(Deserialize)]
struct FunctionIn<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow, default)]
    description: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    parameters: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ToolChoiceIn<'a> {
    #[serde(borrow)]
    Mode(Cow<'a, str>),
    Named {
        #[serde(borrow)]
        function: NamedIn<'a>,
    },
}

#[derive(Deserialize)]
struct NamedIn<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
}

#[derive(Serialize)]
struct MessagesOut<'a> {
    model: &'a str,
    max_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<String>,
    messages: Vec<MessageOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_sequences: Option<Vec<Cow<'a, str>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<Vec<ToolOut<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<ToolChoiceOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<MetadataOut<'a>>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
}

#[derive(Serialize)]
struct MetadataOut<'a> {
    user_id: Cow<'a, str>,
}

#[derive(Serialize)]
struct MessageOut<'a> {
    role: &'static str,
    content: Vec<Block<'a>>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block<'a> {
    Text { text: Cow<'a, str> },
    Image { source: ImageSource<'a> },
    ToolUse { id: Cow<'a, str>, name: Cow<'a, str>, input: Box<RawValue> },
    ToolResult { tool_use_id: Cow<'a, str>, content: Vec<Block<'a>> },
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ImageSource<'a> {
    Base64 { media_type: &'a str, data: &'a str },
    Url { url: &'a str },
}

#[derive(Serialize)]
struct ToolOut<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    input_schema: &'a RawValue,
}

#[derive(Serialize)]
struct ToolChoiceOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disable_parallel_tool_use: Option<bool>,
}

/// Lifts system messages out and turns the rest into alternating Messages API turns.
fn translate_messages<'a>(
    messages: &'a [MessageIn<'a>],
) -> Result<(Option<String>, Vec<MessageOut<'a>>), RequestError> {
    let mut system: Option<String> = None;
    let mut out: Vec<MessageOut<'a>> = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        let (role, blocks) = match m.role.as_ref() {
            "system" | "developer" => {
                let text = system_text(m, i)?;
                match &mut system {
                    Some(s) => {
                        s.push_str("\n\n");
                        s.push_str(&text);
                    }
                    None => system = Some(text),
                }
                continue;
            }
            "user" => ("user", content_blocks(m.content.as_ref(), i)?),
            "assistant" => {
                let mut blocks = content_blocks(m.content.as_ref(), i)?;
                // An assistant turn that only calls tools often carries `content: ""`.
                blocks.retain(|b| !matches!(b, Block::Text { text } if text.is_empty()));
                for call in m.tool_calls.iter().flatten() {
                    blocks.push(tool_use(call, i)?);
                }
                ("assistant", blocks)
            }
            "tool" => {
                let id = m.tool_call_id.clone().ok_or_else(|| {
                    bad(format!("messages[{i}].tool_call_id: a tool message must name its tool call"), Some("messages"))
                })?;
                let content = content_blocks(m.content.as_ref(), i)?;
                ("user", vec![Block::ToolResult { tool_use_id: id, content }])
            }
            other => {
                return Err(bad(
                    format!("messages[{i}].role: `{other}` is not supported by this model's provider (Anthropic)"),
                    Some("messages"),
                ))
            }
        };
        match out.last_mut() {
            Some(last) if last.role == role => last.content.extend(blocks),
            _ => out.push(MessageOut { role, content: blocks }),
        }
    }
    if out.is_empty() {
        return Err(bad(
            "messages must hold at least one message that is not a system message".into(),
            Some("messages"),
        ));
    }
    Ok((system, out))
}

fn system_text(m: &MessageIn<'_>, i: usize) -> Result<String, RequestError> {
    match &m.content {
        Some(ContentIn::Text(t)) => Ok(t.to_string()),
        Some(ContentIn::Parts(parts)) => {
            let mut text = String::new();
            for (j, p) in parts.iter().enumerate() {
                match (p.kind.as_ref(), &p.text) {
                    ("text", Some(t)) => text.push_str(t),
                    _ => {
                        return Err(bad(
                            format!("messages[{i}].content[{j}]: a system message may hold only text parts"),
                            Some("messages"),
                        ))
                    }
                }
            }
            Ok(text)
        }
        None => Ok(String::new()),
    }
}

fn content_blocks<'a>(content: Option<&'a ContentIn<'a>>, i: usize) -> Result<Vec<Block<'a>>, RequestError> {
    let parts = match content {
        None => return Ok(Vec::new()),
        Some(ContentIn::Text(t)) => return Ok(vec![Block::Text { text: Cow::Borrowed(t.as_ref()) }]),
        Some(ContentIn::Parts(parts)) => parts,
    };
    let mut blocks = Vec::with_capacity(parts.len());
    for (j, p) in parts.iter().enumerate() {
        let at = || format!("messages[{i}].content[{j}]");
        match (p.kind.as_ref(), &p.text, &p.image_url) {
            ("text", Some(t), _) => blocks.push(Block::Text { text: Cow::Borrowed(t.as_ref()) }),
            ("image_url", _, Some(ImageUrlIn::Object(UrlIn { url }) | ImageUrlIn::Url(url))) => {
                blocks.push(Block::Image {
                    source: image_source(url)
                        .map_err(|why| bad(format!("{}.image_url.url: {why}", at()), Some("messages")))?,
                })
            }
            (kind, _, _) => {
                return Err(bad(
                    format!("{}: a `{kind}` part is not supported by this model's provider (Anthropic)", at()),
                    Some("messages"),
                ))
            }
        }
    }
    Ok(blocks)
}

/// Image media types the Messages API takes.
const IMAGE_TYPES: [&str; 4] = ["image/jpeg", "image/png", "image/gif", "image/webp"];

fn image_source(url: &str) -> Result<ImageSource<'_>, &'static str> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest.split_once(',').ok_or("a data: URL needs a comma before its data")?;
        let media_type = meta.strip_suffix(";base64").ok_or("a data: URL must be base64 encoded")?;
        if !IMAGE_TYPES.contains(&media_type) {
            return Err("the image must be image/jpeg, image/png, image/gif or image/webp");
        }
        return Ok(ImageSource::Base64 { media_type, data });
    }
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    if matches!(scheme.as_deref(), Some("http" | "https")) {
        return Ok(ImageSource::Url { url });
    }
    Err("must be a data: URL or an http(s) URL")
}

fn tool_use<'a>(call: &'a ToolCallIn<'a>, i: usize) -> Result<Block<'a>, RequestError> {
    let args = call.function.arguments.as_deref().map(str::trim).filter(|a| !a.is_empty()).unwrap_or("{}");
    let why = format!("messages[{i}].tool_calls: the arguments of tool call `{}` must be a JSON object", call.id);
    let input: Box<RawValue> = serde_json::from_str(args).map_err(|_| bad(why.clone(), Some("messages")))?;
    if !input.get().starts_with('{') {
        return Err(bad(why, Some("messages")));
    }
    Ok(Block::ToolUse { id: Cow::Borrowed(call.id.as_ref()), name: Cow::Borrowed(call.function.name.as_ref()), input })
}

/// `{"type":"object"}`: the schema of a function declared without parameters.
fn empty_schema() -> &'static RawValue {
    static SCHEMA: std::sync::OnceLock<Box<RawValue>> = std::sync::OnceLock::new();
    SCHEMA.get_or_init(|| {
        RawValue::from_string(r#"{"type":"object","properties":{}}"#.to_string())
            .unwrap_or_else(|_| RawValue::NULL.to_owned())
    })
}

fn translate_tools<'a>(tools: &'a [ToolIn<'a>]) -> Result<Vec<ToolOut<'a>>, RequestError> {
    tools
        .iter()
        .enumerate()
        .map(|(i, t)| match (t.kind.as_ref(), &t.function) {
            ("function", Some(f)) => Ok(ToolOut {
                name: &f.name,
                description: f.description.as_deref(),
                input_schema: f.parameters.filter(|p| p.get() != "null").unwrap_or(empty_schema()),
            }),
            (kind, _) => Err(bad(
                format!("tools[{i}]: a `{kind}` tool is not supported by this model's provider (Anthropic)"),
                Some("tools"),
            )),
        })
        .collect()
}

fn translate_tool_choice<'a>(
    choice: Option<&'a ToolChoiceIn<'a>>,
    parallel: Option<bool>,
) -> Result<Option<ToolChoiceOut<'a>>, RequestError> {
    let disable_parallel_tool_use = (parallel == Some(false)).then_some(true);
    let (kind, name) = match choice {
        None if disable_parallel_tool_use.is_some() => ("auto", None),
        None => return Ok(None),
        Some(ToolChoiceIn::Mode(m)) => match m.as_ref() {
            "auto" => ("auto", None),
            "none" => ("none", None),
            "required" => ("any", None),
            other => {
                return Err(bad(
                    format!("tool_choice: `{other}` is not one of auto, none, required"),
                    Some("tool_choice"),
                ))
            }
        },
        Some(ToolChoiceIn::Named { function }) => ("tool", Some(function.name.as_ref())),
    };
    // Anthropic refuses the parallel flag on `none`.
    let disable_parallel_tool_use = disable_parallel_tool_use.filter(|_| kind != "none");
    Ok(Some(ToolChoiceOut { kind, name, disable_parallel_tool_use }))
}
