//! The io_uring engine (through the `io-uring` crate): transfers are pushed onto the
//! submission queue by the threads that call the ring, and one reaper thread, blocked in
//! `io_uring_enter` (so an idle ring burns no CPU), hands completions to their slots.
//!
//! * **Who reaps.** A thread blocked in [`Pending::wait`](super::Pending::wait) reaps
//!   for itself: it takes the completion-queue lock, waits in `io_uring_enter` and
//!   hands out what arrived (its own transfer among them), then passes the lock on to
//!   another waiting thread; threads that do not get the lock park until their
//!   completion is handed to them. The reaper thread works only while some transfer has
//!   no such thread: an async task waits for it, or its `Pending` is gone. So a read
//!   waited for on a plain thread costs no thread switch.
//! * A transfer is one entry (the block layer splits it at the device's limits); past
//!   1 GiB it is cut into pieces, one entry each, sharing one completion slot; the
//!   kernel's user data is `slot << 20 | piece`.
//! * Registered pools ([`FixedTable`]): a transfer whose memory lies inside a registered
//!   pool goes as `READ_FIXED`/`WRITE_FIXED`. The table keeps the pools alive, and the
//!   ring is closed (unregistering them) before they are dropped.
//! * **Posting** ([`Posting`]): the kernel finishes a transfer in the context of the
//!   thread that submitted it. `Interrupt` lets it interrupt that thread at once;
//!   `Cooperative` (`IORING_SETUP_COOP_TASKRUN` with `TASKRUN_FLAG`) waits until that
//!   thread enters the kernel, which a waiting thread does anyway, and which
//!   `reap_ready` does when the flag says completions wait (a thread polling
//!   `is_ready` makes no other system call). A thread parked in `block` is woken for
//!   it by the kernel (an interruptible sleep), so nobody waits for a post that needs
//!   their own enter.
//! * Shutdown (the last `IoRing` handle): a `NOP` wakes the reaper, which keeps reaping
//!   until every entry pushed has completed, so no buffer goes back to its pool while
//!   the kernel may still write into it.
#![allow(unsafe_code)] // listed in ARCHITECTURE.md, "Where `unsafe` lives"

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use io_uring::{opcode, squeue, types, IoUring, Probe};

use super::completion::{Aftermath, Completions, OnDone};
use super::fixed::{FixedTable, Registered};
#[cfg(not(loom))]
use super::leases::Leases;
use super::op::{Layout, Op, Tearing, MAX_PIECES, RWF_ATOMIC};
use super::options::{Posting, RingOptions};
use super::pending::Drive;

/// User data of the shutdown `NOP`.
const WAKE: u64 = u64::MAX;
/// Bits of the user data that number a piece.
const PIECE_BITS: u32 = 20;
struct Shared {
    // First: dropped (the ring closed, the buffers unregistered) before the pools.
    ring: IoUring,
    /// Serializes the submission queue among the calling threads.
    sq: Mutex<()>,
    /// Held by the one thread reading the completion queue (a waiter, or the reaper).
    cq: Mutex<()>,
    /// Threads parked in `block` because another held `cq`: the lock is passed on
    /// (a scan of the slots for one of them) only while there are some.
    followers: AtomicUsize,
    completions: Arc<Completions>,
    /// Entries pushed and not yet completed.
    outstanding: AtomicUsize,
    closing: AtomicBool,
    fixed: FixedTable,
    /// Leases of the shared pools whose frames the ring transfers on.
    #[cfg(not(loom))]
    leases: Leases,
    /// What the ring was built with (the kernel may have refused `Cooperative`).
    posting: Posting,
}

/// The io_uring engine.
pub(crate) struct UringEngine {
    shared: Arc<Shared>,
    reaper: Option<JoinHandle<()>>,
}

/// When a submission's entries enter the kernel.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entering {
    /// At once: the call returns with the transfer started (eager submission).
    Now,
    /// In the same `io_uring_enter` that then waits for a completion, when the calling
    /// thread, which is about to block for this transfer anyway, can reap (nobody else
    /// holds the completion queue); at once otherwise. One system call instead of two
    /// for a read waited for as soon as it is made (psync's cost at queue depth 1).
    WithWait,
}

/// How a transfer went to the kernel.
pub(crate) enum Road {
    Fixed,
    Plain,
}

