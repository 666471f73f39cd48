//! `FramePool`: a fixed set of frames in one block of memory (the reference's KS
//! allocator: InitializeAllocator / Allocate / Free / DeleteAllocator).
//!
//! The pieces and how they hold together:
//!
//! * `PoolShared` lives in a `Box` that every `FramePool` handle points to. It owns the
//!   frames' memory, one `FrameSlot` per frame (whose first field is the frame's buffer
//!   `Header`, so a released buffer leads straight back to its slot and pool), the
//!   free list and the wait queue.
//! * **Allocate** pops a frame index from the free list and builds the `BufferMut` from
//!   the slot's header: no heap allocation, one CAS.
//! * **Release** (the header's release function, run when the last view of a frame
//!   drops, on any thread) pushes the index back, or hands it straight to the oldest
//!   waiter when the free list says someone waits (see `free_list.rs`, `wait_queue.rs`).
//!   A releaser touches the pool only *before* its frame is back in the list (or handed
//!   over): the frame it still holds keeps the pool alive, and once the frame is home
//!   it does nothing more.
//! * **Lifetime.** `handles` counts `FramePool` handles. When the last one drops, the
//!   free list is marked orphaned in one atomic step that also says how many frames
//!   were home; `remaining` then counts the frames still out, each of whose releases
//!   (finding the list orphaned) decrements it. The one that reaches zero, dropper or
//!   releaser, frees the pool. `remaining` may dip below zero when releases beat the
//!   dropper's addition; it reaches zero exactly once.
#![allow(unsafe_code)] // listed in ARCHITECTURE.md, "Where `unsafe` lives"

use std::future::Future;
use std::pin::Pin;
use std::ptr::NonNull;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::framing::{FrameLayout, FrameMemory, Framing};
use super::free_list::{FreeList, Push, NIL};
use super::poison;
use super::thread_cache::{Parking, Registry, Taken};
use super::wait_queue::{Standing, WaitQueue, Wake};
use crate::alloc::BufferAllocator;
use crate::buffer::header::{Header, MemoryOrigin};
use crate::buffer::BufferMut;
use crate::error::{Error, Result};
use crate::memory::{page_size, Region};
use crate::sync::{
    current_thread, fence, park, park_timeout, AtomicBool, AtomicIsize, AtomicU64, AtomicUsize,
    Mutex, Ordering,
};

/// A snapshot of a pool's state and history.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStats {
    /// Frames in the pool.
    pub frames: usize,
    /// Bytes of data per frame.
    pub frame_size: usize,
    /// Frames free now.
    pub free: usize,
    /// Frames out now (`frames - free`).
    pub in_use: usize,
    /// The most frames that were out at once.
    pub high_water: usize,
    /// Frames handed out so far.
    pub allocations: u64,
    /// Times an allocation found no frame free.
    pub exhausted: u64,
    /// Allocations that had to wait for a frame.
    pub waits: u64,
    /// Threads and tasks waiting now.
    pub waiting: usize,
    /// Whether the pool was closed.
    pub closed: bool,
}

/// One frame's bookkeeping. `header` must stay the first field: the buffer's release
/// function casts the header pointer back to the slot. Two cache lines each, so that
/// two threads working on neighbouring frames do not share a line (measured: two
/// threads round-tripping 64 KiB frames went from 12.7 to about 4 ns per operation).
#[repr(C, align(128))]
struct FrameSlot {
    header: Header,
    pool: *const PoolShared,
    index: u32,
    /// Handed out at least once (so `zero_on_reuse` has something to clear); written
    /// once. Allocations are counted per thread, not here, so that this line stays
    /// read-mostly and a frame dropped on another thread does not drag it across.
    used: AtomicBool,
}

enum PoolMemory {
    /// A mapping; frames start `offset` bytes in, where the alignment asks for more
    /// than the page size gives.
    Region { region: Region, offset: usize },
    Heap {
        base: NonNull<u8>,
        layout: std::alloc::Layout,
    },
}

