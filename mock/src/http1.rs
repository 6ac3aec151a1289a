//! HTTP/1.1 pieces the mock server shares with HTTP clients (the `gk-load run` load
//! generator reads responses with them): the body limit, the error type and a stateful
//! chunked-body decoder. No I/O here, so it unit-tests.

/// Largest body accepted (request body in the mock, response body in the client).
pub const BODY_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Longest chunk-size or trailer line in a chunked body.
const CHUNK_LINE_BYTES_MAX: usize = 4096;
/// Most trailer lines after the last chunk.
const TRAILERS_COUNT_MAX: usize = 64;

/// Why a message could not be read. For the mock each maps to one status it answers;
/// for the client each is a protocol error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// Head over `HEAD_BYTES_MAX` or more than `HEADERS_COUNT_MAX` headers (431).
    #[error("request header fields too large")]
    HeadTooLarge,
    /// Body over [`BODY_BYTES_MAX`] (413).
    #[error("request body too large")]
    BodyTooLarge,
    /// Bytes that are not HTTP/1.1 (400).
    #[error("malformed request")]
    Malformed,
}

impl HttpError {
    /// The status answered for this error.
    pub fn status(self) -> u16 {
        match self {
            HttpError::HeadTooLarge => 431,
            HttpError::BodyTooLarge => 413,
            HttpError::Malformed => 400,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChunkState {
    Size,
    Data(usize),
    DataEnd,
    Trailer(usize),
    Done,
}

/// Decodes a chunked body fed in pieces; keeps its place between reads so a large body
/// is scanned once.
#[derive(Debug)]
pub struct ChunkedDecoder {
    state: ChunkState,
    body: Vec<u8>,
    /// Keep decoded bytes in `body`; the load generator only counts them.
    keep: bool,
    /// Decoded body bytes so far (kept or not).
    len: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder { state: ChunkState::Size, body: Vec::new(), keep: true, len: 0 }
    }
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

impl ChunkedDecoder {
    /// A decoder that checks framing and counts body bytes but keeps none of them.
    pub fn discarding() -> ChunkedDecoder {
        ChunkedDecoder { keep: false, ..ChunkedDecoder::default() }
    }

    /// Decoded body bytes so far, kept or not.
    pub fn body_len(&self) -> usize {
        self.len
    }

    /// True once the terminating chunk and trailers are consumed.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// The decoded body; call after [`ChunkedDecoder::is_done`].
    pub fn into_body(self) -> Vec<u8> {
        self.body
    }

    /// Consumes what it can of `input`, returning how many bytes it used. Stops at the
    /// end of the body, leaving pipelined bytes after it untouched.
    pub fn feed(&mut self, input: &[u8]) -> Result<usize, HttpError> {
        let mut pos = 0;
        // Each pass consumes bytes or returns, so the loop is bounded by input.len().
        loop {
            let rest = &input[pos..];
            match self.state {
                ChunkState::Done => return Ok(pos),
                ChunkState::Size => {
                    let Some(end) = find_crlf(rest) else {
                        if rest.len() > CHUNK_LINE_BYTES_MAX {
                            return Err(HttpError::Malformed);
                        }
                        return Ok(pos);
                    };
                    let line = std::str::from_utf8(&rest[..end]).map_err(|_| HttpError::Malformed)?;
                    let size_hex = line.split(';').next().unwrap_or("").trim();
                    let size = usize::from_str_radix(size_hex, 16).map_err(|_| HttpError::Malformed)?;
                    if size > BODY_BYTES_MAX || self.len + size > BODY_BYTES_MAX {
                        return Err(HttpError::BodyTooLarge);
                    }
                    pos += end + 2;
                    self.state = if size == 0 { ChunkState::Trailer(0) } else { ChunkState::Data(size) };
                }
                ChunkState::Data(remaining) => {
                    if rest.is_empty() {
                        return Ok(pos);
                    }
                    let take = remaining.min(rest.len());
                    if self.keep {
                        self.body.extend_from_slice(&rest[..take]);
                    }
                    self.len += take;
                    pos += take;
                    self.state =
                        if take == remaining { ChunkState::DataEnd } else { ChunkState::Data(remaining - take) };
                }
                ChunkState::DataEnd => {
                    if rest.len() < 2 {
                        return Ok(pos);
                    }
                    if &rest[..2] != b"\r\n" {
                        return Err(HttpError::Malformed);
                    }
                    pos += 2;
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailer(count) => {
                    let Some(end) = find_crlf(rest) else {
                        if rest.len() > CHUNK_LINE_BYTES_MAX {
                            return Err(HttpError::Malformed);
                        }
                        return Ok(pos);
                    };
                    pos += end + 2;
                    if end == 0 {
                        self.state = ChunkState::Done;
                    } else if count + 1 > TRAILERS_COUNT_MAX {
                        return Err(HttpError::HeadTooLarge);
                    } else {
                        self.state = ChunkState::Trailer(count + 1);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_in_pieces() {
        let raw = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        for split in 0..raw.len() {
            let mut d = ChunkedDecoder::default();
            let mut buf: Vec<u8> = raw[..split].to_vec();
            let used = d.feed(&buf).expect("ok");
            buf.drain(..used);
            buf.extend_from_slice(&raw[split..]);
            let used = d.feed(&buf).expect("ok");
            assert!(d.is_done(), "split {split}");
            assert_eq!(&buf[used..], b"NEXT");
            assert_eq!(d.into_body(), b"hello world");
        }
    }

    #[test]
    fn chunked_rejects_bad() {
        assert_eq!(ChunkedDecoder::default().feed(b"zz\r\n"), Err(HttpError::Malformed));
        assert_eq!(ChunkedDecoder::default().feed(b"1\r\naXX"), Err(HttpError::Malformed));
        assert_eq!(ChunkedDecoder::default().feed(b"ffffffffff\r\n"), Err(HttpError::BodyTooLarge));
        assert_eq!(ChunkedDecoder::default().feed(&[b'1'; CHUNK_LINE_BYTES_MAX + 1]), Err(HttpError::Malformed));
    }

    #[test]
    fn discarding_decoder_counts_without_keeping() {
        let mut d = ChunkedDecoder::discarding();
        let used = d.feed(b"5\r\nhello\r\n0\r\n\r\n").expect("ok");
        assert_eq!(used, 15);
        assert!(d.is_done());
        assert_eq!(d.body_len(), 5);
        assert!(d.into_body().is_empty());
    }
}
