//! Where a dropped frame goes, and that it is always found again: a frame parks in the
//! slot of the thread that took it when that thread drops it, a parked frame is
//! reclaimed by any thread that finds the lists empty, `close` keeps frames out of the
//! slots, and a thread's exit gives its frame back and leaves its slot to the next
//! thread.

use std::future::Future;
use std::sync::mpsc;
use std::task::{Context, Poll, Waker};
use std::thread;
use std::time::Duration;

use pagebuf::pool::{FramePool, Framing};
use pagebuf::{BufferMut, Error};

const FRAMES: usize = 4;

fn pool() -> FramePool {
    FramePool::new(Framing::new(4096, FRAMES)).unwrap()
}

/// How many frames `pool` gives this thread without waiting, each one distinct and
/// empty (all dropped afterwards, so parked again where they belong).
fn frames_free(pool: &FramePool) -> usize {
    let mut taken: Vec<BufferMut> = Vec::new();
    while let Some(buf) = pool.try_allocate() {
        assert!(buf.is_empty(), "a frame handed out twice or not released");
        assert!(
            taken.iter().all(|t| t.as_ptr() != buf.as_ptr()),
            "a frame handed out twice"
        );
        taken.push(buf);
        assert!(taken.len() <= FRAMES, "more frames than the pool has");
    }
    taken.len()
}

/// Runs `f` on a new thread and waits for it (its exit included).
fn on_thread<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    thread::spawn(f).join().unwrap()
}

#[test]
fn a_frame_parks_only_on_the_thread_that_took_it() {
    let pool = pool();
    // Dropped on its taker's thread, it waits in that thread's slot, ahead of the list.
    let first = pool.try_allocate().unwrap();
    let at = first.as_ptr();
    drop(first);
    let again = pool.try_allocate().unwrap();
    assert_eq!(again.as_ptr(), at, "the frame did not park with its taker");
    // Dropped on another thread, it goes home the slow way (the returned list): it
    // does not bounce the taker's slot between the threads.
    on_thread(move || drop(again));
    let next = pool.try_allocate().unwrap();
    assert_ne!(
        next.as_ptr(),
        at,
        "a frame dropped elsewhere parked in the taker's slot"
    );
    drop(next);
    assert_eq!(frames_free(&pool), FRAMES);
    assert_eq!(pool.stats().in_use, 0);
}

#[test]
fn a_frame_parked_on_another_thread_is_still_free() {
    let pool = pool();
    let (words, parked) = {
        let pool = pool.clone();
        let (to_owner, words) = mpsc::channel::<()>();
        let (done, parked) = mpsc::channel();
        thread::spawn(move || {
            let frames: Vec<_> = (0..FRAMES).map(|_| pool.try_allocate().unwrap()).collect();
            drop(frames); // one parks on this thread, the rest go to the free list
            done.send(()).unwrap();
            let _ = words.recv(); // stay alive, frame parked, until told
        });
        parked.recv().unwrap();
        (to_owner, parked)
    };
    assert_eq!(frames_free(&pool), FRAMES, "{:?}", pool.stats());
    assert_eq!(pool.stats().allocations, 2 * FRAMES as u64);
    drop((words, parked));
}

#[test]
fn close_keeps_frames_out_of_every_slot() {
    let pool = pool();
    let held = pool.try_allocate().unwrap();
    drop(pool.try_allocate().unwrap()); // parked on this thread
    let elsewhere = {
        let pool = pool.clone();
        on_thread(move || {
            let buf = pool.try_allocate().unwrap();
            drop(pool.try_allocate().unwrap()); // parked on that thread, which stays
            buf
        })
    };
    pool.close();
    // Nothing is parked any more, and this thread's slot hands out nothing.
    assert!(pool.try_allocate().is_none());
    assert!(matches!(pool.allocate(), Err(Error::Closed)));
    assert_eq!(pool.stats().free, FRAMES - 2);
    // Frames out still come home, wherever they are dropped; none parks.
    drop(held);
    on_thread(move || drop(elsewhere));
    assert!(pool.try_allocate().is_none());
    let stats = pool.stats();
    assert_eq!((stats.free, stats.in_use), (FRAMES, 0), "{stats:?}");
}

