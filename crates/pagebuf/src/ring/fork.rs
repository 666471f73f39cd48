//! Fork detection: a ring belongs to the process that made it. A forked child shares
//! neither its submission queue (the ring's memory is not inherited: `MADV_DONTFORK`)
//! nor its threads (they do not exist in the child), so every ring counts the forks
//! since it was made and refuses to work, with an error, in a child.
#![allow(unsafe_code)] // listed in ARCHITECTURE.md, "Where `unsafe` lives"

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

/// Forks this process has gone through (each child adds one).
static FORKS: AtomicU64 = AtomicU64::new(0);
static WATCH: Once = Once::new();

extern "C" fn in_child() {
    // Async-signal-safe: one atomic add.
    FORKS.fetch_add(1, Ordering::Relaxed);
}

/// The forks so far; the first call starts counting them.
pub(crate) fn generation() -> u64 {
    WATCH.call_once(|| {
        // SAFETY: `in_child` only adds to an atomic, which is allowed in a forked child
        // of a threaded process; a registration that fails leaves forks uncounted, as
        // they were before.
        unsafe {
            libc::pthread_atfork(None, None, Some(in_child));
        }
    });
    FORKS.load(Ordering::Relaxed)
}
