//! Reads [`HostFacts`] from a root directory: `/` on a live host, a recorded tree in
//! tests. Only files are read here (syscalls are [`crate::probe`]'s); a file that is
//! missing or does not parse leaves its fact unknown, never an error.

use std::path::{Path, PathBuf};

use crate::cpulist::{parse_list, parse_mask};
use crate::facts::{
    CgroupFacts, CpuFacts, HostFacts, Irq, KernelVersion, MemoryFacts, Nic, NumaNode, RxQueue, SyscallFacts,
    SysctlFacts,
};

/// How many entries of one sysfs directory (CPUs, queues, IRQs, NICs) are looked at;
/// beyond it the rest is ignored, so a strange tree cannot make the reader run long.
pub const DIR_ENTRIES_MAX: usize = 8192;

/// Reads every file-backed fact under `root` (a directory holding `proc/` and `sys/`);
/// `syscalls` is stored as given.
pub fn read_host(root: &Path, syscalls: SyscallFacts) -> HostFacts {
    let r = Root(root.to_path_buf());
    let cmdline = r.text("proc/cmdline").unwrap_or_default();
    HostFacts {
        kernel: r.text("proc/sys/kernel/osrelease").and_then(|s| KernelVersion::parse(&s)),
        cpus: read_cpus(&r, &cmdline),
        cgroup: read_cgroup(&r),
        memory: read_memory(&r),
        nics: read_nics(&r),
        sysctls: read_sysctls(&r),
        governor: r.text("sys/devices/system/cpu/cpu0/cpufreq/scaling_governor").map(|s| s.trim().to_string()),
        thp: r.text("sys/kernel/mm/transparent_hugepage/enabled").and_then(|s| bracketed(&s)),
        syscalls,
    }
}

struct Root(PathBuf);

impl Root {
    fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel.trim_start_matches('/'))
    }

    fn text(&self, rel: &str) -> Option<String> {
        std::fs::read_to_string(self.path(rel)).ok()
    }

    fn num(&self, rel: &str) -> Option<u64> {
        self.text(rel)?.trim().parse().ok()
    }

    fn list(&self, rel: &str) -> Option<Vec<u32>> {
        parse_list(&self.text(rel)?)
    }

    /// Names in a directory, sorted, at most [`DIR_ENTRIES_MAX`].
    fn names(&self, rel: &str) -> Vec<String> {
        let Ok(dir) = std::fs::read_dir(self.path(rel)) else { return Vec::new() };
        let mut names: Vec<String> =
            dir.filter_map(Result::ok).take(DIR_ENTRIES_MAX).filter_map(|e| e.file_name().into_string().ok()).collect();
        names.sort();
        names
    }
}

/// `always [madvise] never` → `madvise`.
fn bracketed(s: &str) -> Option<String> {
    let start = s.find('[')?;
    let end = s[start..].find(']')?;
    Some(s[start + 1..start + end].to_string())
}

/// The value of `name=` on the boot command line.
fn boot_flag<'a>(cmdline: &'a str, name: &str) -> Option<&'a str> {
    cmdline.split_whitespace().rev().find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
}

/// Numbers of `prefix<N>` entries (`cpu3` → 3), ascending.
fn numbered(names: &[String], prefix: &str) -> Vec<u32> {
    let mut out: Vec<u32> = names.iter().filter_map(|n| n.strip_prefix(prefix)?.parse().ok()).collect();
    out.sort_unstable();
    out
}