#[test]
fn a_threads_exit_gives_its_frame_back_and_its_slot_to_the_next_thread() {
    let pool = pool();
    // A thread takes two frames, parks one, and leaves with the other sent out.
    let sent = {
        let pool = pool.clone();
        on_thread(move || {
            let kept = pool.try_allocate().unwrap();
            drop(pool.try_allocate().unwrap());
            kept
        })
    };
    assert_eq!(
        pool.stats().in_use,
        1,
        "the exit did not give the parked frame back"
    );
    // The sent frame's home left with its thread: dropped here, it still comes home.
    drop(sent);
    assert_eq!(pool.stats().in_use, 0);
    // Many threads come and go; each finds every frame, and none is lost.
    for round in 0..64 {
        let pool = pool.clone();
        let free = on_thread(move || {
            let free = frames_free(&pool);
            drop(pool.try_allocate().unwrap()); // parked, given back at exit
            free
        });
        assert_eq!(free, FRAMES, "round {round}");
    }
    assert_eq!(frames_free(&pool), FRAMES);
    assert_eq!(pool.stats().in_use, 0);
}

#[test]
fn a_pool_whose_last_handle_goes_while_frames_are_parked_or_out_is_freed_once() {
    // Parked on a live thread when the last handle drops; then a frame out, whose home
    // is that thread's slot, dropped on a third thread after the pool is gone. ASan
    // and the debug poison see any use after the pool is freed.
    let pool = pool();
    let (to_owner, words) = mpsc::channel::<()>();
    let (send, out) = mpsc::channel();
    let owner = thread::spawn({
        let pool = pool.clone();
        move || {
            let kept = pool.try_allocate().unwrap();
            drop(pool.try_allocate().unwrap()); // parked
            send.send(kept).unwrap();
            drop(pool); // the owner lets go of the pool, keeps its slot
            let _ = words.recv();
        }
    });
    let kept = out.recv().unwrap();
    drop(pool); // the last handle: the parked frame is reclaimed, one frame still out
    on_thread(move || drop(kept)); // the pool is freed here
    to_owner.send(()).unwrap();
    owner.join().unwrap();
}

#[test]
fn blocked_waiters_get_frames_dropped_on_threads_that_took_them_elsewhere() {
    // Frames taken on one thread and dropped on another race waiters that are queueing:
    // a drop that parks a frame in its home must see the waiters, or their reclaim must
    // see the frame. A lost frame shows up as a timeout.
    let pool = FramePool::new(Framing::new(4096, 2)).unwrap();
    let (send, receive) = mpsc::sync_channel::<BufferMut>(1);
    let dropper = thread::spawn(move || receive.into_iter().for_each(drop));
    let waiters: Vec<_> = (0..2)
        .map(|_| {
            let (pool, send) = (pool.clone(), send.clone());
            thread::spawn(move || {
                for round in 0..5_000 {
                    let buf = pool
                        .allocate_timeout(Duration::from_secs(20))
                        .unwrap_or_else(|e| panic!("round {round}: {e}"));
                    send.send(buf).unwrap();
                }
            })
        })
        .collect();
    drop(send);
    waiters.into_iter().for_each(|w| w.join().unwrap());
    dropper.join().unwrap();
    assert_eq!(frames_free(&pool), 2);
}

#[test]
fn a_second_frame_dropped_on_its_takers_thread_displaces_the_parked_one() {
    let pool = pool();
    let first = pool.try_allocate().unwrap();
    let second = pool.try_allocate().unwrap();
    let (at_first, at_second) = (first.as_ptr(), second.as_ptr());
    drop(first); // parked
    drop(second); // parked in its place; the first goes to the free list
    let stats = pool.stats();
    assert_eq!((stats.free, stats.in_use), (FRAMES, 0), "{stats:?}");
    let again = pool.try_allocate().unwrap();
    assert_eq!(
        again.as_ptr(),
        at_second,
        "the last frame dropped is not parked"
    );
    // The displaced frame is on the free list, the next one out.
    let next = pool.try_allocate().unwrap();
    assert_eq!(
        next.as_ptr(),
        at_first,
        "the displaced frame is not on the list"
    );
    drop((again, next));
    assert_eq!(frames_free(&pool), FRAMES);
}

