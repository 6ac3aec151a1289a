//! Untrusted bearer tokens: parsing, footer and claims decoding, PASERK parsing and
//! verification must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    gatekeeper::keys::fuzzing::parse_token(data);
});
