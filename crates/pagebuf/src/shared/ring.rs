//! The hand-over ring: frame tokens passed from one process to another in the shared
//! memory, lock-free, and safe against a process dying at any instruction.
//!
//! Each cell is one word:
//!
//! ```text
//! [lap:16][sender generation:16][sender entry + 1:7][SEEN:1][frame index + 1:24]
//! ```
//!
//! `index + 1 == 0` is an empty cell; `lap` is how many times the ring has wrapped at
//! that cell (mod 2^16), so a cell's position is known from the word. Putting a token
//! is one compare-and-swap of a cell from "empty in this lap" to "full in this lap",
//! naming the sender (its process table entry and the low 16 bits of that entry's
//! generation); `SEEN` is set by a receiver that found the frame committed, before it
//! takes it; consuming is one compare-and-swap to "empty in the next lap". The `head`
//! and `tail` positions only follow those decisive steps, and anyone who finds them
//! behind (a process died between its cell and the position) moves them on, so a
//! death never wedges the ring. Tokens never need more than a cell per frame, so a
//! full ring means a peer pushed tokens it had no frames for.
//!
//! The ring orders tokens; whether a frame is handed over is its owner word's business
//! (`hand_over.rs`).

use crate::sync::{AtomicU64, Ordering};

use super::layout::{Owner, RingWords};
use crate::error::{Error, Result};

/// The ring of one mapping.
pub(super) struct TokenRing<'a> {
    pub(super) words: &'a RingWords,
    /// A power of two number of cells.
    pub(super) cells: &'a [AtomicU64],
    /// Byte offset of the cells, for error messages.
    pub(super) offset: u64,
}

const TOKEN_MASK: u64 = (1 << 24) - 1;
const SEEN: u64 = 1 << 24;

/// Who put a token: a process table entry and the low bits of its generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Sender {
    pub(super) slot: usize,
    pub(super) generation: u16,
}

impl Sender {
    pub(super) fn of(owner: Owner) -> Sender {
        Sender {
            slot: owner.slot,
            generation: owner.generation as u16,
        }
    }

    /// Whether `owner` is this sender (its generation's low bits match).
    pub(super) fn is(self, owner: Owner) -> bool {
        self == Sender::of(owner)
    }
}

/// A cell as read: its lap, and its token if full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cell(u64);

impl Cell {
    fn empty(lap: u16) -> Cell {
        Cell(u64::from(lap) << 48)
    }

    fn full(lap: u16, sender: Sender, index: u32) -> Cell {
        Cell(
            u64::from(lap) << 48
                | u64::from(sender.generation) << 32
                | (sender.slot as u64 + 1) << 25
                | (u64::from(index) + 1),
        )
    }

    fn lap(self) -> u16 {
        (self.0 >> 48) as u16
    }

    fn token(self) -> u64 {
        self.0 & TOKEN_MASK
    }

    fn seen(self) -> bool {
        self.0 & SEEN != 0
    }
}

/// The token at the head of the ring, as [`TokenRing::head`] found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Token {
    /// Its position (counted from the ring's start): the owner word of a frame
    /// committed to it names it.
    pub(super) position: u64,
    pub(super) index: u32,
    /// `None` if the word names no process table entry (garbage: the receiver checks).
    pub(super) sender: Option<Sender>,
    /// A receiver found the frame committed and went on to take it.
    pub(super) seen: bool,
    word: u64,
}

