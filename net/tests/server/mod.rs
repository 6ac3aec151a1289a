//! The client-facing server in-process: a one-shard `ShardSet` on a free loopback port with
//! an echoing handler, driven by a blocking std client. Every test runs under both drivers.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    thread,
    time::Duration,
};

use gatekeeper_net::{
    DriverChoice, Handler, ProtocolError, Request, Responder, ServerLimits, ShardSet, ShardSetConfig, StartError,
};

/// Declares each listed fn (taking the driver) as a test under both drivers.
macro_rules! under_both_drivers {
    ($($name:ident),* $(,)?) => {
        mod uring {
            $( #[test] fn $name() { super::$name(gatekeeper_net::DriverChoice::Uring) } )*
        }
        mod epoll {
            $( #[test] fn $name() { super::$name(gatekeeper_net::DriverChoice::Epoll) } )*
        }
    };
}

under_both_drivers!(
    pipelined_requests_are_answered_in_order_within_the_depth,
    pipelined_protocol_error_is_answered_in_its_turn,
    pipelined_body_that_arrives_later_is_read_in_its_turn,
    a_panicking_handler_costs_its_connection_not_the_shard,
    head_answers_carry_no_body,
);

/// Answers `METHOD TARGET[ BODY]`; `/slow` waits first, so the client's pipelined requests
/// are all in the server's buffer before the next one is taken.
struct Echo;

impl Handler for Echo {
    async fn handle(&self, req: Request, res: &mut Responder<'_>) {
        if req.path() == "/slow" {
            monoio::time::sleep(Duration::from_millis(100)).await;
        }
        if req.path() == "/panic" {
            panic!("the handler panicked on purpose");
        }
        let mut body = format!("{} {}", req.method(), req.target()).into_bytes();
        if !req.body.is_empty() {
            body.push(b' ');
            body.extend_from_slice(&req.body);
        }
        let _ = res.send(200, &[], &body).await;
    }

    fn protocol_error_body(&self, err: &ProtocolError) -> Vec<u8> {
        err.code().as_bytes().to_vec()
    }
}

/// A running one-shard server; stopped and joined on drop.
struct Server {
    set: Option<ShardSet>,
    addr: SocketAddr,
}

impl Server {
    /// `None` when io_uring is missing and `GATEKEEPER_SKIP_URING=1` says to skip.
    fn start(driver: DriverChoice, pipeline_depth_max: usize) -> Option<Server> {
        let limits = ServerLimits {
            header_bytes_max: 16 * 1024,
            header_count_max: 100,
            body_bytes_max: 1 << 20,
            body_bytes_in_flight_max: 1 << 20,
            header_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
            connections_per_shard_max: 16,
            pipeline_depth_max,
        };
        let cfg = ShardSetConfig {
            shards: 1,
            driver,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            pin: false,
            cpus: None,
            uring: gatekeeper_net::UringSettings::default(),
            tls: None,
            limits,
            drain_timeout: Duration::from_secs(2),
            backlog: 64,
        };
        match ShardSet::start(cfg, |_| Echo) {
            Ok(set) => Some(Server { addr: set.local_addr(), set: Some(set) }),
            Err(StartError::UringUnavailable(e)) if std::env::var_os("GATEKEEPER_SKIP_URING").is_some() => {
                eprintln!("io_uring unavailable ({e}); skipped");
                None
            }
            Err(e) => panic!("server start: {e} (set GATEKEEPER_SKIP_URING=1 to skip io_uring)"),
        }
    }

    fn connect(&self) -> (TcpStream, BufReader<TcpStream>) {
        let stream = TcpStream::connect(self.addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let reader = BufReader::new(stream.try_clone().expect("clone"));
        (stream, reader)
    }

    /// (pipeline_depth_peak, requests_total, protocol_errors_total) of the one shard.
    fn stats(&self) -> (u64, u64, u64) {
        let all = self.set.as_ref().map(ShardSet::stats).expect("running");
        let s = &all[0];
        (s.pipeline_depth_peak.get(), s.requests_total.get(), s.protocol_errors_total.get())
    }

    /// Connection tasks of the one shard that panicked.
    fn panics(&self) -> u64 {
        self.set.as_ref().map(ShardSet::stats).expect("running")[0].panics_total.get()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(set) = self.set.take() {
            set.shutdown_handle().shutdown();
            set.join();
        }
    }
}

/// One answer as the client read it.
#[derive(Debug)]
struct Answer {
    status: u16,
    body: String,
    close: bool,
}

/// Reads one `Content-Length` answer.
fn read_answer(reader: &mut BufReader<TcpStream>) -> Answer {
    let mut line = String::new();
    reader.read_line(&mut line).expect("status line");
    let status = line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("status in {line:?}"));
    let (mut length, mut close) = (0usize, false);
    loop {
        line.clear();
        reader.read_line(&mut line).expect("header");
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':').expect("header field");
        if name.eq_ignore_ascii_case("content-length") {
            length = value.trim().parse().expect("length");
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.trim().eq_ignore_ascii_case("close");
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).expect("body");
    Answer { status, body: String::from_utf8(body).expect("utf-8"), close }
}

fn get(target: &str) -> String {
    format!("GET {target} HTTP/1.1\r\nHost: t\r\n\r\n")
}

/// More requests than the depth, in one write: all answered, in order, and never more than
/// the depth waiting parsed behind the one being answered (depth + 1 parsed at once).
fn pipelined_requests_are_answered_in_order_within_the_depth(driver: DriverChoice) {
    for depth in [0, 1, 3] {
        let Some(server) = Server::start(driver, depth) else { return };
        let (mut stream, mut reader) = server.connect();
        let targets: Vec<String> =
            std::iter::once("/slow".to_string()).chain((1..=3 * depth + 4).map(|i| format!("/r{i}"))).collect();
        let batch: String = targets.iter().map(|t| get(t)).collect();
        stream.write_all(batch.as_bytes()).expect("write");
        for target in &targets {
            let answer = read_answer(&mut reader);
            assert_eq!((answer.status, answer.body.as_str()), (200, format!("GET {target}").as_str()));
            assert!(!answer.close);
        }
        let (peak, requests, _) = server.stats();
        assert_eq!(requests, targets.len() as u64);
        // The slow first answer leaves every later request in the buffer, so the queue
        // fills to the depth exactly, and no further.
        assert_eq!(peak, depth as u64, "depth {depth}");
    }
}

/// A malformed request behind good ones: the good ones are answered first, then the
/// error, then the connection closes without reading what follows.
fn pipelined_protocol_error_is_answered_in_its_turn(driver: DriverChoice) {
    let Some(server) = Server::start(driver, 4) else { return };
    let (mut stream, mut reader) = server.connect();
    let batch = format!("{}{}GET / HTTP/9.9\r\n\r\n{}", get("/slow"), get("/a"), get("/never"));
    stream.write_all(batch.as_bytes()).expect("write");
    assert_eq!(read_answer(&mut reader).body, "GET /slow");
    assert_eq!(read_answer(&mut reader).body, "GET /a");
    let error = read_answer(&mut reader);
    assert_eq!((error.status, error.body.as_str(), error.close), (400, "malformed_request", true));
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).expect("read to close");
    assert!(rest.is_empty(), "answered past the error: {:?}", String::from_utf8_lossy(&rest));
    let (_, requests, errors) = server.stats();
    assert_eq!((requests, errors), (2, 1));
}

/// A pipelined body cut short in the buffer waits, parsed only to its head, until its turn;
/// then the rest is read from the socket and the requests after it are answered too.
fn pipelined_body_that_arrives_later_is_read_in_its_turn(driver: DriverChoice) {
    let Some(server) = Server::start(driver, 4) else { return };
    let (mut stream, mut reader) = server.connect();
    let first = format!("{}POST /b HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhe", get("/slow"));
    stream.write_all(first.as_bytes()).expect("write");
    thread::sleep(Duration::from_millis(30));
    stream.write_all(format!("llo{}", get("/c")).as_bytes()).expect("write");
    assert_eq!(read_answer(&mut reader).body, "GET /slow");
    assert_eq!(read_answer(&mut reader).body, "POST /b hello");
    assert_eq!(read_answer(&mut reader).body, "GET /c");
    let (_, requests, errors) = server.stats();
    assert_eq!((requests, errors), (3, 0));
}

/// A handler that panics closes its own connection without an answer; the shard's listener
/// keeps answering, other connections (open before and after) included.
fn a_panicking_handler_costs_its_connection_not_the_shard(driver: DriverChoice) {
    let Some(server) = Server::start(driver, 4) else { return };
    let (mut bystander, mut bystander_reader) = server.connect();
    bystander.write_all(get("/before").as_bytes()).expect("write");
    assert_eq!(read_answer(&mut bystander_reader).body, "GET /before");
    for round in 0..3 {
        let (mut victim, mut victim_reader) = server.connect();
        victim.write_all(get("/panic").as_bytes()).expect("write");
        let mut rest = Vec::new();
        let _ = victim_reader.read_to_end(&mut rest);
        assert!(rest.is_empty(), "round {round}: answered after a panic: {:?}", String::from_utf8_lossy(&rest));
        let (mut next, mut next_reader) = server.connect();
        next.write_all(get("/after").as_bytes()).expect("write");
        assert_eq!(read_answer(&mut next_reader).body, "GET /after", "round {round}: the listener still answers");
    }
    bystander.write_all(get("/still").as_bytes()).expect("write");
    assert_eq!(read_answer(&mut bystander_reader).body, "GET /still", "the open connection still answers");
    assert_eq!(server.panics(), 3);
}

/// HEAD gets the head GET would (its Content-Length included) and no body, so the answer
/// to a request pipelined behind it is read as that answer.
fn head_answers_carry_no_body(driver: DriverChoice) {
    let Some(server) = Server::start(driver, 4) else { return };
    let (mut stream, mut reader) = server.connect();
    let batch = format!("HEAD /h HTTP/1.1\r\nHost: t\r\n\r\n{}", get("/g"));
    stream.write_all(batch.as_bytes()).expect("write");
    let mut line = String::new();
    reader.read_line(&mut line).expect("status line");
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    let mut length = None;
    loop {
        line.clear();
        reader.read_line(&mut line).expect("header");
        if line.trim_end().is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse::<usize>().ok();
        }
    }
    assert_eq!(length, Some("HEAD /h".len()), "the length GET would have");
    assert_eq!(read_answer(&mut reader).body, "GET /g", "the next answer starts right after the head");
}
