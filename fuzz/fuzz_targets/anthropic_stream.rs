//! Anthropic answers from providers (step 7 for `kind: anthropic`): the stream
//! translator, the whole-answer and error translations, and the request translation
//! must never panic, and how a stream is cut into pieces must not change its output.
#![no_main]

use gatekeeper::wire::anthropic::{chat_completion, error_body, messages_body, StreamTranslator};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte chooses where to cut; the rest is the stream.
    let Some((&cut, wire)) = data.split_first() else { return };
    let mut whole = Vec::new();
    StreamTranslator::new(1, true).feed(wire, &mut whole);
    let mut pieces = Vec::new();
    let mut t = StreamTranslator::new(1, true);
    let step = usize::from(cut).max(1);
    for piece in wire.chunks(step) {
        t.feed(piece, &mut pieces);
    }
    assert_eq!(whole, pieces, "chunking changed the translated stream");
    let _ = t.usage();
    let _ = chat_completion(wire, 1);
    let _ = error_body(400, wire);
    let _ = messages_body(wire, "m", 1);
});
