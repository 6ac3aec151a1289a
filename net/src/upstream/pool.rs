//! The per-shard, per-origin pool's handle and the exchange: check a connection out of the
//! `shared` state, write the request, read up to the final response head.

use std::{rc::Rc, sync::Arc, time::Duration};

use monoio::time::timeout;

use super::{
    config::PoolConfig,
    conn::{is_peer_closed, Conn},
    error::UpstreamError,
    head::{self, Head, INTERIM_RESPONSES_MAX},
    origin::Origin,
    request,
    response::Response,
    shared::{bump, PoolInner, PoolStats},
};

/// One try, plus at most one more on a fresh connection (the rule is in the module docs).
const ATTEMPTS_MAX: usize = 2;

/// Keep-alive HTTP/1.1 connections to one origin, owned by one shard.
///
/// `!Send` by design: it lives on one monoio runtime thread and needs no locks; clone it
/// freely (an `Rc` inside). The runtime must be built with `.enable_timer()`, as every I/O
/// step is bounded by a timeout.
#[derive(Clone)]
pub struct Pool {
    inner: Rc<PoolInner>,
}

/// Why one exchange failed.
enum Failure {
    /// The write failed because the peer had closed the connection: the request did not
    /// reach the upstream whole, so it cannot have been acted on.
    NotDelivered,
    /// The request was written whole, then the connection ended before any response byte:
    /// the upstream may or may not have acted on it.
    Unanswered,
    Fatal(UpstreamError),
}

impl From<UpstreamError> for Failure {
    fn from(e: UpstreamError) -> Self {
        Failure::Fatal(e)
    }
}

/// RFC 9110 §9.2.2: the methods whose repetition has the same effect as one request.
fn is_idempotent(method: &str) -> bool {
    matches!(method, "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE")
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("origin", &self.inner.origin).field("stats", &self.stats()).finish()
    }
}

impl Pool {
    /// A pool for `origin`. `tls` is required when `origin.https` (requests then fail with
    /// [`UpstreamError::TlsConfig`]); zero limits in `cfg` are raised to their minimum.
    pub fn new(origin: Origin, cfg: PoolConfig, tls: Option<Arc<rustls::ClientConfig>>) -> Pool {
        Pool { inner: Rc::new(PoolInner::new(origin, cfg.normalized(), tls)) }
    }

    /// The origin this pool connects to.
    pub fn origin(&self) -> &Origin {
        &self.inner.origin
    }

