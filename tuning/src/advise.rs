//! Facts in, advice out: a pure function, so every host shape is a test with a
//! recorded tree. Each decision adds a [`Line`] naming the fact that caused it and the
//! effect to expect; the values themselves land in [`Advice`]'s fields, from which the
//! config fragment and the `--apply` sysctls are made.

use serde::Serialize;

use crate::cpulist::{format_list, format_mask};
use crate::facts::{HostFacts, Nic};

/// io_uring entries per shard the gateway uses unless told otherwise (`uring.entries`).
pub const URING_ENTRIES_DEFAULT: u32 = 4096;
/// The fewest ring entries advised when a memlock limit forces smaller rings.
const URING_ENTRIES_MIN: u32 = 256;
/// Memory one open client connection costs, bytes, for sizing
/// `connections_per_shard_max`: the kernel's socket buffers at their defaults plus the
/// shard's read buffer while a request is read.
pub const CONNECTION_BYTES_ESTIMATE: u64 = 64 * 1024;
/// The gateway's default of `limits.connections_per_shard_max`.
const CONNECTIONS_PER_SHARD_DEFAULT: u64 = 10_000;
/// The gateway's default of `limits.body_bytes_in_flight_max`, bytes.
const BODY_IN_FLIGHT_DEFAULT_BYTES: u64 = 64 * 1024 * 1024;
/// The gateway's default of `limits.body_bytes_max` (the floor of the in-flight budget).
const BODY_BYTES_MAX_DEFAULT: u64 = 4 * 1024 * 1024;
/// The advised listen backlog per shard, and the floor advised for `somaxconn` and
/// `tcp_max_syn_backlog`.
const BACKLOG: u64 = 4096;
/// Open files kept for everything but connections (WAL, logs, upstream DNS, admin).
const FD_RESERVE: u64 = 1024;
/// At this many usable cores and more, one core is kept from the shards for the bridge
/// thread and nats-server; below it a core costs more throughput than the bridge's
/// bursts cost in tail latency, and the bridge runs at a lower priority instead.
pub const HOUSEKEEPING_MIN_CORES: usize = 8;
/// The nice value advised for nats-server when it shares the shards' cores: the
/// scheduler then prefers a runnable shard. (The bridge thread shares them as
/// `SCHED_IDLE` instead: `bridge.policy`, measured in `bench/RESULTS.md`, issue 15.)
const BRIDGE_NICE: i32 = 10;
/// Fewer ephemeral ports than this limits upstream connections under load.
const LOCAL_PORTS_MIN: u64 = 20_000;

/// What a line is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Topic {
    /// Shard count and CPUs.
    Shards,
    /// The bridge thread.
    Bridge,
    /// A local nats-server.
    NatsServer,
    /// io_uring settings.
    Uring,
    /// Connection and memory limits.
    Limits,
    /// IRQ, RPS and XPS placement.
    Network,
    /// Kernel settings.
    Sysctl,
    /// Host settings outside the gateway (governor, hugepages, resource limits).
    Host,
}

impl Topic {
    /// The name used in the report.
    pub fn name(self) -> &'static str {
        match self {
            Topic::Shards => "shards",
            Topic::Bridge => "bridge",
            Topic::NatsServer => "nats-server",
            Topic::Uring => "io_uring",
            Topic::Limits => "limits",
            Topic::Network => "network",
            Topic::Sysctl => "sysctl",
            Topic::Host => "host",
        }
    }
}

/// One piece of advice with its cause and effect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Line {
    /// What it is about.
    pub topic: Topic,
    /// What to do (or to leave alone).
    pub advice: String,
    /// The fact that caused it.
    pub because: String,
    /// What to expect from it.
    pub effect: String,
}

/// Where the bridge thread runs: its own CPU, or the shards' CPUs in their idle time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BridgePlacement {
    /// `bridge.cpu`: a CPU of its own.
    pub cpu: Option<u32>,
    /// `bridge.nice`.
    pub nice: Option<i32>,
    /// On the shards' CPUs as `SCHED_IDLE` (`bridge.policy: auto`, which is idle for
    /// the embedded audit log): it runs only when no shard wants the CPU, and a shard
    /// raises it when it falls behind.
    pub idle: bool,
}

/// Where a nats-server on this host should run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NatsPlacement {
    /// CPUs of its own (`taskset -c`), empty: share the shards' CPUs.
    pub cpus: Vec<u32>,
    /// Its nice value when it shares them.
    pub nice: Option<i32>,
}

