//! Budget gossip bandwidth per node (issue 13): the bytes the bridge publishes at the
//! default `budgets.gossip_interval_ms` (100) and `anti_entropy_interval_ms` (3000) with
//! 10,000 active keys, measured from the real encoder on the real code path
//! (`gatekeeper::bridge::budget::Replica::collect` over a `BudgetBoard`, then
//! `take_delta_messages` / `full_messages`). Not a timing: it prints a table.
//!
//! `cargo bench -p gatekeeper-bench --bench gossip`
//!
//! Each key has a per-minute, per-day and per-month limit (three windows, three
//! token counters); key ids are 26 bytes (a ULID, the usual `jti`). Rows marked
//! "+ rpm, USD" also count the request (minute) and its nano-USD (month): five
//! counters per key, as the bridge ships them since requests and USD are gossiped;
//! the other rows are keys with token limits only, side by side in one run. "Active" means the key
//! settles at least one request in an interval on the shards given; a key that settles
//! once per second is active in one interval of ten.

use std::sync::atomic::AtomicU64;

use gatekeeper::bridge::budget::{node_id, Replica};
use gatekeeper::budget::{BudgetBoard, CellValues, SubjectRef, KINDS};

const KEYS: usize = 10_000;
const SHARDS: usize = 4;
const INTERVAL_MS: u64 = 100;
const FULL_MS: u64 = 3_000;
/// 2024-03-01T12:00:30Z.
const NOW: i64 = 1_709_294_430;

fn jti(i: usize) -> String {
    format!("01HV{i:022}")
}

/// One interval: `shards` shards of every key whose index is ≡ `phase` mod `every` settle
/// `tokens` more.
fn settle(board: &BudgetBoard, shards: usize, every: usize, phase: usize, round: u64, all: bool) {
    for i in (phase..KEYS).step_by(every) {
        let name = jti(i);
        let Ok(row) = board.find_or_claim(SubjectRef { tenant: false, name: &name }) else { continue };
        let Some(body) = board.row(row) else { continue };
        for (k, kind) in KINDS.iter().enumerate() {
            let Ok(epoch) = kind.epoch(NOW) else { continue };
            for s in 0..shards {
                let Some(cell) = body.cell(s, k) else { continue };
                let mut v = cell.load_own();
                if v.epoch_start_s != epoch.start_unix_s() {
                    v = CellValues::fresh(epoch.start_unix_s());
                }
                // A request of a few hundred tokens per interval, growing over the run.
                v.settled_tokens = v.settled_tokens.saturating_add(300 + round);
                if all {
                    // One request per interval, of about $0.0003 (nano-USD).
                    v.requests = v.requests.saturating_add(1);
                    v.settled_usd_nano = v.settled_usd_nano.saturating_add(300_000 + round);
                }
                cell.store(v);
            }
        }
    }
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    println!("| scenario | delta bytes / interval | delta bytes/s | full state bytes | full bytes/s | total bytes/s per node |");
    println!("|---|---|---|---|---|---|");
    for (label, shards, every, all) in [
        ("10,000 keys each active every interval, on 1 shard", 1, 1, false),
        ("10,000 keys each active every interval, on 1 shard, + rpm, USD", 1, 1, true),
        ("10,000 keys each active every interval, on all 4 shards", SHARDS, 1, false),
        ("10,000 keys each active every interval, on all 4 shards, + rpm, USD", SHARDS, 1, true),
        ("10,000 keys at 1 request/s each (1 in 10 intervals), 1 shard", 1, 10, false),
        ("10,000 keys at 1 request/s each (1 in 10 intervals), 1 shard, + rpm, USD", 1, 10, true),
    ] {
        let board = BudgetBoard::new(SHARDS, KEYS * 2);
        let mut replica = Replica::new(node_id("bench-node"), &board, 1_000_000);
        replica.begin(1_700_000_000);
        let refused = AtomicU64::new(0);
        // Warm up (first ship of every key), then measure 20 intervals.
        for phase in 0..every {
            settle(&board, shards, every, phase, 0, all);
        }
        replica.collect(&board, &refused);
        let _ = replica.take_delta_messages();
        let rounds = 20u64;
        let mut delta_bytes = 0u64;
        for round in 1..=rounds {
            settle(&board, shards, every, (round as usize) % every, round, all);
            replica.collect(&board, &refused);
            delta_bytes += replica.take_delta_messages().iter().map(|m| m.len() as u64).sum::<u64>();
        }
        let per_interval = delta_bytes / rounds;
        let delta_per_s = per_interval * 1000 / INTERVAL_MS;
        let full: u64 = replica.full_messages().iter().map(|m| m.len() as u64).sum();
        let full_per_s = full * 1000 / FULL_MS;
        assert_eq!(refused.into_inner(), 0);
        println!("| {label} | {per_interval} | {delta_per_s} | {full} | {full_per_s} | {} |", delta_per_s + full_per_s);
    }
}