fn read_cpus(r: &Root, cmdline: &str) -> CpuFacts {
    let online = r.list("sys/devices/system/cpu/online");
    let allowed = r
        .text("proc/self/status")
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).and_then(|v| parse_list(v.trim())));
    let mut cores: Vec<Vec<u32>> = Vec::new();
    for cpu in numbered(&r.names("sys/devices/system/cpu"), "cpu") {
        if let Some(siblings) = r.list(&format!("sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list")) {
            if !siblings.is_empty() && !cores.contains(&siblings) {
                cores.push(siblings);
            }
        }
    }
    cores.sort();
    let numa_nodes = numbered(&r.names("sys/devices/system/node"), "node")
        .into_iter()
        .filter_map(|id| Some(NumaNode { id, cpus: r.list(&format!("sys/devices/system/node/node{id}/cpulist"))? }))
        .collect();
    // The sysfs file is what the kernel applied; the boot flag is the fallback.
    let isolated = r
        .list("sys/devices/system/cpu/isolated")
        .filter(|l| !l.is_empty())
        .or_else(|| boot_flag(cmdline, "isolcpus").and_then(parse_list))
        .or_else(|| r.list("sys/devices/system/cpu/isolated"));
    let nohz_full =
        boot_flag(cmdline, "nohz_full").and_then(parse_list).or_else(|| r.list("sys/devices/system/cpu/nohz_full"));
    CpuFacts { online, allowed, cores, numa_nodes, isolated, nohz_full }
}

fn read_cgroup(r: &Root) -> CgroupFacts {
    let Some(text) = r.text("proc/self/cgroup") else { return CgroupFacts::default() };
    // v2: a single `0::/path` line; v1: `N:controllers:/path` per hierarchy.
    if let Some(path) = text.lines().find_map(|l| l.strip_prefix("0::")) {
        if r.path("sys/fs/cgroup/cgroup.controllers").exists() {
            return read_cgroup_v2(r, path.trim());
        }
    }
    let v1_path = |controller: &str| {
        text.lines().find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
            ctrls.split(',').any(|c| c == controller).then(|| (ctrls.to_string(), path.trim().to_string()))
        })
    };
    let mut facts = CgroupFacts { version: Some(1), ..CgroupFacts::default() };
    if let Some((dir, path)) = v1_path("cpu") {
        facts.cpu_quota_cpus = along(r, &format!("sys/fs/cgroup/{dir}"), &path, |d| {
            let quota = r.text(&format!("{d}/cpu.cfs_quota_us"))?.trim().parse::<i64>().ok()?;
            let period = r.num(&format!("{d}/cpu.cfs_period_us"))?;
            (quota > 0 && period > 0).then(|| quota as f64 / period as f64)
        });
    }
    if let Some((dir, path)) = v1_path("cpuset") {
        facts.cpuset = first_found(r, &format!("sys/fs/cgroup/{dir}"), &path, "cpuset.cpus");
    }
    if let Some((dir, path)) = v1_path("memory") {
        // v1 writes "no limit" as a huge page-rounded number.
        facts.memory_max_bytes = along(r, &format!("sys/fs/cgroup/{dir}"), &path, |d| {
            r.num(&format!("{d}/memory.limit_in_bytes")).filter(|&b| b < (1u64 << 62)).map(|b| b as f64)
        })
        .map(|b| b as u64);
    }
    facts
}

fn read_cgroup_v2(r: &Root, path: &str) -> CgroupFacts {
    let base = "sys/fs/cgroup";
    let cpu_quota_cpus = along(r, base, path, |d| {
        let text = r.text(&format!("{d}/cpu.max"))?;
        let mut it = text.split_whitespace();
        let quota = it.next()?.parse::<f64>().ok()?; // `max` does not parse: no quota here
        let period = it.next()?.parse::<f64>().ok()?;
        (quota > 0.0 && period > 0.0).then_some(quota / period)
    });
    let memory_max_bytes =
        along(r, base, path, |d| r.num(&format!("{d}/memory.max")).map(|b| b as f64)).map(|b| b as u64);
    CgroupFacts {
        version: Some(2),
        cpu_quota_cpus,
        cpuset: first_found(r, base, path, "cpuset.cpus.effective"),
        memory_max_bytes,
    }
}

/// The directories from the cgroup's own up to the hierarchy's root. Inside a cgroup
/// namespace the path may not exist under the mount; the mount's root is the cgroup then.
fn cgroup_dirs(r: &Root, base: &str, path: &str) -> Vec<String> {
    let mut dirs = Vec::new();
    let mut p = path.trim_end_matches('/').to_string();
    loop {
        let d = format!("{base}{p}");
        if r.path(&d).is_dir() {
            dirs.push(d);
        }
        match p.rfind('/') {
            Some(i) if !p.is_empty() => p.truncate(i),
            _ => break,
        }
    }
    if dirs.is_empty() || !dirs.iter().any(|d| d == base) {
        dirs.push(base.to_string());
    }
    dirs.truncate(64);
    dirs
}

