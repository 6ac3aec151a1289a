//! Incremental decoder for `Transfer-Encoding: chunked` (RFC 9112 §7.1).
//!
//! A pure state machine over a byte buffer, shared by the server (request bodies)
//! and the upstream client (response bodies). It never panics on any input, never
//! reads more than it is given, and bounds every number it parses.

use bytes::{Bytes, BytesMut};

/// Longest chunk-size line (size, extensions, CRLF) or trailer line accepted, bytes.
const LINE_BYTES_MAX: usize = 4096;
/// Most trailer fields accepted after the last chunk.
const TRAILERS_MAX: usize = 64;

/// Why a chunked body is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChunkedError {
    /// A chunk-size line is not hex, or too long.
    #[error("invalid chunk size line")]
    BadSize,
    /// A chunk's data was not followed by CRLF.
    #[error("chunk data not followed by CRLF")]
    MissingCrlf,
    /// A trailer line is too long, or there are too many.
    #[error("invalid trailer section")]
    BadTrailer,
    /// The decoded body exceeds the limit given to [`ChunkedDecoder::new`].
    #[error("chunked body too large")]
    TooLarge,
}

/// What one call to [`ChunkedDecoder::decode`] produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A piece of body data.
    Data(Bytes),
    /// More input is needed.
    NeedMore,
    /// The body (and trailers) ended; bytes after it stay in the buffer.
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size,
    Data { left: u64 },
    DataCrlf,
    Trailers { seen: usize },
    Done,
}

/// Decodes a chunked body incrementally.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    body_bytes: u64,
    body_bytes_max: u64,
}

impl ChunkedDecoder {
    /// A decoder that refuses bodies longer than `body_bytes_max` once de-chunked.
    pub fn new(body_bytes_max: u64) -> Self {
        ChunkedDecoder { state: State::Size, body_bytes: 0, body_bytes_max }
    }

    /// Whether the terminating chunk and trailers have been consumed.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes from the front of `input` and returns the next event.
    pub fn decode(&mut self, input: &mut BytesMut) -> Result<Decoded, ChunkedError> {
        loop {
            match self.state {
                State::Done => return Ok(Decoded::End),
                State::Size => {
                    let Some(line) = take_line(input)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    let size = parse_size(&line)?;
                    if size == 0 {
                        self.state = State::Trailers { seen: 0 };
                        continue;
                    }
                    self.body_bytes = self.body_bytes.checked_add(size).ok_or(ChunkedError::TooLarge)?;
                    if self.body_bytes > self.body_bytes_max {
                        return Err(ChunkedError::TooLarge);
                    }
                    self.state = State::Data { left: size };
                }
                State::Data { left } => {
                    if input.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let n = (input.len() as u64).min(left) as usize;
                    let piece = input.split_to(n).freeze();
                    let left = left - n as u64;
                    self.state = if left == 0 { State::DataCrlf } else { State::Data { left } };
                    return Ok(Decoded::Data(piece));
                }
                State::DataCrlf => {
                    if input.len() < 2 {
                        if input.first().is_some_and(|b| *b != b'\r') {
                            return Err(ChunkedError::MissingCrlf);
                        }
                        return Ok(Decoded::NeedMore);
                    }
                    if &input[..2] != b"\r\n" {
                        return Err(ChunkedError::MissingCrlf);
                    }
                    let _ = input.split_to(2);
                    self.state = State::Size;
                }
                State::Trailers { seen } => {
                    let Some(line) = take_line(input).map_err(|_| ChunkedError::BadTrailer)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    if line.is_empty() {
                        self.state = State::Done;
                        return Ok(Decoded::End);
                    }
                    if seen + 1 > TRAILERS_MAX || has_control(&line) {
                        return Err(ChunkedError::BadTrailer);
                    }
                    self.state = State::Trailers { seen: seen + 1 };
                }
            }
        }
    }
}

/// Takes one CRLF-terminated line off `input`, without the CRLF.
fn take_line(input: &mut BytesMut) -> Result<Option<Bytes>, ChunkedError> {
    let window = &input[..input.len().min(LINE_BYTES_MAX)];
    match window.iter().position(|b| *b == b'\n') {
        Some(i) => {
            if i == 0 || window[i - 1] != b'\r' {
                return Err(ChunkedError::BadSize);
            }
            let line = input.split_to(i + 1).freeze();
            Ok(Some(line.slice(..i - 1)))
        }
        None if input.len() >= LINE_BYTES_MAX => Err(ChunkedError::BadSize),
        None => Ok(None),
    }
}

/// Whether `bytes` hold a control character other than HTAB — a bare CR above all, which
/// a peer that ends lines at CR would read as a line end where we see none (smuggling).
/// Extensions and trailer fields may not hold one (RFC 9110 §5.5, RFC 9112 §7.1.1).
fn has_control(bytes: &[u8]) -> bool {
    bytes.iter().any(|b| (*b < 0x20 && *b != b'\t') || *b == 0x7f)
}