/// `uring:` settings per shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct UringAdvice {
    /// `uring.entries`.
    pub entries: u32,
    /// `uring.sqpoll`.
    pub sqpoll: bool,
}

/// A kernel setting `--apply` may write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sysctl {
    /// Dotted name (`net.core.somaxconn`).
    pub key: String,
    /// The value to write.
    pub value: String,
    /// The value now, when known.
    pub current: Option<String>,
}

impl Sysctl {
    /// Its file under `/proc/sys`.
    pub fn path(&self) -> std::path::PathBuf {
        std::path::Path::new("/proc/sys").join(self.key.replace('.', "/"))
    }

    /// The command that sets it.
    pub fn command(&self) -> String {
        format!("sysctl -w {}=\"{}\"", self.key, self.value)
    }
}

/// Everything `gatekeeper tune` recommends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Advice {
    /// `shards`.
    pub shards: usize,
    /// `cpus`: shard `i` runs on `cpus[i]`; empty when the host's CPUs are unknown.
    pub cpus: Vec<u32>,
    /// `driver`: `auto` or `epoll`.
    pub driver: String,
    /// `bridge`.
    pub bridge: BridgePlacement,
    /// A local nats-server's placement.
    pub nats_server: NatsPlacement,
    /// `uring`.
    pub uring: UringAdvice,
    /// `limits.connections_per_shard_max`.
    pub connections_per_shard_max: u64,
    /// `limits.body_bytes_in_flight_max`, bytes.
    pub body_bytes_in_flight_max: u64,
    /// `listen_backlog`.
    pub listen_backlog: u64,
    /// Kernel settings to change (what `--apply` writes, after asking).
    pub sysctls: Vec<Sysctl>,
    /// Other host changes (IRQ affinity, RPS/XPS, hugepages, governor): printed for an
    /// operator, never run.
    pub commands: Vec<String>,
    /// The reasoning, line by line.
    pub lines: Vec<Line>,
}

impl Advice {
    fn line(&mut self, topic: Topic, advice: impl Into<String>, because: impl Into<String>, effect: impl Into<String>) {
        self.lines.push(Line { topic, advice: advice.into(), because: because.into(), effect: effect.into() });
    }
}

/// The CPUs shards may use, grouped by physical core, and the CPUs left for the
/// bridge and nats-server.
struct Placement {
    cores: Vec<Vec<u32>>,
    housekeeping: Vec<u32>,
}

/// Advice for a host.
pub fn advise(facts: &HostFacts) -> Advice {
    let mut a = Advice {
        shards: 1,
        cpus: Vec::new(),
        driver: "auto".to_string(),
        bridge: BridgePlacement::default(),
        nats_server: NatsPlacement::default(),
        uring: UringAdvice { entries: URING_ENTRIES_DEFAULT, sqpoll: false },
        connections_per_shard_max: CONNECTIONS_PER_SHARD_DEFAULT,
        body_bytes_in_flight_max: BODY_IN_FLIGHT_DEFAULT_BYTES,
        listen_backlog: BACKLOG,
        sysctls: Vec::new(),
        commands: Vec::new(),
        lines: Vec::new(),
    };
    let placement = placement(facts, &mut a);
    let siblings = shard_siblings(&placement);
    let spare = shards_and_bridge(facts, placement, &mut a);
    let siblings = siblings.into_iter().take(a.shards).collect::<Vec<_>>();
    uring(facts, spare, &mut a);
    limits(facts, &mut a);
    network(facts, &siblings, &mut a);
    sysctls(facts, &mut a);
    host(facts, &mut a);
    a
}

fn intersect(a: &[u32], b: &[u32]) -> Vec<u32> {
    a.iter().copied().filter(|c| b.contains(c)).collect()
}

fn minus(a: &[u32], b: &[u32]) -> Vec<u32> {
    a.iter().copied().filter(|c| !b.contains(c)).collect()
}

