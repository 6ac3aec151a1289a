//! Credit spends (`X-Gatekeeper-Credit`) come from anonymous clients: decoding must never
//! panic, a decoded spend re-encodes to text that decodes to the same encoding, and
//! verifying whatever decodes must not panic either (it fails unless the input is a real
//! spend under this fixed issuer, which random input is not).
#![no_main]

use std::sync::OnceLock;

use gatekeeper_zk::{Domain, Issuer, IssuerSeed, Spend};
use libfuzzer_sys::fuzz_target;

fn issuer() -> &'static Issuer {
    static ISSUER: OnceLock<Issuer> = OnceLock::new();
    ISSUER.get_or_init(|| {
        let domain = Domain::new("fuzz").expect("valid name");
        Issuer::derive(&domain, &IssuerSeed::from_bytes([7; 32]), 1)
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(spend) = Spend::decode(text) else { return };
    let once = spend.encode();
    let twice = Spend::decode(&once).expect("an encoded spend decodes").encode();
    assert_eq!(once, twice, "encode ∘ decode is stable");
    let _ = spend.amount();
    let _ = issuer().verify(&spend);
});
