//! The rules of `BufferPool`: exact sizes, page alignment, reuse per size class, a
//! budget that is never exceeded, waiting / timeout / try forms, eviction, close.

use std::future::Future;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use pagebuf::{page_size, BufferAllocator, BufferPool, Error};

mod support;
use support::{block_on, in_child, run_child};

const MIB: usize = 1 << 20;

#[test]
fn buffers_are_page_aligned_with_exact_max_len() {
    let pool = BufferPool::new(16 * MIB).unwrap();
    for size in [1, 100, page_size(), page_size() + 1, 3 * MIB, 5_000_000] {
        let buf = pool.allocate(size).unwrap();
        assert_eq!((buf.len(), buf.max_len()), (0, size));
        assert_eq!(buf.as_ptr() as usize % page_size(), 0);
        assert!(buf.alignment() >= page_size());
    }
}

#[test]
fn a_returned_buffer_is_reused_by_its_size_class() {
    let pool = BufferPool::new(16 * MIB).unwrap();
    let first = pool.allocate(3 * MIB).unwrap();
    let address = first.as_ptr();
    drop(first);
    // A slightly different size in the same class gets the same memory back.
    let again = pool.allocate(3 * MIB - 1000).unwrap();
    assert_eq!(again.as_ptr(), address);
    assert_eq!(again.max_len(), 3 * MIB - 1000);
    let class = pool
        .stats()
        .classes
        .into_iter()
        .find(|c| c.out == 1)
        .unwrap();
    assert_eq!((class.mapped, class.reused), (1, 1));
    assert!(class.size >= 3 * MIB && class.size <= 3 * MIB * 5 / 4);
}

#[test]
fn the_budget_is_never_exceeded_and_try_fails_when_spent() {
    let pool = BufferPool::new(4 * MIB).unwrap();
    let a = pool.allocate(2 * MIB).unwrap();
    let b = pool.allocate(2 * MIB).unwrap();
    assert!(pool.try_allocate(page_size()).unwrap().is_none());
    let stats = pool.stats();
    assert_eq!(stats.bytes_out, 4 * MIB);
    assert_eq!(stats.exhausted, 1);
    drop(a);
    let stats = pool.stats();
    assert!(stats.bytes_out + stats.bytes_cached <= stats.budget);
    // The cached 2 MiB buffer is evicted to make room for another class.
    let small = pool
        .try_allocate(MIB)
        .unwrap()
        .expect("room after eviction");
    let stats = pool.stats();
    assert_eq!(stats.bytes_out, 3 * MIB);
    assert_eq!(stats.classes.iter().map(|c| c.evicted).sum::<u64>(), 1);
    drop((b, small));
    assert_eq!(pool.stats().bytes_out, 0);
}

#[test]
fn allocate_waits_until_buffers_come_back() {
    let pool = BufferPool::new(2 * MIB).unwrap();
    let held = pool.allocate(2 * MIB).unwrap();
    let waiter = {
        let pool = pool.clone();
        thread::spawn(move || pool.allocate(MIB).map(|b| b.max_len()))
    };
    while pool.stats().waits == 0 {
        thread::yield_now();
    }
    drop(held);
    assert_eq!(waiter.join().unwrap().unwrap(), MIB);
}

#[test]
fn allocate_timeout_expires() {
    let pool = BufferPool::new(MIB).unwrap();
    let _held = pool.allocate(MIB).unwrap();
    let started = Instant::now();
    let err = pool
        .allocate_timeout(page_size(), Duration::from_millis(30))
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert!(started.elapsed() >= Duration::from_millis(30));
}

#[test]
fn close_wakes_waiters_and_frees_cached_buffers() {
    let pool = BufferPool::new(MIB).unwrap();
    let held = pool.allocate(MIB).unwrap();
    let waiter = {
        let pool = pool.clone();
        thread::spawn(move || pool.allocate(MIB))
    };
    while pool.stats().waits == 0 {
        thread::yield_now();
    }
    pool.close();
    assert!(matches!(waiter.join().unwrap(), Err(Error::Closed)));
    assert!(pool.is_closed());
    assert!(
        matches!(pool.try_allocate(1), Ok(None)),
        "a closed pool's try form finds nothing, as a FramePool's"
    );
    assert!(matches!(
        pool.allocate_timeout(1, Duration::ZERO),
        Err(Error::Closed)
    ));
    assert!(matches!(
        block_on(pool.allocate_async(1)),
        Err(Error::Closed)
    ));
    drop(held);
    let stats = pool.stats();
    assert_eq!(
        (stats.bytes_out, stats.bytes_cached),
        (0, 0),
        "returns are unmapped"
    );
}

#[test]
fn trim_gives_cached_memory_back() {
    let pool = BufferPool::new(8 * MIB).unwrap();
    drop(pool.allocate(MIB).unwrap());
    drop(pool.allocate(100).unwrap());
    let cached = pool.stats().bytes_cached;
    assert!(cached >= MIB + page_size());
    assert_eq!(pool.trim(), cached);
    assert_eq!(pool.stats().bytes_cached, 0);
}

#[test]
fn bad_sizes_and_budgets_are_invalid_arguments() {
    assert!(matches!(BufferPool::new(0), Err(Error::InvalidArgument(_))));
    assert!(matches!(
        BufferPool::new(page_size() - 1),
        Err(Error::InvalidArgument(_))
    ));
    let pool = BufferPool::new(MIB).unwrap();
    for size in [0, MIB + 1, usize::MAX] {
        let err = pool.allocate(size).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{size}: {err}");
        assert!(matches!(
            pool.try_allocate(size),
            Err(Error::InvalidArgument(_))
        ));
    }
}

