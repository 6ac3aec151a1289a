//! Containing a panic to the connection whose task raised it.
//!
//! monoio polls every task of a shard on the shard's one thread and catches nothing: a
//! panic in one connection's task would unwind through the runtime and end the thread,
//! leaving its `SO_REUSEPORT` listener open with nobody accepting — a silently dead share
//! of the port. Each connection task therefore runs under [`contain`]; what unwinds
//! out of it has already dropped that task's socket, so only its own client is cut off.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::task::Poll;

/// Runs `task`; a panic while polling it becomes a call to `on_panic` with the panic's
/// message, after which the task is dropped, never polled again.
///
/// The task is boxed once and polled in place: wrapping it in an `async` block instead
/// would keep a copy of the whole future in each layer (an argument slot, then the pinned
/// local), and a connection's task would take several times its size while idle.
///
/// Unwind safety is asserted: a connection task shares nothing with the rest of its shard
/// that a half-finished update could leave inconsistent beyond what `RefCell` and `Cell`
/// already guard.
pub(crate) fn contain<F: Future<Output = ()>>(task: F, on_panic: impl Fn(&str)) -> impl Future<Output = ()> {
    let mut task = Box::pin(task);
    std::future::poll_fn(move |cx| match std::panic::catch_unwind(AssertUnwindSafe(|| task.as_mut().poll(cx))) {
        Ok(poll) => poll,
        Err(payload) => {
            on_panic(panic_message(&*payload));
            Poll::Ready(())
        }
    })
}

/// The message a panic was raised with, where it carried one.
fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(no message)"
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    #[test]
    fn a_panicking_task_is_reported_and_a_quiet_one_runs_to_its_end() {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build().expect("runtime");
        rt.block_on(async {
            let seen = RefCell::new(Vec::new());
            let report = |m: &str| seen.borrow_mut().push(m.to_string());
            let ran = std::cell::Cell::new(false);
            contain(async { ran.set(true) }, report).await;
            assert!(ran.get());
            contain(
                async {
                    monoio::time::sleep(std::time::Duration::from_millis(1)).await;
                    panic!("boom {}", 1);
                },
                report,
            )
            .await;
            contain(async { panic!("plain") }, report).await;
            assert_eq!(*seen.borrow(), ["boom 1", "plain"]);
        });
    }
}
