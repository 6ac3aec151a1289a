//! Who writes a counter slot: a node, one of its shards, and the node's boot incarnation.

use std::fmt;

/// The writer of one slot of a [`crate::GCounter`].
///
/// Exactly one thread ever increments a given slot: a shard of a node during one boot of
/// that node. The boot `incarnation` is what makes a restart safe: a node that lost its
/// memory and started counting its old slot from 0 again would have its new spend hidden
/// under the old slot's larger value (merge keeps the maximum), re-granting budget. A new
/// incarnation writes a fresh slot instead; the old slot keeps its value (learned back
/// from a peer's snapshot) until its epoch is garbage-collected, so nothing is counted
/// twice and nothing is lost. See [`crate::Budgets::incarnation_max`].
///
/// Ordered by node, then shard, then incarnation, which is also the encoding's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplicaId {
    /// The node: any stable 64-bit id (e.g. a hash of the node name), chosen by the caller.
    pub node: u64,
    /// The shard within the node (one per core).
    pub shard: u16,
    /// The node's boot count; strictly larger after every restart.
    pub incarnation: u32,
}

impl ReplicaId {
    /// The replica `node`/`shard` in boot `incarnation`.
    pub const fn new(node: u64, shard: u16, incarnation: u32) -> ReplicaId {
        ReplicaId { node, shard, incarnation }
    }

    /// Whether both ids name the same shard of the same node, whatever the boot.
    pub fn same_shard(&self, other: &ReplicaId) -> bool {
        self.node == other.node && self.shard == other.shard
    }
}

impl fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}/{}#{}", self.node, self.shard, self.incarnation)
    }
}
