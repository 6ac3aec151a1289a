use super::*;

/// 2024-03-01T12:00:30Z: inside one minute, day and month.
const NOW: i64 = 1_709_294_430;
const DAY: usize = 1;

fn key_ref(name: &str) -> SubjectRef<'_> {
    SubjectRef { tenant: false, name }
}

/// Sets shard `shard`'s settled tokens of key `name` for today.
fn settle(board: &BudgetBoard, shard: usize, name: &str, tokens: u64) {
    let row = board.row(board.find_or_claim(key_ref(name)).expect("row")).expect("body");
    let start = WindowKind::Day.epoch(NOW).expect("epoch").start_unix_s();
    let cell = row.cell(shard, DAY).expect("cell");
    cell.store(CellValues { settled_tokens: tokens, ..CellValues::fresh(start) });
}

fn remote(board: &BudgetBoard, name: &str) -> u64 {
    let start = WindowKind::Day.epoch(NOW).expect("epoch").start_unix_s();
    board
        .find(key_ref(name))
        .and_then(|r| board.row(r))
        .and_then(|r| r.remote_cell(DAY))
        .map_or(0, |c| c.read_window(start).settled_tokens)
}

fn total(board: &BudgetBoard, name: &str) -> u64 {
    let start = WindowKind::Day.epoch(NOW).expect("epoch").start_unix_s();
    board.find(key_ref(name)).and_then(|r| board.row(r)).map_or(0, |r| r.total(DAY, start).settled_tokens)
}

fn started(node: &str, board: &BudgetBoard) -> Replica {
    let mut r = Replica::new(node_id(node), board, 1 << 20);
    r.begin(1_000);
    r
}

/// Ships `from`'s delta into `to` and its board, as the gossip task does.
fn ship(from: &mut Replica, from_board: &BudgetBoard, to: &mut Replica, to_board: &BudgetBoard) {
    let refused = AtomicU64::new(0);
    from.collect(from_board, &refused);
    for m in from.take_delta_messages() {
        let changed = to.merge_bytes(&m).expect("valid delta");
        to.write_remote(to_board, &changed, NOW, &refused);
    }
    assert_eq!(refused.load(Ordering::Relaxed), 0);
}

#[test]
fn a_delta_lands_in_the_other_nodes_remote_column_once() {
    let (a_board, b_board) = (BudgetBoard::new(2, 64), BudgetBoard::new(2, 64));
    let (mut a, mut b) = (started("a", &a_board), started("b", &b_board));
    settle(&a_board, 0, "k", 70);
    settle(&a_board, 1, "k", 30);
    ship(&mut a, &a_board, &mut b, &b_board);
    assert_eq!(remote(&b_board, "k"), 100, "both shards' slots, claimed a row on B");
    assert!(a.take_delta_messages().is_empty(), "nothing new, nothing shipped");
    settle(&b_board, 1, "k", 5);
    ship(&mut b, &b_board, &mut a, &a_board);
    assert_eq!((total(&a_board, "k"), total(&b_board, "k")), (105, 105));
    assert_eq!(remote(&a_board, "k"), 5, "A's own slots never land in its remote column");
    // A full state delivered again (and out of order) changes nothing.
    let refused = AtomicU64::new(0);
    for m in a.full_messages() {
        let changed = b.merge_bytes(&m).expect("full state");
        b.write_remote(&b_board, &changed, NOW, &refused);
    }
    assert_eq!(total(&b_board, "k"), 105);
    let k = BudgetKey::at(Subject::key("k").expect("subject"), WindowKind::Day, NOW).expect("key");
    let mut c = b.contributions(&k);
    c.sort_unstable();
    let mut want = vec![(node_id("a"), 100), (node_id("b"), 5)];
    want.sort_unstable();
    assert_eq!(c, want);
}

#[test]
fn a_restarted_node_recovers_its_spend_under_a_new_incarnation() {
    let (a_board, b_board) = (BudgetBoard::new(2, 64), BudgetBoard::new(2, 64));
    let (mut a, mut b) = (started("a", &a_board), started("b", &b_board));
    settle(&a_board, 1, "k", 900);
    ship(&mut a, &a_board, &mut b, &b_board);
    let old = a.incarnation();

    // A restarts with an empty board (no snapshot file) and pulls B's state.
    let a2_board = BudgetBoard::new(2, 64);
    let mut a2 = Replica::new(node_id("a"), &a2_board, 1 << 20);
    for m in b.full_messages() {
        a2.merge_bytes(&m).expect("snapshot");
    }
    a2.begin(500); // a clock behind the old boot: the known incarnation still wins
    assert!(a2.incarnation() > old, "{} > {old}", a2.incarnation());
    a2.seed(&a2_board, NOW);
    let joined = a2.state().clone();
    a2.write_remote(&a2_board, &joined, NOW, &AtomicU64::new(0));
    assert_eq!(total(&a2_board, "k"), 900, "the old boot's spend still counts");
    assert_eq!(remote(&a2_board, "k"), 0, "it is A's own (seeded into shard 0), not remote");

    // New spend on shard 0 (900 seeded + 50) ships as 50 under the new incarnation.
    settle(&a2_board, 0, "k", 950);
    ship(&mut a2, &a2_board, &mut b, &b_board);
    assert_eq!(total(&b_board, "k"), 950, "B counts 900 + 50, not 900 + 950");
}

