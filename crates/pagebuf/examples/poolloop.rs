//! The deterministic pool benchmark of issue 15 (`scripts/bench-pool-instructions.sh`):
//! a plain loop of `N` pool operations on 64 KiB buffers, with no harness around it, so
//! that `valgrind --tool=callgrind` can count its instructions (the difference of two
//! run lengths is the cost of one operation) and a wall clock can time it.
//!
//! `cargo run --release -p pagebuf --example poolloop -- CONTENDER SCENARIO N [--wall]`
//!
//! One operation is the same for every contender: take a 64 KiB buffer, write one byte
//! of it (under `std::hint::black_box`), give it back. Where a pool size applies, the
//! pool holds 16 buffers, all made before the loop starts.
//!
//! Contenders:
//! * `pagebuf`: `FramePool::new(Framing::new(65536, 16))`, `try_allocate`, drop.
//! * `arrayqueue`: a crossbeam `ArrayQueue<Box<[u8]>>` pre-filled with 16 buffers;
//!   `pop`, `push`.
//! * `linear`, `spinlock`: lockfree-object-pool `LinearObjectPool<Vec<u8>>` and
//!   `SpinLockObjectPool<Vec<u8>>` (no-op reset), warmed with 16 buffers; `pull`, drop.
//!   These pools are unbounded: when empty they make another buffer.
//! * `objectpool`: object-pool's `Pool::new(16, ..)`; `try_pull`, drop.
//! * `sharded`: a sharded-slab `Pool<Vec<u8>>` (its pooled form: a cleared `Vec` keeps
//!   its capacity), warmed with 16 entries of 64 KiB; `create`, `reserve` (a no-op once
//!   warm), push one byte, then `clear(key)`.
//! * `vec`: `Vec::with_capacity(65536)`, push one byte, drop (glibc malloc).
//! * `alloc`: `std::alloc::alloc` of 64 KiB aligned to 4096, write, `dealloc`.
//! * `baseline`: no buffer at all, a `usize` through the same loop (and, in `cross`,
//!   through the same handoff): the harness's own share, to subtract.
//! * `arrayqueue32`: a diagnostic, not a peer: `arrayqueue` whose handle carries two
//!   words more (32 bytes, a `BufferMut`'s size) through the `cross` handoff, to tell
//!   the pool's share of a `cross` difference from the handle's.
//!
//! Scenarios:
//! * `roundtrip`: one thread takes and gives back.
//! * `cross`: thread A takes and writes, and hands the buffer (the handle: for `sharded`
//!   its key) through a bounded crossbeam `ArrayQueue` of 8 slots to thread B, which
//!   gives it back. Both ends busy-wait (spin `POOLLOOP_SPIN` times, default 64, then
//!   `yield_now`); at most 10 buffers are out at once, so a pool of 16 never runs dry
//!   (if one did, A would wait for B, and the count of such waits goes to stderr).
//!
//! Without `--wall` the program runs the loop and exits (for callgrind). With `--wall` it
//! prints `CONTENDER SCENARIO: N ops in S s, X ns/op`, timing the loop alone (pool
//! creation and warm-up, and thread start-up, are outside).
//!
//! `POOLLOOP_PIN` (any value) binds A to CPU 0 and B to CPU 1 in `cross`.
//!
//! `POOLLOOP_POOL` changes the pool size (default 16; `cross` needs at least 10), for
//! experiments only.

use std::alloc::{alloc, dealloc, Layout};
use std::hint::black_box;
use std::process::ExitCode;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use lockfree_object_pool::{
    LinearObjectPool, LinearReusable, SpinLockObjectPool, SpinLockReusable,
};
use pagebuf::pool::{FramePool, Framing};
use pagebuf::BufferMut;

/// Buffer size.
const SIZE: usize = 64 * 1024;
/// Buffers in every pool where a size applies (`POOLLOOP_POOL` overrides it).
const POOL: usize = 16;
/// Slots of the `cross` handoff queue.
const CHANNEL: usize = 8;
/// Alignment of the `alloc` contender (the page size on x86-64 Linux).
const ALIGN: usize = 4096;

const USAGE: &str = "usage: poolloop CONTENDER SCENARIO N [--wall]\n  \
    CONTENDER: pagebuf arrayqueue linear spinlock objectpool sharded vec alloc baseline \
    arrayqueue32\n  \
    SCENARIO: roundtrip cross";

