//! The proleptic Gregorian calendar on Unix days and seconds, in UTC.
//!
//! Day 0 is 1970-01-01. Years are astronomical (year 0 is 1 BC) and every function is exact
//! and total over `i64`: [`civil_from_days`] accepts any day, and [`days_from_civil`]
//! refuses (with `None`) dates that do not exist or whose day number would not fit.
//! The conversions are H. Hinnant's `days_from_civil` / `civil_from_days`, which count in
//! 400-year eras of 146,097 days starting on March 1, so leap days fall at the end of a
//! counted year.

/// Seconds in a day; Unix time has no leap seconds.
pub const DAY_S: i64 = 86_400;

/// Days in one 400-year era.
const ERA_DAYS: i64 = 146_097;
/// Days from 0000-03-01 (day 0 of era 0) to 1970-01-01.
const UNIX_EPOCH_DAY: i64 = 719_468;

/// Whether `year` has a February 29th.
pub fn is_leap_year(year: i64) -> bool {
    year.rem_euclid(4) == 0 && (year.rem_euclid(100) != 0 || year.rem_euclid(400) == 0)
}

/// Days in `month` (1–12) of `year`; `None` for a month outside 1–12.
pub fn days_in_month(year: i64, month: u32) -> Option<u32> {
    Some(match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        _ => return None,
    })
}

/// Days since 1970-01-01 of the date `year-month-day`; `None` when there is no such date
/// (month outside 1–12, day outside its month) or its day number does not fit in `i64`.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> Option<i64> {
    if !(1..=days_in_month(year, month)?).contains(&day) {
        return None;
    }
    // Count years from March, so February (and its leap day) ends the counted year.
    let y = if month <= 2 { year.checked_sub(1)? } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y.rem_euclid(400);
    let month_from_march = i64::from((month + 9) % 12);
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    // era * ERA_DAYS alone can leave i64 near the ends of the range even when the sum fits.
    let days = i128::from(era) * i128::from(ERA_DAYS) + i128::from(day_of_era - UNIX_EPOCH_DAY);
    i64::try_from(days).ok()
}

/// The date `(year, month, day)` of a day counted from 1970-01-01; the inverse of
/// [`days_from_civil`].
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Shift to day 0 = 0000-03-01 without forming `days + UNIX_EPOCH_DAY`, which overflows
    // near i64::MAX: split into whole eras first, then add the epoch to the small remainder.
    let shifted = days.rem_euclid(ERA_DAYS) + UNIX_EPOCH_DAY;
    let era = days.div_euclid(ERA_DAYS) + shifted.div_euclid(ERA_DAYS);
    let day_of_era = shifted.rem_euclid(ERA_DAYS);
    let year_of_era = (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 };
    // |era| <= i64::MAX / 146_097, so era * 400 + 399 + 1 is far inside i64.
    let year = era * 400 + year_of_era + i64::from(month <= 2);
    // month is 1..=12 and day 1..=31 by construction.
    (year, month as u32, day as u32)
}

/// Unix seconds of 00:00:00 UTC on the first day of the month containing `unix_s`;
/// `None` only when that instant is before `i64::MIN` seconds.
pub fn month_start(unix_s: i64) -> Option<i64> {
    let (year, month, _) = civil_from_days(unix_s.div_euclid(DAY_S));
    days_from_civil(year, month, 1)?.checked_mul(DAY_S)
}