    /// Sends one request (`METHOD {path_prefix}{path} HTTP/1.1`, `Host`, `Content-Length`,
    /// `headers`, `body`) and returns once the final response head has arrived (1xx interim
    /// responses are skipped). Read the body with [`Response::chunk`] or
    /// [`Response::read_to_end`].
    ///
    /// Uses an idle connection if there is one, else opens one if fewer than
    /// `connections_max` exist, else queues (FIFO, at most `queue_max` waiters) for up
    /// to `connect_timeout_ms`. A pooled connection found closed moves the request to a
    /// fresh one only when the upstream cannot have acted on it; see "When a request is sent
    /// twice" in the [module docs](super).
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &[u8])],
        body: &[u8],
    ) -> Result<Response, UpstreamError> {
        self.send_parts(method, path, headers, &[body]).await
    }

    /// [`Pool::send`] with the body given as pieces sent back to back, so a caller that
    /// edits a body (the gateway replacing `model`) need not assemble it first: the pieces
    /// go straight into the request buffer.
    pub async fn send_parts(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &[u8])],
        body: &[&[u8]],
    ) -> Result<Response, UpstreamError> {
        let result = self.send_inner(method, path, headers, body).await;
        if let Err(e) = &result {
            self.inner.count_error(e);
        }
        result
    }

    /// A snapshot of the pool's gauges and counters.
    pub fn stats(&self) -> PoolStats {
        self.inner.stats()
    }

    async fn send_inner(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &[u8])],
        body: &[&[u8]],
    ) -> Result<Response, UpstreamError> {
        let inner = &self.inner;
        if !inner.origin_ok {
            return Err(UpstreamError::InvalidUrl("origin host or path prefix has bytes not allowed in a URL"));
        }
        if inner.origin.https && inner.tls.is_none() {
            return Err(UpstreamError::TlsConfig(
                "https origin without a TLS config or with a host that is not a valid server name".into(),
            ));
        }
        let mut request = inner.take_request_buf();
        request::encode(&mut request, &inner.authority, &inner.origin.path_prefix, method, path, headers, body)?;
        let (mut pooled, lease) = inner.checkout().await?;
        for attempt in 0..ATTEMPTS_MAX {
            let last = attempt + 1 == ATTEMPTS_MAX;
            let (mut conn, reused) = match pooled.take() {
                Some(conn) if conn.is_idle_open() => {
                    bump(&inner.counters.reuses);
                    (conn, true)
                }
                Some(closed) => {
                    // Closed (or chattering) while idle: nothing was written, so the request
                    // goes on a fresh connection on the same slot.
                    drop(closed);
                    bump(&inner.counters.stale_retries);
                    (self.connect().await?, false)
                }
                None => (self.connect().await?, false),
            };
            let failure = match self.exchange(&mut conn, &mut request).await {
                Ok(head) => {
                    inner.keep_request_buf(request);
                    return Response::new(head, conn, lease, Rc::clone(inner));
                }
                Err(failure) => failure,
            };
            match failure {
                Failure::NotDelivered if reused && !last => {}
                Failure::Unanswered if reused && !last && is_idempotent(method) => {}
                Failure::NotDelivered | Failure::Unanswered => return Err(UpstreamError::ClosedEarly),
                Failure::Fatal(e) => return Err(e),
            }
            // The peer timed this connection out just as we picked it.
            bump(&inner.counters.stale_retries);
            tracing::debug!(origin = %inner.authority, method, "pooled connection closed, sending on a fresh one");
        }
        Err(UpstreamError::ClosedEarly)
    }

    /// Resolves the origin (off the shard) and opens a connection (TCP, then TLS if
    /// configured), all within `connect_timeout_ms`.
    async fn connect(&self) -> Result<Conn, UpstreamError> {
        let inner = &self.inner;
        bump(&inner.counters.connects);
        let wait = Duration::from_millis(inner.cfg.connect_timeout_ms);
        let open = async {
            let addrs = inner.addresses.get().await?;
            Conn::connect(&addrs, inner.tls.as_ref()).await
        };
        timeout(wait, open).await.map_err(|_| UpstreamError::ConnectTimeout)?
    }

    /// Writes the request and reads up to the final response head.
    async fn exchange(&self, conn: &mut Conn, request: &mut Vec<u8>) -> Result<Head, Failure> {
        let cfg = &self.inner.cfg;
        let first_byte = Duration::from_millis(cfg.first_byte_timeout_ms);
        let buf = std::mem::take(request);
        let (written, buf) = timeout(first_byte, conn.write_all(buf)).await.map_err(|_| UpstreamError::WriteTimeout)?;
        *request = buf;
        match written {
            Ok(()) => {}
            Err(e) if is_peer_closed(&e) => return Err(Failure::NotDelivered),
            Err(e) => return Err(UpstreamError::Io(e).into()),
        }
        let mut any_byte = false;
        let mut interim = 0usize;
        // Bounded: every turn parses a head (at most INTERIM_RESPONSES_MAX + 1) or reads at
        // least one byte into a buffer capped at response_head_bytes_max by the parser.
        loop {
            if let Some(head) = head::parse(&mut conn.read_buf, cfg.response_head_bytes_max)? {
                match head.status {
                    101 => return Err(UpstreamError::Protocol("unexpected 101 Switching Protocols").into()),
                    100..=199 => {
                        interim += 1;
                        if interim > INTERIM_RESPONSES_MAX {
                            return Err(UpstreamError::Protocol("too many 1xx responses").into());
                        }
                        continue;
                    }
                    _ => return Ok(head),
                }
            }
            // Until a byte of the final head arrives, the upstream is still "thinking".
            let (wait, timeout_error) = if conn.read_buf.is_empty() {
                (first_byte, UpstreamError::FirstByteTimeout)
            } else {
                (self.inner.read_idle_timeout(), UpstreamError::ReadIdleTimeout)
            };
            match timeout(wait, conn.read_more()).await {
                Err(_) => return Err(timeout_error.into()),
                Ok(Ok(0)) if !any_byte => return Err(Failure::Unanswered),
                Ok(Ok(0)) => return Err(UpstreamError::ClosedEarly.into()),
                Ok(Ok(_)) => any_byte = true,
                Ok(Err(e)) if !any_byte && is_peer_closed(&e) => return Err(Failure::Unanswered),
                Ok(Err(e)) => return Err(UpstreamError::Io(e).into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_without_tls_config_fails_cleanly() {
        let origin = Origin::parse("https://127.0.0.1:9").unwrap();
        let pool = Pool::new(origin, PoolConfig::default(), None);
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build().unwrap();
        let err = rt.block_on(pool.send("GET", "/", &[], b"")).err().unwrap();
        assert!(matches!(err, UpstreamError::TlsConfig(_)));
        assert_eq!(pool.stats().errors_total, 1);
        assert_eq!(pool.stats().busy, 0);
    }
}
