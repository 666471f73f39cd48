//! The completion table: one slot per transfer in flight, shared by the engine that
//! completes transfers and the [`Pending`](super::Pending)s that wait for them.
//!
//! A slot owns its transfer's [`Op`] from submission until the caller takes the
//! outcome, so the memory the kernel writes into can be handed out again only after
//! the kernel is done: a `Pending` dropped (or forgotten) early leaves the op in its
//! slot, marked `Abandoned`, and the op is dropped (its buffer back to its pool) when
//! the last piece completes. A *detached* transfer (the block sink's writes) has no
//! `Pending` at all: when its last piece completes, its op and results go to a callback,
//! so its buffer goes home as soon as the kernel is done, whoever reaps. Ops are always
//! dropped, and callbacks run, outside the table's lock: a buffer's release may take its
//! pool's locks.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::task::Waker;
use std::thread::Thread;
use std::time::Duration;

use super::op::{Finish, Op};
use crate::error::Result;

/// What a detached transfer's completion calls: the op (to drop or finish) and each
/// piece's result.
pub(crate) type OnDone = Box<dyn FnOnce(Op, &[i32]) + Send>;

/// Who to wake when a transfer completes.
enum Waiter {
    Nobody,
    Thread(Thread),
    Task(Waker),
}

impl Waiter {
    fn wake(self) {
        match self {
            Waiter::Nobody => {}
            Waiter::Thread(thread) => thread.unpark(),
            Waiter::Task(waker) => waker.wake(),
        }
    }
}

/// Where a slot's transfer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Not in use (on the free list).
    Free,
    /// Pieces are still with the engine.
    InFlight,
    /// Every piece completed; the outcome waits for its `Pending`.
    Done,
    /// The `Pending` is gone; the op is dropped when the last piece completes.
    Abandoned,
}

struct Slot {
    stage: Stage,
    /// The transfer, while the slot holds it (the thread engine lends it to a worker).
    op: Option<Op>,
    /// Each piece's result: bytes, or `-errno`. Kept across uses (no allocation per op).
    results: Vec<i32>,
    left: usize,
    waiter: Waiter,
    /// Counted in `demand`: a task waits for it, or its `Pending` is gone (or it never
    /// had one).
    demanding: bool,
    /// A detached transfer's callback, run in place of a `Pending` taking the outcome.
    on_done: Option<OnDone>,
}

#[derive(Default)]
struct Table {
    slots: Vec<Slot>,
    free: Vec<usize>,
}

/// Every transfer in flight on one ring.
pub(crate) struct Completions {
    /// [`fork::generation`](super::fork::generation) when the ring was made.
    born: u64,
    table: Mutex<Table>,
    /// Transfers whose outcome has not been taken (or, abandoned, that have not
    /// completed). Decremented with `Release` once the engine is done with the memory,
    /// so a reader that loads it with `Acquire` sees what the transfer wrote.
    in_flight: AtomicUsize,
    /// Transfers the engine has not completed, whatever became of their `Pending`
    /// (forgotten ones included); `Release` as `in_flight`.
    running: AtomicUsize,
    /// Transfers in flight that no blocked thread will reap: an async task waits for
    /// them, or nobody does (their `Pending` is gone). The io_uring engine's reaper
    /// thread works only while this is above 0; threads in `wait` reap for themselves.
    demand: AtomicUsize,
    demand_lock: Mutex<()>,
    demand_rose: Condvar,
}

/// The completion table, locked for handing out completions.
pub(crate) struct Finisher<'c> {
    completions: &'c Completions,
    table: MutexGuard<'c, Table>,
}

impl Finisher<'_> {
    /// Piece `piece` of transfer `id` finished with `result`.
    pub(crate) fn piece(&mut self, id: usize, piece: usize, result: i32) -> Aftermath {
        let Some(slot) = self.table.slots.get_mut(id) else {
            return Aftermath::none();
        };
        if let Some(r) = slot.results.get_mut(piece) {
            *r = result;
        }
        slot.left = slot.left.saturating_sub(1);
        if slot.left > 0 {
            return Aftermath::none();
        }
        self.completions.complete(&mut self.table, id)
    }
}