impl TokenRing<'_> {
    /// How many tries a put or a take makes before calling the ring corrupt: every
    /// retry follows another process's progress, and a hostile peer must not keep us
    /// spinning forever.
    pub(super) fn patience(&self) -> usize {
        self.cells.len() * 4 + 1024
    }

    fn position(&self, position: u64) -> (usize, u16) {
        let cells = self.cells.len() as u64;
        ((position % cells) as usize, (position / cells) as u16)
    }

    fn corrupt(&self, detail: String) -> Error {
        Error::Corrupt {
            offset: self.offset,
            detail,
        }
    }

    /// Moves `word` (`head` or `tail`) from `from` to the next position, if no one did.
    fn advance(word: &AtomicU64, from: u64) {
        let _ = word.compare_exchange(
            from,
            from.wrapping_add(1),
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
    }

    /// Puts the token of frame `index` (below `layout::FRAME_LIMIT - 1`) from `sender`
    /// at the tail; returns its position.
    pub(super) fn put(&self, index: u32, sender: Sender) -> Result<u64> {
        for _ in 0..self.patience() {
            let tail = self.words.tail.load(Ordering::Acquire);
            let (at, lap) = self.position(tail);
            let word = self.cells[at].load(Ordering::Acquire);
            let cell = Cell(word);
            if cell == Cell::empty(lap) {
                if self.cells[at]
                    .compare_exchange(
                        word,
                        Cell::full(lap, sender, index).0,
                        Ordering::AcqRel,
                        Ordering::Relaxed,
                    )
                    .is_ok()
                {
                    Self::advance(&self.words.tail, tail);
                    return Ok(tail);
                }
            } else if (cell.lap() == lap && cell.token() != 0)
                || cell == Cell::empty(lap.wrapping_add(1))
            {
                // Filled in this lap (and perhaps taken already): the tail is behind.
                Self::advance(&self.words.tail, tail);
            } else if cell.lap() == lap.wrapping_sub(1) && cell.token() != 0 {
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

    /// The token at the head, moving the head past cells already consumed: `Ok(None)`
    /// when the ring is empty.
    pub(super) fn head(&self) -> Result<Option<Token>> {
        for _ in 0..self.patience() {
            let head = self.words.head.load(Ordering::Acquire);
            let (at, lap) = self.position(head);
            let word = self.cells[at].load(Ordering::Acquire);
            let cell = Cell(word);
            if cell.lap() == lap && cell.token() != 0 {
                let entry = ((word >> 25) & 0x7f) as usize;
                return Ok(Some(Token {
                    position: head,
                    index: (cell.token() - 1) as u32,
                    sender: entry.checked_sub(1).map(|slot| Sender {
                        slot,
                        generation: (word >> 32) as u16,
                    }),
                    seen: cell.seen(),
                    word,
                }));
            } else if cell == Cell::empty(lap) {
                return Ok(None);
            } else if cell == Cell::empty(lap.wrapping_add(1)) {
                // Consumed in this lap already: the head is behind.
                Self::advance(&self.words.head, head);
            } else if self.words.head.load(Ordering::Acquire) == head {
                return Err(self.corrupt(format!(
                    "hand-over ring cell {at} holds {word:#x}, which fits no lap near \
                     position {head}"
                )));
            }
        }
        Err(self.corrupt("the hand-over ring's head never settled".into()))
    }

    /// Marks `token` seen; false if its cell changed meanwhile (look again).
    pub(super) fn mark_seen(&self, token: &Token) -> bool {
        let (at, _) = self.position(token.position);
        token.seen
            || self.cells[at]
                .compare_exchange(
                    token.word,
                    token.word | SEEN,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
    }

    /// Empties `token`'s cell for the next lap and moves the head past it, if no one
    /// did either already.
    pub(super) fn consume(&self, token: &Token) {
        let (at, lap) = self.position(token.position);
        let current = self.cells[at].load(Ordering::Acquire);
        if current & !SEEN == token.word & !SEEN {
            let _ = self.cells[at].compare_exchange(
                current,
                Cell::empty(lap.wrapping_add(1)).0,
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
        }
        Self::advance(&self.words.head, token.position);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::shared::model::Model;

    const ME: Sender = Sender {
        slot: 63,
        generation: 0xbeef,
    };

    fn take(ring: &TokenRing<'_>) -> Option<u32> {
        let token = ring.head().unwrap()?;
        assert_eq!(token.sender, Some(ME));
        ring.consume(&token);
        Some(token.index)
    }

    #[test]
    fn tokens_come_out_in_order_across_many_laps() {
        let model = Model::new(4);
        let ring = model.ring();
        for round in 0..50u32 {
            for i in 0..3 {
                assert_eq!(
                    ring.put(round * 3 + i, ME).unwrap(),
                    u64::from(round * 3 + i)
                );
            }
            for i in 0..3 {
                assert_eq!(take(&ring), Some(round * 3 + i));
            }
            assert_eq!(take(&ring), None);
        }
    }

    #[test]
    fn a_seen_token_is_still_the_head_until_consumed() {
        let model = Model::new(2);
        let ring = model.ring();
        ring.put(1, ME).unwrap();
        let token = ring.head().unwrap().unwrap();
        assert!(ring.mark_seen(&token));
        let again = ring.head().unwrap().unwrap();
        assert!(again.seen && again.index == 1 && again.position == 0);
        assert!(
            !ring.mark_seen(&token),
            "the cell changed since it was read"
        );
        ring.consume(&token); // read before SEEN was set: consumed all the same
        assert_eq!(ring.head().unwrap(), None);
    }

    #[test]
    fn a_death_between_cell_and_position_does_not_wedge_the_ring() {
        let model = Model::new(4);
        let ring = model.ring();
        // A putter filled cell 0 and died before moving the tail.
        ring.cells[0].store(Cell::full(0, ME, 7).0, Ordering::Relaxed);
        assert_eq!(ring.put(3, ME).unwrap(), 1);
        // A taker emptied cell 0 and died before moving the head.
        ring.cells[0].store(Cell::empty(1).0, Ordering::Relaxed);
        assert_eq!(take(&ring), Some(3));
        assert_eq!(take(&ring), None);
    }

    #[test]
    fn a_full_ring_or_a_garbage_cell_is_corrupt() {
        let model = Model::new(2);
        let ring = model.ring();
        ring.put(0, ME).unwrap();
        ring.put(1, ME).unwrap();
        let err = ring.put(0, ME).unwrap_err();
        assert!(err.to_string().contains("full"), "{err}");
        let model = Model::new(2);
        let garbage = model.ring();
        garbage.cells[0].store(77 << 48 | 5, Ordering::Relaxed);
        assert!(garbage.head().is_err());
        assert!(garbage.put(1, ME).is_err());
    }
}
