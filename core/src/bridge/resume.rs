//! Where a start picks up: the previous start's chain tells (in the cursor inside its
//! last stored message) how far it got; this start records itself before storing
//! anything, so the next one can find its chain in turn.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::housekeeping::fsync_live_wal;
use super::retry::{retry, Policy};
use super::shipper::{Lane, Shipper};
use super::sink::{FileSink, Sink};
use super::BridgeError;
use crate::audit::message::Cursor;
use crate::audit::wal::{self, LaneId, LaneReader};
use crate::audit::AuditError;
use crate::config::FsyncPolicy;

/// Retries of reading the previous chain's position while NATS is away.
const RECOVER_RETRY: Policy =
    Policy { backoff_first: Duration::from_millis(20), backoff_max: Duration::from_millis(500), log_every: 10 };

/// What a start records before storing anything, so the next start can find this
/// instance's chain and the cursor it started from.
#[derive(Debug, Serialize, Deserialize)]
struct StateFile {
    node: String,
    inst: String,
    sink: String,
    start_cursor: Cursor,
}

fn state_path(data_dir: &Path) -> PathBuf {
    data_dir.join("bridge").join("state.json")
}

impl Shipper {
    /// Finds where the previous start stopped: the cursor in its chain's last stored
    /// message, else the cursor it started from. `None`: shutdown came first.
    pub(super) async fn recover(&mut self) -> Result<Option<Cursor>, BridgeError> {
        let path = state_path(&self.s.data_dir);
        let prev: StateFile = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| BridgeError::Audit(AuditError::State { path: path.clone(), message: e.to_string() }))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Some(Cursor::new())),
            Err(source) => return Err(BridgeError::Audit(AuditError::Io { path, source })),
        };
        let (s, shared) = (&self.s, &self.shared);
        match (prev.sink.as_str(), &mut self.sink) {
            ("file", _) => {
                Ok(Some(FileSink::recover_cursor(&s.data_dir, &prev.node, &prev.inst)?.unwrap_or(prev.start_cursor)))
            }
            ("nats", Sink::Nats(n)) => {
                let what = "reading where the previous chain stopped";
                let found = retry(what, &RECOVER_RETRY, &shared.shutdown, async |_| {
                    let result = n.recover_cursor(&prev.node, &prev.inst).await;
                    if result.is_err() {
                        shared.stats.store_failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        // Lanes are not open yet; the WAL must keep its fsync promise all the same.
                        if s.audit.fsync == FsyncPolicy::Interval {
                            fsync_live_wal(&s.wal_dir, s.gen, s.shards);
                        }
                    }
                    result
                })
                .await;
                Ok(found.map(|cursor| cursor.unwrap_or(prev.start_cursor)))
            }
            (kind, _) => {
                tracing::warn!(previous = kind, "the previous start stored to another kind of sink; resuming from its start cursor (records it stored may be chained again)");
                Ok(Some(prev.start_cursor))
            }
        }
    }

    /// Records this instance, opens every lane at the recovered cursor and deletes WAL
    /// parts the cursor is past.
    pub(super) fn begin(&mut self, cursor: Cursor) -> Result<(), BridgeError> {
        let state = StateFile {
            node: self.s.node.clone(),
            inst: self.inst.clone(),
            sink: self.sink.kind().into(),
            start_cursor: cursor.clone(),
        };
        let path = state_path(&self.s.data_dir);
        if let Some(dir) = path.parent() {
            crate::audit::private::create_dir_all(dir)
                .map_err(|source| AuditError::Io { path: dir.to_path_buf(), source })?;
        }
        wal::write_durably(&path, &serde_json::to_vec(&state).unwrap_or_default())?;
        *self.shared.inst.lock().unwrap_or_else(|p| p.into_inner()) = Some(self.inst.clone());
        for (key, (part, offset)) in &cursor {
            if let Some(lane) = LaneId::from_key(key) {
                self.open_lane(lane, *part, *offset);
            }
        }
        for (lane, part) in wal::list_parts(&self.s.wal_dir)? {
            if !self.lanes.contains_key(&lane) {
                // Not in the cursor: nothing of it was ever stored; start at its first part.
                self.open_lane(lane, part, 0);
            }
        }
        for shard in 0..self.s.shards {
            self.open_lane(LaneId { gen: self.s.gen, shard: shard as u32 }, 0, 0);
        }
        self.stored = cursor;
        self.delete_finished_parts();
        tracing::info!(node = %self.s.node, inst = %self.inst, lanes = self.lanes.len(), sink = self.sink.kind(), "audit chain started");
        Ok(())
    }

    fn open_lane(&mut self, lane: LaneId, part: u64, offset: u64) {
        let live = lane.gen == self.s.gen;
        self.lanes.entry(lane).or_insert_with(|| Lane {
            reader: LaneReader::new(&self.s.wal_dir, lane, part, offset, live),
            read_bytes: 0,
            exhausted: false,
            punched: (0, 0),
            prefaulted: (0, 0),
            handle: None,
        });
    }
}
