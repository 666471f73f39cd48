//! `Attached`: one process's view of a shared pool (the memfd, its mapping, this
//! process's table entry and buffer headers), and the shared protocol on top of it:
//! taking and returning frames (`frame_table.rs`: one owner word per frame is the
//! whole record), reclaiming a dead process's frames, and the futex.
//!
//! The futex protocol: `released` is bumped after every return of a frame;
//! a waiter counts itself in `waiters`, reads `released`, tries the table once more,
//! and sleeps on `released` only if it is unchanged. A returner wakes one sleeper
//! only when `waiters` is non-zero, so a release with nobody waiting makes no syscall.
//! All four steps are `SeqCst`, so either the returner sees the waiter or the waiter
//! sees the frame. The futex is the shared (not private) kind: sleepers in other
//! processes wake too.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustix::thread::futex;

use super::frame_table::FrameTable;
use super::frames::FrameHeader;
use super::hand_over::{self, Received};
use super::layout::{
    Control, FrameEntry, Geometry, Owner, ProcessState, FLAG_HUGE_PAGES, FLAG_ZERO_ON_REUSE,
    MAX_PROCESSES,
};
use super::lease::{self, Lease};
use super::liveness;
use super::memfd::{self, Mapping};
use super::ring::{Sender, TokenRing};
use crate::error::{Error, Result};
use crate::memory::{huge_pages_free_for, HugePages};
use crate::pool::{FrameMemory, Framing, PoolStats};
use crate::ring::fork;

/// One process's attachment to a shared pool. Dropped (and its table entry freed) when
/// the last handle and the last buffer of this process are gone.
pub(super) struct Attached {
    headers: Box<[FrameHeader]>,
    geometry: Geometry,
    owner: Owner,
    /// Held while anything of this process may transfer into or out of its frames; a
    /// ring holds it too for its transfers on them (`lease.rs`).
    lease: Arc<Lease>,
    /// `fork::generation()` when this process attached: a forked child inherits the
    /// handle and the mapping but not the table entry, so it must neither take frames
    /// in the parent's name nor return the parent's frames.
    forks: u64,
    /// The first corruption this process saw (or was told of), for every later caller.
    problem: Mutex<Option<Error>>,
    // After the headers: nothing points into the mapping once they are gone.
    mapping: Mapping,
    fd: OwnedFd,
}

impl Attached {
    /// Makes a new pool's memfd, fills in its header and free list, and joins it. On
    /// reserved huge pages where `framing`'s memory asks for them
    /// ([`HugePages::Prefer`] or `Require`); with `Prefer`, normal pages and a note
    /// saying why when none can be had.
    pub(super) fn create(framing: &Framing) -> Result<(Arc<Attached>, Option<String>)> {
        let wants = match framing.memory_source() {
            FrameMemory::Pages(options) | FrameMemory::SharedMemory(options) => {
                options.huge_pages_choice()
            }
            _ => HugePages::Off,
        };
        let mut note = None;
        if matches!(wants, HugePages::Prefer | HugePages::Require) {
            match Attached::map_new(framing, true) {
                Ok((fd, mapping, geometry)) => {
                    // A new memfd is zeros: every owner word says free.
                    return Ok((Attached::join(fd, mapping, geometry)?, None));
                }
                Err(err) if wants == HugePages::Require => return Err(err),
                Err(err) => note = Some(format!("on normal pages, not huge ones: {err}")),
            }
        }
        let (fd, mapping, geometry) = Attached::map_new(framing, false)?;
        Ok((Attached::join(fd, mapping, geometry)?, note))
    }

    /// A new pool's memfd, mapped, with its header written.
    fn map_new(framing: &Framing, huge: bool) -> Result<(OwnedFd, Mapping, Geometry)> {
        let geometry = Geometry::for_framing(framing, huge)?;
        if huge {
            huge_pages_free_for(geometry.total_len)?;
        }
        let fd = memfd::create_sealed(geometry.total_len, huge)?;
        // A shared huge-page mapping takes its pages from the reserve here (mmap), or
        // fails: never a SIGBUS at a later fault.
        let mapping = Mapping::new(fd.as_fd(), geometry.total_len)?;
        geometry.write(&mapping.control().header);
        Ok((fd, mapping, geometry))
    }

    /// `(start address, length)` of this process's mapping of the pool.
    pub(super) fn memory_extent(&self) -> (usize, usize) {
        self.mapping.extent()
    }

