//! The listener's section: `listen`, `shards`, `driver`, `tls` and `limits`, and their
//! conversion into `gatekeeper-net`'s [`ServerLimits`] and driver choice.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use gatekeeper_net::ServerLimits;
use serde::{Deserialize, Serialize};

use super::error::{invalid, ConfigError};

/// `shards: auto | N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Shards {
    /// One shard per core this process may run on.
    #[default]
    Auto,
    /// Exactly this many shards.
    Count(usize),
}

impl Shards {
    /// The number of shards to start on this host.
    pub fn resolve(self) -> usize {
        match self {
            Shards::Count(n) => n,
            Shards::Auto => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        }
    }
}

impl<'de> Deserialize<'de> for Shards {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(usize),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Shards::Count(n)),
            Raw::S(s) if s == "auto" => Ok(Shards::Auto),
            Raw::S(s) => s
                .parse()
                .map(Shards::Count)
                .map_err(|_| serde::de::Error::custom(format!("expected `auto` or a number, got `{s}`"))),
        }
    }
}

impl Serialize for Shards {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Shards::Auto => s.serialize_str("auto"),
            Shards::Count(n) => s.serialize_u64(*n as u64),
        }
    }
}

/// Which monoio driver the shards run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DriverChoice {
    /// io_uring where the kernel offers it, epoll otherwise.
    #[default]
    Auto,
    /// io_uring only; start fails where the kernel lacks it.
    Uring,
    /// epoll only.
    Epoll,
}

/// TLS termination on the listener.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// Every limit on a client connection. Exceeding one is answered, never crashes a shard.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request head (request line + headers), bytes. Default 16 KiB. Exceeded: 431 and close.
    pub header_bytes_max: usize,
    /// Most header fields in one request. Default 100. Exceeded: 431 and close.
    pub header_count_max: usize,
    /// Largest request body after de-chunking, bytes. Default 4 MiB. Exceeded: 413 and close.
    pub body_bytes_max: usize,
    /// Request body bytes one shard holds at once over all its connections: each body's
    /// declared length from the moment its head arrives (a chunked body: its buffer as it
    /// grows) until its request is answered, bytes. Default 64 MiB; at least
    /// `body_bytes_max`. Exceeded: 503 with `Retry-After: 1` (code `overloaded`) and close,
    /// before the body is read.
    pub body_bytes_in_flight_max: usize,
    /// Time from a connection's first byte of a request to the end of its head, ms.
    /// Default 10 s. Exceeded (slowloris): 408 and close.
    pub header_timeout_ms: u64,
    /// Time to receive the whole body once the head is in, ms. Default 30 s. Exceeded: 408 and close.
    pub body_timeout_ms: u64,
    /// Time a keep-alive connection may sit idle between requests, ms. Default 60 s. Exceeded: closed silently.
    pub idle_timeout_ms: u64,
    /// Time a write to a client may make no progress (the client stopped reading), ms.
    /// Default 30 s, at least 100 ms. Exceeded: the connection is closed; a streamed answer
    /// ends as client gone (status 499), releasing its upstream connection.
    pub write_timeout_ms: u64,
    /// Open client connections per shard. Default 10,000. Exceeded: 503 and close.
    pub connections_per_shard_max: usize,
    /// Requests read ahead of the one being answered on one connection (pipelining). Default 16.
    /// Exceeded: the shard stops reading that connection until answers drain.
    pub pipeline_depth_max: usize,
    // -- admission (enforced by the pipeline, not by the HTTP server) --
    /// Chat-completion requests one shard serves at once, from admission to the last byte of
    /// the answer. Default 4096. Exceeded: 503 `overloaded` with `Retry-After: 1`, answered
    /// before the key is checked or any provider is called, so an overloaded shard sheds for
    /// the cost of a parse.
    pub inflight_per_shard_max: usize,
}

/// Default of `limits.inflight_per_shard_max`.
pub const INFLIGHT_PER_SHARD_MAX_DEFAULT: usize = 4096;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_bytes_max: 16 * 1024,
            header_count_max: 100,
            body_bytes_max: 4 * 1024 * 1024,
            body_bytes_in_flight_max: 64 * 1024 * 1024,
            header_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
            idle_timeout_ms: 60_000,
            write_timeout_ms: 30_000,
            connections_per_shard_max: 10_000,
            pipeline_depth_max: 16,
            inflight_per_shard_max: INFLIGHT_PER_SHARD_MAX_DEFAULT,
        }
    }
}
impl From<DriverChoice> for gatekeeper_net::DriverChoice {
    fn from(d: DriverChoice) -> Self {
        match d {
            DriverChoice::Auto => gatekeeper_net::DriverChoice::Auto,
            DriverChoice::Uring => gatekeeper_net::DriverChoice::Uring,
            DriverChoice::Epoll => gatekeeper_net::DriverChoice::Epoll,
        }
    }
}

impl From<&Limits> for ServerLimits {
    fn from(l: &Limits) -> Self {
        // Destructured without `..`: a new limit does not compile until it is mapped here.
        let Limits {
            header_bytes_max,
            header_count_max,
            body_bytes_max,
            body_bytes_in_flight_max,
            header_timeout_ms,
            body_timeout_ms,
            idle_timeout_ms,
            write_timeout_ms,
            connections_per_shard_max,
            pipeline_depth_max,
            inflight_per_shard_max: _, // the pipeline's admission check, not the server's
        } = *l;
        ServerLimits {
            header_bytes_max,
            header_count_max,
            body_bytes_max,
            body_bytes_in_flight_max,
            header_timeout: Duration::from_millis(header_timeout_ms),
            body_timeout: Duration::from_millis(body_timeout_ms),
            idle_timeout: Duration::from_millis(idle_timeout_ms),
            write_timeout: Duration::from_millis(write_timeout_ms),
            connections_per_shard_max,
            pipeline_depth_max,
        }
    }
}

