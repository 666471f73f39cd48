//! Model-checks the shared pool's lock-free protocol with loom, in one process: the
//! shared free list (a frame is never handed to two takers, none is lost) and the
//! hand-over ring (every token put is taken exactly once, in order for one putter).
//! The memfd, the futex and the process table are not modelled (loom cannot run them);
//! tests/shared_pool.rs covers them with real processes.
//!
//! Run: `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p pagebuf --release --test loom_shared`
#![cfg(loom)]

use std::sync::Arc;

use loom::thread;
use pagebuf::shared::model::Model;

fn model(preemptions: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(preemptions);
    builder.check(f);
}

#[test]
fn two_takers_never_get_the_same_frame_and_nothing_is_lost() {
    model(3, || {
        let pool = Arc::new(Model::new(2));
        // One frame goes back while the other taker races: a frame can be taken again
        // after it was returned, never while someone holds it.
        let first = pool.pop().unwrap().unwrap();
        let other = {
            let pool = pool.clone();
            thread::spawn(move || pool.pop().unwrap())
        };
        pool.push(first);
        let mine = pool.pop().unwrap();
        let theirs = other.join().unwrap();
        let held: Vec<u32> = [mine, theirs].into_iter().flatten().collect();
        assert_eq!(held.len(), 2, "two frames, two takers: both get one");
        assert_ne!(held[0], held[1], "one frame held by two takers");
        assert_eq!(pool.pop().unwrap(), None);
        for index in held {
            pool.push(index);
        }
        let mut all = vec![pool.pop().unwrap().unwrap(), pool.pop().unwrap().unwrap()];
        all.sort_unstable();
        assert_eq!(all, [0, 1]);
    });
}

#[test]
fn tokens_reach_the_taker_exactly_once_and_in_order() {
    model(3, || {
        let ring = Arc::new(Model::new(2));
        let putter = {
            let ring = ring.clone();
            thread::spawn(move || {
                ring.put(1).unwrap();
                ring.put(0).unwrap();
            })
        };
        let mut got = Vec::new();
        while got.len() < 2 {
            match ring.take().unwrap() {
                Some(token) => got.push(token),
                None => thread::yield_now(),
            }
        }
        putter.join().unwrap();
        assert_eq!(got, [1, 0]);
        assert_eq!(ring.take().unwrap(), None);
    });
}

#[test]
fn racing_putters_and_a_taker_lose_and_duplicate_nothing() {
    model(2, || {
        let ring = Arc::new(Model::new(2));
        let putter = {
            let ring = ring.clone();
            thread::spawn(move || ring.put(0).unwrap())
        };
        let taker = {
            let ring = ring.clone();
            thread::spawn(move || ring.take().unwrap())
        };
        ring.put(1).unwrap();
        putter.join().unwrap();
        let mut all: Vec<u32> = taker.join().unwrap().into_iter().collect();
        while let Some(token) = ring.take().unwrap() {
            all.push(token);
        }
        all.sort_unstable();
        assert_eq!(all, [0, 1]);
    });
}
