//! Against real `nats-server` processes: provisioning, exactly-once across NATS
//! outages and process kills, a 3-node cluster losing a node, and BH_CONFIG.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gatekeeper::bridge::nats::{context, read_audit};
use gatekeeper::bridge::Bridge;
use gatekeeper::cli::audit::verify_nats;
use gatekeeper::config::hot::HotConfig;

use super::{
    assert_exactly_once, config, free_port, need_nats, record, shard_audit, start_bridge, stop_bridge, NatsServer,
    Submitter,
};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Request ids in stream order (which is chain order per instance).
pub(super) fn stored_ids(url: &str) -> Vec<String> {
    rt().block_on(async {
        let client = async_nats::connect(url).await.unwrap();
        let msgs = read_audit(&context(client, Duration::from_secs(10)), "BH_AUDIT").await.unwrap();
        super::request_ids(msgs.iter().map(|m| &m.payload).collect::<Vec<_>>())
    })
}

fn nats_section(url: &str) -> String {
    format!("url: \"{url}\", ack_timeout_ms: 1000, connect_timeout_ms: 500")
}

#[test]
fn ten_thousand_records_are_stored_once_and_verify() {
    need_nats!();
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path(), "", Some(&nats_section(&server.url())));
    let bridge = start_bridge(&c, 4).expect("bridge");
    let submitted = super::submit_all(&bridge, 4, 2500, "n");
    let report = stop_bridge(&bridge, Duration::from_secs(60));
    assert!(report.drained, "{report:?}");
    drop(bridge);
    let summary = verify_nats(&server.url(), "BH_AUDIT", Vec::new()).expect("verifies");
    assert_eq!((summary.instances, summary.entries), (1, 10_000));
    assert!(summary.open_tails.is_empty(), "{summary:?}");
    assert_exactly_once(&submitted, &stored_ids(&server.url()));
    // Provisioned as promised, and provisioning again changes nothing.
    rt().block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
        let mut audit = js.get_stream("BH_AUDIT").await.unwrap();
        let cfg = audit.info().await.unwrap().config.clone();
        assert!(cfg.deny_delete && cfg.deny_purge);
        assert_eq!(cfg.max_age, Duration::ZERO);
        assert_eq!(cfg.storage, async_nats::jetstream::stream::StorageType::File);
        for name in ["BH_EVENTS", "BH_HEALTH", "BH_ALERTS", "BH_SESSIONS", "KV_BH_CONFIG"] {
            js.get_stream(name).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let n: gatekeeper::config::NatsConfig = serde_yaml::from_str(&format!("url: {}", server.url())).unwrap();
        gatekeeper::bridge::nats::provision(&js, &n).await.expect("idempotent");
        // Routing decisions are batched: count the decisions, not the messages.
        let mut events = js.get_stream("BH_EVENTS").await.unwrap();
        let state = events.info().await.unwrap().state.clone();
        let (mut decisions, mut seen) = (0usize, 0u64);
        for seq in state.first_sequence..=state.last_sequence {
            let m = events.get_raw_message(seq).await.unwrap();
            if m.subject.starts_with("bh.events.routes.") {
                // Route batches are stored LZ4-compressed (the default `nats.compression`).
                let encoding = m.headers.get(gatekeeper::bridge::nats::ENCODING_HEADER).map(|v| v.as_str());
                assert_eq!(encoding, Some(gatekeeper::bridge::nats::ENCODING_LZ4));
                let json = gatekeeper::bridge::nats::decode_stored(&m).unwrap();
                let body: serde_json::Value = serde_json::from_slice(&json).unwrap();
                decisions += body["decisions"].as_array().map_or(0, Vec::len);
                seen += 1;
            }
        }
        assert!(seen < 10_000, "batched: {seen} messages");
        assert_eq!(decisions, 10_000, "a routing decision per record");
    });
    let (ok, out) = super::verify_cli(&["--nats", &server.url()]);
    assert!(ok && out.contains("10000 entries"), "{out}");
}

