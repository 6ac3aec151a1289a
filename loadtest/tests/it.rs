//! Integration tests: start the real `gk-load mock` binary on port 0 and talk raw HTTP.

mod harness {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{SocketAddr, TcpStream};
    use std::process::{Child, Command, Stdio};
    use std::time::Duration;

    /// A running mock; killed on drop.
    pub struct Mock {
        child: Child,
        pub addr: SocketAddr,
    }

    impl Mock {
        pub fn start(args: &[&str]) -> Mock {
            let mut child = Command::new(env!("CARGO_BIN_EXE_gk-load"))
                .arg("mock")
                .args(["--listen", "127.0.0.1:0"])
                .args(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("spawn gk-load");
            let stdout = child.stdout.take().expect("stdout");
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).expect("read line");
            let addr = line
                .trim()
                .strip_prefix("listening on ")
                .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
                .parse()
                .expect("addr");
            Mock { child, addr }
        }

        pub fn connect(&self) -> TcpStream {
            let s = TcpStream::connect(self.addr).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
            s
        }

        /// Sends one request with `Connection: close` and returns the raw response.
        pub fn raw(&self, request: &str) -> Vec<u8> {
            let mut s = self.connect();
            s.write_all(request.as_bytes()).expect("write");
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out);
            out
        }

        pub fn post(&self, path: &str, headers: &[(&str, &str)], body: &str) -> Response {
            let mut req = format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            );
            for (k, v) in headers {
                req.push_str(&format!("{k}: {v}\r\n"));
            }
            req.push_str("\r\n");
            req.push_str(body);
            Response::parse(&self.raw(&req))
        }

        pub fn get(&self, path: &str) -> Response {
            Response::parse(&self.raw(&format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")))
        }

        pub fn child_id(&self) -> u32 {
            self.child.id()
        }

        /// Waits up to 5 s for the process to exit on its own; its exit code.
        pub fn wait_exit(&mut self) -> Option<i32> {
            for _ in 0..100 {
                if let Ok(Some(status)) = self.child.try_wait() {
                    return status.code();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            None
        }

        pub fn stats(&self) -> serde_json::Value {
            self.get("/__mock/stats").json()
        }
    }

    impl Drop for Mock {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// A parsed response; chunked bodies are decoded, and `complete` says whether the
    /// terminating zero-length chunk arrived.
    pub struct Response {
        pub status: u16,
        pub head: String,
        pub body: Vec<u8>,
        pub complete: bool,
    }

    impl Response {
        pub fn parse(raw: &[u8]) -> Response {
            let split = raw
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(raw)));
            let head = String::from_utf8_lossy(&raw[..split]).to_lowercase();
            let status = head[9..12].parse().expect("status");
            let rest = &raw[split + 4..];
            let (body, complete) =
                if head.contains("transfer-encoding: chunked") { decode_chunked(rest) } else { (rest.to_vec(), true) };
            Response { status, head, body, complete }
        }

        pub fn header(&self, name: &str) -> Option<String> {
            self.head.lines().find_map(|l| l.strip_prefix(&format!("{name}: ")).map(|v| v.trim().to_string()))
        }

        pub fn json(&self) -> serde_json::Value {
            serde_json::from_slice(&self.body)
                .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&self.body)))
        }

        pub fn text(&self) -> String {
            String::from_utf8_lossy(&self.body).into_owned()
        }
    }

    fn decode_chunked(mut rest: &[u8]) -> (Vec<u8>, bool) {
        let mut body = Vec::new();
        loop {
            let Some(end) = rest.windows(2).position(|w| w == b"\r\n") else {
                return (body, false);
            };
            let size = usize::from_str_radix(std::str::from_utf8(&rest[..end]).expect("utf8"), 16).expect("hex");
            if size == 0 {
                return (body, true);
            }
            let data = &rest[end + 2..];
            if data.len() < size + 2 {
                body.extend_from_slice(&data[..data.len().min(size)]);
                return (body, false);
            }
            body.extend_from_slice(&data[..size]);
            rest = &data[size + 2..];
        }
    }
}

use harness::{Mock, Response};
use serde_json::Value;
use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};

const CHAT: &str = r#"{"model":"gpt-test","messages":[{"role":"user","content":"hello world, twenty chars"}]}"#;

fn sse_data(text: &str) -> Vec<String> {
    text.split("\n\n").filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: "))).map(str::to_string).collect()
}

#[test]
fn openai_non_stream_shape_and_usage() {
    let m = Mock::start(&["--tokens", "5"]);
    let r = m.post("/v1/chat/completions", &[], CHAT);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type").as_deref(), Some("application/json"));
    let v = r.json();
    assert!(v["id"].as_str().expect("id").starts_with("chatcmpl-"));
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "gpt-test");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    let content = v["choices"][0]["message"]["content"].as_str().expect("content");
    assert_eq!(content.split_whitespace().count(), 5);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let u = &v["usage"];
    assert_eq!(u["prompt_tokens"], 7, "25 chars / 4 rounded up");
    assert_eq!(u["completion_tokens"], 5);
    assert_eq!(u["total_tokens"], 12);

    // Also without /v1, and max_tokens cuts with "length".
    let body = r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"abcd"}]}],"max_tokens":2}"#;
    let v = m.post("/chat/completions", &[], body).json();
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 2);
    assert_eq!(v["usage"]["prompt_tokens"], 1);
}

