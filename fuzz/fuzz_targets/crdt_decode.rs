//! Budget state from peers (NATS deltas and snapshots): decoding must never panic, a
//! decoded state re-encodes to exactly the same bytes (one state, one encoding), and
//! merging it into a state keeps the bounds and never lowers a count.
#![no_main]

use gatekeeper_crdt::{Budgets, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits { keys_max: 64, slots_per_key_max: 16 };
    let Ok(decoded) = Budgets::decode(data, limits) else { return };
    assert_eq!(decoded.encode(), data, "decode → encode is the identity");
    let mut state = decoded.clone();
    let before: Vec<u64> = state.iter().map(|(_, c)| c.value()).collect();
    assert_eq!(state.merge(&decoded), Ok(false), "a merge with itself changes nothing");
    let after: Vec<u64> = state.iter().map(|(_, c)| c.value()).collect();
    assert_eq!(before, after);
    assert!(state.len() <= limits.keys_max);
});
