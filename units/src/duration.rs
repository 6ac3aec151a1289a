//! Human duration strings: a decimal number and a unit, `250ms`, `1.5s`, `5m`, `2h`, `30d`.
//!
//! Callers differ in which units make sense (a load generator wants microseconds, a key's
//! expiry wants days) and in what a bare number means, so each passes a [`Syntax`]. The
//! number is read exactly in decimal (no floating point), fractions finer than a nanosecond
//! are dropped, and anything longer than [`Duration`] holds is [`DurationError::Overflow`].

use std::fmt;
use std::time::Duration;

/// A unit a duration string may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// `us` (or `µs`), a microsecond.
    Micros,
    /// `ms`, a millisecond.
    Millis,
    /// `s`, a second.
    Secs,
    /// `m`, a minute.
    Mins,
    /// `h`, an hour.
    Hours,
    /// `d`, a day of 86,400 seconds.
    Days,
}

impl Unit {
    /// The suffix written after the number.
    pub fn suffix(self) -> &'static str {
        match self {
            Unit::Micros => "us",
            Unit::Millis => "ms",
            Unit::Secs => "s",
            Unit::Mins => "m",
            Unit::Hours => "h",
            Unit::Days => "d",
        }
    }

    /// Nanoseconds in one of this unit.
    pub fn nanos(self) -> u64 {
        match self {
            Unit::Micros => 1_000,
            Unit::Millis => 1_000_000,
            Unit::Secs => NANOS_PER_SEC,
            Unit::Mins => 60 * NANOS_PER_SEC,
            Unit::Hours => 3_600 * NANOS_PER_SEC,
            Unit::Days => 86_400 * NANOS_PER_SEC,
        }
    }

    fn from_suffix(suffix: &str) -> Option<Unit> {
        Some(match suffix {
            "us" | "µs" => Unit::Micros,
            "ms" => Unit::Millis,
            "s" => Unit::Secs,
            "m" => Unit::Mins,
            "h" => Unit::Hours,
            "d" => Unit::Days,
            _ => return None,
        })
    }
}

/// The duration strings one caller accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Syntax {
    /// Units a number may carry; any other suffix is [`DurationError::UnknownUnit`].
    pub units: &'static [Unit],
    /// The unit of a bare number (`10`); `None` makes a unit mandatory.
    pub bare: Option<Unit>,
}

/// Why a duration string was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DurationError {
    /// The string is empty or whitespace.
    Empty,
    /// The number is not decimal digits with at most one `.` (signs are refused).
    BadNumber,
    /// A bare number where this caller requires a unit.
    MissingUnit {
        /// The units this caller accepts.
        accepted: &'static [Unit],
    },
    /// A suffix that is not one of this caller's units.
    UnknownUnit {
        /// The units this caller accepts.
        accepted: &'static [Unit],
    },
    /// Longer than a [`Duration`] holds (2^64 seconds).
    Overflow,
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DurationError::Empty => f.write_str("empty duration"),
            DurationError::BadNumber => f.write_str("expected a decimal number, e.g. 10 or 1.5, before the unit"),
            DurationError::MissingUnit { accepted } => {
                f.write_str("a unit is required: ")?;
                write_units(f, accepted)
            }
            DurationError::UnknownUnit { accepted } => {
                f.write_str("unknown unit: use ")?;
                write_units(f, accepted)
            }
            DurationError::Overflow => f.write_str("duration too long"),
        }
    }
}

impl std::error::Error for DurationError {}

fn write_units(f: &mut fmt::Formatter<'_>, units: &[Unit]) -> fmt::Result {
    for (i, unit) in units.iter().enumerate() {
        let sep = match i {
            0 => "",
            _ if i + 1 == units.len() => " or ",
            _ => ", ",
        };
        write!(f, "{sep}{}", unit.suffix())?;
    }
    Ok(())
}

const NANOS_PER_SEC: u64 = 1_000_000_000;
/// Fraction digits taken into account; more would be finer than a nanosecond of a day.
const FRACTION_DIGITS_MAX: usize = 18;

/// Parses `text` (surrounding whitespace ignored) as a number followed by one of
/// `syntax.units`, or as a bare number in `syntax.bare`.
///
/// Zero is a valid duration here; callers that need a positive one check for it.
pub fn parse(text: &str, syntax: Syntax) -> Result<Duration, DurationError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    if number.is_empty() {
        return Err(DurationError::BadNumber);
    }
    let unit = if suffix.is_empty() {
        syntax.bare.ok_or(DurationError::MissingUnit { accepted: syntax.units })?
    } else {
        Unit::from_suffix(suffix)
            .filter(|u| syntax.units.contains(u))
            .ok_or(DurationError::UnknownUnit { accepted: syntax.units })?
    };
    let nanos = scaled_nanos(number, unit.nanos())?;
    let secs = u64::try_from(nanos / u128::from(NANOS_PER_SEC)).map_err(|_| DurationError::Overflow)?;
    let subsec = u32::try_from(nanos % u128::from(NANOS_PER_SEC)).map_err(|_| DurationError::Overflow)?;
    Ok(Duration::new(secs, subsec))
}

