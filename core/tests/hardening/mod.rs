//! Hostile clients and faulty providers: each test here failed before its fix.

mod server;

use std::io::Write;
use std::time::Duration;

use crate::harness::hostile::{json_response, Hostile, COMPLETION};
use crate::harness::*;

/// A one-shard gateway without auth in front of `hostile` (as provider `h`, with
/// `extra` added to its block), then `backup` if given.
fn gateway_for(hostile: &Hostile, extra: &str, backup: Option<&Mock>) -> Gateway {
    let mut config = format!(
        "providers:\n  - {{ name: h, kind: openai_compatible, base_url: \"http://{}/v1\", api_key: sk-h{extra} }}\n",
        hostile.addr
    );
    if let Some(b) = backup {
        config.push_str(&provider("backup", b, ""));
    }
    config.push_str("models:\n  - { name: m, provider: h, upstream_model: up-h }\n");
    if backup.is_some() {
        config.push_str("  - { name: m, provider: backup, upstream_model: up-backup }\n");
    }
    config.push_str("failover_chain:\n  - { provider: h, priority: 1 }\n  - { provider: backup, priority: 2 }\n");
    let config = if backup.is_some() { config } else { config.replace("  - { provider: backup, priority: 2 }\n", "") };
    Gateway::start(&config, &["--no-auth", "--shards", "1"])
}

fn metrics(gw: &Gateway) -> String {
    request(gw.addr, b"GET /metrics HTTP/1.1\r\nHost: gw\r\n\r\n").text()
}

