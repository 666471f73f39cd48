//! Pools shared between processes without a copy (the KS allocator's frames in memory
//! the host supplies, here: a sealed memfd that every process maps).
//!
//! * [`SharedPool`]: frames and their bookkeeping in one sealed memfd; `create`,
//!   `attach(fd)`, the allocate forms and [`PoolStats`](crate::PoolStats) of a
//!   [`FramePool`](crate::FramePool); frames handed from one process to another
//!   through a ring of tokens (`hand_over` / `receive`); the memfd passed over a Unix
//!   socket (`send_to` / `receive_from`).
//!
//! The memfd's byte layout (version 2) is in `layout.rs`; ARCHITECTURE.md has the map.

// Under `--cfg loom` only the lock-free protocol is built (the frame table and the ring
// over the layout's words), for the model in tests/loom_shared.rs; the memfd, the
// futex and the processes are real-system parts loom cannot run.
#[cfg(not(loom))]
mod frames;
mod hand_over;
// Under loom only part of the layout is modelled; the rest is unused there.
#[cfg_attr(loom, allow(dead_code))]
mod frame_table;
#[cfg_attr(loom, allow(dead_code))]
mod layout;
#[cfg(not(loom))]
mod lease;
#[cfg(not(loom))]
mod liveness;
#[cfg(not(loom))]
mod memfd;
#[cfg(loom)]
#[doc(hidden)]
pub mod model;
// The same words in ordinary memory, for the protocol's unit tests.
#[cfg(all(test, not(loom)))]
mod model;
#[cfg(not(loom))]
mod pool;
#[cfg(not(loom))]
mod process;
#[cfg_attr(loom, allow(dead_code))]
mod ring;
#[cfg(not(loom))]
mod socket;

#[cfg(not(loom))]
pub use pool::SharedPool;
#[cfg(not(loom))]
pub(crate) use {
    frames::lease_of,
    lease::{lease_at, Lease},
};
