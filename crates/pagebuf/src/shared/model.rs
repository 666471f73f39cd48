//! Test hook, not API (`--cfg loom` only): the shared pool's lock-free protocol (the
//! free list and the hand-over ring over the layout's words) in ordinary memory, for
//! the loom model in tests/loom_shared.rs. The real pool runs the very same code over
//! its memfd.

use super::free_list::FreeList;
use super::layout::{FrameEntry, FreeWords, RingWords};
use super::ring::TokenRing;
use crate::error::Result;
use crate::sync::AtomicU64;

/// A shared free list of `frames` frames and a hand-over ring with a cell per frame.
pub struct Model {
    free: FreeWords,
    entries: Vec<FrameEntry>,
    ring: RingWords,
    cells: Vec<AtomicU64>,
}

impl Model {
    /// Every frame free, the ring empty.
    pub fn new(frames: usize) -> Model {
        let model = Model {
            free: FreeWords {
                head: AtomicU64::new(0),
                out: AtomicU64::new(0),
                high_water: AtomicU64::new(0),
            },
            entries: (0..frames)
                .map(|_| FrameEntry {
                    next: AtomicU64::new(0),
                    owner: AtomicU64::new(0),
                })
                .collect(),
            ring: RingWords {
                head: AtomicU64::new(0),
                tail: AtomicU64::new(0),
            },
            cells: (0..frames.next_power_of_two())
                .map(|_| AtomicU64::new(0))
                .collect(),
        };
        model.list().fill();
        model
    }

    fn list(&self) -> FreeList<'_> {
        FreeList {
            words: &self.free,
            entries: &self.entries,
            head_offset: 0,
            table_offset: 0,
        }
    }

    fn ring(&self) -> TokenRing<'_> {
        TokenRing {
            words: &self.ring,
            cells: &self.cells,
            offset: 0,
        }
    }

    /// Takes a free frame.
    pub fn pop(&self) -> Result<Option<u32>> {
        self.list().pop()
    }

    /// Returns a frame the caller took.
    pub fn push(&self, index: u32) {
        self.list().push(index)
    }

    /// Puts a frame's token in the ring.
    pub fn put(&self, index: u32) -> Result<()> {
        self.ring().put(index)
    }

    /// Takes the next token from the ring.
    pub fn take(&self) -> Result<Option<u32>> {
        self.ring().take()
    }
}
