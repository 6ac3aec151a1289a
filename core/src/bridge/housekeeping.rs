//! The shipper's timed and tidy-up duties: `BH_HEALTH` and `BH_SESSIONS` reports, the
//! last fsync, and deleting WAL parts once everything in them is stored (durably, with
//! the embedded chain file under `fsync: interval`: see `Shipper::sync_interval`).

use std::path::Path;
use std::time::{Duration, Instant};

use super::now_unix_ms;
use super::shipper::{fsync_lanes, Shipper, PARTS_PER_PASS_MAX};
use crate::audit::wal::{self, LaneId};

impl Shipper {
    /// The duties due by time besides fsync (`Shipper::sync_interval`): health and
    /// session reports.
    pub(super) async fn housekeeping(&mut self) {
        let a = &self.s.audit;
        let (health_ms, sessions_ms) = (a.health_interval_ms, a.sessions_flush_ms);
        let mut aux = Vec::new();
        if self.last_health.elapsed() >= Duration::from_millis(health_ms) {
            self.derived.health(now_unix_ms(), health_ms, &mut aux);
            self.last_health = Instant::now();
        }
        if self.last_sessions.elapsed() >= Duration::from_millis(sessions_ms) {
            self.derived.sessions(now_unix_ms(), &mut aux);
            self.last_sessions = Instant::now();
        }
        // Telemetry: one attempt; a lost report is superseded by the next.
        if let Err(e) = self.sink.store_aux(&aux).await {
            tracing::debug!(error = %e, "health/session report not published");
        }
    }

    /// The last flush when the chain is closed.
    pub(super) fn final_sync(&mut self) {
        fsync_lanes(&self.s, &self.lanes);
        match self.sink.sync() {
            // The chain file holds every stored record durably: their parts can go.
            Ok(()) => self.delete_finished_parts(),
            Err(e) => tracing::warn!(error = %e, "final sync of the audit chain file failed"),
        }
    }

    /// Deletes WAL parts every stored message has moved past.
    pub(super) fn delete_finished_parts(&mut self) {
        for (key, (part, _)) in &self.stored {
            let Some(lane) = LaneId::from_key(key) else { continue };
            // Parts below the stored one are finished; walk down until one is missing.
            // `part - 1` was deleted already when the last pass saw the same part.
            let below = self.deleted_below.entry(lane).or_insert(0);
            if *below >= *part {
                continue;
            }
            *below = *part;
            for p in (0..*part).rev() {
                let path = wal::part_path(&self.s.wal_dir, lane, p);
                if std::fs::remove_file(&path).is_err() {
                    break;
                }
            }
        }
        self.retire_exhausted_lanes();
    }

    /// Drops dead lanes whose every byte is stored: deletes their last part and takes
    /// them out of the cursor (their generation is never reused).
    pub(super) fn retire_exhausted_lanes(&mut self) {
        let done: Vec<LaneId> = self
            .lanes
            .iter()
            .filter(|(id, l)| match self.stored.get(&id.key()) {
                Some(at) => l.exhausted && *at == (l.reader.part, l.reader.offset),
                // Never stored and nothing in it: an idle shard's empty files.
                None => l.exhausted && l.read_bytes == 0 && l.reader.skipped_bytes == 0,
            })
            .map(|(id, _)| *id)
            .collect();
        for id in done {
            let last = self.lanes.get(&id).map_or(0, |l| l.reader.part);
            let mut deleted = true;
            for part in (0..=last).rev().take(PARTS_PER_PASS_MAX as usize) {
                let path = wal::part_path(&self.s.wal_dir, id, part);
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "could not delete a shipped WAL part");
                        deleted = false;
                    }
                }
            }
            if !deleted {
                continue;
            }
            self.lanes.remove(&id);
            self.stored.remove(&id.key());
            self.deleted_below.remove(&id);
        }
    }
}

/// Fsyncs every part of the current generation's lanes (used before lanes are open).
pub(super) fn fsync_live_wal(wal_dir: &Path, gen: u64, shards: usize) {
    for shard in 0..shards {
        for part in 0..PARTS_PER_PASS_MAX {
            match std::fs::File::open(wal::part_path(wal_dir, LaneId { gen, shard: shard as u32 }, part)) {
                Ok(f) => {
                    let _ = f.sync_data();
                }
                Err(_) => break,
            }
        }
    }
}
