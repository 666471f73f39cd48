//! A window onto a header's memory: the four words both `BufferMut` and `Buffer` are.
//!
//! Invariants (every constructor establishes them, every method keeps them):
//!
//! * `header` is valid and counts this view in its `refs`.
//! * `[ptr, ptr + cap)` lies inside `[base, base + capacity)` of the header, and is
//!   initialized memory: bytes past `len` may be exposed by growing `len` up to `cap`.
//! * `len <= cap`.
//!
//! A `View` does nothing on drop: the type that holds it decides how a view goes away
//! (`BufferMut` releases directly, being unique; `Buffer` decrements the count).
#![allow(unsafe_code)] // listed in ARCHITECTURE.md, "Where `unsafe` lives"

use std::ptr::NonNull;

use super::header::{Header, MemoryOrigin};

pub(crate) struct View {
    pub(super) ptr: NonNull<u8>,
    pub(super) len: usize,
    pub(super) cap: usize,
    pub(super) header: NonNull<Header>,
}

// SAFETY: a view is a counted reference to memory whose release is thread-agnostic
// (every origin's release may run on any thread) and whose refcount is atomic. Whether
// it is shared or unique is up to the types built on it, which add their own rules.
unsafe impl Send for View {}
// SAFETY: `&View` reads only: the header's atomics and the bytes, which no one writes
// while shared (a writer needs a unique `BufferMut`).
unsafe impl Sync for View {}

impl View {
    /// The whole memory of a header that was just made or reset for one view.
    ///
    /// # Safety
    /// `header` is valid, has `refs == 1` standing for the returned view, and honours
    /// the promises of `Header::new`.
    #[inline]
    pub(super) unsafe fn whole(header: NonNull<Header>) -> View {
        // SAFETY: valid per the contract.
        let h = unsafe { header.as_ref() };
        View {
            ptr: h.base(),
            len: 0,
            cap: h.capacity(),
            header,
        }
    }

    pub(super) fn header(&self) -> &Header {
        // SAFETY: the view is counted in `refs`, so the header outlives `&self`.
        unsafe { self.header.as_ref() }
    }

    pub(super) fn as_slice(&self) -> &[u8] {
        // SAFETY: `[ptr, ptr + len)` is initialized memory inside the header's block,
        // kept alive by this view; nobody writes to it while `&self` is held (writing
        // requires the unique `BufferMut` and `&mut`).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The alignment guaranteed for `ptr`: the origin's, reduced by however far into the
    /// block this window starts.
    pub(super) fn alignment(&self) -> usize {
        let header = self.header();
        let offset = self.ptr.as_ptr() as usize - header.base().as_ptr() as usize;
        if offset == 0 {
            header.alignment()
        } else {
            header.alignment().min(1 << offset.trailing_zeros())
        }
    }

    pub(super) fn origin(&self) -> MemoryOrigin {
        self.header().origin()
    }
}