/// A pool under test. `take` gets a buffer and writes one byte of it; `give` returns
/// it. `take` is `None` only when a bounded pool has every buffer out.
trait Contender: Sync {
    type Item<'a>: Send
    where
        Self: 'a;
    fn take(&self) -> Option<Self::Item<'_>>;
    fn give(&self, item: Self::Item<'_>);
}

/// Writes one byte of `bytes`, observably.
#[inline(always)]
fn touch(bytes: &mut [u8]) {
    bytes[0] = bytes[0].wrapping_add(1);
    black_box(bytes);
}

fn pool_size() -> usize {
    std::env::var("POOLLOOP_POOL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(POOL)
}

struct Pagebuf(FramePool);

impl Contender for Pagebuf {
    type Item<'a> = BufferMut;
    #[inline(always)]
    fn take(&self) -> Option<BufferMut> {
        let mut buf = self.0.try_allocate()?;
        touch(buf.whole_mut());
        Some(buf)
    }
    #[inline(always)]
    fn give(&self, item: BufferMut) {
        drop(item);
    }
}

struct Queue(ArrayQueue<Box<[u8]>>);

impl Contender for Queue {
    type Item<'a> = Box<[u8]>;
    #[inline(always)]
    fn take(&self) -> Option<Box<[u8]>> {
        let mut buf = self.0.pop()?;
        touch(&mut buf);
        Some(buf)
    }
    #[inline(always)]
    fn give(&self, item: Box<[u8]>) {
        assert!(self.0.push(item).is_ok(), "the buffer's slot is free");
    }
}

/// `Queue` with a handle of a `BufferMut`'s size: the buffer and two words that ride
/// along (see `arrayqueue32` above).
struct WideQueue(ArrayQueue<Box<[u8]>>);

impl Contender for WideQueue {
    type Item<'a> = (Box<[u8]>, [usize; 2]);
    #[inline(always)]
    fn take(&self) -> Option<(Box<[u8]>, [usize; 2])> {
        let mut buf = self.0.pop()?;
        touch(&mut buf);
        Some((buf, black_box([0, 0])))
    }
    #[inline(always)]
    fn give(&self, item: (Box<[u8]>, [usize; 2])) {
        let (buf, words) = item;
        black_box(words);
        assert!(self.0.push(buf).is_ok(), "the buffer's slot is free");
    }
}

struct Linear(LinearObjectPool<Vec<u8>>);

impl Contender for Linear {
    type Item<'a> = LinearReusable<'a, Vec<u8>>;
    #[inline(always)]
    fn take(&self) -> Option<LinearReusable<'_, Vec<u8>>> {
        let mut buf = self.0.pull();
        touch(&mut buf);
        Some(buf)
    }
    #[inline(always)]
    fn give(&self, item: LinearReusable<'_, Vec<u8>>) {
        drop(item);
    }
}

struct SpinLock(SpinLockObjectPool<Vec<u8>>);

impl Contender for SpinLock {
    type Item<'a> = SpinLockReusable<'a, Vec<u8>>;
    #[inline(always)]
    fn take(&self) -> Option<SpinLockReusable<'_, Vec<u8>>> {
        let mut buf = self.0.pull();
        touch(&mut buf);
        Some(buf)
    }
    #[inline(always)]
    fn give(&self, item: SpinLockReusable<'_, Vec<u8>>) {
        drop(item);
    }
}

struct ObjectPool(object_pool::Pool<Vec<u8>>);

impl Contender for ObjectPool {
    type Item<'a> = object_pool::Reusable<'a, Vec<u8>>;
    #[inline(always)]
    fn take(&self) -> Option<object_pool::Reusable<'_, Vec<u8>>> {
        let mut buf = self.0.try_pull()?;
        touch(&mut buf);
        Some(buf)
    }
    #[inline(always)]
    fn give(&self, item: object_pool::Reusable<'_, Vec<u8>>) {
        drop(item);
    }
}

struct Sharded(sharded_slab::Pool<Vec<u8>>);

impl Sharded {
    /// An entry of 64 KiB capacity with one byte written; returns its key.
    #[inline(always)]
    fn create(&self) -> Option<usize> {
        let mut entry = self.0.create()?;
        entry.reserve(SIZE);
        entry.push(black_box(0xA5));
        black_box(&mut *entry);
        Some(entry.key())
    }
}

