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
//! word that a releaser's push CASes, so one of the two always sees the other. A node is
//! written with a relaxed store before the CAS that links it in: the CAS releases it and
//! whoever reads the new word acquires it, so the node needs no ordering of its own (a
//! SeqCst store is a locked instruction on x86-64, one more per push and per spliced
//! frame). A stale reader of a node (its pop's CAS is about to fail on the tag) may see
//! either value.
//!
//! The depth in each node makes the free count readable without another atomic: the
//! pool's `in_use` and high-water mark cost nothing on the fast path.
//!
//! **The returned list.** Frames released by threads that never allocate from the pool
//! (a consumer at the end of a pipeline) go onto a second stack, `returned`, in a word
//! of the same layout on its own cache line, so that they do not fight the allocating
//! thread for `head` (a CAS retried on every buffer, each retry a cache-line transfer).
//! An allocator that finds `head` empty takes the whole returned list with one atomic
//! step and splices it onto `head`. A waiter sets `WAITING` on both words, each only
//! while its list is empty (`returned` first), so a frame never sits in either list
//! while a waiter sleeps; `orphan` marks both. Between the take and the splice the
//! frames are in the taker's hands (as a frame being released is in its releaser's).

use crossbeam_utils::CachePadded;

use crate::sync::{
    AtomicU64,
    Ordering::{Relaxed, SeqCst},
};

const INDEX_BITS: u32 = 30;
const INDEX_MASK: u64 = (1 << INDEX_BITS) - 1;
/// The index that means "no frame": the list is empty / end of the list.
pub(crate) const NIL: u32 = INDEX_MASK as u32;
const ORPHANED: u64 = 1 << INDEX_BITS;
const WAITING: u64 = 1 << (INDEX_BITS + 1);
const TAG_ONE: u64 = 1 << 32;

/// Frames linked from `top` through their nodes, `len` of them, held by one caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Chain {
    pub(crate) top: u32,
    pub(crate) len: usize,
}

impl Chain {
    /// The chain without its top frame (`None` if that was all of it).
    pub(crate) fn rest(self, list: &FreeList) -> Option<Chain> {
        (self.len > 1).then(|| Chain {
            top: list.next_of(self.top),
            len: self.len - 1,
        })
    }
}

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
    head: CachePadded<AtomicU64>,
    /// Frames released by threads that do not allocate: `[count: 32 | WAITING |
    /// ORPHANED | index: 30]`, the count of frames in the list where `head` has its tag
    /// (no ABA to guard: nothing pops from this list one frame at a time), so a push
    /// reads no node and the count costs one load.
    returned: CachePadded<AtomicU64>,
    nodes: Box<[AtomicU64]>,
}

fn index(word: u64) -> u32 {
    (word & INDEX_MASK) as u32
}