    /// Whether the pool's memory is reserved huge pages.
    pub(super) fn is_huge(&self) -> bool {
        self.geometry.flags & FLAG_HUGE_PAGES != 0
    }

    /// Joins the pool behind `fd` after checking its seals, size, header and version.
    pub(super) fn attach(fd: OwnedFd) -> Result<Arc<Attached>> {
        let len = memfd::check_received(fd.as_fd())?;
        // `check_received` refused sizes that do not fit a usize.
        let mapping = Mapping::new(fd.as_fd(), len as usize)?;
        let geometry = Geometry::read(&mapping.control().header, len)?;
        if mapping.control().wait.0.poisoned.load(Ordering::Acquire) != 0 {
            return Err(poisoned_by_peer());
        }
        let attached = Attached::join(fd, mapping, geometry)?;
        attached.reclaim_dead();
        Ok(attached)
    }

    fn join(fd: OwnedFd, mapping: Mapping, geometry: Geometry) -> Result<Arc<Attached>> {
        let shared =
            Shared::new(&mapping, &geometry, fd.as_fd()).ok_or_else(|| Error::Corrupt {
                offset: geometry.table_offset as u64,
                detail: "the shared pool's frame table lies outside its memfd".into(),
            })?;
        let start = liveness::own_start_time()
            .map_err(|e| Error::io("reading this process's start time from /proc", e))?;
        let table = &mapping.control().processes;
        let owner = match liveness::claim(table, start) {
            Some(owner) => owner,
            None => {
                shared.reclaim_dead();
                liveness::claim(table, start).ok_or_else(|| {
                    Error::InvalidRequest(format!(
                        "all {MAX_PROCESSES} process slots of the shared pool are held by \
                         live processes; detach a process (drop its pool handles and \
                         buffers) first"
                    ))
                })?
            }
        };
        // Before any frame is taken: a survivor that finds us dead waits for it.
        let lease = match Lease::take(fd.as_fd(), owner) {
            Ok(lease) => Arc::new(lease),
            Err(err) => {
                liveness::leave(table, owner);
                return Err(err);
            }
        };
        let (start, len) = mapping.extent();
        lease::note_mapping(start, len, &lease);
        // Every frame's bytes lie in the mapping: checked once here, so the headers
        // (and the buffers built from them) never point outside it.
        let mut addresses = Vec::with_capacity(geometry.frames);
        for i in 0..geometry.frames {
            let offset = geometry.frames_offset + i * geometry.stride + geometry.headroom;
            let data = mapping.address(offset, geometry.frame_size);
            match data {
                Some(data) => addresses.push(data),
                None => {
                    liveness::leave(table, owner);
                    return Err(Error::Corrupt {
                        offset: offset as u64,
                        detail: format!("frame {i} lies outside the shared pool's memfd"),
                    });
                }
            }
        }
        Ok(Arc::new_cyclic(|weak| {
            let me = weak.as_ptr();
            let headers = addresses
                .into_iter()
                .enumerate()
                .map(|(i, data)| {
                    FrameHeader::new(me, i as u32, data, geometry.frame_size, geometry.alignment)
                })
                .collect();
            Attached {
                headers,
                geometry,
                owner,
                lease,
                forks: fork::generation(),
                problem: Mutex::new(None),
                mapping,
                fd,
            }
        }))
    }

    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// This attachment's lease, for a ring to hold while it transfers on a frame.
    pub(super) fn lease(&self) -> &Arc<Lease> {
        &self.lease
    }

    pub(super) fn header(&self, index: u32) -> Option<&FrameHeader> {
        self.headers.get(index as usize)
    }

    pub(super) fn headers_slice(&self) -> &[FrameHeader] {
        &self.headers
    }

    /// Which of this process's frame headers lies at `address`, if any.
    pub(super) fn index_of_header(&self, address: usize) -> Option<u32> {
        let start = self.headers.as_ptr() as usize;
        let size = std::mem::size_of::<FrameHeader>();
        let offset = address.checked_sub(start)?;
        (offset % size == 0 && offset / size < self.headers.len()).then(|| (offset / size) as u32)
    }

    pub(super) fn zero_on_reuse(&self) -> bool {
        self.geometry.flags & FLAG_ZERO_ON_REUSE != 0
    }

    pub(super) fn frames(&self) -> usize {
        self.geometry.frames
    }

