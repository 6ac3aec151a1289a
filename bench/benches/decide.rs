//! The router's decision per request under the four-provider example config
//! (`examples/four-providers.yaml`), in-process, on the functions the pipeline calls.
//! Budgets (issue 12): score + decide ≤ 20 µs p99 for a 4k-token prompt, ≤ 3 µs for a
//! short one.
//!
//! `cargo bench -p gatekeeper-bench --bench decide -- --warm-up-time 1 --measurement-time 2`
//!
//! - `decide/{short,4k}`: `router::route` (candidates, filters, score, cost ordering)
//!   on an already-read request, `model: auto`, cost mode;
//! - `parse_and_decide/{short,4k}`: the same from the raw body: `parse_chat` (now reading
//!   message texts, tools, images and `response_format`), `RouteRequest::from_chat`, `route`;
//! - `decide_capability/4k`: capability mode on the 4k prompt.

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use gatekeeper::config::Config;
use gatekeeper::router::{route, RouteInput, RouteRequest, RouteTable};
use gatekeeper::wire::openai::parse_chat;

fn table() -> RouteTable {
    let text = include_str!("../../examples/four-providers.yaml");
    let env = ["GROQ_API_KEY", "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "DEEPSEEK_API_KEY"]
        .into_iter()
        .map(|k| (k.to_string(), "x".to_string()))
        .collect();
    Config::parse_with_env(text, &env).expect("the example config").route_table()
}

/// A chat body with a system message and a user message of about `tokens` tokens of
/// English prose and code.
fn body(tokens: usize) -> Vec<u8> {
    let unit = "Please review the function below and explain what it does. \
                fn add(a: i32, b: i32) -> i32 { a + b } The answer should be short. ";
    let text: String = unit.repeat((tokens * 4).div_ceil(unit.len()).max(1));
    let text = if tokens < 50 { "What is the capital of France?".to_string() } else { text };
    serde_json::to_vec(&serde_json::json!({
        "model": "auto",
        "messages": [{"role": "system", "content": "You are a helpful assistant."},
                     {"role": "user", "content": text}],
        "max_tokens": 256
    }))
    .expect("body")
}

fn decide(c: &mut Criterion) {
    let table = table();
    let mut g = c.benchmark_group("decide");
    for (name, tokens) in [("short", 10), ("4k", 4096)] {
        let raw = body(tokens);
        let chat = parse_chat(&raw).expect("chat");
        let req = RouteRequest::from_chat(&chat);
        let input = |mode: Option<&'static [u8]>| RouteInput {
            model: "auto",
            mode_header: mode,
            claims: None,
            health: None,
            now: Instant::now(),
        };
        g.bench_function(name, |b| {
            b.iter(|| black_box(route(&table, black_box(&req), &input(None)).map(|r| r.deployments.len())))
        });
        if tokens > 50 {
            g.bench_function("capability_4k", |b| {
                b.iter(|| {
                    black_box(route(&table, black_box(&req), &input(Some(b"capability"))).map(|r| r.deployments.len()))
                })
            });
        }
    }
    g.finish();
    let mut g = c.benchmark_group("parse_and_decide");
    for (name, tokens) in [("short", 10), ("4k", 4096)] {
        let raw = body(tokens);
        g.bench_function(name, |b| {
            b.iter(|| {
                let chat = parse_chat(black_box(&raw)).expect("chat");
                let req = RouteRequest::from_chat(&chat);
                let input = RouteInput {
                    model: &chat.model,
                    mode_header: None,
                    claims: None,
                    health: None,
                    now: Instant::now(),
                };
                black_box(route(&table, &req, &input).map(|r| r.deployments.len()))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, decide);
criterion_main!(benches);
