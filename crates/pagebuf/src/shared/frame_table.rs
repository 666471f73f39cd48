//! The shared frame table: one owner word per frame, the only record of who holds it.
//!
//! ```text
//! owner word:  0                      free
//!              [generation:56][slot+1] held by process table entry `slot` (1..=64)
//!              [ring position:56][0xff] handed over, not yet received
//! ```
//!
//! Every change of hands is one compare-and-swap of that word, so a process killed at
//! any instruction leaves each frame in exactly one of those states: free, held by a
//! process (which, once found dead, a survivor frees), or in transit. There is no
//! second record to fall out of step with it (a free list whose pop and owner write
//! were two steps lost the frame to a death between them).
//!
//! * **Claim** scans from a shared cursor for a free word and swings it to the
//!   caller's; the cursor is a hint (any value is safe), moved past each claim so the
//!   next scan starts where frames are likely free. The cost is a load per frame
//!   passed over: a few hundred nanoseconds at a thousand frames all out, nothing when
//!   frames are free ahead.
//! * **Release** swings the caller's word back to free, then counts the release in
//!   `released` (the allocators' futex word); finding another value in the word means
//!   a peer wrote it (or believed us dead), and the frame is left alone.
//! * **Reclaim** frees every frame a dead process's word still names.
//!
//! A pass can miss a frame freed behind it while another is claimed ahead of it, so a
//! pass that finds nothing is repeated while `released` moved during it: a claim says
//! "none" only when a whole pass saw every frame out and no release finished meanwhile
//! (a release still between its two steps may be missed; a waiter, which sleeps on
//! `released`, is woken by its second).
//!
//! Every word read is checked: a value none of the states above can hold is
//! corruption, reported with its offset, never used.

use crate::error::{Error, Result};
use crate::sync::{AtomicU32, AtomicU64, Ordering};

use super::layout::{FrameEntry, OwnerWord, FREE};

/// How many passes a claim makes at most.
const PASSES: usize = 64;

/// The frame table of one mapping.
pub(super) struct FrameTable<'a> {
    pub(super) entries: &'a [FrameEntry],
    /// Where the next claim starts looking (a hint).
    pub(super) cursor: &'a AtomicU64,
    /// Releases so far (wrapping): the allocators' futex word.
    pub(super) released: &'a AtomicU32,
    /// Byte offset of the table in the memfd, for error messages.
    pub(super) offset: u64,
}

