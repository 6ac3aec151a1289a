//! The client-facing server against hostile clients, through the running gateway on raw
//! sockets: memory that follows bytes rather than promises, clients that stop reading,
//! HEAD, and protocol edges. Each test failed before its fix.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::*;

/// A one-shard gateway without auth in front of `mock`, with `top` (limits, TLS) and
/// `extra` added to the provider's block.
fn gateway(mock: &Mock, extra: &str, top: &str) -> Gateway {
    Gateway::start(&config_for(&[("primary", mock, extra)], top), &["--no-auth", "--shards", "1"])
}

/// The gateway's resident memory, KiB.
fn rss_kib(gw: &Gateway) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", gw.proc.pid())).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// A `/metrics` series summed over its label sets.
fn metric(gw: &Gateway, name: &str) -> u64 {
    let text = request(gw.addr, b"GET /metrics HTTP/1.1\r\nHost: gw\r\n\r\n").text();
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Polls `metric` until `done` holds for it, at most `limit`; returns the last value.
fn wait_metric(gw: &Gateway, name: &str, limit: Duration, done: impl Fn(u64) -> bool) -> u64 {
    let deadline = Instant::now() + limit;
    loop {
        let v = metric(gw, name);
        if done(v) || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The head of a chat request announcing a body of `length` bytes.
fn announce(length: usize) -> String {
    format!("POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n")
}

/// 1,000 clients each announce a 4 MiB body and send none. Before, the gateway reserved
/// each declared length on the head's arrival: RSS climbed by gigabytes' worth of promises.
/// Now nothing is allocated before bytes come, the shard admits 64 MiB of announced bodies
/// and sheds the rest with 503, and closing gives the budget back.
#[test]
fn announced_bodies_that_never_come_take_no_memory() {
    const CLIENTS: usize = 1000;
    const BODY: usize = 4 * 1024 * 1024;
    let mock = Mock::start(Mock::config("primary"));
    let gw = gateway(&mock, "", "");
    assert_eq!(chat(gw.addr, "m", false, "").status, 200);
    let before = rss_kib(&gw);
    let mut clients: Vec<TcpStream> = (0..CLIENTS).map(|_| connect(gw.addr)).collect();
    for c in clients.iter_mut() {
        c.write_all(announce(BODY).as_bytes()).expect("head");
    }
    let admitted = (64 * 1024 * 1024) / BODY;
    let shed = wait_metric(&gw, "gatekeeper_protocol_errors_total", Duration::from_secs(20), |v| {
        v >= (CLIENTS - admitted) as u64
    });
    let during = rss_kib(&gw);
    assert!(during < before + 96 * 1024, "{CLIENTS} announced bodies took RSS from {before} KiB to {during} KiB");
    assert_eq!(shed, (CLIENTS - admitted) as u64, "shed past the budget");
    assert_eq!(metric(&gw, "gatekeeper_body_bytes_in_flight"), (admitted * BODY) as u64, "admitted up to it");
    drop(clients);
    let left = wait_metric(&gw, "gatekeeper_body_bytes_in_flight", Duration::from_secs(10), |v| v == 0);
    assert_eq!(left, 0, "closing gives the budget back");
    assert_eq!(chat(gw.addr, "m", false, "").status, 200, "and bodies are taken again");
}

/// The body budget at its edge: bodies that fill it exactly are taken, one byte more is a
/// 503 with `Retry-After: 1` and code `overloaded`, and an answered body makes room again.
#[test]
fn the_body_budget_answers_503_at_its_edge() {
    let mock = Mock::start(Mock::config("primary"));
    let limits = "limits: { body_bytes_max: 6000, body_bytes_in_flight_max: 10000 }\n";
    let gw = gateway(&mock, "", limits);
    let in_flight =
        |want: u64| wait_metric(&gw, "gatekeeper_body_bytes_in_flight", Duration::from_secs(5), |v| v == want);
    let mut a = connect(gw.addr);
    a.write_all(announce(6000).as_bytes()).expect("head a");
    assert_eq!(in_flight(6000), 6000);
    let mut b = connect(gw.addr);
    b.write_all(announce(4000).as_bytes()).expect("head b");
    assert_eq!(in_flight(10000), 10000, "fills the budget exactly");
    let over = request(gw.addr, announce(1).as_bytes());
    assert_eq!(over.status, 503, "{}", over.text());
    assert_eq!(over.header("retry-after"), Some("1"));
    assert_eq!(over.json()["error"]["code"], "overloaded");
    a.write_all(&vec![b' '; 6000]).expect("body a");
    let answered = Reader::new(a).response().expect("a is answered");
    assert_eq!(answered.status, 400, "blank JSON, but read and answered: {}", answered.text());
    assert_eq!(in_flight(4000), 4000, "a's body given back once answered");
    let body = chat_body("m", false);
    assert_eq!(request(gw.addr, &chat_request(&body, "")).status, 200, "room again");
    drop(b);
    assert_eq!(in_flight(0), 0);
}

/// 2,000 keep-alive connections idle after one request each. Before, each held an 8 KiB
/// read buffer, an 8 KiB write buffer and the space of the application's future (~24 KiB
/// in all); now an idle connection holds no buffer. The bound is per connection, generous
/// for a debug build; `bench/rss.sh` measures 10,000 on a release build.
#[test]
fn idle_connections_hold_no_buffers() {
    const CONNECTIONS: usize = 2000;
    let mock = Mock::start(Mock::config("primary"));
    let gw = gateway(&mock, "", "");
    assert_eq!(chat(gw.addr, "m", false, "").status, 200);
    let before = rss_kib(&gw);
    // One at a time, so what is measured is what stays once a connection idles, not the
    // transient buffers of 2,000 requests answered at once.
    let mut idle: Vec<Reader> = (0..CONNECTIONS)
        .map(|i| {
            let mut r = Reader::new(connect(gw.addr));
            r.stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n").expect("write");
            assert_eq!(r.response().unwrap_or_else(|e| panic!("connection {i}: {e}")).status, 200);
            r
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let after = rss_kib(&gw);
    let per_connection = after.saturating_sub(before) * 1024 / CONNECTIONS as u64;
    eprintln!("{per_connection} bytes per idle connection (RSS {before} KiB -> {after} KiB)");
    assert!(
        per_connection <= 6 * 1024,
        "{per_connection} bytes per idle connection (RSS {before} KiB -> {after} KiB for {CONNECTIONS})"
    );
    assert_eq!(metric(&gw, "gatekeeper_connections_open"), CONNECTIONS as u64 + 1, "all still open");
    for r in idle.iter_mut().step_by(100) {
        r.stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n").expect("write");
        assert_eq!(r.response().expect("an idle connection still answers").status, 200);
    }
}

/// A streaming client that never reads, in front of a provider allowed one connection.
/// Before, the relay waited on the client's full socket forever, pinning the provider's only
/// connection, and everyone else got errors. Now the write deadline cuts the client, the
/// stream ends as client gone (audited 499), and the upstream connection is released.
#[test]
fn a_stalled_streaming_client_releases_its_upstream_connection() {
    let mock = Mock::start(Mock::config("primary").tokens(100_000));
    let gw = gateway(&mock, ", connections_max: 1", "limits: { write_timeout_ms: 500 }\n");
    let mut stalled = connect(gw.addr);
    let body = chat_body("m", true);
    stalled.write_all(&chat_request(&body, "X-Request-Id: stalled\r\n")).expect("send");
    // The client never reads: once both socket buffers are full, the deadline runs.
    let cut = wait_metric(&gw, "gatekeeper_write_timeouts_total", Duration::from_secs(15), |v| v >= 1);
    assert_eq!(cut, 1, "the stalled client was cut");
    let other = chat(gw.addr, "m", false, "");
    assert_eq!(other.status, 200, "the provider's one connection was released: {}", other.text());
    assert_eq!(audited_status(&gw, "stalled"), 499, "the stalled stream is recorded as client gone");
    drop(stalled);
}

/// The status of the one audit record with `request_id`, waiting for it to be written.
fn audited_status(gw: &Gateway, request_id: &str) -> u64 {
    let records = super::records_of(gw, request_id);
    assert_eq!(records.len(), 1, "one record for {request_id}: {records:?}");
    records[0]["status"].as_u64().unwrap_or_default()
}

/// A client that pipelines requests and never reads their answers. Before, the gateway
/// waited on its full socket forever, one connection held per such client; now the write
/// deadline closes it.
#[test]
fn a_pipelining_client_that_never_reads_is_cut() {
    let mock = Mock::start(Mock::config("primary"));
    let gw = gateway(&mock, "", "limits: { write_timeout_ms: 500 }\n");
    let stalled = connect(gw.addr);
    let mut writer = stalled.try_clone().expect("clone");
    let pusher = std::thread::spawn(move || {
        let _ = writer.set_write_timeout(Some(Duration::from_secs(20)));
        let one = b"GET /metrics HTTP/1.1\r\nHost: gw\r\n\r\n";
        // Ends when the gateway cuts the connection (or after far more than fills it).
        for _ in 0..20_000 {
            if writer.write_all(one).is_err() {
                return;
            }
        }
    });
    let timeouts = wait_metric(&gw, "gatekeeper_write_timeouts_total", Duration::from_secs(15), |v| v >= 1);
    assert_eq!(timeouts, 1, "the non-reader was cut");
    let open = wait_metric(&gw, "gatekeeper_connections_open", Duration::from_secs(5), |v| v == 1);
    assert_eq!(open, 1, "only the metrics connection is left");
    drop(stalled);
    let _ = pusher.join();
}

/// Reads a response head byte by byte, leaving what follows it on the socket.
fn read_head_only(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).expect("read head"), 1, "closed mid-head: {}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// HEAD with a GET pipelined behind it. Before, the answer to HEAD carried its body, which
/// the client read as the start of the GET's answer.
#[test]
fn head_answers_carry_no_body_and_keep_the_connection_in_step() {
    let mock = Mock::start(Mock::config("primary"));
    let gw = gateway(&mock, "", "");
    let mut s = connect(gw.addr);
    s.write_all(b"HEAD /healthz HTTP/1.1\r\nHost: gw\r\n\r\nGET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n").expect("write");
    let head = read_head_only(&mut s);
    assert!(head.starts_with("HTTP/1.1 "), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-length: "), "the length GET would get is kept: {head}");
    let get = Reader::new(s).response().expect("the GET's answer");
    assert_eq!(get.status, 200, "{}", get.text());
    assert_eq!(get.json()["status"], "ok");
}

/// One request on a fresh connection; the answer, and whether the gateway then closed.
fn once(gw: &Gateway, raw: &[u8]) -> (Resp, bool) {
    let mut s = connect(gw.addr);
    s.write_all(raw).expect("write");
    let mut reader = Reader::new(s);
    let r = reader.response().expect("an answer");
    let closed = reader.closed_within(Duration::from_secs(2));
    (r, closed)
}

/// RFC 9112 §3.2: an HTTP/1.1 request needs exactly one Host; two are never valid.
#[test]
fn a_request_without_exactly_one_host_is_400() {
    let mock = Mock::start(Mock::config("primary"));
    let gw = gateway(&mock, "", "");
    for raw in [&b"GET /healthz HTTP/1.1\r\n\r\n"[..], b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"] {
        let (r, closed) = once(&gw, raw);
        assert_eq!(r.status, 400, "{:?}: {}", String::from_utf8_lossy(raw), r.text());
        assert_eq!(r.json()["error"]["code"], "malformed_request");
        assert!(closed, "closed after {:?}", String::from_utf8_lossy(raw));
    }
    assert_eq!(once(&gw, b"GET /healthz HTTP/1.0\r\n\r\n").0.status, 200, "HTTP/1.0 needs none");
    assert_eq!(once(&gw, b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n").0.status, 200);
}

/// A bare CR inside a chunk extension, which a peer ending lines at CR would split there.
#[test]
fn a_bare_cr_in_a_chunk_extension_is_400() {
    let mock = Mock::start(Mock::config("primary"));
    let gw = gateway(&mock, "", "");
    let body = chat_body("m", false);
    let chunked = |ext: &str| {
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n{:x}{ext}\r\n{body}\r\n0\r\n\r\n",
            body.len()
        )
    };
    let (r, closed) = once(&gw, chunked(";a=b\rX").as_bytes());
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(closed);
    assert_eq!(once(&gw, chunked(";a=b").as_bytes()).0.status, 200, "a clean extension is fine");
}

/// RFC 9110 §10.1.1: an expectation other than 100-continue is a 417, not ignored.
#[test]
fn an_unknown_expectation_is_417() {
    let mock = Mock::start(Mock::config("primary"));
    let gw = gateway(&mock, "", "");
    let body = chat_body("m", false);
    let (r, closed) = once(&gw, &chat_request(&body, "Expect: 200-ok\r\n"));
    assert_eq!(r.status, 417, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "expectation_failed");
    assert!(closed);
    assert_eq!(once(&gw, &chat_request(&body, "Expect: 100-continue\r\n")).0.status, 200);
}

/// A TLS listener at its connection cap. Before, it wrote a plaintext 503 into the client's
/// handshake, which a TLS client reads as a corrupt record. Now it closes the connection
/// before any handshake work, and a client sees a plain refusal to retry.
#[test]
fn a_tls_listener_at_its_cap_closes_without_writing_plaintext() {
    let mock = Mock::start(Mock::config("primary"));
    let dir = tempfile::tempdir().expect("tempdir");
    let (tls, certified) = self_signed_tls(dir.path());
    let top = format!("{tls}limits: {{ connections_per_shard_max: 1 }}\n");
    let gw = gateway(&mock, "", &top);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).expect("root");
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let client = Arc::new(client);
    let tls_to = |gw: &Gateway| {
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        rustls::StreamOwned::new(rustls::ClientConnection::new(client.clone(), name).expect("client"), connect(gw.addr))
    };
    let mut held = tls_to(&gw);
    held.write_all(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n").expect("the one allowed connection");
    let mut first = [0u8; 12];
    held.read_exact(&mut first).expect("its answer");
    assert_eq!(&first, b"HTTP/1.1 200");
    // A raw ClientHello-shaped start: whatever comes back must not be an HTTP answer.
    let mut raw = connect(gw.addr);
    raw.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x00]).expect("write");
    let mut got = Vec::new();
    let _ = raw.read_to_end(&mut got);
    assert!(got.is_empty(), "wrote into a handshake: {:?}", String::from_utf8_lossy(&got));
    let mut refused = tls_to(&gw);
    let err = refused.write_all(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n").and_then(|_| refused.flush());
    let mut sink = Vec::new();
    let read = refused.read_to_end(&mut sink);
    assert!(err.is_err() || read.is_err() || sink.is_empty(), "no answer over the cap");
    if let Err(e) = read {
        assert!(!e.to_string().to_lowercase().contains("corrupt"), "a refusal, not garbage: {e}");
    }
}
