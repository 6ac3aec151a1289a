//! The HTTP suite: run once under `--driver uring` and once under `--driver epoll`.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::*;

fn start_pair(driver: &str, limits: &str) -> (Mock, Gateway) {
    start_pair_with(driver, limits, Mock::config("primary"))
}

/// The gateway in front of `mock`, which must be named `primary`.
fn start_pair_with(driver: &str, limits: &str, mock: MockConfig) -> (Mock, Gateway) {
    let mock = Mock::start(mock.api_key("sk-primary"));
    let config = config_for(&[("primary", &mock, "")], limits);
    let gw = Gateway::start(&config, &["--no-auth", "--driver", driver, "--shards", "2"]);
    (mock, gw)
}

pub fn non_streaming_answer_arrives_intact(driver: &str) {
    let (mock, gw) = start_pair(driver, "");
    let r = chat(gw.addr, "m", false, "X-Request-Id: my-id-1\r\n");
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "up-primary", "model rewritten to the upstream id");
    assert!(v["choices"][0]["message"]["content"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(v["usage"]["total_tokens"].as_u64().is_some_and(|n| n > 0));
    assert_eq!(r.header("x-request-id"), Some("my-id-1"));
    assert_eq!(r.header("x-gatekeeper-provider"), Some("primary"));
    assert_eq!(r.header("x-gatekeeper-model"), Some("m"), "the configured name");
    assert!(r.header("x-gatekeeper-route").is_some_and(|v| v.starts_with("mode=cost; complexity=")));
    assert!(r.header("x-gatekeeper-overhead-us").is_some_and(|v| v.parse::<u64>().is_ok()));
    let stats = mock.stats();
    assert_eq!(stats.last_model.as_deref(), Some("up-primary"));
    assert_eq!(stats.last_authorization.as_deref(), Some("Bearer sk-primary"), "the provider key, never the client's");
}

pub fn streaming_chunks_arrive_as_emitted(driver: &str) {
    let (_mock, gw) = start_pair_with(driver, "", Mock::config("primary").ttft_ms(50).token_ms(150).tokens(6));
    let mut s = connect(gw.addr);
    s.write_all(&chat_request(&chat_body("m", true), "")).expect("write");
    let mut reader = Reader::new(s);
    let mut timed = Timed { pieces: Vec::new() };
    let started = Instant::now();
    let r = reader.response_timed(Some(&mut timed)).expect("response");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    assert_eq!(r.chunked_complete, Some(true));
    let data = sse_data(&r.body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{}", r.text());
    let deltas: String = data
        .iter()
        .filter(|d| d.as_str() != "[DONE]")
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter_map(|v| v["choices"][0]["delta"]["content"].as_str().map(str::to_string))
        .collect();
    assert!(!deltas.is_empty(), "content deltas relayed");
    // Six tokens 150 ms apart: if the gateway buffered the stream, every piece would
    // arrive at the end. Require the first piece well before the last.
    let first = timed.pieces.first().map(|p| p.0).expect("pieces");
    let last = timed.pieces.last().map(|p| p.0).expect("pieces");
    assert!(timed.pieces.len() >= 4, "only {} pieces", timed.pieces.len());
    assert!(last.duration_since(first) >= Duration::from_millis(450), "pieces arrived together");
    assert!(first.duration_since(started) < Duration::from_millis(600), "first chunk late");
}

pub fn keep_alive_and_pipelining_answer_in_order(driver: &str) {
    let (_mock, gw) = start_pair(driver, "");
    let mut s = connect(gw.addr);
    let mut batch = Vec::new();
    for id in ["p-1", "p-2", "p-3"] {
        batch.extend(chat_request(&chat_body("m", false), &format!("X-Request-Id: {id}\r\n")));
    }
    batch.extend_from_slice(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n");
    s.write_all(&batch).expect("write");
    let mut reader = Reader::new(s);
    for id in ["p-1", "p-2", "p-3"] {
        let r = reader.response().expect("response");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-request-id"), Some(id));
    }
    let r = reader.response().expect("health");
    assert_eq!(r.json()["status"], "ok");
}

pub fn chunked_body_and_expect_continue(driver: &str) {
    let (_mock, gw) = start_pair(driver, "");
    let body = chat_body("m", false);
    let (a, b) = body.split_at(10);
    let raw = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
        a.len(),
        b.len()
    );
    assert_eq!(request(gw.addr, raw.as_bytes()).status, 200);

    let mut s = connect(gw.addr);
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).expect("head");
    let mut first = [0u8; 25];
    std::io::Read::read_exact(&mut s, &mut first).expect("100 Continue");
    assert_eq!(&first, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(body.as_bytes()).expect("body");
    let r = Reader::new(s).response().expect("response");
    assert_eq!(r.status, 200);
}

pub fn header_and_body_limits_at_their_edge(driver: &str) {
    let limits = "limits: { header_bytes_max: 1024, body_bytes_max: 2048, header_count_max: 20 }\n";
    let (_mock, gw) = start_pair(driver, limits);
    // A head of exactly 1024 bytes passes; 1025 is refused with 431.
    let head_of = |len: usize| {
        let base = "GET /healthz HTTP/1.1\r\nHost: gw\r\nX-Pad: \r\n\r\n".len();
        format!("GET /healthz HTTP/1.1\r\nHost: gw\r\nX-Pad: {}\r\n\r\n", "a".repeat(len - base))
    };
    assert_eq!(request(gw.addr, head_of(1024).as_bytes()).status, 200);
    let r = request(gw.addr, head_of(1025).as_bytes());
    assert_eq!(r.status, 431);
    assert_eq!(r.json()["error"]["code"], "header_too_large");

    // A body of exactly 2048 bytes passes; 2049 is refused with 413.
    let body_of = |len: usize| {
        let base = chat_body("m", false);
        let pad = len - base.len() - r#","pad":"""#.len();
        format!("{},\"pad\":\"{}\"}}", &base[..base.len() - 1], "x".repeat(pad))
    };
    let ok = body_of(2048);
    assert_eq!(ok.len(), 2048);
    assert_eq!(request(gw.addr, &chat_request(&ok, "")).status, 200);
    let r = request(gw.addr, &chat_request(&body_of(2049), ""));
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"]["code"], "body_too_large");

    // Header count: 20 passes, 21 is refused (Host is one of them).
    let with_headers = |n: usize| {
        let mut h = String::from("GET /healthz HTTP/1.1\r\nHost: gw\r\n");
        for i in 1..n {
            h.push_str(&format!("X-H{i}: v\r\n"));
        }
        h.push_str("\r\n");
        h
    };
    assert_eq!(request(gw.addr, with_headers(20).as_bytes()).status, 200);
    assert_eq!(request(gw.addr, with_headers(21).as_bytes()).status, 431);
}

pub fn slowloris_is_cut_by_the_header_timeout(driver: &str) {
    let limits = "limits: { header_timeout_ms: 400, idle_timeout_ms: 5000 }\n";
    let (_mock, gw) = start_pair(driver, limits);
    let mut s = connect(gw.addr);
    let started = Instant::now();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n").expect("partial head");
    // Keep trickling bytes: each write is well within any per-read timeout, but the
    // head as a whole never completes.
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(100));
        let _ = s.write_all(b"X-Slow: 1\r\n");
    }
    let mut reader = Reader::new(s);
    let r = reader.response().expect("408");
    assert_eq!(r.status, 408);
    assert_eq!(r.json()["error"]["code"], "header_timeout");
    assert!(reader.closed_within(Duration::from_secs(2)));
    assert!(started.elapsed() < Duration::from_secs(3));
}

