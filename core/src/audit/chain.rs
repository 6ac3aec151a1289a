//! One node instance's hash chain: entries, their canonical bytes, and the running
//! state (sequence, head hash, Merkle frontier) a writer or verifier keeps.
//!
//! An entry's canonical bytes are compact JSON with fields in this fixed order:
//!
//! ```text
//! {"node":"<node>","inst":"<inst>","seq":<n>,"prev":"<64 hex>","ts":<unix ms>,"record":<record JSON>}
//! ```
//!
//! `seq` starts at 1; `prev` of entry 1 is 64 zeros, of entry n it is the SHA-256 of
//! entry n−1's canonical bytes. Entries are stored as exactly these bytes, so a
//! verifier hashes what it reads and re-encodes the parsed fields to check the bytes
//! are canonical. The Merkle leaf of an entry is its entry hash (the SHA-256 of its
//! canonical bytes), so each entry's bytes are hashed once: the leaf hash is then
//! `SHA-256(0x00 || entry hash)`, one block.

use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use super::merkle::{from_hex, Frontier, Hash};

/// `prev` of a chain's first entry.
pub const GENESIS_PREV: Hash = [0u8; 32];

/// Writes an entry's canonical bytes into `out` (cleared first).
///
/// `node` and `inst` are validated identifiers (no characters JSON must escape);
/// `record` is already compact JSON.
pub fn encode_entry(out: &mut Vec<u8>, node: &str, inst: &str, seq: u64, prev: &Hash, ts_ms: u64, record: &[u8]) {
    out.clear();
    append_entry(out, node, inst, seq, prev, ts_ms, record);
}

/// Appends an entry's canonical bytes to `out` (see [`encode_entry`]); allocates
/// nothing beyond growing `out`.
pub fn append_entry(out: &mut Vec<u8>, node: &str, inst: &str, seq: u64, prev: &Hash, ts_ms: u64, record: &[u8]) {
    debug_assert!(is_identifier(node) && is_identifier(inst));
    out.reserve(record.len() + node.len() + inst.len() + 140);
    out.extend_from_slice(b"{\"node\":\"");
    out.extend_from_slice(node.as_bytes());
    out.extend_from_slice(b"\",\"inst\":\"");
    out.extend_from_slice(inst.as_bytes());
    out.extend_from_slice(b"\",\"seq\":");
    push_decimal(out, seq);
    out.extend_from_slice(b",\"prev\":\"");
    push_hex(out, prev);
    out.extend_from_slice(b"\",\"ts\":");
    push_decimal(out, ts_ms);
    out.extend_from_slice(b",\"record\":");
    out.extend_from_slice(record);
    out.push(b'}');
}

/// `"00" "01" … "99"`: two decimal digits per division, for [`push_decimal`].
const DIGIT_PAIRS: &[u8; 200] = b"\
0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// Appends `n` in decimal, as `u64::to_string` writes it. Digits go into a stack
/// array, two per division, and then into `out` with one copy (this runs several
/// times per audit record).
pub(crate) fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    // Bounded: a u64 has at most 20 decimal digits, so `i` never goes below 0.
    while n >= 100 {
        let pair = (n % 100) as usize * 2;
        n /= 100;
        i -= 2;
        digits[i..i + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    }
    if n >= 10 {
        let pair = n as usize * 2;
        i -= 2;
        digits[i..i + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    } else {
        i -= 1;
        digits[i] = b'0' + n as u8;
    }
    out.extend_from_slice(&digits[i..]);
}

/// Appends lower-case hex of a digest, as [`super::merkle::to_hex`] writes it: built
/// in a stack array and copied once, rather than 64 pushes that each check capacity.
fn push_hex(out: &mut Vec<u8>, hash: &Hash) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = [0u8; 64];
    for (pair, b) in hex.chunks_exact_mut(2).zip(hash) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 15)];
    }
    out.extend_from_slice(&hex);
}

/// Node names and instance ids: 1–64 of `A-Z a-z 0-9 _ -`, so they are safe in NATS
/// subjects, file names and JSON without escaping.
pub fn is_identifier(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// SHA-256 of an entry's canonical bytes.
pub fn entry_hash(bytes: &[u8]) -> Hash {
    Sha256::digest(bytes).into()
}

/// An entry as parsed back from its canonical bytes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryView<'a> {
    /// Node name.
    #[serde(borrow)]
    pub node: &'a str,
    /// Instance id.
    #[serde(borrow)]
    pub inst: &'a str,
    /// 1-based position in the chain.
    pub seq: u64,
    /// Hex SHA-256 of the previous entry.
    #[serde(borrow)]
    pub prev: &'a str,
    /// When the bridge chained it, Unix ms.
    pub ts: u64,
    /// The audit record, exactly as the shard wrote it.
    #[serde(borrow)]
    pub record: &'a RawValue,
}

