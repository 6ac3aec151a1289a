//! The balance width and what follows from it.

/// Bit width of balances and amounts (the draft's `L`): the range proof shows the rest
/// of the balance lies in `[0, 2^BALANCE_BITS)`. 24 bits hold 16,777,215 credits per
/// credential per epoch; each bit costs ~136 bytes of spend and two variable-base
/// multiplications to verify (`SPEC.md` §5: why 24, and `credits.tokens_per_credit` for
/// budgets above it). Changing it is a new [`crate::PARAMS_VERSION`].
pub const BALANCE_BITS: usize = 24;

/// Largest credential balance (and spend) in credits: 16,777,215.
pub const CREDITS_MAX: u64 = (1u64 << BALANCE_BITS) - 1;

const _: () = assert!(BALANCE_BITS >= 1 && BALANCE_BITS <= 63);