/// Parses `1a;ext=1` into 26; at most 15 hex digits so the value fits in u64 with room.
fn parse_size(line: &[u8]) -> Result<u64, ChunkedError> {
    let digits_end = line.iter().position(|b| !b.is_ascii_hexdigit()).unwrap_or(line.len());
    if digits_end == 0 || digits_end > 15 {
        return Err(ChunkedError::BadSize);
    }
    // After the digits: optional whitespace, then nothing or `;extensions` (ignored).
    let rest = &line[digits_end..];
    let after_ws = rest.iter().position(|b| *b != b' ' && *b != b'\t').map_or(&rest[rest.len()..], |i| &rest[i..]);
    if !(after_ws.is_empty() || after_ws[0] == b';') || has_control(after_ws) {
        return Err(ChunkedError::BadSize);
    }
    let mut n: u64 = 0;
    for d in &line[..digits_end] {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            b'A'..=b'F' => d - b'A' + 10,
            _ => return Err(ChunkedError::BadSize),
        };
        n = (n << 4) | u64::from(v);
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(pieces: &[&[u8]], max: u64) -> Result<(Vec<u8>, Vec<u8>), ChunkedError> {
        let mut d = ChunkedDecoder::new(max);
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        for p in pieces {
            buf.extend_from_slice(p);
            loop {
                match d.decode(&mut buf)? {
                    Decoded::Data(b) => body.extend_from_slice(&b),
                    Decoded::NeedMore => break,
                    Decoded::End => return Ok((body, buf.to_vec())),
                }
            }
        }
        Err(ChunkedError::BadSize)
    }

    #[test]
    fn decodes_with_extensions_and_trailers() {
        let wire = b"5;name=v\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        let (body, rest) = decode_all(&[wire], 100).expect("valid");
        assert_eq!(body, b"hello world");
        assert_eq!(rest, b"NEXT");
    }

    #[test]
    fn limit_is_exact() {
        let wire = b"5\r\nhello\r\n0\r\n\r\n";
        assert!(decode_all(&[wire], 5).is_ok());
        assert_eq!(decode_all(&[wire], 4).map(|_| ()), Err(ChunkedError::TooLarge));
    }

    #[test]
    fn rejects_bad_shapes() {
        assert_eq!(decode_all(&[b"zz\r\n"], 100).map(|_| ()), Err(ChunkedError::BadSize));
        assert_eq!(decode_all(&[b"5\nhello"], 100).map(|_| ()), Err(ChunkedError::BadSize));
        assert_eq!(decode_all(&[b"2\r\nabXY"], 100).map(|_| ()), Err(ChunkedError::MissingCrlf));
        assert_eq!(decode_all(&[b"ffffffffffffffffff\r\n"], u64::MAX).map(|_| ()), Err(ChunkedError::BadSize));
        assert_eq!(decode_all(&[b"-1\r\n"], 100).map(|_| ()), Err(ChunkedError::BadSize));
        assert_eq!(decode_all(&[b"5 x\r\nhello"], 100).map(|_| ()), Err(ChunkedError::BadSize));
        assert!(decode_all(&[b"5 ;a=b\r\nhello\r\n0\r\n\r\n"], 100).is_ok());
    }

    #[test]
    fn control_bytes_in_extensions_and_trailers_are_refused() {
        for line in
            [&b"5;a=b\rc\r\nhello\r\n0\r\n\r\n"[..], b"5;\r\r\nhello\r\n0\r\n\r\n", b"5;a\x00\r\nhello\r\n0\r\n\r\n"]
        {
            assert_eq!(decode_all(&[line], 100).map(|_| ()), Err(ChunkedError::BadSize), "{line:?}");
        }
        assert_eq!(decode_all(&[b"0\r\nX: a\rb\r\n\r\n"], 100).map(|_| ()), Err(ChunkedError::BadTrailer));
        assert!(decode_all(&[b"5;a=\"b\tc\"\r\nhello\r\n0\r\nX: a\tb\r\n\r\n"], 100).is_ok(), "HTAB is fine");
    }

    #[test]
    fn endless_size_line_is_refused() {
        let long = vec![b'0'; LINE_BYTES_MAX + 1];
        assert_eq!(decode_all(&[&long], 100).map(|_| ()), Err(ChunkedError::BadSize));
    }

    proptest::proptest! {
        #[test]
        fn any_split_decodes_the_same(cuts in proptest::collection::vec(0usize..40, 0..6)) {
            let wire: &[u8] = b"3\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n";
            let mut points: Vec<usize> = cuts.into_iter().map(|c| c.min(wire.len())).collect();
            points.sort_unstable();
            let mut pieces = Vec::new();
            let mut last = 0;
            for p in points {
                pieces.push(&wire[last..p]);
                last = p;
            }
            pieces.push(&wire[last..]);
            let (body, rest) = decode_all(&pieces, 1000).expect("valid");
            proptest::prop_assert_eq!(body, b"abc0123456789abcdef".to_vec());
            proptest::prop_assert!(rest.is_empty());
        }
    }
}
