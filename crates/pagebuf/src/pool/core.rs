//! The lock-free core of a frame pool: the frames' bookkeeping (`PoolShared`, one
//! `FrameSlot` per frame), how a frame is handed out, and how it comes home.
//!
//! * `PoolShared` lives in a `Box` that every `FramePool` handle points to. It owns the
//!   frames' memory (`FrameBlock`), one `FrameSlot` per frame (whose first field is the
//!   frame's buffer `Header`, so a released buffer leads straight back to its slot and
//!   pool), the free list and the wait queue.
//! * **Allocate** takes the frame parked on the calling thread (`thread_cache.rs`: one
//!   swap), or pops one off the free list, and builds the `BufferMut` from the slot's
//!   header: no heap allocation.
//! * **Release** (the header's release function, run when the last view of a frame
//!   drops, on any thread) parks the frame in its home slot if the releasing thread
//!   owns that slot (one swap), or pushes its index back, or hands it straight to the
//!   oldest waiter when the free list says someone waits (`free_list.rs`,
//!   `waiting.rs`). A releaser touches the pool only *before* its frame is back in the
//!   list, handed over or parked: the frame it still holds keeps the pool alive, and
//!   once the frame is home it touches nothing but its own slot, which outlives the
//!   pool for as long as its thread holds it (`lifetime.rs`, `thread_cache.rs`).
//! * The fast paths (a frame parked on the calling thread, taken or given back) are
//!   inlined; everything else is out of line (`#[cold]`), so they save no registers.
#![allow(unsafe_code)] // listed in ARCHITECTURE.md, "Where `unsafe` lives"

use std::ptr::NonNull;
use std::sync::Arc;

use crossbeam_utils::CachePadded;

use super::frame_block::FrameBlock;
use super::framing::{FrameLayout, Framing};
use super::free_list::{FreeList, Push, NIL};
use super::poison;
use super::thread_cache::{this_thread, Frame, Occupied, Park, Registry, ThreadSlot};
use super::wait_queue::WaitQueue;
use crate::buffer::header::Header;
use crate::buffer::BufferMut;
use crate::sync::{AtomicBool, AtomicIsize, AtomicPtr, AtomicU64, AtomicUsize, Mutex, Ordering};

/// One frame's bookkeeping. `header` must stay the first field: the buffer's release
/// function casts the header pointer back to the slot. Each is `CachePadded` in the
/// pool's table, so that two threads working on neighbouring frames do not share a line
/// (measured: two threads round-tripping 64 KiB frames went from 12.7 to about 4 ns per
/// operation).
#[repr(C)]
pub(super) struct FrameSlot {
    pub(super) header: Header,
    pub(super) pool: *const PoolShared,
    pub(super) index: u32,
    /// The slot of the thread that took the frame last, where its release parks it if
    /// it runs on that thread: written by the taker while the frame is its own, read by
    /// the releaser after the buffer reached it (which orders the two). The pool's
    /// `no_home` while no thread with a slot has taken the frame. Always one of the
    /// pool's slots, which live as long as the pool.
    pub(super) home: AtomicPtr<ThreadSlot>,
    /// Handed out at least once (so `zero_on_reuse` has something to clear); written
    /// once. Allocations are counted per thread, not here, so that this line stays
    /// read-mostly and a frame dropped on another thread does not drag it across.
    pub(super) used: AtomicBool,
}

pub(super) struct PoolShared {
    /// Shared with the thread slots, which read its WAITING bit after a park, when the
    /// pool may be gone.
    pub(super) free: Arc<FreeList>,
    pub(super) threads: Registry,
    pub(super) slots: Box<[CachePadded<FrameSlot>]>,
    pub(super) framing: Framing,
    pub(super) layout: FrameLayout,
    pub(super) handles: AtomicUsize,
    pub(super) remaining: AtomicIsize,
    pub(super) closed: AtomicBool,
    pub(super) queue: Mutex<WaitQueue>,
    pub(super) high_water: AtomicUsize,
    /// Allocations not counted in a thread's slot (hand-offs, reclaims, threads
    /// without a slot).
    pub(super) other_allocations: AtomicU64,
    pub(super) exhausted: AtomicU64,
    pub(super) waits: AtomicU64,
    // Last, so it is unmapped after everything that points into it is gone.
    pub(super) memory: FrameBlock,
}

