//! The binary form of a [`Budgets`] map (full state or delta), version 2 (version 1 had
//! no measure: its tag byte was the subject alone; it is refused like any unknown one).
//!
//! ```text
//! u8      version (2)
//! varint  counter count
//! per counter, in strictly ascending key order:
//!   u8      tag: subject (bit 0: 0 key id, 1 tenant) | measure << 1 (0 tokens,
//!           1 requests, 2 nano-USD); 0..=5
//!   u8      subject length (1..=255), then that many bytes of UTF-8
//!   u8      window kind: 0 minute, 1 day, 2 month
//!   varint  window start, Unix seconds, zigzag (must be a start of that kind)
//!   varint  slot count (at least 1)
//!   per slot, in strictly ascending replica order:
//!     varint node, varint shard (u16), varint incarnation (u32), varint value (at least 1)
//! ```
//!
//! Varints are unsigned LEB128, at most 10 bytes, shortest form only. Every rule is
//! checked on decode, so one state has exactly one encoding and `encode(decode(b)) == b`
//! for every `b` that decodes. Decoding untrusted bytes never panics and allocates only
//! for entries it has read (a count claiming 2^60 counters is refused against the limits
//! before anything is built).

use std::collections::BTreeMap;

use crate::budgets::{BudgetKey, Budgets, Limits, Measure, Subject, SUBJECT_BYTES_MAX};
use crate::error::CrdtError;
use crate::gcounter::GCounter;
use crate::replica::ReplicaId;
use crate::window::{Epoch, WindowKind};

/// The encoding version this build writes and reads.
pub const VERSION: u8 = 2;

/// Longest LEB128 encoding of a `u64`.
const VARINT_BYTES_MAX: usize = 10;

impl Budgets {
    /// The compact binary form of the whole map (or of a delta), version [`VERSION`]:
    /// see the crate's README, "Encoding".
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    /// Reads [`Budgets::encode`]'s output from untrusted bytes, bounded by `limits`.
    pub fn decode(bytes: &[u8], limits: Limits) -> Result<Budgets, CrdtError> {
        decode(bytes, limits)
    }
}

