//! The verify pool: a few threads that run the CPU-heavy credit work (a spend's proof
//! check, the change's signature, a credential's blind signature) off the shards.
//!
//! A shard is one io_uring event loop: a proof check of a few milliseconds on it stalls
//! every connection it serves. The shard hands the work to the pool through a bounded
//! queue and awaits a oneshot completion, the same way it awaits the bridge for a
//! nullifier claim; meanwhile its other connections go on. A full queue refuses at once
//! (`credit_verify_busy`, 503 with `Retry-After`): a node verifying more spends than its
//! pool can check sheds them before they wait longer than a retry would.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

/// Most verify threads (`credits.verify_threads`).
pub const VERIFY_THREADS_MAX: usize = 64;
/// Largest `credits.verify_queue_depth`.
pub const VERIFY_QUEUE_DEPTH_MAX: usize = 65_536;

type Job = Box<dyn FnOnce() + Send>;

/// Why the pool did not run a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// `verify_queue_depth` jobs are already waiting.
    #[error("the verify queue is full")]
    Full,
    /// The pool's threads are gone (a job panicked, or the process is stopping).
    #[error("the verify pool stopped")]
    Stopped,
}

/// N threads reading one bounded queue; with no threads, jobs run inline on the caller.
pub struct VerifyPool {
    tx: Option<SyncSender<Job>>,
    threads: usize,
}

impl VerifyPool {
    /// Starts `threads` threads (0: no pool, [`VerifyPool::run`] calls inline) sharing a
    /// queue of `depth` waiting jobs (jobs being run do not count).
    pub fn start(threads: usize, depth: usize) -> std::io::Result<VerifyPool> {
        if threads == 0 {
            return Ok(VerifyPool { tx: None, threads });
        }
        // A zero-capacity sync_channel is a rendezvous: a job would be refused whenever
        // every thread is busy, which `depth: 0` is not meant to say; 1 is the floor.
        let (tx, rx) = sync_channel::<Job>(depth.max(1));
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let rx = Arc::clone(&rx);
            std::thread::Builder::new().name(format!("gk-verify-{i}")).spawn(move || work(&rx))?;
        }
        Ok(VerifyPool { tx: Some(tx), threads })
    }

    /// Threads in the pool (0: inline).
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f` on a pool thread and awaits its result; inline when the pool has no
    /// threads. `Full` at once when the queue is full: nothing ran.
    pub async fn run<T, F>(&self, f: F) -> Result<T, PoolError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let Some(tx) = &self.tx else { return Ok(f()) };
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = reply.send(f());
        });
        match tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(PoolError::Full),
            Err(TrySendError::Disconnected(_)) => return Err(PoolError::Stopped),
        }
        answer.await.map_err(|_| PoolError::Stopped)
    }

    /// [`VerifyPool::run`], but when the queue is full `f` runs inline instead of being
    /// refused: for work owed to a client that already paid (its change), which must not
    /// be dropped for load.
    pub async fn run_or_inline<T, F>(&self, f: F) -> T
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + Clone + 'static,
    {
        match self.run(f.clone()).await {
            Ok(v) => v,
            Err(_) => f(),
        }
    }
}

fn work(rx: &Mutex<Receiver<Job>>) {
    loop {
        // The lock is held only while waiting for the next job, never while running one.
        let job = {
            let Ok(rx) = rx.lock() else { return };
            match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        job();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn runtime() -> monoio::Runtime<monoio::time::TimeDriver<monoio::LegacyDriver>> {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build().expect("runtime")
    }

    /// One thread, depth 1: one job runs, one waits, the third is refused at once; once
    /// the slow one ends, the pool takes work again.
    #[test]
    fn a_full_queue_refuses_at_its_depth() {
        let pool = Arc::new(VerifyPool::start(1, 1).expect("pool"));
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let gate = Arc::new(Mutex::new(gate));
        let (started_tx, started) = std::sync::mpsc::channel::<()>();
        runtime().block_on(async {
            let slow = {
                let (pool, gate) = (Arc::clone(&pool), Arc::clone(&gate));
                monoio::spawn(async move {
                    pool.run(move || {
                        let _ = started_tx.send(());
                        let _ = gate.lock().map(|g| g.recv());
                        1
                    })
                    .await
                })
            };
            // Let the spawned task hand its job over, then wait until a thread runs it.
            monoio::time::sleep(Duration::from_millis(1)).await;
            started.recv_timeout(Duration::from_secs(5)).expect("the slow job started");
            let queued = {
                let pool = Arc::clone(&pool);
                monoio::spawn(async move { pool.run(|| 2).await })
            };
            monoio::time::sleep(Duration::from_millis(1)).await;
            assert_eq!(pool.run(|| 3).await, Err(PoolError::Full), "depth 1: the third job is refused");
            release.send(()).expect("release");
            assert_eq!(slow.await, Ok(1));
            assert_eq!(queued.await, Ok(2));
            assert_eq!(pool.run(|| 4).await, Ok(4), "free again");
            // Owed work is never refused: inline when the queue is full.
            assert_eq!(pool.run_or_inline(|| 5).await, 5);
        });
    }

    /// While a job is on a pool thread the caller's event loop keeps running its other
    /// tasks: a timer task finishes while the job is still blocked.
    #[test]
    fn the_caller_keeps_running_while_a_job_is_checked() {
        let pool = Arc::new(VerifyPool::start(1, 4).expect("pool"));
        let (release, gate) = std::sync::mpsc::channel::<()>();
        runtime().block_on(async {
            let job = {
                let pool = Arc::clone(&pool);
                monoio::spawn(async move {
                    pool.run(move || {
                        let _ = gate.recv_timeout(Duration::from_secs(10));
                        "verified"
                    })
                    .await
                })
            };
            let other = monoio::spawn(async {
                monoio::time::sleep(Duration::from_millis(20)).await;
                "answered"
            });
            assert_eq!(other.await, "answered", "the loop ran another task meanwhile");
            release.send(()).expect("release");
            assert_eq!(job.await, Ok("verified"));
        });
    }

    #[test]
    fn no_threads_runs_inline() {
        let pool = VerifyPool::start(0, 1).expect("pool");
        let here = std::thread::current().id();
        let ran_on = runtime().block_on(pool.run(|| std::thread::current().id()));
        assert_eq!(ran_on, Ok(here));
    }
}
