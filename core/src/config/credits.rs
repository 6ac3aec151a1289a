//! The `credits` section: anonymous credit spends (pipeline step 3, `gatekeeper-zk`).
//! Absent: credits are off, and keys with the `zk` claim are refused (403).

use serde::{Deserialize, Serialize};

use super::error::{invalid, ConfigError};

/// Anonymous credits.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CreditsConfig {
    /// `strict` or `soft`. Strict fails closed (503) whenever a nullifier cannot be
    /// recorded, locally or (with NATS) in `BH_CREDITS`. Soft, with NATS, accepts spends
    /// against the node's local set while `BH_CREDITS` cannot be reached, at most
    /// `soft_max_unconfirmed` at a time, and publishes them when it is back (a nullifier
    /// found spent on another node too is counted and logged as an error). Without NATS
    /// both are exact.
    pub mode: CreditsMode,
    /// Epoch length: `day` (UTC) or `hour`. A credential is good for its epoch only.
    pub epoch: CreditsEpoch,
    /// Deployment name in the protocol's domain separator, 1..=64 of `[A-Za-z0-9._-]`.
    /// Every node and client of one deployment uses the same one. Default `gatekeeper`.
    pub deployment: String,
    /// The issuer seed, 64 hex characters (use `${ENV_VAR}`); every node of a deployment
    /// needs the same. Absent: generated on first start into
    /// `<audit.data_dir>/credits/issuer.seed` (0600) and read from there after. Never
    /// logged.
    pub issuer_seed: Option<String>,
    /// Credits (not tokens) a `zk` key gets per epoch when it has neither a `zk_credits`
    /// claim nor `budget.tokens_per_day`. Default 100,000; 1..=16,777,215
    /// (`gatekeeper_zk::CREDITS_MAX`, the balance width).
    pub credits_per_epoch: u64,
    /// Tokens reserved when a credit-paid request gives no `max_tokens`, on top of the
    /// prompt estimate (then rounded up to credits). Default 4,096; 1..=16,777,215.
    pub max_tokens_default: u64,
    /// Tokens one credit is worth. Charges, refunds and `budget.tokens_per_day`
    /// allowances are tokens rounded up to whole credits; `zk_credits` claims and
    /// `credits_per_epoch` are credits already. Raise it for keys whose daily tokens
    /// exceed 16,777,215. Default 1; 1..=1,000,000.
    pub tokens_per_credit: u64,
    /// With NATS: longest wait for `BH_CREDITS` to confirm a nullifier, ms; past it the
    /// spend is refused with 503 (nothing spent). Default 2,000; 1..=60,000.
    pub claim_timeout_ms: u64,
    /// Threads that check spends' proofs and sign change, off the shards. Default 1;
    /// 0 checks inline on the shard (a 1-5 ms stall of every connection of that shard
    /// per spend). One thread serves roughly 100-200 credit-paid requests a second (a
    /// check and a change signature each); give more when credit-paid traffic is heavy,
    /// fewer than the cores the shards use. 0..=64.
    pub verify_threads: usize,
    /// Spends that may wait for a verify thread; past it a spend is refused at once with
    /// 503 `credit_verify_busy` and `Retry-After: 1` (nothing spent). Default 256;
    /// 1..=65,536.
    pub verify_queue_depth: usize,
    /// Soft mode: most spends this node accepts on its local set alone (NATS unreachable)
    /// before they are published to `BH_CREDITS`; past it spends fail closed (503). It
    /// bounds how many credentials could be spent twice across nodes per node and
    /// outage. Default 1,000; 1..=1,000,000.
    pub soft_max_unconfirmed: usize,
}

impl std::fmt::Debug for CreditsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreditsConfig")
            .field("mode", &self.mode)
            .field("epoch", &self.epoch)
            .field("deployment", &self.deployment)
            .field("issuer_seed", &self.issuer_seed.as_ref().map(|_| "<redacted>"))
            .field("credits_per_epoch", &self.credits_per_epoch)
            .field("max_tokens_default", &self.max_tokens_default)
            .field("tokens_per_credit", &self.tokens_per_credit)
            .field("claim_timeout_ms", &self.claim_timeout_ms)
            .field("verify_threads", &self.verify_threads)
            .field("verify_queue_depth", &self.verify_queue_depth)
            .field("soft_max_unconfirmed", &self.soft_max_unconfirmed)
            .finish()
    }
}

impl Default for CreditsConfig {
    fn default() -> Self {
        CreditsConfig {
            mode: CreditsMode::Strict,
            epoch: CreditsEpoch::Day,
            deployment: "gatekeeper".into(),
            issuer_seed: None,
            credits_per_epoch: 100_000,
            max_tokens_default: 4_096,
            tokens_per_credit: 1,
            claim_timeout_ms: 2_000,
            verify_threads: 1,
            verify_queue_depth: 256,
            soft_max_unconfirmed: 1_000,
        }
    }
}

/// What happens when nullifiers cannot be shared exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CreditsMode {
    /// Never accept a spend whose nullifier was not durably recorded.
    #[default]
    Strict,
    /// With NATS: while `BH_CREDITS` is unreachable, accept up to
    /// `soft_max_unconfirmed` spends on the local set and reconcile them later.
    Soft,
}

/// Epoch length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CreditsEpoch {
    /// One hour.
    Hour,
    /// One UTC day.
    #[default]
    Day,
}

