//! The io_uring side of the uring engine: one ring and a fixed slab of connection slots
//! whose buffers the kernel reads and writes while operations are in flight.
//!
//! All `unsafe` of the engine is here, behind one invariant: a slot's buffers (request
//! bytes, receive buffer, `msghdr`, `iovec`, control buffer) are neither moved, resized
//! nor freed while an operation that names them is in flight. The slab is a boxed slice
//! allocated once (elements never move); each slot tracks which of its operations are in
//! flight, and the accessors that hand out `&mut` to a buffer return `None` while the
//! kernel may touch it. [`Io`]'s `Drop` cancels and drains what is still in flight, and
//! leaks the slab rather than free memory the kernel might still write.
#![allow(unsafe_code)]

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::time::Duration;

use io_uring::{cqueue, opcode, squeue, types, IoUring};

/// Bytes of a slot's receive buffer at first use; grows only for a head that does not
/// fit (heads are capped at `RESPONSE_HEAD_BYTES_MAX`).
pub const RECV_BUFFER_BYTES: usize = 16 * 1024;
/// Least free space offered to one receive; below it the buffer grows first.
const RECV_SPARE_MIN: usize = 4 * 1024;
/// Words of the control-message buffer: one `SCM_TIMESTAMPNS` (16-byte header + 16-byte
/// timespec) fits with room to spare.
const CMSG_WORDS: usize = 8;
/// Size of `struct cmsghdr` on the 64-bit Linux targets this engine supports.
const CMSGHDR_BYTES: usize = 16;
const _: () = assert!(std::mem::size_of::<libc::cmsghdr>() == CMSGHDR_BYTES);
const _: () = assert!(CMSGHDR_BYTES + std::mem::size_of::<libc::timespec>() <= CMSG_WORDS * 8);
/// Most rounds `Drop` waits for cancelled operations (each round waits up to 10 ms).
const DRAIN_ROUNDS_MAX: usize = 100;
/// Largest submission queue; the completion queue is twice as large.
pub const SQ_ENTRIES_MAX: u32 = 4096;

/// Which operation a completion belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `connect` of a new socket (linked ahead of the send).
    Connect,
    /// Sending the request bytes (linked ahead of the first receive).
    Send,
    /// One receive of answer bytes.
    Recv,
}

impl Op {
    fn code(self) -> u64 {
        match self {
            Op::Connect => 1,
            Op::Send => 2,
            Op::Recv => 3,
        }
    }

    fn index(self) -> usize {
        self.code() as usize - 1
    }
}

/// `IORING_RECVSEND_POLL_FIRST` (5.19+; older kernels ignore the ioprio bit for receives
/// and try at once).
const RECVSEND_POLL_FIRST: u16 = 1;

/// `user_data` of cancel requests: their completions are not reported.
const CANCEL_CODE: u64 = 4;

fn user_data(slot: usize, epoch: u16, code: u64) -> u64 {
    ((slot as u64) << 24) | (u64::from(epoch) << 8) | code
}

/// One completion as the engine sees it.
#[derive(Clone, Copy, Debug)]
pub struct Completion {
    /// The slot it belongs to.
    pub slot: usize,
    /// Which operation finished.
    pub op: Op,
    /// The kernel's result: bytes moved, 0, or `-errno`.
    pub result: i32,
    /// The slot was aborted after this operation was queued: the result is stale.
    pub stale: bool,
    /// Receives: kernel receive time of the last byte read (CLOCK_REALTIME, ns), when the
    /// socket delivered a timestamp.
    pub received_real_ns: Option<i128>,
}

struct Slot {
    fd: Option<OwnedFd>,
    wbuf: Vec<u8>,
    rbuf: Vec<u8>,
    iov: libc::iovec,
    msg: libc::msghdr,
    cmsg: [u64; CMSG_WORDS],
    /// Operations in flight, by [`Op::index`], with the epoch they were queued in.
    inflight: [Option<u16>; 3],
    epoch: u16,
    /// Close the socket once nothing is in flight.
    close_when_quiet: bool,
}

impl Slot {
    fn new() -> Slot {
        Slot {
            fd: None,
            wbuf: Vec::new(),
            rbuf: Vec::new(),
            iov: libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 },
            // SAFETY: msghdr is plain old data; all-zero is a valid (empty) value.
            msg: unsafe { std::mem::zeroed() },
            cmsg: [0; CMSG_WORDS],
            inflight: [None; 3],
            epoch: 0,
            close_when_quiet: false,
        }
    }

    fn quiet(&self) -> bool {
        self.inflight.iter().all(Option::is_none)
    }
}

