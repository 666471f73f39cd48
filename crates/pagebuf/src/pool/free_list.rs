//! The free list of a frame pool: a lock-free stack of frame indices in one 64-bit word.
//!
//! ```text
//! head:  [ tag: 32 | WAITING: 1 | ORPHANED: 1 | index: 30 ]
//! node[i]: [ depth: 32 | next: 32 ]     depth = frames in the list from i down
//! ```
//!
//! * **Pop** swings `head` from `i` to `node[i].next` with a CAS that also bumps `tag`,
//!   so a stale pop (its `i` was popped and pushed back meanwhile: ABA) fails; it would
//!   take 2^32 pops inside one CAS window to fool it.
//! * **Push** links `node[i]` to the current head (depth + 1) and CASes `head` to `i`.
//!   It never succeeds while `WAITING` is set: a releaser that sees `WAITING` hands its
//!   frame to a waiter instead (see `frame_pool.rs`), so a waiter can never sleep while a
//!   frame sits in the list. Hence `WAITING` implies the list is empty.
//! * `ORPHANED` is set once, when the last pool handle drops: from then on nothing
//!   pops, a push is refused and reported, and the list's length at that instant (the
//!   head's depth) says how many frames were home.
//!
//! Every operation on `head` is `SeqCst`: a waiter sets `WAITING` with a CAS on the same
//! word that a releaser's push CASes, so one of the two always sees the other.
//!
//! The depth in each node makes the free count readable without another atomic: the
//! pool's `in_use` and high-water mark cost nothing on the fast path.

use crate::sync::{AtomicU64, Ordering::SeqCst};

const INDEX_BITS: u32 = 30;
const INDEX_MASK: u64 = (1 << INDEX_BITS) - 1;
/// The index that means "no frame": the list is empty / end of the list.
pub(crate) const NIL: u32 = INDEX_MASK as u32;
const ORPHANED: u64 = 1 << INDEX_BITS;
const WAITING: u64 = 1 << (INDEX_BITS + 1);
const TAG_ONE: u64 = 1 << 32;

/// What a push found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Push {
    /// The frame is in the list.
    Done,
    /// Waiters are queued: hand the frame to one of them instead.
    Waiting,
    /// The pool is orphaned: the frame was not pushed; account for it.
    Orphaned,
}

pub(crate) struct FreeList {
    head: AtomicU64,
    nodes: Box<[AtomicU64]>,
}

fn index(word: u64) -> u32 {
    (word & INDEX_MASK) as u32
}

impl FreeList {
    /// A list holding frames `0..frames`, lowest index on top. `frames < NIL`.
    pub(crate) fn full(frames: usize) -> FreeList {
        debug_assert!(frames < NIL as usize);
        let nodes = (0..frames)
            .map(|i| {
                let next = if i + 1 < frames {
                    i as u64 + 1
                } else {
                    NIL as u64
                };
                AtomicU64::new(((frames - i) as u64) << 32 | next)
            })
            .collect();
        let top = if frames == 0 { NIL as u64 } else { 0 };
        FreeList {
            head: AtomicU64::new(top),
            nodes,
        }
    }

    fn depth_of(&self, word: u64) -> usize {
        match index(word) {
            NIL => 0,
            i => (self.nodes[i as usize].load(SeqCst) >> 32) as usize,
        }
    }

    /// Takes a frame; on success also returns how many frames the list still holds.
    pub(crate) fn pop(&self) -> Option<(u32, usize)> {
        let mut head = self.head.load(SeqCst);
        loop {
            let i = index(head);
            if i == NIL || head & ORPHANED != 0 {
                return None;
            }
            let node = self.nodes[i as usize].load(SeqCst);
            let next = node & INDEX_MASK;
            let new = (head & !INDEX_MASK).wrapping_add(TAG_ONE) | next;
            match self.head.compare_exchange_weak(head, new, SeqCst, SeqCst) {
                // The CAS saw the same tag, so `node` was i's link when i was on top.
                Ok(_) => return Some((i, (node >> 32) as usize - 1)),
                Err(now) => head = now,
            }
        }
    }

    /// Returns frame `i` to the list, unless waiters or orphaning say otherwise.
    pub(crate) fn push(&self, i: u32) -> Push {
        let mut head = self.head.load(SeqCst);
        loop {
            if head & ORPHANED != 0 {
                return Push::Orphaned;
            }
            if head & WAITING != 0 {
                return Push::Waiting;
            }
            let depth = self.depth_of(head) as u64 + 1;
            self.nodes[i as usize].store(depth << 32 | (head & INDEX_MASK), SeqCst);
            let new = (head & !INDEX_MASK) | i as u64;
            match self.head.compare_exchange_weak(head, new, SeqCst, SeqCst) {
                Ok(_) => return Push::Done,
                Err(now) => head = now,
            }
        }
    }

    /// Marks that a waiter is about to sleep, if (and only if) the list is empty.
    /// Returns false if a frame is available (pop it instead).
    pub(crate) fn set_waiting(&self) -> bool {
        let mut head = self.head.load(SeqCst);
        loop {
            if index(head) != NIL {
                return false;
            }
            match self
                .head
                .compare_exchange_weak(head, head | WAITING, SeqCst, SeqCst)
            {
                Ok(_) => return true,
                Err(now) => head = now,
            }
        }
    }

    /// No waiter needs a frame any more: pushes go to the list again.
    pub(crate) fn clear_waiting(&self) {
        self.head.fetch_and(!WAITING, SeqCst);
    }

    /// Marks the list orphaned and returns how many frames it held at that instant.
    pub(crate) fn orphan(&self) -> usize {
        let head = self.head.fetch_or(ORPHANED, SeqCst);
        debug_assert!(head & WAITING == 0, "orphaned with waiters queued");
        self.depth_of(head)
    }

    /// Whether a waiter has asked for the next released frame.
    pub(crate) fn is_waiting(&self) -> bool {
        self.head.load(SeqCst) & WAITING != 0
    }

    /// Frames in the list now (a snapshot).
    pub(crate) fn len(&self) -> usize {
        self.depth_of(self.head.load(SeqCst))
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn pops_every_frame_once_then_none() {
        let list = FreeList::full(3);
        assert_eq!(list.len(), 3);
        assert_eq!(list.pop(), Some((0, 2)));
        assert_eq!(list.pop(), Some((1, 1)));
        assert_eq!(list.pop(), Some((2, 0)));
        assert_eq!(list.pop(), None);
        assert_eq!(list.push(1), Push::Done);
        assert_eq!(list.push(2), Push::Done);
        assert_eq!(list.len(), 2);
        assert_eq!(
            list.pop(),
            Some((2, 1)),
            "last in, first out: the warm frame"
        );
    }

    #[test]
    fn waiting_blocks_pushes_until_cleared() {
        let list = FreeList::full(1);
        assert!(!list.set_waiting(), "a frame is free: no need to wait");
        let (i, _) = list.pop().unwrap();
        assert!(list.set_waiting());
        assert_eq!(list.push(i), Push::Waiting);
        list.clear_waiting();
        assert_eq!(list.push(i), Push::Done);
    }

    #[test]
    fn orphan_counts_the_frames_home_and_refuses_pushes() {
        let list = FreeList::full(4);
        let (a, _) = list.pop().unwrap();
        list.pop().unwrap();
        assert_eq!(list.orphan(), 2);
        assert_eq!(list.pop(), None);
        assert_eq!(list.push(a), Push::Orphaned);
    }
}