/// Which CPUs the shards may take, by physical core, and which are left for housekeeping.
fn placement(facts: &HostFacts, a: &mut Advice) -> Placement {
    let c = &facts.cpus;
    let Some(mut pool) = c.online.clone().or_else(|| c.allowed.clone()) else {
        a.line(
            Topic::Shards,
            "1 shard, pinned by the gateway",
            "the online CPUs are unknown (no /sys/devices/system/cpu/online)",
            "a safe start; run `gatekeeper tune` where /sys is visible for a real count",
        );
        return Placement { cores: Vec::new(), housekeeping: Vec::new() };
    };
    if let Some(cpuset) = &facts.cgroup.cpuset {
        pool = intersect(&pool, cpuset);
    }
    let isolated = c.isolated.as_deref().map(|i| intersect(&pool, i)).unwrap_or_default();
    // isolcpus= also keeps them out of every process's default affinity, so the allowed
    // list is applied to the rest only; pinning onto an isolated CPU is still allowed.
    let mut housekeeping = Vec::new();
    if !isolated.is_empty() {
        let rest = minus(&pool, &isolated);
        housekeeping = c.allowed.as_deref().map_or(rest.clone(), |al| intersect(&rest, al));
        a.line(
            Topic::Shards,
            format!("shards on the isolated CPUs {}", format_list(&isolated)),
            format!(
                "isolcpus/isolated lists {}{}",
                format_list(&isolated),
                c.nohz_full.as_deref().map_or(String::new(), |n| format!(", nohz_full {}", format_list(n)))
            ),
            "no other task is scheduled there, so a shard is never preempted: the lowest tail latency this host offers",
        );
        pool = isolated;
    } else if let Some(allowed) = &c.allowed {
        pool = intersect(&pool, allowed);
    }
    if pool.is_empty() {
        a.line(
            Topic::Shards,
            "1 shard, pinned by the gateway",
            "no CPU is both online and allowed to this process",
            "the gateway still starts; check the cpuset and affinity it runs under",
        );
        return Placement { cores: Vec::new(), housekeeping };
    }
    let nodes: Vec<_> = c.numa_nodes.iter().filter(|n| !intersect(&n.cpus, &pool).is_empty()).collect();
    if nodes.len() > 1 {
        let nic_node = facts.nics.iter().find_map(|n| n.numa_node);
        let chosen = nic_node
            .and_then(|id| nodes.iter().find(|n| n.id == id))
            .or_else(|| nodes.iter().max_by_key(|n| (intersect(&n.cpus, &pool).len(), std::cmp::Reverse(n.id))))
            .copied();
        if let Some(node) = chosen {
            let others: Vec<String> = nodes.iter().filter(|n| n.id != node.id).map(|n| n.id.to_string()).collect();
            a.line(
                Topic::Shards,
                format!("shards on NUMA node {} only (CPUs {})", node.id, format_list(&intersect(&node.cpus, &pool))),
                match nic_node {
                    Some(id) if id == node.id => format!("{} NUMA nodes; the NIC sits on node {id}", nodes.len()),
                    _ => format!(
                        "{} NUMA nodes; the NIC's node is unknown, node {} has the most CPUs",
                        nodes.len(),
                        node.id
                    ),
                },
                format!(
                    "packets, sockets and shard memory stay on one node (no cross-node memory traffic); node(s) {} \
                     are left for a second gateway on its own address, or for other work",
                    others.join(", ")
                ),
            );
            pool = intersect(&pool, &node.cpus);
        }
    }
    // One shard per physical core: two shards on sibling hyperthreads share one core's
    // execution units and caches, and each gets slower.
    let mut cores: Vec<Vec<u32>> = Vec::new();
    for cpu in &pool {
        if cores.iter().any(|core| core.contains(cpu)) {
            continue;
        }
        let siblings = c.cores.iter().find(|core| core.contains(cpu)).map_or(vec![*cpu], |s| intersect(s, &pool));
        cores.push(siblings);
    }
    let smt = cores.iter().any(|core| core.len() > 1);
    if smt {
        let siblings: Vec<u32> = cores.iter().flat_map(|core| core.iter().skip(1).copied()).collect();
        a.line(
            Topic::Shards,
            "one shard per physical core; the sibling hyperthreads get no shard",
            format!("SMT: {} CPUs are {} cores (siblings {})", pool.len(), cores.len(), format_list(&siblings)),
            "each shard has a core's execution units and caches to itself; the siblings take the kernel's softirq \
             work and anything else on the host",
        );
    }
    Placement { cores, housekeeping }
}

/// The second hardware thread of each shard core, in shard order, when every shard core
/// has one: where the NIC's interrupt work goes on an SMT host (it shares the shard's
/// caches without preempting it). Empty otherwise.
fn shard_siblings(p: &Placement) -> Vec<u32> {
    let siblings: Vec<u32> = p.cores.iter().filter_map(|core| core.get(1).copied()).collect();
    if siblings.len() == p.cores.len() {
        siblings
    } else {
        Vec::new()
    }
}

