//! Token usage as providers report it, read from whole answers and from streams.

use gatekeeper_net::sse::DataLines;
use serde::Deserialize;

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
pub fn from_body(body: &[u8]) -> Option<Usage> {
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
                if let Some(u) = from_body(data) {
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
    fn reads_usage_from_a_body() {
        let body = br#"{"id":"x","usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}}"#;
        assert_eq!(from_body(body), Some(Usage { prompt_tokens: 7, completion_tokens: 3 }));
        assert_eq!(from_body(b"{\"id\":1}"), None);
        assert_eq!(from_body(b"not json"), None);
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
