//! Where the gateway's threads run and how their rings are set up: `cpus` (the shards'
//! CPUs), `bridge` (the bridge thread's CPU and priority), `uring` (each shard's ring)
//! and `listen_backlog`. `gatekeeper tune` recommends every one of them.

use serde::{Deserialize, Serialize};

use super::error::{invalid, ConfigError};
use super::server::Shards;

/// The highest CPU number `cpus` and `bridge.cpu` accept: the affinity mask the
/// kernel interface takes (`CPU_SETSIZE`) holds 1024 CPUs.
pub const CPU_MAX: usize = 1023;
/// Largest `uring.entries`: the kernel's own ceiling (`IORING_MAX_ENTRIES`).
pub const URING_ENTRIES_MAX: u32 = 32_768;
/// Smallest `uring.entries`: below it a shard with a few dozen connections stalls on a
/// full submission queue.
pub const URING_ENTRIES_MIN: u32 = 16;
/// Largest `listen_backlog`: the kernel caps a backlog at `net.core.somaxconn`, whose
/// usual ceiling this is.
pub const LISTEN_BACKLOG_MAX: u32 = 65_535;
/// Largest `uring.sqpoll_idle_ms`.
pub const SQPOLL_IDLE_MS_MAX: u32 = 60_000;

/// `bridge:` — where the bridge thread (audit shipping, NATS, config watch) runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BridgeConfig {
    /// CPU the bridge thread is pinned to (0..=1023). Absent: wherever the scheduler
    /// puts it. The start fails when the CPU cannot be taken (offline, outside the cpuset).
    pub cpu: Option<usize>,
    /// The bridge thread's nice value (-20..=19; higher runs later). Absent: the
    /// process's. A positive value lets a runnable shard win the CPU over the bridge's
    /// bursts; a negative one needs `CAP_SYS_NICE`, and the start fails without it.
    pub nice: Option<i32>,
    /// The bridge thread's scheduling class: `auto` (default), `idle` or `normal`.
    /// `idle` runs it `SCHED_IDLE` — only on CPU time no other thread wants — while it
    /// keeps up, and a shard raises it to a normal thread when it falls
    /// `raise_backlog_bytes` behind (see `bridge/priority.rs`). `auto` is `idle` for
    /// the embedded audit log (no `nats`) when neither `cpu` nor `nice` is set, else
    /// `normal`: with `nats` the same thread carries the budget gossip and credit
    /// claims, which should not wait for idle time.
    pub policy: BridgePolicy,
    /// Under the idle policy: a shard's unshipped WAL bytes at which it raises the
    /// bridge to a normal thread (64 KiB..=1 GiB; at most half of `audit.spool_bytes_max` is used).
    /// Default 4 MiB (about a third of a second of records at 30,000 requests/s per
    /// shard). Lower: the audit log lags less behind under saturation, the bridge
    /// competes with the shards more often.
    pub raise_backlog_bytes: u64,
}

/// Default of `bridge.raise_backlog_bytes`.
pub const RAISE_BACKLOG_BYTES_DEFAULT: u64 = 4 << 20;
/// Smallest `bridge.raise_backlog_bytes`: below one batch the bridge would be raised
/// by every batch.
pub const RAISE_BACKLOG_BYTES_MIN: u64 = 64 << 10;
/// Largest `bridge.raise_backlog_bytes`.
pub const RAISE_BACKLOG_BYTES_MAX: u64 = 1 << 30;

impl Default for BridgeConfig {
    fn default() -> Self {
        BridgeConfig {
            cpu: None,
            nice: None,
            policy: BridgePolicy::Auto,
            raise_backlog_bytes: RAISE_BACKLOG_BYTES_DEFAULT,
        }
    }
}

/// `bridge.policy`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BridgePolicy {
    /// `idle` for the embedded audit log without `cpu`/`nice`, else `normal`.
    #[default]
    Auto,
    /// `SCHED_IDLE` while the bridge keeps up.
    Idle,
    /// An ordinary thread (at `nice`).
    Normal,
}

impl BridgeConfig {
    /// Whether the bridge takes the idle policy, for a gateway with (`nats`) or
    /// without NATS and with the audit log on or off.
    pub fn idle(&self, audit_on: bool, nats: bool) -> bool {
        match self.policy {
            BridgePolicy::Idle => audit_on,
            BridgePolicy::Normal => false,
            BridgePolicy::Auto => audit_on && !nats && self.cpu.is_none() && self.nice.is_none(),
        }
    }
}

