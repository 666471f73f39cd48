//! `BufferMut`: the uniquely owned, writable buffer (INSSBuffer while it is being filled).
#![allow(unsafe_code)] // listed in ARCHITECTURE.md, "Where `unsafe` lives"

use std::fmt;
use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

use super::header::{Header, MemoryOrigin};
use super::view::View;
use super::Buffer;
use crate::error::{Error, Result};

/// A writable buffer with a length and a fixed maximum length (`INSSBuffer`).
///
/// * `max_len()` bytes of memory are reserved and stay put: [`as_ptr`](Self::as_ptr)
///   never changes, so the buffer can be handed to the kernel for direct I/O.
/// * `len()` bytes are the content; `Deref`/`DerefMut` expose exactly those.
///   [`set_len`](Self::set_len) moves the length anywhere in `0..=max_len()`; growing it
///   exposes bytes that are initialized (zeroes from a fresh allocation, or whatever was
///   last written), never uninitialized memory.
/// * It is the only reference to its memory. [`freeze`](Self::freeze) turns it into a
///   shareable [`Buffer`]; dropping it returns the memory to its origin.
///
/// ```
/// use pagebuf::{BufferAllocator, PageAllocator};
///
/// let mut buf = PageAllocator::default().allocate_page_aligned(8192)?;
/// assert_eq!((buf.len(), buf.max_len()), (0, 8192));
/// assert_eq!(buf.as_ptr() as usize % pagebuf::page_size(), 0);
///
/// // GetBuffer, copy in, SetLength:
/// buf.whole_mut()[..5].copy_from_slice(b"hello");
/// buf.set_len(5)?;
/// buf.extend_from_slice(b", world")?;
/// assert_eq!(&buf[..], b"hello, world");
///
/// let frozen = buf.freeze(); // shareable, immutable
/// assert_eq!(&frozen.slice(7..)?[..], b"world");
/// # Ok::<(), pagebuf::Error>(())
/// ```
pub struct BufferMut {
    view: View,
}

impl BufferMut {
    /// The first view of a header an origin just built (or reset).
    ///
    /// # Safety
    /// `header` is valid, `refs == 1` stands for the returned buffer, the memory
    /// promises of `Header::new` hold, and the header is writable.
    #[inline]
    pub(crate) unsafe fn from_header(header: NonNull<Header>) -> BufferMut {
        // SAFETY: forwarded contract.
        let view = unsafe { View::whole(header) };
        debug_assert!(view.header().is_writable());
        BufferMut { view }
    }

    /// The number of content bytes.
    pub fn len(&self) -> usize {
        self.view.len
    }

    /// Whether the buffer holds no content.
    pub fn is_empty(&self) -> bool {
        self.view.len == 0
    }

    /// The fixed number of bytes reserved; `len()` can grow up to this.
    pub fn max_len(&self) -> usize {
        self.view.cap
    }

    /// Sets the content length (INSSBuffer `SetLength`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `n > max_len()`; the length is then unchanged.
    pub fn set_len(&mut self, n: usize) -> Result<()> {
        if n > self.view.cap {
            return Err(Error::InvalidArgument(format!(
                "set_len({n}) is past this buffer's max_len of {}; the length stays {}. \
                 Allocate a buffer of at least {n} bytes",
                self.view.cap, self.view.len
            )));
        }
        self.view.len = n;
        Ok(())
    }

    /// Sets the length to zero, keeping the memory.
    pub fn clear(&mut self) {
        self.view.len = 0;
    }

    /// All `max_len()` bytes, whatever the length (INSSBuffer `GetBuffer`): write into
    /// them, then [`set_len`](Self::set_len) to the number of bytes that are content.
    pub fn whole_mut(&mut self) -> &mut [u8] {
        // SAFETY: `[ptr, ptr + cap)` is initialized memory of this view's block (view
        // invariant), kept alive by it, and `&mut self` on the unique view makes this
        // the only access.
        unsafe { std::slice::from_raw_parts_mut(self.view.ptr.as_ptr(), self.view.cap) }
    }

