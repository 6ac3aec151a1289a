//! `budgets.mode: strict`: escrow shares of each limit (tokens, `rpm`, USD), so that the nodes
//! together never pass it, even when they cannot hear each other.
//!
//! For a window with token limit `L`, the escrow is `E = ceil(strict_share × L)` and
//! the free part `F = L − E`. A node admits a request needing `need` tokens when the
//! ordinary check passes (its merged view plus `need` fits `L`) and either
//!
//! - **free**: its merged view (every node's settled spend it has heard of, its own
//!   reservations) plus `need` stays within `F`; or
//! - **escrow**: *this shard's* own spend in the window (its settled and reserved
//!   tokens; shard 0 also holds what this node's earlier incarnations spent, seeded at
//!   start) plus `need` stays within its share `floor(floor(E / strict_nodes) / shards)`.
//!
//! The share is per shard, not per node, because a shard's check and reservation are
//! one synchronous step on the one thread that writes its column: its own count is
//! exact at admission. A per-node share read across the shards' columns could be passed
//! by two shards admitting at the same moment (up to `S − 1` requests per node).
//!
//! Why this holds: take every shard's last admission in the window. A shard whose last
//! one was by escrow spent at most `E / (N × S)` (its own spend is exact: it is the one
//! writing it). The nodes whose last one was free spent, together, at most what the
//! merged views allowed, `F` plus the soft bound while connected. So the total is at
//! most `F + soft bound + E = L + soft bound`, and with `strict_share: 1.0` (the
//! default) `F = 0`, no admission is free, and the total is at most `N × S × floor(L /
//! (N × S)) ≤ L` whatever the network does: over-spend 0 under any partition. With a smaller
//! share, nodes run soft until the view shows the limit close, then split the rest; a
//! partition that begins before that point is bounded only as in soft mode.
//!
//! `rpm` and `usd_per_month` are split the same way: a shard's own count is its
//! admitted requests in the minute (exact at admission, so with a share of 1.0 `rpm`
//! is never passed, under any partition) and its settled nano-USD in the month. USD is settle-only (no price is known at admission), so its share can be
//! passed by the cost of the node's requests in flight when it ran out: at most
//! `N × c × C` over the limit across the cluster, partitioned or not.
//!
//! No coordinator assigns shares: they are a pure function of the limit and the
//! configured `strict_nodes`, the same on every node. Adding a node: raise
//! `strict_nodes` on every node first (shares shrink), then start it. Removing one:
//! stop it, then lower `strict_nodes` (until then its unused share is simply unspent).
//! A shard's share is for the whole window, so a request landing on a shard whose share
//! is used up is refused while other shards and nodes may still have room: the price of
//! the guarantee (and a reason to keep `strict` for limits that are large against one
//! request).

/// The escrow settings a token limit is checked against (`budgets.mode: strict`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Escrow {
    /// Share of each limit held in escrow, in millionths (1,000,000 = all of it).
    share_ppm: u64,
    /// Nodes the escrow is split over.
    nodes: u64,
}

/// Millionths in a whole.
const PPM: u64 = 1_000_000;

impl Escrow {
    /// Escrow of `share` (in (0, 1], checked by the config) of every limit over `nodes`.
    pub fn new(share: f64, nodes: u32) -> Escrow {
        let ppm = (share.clamp(0.0, 1.0) * PPM as f64).round() as u64;
        Escrow { share_ppm: ppm.clamp(1, PPM), nodes: u64::from(nodes.max(1)) }
    }

    /// `(E, F)`: the escrowed tokens of `limit` and the free part before them.
    pub fn split(&self, limit: u64) -> (u64, u64) {
        // ceil(limit × ppm / 1e6) without overflow: limits are ≤ 2^53, ppm ≤ 1e6 (< 2^20).
        let e = u128::from(limit).saturating_mul(u128::from(self.share_ppm)).div_ceil(u128::from(PPM));
        let e = u64::try_from(e).unwrap_or(u64::MAX).min(limit);
        (e, limit - e)
    }

    /// This node's share of the escrow of `limit`.
    pub fn share(&self, limit: u64) -> u64 {
        self.split(limit).0 / self.nodes
    }

