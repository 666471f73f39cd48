//! Test hook, not API (`--cfg loom` only): the shared pool's lock-free protocol (the
//! frame table's owner words and the hand-over ring over the layout's words) in ordinary memory, for
//! the loom model in tests/loom_shared.rs. The real pool runs the very same code over
//! its memfd.

use super::frame_table::FrameTable;
use super::layout::{FrameEntry, FreeWords, Owner, RingWords, FREE};
use super::ring::TokenRing;
use crate::error::Result;
use crate::sync::{AtomicU32, AtomicU64};

/// A shared frame table of `frames` frames and a hand-over ring with a cell per frame.
pub struct Model {
    free: FreeWords,
    released: AtomicU32,
    entries: Vec<FrameEntry>,
    ring: RingWords,
    cells: Vec<AtomicU64>,
}

impl Model {
    /// Every frame free, the ring empty.
    pub fn new(frames: usize) -> Model {
        let model = Model {
            free: FreeWords {
                cursor: AtomicU64::new(0),
                out: AtomicU64::new(0),
                high_water: AtomicU64::new(0),
            },
            released: AtomicU32::new(0),
            entries: (0..frames)
                .map(|_| FrameEntry {
                    next: AtomicU64::new(0),
                    owner: AtomicU64::new(FREE),
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
        model
    }

    fn table(&self) -> FrameTable<'_> {
        FrameTable {
            entries: &self.entries,
            cursor: &self.free.cursor,
            released: &self.released,
            offset: 0,
        }
    }

    fn owner(process: usize) -> u64 {
        Owner {
            slot: process,
            generation: 1,
        }
        .word()
    }

    fn ring(&self) -> TokenRing<'_> {
        TokenRing {
            words: &self.ring,
            cells: &self.cells,
            offset: 0,
        }
    }

    /// Claims a free frame for process table entry `process` (below 64).
    pub fn claim(&self, process: usize) -> Result<Option<u32>> {
        self.table().claim(Self::owner(process))
    }

    /// Frees a frame `process` claimed; false if its word says otherwise.
    pub fn release(&self, index: u32, process: usize) -> bool {
        self.table().release(index, Self::owner(process)).is_ok()
    }

    /// Frees every frame of `process`, as a survivor does for a dead one; how many.
    pub fn reclaim(&self, process: usize) -> usize {
        self.table().reclaim(Self::owner(process))
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
