//! Model-based test of `FramePool`: random sequences of operations over one to three
//! pools of random small framings, run against the real pools and a simple model, and
//! compared after every step.
//!
//! Per pool the model keeps the number of frames out (frames not in the free list:
//! held as buffers, or handed to a waiting future that has not collected them), the
//! expected statistics, whether it is closed or orphaned (every handle dropped), the
//! bytes each frame that came home will show when next handed out, and the waiting
//! futures in line. Per frame out it keeps the bytes it holds and its number of views;
//! per view its window. After every step:
//!
//! * every view shows exactly the model's bytes (a `BufferMut` also through
//!   `whole_mut`), at the model's address, with the model's length, `max_len`,
//!   alignment, origin and reference count;
//! * frames out never overlap (within and across pools), each frame's data is aligned
//!   as the framing asks, and every address a pool ever gave lies on its frame grid
//!   (`stride` apart, at most `frames` of them);
//! * `stats()` of every pool that still has a handle agrees with the model: frames,
//!   frame size, free, in use, high water, allocations, exhausted, waits, waiting,
//!   closed; and no more than `frames` are ever out.
//!
//! Each operation checks its own outcome: `try_allocate` is `None` exactly when the
//! model has every frame out (or the pool is closed), `allocate_timeout` is
//! `Err(Timeout)` exactly then (`Err(Closed)` once closed), a fresh frame reads zero
//! (always with `zero_on_reuse`), a recycled one reads the poison byte in debug builds
//! (the old bytes in release builds), and a frame released while futures wait goes to
//! the oldest one, which must then resolve to exactly that frame.

// The pool's atomics are loom's under `--cfg loom` (usable only inside `loom::model`),
// and tokio is not built then: these tests are for normal builds.
#![cfg(not(loom))]

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use pagebuf::pool::{AllocateFuture, FrameMemory, FramePool, Framing};

use pagebuf::{page_size, Buffer, BufferMut, Error, MemoryOrigin};
use proptest::prelude::*;

mod support;

/// Picks one of `n` things, as a fraction of the way through them (like
/// `proptest::sample::Index`, which cannot be built by hand for the fixed walk): shrinks
/// toward the first.
#[derive(Debug, Clone, Copy)]
struct Index(usize);

impl Index {
    const FIRST: Index = Index(0);

    /// A value in `0..n`; `n` must not be 0.
    fn index(self, n: usize) -> usize {
        assert!(n > 0);
        ((self.0 as u128 * n as u128) >> usize::BITS) as usize
    }
}

fn any_index() -> impl Strategy<Value = Index> {
    any::<usize>().prop_map(Index)
}

// ---------------------------------------------------------------------------------
// Framings
// ---------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Alignment {
    /// Not set: the page size.
    Default,
    /// `Framing::alignment(n)`.
    Value(usize),
    /// `Framing::alignment_mask(n - 1)`.
    Mask(usize),
}

#[derive(Debug, Clone)]
struct PoolSpec {
    frame_size: usize,
    frames: usize,
    alignment: Alignment,
    prefix: usize,
    zero_on_reuse: bool,
    heap: bool,
}

impl PoolSpec {
    fn framing(&self) -> Framing {
        let framing = Framing::new(self.frame_size, self.frames)
            .prefix(self.prefix)
            .zero_on_reuse(self.zero_on_reuse);
        let framing = match self.alignment {
            Alignment::Default => framing,
            Alignment::Value(a) => framing.alignment(a),
            Alignment::Mask(a) => framing.alignment_mask(a - 1),
        };
        if self.heap {
            framing.memory(FrameMemory::Heap)
        } else {
            framing // the default: pre-faulted pages
        }
    }

    fn alignment(&self) -> usize {
        match self.alignment {
            Alignment::Default => page_size(),
            Alignment::Value(a) | Alignment::Mask(a) => a,
        }
    }

    /// The prefix rounded up to the alignment, so that the data stays aligned.
    fn headroom(&self) -> usize {
        self.prefix.next_multiple_of(self.alignment())
    }

    /// The distance between two frames' data.
    fn stride(&self) -> usize {
        (self.headroom() + self.frame_size).next_multiple_of(self.alignment())
    }
}

