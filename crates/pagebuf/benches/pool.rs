//! Frame pool benchmarks (issue 3): `FramePool` against other pools and plain allocation.
//!
//! Run with `cargo bench -p pagebuf --bench pool`; `BENCHMARKS.md` at the repository
//! root has the results and how to read them. Groups:
//!
//! * `round_trip_64k`: one thread takes a 64 KiB buffer, touches one byte, gives it back.
//! * `cross_thread_64k`: one thread takes and touches buffers and sends them through a
//!   bounded spinning queue (the same for every contender); another receives and drops
//!   (returns) them. Time per buffer through the pipeline; `channel_only` is the
//!   queue's own cost; `crossbeam_ArrayQueue_32B_items` and
//!   `crossbeam_ArrayQueue_of_BufferMut` are `ArrayQueue` pools moving items of a
//!   `BufferMut`'s size, to tell the pool's cost from the handle's.
//! * `page_1mib_reuse`: a 1 MiB page-aligned buffer, fully written, then dropped: from a
//!   `FramePool` vs a fresh mapping each time (`PageAllocator`).
//! * `two_threads_64k`: take + drop in a loop on one shared pool, from 1 thread and from
//!   2 threads; the reported time is wall time per operation summed over all threads
//!   (`iters` operations split between the threads), so `2t / 1t < 1` means the second
//!   thread added throughput and `> 1` means contention cost more than it gave.
//!
//! Every contender touches (writes) at least one byte of each buffer, and
//! `std::hint::black_box` keeps the work from being optimized away.

use std::alloc::{alloc, dealloc, Layout};
use std::hint::black_box;
use std::ptr::NonNull;
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use crossbeam_queue::ArrayQueue;
use lockfree_object_pool::{LinearObjectPool, SpinLockObjectPool};
use pagebuf::pool::{FramePool, Framing};
use pagebuf::{BufferAllocator, HeapAllocator, PageAllocator};

/// Buffer size of the 64 KiB groups.
const SIZE: usize = 64 * 1024;
/// Frames (or pre-filled buffers) in every bounded pool.
const FRAMES: usize = 64;
/// Capacity of the queue in `cross_thread_64k`: with one buffer held by each end, at
/// most `CHANNEL + 2 <= FRAMES` buffers are out at once, so no bounded pool runs dry.
const CHANNEL: usize = 32;
/// Alignment of the `std::alloc` contender (the page size on x86-64 Linux).
const ALIGN: usize = 4096;
/// Size of `page_1mib_reuse` buffers.
const MIB: usize = 1 << 20;

/// Writes one byte of `bytes`, observably.
fn touch(bytes: &mut [u8]) {
    bytes[0] = bytes[0].wrapping_add(1);
    black_box(bytes);
}

/// A `SIZE`-byte block from `std::alloc::alloc` aligned to `ALIGN`, freed on drop.
struct AlignedBlock(NonNull<u8>);

// SAFETY: the block is plain memory owned by this value alone; any thread may free it.
unsafe impl Send for AlignedBlock {}

impl AlignedBlock {
    const LAYOUT: Layout = match Layout::from_size_align(SIZE, ALIGN) {
        Ok(layout) => layout,
        Err(_) => panic!("SIZE and ALIGN make a valid layout"),
    };

    fn new() -> AlignedBlock {
        // SAFETY: the layout's size is non-zero.
        let ptr = unsafe { alloc(Self::LAYOUT) };
        AlignedBlock(NonNull::new(ptr).expect("the allocator provides 64 KiB"))
    }

    /// Writes one byte of the block, observably.
    fn touch(&mut self) {
        // SAFETY: the block holds SIZE >= 1 writable bytes owned by `self`.
        unsafe { self.0.as_ptr().write(black_box(0xA5)) };
        black_box(self.0);
    }
}

impl Drop for AlignedBlock {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with exactly this layout, freed once.
        unsafe { dealloc(self.0.as_ptr(), Self::LAYOUT) };
    }
}

fn frame_pool(size: usize, frames: usize) -> FramePool {
    FramePool::new(Framing::new(size, frames)).expect("the frame pool can be built")
}

fn array_queue() -> ArrayQueue<Box<[u8]>> {
    let queue = ArrayQueue::new(FRAMES);
    for _ in 0..FRAMES {
        queue
            .push(vec![0u8; SIZE].into_boxed_slice())
            .expect("the queue has room for FRAMES buffers");
    }
    queue
}

fn linear_pool() -> LinearObjectPool<Vec<u8>> {
    LinearObjectPool::new(|| vec![0u8; SIZE], |_| {})
}

