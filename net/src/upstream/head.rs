//! Response head parsing (httparse) and message framing (RFC 9112 §6.3).

use std::ops::Range;

use bytes::{Bytes, BytesMut};

use super::error::UpstreamError;
use crate::chunked::ChunkedDecoder;

/// Most header fields in one response head; more is a protocol error.
pub(crate) const HEADERS_MAX: usize = 128;
/// Most interim (1xx) responses skipped before the final one; a peer may not loop us forever.
pub(crate) const INTERIM_RESPONSES_MAX: usize = 8;

/// A parsed response head. Names and values are ranges into `bytes`, so parsing allocates one
/// small vector and no strings.
#[derive(Debug, Clone)]
pub(crate) struct Head {
    /// Status code (100..=999, as httparse allows three digits).
    pub(crate) status: u16,
    /// Minor HTTP version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub(crate) version_minor: u8,
    bytes: Bytes,
    fields: Vec<(Range<usize>, Range<usize>)>,
}

/// How the body of a response is delimited.
#[derive(Debug, Clone)]
pub(crate) enum Framing {
    /// No body (204, 304, or `Content-Length: 0`).
    Empty,
    /// `Content-Length`: this many bytes remain.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked(ChunkedDecoder),
    /// Everything until the peer closes the connection.
    Close,
}

impl Head {
    /// The value of the first field named `name` (ASCII case-insensitive).
    pub(crate) fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v)
    }

    /// All fields in order; names as sent (httparse guarantees token bytes, hence ASCII).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.fields.iter().filter_map(|(name, value)| {
            let name = std::str::from_utf8(self.bytes.get(name.clone())?).ok()?;
            Some((name, self.bytes.get(value.clone())?))
        })
    }

    /// All values of fields named `name`, for list-valued fields sent more than once.
    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.iter().filter(move |(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v)
    }

    /// True if any comma-separated token of any `name` field equals `token` (case-insensitive).
    fn has_token(&self, name: &str, token: &str) -> bool {
        self.all(name)
            .flat_map(|v| v.split(|&b| b == b','))
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    }

    /// Whether the connection may carry another request after this response's body ends
    /// (ignoring framing, which can also forbid it).
    pub(crate) fn keep_alive(&self) -> bool {
        if self.has_token("connection", "close") {
            return false;
        }
        self.version_minor >= 1 || self.has_token("connection", "keep-alive")
    }

    /// Decides how the body is delimited. Also returns whether the framing itself allows
    /// reuse: a response carrying both Transfer-Encoding and Content-Length (a smuggling
    /// vector) or delimited by close must not be reused.
    pub(crate) fn framing(&self) -> Result<(Framing, bool), UpstreamError> {
        if self.status == 204 || self.status == 304 {
            return Ok((Framing::Empty, true));
        }
        let mut te_present = false;
        let mut last_coding: &[u8] = b"";
        for value in self.all("transfer-encoding") {
            for coding in value.split(|&b| b == b',') {
                let coding = coding.trim_ascii();
                if !coding.is_empty() {
                    te_present = true;
                    last_coding = coding;
                }
            }
        }
        let content_length = self.content_length()?;
        if te_present {
            if self.version_minor == 0 {
                // HTTP/1.0 has no Transfer-Encoding; RFC 9112 §6.1 says treat as faulty framing.
                return Err(UpstreamError::Protocol("Transfer-Encoding in an HTTP/1.0 response"));
            }
            let reusable = content_length.is_none();
            return Ok(if last_coding.eq_ignore_ascii_case(b"chunked") {
                (Framing::Chunked(ChunkedDecoder::new(u64::MAX)), reusable)
            } else {
                (Framing::Close, false)
            });
        }
        Ok(match content_length {
            Some(0) => (Framing::Empty, true),
            Some(n) => (Framing::Length(n), true),
            None => (Framing::Close, false),
        })
    }

    /// The Content-Length, if present; differing or malformed values are a protocol error.
    pub(crate) fn content_length(&self) -> Result<Option<u64>, UpstreamError> {
        let mut found: Option<u64> = None;
        for value in self.all("content-length") {
            // A list of identical values ("5, 5") is allowed by RFC 9110 §8.6.
            for item in value.split(|&b| b == b',') {
                let n = parse_decimal(item.trim_ascii()).ok_or(UpstreamError::Protocol("bad Content-Length"))?;
                match found {
                    Some(prev) if prev != n => return Err(UpstreamError::Protocol("conflicting Content-Length")),
                    _ => found = Some(n),
                }
            }
        }
        Ok(found)
    }
}

