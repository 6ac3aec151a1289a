//! The balance width and what follows from it.

/// Bit width of balances and amounts (the draft's `L`): the range proof shows the rest
/// of the balance lies in `[0, 2^BALANCE_BITS)`. 32 bits hold 4.29 billion credits per
/// epoch; the spend grows by ~130 bytes and one verification step per bit.
pub const BALANCE_BITS: usize = 32;

/// Largest credential balance (and spend) in credits.
pub const CREDITS_MAX: u64 = (1u64 << BALANCE_BITS) - 1;

const _: () = assert!(BALANCE_BITS >= 1 && BALANCE_BITS <= 63);
