//! The HTTP/1.1 client side of `gk-load run`: URL parsing, and one request/answer
//! exchange over a keep-alive `TcpStream`, timed from the request's intended send time.
//! Body bytes are counted, never kept.

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::stats::ErrorClass;
use crate::http1::{self, ChunkedDecoder, HttpError, ResponseFraming, BODY_BYTES_MAX};

/// Initial capacity of a worker's read buffer; heads and SSE events fit easily.
pub const READ_BUFFER_BYTES: usize = 16 * 1024;
/// Most reads one answer may take: bounds the read loop even for a trickling server
/// (16 MiB body cap / 1 byte per read plus the head).
const READS_PER_ANSWER_MAX: usize = BODY_BYTES_MAX + http1::RESPONSE_HEAD_BYTES_MAX;

/// Where requests go, from `--url http://HOST[:PORT][/PATH]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    /// `HOST[:PORT]` as given, for the Host header.
    pub authority: String,
    /// Host name or address.
    pub host: String,
    /// Port (80 when absent).
    pub port: u16,
    /// Path and query; `/v1/chat/completions` when the URL has none.
    pub path: String,
}

impl Url {
    /// Parses an `http://` URL. `https` is refused: TLS is out of scope for this tool.
    pub fn parse(text: &str) -> Result<Url, String> {
        let rest = text.strip_prefix("http://").ok_or_else(|| format!("{text:?}: only http:// URLs are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/v1/chat/completions"),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(format!("{text:?}: bad host"));
        }
        // Bracketed IPv6 literals keep their colons inside the brackets.
        let (host, port) = match authority.rfind(':') {
            Some(i) if !authority[i..].contains(']') => {
                let port = authority[i + 1..].parse::<u16>().map_err(|_| format!("{text:?}: bad port"))?;
                (&authority[..i], port)
            }
            _ => (authority, 80),
        };
        if path.bytes().any(|c| c <= b' ' || c == 0x7f) {
            return Err(format!("{text:?}: path holds spaces or control bytes"));
        }
        Ok(Url {
            authority: authority.to_string(),
            host: host.trim_start_matches('[').trim_end_matches(']').to_string(),
            port,
            path: path.to_string(),
        })
    }

    /// Resolves the host once, before the run.
    pub async fn resolve(&self) -> io::Result<SocketAddr> {
        tokio::net::lookup_host((self.host.as_str(), self.port))
            .await?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "host has no address"))
    }
}

/// Opens a connection with Nagle off (requests are written in one piece).
pub async fn connect(addr: SocketAddr) -> Result<TcpStream, ErrorClass> {
    let stream = TcpStream::connect(addr).await.map_err(|_| ErrorClass::Connect)?;
    stream.set_nodelay(true).map_err(|_| ErrorClass::Connect)?;
    Ok(stream)
}

/// What one successful exchange produced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// The connection may be reused.
    pub keep_alive: bool,
    /// The answer was `text/event-stream`.
    pub event_stream: bool,
    /// When the first body byte arrived (streams only).
    pub first_body_at: Option<Instant>,
    /// Largest gap between two reads that carried body bytes, µs (streams only).
    pub gap_max_us: Option<u64>,
    /// Bytes read.
    pub bytes_in: u64,
}

/// A failed exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failure {
    /// Error class.
    pub class: ErrorClass,
    /// No byte of the answer arrived (a reused connection may then be retried).
    pub nothing_read: bool,
}

fn io_class(_e: io::Error) -> ErrorClass {
    // Refused/reset/broken pipe/aborted all mean the peer dropped us mid-exchange.
    ErrorClass::Reset
}

/// Tracks body reads of a stream: first-byte time and the largest gap.
struct BodyClock {
    track: bool,
    first: Option<Instant>,
    last: Option<Instant>,
    gap_max_us: u64,
}

impl BodyClock {
    fn body_read(&mut self, at: Instant) {
        if !self.track {
            return;
        }
        if let Some(last) = self.last {
            let gap = at.saturating_duration_since(last).as_micros();
            self.gap_max_us = self.gap_max_us.max(u64::try_from(gap).unwrap_or(u64::MAX));
        } else {
            self.first = Some(at);
        }
        self.last = Some(at);
    }
}

