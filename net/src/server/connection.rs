//! Serving one client connection: requests in order, pipelined ones parsed ahead within a
//! bound, each answered by the application, until the connection closes.

use std::collections::VecDeque;

use bytes::BytesMut;

use crate::drain::Drain;
use crate::error::ProtocolError;
use crate::http::request::{parse_head, BodyFraming, Parsed, Request};
use crate::http::response::Responder;
use crate::server::budget::BodyBudget;
use crate::server::handler::Handler;
use crate::server::limits::ServerLimits;
use crate::server::read::{read_body, read_head, wait_readable, Next, Whole};
use crate::stats::ShardStats;
use crate::stream::ClientStream;
use crate::timers::CoarseTimers;

/// What a connection shares with the rest of its shard.
pub(crate) struct ShardParts<'a, H> {
    /// The application.
    pub(crate) handler: &'a H,
    /// The limits every connection obeys.
    pub(crate) limits: &'a ServerLimits,
    /// The shard's statistics.
    pub(crate) stats: &'a ShardStats,
    /// The shard's drain signal.
    pub(crate) drain: &'a Drain,
    /// The shard's budget of request-body bytes.
    pub(crate) budget: &'a BodyBudget,
    /// The shard's idle timers.
    pub(crate) timers: &'a CoarseTimers,
}

/// A request taken off the connection's buffer ahead of its turn, in the order sent.
enum Ahead<'b> {
    /// Head and body complete; the body is charged to the budget.
    Ready(Whole<'b>),
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
///
/// Between requests the connection holds no buffer: the read buffer, the write buffer and
/// the read-ahead queue are released whenever all three are empty, and the task waits for
/// the next request's first bytes in a future of a few hundred bytes. Everything serving a
/// request needs ([`serve_next`], the application's future with it) is boxed for the time
/// it takes, so an idle connection's task never carries its space.
pub(crate) async fn serve_connection<H: Handler>(mut stream: ClientStream, shard: &ShardParts<'_, H>) {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut ahead = VecDeque::new();
    loop {
        if ahead.is_empty() && buf.is_empty() {
            (buf, out, ahead) = (BytesMut::new(), Vec::new(), VecDeque::new());
            if !wait_readable(&mut stream, &mut buf, shard.limits, shard.timers, shard.drain).await {
                break;
            }
        }
        if !Box::pin(serve_next(&mut stream, &mut buf, &mut out, &mut ahead, shard)).await {
            break;
        }
    }
    // The queue may hold bodies charged to the budget: give them back before the
    // (possibly slow) polite close.
    drop(ahead);
    Box::pin(stream.shutdown()).await;
    if stream.write_timed_out() {
        shard.stats.write_timeouts_total.inc();
    }
}

/// Takes the next request — parsed ahead, in the buffer, or still in the socket — and
/// answers it; false when the connection is to close.
async fn serve_next<'b, H: Handler>(
    stream: &mut ClientStream,
    buf: &mut BytesMut,
    out: &mut Vec<u8>,
    ahead: &mut VecDeque<Ahead<'b>>,
    shard: &ShardParts<'b, H>,
) -> bool {
    let ShardParts { handler, limits, stats, drain, budget, .. } = *shard;
    let next = match ahead.pop_front() {
        Some(Ahead::Ready(whole)) => Next::Got(whole),
        Some(Ahead::Head(req)) => read_body(stream, buf, out, limits, budget, req).await,
        Some(Ahead::Error(err)) => Next::Error(err),
        None => match read_head(stream, buf, limits).await {
            Next::Got(req) if req.framing == BodyFraming::Empty => Next::Got((req, budget.nothing())),
            Next::Got(req) => read_body(stream, buf, out, limits, budget, req).await,
            Next::Close => Next::Close,
            Next::Error(e) => Next::Error(e),
        },
    };
    let (req, body_charge) = match next {
        Next::Got(whole) => whole,
        Next::Close => return false,
        Next::Error(err) => {
            answer_error(stream, out, handler, stats, &err).await;
            return false;
        }
    };
    stats.requests_total.inc();
    let keep_alive = req.keep_alive && !drain.is_draining();
    if keep_alive {
        parse_ahead(buf, ahead, limits, budget);
        stats.pipeline_depth_peak.raise(ahead.len() as u64);
    }
    let head_only = req.method() == "HEAD";
    let mut res = Responder::new(stream, out, keep_alive, req.version_minor, head_only);
    handler.handle(req, &mut res).await;
    drop(body_charge);
    if res.is_idle() {
        // A handler that answered nothing is our bug; the client still gets an answer.
        debug_assert!(false, "handler returned without answering");
        res.close_after();
        let _ = res.send(500, &[], b"").await;
        return false;
    }
    res.is_complete() && res.keep_alive()
}

/// Answers a protocol error on a connection about to close.
pub(crate) async fn answer_error<H: Handler>(
    stream: &mut ClientStream,
    out: &mut Vec<u8>,
    handler: &H,
    stats: &ShardStats,
    err: &ProtocolError,
) {
    stats.protocol_errors_total.inc();
    let body = handler.protocol_error_body(err);
    let retry_after = err.retry_after_s().map(|s| s.to_string());
    let mut headers: Vec<(&str, &[u8])> = vec![("Content-Type", b"application/json")];
    if let Some(s) = &retry_after {
        headers.push(("Retry-After", s.as_bytes()));
    }
    let mut res = Responder::new(stream, out, false, 1, false);
    let _ = res.send(err.status(), &headers, &body).await;
}

/// Moves the requests that already sit in `buf` into `ahead`, until it holds
/// `pipeline_depth_max`, without touching the socket. Stops after a request whose body is
/// not all in `buf` (its body is read when its turn comes) and after a protocol error
/// (answered in its turn), since nothing after either can be parsed yet.
fn parse_ahead<'b>(buf: &mut BytesMut, ahead: &mut VecDeque<Ahead<'b>>, limits: &ServerLimits, budget: &'b BodyBudget) {
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
        let Some(n) = whole_body else {
            ahead.push_back(Ahead::Head(req));
            continue;
        };
        // The body is in memory already, but it is held until answered: it counts.
        let Some(charge) = budget.charge(n) else {
            ahead.push_back(Ahead::Error(ProtocolError::BodiesInFlight { limit_bytes: budget.max() }));
            return;
        };
        req.body = buf.split_to(n).freeze();
        ahead.push_back(Ahead::Ready((req, charge)));
    }
}
