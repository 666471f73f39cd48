//! The control block every view of one piece of memory shares, and the rule by which
//! that memory goes back to where it came from.
//!
//! This file and `view.rs` are the unsafe core of the buffer types. The protocol:
//!
//! * An origin (heap, page allocator, pool, caller-supplied owner) places a [`Header`]
//!   somewhere that stays put until release: at the tail of a heap block, in a `Box`,
//!   or in a pool's frame table. The header's first field is `refs`; an origin that
//!   needs more state embeds the header as the first field of a `#[repr(C)]` struct
//!   and casts back to it in its `release` function.
//! * `refs` counts the views (`BufferMut`/`Buffer`) that point at the header. A
//!   `BufferMut` is always the only view (`refs == 1`); cloning and slicing a `Buffer`
//!   add one; dropping a view removes one.
//! * When the last view goes, `release` runs exactly once, on whichever thread dropped
//!   it. It receives the header pointer and owns everything from then on; views never
//!   touch header or memory again. There is no back-reference that could fail: the
//!   header itself carries the function that returns the memory. A released header
//!   always has `refs == 1` again, so an origin that reuses headers (a pool) hands
//!   them out as they are.
//!
//! The reference counting is `Arc`'s: increments are `Relaxed` (a new reference can
//! only be made from an existing one, which already keeps the memory alive), the
//! decrement is `Release`, and the thread that sees the count reach zero issues an
//! `Acquire` fence before releasing, so every other thread's last use of the bytes
//! happens-before the memory is reused or freed.
#![allow(unsafe_code)] // listed in ARCHITECTURE.md, "Where `unsafe` lives"

use std::fmt;
use std::ptr::NonNull;

use crate::sync::{fence, AtomicUsize, Ordering};

/// Returns the memory behind a header to its origin. Called exactly once, with the
/// header pointer the origin built the first view from, after the last view is gone.
pub(crate) type ReleaseFn = unsafe fn(NonNull<Header>);

/// Refcounts above this are treated as a leak loop gone wild; like `Arc`, pagebuf
/// aborts rather than let the count wrap (which would free memory still in use).
const MAX_REFS: usize = isize::MAX as usize;

/// Where a buffer's memory came from (and will return to).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MemoryOrigin {
    /// The global allocator (`HeapAllocator`).
    Heap,
    /// Its own anonymous memory mapping (`PageAllocator`).
    Mapped {
        /// Backed by reserved huge pages.
        huge_pages: bool,
        /// Locked in RAM with `mlock`.
        locked: bool,
        /// Pre-faulted when mapped.
        prefaulted: bool,
    },
    /// A frame of a [`FramePool`](crate::FramePool); it returns to the pool's free list.
    Pool,
    /// A buffer of a [`BufferPool`](crate::BufferPool); it returns to its size class.
    BufferPool,
    /// A frame of a [`SharedPool`](crate::SharedPool) (a sealed memfd other processes
    /// map too); it returns to the pool's shared free list.
    Shared,
    /// A caller-supplied owner (`Buffer::from_owner`, `BufferMut::from_owner`); the owner
    /// is dropped when the last view goes.
    Owner,
}

impl fmt::Display for MemoryOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MemoryOrigin::Heap => f.write_str("heap (global allocator)"),
            MemoryOrigin::Mapped {
                huge_pages,
                locked,
                prefaulted,
            } => {
                f.write_str("anonymous mmap")?;
                let extras = [
                    (huge_pages, "huge pages"),
                    (locked, "locked"),
                    (prefaulted, "pre-faulted"),
                ];
                let mut first = true;
                for (on, name) in extras {
                    if on {
                        f.write_str(if first { " (" } else { ", " })?;
                        f.write_str(name)?;
                        first = false;
                    }
                }
                if !first {
                    f.write_str(")")?;
                }
                Ok(())
            }
            MemoryOrigin::Pool => f.write_str("frame pool"),
            MemoryOrigin::BufferPool => f.write_str("buffer pool (size classes)"),
            MemoryOrigin::Shared => f.write_str("shared pool (sealed memfd)"),
            MemoryOrigin::Owner => f.write_str("caller-supplied owner"),
        }
    }
}