impl UringEngine {
    /// A ring of `entries`, with `pools` registered; `Err` says why io_uring cannot be
    /// used here. The note, if any, says why registration was refused.
    pub(crate) fn new(
        options: &RingOptions,
        completions: Arc<Completions>,
    ) -> Result<(UringEngine, Option<String>), String> {
        let (ring, posting, posting_note) = build(options.entries, options.posting)?;
        let pools = &options.pools[..];
        let mut probe = Probe::new();
        ring.submitter()
            .register_probe(&mut probe)
            .map_err(|e| format!("io_uring works but cannot be probed for its operations ({e})"))?;
        let mut needed = vec![
            (opcode::Read::CODE, "READ"),
            (opcode::Write::CODE, "WRITE"),
            (opcode::Fsync::CODE, "FSYNC"),
            (opcode::Nop::CODE, "NOP"),
        ];
        if !pools.is_empty() {
            needed.push((opcode::ReadFixed::CODE, "READ_FIXED"));
            needed.push((opcode::WriteFixed::CODE, "WRITE_FIXED"));
        }
        if let Some((_, name)) = needed.iter().find(|(code, _)| !probe.is_supported(*code)) {
            return Err(format!(
                "this kernel's io_uring lacks the {name} operation (kernel {}); upgrade to \
                 Linux 5.6 or later",
                kernel_release()
            ));
        }
        let (fixed, registration_note) = FixedTable::new(&ring, pools);
        let note = match (posting_note, registration_note) {
            (Some(a), Some(b)) => Some(format!("{a}; {b}")),
            (a, b) => a.or(b),
        };
        let shared = Arc::new(Shared {
            ring,
            sq: Mutex::new(()),
            cq: Mutex::new(()),
            followers: AtomicUsize::new(0),
            completions,
            outstanding: AtomicUsize::new(0),
            closing: AtomicBool::new(false),
            fixed,
            #[cfg(not(loom))]
            leases: Leases::default(),
            posting,
        });
        let reaper = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("pagebuf-ring".into())
                .spawn(move || reap(&shared))
                .map_err(|e| format!("the ring's completion thread could not start ({e})"))?
        };
        Ok((
            UringEngine {
                shared,
                reaper: Some(reaper),
            },
            note,
        ))
    }

    /// When the kernel posts completions.
    pub(crate) fn posting(&self) -> Posting {
        self.shared.posting
    }

    /// What a `Pending` of this engine waits through.
    pub(crate) fn driver(&self) -> Arc<dyn Drive> {
        self.shared.clone()
    }

    /// Bytes of pool memory registered now, after letting go of the slots of dropped
    /// registrations whose pools have every buffer home.
    pub(crate) fn registered_bytes(&self) -> usize {
        self.shared.fixed.sweep(&self.shared.ring);
        self.shared.fixed.registered_bytes()
    }

    /// Registers `pool` until the returned handle drops.
    pub(crate) fn lend(&self, pool: Registered) -> crate::error::Result<Lent> {
        let indices = self.shared.fixed.lend(&self.shared.ring, pool)?;
        Ok(Lent {
            shared: Arc::downgrade(&self.shared),
            indices,
        })
    }

    /// Hands out the completions already in the queue (see `Drive::reap_ready`).
    pub(crate) fn reap_ready(&self) {
        self.shared.reap_ready();
    }

    /// Submits `op` (detached with `on_done`) into a slot of the completion table, which
    /// takes the op; the slot, and how it went (fixed or plain). With
    /// [`Entering::WithWait`] this may return only once some completion is in.
    pub(crate) fn submit(
        &self,
        op: Op,
        on_done: Option<OnDone>,
        entering: Entering,
    ) -> (usize, Road) {
        let entries = self.prepare(op, on_done);
        let mut road = Road::Plain;
        self.push_and_enter(std::slice::from_ref(&entries), entering, |_, how| {
            road = how
        });
        (entries.id, road)
    }

    /// Submits every op of `ops` with one system call; `each` learns every op's slot
    /// and how it went, in order.
    pub(crate) fn submit_all(&self, ops: Vec<Op>, each: impl FnMut(usize, Road)) {
        let prepared: Vec<Entries> = ops.into_iter().map(|op| self.prepare(op, None)).collect();
        self.push_and_enter(&prepared, Entering::Now, each);
    }

    /// Makes this ring hold the lease of the shared pool whose frame `op` uses, if it
    /// uses one, before `op` is submitted: the ring outlives this process until the
    /// transfer is done (`leases.rs`).
    #[cfg(not(loom))]
    pub(crate) fn hold_lease(&self, op: &Op) -> crate::error::Result<()> {
        match op.lease() {
            Some(lease) => self.shared.leases.hold(&self.shared.ring, &lease),
            None => Ok(()),
        }
    }

    /// Puts `op` into a slot of the completion table and works out its entries (the op
    /// moves into the slot; its memory does not).
    fn prepare(&self, op: Op, on_done: Option<OnDone>) -> Entries {
        let shared = &*self.shared;
        // At most MAX_PIECES: IoRing refuses larger transfers before they get here.
        let pieces = op.piece_count().min(MAX_PIECES);
        let fd = types::Fd(op.file().file.as_raw_fd());
        // The memory's address: the op moves into its slot below, its memory does not
        // (a buffer's block is fixed for its life; lent memory stays put by contract).
        // A part of a registered buffer, or lent memory inside a registered pool, goes
        // fixed as a whole buffer does: the kernel checks the range against the index.
        let (base, len) = op.memory();
        let layout = op.layout();
        let kind = match &op {
            Op::Read { .. } | Op::ReadPart { .. } | Op::ReadRaw { .. } => Kind::Read,
            Op::Write { tearing, .. } => Kind::Write(*tearing),
            Op::Sync { .. } => Kind::Sync,
        };
        // The kernel takes RWF_ATOMIC only from user memory (`iter_is_ubuf`): a fixed
        // buffer's pages are a bvec, refused with EINVAL (Linux 6.18). Untorn writes go
        // plain.
        let fixed = match kind {
            Kind::Write(Tearing::Impossible) => None,
            _ => shared.fixed.index_of(base, len),
        };
        // Counted before the slot exists: a detached op wakes the reaper thread, which
        // would otherwise find nothing outstanding and spin until the push.
        shared.outstanding.fetch_add(pieces, Ordering::AcqRel);
        let id = shared.completions.insert(Some(op), pieces, on_done);
        Entries {
            id,
            pieces,
            fd,
            base,
            layout,
            kind,
            fixed,
        }
    }

    /// Pushes the entries of every prepared op, then enters the kernel once (as
    /// `entering` says); `each` learns how every op went, in order.
    fn push_and_enter(
        &self,
        prepared: &[Entries],
        entering: Entering,
        mut each: impl FnMut(usize, Road),
    ) {
        let shared = &*self.shared;
        // Completions reaped here while the queue was full, and the failures of entries
        // the kernel refused, handed out once unlocked.
        let mut after = Vec::new();
        let guard = shared.sq.lock().unwrap_or_else(|p| p.into_inner());
        for entries in prepared {
            each(entries.id, entries.push(shared, &mut after));
        }
        if entering == Entering::WithWait {
            if let Ok(cq) = shared.cq.try_lock() {
                drop(guard);
                // The wait's enter submits what is queued, these transfers among them; a
                // failed one leaves them queued for the next enter (`Pending::wait`'s).
                shared.wait_for_one(std::time::Duration::from_secs(1));
                shared.drain(&mut after);
                drop(cq);
                run(after);
                shared.pass_on();
                return;
            }
        }
        // A refused submit leaves the entries queued: the reaper's next enter submits
        // them, and their completions (or errors) come back through it.
        let _ = shared.ring.submit();
        drop(guard);
        run(after);
    }
}