/// A ring, its connection slots and the target address.
pub struct Io {
    ring: IoUring,
    slots: Box<[Slot]>,
    /// Target address in the kernel's form; connect operations point at it.
    addr: socket2::SockAddr,
    /// Operations in flight over all slots, by [`Op::index`].
    inflight: [usize; 3],
    skip_success: bool,
    /// Scratch for `reap` (the completion queue borrows the ring while it is read).
    raw: Vec<(u64, i32)>,
    /// How the ring was set up, for the report.
    pub setup: &'static str,
}

type Tweak = fn(&mut io_uring::Builder) -> &mut io_uring::Builder;

/// Builds a ring, trying the cheapest set-up first: SINGLE_ISSUER + DEFER_TASKRUN
/// (6.1+) runs completion work only when this thread enters the ring, so data arriving
/// neither interrupts nor wakes it before the wait asks for it; COOP_TASKRUN (5.19+) at
/// least avoids the inter-processor interrupt; plain rings work from 5.11 (EXT_ARG).
fn build_ring(sq_entries: u32) -> io::Result<(IoUring, &'static str)> {
    let tries: [(&'static str, Tweak); 3] = [
        ("single_issuer+defer_taskrun", |b| b.setup_single_issuer().setup_defer_taskrun()),
        ("coop_taskrun", |b| b.setup_coop_taskrun().setup_taskrun_flag()),
        ("plain", |b| b),
    ];
    let mut last = io::Error::new(io::ErrorKind::Unsupported, "no io_uring set-up tried");
    for (name, tweak) in tries {
        let mut builder = IoUring::builder();
        builder.setup_cqsize(sq_entries * 2).setup_clamp();
        tweak(&mut builder);
        match builder.build(sq_entries) {
            Ok(ring) if ring.params().is_feature_ext_arg() && ring.params().is_feature_nodrop() => {
                return Ok((ring, name))
            }
            Ok(_) => {
                return Err(io::Error::new(io::ErrorKind::Unsupported, "kernel lacks IORING_FEAT_EXT_ARG or NODROP"))
            }
            // EINVAL: flags unknown to this kernel; try the next set-up.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// Whether this process may use io_uring here (kernel support, `io_uring_disabled`,
/// seccomp); `Err` says why not.
pub fn probe() -> Result<&'static str, String> {
    // Full size: where locked memory is limited (kernels before 5.12), size matters.
    build_ring(SQ_ENTRIES_MAX).map(|(_, setup)| setup).map_err(|e| e.to_string())
}

fn os_error(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

impl Io {
    /// A ring with `slots` connection slots for connections to `addr`.
    pub fn new(slots: usize, addr: SocketAddr) -> io::Result<Io> {
        assert!(slots > 0 && slots < (1 << 32), "slot index fits the user_data field");
        // Up to two SQEs per slot per round (send + receive, or a cancel), so this rarely
        // fills; when it does, `push` submits early.
        let want = u32::try_from(slots.saturating_mul(2)).unwrap_or(SQ_ENTRIES_MAX);
        let sq_entries = want.clamp(64, SQ_ENTRIES_MAX).next_power_of_two();
        let (ring, setup) = build_ring(sq_entries)?;
        let skip_success = ring.params().is_feature_skip_cqe_on_success();
        Ok(Io {
            ring,
            slots: (0..slots).map(|_| Slot::new()).collect(),
            addr: socket2::SockAddr::from(addr),
            inflight: [0; 3],
            skip_success,
            raw: Vec::with_capacity(sq_entries as usize * 2),
            setup,
        })
    }

    /// Operations of kind `op` in flight over all slots.
    pub fn inflight(&self, op: Op) -> usize {
        self.inflight[op.index()]
    }

    /// Operations in flight over all slots.
    pub fn inflight_total(&self) -> usize {
        self.inflight.iter().sum()
    }

    /// Nothing of slot `i` is in flight.
    pub fn is_quiet(&self, i: usize) -> bool {
        self.slots[i].quiet()
    }

    /// Slot `i` holds an open socket.
    pub fn has_socket(&self, i: usize) -> bool {
        self.slots[i].fd.is_some()
    }

    /// The request buffer of slot `i`; `None` while a send may read it.
    pub fn wbuf(&mut self, i: usize) -> Option<&mut Vec<u8>> {
        let s = &mut self.slots[i];
        s.inflight[Op::Send.index()].is_none().then_some(&mut s.wbuf)
    }

    /// The receive buffer of slot `i` (unconsumed answer bytes); `None` while a receive
    /// may write it.
    pub fn rbuf(&mut self, i: usize) -> Option<&mut Vec<u8>> {
        let s = &mut self.slots[i];
        s.inflight[Op::Recv.index()].is_none().then_some(&mut s.rbuf)
    }

    fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        // Two tries: a full queue is submitted (not waited on) once, which empties it.
        for _ in 0..2 {
            // SAFETY: every entry built in this file points only into `self.slots` (boxed,
            // never moved or resized while the operation is in flight, see the module doc)
            // or into `self.addr` (owned by `self`, never changed); the caller marks the
            // operation in flight before any accessor could hand out the buffer again.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                return Ok(());
            }
            self.ring.submit()?;
        }
        Err(io::Error::new(io::ErrorKind::WouldBlock, "submission queue stays full"))
    }

    /// Opens a TCP socket for slot `i` (Nagle off, kernel receive timestamps on).
    pub fn open(&mut self, i: usize) -> io::Result<()> {
        debug_assert!(self.slots[i].fd.is_none() && self.slots[i].quiet());
        let sock = socket2::Socket::new(self.addr.domain(), socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
        sock.set_nodelay(true)?;
        let on: libc::c_int = 1;
        // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from `&on`, a live c_int; the
        // fd is the socket just created and owned by `sock`.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_TIMESTAMPNS,
                std::ptr::from_ref(&on).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let s = &mut self.slots[i];
        s.fd = Some(OwnedFd::from(sock));
        s.close_when_quiet = false;
        Ok(())
    }

    fn fd(&self, i: usize) -> io::Result<types::Fd> {
        self.slots[i].fd.as_ref().map(|f| types::Fd(f.as_raw_fd())).ok_or_else(|| os_error(libc::EBADF))
    }

    fn mark(&mut self, i: usize, op: Op) -> u64 {
        let s = &mut self.slots[i];
        debug_assert!(s.inflight[op.index()].is_none(), "one {op:?} per slot at a time");
        s.inflight[op.index()] = Some(s.epoch);
        self.inflight[op.index()] += 1;
        user_data(i, s.epoch, op.code())
    }

    /// Clears `op` of slot `i` if it is in flight from `epoch`; true if it was.
    fn unmark(&mut self, i: usize, op: Op, epoch: u16) -> bool {
        let s = &mut self.slots[i];
        if s.inflight[op.index()] != Some(epoch) {
            return false;
        }
        s.inflight[op.index()] = None;
        self.inflight[op.index()] -= 1;
        true
    }

    /// Queues the send of slot `i`'s request buffer, linked ahead of a receive: the
    /// receive starts only once every byte is sent, so its completion also says the send
    /// is done (MSG_WAITALL makes the kernel finish short sends itself; a send that still
    /// falls short breaks the link and completes with an error). With `connect`, a
    /// `connect` of the slot's new socket heads the chain, so a new connection costs no
    /// extra round through the loop.
    pub fn exchange(&mut self, i: usize, connect: bool) -> io::Result<()> {
        let fd = self.fd(i)?;
        let s = &self.slots[i];
        let len = u32::try_from(s.wbuf.len()).map_err(|_| os_error(libc::EMSGSIZE))?;
        // Successful connects and sends post no completion where the kernel allows it
        // (5.17+); failures always do, and cancel the rest of the chain.
        let mut flags = squeue::Flags::IO_LINK;
        if self.skip_success {
            flags |= squeue::Flags::SKIP_SUCCESS;
        }
        let send = opcode::Send::new(fd, s.wbuf.as_ptr(), len)
            .flags(libc::MSG_WAITALL | libc::MSG_NOSIGNAL)
            .build()
            .flags(flags);
        let connect_entry = opcode::Connect::new(fd, self.addr.as_ptr(), self.addr.len()).build().flags(flags);
        // The chain must go into one submission for the links to hold: make room first.
        let room = {
            let sq = self.ring.submission();
            sq.capacity() - sq.len()
        };
        if room < 3 {
            self.ring.submit()?;
        }
        let epoch = self.slots[i].epoch;
        if connect {
            let ud = self.mark(i, Op::Connect);
            if let Err(e) = self.push(&connect_entry.user_data(ud)) {
                self.unmark(i, Op::Connect, epoch);
                return Err(e);
            }
        }
        let ud = self.mark(i, Op::Send);
        if let Err(e) = self.push(&send.user_data(ud)) {
            self.unmark(i, Op::Send, epoch);
            return Err(e);
        }
        // The answer cannot be there yet: skip the first receive attempt and wait for data.
        self.receive(i, true)
    }

    /// Queues one receive into slot `i`'s buffer (growing it first if nearly full).
    pub fn recv(&mut self, i: usize) -> io::Result<()> {
        self.receive(i, false)
    }

    fn receive(&mut self, i: usize, poll_first: bool) -> io::Result<()> {
        let fd = self.fd(i)?;
        let s = &mut self.slots[i];
        debug_assert!(s.inflight[Op::Recv.index()].is_none());
        if s.rbuf.capacity() - s.rbuf.len() < RECV_SPARE_MIN {
            s.rbuf.reserve(RECV_BUFFER_BYTES.max(s.rbuf.len()));
        }
        let spare = s.rbuf.spare_capacity_mut();
        s.iov = libc::iovec { iov_base: spare.as_mut_ptr().cast(), iov_len: spare.len() };
        s.cmsg = [0; CMSG_WORDS];
        s.msg.msg_name = std::ptr::null_mut();
        s.msg.msg_namelen = 0;
        s.msg.msg_iov = std::ptr::from_mut(&mut s.iov);
        s.msg.msg_iovlen = 1;
        s.msg.msg_control = s.cmsg.as_mut_ptr().cast();
        s.msg.msg_controllen = std::mem::size_of_val(&s.cmsg) as _;
        s.msg.msg_flags = 0;
        let ioprio = if poll_first { RECVSEND_POLL_FIRST } else { 0 };
        let entry = opcode::RecvMsg::new(fd, std::ptr::from_mut(&mut s.msg)).ioprio(ioprio).build();
        let ud = self.mark(i, Op::Recv);
        let epoch = self.slots[i].epoch;
        self.push(&entry.user_data(ud)).inspect_err(|_| {
            self.unmark(i, Op::Recv, epoch);
        })
    }

    /// Gives up on slot `i`: cancels what is in flight and closes the socket once the
    /// kernel has let go of it (at once if nothing is in flight).
    pub fn abort(&mut self, i: usize) {
        let s = &mut self.slots[i];
        let epoch = s.epoch;
        s.epoch = s.epoch.wrapping_add(1);
        s.close_when_quiet = true;
        let pending = [Op::Connect, Op::Send, Op::Recv].map(|op| s.inflight[op.index()].map(|e| (op, e)));
        if s.quiet() {
            s.fd = None;
            return;
        }
        for (op, op_epoch) in pending.into_iter().flatten() {
            let cancel = opcode::AsyncCancel::new(user_data(i, op_epoch, op.code())).build();
            // A cancel that cannot be queued only delays the close until the operation
            // ends by itself (or the run's end drains it).
            let _ = self.push(&cancel.user_data(user_data(i, epoch, CANCEL_CODE)));
        }
    }

    /// Closes slot `i`'s socket now; only valid when nothing is in flight.
    pub fn close(&mut self, i: usize) {
        debug_assert!(self.slots[i].quiet());
        if self.slots[i].quiet() {
            self.slots[i].fd = None;
        } else {
            self.abort(i);
        }
    }

    /// Submits what is queued, then waits until `want` completions are ready or
    /// `timeout` passes (whichever first). `want == 0` only submits.
    pub fn submit_and_wait(&mut self, want: usize, timeout: Option<Duration>) -> io::Result<()> {
        let result = match (want, timeout) {
            (0, _) => self.ring.submit(),
            (_, None) => self.ring.submit_and_wait(want),
            (_, Some(t)) => {
                let ts = types::Timespec::from(t);
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(want, &args)
            }
        };
        match result {
            Ok(_) => Ok(()),
            // ETIME: the wait timed out; EINTR: a signal; EBUSY: completions are waiting
            // to be reaped (the caller reaps next). None of them lose work.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR | libc::EBUSY)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Moves every ready completion into `out` (cleared first), updating the slots' books.
    pub fn reap(&mut self, out: &mut Vec<Completion>) {
        out.clear();
        let mut raw = std::mem::take(&mut self.raw);
        raw.clear();
        raw.extend(self.ring.completion().map(|c: cqueue::Entry| (c.user_data(), c.result())));
        for &(ud, result) in &raw {
            if let Some(c) = self.complete(ud, result) {
                out.push(c);
            }
        }
        self.raw = raw;
    }

    fn complete(&mut self, ud: u64, result: i32) -> Option<Completion> {
        let code = ud & 0xff;
        let epoch = ((ud >> 8) & 0xffff) as u16;
        let slot = usize::try_from(ud >> 24).ok().filter(|&i| i < self.slots.len())?;
        let op = match code {
            1 => Op::Connect,
            2 => Op::Send,
            3 => Op::Recv,
            _ => return None,
        };
        let matched = self.unmark(slot, op, epoch);
        if matched && self.skip_success && op != Op::Recv {
            // A skip-success connect or send posts a completion only when it fails, and
            // then the entries linked behind it are cancelled without completions of
            // their own (REQ_F_SKIP_LINK_CQES): they are over too.
            if op == Op::Connect {
                self.unmark(slot, Op::Send, epoch);
            }
            self.unmark(slot, Op::Recv, epoch);
        }
        let mut received_real_ns = None;
        if op == Op::Recv && matched {
            // A receive's completion implies the connect and send linked ahead of it are
            // done (see `exchange`), including those whose success posts no completion.
            self.unmark(slot, Op::Connect, epoch);
            self.unmark(slot, Op::Send, epoch);
            let s = &mut self.slots[slot];
            if let Ok(n) = usize::try_from(result) {
                let n = n.min(s.iov.iov_len);
                // SAFETY: the kernel wrote `n` bytes (n <= the spare capacity offered in
                // `recv`, checked above) right after the vector's initialized part, and
                // this is the completion of that very receive (`matched`).
                unsafe { s.rbuf.set_len(s.rbuf.len() + n) };
                received_real_ns = timestamp_ns(&s.cmsg);
            }
        }
        let s = &mut self.slots[slot];
        let stale = !matched || epoch != s.epoch;
        if s.close_when_quiet && s.quiet() {
            s.fd = None;
        }
        Some(Completion { slot, op, result, stale, received_real_ns })
    }
}

/// The `SCM_TIMESTAMPNS` of a control buffer, as ns since the Unix epoch. The buffer is
/// zeroed before each receive, so no header means no timestamp.
fn timestamp_ns(cmsg: &[u64; CMSG_WORDS]) -> Option<i128> {
    let mut bytes = [0u8; CMSG_WORDS * 8];
    for (chunk, w) in bytes.chunks_exact_mut(8).zip(cmsg) {
        chunk.copy_from_slice(&w.to_ne_bytes());
    }
    let word = |at: usize| -> Option<[u8; 8]> { bytes.get(at..at + 8)?.try_into().ok() };
    let half = |at: usize| -> Option<[u8; 4]> { bytes.get(at..at + 4)?.try_into().ok() };
    let len = usize::from_ne_bytes(word(0)?);
    let level = i32::from_ne_bytes(half(8)?);
    let kind = i32::from_ne_bytes(half(12)?);
    if len < CMSGHDR_BYTES + 16 || level != libc::SOL_SOCKET || kind != libc::SCM_TIMESTAMPNS {
        return None;
    }
    let sec = i64::from_ne_bytes(word(CMSGHDR_BYTES)?);
    let nsec = i64::from_ne_bytes(word(CMSGHDR_BYTES + 8)?);
    Some(i128::from(sec) * 1_000_000_000 + i128::from(nsec))
}

impl Drop for Io {
    fn drop(&mut self) {
        if self.inflight_total() == 0 {
            return;
        }
        for i in 0..self.slots.len() {
            if !self.slots[i].quiet() {
                self.abort(i);
            }
        }
        let mut done = Vec::new();
        for _ in 0..DRAIN_ROUNDS_MAX {
            if self.inflight_total() == 0 {
                return;
            }
            if self.submit_and_wait(1, Some(Duration::from_millis(10))).is_err() {
                break;
            }
            self.reap(&mut done);
        }
        if self.inflight_total() > 0 {
            // The kernel may still write into these buffers: never free them.
            std::mem::forget(std::mem::take(&mut self.slots));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_timestamp_control_message() {
        let mut cmsg = [0u64; CMSG_WORDS];
        assert_eq!(timestamp_ns(&cmsg), None);
        cmsg[0] = 32;
        let (level, kind) = (libc::SOL_SOCKET as u32 as u64, libc::SCM_TIMESTAMPNS as u32 as u64);
        cmsg[1] = if cfg!(target_endian = "little") { level | (kind << 32) } else { (level << 32) | kind };
        cmsg[2] = 1_700_000_000;
        cmsg[3] = 5;
        assert_eq!(timestamp_ns(&cmsg), Some(1_700_000_000_000_000_005));
    }
}
