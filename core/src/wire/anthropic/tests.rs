//! Translation tests on the example payloads of Anthropic's Messages API and
//! streaming documentation.

use serde_json::{json, Value};

use super::*;
use crate::wire::openai::Usage;

fn translate(body: Value) -> Value {
    let bytes = messages_body(&serde_json::to_vec(&body).expect("json"), "claude-up", 4096).expect("translates");
    serde_json::from_slice(&bytes).expect("json out")
}

fn refused(body: Value) -> (String, Option<&'static str>) {
    match messages_body(&serde_json::to_vec(&body).expect("json"), "claude-up", 4096) {
        Err(e) => (e.message, e.param),
        Ok(b) => panic!("expected a refusal, got {}", String::from_utf8_lossy(&b)),
    }
}

#[test]
fn system_is_lifted_and_roles_merged() {
    let v = translate(json!({
        "model": "m", "temperature": 0.5, "top_p": 0.9, "stop": "END", "user": "u-1",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
            {"role": "user", "content": "Hello"},
            {"role": "user", "content": [{"type": "text", "text": "there"}]},
            {"role": "assistant", "content": "Bonjour"}
        ]
    }));
    assert_eq!(v["model"], "claude-up");
    assert_eq!(v["max_tokens"], 4096, "the default when the client sets none");
    assert_eq!(v["system"], "Be brief.\n\nAnswer in French.");
    assert_eq!(v["stop_sequences"], json!(["END"]));
    assert_eq!((v["temperature"].as_f64(), v["top_p"].as_f64()), (Some(0.5), Some(0.9)));
    assert_eq!(v["metadata"]["user_id"], "u-1");
    assert_eq!(
        v["messages"],
        json!([
            {"role": "user", "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": "there"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "Bonjour"}]}
        ])
    );
    assert!(v.get("stream").is_none());
    let v = translate(json!({"model": "m", "max_tokens": 7, "max_completion_tokens": 9, "stream": true,
        "stop": ["a", "b"], "messages": [{"role": "user", "content": "x"}]}));
    assert_eq!((v["max_tokens"].as_u64(), v["stream"].as_bool()), (Some(9), Some(true)));
    assert_eq!(v["stop_sequences"], json!(["a", "b"]));
}

#[test]
fn tools_and_tool_results_round_trip() {
    let v = translate(json!({
        "model": "m",
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Get the current weather in a given location",
            "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}},
            {"type": "function", "function": {"name": "now"}}],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": false,
        "messages": [
            {"role": "user", "content": "What's the weather like in San Francisco?"},
            {"role": "assistant", "content": "", "tool_calls": [{"id": "toolu_01A09q90qw90lq917835lq9", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"location\": \"San Francisco, CA\"}"}}]},
            {"role": "tool", "tool_call_id": "toolu_01A09q90qw90lq917835lq9", "content": "15 degrees"},
            {"role": "user", "content": "And tomorrow?"}
        ]
    }));
    assert_eq!(v["tools"][0]["name"], "get_weather");
    assert_eq!(v["tools"][0]["input_schema"]["required"], json!(["location"]));
    assert_eq!(v["tools"][1]["input_schema"]["type"], "object", "a function without parameters gets an empty schema");
    assert_eq!(v["tool_choice"], json!({"type": "tool", "name": "get_weather", "disable_parallel_tool_use": true}));
    assert_eq!(
        v["messages"][1],
        json!({"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9",
            "name": "get_weather", "input": {"location": "San Francisco, CA"}}]})
    );
    assert_eq!(
        v["messages"][2],
        json!({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_01A09q90qw90lq917835lq9", "content": [{"type": "text", "text": "15 degrees"}]},
            {"type": "text", "text": "And tomorrow?"}]}),
        "the tool result and the next user message are one turn"
    );
    for (choice, want) in [("auto", "auto"), ("none", "none"), ("required", "any")] {
        let v = translate(json!({"model": "m", "tool_choice": choice, "messages": [{"role": "user", "content": "x"}]}));
        assert_eq!(v["tool_choice"], json!({"type": want}));
    }
}

