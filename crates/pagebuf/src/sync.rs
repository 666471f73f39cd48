//! The atomics and locks the concurrency cores use, swapped for loom's model-checked
//! ones when built with `RUSTFLAGS="--cfg loom"` (see ARCHITECTURE.md, "Testing the
//! cores").

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{
    fence, AtomicBool, AtomicIsize, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};
#[cfg(loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard};
#[cfg(loom)]
pub(crate) use loom_parking::{current as current_thread, park, Thread};

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{
    fence, AtomicBool, AtomicIsize, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};
#[cfg(not(loom))]
pub(crate) use std::sync::{Mutex, MutexGuard};
#[cfg(not(loom))]
pub(crate) use std::thread::{current as current_thread, park, Thread};

/// Orders two sequentially consistent accesses to different atomics for loom, which
/// models SeqCst fences but treats SeqCst loads and read-modify-writes as AcqRel
/// (tokio-rs/loom#180): where a protocol relies on their single total order (a store
/// buffering, or Dekker, pattern), this puts the fence between them that loom can see.
/// Real builds rely on the accesses' own order and pay nothing.
#[inline(always)]
pub(crate) fn seqcst_order_for_loom() {
    #[cfg(loom)]
    fence(Ordering::SeqCst);
}

/// Parks until unparked or `timeout` passes (loom has no clock: it parks).
#[cfg(not(loom))]
pub(crate) fn park_timeout(timeout: std::time::Duration) {
    std::thread::park_timeout(timeout);
}

#[cfg(loom)]
pub(crate) fn park_timeout(_timeout: std::time::Duration) {
    loom::thread::yield_now();
}

/// std's park/unpark for loom models. loom's own `Thread::unpark` makes its target
/// runnable whatever it is blocked on, a mutex included (tokio-rs/loom#249, #418), so a
/// wake-up racing a waiter that is taking a lock ends the model with loom's "expected to
/// be able to acquire lock". std's unpark only leaves a token for the next `park`; this
/// keeps that token behind loom's own mutex and condition variable, so a wake-up that
/// never comes still shows up as a deadlock. (A flag that `park` polls with yields
/// instead exhausts loom's branch budget in three-thread models.)
#[cfg(loom)]
mod loom_parking {
    use loom::sync::{Arc, Condvar, Mutex};

    /// A handle that can unpark one thread (std's `Thread`, as far as pools use it).
    #[derive(Clone)]
    pub(crate) struct Thread(Arc<(Mutex<bool>, Condvar)>);

    impl Thread {
        /// Leaves the token and wakes the thread if it is parked.
        pub(crate) fn unpark(&self) {
            let (token, parked) = &*self.0;
            *token.lock().unwrap() = true;
            parked.notify_one();
        }
    }

    loom::thread_local! {
        static CURRENT: Thread = Thread(Arc::new((Mutex::new(false), Condvar::new())));
    }

    /// The calling thread's handle.
    pub(crate) fn current() -> Thread {
        CURRENT.with(Thread::clone)
    }

    /// Waits for the token, then takes it.
    pub(crate) fn park() {
        let me = current();
        let (token, parked) = &*me.0;
        let mut present = token.lock().unwrap();
        while !*present {
            present = parked.wait(present).unwrap();
        }
        *present = false;
    }
}
