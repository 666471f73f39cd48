//! `PoolStats`: what a pool says about itself. `BufferPoolStats` (in
//! `buffer_pool.rs`) uses the same names with the same meaning for the fields the two
//! share.

/// A snapshot of a pool's state and history.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStats {
    /// Frames in the pool.
    pub frames: usize,
    /// Bytes of data per frame.
    pub frame_size: usize,
    /// Frames free now.
    pub free: usize,
    /// Frames out now (`frames - free`).
    pub in_use: usize,
    /// The most frames that were out at once.
    pub high_water: usize,
    /// Frames handed out so far.
    pub allocations: u64,
    /// Times an allocation found no frame free.
    pub exhausted: u64,
    /// Allocations that had to wait for a frame.
    pub waits: u64,
    /// Threads and tasks waiting now.
    pub waiting: usize,
    /// Whether the pool was closed.
    pub closed: bool,
}