/// `uring:` — each shard's io_uring ring (unused by `driver: epoll`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct UringConfig {
    /// Submission queue entries per shard (16..=32768; the kernel rounds up to a power of
    /// two). Default 4096. A full queue makes the shard submit early, costing a syscall.
    pub entries: u32,
    /// A kernel thread per shard polls its submission queue (SQPOLL), saving the submit
    /// syscall at the cost of a thread spinning on a CPU. Default false. A kernel or
    /// sandbox that refuses SQPOLL fails the start.
    pub sqpoll: bool,
    /// How long an idle SQPOLL thread spins before it sleeps, ms (1..=60000). Default 1000.
    pub sqpoll_idle_ms: u32,
}

impl Default for UringConfig {
    fn default() -> Self {
        UringConfig { entries: gatekeeper_net::URING_ENTRIES_DEFAULT, sqpoll: false, sqpoll_idle_ms: 1000 }
    }
}

impl From<&UringConfig> for gatekeeper_net::UringSettings {
    fn from(u: &UringConfig) -> Self {
        gatekeeper_net::UringSettings { entries: u.entries, sqpoll_idle_ms: u.sqpoll.then_some(u.sqpoll_idle_ms) }
    }
}

/// Default of `listen_backlog`.
pub fn default_listen_backlog() -> u32 {
    4096
}

/// The number of shards: the length of `cpus` when it is given, else `shards`.
pub fn shard_count(shards: Shards, cpus: Option<&[usize]>) -> usize {
    match cpus {
        Some(c) => c.len(),
        None => shards.resolve(),
    }
}

/// Checks `cpus` (and that `shards` agrees with it), `bridge`, `uring` and `listen_backlog`.
pub(super) fn validate(
    shards: Shards,
    cpus: Option<&[usize]>,
    bridge: &BridgeConfig,
    uring: &UringConfig,
    listen_backlog: u32,
) -> Result<(), ConfigError> {
    if let Some(cpus) = cpus {
        check_cpus(shards, cpus)?;
    }
    if let Some(cpu) = bridge.cpu {
        if cpu > CPU_MAX {
            return Err(invalid("bridge.cpu", format!("must be at most {CPU_MAX}")));
        }
    }
    if let Some(nice) = bridge.nice {
        if !(-20..=19).contains(&nice) {
            return Err(invalid("bridge.nice", "must be within -20..=19"));
        }
    }
    if !(RAISE_BACKLOG_BYTES_MIN..=RAISE_BACKLOG_BYTES_MAX).contains(&bridge.raise_backlog_bytes) {
        return Err(invalid(
            "bridge.raise_backlog_bytes",
            format!("must be within {RAISE_BACKLOG_BYTES_MIN}..={RAISE_BACKLOG_BYTES_MAX}"),
        ));
    }
    if !(URING_ENTRIES_MIN..=URING_ENTRIES_MAX).contains(&uring.entries) {
        return Err(invalid("uring.entries", format!("must be within {URING_ENTRIES_MIN}..={URING_ENTRIES_MAX}")));
    }
    if !(1..=SQPOLL_IDLE_MS_MAX).contains(&uring.sqpoll_idle_ms) {
        return Err(invalid("uring.sqpoll_idle_ms", format!("must be within 1..={SQPOLL_IDLE_MS_MAX}")));
    }
    if !(1..=LISTEN_BACKLOG_MAX).contains(&listen_backlog) {
        return Err(invalid("listen_backlog", format!("must be within 1..={LISTEN_BACKLOG_MAX}")));
    }
    Ok(())
}