fn pool_spec() -> impl Strategy<Value = PoolSpec> {
    let page = page_size();
    let frame_size = prop_oneof![
        1 => Just(1usize),
        3 => 1..=256usize,
        4 => 1..=3 * page,
        2 => (1..=3usize).prop_map(move |k| k * page),
    ];
    let alignment = prop_oneof![
        Just(Alignment::Default),
        prop::sample::select(vec![64usize, 512, 4096, 65536]).prop_map(Alignment::Value),
        prop::sample::select(vec![64usize, 512, 4096, 65536]).prop_map(Alignment::Mask),
    ];
    (
        frame_size,
        // Small pools run out (and make futures wait) more often.
        prop_oneof![1..=3usize, 1..=8usize],
        alignment,
        0..3u8,
        any_index(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(frame_size, frames, alignment, prefix_kind, prefix_at, zero_on_reuse, heap)| {
                let prefix = match prefix_kind {
                    0 => 0,
                    1 => prefix_at.index(frame_size.min(100) + 1),
                    _ => prefix_at.index(frame_size + 1),
                };
                PoolSpec {
                    frame_size,
                    frames,
                    alignment,
                    prefix,
                    zero_on_reuse,
                    heap,
                }
            },
        )
}

// ---------------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------------

/// Each `Index` picks among what exists when the operation runs; an operation that
/// finds nothing to act on does nothing.
#[derive(Debug, Clone)]
enum Op {
    TryAllocate(Index),
    /// `allocate()`; only run when the model has a frame free or the pool is closed
    /// (it would wait forever otherwise).
    Allocate(Index),
    AllocateTimeout(Index, u64),
    /// A new `allocate_async` future, polled once; kept while pending.
    AsyncStart(Index),
    /// Polls a pending future again.
    AsyncPoll(Index),
    /// Drops a pending future (cancellation).
    AsyncDrop(Index),
    /// `whole_mut()[at..at + len] = pattern(seed)`, then `set_len(new_len)`.
    Write {
        h: Index,
        at: Index,
        len: Index,
        seed: u8,
        new_len: Index,
    },
    Freeze(Index),
    Clone(Index),
    Slice(Index, Index, Index),
    TryIntoMut(Index),
    Drop(Index),
    /// Drops a view on another thread.
    DropOnThread(Index),
    Close(Index),
    ClonePool(Index),
    DropPool(Index, Index),
}

fn op() -> impl Strategy<Value = Op> {
    let i = any_index;
    prop_oneof![
        10 => i().prop_map(Op::TryAllocate),
        3 => i().prop_map(Op::Allocate),
        4 => (i(), prop::sample::select(vec![0u64, 1, 20, 100])).prop_map(|(p, us)| Op::AllocateTimeout(p, us)),
        3 => i().prop_map(Op::AsyncStart),
        4 => i().prop_map(Op::AsyncPoll),
        2 => i().prop_map(Op::AsyncDrop),
        6 => (i(), i(), i(), any::<u8>(), i())
            .prop_map(|(h, at, len, seed, new_len)| Op::Write { h, at, len, seed, new_len }),
        4 => i().prop_map(Op::Freeze),
        3 => i().prop_map(Op::Clone),
        3 => (i(), i(), i()).prop_map(|(h, a, b)| Op::Slice(h, a, b)),
        2 => i().prop_map(Op::TryIntoMut),
        10 => i().prop_map(Op::Drop),
        1 => i().prop_map(Op::DropOnThread),
        1 => i().prop_map(Op::Close),
        2 => i().prop_map(Op::ClonePool),
        2 => (i(), i()).prop_map(|(p, h)| Op::DropPool(p, h)),
    ]
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_add((i as u8).wrapping_mul(31)) ^ 0x5A)
        .collect()
}

// ---------------------------------------------------------------------------------
// Coverage: which corners the random walks reached
// ---------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Corner {
    TryAllocateExhausted,
    TryAllocateClosed,
    TimedOut,
    FuturePending,
    FrameHandedToFuture,
    FutureCollectedHandedFrame,
    FutureCancelledHoldingFrame,
    FutureSawClose,
    FramesOutliveEveryHandle,
    RecycledZeroed,
    RecycledPoisonedOrKept,
    TryIntoMutShared,
    DroppedOnThread,
}

const CORNERS: [Corner; 13] = [
    Corner::TryAllocateExhausted,
    Corner::TryAllocateClosed,
    Corner::TimedOut,
    Corner::FuturePending,
    Corner::FrameHandedToFuture,
    Corner::FutureCollectedHandedFrame,
    Corner::FutureCancelledHoldingFrame,
    Corner::FutureSawClose,
    Corner::FramesOutliveEveryHandle,
    Corner::RecycledZeroed,
    Corner::RecycledPoisonedOrKept,
    Corner::TryIntoMutShared,
    Corner::DroppedOnThread,
];

