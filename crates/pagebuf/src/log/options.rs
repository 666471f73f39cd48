//! [`LogOptions`]: how a [`LogWriter`](super::LogWriter) stages and writes.

use super::format::{MAX_SEGMENT, MIN_SEGMENT};
use crate::caps;
use crate::error::{Error, Result};
use crate::ring::IoRing;

/// Staging block size unless configured: 1 MiB, so that a group commit of up to 1 MiB
/// is one write by the committing thread, and the staging blocks (`DEFAULT_LOG_DEPTH +
/// 2` of them) span whole transparent huge pages, physically contiguous memory that a
/// direct write takes in few segments (BENCHMARKS.md, issue 14, has the figures).
pub const DEFAULT_LOG_BLOCK: usize = 1 << 20;
/// Staging blocks on their way to the disk at once, unless configured.
pub const DEFAULT_LOG_DEPTH: usize = 4;
/// Segment size of a new log unless configured: 64 MiB, room for the largest record
/// ([`MAX_RECORD`](super::MAX_RECORD), 16 MiB) several times over.
pub const DEFAULT_LOG_SEGMENT: u64 = 64 << 20;
/// Segments freed by `truncate_before` kept for reuse, unless configured.
pub const DEFAULT_SPARE_SEGMENTS: usize = 2;

/// How a [`LogWriter`](super::LogWriter) stages records and writes them; methods take
/// and return `Self`.
///
/// ```
/// use pagebuf::log::{LogOptions, LogWriter};
///
/// # let path = std::env::temp_dir().join("pagebuf-doc-log-options.wal");
/// let log = LogWriter::create_with(&path, LogOptions::default().block_size(1 << 20).depth(8))?;
/// log.commit(log.append(&[0u8; 3000])?)?;
/// # std::fs::remove_file(&path)?;
/// # Ok::<(), pagebuf::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct LogOptions {
    block_size: usize,
    depth: usize,
    pub(crate) ring: Option<IoRing>,
    pub(crate) untorn_rewrites: bool,
    segment_size: u64,
    pub(crate) spare_segments: usize,
}

impl Default for LogOptions {
    fn default() -> LogOptions {
        LogOptions {
            block_size: DEFAULT_LOG_BLOCK,
            depth: DEFAULT_LOG_DEPTH,
            ring: None,
            untorn_rewrites: true,
            segment_size: DEFAULT_LOG_SEGMENT,
            spare_segments: DEFAULT_SPARE_SEGMENTS,
        }
    }
}

impl LogOptions {
    /// Bytes per staging block: a multiple of the log's unit (4 KiB on most disks), up
    /// to [`caps::MAX_BLOCK_SIZE`] (default [`DEFAULT_LOG_BLOCK`]). Records longer than
    /// a block span several.
    pub fn block_size(mut self, bytes: usize) -> Self {
        self.block_size = bytes;
        self
    }

    /// Full staging blocks in flight to the disk at once, 1 to [`caps::MAX_DEPTH`]
    /// (default [`DEFAULT_LOG_DEPTH`]); `append` waits when all are out.
    pub fn depth(mut self, depth: usize) -> Self {
        self.depth = depth;
        self
    }

    /// The ring writes and syncs go through (default:
    /// [`IoRing::process_default`](crate::IoRing::process_default)).
    pub fn ring(mut self, ring: IoRing) -> Self {
        self.ring = Some(ring);
        self
    }

    /// Whether a commit may end mid-unit and the next one write that unit again as an
    /// untorn write (`RWF_ATOMIC`) where the file system promises untorn writes of the
    /// unit ([`TailWrite::RewriteUntorn`](super::TailWrite::RewriteUntorn)); default
    /// `true`. `false` pads every commit to the unit wherever the log is
    /// ([`TailWrite::Pad`](super::TailWrite::Pad)).
    pub fn untorn_rewrites(mut self, allowed: bool) -> Self {
        self.untorn_rewrites = allowed;
        self
    }

    /// Bytes of a segment of a new log: a multiple of 1 MiB from 1 MiB to 1 TiB (default
    /// [`DEFAULT_LOG_SEGMENT`]). The log is written a segment at a time; a segment that
    /// [`truncate_before`](super::LogWriter::truncate_before) frees is written again
    /// later (commits into written blocks need no extent conversion in `fdatasync`).
    /// A record must fit in a segment with room to spare (32 bytes). An existing log
    /// keeps the size it was created with.
    pub fn segment_size(mut self, bytes: u64) -> Self {
        self.segment_size = bytes;
        self
    }

    /// How many segments freed by `truncate_before` are kept, written, for the log to
    /// reuse (default [`DEFAULT_SPARE_SEGMENTS`], at most 1,024); holes are punched in
    /// the others, giving their space back to the file system.
    pub fn spare_segments(mut self, segments: usize) -> Self {
        self.spare_segments = segments;
        self
    }

    /// The segment size, checked against its bounds.
    pub(crate) fn resolve_segment(&self) -> Result<u64> {
        let bytes = self.segment_size;
        if bytes % MIN_SEGMENT != 0 || !(MIN_SEGMENT..=MAX_SEGMENT).contains(&bytes) {
            return Err(Error::InvalidArgument(format!(
                "LogOptions::segment_size({bytes}) is not a multiple of 1 MiB from 1 MiB to \
                 1 TiB; use a multiple of {MIN_SEGMENT}"
            )));
        }
        Ok(bytes)
    }

    /// The block size and depth, checked against their caps and `unit`.
    pub(crate) fn resolve(&self, unit: usize) -> Result<(usize, usize)> {
        let depth = caps::check("LogOptions::depth", self.depth, caps::MAX_DEPTH)?;
        caps::check(
            "LogOptions::spare_segments",
            self.spare_segments.max(1),
            1024,
        )?;
        let block_size = caps::check(
            "LogOptions::block_size",
            self.block_size,
            caps::MAX_BLOCK_SIZE,
        )?;
        if block_size % unit != 0 {
            return Err(Error::InvalidArgument(format!(
                "LogOptions::block_size({block_size}) is not a multiple of the log's unit \
                 {unit}; use a multiple of {unit}"
            )));
        }
        Ok((block_size, depth))
    }
}
