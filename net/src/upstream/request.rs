//! Request encoding: validated request line and headers written into a reusable buffer.

use std::io::Write as _;

use super::error::UpstreamError;
use super::origin::is_path_byte;

/// Longest method accepted (`OPTIONS` is 7).
const METHOD_BYTES_MAX: usize = 16;
/// Longest request path (without the origin's prefix) accepted.
const PATH_BYTES_MAX: usize = 8 * 1024;
/// Most extra headers per request.
pub(crate) const HEADERS_MAX: usize = 64;
/// Longest header value accepted (API keys and JSON-ish metadata fit easily).
const HEADER_VALUE_BYTES_MAX: usize = 8 * 1024;

/// Headers the client writes itself; a caller supplying them would corrupt framing.
const RESERVED_HEADERS: [&str; 3] = ["host", "content-length", "transfer-encoding"];

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Field value bytes: visible ASCII, space, tab, obs-text; never CR, LF or NUL, so a value can
/// not inject a header or end the head.
fn is_value_byte(b: u8) -> bool {
    b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80
}

/// Writes `METHOD {prefix}{path} HTTP/1.1`, `Host`, `Content-Length` (when there is a body or
/// the method normally carries one), the caller's headers and the body (its pieces back to
/// back) into `out` (cleared first; its capacity is reused).
pub(crate) fn encode(
    out: &mut Vec<u8>,
    authority: &str,
    path_prefix: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &[u8])],
    body: &[&[u8]],
) -> Result<(), UpstreamError> {
    let body_len: usize = body.iter().map(|p| p.len()).sum();
    if method.is_empty() || method.len() > METHOD_BYTES_MAX || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(UpstreamError::InvalidRequest("bad method"));
    }
    // A HEAD response carries a Content-Length but no body, and CONNECT switches protocols;
    // the response reader supports neither, so refuse them rather than hang or misframe.
    if method == "HEAD" || method == "CONNECT" {
        return Err(UpstreamError::InvalidRequest("HEAD and CONNECT are not supported"));
    }
    if path.len() > PATH_BYTES_MAX
        || !(path.is_empty() || path.starts_with('/'))
        || !path.bytes().all(|b| is_path_byte(b) || b == b'?')
    {
        return Err(UpstreamError::InvalidRequest("bad path"));
    }
    if headers.len() > HEADERS_MAX {
        return Err(UpstreamError::InvalidRequest("too many headers"));
    }
    for (name, value) in headers {
        if name.is_empty() || !name.bytes().all(is_tchar) {
            return Err(UpstreamError::InvalidRequest("bad header name"));
        }
        if RESERVED_HEADERS.iter().any(|r| name.eq_ignore_ascii_case(r)) {
            return Err(UpstreamError::InvalidRequest("header is set by the client"));
        }
        if value.len() > HEADER_VALUE_BYTES_MAX || !value.iter().copied().all(is_value_byte) {
            return Err(UpstreamError::InvalidRequest("bad header value"));
        }
    }
    let target = match (path_prefix.is_empty(), path.is_empty()) {
        (true, true) => "/",
        (_, true) => path_prefix,
        _ => path,
    };
    let prefix = if path.is_empty() { "" } else { path_prefix };
    out.clear();
    let head_estimate = 64
        + authority.len()
        + prefix.len()
        + target.len()
        + headers.iter().map(|(n, v)| n.len() + v.len() + 4).sum::<usize>();
    out.reserve(head_estimate + body_len);
    // Writing into a Vec cannot fail; the results are io::Result only by trait signature.
    let _ = write!(out, "{method} {prefix}{target} HTTP/1.1\r\nHost: {authority}\r\n");
    let bodiless_method = matches!(method, "GET" | "DELETE" | "OPTIONS" | "TRACE");
    if body_len > 0 || !bodiless_method {
        let _ = write!(out, "Content-Length: {body_len}\r\n");
    }
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    for piece in body {
        out.extend_from_slice(piece);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_post_with_prefix() {
        let mut out = Vec::new();
        let headers: [(&str, &[u8]); 1] = [("Authorization", b"Bearer k")];
        encode(&mut out, "api.x", "/v1", "POST", "/chat/completions", &headers, &[b"{}"]).unwrap();
        assert_eq!(
            out,
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: api.x\r\nContent-Length: 2\r\n\
              Authorization: Bearer k\r\n\r\n{}"
        );
        encode(&mut out, "a:81", "", "GET", "", &[], &[]).unwrap();
        assert_eq!(out, b"GET / HTTP/1.1\r\nHost: a:81\r\n\r\n");
    }

    #[test]
    fn rejects_injection() {
        let mut out = Vec::new();
        let bad_value: [(&str, &[u8]); 1] = [("X", b"a\r\nEvil: 1")];
        assert!(encode(&mut out, "a", "", "POST", "/", &bad_value, &[]).is_err());
        let bad_name: [(&str, &[u8]); 1] = [("X Y", b"a")];
        assert!(encode(&mut out, "a", "", "POST", "/", &bad_name, &[]).is_err());
        let reserved: [(&str, &[u8]); 1] = [("content-length", b"1")];
        assert!(encode(&mut out, "a", "", "POST", "/", &reserved, &[]).is_err());
        assert!(encode(&mut out, "a", "", "POST", "/a b", &[], &[]).is_err());
        assert!(encode(&mut out, "a", "", "POST", "x", &[], &[]).is_err());
        assert!(encode(&mut out, "a", "", "post", "/", &[], &[]).is_err());
        assert!(encode(&mut out, "a", "", "HEAD", "/", &[], &[]).is_err());
    }
}
