//! Minimal HTTP/1.1 for the mock: request-head parsing with httparse and response-head
//! writing; the body limit, error type and chunked-body decoder are in [`crate::http1`],
//! which HTTP clients share.
//! No I/O here, so it unit-tests.

use std::io::Write as _;

pub use crate::http1::{ChunkedDecoder, HttpError, BODY_BYTES_MAX};

/// Largest request head accepted; beyond it the mock answers 431.
pub const HEAD_BYTES_MAX: usize = 64 * 1024;
/// Most request headers parsed; beyond it the mock answers 431.
pub const HEADERS_COUNT_MAX: usize = 100;

/// Which endpoint a request is for; the query string is ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// `/v1/chat/completions` or `/chat/completions`.
    ChatCompletions,
    /// `/v1/messages` (Anthropic).
    Messages,
    /// `/v1/models` or `/models`.
    Models,
    /// `/__mock/stats`.
    Stats,
    /// `/__mock/reset`.
    Reset,
    /// Anything else.
    Unknown,
}

impl Route {
    fn from_path(path: &str) -> Route {
        let path = path.split('?').next().unwrap_or(path);
        match path.trim_end_matches('/') {
            "/v1/chat/completions" | "/chat/completions" => Route::ChatCompletions,
            "/v1/messages" | "/messages" => Route::Messages,
            "/v1/models" | "/models" => Route::Models,
            "/__mock/stats" => Route::Stats,
            "/__mock/reset" => Route::Reset,
            _ => Route::Unknown,
        }
    }
}

/// How the body is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    /// `Content-Length: n` (0 when absent).
    Length(usize),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// Raw `X-Mock-*` header values, resolved per mock name later.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MockHeaders {
    /// `X-Mock-Fault`.
    pub fault: Option<String>,
    /// `X-Mock-Retry-After` (seconds).
    pub retry_after: Option<String>,
    /// `X-Mock-Cut-After` (events before a cut).
    pub cut_after: Option<String>,
    /// `X-Mock-Latency-Ms`.
    pub latency_ms: Option<String>,
    /// `X-Mock-Ttft-Ms`.
    pub ttft_ms: Option<String>,
    /// `X-Mock-Token-Ms`.
    pub token_ms: Option<String>,
    /// `X-Mock-Tokens`.
    pub tokens: Option<String>,
}

/// The parts of a request head the mock uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    /// True for `POST`.
    pub is_post: bool,
    /// True for `GET`.
    pub is_get: bool,
    /// Endpoint.
    pub route: Route,
    /// Keep the connection open after answering.
    pub keep_alive: bool,
    /// Body framing.
    pub framing: BodyFraming,
    /// `Expect: 100-continue` was sent.
    pub expect_continue: bool,
    /// `Authorization` value.
    pub authorization: Option<String>,
    /// `x-api-key` value.
    pub x_api_key: Option<String>,
    /// `anthropic-version` was present.
    pub anthropic_version: bool,
    /// `X-Mock-*` values.
    pub mock: MockHeaders,
}

fn header_str(value: &[u8]) -> Result<&str, HttpError> {
    std::str::from_utf8(value).map(str::trim).map_err(|_| HttpError::Malformed)
}

/// Parses a request head. `Ok(None)` means "need more bytes"; `Err` means bad bytes or
/// a limit hit. On success returns the head and its length in bytes.
pub fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_COUNT_MAX];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n <= HEAD_BYTES_MAX => n,
        Ok(httparse::Status::Complete(_)) => return Err(HttpError::HeadTooLarge),
        Ok(httparse::Status::Partial) if buf.len() > HEAD_BYTES_MAX => return Err(HttpError::HeadTooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::HeadTooLarge),
        Err(_) => return Err(HttpError::Malformed),
    };
    let method = req.method.unwrap_or("");
    let http10 = req.version == Some(0);
    let mut head = Head {
        is_post: method == "POST",
        is_get: method == "GET",
        route: Route::from_path(req.path.unwrap_or("")),
        keep_alive: !http10,
        framing: BodyFraming::Length(0),
        expect_continue: false,
        authorization: None,
        x_api_key: None,
        anthropic_version: false,
        mock: MockHeaders::default(),
    };
    let mut content_length: Option<usize> = None;
    let mut chunked = false;
    for h in req.headers.iter() {
        let name = h.name;
        let eq = |n: &str| name.eq_ignore_ascii_case(n);
        if eq("content-length") {
            let v = header_str(h.value)?.parse::<usize>().map_err(|_| HttpError::Malformed)?;
            // Differing duplicates are a request-smuggling shape; refuse them.
            if content_length.is_some_and(|old| old != v) {
                return Err(HttpError::Malformed);
            }
            content_length = Some(v);
        } else if eq("transfer-encoding") {
            let v = header_str(h.value)?;
            if v.to_ascii_lowercase().contains("chunked") {
                chunked = true;
            }
        } else if eq("connection") {
            let v = header_str(h.value)?.to_ascii_lowercase();
            if v.contains("close") {
                head.keep_alive = false;
            } else if v.contains("keep-alive") {
                head.keep_alive = true;
            }
        } else if eq("expect") {
            head.expect_continue = header_str(h.value)?.eq_ignore_ascii_case("100-continue");
        } else if eq("authorization") {
            head.authorization = Some(header_str(h.value)?.to_string());
        } else if eq("x-api-key") {
            head.x_api_key = Some(header_str(h.value)?.to_string());
        } else if eq("anthropic-version") {
            head.anthropic_version = true;
        } else if name.len() > 7 && name[..7].eq_ignore_ascii_case("x-mock-") {
            let slot = match name[7..].to_ascii_lowercase().as_str() {
                "fault" => &mut head.mock.fault,
                "retry-after" => &mut head.mock.retry_after,
                "cut-after" => &mut head.mock.cut_after,
                "latency-ms" => &mut head.mock.latency_ms,
                "ttft-ms" => &mut head.mock.ttft_ms,
                "token-ms" => &mut head.mock.token_ms,
                "tokens" => &mut head.mock.tokens,
                _ => continue,
            };
            *slot = Some(header_str(h.value)?.to_string());
        }
    }
    head.framing = match (chunked, content_length) {
        (true, _) => BodyFraming::Chunked,
        (false, Some(n)) if n > BODY_BYTES_MAX => return Err(HttpError::BodyTooLarge),
        (false, n) => BodyFraming::Length(n.unwrap_or(0)),
    };
    Ok(Some((head, len)))
}