    /// One shard's share of this node's share of `limit`, with `shards` shards.
    pub fn shard_share(&self, limit: u64, shards: usize) -> u64 {
        self.share(limit) / u64::try_from(shards.max(1)).unwrap_or(u64::MAX)
    }

    /// Whether a request may go on: `view_after` is the merged total with the request,
    /// `own_after` this node's own spend with it (one share per node).
    pub fn allows(&self, limit: u64, view_after: u64, own_after: u64) -> bool {
        self.allows_shard(limit, view_after, own_after, 1)
    }

    /// [`Escrow::allows`] for one of `shards` shards: `own_after` is that shard's own
    /// spend with the request, held to [`Escrow::shard_share`].
    pub fn allows_shard(&self, limit: u64, view_after: u64, own_after: u64, shards: usize) -> bool {
        let (_, free) = self.split(limit);
        view_after <= free || own_after <= self.shard_share(limit, shards)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_whole_limit_in_escrow_splits_it_evenly() {
        let e = Escrow::new(1.0, 3);
        assert_eq!(e.split(10_000), (10_000, 0));
        assert_eq!(e.share(10_000), 3_333);
        assert!(e.allows(10_000, 9_999, 3_333), "at the share");
        assert!(!e.allows(10_000, 3_334, 3_334), "one past the share: a node that hears nothing stops there");
    }

    #[test]
    fn a_partial_escrow_is_free_until_the_view_reaches_it() {
        let e = Escrow::new(0.2, 4);
        assert_eq!(e.split(1_000), (200, 800));
        assert_eq!(e.share(1_000), 50);
        assert!(e.allows(1_000, 800, 700), "free up to L − E");
        assert!(!e.allows(1_000, 801, 51), "past it, only the share");
        assert!(e.allows(1_000, 990, 50));
        // ceil: a tiny share of a small limit still escrows a token.
        assert_eq!(Escrow::new(0.000_001, 1).split(3), (1, 2));
    }

    #[test]
    fn a_shard_holds_its_own_share_and_not_the_remote_column() {
        use crate::budget::{admit, BudgetBoard, BudgetContext, BudgetSettings, CellValues, SubjectRef};
        use crate::credit::Payment;
        use crate::keys::{Budget, Claims};
        use crate::metrics::ShardMetrics;

        let now = 1_709_294_430;
        let board = BudgetBoard::new(2, 4);
        let metrics = [ShardMetrics::new(0, 0), ShardMetrics::new(0, 0)];
        let claims = Claims {
            jti: "k".into(),
            budget: Budget { tokens_per_minute: Some(100), ..Budget::default() },
            ..Claims::default()
        };
        let soft = BudgetSettings::default();
        let strict = BudgetSettings { escrow: Some(Escrow::new(1.0, 2)), ..BudgetSettings::default() };
        let ctx = |shard: usize, settings| BudgetContext { board: &board, shard, settings, metrics: &metrics[shard] };
        // The other node spent 40 of the minute (remote column).
        let row = board.find_or_claim(SubjectRef { tenant: false, name: "k" }).expect("row");
        let start = gatekeeper_crdt::WindowKind::Minute.epoch(now).expect("epoch").start_unix_s();
        let remote = board.row(row).and_then(|r| r.remote_cell(0)).expect("remote");
        remote.store(CellValues { settled_tokens: 40, ..CellValues::fresh(start) });
        // 100 over 2 nodes: a node's share is 50, each of its 2 shards' 25.
        assert!(admit(ctx(0, &strict), Payment::Key, Some(&claims), 26, now).is_err(), "past one shard's share");
        let a = admit(ctx(0, &strict), Payment::Key, Some(&claims), 25, now).expect("shard 0's share exactly");
        assert!(admit(ctx(0, &strict), Payment::Key, Some(&claims), 1, now).is_err(), "one past shard 0's share");
        let b = admit(ctx(1, &strict), Payment::Key, Some(&claims), 25, now).expect("shard 1's own share");
        assert!(admit(ctx(1, &strict), Payment::Key, Some(&claims), 1, now).is_err(), "one past shard 1's share");
        let c = admit(ctx(0, &soft), Payment::Key, Some(&claims), 10, now).expect("soft: the view has room");
        drop((a, b, c));
    }

    #[test]
    fn strict_rpm_and_usd_hold_this_nodes_share_against_its_own_counts() {
        use super::super::*;
        use crate::credit::Payment;
        use crate::keys::{Budget, Claims};
        use crate::metrics::ShardMetrics;

        let now = 1_709_294_430;
        let board = BudgetBoard::new(2, 4);
        let metrics = [ShardMetrics::new(0, 0), ShardMetrics::new(0, 0)];
        // rpm 10 over 2 nodes of 2 shards: a shard's share is 2 requests (floor(5 / 2));
        // $1 a month: a shard's share is $0.25.
        let claims = Claims {
            jti: "k".into(),
            rpm: Some(10),
            budget: Budget { usd_per_month: Some(1.0), ..Budget::default() },
            ..Claims::default()
        };
        let strict = BudgetSettings { escrow: Some(Escrow::new(1.0, 2)), ..BudgetSettings::default() };
        let soft = BudgetSettings::default();
        let ctx = |shard: usize, settings| BudgetContext { board: &board, shard, settings, metrics: &metrics[shard] };
        let done = Outcome { status: 200, usage: None, price_per_1k: None };
        for i in 0..4 {
            admit(ctx(i % 2, &strict), Payment::Key, Some(&claims), 0, now).expect("within the share").settle(done);
        }
        for shard in 0..2 {
            let refused = admit(ctx(shard, &strict), Payment::Key, Some(&claims), 0, now).map(|_| ()).unwrap_err();
            assert!(
                matches!(refused, BudgetError::Exceeded { refusal: Refusal { kind: LimitKind::Requests, .. }, .. }),
                "a third request on shard {shard} is past its share of 2: {refused}"
            );
        }
        admit(ctx(0, &soft), Payment::Key, Some(&claims), 0, now).expect("soft: 5 of 10").settle(done);

        // USD: a fresh minute; shard 1 settled $0.25, exactly its share: refused there.
        let later = now + 60;
        let row = board.find(SubjectRef { tenant: false, name: "k" }).and_then(|r| board.row(r)).expect("row");
        let month = gatekeeper_crdt::WindowKind::Month.epoch(later).expect("epoch").start_unix_s();
        let own = row.cell(1, 2).expect("cell");
        own.store(CellValues { settled_usd_nano: 249_999_999, ..own.load_own() });
        assert_eq!(own.load_own().epoch_start_s, month);
        admit(ctx(1, &strict), Payment::Key, Some(&claims), 0, later).expect("below the share").settle(done);
        own.store(CellValues { settled_usd_nano: 250_000_000, ..own.load_own() });
        let refused = admit(ctx(1, &strict), Payment::Key, Some(&claims), 0, later).map(|_| ()).unwrap_err();
        assert!(
            matches!(refused, BudgetError::Exceeded { refusal: Refusal { kind: LimitKind::UsdPerMonth, .. }, .. }),
            "{refused}"
        );
        admit(ctx(0, &strict), Payment::Key, Some(&claims), 0, later).expect("shard 0's share is its own").settle(done);
        // Other nodes' spend (the remote column) does not use this shard's share.
        own.store(CellValues { settled_usd_nano: 100, ..own.load_own() });
        let remote = row.remote_cell(2).expect("remote");
        remote.store(CellValues { settled_usd_nano: 400_000_000, ..CellValues::fresh(month) });
        admit(ctx(1, &strict), Payment::Key, Some(&claims), 0, later).expect("own share left").settle(done);
    }

    #[test]
    fn any_interleaving_of_partitioned_nodes_stays_within_the_limit() {
        // Each node sees only itself (a partition from the start); full escrow.
        let (limit, nodes) = (1_000u64, 3u32);
        let e = Escrow::new(1.0, nodes);
        let mut own = [0u64; 3];
        for step in 0..10_000u64 {
            let i = (step.wrapping_mul(2_654_435_761) % 3) as usize;
            let need = 1 + step % 17;
            if e.allows(limit, own[i] + need, own[i] + need) && own[i] + need <= limit {
                own[i] += need;
            }
        }
        assert!(own.iter().sum::<u64>() <= limit, "{own:?}");
    }
}