static HITS: [AtomicU64; CORNERS.len()] = [const { AtomicU64::new(0) }; CORNERS.len()];

fn hit(corner: Corner) {
    HITS[corner as usize].fetch_add(1, Ordering::Relaxed);
}

// ---------------------------------------------------------------------------------
// The model and the real things it describes
// ---------------------------------------------------------------------------------

struct PoolState {
    spec: PoolSpec,
    /// The real handles (`FramePool` clones) the test holds.
    handles: Vec<FramePool>,
    /// Futures alive for this pool; each holds a handle too.
    futures: usize,
    /// Every handle is gone: `stats()` cannot be asked any more, and frames coming home
    /// are no longer tracked (the pool frees itself after the last one).
    orphaned: bool,
    closed: bool,
    /// Frames not in the free list: held as views, or handed to a waiting future.
    out: usize,
    allocations: u64,
    high_water: usize,
    exhausted: u64,
    waits: u64,
    /// Ids of the futures in the pool's wait queue, oldest first.
    queue: VecDeque<u64>,
    /// What each frame that came home will read when handed out again (without
    /// `zero_on_reuse`). A frame not here was never handed out: it reads zero.
    home: HashMap<usize, Vec<u8>>,
    /// Every frame address this pool handed out.
    seen: BTreeSet<usize>,
}

impl PoolState {
    /// The bytes a frame at `base` holds when handed out now.
    fn bytes_on_hand_out(&self, base: usize) -> Vec<u8> {
        match self.home.get(&base) {
            Some(bytes) if !self.spec.zero_on_reuse => bytes.clone(),
            _ => vec![0; self.spec.frame_size],
        }
    }

    fn handle(&self) -> Option<&FramePool> {
        self.handles.last()
    }
}

/// The bytes a frame holds once returned: debug builds poison them.
fn returned(bytes: Vec<u8>) -> Vec<u8> {
    if cfg!(debug_assertions) {
        vec![support::POISON_BYTE; bytes.len()]
    } else {
        bytes
    }
}

struct FrameState {
    pool: usize,
    size: usize,
    bytes: Vec<u8>,
    views: usize,
}

enum Real {
    Mut(BufferMut),
    Shared(Buffer),
}

/// One view: the real buffer and where the model says it looks.
struct View {
    real: Real,
    base: usize,
    off: usize,
    len: usize,
    cap: usize,
}

struct Waiting {
    pool: usize,
    future: Pin<Box<AllocateFuture>>,
    /// The frame a release handed to this future.
    handed: Option<usize>,
}

struct State {
    pools: Vec<PoolState>,
    frames: HashMap<usize, FrameState>,
    views: Vec<View>,
    futures: BTreeMap<u64, Waiting>,
    next_future: u64,
}

fn poll_once(future: Pin<&mut AllocateFuture>) -> Poll<pagebuf::Result<BufferMut>> {
    future.poll(&mut Context::from_waker(Waker::noop()))
}

impl State {
    fn new(specs: &[PoolSpec]) -> State {
        let pools = specs
            .iter()
            .map(|spec| {
                let pool = FramePool::new(spec.framing()).expect("a valid framing");
                assert_eq!(pool.headroom(), spec.headroom(), "{spec:?}");
                PoolState {
                    spec: spec.clone(),
                    handles: vec![pool],
                    futures: 0,
                    orphaned: false,
                    closed: false,
                    out: 0,
                    allocations: 0,
                    high_water: 0,
                    exhausted: 0,
                    waits: 0,
                    queue: VecDeque::new(),
                    home: HashMap::new(),
                    seen: BTreeSet::new(),
                }
            })
            .collect();
        State {
            pools,
            frames: HashMap::new(),
            views: Vec::new(),
            futures: BTreeMap::new(),
            next_future: 0,
        }
    }

