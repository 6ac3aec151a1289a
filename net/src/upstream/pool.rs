//! The per-shard, per-origin connection pool and the request/response exchange.

use std::{
    cell::{Cell, RefCell},
    collections::VecDeque,
    future::poll_fn,
    net::{IpAddr, SocketAddr, ToSocketAddrs},
    rc::Rc,
    sync::Arc,
    task::{Poll, Waker},
    time::{Duration, Instant},
};

use monoio::time::timeout;
use monoio_rustls::TlsConnector;
use rustls::pki_types::ServerName;

use super::{
    conn::{is_peer_closed, Conn, ADDRS_TRIED_MAX},
    head::{self, Head, INTERIM_RESPONSES_MAX},
    request,
    response::Response,
    Origin, PoolConfig, UpstreamError,
};

/// Resolved addresses of a host name are reused this long. Resolution goes through the
/// blocking system resolver (monoio has no async one), so doing it once per connect would
/// stall the shard far more often than needed.
const DNS_CACHE_TTL: Duration = Duration::from_secs(30);
/// Request buffers kept for reuse per pool; more concurrent requests allocate and free.
const SPARE_REQUEST_BUFS_MAX: usize = 16;
/// A request buffer that grew past this (a big body) is freed instead of kept.
const SPARE_REQUEST_BUF_BYTES_MAX: usize = 64 * 1024;
/// One try, plus one retry on a fresh connection when a reused one turned out stale.
const ATTEMPTS_MAX: usize = 2;

/// Counters and gauges of one pool, for metrics. Totals only grow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStats {
    /// Open connections waiting in the pool for a request.
    pub idle: usize,
    /// Connections being opened or carrying a request (their `Response` not yet finished).
    pub busy: usize,
    /// Requests queued for a connection right now.
    pub waiting: usize,
    /// Connection attempts (TCP + TLS), successful or not.
    pub connects_total: u64,
    /// Requests that started on an already-open pooled connection.
    pub reuses_total: u64,
    /// Requests retried on a fresh connection because a reused one was found closed.
    pub stale_retries_total: u64,
    /// Errors that were timeouts (connect, write, first byte, read idle).
    pub timeouts_total: u64,
    /// Every error returned by [`Pool::send`] or by reading a [`Response`] body, timeouts and
    /// pool exhaustion included.
    pub errors_total: u64,
    /// Requests refused with [`UpstreamError::PoolExhausted`].
    pub exhausted_total: u64,
}

/// Keep-alive HTTP/1.1 connections to one origin, owned by one shard.
///
/// `!Send` by design: it lives on one monoio runtime thread and needs no locks; clone it
/// freely (an `Rc` inside). The runtime must be built with `.enable_timer()`, as every I/O
/// step is bounded by a timeout.
#[derive(Clone)]
pub struct Pool {
    inner: Rc<PoolInner>,
}

/// A handed-over resource for a queued request.
enum Grant {
    /// An idle connection released by a finished response.
    Conn(Conn),
    /// Permission to open a connection (a slot freed by a closed one).
    Slot,
}

/// One queued request. Grants are handed over directly, first come first served, so a burst
/// of new requests cannot overtake the queue.
#[derive(Default)]
struct Waiter {
    grant: RefCell<Option<Grant>>,
    waker: RefCell<Option<Waker>>,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

struct State {
    /// Connection slots in use: idle + busy + being opened. Never above `connections_max`.
    open: usize,
    /// Idle connections, oldest first.
    idle: VecDeque<Idle>,
    /// Queued requests, oldest first; at most `connections_max`.
    waiters: VecDeque<Rc<Waiter>>,
    /// Cached resolution of the origin's host and when it was made.
    addrs: Vec<SocketAddr>,
    addrs_at: Option<Instant>,
    /// Request buffers kept for reuse.
    spare_bufs: Vec<Vec<u8>>,
}

#[derive(Default)]
struct Counters {
    connects: Cell<u64>,
    reuses: Cell<u64>,
    stale_retries: Cell<u64>,
    timeouts: Cell<u64>,
    errors: Cell<u64>,
    exhausted: Cell<u64>,
}

pub(crate) struct PoolInner {
    origin: Origin,
    /// Whether `origin` is safe to put in a request line and `Host` (checked once, at `new`).
    origin_ok: bool,
    authority: String,
    cfg: PoolConfig,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    state: RefCell<State>,
    counters: Counters,
}

/// Ownership of one connection slot. Dropping it frees the slot (handing it to the next
/// waiter); [`Lease::release`] instead returns a reusable connection with the slot.
pub(crate) struct Lease {
    pool: Rc<PoolInner>,
    held: bool,
}

impl Lease {
    fn new(pool: &Rc<PoolInner>) -> Lease {
        Lease { pool: Rc::clone(pool), held: true }
    }

