//! The state one pool's handle, its leases and its responses share: connection slots, the
//! idle list, the FIFO of waiting requests, the origin's addresses and the counters.
//!
//! [`Pool`](super::Pool) checks a slot out here before each exchange; the
//! [`Response`](super::Response) it returns carries the slot as a [`Lease`] and hands the
//! connection back here when its body ends. Both sit above this module, so neither needs
//! the other to return a connection.

use std::{
    cell::{Cell, RefCell},
    collections::VecDeque,
    future::poll_fn,
    rc::Rc,
    sync::Arc,
    task::{Poll, Waker},
    time::{Duration, Instant},
};

use monoio::time::timeout;
use monoio_rustls::TlsConnector;
use rustls::pki_types::ServerName;

use super::{config::PoolConfig, conn::Conn, error::UpstreamError, origin::Origin, resolve::Addresses};

/// Request buffers kept for reuse per pool; more concurrent requests allocate and free.
const SPARE_REQUEST_BUFS_MAX: usize = 16;
/// A request buffer that grew past this (a big body) is freed instead of kept.
const SPARE_REQUEST_BUF_BYTES_MAX: usize = 64 * 1024;

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
    /// Requests moved to a fresh connection because the pooled one they were given was found
    /// closed before the request could have reached the upstream (see "When a request is sent
    /// twice" in the [module docs](super)).
    pub stale_retries_total: u64,
    /// Errors that were timeouts (connect, write, first byte, read idle).
    pub timeouts_total: u64,
    /// Every error returned by [`Pool::send`](super::Pool::send) or by reading a
    /// [`Response`](super::Response) body, timeouts and pool exhaustion included.
    pub errors_total: u64,
    /// Requests refused with [`UpstreamError::PoolExhausted`].
    pub exhausted_total: u64,
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
    /// Queued requests, oldest first; at most `queue_max`.
    waiters: VecDeque<Rc<Waiter>>,
    /// Request buffers kept for reuse.
    spare_bufs: Vec<Vec<u8>>,
}

/// Event counts behind [`PoolStats`]; bumped with [`bump`].
#[derive(Default)]
pub(super) struct Counters {
    pub(super) connects: Cell<u64>,
    pub(super) reuses: Cell<u64>,
    pub(super) stale_retries: Cell<u64>,
    pub(super) timeouts: Cell<u64>,
    pub(super) errors: Cell<u64>,
    pub(super) exhausted: Cell<u64>,
}

/// Adds one to a counter, saturating.
pub(super) fn bump(c: &Cell<u64>) {
    c.set(c.get().saturating_add(1));
}

/// Everything one pool owns, behind the `Rc` its clones, leases and responses share.
pub(crate) struct PoolInner {
    pub(super) origin: Origin,
    /// Whether `origin` is safe to put in a request line and `Host` (checked once, at `new`).
    pub(super) origin_ok: bool,
    pub(super) authority: String,
    pub(super) cfg: PoolConfig,
    pub(super) tls: Option<(TlsConnector, ServerName<'static>)>,
    /// The origin's addresses, resolved off the shard.
    pub(super) addresses: Addresses,
    state: RefCell<State>,
    pub(super) counters: Counters,
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
    /// The state of a new pool for `origin`, with `cfg` already normalized. TLS is set up
    /// only for an `https` origin given a client config and a host that is a valid server
    /// name; requests check for its absence.
    pub(super) fn new(origin: Origin, cfg: PoolConfig, tls: Option<Arc<rustls::ClientConfig>>) -> PoolInner {
        let server_name = ServerName::try_from(origin.host.clone()).ok();
        let tls = match (origin.https, tls, server_name) {
            (true, Some(config), Some(name)) => Some((TlsConnector::from(config), name)),
            _ => None,
        };
        PoolInner {
            authority: origin.authority(),
            addresses: Addresses::new(&origin.host, origin.port),
            origin_ok: origin.is_well_formed(),
            origin,
            tls,
            state: RefCell::new(State {
                open: 0,
                idle: VecDeque::with_capacity(cfg.connections_max.min(1024)),
                waiters: VecDeque::new(),
                spare_bufs: Vec::new(),
            }),
            cfg,
            counters: Counters::default(),
        }
    }

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

    /// A snapshot of the gauges and counters.
    pub(super) fn stats(&self) -> PoolStats {
        let state = self.state.borrow();
        let c = &self.counters;
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

    /// A request buffer to encode into: a kept one if there is one.
    pub(super) fn take_request_buf(&self) -> Vec<u8> {
        self.state.borrow_mut().spare_bufs.pop().unwrap_or_default()
    }

    /// Keeps a request buffer for the next request, unless enough are kept or it grew big.
    pub(super) fn keep_request_buf(&self, buf: Vec<u8>) {
        let mut state = self.state.borrow_mut();
        if buf.capacity() <= SPARE_REQUEST_BUF_BYTES_MAX && state.spare_bufs.len() < SPARE_REQUEST_BUFS_MAX {
            state.spare_bufs.push(buf);
        }
    }

    /// A slot plus maybe an idle connection (`None`: open one on the slot). The caller checks
    /// an idle connection with [`Conn::is_idle_open`] and counts it as reused if it is.
    pub(super) async fn checkout(self: &Rc<Self>) -> Result<(Option<Conn>, Lease), UpstreamError> {
        let waiter = {
            let mut state = self.state.borrow_mut();
            let idle_max = Duration::from_millis(self.cfg.pool_idle_timeout_ms);
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
                return Ok((Some(idle.conn), Lease::new(self)));
            }
            if state.open < self.cfg.connections_max {
                state.open += 1;
                return Ok((None, Lease::new(self)));
            }
            if state.waiters.len() >= self.cfg.queue_max {
                return Err(UpstreamError::PoolExhausted);
            }
            let waiter = Rc::new(Waiter::default());
            state.waiters.push_back(Rc::clone(&waiter));
            waiter
        };
        let guard = WaitGuard { pool: Rc::clone(self), waiter };
        let granted = poll_fn(|cx| match guard.waiter.grant.borrow_mut().take() {
            Some(grant) => Poll::Ready(grant),
            None => {
                *guard.waiter.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        });
        let wait = Duration::from_millis(self.cfg.connect_timeout_ms);
        let grant = timeout(wait, granted).await.map_err(|_| UpstreamError::PoolExhausted)?;
        drop(guard);
        Ok(match grant {
            Grant::Conn(conn) => (Some(conn), Lease::new(self)),
            Grant::Slot => (None, Lease::new(self)),
        })
    }
}