/// Unix seconds of 00:00:00 UTC on the first day of the month after the one containing
/// `unix_s`, where the window that [`month_start`] opens closes; `None` when that instant is
/// past `i64::MAX` seconds.
pub fn next_month_start(unix_s: i64) -> Option<i64> {
    let (year, month, _) = civil_from_days(unix_s.div_euclid(DAY_S));
    let (year, month) = if month == 12 { (year.checked_add(1)?, 1) } else { (year, month + 1) };
    days_from_civil(year, month, 1)?.checked_mul(DAY_S)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        for (date, days) in [
            ((1970, 1, 1), 0),
            ((1969, 12, 31), -1),
            ((2000, 2, 29), 11_016),
            ((2000, 3, 1), 11_017),
            ((1900, 2, 28), -25_509),
            ((1900, 3, 1), -25_508),
            ((1600, 2, 29), -135_081),
            ((2024, 2, 29), 19_782),
            ((2400, 2, 29), 157_113),
            ((1, 1, 1), -719_162),
            ((0, 1, 1), -719_528),
            ((9999, 12, 31), 2_932_896),
        ] {
            assert_eq!(days_from_civil(date.0, date.1, date.2), Some(days), "{date:?}");
            assert_eq!(civil_from_days(days), date, "{days}");
        }
    }

    #[test]
    fn leap_years() {
        assert!(is_leap_year(2000) && is_leap_year(2024) && is_leap_year(0) && is_leap_year(-4));
        assert!(!is_leap_year(1900) && !is_leap_year(2100) && !is_leap_year(2023) && !is_leap_year(-1));
        assert_eq!(days_in_month(2024, 2), Some(29));
        assert_eq!(days_in_month(2023, 2), Some(28));
        assert_eq!(days_in_month(2023, 4), Some(30));
        assert_eq!(days_in_month(2023, 12), Some(31));
        assert_eq!(days_in_month(2023, 0), None);
        assert_eq!(days_in_month(2023, 13), None);
    }

    #[test]
    fn dates_that_do_not_exist() {
        for (y, m, d) in [(2023, 2, 29), (2100, 2, 29), (1900, 2, 29), (2024, 4, 31), (2024, 0, 1), (2024, 13, 1)] {
            assert_eq!(days_from_civil(y, m, d), None, "{y}-{m}-{d}");
        }
        assert_eq!(days_from_civil(2024, 1, 0), None);
        assert_eq!(days_from_civil(2024, 1, 32), None);
    }

    #[test]
    fn every_day_of_years_0000_to_9999_follows_the_last() {
        let mut expected = days_from_civil(0, 1, 1).unwrap_or_default();
        for year in 0..=9999 {
            for month in 1..=12 {
                for day in 1..=days_in_month(year, month).unwrap_or_default() {
                    assert_eq!(days_from_civil(year, month, day), Some(expected), "{year}-{month}-{day}");
                    assert_eq!(civil_from_days(expected), (year, month, day));
                    expected += 1;
                }
            }
        }
    }

    #[test]
    fn extremes_do_not_overflow() {
        for days in [i64::MIN, i64::MIN + 1, -1, 0, i64::MAX - 1, i64::MAX] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), Some(days), "{days}");
        }
        assert_eq!(days_from_civil(i64::MAX, 12, 31), None);
        assert_eq!(days_from_civil(i64::MIN, 1, 1), None);
        assert_eq!(month_start(i64::MIN), None);
        assert_eq!(next_month_start(i64::MAX), None);
        assert!(month_start(i64::MAX).is_some());
    }

    #[test]
    fn month_bounds() {
        let feb_2024 = 1_706_745_600; // 2024-02-01T00:00:00Z
        let mar_2024 = 1_709_251_200; // 2024-03-01T00:00:00Z
        let leap_day_1pm = 1_709_211_600; // 2024-02-29T13:00:00Z
        assert_eq!(month_start(leap_day_1pm), Some(feb_2024));
        assert_eq!(next_month_start(leap_day_1pm), Some(mar_2024));
        assert_eq!(month_start(feb_2024), Some(feb_2024), "a month starts at its own first second");
        assert_eq!(month_start(mar_2024 - 1), Some(feb_2024));
        assert_eq!(month_start(mar_2024), Some(mar_2024));
        // December rolls over into the next year.
        let dec_2024 = 1_733_011_200;
        let jan_2025 = 1_735_689_600;
        assert_eq!(month_start(jan_2025 - 1), Some(dec_2024));
        assert_eq!(next_month_start(dec_2024), Some(jan_2025));
        // Before the epoch, seconds count down into the previous day.
        assert_eq!(month_start(-1), Some(-2_678_400)); // 1969-12-31T23:59:59Z → 1969-12-01
        assert_eq!(next_month_start(-1), Some(0));
    }

    proptest::proptest! {
        #[test]
        fn any_day_round_trips(days in proptest::prelude::any::<i64>()) {
            let (y, m, d) = civil_from_days(days);
            proptest::prop_assert!((1..=12).contains(&m));
            proptest::prop_assert!(days_in_month(y, m).is_some_and(|n| (1..=n).contains(&d)));
            proptest::prop_assert_eq!(days_from_civil(y, m, d), Some(days));
        }

        #[test]
        fn any_date_round_trips(year in -1_000_000i64..1_000_000, month in 1u32..=12, day in 1u32..=31) {
            let days = days_from_civil(year, month, day);
            let exists = days_in_month(year, month).is_some_and(|n| day <= n);
            proptest::prop_assert_eq!(days.is_some(), exists);
            if let Some(days) = days {
                proptest::prop_assert_eq!(civil_from_days(days), (year, month, day));
            }
        }

        #[test]
        fn month_window_contains_its_instant(unix_s in -100_000_000_000i64..100_000_000_000) {
            let start = month_start(unix_s);
            let end = next_month_start(unix_s);
            proptest::prop_assert!(start.is_some_and(|s| s <= unix_s));
            proptest::prop_assert!(end.is_some_and(|e| unix_s < e));
            let (Some(start), Some(end)) = (start, end) else { return Ok(()) };
            proptest::prop_assert!((28 * DAY_S..=31 * DAY_S).contains(&(end - start)));
            let (_, _, first) = civil_from_days(start / DAY_S);
            proptest::prop_assert_eq!(first, 1);
            proptest::prop_assert_eq!(start % DAY_S, 0);
        }
    }
}
