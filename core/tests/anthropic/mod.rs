//! `kind: anthropic` providers through the real gateway: a mock in Anthropic mode
//! answers Messages API requests translated from OpenAI chat completions, whole and
//! streamed, with tool calls and images; its errors fail over or pass through; a
//! stalled stream (any kind) ends with an error event and is audited.

use gatekeeper_mock::Mode;
use serde_json::{json, Value};

use crate::hardening::records_of;
use crate::harness::*;

/// An Anthropic-mode mock requiring `x-api-key: sk-ant` and `anthropic-version`.
fn anthropic_mock(name: &str) -> Mock {
    Mock::start(Mock::config(name).mode(Mode::Anthropic).api_key("sk-ant"))
}

/// A `kind: anthropic` provider block (base URL without `/v1`).
fn anthropic_provider(name: &str, mock: &Mock, extra: &str) -> String {
    format!(
        "  - {{ name: {name}, kind: anthropic, base_url: \"http://{}\", api_key: sk-ant, forward_headers: [user-agent, \"x-mock-*\"]{extra} }}\n",
        mock.addr
    )
}

/// A single-shard gateway serving model `m` from `providers` (blocks, name) in order.
fn gateway(providers: &[(String, &str)]) -> Gateway {
    let mut c = String::from("providers:\n");
    for (block, _) in providers {
        c.push_str(block);
    }
    c.push_str("models:\n");
    for (_, name) in providers {
        c.push_str(&format!("  - {{ name: m, provider: {name}, upstream_model: up-{name} }}\n"));
    }
    c.push_str("failover_chain:\n");
    for (i, (_, name)) in providers.iter().enumerate() {
        c.push_str(&format!("  - {{ provider: {name}, priority: {} }}\n", i + 1));
    }
    Gateway::start(&c, &["--no-auth", "--shards", "1"])
}

fn post(gw: &Gateway, body: &Value, headers: &str) -> Resp {
    request(gw.addr, &chat_request(&body.to_string(), headers))
}

fn events(r: &Resp) -> Vec<Value> {
    sse_data(&r.body).iter().filter(|d| *d != "[DONE]").map(|d| serde_json::from_str(d).expect("json event")).collect()
}

#[test]
fn whole_and_streamed_answers_are_translated() {
    let mock = anthropic_mock("claude");
    let gw = gateway(&[(anthropic_provider("claude", &mock, ", max_tokens_default: 5"), "claude")]);
    let body = json!({"model": "m", "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Say hello to the gateway"}]});
    let r = post(&gw, &body, "X-Request-Id: anth-whole\r\n");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-gatekeeper-provider"), Some("claude"));
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "up-claude");
    assert!(v["id"].as_str().is_some_and(|id| id.starts_with("msg_")), "{v}");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["message"]["content"], "lorem ipsum dolor sit amet ");
    assert_eq!(v["choices"][0]["finish_reason"], "length", "max_tokens_default (5) cut the answer");
    assert_eq!(v["usage"]["completion_tokens"], 5);
    let prompt = v["usage"]["prompt_tokens"].as_u64().expect("prompt tokens");
    assert!(prompt > 0);
    let record = records_of(&gw, "anth-whole");
    assert_eq!(record.len(), 1, "{record:?}");
    assert_eq!((record[0]["status"].as_u64(), record[0]["tokens_out"].as_u64()), (Some(200), Some(5)));
    assert_eq!(record[0]["tokens_in"].as_u64(), Some(prompt));

    for include_usage in [true, false] {
        let mut body = json!({"model": "m", "stream": true, "max_tokens": 4,
            "messages": [{"role": "user", "content": "Say hello to the gateway"}]});
        if include_usage {
            body["stream_options"] = json!({"include_usage": true});
        }
        let id = format!("anth-stream-{include_usage}");
        let r = post(&gw, &body, &format!("X-Request-Id: {id}\r\n"));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(sse_data(&r.body).last().map(String::as_str), Some("[DONE]"), "{}", r.text());
        let chunks = events(&r);
        assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk" && c["model"] == "up-claude"));
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
        assert_eq!(text, "lorem ipsum dolor sit ");
        let finish: Vec<&Value> =
            chunks.iter().map(|c| &c["choices"][0]["finish_reason"]).filter(|f| !f.is_null()).collect();
        assert_eq!(finish, [&json!("length")]);
        let usage: Vec<&Value> = chunks.iter().filter_map(|c| c.get("usage")).collect();
        if include_usage {
            assert_eq!(usage.len(), 1, "{chunks:?}");
            assert_eq!(usage[0]["completion_tokens"], 4);
        } else {
            assert!(usage.is_empty(), "no usage chunk unless asked: {chunks:?}");
        }
        let record = records_of(&gw, &id);
        assert_eq!(record[0]["tokens_out"].as_u64(), Some(4), "usage is read either way: {}", record[0]);
    }
    let metrics = request(gw.addr, b"GET /metrics HTTP/1.1\r\nHost: gw\r\n\r\n").text();
    assert!(metrics.contains("gatekeeper_tokens_total{provider=\"claude\""), "{metrics}");
    assert_eq!(mock.stats().requests, 3);
}