impl PoolMemory {
    fn new(layout: &FrameLayout, source: FrameMemory) -> Result<PoolMemory> {
        match source {
            FrameMemory::Pages(options) => {
                // Pages are page-aligned; for a larger alignment, map the slack to slide.
                let slack = layout.alignment.saturating_sub(page_size());
                let len = layout.total.checked_add(slack).ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "{} bytes of frames plus {slack} bytes of alignment slack overflow",
                        layout.total
                    ))
                })?;
                let region = Region::map(len, options)?;
                let address = region.as_ptr() as usize;
                let offset = address.next_multiple_of(layout.alignment) - address;
                Ok(PoolMemory::Region { region, offset })
            }
            FrameMemory::Heap => {
                let heap = std::alloc::Layout::from_size_align(layout.total, layout.alignment)
                    .map_err(|_| {
                        Error::InvalidArgument(format!(
                            "{} bytes aligned to {} cannot be allocated from the heap; use \
                             FrameMemory::Pages",
                            layout.total, layout.alignment
                        ))
                    })?;
                // SAFETY: `total` is non-zero (frames >= 1, frame_size >= 1).
                let block = unsafe { std::alloc::alloc_zeroed(heap) };
                let base = NonNull::new(block).ok_or_else(|| {
                    Error::OutOfMemory(format!(
                        "the global allocator could not provide {} bytes for the pool's \
                         frames; use fewer or smaller frames",
                        layout.total
                    ))
                })?;
                Ok(PoolMemory::Heap { base, layout: heap })
            }
        }
    }

    /// The first frame's block; aligned to the framing's alignment.
    fn base(&self) -> NonNull<u8> {
        match self {
            // SAFETY: `offset` < alignment <= the slack mapped beyond the frames.
            PoolMemory::Region { region, offset } => unsafe { region.non_null().add(*offset) },
            PoolMemory::Heap { base, .. } => *base,
        }
    }

    fn origin_note(&self) -> Option<&str> {
        match self {
            PoolMemory::Region { region, .. } => region.fallback_note(),
            PoolMemory::Heap { .. } => None,
        }
    }
}

impl PoolMemory {
    /// The whole block: start and length.
    fn extent(&self) -> (*mut u8, usize) {
        match self {
            PoolMemory::Region { region, .. } => (region.as_ptr().cast_mut(), region.len()),
            PoolMemory::Heap { base, layout } => (base.as_ptr(), layout.size()),
        }
    }
}

impl Drop for PoolMemory {
    fn drop(&mut self) {
        // ASan's shadow outlives the mapping: frames left poisoned would make the next
        // mapping at these addresses (any allocator's) look poisoned.
        let (start, len) = self.extent();
        // SAFETY: the pool is being freed: no frame is out, so these bytes are ours.
        unsafe { poison::unpoison(start, len) };
        if let PoolMemory::Heap { base, layout } = self {
            // SAFETY: allocated in `new` with exactly this layout; the pool is being
            // freed, so no frame is out and nothing refers to the block.
            unsafe { std::alloc::dealloc(base.as_ptr(), *layout) };
        }
    }
}

struct PoolShared {
    free: FreeList,
    threads: Registry,
    slots: Box<[FrameSlot]>,
    framing: Framing,
    layout: FrameLayout,
    handles: AtomicUsize,
    remaining: AtomicIsize,
    closed: AtomicBool,
    queue: Mutex<WaitQueue>,
    high_water: AtomicUsize,
    /// Allocations not counted in a thread's slot (hand-offs, reclaims, threads
    /// without a slot).
    other_allocations: AtomicU64,
    exhausted: AtomicU64,
    waits: AtomicU64,
    // Last, so it is unmapped after everything that points into it is gone.
    memory: PoolMemory,
}

