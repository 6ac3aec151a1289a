//! Prices and costs as exact decimals. A price is the decimal the config wrote
//! (`0.00015` USD per 1,000 tokens), kept as an integer count of 10^-scale USD, so a
//! request's cost is exact — never `0.000022349999999999998`.

/// Most decimal places a price may have.
pub const SCALE_MAX: u32 = 24;

/// USD per 1,000 tokens, exactly `units / 10^scale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Price {
    units: u64,
    scale: u32,
}

impl Price {
    /// The decimal a non-negative, finite `f64` prints as (Rust prints the shortest
    /// decimal that reads back as the same `f64`: what the config file said). `None`
    /// for a negative, non-finite or too finely divided value.
    pub fn from_f64(value: f64) -> Option<Price> {
        if !value.is_finite() || value < 0.0 {
            return None;
        }
        let text = format!("{value}");
        let (whole, frac) = text.split_once('.').unwrap_or((&text, ""));
        let scale = u32::try_from(frac.len()).ok().filter(|s| *s <= SCALE_MAX)?;
        let digits = format!("{whole}{frac}");
        let units = digits.trim_start_matches('0').parse::<u64>().or_else(|_| digits.parse::<u64>()).ok()?;
        Some(Price { units, scale })
    }

    /// The price as a float (for ranking, never for money).
    pub fn as_f64(self) -> f64 {
        self.units as f64 / 10f64.powi(self.scale as i32)
    }
}

/// The cost of `prompt` and `completion` tokens at these prices, in USD, as an exact
/// decimal string (`"0.0000022"`; `"0"` when free). `None` only if the numbers overflow
/// 128 bits, which no real request does.
pub fn cost_usd(prompt: u64, input: Price, completion: u64, output: Price) -> Option<String> {
    let mut out = String::new();
    write_cost_usd(&mut out, prompt, input, completion, output)?;
    Some(out)
}

/// [`cost_usd`] written over `out` (its allocation kept): every request's audit
/// record carries it, so the shard writes it without an allocation or the
/// formatting machinery. `out` is untouched when it returns `None`.
pub fn write_cost_usd(out: &mut String, prompt: u64, input: Price, completion: u64, output: Price) -> Option<()> {
    let scale = input.scale.max(output.scale);
    let widen = |tokens: u64, p: Price| -> Option<u128> {
        let factor = 10u128.checked_pow(scale.checked_sub(p.scale)?)?;
        u128::from(tokens).checked_mul(u128::from(p.units))?.checked_mul(factor)
    };
    let total = widen(prompt, input)?.checked_add(widen(completion, output)?)?;
    // Prices are per 1,000 tokens: three more decimal places.
    let places = scale + 3;
    let divisor = 10u128.checked_pow(places)?;
    let (whole, frac) = (total / divisor, total % divisor);
    // A u128 has at most 39 digits, and `frac` < 10^places ≤ 10^38 (else `divisor`
    // overflowed above): both fit the array.
    let mut whole_digits = [b'0'; 39];
    let from = fill_digits(&mut whole_digits, whole);
    let whole_text = std::str::from_utf8(whole_digits.get(from..)?).ok()?;
    let mut frac_digits = [b'0'; 39];
    let frac_text = if frac == 0 {
        None
    } else {
        fill_digits(&mut frac_digits, frac);
        // `frac` as `places` digits with its leading zeros, less its trailing ones.
        let wide = frac_digits.get(frac_digits.len().checked_sub(places as usize)?..)?;
        let end = wide.iter().rposition(|&d| d != b'0').map_or(0, |p| p + 1);
        Some(std::str::from_utf8(wide.get(..end)?).ok()?)
    };
    out.clear();
    out.push_str(whole_text);
    if let Some(f) = frac_text {
        out.push('.');
        out.push_str(f);
    }
    Some(())
}