/// Writes `request` and reads one full answer. `rbuf` is the worker's scratch buffer.
pub async fn exchange(stream: &mut TcpStream, request: &[u8], rbuf: &mut Vec<u8>) -> Result<Answer, Failure> {
    let fail = |class, nothing_read| Failure { class, nothing_read };
    stream.write_all(request).await.map_err(|e| fail(io_class(e), true))?;
    rbuf.clear();
    let mut bytes_in = 0u64;
    // Head: read until httparse sees all of it. Bounded: each pass reads >= 1 byte and the
    // head is capped at RESPONSE_HEAD_BYTES_MAX.
    let (head, head_len) = loop {
        let n = stream.read_buf(rbuf).await.map_err(|e| fail(io_class(e), bytes_in == 0))?;
        if n == 0 {
            return Err(fail(ErrorClass::Reset, bytes_in == 0));
        }
        bytes_in += n as u64;
        match http1::parse_response_head(rbuf) {
            Ok(Some(h)) => break h,
            Ok(None) => {}
            Err(_) => return Err(fail(ErrorClass::Protocol, false)),
        }
    };
    let now = Instant::now();
    let mut clock = BodyClock { track: head.event_stream, first: None, last: None, gap_max_us: 0 };
    let mut answer = Answer {
        status: head.status,
        keep_alive: head.keep_alive,
        event_stream: head.event_stream,
        ..Answer::default()
    };
    let body_now = rbuf.len() - head_len;
    if body_now > 0 {
        clock.body_read(now);
    }
    match head.framing {
        ResponseFraming::Length(n) => {
            if body_now > n {
                // Bytes beyond the answer: we never pipeline, so the server misbehaved.
                return Err(fail(ErrorClass::Protocol, false));
            }
            let mut have = body_now;
            rbuf.clear();
            for _ in 0..READS_PER_ANSWER_MAX {
                if have == n {
                    break;
                }
                let got = read_some(stream, rbuf).await?;
                clock.body_read(Instant::now());
                have += got;
                bytes_in += got as u64;
                rbuf.clear();
                if have > n {
                    return Err(fail(ErrorClass::Protocol, false));
                }
            }
            if have != n {
                return Err(fail(ErrorClass::Protocol, false));
            }
        }
        ResponseFraming::Chunked => {
            let mut decoder = ChunkedDecoder::discarding();
            rbuf.drain(..head_len);
            for _ in 0..READS_PER_ANSWER_MAX {
                let used = decoder.feed(rbuf).map_err(|e| fail(http_class(e), false))?;
                rbuf.drain(..used);
                if decoder.is_done() {
                    break;
                }
                let got = read_some(stream, rbuf).await?;
                clock.body_read(Instant::now());
                bytes_in += got as u64;
            }
            if !decoder.is_done() || !rbuf.is_empty() {
                return Err(fail(ErrorClass::Protocol, false));
            }
        }
        ResponseFraming::UntilClose => {
            let mut have = body_now;
            rbuf.clear();
            for _ in 0..READS_PER_ANSWER_MAX {
                let n = stream.read_buf(rbuf).await.map_err(|e| fail(io_class(e), false))?;
                if n == 0 {
                    break;
                }
                clock.body_read(Instant::now());
                have += n;
                bytes_in += n as u64;
                rbuf.clear();
                if have > BODY_BYTES_MAX {
                    return Err(fail(ErrorClass::Protocol, false));
                }
            }
            answer.keep_alive = false;
        }
    }
    answer.bytes_in = bytes_in;
    if clock.track {
        answer.first_body_at = clock.first;
        answer.gap_max_us = Some(clock.gap_max_us);
    }
    Ok(answer)
}

fn http_class(_e: HttpError) -> ErrorClass {
    ErrorClass::Protocol
}

/// Reads at least one byte; end of stream mid-answer is a reset.
async fn read_some(stream: &mut TcpStream, rbuf: &mut Vec<u8>) -> Result<usize, Failure> {
    match stream.read_buf(rbuf).await {
        Ok(0) => Err(Failure { class: ErrorClass::Reset, nothing_read: false }),
        Ok(n) => Ok(n),
        Err(e) => Err(Failure { class: io_class(e), nothing_read: false }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let u = Url::parse("http://127.0.0.1:8080/v1/chat/completions?x=1").expect("valid");
        assert_eq!(u.host, "127.0.0.1");
        assert_eq!(u.port, 8080);
        assert_eq!(u.authority, "127.0.0.1:8080");
        assert_eq!(u.path, "/v1/chat/completions?x=1");
        let d = Url::parse("http://example.com").expect("valid");
        assert_eq!((d.port, d.path.as_str()), (80, "/v1/chat/completions"));
        let v6 = Url::parse("http://[::1]:9000/").expect("valid");
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 9000));
        assert!(Url::parse("https://x/").is_err());
        assert!(Url::parse("http://x:99999/").is_err());
        assert!(Url::parse("http:///").is_err());
        assert!(Url::parse("http://x/a b").is_err());
    }
}
