//! Test hook, not API (`--cfg loom`, and unit tests): the shared pool's lock-free protocol (the
//! frame table's owner words and the hand-over ring over the layout's words) in ordinary memory, for
//! the loom model in tests/loom_shared.rs. The real pool runs the very same code over
//! its memfd.

use super::frame_table::FrameTable;
use super::hand_over::{self, Received};
use super::layout::{FrameEntry, FreeWords, Owner, RingWords};
use super::ring::TokenRing;
use crate::error::Result;
use crate::sync::{AtomicU32, AtomicU64};

/// A shared frame table of `frames` frames and a hand-over ring with a cell per frame.
// Unit tests use only some of it.
#[cfg_attr(not(loom), allow(dead_code))]
pub struct Model {
    free: FreeWords,
    released: AtomicU32,
    entries: Vec<FrameEntry>,
    ring: RingWords,
    cells: Vec<AtomicU64>,
}

#[cfg_attr(not(loom), allow(dead_code))]
impl Model {
    /// Every frame free, the ring empty.
    pub fn new(frames: usize) -> Model {
        Model {
            free: FreeWords {
                cursor: AtomicU64::new(0),
                out: AtomicU64::new(0),
                high_water: AtomicU64::new(0),
            },
            released: AtomicU32::new(0),
            entries: (0..frames).map(|_| FrameEntry::free()).collect(),
            ring: RingWords {
                head: AtomicU64::new(0),
                tail: AtomicU64::new(0),
            },
            cells: (0..frames.next_power_of_two())
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }

    pub(super) fn table(&self) -> FrameTable<'_> {
        FrameTable {
            entries: &self.entries,
            cursor: &self.free.cursor,
            released: &self.released,
            offset: 0,
        }
    }

    pub(super) fn process(process: usize) -> Owner {
        Owner {
            slot: process,
            generation: 1,
        }
    }

    fn owner(process: usize) -> u64 {
        Self::process(process).word()
    }

    pub(super) fn ring(&self) -> TokenRing<'_> {
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

    /// Hands frame `index`, which `process` claimed, to whichever process receives
    /// next.
    pub fn send(&self, index: u32, process: usize) -> Result<()> {
        hand_over::send(&self.ring(), &self.table(), index, Self::process(process))
    }

    /// Receives the next frame handed over, for `process` (every sender counts as
    /// alive); `None` if none is ready.
    pub fn receive(&self, process: usize) -> Result<Option<u32>> {
        let received =
            hand_over::receive(&self.ring(), &self.table(), Self::process(process), |_| {
                true
            })?;
        Ok(match received {
            Received::Frame(index) => Some(index),
            Received::Nothing | Received::Pending => None,
        })
    }
}
