//! Failover: every error class before the first byte moves to the next provider;
//! nothing moves after it; when all fail the client gets 502/504 in OpenAI shape.

use std::time::Duration;

use crate::harness::*;

/// Two mocks (primary, backup) behind one single-shard gateway; faults are chosen
/// per request with `X-Mock-Fault: primary=…`, which the gateway forwards.
fn pair() -> (Mock, Mock, Gateway) {
    let primary = Mock::start(Mock::config("primary"));
    let backup = Mock::start(Mock::config("backup"));
    let config = config_for(
        &[("primary", &primary, ", first_byte_timeout_ms: 400"), ("backup", &backup, ", first_byte_timeout_ms: 400")],
        // The failures here are per request; circuits have their own tests (`health`).
        "routing: { health: { failures_max: 1000 } }\n",
    );
    let gw = Gateway::start(&config, &["--no-auth", "--shards", "1"]);
    (primary, backup, gw)
}

#[test]
fn each_error_class_fails_over_to_the_backup() {
    let (primary, backup, gw) = pair();
    for fault in ["429", "500", "503", "reset", "stall", "cut"] {
        for stream in [false, true] {
            let before = (primary.requests(), backup.requests());
            let r = chat(gw.addr, "m", stream, &format!("X-Mock-Fault: primary={fault}\r\nX-Mock-Retry-After: 0\r\n"));
            // A streamed `cut` sends bytes first; that case has its own test.
            if fault == "cut" && stream {
                continue;
            }
            assert_eq!(r.status, 200, "fault {fault} stream {stream}: {}", r.text());
            assert_eq!(r.header("x-gatekeeper-provider"), Some("backup"), "fault {fault} stream {stream}");
            assert_eq!(primary.requests(), before.0 + 1, "primary tried once for {fault}");
            assert_eq!(backup.requests(), before.1 + 1, "backup served {fault}");
            if stream {
                assert_eq!(sse_data(&r.body).last().map(String::as_str), Some("[DONE]"));
            } else {
                assert_eq!(r.json()["model"], "up-backup");
            }
        }
    }
    let metrics = request(gw.addr, b"GET /metrics HTTP/1.1\r\nHost: gw\r\n\r\n").text();
    assert!(metrics.contains("gatekeeper_upstream_failures_total{provider=\"primary\"} 12"), "{metrics}");
}

#[test]
fn connect_errors_fail_over() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead_addr = dead.local_addr().expect("addr");
    drop(dead);
    let backup = Mock::start(Mock::config("backup"));
    let config = format!(
        "providers:\n  - {{ name: dead, kind: openai_compatible, base_url: \"http://{dead_addr}/v1\" }}\n{}models:\n  - {{ name: m, provider: dead, upstream_model: x }}\n  - {{ name: m, provider: backup, upstream_model: up-backup }}\nfailover_chain:\n  - {{ provider: dead, priority: 1 }}\n  - {{ provider: backup, priority: 2 }}\n",
        provider("backup", &backup, "")
    );
    let gw = Gateway::start(&config, &["--no-auth"]);
    let r = chat(gw.addr, "m", false, "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-gatekeeper-provider"), Some("backup"));
}

#[test]
fn retry_after_skips_the_provider_until_then() {
    let (primary, backup, gw) = pair();
    let r = chat(gw.addr, "m", false, "X-Mock-Fault: primary=429\r\nX-Mock-Retry-After: 30\r\n");
    assert_eq!(r.header("x-gatekeeper-provider"), Some("backup"));
    assert_eq!(primary.requests(), 1);
    // No fault now, but the primary asked for 30 s: it is not called.
    for _ in 0..3 {
        let r = chat(gw.addr, "m", false, "");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-gatekeeper-provider"), Some("backup"));
    }
    assert_eq!(primary.requests(), 1, "primary called during its Retry-After window");
    assert_eq!(backup.requests(), 4);
}

#[test]
fn retry_after_expiry_brings_the_provider_back() {
    let (primary, _backup, gw) = pair();
    let r = chat(gw.addr, "m", false, "X-Mock-Fault: primary=503\r\nX-Mock-Retry-After: 1\r\n");
    assert_eq!(r.header("x-gatekeeper-provider"), Some("backup"));
    std::thread::sleep(Duration::from_millis(1100));
    let r = chat(gw.addr, "m", false, "");
    assert_eq!(r.header("x-gatekeeper-provider"), Some("primary"));
    assert_eq!(primary.requests(), 2);
}

#[test]
fn no_failover_once_bytes_reached_the_client() {
    let (_primary, backup, gw) = pair();
    let r = chat(gw.addr, "m", true, "X-Mock-Fault: primary=cut\r\nX-Mock-Cut-After: 2\r\n");
    assert_eq!(r.status, 200, "the head was already sent");
    assert_eq!(r.header("x-gatekeeper-provider"), Some("primary"));
    let data = sse_data(&r.body);
    assert!(data.iter().all(|d| d != "[DONE]"), "a cut stream must not look complete: {data:?}");
    let last: serde_json::Value = serde_json::from_str(data.last().expect("events")).expect("json event");
    assert_eq!(last["error"]["code"], "upstream_stream_error", "{last}");
    assert!(data.len() >= 3, "the chunks before the cut were relayed: {data:?}");
    assert_eq!(backup.requests(), 0, "no failover after the first byte");
}

#[test]
fn all_failing_is_502_naming_every_attempt() {
    let (_primary, _backup, gw) = pair();
    let r = chat(gw.addr, "m", false, "X-Mock-Fault: primary=500,backup=503\r\n");
    assert_eq!(r.status, 502);
    let v = r.json();
    assert_eq!(v["error"]["type"], "server_error");
    assert_eq!(v["error"]["code"], "upstream_failed");
    assert_eq!(v["error"]["message"], "all providers failed: primary: HTTP 500; backup: HTTP 503");
    assert!(r.header("x-request-id").is_some());
}

#[test]
fn all_timing_out_is_504() {
    let (_primary, _backup, gw) = pair();
    let r = chat(gw.addr, "m", false, "X-Mock-Fault: stall\r\n");
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "upstream_timeout");
}

#[test]
fn every_provider_in_retry_after_is_503_with_retry_after() {
    let (_primary, _backup, gw) = pair();
    let r = chat(gw.addr, "m", false, "X-Mock-Fault: 429\r\nX-Mock-Retry-After: 20\r\n");
    assert_eq!(r.status, 502, "both answered 429: {}", r.text());
    let r = chat(gw.addr, "m", false, "");
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"]["code"], "providers_rate_limited");
    let retry: u64 = r.header("retry-after").and_then(|v| v.parse().ok()).expect("Retry-After");
    assert!((1..=20).contains(&retry), "{retry}");
}
