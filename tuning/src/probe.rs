//! The facts only syscalls tell: whether this process may set up io_uring rings and
//! with which flags, and its resource limits. Each probe sets up a small ring and
//! drops it at once; nothing on the host changes.

use io_uring::{opcode, IoUring, Probe};
use rustix::process::{getrlimit, Resource};

use crate::facts::{KernelVersion, Rlimit, SyscallFacts, UringFacts};

/// Entries of each probe ring: the smallest that every kernel accepts.
const PROBE_ENTRIES: u32 = 8;

/// Idle time of the probe's SQPOLL thread, ms (it lives only as long as the probe).
const PROBE_SQPOLL_IDLE_MS: u32 = 10;

/// Probes io_uring and reads the resource limits of this process. `kernel` decides
/// the facts that have no probe of their own (provided-buffer rings, 5.19).
pub fn probe_syscalls(kernel: Option<KernelVersion>) -> SyscallFacts {
    SyscallFacts {
        uring: Some(probe_uring(kernel)),
        memlock: Some(rlimit(Resource::Memlock)),
        nofile: Some(rlimit(Resource::Nofile)),
    }
}

fn rlimit(resource: Resource) -> Rlimit {
    let l = getrlimit(resource);
    Rlimit { soft: l.current, hard: l.maximum }
}

fn probe_uring(kernel: Option<KernelVersion>) -> UringFacts {
    let ring = match IoUring::new(PROBE_ENTRIES) {
        Ok(ring) => ring,
        Err(e) => return UringFacts { error: Some(format!("io_uring_setup: {e}")), ..UringFacts::default() },
    };
    let params = ring.params();
    let mut probe = Probe::new();
    let probed = ring.submitter().register_probe(&mut probe).is_ok();
    let supports = |code: u8| probed && probe.is_supported(code);
    let sqpoll = IoUring::<io_uring::squeue::Entry, io_uring::cqueue::Entry>::builder()
        .setup_sqpoll(PROBE_SQPOLL_IDLE_MS)
        .build(PROBE_ENTRIES)
        .is_ok();
    let coop_taskrun = IoUring::<io_uring::squeue::Entry, io_uring::cqueue::Entry>::builder()
        .setup_coop_taskrun()
        .setup_single_issuer()
        .build(PROBE_ENTRIES)
        .is_ok();
    let defer_taskrun = IoUring::<io_uring::squeue::Entry, io_uring::cqueue::Entry>::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(PROBE_ENTRIES)
        .is_ok();
    UringFacts {
        available: true,
        error: None,
        sqpoll,
        coop_taskrun,
        defer_taskrun,
        fast_poll: params.is_feature_fast_poll(),
        native_workers: params.is_feature_native_workers(),
        registered_buffers: supports(opcode::ReadFixed::CODE),
        provided_buffer_rings: supports(opcode::ProvideBuffers::CODE) && kernel.is_some_and(|k| k.at_least(5, 19)),
    }
}
