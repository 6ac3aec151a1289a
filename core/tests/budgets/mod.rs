//! Token budgets through the running gateway (one node, two shards): reservations,
//! settlement to usage, release on failure, 429s with OpenAI's headers, tenants, rpm.

use std::io::Write;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gatekeeper::keys::{issue, Budget, Claims, Footer, SecretKey};

use crate::harness::*;

/// The chat body every test sends: "Say hello to the gateway" (24 bytes) with
/// `max_tokens: 16`. The gateway reserves 24/4 + 4 (one message) + 16 = 26 tokens; the
/// mock answers 16 tokens and counts the prompt as 24/4 = 6: 22 tokens used.
const RESERVED: u64 = 26;
const USED: u64 = 22;

fn body(stream: bool) -> String {
    format!(
        r#"{{"model":"m","stream":{stream},"max_tokens":16,"messages":[{{"role":"user","content":"Say hello to the gateway"}}]}}"#
    )
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

struct Setup {
    mock: Mock,
    gw: Gateway,
    issuer: SecretKey,
    /// The admin listener (`/metrics`, `/v1/budgets/`).
    admin: SocketAddr,
}

/// A two-shard gateway with an admin listener, `extra` config appended.
fn setup(extra: &str) -> Setup {
    let mock = Mock::start(Mock::config("primary"));
    let issuer = SecretKey::generate();
    let mut config = config_for(&[("primary", &mock, "")], "shards: 2\nadmin_listen: 127.0.0.1:0\n");
    config
        .push_str(&format!("keys:\n  issuers: [ {{ public_key: \"{}\" }} ]\n{extra}", issuer.public_key().to_paserk()));
    let gw = Gateway::start(&config, &[]);
    let admin = gw.proc.next_listening(Duration::from_secs(10)).expect("the admin listener's address");
    Setup { mock, gw, issuer, admin }
}

impl Setup {
    fn key(&self, jti: &str, budget: Budget, rpm: Option<u64>, tenant: Option<&str>) -> String {
        let claims = Claims {
            jti: jti.into(),
            exp: Some(now() + 3600),
            budget,
            rpm,
            tenant: tenant.map(str::to_string),
            ..Claims::default()
        };
        issue(&self.issuer, &claims, &Footer::for_key(&self.issuer.public_key())).expect("issue")
    }

    fn send(&self, key: &str, stream: bool, headers: &str) -> Resp {
        request(self.gw.addr, &chat_request(&body(stream), &format!("Authorization: Bearer {key}\r\n{headers}")))
    }
}

fn per_minute(n: u64) -> Budget {
    Budget { tokens_per_minute: Some(n), ..Budget::default() }
}

fn code(r: &Resp) -> String {
    r.json()["error"]["code"].as_str().unwrap_or_default().to_string()
}

fn usage_total(r: &Resp) -> u64 {
    let u = &r.json()["usage"];
    u["prompt_tokens"].as_u64().unwrap_or(0) + u["completion_tokens"].as_u64().unwrap_or(0)
}

/// Waits for the next minute when fewer than `needed` seconds are left of this one, so a
/// test's spend falls in one per-minute window.
fn within_one_minute(needed: i64) {
    let left = 60 - now().rem_euclid(60);
    if left < needed {
        std::thread::sleep(Duration::from_millis(left as u64 * 1000 + 200));
    }
}

fn metric(addr: SocketAddr, name: &str) -> u64 {
    let r = request(addr, b"GET /metrics HTTP/1.1\r\nHost: gw\r\n\r\n");
    r.text().lines().filter(|l| l.starts_with(name)).filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok()).sum()
}

#[test]
fn concurrent_clients_on_two_shards_stay_within_the_limit_then_get_429() {
    let s = setup("");
    let key = s.key("busy", per_minute(10_000), None, None);
    within_one_minute(40);
    let served = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (served, addr) = (served.clone(), s.gw.addr);
            let raw = chat_request(&body(false), &format!("Authorization: Bearer {key}\r\n"));
            std::thread::spawn(move || {
                let mut reader = Reader::new(connect(addr));
                loop {
                    reader.stream.write_all(&raw).expect("write");
                    let r = reader.response().expect("response");
                    match r.status {
                        200 => served.fetch_add(usage_total(&r), Ordering::Relaxed),
                        429 => return r,
                        s => panic!("status {s}: {}", r.text()),
                    };
                }
            })
        })
        .collect();
    let refusals: Vec<Resp> = clients.into_iter().map(|c| c.join().expect("client")).collect();
    let served = served.load(Ordering::Relaxed);
    // Each shard checks and reserves in one step: at most one admission on the other
    // shard can pass the same check unseen.
    let bound = 10_000 + RESERVED;
    println!("tokens served {served}, limit 10000, stated bound {bound}");
    assert!(served <= bound, "served {served} > {bound}");
    assert!(served > 10_000 - RESERVED - USED, "the budget was not used up: {served}");
    let r = &refusals[0];
    assert_eq!((code(r), r.json()["error"]["type"].as_str()), ("rate_limit_exceeded".into(), Some("tokens")));
    let retry: u64 = r.header("retry-after").expect("Retry-After").parse().expect("seconds");
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(r.header("x-ratelimit-limit-tokens"), Some("10000"));
    assert!(r.header("x-ratelimit-remaining-tokens").is_some());
    assert!(r.header("x-ratelimit-reset-tokens").is_some_and(|v| v.ends_with('s')));
    assert_eq!(metric(s.admin, "gatekeeper_budget_reserved_tokens"), 0, "nothing left reserved");
}

