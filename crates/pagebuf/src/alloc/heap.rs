//! `HeapAllocator`: buffers from the global allocator, header and data in one block.
#![allow(unsafe_code)] // listed in ARCHITECTURE.md, "Where `unsafe` lives"

use std::alloc::{self, Layout};
use std::mem;
use std::ptr::NonNull;
use std::sync::Arc;

use super::{check_request, AllocatorStats, BufferAllocator, Counters};
use crate::buffer::header::{Header, MemoryOrigin};
use crate::buffer::BufferMut;
use crate::error::{Error, Result};
use crate::memory::{page_size, round_up};

/// Alignment of [`HeapAllocator::allocate`] unless configured: a cache line, which
/// also satisfies every SIMD load up to AVX-512.
pub const DEFAULT_HEAP_ALIGNMENT: usize = 64;

/// Buffers from the global allocator (`malloc`), zero-filled.
///
/// One allocation per buffer holds both the data and, after it, the control block, so
/// a heap buffer costs one `malloc` and one `free`. `allocate_page_aligned` uses a
/// page-aligned `Layout`. Failure is [`Error::OutOfMemory`], never an abort.
///
/// ```
/// use pagebuf::{BufferAllocator, HeapAllocator, MemoryOrigin};
///
/// let heap = HeapAllocator::default();
/// let buf = heap.allocate(1000)?;
/// assert_eq!((buf.len(), buf.max_len()), (0, 1000));
/// assert_eq!(buf.alignment(), 64);
/// assert_eq!(buf.origin(), MemoryOrigin::Heap);
/// assert_eq!(heap.stats().live_buffers, 1);
/// drop(buf);
/// assert_eq!(heap.stats().live_bytes, 0);
/// # Ok::<(), pagebuf::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct HeapAllocator {
    alignment: usize,
    max_size: usize,
    counters: Arc<Counters>,
}

impl Default for HeapAllocator {
    fn default() -> HeapAllocator {
        HeapAllocator {
            alignment: DEFAULT_HEAP_ALIGNMENT,
            max_size: isize::MAX as usize,
            counters: Arc::default(),
        }
    }
}

/// The heap block's tail: the header, then what release needs to free the block.
#[repr(C)]
struct HeapTail {
    header: Header,
    layout: Layout,
    counters: Arc<Counters>,
}

impl HeapAllocator {
    /// A heap allocator whose `allocate` aligns to `alignment` (a power of two, at most
    /// the page size).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for any other alignment.
    pub fn with_alignment(alignment: usize) -> Result<HeapAllocator> {
        if !alignment.is_power_of_two() || alignment > page_size() {
            return Err(Error::InvalidArgument(format!(
                "heap alignment {alignment} must be a power of two no larger than the page \
                 size {}; use allocate_page_aligned or a PageAllocator for more",
                page_size()
            )));
        }
        Ok(HeapAllocator {
            alignment,
            ..HeapAllocator::default()
        })
    }

    /// Refuse (with `InvalidArgument`) requests over `max_size` bytes.
    pub fn max_size(mut self, max_size: usize) -> Self {
        self.max_size = max_size;
        self
    }

    /// The allocation and release counts and the bytes out now.
    pub fn stats(&self) -> AllocatorStats {
        self.counters.snapshot()
    }

    fn allocate_aligned(&self, max_size: usize, alignment: usize) -> Result<BufferMut> {
        check_request(max_size, self.max_size)?;
        let tail_at = round_up(max_size, mem::align_of::<HeapTail>())
            .ok_or_else(|| Error::size_overflow("max_size", max_size, alignment))?;
        let layout = tail_at
            .checked_add(mem::size_of::<HeapTail>())
            .and_then(|total| {
                Layout::from_size_align(total, alignment.max(mem::align_of::<HeapTail>())).ok()
            })
            .ok_or_else(|| Error::size_overflow("max_size", max_size, alignment))?;
        // The block is the tail's to free from here (`release_heap`).
        let (base, layout) = HeapBlock::zeroed(layout, "a heap buffer")?.into_raw();
        let header = Header::new(
            release_heap,
            base,
            max_size,
            alignment,
            MemoryOrigin::Heap,
            true,
        );
        // SAFETY: `tail_at + size_of::<HeapTail>() <= layout.size()`, and `tail_at` is a
        // multiple of HeapTail's alignment from a base at least that aligned.
        let tail = unsafe { base.add(tail_at).cast::<HeapTail>() };
        // SAFETY: `tail` is in bounds, aligned, and not yet initialized as a HeapTail.
        unsafe {
            tail.write(HeapTail {
                header,
                layout,
                counters: Arc::clone(&self.counters),
            })
        };
        self.counters.on_allocate(max_size);
        // SAFETY: a fresh, writable header with one reference over `max_size` zeroed
        // bytes at an `alignment`-aligned base; the header is HeapTail's first field.
        Ok(unsafe { BufferMut::from_header(tail.cast()) })
    }
}

