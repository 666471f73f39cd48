//! The per-thread fast path of a frame pool: each thread that allocates from a pool owns
//! one *slot* that can hold one parked frame. A frame remembers the slot of the thread
//! that took it (its *home*); dropping it on that thread parks it there, and the next
//! allocation on that thread takes it back. Each is one read-modify-write on a line no
//! other thread writes in the single-thread round trip, and the release needs no
//! thread-local look-up: it compares the slot's owner with the thread pointer. A frame
//! dropped on another thread takes the slow way (the returned list, batched) rather
//! than bounce the slot's line between the two threads for every frame.
//!
//! A parked frame still counts as free and stays reachable: anyone who needs it
//! (a waiter about to sleep, `try_allocate` finding the lists empty, `close`, the last
//! handle tearing the pool down) *reclaims* parked frames.
//!
//! The protocol: a slot is one atomic word, holding a parked frame (its header), `EMPTY`
//! or `KEPT_OFF` (the pool is closed or torn down, the owner thread is gone, or the slot
//! is a stand-in: park nothing here). Every change is one read-modify-write, so two
//! parties can never both have the frame:
//!
//! ```text
//! owner, take:    swap(EMPTY)      a frame: ours. KEPT_OFF: cas(EMPTY -> KEPT_OFF) back
//! owner, park:    swap(frame)      EMPTY: parked. A frame: displaced, the owner gives it
//!                                  back. KEPT_OFF: swap(KEPT_OFF) back, and the frame is
//!                                  still ours if that returns it (else a reclaimer has it)
//!                                  then, if a waiter appeared: cas(frame -> EMPTY)
//! reclaimer:      cas(frame -> EMPTY)      (registry lock held; close: swap(KEPT_OFF))
//! ```
//!
//! Only a slot's owner thread takes from it or parks in it: a release parks only where
//! the slot names the releasing thread as its owner (written by that thread when it
//! makes or adopts the slot, cleared when it exits, so a thread pointer reused by a new
//! thread never matches a slot it does not own). So the owner never races itself, and
//! the instants in which a take or a park has opened a `KEPT_OFF` slot are seen only by
//! reclaimers, which take frames and never put one in. Parking by swap rather than
//! compare-and-swap is for speed: on this host the same round trip ran about 1.3 ns
//! faster (BENCHMARKS.md).
//!
//! A waiter sets the free list's WAITING bit before it reclaims; a release checks it
//! after it parked (both sequentially consistent), so either the waiter's reclaim finds
//! the frame or the release sees the bit and takes the frame back to hand it over: no
//! frame stays parked while someone sleeps for lack of one. Once a frame is parked, the
//! last handle may reclaim it and free the pool at any moment, so the release reads the
//! bit through the slot, which keeps the free list alive (an `Arc`) and is itself kept
//! alive by its owner thread's entry.
//!
//! Finding the caller's own slot (to allocate) costs one thread-local read and a
//! compare: `LAST` points at the slot this thread used last, which names its pool. A
//! thread with no slot for a pool (a consumer that only releases) is remembered too, by
//! pointing `LAST` at its stand-in, a slot that is always `KEPT_OFF`; so the fast path
//! never tests for "no slot". A frame taken by a thread without a slot has its pool's
//! stand-in as its home, which no thread owns.
//!
//! A producer (a thread whose frames are all dropped elsewhere) would find its slot
//! empty on every take, and pay a locked swap each time for nothing; after a run of
//! empty takes its slot's key says so (`Lookup::PastSlot`), the fast path's compare
//! fails, and its takes go to the lists, looking at the slot only now and then, and
//! whenever the lists are empty (a frame its own drops parked there is free: the take
//! must not call the pool empty, or wait, while it sits there). That is a matter of
//! the owner alone: the slot word's protocol is unchanged.
//!
//! Slots live as long as their pool (a frame's home must stay valid while the frame is
//! out): thread exit (the thread-local's destructor) takes a parked frame back, gives it
//! to the pool and leaves the slot `KEPT_OFF`, ownerless and abandoned, for the next
//! thread that allocates from the pool to adopt.
#![allow(unsafe_code)] // listed in ARCHITECTURE.md, "Where `unsafe` lives"

use std::cell::RefCell;
use std::ptr::NonNull;
use std::sync::Arc;

use crossbeam_utils::CachePadded;

