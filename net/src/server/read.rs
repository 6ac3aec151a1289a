//! Reading one request off a client connection under the server's limits: waiting for it
//! (idle), its head, then its body.
//!
//! Memory follows bytes that arrived, never bytes announced: an idle connection holds no
//! read buffer, and a body buffer doubles as data comes in, up to the declared length,
//! while the declared length is charged to the shard's [`BodyBudget`] before any of it is
//! read.

use std::time::Instant;

use bytes::BytesMut;

use crate::chunked::{ChunkedDecoder, ChunkedError, Decoded};
use crate::drain::Drain;
use crate::error::ProtocolError;
use crate::http::request::{parse_head, BodyFraming, Parsed, Request};
use crate::server::budget::{BodyBudget, BodyCharge};
use crate::server::limits::ServerLimits;
use crate::stream::ClientStream;
use crate::timers::{deadline_in, CoarseTimers};

/// Read buffer headroom taken per read, bytes.
pub(crate) const READ_CHUNK_BYTES: usize = 8 * 1024;
/// The read buffer taken for a request's first read after the connection idled, bytes:
/// small, as nginx's `client_header_buffer_size`, since most requests fit and a burst of
/// connections waking at once (or closing at once) takes this much each.
const FIRST_READ_BYTES: usize = 1024;
/// First capacity of a body buffer for the part of a body that did not come with its head;
/// it doubles from there as data arrives.
const BODY_CHUNK_BYTES: usize = 16 * 1024;

/// What reading the next piece of a request produced.
pub(crate) enum Next<T> {
    /// The piece.
    Got(T),
    /// The connection is done (closed, idle too long, draining); nothing to answer.
    Close,
    /// A protocol error to answer before closing.
    Error(ProtocolError),
}

/// A request whose body is read, with the budget its body holds until it is answered.
pub(crate) type Whole<'b> = (Request, BodyCharge<'b>);

/// Waits until the client sends the next request's first bytes and reads them into `buf`,
/// within the idle timeout and until the shard drains; false when the connection should
/// close instead (timed out, draining, or closed by the client).
///
/// This is all an idle connection's task holds, so it is kept small: a readiness wait, a
/// slot in the shard's coarse timers and one in its drain signal. A plain connection waits
/// holding no buffer and takes a small one once bytes are there (or the client closed, so
/// a crowd of clients leaving at once costs little). A TLS connection cannot wait that
/// way — only its record layer can tell whether plaintext arrived — so it reads at once;
/// it holds its record layer's buffers while idle anyway.
pub(crate) async fn wait_readable(
    stream: &mut ClientStream,
    buf: &mut BytesMut,
    limits: &ServerLimits,
    timers: &CoarseTimers,
    drain: &Drain,
) -> bool {
    if drain.is_draining() {
        return false;
    }
    let arrived = async {
        if !stream.is_tls() && stream.readable().await.is_err() {
            return false;
        }
        // Boxed: the read's state is needed only now, not while idle.
        buf.reserve(FIRST_READ_BYTES);
        matches!(Box::pin(read_into(stream, buf)).await, ReadMore::Data)
    };
    monoio::select! {
        biased;
        arrived = arrived => arrived,
        _ = timers.sleep_until(deadline_in(limits.idle_timeout)) => false,
        _ = drain.wait() => false,
    }
}

