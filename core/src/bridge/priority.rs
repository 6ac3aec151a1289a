//! The bridge thread's scheduling class under `bridge.policy: idle`: `SCHED_IDLE`
//! while it keeps up, `SCHED_OTHER` while it is behind.
//!
//! Why: on a machine the shards keep busy, the bridge's batches (hashing the chain,
//! writing the chain file) land on a core a shard is pinned to and delay that shard's
//! requests, while the machine still has moments with nothing to run (a closed-loop
//! client waiting on its answers, wakeups in flight). A `SCHED_IDLE` thread runs in
//! exactly those moments and yields to any other thread at once, so the audit costs
//! the shards less CPU time and no tail latency (`bench/RESULTS.md`, issue 15).
//!
//! The risk of `SCHED_IDLE` is starvation: on a core that never idles the bridge would
//! run almost never, its backlog would grow until `audit.spool_bytes_max` refuses
//! requests, and the `fsync: interval` tick would stop. So the shards watch it: a shard
//! whose unshipped WAL bytes reach `bridge.raise_backlog_bytes`, or that sees the
//! bridge's loop silent for longer than it may be ([`Priority::late_ms`]), raises the
//! bridge to `SCHED_OTHER` with one syscall (one shard per episode, by an atomic swap).
//! The bridge lowers itself again once every lane is back under a quarter of the
//! threshold and its loop is on time. Bounds: the bridge is behind by at most
//! `raise_backlog_bytes` per shard, or silent for at most `late_ms`, before it competes
//! for the CPU like any thread — as long as records keep coming, since the shards check
//! on each one. After the last record nothing raises it; on cores that other processes
//! keep busy a `SCHED_IDLE` thread still gets a small share (weight 3 against nice 0's
//! 1,024), so its `fsync: interval` tick for those records comes late (in the order of a
//! second) rather than never, and until then they sit in the page cache (a kill of the
//! gateway loses nothing; a power cut in that window loses them).
//!
//! Leaving `SCHED_IDLE` needs `CAP_SYS_NICE` or an `RLIMIT_NICE` of 20 (the kernel's
//! rule for any thread), so the policy is only taken after the thread proved at start
//! that it can come back; otherwise the bridge runs as a normal thread and says so.
//!
//! The only unsafe code here is the `sched_setscheduler(2)` call (rustix has none).
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};

/// The bridge thread's scheduling state, shared with the shards.
#[derive(Debug)]
pub(crate) struct Priority {
    /// The bridge thread's kernel thread id; 0 until it took the idle policy.
    tid: AtomicI32,
    /// True while the bridge runs `SCHED_IDLE`.
    idle: AtomicBool,
    /// Per-shard unshipped bytes at which a shard raises the bridge.
    raise_backlog_bytes: u64,
    /// Longest silence of the bridge's loop, ms, before a shard raises it.
    late_ms: u64,
    /// Monotonic (coarse) ms of the bridge loop's last turn.
    beat_ms: AtomicU64,
    /// Times the bridge left `SCHED_IDLE` (a shard raised it, or shutdown began).
    raises: AtomicU64,
}

impl Priority {
    /// A bridge that is not (yet) idle; `late_ms` as [`Priority::late_ms`] computes it.
    pub(crate) fn new(raise_backlog_bytes: u64, late_ms: u64) -> Priority {
        Priority {
            tid: AtomicI32::new(0),
            idle: AtomicBool::new(false),
            raise_backlog_bytes,
            late_ms,
            beat_ms: AtomicU64::new(now_ms()),
            raises: AtomicU64::new(0),
        }
    }

    /// How long the bridge's loop may stay silent: it turns at least every
    /// `batch_wait_ms` (or its longest idle poll, 16 ms), and an `fsync: interval` tick
    /// is due every `fsync_interval_ms`; 100 ms more absorb one slow step.
    pub(crate) fn late_ms(batch_wait_ms: u64, fsync_interval_ms: u64) -> u64 {
        batch_wait_ms.max(16).min(fsync_interval_ms).saturating_add(100)
    }

    /// On the bridge thread, at start: takes `SCHED_IDLE` if this thread may also
    /// leave it again (checked before, then tried). `Err` says why not; the thread then
    /// stays as it was.
    pub(crate) fn enter_idle(&self) -> Result<(), String> {
        let tid = rustix::thread::gettid().as_raw_nonzero().get();
        // Checked first: a thread that takes SCHED_IDLE without the right to leave it is
        // stuck there, so the try below must not be the first test.
        may_leave_idle(tid)?;
        set_policy(tid, libc::SCHED_IDLE).map_err(|e| format!("cannot take SCHED_IDLE: {e}"))?;
        if let Err(e) = set_policy(tid, libc::SCHED_OTHER) {
            // Stuck idle would starve the audit: stay idle only if we can come back.
            return Err(format!(
                "cannot leave SCHED_IDLE again ({e}), it stays there: bridge.policy normal avoids this"
            ));
        }
        set_policy(tid, libc::SCHED_IDLE).map_err(|e| format!("cannot take SCHED_IDLE: {e}"))?;
        self.beat();
        self.tid.store(tid, Ordering::Release);
        self.idle.store(true, Ordering::Release);
        Ok(())
    }

