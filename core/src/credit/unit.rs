//! The credit unit (`credits.tokens_per_credit`): a credit is worth that many tokens, so
//! keys whose token allowances exceed the balance width (`gatekeeper_zk::CREDITS_MAX`
//! credits per credential) still fit. Every conversion from tokens rounds *up*, so the
//! gateway never under-charges: a request is over-charged by less than one unit, and its
//! refund never leaves the client below its true use.

/// Largest `credits.tokens_per_credit`.
pub const TOKENS_PER_CREDIT_MAX: u64 = 1_000_000;

/// Credits worth `tokens` tokens at `tokens_per_credit` tokens a credit:
/// `ceil(tokens / tokens_per_credit)`. A unit of 0 (refused by config validation) is
/// taken as 1.
pub fn credits_for(tokens: u64, tokens_per_credit: u64) -> u64 {
    tokens.div_ceil(tokens_per_credit.max(1))
}

/// The refund of a spend of `paid` credits whose request used `used_tokens` tokens:
/// `paid − ceil(used_tokens / tokens_per_credit)`, and 0 when the use is larger than
/// what was paid (never negative).
pub fn refund(paid: u64, used_tokens: u64, tokens_per_credit: u64) -> u64 {
    paid.saturating_sub(credits_for(used_tokens, tokens_per_credit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_up_to_whole_credits() {
        // Unit 1: credits are tokens.
        for t in [0, 1, 999, 1_000, u64::MAX] {
            assert_eq!(credits_for(t, 1), t);
        }
        // Unit 1,000: exactly divisible, one more, one less, zero.
        assert_eq!(credits_for(0, 1_000), 0);
        assert_eq!(credits_for(1, 1_000), 1);
        assert_eq!(credits_for(999, 1_000), 1);
        assert_eq!(credits_for(1_000, 1_000), 1);
        assert_eq!(credits_for(1_001, 1_000), 2);
        assert_eq!(credits_for(5_000, 1_000), 5);
        assert_eq!(credits_for(5_001, 1_000), 6);
        assert_eq!(credits_for(u64::MAX, 1_000), u64::MAX / 1_000 + 1);
        assert_eq!(credits_for(u64::MAX, TOKENS_PER_CREDIT_MAX), u64::MAX / TOKENS_PER_CREDIT_MAX + 1);
        // A unit of 0 never divides by zero.
        assert_eq!(credits_for(7, 0), 7);
    }

    #[test]
    fn refunds_never_go_below_the_true_use_nor_below_zero() {
        // Unit 1.
        assert_eq!(refund(5_000, 0, 1), 5_000, "zero used: all back");
        assert_eq!(refund(5_000, 1_234, 1), 3_766);
        assert_eq!(refund(5_000, 5_000, 1), 0);
        assert_eq!(refund(5_000, 5_001, 1), 0, "used more than reserved");
        assert_eq!(refund(5_000, u64::MAX, 1), 0);
        // Unit 1,000: 5 credits paid (up to 5,000 tokens).
        assert_eq!(refund(5, 0, 1_000), 5, "zero used: all back");
        assert_eq!(refund(5, 1, 1_000), 4, "one token costs a whole credit");
        assert_eq!(refund(5, 2_000, 1_000), 3, "exactly divisible");
        assert_eq!(refund(5, 2_001, 1_000), 2, "one more");
        assert_eq!(refund(5, 5_000, 1_000), 0);
        assert_eq!(refund(5, 5_001, 1_000), 0, "used more than reserved");
        assert_eq!(refund(0, 0, 1_000), 0);
        // What is kept always covers the use: (paid - refund) * unit >= used, while used <= paid * unit.
        for unit in [1u64, 3, 1_000, TOKENS_PER_CREDIT_MAX] {
            for used in [0u64, 1, unit - 1, unit, unit + 1, 4 * unit, 5 * unit] {
                let kept = 5 - refund(5, used, unit);
                assert!(kept * unit >= used, "unit {unit} used {used} kept {kept}");
                assert!(kept * unit < used + unit, "over-charged by less than one unit");
            }
        }
    }
}
