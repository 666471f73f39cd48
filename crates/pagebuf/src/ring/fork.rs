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

#[cfg(all(test, not(loom)))]
mod tests {
    use crate::ring::completion::Completions;
    use crate::ring::op::Op;

    fn finish(_: Op, _: &[i32]) -> crate::Result<()> {
        Ok(())
    }

    #[test]
    fn a_child_forked_while_the_completion_table_is_locked_gets_errors_not_a_hang() {
        // A worker completing a transfer holds the table's lock; a fork at that instant
        // leaves the child a lock no thread of its own will release.
        let completions = Completions::default();
        let table = completions.lock_for_test();
        // SAFETY: the child only reads atomics, formats an error (malloc is fork-safe
        // in glibc) and leaves with `_exit`; the parent waits for it.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let refused = matches!(
                completions.poll_thread(0, finish),
                Some(Err(crate::Error::InvalidRequest(_)))
            ) && completions.is_done(0);
            completions.abandon(0);
            // SAFETY: ends the forked child without running the harness's exit handlers.
            unsafe { libc::_exit(if refused { 0 } else { 1 }) };
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut status = 0;
        loop {
            // SAFETY: polls the child forked above.
            let waited = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if waited == pid {
                break;
            }
            if std::time::Instant::now() > deadline {
                // SAFETY: the child is ours and hangs; reap it before failing.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, &mut status, 0);
                }
                panic!("the forked child hung on the completion table's lock");
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        drop(table);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "the forked child was not refused (status {status:#x})"
        );
    }
}
