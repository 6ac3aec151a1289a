//! Integration tests of the upstream client against small scripted HTTP/1.1 servers running on
//! std threads (127.0.0.1 only). Every test runs under both monoio drivers.

use std::{
    future::Future,
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    sync::{
        atomic::{AtomicUsize, Ordering},
        mpsc, Arc, Condvar, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use gatekeeper_net::upstream::{tls_client_config, Origin, Pool, PoolConfig, Response, UpstreamError};

// ---------------------------------------------------------------------------------------------
// Harness

/// Runs `test` on an io_uring runtime. Fails if io_uring is unavailable unless
/// `GATEKEEPER_SKIP_URING=1` (for kernels or sandboxes without it).
fn on_uring<Fut: Future<Output = ()>>(test: impl FnOnce() -> Fut) {
    match monoio::RuntimeBuilder::<monoio::IoUringDriver>::new().enable_timer().build() {
        Ok(mut rt) => rt.block_on(test()),
        Err(e) if std::env::var_os("GATEKEEPER_SKIP_URING").is_some() => {
            eprintln!("io_uring unavailable ({e}); skipped");
        }
        Err(e) => panic!("io_uring runtime: {e} (set GATEKEEPER_SKIP_URING=1 to skip)"),
    }
}

fn on_legacy<Fut: Future<Output = ()>>(test: impl FnOnce() -> Fut) {
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build().unwrap();
    rt.block_on(test());
}

/// Declares each listed `async fn` as a test under both drivers.
macro_rules! under_both_drivers {
    ($($name:ident),* $(,)?) => {
        mod uring {
            $( #[test] fn $name() { super::on_uring(super::$name) } )*
        }
        mod legacy {
            $( #[test] fn $name() { super::on_legacy(super::$name) } )*
        }
    };
}

under_both_drivers!(
    content_length_response_and_request_shape,
    keep_alive_reuses_one_connection,
    chunked_body_streams_piece_by_piece,
    close_delimited_body,
    interim_100_continue_is_skipped,
    connection_close_is_not_reused,
    http10_without_keep_alive_is_not_reused,
    closed_idle_connection_is_replaced_before_writing,
    post_written_whole_is_not_sent_again,
    idempotent_request_written_whole_is_sent_again_once,
    fresh_connection_closed_early,
    host_name_is_resolved,
    unresolvable_host_is_a_resolve_error,
    slow_resolution_is_bounded_by_the_connect_timeout,
    connect_timeout_on_full_backlog,
    connection_refused_is_connect_error,
    first_byte_timeout,
    read_idle_timeout_mid_body,
    pool_exhaustion_at_connections_max,
    queued_request_times_out_as_exhausted,
    oversize_head_is_protocol_error,
    malformed_chunked_body_is_protocol_error,
    dropped_response_closes_connection,
    read_to_end_enforces_limit,
    retry_after_is_parsed,
    tls_with_extra_ca,
    tls_with_unknown_ca_fails,
);

fn config() -> PoolConfig {
    PoolConfig {
        connect_timeout_ms: 2_000,
        first_byte_timeout_ms: 2_000,
        read_idle_timeout_ms: 2_000,
        pool_idle_timeout_ms: 30_000,
        connections_max: 4,
        queue_max: 4,
        response_head_bytes_max: 64 * 1024,
    }
}

fn pool(addr: SocketAddr, cfg: PoolConfig) -> Pool {
    let origin = Origin::parse(&format!("http://{addr}/v1")).unwrap();
    Pool::new(origin, cfg, None)
}

async fn body_of(response: &mut Response) -> Vec<u8> {
    response.read_to_end(1 << 20).await.unwrap().to_vec()
}

/// Polls `cond` every 5 ms for at most `limit`.
async fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "condition not met within {limit:?}");
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A request as the test server saw it.
#[derive(Debug)]
struct Seen {
    head: String,
    body: Vec<u8>,
}

/// Reads one request (head + Content-Length body); `None` at EOF or on error.
fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Seen> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let length = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Seen { head, body })
}

/// A test server: accepts forever on 127.0.0.1:0, one thread per connection running
/// `handler(stream, reader, connection_index)`.
struct Server {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

fn serve<H>(handler: H) -> Server
where
    H: Fn(TcpStream, BufReader<TcpStream>, usize) + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    let handler = Arc::new(handler);
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let index = count.fetch_add(1, Ordering::SeqCst);
            let handler = Arc::clone(&handler);
            thread::spawn(move || {
                let reader = BufReader::new(stream.try_clone().unwrap());
                handler(stream, reader, index);
            });
        }
    });
    Server { addr, accepted }
}