    /// Appends `data` after the content.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if the content would pass `max_len()`; nothing is
    /// copied then.
    pub fn extend_from_slice(&mut self, data: &[u8]) -> Result<()> {
        let (len, cap) = (self.view.len, self.view.cap);
        let end = len
            .checked_add(data.len())
            .filter(|&end| end <= cap)
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "appending {} bytes to {len} would pass max_len {cap} (room for {}); \
                     allocate a larger buffer or append less",
                    data.len(),
                    cap - len
                ))
            })?;
        self.whole_mut()[len..end].copy_from_slice(data);
        self.view.len = end;
        Ok(())
    }

    /// The first byte. Never changes for the life of the memory.
    pub fn as_ptr(&self) -> *const u8 {
        self.view.ptr.as_ptr()
    }

    /// The first byte, for writing (for example by a system call).
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.view.ptr.as_ptr()
    }

    /// The alignment guaranteed for [`as_ptr`](Self::as_ptr): the page size for page-aligned
    /// allocations, the frame alignment for pool frames.
    pub fn alignment(&self) -> usize {
        self.view.alignment()
    }

    /// Where the memory came from and will return to.
    pub fn origin(&self) -> MemoryOrigin {
        self.view.origin()
    }

    /// The origin's record of the memory (a shared frame's leads to its pool).
    #[cfg(not(loom))]
    pub(crate) fn header(&self) -> &super::header::Header {
        self.view.header()
    }

    /// Turns this into an immutable, shareable [`Buffer`] without copying.
    pub fn freeze(self) -> Buffer {
        // The count is already 1 for this view, which the Buffer takes over.
        Buffer::from_view(self.into_view())
    }

    /// Wraps memory the caller owns: `owner` is kept until the last view drops, and its
    /// bytes (`as_mut()`, read once) become the buffer, with `len() == max_len()`.
    ///
    /// ```
    /// use pagebuf::BufferMut;
    /// let mut buf = BufferMut::from_owner(vec![1u8, 2, 3]);
    /// buf[0] = 9;
    /// assert_eq!(&buf[..], &[9, 2, 3]);
    /// ```
    pub fn from_owner<T: AsMut<[u8]> + Send + 'static>(owner: T) -> BufferMut {
        let header = super::owner::wrap_writable(owner);
        let mut buf = {
            // SAFETY: `wrap_writable` returns a fresh writable header with one reference,
            // backed by initialized memory (a `&mut [u8]` the owner lent).
            unsafe { BufferMut::from_header(header) }
        };
        buf.view.len = buf.view.cap;
        buf
    }

    /// Shrinks `max_len` to `max_len` (no larger than now): an allocator that hands out
    /// more memory than asked (a pool frame) keeps `max_len()` exactly as requested.
    pub(crate) fn limit_max_len(&mut self, max_len: usize) {
        debug_assert!(max_len <= self.view.cap);
        self.view.cap = self.view.cap.min(max_len);
        self.view.len = self.view.len.min(self.view.cap);
    }

    /// Moves the start `n` bytes into the memory (emptying the buffer): the writer's
    /// `allocate_sample` keeps room in front of the caller's bytes for a record header.
    /// Returns `false`, changing nothing, if fewer than `n` bytes are reserved.
    pub(crate) fn reserve_headroom(&mut self, n: usize) -> bool {
        if n > self.view.cap {
            return false;
        }
        // SAFETY: `n <= cap`, so `ptr + n` stays inside (or one past) the window, which
        // lies inside the header's block.
        self.view.ptr = unsafe { self.view.ptr.add(n) };
        self.view.cap -= n;
        self.view.len = 0;
        true
    }

    /// Widens the window to the whole block, keeping the content where it is: the
    /// result's content is the old headroom followed by the old content. Returns how
    /// many bytes of headroom there were.
    pub(crate) fn expand_to_block(&mut self) -> usize {
        let header = self.view.header();
        let (base, capacity) = (header.base(), header.capacity());
        let headroom = self.view.ptr.as_ptr() as usize - base.as_ptr() as usize;
        // The whole block is initialized memory of this header (View's invariant covers
        // any window inside it), and this is its only view.
        self.view.ptr = base;
        self.view.cap = capacity;
        self.view.len += headroom;
        headroom
    }

    /// Gives up the view without releasing it.
    pub(super) fn into_view(self) -> View {
        let this = ManuallyDrop::new(self);
        View { ..this.view }
    }

    pub(super) fn from_view(view: View) -> BufferMut {
        BufferMut { view }
    }

    /// The address of the buffer's header: which frame of an origin it is.
    #[cfg(not(loom))] // only the shared pool, which loom builds leave out, needs it
    pub(crate) fn header_address(&self) -> usize {
        self.view.header.as_ptr() as usize
    }

    /// Gives the buffer up without releasing its memory: its header (whose count of one
    /// still stands for this view, now the caller's), where its content starts, and
    /// its length. An origin uses it to take a frame back whole (a shared pool handing
    /// a frame to another process).
    #[cfg(not(loom))]
    pub(crate) fn into_raw_parts(self) -> (NonNull<Header>, NonNull<u8>, usize) {
        let view = self.into_view();
        (view.header, view.ptr, view.len)
    }
}

impl Drop for BufferMut {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: a BufferMut is always the only view (refs == 1), so it releases
        // directly, skipping the atomic decrement; it is never used again.
        unsafe { Header::release_unique(self.view.header) }
    }
}

impl Deref for BufferMut {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.view.as_slice()
    }
}

impl DerefMut for BufferMut {
    fn deref_mut(&mut self) -> &mut [u8] {
        let len = self.view.len;
        &mut self.whole_mut()[..len]
    }
}

impl AsRef<[u8]> for BufferMut {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl AsMut<[u8]> for BufferMut {
    fn as_mut(&mut self) -> &mut [u8] {
        self
    }
}

impl fmt::Debug for BufferMut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufferMut")
            .field("len", &self.len())
            .field("max_len", &self.max_len())
            .field("alignment", &self.alignment())
            .field("origin", &self.origin())
            .finish()
    }
}
