//! The provider side and the shard's admission: name resolution off the shard, no
//! second copy of a POST the provider already read, shedding past the shard's and the
//! pools' bounds, and the admin listener. Each test failed before its fix.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use crate::harness::hostile::{Hostile, COMPLETION};
use crate::harness::*;

/// Sends `n` chat requests for `model` at once (one thread and connection each).
fn burst(addr: std::net::SocketAddr, model: &'static str, n: usize) -> Vec<Resp> {
    let start = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                let mut s = connect(addr);
                start.wait();
                std::io::Write::write_all(&mut s, &chat_request(&chat_body(model, false), "")).expect("send");
                Reader::new(s).response().expect("a response")
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().expect("client thread")).collect()
}

/// Splits answers into (200s, 503 `overloaded` with `Retry-After`), failing on anything else.
fn admitted_and_shed(answers: &[Resp]) -> (usize, usize) {
    let (mut ok, mut shed) = (0, 0);
    for r in answers {
        match r.status {
            200 => ok += 1,
            503 => {
                assert_eq!(r.json()["error"]["code"], "overloaded", "{}", r.text());
                assert_eq!(r.json()["error"]["type"], "server_error");
                assert_eq!(r.header("retry-after"), Some("1"));
                shed += 1;
            }
            s => panic!("unexpected status {s}: {}", r.text()),
        }
    }
    (ok, shed)
}

/// A provider whose host name does not resolve is skipped within its connect timeout,
/// and while its lookup hangs the shard keeps serving: the lookup runs on a resolver
/// thread. (Before: `to_socket_addrs()` on the shard, outside the timeout, stalled
/// every request on it for as long as the lookup took.)
#[test]
fn an_unresolvable_provider_fails_over_without_stalling_the_shard() {
    let good = Mock::start(Mock::config("good"));
    // Debug builds hold lookups of `slow-MS.dns-test.invalid` for MS ms (net's resolve.rs).
    let mut config = String::from("providers:\n");
    for (name, host) in [("slow", "slow-3000.dns-test.invalid"), ("gone", "nonexistent.invalid")] {
        config.push_str(&format!(
            "  - {{ name: {name}, kind: openai_compatible, base_url: \"http://{host}/v1\", connect_timeout_ms: 300 }}\n"
        ));
    }
    config.push_str(&provider("good", &good, ""));
    config.push_str(
        "models:\n\
         \x20 - { name: m, provider: slow, upstream_model: x }\n\
         \x20 - { name: m, provider: good, upstream_model: up-good }\n\
         \x20 - { name: gone-first, provider: gone, upstream_model: x }\n\
         \x20 - { name: gone-first, provider: good, upstream_model: up-good }\n\
         \x20 - { name: healthy, provider: good, upstream_model: up-good }\n\
         failover_chain:\n\
         \x20 - { provider: slow, priority: 1 }\n\
         \x20 - { provider: gone, priority: 2 }\n\
         \x20 - { provider: good, priority: 3 }\n",
    );
    let gw = Gateway::start(&config, &["--no-auth", "--shards", "1"]);
    let addr = gw.addr;
    let started = Instant::now();
    let failing_over = std::thread::spawn(move || {
        let r = chat(addr, "m", false, "");
        (r, started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(50));
    let asked = Instant::now();
    let healthy = chat(addr, "healthy", false, "");
    let healthy_took = asked.elapsed();
    assert_eq!(healthy.status, 200, "{}", healthy.text());
    assert!(healthy_took < Duration::from_millis(1_000), "the shard stalled behind a lookup: {healthy_took:?}");
    let (r, took) = failing_over.join().expect("client thread");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-gatekeeper-provider"), Some("good"));
    assert!(took >= Duration::from_millis(290), "waited for the connect timeout: {took:?}");
    assert!(took < Duration::from_millis(2_000), "bounded by the connect timeout: {took:?}");
    // A name that does not exist (answered at once by the system resolver) fails over too.
    let r = chat(addr, "gone-first", false, "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-gatekeeper-provider"), Some("good"));
    let m = request(addr, b"GET /metrics HTTP/1.1\r\nHost: gw\r\n\r\n").text();
    assert!(m.contains("gatekeeper_upstream_failures_total{provider=\"gone\"} 1"), "{m}");
}

/// A provider that reads a whole POST on a kept-alive connection and closes without
/// answering may have acted on it: the gateway does not send it to that provider again
/// but fails over. (Before: the "stale connection" retry re-sent it on a fresh
/// connection to the same provider.)
#[test]
fn a_post_the_provider_read_whole_is_not_sent_to_it_again() {
    let keep_alive = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{COMPLETION}",
        COMPLETION.len()
    )
    .into_bytes();
    // The first request is answered on a kept-alive connection, the second is read and
    // the connection closed, any later one answered again.
    let hostile = Hostile::start(move |i, _| (Duration::ZERO, if i == 1 { Vec::new() } else { keep_alive.clone() }));
    let backup = Mock::start(Mock::config("backup"));
    let gw = super::gateway_for(&hostile, "", Some(&backup));
    let first = chat(gw.addr, "m", false, "");
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.header("x-gatekeeper-provider"), Some("h"));
    let second = chat(gw.addr, "m", false, "");
    assert_eq!(second.status, 200, "{}", second.text());
    assert_eq!(second.header("x-gatekeeper-provider"), Some("backup"), "failed over");
    assert_eq!(hostile.count(), 2, "the provider saw the second request once");
    assert_eq!(backup.requests(), 1);
}

