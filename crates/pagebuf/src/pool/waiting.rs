//! Waiting for a frame: the slow path of `allocate`, `allocate_timeout` and
//! `allocate_async`. A thread or task that finds no frame joins the `WaitQueue` (FIFO)
//! and sets the free list's WAITING bit, so that the next frame released is handed to
//! the oldest waiter instead of going to the list; frames parked on other threads are
//! reclaimed first, so nobody sleeps while a frame sits idle.
#![allow(unsafe_code)] // listed in ARCHITECTURE.md, "Where `unsafe` lives"

use std::time::{Duration, Instant};

use super::core::PoolShared;
use super::frame_pool::FramePool;
use super::wait_queue::{Standing, WaitQueue, Wake};
use crate::buffer::BufferMut;
use crate::error::{Error, Result};
use crate::sync::{current_thread, park, park_timeout, Ordering};

/// What `enqueue` did.
pub(super) enum Enqueued {
    Got(BufferMut),
    Waiting(u64),
}

impl PoolShared {
    pub(super) fn lock_queue(&self) -> crate::sync::MutexGuard<'_, WaitQueue> {
        // The queue's invariants hold between statements, so a panic elsewhere while
        // the lock was held (poisoning) leaves nothing half-done: keep going.
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes a frame if one is free, or joins the queue (setting the free list's
    /// WAITING bit so that the next release hands its frame over).
    ///
    /// Callers try `take_frame` first (the lock-free common case); this is the slow path.
    pub(super) fn enqueue(&self, wake: Wake) -> Result<Enqueued> {
        let mut queue = loop {
            if self.closed.load(Ordering::Acquire) {
                return Err(Error::Closed);
            }
            // Outside the lock: handing leftovers to waiters takes it.
            if let Some((index, left)) = self.adopt() {
                self.other_allocations.fetch_add(1, Ordering::Relaxed);
                return Ok(Enqueued::Got(self.hand_out(index, Some(left))));
            }
            let queue = self.lock_queue();
            if self.closed.load(Ordering::Acquire) {
                return Err(Error::Closed);
            }
            if let Some((index, left)) = self.free.pop() {
                drop(queue);
                self.other_allocations.fetch_add(1, Ordering::Relaxed);
                return Ok(Enqueued::Got(self.hand_out(index, Some(left))));
            }
            if self.free.set_waiting() {
                break queue;
            }
            // A frame came back to one of the lists meanwhile: take it.
        };
        self.exhausted.fetch_add(1, Ordering::Relaxed);
        self.waits.fetch_add(1, Ordering::Relaxed);
        let id = queue.register(wake);
        drop(queue);
        // WAITING is set: from here no owner parks a frame, and the ones parked before
        // come back now, each handed to the oldest waiter (perhaps this one).
        // SAFETY: reclaimed frames are ours to give back; the caller's handle keeps the
        // pool alive.
        unsafe { self.give_back_all(self.threads.reclaim()) };
        Ok(Enqueued::Waiting(id))
    }

    /// Where waiter `id` stands: `None` to keep waiting, or its outcome (leaving the
    /// queue).
    pub(super) fn check(&self, id: u64) -> Option<Result<BufferMut>> {
        let mut queue = self.lock_queue();
        match queue.standing(id) {
            Standing::Waiting => None,
            Standing::Handed(index) => {
                queue.remove(id);
                drop(queue);
                self.other_allocations.fetch_add(1, Ordering::Relaxed);
                Some(Ok(self.hand_out(index, Some(self.free.head_len()))))
            }
            Standing::Closed => {
                queue.remove(id);
                Some(Err(Error::Closed))
            }
        }
    }

    /// Waiter `id` gives up. A frame it was handed meanwhile is its to keep.
    pub(super) fn leave(&self, id: u64) -> Option<BufferMut> {
        let mut queue = self.lock_queue();
        let handed = queue.remove(id);
        if !queue.needs_frames() {
            self.free.clear_waiting();
        }
        drop(queue);
        handed.map(|index| {
            self.other_allocations.fetch_add(1, Ordering::Relaxed);
            self.hand_out(index, Some(self.free.head_len()))
        })
    }
}

impl FramePool {
    pub(super) fn allocate_until(&self, deadline: Option<Instant>) -> Result<BufferMut> {
        let shared = self.shared();
        if shared.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        if let Some(buf) = self.take_frame() {
            return Ok(buf);
        }
        let id = match shared.enqueue(Wake::Thread(current_thread()))? {
            Enqueued::Got(buf) => return Ok(buf),
            Enqueued::Waiting(id) => id,
        };
        loop {
            // Check before sleeping: `enqueue` may already have handed this waiter a
            // reclaimed frame (and its wake-up went to this very thread).
            if let Some(outcome) = shared.check(id) {
                return outcome;
            }
            match deadline {
                None => park(),
                Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => park_timeout(left),
                    _ => {
                        return shared.leave(id).map_or_else(
                            || {
                                Err(Error::Timeout {
                                    what: format!(
                                        "a free frame of {} bytes",
                                        shared.framing.frame_size()
                                    ),
                                    waited: Duration::ZERO,
                                })
                            },
                            Ok,
                        )
                    }
                },
            }
        }
    }
}
