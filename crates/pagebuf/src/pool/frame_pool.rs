//! `FramePool`: the public handle of a fixed set of frames in one block of memory (the
//! reference's KS allocator: InitializeAllocator / Allocate / Free / DeleteAllocator).
//!
//! The mechanism lives beside it: `core.rs` (the bookkeeping, handing out, coming home),
//! `waiting.rs` (the slow path), `lifetime.rs` (when the memory is freed),
//! `allocate_future.rs`, `frame_block.rs` (the memory), `stats.rs`.
#![allow(unsafe_code)] // listed in ARCHITECTURE.md, "Where `unsafe` lives"

use std::os::fd::BorrowedFd;
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;

use super::allocate_future::AllocateFuture;
use super::core::{buffer_at, give_back_erased, index_of, release_frame, FrameSlot, PoolShared};
use super::frame_block::FrameBlock;
use super::framing::Framing;
use super::free_list::FreeList;
use super::stats::PoolStats;
use super::thread_cache::{Frame, NotParked, Registry, ThreadSlot};
use super::wait_queue::{WaitQueue, Wake};
use crate::alloc::BufferAllocator;
use crate::buffer::header::{Header, MemoryOrigin};
use crate::buffer::BufferMut;
use crate::error::{Error, Result};
use crate::memory::page_size;
use crate::sync::{AtomicBool, AtomicIsize, AtomicPtr, AtomicU64, AtomicUsize, Mutex, Ordering};

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
    pub(super) shared: NonNull<PoolShared>,
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
        let memory = FrameBlock::new(&layout, framing.memory_source())?;
        let base = memory.base();
        let frames = framing.frames();
        let slots = (0..frames)
            .map(|i| {
                // In bounds: i * stride + headroom + frame_size <= total (checked in layout).
                // SAFETY: the offset stays inside the block just allocated.
                let data = unsafe { base.add(i * layout.stride + layout.headroom) };
                CachePadded::new(FrameSlot {
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
                    // Set to the pool's `no_home` below, once the pool has its address.
                    home: AtomicPtr::new(std::ptr::null_mut()),
                    used: AtomicBool::new(false),
                })
            })
            .collect();
        let free = Arc::new(FreeList::full(frames));
        let shared = Box::into_raw(Box::new(PoolShared {
            // A frame parked on a thread skips `claim`: so no parking where frames are
            // zeroed on reuse.
            threads: Registry::new(!framing.is_zero_on_reuse(), free.clone()),
            free,
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
        // slot's back-pointer and first home before any frame is handed out.
        unsafe {
            let no_home = (*shared).threads.no_home() as *const ThreadSlot as *mut ThreadSlot;
            for slot in (*shared).slots.iter_mut() {
                slot.pool = shared;
                slot.home = AtomicPtr::new(no_home);
            }
        }
        Ok(FramePool {
            // SAFETY: Box::into_raw never returns null.
            shared: unsafe { NonNull::new_unchecked(shared) },
        })
    }

    #[inline]
    pub(super) fn shared(&self) -> &PoolShared {
        // SAFETY: this handle is counted in `handles`, so the pool is alive.
        unsafe { self.shared.as_ref() }
    }

    /// A free frame, or `None` when every frame is out (or the pool is closed). Never
    /// waits.
    ///
    /// A frame dropped on a thread that allocates from the pool is parked there, and
    /// still counts as free: another thread that finds the lists empty takes it back.
    #[inline]
    pub fn try_allocate(&self) -> Option<BufferMut> {
        if let Some(buf) = self.take_frame() {
            return Some(buf);
        }
        self.try_reclaim()
    }

    /// `try_allocate` once the lists are empty: frames parked on other threads still
    /// count as free.
    #[cold]
    #[inline(never)]
    fn try_reclaim(&self) -> Option<BufferMut> {
        let shared = self.shared();
        if shared.closed.load(Ordering::Acquire) {
            return None;
        }
        let mut reclaimed = shared.threads.reclaim();
        let Some(frame) = reclaimed.pop() else {
            shared.exhausted.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        // SAFETY: reclaimed frames are ours to give back; the pool stays alive through
        // `self`.
        unsafe { shared.give_back_all(reclaimed) };
        shared.other_allocations.fetch_add(1, Ordering::Relaxed);
        Some(shared.hand_out(index_of(frame), None))
    }

    /// The fast ways to a frame: the one parked on this thread, or the free list (and
    /// then this thread gets a slot to park its drops in). `None` if both are empty or
    /// the pool is closed (a closed pool keeps its threads' slots empty).
    #[inline]
    pub(super) fn take_frame(&self) -> Option<BufferMut> {
        self.shared().threads.take_parked(
            // SAFETY: the frame was just taken, by us alone; `self` keeps the pool alive.
            |frame| Some(unsafe { buffer_at(frame) }),
            |not_parked| self.take_unparked(not_parked),
        )
    }

    /// [`take_frame`](Self::take_frame) when no frame was parked on this thread.
    #[inline(always)]
    fn take_unparked(&self, not_parked: NotParked<'_>) -> Option<BufferMut> {
        let frame = self.take_from_lists(not_parked)?;
        // SAFETY: as in `take_frame`.
        Some(unsafe { buffer_at(frame) })
    }

    /// A frame from the free list (or the returned list), claimed; this thread gets a
    /// slot to park its drops in if it has none (`not_parked` says whether it has one).
    /// If the lists are empty and this thread skipped its slot, the slot is looked at
    /// after all: a frame its own drops parked there is free. `None` if there is no
    /// frame there either, or the pool is closed. Inlined into its one caller: a
    /// producer's every take comes this way.
    #[inline(always)]
    fn take_from_lists(&self, not_parked: NotParked<'_>) -> Option<Frame> {
        let shared = self.shared();
        if shared.closed.load(Ordering::Acquire) {
            return None;
        }
        let (index, left) = match shared.free.pop() {
            Some(popped) => popped,
            None => match shared.adopt() {
                Some(adopted) => adopted,
                None => return not_parked.look_if_skipped(),
            },
        };
        let home = match not_parked {
            NotParked::Empty(own) | NotParked::Skipped(own) => own,
            NotParked::NoSlot => {
                shared
                    .threads
                    .ensure_slot(self.shared.as_ptr() as *const (), give_back_erased);
                shared.threads.home_for_caller()
            }
        };
        if !home.count_if_owned() {
            shared.other_allocations.fetch_add(1, Ordering::Relaxed);
        }
        Some(shared.claim(index, Some(left), home))
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
        // Frames parked on threads come home, and no thread parks one again: their fast
        // path, which does not look at `closed`, then finds none.
        // SAFETY: reclaimed frames are ours to give back; `self` keeps the pool alive.
        unsafe { shared.give_back_all(shared.threads.close()) };
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

    /// The sealed memfd the frames live in, for another process to map
    /// ([`FrameMemory::SharedMemory`](super::FrameMemory::SharedMemory)); `None` for
    /// every other memory source.
    pub fn memfd(&self) -> Option<BorrowedFd<'_>> {
        self.shared().memory.memfd().map(|(fd, _)| fd)
    }

    /// Where `bytes` (a frame of this pool, or part of one) start in the pool's memfd:
    /// the offset another process that mapped [`memfd`](Self::memfd) reads them at.
    /// `None` if the pool has no memfd or `bytes` do not lie in its frames.
    ///
    /// ```
    /// use pagebuf::pool::{FrameMemory, FramePool, Framing};
    /// use pagebuf::memory::RegionOptions;
    ///
    /// let framing = Framing::new(4096, 4).memory(FrameMemory::SharedMemory(RegionOptions::default()));
    /// let pool = FramePool::new(framing)?;
    /// let mut frame = pool.try_allocate().expect("a frame is free");
    /// frame.extend_from_slice(b"for the other process")?;
    /// let offset = pool.memfd_offset(&frame).expect("a frame of the pool");
    /// // Another process maps `pool.memfd()` and finds the bytes at `offset`:
    /// let mut seen = [0u8; 21];
    /// rustix::io::pread(pool.memfd().unwrap(), &mut seen, offset)?;
    /// assert_eq!(&seen, b"for the other process");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn memfd_offset(&self, bytes: &[u8]) -> Option<u64> {
        let shared = self.shared();
        let (_, start) = shared.memory.memfd()?;
        let (first, len) = shared.memory.extent();
        let at = bytes.as_ptr() as usize;
        let inside = at >= first as usize && at + bytes.len() <= first as usize + len;
        inside.then(|| (at - start as usize) as u64)
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
