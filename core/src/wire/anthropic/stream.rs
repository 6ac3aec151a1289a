//! Anthropic's streamed events → OpenAI `chat.completion.chunk` events, incrementally:
//! a state machine fed the stream piece by piece as it arrives, holding back only an
//! unfinished line (at most [`EVENT_BYTES_MAX`]), so how the stream was cut into
//! pieces never changes what comes out.
//!
//! `message_start` → the first chunk (`role: assistant`); `text_delta` → `content`;
//! `thinking_delta` → `reasoning_content` (as DeepSeek streams it); a `tool_use` block
//! → a `tool_calls` delta with its index, id and name, then each `input_json_delta` →
//! that call's `arguments` piece; `message_delta` → the finish reason and usage;
//! `message_stop` → the last chunk with `finish_reason`, then the usage chunk when the
//! client asked for it (`stream_options.include_usage`). The translator never writes
//! `data: [DONE]`: the relay sends it once the audit record is written. `ping` and
//! unknown events are dropped; an `error` event ends the stream with an OpenAI-shaped
//! error event.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::response::{finish_reason, openai_error_type, AnthropicUsage, BlockIn, ErrorIn, UsageOut};
use crate::wire::openai::{stream_error_event, Usage};

/// Longest line held back while waiting for its end, bytes. Anthropic's events are
/// one line each and small (a delta is a few tokens); a longer one fails the stream
/// rather than grow the buffer.
pub const EVENT_BYTES_MAX: usize = 1024 * 1024;

/// Where a translated stream stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamState {
    /// Events still to come.
    Open,
    /// `message_stop` arrived: the translated stream is complete (but for `[DONE]`).
    Complete,
    /// The provider's stream failed: an error event was written and nothing follows.
    Failed {
        /// What went wrong, for logs.
        message: String,
    },
}

/// What kind of content block is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Text,
    Thinking,
    /// A tool call, with its index among the answer's tool calls.
    Tool(u32),
    Other,
}

/// Translates one Anthropic stream.
#[derive(Debug)]
pub struct StreamTranslator {
    line: Vec<u8>,
    created: u64,
    include_usage: bool,
    id: String,
    model: String,
    usage: Option<AnthropicUsage>,
    finish: Option<&'static str>,
    /// The open content block: its Anthropic index and kind.
    block: Option<(u64, Block)>,
    tools: u32,
    state: StreamState,
}

impl StreamTranslator {
    /// A translator for a stream whose chunks carry `created`; `include_usage`: the
    /// client asked for the usage chunk.
    pub fn new(created: u64, include_usage: bool) -> StreamTranslator {
        StreamTranslator {
            line: Vec::new(),
            created,
            include_usage,
            id: String::new(),
            model: String::new(),
            usage: None,
            finish: None,
            block: None,
            tools: 0,
            state: StreamState::Open,
        }
    }

    /// Where the stream stands.
    pub fn state(&self) -> &StreamState {
        &self.state
    }

    /// The usage reported so far (read for the audit record and budgets, whether or not
    /// the client sees it).
    pub fn usage(&self) -> Option<Usage> {
        self.usage.map(AnthropicUsage::to_openai)
    }

    /// Feeds the next piece of the provider's stream; appends the client's bytes to `out`.
    pub fn feed(&mut self, mut piece: &[u8], out: &mut Vec<u8>) {
        while self.state == StreamState::Open {
            let Some(end) = piece.iter().position(|b| *b == b'\n') else {
                if self.line.len().saturating_add(piece.len()) > EVENT_BYTES_MAX {
                    self.fail(format!("the provider sent an event longer than {EVENT_BYTES_MAX} bytes"), out);
                } else {
                    self.line.extend_from_slice(piece);
                }
                return;
            };
            let (head, rest) = piece.split_at(end);
            piece = rest.get(1..).unwrap_or_default();
            if self.line.is_empty() {
                self.line_done(head, out);
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(head);
                self.line_done(&line, out);
                line.clear();
                self.line = line;
            }
        }
    }