    /// On a shard, with its unshipped bytes, at each record: raises an idle bridge
    /// that is too far behind or too long silent. Costs two relaxed loads (and a coarse
    /// clock read) while the bridge keeps up.
    #[inline]
    pub(crate) fn check(&self, backlog_bytes: u64) {
        if !self.idle.load(Ordering::Relaxed) {
            return;
        }
        if backlog_bytes >= self.raise_backlog_bytes || self.silent() {
            self.raise();
        }
    }

    fn silent(&self) -> bool {
        now_ms() > self.beat_ms.load(Ordering::Relaxed).saturating_add(self.late_ms)
    }

    /// Makes the bridge a normal thread (no-op unless it is idle). One caller wins.
    pub(crate) fn raise(&self) {
        if !self.idle.swap(false, Ordering::AcqRel) {
            return;
        }
        self.raises.fetch_add(1, Ordering::Relaxed);
        let tid = self.tid.load(Ordering::Acquire);
        if let Err(e) = set_policy(tid, libc::SCHED_OTHER) {
            // Checked at start; only a changed limit gets here. The bridge stays idle
            // (and the spool limit still bounds its backlog).
            tracing::warn!(error = %e, "could not raise the bridge thread from SCHED_IDLE");
        }
    }

    /// On the bridge thread, each turn of its loop: records that it runs.
    pub(crate) fn beat(&self) {
        self.beat_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// On the bridge thread, each turn: goes back to `SCHED_IDLE` when a shard raised
    /// it and it has caught up (`backlog_bytes_max`: its largest lane's unshipped bytes).
    pub(crate) fn lower_if_caught_up(&self, backlog_bytes_max: u64) {
        let tid = self.tid.load(Ordering::Acquire);
        if tid == 0 || self.idle.load(Ordering::Relaxed) || backlog_bytes_max >= self.raise_backlog_bytes / 4 {
            return;
        }
        // Kernel first, flag second: a shard raises only after it saw the flag, so its
        // raise always lands after this call.
        if set_policy(tid, libc::SCHED_IDLE).is_ok() {
            self.idle.store(true, Ordering::Release);
        }
    }

    /// On the bridge thread at shutdown: a normal thread from now on (the drain has a
    /// deadline), never lowered again.
    pub(crate) fn stay_normal(&self) {
        self.raise();
        self.tid.store(0, Ordering::Release);
    }

    /// Whether the bridge runs `SCHED_IDLE` now.
    pub(crate) fn is_idle(&self) -> bool {
        self.idle.load(Ordering::Relaxed)
    }

    /// Times the bridge left `SCHED_IDLE`.
    pub(crate) fn raises(&self) -> u64 {
        self.raises.load(Ordering::Relaxed)
    }
}

/// The kernel's rule for leaving `SCHED_IDLE` (`can_nice` in `__sched_setscheduler`):
/// `CAP_SYS_NICE`, or an `RLIMIT_NICE` of at least `20 - nice` for the thread's nice.
fn may_leave_idle(tid: i32) -> Result<(), String> {
    if has_cap_sys_nice() {
        return Ok(());
    }
    let nice = rustix::thread::Pid::from_raw(tid)
        .map(|pid| rustix::process::getpriority_process(Some(pid)))
        .transpose()
        .map_err(|e| format!("cannot read the thread's nice: {e}"))?
        .unwrap_or(0);
    let needed = 20i64.saturating_sub(i64::from(nice));
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nice).current;
    match limit {
        Some(l) if i64::try_from(l).unwrap_or(i64::MAX) >= needed => Ok(()),
        None => Ok(()),
        Some(l) => Err(format!(
            "it could not leave SCHED_IDLE again: needs CAP_SYS_NICE or RLIMIT_NICE >= {needed} (it is {l}; systemd: LimitNICE={needed})"
        )),
    }
}

/// Whether this process has `CAP_SYS_NICE` in its effective set (`CapEff` of
/// `/proc/self/status`, bit 23).
fn has_cap_sys_nice() -> bool {
    const CAP_SYS_NICE: u32 = 23;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("CapEff:")).and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << CAP_SYS_NICE) != 0)
}