impl FrameTable<'_> {
    /// Byte offset of frame `index`'s owner word in the memfd.
    pub(super) fn owner_offset(&self, index: usize) -> u64 {
        self.offset + (index * std::mem::size_of::<FrameEntry>()) as u64 + 8
    }

    fn garbage(&self, index: usize, word: u64) -> Error {
        Error::Corrupt {
            offset: self.owner_offset(index),
            detail: format!(
                "frame {index}'s owner word is {word:#x}, which is neither free, a process \
                 table entry (1 to 64 in its low byte) nor in transit"
            ),
        }
    }

    /// Claims a free frame for `owner` (an owner word): `Ok(None)` when a whole pass
    /// finds every frame out and no release finished during it. `Acquire`: the last
    /// holder's writes to the frame happen-before ours.
    pub(super) fn claim(&self, owner: u64) -> Result<Option<u32>> {
        // Each repeat follows a release that finished meanwhile; a bound all the same,
        // so that a peer bumping the word in a loop cannot keep us here.
        for _ in 0..PASSES {
            let released = self.released.load(Ordering::SeqCst);
            if let Some(index) = self.claim_in_one_pass(owner)? {
                return Ok(Some(index));
            }
            if self.released.load(Ordering::SeqCst) == released {
                return Ok(None);
            }
        }
        Ok(None)
    }

    fn claim_in_one_pass(&self, owner: u64) -> Result<Option<u32>> {
        let frames = self.entries.len();
        if frames == 0 {
            return Ok(None);
        }
        // The cursor is any word a peer wrote: reduced to a frame index, never trusted.
        let start = (self.cursor.load(Ordering::Relaxed) % frames as u64) as usize;
        for step in 0..frames {
            let index = if start + step < frames {
                start + step
            } else {
                start + step - frames
            };
            let word = &self.entries[index].owner;
            // Acquire here and release in the claim's swing: a pass that saw a frame
            // claimed also sees the releases its claimer finished before (so the check
            // of `released` after the pass is not fooled by a frame that changed hands).
            match word.load(Ordering::Acquire) {
                FREE if word
                    .compare_exchange(FREE, owner, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok() =>
                {
                    self.cursor.store(index as u64 + 1, Ordering::Relaxed);
                    return Ok(Some(index as u32));
                }
                // Another taker was first: look on.
                FREE => {}
                other if OwnerWord::parse(other).is_none() => {
                    return Err(self.garbage(index, other));
                }
                _held => {}
            }
        }
        Ok(None)
    }

    /// Frees frame `index` (below the frame count), held by `owner`. `Release`: our
    /// writes to the frame happen-before the next holder's use. `Err(actual)`, changing
    /// nothing, when the word says someone else holds it.
    pub(super) fn release(&self, index: u32, owner: u64) -> std::result::Result<(), u64> {
        self.entries[index as usize].owner.compare_exchange(
            owner,
            FREE,
            Ordering::Release,
            Ordering::Relaxed,
        )?;
        self.released.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Swings frame `index` from `from` to `to`: a hand-over's steps. `Err(actual)`,
    /// changing nothing, when the word holds something else.
    pub(super) fn pass(&self, index: u32, from: u64, to: u64) -> std::result::Result<(), u64> {
        self.entries[index as usize]
            .owner
            .compare_exchange(from, to, Ordering::AcqRel, Ordering::Relaxed)
            .map(|_| ())
    }

    /// Frees every frame whose word is `dead` (the owner word of a dead process's
    /// entry); how many.
    pub(super) fn reclaim(&self, dead: u64) -> usize {
        let freed = self
            .entries
            .iter()
            .filter(|entry| {
                entry
                    .owner
                    .compare_exchange(dead, FREE, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            })
            .count();
        if freed > 0 {
            self.released.fetch_add(1, Ordering::SeqCst);
        }
        freed
    }

    /// Frames held or in transit now (a snapshot), or the first garbage word.
    pub(super) fn out(&self) -> Result<usize> {
        let mut out = 0;
        for (index, entry) in self.entries.iter().enumerate() {
            match entry.owner.load(Ordering::Relaxed) {
                FREE => {}
                word if OwnerWord::parse(word).is_none() => return Err(self.garbage(index, word)),
                _ => out += 1,
            }
        }
        Ok(out)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::shared::layout::{in_transit, Owner};

    struct Words {
        cursor: AtomicU64,
        released: AtomicU32,
        entries: Vec<FrameEntry>,
    }

    impl Words {
        fn new(frames: usize) -> Words {
            Words {
                cursor: AtomicU64::new(0),
                released: AtomicU32::new(0),
                entries: (0..frames).map(|_| FrameEntry::free()).collect(),
            }
        }

        fn table(&self, offset: u64) -> FrameTable<'_> {
            FrameTable {
                entries: &self.entries,
                cursor: &self.cursor,
                released: &self.released,
                offset,
            }
        }
    }

    fn me(slot: usize) -> u64 {
        Owner {
            slot,
            generation: 3,
        }
        .word()
    }

    #[test]
    fn claims_every_frame_once_then_none_and_a_release_frees_one() {
        let words = Words::new(3);
        let table = words.table(0);
        let mut got: Vec<u32> = (0..3)
            .map(|_| table.claim(me(0)).unwrap().unwrap())
            .collect();
        assert_eq!(table.claim(me(1)).unwrap(), None);
        got.sort_unstable();
        assert_eq!(got, [0, 1, 2]);
        assert_eq!(table.out().unwrap(), 3);
        assert_eq!(table.release(1, me(1)), Err(me(0)), "not the holder");
        assert_eq!(table.release(1, me(0)), Ok(()));
        assert_eq!(
            words.released.load(Ordering::Relaxed),
            1,
            "a release is counted"
        );
        assert_eq!(table.claim(me(1)).unwrap(), Some(1));
    }

    #[test]
    fn a_cursor_a_peer_scribbled_on_is_only_a_place_to_start() {
        let words = Words::new(4);
        let table = words.table(0);
        words.cursor.store(u64::MAX, Ordering::Relaxed);
        let got: Vec<u32> = (0..4)
            .map(|_| table.claim(me(0)).unwrap().unwrap())
            .collect();
        assert_eq!(got.len(), 4);
        assert_eq!(table.claim(me(0)).unwrap(), None);
    }

    #[test]
    fn reclaim_frees_only_the_dead_processs_frames() {
        let words = Words::new(4);
        let table = words.table(0);
        for owner in [me(0), me(1), me(0)] {
            table.claim(owner).unwrap().unwrap();
        }
        table.pass(3, FREE, in_transit(0)).unwrap();
        assert_eq!(table.reclaim(me(0)), 2);
        assert_eq!(
            table.out().unwrap(),
            2,
            "the live one's and the one in transit"
        );
    }

    #[test]
    fn a_garbage_owner_word_is_corrupt_with_its_offset() {
        let words = Words::new(2);
        let table = words.table(4096);
        words.entries[0].owner.store(1, Ordering::Relaxed); // held: passed over
        words.entries[1].owner.store(0x1234_5677, Ordering::Relaxed);
        match table.claim(me(0)) {
            Err(Error::Corrupt { offset, detail }) => {
                assert_eq!(offset, 4096 + 16 + 8);
                assert!(
                    detail.contains("frame 1's owner word is 0x12345677"),
                    "{detail}"
                );
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        assert!(table.out().is_err());
    }
}
