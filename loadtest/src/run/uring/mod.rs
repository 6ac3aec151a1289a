//! The io_uring engine of `gk-load run` (`--engine uring`, the default where the kernel
//! allows it): each of `--threads` threads owns one ring and its own connections and runs
//! one loop, with no tasks, wakers or epoll:
//!
//! 1. reap every completion: connects, failed sends, receives; feed received bytes to
//!    [`super::answer::AnswerReader`] and record finished answers;
//! 2. give up on requests past `--timeout`;
//! 3. open loop: release the slots that are due (the thread's share of the schedule:
//!    slots k ≡ thread (mod threads)) and start them on idle keep-alive connections or
//!    new ones; closed loop: a connection whose answer ended sends its next request;
//! 4. one `io_uring_enter` submits everything queued and waits for a batch of completions
//!    or the next due time, whichever comes first.
//!
//! A request is one linked chain, [connect (new sockets only) →] send (MSG_WAITALL) →
//! receive, where connect and send post a completion only when they fail, so a plain
//! answer costs one submission of two entries and one completion. The ring runs SINGLE_ISSUER + DEFER_TASKRUN where the kernel has them
//! (COOP_TASKRUN otherwise): arriving data queues work that runs only when this thread
//! enters the ring, so answers do not wake it one by one.
//!
//! Latency honesty. Batching wake-ups means an answer is often reaped some time after
//! its last byte arrived; timing at reap would overstate latency by that delay. So each
//! socket has `SO_TIMESTAMPNS` on and every receive is an `IORING_OP_RECVMSG` with a
//! control buffer: the kernel stamps each segment when it reaches the socket, and a
//! receive reports the stamp of the last segment it read. Those CLOCK_REALTIME stamps
//! are mapped onto the monotonic clock by an offset sampled at start and again every
//! second (so a stepped or slewed wall clock moves the mapping by at most a second's
//! drift), and clamped into [send time, reap time]. Latency is thus measured from the
//! intended send time (open loop) or actual send (closed loop) to the kernel's arrival
//! time of the answer's last byte, whatever the reap delay; only end-of-stream (until-close
//! bodies) and failures use the reap time. The reap delay still bounds two things, so
//! it is itself bounded by [`REAP_WAIT_MAX`]: how long a finished connection stays busy
//! before it can take the next slot, and the resolution of stream chunk gaps; while a
//! stream's body is arriving the loop wakes for every completion instead, so chunk gaps
//! are as fine as with the tokio engine.

mod ring;

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use rand::SeedableRng as _;

use super::answer::{AnswerReader, Failure, Progress};
use super::schedule::Arrival;
use super::stats::{ErrorClass, Outcome};
use super::{lock, us, Load, Shared, PACE_BATCH_MAX, SLOT_QUEUE_MAX};
use ring::{Completion, Io, Op};

pub use ring::probe;

/// Longest the loop waits for a batch of completions while something is in flight: the
/// bound on the reap delay (see the module doc).
pub const REAP_WAIT_MAX: Duration = Duration::from_millis(1);
/// Most completions one wait asks for: the loop wakes when this many are ready.
pub const WAIT_BATCH_MAX: usize = 32;
/// Longest wait at the end for operations of torn-down sockets (cancelled) to end.
const DRAIN_WAIT_MAX: Duration = Duration::from_secs(1);
/// How often the realtime→monotonic offset for kernel timestamps is re-sampled.
const CLOCK_RESAMPLE: Duration = Duration::from_secs(1);

/// Maps kernel receive timestamps (CLOCK_REALTIME) onto `Instant`s.
struct RealClock {
    mono: Instant,
    real_ns: i128,
    next_sample: Instant,
}

impl RealClock {
    fn new() -> RealClock {
        let (mono, real_ns) = RealClock::sample();
        RealClock { mono, real_ns, next_sample: mono + CLOCK_RESAMPLE }
    }

