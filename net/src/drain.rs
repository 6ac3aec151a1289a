//! A shard's "stop accepting, finish what is open" signal.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// A shard's drain signal: cheap to clone, shared by the accept loop and every
/// connection task of one shard.
///
/// Waiters register in a slab and leave it when dropped, so the many idle
/// connections that wait on it never make it grow past the number waiting now.
#[derive(Clone, Default)]
pub(crate) struct Drain(Rc<DrainInner>);

#[derive(Default)]
struct DrainInner {
    draining: Cell<bool>,
    waiters: RefCell<Vec<Option<Waker>>>,
    free: RefCell<Vec<usize>>,
}

impl Drain {
    /// Whether the shard is draining.
    pub(crate) fn is_draining(&self) -> bool {
        self.0.draining.get()
    }

    /// Starts draining and wakes everyone waiting.
    pub(crate) fn start(&self) {
        self.0.draining.set(true);
        for w in self.0.waiters.borrow_mut().iter_mut() {
            if let Some(w) = w.take() {
                w.wake();
            }
        }
    }

    /// Resolves when draining starts.
    pub(crate) fn wait(&self) -> DrainWait {
        DrainWait { drain: self.clone(), slot: None }
    }
}

/// Future returned by [`Drain::wait`].
pub(crate) struct DrainWait {
    drain: Drain,
    slot: Option<usize>,
}

impl Future for DrainWait {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.drain.is_draining() {
            return Poll::Ready(());
        }
        let inner = self.drain.0.clone();
        let mut waiters = inner.waiters.borrow_mut();
        match self.slot {
            Some(i) => {
                if let Some(slot) = waiters.get_mut(i) {
                    *slot = Some(cx.waker().clone());
                }
            }
            None => {
                let i = match inner.free.borrow_mut().pop() {
                    Some(i) => {
                        waiters[i] = Some(cx.waker().clone());
                        i
                    }
                    None => {
                        waiters.push(Some(cx.waker().clone()));
                        waiters.len() - 1
                    }
                };
                self.slot = Some(i);
            }
        }
        Poll::Pending
    }
}

impl Drop for DrainWait {
    fn drop(&mut self) {
        if let Some(i) = self.slot.take() {
            if let Some(slot) = self.drain.0.waiters.borrow_mut().get_mut(i) {
                *slot = None;
            }
            self.drain.0.free.borrow_mut().push(i);
        }
    }
}