/// Which list a released frame goes to.
#[derive(Clone, Copy)]
pub(super) enum Home {
    /// The free list: the releaser allocates from this pool too.
    List,
    /// The returned list: the releaser never allocates here.
    Returned,
}

impl PoolShared {
    /// Turns frame `index`, just taken, into a buffer: [`claim`](Self::claim), then
    /// [`buffer_at`].
    #[inline]
    pub(super) fn hand_out(&self, index: u32, left: Option<usize>) -> BufferMut {
        let frame = self.claim(index, left, self.threads.home_for_caller());
        // SAFETY: the frame was just taken, by the caller alone.
        unsafe { buffer_at(frame) }
    }

    /// Frame `index`'s slot.
    #[inline]
    fn frame_slot(&self, index: u32) -> &FrameSlot {
        debug_assert!((index as usize) < self.slots.len());
        // SAFETY: every index handed around comes from this pool's free list or thread
        // slots, which hold only indices below `frames` (`FreeList::full`).
        unsafe { self.slots.get_unchecked(index as usize) }
    }

    /// The bookkeeping of taking frame `index` off a list: the high-water mark and
    /// `zero_on_reuse`. A frame parked on a thread needs neither (it was counted when it
    /// first left the list, and pools that zero frames park none), so the fast path
    /// skips this. `left` is how many frames the free list proper still holds, when the
    /// frame came from there (the returned list is added here): frames parked on threads
    /// count as out for the high-water mark, so it is exact for one thread and an upper
    /// bound with several. Returns the frame, by its header.
    #[inline]
    pub(super) fn claim(&self, index: u32, left: Option<usize>, home: &ThreadSlot) -> Frame {
        let slot = self.frame_slot(index);
        // Written only when it changes: the frame's line stays read-mostly, so a frame a
        // producer takes again and again and a consumer drops does not bounce it.
        let home = home as *const ThreadSlot as *mut ThreadSlot;
        if slot.home.load(Ordering::Relaxed) != home {
            slot.home.store(home, Ordering::Relaxed);
        }
        if let Some(left) = left {
            let mark = self.high_water.load(Ordering::Relaxed);
            // Frames on the returned list are free too; its line is another thread's, so
            // read it only when the mark would otherwise move.
            if self.slots.len() - left > mark {
                let in_use =
                    self.slots.len() - (left + self.free.returned_len()).min(self.slots.len());
                if in_use > mark {
                    self.high_water.fetch_max(in_use, Ordering::Relaxed);
                }
            }
        }
        if self.framing.is_zero_on_reuse() {
            if slot.used.load(Ordering::Relaxed) {
                let data = slot.header.base().as_ptr();
                let len = slot.header.capacity();
                // SAFETY: the frame was just taken, so its bytes are ours alone to clear
                // (unpoisoned first: they were poisoned when it came back).
                unsafe {
                    poison::unpoison(data, len);
                    data.write_bytes(0, len);
                }
            } else {
                slot.used.store(true, Ordering::Relaxed);
            }
        }
        NonNull::from(&slot.header)
    }

    /// Frames (by header) back to indices, each given back: reclaimed from threads.
    ///
    /// # Safety
    /// As for [`give_back`](Self::give_back), for each frame.
    pub(super) unsafe fn give_back_all(&self, frames: Vec<Frame>) {
        for frame in frames {
            // SAFETY: forwarded.
            unsafe { self.give_back(index_of(frame), Home::List) };
        }
    }

    /// Takes the returned list (frames released by threads that do not allocate): its
    /// top frame for the caller, the rest onto the free list, or, if waiters appeared
    /// meanwhile, to them. Returns the frame and how many frames are free besides.
    pub(super) fn adopt(&self) -> Option<(u32, usize)> {
        let chain = self.free.take_returned()?;
        let top = chain.top;
        let rest = chain.rest(&self.free);
        if let Some(rest) = rest.filter(|&rest| !self.free.splice(rest)) {
            let mut i = rest.top;
            while i != NIL {
                let next = self.free.next_of(i);
                // SAFETY: the taken frames are ours alone; the caller's handle keeps the
                // pool alive.
                unsafe { self.give_back(i, Home::List) };
                i = next;
            }
        }
        Some((top, self.free.head_len()))
    }