#[test]
fn the_snapshot_files_floor_is_never_lowered() {
    let board = BudgetBoard::new(1, 8);
    let row = board.row(board.find_or_claim(key_ref("k")).expect("row")).expect("body");
    let start = WindowKind::Day.epoch(NOW).expect("epoch").start_unix_s();
    row.remote_cell(DAY).expect("remote").store(CellValues { settled_tokens: 500, ..CellValues::fresh(start) });
    let mut a = started("a", &board);
    let (other_board, mut other) = (BudgetBoard::new(1, 8), started("b", &BudgetBoard::new(1, 8)));
    settle(&other_board, 0, "k", 300);
    ship(&mut other, &other_board, &mut a, &board);
    assert_eq!(remote(&board, "k"), 500, "max(floor 500, others 300)");
    settle(&other_board, 0, "k", 700);
    ship(&mut other, &other_board, &mut a, &board);
    assert_eq!(remote(&board, "k"), 700);
}

#[test]
fn bad_messages_are_dropped_whole() {
    let board = BudgetBoard::new(1, 8);
    let mut a = Replica::new(node_id("a"), &board, 1024);
    assert!(matches!(a.merge_bytes(&vec![1u8; 1025]), Err(Dropped::TooBig { len: 1025, max: 1024 })), "one past");
    assert!(matches!(a.merge_bytes(&[3, 0]), Err(Dropped::Bad(_))), "unknown version");
    assert!(matches!(a.merge_bytes(&[1, 0]), Err(Dropped::Bad(_))), "version 1 (no measures) is refused");
    assert!(matches!(a.merge_bytes(&[2, 5, 0]), Err(Dropped::Bad(_))), "truncated");
    assert!(matches!(a.merge_bytes(&[]), Err(Dropped::Bad(_))));
    assert!(a.state().is_empty());
    // At the bound exactly: a valid message of 1,024 bytes is taken.
    let mut big = Budgets::default();
    let k = BudgetKey::at(Subject::key(&"x".repeat(255)).expect("subject"), WindowKind::Day, NOW).expect("key");
    let mut n = 0u64;
    while big.encode().len() < 1024 {
        n += 1;
        big.add(ReplicaId::new(n, 0, 1), &k, 1).expect("add");
    }
    let mut bytes = big.encode();
    while bytes.len() > 1024 {
        n -= 1;
        big = Budgets::default();
        for i in 1..=n {
            big.add(ReplicaId::new(i, 0, 1), &k, 1).expect("add");
        }
        bytes = big.encode();
    }
    assert!(a.merge_bytes(&bytes).is_ok(), "{} bytes", bytes.len());
}

#[test]
fn big_states_are_sent_in_messages_within_the_bound() {
    let mut b = Budgets::default();
    for i in 0..500 {
        let k =
            BudgetKey::at(Subject::key(&format!("key-{i}")).expect("subject"), WindowKind::Minute, NOW).expect("key");
        b.add(ReplicaId::new(7, 0, 1), &k, 10 + i).expect("add");
    }
    let messages = chunks(&b, 2048);
    assert!(messages.len() > 1);
    let mut back = Budgets::default();
    for m in &messages {
        assert!(m.len() <= 2048, "{}", m.len());
        back.merge(&Budgets::decode(m, Limits::default()).expect("decode")).expect("merge");
    }
    assert_eq!(back, b);
}

use gatekeeper_crdt::Limits;

#[test]
fn a_join_that_timed_out_never_seeds() {
    let join = Join::default();
    assert_eq!(join.wait(Duration::from_millis(1)), JoinOutcome::TimedOut);
    let mut seeded = false;
    join.complete(JoinOutcome::NoPeer, || seeded = true);
    assert!(!seeded, "the shards may be running: shard 0's column is theirs");
    let join = Arc::new(Join::default());
    let j = join.clone();
    let t = std::thread::spawn(move || j.wait(Duration::from_secs(30)));
    let mut seeded = false;
    // Completed before or while serve waits: seeds once, serve sees the outcome.
    join.complete(JoinOutcome::Snapshot { counters: 3 }, || seeded = true);
    assert!(seeded);
    assert_eq!(t.join().expect("thread"), JoinOutcome::Snapshot { counters: 3 });
}

