//! Pools shared between processes without a copy (the KS allocator's frames in memory
//! the host supplies, here: a sealed memfd that every process maps).
//!
//! * [`SharedPool`]: frames and their bookkeeping in one sealed memfd; `create`,
//!   `attach(fd)`, the allocate forms and [`PoolStats`](crate::PoolStats) of a
//!   [`FramePool`](crate::FramePool); frames handed from one process to another
//!   through a ring of tokens (`hand_over` / `receive`); the memfd passed over a Unix
//!   socket (`send_to` / `receive_from`).
//!
//! The memfd's byte layout (version 1) is in `layout.rs`; ARCHITECTURE.md has the map.

mod frames;
mod free_list;
mod layout;
mod liveness;
mod memfd;
mod pool;
mod process;
mod ring;
mod socket;

pub use pool::SharedPool;