/// One op's entries, worked out before the op moved into its completion slot.
struct Entries {
    id: usize,
    pieces: usize,
    fd: types::Fd,
    base: usize,
    layout: Layout,
    kind: Kind,
    fixed: Option<u16>,
}

impl Entries {
    /// Pushes every piece (the caller holds the submission lock). A piece the kernel
    /// refuses fails here with the rest of the op (their outcomes go to `after`).
    fn push(&self, shared: &Shared, after: &mut Vec<Aftermath>) -> Road {
        for i in 0..self.pieces {
            let piece = self.layout.piece(i);
            let ptr = (self.base + piece.at) as *mut u8;
            let len = u32::try_from(piece.len).unwrap_or(u32::MAX);
            let fd = self.fd;
            let entry = match (self.kind, self.fixed) {
                (Kind::Read, Some(index)) => opcode::ReadFixed::new(fd, ptr, len, index)
                    .offset(piece.offset)
                    .build(),
                (Kind::Read, None) => opcode::Read::new(fd, ptr, len).offset(piece.offset).build(),
                (Kind::Write(tearing), Some(index)) => opcode::WriteFixed::new(fd, ptr, len, index)
                    .offset(piece.offset)
                    .rw_flags(rw_flags(tearing))
                    .build(),
                (Kind::Write(tearing), None) => opcode::Write::new(fd, ptr, len)
                    .offset(piece.offset)
                    .rw_flags(rw_flags(tearing))
                    .build(),
                (Kind::Sync, _) => opcode::Fsync::new(fd)
                    .flags(types::FsyncFlags::DATASYNC)
                    .build(),
            };
            let entry = entry.user_data((self.id as u64) << PIECE_BITS | i as u64);
            if let Err(errno) = push(shared, &entry, after) {
                // Not in the kernel: this piece and the rest fail here.
                for j in i..self.pieces {
                    shared.outstanding.fetch_sub(1, Ordering::AcqRel);
                    after.push(shared.completions.finish_piece(self.id, j, -errno));
                }
                return Road::Plain;
            }
        }
        match self.fixed {
            Some(_) => Road::Fixed,
            None => Road::Plain,
        }
    }
}

