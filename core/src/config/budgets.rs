//! The `budgets` section: per-tenant limits, how much a request without `max_tokens`
//! reserves, the size of the process's budget table, and how often spend is
//! snapshotted to the data dir.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::error::{invalid, ConfigError};
use crate::budget::{BudgetSettings, Limits};
use crate::keys::BUDGET_CLAIM_MAX;

/// Most rows `budgets.subjects_max` may ask for (each key id or tenant with a limit
/// takes one for the process's life).
pub const SUBJECTS_MAX_CEILING: usize = 1 << 20;

/// How budgets behave across nodes (DESIGN.md §4; issue 13, item 6).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BudgetMode {
    /// Available under partition; over-spend bounded while connected.
    #[default]
    Soft,
    /// Escrow near exhaustion: no over-spend even under partition, at the price of refusals.
    Strict,
}

/// Budget settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetsConfig {
    /// `soft` (default): admit by the merged view, over-spend bounded by the documented
    /// formula while connected. `strict`: near exhaustion each node spends only its
    /// escrow share (see `strict_share`, `strict_nodes`): over-spend 0, more refusals.
    pub mode: BudgetMode,
    /// With `nats`: how often the bridge ships this node's changed spend (a delta) on
    /// `bh.budget.delta.<node>`, ms (default 100). Part of the over-spend bound.
    pub gossip_interval_ms: u64,
    /// Limits per tenant (a key's `tenant` claim), enforced on the tenant's total across
    /// its keys, beside the key's own claims; the tighter wins.
    pub tenants: BTreeMap<String, TenantBudget>,
    /// Completion tokens reserved for a request that sets no `max_tokens`
    /// (`max_completion_tokens`), on top of its prompt estimate. Default 4096.
    pub reserve_tokens_default: u64,
    /// Budgeted subjects (key ids and tenants) the process tracks, one table row each,
    /// kept until restart. Past it, a request of a subject not yet seen is refused with
    /// 503 `budget_table_full` (evicting one would forget its spend). Default 16,384.
    /// Memory: about 120 bytes per row up front, plus `192 × (shards + 1)` bytes per
    /// subject once seen.
    pub subjects_max: usize,
    /// How often settled spend is written to `<audit.data_dir>/budgets.snapshot`, ms
    /// (default 1000). Spend settled since the last snapshot is what a crash can re-grant.
    pub snapshot_interval_ms: u64,
    /// With `nats`: how often the bridge publishes its whole replica (anti-entropy) on
    /// `bh.budget.full.<node>`, ms (default 3000); also at once after a reconnect.
    pub anti_entropy_interval_ms: u64,
    /// With `nats`: how long a starting node waits for a peer's snapshot
    /// (`bh.budget.snapshot.<node>` request) before it admits traffic, ms (default 2000).
    /// No answer by then: it starts with what it has (its own budget snapshot file).
    pub join_timeout_ms: u64,
    /// Largest budget gossip message decoded or sent, bytes (65,536 to 64 MiB; default
    /// 1,000,000, under NATS's default 1 MiB `max_payload`). Bigger states are sent in
    /// several messages; a bigger message received is counted and dropped.
    pub message_bytes_max: usize,
    /// `strict` only: the share of each token limit held in escrow, split evenly over
    /// `strict_nodes`; 1.0 (default) escrows the whole limit, the only value that keeps
    /// over-spend at 0 under a partition that starts at any time.
    pub strict_share: f64,
    /// `strict` only: how many nodes the escrow is split over (default 1). The same on
    /// every node; raise it before adding nodes, lower it after removing them.
    pub strict_nodes: u32,
}

/// Smallest `budgets.message_bytes_max`: one counter at its bounds (a 255-byte name,
/// 1,024 slots of at most 28 bytes) is under 30 KB, so a state always splits into
/// messages that fit.
pub const MESSAGE_BYTES_MIN: usize = 65_536;

/// Most nodes `budgets.strict_nodes` may name.
pub const STRICT_NODES_MAX: u32 = 1024;

impl Default for BudgetsConfig {
    fn default() -> Self {
        BudgetsConfig {
            mode: BudgetMode::Soft,
            gossip_interval_ms: 100,
            tenants: BTreeMap::new(),
            reserve_tokens_default: 4096,
            subjects_max: 16_384,
            snapshot_interval_ms: 1000,
            anti_entropy_interval_ms: 3000,
            join_timeout_ms: 2000,
            message_bytes_max: 1_000_000,
            strict_share: 1.0,
            strict_nodes: 1,
        }
    }
}

