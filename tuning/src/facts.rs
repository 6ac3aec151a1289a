//! What the host is: the facts [`crate::advise`] reasons from. Every fact the host
//! may not expose is an `Option` (or an empty list), and `None` means "unknown": a
//! missing file, a value that did not parse, a syscall that was refused.

use serde::{Deserialize, Serialize};

/// Everything `gatekeeper tune` knows about the host.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostFacts {
    /// Kernel release (`/proc/sys/kernel/osrelease`).
    pub kernel: Option<KernelVersion>,
    /// CPUs, their topology and which of them this process may use.
    pub cpus: CpuFacts,
    /// Limits the process's cgroup puts on it.
    pub cgroup: CgroupFacts,
    /// Memory of the host (`/proc/meminfo`).
    pub memory: MemoryFacts,
    /// Physical network interfaces.
    pub nics: Vec<Nic>,
    /// Kernel settings that bound a gateway's sockets.
    pub sysctls: SysctlFacts,
    /// The CPU frequency governor of the first online CPU (`performance`, `powersave`, …).
    pub governor: Option<String>,
    /// Transparent hugepages mode: `always`, `madvise` or `never`.
    pub thp: Option<String>,
    /// Facts only syscalls tell: io_uring and resource limits.
    pub syscalls: SyscallFacts,
}

/// A kernel release, e.g. `6.8.0-45-generic` → 6.8.0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct KernelVersion {
    /// Major number.
    pub major: u32,
    /// Minor number.
    pub minor: u32,
    /// Patch level (0 when absent).
    pub patch: u32,
}

impl KernelVersion {
    /// Parses the leading `major.minor[.patch]` of a release string.
    pub fn parse(release: &str) -> Option<KernelVersion> {
        let mut nums = release.trim().split(['.', '-', '+', '_']).map(|p| {
            let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u32>().ok()
        });
        let major = nums.next()??;
        let minor = nums.next()??;
        let patch = nums.next().flatten().unwrap_or(0);
        Some(KernelVersion { major, minor, patch })
    }

    /// At least `major.minor`.
    pub fn at_least(self, major: u32, minor: u32) -> bool {
        (self.major, self.minor) >= (major, minor)
    }
}

impl std::fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// CPUs and their topology.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuFacts {
    /// Online CPUs (`/sys/devices/system/cpu/online`).
    pub online: Option<Vec<u32>>,
    /// CPUs this process may run on (`Cpus_allowed_list` of `/proc/self/status`).
    pub allowed: Option<Vec<u32>>,
    /// Physical cores: each entry is the hardware threads of one core
    /// (`topology/thread_siblings_list`), first CPU ascending. Empty: unknown.
    pub cores: Vec<Vec<u32>>,
    /// NUMA nodes with their CPUs (`/sys/devices/system/node/node*/cpulist`). Empty: unknown.
    pub numa_nodes: Vec<NumaNode>,
    /// CPUs the kernel keeps other work off: `/sys/devices/system/cpu/isolated`, else the
    /// `isolcpus=` boot flag.
    pub isolated: Option<Vec<u32>>,
    /// CPUs without the scheduler tick (`nohz_full=` boot flag, or
    /// `/sys/devices/system/cpu/nohz_full`).
    pub nohz_full: Option<Vec<u32>>,
}

/// One NUMA node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NumaNode {
    /// Node number.
    pub id: u32,
    /// Its CPUs.
    pub cpus: Vec<u32>,
}

/// What the process's cgroup allows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CgroupFacts {
    /// 1 or 2; `None` when `/proc/self/cgroup` is absent.
    pub version: Option<u8>,
    /// CPU time the cgroup may use, in CPUs (`cpu.max` 250000/100000 → 2.5); the
    /// smallest along the path to the root. `None`: no quota, or unknown.
    pub cpu_quota_cpus: Option<f64>,
    /// The cgroup's cpuset (`cpuset.cpus.effective`, v1 `cpuset.cpus`). `None`: unknown.
    pub cpuset: Option<Vec<u32>>,
    /// The cgroup's memory limit, bytes (`memory.max`, v1 `memory.limit_in_bytes`).
    /// `None`: no limit, or unknown.
    pub memory_max_bytes: Option<u64>,
}

/// Host memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryFacts {
    /// `MemTotal`, bytes.
    pub total_bytes: Option<u64>,
    /// `MemAvailable`, bytes.
    pub available_bytes: Option<u64>,
}

