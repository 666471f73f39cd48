//! Model-checks the frame pool's core with loom: the lock-free free list, the
//! per-thread parking slots (a frame parks in the slot of the thread that took it, when
//! that thread drops it) and their reclaim, the WAITING hand-off between a
//! releaser and a blocked waiter (a lost wake-up shows up as a deadlock), `close`
//! against a waiter and against parking, a park displacing a parked frame, the
//! last-handle / last-frame teardown (against a release and against a park), and the
//! returned list adopted onto the free list while another thread pushes and pops there.
//!
//! Threads that allocate stay alive until the checks are done: loom's `join` returns
//! before a thread's thread-local destructors have run (std's waits for them), and one
//! of those destructors may be handing a parked frame back.
//!
//! Run: `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p pagebuf --release --test loom_pool`
#![cfg(loom)]

use std::sync::Arc;

use loom::sync::atomic::{AtomicBool, Ordering};
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

/// A model explored with at most `preemptions` preemptions per execution.
fn bounded(preemptions: usize) -> loom::model::Builder {
    let mut model = loom::model::Builder::new();
    model.preemption_bound = Some(preemptions);
    model
}

/// Takes every free frame and checks there are exactly `frames` of them, all distinct
/// (a frame linked twice would come out twice), then drops them.
fn assert_all_free(pool: &FramePool, frames: usize) {
    let taken: Vec<_> = std::iter::from_fn(|| pool.try_allocate())
        .take(frames + 1)
        .collect();
    assert_eq!(taken.len(), frames, "every frame free once, no more");
    let mut at: Vec<_> = taken.iter().map(|f| f.as_ptr()).collect();
    at.sort();
    at.dedup();
    assert_eq!(at.len(), frames, "a frame handed out twice");
}

/// A flag one thread raises and another waits for.
#[derive(Clone)]
struct Signal(Arc<AtomicBool>);

impl Signal {
    fn new() -> Signal {
        Signal(Arc::new(AtomicBool::new(false)))
    }
    fn raise(&self) {
        self.0.store(true, Ordering::Release);
    }
    fn wait(&self) {
        while !self.0.load(Ordering::Acquire) {
            thread::yield_now();
        }
    }
}

#[test]
fn one_frame_is_never_held_twice_and_never_lost() {
    loom::model(|| {
        let pool = pool(1);
        let (done, checked) = (Signal::new(), Signal::new());
        let t = thread::spawn({
            let (pool, done, checked) = (pool.clone(), done.clone(), checked.clone());
            move || {
                if let Some(mut frame) = pool.try_allocate() {
                    frame.extend_from_slice(&[1]).unwrap();
                    assert_eq!(&frame[..], &[1]);
                } // dropped here: parked on this thread or sent home
                done.raise();
                checked.wait();
            }
        });
        if let Some(mut frame) = pool.try_allocate() {
            frame.extend_from_slice(&[2]).unwrap();
            assert_eq!(&frame[..], &[2]);
        }
        done.wait();
        // Wherever the frame is (home, or parked on either thread), it is reachable.
        let again = pool.try_allocate();
        assert!(again.is_some(), "the only frame is free but was not found");
        drop(again);
        checked.raise();
        t.join().unwrap();
    });
}

#[test]
fn a_blocked_waiter_gets_a_frame_its_owner_parks_concurrently() {
    loom::model(|| {
        let pool = pool(1);
        let (allocated, served) = (Signal::new(), Signal::new());
        let owner = thread::spawn({
            let (pool, allocated, served) = (pool.clone(), allocated.clone(), served.clone());
            move || {
                let frame = pool.try_allocate().unwrap(); // this thread gets a slot
                allocated.raise();
                drop(frame); // races the waiter: parked, or handed over
                served.wait();
            }
        });
        allocated.wait();
        // Must not sleep forever: either the owner sees WAITING and hands the frame
        // over, or the waiter's reclaim finds it parked (loom reports a deadlock).
        let frame = pool.allocate().unwrap();
        assert_eq!(frame.max_len(), 64);
        drop(frame);
        served.raise();
        owner.join().unwrap();
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
        // the release hands it over; never both, never neither.
        drop(held);
        assert_eq!(waiter.join().unwrap().unwrap(), 64);
    });
}

