//! The bridge's counters on `/metrics`: audit shipping (entries, checkpoints, failures,
//! each shard's unshipped spool), `BH_CONFIG` changes and the budget gossip. Read with
//! relaxed loads: each figure is exact on its own, not a consistent snapshot of all.

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

use super::Bridge;
use crate::metrics::{header, write_unlabelled};

impl Bridge {
    /// Appends the bridge's series to the `/metrics` text: the audit's with the audit
    /// log on, the budget gossip's with `nats` (and a budget board), config changes
    /// with `nats`.
    pub fn render_metrics(&self, out: &mut String) {
        let s = &self.shared.stats;
        if self.audit.is_some() {
            write_unlabelled(
                out,
                &[
                    (
                        "gatekeeper_audit_entries_stored_total",
                        "counter",
                        "Audit entries chained and stored (chain files or JSTREAM) by this instance.",
                        s.entries_stored.load(Relaxed),
                    ),
                    (
                        "gatekeeper_audit_checkpoints_stored_total",
                        "counter",
                        "Signed audit checkpoints stored.",
                        s.checkpoints_stored.load(Relaxed),
                    ),
                    (
                        "gatekeeper_audit_store_failures_total",
                        "counter",
                        "Failed attempts to store audit batches or checkpoints (each is retried).",
                        s.store_failures.load(Relaxed),
                    ),
                    (
                        "gatekeeper_audit_spool_full_total",
                        "counter",
                        "Requests refused with 503 audit_unavailable because a shard's spool reached audit.spool_bytes_max.",
                        s.spool_full_total.load(Relaxed),
                    ),
                    (
                        "gatekeeper_audit_wal_bytes_skipped_total",
                        "counter",
                        "Torn or corrupt spool bytes skipped (appends that never returned).",
                        s.wal_bytes_skipped.load(Relaxed),
                    ),
                    (
                        "gatekeeper_audit_witness_failures_total",
                        "counter",
                        "Checkpoints that could not be appended to audit.witness_file.",
                        s.witness_failures.load(Relaxed),
                    ),
                    (
                        "gatekeeper_bridge_raises_total",
                        "counter",
                        "Times the bridge thread left SCHED_IDLE (bridge.policy idle): a shard found it bridge.raise_backlog_bytes behind or silent, or shutdown began.",
                        self.shared.priority.raises(),
                    ),
                    (
                        "gatekeeper_bridge_idle",
                        "gauge",
                        "1 while the bridge thread runs SCHED_IDLE (bridge.policy idle), else 0.",
                        u64::from(self.shared.priority.is_idle()),
                    ),
                ],
            );
            header(
                out,
                "gatekeeper_audit_spool_bytes",
                "gauge",
                "Audit spool bytes a shard wrote that are not stored yet (refused at audit.spool_bytes_max).",
            );
            for (i, lane) in self.shared.lanes.iter().enumerate() {
                let _ = writeln!(out, "gatekeeper_audit_spool_bytes{{shard=\"{i}\"}} {}", lane.backlog_bytes());
            }
        }
        if self.budget_join.is_some() {
            let g = &s.budget;
            write_unlabelled(
                out,
                &[
                    (
                        "gatekeeper_budget_gossip_messages_sent_total",
                        "counter",
                        "Budget gossip messages published (deltas, full states, snapshot answers).",
                        g.sent.load(Relaxed),
                    ),
                    (
                        "gatekeeper_budget_gossip_bytes_sent_total",
                        "counter",
                        "Budget gossip bytes published.",
                        g.sent_bytes.load(Relaxed),
                    ),
                    (
                        "gatekeeper_budget_gossip_merged_total",
                        "counter",
                        "Other nodes' budget gossip messages merged.",
                        g.merged.load(Relaxed),
                    ),
                    (
                        "gatekeeper_budget_gossip_dropped_total",
                        "counter",
                        "Budget gossip messages dropped: too big, undecodable, or past the replica's bounds.",
                        g.dropped.load(Relaxed),
                    ),
                    (
                        "gatekeeper_budget_gossip_rows_refused_total",
                        "counter",
                        "Gossiped subjects whose budget board row could not be claimed (budgets.subjects_max reached).",
                        g.rows_refused.load(Relaxed),
                    ),
                ],
            );
        }
        if self.nats_on {
            write_unlabelled(
                out,
                &[(
                    "gatekeeper_config_changes_total",
                    "counter",
                    "BH_CONFIG changes applied to the hot configuration.",
                    s.config_changes.load(Relaxed),
                )],
            );
        }
    }
}