    /// Gives a frame back: to the free list, or to the oldest waiter.
    ///
    /// # Safety
    /// `index` is a frame this caller holds exclusively and gives up; `self` may be
    /// freed by the time this returns, so the caller must not use it afterwards.
    pub(super) unsafe fn give_back(&self, index: u32, home: Home) {
        loop {
            let pushed = match home {
                Home::List => self.free.push(index),
                Home::Returned => self.free.push_returned(index),
            };
            match pushed {
                // The frame is home: the pool may be freed by its last handle from here
                // on, so touch nothing more.
                Push::Done => return,
                Push::Orphaned => {
                    // SAFETY: forwarded: this frame is the caller's, and no longer used.
                    unsafe { self.frame_came_home_to_orphan() };
                    return;
                }
                Push::Waiting => {
                    if self.hand_to_waiter(index) {
                        return;
                    }
                    // Nobody needed it after all: WAITING is clear now; push again.
                }
            }
        }
    }

    /// Hands frame `index` to the oldest waiter; false if none needs it any more (the
    /// WAITING bit is then clear). Out of line: `give_back`'s common case is a push.
    /// The frame the caller holds keeps the pool alive meanwhile.
    #[cold]
    #[inline(never)]
    fn hand_to_waiter(&self, index: u32) -> bool {
        let wake = {
            let mut queue = self.lock_queue();
            let wake = queue.hand_off(index);
            if !queue.needs_frames() {
                self.free.clear_waiting();
            }
            wake
        };
        match wake {
            Some(wake) => {
                wake.wake();
                true
            }
            None => false,
        }
    }
}

/// The buffer of a frame just taken (and claimed, if it came off a list), from its
/// header: what a parked frame is kept as.
///
/// # Safety
/// `frame` is the header of a frame of a live pool, taken by the caller alone.
#[inline]
pub(super) unsafe fn buffer_at(frame: Frame) -> BufferMut {
    // SAFETY: per the contract the header is alive.
    let header = unsafe { frame.as_ref() };
    // SAFETY: the frame is ours alone until its buffer drops.
    unsafe { poison::unpoison(header.base().as_ptr(), header.capacity()) };
    // SAFETY: the header describes this frame's initialized memory and has refs == 1
    // (set at creation, and a released header is left at 1); the frame is unique to us.
    unsafe { BufferMut::from_header(frame) }
}

/// A frame's index in its pool, from its header.
pub(super) fn index_of(frame: Frame) -> u32 {
    // SAFETY: every `Frame` a pool hands around is the header, the first field, of one
    // of its `#[repr(C)]` FrameSlots, which live as long as the pool.
    unsafe { frame.cast::<FrameSlot>().as_ref() }.index
}

/// The release function of every frame's header.
///
/// # Safety
/// `header` is the first field of a `FrameSlot` of a live pool, released once.
pub(super) unsafe fn release_frame(header: NonNull<Header>) {
    // SAFETY: the header is the first field of a `#[repr(C)]` FrameSlot.
    let slot = unsafe { header.cast::<FrameSlot>().as_ref() };
    // SAFETY: the last view is gone; the frame's bytes are the pool's alone.
    unsafe { poison::poison(slot.header.base().as_ptr(), slot.header.capacity()) };
    // The fast path: park it in its home, if this thread owns that slot. The owner is
    // on a line of its own, read-mostly, so a release on another thread reads it
    // without dragging across the line the owner's allocations write.
    // SAFETY: a frame's home is always one of its pool's slots (see `FrameSlot`),
    // and the frame, still out, keeps the pool alive.
    let home = unsafe { &*slot.home.load(Ordering::Relaxed) };
    if home.owner() == this_thread() {
        // SAFETY: forwarded; the caller owns `home`.
        return unsafe { park_in(home, header) };
    }
    // SAFETY: forwarded: the frame is released once, here.
    unsafe { release_frame_slow(header) }
}

