//! The rules of DESIGN.md's "Pools" section, one test each.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use pagebuf::pool::{FrameMemory, FramePool, Framing};

use pagebuf::{page_size, BufferAllocator, Error, MemoryOrigin};

mod support;

fn pool(frame_size: usize, frames: usize) -> FramePool {
    FramePool::new(Framing::new(frame_size, frames)).unwrap()
}

#[test]
fn frames_are_distinct_aligned_and_bounded() {
    for (framing, align) in [
        (Framing::new(65536, 8), page_size()),
        (Framing::new(1000, 5).alignment(64).prefix(10), 64),
        (Framing::new(100, 3).alignment_mask(511), 512),
        (Framing::new(5000, 3).alignment(1 << 16), 1 << 16),
        (
            Framing::new(5000, 3)
                .alignment(256)
                .memory(FrameMemory::Heap),
            256,
        ),
    ] {
        let frames = framing.frames();
        let size = framing.frame_size();
        let pool = FramePool::new(framing).unwrap();
        let mut out: Vec<_> = (0..frames).map(|_| pool.try_allocate().unwrap()).collect();
        assert!(
            pool.try_allocate().is_none(),
            "more than `frames` handed out"
        );
        let mut spans: Vec<(usize, usize)> = out
            .iter_mut()
            .map(|b| {
                assert_eq!(b.as_ptr() as usize % align, 0);
                assert_eq!(b.alignment(), align);
                assert_eq!((b.len(), b.max_len()), (0, size));
                assert_eq!(b.origin(), MemoryOrigin::Pool);
                b.whole_mut().fill(0x5A);
                (b.as_ptr() as usize, b.as_ptr() as usize + size)
            })
            .collect();
        spans.sort();
        for pair in spans.windows(2) {
            assert!(pair[0].1 <= pair[1].0, "frames overlap: {pair:?}");
        }
    }
}

#[test]
fn prefix_is_headroom_before_the_data() {
    let pool = FramePool::new(Framing::new(1000, 2).alignment(64).prefix(10)).unwrap();
    assert_eq!(pool.headroom(), 64);
    let a = pool.try_allocate().unwrap();
    let b = pool.try_allocate().unwrap();
    let (lo, hi) = if a.as_ptr() < b.as_ptr() {
        (&a, &b)
    } else {
        (&b, &a)
    };
    assert!(hi.as_ptr() as usize - lo.as_ptr() as usize >= 1000 + 64);
}

#[test]
fn try_allocate_is_none_only_when_every_frame_is_out() {
    let pool = pool(4096, 3);
    let a = pool.try_allocate().unwrap();
    let b = pool.try_allocate().unwrap();
    let c = pool.try_allocate().unwrap();
    assert!(pool.try_allocate().is_none());
    assert_eq!(pool.stats().exhausted, 1);
    // Dropped on another thread: reachable at once from this one.
    thread::spawn(move || drop(b)).join().unwrap();
    let b = pool
        .try_allocate()
        .expect("a frame dropped elsewhere is free here");
    drop((a, b, c));
    let stats = pool.stats();
    assert_eq!((stats.free, stats.in_use, stats.high_water), (3, 0, 3));
    assert_eq!(stats.allocations, 4);
}

#[test]
fn allocate_waits_for_a_frame_and_gets_it() {
    let pool = pool(4096, 1);
    let held = pool.try_allocate().unwrap();
    let address = held.as_ptr() as usize;
    let waiter = {
        let pool = pool.clone();
        thread::spawn(move || pool.allocate().map(|b| b.as_ptr() as usize))
    };
    while pool.stats().waiting == 0 {
        thread::yield_now();
    }
    drop(held);
    assert_eq!(waiter.join().unwrap().unwrap(), address);
    let stats = pool.stats();
    assert_eq!((stats.waits, stats.free, stats.waiting), (1, 1, 0));
}

#[test]
fn waiters_are_served_first_come_first_served() {
    let pool = pool(4096, 1);
    let held = pool.try_allocate().unwrap();
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut waiters = Vec::new();
    for id in 0..3 {
        let (waiter_pool, order) = (pool.clone(), order.clone());
        waiters.push(thread::spawn(move || {
            let frame = waiter_pool.allocate().unwrap();
            order.lock().unwrap().push(id);
            drop(frame);
        }));
        while pool.stats().waiting < id + 1 {
            thread::yield_now();
        }
    }
    drop(held);
    waiters.into_iter().for_each(|w| w.join().unwrap());
    assert_eq!(*order.lock().unwrap(), vec![0, 1, 2]);
}

