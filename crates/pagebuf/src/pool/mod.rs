//! Frame pools (the reference's KS allocator, `KSALLOCATOR_DISPATCH` /
//! `PFNKSDEFAULTALLOCATE`), with the blocking, closing and statistics of DirectShow's
//! `IMemAllocator` and GStreamer's `GstBufferPool`.
//!
//! * [`Framing`] says what a pool holds; [`FramePool`] holds it: a fixed number of
//!   equal, aligned frames in one block, allocated up front, handed out lock-free
//!   (a frame dropped on a thread that allocates is parked there for its next
//!   allocation, without a single atomic read-modify-write).
//! * [`BufferPool`]: page-aligned buffers of any size, recycled in size classes under a
//!   byte budget; the default allocator of the sample writer and reader.
//! * [`FrameMemory`] says where a pool's frames live: anonymous pages (the default),
//!   the heap, or memory the host supplies ([`HostMemory`], the KS allocator's
//!   driver-supplied frames).
//!
//! Invariants (tested in `tests/pool_*.rs` and modelled with loom): frames never
//! overlap; every frame honours the alignment; no more than `frames` are out at once;
//! `try_allocate` is `None` only when every frame is out; a frame returns exactly once,
//! from any thread; a waiter is woken only with a frame in hand (or by `close`).

mod allocate_future;
mod buffer_pool;
mod core;
mod frame_block;
mod frame_pool;
mod framing;
mod free_list;
mod host_memory;
mod lifetime;
mod poison;
mod stats;
mod thread_cache;
mod wait_queue;
mod waiting;

pub use allocate_future::AllocateFuture;
pub(crate) use buffer_pool::class_size;
pub use buffer_pool::{BufferFuture, BufferPool, BufferPoolStats, ClassStats};
pub use frame_pool::FramePool;
pub use framing::{FrameMemory, Framing, MAX_FRAMES};
pub use host_memory::HostMemory;
pub use stats::PoolStats;
