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

// The fuzz entries run here under proptest too, so `cargo test` catches a panic the fuzzers
// would find, without the parsers' own tests reaching up into this module.
#[cfg(test)]
mod tests {
    use proptest::{collection::vec, prelude::any};

    proptest::proptest! {
        #[test]
        fn garbage_heads_never_panic(data in vec(any::<u8>(), 0..600)) {
            super::response_head(&data);
            super::chunked(&data);
        }

        #[test]
        fn mutated_heads_never_panic(flips in vec((any::<usize>(), any::<u8>()), 1..6)) {
            let mut data = b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nTransfer-Encoding: chunked\r\n\
                             Connection: keep-alive\r\nRetry-After: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n"
                .to_vec();
            for (at, byte) in flips {
                let at = at % data.len();
                data[at] = byte;
            }
            super::response_head(&data);
        }

        #[test]
        fn garbage_chunked_bodies_never_panic(data in vec(any::<u8>(), 0..300)) {
            super::chunked(&data);
        }
    }
}