use super::free_list::FreeList;
use crate::buffer::header::Header;
use crate::sync::{AtomicBool, AtomicPtr, AtomicU64, Mutex, Ordering};

/// A frame, by its buffer header (what a release has in hand, and what builds the
/// buffer again).
pub(crate) type Frame = NonNull<Header>;

/// The slot word with nothing parked.
const EMPTY: *mut Header = std::ptr::null_mut();
/// The slot word of a pool closed or torn down, of a thread gone, or of a stand-in:
/// nothing is parked here any more. Never dereferenced.
const KEPT_OFF: *mut Header = std::ptr::without_provenance_mut(1);

/// The frame a slot word holds, if it holds one.
#[inline]
fn frame_in(word: *mut Header) -> Option<Frame> {
    if word.addr() > KEPT_OFF.addr() {
        NonNull::new(word)
    } else {
        None
    }
}

/// The calling thread, as a number no other live thread has (and never 0): on x86-64 the thread
/// pointer, one instruction and no thread-local look-up (which, compiled into this
/// library, would be a call for the linker to relax, and cost the release fast path its
/// registers); elsewhere the address of a thread-local.
#[cfg(all(target_arch = "x86_64", target_os = "linux", not(loom)))]
#[inline(always)]
pub(crate) fn this_thread() -> usize {
    let thread_pointer: usize;
    // SAFETY: in the x86-64 ELF TLS ABI (glibc and musl), %fs points at the thread's
    // control block, whose first word is its own address; reading it touches nothing
    // else, and no two live threads share a control block.
    unsafe {
        std::arch::asm!(
            "mov {}, qword ptr fs:[0]",
            out(reg) thread_pointer,
            options(pure, readonly, nostack, preserves_flags)
        );
    }
    thread_pointer
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux", not(loom))))]
pub(crate) fn this_thread() -> usize {
    #[cfg(not(loom))]
    std::thread_local! {
        static HERE: u8 = const { 0 };
    }
    #[cfg(loom)]
    loom::thread_local! {
        static HERE: u8 = 0;
    }
    HERE.with(|here| here as *const u8 as usize)
}

/// One thread's parking place for one pool. Kept `CachePadded` (in its `Arc`) so that
/// two threads' slots never share a cache line.
pub(crate) struct ThreadSlot {
    /// The registry id of the slot's pool (for a stand-in: the pool this thread was last
    /// found to have no slot for), with `PAST_SLOT` set while the owner's allocations
    /// skip the slot ([`Lookup`]): folded into the id so that the fast path's one
    /// compare tests both. Read and written by the owner thread alone, so not part of
    /// any protocol: a std atomic even under loom.
    key: std::sync::atomic::AtomicU64,
    /// A parked frame, `EMPTY` or `KEPT_OFF` (see the module documentation).
    frame: AtomicPtr<Header>,
    /// The thread that owns the slot (`this_thread`), 0 if none: written only by that
    /// thread (when it makes or adopts the slot, and when it exits), so a thread that
    /// reads its own number here is the owner. On a cache line of its own, read-mostly:
    /// every release of a frame whose home this is reads it, on whatever thread, and
    /// must not drag across the line the owner's allocations write. Not part of the
    /// word's protocol: a std atomic even under loom.
    owner: CachePadded<std::sync::atomic::AtomicUsize>,
    /// The pool's free list, whose WAITING bit a park reads: held here so that it lives
    /// as long as the slot (the pool may be gone by then). `None` only for the static
    /// stand-ins, which no thread owns and so no one parks in.
    free: Option<Arc<FreeList>>,
    kind: SlotKind,
    /// The owner thread has exited; the registry may forget the slot.
    abandoned: AtomicBool,
    /// Frames this thread took: written by the owner alone (no read-modify-write),
    /// summed by `stats`.
    allocations: AtomicU64,
    /// Owner-only: `allocations` at the last take that found the slot empty.
    missed_at: std::sync::atomic::AtomicU64,
    /// Owner-only: under `Lookup::Slot`, takes in a row that found the slot empty; under
    /// `Lookup::PastSlot`, takes since the slot was last looked at.
    run: std::sync::atomic::AtomicU32,
}

/// Where the owner's allocations look first. A thread whose frames are dropped on
/// other threads (a producer) finds its slot empty every time, and the take's swap
/// that finds nothing is not free: a locked instruction waits for the thread's
/// earlier stores, which in a producer are to lines its consumers hold (measured: 20
/// of 100 ns a cross-thread allocation). So after `MISSES_TO_SKIP` empty takes in a
/// row the owner stops looking, but for one look every `LOOK_EVERY` takes, which
/// finding a frame ends. A frame parked meanwhile (the owner dropped one of its own)
/// stays reclaimable like any parked frame; a second park displaces it to the free
/// list.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Lookup {
    /// Take the parked frame, if any (one swap).
    Slot,
    /// Go to the lists; look at the slot only every `LOOK_EVERY` takes.
    PastSlot,
}