/// The smallest value `f` finds from the cgroup up to the root: a limit anywhere above
/// binds too.
fn along(r: &Root, base: &str, path: &str, f: impl Fn(&str) -> Option<f64>) -> Option<f64> {
    cgroup_dirs(r, base, path).iter().filter_map(|d| f(d)).reduce(f64::min)
}

/// The nearest `file` from the cgroup up, as a CPU list.
fn first_found(r: &Root, base: &str, path: &str, file: &str) -> Option<Vec<u32>> {
    cgroup_dirs(r, base, path).iter().find_map(|d| r.list(&format!("{d}/{file}")).filter(|l| !l.is_empty()))
}

fn read_memory(r: &Root) -> MemoryFacts {
    let Some(text) = r.text("proc/meminfo") else { return MemoryFacts::default() };
    let kib = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .and_then(|k| k.checked_mul(1024))
    };
    MemoryFacts { total_bytes: kib("MemTotal"), available_bytes: kib("MemAvailable") }
}

fn read_nics(r: &Root) -> Vec<Nic> {
    let mut nics = Vec::new();
    for name in r.names("sys/class/net") {
        let dev = format!("sys/class/net/{name}");
        // Virtual interfaces (lo, bridges, veth, ifb) have no device behind them.
        if !r.path(&format!("{dev}/device")).exists() {
            continue;
        }
        let queues = r.names(&format!("{dev}/queues"));
        let rx_queues = numbered(&queues, "rx-")
            .into_iter()
            .map(|q| RxQueue {
                rps_cpus: r.text(&format!("{dev}/queues/rx-{q}/rps_cpus")).and_then(|m| parse_mask(&m)),
            })
            .collect();
        let tx_queues = numbered(&queues, "tx-")
            .into_iter()
            .map(|q| r.text(&format!("{dev}/queues/tx-{q}/xps_cpus")).and_then(|m| parse_mask(&m)))
            .collect();
        let mut irq_numbers: Vec<u32> =
            r.names(&format!("{dev}/device/msi_irqs")).iter().filter_map(|n| n.parse().ok()).collect();
        irq_numbers.sort_unstable();
        let irqs = irq_numbers
            .into_iter()
            .map(|n| Irq { number: n, affinity: r.list(&format!("proc/irq/{n}/smp_affinity_list")) });
        let numa_node = r
            .text(&format!("{dev}/device/numa_node"))
            .and_then(|s| s.trim().parse::<i64>().ok())
            .and_then(|n| u32::try_from(n).ok());
        nics.push(Nic { name, numa_node, rx_queues, tx_queues, irqs: irqs.collect() });
    }
    nics
}