#[test]
fn thresholds_alert_once_per_window_and_sessions_only_on_change() {
    let board = BudgetBoard::new(2, 8);
    let row = board.row(board.find_or_claim(key_ref("k")).expect("row")).expect("body");
    let start = WindowKind::Day.epoch(NOW).expect("epoch").start_unix_s();
    let set = |settled: u64, reserved: u64| {
        let cell = row.cell(1, DAY).expect("cell");
        cell.store(CellValues {
            settled_tokens: settled,
            reserved_tokens: reserved,
            limit_tokens: Some(1_000),
            ..CellValues::fresh(start)
        });
    };
    let mut w = Watch::default();
    set(799, 0);
    assert!(w.alerts(&board, "n1", NOW).is_empty(), "one below 80 %");
    set(790, 10);
    let a = w.alerts(&board, "n1", NOW);
    assert_eq!(a.len(), 1, "at 80 %, reservations counted");
    assert_eq!(a[0].subject, "bh.alerts.budget_threshold");
    let body: serde_json::Value = serde_json::from_str(&a[0].body).expect("json");
    assert_eq!(
        (body["key_id"].as_str(), body["window"].as_str(), body["limit"].as_u64()),
        (Some("k"), Some("day"), Some(1_000))
    );
    set(900, 0);
    assert!(w.alerts(&board, "n1", NOW).is_empty(), "once per window");
    set(999, 0);
    assert!(w.alerts(&board, "n1", NOW).is_empty(), "one below the limit");
    set(1_000, 0);
    let a = w.alerts(&board, "n1", NOW);
    assert_eq!(a.iter().map(|n| n.subject.as_str()).collect::<Vec<_>>(), ["bh.alerts.budget_exhausted"]);
    let mut other = Watch::default();
    let b = other.alerts(&board, "n2", NOW);
    assert_eq!(b.len(), 1, "a fresh watch jumps straight to exhausted");
    assert_eq!(b[0].msg_id, a[0].msg_id, "the same id on every node: JetStream keeps one");
    // The next day starts over.
    assert!(w.alerts(&board, "n1", NOW + 86_400).is_empty(), "nothing spent tomorrow yet");

    let s = w.sessions(&board, "n1", NOW);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].subject, "bh.sessions.budget.key.k");
    assert!(w.sessions(&board, "n1", NOW).is_empty(), "unchanged: not re-sent");
    set(1_010, 0);
    assert_eq!(w.sessions(&board, "n1", NOW).len(), 1);
}

#[test]
fn a_restart_with_its_snapshot_file_and_a_peers_answer_counts_its_spend_once() {
    // Before the restart: A spent 900, B 100; A's snapshot file holds the total, 1,000.
    let (a_board, b_board) = (BudgetBoard::new(2, 64), BudgetBoard::new(2, 64));
    let (mut a, mut b) = (started("a", &a_board), started("b", &b_board));
    settle(&a_board, 1, "k", 900);
    settle(&b_board, 0, "k", 100);
    ship(&mut a, &a_board, &mut b, &b_board);

    let a2_board = BudgetBoard::new(2, 64);
    let row = a2_board.row(a2_board.find_or_claim(key_ref("k")).expect("row")).expect("body");
    let start = WindowKind::Day.epoch(NOW).expect("epoch").start_unix_s();
    row.remote_cell(DAY).expect("remote").store(CellValues { settled_tokens: 1_000, ..CellValues::fresh(start) });
    let mut a2 = Replica::new(node_id("a"), &a2_board, 1 << 20);
    for m in b.full_messages() {
        a2.merge_bytes(&m).expect("snapshot");
    }
    a2.begin(2_000);
    a2.seed(&a2_board, NOW);
    let joined = a2.state().clone();
    a2.write_remote(&a2_board, &joined, NOW, &AtomicU64::new(0));
    assert_eq!(total(&a2_board, "k"), 1_000, "900 (seeded, A's own) + 100 (remote), not 1,900");
    assert_eq!(remote(&a2_board, "k"), 100);
}

/// Sets shard `shard`'s cell of key `name` in window kind index `k` to `v` (its
/// window is the one containing `NOW`).
fn store(board: &BudgetBoard, shard: usize, name: &str, k: usize, v: CellValues) {
    let row = board.row(board.find_or_claim(key_ref(name)).expect("row")).expect("body");
    let start = KINDS[k].epoch(NOW).expect("epoch").start_unix_s();
    row.cell(shard, k).expect("cell").store(CellValues { epoch_start_s: start, ..v });
}