/// A pool registered by [`UringEngine::lend`]: its slots retire when this drops.
pub(crate) struct Lent {
    shared: std::sync::Weak<Shared>,
    indices: Vec<u16>,
}

impl Drop for Lent {
    fn drop(&mut self) {
        // A ring already gone took the registration with it.
        if let Some(shared) = self.shared.upgrade() {
            shared.fixed.retire(&shared.ring, &self.indices);
        }
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Read,
    Write(Tearing),
    Sync,
}

fn rw_flags(tearing: Tearing) -> i32 {
    match tearing {
        Tearing::Possible => 0,
        Tearing::Impossible => RWF_ATOMIC as i32,
    }
}

/// Pushes `entry`, submitting what is queued when the queue is full; the caller holds
/// the submission lock. `Err(errno)` when the kernel refuses more.
/// Runs what reaping left to do, with no lock of the ring held: waking a waiter, or
/// dropping an abandoned transfer's buffer (whose owner may hold the ring's last handle).
fn run(after: Vec<Aftermath>) {
    for aftermath in after {
        aftermath.run();
    }
}

fn push(shared: &Shared, entry: &squeue::Entry, after: &mut Vec<Aftermath>) -> Result<(), i32> {
    loop {
        // SAFETY: the caller holds `shared.sq`, so this is the only submission queue
        // view; the entry's fd, and its memory when the op owns it (a buffer), belong to
        // an op held in its completion slot until the entry completes (the slot frees it
        // only then); memory an op only points at (`Op::ReadRaw`) is kept valid and
        // untouched until then by the caller of `IoRing::read_into_raw` (its safety
        // contract; `read_many` blocks for it); the ring keeps registered pools alive.
        let pushed = unsafe {
            let mut sq = shared.ring.submission_shared();
            let pushed = sq.push(entry).is_ok();
            sq.sync();
            pushed
        };
        if pushed {
            return Ok(());
        }
        match shared.ring.submit() {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EBUSY | libc::EAGAIN | libc::EINTR)
                ) =>
            {
                // The completion queue is full: empty it if nobody else is, then retry.
                if let Ok(_cq) = shared.cq.try_lock() {
                    shared.drain(after);
                } else {
                    std::thread::yield_now();
                }
            }
            Err(e) => return Err(e.raw_os_error().unwrap_or(libc::EIO)),
        }
    }
}

