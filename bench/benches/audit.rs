//! The audit log's cost per request, in-process (issue 15, item 5), on a record like
//! the ones `bench/audit.sh` makes (`--no-auth`, one routed candidate, 200).
//!
//! `cargo bench -p gatekeeper-bench --bench audit -- --warm-up-time 1 --measurement-time 2`
//!
//! Shard side (what every request pays before its answer's last byte):
//! - `record/serde`: the record's JSON through `serde_json::to_writer` (what shards did);
//! - `record/write_json`: the same bytes through `AuditRecord::write_json` (what they do);
//! - `record/cost_usd`: the record's exact cost (`router::price::write_cost_usd`, over
//!   the last record's string, as shards do); `record/cost_usd_alloc`: the same
//!   through `cost_usd`, a new `String` each time (as shards did);
//! - `record/append`: `write_json` + framing + CRC + the copy into the mapped WAL part
//!   (`WalWriter::append`, page faults included; a fresh WAL every 4,096 records so the
//!   bench's disk use stays bounded, the reset not timed).
//!
//! Bridge side (per record shipped):
//! - `ship/parse_serde`: the record view through `serde_json::from_slice` (what the bridge did);
//! - `ship/parse`: `RecordView::parse`, its hand-written path (what it does);
//! - `ship/derive`: `Derived::record` (routing decision, health and session windows);
//! - `ship/chain`: the chain entry's bytes + SHA-256 + Merkle frontier (`ChainState::append`);
//! - `ship/entry`: the chain entry's bytes alone (`chain::append_entry`, no hashing);
//! - `ship/read`: reading framed records back from a WAL part (`LaneReader::read`,
//!   page cache, 256 records per call, the reader's reopen every 4,096 not timed).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use gatekeeper::audit::chain::ChainState;
use gatekeeper::audit::wal::{FrameKind, LaneId, LaneReader, ReadFrames, WalWriter};
use gatekeeper::audit::{AuditError, AuditRecord, RecordView};
use gatekeeper::bridge::events::Derived;
use gatekeeper::router::price::{cost_usd, write_cost_usd, Price};

fn typical() -> AuditRecord {
    AuditRecord {
        request_id: "01JDQ7Z3K4M5N6P7Q8R9S0T1V2".into(),
        ts_unix_ms: 1_764_490_000_123,
        shard: 1,
        model_requested: "m".into(),
        provider: Some("mock".into()),
        model_upstream: Some("m".into()),
        route_mode: Some("cost".into()),
        complexity: Some(0.12),
        task: Some("chat".into()),
        route_candidates: vec!["m@mock:chosen".into()],
        route_reason: Some("only_candidate".into()),
        stream: false,
        status: 200,
        tokens_in: 12,
        tokens_out: 16,
        cost_usd: "0".into(),
        upstream_us: 84,
        overhead_us: 21,
        ..AuditRecord::default()
    }
}

fn shard_side(c: &mut Criterion) {
    let r = typical();
    let mut buf = Vec::with_capacity(1024);
    let mut g = c.benchmark_group("record");
    g.bench_function("serde", |b| {
        b.iter(|| {
            buf.clear();
            serde_json::to_writer(&mut buf, black_box(&r)).unwrap();
            black_box(buf.len())
        })
    });
    g.bench_function("write_json", |b| {
        b.iter(|| {
            buf.clear();
            black_box(&r).write_json(&mut buf).unwrap();
            black_box(buf.len())
        })
    });
    // A mock-like deployment's prices (USD per 1,000 tokens).
    let (input, output) = (Price::from_f64(0.00015).unwrap(), Price::from_f64(0.0006).unwrap());
    let mut cost = String::new();
    g.bench_function("cost_usd", |b| {
        b.iter(|| {
            write_cost_usd(&mut cost, black_box(12), input, black_box(16), output).unwrap();
            black_box(cost.len())
        })
    });
    g.bench_function("cost_usd_alloc", |b| {
        b.iter(|| black_box(cost_usd(black_box(12), input, black_box(16), output).unwrap().len()))
    });
    let dir = tempfile::tempdir().unwrap();
    g.bench_function("append", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let wal = dir.path().join("wal");
                std::fs::create_dir_all(&wal).unwrap();
                let mut w = WalWriter::create(&wal, LaneId { gen: 1, shard: 0 }, 64 * 1024 * 1024, false).unwrap();
                let n = left.min(4096);
                let t = Instant::now();
                for _ in 0..n {
                    let r = black_box(&r);
                    w.append(FrameKind::Audit, |buf| r.write_json(buf).map_err(|e| AuditError::Encode(e.to_string())))
                        .unwrap();
                }
                spent += t.elapsed();
                drop(w);
                std::fs::remove_dir_all(&wal).unwrap();
                left -= n;
            }
            spent
        })
    });
    g.finish();
}

fn bridge_side(c: &mut Criterion) {
    let mut payload = Vec::new();
    typical().write_json(&mut payload).unwrap();
    let mut g = c.benchmark_group("ship");
    g.bench_function("parse_serde", |b| {
        b.iter(|| black_box(serde_json::from_slice::<RecordView<'_>>(black_box(&payload)).unwrap().status))
    });
    g.bench_function("parse", |b| b.iter(|| black_box(RecordView::parse(black_box(&payload)).unwrap().status)));
    let mut derived = Derived::new("n1", 60, None);
    let mut aux = Vec::new();
    let view = RecordView::parse(&payload).unwrap();
    g.bench_function("derive", |b| {
        b.iter(|| {
            derived.record(black_box(&view), "n1.w1-0-0-512", &mut aux);
            if aux.len() > 256 {
                aux.clear();
            }
        })
    });
    let prev = [7u8; 32];
    let mut entry = Vec::with_capacity(1 << 20);
    let mut seq = 1u64;
    g.bench_function("entry", |b| {
        b.iter(|| {
            if entry.len() > (1 << 20) - 4096 {
                entry.clear();
            }
            seq += 1;
            let (node, inst) = ("n1", "0123456789abcdef");
            gatekeeper::audit::chain::append_entry(&mut entry, node, inst, seq, &prev, 1_764_490_000_200, &payload);
            black_box(entry.len())
        })
    });
    // One WAL part of 4,096 typical records, read back again and again.
    let dir = tempfile::tempdir().unwrap();
    let lane = LaneId { gen: 1, shard: 0 };
    {
        let mut w = WalWriter::create(dir.path(), lane, 64 * 1024 * 1024, false).unwrap();
        for _ in 0..4096 {
            w.append(FrameKind::Audit, |buf| {
                buf.extend_from_slice(&payload);
                Ok(())
            })
            .unwrap();
        }
    }
    let mut frames = ReadFrames::default();
    g.bench_function("read", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let mut r = LaneReader::new(dir.path(), lane, 0, 0, true);
                let mut n = left.min(4096);
                left -= n;
                let t = Instant::now();
                while n > 0 {
                    frames.clear();
                    let take = n.min(256) as usize;
                    r.read(&mut frames, take, 1 << 20, None, None).unwrap();
                    assert_eq!(frames.len(), take);
                    n -= take as u64;
                }
                spent += t.elapsed();
            }
            spent
        })
    });
    let mut chain = ChainState::default();
    let mut out = Vec::with_capacity(1 << 20);
    g.bench_function("chain", |b| {
        b.iter(|| {
            if out.len() > (1 << 20) - 4096 {
                out.clear();
            }
            black_box(chain.append(&mut out, "n1", "0123456789abcdef", 1_764_490_000_200, black_box(&payload)))
        })
    });
    g.finish();
}

criterion_group!(benches, shard_side, bridge_side);
criterion_main!(benches);
