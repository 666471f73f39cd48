//! The hand-over ring: frame tokens passed from one process to another in the shared
//! memory, lock-free, and safe against a process dying at any instruction.
//!
//! Each cell is one word, `[lap:32][index + 1:32]` (`index + 1 == 0`: empty), where
//! `lap` is how many times the ring has wrapped at that cell. Putting a token is one
//! compare-and-swap of a cell from "empty in this lap" to "full in this lap"; taking
//! it, one compare-and-swap from "full in this lap" to "empty in the next". The `head`
//! and `tail` positions only follow those decisive steps, and anyone who finds them
//! behind (a process died between its cell and the position) moves them on, so a
//! death never wedges the ring. Tokens never need more than a cell per frame, so a
//! full ring means a peer pushed tokens it had no frames for.

use crate::sync::{AtomicU64, Ordering};

use super::layout::RingWords;
use crate::error::{Error, Result};

/// The ring of one mapping.
pub(super) struct TokenRing<'a> {
    pub(super) words: &'a RingWords,
    /// A power of two number of cells.
    pub(super) cells: &'a [AtomicU64],
    /// Byte offset of the cells, for error messages.
    pub(super) offset: u64,
}

fn lap_of(word: u64) -> u32 {
    (word >> 32) as u32
}

fn token_of(word: u64) -> u32 {
    word as u32
}

fn cell(lap: u32, token: u32) -> u64 {
    (u64::from(lap) << 32) | u64::from(token)
}

impl TokenRing<'_> {
    /// How many tries a put or a take makes before calling the ring corrupt: every
    /// retry follows another process's progress, and a hostile peer must not keep us
    /// spinning forever.
    fn patience(&self) -> usize {
        self.cells.len() * 4 + 1024
    }

    fn position(&self, position: u64) -> (usize, u32) {
        let cells = self.cells.len() as u64;
        ((position % cells) as usize, (position / cells) as u32)
    }

    fn corrupt(&self, detail: String) -> Error {
        Error::Corrupt {
            offset: self.offset,
            detail,
        }
    }

    /// Puts the token of frame `index` (below `u32::MAX`) at the tail.
    pub(super) fn put(&self, index: u32) -> Result<()> {
        let token = index + 1;
        for _ in 0..self.patience() {
            let tail = self.words.tail.load(Ordering::Acquire);
            let (at, lap) = self.position(tail);
            let word = self.cells[at].load(Ordering::Acquire);
            let (cell_lap, cell_token) = (lap_of(word), token_of(word));
            if cell_lap == lap && cell_token == 0 {
                if self.cells[at]
                    .compare_exchange(word, cell(lap, token), Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                {
                    let _ = self.words.tail.compare_exchange(
                        tail,
                        tail.wrapping_add(1),
                        Ordering::AcqRel,
                        Ordering::Relaxed,
                    );
                    return Ok(());
                }
            } else if (cell_lap == lap && cell_token != 0)
                || (cell_lap == lap.wrapping_add(1) && cell_token == 0)
            {
                // Filled in this lap (and perhaps taken already): the tail is behind.
                let _ = self.words.tail.compare_exchange(
                    tail,
                    tail.wrapping_add(1),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                );
            } else if cell_lap == lap.wrapping_sub(1) && cell_token != 0 {
                return Err(self.corrupt(format!(
                    "the hand-over ring is full at position {tail}: more tokens are in it \
                     than the pool has frames"
                )));
            } else if self.words.tail.load(Ordering::Acquire) == tail {
                return Err(self.corrupt(format!(
                    "hand-over ring cell {at} holds {word:#x}, which fits no lap near \
                     position {tail}"
                )));
            }
        }
        Err(self.corrupt("the hand-over ring's tail never settled".into()))
    }

    /// Takes the token at the head: `Ok(None)` when the ring is empty.
    pub(super) fn take(&self) -> Result<Option<u32>> {
        for _ in 0..self.patience() {
            let head = self.words.head.load(Ordering::Acquire);
            let (at, lap) = self.position(head);
            let word = self.cells[at].load(Ordering::Acquire);
            let (cell_lap, cell_token) = (lap_of(word), token_of(word));
            if cell_lap == lap && cell_token != 0 {
                if self.cells[at]
                    .compare_exchange(
                        word,
                        cell(lap.wrapping_add(1), 0),
                        Ordering::AcqRel,
                        Ordering::Relaxed,
                    )
                    .is_ok()
                {
                    let _ = self.words.head.compare_exchange(
                        head,
                        head.wrapping_add(1),
                        Ordering::AcqRel,
                        Ordering::Relaxed,
                    );
                    return Ok(Some(cell_token - 1));
                }
            } else if cell_lap == lap && cell_token == 0 {
                return Ok(None);
            } else if cell_lap == lap.wrapping_add(1) && cell_token == 0 {
                // Taken in this lap already: the head is behind.
                let _ = self.words.head.compare_exchange(
                    head,
                    head.wrapping_add(1),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                );
            } else if self.words.head.load(Ordering::Acquire) == head {
                return Err(self.corrupt(format!(
                    "hand-over ring cell {at} holds {word:#x}, which fits no lap near \
                     position {head}"
                )));
            }
        }
        Err(self.corrupt("the hand-over ring's head never settled".into()))
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn ring(cells: usize) -> (RingWords, Vec<AtomicU64>) {
        let words = RingWords {
            head: AtomicU64::new(0),
            tail: AtomicU64::new(0),
        };
        (words, (0..cells).map(|_| AtomicU64::new(0)).collect())
    }

    #[test]
    fn tokens_come_out_in_order_across_many_laps() {
        let (words, cells) = ring(4);
        let ring = TokenRing {
            words: &words,
            cells: &cells,
            offset: 0,
        };
        for round in 0..50u32 {
            for i in 0..3 {
                ring.put(round * 3 + i).unwrap();
            }
            for i in 0..3 {
                assert_eq!(ring.take().unwrap(), Some(round * 3 + i));
            }
            assert_eq!(ring.take().unwrap(), None);
        }
    }

    #[test]
    fn a_death_between_cell_and_position_does_not_wedge_the_ring() {
        let (words, cells) = ring(4);
        let ring = TokenRing {
            words: &words,
            cells: &cells,
            offset: 0,
        };
        // A putter filled cell 0 and died before moving the tail.
        cells[0].store(cell(0, 8), Ordering::Relaxed);
        ring.put(3).unwrap();
        // A taker emptied cell 0 and died before moving the head.
        cells[0].store(cell(1, 0), Ordering::Relaxed);
        assert_eq!(ring.take().unwrap(), Some(3));
        assert_eq!(ring.take().unwrap(), None);
    }

    #[test]
    fn a_full_ring_or_a_garbage_cell_is_corrupt() {
        let (words, cells) = ring(2);
        let ring = TokenRing {
            words: &words,
            cells: &cells,
            offset: 0,
        };
        ring.put(0).unwrap();
        ring.put(1).unwrap();
        let err = ring.put(0).unwrap_err();
        assert!(err.to_string().contains("full"), "{err}");
        let (words, cells) = super::tests::ring(2);
        let garbage = TokenRing {
            words: &words,
            cells: &cells,
            offset: 0,
        };
        cells[0].store(cell(77, 5), Ordering::Relaxed);
        assert!(garbage.take().is_err());
        assert!(garbage.put(1).is_err());
    }
}
