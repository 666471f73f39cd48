//! Threads and tasks waiting for a frame, first come first served.
//!
//! A releaser that finds waiters hands its frame *directly* to the oldest waiter that
//! has none (`hand_off`), instead of putting it in the free list; so a wake-up always
//! carries a frame, nobody can steal it between the wake-up and the waiter running, and
//! a waiter that gives up (timeout, dropped future) and already holds a handed frame
//! gives that frame back rather than losing it.
//!
//! Lives inside the pool's mutex; wake-ups are returned to the caller, to be delivered
//! after the lock is released.

use std::collections::VecDeque;
use std::task::Waker;

use crate::sync::Thread;

/// How to wake one waiter.
#[derive(Clone)]
pub(crate) enum Wake {
    Thread(Thread),
    Task(Waker),
}

impl Wake {
    pub(crate) fn wake(self) {
        match self {
            Wake::Thread(thread) => thread.unpark(),
            Wake::Task(waker) => waker.wake(),
        }
    }
}

struct Entry {
    id: u64,
    wake: Wake,
    frame: Option<u32>,
}

/// Where a registered waiter stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Standing {
    /// Still waiting for a frame.
    Waiting,
    /// A releaser handed it this frame.
    Handed(u32),
    /// The pool was closed before it got one.
    Closed,
}

#[derive(Default)]
pub(crate) struct WaitQueue {
    entries: VecDeque<Entry>,
    next_id: u64,
    closed: bool,
}

impl WaitQueue {
    pub(crate) fn register(&mut self, wake: Wake) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.entries.push_back(Entry {
            id,
            wake,
            frame: None,
        });
        id
    }

    /// Gives `frame` to the oldest waiter without one; returns how to wake it, or
    /// `None` (frame not taken) if nobody needs one or the queue is closed.
    pub(crate) fn hand_off(&mut self, frame: u32) -> Option<Wake> {
        if self.closed {
            return None;
        }
        let entry = self.entries.iter_mut().find(|e| e.frame.is_none())?;
        entry.frame = Some(frame);
        Some(entry.wake.clone())
    }

    pub(crate) fn standing(&self, id: u64) -> Standing {
        match self.entries.iter().find(|e| e.id == id) {
            Some(Entry {
                frame: Some(frame), ..
            }) => Standing::Handed(*frame),
            _ if self.closed => Standing::Closed,
            _ => Standing::Waiting,
        }
    }

    /// Removes a waiter; returns the frame it had been handed, if any.
    pub(crate) fn remove(&mut self, id: u64) -> Option<u32> {
        let at = self.entries.iter().position(|e| e.id == id)?;
        self.entries.remove(at).and_then(|e| e.frame)
    }

    pub(crate) fn update_waker(&mut self, id: u64, waker: &Waker) {
        if let Some(entry) = self.entries.iter_mut().find(|e| e.id == id) {
            match &entry.wake {
                Wake::Task(old) if old.will_wake(waker) => {}
                _ => entry.wake = Wake::Task(waker.clone()),
            }
        }
    }

    /// Whether some waiter still needs a frame (the free list's WAITING bit mirrors this).
    pub(crate) fn needs_frames(&self) -> bool {
        !self.closed && self.entries.iter().any(|e| e.frame.is_none())
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Closes the queue; returns every waiter's wake-up.
    pub(crate) fn close(&mut self) -> Vec<Wake> {
        self.closed = true;
        self.entries.iter().map(|e| e.wake.clone()).collect()
    }
}