    /// A frame just handed out as `buf`, taken from the free list (`handed == None`) or
    /// collected by a future it was handed to (`handed == Some(address)`).
    fn handed_out(&mut self, p: usize, mut buf: BufferMut, handed: Option<usize>) {
        let base = buf.as_ptr() as usize;
        let reserved: Vec<usize> = self
            .futures
            .values()
            .filter_map(|w| w.handed)
            .filter(|&b| Some(b) != handed)
            .collect();
        let pool = &mut self.pools[p];
        let spec = &pool.spec;
        let size = spec.frame_size;
        match handed {
            Some(expected) => assert_eq!(
                base, expected,
                "a future got another frame than the one handed to it"
            ),
            None => pool.out += 1,
        }
        pool.allocations += 1;
        pool.high_water = pool.high_water.max(pool.out);
        assert!(
            pool.out <= spec.frames,
            "{} frames out of {}",
            pool.out,
            spec.frames
        );

        // Where it is.
        assert_eq!(base % spec.alignment(), 0, "misaligned frame: {spec:?}");
        assert_eq!(buf.alignment(), spec.alignment());
        assert_eq!(buf.origin(), MemoryOrigin::Pool);
        assert_eq!((buf.len(), buf.max_len()), (0, size));
        pool.seen.insert(base);
        let (lo, hi) = (*pool.seen.first().unwrap(), *pool.seen.last().unwrap());
        assert!(pool.seen.len() <= spec.frames, "more addresses than frames");
        assert!(
            hi - lo <= (spec.frames - 1) * spec.stride(),
            "outside the pool"
        );
        for &b in &pool.seen {
            assert_eq!((b - lo) % spec.stride(), 0, "off the frame grid: {spec:?}");
        }
        assert!(
            !reserved.contains(&base),
            "handed out a frame reserved for a waiting future"
        );
        for (&other, frame) in &self.frames {
            assert!(
                base + size <= other || other + frame.size <= base,
                "frame {base:#x}+{size} overlaps frame {other:#x}+{} still out",
                frame.size
            );
        }

        // What it holds.
        let expected = pool.bytes_on_hand_out(base);
        if pool.home.contains_key(&base) {
            hit(if spec.zero_on_reuse {
                Corner::RecycledZeroed
            } else {
                Corner::RecycledPoisonedOrKept
            });
        }
        assert!(
            buf.whole_mut() == &expected[..],
            "frame {base:#x} does not read as expected on hand-out (zero_on_reuse {}, \
             first use {})",
            spec.zero_on_reuse,
            !pool.home.contains_key(&base)
        );

        self.frames.insert(
            base,
            FrameState {
                pool: p,
                size,
                bytes: expected,
                views: 1,
            },
        );
        self.views.push(View {
            real: Real::Mut(buf),
            base,
            off: 0,
            len: 0,
            cap: size,
        });
    }

    /// A frame of pool `p` released with `bytes` in it: to the oldest waiting future
    /// that has none, or home.
    fn came_home(&mut self, p: usize, base: usize, bytes: Vec<u8>) {
        let pool = &mut self.pools[p];
        if pool.orphaned {
            return;
        }
        pool.home.insert(base, returned(bytes));
        if !pool.closed {
            let next = pool
                .queue
                .iter()
                .copied()
                .find(|id| self.futures[id].handed.is_none());
            if let Some(id) = next {
                self.futures.get_mut(&id).unwrap().handed = Some(base);
                hit(Corner::FrameHandedToFuture);
                return;
            }
        }
        pool.out -= 1;
    }

    fn drop_view(&mut self, i: usize, elsewhere: bool) {
        let view = self.views.swap_remove(i);
        if elsewhere {
            hit(Corner::DroppedOnThread);
            std::thread::scope(|s| {
                s.spawn(move || drop(view.real));
            });
        } else {
            drop(view.real);
        }
        let frame = self.frames.get_mut(&view.base).unwrap();
        frame.views -= 1;
        if frame.views == 0 {
            let frame = self.frames.remove(&view.base).unwrap();
            self.came_home(frame.pool, view.base, frame.bytes);
        }
    }

    /// A future (holding a handle) is gone; the last handle orphans the pool.
    fn future_gone(&mut self, p: usize) {
        let pool = &mut self.pools[p];
        pool.futures -= 1;
        self.maybe_orphaned(p);
    }

    fn maybe_orphaned(&mut self, p: usize) {
        let pool = &mut self.pools[p];
        if pool.handles.is_empty() && pool.futures == 0 && !pool.orphaned {
            assert!(pool.queue.is_empty());
            pool.orphaned = true;
            if self.frames.values().any(|f| f.pool == p) {
                hit(Corner::FramesOutliveEveryHandle);
            }
        }
    }

