//! The budget CRDT's costs at gossip scale: merging, encoding and decoding a delta that
//! touches 10,000 keys (issue 13's "merge of a 10,000-key delta").
//!
//! `cargo bench -p gatekeeper-bench --bench crdt -- --warm-up-time 1 --measurement-time 3`
//!
//! The state: 10,000 API keys × one minute window, each counted by 3 nodes × 4 shards
//! (12 slots). The delta: one node's shard 0 settled spend on every key since its last
//! ship (10,000 counters of one slot), as the bridge would publish it.
//!
//! - `crdt/merge_10k_delta`: `Budgets::merge` of the delta into the state;
//! - `crdt/merge_10k_delta_into_empty`: the same into a joining node's empty map;
//! - `crdt/encode_10k_delta`, `crdt/decode_10k_delta`: its binary form both ways (the
//!   delta's size in bytes is printed once);
//! - `crdt/add_one_in_10k`, `crdt/spent_one_in_10k`: settling one request into, and
//!   reading one window of, the 10,000-key map.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use gatekeeper_crdt::{BudgetKey, Budgets, Limits, ReplicaId, Subject, WindowKind};

const KEYS: usize = 10_000;
/// 2024-03-01T12:00:00Z.
const NOW: i64 = 1_709_294_400;

fn keys() -> Vec<BudgetKey> {
    (0..KEYS)
        .map(|i| {
            let subject = Subject::key(&format!("key-{i:08x}")).expect("short key id");
            BudgetKey::at(subject, WindowKind::Minute, NOW).expect("in range")
        })
        .collect()
}

/// The node state before the delta, and the delta.
fn state_and_delta() -> (Budgets, Budgets) {
    let keys = keys();
    let mut state = Budgets::new(Limits::default());
    for (i, key) in keys.iter().enumerate() {
        for node in 0..3u64 {
            for shard in 0..4u16 {
                state.add(ReplicaId::new(node, shard, 1), key, 100 + i as u64).expect("within limits");
            }
        }
    }
    state.take_delta();
    let mut writer = state.clone();
    for (i, key) in keys.iter().enumerate() {
        writer.add(ReplicaId::new(2, 0, 1), key, 1 + (i % 500) as u64).expect("within limits");
    }
    (state, writer.take_delta())
}

/// The timed step: the merged map is returned so that criterion drops it outside the
/// measurement (freeing 10,000 counters would otherwise dominate).
fn merge_into(delta: &Budgets) -> impl FnMut(Budgets) -> Budgets + '_ {
    move |mut s| {
        black_box(s.merge(black_box(delta)).expect("within limits"));
        s
    }
}

fn bench(c: &mut Criterion) {
    let (state, delta) = state_and_delta();
    assert_eq!(delta.len(), KEYS);
    let bytes = delta.encode();
    eprintln!(
        "crdt: a {KEYS}-key delta (one slot each) encodes to {} bytes ({:.1} per key); the full state to {} bytes",
        bytes.len(),
        bytes.len() as f64 / KEYS as f64,
        state.encode().len()
    );
    let mut group = c.benchmark_group("crdt");
    group.bench_function("merge_10k_delta", |b| {
        b.iter_batched(|| state.clone(), merge_into(&delta), BatchSize::LargeInput)
    });
    group.bench_function("merge_10k_delta_into_empty", |b| {
        b.iter_batched(|| Budgets::new(Limits::default()), merge_into(&delta), BatchSize::LargeInput)
    });
    group.bench_function("encode_10k_delta", |b| b.iter(|| black_box(black_box(&delta).encode())));
    group.bench_function("decode_10k_delta", |b| {
        b.iter_batched(|| (), |()| Budgets::decode(black_box(&bytes), Limits::default()), BatchSize::LargeInput)
    });
    // Settling one request into a 10,000-key map, and reading one window's spend: what a
    // shard would do per request if it kept its own `Budgets` (the key already counted).
    let key = keys().swap_remove(KEYS / 2);
    let mut settle = state.clone();
    group.bench_function("add_one_in_10k", |b| {
        b.iter(|| black_box(settle.add(ReplicaId::new(0, 1, 1), black_box(&key), 1).expect("within limits")))
    });
    group.bench_function("spent_one_in_10k", |b| b.iter(|| black_box(state.spent(black_box(&key)))));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
