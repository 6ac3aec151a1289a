//! Anonymous credits through the running gateway: issuance, spends on chat completions
//! (whole and streamed answers), change, and every refusal's status and code.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gatekeeper::keys::{issue, Claims, Footer, SecretKey};
use gatekeeper_zk::{Change, Domain, IssuanceResponse, Issuer, IssuerSeed, PublicKey, Wallet};

use crate::harness::*;

const SEED_HEX: &str = "0101010101010101010101010101010101010101010101010101010101010101";

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn token(issuer: &SecretKey, jti: &str, zk: bool, zk_credits: Option<u64>) -> String {
    let claims = Claims { jti: jti.into(), exp: Some(now() + 3600), zk, zk_credits, ..Claims::default() };
    issue(issuer, &claims, &Footer::for_key(&issuer.public_key())).expect("issue")
}

struct Setup {
    _mock: Mock,
    gw: Gateway,
    issuer: SecretKey,
}

fn config(mock: &Mock, issuer: &SecretKey, data_dir: &Path) -> String {
    config_credits(mock, issuer, data_dir, "")
}

/// [`config`] with extra `credits` keys (`", key: value"`).
fn config_credits(mock: &Mock, issuer: &SecretKey, data_dir: &Path, credits_extra: &str) -> String {
    let mut c = config_for(&[("primary", mock, "")], "");
    c.push_str(&format!(
        "keys:\n  issuers: [ {{ public_key: \"{}\" }} ]\naudit: {{ data_dir: \"{}\" }}\ncredits: {{ mode: strict, epoch: day, deployment: it-test, issuer_seed: \"{SEED_HEX}\"{credits_extra} }}\n",
        issuer.public_key().to_paserk(),
        data_dir.display()
    ));
    c
}

fn setup(data_dir: &Path) -> Setup {
    setup_with(data_dir, "")
}

/// [`setup`] with extra top-level YAML (e.g. `nats:`), and the credits section's extras.
fn setup_with(data_dir: &Path, extra: &str) -> Setup {
    let mock = Mock::start(Mock::config("primary"));
    let issuer = SecretKey::generate();
    let gw = Gateway::start(&format!("{}{extra}", config(&mock, &issuer, data_dir)), &[]);
    Setup { _mock: mock, gw, issuer }
}

fn get(addr: std::net::SocketAddr, path: &str) -> Resp {
    request(addr, format!("GET {path} HTTP/1.1\r\nHost: gw\r\n\r\n").as_bytes())
}