    /// A (monotonic, realtime) pair read back to back; the monotonic side is the
    /// midpoint of two reads around the realtime read.
    fn sample() -> (Instant, i128) {
        let a = Instant::now();
        let real = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i128);
        let b = Instant::now();
        (a + b.saturating_duration_since(a) / 2, real)
    }

    fn maybe_resample(&mut self, now: Instant) {
        if now >= self.next_sample {
            (self.mono, self.real_ns) = RealClock::sample();
            self.next_sample = now + CLOCK_RESAMPLE;
        }
    }

    /// The instant of realtime `ns`, if representable.
    fn instant(&self, ns: i128) -> Option<Instant> {
        let delta = ns - self.real_ns;
        let abs = Duration::from_nanos(u64::try_from(delta.unsigned_abs()).ok()?);
        if delta >= 0 {
            self.mono.checked_add(abs)
        } else {
            self.mono.checked_sub(abs)
        }
    }
}

/// One request in flight on a slot.
struct Req {
    intended: Instant,
    sent_at: Instant,
    deadline: Instant,
    bytes_out: u64,
    /// Sent on a connection that had carried an earlier answer.
    reused: bool,
    /// 0 first, 1 after the one retry on a fresh connection.
    attempt: u8,
    reader: AnswerReader,
    /// Counted in `Engine::streams`.
    stream_counted: bool,
}

/// What a slot is doing.
enum State {
    /// No socket, nothing in flight.
    Free,
    /// A keep-alive socket, nothing in flight.
    Idle,
    /// Connecting (new socket), sending, or receiving the answer: one linked chain.
    Exchanging(Req),
    /// The socket is being torn down (cancels in flight); then the request, if any,
    /// is retried on a fresh connection.
    Draining(Option<Req>),
}

/// What one thread does: its share of slots, schedule and request budget.
struct Share {
    slots: usize,
    /// Closed loop: requests this thread may send.
    requests_max: u64,
    /// Open loop: first slot index and stride.
    first_k: u64,
    k_step: u64,
    /// Idle keep-alive sockets kept by this thread.
    idle_max: usize,
}

fn split(total: usize, parts: usize, part: usize) -> usize {
    total / parts + usize::from(part < total % parts)
}

/// Threads the engine will use: never more than there are connections to share out.
pub(super) fn threads_used(sh: &Shared) -> usize {
    let per = match sh.cfg.load {
        Load::Open(_) => sh.cfg.inflight_max,
        Load::Closed(n) => n,
    };
    sh.cfg.threads.clamp(1, per.max(1))
}

/// Runs the engine on `threads_used` threads until the load is done; returns how the
/// rings were set up.
pub(super) fn run(sh: &Shared) -> Result<&'static str, String> {
    let threads = threads_used(sh);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                std::thread::Builder::new()
                    .name(format!("gk-load-uring-{t}"))
                    .spawn_scoped(scope, move || run_thread(sh, t, threads))
                    .map_err(|e| format!("uring thread: {e}"))
            })
            .collect::<Result<_, _>>()?;
        let mut setup = "";
        for h in handles {
            setup = h.join().map_err(|_| "uring thread panicked".to_string())??;
        }
        Ok(setup)
    })
}

fn run_thread(sh: &Shared, t: usize, threads: usize) -> Result<&'static str, String> {
    let (slots, requests_max) = match sh.cfg.load {
        Load::Open(_) => (split(sh.cfg.inflight_max, threads, t), 0),
        Load::Closed(n) => {
            let max = sh.cfg.requests_max.unwrap_or(u64::MAX);
            let quota = max / threads as u64 + u64::from((t as u64) < max % threads as u64);
            (split(n, threads, t), quota)
        }
    };
    let share = Share {
        slots,
        requests_max,
        first_k: t as u64,
        k_step: threads as u64,
        idle_max: split(sh.cfg.connections_max, threads, t),
    };
    let io = Io::new(share.slots, sh.addr).map_err(|e| format!("io_uring: {e}"))?;
    let setup = io.setup;
    let mut engine = Engine::new(sh, t, io, share);
    engine.run()?;
    Ok(setup)
}