#[test]
fn a_tool_call_round_trips() {
    let mock = anthropic_mock("claude");
    let gw = gateway(&[(anthropic_provider("claude", &mock, ""), "claude")]);
    let tools = json!([{"type": "function", "function": {"name": "search", "description": "Search the web",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}}}]);
    let ask = json!({"model": "m", "tools": tools, "tool_choice": "required",
        "messages": [{"role": "user", "content": "Find lorem ipsum"}]});
    let r = post(&gw, &ask, "");
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    let call = v["choices"][0]["message"]["tool_calls"][0].clone();
    assert_eq!((call["type"].as_str(), call["function"]["name"].as_str()), (Some("function"), Some("search")));
    let args: Value = serde_json::from_str(call["function"]["arguments"].as_str().expect("string")).expect("json");
    assert_eq!(args, json!({"query": "lorem ipsum"}));

    // The same call streamed: id and name first, then the arguments in pieces.
    let mut streamed = ask.clone();
    streamed["stream"] = json!(true);
    let r = post(&gw, &streamed, "");
    let chunks = events(&r);
    let deltas: Vec<&Value> = chunks.iter().filter_map(|c| c["choices"][0]["delta"].get("tool_calls")).collect();
    assert!(deltas[0][0]["id"].as_str().is_some_and(|id| id.starts_with("toolu_")), "{deltas:?}");
    assert_eq!(deltas[0][0]["type"], "function");
    assert_eq!(deltas[0][0]["function"]["name"], "search");
    let pieces: String = deltas.iter().filter_map(|d| d[0]["function"]["arguments"].as_str()).collect();
    assert_eq!(serde_json::from_str::<Value>(&pieces).expect("arguments"), args);
    assert_eq!(sse_data(&r.body).last().map(String::as_str), Some("[DONE]"));

    // The result goes back: assistant tool_calls → tool_use, tool message → tool_result.
    let answer = json!({"model": "m", "tools": tools, "messages": [
        {"role": "user", "content": "Find lorem ipsum"},
        {"role": "assistant", "content": null, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "lorem ipsum is placeholder text"}]});
    let r = post(&gw, &answer, "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["choices"][0]["message"]["content"].as_str().is_some_and(|t| !t.is_empty()));
    let bad_args = json!({"model": "m", "messages": [
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "search", "arguments": "{oops"}}]},
        {"role": "user", "content": "x"}]});
    let r = post(&gw, &bad_args, "");
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["param"], "messages");
    assert_eq!(mock.stats().requests, 3, "a request that cannot be translated never reaches the provider");
}