fn post_issue(addr: std::net::SocketAddr, key: &str, body: &str) -> Resp {
    let raw = format!(
        "POST /v1/credits/issue HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    request(addr, raw.as_bytes())
}

fn code(r: &Resp) -> String {
    r.json()["error"]["code"].as_str().unwrap_or_default().to_string()
}

/// A wallet funded through the gateway's own endpoints.
fn funded_wallet(s: &Setup, jti: &str) -> (Wallet, String) {
    funded_wallet_at(s.gw.addr, &s.issuer, jti)
}

fn funded_wallet_at(addr: std::net::SocketAddr, issuer: &SecretKey, jti: &str) -> (Wallet, String) {
    let params = get(addr, "/v1/credits/params");
    assert_eq!(params.status, 200, "{}", params.text());
    let p = params.json();
    assert_eq!(p["deployment"], "it-test");
    assert_eq!(p["balance_bits"], 24);
    assert_eq!(p["params_version"], gatekeeper_zk::PARAMS_VERSION);
    assert_eq!(p["tokens_per_credit"], 1);
    let public = PublicKey::decode(p["public_key"].as_str().expect("pk")).expect("pk decodes");
    let mut wallet = Wallet::new(Domain::new("it-test").expect("domain"), public);
    let request = wallet.request_credential(&mut rand::rngs::OsRng).expect("request").encode();
    let key = token(issuer, jti, true, Some(100_000));
    let r = post_issue(addr, &key, &format!(r#"{{"request":"{request}"}}"#));
    assert_eq!(r.status, 200, "{}", r.text());
    let response = IssuanceResponse::decode(r.json()["response"].as_str().expect("response")).expect("decodes");
    assert_eq!(r.json()["credits"], 100_000);
    assert_eq!(wallet.accept_credential(&response), Ok(100_000));
    (wallet, key)
}

fn paid_chat(addr: std::net::SocketAddr, spend: &str, stream: bool, max_tokens: u64) -> Resp {
    let body = format!(
        r#"{{"model":"m","stream":{stream},"max_tokens":{max_tokens},"messages":[{{"role":"user","content":"Say hello to the gateway"}}]}}"#
    );
    request(addr, &chat_request(&body, &format!("X-Gatekeeper-Credit: {spend}\r\n")))
}

#[test]
fn issue_spend_and_change_whole_and_streamed() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = setup(dir.path());
    let (mut wallet, key) = funded_wallet(&s, "zk-alice");

    // Whole answer: change in the response header, refund of what the answer did not use.
    let spend = wallet.spend(5_000, &mut rand::rngs::OsRng).expect("spend").encode();
    let r = paid_chat(s.gw.addr, &spend, false, 100);
    assert_eq!(r.status, 200, "{}", r.text());
    let used = r.json()["usage"]["total_tokens"].as_u64().expect("mock reports usage");
    let change = Change::decode(r.header("x-gatekeeper-credit-change").expect("change header")).expect("change");
    assert_eq!(wallet.accept_change(&change), Ok(100_000 - used));

    // The same spend again: refused as a replay, with its own code.
    let again = paid_chat(s.gw.addr, &spend, false, 100);
    assert_eq!((again.status, code(&again).as_str()), (429, "credit_replayed"));
    // It carries the change the spend got (useless without the wallet's secrets).
    assert_eq!(again.header("x-gatekeeper-credit-change"), r.header("x-gatekeeper-credit-change"));

    // Streamed: the change arrives as an SSE comment before the stream's end.
    let before = wallet.balance().expect("ready");
    let spend = wallet.spend(5_000, &mut rand::rngs::OsRng).expect("spend").encode();
    let r = paid_chat(s.gw.addr, &spend, true, 100);
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    let line = text.lines().find_map(|l| l.strip_prefix(": gatekeeper-credit-change ")).expect("change comment");
    let comment_at = text.find(": gatekeeper-credit-change").expect("comment");
    assert!(comment_at < text.find("data: [DONE]").expect("done"), "the change precedes [DONE]");
    let after = wallet.accept_change(&Change::decode(line).expect("change")).expect("accepted");
    assert!(after < before && after >= before - 5_000, "{before} -> {after}");

    // A spend that does not cover prompt estimate + max_tokens is refused before its
    // nullifier is recorded: the wallet takes it back and pays again.
    let small = wallet.spend(10, &mut rand::rngs::OsRng).expect("spend").encode();
    let r = paid_chat(s.gw.addr, &small, false, 100);
    assert_eq!((r.status, code(&r).as_str()), (429, "credit_insufficient"));
    assert_eq!(wallet.cancel_spend(), Ok(after));
    let retry = wallet.spend(1_000, &mut rand::rngs::OsRng).expect("spend").encode();
    let r = paid_chat(s.gw.addr, &retry, false, 100);
    assert_eq!(r.status, 200, "{}", r.text());
    wallet
        .accept_change(&Change::decode(r.header("x-gatekeeper-credit-change").expect("change")).expect("change"))
        .expect("accepted");

    // A spend with one byte changed does not verify.
    let mut bad = wallet.clone().spend(1_000, &mut rand::rngs::OsRng).expect("spend").encode().into_bytes();
    let i = bad.len() / 2;
    bad[i] = if bad[i] == b'A' { b'B' } else { b'A' };
    let r = paid_chat(s.gw.addr, std::str::from_utf8(&bad).expect("ascii"), false, 100);
    assert_eq!((r.status, code(&r).as_str()), (401, "credit_invalid"));
    assert!(r.header("x-gatekeeper-credit-change").is_none());

    // The zk key itself cannot pay by name, and gets one credential per epoch.
    let r = chat(s.gw.addr, "m", false, &format!("Authorization: Bearer {key}\r\n"));
    assert_eq!((r.status, code(&r).as_str()), (403, "credits_required"));
    let mut other = Wallet::new(Domain::new("it-test").expect("d"), wallet_public(&s));
    let req = other.request_credential(&mut rand::rngs::OsRng).expect("request").encode();
    let r = post_issue(s.gw.addr, &key, &format!(r#"{{"request":"{req}"}}"#));
    assert_eq!((r.status, code(&r).as_str()), (429, "credit_already_issued"));
    let plain = token(&s.issuer, "plain", false, None);
    let r = post_issue(s.gw.addr, &plain, &format!(r#"{{"request":"{req}"}}"#));
    assert_eq!((r.status, code(&r).as_str()), (403, "credits_not_allowed"));
    let r = post_issue(s.gw.addr, &token(&s.issuer, "zk-bob", true, None), "{\"request\":\"AAAA\"}");
    assert_eq!((r.status, code(&r).as_str()), (400, "credit_request_invalid"));

    // Metrics: spends, rejections by reason, verify time.
    let m = get(s.gw.addr, "/metrics").text();
    assert!(m.contains("gatekeeper_credit_spends_total 3"), "{m}");
    assert!(m.contains("gatekeeper_credit_rejections_total{reason=\"replayed\"} 1"), "{m}");
    assert!(m.contains("gatekeeper_credit_rejections_total{reason=\"insufficient\"} 1"), "{m}");
    assert!(m.contains("gatekeeper_credit_rejections_total{reason=\"invalid\"} 1"), "{m}");
    assert!(m.contains("gatekeeper_credit_verify_seconds_count"), "{m}");

    // Audit: credit-paid records carry the nullifier and amount and no key or tenant.
    let deadline = Instant::now() + Duration::from_secs(10);
    let paid: Vec<serde_json::Value> = loop {
        let records = audit_records(dir.path());
        let paid: Vec<_> = records.into_iter().filter(|r| r.get("credit_nullifier").is_some()).collect();
        if paid.len() >= 3 || Instant::now() > deadline {
            break paid;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(paid.len(), 3, "three paid requests recorded");
    for r in &paid {
        assert!(r.get("key_id").is_none() && r.get("tenant").is_none() && r.get("kid").is_none(), "{r}");
        assert!(r["credit_amount"].as_u64().is_some());
        assert!(r.get("credit_issued").is_none());
    }
    // Issuance is audited: the key, the epoch, the credits, and nothing of the credential.
    let issued: Vec<serde_json::Value> =
        audit_records(dir.path()).into_iter().filter(|r| r.get("credit_issued").is_some()).collect();
    assert_eq!(issued.len(), 1, "one credential issued (the refused requests got none)");
    let r = &issued[0];
    assert_eq!((r["key_id"].as_str(), r["credit_issued"].as_u64()), (Some("zk-alice"), Some(100_000)), "{r}");
    let epoch = get(s.gw.addr, "/v1/credits/params").json()["epoch"].as_u64();
    assert_eq!(r["credit_issued_epoch"].as_u64(), epoch);
    assert!(r.get("credit_nullifier").is_none() && r.get("credit_amount").is_none(), "{r}");
}

fn wallet_public(s: &Setup) -> PublicKey {
    let p = get(s.gw.addr, "/v1/credits/params").json();
    PublicKey::decode(p["public_key"].as_str().expect("pk")).expect("pk")
}

fn audit_records(data_dir: &Path) -> Vec<serde_json::Value> {
    crate::audit::file_messages(data_dir)
        .iter()
        .flat_map(|(_, msgs)| msgs.iter())
        .filter_map(|m| serde_json::from_slice::<serde_json::Value>(m).ok())
        .flat_map(|m| m["entries"].as_array().cloned().unwrap_or_default())
        .map(|e| e["record"].clone())
        .collect()
}

#[test]
fn nullifiers_survive_a_restart_and_other_epochs_are_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let spend = {
        let s = setup(dir.path());
        let (mut wallet, _) = funded_wallet(&s, "zk-carol");
        let spend = wallet.spend(2_000, &mut rand::rngs::OsRng).expect("spend").encode();
        assert_eq!(paid_chat(s.gw.addr, &spend, false, 50).status, 200);
        spend
    };
    let s = setup(dir.path());
    let r = paid_chat(s.gw.addr, &spend, false, 50);
    assert_eq!((r.status, code(&r).as_str()), (429, "credit_replayed"), "the nullifier file outlived the process");

    // A credential of yesterday's epoch (same seed, so the same keys): expired.
    let p = get(s.gw.addr, "/v1/credits/params").json();
    let epoch = u32::try_from(p["epoch"].as_u64().expect("epoch")).expect("u32");
    let mut seed = [0u8; 32];
    seed.fill(1);
    let domain = Domain::new("it-test").expect("domain");
    let old = Issuer::derive(&domain, &IssuerSeed::from_bytes(seed), epoch - 1);
    let mut w = Wallet::new(domain, old.public_key());
    let req = w.request_credential(&mut rand::rngs::OsRng).expect("req");
    let resp = old.issue(&req, 10_000, &mut rand::rngs::OsRng).expect("issue");
    w.accept_credential(&resp).expect("credential");
    let stale = w.spend(1_000, &mut rand::rngs::OsRng).expect("spend").encode();
    let r = paid_chat(s.gw.addr, &stale, false, 50);
    assert_eq!((r.status, code(&r).as_str()), (401, "credit_epoch_expired"));
}

#[test]
fn without_a_credits_section_zk_keys_are_refused() {
    let mock = Mock::start(Mock::config("primary"));
    let issuer = SecretKey::generate();
    let mut c = config_for(&[("primary", &mock, "")], "");
    c.push_str(&format!("keys:\n  issuers: [ {{ public_key: \"{}\" }} ]\n", issuer.public_key().to_paserk()));
    let gw = Gateway::start(&c, &[]);
    let key = token(&issuer, "zk", true, None);
    let r = chat(gw.addr, "m", false, &format!("Authorization: Bearer {key}\r\n"));
    assert_eq!((r.status, code(&r).as_str()), (403, "credits_not_accepted"));
    let r = get(gw.addr, "/v1/credits/params");
    assert_eq!((r.status, code(&r).as_str()), (403, "credits_not_accepted"));
}

/// `gatekeeper client`: plain HTTP and the official `openai` SDK through the sidecar, to a
/// gateway that wants credits; the wallet file is private and tracks the balance.
#[test]
fn the_client_sidecar_pays_for_plain_and_sdk_requests() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = setup(dir.path());
    let key = token(&s.issuer, "zk-sidecar", true, Some(100_000));
    let wallet_path = dir.path().join("wallet.bin");
    let mut cmd = std::process::Command::new(gatekeeper_bin());
    cmd.arg("client")
        .arg("--gateway")
        .arg(format!("http://{}", s.gw.addr))
        .args(["--key", &key, "--listen", "127.0.0.1:0", "--wallet"])
        .arg(&wallet_path);
    let (_client, addr) = Proc::spawn("gatekeeper client", cmd, dir.path().join("client.log"));

    let r = chat(addr, "m", false, "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("x-gatekeeper-credit-change").is_none(), "the sidecar keeps the change");
    let used = r.json()["usage"]["total_tokens"].as_u64().expect("usage");
    let balance = |path: &Path| {
        let bytes = std::fs::read(path).expect("wallet file");
        Wallet::from_bytes(Domain::new("it-test").expect("d"), &bytes).expect("wallet").balance()
    };
    assert_eq!(balance(&wallet_path), Some(100_000 - used));
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&wallet_path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let r = chat(addr, "m", true, "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("data: [DONE]"), "{}", r.text());
    let after_stream = balance(&wallet_path).expect("ready after the stream");
    assert!(after_stream < 100_000 - used);

    run_openai_sdk(addr, "sk-unused-by-the-sidecar", None);
    let end = balance(&wallet_path).expect("ready after the SDK run");
    assert!(end < after_stream, "{after_stream} -> {end}");

    // Concurrent clients: every one is paid, one credential in flight at a time, and the
    // wallet ends exactly at the balance less what the answers used.
    let accepted_before = metric_sum(s.gw.addr, "gatekeeper_connections_accepted_total{");
    let clients: Vec<_> = (0..6).map(|_| std::thread::spawn(move || chat(addr, "m", false, ""))).collect();
    let models = chat_models(addr);
    let answers: Vec<Resp> = clients.into_iter().map(|t| t.join().expect("client")).collect();
    assert_eq!(models.status, 200, "{}", models.text());
    let used: u64 = answers
        .iter()
        .map(|r| {
            assert_eq!(r.status, 200, "{}", r.text());
            r.json()["usage"]["total_tokens"].as_u64().expect("usage")
        })
        .sum();
    assert_eq!(balance(&wallet_path), Some(end - used), "no credit lost or counted twice");
    // Kept-alive connections to the gateway: far fewer than the requests (7 here, and
    // the /metrics requests of this test, which open one each).
    let accepted = metric_sum(s.gw.addr, "gatekeeper_connections_accepted_total{") - accepted_before;
    assert!(accepted <= 4, "{accepted} connections for 7 requests");
}

/// `credits.tokens_per_credit: 1000`, end to end through the sidecar, after an upgrade
/// from L = 32: the key's allowance in tokens becomes credits, each request is charged
/// and refunded in whole credits, an allowance above the balance width is cut and
/// counted, and the wallet file and the issuance record of the old parameters do not
/// stand in the way of a credential for the new ones.
#[test]
fn the_sidecar_pays_in_credits_of_tokens_per_credit_after_an_upgrade() {
    let dir = tempfile::tempdir().expect("tmp");
    let mock = Mock::start(Mock::config("primary"));
    let issuer = SecretKey::generate();
    let epoch = u64::try_from(now()).expect("now") / 86_400;
    // The L = 32 build issued this key a credential this epoch, and its wallet file holds it.
    std::fs::create_dir_all(dir.path().join("credits")).expect("dir");
    std::fs::write(
        dir.path().join(format!("credits/issued-{epoch}.jsonl")),
        "{\"key_id\":\"zk-unit\",\"request_hash\":\"00\",\"response\":\"old\"}\n",
    )
    .expect("old issuance");
    let wallet_path = dir.path().join("wallet.bin");
    std::fs::write(&wallet_path, [1u8, 0, 0, 0, 0]).expect("old wallet");
    let cfg = config_credits(&mock, &issuer, dir.path(), ", tokens_per_credit: 1000");
    let gw = Gateway::start(&cfg, &[]);
    let p = get(gw.addr, "/v1/credits/params").json();
    assert_eq!((p["tokens_per_credit"].as_u64(), p["balance_bits"].as_u64()), (Some(1_000), Some(24)));
    assert_eq!(p["credits_max"].as_u64(), Some(16_777_215));

    // 50 million tokens a day: more than 24 bits of tokens, 50,000 credits of 1,000.
    let mut claims = Claims { jti: "zk-unit".into(), exp: Some(now() + 3600), zk: true, ..Claims::default() };
    claims.budget.tokens_per_day = Some(50_000_000);
    let key = issue(&issuer, &claims, &Footer::for_key(&issuer.public_key())).expect("key");
    let mut cmd = std::process::Command::new(gatekeeper_bin());
    cmd.arg("client")
        .arg("--gateway")
        .arg(format!("http://{}", gw.addr))
        .args(["--key", &key, "--listen", "127.0.0.1:0", "--wallet"])
        .arg(&wallet_path);
    let (_client, addr) = Proc::spawn("gatekeeper client", cmd, dir.path().join("client.log"));
    let balance = || {
        let bytes = std::fs::read(&wallet_path).expect("wallet file");
        Wallet::from_bytes(Domain::new("it-test").expect("d"), &bytes).expect("a wallet of these params").balance()
    };
    let mut expected = 50_000;
    for stream in [false, true, false] {
        let r = chat(addr, "m", stream, "");
        assert_eq!(r.status, 200, "{}", r.text());
        if !stream {
            let used = r.json()["usage"]["total_tokens"].as_u64().expect("usage");
            assert!(used > 0);
            expected -= used.div_ceil(1_000);
            assert_eq!(balance(), Some(expected), "charged the use in whole credits, refunded the rest");
        } else {
            let b = balance().expect("ready after the stream");
            assert!(b < expected, "{expected} -> {b}");
            expected = b;
        }
    }
    let spends = metric_sum(gw.addr, "gatekeeper_credit_spends_total");
    assert_eq!(spends, 3);
    // The sidecar spent in the gateway's unit: body bytes + 4,096 default tokens is a few
    // credits, not thousands (the amount is in each paid request's audit record).
    let deadline = Instant::now() + Duration::from_secs(10);
    let amounts: Vec<u64> = loop {
        let amounts: Vec<u64> =
            audit_records(dir.path()).iter().filter_map(|r| r.get("credit_amount")?.as_u64()).collect();
        if amounts.len() >= 3 || Instant::now() > deadline {
            break amounts;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(amounts.len(), 3, "{amounts:?}");
    assert!(amounts.iter().all(|a| (5..=6).contains(a)), "{amounts:?}");

    // By hand: one credit covers prompt + 100 tokens at this unit; zero is refused as too small.
    let (mut wallet, _) = {
        let public = PublicKey::decode(p["public_key"].as_str().expect("pk")).expect("pk");
        let mut w = Wallet::new(Domain::new("it-test").expect("d"), public);
        let req = w.request_credential(&mut rand::rngs::OsRng).expect("req").encode();
        // 20 million credits asked: cut to 24 bits, and counted.
        let big = token(&issuer, "zk-big", true, Some(20_000_000));
        let r = post_issue(gw.addr, &big, &format!(r#"{{"request":"{req}"}}"#));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["credits"].as_u64(), Some(16_777_215));
        let resp = IssuanceResponse::decode(r.json()["response"].as_str().expect("resp")).expect("resp");
        assert_eq!(w.accept_credential(&resp), Ok(16_777_215));
        (w, big)
    };
    let m = get(gw.addr, "/metrics").text();
    assert!(m.contains("gatekeeper_credit_allowances_clamped_total 1"), "{m}");
    let spend = wallet.spend(1, &mut rand::rngs::OsRng).expect("spend").encode();
    let r = paid_chat(gw.addr, &spend, false, 100);
    assert_eq!(r.status, 200, "{}", r.text());
    let change = Change::decode(r.header("x-gatekeeper-credit-change").expect("change")).expect("change");
    assert_eq!(change.refund(), Ok(0), "a few tokens cost the whole credit");
    assert_eq!(wallet.accept_change(&change), Ok(16_777_214));
    let spend = wallet.spend(1, &mut rand::rngs::OsRng).expect("spend").encode();
    let r = paid_chat(gw.addr, &spend, false, 1_000);
    assert_eq!((r.status, code(&r).as_str()), (429, "credit_insufficient"), "prompt + 1,000 tokens is 2 credits");
}

/// The sum of a per-shard series (`NAME{shard="i"} v` lines).
fn metric_sum(addr: std::net::SocketAddr, name_brace: &str) -> u64 {
    let m = get(addr, "/metrics").text();
    m.lines()
        .filter(|l| l.starts_with(name_brace))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.trim().parse::<u64>().ok()))
        .sum()
}

fn chat_models(addr: std::net::SocketAddr) -> Resp {
    get(addr, "/v1/models")
}

/// Three nodes on one NATS share their nullifiers: a spend paid on one is a replay on the
/// others, a spend raced to all three is paid once, and without NATS a spend fails closed.
#[test]
fn three_nodes_share_nullifiers_through_jetstream() {
    crate::audit::need_nats!();
    let mut server = crate::audit::NatsServer::start();
    let mock = Mock::start(Mock::config("primary"));
    let issuer = SecretKey::generate();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("tmp")).collect();
    let nodes: Vec<Gateway> = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let c = config(&mock, &issuer, d.path())
                .replace("audit: { data_dir:", &format!("audit: {{ node_name: node{i}, data_dir:"))
                .replace("issuer_seed:", "claim_timeout_ms: 1000, issuer_seed:");
            Gateway::start(&format!("{c}nats: {{ url: \"{}\" }}\n", server.url()), &[])
        })
        .collect();
    let addrs: Vec<_> = nodes.iter().map(|g| g.addr).collect();
    let (mut wallet, key) = funded_wallet_at(addrs[0], &issuer, "zk-multi");
    // One credential per key per epoch across the nodes: another request elsewhere is refused.
    for addr in &addrs[1..] {
        let p = get(*addr, "/v1/credits/params").json();
        let public = PublicKey::decode(p["public_key"].as_str().expect("pk")).expect("pk");
        let mut other = Wallet::new(Domain::new("it-test").expect("d"), public);
        let req = other.request_credential(&mut rand::rngs::OsRng).expect("request").encode();
        let r = post_issue(*addr, &key, &format!(r#"{{"request":"{req}"}}"#));
        assert_eq!((r.status, code(&r).as_str()), (429, "credit_already_issued"), "{}", r.text());
    }

    // Paid on node 0, a replay on nodes 1 and 2.
    let spend = wallet.spend(2_000, &mut rand::rngs::OsRng).expect("spend").encode();
    let r = paid_chat(addrs[0], &spend, false, 50);
    assert_eq!(r.status, 200, "{}", r.text());
    let first_change = r.header("x-gatekeeper-credit-change").map(str::to_string);
    wallet
        .accept_change(&Change::decode(r.header("x-gatekeeper-credit-change").expect("change")).expect("change"))
        .expect("accepted");
    for addr in &addrs[1..] {
        // The change node 0 put next to the nullifier comes back from any node (the put
        // is not awaited by node 0's answer: it lands within moments).
        let deadline = Instant::now() + Duration::from_secs(10);
        let r = loop {
            let r = paid_chat(*addr, &spend, false, 50);
            if r.header("x-gatekeeper-credit-change").is_some() || Instant::now() > deadline {
                break r;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!((r.status, code(&r).as_str()), (429, "credit_replayed"), "another node knows the nullifier");
        assert_eq!(
            r.header("x-gatekeeper-credit-change"),
            first_change.as_deref(),
            "the replay on another node hands back the change node 0 gave"
        );
    }

    // One spend raced to all three nodes at once: paid exactly once.
    let spend = wallet.spend(2_000, &mut rand::rngs::OsRng).expect("spend").encode();
    let racers: Vec<_> = addrs
        .iter()
        .map(|a| {
            let (a, spend) = (*a, spend.clone());
            std::thread::spawn(move || paid_chat(a, &spend, false, 50))
        })
        .collect();
    let answers: Vec<Resp> = racers.into_iter().map(|t| t.join().expect("racer")).collect();
    let paid: Vec<&Resp> = answers.iter().filter(|r| r.status == 200).collect();
    assert_eq!(paid.len(), 1, "{:?}", answers.iter().map(|r| (r.status, code(r))).collect::<Vec<_>>());
    assert!(answers.iter().filter(|r| r.status != 200).all(|r| code(r) == "credit_replayed"));
    wallet
        .accept_change(&Change::decode(paid[0].header("x-gatekeeper-credit-change").expect("change")).expect("c"))
        .expect("accepted");

    // NATS down: the spend fails closed (503, nothing spent), and goes through once it is back.
    server.kill();
    let spend = wallet.spend(2_000, &mut rand::rngs::OsRng).expect("spend").encode();
    let r = paid_chat(addrs[1], &spend, false, 50);
    assert_eq!((r.status, code(&r).as_str()), (503, "credit_store_unavailable"), "{}", r.text());
    assert!(r.header("x-gatekeeper-credit-change").is_none());
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    let r = loop {
        let r = paid_chat(addrs[1], &spend, false, 50);
        if r.status != 503 || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(r.status, 200, "the same spend, never recorded, is paid once NATS is back: {}", r.text());
    drop(nodes);
}

/// What the gateway records of two spends of one wallet and of two spends of two wallets
/// is alike: no recorded field is shared by the first pair that is not shared by the
/// second (equal amounts, so only the proof's randomness could link them, and it is not
/// recorded), and the nullifier file holds four unrelated 32-byte values.
#[test]
fn spends_of_one_wallet_look_like_spends_of_two() {
    let dir = tempfile::tempdir().expect("tmp");
    // One shard: which shard a connection lands on is the kernel's choice, not the wallet's.
    let mock = Mock::start(Mock::config("primary"));
    let issuer = SecretKey::generate();
    let gw = Gateway::start(&config(&mock, &issuer, dir.path()), &["--shards", "1"]);
    let s = Setup { _mock: mock, gw, issuer };
    let (mut one, _) = funded_wallet(&s, "zk-one");
    let (mut two, _) = funded_wallet(&s, "zk-two");
    let (mut three, _) = funded_wallet(&s, "zk-three");
    let pay = |w: &mut Wallet, id: &str| {
        let spend = w.spend(3_000, &mut rand::rngs::OsRng).expect("spend").encode();
        let r = paid_chat_with_id(s.gw.addr, &spend, id);
        assert_eq!(r.status, 200, "{}", r.text());
        let change = Change::decode(r.header("x-gatekeeper-credit-change").expect("change")).expect("change");
        w.accept_change(&change).expect("accepted");
    };
    pay(&mut one, "same-a");
    pay(&mut one, "same-b");
    pay(&mut two, "diff-a");
    pay(&mut three, "diff-b");
    let deadline = Instant::now() + Duration::from_secs(10);
    let records = loop {
        let r: Vec<_> = audit_records(dir.path()).into_iter().filter(|r| r.get("credit_nullifier").is_some()).collect();
        if r.len() >= 4 || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let by_id = |id: &str| records.iter().find(|r| r["request_id"] == id).cloned().expect("record");
    let shared = |a: &serde_json::Value, b: &serde_json::Value| -> std::collections::BTreeSet<String> {
        let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else { return Default::default() };
        a.iter().filter(|(k, v)| b.get(*k) == Some(*v)).map(|(k, _)| k.clone()).collect()
    };
    let same = shared(&by_id("same-a"), &by_id("same-b"));
    let diff = shared(&by_id("diff-a"), &by_id("diff-b"));
    assert_eq!(same, diff, "fields equal for one wallet's spends vs two wallets' spends");
    assert!(!same.contains("credit_nullifier"));
    let epoch = get(s.gw.addr, "/v1/credits/params").json()["epoch"].as_u64().expect("epoch");
    let file = std::fs::read(dir.path().join(format!("credits/nullifiers-{epoch}.bin"))).expect("nullifiers");
    assert_eq!(file.len(), 4 * 32);
    let values: std::collections::HashSet<&[u8]> = file.chunks(32).collect();
    assert_eq!(values.len(), 4);
}

fn paid_chat_with_id(addr: std::net::SocketAddr, spend: &str, request_id: &str) -> Resp {
    let body = r#"{"model":"m","stream":false,"max_tokens":100,"messages":[{"role":"user","content":"Say hello to the gateway"}]}"#;
    request(addr, &chat_request(body, &format!("X-Gatekeeper-Credit: {spend}\r\nX-Request-Id: {request_id}\r\n")))
}

/// A wallet killed after its spend reached the gateway but before it took the change:
/// the sidecar, started on that wallet file, gets the change back and goes on.
#[test]
fn a_wallet_killed_between_spend_and_change_gets_its_change_back() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = setup(dir.path());
    let (mut wallet, key) = funded_wallet(&s, "zk-crash");
    let spend = wallet.spend(5_000, &mut rand::rngs::OsRng).expect("spend").encode();
    let r = paid_chat(s.gw.addr, &spend, false, 100);
    assert_eq!(r.status, 200, "{}", r.text());
    let used_first = r.json()["usage"]["total_tokens"].as_u64().expect("usage");
    // The change never reached the wallet: its file holds the spend awaiting change.
    let wallet_path = dir.path().join("wallet.bin");
    std::fs::write(&wallet_path, wallet.to_bytes()).expect("wallet file");
    let mut cmd = std::process::Command::new(gatekeeper_bin());
    cmd.arg("client")
        .arg("--gateway")
        .arg(format!("http://{}", s.gw.addr))
        .args(["--key", &key, "--listen", "127.0.0.1:0", "--wallet"])
        .arg(&wallet_path);
    let (_client, addr) = Proc::spawn("gatekeeper client", cmd, dir.path().join("client.log"));
    let r = chat(addr, "m", false, "");
    assert_eq!(r.status, 200, "{}", r.text());
    let used_second = r.json()["usage"]["total_tokens"].as_u64().expect("usage");
    let bytes = std::fs::read(&wallet_path).expect("wallet file");
    let w = Wallet::from_bytes(Domain::new("it-test").expect("d"), &bytes).expect("wallet");
    assert_eq!(w.balance(), Some(100_000 - used_first - used_second), "no credit lost");
}

fn metric(addr: std::net::SocketAddr, line_prefix: &str) -> u64 {
    let m = get(addr, "/metrics").text();
    m.lines()
        .find_map(|l| l.strip_prefix(line_prefix).and_then(|v| v.trim().parse::<u64>().ok()))
        .unwrap_or_else(|| panic!("no {line_prefix} in /metrics:\n{m}"))
}

/// The verify pool's queue at its edge: one thread, depth 1, a burst of spends at one
/// shard. One is checked, one waits, the rest are refused at once with 503
/// `credit_verify_busy` and `Retry-After`, counted; bearer-key requests on the same shard
/// are answered all the while.
#[test]
fn a_full_verify_queue_refuses_and_the_shard_keeps_answering_keys() {
    let dir = tempfile::tempdir().expect("tmp");
    let mock = Mock::start(Mock::config("primary"));
    let issuer = SecretKey::generate();
    let c = config(&mock, &issuer, dir.path())
        .replace("issuer_seed:", "verify_threads: 1, verify_queue_depth: 1, issuer_seed:");
    let gw = Gateway::start(&c, &["--shards", "1"]);
    let s = Setup { _mock: mock, gw, issuer };
    let (mut wallet, _) = funded_wallet(&s, "zk-burst");
    // Spends whose proofs are checked in full and fail (one byte of the proof changed):
    // each costs a whole verification, none is spent.
    let spend = wallet.spend(1_000, &mut rand::rngs::OsRng).expect("spend").encode();
    let mut bad = spend.clone().into_bytes();
    let i = bad.len() - 8;
    bad[i] = if bad[i] == b'A' { b'B' } else { b'A' };
    let bad = String::from_utf8(bad).expect("ascii");
    let plain = token(&s.issuer, "plain-during-burst", false, None);
    let addr = s.gw.addr;
    let burst = 24;
    let gate = std::sync::Arc::new(std::sync::Barrier::new(burst + 1));
    let spenders: Vec<_> = (0..burst)
        .map(|_| {
            let (gate, bad) = (std::sync::Arc::clone(&gate), bad.clone());
            std::thread::spawn(move || {
                gate.wait();
                paid_chat(addr, &bad, false, 50)
            })
        })
        .collect();
    gate.wait();
    let keyed: Vec<Resp> =
        (0..5).map(|_| chat(addr, "m", false, &format!("Authorization: Bearer {plain}\r\n"))).collect();
    let answers: Vec<Resp> = spenders.into_iter().map(|t| t.join().expect("spender")).collect();
    assert!(keyed.iter().all(|r| r.status == 200), "bearer keys answered during the burst");
    let busy: Vec<&Resp> = answers.iter().filter(|r| code(r) == "credit_verify_busy").collect();
    let invalid = answers.iter().filter(|r| code(r) == "credit_invalid").count();
    assert_eq!(busy.len() + invalid, burst, "{:?}", answers.iter().map(code).collect::<Vec<_>>());
    assert!(!busy.is_empty() && invalid >= 1, "busy {} invalid {invalid}", busy.len());
    for r in &busy {
        assert_eq!(r.status, 503);
        assert_eq!(r.header("retry-after"), Some("1"));
        assert!(r.header("x-gatekeeper-credit-change").is_none());
    }
    assert_eq!(metric(addr, "gatekeeper_credit_rejections_total{reason=\"verify_busy\"}"), busy.len() as u64);
    assert_eq!(metric(addr, "gatekeeper_credit_verify_threads"), 1);
    // The queue drained: the wallet's real spend is checked and paid.
    let r = paid_chat(addr, &spend, false, 50);
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Soft mode with a real NATS that is killed: spends go on against each node's local
/// set, at most `soft_max_unconfirmed` per node; a spend taken on two nodes meanwhile is
/// a double spend, found and counted once when NATS is back; the local set still refuses
/// a replay on the node that took it.
#[test]
fn soft_mode_bounds_and_reconciles_spends_during_a_nats_outage() {
    crate::audit::need_nats!();
    let mut server = crate::audit::NatsServer::start();
    let mock = Mock::start(Mock::config("primary"));
    let issuer = SecretKey::generate();
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().expect("tmp")).collect();
    let nodes: Vec<Gateway> = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let c = config(&mock, &issuer, d.path())
                .replace("audit: { data_dir:", &format!("audit: {{ node_name: soft{i}, data_dir:"))
                .replace("mode: strict", "mode: soft")
                .replace("issuer_seed:", "claim_timeout_ms: 500, soft_max_unconfirmed: 2, issuer_seed:");
            Gateway::start(&format!("{c}nats: {{ url: \"{}\" }}\n", server.url()), &[])
        })
        .collect();
    let addrs: Vec<_> = nodes.iter().map(|g| g.addr).collect();
    let (mut wallet, _) = funded_wallet_at(addrs[0], &issuer, "zk-soft");
    // NATS up: exact, as strict.
    let spend = wallet.spend(2_000, &mut rand::rngs::OsRng).expect("spend").encode();
    let r = paid_chat(addrs[0], &spend, false, 50);
    assert_eq!(r.status, 200, "{}", r.text());
    wallet.accept_change(&Change::decode(r.header("x-gatekeeper-credit-change").expect("c")).expect("c")).expect("ok");

    server.kill();
    // One spend taken by both nodes: the bounded double spend soft mode allows.
    let twice = wallet.spend(2_000, &mut rand::rngs::OsRng).expect("spend").encode();
    let deadline = Instant::now() + Duration::from_secs(10);
    let first = loop {
        // Until the client notices the server is gone, a claim may wait out its timeout.
        let r = paid_chat(addrs[0], &twice, false, 50);
        if r.status == 200 || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(first.status, 200, "soft: accepted on the local set: {}", first.text());
    let second = paid_chat(addrs[1], &twice, false, 50);
    assert_eq!(second.status, 200, "soft: the other node's local set has not seen it: {}", second.text());
    let r = paid_chat(addrs[0], &twice, false, 50);
    assert_eq!((r.status, code(&r).as_str()), (429, "credit_replayed"), "each node's own set is exact");
    wallet
        .accept_change(&Change::decode(first.header("x-gatekeeper-credit-change").expect("c")).expect("c"))
        .expect("ok");
    // The cap: node 0 holds 1 unconfirmed; one more is accepted, the next fails closed.
    let spend = wallet.spend(2_000, &mut rand::rngs::OsRng).expect("spend").encode();
    let r = paid_chat(addrs[0], &spend, false, 50);
    assert_eq!(r.status, 200, "{}", r.text());
    wallet.accept_change(&Change::decode(r.header("x-gatekeeper-credit-change").expect("c")).expect("c")).expect("ok");
    let capped = wallet.spend(2_000, &mut rand::rngs::OsRng).expect("spend").encode();
    let r = paid_chat(addrs[0], &capped, false, 50);
    assert_eq!((r.status, code(&r).as_str()), (503, "credit_store_unavailable"), "soft_max_unconfirmed reached");
    assert_eq!(metric(addrs[0], "gatekeeper_credit_unconfirmed"), 2);
    assert_eq!(metric(addrs[0], "gatekeeper_credit_soft_accepted_total"), 2);

    server.restart();
    // Back: each node publishes what it took on its own (no spend needed: the nodes are
    // idle from here); the nullifier both took is found once, by whichever publishes second.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let unconfirmed: u64 = addrs.iter().map(|a| metric(*a, "gatekeeper_credit_unconfirmed")).sum();
        if unconfirmed == 0 || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let unconfirmed: Vec<u64> = addrs.iter().map(|a| metric(*a, "gatekeeper_credit_unconfirmed")).collect();
    assert_eq!(unconfirmed, vec![0, 0], "everything taken during the outage was published");
    let doubles: u64 = addrs.iter().map(|a| metric(*a, "gatekeeper_credit_double_spends_total")).sum();
    assert_eq!(doubles, 1, "the one nullifier taken on both nodes is counted once");
    // The capped spend was never spent: paid now that NATS is back.
    let r = paid_chat(addrs[1], &capped, false, 50);
    assert_eq!(r.status, 200, "{}", r.text());
    drop(nodes);
}