/// A pool of equal, aligned frames allocated up front in one block of memory, handed
/// out as [`BufferMut`]s that come back when dropped: bounded memory with
/// back-pressure for media and storage pipelines.
///
/// * [`try_allocate`](Self::try_allocate) never waits: `None` only when every frame is
///   out (PFNKSDEFAULTALLOCATE returning NULL).
/// * [`allocate`](Self::allocate), [`allocate_timeout`](Self::allocate_timeout) and
///   [`allocate_async`](Self::allocate_async) wait for a frame to come back, first come
///   first served.
/// * [`close`](Self::close) (Decommit) wakes every waiter with [`Error::Closed`] and
///   refuses later allocations; frames already out stay valid.
/// * The memory is freed when the last handle *and* the last frame are gone.
///
/// Handles are cheap to clone and share one pool. A frame's buffer is `Send`: it may
/// be dropped on any thread, and goes home from there.
///
/// ```
/// use pagebuf::pool::{FramePool, Framing};
///
/// let pool = FramePool::new(Framing::new(64 * 1024, 4))?;
/// let mut frame = pool.try_allocate().expect("4 frames free");
/// assert_eq!(frame.max_len(), 64 * 1024);
/// assert_eq!(frame.as_ptr() as usize % pagebuf::page_size(), 0);
/// frame.extend_from_slice(b"captured")?;
///
/// let shared = frame.freeze();             // hand it on; it comes home when dropped
/// assert_eq!(pool.stats().in_use, 1);
/// drop(shared);
/// assert_eq!(pool.stats().free, 4);
/// # Ok::<(), pagebuf::Error>(())
/// ```
pub struct FramePool {
    shared: NonNull<PoolShared>,
}

// SAFETY: the shared state is atomics, a mutex and memory handed out only through
// unique `BufferMut`s; nothing in it is tied to a thread.
unsafe impl Send for FramePool {}
// SAFETY: every `&self` method goes through atomics or the mutex.
unsafe impl Sync for FramePool {}

impl FramePool {
    /// Allocates every frame up front, in one block (InitializeAllocator).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a framing that cannot work (zero frames or size,
    /// an alignment that is not a power of two, a prefix larger than the frame, sizes
    /// that overflow); [`Error::OutOfMemory`] when the block cannot be had.
    pub fn new(framing: Framing) -> Result<FramePool> {
        let layout = framing.layout()?;
        let memory = PoolMemory::new(&layout, framing.memory_source())?;
        let base = memory.base();
        let frames = framing.frames();
        let slots = (0..frames)
            .map(|i| {
                // In bounds: i * stride + headroom + frame_size <= total (checked in layout).
                // SAFETY: the offset stays inside the block just allocated.
                let data = unsafe { base.add(i * layout.stride + layout.headroom) };
                FrameSlot {
                    header: Header::new(
                        release_frame,
                        data,
                        framing.frame_size(),
                        layout.alignment,
                        MemoryOrigin::Pool,
                        true,
                    ),
                    pool: std::ptr::null(),
                    index: i as u32,
                    used: AtomicBool::new(false),
                }
            })
            .collect();
        let shared = Box::into_raw(Box::new(PoolShared {
            free: FreeList::full(frames),
            threads: Registry::new(),
            slots,
            framing,
            layout,
            handles: AtomicUsize::new(1),
            remaining: AtomicIsize::new(0),
            closed: AtomicBool::new(false),
            queue: Mutex::new(WaitQueue::default()),
            high_water: AtomicUsize::new(0),
            other_allocations: AtomicU64::new(0),
            exhausted: AtomicU64::new(0),
            waits: AtomicU64::new(0),
            memory,
        }));
        // SAFETY: `shared` is a fresh allocation no other thread has seen; setting each
        // slot's back-pointer before any frame is handed out.
        unsafe {
            for slot in (*shared).slots.iter_mut() {
                slot.pool = shared;
            }
        }
        Ok(FramePool {
            // SAFETY: Box::into_raw never returns null.
            shared: unsafe { NonNull::new_unchecked(shared) },
        })
    }

    #[inline]
    fn shared(&self) -> &PoolShared {
        // SAFETY: this handle is counted in `handles`, so the pool is alive.
        unsafe { self.shared.as_ref() }
    }

