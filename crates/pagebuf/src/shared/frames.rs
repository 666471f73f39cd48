//! This process's buffer headers for the shared frames, and the two unsafe steps of the
//! shared pool: turning a frame taken off the shared free list into a `BufferMut`, and
//! the release function that gives it back when the last view drops.
//!
//! Headers are per process on purpose: a release function and an address mean nothing
//! in another process, and a peer must not be able to point our release at anything.
#![allow(unsafe_code)] // listed in ARCHITECTURE.md, "Where `unsafe` lives"

use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::lease::Lease;
use super::process::Attached;
use crate::buffer::header::{Header, MemoryOrigin};
use crate::buffer::BufferMut;
use crate::error::{Error, Result};

/// One frame's header in this process. `header` must stay the first field: the release
/// function casts the header pointer back to the whole.
#[repr(C)]
pub(super) struct FrameHeader {
    header: Header,
    /// The process's pool state; each buffer out holds one strong count of its `Arc`.
    attached: *const Attached,
    index: u32,
    /// Whether this process has a buffer over the frame now: the shared list handing
    /// us a frame we still hold (a peer pushed it) must never make a second view.
    out: AtomicBool,
}

// SAFETY: the header is Send + Sync; `attached` is only dereferenced by the release
// function, through the strong count the buffer holds, and `Attached` is Send + Sync.
unsafe impl Send for FrameHeader {}
// SAFETY: as above; `&FrameHeader` allows only atomic operations and reads.
unsafe impl Sync for FrameHeader {}

impl FrameHeader {
    /// The header of frame `index`, whose `capacity` bytes at `data` lie in the
    /// mapping that `attached` will own.
    pub(super) fn new(
        attached: *const Attached,
        index: u32,
        data: NonNull<u8>,
        capacity: usize,
        alignment: usize,
    ) -> FrameHeader {
        FrameHeader {
            header: Header::new(
                release_frame,
                data,
                capacity,
                alignment,
                MemoryOrigin::Shared,
                true,
            ),
            attached,
            index,
            out: AtomicBool::new(false),
        }
    }
}

/// Why a frame is handed out: zeroing on reuse applies to allocations, never to a frame
/// received with its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fresh {
    /// Taken off the free list.
    Allocated,
    /// Received through the hand-over ring, content and all.
    Received,
}

/// The buffer over frame `index`, which the caller just took off the shared free list
/// for this process.
pub(super) fn hand_out(attached: &Arc<Attached>, index: u32, fresh: Fresh) -> Result<BufferMut> {
    let frame = attached.header(index).ok_or_else(|| Error::Corrupt {
        offset: 0,
        detail: format!("the shared free list gave out frame {index}, past the last frame"),
    })?;
    if frame.out.swap(true, Ordering::Acquire) {
        return Err(Error::Corrupt {
            offset: 0,
            detail: format!(
                "the shared free list gave out frame {index}, which this process still \
                 holds: a peer pushed a frame it did not own"
            ),
        });
    }
    if fresh == Fresh::Allocated && attached.zero_on_reuse() {
        // SAFETY: the frame's bytes lie in our mapping (checked when the headers were
        // built) and are ours until the buffer drops: no view of them exists here.
        unsafe {
            frame
                .header
                .base()
                .as_ptr()
                .write_bytes(0, frame.header.capacity())
        };
    }
    // SAFETY: `attached` is a live Arc; the extra count belongs to the buffer and is
    // given back by `release_frame`.
    unsafe { Arc::increment_strong_count(Arc::as_ptr(attached)) };
    // SAFETY: refs == 1 (set at creation, and a released header is left at 1), the memory is the
    // frame's initialized (memfd pages start zeroed) bytes in our mapping, which lives
    // as long as the count just taken; `out` proves no other view exists here.
    Ok(unsafe { BufferMut::from_header(NonNull::from(&frame.header)) })
}

/// Takes `buffer` back from the caller without returning its frame to the free list:
/// the frame's index and how many bytes, from the frame's start, its content reaches.
/// `Err` (and the buffer dropped normally) for a buffer that is not one of this
/// attachment's frames.
pub(super) fn take_back(attached: &Arc<Attached>, buffer: BufferMut) -> Result<(u32, usize)> {
    let header = buffer.header_address();
    let index = attached.index_of_header(header).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "the buffer handed over is not a frame of this SharedPool (its memory is {}); \
             hand over buffers allocated from this handle's pool",
            buffer.origin()
        ))
    })?;
    let frame = &attached.headers_slice()[index as usize];
    // Content from the frame's start: the view may start after it.
    let end = (buffer.as_ptr() as usize)
        .checked_sub(frame.header.base().as_ptr() as usize)
        .and_then(|start| start.checked_add(buffer.len()))
        .filter(|&end| end <= frame.header.capacity())
        .ok_or_else(|| {
            Error::InvalidArgument(
                "the buffer handed over reaches outside its frame's data (into the \
                 headroom); hand over the frame's data only"
                    .into(),
            )
        })?;
    let (header, _, _) = buffer.into_raw_parts();
    debug_assert_eq!(header, NonNull::from(&frame.header));
    frame.out.store(false, Ordering::Release);
    // SAFETY: `hand_out` took this strong count for the buffer, which is gone now
    // (`into_raw_parts`); `attached` (the caller's) keeps the pool alive meanwhile.
    unsafe { Arc::decrement_strong_count(Arc::as_ptr(attached)) };
    Ok((index, end))
}

/// The lease of the attachment whose frame `header` is the header of, if it is a
/// shared frame: a ring holds it while a transfer on the frame is in flight.
pub(crate) fn lease_of(header: &Header) -> Option<Arc<Lease>> {
    if header.origin() != MemoryOrigin::Shared {
        return None;
    }
    // SAFETY: only `FrameHeader::new` makes headers of this origin, as the first field
    // of a `#[repr(C)]` FrameHeader; the caller's reference to the header is a
    // buffer's, which holds a strong count of the attachment.
    let frame = unsafe { NonNull::from(header).cast::<FrameHeader>().as_ref() };
    // SAFETY: as above: the buffer's count keeps `attached` alive.
    let attached = unsafe { &*frame.attached };
    Some(attached.lease().clone())
}

/// The release function of every shared frame's header.
///
/// # Safety
/// `header` is the first field of a `FrameHeader` handed out by `hand_out`, released
/// once.
unsafe fn release_frame(header: NonNull<Header>) {
    // SAFETY: the header is the first field of a `#[repr(C)]` FrameHeader.
    let frame = unsafe { header.cast::<FrameHeader>().as_ref() };
    // SAFETY: `hand_out` took this strong count for the buffer whose last view is gone.
    let attached = unsafe { Arc::from_raw(frame.attached) };
    frame.out.store(false, Ordering::Release);
    attached.give_back(frame.index);
    // Last: the headers (and `frame`) may be freed with `attached`.
    drop(attached);
}