impl Shared {
    /// Waits in the kernel until at least one completion is in, or `limit` passes (the
    /// caller holds `cq`). The limit keeps a wait whose completion will never come (an
    /// entry the kernel refused) from holding the lock for ever.
    fn wait_for_one(&self, limit: std::time::Duration) {
        let timeout = types::Timespec::from(limit);
        let args = types::SubmitArgs::new().timespec(&timeout);
        match self.ring.submitter().submit_with_args(1, &args) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINTR | libc::EBUSY | libc::EAGAIN | libc::ETIME)
                ) => {}
            // Without EXT_ARG (before Linux 5.11): an untimed wait.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                let _ = self.ring.submit_and_wait(1);
            }
            Err(_) => std::thread::yield_now(),
        }
    }

    /// Hands every completion in the queue to its slot (the caller holds `cq`).
    fn drain(&self, after: &mut Vec<Aftermath>) {
        // SAFETY: the caller holds `cq`, so this is the only completion queue view.
        let mut cq = unsafe { self.ring.completion_shared() };
        cq.sync();
        if cq.is_empty() {
            return;
        }
        let mut finisher = self.completions.finisher();
        for cqe in &mut cq {
            self.outstanding.fetch_sub(1, Ordering::AcqRel);
            let data = cqe.user_data();
            if data == WAKE {
                continue;
            }
            let id = (data >> PIECE_BITS) as usize;
            let piece = (data & ((1 << PIECE_BITS) - 1)) as usize;
            let aftermath = finisher.piece(id, piece, cqe.result());
            // Most completions of a busy queue have nobody to wake yet: keep `after` to
            // those that do something.
            if !aftermath.is_nothing() {
                after.push(aftermath);
            }
        }
    }

    /// After reaping: a thread that parked meanwhile takes over (one that parks just
    /// after this looks retries within its bounded park).
    fn pass_on(&self) {
        if self.followers.load(Ordering::Acquire) > 0 {
            self.completions.unpark_a_waiter();
        }
    }

    /// Whether completions wait for a submitting thread to enter the kernel
    /// (`Posting::Cooperative`).
    fn posting_waits(&self) -> bool {
        let Ok(_sq) = self.sq.try_lock() else {
            // A thread holding it is about to enter the kernel itself.
            return false;
        };
        // SAFETY: `sq` is held, so this is the only submission queue view; only its
        // flags are read.
        unsafe { self.ring.submission_shared().taskrun() }
    }

    fn closed(&self) -> bool {
        self.closing.load(Ordering::Acquire) && self.outstanding.load(Ordering::Acquire) == 0
    }
}

impl Drive for Shared {
    fn completions(&self) -> &Completions {
        &self.completions
    }

    /// Hands out the completions already in the queue, without waiting and without a
    /// system call, unless another thread is reaping (it hands them out itself). What
    /// makes a transfer whose `Pending` was forgotten count as done (no thread waits for
    /// it, and the reaper thread is not asked to), and what `Pending::is_ready` relies
    /// on.
    fn reap_ready(&self) {
        if self.completions.forked() {
            return; // the child has no queue (`MADV_DONTFORK`)
        }
        let Ok(cq) = self.cq.try_lock() else {
            return;
        };
        if self.posting == Posting::Cooperative && self.posting_waits() {
            // Posts what waits for this thread's enter (another thread's waits for its).
            let _ = self.ring.submit();
        }
        let mut after = Vec::new();
        self.drain(&mut after);
        drop(cq);
        run(after);
        self.pass_on();
    }

    /// Reaps for itself if no other thread is reaping; otherwise parks until its
    /// completion is handed to it (or the reaping thread passes the lock on).
    fn block(&self, id: usize) {
        let Ok(cq) = self.cq.try_lock() else {
            // Bounded: a lock passed on just before this thread parked is retried.
            self.followers.fetch_add(1, Ordering::AcqRel);
            std::thread::park_timeout(std::time::Duration::from_millis(10));
            self.followers.fetch_sub(1, Ordering::AcqRel);
            return;
        };
        // Checked under the lock: a completion handed out before it was taken would
        // leave this thread waiting in the kernel for one that never comes.
        let mut after = Vec::new();
        if !self.completions.is_done(id) {
            self.wait_for_one(std::time::Duration::from_secs(1));
            self.drain(&mut after);
        }
        drop(cq);
        run(after);
        self.pass_on();
    }
}

/// The reaper thread: reaps while some transfer has no thread waiting for it, until the
/// ring is closing and nothing it pushed is still in the kernel.
fn reap(shared: &Shared) {
    loop {
        shared.completions.await_demand(
            || shared.closing.load(Ordering::Acquire),
            std::time::Duration::from_millis(100),
        );
        if shared.closed() {
            return;
        }
        let wanted = shared.completions.demand() > 0 || shared.closing.load(Ordering::Acquire);
        if !wanted {
            continue;
        }
        let cq = shared.cq.lock().unwrap_or_else(|p| p.into_inner());
        if shared.outstanding.load(Ordering::Acquire) > 0 {
            shared.wait_for_one(std::time::Duration::from_millis(100));
        }
        let mut after = Vec::new();
        shared.drain(&mut after);
        drop(cq);
        run(after);
        shared.pass_on();
        if shared.closed() {
            return;
        }
    }
}

