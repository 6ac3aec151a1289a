//! `advise` on recorded host trees (`tests/fixtures/*`, written by `generate.py`), and
//! the reader on the machine the tests run on.

use std::path::PathBuf;

use gatekeeper_tuning::{advise, inspect, read_host, Advice, HostFacts, SyscallFacts, Topic};

fn fixture(name: &str) -> HostFacts {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    let json = std::fs::read_to_string(root.join("syscalls.json")).expect("syscalls.json");
    let syscalls: SyscallFacts = serde_json::from_str(&json).expect("syscalls.json parses");
    read_host(&root, syscalls)
}

fn sysctl<'a>(a: &'a Advice, key: &str) -> Option<&'a str> {
    a.sysctls.iter().find(|s| s.key == key).map(|s| s.value.as_str())
}

fn has_line(a: &Advice, topic: Topic, needle: &str) -> bool {
    a.lines.iter().any(|l| l.topic == topic && (l.advice.contains(needle) || l.because.contains(needle)))
}

#[test]
fn two_vcpu_vm_shares_both_cores_and_lowers_the_bridge() {
    let f = fixture("vm-2vcpu");
    assert_eq!(f.cpus.online.as_deref(), Some(&[0, 1][..]));
    assert_eq!(f.nics.len(), 1, "lo is not a NIC");
    assert_eq!(f.nics[0].irqs.len(), 3);
    let a = advise(&f);
    assert_eq!((a.shards, a.cpus.as_slice()), (2, &[0, 1][..]));
    assert_eq!((a.bridge.cpu, a.bridge.nice, a.bridge.idle), (None, None, true));
    assert!(has_line(&a, Topic::Bridge, "bridge.policy: auto"));
    assert_eq!(a.nats_server.nice, Some(10));
    assert_eq!(a.driver, "auto");
    assert!(!a.uring.sqpoll, "no spare core for a poller");
    assert_eq!(a.connections_per_shard_max, 10_000);
    assert_eq!(sysctl(&a, "net.ipv4.tcp_max_syn_backlog"), Some("4096"));
    assert_eq!(sysctl(&a, "net.core.somaxconn"), None, "already 4096");
    assert!(a.commands.contains(&"echo 3 > /sys/class/net/eth0/queues/rx-0/rps_cpus".to_string()), "{:?}", a.commands);
    assert!(a.lines.iter().all(|l| !l.because.is_empty() && !l.effect.is_empty()));
}

#[test]
fn smt_host_runs_one_shard_per_core_and_keeps_a_core_for_the_bridge() {
    let f = fixture("smt-16c");
    assert_eq!(f.cpus.cores.len(), 16);
    assert_eq!(f.cpus.cores[3], vec![3, 19]);
    let a = advise(&f);
    assert_eq!(a.shards, 15);
    assert_eq!(a.cpus, (0..15).collect::<Vec<u32>>(), "first thread of each core, the last core kept");
    assert_eq!(a.bridge.cpu, Some(15));
    assert_eq!(a.nats_server.cpus, vec![15, 31], "both threads of the kept core");
    assert!(has_line(&a, Topic::Shards, "SMT"));
    assert_eq!(sysctl(&a, "net.core.somaxconn"), Some("4096"));
    assert_eq!(sysctl(&a, "net.ipv4.tcp_max_syn_backlog"), Some("4096"));
    assert!(a.commands.iter().any(|c| c.contains("frequency-set -g performance")));
    assert!(a.commands.iter().any(|c| c.contains("transparent_hugepage")));
    // Interrupts go to the shard cores' sibling threads (16 for CPU 0's core, …).
    assert!(a.commands.contains(&"echo 16 > /proc/irq/40/smp_affinity_list".to_string()), "{:?}", a.commands);
    assert!(a.commands.contains(&"echo 30 > /proc/irq/54/smp_affinity_list".to_string()));
    assert!(a.commands.contains(&"echo 16 > /proc/irq/55/smp_affinity_list".to_string()), "16th IRQ wraps around");
    assert!(has_line(&a, Topic::Network, "CPUs 16-30"));
    assert!(a.commands.contains(&"echo 4000 > /sys/class/net/eno1/queues/tx-14/xps_cpus".to_string()));
}