#[test]
fn openai_stream_shape_and_done() {
    let m = Mock::start(&["--tokens", "3"]);
    let body = r#"{"model":"gpt-s","messages":[{"role":"user","content":"abcdefgh"}],"stream":true,"stream_options":{"include_usage":true}}"#;
    let r = m.post("/v1/chat/completions", &[], body);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type").as_deref(), Some("text/event-stream"));
    assert!(r.complete, "terminating chunk");
    let data = sse_data(&r.text());
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> =
        data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).expect("chunk json")).collect();
    assert_eq!(chunks.len(), 5, "3 tokens + finish + usage");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk" && c["model"] == "gpt-s"));
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text.split_whitespace().count(), 3);
    assert_eq!(chunks[3]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[4]["choices"].as_array().map(Vec::len), Some(0));
    assert_eq!(chunks[4]["usage"]["completion_tokens"], 3);
    assert_eq!(chunks[4]["usage"]["prompt_tokens"], 2);
    assert_eq!(chunks[4]["usage"]["total_tokens"], 5);
}

#[test]
fn stream_events_arrive_as_emitted() {
    let m = Mock::start(&["--tokens", "4", "--ttft-ms", "100", "--token-ms", "100"]);
    let body = r#"{"model":"m","messages":[],"stream":true}"#;
    let mut s = m.connect();
    let req = format!("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    s.write_all(req.as_bytes()).expect("write");
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    let mut seen = String::new();
    // Wait for the first token chunk; the rest must not have arrived yet.
    while !seen.contains("\"role\"") {
        let n = s.read(&mut buf).expect("read");
        assert!(n > 0);
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let first = started.elapsed();
    assert!(first >= Duration::from_millis(90), "ttft {first:?}");
    assert!(!seen.contains("[DONE]"), "all arrived at once");
    while !seen.contains("[DONE]") {
        let n = s.read(&mut buf).expect("read");
        assert!(n > 0);
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(started.elapsed() >= Duration::from_millis(390), "{:?}", started.elapsed());
}

#[test]
fn groq_and_deepseek_extras() {
    let g = Mock::start(&["--mode", "groq"]);
    let v = g.post("/openai/v1/chat/completions", &[], CHAT);
    assert_eq!(v.status, 404, "groq path prefix belongs in base_url");
    let v = g.post("/v1/chat/completions", &[], CHAT).json();
    assert!(v["x_groq"]["id"].is_string());
    assert!(v["system_fingerprint"].is_string());
    assert!(v["usage"]["queue_time"].is_number());
    let d = Mock::start(&["--mode", "deepseek"]);
    let v = d.post("/chat/completions", &[], CHAT).json();
    assert_eq!(v["usage"]["prompt_cache_hit_tokens"], 0);
    assert_eq!(v["usage"]["prompt_cache_miss_tokens"], v["usage"]["prompt_tokens"]);
}

const ANTHROPIC: &str =
    r#"{"model":"claude-x","max_tokens":3,"system":"abcd","messages":[{"role":"user","content":"abcd"}]}"#;
const AV: (&str, &str) = ("anthropic-version", "2023-06-01");

#[test]
fn anthropic_message_and_errors() {
    let m = Mock::start(&["--mode", "anthropic", "--api-key", "ak", "--tokens", "8"]);
    let r = m.post("/v1/messages", &[AV, ("x-api-key", "ak")], ANTHROPIC);
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["type"], "message");
    assert_eq!(v["model"], "claude-x");
    assert_eq!(v["content"][0]["type"], "text");
    assert_eq!(v["stop_reason"], "max_tokens");
    assert_eq!(v["usage"]["input_tokens"], 2);
    assert_eq!(v["usage"]["output_tokens"], 3);

    let r = m.post("/v1/messages", &[AV, ("x-api-key", "wrong")], ANTHROPIC);
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["type"], "error");
    assert_eq!(r.json()["error"]["type"], "authentication_error");
    let r = m.post("/v1/messages", &[AV, ("x-api-key", "ak"), ("X-Mock-Fault", "429")], ANTHROPIC);
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"]["type"], "rate_limit_error");
    let r = m.post("/v1/messages", &[AV, ("x-api-key", "ak")], "{nope");
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    assert_eq!(m.stats()["last_authorization"], "ak");
}

#[test]
fn anthropic_stream_events() {
    let m = Mock::start(&["--mode", "anthropic", "--tokens", "2"]);
    let body = ANTHROPIC.replace("\"max_tokens\":3", "\"max_tokens\":30,\"stream\":true");
    let r = m.post("/v1/messages", &[AV], &body);
    assert_eq!(r.status, 200);
    assert!(r.complete);
    let text = r.text();
    let names: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let data: Vec<Value> = sse_data(&text).iter().map(|d| serde_json::from_str(d).expect("json")).collect();
    assert_eq!(data[0]["message"]["usage"]["input_tokens"], 2);
    assert_eq!(data[6]["delta"]["stop_reason"], "end_turn");
    assert_eq!(data[6]["usage"]["output_tokens"], 2);
}

#[test]
fn fault_429_500_503() {
    let m = Mock::start(&["--retry-after-s", "7"]);
    let r = m.post("/v1/chat/completions", &[("X-Mock-Fault", "429")], CHAT);
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after").as_deref(), Some("7"));
    assert_eq!(r.json()["error"]["code"], "rate_limit_exceeded");
    let r = m.post("/v1/chat/completions", &[("X-Mock-Fault", "429"), ("X-Mock-Retry-After", "3")], CHAT);
    assert_eq!(r.header("retry-after").as_deref(), Some("3"));
    for code in [500u16, 503] {
        let r = m.post("/v1/chat/completions", &[("X-Mock-Fault", &code.to_string())], CHAT);
        assert_eq!(r.status, code);
        assert_eq!(r.json()["error"]["type"], "server_error");
    }
    let s = m.stats();
    assert_eq!(s["faults"]["429"], 2);
    assert_eq!(s["faults"]["500"], 1);
    assert_eq!(s["faults"]["503"], 1);

    let flagged = Mock::start(&["--fault", "503"]);
    assert_eq!(flagged.post("/v1/chat/completions", &[], CHAT).status, 503);
    let r = flagged.post("/v1/chat/completions", &[("X-Mock-Fault", "none")], CHAT);
    assert_eq!(r.status, 200, "header overrides flag");
}

#[test]
fn fault_reset_is_rst() {
    let m = Mock::start(&["--fault", "reset"]);
    let mut s = m.connect();
    let req = format!("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{CHAT}", CHAT.len());
    s.write_all(req.as_bytes()).expect("write");
    let mut buf = [0u8; 1024];
    match s.read(&mut buf) {
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset),
        Ok(n) => assert_eq!(n, 0, "no answer bytes"),
    }
}