pub fn idle_keep_alive_connection_is_closed(driver: &str) {
    let limits = "limits: { idle_timeout_ms: 300 }\n";
    let (_mock, gw) = start_pair(driver, limits);
    let mut s = connect(gw.addr);
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n").expect("write");
    let mut reader = Reader::new(s);
    assert_eq!(reader.response().expect("health").status, 200);
    let t = Instant::now();
    assert!(reader.closed_within(Duration::from_secs(3)), "idle connection left open");
    assert!(t.elapsed() >= Duration::from_millis(250));
}

pub fn malformed_requests_get_400_and_close(driver: &str) {
    let (_mock, gw) = start_pair(driver, "");
    for raw in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET / HTTP/9.9\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Length: abc\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
    ] {
        let mut s = connect(gw.addr);
        s.write_all(raw).expect("write");
        let mut reader = Reader::new(s);
        let r = reader.response().expect("an answer");
        assert_eq!(r.status, 400, "for {:?}", String::from_utf8_lossy(raw));
        assert!(r.json()["error"]["message"].is_string());
        assert!(reader.closed_within(Duration::from_secs(2)), "connection left open");
    }
    // Bad JSON is a 400 from the pipeline, and the connection stays usable.
    let r = request(gw.addr, &chat_request("{not json", ""));
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    // Unknown model, unknown path, wrong method.
    assert_eq!(chat(gw.addr, "nope", false, "").status, 404);
    assert_eq!(request(gw.addr, b"GET /nowhere HTTP/1.1\r\nHost: gw\r\n\r\n").status, 404);
    assert_eq!(request(gw.addr, b"GET /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n\r\n").status, 405);
    // The shard survived all of it.
    assert_eq!(chat(gw.addr, "m", false, "").status, 200);
}