    fn pool_with_handle(&self, pick: Index) -> Option<usize> {
        let p = pick.index(self.pools.len());
        self.pools[p].handle().map(|_| p)
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::TryAllocate(p) => {
                let Some(p) = self.pool_with_handle(p) else {
                    return;
                };
                let pool = &mut self.pools[p];
                let got = pool.handle().unwrap().try_allocate();
                if pool.closed {
                    assert!(got.is_none(), "try_allocate on a closed pool gave a frame");
                    hit(Corner::TryAllocateClosed);
                } else if pool.out == pool.spec.frames {
                    assert!(got.is_none(), "try_allocate gave more than `frames`");
                    hit(Corner::TryAllocateExhausted);
                    pool.exhausted += 1;
                } else {
                    let buf = got.unwrap_or_else(|| {
                        panic!(
                            "try_allocate is None with {} of {} frames out",
                            pool.out, pool.spec.frames
                        )
                    });
                    self.handed_out(p, buf, None);
                }
            }
            Op::Allocate(p) => {
                let Some(p) = self.pool_with_handle(p) else {
                    return;
                };
                let pool = &mut self.pools[p];
                if pool.closed {
                    let got = pool.handle().unwrap().allocate();
                    assert!(matches!(got, Err(Error::Closed)), "{got:?}");
                } else if pool.out < pool.spec.frames {
                    let buf = pool.handle().unwrap().allocate().unwrap();
                    self.handed_out(p, buf, None);
                }
            }
            Op::AllocateTimeout(p, micros) => {
                let Some(p) = self.pool_with_handle(p) else {
                    return;
                };
                let pool = &mut self.pools[p];
                let timeout = Duration::from_micros(micros);
                let got = pool.handle().unwrap().allocate_timeout(timeout);
                if pool.closed {
                    assert!(matches!(got, Err(Error::Closed)), "{got:?}");
                } else if pool.out == pool.spec.frames {
                    match got {
                        Err(Error::Timeout { waited, .. }) => {
                            assert_eq!(waited, timeout);
                            hit(Corner::TimedOut);
                        }
                        other => panic!("expected a timeout, every frame is out: {other:?}"),
                    }
                    pool.exhausted += 1;
                    pool.waits += 1;
                } else {
                    let buf = got.unwrap_or_else(|e| {
                        panic!(
                            "allocate_timeout failed with {} of {} frames out: {e}",
                            pool.out, pool.spec.frames
                        )
                    });
                    self.handed_out(p, buf, None);
                }
            }
            Op::AsyncStart(p) => {
                let Some(p) = self.pool_with_handle(p) else {
                    return;
                };
                let pool = &mut self.pools[p];
                let mut future = Box::pin(pool.handle().unwrap().allocate_async());
                let polled = poll_once(future.as_mut());
                if pool.closed {
                    assert!(matches!(polled, Poll::Ready(Err(Error::Closed))));
                } else if pool.out < pool.spec.frames {
                    match polled {
                        Poll::Ready(Ok(buf)) => self.handed_out(p, buf, None),
                        other => panic!("a frame is free, yet the future gave {other:?}"),
                    }
                } else {
                    assert!(polled.is_pending(), "every frame is out: {polled:?}");
                    hit(Corner::FuturePending);
                    pool.exhausted += 1;
                    pool.waits += 1;
                    pool.futures += 1;
                    let id = self.next_future;
                    self.next_future += 1;
                    pool.queue.push_back(id);
                    self.futures.insert(
                        id,
                        Waiting {
                            pool: p,
                            future,
                            handed: None,
                        },
                    );
                }
            }
            Op::AsyncPoll(f) => {
                if self.futures.is_empty() {
                    return;
                }
                let id = *self
                    .futures
                    .keys()
                    .nth(f.index(self.futures.len()))
                    .unwrap();
                let waiting = self.futures.get_mut(&id).unwrap();
                let p = waiting.pool;
                let polled = poll_once(waiting.future.as_mut());
                let handed = waiting.handed;
                let closed = self.pools[p].closed;
                match (polled, handed) {
                    (Poll::Ready(Ok(buf)), Some(base)) => {
                        hit(Corner::FutureCollectedHandedFrame);
                        self.leave(id);
                        self.handed_out(p, buf, Some(base));
                    }
                    (Poll::Ready(Err(Error::Closed)), None) if closed => {
                        hit(Corner::FutureSawClose);
                        self.leave(id);
                    }
                    (Poll::Pending, None) if !closed => {}
                    (polled, handed) => {
                        panic!("future polled to {polled:?}; handed {handed:?}, closed {closed}")
                    }
                }
            }
            Op::AsyncDrop(f) => {
                if self.futures.is_empty() {
                    return;
                }
                let id = *self
                    .futures
                    .keys()
                    .nth(f.index(self.futures.len()))
                    .unwrap();
                let handed = self.futures[&id].handed;
                let p = self.futures[&id].pool;
                // Drop it while the model still lists it: `leave` below does the rest.
                let waiting = self.futures.remove(&id).unwrap();
                drop(waiting.future);
                self.pools[p].queue.retain(|&q| q != id);
                if let Some(base) = handed {
                    // Cancelled holding a frame: it becomes a buffer (an allocation) and is
                    // dropped at once, going on to the next future in line, or home.
                    hit(Corner::FutureCancelledHoldingFrame);
                    let pool = &mut self.pools[p];
                    pool.allocations += 1;
                    let bytes = pool.bytes_on_hand_out(base);
                    self.came_home(p, base, bytes);
                }
                self.future_gone(p);
            }
            Op::Write {
                h,
                at,
                len,
                seed,
                new_len,
            } => {
                let muts: Vec<usize> = (0..self.views.len())
                    .filter(|&i| matches!(self.views[i].real, Real::Mut(_)))
                    .collect();
                if muts.is_empty() {
                    return;
                }
                let view = &mut self.views[muts[h.index(muts.len())]];
                let at = at.index(view.cap + 1);
                let len = len.index(view.cap - at + 1);
                let new_len = new_len.index(view.cap + 1);
                let bytes = pattern(len, seed);
                let Real::Mut(buf) = &mut view.real else {
                    unreachable!()
                };
                buf.whole_mut()[at..at + len].copy_from_slice(&bytes);
                buf.set_len(new_len).unwrap();
                view.len = new_len;
                let frame = self.frames.get_mut(&view.base).unwrap();
                let from = view.off + at;
                frame.bytes[from..from + len].copy_from_slice(&bytes);
            }
            Op::Freeze(h) => {
                let Some(i) = self.pick_view(h, |r| matches!(r, Real::Mut(_))) else {
                    return;
                };
                let view = self.views.swap_remove(i);
                let Real::Mut(buf) = view.real else {
                    unreachable!()
                };
                self.views.push(View {
                    real: Real::Shared(buf.freeze()),
                    ..view
                });
            }
            Op::Clone(h) => {
                let Some(i) = self.pick_view(h, |r| matches!(r, Real::Shared(_))) else {
                    return;
                };
                let view = &self.views[i];
                let Real::Shared(buf) = &view.real else {
                    unreachable!()
                };
                let copy = View {
                    real: Real::Shared(buf.clone()),
                    ..*view
                };
                self.frames.get_mut(&view.base).unwrap().views += 1;
                self.views.push(copy);
            }
            Op::Slice(h, a, b) => {
                let Some(i) = self.pick_view(h, |r| matches!(r, Real::Shared(_))) else {
                    return;
                };
                let view = &self.views[i];
                let Real::Shared(buf) = &view.real else {
                    unreachable!()
                };
                let start = a.index(view.len + 1);
                let end = start + b.index(view.len - start + 1);
                let slice = View {
                    real: Real::Shared(buf.slice(start..end).unwrap()),
                    base: view.base,
                    off: view.off + start,
                    len: end - start,
                    cap: end - start,
                };
                self.frames.get_mut(&view.base).unwrap().views += 1;
                self.views.push(slice);
            }
            Op::TryIntoMut(h) => {
                let Some(i) = self.pick_view(h, |r| matches!(r, Real::Shared(_))) else {
                    return;
                };
                let view = self.views.swap_remove(i);
                let unique = self.frames[&view.base].views == 1;
                let Real::Shared(buf) = view.real else {
                    unreachable!()
                };
                let real = match buf.try_into_mut() {
                    Ok(buf) => {
                        assert!(unique, "a shared frame became a BufferMut");
                        hit(Corner::TryIntoMutShared);
                        Real::Mut(buf)
                    }
                    Err(buf) => {
                        assert!(
                            !unique,
                            "the only view of a frame did not become a BufferMut"
                        );
                        Real::Shared(buf)
                    }
                };
                self.views.push(View { real, ..view });
            }
            Op::Drop(h) => {
                if !self.views.is_empty() {
                    self.drop_view(h.index(self.views.len()), false);
                }
            }
            Op::DropOnThread(h) => {
                if !self.views.is_empty() {
                    self.drop_view(h.index(self.views.len()), true);
                }
            }
            Op::Close(p) => {
                let Some(p) = self.pool_with_handle(p) else {
                    return;
                };
                let pool = &mut self.pools[p];
                pool.handle().unwrap().close();
                pool.closed = true;
                assert!(pool.handle().unwrap().is_closed());
            }
            Op::ClonePool(p) => {
                let Some(p) = self.pool_with_handle(p) else {
                    return;
                };
                let pool = &mut self.pools[p];
                let clone = pool.handle().unwrap().clone();
                pool.handles.push(clone);
            }
            Op::DropPool(p, h) => {
                let Some(p) = self.pool_with_handle(p) else {
                    return;
                };
                let pool = &mut self.pools[p];
                let h = h.index(pool.handles.len());
                drop(pool.handles.swap_remove(h));
                self.maybe_orphaned(p);
            }
        }
    }

    /// A future resolved (collected its frame, or saw the close): out of line, and
    /// dropped with its handle.
    fn leave(&mut self, id: u64) {
        let waiting = self.futures.remove(&id).unwrap();
        let p = waiting.pool;
        self.pools[p].queue.retain(|&q| q != id);
        drop(waiting.future);
        self.future_gone(p);
    }

    fn pick_view(&self, pick: Index, want: impl Fn(&Real) -> bool) -> Option<usize> {
        let candidates: Vec<usize> = (0..self.views.len())
            .filter(|&i| want(&self.views[i].real))
            .collect();
        (!candidates.is_empty()).then(|| candidates[pick.index(candidates.len())])
    }

    /// Everything the model says holds now.
    fn check(&mut self) {
        for view in &mut self.views {
            let frame = &self.frames[&view.base];
            let pool = &self.pools[frame.pool];
            let expected_alignment = if view.off == 0 {
                pool.spec.alignment()
            } else {
                pool.spec.alignment().min(1 << view.off.trailing_zeros())
            };
            let at = view.base + view.off;
            let content = &frame.bytes[view.off..view.off + view.len];
            match &mut view.real {
                Real::Mut(buf) => {
                    assert_eq!(frame.views, 1, "a BufferMut is the only view");
                    assert_eq!(buf.as_ptr() as usize, at);
                    assert_eq!((buf.len(), buf.max_len()), (view.len, view.cap));
                    assert_eq!(buf.alignment(), expected_alignment);
                    assert_eq!(buf.origin(), MemoryOrigin::Pool);
                    assert!(
                        &buf[..] == content,
                        "frame {:#x}: content changed",
                        view.base
                    );
                    assert!(
                        buf.whole_mut() == &frame.bytes[view.off..view.off + view.cap],
                        "frame {:#x}: bytes past the length changed",
                        view.base
                    );
                }
                Real::Shared(buf) => {
                    assert_eq!(buf.as_ptr() as usize, at);
                    assert_eq!((buf.len(), buf.max_len()), (view.len, view.cap));
                    assert_eq!(buf.alignment(), expected_alignment);
                    assert_eq!(buf.origin(), MemoryOrigin::Pool);
                    assert_eq!(buf.ref_count(), frame.views);
                    assert!(
                        &buf[..] == content,
                        "frame {:#x}: content changed",
                        view.base
                    );
                }
            }
        }

        for (p, pool) in self.pools.iter().enumerate() {
            let live = self.frames.values().filter(|f| f.pool == p).count();
            let handed = self
                .futures
                .values()
                .filter(|w| w.pool == p && w.handed.is_some())
                .count();
            if !pool.orphaned {
                assert_eq!(pool.out, live + handed, "model: frames out");
            }
            assert!(pool.out <= pool.spec.frames);
            let needy = pool
                .queue
                .iter()
                .any(|id| self.futures[id].handed.is_none());
            if needy && !pool.closed {
                assert_eq!(
                    pool.out, pool.spec.frames,
                    "model: a waiter with frames free"
                );
            }
            let Some(handle) = pool.handle() else {
                continue;
            };
            let stats = handle.stats();
            let expected = (
                pool.spec.frames,
                pool.spec.frame_size,
                pool.spec.frames - pool.out,
                pool.out,
                pool.high_water,
                pool.allocations,
                pool.exhausted,
                pool.waits,
                pool.queue.len(),
                pool.closed,
            );
            let actual = (
                stats.frames,
                stats.frame_size,
                stats.free,
                stats.in_use,
                stats.high_water,
                stats.allocations,
                stats.exhausted,
                stats.waits,
                stats.waiting,
                stats.closed,
            );
            assert_eq!(
                actual, expected,
                "stats of pool {p} (frames, frame_size, free, in_use, high_water, \
                 allocations, exhausted, waits, waiting, closed) differ from the model"
            );
        }
    }
}

