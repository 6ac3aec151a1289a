//! Offline API keys through the running gateway: every refusal has its own code.

use std::io::Write;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use gatekeeper::keys::{issue, Claims, Footer, SecretKey};

use crate::harness::*;

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn token(issuer: &SecretKey, claims: Claims) -> String {
    issue(issuer, &claims, &Footer::for_key(&issuer.public_key())).expect("issue")
}

fn claims(jti: &str) -> Claims {
    Claims { jti: jti.into(), exp: Some(now() + 3600), ..Claims::default() }
}

struct Setup {
    _mock: Mock,
    gw: Gateway,
    issuer: SecretKey,
}

fn setup(extra_keys: &str) -> Setup {
    let mock = Mock::start(Mock::config("primary"));
    let issuer = SecretKey::generate();
    let rotated_in = SecretKey::generate();
    let mut config = config_for(&[("primary", &mock, "")], "");
    config = config.replace(
        "failover_chain:",
        "  - { name: secret-model, provider: primary, upstream_model: up-secret }\nfailover_chain:",
    );
    config.push_str(&format!(
        "keys:\n  issuers: [ {{ public_key: \"{}\" }}, {{ public_key: \"{}\" }} ]\n  revoked: [revoked-key]\n  leeway_s: 0\n{extra_keys}",
        issuer.public_key().to_paserk(),
        rotated_in.public_key().to_paserk()
    ));
    let gw = Gateway::start(&config, &[]);
    Setup { _mock: mock, gw, issuer }
}

fn with_key(s: &Setup, token: &str, model: &str) -> Resp {
    chat(s.gw.addr, model, false, &format!("Authorization: Bearer {token}\r\n"))
}

fn code(r: &Resp) -> String {
    r.json()["error"]["code"].as_str().unwrap_or_default().to_string()
}

#[test]
fn every_refusal_has_its_status_and_code() {
    let s = setup("");
    let good = token(&s.issuer, claims("good"));
    assert_eq!(with_key(&s, &good, "m").status, 200);

    let r = chat(s.gw.addr, "m", false, "");
    assert_eq!((r.status, code(&r)), (401, "missing_api_key".into()));
    let r = with_key(&s, "sk-not-a-paseto", "m");
    assert_eq!((r.status, code(&r)), (401, "invalid_api_key".into()));
    assert_eq!(r.json()["error"]["type"], "authentication_error");

    let expired = token(&s.issuer, Claims { exp: Some(now() - 10), ..claims("old") });
    let r = with_key(&s, &expired, "m");
    assert_eq!((r.status, code(&r)), (401, "key_expired".into()));

    let early = token(&s.issuer, Claims { nbf: Some(now() + 3600), ..claims("early") });
    let r = with_key(&s, &early, "m");
    assert_eq!((r.status, code(&r)), (401, "key_not_yet_valid".into()));

    let revoked = token(&s.issuer, claims("revoked-key"));
    let r = with_key(&s, &revoked, "m");
    assert_eq!((r.status, code(&r)), (401, "key_revoked".into()));

    let stranger = SecretKey::generate();
    let r = with_key(&s, &token(&stranger, claims("x")), "m");
    assert_eq!((r.status, code(&r)), (401, "unknown_issuer".into()));

    let limited = token(&s.issuer, Claims { models: vec!["m".into()], ..claims("limited") });
    assert_eq!(with_key(&s, &limited, "m").status, 200);
    let r = with_key(&s, &limited, "secret-model");
    assert_eq!((r.status, code(&r)), (403, "model_not_allowed".into()));
    assert_eq!(r.json()["error"]["type"], "permission_error");
}

#[test]
fn flipping_any_byte_of_the_signature_is_refused() {
    let s = setup("");
    let good = token(&s.issuer, claims("flip"));
    // The token body is base64url; flip characters across payload and signature.
    let body_start = "v4.public.".len();
    let body_end = good.rfind('.').filter(|i| *i > body_start).unwrap_or(good.len());
    for i in (body_start..body_end).step_by(7) {
        let mut bytes = good.clone().into_bytes();
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        let bad = String::from_utf8(bytes).expect("ascii");
        if bad == good {
            continue;
        }
        let r = with_key(&s, &bad, "m");
        assert_eq!(r.status, 401, "byte {i} flipped was accepted");
    }
}

