//! The audit log behind the real gateway: every answered request is recorded once
//! and verifies, in embedded mode and in JetStream, across a SIGKILL of the gateway;
//! and a `BH_CONFIG` revocation lands under load without failing a request, with
//! audit on or off.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use gatekeeper::keys::{issue, Claims, Footer, SecretKey};

use super::{assert_exactly_once, file_messages, need_nats, request_ids, verify_cli, NatsServer};
use crate::harness::{chat_body, chat_request, config_for, connect, Gateway, Mock, Reader};

/// Sends `total` requests over `connections` keep-alive connections, pipelining
/// `depth` at a time; returns the request ids of the 200 answers.
fn drive(addr: std::net::SocketAddr, total: usize, connections: usize, depth: usize, tag: &str) -> Vec<String> {
    let per_conn = total / connections;
    let handles: Vec<_> = (0..connections)
        .map(|c| {
            let tag = tag.to_string();
            std::thread::spawn(move || {
                let mut ok = Vec::with_capacity(per_conn);
                let mut reader = Reader::new(connect(addr));
                let mut sent = 0;
                while sent < per_conn {
                    let n = depth.min(per_conn - sent);
                    let mut batch = Vec::new();
                    for i in 0..n {
                        let id = format!("{tag}-{c}-{}", sent + i);
                        batch.extend(chat_request(&chat_body("m", false), &format!("X-Request-Id: {id}\r\n")));
                    }
                    if reader.stream.write_all(&batch).is_err() {
                        return ok;
                    }
                    for _ in 0..n {
                        match reader.response() {
                            Ok(r) if r.status == 200 => {
                                ok.push(r.header("x-request-id").unwrap_or_default().to_string())
                            }
                            Ok(_) => {}
                            Err(_) => return ok,
                        }
                    }
                    sent += n;
                }
                ok
            })
        })
        .collect();
    handles.into_iter().flat_map(|h| h.join().expect("client thread")).collect()
}

fn audit_top(data_dir: &Path, nats: Option<&str>) -> String {
    let mut top = format!(
        "audit: {{ data_dir: \"{}\", node_name: gw-it, checkpoint_every: 500, checkpoint_interval_ms: 200 }}\n",
        data_dir.display()
    );
    if let Some(url) = nats {
        top.push_str(&format!("nats: {{ url: \"{url}\", ack_timeout_ms: 1000, connect_timeout_ms: 500 }}\n"));
    }
    top
}

fn stop(gw: &mut Gateway) {
    gw.proc.terminate();
    let status = gw.proc.wait_exit(Duration::from_secs(30)).expect("gateway exits after SIGTERM");
    assert!(status.success(), "{status:?}");
}

#[test]
fn ten_thousand_requests_are_audited_once_and_verify_in_files() {
    let mock = Mock::start(Mock::config("primary"));
    let data = tempfile::tempdir().expect("tempdir");
    let mut gw = Gateway::start(&config_for(&[("primary", &mock, "")], &audit_top(data.path(), None)), &["--no-auth"]);
    let acknowledged = drive(gw.addr, 10_000, 16, 25, "files");
    assert_eq!(acknowledged.len(), 10_000);
    // `/metrics` shows the shipping: every entry stored, checkpoints signed, spools empty.
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = crate::harness::request(gw.addr, b"GET /metrics HTTP/1.1\r\nHost: gw\r\n\r\n").text();
        let drained = text.contains("\ngatekeeper_audit_entries_stored_total 10000\n")
            && text.lines().filter(|l| l.starts_with("gatekeeper_audit_spool_bytes{")).all(|l| l.ends_with(" 0"));
        if drained || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(text.contains("\ngatekeeper_audit_entries_stored_total 10000\n"), "{text}");
    assert!(text.contains("gatekeeper_audit_spool_bytes{shard=\"0\"} 0\n"), "{text}");
    assert!(!text.contains("\ngatekeeper_audit_checkpoints_stored_total 0\n"), "checkpoints stored: {text}");
    for zero in ["store_failures", "spool_full", "wal_bytes_skipped", "witness_failures"] {
        assert!(text.contains(&format!("\ngatekeeper_audit_{zero}_total 0\n")), "{zero}: {text}");
    }
    assert!(!text.contains("gatekeeper_budget_gossip"), "no gossip without nats: {text}");
    stop(&mut gw);
    let (ok, text) = verify_cli(&["--dir", &data.path().display().to_string()]);
    assert!(ok, "{text}");
    let stored: Vec<String> = file_messages(data.path()).iter().flat_map(|(_, m)| request_ids(m)).collect();
    assert_exactly_once(&acknowledged, &stored);
    assert_eq!(stored.len(), 10_000, "only the requests sent were recorded");
}

#[test]
fn ten_thousand_requests_are_audited_once_and_verify_in_jetstream() {
    need_nats!();
    let server = NatsServer::start();
    let mock = Mock::start(Mock::config("primary"));
    let data = tempfile::tempdir().expect("tempdir");
    let top = audit_top(data.path(), Some(&server.url()));
    let mut gw = Gateway::start(&config_for(&[("primary", &mock, "")], &top), &["--no-auth"]);
    let acknowledged = drive(gw.addr, 10_000, 16, 25, "js");
    stop(&mut gw);
    let (ok, text) = verify_cli(&["--nats", &server.url()]);
    assert!(ok, "{text}");
    assert!(text.contains("10000") || text.contains("10,000"), "summary names the entries: {text}");
    let stored = super::nats::stored_ids(&server.url());
    assert_exactly_once(&acknowledged, &stored);
}