impl Drop for State {
    /// Tear down in an order that keeps futures and pools consistent: futures first
    /// (they may hold handed frames), then views, then handles.
    fn drop(&mut self) {
        self.futures.clear();
        self.views.clear();
        for pool in &mut self.pools {
            pool.handles.clear();
        }
    }
}

// ---------------------------------------------------------------------------------
// A guard against a hang: `allocate()` waits forever if the pool wrongly has no frame.
// ---------------------------------------------------------------------------------

static PROGRESS: AtomicU64 = AtomicU64::new(0);

fn watchdog() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        std::thread::spawn(|| {
            let mut last = u64::MAX;
            let mut stuck = 0;
            loop {
                std::thread::sleep(Duration::from_secs(1));
                let now = PROGRESS.load(Ordering::Relaxed);
                stuck = if now == last { stuck + 1 } else { 0 };
                last = now;
                if stuck >= 60 {
                    eprintln!("pool_model: no step finished for 60 s: a pool operation hangs");
                    std::process::abort();
                }
            }
        });
    });
}

fn run(specs: &[PoolSpec], ops: &[Op]) {
    watchdog();
    let mut state = State::new(specs);
    state.check();
    for op in ops {
        state.apply(op);
        state.check();
        PROGRESS.fetch_add(1, Ordering::Relaxed);
    }
    // Everything given back: every pool that still has a handle is whole again.
    state.futures.clear();
    state.views.clear();
    for pool in &state.pools {
        if let Some(handle) = pool.handle() {
            let stats = handle.stats();
            assert_eq!(
                (stats.free, stats.in_use, stats.waiting),
                (pool.spec.frames, 0, 0)
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        max_shrink_iters: 4096,
        ..ProptestConfig::default()
    })]

    #[test]
    fn pools_follow_the_model(
        specs in prop::collection::vec(pool_spec(), 1..=3),
        ops in prop::collection::vec(op(), 1..100),
    ) {
        run(&specs, &ops);
    }
}

