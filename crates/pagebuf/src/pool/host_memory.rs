//! [`HostMemory`]: memory a host hands a frame pool to put its frames in (memory a
//! driver or another library mapped), as a KS minidriver supplies its allocator's
//! frames through the allocator's own context.
#![allow(unsafe_code)] // listed in ARCHITECTURE.md, "Where `unsafe` lives"

use std::any::Any;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::error::{Error, Result};

/// Memory the caller supplies for a pool's frames ([`FrameMemory::Host`](super::FrameMemory::Host)).
///
/// The pool never maps or frees it: it keeps the `owner` given to
/// [`new`](Self::new) until the pool and every buffer from it are gone, then drops it
/// (that drop is where the host unmaps or frees the memory). One pool at a time holds
/// the frames of a `HostMemory`: a second [`FramePool::new`](super::FramePool::new) with
/// it (or a clone of it) while the first pool lives is
/// [`Error::InvalidRequest`]. The frames keep whatever bytes the memory held (the
/// pool's `zero_on_reuse` zeroes them between uses, not before the first).
///
/// ```
/// use std::ptr::NonNull;
/// use pagebuf::pool::{FrameMemory, FramePool, Framing, HostMemory};
///
/// // Memory another library allocated: here a boxed, page-aligned array.
/// #[repr(C, align(4096))]
/// struct Arena([u8; 4 * 4096]);
/// let arena = Box::new(Arena([0; 4 * 4096]));
/// let base = NonNull::from(&arena.0).cast::<u8>();
/// // SAFETY: the arena is valid, initialized and used by nothing else for as long as
/// // the pool keeps `arena` (the owner) alive; dropping it frees the memory.
/// let memory = unsafe { HostMemory::new(base, 4 * 4096, arena) };
/// let pool = FramePool::new(Framing::new(4096, 4).memory(FrameMemory::Host(memory)))?;
/// let mut frame = pool.try_allocate().expect("a frame is free");
/// frame.extend_from_slice(b"captured")?;
/// assert_eq!(&frame[..], b"captured");
/// # Ok::<(), pagebuf::Error>(())
/// ```
#[derive(Clone)]
pub struct HostMemory {
    inner: Arc<Host>,
}

struct Host {
    /// The memory's address (an address, not a pointer: `Send` and `Sync` without an
    /// `unsafe impl`; a pointer again only where the pool hands out frames).
    base: usize,
    len: usize,
    /// Whether a pool holds the frames now.
    claimed: AtomicBool,
    /// Dropped once no pool holds this memory and no clone of it is left.
    _owner: Box<dyn Any + Send + Sync>,
}

impl HostMemory {
    /// The `len` bytes at `base`, kept by `owner` (dropped once no pool uses them and
    /// every clone of this `HostMemory` is gone).
    ///
    /// # Safety
    ///
    /// Until `owner` is dropped:
    /// * the `len` bytes at `base` are valid for reads and writes, and initialized (any
    ///   values);
    /// * nothing else reads or writes them, or hands out references to them, while a
    ///   pool holds them (the pool's buffers are the only way in; a device writing
    ///   into them outside the pool's transfers is a data race);
    /// * they are not unmapped, freed or moved.
    ///
    /// Alignment and size are checked when a pool is made from it.
    pub unsafe fn new(
        base: NonNull<u8>,
        len: usize,
        owner: impl Send + Sync + 'static,
    ) -> HostMemory {
        HostMemory {
            inner: Arc::new(Host {
                base: base.as_ptr() as usize,
                len,
                claimed: AtomicBool::new(false),
                _owner: Box::new(owner),
            }),
        }
    }

    /// The memory's length in bytes.
    pub fn len(&self) -> usize {
        self.inner.len
    }

    /// Whether the memory has no bytes.
    pub fn is_empty(&self) -> bool {
        self.inner.len == 0
    }

    /// The memory's first byte.
    pub fn base(&self) -> NonNull<u8> {
        // SAFETY: made from a `NonNull` in `new`.
        unsafe { NonNull::new_unchecked(self.inner.base as *mut u8) }
    }

    /// Makes this memory a pool's, for `total` bytes of frames aligned to `alignment`;
    /// the claim lets it go when dropped.
    pub(super) fn claim(&self, total: usize, alignment: usize) -> Result<HostClaim> {
        let host = &self.inner;
        if host.len < total {
            return Err(Error::InvalidArgument(format!(
                "FrameMemory::Host: the framing needs {total} bytes and the host memory has \
                 {}; give more memory or fewer or smaller frames",
                host.len
            )));
        }
        if host.base % alignment != 0 {
            return Err(Error::InvalidArgument(format!(
                "FrameMemory::Host: the host memory at {:#x} is not aligned to the framing's \
                 {alignment} bytes; align it, or ask for less alignment",
                host.base
            )));
        }
        if host.claimed.swap(true, Ordering::AcqRel) {
            return Err(Error::InvalidRequest(
                "FrameMemory::Host: this host memory already holds a live pool's frames; \
                 give each pool its own memory, or drop the other pool first"
                    .into(),
            ));
        }
        Ok(HostClaim {
            memory: self.clone(),
        })
    }
}

/// A pool's hold on a [`HostMemory`].
pub(super) struct HostClaim {
    memory: HostMemory,
}

impl HostClaim {
    pub(super) fn memory(&self) -> &HostMemory {
        &self.memory
    }
}

impl Drop for HostClaim {
    fn drop(&mut self) {
        self.memory.inner.claimed.store(false, Ordering::Release);
    }
}

impl PartialEq for HostMemory {
    /// The same memory (clones of one `HostMemory`).
    fn eq(&self, other: &HostMemory) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Eq for HostMemory {}

impl std::fmt::Debug for HostMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostMemory")
            .field("base", &format_args!("{:#x}", self.inner.base))
            .field("len", &self.inner.len)
            .finish_non_exhaustive()
    }
}
