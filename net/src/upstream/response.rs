//! A response being received: its head, and its body read piece by piece.

use std::{rc::Rc, time::Duration, time::SystemTime};

use bytes::{Bytes, BytesMut};
use monoio::time::timeout;

use super::{
    conn::Conn,
    error::UpstreamError,
    head::{self, Framing, Head},
    httpdate,
    shared::{Lease, PoolInner},
};
use crate::chunked::Decoded;

/// A response whose head has arrived; the body is read with [`Response::chunk`] or
/// [`Response::read_to_end`].
///
/// When the body ends cleanly on a keep-alive connection, the connection goes back to the pool
/// at once. Dropping a `Response` before its end closes the connection (it is never reused
/// half-read) and frees its pool slot.
pub struct Response {
    /// The status code of the final (non-1xx) response.
    pub status: u16,
    head: Head,
    framing: Framing,
    /// Body length declared by `Content-Length` (when that is the framing).
    declared_length: Option<u64>,
    /// Keep-alive allowed by the head and by the framing.
    reusable: bool,
    /// `Some` until the body ended or failed.
    conn: Option<Conn>,
    lease: Option<Lease>,
    pool: Rc<PoolInner>,
    /// Set once a body read failed; later reads repeat a generic error.
    failed: bool,
    /// This response's bound on each wait for bytes, when tighter than the pool's
    /// `read_idle_timeout_ms` ([`Response::bound_reads`]).
    read_idle: Option<Duration>,
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("framing", &self.framing)
            .field("reusable", &self.reusable)
            .finish_non_exhaustive()
    }
}

impl Response {
    pub(crate) fn new(head: Head, conn: Conn, lease: Lease, pool: Rc<PoolInner>) -> Result<Response, UpstreamError> {
        let (framing, framing_reusable) = head.framing()?;
        let declared_length = match framing {
            Framing::Length(n) => Some(n),
            Framing::Empty => head.content_length().ok().flatten(),
            Framing::Chunked(_) | Framing::Close => None,
        };
        let mut response = Response {
            status: head.status,
            declared_length,
            reusable: framing_reusable && head.keep_alive(),
            head,
            framing,
            conn: Some(conn),
            lease: Some(lease),
            pool,
            failed: false,
            read_idle: None,
        };
        if matches!(response.framing, Framing::Empty) {
            response.finish();
        }
        Ok(response)
    }

