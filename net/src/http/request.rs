//! Parsing a request head out of a connection's read buffer.
//!
//! The parser is pure: it sees bytes, says "need more", "here is a head of N bytes",
//! or "bad bytes", and never touches a socket, so it is unit-tested and fuzzed alone.

use std::mem::MaybeUninit;
use std::ops::Range;

use bytes::{Bytes, BytesMut};

use crate::error::ProtocolError;

/// The most header fields a request may carry whatever the configuration says;
/// the parser keeps their slots on the stack.
pub const HEADER_COUNT_CEILING: usize = 1024;

/// How the body of a request is framed (RFC 9112 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body.
    Empty,
    /// `Content-Length: n`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A parsed request head; the body is attached by the connection once read.
#[derive(Debug, Clone)]
pub struct Request {
    head: Bytes,
    method: Range<usize>,
    target: Range<usize>,
    headers: Vec<(Range<usize>, Range<usize>)>,
    /// `1` for HTTP/1.1, `0` for HTTP/1.0.
    pub version_minor: u8,
    /// Whether the connection stays open after the answer, as the client asked.
    pub keep_alive: bool,
    /// Whether the client sent `Expect: 100-continue`.
    pub expect_continue: bool,
    /// How the body is framed.
    pub framing: BodyFraming,
    /// The body, de-chunked; empty until read.
    pub body: Bytes,
}

impl Request {
    /// The method, e.g. `POST`.
    pub fn method(&self) -> &str {
        self.str_at(&self.method)
    }

    /// The request target as sent (path and query).
    pub fn target(&self) -> &str {
        self.str_at(&self.target)
    }

    /// The path, without the query string.
    pub fn path(&self) -> &str {
        let t = self.target();
        t.split_once('?').map_or(t, |(p, _)| p)
    }

    /// The first value of a header, matched case-insensitively.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v)
    }

    /// Every header in order of arrival.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.headers.iter().map(|(n, v)| (self.str_at(n), &self.head[v.clone()]))
    }

    /// Size of the head in bytes, request line and final blank line included.
    pub fn head_len(&self) -> usize {
        self.head.len()
    }

    fn str_at(&self, r: &Range<usize>) -> &str {
        // Method, target and header names were checked to be ASCII tokens by httparse.
        std::str::from_utf8(&self.head[r.clone()]).unwrap_or("")
    }
}

/// What [`parse_head`] found in the buffer.
#[derive(Debug)]
pub enum Parsed {
    /// The head is not complete yet; read more (if the limit allows).
    Partial,
    /// A complete head of `len` bytes at the start of the buffer.
    Complete(Request),
}