/// `CLOCK_MONOTONIC_COARSE` in ms: a vDSO read of the last tick (1–4 ms resolution,
/// ample for a bound of 100+ ms), cheap enough for every record.
fn now_ms() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
    (t.tv_sec as u64).saturating_mul(1000).saturating_add(t.tv_nsec as u64 / 1_000_000)
}

/// `sched_setscheduler(tid, policy, {priority 0})`: the nice value is kept.
fn set_policy(tid: i32, policy: libc::c_int) -> std::io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: plain syscall wrapper; `param` is a valid, initialised struct that
    // outlives the call, and a wrong or stale `tid` only makes the call fail (or
    // change the class of another thread of this process, harmlessly).
    let rc = unsafe { libc::sched_setscheduler(tid, policy, &param) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The calling thread's scheduling policy (`SCHED_*`), for tests.
#[cfg(test)]
pub(crate) fn policy_of(tid: i32) -> libc::c_int {
    // SAFETY: plain syscall wrapper without pointers.
    unsafe { libc::sched_getscheduler(tid) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> i32 {
        rustix::thread::gettid().as_raw_nonzero().get()
    }

    /// A thread of its own: the test harness's thread must not stay idle.
    fn on_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::spawn(f).join().expect("thread")
    }

    #[test]
    fn a_backlog_at_the_threshold_raises_and_catching_up_lowers() {
        on_thread(|| {
            let p = Priority::new(1000, 10_000);
            if let Err(e) = p.enter_idle() {
                // Unprivileged without RLIMIT_NICE: the bridge stays normal (tested below).
                eprintln!("skipped: {e}");
                return;
            }
            assert_eq!(policy_of(me()), libc::SCHED_IDLE);
            p.check(999);
            assert!(p.is_idle(), "one byte under the threshold");
            p.check(1000);
            assert!(!p.is_idle());
            assert_eq!(policy_of(me()), libc::SCHED_OTHER);
            assert_eq!(p.raises(), 1);
            p.check(5000);
            assert_eq!(p.raises(), 1, "raised once per episode");
            p.lower_if_caught_up(250);
            assert!(!p.is_idle(), "a quarter of the threshold is not caught up");
            p.lower_if_caught_up(249);
            assert!(p.is_idle());
            assert_eq!(policy_of(me()), libc::SCHED_IDLE);
            p.stay_normal();
            assert_eq!(policy_of(me()), libc::SCHED_OTHER);
            p.lower_if_caught_up(0);
            assert_eq!(policy_of(me()), libc::SCHED_OTHER, "never lowered after shutdown began");
        });
    }

    #[test]
    fn a_silent_bridge_is_raised() {
        on_thread(|| {
            let p = Priority::new(u64::MAX, 0);
            if p.enter_idle().is_err() {
                return;
            }
            p.check(0);
            assert!(p.is_idle(), "beat just now");
            std::thread::sleep(std::time::Duration::from_millis(30));
            p.check(0);
            assert!(!p.is_idle(), "silent past late_ms");
            assert_eq!(policy_of(me()), libc::SCHED_OTHER);
        });
    }

    #[test]
    fn not_idle_means_no_syscall_and_no_raise() {
        let p = Priority::new(1, 0);
        p.check(u64::MAX);
        p.raise();
        assert_eq!(p.raises(), 0);
        p.lower_if_caught_up(0);
        assert!(!p.is_idle(), "never entered idle: nothing to lower to");
    }

    #[test]
    fn the_right_to_leave_idle_is_checked_before_taking_it() {
        // Whatever this process may do, the check and the kernel agree: if the check
        // says yes, a thread that takes SCHED_IDLE can leave it.
        on_thread(|| {
            let tid = me();
            if may_leave_idle(tid).is_ok() {
                set_policy(tid, libc::SCHED_IDLE).unwrap();
                set_policy(tid, libc::SCHED_OTHER).unwrap();
                assert_eq!(policy_of(tid), libc::SCHED_OTHER);
            } else {
                assert!(!has_cap_sys_nice());
            }
        });
        // Under a nice-limit of 0 without the capability the answer is no, and says why.
        if !has_cap_sys_nice() && rustix::process::getrlimit(rustix::process::Resource::Nice).current == Some(0) {
            let e = may_leave_idle(me()).unwrap_err();
            assert!(e.contains("RLIMIT_NICE"), "{e}");
        }
    }

    #[test]
    fn late_ms_follows_the_loop_period() {
        assert_eq!(Priority::late_ms(50, 200), 150);
        assert_eq!(Priority::late_ms(0, 200), 116);
        assert_eq!(Priority::late_ms(1000, 200), 300);
        assert_eq!(Priority::late_ms(u64::MAX, u64::MAX), u64::MAX);
    }
}