#[test]
fn image_parts_become_image_blocks() {
    let v = translate(json!({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is in these images?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}},
        {"type": "image_url", "image_url": {"url": "https://upload.wikimedia.org/a.jpg"}}
    ]}]}));
    let content = &v["messages"][0]["content"];
    assert_eq!(
        content[1],
        json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}})
    );
    assert_eq!(
        content[2],
        json!({"type": "image", "source": {"type": "url", "url": "https://upload.wikimedia.org/a.jpg"}})
    );
    let (msg, param) = refused(json!({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}]}));
    assert_eq!(param, Some("messages"));
    assert!(msg.contains("messages[0].content[0].image_url.url"), "{msg}");
    let (msg, _) = refused(json!({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/bmp;base64,AAAA"}}]}]}));
    assert!(msg.contains("image/png"), "{msg}");
}

#[test]
fn what_cannot_be_translated_is_refused_by_name() {
    let user = json!([{"role": "user", "content": "x"}]);
    for (field, value) in [
        ("n", json!(2)),
        ("logprobs", json!(true)),
        ("top_logprobs", json!(3)),
        ("logit_bias", json!({"50256": -100})),
        ("response_format", json!({"type": "json_object"})),
        ("presence_penalty", json!(0.5)),
        ("frequency_penalty", json!(1)),
        ("functions", json!([])),
        ("function_call", json!("auto")),
        ("audio", json!({"voice": "alloy"})),
        ("modalities", json!(["text", "audio"])),
        ("prediction", json!({"type": "content", "content": "x"})),
    ] {
        let (msg, param) = refused(json!({"model": "m", "messages": user, field: value}));
        assert_eq!(param, Some(field), "{field}: {msg}");
        assert!(msg.contains(field), "{msg}");
    }
    // Harmless values of the same fields pass, and unknown fields are dropped.
    let v = translate(json!({"model": "m", "messages": user, "n": 1, "logprobs": false, "logit_bias": {},
        "response_format": {"type": "text"}, "presence_penalty": 0, "seed": 7, "store": true, "service_tier": "auto",
        "stream_options": {"include_usage": true}}));
    assert!(v.get("seed").is_none() && v.get("n").is_none() && v.get("stream_options").is_none());
    let (msg, _) = refused(json!({"model": "m", "messages": [{"role": "assistant", "content": null,
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]}]}));
    assert!(msg.contains("messages[0].tool_calls") && msg.contains("c1"), "{msg}");
    let (_, param) =
        refused(json!({"model": "m", "messages": [{"role": "system", "content": "only a system prompt"}]}));
    assert_eq!(param, Some("messages"));
    let (_, param) = refused(json!({"model": "m", "messages": [{"role": "tool", "content": "no id"}]}));
    assert_eq!(param, Some("messages"));
    let (_, param) = refused(json!({"model": "m", "tools": [{"type": "code_interpreter"}], "messages": user}));
    assert_eq!(param, Some("tools"));
    let (_, param) = refused(json!({"model": "m", "tool_choice": "sometimes", "messages": user}));
    assert_eq!(param, Some("tool_choice"));
}

#[test]
fn a_whole_message_becomes_a_chat_completion() {
    // The example response of the Messages API reference.
    let body = json!({"id": "msg_013Zva2CMHLNnXjNJJKqJ2EF", "type": "message", "role": "assistant",
        "model": "claude-sonnet-4-20250514",
        "content": [{"type": "text", "text": "Hi! My name is Claude."}],
        "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": 2095, "output_tokens": 503, "cache_read_input_tokens": 5, "cache_creation_input_tokens": 0}});
    let (json, usage) = chat_completion(&serde_json::to_vec(&body).expect("json"), 1_700_000_000).expect("translates");
    let v: Value = serde_json::from_slice(&json).expect("json");
    assert_eq!(usage, Some(Usage { prompt_tokens: 2100, completion_tokens: 503 }));
    assert_eq!(v["id"], "msg_013Zva2CMHLNnXjNJJKqJ2EF");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["created"], 1_700_000_000);
    assert_eq!(v["model"], "claude-sonnet-4-20250514");
    assert_eq!(
        v["choices"][0]["message"],
        json!({"role": "assistant", "content": "Hi! My name is Claude.", "refusal": null})
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 2100, "completion_tokens": 503, "total_tokens": 2603,
        "prompt_tokens_details": {"cached_tokens": 5}})
    );
}

#[test]
fn tool_use_blocks_become_tool_calls() {
    let body = json!({"id": "msg_01Aq9w938a90dw8q", "type": "message", "role": "assistant", "model": "claude",
        "content": [{"type": "text", "text": "I'll check the weather."},
            {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather",
             "input": {"location": "San Francisco, CA", "unit": "celsius"}}],
        "stop_reason": "tool_use", "usage": {"input_tokens": 10, "output_tokens": 20}});
    let (json, _) = chat_completion(&serde_json::to_vec(&body).expect("json"), 1).expect("translates");
    let v: Value = serde_json::from_slice(&json).expect("json");
    let call = &v["choices"][0]["message"]["tool_calls"][0];
    assert_eq!((call["id"].as_str(), call["type"].as_str()), (Some("toolu_01A09q90qw90lq917835lq9"), Some("function")));
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().expect("a string")).expect("json args");
    assert_eq!(args, json!({"location": "San Francisco, CA", "unit": "celsius"}));
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    for (stop, want) in [("max_tokens", "length"), ("stop_sequence", "stop"), ("end_turn", "stop")] {
        assert_eq!(response::finish_reason(stop), want);
    }
    assert!(chat_completion(b"not json", 1).is_err());
}

