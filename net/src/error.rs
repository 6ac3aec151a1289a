//! Errors of the client-facing HTTP/1.1 server.
//!
//! A [`ProtocolError`] is something a client did wrong, or too slowly, before a
//! request could be handed to the application. Each variant names the limit or rule
//! it broke; [`ProtocolError::status`] is the one place that decides the HTTP status.

/// A client broke the protocol or one of the server's limits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The request head grew past `header_bytes_max` before its end was seen.
    #[error("request head exceeds {limit_bytes} bytes")]
    HeadTooLarge {
        /// The configured limit.
        limit_bytes: usize,
    },
    /// The request carried more than `header_count_max` header fields.
    #[error("request has more than {limit} header fields")]
    TooManyHeaders {
        /// The configured limit.
        limit: usize,
    },
    /// The head is not valid HTTP/1.x.
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    /// The body (declared or de-chunked) is larger than `body_bytes_max`.
    #[error("request body exceeds {limit_bytes} bytes")]
    BodyTooLarge {
        /// The configured limit.
        limit_bytes: usize,
    },
    /// A `Transfer-Encoding` other than `chunked`.
    #[error("unsupported transfer encoding")]
    UnsupportedTransferEncoding,
    /// The head did not arrive within `header_timeout_ms`.
    #[error("request head not received within {limit_ms} ms")]
    HeaderTimeout {
        /// The configured limit.
        limit_ms: u64,
    },
    /// The body did not arrive within `body_timeout_ms`.
    #[error("request body not received within {limit_ms} ms")]
    BodyTimeout {
        /// The configured limit.
        limit_ms: u64,
    },
    /// The connection ended in the middle of a request.
    #[error("connection closed mid-request")]
    Truncated,
    /// The shard already holds `connections_per_shard_max` connections.
    #[error("too many connections")]
    Overloaded,
    /// Taking this request's body would put the shard over `body_bytes_in_flight_max`.
    #[error("too many request body bytes in flight on this shard (limit {limit_bytes} bytes); retry shortly")]
    BodiesInFlight {
        /// The configured limit.
        limit_bytes: usize,
    },
    /// An `Expect` header asked for something other than `100-continue`.
    #[error("unsupported expectation; only 100-continue is known")]
    ExpectationFailed,
}

impl ProtocolError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> u16 {
        match self {
            ProtocolError::HeadTooLarge { .. } | ProtocolError::TooManyHeaders { .. } => 431,
            ProtocolError::Malformed(_) | ProtocolError::Truncated => 400,
            ProtocolError::BodyTooLarge { .. } => 413,
            ProtocolError::UnsupportedTransferEncoding => 501,
            ProtocolError::HeaderTimeout { .. } | ProtocolError::BodyTimeout { .. } => 408,
            ProtocolError::Overloaded | ProtocolError::BodiesInFlight { .. } => 503,
            ProtocolError::ExpectationFailed => 417,
        }
    }

    /// Seconds the client should wait before retrying, sent as `Retry-After`; `None` where
    /// retrying the same request cannot help.
    pub fn retry_after_s(&self) -> Option<u32> {
        match self {
            ProtocolError::Overloaded | ProtocolError::BodiesInFlight { .. } => Some(1),
            _ => None,
        }
    }

    /// A short machine-readable code, used as the OpenAI error `code` and a metric label.
    pub fn code(&self) -> &'static str {
        match self {
            ProtocolError::HeadTooLarge { .. } => "header_too_large",
            ProtocolError::TooManyHeaders { .. } => "too_many_headers",
            ProtocolError::Malformed(_) => "malformed_request",
            ProtocolError::BodyTooLarge { .. } => "body_too_large",
            ProtocolError::UnsupportedTransferEncoding => "unsupported_transfer_encoding",
            ProtocolError::HeaderTimeout { .. } => "header_timeout",
            ProtocolError::BodyTimeout { .. } => "body_timeout",
            ProtocolError::Truncated => "truncated_request",
            ProtocolError::Overloaded | ProtocolError::BodiesInFlight { .. } => "overloaded",
            ProtocolError::ExpectationFailed => "expectation_failed",
        }
    }
}

/// Why a shard set could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// Binding the listen address failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// io_uring was demanded but the kernel (or a seccomp filter) refuses it.
    #[error("io_uring is not available on this host: {0}")]
    UringUnavailable(String),
    /// A runtime or thread could not be created.
    #[error("cannot start shard {shard}: {source}")]
    Runtime {
        /// The shard index.
        shard: usize,
        /// What failed.
        source: std::io::Error,
    },
    /// The TLS certificate or key could not be loaded.
    #[error("TLS: {0}")]
    Tls(String),
    /// A shard could not be pinned to the CPU it was given (`cpus`): the CPU is offline
    /// or outside the cpuset this process runs in.
    #[error("cannot pin shard {shard} to CPU {cpu}: offline, or outside this process's cpuset")]
    Pin {
        /// The shard index.
        shard: usize,
        /// The CPU asked for.
        cpu: usize,
    },
}