impl Contender for Sharded {
    /// `sharded-slab`'s guards stay on their thread; what travels is the key, and a
    /// `clear` from another thread is its cross-thread return path.
    type Item<'a> = usize;
    #[inline(always)]
    fn take(&self) -> Option<usize> {
        self.create()
    }
    #[inline(always)]
    fn give(&self, key: usize) {
        assert!(self.0.clear(key), "the entry exists");
    }
}

struct FreshVec;

impl Contender for FreshVec {
    type Item<'a> = Vec<u8>;
    #[inline(always)]
    fn take(&self) -> Option<Vec<u8>> {
        let mut buf = Vec::<u8>::with_capacity(SIZE);
        buf.push(black_box(0xA5));
        black_box(&mut buf);
        Some(buf)
    }
    #[inline(always)]
    fn give(&self, item: Vec<u8>) {
        drop(item);
    }
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
}

impl Drop for AlignedBlock {
    #[inline(always)]
    fn drop(&mut self) {
        // SAFETY: allocated in `Aligned::take` with exactly this layout, freed once.
        unsafe { dealloc(self.0.as_ptr(), Self::LAYOUT) };
    }
}

struct Aligned;

impl Contender for Aligned {
    type Item<'a> = AlignedBlock;
    #[inline(always)]
    fn take(&self) -> Option<AlignedBlock> {
        // SAFETY: the layout's size is non-zero.
        let ptr = unsafe { alloc(AlignedBlock::LAYOUT) };
        let block = AlignedBlock(NonNull::new(ptr).expect("the allocator provides 64 KiB"));
        // SAFETY: the block holds SIZE >= 1 writable bytes owned by `block`.
        unsafe { block.0.as_ptr().write(black_box(0xA5)) };
        black_box(block.0);
        Some(block)
    }
    #[inline(always)]
    fn give(&self, item: AlignedBlock) {
        drop(item);
    }
}

struct Baseline;

impl Contender for Baseline {
    type Item<'a> = usize;
    #[inline(always)]
    fn take(&self) -> Option<usize> {
        Some(black_box(0usize))
    }
    #[inline(always)]
    fn give(&self, item: usize) {
        black_box(item);
    }
}

/// `n` round trips on this thread; returns their time.
#[inline(never)]
fn roundtrip<C: Contender>(pool: &C, n: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        let item = pool.take().expect("a buffer is free");
        pool.give(item);
    }
    start.elapsed()
}

/// Times of a `cross` run where a bounded pool had every buffer out (thread A waited).
static DRY: AtomicU64 = AtomicU64::new(0);

/// One round of busy-waiting: spin up to `limit` times, then let other threads run.
#[inline(always)]
fn wait(spins: &mut u32, limit: u32) {
    if *spins < limit {
        std::hint::spin_loop();
        *spins += 1;
    } else {
        thread::yield_now();
    }
}

/// `n` buffers taken on this thread and given back on a second one; returns the time
/// from both threads being ready to the last one given back.
#[inline(never)]
/// With `POOLLOOP_PIN` set, binds the calling thread to CPU `cpu`: the two ends of
/// `cross` then never share one (the scheduler otherwise may put them on one CPU for
/// a while, and every handoff waits for a switch).
fn pin(cpu: usize) {
    if std::env::var_os("POOLLOOP_PIN").is_none() {
        return;
    }
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    if let Err(e) = rustix::thread::sched_setaffinity(None, &set) {
        eprintln!("POOLLOOP_PIN: cannot bind to CPU {cpu}: {e}");
    }
}

fn cross<C: Contender>(pool: &C, n: u64, spin_limit: u32) -> Duration {
    let channel = ArrayQueue::<C::Item<'_>>::new(CHANNEL);
    let ready = Barrier::new(2);
    thread::scope(|s| {
        let consumer = s.spawn(|| {
            pin(1);
            ready.wait();
            for _ in 0..n {
                let mut spins = 0u32;
                let item = loop {
                    match channel.pop() {
                        Some(item) => break item,
                        None => wait(&mut spins, spin_limit),
                    }
                };
                pool.give(item);
            }
        });
        pin(0);
        ready.wait();
        let start = Instant::now();
        for _ in 0..n {
            let mut spins = 0u32;
            let mut item = loop {
                match pool.take() {
                    Some(item) => break item,
                    None => {
                        DRY.fetch_add(1, Ordering::Relaxed);
                        wait(&mut spins, spin_limit);
                    }
                }
            };
            spins = 0;
            while let Err(back) = channel.push(item) {
                item = back;
                wait(&mut spins, spin_limit);
            }
        }
        consumer.join().expect("the consumer does not panic");
        start.elapsed()
    })
}

