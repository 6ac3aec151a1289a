//! What a subject may spend: token limits per window kind, USD per month and requests
//! per minute, from a key's claims or from `budgets.tenants.<name>`.

use std::collections::HashMap;

use gatekeeper_crdt::WindowKind;

use crate::keys::Claims;

/// Nano-USD per USD: spend is counted in whole nano-dollars (10^-9 USD), so a
/// 0.15-nano-dollar token price still adds up exactly enough (each request's cost is
/// rounded up to the next nano-dollar).
pub const NANO_USD_PER_USD: f64 = 1e9;

/// One subject's limits; `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Tokens per window, indexed by [`kind_index`] (minute, day, month).
    pub tokens: [Option<u64>; 3],
    /// Spend per calendar month, nano-USD.
    pub usd_nano_per_month: Option<u64>,
    /// Requests per minute.
    pub rpm: Option<u64>,
}

impl Limits {
    /// Limits from claim-shaped values (already checked: whole numbers ≤ 2^53, a finite
    /// non-negative USD amount).
    pub fn new(tokens: [Option<u64>; 3], usd_per_month: Option<f64>, rpm: Option<u64>) -> Limits {
        // ≤ 2^53 USD × 10^9 is past u64: such a limit saturates, which is no limit in practice.
        let usd_nano_per_month = usd_per_month.map(|usd| {
            let nano = (usd * NANO_USD_PER_USD).floor();
            if nano >= u64::MAX as f64 {
                u64::MAX
            } else {
                nano.max(0.0) as u64
            }
        });
        Limits { tokens, usd_nano_per_month, rpm }
    }

    /// The limits a key's claims carry.
    pub fn of_claims(c: &Claims) -> Limits {
        let b = &c.budget;
        Limits::new([b.tokens_per_minute, b.tokens_per_day, b.tokens_per_month], b.usd_per_month, c.rpm)
    }

    /// True when nothing is limited.
    pub fn is_empty(&self) -> bool {
        *self == Limits::default()
    }
}

/// The index of a window kind in [`Limits::tokens`] and in a board row's cells.
pub const fn kind_index(kind: WindowKind) -> usize {
    match kind {
        WindowKind::Minute => 0,
        WindowKind::Day => 1,
        WindowKind::Month => 2,
    }
}

/// The budget settings a request is admitted under (`budgets` in the config, minus
/// what is fixed for the process such as the table size).
#[derive(Debug, Clone)]
pub struct BudgetSettings {
    /// Limits per tenant name.
    pub tenants: HashMap<String, Limits>,
    /// Completion tokens reserved when the request sets no `max_tokens`.
    pub reserve_tokens_default: u64,
    /// `budgets.mode: strict`: the escrow every token, `rpm` and USD limit is checked against too.
    pub escrow: Option<super::escrow::Escrow>,
}

impl Default for BudgetSettings {
    fn default() -> Self {
        BudgetSettings { tenants: HashMap::new(), reserve_tokens_default: 4096, escrow: None }
    }
}

impl BudgetSettings {
    /// The configured limits of `tenant`, if any.
    pub fn tenant(&self, tenant: &str) -> Option<&Limits> {
        self.tenants.get(tenant).filter(|l| !l.is_empty())
    }

    /// Tokens to reserve: the prompt estimate plus `max_tokens`, or plus
    /// [`BudgetSettings::reserve_tokens_default`] when the request sets none.
    pub fn reservation(&self, prompt_estimate: u64, max_tokens: Option<u64>) -> u64 {
        prompt_estimate.saturating_add(max_tokens.unwrap_or(self.reserve_tokens_default))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{Budget, BUDGET_CLAIM_MAX};

    #[test]
    fn claims_become_limits() {
        let c = Claims {
            jti: "k".into(),
            budget: Budget { tokens_per_minute: Some(10), usd_per_month: Some(1.5), ..Budget::default() },
            rpm: Some(3),
            ..Claims::default()
        };
        let l = Limits::of_claims(&c);
        assert_eq!(l.tokens, [Some(10), None, None]);
        assert_eq!((l.usd_nano_per_month, l.rpm), (Some(1_500_000_000), Some(3)));
        assert!(Limits::of_claims(&Claims::default()).is_empty());
    }

    #[test]
    fn usd_limits_saturate_instead_of_wrapping() {
        assert_eq!(Limits::new([None; 3], Some(BUDGET_CLAIM_MAX as f64), None).usd_nano_per_month, Some(u64::MAX));
        assert_eq!(Limits::new([None; 3], Some(0.0), None).usd_nano_per_month, Some(0));
        assert_eq!(Limits::new([None; 3], Some(1e-10), None).usd_nano_per_month, Some(0), "rounded down");
    }

    #[test]
    fn reservation_saturates_and_uses_the_default_cap() {
        let s = BudgetSettings { reserve_tokens_default: 100, ..BudgetSettings::default() };
        assert_eq!(s.reservation(20, None), 120);
        assert_eq!(s.reservation(20, Some(5)), 25);
        assert_eq!(s.reservation(u64::MAX, Some(5)), u64::MAX);
    }
}
