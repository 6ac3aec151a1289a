//! The client side of a shard: accept, read requests under limits, hand them to the
//! application, write answers, keep the connection alive or close it.

use std::cell::Cell;
use std::collections::VecDeque;
use std::future::Future;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use monoio::net::{TcpListener, TcpStream};

use crate::chunked::{ChunkedDecoder, Decoded};
use crate::drain::Drain;
use crate::error::ProtocolError;
use crate::http::request::{parse_head, BodyFraming, Parsed, Request};
use crate::http::response::Responder;
use crate::stats::{ShardStats, StatsRef};
use crate::stream::ClientStream;

/// Limits on client connections, one field per `limits.*` config key (timeouts as
/// [`Duration`]s where the key says `*_timeout_ms`); see `Limits` in the `gatekeeper` crate
/// for defaults.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// Largest request head (request line + headers), bytes. Exceeded: 431 and close.
    pub header_bytes_max: usize,
    /// Most header fields in one request. Exceeded: 431 and close.
    pub header_count_max: usize,
    /// Largest request body after de-chunking, bytes. Exceeded: 413 and close.
    pub body_bytes_max: usize,
    /// From the first byte of a request to the end of its head. Exceeded: 408 and close.
    pub header_timeout: Duration,
    /// From the end of the head to the end of the body. Exceeded: 408 and close.
    pub body_timeout: Duration,
    /// Longest silence between two requests on a keep-alive connection. Exceeded: closed
    /// without an answer.
    pub idle_timeout: Duration,
    /// Open client connections per shard. Exceeded: 503 and close.
    pub connections_per_shard_max: usize,
    /// Requests parsed ahead of the one being answered on one connection (pipelining).
    /// Exceeded: the connection stops taking requests off its buffer, and so stops reading
    /// the socket, until answers drain; the client's later requests wait in its socket.
    /// 0 parses nothing ahead.
    pub pipeline_depth_max: usize,
}

/// The application a shard serves. One value per shard, built on that shard's thread.
pub trait Handler: 'static {
    /// Answers one request through `res`. Called one request at a time per
    /// connection, so pipelined requests are answered in order.
    fn handle(&self, req: Request, res: &mut Responder<'_>) -> impl Future<Output = ()>;

    /// The JSON body answering a request that broke the protocol or a limit.
    fn protocol_error_body(&self, err: &ProtocolError) -> Vec<u8>;
}

/// Read buffer headroom taken per read, bytes.
const READ_CHUNK_BYTES: usize = 8 * 1024;

/// Accepts connections until the shard drains, spawning one task per connection.
pub(crate) async fn accept_loop<H: Handler>(
    listener: TcpListener,
    handler: Rc<H>,
    limits: Rc<ServerLimits>,
    tls: Option<monoio_rustls::TlsAcceptor>,
    stats: Rc<StatsRef>,
    drain: Drain,
) {
    let open = Rc::new(Cell::new(0usize));
    loop {
        let accepted = monoio::select! {
            r = listener.accept() => r,
            _ = drain.wait() => break,
        };
        let (tcp, _peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                monoio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        stats.connections_accepted_total.inc();
        if open.get() >= limits.connections_per_shard_max {
            stats.connections_rejected_total.inc();
            let handler = handler.clone();
            monoio::spawn(async move { reject_overloaded(tcp, &*handler).await });
            continue;
        }
        open.set(open.get() + 1);
        stats.connections_open.set(open.get() as u64);
        let guard = OpenGuard { open: open.clone(), stats: stats.clone() };
        let (handler, limits, tls, stats, drain) =
            (handler.clone(), limits.clone(), tls.clone(), stats.clone(), drain.clone());
        monoio::spawn(async move {
            let _guard = guard;
            let stream = match tls {
                None => ClientStream::Plain(tcp),
                Some(acceptor) => match monoio::time::timeout(limits.header_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => ClientStream::Tls(Box::new(s)),
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "TLS handshake failed");
                        stats.tls_handshake_failures_total.inc();
                        return;
                    }
                    Err(_) => {
                        stats.tls_handshake_failures_total.inc();
                        return;
                    }
                },
            };
            serve_connection(stream, &*handler, &limits, &stats, &drain).await;
        });
    }
    // Draining: stop accepting at once; connections finish on their own.
    drop(listener);
    while open.get() > 0 {
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Keeps the shard's open-connection count right however a connection task ends.
struct OpenGuard {
    open: Rc<Cell<usize>>,
    stats: Rc<StatsRef>,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        let n = self.open.get().saturating_sub(1);
        self.open.set(n);
        self.stats.connections_open.set(n as u64);
    }
}

async fn reject_overloaded<H: Handler>(tcp: TcpStream, handler: &H) {
    let mut stream = ClientStream::Plain(tcp);
    let mut out = Vec::new();
    let mut res = Responder::new(&mut stream, &mut out, false, 1);
    let err = ProtocolError::Overloaded;
    let body = handler.protocol_error_body(&err);
    let _ = res.send(err.status(), &[("Content-Type", b"application/json"), ("Retry-After", b"1")], &body).await;
}