    /// A free frame, or `None` when every frame is out (or the pool is closed). Never
    /// waits.
    #[inline]
    pub fn try_allocate(&self) -> Option<BufferMut> {
        let shared = self.shared();
        if shared.closed.load(Ordering::Acquire) {
            return None;
        }
        if let Some(buf) = self.take_frame() {
            return Some(buf);
        }
        self.try_reclaim()
    }

    /// `try_allocate` once the free list is empty: frames parked on other threads still
    /// count as free.
    #[cold]
    #[inline(never)]
    fn try_reclaim(&self) -> Option<BufferMut> {
        let shared = self.shared();
        let mut reclaimed = shared.threads.reclaim(false).into_iter();
        match reclaimed.next() {
            Some(index) => {
                for other in reclaimed {
                    // SAFETY: reclaimed frames are ours to give back; the pool stays alive
                    // through `self`.
                    unsafe { shared.give_back(other, Home::List) };
                }
                shared.other_allocations.fetch_add(1, Ordering::Relaxed);
                Some(shared.hand_out(index, None))
            }
            None => {
                shared.exhausted.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// The fast ways to a frame: the one parked on this thread, or the free list (and
    /// then this thread gets a slot to park its drops in).
    #[inline]
    fn take_frame(&self) -> Option<BufferMut> {
        let shared = self.shared();
        let has_slot = match shared.threads.take_parked() {
            Taken::Frame(index) => return Some(shared.hand_out(index, None)),
            Taken::Empty => true,
            Taken::NoSlot => false,
        };
        self.take_from_lists(has_slot)
    }

    /// A frame from the free list (or the returned list); this thread gets a slot to
    /// park its drops in if it has none. Out of line: the parked frame is the path
    /// that must stay short.
    #[inline(never)]
    fn take_from_lists(&self, has_slot: bool) -> Option<BufferMut> {
        let shared = self.shared();
        let (index, left) = match shared.free.pop() {
            Some(popped) => popped,
            None => shared.adopt()?,
        };
        if !has_slot {
            shared
                .threads
                .ensure_slot(self.shared.as_ptr() as *const (), give_back_erased);
        }
        if !shared.threads.count_allocation() {
            shared.other_allocations.fetch_add(1, Ordering::Relaxed);
        }
        Some(shared.hand_out(index, Some(left)))
    }

    /// A frame, waiting as long as it takes for one to come back.
    ///
    /// # Errors
    /// [`Error::Closed`] if the pool is or gets closed before a frame is free.
    pub fn allocate(&self) -> Result<BufferMut> {
        self.allocate_until(None)
    }

    /// A frame, waiting at most `timeout` for one to come back.
    ///
    /// # Errors
    /// [`Error::Timeout`] when the time runs out; [`Error::Closed`] as for `allocate`.
    pub fn allocate_timeout(&self, timeout: Duration) -> Result<BufferMut> {
        // A timeout too large to add to now is as good as none.
        self.allocate_until(Instant::now().checked_add(timeout))
            .map_err(|err| match err {
                Error::Timeout { what, .. } => Error::Timeout {
                    what,
                    waited: timeout,
                },
                other => other,
            })
    }

    /// A future that resolves to a frame once one is free (or to [`Error::Closed`]).
    /// It works with any executor. Dropping it before it resolves gives up its place in
    /// line without losing a frame: one already handed to it goes to the next waiter.
    pub fn allocate_async(&self) -> AllocateFuture {
        AllocateFuture {
            pool: self.clone(),
            waiter: None,
        }
    }

    /// Closes the pool (Decommit): every waiter wakes with [`Error::Closed`], later
    /// allocations fail, frames already out stay valid and still come home.
    pub fn close(&self) {
        let shared = self.shared();
        shared.closed.store(true, Ordering::SeqCst);
        let wakes = {
            let mut queue = shared.lock_queue();
            let wakes = queue.close();
            shared.free.clear_waiting();
            wakes
        };
        wakes.into_iter().for_each(Wake::wake);
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.shared().closed.load(Ordering::Acquire)
    }

    /// The framing the pool was built with.
    pub fn framing(&self) -> &Framing {
        &self.shared().framing
    }

    /// Bytes of headroom before each frame's data: at least the framing's `prefix`,
    /// rounded up so that the data stays aligned.
    pub fn headroom(&self) -> usize {
        self.shared().layout.headroom
    }

    /// Why the pool's memory is not exactly what the framing asked for (huge pages
    /// that fell back), if it is not.
    pub fn memory_note(&self) -> Option<&str> {
        self.shared().memory.origin_note()
    }

    /// The pool's one block of memory: start address and length (what a ring
    /// registers as fixed buffers).
    pub(crate) fn memory_extent(&self) -> (usize, usize) {
        let (start, len) = self.shared().memory.extent();
        (start as usize, len)
    }

    /// Whether `other` is a handle of this same pool.
    pub(crate) fn same_pool(&self, other: &FramePool) -> bool {
        self.shared == other.shared
    }

    /// Counts and state, as of now.
    pub fn stats(&self) -> PoolStats {
        let shared = self.shared();
        let frames = shared.slots.len();
        let free = (shared.free.len() + shared.threads.parked()).min(frames);
        let waiting = shared.lock_queue().len();
        PoolStats {
            frames,
            frame_size: shared.framing.frame_size(),
            free,
            in_use: frames - free,
            high_water: shared.high_water.load(Ordering::Relaxed),
            allocations: shared.threads.allocations()
                + shared.other_allocations.load(Ordering::Relaxed),
            exhausted: shared.exhausted.load(Ordering::Relaxed),
            waits: shared.waits.load(Ordering::Relaxed),
            waiting,
            closed: shared.closed.load(Ordering::Acquire),
        }
    }

    fn allocate_until(&self, deadline: Option<Instant>) -> Result<BufferMut> {
        let shared = self.shared();
        if shared.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        if let Some(buf) = self.take_frame() {
            return Ok(buf);
        }
        let id = match shared.enqueue(Wake::Thread(current_thread()))? {
            Enqueued::Got(buf) => return Ok(buf),
            Enqueued::Waiting(id) => id,
        };
        loop {
            // Check before sleeping: `enqueue` may already have handed this waiter a
            // reclaimed frame (and its wake-up went to this very thread).
            if let Some(outcome) = shared.check(id) {
                return outcome;
            }
            match deadline {
                None => park(),
                Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => park_timeout(left),
                    _ => {
                        return shared.leave(id).map_or_else(
                            || {
                                Err(Error::Timeout {
                                    what: format!(
                                        "a free frame of {} bytes",
                                        shared.framing.frame_size()
                                    ),
                                    waited: Duration::ZERO,
                                })
                            },
                            Ok,
                        )
                    }
                },
            }
        }
    }
}

/// Which list a released frame goes to.
#[derive(Clone, Copy)]
enum Home {
    /// The free list: the releaser allocates from this pool too.
    List,
    /// The returned list: the releaser never allocates here.
    Returned,
}

/// What `enqueue` did.
enum Enqueued {
    Got(BufferMut),
    Waiting(u64),
}

impl PoolShared {
    fn lock_queue(&self) -> crate::sync::MutexGuard<'_, WaitQueue> {
        // The queue's invariants hold between statements, so a panic elsewhere while
        // the lock was held (poisoning) leaves nothing half-done: keep going.
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Turns frame `index`, just taken, into a buffer. `left` is how many frames the
    /// free list proper still holds, when the frame came from there (the returned list
    /// is added here): frames parked on threads count as out for the high-water mark,
    /// so it is exact for one thread and an upper bound with several. A frame taken back from this thread's own slot cannot raise
    /// the mark (it was counted when it first left the list).
    #[inline]
    fn hand_out(&self, index: u32, left: Option<usize>) -> BufferMut {
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
        debug_assert!((index as usize) < self.slots.len());
        // SAFETY: every index handed out comes from this pool's free list or thread
        // slots, which hold only indices below `frames` (`FreeList::full`).
        let slot = unsafe { self.slots.get_unchecked(index as usize) };
        let data = slot.header.base().as_ptr();
        let len = slot.header.capacity();
        // SAFETY: the frame is ours alone until its buffer drops.
        unsafe { poison::unpoison(data, len) };
        if self.framing.is_zero_on_reuse() {
            if slot.used.load(Ordering::Relaxed) {
                // SAFETY: as above; the frame's bytes are ours to clear.
                unsafe { data.write_bytes(0, len) };
            } else {
                slot.used.store(true, Ordering::Relaxed);
            }
        }
        // SAFETY: the slot's header describes this frame's initialized memory and has
        // refs == 1 (set at creation and on every release); the frame is unique to us.
        unsafe { BufferMut::from_header(NonNull::from(&slot.header)) }
    }

    /// Takes a frame if one is free, or joins the queue (setting the free list's
    /// WAITING bit so that the next release hands its frame over).
    ///
    /// Callers try `take_frame` first (the lock-free common case); this is the slow path.
    fn enqueue(&self, wake: Wake) -> Result<Enqueued> {
        let mut queue = loop {
            if self.closed.load(Ordering::Acquire) {
                return Err(Error::Closed);
            }
            // Outside the lock: handing leftovers to waiters takes it.
            if let Some((index, left)) = self.adopt() {
                self.other_allocations.fetch_add(1, Ordering::Relaxed);
                return Ok(Enqueued::Got(self.hand_out(index, Some(left))));
            }
            let queue = self.lock_queue();
            if self.closed.load(Ordering::Acquire) {
                return Err(Error::Closed);
            }
            if let Some((index, left)) = self.free.pop() {
                drop(queue);
                self.other_allocations.fetch_add(1, Ordering::Relaxed);
                return Ok(Enqueued::Got(self.hand_out(index, Some(left))));
            }
            if self.free.set_waiting() {
                break queue;
            }
            // A frame came back to one of the lists meanwhile: take it.
        };
        self.exhausted.fetch_add(1, Ordering::Relaxed);
        self.waits.fetch_add(1, Ordering::Relaxed);
        let id = queue.register(wake);
        drop(queue);
        // WAITING is set: from here no owner parks a frame, and the ones parked before
        // come back now, each handed to the oldest waiter (perhaps this one).
        for index in self.threads.reclaim(false) {
            // SAFETY: reclaimed frames are ours to give back; the caller's handle keeps
            // the pool alive.
            unsafe { self.give_back(index, Home::List) };
        }
        Ok(Enqueued::Waiting(id))
    }

    /// Where waiter `id` stands: `None` to keep waiting, or its outcome (leaving the
    /// queue).
    fn check(&self, id: u64) -> Option<Result<BufferMut>> {
        let mut queue = self.lock_queue();
        match queue.standing(id) {
            Standing::Waiting => None,
            Standing::Handed(index) => {
                queue.remove(id);
                drop(queue);
                self.other_allocations.fetch_add(1, Ordering::Relaxed);
                Some(Ok(self.hand_out(index, Some(self.free.head_len()))))
            }
            Standing::Closed => {
                queue.remove(id);
                Some(Err(Error::Closed))
            }
        }
    }

    /// Waiter `id` gives up. A frame it was handed meanwhile is its to keep.
    fn leave(&self, id: u64) -> Option<BufferMut> {
        let mut queue = self.lock_queue();
        let handed = queue.remove(id);
        if !queue.needs_frames() {
            self.free.clear_waiting();
        }
        drop(queue);
        handed.map(|index| {
            self.other_allocations.fetch_add(1, Ordering::Relaxed);
            self.hand_out(index, Some(self.free.head_len()))
        })
    }

    /// Takes the returned list (frames released by threads that do not allocate): its
    /// top frame for the caller, the rest onto the free list, or, if waiters appeared
    /// meanwhile, to them. Returns the frame and how many frames are free besides.
    fn adopt(&self) -> Option<(u32, usize)> {
        let top = self.free.take_returned()?;
        let rest = self.free.next_of(top);
        if rest != NIL && !self.free.splice(rest) {
            let mut i = rest;
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
    unsafe fn give_back(&self, index: u32, home: Home) {
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
                    // The frame we hold keeps the pool alive while we hand it over.
                    let wake = {
                        let mut queue = self.lock_queue();
                        let wake = queue.hand_off(index);
                        if !queue.needs_frames() {
                            self.free.clear_waiting();
                        }
                        wake
                    };
                    match wake {
                        Some(wake) => return wake.wake(),
                        // Nobody needed it after all: WAITING is clear now; push again.
                        None => continue,
                    }
                }
            }
        }
    }

    /// One of the frames that were out when the last handle dropped is back.
    ///
    /// # Safety
    /// Called once per such frame; `self` is not used by the caller afterwards.
    unsafe fn frame_came_home_to_orphan(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            // SAFETY: `remaining` reached zero: no handle, no frame out, no one else
            // will touch the pool.
            unsafe { free_pool(NonNull::from(self)) };
        }
    }
}