/// `cpus` sets the shard count, so `shards` may only be `auto` or the same number.
pub fn check_cpus(shards: Shards, cpus: &[usize]) -> Result<(), ConfigError> {
    if cpus.is_empty() {
        return Err(invalid("cpus", "must list at least one CPU (or be left out)"));
    }
    if let Some(cpu) = cpus.iter().find(|&&c| c > CPU_MAX) {
        return Err(invalid("cpus", format!("CPU {cpu} is above {CPU_MAX}")));
    }
    let mut seen = cpus.to_vec();
    seen.sort_unstable();
    if let Some(w) = seen.windows(2).find(|w| w[0] == w[1]) {
        return Err(invalid("cpus", format!("CPU {} is listed twice (one shard per CPU)", w[0])));
    }
    if let Shards::Count(n) = shards {
        if n != cpus.len() {
            return Err(invalid(
                "cpus",
                format!(
                    "lists {} CPU(s) but shards is {n}; the list sets the shard count, so leave `shards` out or make them agree",
                    cpus.len()
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(cpus: Option<&[usize]>, bridge: BridgeConfig, uring: UringConfig, backlog: u32) -> Result<(), String> {
        validate(Shards::Auto, cpus, &bridge, &uring, backlog).map_err(|e| e.to_string())
    }

    #[test]
    fn cpus_set_the_shard_count_and_must_agree_with_shards() {
        assert_eq!(shard_count(Shards::Count(3), Some(&[4, 5])), 2);
        assert_eq!(shard_count(Shards::Count(3), None), 3);
        assert!(check_cpus(Shards::Auto, &[0, 1]).is_ok());
        assert!(check_cpus(Shards::Count(2), &[0, 1]).is_ok());
        let e = check_cpus(Shards::Count(3), &[0, 1]).map_err(|e| e.to_string()).unwrap_err();
        assert!(e.starts_with("cpus: lists 2 CPU(s) but shards is 3"), "{e}");
        let e = check_cpus(Shards::Auto, &[1, 0, 1]).map_err(|e| e.to_string()).unwrap_err();
        assert_eq!(e, "cpus: CPU 1 is listed twice (one shard per CPU)");
        assert!(check_cpus(Shards::Auto, &[]).is_err());
        assert!(check_cpus(Shards::Auto, &[CPU_MAX]).is_ok(), "the edge");
        assert!(check_cpus(Shards::Auto, &[CPU_MAX + 1]).is_err(), "one past");
    }

    #[test]
    fn bridge_and_uring_limits_at_their_edges() {
        let (b, u) = (BridgeConfig::default(), UringConfig::default());
        assert!(check(None, b, u, 4096).is_ok());
        for (nice, ok) in [(-20, true), (19, true), (-21, false), (20, false)] {
            let r = check(None, BridgeConfig { nice: Some(nice), ..b }, u, 4096);
            assert_eq!(r.is_ok(), ok, "nice {nice}: {r:?}");
        }
        assert!(check(None, BridgeConfig { cpu: Some(CPU_MAX), ..b }, u, 4096).is_ok());
        assert_eq!(
            check(None, BridgeConfig { cpu: Some(CPU_MAX + 1), ..b }, u, 4096),
            Err("bridge.cpu: must be at most 1023".to_string())
        );
        for (bytes, ok) in [
            (RAISE_BACKLOG_BYTES_MIN, true),
            (RAISE_BACKLOG_BYTES_MAX, true),
            (RAISE_BACKLOG_BYTES_MIN - 1, false),
            (RAISE_BACKLOG_BYTES_MAX + 1, false),
        ] {
            let r = check(None, BridgeConfig { raise_backlog_bytes: bytes, ..b }, u, 4096);
            assert_eq!(r.is_ok(), ok, "raise_backlog_bytes {bytes}: {r:?}");
        }
        for (entries, ok) in [(URING_ENTRIES_MIN, true), (URING_ENTRIES_MAX, true), (15, false), (32_769, false)] {
            assert_eq!(check(None, b, UringConfig { entries, ..u }, 4096).is_ok(), ok, "entries {entries}");
        }
        for (idle, ok) in [(1, true), (SQPOLL_IDLE_MS_MAX, true), (0, false), (SQPOLL_IDLE_MS_MAX + 1, false)] {
            assert_eq!(check(None, b, UringConfig { sqpoll_idle_ms: idle, ..u }, 4096).is_ok(), ok, "idle {idle}");
        }
        for (backlog, ok) in [(1, true), (LISTEN_BACKLOG_MAX, true), (0, false), (LISTEN_BACKLOG_MAX + 1, false)] {
            assert_eq!(check(None, b, u, backlog).is_ok(), ok, "backlog {backlog}");
        }
    }

    #[test]
    fn auto_policy_is_idle_only_for_the_embedded_audit_log_without_placement() {
        let b = BridgeConfig::default();
        assert!(b.idle(true, false));
        assert!(!b.idle(true, true), "nats: the thread carries gossip and claims");
        assert!(!b.idle(false, false), "audit off: nothing to ship");
        assert!(!BridgeConfig { cpu: Some(1), ..b }.idle(true, false), "a core of its own");
        assert!(!BridgeConfig { nice: Some(10), ..b }.idle(true, false), "nice asks for a normal thread");
        assert!(BridgeConfig { policy: BridgePolicy::Idle, ..b }.idle(true, true));
        assert!(!BridgeConfig { policy: BridgePolicy::Idle, ..b }.idle(false, false));
        assert!(!BridgeConfig { policy: BridgePolicy::Normal, ..b }.idle(true, false));
        let parsed: BridgeConfig = serde_yaml::from_str("{ policy: idle, raise_backlog_bytes: 65536 }").unwrap();
        assert_eq!((parsed.policy, parsed.raise_backlog_bytes), (BridgePolicy::Idle, 65536));
        assert!(serde_yaml::from_str::<BridgeConfig>("{ policy: lazy }").is_err());
    }

    #[test]
    fn uring_settings_reach_the_shards() {
        let u = UringConfig { entries: 512, sqpoll: true, sqpoll_idle_ms: 250 };
        let s = gatekeeper_net::UringSettings::from(&u);
        assert_eq!((s.entries, s.sqpoll_idle_ms), (512, Some(250)));
        let s = gatekeeper_net::UringSettings::from(&UringConfig { sqpoll: false, ..u });
        assert_eq!(s.sqpoll_idle_ms, None);
    }
}