/// The shared control block. See the module documentation for the protocol.
#[repr(C)]
pub(crate) struct Header {
    refs: AtomicUsize,
    release: ReleaseFn,
    /// First byte of the memory; views point at or after it.
    base: NonNull<u8>,
    /// Bytes at `base` that are owned, writable (if `writable`) and initialized.
    capacity: usize,
    /// Alignment `base` is guaranteed to have.
    alignment: usize,
    origin: MemoryOrigin,
    /// False for memory only lent as `&[u8]` (`Buffer::from_owner`): such a buffer must
    /// never become a `BufferMut`, even when unique.
    writable: bool,
}

// SAFETY: a header is atomics plus plain data (an address, sizes, a fn pointer); the
// memory at `base` is reached only through the views' unsafe core, whose rules (unique
// `BufferMut`, immutable `Buffer`) hold on any thread, and every release function may
// run on any thread.
unsafe impl Send for Header {}
// SAFETY: `&Header` allows only atomic operations and reads of fields that never change
// while views exist.
unsafe impl Sync for Header {}

impl Header {
    /// A header for one view (`refs == 1`).
    ///
    /// The caller (an origin) promises what `BufferMut::from_header` needs: `capacity`
    /// bytes at `base` are initialized, owned by this header until `release` runs,
    /// and `base` is aligned to `alignment` (a power of two).
    pub(crate) fn new(
        release: ReleaseFn,
        base: NonNull<u8>,
        capacity: usize,
        alignment: usize,
        origin: MemoryOrigin,
        writable: bool,
    ) -> Header {
        debug_assert!(alignment.is_power_of_two());
        debug_assert_eq!(base.as_ptr() as usize % alignment, 0);
        Header {
            refs: AtomicUsize::new(1),
            release,
            base,
            capacity,
            alignment,
            origin,
            writable,
        }
    }

    pub(crate) fn base(&self) -> NonNull<u8> {
        self.base
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    pub(crate) fn alignment(&self) -> usize {
        self.alignment
    }

    pub(crate) fn origin(&self) -> MemoryOrigin {
        self.origin
    }

    pub(crate) fn is_writable(&self) -> bool {
        self.writable
    }

    pub(crate) fn ref_count(&self) -> usize {
        self.refs.load(Ordering::Acquire)
    }

    /// Adds a view. The caller holds a view, so the count is at least one.
    pub(crate) fn acquire(&self) {
        let old = self.refs.fetch_add(1, Ordering::Relaxed);
        if old > MAX_REFS {
            // Unreachable without leaking ~2^63 views; wrapping would be a use after free.
            std::process::abort();
        }
    }

    /// Whether the caller's view is the only one. `Acquire` pairs with the `Release`
    /// decrements of views dropped on other threads: their reads of the bytes
    /// happen-before the caller's writes through a `BufferMut` made from this answer.
    pub(crate) fn is_unique(&self) -> bool {
        self.refs.load(Ordering::Acquire) == 1
    }

    /// Drops one view of a header that may be shared; returns the memory to its origin
    /// if it was the last.
    ///
    /// # Safety
    /// `header` is valid and the caller's view is counted in `refs`; the caller never
    /// uses that view (or the header through it) again.
    pub(crate) unsafe fn release_shared(header: NonNull<Header>) {
        // SAFETY: valid per the contract; the caller's reference keeps it alive.
        let refs = unsafe { &header.as_ref().refs };
        if refs.fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        fence(Ordering::Acquire);
        // Back to one, the count of a header no view holds: origins that reuse headers
        // (pools) hand it out again as is, so their release paths need not check it.
        // Relaxed: we hold the header alone, and the origin's hand-off orders the store.
        refs.store(1, Ordering::Relaxed);
        // SAFETY: we removed the last reference, so this runs once and nobody else
        // holds a view: the memory is the origin's again.
        unsafe { Self::release_unique(header) }
    }

    /// Returns the memory of a header whose caller holds the only view.
    ///
    /// # Safety
    /// `header` is valid, the caller's view is the only one and is never used again.
    #[inline]
    pub(crate) unsafe fn release_unique(header: NonNull<Header>) {
        // SAFETY: the header is valid; reading a fn pointer out of it is a plain copy.
        let release = unsafe { header.as_ref().release };
        // SAFETY: the origin installed `release` for exactly this header, and the
        // caller guarantees this is the one and only release.
        unsafe { release(header) }
    }
}