/// Frees a pool.
///
/// # Safety
/// `pool` came from `Box::into_raw` in `FramePool::new`, and nothing refers to it.
unsafe fn free_pool(pool: NonNull<PoolShared>) {
    fence(Ordering::Acquire);
    // SAFETY: per the contract.
    drop(unsafe { Box::from_raw(pool.as_ptr()) });
}

/// The release function of every frame's header.
///
/// # Safety
/// `header` is the first field of a `FrameSlot` of a live pool, released once.
unsafe fn release_frame(header: NonNull<Header>) {
    // SAFETY: the header is the first field of a `#[repr(C)]` FrameSlot.
    let slot = unsafe { header.cast::<FrameSlot>().as_ref() };
    // SAFETY: the frame is still out, which keeps its pool alive (see `give_back`).
    let pool = unsafe { &*slot.pool };
    // A frame that was only ever a BufferMut still has refs == 1: leave the line clean.
    if slot.header.ref_count() != 1 {
        slot.header.reset_for_reuse();
    }
    // SAFETY: the last view is gone; the frame's bytes are the pool's alone.
    unsafe { poison::poison(slot.header.base().as_ptr(), slot.header.capacity()) };
    // The fast path: park it on this thread (a thread that allocates from this pool),
    // unless a waiter needs it. A thread that never allocates here returns it to the
    // returned list, off the allocators' cache line.
    match pool.threads.park(slot.index, || pool.free.is_waiting()) {
        Parking::Parked => {}
        // SAFETY: forwarded: the frame is released once, here.
        parking => unsafe { release_frame_slow(slot, pool, parking) },
    }
}