/// What `finish_piece` and friends leave to do outside the lock.
#[must_use]
pub(crate) struct Aftermath {
    waiter: Waiter,
    dropped: Option<Op>,
    detached: Option<(OnDone, Op, Vec<i32>)>,
}

impl Aftermath {
    /// Whether there is nothing to do (a transfer completed with nobody waiting yet:
    /// its `Pending` finds the outcome when it looks).
    pub(crate) fn is_nothing(&self) -> bool {
        matches!(self.waiter, Waiter::Nobody) && self.dropped.is_none() && self.detached.is_none()
    }

    /// Wakes the waiter, drops an abandoned op, and hands a detached transfer to its
    /// callback, in that order.
    pub(crate) fn run(self) {
        self.waiter.wake();
        drop(self.dropped);
        if let Some((on_done, op, results)) = self.detached {
            on_done(op, &results);
        }
    }
}

impl Default for Completions {
    fn default() -> Completions {
        Completions {
            born: super::fork::generation(),
            table: Mutex::default(),
            in_flight: AtomicUsize::default(),
            running: AtomicUsize::default(),
            demand: AtomicUsize::default(),
            demand_lock: Mutex::default(),
            demand_rose: Condvar::default(),
        }
    }
}

impl Completions {
    /// Whether this is a forked child of the process that made the ring (whose queue
    /// and threads the child does not have).
    pub(crate) fn forked(&self) -> bool {
        super::fork::generation() != self.born
    }

    /// The error for any use of the ring in a forked child.
    pub(crate) fn forked_error() -> crate::error::Error {
        crate::error::Error::InvalidRequest(
            "this IoRing was made before a fork: a ring belongs to the process that made \
             it (its queue and threads are not in the child); make a new IoRing here"
                .into(),
        )
    }

    /// The table's lock, held by a test (as a worker completing a transfer holds it).
    #[cfg(test)]
    pub(crate) fn lock_for_test(&self) -> MutexGuard<'_, impl Sized> {
        self.lock()
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Transfers submitted and not yet taken, or dropped and not yet completed. Read
    /// with `Acquire`: 0 means the memory of every transfer counted before is the
    /// caller's again, with what the transfers wrote into it visible.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Transfers submitted and not yet completed by the engine (a forgotten `Pending`'s
    /// included); `Acquire` as `in_flight`.
    pub(crate) fn running(&self) -> usize {
        self.running.load(Ordering::Acquire)
    }

    /// A slot for a transfer of `pieces` pieces; `op` is `None` when the engine keeps it
    /// while it works (the thread engine), `Some` when it must stay put (io_uring).
    /// With `on_done`, the transfer is detached: no `Pending` waits for it, and the
    /// reaper thread is asked to reap it.
    pub(crate) fn insert(&self, op: Option<Op>, pieces: usize, on_done: Option<OnDone>) -> usize {
        let mut table = self.lock();
        let id = match table.free.pop() {
            Some(id) => id,
            None => {
                table.slots.push(Slot {
                    stage: Stage::Free,
                    op: None,
                    results: Vec::new(),
                    left: 0,
                    waiter: Waiter::Nobody,
                    demanding: false,
                    on_done: None,
                });
                table.slots.len() - 1
            }
        };
        let slot = &mut table.slots[id];
        slot.stage = Stage::InFlight;
        slot.op = op;
        slot.results.clear();
        slot.results.resize(pieces, 0);
        slot.left = pieces;
        let detached = on_done.is_some();
        slot.on_done = on_done;
        let first = detached && self.demand_for(slot);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.running.fetch_add(1, Ordering::Relaxed);
        drop(table);
        if first {
            self.wake_reaper();
        }
        id
    }

    /// Piece `piece` of transfer `id` finished with `result`.
    pub(crate) fn finish_piece(&self, id: usize, piece: usize, result: i32) -> Aftermath {
        self.finisher().piece(id, piece, result)
    }