/// One tenant's limits; the same fields as a key's claims (absent: no limit).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TenantBudget {
    /// Tokens (prompt + completion) per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u64>,
    /// Tokens per UTC day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_day: Option<u64>,
    /// Tokens per calendar month (UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_month: Option<u64>,
    /// Spend per calendar month, USD, at the routed deployment's prices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usd_per_month: Option<f64>,
    /// Requests per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u64>,
}

impl TenantBudget {
    /// The runtime limits.
    pub fn limits(&self) -> Limits {
        Limits::new([self.tokens_per_minute, self.tokens_per_day, self.tokens_per_month], self.usd_per_month, self.rpm)
    }
}

impl From<&BudgetsConfig> for BudgetSettings {
    fn from(c: &BudgetsConfig) -> BudgetSettings {
        BudgetSettings {
            tenants: c.tenants.iter().map(|(name, t)| (name.clone(), t.limits())).collect(),
            reserve_tokens_default: c.reserve_tokens_default,
            escrow: (c.mode == BudgetMode::Strict).then(|| crate::budget::Escrow::new(c.strict_share, c.strict_nodes)),
        }
    }
}

/// Checks every limit the way a key's claims are checked (whole numbers up to 2^53,
/// a finite non-negative USD amount) and the table and reservation settings.
pub(super) fn validate(c: &BudgetsConfig) -> Result<(), ConfigError> {
    if c.reserve_tokens_default == 0 || c.reserve_tokens_default > BUDGET_CLAIM_MAX {
        return Err(invalid("budgets.reserve_tokens_default", "must be from 1 to 2^53"));
    }
    if c.subjects_max == 0 || c.subjects_max > SUBJECTS_MAX_CEILING {
        return Err(invalid("budgets.subjects_max", format!("must be from 1 to {SUBJECTS_MAX_CEILING}")));
    }
    if !(1..=60_000).contains(&c.gossip_interval_ms) {
        return Err(invalid("budgets.gossip_interval_ms", "must be from 1 to 60000"));
    }
    if !(10..=3_600_000).contains(&c.snapshot_interval_ms) {
        return Err(invalid("budgets.snapshot_interval_ms", "must be from 10 to 3600000"));
    }
    if !(100..=3_600_000).contains(&c.anti_entropy_interval_ms) {
        return Err(invalid("budgets.anti_entropy_interval_ms", "must be from 100 to 3600000"));
    }
    if c.join_timeout_ms > 60_000 {
        return Err(invalid("budgets.join_timeout_ms", "must be from 0 to 60000"));
    }
    if !(MESSAGE_BYTES_MIN..=64 << 20).contains(&c.message_bytes_max) {
        return Err(invalid("budgets.message_bytes_max", "must be from 65536 to 67108864"));
    }
    if !(c.strict_share > 0.0 && c.strict_share <= 1.0) {
        return Err(invalid("budgets.strict_share", "must be above 0 and at most 1"));
    }
    if !(1..=STRICT_NODES_MAX).contains(&c.strict_nodes) {
        return Err(invalid("budgets.strict_nodes", format!("must be from 1 to {STRICT_NODES_MAX}")));
    }
    for (name, t) in &c.tenants {
        if name.is_empty() || name.len() > gatekeeper_crdt::SUBJECT_BYTES_MAX {
            return Err(invalid(format!("budgets.tenants.{name}"), "a tenant name must be 1 to 255 bytes"));
        }
        let counts = [
            ("tokens_per_minute", t.tokens_per_minute),
            ("tokens_per_day", t.tokens_per_day),
            ("tokens_per_month", t.tokens_per_month),
            ("rpm", t.rpm),
        ];
        for (field, value) in counts {
            if value.is_some_and(|v| v > BUDGET_CLAIM_MAX) {
                return Err(invalid(
                    format!("budgets.tenants.{name}.{field}"),
                    "must be a whole number from 0 to 2^53",
                ));
            }
        }
        if let Some(usd) = t.usd_per_month {
            if !usd.is_finite() || !(0.0..=BUDGET_CLAIM_MAX as f64).contains(&usd) {
                return Err(invalid(
                    format!("budgets.tenants.{name}.usd_per_month"),
                    "must be a number from 0 to 2^53",
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse_with_env(text, &Default::default()).map_err(|e| e.to_string())
    }

    #[test]
    fn tenants_and_settings_parse_with_defaults() {
        let c = parse("budgets: { tenants: { acme: { tokens_per_day: 5000000, rpm: 60 } } }").expect("valid");
        let t = &c.budgets.tenants["acme"];
        assert_eq!((t.tokens_per_day, t.rpm, t.tokens_per_minute), (Some(5_000_000), Some(60), None));
        assert_eq!(c.budgets.reserve_tokens_default, 4096);
        assert_eq!(c.budgets.subjects_max, 16_384);
    }

    #[test]
    fn the_design_samples_budgets_line_parses() {
        let text = "budgets: { mode: soft, gossip_interval_ms: 100, tenants: { acme: { tokens_per_day: 5000000 } } }";
        let c = parse(text).expect("DESIGN.md's sample");
        assert_eq!((c.budgets.mode, c.budgets.gossip_interval_ms), (BudgetMode::Soft, 100));
        assert_eq!(parse("budgets: { mode: strict }").expect("strict").budgets.mode, BudgetMode::Strict);
        assert!(parse("budgets: { mode: loose }").unwrap_err().starts_with("budgets.mode"));
        assert!(parse("budgets: { gossip_interval_ms: 60000 }").is_ok());
        assert!(parse("budgets: { gossip_interval_ms: 60001 }").unwrap_err().starts_with("budgets.gossip_interval_ms"));
        assert!(parse("budgets: { gossip_interval_ms: 0 }").unwrap_err().starts_with("budgets.gossip_interval_ms"));
    }

    #[test]
    fn limits_are_checked_at_their_edges() {
        let max = BUDGET_CLAIM_MAX;
        assert!(parse(&format!("budgets: {{ tenants: {{ a: {{ tokens_per_minute: {max} }} }} }}")).is_ok());
        let e = parse(&format!("budgets: {{ tenants: {{ a: {{ tokens_per_minute: {} }} }} }}", max + 1)).unwrap_err();
        assert_eq!(e, "budgets.tenants.a.tokens_per_minute: must be a whole number from 0 to 2^53");
        let e = parse("budgets: { tenants: { a: { usd_per_month: -0.5 } } }").unwrap_err();
        assert_eq!(e, "budgets.tenants.a.usd_per_month: must be a number from 0 to 2^53");
        let e = parse("budgets: { tenants: { a: { usd_per_month: .nan } } }").unwrap_err();
        assert!(e.starts_with("budgets.tenants.a.usd_per_month"), "{e}");
        let e = parse("budgets: { tenants: { a: { tokens: 5 } } }").unwrap_err();
        assert!(e.starts_with("budgets.tenants"), "{e}");
        assert!(parse("budgets: { reserve_tokens_default: 1 }").is_ok());
        let e = parse("budgets: { reserve_tokens_default: 0 }").unwrap_err();
        assert!(e.starts_with("budgets.reserve_tokens_default"), "{e}");
        assert!(parse(&format!("budgets: {{ subjects_max: {SUBJECTS_MAX_CEILING} }}")).is_ok());
        let e = parse(&format!("budgets: {{ subjects_max: {} }}", SUBJECTS_MAX_CEILING + 1)).unwrap_err();
        assert!(e.starts_with("budgets.subjects_max"), "{e}");
        let e = parse("budgets: { subjects_max: 0 }").unwrap_err();
        assert!(e.starts_with("budgets.subjects_max"), "{e}");
        assert!(parse("budgets: { snapshot_interval_ms: 10 }").is_ok());
        let e = parse("budgets: { snapshot_interval_ms: 9 }").unwrap_err();
        assert!(e.starts_with("budgets.snapshot_interval_ms"), "{e}");
    }

    #[test]
    fn gossip_and_strict_settings_are_checked_at_their_edges() {
        let c = parse("budgets: {}").expect("defaults");
        assert_eq!((c.budgets.gossip_interval_ms, c.budgets.mode), (100, BudgetMode::Soft));
        for (ok, bad) in [
            ("anti_entropy_interval_ms: 100", "anti_entropy_interval_ms: 99"),
            ("join_timeout_ms: 60000", "join_timeout_ms: 60001"),
            ("message_bytes_max: 65536", "message_bytes_max: 65535"),
            ("message_bytes_max: 67108864", "message_bytes_max: 67108865"),
            ("strict_share: 1.0", "strict_share: 1.01"),
            ("strict_share: 0.01", "strict_share: 0"),
            ("strict_nodes: 1", "strict_nodes: 0"),
            ("strict_nodes: 1024", "strict_nodes: 1025"),
        ] {
            assert!(parse(&format!("budgets: {{ {ok} }}")).is_ok(), "{ok}");
            let e = parse(&format!("budgets: {{ {bad} }}")).unwrap_err();
            let field = bad.split(':').next().unwrap_or_default();
            assert!(e.starts_with(&format!("budgets.{field}")), "{bad}: {e}");
        }
        let c = parse("budgets: { mode: strict, strict_share: 0.5, strict_nodes: 3 }").expect("strict");
        assert_eq!(c.budgets.mode, BudgetMode::Strict);
        assert!(parse("budgets: { mode: hard }").is_err());
    }
}