/// The rest of [`release_frame`] when the frame was not parked on the spot (`parking`
/// says why): its thread's slot looked up, else the frame given back. Out of line, so
/// the fast path saves no registers.
///
/// # Safety
/// `slot` is a frame of `pool` released once, and neither is used by the caller after.
#[cold]
#[inline(never)]
unsafe fn release_frame_slow(slot: &FrameSlot, pool: &PoolShared, mut parking: Parking) {
    if let Parking::LookUp = parking {
        parking = pool
            .threads
            .park_looked_up(slot.index, || pool.free.is_waiting());
    }
    let home = match parking {
        Parking::Parked => return,
        Parking::Declined => Home::List,
        Parking::NoSlot | Parking::LookUp => Home::Returned,
    };
    // SAFETY: the frame is given up here and `pool` is not used after.
    unsafe { pool.give_back(slot.index, home) }
}

/// `give_back` for a thread's exit, which knows the pool only as an erased pointer.
///
/// # Safety
/// `pool` is a live `PoolShared` and `frame` a frame of it the caller gives up.
unsafe fn give_back_erased(pool: *const (), frame: u32) {
    // SAFETY: per the contract.
    unsafe { (*pool.cast::<PoolShared>()).give_back(frame, Home::List) };
}

impl Clone for FramePool {
    fn clone(&self) -> FramePool {
        // Relaxed, as for Arc: a new handle is made from an existing one.
        self.shared().handles.fetch_add(1, Ordering::Relaxed);
        FramePool {
            shared: self.shared,
        }
    }
}