/// Decides the shard count, their CPUs, the bridge's and nats-server's place; returns
/// how many whole cores nobody uses (room for SQPOLL threads).
fn shards_and_bridge(facts: &HostFacts, p: Placement, a: &mut Advice) -> usize {
    if p.cores.is_empty() {
        a.bridge.idle = true;
        a.nats_server.nice = Some(BRIDGE_NICE);
        return 0;
    }
    let quota = facts.cgroup.cpu_quota_cpus;
    let quota_cap = quota.map(|q| (q.floor() as usize).max(1));
    let mut n = p.cores.len().min(quota_cap.unwrap_or(usize::MAX));
    let reserve = p.housekeeping.is_empty() && n == p.cores.len() && n >= HOUSEKEEPING_MIN_CORES;
    if reserve {
        n -= 1;
    }
    a.shards = n;
    a.cpus = p.cores.iter().take(n).filter_map(|core| core.first().copied()).collect();
    let left = &p.cores[n..];
    // The housekeeping CPUs (outside an isolated set), else the first core no shard took.
    let spare: Vec<u32> =
        if p.housekeeping.is_empty() { left.first().cloned().unwrap_or_default() } else { p.housekeeping.clone() };
    let free_cores = left.len().saturating_sub(usize::from(p.housekeeping.is_empty() && !left.is_empty()));
    if let Some(q) = quota {
        a.line(
            Topic::Shards,
            format!("{n} shard(s): not more than the CPU quota's whole CPUs"),
            format!("cgroup CPU quota {q:.2} CPUs (cpu.max)"),
            if q < 1.0 {
                "below one CPU the cgroup is throttled every period whatever the shard count; raise the quota to \
                 at least 1 CPU or expect p99 in tens of ms"
                    .to_string()
            } else {
                "shards beyond the quota would only be throttled in turn (latency spikes of up to the CFS period, \
                 100 ms by default); the fraction left runs the bridge"
                    .to_string()
            },
        );
    }
    a.line(
        Topic::Shards,
        format!("shards: {n}, cpus: [{}]", a.cpus.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")),
        format!(
            "{} usable core(s): {}",
            p.cores.len(),
            format_list(&p.cores.iter().flatten().copied().collect::<Vec<_>>())
        ),
        "one pinned shard per core: no shard migrates, each keeps its caches and its own listener",
    );
    match spare.first() {
        Some(&cpu) => {
            a.bridge.cpu = Some(cpu);
            a.nats_server.cpus = spare.clone();
            a.line(
                Topic::Bridge,
                format!("bridge.cpu: {cpu}"),
                if reserve {
                    format!(
                        "{} cores (≥ {HOUSEKEEPING_MIN_CORES}): one is worth keeping from the shards",
                        p.cores.len()
                    )
                } else {
                    format!("CPU(s) {} are allowed but take no shard", format_list(&spare))
                },
                "the bridge's bursts (hashing, batching, checkpoints) no longer preempt a shard: audit on costs \
                 less tail latency",
            );
            a.line(
                Topic::NatsServer,
                format!(
                    "run a local nats-server on CPU(s) {} (`taskset -c {} nats-server …`)",
                    format_list(&spare),
                    format_list(&spare)
                ),
                "those CPUs take no shard",
                "JetStream's writes and acks stay off the shards' cores",
            );
        }
        None => {
            a.bridge.idle = true;
            a.nats_server.nice = Some(BRIDGE_NICE);
            a.line(
                Topic::Bridge,
                "bridge.policy: auto (share the shards' cores as SCHED_IDLE; with `nats`, add bridge.nice: 10)",
                format!(
                    "{} usable core(s), all running shards (a core of its own pays only from {HOUSEKEEPING_MIN_CORES})",
                    p.cores.len()
                ),
                "the bridge runs only when no shard wants the CPU and yields to one at once, so the audit's batches \
                 do not hold up requests and use time the shards leave idle; a shard raises it when it falls behind \
                 (bridge.raise_backlog_bytes). Measured on 2 vCPUs: p99 at 16,000 req/s 0.41 ms against 3.1 ms as \
                 a normal thread, max throughput +4–6 % (nice 10 was neutral). Needs CAP_SYS_NICE or RLIMIT_NICE 20 \
                 (systemd LimitNICE=20), else it runs normal",
            );
            a.line(
                Topic::NatsServer,
                format!("run a local nats-server at nice {BRIDGE_NICE} (`nice -n {BRIDGE_NICE} nats-server …`)"),
                "no CPU is left over for it",
                "shards keep priority; JetStream acks take a little longer under full load",
            );
        }
    }
    free_cores
}

fn uring(facts: &HostFacts, spare_cores: usize, a: &mut Advice) {
    if facts.sysctls.io_uring_disabled.is_some_and(|d| d > 0) {
        a.commands.push("sysctl -w kernel.io_uring_disabled=0   # only if your security policy allows io_uring".into());
    }
    let Some(u) = &facts.syscalls.uring else {
        a.line(Topic::Uring, "driver: auto", "io_uring was not probed", "the gateway picks io_uring when it can");
        return;
    };
    if !u.available {
        a.driver = "epoll".to_string();
        let why = match facts.sysctls.io_uring_disabled {
            Some(d) if d > 0 => format!("kernel.io_uring_disabled = {d}"),
            _ => u.error.clone().unwrap_or_else(|| "io_uring_setup failed".to_string()),
        };
        a.line(
            Topic::Uring,
            "driver: epoll",
            format!("no io_uring here ({why}{})", facts.kernel.map_or(String::new(), |k| format!("; kernel {k}"))),
            "the shards run monoio's epoll driver from the start: one syscall per readiness event, so expect less \
             throughput per core than with io_uring (kernel ≥ 6.0 recommended)",
        );
        return;
    }
    let shards = a.shards as u64;
    // Before 5.12 (no NATIVE_WORKERS) ring memory is charged to RLIMIT_MEMLOCK.
    let memlock = facts.syscalls.memlock.and_then(|m| m.soft);
    if let (false, Some(limit)) = (u.native_workers, memlock) {
        let ring_bytes = |entries: u64| entries * 64 + entries * 2 * 16 + 8192;
        let mut entries = u64::from(URING_ENTRIES_DEFAULT);
        while entries > u64::from(URING_ENTRIES_MIN) && ring_bytes(entries).saturating_mul(shards) > limit {
            entries /= 2;
        }
        if entries < u64::from(URING_ENTRIES_DEFAULT) {
            a.uring.entries = entries as u32;
            a.line(
                Topic::Uring,
                format!(
                    "uring.entries: {entries} (or raise RLIMIT_MEMLOCK, e.g. LimitMEMLOCK=infinity, and keep 4096)"
                ),
                format!("kernel before 5.12 charges ring memory to RLIMIT_MEMLOCK ({limit} bytes)"),
                "every shard's ring fits the limit, so none falls back to epoll at start",
            );
        }
    }
    let mut have = Vec::new();
    for (on, name) in [
        (u.sqpoll, "SQPOLL permitted"),
        (u.coop_taskrun, "COOP_TASKRUN+SINGLE_ISSUER"),
        (u.defer_taskrun, "DEFER_TASKRUN"),
        (u.fast_poll, "FAST_POLL"),
        (u.registered_buffers, "registered buffers"),
        (u.provided_buffer_rings, "provided-buffer rings"),
    ] {
        if on {
            have.push(name);
        }
    }
    a.line(
        Topic::Uring,
        format!("driver: auto, uring.entries: {}", a.uring.entries),
        format!(
            "io_uring works here: {}",
            if have.is_empty() { "no optional features".to_string() } else { have.join(", ") }
        ),
        if u.coop_taskrun {
            "shards run io_uring with cooperative task running (fewer interrupts of a busy shard)"
        } else {
            "shards run plain io_uring rings (this kernel refuses COOP_TASKRUN; 6.0+ interrupts a busy shard less)"
        },
    );
    if u.sqpoll && spare_cores >= a.shards {
        a.uring.sqpoll = true;
        a.line(
            Topic::Uring,
            "uring.sqpoll: true",
            format!("SQPOLL is permitted and {spare_cores} whole core(s) take no shard"),
            "a kernel thread per shard submits for it: fewer syscalls per request, at a core's worth of spinning each",
        );
    } else {
        a.line(
            Topic::Uring,
            "uring.sqpoll: false",
            if u.sqpoll {
                format!(
                    "SQPOLL is permitted, but only {spare_cores} whole core(s) are left for {} poller thread(s)",
                    a.shards
                )
            } else {
                "this process may not start SQPOLL rings".to_string()
            },
            "a poller thread spins on a core; sharing the shards' cores it would take their time",
        );
    }
}

fn limits(facts: &HostFacts, a: &mut Advice) {
    let shards = a.shards.max(1) as u64;
    let memory = match (facts.memory.available_bytes.or(facts.memory.total_bytes), facts.cgroup.memory_max_bytes) {
        (Some(m), Some(c)) => Some((m.min(c), if c < m { "cgroup memory.max" } else { "MemAvailable" })),
        (Some(m), None) => Some((m, "MemAvailable")),
        (None, Some(c)) => Some((c, "cgroup memory.max")),
        (None, None) => None,
    };
    let mut conns = CONNECTIONS_PER_SHARD_DEFAULT;
    let mut why = Vec::new();
    if let Some((bytes, source)) = memory {
        // Half the memory for connections; bodies in flight get a quarter (below).
        let fit = (bytes / 2) / CONNECTION_BYTES_ESTIMATE / shards;
        if fit < conns {
            conns = fit.max(1);
            why.push(format!(
                "{source} {} MiB: half of it at ~{} KiB per connection is {fit} per shard",
                bytes >> 20,
                CONNECTION_BYTES_ESTIMATE >> 10
            ));
        }
        let body_fit = ((bytes / 4) / shards).max(BODY_BYTES_MAX_DEFAULT);
        if body_fit < BODY_IN_FLIGHT_DEFAULT_BYTES {
            a.body_bytes_in_flight_max = body_fit;
            a.line(
                Topic::Limits,
                format!("limits.body_bytes_in_flight_max: {body_fit}"),
                format!("{source} {} MiB over {shards} shard(s)", bytes >> 20),
                "request bodies held at once stay within a quarter of memory; past it a shard answers 503 overloaded \
                 instead of the host swapping or the OOM killer ending the gateway",
            );
        }
    }
    let mut raise_nofile = None;
    if let Some(hard) = facts.syscalls.nofile.map(|n| n.hard) {
        // Each client connection may hold an upstream connection too.
        let hard = hard.unwrap_or(u64::MAX);
        let fds = hard.saturating_sub(FD_RESERVE) / shards / 2;
        if fds < conns {
            conns = fds.max(1);
            why.push(format!("RLIMIT_NOFILE hard limit {hard} allows {fds} per shard"));
            let want =
                CONNECTIONS_PER_SHARD_DEFAULT.saturating_mul(2).saturating_mul(shards).saturating_add(FD_RESERVE);
            raise_nofile = Some(Line {
                topic: Topic::Host,
                advice: format!(
                    "raise the open-file limit (LimitNOFILE={want} in the unit) to allow \
                     {CONNECTIONS_PER_SHARD_DEFAULT} per shard"
                ),
                because: format!("RLIMIT_NOFILE hard limit {hard}"),
                effect:
                    "the gateway raises its soft limit to the hard one at start; accepts fail with EMFILE beyond it"
                        .into(),
            });
        }
    }
    a.connections_per_shard_max = conns;
    if why.is_empty() {
        a.line(
            Topic::Limits,
            format!("limits.connections_per_shard_max: {conns} (the default)"),
            match memory {
                Some((bytes, source)) => format!("{source} {} MiB holds it", bytes >> 20),
                None => "memory unknown".to_string(),
            },
            "beyond it a shard answers 503 and closes, rather than run out of memory or descriptors",
        );
    } else {
        a.line(
            Topic::Limits,
            format!("limits.connections_per_shard_max: {conns}"),
            why.join("; "),
            "beyond it a shard answers 503 and closes, rather than run out of memory or descriptors",
        );
    }
    a.lines.extend(raise_nofile);
}

fn network(facts: &HostFacts, siblings: &[u32], a: &mut Advice) {
    if a.cpus.is_empty() {
        return;
    }
    // With shards on isolated CPUs interrupts belong on the others, so the shards stay
    // quiet; with SMT on the shards' sibling threads (same core and caches, no preemption
    // of the shard); else on the shard CPUs themselves.
    let isolated = facts.cpus.isolated.as_deref().is_some_and(|i| a.cpus.iter().all(|c| i.contains(c)));
    let irq_cpus: Vec<u32> = if isolated && !a.nats_server.cpus.is_empty() {
        a.nats_server.cpus.clone()
    } else if siblings.len() == a.cpus.len() {
        siblings.to_vec()
    } else {
        a.cpus.clone()
    };
    for nic in &facts.nics {
        nic_advice(nic, &irq_cpus, isolated, a);
    }
}

fn nic_advice(nic: &Nic, irq_cpus: &[u32], isolated: bool, a: &mut Advice) {
    let name = &nic.name;
    let rx = nic.rx_queues.len();
    let rps_off = nic.rx_queues.iter().all(|q| q.rps_cpus.as_deref().is_none_or(<[u32]>::is_empty));
    if rx == 1 && a.shards > 1 && rps_off {
        let mask = format_mask(irq_cpus);
        a.commands.push(format!("echo {mask} > /sys/class/net/{name}/queues/rx-0/rps_cpus"));
        a.line(
            Topic::Network,
            format!("RPS on {name}: spread rx-0 over CPUs {}", format_list(irq_cpus)),
            format!("{name} has one receive queue and RPS is off"),
            "every packet's protocol work no longer lands on the one CPU taking the interrupt; shards share it",
        );
    } else if rx > 1 && !nic.irqs.is_empty() {
        let mut changes = Vec::new();
        for (i, irq) in nic.irqs.iter().enumerate() {
            let want = irq_cpus[i % irq_cpus.len()];
            if irq.affinity.as_deref() != Some(&[want][..]) {
                changes.push(format!("echo {want} > /proc/irq/{}/smp_affinity_list", irq.number));
            }
        }
        if changes.is_empty() {
            a.line(
                Topic::Network,
                format!("leave {name}'s IRQ affinity as it is"),
                format!(
                    "its {} interrupts are already spread one per CPU over {}",
                    nic.irqs.len(),
                    format_list(irq_cpus)
                ),
                "no change",
            );
        } else {
            a.line(
                Topic::Network,
                format!("pin {name}'s {} interrupts round-robin over CPUs {} (stop irqbalance or ban them there)", nic.irqs.len(), format_list(irq_cpus)),
                format!("{name} has {rx} receive queues; their IRQs are not spread one per CPU"),
                if isolated {
                    "interrupts and softirq work stay off the isolated shard CPUs"
                } else if irq_cpus != a.cpus {
                    "each queue's softirq work runs on a shard core's sibling thread: the packet is in that core's \
                     caches when the shard reads it, and the shard itself is not interrupted"
                } else {
                    "each queue's softirq work runs on one shard core, spread evenly, instead of wherever irqbalance put it"
                },
            );
            a.commands.extend(changes);
        }
    }
    let tx = nic.tx_queues.len();
    if tx >= a.shards && a.shards > 1 && nic.tx_queues.iter().all(|q| q.as_deref().is_none_or(<[u32]>::is_empty)) {
        for (i, cpu) in a.cpus.iter().enumerate() {
            a.commands.push(format!("echo {} > /sys/class/net/{name}/queues/tx-{i}/xps_cpus", format_mask(&[*cpu])));
        }
        a.line(
            Topic::Network,
            format!("XPS on {name}: transmit queue i for shard CPU i"),
            format!("{name} has {tx} transmit queues and XPS is off"),
            "each shard sends on its own queue: no lock contention on a shared transmit queue",
        );
    }
}

fn sysctls(facts: &HostFacts, a: &mut Advice) {
    let s = &facts.sysctls;
    let mut raise = |key: &str, current: Option<u64>, floor: u64, why: &str, effect: &str| match current {
        Some(v) if v < floor => {
            a.sysctls.push(Sysctl { key: key.into(), value: floor.to_string(), current: Some(v.to_string()) });
            a.line(Topic::Sysctl, format!("{key} = {floor}"), format!("{key} is {v}; {why}"), effect);
        }
        _ => {}
    };
    raise(
        "net.core.somaxconn",
        s.somaxconn,
        BACKLOG,
        "the kernel silently caps every listen backlog (listen_backlog: 4096) at it",
        "bursts of new connections queue instead of being dropped (SYN retries cost clients a second)",
    );
    raise(
        "net.ipv4.tcp_max_syn_backlog",
        s.tcp_max_syn_backlog,
        BACKLOG,
        "half-open connections beyond it are dropped",
        "connection storms after a restart or failover are absorbed",
    );
    if let Some([lo, hi]) = s.ip_local_port_range {
        if hi.saturating_sub(lo) < LOCAL_PORTS_MIN {
            a.sysctls.push(Sysctl {
                key: "net.ipv4.ip_local_port_range".into(),
                value: "1024 65535".into(),
                current: Some(format!("{lo} {hi}")),
            });
            a.line(
                Topic::Sysctl,
                "net.ipv4.ip_local_port_range = 1024 65535",
                format!("only {} ephemeral ports ({lo}–{hi})", hi.saturating_sub(lo)),
                "upstream connections to one provider address no longer run out of source ports",
            );
        }
    }
    if let Some(bp) = s.busy_poll_us {
        a.line(
            Topic::Sysctl,
            format!("leave net.core.busy_poll at {bp}"),
            format!("busy_poll = {bp} µs"),
            if bp == 0 {
                "busy polling spins in the kernel for packets; it pays only on isolated cores with spare time, \
                 which a loaded shard does not have"
            } else {
                "busy polling spins on the shards' CPUs; if p99 is worse under full load, set it to 0"
            },
        );
    }
    if let Some(fo) = s.tcp_fastopen {
        a.line(
            Topic::Sysctl,
            format!("leave net.ipv4.tcp_fastopen at {fo}"),
            format!("tcp_fastopen = {fo}"),
            "clients and providers keep connections alive, so fast open saves a round trip only on the first request",
        );
    }
    if let (Some(r), Some(w)) = (s.tcp_rmem_bytes, s.tcp_wmem_bytes) {
        a.line(
            Topic::Sysctl,
            "leave tcp_rmem / tcp_wmem / rmem_max / wmem_max as they are",
            format!("tcp_rmem default {} KiB, tcp_wmem default {} KiB", r[1] >> 10, w[1] >> 10),
            "chat requests and answers are kilobytes; larger buffers cost memory per connection and gain nothing",
        );
    }
}

fn host(facts: &HostFacts, a: &mut Advice) {
    if let Some(g) = &facts.governor {
        if g != "performance" {
            a.commands.push("cpupower frequency-set -g performance".into());
            a.line(
                Topic::Host,
                "CPU governor: performance",
                format!("scaling_governor is {g}"),
                "cores do not clock down between bursts: lower p99 at low load, more power drawn",
            );
        }
    }
    if facts.thp.as_deref() == Some("always") {
        a.commands.push("echo madvise > /sys/kernel/mm/transparent_hugepage/enabled".into());
        a.line(
            Topic::Host,
            "transparent hugepages: madvise",
            "THP is `always`",
            "no stalls from page compaction and khugepaged in the middle of a request",
        );
    }
    if let Some(nr) = facts.sysctls.nr_open {
        let need = a.connections_per_shard_max.saturating_mul(2).saturating_mul(a.shards as u64);
        if nr < need {
            a.line(
                Topic::Host,
                format!("fs.nr_open ≥ {need}"),
                format!("fs.nr_open is {nr}, the ceiling of any open-file limit"),
                "LimitNOFILE can be raised to what the shards need",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::{CpuFacts, KernelVersion, Rlimit, SyscallFacts, UringFacts};

    fn cpus(online: std::ops::Range<u32>) -> CpuFacts {
        CpuFacts { online: Some(online.clone().collect()), allowed: Some(online.collect()), ..CpuFacts::default() }
    }

    #[test]
    fn isolated_cpus_take_the_shards_and_the_rest_takes_the_bridge() {
        let mut f = HostFacts { cpus: cpus(0..8), ..HostFacts::default() };
        f.cpus.isolated = Some(vec![2, 3, 4, 5, 6, 7]);
        // isolcpus keeps them out of the default affinity.
        f.cpus.allowed = Some(vec![0, 1]);
        let a = advise(&f);
        assert_eq!(a.cpus, vec![2, 3, 4, 5, 6, 7]);
        assert_eq!(a.bridge.cpu, Some(0));
        assert_eq!(a.nats_server.cpus, vec![0, 1]);
    }

    #[test]
    fn old_kernels_fit_rings_into_the_memlock_limit() {
        let uring = UringFacts { available: true, ..UringFacts::default() };
        let mut f = HostFacts { cpus: cpus(0..2), ..HostFacts::default() };
        f.kernel = Some(KernelVersion { major: 5, minor: 10, patch: 0 });
        f.syscalls = SyscallFacts {
            uring: Some(uring),
            memlock: Some(Rlimit { soft: Some(256 * 1024), hard: Some(256 * 1024) }),
            nofile: None,
        };
        let a = advise(&f);
        // 2 rings of 1024 entries: 2 × (64 + 32 + 8) KiB fits 256 KiB; 2 × 200 KiB at 2048 would not.
        assert_eq!(a.uring.entries, 1024);
        f.syscalls.memlock = Some(Rlimit { soft: None, hard: None });
        assert_eq!(advise(&f).uring.entries, URING_ENTRIES_DEFAULT, "unlimited");
    }

    #[test]
    fn a_quota_below_one_cpu_still_runs_one_shard() {
        let mut f = HostFacts { cpus: cpus(0..4), ..HostFacts::default() };
        f.cgroup.cpu_quota_cpus = Some(0.5);
        let a = advise(&f);
        assert_eq!(a.shards, 1);
        assert!(a.lines.iter().any(|l| l.effect.contains("below one CPU")));
    }

    #[test]
    fn eight_cores_keep_one_and_seven_do_not() {
        let a = advise(&HostFacts { cpus: cpus(0..8), ..HostFacts::default() });
        assert_eq!((a.shards, a.bridge.cpu), (7, Some(7)));
        let a = advise(&HostFacts { cpus: cpus(0..7), ..HostFacts::default() });
        assert_eq!((a.shards, a.bridge.cpu, a.bridge.nice, a.bridge.idle), (7, None, None, true));
    }
}
