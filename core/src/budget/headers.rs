//! OpenAI's rate-limit headers (`x-ratelimit-*`) from what the budget step saw.

use std::fmt::Write as _;

/// One limit as the headers report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLine {
    /// The limit.
    pub limit: u64,
    /// What is left of it once this request's reservation is counted.
    pub remaining: u64,
    /// Seconds until its window ends and the count starts again.
    pub reset_s: u64,
}

/// What `x-ratelimit-*` says: the tightest token window (least remaining, over the
/// key's and the tenant's minute, day and month) and the tightest requests-per-minute
/// limit. A kind with no limit is left out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateView {
    /// `x-ratelimit-*-tokens`.
    pub tokens: Option<RateLine>,
    /// `x-ratelimit-*-requests`.
    pub requests: Option<RateLine>,
}

impl RateView {
    /// Keeps `line` as the token line if it leaves less than the current one.
    pub fn tighten_tokens(&mut self, line: RateLine) {
        if self.tokens.is_none_or(|t| line.remaining < t.remaining) {
            self.tokens = Some(line);
        }
    }

    /// Keeps `line` as the requests line if it leaves less than the current one.
    pub fn tighten_requests(&mut self, line: RateLine) {
        if self.requests.is_none_or(|t| line.remaining < t.remaining) {
            self.requests = Some(line);
        }
    }

    /// The headers as (name, value range in `buf`) pairs, the values written into `buf`
    /// (cleared first; one buffer for all six values, no other allocation). A kind with
    /// no limit leaves its three entries `None`.
    pub fn write(&self, buf: &mut String) -> [Option<(&'static str, std::ops::Range<usize>)>; 6] {
        buf.clear();
        let mut out: [Option<(&'static str, std::ops::Range<usize>)>; 6] = Default::default();
        let lines = [
            (
                self.requests,
                ["x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests"],
            ),
            (self.tokens, ["x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"]),
        ];
        for (i, (line, names)) in lines.into_iter().enumerate() {
            let Some(l) = line else { continue };
            for (j, name) in names.into_iter().enumerate() {
                let start = buf.len();
                match j {
                    0 => {
                        let _ = write!(buf, "{}", l.limit);
                    }
                    1 => {
                        let _ = write!(buf, "{}", l.remaining);
                    }
                    _ => go_duration(buf, l.reset_s),
                }
                if let Some(slot) = out.get_mut(i * 3 + j) {
                    *slot = Some((name, start..buf.len()));
                }
            }
        }
        out
    }

    /// The headers as owned pairs (for error answers).
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut buf = String::new();
        let ranges = self.write(&mut buf);
        ranges.into_iter().flatten().map(|(n, r)| (n, buf.get(r).unwrap_or_default().to_string())).collect()
    }
}

/// Whole seconds as Go's `time.Duration` prints them, which is what OpenAI sends
/// (`1s`, `6m0s`, `23h59m59s`; `0s`).
pub fn go_duration(buf: &mut String, seconds: u64) {
    let (h, m, s) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    let _ = if h > 0 {
        write!(buf, "{h}h{m}m{s}s")
    } else if m > 0 {
        write!(buf, "{m}m{s}s")
    } else {
        write!(buf, "{s}s")
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn go(s: u64) -> String {
        let mut b = String::new();
        go_duration(&mut b, s);
        b
    }

    #[test]
    fn durations_read_as_openai_writes_them() {
        assert_eq!(go(0), "0s");
        assert_eq!(go(1), "1s");
        assert_eq!(go(59), "59s");
        assert_eq!(go(360), "6m0s");
        assert_eq!(go(86_399), "23h59m59s");
        assert_eq!(go(31 * 86_400), "744h0m0s");
    }

    #[test]
    fn the_tightest_line_wins_and_absent_kinds_are_left_out() {
        let mut v = RateView::default();
        v.tighten_tokens(RateLine { limit: 100, remaining: 40, reset_s: 3 });
        v.tighten_tokens(RateLine { limit: 1000, remaining: 900, reset_s: 80_000 });
        v.tighten_tokens(RateLine { limit: 50, remaining: 10, reset_s: 3 });
        assert_eq!(v.tokens.map(|t| t.limit), Some(50));
        let pairs = v.pairs();
        let names: Vec<_> = pairs.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"]);
        assert_eq!(pairs[2].1, "3s");
        v.tighten_requests(RateLine { limit: 5, remaining: 4, reset_s: 60 });
        assert_eq!(v.pairs().len(), 6);
        assert_eq!(v.pairs()[2], ("x-ratelimit-reset-requests", "1m0s".to_string()));
    }
}