#[test]
fn errors_keep_their_message() {
    let body = br#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: Field required"}}"#;
    let v: Value = serde_json::from_slice(&error_body(400, body)).expect("json");
    assert_eq!(v["error"]["message"], "max_tokens: Field required");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(v["error"]["code"], "invalid_request_error");
    let v: Value = serde_json::from_slice(&error_body(502, b"<html>")).expect("json");
    assert_eq!(v["error"]["message"], "the provider answered HTTP 502");
}

/// The "basic streaming request" example of Anthropic's streaming documentation.
const BASIC_STREAM: &str = "event: message_start\n\
data: {\"type\": \"message_start\", \"message\": {\"id\": \"msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY\", \"type\": \"message\", \"role\": \"assistant\", \"content\": [], \"model\": \"claude-opus-4-6\", \"stop_reason\": null, \"stop_sequence\": null, \"usage\": {\"input_tokens\": 25, \"output_tokens\": 1}}}\n\n\
event: content_block_start\n\
data: {\"type\": \"content_block_start\", \"index\": 0, \"content_block\": {\"type\": \"text\", \"text\": \"\"}}\n\n\
event: ping\n\
data: {\"type\": \"ping\"}\n\n\
event: content_block_delta\n\
data: {\"type\": \"content_block_delta\", \"index\": 0, \"delta\": {\"type\": \"text_delta\", \"text\": \"Hello\"}}\n\n\
event: content_block_delta\n\
data: {\"type\": \"content_block_delta\", \"index\": 0, \"delta\": {\"type\": \"text_delta\", \"text\": \"!\"}}\n\n\
event: content_block_stop\n\
data: {\"type\": \"content_block_stop\", \"index\": 0}\n\n\
event: message_delta\n\
data: {\"type\": \"message_delta\", \"delta\": {\"stop_reason\": \"end_turn\", \"stop_sequence\":null}, \"usage\": {\"output_tokens\": 15}}\n\n\
event: message_stop\n\
data: {\"type\": \"message_stop\"}\n\n";

/// The tool-use streaming example: a text block, then a tool_use block whose input
/// arrives as partial JSON.
const TOOL_STREAM: &str = "event: message_start\n\
data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_014p7gG3wDgGV9EUtLvnow3U\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-opus-4-6\",\"stop_sequence\":null,\"usage\":{\"input_tokens\":472,\"output_tokens\":2},\"content\":[],\"stop_reason\":null}}\n\n\
event: content_block_start\n\
data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Okay\"}}\n\n\
event: content_block_stop\n\
data: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
event: content_block_start\n\
data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_01T1x1fJ34qAmk2tNTrN7Up6\",\"name\":\"get_weather\",\"input\":{}}}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"location\\\":\"}}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\" \\\"San Francisco, CA\\\"}\"}}\n\n\
event: content_block_stop\n\
data: {\"type\":\"content_block_stop\",\"index\":1}\n\n\
event: message_delta\n\
data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":89}}\n\n\
event: message_stop\n\
data: {\"type\":\"message_stop\"}\n\n";

fn run(wire: &[u8], include_usage: bool) -> (Vec<Value>, StreamTranslator) {
    let mut t = StreamTranslator::new(42, include_usage);
    let mut out = Vec::new();
    t.feed(wire, &mut out);
    let events = String::from_utf8(out)
        .expect("utf8")
        .split("\n\n")
        .filter_map(|ev| ev.trim().strip_prefix("data: ").map(|d| serde_json::from_str(d).expect("json chunk")))
        .collect();
    (events, t)
}

#[test]
fn a_text_stream_becomes_chunks() {
    let (chunks, t) = run(BASIC_STREAM.as_bytes(), true);
    assert_eq!(t.state(), &StreamState::Complete);
    assert_eq!(t.usage(), Some(Usage { prompt_tokens: 25, completion_tokens: 15 }));
    assert_eq!(chunks.len(), 5, "{chunks:?}");
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk" && c["created"] == 42));
    assert!(chunks
        .iter()
        .all(|c| c["id"] == "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY" && c["model"] == "claude-opus-4-6"));
    assert_eq!(chunks[0]["choices"][0]["delta"], json!({"role": "assistant", "content": ""}));
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, "Hello!");
    assert_eq!(chunks[3]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[4]["choices"], json!([]));
    assert_eq!(chunks[4]["usage"], json!({"prompt_tokens": 25, "completion_tokens": 15, "total_tokens": 40}));
    let (chunks, t) = run(BASIC_STREAM.as_bytes(), false);
    assert_eq!(chunks.len(), 4, "no usage chunk unless asked");
    assert_eq!(t.usage(), Some(Usage { prompt_tokens: 25, completion_tokens: 15 }), "usage is read all the same");
}