/// NATS is killed while records flow and comes back: every record is stored once,
/// in chain order (the verify checks the order).
#[test]
fn nats_killed_mid_run_and_restarted_loses_nothing() {
    need_nats!();
    let mut server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path(), "", Some(&nats_section(&server.url())));
    let bridge = start_bridge(&c, 2).expect("bridge");
    let done = AtomicBool::new(false);
    let submitted = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let audits: Vec<_> = (0..2).map(|s| shard_audit(&bridge, s)).collect();
            let mut ids = Vec::new();
            for i in 0..6000 {
                let s = i % 2;
                let id = format!("o-{i}");
                audits[s].submit(&record(&id, s as u16)).expect("submit never waits on NATS");
                ids.push(id);
                if i % 100 == 0 {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            done.store(true, Ordering::SeqCst);
            ids
        });
        std::thread::sleep(Duration::from_millis(150));
        server.kill();
        std::thread::sleep(Duration::from_millis(1500));
        server.restart();
        writer.join().unwrap()
    });
    assert!(done.load(Ordering::SeqCst));
    let report = stop_bridge(&bridge, Duration::from_secs(60));
    assert!(report.drained, "{report:?}");
    assert!(bridge.stats().store_failures.load(Ordering::Relaxed) > 0, "the outage was felt");
    drop(bridge);
    verify_nats(&server.url(), "BH_AUDIT", Vec::new()).expect("verifies");
    assert_exactly_once(&submitted, &stored_ids(&server.url()));
}

/// The writing process is SIGKILLed mid-run (NATS stays up); a restart ships the rest once.
#[test]
fn sigkill_mid_run_loses_nothing_nats() {
    need_nats!();
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = super::write_config(dir.path(), "", Some(&nats_section(&server.url())), &data);
    let mut first = Submitter::start(&cfg, 2, 50_000, "k", 20);
    first.wait_submitted(3000);
    let mut submitted = first.kill();
    let second = Submitter::start(&cfg, 2, 200, "l", 0);
    submitted.extend(second.finish());
    let summary = verify_nats(&server.url(), "BH_AUDIT", Vec::new()).expect("verifies");
    assert_eq!(summary.instances, 2);
    let stored = stored_ids(&server.url());
    assert_exactly_once(&submitted, &stored);
}

/// Three servers, routes on loopback, R3 streams; one server dies mid-run.
#[test]
fn three_node_cluster_survives_losing_one_node() {
    need_nats!();
    let cluster_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let routes = cluster_ports.iter().map(|p| format!("nats://127.0.0.1:{p}")).collect::<Vec<_>>().join(",");
    let mut servers: Vec<NatsServer> = (0..3)
        .map(|i| {
            NatsServer::start_with(vec![
                "--server_name".into(),
                format!("n{i}"),
                "--cluster_name".into(),
                "gk".into(),
                "--cluster".into(),
                format!("nats://127.0.0.1:{}", cluster_ports[i]),
                "--routes".into(),
                routes.clone(),
            ])
        })
        .collect();
    let urls = servers.iter().map(|s| s.url()).collect::<Vec<_>>().join(",");
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path(), "", Some(&format!("{}, replicas: 3", nats_section(&urls))));
    let bridge = start_bridge(&c, 2).expect("bridge");
    // Wait for the cluster to elect a meta leader and the bridge to store something.
    let audits: Vec<_> = (0..2).map(|s| shard_audit(&bridge, s)).collect();
    let submit = |prefix: &str, n: usize| -> Vec<String> {
        (0..n)
            .map(|i| {
                let id = format!("{prefix}-{i}");
                audits[i % 2].submit(&record(&id, (i % 2) as u16)).expect("submit");
                id
            })
            .collect()
    };
    let first = submit("c1", 400);
    let deadline = Instant::now() + Duration::from_secs(60);
    while bridge.stats().entries_stored.load(Ordering::Relaxed) < 400 {
        assert!(Instant::now() < deadline, "cluster never stored the first records");
        std::thread::sleep(Duration::from_millis(50));
    }
    servers[0].kill();
    let second = submit("c2", 2000);
    let report = stop_bridge(&bridge, Duration::from_secs(90));
    assert!(report.drained, "{report:?}");
    drop(bridge);
    let mut submitted = first;
    submitted.extend(second);
    let url = servers[1].url();
    let summary = verify_nats(&url, "BH_AUDIT", Vec::new()).expect("verifies");
    assert_eq!(summary.entries, 2400);
    assert_exactly_once(&submitted, &stored_ids(&url));
    let _ = &mut servers;
}