/// A fixed sequence through every corner the random ones may miss: waiting futures
/// served in order, a cancelled future's frame going on, close with futures waiting,
/// frames outliving every handle.
#[test]
fn a_fixed_walk_through_the_corners() {
    let spec = PoolSpec {
        frame_size: 100,
        frames: 2,
        alignment: Alignment::Mask(512),
        prefix: 7,
        zero_on_reuse: false,
        heap: false,
    };
    let first = Index::FIRST;
    let ops = vec![
        Op::TryAllocate(first),
        Op::TryAllocate(first),
        Op::TryAllocate(first), // none left
        Op::AllocateTimeout(first, 1),
        Op::AsyncStart(first), // waits (future 0)
        Op::AsyncStart(first), // waits (future 1)
        Op::AsyncStart(first), // waits (future 2)
        Op::Drop(first),       // handed to future 0
        Op::AsyncDrop(first),  // future 0 cancelled: its frame goes to future 1
        Op::AsyncPoll(first),  // future 1 collects it
        Op::Close(first),
        Op::AsyncPoll(first), // future 2: closed
        Op::TryAllocate(first),
        Op::Allocate(first),
        Op::AllocateTimeout(first, 0),
        Op::Freeze(first),
        Op::Clone(first),
        Op::DropPool(first, first), // the last handle: frames outlive it
        Op::Drop(first),
        Op::Drop(first),
        Op::Drop(first),
    ];
    run(&[spec], &ops);
}

/// The random walks are not vacuous: a fixed-seed run of 128 cases reaches every corner
/// the model distinguishes (if a change to the strategies stops reaching one, this says
/// which).
#[test]
fn the_random_walks_reach_every_corner() {
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases: 128,
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
    );
    let strategy = (
        prop::collection::vec(pool_spec(), 1..=3),
        prop::collection::vec(op(), 1..100),
    );
    runner
        .run(&strategy, |(specs, ops)| {
            run(&specs, &ops);
            Ok(())
        })
        .unwrap();
    let missed: Vec<Corner> = CORNERS
        .iter()
        .copied()
        .filter(|&c| HITS[c as usize].load(Ordering::Relaxed) == 0)
        .collect();
    let counts: Vec<(Corner, u64)> = CORNERS
        .iter()
        .map(|&c| (c, HITS[c as usize].load(Ordering::Relaxed)))
        .collect();
    eprintln!("corners reached: {counts:?}");
    assert!(missed.is_empty(), "never reached: {missed:?}");
}
