//! The shared free list: a lock-free stack of frame indices whose head is one word of
//! shared memory, `[tag:32][top:32]`, with one `next` link per frame.
//!
//! Every value read from shared memory is checked before it is used: a top or a link
//! that is neither `NIL` nor a frame index is corruption (a peer wrote garbage), and is
//! reported as [`Error::Corrupt`], never used.

use crate::sync::Ordering;

use super::layout::{FrameEntry, FreeWords, NIL};
use crate::error::{Error, Result};

/// The free list of one mapping: the head words and the frame entries.
pub(super) struct FreeList<'a> {
    pub(super) words: &'a FreeWords,
    pub(super) entries: &'a [FrameEntry],
    /// Byte offset of the head word in the memfd, for error messages.
    pub(super) head_offset: u64,
    /// Byte offset of the frame table, for error messages.
    pub(super) table_offset: u64,
}

fn top(head: u64) -> u32 {
    head as u32
}

fn with_top(head: u64, index: u32) -> u64 {
    let tag = (head >> 32).wrapping_add(1) & 0xffff_ffff;
    (tag << 32) | u64::from(index)
}

impl FreeList<'_> {
    /// Links every frame into the list, `0` on top. Only for a pool nobody else sees.
    pub(super) fn fill(&self) {
        let frames = self.entries.len();
        for (i, entry) in self.entries.iter().enumerate() {
            let next = if i + 1 < frames {
                (i + 1) as u64
            } else {
                u64::from(NIL)
            };
            entry.next.store(next, Ordering::Relaxed);
            entry.owner.store(0, Ordering::Relaxed);
        }
        let first = if frames == 0 { NIL } else { 0 };
        self.words.head.store(u64::from(first), Ordering::Release);
    }

    /// Takes the top frame: `Ok(None)` when the list is empty.
    pub(super) fn pop(&self) -> Result<Option<u32>> {
        let mut head = self.words.head.load(Ordering::Acquire);
        loop {
            let index = top(head);
            if index == NIL {
                return Ok(None);
            }
            let entry = self
                .entries
                .get(index as usize)
                .ok_or_else(|| Error::Corrupt {
                    offset: self.head_offset,
                    detail: format!(
                        "the shared free list's top is frame {index}, the pool has {} frames",
                        self.entries.len()
                    ),
                })?;
            let next = entry.next.load(Ordering::Relaxed);
            let valid = next == u64::from(NIL) || next < self.entries.len() as u64;
            if !valid {
                // A link read while another process popped the same frame can be stale,
                // but never out of range: links only ever hold indices or NIL. Make
                // sure the head did not move before calling it corruption.
                let again = self.words.head.load(Ordering::Acquire);
                if again != head {
                    head = again;
                    continue;
                }
                return Err(Error::Corrupt {
                    offset: self.table_offset + u64::from(index) * 16,
                    detail: format!(
                        "frame {index}'s free-list link is {next:#x}, not a frame index \
                         below {} or the end",
                        self.entries.len()
                    ),
                });
            }
            match self.words.head.compare_exchange_weak(
                head,
                with_top(head, next as u32),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(Some(index)),
                Err(actual) => head = actual,
            }
        }
    }

    /// Puts frame `index` (below the frame count: the caller's own frame) back on top.
    /// `Release`: the caller's writes to the frame happen-before the next owner's use.
    pub(super) fn push(&self, index: u32) {
        let entry = &self.entries[index as usize];
        let mut head = self.words.head.load(Ordering::Relaxed);
        loop {
            entry.next.store(u64::from(top(head)), Ordering::Relaxed);
            match self.words.head.compare_exchange_weak(
                head,
                with_top(head, index),
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(actual) => head = actual,
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::sync::AtomicU64;

    fn list(frames: usize) -> (FreeWords, Vec<FrameEntry>) {
        let words = FreeWords {
            head: AtomicU64::new(0),
            out: AtomicU64::new(0),
            high_water: AtomicU64::new(0),
        };
        let entries = (0..frames)
            .map(|_| FrameEntry {
                next: AtomicU64::new(0),
                owner: AtomicU64::new(0),
            })
            .collect();
        (words, entries)
    }

    #[test]
    fn pops_every_frame_once_then_none() {
        let (words, entries) = list(3);
        let free = FreeList {
            words: &words,
            entries: &entries,
            head_offset: 0,
            table_offset: 0,
        };
        free.fill();
        let mut got: Vec<u32> = (0..3).map(|_| free.pop().unwrap().unwrap()).collect();
        assert_eq!(free.pop().unwrap(), None);
        got.sort_unstable();
        assert_eq!(got, [0, 1, 2]);
        free.push(1);
        assert_eq!(free.pop().unwrap(), Some(1));
    }

    #[test]
    fn garbage_head_or_link_is_corrupt() {
        let (words, entries) = list(2);
        let free = FreeList {
            words: &words,
            entries: &entries,
            head_offset: 64,
            table_offset: 4096,
        };
        free.fill();
        words.head.store(7, Ordering::Relaxed);
        let err = free.pop().unwrap_err();
        assert!(err.to_string().contains("top is frame 7"), "{err}");
        free.fill();
        entries[0].next.store(99, Ordering::Relaxed);
        let err = free.pop().unwrap_err();
        assert!(err.to_string().contains("link is 0x63"), "{err}");
    }
}
