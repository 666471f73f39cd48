//! Model-checks the buffer refcount core with loom: every interleaving of clones and
//! drops on two threads releases the memory exactly once, and `try_into_mut` succeeds
//! only for the last reference.
//!
//! Run: `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p pagebuf --release --test loom_buffer`
#![cfg(loom)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use loom::thread;
use pagebuf::{Buffer, BufferMut};

/// An owner whose drop is counted: the release of the memory.
struct Counted(Vec<u8>, Arc<AtomicUsize>);
impl AsMut<[u8]> for Counted {
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}
impl Drop for Counted {
    fn drop(&mut self) {
        self.1.fetch_add(1, Ordering::SeqCst);
    }
}

fn counted() -> (BufferMut, Arc<AtomicUsize>) {
    let drops = Arc::new(AtomicUsize::new(0));
    (
        BufferMut::from_owner(Counted(vec![1, 2, 3, 4], drops.clone())),
        drops,
    )
}

#[test]
fn concurrent_drops_release_exactly_once() {
    loom::model(|| {
        let (buf, drops) = counted();
        let shared = buf.freeze();
        let other = shared.clone();
        let slice = shared.slice(1..3).unwrap();
        let t = thread::spawn(move || {
            assert_eq!(&other[..], &[1, 2, 3, 4]);
            drop(other);
        });
        drop(shared);
        assert_eq!(&slice[..], &[2, 3]);
        drop(slice);
        t.join().unwrap();
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    });
}

#[test]
fn try_into_mut_races_with_a_drop() {
    loom::model(|| {
        let (buf, drops) = counted();
        let shared = buf.freeze();
        let other = shared.clone();
        let t = thread::spawn(move || drop(other));
        let outcome: Result<BufferMut, Buffer> = shared.try_into_mut();
        match outcome {
            // Succeeding means the other thread's drop already happened.
            Ok(mut unique) => {
                unique[0] = 9;
                drop(unique);
                t.join().unwrap();
            }
            Err(shared) => {
                t.join().unwrap();
                let mut unique = shared.try_into_mut().expect("unique after the join");
                unique[0] = 9;
            }
        }
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    });
}