fn spin_lock_pool() -> SpinLockObjectPool<Vec<u8>> {
    SpinLockObjectPool::new(|| vec![0u8; SIZE], |_| {})
}

fn object_pool() -> object_pool::Pool<Vec<u8>> {
    object_pool::Pool::new(FRAMES, || vec![0u8; SIZE])
}

/// A `sharded_slab::Pool` entry, created (its `Vec` keeps its capacity across
/// `clear`s), touched, released for reading; returns the key to `clear` it by.
fn slab_create(pool: &sharded_slab::Pool<Vec<u8>>) -> usize {
    let mut entry = pool.create().expect("the current thread's shard has room");
    entry.reserve(SIZE);
    entry.push(black_box(0xA5));
    black_box(&mut *entry);
    entry.key()
}

fn round_trip(c: &mut Criterion) {
    let mut group = c.benchmark_group("round_trip_64k");

    let pool = frame_pool(SIZE, FRAMES);
    group.bench_function("pagebuf_FramePool", |b| {
        b.iter(|| {
            let mut buf = pool.try_allocate().expect("a frame is free");
            touch(buf.whole_mut());
            drop(buf);
        })
    });

    let queue = array_queue();
    group.bench_function("crossbeam_ArrayQueue", |b| {
        b.iter(|| {
            let mut buf = queue.pop().expect("the queue is pre-filled");
            touch(&mut buf);
            queue.push(buf).expect("the buffer's slot is free");
        })
    });

    let linear = linear_pool();
    group.bench_function("lockfree_LinearObjectPool", |b| {
        b.iter(|| {
            let mut buf = linear.pull();
            touch(&mut buf);
            drop(buf);
        })
    });

    let spin = spin_lock_pool();
    group.bench_function("lockfree_SpinLockObjectPool", |b| {
        b.iter(|| {
            let mut buf = spin.pull();
            touch(&mut buf);
            drop(buf);
        })
    });

    let objects = object_pool();
    group.bench_function("object-pool_Pool", |b| {
        b.iter(|| {
            let mut buf = objects.pull(|| vec![0u8; SIZE]);
            touch(&mut buf);
            drop(buf);
        })
    });

    let slab = sharded_slab::Pool::<Vec<u8>>::new();
    group.bench_function("sharded-slab_Pool", |b| {
        b.iter(|| {
            let key = slab_create(&slab);
            assert!(slab.clear(key));
        })
    });

    group.bench_function("Vec_with_capacity", |b| {
        b.iter(|| {
            let mut buf = Vec::<u8>::with_capacity(SIZE);
            buf.push(black_box(0xA5));
            black_box(&mut buf);
            drop(buf);
        })
    });

    group.bench_function("std_alloc_align_4096", |b| {
        b.iter(|| {
            let mut block = AlignedBlock::new();
            block.touch();
            drop(block);
        })
    });

    // pagebuf's own non-pool path: one zero-filled, page-aligned heap block per buffer.
    let heap = HeapAllocator::default();
    group.bench_function("pagebuf_HeapAllocator_page_aligned", |b| {
        b.iter(|| {
            let mut buf = heap
                .allocate_page_aligned(SIZE)
                .expect("the heap provides 64 KiB");
            touch(buf.whole_mut());
            drop(buf);
        })
    });

    group.finish();
}

/// Pushes `iters` items made by `make` on this thread through a bounded queue to a
/// second thread, which hands each to `consume`. Returns the time from both threads
/// being ready to the last item consumed.
///
/// The queue is a spinning one (a `crossbeam_queue::ArrayQueue` of `CHANNEL` slots,
/// both ends busy-waiting): a blocking channel on 2 cores puts a futex sleep and wake-up
/// on some items and not others, depending on which end is faster, which made the
/// results bimodal and the "common" channel cost differ by contender.
fn pipeline<T, M, C>(iters: u64, mut make: M, mut consume: C) -> Duration
where
    T: Send,
    M: FnMut() -> T,
    C: FnMut(T) + Send,
{
    let channel = ArrayQueue::<T>::new(CHANNEL);
    let ready = Barrier::new(2);
    thread::scope(|s| {
        let consumer = s.spawn(|| {
            ready.wait();
            for _ in 0..iters {
                let mut spins = 0u32;
                let item = loop {
                    match channel.pop() {
                        Some(item) => break item,
                        None => wait(&mut spins),
                    }
                };
                consume(item);
            }
        });
        ready.wait();
        let start = Instant::now();
        for _ in 0..iters {
            let mut item = make();
            let mut spins = 0u32;
            while let Err(back) = channel.push(item) {
                item = back;
                wait(&mut spins);
            }
        }
        consumer.join().expect("the consumer does not panic");
        start.elapsed()
    })
}

