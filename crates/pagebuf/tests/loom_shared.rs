//! Model-checks the shared pool's lock-free protocol with loom, in one process: the
//! frame table's owner words (a frame is never held by two takers, none is lost, a
//! dead process's frames are freed and no one else's) and the
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
        let first = pool.claim(0).unwrap().unwrap();
        let other = {
            let pool = pool.clone();
            thread::spawn(move || pool.claim(1).unwrap())
        };
        assert!(pool.release(first, 0));
        let mine = pool.claim(0).unwrap();
        let theirs = other.join().unwrap();
        assert!(
            mine.is_some() && theirs.is_some(),
            "two frames, two takers: {mine:?} {theirs:?}"
        );
        let (mine, theirs) = (mine.unwrap(), theirs.unwrap());
        assert_ne!(mine, theirs, "one frame held by two takers");
        assert_eq!(pool.claim(0).unwrap(), None);
        assert!(
            !pool.release(theirs, 0),
            "freed by a process that does not hold it"
        );
        assert!(pool.release(mine, 0));
        assert!(pool.release(theirs, 1));
        let mut all = vec![
            pool.claim(0).unwrap().unwrap(),
            pool.claim(0).unwrap().unwrap(),
        ];
        all.sort_unstable();
        assert_eq!(all, [0, 1]);
    });
}

#[test]
fn a_survivor_frees_a_dead_processs_frames_while_others_claim() {
    model(3, || {
        let pool = Arc::new(Model::new(3));
        // Process 1 holds two frames and dies; process 0 claims and returns meanwhile,
        // and a survivor (process 2) reclaims: every frame comes back, none twice.
        let dead = [
            pool.claim(1).unwrap().unwrap(),
            pool.claim(1).unwrap().unwrap(),
        ];
        let claimer = {
            let pool = pool.clone();
            thread::spawn(move || {
                let mine = pool.claim(0).unwrap().unwrap();
                assert!(
                    !dead.contains(&mine),
                    "a frame of a process not yet reclaimed"
                );
                assert!(pool.release(mine, 0));
                pool.claim(0).unwrap()
            })
        };
        assert_eq!(pool.reclaim(1), 2);
        let held = claimer.join().unwrap().expect("frames were free");
        let rest: Vec<u32> = (0..2).map(|_| pool.claim(2).unwrap().unwrap()).collect();
        assert!(!rest.contains(&held), "a frame held twice");
        assert_eq!(pool.claim(2).unwrap(), None);
    });
}

#[test]
fn frames_handed_over_reach_the_receiver_exactly_once_and_in_order() {
    model(3, || {
        let pool = Arc::new(Model::new(2));
        let sender = {
            let pool = pool.clone();
            thread::spawn(move || {
                let first = pool.claim(0).unwrap().unwrap();
                let second = pool.claim(0).unwrap().unwrap();
                pool.send(first, 0).unwrap();
                pool.send(second, 0).unwrap();
                [first, second]
            })
        };
        let mut got = Vec::new();
        while got.len() < 2 {
            match pool.receive(1).unwrap() {
                Some(index) => got.push(index),
                None => thread::yield_now(),
            }
        }
        let sent = sender.join().unwrap();
        assert_eq!(got, sent, "out of order, or not what was sent");
        assert_eq!(pool.receive(1).unwrap(), None);
        // The receiver holds them now, and only it can free them.
        assert!(!pool.release(got[0], 0));
        assert!(pool.release(got[0], 1) && pool.release(got[1], 1));
    });
}

#[test]
fn racing_senders_and_receivers_lose_and_duplicate_nothing() {
    model(2, || {
        let pool = Arc::new(Model::new(2));
        let theirs = pool.claim(2).unwrap().unwrap();
        let mine = pool.claim(0).unwrap().unwrap();
        let sender = {
            let pool = pool.clone();
            thread::spawn(move || pool.send(theirs, 2).unwrap())
        };
        let receiver = {
            let pool = pool.clone();
            thread::spawn(move || pool.receive(1).unwrap())
        };
        pool.send(mine, 0).unwrap();
        // Receiving here too, while the other receiver and the sender run.
        let mut here: Vec<u32> = pool.receive(3).unwrap().into_iter().collect();
        sender.join().unwrap();
        let there: Vec<u32> = receiver.join().unwrap().into_iter().collect();
        while let Some(index) = pool.receive(3).unwrap() {
            here.push(index);
        }
        assert_eq!(pool.receive(3).unwrap(), None);
        // Each frame is held by the one process that received it.
        for &index in &there {
            assert!(
                pool.release(index, 1),
                "frame {index} not held by its receiver"
            );
        }
        for &index in &here {
            assert!(
                pool.release(index, 3),
                "frame {index} not held by its receiver"
            );
        }
        let mut all = [here, there].concat();
        all.sort_unstable();
        assert_eq!(all, [0, 1]);
    });
}