#[test]
fn fault_stall_never_answers() {
    let m = Mock::start(&[]);
    let mut s = m.connect();
    s.set_read_timeout(Some(Duration::from_millis(500))).expect("timeout");
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Mock-Fault: stall\r\nContent-Length: {}\r\n\r\n{CHAT}",
        CHAT.len()
    );
    s.write_all(req.as_bytes()).expect("write");
    let mut buf = [0u8; 1024];
    let e = s.read(&mut buf).expect_err("no answer within 500 ms");
    assert!(matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut), "{e}");
    assert_eq!(m.stats()["faults"]["stall"], 1);
}

#[test]
fn fault_cut_stream_and_body() {
    let m = Mock::start(&["--tokens", "10"]);
    let body = r#"{"model":"m","messages":[],"stream":true}"#;
    let r = m.post("/v1/chat/completions", &[("X-Mock-Fault", "cut"), ("X-Mock-Cut-After", "3")], body);
    assert_eq!(r.status, 200);
    assert!(!r.complete, "no terminating chunk");
    let data = sse_data(&r.text());
    assert_eq!(data.len(), 3);
    assert!(!r.text().contains("[DONE]"));

    let r = m.post("/v1/chat/completions", &[("X-Mock-Fault", "cut")], CHAT);
    let len: usize = r.header("content-length").expect("cl").parse().expect("n");
    assert!(r.body.len() < len, "short body");
}

#[test]
fn named_target_header() {
    let m = Mock::start(&["--name", "secondary"]);
    let h = [("X-Mock-Fault", "primary=500,secondary=503")];
    assert_eq!(m.post("/v1/chat/completions", &h, CHAT).status, 503);
    let h = [("X-Mock-Fault", "primary=500")];
    assert_eq!(m.post("/v1/chat/completions", &h, CHAT).status, 200);
    let h = [("X-Mock-Fault", "primary=500,secondary=none")];
    assert_eq!(m.post("/v1/chat/completions", &h, CHAT).status, 200);
    let h = [("X-Mock-Tokens", "primary=1,secondary=4")];
    let v = m.post("/v1/chat/completions", &h, CHAT).json();
    assert_eq!(v["usage"]["completion_tokens"], 4);
    let h = [("X-Mock-Fault", "bogus")];
    assert_eq!(m.post("/v1/chat/completions", &h, CHAT).status, 400);
}

#[test]
fn api_key_required() {
    let m = Mock::start(&["--api-key", "sk-good"]);
    let r = m.post("/v1/chat/completions", &[], CHAT);
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["code"], "invalid_api_key");
    let r = m.post("/v1/chat/completions", &[("Authorization", "Bearer sk-bad")], CHAT);
    assert_eq!(r.status, 401);
    let r = m.post("/v1/chat/completions", &[("Authorization", "Bearer sk-good")], CHAT);
    assert_eq!(r.status, 200);
}

#[test]
fn chunked_request_body_and_pipelining() {
    let m = Mock::start(&[]);
    let (a, b) = CHAT.split_at(10);
    let one = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
        a.len(),
        b.len()
    );
    let two = format!(
        "POST /chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{CHAT}",
        CHAT.len()
    );
    let raw = m.raw(&format!("{one}{two}"));
    let text = String::from_utf8_lossy(&raw);
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2, "{text}");
    assert_eq!(text.matches("\"model\":\"gpt-test\"").count(), 2);
}

