//! Model-checks the frame pool's core with loom: the lock-free free list, the WAITING
//! hand-off between a releaser and a blocked waiter (a lost wake-up shows up as a
//! deadlock), `close` against a waiter, and the last-handle / last-frame teardown.
//!
//! Run: `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p pagebuf --release --test loom_pool`
#![cfg(loom)]

use loom::thread;
use pagebuf::pool::{FrameMemory, FramePool, Framing};
use pagebuf::Error;

fn pool(frames: usize) -> FramePool {
    FramePool::new(
        Framing::new(64, frames)
            .alignment(64)
            .memory(FrameMemory::Heap),
    )
    .unwrap()
}

#[test]
fn one_frame_is_never_held_twice() {
    loom::model(|| {
        let pool = pool(1);
        let other = pool.clone();
        let t = thread::spawn(move || {
            if let Some(mut frame) = other.try_allocate() {
                frame.extend_from_slice(&[1]).unwrap();
                assert_eq!(&frame[..], &[1]);
            }
        });
        if let Some(mut frame) = pool.try_allocate() {
            frame.extend_from_slice(&[2]).unwrap();
            assert_eq!(&frame[..], &[2]);
        }
        t.join().unwrap();
        assert_eq!(pool.stats().free, 1);
    });
}

#[test]
fn a_blocked_waiter_always_gets_the_released_frame() {
    loom::model(|| {
        let pool = pool(1);
        let held = pool.try_allocate().unwrap();
        let waiter = {
            let pool = pool.clone();
            thread::spawn(move || pool.allocate().map(|f| f.max_len()))
        };
        // Released concurrently with the waiter queueing: either the waiter pops it or
        // the release hands it over; never both, never neither (loom would deadlock).
        drop(held);
        assert_eq!(waiter.join().unwrap().unwrap(), 64);
        assert_eq!(pool.stats().free, 1);
    });
}

#[test]
fn close_wakes_a_waiter_or_it_gets_the_frame_first() {
    loom::model(|| {
        let pool = pool(1);
        let held = pool.try_allocate().unwrap();
        let waiter = {
            let pool = pool.clone();
            thread::spawn(move || pool.allocate().map(|_| ()))
        };
        pool.close();
        assert!(matches!(waiter.join().unwrap(), Err(Error::Closed)));
        drop(held);
        assert_eq!(pool.stats().free, 1);
    });
}

#[test]
fn last_handle_and_last_frame_race_to_free_the_pool_once() {
    loom::model(|| {
        let pool = pool(2);
        let a = pool.try_allocate().unwrap();
        let b = pool.try_allocate().unwrap();
        let t = thread::spawn(move || drop(a));
        let u = thread::spawn(move || drop(pool));
        drop(b);
        t.join().unwrap();
        u.join().unwrap();
    });
}