/// A server answering every request on every connection with `response`.
fn serve_fixed(response: &'static [u8]) -> Server {
    serve(move |mut stream, mut reader, _| {
        while read_request(&mut reader).is_some() {
            if stream.write_all(response).is_err() {
                return;
            }
        }
    })
}

/// A latch the test opens to let held server handlers go on.
#[derive(Clone, Default)]
struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    fn open(&self) {
        *self.0 .0.lock().unwrap() = true;
        self.0 .1.notify_all();
    }
    fn wait(&self) {
        let mut open = self.0 .0.lock().unwrap();
        while !*open {
            open = self.0 .1.wait(open).unwrap();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Framing

async fn content_length_response_and_request_shape() {
    let (tx, rx) = mpsc::channel::<Seen>();
    let tx = Mutex::new(tx);
    let server = serve(move |mut stream, mut reader, _| {
        while let Some(seen) = read_request(&mut reader) {
            tx.lock().unwrap().send(seen).unwrap();
            stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Test: Yes\r\n\r\nhello").unwrap();
        }
    });
    let pool = pool(server.addr, config());
    let headers: [(&str, &[u8]); 2] = [("Authorization", b"Bearer k"), ("X-Id", b"7")];
    let mut response = pool.send("POST", "/chat/completions", &headers, b"{\"a\":1}").await.unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.header("x-test"), Some(&b"Yes"[..]));
    assert_eq!(response.content_length(), Some(5));
    let names: Vec<&str> = response.headers().map(|(n, _)| n).collect();
    assert_eq!(names, ["Content-Length", "X-Test"]);
    assert_eq!(body_of(&mut response).await, b"hello");

    let seen = rx.recv_timeout(Duration::from_secs(2)).unwrap();
    let expected_head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {}\r\nContent-Length: 7\r\n\
         Authorization: Bearer k\r\nX-Id: 7\r\n\r\n",
        server.addr
    );
    assert_eq!(seen.head, expected_head);
    assert_eq!(seen.body, b"{\"a\":1}");
    let stats = pool.stats();
    assert_eq!((stats.idle, stats.busy, stats.connects_total), (1, 0, 1));
}

async fn keep_alive_reuses_one_connection() {
    let server = serve_fixed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    let pool = pool(server.addr, config());
    for _ in 0..2 {
        let mut response = pool.send("POST", "/x", &[], b"1").await.unwrap();
        assert_eq!(body_of(&mut response).await, b"ok");
    }
    let stats = pool.stats();
    assert_eq!(stats.connects_total, 1);
    assert_eq!(stats.reuses_total, 1);
    assert_eq!(server.accepted.load(Ordering::SeqCst), 1);
}

async fn chunked_body_streams_piece_by_piece() {
    let gate = Gate::default();
    let server_gate = gate.clone();
    let server = serve(move |mut stream, mut reader, _| {
        read_request(&mut reader).unwrap();
        // Split inside the head-body boundary and inside a chunk.
        stream.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel").unwrap();
        stream.flush().unwrap();
        server_gate.wait();
        for piece in [&b"lo\r"[..], b"\n6;ext=1\r\n wor", b"ld\r\n0\r", b"\nTrailer: x\r\n\r\n"] {
            stream.write_all(piece).unwrap();
            stream.flush().unwrap();
            thread::sleep(Duration::from_millis(15));
        }
        // Keep the connection open: the client must end the body on the framing alone.
        while read_request(&mut reader).is_some() {}
    });
    let pool = pool(server.addr, config());
    let mut response = pool.send("POST", "/stream", &[], b"{}").await.unwrap();
    // The second piece is only sent after the gate opens, so this proves streaming.
    let first = response.chunk().await.unwrap().unwrap();
    assert_eq!(&first[..], b"hel");
    gate.open();
    let mut rest = Vec::new();
    let mut pieces = 0;
    while let Some(piece) = response.chunk().await.unwrap() {
        assert!(!piece.is_empty());
        rest.extend_from_slice(&piece);
        pieces += 1;
    }
    assert_eq!(rest, b"lo world");
    assert!(pieces >= 2, "pieces were merged: {pieces}");
    assert_eq!(response.chunk().await.unwrap(), None);
    assert_eq!(pool.stats().idle, 1, "clean chunked end returns the connection");
}

