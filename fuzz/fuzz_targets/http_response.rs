//! Response heads from providers: must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    gatekeeper_net::fuzzing::response_head(data);
});