/// The thread pointer of the calling thread, where there is one to read (to report
/// whether a test's new thread reused a gone thread's).
fn thread_pointer() -> Option<usize> {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        let tp: usize;
        // SAFETY: reads the first word of the thread control block, its own address.
        unsafe {
            std::arch::asm!("mov {}, qword ptr fs:[0]", out(reg) tp, options(nostack, readonly))
        };
        Some(tp)
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    None
}

#[test]
fn a_frame_whose_taker_is_gone_never_parks_in_a_slot_another_thread_adopted() {
    // T1 takes a frame and exits; T2, started right after (glibc gives it T1's cached
    // stack, and so T1's thread pointer), gets the frame; T3 adopts T1's slot. When T2
    // drops the frame it must not park it in T3's slot: T2 matches the thread the
    // frame names, but T3 owns the slot now.
    let pool = pool();
    let (frame, t1) = {
        let pool = pool.clone();
        on_thread(move || (pool.try_allocate().unwrap(), thread_pointer()))
    };
    let at = frame.as_ptr() as usize;
    let (to_t2, t2_drops) = mpsc::channel::<()>();
    let (t2_done, dropped) = mpsc::channel();
    let t2 = thread::spawn(move || {
        let t2 = thread_pointer();
        t2_drops.recv().unwrap();
        drop(frame);
        t2_done.send(t2).unwrap();
    });
    let (to_t3, t3_again) = mpsc::channel::<()>();
    let (t3_says, from_t3) = mpsc::channel();
    let t3 = thread::spawn({
        let pool = pool.clone();
        move || {
            let held = pool.try_allocate().unwrap(); // adopts T1's slot
            t3_says.send(None).unwrap();
            t3_again.recv().unwrap();
            let next = pool.try_allocate().unwrap();
            t3_says.send(Some(next.as_ptr() as usize)).unwrap();
            drop((held, next));
        }
    });
    assert_eq!(from_t3.recv().unwrap(), None);
    to_t2.send(()).unwrap();
    let t2_pointer = dropped.recv().unwrap();
    to_t3.send(()).unwrap();
    let next = from_t3.recv().unwrap().unwrap();
    assert_ne!(
        next,
        at,
        "the frame parked in a slot its dropper does not own (T2 reused T1's thread \
         pointer: {})",
        t1.is_some() && t1 == t2_pointer
    );
    t2.join().unwrap();
    t3.join().unwrap();
    assert_eq!(frames_free(&pool), FRAMES);
}

#[test]
fn frames_parked_while_the_last_handle_goes_are_never_touched_after_the_pool() {
    // A thread parks a frame (its drop reads the WAITING bit after the park) while
    // another drops the pool's last handle, which reclaims the parked frame and frees
    // the pool when it is the last one home. Under ASan, a release that read the pool
    // after its park would show up here.
    const ROUNDS: usize = 2_000;
    let (to_owner, pools) = mpsc::channel::<(FramePool, std::sync::Arc<std::sync::Barrier>)>();
    let owner = thread::spawn(move || {
        for (pool, barrier) in pools {
            let frame = pool.try_allocate().unwrap();
            drop(pool); // the frame alone keeps the pool alive now
            barrier.wait();
            drop(frame); // parks, then reads WAITING
        }
    });
    for _ in 0..ROUNDS {
        let pool = FramePool::new(Framing::new(64, 1)).unwrap();
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
        to_owner.send((pool.clone(), barrier.clone())).unwrap();
        barrier.wait();
        drop(pool); // races the park
    }
    drop(to_owner);
    owner.join().unwrap();
}