fn run<C: Contender>(pool: C, scenario: &str, n: u64) -> Result<Duration, String> {
    match scenario {
        "roundtrip" => Ok(roundtrip(&pool, n)),
        "cross" => {
            let spin_limit = match std::env::var("POOLLOOP_SPIN") {
                Ok(v) => v.parse().map_err(|_| format!("POOLLOOP_SPIN={v}"))?,
                Err(_) => 64,
            };
            Ok(cross(&pool, n, spin_limit))
        }
        other => Err(format!("unknown scenario {other:?}")),
    }
}

/// Takes `count` items at once and gives them all back, so that a pool that makes
/// buffers on demand holds `count` of them before the loop starts.
fn warm<C: Contender>(pool: C, count: usize) -> C {
    let items: Vec<_> = (0..count)
        .map(|_| pool.take().expect("the pool fills"))
        .collect();
    for item in items {
        pool.give(item);
    }
    pool
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let wall = args.iter().any(|a| a == "--wall");
    let args: Vec<&str> = args
        .iter()
        .filter(|a| *a != "--wall")
        .map(String::as_str)
        .collect();
    let [contender, scenario, n] = args[..] else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let Ok(n) = n.replace('_', "").parse::<u64>() else {
        eprintln!("N must be a count, not {n:?}\n{USAGE}");
        return ExitCode::from(2);
    };
    let size = pool_size();
    let result = match contender {
        "pagebuf" => {
            let pool = FramePool::new(Framing::new(SIZE, size)).expect("the frame pool builds");
            run(warm(Pagebuf(pool), size), scenario, n)
        }
        "arrayqueue" => {
            let queue = ArrayQueue::new(size);
            for _ in 0..size {
                assert!(queue.push(vec![0u8; SIZE].into_boxed_slice()).is_ok());
            }
            run(Queue(queue), scenario, n)
        }
        "arrayqueue32" => {
            assert_eq!(
                std::mem::size_of::<(Box<[u8]>, [usize; 2])>(),
                std::mem::size_of::<BufferMut>(),
                "arrayqueue32's handle is a BufferMut's size"
            );
            let queue = ArrayQueue::new(size);
            for _ in 0..size {
                assert!(queue.push(vec![0u8; SIZE].into_boxed_slice()).is_ok());
            }
            run(WideQueue(queue), scenario, n)
        }
        "linear" => {
            let pool = LinearObjectPool::new(|| vec![0u8; SIZE], |_| {});
            run(warm(Linear(pool), size), scenario, n)
        }
        "spinlock" => {
            let pool = SpinLockObjectPool::new(|| vec![0u8; SIZE], |_| {});
            run(warm(SpinLock(pool), size), scenario, n)
        }
        "objectpool" => {
            let pool = object_pool::Pool::new(size, || vec![0u8; SIZE]);
            run(ObjectPool(pool), scenario, n)
        }
        "sharded" => {
            let pool = sharded_slab::Pool::new();
            run(warm(Sharded(pool), size), scenario, n)
        }
        "vec" => run(FreshVec, scenario, n),
        "alloc" => run(Aligned, scenario, n),
        "baseline" => run(Baseline, scenario, n),
        other => Err(format!("unknown contender {other:?}")),
    };
    let elapsed = match result {
        Ok(elapsed) => elapsed,
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let dry = DRY.load(Ordering::Relaxed);
    if dry > 0 {
        eprintln!("{contender} {scenario}: the pool ran dry {dry} times (thread A waited)");
    }
    if wall {
        let secs = elapsed.as_secs_f64();
        let per_op = secs * 1e9 / n.max(1) as f64;
        println!("{contender} {scenario}: {n} ops in {secs:.3} s, {per_op:.2} ns/op");
    }
    ExitCode::SUCCESS
}
