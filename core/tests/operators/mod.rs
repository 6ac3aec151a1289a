//! What an operator meets: error messages that name the place and the fix (golden
//! texts), and commands that need no secrets they do not use.

use std::process::{Command, Stdio};

use crate::harness::*;

/// Runs `gatekeeper ARGS` in `dir` with a clean environment; (success, stdout, stderr).
fn gatekeeper(dir: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(gatekeeper_bin())
        .args(args)
        .current_dir(dir)
        .env_remove("OPENAI_API_KEY")
        .env_remove("GROQ_API_KEY")
        .env("GATEKEEPER_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run gatekeeper");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The last line of stderr (the error).
fn error_of(dir: &std::path::Path, args: &[&str]) -> String {
    let (ok, _, err) = gatekeeper(dir, args);
    assert!(!ok, "expected a failure: {args:?}");
    err.lines().last().unwrap_or_default().to_string()
}

const SECRETS: &str = "providers:\n  - name: openai\n    kind: openai\n    base_url: https://api.openai.com/v1\n    api_key: ${OPENAI_API_KEY}\n  - { name: groq, kind: openai_compatible, base_url: \"https://api.groq.com/openai/v1\", api_key: \"${GROQ_API_KEY}\" }\n";

#[test]
fn error_messages_name_the_place_and_the_fix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let write = |name: &str, text: &str| std::fs::write(d.join(name), text).expect("write");
    assert_eq!(
        error_of(d, &["serve", "--config", "missing.yaml"]),
        "error: config missing.yaml: cannot be read: No such file or directory (os error 2)"
    );
    write("syntax.yaml", "listen: 127.0.0.1:1\nproviders:\n  - { name: a, api_key: ${X} }\n");
    let e = error_of(d, &["serve", "--config", "syntax.yaml"]);
    assert!(e.starts_with("error: config syntax.yaml: line 3, column "), "{e}");
    assert!(e.ends_with("(inside `{ … }`, quote a value that uses ${VAR}: \"${VAR}\")"), "{e}");
    write("env.yaml", SECRETS);
    assert_eq!(
        error_of(d, &["serve", "--config", "env.yaml"]),
        "error: config env.yaml: environment variables are not set: OPENAI_API_KEY (at providers[0].api_key), \
         GROQ_API_KEY (at providers[1].api_key)"
    );
    write("issuer.yaml", "keys:\n  issuers: [ { public_key: \"k4.public.AAAA\" } ]\n");
    assert_eq!(
        error_of(d, &["serve", "--config", "issuer.yaml"]),
        "error: config issuer.yaml: keys.issuers[0].public_key: invalid key material: a v4 public key is 32 bytes; \
         copy the whole line `gatekeeper keys gen-issuer` printed"
    );
    let issuer = gatekeeper::keys::SecretKey::generate();
    let claims = gatekeeper::keys::Claims { jti: "key-7".into(), ..Default::default() };
    let token = gatekeeper::keys::issue(&issuer, &claims, &gatekeeper::keys::Footer::for_key(&issuer.public_key()))
        .expect("token");
    write("k.yaml", &format!("keys:\n  issuers: [ {{ public_key: \"{}\" }} ]\n", issuer.public_key().to_paserk()));
    assert_eq!(
        error_of(d, &["keys", "revoke", &token, "--config", "k.yaml"]),
        "error: that is a token, not a key id; its key id is key-7: `gatekeeper keys revoke key-7`"
    );
}

