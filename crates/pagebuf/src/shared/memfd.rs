//! The shared pool's memfd: creating and sealing it, checking a received one before
//! anything is mapped, and the one `MAP_SHARED` mapping of it (`Mapping`), through
//! which the rest of the module reaches the shared words and frames.
//!
//! The seals are what make the mapping safe to touch: without `F_SEAL_SHRINK` a peer's
//! `ftruncate` would turn our next access into `SIGBUS`; without `F_SEAL_SEAL` it could
//! add `F_SEAL_WRITE` and fail our writes.
#![allow(unsafe_code)] // listed in ARCHITECTURE.md, "Where `unsafe` lives"

use std::mem::{align_of, size_of};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;

use rustix::fs::{self, SealFlags};
use rustix::io::Errno;
use rustix::mm::{self, MapFlags, ProtFlags};

use super::layout::{Control, FrameEntry};
use crate::error::{Error, Result};

/// The seals every shared pool carries; `attach` refuses an fd without all of them.
fn required_seals() -> SealFlags {
    crate::memory::required_seals()
}

/// A new memfd of `len` bytes (zero-filled), sealed against resizing and further seals;
/// on reserved huge pages (`MFD_HUGETLB`; `len` a multiple of their size) if `huge`.
pub(super) fn create_sealed(len: usize, huge: bool) -> Result<OwnedFd> {
    crate::memory::sealed_memfd("pagebuf-shared-pool", len, huge)
}

/// Checks a received fd before it is mapped: a sealed memfd that cannot be resized and
/// can still be written. Returns its size.
pub(super) fn check_received(fd: BorrowedFd<'_>) -> Result<u64> {
    let seals = match fs::fcntl_get_seals(fd) {
        Ok(seals) => seals,
        Err(Errno::INVAL) => {
            return Err(Error::InvalidArgument(
                "the fd is not a pagebuf shared pool: it is not a memfd (it has no seals); \
                 pass the fd of SharedPool::as_fd"
                    .into(),
            ))
        }
        Err(e) => return Err(Error::io("reading the seals of a SharedPool fd", e.into())),
    };
    if !seals.contains(required_seals()) {
        return Err(Error::InvalidArgument(format!(
            "the memfd is not sealed as a shared pool must be (it has {seals:?}, needs \
             SHRINK | GROW | SEAL): a peer could resize it under our mapping; pass the fd \
             of SharedPool::as_fd"
        )));
    }
    if seals.intersects(SealFlags::WRITE | SealFlags::FUTURE_WRITE) {
        return Err(Error::InvalidArgument(format!(
            "the memfd is sealed against writing ({seals:?}); a shared pool must be writable"
        )));
    }
    // The size only after the seals: read before them, a peer could still shrink the
    // memfd between the two and then seal it, and our mapping of the old size would
    // fault past the new end.
    let stat = fs::fstat(fd).map_err(|e| Error::io("fstat of a SharedPool fd", e.into()))?;
    let len = u64::try_from(stat.st_size).unwrap_or(0);
    if len < size_of::<Control>() as u64 {
        return Err(Error::InvalidArgument(format!(
            "the memfd is {len} bytes, smaller than a shared pool's header ({} bytes): it \
             is not a pagebuf shared pool",
            size_of::<Control>()
        )));
    }
    if usize::try_from(len).is_err() {
        return Err(Error::InvalidArgument(format!(
            "the memfd is {len} bytes, more than this process can map"
        )));
    }
    Ok(len)
}

/// One `MAP_SHARED` read-write mapping of a whole sealed memfd, at least a `Control`
/// long. Unmapped on drop.
pub(super) struct Mapping {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory shared with other processes anyway; everything
// the module reads through it is an atomic or a frame handed out as a unique buffer.
unsafe impl Send for Mapping {}
// SAFETY: as above: `&Mapping` only gives out atomics and addresses.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes of `fd`, which `check_received` (or `create_sealed`) vouched for:
    /// sealed against shrinking, so every byte mapped stays backed.
    pub(super) fn new(fd: BorrowedFd<'_>, len: usize) -> Result<Mapping> {
        if len < size_of::<Control>() {
            return Err(Error::InvalidArgument(format!(
                "a shared pool mapping of {len} bytes is smaller than its header"
            )));
        }
        // SAFETY: a fresh mapping at an address the kernel picks overlaps nothing of
        // ours; the fd is sealed against shrinking, so no access inside `len` faults.
        let base = unsafe {
            mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                fd,
                0,
            )
        }
        .map_err(|e| {
            Error::OutOfMemory(format!(
                "mapping the shared pool's {len} bytes failed ({e}); check the address \
                 space limit (ulimit -v) and vm.max_map_count"
            ))
        })?;
        let base = NonNull::new(base.cast::<u8>()).ok_or_else(|| {
            Error::OutOfMemory("mmap returned a null mapping; this kernel is unusual".into())
        })?;
        Ok(Mapping { base, len })
    }

    /// `(start address, length)` of the mapping.
    pub(super) fn extent(&self) -> (usize, usize) {
        (self.base.as_ptr() as usize, self.len)
    }

    /// The control block at offset 0.
    pub(super) fn control(&self) -> &Control {
        const _: () = assert!(align_of::<Control>() <= 4096);
        // SAFETY: `new` checked len >= size_of::<Control>(); the base is page-aligned
        // (more than Control needs); Control is made only of atomics, valid for any
        // bit pattern and meant to be shared, so any peer's writes are fine; the
        // mapping lives as long as `self`.
        unsafe { self.base.cast::<Control>().as_ref() }
    }

    /// `count` frame entries at byte `offset`; `None` if they do not fit the mapping.
    pub(super) fn frame_entries(&self, offset: usize, count: usize) -> Option<&[FrameEntry]> {
        let end = count
            .checked_mul(size_of::<FrameEntry>())?
            .checked_add(offset)?;
        if end > self.len || offset % align_of::<FrameEntry>() != 0 {
            return None;
        }
        // SAFETY: in bounds and aligned (checked above); FrameEntry is atomics only,
        // valid for any bit pattern; lives as long as `self`.
        Some(unsafe {
            std::slice::from_raw_parts(self.base.as_ptr().add(offset).cast::<FrameEntry>(), count)
        })
    }

    /// `count` ring cells at byte `offset`; `None` if they do not fit the mapping.
    pub(super) fn ring_cells(&self, offset: usize, count: usize) -> Option<&[AtomicU64]> {
        let end = count
            .checked_mul(size_of::<AtomicU64>())?
            .checked_add(offset)?;
        if end > self.len || offset % align_of::<AtomicU64>() != 0 {
            return None;
        }
        // SAFETY: in bounds and aligned (checked above); atomics are valid for any bit
        // pattern and meant to be shared; they live as long as `self`.
        Some(unsafe {
            std::slice::from_raw_parts(self.base.as_ptr().add(offset).cast::<AtomicU64>(), count)
        })
    }

    /// The address `offset` bytes in, if `offset + len` fits the mapping.
    pub(super) fn address(&self, offset: usize, len: usize) -> Option<NonNull<u8>> {
        if offset.checked_add(len)? > self.len {
            return None;
        }
        // SAFETY: in bounds of the mapping (checked above), so no overflow and not null.
        Some(unsafe { self.base.add(offset) })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unmapped once; the pool drops the mapping only after
        // every buffer over it is gone (they hold the pool alive).
        let unmapped = unsafe { mm::munmap(self.base.as_ptr().cast(), self.len) };
        debug_assert!(
            unmapped.is_ok(),
            "munmap of the shared pool failed: {unmapped:?}"
        );
    }
}
