//! The bridge's counters on `/metrics`: audit shipping (entries, checkpoints, failures,
//! each shard's unshipped spool), `BH_CONFIG` changes and the budget gossip. Read with
//! relaxed loads: each figure is exact on its own, not a consistent snapshot of all.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use super::Bridge;

/// One series without labels.
struct Row<'a> {
    name: &'a str,
    kind: &'a str,
    help: &'a str,
    value: &'a AtomicU64,
}

fn write_rows(out: &mut String, rows: &[Row<'_>]) {
    for r in rows {
        let _ = writeln!(
            out,
            "# HELP {n} {h}\n# TYPE {n} {k}\n{n} {v}",
            n = r.name,
            h = r.help,
            k = r.kind,
            v = r.value.load(Ordering::Relaxed)
        );
    }
}

impl Bridge {
    /// Appends the bridge's series to the `/metrics` text: the audit's with the audit
    /// log on, the budget gossip's with `nats` (and a budget board), config changes
    /// with `nats`.
    pub fn render_metrics(&self, out: &mut String) {
        let s = &self.shared.stats;
        if self.audit.is_some() {
            write_rows(
                out,
                &[
                    Row {
                        name: "gatekeeper_audit_entries_stored_total",
                        kind: "counter",
                        help: "Audit entries chained and stored (chain files or JSTREAM) by this instance.",
                        value: &s.entries_stored,
                    },
                    Row {
                        name: "gatekeeper_audit_checkpoints_stored_total",
                        kind: "counter",
                        help: "Signed audit checkpoints stored.",
                        value: &s.checkpoints_stored,
                    },
                    Row {
                        name: "gatekeeper_audit_store_failures_total",
                        kind: "counter",
                        help: "Failed attempts to store audit batches or checkpoints (each is retried).",
                        value: &s.store_failures,
                    },
                    Row {
                        name: "gatekeeper_audit_spool_full_total",
                        kind: "counter",
                        help: "Requests refused with 503 audit_unavailable because a shard's spool reached audit.spool_bytes_max.",
                        value: &s.spool_full_total,
                    },
                    Row {
                        name: "gatekeeper_audit_wal_bytes_skipped_total",
                        kind: "counter",
                        help: "Torn or corrupt spool bytes skipped (appends that never returned).",
                        value: &s.wal_bytes_skipped,
                    },
                    Row {
                        name: "gatekeeper_audit_witness_failures_total",
                        kind: "counter",
                        help: "Checkpoints that could not be appended to audit.witness_file.",
                        value: &s.witness_failures,
                    },
                ],
            );
            let _ = writeln!(
                out,
                "# HELP gatekeeper_audit_spool_bytes Audit spool bytes a shard wrote that are not stored yet (refused at audit.spool_bytes_max).\n# TYPE gatekeeper_audit_spool_bytes gauge"
            );
            for (i, lane) in self.shared.lanes.iter().enumerate() {
                let written = lane.written.load(Ordering::Relaxed);
                let backlog = written.saturating_sub(lane.shipped.load(Ordering::Relaxed));
                let _ = writeln!(out, "gatekeeper_audit_spool_bytes{{shard=\"{i}\"}} {backlog}");
            }
        }
        if self.budget_join.is_some() {
            let g = &s.budget;
            write_rows(
                out,
                &[
                    Row {
                        name: "gatekeeper_budget_gossip_messages_sent_total",
                        kind: "counter",
                        help: "Budget gossip messages published (deltas, full states, snapshot answers).",
                        value: &g.sent,
                    },
                    Row {
                        name: "gatekeeper_budget_gossip_bytes_sent_total",
                        kind: "counter",
                        help: "Budget gossip bytes published.",
                        value: &g.sent_bytes,
                    },
                    Row {
                        name: "gatekeeper_budget_gossip_merged_total",
                        kind: "counter",
                        help: "Other nodes' budget gossip messages merged.",
                        value: &g.merged,
                    },
                    Row {
                        name: "gatekeeper_budget_gossip_dropped_total",
                        kind: "counter",
                        help: "Budget gossip messages dropped: too big, undecodable, or past the replica's bounds.",
                        value: &g.dropped,
                    },
                    Row {
                        name: "gatekeeper_budget_gossip_rows_refused_total",
                        kind: "counter",
                        help: "Gossiped subjects whose budget board row could not be claimed (budgets.subjects_max reached).",
                        value: &g.rows_refused,
                    },
                ],
            );
        }
        if self.nats_on {
            write_rows(
                out,
                &[Row {
                    name: "gatekeeper_config_changes_total",
                    kind: "counter",
                    help: "BH_CONFIG changes applied to the hot configuration.",
                    value: &s.config_changes,
                }],
            );
        }
    }
}