/// The reason phrase for the statuses the mock sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        529 => "Overloaded",
        _ => "Unknown",
    }
}

/// Writes a response head. `content_length: None` means chunked transfer encoding.
pub fn write_head(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    content_length: Option<usize>,
    extra: &[(&str, &str)],
    keep_alive: bool,
) {
    // Writes into a Vec cannot fail.
    let _ = write!(out, "HTTP/1.1 {status} {}\r\ncontent-type: {content_type}\r\n", reason(status));
    match content_length {
        Some(n) => {
            let _ = write!(out, "content-length: {n}\r\n");
        }
        None => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    for (name, value) in extra {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes a complete response with a body.
pub fn write_response(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    extra: &[(&str, &str)],
    body: &[u8],
    keep_alive: bool,
) {
    write_head(out, status, content_type, Some(body.len()), extra, keep_alive);
    out.extend_from_slice(body);
}

/// Frames `data` as one chunk of a chunked body.
pub fn write_chunk(out: &mut Vec<u8>, data: &[u8]) {
    let _ = write!(out, "{:x}\r\n", data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_post_with_headers() {
        let raw = b"POST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nAuthorization: Bearer k\r\nX-Mock-Fault: primary=500\r\nX-Mock-Tokens: 3\r\n\r\nhello";
        let (head, len) = parse_head(raw).expect("ok").expect("complete");
        assert_eq!(len, raw.len() - 5);
        assert!(head.is_post && head.keep_alive);
        assert_eq!(head.route, Route::ChatCompletions);
        assert_eq!(head.framing, BodyFraming::Length(5));
        assert_eq!(head.authorization.as_deref(), Some("Bearer k"));
        assert_eq!(head.mock.fault.as_deref(), Some("primary=500"));
        assert_eq!(head.mock.tokens.as_deref(), Some("3"));
    }

    #[test]
    fn routes() {
        assert_eq!(Route::from_path("/chat/completions"), Route::ChatCompletions);
        assert_eq!(Route::from_path("/v1/messages"), Route::Messages);
        assert_eq!(Route::from_path("/v1/models/"), Route::Models);
        assert_eq!(Route::from_path("/__mock/stats"), Route::Stats);
        assert_eq!(Route::from_path("/nope"), Route::Unknown);
    }

    #[test]
    fn partial_then_limits() {
        assert_eq!(parse_head(b"POST / HTTP/1.1\r\nHost"), Ok(None));
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.resize(HEAD_BYTES_MAX + 10, b'a');
        assert_eq!(parse_head(&big), Err(HttpError::HeadTooLarge));
        assert_eq!(parse_head(b"\x00\x01 / HTTP/1.1\r\n\r\n"), Err(HttpError::Malformed));
        let huge = format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", BODY_BYTES_MAX + 1);
        assert_eq!(parse_head(huge.as_bytes()), Err(HttpError::BodyTooLarge));
        assert_eq!(
            parse_head(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Err(HttpError::Malformed)
        );
        assert_eq!(parse_head(b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"), Err(HttpError::Malformed));
    }

    #[test]
    fn http10_and_connection_close() {
        let (h, _) = parse_head(b"GET / HTTP/1.0\r\n\r\n").expect("ok").expect("c");
        assert!(!h.keep_alive);
        let (h, _) = parse_head(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").expect("ok").expect("c");
        assert!(!h.keep_alive);
    }

    #[test]
    fn writes_heads() {
        let mut out = Vec::new();
        write_response(&mut out, 429, "application/json", &[("retry-after", "2")], b"{}", false);
        let s = String::from_utf8(out).expect("utf8");
        assert!(s.starts_with("HTTP/1.1 429 Too Many Requests\r\n"));
        assert!(s.contains("content-length: 2\r\n"));
        assert!(s.contains("retry-after: 2\r\n"));
        assert!(s.contains("connection: close\r\n"));
        assert!(s.ends_with("\r\n\r\n{}"));
        let mut c = Vec::new();
        write_chunk(&mut c, b"0123456789abcdefX");
        assert_eq!(c, b"11\r\n0123456789abcdefX\r\n");
    }
}