/// What waiting for the next request produced.
enum Next {
    Request(Request),
    /// The connection is done (closed, idle too long, draining); nothing to answer.
    Close,
    /// A protocol error to answer before closing.
    Error(ProtocolError),
}

/// A request taken off the connection's buffer ahead of its turn, in the order sent.
enum Ahead {
    /// Head and body complete.
    Ready(Request),
    /// Head complete; the body still to read, from the buffer and then the socket.
    Head(Request),
    /// A protocol error, answered in its turn before the connection closes.
    Error(ProtocolError),
}

/// Serves requests on one connection, in order, until it closes.
///
/// Requests are answered one at a time. While one is answered, up to
/// `pipeline_depth_max` more that already sit whole in the read buffer wait parsed in
/// `ahead`; the socket is read only once `ahead` is empty and the buffer holds no whole
/// request, so the read-ahead is bounded by that queue plus one socket read of bytes.
async fn serve_connection<H: Handler>(
    mut stream: ClientStream,
    handler: &H,
    limits: &ServerLimits,
    stats: &ShardStats,
    drain: &Drain,
) {
    let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
    let mut out = Vec::with_capacity(READ_CHUNK_BYTES);
    // Allocated only if the client pipelines.
    let mut ahead = VecDeque::new();
    loop {
        let next = match ahead.pop_front() {
            Some(Ahead::Ready(req)) => Next::Request(req),
            Some(Ahead::Head(req)) => read_body(&mut stream, &mut buf, &mut out, limits, req).await,
            Some(Ahead::Error(err)) => Next::Error(err),
            None => match read_head(&mut stream, &mut buf, limits, drain).await {
                Next::Request(req) => read_body(&mut stream, &mut buf, &mut out, limits, req).await,
                other => other,
            },
        };
        let req = match next {
            Next::Request(r) => r,
            Next::Close => break,
            Next::Error(err) => {
                stats.protocol_errors_total.inc();
                let body = handler.protocol_error_body(&err);
                let mut res = Responder::new(&mut stream, &mut out, false, 1);
                let _ = res.send(err.status(), &[("Content-Type", b"application/json")], &body).await;
                break;
            }
        };
        stats.requests_total.inc();
        let keep_alive = req.keep_alive && !drain.is_draining();
        if keep_alive {
            parse_ahead(&mut buf, &mut ahead, limits);
            stats.pipeline_depth_peak.raise(ahead.len() as u64);
        }
        let version_minor = req.version_minor;
        let mut res = Responder::new(&mut stream, &mut out, keep_alive, version_minor);
        handler.handle(req, &mut res).await;
        if res.is_idle() {
            // A handler that answered nothing is our bug; the client still gets an answer.
            debug_assert!(false, "handler returned without answering");
            res.close_after();
            let _ = res.send(500, &[], b"").await;
            break;
        }
        if !res.is_complete() || !res.keep_alive() {
            break;
        }
    }
    stream.shutdown().await;
}

/// Moves the requests that already sit in `buf` into `ahead`, until it holds
/// `pipeline_depth_max`, without touching the socket. Stops after a request whose body is
/// not all in `buf` (its body is read when its turn comes) and after a protocol error
/// (answered in its turn), since nothing after either can be parsed yet.
fn parse_ahead(buf: &mut BytesMut, ahead: &mut VecDeque<Ahead>, limits: &ServerLimits) {
    while ahead.len() < limits.pipeline_depth_max && !buf.is_empty() {
        if matches!(ahead.back(), Some(Ahead::Head(_) | Ahead::Error(_))) {
            return;
        }
        let mut req = match parse_head(buf, limits.header_bytes_max, limits.header_count_max) {
            Ok(Parsed::Complete(req)) => req,
            Ok(Parsed::Partial) => return,
            Err(e) => {
                ahead.push_back(Ahead::Error(e));
                return;
            }
        };
        let whole_body = match req.framing {
            BodyFraming::Empty => Some(0),
            BodyFraming::Length(n) if n <= limits.body_bytes_max as u64 => {
                usize::try_from(n).ok().filter(|&n| n <= buf.len())
            }
            // Too large, chunked, or not all here: the body reader decides in its turn.
            BodyFraming::Length(_) | BodyFraming::Chunked => None,
        };
        match whole_body {
            Some(n) => {
                req.body = buf.split_to(n).freeze();
                ahead.push_back(Ahead::Ready(req));
            }
            None => ahead.push_back(Ahead::Head(req)),
        }
    }
}

