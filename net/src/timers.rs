//! A shard's coarse timers: the deadlines client connections wait under between requests
//! (idle) and while a write makes no progress, each kept as a slot (deadline and waker) in
//! one slab and swept by one shard task.
//!
//! A runtime timer per wait would do, but monoio's timer entry is cache-padded for threads
//! a shard never shares it with (about 700 bytes, aligned to 128) and goes through the
//! timer wheel on every write, while an idle connection should cost little more than its
//! socket. These deadlines are coarse, so a sweep every few milliseconds, at most
//! `TICK_MAX`, fires each within one tick of it.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// The longest gap between two sweeps.
const TICK_MAX: Duration = Duration::from_millis(100);
/// The shortest gap between two sweeps, however short the idle timeout.
const TICK_MIN: Duration = Duration::from_millis(1);

/// The coarse timers of one shard; cheap to clone, shared by its connections.
#[derive(Clone)]
pub(crate) struct CoarseTimers(Rc<Slab>);

#[derive(Default)]
struct Slab {
    slots: RefCell<Vec<Slot>>,
    free: RefCell<Vec<usize>>,
}

enum Slot {
    Free,
    Waiting { deadline: Instant, waker: Waker },
    Expired,
}

impl CoarseTimers {
    /// No timers yet.
    pub(crate) fn new() -> Self {
        CoarseTimers(Rc::default())
    }

    /// The gap between sweeps for deadlines `shortest` apart or more: a sixteenth of it,
    /// within [`TICK_MIN`, `TICK_MAX`].
    pub(crate) fn tick_for(shortest: Duration) -> Duration {
        (shortest / 16).clamp(TICK_MIN, TICK_MAX)
    }

    /// Resolves at `deadline`, or within one tick after it.
    pub(crate) fn sleep_until(&self, deadline: Instant) -> CoarseSleep {
        CoarseSleep { timers: self.clone(), deadline, slot: None }
    }

    /// Wakes every timer whose deadline has passed, every `tick`, for as long as the shard
    /// runs.
    pub(crate) async fn sweep(self, tick: Duration) {
        loop {
            monoio::time::sleep(tick).await;
            self.fire(Instant::now());
        }
    }

    fn fire(&self, now: Instant) {
        // Wakers run after the borrow ends: waking only schedules a task here, but a waker
        // is foreign code.
        let mut due = Vec::new();
        for slot in self.0.slots.borrow_mut().iter_mut() {
            if matches!(slot, Slot::Waiting { deadline, .. } if *deadline <= now) {
                if let Slot::Waiting { waker, .. } = std::mem::replace(slot, Slot::Expired) {
                    due.push(waker);
                }
            }
        }
        due.into_iter().for_each(Waker::wake);
    }
}

/// The instant `after` from now; a configured timeout too long for the clock to express
/// (`*_timeout_ms` near `u64::MAX`) is a deadline a century away rather than a panic.
pub(crate) fn deadline_in(after: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    let now = Instant::now();
    now.checked_add(after).or_else(|| now.checked_add(CENTURY)).unwrap_or(now)
}

/// Future of [`CoarseTimers::sleep_until`]; its slot is freed when it is dropped.
pub(crate) struct CoarseSleep {
    timers: CoarseTimers,
    deadline: Instant,
    slot: Option<usize>,
}

impl Future for CoarseSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let mut slots = this.timers.0.slots.borrow_mut();
        match this.slot {
            Some(i) => match slots.get_mut(i) {
                Some(Slot::Waiting { waker, .. }) => {
                    waker.clone_from(cx.waker());
                    Poll::Pending
                }
                _ => Poll::Ready(()),
            },
            // A deadline already past waits for the next sweep: not reading the clock here
            // saves a clock read on every write.
            None => {
                let slot = Slot::Waiting { deadline: this.deadline, waker: cx.waker().clone() };
                let i = match this.timers.0.free.borrow_mut().pop() {
                    Some(i) => {
                        slots[i] = slot;
                        i
                    }
                    None => {
                        slots.push(slot);
                        slots.len() - 1
                    }
                };
                this.slot = Some(i);
                Poll::Pending
            }
        }
    }
}

impl Drop for CoarseSleep {
    fn drop(&mut self) {
        if let Some(i) = self.slot.take() {
            if let Some(slot) = self.timers.0.slots.borrow_mut().get_mut(i) {
                *slot = Slot::Free;
            }
            self.timers.0.free.borrow_mut().push(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[test]
    fn a_timer_fires_within_a_tick_of_its_deadline_and_frees_its_slot() {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build().expect("runtime");
        rt.block_on(async {
            let timers = CoarseTimers::new();
            let tick = Duration::from_millis(5);
            monoio::spawn(timers.clone().sweep(tick));
            let start = Instant::now();
            timers.sleep_until(start + Duration::from_millis(30)).await;
            let waited = start.elapsed();
            assert!(waited >= Duration::from_millis(30), "early: {waited:?}");
            assert!(waited < Duration::from_millis(30) + 20 * tick, "late: {waited:?}");
            // Dropped before its deadline: the slot is reused, not leaked.
            let fired = Rc::new(Cell::new(false));
            let f = fired.clone();
            let early = timers.sleep_until(Instant::now() + Duration::from_secs(60));
            monoio::select! {
                _ = early => f.set(true),
                _ = monoio::time::sleep(Duration::from_millis(10)) => {},
            }
            assert!(!fired.get());
            timers.sleep_until(Instant::now() + Duration::from_millis(1)).await;
            assert_eq!(timers.0.slots.borrow().len(), 1, "one slot, reused");
            assert!(timers.0.slots.borrow().iter().all(|s| matches!(s, Slot::Free)));
            // A deadline already past fires at the next sweep.
            timers.sleep_until(start).await;
        });
    }

    #[test]
    fn a_timeout_past_the_clock_is_far_away_not_a_panic() {
        let far = deadline_in(Duration::from_millis(u64::MAX));
        assert!(far > Instant::now() + Duration::from_secs(50 * 365 * 24 * 3600));
        let near = deadline_in(Duration::from_millis(5));
        assert!(near <= Instant::now() + Duration::from_millis(5));
    }

    #[test]
    fn ticks_follow_the_shortest_deadline_within_bounds() {
        assert_eq!(CoarseTimers::tick_for(Duration::from_secs(60)), TICK_MAX);
        assert_eq!(CoarseTimers::tick_for(Duration::from_millis(320)), Duration::from_millis(20));
        assert_eq!(CoarseTimers::tick_for(Duration::from_millis(1)), TICK_MIN);
    }
}