/// One round of busy-waiting: spin a while, then let other threads run.
fn wait(spins: &mut u32) {
    if *spins < 64 {
        std::hint::spin_loop();
        *spins += 1;
    } else {
        thread::yield_now();
    }
}

fn cross_thread(c: &mut Criterion) {
    let mut group = c.benchmark_group("cross_thread_64k");

    group.bench_function("channel_only", |b| {
        b.iter_custom(|iters| {
            pipeline(
                iters,
                || black_box(0usize),
                |item| {
                    black_box(item);
                },
            )
        })
    });

    let pool = frame_pool(SIZE, FRAMES);
    group.bench_function("pagebuf_FramePool", |b| {
        b.iter_custom(|iters| {
            pipeline(
                iters,
                || {
                    let mut buf = pool.try_allocate().expect("a frame is free");
                    touch(buf.whole_mut());
                    buf
                },
                drop,
            )
        })
    });

    let queue = array_queue();
    group.bench_function("crossbeam_ArrayQueue", |b| {
        b.iter_custom(|iters| {
            pipeline(
                iters,
                || {
                    let mut buf = queue.pop().expect("the queue has buffers left");
                    touch(&mut buf);
                    buf
                },
                |buf| queue.push(buf).expect("the buffer's slot is free"),
            )
        })
    });

    // Two references that separate the pool from the handle. A `BufferMut` is four
    // words and a `Box<[u8]>` two, and what crosses the queue is the handle: the same
    // `ArrayQueue` pool with items of a `BufferMut`'s size (boxes with two words of
    // padding), and the same pool holding pagebuf frames (`BufferMut`s taken from a
    // `FramePool` once, returned to the queue instead of dropped).
    let padded = ArrayQueue::new(FRAMES);
    for _ in 0..FRAMES {
        let buffer = (vec![0u8; SIZE].into_boxed_slice(), [0usize; 2]);
        assert!(padded.push(buffer).is_ok(), "the queue has room for FRAMES");
    }
    group.bench_function("crossbeam_ArrayQueue_32B_items", |b| {
        b.iter_custom(|iters| {
            pipeline(
                iters,
                || {
                    let mut buf = padded.pop().expect("the queue has buffers left");
                    touch(&mut buf.0);
                    buf
                },
                |buf| assert!(padded.push(buf).is_ok(), "the buffer's slot is free"),
            )
        })
    });

    let frames = frame_pool(SIZE, FRAMES);
    let held = ArrayQueue::new(FRAMES);
    for _ in 0..FRAMES {
        let frame = frames.try_allocate().expect("FRAMES frames are free");
        assert!(held.push(frame).is_ok(), "the queue has room for FRAMES");
    }
    group.bench_function("crossbeam_ArrayQueue_of_BufferMut", |b| {
        b.iter_custom(|iters| {
            pipeline(
                iters,
                || {
                    let mut buf = held.pop().expect("the queue has buffers left");
                    touch(buf.whole_mut());
                    buf
                },
                |buf| assert!(held.push(buf).is_ok(), "the buffer's slot is free"),
            )
        })
    });

    let linear = linear_pool();
    group.bench_function("lockfree_LinearObjectPool", |b| {
        b.iter_custom(|iters| {
            pipeline(
                iters,
                || {
                    let mut buf = linear.pull();
                    touch(&mut buf);
                    buf
                },
                drop,
            )
        })
    });

    let spin = spin_lock_pool();
    group.bench_function("lockfree_SpinLockObjectPool", |b| {
        b.iter_custom(|iters| {
            pipeline(
                iters,
                || {
                    let mut buf = spin.pull();
                    touch(&mut buf);
                    buf
                },
                drop,
            )
        })
    });

    let objects = object_pool();
    group.bench_function("object-pool_Pool", |b| {
        b.iter_custom(|iters| {
            pipeline(
                iters,
                || {
                    let mut buf = objects.pull(|| vec![0u8; SIZE]);
                    touch(&mut buf);
                    buf
                },
                drop,
            )
        })
    });

    // sharded-slab's guards stay on their thread; what travels is the key, and the
    // consumer clears the entry (a remote clear, which is sharded-slab's cross-thread
    // return path).
    let slab = sharded_slab::Pool::<Vec<u8>>::new();
    group.bench_function("sharded-slab_Pool", |b| {
        b.iter_custom(|iters| {
            pipeline(iters, || slab_create(&slab), |key| assert!(slab.clear(key)))
        })
    });

    group.bench_function("Vec_with_capacity", |b| {
        b.iter_custom(|iters| {
            pipeline(
                iters,
                || {
                    let mut buf = Vec::<u8>::with_capacity(SIZE);
                    buf.push(black_box(0xA5));
                    black_box(&mut buf);
                    buf
                },
                drop,
            )
        })
    });

    group.bench_function("std_alloc_align_4096", |b| {
        b.iter_custom(|iters| {
            pipeline(
                iters,
                || {
                    let mut block = AlignedBlock::new();
                    block.touch();
                    block
                },
                drop,
            )
        })
    });

    group.finish();
}