/// Parks a released frame in `home`, unless a waiter needs it.
///
/// # Safety
/// As for [`release_frame`]; `home` is a slot of the frame's pool that the calling
/// thread owns (its owner thread's entry keeps it alive even once the pool is gone).
#[inline(always)]
unsafe fn park_in(home: &ThreadSlot, header: NonNull<Header>) {
    match home.try_park(header) {
        // Parked: from here on the frame may be reclaimed and the pool freed, so only
        // `home` is touched. The park, then the WAITING read: a waiter sets WAITING,
        // then reclaims.
        Ok(()) => {
            if home.waiting() {
                // SAFETY: forwarded.
                unsafe { settle_park(home, header, Park::Parked) }
            }
        }
        // SAFETY: forwarded.
        Err(occupied) => unsafe { park_over(home, header, occupied) },
    }
}

/// [`park_in`] when the slot was occupied: a frame displaced, or the pool closed.
///
/// # Safety
/// As for [`park_in`].
#[cold]
#[inline(never)]
unsafe fn park_over(home: &ThreadSlot, header: NonNull<Header>, occupied: Occupied) {
    // SAFETY: forwarded.
    unsafe { settle_park(home, header, home.park_over(header, occupied)) }
}

/// The rest of [`park_in`] when the park displaced a frame, found the pool closed, or
/// saw a waiter: each frame the caller holds then is given back, the
/// frame it released last of all (until then, whichever it still holds keeps the pool
/// alive). Out of line, so the fast path keeps nothing in registers for it.
///
/// # Safety
/// As for [`park_in`].
#[cold]
#[inline(never)]
unsafe fn settle_park(home: &ThreadSlot, header: NonNull<Header>, parked: Park) {
    let displaced = match parked {
        Park::KeptOff => {
            // SAFETY: the frame is still ours; given up here.
            return unsafe { give_back_frame(header) };
        }
        Park::Parked => None,
        Park::Displaced(displaced) => Some(displaced),
    };
    // Ours is parked (or reclaimed): if a waiter appeared, take it back to hand over.
    if home.waiting() && home.unpark(header) {
        // SAFETY: ours again, and given up here; a displaced frame, still out, keeps
        // the pool alive for the next line.
        unsafe { give_back_frame(header) };
    }
    if let Some(displaced) = displaced {
        // SAFETY: the displaced frame is ours (taken out of the slot by our swap).
        unsafe { give_back_frame(displaced) };
    }
}

/// Gives a frame the caller holds back to its pool's free list.
///
/// # Safety
/// `frame` is the header of a frame of a live pool, held by the caller alone and given
/// up; the pool may be freed by the time this returns.
unsafe fn give_back_frame(frame: Frame) {
    // SAFETY: the header is the first field of a `#[repr(C)]` FrameSlot.
    let slot = unsafe { frame.cast::<FrameSlot>().as_ref() };
    // SAFETY: the frame is the caller's; the pool is not used after.
    unsafe { (*slot.pool).give_back(slot.index, Home::List) }
}

/// The rest of [`release_frame`] when the frame's home is not the releasing thread's:
/// parked in the releasing thread's own slot if it has one, else given back to the
/// returned list (the thread never allocates from the pool). Out of line and given
/// only the header, so the fast path keeps nothing in registers for it.
///
/// # Safety
/// As for [`release_frame`].
#[cold]
#[inline(never)]
unsafe fn release_frame_slow(header: NonNull<Header>) {
    // SAFETY: as in `release_frame`.
    let slot = unsafe { header.cast::<FrameSlot>().as_ref() };
    // SAFETY: as in `release_frame`.
    let pool = unsafe { &*slot.pool };
    match pool.threads.own_slot() {
        // SAFETY: forwarded; the slot is the caller's own.
        Some(own) => unsafe { park_in(own, header) },
        // SAFETY: the frame is given up here and `pool` is not used after.
        None => unsafe { pool.give_back(slot.index, Home::Returned) },
    }
}

/// `give_back` for a thread's exit, which knows the pool only as an erased pointer.
///
/// # Safety
/// `pool` is a live `PoolShared` and `frame` a frame of it the caller gives up.
pub(super) unsafe fn give_back_erased(pool: *const (), frame: Frame) {
    // SAFETY: per the contract.
    unsafe { (*pool.cast::<PoolShared>()).give_back(index_of(frame), Home::List) };
}