#[test]
fn commands_that_need_no_secrets_do_not_ask_for_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let issuer = gatekeeper::keys::SecretKey::generate();
    let config = format!("{SECRETS}keys:\n  issuers: [ {{ public_key: \"{}\" }} ]\n", issuer.public_key().to_paserk());
    std::fs::write(d.join("gatekeeper.yaml"), config).expect("write");
    // An audit log to verify, written by a gateway that had its secrets.
    let mock = Mock::start(Mock::config("primary"));
    let gw = Gateway::start(&config_for(&[("primary", &mock, "")], ""), &["--no-auth", "--shards", "1"]);
    assert_eq!(chat(gw.addr, "m", false, "X-Request-Id: seen\r\n").status, 200);
    let data = gw.dir.path().join("data");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while crate::audit::file_messages(&data).iter().all(|(_, m)| m.is_empty()) {
        assert!(std::time::Instant::now() < deadline, "nothing shipped");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // `audit verify --dir` reads no config, though ./gatekeeper.yaml names unset secrets.
    let (ok, out, err) = gatekeeper(d, &["audit", "verify", "--dir", data.to_str().unwrap_or(".")]);
    assert!(ok, "{out}{err}");
    assert!(out.starts_with("ok: 1 instances, 1 entries"), "{out}");
    // `keys inspect --config` reads only `keys`.
    let claims = gatekeeper::keys::Claims { jti: "k1".into(), ..Default::default() };
    let token = gatekeeper::keys::issue(&issuer, &claims, &gatekeeper::keys::Footer::for_key(&issuer.public_key()))
        .expect("token");
    let (ok, out, err) = gatekeeper(d, &["keys", "inspect", &token, "--config", "gatekeeper.yaml"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("valid"), "{out}");
}

/// `gatekeeper keys revoke` on a running gateway's config: it edits the file, makes
/// the gateway reload (SIGHUP), says so, and the key is refused within 2 s while
/// another key's requests never fail.
#[test]
fn revoke_reloads_the_running_gateway_without_a_failed_request() {
    use std::time::{Duration, Instant};

    let mock = Mock::start(Mock::config("primary"));
    let issuer = gatekeeper::keys::SecretKey::generate();
    let mint = |jti: &str| {
        let claims = gatekeeper::keys::Claims { jti: jti.into(), ..Default::default() };
        gatekeeper::keys::issue(&issuer, &claims, &gatekeeper::keys::Footer::for_key(&issuer.public_key()))
            .expect("token")
    };
    let (steady, doomed) = (mint("steady"), mint("doomed"));
    let mut config = config_for(&[("primary", &mock, "")], "");
    config.push_str(&format!(
        "keys:\n  issuers: [ {{ public_key: \"{}\" }} ]\n  revoked: []\n",
        issuer.public_key().to_paserk()
    ));
    let gw = Gateway::start(&config, &["--shards", "2"]);
    let addr = gw.addr;
    let load =
        Load::start(addr, 4, chat_request(&chat_body("m", false), &format!("Authorization: Bearer {steady}\r\n")));
    let with = |token: &str| chat(addr, "m", false, &format!("Authorization: Bearer {token}\r\n"));
    assert_eq!(with(&doomed).status, 200);
    let config_path = gw.dir.path().join("gatekeeper.yaml");
    let started = Instant::now();
    let (done, out, err) =
        gatekeeper(gw.dir.path(), &["keys", "revoke", "doomed", "--config", config_path.to_str().unwrap_or("")]);
    assert!(done, "{out}{err}");
    assert!(out.contains("the running gateway (pid ") && out.contains("reloaded its config"), "{out}");
    let mut refused_in_a_row = 0;
    while refused_in_a_row < 6 {
        assert!(started.elapsed() < Duration::from_secs(2), "not refused within 2 s");
        let r = with(&doomed);
        if r.status == 401 {
            assert_eq!(r.json()["error"]["code"], "key_revoked");
            refused_in_a_row += 1;
        } else {
            refused_in_a_row = 0;
        }
    }
    let (ok, failed) = load.stop();
    assert_eq!(failed, 0, "{ok} ok");
    assert!(ok > 0);
}

/// SIGHUP applies a model change live (no failed request) and names what it refuses.
#[test]
fn sighup_applies_live_changes_and_names_the_rest() {
    let mock = Mock::start(Mock::config("primary"));
    let config = config_for(&[("primary", &mock, "")], "");
    let mut gw = Gateway::start(&config, &["--no-auth", "--shards", "1"]);
    let r = chat(gw.addr, "m", false, "");
    assert_eq!(r.json()["model"], "up-primary");
    let path = gw.dir.path().join("gatekeeper.yaml");
    let changed = config
        .replace("upstream_model: up-primary }", "upstream_model: up-next }")
        .replace("providers:\n", "limits: { body_bytes_max: 1000 }\nproviders:\n");
    std::fs::write(&path, changed).expect("rewrite config");
    let (ok, out, err) = gatekeeper(gw.dir.path(), &["reload", "--config", path.to_str().unwrap_or("")]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("applied models"), "{out}");
    assert!(out.contains("not applied (restart needed): limits"), "{out}");
    let r = chat(gw.addr, "m", false, "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["model"], "up-next", "the new deployment serves");
    assert!(gw.proc.log_text().contains("config change not applied live"), "named in the log");
    // A file that does not load changes nothing (SIGHUP straight to the process).
    std::fs::write(&path, "listen: [").expect("break config");
    gw.proc.signal("HUP");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !gw.proc.log_text().contains("config reload failed; nothing changed") {
        assert!(std::time::Instant::now() < deadline, "{}", gw.proc.log_text());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(chat(gw.addr, "m", false, "").json()["model"], "up-next");
    gw.proc.terminate();
    assert!(gw.proc.wait_exit(std::time::Duration::from_secs(10)).is_some());
}

/// A provider refusing the gateway's own key is an operator error: fail over, answer
/// 502 naming the provider and the cause (never the client's 401), log it, and show
/// the gateway as degraded on /readyz and in metrics.
#[test]
fn a_provider_refusing_the_gateways_key_is_not_the_clients_fault() {
    use crate::harness::hostile::{json_response, Hostile};
    let refusing = Hostile::always(&String::from_utf8_lossy(&json_response(
        401,
        "",
        r#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","code":"invalid_api_key"}}"#,
    )));
    let backup = Mock::start(Mock::config("backup"));
    let providers = format!(
        "providers:\n  - {{ name: bad, kind: openai_compatible, base_url: \"http://{}/v1\", api_key: sk-wrong }}\n{}",
        refusing.addr,
        provider("backup", &backup, "")
    );
    let models = "models:\n  - { name: m, provider: bad, upstream_model: x }\n  - { name: m, provider: backup, upstream_model: y }\n  - { name: only-bad, provider: bad, upstream_model: x }\nfailover_chain:\n  - { provider: bad, priority: 1 }\n  - { provider: backup, priority: 2 }\n";
    let gw = Gateway::start(&format!("{providers}{models}"), &["--no-auth", "--shards", "1"]);
    let r = chat(gw.addr, "m", false, "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-gatekeeper-provider"), Some("backup"), "failed over");
    let r = chat(gw.addr, "only-bad", false, "");
    assert_eq!(r.status, 502, "{}", r.text());
    let message = r.json()["error"]["message"].as_str().unwrap_or_default().to_string();
    assert!(message.contains("bad: HTTP 401: the provider refused the gateway's api_key"), "{message}");
    let ready = request(gw.addr, b"GET /readyz HTTP/1.1\r\nHost: gw\r\n\r\n").json();
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert!(ready["reasons"][0].as_str().is_some_and(|r| r.starts_with("bad: HTTP 401")), "{ready}");
    let m = request(gw.addr, b"GET /metrics HTTP/1.1\r\nHost: gw\r\n\r\n").text();
    assert!(m.contains("gatekeeper_provider_config_rejections_total{provider=\"bad\"} 2"), "{m}");
    let log = gw.proc.log_text();
    assert_eq!(log.matches("the provider refused the gateway's api_key").count(), 1, "logged once a minute: {log}");
}

/// A second gateway on an address the first already serves is refused (the kernel
/// would split connections between them through SO_REUSEPORT), saying what to do,
/// and creates nothing.
#[test]
fn a_second_gateway_on_the_same_address_is_refused() {
    let mock = Mock::start(Mock::config("primary"));
    let port = crate::audit::free_port();
    let listen = format!("127.0.0.1:{port}");
    let first_dir = tempfile::tempdir().expect("tempdir");
    let config = config_for(&[("primary", &mock, "")], "");
    std::fs::write(first_dir.path().join("gatekeeper.yaml"), &config).expect("write");
    let mut cmd = Command::new(gatekeeper_bin());
    cmd.args(["serve", "--no-auth", "--shards", "2", "--listen", &listen]).current_dir(first_dir.path());
    let (_first, addr) = Proc::spawn("first", cmd, first_dir.path().join("first.log"));
    assert_eq!(addr.port(), port);

    let second_dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(second_dir.path().join("gatekeeper.yaml"), &config).expect("write");
    let (ok, out, err) = gatekeeper(second_dir.path(), &["serve", "--no-auth", "--listen", &listen]);
    assert!(!ok, "{out}");
    assert_eq!(
        err.lines().last().unwrap_or_default(),
        format!(
            "error: listen: another process already listens on {listen} (is another gateway running?); \
             stop it or pick another address with --listen"
        )
    );
    assert!(!second_dir.path().join("data").exists(), "nothing created before the address is known free");
    // Every request still reaches the first gateway.
    for _ in 0..20 {
        assert_eq!(chat(addr, "m", false, "").status, 200);
    }
}