#[test]
fn answers_carry_openai_rate_limit_headers() {
    let s = setup("");
    let key = s.key("headers", per_minute(1000), Some(10), None);
    within_one_minute(5);
    let r = s.send(&key, false, "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-ratelimit-limit-tokens"), Some("1000"));
    assert_eq!(r.header("x-ratelimit-remaining-tokens"), Some(&*(1000 - RESERVED).to_string()));
    assert_eq!(r.header("x-ratelimit-limit-requests"), Some("10"));
    assert_eq!(r.header("x-ratelimit-remaining-requests"), Some("9"));
    let reset = r.header("x-ratelimit-reset-requests").expect("reset");
    assert!(reset.ends_with('s') && !reset.contains('h'), "{reset}");
    let streamed = s.send(&key, true, "");
    assert_eq!(streamed.status, 200);
    assert_eq!(streamed.header("x-ratelimit-remaining-requests"), Some("8"), "streams carry them too");
    let plain = s.send(&s.key("plain", Budget::default(), None, None), false, "");
    assert!(plain.header("x-ratelimit-limit-tokens").is_none(), "no budget, no headers");
}

#[test]
fn requests_per_minute_refuse_the_one_past_the_limit() {
    let s = setup("");
    let key = s.key("rpm", Budget::default(), Some(3), None);
    within_one_minute(5);
    for i in 0..3 {
        assert_eq!(s.send(&key, false, "").status, 200, "request {i} is within rpm");
    }
    let r = s.send(&key, false, "");
    assert_eq!((r.status, code(&r)), (429, "rate_limit_exceeded".into()));
    assert_eq!(r.json()["error"]["type"], "requests");
    assert_eq!(r.header("x-ratelimit-limit-requests"), Some("3"));
    assert_eq!(r.header("x-ratelimit-remaining-requests"), Some("0"));
    assert!(r.header("retry-after").is_some());
}

#[test]
fn a_tenant_limit_tighter_than_the_keys_wins() {
    let s = setup("budgets: { tenants: { acme: { tokens_per_day: 50 } } }\n");
    let a = s.key("acme-1", Budget { tokens_per_day: Some(100_000), ..Budget::default() }, None, Some("acme"));
    let b = s.key("acme-2", Budget::default(), None, Some("acme"));
    // 26 reserved of 50; then 22 spent + 26 = 48 ≤ 50; then 44 + 26 = 70 > 50.
    assert_eq!(s.send(&a, false, "").status, 200);
    assert_eq!(s.send(&b, false, "").status, 200, "the tenant's other key draws on the same 50");
    let r = s.send(&a, false, "");
    assert_eq!((r.status, code(&r)), (429, "insufficient_quota".into()));
    assert_eq!(r.json()["error"]["type"], "insufficient_quota");
    assert!(r.json()["error"]["message"].as_str().is_some_and(|m| m.contains("tenant")), "{}", r.text());
    assert_eq!(r.header("x-ratelimit-limit-tokens"), Some("50"));
}

#[test]
fn a_stream_settles_to_its_usage() {
    let s = setup("");
    let key = s.key("stream", per_minute(1000), None, None);
    within_one_minute(5);
    let r = s.send(&key, true, "");
    assert_eq!(r.status, 200);
    assert!(r.text().contains("[DONE]"));
    let admin = s.admin;
    // The client sees `[DONE]` before the shard settles (the stream's end is relayed
    // first), so wait for the settlement rather than read the metric at once.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while metric(admin, "gatekeeper_budget_settled_tokens_total") != USED && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(metric(admin, "gatekeeper_budget_settled_tokens_total"), USED);
    assert_eq!(metric(admin, "gatekeeper_budget_reserved_tokens"), 0);
    let next = s.send(&key, false, "");
    assert_eq!(next.header("x-ratelimit-remaining-tokens"), Some(&*(1000 - USED - RESERVED).to_string()));
}

#[test]
fn a_failed_upstream_releases_its_reservation_so_the_next_request_fits() {
    let s = setup("");
    // Exactly one reservation fits.
    let key = s.key("exact", per_minute(RESERVED), None, None);
    within_one_minute(5);
    let failed = s.send(&key, false, "X-Mock-Fault: 500\r\n");
    assert_eq!(failed.status, 502, "{}", failed.text());
    let r = s.send(&key, false, "");
    assert_eq!(r.status, 200, "the failure released its 26: {}", r.text());
    assert_eq!(r.header("x-ratelimit-remaining-tokens"), Some("0"), "exactly at the limit");
    let r = s.send(&key, false, "");
    assert_eq!((r.status, code(&r)), (429, "rate_limit_exceeded".into()), "22 spent + 26 > 26");
    assert_eq!(s.mock.requests(), 2, "the refused request never reached the provider");
}

