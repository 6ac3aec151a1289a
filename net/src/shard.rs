//! Shards: one pinned thread per core, each with its own monoio runtime, its own
//! `SO_REUSEPORT` listener and its own application state. Nothing on the request
//! path is shared between shards; they meet only in single-writer statistics and
//! the process-wide shutdown flag.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::drain::Drain;
use crate::driver::{self, Driver, DriverChoice, UringSettings};
use crate::error::StartError;
use crate::server::accept::accept_loop;
use crate::server::handler::Handler;
use crate::server::limits::ServerLimits;
use crate::stats::{ShardStats, StatsRef};

/// What the application learns about the shard it is built on.
#[derive(Debug, Clone)]
pub struct ShardContext {
    /// 0-based shard index.
    pub index: usize,
    /// The driver this shard runs.
    pub driver: Driver,
    /// Statistics of every shard, for `/metrics`.
    pub stats: Arc<[ShardStats]>,
}

/// How to start the shards.
#[derive(Clone)]
pub struct ShardSetConfig {
    /// Number of shards (threads).
    pub shards: usize,
    /// I/O driver.
    pub driver: DriverChoice,
    /// Address every shard listens on.
    pub listen: SocketAddr,
    /// Pin shard `i` to the `i`-th core this process may use (ignored when `cpus` is set).
    pub pin: bool,
    /// Shard `i` runs on CPU `cpus[i]`, which must hold one CPU per shard; a CPU that
    /// cannot be taken fails the start ([`StartError::Pin`]). `None`: see `pin`.
    pub cpus: Option<Vec<usize>>,
    /// Each shard's io_uring ring.
    pub uring: UringSettings,
    /// TLS termination, if any.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Connection limits.
    pub limits: ServerLimits,
    /// After shutdown is asked for, how long open connections may take to finish.
    pub drain_timeout: Duration,
    /// Listen backlog per shard.
    pub backlog: u32,
}

/// Running shards.
pub struct ShardSet {
    local_addr: SocketAddr,
    stats: Arc<[ShardStats]>,
    shutdown: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// Asks running shards to stop; cheap to clone and send to a signal thread.
#[derive(Clone, Debug)]
pub struct ShutdownHandle(Arc<AtomicBool>);

impl ShutdownHandle {
    /// Stop accepting, let in-flight requests finish (up to the drain timeout), exit.
    pub fn shutdown(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl ShardSet {
    /// Binds the listeners and starts the shards; returns once every shard runs.
    ///
    /// `make_handler` runs on each shard's thread, inside its runtime, so the
    /// application state it builds (pools, caches) never crosses threads.
    pub fn start<F, H>(cfg: ShardSetConfig, make_handler: F) -> Result<ShardSet, StartError>
    where
        F: Fn(&ShardContext) -> H + Send + Sync + 'static,
        H: Handler,
    {
        assert!(cfg.shards >= 1, "at least one shard");
        if cfg.driver == DriverChoice::Uring && !monoio::utils::detect_uring() {
            return Err(StartError::UringUnavailable("io_uring_setup failed or is filtered".into()));
        }
        let listeners = bind_listeners(cfg.listen, cfg.shards, cfg.backlog, cfg.limits.write_timeout)?;
        let local_addr = listeners[0].local_addr().map_err(|source| StartError::Bind { addr: cfg.listen, source })?;
        let stats: Arc<[ShardStats]> = (0..cfg.shards).map(|_| ShardStats::default()).collect();
        let shutdown = Arc::new(AtomicBool::new(false));
        if let Some(cpus) = &cfg.cpus {
            assert_eq!(cpus.len(), cfg.shards, "one CPU per shard");
        }
        let cores = if cfg.pin { core_affinity::get_core_ids().unwrap_or_default() } else { Vec::new() };
        let make_handler = Arc::new(make_handler);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), StartError>>();
        let mut threads = Vec::with_capacity(cfg.shards);
        for (index, listener) in listeners.into_iter().enumerate() {
            let explicit = cfg.cpus.as_ref().and_then(|c| c.get(index)).map(|&id| core_affinity::CoreId { id });
            let core = explicit.or_else(|| (!cores.is_empty()).then(|| cores[index % cores.len()]));
            let (cfg, stats, shutdown, make_handler, ready_tx) =
                (cfg.clone(), stats.clone(), shutdown.clone(), make_handler.clone(), ready_tx.clone());
            let thread = std::thread::Builder::new()
                .name(format!("gk-shard-{index}"))
                .spawn(move || {
                    if let Some(core) = core {
                        if !core_affinity::set_for_current(core) {
                            // A CPU the config named must be taken; an automatic pick may miss.
                            if explicit.is_some() {
                                let _ = ready_tx.send(Err(StartError::Pin { shard: index, cpu: core.id }));
                                return;
                            }
                            tracing::warn!(shard = index, "could not pin shard to core {}", core.id);
                        }
                    }
                    let shard = ShardMain { index, cfg, stats, shutdown, listener, ready_tx };
                    shard.run(&*make_handler);
                })
                .map_err(|source| StartError::Runtime { shard: index, source })?;
            threads.push(thread);
        }
        drop(ready_tx);
        let set = ShardSet { local_addr, stats, shutdown, threads };
        for _ in 0..cfg.shards {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    set.shutdown_handle().shutdown();
                    return Err(e);
                }
                Err(_) => {
                    set.shutdown_handle().shutdown();
                    return Err(StartError::Runtime { shard: 0, source: std::io::Error::other("shard thread died") });
                }
            }
        }
        Ok(set)
    }