#[test]
fn a_tool_stream_becomes_tool_call_deltas() {
    let (chunks, t) = run(TOOL_STREAM.as_bytes(), false);
    assert_eq!(t.state(), &StreamState::Complete);
    let calls: Vec<&Value> = chunks.iter().filter_map(|c| c["choices"][0]["delta"].get("tool_calls")).collect();
    assert_eq!(
        calls[0],
        &json!([{"index": 0, "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "type": "function",
            "function": {"name": "get_weather", "arguments": ""}}])
    );
    let args: String = calls.iter().filter_map(|c| c[0]["function"]["arguments"].as_str()).collect();
    assert_eq!(serde_json::from_str::<Value>(&args).expect("arguments"), json!({"location": "San Francisco, CA"}));
    assert!(calls.iter().all(|c| c[0]["index"] == 0));
    assert_eq!(chunks.last().expect("chunks")["choices"][0]["finish_reason"], "tool_calls");
}

#[test]
fn an_error_event_ends_the_stream_with_an_openai_error() {
    let wire = format!(
        "{}event: error\ndata: {{\"type\": \"error\", \"error\": {{\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}}}\n\n",
        &BASIC_STREAM[..BASIC_STREAM.find("event: content_block_stop").expect("cut")]
    );
    let (chunks, t) = run(wire.as_bytes(), false);
    assert!(matches!(t.state(), StreamState::Failed { message } if message.contains("Overloaded")));
    let last = chunks.last().expect("chunks");
    assert_eq!(last["error"]["code"], "overloaded_error");
    assert!(chunks.iter().all(|c| c["choices"][0]["finish_reason"].is_null()), "no normal end");
    let (chunks, t) = run(b"data: {not json\n\n", false);
    assert!(matches!(t.state(), StreamState::Failed { .. }));
    assert_eq!(chunks[0]["error"]["code"], "upstream_stream_error");
}

#[test]
fn an_overlong_line_fails_the_stream() {
    let mut t = StreamTranslator::new(1, false);
    let mut out = Vec::new();
    let piece = vec![b'a'; 64 * 1024];
    for _ in 0..(stream::EVENT_BYTES_MAX / piece.len() + 1) {
        t.feed(&piece, &mut out);
    }
    assert!(matches!(t.state(), StreamState::Failed { .. }));
}

#[test]
fn chunking_never_changes_the_output() {
    for wire in [BASIC_STREAM, TOOL_STREAM] {
        let whole = {
            let mut t = StreamTranslator::new(7, true);
            let mut out = Vec::new();
            t.feed(wire.as_bytes(), &mut out);
            out
        };
        let crlf = wire.replace('\n', "\r\n");
        for wire in [wire.to_string(), crlf] {
            for cut in (0..wire.len()).step_by(7) {
                let mut t = StreamTranslator::new(7, true);
                let mut out = Vec::new();
                t.feed(&wire.as_bytes()[..cut], &mut out);
                t.feed(&wire.as_bytes()[cut..], &mut out);
                assert_eq!(out, whole, "cut at {cut}");
            }
        }
    }
}

proptest::proptest! {
    #[test]
    fn the_translators_never_panic_and_ignore_chunking(
        data in proptest::collection::vec(proptest::num::u8::ANY, 0..512),
        cuts in proptest::collection::vec(0usize..512, 0..6),
    ) {
        let mut whole = Vec::new();
        StreamTranslator::new(1, true).feed(&data, &mut whole);
        let mut pieces = Vec::new();
        let mut t = StreamTranslator::new(1, true);
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
        cuts.sort_unstable();
        let mut at = 0;
        for c in cuts.into_iter().chain([data.len()]) {
            t.feed(&data[at..c], &mut pieces);
            at = c;
        }
        proptest::prop_assert_eq!(pieces, whole);
        let _ = chat_completion(&data, 1);
        let _ = error_body(400, &data);
        let _ = messages_body(&data, "m", 1);
    }

    #[test]
    fn stream_prefixes_of_real_events_never_panic(cut in 0usize..4096, flip in 0usize..4096, byte in proptest::num::u8::ANY) {
        let mut wire = TOOL_STREAM.as_bytes().to_vec();
        let cut = cut.min(wire.len());
        if let Some(b) = wire.get_mut(flip) {
            *b = byte;
        }
        let mut out = Vec::new();
        let mut t = StreamTranslator::new(1, true);
        t.feed(&wire[..cut], &mut out);
        t.feed(&wire[cut..], &mut out);
    }
}