/// Counters gathered during one loop pass, flushed to the shared ones once per pass.
#[derive(Default)]
struct Deltas {
    sent: u64,
    waited: u64,
    retried: u64,
}

struct Engine<'a> {
    sh: &'a Shared,
    shard: usize,
    io: Io,
    conns: Vec<State>,
    share: Share,
    rng: rand::rngs::StdRng,
    clock: RealClock,
    /// Open loop: the schedule, the next slot index of this thread, due slots waiting
    /// for a connection (intended times), and slots with an idle socket or none.
    arrival: Option<Arrival>,
    next_k: u64,
    pending: VecDeque<Instant>,
    idle: Vec<usize>,
    free: Vec<usize>,
    /// Closed loop: slots ready to send their next request; requests left; end time.
    ready: Vec<usize>,
    quota: u64,
    end: Option<Instant>,
    /// Requests started and not yet recorded.
    inflight: usize,
    /// Streams whose body is arriving: while any, the loop wakes for every completion.
    streams: usize,
    /// No deadline of a request in flight is earlier than this.
    deadline_min: Option<Instant>,
    outcomes: Vec<(Outcome, Option<ErrorClass>)>,
    completions: Vec<Completion>,
    deltas: Deltas,
    busy_shown: usize,
    /// Set once the load is done: the end of the wait for cancelled operations.
    drain_until: Option<Instant>,
}