/// Writes `n`'s decimal digits at the end of `digits` (the rest untouched) and
/// returns where they start. In 64 bits when `n` fits (every real cost: a u128
/// division is a library call).
fn fill_digits(digits: &mut [u8; 39], n: u128) -> usize {
    let mut i = digits.len();
    // Bounded: each round removes a digit, and `n` has at most 39.
    match u64::try_from(n) {
        Ok(mut n) => loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                return i;
            }
        },
        Err(_) => {
            let mut n = n;
            loop {
                i -= 1;
                digits[i] = b'0' + (n % 10) as u8;
                n /= 10;
                if n == 0 {
                    return i;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use super::*;

    fn p(v: f64) -> Price {
        Price::from_f64(v).expect("price")
    }

    /// What `cost_usd` wrote through the formatting machinery, before it was
    /// written by hand: the stored records must not change.
    fn cost_usd_fmt(prompt: u64, input: Price, completion: u64, output: Price) -> Option<String> {
        let scale = input.scale.max(output.scale);
        let widen = |tokens: u64, p: Price| -> Option<u128> {
            let factor = 10u128.checked_pow(scale - p.scale)?;
            u128::from(tokens).checked_mul(u128::from(p.units))?.checked_mul(factor)
        };
        let total = widen(prompt, input)?.checked_add(widen(completion, output)?)?;
        let places = scale + 3;
        let divisor = 10u128.checked_pow(places)?;
        let (whole, frac) = (total / divisor, total % divisor);
        let mut out = whole.to_string();
        if frac != 0 {
            let _ = write!(out, ".{frac:0width$}", width = places as usize);
            while out.ends_with('0') {
                out.pop();
            }
        }
        Some(out)
    }

    proptest::proptest! {
        /// The hand-written decimal is the formatted one, for any tokens and prices
        /// (u128 totals included), and a `None` leaves the buffer as it was.
        #[test]
        fn written_costs_are_the_formatted_ones(
            prompt in proptest::prop_oneof![0u64..5000, proptest::prelude::any::<u64>()],
            completion in proptest::prop_oneof![0u64..5000, proptest::prelude::any::<u64>()],
            units in (proptest::prelude::any::<u64>(), 0u64..100_000),
            scales in (0u32..=SCALE_MAX, 0u32..=SCALE_MAX),
        ) {
            let (input, output) = (Price { units: units.0, scale: scales.0 }, Price { units: units.1, scale: scales.1 });
            let mut out = String::from("before");
            let written = write_cost_usd(&mut out, prompt, input, completion, output);
            let want = cost_usd_fmt(prompt, input, completion, output);
            match want {
                Some(w) => {
                    proptest::prop_assert_eq!(written, Some(()));
                    proptest::prop_assert_eq!(out, w);
                }
                None => {
                    proptest::prop_assert_eq!(written, None);
                    proptest::prop_assert_eq!(out, "before");
                }
            }
        }
    }

    #[test]
    fn costs_are_exact() {
        // 149 prompt tokens at $0.00015/1k: 0.00002235 exactly (f64 math says 2.2349999…e-5).
        assert_eq!(cost_usd(149, p(0.00015), 0, p(0.0006)).as_deref(), Some("0.00002235"));
        assert_eq!(cost_usd(1000, p(0.5), 2000, p(1.0)).as_deref(), Some("2.5"));
        assert_eq!(cost_usd(7, p(0.00015), 3, p(0.0006)).as_deref(), Some("0.00000285"));
        assert_eq!(cost_usd(0, p(0.1), 0, p(0.2)).as_deref(), Some("0"));
        assert_eq!(cost_usd(5, p(0.0), 5, p(0.0)).as_deref(), Some("0"));
        assert_eq!(cost_usd(1_000_000, p(15.0), 1_000_000, p(75.0)).as_deref(), Some("90000"));
        assert_eq!(cost_usd(u64::MAX, p(1e9), u64::MAX, p(1e9)), Some("36893488147419103230000000".into()));
    }

    #[test]
    fn prices_are_the_decimal_written() {
        assert_eq!(p(0.00015), Price { units: 15, scale: 5 });
        assert_eq!(p(3.0), Price { units: 3, scale: 0 });
        assert_eq!(p(0.1), Price { units: 1, scale: 1 });
        assert!(Price::from_f64(-1.0).is_none());
        assert!(Price::from_f64(f64::NAN).is_none());
        assert!(Price::from_f64(1e-30).is_none(), "beyond SCALE_MAX places");
        assert!((p(0.00015).as_f64() - 0.00015).abs() < 1e-18);
    }
}
