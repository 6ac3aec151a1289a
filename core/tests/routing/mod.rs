//! The router's decision end to end: the four-provider example config, the labelled
//! regression table (`tests/data/routing-regression.jsonl`) through `route explain`'s
//! code path and through the running gateway against four mocks named as the
//! providers, and the routing errors.

use std::collections::HashMap;

use gatekeeper::config::Config;
use gatekeeper::router::RouteMode;

use crate::harness::{chat_request, provider, request, Gateway, Mock};

/// The Claude provider's `kind` in the configs these tests write: `openai_compatible`
/// until the gateway speaks Anthropic's format, then `anthropic` (the one line to flip).
const CLAUDE_KIND: &str = "openai_compatible";

const EXAMPLE: &str = include_str!("../../../examples/four-providers.yaml");
const TABLE: &str = include_str!("../data/routing-regression.jsonl");

fn env() -> HashMap<String, String> {
    ["GROQ_API_KEY", "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "DEEPSEEK_API_KEY"]
        .into_iter()
        .map(|k| (k.to_string(), format!("sk-{k}")))
        .collect()
}

/// One labelled row: a prompt, the mode, request features, and the model expected.
struct Row {
    id: String,
    mode: RouteMode,
    body: serde_json::Value,
    expect: String,
}

fn rows() -> Vec<Row> {
    let rows: Vec<Row> = TABLE
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let r: serde_json::Value = serde_json::from_str(line).expect("a JSON row");
            let prompt = r["prompt"].as_str().expect("prompt");
            let content = if r["image"] == true {
                serde_json::json!([{"type": "text", "text": prompt},
                                   {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}])
            } else {
                serde_json::json!(prompt)
            };
            let mut messages = Vec::new();
            if let Some(s) = r["system"].as_str() {
                messages.push(serde_json::json!({"role": "system", "content": s}));
            }
            messages.push(serde_json::json!({"role": "user", "content": content}));
            let mut body = serde_json::json!({"model": r["model"].as_str().unwrap_or("auto"), "messages": messages});
            if r["tools"] == true {
                body["tools"] = serde_json::json!([{"type": "function", "function": {"name": "lookup",
                    "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}]);
            }
            if r["json"] == true {
                body["response_format"] = serde_json::json!({"type": "json_object"});
            }
            if let Some(n) = r["max_tokens"].as_u64() {
                body["max_tokens"] = n.into();
            }
            let mode = match r["mode"].as_str() {
                Some("cost") => RouteMode::Cost,
                Some("capability") => RouteMode::Capability,
                Some("latency") => RouteMode::Latency,
                other => panic!("row {}: mode {other:?}", r["id"]),
            };
            Row { id: r["id"].as_str().expect("id").into(), mode, body, expect: r["expect"].as_str().expect("expect").into() }
        })
        .collect();
    assert!(rows.len() >= 33, "the seed's 3 examples and at least 30 more");
    rows
}

#[test]
fn the_four_provider_example_is_valid() {
    let c = Config::parse_with_env(EXAMPLE, &env()).expect("valid");
    let names: Vec<&str> = c.models.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["llama-3.1-8b", "gpt-4o-mini", "claude-3-5-sonnet", "deepseek-r1"]);
    let table = c.route_table();
    assert!(table.deployments.iter().all(|d| d.capabilities.is_some() && d.context_window.is_some()));
    assert_eq!(table.routing.auto_model, "auto");
}

#[test]
fn the_regression_table_through_route_explain() {
    let table = Config::parse_with_env(EXAMPLE, &env()).expect("valid").route_table();
    let mut wrong = Vec::new();
    for row in rows() {
        let body = serde_json::to_vec(&row.body).expect("body");
        let got = gatekeeper::cli::route::decide(&table, &body, Some(row.mode))
            .map(|d| gatekeeper::cli::route::chosen_name(&table, &d).unwrap_or("none").to_string());
        match got {
            Ok(model) if model == row.expect => {}
            other => wrong.push(format!("{}: expected {}, got {other:?}", row.id, row.expect)),
        }
    }
    assert!(wrong.is_empty(), "{} rows routed wrong:\n{}", wrong.len(), wrong.join("\n"));
}

/// The four mocks named as the providers and the gateway on the example's models.
fn four_providers() -> (Vec<Mock>, Gateway) {
    let names = ["groq", "openai", "anthropic", "deepseek"];
    let mocks: Vec<Mock> = names.iter().map(|n| Mock::start(Mock::config(n))).collect();
    let mut config = String::from("providers:\n");
    for (name, mock) in names.iter().zip(&mocks) {
        let block = provider(name, mock, "");
        let kind = if *name == "anthropic" { CLAUDE_KIND } else { "openai_compatible" };
        config.push_str(&block.replace("kind: openai_compatible", &format!("kind: {kind}")));
    }
    let models = EXAMPLE.find("\nmodels:\n").expect("models section");
    config.push_str(&EXAMPLE[models + 1..]);
    let gw = Gateway::start(&config, &["--no-auth", "--shards", "1"]);
    (mocks, gw)
}

#[test]
fn the_regression_table_through_the_gateway() {
    let (_mocks, gw) = four_providers();
    let mut wrong = Vec::new();
    let mut counted: HashMap<(String, String), u64> = HashMap::new();
    for row in rows() {
        let body = row.body.to_string();
        let r = request(gw.addr, &chat_request(&body, &format!("X-Routing-Mode: {}\r\n", row.mode.as_str())));
        let model = r.header("x-gatekeeper-model").unwrap_or("none").to_string();
        let route = r.header("x-gatekeeper-route").unwrap_or_default().to_string();
        if r.status != 200 || model != row.expect {
            wrong.push(format!("{}: expected {}, got {} {model} ({})", row.id, row.expect, r.status, r.text()));
            continue;
        }
        let parts: Vec<&str> = route.split("; ").collect();
        assert_eq!(parts.first().copied(), Some(format!("mode={}", row.mode.as_str()).as_str()), "{route}");
        assert!(parts.get(1).and_then(|c| c.strip_prefix("complexity=")).is_some_and(|c| c.parse::<f32>().is_ok()));
        assert!(parts.get(2).is_some_and(|t| t.starts_with("task=")), "{route}");
        *counted.entry((row.mode.as_str().to_string(), model)).or_default() += 1;
    }
    assert!(wrong.is_empty(), "{} rows routed wrong:\n{}", wrong.len(), wrong.join("\n"));
    let metrics = request(gw.addr, b"GET /metrics HTTP/1.1\r\nHost: gw\r\n\r\n").text();
    for ((mode, model), n) in counted {
        let line = format!("gatekeeper_route_decisions_total{{mode=\"{mode}\",model=\"{model}\"}} {n}");
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }
}

#[test]
fn routing_errors_name_what_is_wrong() {
    let (mocks, gw) = four_providers();
    let body = r#"{"model":"auto","messages":[{"role":"user","content":"hi"}]}"#;
    let r = request(gw.addr, &chat_request(body, "X-Routing-Mode: fastest\r\n"));
    assert_eq!(r.status, 400, "{}", r.text());
    let e = r.json();
    assert_eq!(e["error"]["code"], "invalid_routing_mode");
    assert!(e["error"]["message"].as_str().is_some_and(|m| m.contains("X-Routing-Mode")), "{e}");
    // No model of the config has a 250k window.
    let body = r#"{"model":"auto","max_tokens":250000,"messages":[{"role":"user","content":"hi"}]}"#;
    let r = request(gw.addr, &chat_request(body, ""));
    assert_eq!(r.status, 400, "{}", r.text());
    let e = r.json();
    assert_eq!(e["error"]["code"], "no_model_meets_requirements");
    let message = e["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("a context window of 2500"), "{message}");
    assert!(message.contains("the largest is 200000"), "{message}");
    // Vision, JSON and 150k tokens: each is met by some model, all three by none.
    let body = r#"{"model":"auto","max_tokens":150000,"messages":[{"role":"user","content":[
        {"type":"text","text":"hi"},{"type":"image_url","image_url":{"url":"data:x"}}]}],
        "response_format":{"type":"json_object"}}"#;
    let r = request(gw.addr, &chat_request(body, ""));
    assert_eq!(r.status, 400, "{}", r.text());
    let message = r.json()["error"]["message"].as_str().unwrap_or_default().to_string();
    assert!(message.contains("claude-3-5-sonnet lacks json_mode"), "{message}");
    assert!(message.contains("gpt-4o-mini lacks context_window"), "{message}");
    // A named model's own deployments are filtered too.
    let body = r#"{"model":"deepseek-r1","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f"}}]}"#;
    let r = request(gw.addr, &chat_request(body, ""));
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.json()["error"]["message"].as_str().is_some_and(|m| m.contains("`tools`")), "{}", r.text());
    assert_eq!(mocks.iter().map(Mock::requests).sum::<u64>(), 0, "nothing refused reached a provider");
}