async fn close_delimited_body() {
    let server = serve(|mut stream, mut reader, _| {
        read_request(&mut reader).unwrap();
        stream.write_all(b"HTTP/1.1 200 OK\r\n\r\nabc").unwrap();
        thread::sleep(Duration::from_millis(20));
        stream.write_all(b"def").unwrap();
    });
    let pool = pool(server.addr, config());
    let mut response = pool.send("GET", "/", &[], b"").await.unwrap();
    assert_eq!(body_of(&mut response).await, b"abcdef");
    let stats = pool.stats();
    assert_eq!((stats.idle, stats.busy), (0, 0));
}

async fn interim_100_continue_is_skipped() {
    let server = serve_fixed(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\n\
          HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
    );
    let pool = pool(server.addr, config());
    let mut response = pool.send("POST", "/", &[], b"x").await.unwrap();
    assert_eq!(response.status, 201);
    assert_eq!(response.header("link"), None);
    assert_eq!(body_of(&mut response).await, b"ok");
}

async fn connection_close_is_not_reused() {
    let server = serve_fixed(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok");
    let pool = pool(server.addr, config());
    for _ in 0..2 {
        let mut response = pool.send("POST", "/", &[], b"x").await.unwrap();
        assert_eq!(body_of(&mut response).await, b"ok");
        assert_eq!(pool.stats().idle, 0);
    }
    assert_eq!(pool.stats().connects_total, 2);
    assert_eq!(pool.stats().reuses_total, 0);
}

async fn http10_without_keep_alive_is_not_reused() {
    let server = serve_fixed(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok");
    let pool = pool(server.addr, config());
    let mut response = pool.send("POST", "/", &[], b"x").await.unwrap();
    assert_eq!(body_of(&mut response).await, b"ok");
    let stats = pool.stats();
    assert_eq!((stats.idle, stats.busy), (0, 0));
}

// ---------------------------------------------------------------------------------------------
// Stale connections and early close

async fn closed_idle_connection_is_replaced_before_writing() {
    let (closed_tx, closed_rx) = mpsc::channel::<()>();
    let closed_tx = Mutex::new(closed_tx);
    let received = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&received);
    // Connection 0 answers once, then closes as an idle-timing-out server would.
    // Later connections behave normally.
    let server = serve(move |mut stream, mut reader, index| {
        while read_request(&mut reader).is_some() {
            seen.fetch_add(1, Ordering::SeqCst);
            stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").unwrap();
            if index == 0 {
                stream.shutdown(std::net::Shutdown::Both).unwrap();
                closed_tx.lock().unwrap().send(()).unwrap();
                return;
            }
        }
    });
    let pool = pool(server.addr, config());
    let mut response = pool.send("POST", "/", &[], b"1").await.unwrap();
    assert_eq!(body_of(&mut response).await, b"ok");
    wait_until(Duration::from_secs(2), || closed_rx.try_recv().is_ok()).await;
    // Give the FIN time to arrive at the client socket.
    monoio::time::sleep(Duration::from_millis(20)).await;

    let mut response = pool.send("POST", "/", &[], b"2").await.unwrap();
    assert_eq!(body_of(&mut response).await, b"ok");
    let stats = pool.stats();
    assert_eq!(stats.connects_total, 2);
    assert_eq!(stats.reuses_total, 0, "the closed connection carried nothing");
    assert_eq!(stats.stale_retries_total, 1);
    assert_eq!(stats.errors_total, 0);
    assert_eq!(received.load(Ordering::SeqCst), 2, "each request reached the server once");
}

/// A server whose first connection answers one request, then reads the next one whole and
/// closes without answering; later connections answer every request. Counts requests.
fn serve_then_drop_second(received: Arc<AtomicUsize>) -> Server {
    serve(move |mut stream, mut reader, index| {
        let mut on_this_connection = 0;
        while read_request(&mut reader).is_some() {
            received.fetch_add(1, Ordering::SeqCst);
            on_this_connection += 1;
            if index == 0 && on_this_connection == 2 {
                return;
            }
            if stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").is_err() {
                return;
            }
        }
    })
}