#[test]
fn bad_input_errors() {
    let m = Mock::start(&[]);
    let r = m.post("/v1/chat/completions", &[], "{not json");
    assert_eq!(r.status, 400);
    let e = &r.json()["error"];
    assert_eq!(e["type"], "invalid_request_error");
    assert!(e["param"].is_null() && e["code"].is_null() && e["message"].is_string());
    let huge = format!("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", 32 * 1024 * 1024);
    assert_eq!(Response::parse(&m.raw(&huge)).status, 413);
    let big_head = format!("GET /v1/models HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(70_000));
    let r = Response::parse(&m.raw(&big_head));
    assert_eq!(r.status, 431);
    assert!(r.json()["error"]["message"].is_string());
    assert_eq!(m.get("/nope").status, 404);
    assert_eq!(m.get("/v1/models").json()["object"], "list");
}

#[test]
fn stats_and_reset() {
    let m = Mock::start(&["--name", "alpha"]);
    let body = CHAT.replace("gpt-test", "rewritten-model");
    m.post("/v1/chat/completions", &[("Authorization", "Bearer gateway-key")], &body);
    m.post("/v1/chat/completions", &[("X-Mock-Fault", "500")], CHAT);
    let s = m.stats();
    assert_eq!(s["name"], "alpha");
    assert_eq!(s["requests"], 2);
    assert_eq!(s["faults"]["500"], 1);
    assert_eq!(s["last_model"], "gpt-test");
    assert!(s["last_authorization"].is_null());
    m.post("/v1/chat/completions", &[("Authorization", "Bearer gateway-key")], &body);
    let s = m.stats();
    assert_eq!(s["last_model"], "rewritten-model");
    assert_eq!(s["last_authorization"], "Bearer gateway-key");
    assert_eq!(m.post("/__mock/reset", &[], "").status, 200);
    let s = m.stats();
    assert_eq!(s["requests"], 0);
    assert_eq!(s["faults"]["500"], 0);
}

#[test]
fn schedule_file_errors_and_phases() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "phases:\n  - { for_s: 10, fault: \"429\" }\n  - { for_s: 5, fault: \"418\" }\n")
        .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gk-load"))
        .args(["mock", "--listen", "127.0.0.1:0", "--schedule"])
        .arg(&bad)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("phases[1].fault") && err.contains("line 3"), "{err}");

    let good = dir.path().join("good.yaml");
    std::fs::write(&good, "repeat: true\nphases:\n  - { for_s: 3600, fault: \"503\", rate: 1.0 }\n").expect("write");
    let m = Mock::start(&["--schedule", good.to_str().expect("utf8")]);
    assert_eq!(m.post("/v1/chat/completions", &[], CHAT).status, 503);
}

#[test]
fn latency_flags_and_headers() {
    let m = Mock::start(&["--latency-ms", "150"]);
    let t = Instant::now();
    assert_eq!(m.post("/v1/chat/completions", &[], CHAT).status, 200);
    assert!(t.elapsed() >= Duration::from_millis(150));
    let t = Instant::now();
    m.post("/v1/chat/completions", &[("X-Mock-Latency-Ms", "0")], CHAT);
    assert!(t.elapsed() < Duration::from_millis(140));
}

#[test]
fn sigterm_exits_zero() {
    let mut m = Mock::start(&[]);
    let pid = m.child_id();
    let status = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("kill");
    assert!(status.success());
    assert_eq!(m.wait_exit(), Some(0));
}

#[test]
fn pause_holds_requests_then_answers() {
    let m = Mock::start(&["--pause-every-s", "1", "--pause-s", "0.6"]);
    // The server's clock starts just before it prints; 1.1 s later it is mid-pause.
    std::thread::sleep(Duration::from_millis(1100));
    let t = Instant::now();
    assert_eq!(m.post("/v1/chat/completions", &[], CHAT).status, 200);
    assert!(t.elapsed() >= Duration::from_millis(200), "{:?}", t.elapsed());
    assert!(t.elapsed() < Duration::from_millis(1000), "{:?}", t.elapsed());
}

#[test]
fn lognormal_ttft_and_token_rate_flags() {
    let m = Mock::start(&["--ttft-dist", "lognormal:50:0.1", "--tokens-per-s", "100", "--tokens", "5"]);
    let t = Instant::now();
    assert_eq!(m.post("/v1/chat/completions", &[], CHAT).status, 200);
    // ~50 ms TTFT + 5 tokens at 10 ms each.
    assert!(t.elapsed() >= Duration::from_millis(80), "{:?}", t.elapsed());
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_gk-load"))
        .args(["mock", "--listen", "127.0.0.1:0", "--ttft-dist", "normal:1"])
        .output()
        .expect("run");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--ttft-dist"));
}

/// `gk-load run` end to end against the real mock binary.
mod run {
    use super::harness::Mock;
    use gatekeeper_mock::Pauses;
    use serde_json::Value;
    use std::path::Path;
    use std::process::Command;
    use std::time::{Duration, SystemTime};

