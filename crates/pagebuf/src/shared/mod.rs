//! Pools shared between processes without a copy (the KS allocator's frames in memory
//! the host supplies, here: a sealed memfd that every process maps).
//!
//! * [`SharedPool`]: frames and their bookkeeping in one sealed memfd; `create`,
//!   `attach(fd)`, the allocate forms and [`PoolStats`](crate::PoolStats) of a
//!   [`FramePool`](crate::FramePool).
//!
//! The memfd's byte layout (version 1) is in `layout.rs`; ARCHITECTURE.md has the map.

mod frames;
mod free_list;
mod layout;
mod liveness;
mod memfd;
mod pool;
mod process;
mod socket;

pub use pool::SharedPool;