impl Drop for UringEngine {
    fn drop(&mut self) {
        let shared = &*self.shared;
        if shared.completions.forked() {
            // A forked child has neither the queue's memory nor the reaper thread: leave
            // both alone (closing the ring's fd, later, is all it may do).
            std::mem::forget(self.reaper.take());
            return;
        }
        shared.closing.store(true, Ordering::Release);
        shared.outstanding.fetch_add(1, Ordering::AcqRel);
        let guard = shared.sq.lock().unwrap_or_else(|p| p.into_inner());
        let wake = opcode::Nop::new().build().user_data(WAKE);
        let mut after = Vec::new();
        if push(shared, &wake, &mut after).is_err() {
            // The reaper still wakes for the entries in flight; only an idle one would
            // sleep on, and it has nothing to wait for.
            shared.outstanding.fetch_sub(1, Ordering::AcqRel);
        }
        let _ = shared.ring.submit();
        drop(guard);
        run(after);
        shared.completions.wake_reaper();
        if let Some(reaper) = self.reaper.take() {
            // The reaper itself may drop the last handle (a buffer's owner holding it):
            // it then finishes on its own, reaping until nothing is in the kernel.
            if reaper.thread().id() != std::thread::current().id() {
                let _ = reaper.join();
            }
        }
    }
}

/// The ring, with the posting the kernel took and a note if it refused the one asked for.
fn build(entries: u32, posting: Posting) -> Result<(IoUring, Posting, Option<String>), String> {
    let mut builder = IoUring::builder();
    builder.dontfork();
    if posting == Posting::Cooperative {
        let mut cooperative = builder.clone();
        // The flag in the submission ring says when posting waits for an enter.
        cooperative.setup_coop_taskrun().setup_taskrun_flag();
        match cooperative.build(entries) {
            Ok(ring) => return Ok((ring, Posting::Cooperative, None)),
            // Before Linux 5.19: unknown setup flags.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                let ring = builder.build(entries).map_err(|e| refusal(&e))?;
                let note = format!(
                    "Posting::Cooperative needs IORING_SETUP_COOP_TASKRUN (Linux 5.19; kernel \
                     {}): completions interrupt the submitting thread instead",
                    kernel_release()
                );
                return Ok((ring, Posting::Interrupt, Some(note)));
            }
            Err(e) => return Err(refusal(&e)),
        }
    }
    let ring = builder.build(entries).map_err(|e| refusal(&e))?;
    Ok((ring, Posting::Interrupt, None))
}

/// Why `io_uring_setup` failed, and what to do about it.
fn refusal(e: &io::Error) -> String {
    let sysctl = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok());
    let seccomp = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Seccomp:").map(|v| v.trim() == "2"))
        })
        .unwrap_or(false);
    match e.raw_os_error() {
        Some(libc::EPERM) if sysctl == Some(2) => "io_uring is disabled on this machine: \
            sysctl kernel.io_uring_disabled = 2; set it to 0 (`sysctl -w \
            kernel.io_uring_disabled=0`) to use it"
            .into(),
        Some(libc::EPERM) if sysctl == Some(1) => "io_uring is limited to privileged \
            processes: sysctl kernel.io_uring_disabled = 1 and this process is neither \
            CAP_SYS_ADMIN nor in kernel.io_uring_group; add it to that group, or set the \
            sysctl to 0"
            .into(),
        Some(libc::EPERM) if seccomp => "a seccomp filter refuses io_uring_setup (EPERM), \
            as container runtimes' default profiles do; allow io_uring_setup, \
            io_uring_enter and io_uring_register in the profile"
            .into(),
        Some(libc::ENOSYS) => format!(
            "this kernel has no io_uring (ENOSYS; kernel {}): it was built without \
             CONFIG_IO_URING, or a seccomp filter answers ENOSYS; use Linux 5.6 or later \
             with io_uring",
            kernel_release()
        ),
        Some(libc::ENOMEM) => format!(
            "io_uring_setup ran out of locked memory (ENOMEM); RLIMIT_MEMLOCK is {}: raise \
             it, or ask for fewer entries",
            rustix::process::getrlimit(rustix::process::Resource::Memlock)
                .current
                .map_or_else(|| "unlimited".to_string(), |l| format!("{l} bytes"))
        ),
        _ => format!("io_uring_setup failed ({e})"),
    }
}

pub(crate) fn kernel_release() -> String {
    rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned()
}
