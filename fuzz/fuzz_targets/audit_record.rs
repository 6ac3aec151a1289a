//! Audit records as the bridge reads them from the WAL (untrusted after a crash or a
//! bad disk): `RecordView::parse` takes a hand-written path for plain records and
//! falls back to serde_json otherwise. Whatever the bytes, it must never panic and
//! must give exactly what serde_json gives (the same fields, or an error).
#![no_main]

use gatekeeper::audit::RecordView;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let ours = RecordView::parse(data).map(|v| format!("{v:?}")).ok();
    let serde = serde_json::from_slice::<RecordView<'_>>(data).map(|v| format!("{v:?}")).ok();
    assert_eq!(ours, serde, "{}", String::from_utf8_lossy(data));
});