/// `Retry-After` values that overflow, last a year, or come as an HTTP date: the
/// shard lives, the provider is skipped for at most `retry_after_max_s`, and clients
/// are never told to wait longer.
#[test]
fn hostile_retry_after_never_kills_a_shard() {
    for value in ["9999999999999999999", "31536000", "Wed, 21 Oct 2099 07:28:00 GMT", "-5", "soon"] {
        let response = json_response(429, &format!("Retry-After: {value}\r\n"), r#"{"error":{"message":"slow down"}}"#);
        let hostile = Hostile::start(move |_, _| (Duration::ZERO, response.clone()));
        let gw = gateway_for(&hostile, ", retry_after_max_s: 1", None);
        let first = chat(gw.addr, "m", false, "");
        assert_eq!(first.status, 502, "Retry-After {value}: {}", first.text());
        let second = chat(gw.addr, "m", false, "");
        let parsed = value.parse::<u64>().is_ok() || value.contains("GMT");
        if parsed {
            // Skipped without a call, and told to wait at most the clamp.
            assert_eq!(second.status, 503, "Retry-After {value}: {}", second.text());
            assert_eq!(second.header("retry-after"), Some("1"), "Retry-After {value}");
            assert_eq!(hostile.count(), 1, "Retry-After {value}: provider skipped");
            std::thread::sleep(Duration::from_millis(1100));
        }
        let third = chat(gw.addr, "m", false, "");
        assert_eq!(third.status, 502, "Retry-After {value}: tried again after the clamp");
        assert_eq!(hostile.count(), if parsed { 2 } else { 3 }, "Retry-After {value}");
        assert_eq!(request(gw.addr, b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n").status, 200, "the shard is alive");
    }
}

/// Only allowlisted client headers reach a provider: never an organisation, a
/// project, another credential, a forwarding chain, or a header the client's
/// `Connection` names.
#[test]
fn client_headers_are_forwarded_by_allowlist() {
    let hostile = Hostile::always(&String::from_utf8_lossy(&json_response(200, "", COMPLETION)));
    let gw = gateway_for(&hostile, ", forward_headers: [openai-beta, user-agent, \"x-trace-*\"]", None);
    let r = chat(
        gw.addr,
        "m",
        false,
        "OpenAI-Organization: org-evil\r\nOpenAI-Project: proj-evil\r\nApi-Key: sk-client\r\n\
         X-Forwarded-For: 10.0.0.1\r\nOpenAI-Beta: assistants=v2\r\nX-Trace-Id: t1\r\nUser-Agent: sdk/1\r\n\
         Connection: keep-alive, User-Agent\r\nCookie: a=b\r\n",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let got = hostile.received().pop().expect("one request");
    for absent in ["openai-organization", "openai-project", "api-key", "x-forwarded-for", "cookie", "user-agent"] {
        assert_eq!(got.header(absent), None, "{absent} must not be forwarded:\n{}", got.head);
    }
    assert_eq!(got.header("openai-beta").as_deref(), Some("assistants=v2"));
    assert_eq!(got.header("x-trace-id").as_deref(), Some("t1"));
    assert_eq!(got.header("authorization").as_deref(), Some("Bearer sk-h"), "the operator's key, only");
    assert_eq!(got.header("accept-encoding").as_deref(), Some("identity"));
}

/// What the client got wrong is the client's: extra headers are dropped, an
/// oversized forwarded header is a 400 before any provider is called, and neither
/// counts against a provider.
#[test]
fn client_mistakes_are_not_provider_failures() {
    let hostile = Hostile::always(&String::from_utf8_lossy(&json_response(200, "", COMPLETION)));
    let backup = Mock::start(Mock::config("backup"));
    let gw = gateway_for(&hostile, "", Some(&backup));
    let many: String = (0..70).map(|i| format!("X-Extra-{i}: {}\r\n", "v".repeat(50))).collect();
    let r = chat(gw.addr, "m", false, &many);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-gatekeeper-provider"), Some("h"));
    assert!(hostile.received().pop().is_some_and(|g| g.header("x-extra-0").is_none()));
    let big = format!("User-Agent: {}\r\n", "u".repeat(9 * 1024));
    let r = chat(gw.addr, "m", false, &big);
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "unforwardable_request");
    assert_eq!(hostile.count(), 1, "the provider was not called");
    assert_eq!(backup.requests(), 0, "nor the next one");
    let m = metrics(&gw);
    assert!(!m.contains("gatekeeper_upstream_failures_total{provider=\"h\"} 1"), "{m}");
    assert!(m.contains("gatekeeper_upstream_failures_total{provider=\"h\"} 0"), "{m}");
}

/// Every stream's usage is read — the gateway asks for it — and a client that did
/// not ask never sees the usage event.
#[test]
fn stream_usage_is_counted_and_stripped_unless_asked() {
    let mock = Mock::start(Mock::config("primary").tokens(5));
    let gw = Gateway::start(&config_for(&[("primary", &mock, "")], ""), &["--no-auth", "--shards", "1"]);
    let r = chat(gw.addr, "m", true, "");
    assert_eq!(r.status, 200, "{}", r.text());
    let events = sse_data(&r.body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{events:?}");
    assert!(!events.iter().any(|e| e.contains("prompt_tokens")), "usage event stripped: {events:?}");
    let m = metrics(&gw);
    assert!(
        m.lines().any(|l| l.starts_with("gatekeeper_tokens_total{provider=\"primary\",direction=\"completion\"}")
            && !l.ends_with(" 0")),
        "tokens counted: {m}"
    );
    let asked = r#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#;
    let r = request(gw.addr, &chat_request(asked, ""));
    assert!(sse_data(&r.body).iter().any(|e| e.contains("prompt_tokens")), "asked for, so kept");
}

/// A missing key is a 401 whatever the body holds: the body is not even parsed.
#[test]
fn a_missing_key_is_401_before_the_body_is_read() {
    let mock = Mock::start(Mock::config("primary"));
    let issuer = gatekeeper::keys::SecretKey::generate();
    let top = format!("keys:\n  issuers: [ {{ public_key: \"{}\" }} ]\n", issuer.public_key().to_paserk());
    let gw = Gateway::start(&config_for(&[("primary", &mock, "")], &top), &["--shards", "1"]);
    let r = request(gw.addr, &chat_request("{not json", ""));
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "missing_api_key");
    let r = request(gw.addr, &chat_request("{not json", "Authorization: bEaReR nope\r\n"));
    assert_eq!(r.status, 401, "a lower/mixed-case scheme is read: {}", r.text());
    assert_ne!(r.json()["error"]["code"], "missing_api_key");
}

/// A streamed request whose client goes away before the provider's head arrives
/// still reached a provider, so it has its record (status 499).
#[test]
fn a_client_gone_before_the_stream_starts_is_recorded() {
    let slow = Hostile::start(|_, _| {
        (Duration::from_millis(600), json_response(200, "", "data: {\"choices\":[]}\n\ndata: [DONE]\n\n"))
    });
    let gw = gateway_for(&slow, "", None);
    let body = chat_body("m", true);
    let mut s = connect(gw.addr);
    s.write_all(&chat_request(&body, "X-Request-Id: gone-early\r\n")).expect("send");
    std::thread::sleep(Duration::from_millis(100));
    drop(s);
    let records = records_of(&gw, "gone-early");
    assert_eq!(records.len(), 1, "exactly one record: {records:?}");
    assert_eq!(records[0]["status"], 499, "{}", records[0]);
}

/// The audit records (embedded file log) of `request_id`, waiting up to 10 s for the
/// bridge to ship at least one.
pub(crate) fn records_of(gw: &Gateway, request_id: &str) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stored = crate::audit::file_messages(&gw.dir.path().join("data"));
        let records: Vec<serde_json::Value> = stored
            .iter()
            .flat_map(|(_, msgs)| msgs.iter())
            .filter_map(|m| serde_json::from_slice::<serde_json::Value>(m).ok())
            .flat_map(|m| m["entries"].as_array().cloned().unwrap_or_default())
            .map(|e| e["record"].clone())
            .filter(|r| r["request_id"] == request_id)
            .collect();
        if !records.is_empty() || std::time::Instant::now() > deadline {
            return records;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The record names the issuer key that signed the caller's key, and its cost is the
/// exact decimal of tokens × price.
#[test]
fn audit_record_has_the_issuer_kid_and_an_exact_cost() {
    let mock = Mock::start(Mock::config("primary"));
    let issuer = gatekeeper::keys::SecretKey::generate();
    let public = issuer.public_key();
    let top = format!("keys:\n  issuers: [ {{ public_key: \"{}\" }} ]\n", public.to_paserk());
    let config = config_for(&[("primary", &mock, "")], &top).replace(
        "upstream_model: up-primary }",
        "upstream_model: up-primary, price_per_1k_input: 0.00015, price_per_1k_output: 0.0006 }",
    );
    let gw = Gateway::start(&config, &["--shards", "1"]);
    let claims = gatekeeper::keys::Claims { jti: "k-cost".into(), ..Default::default() };
    let token = gatekeeper::keys::issue(&issuer, &claims, &gatekeeper::keys::Footer::for_key(&public)).expect("token");
    let r = chat(gw.addr, "m", false, &format!("Authorization: Bearer {token}\r\nX-Request-Id: costed\r\n"));
    assert_eq!(r.status, 200, "{}", r.text());
    let records = records_of(&gw, "costed");
    let record = records.first().expect("a record");
    assert_eq!(record["kid"], public.pid());
    assert_eq!(record["key_id"], "k-cost");
    let (tokens_in, tokens_out) =
        (record["tokens_in"].as_u64().unwrap_or(0), record["tokens_out"].as_u64().unwrap_or(0));
    assert!(tokens_in > 0 && tokens_out > 0, "{record}");
    // In units of 1e-8 USD: 0.00015/1k = 15 per token in, 0.0006/1k = 60 per token out.
    let units = 15 * tokens_in + 60 * tokens_out;
    let want = format!("{}.{:08}", units / 100_000_000, units % 100_000_000);
    let want = want.trim_end_matches('0').trim_end_matches('.');
    assert_eq!(record["cost_usd"], want, "{record}");
}

/// An unauthenticated flood cannot fill the spool: past the per-shard allowance its
/// 401s are counted, not recorded, and they stay 401 (never 503).
#[test]
fn an_unauthenticated_flood_is_sampled_not_spooled() {
    let mock = Mock::start(Mock::config("primary"));
    let issuer = gatekeeper::keys::SecretKey::generate();
    let top = format!(
        "keys:\n  issuers: [ {{ public_key: \"{}\" }} ]\naudit: {{ unauthenticated_records_per_s: 5 }}\n",
        issuer.public_key().to_paserk()
    );
    let gw = Gateway::start(&config_for(&[("primary", &mock, "")], &top), &["--shards", "1"]);
    let started = std::time::Instant::now();
    let mut s = connect(gw.addr);
    let mut reader = Reader::new(s.try_clone().expect("clone"));
    for i in 0..300 {
        s.write_all(&chat_request(&chat_body("m", false), &format!("X-Request-Id: flood-{i}\r\n"))).expect("send");
        let r = reader.response().expect("answer");
        assert_eq!(r.status, 401, "{}", r.text());
    }
    let seconds = started.elapsed().as_secs() + 1;
    let m = metrics(&gw);
    let unrecorded: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("gatekeeper_audit_unauthenticated_unrecorded_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("counter");
    assert!(unrecorded >= 300 - 5 * seconds, "{unrecorded} of 300 left out in {seconds} s");
    // The recorded ones are there (the first is always within the allowance).
    assert_eq!(records_of(&gw, "flood-0").len(), 1);
}

/// The audit data dir is 0700 and what the gateway writes in it 0600; a node key
/// others can read is refused at start, naming the fix.
#[test]
fn audit_files_are_private_and_a_loose_node_key_is_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let mock = Mock::start(Mock::config("primary"));
    let gw = Gateway::start(&config_for(&[("primary", &mock, "")], ""), &["--no-auth", "--shards", "1"]);
    let r = chat(gw.addr, "m", false, "X-Request-Id: private\r\n");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(records_of(&gw, "private").len(), 1);
    let data = gw.dir.path().join("data");
    let mode = |p: &std::path::Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700, "data dir");
    let mut files = Vec::new();
    let mut dirs = vec![data.clone()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                assert_eq!(mode(&p), 0o700, "{}", p.display());
                dirs.push(p);
            } else {
                files.push(p);
            }
        }
    }
    assert!(files.iter().any(|f| f.ends_with("node.key")), "{files:?}");
    assert!(files.iter().any(|f| f.extension().is_some_and(|e| e == "wal")), "{files:?}");
    for f in &files {
        assert_eq!(mode(f), 0o600, "{}", f.display());
    }
    drop(gw);

    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("node.key");
    std::fs::write(&key, gatekeeper::keys::SecretKey::generate().to_paserk()).expect("write key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let config = config_for(&[("primary", &mock, "")], &format!("audit: {{ node_key_file: \"{}\" }}\n", key.display()));
    let err = Gateway::start_failure(&config, &["--no-auth"]);
    assert!(err.contains("chmod 600"), "{err}");
}

/// The embedded log cut back together with the checkpoints covering its tail still
/// verifies on its own; against the witness file it does not.
#[test]
fn a_witness_file_catches_a_truncated_log() {
    let mock = Mock::start(Mock::config("primary"));
    let outside = tempfile::tempdir().expect("tempdir");
    let witness = outside.path().join("witness.jsonl");
    let top = format!("audit: {{ checkpoint_every: 10, witness_file: \"{}\" }}\n", witness.display());
    let mut gw = Gateway::start(&config_for(&[("primary", &mock, "")], &top), &["--no-auth", "--shards", "1"]);
    for i in 0..45 {
        let r = chat(gw.addr, "m", false, &format!("X-Request-Id: w-{i}\r\n"));
        assert_eq!(r.status, 200, "{}", r.text());
    }
    gw.proc.terminate();
    assert!(gw.proc.wait_exit(Duration::from_secs(20)).is_some_and(|s| s.success()), "clean stop");
    let data = gw.dir.path().join("data");
    let w = witness.display().to_string();
    let d = data.display().to_string();
    let (ok, out) = crate::audit::verify_cli(&["--dir", &d, "--witness", &w]);
    assert!(ok, "{out}");
    let witnessed = std::fs::read_to_string(&witness).expect("witness").lines().count();
    assert!(witnessed >= 5, "a checkpoint per 10 entries and a final one: {witnessed}");
    assert!(out.contains(&format!("all {witnessed} checkpoints the witness saw")), "{out}");

    // Cut the chain file back to its first checkpoint: a valid log on its own.
    let files = crate::audit::file_messages(&data);
    let (file, lines) = files.first().expect("a chain file");
    let first_checkpoint = lines
        .iter()
        .position(|l| serde_json::from_slice::<serde_json::Value>(l).is_ok_and(|m| !m["checkpoint"].is_null()))
        .expect("a checkpoint");
    let kept: Vec<u8> = lines[..=first_checkpoint].iter().flat_map(|l| l.iter().copied().chain([b'\n'])).collect();
    std::fs::write(file, kept).expect("truncate");
    let (ok, out) = crate::audit::verify_cli(&["--dir", &d]);
    assert!(ok, "the cut log verifies alone: {out}");
    let (ok, out) = crate::audit::verify_cli(&["--dir", &d, "--witness", &w]);
    assert!(!ok, "{out}");
    assert!(out.contains("truncated"), "{out}");
}
mod upstream;

/// The gateway asks providers for identity encoding; one that compresses anyway has
/// its `Content-Encoding` relayed, so the client is never handed gzip labelled as JSON.
#[test]
fn a_compressed_answer_keeps_its_content_encoding() {
    let gzip: &[u8] = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\xab\xae\x05\x00\x43\xbf\xa6\xa3\x02\x00\x00\x00";
    let mut response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n",
        gzip.len()
    )
    .into_bytes();
    response.extend_from_slice(gzip);
    let hostile = Hostile::start(move |_, _| (Duration::ZERO, response.clone()));
    let gw = gateway_for(&hostile, "", None);
    let r = chat(gw.addr, "m", false, "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(r.body, gzip, "relayed byte for byte");
    assert_eq!(hostile.received()[0].header("accept-encoding").as_deref(), Some("identity"));
}

/// `HEAD` on the small endpoints is answered as `GET` without a body, and a request
/// pipelined after it is read correctly.
#[test]
fn head_is_get_without_a_body() {
    let mock = Mock::start(Mock::config("primary"));
    let gw = Gateway::start(&config_for(&[("primary", &mock, "")], ""), &["--no-auth", "--shards", "1"]);
    let mut s = connect(gw.addr);
    s.write_all(b"HEAD /healthz HTTP/1.1\r\nHost: gw\r\n\r\nGET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n").expect("send");
    let mut all = Vec::new();
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 4096];
    while let Ok(n) = std::io::Read::read(&mut s, &mut buf) {
        if n == 0 {
            break;
        }
        all.extend_from_slice(&buf[..n]);
        if String::from_utf8_lossy(&all).matches("HTTP/1.1 200").count() == 2 && all.ends_with(b"}") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&all);
    assert_eq!(text.matches("HTTP/1.1 200").count(), 2, "{text}");
    assert_eq!(text.matches("{\"status\":\"ok\"}").count(), 1, "one body, for the GET: {text}");
}

/// A stream whose audit record cannot be written (the spool is full: NATS is away)
/// ends with an `audit_unavailable` error event, never with the provider's `[DONE]`.
#[test]
fn a_stream_whose_record_fails_ends_with_an_error_event() {
    let mock = Mock::start(Mock::config("primary"));
    let dead = crate::audit::free_port();
    let top = format!(
        "nats: {{ url: \"nats://127.0.0.1:{dead}\", connect_timeout_ms: 200 }}\naudit: {{ spool_bytes_max: 1048576 }}\n"
    );
    let gw = Gateway::start(&config_for(&[("primary", &mock, "")], &top), &["--no-auth", "--shards", "1"]);
    // Fill the spool: records wait for a store that never answers.
    let mut s = connect(gw.addr);
    let mut reader = Reader::new(s.try_clone().expect("clone"));
    let raw = chat_request(&chat_body("m", false), &format!("X-Request-Id: {}\r\n", "f".repeat(100)));
    let mut full = false;
    for _ in 0..20_000 {
        s.write_all(&raw).expect("send");
        let r = reader.response().expect("answer");
        if r.status == 503 {
            assert_eq!(r.json()["error"]["code"], "audit_unavailable");
            full = true;
            break;
        }
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert!(full, "the spool never filled");
    let r = chat(gw.addr, "m", true, "");
    let events = sse_data(&r.body);
    assert!(!events.iter().any(|e| e == "[DONE]"), "{events:?}");
    assert!(events.last().is_some_and(|e| e.contains("audit_unavailable")), "{events:?}");
}