async fn post_written_whole_is_not_sent_again() {
    let received = Arc::new(AtomicUsize::new(0));
    let server = serve_then_drop_second(Arc::clone(&received));
    let pool = pool(server.addr, config());
    let mut response = pool.send("POST", "/", &[], b"1").await.unwrap();
    assert_eq!(body_of(&mut response).await, b"ok");
    let err = pool.send("POST", "/", &[], b"2").await.unwrap_err();
    assert!(matches!(err, UpstreamError::ClosedEarly), "{err:?}");
    assert_eq!(received.load(Ordering::SeqCst), 2, "the POST reached the server once");
    assert_eq!(server.accepted.load(Ordering::SeqCst), 1, "no second connection was opened");
    let stats = pool.stats();
    assert_eq!((stats.reuses_total, stats.stale_retries_total, stats.errors_total), (1, 0, 1));
    assert_eq!((stats.busy, stats.idle), (0, 0));
}

async fn idempotent_request_written_whole_is_sent_again_once() {
    let received = Arc::new(AtomicUsize::new(0));
    let server = serve_then_drop_second(Arc::clone(&received));
    let pool = pool(server.addr, config());
    let mut response = pool.send("GET", "/", &[], b"").await.unwrap();
    assert_eq!(body_of(&mut response).await, b"ok");
    let mut response = pool.send("GET", "/", &[], b"").await.unwrap();
    assert_eq!(body_of(&mut response).await, b"ok");
    assert_eq!(received.load(Ordering::SeqCst), 3, "the GET went out twice");
    assert_eq!(server.accepted.load(Ordering::SeqCst), 2);
    let stats = pool.stats();
    assert_eq!((stats.reuses_total, stats.stale_retries_total, stats.errors_total), (1, 1, 0));
}

async fn fresh_connection_closed_early() {
    let server = serve(|_stream, mut reader, _| {
        read_request(&mut reader);
        // Dropping both handles closes without answering.
    });
    let pool = pool(server.addr, config());
    let err = pool.send("POST", "/", &[], b"x").await.unwrap_err();
    assert!(matches!(err, UpstreamError::ClosedEarly), "{err:?}");
    assert_eq!(pool.stats().connects_total, 1, "a fresh connection is not retried");
    assert_eq!(pool.stats().busy, 0);
}

// ---------------------------------------------------------------------------------------------
// Timeouts

async fn connect_timeout_on_full_backlog() {
    use socket2::{Domain, Socket, Type};
    // Backlog 0 admits one queued connection; after that the kernel drops SYNs, so the next
    // connect hangs until our timeout. Loopback only.
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let bind: SocketAddr = "127.0.0.1:0".parse().unwrap();
    listener.bind(&bind.into()).unwrap();
    listener.listen(0).unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(100)) {
            Ok(s) => fillers.push(s),
            Err(_) => break,
        }
    }
    let pool = pool(addr, PoolConfig { connect_timeout_ms: 200, ..config() });
    let start = Instant::now();
    let err = pool.send("POST", "/", &[], b"x").await.unwrap_err();
    let elapsed = start.elapsed();
    assert!(matches!(err, UpstreamError::ConnectTimeout), "{err:?}");
    assert!(err.is_timeout());
    assert_eq!(err.kind_label(), "connect_timeout");
    assert!(elapsed >= Duration::from_millis(190) && elapsed < Duration::from_secs(2), "{elapsed:?}");
    let stats = pool.stats();
    assert_eq!((stats.timeouts_total, stats.errors_total, stats.busy), (1, 1, 0));
    drop(fillers);
}

async fn connection_refused_is_connect_error() {
    // Bind then drop: nothing listens on that port any more.
    let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let pool = pool(addr, config());
    let err = pool.send("POST", "/", &[], b"x").await.unwrap_err();
    assert!(matches!(err, UpstreamError::Connect(_)), "{err:?}");
    assert!(err.is_connect_phase());
}

async fn host_name_is_resolved() {
    let server = serve_fixed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    let origin = Origin::parse(&format!("http://localhost:{}/v1", server.addr.port())).unwrap();
    let pool = Pool::new(origin, config(), None);
    for _ in 0..2 {
        let mut response = pool.send("POST", "/", &[], b"x").await.unwrap();
        assert_eq!(body_of(&mut response).await, b"ok");
    }
}

