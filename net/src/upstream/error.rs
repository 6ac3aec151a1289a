//! The one error type of the upstream client.

use std::io;

/// Everything that can go wrong talking to an upstream provider.
///
/// Each variant names the phase or the limit that failed, so failover code decides from data
/// (see [`UpstreamError::is_timeout`], [`UpstreamError::kind_label`]) rather than from strings.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The base URL given to [`Origin::parse`](super::Origin::parse) is not usable.
    #[error("invalid upstream URL: {0}")]
    InvalidUrl(&'static str),
    /// The request given to [`Pool::send`](super::Pool::send) cannot be written safely
    /// (bad method, path or header bytes, or a header the client sets itself).
    #[error("invalid upstream request: {0}")]
    InvalidRequest(&'static str),
    /// The origin's host name did not resolve (no such name, no address, resolver error or
    /// its queue full); `host: why`. Remembered for a few seconds, so repeats fail at once.
    #[error("cannot resolve upstream host {0}")]
    Resolve(String),
    /// The TCP connect failed.
    #[error("connect to upstream failed: {0}")]
    Connect(#[source] io::Error),
    /// Name resolution, TCP connect and TLS handshake together took longer than
    /// `connect_timeout_ms`.
    #[error("connect to upstream timed out")]
    ConnectTimeout,
    /// The TLS handshake failed (certificate, protocol, alert).
    #[error("TLS with upstream failed: {0}")]
    Tls(#[source] rustls::Error),
    /// TLS configuration could not be built (bad CA file, no usable protocol versions).
    #[error("TLS configuration: {0}")]
    TlsConfig(String),
    /// Writing the request took longer than `first_byte_timeout_ms`.
    #[error("writing the request to upstream timed out")]
    WriteTimeout,
    /// No response byte arrived within `first_byte_timeout_ms` after the request was written.
    #[error("upstream sent no response within the first-byte timeout")]
    FirstByteTimeout,
    /// The response stalled: no byte for `read_idle_timeout_ms` after the first one.
    #[error("upstream response stalled past the read-idle timeout")]
    ReadIdleTimeout,
    /// A socket read or write failed mid-exchange.
    #[error("upstream I/O error: {0}")]
    Io(#[source] io::Error),
    /// The upstream sent bytes that are not valid HTTP/1.1 (or exceed a parsing limit).
    #[error("upstream protocol error: {0}")]
    Protocol(&'static str),
    /// All `connections_max` connections were busy and none freed up within
    /// `connect_timeout_ms`, or the waiter queue was already full.
    #[error("upstream connection pool exhausted")]
    PoolExhausted,
    /// The upstream closed the connection before the response was complete. That includes a
    /// close after the whole request was written and before any response byte: the upstream
    /// may have acted on the request, so it is not sent again (see "When a request is sent
    /// twice" in the module docs).
    #[error("upstream closed the connection early")]
    ClosedEarly,
    /// The body exceeded the limit given to [`Response::read_to_end`](super::Response::read_to_end).
    #[error("upstream response body exceeds {0} bytes")]
    BodyTooLarge(usize),
}

impl UpstreamError {
    /// True for every timeout variant (connect, write, first byte, read idle).
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::ConnectTimeout | Self::WriteTimeout | Self::FirstByteTimeout | Self::ReadIdleTimeout)
    }

    /// True when the failure happened before any response byte was seen and no request byte can
    /// have been processed by the upstream in a way we observed, so trying another provider is
    /// safe: name resolution, connect, TLS, pool exhaustion.
    pub fn is_connect_phase(&self) -> bool {
        matches!(self, Self::Resolve(_) | Self::Connect(_) | Self::ConnectTimeout | Self::Tls(_) | Self::PoolExhausted)
    }

    /// A short, stable label for metrics (`upstream_errors_total{kind="…"}`).
    pub fn kind_label(&self) -> &'static str {
        match self {
            Self::InvalidUrl(_) => "invalid_url",
            Self::InvalidRequest(_) => "invalid_request",
            Self::Resolve(_) => "resolve",
            Self::Connect(_) => "connect",
            Self::ConnectTimeout => "connect_timeout",
            Self::Tls(_) => "tls",
            Self::TlsConfig(_) => "tls_config",
            Self::WriteTimeout => "write_timeout",
            Self::FirstByteTimeout => "first_byte_timeout",
            Self::ReadIdleTimeout => "read_idle_timeout",
            Self::Io(_) => "io",
            Self::Protocol(_) => "protocol",
            Self::PoolExhausted => "pool_exhausted",
            Self::ClosedEarly => "closed_early",
            Self::BodyTooLarge(_) => "body_too_large",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_timeouts_and_labels_are_distinct() {
        let all = [
            UpstreamError::InvalidUrl("x"),
            UpstreamError::InvalidRequest("x"),
            UpstreamError::Resolve("x".into()),
            UpstreamError::Connect(io::Error::other("x")),
            UpstreamError::ConnectTimeout,
            UpstreamError::Tls(rustls::Error::DecryptError),
            UpstreamError::TlsConfig("x".into()),
            UpstreamError::WriteTimeout,
            UpstreamError::FirstByteTimeout,
            UpstreamError::ReadIdleTimeout,
            UpstreamError::Io(io::Error::other("x")),
            UpstreamError::Protocol("x"),
            UpstreamError::PoolExhausted,
            UpstreamError::ClosedEarly,
            UpstreamError::BodyTooLarge(1),
        ];
        let timeouts = all.iter().filter(|e| e.is_timeout()).count();
        assert_eq!(timeouts, 4);
        let mut labels: Vec<_> = all.iter().map(|e| e.kind_label()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), all.len());
    }
}