/// The frame count of the returned list's word.
fn count(word: u64) -> usize {
    (word >> 32) as usize
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
            head: CachePadded::new(AtomicU64::new(top)),
            returned: CachePadded::new(AtomicU64::new(NIL as u64)),
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

    /// Returns frame `i`, released by a thread that does not allocate, to the returned
    /// list, unless waiters or orphaning say otherwise.
    pub(crate) fn push_returned(&self, i: u32) -> Push {
        // The word counts one more frame; the node links to the old top and carries
        // that count as its depth, so that the list taken whole is already numbered as
        // the free list numbers its frames (`splice` onto an empty list renumbers
        // nothing). WAITING and ORPHANED are clear here (`push_onto` checked).
        self.push_onto(&self.returned, i, |top| {
            let counted = (top & !INDEX_MASK).wrapping_add(TAG_ONE);
            (counted | (top & INDEX_MASK), counted | i as u64)
        })
    }

    /// Returns frame `i` to the list, unless waiters or orphaning say otherwise.
    pub(crate) fn push(&self, i: u32) -> Push {
        // The node links to the old top and carries the new depth; the tag stays (only
        // pops bump it).
        self.push_onto(&self.head, i, |top| {
            let depth = self.depth_of(top) as u64 + 1;
            (
                depth << 32 | (top & INDEX_MASK),
                (top & !INDEX_MASK) | i as u64,
            )
        })
    }

    /// Pushes frame `i` onto the stack whose top word is `word`: `link(top)` gives i's
    /// node and the word to install. Refused while the word carries ORPHANED or WAITING.
    #[inline]
    fn push_onto(&self, word: &AtomicU64, i: u32, link: impl Fn(u64) -> (u64, u64)) -> Push {
        let mut top = word.load(SeqCst);
        loop {
            if top & ORPHANED != 0 {
                return Push::Orphaned;
            }
            if top & WAITING != 0 {
                return Push::Waiting;
            }
            let (node, new) = link(top);
            // Published by the CAS below (a release), which the next reader of the word
            // acquires: a plain store, not SeqCst's locked one (see the module docs).
            self.nodes[i as usize].store(node, Relaxed);
            match word.compare_exchange_weak(top, new, SeqCst, SeqCst) {
                Ok(_) => return Push::Done,
                Err(now) => top = now,
            }
        }
    }

    /// Takes the whole returned list: its top frame, linked to the rest, and how many
    /// frames it holds. The frames are the caller's until it splices them onto the list
    /// (or gives them away).
    pub(crate) fn take_returned(&self) -> Option<Chain> {
        let word = &self.returned;
        let mut top = word.load(SeqCst);
        loop {
            // A read, not a write, in the common case of nothing returned.
            if index(top) == NIL {
                return None;
            }
            // Count 0, no frames; WAITING and ORPHANED as they are.
            let empty = (top & (WAITING | ORPHANED)) | NIL as u64;
            match word.compare_exchange_weak(top, empty, SeqCst, SeqCst) {
                Ok(_) => {
                    return Some(Chain {
                        top: index(top),
                        len: count(top),
                    })
                }
                Err(now) => top = now,
            }
        }
    }

    /// The frame after `i` in a chain the caller holds (`NIL` at its end).
    pub(crate) fn next_of(&self, i: u32) -> u32 {
        index(self.nodes[i as usize].load(SeqCst))
    }

    /// Puts a chain the caller holds (from `take_returned`, less its top frame perhaps)
    /// onto the list. Returns false, changing nothing, if a waiter or orphaning refuses
    /// pushes: the caller then gives the frames back one by one.
    pub(crate) fn splice(&self, chain: Chain) -> bool {
        let Chain { top, len } = chain;
        let len = len as u64;
        let mut head = self.head.load(SeqCst);
        // The chain is numbered as the returned list left it: depths `len` down to 1,
        // the bottom linked to NIL. Onto an empty list that is right as it is.
        let mut numbered_from_nil = true;
        loop {
            if head & (WAITING | ORPHANED) != 0 {
                return false;
            }
            let below = self.depth_of(head) as u64;
            if below != 0 || !numbered_from_nil {
                // Renumber the depths from the top down and link the bottom (the `len`-th
                // frame) to the list: onto the frames there, or, after a CAS that lost
                // such a renumbering, to NIL again.
                let mut i = top;
                for k in 0..len {
                    let next = self.next_of(i);
                    let link = if k + 1 == len {
                        head & INDEX_MASK
                    } else {
                        next as u64
                    };
                    // Published by the CAS below, as in `push_onto`.
                    self.nodes[i as usize].store((below + len - k) << 32 | link, Relaxed);
                    i = next;
                }
                numbered_from_nil = below == 0;
            }
            let new = (head & !INDEX_MASK) | top as u64;
            match self.head.compare_exchange_weak(head, new, SeqCst, SeqCst) {
                Ok(_) => return true,
                Err(now) => head = now,
            }
        }
    }

    /// Marks that a waiter is about to sleep, if (and only if) both lists are empty.
    /// Returns false if a frame is available (pop it, or take the returned list).
    pub(crate) fn set_waiting(&self) -> bool {
        // `returned` first: once it carries WAITING, releasers that do not allocate
        // hand their frames over instead of pushing.
        let mut top = self.returned.load(SeqCst);
        loop {
            if index(top) != NIL {
                return false;
            }
            match self
                .returned
                .compare_exchange_weak(top, top | WAITING, SeqCst, SeqCst)
            {
                Ok(_) => break,
                Err(now) => top = now,
            }
        }
        let mut head = self.head.load(SeqCst);
        loop {
            if index(head) != NIL {
                self.returned.fetch_and(!WAITING, SeqCst);
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

    /// No waiter needs a frame any more: pushes go to the lists again.
    pub(crate) fn clear_waiting(&self) {
        self.head.fetch_and(!WAITING, SeqCst);
        self.returned.fetch_and(!WAITING, SeqCst);
    }

    /// Marks both lists orphaned and returns how many frames they held when marked.
    pub(crate) fn orphan(&self) -> usize {
        let head = self.head.fetch_or(ORPHANED, SeqCst);
        let returned = self.returned.fetch_or(ORPHANED, SeqCst);
        debug_assert!(head & WAITING == 0, "orphaned with waiters queued");
        self.depth_of(head) + count(returned)
    }

    /// Whether a waiter has asked for the next released frame.
    pub(crate) fn is_waiting(&self) -> bool {
        self.head.load(SeqCst) & WAITING != 0
    }

    /// Frames in the free list proper now (a snapshot).
    pub(crate) fn head_len(&self) -> usize {
        self.depth_of(self.head.load(SeqCst))
    }

    /// Frames in the returned list now (a snapshot).
    pub(crate) fn returned_len(&self) -> usize {
        count(self.returned.load(SeqCst))
    }

    /// Frames in both lists now (a snapshot).
    pub(crate) fn len(&self) -> usize {
        self.head_len() + self.returned_len()
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
    fn the_returned_list_is_taken_whole_and_spliced_under_the_rest() {
        let list = FreeList::full(4);
        let taken: Vec<u32> = (0..4).map(|_| list.pop().unwrap().0).collect();
        assert_eq!(list.push_returned(taken[0]), Push::Done);
        assert_eq!(list.push_returned(taken[1]), Push::Done);
        assert_eq!(list.push(taken[2]), Push::Done);
        assert_eq!(list.len(), 3);
        assert!(!list.set_waiting(), "frames are free");
        let chain = list.take_returned().unwrap();
        assert_eq!(chain.len, 2);
        assert_eq!((chain.top, list.next_of(chain.top)), (taken[1], taken[0]));
        assert_eq!(list.take_returned(), None);
        assert!(list.splice(chain));
        assert_eq!(list.len(), 3);
        let order: Vec<u32> = (0..3).map(|_| list.pop().unwrap().0).collect();
        assert_eq!(order, vec![taken[1], taken[0], taken[2]]);
        assert_eq!(list.pop(), None);
    }

    #[test]
    fn a_returned_list_spliced_onto_an_empty_list_keeps_its_count_exact() {
        let list = FreeList::full(5);
        let taken: Vec<u32> = (0..5).map(|_| list.pop().unwrap().0).collect();
        for &i in &taken {
            assert_eq!(list.push_returned(i), Push::Done);
        }
        let chain = list.take_returned().unwrap();
        assert_eq!(chain.len, 5);
        // The top frame goes to the caller (as `adopt` does), the rest onto the list,
        // unrenumbered: every pop still says how many frames are left.
        let rest = chain.rest(&list).unwrap();
        assert!(list.splice(rest));
        assert_eq!(list.len(), 4);
        let lefts: Vec<usize> = (0..4).map(|_| list.pop().unwrap().1).collect();
        assert_eq!(lefts, vec![3, 2, 1, 0]);
        assert_eq!(list.pop(), None);
        // And a chain spliced onto frames is renumbered on top of them.
        assert_eq!(list.push(taken[0]), Push::Done);
        for &i in &taken[1..3] {
            assert_eq!(list.push_returned(i), Push::Done);
        }
        assert!(list.splice(list.take_returned().unwrap()));
        let lefts: Vec<usize> = (0..3).map(|_| list.pop().unwrap().1).collect();
        assert_eq!(lefts, vec![2, 1, 0]);
    }

    #[test]
    fn waiting_refuses_both_lists_and_splices() {
        let list = FreeList::full(2);
        let (a, _) = list.pop().unwrap();
        let (b, _) = list.pop().unwrap();
        assert_eq!(list.push_returned(a), Push::Done);
        assert!(!list.set_waiting(), "the returned list holds a frame");
        let chain = list.take_returned().unwrap();
        assert!(list.set_waiting());
        assert_eq!(list.push_returned(b), Push::Waiting);
        assert_eq!(list.push(b), Push::Waiting);
        assert!(!list.splice(chain), "a waiter gets them one by one instead");
        list.clear_waiting();
        assert!(list.splice(chain));
        assert_eq!(list.push_returned(b), Push::Done);
        assert_eq!(list.orphan(), 2);
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