    /// Runs `gk-load run --url http://ADDR/v1/chat/completions ARGS --json F`; returns
    /// the parsed report.
    fn run_load(mock: &Mock, args: &[&str]) -> Value {
        let dir = tempfile::tempdir().expect("tempdir");
        let json = dir.path().join("r.json");
        let out = Command::new(env!("CARGO_BIN_EXE_gk-load"))
            .arg("run")
            .args(["--url", &format!("http://{}/v1/chat/completions", mock.addr)])
            .args(args)
            .arg("--json")
            .arg(&json)
            .output()
            .expect("spawn gk-load run");
        assert!(out.status.success(), "gk-load run failed: {}", String::from_utf8_lossy(&out.stderr));
        let text = std::fs::read_to_string(&json).expect("report");
        serde_json::from_str(&text).expect("json")
    }

    /// Timing-sensitive runs take turns: on a 2-core machine, two of them at once
    /// measure each other rather than the generator.
    fn timing_lock() -> std::sync::MutexGuard<'static, ()> {
        static TIMING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        TIMING.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn pct_ms(report: &Value, p: f64) -> f64 {
        let pts = report["latency_us"]["percentiles"].as_array().expect("spectrum");
        let pt =
            pts.iter().find(|x| (x["p"].as_f64().unwrap_or(-1.0) - p).abs() < 1e-9).expect("percentile in spectrum");
        pt["us"].as_f64().expect("us") / 1000.0
    }

    fn unix_ms(t: SystemTime) -> u64 {
        t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
    }

    /// Coordinated omission, shown both ways.
    ///
    /// The mock stops answering for P = 0.4 s every T = 4 s. At a fixed arrival rate R,
    /// a fraction P/T = 10 % of requests arrive inside a pause; one arriving φ into the
    /// pause is answered at its end, so it sees latency P - φ (φ uniform on [0, P)).
    /// Over whole periods, P(latency > x) = (P - x) / T for 0 <= x <= P, so the q-th
    /// quantile is x_q = P - (1 - q)·T: p99 = 0.4 - 0.01·4 = 0.36 s (p90 sits at the
    /// pause's edge, ~0). The run need not start at a period boundary, so the test
    /// computes the same quantile numerically from the mock's own `Pauses::hold` at
    /// the run's actual offset from the mock's start (known to a few ms), which equals
    /// 0.36 s whenever the run holds exactly two whole pauses.
    ///
    /// A closed loop of C connections instead stalls all C at once and sends nothing
    /// until the pause ends: only C requests per pause see the stall, out of thousands,
    /// so its p99 stays at the base latency — two orders of magnitude too optimistic.
    #[test]
    fn pauses_show_in_open_loop_p99_but_not_in_closed_loop() {
        let _serial = timing_lock();
        let (every, pause) = (4.0, 0.4);
        let mock_up = SystemTime::now();
        let mock = Mock::start(&["--pause-every-s", "4", "--pause-s", "0.4"]);
        // Closed loop first: 4.5 s covers the first pause at [4 s, 4.4 s).
        let closed = run_load(&mock, &["--connections", "16", "--duration", "4.5s"]);
        // Open loop next: it starts ~4.6 s in, so its 8 s hold the pauses at 8 s and 12 s.
        let (rate, secs) = (1000.0, 8.0);
        let open = run_load(&mock, &["--rate", "1000", "--duration", "8s", "--inflight-max", "1024"]);

        let offset_s = (open["started_unix_ms"].as_u64().expect("start") - unix_ms(mock_up)) as f64 / 1000.0;
        let pauses = Pauses { every: Duration::from_secs_f64(every), pause: Duration::from_secs_f64(pause) };
        let n = (rate * secs) as usize;
        let mut holds: Vec<f64> = (0..n)
            .map(|k| {
                let t = Duration::from_secs_f64(offset_s + k as f64 / rate);
                pauses.hold(t).as_secs_f64() * 1000.0
            })
            .collect();
        holds.sort_by(|a, b| a.total_cmp(b));
        let expected_ms = holds[(n as f64 * 0.99).ceil() as usize - 1];
        let closed_form_ms = (pause - 0.01 * every) * 1000.0;

        let open_p99 = pct_ms(&open, 99.0);
        let closed_p99 = pct_ms(&closed, 99.0);
        eprintln!(
            "offset {offset_s:.3} s; expected p99 {expected_ms:.1} ms (closed form {closed_form_ms:.1}); open p99 {open_p99:.1} ms; closed p99 {closed_p99:.3} ms"
        );
        assert_eq!(open["requests"]["completed"].as_u64(), Some(n as u64));
        assert_eq!(open["errors"]["timeout"].as_u64(), Some(0));
        // Tolerance: base latency and timer slack add a few ms; 10 % + 10 ms covers a
        // noisy shared machine while still failing if pauses were missed (p99 ~ 0) or
        // double-counted.
        assert!(
            (open_p99 - expected_ms).abs() <= expected_ms * 0.10 + 10.0,
            "open-loop p99 {open_p99} ms vs expected {expected_ms} ms"
        );
        assert!(
            closed_p99 * 10.0 < open_p99,
            "closed-loop p99 {closed_p99} ms should be far below open-loop {open_p99} ms"
        );
        assert!(
            closed["latency_us"]["max_us"].as_u64().unwrap_or(0) > 100_000,
            "closed loop did see the pause in its max"
        );
    }

