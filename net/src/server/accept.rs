//! A shard's listener: accept connections under the per-shard cap, and run each in its own
//! task, whose panic closes that connection and nothing else.

use std::cell::Cell;
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use monoio::net::{TcpListener, TcpStream};

use crate::drain::Drain;
use crate::error::ProtocolError;
use crate::http::response::Responder;
use crate::server::budget::BodyBudget;
use crate::server::connection::{serve_connection, ShardParts};
use crate::server::handler::Handler;
use crate::server::limits::ServerLimits;
use crate::server::unwind::contain;
use crate::stats::StatsRef;
use crate::stream::ClientStream;
use crate::timers::CoarseTimers;

/// Accepts connections until the shard drains, spawning one task per connection.
pub(crate) async fn accept_loop<H: Handler>(
    listener: TcpListener,
    handler: Rc<H>,
    limits: Rc<ServerLimits>,
    tls: Option<monoio_rustls::TlsAcceptor>,
    stats: Rc<StatsRef>,
    drain: Drain,
) {
    let open = Rc::new(Cell::new(0usize));
    let budget = Rc::new(BodyBudget::new(limits.body_bytes_in_flight_max, stats.clone()));
    let timers = CoarseTimers::new();
    monoio::spawn(timers.clone().sweep(CoarseTimers::tick_for(limits.idle_timeout.min(limits.write_timeout))));
    loop {
        let accepted = monoio::select! {
            r = listener.accept() => r,
            _ = drain.wait() => break,
        };
        let (tcp, _peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                monoio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        stats.connections_accepted_total.inc();
        if open.get() >= limits.connections_per_shard_max {
            stats.connections_rejected_total.inc();
            // A TLS client is mid-handshake: a plaintext 503 would reach it as a corrupt
            // record, and answering over TLS would mean running a handshake — the costliest
            // work a connection asks for — at the moment the shard is out of room. Closing
            // is what the client can read: a refused connection, to retry.
            if tls.is_none() {
                let (handler, write_timeout, timers) = (handler.clone(), limits.write_timeout, timers.clone());
                spawn_guarded(stats.clone(), async move {
                    reject_overloaded(ClientStream::plain(tcp, write_timeout, timers), &*handler).await
                });
            }
            continue;
        }
        open.set(open.get() + 1);
        stats.connections_open.set(open.get() as u64);
        let guard = OpenGuard { open: open.clone(), stats: stats.clone() };
        let (handler, limits, tls, stats_task, drain, budget, timers) = (
            handler.clone(),
            limits.clone(),
            tls.clone(),
            stats.clone(),
            drain.clone(),
            budget.clone(),
            timers.clone(),
        );
        spawn_guarded(stats.clone(), async move {
            let _guard = guard;
            let stream = match tls {
                None => ClientStream::plain(tcp, limits.write_timeout, timers.clone()),
                // Boxed: the handshake's state is large and only needed until it ends.
                Some(acceptor) => match Box::pin(handshake(tcp, acceptor, &limits, &timers, &stats_task)).await {
                    Some(stream) => stream,
                    None => return,
                },
            };
            let parts = ShardParts {
                handler: &*handler,
                limits: &limits,
                stats: &stats_task,
                drain: &drain,
                budget: &budget,
                timers: &timers,
            };
            serve_connection(stream, &parts).await;
        });
    }
    // Draining: stop accepting at once; connections finish on their own.
    drop(listener);
    while open.get() > 0 {
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs the TLS handshake within the header timeout; `None` (counted) when it fails.
async fn handshake(
    tcp: TcpStream,
    acceptor: monoio_rustls::TlsAcceptor,
    limits: &ServerLimits,
    timers: &CoarseTimers,
    stats: &StatsRef,
) -> Option<ClientStream> {
    match monoio::time::timeout(limits.header_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => Some(ClientStream::tls(s, limits.write_timeout, timers.clone())),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            stats.tls_handshake_failures_total.inc();
            None
        }
        Err(_) => {
            stats.tls_handshake_failures_total.inc();
            None
        }
    }
}

/// Spawns a connection's task so that a panic in it closes that connection (its socket is
/// dropped as the panic unwinds) and is counted and logged, instead of ending the shard.
fn spawn_guarded(stats: Rc<StatsRef>, task: impl Future<Output = ()> + 'static) {
    monoio::spawn(contain(task, move |message| {
        stats.panics_total.inc();
        tracing::error!(panic = message, "a connection task panicked; its connection was closed");
    }));
}

/// Keeps the shard's open-connection count right however a connection task ends.
struct OpenGuard {
    open: Rc<Cell<usize>>,
    stats: Rc<StatsRef>,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        let n = self.open.get().saturating_sub(1);
        self.open.set(n);
        self.stats.connections_open.set(n as u64);
    }
}

/// Answers 503 on a plain connection over the cap, without reading its request. Counted as
/// a rejected connection, not as the client's protocol error.
async fn reject_overloaded<H: Handler>(mut stream: ClientStream, handler: &H) {
    let mut out = Vec::new();
    let err = ProtocolError::Overloaded;
    let body = handler.protocol_error_body(&err);
    let mut res = Responder::new(&mut stream, &mut out, false, 1, false);
    let _ = res.send(err.status(), &[("Content-Type", b"application/json"), ("Retry-After", b"1")], &body).await;
}