fn read_sysctls(r: &Root) -> SysctlFacts {
    let triple = |rel: &str| -> Option<[u64; 3]> {
        let v: Vec<u64> = r.text(rel)?.split_whitespace().filter_map(|x| x.parse().ok()).collect();
        v.try_into().ok()
    };
    let pair = |rel: &str| -> Option<[u64; 2]> {
        let v: Vec<u64> = r.text(rel)?.split_whitespace().filter_map(|x| x.parse().ok()).collect();
        v.try_into().ok()
    };
    SysctlFacts {
        somaxconn: r.num("proc/sys/net/core/somaxconn"),
        tcp_max_syn_backlog: r.num("proc/sys/net/ipv4/tcp_max_syn_backlog"),
        netdev_max_backlog: r.num("proc/sys/net/core/netdev_max_backlog"),
        busy_poll_us: r.num("proc/sys/net/core/busy_poll"),
        busy_read_us: r.num("proc/sys/net/core/busy_read"),
        tcp_fastopen: r.num("proc/sys/net/ipv4/tcp_fastopen"),
        rmem_max_bytes: r.num("proc/sys/net/core/rmem_max"),
        wmem_max_bytes: r.num("proc/sys/net/core/wmem_max"),
        tcp_rmem_bytes: triple("proc/sys/net/ipv4/tcp_rmem"),
        tcp_wmem_bytes: triple("proc/sys/net/ipv4/tcp_wmem"),
        ip_local_port_range: pair("proc/sys/net/ipv4/ip_local_port_range"),
        nr_open: r.num("proc/sys/fs/nr_open"),
        io_uring_disabled: r.num("proc/sys/kernel/io_uring_disabled"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_root_is_all_unknown() {
        let dir = std::env::temp_dir().join(format!("gk-tuning-empty-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let facts = read_host(&dir, SyscallFacts::default());
        assert_eq!(facts, HostFacts::default());
        let _ = std::fs::remove_dir(&dir);
    }

    fn tree(files: &[(&str, &str)]) -> PathBuf {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let root = std::env::temp_dir().join(format!("gk-tuning-tree-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for (rel, text) in files {
            let path = root.join(rel);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, text).expect("write");
        }
        root
    }

    #[test]
    fn cgroup_v1_quota_cpuset_and_memory_along_the_path() {
        let root = tree(&[
            ("proc/self/cgroup", "12:cpuset:/docker/abc\n4:cpu,cpuacct:/docker/abc\n3:memory:/docker/abc\n"),
            ("sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "-1\n"),
            ("sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_period_us", "100000\n"),
            // A quota on the parent binds the child too.
            ("sys/fs/cgroup/cpu,cpuacct/docker/cpu.cfs_quota_us", "150000\n"),
            ("sys/fs/cgroup/cpu,cpuacct/docker/cpu.cfs_period_us", "100000\n"),
            ("sys/fs/cgroup/cpuset/docker/abc/cpuset.cpus", "1-2\n"),
            ("sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes", "9223372036854771712\n"),
            ("sys/fs/cgroup/memory/docker/memory.limit_in_bytes", "1073741824\n"),
        ]);
        let c = read_host(&root, SyscallFacts::default()).cgroup;
        assert_eq!(c.version, Some(1));
        assert_eq!(c.cpu_quota_cpus, Some(1.5));
        assert_eq!(c.cpuset.as_deref(), Some(&[1, 2][..]));
        assert_eq!(c.memory_max_bytes, Some(1 << 30), "the child's \"no limit\" is skipped, the parent's binds");
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn isolated_cpus_from_the_boot_flag_when_sysfs_lists_none() {
        let root = tree(&[
            ("proc/cmdline", "ro isolcpus=domain,managed_irq,2-3 nohz_full=2-3\n"),
            ("sys/devices/system/cpu/isolated", "\n"),
            ("sys/devices/system/cpu/online", "0-3\n"),
        ]);
        let f = read_host(&root, SyscallFacts::default());
        assert_eq!(f.cpus.isolated.as_deref(), Some(&[2, 3][..]));
        assert_eq!(f.cpus.nohz_full.as_deref(), Some(&[2, 3][..]));
        assert_eq!(f.cpus.online.as_deref(), Some(&[0, 1, 2, 3][..]));
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn boot_flags_and_brackets() {
        let cmd = "BOOT_IMAGE=/vmlinuz ro isolcpus=managed_irq,domain,2-3 nohz_full=2-3 quiet";
        assert_eq!(boot_flag(cmd, "isolcpus"), Some("managed_irq,domain,2-3"));
        assert_eq!(boot_flag(cmd, "nohz_full"), Some("2-3"));
        assert_eq!(boot_flag(cmd, "isolcpu"), None);
        assert_eq!(bracketed("always [madvise] never\n").as_deref(), Some("madvise"));
        assert_eq!(bracketed("always madvise never"), None);
    }

    #[test]
    fn kernel_versions() {
        assert_eq!(KernelVersion::parse("6.8.0-45-generic"), Some(KernelVersion { major: 6, minor: 8, patch: 0 }));
        assert_eq!(KernelVersion::parse("6.18.44-fc-v669\n"), Some(KernelVersion { major: 6, minor: 18, patch: 44 }));
        assert_eq!(KernelVersion::parse("5.4"), Some(KernelVersion { major: 5, minor: 4, patch: 0 }));
        assert_eq!(KernelVersion::parse("linux"), None);
    }
}
