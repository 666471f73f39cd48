//! Asymmetric memory barriers: a nearly free *light* barrier for the fast path, paired
//! with an expensive *heavy* one (`membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`) for
//! the rare slow path.
//!
//! The pairing gives Dekker-style mutual visibility: if thread A does
//! `store(x); light(); load(y)` and thread B does `store(y); heavy(); load(x)`, then A
//! sees B's `y` or B sees A's `x` (or both). `membarrier` makes every CPU running a
//! thread of this process execute a full barrier before it returns (and a thread not
//! running passes one when it is switched out), so A's compiler-ordered store cannot
//! still be sitting in a store buffer when B loads. This is the scheme of Linux RCU,
//! folly's `asymmetricHeavyBarrier` and hazard-pointer libraries.
//!
//! Where `membarrier` is unavailable (old kernels, seccomp sandboxes) both sides fall
//! back to `fence(SeqCst)`, which is always correct, only slower. Under loom both are
//! `fence(SeqCst)`, which loom can model.

#[cfg(not(loom))]
use std::sync::atomic::{compiler_fence, AtomicBool, Ordering};
#[cfg(not(loom))]
use std::sync::OnceLock;

use crate::sync::{fence, Ordering as SyncOrdering};

#[cfg(not(loom))]
static EXPEDITED: AtomicBool = AtomicBool::new(false);

/// Registers this process for expedited membarriers (once). Call before any pool is
/// shared, so every thread that later runs a light barrier sees the outcome.
pub(crate) fn init() {
    #[cfg(not(loom))]
    {
        static REGISTERED: OnceLock<bool> = OnceLock::new();
        let ok = *REGISTERED.get_or_init(|| {
            use rustix::thread::{membarrier, MembarrierCommand};
            membarrier(MembarrierCommand::RegisterPrivateExpedited).is_ok()
        });
        EXPEDITED.store(ok, Ordering::Relaxed);
    }
}

/// The fast side: only stops the compiler from reordering (when membarrier works).
#[inline]
pub(crate) fn light() {
    #[cfg(not(loom))]
    if EXPEDITED.load(Ordering::Relaxed) {
        compiler_fence(Ordering::SeqCst);
        return;
    }
    fence(SyncOrdering::SeqCst);
}

/// The slow side: a barrier on every CPU running one of our threads.
pub(crate) fn heavy() {
    #[cfg(not(loom))]
    if EXPEDITED.load(Ordering::Relaxed) {
        use rustix::thread::{membarrier, MembarrierCommand};
        if membarrier(MembarrierCommand::PrivateExpedited).is_ok() {
            return;
        }
        // Registered but refused: keep correctness by degrading both sides.
        EXPEDITED.store(false, Ordering::SeqCst);
    }
    fence(SyncOrdering::SeqCst);
}