impl Drop for FramePool {
    fn drop(&mut self) {
        let shared = self.shared();
        if shared.handles.fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        fence(Ordering::Acquire);
        // The last handle: nothing can allocate any more. Bring parked frames home (and
        // keep owners off their slots for good), then count the frames still out.
        for index in shared.threads.reclaim(true) {
            // SAFETY: reclaimed frames are ours to give back; the pool is alive.
            unsafe { shared.give_back(index, Home::List) };
        }
        let home = shared.free.orphan();
        let out = (shared.slots.len() - home) as isize;
        if shared.remaining.fetch_add(out, Ordering::AcqRel) + out == 0 {
            // SAFETY: every frame is home and this was the last handle.
            unsafe { free_pool(self.shared) };
        }
    }
}

impl std::fmt::Debug for FramePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FramePool")
            .field("framing", self.framing())
            .field("stats", &self.stats())
            .finish()
    }
}

/// `FramePool` is a [`BufferAllocator`] for sizes up to its `frame_size`: each
/// allocation takes one frame (waiting for one like [`FramePool::allocate`]), trimmed to
/// `max_len() == max_size`.
impl BufferAllocator for FramePool {
    fn allocate(&self, max_size: usize) -> Result<BufferMut> {
        let frame_size = self.shared().framing.frame_size();
        if max_size == 0 {
            return Err(Error::zero_size("max_size"));
        }
        if max_size > frame_size {
            return Err(Error::InvalidArgument(format!(
                "max_size {max_size} is larger than this pool's frames ({frame_size} bytes); \
                 build a pool with larger frames or use another allocator"
            )));
        }
        let mut buf = FramePool::allocate(self)?;
        buf.limit_max_len(max_size);
        Ok(buf)
    }