    /// The value of the first header named `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.head.get(name)
    }

    /// All headers in the order received, names as sent.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.head.iter()
    }

    /// The declared body length, if the response has a valid `Content-Length` and is not
    /// chunked.
    pub fn content_length(&self) -> Option<u64> {
        self.declared_length
    }

    /// `Retry-After` as a delay: delta-seconds, or an HTTP-date minus now (zero if past).
    /// `None` when absent or unparsable.
    pub fn retry_after(&self) -> Option<Duration> {
        let value = self.header("retry-after")?.trim_ascii();
        if let Some(secs) = head::parse_decimal(value) {
            return Some(Duration::from_secs(secs));
        }
        let at = httpdate::parse(value)?;
        Some(at.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO))
    }

    /// Bounds every later wait for bytes of this body by `idle` when that is tighter than
    /// the pool's `read_idle_timeout_ms` (a stream's inter-chunk timeout): a wait past it
    /// fails with [`UpstreamError::ReadIdleTimeout`]. Returns the bound now in force.
    pub fn bound_reads(&mut self, idle: Duration) -> Duration {
        let bound = idle.min(self.pool.read_idle_timeout());
        self.read_idle = Some(bound);
        bound
    }

    /// The next piece of the decoded body, as soon as it arrives (one socket read at most,
    /// so streamed events are relayed as they come); `Ok(None)` at the clean end. Every wait
    /// for bytes is bounded by `read_idle_timeout_ms`. After an error the connection is
    /// closed and later calls fail too.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, UpstreamError> {
        if self.failed {
            return Err(UpstreamError::ClosedEarly);
        }
        let result = self.next_piece().await;
        if let Err(e) = &result {
            self.failed = true;
            // Close now: never reuse a connection in an unknown state.
            self.conn = None;
            self.lease = None;
            self.pool.count_error(e);
        }
        result
    }

    /// The whole remaining body, failing with [`UpstreamError::BodyTooLarge`] (and closing
    /// the connection) once it would exceed `body_bytes_max`.
    pub async fn read_to_end(&mut self, body_bytes_max: usize) -> Result<Bytes, UpstreamError> {
        if let Framing::Length(n) = self.framing {
            if n > body_bytes_max as u64 {
                return Err(self.fail(UpstreamError::BodyTooLarge(body_bytes_max)));
            }
        }
        // A body that arrives in one piece is returned without a copy.
        let mut first: Option<Bytes> = None;
        let mut rest = BytesMut::new();
        let mut total = 0usize;
        // Bounded: each turn adds at least one byte, and total is capped below.
        while let Some(piece) = self.chunk().await? {
            total = total.saturating_add(piece.len());
            if total > body_bytes_max {
                return Err(self.fail(UpstreamError::BodyTooLarge(body_bytes_max)));
            }
            match &first {
                None => first = Some(piece),
                Some(f) => {
                    if rest.is_empty() {
                        rest.reserve(total);
                        rest.extend_from_slice(f);
                    }
                    rest.extend_from_slice(&piece);
                }
            }
        }
        Ok(if rest.is_empty() { first.unwrap_or_default() } else { rest.freeze() })
    }

    fn fail(&mut self, e: UpstreamError) -> UpstreamError {
        self.failed = true;
        self.conn = None;
        self.lease = None;
        self.pool.count_error(&e);
        e
    }

    /// Ends the body: pool the connection if it may carry another request, else close it.
    fn finish(&mut self) {
        self.framing = Framing::Empty;
        let (Some(conn), Some(lease)) = (self.conn.take(), self.lease.take()) else {
            return;
        };
        // Bytes after the end of the body were not asked for: the peer is confused or
        // pipelining junk, so the connection is not trusted again.
        if self.reusable && conn.read_buf.is_empty() {
            lease.release(conn);
        }
    }

    async fn next_piece(&mut self) -> Result<Option<Bytes>, UpstreamError> {
        let idle = self.read_idle.unwrap_or_else(|| self.pool.read_idle_timeout());
        // Bounded: each turn returns or reads at least one byte; buffered bytes never exceed
        // one read plus a partial chunk-size line (capped by the decoder).
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Ok(None);
            };
            match &mut self.framing {
                Framing::Empty => {
                    self.finish();
                    return Ok(None);
                }
                Framing::Length(remaining) => {
                    if !conn.read_buf.is_empty() {
                        let take = usize::try_from(*remaining).unwrap_or(usize::MAX).min(conn.read_buf.len());
                        let piece = conn.read_buf.split_to(take).freeze();
                        *remaining -= take as u64;
                        if *remaining == 0 {
                            // Pool the connection now, even if the caller never asks again.
                            self.finish();
                        }
                        return Ok(Some(piece));
                    }
                }
                Framing::Chunked(decoder) => match decoder
                    .decode(&mut conn.read_buf)
                    .map_err(|_| UpstreamError::Protocol("invalid chunked body"))?
                {
                    Decoded::Data(piece) => return Ok(Some(piece)),
                    Decoded::End => {
                        self.finish();
                        return Ok(None);
                    }
                    Decoded::NeedMore => debug_assert!(!decoder.is_done()),
                },
                Framing::Close => {
                    if !conn.read_buf.is_empty() {
                        return Ok(Some(conn.read_buf.split().freeze()));
                    }
                }
            }
            match timeout(idle, conn.read_more()).await {
                Err(_) => return Err(UpstreamError::ReadIdleTimeout),
                Ok(Ok(0)) if matches!(self.framing, Framing::Close) => {
                    // TLS without close_notify surfaces as an UnexpectedEof error below, so a
                    // truncated close-delimited TLS body is never taken for a complete one.
                    self.reusable = false;
                    self.finish();
                    return Ok(None);
                }
                Ok(Ok(0)) => return Err(UpstreamError::ClosedEarly),
                Ok(Ok(_)) => {}
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof && conn.is_tls() => {
                    return Err(UpstreamError::ClosedEarly)
                }
                Ok(Err(e)) => return Err(UpstreamError::Io(e)),
            }
        }
    }
}