async fn unresolvable_host_is_a_resolve_error() {
    let pool = Pool::new(Origin::parse("http://nonexistent.invalid/v1").unwrap(), config(), None);
    let err = pool.send("POST", "/", &[], b"x").await.unwrap_err();
    assert!(matches!(&err, UpstreamError::Resolve(why) if why.starts_with("nonexistent.invalid")), "{err:?}");
    assert!(err.is_connect_phase());
    assert_eq!(err.kind_label(), "resolve");
    // Remembered: the next request fails without a lookup.
    let start = Instant::now();
    assert!(matches!(pool.send("POST", "/", &[], b"x").await, Err(UpstreamError::Resolve(_))));
    assert!(start.elapsed() < Duration::from_millis(50), "{:?}", start.elapsed());
    assert_eq!(pool.stats().busy, 0);
}

async fn slow_resolution_is_bounded_by_the_connect_timeout() {
    // Debug builds hold `slow-MS.dns-test.invalid` lookups for MS ms (see resolve.rs).
    let origin = Origin::parse("http://slow-3000.dns-test.invalid/v1").unwrap();
    let pool = Pool::new(origin, PoolConfig { connect_timeout_ms: 200, ..config() }, None);
    let start = Instant::now();
    // Another task on the same runtime: it runs on time only if the lookup does not block it.
    let ticker = monoio::spawn(async move {
        monoio::time::sleep(Duration::from_millis(20)).await;
        start.elapsed()
    });
    let err = pool.send("POST", "/", &[], b"x").await.unwrap_err();
    let elapsed = start.elapsed();
    assert!(matches!(err, UpstreamError::ConnectTimeout), "{err:?}");
    assert!(elapsed >= Duration::from_millis(190) && elapsed < Duration::from_millis(1_000), "{elapsed:?}");
    let ticked = ticker.await;
    assert!(ticked < Duration::from_millis(150), "the runtime stalled: {ticked:?}");
    assert_eq!(pool.stats().busy, 0);
}

async fn first_byte_timeout() {
    let server = serve(|stream, mut reader, _| {
        read_request(&mut reader);
        thread::sleep(Duration::from_secs(2));
        drop(stream);
    });
    let pool = pool(server.addr, PoolConfig { first_byte_timeout_ms: 150, ..config() });
    let start = Instant::now();
    let err = pool.send("POST", "/", &[], b"x").await.unwrap_err();
    assert!(matches!(err, UpstreamError::FirstByteTimeout), "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(1));
    let stats = pool.stats();
    assert_eq!((stats.timeouts_total, stats.busy, stats.idle), (1, 0, 0));
}

async fn read_idle_timeout_mid_body() {
    let server = serve(|mut stream, mut reader, _| {
        read_request(&mut reader);
        stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc").unwrap();
        thread::sleep(Duration::from_secs(2));
    });
    let pool = pool(server.addr, PoolConfig { read_idle_timeout_ms: 150, ..config() });
    let mut response = pool.send("POST", "/", &[], b"x").await.unwrap();
    assert_eq!(&response.chunk().await.unwrap().unwrap()[..], b"abc");
    let err = response.chunk().await.unwrap_err();
    assert!(matches!(err, UpstreamError::ReadIdleTimeout), "{err:?}");
    assert!(response.chunk().await.is_err(), "a failed body stays failed");
    let stats = pool.stats();
    assert_eq!((stats.timeouts_total, stats.busy, stats.idle), (1, 0, 0));
}

// ---------------------------------------------------------------------------------------------
// Pool bounds

/// A server that holds every request until `gate` opens.
fn serve_held(gate: Gate, received: Arc<AtomicUsize>) -> Server {
    serve(move |mut stream, mut reader, _| {
        while read_request(&mut reader).is_some() {
            received.fetch_add(1, Ordering::SeqCst);
            gate.wait();
            if stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").is_err() {
                return;
            }
        }
    })
}

