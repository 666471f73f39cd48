//! [`Segments`]: which parts of a log file hold its live records, and where the log
//! goes when the segment it is writing fills.
//!
//! ```text
//! file:   | hdr | seg 0 | seg 1 | seg 2 | seg 3 |
//! live:           [ 2 ]   [ 3 ]   [ 0 ]            log order: 2, 3, then 0 (written again)
//! spare:                                  1         freed by truncate_before, blocks written
//! holes:  (none)                                    freed, space given back
//! top:    4                                         segments 0..4 have been used
//! ```
//!
//! The log leaves a segment when a frame would come within `room` of its end. It goes
//! on in a spare segment first (its blocks are written: a commit there has no extent to
//! convert in `fdatasync`), then a hole, then the segment past the highest used one. A
//! move to the segment right after the current one needs nothing in the file (frames
//! run on); any other is a jump frame (FORMAT.md, "Log file").

use std::collections::{BTreeSet, VecDeque};

/// Whether the space a segment is written in held records of this log before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Space {
    /// Never written, or given back: it reads as zeros past what is written now.
    Fresh,
    /// A spare segment written again: past what is written now lie stale frames.
    Reused,
}

/// Where the log goes on when it leaves the segment it is writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Move {
    /// The next segment in the file: frames run on, no jump.
    Adjacent,
    /// A jump frame to this offset, a segment's start.
    Jump(u64),
}

/// The log's segments (see the module's docs).
pub(crate) struct Segments {
    size: u64,
    /// Where segment 0 starts (past the two header copies).
    first: u64,
    /// In log order: the front holds the first kept record, the back is being written.
    pub(crate) live: VecDeque<u64>,
    spare: VecDeque<u64>,
    holes: BTreeSet<u64>,
    /// One past the highest segment ever used.
    top: u64,
    /// Spare segments kept at most.
    keep: usize,
    current: Space,
}

impl Segments {
    /// A new log's: segment 0 being written.
    pub(crate) fn new(size: u64, unit: u64, keep: usize) -> Segments {
        Segments::recovered(size, unit, keep, &[(2 * unit, 2 * unit)])
    }

    /// A reopened log's: its live stretches in log order (each `(start, end)` of
    /// contiguous frames: from the first record, or a jump's target, to the next jump,
    /// or the log's end). Every segment below the highest live one that no stretch
    /// touches is free; the caller clears those
    /// ([`free_after_recovery`](Self::free_after_recovery)) before anything is written.
    pub(crate) fn recovered(size: u64, unit: u64, keep: usize, stretches: &[(u64, u64)]) -> Self {
        let mut live = VecDeque::new();
        // Membership in a set: a version-1 log is one stretch over as many segments as
        // it is long.
        let mut seen = BTreeSet::new();
        for &(start, end) in stretches {
            let last = end.saturating_sub(1).max(start) / size;
            for index in start / size..=last {
                if seen.insert(index) {
                    live.push_back(index);
                }
            }
        }
        let top = live.iter().max().map_or(1, |&i| i + 1);
        Segments {
            size,
            first: 2 * unit,
            live,
            spare: VecDeque::new(),
            holes: BTreeSet::new(),
            top,
            keep,
            current: Space::Fresh,
        }
    }

    /// Segments below the highest live one that hold no live record (after a crash
    /// they may hold frames of a commit never acknowledged, numbered past the end), as
    /// runs of neighbours `first..end`: the caller clears them, then they are holes.
    pub(crate) fn free_after_recovery(&mut self) -> Vec<std::ops::Range<u64>> {
        let live: BTreeSet<u64> = self.live.iter().copied().collect();
        let mut runs: Vec<std::ops::Range<u64>> = Vec::new();
        let mut from = 0;
        // Between consecutive live segments (and before the first) lie the free runs.
        for &index in &live {
            if from < index {
                runs.push(from..index);
            }
            from = index + 1;
        }
        for run in &runs {
            self.holes.extend(run.clone());
        }
        runs
    }

    /// Bytes of a segment.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Where segment `index` starts in the file.
    pub(crate) fn start(&self, index: u64) -> u64 {
        if index == 0 {
            self.first
        } else {
            index * self.size
        }
    }

    /// One past the highest segment ever used.
    pub(crate) fn top(&self) -> u64 {
        self.top
    }

    /// Where the segment being written ends.
    pub(crate) fn current_end(&self) -> u64 {
        (self.current_index() + 1) * self.size
    }

    fn current_index(&self) -> u64 {
        *self
            .live
            .back()
            .expect("a log always has a segment being written")
    }

    /// Whether the segment being written is the highest ever used: the file past it is
    /// fresh space, which zeroes written ahead may fill.
    pub(crate) fn writing_top(&self) -> bool {
        self.current_index() + 1 == self.top
    }

    /// Whether the space past the records in the segment being written reads as zeros
    /// or holds stale frames.
    pub(crate) fn current_space(&self) -> Space {
        self.current
    }

    /// Leaves the segment being written for the next one (spare, hole or new) and says
    /// how the log gets there.
    pub(crate) fn advance(&mut self) -> Move {
        let current = self.current_index();
        let (next, space) = if let Some(next) = self.spare.pop_front() {
            (next, Space::Reused)
        } else if let Some(next) = self.holes.pop_first() {
            (next, Space::Fresh)
        } else {
            self.top += 1;
            (self.top - 1, Space::Fresh)
        };
        self.live.push_back(next);
        self.current = space;
        if next == current + 1 {
            Move::Adjacent
        } else {
            Move::Jump(self.start(next))
        }
    }