    fn allocate_page_aligned(&self, max_size: usize) -> Result<BufferMut> {
        let alignment = self.shared().layout.alignment;
        if alignment < page_size() {
            return Err(Error::InvalidArgument(format!(
                "this pool's frames are aligned to {alignment} bytes, not to the page size {}; \
                 build it with Framing::alignment({})",
                page_size(),
                page_size()
            )));
        }
        BufferAllocator::allocate(self, max_size)
    }
}

/// The future of [`FramePool::allocate_async`].
#[must_use = "futures do nothing unless polled"]
pub struct AllocateFuture {
    pool: FramePool,
    waiter: Option<u64>,
}

impl Future for AllocateFuture {
    type Output = Result<BufferMut>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let shared = this.pool.shared();
        match this.waiter {
            None => {
                if shared.closed.load(Ordering::Acquire) {
                    return Poll::Ready(Err(Error::Closed));
                }
                if let Some(buf) = this.pool.take_frame() {
                    return Poll::Ready(Ok(buf));
                }
                match shared.enqueue(Wake::Task(cx.waker().clone())) {
                    Ok(Enqueued::Got(buf)) => Poll::Ready(Ok(buf)),
                    Ok(Enqueued::Waiting(id)) => {
                        this.waiter = Some(id);
                        Poll::Pending
                    }
                    Err(err) => Poll::Ready(Err(err)),
                }
            }
            Some(id) => match shared.check(id) {
                Some(outcome) => {
                    this.waiter = None;
                    Poll::Ready(outcome)
                }
                None => {
                    shared.lock_queue().update_waker(id, cx.waker());
                    // A hand-off may have landed between `check` and the update.
                    match shared.check(id) {
                        Some(outcome) => {
                            this.waiter = None;
                            Poll::Ready(outcome)
                        }
                        None => Poll::Pending,
                    }
                }
            },
        }
    }
}

impl Drop for AllocateFuture {
    fn drop(&mut self) {
        if let Some(id) = self.waiter.take() {
            // A frame handed to us becomes a buffer and is dropped at once, which sends
            // it on to the next waiter or home: no frame and no wake-up is lost.
            drop(self.pool.shared().leave(id));
        }
    }
}
