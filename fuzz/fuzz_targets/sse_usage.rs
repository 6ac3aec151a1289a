//! Server-sent event streams and answer bodies from providers: the usage reader and
//! the usage-event filter must never panic, and the filter never invents bytes.
#![no_main]

use gatekeeper::wire::openai::{usage_from_body, StreamUsage, UsageEventFilter};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&stride, stream)) = data.split_first() else { return };
    let stride = usize::from(stride).max(1);
    let mut usage = StreamUsage::default();
    let mut filter = UsageEventFilter::default();
    let mut out = Vec::new();
    for piece in stream.chunks(stride) {
        usage.feed(piece);
        filter.feed(piece, &mut out);
    }
    filter.finish(&mut out);
    assert!(out.len() <= stream.len(), "the filter only removes bytes");
    let _ = usage.usage();
    let _ = usage_from_body(stream);
});
