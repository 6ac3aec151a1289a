//! The chat request fields the mock reads (shared by the OpenAI-style and Anthropic
//! formats) and the answer it derives from them.

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// Most output tokens one answer may have, whatever flags or headers ask.
pub const TOKENS_MAX: usize = 100_000;

/// The fields of an OpenAI or Anthropic chat request that shape the answer.
#[derive(Debug, Default, Deserialize)]
pub struct ChatRequest {
    /// Requested model, echoed back.
    pub model: Option<String>,
    /// Conversation; only contents are read, to size the prompt.
    pub messages: Option<Vec<MessageIn>>,
    /// Anthropic's top-level system prompt (string or blocks).
    pub system: Option<CharCount>,
    /// Stream the answer as SSE.
    pub stream: Option<bool>,
    /// OpenAI stream options.
    pub stream_options: Option<StreamOptions>,
    /// Output cap.
    pub max_tokens: Option<u64>,
    /// OpenAI's newer name for the output cap.
    pub max_completion_tokens: Option<u64>,
}

/// One message; only its content is sized.
#[derive(Debug, Default, Deserialize)]
pub struct MessageIn {
    /// String, or an array of parts whose `text` fields are sized.
    #[serde(default)]
    pub content: CharCount,
}

/// `stream_options`.
#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    /// Send a final usage chunk.
    pub include_usage: Option<bool>,
}

/// Number of characters of text in a content value of any shape: a string, an array of
/// parts, a part with `text` (or nested `content`); anything else counts zero. Parsing
/// this way never fails on an unexpected shape and allocates nothing.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CharCount(pub usize);