    /// The address the shards listen on (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Statistics of every shard.
    pub fn stats(&self) -> Arc<[ShardStats]> {
        self.stats.clone()
    }

    /// A handle that stops the shards from any thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.shutdown.clone())
    }

    /// Waits until every shard has stopped.
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

struct ShardMain {
    index: usize,
    cfg: ShardSetConfig,
    stats: Arc<[ShardStats]>,
    shutdown: Arc<AtomicBool>,
    listener: std::net::TcpListener,
    ready_tx: std::sync::mpsc::Sender<Result<(), StartError>>,
}

/// How often a shard looks at the process-wide shutdown flag.
const SHUTDOWN_POLL: Duration = Duration::from_millis(20);

impl ShardMain {
    /// Runs the shard until it drains.
    ///
    /// A panic that escapes the shard's own loop (connection tasks contain theirs) would
    /// leave its listener open with nobody accepting, so connections the kernel hands it
    /// hang: once the shard has started, that aborts the process instead, for a supervisor
    /// to restart whole. A panic while starting fails the start.
    fn run<F, H>(self, make_handler: &F)
    where
        F: Fn(&ShardContext) -> H,
        H: Handler,
    {
        let (index, ready_tx) = (self.index, self.ready_tx.clone());
        let started = std::cell::Cell::new(false);
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            driver::block_on(self.cfg.driver, self.cfg.uring, |driver| self.serve(driver, make_handler, &started))
        }));
        match ran {
            Ok(Ok(())) => {}
            Ok(Err(source)) => {
                let _ = ready_tx.send(Err(StartError::Runtime { shard: index, source }));
            }
            Err(_) if started.get() => {
                tracing::error!(shard = index, "shard loop panicked; aborting rather than keep a dead listener");
                std::process::abort();
            }
            Err(_) => {
                let source = std::io::Error::other("the shard panicked while starting");
                let _ = ready_tx.send(Err(StartError::Runtime { shard: index, source }));
            }
        }
    }

    async fn serve<F, H>(self, driver: Driver, make_handler: &F, started: &std::cell::Cell<bool>)
    where
        F: Fn(&ShardContext) -> H,
        H: Handler,
    {
        let stats = &self.stats[self.index];
        stats.set_driver(driver);
        let listener = match monoio::net::TcpListener::from_std(self.listener) {
            Ok(l) => l,
            Err(e) => {
                let _ = self.ready_tx.send(Err(StartError::Runtime { shard: self.index, source: e }));
                return;
            }
        };
        let ctx = ShardContext { index: self.index, driver, stats: self.stats.clone() };
        let handler = Rc::new(make_handler(&ctx));
        tracing::info!(shard = self.index, driver = driver.name(), "shard started");
        started.set(true);
        let _ = self.ready_tx.send(Ok(()));
        drop(self.ready_tx);

        let drain = Drain::default();
        let shutdown = self.shutdown.clone();
        let drain_watch = drain.clone();
        monoio::spawn(async move {
            while !shutdown.load(Ordering::SeqCst) {
                monoio::time::sleep(SHUTDOWN_POLL).await;
            }
            drain_watch.start();
        });
        let tls = self.cfg.tls.clone().map(monoio_rustls::TlsAcceptor::from);
        let stats_ref = Rc::new(StatsRef::new(self.stats.clone(), self.index));
        let accept = accept_loop(listener, handler, Rc::new(self.cfg.limits.clone()), tls, stats_ref, drain.clone());
        let drain_timeout = self.cfg.drain_timeout;
        monoio::select! {
            _ = accept => {},
            _ = async {
                drain.wait().await;
                monoio::time::sleep(drain_timeout).await;
            } => {
                tracing::warn!(shard = self.index, "drain timeout reached; closing remaining connections");
            },
        }
        tracing::info!(shard = self.index, "shard stopped");
    }
}