/// Parses a request head at the start of `buf`.
///
/// On success the head is split off the front of `buf` (no copy) and kept by the
/// returned [`Request`]; what follows it (body, pipelined requests) stays in `buf`.
/// A head longer than `header_bytes_max`, or still incomplete at that length, is
/// [`ProtocolError::HeadTooLarge`].
pub fn parse_head(
    buf: &mut BytesMut,
    header_bytes_max: usize,
    header_count_max: usize,
) -> Result<Parsed, ProtocolError> {
    let count_max = header_count_max.min(HEADER_COUNT_CEILING);
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; HEADER_COUNT_CEILING];
    let mut req = httparse::Request::new(&mut []);
    let window = &buf[..buf.len().min(header_bytes_max)];
    let status = req.parse_with_uninit_headers(window, &mut slots[..count_max]);
    let len = match status {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            if buf.len() >= header_bytes_max {
                return Err(ProtocolError::HeadTooLarge { limit_bytes: header_bytes_max });
            }
            return Ok(Parsed::Partial);
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(ProtocolError::TooManyHeaders { limit: count_max });
        }
        Err(e) => return Err(ProtocolError::Malformed(parse_error_text(e))),
    };
    let base = buf.as_ptr() as usize;
    let range_of = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        start..start + s.len()
    };
    let method = range_of(req.method.unwrap_or("").as_bytes());
    let target = range_of(req.path.unwrap_or("").as_bytes());
    let version_minor = req.version.unwrap_or(1);
    let mut headers = Vec::with_capacity(req.headers.len());
    let mut framing = BodyFraming::Empty;
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut connection_close = version_minor == 0;
    let mut expect_continue = false;
    let mut hosts = 0usize;
    for h in req.headers.iter() {
        headers.push((range_of(h.name.as_bytes()), range_of(h.value)));
        let value = trim(h.value);
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = parse_content_length(value)?;
            if content_length.is_some_and(|old| old != n) {
                return Err(ProtocolError::Malformed("conflicting Content-Length headers"));
            }
            content_length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // Only `chunked` alone is accepted: anything else could be read two ways
            // by us and a peer, which is how request smuggling starts.
            if !value.eq_ignore_ascii_case(b"chunked") || chunked {
                return Err(ProtocolError::UnsupportedTransferEncoding);
            }
            chunked = true;
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in value.split(|b| *b == b',').map(trim) {
                if token.eq_ignore_ascii_case(b"close") {
                    connection_close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && version_minor == 0 {
                    connection_close = false;
                }
            }
        } else if h.name.eq_ignore_ascii_case("expect") {
            // RFC 9110 §10.1.1: an expectation we cannot meet is a 417, never ignored.
            if !value.split(|b| *b == b',').map(trim).all(|m| m.eq_ignore_ascii_case(b"100-continue")) {
                return Err(ProtocolError::ExpectationFailed);
            }
            // An HTTP/1.0 client cannot know 100 Continue; its expectation is ignored.
            expect_continue = version_minor == 1;
        } else if h.name.eq_ignore_ascii_case("host") {
            hosts += 1;
        }
    }
    // RFC 9112 §3.2: HTTP/1.1 requires exactly one Host, and two are never valid, since
    // two parties could each route by a different one.
    if hosts > 1 {
        return Err(ProtocolError::Malformed("more than one Host header"));
    }
    if hosts == 0 && version_minor == 1 {
        return Err(ProtocolError::Malformed("HTTP/1.1 request without a Host header"));
    }
    if chunked {
        if content_length.is_some() {
            return Err(ProtocolError::Malformed("both Content-Length and Transfer-Encoding"));
        }
        if version_minor == 0 {
            return Err(ProtocolError::UnsupportedTransferEncoding);
        }
        framing = BodyFraming::Chunked;
    } else if let Some(n) = content_length {
        if n > 0 {
            framing = BodyFraming::Length(n);
        }
    }
    if framing == BodyFraming::Empty {
        expect_continue = false;
    }
    Ok(Parsed::Complete(Request {
        head: buf.split_to(len).freeze(),
        method,
        target,
        headers,
        version_minor,
        keep_alive: !connection_close,
        expect_continue,
        framing,
        body: Bytes::new(),
    }))
}

fn parse_content_length(value: &[u8]) -> Result<u64, ProtocolError> {
    const BAD: ProtocolError = ProtocolError::Malformed("invalid Content-Length");
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return Err(BAD);
    }
    value.iter().try_fold(0u64, |n, d| n.checked_mul(10)?.checked_add(u64::from(d - b'0'))).ok_or(BAD)
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |i| i + 1);
    &v[start..end]
}