impl<'de> Deserialize<'de> for CharCount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CharCount;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("message content")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<CharCount, E> {
                Ok(CharCount(s.chars().count()))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<CharCount, E> {
                Ok(CharCount(0))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<CharCount, E> {
                Ok(CharCount(0))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<CharCount, E> {
                Ok(CharCount(0))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<CharCount, E> {
                Ok(CharCount(0))
            }
            fn visit_unit<E: de::Error>(self) -> Result<CharCount, E> {
                Ok(CharCount(0))
            }
            fn visit_none<E: de::Error>(self) -> Result<CharCount, E> {
                Ok(CharCount(0))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<CharCount, A::Error> {
                let mut n = 0usize;
                // Bounded by the body size; serde_json also caps nesting depth at 128.
                while let Some(CharCount(c)) = seq.next_element()? {
                    n = n.saturating_add(c);
                }
                Ok(CharCount(n))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<CharCount, A::Error> {
                let mut n = 0usize;
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    if key == "text" || key == "content" {
                        n = n.saturating_add(map.next_value::<CharCount>()?.0);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(CharCount(n))
            }
        }
        d.deserialize_any(V)
    }
}

impl ChatRequest {
    /// Parses a JSON body.
    pub fn parse(body: &[u8]) -> Result<ChatRequest, serde_json::Error> {
        serde_json::from_slice(body)
    }

    /// Prompt size in tokens: characters of all contents (and `system`) / 4, rounded up,
    /// at least 1.
    pub fn prompt_tokens(&self) -> u64 {
        let chars: usize = self
            .messages
            .iter()
            .flatten()
            .map(|m| m.content.0)
            .chain(self.system.map(|s| s.0))
            .fold(0usize, usize::saturating_add);
        (chars.div_ceil(4) as u64).max(1)
    }

    /// The output cap the client asked for, if any.
    pub fn max_tokens(&self) -> Option<u64> {
        match (self.max_tokens, self.max_completion_tokens) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether the answer is streamed.
    pub fn is_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    /// Whether a usage chunk ends the stream.
    pub fn include_usage(&self) -> bool {
        self.stream_options.as_ref().and_then(|o| o.include_usage).unwrap_or(false)
    }
}

/// Everything needed to write one answer, in any format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// Unique suffix for the response id (`chatcmpl-…`, `msg_…`).
    pub id: u64,
    /// Unix seconds.
    pub created: u64,
    /// Model echoed from the request.
    pub model: String,
    /// Prompt size in tokens.
    pub prompt_tokens: u64,
    /// Output size in tokens.
    pub completion_tokens: usize,
    /// True when `max_tokens` cut the answer ("length" / "max_tokens").
    pub truncated: bool,
    /// Send a usage chunk at the end of a stream.
    pub include_usage: bool,
    /// Anthropic mode: answer with a call of this tool instead of text (the request
    /// forced a tool with `tool_choice`).
    pub tool: Option<String>,
}

impl Answer {
    /// Sizes the answer: `min(max_tokens, tokens)` output tokens.
    pub fn new(req: &ChatRequest, model: String, tokens: usize, id: u64, created: u64) -> Answer {
        let tokens = tokens.min(TOKENS_MAX);
        let cap = req.max_tokens().map(|m| usize::try_from(m).unwrap_or(usize::MAX));
        let completion_tokens = cap.map_or(tokens, |c| c.min(tokens));
        Answer {
            id,
            created,
            model,
            prompt_tokens: req.prompt_tokens(),
            completion_tokens,
            truncated: completion_tokens < tokens,
            include_usage: req.include_usage(),
            tool: None,
        }
    }

    /// Total tokens.
    pub fn total_tokens(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens as u64
    }

    /// The whole answer text.
    pub fn content(&self) -> String {
        let mut s = String::with_capacity(self.completion_tokens * 7);
        for i in 0..self.completion_tokens {
            s.push_str(token(i));
        }
        s
    }
}

const WORDS: [&str; 16] = [
    "lorem ", "ipsum ", "dolor ", "sit ", "amet ", "sed ", "do ", "tempor ", "ut ", "labore ", "et ", "magna ",
    "aliqua ", "enim ", "ad ", "minim ",
];

/// The i-th output token: a short word and a space.
pub fn token(i: usize) -> &'static str {
    WORDS[i % WORDS.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_string_and_part_contents() {
        let body = br#"{"model":"m","messages":[{"role":"user","content":"abcdefgh"},{"role":"user","content":[{"type":"text","text":"abcd"},{"type":"image_url","image_url":{"url":"zzzzzzzz"}}]},{"role":"tool","content":null}],"system":"abcd","max_tokens":3,"stream":true,"stream_options":{"include_usage":true}}"#;
        let r = ChatRequest::parse(body).expect("json");
        assert_eq!(r.prompt_tokens(), 4);
        assert!(r.is_stream() && r.include_usage());
        let a = Answer::new(&r, "m".into(), 16, 1, 2);
        assert_eq!(a.completion_tokens, 3);
        assert!(a.truncated);
        assert_eq!(a.total_tokens(), 7);
        assert_eq!(a.content(), "lorem ipsum dolor ");
    }

    #[test]
    fn empty_prompt_is_one_token_and_no_cap_is_stop() {
        let r = ChatRequest::parse(br#"{"model":"m","messages":[]}"#).expect("json");
        assert_eq!(r.prompt_tokens(), 1);
        let a = Answer::new(&r, "m".into(), 5, 1, 2);
        assert_eq!((a.completion_tokens, a.truncated), (5, false));
        let r = ChatRequest::parse(br#"{"max_tokens":10,"max_completion_tokens":2}"#).expect("json");
        assert_eq!(r.max_tokens(), Some(2));
    }

    #[test]
    fn rejects_bad_json_without_panicking() {
        assert!(ChatRequest::parse(b"{").is_err());
        assert!(ChatRequest::parse(b"[]").is_err());
        assert!(ChatRequest::parse(br#"{"stream":"yes"}"#).is_err());
        let deep = "[".repeat(10_000);
        let body = format!(r#"{{"messages":[{{"content":{deep}}}]}}"#);
        assert!(ChatRequest::parse(body.as_bytes()).is_err());
    }
}