/// The remote column's cell of key `name`, window kind index `k`.
fn remote_of(board: &BudgetBoard, name: &str, k: usize) -> CellValues {
    let start = KINDS[k].epoch(NOW).expect("epoch").start_unix_s();
    board
        .find(key_ref(name))
        .and_then(|r| board.row(r))
        .and_then(|r| r.remote_cell(k))
        .map_or(CellValues::fresh(start), |c| c.read_window(start))
}

#[test]
fn requests_of_the_minute_and_usd_of_the_month_travel_like_tokens() {
    let (a_board, b_board) = (BudgetBoard::new(2, 64), BudgetBoard::new(2, 64));
    let (mut a, mut b) = (started("a", &a_board), started("b", &b_board));
    let counts = CellValues { settled_tokens: 40, requests: 3, settled_usd_nano: 7_000, ..CellValues::fresh(0) };
    for k in 0..KINDS.len() {
        store(&a_board, 0, "k", k, counts);
        store(&a_board, 1, "k", k, CellValues { requests: 2, settled_usd_nano: 500, ..counts });
    }
    ship(&mut a, &a_board, &mut b, &b_board);
    let (minute, day, month) = (remote_of(&b_board, "k", 0), remote_of(&b_board, "k", 1), remote_of(&b_board, "k", 2));
    assert_eq!((minute.settled_tokens, minute.requests, minute.settled_usd_nano), (80, 5, 0), "rpm's window");
    assert_eq!((day.settled_tokens, day.requests, day.settled_usd_nano), (80, 0, 0), "tokens only");
    assert_eq!(
        (month.settled_tokens, month.requests, month.settled_usd_nano),
        (80, 0, 7_500),
        "usd_per_month's window"
    );
    assert_eq!(a.state().len(), 5, "COUNTERS_PER_SUBJECT counters for one subject");
    assert_eq!(a.state().len(), COUNTERS_PER_SUBJECT);
    // More requests on A: only the grown counter ships, and B's column follows.
    store(&a_board, 1, "k", 0, CellValues { requests: 9, settled_usd_nano: 500, ..counts });
    let refused = AtomicU64::new(0);
    a.collect(&a_board, &refused);
    let delta = a.state().clone();
    let only = a.take_delta_messages();
    assert_eq!(only.len(), 1);
    let changed = b.merge_bytes(&only[0]).expect("delta");
    assert_eq!(changed.len(), 1, "one counter grew: {delta:?}");
    b.write_remote(&b_board, &changed, NOW, &refused);
    assert_eq!(remote_of(&b_board, "k", 0).requests, 12);
    assert_eq!(remote_of(&b_board, "k", 0).settled_tokens, 80, "the other measures stay");
    let rk = BudgetKey::at(Subject::key("k").expect("subject"), WindowKind::Minute, NOW)
        .expect("key")
        .with_measure(Measure::Requests);
    assert_eq!(b.contributions(&rk), vec![(node_id("a"), 12)]);
}

#[test]
fn a_restarted_node_recovers_its_requests_and_usd_without_counting_them_twice() {
    let (a_board, b_board) = (BudgetBoard::new(1, 64), BudgetBoard::new(1, 64));
    let (mut a, mut b) = (started("a", &a_board), started("b", &b_board));
    store(&a_board, 0, "k", 0, CellValues { requests: 6, ..CellValues::fresh(0) });
    store(&a_board, 0, "k", 2, CellValues { settled_usd_nano: 900, ..CellValues::fresh(0) });
    ship(&mut a, &a_board, &mut b, &b_board);
    // A restarts with an empty board and joins from B's full state.
    let a2_board = BudgetBoard::new(1, 64);
    let mut a2 = Replica::new(node_id("a"), &a2_board, 1 << 20);
    for m in b.full_messages() {
        a2.merge_bytes(&m).expect("join");
    }
    a2.begin(2_000);
    a2.seed(&a2_board, NOW);
    let own = |k: usize| {
        let start = KINDS[k].epoch(NOW).expect("epoch").start_unix_s();
        a2_board.row(a2_board.find(key_ref("k")).expect("row")).expect("body").total(k, start)
    };
    assert_eq!((own(0).requests, own(2).settled_usd_nano), (6, 900), "seeded into shard 0");
    // Gossip both ways: nobody counts A's earlier requests or USD twice.
    ship(&mut a2, &a2_board, &mut b, &b_board);
    ship(&mut b, &b_board, &mut a2, &a2_board);
    assert_eq!((own(0).requests, own(2).settled_usd_nano), (6, 900));
    let start = KINDS[0].epoch(NOW).expect("epoch").start_unix_s();
    let on_b = b_board.row(b_board.find(key_ref("k")).expect("row")).expect("body").total(0, start);
    assert_eq!(on_b.requests, 6);
}
