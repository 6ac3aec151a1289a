//! Provider health through the real gateway: the latency mode follows peak-EWMA
//! estimates and circuits, an open circuit is skipped in failover and shown on
//! `/metrics` and `/readyz`, and two gateways on one `nats-server` share open
//! circuits over `BH_HEALTH`.

use std::time::{Duration, Instant};

use crate::audit::{need_nats, NatsServer};
use crate::harness::*;

fn provider_of(r: &Resp) -> String {
    assert_eq!(r.status, 200, "{}", r.text());
    r.header("x-gatekeeper-provider").unwrap_or_default().to_string()
}

/// A mock answering after `ms` (whole answers and the first streamed token alike).
fn mock(name: &str, ms: u64) -> Mock {
    Mock::start(Mock::config(name).latency_ms(ms).ttft_ms(ms))
}

#[test]
fn latency_mode_prefers_the_fast_one_leaves_it_failing_and_returns_after_recovery() {
    let slow = mock("slow", 200);
    let fast = mock("fast", 20);
    // The slow one is first in the failover chain: only the latency mode puts the fast one first.
    let top = "routing: { default_mode: latency, health: { failures_max: 3, open_ms: 2000, open_max_ms: 4000 } }\n";
    let gw =
        Gateway::start(&config_for(&[("slow", &slow, ""), ("fast", &fast, "")], top), &["--no-auth", "--shards", "1"]);
    for i in 0..10 {
        provider_of(&chat(gw.addr, "m", i % 3 == 0, ""));
    }
    let to_fast = (0..50).filter(|i| provider_of(&chat(gw.addr, "m", i % 5 == 0, "")) == "fast").count();
    assert!(to_fast >= 45, "after warm-up ≥ 90 % go to the fast one: {to_fast}/50");

    // The fast one fails: every request still succeeds (failover), and within 20
    // requests the fast one is left alone but for a half-open probe.
    let mut hits = Vec::new();
    for _ in 0..30 {
        let before = fast.requests();
        assert_eq!(provider_of(&chat(gw.addr, "m", false, "X-Mock-Fault: fast=500\r\n")), "slow");
        hits.push(fast.requests() - before);
    }
    let (first, rest): (u64, u64) = (hits[..20].iter().sum(), hits[20..].iter().sum());
    assert!((3..=5).contains(&first), "3 failures open the circuit, then a probe per cool-down: {hits:?}");
    assert!(rest <= 1, "after 20 requests, at most a half-open probe: {hits:?}");
    let metrics = request(gw.addr, b"GET /metrics HTTP/1.1\r\nHost: gw\r\n\r\n").text();
    assert!(metrics.contains("gatekeeper_circuit_opened_total{model=\"m\",provider=\"fast\"}"), "{metrics}");

    // Recovered: once the cool-down ends a probe succeeds and the traffic comes back.
    let deadline = Instant::now() + Duration::from_secs(20);
    while provider_of(&chat(gw.addr, "m", false, "")) != "fast" {
        assert!(Instant::now() < deadline, "the fast one never came back");
        std::thread::sleep(Duration::from_millis(100));
    }
    let back = (0..20).filter(|_| provider_of(&chat(gw.addr, "m", false, "")) == "fast").count();
    assert!(back >= 18, "traffic back on the recovered fast one: {back}/20");
}

