//! The limits a shard enforces on its client connections.

use std::time::Duration;

/// Limits on client connections, one field per `limits.*` config key (timeouts as
/// [`Duration`]s where the key says `*_timeout_ms`); see `Limits` in the `gatekeeper` crate
/// for defaults.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// Largest request head (request line + headers), bytes. Exceeded: 431 and close.
    pub header_bytes_max: usize,
    /// Most header fields in one request. Exceeded: 431 and close.
    pub header_count_max: usize,
    /// Largest request body after de-chunking, bytes. Exceeded: 413 and close.
    pub body_bytes_max: usize,
    /// Request body bytes one shard holds at once, over all its connections: the declared
    /// length of each body being read (or, when chunked, the buffer it has grown to), and
    /// each body whose request is being answered. Exceeded: 503 with `Retry-After: 1`, and
    /// close.
    pub body_bytes_in_flight_max: usize,
    /// From the first byte of a request to the end of its head. Exceeded: 408 and close.
    pub header_timeout: Duration,
    /// From the end of the head to the end of the body. Exceeded: 408 and close.
    pub body_timeout: Duration,
    /// Longest silence between two requests on a keep-alive connection. Exceeded: closed
    /// without an answer.
    pub idle_timeout: Duration,
    /// Longest a write to a client may make no progress (the client stopped reading).
    /// Exceeded: the connection closes; a streamed answer ends as "client gone", which
    /// releases the upstream connection feeding it. Also the listener's `TCP_USER_TIMEOUT`,
    /// so the kernel gives up on a peer that stopped acknowledging as soon.
    pub write_timeout: Duration,
    /// Open client connections per shard. Exceeded: 503 and close on a plain listener; on a
    /// TLS listener the connection is closed before any handshake.
    pub connections_per_shard_max: usize,
    /// Requests parsed ahead of the one being answered on one connection (pipelining).
    /// Exceeded: the connection stops taking requests off its buffer, and so stops reading
    /// the socket, until answers drain; the client's later requests wait in its socket.
    /// 0 parses nothing ahead.
    pub pipeline_depth_max: usize,
}
