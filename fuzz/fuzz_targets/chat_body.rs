//! Chat-completions bodies from clients (step 1 of the pipeline): must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = gatekeeper::wire::openai::parse_chat(data);
});