/// The bit of a slot's key that says `Lookup::PastSlot` (registry ids stay far below).
const PAST_SLOT: u64 = 1 << 63;
/// Empty takes in a row after which the owner stops looking at its slot.
const MISSES_TO_SKIP: u32 = 8;
/// How often a thread that skips its slot looks at it all the same.
const LOOK_EVERY: u32 = 32;

impl ThreadSlot {
    fn new(pool_id: u64, frame: *mut Header, kind: SlotKind, free: &Arc<FreeList>) -> ThreadSlot {
        let owner = match kind {
            SlotKind::Owned => this_thread(),
            SlotKind::StandIn => 0,
        };
        ThreadSlot {
            key: std::sync::atomic::AtomicU64::new(pool_id),
            frame: AtomicPtr::new(frame),
            owner: CachePadded::new(std::sync::atomic::AtomicUsize::new(owner)),
            free: Some(free.clone()),
            kind,
            abandoned: AtomicBool::new(false),
            allocations: AtomicU64::new(0),
            missed_at: std::sync::atomic::AtomicU64::new(0),
            run: std::sync::atomic::AtomicU32::new(0),
        }
    }

    /// A slot that never holds a frame: `NOBODY`, and each thread's `NO_SLOT`.
    #[cfg(not(loom))]
    const fn stand_in(pool_id: u64) -> ThreadSlot {
        ThreadSlot {
            key: std::sync::atomic::AtomicU64::new(pool_id),
            frame: AtomicPtr::new(KEPT_OFF),
            owner: CachePadded::new(std::sync::atomic::AtomicUsize::new(0)),
            free: None,
            kind: SlotKind::StandIn,
            abandoned: AtomicBool::new(false),
            allocations: AtomicU64::new(0),
            missed_at: std::sync::atomic::AtomicU64::new(0),
            run: std::sync::atomic::AtomicU32::new(0),
        }
    }

    /// Whether this is the slot of pool `pool_id` and its owner looks in it first
    /// (`Lookup::Slot`): the fast path's test (which loom builds leave out).
    #[cfg_attr(loom, allow(dead_code))]
    #[inline]
    fn belongs_to(&self, pool_id: u64) -> bool {
        self.key.load(std::sync::atomic::Ordering::Relaxed) == pool_id
    }

    /// Whether this is the slot of pool `pool_id`, however its owner looks at it (one
    /// compare, not an `Option<Lookup>` built and taken apart).
    #[cfg_attr(loom, allow(dead_code))]
    #[inline]
    fn names_pool(&self, pool_id: u64) -> bool {
        self.key.load(std::sync::atomic::Ordering::Relaxed) & !PAST_SLOT == pool_id
    }

    /// Whether this is the slot of pool `pool_id` and its owner skips it
    /// (`Lookup::PastSlot`).
    #[cfg_attr(loom, allow(dead_code))]
    #[inline]
    fn skips_for(&self, pool_id: u64) -> bool {
        self.key.load(std::sync::atomic::Ordering::Relaxed) == pool_id | PAST_SLOT
    }

    /// How the owner looks at this slot, if it is the slot of pool `pool_id`.
    fn lookup_for(&self, pool_id: u64) -> Option<Lookup> {
        let key = self.key.load(std::sync::atomic::Ordering::Relaxed);
        if key == pool_id {
            Some(Lookup::Slot)
        } else if key == pool_id | PAST_SLOT {
            Some(Lookup::PastSlot)
        } else {
            None
        }
    }