fn encode(budgets: &Budgets) -> Vec<u8> {
    // About 40 bytes for a counter with one slot and a short key id.
    let mut out = Vec::with_capacity(1 + VARINT_BYTES_MAX + budgets.len().saturating_mul(40));
    out.push(VERSION);
    put_varint(&mut out, budgets.len() as u64);
    for (key, counter) in budgets.iter() {
        let subject = key.subject.as_str().as_bytes();
        out.push(key.subject.tag() | key.measure.tag() << 1);
        // Subject constructors bound the length to SUBJECT_BYTES_MAX (255).
        debug_assert!(!subject.is_empty() && subject.len() <= SUBJECT_BYTES_MAX);
        out.push(u8::try_from(subject.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(subject);
        out.push(key.epoch.kind().tag());
        put_varint(&mut out, zigzag(key.epoch.start_unix_s()));
        put_varint(&mut out, counter.len() as u64);
        for (replica, value) in counter.slots() {
            put_varint(&mut out, replica.node);
            put_varint(&mut out, u64::from(replica.shard));
            put_varint(&mut out, u64::from(replica.incarnation));
            put_varint(&mut out, value);
        }
    }
    out
}

fn decode(bytes: &[u8], limits: Limits) -> Result<Budgets, CrdtError> {
    let mut r = Reader { bytes };
    let version = r.u8()?;
    if version != VERSION {
        return Err(CrdtError::UnknownVersion(version));
    }
    let count = r.varint()?;
    if count > limits.keys_max as u64 {
        return Err(CrdtError::KeysFull { keys_max: limits.keys_max });
    }
    // Grows only with entries read (each at least 8 bytes of input), never from `count`.
    let mut counters: Vec<(BudgetKey, GCounter)> = Vec::new();
    for _ in 0..count {
        let key = r.key()?;
        if counters.last().is_some_and(|(last, _)| *last >= key) {
            return Err(CrdtError::Malformed("counters out of order or repeated"));
        }
        let counter = r.counter(limits.slots_per_key_max)?;
        counters.push((key, counter));
    }
    if !r.bytes.is_empty() {
        return Err(CrdtError::Malformed("trailing bytes"));
    }
    // Already sorted and unique: the map is built in bulk, not by one insert per key.
    Ok(Budgets::from_counters(counters.into_iter().collect::<BTreeMap<_, _>>(), limits))
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Maps small negative and positive numbers to small unsigned ones: 0, -1, 1, -2 → 0, 1, 2, 3.
fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// A cursor over untrusted bytes; every read checks what is left.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn u8(&mut self) -> Result<u8, CrdtError> {
        let (&b, rest) = self.bytes.split_first().ok_or(CrdtError::Malformed("truncated"))?;
        self.bytes = rest;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&[u8], CrdtError> {
        if n > self.bytes.len() {
            return Err(CrdtError::Malformed("truncated"));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn varint(&mut self) -> Result<u64, CrdtError> {
        let mut v = 0u64;
        for i in 0..VARINT_BYTES_MAX {
            let b = self.u8()?;
            let bits = u64::from(b & 0x7f);
            // The tenth byte holds only the top bit of a u64.
            if i == VARINT_BYTES_MAX - 1 && bits > 1 {
                return Err(CrdtError::Malformed("varint overflows u64"));
            }
            v |= bits << (7 * i);
            if b & 0x80 == 0 {
                if b == 0 && i > 0 {
                    return Err(CrdtError::Malformed("varint not in shortest form"));
                }
                return Ok(v);
            }
        }
        Err(CrdtError::Malformed("varint longer than 10 bytes"))
    }

    fn key(&mut self) -> Result<BudgetKey, CrdtError> {
        let tag = self.u8()?;
        let len = usize::from(self.u8()?);
        let text = std::str::from_utf8(self.take(len)?).map_err(|_| CrdtError::Malformed("subject is not UTF-8"))?;
        let measure = Measure::from_tag(tag >> 1).ok_or(CrdtError::Malformed("unknown measure"))?;
        let subject = match tag & 1 {
            0 => Subject::key(text),
            _ => Subject::tenant(text),
        }
        .map_err(|_| CrdtError::Malformed("empty subject"))?;
        let kind = WindowKind::from_tag(self.u8()?).ok_or(CrdtError::Malformed("unknown window kind"))?;
        let start = unzigzag(self.varint()?);
        let epoch = Epoch::at_start(kind, start).ok_or(CrdtError::Malformed("epoch is not a window start"))?;
        Ok(BudgetKey { subject, epoch, measure })
    }

    fn counter(&mut self, slots_max: usize) -> Result<GCounter, CrdtError> {
        let count = self.varint()?;
        if count == 0 {
            return Err(CrdtError::Malformed("counter without slots"));
        }
        if count > slots_max as u64 {
            return Err(CrdtError::SlotsFull { slots_per_key_max: slots_max });
        }
        let mut slots = Vec::new();
        let mut last: Option<ReplicaId> = None;
        for _ in 0..count {
            let node = self.varint()?;
            let shard = u16::try_from(self.varint()?).map_err(|_| CrdtError::Malformed("shard exceeds u16"))?;
            let incarnation =
                u32::try_from(self.varint()?).map_err(|_| CrdtError::Malformed("incarnation exceeds u32"))?;
            let replica = ReplicaId { node, shard, incarnation };
            if last.is_some_and(|last| last >= replica) {
                return Err(CrdtError::Malformed("slots out of order or repeated"));
            }
            let value = self.varint()?;
            if value == 0 {
                return Err(CrdtError::Malformed("zero slot"));
            }
            last = Some(replica);
            slots.push((replica, value));
        }
        Ok(GCounter::from_sorted_slots(slots))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Budgets {
        let mut b = Budgets::default();
        let k = BudgetKey::at(Subject::key("key-1").unwrap(), WindowKind::Minute, 1_700_000_000).unwrap();
        let t = BudgetKey::at(Subject::tenant("acme").unwrap(), WindowKind::Month, -1).unwrap();
        b.add(ReplicaId::new(u64::MAX, u16::MAX, u32::MAX), &k, u64::MAX).unwrap();
        b.add(ReplicaId::new(0, 0, 0), &k, 1).unwrap();
        b.add(ReplicaId::new(3, 1, 2), &t, 300).unwrap();
        b
    }

    #[test]
    fn round_trip_and_canonical() {
        let b = sample();
        let bytes = b.encode();
        assert_eq!(bytes[0], VERSION);
        let back = Budgets::decode(&bytes, Limits::default()).unwrap();
        assert_eq!(back, b);
        assert_eq!(back.encode(), bytes);
        assert!(!back.has_delta(), "decoded state is not re-shipped as this replica's delta");
        let empty = Budgets::default().encode();
        assert_eq!(empty, vec![VERSION, 0]);
    }

    #[test]
    fn measures_are_distinct_counters_and_round_trip() {
        let mut b = Budgets::default();
        let base = BudgetKey::at(Subject::tenant("acme").unwrap(), WindowKind::Minute, 120).unwrap();
        let r = ReplicaId::new(1, 0, 1);
        for (i, m) in Measure::ALL.into_iter().enumerate() {
            b.add(r, &base.clone().with_measure(m), 10 + i as u64).unwrap();
        }
        assert_eq!(b.len(), 3);
        assert_eq!(b.spent(&base.clone().with_measure(Measure::Requests)), 11);
        let bytes = b.encode();
        // The tag bytes: tenant (1) | measure << 1.
        let tags: Vec<u8> = [1u8, 3, 5].to_vec();
        let at: Vec<u8> =
            bytes.iter().enumerate().filter(|(i, _)| [2usize, 16, 30].contains(i)).map(|(_, v)| *v).collect();
        assert_eq!(at, tags, "{bytes:?}");
        let back = Budgets::decode(&bytes, Limits::default()).unwrap();
        assert_eq!(back, b);
        assert_eq!(back.encode(), bytes);
        for m in Measure::ALL {
            assert_eq!(Measure::from_tag(m.tag()), Some(m));
        }
        assert_eq!(Measure::from_tag(3), None);
    }

    #[test]
    fn unknown_versions_are_refused() {
        let mut bytes = sample().encode();
        for v in [0u8, 1, 3, 0xff] {
            bytes[0] = v;
            assert_eq!(Budgets::decode(&bytes, Limits::default()), Err(CrdtError::UnknownVersion(v)));
        }
        assert_eq!(Budgets::decode(&[], Limits::default()), Err(CrdtError::Malformed("truncated")));
    }

    #[test]
    fn every_truncation_and_trailing_byte_is_refused() {
        let bytes = sample().encode();
        for n in 0..bytes.len() {
            assert!(Budgets::decode(&bytes[..n], Limits::default()).is_err(), "prefix of {n}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(Budgets::decode(&long, Limits::default()), Err(CrdtError::Malformed("trailing bytes")));
    }

    #[test]
    fn hostile_counts_allocate_nothing() {
        let mut bytes = vec![VERSION];
        put_varint(&mut bytes, 1 << 60);
        assert_eq!(Budgets::decode(&bytes, Limits::default()), Err(CrdtError::KeysFull { keys_max: 100_000 }));
        let mut bytes = vec![VERSION, 1, 0, 1, b'k', 0, 0];
        put_varint(&mut bytes, 1 << 60);
        assert_eq!(Budgets::decode(&bytes, Limits::default()), Err(CrdtError::SlotsFull { slots_per_key_max: 1_024 }));
    }

    #[test]
    fn non_canonical_forms_are_refused() {
        let ok = |b: &[u8]| Budgets::decode(b, Limits::default());
        // One key counter "k", minute 0, one slot (0,0,0) = 5.
        assert!(ok(&[VERSION, 1, 0, 1, b'k', 0, 0, 1, 0, 0, 0, 5]).is_ok());
        for (bad, why) in [
            (&[VERSION, 1, 0, 1, b'k', 0, 0, 1, 0, 0, 0, 0][..], "zero slot"),
            (&[VERSION, 1, 0, 1, b'k', 0, 0, 0], "counter without slots"),
            (&[VERSION, 1, 0, 1, b'k', 0, 2, 1, 0, 0, 0, 5], "epoch is not a window start"),
            (&[VERSION, 1, 0, 1, b'k', 3, 0, 1, 0, 0, 0, 5], "unknown window kind"),
            (&[VERSION, 1, 6, 1, b'k', 0, 0, 1, 0, 0, 0, 5], "unknown measure"),
            (&[VERSION, 1, 0xff, 1, b'k', 0, 0, 1, 0, 0, 0, 5], "unknown measure"),
            (&[VERSION, 1, 0, 0, 0, 0, 1, 0, 0, 0, 5], "empty subject"),
            (&[VERSION, 1, 0, 1, 0xff, 0, 0, 1, 0, 0, 0, 5], "subject is not UTF-8"),
            (&[VERSION, 0x81, 0], "varint not in shortest form"),
            (&[VERSION, 1, 0, 1, b'k', 0, 0, 2, 0, 0, 0, 5, 0, 0, 0, 5], "slots out of order or repeated"),
            (&[VERSION, 1, 0, 1, b'k', 0, 0, 1, 0, 0x80, 0x80, 0x04, 0, 5], "shard exceeds u16"),
            (
                &[VERSION, 2, 0, 1, b'k', 0, 0, 1, 0, 0, 0, 5, 0, 1, b'k', 0, 0, 1, 0, 0, 0, 5],
                "counters out of order or repeated",
            ),
        ] {
            assert_eq!(ok(bad), Err(CrdtError::Malformed(why)), "{bad:?}");
        }
        let mut eleven = vec![VERSION];
        eleven.extend([0xff; 9]);
        eleven.push(0x02);
        assert_eq!(ok(&eleven), Err(CrdtError::Malformed("varint overflows u64")));
    }

    #[test]
    fn fuzz_seeds_decode() {
        // The committed seed corpus of `fuzz/fuzz_targets/crdt_decode.rs` must stay valid.
        for (name, bytes, len) in [
            ("empty", &include_bytes!("../../fuzz/corpus/crdt_decode/empty")[..], 0),
            ("one_key", include_bytes!("../../fuzz/corpus/crdt_decode/one_key"), 1),
            ("two_keys", include_bytes!("../../fuzz/corpus/crdt_decode/two_keys"), 2),
        ] {
            let b = Budgets::decode(bytes, Limits::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(b.len(), len, "{name}");
            assert_eq!(b.encode(), bytes, "{name}");
        }
    }

    #[test]
    fn varints_and_zigzag() {
        for v in [0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX - 1, u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert!(out.len() <= VARINT_BYTES_MAX);
            assert_eq!(Reader { bytes: &out }.varint(), Ok(v));
        }
        for v in [0, -1, 1, i64::MIN, i64::MAX, -1_700_000_000] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
        assert_eq!(zigzag(-1), 1);
    }
}
