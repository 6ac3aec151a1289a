//! Chunked bodies from providers, delivered in pieces of every size: must never panic
//! and never yield more bytes than arrived.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    gatekeeper_net::fuzzing::chunked(data);
});