/// Checks `listen`, `shards` and `limits`.
pub(super) fn validate(listen: &str, shards: Shards, l: &Limits) -> Result<(), ConfigError> {
    if listen.parse::<SocketAddr>().is_err() {
        return Err(invalid("listen", format!("not an address (ip:port): `{listen}`")));
    }
    if shards == Shards::Count(0) {
        return Err(invalid("shards", "must be at least 1"));
    }
    let checks: [(&str, u64, u64); 9] = [
        ("limits.header_bytes_max", l.header_bytes_max as u64, 256),
        ("limits.header_count_max", l.header_count_max as u64, 4),
        ("limits.body_bytes_max", l.body_bytes_max as u64, 1),
        ("limits.header_timeout_ms", l.header_timeout_ms, 1),
        ("limits.body_timeout_ms", l.body_timeout_ms, 1),
        ("limits.idle_timeout_ms", l.idle_timeout_ms, 1),
        // Below this, a client on a congested link is cut while it is still reading.
        ("limits.write_timeout_ms", l.write_timeout_ms, 100),
        ("limits.connections_per_shard_max", l.connections_per_shard_max as u64, 1),
        ("limits.pipeline_depth_max", l.pipeline_depth_max as u64, 1),
    ];
    for (path, value, min) in checks {
        if value < min {
            return Err(invalid(path, format!("must be at least {min}")));
        }
    }
    if l.header_bytes_max > 1024 * 1024 {
        return Err(invalid("limits.header_bytes_max", "must be at most 1 MiB"));
    }
    if l.header_count_max > 1024 {
        return Err(invalid("limits.header_count_max", "must be at most 1024"));
    }
    if l.inflight_per_shard_max == 0 {
        return Err(invalid("limits.inflight_per_shard_max", "must be at least 1"));
    }
    // Else a body of the largest allowed size could never be taken.
    if l.body_bytes_in_flight_max < l.body_bytes_max {
        return Err(invalid(
            "limits.body_bytes_in_flight_max",
            format!("must be at least limits.body_bytes_max ({})", l.body_bytes_max),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_limit_reaches_the_server() {
        // Distinct values, so a field mapped to the wrong place shows.
        let l = Limits {
            header_bytes_max: 1001,
            header_count_max: 1002,
            body_bytes_max: 1003,
            body_bytes_in_flight_max: 1009,
            header_timeout_ms: 1004,
            body_timeout_ms: 1005,
            idle_timeout_ms: 1006,
            write_timeout_ms: 1010,
            connections_per_shard_max: 1007,
            pipeline_depth_max: 1008,
            inflight_per_shard_max: 1009,
        };
        let s = ServerLimits::from(&l);
        assert_eq!(s.header_bytes_max, 1001);
        assert_eq!(s.header_count_max, 1002);
        assert_eq!(s.body_bytes_max, 1003);
        assert_eq!(s.header_timeout, Duration::from_millis(1004));
        assert_eq!(s.body_timeout, Duration::from_millis(1005));
        assert_eq!(s.idle_timeout, Duration::from_millis(1006));
        assert_eq!(s.connections_per_shard_max, 1007);
        assert_eq!(s.pipeline_depth_max, 1008);
        assert_eq!(s.body_bytes_in_flight_max, 1009);
        assert_eq!(s.write_timeout, Duration::from_millis(1010));
    }

    #[test]
    fn write_timeout_and_body_budget_have_floors() {
        let ok = Limits::default();
        assert!(validate("127.0.0.1:1", Shards::Auto, &ok).is_ok());
        let short = Limits { write_timeout_ms: 99, ..Limits::default() };
        let e = validate("127.0.0.1:1", Shards::Auto, &short).expect_err("too short").to_string();
        assert!(e.contains("limits.write_timeout_ms") && e.contains("100"), "{e}");
        let small = Limits { body_bytes_in_flight_max: 1000, body_bytes_max: 1001, ..Limits::default() };
        let e = validate("127.0.0.1:1", Shards::Auto, &small).expect_err("below one body").to_string();
        assert!(e.contains("limits.body_bytes_in_flight_max") && e.contains("1001"), "{e}");
        let exact = Limits { body_bytes_in_flight_max: 1001, body_bytes_max: 1001, ..Limits::default() };
        assert!(validate("127.0.0.1:1", Shards::Auto, &exact).is_ok());
    }

    #[test]
    fn inflight_per_shard_max_defaults_and_has_a_floor() {
        let mut l = Limits::default();
        assert_eq!(l.inflight_per_shard_max, 4096);
        assert!(validate("127.0.0.1:1", Shards::Count(1), &l).is_ok());
        l.inflight_per_shard_max = 0;
        let e = validate("127.0.0.1:1", Shards::Count(1), &l).map(|_| ()).unwrap_err().to_string();
        assert_eq!(e, "limits.inflight_per_shard_max: must be at least 1");
    }
}
