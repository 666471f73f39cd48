//! [`Reservation`]: disk space reserved ahead of a sequential writer.

use crate::direct::DirectFile;

/// Disk space reserved ahead of a sequential writer (see [`DirectFile::allocate`]), so
/// that its writes are overwrites the file system runs side by side instead of
/// allocating writes it serializes. A refusal (no `fallocate`, or not room for a whole
/// step) turns reserving off: the writes then allocate as they go, and a full disk
/// shows on the write that meets it. A block device has its space already: nothing is
/// reserved on one.
pub(crate) struct Reservation {
    /// The file's length before the writer began.
    initial_len: u64,
    /// Everything below this is reserved.
    end: u64,
    /// Space is reserved this much at a time.
    step: u64,
    enabled: bool,
}

impl Reservation {
    /// Space is reserved this much at a time unless set.
    const STEP: u64 = 64 << 20;

    pub(crate) fn new(file: &DirectFile) -> Reservation {
        Reservation {
            initial_len: file.len().unwrap_or(0),
            end: 0,
            step: Reservation::STEP,
            enabled: !file.is_block_device(),
        }
    }

    /// Reserves `step` bytes at a time from now on.
    pub(crate) fn set_step(&mut self, step: u64) {
        self.step = step;
    }

    /// Makes sure the bytes below `upto` are reserved.
    pub(crate) fn cover(&mut self, file: &DirectFile, upto: u64) {
        if !self.enabled || upto <= self.end {
            return;
        }
        let target = upto.max(self.end.saturating_add(self.step));
        match file.allocate(self.end, target - self.end) {
            Ok(()) => self.end = target,
            Err(_) => self.enabled = false,
        }
    }

    /// The length to cut the file to once `written` bytes are its content, if the
    /// reservation left it longer.
    pub(crate) fn cut_to(&self, written: u64) -> Option<u64> {
        let keep = written.max(self.initial_len);
        (self.end > keep).then_some(keep)
    }
}
