//! A hostile provider: a raw loopback HTTP/1.1 server that answers every request
//! with whatever a test scripts — bytes no well-behaved provider would send — and
//! keeps each request it received for the test to inspect.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request as the provider received it.
#[derive(Debug, Clone)]
pub struct Received {
    /// Request line and headers, as sent.
    pub head: String,
    /// The body.
    pub body: Vec<u8>,
}

impl Received {
    /// The value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

/// What the provider answers: the raw bytes of a response, chosen per request
/// (the index counts requests from 0), after an optional delay. No bytes: the
/// connection is closed without an answer.
pub type Script = dyn Fn(usize, &Received) -> (Duration, Vec<u8>) + Send + Sync;

/// A running hostile provider; stops accepting when dropped.
pub struct Hostile {
    /// Where it listens.
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Hostile {
    /// Starts one answering every request with `script`.
    pub fn start(script: impl Fn(usize, &Received) -> (Duration, Vec<u8>) + Send + Sync + 'static) -> Hostile {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let script: Arc<Script> = Arc::new(script);
        let (rx, st) = (received.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let (rx, script) = (rx.clone(), script.clone());
                std::thread::spawn(move || serve(conn, &rx, &*script));
            }
        });
        Hostile { addr, received, stop }
    }

    /// Answers every request with `response` at once.
    pub fn always(response: &str) -> Hostile {
        let response = response.as_bytes().to_vec();
        Hostile::start(move |_, _| (Duration::ZERO, response.clone()))
    }

    /// Requests received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// How many requests arrived.
    pub fn count(&self) -> usize {
        self.received.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(mut conn: TcpStream, received: &Mutex<Vec<Received>>, script: &Script) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let length = head
            .lines()
            .find_map(|l| l.split_once(':').filter(|(n, _)| n.trim().eq_ignore_ascii_case("content-length")))
            .and_then(|(_, v)| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        let body_start = end + 4;
        while buf.len() < body_start + length {
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let req = Received { head, body: buf[body_start..body_start + length].to_vec() };
        buf.drain(..body_start + length);
        let index = {
            let mut all = received.lock().unwrap_or_else(|p| p.into_inner());
            all.push(req.clone());
            all.len() - 1
        };
        let (delay, response) = script(index, &req);
        std::thread::sleep(delay);
        if response.is_empty() || conn.write_all(&response).is_err() {
            return;
        }
    }
}

/// A complete response with a JSON body, closing the connection afterwards.
pub fn json_response(status: u16, extra_headers: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{extra_headers}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A chat-completions answer that reports `usage`.
pub const COMPLETION: &str = r#"{"id":"x","object":"chat.completion","model":"h","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#;
