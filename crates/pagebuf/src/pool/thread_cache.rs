//! The per-thread fast path of a frame pool: each thread that allocates from a pool owns
//! one *slot* that can hold one parked frame. Dropping a frame on that thread parks it
//! there; the next allocation on that thread takes it back. Neither touches a shared
//! cache line or issues a read-modify-write: that is what makes the round trip cheap.
//!
//! A parked frame still counts as free and stays reachable: anyone who needs it
//! (a waiter about to sleep, `try_allocate` finding the free list empty, the last
//! handle tearing the pool down) *reclaims* parked frames.
//!
//! The protocol, per slot (`barrier.rs` explains light/heavy):
//!
//! ```text
//! owner (fast path)                      reclaimer (slow path, registry lock held)
//! busy = true                            steal = true            (every slot)
//! light()                                heavy()
//! if !steal && !waiting:                 wait until !busy        (every slot)
//!     take or park `frame` (plain)       take `frame`            (plain)
//! busy = false (Release)                 steal = false           (unless for good)
//! ```
//!
//! Either the owner sees `steal` (and keeps off the frame) or the reclaimer sees `busy`
//! (and waits for the owner to finish); never neither. A waiter sets the free list's
//! WAITING bit before its heavy barrier and owners check it after their light one, so
//! no frame is parked while someone sleeps for lack of one.
//!
//! Threads get slots only where the heavy barrier works. If the kernel refuses it later
//! (`Heavy::Refused`), a reclaimer takes only its own thread's frame: frames parked on
//! other threads stay theirs (so `try_allocate` may find none while some are parked)
//! until their owners take them or exit.
//!
//! Thread exit (the thread-local's destructor) hands a parked frame back to the pool
//! under the same protocol. A slot outlives its pool if need be (it is shared by `Arc`),
//! and a pool being torn down leaves `steal` set for good, so a late owner keeps off.
#![allow(unsafe_code)] // listed in ARCHITECTURE.md, "Where `unsafe` lives"

use std::cell::RefCell;
use std::sync::Arc;

use crossbeam_utils::CachePadded;

use super::barrier::{self, Heavy};
use super::free_list::NIL;
use crate::sync::{AtomicBool, AtomicU64, Mutex, Ordering};

#[cfg(loom)]
use loom::sync::atomic::AtomicU32;
#[cfg(not(loom))]
use std::sync::atomic::AtomicU32;

/// One thread's parking place for one pool. Kept `CachePadded` (in its `Arc`) so that
/// two threads' slots never share a cache line.
pub(crate) struct ThreadSlot {
    frame: AtomicU32,
    busy: AtomicBool,
    steal: AtomicBool,
    /// The owner thread has exited; the registry may forget the slot.
    abandoned: AtomicBool,
    /// Frames this thread took: written by the owner alone (no read-modify-write),
    /// summed by `stats`.
    allocations: AtomicU64,
}

impl ThreadSlot {
    fn new() -> ThreadSlot {
        ThreadSlot {
            frame: AtomicU32::new(NIL),
            busy: AtomicBool::new(false),
            steal: AtomicBool::new(false),
            abandoned: AtomicBool::new(false),
            allocations: AtomicU64::new(0),
        }
    }

    /// Owner-only: counts one allocation.
    #[inline]
    fn count_allocation(&self) {
        let n = self.allocations.load(Ordering::Relaxed);
        self.allocations.store(n + 1, Ordering::Relaxed);
    }

    /// Owner-only: parks `frame` here if the slot is empty and `waiting()` is false.
    #[inline]
    fn park(&self, frame: u32, waiting: impl FnOnce() -> bool) -> Parking {
        let parked = self.as_owner(|parked| {
            if parked.load(Ordering::Relaxed) == NIL && !waiting() {
                parked.store(frame, Ordering::Relaxed);
                true
            } else {
                false
            }
        });
        if parked == Some(true) {
            Parking::Parked
        } else {
            Parking::Declined
        }
    }

