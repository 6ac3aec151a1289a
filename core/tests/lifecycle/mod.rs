//! Start-up, configuration errors, TLS termination and graceful shutdown.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::harness::*;

#[test]
fn config_errors_name_the_path_and_stop_the_start() {
    let mock = Mock::start(Mock::config("primary"));
    let good = config_for(&[("primary", &mock, "")], "");
    let err = Gateway::start_failure(
        &good.replace("api_key: sk-primary", "api_key: sk-primary, colour: red"),
        &["--no-auth"],
    );
    assert!(err.contains("providers[0]") && err.contains("colour"), "{err}");
    let err = Gateway::start_failure(&good.replace(&format!("http://{}/v1", mock.addr), "not a url"), &["--no-auth"]);
    assert!(err.contains("providers[0].base_url: not a URL"), "{err}");
    let err = Gateway::start_failure(&format!("limits: {{ body_bytes_max: -1 }}\n{good}"), &["--no-auth"]);
    assert!(err.contains("limits.body_bytes_max"), "{err}");
    let err = Gateway::start_failure(&format!("{good}x: ${{GK_TEST_UNSET_VARIABLE}}\n"), &["--no-auth"]);
    assert!(err.contains("GK_TEST_UNSET_VARIABLE"), "{err}");
}

#[test]
fn without_keys_the_gateway_refuses_unless_no_auth() {
    let mock = Mock::start(Mock::config("primary"));
    let config = config_for(&[("primary", &mock, "")], "");
    let err = Gateway::start_failure(&config, &[]);
    assert!(err.contains("keys") && err.contains("--no-auth"), "{err}");
    let gw = Gateway::start(&config, &["--no-auth"]);
    assert!(gw.proc.log_text().contains("AUTHENTICATION IS DISABLED"));
}

#[test]
fn sigterm_drains_in_flight_streams_then_exits_zero() {
    let mock = Mock::start(Mock::config("primary").ttft_ms(50).token_ms(100).tokens(10));
    let mut gw = Gateway::start(&config_for(&[("primary", &mock, "")], "drain_timeout_ms: 5000\n"), &["--no-auth"]);
    let mut s = connect(gw.addr);
    s.write_all(&chat_request(&chat_body("m", true), "")).expect("write");
    // Wait for the head, then ask the gateway to stop mid-stream.
    let mut first = [0u8; 12];
    s.read_exact(&mut first).expect("head");
    assert_eq!(&first, b"HTTP/1.1 200");
    gw.proc.terminate();
    let started = Instant::now();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    let body = String::from_utf8_lossy(&rest);
    assert!(body.contains("data: [DONE]"), "in-flight stream was cut: {body}");
    assert!(body.ends_with("0\r\n\r\n"), "stream not terminated cleanly");
    let status = gw.proc.wait_exit(Duration::from_secs(10)).expect("exited");
    assert!(status.success(), "exit status {status:?}");
    assert!(started.elapsed() < Duration::from_secs(8));
    assert!(std::net::TcpStream::connect(gw.addr).is_err(), "still accepting after exit");
}

#[test]
fn drain_timeout_bounds_shutdown() {
    let mock = Mock::start(Mock::config("primary").fault(Fault::Stall));
    let mut gw = Gateway::start(&config_for(&[("primary", &mock, "")], "drain_timeout_ms: 300\n"), &["--no-auth"]);
    let mut s = connect(gw.addr);
    s.write_all(&chat_request(&chat_body("m", false), "")).expect("write");
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    gw.proc.terminate();
    let status = gw.proc.wait_exit(Duration::from_secs(10)).expect("exited");
    assert!(status.success());
    assert!(started.elapsed() < Duration::from_secs(3), "drain took {:?}", started.elapsed());
}

#[test]
fn official_openai_sdk_normal_and_streamed() {
    let mock = Mock::start(Mock::config("primary"));
    let gw = Gateway::start(&config_for(&[("primary", &mock, "")], ""), &["--no-auth"]);
    run_openai_sdk(gw.addr, "any-key-while-auth-is-off", None);
}

#[test]
#[cfg(feature = "demo")]
fn demo_prints_a_key_that_works() {
    use std::process::{Command, Stdio};
    let mut child = Command::new(gatekeeper_bin())
        .args(["demo", "--listen", "127.0.0.1:0", "--ttft-ms", "0", "--token-ms", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn demo");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let (mut addr, mut key) = (None, None);
    for line in lines.by_ref() {
        let line = line.expect("line");
        if let Some(a) = line.split("listening on ").nth(1) {
            addr = a.split_whitespace().next().and_then(|a| a.parse::<std::net::SocketAddr>().ok());
        }
        if let Some(k) = line.trim().strip_prefix("export GATEKEEPER_KEY=") {
            key = Some(k.to_string());
        }
        if line.contains("Ctrl-C") {
            break;
        }
    }
    let (addr, key) = (addr.expect("address printed"), key.expect("key printed"));
    for stream in [false, true] {
        let r = chat(addr, "gpt-4o-mini", stream, &format!("Authorization: Bearer {key}\r\n"));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-gatekeeper-provider"), Some("primary"));
    }
    let r = chat(addr, "gpt-4o-mini", false, "X-Mock-Fault: primary=503\r\nAuthorization: Bearer wrong\r\n");
    assert_eq!(r.status, 401);
    let r = chat(addr, "gpt-4o-mini", false, &format!("X-Mock-Fault: primary=503\r\nAuthorization: Bearer {key}\r\n"));
    assert_eq!(r.header("x-gatekeeper-provider"), Some("backup"), "demo fails over to the backup");
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let status = child.wait().expect("wait");
    assert!(status.success(), "{status:?}");
}

#[test]
fn audit_can_be_turned_off() {
    let mock = Mock::start(Mock::config("primary"));
    let gw = Gateway::start(&config_for(&[("primary", &mock, "")], "audit: { enabled: false }\n"), &["--no-auth"]);
    assert_eq!(chat(gw.addr, "m", false, "").status, 200);
    assert!(!gw.dir.path().join("data").exists(), "nothing written with audit off");
    assert!(gw.proc.log_text().contains("audit.enabled is false"));
}
