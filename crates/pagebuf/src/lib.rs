//! # pagebuf
//!
//! Memory and disks that cooperate, for streaming media and storage on Linux:
//!
//! * [`BufferMut`] / [`Buffer`]: buffers with a length and a fixed maximum length
//!   (`INSSBuffer`), unique-and-writable or shared-and-immutable, with a data pointer
//!   that never moves and memory that returns to its origin exactly once.
//! * [`BufferAllocator`] with [`HeapAllocator`] and [`PageAllocator`]
//!   (`IWMSBufferAllocator`): where buffers come from, including page-aligned ones for
//!   direct (`O_DIRECT`) I/O.
//! * [`FramePool`] with [`Framing`] (`KSALLOCATOR_DISPATCH`): bounded pools of aligned
//!   frames with back-pressure (blocking, timeout and async allocation), `close`, and
//!   [`PoolStats`]; [`BufferPool`]: buffers of any size in size classes under a byte
//!   budget.
//! * [`DeviceLimits`] (`IDiscRecorder2Ex`): how large and how aligned a direct-I/O
//!   transfer at a path may be, and where each figure came from.
//! * [`DirectFile`]: positioned `O_DIRECT` reads and writes, alignment checked before
//!   the kernel sees them (`Error::Misaligned`, not `EINVAL`), large transfers split.
//! * [`sequential`]: `DirectWriter` / `DirectReader`, `std::io::Write` / `Read` over a
//!   `DirectFile` with several aligned transfers in flight and bounded memory.
//! * [`stream`]: [`SampleWriter`] / [`SampleReader`] (`IWMWriter`), a recorder of timed
//!   samples that owns each buffer until it is on disk, writes large ones without a
//!   copy, and leaves a file that survives its writer's death (FORMAT.md).
//! * [`copy`]: `copy_file`, a pipelined direct-I/O copy of any file in bounded memory,
//!   with optional verification.
//! * [`SharedPool`] ([`shared`]): a frame pool in one sealed memfd that several
//!   processes map: allocate in one, drop in another, back-pressure across them, and
//!   the frames of a process that dies come back.
//! * [`memory`]: the page size and page-aligned anonymous regions (huge pages, `mlock`,
//!   pre-faulting).
//!
//! Bad input is an [`Error`] that says what to change; no public function panics on
//! any argument (the one exception: the `bytes` crate's traits, see feature `bytes`).
//!
//! ```
//! use pagebuf::{BufferAllocator, PageAllocator};
//!
//! let alloc = PageAllocator::default();
//! let mut frame = alloc.allocate_page_aligned(64 * 1024)?;
//! frame.extend_from_slice(&[0xAB; 1000])?;
//! let shared = frame.freeze();
//! let clone = shared.clone();
//! assert_eq!(clone.ref_count(), 2);
//! # Ok::<(), pagebuf::Error>(())
//! ```
#![deny(missing_docs)]
// Unsafe code only where ARCHITECTURE.md lists it, each file allowing it at its top.
#![deny(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod alloc;
mod blocks;
pub mod buffer;
pub mod caps;
pub mod copy;
pub mod device;
pub mod direct;
mod error;
pub mod log;
pub mod memory;
pub mod pool;
pub mod ring;
pub mod sequential;
pub mod shared;
pub mod stream;
mod sync;

pub use alloc::{AllocatorStats, BufferAllocator, HeapAllocator, PageAllocator};
pub use buffer::{Buffer, BufferMut, MemoryOrigin};
pub use device::DeviceLimits;
pub use direct::DirectFile;
pub use error::{Error, Misalignment, Result};
pub use log::{LogReader, LogRecord, LogWriter, Lsn};
pub use memory::page_size;
pub use pool::{BufferPool, FramePool, Framing, PoolStats};
pub use ring::{Engine, IoRing, Pending, RingOptions};
#[cfg(not(loom))]
pub use shared::SharedPool;
pub use stream::{
    MediaFormat, Sample, SampleFlags, SampleReader, SampleWriter, StreamFormat, StreamKind,
};

/// The README's examples, compiled and run as doctests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