#[test]
fn models_list_shows_only_what_the_key_may_use() {
    let s = setup("");
    let limited = token(&s.issuer, Claims { models: vec!["secret-*".into()], ..claims("lister") });
    let raw = format!("GET /v1/models HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {limited}\r\n\r\n");
    let ids: Vec<String> = request(s.gw.addr, raw.as_bytes()).json()["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|m| m["id"].as_str().map(str::to_string))
        .collect();
    assert_eq!(ids, ["secret-model"]);
    assert_eq!(request(s.gw.addr, b"GET /v1/models HTTP/1.1\r\nHost: gw\r\n\r\n").status, 401);
}

#[test]
fn absurd_budget_claims_are_refused_naming_the_claim() {
    let s = setup("");
    let footer = Footer::for_key(&s.issuer.public_key()).to_bytes();
    for (budget, claim) in [
        (r#"{"tokens_per_day":-1}"#, "budget.tokens_per_day"),
        (r#"{"tokens_per_minute":1e300}"#, "budget.tokens_per_minute"),
        (r#"{"usd_per_month":"NaN"}"#, "budget.usd_per_month"),
        (r#"{"tokens_per_month":9007199254740993}"#, "budget.tokens_per_month"),
    ] {
        // Signed by the trusted issuer: only the claim's value is wrong.
        let payload = format!(r#"{{"jti":"absurd","budget":{budget}}}"#);
        let t = gatekeeper::keys::paseto::sign(&s.issuer, payload.as_bytes(), &footer, b"");
        let r = with_key(&s, &t, "m");
        assert_eq!((r.status, code(&r)), (401, "invalid_api_key".into()), "{budget}");
        let message = r.json()["error"]["message"].as_str().unwrap_or_default().to_string();
        assert!(message.contains(claim) && message.contains("2^53"), "{budget}: {message}");
    }
}

#[test]
fn one_forged_token_among_63_good_fails_alone() {
    let s = setup("");
    let mut tokens: Vec<String> = (0..64).map(|i| token(&s.issuer, claims(&format!("batch-{i}")))).collect();
    // Forge one: a valid token's payload re-signed by a stranger, under our issuer's kid.
    let stranger = SecretKey::generate();
    let forged = gatekeeper::keys::paseto::sign(
        &stranger,
        &claims("batch-forged").to_payload().expect("payload"),
        &Footer::for_key(&s.issuer.public_key()).to_bytes(),
        b"",
    );
    tokens[37] = forged;
    // Write all 64 requests before reading any answer, so they queue together.
    let mut readers: Vec<Reader> = tokens
        .iter()
        .map(|t| {
            let mut c = connect(s.gw.addr);
            c.write_all(&chat_request(&chat_body("m", false), &format!("Authorization: Bearer {t}\r\n")))
                .expect("write");
            Reader::new(c)
        })
        .collect();
    let statuses: Vec<u16> = readers.iter_mut().map(|r| r.response().expect("response").status).collect();
    // Key checks show in /metrics once the shards publish them (every 500 ms).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let text = request(s.gw.addr, b"GET /metrics HTTP/1.1\r\nHost: gw\r\n\r\n").text();
        let misses: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("gatekeeper_key_cache_misses_total "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if misses >= 64 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "key metrics never showed the 64 checks:\n{text}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let refused: Vec<usize> = statuses.iter().enumerate().filter(|(_, s)| **s != 200).map(|(i, _)| i).collect();
    assert_eq!(refused, [37], "statuses: {statuses:?}");
    assert_eq!(statuses[37], 401);
}

#[test]
fn official_openai_sdk_good_key_answers_bad_key_raises_authentication_error() {
    let s = setup("");
    let good = token(&s.issuer, claims("sdk"));
    let bad = token(&SecretKey::generate(), claims("sdk-bad"));
    run_openai_sdk(s.gw.addr, &good, Some(&bad));
}

#[test]
fn keys_cli_issues_a_key_the_gateway_accepts_and_revokes_it() {
    let mock = Mock::start(Mock::config("primary"));
    let dir = tempfile::tempdir().expect("tempdir");
    let issuer_file = dir.path().join("issuer.key");
    let bin = gatekeeper_bin();
    let out = Command::new(&bin).args(["keys", "gen-issuer", "--out"]).arg(&issuer_file).output().expect("gen-issuer");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    let public =
        printed.split_whitespace().find(|w| w.starts_with("k4.public.")).expect("public key printed").to_string();
    let out = Command::new(&bin)
        .args(["keys", "issue", "--issuer"])
        .arg(&issuer_file)
        .args(["--sub", "alice", "--jti", "alice-1", "--models", "m", "--expires", "1d"])
        .output()
        .expect("issue");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(key.starts_with("v4.public."), "{key}");

    let mut config = config_for(&[("primary", &mock, "")], "");
    config.push_str(&format!("keys:\n  issuers: [ {{ public_key: \"{public}\" }} ]\n  revoked: []\n"));
    let gw = Gateway::start(&config, &[]);
    assert_eq!(chat(gw.addr, "m", false, &format!("Authorization: Bearer {key}\r\n")).status, 200);
    drop(gw);

    let config_file = dir.path().join("gatekeeper.yaml");
    std::fs::write(&config_file, &config).expect("write config");
    let out =
        Command::new(&bin).args(["keys", "revoke", "alice-1", "--config"]).arg(&config_file).output().expect("revoke");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let revoked_config = std::fs::read_to_string(&config_file).expect("read");
    let gw = Gateway::start(&revoked_config, &[]);
    let r = chat(gw.addr, "m", false, &format!("Authorization: Bearer {key}\r\n"));
    assert_eq!((r.status, code(&r)), (401, "key_revoked".into()));
}
