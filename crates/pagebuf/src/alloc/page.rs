//! `PageAllocator`: every buffer its own anonymous mapping.
#![allow(unsafe_code)] // listed in ARCHITECTURE.md, "Where `unsafe` lives"

use std::ptr::NonNull;
use std::sync::Arc;

use super::{check_request, AllocatorStats, BufferAllocator, Counters};
use crate::buffer::header::{Header, MemoryOrigin};
use crate::buffer::BufferMut;
use crate::error::Result;
use crate::memory::{HugePages, Region, RegionOptions};

/// Buffers that are each an anonymous memory mapping: always page-aligned, zero-filled,
/// optionally on huge pages, locked in RAM (for DMA), or pre-faulted.
///
/// Fresh mappings cost a system call and a page fault per page on first touch; for
/// buffers that are used over and over, a pool is the fast path, and this is what
/// pools are measured against.
///
/// ```
/// use pagebuf::{BufferAllocator, PageAllocator};
///
/// let pages = PageAllocator::default().prefault(true);
/// let buf = pages.allocate(1 << 20)?;
/// assert_eq!(buf.max_len(), 1 << 20);
/// assert_eq!(buf.as_ptr() as usize % pagebuf::page_size(), 0);
/// # Ok::<(), pagebuf::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct PageAllocator {
    options: RegionOptions,
    max_size: usize,
    counters: Arc<Counters>,
}

impl Default for PageAllocator {
    fn default() -> PageAllocator {
        PageAllocator {
            options: RegionOptions::default(),
            max_size: isize::MAX as usize,
            counters: Arc::default(),
        }
    }
}

/// The control block of one mapping; boxed, because the mapping's own pages are all
/// data (a header inside them would cost an extra page per buffer).
#[repr(C)]
struct PageBlock {
    header: Header,
    region: Region,
    counters: Arc<Counters>,
}

impl PageAllocator {
    /// Back buffers with huge pages (see [`HugePages`]); `Prefer` falls back to normal
    /// pages when none are reserved.
    pub fn huge_pages(mut self, huge_pages: HugePages) -> Self {
        self.options = self.options.huge_pages(huge_pages);
        self
    }

    /// Lock buffers in RAM (`mlock`). A refusal is an error naming `RLIMIT_MEMLOCK`.
    pub fn lock(mut self, lock: bool) -> Self {
        self.options = self.options.lock(lock);
        self
    }

    /// Fault pages in when mapping (`MAP_POPULATE`).
    pub fn prefault(mut self, prefault: bool) -> Self {
        self.options = self.options.prefault(prefault);
        self
    }

    /// Refuse (with `InvalidArgument`) requests over `max_size` bytes.
    pub fn max_size(mut self, max_size: usize) -> Self {
        self.max_size = max_size;
        self
    }

    /// The mapping options buffers are made with.
    pub fn options(&self) -> RegionOptions {
        self.options
    }

    /// The allocation and release counts and the bytes out now.
    pub fn stats(&self) -> AllocatorStats {
        self.counters.snapshot()
    }
}

/// Release for a mapping: dropping the block unmaps the region.
///
/// # Safety
/// `header` is the header of a `PageBlock` boxed by `allocate_page_aligned`, released once.
unsafe fn release_page(header: NonNull<Header>) {
    // SAFETY: the header is the first field of a `#[repr(C)]` PageBlock leaked from a
    // Box; rebuilding the Box frees it (and unmaps the region) exactly once.
    let block = unsafe { Box::from_raw(header.cast::<PageBlock>().as_ptr()) };
    block.counters.on_release(block.header.capacity());
}

impl BufferAllocator for PageAllocator {
    /// Same as [`allocate_page_aligned`](Self::allocate_page_aligned): mappings are
    /// always page-aligned.
    fn allocate(&self, max_size: usize) -> Result<BufferMut> {
        self.allocate_page_aligned(max_size)
    }

    fn allocate_page_aligned(&self, max_size: usize) -> Result<BufferMut> {
        check_request(max_size, self.max_size)?;
        let region = Region::map(max_size, self.options)?;
        let origin = MemoryOrigin::Mapped {
            huge_pages: region.is_huge(),
            locked: region.is_locked(),
            prefaulted: self.options.is_prefault(),
        };
        let header = Header::new(
            release_page,
            region.non_null(),
            max_size,
            region.granule(),
            origin,
            true,
        );
        let block = Box::new(PageBlock {
            header,
            region,
            counters: Arc::clone(&self.counters),
        });
        self.counters.on_allocate(max_size);
        // SAFETY: Box::into_raw is never null.
        let header = unsafe { NonNull::new_unchecked(Box::into_raw(block)) }.cast::<Header>();
        // SAFETY: a fresh, writable header with one reference over `max_size`
        // initialized (zero-filled) bytes of the region, which the block owns.
        Ok(unsafe { BufferMut::from_header(header) })
    }
}