    /// Returns a connection whose last response ended cleanly to the pool.
    pub(crate) fn release(mut self, conn: Conn) {
        self.held = false;
        self.pool.put_back(conn);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.held {
            self.pool.slot_freed();
        }
    }
}

/// Removes a queued request from the queue however its wait ends (granted, timed out, or
/// the whole `send` future dropped), passing on a grant that arrived but was not taken.
struct WaitGuard {
    pool: Rc<PoolInner>,
    waiter: Rc<Waiter>,
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        self.pool.state.borrow_mut().waiters.retain(|w| !Rc::ptr_eq(w, &self.waiter));
        let unclaimed = self.waiter.grant.borrow_mut().take();
        match unclaimed {
            Some(Grant::Conn(conn)) => self.pool.put_back(conn),
            Some(Grant::Slot) => self.pool.slot_freed(),
            None => {}
        }
    }
}

impl PoolInner {
    /// A connection came back reusable: give it to the oldest waiter, else keep it idle.
    fn put_back(&self, mut conn: Conn) {
        conn.trim_for_idle();
        let waiter = {
            let mut state = self.state.borrow_mut();
            let waiter = state.waiters.pop_front();
            if waiter.is_none() {
                state.idle.push_back(Idle { conn, since: Instant::now() });
                return;
            }
            waiter
        };
        if let Some(waiter) = waiter {
            *waiter.grant.borrow_mut() = Some(Grant::Conn(conn));
            if let Some(waker) = waiter.waker.borrow_mut().take() {
                waker.wake();
            }
        }
    }

    /// A connection closed: its slot goes to the oldest waiter, else back to the pool.
    fn slot_freed(&self) {
        let waiter = {
            let mut state = self.state.borrow_mut();
            let waiter = state.waiters.pop_front();
            if waiter.is_none() {
                debug_assert!(state.open > 0, "slot freed twice");
                state.open = state.open.saturating_sub(1);
            }
            waiter
        };
        if let Some(waiter) = waiter {
            *waiter.grant.borrow_mut() = Some(Grant::Slot);
            if let Some(waker) = waiter.waker.borrow_mut().take() {
                waker.wake();
            }
        }
    }

    /// Counts an error returned to the caller.
    pub(crate) fn count_error(&self, e: &UpstreamError) {
        bump(&self.counters.errors);
        if e.is_timeout() {
            bump(&self.counters.timeouts);
        }
        if matches!(e, UpstreamError::PoolExhausted) {
            bump(&self.counters.exhausted);
        }
    }

    pub(crate) fn read_idle_timeout(&self) -> Duration {
        Duration::from_millis(self.cfg.read_idle_timeout_ms)
    }

    fn resolve(&self) -> Result<Vec<SocketAddr>, UpstreamError> {
        if let Ok(ip) = self.origin.host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, self.origin.port)]);
        }
        {
            let state = self.state.borrow();
            if let Some(at) = state.addrs_at {
                if at.elapsed() < DNS_CACHE_TTL && !state.addrs.is_empty() {
                    return Ok(state.addrs.clone());
                }
            }
        }
        let addrs: Vec<SocketAddr> = (self.origin.host.as_str(), self.origin.port)
            .to_socket_addrs()
            .map_err(UpstreamError::Connect)?
            .take(ADDRS_TRIED_MAX)
            .collect();
        let mut state = self.state.borrow_mut();
        state.addrs.clone_from(&addrs);
        state.addrs_at = Some(Instant::now());
        Ok(addrs)
    }
}

fn bump(c: &Cell<u64>) {
    c.set(c.get().saturating_add(1));
}

/// Why one exchange failed.
enum Failure {
    /// The connection was closed by the peer before any response byte: retry on a fresh one
    /// if it was a reused connection.
    PeerClosed,
    Fatal(UpstreamError),
}

