//! When a frame pool's memory is freed: when the last `FramePool` handle *and* the
//! last frame are gone, whichever goes last.
//!
//! `handles` counts `FramePool` handles. When the last one drops, the free list is
//! marked orphaned in one atomic step that also says how many frames were home;
//! `remaining` then counts the frames still out, each of whose releases (finding the
//! list orphaned) decrements it. The one that reaches zero, dropper or releaser, frees
//! the pool. `remaining` may dip below zero when releases beat the dropper's addition;
//! it reaches zero exactly once. (An `Arc` per frame out would cost an atomic
//! read-modify-write on every allocation and release; this costs one per handle.)
#![allow(unsafe_code)] // listed in ARCHITECTURE.md, "Where `unsafe` lives"

use std::ptr::NonNull;

use super::core::PoolShared;
use super::frame_pool::FramePool;
use crate::sync::{fence, Ordering};

impl PoolShared {
    /// One of the frames that were out when the last handle dropped is back.
    ///
    /// # Safety
    /// Called once per such frame; `self` is not used by the caller afterwards.
    #[cold]
    #[inline(never)]
    pub(super) unsafe fn frame_came_home_to_orphan(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            // SAFETY: `remaining` reached zero: no handle, no frame out, no one else
            // will touch the pool.
            unsafe { free_pool(NonNull::from(self)) };
        }
    }
}

/// Frees a pool.
///
/// # Safety
/// `pool` came from `Box::into_raw` in `FramePool::new`, and nothing refers to it.
pub(super) unsafe fn free_pool(pool: NonNull<PoolShared>) {
    fence(Ordering::Acquire);
    // SAFETY: per the contract.
    drop(unsafe { Box::from_raw(pool.as_ptr()) });
}

impl Clone for FramePool {
    fn clone(&self) -> FramePool {
        // Relaxed, as for Arc: a new handle is made from an existing one.
        self.shared().handles.fetch_add(1, Ordering::Relaxed);
        FramePool {
            shared: self.shared,
        }
    }
}

impl Drop for FramePool {
    fn drop(&mut self) {
        let shared = self.shared();
        if shared.handles.fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        fence(Ordering::Acquire);
        // The last handle: nothing can allocate any more. Bring parked frames home (and
        // keep owners off their slots for good), then count the frames still out.
        // SAFETY: reclaimed frames are ours to give back; the pool is alive.
        unsafe { shared.give_back_all(shared.threads.close()) };
        let home = shared.free.orphan();
        let out = (shared.slots.len() - home) as isize;
        if shared.remaining.fetch_add(out, Ordering::AcqRel) + out == 0 {
            // SAFETY: every frame is home and this was the last handle.
            unsafe { free_pool(self.shared) };
        }
    }
}