/// Waits for the next request and reads its head from `stream`, enforcing the idle and
/// header limits; the body is left to [`read_body`].
async fn read_head(stream: &mut ClientStream, buf: &mut BytesMut, limits: &ServerLimits, drain: &Drain) -> Next {
    // Wait for the first byte of the next request: idle timeout, or the drain.
    if buf.is_empty() {
        if drain.is_draining() {
            return Next::Close;
        }
        buf.reserve(READ_CHUNK_BYTES);
        let taken = std::mem::take(buf);
        let read = monoio::select! {
            r = monoio::time::timeout(limits.idle_timeout, stream.read_append(taken)) => Some(r),
            _ = drain.wait() => None,
        };
        match read {
            Some(Ok((Ok(n), b))) if n > 0 => *buf = b,
            _ => return Next::Close,
        }
    }
    let header_deadline = Instant::now() + limits.header_timeout;
    loop {
        match parse_head(buf, limits.header_bytes_max, limits.header_count_max) {
            Ok(Parsed::Complete(req)) => return Next::Request(req),
            Ok(Parsed::Partial) => {}
            Err(e) => return Next::Error(e),
        }
        match read_more(stream, buf, header_deadline).await {
            ReadMore::Data => {}
            ReadMore::Closed if buf.is_empty() => return Next::Close,
            ReadMore::Closed => return Next::Error(ProtocolError::Truncated),
            ReadMore::TimedOut => {
                return Next::Error(ProtocolError::HeaderTimeout { limit_ms: limits.header_timeout.as_millis() as u64 })
            }
        }
    }
}

/// Reads the body of `req`, whose head was the last thing taken off `buf`, from `buf` and
/// then `stream`, enforcing the body limits.
async fn read_body(
    stream: &mut ClientStream,
    buf: &mut BytesMut,
    out: &mut Vec<u8>,
    limits: &ServerLimits,
    mut req: Request,
) -> Next {
    let body_deadline = Instant::now() + limits.body_timeout;
    let body_timeout = || ProtocolError::BodyTimeout { limit_ms: limits.body_timeout.as_millis() as u64 };
    let too_large = ProtocolError::BodyTooLarge { limit_bytes: limits.body_bytes_max };
    match req.framing {
        BodyFraming::Empty => {}
        BodyFraming::Length(n) => {
            if n > limits.body_bytes_max as u64 {
                return Next::Error(too_large);
            }
            let n = n as usize;
            if req.expect_continue && buf.len() < n && !send_continue(stream, out).await {
                return Next::Close;
            }
            buf.reserve(n.saturating_sub(buf.len()));
            while buf.len() < n {
                match read_more(stream, buf, body_deadline).await {
                    ReadMore::Data => {}
                    ReadMore::Closed => return Next::Error(ProtocolError::Truncated),
                    ReadMore::TimedOut => return Next::Error(body_timeout()),
                }
            }
            req.body = buf.split_to(n).freeze();
        }
        BodyFraming::Chunked => {
            if req.expect_continue && !send_continue(stream, out).await {
                return Next::Close;
            }
            let mut decoder = ChunkedDecoder::new(limits.body_bytes_max as u64);
            let mut body = BytesMut::new();
            loop {
                match decoder.decode(buf) {
                    Ok(Decoded::Data(piece)) => body.extend_from_slice(&piece),
                    Ok(Decoded::End) => break,
                    Ok(Decoded::NeedMore) => match read_more(stream, buf, body_deadline).await {
                        ReadMore::Data => {}
                        ReadMore::Closed => return Next::Error(ProtocolError::Truncated),
                        ReadMore::TimedOut => return Next::Error(body_timeout()),
                    },
                    Err(crate::chunked::ChunkedError::TooLarge) => return Next::Error(too_large),
                    Err(_) => return Next::Error(ProtocolError::Malformed("invalid chunked body")),
                }
            }
            req.body = body.freeze();
        }
    }
    Next::Request(req)
}

async fn send_continue(stream: &mut ClientStream, out: &mut Vec<u8>) -> bool {
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
    let (res, b) = stream.write_all(std::mem::take(out)).await;
    *out = b;
    res.is_ok()
}

enum ReadMore {
    Data,
    Closed,
    TimedOut,
}

async fn read_more(stream: &mut ClientStream, buf: &mut BytesMut, deadline: Instant) -> ReadMore {
    let Some(left) = deadline.checked_duration_since(Instant::now()) else {
        return ReadMore::TimedOut;
    };
    if buf.capacity() - buf.len() < READ_CHUNK_BYTES / 2 {
        buf.reserve(READ_CHUNK_BYTES);
    }
    let taken = std::mem::take(buf);
    match monoio::time::timeout(left, stream.read_append(taken)).await {
        Ok((Ok(n), b)) => {
            *buf = b;
            if n == 0 {
                ReadMore::Closed
            } else {
                ReadMore::Data
            }
        }
        Ok((Err(_), b)) => {
            *buf = b;
            ReadMore::Closed
        }
        // The buffer went with the cancelled read; the connection closes anyway.
        Err(_) => ReadMore::TimedOut,
    }
}
