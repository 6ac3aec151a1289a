//! The router's decision end to end: the four-provider example config, the labelled
//! regression table (`tests/data/routing-regression.jsonl`) through `route explain`'s
//! code path and through the running gateway against four mocks named as the
//! providers, and the routing errors.

use std::collections::HashMap;

use gatekeeper::config::Config;
use gatekeeper::router::RouteMode;

use std::io::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::audit::{need_nats, NatsServer};
use crate::harness::{chat_request, gatekeeper_bin, provider, request, Gateway, Load, Mock};

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
            Row {
                id: r["id"].as_str().expect("id").into(),
                mode,
                body,
                expect: r["expect"].as_str().expect("expect").into(),
            }
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
fn four_providers(top: &str, shards: &str) -> (Vec<Mock>, Gateway) {
    let names = ["groq", "openai", "anthropic", "deepseek"];
    // The Anthropic one speaks Anthropic's Messages API, as the real one does.
    let mocks: Vec<Mock> = names
        .iter()
        .map(|n| match *n {
            "anthropic" => Mock::start(Mock::config(n).mode(gatekeeper_mock::Mode::Anthropic)),
            _ => Mock::start(Mock::config(n)),
        })
        .collect();
    let mut config = format!("{top}providers:\n");
    for (name, mock) in names.iter().zip(&mocks) {
        let block = provider(name, mock, "");
        let kind = if *name == "anthropic" { "anthropic" } else { "openai_compatible" };
        config.push_str(&block.replace("kind: openai_compatible", &format!("kind: {kind}")));
    }
    let models = EXAMPLE.find("\nmodels:\n").expect("models section");
    config.push_str(&EXAMPLE[models + 1..]);
    let gw = Gateway::start(&config, &["--no-auth", "--shards", shards]);
    (mocks, gw)
}