    fn rate_accuracy(rate: u64, secs: u64, engine: &str) {
        let _serial = timing_lock();
        let mock = Mock::start(&[]);
        let r = run_load(&mock, &["--rate", &rate.to_string(), "--duration", &format!("{secs}s"), "--engine", engine]);
        let completed = r["requests"]["completed"].as_u64().expect("completed");
        let achieved = r["rate_achieved"].as_f64().expect("rate");
        eprintln!(
            "{engine}: target {rate}/s for {secs} s: completed {completed}, achieved {achieved:.1}/s, gen {:.2} µs/req, latency p99 {:.3} ms",
            r["cpu"]["generator_us_per_request"], pct_ms(&r, 99.0)
        );
        assert_eq!(r["errors"]["connect"].as_u64(), Some(0));
        // Every scheduled slot was sent (`completed`, below) is the generator's contract;
        // the wall-clock rate also counts stalls of a shared 2-core box, so it only
        // guards against gross errors here (the 10,000/s accuracy run is by hand).
        assert!((achieved - rate as f64).abs() / rate as f64 <= 0.10, "achieved {achieved}/s vs {rate}/s");
        assert!(
            (completed as f64 - (rate * secs) as f64).abs() <= (rate * secs) as f64 * 0.01,
            "completed {completed}"
        );
    }

    /// `--pace-window 2ms` at 2000/s: each pacer wake-up waits for the slots due within
    /// 2 ms (about 4 more), so the first of each batch leaves ~2 ms late and send lag p50
    /// is ~1 ms; the rate is still kept and latency still counts from each slot.
    #[test]
    fn pace_window_batches_slots_and_shows_in_send_lag() {
        let _serial = timing_lock();
        let mock = Mock::start(&[]);
        let r = run_load(&mock, &["--rate", "2000", "--duration", "2s", "--pace-window", "2ms"]);
        assert_eq!(r["config"]["pace_window_us"], 2000);
        assert_eq!(r["requests"]["completed"], 4000);
        let lag = |p: f64| {
            let pts = r["send_lag_us"]["percentiles"].as_array().expect("spectrum");
            pts.iter().find(|x| (x["p"].as_f64().unwrap_or(-1.0) - p).abs() < 1e-9).expect("p")["us"]
                .as_f64()
                .expect("us")
        };
        assert!(lag(50.0) >= 300.0, "send lag p50 {} µs: slots were not held for the window", lag(50.0));
        assert!(pct_ms(&r, 50.0) * 1000.0 >= lag(50.0), "latency includes the send lag");
        let achieved = r["rate_achieved"].as_f64().expect("rate");
        assert!((achieved - 2000.0).abs() / 2000.0 <= 0.10, "achieved {achieved}/s");
        // A window of 0 wakes for every slot.
        let z = run_load(&mock, &["--rate", "500", "--requests", "50", "--pace-window", "0"]);
        assert_eq!(z["config"]["pace_window_us"], 0);
        assert_eq!(z["requests"]["completed"], 50);
    }

    #[test]
    fn rate_is_accurate_at_2000_per_s() {
        rate_accuracy(2000, 3, "auto");
    }

    #[test]
    fn rate_is_accurate_at_2000_per_s_with_each_engine() {
        for engine in ENGINES {
            rate_accuracy(2000, 3, engine);
        }
    }

    /// The issue's number; run by hand (`cargo test --release -- --ignored`).
    #[test]
    #[ignore]
    fn rate_is_accurate_at_10000_per_s_for_10_s() {
        rate_accuracy(10_000, 10, "auto");
    }

    /// Both engines run the same test bodies below; `auto` (the default) picks uring
    /// where the kernel allows it, so the tests that pass no `--engine` cover it too.
    const ENGINES: [&str; 2] = ["uring", "tokio"];

    #[test]
    fn streams_record_ttfb_and_chunk_gaps() {
        let _serial = timing_lock();
        let mock = Mock::start(&["--ttft-ms", "20", "--token-ms", "5", "--tokens", "4"]);
        for engine in ENGINES {
            let r = run_load(&mock, &["--rate", "50", "--requests", "25", "--stream", "--engine", engine]);
            assert!(r["config"]["engine"].as_str().unwrap_or("").starts_with(engine), "{engine}");
            assert_eq!(r["requests"]["ok"].as_u64(), Some(25), "{engine}");
            assert_eq!(r["ttfb_us"]["count"].as_u64(), Some(25), "{engine}");
            let ttfb_p50 = r["ttfb_us"]["percentiles"][5]["us"].as_u64().expect("p50");
            assert_eq!(r["ttfb_us"]["percentiles"][5]["p"].as_f64(), Some(50.0));
            assert!((20_000..60_000).contains(&ttfb_p50), "{engine}: ttfb p50 {ttfb_p50} µs");
            // The median stream shows its 5 ms gaps; a single stream can arrive in one read,
            // or with one long gap, when the generator is descheduled during it (debug build,
            // shared box), so the bounds are on the median, not the extremes.
            assert_eq!(r["chunk_gap_max_us"]["percentiles"][5]["p"].as_f64(), Some(50.0));
            let gap_p50 = r["chunk_gap_max_us"]["percentiles"][5]["us"].as_u64().expect("gap");
            assert!(gap_p50 >= 4_000, "{engine}: token gaps of 5 ms, got max-gap p50 {gap_p50} µs");
            assert!(gap_p50 < 30_000, "{engine}: token gaps of 5 ms, got max-gap p50 {gap_p50} µs");
            let lat_min = r["latency_us"]["min_us"].as_u64().expect("lat");
            assert!(lat_min >= 35_000, "{engine}: 20 ms + 3 x 5 ms, got {lat_min} µs");
        }
    }

