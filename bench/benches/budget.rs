//! The budget step's cost per request (issue 13: admission + settlement ≤ 2 µs):
//! `gatekeeper::budget::admit` then `Admission::settle` on the process-wide board, as
//! the pipeline calls them.
//!
//! `cargo bench -p gatekeeper-bench --bench budget -- --warm-up-time 1 --measurement-time 3`
//!
//! - `budget/admit_settle/key`: a key with per-minute, per-day and per-month token
//!   limits and rpm, 2 shards (3 columns summed per window);
//! - `budget/admit_settle/key+tenant`: the same key under a tenant with its own limits
//!   (two rows checked and written);
//! - `budget/admit_settle/key_16_shards`: the key on a 16-shard board (17 columns read
//!   per window);
//! - `budget/admit_settle/10k_keys`: round robin over 10,000 keys (cold cache lines);
//! - `budget/admit_unmetered`: a key with no limits (what every request pays when budgets
//!   are not used).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use gatekeeper::budget::{admit, BudgetBoard, BudgetContext, BudgetSettings, Limits, Outcome};
use gatekeeper::credit::Payment;
use gatekeeper::keys::{Budget, Claims};
use gatekeeper::metrics::ShardMetrics;
use gatekeeper::wire::openai::Usage;

/// Far from every window's end, so nothing rolls over mid-run (2023-11-14T22:13:20Z).
const NOW: i64 = 1_700_000_000;

fn claims(jti: &str, tenant: Option<&str>) -> Claims {
    Claims {
        jti: jti.into(),
        tenant: tenant.map(str::to_string),
        // Limits far above what a run spends: every admission succeeds.
        budget: Budget {
            tokens_per_minute: Some(1 << 52),
            tokens_per_day: Some(1 << 52),
            tokens_per_month: Some(1 << 52),
            usd_per_month: None,
        },
        rpm: Some(1 << 52),
        ..Claims::default()
    }
}

fn outcome() -> Outcome {
    Outcome {
        status: 200,
        usage: Some(Usage { prompt_tokens: 12, completion_tokens: 16 }),
        price_per_1k: Some((0.00015, 0.0006)),
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("budget");
    let metrics = ShardMetrics::new(1, 1);
    let mut settings = BudgetSettings::default();
    settings.tenants.insert("acme".into(), Limits::new([Some(1 << 52), Some(1 << 52), None], None, Some(1 << 52)));

    let run = |board: &BudgetBoard, claims: &Claims| {
        let ctx = BudgetContext { board, shard: 0, settings: &settings, metrics: &metrics };
        let a = admit(ctx, Payment::Key, Some(black_box(claims)), 28, NOW).expect("admitted");
        black_box(a.settle(outcome()))
    };

    let board = BudgetBoard::new(2, 65_536);
    let key = claims("key-00000001", None);
    g.bench_function("admit_settle/key", |b| b.iter(|| run(&board, &key)));

    let with_tenant = claims("key-00000002", Some("acme"));
    g.bench_function("admit_settle/key+tenant", |b| b.iter(|| run(&board, &with_tenant)));

    let wide = BudgetBoard::new(16, 65_536);
    g.bench_function("admit_settle/key_16_shards", |b| b.iter(|| run(&wide, &key)));

    let many: Vec<Claims> = (0..10_000).map(|i| claims(&format!("key-{i:08}"), None)).collect();
    let mut i = 0usize;
    g.bench_function("admit_settle/10k_keys", |b| {
        b.iter(|| {
            i = (i + 1) % many.len();
            run(&board, &many[i])
        })
    });

    let plain = Claims { jti: "plain".into(), ..Claims::default() };
    g.bench_function("admit_unmetered", |b| b.iter(|| run(&board, &plain)));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