#[test]
fn image_parts_reach_the_provider_as_image_blocks() {
    let mock = anthropic_mock("claude");
    let gw = gateway(&[(anthropic_provider("claude", &mock, ""), "claude")]);
    let body = json!({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is in this image?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgoAAAANSUhEUg=="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "high"}}]}]});
    let r = post(&gw, &body, "");
    assert_eq!(r.status, 200, "{}", r.text());
    let body = json!({"model": "m", "n": 3, "messages": [{"role": "user", "content": "x"}]});
    let r = post(&gw, &body, "");
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["param"], "n");
    assert_eq!(mock.stats().requests, 1);
}

#[test]
fn overloaded_fails_over_and_a_refusal_passes_through() {
    let claude = anthropic_mock("claude");
    let backup = Mock::start(Mock::config("backup"));
    let gw =
        gateway(&[(anthropic_provider("claude", &claude, ""), "claude"), (provider("backup", &backup, ""), "backup")]);
    for stream in [false, true] {
        // The mock answers 529 overloaded_error in Anthropic mode.
        let r = chat(gw.addr, "m", stream, "X-Mock-Fault: claude=503\r\n");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-gatekeeper-provider"), Some("backup"));
    }
    let r = chat(gw.addr, "m", false, "");
    assert_eq!(r.header("x-gatekeeper-provider"), Some("claude"), "{}", r.text());
    // A tool_choice naming an undeclared tool: the provider's 400, its message kept.
    let body = json!({"model": "m", "tool_choice": {"type": "function", "function": {"name": "nope"}},
        "messages": [{"role": "user", "content": "x"}]});
    let r = post(&gw, &body, "");
    assert_eq!(r.status, 400, "{}", r.text());
    let v = r.json();
    assert_eq!(v["error"]["message"], "tool_choice.name: the named tool is not in tools");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(backup.stats().requests, 2, "a 400 is the client's, not a reason to fail over");
}

#[test]
fn a_wrong_api_key_is_an_operator_error_and_fails_over() {
    let claude = Mock::start(Mock::config("claude").mode(Mode::Anthropic).api_key("sk-other"));
    let backup = Mock::start(Mock::config("backup"));
    let gw =
        gateway(&[(anthropic_provider("claude", &claude, ""), "claude"), (provider("backup", &backup, ""), "backup")]);
    let r = chat(gw.addr, "m", false, "");
    assert_eq!(r.header("x-gatekeeper-provider"), Some("backup"), "{}", r.text());
    assert_eq!(claude.stats().requests, 1);
}

#[test]
fn a_stalled_stream_ends_with_an_error_event_and_is_audited() {
    // The gap is bounded by `chunk_timeout_ms`, or by `read_idle_timeout_ms` when tighter.
    for (anthropic, extra) in [
        (true, ", chunk_timeout_ms: 300"),
        (false, ", chunk_timeout_ms: 300"),
        (false, ", chunk_timeout_ms: 10000, read_idle_timeout_ms: 300"),
    ] {
        let mock = if anthropic { anthropic_mock("slow") } else { Mock::start(Mock::config("slow")) };
        let block = if anthropic { anthropic_provider("slow", &mock, extra) } else { provider("slow", &mock, extra) };
        let gw = gateway(&[(block, "slow")]);
        let body = json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "x"}]});
        let started = std::time::Instant::now();
        let r = post(&gw, &body, "X-Request-Id: stalled\r\nX-Mock-Token-Ms: 5000\r\nX-Mock-Tokens: 3\r\n");
        assert!(started.elapsed() < std::time::Duration::from_secs(4), "cut at the chunk timeout");
        assert_eq!(r.status, 200, "the head was already sent");
        let data = sse_data(&r.body);
        assert!(data.iter().all(|d| d != "[DONE]"), "a stalled stream must not look complete: {data:?}");
        let last: Value = serde_json::from_str(data.last().expect("events")).expect("json");
        assert_eq!(last["error"]["code"], "upstream_stream_stalled", "{last}");
        let records = records_of(&gw, "stalled");
        assert_eq!(records.len(), 1, "{records:?}");
        assert_eq!(records[0]["status"], 504, "{}", records[0]);
        let attempts = records[0]["attempts"].to_string();
        assert!(attempts.contains("slow: stream stalled (nothing for 300 ms)"), "{attempts}");
        let metrics = request(gw.addr, b"GET /metrics HTTP/1.1\r\nHost: gw\r\n\r\n").text();
        assert!(metrics.contains("gatekeeper_upstream_stream_stalls_total{provider=\"slow\"} 1"), "{metrics}");
        assert!(metrics.contains("gatekeeper_upstream_failures_total{provider=\"slow\"} 1"), "{metrics}");
    }
}