    fn line_done(&mut self, line: &[u8], out: &mut Vec<u8>) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(data) = line.strip_prefix(b"data:") else { return };
        let data = data.strip_prefix(b" ").unwrap_or(data);
        match serde_json::from_slice::<EventIn<'_>>(data) {
            Ok(event) => self.event(event, out),
            Err(e) => self.fail(format!("the provider sent an event that is not valid JSON: {e}"), out),
        }
    }

    fn fail(&mut self, message: String, out: &mut Vec<u8>) {
        out.extend_from_slice(&stream_error_event(&message, "upstream_stream_error"));
        self.state = StreamState::Failed { message };
        self.line = Vec::new();
    }

    fn event(&mut self, e: EventIn<'_>, out: &mut Vec<u8>) {
        match e.kind.as_ref() {
            "message_start" => {
                if let Some(m) = e.message {
                    self.id = m.id.map(Cow::into_owned).unwrap_or_default();
                    self.model = m.model.map(Cow::into_owned).unwrap_or_default();
                    if let Some(u) = m.usage {
                        self.usage.get_or_insert_with(AnthropicUsage::default).update(u);
                    }
                }
                self.chunk(Delta { role: Some("assistant"), content: Some(""), ..Delta::default() }, None, out);
            }
            "content_block_start" => {
                let index = e.index.unwrap_or(0);
                let Some(b) = e.content_block else { return };
                let block = match b.kind.as_ref() {
                    "text" => {
                        if let Some(t) = b.text.as_deref().filter(|t| !t.is_empty()) {
                            self.chunk(Delta { content: Some(t), ..Delta::default() }, None, out);
                        }
                        Block::Text
                    }
                    "thinking" => Block::Thinking,
                    "tool_use" => {
                        let n = self.tools;
                        self.tools = self.tools.saturating_add(1);
                        let call = ToolDelta {
                            index: n,
                            id: Some(b.id.as_deref().unwrap_or("")),
                            kind: Some("function"),
                            function: FunctionDelta { name: Some(b.name.as_deref().unwrap_or("")), arguments: "" },
                        };
                        self.chunk(Delta { tool_calls: Some([call]), ..Delta::default() }, None, out);
                        Block::Tool(n)
                    }
                    _ => Block::Other,
                };
                self.block = Some((index, block));
            }
            "content_block_delta" => {
                let Some(d) = e.delta else { return };
                let block = match self.block {
                    Some((index, block)) if e.index.unwrap_or(0) == index => block,
                    // A delta for a block that was never started: read it by its own type.
                    _ => Block::Other,
                };
                match (d.kind.as_deref(), block) {
                    (Some("text_delta"), _) => {
                        let text = d.text.as_deref().unwrap_or("");
                        self.chunk(Delta { content: Some(text), ..Delta::default() }, None, out);
                    }
                    (Some("thinking_delta"), _) => {
                        let text = d.thinking.as_deref().unwrap_or("");
                        self.chunk(Delta { reasoning_content: Some(text), ..Delta::default() }, None, out);
                    }
                    (Some("input_json_delta"), Block::Tool(n)) => {
                        let call = ToolDelta {
                            index: n,
                            id: None,
                            kind: None,
                            function: FunctionDelta { name: None, arguments: d.partial_json.as_deref().unwrap_or("") },
                        };
                        self.chunk(Delta { tool_calls: Some([call]), ..Delta::default() }, None, out);
                    }
                    // signature_delta, citations, deltas of unknown blocks.
                    _ => {}
                }
            }
            "content_block_stop" => self.block = None,
            "message_delta" => {
                if let Some(reason) = e.delta.as_ref().and_then(|d| d.stop_reason.as_deref()) {
                    self.finish = Some(finish_reason(reason));
                }
                if let Some(u) = e.usage {
                    self.usage.get_or_insert_with(AnthropicUsage::default).update(u);
                }
            }
            "message_stop" => {
                let finish = self.finish.unwrap_or("stop");
                self.chunk(Delta::default(), Some(finish), out);
                if self.include_usage {
                    let usage = UsageOut::from(self.usage.unwrap_or_default());
                    self.write(&ChunkOut { choices: &[], usage: Some(usage), ..self.base() }, out);
                }
                self.state = StreamState::Complete;
                self.line = Vec::new();
            }
            "error" => {
                let (kind, message) = match &e.error {
                    Some(ErrorIn { kind, message }) => (kind.as_deref(), message.as_deref()),
                    None => (None, None),
                };
                let kind = kind.unwrap_or("api_error");
                let message = format!("provider error mid-stream: {}", message.unwrap_or(kind));
                let json = crate::wire::openai::error_json(&message, openai_error_type(kind), None, Some(kind));
                out.extend_from_slice(b"\n\ndata: ");
                out.extend_from_slice(&json);
                out.extend_from_slice(b"\n\n");
                self.state = StreamState::Failed { message };
                self.line = Vec::new();
            }
            // ping, and event types newer than this translator.
            _ => {}
        }
    }

    fn base(&self) -> ChunkOut<'_> {
        ChunkOut {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            choices: &[],
            usage: None,
        }
    }

    fn chunk(&self, delta: Delta<'_>, finish_reason: Option<&'static str>, out: &mut Vec<u8>) {
        let choice = [ChoiceOut { index: 0, delta, logprobs: None, finish_reason }];
        self.write(&ChunkOut { choices: &choice, ..self.base() }, out);
    }

    fn write(&self, chunk: &ChunkOut<'_>, out: &mut Vec<u8>) {
        out.extend_from_slice(b"data: ");
        // Writing our own structs into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, chunk);
        out.extend_from_slice(b"\n\n");
    }
}

#[derive(Deserialize)]
struct EventIn<'a> {
    #[serde(borrow, rename = "type")]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    message: Option<MessageStartIn<'a>>,
    #[serde(default)]
    index: Option<u64>,
    #[serde(borrow, default)]
    content_block: Option<BlockIn<'a>>,
    #[serde(borrow, default)]
    delta: Option<DeltaIn<'a>>,
    #[serde(default)]
    usage: Option<AnthropicUsage>,
    #[serde(borrow, default)]
    error: Option<ErrorIn<'a>>,
}

#[derive(Deserialize)]
struct MessageStartIn<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    usage: Option<AnthropicUsage>,
}

#[derive(Deserialize)]
struct DeltaIn<'a> {
    #[serde(borrow, rename = "type", default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    thinking: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    partial_json: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    stop_reason: Option<Cow<'a, str>>,
}

#[derive(Serialize)]
struct ChunkOut<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: &'a [ChoiceOut<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<UsageOut>,
}

#[derive(Serialize)]
struct ChoiceOut<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize, Default)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolDelta<'a>; 1]>,
}

#[derive(Serialize)]
struct ToolDelta<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: FunctionDelta<'a>,
}

#[derive(Serialize)]
struct FunctionDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}