#[test]
fn close_wakes_blocked_waiters_with_closed_and_keeps_frames_valid() {
    let pool = pool(4096, 2);
    let mut a = pool.try_allocate().unwrap();
    let b = pool.try_allocate().unwrap();
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let pool = pool.clone();
            thread::spawn(move || pool.allocate())
        })
        .collect();
    while pool.stats().waiting < 3 {
        thread::yield_now();
    }
    pool.close();
    for waiter in waiters {
        assert!(matches!(waiter.join().unwrap(), Err(Error::Closed)));
    }
    assert!(pool.is_closed());
    assert!(pool.try_allocate().is_none());
    assert!(matches!(pool.allocate(), Err(Error::Closed)));
    assert!(matches!(
        pool.allocate_timeout(Duration::from_millis(1)),
        Err(Error::Closed)
    ));
    a.extend_from_slice(b"still mine").unwrap();
    assert_eq!(&a[..], b"still mine");
    drop((a, b));
    assert_eq!(pool.stats().free, 2, "frames out at close still come home");
}

#[test]
fn timeouts_expire_with_timeout() {
    let pool = pool(4096, 1);
    let _held = pool.try_allocate().unwrap();
    let started = Instant::now();
    let err = pool
        .allocate_timeout(Duration::from_millis(50))
        .unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(50));
    match err {
        Error::Timeout { waited, .. } => assert_eq!(waited, Duration::from_millis(50)),
        other => panic!("expected Timeout, got {other}"),
    }
    assert_eq!(
        pool.stats().waiting,
        0,
        "a timed-out waiter leaves the queue"
    );
    // Zero timeout: a plain try with an error.
    assert!(matches!(
        pool.allocate_timeout(Duration::ZERO),
        Err(Error::Timeout { .. })
    ));
}

#[test]
fn a_frame_returned_after_a_timeout_is_not_lost() {
    let pool = pool(4096, 1);
    let held = pool.try_allocate().unwrap();
    assert!(pool.allocate_timeout(Duration::from_millis(5)).is_err());
    drop(held);
    assert!(
        pool.try_allocate().is_some(),
        "the frame went home, not to the departed waiter"
    );
}

#[test]
fn zero_on_reuse_clears_a_recycled_frame() {
    for zero in [true, false] {
        let pool = FramePool::new(Framing::new(4096, 1).zero_on_reuse(zero)).unwrap();
        let mut frame = pool.try_allocate().unwrap();
        frame.whole_mut().fill(0xEE);
        drop(frame);
        let mut again = pool.try_allocate().unwrap();
        let whole = again.whole_mut();
        if zero {
            assert!(whole.iter().all(|&b| b == 0), "zero_on_reuse must clear");
        } else if cfg!(debug_assertions) {
            assert!(
                whole.iter().all(|&b| b == support::POISON_BYTE),
                "debug builds poison returns"
            );
        } else {
            assert!(
                whole.iter().all(|&b| b == 0xEE),
                "without zeroing, bytes stay"
            );
        }
    }
}

#[test]
fn memory_is_freed_when_the_last_handle_and_frame_are_gone() {
    // The frame outlives every handle; releasing it must free the pool (no leak, no
    // use after free: run under ASan in .ci/run).
    let pool = pool(4096, 2);
    let mut frame = pool.try_allocate().unwrap();
    let clone = pool.clone();
    drop(pool);
    drop(clone);
    frame.extend_from_slice(b"outlives its pool").unwrap();
    let shared = frame.freeze();
    let other = shared.clone();
    thread::spawn(move || drop(other)).join().unwrap();
    assert_eq!(&shared[..], b"outlives its pool");
    drop(shared);
}

