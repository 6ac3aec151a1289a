//! Server-sent events framing: finding `data:` lines in a byte stream that arrives
//! in arbitrary pieces, without holding the stream back.
//!
//! The relay forwards every piece as it comes; [`DataLines`] only watches the
//! bytes go by and hands complete `data:` payloads to a callback, so the gateway
//! can read, say, the final `usage` event of an OpenAI stream.

/// Longest SSE line kept while waiting for its end, bytes. A longer line is skipped:
/// whatever it carried is not looked at, and the stream itself is unaffected.
pub const LINE_BYTES_MAX: usize = 64 * 1024;

/// Splits a stream into lines and reports each `data:` payload.
#[derive(Debug, Default)]
pub struct DataLines {
    partial: Vec<u8>,
    skipping: bool,
}

impl DataLines {
    /// A scanner with nothing buffered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next piece of the stream; `on_data` gets the payload of each complete
    /// `data:` line (without the `data:` prefix, one optional space, or the line end).
    pub fn feed(&mut self, mut piece: &[u8], mut on_data: impl FnMut(&[u8])) {
        while let Some(end) = piece.iter().position(|b| *b == b'\n') {
            let (line, rest) = piece.split_at(end);
            piece = &rest[1..];
            if self.skipping {
                self.skipping = false;
                self.partial.clear();
                continue;
            }
            if self.partial.is_empty() {
                emit(line, &mut on_data);
            } else {
                self.partial.extend_from_slice(line);
                emit(&self.partial, &mut on_data);
                self.partial.clear();
            }
        }
        if self.skipping || piece.is_empty() {
            return;
        }
        if self.partial.len() + piece.len() > LINE_BYTES_MAX {
            self.partial.clear();
            self.skipping = true;
        } else {
            self.partial.extend_from_slice(piece);
        }
    }
}

fn emit(line: &[u8], on_data: &mut impl FnMut(&[u8])) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if let Some(data) = line.strip_prefix(b"data:") {
        on_data(data.strip_prefix(b" ").unwrap_or(data));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(pieces: &[&[u8]]) -> Vec<String> {
        let mut s = DataLines::new();
        let mut out = Vec::new();
        for p in pieces {
            s.feed(p, |d| out.push(String::from_utf8_lossy(d).into_owned()));
        }
        out
    }

    #[test]
    fn finds_data_lines_across_pieces() {
        let got = collect(&[b"data: {\"a\"", b":1}\n\nevent: x\ndata:[DONE]\r\n", b"\n"]);
        assert_eq!(got, ["{\"a\":1}", "[DONE]"]);
    }

    #[test]
    fn overlong_lines_are_skipped_not_buffered() {
        let long = vec![b'x'; LINE_BYTES_MAX + 1];
        let mut s = DataLines::new();
        let mut out = Vec::new();
        s.feed(b"data: ", |_| {});
        s.feed(&long, |_| {});
        assert!(s.partial.is_empty());
        s.feed(b"tail\ndata: ok\n", |d| out.push(d.to_vec()));
        assert_eq!(out, [b"ok".to_vec()]);
    }

    proptest::proptest! {
        #[test]
        fn any_split_gives_the_same_lines(cut in 0usize..40) {
            let wire: &[u8] = b"data: one\n\ndata: two\r\n\r\n: comment\ndata: three\n\n";
            let cut = cut.min(wire.len());
            let got = collect(&[&wire[..cut], &wire[cut..]]);
            proptest::prop_assert_eq!(got, vec!["one".to_string(), "two".into(), "three".into()]);
        }
    }
}
