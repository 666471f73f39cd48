//! Allocators (the reference's `IWMSBufferAllocator`): who hands out buffers.
//!
//! [`BufferAllocator`] is the object-safe interface a host passes to the code that reads
//! and writes (`Arc<dyn BufferAllocator>`), with the reference's two calls:
//! `AllocateBuffer` ([`allocate`](BufferAllocator::allocate)) and `AllocatePageSizeBuffer`
//! ([`allocate_page_aligned`](BufferAllocator::allocate_page_aligned)).
//!
//! Rules every implementation keeps (and `tests/buffer_rules.rs` checks for each):
//! a new buffer has `len() == 0` and `max_len()` exactly the size asked for; size 0 and
//! sizes over the allocator's limit are [`Error::InvalidArgument`](crate::Error); memory
//! that cannot be had is [`Error::OutOfMemory`](crate::Error), never an abort.

mod heap;
mod page;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

pub use heap::HeapAllocator;
pub(crate) use heap::HeapBlock;
pub use page::PageAllocator;

use crate::buffer::BufferMut;
use crate::error::{Error, Result};

/// Hands out buffers. Object-safe, so a host can pass `Arc<dyn BufferAllocator>` to
/// plug-ins that must not care where memory comes from.
///
/// ```
/// use std::sync::Arc;
/// use pagebuf::{BufferAllocator, HeapAllocator, PageAllocator};
///
/// fn fill(alloc: &dyn BufferAllocator) -> pagebuf::Result<pagebuf::Buffer> {
///     let mut buf = alloc.allocate_page_aligned(4096)?;
///     buf.extend_from_slice(b"payload")?;
///     Ok(buf.freeze())
/// }
///
/// let hosts: [Arc<dyn BufferAllocator>; 2] =
///     [Arc::new(HeapAllocator::default()), Arc::new(PageAllocator::default())];
/// for alloc in &hosts {
///     let buf = fill(alloc.as_ref())?;
///     assert_eq!(buf.as_ptr() as usize % pagebuf::page_size(), 0);
/// }
/// # Ok::<(), pagebuf::Error>(())
/// ```
pub trait BufferAllocator: Send + Sync {
    /// A buffer of `max_size` bytes (`AllocateBuffer`): `len() == 0`,
    /// `max_len() == max_size`, aligned to at least the allocator's natural alignment.
    ///
    /// # Errors
    /// `InvalidArgument` for 0 or a size over the allocator's limit; `OutOfMemory` when
    /// the memory cannot be had.
    fn allocate(&self, max_size: usize) -> Result<BufferMut>;

    /// A buffer of `max_size` bytes whose `as_ptr()` is a multiple of
    /// [`page_size()`](crate::page_size) (`AllocatePageSizeBuffer`), for direct I/O.
    ///
    /// # Errors
    /// As [`allocate`](Self::allocate).
    fn allocate_page_aligned(&self, max_size: usize) -> Result<BufferMut>;
}

impl<A: BufferAllocator + ?Sized> BufferAllocator for &A {
    fn allocate(&self, max_size: usize) -> Result<BufferMut> {
        (**self).allocate(max_size)
    }
    fn allocate_page_aligned(&self, max_size: usize) -> Result<BufferMut> {
        (**self).allocate_page_aligned(max_size)
    }
}

impl<A: BufferAllocator + ?Sized> BufferAllocator for Arc<A> {
    fn allocate(&self, max_size: usize) -> Result<BufferMut> {
        (**self).allocate(max_size)
    }
    fn allocate_page_aligned(&self, max_size: usize) -> Result<BufferMut> {
        (**self).allocate_page_aligned(max_size)
    }
}

impl<A: BufferAllocator + ?Sized> BufferAllocator for Box<A> {
    fn allocate(&self, max_size: usize) -> Result<BufferMut> {
        (**self).allocate(max_size)
    }
    fn allocate_page_aligned(&self, max_size: usize) -> Result<BufferMut> {
        (**self).allocate_page_aligned(max_size)
    }
}

/// A snapshot of an allocator's accounting. Clones of an allocator share it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AllocatorStats {
    /// Buffers handed out so far.
    pub allocations: u64,
    /// Buffers whose memory has come back (the last view of them dropped).
    pub releases: u64,
    /// Buffers out now: `allocations - releases`.
    pub live_buffers: u64,
    /// Sum of `max_len` of the buffers out now.
    pub live_bytes: usize,
}

/// The counters behind [`AllocatorStats`]; every buffer's header holds an `Arc` to them,
/// so a release is counted even after the allocator itself was dropped.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    allocations: AtomicU64,
    releases: AtomicU64,
    live_bytes: AtomicUsize,
}

impl Counters {
    pub(crate) fn on_allocate(&self, bytes: usize) {
        self.allocations.fetch_add(1, Ordering::Relaxed);
        self.live_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn on_release(&self, bytes: usize) {
        self.live_bytes.fetch_sub(bytes, Ordering::Relaxed);
        // Release pairs with the Acquire in `snapshot`: a reader that sees this release
        // also sees the live_bytes decrement before it.
        self.releases.fetch_add(1, Ordering::Release);
    }

    pub(crate) fn snapshot(&self) -> AllocatorStats {
        // Acquire on `releases` first: every release it counts was preceded (through the
        // buffer's hand-off) by its allocation, so `allocations >= releases` is read.
        let releases = self.releases.load(Ordering::Acquire);
        let allocations = self.allocations.load(Ordering::Relaxed);
        AllocatorStats {
            allocations,
            releases,
            live_buffers: allocations.saturating_sub(releases),
            live_bytes: self.live_bytes.load(Ordering::Relaxed),
        }
    }
}

/// The checks every allocator makes before touching memory.
pub(crate) fn check_request(max_size: usize, limit: usize) -> Result<()> {
    if max_size == 0 {
        return Err(Error::zero_size("max_size"));
    }
    if max_size > limit {
        return Err(Error::InvalidArgument(format!(
            "max_size {max_size} is over this allocator's limit of {limit} bytes; ask for \
             less, or build the allocator with a higher .max_size()"
        )));
    }
    Ok(())
}