fn page_reuse(c: &mut Criterion) {
    let mut group = c.benchmark_group("page_1mib_reuse");

    let pool = frame_pool(MIB, 4);
    group.bench_function("pagebuf_FramePool", |b| {
        b.iter(|| {
            let mut buf = pool.try_allocate().expect("a frame is free");
            buf.whole_mut().fill(black_box(0xA5));
            black_box(&mut buf);
            drop(buf);
        })
    });

    let pages = PageAllocator::default();
    group.bench_function("pagebuf_PageAllocator_fresh", |b| {
        b.iter(|| {
            let mut buf = pages
                .allocate_page_aligned(MIB)
                .expect("a 1 MiB mapping can be made");
            buf.whole_mut().fill(black_box(0xA5));
            black_box(&mut buf);
            drop(buf);
        })
    });

    // For reference: a fresh mapping with MAP_POPULATE (faults taken in the kernel up
    // front), and pagebuf's heap allocator (calloc-like, zero-filled).
    let prefaulted = PageAllocator::default().prefault(true);
    group.bench_function("pagebuf_PageAllocator_fresh_prefault", |b| {
        b.iter(|| {
            let mut buf = prefaulted
                .allocate_page_aligned(MIB)
                .expect("a 1 MiB mapping can be made");
            buf.whole_mut().fill(black_box(0xA5));
            black_box(&mut buf);
            drop(buf);
        })
    });

    let heap = HeapAllocator::default();
    group.bench_function("pagebuf_HeapAllocator_page_aligned", |b| {
        b.iter(|| {
            let mut buf = heap
                .allocate_page_aligned(MIB)
                .expect("the heap provides 1 MiB");
            buf.whole_mut().fill(black_box(0xA5));
            black_box(&mut buf);
            drop(buf);
        })
    });

    group.finish();
}

/// Runs `iters` calls of `op` split over `threads` threads that start together; returns
/// the wall time from the start to the last thread done.
fn parallel<F>(iters: u64, threads: u64, op: F) -> Duration
where
    F: Fn() + Sync,
{
    let start_line = Barrier::new(threads as usize + 1);
    thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                // Thread t does its share; the first ones take the remainder.
                let share = iters / threads + u64::from(t < iters % threads);
                let (start_line, op) = (&start_line, &op);
                s.spawn(move || {
                    start_line.wait();
                    for _ in 0..share {
                        op();
                    }
                })
            })
            .collect();
        start_line.wait();
        let start = Instant::now();
        for worker in workers {
            worker.join().expect("a worker does not panic");
        }
        start.elapsed()
    })
}

fn two_threads(c: &mut Criterion) {
    let mut group = c.benchmark_group("two_threads_64k");

    let pool = frame_pool(SIZE, FRAMES);
    let frame_op = || {
        let mut buf = pool.try_allocate().expect("a frame is free");
        touch(buf.whole_mut());
        drop(buf);
    };
    let queue = array_queue();
    let queue_op = || {
        let mut buf = queue.pop().expect("the queue has buffers left");
        touch(&mut buf);
        queue.push(buf).expect("the buffer's slot is free");
    };
    let linear = linear_pool();
    let linear_op = || {
        let mut buf = linear.pull();
        touch(&mut buf);
        drop(buf);
    };

    for threads in [1, 2] {
        group.bench_function(format!("pagebuf_FramePool_{threads}t"), |b| {
            b.iter_custom(|iters| parallel(iters, threads, frame_op))
        });
        group.bench_function(format!("crossbeam_ArrayQueue_{threads}t"), |b| {
            b.iter_custom(|iters| parallel(iters, threads, queue_op))
        });
        group.bench_function(format!("lockfree_LinearObjectPool_{threads}t"), |b| {
            b.iter_custom(|iters| parallel(iters, threads, linear_op))
        });
    }

    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = round_trip, cross_thread, page_reuse, two_threads
}
criterion_main!(benches);