pub fn thousand_concurrent_keep_alive_connections(driver: &str) {
    let (_mock, gw) = start_pair(driver, "");
    let mut readers: Vec<Reader> = (0..1000).map(|_| Reader::new(connect(gw.addr))).collect();
    let raw = chat_request(&chat_body("m", false), "");
    for round in 0..2 {
        for r in readers.iter_mut() {
            r.stream.write_all(&raw).expect("write");
        }
        for (i, r) in readers.iter_mut().enumerate() {
            let resp = r.response().unwrap_or_else(|e| panic!("round {round} conn {i}: {e}"));
            assert_eq!(resp.status, 200, "round {round} conn {i}");
        }
    }
    let metrics = request(gw.addr, b"GET /metrics HTTP/1.1\r\nHost: gw\r\n\r\n").text();
    let open: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("gatekeeper_connections_open{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(open >= 1000, "gateway reports {open} open connections");
}

pub fn connection_cap_answers_503(driver: &str) {
    let limits = "limits: { connections_per_shard_max: 2 }\nshards: 1\n";
    let mock = Mock::start(Mock::config("primary"));
    let config = config_for(&[("primary", &mock, "")], limits);
    let gw = Gateway::start(&config, &["--no-auth", "--driver", driver]);
    let mut held: Vec<Reader> = (0..2).map(|_| Reader::new(connect(gw.addr))).collect();
    for r in held.iter_mut() {
        r.stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n").expect("write");
        assert_eq!(r.response().expect("health").status, 200);
    }
    let r = request(gw.addr, b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n");
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("1"));
    drop(held);
    // Once the held connections close, new ones are served again.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if request(gw.addr, b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n").status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "cap never released");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn metrics_name_the_driver(driver: &str) {
    let (_mock, gw) = start_pair(driver, "");
    assert_eq!(chat(gw.addr, "m", false, "").status, 200);
    // A shard records a request just after its last byte is written: allow it that moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    let text = loop {
        let text = request(gw.addr, b"GET /metrics HTTP/1.1\r\nHost: gw\r\n\r\n").text();
        if text.contains("gatekeeper_requests_total{status=\"200\"") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    for shard in 0..2 {
        let line = format!("gatekeeper_shard_driver{{shard=\"{shard}\",driver=\"{driver}\"}} 1");
        assert!(text.contains(&line), "missing {line}");
    }
    assert!(text.contains("gatekeeper_requests_total{status=\"200\",provider=\"primary\",model=\"m\"} 1"), "{text}");
    assert!(text.contains("gatekeeper_overhead_seconds_count"));
    let completion: u64 = text
        .lines()
        .find(|l| l.starts_with("gatekeeper_tokens_total{provider=\"primary\",direction=\"completion\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .expect("token counter");
    assert!(completion > 0, "usage read from the provider's answer");
    let ready = request(gw.addr, b"GET /readyz HTTP/1.1\r\nHost: gw\r\n\r\n");
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["auth"], "DISABLED (--no-auth)");
}

pub fn tls_termination_with_a_self_signed_certificate(driver: &str) {
    let mock = Mock::start(Mock::config("primary"));
    let dir = tempfile::tempdir().expect("tempdir");
    let (top, certified) = self_signed_tls(dir.path());
    let gw = Gateway::start(&config_for(&[("primary", &mock, "")], &top), &["--no-auth", "--driver", driver]);

    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let conn = rustls::ClientConnection::new(Arc::new(client), name).expect("client");
    let mut tls = rustls::StreamOwned::new(conn, connect(gw.addr));
    let raw = chat_request(&chat_body("m", false), "Connection: close\r\n");
    tls.write_all(&raw).expect("write over TLS");
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(text.contains("X-Gatekeeper-Provider: primary"), "{text}");
    assert!(text.contains("\"chat.completion\""), "{text}");

    // Plain HTTP on the TLS port is refused without harming the shard.
    let mut plain = connect(gw.addr);
    plain.write_all(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n").expect("write");
    let mut buf = [0u8; 64];
    let n = plain.read(&mut buf).unwrap_or(0);
    assert!(!String::from_utf8_lossy(&buf[..n]).contains("200 OK"));
}

pub fn slow_body_is_cut_by_the_body_timeout(driver: &str) {
    let limits = "limits: { body_timeout_ms: 400 }\n";
    let (_mock, gw) = start_pair(driver, limits);
    let body = chat_body("m", false);
    let mut s = connect(gw.addr);
    let head = format!("POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Length: {}\r\n\r\n", body.len());
    s.write_all(head.as_bytes()).expect("head");
    s.write_all(&body.as_bytes()[..10]).expect("part of the body");
    let started = Instant::now();
    let mut reader = Reader::new(s);
    let r = reader.response().expect("408");
    assert_eq!(r.status, 408);
    assert_eq!(r.json()["error"]["code"], "body_timeout");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(reader.closed_within(Duration::from_secs(2)));
    // A body that arrives in time, even in pieces, is fine.
    let mut s = connect(gw.addr);
    s.write_all(head.as_bytes()).expect("head");
    s.write_all(&body.as_bytes()[..10]).expect("piece");
    std::thread::sleep(Duration::from_millis(100));
    s.write_all(&body.as_bytes()[10..]).expect("rest");
    assert_eq!(Reader::new(s).response().expect("200").status, 200);
}