/// Runs `gatekeeper config push` of two revocations and routing rules, then waits
/// until the watch applied both to `hot`.
fn push_and_await(url: &str, dir: &Path, hot: &HotConfig) {
    let seen = std::cell::Cell::new(hot.generation());
    let file = dir.join("push.yaml");
    std::fs::write(&file, "revocations: [key-1, key-2]\nrouting: { default_mode: latency }\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gatekeeper"))
        .args(["config", "push"])
        .arg(&file)
        .args(["--nats", url])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let deadline = Instant::now() + Duration::from_secs(20);
    let list = loop {
        if let Some(list) = hot.changes_since(&seen).map(|s| s.revoked) {
            if list.contains("key-2") {
                break list;
            }
        }
        assert!(Instant::now() < deadline, "the revocation never reached the hot config");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(list.contains("key-1"));
    // `revocations` and `routing` are separate KV keys: the watch may apply them in turn.
    let routing = loop {
        if let Some(r) = hot.routing() {
            break r;
        }
        assert!(Instant::now() < deadline, "the routing rules never reached the hot config");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(routing["default_mode"], "latency");
}

/// `gatekeeper config push` writes BH_CONFIG; the bridge applies it to the hot
/// configuration shards read, without a restart.
#[test]
fn config_push_reaches_the_hot_config() {
    need_nats!();
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path(), "", Some(&nats_section(&server.url())));
    let hot = Arc::new(HotConfig::from_config(&c));
    let bridge = Bridge::start(&c, 1, hot.clone()).expect("bridge");
    push_and_await(&server.url(), dir.path(), &hot);
    assert!(bridge.stats().config_changes.load(Ordering::Relaxed) >= 2);
    stop_bridge(&bridge, Duration::from_secs(10));
}

/// The watch does not wait on audit shipping: with the audit stream impossible to
/// create (another stream holds its subjects), every store fails and is retried, and
/// a pushed change still lands.
#[test]
fn config_push_lands_while_the_audit_store_is_stuck() {
    need_nats!();
    let server = NatsServer::start();
    rt().block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
        js.create_stream(async_nats::jetstream::stream::Config {
            name: "SQUATTER".into(),
            subjects: vec!["bh.audit.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path(), "", Some(&nats_section(&server.url())));
    let hot = Arc::new(HotConfig::from_config(&c));
    let bridge = Bridge::start(&c, 1, hot.clone()).expect("bridge");
    shard_audit(&bridge, 0).submit(&record("stuck-0", 0)).expect("submit never waits on the store");
    let deadline = Instant::now() + Duration::from_secs(20);
    while bridge.stats().store_failures.load(Ordering::Relaxed) < 3 {
        assert!(Instant::now() < deadline, "the store never failed");
        std::thread::sleep(Duration::from_millis(20));
    }
    push_and_await(&server.url(), dir.path(), &hot);
    assert_eq!(bridge.stats().entries_stored.load(Ordering::Relaxed), 0, "the store was stuck throughout");
    let report = stop_bridge(&bridge, Duration::from_millis(500));
    assert!(!report.drained, "{report:?}");
}