    /// Whether the log can move on from the segment being written without a jump (the
    /// next segment in the file is free): for a tail with no room left for a jump frame.
    pub(crate) fn next_is_free(&self) -> bool {
        let next = self.current_index() + 1;
        next >= self.top || self.spare.contains(&next) || self.holes.contains(&next)
    }

    /// Moves on to the next segment in the file, free by
    /// [`next_is_free`](Self::next_is_free).
    pub(crate) fn advance_adjacent(&mut self) {
        let next = self.current_index() + 1;
        let space = if let Some(at) = self.spare.iter().position(|&i| i == next) {
            self.spare.remove(at);
            Space::Reused
        } else {
            self.holes.remove(&next);
            Space::Fresh
        };
        self.top = self.top.max(next + 1);
        self.live.push_back(next);
        self.current = space;
    }

    /// After the log's first record moved to `offset` (`truncate_before`, header
    /// synced): the live segments before the one holding it are freed. Up to `keep`
    /// become spare; the others are returned, to be given back to the file system and
    /// then handed to [`add_holes`](Self::add_holes) (never reused before).
    pub(crate) fn release_before(&mut self, offset: u64) -> Vec<u64> {
        let index = offset / self.size;
        if !self.live.contains(&index) {
            return Vec::new();
        }
        let mut punch = Vec::new();
        while self.live.front() != Some(&index) {
            let freed = self.live.pop_front().expect("index is live");
            if self.spare.len() < self.keep {
                self.spare.push_back(freed);
            } else {
                punch.push(freed);
            }
        }
        punch
    }

    /// Segments whose space was given back: free again.
    pub(crate) fn add_holes(&mut self, indices: &[u64]) {
        self.holes.extend(indices.iter().copied());
    }

    /// The range of bytes of segment `index`.
    pub(crate) fn bytes_of(&self, index: u64) -> (u64, u64) {
        self.bytes_of_run(&(index..index + 1))
    }

    /// The range of bytes of the segments `run`: `(start, len)`.
    pub(crate) fn bytes_of_run(&self, run: &std::ops::Range<u64>) -> (u64, u64) {
        let start = self.start(run.start);
        (start, run.end * self.size - start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn a_log_grows_adjacent_then_reuses_spares_then_holes() {
        let mut s = Segments::new(MIB, 4096, 1);
        assert_eq!(
            (s.start(0), s.current_end(), s.writing_top()),
            (8192, MIB, true)
        );
        assert_eq!(s.advance(), Move::Adjacent);
        assert_eq!(s.advance(), Move::Adjacent);
        assert_eq!(
            (s.current_end(), s.current_space()),
            (3 * MIB, Space::Fresh)
        );
        // Records before segment 2 dropped: 0 kept spare, 1 given back.
        assert_eq!(s.release_before(2 * MIB + 100), vec![1]);
        s.add_holes(&[1]);
        assert_eq!(s.advance(), Move::Jump(8192));
        assert_eq!((s.current_space(), s.writing_top()), (Space::Reused, false));
        // Segment 1 is the hole right after: frames run on into it.
        assert_eq!(s.advance(), Move::Adjacent);
        assert_eq!(s.current_space(), Space::Fresh);
        // Nothing free: a new segment past the top, reached by a jump.
        assert_eq!(s.advance(), Move::Jump(3 * MIB));
        assert!(s.writing_top());
        assert_eq!(s.live, [2, 0, 1, 3]);
    }

    #[test]
    fn a_reopened_log_frees_what_no_stretch_touches() {
        // Stretches: segment 3 (first record), a jump to 1, frames running into 2.
        let stretches = [(3 * MIB + 4096, 4 * MIB - 100), (MIB, 2 * MIB + 50)];
        let mut s = Segments::recovered(MIB, 4096, 2, &stretches);
        assert_eq!(s.live, [3, 1, 2]);
        assert_eq!(s.free_after_recovery(), vec![0..1]);
        assert!(!s.writing_top() && !s.next_is_free());
        assert_eq!(s.advance(), Move::Jump(8192));
        assert_eq!(s.advance(), Move::Jump(4 * MIB));
        // Free segments come in runs; the holes are taken lowest first.
        let mut s = Segments::recovered(MIB, 4096, 2, &[(5 * MIB, 5 * MIB + 10), (MIB, MIB + 10)]);
        assert_eq!(s.free_after_recovery(), vec![0..1, 2..5]);
        assert_eq!(s.advance(), Move::Jump(8192));
        assert_eq!(s.advance(), Move::Jump(2 * MIB));
        // A stretch ending on a segment boundary does not hold the next segment.
        let s = Segments::recovered(MIB, 4096, 2, &[(8192, 2 * MIB)]);
        assert_eq!(s.live, [0, 1]);
        // A freed segment not live is left alone.
        let mut s = Segments::recovered(MIB, 4096, 2, &[(8192, 100_000)]);
        assert!(s.release_before(5 * MIB).is_empty());
        assert_eq!(s.live, [0]);
    }
}
