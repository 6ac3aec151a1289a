//! What the router reads of a request: the text the score reads, the prompt size,
//! the completion budget and the features the answer needs.

use super::score::{Prompt, Role, Turn};
use crate::wire::openai::ChatRequest;

/// Tokens counted per message for its role and framing, on top of its text.
pub const TOKENS_PER_MESSAGE: u64 = 4;
/// Bytes of text per token in the prompt estimate (English prose and code average
/// about four with the GPT and Llama tokenizers).
pub const BYTES_PER_TOKEN: u64 = 4;

/// The request as the router sees it.
#[derive(Debug, Clone, Default)]
pub struct RouteRequest<'a> {
    /// Every text part of every message, in order.
    pub turns: Vec<Turn<'a>>,
    /// Prompt size estimate in tokens: text bytes / [`BYTES_PER_TOKEN`] (rounded up)
    /// plus [`TOKENS_PER_MESSAGE`] per message (up to the last one with text).
    pub prompt_tokens: u64,
    /// `max_tokens` / `max_completion_tokens`, if given.
    pub max_tokens: Option<u64>,
    /// Tools offered (the answer needs `tools`).
    pub tools: u32,
    /// Whether a message has image parts (the answer needs `vision`).
    pub vision: bool,
    /// Whether `response_format` asks for JSON (the answer needs `json_mode`).
    pub json_mode: bool,
}

impl<'a> RouteRequest<'a> {
    /// What the router reads of a parsed chat body.
    pub fn from_chat(chat: &'a ChatRequest<'_>) -> RouteRequest<'a> {
        let turns: Vec<Turn<'a>> =
            chat.texts.iter().map(|t| Turn { role: t.role, message: t.message, text: t.text.as_ref() }).collect();
        let messages = chat.texts.last().map_or(0, |t| u64::from(t.message).saturating_add(1));
        RouteRequest {
            prompt_tokens: estimate(&turns, messages),
            turns,
            max_tokens: chat.max_tokens,
            tools: chat.tools,
            vision: chat.images > 0,
            json_mode: chat.json_mode,
        }
    }

    /// A single user message (the CLI's `{"prompt": …}`).
    pub fn from_prompt(text: &'a str) -> RouteRequest<'a> {
        let turns = vec![Turn { role: Role::User, message: 0, text }];
        RouteRequest { prompt_tokens: estimate(&turns, 1), turns, ..RouteRequest::default() }
    }

    /// What the score reads.
    pub fn prompt(&self) -> Prompt<'_> {
        Prompt { turns: &self.turns, tools: self.tools }
    }

    /// Tokens the context window must hold: the prompt plus `max_tokens`.
    pub fn context_tokens(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.max_tokens.unwrap_or(0))
    }
}

fn estimate(turns: &[Turn<'_>], messages: u64) -> u64 {
    let bytes: u64 = turns.iter().map(|t| t.text.len() as u64).fold(0, u64::saturating_add);
    bytes.div_ceil(BYTES_PER_TOKEN).saturating_add(messages.saturating_mul(TOKENS_PER_MESSAGE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::openai::parse_chat;

    #[test]
    fn reads_text_images_tools_and_json_mode_from_a_chat_body() {
        let body = br#"{"model":"auto","max_tokens":100,"messages":[
            {"role":"system","content":"Be brief."},
            {"role":"user","content":[{"type":"text","text":"What is in \"this\" image?"},
                                      {"type":"image_url","image_url":{"url":"data:x"}}]},
            7,
            {"role":"assistant","content":null}],
            "tools":[{"type":"function","function":{"name":"f"}}],
            "response_format":{"type":"json_object"}}"#;
        let chat = parse_chat(body).unwrap();
        let r = RouteRequest::from_chat(&chat);
        let texts: Vec<(&str, Role, u32)> = r.turns.iter().map(|t| (t.text, t.role, t.message)).collect();
        assert_eq!(texts, [("Be brief.", Role::System, 0), ("What is in \"this\" image?", Role::User, 1)]);
        assert!(r.vision && r.json_mode);
        assert_eq!(r.tools, 1);
        assert_eq!(r.max_tokens, Some(100));
        // 9 + 24 bytes of text → 9 tokens, plus 4 per message up to the last with text.
        assert_eq!(r.prompt_tokens, 9 + 2 * TOKENS_PER_MESSAGE);
        assert_eq!(r.context_tokens(), r.prompt_tokens + 100);
    }

    #[test]
    fn plain_text_borrows_and_text_response_format_is_not_json() {
        let body = br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"response_format":{"type":"text"}}"#;
        let chat = parse_chat(body).unwrap();
        assert!(matches!(chat.texts[0].text, std::borrow::Cow::Borrowed("hi")));
        let r = RouteRequest::from_chat(&chat);
        assert!(!r.json_mode && !r.vision && r.tools == 0);
    }
}