#[test]
fn an_open_circuit_is_skipped_in_failover_and_reported() {
    let primary = Mock::start(Mock::config("primary"));
    let backup = Mock::start(Mock::config("backup"));
    let top = "routing: { health: { failures_max: 2, open_ms: 60000, open_max_ms: 60000 } }\n";
    // One shard: consecutive failures are counted per shard.
    let gw = Gateway::start(
        &config_for(&[("primary", &primary, ""), ("backup", &backup, "")], top),
        &["--no-auth", "--shards", "1"],
    );
    assert_eq!(provider_of(&chat(gw.addr, "m", false, "")), "primary");
    for _ in 0..2 {
        assert_eq!(provider_of(&chat(gw.addr, "m", false, "X-Mock-Fault: primary=503\r\n")), "backup");
    }
    assert_eq!(primary.requests(), 3);
    for stream in [false, true, false] {
        assert_eq!(provider_of(&chat(gw.addr, "m", stream, "")), "backup", "the open circuit is skipped");
    }
    assert_eq!(primary.requests(), 3, "no call while the circuit is open");
    let metrics = request(gw.addr, b"GET /metrics HTTP/1.1\r\nHost: gw\r\n\r\n").text();
    assert!(metrics.contains("gatekeeper_circuit_state{model=\"m\",provider=\"primary\"} 1"), "{metrics}");
    assert!(metrics.contains("gatekeeper_circuit_state{model=\"m\",provider=\"backup\"} 0"), "{metrics}");
    let ready = request(gw.addr, b"GET /readyz HTTP/1.1\r\nHost: gw\r\n\r\n").json();
    assert_eq!(ready["status"], "degraded", "{ready}");
    let reasons = ready["reasons"].to_string();
    assert!(reasons.contains("m on primary: circuit open (consecutive failures)"), "{reasons}");
    // Every deployment open: the client hears 503 with when to come back.
    for _ in 0..2 {
        chat(gw.addr, "m", false, "X-Mock-Fault: backup=500\r\n");
    }
    let r = chat(gw.addr, "m", false, "");
    assert_eq!(r.status, 503, "{}", r.text());
    let retry: u64 = r.header("retry-after").and_then(|v| v.parse().ok()).expect("Retry-After");
    assert!((1..=60).contains(&retry), "{retry}");
}

#[test]
fn two_gateways_sharing_bh_health_avoid_a_provider_only_one_saw_failing() {
    need_nats!();
    let nats = NatsServer::start();
    let bad = Mock::start(Mock::config("bad"));
    let good = Mock::start(Mock::config("good"));
    let start = |name: &str| {
        let data = tempfile::tempdir().expect("tempdir");
        let top = format!(
            "routing: {{ health: {{ failures_max: 2, open_ms: 30000, open_max_ms: 30000 }} }}\n\
             audit: {{ enabled: false, node_name: {name}, data_dir: \"{}\" }}\n\
             nats: {{ url: \"{}\", ack_timeout_ms: 1000, connect_timeout_ms: 500 }}\n",
            data.path().display(),
            nats.url()
        );
        (
            Gateway::start(
                &config_for(&[("bad", &bad, ""), ("good", &good, "")], &top),
                &["--no-auth", "--shards", "1"],
            ),
            data,
        )
    };
    let (a, _a_data) = start("node-a");
    let (b, _b_data) = start("node-b");
    let ready = |gw: &Gateway| request(gw.addr, b"GET /readyz HTTP/1.1\r\nHost: gw\r\n\r\n").json();
    // Both bridges connected and subscribed: B answers through `bad`, which works for it.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(provider_of(&chat(b.addr, "m", false, "")), "bad");

    for _ in 0..2 {
        assert_eq!(provider_of(&chat(a.addr, "m", false, "X-Mock-Fault: bad=500\r\n")), "good");
    }
    let opened = Instant::now();
    assert_eq!(ready(&a)["status"], "degraded");
    loop {
        let r = ready(&b);
        if r["reasons"].to_string().contains("m on bad: circuit open on another node") {
            break;
        }
        assert!(opened.elapsed() < Duration::from_secs(3), "node B never heard of A's open circuit: {r}");
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("node B learned node A's open circuit within {} ms", opened.elapsed().as_millis());
    let calls = bad.requests();
    for _ in 0..5 {
        assert_eq!(provider_of(&chat(b.addr, "m", false, "")), "good", "B avoids the provider A saw failing");
    }
    assert_eq!(bad.requests(), calls, "B made no call to it");
}