/// A physical network interface (one with a `device` in sysfs).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Nic {
    /// Interface name.
    pub name: String,
    /// NUMA node of its device (`device/numa_node`; the kernel writes -1 for none).
    pub numa_node: Option<u32>,
    /// Receive queues (`queues/rx-*`), in queue order.
    pub rx_queues: Vec<RxQueue>,
    /// Transmit queues (`queues/tx-*`), in queue order: each one's XPS CPUs.
    pub tx_queues: Vec<Option<Vec<u32>>>,
    /// The device's interrupts (`device/msi_irqs`), ascending.
    pub irqs: Vec<Irq>,
}

/// One receive queue.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RxQueue {
    /// CPUs RPS spreads this queue's packets to (`rps_cpus`); empty: RPS off.
    pub rps_cpus: Option<Vec<u32>>,
}

/// One interrupt line and where it may run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Irq {
    /// IRQ number.
    pub number: u32,
    /// `/proc/irq/N/smp_affinity_list`.
    pub affinity: Option<Vec<u32>>,
}

/// Kernel settings a gateway's sockets run into (`/proc/sys/...`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SysctlFacts {
    /// `net.core.somaxconn`: the cap on every listen backlog.
    pub somaxconn: Option<u64>,
    /// `net.ipv4.tcp_max_syn_backlog`: half-open connections per listener.
    pub tcp_max_syn_backlog: Option<u64>,
    /// `net.core.netdev_max_backlog`: packets queued per CPU before the stack takes them.
    pub netdev_max_backlog: Option<u64>,
    /// `net.core.busy_poll`, µs (0: off).
    pub busy_poll_us: Option<u64>,
    /// `net.core.busy_read`, µs (0: off).
    pub busy_read_us: Option<u64>,
    /// `net.ipv4.tcp_fastopen` bit mask (1 client, 2 server).
    pub tcp_fastopen: Option<u64>,
    /// `net.core.rmem_max`, bytes.
    pub rmem_max_bytes: Option<u64>,
    /// `net.core.wmem_max`, bytes.
    pub wmem_max_bytes: Option<u64>,
    /// `net.ipv4.tcp_rmem`: min, default, max bytes.
    pub tcp_rmem_bytes: Option<[u64; 3]>,
    /// `net.ipv4.tcp_wmem`: min, default, max bytes.
    pub tcp_wmem_bytes: Option<[u64; 3]>,
    /// `net.ipv4.ip_local_port_range`: the ports outgoing (upstream) connections use.
    pub ip_local_port_range: Option<[u64; 2]>,
    /// `fs.nr_open`: the ceiling of any process's open-file limit.
    pub nr_open: Option<u64>,
    /// `kernel.io_uring_disabled` (6.6+): 0 allowed, 1 only for a group, 2 off.
    pub io_uring_disabled: Option<u64>,
}

/// Facts only syscalls can tell. Read by [`crate::probe`] on the running host; the
/// fixture trees of the tests record them in `syscalls.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SyscallFacts {
    /// io_uring as this process may use it; `None`: not probed.
    pub uring: Option<UringFacts>,
    /// `RLIMIT_MEMLOCK`.
    pub memlock: Option<Rlimit>,
    /// `RLIMIT_NOFILE`.
    pub nofile: Option<Rlimit>,
}

/// A resource limit; `None` in a field means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    /// Soft (current) limit.
    pub soft: Option<u64>,
    /// Hard (maximum) limit.
    pub hard: Option<u64>,
}

/// What setting up rings on this host showed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UringFacts {
    /// A plain ring could be set up.
    pub available: bool,
    /// Why not, when it could not (`io_uring_setup: Operation not permitted`).
    pub error: Option<String>,
    /// A ring with a kernel submission thread (SQPOLL) could be set up by this process.
    pub sqpoll: bool,
    /// `IORING_SETUP_COOP_TASKRUN` and `SINGLE_ISSUER` (6.0+), which the shards ask for.
    pub coop_taskrun: bool,
    /// `IORING_SETUP_DEFER_TASKRUN` (6.1+).
    pub defer_taskrun: bool,
    /// `IORING_FEAT_FAST_POLL`: sockets are polled inside the ring, not by a worker thread.
    pub fast_poll: bool,
    /// `IORING_FEAT_NATIVE_WORKERS` (5.12+): ring memory is no longer charged to
    /// `RLIMIT_MEMLOCK`.
    pub native_workers: bool,
    /// `IORING_OP_READ_FIXED` is supported: registered buffers work.
    pub registered_buffers: bool,
    /// `IORING_OP_PROVIDE_BUFFERS` is supported and the kernel is 5.19+
    /// (`IORING_REGISTER_PBUF_RING`): provided-buffer rings work.
    pub provided_buffer_rings: bool,
}
