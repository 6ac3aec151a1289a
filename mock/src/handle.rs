//! [`MockServer`]: a mock running in this process on a thread of its own, with its own
//! tokio runtime, for callers without a runtime (tests, `gatekeeper demo`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::config::Mock;
use crate::server;
use crate::stats::{Stats, StatsSnapshot};

/// Pending connections the listener queues before the accept loop takes them (the
/// backlog tokio itself uses).
const LISTEN_BACKLOG: i32 = 1024;

impl Mock {
    /// Binds the listen address and serves on a thread of its own, with its own runtime,
    /// until the returned handle is stopped or dropped.
    pub fn start(self) -> std::io::Result<MockServer> {
        MockServer::start(self)
    }
}

/// A running mock. [`MockServer::stop`] or dropping it stops the accept loop, ends every
/// open connection (stalled ones included) and joins the thread.
#[derive(Debug)]
pub struct MockServer {
    addr: SocketAddr,
    name: String,
    stats: Arc<Stats>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

impl MockServer {
    /// Binds before returning, so the address is ready to connect to at once; the
    /// runtime is built here too, so neither failure is left to the thread.
    pub(crate) fn start(mock: Mock) -> std::io::Result<MockServer> {
        let listener = bind(mock.listen)?;
        let addr = listener.local_addr()?;
        let runtime = mock.runtime()?;
        let name = mock.name.clone();
        let stats = Arc::new(Stats::default());
        let (stop, stopped) = oneshot::channel::<()>();
        let thread_stats = stats.clone();
        let thread = std::thread::Builder::new().name(format!("mock-{name}")).spawn(move || {
            let served = runtime.block_on(async move {
                let listener = TcpListener::from_std(listener)?;
                // A dropped sender (the handle went away without `stop`) also stops.
                server::serve(listener, mock, thread_stats, async move { drop(stopped.await) }).await
            });
            // Dropping the runtime here cancels the connection tasks, closing their sockets.
            drop(runtime);
            served
        })?;
        Ok(MockServer { addr, name, stats, stop: Some(stop), thread: Some(thread) })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The counters now: the same as `GET /__mock/stats`.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Stops serving and waits for the thread; returns the accept loop's error, if any.
    pub fn stop(mut self) -> std::io::Result<()> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            // Err means the loop already ended; joining below reports why.
            let _ = stop.send(());
        }
        match self.thread.take() {
            Some(thread) => thread.join().map_err(|_| std::io::Error::other("mock thread panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        // Nobody is left to hear an error; stopping is what matters.
        let _ = self.stop_and_join();
    }
}

/// A non-blocking listener with `SO_REUSEADDR`, as tokio's own `bind` makes it, but
/// without needing a runtime (the caller may be inside another one).
fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;

    use crate::{Fault, MockConfig};

    fn post(addr: SocketAddr, extra: &str) -> String {
        let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let req = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: m\r\nConnection: close\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).expect("write");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    #[test]
    fn serves_counts_and_stops() {
        let server = MockConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)))
            .name("a")
            .fault(Fault::ServerError)
            .build()
            .expect("valid")
            .start()
            .expect("start");
        let addr = server.addr();
        assert_ne!(addr.port(), 0);
        assert!(post(addr, "").starts_with("HTTP/1.1 500"));
        assert!(post(addr, "X-Mock-Fault: a=none\r\n").starts_with("HTTP/1.1 200"));
        let stats = server.stats();
        assert_eq!(stats.requests, 2);
        assert_eq!(stats.faults(Fault::ServerError), 1);
        assert_eq!(stats.last_model.as_deref(), Some("m"));
        server.stop().expect("clean stop");
        assert!(TcpStream::connect(addr).is_err(), "the listener is closed after stop");
    }

    #[test]
    fn drop_ends_a_stalled_connection() {
        let server = MockConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)))
            .fault(Fault::Stall)
            .threads(2)
            .build()
            .expect("valid")
            .start()
            .expect("start");
        let addr = server.addr();
        let client = std::thread::spawn(move || post(addr, ""));
        // Wait until the mock holds the request, then stop it under the client's feet.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while server.stats().requests == 0 {
            assert!(std::time::Instant::now() < deadline, "request never arrived");
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(server);
        assert_eq!(client.join().expect("client"), "", "closed without an answer");
    }
}