#[test]
fn close_wakes_a_waiter_with_closed() {
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

#[test]
fn a_pop_suspended_across_pop_pop_push_takes_no_held_frame() {
    // The ABA pattern under a suspended pop: while `t` has read head = A and A's link
    // B, this thread pops A and B and pushes A back. Only the tag in the head word
    // makes `t`'s CAS fail; without it, `t` would install B, which this thread holds.
    // Two preemptions suffice for the pattern and keep the model to seconds.
    bounded(2).check(|| {
        let pool = pool(3);
        // `t` stays alive until the checks are done (see the module docs): the frame it
        // hands over parks in its slot when this thread drops it.
        let theirs = Arc::new(loom::sync::Mutex::new(None));
        let (taken, checked) = (Signal::new(), Signal::new());
        let t = thread::spawn({
            let (pool, theirs) = (pool.clone(), theirs.clone());
            let (taken, checked) = (taken.clone(), checked.clone());
            move || {
                *theirs.lock().unwrap() = pool.try_allocate().map(|f| (f.as_ptr() as usize, f));
                taken.raise();
                checked.wait();
            }
        });
        let a = pool.try_allocate();
        let b = pool.try_allocate();
        let c = pool.try_allocate();
        drop(c); // fills this thread's parking slot...
        drop(a); // ...so this one is pushed back onto the list
        taken.wait();
        let theirs = theirs.lock().unwrap().take();
        if let (Some((at, _)), Some(b)) = (&theirs, &b) {
            assert_ne!(*at, b.as_ptr() as usize, "a frame held twice");
        }
        drop(theirs);
        drop(b);
        assert_all_free(&pool, 3);
        checked.raise();
        t.join().unwrap();
    });
}

#[test]
fn a_waiter_gets_the_frame_a_thread_that_never_allocates_returns() {
    loom::model(|| {
        let pool = pool(1);
        let held = pool.try_allocate().unwrap();
        // The releasing thread never allocated: its drop parks the frame in this
        // thread's slot (the frame's home), racing this thread's wait, which must find
        // it there or be handed it.
        let releaser = thread::spawn(move || drop(held));
        assert_eq!(pool.allocate().unwrap().max_len(), 64);
        releaser.join().unwrap();
    });
}

#[test]
fn frames_returned_elsewhere_are_taken_back_once_each() {
    loom::model(|| {
        let pool = pool(2);
        let a = pool.try_allocate().unwrap();
        let b = pool.try_allocate().unwrap();
        let releaser = thread::spawn(move || {
            drop(a);
            drop(b);
        });
        // Allocations racing the returns: whatever they take is a frame nobody else
        // holds, and once the returns are done both frames come back.
        let first = pool.try_allocate();
        let second = pool.try_allocate();
        releaser.join().unwrap();
        if let (Some(x), Some(y)) = (&first, &second) {
            assert_ne!(x.as_ptr(), y.as_ptr());
        }
        let taken = usize::from(first.is_some()) + usize::from(second.is_some());
        let more: Vec<_> = std::iter::from_fn(|| pool.try_allocate()).collect();
        assert_eq!(taken + more.len(), 2, "every frame is free or held, once");
    });
}

#[test]
fn two_allocators_waiting_on_a_thread_that_never_allocates_both_get_a_frame() {
    // Three threads: one returning both frames (one parks in this thread's slot, the
    // other goes onto the returned list), one blocked in
    // `allocate`, and this one allocating too. The returned list's pushes race both
    // allocators' adoptions and WAITING; with WAITING left off the returned word this
    // deadlocks within bound 3. Three preemptions take about 25 s; unbounded does not end.
    bounded(3).check(|| {
        let pool = pool(2);
        let a = pool.try_allocate().unwrap();
        let b = pool.try_allocate().unwrap();
        let (dropped, checked) = (Signal::new(), Signal::new());
        let releaser = thread::spawn(move || {
            drop(a);
            drop(b);
        });
        let waiter = thread::spawn({
            let (pool, dropped, checked) = (pool.clone(), dropped.clone(), checked.clone());
            move || {
                drop(pool.allocate().unwrap());
                dropped.raise();
                checked.wait();
            }
        });
        drop(pool.allocate().unwrap());
        releaser.join().unwrap();
        dropped.wait();
        // Both frames are free again, wherever they went (a slot, either list).
        assert_all_free(&pool, 2);
        checked.raise();
        waiter.join().unwrap();
    });
}

#[test]
fn a_frame_dropped_elsewhere_is_taken_once_by_its_taker_or_a_reclaimer() {
    // This thread takes a frame (its slot is the frame's home) and another thread drops
    // it (the slow way: not its slot); meanwhile this thread allocates and a third thread
    // empties the list and reclaims. Whoever gets the frame holds it alone, and
    // afterwards both frames are free.
    bounded(3).check(|| {
        let pool = pool(2);
        let mine = pool.try_allocate().unwrap();
        let (done, checked) = (Signal::new(), Signal::new());
        let dropper = thread::spawn(move || drop(mine));
        let other = thread::spawn({
            let (pool, done, checked) = (pool.clone(), done.clone(), checked.clone());
            move || {
                let held: Vec<_> = std::iter::from_fn(|| pool.try_allocate())
                    .take(2)
                    .map(|mut f| {
                        f.extend_from_slice(&[7]).unwrap();
                        f
                    })
                    .collect();
                thread::yield_now();
                assert!(held.iter().all(|f| f[..] == [7]), "a frame held twice");
                drop(held);
                done.raise();
                checked.wait();
            }
        });
        if let Some(mut again) = pool.try_allocate() {
            again.extend_from_slice(&[9]).unwrap();
            thread::yield_now();
            assert_eq!(&again[..], &[9], "a frame held twice");
        }
        dropper.join().unwrap();
        done.wait();
        assert_all_free(&pool, 2);
        checked.raise();
        other.join().unwrap();
    });
}

#[test]
fn a_waiter_gets_a_frame_its_taker_drops_on_a_third_thread() {
    // The frame's home is this thread's slot; another thread drops it while a third
    // blocks in `allocate`: the drop hands it over or the waiter finds it (loom reports
    // a deadlock otherwise).
    loom::model(|| {
        let pool = pool(1);
        let held = pool.try_allocate().unwrap();
        let (served, checked) = (Signal::new(), Signal::new());
        let waiter = thread::spawn({
            let (pool, served, checked) = (pool.clone(), served.clone(), checked.clone());
            move || {
                assert_eq!(pool.allocate().unwrap().max_len(), 64);
                served.raise();
                checked.wait();
            }
        });
        let dropper = thread::spawn(move || drop(held));
        dropper.join().unwrap();
        served.wait();
        checked.raise();
        waiter.join().unwrap();
    });
}

#[test]
fn close_racing_its_owners_park_and_take_strands_no_frame() {
    // This thread parks a frame in its slot and allocates again while another thread
    // closes the pool (keeping every slot off): after close nothing is handed out, and
    // every frame is free (none stranded in a slot, none given back twice).
    bounded(3).check(|| {
        let pool = pool(2);
        let mine = pool.try_allocate().unwrap();
        let closer = thread::spawn({
            let pool = pool.clone();
            move || pool.close()
        });
        drop(mine);
        let got = pool.try_allocate();
        closer.join().unwrap();
        assert!(
            pool.try_allocate().is_none(),
            "a closed pool handed out a frame"
        );
        drop(got);
        let stats = pool.stats();
        assert_eq!((stats.free, stats.in_use), (2, 0), "{stats:?}");
    });
}

#[test]
fn a_frame_parked_over_another_against_a_waiter_loses_neither() {
    // This thread drops two frames: the first parks, the second parks in its place and
    // sends the first to the free list, while another thread blocks in `allocate`. The
    // waiter gets a frame (loom reports a deadlock otherwise), and then both are free,
    // each once.
    bounded(3).check(|| {
        let pool = pool(2);
        let first = pool.try_allocate().unwrap();
        let second = pool.try_allocate().unwrap();
        let (served, checked) = (Signal::new(), Signal::new());
        let waiter = thread::spawn({
            let (pool, served, checked) = (pool.clone(), served.clone(), checked.clone());
            move || {
                let mut frame = pool.allocate().unwrap();
                frame.extend_from_slice(&[5]).unwrap();
                thread::yield_now();
                assert_eq!(&frame[..], &[5], "a frame held twice");
                drop(frame);
                served.raise();
                checked.wait();
            }
        });
        drop(first);
        drop(second);
        served.wait();
        assert_all_free(&pool, 2);
        checked.raise();
        waiter.join().unwrap();
    });
}

#[test]
fn a_park_racing_the_last_handle_frees_the_pool_once() {
    // The owner drops its handle, then its frame (a park, and the WAITING read after
    // it), while this thread drops the last handle (a reclaim of the parked frame, and
    // the pool freed when every frame is home): freed once, by one of the two.
    loom::model(|| {
        let pool = pool(1);
        let (allocated, go) = (Signal::new(), Signal::new());
        let owner = thread::spawn({
            let (pool, allocated, go) = (pool.clone(), allocated.clone(), go.clone());
            move || {
                let frame = pool.try_allocate().unwrap();
                drop(pool);
                allocated.raise();
                go.wait();
                drop(frame);
            }
        });
        allocated.wait();
        go.raise();
        drop(pool);
        owner.join().unwrap();
    });
}

#[test]
fn an_adoption_racing_a_push_and_a_pop_on_the_free_list_keeps_every_frame() {
    // This thread finds the free list empty and adopts the returned list (a splice of
    // its rest onto the free list, numbered as the returned list left it when that list
    // is empty, renumbered when not) while another thread pushes a displaced frame onto
    // the free list and pops it again: the splice's CAS may lose to either, and must
    // link its chain to whatever the list then is. Every frame stays held once or free.
    // Five preemptions: the splice losing twice, the second time to a pop that empties
    // the list again, needs them (with three, a splice that forgot it had renumbered
    // passed; with five it hands a frame out twice).
    bounded(5).check(|| {
        let pool = pool(4);
        let a = pool.try_allocate().unwrap();
        let b = pool.try_allocate().unwrap();
        // Returned by a thread that never allocates: the returned list holds both.
        thread::spawn(move || {
            drop(a);
            drop(b);
        })
        .join()
        .unwrap();
        let (done, finish) = (Signal::new(), Signal::new());
        // What the other thread holds at the end, for the count (ordered by `done`).
        let theirs = Arc::new(std::sync::Mutex::new(Vec::new()));
        let other = thread::spawn({
            let (pool, done, finish) = (pool.clone(), done.clone(), finish.clone());
            let theirs = theirs.clone();
            move || {
                let c = pool.try_allocate().unwrap();
                let d = pool.try_allocate().unwrap();
                drop(c); // parks in this thread's slot
                drop(d); // parks, displacing `c` onto the free list
                         // From the slot, then a pop of the free list: the splice's CAS may
                         // have lost to the push above and lose again to this pop.
                let held: Vec<_> = [pool.try_allocate(), pool.try_allocate()]
                    .into_iter()
                    .flatten()
                    .collect();
                theirs
                    .lock()
                    .unwrap()
                    .extend(held.iter().map(|f| f.as_ptr() as usize));
                done.raise();
                // Holding them (a drop would push onto the free list again), and alive,
                // until the checks are done (see the module documentation).
                finish.wait();
                drop(held);
            }
        });
        let mine = pool.try_allocate();
        done.wait();
        // Whatever this thread took, every frame free now (parked ones included) and
        // the other thread's: all four, each once.
        let mut held: Vec<_> = mine.into_iter().collect();
        held.extend(std::iter::from_fn(|| pool.try_allocate()).take(5));
        let mut at: Vec<_> = held.iter().map(|f| f.as_ptr() as usize).collect();
        at.extend(theirs.lock().unwrap().iter());
        let count = at.len();
        at.sort();
        at.dedup();
        assert_eq!(at.len(), count, "a frame handed out twice");
        assert_eq!(count, 4, "a frame lost");
        drop(held);
        finish.raise();
        other.join().unwrap();
    });
}