    /// The default engine is uring where the kernel allows a ring, and says so.
    #[test]
    fn default_engine_is_reported() {
        let mock = Mock::start(&[]);
        let r = run_load(&mock, &["--connections", "2", "--requests", "10"]);
        let engine = r["config"]["engine"].as_str().expect("engine").to_string();
        assert!(engine.starts_with("uring") || engine == "tokio", "{engine}");
        assert_eq!(r["requests"]["ok"].as_u64(), Some(10));
    }

    /// `--threads 2` with the uring engine: two rings share the connections, the
    /// schedule (slot k on thread k mod 2) and the `--requests` budget exactly.
    #[test]
    fn uring_threads_share_the_load() {
        let mock = Mock::start(&[]);
        let r = run_load(&mock, &["--rate", "1000", "--requests", "101", "--threads", "2", "--engine", "uring"]);
        assert_eq!(r["requests"]["ok"].as_u64(), Some(101));
        let achieved = r["rate_achieved"].as_f64().expect("rate");
        // Two threads each running the whole schedule would send at twice the rate (and
        // twice the requests, checked above). The run lasts 0.1 s, so a stall of this
        // shared machine moves the wall-clock rate a lot: the bound only tells "one
        // schedule" from "two".
        assert!((500.0..1500.0).contains(&achieved), "two threads keep one schedule: {achieved}/s");
        let r = run_load(&mock, &["--connections", "3", "--requests", "51", "--threads", "2", "--engine", "uring"]);
        assert_eq!(r["requests"]["ok"].as_u64(), Some(51));
        assert_eq!(r["requests"]["sent"].as_u64(), Some(51));
    }

    /// `--timeout` ends requests the server never answers, for both engines, and the
    /// connections they held are torn down (the run ends).
    #[test]
    fn timeouts_are_classified() {
        let mock = Mock::start(&["--fault", "stall"]);
        for engine in ENGINES {
            let r = run_load(&mock, &["--rate", "20", "--requests", "4", "--timeout", "200ms", "--engine", engine]);
            assert_eq!(r["errors"]["timeout"].as_u64(), Some(4), "{engine}");
            assert_eq!(r["requests"]["completed"].as_u64(), Some(4), "{engine}");
            let lat_min = r["latency_us"]["min_us"].as_u64().expect("lat");
            // The histogram keeps 3 significant digits: 200 ms reads back as >= 199.8 ms.
            assert!((199_000..1_000_000).contains(&lat_min), "{engine}: timed out after {lat_min} µs");
            let r =
                run_load(&mock, &["--connections", "2", "--requests", "4", "--timeout", "100ms", "--engine", engine]);
            assert_eq!(r["errors"]["timeout"].as_u64(), Some(4), "{engine} closed loop");
        }
    }