    /// The table, held while a batch of completions is handed out (one lock for the
    /// whole completion queue rather than one per entry).
    pub(crate) fn finisher(&self) -> Finisher<'_> {
        Finisher {
            completions: self,
            table: self.lock(),
        }
    }

    /// Transfer `id` finished whole: its op comes back with every piece's result.
    pub(crate) fn finish_all(&self, id: usize, op: Op, results: &[i32]) -> Aftermath {
        let mut table = self.lock();
        let Some(slot) = table.slots.get_mut(id) else {
            return Aftermath {
                dropped: Some(op),
                ..Aftermath::none()
            };
        };
        slot.op = Some(op);
        for (r, &res) in slot.results.iter_mut().zip(results) {
            *r = res;
        }
        slot.left = 0;
        self.complete(&mut table, id)
    }

    /// The last piece of `id` is in: hand it to its waiter, or drop an abandoned op.
    fn complete(&self, table: &mut Table, id: usize) -> Aftermath {
        let in_flight = &self.in_flight;
        // Every piece is in: the engine is done with the transfer's memory.
        self.running.fetch_sub(1, Ordering::Release);
        let slot = &mut table.slots[id];
        if std::mem::take(&mut slot.demanding) {
            self.demand.fetch_sub(1, Ordering::AcqRel);
        }
        if let Some(on_done) = slot.on_done.take() {
            // Detached: the callback gets the op (with a copy of the results, as the
            // slot is free again before the callback runs).
            let detached = slot.op.take().map(|op| (on_done, op, slot.results.clone()));
            slot.stage = Stage::Free;
            table.free.push(id);
            in_flight.fetch_sub(1, Ordering::Release);
            return Aftermath {
                detached,
                ..Aftermath::none()
            };
        }
        match slot.stage {
            Stage::Abandoned => {
                let dropped = slot.op.take();
                slot.stage = Stage::Free;
                table.free.push(id);
                in_flight.fetch_sub(1, Ordering::Release);
                Aftermath {
                    dropped,
                    ..Aftermath::none()
                }
            }
            _ => {
                slot.stage = Stage::Done;
                Aftermath {
                    waiter: std::mem::replace(&mut slot.waiter, Waiter::Nobody),
                    ..Aftermath::none()
                }
            }
        }
    }

    /// The outcome of `id` if it is done; otherwise this thread is unparked when it is.
    pub(crate) fn poll_thread<T>(&self, id: usize, finish: Finish<T>) -> Option<Result<T>> {
        self.poll(id, finish, Waiter::Thread(std::thread::current()))
    }

    /// The outcome of `id` if it is done; otherwise `waker` is woken when it is.
    pub(crate) fn poll_task<T>(
        &self,
        id: usize,
        finish: Finish<T>,
        waker: &Waker,
    ) -> Option<Result<T>> {
        self.poll(id, finish, Waiter::Task(waker.clone()))
    }

    /// Whether transfer `id` has completed (its outcome waits to be taken); in a forked
    /// child, true (its outcome is the fork's error, and the table is not touched).
    pub(crate) fn is_done(&self, id: usize) -> bool {
        if self.forked() {
            return true;
        }
        self.lock()
            .slots
            .get(id)
            .is_some_and(|slot| slot.stage != Stage::InFlight)
    }

    /// Of the transfers `(index, id)`, pushes the indices of those done onto `ready`;
    /// if none is, makes this thread the waiter of each (one lock for all of them).
    pub(crate) fn done_or_wait(
        &self,
        transfers: impl Iterator<Item = (usize, usize)> + Clone,
        ready: &mut Vec<usize>,
    ) {
        let before = ready.len();
        let mut table = self.lock();
        for (index, id) in transfers.clone() {
            if table
                .slots
                .get(id)
                .is_some_and(|s| s.stage != Stage::InFlight)
            {
                ready.push(index);
            }
        }
        if ready.len() > before {
            return;
        }
        let me = std::thread::current();
        for (_, id) in transfers {
            if let Some(slot) = table.slots.get_mut(id) {
                slot.waiter = Waiter::Thread(me.clone());
            }
        }
    }

    /// Transfers that want the reaper thread (see `demand`).
    pub(crate) fn demand(&self) -> usize {
        self.demand.load(Ordering::Acquire)
    }

    /// Sleeps until some transfer wants the reaper thread, `stop()` holds, or `limit`
    /// passes.
    pub(crate) fn await_demand(&self, stop: impl Fn() -> bool, limit: Duration) {
        let guard = self.demand_lock.lock().unwrap_or_else(|p| p.into_inner());
        if self.demand() == 0 && !stop() {
            let _ = self.demand_rose.wait_timeout(guard, limit);
        }
    }

    /// Wakes the reaper thread if it sleeps in `await_demand`.
    pub(crate) fn wake_reaper(&self) {
        let _guard = self.demand_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.demand_rose.notify_all();
    }

    /// Counts `slot` as wanting the reaper thread; `true` for the first such transfer.
    fn demand_for(&self, slot: &mut Slot) -> bool {
        if slot.demanding || !matches!(slot.stage, Stage::InFlight | Stage::Abandoned) {
            return false;
        }
        slot.demanding = true;
        self.demand.fetch_add(1, Ordering::AcqRel) == 0
    }

    /// Unparks one thread blocked in `wait` for a transfer still in flight, so that it
    /// takes over reaping from a thread that stops.
    pub(crate) fn unpark_a_waiter(&self) {
        let table = self.lock();
        let waiter = table
            .slots
            .iter()
            .find_map(|slot| match (&slot.waiter, slot.stage) {
                (Waiter::Thread(thread), Stage::InFlight) => Some(thread.clone()),
                _ => None,
            });
        drop(table);
        if let Some(thread) = waiter {
            thread.unpark();
        }
    }

    /// The outcome of `id` if it is done (the slot is then free again); otherwise
    /// `waiter` is woken when it is.
    /// In a forked child, the fork's error without touching the table: its lock may
    /// have been held at the fork by a thread the child does not have.
    fn poll<T>(&self, id: usize, finish: Finish<T>, waiter: Waiter) -> Option<Result<T>> {
        if self.forked() {
            return Some(Err(Self::forked_error()));
        }
        let mut table = self.lock();
        let slot = &mut table.slots[id];
        if slot.stage != Stage::Done {
            let task = matches!(waiter, Waiter::Task(_));
            slot.waiter = waiter;
            let first = task && self.demand_for(slot);
            drop(table);
            if first {
                self.wake_reaper();
            }
            return None;
        }
        let op = slot.op.take()?;
        // Under the lock: it only reads the results and sets a length (no system call,
        // nothing that takes another lock unless it fails and formats a message).
        let outcome = finish(op, &slot.results);
        slot.stage = Stage::Free;
        slot.waiter = Waiter::Nobody;
        table.free.push(id);
        self.in_flight.fetch_sub(1, Ordering::Release);
        Some(outcome)
    }

    /// The `Pending` of `id` is gone: drop the op now if it is done, or when it is. In
    /// a forked child, nothing (the op, the child's copy, is left as it is: the table's
    /// lock may have been held at the fork by a thread the child does not have).
    pub(crate) fn abandon(&self, id: usize) {
        if self.forked() {
            return;
        }
        let mut table = self.lock();
        let slot = &mut table.slots[id];
        let dropped = match slot.stage {
            Stage::Done => {
                slot.stage = Stage::Free;
                slot.waiter = Waiter::Nobody;
                table.free.push(id);
                self.in_flight.fetch_sub(1, Ordering::Release);
                table.slots[id].op.take()
            }
            _ => {
                slot.stage = Stage::Abandoned;
                slot.waiter = Waiter::Nobody;
                if self.demand_for(slot) {
                    drop(table);
                    self.wake_reaper();
                    return;
                }
                None
            }
        };
        drop(table);
        drop(dropped);
    }
}

impl Aftermath {
    fn none() -> Aftermath {
        Aftermath {
            waiter: Waiter::Nobody,
            dropped: None,
            detached: None,
        }
    }
}