    /// Runs `critical` on the owner's side of the protocol; `None` if a reclaimer holds
    /// the slot. Only the owner thread calls this.
    #[inline]
    fn as_owner<R>(&self, critical: impl FnOnce(&AtomicU32) -> R) -> Option<R> {
        self.busy.store(true, Ordering::Relaxed);
        barrier::light();
        let outcome = if self.steal.load(Ordering::Relaxed) {
            None
        } else {
            Some(critical(&self.frame))
        };
        self.busy.store(false, Ordering::Release);
        outcome
    }
}

/// What an allocation found in this thread's slot.
pub(crate) enum Taken {
    /// The frame parked there, now the caller's.
    Frame(u32),
    /// Nothing parked (or a reclaimer holds the slot).
    Empty,
    /// This thread has no slot for the pool: it never allocated from it.
    NoSlot,
}

/// Where a released frame went.
pub(crate) enum Parking {
    /// Into this thread's slot.
    Parked,
    /// Not into the slot (it is full, a reclaimer holds it, or a waiter needs frames):
    /// the frame goes to the free list.
    Declined,
    /// This thread has no slot (it never allocates from the pool): the frame goes to
    /// the returned list.
    NoSlot,
    /// Not known yet: the slot this thread used last is another pool's.
    LookUp,
}

/// Gives a frame back to a pool (type-erased, for thread exit).
pub(crate) type GiveBack = unsafe fn(pool: *const (), frame: u32);

/// The slots of one pool's threads.
pub(crate) struct Registry {
    id: u64,
    /// Whether threads get slots: only where the heavy barrier works (`barrier::init`)
    /// and the pool asked for them.
    parking: bool,
    slots: Mutex<Vec<Arc<CachePadded<ThreadSlot>>>>,
    /// Allocations counted by slots the registry has since forgotten (threads gone).
    retired_allocations: AtomicU64,
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
        LAST.set((0, std::ptr::null()));
        for entry in self.0.drain(..) {
            let parked = entry.slot.as_owner(|frame| {
                let parked = frame.load(Ordering::Relaxed);
                frame.store(NIL, Ordering::Relaxed);
                parked
            });
            entry.slot.abandoned.store(true, Ordering::Release);
            if let Some(frame) = parked.filter(|&f| f != NIL) {
                // SAFETY: we took the frame as its slot's owner while no reclaimer held
                // the slot, so the frame was never counted home by a teardown: it keeps
                // its pool alive until given back here.
                unsafe { (entry.give_back)(entry.pool, frame) };
            }
        }
    }
}

#[cfg(not(loom))]
std::thread_local! {
    static SLOTS: RefCell<ThreadSlots> = const { RefCell::new(ThreadSlots(Vec::new())) };
    /// The slot this thread used last, as (registry id, slot): plain data with no
    /// destructor, so the fast path costs one thread-local read and a compare. The slot
    /// is kept alive by its entry in `SLOTS`; an entry is dropped only once its pool is
    /// gone (and pool ids are never reused), and `ThreadSlots::drop` clears this first.
    /// A null slot remembers that this thread has none for that pool (a consumer that
    /// only releases): its releases then go to the returned list without a look-up.
    static LAST: std::cell::Cell<(u64, *const ThreadSlot)> =
        const { std::cell::Cell::new((0, std::ptr::null())) };
}
#[cfg(loom)]
loom::thread_local! {
    static SLOTS: RefCell<ThreadSlots> = RefCell::new(ThreadSlots(Vec::new()));
}

