//! I/O drivers: which one a shard asks for, which one it gets, and building its runtime.

use std::future::Future;

/// Which I/O driver shards run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverChoice {
    /// io_uring where the kernel offers it, epoll otherwise (monoio's FusionDriver).
    Auto,
    /// io_uring; start fails without it.
    Uring,
    /// epoll.
    Epoll,
}

/// The driver a shard actually runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// io_uring.
    Uring,
    /// epoll (monoio's legacy driver).
    Epoll,
}

impl Driver {
    /// `uring` or `epoll`, for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Driver::Uring => "uring",
            Driver::Epoll => "epoll",
        }
    }
}

/// How a shard's io_uring ring is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UringSettings {
    /// Submission queue entries (the kernel rounds up to a power of two; at most 32768).
    pub entries: u32,
    /// A kernel thread polls the submission queue (SQPOLL) and sleeps after this many
    /// idle ms; `None`: the shard submits with a syscall.
    pub sqpoll_idle_ms: Option<u32>,
}

impl Default for UringSettings {
    fn default() -> Self {
        UringSettings { entries: URING_ENTRIES_DEFAULT, sqpoll_idle_ms: None }
    }
}

/// io_uring submission queue entries per shard unless configured.
pub const URING_ENTRIES_DEFAULT: u32 = 4096;

/// Ring settings for a shard. With `tuned`, completions are handled cooperatively when
/// the shard next enters the kernel instead of by interrupting it (COOP_TASKRUN), and
/// the kernel is told only this thread submits (SINGLE_ISSUER); kernels older than 6.0
/// refuse these, and the caller retries without them. The kernel refuses COOP_TASKRUN
/// beside SQPOLL (the poller thread is never interrupted anyway), so an SQPOLL ring asks
/// only for SINGLE_ISSUER.
fn uring_builder(settings: UringSettings, tuned: bool) -> io_uring::Builder {
    let mut b = io_uring::IoUring::builder();
    match (settings.sqpoll_idle_ms, tuned) {
        (Some(idle_ms), true) => b.setup_sqpoll(idle_ms).setup_single_issuer(),
        (Some(idle_ms), false) => b.setup_sqpoll(idle_ms),
        (None, true) => b.setup_coop_taskrun().setup_single_issuer(),
        (None, false) => &mut b,
    };
    b
}

/// Builds the runtime `choice` asks for on the calling thread (timer enabled) and runs
/// `serve(driver)` on it to the end; `Err` when the runtime cannot be built.
pub(crate) fn block_on<F, Fut>(choice: DriverChoice, uring: UringSettings, serve: F) -> std::io::Result<Fut::Output>
where
    F: FnOnce(Driver) -> Fut,
    Fut: Future,
{
    match choice {
        DriverChoice::Auto => {
            let build = |tuned: bool| {
                monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
                    .with_entries(uring.entries)
                    .uring_builder(uring_builder(uring, tuned))
                    .enable_timer()
                    .build()
            };
            Ok(match build(true).or_else(|_| build(false))? {
                monoio::FusionRuntime::Uring(mut rt) => rt.block_on(serve(Driver::Uring)),
                monoio::FusionRuntime::Legacy(mut rt) => rt.block_on(serve(Driver::Epoll)),
            })
        }
        DriverChoice::Uring => {
            let build = |tuned: bool| {
                monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                    .with_entries(uring.entries)
                    .uring_builder(uring_builder(uring, tuned))
                    .enable_timer()
                    .build()
            };
            let mut rt = build(true).or_else(|_| build(false))?;
            Ok(rt.block_on(serve(Driver::Uring)))
        }
        DriverChoice::Epoll => {
            let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build()?;
            Ok(rt.block_on(serve(Driver::Epoll)))
        }
    }
}
