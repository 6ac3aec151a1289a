//! The wall clock, read one way everywhere: Unix time from `SystemTime`, and 0 for a
//! clock set before 1970 (nothing here can do better with it, and no caller panics).

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix time, whole seconds.
pub fn unix_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Unix time, whole seconds, for the callers that count in `i64` (budget windows).
pub fn unix_s_i64() -> i64 {
    i64::try_from(unix_s()).unwrap_or(i64::MAX)
}

/// Unix time, milliseconds (saturating in the year 584,556,019).
pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_readings_agree() {
        let (s, ms) = (unix_s(), unix_ms());
        // Read in order: the ms reading is at or after the s reading's second.
        assert!(ms / 1000 >= s && ms / 1000 - s <= 1, "{s} s vs {ms} ms");
        assert!(unix_s_i64() >= i64::try_from(s).unwrap());
        assert!(s > 1_600_000_000, "a clock after 2020");
    }
}