#[test]
fn the_regression_table_through_the_gateway() {
    let (_mocks, gw) = four_providers("", "1");
    let mut wrong = Vec::new();
    let mut counted: HashMap<(String, String), u64> = HashMap::new();
    for row in rows() {
        let body = row.body.to_string();
        let r = request(gw.addr, &chat_request(&body, &format!("X-Routing-Mode: {}\r\n", row.mode.as_str())));
        let model = r.header("x-gatekeeper-model").unwrap_or("none").to_string();
        let route = r.header("x-gatekeeper-route").unwrap_or_default().to_string();
        if r.status != 200 || model != row.expect {
            let text: String = r.text().chars().take(300).collect();
            wrong.push(format!("{}: expected {}, got {} {model} ({text})", row.id, row.expect, r.status));
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

/// The audit record of a routed request carries the decision: mode, complexity, task,
/// every candidate considered with its verdict, and why the winner won.
#[test]
fn the_audit_record_carries_the_decision() {
    let (_mocks, gw) = four_providers("", "1");
    let body = r#"{"model":"auto","messages":[{"role":"user","content":"What is 2+2?"}]}"#;
    let r = request(gw.addr, &chat_request(body, "X-Routing-Mode: cost\r\nX-Request-Id: routed-1\r\n"));
    assert_eq!(r.status, 200, "{}", r.text());
    let chosen = r.header("x-gatekeeper-model").expect("model header").to_string();
    let records = crate::hardening::records_of(&gw, "routed-1");
    let record = records.first().expect("a record");
    assert_eq!(record["route_mode"], "cost", "{record}");
    let complexity = record["complexity"].as_f64().expect("complexity");
    assert!((0.0..=1.0).contains(&complexity), "{record}");
    assert!(record["task"].as_str().is_some_and(|t| !t.is_empty()), "{record}");
    assert!(record["route_reason"].as_str().is_some_and(|t| !t.is_empty()), "{record}");
    let candidates: Vec<&str> =
        record["route_candidates"].as_array().expect("candidates").iter().filter_map(|c| c.as_str()).collect();
    assert_eq!(candidates.len(), 4, "every model the key may use was considered: {record}");
    let winners: Vec<&&str> = candidates.iter().filter(|c| c.ends_with(":chosen")).collect();
    assert_eq!(winners.len(), 1, "{record}");
    assert!(winners[0].starts_with(&format!("{chosen}@")), "{chosen} vs {record}");
}

#[test]
fn routing_errors_name_what_is_wrong() {
    let (mocks, gw) = four_providers("", "1");
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

/// `gatekeeper config push` of new prices moves "What is 2+2?" off the model that got
/// dearer, on every shard, while four clients keep sending it: no request fails.
#[test]
fn a_pushed_price_changes_the_choice_under_load_without_a_failed_request() {
    need_nats!();
    let server = NatsServer::start();
    let data = tempfile::tempdir().expect("tempdir");
    let top = format!(
        "audit: {{ enabled: false, data_dir: \"{}\" }}\nnats: {{ url: \"{}\", ack_timeout_ms: 1000, connect_timeout_ms: 500 }}\n",
        data.path().display(),
        server.url()
    );
    let (_mocks, mut gw) = four_providers(&top, "2");
    let addr = gw.addr;
    let body = r#"{"model":"auto","messages":[{"role":"user","content":"What is 2+2?"}]}"#;
    let model = || request(addr, &chat_request(body, "")).header("x-gatekeeper-model").map(str::to_string);
    assert_eq!(model().as_deref(), Some("llama-3.1-8b"));
    let load = Load::start(addr, 4, chat_request(body, ""));
    let file = gw.dir.path().join("push.yaml");
    std::fs::write(
        &file,
        "routing:\n  models:\n    llama-3.1-8b: { price_per_1k_input: 1.0, price_per_1k_output: 1.0 }\n",
    )
    .expect("push file");
    let out = Command::new(gatekeeper_bin())
        .args(["config", "push"])
        .arg(&file)
        .args(["--nats", &server.url()])
        .output()
        .expect("config push");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Both shards must apply it: ask until several answers in a row name the new choice.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut in_a_row = 0;
    while in_a_row < 8 {
        assert!(Instant::now() < deadline, "the push did not take effect");
        if model().as_deref() == Some("gpt-4o-mini") {
            in_a_row += 1;
        } else {
            in_a_row = 0;
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let (ok, failed) = load.stop();
    assert_eq!(failed, 0, "requests failed while the config changed");
    assert!(ok > 50, "the load ran");
    gw.proc.terminate();
    assert!(gw.proc.wait_exit(Duration::from_secs(30)).is_some());
}

/// `gatekeeper route score` answers a line per line, the chosen model under the config;
/// a line that cannot be routed says why and makes the exit status non-zero.
#[test]
fn route_score_and_explain_on_the_command_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("four.yaml");
    std::fs::write(&config, EXAMPLE).expect("config");
    let run = |args: &[&str], stdin: &str| {
        let mut child = Command::new(gatekeeper_bin())
            .args(args)
            .arg("--config")
            .arg(&config)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write");
        let out = child.wait_with_output().expect("output");
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let lines = "{\"prompt\": \"What is 2+2?\"}\n\n{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"what is this\"},{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:x\"}}]}]}\n";
    let (ok, out) = run(&["route", "score"], lines);
    assert!(ok, "{out}");
    let answers: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    assert_eq!(answers.len(), 2, "{out}");
    assert_eq!(answers[0]["model"], "llama-3.1-8b");
    assert_eq!(answers[0]["mode"], "cost");
    assert!(answers[0]["complexity"].as_f64().is_some_and(|c| (0.0..=1.0).contains(&c)));
    assert!(answers[0]["task"].is_string());
    assert_eq!(answers[1]["model"], "gpt-4o-mini", "vision rules out the cheaper models");
    let (ok, out) = run(&["route", "score", "--mode", "capability"], "{\"prompt\": \"hi\"}\nnot json\n");
    assert!(!ok, "a bad line fails the run");
    assert!(out.lines().nth(1).is_some_and(|l| l.contains("\"error\":\"not JSON")), "{out}");
    let (ok, out) = run(&["route", "explain", "--mode", "cost", "What is 2+2?"], "");
    assert!(ok, "{out}");
    assert!(out.starts_with("mode=cost complexity="), "{out}");
    for model in ["llama-3.1-8b", "gpt-4o-mini", "claude-3-5-sonnet", "deepseek-r1"] {
        assert!(out.contains(model), "{out}");
    }
    assert!(out.contains("chosen") && out.contains("why: cheapest of 4"), "{out}");
}