impl From<UpstreamError> for Failure {
    fn from(e: UpstreamError) -> Self {
        Failure::Fatal(e)
    }
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
        let cfg = cfg.normalized();
        let server_name = ServerName::try_from(origin.host.clone()).ok();
        let tls = match (origin.https, tls, server_name) {
            (true, Some(config), Some(name)) => Some((TlsConnector::from(config), name)),
            _ => None,
        };
        Pool {
            inner: Rc::new(PoolInner {
                authority: origin.authority(),
                origin_ok: origin.is_well_formed(),
                origin,
                tls,
                state: RefCell::new(State {
                    open: 0,
                    idle: VecDeque::with_capacity(cfg.connections_max.min(1024)),
                    waiters: VecDeque::new(),
                    addrs: Vec::new(),
                    addrs_at: None,
                    spare_bufs: Vec::new(),
                }),
                cfg,
                counters: Counters::default(),
            }),
        }
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
    /// `connections_max` exist, else queues (FIFO, at most `waiters_max` waiters) for up
    /// to `connect_timeout_ms`. A reused connection that the peer had closed (EOF or reset
    /// before any response byte) is retried once on a fresh connection.
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
        let state = self.inner.state.borrow();
        let c = &self.inner.counters;
        PoolStats {
            idle: state.idle.len(),
            busy: state.open.saturating_sub(state.idle.len()),
            waiting: state.waiters.len(),
            connects_total: c.connects.get(),
            reuses_total: c.reuses.get(),
            stale_retries_total: c.stale_retries.get(),
            timeouts_total: c.timeouts.get(),
            errors_total: c.errors.get(),
            exhausted_total: c.exhausted.get(),
        }
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
        let mut request = inner.state.borrow_mut().spare_bufs.pop().unwrap_or_default();
        request::encode(&mut request, &inner.authority, &inner.origin.path_prefix, method, path, headers, body)?;
        let (mut pooled, lease) = self.checkout().await?;
        for attempt in 0..ATTEMPTS_MAX {
            let reused = pooled.is_some();
            let mut conn = match pooled.take() {
                Some(conn) => conn,
                None => self.connect().await?,
            };
            match self.exchange(&mut conn, &mut request).await {
                Ok(head) => {
                    self.keep_request_buf(request);
                    return Response::new(head, conn, lease, Rc::clone(inner));
                }
                Err(Failure::PeerClosed) if reused && attempt + 1 < ATTEMPTS_MAX => {
                    // The peer timed out this idle connection just as we picked it; the request
                    // was not processed (no response byte), so repeating it is safe.
                    bump(&inner.counters.stale_retries);
                    tracing::debug!(origin = %inner.authority, "stale pooled connection, retrying");
                }
                Err(Failure::PeerClosed) => return Err(UpstreamError::ClosedEarly),
                Err(Failure::Fatal(e)) => return Err(e),
            }
        }
        Err(UpstreamError::ClosedEarly)
    }

    fn keep_request_buf(&self, buf: Vec<u8>) {
        let mut state = self.inner.state.borrow_mut();
        if buf.capacity() <= SPARE_REQUEST_BUF_BYTES_MAX && state.spare_bufs.len() < SPARE_REQUEST_BUFS_MAX {
            state.spare_bufs.push(buf);
        }
    }

    /// A slot plus maybe an idle connection (`None`: open one on the slot).
    async fn checkout(&self) -> Result<(Option<Conn>, Lease), UpstreamError> {
        let inner = &self.inner;
        let waiter = {
            let mut state = inner.state.borrow_mut();
            let idle_max = Duration::from_millis(inner.cfg.pool_idle_timeout_ms);
            // Oldest first: drop the expired ones (waiters never coexist with idle
            // connections, so their slots simply close).
            while let Some(oldest) = state.idle.front() {
                if oldest.since.elapsed() < idle_max {
                    break;
                }
                state.idle.pop_front();
                state.open = state.open.saturating_sub(1);
            }
            // Newest first: the most recently used connection is the least likely to have
            // been closed by the peer.
            if let Some(idle) = state.idle.pop_back() {
                drop(state);
                bump(&inner.counters.reuses);
                return Ok((Some(idle.conn), Lease::new(inner)));
            }
            if state.open < inner.cfg.connections_max {
                state.open += 1;
                return Ok((None, Lease::new(inner)));
            }
            if state.waiters.len() >= inner.cfg.waiters_max {
                return Err(UpstreamError::PoolExhausted);
            }
            let waiter = Rc::new(Waiter::default());
            state.waiters.push_back(Rc::clone(&waiter));
            waiter
        };
        let guard = WaitGuard { pool: Rc::clone(inner), waiter };
        let granted = poll_fn(|cx| match guard.waiter.grant.borrow_mut().take() {
            Some(grant) => Poll::Ready(grant),
            None => {
                *guard.waiter.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        });
        let wait = Duration::from_millis(inner.cfg.connect_timeout_ms);
        let grant = timeout(wait, granted).await.map_err(|_| UpstreamError::PoolExhausted)?;
        drop(guard);
        Ok(match grant {
            Grant::Conn(conn) => {
                bump(&inner.counters.reuses);
                (Some(conn), Lease::new(inner))
            }
            Grant::Slot => (None, Lease::new(inner)),
        })
    }

    /// Opens a connection (TCP, then TLS if configured) within `connect_timeout_ms`.
    async fn connect(&self) -> Result<Conn, UpstreamError> {
        let inner = &self.inner;
        bump(&inner.counters.connects);
        let addrs = inner.resolve()?;
        let wait = Duration::from_millis(inner.cfg.connect_timeout_ms);
        timeout(wait, Conn::connect(&addrs, inner.tls.as_ref())).await.map_err(|_| UpstreamError::ConnectTimeout)?
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
            Err(e) if is_peer_closed(&e) => return Err(Failure::PeerClosed),
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
                Ok(Ok(0)) if !any_byte => return Err(Failure::PeerClosed),
                Ok(Ok(0)) => return Err(UpstreamError::ClosedEarly.into()),
                Ok(Ok(_)) => any_byte = true,
                Ok(Err(e)) if !any_byte && is_peer_closed(&e) => return Err(Failure::PeerClosed),
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
