//! [`LogOptions`]: how a [`LogWriter`](super::LogWriter) stages and writes.

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
}

impl Default for LogOptions {
    fn default() -> LogOptions {
        LogOptions {
            block_size: DEFAULT_LOG_BLOCK,
            depth: DEFAULT_LOG_DEPTH,
            ring: None,
            untorn_rewrites: true,
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

    /// The block size and depth, checked against their caps and `unit`.
    pub(crate) fn resolve(&self, unit: usize) -> Result<(usize, usize)> {
        let depth = caps::check("LogOptions::depth", self.depth, caps::MAX_DEPTH)?;
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