    /// A server that answers the first request of its first connection with keep-alive,
    /// then reads the second request and closes without answering (an idle timeout racing
    /// the client); every later connection answers everything.
    fn stale_connection_server() -> (std::net::SocketAddr, std::thread::JoinHandle<()>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let handle = std::thread::spawn(move || {
            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
            // Read one request head + body (Content-Length framed, small): until the body
            // the client announced has arrived.
            fn read_request(s: &mut std::net::TcpStream) -> bool {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                for _ in 0..1000 {
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string())
                            })
                            .and_then(|v| v.parse::<usize>().ok())
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            return true;
                        }
                    }
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => return false,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                false
            }
            for (n, conn) in listener.incoming().take(4).enumerate() {
                let Ok(mut s) = conn else { return };
                if n == 0 {
                    if read_request(&mut s) {
                        let _ = s.write_all(answer);
                    }
                    let _ = read_request(&mut s);
                    drop(s);
                    continue;
                }
                std::thread::spawn(move || {
                    while read_request(&mut s) {
                        if s.write_all(answer).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, handle)
    }

    /// A reused keep-alive connection found closed before any answer byte is retried
    /// once on a fresh connection, and counted in `retried`, with both engines.
    #[test]
    fn stale_reused_connection_is_retried_once() {
        for engine in ENGINES {
            let (addr, _server) = stale_connection_server();
            let dir = tempfile::tempdir().expect("tempdir");
            let json = dir.path().join("r.json");
            let out = Command::new(env!("CARGO_BIN_EXE_gk-load"))
                .args(["run", "--url", &format!("http://{addr}/"), "--connections", "1", "--requests", "3"])
                .args(["--timeout", "5s", "--engine", engine, "--json"])
                .arg(&json)
                .output()
                .expect("spawn");
            assert!(out.status.success(), "{engine}: {}", String::from_utf8_lossy(&out.stderr));
            let r: Value = serde_json::from_str(&std::fs::read_to_string(&json).expect("json")).expect("parse");
            assert_eq!(r["requests"]["ok"].as_u64(), Some(3), "{engine}: {r}");
            assert_eq!(r["requests"]["retried"].as_u64(), Some(1), "{engine}");
            assert_eq!(r["errors"]["reset"].as_u64(), Some(0), "{engine}");
        }
    }

    #[test]
    fn errors_are_classified() {
        let mock = Mock::start(&["--fault", "503"]);
        let reset = Mock::start(&["--fault", "reset"]);
        let cut = Mock::start(&["--fault", "cut"]);
        // Nothing listens on a port we just closed.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        for engine in ENGINES {
            let r = run_load(&mock, &["--connections", "2", "--requests", "20", "--engine", engine]);
            assert_eq!(r["errors"]["http_5xx"].as_u64(), Some(20), "{engine}");
            assert_eq!(r["statuses"]["503"].as_u64(), Some(20), "{engine}");
            let r = run_load(&reset, &["--rate", "200", "--requests", "10", "--engine", engine]);
            assert_eq!(r["errors"]["reset"].as_u64(), Some(10), "{engine}: {}", r["errors"]);
            let r = run_load(&cut, &["--rate", "200", "--requests", "10", "--engine", engine]);
            assert_eq!(r["errors"]["reset"].as_u64(), Some(10), "{engine}: {}", r["errors"]);
            let dir = tempfile::tempdir().expect("tempdir");
            let json = dir.path().join("r.json");
            let out = Command::new(env!("CARGO_BIN_EXE_gk-load"))
                .args(["run", "--url", &format!("http://127.0.0.1:{port}/"), "--rate", "100"])
                .args(["--requests", "5", "--engine", engine, "--json"])
                .arg(&json)
                .output()
                .expect("spawn");
            assert!(out.status.success(), "{engine}");
            let r: Value = serde_json::from_str(&std::fs::read_to_string(&json).expect("json")).expect("parse");
            assert_eq!(r["errors"]["connect"].as_u64(), Some(5), "{engine}");
        }
    }

    #[test]
    fn scenario_mix_and_errors_with_line_numbers() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("tokens.txt"), "k1\nk2\n").expect("write");
        let good = dir.path().join("good.yaml");
        std::fs::write(
            &good,
            "requests:\n  - { weight: 3, model: a, prompt: hi, bearer_file: tokens.txt }\n  - { weight: 1, model: b, prompt: hi, stream: true, headers: { X-Routing-Mode: fastest } }\n",
        )
        .expect("write");
        let mock = Mock::start(&["--api-key", "k1"]);
        let r = run_load(&mock, &["--scenario", good.to_str().expect("utf8"), "--rate", "400", "--requests", "400"]);
        // Template a rotates k1/k2 (k2 is refused: 401); template b has no token (401).
        // So 2xx are a's k1 half: 3/4 · 1/2 = 37.5 % of 400 = 150, give or take the draw.
        let ok = r["requests"]["ok"].as_u64().expect("ok");
        assert!((110..=190).contains(&ok), "ok {ok}");
        assert_eq!(r["errors"]["http_4xx"].as_u64(), Some(400 - ok));

        let bad = dir.path().join("bad.yaml");
        std::fs::write(&bad, "requests:\n  - { model: a, prompt: hi }\n  - { model: b, prompt: hi, weight: -3 }\n")
            .expect("write");
        let out = Command::new(env!("CARGO_BIN_EXE_gk-load"))
            .args(["run", "--url", "http://127.0.0.1:9/", "--rate", "1", "--requests", "1"])
            .arg("--scenario")
            .arg(&bad)
            .output()
            .expect("spawn");
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("requests[1].weight") && err.contains("line 3"), "{err}");
    }

    /// The SVG is a pure function of the JSON spectrum; compare to the committed golden
    /// file. `UPDATE_GOLDEN=1 cargo test -p gatekeeper-loadtest plot` regenerates it.
    #[test]
    fn plot_matches_golden_svg() {
        let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
        let golden = data.join("plot_golden.svg");
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("plot.svg");
        let st = Command::new(env!("CARGO_BIN_EXE_gk-load"))
            .arg("plot")
            .arg(data.join("plot_input.json"))
            .arg("--out")
            .arg(&out)
            .status()
            .expect("spawn");
        assert!(st.success());
        let svg = std::fs::read(&out).expect("svg");
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&golden, &svg).expect("write golden");
        }
        let want = std::fs::read(&golden).expect("golden file (UPDATE_GOLDEN=1 creates it)");
        assert!(svg == want, "SVG differs from {}", golden.display());
    }
}
