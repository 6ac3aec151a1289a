//! Fault kinds and how a request picks one: the `X-Mock-Fault` header beats `--fault`,
//! which beats the `--schedule` phase in force.

use std::fmt;
use std::str::FromStr;

/// A fault the mock can inject into one chat request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fault {
    /// Answer normally.
    None,
    /// 429 with `Retry-After` and the provider's rate-limit error body.
    RateLimited,
    /// 500 with the provider's server-error body.
    ServerError,
    /// 503 with the provider's overloaded body (Anthropic mode: 529, as the real API).
    Unavailable,
    /// Read the request, then close with a TCP RST (SO_LINGER 0).
    Reset,
    /// Read the request and never answer; hold the socket until the client leaves.
    Stall,
    /// Start the answer, then close abruptly part way (stream: after K events;
    /// non-stream: after the head and half the body).
    Cut,
}

/// Every fault that is counted in `/__mock/stats`, in the order counters are kept.
pub const FAULTS_COUNTED: [Fault; 6] =
    [Fault::RateLimited, Fault::ServerError, Fault::Unavailable, Fault::Reset, Fault::Stall, Fault::Cut];

impl Fault {
    /// The name used on the command line, in headers and in stats.
    pub fn name(self) -> &'static str {
        match self {
            Fault::None => "none",
            Fault::RateLimited => "429",
            Fault::ServerError => "500",
            Fault::Unavailable => "503",
            Fault::Reset => "reset",
            Fault::Stall => "stall",
            Fault::Cut => "cut",
        }
    }

    /// Index into the stats counters; `None` for [`Fault::None`], which is not counted.
    pub fn counter_index(self) -> Option<usize> {
        FAULTS_COUNTED.iter().position(|f| *f == self)
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A fault name that is not one of `none|429|500|503|reset|stall|cut`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown fault {0:?} (expected none, 429, 500, 503, reset, stall or cut)")]
pub struct UnknownFault(pub String);

impl FromStr for Fault {
    type Err = UnknownFault;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" | "" => Ok(Fault::None),
            "429" => Ok(Fault::RateLimited),
            "500" => Ok(Fault::ServerError),
            "503" => Ok(Fault::Unavailable),
            "reset" => Ok(Fault::Reset),
            "stall" => Ok(Fault::Stall),
            "cut" => Ok(Fault::Cut),
            _ => Err(UnknownFault(s.to_string())),
        }
    }
}

/// Picks this mock's value out of an `X-Mock-*` header.
///
/// A plain value (`500`) applies to every mock. A comma list of `NAME=VALUE` entries
/// (`primary=500,secondary=none`) lets one header, forwarded by the gateway to several
/// mocks, target each by its `--name`; `*=VALUE` matches any mock. Returns `None` when
/// the list has no entry for `name`, so the flag/schedule default applies.
pub fn select_for<'a>(value: &'a str, name: &str) -> Option<&'a str> {
    if !value.contains('=') {
        return Some(value.trim());
    }
    let mut wildcard = None;
    // Bounded by the header's length, itself bounded by the 64 KiB head limit.
    for entry in value.split(',') {
        let Some((key, val)) = entry.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if key == name {
            return Some(val.trim());
        }
        if key == "*" {
            wildcard = Some(val.trim());
        }
    }
    wildcard
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_name_and_round_trips() {
        for f in [Fault::None].iter().chain(FAULTS_COUNTED.iter()) {
            assert_eq!(f.name().parse::<Fault>(), Ok(*f));
        }
        assert_eq!("RESET".parse::<Fault>(), Ok(Fault::Reset));
        assert!("404".parse::<Fault>().is_err());
    }

    #[test]
    fn select_for_plain_and_named_lists() {
        assert_eq!(select_for("500", "a"), Some("500"));
        assert_eq!(select_for(" primary=500, secondary=none", "primary"), Some("500"));
        assert_eq!(select_for("primary=500,secondary=none", "secondary"), Some("none"));
        assert_eq!(select_for("primary=500,secondary=none", "third"), None);
        assert_eq!(select_for("primary=500,*=429", "x"), Some("429"));
        assert_eq!(select_for("garbage,=,a=", "a"), Some(""));
    }

    #[test]
    fn none_is_not_counted() {
        assert_eq!(Fault::None.counter_index(), None);
        assert_eq!(Fault::Cut.counter_index(), Some(5));
    }
}