/// Past `limits.inflight_per_shard_max` a shard answers 503 `overloaded` with
/// `Retry-After` at once; the requests it admitted complete.
#[test]
fn a_shard_past_its_inflight_bound_sheds_with_503() {
    let slow = Mock::start(Mock::config("primary").latency_ms(400));
    let config = config_for(&[("primary", &slow, "")], "limits: { inflight_per_shard_max: 2 }\n");
    let gw = Gateway::start(&config, &["--no-auth", "--shards", "1"]);
    let started = Instant::now();
    let answers = burst(gw.addr, "m", 8);
    let (ok, shed) = admitted_and_shed(&answers);
    assert!(ok >= 2 && shed >= 1, "{ok} admitted, {shed} shed");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(slow.requests() as usize, ok, "shed requests never reached the provider");
    // Every place came back.
    let (ok, _) = admitted_and_shed(&burst(gw.addr, "m", 2));
    assert_eq!(ok, 2, "the bound is in flight, not in total");
}

/// A provider pool with `connections_max` busy and `queue_max` waiting is the
/// gateway's own limit: 503 `overloaded`, not a provider failure. (Before: 502
/// `upstream_failed`, counted against the provider.)
#[test]
fn a_full_provider_queue_is_overload_not_a_provider_failure() {
    let slow = Mock::start(Mock::config("primary").latency_ms(500));
    let config = config_for(&[("primary", &slow, ", connections_max: 1, queue_max: 1")], "");
    let gw = Gateway::start(&config, &["--no-auth", "--shards", "1"]);
    let answers = burst(gw.addr, "m", 5);
    let (ok, shed) = admitted_and_shed(&answers);
    assert!(ok >= 1 && shed >= 1, "{ok} served, {shed} shed");
    let m = request(gw.addr, b"GET /metrics HTTP/1.1\r\nHost: gw\r\n\r\n").text();
    assert!(m.contains("gatekeeper_upstream_failures_total{provider=\"primary\"} 0"), "{m}");
}

/// With `admin_listen`, `/metrics`, `/readyz` and `/healthz` are served there and the
/// API listener answers the first two with 404.
#[test]
fn the_admin_listener_takes_metrics_and_readyz() {
    let mock = Mock::start(Mock::config("primary"));
    let config = config_for(&[("primary", &mock, "")], "admin_listen: 127.0.0.1:0\n");
    let gw = Gateway::start(&config, &["--no-auth", "--shards", "1"]);
    let admin = gw.proc.next_listening(Duration::from_secs(10)).expect("the admin listener's address is printed");
    assert_ne!(admin, gw.addr);
    assert_eq!(chat(gw.addr, "m", false, "").status, 200);
    let m = request(admin, b"GET /metrics HTTP/1.1\r\nHost: gw\r\n\r\n");
    assert_eq!(m.status, 200);
    assert!(m.text().contains("gatekeeper_upstream_failures_total{provider=\"primary\"} 0"), "{}", m.text());
    let ready = request(admin, b"GET /readyz HTTP/1.1\r\nHost: gw\r\n\r\n");
    assert_eq!((ready.status, ready.json()["status"].as_str()), (200, Some("ready")));
    assert_eq!(ready.json()["shards"], 1, "the API shards, not the admin listener");
    assert_eq!(request(admin, b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n").status, 200);
    assert_eq!(request(admin, b"POST /metrics HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\n\r\n").status, 405);
    let chat_on_admin = request(admin, &chat_request(&chat_body("m", false), ""));
    assert_eq!(chat_on_admin.status, 404, "{}", chat_on_admin.text());
    for path in ["/metrics", "/readyz"] {
        let r = request(gw.addr, format!("GET {path} HTTP/1.1\r\nHost: gw\r\n\r\n").as_bytes());
        assert_eq!(r.status, 404, "{path} on the API listener: {}", r.text());
        assert_eq!(r.json()["error"]["code"], "unknown_url");
    }
    assert_eq!(
        request(gw.addr, b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n").status,
        200,
        "healthz stays on the API port"
    );
}

/// Without `admin_listen`, nothing moves: one listener serves everything.
#[test]
fn without_an_admin_listener_metrics_and_readyz_stay_on_the_api_port() {
    let mock = Mock::start(Mock::config("primary"));
    let gw = Gateway::start(&config_for(&[("primary", &mock, "")], ""), &["--no-auth", "--shards", "1"]);
    for path in ["/metrics", "/readyz", "/healthz"] {
        let r = request(gw.addr, format!("GET {path} HTTP/1.1\r\nHost: gw\r\n\r\n").as_bytes());
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    }
    assert!(gw.proc.next_listening(Duration::from_millis(200)).is_none(), "no admin listener");
}
