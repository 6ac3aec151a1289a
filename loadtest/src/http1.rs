//! HTTP/1.1 response-head parsing for the `gk-load run` client, with httparse; the body
//! limit, the error type and the chunked-body decoder are the mock's
//! ([`gatekeeper_mock::http1`]), re-exported here. No I/O here, so it unit-tests.

pub use gatekeeper_mock::http1::{ChunkedDecoder, HttpError, BODY_BYTES_MAX};

/// Largest response head the client accepts.
pub const RESPONSE_HEAD_BYTES_MAX: usize = 64 * 1024;
/// Most response headers the client parses.
pub const RESPONSE_HEADERS_COUNT_MAX: usize = 64;

/// How a response body is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseFraming {
    /// `Content-Length: n`, or no body at all (n = 0: 1xx, 204, 304).
    Length(usize),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Neither: the body runs until the server closes the connection.
    UntilClose,
}

/// The parts of a response head the load generator uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    /// Status code.
    pub status: u16,
    /// Body framing.
    pub framing: ResponseFraming,
    /// The connection may carry another request afterwards.
    pub keep_alive: bool,
    /// `Content-Type: text/event-stream` (a streamed answer).
    pub event_stream: bool,
}

/// Parses a response head. `Ok(None)` means "need more bytes"; `Err` means bad bytes or
/// a limit hit. On success returns the head and its length in bytes.
pub fn parse_response_head(buf: &[u8]) -> Result<Option<(ResponseHead, usize)>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; RESPONSE_HEADERS_COUNT_MAX];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n <= RESPONSE_HEAD_BYTES_MAX => n,
        Ok(httparse::Status::Complete(_)) => return Err(HttpError::HeadTooLarge),
        Ok(httparse::Status::Partial) if buf.len() > RESPONSE_HEAD_BYTES_MAX => return Err(HttpError::HeadTooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::HeadTooLarge),
        Err(_) => return Err(HttpError::Malformed),
    };
    let status = resp.code.ok_or(HttpError::Malformed)?;
    let mut head = ResponseHead {
        status,
        framing: ResponseFraming::UntilClose,
        keep_alive: resp.version == Some(1),
        event_stream: false,
    };
    let mut content_length: Option<usize> = None;
    let mut chunked = false;
    for h in resp.headers.iter() {
        let eq = |n: &str| h.name.eq_ignore_ascii_case(n);
        if eq("content-length") {
            let v = std::str::from_utf8(h.value)
                .map_err(|_| HttpError::Malformed)?
                .trim()
                .parse::<usize>()
                .map_err(|_| HttpError::Malformed)?;
            if content_length.is_some_and(|old| old != v) {
                return Err(HttpError::Malformed);
            }
            content_length = Some(v);
        } else if eq("transfer-encoding") {
            chunked |= contains_ignore_case(h.value, b"chunked");
        } else if eq("connection") {
            if contains_ignore_case(h.value, b"close") {
                head.keep_alive = false;
            } else if contains_ignore_case(h.value, b"keep-alive") {
                head.keep_alive = true;
            }
        } else if eq("content-type") {
            head.event_stream = contains_ignore_case(h.value, b"text/event-stream");
        }
    }
    head.framing = if (100..200).contains(&status) || status == 204 || status == 304 {
        ResponseFraming::Length(0)
    } else if chunked {
        ResponseFraming::Chunked
    } else if let Some(n) = content_length {
        if n > BODY_BYTES_MAX {
            return Err(HttpError::BodyTooLarge);
        }
        ResponseFraming::Length(n)
    } else {
        head.keep_alive = false;
        ResponseFraming::UntilClose
    };
    Ok(Some((head, len)))
}

fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_response_heads() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\nxx";
        let (h, n) = parse_response_head(raw).expect("ok").expect("complete");
        assert_eq!(n, raw.len() - 2);
        assert_eq!(h.status, 200);
        assert_eq!(h.framing, ResponseFraming::Chunked);
        assert!(h.keep_alive && h.event_stream);

        let raw = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 7\r\nconnection: close\r\n\r\n";
        let (h, _) = parse_response_head(raw).expect("ok").expect("complete");
        assert_eq!(h.framing, ResponseFraming::Length(7));
        assert!(!h.keep_alive && !h.event_stream);

        let (h, _) = parse_response_head(b"HTTP/1.0 200 OK\r\n\r\n").expect("ok").expect("complete");
        assert_eq!(h.framing, ResponseFraming::UntilClose);
        assert!(!h.keep_alive);
        let (h, _) = parse_response_head(b"HTTP/1.1 204 No Content\r\n\r\n").expect("ok").expect("complete");
        assert_eq!(h.framing, ResponseFraming::Length(0));

        assert_eq!(parse_response_head(b"HTTP/1.1 200 OK\r\nA: b"), Ok(None));
        assert_eq!(parse_response_head(b"HTTX 200\r\n\r\n"), Err(HttpError::Malformed));
        assert_eq!(
            parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Err(HttpError::Malformed)
        );
    }
}
