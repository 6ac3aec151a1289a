//! Anthropic Messages API wire format: response, streaming events, error shape.

use serde_json::json;

use crate::openai::EventKind;
use crate::request::{token, Answer};

fn msg_id(a: &Answer) -> String {
    format!("msg_mock{:016x}", a.id)
}

fn stop_reason(a: &Answer) -> &'static str {
    if a.truncated {
        "max_tokens"
    } else {
        "end_turn"
    }
}

/// The body of a non-streamed `message`.
pub fn message_body(a: &Answer) -> Vec<u8> {
    let body = json!({
        "id": msg_id(a),
        "type": "message",
        "role": "assistant",
        "model": a.model,
        "content": [{"type": "text", "text": a.content()}],
        "stop_reason": stop_reason(a),
        "stop_sequence": null,
        "usage": {
            "input_tokens": a.prompt_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": a.completion_tokens,
        }
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

/// Appends SSE event `i` (`event: …\ndata: …\n\n`) to `out`; `None` past the end.
///
/// Order: message_start, content_block_start, ping, one content_block_delta per token,
/// content_block_stop, message_delta (stop reason + usage), message_stop.
pub fn stream_event(a: &Answer, i: usize, out: &mut Vec<u8>) -> Option<EventKind> {
    let n = a.completion_tokens;
    let (name, data, kind) = match i {
        0 => (
            "message_start",
            json!({"type": "message_start", "message": {
                "id": msg_id(a), "type": "message", "role": "assistant", "model": a.model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": a.prompt_tokens, "cache_creation_input_tokens": 0,
                          "cache_read_input_tokens": 0, "output_tokens": 1}}}),
            EventKind::First,
        ),
        1 => (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
                   "content_block": {"type": "text", "text": ""}}),
            EventKind::Trailer,
        ),
        2 => ("ping", json!({"type": "ping"}), EventKind::Trailer),
        i if i < 3 + n => (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
                   "delta": {"type": "text_delta", "text": token(i - 3)}}),
            // The first token follows message_start's TTFT; later ones are paced.
            if i == 3 { EventKind::Trailer } else { EventKind::Token },
        ),
        i if i == 3 + n => {
            ("content_block_stop", json!({"type": "content_block_stop", "index": 0}), EventKind::Trailer)
        }
        i if i == 4 + n => (
            "message_delta",
            json!({"type": "message_delta",
                   "delta": {"stop_reason": stop_reason(a), "stop_sequence": null},
                   "usage": {"output_tokens": n}}),
            EventKind::Trailer,
        ),
        i if i == 5 + n => ("message_stop", json!({"type": "message_stop"}), EventKind::Trailer),
        _ => return None,
    };
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    let _ = serde_json::to_writer(&mut *out, &data);
    out.extend_from_slice(b"\n\n");
    Some(kind)
}

/// An error body in Anthropic's shape.
pub fn error_body(kind: &str, message: &str) -> Vec<u8> {
    let body = json!({"type": "error", "error": {"type": kind, "message": message}});
    serde_json::to_vec(&body).unwrap_or_default()
}

/// The error Anthropic sends with `status` for the mock's canned failures.
pub fn status_error_body(status: u16, message: &str) -> Vec<u8> {
    let kind = match status {
        401 => "authentication_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        500 => "api_error",
        503 | 529 => "overloaded_error",
        _ => "invalid_request_error",
    };
    error_body(kind, message)
}

/// `GET /v1/models` in Anthropic's shape.
pub fn models_body() -> Vec<u8> {
    let ids = ["claude-3-5-haiku-20241022", "claude-sonnet-4-20250514"];
    let data: Vec<serde_json::Value> = ids
        .iter()
        .map(|id| json!({"type": "model", "id": id, "display_name": id, "created_at": "2024-10-22T00:00:00Z"}))
        .collect();
    let body = json!({"data": data, "has_more": false, "first_id": ids[0], "last_id": ids[1]});
    serde_json::to_vec(&body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn answer(n: usize) -> Answer {
        Answer {
            id: 1,
            created: 1,
            model: "claude".into(),
            prompt_tokens: 9,
            completion_tokens: n,
            truncated: true,
            include_usage: false,
        }
    }

    #[test]
    fn message_shape() {
        let v: Value = serde_json::from_slice(&message_body(&answer(2))).expect("json");
        assert_eq!(v["type"], "message");
        assert_eq!(v["content"][0]["text"], "lorem ipsum ");
        assert_eq!(v["stop_reason"], "max_tokens");
        assert_eq!(v["usage"]["input_tokens"], 9);
        assert_eq!(v["usage"]["output_tokens"], 2);
    }

    #[test]
    fn stream_order() {
        let mut names = Vec::new();
        for i in 0..100 {
            let mut out = Vec::new();
            if stream_event(&answer(2), i, &mut out).is_none() {
                break;
            }
            let s = String::from_utf8(out).expect("utf8");
            let name = s.lines().next().expect("line").trim_start_matches("event: ").to_string();
            let data: Value =
                serde_json::from_str(s.lines().nth(1).expect("data").trim_start_matches("data: ")).expect("json");
            assert_eq!(data["type"], name.as_str());
            names.push(name);
        }
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "ping",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
    }

    #[test]
    fn error_shape() {
        let v: Value = serde_json::from_slice(&status_error_body(401, "invalid x-api-key")).expect("json");
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "authentication_error");
    }
}
