//! Host inspection and per-core configuration advice for Gatekeeper; the library
//! behind `gatekeeper tune`.
//!
//! Three steps, each handing its result to the next:
//!
//! 1. [`read_host`] reads [`HostFacts`] from a root directory (`/` on a live host, a
//!    recorded tree in tests): CPUs and their topology, NUMA nodes, isolated CPUs,
//!    cgroup quota and cpuset, NICs with their queues, IRQ affinity and RPS/XPS,
//!    socket sysctls, governor, transparent hugepages, kernel version, memory.
//!    [`probe_syscalls`] adds what only syscalls tell (io_uring setup flags and
//!    opcodes, `RLIMIT_MEMLOCK`, `RLIMIT_NOFILE`). Anything missing is unknown, never
//!    an error; [`inspect`] does both for this host.
//! 2. [`advise`] is pure: facts in, [`Advice`] out — shard count and CPUs, where the
//!    bridge thread and nats-server run, io_uring settings, limits that fit memory,
//!    IRQ/RPS placement and sysctls, each [`Line`] with the fact behind it and the
//!    effect to expect.
//! 3. [`Advice::render_text`] is the report, [`Advice::config_yaml`] the
//!    `gatekeeper.yaml` fragment, [`Advice::sysctls`] what `--apply` may write.
//!
//! ```
//! let facts = gatekeeper_tuning::HostFacts::default(); // nothing known
//! let advice = gatekeeper_tuning::advise(&facts);
//! assert_eq!(advice.shards, 1);
//! assert!(advice.config_yaml().contains("shards: 1"));
//! ```
#![forbid(unsafe_code)]

mod advise;
pub mod cpulist;
mod facts;
mod probe;
mod read;
mod render;

pub use advise::{
    advise, Advice, BridgePlacement, Line, NatsPlacement, Sysctl, Topic, UringAdvice, CONNECTION_BYTES_ESTIMATE,
    URING_ENTRIES_DEFAULT,
};
pub use facts::{
    CgroupFacts, CpuFacts, HostFacts, Irq, KernelVersion, MemoryFacts, Nic, NumaNode, Rlimit, RxQueue, SyscallFacts,
    SysctlFacts, UringFacts,
};
pub use probe::probe_syscalls;
pub use read::{read_host, DIR_ENTRIES_MAX};

/// Reads this host's facts: files under `/` and the syscall probes.
pub fn inspect() -> HostFacts {
    let mut facts = read_host(std::path::Path::new("/"), SyscallFacts::default());
    facts.syscalls = probe_syscalls(facts.kernel);
    facts
}
