//! Anthropic Messages API wire format: request checks, response, streaming events,
//! error shape.

use serde::Deserialize;
use serde_json::json;

use crate::openai::EventKind;
use crate::request::{token, Answer};

fn msg_id(a: &Answer) -> String {
    format!("msg_mock{:016x}", a.id)
}

fn stop_reason(a: &Answer) -> &'static str {
    if a.tool.is_some() {
        "tool_use"
    } else if a.truncated {
        "max_tokens"
    } else {
        "end_turn"
    }
}

#[derive(Deserialize)]
struct RequestCheck {
    #[serde(default)]
    messages: Vec<MessageCheck>,
    #[serde(default)]
    tools: Vec<ToolCheck>,
    #[serde(default)]
    tool_choice: Option<ToolChoiceCheck>,
}

#[derive(Deserialize)]
struct MessageCheck {
    #[serde(default)]
    role: String,
    #[serde(default)]
    content: ContentCheck,
}

#[derive(Deserialize, Default)]
#[serde(untagged)]
enum ContentCheck {
    #[default]
    None,
    Blocks(Vec<BlockCheck>),
    /// A plain string (or anything else): nothing to check. Last: it takes any value.
    Text(serde::de::IgnoredAny),
}

#[derive(Deserialize)]
struct BlockCheck {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    source: Option<SourceCheck>,
    #[serde(default)]
    tool_use_id: Option<String>,
}

#[derive(Deserialize)]
struct SourceCheck {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    data: Option<String>,
    #[serde(default)]
    url: Option<String>,
}

#[derive(Deserialize)]
struct ToolCheck {
    name: String,
}

#[derive(Deserialize)]
struct ToolChoiceCheck {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    name: Option<String>,
}

/// Checks a Messages request the way the real API refuses what the gateway's
/// translation must never send: roles other than `user`/`assistant` (a `system` message
/// belongs in the top-level `system`), an image block without a usable source, a
/// `tool_result` without its `tool_use_id`, a forced tool that is not declared. `Ok`
/// names the tool to call when `tool_choice` forces one (`any`: the first declared).
pub fn check_request(body: &[u8]) -> Result<Option<String>, String> {
    let req: RequestCheck = serde_json::from_slice(body).map_err(|e| format!("invalid request body: {e}"))?;
    for (i, m) in req.messages.iter().enumerate() {
        if m.role != "user" && m.role != "assistant" {
            return Err(format!(
                "messages.{i}.role: Input should be 'user' or 'assistant' (a \"{}\" message is not allowed; use the top-level system parameter)",
                m.role
            ));
        }
        let ContentCheck::Blocks(blocks) = &m.content else { continue };
        for (j, b) in blocks.iter().enumerate() {
            match (b.kind.as_str(), &b.source) {
                ("image", Some(SourceCheck { kind, media_type: Some(t), data: Some(d), .. }))
                    if kind == "base64" && t.starts_with("image/") && !d.is_empty() => {}
                ("image", Some(SourceCheck { kind, url: Some(u), .. })) if kind == "url" && u.starts_with("http") => {}
                ("image", _) => return Err(format!("messages.{i}.content.{j}.image.source: invalid image source")),
                ("tool_result", _) if b.tool_use_id.as_deref().is_none_or(str::is_empty) => {
                    return Err(format!("messages.{i}.content.{j}.tool_result.tool_use_id: Field required"))
                }
                _ => {}
            }
        }
    }
    match req.tool_choice {
        Some(ToolChoiceCheck { kind, name }) if kind == "tool" => match name {
            Some(n) if req.tools.iter().any(|t| t.name == n) => Ok(Some(n)),
            _ => Err("tool_choice.name: the named tool is not in tools".to_string()),
        },
        Some(ToolChoiceCheck { kind, .. }) if kind == "any" => match req.tools.first() {
            Some(t) => Ok(Some(t.name.clone())),
            None => Err("tool_choice: `any` needs at least one tool".to_string()),
        },
        _ => Ok(None),
    }
}

/// The input of the mock's tool calls.
const TOOL_INPUT: &str = r#"{"query": "lorem ipsum"}"#;