/// A process-unique pool id (a pool's address may be reused after it is freed).
fn next_registry_id() -> u64 {
    // Not part of any protocol, so a plain std atomic even under loom.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl Registry {
    /// A registry; threads get slots only if `parking` and the heavy barrier works.
    pub(crate) fn new(parking: bool) -> Registry {
        Registry {
            id: next_registry_id(),
            parking: parking && barrier::init(),
            slots: Mutex::new(Vec::new()),
            retired_allocations: AtomicU64::new(0),
        }
    }

    /// The calling thread's slot for this pool, if it has one.
    #[inline]
    fn with_own_slot<R>(&self, f: impl FnOnce(&ThreadSlot) -> R) -> Option<R> {
        #[cfg(not(loom))]
        {
            let (id, slot) = LAST.get();
            if id == self.id {
                if slot.is_null() {
                    return None; // remembered: no slot for this pool
                }
                // SAFETY: `LAST` names a slot whose `SLOTS` entry (an `Arc`) is alive:
                // entries go only with their pool (whose id then never matches again)
                // or at thread exit, which clears `LAST` first.
                return Some(f(unsafe { &*slot }));
            }
        }
        self.find_own_slot().map(|slot| {
            // SAFETY: as for `LAST` above: the slot's `SLOTS` entry keeps it alive for
            // as long as the pool (which the caller holds) and this thread live.
            f(unsafe { &*slot })
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
                LAST.set((self.id, slot.unwrap_or(std::ptr::null())));
                slot
            })
            .ok()
            .flatten()
    }

    /// Takes the frame parked on this thread, if there is one (and no reclaimer holds
    /// the slot).
    #[inline]
    pub(crate) fn take_parked(&self) -> Taken {
        self.with_own_slot(|slot| {
            let parked = slot.as_owner(|frame| {
                let parked = frame.load(Ordering::Relaxed);
                if parked != NIL {
                    frame.store(NIL, Ordering::Relaxed);
                    slot.count_allocation();
                }
                parked
            });
            match parked {
                Some(frame) if frame != NIL => Taken::Frame(frame),
                _ => Taken::Empty,
            }
        })
        .unwrap_or(Taken::NoSlot)
    }

    /// Counts an allocation in the calling thread's slot; false if it has none (the
    /// caller counts it elsewhere).
    #[inline]
    pub(crate) fn count_allocation(&self) -> bool {
        self.with_own_slot(ThreadSlot::count_allocation).is_some()
    }

    /// Frames allocated through slots, including those of threads gone.
    pub(crate) fn allocations(&self) -> u64 {
        let slots = self.lock();
        self.retired_allocations.load(Ordering::Relaxed)
            + slots
                .iter()
                .map(|s| s.allocations.load(Ordering::Relaxed))
                .sum::<u64>()
    }

    /// Gives the calling thread a slot for this pool (once): threads that allocate are
    /// the ones whose drops are worth parking.
    #[cold]
    pub(crate) fn ensure_slot(&self, pool: *const (), give_back: GiveBack) {
        if !self.parking || self.with_own_slot(|_| ()).is_some() {
            return;
        }
        let slot = Arc::new(CachePadded::new(ThreadSlot::new()));
        let registered = SLOTS.try_with(|slots| {
            let Ok(mut slots) = slots.try_borrow_mut() else {
                return false;
            };
            // Forget slots of pools that are gone (their teardown left `steal` set and
            // the registry dropped its reference).
            slots.0.retain(|e| Arc::strong_count(&e.slot) > 1);
            slots.0.push(Entry {
                pool_id: self.id,
                slot: slot.clone(),
                pool,
                give_back,
            });
            // `LAST` may remember that there was none.
            #[cfg(not(loom))]
            LAST.set((self.id, &**slot as *const ThreadSlot));
            true
        });
        if matches!(registered, Ok(true)) {
            let mut all = self.lock();
            all.retain(|s| {
                let gone = s.abandoned.load(Ordering::Acquire);
                if gone {
                    let counted = s.allocations.load(Ordering::Relaxed);
                    self.retired_allocations
                        .fetch_add(counted, Ordering::Relaxed);
                }
                !gone
            });
            all.push(slot);
        }
    }

    /// Parks `frame` on this thread if it has an empty slot, no reclaimer is at work and
    /// `waiting()` (the free list's WAITING bit) is false: the fast half, through the
    /// slot this thread used last. [`Parking::LookUp`] when that slot is not this
    /// pool's: the caller then asks [`park_looked_up`](Self::park_looked_up), out of
    /// line.
    #[inline]
    pub(crate) fn park(&self, frame: u32, waiting: impl FnOnce() -> bool) -> Parking {
        #[cfg(not(loom))]
        {
            let (id, slot) = LAST.get();
            if id == self.id {
                if slot.is_null() {
                    return Parking::NoSlot; // remembered: no slot for this pool
                }
                // SAFETY: as in `with_own_slot`.
                return unsafe { &*slot }.park(frame, waiting);
            }
        }
        let _ = (frame, waiting);
        Parking::LookUp
    }

    /// [`park`](Self::park) through this thread's list of slots.
    #[cold]
    #[inline(never)]
    pub(crate) fn park_looked_up(&self, frame: u32, waiting: impl FnOnce() -> bool) -> Parking {
        match self.find_own_slot() {
            // SAFETY: as in `with_own_slot`.
            Some(slot) => unsafe { &*slot }.park(frame, waiting),
            None => Parking::NoSlot,
        }
    }

    fn lock(&self) -> crate::sync::MutexGuard<'_, Vec<Arc<CachePadded<ThreadSlot>>>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes every parked frame back (see the module documentation). With `for_good`,
    /// owners are kept off their slots for the rest of the pool's life (teardown).
    ///
    /// The caller's own slot needs no barrier (it is the owner); the heavy barrier is
    /// paid only when other threads have slots.
    pub(crate) fn reclaim(&self, for_good: bool) -> Vec<u32> {
        let slots = self.lock();
        let own = self
            .with_own_slot(|slot| slot as *const ThreadSlot)
            .unwrap_or(std::ptr::null());
        let mut frames = Vec::new();
        let (mine, others): (Vec<_>, Vec<_>) = slots.iter().partition(|s| {
            let slot: &ThreadSlot = s;
            std::ptr::eq(slot, own)
        });
        for slot in mine {
            // Our own slot, our own thread: no one else parks or takes here.
            let parked = slot.frame.load(Ordering::Relaxed);
            if parked != NIL {
                slot.frame.store(NIL, Ordering::Relaxed);
                frames.push(parked);
            }
            if for_good {
                slot.steal.store(true, Ordering::Relaxed);
            }
        }
        if others.is_empty() {
            return frames;
        }
        for slot in &others {
            slot.steal.store(true, Ordering::Relaxed);
        }
        if barrier::heavy() == Heavy::Refused {
            // Nothing orders an owner's section against us any more: leave their frames
            // to them (a thread's exit still gives its frame back) and keep no one off.
            for slot in others {
                slot.steal.store(false, Ordering::Release);
            }
            return frames;
        }
        for slot in others {
            let mut spins = 0u32;
            while slot.busy.load(Ordering::Acquire) {
                // An owner's critical section is a handful of instructions; it is only
                // long if the owner was preempted inside it.
                spins += 1;
                if spins < 64 && cfg!(not(loom)) {
                    std::hint::spin_loop();
                } else {
                    crate::sync::yield_now();
                }
            }
            let parked = slot.frame.load(Ordering::Relaxed);
            if parked != NIL {
                slot.frame.store(NIL, Ordering::Relaxed);
                frames.push(parked);
            }
            if !for_good {
                slot.steal.store(false, Ordering::Release);
            }
        }
        frames
    }

    /// Frames parked now (a snapshot, for statistics).
    pub(crate) fn parked(&self) -> usize {
        self.lock()
            .iter()
            .filter(|s| s.frame.load(Ordering::Relaxed) != NIL)
            .count()
    }
}
