//! The router's per-request cost: the complexity score and task (issue 12; budgets: score +
//! decide ≤ 3 µs for a short prompt, ≤ 20 µs p99 for a 4,000-token one).
//!
//! `cargo bench -p gatekeeper-bench --bench router -- --warm-up-time 1 --measurement-time 2`
//!
//! - `score/short`: `gatekeeper::router::score::score` on a system prompt and a one-line
//!   question (~90 bytes);
//! - `score/4k_tokens`: a 5-turn conversation of mixed prose, code and math (~16 KiB,
//!   about 4,000 tokens);
//! - `score/4MiB`: one 4 MiB user turn, to show the scan cap (`SCAN_BYTES_MAX`) keeps the
//!   cost flat.
//!
//! Criterion reports means; before it runs, each case is also timed call by call
//! (20,000 calls) and its p50 / p99 / max printed, since the budget is a p99.

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gatekeeper::router::score::{score, Prompt, Role, Turn};

const PROSE: &str = "The committee reviewed the quarterly report and asked why the migration slipped by two \
weeks. The main reasons were a dependency on the storage team, an unplanned security review, and the \
decision to keep the old API running until every client had moved. Explain which of these could have been \
avoided, and what you would change in the plan for the next quarter. ";

const CODE: &str = "```rust\nfn median(xs: &mut [f64]) -> Option<f64> {\n    if xs.is_empty() {\n        return None;\n    }\n    xs.sort_by(|a, b| a.total_cmp(b));\n    let mid = xs.len() / 2;\n    Some(if xs.len() % 2 == 0 { (xs[mid - 1] + xs[mid]) / 2.0 } else { xs[mid] })\n}\n```\n";

const MATH: &str = "If 3x + 7 = 25 and y = x^2 - 4, then y = 32; a loan of $12,000 at 4.5% per year for 3 years \
costs 12000 * 0.045 * 3 = $1,620 in simple interest. ";

/// About `bytes` of prose, code and math in turn.
fn mixed(bytes: usize) -> String {
    let mut s = String::with_capacity(bytes + 1024);
    let parts = [PROSE, CODE, PROSE, MATH];
    let mut i = 0;
    while s.len() < bytes {
        s.push_str(parts[i % parts.len()]);
        i += 1;
    }
    s
}

/// Calls `f` `calls` times, timing each, and prints p50 / p99 / max in µs.
fn percentiles(name: &str, calls: usize, mut f: impl FnMut()) {
    let mut ns: Vec<u64> = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        f();
        ns.push(t.elapsed().as_nanos() as u64);
    }
    ns.sort_unstable();
    let at = |q: f64| ns[((ns.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
    println!("{name}: p50 {:.2} µs, p99 {:.2} µs, max {:.2} µs ({calls} calls)", at(0.5), at(0.99), at(1.0));
}

fn router(c: &mut Criterion) {
    let short = [
        Turn { role: Role::System, message: 0, text: "You are a helpful assistant." },
        Turn { role: Role::User, message: 1, text: "What is the capital of Australia, and why not Sydney?" },
    ];
    let (a, b, q) = (mixed(7_000), mixed(4_500), mixed(4_200));
    let long = [
        Turn { role: Role::System, message: 0, text: "You are a senior engineer. Answer precisely." },
        Turn { role: Role::User, message: 1, text: &a },
        Turn { role: Role::Assistant, message: 2, text: &b },
        Turn { role: Role::User, message: 3, text: &q },
        Turn { role: Role::User, message: 3, text: "Summarise the trade-offs step by step." },
    ];
    let long_bytes: usize = long.iter().map(|t| t.text.len()).sum();
    let huge_text = mixed(4 << 20);
    let huge = [Turn { role: Role::User, message: 0, text: &huge_text }];
    let cases: [(&str, &[Turn<'_>], usize); 3] = [
        ("short", &short, short.iter().map(|t| t.text.len()).sum()),
        ("4k_tokens", &long, long_bytes),
        ("4MiB", &huge, huge_text.len()),
    ];

    for (name, turns, _) in cases {
        let prompt = Prompt { turns, tools: 0 };
        percentiles(&format!("router/score/{name}"), 20_000, || {
            black_box(score(black_box(&prompt)));
        });
    }

    let mut g = c.benchmark_group("router/score");
    for (name, turns, bytes) in cases {
        let prompt = Prompt { turns, tools: 0 };
        g.throughput(Throughput::Bytes(bytes as u64));
        g.bench_function(name, |bench| bench.iter(|| score(black_box(&prompt))));
    }
    g.finish();
}

criterion_group!(benches, router);
criterion_main!(benches);