/// Makes the calling thread a producer: `rounds` frames taken here, each dropped on
/// another thread before the next is taken.
fn hand_each_frame_elsewhere(pool: &FramePool, rounds: usize) {
    let (to_consumer, frames) = mpsc::sync_channel::<BufferMut>(0);
    let (dropped, acks) = mpsc::channel();
    let consumer = thread::spawn(move || {
        for buf in frames {
            drop(buf);
            dropped.send(()).unwrap();
        }
    });
    for _ in 0..rounds {
        to_consumer.send(pool.try_allocate().unwrap()).unwrap();
        acks.recv().unwrap();
    }
    drop(to_consumer);
    consumer.join().unwrap();
}

#[test]
fn a_producer_skips_its_slot_but_finds_its_own_drops_again() {
    let pool = pool();
    hand_each_frame_elsewhere(&pool, 100);
    // Its takes found the slot empty every time, so it stopped looking there: a frame
    // it now drops itself parks, but the next take goes to the lists.
    let own = pool.try_allocate().unwrap();
    let at = own.as_ptr();
    drop(own);
    let next = pool.try_allocate().unwrap();
    assert_ne!(next.as_ptr(), at, "the producer still takes from its slot");
    // The parked frame is free all the same: every frame can be had.
    drop(next);
    assert_eq!(frames_free(&pool), FRAMES);
    // Dropping its own frames again, it looks at the slot now and then, finds one,
    // and parks and takes there once more: the same frame, round after round.
    let mut last = Vec::new();
    for _ in 0..100 {
        let buf = pool.try_allocate().unwrap();
        last.push(buf.as_ptr());
        drop(buf);
    }
    assert!(
        last[90..].iter().all(|&p| p == last[99]),
        "the taker never went back to its slot: {:?}",
        &last[90..]
    );
    let stats = pool.stats();
    assert_eq!((stats.free, stats.in_use), (FRAMES, 0), "{stats:?}");
}

/// Makes the calling thread a producer that skips its slot (after `rounds` frames
/// dropped elsewhere), then takes every frame and drops one here: it parks in the
/// skipped slot, the only free frame. Returns the rest.
fn skip_the_slot_with_one_frame_parked_there(pool: &FramePool, rounds: usize) -> Vec<BufferMut> {
    hand_each_frame_elsewhere(pool, rounds);
    let mut out: Vec<BufferMut> = (0..FRAMES).map(|_| pool.try_allocate().unwrap()).collect();
    drop(out.pop());
    out
}

#[test]
fn a_producer_that_skips_its_slot_takes_the_frame_parked_there_before_it_waits() {
    // A thread that skips its slot still looks in it now and then (every 32nd take):
    // each length of the producing run puts the take under test at another point of
    // that cycle, and most of them skip.
    for rounds in 100..140 {
        let pool = pool();
        let out = skip_the_slot_with_one_frame_parked_there(&pool, rounds);
        let before = pool.stats();
        let buf = pool.allocate().unwrap();
        let after = pool.stats();
        assert_eq!(
            (after.exhausted, after.waits),
            (before.exhausted, before.waits),
            "allocate counted the pool empty and waited, with a frame parked on its own \
             thread ({rounds} rounds): {after:?}"
        );
        drop((buf, out));

        let pool = self::pool();
        let _out = skip_the_slot_with_one_frame_parked_there(&pool, rounds);
        let mut future = std::pin::pin!(pool.allocate_async());
        let polled = future
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()));
        assert!(
            matches!(polled, Poll::Ready(Ok(_))),
            "the first poll found no frame, with one parked on its own thread ({rounds} \
             rounds): {polled:?}"
        );
    }
}

#[test]
fn a_thread_that_adopts_a_producers_slot_looks_in_it() {
    let pool = pool();
    {
        let pool = pool.clone();
        on_thread(move || hand_each_frame_elsewhere(&pool, 100));
    }
    // The producer is gone; this thread adopts its slot and parks and takes there
    // from its first drop on.
    let first = pool.try_allocate().unwrap();
    let at = first.as_ptr();
    drop(first);
    let again = pool.try_allocate().unwrap();
    assert_eq!(again.as_ptr(), at, "the adopted slot was still skipped");
}