/// Raises this process's open-file soft limit to its hard limit, so a shard can hold
/// as many connections as `connections_per_shard_max` allows; returns the new soft limit
/// (`u64::MAX` for unlimited).
pub fn raise_fd_limit() -> std::io::Result<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    // `None` is RLIM_INFINITY, the largest value either limit can take.
    let (current, maximum) = (lim.current.unwrap_or(u64::MAX), lim.maximum.unwrap_or(u64::MAX));
    if current < maximum {
        setrlimit(Resource::Nofile, Rlimit { current: lim.maximum, maximum: lim.maximum })?;
        return Ok(maximum);
    }
    Ok(current)
}

fn bind_listeners(
    addr: SocketAddr,
    n: usize,
    backlog: u32,
    write_timeout: Duration,
) -> Result<Vec<std::net::TcpListener>, StartError> {
    let mut out = Vec::with_capacity(n);
    let mut addr = addr;
    for _ in 0..n {
        let l = bind_one(addr, backlog, write_timeout).map_err(|source| StartError::Bind { addr, source })?;
        // Port 0: every later shard binds the port the first one got.
        addr = l.local_addr().map_err(|source| StartError::Bind { addr, source })?;
        out.push(l);
    }
    Ok(out)
}

fn bind_one(addr: SocketAddr, backlog: u32, write_timeout: Duration) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    // Inherited by every accepted socket: the kernel drops a connection whose sent data
    // stays unacknowledged (zero-window probes included) this long, matching what the
    // server's own write deadline does for a peer that acknowledges but stops reading.
    socket.set_tcp_user_timeout(Some(write_timeout))?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog.min(i32::MAX as u32) as i32)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rustix::process::{getrlimit, Resource};

    use super::{bind_one, raise_fd_limit};

    #[test]
    fn accepted_sockets_inherit_the_write_timeout_as_tcp_user_timeout() {
        let listener = bind_one("127.0.0.1:0".parse().expect("addr"), 8, Duration::from_millis(1234)).expect("bind");
        listener.set_nonblocking(false).expect("blocking");
        let _client = std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (accepted, _) = listener.accept().expect("accept");
        let got = socket2::SockRef::from(&accepted).tcp_user_timeout().expect("getsockopt");
        assert_eq!(got, Some(Duration::from_millis(1234)));
    }

    #[test]
    fn fd_limit_is_raised_to_the_hard_limit() {
        let before = getrlimit(Resource::Nofile);
        match raise_fd_limit() {
            Ok(raised) => {
                let after = getrlimit(Resource::Nofile);
                assert_eq!(raised, before.maximum.unwrap_or(u64::MAX), "soft limit raised to the hard one");
                assert_eq!(after.current.unwrap_or(u64::MAX), raised);
                assert_eq!(after.maximum, before.maximum, "the hard limit is left alone");
            }
            // Linux refuses an unlimited soft limit for open files (it is capped by nr_open).
            Err(e) => assert!(before.maximum.is_none(), "{e}"),
        }
    }
}
