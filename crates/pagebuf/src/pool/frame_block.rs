//! `FrameBlock`: the one block of memory a frame pool's frames live in: a `Region`
//! (anonymous pages, huge pages), a block of the global allocator
//! (`alloc::HeapBlock`, the heap allocator's code), or the host's memory (held by a
//! `HostClaim` while the pool lives).
#![allow(unsafe_code)] // listed in ARCHITECTURE.md, "Where `unsafe` lives"

use std::ptr::NonNull;

use super::framing::{FrameLayout, FrameMemory};
use super::host_memory::HostClaim;
use super::poison;
use crate::alloc::HeapBlock;
use crate::error::{Error, Result};
use crate::memory::{page_size, Region};

pub(super) enum FrameBlock {
    /// A mapping; frames start `offset` bytes in, where the alignment asks for more
    /// than the page size gives.
    Region {
        region: Region,
        offset: usize,
    },
    Heap(HeapBlock),
    Host(HostClaim),
}

impl FrameBlock {
    pub(super) fn new(layout: &FrameLayout, source: FrameMemory) -> Result<FrameBlock> {
        match source {
            FrameMemory::Pages(options) => {
                FrameBlock::mapped(layout, |len| Region::map(len, options))
            }
            FrameMemory::SharedMemory(options) => {
                FrameBlock::mapped(layout, |len| Region::map_memfd(len, options))
            }
            FrameMemory::Heap => {
                let heap = std::alloc::Layout::from_size_align(layout.total, layout.alignment)
                    .map_err(|_| {
                        Error::InvalidArgument(format!(
                            "{} bytes aligned to {} cannot be allocated from the heap; use \
                             FrameMemory::Pages",
                            layout.total, layout.alignment
                        ))
                    })?;
                Ok(FrameBlock::Heap(HeapBlock::zeroed(
                    heap,
                    "the pool's frames",
                )?))
            }
            FrameMemory::Host(memory) => Ok(FrameBlock::Host(
                memory.claim(layout.total, layout.alignment)?,
            )),
        }
    }

    /// The frames in a mapping `map` makes: pages are page-aligned; for a larger
    /// alignment, the slack to slide is mapped too.
    fn mapped(layout: &FrameLayout, map: impl FnOnce(usize) -> Result<Region>) -> Result<Self> {
        let slack = layout.alignment.saturating_sub(page_size());
        let len = layout.total.checked_add(slack).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{} bytes of frames plus {slack} bytes of alignment slack overflow",
                layout.total
            ))
        })?;
        let region = map(len)?;
        let address = region.as_ptr() as usize;
        let offset = address.next_multiple_of(layout.alignment) - address;
        Ok(FrameBlock::Region { region, offset })
    }

    /// The sealed memfd the frames live in, and where the block starts in it
    /// ([`FrameMemory::SharedMemory`]).
    pub(super) fn memfd(&self) -> Option<(std::os::fd::BorrowedFd<'_>, *const u8)> {
        match self {
            FrameBlock::Region { region, .. } => Some((region.memfd()?, region.as_ptr())),
            FrameBlock::Heap(_) | FrameBlock::Host(_) => None,
        }
    }

    /// The first frame's block; aligned to the framing's alignment.
    pub(super) fn base(&self) -> NonNull<u8> {
        match self {
            // SAFETY: `offset` < alignment <= the slack mapped beyond the frames.
            FrameBlock::Region { region, offset } => unsafe { region.non_null().add(*offset) },
            FrameBlock::Heap(block) => block.base(),
            // Checked aligned when claimed.
            FrameBlock::Host(claim) => claim.memory().base(),
        }
    }

    pub(super) fn origin_note(&self) -> Option<&str> {
        match self {
            FrameBlock::Region { region, .. } => region.fallback_note(),
            FrameBlock::Heap(_) | FrameBlock::Host(_) => None,
        }
    }
}

impl FrameBlock {
    /// The whole block: start and length.
    pub(super) fn extent(&self) -> (*mut u8, usize) {
        match self {
            FrameBlock::Region { region, .. } => (region.as_ptr().cast_mut(), region.len()),
            FrameBlock::Heap(block) => (block.base().as_ptr(), block.len()),
            FrameBlock::Host(claim) => (claim.memory().base().as_ptr(), claim.memory().len()),
        }
    }
}

impl Drop for FrameBlock {
    fn drop(&mut self) {
        // ASan's shadow outlives the mapping: frames left poisoned would make the next
        // mapping at these addresses (any allocator's) look poisoned.
        let (start, len) = self.extent();
        // SAFETY: the pool is being freed: no frame is out, so these bytes are ours.
        unsafe { poison::unpoison(start, len) };
        // The block itself (a `Region` or a `HeapBlock`) is freed by its own drop; the
        // host's memory goes back to the host when its last `HostMemory` is dropped.
    }
}