#[test]
fn bad_anthropic_settings_are_refused_at_start() {
    let mock = anthropic_mock("claude");
    for (extra, path) in [
        (", max_tokens_default: 0", "providers[0].max_tokens_default"),
        (", chunk_timeout_ms: 0", "providers[0].chunk_timeout_ms"),
        (", anthropic_version: \"\"", "providers[0].anthropic_version"),
    ] {
        let config = format!(
            "providers:\n{}models:\n  - {{ name: m, provider: claude, upstream_model: x }}\nfailover_chain:\n  - {{ provider: claude, priority: 1 }}\n",
            anthropic_provider("claude", &mock, extra)
        );
        let err = Gateway::start_failure(&config, &["--no-auth"]);
        assert!(err.contains(path), "{extra}: {err}");
    }
}

#[test]
fn official_openai_sdk_normal_and_streamed_through_an_anthropic_upstream() {
    let mock = anthropic_mock("primary");
    let gw = gateway(&[(anthropic_provider("primary", &mock, ""), "primary")]);
    run_openai_sdk(gw.addr, "any-key-while-auth-is-off", None);
    assert!(mock.stats().requests >= 3);
}

#[test]
fn deepseek_reasoning_and_groq_usage_pass_through() {
    // DeepSeek's reasoner: `reasoning_content` reaches the client untouched, whole and streamed.
    let deepseek = Mock::start(Mock::config("reasoner").mode(Mode::DeepSeek));
    let gw = gateway(&[(provider("reasoner", &deepseek, ""), "reasoner")]);
    let r = chat(gw.addr, "m", false, "X-Request-Id: ds-whole\r\n");
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let thought = v["choices"][0]["message"]["reasoning_content"].as_str().expect("reasoning_content").to_string();
    assert!(!thought.is_empty());
    assert_eq!(records_of(&gw, "ds-whole")[0]["tokens_out"], v["usage"]["completion_tokens"]);
    let r = chat(gw.addr, "m", true, "");
    let streamed: String = events(&r)
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["reasoning_content"].as_str().map(str::to_string))
        .collect();
    assert_eq!(streamed, thought);

    // Groq with the gateway's usage request off: usage is read from `x_groq.usage`.
    let groq = Mock::start(Mock::config("groq").mode(Mode::Groq));
    let gw = gateway(&[(provider("groq", &groq, ", stream_usage: false"), "groq")]);
    let r = chat(gw.addr, "m", true, "X-Request-Id: groq-stream\r\n");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(events(&r).iter().all(|c| c.get("usage").is_none()), "the client asked for no usage chunk");
    let record = &records_of(&gw, "groq-stream")[0];
    assert!(record["tokens_in"].as_u64().is_some_and(|n| n > 0), "{record}");
    assert_eq!(record["tokens_out"], 16, "{record}");
}

#[test]
fn a_cut_anthropic_stream_never_looks_complete() {
    let claude = anthropic_mock("claude");
    let backup = Mock::start(Mock::config("backup"));
    let gw =
        gateway(&[(anthropic_provider("claude", &claude, ""), "claude"), (provider("backup", &backup, ""), "backup")]);
    let r = chat(gw.addr, "m", true, "X-Mock-Fault: claude=cut\r\nX-Mock-Cut-After: 5\r\n");
    assert_eq!(r.status, 200, "the head was already sent");
    let data = sse_data(&r.body);
    assert!(data.iter().all(|d| d != "[DONE]"), "{data:?}");
    let last: Value = serde_json::from_str(data.last().expect("events")).expect("json");
    assert_eq!(last["error"]["code"], "upstream_stream_error", "{last}");
    assert!(data.len() >= 2, "the translated chunks before the cut were relayed: {data:?}");
    assert_eq!(backup.stats().requests, 0, "no failover after the first byte");
}
