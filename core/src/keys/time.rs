//! RFC 3339 timestamps for the `iat` / `nbf` / `exp` claims, as PASETO recommends.
//!
//! Hand-written on the workspace's calendar routine (`gatekeeper_units::civil`) because the
//! keys module needs only UTC seconds: parsing is strict (bounds-checked fields, no trailing bytes),
//! formatting always emits `YYYY-MM-DDTHH:MM:SS+00:00`.

use gatekeeper_units::civil::{self, DAY_S};

/// Formats Unix seconds as RFC 3339 in UTC; `None` outside years 0000–9999.
pub(crate) fn format_rfc3339(unix_s: i64) -> Option<String> {
    let days = unix_s.div_euclid(DAY_S);
    let secs = unix_s.rem_euclid(DAY_S);
    let (year, month, day) = civil::civil_from_days(days);
    if !(0..=9999).contains(&year) {
        return None;
    }
    Some(format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}+00:00", secs / 3600, secs / 60 % 60, secs % 60))
}

/// Reads `n` ASCII digits at `at`.
fn digits(bytes: &[u8], at: usize, n: usize) -> Option<i64> {
    let field = bytes.get(at..at.checked_add(n)?)?;
    field.iter().try_fold(0i64, |acc, &b| b.is_ascii_digit().then(|| acc * 10 + i64::from(b - b'0')))
}

fn expect(bytes: &[u8], at: usize, allowed: &[u8]) -> Option<()> {
    allowed.contains(bytes.get(at)?).then_some(())
}

/// Parses an RFC 3339 `date-time` into Unix seconds (fractions truncated).
pub(crate) fn parse_rfc3339(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let year = digits(b, 0, 4)?;
    expect(b, 4, b"-")?;
    let month = digits(b, 5, 2)?;
    expect(b, 7, b"-")?;
    let day = digits(b, 8, 2)?;
    expect(b, 10, b"Tt ")?;
    let hour = digits(b, 11, 2)?;
    expect(b, 13, b":")?;
    let minute = digits(b, 14, 2)?;
    expect(b, 16, b":")?;
    let second = digits(b, 17, 2)?;
    let days = civil::days_from_civil(year, u32::try_from(month).ok()?, u32::try_from(day).ok()?)?;
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut at = 19;
    if b.get(at) == Some(&b'.') {
        at += 1;
        let start = at;
        while b.get(at).is_some_and(u8::is_ascii_digit) {
            at += 1;
        }
        if at == start {
            return None;
        }
    }
    let offset_s = match b.get(at)? {
        b'Z' | b'z' => {
            at += 1;
            0
        }
        sign @ (b'+' | b'-') => {
            let oh = digits(b, at + 1, 2)?;
            expect(b, at + 3, b":")?;
            let om = digits(b, at + 4, 2)?;
            if oh > 23 || om > 59 {
                return None;
            }
            at += 6;
            let offset = oh * 3600 + om * 60;
            if *sign == b'+' {
                offset
            } else {
                -offset
            }
        }
        _ => return None,
    };
    if at != b.len() {
        return None;
    }
    // A leap second (:60) is read as the last second of its minute.
    let second = second.min(59);
    Some(days * DAY_S + hour * 3600 + minute * 60 + second - offset_s)
}

/// Serde adapter: `Option<i64>` Unix seconds as an optional RFC 3339 string.
pub(crate) mod rfc3339_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(value: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            None => s.serialize_none(),
            Some(t) => match super::format_rfc3339(*t) {
                Some(text) => s.serialize_str(&text),
                None => Err(serde::ser::Error::custom("timestamp outside years 0000-9999")),
            },
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        let text: Option<std::borrow::Cow<'de, str>> = Option::deserialize(d)?;
        match text {
            None => Ok(None),
            Some(text) => super::parse_rfc3339(&text)
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom("not an RFC 3339 date-time")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2022-01-01T00:00:00+00:00"), Some(1_640_995_200));
        assert_eq!(parse_rfc3339("2022-01-01T01:00:00+01:00"), Some(1_640_995_200));
        assert_eq!(parse_rfc3339("2021-12-31T19:00:00.999-05:00"), Some(1_640_995_200));
        assert_eq!(parse_rfc3339("2000-02-29T12:00:00Z"), Some(951_825_600));
        assert_eq!(format_rfc3339(1_640_995_200).as_deref(), Some("2022-01-01T00:00:00+00:00"));
        assert_eq!(format_rfc3339(-1).as_deref(), Some("1969-12-31T23:59:59+00:00"));
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "2022-01-01",
            "2022-01-01T00:00:00",
            "2022-13-01T00:00:00Z",
            "2022-02-29T00:00:00Z",
            "2022-01-01T24:00:00Z",
            "2022-01-01T00:00:00Zjunk",
            "2022-01-01T00:00:00.Z",
            "2022-01-01T00:00:00+0100",
            "２022-01-01T00:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn round_trips_every_day_for_centuries() {
        let day = |y, m, d| civil::days_from_civil(y, m, d).expect("a real date");
        let mut t = day(1600, 1, 1) * DAY_S + 12_345;
        let end = day(2400, 12, 31) * DAY_S;
        while t < end {
            let text = format_rfc3339(t).unwrap();
            assert_eq!(parse_rfc3339(&text), Some(t), "{text}");
            t += DAY_S + 7;
        }
        assert_eq!(format_rfc3339(day(10_000, 1, 1) * DAY_S), None);
    }
}