#[test]
fn numa_host_keeps_the_shards_on_the_nics_node() {
    let f = fixture("numa-2x32");
    assert_eq!(f.cpus.numa_nodes.len(), 2);
    assert_eq!(f.nics[0].numa_node, Some(1));
    let a = advise(&f);
    assert_eq!(a.shards, 31);
    assert_eq!(a.cpus, (32..63).collect::<Vec<u32>>());
    assert_eq!(a.bridge.cpu, Some(63));
    assert!(has_line(&a, Topic::Shards, "NUMA node 1"));
    assert!(has_line(&a, Topic::Network, "leave ens1f0's IRQ affinity"), "already one per shard CPU");
    assert!(!a.commands.iter().any(|c| c.contains("/proc/irq/")));
    assert!(a.sysctls.is_empty(), "{:?}", a.sysctls);
}

#[test]
fn container_with_a_quota_and_a_cpuset_runs_two_shards_and_the_bridge_beside_them() {
    let f = fixture("container-quota");
    assert_eq!(f.cgroup.version, Some(2));
    assert_eq!(f.cgroup.cpu_quota_cpus, Some(2.5));
    assert_eq!(f.cgroup.cpuset.as_deref(), Some(&[2, 3, 4, 5][..]));
    assert_eq!(f.cgroup.memory_max_bytes, Some(2 << 30));
    let a = advise(&f);
    assert_eq!((a.shards, a.cpus.as_slice()), (2, &[2, 3][..]), "floor(2.5) shards inside the cpuset");
    assert_eq!(a.bridge.cpu, Some(4), "a cpuset CPU that takes no shard");
    assert!(has_line(&a, Topic::Shards, "quota 2.50"));
    // 2 GiB (the cgroup's, not the host's 20 GiB): half of it at 64 KiB per connection over 2 shards.
    assert_eq!(a.connections_per_shard_max, 8192);
    assert!(!a.uring.sqpoll, "SQPOLL refused here");
    assert!(has_line(&a, Topic::Uring, "may not start SQPOLL"));
}

#[test]
fn kernel_without_io_uring_gets_epoll() {
    let f = fixture("no-uring");
    assert_eq!(f.kernel.map(|k| (k.major, k.minor)), Some((4, 19)));
    let a = advise(&f);
    assert_eq!(a.driver, "epoll");
    assert!(has_line(&a, Topic::Uring, "Function not implemented"));
    assert_eq!((a.shards, a.bridge.idle), (4, true));
    assert_eq!(sysctl(&a, "net.core.somaxconn"), Some("4096"));
    assert_eq!(sysctl(&a, "net.ipv4.ip_local_port_range"), Some("1024 65535"));
    assert!(a.config_yaml().contains("driver: epoll"));
}

#[test]
fn every_fixture_emits_a_fragment_with_its_advice() {
    for name in ["vm-2vcpu", "smt-16c", "numa-2x32", "container-quota", "no-uring"] {
        let a = advise(&fixture(name));
        let y: serde_yaml::Value = serde_yaml::from_str(&a.config_yaml()).expect("YAML");
        assert_eq!(y["shards"].as_u64(), Some(a.shards as u64), "{name}");
        let cpus: Vec<u64> = y["cpus"].as_sequence().expect("cpus").iter().filter_map(|v| v.as_u64()).collect();
        assert_eq!(cpus.len(), a.shards, "{name}: one CPU per shard");
        assert_eq!(y["listen_backlog"].as_u64(), Some(4096), "{name}");
    }
}

#[test]
fn this_machine_reads_sanely() {
    let f = inspect();
    let online = f.cpus.online.clone().expect("online CPUs");
    assert!(!online.is_empty());
    let allowed = f.cpus.allowed.clone().expect("Cpus_allowed_list");
    assert!(allowed.iter().all(|c| online.contains(c)), "allowed {allowed:?} within online {online:?}");
    assert!(f.kernel.expect("kernel").major >= 4);
    let (total, avail) = (f.memory.total_bytes.expect("MemTotal"), f.memory.available_bytes.expect("MemAvailable"));
    assert!(avail > 0 && avail <= total);
    assert!(f.sysctls.somaxconn.expect("somaxconn") > 0);
    let nofile = f.syscalls.nofile.expect("RLIMIT_NOFILE");
    assert!(nofile.soft.unwrap_or(u64::MAX) <= nofile.hard.unwrap_or(u64::MAX));
    let uring = f.syscalls.uring.clone().expect("probed");
    assert!(uring.available || uring.error.is_some(), "either a ring or the reason why not");
    let a = advise(&f);
    assert!(a.shards >= 1 && a.shards <= online.len());
    assert!(a.cpus.iter().all(|c| online.contains(c)));
}
