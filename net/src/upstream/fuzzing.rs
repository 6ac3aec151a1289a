//! Entry points for fuzz targets (`fuzz/`): each feeds arbitrary bytes to a parser of network
//! input. They must never panic; any panic is a bug.

use bytes::BytesMut;

use super::{head, httpdate};
use crate::chunked::{ChunkedDecoder, Decoded};

/// Decodes `data` as a chunked body, delivered in pieces whose size comes from the first byte,
/// so one input also exercises awkward split points.
pub fn chunked(data: &[u8]) {
    let Some((&stride, body)) = data.split_first() else {
        return;
    };
    let stride = usize::from(stride).max(1);
    let mut decoder = ChunkedDecoder::new(u64::MAX);
    let mut input = BytesMut::new();
    let mut produced = 0usize;
    for piece in body.chunks(stride) {
        input.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut input) {
                Ok(Decoded::Data(d)) => produced += d.len(),
                Ok(Decoded::NeedMore) => break,
                Ok(Decoded::End) | Err(_) => return,
            }
        }
    }
    assert!(produced <= body.len(), "decoder produced more bytes than it was given");
}

/// Parses `data` as a response head and derives everything the client derives from one.
pub fn response_head(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    if let Ok(Some(head)) = head::parse(&mut buf, 64 * 1024) {
        let _ = head.framing();
        let _ = head.keep_alive();
        let _ = head.content_length();
        for (name, value) in head.iter() {
            assert!(!name.is_empty());
            let _ = httpdate::parse(value);
        }
    }
}
