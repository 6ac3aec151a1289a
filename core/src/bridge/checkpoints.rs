//! Checkpoints: a signed statement of the chain's size, Merkle root and head, stored
//! in the chain like any message; every `checkpoint_every` entries, after
//! `checkpoint_interval_ms` with entries waiting, every `heartbeat_interval_ms` while
//! idle (showing the node is alive), and a final one that closes the chain.

use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::now_unix_ms;
use super::shipper::Shipper;
use crate::audit::checkpoint::Checkpoint;
use crate::audit::message::encode_checkpoint;

impl Shipper {
    /// Whether `checkpoint_every` entries were stored since the last checkpoint.
    pub(super) fn checkpoint_due_by_count(&self) -> bool {
        self.since_checkpoint >= self.s.audit.checkpoint_every
    }

    /// Stores a checkpoint when one is due by time.
    pub(super) async fn checkpoint_if_due(&mut self) {
        let a = &self.s.audit;
        let since = self.last_checkpoint.elapsed();
        let due = (self.since_checkpoint > 0 && since >= Duration::from_millis(a.checkpoint_interval_ms))
            || since >= Duration::from_millis(a.heartbeat_interval_ms);
        if due {
            // False only past the shutdown deadline, where the step loop gives up too.
            self.checkpoint(false).await;
        }
    }

    /// Signs and stores a checkpoint over the whole chain so far (`last`: the final
    /// one). False: abandoned at shutdown.
    pub(super) async fn checkpoint(&mut self, last: bool) -> bool {
        let c = Checkpoint::sign(
            &self.key,
            &self.s.node,
            &self.inst,
            self.chain.seq,
            &self.chain.tree.root(),
            &self.chain.head,
            now_unix_ms(),
            last,
        );
        let msg_id = self.next_msg_id();
        let bytes = encode_checkpoint(&self.s.node, &self.inst, &self.stored, &c);
        if !self.store(&msg_id, &bytes).await {
            return false;
        }
        self.since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
        let stats = &self.shared.stats;
        stats.checkpoints_stored.fetch_add(1, Ordering::Relaxed);
        let chain = format!("{}/{}", self.s.node, self.inst);
        *stats.latest_checkpoint.lock().unwrap_or_else(|p| p.into_inner()) = Some((chain, c.size, c.root.clone()));
        if let Some(path) = &self.s.audit.witness_file {
            if let Err(e) = witness(path, &c) {
                stats.witness_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(path = %path.display(), error = %e, "could not append the checkpoint to the witness file");
            }
        }
        true
    }
}

/// Appends a stored checkpoint to the witness file, durably.
fn witness(path: &Path, c: &Checkpoint) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(c).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let mut f = std::fs::OpenOptions::new().append(true).create(true).open(path)?;
    f.write_all(&line)?;
    f.sync_data()
}