impl<'a> Engine<'a> {
    fn new(sh: &'a Shared, t: usize, io: Io, share: Share) -> Engine<'a> {
        let n = share.slots;
        let seed = sh.cfg.seed ^ (t as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let (arrival, ready, free) = match &sh.cfg.load {
            Load::Open(a) => (Some(a.clone()), Vec::new(), (0..n).rev().collect()),
            Load::Closed(_) => (None, (0..n).rev().collect(), Vec::new()),
        };
        Engine {
            sh,
            shard: t % sh.shards.len(),
            io,
            conns: (0..n).map(|_| State::Free).collect(),
            rng: rand::rngs::StdRng::seed_from_u64(seed),
            clock: RealClock::new(),
            arrival,
            next_k: share.first_k,
            pending: VecDeque::with_capacity(1024),
            idle: Vec::with_capacity(n),
            free,
            ready,
            quota: share.requests_max,
            end: sh.cfg.duration.map(|d| sh.start + d),
            share,
            inflight: 0,
            streams: 0,
            deadline_min: None,
            outcomes: Vec::with_capacity(1024),
            completions: Vec::with_capacity(1024),
            deltas: Deltas::default(),
            busy_shown: 0,
            drain_until: None,
        }
    }

    /// The loop. Ends when the schedule (or budget, or duration) is spent and every
    /// request has been recorded; each pass either makes progress or waits.
    fn run(&mut self) -> Result<(), String> {
        let mut now = Instant::now();
        loop {
            self.reap(now);
            if self.deadline_min.is_some_and(|d| d <= now) {
                self.expire(now);
            }
            // Read the clock again: reaping a large batch takes a while, and requests
            // started now are timed from here (closed loop) or show their lag from here.
            let now_send = Instant::now();
            let next_due = match self.arrival.is_some() {
                true => self.release(now_send),
                false => {
                    self.start_closed(now_send);
                    None
                }
            };
            self.flush();
            if self.finished(now) {
                break;
            }
            self.wait(now_send, next_due)?;
            now = Instant::now();
            self.clock.maybe_resample(now);
        }
        self.flush();
        Ok(())
    }

    /// The load is done and every request recorded. Operations of torn-down sockets
    /// still in flight then end within moments (they were cancelled); the wait for them
    /// is bounded by [`DRAIN_WAIT_MAX`], after which `Io`'s drop takes over.
    fn finished(&mut self, now: Instant) -> bool {
        if self.inflight > 0 {
            return false;
        }
        let load_done = match self.arrival {
            Some(_) => self.pending.is_empty() && self.slot(self.next_k).is_none(),
            None => !self.may_send(now),
        };
        if !load_done {
            return false;
        }
        if self.io.inflight_total() == 0 {
            return true;
        }
        now >= *self.drain_until.get_or_insert(now + DRAIN_WAIT_MAX)
    }

    /// Submits what is queued and waits for completions or the next due time.
    fn wait(&mut self, now: Instant, next_due: Option<Instant>) -> Result<(), String> {
        let recvs = self.io.inflight(Op::Recv);
        let mut wake = next_due;
        let mut want = 0;
        if recvs > 0 {
            want = if self.streams > 0 || !self.pending.is_empty() {
                // A stream's chunks or a slot waiting for a connection: wake per completion.
                1
            } else if self.arrival.is_some() {
                // Open loop: the pacer's wake-ups reap too, so answers alone never wake the
                // thread (a wake-up costs more than the answer) unless a batch of them piles
                // up; the reap delay stays bounded by REAP_WAIT_MAX.
                WAIT_BATCH_MAX
            } else {
                (recvs / 2).clamp(1, WAIT_BATCH_MAX)
            };
            wake = Some(wake.map_or(now + REAP_WAIT_MAX, |w| w.min(now + REAP_WAIT_MAX)));
        }
        if let Some(d) = self.deadline_min {
            wake = Some(wake.map_or(d, |w| w.min(d)));
        }
        let timeout = wake.map(|w| w.saturating_duration_since(now));
        let (want, timeout) = match timeout {
            // Due already: submit without waiting.
            Some(t) if t.is_zero() => (0, None),
            Some(t) => (want.max(1), Some(t)),
            // Nothing in flight and nothing due: only possible when finishing.
            None => (0, None),
        };
        self.io.submit_and_wait(want, timeout).map_err(|e| format!("io_uring_enter: {e}"))
    }

    /// Flushes counters and recorded outcomes to the shared state (one lock per pass).
    fn flush(&mut self) {
        let sh = self.sh;
        if !self.outcomes.is_empty() {
            let mut shard = lock(&sh.shards[self.shard]);
            for (o, class) in self.outcomes.drain(..) {
                shard.record(&o, class);
            }
        }
        let d = std::mem::take(&mut self.deltas);
        if d.sent > 0 {
            sh.sent.fetch_add(d.sent, Ordering::Relaxed);
        }
        if d.waited > 0 {
            sh.waited.fetch_add(d.waited, Ordering::Relaxed);
        }
        if d.retried > 0 {
            sh.retried.fetch_add(d.retried, Ordering::Relaxed);
        }
        if self.inflight != self.busy_shown {
            if self.inflight > self.busy_shown {
                sh.busy.fetch_add(self.inflight - self.busy_shown, Ordering::Relaxed);
            } else {
                sh.busy.fetch_sub(self.busy_shown - self.inflight, Ordering::Relaxed);
            }
            self.busy_shown = self.inflight;
        }
    }

    // ---- open loop ----

    /// Offset of this thread's slot `k`, or `None` past the schedule's end, `--duration`
    /// or `--requests`.
    fn slot(&self, k: u64) -> Option<Duration> {
        let arrival = self.arrival.as_ref()?;
        let max = self.sh.cfg.requests_max.unwrap_or(u64::MAX);
        let end = self.sh.cfg.duration;
        arrival.slot(k).filter(|o| k < max && end.is_none_or(|e| *o < e))
    }

    /// Releases every due slot, starts what connections allow, and returns when the loop
    /// should wake for the next slots: the last of this thread's slots due within
    /// `--pace-window` of the next one, so one wake-up sends them together.
    fn release(&mut self, now: Instant) -> Option<Instant> {
        let start = self.sh.start;
        // Bounded by the pending queue's capacity; slots not released stay due and keep
        // their intended times.
        while self.pending.len() < SLOT_QUEUE_MAX {
            let Some(offset) = self.slot(self.next_k) else { break };
            let due = start + offset;
            if due > now {
                break;
            }
            // Counted like the tokio engine's: the slot came while every connection slot
            // was taken (by requests in flight or by slots already waiting).
            if self.pending.len() >= self.idle.len() + self.free.len() {
                self.deltas.waited += 1;
            }
            self.pending.push_back(due);
            self.next_k += self.share.k_step;
        }
        self.dispatch(now);
        if self.pending.len() >= SLOT_QUEUE_MAX {
            return None;
        }
        let first = self.slot(self.next_k)?;
        let window = self.sh.cfg.pace_window;
        let mut wake = first;
        let mut k = self.next_k + self.share.k_step;
        for _ in 1..PACE_BATCH_MAX {
            match self.slot(k) {
                Some(o) if o <= first + window => wake = o,
                _ => break,
            }
            k += self.share.k_step;
        }
        Some(start + wake)
    }

    /// Starts pending slots on idle connections first, then on new ones.
    fn dispatch(&mut self, now: Instant) {
        // Bounded by the pending queue; each pass consumes one slot or stops.
        while let Some(&intended) = self.pending.front() {
            let Some(i) = self.idle.pop().or_else(|| self.free.pop()) else { break };
            self.pending.pop_front();
            self.start(i, intended, now);
        }
    }

    // ---- closed loop ----

    fn may_send(&self, now: Instant) -> bool {
        self.quota > 0 && self.end.is_none_or(|e| now < e)
    }

    fn start_closed(&mut self, now: Instant) {
        // Bounded by the slots: each is in `ready` at most once.
        while let Some(i) = self.ready.pop() {
            if !self.may_send(now) {
                self.ready.clear();
                break;
            }
            self.quota -= 1;
            self.start(i, now, now);
        }
    }

    // ---- requests ----

    /// Starts a request due at `intended` on slot `i` (idle keep-alive socket or none).
    fn start(&mut self, i: usize, intended: Instant, now: Instant) {
        let sh = self.sh;
        let cfg = &sh.cfg;
        let template = &cfg.templates[cfg.mix.pick(&mut self.rng)];
        let Some(wbuf) = self.io.wbuf(i) else {
            debug_assert!(false, "start on a slot with a send in flight");
            return;
        };
        template.write_request(wbuf);
        let req = Req {
            intended,
            sent_at: now,
            deadline: now + cfg.timeout,
            bytes_out: wbuf.len() as u64,
            reused: self.io.has_socket(i),
            attempt: 0,
            reader: AnswerReader::new(),
            stream_counted: false,
        };
        self.deadline_min = Some(self.deadline_min.map_or(req.deadline, |d| d.min(req.deadline)));
        self.deltas.sent += 1;
        self.inflight += 1;
        self.send(i, req, now);
    }

    /// Sends `req` on slot `i`: over its socket, or after connecting a new one.
    fn send(&mut self, i: usize, req: Req, now: Instant) {
        let (connect, class) = match self.io.has_socket(i) {
            true => (false, ErrorClass::Reset),
            false => (true, ErrorClass::Connect),
        };
        let queued = match connect {
            true => self.io.open(i).and_then(|()| self.io.exchange(i, true)),
            false => self.io.exchange(i, false),
        };
        match queued {
            Ok(()) => self.conns[i] = State::Exchanging(req),
            Err(_) => self.fail(i, req, Failure { class, nothing_read: true }, now),
        }
    }

    fn reap(&mut self, now: Instant) {
        let mut completions = std::mem::take(&mut self.completions);
        self.io.reap(&mut completions);
        for c in &completions {
            self.complete(c, now);
        }
        self.completions = completions;
    }

    fn complete(&mut self, c: &Completion, now: Instant) {
        let i = c.slot;
        let state = std::mem::replace(&mut self.conns[i], State::Free);
        match state {
            State::Exchanging(req) if !c.stale && c.op == Op::Connect => {
                if c.result < 0 {
                    // The send and receive linked behind it are cancelled.
                    self.fail(i, req, Failure { class: ErrorClass::Connect, nothing_read: true }, now);
                } else {
                    // A successful connect (kernels without CQE_SKIP_SUCCESS report it).
                    self.conns[i] = State::Exchanging(req);
                }
            }
            State::Exchanging(req) if !c.stale && c.op == Op::Send => {
                if u64::try_from(c.result).ok() == Some(req.bytes_out) {
                    // A whole send (kernels without CQE_SKIP_SUCCESS report those too).
                    self.conns[i] = State::Exchanging(req);
                } else {
                    // A failed or short send; the linked receive is cancelled.
                    self.fail(i, req, Failure { class: ErrorClass::Reset, nothing_read: true }, now);
                }
            }
            State::Exchanging(req) if !c.stale && c.op == Op::Recv => self.received(i, req, c, now),
            State::Draining(retry) => {
                self.conns[i] = State::Draining(retry);
                self.settle_draining(i, now);
            }
            other => {
                // A stale completion of an aborted slot, or one that needs no action.
                self.conns[i] = other;
            }
        }
    }

    fn received(&mut self, i: usize, mut req: Req, c: &Completion, now: Instant) {
        // The answer's clock: the kernel's arrival time of this read's last byte, when the
        // socket stamped it (see the module doc); end of stream and errors use `now`.
        let mut at = now;
        let result = match usize::try_from(c.result) {
            Err(_) => Err(req.reader.read_failed()),
            Ok(0) => req.reader.end_of_stream().map(Progress::Done),
            Ok(n) => {
                if let Some(t) = c.received_real_ns.and_then(|ns| self.clock.instant(ns)) {
                    at = t.clamp(req.sent_at, now.max(req.sent_at));
                }
                match self.io.rbuf(i) {
                    Some(buf) => req.reader.feed(buf, n, at),
                    None => Err(Failure { class: ErrorClass::Protocol, nothing_read: false }),
                }
            }
        };
        if !req.stream_counted && req.reader.is_streaming() {
            req.stream_counted = true;
            self.streams += 1;
        }
        match result {
            Ok(Progress::More) => match self.io.recv(i) {
                Ok(()) => self.conns[i] = State::Exchanging(req),
                Err(_) => self.fail(i, req, Failure { class: ErrorClass::Reset, nothing_read: false }, now),
            },
            Ok(Progress::Done(answer)) => {
                self.forget_stream(&mut req);
                let mut outcome = self.outcome(&req, at);
                let class = answer.fill(&mut outcome, req.intended);
                self.record(outcome, class);
                if answer.keep_alive && self.io.is_quiet(i) {
                    self.conns[i] = State::Idle;
                    self.available(i, true);
                } else {
                    self.io.abort(i);
                    self.conns[i] = State::Draining(None);
                    self.settle_draining(i, now);
                }
            }
            Err(f) => self.fail(i, req, f, now),
        }
    }

    fn forget_stream(&mut self, req: &mut Req) {
        if req.stream_counted {
            req.stream_counted = false;
            self.streams -= 1;
        }
    }

    fn outcome(&self, req: &Req, end: Instant) -> Outcome {
        Outcome {
            latency_us: us(end.saturating_duration_since(req.intended)),
            lag_us: us(req.sent_at.saturating_duration_since(req.intended)),
            bytes_out: req.bytes_out,
            ..Outcome::default()
        }
    }

    fn record(&mut self, outcome: Outcome, class: Option<ErrorClass>) {
        self.outcomes.push((outcome, class));
        self.inflight -= 1;
    }

    /// A failed exchange: retried once on a fresh connection when a reused one turned
    /// out closed before any answer byte (the server's idle timeout raced us); recorded
    /// otherwise. Either way the socket is torn down.
    fn fail(&mut self, i: usize, mut req: Req, f: Failure, now: Instant) {
        self.forget_stream(&mut req);
        let retry = if req.reused && f.nothing_read && req.attempt == 0 {
            self.deltas.retried += 1;
            req.attempt = 1;
            req.reused = false;
            req.reader = AnswerReader::new();
            Some(req)
        } else {
            let mut outcome = self.outcome(&req, now);
            outcome.bytes_in = req.reader.bytes_in();
            self.record(outcome, Some(f.class));
            None
        };
        if let Some(buf) = self.io.rbuf(i) {
            buf.clear();
        }
        self.io.abort(i);
        self.conns[i] = State::Draining(retry);
        self.settle_draining(i, now);
    }

    /// A draining slot whose operations have all ended: retry its request on a new
    /// connection, or hand the slot back.
    fn settle_draining(&mut self, i: usize, now: Instant) {
        if !self.io.is_quiet(i) {
            return;
        }
        let State::Draining(retry) = std::mem::replace(&mut self.conns[i], State::Free) else {
            return;
        };
        self.io.close(i);
        if let Some(buf) = self.io.rbuf(i) {
            buf.clear();
        }
        match retry {
            Some(req) => self.send(i, req, now),
            None => self.available(i, false),
        }
    }

    /// Slot `i` can take a new request (`keep`: it holds an idle keep-alive socket).
    fn available(&mut self, i: usize, keep: bool) {
        if self.arrival.is_none() {
            self.ready.push(i);
        } else if keep && self.idle.len() < self.share.idle_max {
            self.idle.push(i);
        } else {
            if keep {
                self.io.close(i);
                self.conns[i] = State::Free;
            }
            self.free.push(i);
        }
    }

    /// Records every request past its deadline as a timeout and tears its socket down;
    /// recomputes the earliest deadline left.
    fn expire(&mut self, now: Instant) {
        let mut earliest: Option<Instant> = None;
        for i in 0..self.conns.len() {
            let State::Exchanging(r) = &self.conns[i] else { continue };
            let deadline = r.deadline;
            if deadline > now {
                earliest = Some(earliest.map_or(deadline, |e| e.min(deadline)));
                continue;
            }
            let State::Exchanging(mut req) = std::mem::replace(&mut self.conns[i], State::Free) else {
                continue;
            };
            self.forget_stream(&mut req);
            let mut outcome = self.outcome(&req, now);
            outcome.bytes_in = req.reader.bytes_in();
            self.record(outcome, Some(ErrorClass::Timeout));
            if let Some(buf) = self.io.rbuf(i) {
                buf.clear();
            }
            self.io.abort(i);
            self.conns[i] = State::Draining(None);
            self.settle_draining(i, now);
        }
        self.deadline_min = earliest;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_split_evenly() {
        assert_eq!((0..3).map(|t| split(10, 3, t)).collect::<Vec<_>>(), vec![4, 3, 3]);
        assert_eq!((0..2).map(|t| split(1, 2, t)).sum::<usize>(), 1);
    }

    #[test]
    fn realtime_stamps_map_onto_the_monotonic_clock() {
        let c = RealClock::new();
        let real_now =
            SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos() as i128).expect("clock");
        let mapped = c.instant(real_now).expect("representable");
        let now = Instant::now();
        let err = if mapped > now { mapped - now } else { now - mapped };
        assert!(err < Duration::from_millis(5), "mapping off by {err:?}");
        let earlier = c.instant(c.real_ns - 1_000_000).expect("representable");
        assert_eq!(c.mono - earlier, Duration::from_millis(1));
    }
}
