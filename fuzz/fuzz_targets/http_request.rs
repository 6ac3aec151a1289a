//! Request heads and chunked bodies from untrusted clients: must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    gatekeeper_net::fuzzing::request_head(data);
    gatekeeper_net::fuzzing::chunked(data);
});