#[test]
fn buffers_outlive_the_pool_and_come_home_from_any_thread() {
    let pool = BufferPool::new(4 * MIB).unwrap();
    let alloc: Arc<dyn BufferAllocator> = Arc::new(pool.clone());
    let mut buf = alloc.allocate_page_aligned(MIB).unwrap();
    buf.extend_from_slice(b"kept").unwrap();
    drop(alloc);
    drop(pool);
    let shared = buf.freeze();
    let clone = shared.clone();
    thread::spawn(move || assert_eq!(&clone[..4], b"kept"))
        .join()
        .unwrap();
    drop(shared); // the last reference: unmaps the buffer and frees the pool
}

#[test]
fn concurrent_use_stays_within_budget() {
    let pool = BufferPool::new(8 * MIB).unwrap();
    thread::scope(|s| {
        for t in 0..4usize {
            let pool = pool.clone();
            s.spawn(move || {
                for i in 0..300usize {
                    let size = 1 + (i * 7919 + t * 104_729) % (2 * MIB);
                    let mut buf = pool.allocate(size).unwrap();
                    buf.set_len(size).unwrap();
                    buf[size - 1] = t as u8;
                    let stats = pool.stats();
                    assert!(stats.bytes_out + stats.bytes_cached <= stats.budget);
                }
            });
        }
    });
    let stats = pool.stats();
    assert_eq!(stats.bytes_out, 0);
    assert_eq!(stats.classes.iter().map(|c| c.out).sum::<usize>(), 0);
}

#[test]
fn stats_count_buffers_as_a_frame_pool_counts_frames() {
    let pool = BufferPool::new(4 * MIB).unwrap();
    let a = pool.allocate(MIB).unwrap();
    let b = pool.allocate(MIB).unwrap();
    let c = pool.allocate(page_size()).unwrap();
    drop(b);
    assert!(pool.try_allocate(4 * MIB).unwrap().is_none());
    let stats = pool.stats();
    assert_eq!(
        (
            stats.in_use,
            stats.high_water,
            stats.allocations,
            stats.exhausted
        ),
        (2, 3, 3, 1)
    );
    assert_eq!((stats.waits, stats.waiting, stats.closed), (0, 0, false));
    drop((a, c));
    let stats = pool.stats();
    assert_eq!((stats.in_use, stats.high_water), (0, 3));
}

#[test]
fn allocate_async_waits_for_the_budget_and_gives_up_its_place_when_dropped() {
    let pool = BufferPool::new(MIB).unwrap();
    let held = pool.allocate(MIB).unwrap();
    // A future dropped while waiting leaves nothing behind.
    {
        let mut waiting = Box::pin(pool.allocate_async(MIB));
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        assert!(waiting.as_mut().poll(&mut cx).is_pending());
        assert_eq!(pool.stats().waiting, 1);
    }
    assert_eq!(
        pool.stats().waiting,
        0,
        "a dropped future still counted as waiting"
    );
    let waiter = {
        let pool = pool.clone();
        thread::spawn(move || block_on(pool.allocate_async(MIB / 2)))
    };
    until_a_task_waits(&pool);
    assert!(!waiter.is_finished());
    drop(held);
    let buf = waiter.join().unwrap().unwrap();
    assert_eq!(buf.max_len(), MIB / 2);
    let stats = pool.stats();
    assert_eq!((stats.waits, stats.waiting, stats.in_use), (2, 0, 1));
    assert!(matches!(
        block_on(pool.allocate_async(0)),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn close_wakes_waiting_tasks_with_closed() {
    let pool = BufferPool::new(MIB).unwrap();
    let held = pool.allocate(MIB).unwrap();
    let waiter = {
        let pool = pool.clone();
        thread::spawn(move || block_on(pool.allocate_async(MIB)))
    };
    until_a_task_waits(&pool);
    pool.close();
    assert!(matches!(waiter.join().unwrap(), Err(Error::Closed)));
    drop(held);
}

#[test]
fn a_refused_mapping_gives_its_reservation_back() {
    const NAME: &str = "a_refused_mapping_gives_its_reservation_back";
    if !in_child(NAME) {
        let (status, text) = run_child(NAME, &[]);
        assert!(
            status.success() && text.contains("child: survived"),
            "{text}"
        );
        return;
    }
    // Cap the address space a little above what the process uses, then ask the pool
    // for more than that: the mapping (done outside the pool's lock) is refused.
    support::cap_address_space(256 << 20);
    let pool = BufferPool::new(8 << 30).unwrap();
    let err = pool.allocate(4 << 30).unwrap_err();
    assert!(matches!(err, Error::OutOfMemory(_)), "{err}");
    let stats = pool.stats();
    assert_eq!(
        (stats.bytes_out, stats.in_use, stats.allocations),
        (0, 0, 0),
        "the refused buffer is still counted: {stats:?}"
    );
    assert!(stats.classes.iter().all(|c| c.out == 0 && c.mapped == 0));
    // The whole budget is there for what fits in memory.
    let small = pool.allocate(MIB).unwrap();
    assert_eq!(small.max_len(), MIB);
    assert_eq!(pool.stats().bytes_out, MIB);
    println!("child: survived");
}

/// Returns once some task waits on `pool` (a failure, not a hang, if none ever does).
fn until_a_task_waits(pool: &BufferPool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while pool.stats().waiting == 0 {
        assert!(Instant::now() < deadline, "the task never waited");
        thread::yield_now();
    }
}
