//! The unit the bridge stores: one JetStream message, or one line of an embedded
//! chain file. Either a batch of consecutive entries or one checkpoint, plus the
//! WAL cursor after it.
//!
//! ```text
//! {"node":"gw-1","inst":"9f…","cursor":{"4-0":[0,8812]},"entries":[<entry>,<entry>]}
//! {"node":"gw-1","inst":"9f…","cursor":{…},"checkpoint":{…signed…}}
//! ```
//!
//! The cursor is not covered by the chain: it is the bridge's own bookkeeping, stored
//! atomically with the entries it accounts for, so a restarted bridge resumes exactly
//! where the store says it stopped — never re-chaining a stored record, never
//! skipping an unstored one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::checkpoint::Checkpoint;

/// WAL position per lane key (`"<gen>-<shard>"`): `(part, offset)` of the next unread frame.
pub type Cursor = BTreeMap<String, (u64, u64)>;

/// A stored unit of one chain.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Message {
    /// Node name.
    pub node: String,
    /// Instance id.
    pub inst: String,
    /// WAL cursor once this message is stored.
    #[serde(default)]
    pub cursor: Cursor,
    /// Consecutive entries, as canonical bytes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entries: Vec<Box<RawValue>>,
    /// A signed checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<Checkpoint>,
}

/// Encodes a batch message around already-canonical entry bytes, without re-parsing them.
pub fn encode_batch(node: &str, inst: &str, cursor: &Cursor, entries: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.iter().map(|e| e.len() + 1).sum::<usize>() + 128 + cursor.len() * 32);
    let mut batch = BatchWriter::begin(&mut out, node, inst, cursor);
    for e in entries {
        batch.entry(|out| out.extend_from_slice(e));
    }
    batch.finish();
    out
}

/// Writes a batch message into a buffer the caller reuses, entry by entry, so each
/// entry is encoded in place: no per-entry buffer, no copy.
#[derive(Debug)]
pub struct BatchWriter<'b> {
    out: &'b mut Vec<u8>,
    entries: usize,
}

impl<'b> BatchWriter<'b> {
    /// Clears `out` and writes the message up to its first entry.
    pub fn begin(out: &'b mut Vec<u8>, node: &str, inst: &str, cursor: &Cursor) -> BatchWriter<'b> {
        out.clear();
        out.extend_from_slice(b"{\"node\":\"");
        out.extend_from_slice(node.as_bytes());
        out.extend_from_slice(b"\",\"inst\":\"");
        out.extend_from_slice(inst.as_bytes());
        out.extend_from_slice(b"\",\"cursor\":");
        // A map of strings to integer pairs cannot fail to serialize.
        if serde_json::to_writer(&mut *out, cursor).is_err() {
            out.extend_from_slice(b"{}");
        }
        out.extend_from_slice(b",\"entries\":[");
        BatchWriter { out, entries: 0 }
    }

    /// Appends one entry: `write` appends its canonical bytes to the buffer it is given.
    pub fn entry<R>(&mut self, write: impl FnOnce(&mut Vec<u8>) -> R) -> R {
        if self.entries > 0 {
            self.out.push(b',');
        }
        self.entries += 1;
        write(self.out)
    }

    /// Entries appended so far.
    pub fn len(&self) -> usize {
        self.entries
    }

    /// Whether no entry was appended.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Closes the message.
    pub fn finish(self) {
        self.out.extend_from_slice(b"]}");
    }
}

/// Encodes a checkpoint message.
pub fn encode_checkpoint(node: &str, inst: &str, cursor: &Cursor, checkpoint: &Checkpoint) -> Vec<u8> {
    let m = Message {
        node: node.to_string(),
        inst: inst.to_string(),
        cursor: cursor.clone(),
        entries: Vec::new(),
        checkpoint: Some(checkpoint.clone()),
    };
    serde_json::to_vec(&m).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_round_trips_entry_bytes_exactly() {
        let mut cursor = Cursor::new();
        cursor.insert("1-0".into(), (0, 42));
        let entries = vec![br#"{"a": 1}"#.to_vec(), br#"{"b":[1, 2]}"#.to_vec()];
        let bytes = encode_batch("n", "i", &cursor, &entries);
        let m: Message = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(m.cursor, cursor);
        let back: Vec<&str> = m.entries.iter().map(|e| e.get()).collect();
        assert_eq!(back, [r#"{"a": 1}"#, r#"{"b":[1, 2]}"#]);
        assert!(m.checkpoint.is_none());
    }
}
