//! The embedded default: chain files under the data dir, no NATS.

use std::time::Duration;

use super::{
    assert_exactly_once, config, file_messages, request_ids, shard_audit, start_bridge, stop_bridge, submit_all,
    Submitter,
};
use gatekeeper::audit::verify::verify_dir;

#[test]
fn ten_thousand_records_are_stored_once_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path(), "", None);
    let bridge = start_bridge(&c, 4).expect("bridge");
    let submitted = submit_all(&bridge, 4, 2500, "r");
    let report = stop_bridge(&bridge, Duration::from_secs(30));
    assert!(report.drained, "{report:?}");
    assert_eq!(report.entries, 10_000);
    let summary = verify_dir(dir.path(), Vec::new()).expect("verifies");
    assert_eq!((summary.instances, summary.entries), (1, 10_000));
    assert!(summary.checkpoints >= 100, "one per 100 entries at least: {summary:?}");
    assert!(summary.open_tails.is_empty(), "closed by a final checkpoint: {summary:?}");
    let files = file_messages(dir.path());
    assert_exactly_once(&submitted, &request_ids(files.iter().flat_map(|(_, l)| l)));
    // The shipped WAL is gone.
    let wal_left: Vec<_> = std::fs::read_dir(dir.path().join("wal"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "wal"))
        .collect();
    assert!(wal_left.len() <= 4, "only the last (empty) parts may remain: {wal_left:?}");
    // The CLI agrees, with the node key pinned.
    let key = gatekeeper::keys::SecretKey::from_paserk(&std::fs::read_to_string(dir.path().join("node.key")).unwrap())
        .unwrap();
    let pubkey = key.public_key().to_paserk();
    let (ok, out) = super::verify_cli(&["--dir", dir.path().to_str().unwrap(), "--public-key", &pubkey]);
    assert!(ok, "{out}");
    assert!(out.contains("1 instances, 10000 entries"), "{out}");
    let other = gatekeeper::keys::SecretKey::generate().public_key().to_paserk();
    let (ok, out) = super::verify_cli(&["--dir", dir.path().to_str().unwrap(), "--public-key", &other]);
    assert!(!ok && out.contains("untrusted key"), "{out}");
}

#[test]
fn restarts_continue_in_new_chains_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path(), "", None);
    let mut all = Vec::new();
    for round in 0..3 {
        let bridge = start_bridge(&c, 2).expect("bridge");
        all.extend(submit_all(&bridge, 2, 300, &format!("round{round}")));
        stop_bridge(&bridge, Duration::from_secs(30));
    }
    let summary = verify_dir(dir.path(), Vec::new()).expect("verifies");
    assert_eq!((summary.instances, summary.entries), (3, 1800));
    let files = file_messages(dir.path());
    assert_exactly_once(&all, &request_ids(files.iter().flat_map(|(_, l)| l)));
}

#[test]
fn a_second_bridge_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path(), "", None);
    let _first = start_bridge(&c, 1).expect("bridge");
    let err = start_bridge(&c, 1).expect_err("second bridge");
    assert!(err.to_string().contains("in use"), "{err}");
}

#[test]
fn content_is_kept_only_when_enabled() {
    for include in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path(), &format!(", include_content: {include}"), None);
        let bridge = start_bridge(&c, 1).expect("bridge");
        let mut r = super::record("with-content", 0);
        r.content = Some(serde_json::json!({"prompt": "secret prompt"}));
        shard_audit(&bridge, 0).submit(&r).unwrap();
        stop_bridge(&bridge, Duration::from_secs(10));
        let text: String = file_messages(dir.path())
            .iter()
            .flat_map(|(_, l)| l)
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect();
        assert_eq!(text.contains("secret prompt"), include, "include_content: {include}");
    }
}

/// The process is killed with SIGKILL mid-run; a restart ships everything whose
/// `submit` had returned, once.
#[test]
fn sigkill_mid_run_loses_nothing_embedded() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = super::write_config(dir.path(), "", None, &data);
    let mut first = Submitter::start(&cfg, 2, 50_000, "a", 0);
    first.wait_submitted(4000);
    let before = first.kill();
    assert!(before.len() < 100_000, "killed mid-run");
    let second = Submitter::start(&cfg, 2, 500, "b", 0);
    let after = second.finish();
    let summary = verify_dir(&data, Vec::new()).expect("verifies");
    let files = file_messages(&data);
    let stored = request_ids(files.iter().flat_map(|(_, l)| l));
    let mut submitted = before.clone();
    submitted.extend(after);
    assert_exactly_once(&submitted, &stored);
    // Records whose submit returned but whose line the kill swallowed are stored too,
    // once; nothing else is.
    assert!(stored.len() >= submitted.len(), "{} stored < {} submitted", stored.len(), submitted.len());
    assert_eq!(summary.entries as usize, stored.len());
}

/// Whether any chain file under `data_dir` holds `needle` yet (lines may be mid-write).
fn chain_files_contain(data_dir: &std::path::Path, needle: &str) -> bool {
    gatekeeper::audit::verify::chain_files(data_dir)
        .unwrap_or_default()
        .iter()
        .filter_map(|p| std::fs::read(p).ok())
        .any(|text| text.windows(needle.len()).any(|w| w == needle.as_bytes()))
}

/// Waits up to `limit` for `needle` to reach a chain file; how long it took.
fn time_until_stored(data_dir: &std::path::Path, needle: &str, limit: Duration) -> Option<Duration> {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if chain_files_contain(data_dir, needle) {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}

/// With the embedded chain file, an `fsync: interval` tick makes what was written
/// before it durable by shipping it into the chain file (then fsyncing that), not by
/// fsyncing the WAL. So a record reaches the chain file within about one interval even
/// when `batch_wait_ms` would hold it back far longer; the WAL parts it leaves behind
/// are deleted once their records are synced (at the latest at shutdown).
#[test]
fn an_fsync_tick_ships_what_was_written_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path(), ", batch_wait_ms: 1000, fsync_interval_ms: 50", None);
    let bridge = start_bridge(&c, 1).expect("bridge");
    let audit = shard_audit(&bridge, 0);
    // The first record after a lull ships at once; the bridge then lets the next
    // batch gather for `batch_wait_ms`, bounded by the next tick.
    audit.submit(&super::record("tick-first", 0)).unwrap();
    let first = time_until_stored(dir.path(), "tick-first", Duration::from_secs(10));
    assert!(first.is_some(), "the first record was not stored");
    audit.submit(&super::record("tick-second", 0)).unwrap();
    let second = time_until_stored(dir.path(), "tick-second", Duration::from_secs(10)).expect("stored");
    // Two intervals and slack for a loaded machine; without the tick's shipping it
    // waits out the whole `batch_wait_ms` (1000 ms).
    assert!(second < Duration::from_millis(600), "stored after {second:?}");
    let report = stop_bridge(&bridge, Duration::from_secs(10));
    assert!(report.drained, "{report:?}");
    let summary = verify_dir(dir.path(), Vec::new()).expect("verifies");
    assert_eq!(summary.entries, 2);
    let wal_left: Vec<_> = std::fs::read_dir(dir.path().join("wal"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "wal"))
        .map(|e| std::fs::metadata(e.path()).map(|m| m.len()).unwrap_or(0))
        .collect();
    assert!(wal_left.len() <= 1, "only the last part may remain: {wal_left:?}");
}
