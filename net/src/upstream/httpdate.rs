//! HTTP-date parsing (RFC 9110 §5.6.7) for `Retry-After`.

use std::time::{Duration, SystemTime};

use gatekeeper_units::civil;

/// Longest date string accepted; real dates are 29 bytes, anything much longer is junk.
const DATE_BYTES_MAX: usize = 64;

const MONTHS: [&[u8]; 12] =
    [b"jan", b"feb", b"mar", b"apr", b"may", b"jun", b"jul", b"aug", b"sep", b"oct", b"nov", b"dec"];

/// Parses IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) and the two obsolete forms recipients
/// must accept: RFC 850 (`Sunday, 06-Nov-94 08:49:37 GMT`) and asctime
/// (`Sun Nov  6 08:49:37 1994`). Returns `None` for anything else.
pub(crate) fn parse(s: &[u8]) -> Option<SystemTime> {
    if s.len() > DATE_BYTES_MAX {
        return None;
    }
    let (mut day, mut year, mut month, mut time) = (None, None, None, None);
    for token in s.split(|&b| b == b' ' || b == b',' || b == b'-').filter(|t| !t.is_empty()) {
        if token.contains(&b':') {
            time = Some(parse_time(token)?);
        } else if token.iter().all(u8::is_ascii_digit) {
            let n = super::head::parse_decimal(token)?;
            match (day, year) {
                (None, _) => day = Some(n),
                (Some(_), None) => year = Some(if token.len() == 2 { two_digit_year(n) } else { n }),
                _ => return None,
            }
        } else if let Some(m) = MONTHS.iter().position(|m| token.eq_ignore_ascii_case(m)) {
            month = Some(m as u64 + 1);
        } else if !token.iter().all(u8::is_ascii_alphabetic) {
            // Weekday names and "GMT" are the only other words allowed.
            return None;
        }
    }
    let (day, year, month, secs_of_day) = (day?, year?, month?, time?);
    if !(1970..=9999).contains(&year) {
        return None;
    }
    let days = civil::days_from_civil(i64::try_from(year).ok()?, u32::try_from(month).ok()?, u32::try_from(day).ok()?)?;
    let secs = u64::try_from(days).ok()?.checked_mul(86_400)?.checked_add(secs_of_day)?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// RFC 850 two-digit years: 70..99 are 19xx, 00..69 are 20xx (RFC 9110 says to pick the most
/// recent past year with those digits; this is exact until 2070).
fn two_digit_year(n: u64) -> u64 {
    if n >= 70 {
        1900 + n
    } else {
        2000 + n
    }
}

/// `HH:MM:SS` to seconds of the day.
fn parse_time(t: &[u8]) -> Option<u64> {
    let mut parts = t.split(|&b| b == b':');
    let mut field = |max: u64| {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        super::head::parse_decimal(p).filter(|&v| v <= max)
    };
    // 60 allows a leap second.
    let secs = field(23)? * 3600 + field(59)? * 60 + field(60)?;
    parts.next().is_none().then_some(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_three_forms() {
        let want = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(parse(b"Sun, 06 Nov 1994 08:49:37 GMT"), Some(want));
        assert_eq!(parse(b"Sunday, 06-Nov-94 08:49:37 GMT"), Some(want));
        assert_eq!(parse(b"Sun Nov  6 08:49:37 1994"), Some(want));
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(1_709_164_800);
        assert_eq!(parse(b"Thu, 29 Feb 2024 00:00:00 GMT"), Some(leap));
    }

    #[test]
    fn rejects_junk() {
        for bad in [
            &b""[..],
            b"soon",
            b"Sun, 06 Nov 1994 08:49 GMT",
            b"Sun, 06 Nov 1994 25:00:00 GMT",
            b"Sun, 06 Xyz 1994 08:49:37 GMT",
            b"Sun, 32 Nov 1994 08:49:37 GMT",
            b"Sun, 06 Nov 1994 08:49:37 GMT 7",
            b"Sun, 06 Nov 1900 08:49:37 GMT",
            // No such day: refused, not rolled over into March.
            b"Sat, 31 Feb 2024 08:49:37 GMT",
        ] {
            assert_eq!(parse(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