    /// Owner-only: switches how the owner looks at the slot.
    fn set_lookup(&self, lookup: Lookup) {
        let key = self.key.load(std::sync::atomic::Ordering::Relaxed) & !PAST_SLOT;
        let key = match lookup {
            Lookup::Slot => key,
            Lookup::PastSlot => key | PAST_SLOT,
        };
        self.key.store(key, std::sync::atomic::Ordering::Relaxed);
        self.run.store(0, std::sync::atomic::Ordering::Relaxed);
    }

    /// Owner-only: counts one allocation.
    #[inline]
    fn count_allocation(&self) {
        let n = self.allocations.load(Ordering::Relaxed);
        self.allocations.store(n + 1, Ordering::Relaxed);
    }

    /// Counts an allocation here if this is a thread's own slot; false for a stand-in
    /// (the caller counts it elsewhere).
    pub(crate) fn count_if_owned(&self) -> bool {
        if self.kind == SlotKind::StandIn {
            return false;
        }
        self.count_allocation();
        true
    }

    /// Owner-only: takes the parked frame, if there is one: `hit` gets it, or `miss`
    /// learns why not.
    #[inline]
    fn take<'s, R>(
        &'s self,
        hit: impl FnOnce(Frame) -> R,
        miss: impl FnOnce(NotParked<'s>) -> R,
    ) -> R {
        let word = self.frame.swap(EMPTY, Ordering::Acquire);
        match frame_in(word) {
            Some(frame) => {
                self.count_allocation();
                hit(frame)
            }
            None => miss(self.missed(word)),
        }
    }