    fn shared(&self) -> Shared<'_> {
        // `join` checked that the table fits; an empty table would only make every
        // index a reported corruption.
        Shared::new(&self.mapping, &self.geometry, self.fd.as_fd()).unwrap_or(Shared {
            control: self.mapping.control(),
            memfd: self.fd.as_fd(),
            entries: &[],
            cells: &[],
            geometry: &self.geometry,
        })
    }

    fn control(&self) -> &Control {
        self.mapping.control()
    }

    /// `Err` once this process or any other found the bookkeeping corrupt.
    pub(super) fn check(&self) -> Result<()> {
        let problem = self.problem.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(problem) = &*problem {
            return Err(problem.clone());
        }
        if self.control().wait.0.poisoned.load(Ordering::Acquire) != 0 {
            return Err(poisoned_by_peer());
        }
        Ok(())
    }

    /// Records `problem` for every later caller, in this process and (through the
    /// shared word) in the others. Returns it.
    pub(super) fn poison(&self, problem: Error) -> Error {
        self.control().wait.0.poisoned.store(1, Ordering::Release);
        let mut slot = self.problem.lock().unwrap_or_else(|e| e.into_inner());
        slot.get_or_insert(problem).clone()
    }

    /// Whether this is the process that attached (not a child forked since).
    fn in_own_process(&self) -> bool {
        fork::generation() == self.forks
    }

    /// Takes a free frame for this process: `Ok(None)` when none is free.
    pub(super) fn take(&self) -> Result<Option<u32>> {
        if !self.in_own_process() {
            return Err(forked());
        }
        let index = match self.shared().table().claim(self.owner.word()) {
            Ok(Some(index)) => index,
            Ok(None) => return Ok(None),
            Err(e) => return Err(self.poison(e)),
        };
        let free = &self.control().free.0;
        let out = free.out.fetch_add(1, Ordering::Relaxed) + 1;
        free.high_water.fetch_max(out, Ordering::Relaxed);
        self.control()
            .counters
            .0
            .allocations
            .fetch_add(1, Ordering::Relaxed);
        Ok(Some(index))
    }

    /// Returns frame `index`, held by this process, to the shared list, and wakes a
    /// sleeper if there is one.
    pub(super) fn give_back(&self, index: u32) {
        if !self.in_own_process() {
            // A forked child's copy of a parent's buffer: the frame is the parent's to
            // return, and still in use there.
            return;
        }
        let shared = self.shared();
        let table = shared.table();
        if index as usize >= table.entries.len() {
            return;
        }
        let mine = self.owner.word();
        if let Err(actual) = table.release(index, mine) {
            // Someone else owns it now: a peer believed us dead, or wrote garbage.
            // Freeing it would hand one frame out twice; leave it be.
            self.poison(Error::Corrupt {
                offset: table.owner_offset(index as usize),
                detail: format!(
                    "frame {index} was returned by this process, but the shared table says \
                     its owner is {actual:#x}, not {mine:#x}"
                ),
            });
            return;
        }
        shared.count_freed(1);
        shared.wake(1);
    }

    /// `Err` when a hand-over cannot start: a forked child, or a poisoned pool.
    pub(super) fn ready_to_hand_over(&self) -> Result<()> {
        if !self.in_own_process() {
            return Err(forked());
        }
        self.check()
    }

    /// Hands frame `index`, held by this process (its buffer already given up), with
    /// `len` bytes of content to whichever process receives next.
    pub(super) fn hand_over(&self, index: u32, len: usize) -> Result<()> {
        if !self.in_own_process() {
            return Err(forked());
        }
        self.check()?;
        let shared = self.shared();
        let entry = shared
            .entries
            .get(index as usize)
            .ok_or_else(|| Error::InvalidArgument(format!("frame {index} is not in the pool")))?;
        // The length first: the receiver reads it once it owns the frame.
        entry.next.store(len as u64, Ordering::Relaxed);
        let ring = shared.ring().ok_or_else(|| self.poison(ring_missing()))?;
        // A frame in transit stays counted as out: its owner word is not free.
        hand_over::send(&ring, &shared.table(), index, self.owner).map_err(|e| self.poison(e))?;
        let wait = &self.control().ring_wait.0;
        wait.delivered.fetch_add(1, Ordering::SeqCst);
        if wait.receivers.load(Ordering::SeqCst) != 0 {
            let _ = futex::wake(&wait.delivered, futex::Flags::empty(), 1);
        }
        Ok(())
    }

    /// Takes the next token handed over, checked (in range, in transit), and makes the
    /// frame this process's: its index and content length. `Ok(None)`: none waiting.
    pub(super) fn receive(&self) -> Result<Option<(u32, usize)>> {
        if !self.in_own_process() {
            return Err(forked());
        }
        self.check()?;
        let shared = self.shared();
        let ring = shared.ring().ok_or_else(|| self.poison(ring_missing()))?;
        let table = shared.table();
        let processes = &self.control().processes;
        let live = |sender: Sender| {
            processes.get(sender.slot).is_some_and(|entry| {
                matches!(
                    ProcessState::parse(entry.state.load(Ordering::Acquire)),
                    Some((ProcessState::Live, generation)) if sender.is(Owner { slot: sender.slot, generation })
                )
            })
        };
        let index = match hand_over::receive(&ring, &table, self.owner, live) {
            Ok(Received::Frame(index)) => index,
            Ok(Received::Nothing | Received::Pending) => return Ok(None),
            Err(e) => return Err(self.poison(e)),
        };
        // `receive` checked the index against the table.
        let entry = &shared.entries[index as usize];
        let offset = table.owner_offset(index as usize) - 8;
        let len = entry.next.load(Ordering::Relaxed);
        match usize::try_from(len) {
            Ok(len) if len <= self.geometry.frame_size => Ok(Some((index, len))),
            _ => Err(self.poison(Error::Corrupt {
                offset,
                detail: format!(
                    "frame {index} was handed over with length {len}, past the frame size {}",
                    self.geometry.frame_size
                ),
            })),
        }
    }

    /// As `begin_wait`, for receivers.
    pub(super) fn begin_receive_wait(&self) -> u32 {
        let wait = &self.control().ring_wait.0;
        wait.receivers.fetch_add(1, Ordering::SeqCst);
        wait.delivered.load(Ordering::SeqCst)
    }

    /// Whether a hand-over was made since `delivered` read `seen`.
    pub(super) fn delivered_since(&self, seen: u32) -> bool {
        self.control().ring_wait.0.delivered.load(Ordering::SeqCst) != seen
    }

    /// Sleeps until a hand-over after `seen`, or `timeout`.
    pub(super) fn sleep_receive(&self, seen: u32, timeout: Duration) {
        let wait = &self.control().ring_wait.0;
        let timeout = futex::Timespec {
            tv_sec: timeout.as_secs().min(i64::MAX as u64) as i64,
            tv_nsec: i64::from(timeout.subsec_nanos()),
        };
        let _ = futex::wait(&wait.delivered, futex::Flags::empty(), seen, Some(&timeout));
    }

    pub(super) fn end_receive_wait(&self) {
        let wait = &self.control().ring_wait.0;
        let _ = wait
            .receivers
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    }

    /// Returns the frames of every dead process; how many came back.
    pub(super) fn reclaim_dead(&self) -> usize {
        self.shared().reclaim_dead()
    }

    /// The value a waiter compares against, after counting itself in.
    pub(super) fn begin_wait(&self) -> u32 {
        let wait = &self.control().wait.0;
        if let Some(entry) = self.control().processes.get(self.owner.slot) {
            entry.waiting.fetch_add(1, Ordering::Relaxed);
        }
        wait.waiters.fetch_add(1, Ordering::SeqCst);
        wait.released.load(Ordering::SeqCst)
    }

    /// Sleeps until a release after `seen`, or `timeout`, whichever comes first.
    pub(super) fn sleep(&self, seen: u32, timeout: Duration) {
        let wait = &self.control().wait.0;
        let timeout = futex::Timespec {
            tv_sec: timeout.as_secs().min(i64::MAX as u64) as i64,
            tv_nsec: i64::from(timeout.subsec_nanos()),
        };
        // EAGAIN (a release came first), ETIMEDOUT and EINTR all mean: look again.
        let _ = futex::wait(&wait.released, futex::Flags::empty(), seen, Some(&timeout));
    }

    pub(super) fn end_wait(&self) {
        let wait = &self.control().wait.0;
        if let Some(entry) = self.control().processes.get(self.owner.slot) {
            let _ = entry
                .waiting
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
        let _ = wait
            .waiters
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    }

    /// Counts an allocation that found no frame free (once per allocation).
    pub(super) fn count_exhausted(&self) {
        self.control()
            .counters
            .0
            .exhausted
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an allocation that had to wait.
    pub(super) fn count_wait(&self) {
        self.control()
            .counters
            .0
            .waits
            .fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn stats(&self) -> PoolStats {
        let control = self.control();
        let frames = self.geometry.frames;
        // The owner words are the record; garbage in them counts as out.
        let out = self.shared().table().out().unwrap_or(frames).min(frames);
        PoolStats {
            frames,
            frame_size: self.geometry.frame_size,
            free: frames - out,
            in_use: out,
            high_water: usize::try_from(control.free.0.high_water.load(Ordering::Relaxed))
                .unwrap_or(usize::MAX)
                .min(frames),
            allocations: control.counters.0.allocations.load(Ordering::Relaxed),
            exhausted: control.counters.0.exhausted.load(Ordering::Relaxed),
            waits: control.counters.0.waits.load(Ordering::Relaxed),
            waiting: control.wait.0.waiters.load(Ordering::Relaxed) as usize,
            closed: self.check().is_err(),
        }
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        // Every buffer of this process is gone (each held the Arc), so its frames are
        // all back: the table entry can go to the next process. (A forked child's copy
        // of the handle does not own the entry.)
        if !self.in_own_process() {
            return;
        }
        liveness::leave(&self.mapping.control().processes, self.owner);
    }
}

fn forked() -> Error {
    Error::InvalidRequest(
        "this SharedPool handle was attached before a fork; a forked child must attach on \
         its own (SharedPool::attach of the pool's fd)"
            .into(),
    )
}

fn ring_missing() -> Error {
    Error::Corrupt {
        offset: 0,
        detail: "the shared pool's hand-over ring lies outside its memfd".into(),
    }
}

fn poisoned_by_peer() -> Error {
    Error::Corrupt {
        offset: 0,
        detail: "another process found the shared pool's bookkeeping corrupt and poisoned \
                 it; create a new pool"
            .into(),
    }
}

/// The shared words and frame table of one mapping, borrowed for one operation.
struct Shared<'a> {
    control: &'a Control,
    /// The pool's memfd, through which a dead process's lease is looked at.
    memfd: BorrowedFd<'a>,
    entries: &'a [FrameEntry],
    cells: &'a [std::sync::atomic::AtomicU64],
    geometry: &'a Geometry,
}

impl<'a> Shared<'a> {
    fn new(
        mapping: &'a Mapping,
        geometry: &'a Geometry,
        memfd: BorrowedFd<'a>,
    ) -> Option<Shared<'a>> {
        Some(Shared {
            control: mapping.control(),
            memfd,
            entries: mapping.frame_entries(geometry.table_offset, geometry.frames)?,
            cells: mapping.ring_cells(geometry.ring_offset, geometry.ring_cells)?,
            geometry,
        })
    }

    fn ring(&self) -> Option<TokenRing<'_>> {
        // `join` checked the cells fit; an empty slice (never a valid ring) is refused.
        (!self.cells.is_empty()).then_some(TokenRing {
            words: &self.control.ring.0,
            cells: self.cells,
            offset: self.geometry.ring_offset as u64,
        })
    }

    fn table(&self) -> FrameTable<'_> {
        FrameTable {
            entries: self.entries,
            cursor: &self.control.free.0.cursor,
            released: &self.control.wait.0.released,
            offset: self.geometry.table_offset as u64,
        }
    }

    /// Counts `frames` frames freed (their owner words just cleared) for the high-water
    /// mark.
    fn count_freed(&self, frames: u64) {
        let _ = self
            .control
            .free
            .0
            .out
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(frames))
            });
    }

    /// Tells sleepers that frames came back (the table moved the futex word with each
    /// release): a wake is made only if someone waits.
    fn wake(&self, frames: u32) {
        let wait = &self.control.wait.0;
        if wait.waiters.load(Ordering::SeqCst) != 0 {
            let _ = futex::wake(&wait.released, futex::Flags::empty(), frames);
        }
    }

    fn reclaim_dead(&self) -> usize {
        let table = &self.control.processes;
        let mut returned = 0;
        let leased = |owner| lease::is_held(self.memfd, owner);
        for dead in liveness::claim_dead(table, leased) {
            let word = dead.word();
            if let Some(entry) = table.get(dead.slot) {
                let stale = entry.waiting.swap(0, Ordering::Relaxed);
                let stale = u32::try_from(stale).unwrap_or(u32::MAX);
                let _ = self.control.wait.0.waiters.fetch_update(
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                    |n| Some(n.saturating_sub(stale)),
                );
            }
            let freed = self.table().reclaim(word);
            self.count_freed(freed as u64);
            returned += freed;
            liveness::finish_reclaim(table, dead);
        }
        if returned > 0 {
            self.wake(u32::try_from(returned).unwrap_or(u32::MAX));
        }
        returned
    }
}