/// A zero-filled block of the global allocator, freed when dropped: the heap
/// allocator's buffers (header and data in one block) and a heap-backed frame pool's
/// frames come from here.
pub(crate) struct HeapBlock {
    base: NonNull<u8>,
    layout: Layout,
}

// SAFETY: a block of the global allocator, owned: nothing in it is tied to a thread.
unsafe impl Send for HeapBlock {}
// SAFETY: `&HeapBlock` only reads the address and layout.
unsafe impl Sync for HeapBlock {}

impl HeapBlock {
    /// `layout.size()` zeroed bytes aligned to `layout.align()`; `what` names them in
    /// the error when the allocator has none (`OutOfMemory`, never an abort).
    pub(crate) fn zeroed(layout: Layout, what: &str) -> Result<HeapBlock> {
        if layout.size() == 0 {
            return Err(Error::zero_size("size"));
        }
        // SAFETY: the layout has a non-zero size (checked above).
        let block = unsafe { alloc::alloc_zeroed(layout) };
        let base = NonNull::new(block).ok_or_else(|| {
            Error::OutOfMemory(format!(
                "the global allocator could not provide {} bytes aligned to {} for {what}; \
                 free memory, ask for less, or raise RLIMIT_AS",
                layout.size(),
                layout.align()
            ))
        })?;
        Ok(HeapBlock { base, layout })
    }

    /// The first byte.
    pub(crate) fn base(&self) -> NonNull<u8> {
        self.base
    }

    /// Bytes in the block.
    pub(crate) fn len(&self) -> usize {
        self.layout.size()
    }

    /// Gives the block up without freeing it: whoever holds `base` and the layout frees
    /// it later with [`from_raw`](Self::from_raw).
    fn into_raw(self) -> (NonNull<u8>, Layout) {
        let this = mem::ManuallyDrop::new(self);
        (this.base, this.layout)
    }

    /// Takes back a block given up with [`into_raw`](Self::into_raw).
    ///
    /// # Safety
    /// `base` and `layout` came from `into_raw`, and this is called once for them.
    unsafe fn from_raw(base: NonNull<u8>, layout: Layout) -> HeapBlock {
        HeapBlock { base, layout }
    }
}

impl Drop for HeapBlock {
    fn drop(&mut self) {
        // SAFETY: `base` was returned by `alloc_zeroed(layout)` and is freed once, here.
        unsafe { alloc::dealloc(self.base.as_ptr(), self.layout) };
    }
}

/// Release for a heap block: moves the tail out, then frees the block.
///
/// # Safety
/// `header` is the header of a `HeapTail` written by `allocate_aligned`, released once.
unsafe fn release_heap(header: NonNull<Header>) {
    // SAFETY: the header is the first field of a `#[repr(C)]` HeapTail; reading it moves
    // the tail (and its Arc) out of the block exactly once.
    let tail = unsafe { header.cast::<HeapTail>().read() };
    tail.counters.on_release(tail.header.capacity());
    // SAFETY: `base` and `layout` are the block `allocate_aligned` gave up with
    // `into_raw`, and nothing refers to it any more (no views; the tail was moved out
    // above).
    drop(unsafe { HeapBlock::from_raw(tail.header.base(), tail.layout) });
}

impl BufferAllocator for HeapAllocator {
    fn allocate(&self, max_size: usize) -> Result<BufferMut> {
        self.allocate_aligned(max_size, self.alignment)
    }

    fn allocate_page_aligned(&self, max_size: usize) -> Result<BufferMut> {
        self.allocate_aligned(max_size, page_size())
    }
}