    /// Owner-only: [`take`](Self::take) as `lookup` says, for the cold paths: under
    /// `Lookup::PastSlot` the slot is looked at only every `LOOK_EVERY` calls, and a
    /// frame found there ends the skipping. A result, not continuations, so that the
    /// caller has one place for each and its continuations inline there.
    #[inline(always)]
    fn take_by(&self, lookup: Lookup) -> Result<Frame, NotParked<'_>> {
        if lookup == Lookup::PastSlot {
            let run = self.run.load(std::sync::atomic::Ordering::Relaxed) + 1;
            if run < LOOK_EVERY {
                self.run.store(run, std::sync::atomic::Ordering::Relaxed);
                return Err(NotParked::Skipped(self));
            }
            self.run.store(0, std::sync::atomic::Ordering::Relaxed);
            let frame = self.take(Ok, Err)?;
            self.set_lookup(Lookup::Slot);
            return Ok(frame);
        }
        self.take(Ok, Err)
    }

    /// Owner-only: after a `take` that found `word`, not a frame. `KEPT_OFF` goes back
    /// unless `close` has put it back already (only reclaimers, which put no frame in,
    /// saw the slot `EMPTY` meanwhile). An empty slot counts towards skipping it.
    #[cold]
    #[inline(never)]
    fn missed(&self, word: *mut Header) -> NotParked<'_> {
        if word != KEPT_OFF {
            self.count_miss();
            return NotParked::Empty(self);
        }
        let _ = self
            .frame
            .compare_exchange(EMPTY, KEPT_OFF, Ordering::AcqRel, Ordering::Relaxed);
        match self.kind {
            SlotKind::Owned => NotParked::Empty(self),
            SlotKind::StandIn => NotParked::NoSlot,
        }
    }

    /// Owner-only: a take found the slot empty. The allocation before it was the last
    /// miss's (taken from the lists and counted) if `allocations` moved by exactly one
    /// since: then the run goes on, and at `MISSES_TO_SKIP` the owner stops looking.
    /// Counted here, not on a hit, so the fast path writes nothing for it.
    fn count_miss(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        if self.kind == SlotKind::StandIn || self.key.load(Relaxed) & PAST_SLOT != 0 {
            // A stand-in is never looked past; a look while skipping restarts nothing.
            return;
        }
        let at = self.allocations.load(Relaxed);
        let run = if at == self.missed_at.load(Relaxed) + 1 {
            self.run.load(Relaxed) + 1
        } else {
            1
        };
        self.missed_at.store(at, Relaxed);
        if run >= MISSES_TO_SKIP {
            self.set_lookup(Lookup::PastSlot);
        } else {
            self.run.store(run, Relaxed);
        }
    }

    /// The thread that owns this slot, 0 if none.
    #[inline]
    pub(crate) fn owner(&self) -> usize {
        self.owner.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Owner-only: parks `frame` (see the module documentation) if the slot is empty;
    /// else `park_over` finishes the job. Once the frame is parked it may be reclaimed
    /// and its pool freed at any moment: the caller touches only this slot (`waiting`,
    /// `unpark`) from then on.
    #[inline]
    pub(crate) fn try_park(&self, frame: Frame) -> Result<(), Occupied> {
        let word = self.frame.swap(frame.as_ptr(), Ordering::SeqCst);
        if word == EMPTY {
            return Ok(());
        }
        Err(Occupied(word))
    }

    /// Owner-only: the rest of a `try_park` that found the slot occupied.
    pub(crate) fn park_over(&self, frame: Frame, Occupied(word): Occupied) -> Park {
        if let Some(displaced) = frame_in(word) {
            return Park::Displaced(displaced);
        }
        // KEPT_OFF: the pool is closed (an owner's slot is kept off only then). Put the
        // mark back; what the swap returns is ours.
        let back = self.frame.swap(KEPT_OFF, Ordering::SeqCst);
        if back == frame.as_ptr() {
            return Park::KeptOff;
        }
        match frame_in(back) {
            // Our frame was reclaimed meanwhile, and another parked: ours is gone, that
            // one ours to give back (no owner but us parks here, so this does not occur,
            // but nothing is lost if it does).
            Some(other) => Park::Displaced(other),
            // Our frame was reclaimed meanwhile: it is the reclaimer's.
            None => Park::Parked,
        }
    }

    /// Whether a waiter is queued on the slot's pool: read after a park. The slot keeps
    /// the free list alive, so this is safe after the pool is gone.
    #[inline]
    pub(crate) fn waiting(&self) -> bool {
        crate::sync::seqcst_order_for_loom();
        // SAFETY: only a slot's owner parks in it, and only the static stand-ins, which
        // no thread owns, have no free list.
        unsafe { self.free.as_deref().unwrap_unchecked() }.is_waiting()
    }

    /// Owner-only: takes back a frame just parked, for a waiter. False if a reclaim (the
    /// waiter's, say) took it already: then it is the reclaimer's.
    pub(crate) fn unpark(&self, frame: Frame) -> bool {
        self.frame
            .compare_exchange(frame.as_ptr(), EMPTY, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    /// Reclaimer-only (registry lock held): the parked frame, if any; with `for_good`
    /// the slot is left `KEPT_OFF`.
    fn reclaim(&self, for_good: bool) -> Option<Frame> {
        if for_good {
            return frame_in(self.frame.swap(KEPT_OFF, Ordering::SeqCst));
        }
        self.frame
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |word| {
                frame_in(word).map(|_| EMPTY)
            })
            .ok()
            .and_then(frame_in)
    }
}

/// What an allocation found in this thread's slot, when it found no frame.
pub(crate) enum NotParked<'a> {
    /// Nothing parked (or the pool is closed) in this thread's slot, which a frame
    /// taken off a list names as its home (handed on: no second look-up).
    Empty(&'a ThreadSlot),
    /// This thread skips its slot (`Lookup::PastSlot`) and did not look in it: a frame
    /// its own drops parked there may be, so a take that finds the lists empty looks
    /// ([`look_if_skipped`](Self::look_if_skipped)) before it calls the pool empty.
    Skipped(&'a ThreadSlot),
    /// This thread has no slot for the pool: it never allocated from it.
    NoSlot,
}

impl NotParked<'_> {
    /// The frame parked in a slot this thread skipped, if there is one (finding it
    /// ends the skipping, as the every-`LOOK_EVERY` look does): the last place a take
    /// looks before it finds the pool empty.
    #[cold]
    pub(crate) fn look_if_skipped(self) -> Option<Frame> {
        match self {
            NotParked::Skipped(own) => own.take(
                |frame| {
                    own.set_lookup(Lookup::Slot);
                    Some(frame)
                },
                |_| None,
            ),
            NotParked::Empty(_) | NotParked::NoSlot => None,
        }
    }
}

/// What a `try_park` found in the slot instead of `EMPTY` (it is in the slot no more:
/// `park_over` says whose it is now).
pub(crate) struct Occupied(*mut Header);

/// What became of a frame an owner parked.
#[must_use]
pub(crate) enum Park {
    /// Parked (or reclaimed from the slot since): no longer the caller's.
    Parked,
    /// Parked in place of this frame, which is now the caller's to give back.
    Displaced(Frame),
    /// Not parked: the pool is closed. The frame is still the caller's.
    KeptOff,
}

/// Real slots, or a thread's stand-in for "none".
#[derive(Clone, Copy, PartialEq, Eq)]
enum SlotKind {
    Owned,
    StandIn,
}

/// Gives a frame back to a pool (type-erased, for thread exit).
pub(crate) type GiveBack = unsafe fn(pool: *const (), frame: Frame);

/// The slots of one pool's threads.
pub(crate) struct Registry {
    id: u64,
    /// Whether threads get slots (pools that zero frames on reuse park none).
    parking: bool,
    /// The pool's free list, for the slots to keep.
    free: Arc<FreeList>,
    /// The home of frames taken by threads without a slot: owned by no thread, always
    /// `KEPT_OFF`.
    no_home: CachePadded<ThreadSlot>,
    slots: Mutex<Slots>,
}

struct Slots {
    /// Every slot ever made for the pool: a frame's home must outlive the frame, so a
    /// slot whose thread is gone is not freed but adopted by the next new thread.
    all: Vec<Arc<CachePadded<ThreadSlot>>>,
    /// Set by `close`: slots made or adopted from then on start `KEPT_OFF`.
    closed: bool,
}

struct Entry {
    pool_id: u64,
    slot: Arc<CachePadded<ThreadSlot>>,
    pool: *const (),
    give_back: GiveBack,
}

/// This thread's slots, one per pool it allocates from.
struct ThreadSlots(Vec<Entry>);

impl Drop for ThreadSlots {
    fn drop(&mut self) {
        #[cfg(not(loom))]
        LAST.set(&NOBODY);
        for entry in self.0.drain(..) {
            // Ownerless and KEPT_OFF: nothing parks here until another thread adopts the
            // slot (a new thread may reuse this one's thread pointer, and must not
            // find itself named here).
            entry
                .slot
                .owner
                .store(0, std::sync::atomic::Ordering::Relaxed);
            let parked = entry.slot.frame.swap(KEPT_OFF, Ordering::AcqRel);
            entry.slot.abandoned.store(true, Ordering::Release);
            if let Some(frame) = frame_in(parked) {
                // SAFETY: we took the frame out of the slot ourselves, so no reclaim
                // (teardown included) counted it home: it keeps its pool alive until
                // given back here.
                unsafe { (entry.give_back)(entry.pool, frame) };
            }
        }
    }
}

/// Where `LAST` points before a thread uses any pool, and after its slots are gone: a
/// stand-in for pool id 0, which no pool has.
#[cfg(not(loom))]
static NOBODY: ThreadSlot = ThreadSlot::stand_in(0);

#[cfg(not(loom))]
std::thread_local! {
    static SLOTS: RefCell<ThreadSlots> = const { RefCell::new(ThreadSlots(Vec::new())) };
    /// The slot this thread used last: plain data with no destructor, so the fast path
    /// costs one thread-local read and a compare of the slot's pool id. It always points
    /// at a live slot: `NOBODY`, this thread's `NO_SLOT`, or a slot whose `SLOTS` entry
    /// (an `Arc`) is alive. Entries are dropped only in `ensure_slot`, which points this
    /// at the new slot, and at thread exit, which points it at `NOBODY` first.
    static LAST: std::cell::Cell<*const ThreadSlot> = const { std::cell::Cell::new(&NOBODY) };
    /// This thread's stand-in: `LAST` points here, with the pool's id, once a look-up
    /// found no slot for that pool (a consumer that only releases), so that its next
    /// look-up is the fast one. Always `KEPT_OFF`, and no frame's home.
    static NO_SLOT: ThreadSlot = const { ThreadSlot::stand_in(0) };
}
#[cfg(loom)]
loom::thread_local! {
    static SLOTS: RefCell<ThreadSlots> = RefCell::new(ThreadSlots(Vec::new()));
}

/// A process-unique pool id (a pool's address may be reused after it is freed); never 0.
fn next_registry_id() -> u64 {
    // Not part of any protocol, so a plain std atomic even under loom.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl Registry {
    /// A registry for the pool whose free list is `free`; threads get slots only if
    /// `parking`.
    pub(crate) fn new(parking: bool, free: Arc<FreeList>) -> Registry {
        let id = next_registry_id();
        Registry {
            id,
            parking,
            no_home: CachePadded::new(ThreadSlot::new(id, KEPT_OFF, SlotKind::StandIn, &free)),
            free,
            slots: Mutex::new(Slots {
                all: Vec::new(),
                closed: false,
            }),
        }
    }

    /// The slot `LAST` points at, if it is this pool's (perhaps the stand-in) and its
    /// owner looks in it first.
    #[cfg(not(loom))]
    #[inline]
    fn last_slot(&self) -> Option<&ThreadSlot> {
        // SAFETY: `LAST` always points at a live slot (see its documentation), and a
        // slot this pool's id names stays alive while the caller holds the pool.
        let slot = unsafe { &*LAST.get() };
        slot.belongs_to(self.id).then_some(slot)
    }

    /// The home of frames taken by threads without a slot (no thread owns it).
    pub(crate) fn no_home(&self) -> &ThreadSlot {
        &self.no_home
    }

    /// The calling thread's slot for this pool, if it has one (not the stand-in).
    #[inline]
    pub(crate) fn own_slot(&self) -> Option<&ThreadSlot> {
        #[cfg(not(loom))]
        {
            // SAFETY: as in `last_slot`.
            let slot = unsafe { &*LAST.get() };
            if slot.names_pool(self.id) {
                return (slot.kind == SlotKind::Owned).then_some(slot);
            }
        }
        self.find_own_slot().map(|slot| {
            // SAFETY: the slot's `SLOTS` entry keeps it alive for as long as the pool
            // (which the caller holds) and this thread live.
            unsafe { &*slot }
        })
    }

    /// The calling thread's slot for this pool, looked up in its list and remembered
    /// in `LAST` for the next call (its absence too): out of the fast path's way.
    #[cold]
    #[inline(never)]
    fn find_own_slot(&self) -> Option<*const ThreadSlot> {
        SLOTS
            .try_with(|slots| {
                let slots = slots.try_borrow().ok()?;
                let slot = slots
                    .0
                    .iter()
                    .find(|e| e.pool_id == self.id)
                    .map(|entry| &**entry.slot as *const ThreadSlot);
                #[cfg(not(loom))]
                match slot {
                    Some(slot) => LAST.set(slot),
                    None => NO_SLOT.with(|stand_in| {
                        stand_in
                            .key
                            .store(self.id, std::sync::atomic::Ordering::Relaxed);
                        LAST.set(stand_in);
                    }),
                }
                slot
            })
            .ok()
            .flatten()
    }

    /// Takes the frame parked on this thread, if there is one: `hit` gets it, or `miss`
    /// learns why not. Two continuations rather than one returned enum, so that the
    /// hit is not merged with the misses and tested again.
    #[inline]
    pub(crate) fn take_parked<R>(
        &self,
        hit: impl FnOnce(Frame) -> R,
        miss: impl FnOnce(NotParked<'_>) -> R,
    ) -> R {
        #[cfg(not(loom))]
        if let Some(slot) = self.last_slot() {
            return slot.take(hit, miss);
        }
        self.take_parked_slow(hit, miss)
    }

    /// [`take_parked`](Self::take_parked) when `LAST` is not this pool's slot in
    /// `Lookup::Slot`: this thread skips its slot, or used another pool last, or has
    /// no slot.
    #[cold]
    #[inline(never)]
    fn take_parked_slow<R>(
        &self,
        hit: impl FnOnce(Frame) -> R,
        miss: impl FnOnce(NotParked<'_>) -> R,
    ) -> R {
        match self.take_parked_by_lookup() {
            Ok(frame) => hit(frame),
            Err(not_parked) => miss(not_parked),
        }
    }

    /// The body of [`take_parked_slow`](Self::take_parked_slow).
    #[inline(always)]
    fn take_parked_by_lookup(&self) -> Result<Frame, NotParked<'_>> {
        #[cfg(not(loom))]
        {
            // SAFETY: as in `last_slot`.
            let slot = unsafe { &*LAST.get() };
            // A producer skipping its slot, the common way here: tested first, and with
            // the lookup a constant (no `Option<Lookup>` built and taken apart).
            if slot.skips_for(self.id) {
                return slot.take_by(Lookup::PastSlot);
            }
        }
        // SAFETY: as in `own_slot`.
        match self.find_own_slot().map(|slot| unsafe { &*slot }) {
            Some(slot) => match slot.lookup_for(self.id) {
                Some(lookup) => slot.take_by(lookup),
                None => Err(NotParked::NoSlot),
            },
            None => Err(NotParked::NoSlot),
        }
    }

    /// Where a frame the calling thread takes off a list is to park: its slot, or the
    /// pool's `no_home` if it has none.
    pub(crate) fn home_for_caller(&self) -> &ThreadSlot {
        self.own_slot().unwrap_or(&self.no_home)
    }

    /// Frames allocated through slots, including those of threads gone.
    pub(crate) fn allocations(&self) -> u64 {
        self.lock()
            .all
            .iter()
            .map(|s| s.allocations.load(Ordering::Relaxed))
            .sum()
    }

    /// Gives the calling thread a slot for this pool (once): threads that allocate are
    /// the ones whose drops are worth parking. A slot abandoned by a thread gone is
    /// adopted before a new one is made.
    #[cold]
    pub(crate) fn ensure_slot(&self, pool: *const (), give_back: GiveBack) {
        if !self.parking || self.own_slot().is_some() {
            return;
        }
        let slot = {
            let mut slots = self.lock();
            // Under the lock, so that a concurrent `close` either keeps this slot off
            // or has already said so here.
            let word = if slots.closed { KEPT_OFF } else { EMPTY };
            let adopted = slots
                .all
                .iter()
                .find(|s| s.abandoned.load(Ordering::Acquire))
                .cloned();
            match adopted {
                Some(slot) => {
                    // Its last owner left it KEPT_OFF and ownerless, which no release
                    // or take changes, and reclaimers hold the lock we hold.
                    slot.owner
                        .store(this_thread(), std::sync::atomic::Ordering::Relaxed);
                    // A new owner looks at its slot until its own takes say otherwise.
                    slot.set_lookup(Lookup::Slot);
                    slot.frame.store(word, Ordering::Release);
                    slot.abandoned.store(false, Ordering::Relaxed);
                    slot
                }
                None => {
                    let slot = Arc::new(CachePadded::new(ThreadSlot::new(
                        self.id,
                        word,
                        SlotKind::Owned,
                        &self.free,
                    )));
                    slots.all.push(slot.clone());
                    slot
                }
            }
        };
        let registered = SLOTS.try_with(|slots| {
            let Ok(mut slots) = slots.try_borrow_mut() else {
                return false;
            };
            #[cfg(not(loom))]
            LAST.set(&**slot);
            // Forget slots of pools that are gone (their registry dropped its
            // reference). `LAST` points at the new one.
            slots.0.retain(|e| Arc::strong_count(&e.slot) > 1);
            slots.0.push(Entry {
                pool_id: self.id,
                slot: slot.clone(),
                pool,
                give_back,
            });
            true
        });
        if !matches!(registered, Ok(true)) {
            // This thread is exiting: the slot has no owner, so nothing parks in it.
            slot.owner.store(0, std::sync::atomic::Ordering::Relaxed);
            slot.frame.store(KEPT_OFF, Ordering::Release);
            slot.abandoned.store(true, Ordering::Release);
        }
    }

    fn lock(&self) -> crate::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes every parked frame back (see the module documentation).
    pub(crate) fn reclaim(&self) -> Vec<Frame> {
        // A waiter set WAITING just before: that, then the slots' reads.
        crate::sync::seqcst_order_for_loom();
        self.lock()
            .all
            .iter()
            .filter_map(|slot| slot.reclaim(false))
            .collect()
    }

    /// Takes every parked frame back and keeps frames out of the slots from now on
    /// (the pool is closed or torn down): takes find nothing and releases go to the
    /// free list.
    pub(crate) fn close(&self) -> Vec<Frame> {
        let mut slots = self.lock();
        slots.closed = true;
        slots
            .all
            .iter()
            .filter_map(|slot| slot.reclaim(true))
            .collect()
    }

    /// Frames parked now (a snapshot, for statistics).
    pub(crate) fn parked(&self) -> usize {
        self.lock()
            .all
            .iter()
            .filter(|s| frame_in(s.frame.load(Ordering::Relaxed)).is_some())
            .count()
    }
}