async fn pool_exhaustion_at_connections_max() {
    let gate = Gate::default();
    let received = Arc::new(AtomicUsize::new(0));
    let server = serve_held(gate.clone(), Arc::clone(&received));
    let pool =
        pool(server.addr, PoolConfig { connections_max: 2, queue_max: 2, connect_timeout_ms: 3_000, ..config() });
    // Two requests take both connections, two more fill the waiter queue (queue_max = 2).
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let pool = pool.clone();
        tasks.push(monoio::spawn(async move {
            let mut response = pool.send("POST", "/", &[], b"x").await?;
            response.read_to_end(16).await
        }));
    }
    wait_until(Duration::from_secs(2), || received.load(Ordering::SeqCst) == 2 && pool.stats().waiting == 2).await;
    let stats = pool.stats();
    assert_eq!((stats.busy, stats.idle, stats.waiting), (2, 0, 2));
    // The fifth is refused at once: queue full.
    let start = Instant::now();
    let err = pool.send("POST", "/", &[], b"x").await.unwrap_err();
    assert!(matches!(err, UpstreamError::PoolExhausted), "{err:?}");
    assert!(start.elapsed() < Duration::from_millis(500));
    assert_eq!(err.kind_label(), "pool_exhausted");
    // Release: the queued requests get the freed connections in turn.
    gate.open();
    for task in tasks {
        assert_eq!(&task.await.unwrap()[..], b"ok");
    }
    let stats = pool.stats();
    assert_eq!(stats.connects_total, 2);
    assert_eq!(stats.reuses_total, 2);
    assert_eq!(stats.exhausted_total, 1);
    assert_eq!((stats.busy, stats.idle, stats.waiting), (0, 2, 0));
    assert_eq!(server.accepted.load(Ordering::SeqCst), 2);
}

async fn queued_request_times_out_as_exhausted() {
    let gate = Gate::default();
    let received = Arc::new(AtomicUsize::new(0));
    let server = serve_held(gate.clone(), Arc::clone(&received));
    let pool = pool(server.addr, PoolConfig { connections_max: 1, connect_timeout_ms: 200, ..config() });
    let holder = {
        let pool = pool.clone();
        monoio::spawn(async move {
            let mut response = pool.send("POST", "/", &[], b"x").await?;
            response.read_to_end(16).await
        })
    };
    wait_until(Duration::from_secs(2), || received.load(Ordering::SeqCst) == 1).await;
    let start = Instant::now();
    let err = pool.send("POST", "/", &[], b"x").await.unwrap_err();
    assert!(matches!(err, UpstreamError::PoolExhausted), "{err:?}");
    assert!(start.elapsed() >= Duration::from_millis(190));
    assert_eq!(pool.stats().waiting, 0, "a timed-out waiter leaves the queue");
    gate.open();
    assert_eq!(&holder.await.unwrap()[..], b"ok");
    assert_eq!(pool.stats().idle, 1);
}

// ---------------------------------------------------------------------------------------------
// Protocol errors and body limits

async fn oversize_head_is_protocol_error() {
    let server = serve(|mut stream, mut reader, _| {
        read_request(&mut reader);
        let big = "a".repeat(8 * 1024);
        let _ = stream.write_all(format!("HTTP/1.1 200 OK\r\nX-Big: {big}\r\n\r\n").as_bytes());
        thread::sleep(Duration::from_millis(200));
    });
    let pool = pool(server.addr, PoolConfig { response_head_bytes_max: 4 * 1024, ..config() });
    let err = pool.send("POST", "/", &[], b"x").await.unwrap_err();
    assert!(matches!(err, UpstreamError::Protocol(_)), "{err:?}");
    assert_eq!(pool.stats().busy, 0);
}

async fn malformed_chunked_body_is_protocol_error() {
    let server = serve_fixed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n");
    let pool = pool(server.addr, config());
    let mut response = pool.send("POST", "/", &[], b"x").await.unwrap();
    let err = response.read_to_end(1024).await.unwrap_err();
    assert!(matches!(err, UpstreamError::Protocol(_)), "{err:?}");
    let stats = pool.stats();
    assert_eq!((stats.busy, stats.idle, stats.errors_total), (0, 0, 1));
}