/// `number` (ASCII digits and dots only, as split off by [`parse`]) times `unit_nanos`.
fn scaled_nanos(number: &str, unit_nanos: u64) -> Result<u128, DurationError> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
        return Err(DurationError::BadNumber);
    }
    let unit = u128::from(unit_nanos);
    let whole = whole
        .bytes()
        .try_fold(0u128, |n, d| n.checked_mul(10)?.checked_add(u128::from(d - b'0')))
        .and_then(|n| n.checked_mul(unit))
        .ok_or(DurationError::Overflow)?;
    // Bounded by FRACTION_DIGITS_MAX: numerator < 10^18, scale <= 10^18, and
    // 10^18 * (nanos in a day) < 2^128, so none of this can overflow.
    let (numerator, scale) = fraction
        .bytes()
        .take(FRACTION_DIGITS_MAX)
        .fold((0u128, 1u128), |(n, s), d| (n * 10 + u128::from(d - b'0'), s * 10));
    whole.checked_add(numerator * unit / scale).ok_or(DurationError::Overflow)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: &[Unit] = &[Unit::Micros, Unit::Millis, Unit::Secs, Unit::Mins, Unit::Hours, Unit::Days];
    const SECS_DEFAULT: Syntax = Syntax { units: ALL, bare: Some(Unit::Secs) };
    const UNIT_REQUIRED: Syntax = Syntax { units: &[Unit::Secs, Unit::Mins, Unit::Hours, Unit::Days], bare: None };

    fn ok(text: &str) -> Duration {
        parse(text, SECS_DEFAULT).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    #[test]
    fn every_unit() {
        assert_eq!(ok("250us"), Duration::from_micros(250));
        assert_eq!(ok("250µs"), Duration::from_micros(250));
        assert_eq!(ok("250ms"), Duration::from_millis(250));
        assert_eq!(ok("10s"), Duration::from_secs(10));
        assert_eq!(ok("5m"), Duration::from_secs(300));
        assert_eq!(ok("2h"), Duration::from_secs(7_200));
        assert_eq!(ok("30d"), Duration::from_secs(30 * 86_400));
    }

    #[test]
    fn bare_numbers_take_the_callers_unit() {
        assert_eq!(ok("3"), Duration::from_secs(3));
        let millis = Syntax { units: ALL, bare: Some(Unit::Millis) };
        assert_eq!(parse("3", millis), Ok(Duration::from_millis(3)));
        assert_eq!(parse("90", UNIT_REQUIRED), Err(DurationError::MissingUnit { accepted: UNIT_REQUIRED.units }));
    }

    #[test]
    fn fractions_are_exact() {
        assert_eq!(ok("1.5"), Duration::from_millis(1_500));
        assert_eq!(ok(".25s"), Duration::from_millis(250));
        assert_eq!(ok("2."), Duration::from_secs(2));
        assert_eq!(ok("0.1h"), Duration::from_secs(360));
        assert_eq!(ok("1.000000001s"), Duration::new(1, 1));
        // Finer than a nanosecond is dropped, not rounded up.
        assert_eq!(ok("0.0000000009s"), Duration::ZERO);
        assert_eq!(ok("1.0000000000000000000000001d"), Duration::from_secs(86_400));
    }

    #[test]
    fn zero_and_whitespace() {
        assert_eq!(ok("0s"), Duration::ZERO);
        assert_eq!(ok("  10s\n"), Duration::from_secs(10));
    }

    #[test]
    fn refusals() {
        assert_eq!(parse("", SECS_DEFAULT), Err(DurationError::Empty));
        assert_eq!(parse("   ", SECS_DEFAULT), Err(DurationError::Empty));
        for bad in ["s", ".", "-1s", "+1s", "1.2.3s", "..5s", "x"] {
            assert_eq!(parse(bad, SECS_DEFAULT), Err(DurationError::BadNumber), "{bad}");
        }
        for bad in ["10x", "10 s", "10S", "1e3", "5w", "10sec"] {
            assert_eq!(parse(bad, SECS_DEFAULT), Err(DurationError::UnknownUnit { accepted: ALL }), "{bad}");
        }
        // A unit that exists but this caller does not take.
        assert!(matches!(parse("500ms", UNIT_REQUIRED), Err(DurationError::UnknownUnit { .. })));
    }

    #[test]
    fn overflow_is_an_error() {
        let max = u64::MAX;
        assert_eq!(ok(&format!("{max}s")), Duration::from_secs(max));
        assert_eq!(parse(&format!("{max}.999999999s"), SECS_DEFAULT), Ok(Duration::new(max, 999_999_999)));
        assert_eq!(parse("18446744073709551616s", SECS_DEFAULT), Err(DurationError::Overflow));
        assert_eq!(parse("213503982334602d", SECS_DEFAULT), Err(DurationError::Overflow));
        let digits = "9".repeat(60);
        assert_eq!(parse(&digits, SECS_DEFAULT), Err(DurationError::Overflow));
        assert_eq!(parse(&format!("{digits}us"), SECS_DEFAULT), Err(DurationError::Overflow));
    }

    #[test]
    fn messages_name_the_accepted_units() {
        let e = parse("5w", UNIT_REQUIRED).unwrap_err();
        assert_eq!(e.to_string(), "unknown unit: use s, m, h or d");
        let e = parse("5", UNIT_REQUIRED).unwrap_err();
        assert_eq!(e.to_string(), "a unit is required: s, m, h or d");
    }

    proptest::proptest! {
        #[test]
        fn never_panics(text in "\\PC{0,40}") {
            let _ = parse(&text, SECS_DEFAULT);
            let _ = parse(&text, UNIT_REQUIRED);
        }

        #[test]
        fn whole_numbers_scale_exactly(n in 0u64..=u64::MAX / 86_400, unit_index in 0usize..6) {
            let unit = ALL[unit_index];
            let parsed = parse(&format!("{n}{}", unit.suffix()), SECS_DEFAULT);
            let nanos = u128::from(n) * u128::from(unit.nanos());
            let want = Duration::new(
                (nanos / u128::from(NANOS_PER_SEC)) as u64,
                (nanos % u128::from(NANOS_PER_SEC)) as u32,
            );
            proptest::prop_assert_eq!(parsed, Ok(want));
        }
    }
}