/// Reads the head of the request whose first bytes are in `buf` from `buf` and then
/// `stream`, enforcing the header limits; the body is left to [`read_body`].
pub(crate) async fn read_head(stream: &mut ClientStream, buf: &mut BytesMut, limits: &ServerLimits) -> Next<Request> {
    let header_deadline = deadline_in(limits.header_timeout);
    loop {
        match parse_head(buf, limits.header_bytes_max, limits.header_count_max) {
            Ok(Parsed::Complete(req)) => return Next::Got(req),
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
/// then `stream`, enforcing the body limits and charging the body to `budget`.
pub(crate) async fn read_body<'b>(
    stream: &mut ClientStream,
    buf: &mut BytesMut,
    out: &mut Vec<u8>,
    limits: &ServerLimits,
    budget: &'b BodyBudget,
    mut req: Request,
) -> Next<Whole<'b>> {
    let body_deadline = deadline_in(limits.body_timeout);
    let body_timeout = || ProtocolError::BodyTimeout { limit_ms: limits.body_timeout.as_millis() as u64 };
    let too_large = ProtocolError::BodyTooLarge { limit_bytes: limits.body_bytes_max };
    let over_budget = ProtocolError::BodiesInFlight { limit_bytes: budget.max() };
    let mut charge = budget.nothing();
    match req.framing {
        BodyFraming::Empty => {}
        BodyFraming::Length(n) => {
            let n = match usize::try_from(n) {
                Ok(n) if n <= limits.body_bytes_max => n,
                _ => return Next::Error(too_large),
            };
            // Charged in full before a byte is read: a client that announces a body and
            // sends none is refused here rather than holding memory it never fills.
            if !charge.grow(n) {
                return Next::Error(over_budget);
            }
            if buf.len() >= n {
                req.body = buf.split_to(n).freeze();
                return Next::Got((req, charge));
            }
            if req.expect_continue && !send_continue(stream, out).await {
                return Next::Close;
            }
            let mut body = BytesMut::new();
            let arrived = buf.split();
            make_room(&mut body, arrived.len(), n);
            body.extend_from_slice(&arrived);
            drop(arrived);
            while body.len() < n {
                make_room(&mut body, 1, n);
                match read_before(stream, &mut body, body_deadline).await {
                    ReadMore::Data => {}
                    ReadMore::Closed => return Next::Error(ProtocolError::Truncated),
                    ReadMore::TimedOut => return Next::Error(body_timeout()),
                }
            }
            req.body = body.freeze();
        }
        BodyFraming::Chunked => {
            if req.expect_continue && !send_continue(stream, out).await {
                return Next::Close;
            }
            let mut decoder = ChunkedDecoder::new(limits.body_bytes_max as u64);
            let mut body = BytesMut::new();
            loop {
                match decoder.decode(buf) {
                    Ok(Decoded::Data(piece)) => {
                        // The length is unknown up front: the budget is charged as the body
                        // buffer grows, and the decoder has already held it under
                        // `body_bytes_max`.
                        let before = body.capacity();
                        make_room(&mut body, piece.len(), limits.body_bytes_max);
                        if !charge.grow(body.capacity().saturating_sub(before)) {
                            return Next::Error(over_budget);
                        }
                        body.extend_from_slice(&piece);
                    }
                    Ok(Decoded::End) => break,
                    Ok(Decoded::NeedMore) => match read_more(stream, buf, body_deadline).await {
                        ReadMore::Data => {}
                        ReadMore::Closed => return Next::Error(ProtocolError::Truncated),
                        ReadMore::TimedOut => return Next::Error(body_timeout()),
                    },
                    Err(ChunkedError::TooLarge) => return Next::Error(too_large),
                    Err(_) => return Next::Error(ProtocolError::Malformed("invalid chunked body")),
                }
            }
            req.body = body.freeze();
        }
    }
    Next::Got((req, charge))
}

/// Makes room in `body` for `more` bytes, doubling its capacity (from [`BODY_CHUNK_BYTES`])
/// but never past `ceiling`, the most the body may hold; a no-op when the room is there.
///
/// Grows by copying into an exact allocation rather than `reserve`, whose amortised growth
/// could take twice the ceiling.
fn make_room(body: &mut BytesMut, more: usize, ceiling: usize) {
    let needed = body.len().saturating_add(more);
    if body.capacity() >= needed {
        return;
    }
    let doubled = body.capacity().saturating_mul(2).max(BODY_CHUNK_BYTES);
    let target = doubled.max(needed).min(ceiling.max(needed));
    let mut grown = BytesMut::with_capacity(target);
    grown.extend_from_slice(body);
    *body = grown;
}

async fn send_continue(stream: &mut ClientStream, out: &mut Vec<u8>) -> bool {
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
    let (res, b) = stream.write_all(std::mem::take(out)).await;
    *out = b;
    res.is_ok()
}

/// What one read brought.
pub(crate) enum ReadMore {
    /// At least one byte.
    Data,
    /// The peer closed, or the read failed.
    Closed,
    /// The deadline passed first.
    TimedOut,
}

/// Reads into `buf` before `deadline`, first making [`READ_CHUNK_BYTES`] of room when little
/// is left.
async fn read_more(stream: &mut ClientStream, buf: &mut BytesMut, deadline: Instant) -> ReadMore {
    if buf.capacity() - buf.len() < READ_CHUNK_BYTES / 2 {
        buf.reserve(READ_CHUNK_BYTES);
    }
    read_before(stream, buf, deadline).await
}

/// Reads into the spare capacity of `buf` (there must be some) before `deadline`.
async fn read_before(stream: &mut ClientStream, buf: &mut BytesMut, deadline: Instant) -> ReadMore {
    let Some(left) = deadline.checked_duration_since(Instant::now()) else {
        return ReadMore::TimedOut;
    };
    // On a timeout the buffer went with the cancelled read; the connection closes anyway.
    monoio::time::timeout(left, read_into(stream, buf)).await.unwrap_or(ReadMore::TimedOut)
}

/// Reads once into the spare capacity of `buf` (there must be some).
async fn read_into(stream: &mut ClientStream, buf: &mut BytesMut) -> ReadMore {
    let (res, b) = stream.read_append(std::mem::take(buf)).await;
    *buf = b;
    match res {
        Ok(0) | Err(_) => ReadMore::Closed,
        Ok(_) => ReadMore::Data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_room_doubles_up_to_the_ceiling_and_never_past_it() {
        let mut body = BytesMut::new();
        make_room(&mut body, 1, 100_000);
        assert_eq!(body.capacity(), BODY_CHUNK_BYTES);
        body.extend_from_slice(&vec![1; BODY_CHUNK_BYTES]);
        make_room(&mut body, 1, 100_000);
        assert_eq!(body.capacity(), 2 * BODY_CHUNK_BYTES);
        assert_eq!(body.len(), BODY_CHUNK_BYTES, "the data moved along");
        body.extend_from_slice(&vec![1; BODY_CHUNK_BYTES]);
        make_room(&mut body, 1, 40_000);
        assert_eq!(body.capacity(), 40_000, "capped at the declared length");
        let mut small = BytesMut::new();
        make_room(&mut small, 10, 10);
        assert_eq!(small.capacity(), 10, "a small body gets what it declared");
        let before = small.capacity();
        make_room(&mut small, 5, 10);
        assert_eq!(small.capacity(), before, "room already there");
    }
}