#[test]
fn frame_pool_is_a_buffer_allocator_up_to_frame_size() {
    let pool = pool(8192, 2);
    let alloc: Arc<dyn BufferAllocator> = Arc::new(pool.clone());
    let buf = alloc.allocate(100).unwrap();
    assert_eq!((buf.len(), buf.max_len()), (0, 100));
    let aligned = alloc.allocate_page_aligned(8192).unwrap();
    assert_eq!(aligned.as_ptr() as usize % page_size(), 0);
    for bad in [0, 8193, usize::MAX] {
        let err = alloc.allocate(bad).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{bad}: {err}");
    }
    drop((buf, aligned));
    let small = FramePool::new(Framing::new(100, 1).alignment(64)).unwrap();
    let err = small.allocate_page_aligned(10).unwrap_err();
    assert!(err.to_string().contains("Framing::alignment"), "{err}");
}

#[test]
fn bad_framings_are_refused_with_a_message() {
    let bad = [
        Framing::new(0, 1),
        Framing::new(1, 0),
        Framing::new(64, 1).alignment(48),
        Framing::new(64, 1).alignment_mask(500),
        Framing::new(64, 1).prefix(65),
        Framing::new(usize::MAX, 2),
    ];
    for framing in bad {
        let err = FramePool::new(framing.clone()).unwrap_err();
        assert!(
            matches!(err, Error::InvalidArgument(_)),
            "{framing:?}: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocate_async_waits_and_wakes_under_tokio() {
    let pool = pool(4096, 1);
    let held = pool.try_allocate().unwrap();
    let task = tokio::spawn({
        let pool = pool.clone();
        async move { pool.allocate_async().await.map(|b| b.max_len()) }
    });
    while pool.stats().waiting == 0 {
        tokio::task::yield_now().await;
    }
    drop(held);
    assert_eq!(task.await.unwrap().unwrap(), 4096);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_wakes_async_waiters_with_closed() {
    let pool = pool(4096, 1);
    let _held = pool.try_allocate().unwrap();
    let tasks: Vec<_> = (0..3)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.allocate_async().await })
        })
        .collect();
    while pool.stats().waiting < 3 {
        tokio::task::yield_now().await;
    }
    pool.close();
    for task in tasks {
        assert!(matches!(task.await.unwrap(), Err(Error::Closed)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_pending_future_loses_no_frame_and_no_wake_up() {
    let pool = pool(4096, 1);
    let held = pool.try_allocate().unwrap();
    // First in line, then abandoned (with a timeout) after the frame was handed to it.
    let first = pool.allocate_async();
    let second = tokio::spawn({
        let pool = pool.clone();
        async move { pool.allocate_async().await.map(|b| b.max_len()) }
    });
    let mut first = Box::pin(first);
    assert!(futures_poll_once(first.as_mut()).is_pending());
    while pool.stats().waiting < 2 {
        tokio::task::yield_now().await;
    }
    drop(held); // handed to `first`, which is never polled again...
    drop(first); // ...and dropped: the frame must go on to `second`.
    let got = tokio::time::timeout(Duration::from_secs(5), second).await;
    assert_eq!(
        got.expect("second waiter was never woken")
            .unwrap()
            .unwrap(),
        4096
    );
    assert_eq!(pool.stats().free, 1);
}

fn futures_poll_once<F: std::future::Future>(
    fut: std::pin::Pin<&mut F>,
) -> std::task::Poll<F::Output> {
    let waker = std::task::Waker::noop();
    fut.poll(&mut std::task::Context::from_waker(waker))
}

#[test]
fn frames_go_home_exactly_once_across_threads() {
    let pool = pool(1024, 4);
    let served = Arc::new(AtomicUsize::new(0));
    thread::scope(|s| {
        for _ in 0..4 {
            let (pool, served) = (pool.clone(), served.clone());
            s.spawn(move || {
                for i in 0..2000u32 {
                    let mut frame = pool.allocate().unwrap();
                    frame.extend_from_slice(&i.to_le_bytes()).unwrap();
                    let shared = frame.freeze();
                    let copy = shared.clone();
                    let t = thread::spawn(move || drop(copy));
                    assert_eq!(&shared[..], &i.to_le_bytes());
                    drop(shared);
                    t.join().unwrap();
                    served.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    // `thread::scope` returns before the threads' thread-local destructors run, and
    // those may still be handing parked frames back: let them finish.
    let deadline = Instant::now() + Duration::from_secs(5);
    while pool.stats().free < 4 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(1));
    }
    let stats = pool.stats();
    assert_eq!(served.load(Ordering::Relaxed), 8000);
    assert_eq!((stats.free, stats.in_use, stats.allocations), (4, 0, 8000));
}
