//! Budget windows: a kind (minute, day, calendar month, all UTC) and an epoch, the Unix
//! second at which one window of that kind starts.

use std::fmt;

use gatekeeper_units::civil;

use crate::error::CrdtError;

/// Seconds in a minute window.
const MINUTE_S: i64 = 60;

/// The length of a budget window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WindowKind {
    /// 60 s, starting on a whole minute (Unix time has no leap seconds).
    Minute,
    /// 00:00:00 to 24:00:00 UTC.
    Day,
    /// The first of a calendar month 00:00:00 UTC to the first of the next.
    Month,
}

impl WindowKind {
    /// Every kind, in order.
    pub const ALL: [WindowKind; 3] = [WindowKind::Minute, WindowKind::Day, WindowKind::Month];

    /// The kind's name: `minute`, `day`, `month`.
    pub const fn name(self) -> &'static str {
        match self {
            WindowKind::Minute => "minute",
            WindowKind::Day => "day",
            WindowKind::Month => "month",
        }
    }

    /// The kind's tag in the binary encoding.
    pub(crate) const fn tag(self) -> u8 {
        match self {
            WindowKind::Minute => 0,
            WindowKind::Day => 1,
            WindowKind::Month => 2,
        }
    }

    /// The kind with encoding tag `tag`.
    pub(crate) const fn from_tag(tag: u8) -> Option<WindowKind> {
        match tag {
            0 => Some(WindowKind::Minute),
            1 => Some(WindowKind::Day),
            2 => Some(WindowKind::Month),
            _ => None,
        }
    }

    /// The window of this kind that contains `unix_s`.
    pub fn epoch(self, unix_s: i64) -> Result<Epoch, CrdtError> {
        let start = match self {
            // Rounds down (toward the past, also before 1970); only near i64::MIN can the
            // start fall outside i64.
            WindowKind::Minute => unix_s.checked_sub(unix_s.rem_euclid(MINUTE_S)),
            WindowKind::Day => unix_s.checked_sub(unix_s.rem_euclid(civil::DAY_S)),
            WindowKind::Month => civil::month_start(unix_s),
        };
        start.map(|s| Epoch { kind: self, start_unix_s: s }).ok_or(CrdtError::OutOfRange { kind: self.name(), unix_s })
    }
}

impl fmt::Display for WindowKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One window: its kind and the Unix second it starts at. Only [`WindowKind::epoch`] (or
/// a decoder that checks the same) makes one, so `start_unix_s` is always a window start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Epoch {
    kind: WindowKind,
    start_unix_s: i64,
}

impl Epoch {
    /// The window's kind.
    pub fn kind(&self) -> WindowKind {
        self.kind
    }

    /// The Unix second the window starts at (inclusive).
    pub fn start_unix_s(&self) -> i64 {
        self.start_unix_s
    }

    /// The Unix second the window ends at (exclusive) and the next one starts; `None`
    /// when that is past `i64::MAX`.
    pub fn end_unix_s(&self) -> Option<i64> {
        match self.kind {
            WindowKind::Minute => self.start_unix_s.checked_add(MINUTE_S),
            WindowKind::Day => self.start_unix_s.checked_add(civil::DAY_S),
            WindowKind::Month => civil::next_month_start(self.start_unix_s),
        }
    }

    /// Whether `unix_s` falls in this window.
    pub fn contains(&self, unix_s: i64) -> bool {
        unix_s >= self.start_unix_s && self.end_unix_s().is_none_or(|end| unix_s < end)
    }

    /// Seconds from `now_unix_s` until the window ends (0 once it has), for
    /// `x-ratelimit-reset-*` and `Retry-After`; `u64::MAX` when it never ends in `i64`.
    pub fn seconds_left(&self, now_unix_s: i64) -> u64 {
        match self.end_unix_s() {
            Some(end) => u64::try_from(end.saturating_sub(now_unix_s)).unwrap_or(0),
            None => u64::MAX,
        }
    }

    /// The epoch of `kind` starting at `start_unix_s`, if that is a window start.
    pub(crate) fn at_start(kind: WindowKind, start_unix_s: i64) -> Option<Epoch> {
        kind.epoch(start_unix_s).ok().filter(|e| e.start_unix_s == start_unix_s)
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.kind, self.start_unix_s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2024-02-29T23:59:59Z, the last second of a leap February.
    const LEAP_FEB_END: i64 = 1_709_251_199;

    fn start(kind: WindowKind, unix_s: i64) -> i64 {
        kind.epoch(unix_s).unwrap().start_unix_s()
    }

    #[test]
    fn minute_edges() {
        assert_eq!(start(WindowKind::Minute, 119), 60);
        assert_eq!(start(WindowKind::Minute, 120), 120);
        assert_eq!(start(WindowKind::Minute, -1), -60, "before 1970 rounds down, not toward 0");
        let e = WindowKind::Minute.epoch(LEAP_FEB_END).unwrap();
        assert!(e.contains(LEAP_FEB_END) && !e.contains(LEAP_FEB_END + 1));
        assert_eq!(e.end_unix_s(), Some(LEAP_FEB_END + 1));
        assert_eq!(e.seconds_left(LEAP_FEB_END), 1);
        assert_eq!(e.seconds_left(LEAP_FEB_END + 5), 0);
    }

    #[test]
    fn day_edges() {
        assert_eq!(start(WindowKind::Day, LEAP_FEB_END), LEAP_FEB_END + 1 - 86_400);
        assert_eq!(start(WindowKind::Day, LEAP_FEB_END + 1), LEAP_FEB_END + 1);
        assert_eq!(start(WindowKind::Day, -1), -86_400);
    }

    #[test]
    fn month_edges() {
        // 2024-02-01, 2024-03-01, 2025-01-01, 2024-12-01 (UTC).
        let (feb, mar) = (1_706_745_600, 1_709_251_200);
        assert_eq!(start(WindowKind::Month, LEAP_FEB_END), feb);
        assert_eq!(start(WindowKind::Month, LEAP_FEB_END + 1), mar);
        let e = WindowKind::Month.epoch(feb).unwrap();
        assert_eq!(e.end_unix_s(), Some(mar), "a leap February has 29 days");
        assert_eq!(e.seconds_left(LEAP_FEB_END), 1);
        let (dec, jan) = (1_733_011_200, 1_735_689_600);
        assert_eq!(start(WindowKind::Month, jan - 1), dec);
        assert_eq!(WindowKind::Month.epoch(jan - 1).unwrap().end_unix_s(), Some(jan), "December rolls into a new year");
        assert_eq!(start(WindowKind::Month, jan), jan);
    }

    #[test]
    fn extremes_never_panic() {
        for kind in WindowKind::ALL {
            for t in [i64::MIN, i64::MIN + 1, -1, 0, i64::MAX - 1, i64::MAX] {
                if let Ok(e) = kind.epoch(t) {
                    assert!(e.start_unix_s() <= t);
                    assert!(e.contains(t));
                    let _ = e.seconds_left(t);
                }
            }
        }
        assert!(WindowKind::Minute.epoch(i64::MAX).unwrap().end_unix_s().is_none());
    }

    #[test]
    fn only_window_starts_are_epochs() {
        assert!(Epoch::at_start(WindowKind::Minute, 120).is_some());
        assert!(Epoch::at_start(WindowKind::Minute, 121).is_none());
        assert!(Epoch::at_start(WindowKind::Month, 1_709_251_200).is_some());
        assert!(Epoch::at_start(WindowKind::Month, 1_709_251_200 - 86_400).is_none());
    }
}
