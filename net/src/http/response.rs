//! Writing answers to a client connection: whole bodies, or streams relayed chunk by chunk.

use std::io;

use crate::stream::ClientStream;

/// Where a response stands on its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing written yet.
    Idle,
    /// A streamed body is open.
    Streaming,
    /// The response is complete.
    Done,
    /// Writing failed or the stream was abandoned; the connection must close.
    Broken,
}

/// Writes one response to a client connection.
///
/// Handed to [`crate::Handler::handle`]; a handler calls either [`Responder::send`]
/// once, or [`Responder::start_stream`], any number of [`Responder::send_chunk`] and
/// [`Responder::end_stream`]. Every write goes to the socket at once: a streamed chunk
/// reaches the client when it is passed in, and the next read from upstream waits
/// for it (backpressure). A write the client does not take within the write timeout
/// fails, and the connection closes.
///
/// The answer to a `HEAD` request carries the head alone: the same status and headers,
/// `Content-Length` included, and never a byte of body, whatever the handler passes in
/// (RFC 9110 §9.3.2) — a body there would be read as the start of the next answer.
pub struct Responder<'a> {
    stream: &'a mut ClientStream,
    out: &'a mut Vec<u8>,
    state: State,
    keep_alive: bool,
    chunked: bool,
    version_minor: u8,
    head_only: bool,
    bytes_sent: u64,
}

impl<'a> Responder<'a> {
    /// A responder for one request; `head_only` for a `HEAD` request.
    pub(crate) fn new(
        stream: &'a mut ClientStream,
        out: &'a mut Vec<u8>,
        keep_alive: bool,
        version_minor: u8,
        head_only: bool,
    ) -> Self {
        Responder {
            stream,
            out,
            state: State::Idle,
            keep_alive,
            chunked: false,
            version_minor,
            head_only,
            bytes_sent: 0,
        }
    }

    /// Whether any byte of the response has been written (no failover after that).
    pub fn started(&self) -> bool {
        self.state != State::Idle
    }

    /// Whether the connection stays open after this response.
    pub fn keep_alive(&self) -> bool {
        self.keep_alive && self.state == State::Done
    }

    /// Asks for the connection to close after this response (`Connection: close`).
    pub fn close_after(&mut self) {
        debug_assert_eq!(self.state, State::Idle, "close_after once the head is out has no effect");
        self.keep_alive = false;
    }

    /// Bytes written to the socket for this response, head included.
    pub fn bytes_sent(&self) -> u64 {
        self.bytes_sent
    }

    pub(crate) fn is_complete(&self) -> bool {
        self.state == State::Done
    }

    pub(crate) fn is_idle(&self) -> bool {
        self.state == State::Idle
    }

    /// Sends a whole response with `Content-Length`.
    pub async fn send(&mut self, status: u16, headers: &[(&str, &[u8])], body: &[u8]) -> io::Result<()> {
        self.expect_state(State::Idle)?;
        self.out.clear();
        self.out.reserve(head_bytes(headers).saturating_add(body.len()));
        self.write_head(status, headers, Some(body.len()));
        if !self.head_only {
            self.out.extend_from_slice(body);
        }
        self.flush_out().await?;
        self.state = State::Done;
        Ok(())
    }

    /// Sends the head of a streamed response: chunked for HTTP/1.1, close-delimited for HTTP/1.0.
    pub async fn start_stream(&mut self, status: u16, headers: &[(&str, &[u8])]) -> io::Result<()> {
        self.expect_state(State::Idle)?;
        self.chunked = self.version_minor >= 1;
        if !self.chunked {
            self.keep_alive = false;
        }
        self.out.clear();
        self.out.reserve(head_bytes(headers));
        self.write_head(status, headers, None);
        self.flush_out().await?;
        self.state = State::Streaming;
        Ok(())
    }

    /// Sends one piece of a streamed body; empty pieces are skipped (an empty chunk would end the body).
    pub async fn send_chunk(&mut self, data: &[u8]) -> io::Result<()> {
        self.expect_state(State::Streaming)?;
        if data.is_empty() || self.head_only {
            return Ok(());
        }
        self.out.clear();
        // Size line (hex digits and CRLF) and the CRLF after the data.
        self.out.reserve(data.len().saturating_add(24));
        if self.chunked {
            use std::io::Write;
            // Writing into a Vec cannot fail.
            let _ = write!(self.out, "{:x}\r\n", data.len());
            self.out.extend_from_slice(data);
            self.out.extend_from_slice(b"\r\n");
        } else {
            self.out.extend_from_slice(data);
        }
        self.flush_out().await
    }

    /// Ends a streamed body cleanly.
    pub async fn end_stream(&mut self) -> io::Result<()> {
        self.expect_state(State::Streaming)?;
        if self.chunked && !self.head_only {
            self.out.clear();
            self.out.extend_from_slice(b"0\r\n\r\n");
            self.flush_out().await?;
        }
        self.state = State::Done;
        Ok(())
    }

    /// Gives up on a started stream: the connection closes without the terminating
    /// chunk, so a client can tell the body is incomplete.
    pub fn abort(&mut self) {
        self.state = State::Broken;
        self.keep_alive = false;
    }

    fn expect_state(&self, want: State) -> io::Result<()> {
        if self.state == want {
            Ok(())
        } else {
            Err(io::Error::other(format!("response is {:?}, not {:?}", self.state, want)))
        }
    }

    fn write_head(&mut self, status: u16, headers: &[(&str, &[u8])], content_length: Option<usize>) {
        use std::io::Write;
        let out = &mut *self.out;
        // Writing into a Vec cannot fail.
        let _ = write!(out, "HTTP/1.{} {} {}\r\n", self.version_minor.min(1), status, reason(status));
        for (name, value) in headers {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        match content_length {
            Some(n) => {
                let _ = write!(out, "Content-Length: {n}\r\n");
            }
            None if self.chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
            None => {}
        }
        if !self.keep_alive {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if self.version_minor == 0 {
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }

    async fn flush_out(&mut self) -> io::Result<()> {
        let buf = std::mem::take(self.out);
        let len = buf.len() as u64;
        let (res, buf) = self.stream.write_all(buf).await;
        *self.out = buf;
        if res.is_err() {
            self.state = State::Broken;
            self.keep_alive = false;
        } else {
            self.bytes_sent += len;
        }
        res
    }
}

/// Room for a response head with `headers`: status line, the fields, and the framing and
/// connection fields the responder adds; reserved at once so the head is not grown byte by
/// byte into a buffer that starts empty on every request.
fn head_bytes(headers: &[(&str, &[u8])]) -> usize {
    headers
        .iter()
        .fold(128, |room: usize, (n, v)| room.saturating_add(n.len()).saturating_add(v.len()).saturating_add(4))
}

/// The reason phrase for a status; clients ignore it, humans reading traces don't.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        417 => "Expectation Failed",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}