impl<'a> EntryView<'a> {
    /// Parses canonical entry bytes and checks that they are canonical (re-encoding
    /// the parsed fields gives the same bytes). `None` when either fails.
    pub fn parse(bytes: &'a [u8]) -> Option<EntryView<'a>> {
        let view: EntryView<'a> = serde_json::from_slice(bytes).ok()?;
        if !is_identifier(view.node) || !is_identifier(view.inst) {
            return None;
        }
        let prev = from_hex(view.prev)?;
        let mut again = Vec::new();
        encode_entry(&mut again, view.node, view.inst, view.seq, &prev, view.ts, view.record.get().as_bytes());
        (again == bytes).then_some(view)
    }

    /// `prev` as bytes (already checked by [`EntryView::parse`]).
    pub fn prev_hash(&self) -> Hash {
        from_hex(self.prev).unwrap_or(GENESIS_PREV)
    }
}

/// The running state of one chain: what the next entry links to.
#[derive(Debug, Clone)]
pub struct ChainState {
    /// Entries so far (the last entry's `seq`).
    pub seq: u64,
    /// Hash of the last entry, or [`GENESIS_PREV`].
    pub head: Hash,
    /// Merkle tree over every entry so far.
    pub tree: Frontier,
}

impl Default for ChainState {
    fn default() -> Self {
        ChainState { seq: 0, head: GENESIS_PREV, tree: Frontier::new() }
    }
}

impl ChainState {
    /// Appends an entry whose canonical bytes are `bytes` (already encoded with
    /// `seq = self.seq + 1` and `prev = self.head`).
    pub fn push(&mut self, bytes: &[u8]) {
        self.seq += 1;
        self.head = entry_hash(bytes);
        self.tree.push(&self.head);
        debug_assert_eq!(self.seq, self.tree.size());
    }

    /// Encodes the next entry for `record` at the end of `out` and appends it to
    /// the chain. Returns where in `out` its canonical bytes are.
    pub fn append(
        &mut self,
        out: &mut Vec<u8>,
        node: &str,
        inst: &str,
        ts_ms: u64,
        record: &[u8],
    ) -> std::ops::Range<usize> {
        let start = out.len();
        append_entry(out, node, inst, self.seq + 1, &self.head, ts_ms, record);
        self.push(&out[start..]);
        start..out.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_bytes_are_fixed() {
        let mut out = Vec::new();
        encode_entry(&mut out, "gw-1", "00ff", 1, &GENESIS_PREV, 1_700_000_000_000, br#"{"a":1}"#);
        let text = String::from_utf8(out.clone()).unwrap();
        assert_eq!(
            text,
            format!(
                r#"{{"node":"gw-1","inst":"00ff","seq":1,"prev":"{}","ts":1700000000000,"record":{{"a":1}}}}"#,
                "0".repeat(64)
            )
        );
        let view = EntryView::parse(&out).expect("canonical");
        assert_eq!((view.node, view.inst, view.seq, view.ts), ("gw-1", "00ff", 1, 1_700_000_000_000));
        assert_eq!(view.record.get(), r#"{"a":1}"#);
    }

    #[test]
    fn non_canonical_bytes_are_refused() {
        let prev = "0".repeat(64);
        let spaced = format!(r#"{{"node":"n","inst":"i","seq":1,"prev":"{prev}","ts":5, "record":{{}}}}"#);
        assert!(EntryView::parse(spaced.as_bytes()).is_none());
        let reordered = format!(r#"{{"inst":"i","node":"n","seq":1,"prev":"{prev}","ts":5,"record":{{}}}}"#);
        assert!(EntryView::parse(reordered.as_bytes()).is_none());
        let extra = format!(r#"{{"node":"n","inst":"i","seq":1,"prev":"{prev}","ts":5,"record":{{}},"x":1}}"#);
        assert!(EntryView::parse(extra.as_bytes()).is_none());
        let upper = format!(r#"{{"node":"n","inst":"i","seq":1,"prev":"{}","ts":5,"record":{{}}}}"#, "A".repeat(64));
        assert!(EntryView::parse(upper.as_bytes()).is_none());
        let good = format!(r#"{{"node":"n","inst":"i","seq":1,"prev":"{prev}","ts":5,"record":{{}}}}"#);
        assert!(EntryView::parse(good.as_bytes()).is_some());
    }

    #[test]
    fn chain_links_each_entry_to_the_last() {
        let mut state = ChainState::default();
        let mut a = Vec::new();
        state.append(&mut a, "n", "i", 1, b"{}");
        let mut b = Vec::new();
        state.append(&mut b, "n", "i", 2, b"{}");
        let vb = EntryView::parse(&b).expect("canonical");
        assert_eq!(vb.seq, 2);
        assert_eq!(vb.prev_hash(), entry_hash(&a));
        assert_eq!(state.head, entry_hash(&b));
        // The Merkle leaves are the entry hashes.
        let leaves = [entry_hash(&a).to_vec(), entry_hash(&b).to_vec()];
        assert_eq!(state.tree.root(), super::super::merkle::root_of(&leaves));
    }

    #[test]
    fn numbers_and_hashes_encode_like_to_string() {
        let mut edges = vec![0, 1, 9, 10, 11, 99, 100, 101, 999, 1000, 1_700_000_000_000, u64::MAX, u64::MAX - 1];
        edges.extend((1..20).map(|k| 10u64.pow(k) - 1));
        edges.extend((1..20).map(|k| 10u64.pow(k)));
        edges.extend((0..10_000).map(|k| k * 7919 + 13));
        for n in edges {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
        let h = entry_hash(b"x");
        let mut out = Vec::new();
        push_hex(&mut out, &h);
        assert_eq!(out, super::super::merkle::to_hex(&h).as_bytes());
    }

    #[test]
    fn append_adds_after_what_is_there() {
        let mut state = ChainState::default();
        let mut out = b"prefix,".to_vec();
        let a = state.append(&mut out, "n", "i", 1, b"{}");
        let b = state.append(&mut out, "n", "i", 2, b"{}");
        assert_eq!((a.start, a.end, b.start), (7, b.start, a.end));
        assert_eq!(EntryView::parse(&out[b.clone()]).unwrap().prev_hash(), entry_hash(&out[a]));
        assert_eq!(state.head, entry_hash(&out[b]));
    }

    #[test]
    fn identifiers() {
        assert!(is_identifier("gw_1-a"));
        assert!(!is_identifier(""));
        assert!(!is_identifier("a.b"));
        assert!(!is_identifier("a b"));
        assert!(!is_identifier(&"x".repeat(65)));
    }
}