#[test]
fn official_openai_sdk_raises_rate_limit_error() {
    let s = setup("");
    let key = s.key("sdk", Budget::default(), Some(1), None);
    within_one_minute(10);
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/openai_rate_limit.py");
    let out = Command::new(python_with_openai())
        .arg(script)
        .arg(format!("http://{}/v1", s.gw.addr))
        .arg(&key)
        .output()
        .expect("run python");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("openai-sdk-rate-limit: ok"), "{text}");
}

#[test]
fn budget_show_prints_each_window_and_each_shards_share() {
    let s = setup("budgets: { tenants: { acme: { tokens_per_month: 100000 } } }\n");
    let key = s.key("shown/1", per_minute(1000), None, Some("acme"));
    within_one_minute(10);
    for _ in 0..3 {
        assert_eq!(s.send(&key, false, "").status, 200);
    }
    let run = |args: &[&str]| {
        let out = Command::new(gatekeeper_bin())
            .args(["budget", "show"])
            .args(args)
            .args(["--addr", &s.admin.to_string()])
            .output()
            .expect("run gatekeeper budget show");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = run(&["shown/1"]);
    println!("{text}");
    let minute = text.lines().find(|l| l.starts_with("minute")).expect("a minute line");
    let cols: Vec<&str> = minute.split_whitespace().collect();
    assert_eq!(&cols[1..5], ["1000", &*(3 * USED).to_string(), "0", "3"], "{text}");
    assert!(text.contains("shard 0") && text.contains("shard 1") && text.contains("remote"), "{text}");
    let json: serde_json::Value = serde_json::from_str(&run(&["shown/1", "--json"])).expect("json");
    let windows = json["windows"].as_array().expect("windows");
    assert_eq!(windows.len(), 3);
    let shares: u64 = windows[0]["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .map(|c| c["spent_tokens"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(shares, 3 * USED, "the columns add up to the window");
    let tenant: serde_json::Value = serde_json::from_str(&run(&["acme", "--tenant", "--json"])).expect("json");
    assert_eq!(tenant["windows"][2]["limit_tokens"], 100_000);
    assert_eq!(tenant["windows"][2]["spent_tokens"], 3 * USED);
    let unknown = run(&["never-seen"]);
    assert!(unknown.contains("no budgeted request since the gateway started"), "{unknown}");
}

#[test]
fn spend_survives_a_restart_clean_or_killed() {
    let data = tempfile::tempdir().expect("data dir");
    let extra =
        format!("audit: {{ data_dir: \"{}\" }}\nbudgets: {{ snapshot_interval_ms: 50 }}\n", data.path().display());
    let mut s = setup(&extra);
    let key = s.key("kept", Budget { tokens_per_day: Some(100), ..Budget::default() }, None, None);
    assert_eq!(s.send(&key, false, "").status, 200);
    assert_eq!(s.send(&key, false, "").status, 200);
    s.gw.proc.terminate();
    assert!(s.gw.proc.wait_exit(Duration::from_secs(20)).is_some_and(|e| e.success()), "clean stop");
    // The audit records carry each admission: 26 reserved, 22 settled.
    let records: Vec<serde_json::Value> = crate::audit::file_messages(data.path())
        .into_iter()
        .flat_map(|(_, lines)| lines)
        .filter_map(|l| serde_json::from_slice::<serde_json::Value>(&l).ok())
        .flat_map(|m| m["entries"].as_array().cloned().unwrap_or_default())
        .map(|e| e["record"].clone())
        .collect();
    assert_eq!(records.len(), 2, "{records:?}");
    for r in &records {
        assert_eq!(
            (r["budget_reserved_tokens"].as_u64(), r["budget_settled_tokens"].as_u64()),
            (Some(RESERVED), Some(USED))
        );
    }
    // Same data dir, same issuer: the day's 44 tokens are still spent.
    let config = std::fs::read_to_string(s.gw.dir.path().join("gatekeeper.yaml")).expect("config");
    s.gw = Gateway::start(&config, &[]);
    let r = s.send(&key, false, "");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-ratelimit-remaining-tokens"), Some(&*(100 - 2 * USED - RESERVED).to_string()));
    // Killed without a drain: the periodic snapshot (every 50 ms) already holds the 66.
    std::thread::sleep(Duration::from_millis(500));
    s.gw.proc.signal("KILL");
    let _ = s.gw.proc.wait_exit(Duration::from_secs(10));
    s.gw = Gateway::start(&config, &[]);
    let r = s.send(&key, false, "");
    assert_eq!(r.status, 200, "66 + 26 = 92 fits in 100");
    let r = s.send(&key, false, "");
    assert_eq!((r.status, code(&r)), (429, "insufficient_quota".into()), "88 + 26 > 100: nothing was re-granted");
}