/// Parses a non-empty run of at most 19 ASCII digits (always fits in u64).
pub(crate) fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0u64, |acc, &d| acc * 10 + u64::from(d - b'0')))
}

/// Tries to parse one response head at the front of `buf`. `Ok(None)`: incomplete, read more.
/// On success the head's bytes are split off `buf`; body bytes stay. A head that is not
/// complete within `response_head_bytes_max` bytes is a protocol error, so `buf` stays bounded.
pub(crate) fn parse(buf: &mut BytesMut, response_head_bytes_max: usize) -> Result<Option<Head>, UpstreamError> {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            return if buf.len() >= response_head_bytes_max {
                Err(UpstreamError::Protocol("response head too large"))
            } else {
                Ok(None)
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(UpstreamError::Protocol("too many response header fields")),
        Err(_) => return Err(UpstreamError::Protocol("malformed response head")),
    };
    if len > response_head_bytes_max {
        return Err(UpstreamError::Protocol("response head too large"));
    }
    let (Some(status), Some(version_minor)) = (response.code, response.version) else {
        return Err(UpstreamError::Protocol("malformed response head"));
    };
    // Offsets of each name and value inside `buf`; httparse hands out sub-slices of it.
    let base = buf.as_ptr() as usize;
    let offset = |s: &[u8]| {
        let start = (s.as_ptr() as usize).wrapping_sub(base);
        start..start + s.len()
    };
    let fields = response
        .headers
        .iter()
        .map(|h| (offset(h.name.as_bytes()), offset(h.value)))
        .filter(|(n, v)| n.end <= len && v.end <= len)
        .collect();
    let bytes = buf.split_to(len).freeze();
    Ok(Some(Head { status, version_minor, bytes, fields }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(s: &str) -> Head {
        let mut buf = BytesMut::from(s.as_bytes());
        parse(&mut buf, 64 * 1024).unwrap().unwrap()
    }

    #[test]
    fn parses_fields_and_leaves_body() {
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-A: b\r\n\r\nabc"[..]);
        let h = parse(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(h.status, 200);
        assert_eq!(h.get("x-a"), Some(&b"b"[..]));
        assert_eq!(h.get("CONTENT-LENGTH"), Some(&b"3"[..]));
        assert_eq!(h.iter().count(), 2);
        assert_eq!(&buf[..], b"abc");
        assert!(matches!(h.framing().unwrap(), (Framing::Length(3), true)));
    }

    #[test]
    fn partial_and_oversize() {
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nA: b\r\n"[..]);
        assert!(parse(&mut buf, 1024).unwrap().is_none());
        assert!(parse(&mut buf, 10).is_err());
        assert!(parse(&mut BytesMut::from(&b"HTTP/1.1 2x0\r\n\r\n"[..]), 1024).is_err());
    }

    #[test]
    fn framing_rules() {
        let f = |s: &str| head(s).framing();
        assert!(matches!(f("HTTP/1.1 204 No\r\n\r\n").unwrap(), (Framing::Empty, true)));
        assert!(matches!(
            f("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").unwrap(),
            (Framing::Chunked(_), true)
        ));
        assert!(matches!(
            f("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n").unwrap(),
            (Framing::Chunked(_), false)
        ));
        assert!(matches!(f("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n").unwrap(), (Framing::Close, false)));
        assert!(matches!(f("HTTP/1.1 200 OK\r\n\r\n").unwrap(), (Framing::Close, false)));
        assert!(matches!(f("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n").unwrap(), (Framing::Length(5), true)));
        assert!(f("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n").is_err());
        assert!(f("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n").is_err());
        assert!(f("HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n").is_err());
        assert!(f("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").is_err());
    }

    #[test]
    fn keep_alive_rules() {
        assert!(head("HTTP/1.1 200 OK\r\n\r\n").keep_alive());
        assert!(!head("HTTP/1.1 200 OK\r\nConnection: Close\r\n\r\n").keep_alive());
        assert!(!head("HTTP/1.1 200 OK\r\nConnection: x, close\r\n\r\n").keep_alive());
        assert!(!head("HTTP/1.0 200 OK\r\n\r\n").keep_alive());
        assert!(head("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n").keep_alive());
    }
}