/// The input of the mock's tool calls, in the pieces a stream sends them.
const TOOL_INPUT_PIECES: [&str; 3] = ["{\"query\"", ": \"lorem", " ipsum\"}"];

fn tool_id(a: &Answer) -> String {
    format!("toolu_mock{:016x}", a.id)
}

fn content(a: &Answer) -> serde_json::Value {
    match &a.tool {
        Some(name) => {
            let input: serde_json::Value = serde_json::from_str(TOOL_INPUT).unwrap_or_default();
            json!([{"type": "tool_use", "id": tool_id(a), "name": name, "input": input}])
        }
        None => json!([{"type": "text", "text": a.content()}]),
    }
}

/// The body of a non-streamed `message`.
pub fn message_body(a: &Answer) -> Vec<u8> {
    let body = json!({
        "id": msg_id(a),
        "type": "message",
        "role": "assistant",
        "model": a.model,
        "content": content(a),
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
    let n = if a.tool.is_some() { TOOL_INPUT_PIECES.len() } else { a.completion_tokens };
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
        1 => {
            let block = match &a.tool {
                Some(name) => json!({"type": "tool_use", "id": tool_id(a), "name": name, "input": {}}),
                None => json!({"type": "text", "text": ""}),
            };
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": block}),
                EventKind::Trailer,
            )
        }
        2 => ("ping", json!({"type": "ping"}), EventKind::Trailer),
        i if i < 3 + n => (
            "content_block_delta",
            match a.tool {
                Some(_) => json!({"type": "content_block_delta", "index": 0,
                   "delta": {"type": "input_json_delta", "partial_json": TOOL_INPUT_PIECES.get(i - 3).copied().unwrap_or("")}}),
                None => json!({"type": "content_block_delta", "index": 0,
                   "delta": {"type": "text_delta", "text": token(i - 3)}}),
            },
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
            tool: None,
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
    fn requests_are_checked_like_the_real_api() {
        let ok = br#"{"messages":[{"role":"user","content":[{"type":"text","text":"hi"},
            {"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBORw0KGgo="}},
            {"type":"image","source":{"type":"url","url":"https://example.com/a.png"}}]}]}"#;
        assert_eq!(check_request(ok), Ok(None));
        let system = br#"{"messages":[{"role":"system","content":"x"},{"role":"user","content":"y"}]}"#;
        assert!(check_request(system).is_err_and(|e| e.contains("system")));
        let image = br#"{"messages":[{"role":"user","content":[{"type":"image","source":{"type":"base64"}}]}]}"#;
        assert!(check_request(image).is_err_and(|e| e.contains("image")));
        let forced = br#"{"messages":[],"tools":[{"name":"search","input_schema":{}}],"tool_choice":{"type":"any"}}"#;
        assert_eq!(check_request(forced), Ok(Some("search".to_string())));
        let unknown = br#"{"messages":[],"tools":[],"tool_choice":{"type":"tool","name":"x"}}"#;
        assert!(check_request(unknown).is_err());
    }

    #[test]
    fn a_forced_tool_is_called_whole_and_streamed() {
        let mut a = answer(2);
        a.tool = Some("search".into());
        let v: Value = serde_json::from_slice(&message_body(&a)).expect("json");
        assert_eq!(v["content"][0]["type"], "tool_use");
        assert_eq!(v["content"][0]["input"]["query"], "lorem ipsum");
        assert_eq!(v["stop_reason"], "tool_use");
        let mut json = String::new();
        for i in 0..100 {
            let mut out = Vec::new();
            if stream_event(&a, i, &mut out).is_none() {
                break;
            }
            let s = String::from_utf8(out).expect("utf8");
            let data: Value =
                serde_json::from_str(s.lines().nth(1).expect("data").trim_start_matches("data: ")).expect("json");
            if let Some(piece) = data["delta"]["partial_json"].as_str() {
                json.push_str(piece);
            }
        }
        assert_eq!(serde_json::from_str::<Value>(&json).expect("input"), v["content"][0]["input"]);
    }

    #[test]
    fn error_shape() {
        let v: Value = serde_json::from_slice(&status_error_body(401, "invalid x-api-key")).expect("json");
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "authentication_error");
    }
}