async fn dropped_response_closes_connection() {
    let server = serve_fixed(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nabc");
    let pool = pool(server.addr, config());
    let mut response = pool.send("POST", "/", &[], b"x").await.unwrap();
    assert_eq!(&response.chunk().await.unwrap().unwrap()[..], b"abc");
    drop(response);
    let stats = pool.stats();
    assert_eq!((stats.busy, stats.idle), (0, 0), "half-read connection is closed");
}

async fn read_to_end_enforces_limit() {
    let server = serve_fixed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n");
    let pool = pool(server.addr, config());
    let mut response = pool.send("POST", "/", &[], b"x").await.unwrap();
    let err = response.read_to_end(5).await.unwrap_err();
    assert!(matches!(err, UpstreamError::BodyTooLarge(5)), "{err:?}");
    let mut response = pool.send("POST", "/", &[], b"x").await.unwrap();
    assert_eq!(&response.read_to_end(6).await.unwrap()[..], b"abcdef");
    assert_eq!(pool.stats().idle, 1);
}

async fn retry_after_is_parsed() {
    let server = serve_fixed(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nContent-Length: 0\r\n\r\n");
    let pool = pool(server.addr, config());
    let response = pool.send("POST", "/", &[], b"x").await.unwrap();
    assert_eq!(response.status, 429);
    assert_eq!(response.retry_after(), Some(Duration::from_secs(7)));
    // Empty body: the connection is back in the pool without reading anything.
    assert_eq!(pool.stats().idle, 1);
}

// ---------------------------------------------------------------------------------------------
// TLS

struct TlsFixture {
    addr: SocketAddr,
    ca_file: PathBuf,
    accepted: Arc<AtomicUsize>,
}

/// A TLS server (rustls on a std thread) with a fresh self-signed certificate for 127.0.0.1,
/// answering each request with a chunked body. The certificate's PEM is written to a unique
/// temp file for use as the extra CA.
fn tls_server() -> TlsFixture {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let ca_file = std::env::temp_dir().join(format!(
        "gk-upstream-test-{}-{}.pem",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::write(&ca_file, cert.cert.pem()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_pair.serialize_der())),
        )
        .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            count.fetch_add(1, Ordering::SeqCst);
            let config = Arc::clone(&config);
            thread::spawn(move || {
                let conn = rustls::ServerConnection::new(config).unwrap();
                let mut tls = BufReader::new(rustls::StreamOwned::new(conn, stream));
                loop {
                    let mut head = String::new();
                    loop {
                        let mut line = String::new();
                        match tls.read_line(&mut line) {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                        head.push_str(&line);
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("Content-Length: "))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    let mut body = vec![0; length];
                    if tls.read_exact(&mut body).is_err() {
                        return;
                    }
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                         6\r\nsecure\r\n{:x}\r\n{}\r\n0\r\n\r\n",
                        body.len(),
                        String::from_utf8_lossy(&body)
                    );
                    let stream = tls.get_mut();
                    if stream.write_all(reply.as_bytes()).is_err() || stream.flush().is_err() {
                        return;
                    }
                }
            });
        }
    });
    TlsFixture { addr, ca_file, accepted }
}

async fn tls_with_extra_ca() {
    let fixture = tls_server();
    let tls = tls_client_config(Some(&fixture.ca_file)).unwrap();
    let origin = Origin::parse(&format!("https://{}/v1", fixture.addr)).unwrap();
    let pool = Pool::new(origin, config(), Some(tls));
    for body in [&b"-one"[..], b"-two"] {
        let mut response = pool.send("POST", "/chat", &[], body).await.unwrap();
        assert_eq!(response.status, 200);
        let expected = [&b"secure"[..], body].concat();
        assert_eq!(body_of(&mut response).await, expected);
    }
    let stats = pool.stats();
    assert_eq!((stats.connects_total, stats.reuses_total), (1, 1));
    assert_eq!(fixture.accepted.load(Ordering::SeqCst), 1);
    let _ = std::fs::remove_file(&fixture.ca_file);
}

async fn tls_with_unknown_ca_fails() {
    let fixture = tls_server();
    let tls = tls_client_config(None).unwrap();
    let origin = Origin::parse(&format!("https://{}/v1", fixture.addr)).unwrap();
    let pool = Pool::new(origin, config(), Some(tls));
    let err = pool.send("POST", "/chat", &[], b"x").await.unwrap_err();
    assert!(matches!(err, UpstreamError::Tls(_)), "{err:?}");
    assert_eq!(err.kind_label(), "tls");
    let _ = std::fs::remove_file(&fixture.ca_file);
}

#[test]
fn tls_config_rejects_a_file_without_certificates() {
    let path = std::env::temp_dir().join(format!("gk-upstream-empty-{}.pem", std::process::id()));
    std::fs::write(&path, "not a certificate\n").unwrap();
    let err = tls_client_config(Some(&path)).unwrap_err();
    assert!(matches!(err, UpstreamError::TlsConfig(_)), "{err:?}");
    let _ = std::fs::remove_file(&path);
    assert!(tls_client_config(Some(std::path::Path::new("/nonexistent/ca.pem"))).is_err());
}
