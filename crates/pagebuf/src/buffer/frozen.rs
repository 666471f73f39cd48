//! `Buffer`: the shared, immutable buffer (INSSBuffer once handed on; AddRef/Release).
#![allow(unsafe_code)] // listed in ARCHITECTURE.md, "Where `unsafe` lives"

use std::fmt;
use std::mem::ManuallyDrop;
use std::ops::{Bound, Deref, RangeBounds};

use super::header::{Header, MemoryOrigin};
use super::view::View;
use super::BufferMut;
use crate::error::{Error, Result};

/// An immutable, reference-counted buffer: `Clone` is AddRef, `Drop` is Release.
///
/// Clones and [`slice`](Self::slice)s share the memory without copying. The memory goes
/// back to its origin (heap, page allocator, pool) exactly once, when the last `Buffer`
/// of it drops, on whatever thread that happens. A `Buffer` is 32 bytes and
/// `Send + Sync`.
///
/// ```
/// use pagebuf::{BufferAllocator, HeapAllocator};
///
/// let mut buf = HeapAllocator::default().allocate(16)?;
/// buf.extend_from_slice(b"frame-0001")?;
/// let shared = buf.freeze();
/// let header = shared.slice(..5)?;
/// assert_eq!(&header[..], b"frame");
/// assert_eq!(shared.ref_count(), 2);
///
/// drop(header);
/// let mut again = shared.try_into_mut().expect("unique again"); // reuse without copying
/// again.clear();
/// # Ok::<(), pagebuf::Error>(())
/// ```
pub struct Buffer {
    view: View,
}

impl Buffer {
    pub(super) fn from_view(view: View) -> Buffer {
        Buffer { view }
    }

    /// The number of bytes.
    pub fn len(&self) -> usize {
        self.view.len
    }

    /// Whether the buffer holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.view.len == 0
    }

    /// The bytes reserved for this view: the `max_len` of the buffer it was frozen
    /// from, or, for a [`slice`](Self::slice), the slice's own length.
    pub fn max_len(&self) -> usize {
        self.view.cap
    }

    /// The first byte. Never changes for the life of the memory.
    pub fn as_ptr(&self) -> *const u8 {
        self.view.ptr.as_ptr()
    }

    /// The alignment guaranteed for [`as_ptr`](Self::as_ptr).
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

    /// A zero-copy view of `range` (relative to this buffer), sharing the memory.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if the range ends past `len()` or starts after it ends.
    pub fn slice(&self, range: impl RangeBounds<usize>) -> Result<Buffer> {
        let len = self.view.len;
        let start = match range.start_bound() {
            Bound::Included(&s) => Some(s),
            Bound::Excluded(&s) => s.checked_add(1),
            Bound::Unbounded => Some(0),
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => e.checked_add(1),
            Bound::Excluded(&e) => Some(e),
            Bound::Unbounded => Some(len),
        };
        let (start, end) = match (start, end) {
            (Some(s), Some(e)) if s <= e && e <= len => (s, e),
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "slice {:?}..{:?} does not fit a buffer of {len} bytes; \
                     use a range with start <= end <= {len}",
                    range.start_bound(),
                    range.end_bound()
                )))
            }
        };
        self.view.header().acquire();
        Ok(Buffer {
            view: View {
                // SAFETY: start <= len, so the pointer stays inside this view's memory.
                ptr: unsafe { self.view.ptr.add(start) },
                len: end - start,
                cap: end - start,
                header: self.view.header,
            },
        })
    }

    /// How many `Buffer`s (clones and slices) share this memory.
    pub fn ref_count(&self) -> usize {
        self.view.header().ref_count()
    }

    /// Whether this is the only reference to the memory.
    pub fn is_unique(&self) -> bool {
        self.view.header().is_unique()
    }

    /// Turns this back into a writable [`BufferMut`] over the same memory (same
    /// pointer, length and `max_len`), if it is the only reference; otherwise gives it
    /// back unchanged. Memory lent read-only ([`Buffer::from_owner`]) never converts.
    pub fn try_into_mut(self) -> std::result::Result<BufferMut, Buffer> {
        let header = self.view.header();
        if header.is_writable() && header.is_unique() {
            let this = ManuallyDrop::new(self);
            // The count of 1 stands for the new BufferMut; no one else can add to it,
            // because there is no one else.
            Ok(BufferMut::from_view(View { ..this.view }))
        } else {
            Err(self)
        }
    }

    /// Drops `cnt` bytes from the front of this view (for `bytes::Buf`).
    #[cfg(feature = "bytes")]
    pub(super) fn advance_front(&mut self, cnt: usize) {
        assert!(
            cnt <= self.view.len,
            "advance({cnt}) past the end: only {} bytes remain",
            self.view.len
        );
        // SAFETY: cnt <= len, so the pointer stays inside this view's memory.
        self.view.ptr = unsafe { self.view.ptr.add(cnt) };
        self.view.len -= cnt;
        self.view.cap -= cnt;
    }

    /// Wraps read-only memory the caller owns: `owner` is kept until the last view drops.
    /// Such a buffer never turns into a `BufferMut`.
    ///
    /// ```
    /// use pagebuf::Buffer;
    /// let buf = Buffer::from_owner(b"static bytes");
    /// assert_eq!(buf.slice(7..).unwrap().as_ref(), b"bytes");
    /// assert!(buf.try_into_mut().is_err());
    /// ```
    pub fn from_owner<T: AsRef<[u8]> + Send + 'static>(owner: T) -> Buffer {
        let header = super::owner::wrap_read_only(owner);
        // SAFETY: `wrap_read_only` returns a fresh header with one reference, standing
        // for this view, over initialized memory (a `&[u8]` the owner lent).
        let mut view = unsafe { View::whole(header) };
        view.len = view.cap;
        Buffer { view }
    }
}

impl Clone for Buffer {
    fn clone(&self) -> Buffer {
        self.view.header().acquire();
        Buffer {
            view: View { ..self.view },
        }
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        // SAFETY: this view is counted and is never used after drop.
        unsafe { Header::release_shared(self.view.header) }
    }
}

impl From<BufferMut> for Buffer {
    fn from(buf: BufferMut) -> Buffer {
        buf.freeze()
    }
}

impl Deref for Buffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.view.as_slice()
    }
}

impl AsRef<[u8]> for Buffer {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl fmt::Debug for Buffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Buffer")
            .field("len", &self.len())
            .field("max_len", &self.max_len())
            .field("ref_count", &self.ref_count())
            .field("origin", &self.origin())
            .finish()
    }
}