#[test]
fn gateway_sigkilled_mid_run_loses_nothing_it_acknowledged() {
    let mock = Mock::start(Mock::config("primary"));
    let data = tempfile::tempdir().expect("tempdir");
    let config = config_for(&[("primary", &mock, "")], &audit_top(data.path(), None));
    let gw = Gateway::start(&config, &["--no-auth"]);
    let addr = gw.addr;
    let client = std::thread::spawn(move || drive(addr, 40_000, 8, 10, "kill"));
    std::thread::sleep(Duration::from_millis(700));
    drop(gw); // SIGKILL: no drain, no final checkpoint
    let acknowledged = client.join().expect("client");
    assert!(acknowledged.len() > 100, "the run was under way ({} answered)", acknowledged.len());
    assert!(acknowledged.len() < 40_000, "the kill landed mid-run");
    // A new gateway on the same data dir ships what the dead one spooled, then closes its chain.
    let mut gw = Gateway::start(&config, &["--no-auth"]);
    stop(&mut gw);
    let (ok, text) = verify_cli(&["--dir", &data.path().display().to_string()]);
    assert!(ok, "{text}");
    let stored: Vec<String> = file_messages(data.path()).iter().flat_map(|(_, m)| request_ids(m)).collect();
    assert_exactly_once(&acknowledged, &stored);
}

#[test]
fn config_push_revocation_applies_under_load_without_a_failed_request() {
    need_nats!();
    let server = NatsServer::start();
    let data = tempfile::tempdir().expect("tempdir");
    revocation_under_load(&server, &audit_top(data.path(), Some(&server.url())), Duration::from_secs(10));
}

/// Hot config is the gateway's, not the audit log's: with audit off, a pushed
/// revocation still lands, within 2 s, and the audit data dir is left alone.
#[test]
fn config_push_revocation_applies_with_audit_off() {
    need_nats!();
    let server = NatsServer::start();
    let data = tempfile::tempdir().expect("tempdir");
    let top = format!(
        "audit: {{ enabled: false, data_dir: \"{}\" }}\nnats: {{ url: \"{}\", ack_timeout_ms: 1000, connect_timeout_ms: 500 }}\n",
        data.path().display(),
        server.url()
    );
    revocation_under_load(&server, &top, Duration::from_secs(2));
    let left: Vec<_> = std::fs::read_dir(data.path()).expect("data dir").collect();
    assert!(left.is_empty(), "audit off writes nothing: {left:?}");
}

/// Starts a 2-shard gateway on `top` (which names `server`) with an issuer, keeps 4
/// clients looping requests with one key, pushes a revocation of another key with
/// `gatekeeper config push`, and checks that every shard refuses the revoked key
/// (401 `key_revoked`) within `within` while no request of the other key fails.
fn revocation_under_load(server: &NatsServer, top: &str, within: Duration) {
    let mock = Mock::start(Mock::config("primary"));
    let issuer = SecretKey::generate();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let exp = Some(now + 3600);
    let mint = |jti: &str| {
        let claims = Claims { jti: jti.into(), exp, ..Claims::default() };
        issue(&issuer, &claims, &Footer::for_key(&issuer.public_key())).expect("issue")
    };
    let (steady, doomed) = (mint("steady"), mint("doomed"));
    let mut config = config_for(&[("primary", &mock, "")], top);
    config.push_str(&format!("keys:\n  issuers: [ {{ public_key: \"{}\" }} ]\n", issuer.public_key().to_paserk()));
    let mut gw = Gateway::start(&config, &["--shards", "2"]);
    let addr = gw.addr;

    let load = crate::harness::Load::start(
        addr,
        4,
        chat_request(&chat_body("m", false), &format!("Authorization: Bearer {steady}\r\n")),
    );
    let with = |token: &str| crate::harness::chat(addr, "m", false, &format!("Authorization: Bearer {token}\r\n"));
    assert_eq!(with(&doomed).status, 200);
    let file = gw.dir.path().join("push.yaml");
    std::fs::write(&file, "revocations: [doomed]\n").expect("write push file");
    let out = Command::new(crate::harness::gatekeeper_bin())
        .args(["config", "push"])
        .arg(&file)
        .args(["--nats", &server.url()])
        .output()
        .expect("config push");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let deadline = Instant::now() + within;
    // Both shards must apply it: ask until several answers in a row are 401.
    let mut refused_in_a_row = 0;
    while refused_in_a_row < 6 {
        assert!(Instant::now() < deadline, "the revocation did not take effect within {within:?}");
        let r = with(&doomed);
        if r.status == 401 {
            let body = String::from_utf8_lossy(&r.body);
            assert!(body.contains("key_revoked"), "{body}");
            refused_in_a_row += 1;
        } else {
            refused_in_a_row = 0;
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let (ok, failed) = load.stop();
    assert_eq!(failed, 0, "requests failed while the config changed");
    assert!(ok > 50, "the load ran");
    stop(&mut gw);
}
