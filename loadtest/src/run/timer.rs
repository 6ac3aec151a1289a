//! A microsecond-precise sleep inside the tokio runtime: a `timerfd` registered with the
//! runtime's epoll. tokio's own timer wheel rounds to whole milliseconds, and a separate
//! pacer thread costs a thread wake-up plus a cross-thread runtime wake-up per slot; the
//! timerfd wakes the runtime thread directly, and its expiry arrives in the same
//! `epoll_wait` as any answers that are ready, so one wake-up serves both.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;

/// A one-shot timer; `sleep_until` re-arms it.
pub struct Timer {
    fd: AsyncFd<OwnedFd>,
}

impl Timer {
    /// Creates the timerfd (CLOCK_MONOTONIC, the clock `Instant` uses) and registers it
    /// with the current runtime.
    pub fn new() -> io::Result<Timer> {
        // SAFETY: timerfd_create takes no pointers; a non-negative result is a new fd that
        // nothing else owns, so OwnedFd may take it.
        let raw = unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh, valid fd owned by nobody else (see above).
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: the OwnedFd owns a valid timerfd and `as_raw_fd` returns that same fd for
        // as long as the AsyncFd holds it (it is never replaced or closed meanwhile).
        let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(Timer { fd })
    }

    fn arm(&self, after: Duration) -> io::Result<()> {
        // A zero it_value would disarm the timer; 1 ns fires at once.
        let after = after.max(Duration::from_nanos(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
            it_value: libc::timespec {
                tv_sec: libc::time_t::try_from(after.as_secs()).unwrap_or(libc::time_t::MAX),
                tv_nsec: libc::c_long::from(i32::try_from(after.subsec_nanos()).unwrap_or(0)),
            },
        };
        // SAFETY: the fd is a valid timerfd we own; `spec` is a valid itimerspec for the
        // duration of the call and the old-value pointer may be null.
        let rc = unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Sleeps until `deadline` (returns at once if it has passed).
    pub async fn sleep_until(&self, deadline: Instant) -> io::Result<()> {
        let now = Instant::now();
        if deadline <= now {
            return Ok(());
        }
        self.arm(deadline - now)?;
        // Bounded: a one-shot timer expires once; each pass either reads its expiry or
        // clears a stale readiness and waits for the next epoll event.
        loop {
            let mut guard = self.fd.readable().await?;
            let mut ticks = [0u8; 8];
            // SAFETY: reads at most 8 bytes into `ticks`, which is 8 bytes long.
            let n = unsafe { libc::read(self.fd.get_ref().as_raw_fd(), ticks.as_mut_ptr().cast(), ticks.len()) };
            if n == 8 {
                return Ok(());
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::WouldBlock {
                return Err(err);
            }
            guard.clear_ready();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sleeps_about_as_long_as_asked() {
        let t = Timer::new().expect("timerfd");
        for us in [200u64, 1500, 0] {
            let start = Instant::now();
            t.sleep_until(start + Duration::from_micros(us)).await.expect("sleep");
            let took = start.elapsed();
            assert!(took >= Duration::from_micros(us), "{us} µs: woke after {took:?}");
            assert!(took < Duration::from_micros(us) + Duration::from_millis(50), "{us} µs: {took:?}");
        }
    }
}