impl CreditsConfig {
    /// The seed from `issuer_seed`, when set (validated at load).
    pub fn seed_bytes(&self) -> Option<[u8; 32]> {
        self.issuer_seed.as_deref().and_then(parse_seed)
    }
}

/// 64 hex characters as 32 bytes.
pub fn parse_seed(text: &str) -> Option<[u8; 32]> {
    let text = text.trim().as_bytes();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in text.chunks_exact(2).enumerate() {
        let hi = char::from(pair[0]).to_digit(16)?;
        let lo = char::from(pair[1]).to_digit(16)?;
        out[i] = u8::try_from(hi * 16 + lo).ok()?;
    }
    Some(out)
}

/// Checks names, seed and amounts.
pub(super) fn validate(c: &CreditsConfig) -> Result<(), ConfigError> {
    if gatekeeper_zk::Domain::new(&c.deployment).is_err() {
        return Err(invalid("credits.deployment", "must be 1 to 64 characters of [A-Za-z0-9._-]"));
    }
    if c.issuer_seed.is_some() && c.seed_bytes().is_none() {
        // The value is a secret: the message never repeats it.
        return Err(invalid("credits.issuer_seed", "must be 64 hex characters (32 bytes)"));
    }
    if c.credits_per_epoch == 0 || c.credits_per_epoch > gatekeeper_zk::CREDITS_MAX {
        return Err(invalid("credits.credits_per_epoch", format!("must be 1 to {}", gatekeeper_zk::CREDITS_MAX)));
    }
    if c.max_tokens_default == 0 || c.max_tokens_default > gatekeeper_zk::CREDITS_MAX {
        return Err(invalid("credits.max_tokens_default", format!("must be 1 to {}", gatekeeper_zk::CREDITS_MAX)));
    }
    if !(1..=crate::credit::unit::TOKENS_PER_CREDIT_MAX).contains(&c.tokens_per_credit) {
        return Err(invalid("credits.tokens_per_credit", "must be 1 to 1000000"));
    }
    if !(1..=60_000).contains(&c.claim_timeout_ms) {
        return Err(invalid("credits.claim_timeout_ms", "must be 1 to 60000"));
    }
    if c.verify_threads > crate::credit::pool::VERIFY_THREADS_MAX {
        return Err(invalid("credits.verify_threads", "must be 0 to 64"));
    }
    if !(1..=crate::credit::pool::VERIFY_QUEUE_DEPTH_MAX).contains(&c.verify_queue_depth) {
        return Err(invalid("credits.verify_queue_depth", "must be 1 to 65536"));
    }
    if !(1..=1_000_000).contains(&c.soft_max_unconfirmed) {
        return Err(invalid("credits.soft_max_unconfirmed", "must be 1 to 1000000"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_parse_only_as_64_hex() {
        assert_eq!(parse_seed(&"ab".repeat(32)), Some([0xab; 32]));
        assert_eq!(parse_seed(&"ab".repeat(31)), None);
        assert_eq!(parse_seed(&format!("{}zz", "ab".repeat(31))), None);
    }

    #[test]
    fn limits_at_the_edge_and_one_past() {
        let ok = CreditsConfig { credits_per_epoch: gatekeeper_zk::CREDITS_MAX, ..Default::default() };
        assert!(validate(&ok).is_ok());
        let over = CreditsConfig { credits_per_epoch: gatekeeper_zk::CREDITS_MAX + 1, ..Default::default() };
        assert!(validate(&over).is_err());
        assert!(validate(&CreditsConfig { credits_per_epoch: 0, ..Default::default() }).is_err());
        assert!(validate(&CreditsConfig { deployment: "a:b".into(), ..Default::default() }).is_err());
        let seed = CreditsConfig { issuer_seed: Some("ab".repeat(32)), ..Default::default() };
        assert!(validate(&seed).is_ok());
        assert!(!format!("{seed:?}").contains("abab"), "the seed never reaches Debug output");
        for (threads, depth, soft, ok) in [
            (64, 65_536, 1_000_000, true),
            (0, 1, 1, true),
            (65, 1, 1, false),
            (1, 0, 1, false),
            (1, 65_537, 1, false),
            (1, 1, 0, false),
            (1, 1, 1_000_001, false),
        ] {
            let c = CreditsConfig {
                verify_threads: threads,
                verify_queue_depth: depth,
                soft_max_unconfirmed: soft,
                ..Default::default()
            };
            assert_eq!(validate(&c).is_ok(), ok, "{threads} {depth} {soft}");
        }
        for (unit, ok) in [(0, false), (1, true), (1_000, true), (1_000_000, true), (1_000_001, false)] {
            let c = CreditsConfig { tokens_per_credit: unit, ..Default::default() };
            assert_eq!(validate(&c).is_ok(), ok, "tokens_per_credit {unit}");
        }
        assert_eq!(CreditsConfig::default().tokens_per_credit, 1);
        let max = gatekeeper_zk::CREDITS_MAX;
        assert_eq!(max, 16_777_215, "the bound the docs state");
        assert!(validate(&CreditsConfig { max_tokens_default: max, ..Default::default() }).is_ok());
        assert!(validate(&CreditsConfig { max_tokens_default: max + 1, ..Default::default() }).is_err());
        let bad = CreditsConfig { issuer_seed: Some("secretsecret".into()), ..Default::default() };
        let msg = validate(&bad).map_err(|e| e.to_string()).expect_err("invalid");
        assert!(!msg.contains("secretsecret"));
    }
}
