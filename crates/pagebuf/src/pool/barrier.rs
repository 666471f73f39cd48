//! Asymmetric memory barriers: a free *light* barrier for the fast path, paired with an
//! expensive *heavy* one (`membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`) for the rare
//! slow path.
//!
//! The pairing gives Dekker-style mutual visibility: if thread A does
//! `store(x); light(); load(y)` and thread B does `store(y); heavy(); load(x)`, then A
//! sees B's `y` or B sees A's `x` (or both). `membarrier` makes every CPU running a
//! thread of this process execute a full barrier before it returns (and a thread not
//! running passes one when it is switched out), so A's compiler-ordered store cannot
//! still be sitting in a store buffer when B loads. This is the scheme of Linux RCU,
//! folly's `asymmetricHeavyBarrier` and hazard-pointer libraries.
//!
//! The light side is only a compiler fence, with no check on the fast path: a pool
//! parks frames on threads only where `init` registered this process for expedited
//! membarriers. Should the kernel refuse one later all the same (a seccomp filter
//! installed after the first pool), `heavy` says so and its caller leaves other threads'
//! slots alone (`thread_cache.rs`). Under loom both sides are `fence(SeqCst)`, which
//! loom can model.

#[cfg(not(loom))]
use std::sync::atomic::{compiler_fence, AtomicBool, Ordering};
#[cfg(not(loom))]
use std::sync::OnceLock;

#[cfg(loom)]
use crate::sync::{fence, Ordering};

#[cfg(not(loom))]
static EXPEDITED: AtomicBool = AtomicBool::new(false);

/// Registers this process for expedited membarriers (once); whether it could. Call
/// before any thread parks a frame.
pub(crate) fn init() -> bool {
    #[cfg(not(loom))]
    {
        static REGISTERED: OnceLock<bool> = OnceLock::new();
        *REGISTERED.get_or_init(|| {
            use rustix::thread::{membarrier, MembarrierCommand};
            let ok = membarrier(MembarrierCommand::RegisterPrivateExpedited).is_ok();
            EXPEDITED.store(ok, Ordering::Relaxed);
            ok
        })
    }
    #[cfg(loom)]
    true
}

/// The fast side: only stops the compiler from reordering.
#[inline(always)]
pub(crate) fn light() {
    #[cfg(not(loom))]
    compiler_fence(Ordering::SeqCst);
    #[cfg(loom)]
    fence(Ordering::SeqCst);
}

/// What the heavy side achieved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Heavy {
    /// Every thread of this process passed a full barrier.
    Fenced,
    /// The kernel refused the barrier: light barriers pair with nothing.
    Refused,
}

/// The slow side: a barrier on every CPU running one of our threads.
pub(crate) fn heavy() -> Heavy {
    #[cfg(not(loom))]
    {
        use rustix::thread::{membarrier, MembarrierCommand};
        if !EXPEDITED.load(Ordering::Relaxed) {
            return Heavy::Refused;
        }
        if membarrier(MembarrierCommand::PrivateExpedited).is_ok() {
            return Heavy::Fenced;
        }
        // Registered but refused since: refused from now on.
        EXPEDITED.store(false, Ordering::Relaxed);
        Heavy::Refused
    }
    #[cfg(loom)]
    {
        fence(Ordering::SeqCst);
        Heavy::Fenced
    }
}
