//! CPU time accounting: this process (getrusage) and, optionally, the target process
//! (/proc/PID/stat), so reports can state CPU per request on both sides.
#![allow(unsafe_code)]

use std::time::Duration;

/// User and system CPU time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTime {
    /// User-mode time.
    pub user: Duration,
    /// Kernel-mode time.
    pub sys: Duration,
}

impl CpuTime {
    /// User plus system.
    pub fn total(&self) -> Duration {
        self.user + self.sys
    }

    /// `self - earlier`, saturating at zero.
    pub fn since(&self, earlier: &CpuTime) -> CpuTime {
        CpuTime { user: self.user.saturating_sub(earlier.user), sys: self.sys.saturating_sub(earlier.sys) }
    }
}

fn timeval(tv: libc::timeval) -> Duration {
    let secs = u64::try_from(tv.tv_sec).unwrap_or(0);
    let micros = u32::try_from(tv.tv_usec).unwrap_or(0).min(999_999);
    Duration::new(secs, micros * 1000)
}

/// CPU time of this whole process (all threads) so far.
pub fn self_cpu() -> CpuTime {
    // SAFETY: getrusage only writes into the struct we pass, which is a plain-old-data
    // libc::rusage that is valid when zeroed; RUSAGE_SELF is a valid `who`.
    let (rc, ru) = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        let rc = libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        (rc, ru)
    };
    if rc != 0 {
        return CpuTime::default();
    }
    CpuTime { user: timeval(ru.ru_utime), sys: timeval(ru.ru_stime) }
}

fn clock_ticks_per_s() -> u64 {
    // SAFETY: sysconf has no preconditions; it reads a constant of the system.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).ok().filter(|&t| t > 0).unwrap_or(100)
}

/// Parses utime and stime (fields 14 and 15) out of a /proc/PID/stat line.
pub fn parse_proc_stat(line: &str, ticks_per_s: u64) -> Option<CpuTime> {
    // The command name (field 2) is in parentheses and may hold spaces or ')', so count
    // fields from the last ')'.
    let rest = &line[line.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    // After ')' come field 3 (state) .. ; utime is field 14, i.e. the 12th here.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let tick = |t: u64| Duration::from_nanos(t.saturating_mul(1_000_000_000 / ticks_per_s.max(1)));
    Some(CpuTime { user: tick(utime), sys: tick(stime) })
}

/// CPU time of process `pid` so far, from /proc; `None` if it cannot be read.
pub fn pid_cpu(pid: u32) -> Option<CpuTime> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_proc_stat(&text, clock_ticks_per_s())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat_with_odd_names() {
        let line = "1234 (gk load) x) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0 100 0 0";
        let t = parse_proc_stat(line, 100).expect("parses");
        assert_eq!(t.user, Duration::from_millis(2500));
        assert_eq!(t.sys, Duration::from_millis(500));
        assert!(parse_proc_stat("garbage", 100).is_none());
    }

    #[test]
    fn own_cpu_time_grows() {
        let a = self_cpu();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let b = self_cpu();
        assert!(b.total() >= a.total());
        assert!(pid_cpu(std::process::id()).is_some());
    }
}