fn parse_error_text(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid token in request line",
        httparse::Error::TooManyHeaders => "too many headers",
        httparse::Error::Version => "invalid HTTP version",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Parsed, ProtocolError> {
        parse_head(&mut BytesMut::from(s.as_bytes()), 16384, 100)
    }

    fn complete(s: &str) -> Request {
        match parse(s) {
            Ok(Parsed::Complete(r)) => r,
            other => panic!("expected a complete head, got {other:?}"),
        }
    }

    #[test]
    fn simple_post() {
        let mut buf =
            BytesMut::from("POST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello");
        assert!(matches!(parse_head(&mut buf, 1000, 10), Ok(Parsed::Complete(_))));
        assert_eq!(&buf[..], b"hello", "the body stays in the buffer");
        let r = complete("POST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello");
        assert_eq!(r.method(), "POST");
        assert_eq!(r.path(), "/v1/chat/completions");
        assert_eq!(r.target(), "/v1/chat/completions?x=1");
        assert_eq!(r.header("host"), Some(&b"a"[..]));
        assert_eq!(r.framing, BodyFraming::Length(5));
        assert!(r.keep_alive);
        assert_eq!(r.head_len(), 70);
    }

    #[test]
    fn host_is_required_once_in_http_1_1() {
        assert!(matches!(parse("GET / HTTP/1.1\r\nX: 1\r\n\r\n"), Err(ProtocolError::Malformed(_))));
        assert!(matches!(parse("GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n"), Err(ProtocolError::Malformed(_))));
        assert!(matches!(parse("GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n"), Err(ProtocolError::Malformed(_))));
        assert_eq!(complete("GET / HTTP/1.0\r\n\r\n").method(), "GET", "HTTP/1.0 may leave Host out");
        assert_eq!(complete("GET / HTTP/1.1\r\nHost:\r\n\r\n").header("host"), Some(&b""[..]), "empty is valid");
    }

    #[test]
    fn only_100_continue_is_an_expectation_we_meet() {
        let with = |v: &str| parse(&format!("POST / HTTP/1.1\r\nHost: a\r\nExpect: {v}\r\nContent-Length: 1\r\n\r\n"));
        assert_eq!(with("fly").map(|_| ()), Err(ProtocolError::ExpectationFailed));
        assert_eq!(with("100-continue, fly").map(|_| ()), Err(ProtocolError::ExpectationFailed));
        assert_eq!(with("").map(|_| ()), Err(ProtocolError::ExpectationFailed));
        assert!(matches!(with("100-Continue"), Ok(Parsed::Complete(r)) if r.expect_continue));
        let old = "POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n";
        assert!(!complete(old).expect_continue, "ignored in HTTP/1.0");
    }

    #[test]
    fn partial_until_blank_line() {
        assert!(matches!(parse("GET / HTTP/1.1\r\nHost: a\r\n"), Ok(Parsed::Partial)));
    }

    #[test]
    fn head_limit_is_exact() {
        let head = "GET / HTTP/1.1\r\nHost: a\r\nX: aaaaaaaaaa\r\n\r\n";
        let b = || BytesMut::from(head.as_bytes());
        assert!(matches!(parse_head(&mut b(), head.len(), 100), Ok(Parsed::Complete(_))));
        assert_eq!(
            parse_head(&mut b(), head.len() - 1, 100).map(|_| ()),
            Err(ProtocolError::HeadTooLarge { limit_bytes: head.len() - 1 })
        );
    }

    #[test]
    fn header_count_limit_is_exact() {
        let head = "GET / HTTP/1.1\r\nHost: a\r\nB: 2\r\nC: 3\r\n\r\n";
        let b = || BytesMut::from(head.as_bytes());
        assert!(matches!(parse_head(&mut b(), 1000, 3), Ok(Parsed::Complete(_))));
        assert_eq!(parse_head(&mut b(), 1000, 2).map(|_| ()), Err(ProtocolError::TooManyHeaders { limit: 2 }));
    }

    #[test]
    fn connection_semantics() {
        assert!(!complete("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(!complete("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(complete("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        assert!(!complete("GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, close\r\n\r\n").keep_alive);
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        let both = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(matches!(parse(both), Err(ProtocolError::Malformed(_))));
        let two_lengths = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n";
        assert!(matches!(parse(two_lengths), Err(ProtocolError::Malformed(_))));
        let gzip = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
        assert_eq!(parse(gzip).map(|_| ()), Err(ProtocolError::UnsupportedTransferEncoding));
        let signed = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n";
        assert!(matches!(parse(signed), Err(ProtocolError::Malformed(_))));
        let huge = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n";
        assert!(matches!(parse(huge), Err(ProtocolError::Malformed(_))));
    }

    #[test]
    fn same_length_twice_is_fine() {
        let r = complete("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n");
        assert_eq!(r.framing, BodyFraming::Length(3));
    }

    #[test]
    fn expect_continue_only_with_a_body() {
        assert!(
            complete("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n").expect_continue
        );
        assert!(!complete("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n").expect_continue);
    }

    #[test]
    fn garbage_is_malformed() {
        assert!(matches!(parse("\x00\x01\x02 / HTTP/1.1\r\n\r\n"), Err(ProtocolError::Malformed(_))));
        assert!(matches!(parse("GET / HTTP/2.0\r\n\r\n"), Err(ProtocolError::Malformed(_))));
        assert!(matches!(parse("GET / HTTP/1.1\r\nBad Header: x\r\n\r\n"), Err(ProtocolError::Malformed(_))));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = parse_head(&mut BytesMut::from(&data[..]), 256, 8);
        }

        #[test]
        fn any_split_of_a_valid_head_parses_the_same(split in 0usize..60) {
            let head = "POST /v1/x HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n";
            let split = split.min(head.len() - 1);
            let partial = parse_head(&mut BytesMut::from(&head.as_bytes()[..split]), 1000, 10);
            proptest::prop_assert!(matches!(partial, Ok(Parsed::Partial)));
        }
    }
}
