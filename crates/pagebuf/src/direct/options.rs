//! [`SequentialOptions`]: how a [`DirectWriter`](super::DirectWriter) or
//! [`DirectReader`](super::DirectReader) moves its blocks.

use std::sync::Arc;

use crate::alloc::BufferAllocator;
use crate::blocks::{check_blocks, default_block_size, OwnPool};
use crate::direct::DirectFile;
use crate::error::Result;
use crate::memory::page_size;
use crate::ring::IoRing;

/// Blocks in flight unless configured.
pub const DEFAULT_DEPTH: usize = 4;

/// How a sequential writer or reader moves its blocks; methods take and return `Self`.
///
/// ```
/// use pagebuf::direct::{DirectFile, DirectWriter, DirectWriterOptions};
/// use pagebuf::IoRing;
///
/// # let path = std::env::temp_dir().join("pagebuf-doc-writer-options.bin");
/// let options = DirectWriterOptions::default()
///     .block_size(256 * 1024)
///     .depth(8)
///     .ring(IoRing::new()?);
/// let writer = DirectWriter::with_options(DirectFile::create(&path)?, options)?;
/// assert_eq!(writer.finish()?, 0);
/// # std::fs::remove_file(&path)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct SequentialOptions {
    block_size: Option<usize>,
    depth: usize,
    allocator: Option<Arc<dyn BufferAllocator>>,
    ring: Option<IoRing>,
}

/// The options of a [`DirectWriter`](super::DirectWriter).
pub type DirectWriterOptions = SequentialOptions;
/// The options of a [`DirectReader`](super::DirectReader).
pub type DirectReaderOptions = SequentialOptions;

impl Default for SequentialOptions {
    fn default() -> SequentialOptions {
        SequentialOptions {
            block_size: None,
            depth: DEFAULT_DEPTH,
            allocator: None,
            ring: None,
        }
    }
}

impl SequentialOptions {
    /// Bytes per transfer, a multiple of the file's alignment, up to
    /// [`caps::MAX_BLOCK_SIZE`](crate::caps::MAX_BLOCK_SIZE) (default: the device's
    /// largest single request, at most 1 MiB). A block above the device's largest
    /// request reaches it as several requests side by side (one io_uring entry the block
    /// layer splits; on worker threads, pieces of that size).
    pub fn block_size(mut self, bytes: usize) -> Self {
        self.block_size = Some(bytes);
        self
    }

    /// Blocks in flight, 1 to [`caps::MAX_DEPTH`](crate::caps::MAX_DEPTH) (default
    /// [`DEFAULT_DEPTH`]).
    pub fn depth(mut self, depth: usize) -> Self {
        self.depth = depth;
        self
    }

    /// Where blocks come from (page-aligned allocations of `block_size`). It should be
    /// able to supply `depth + 2` at once: one per transfer in flight, the one being
    /// filled or consumed, and the one before it; with fewer, the pipeline waits for
    /// memory as the allocator does. Default: a [`FramePool`](crate::FramePool) of the
    /// pipeline's own, sized so and registered with the ring where the ring can
    /// ([`IoRing::register_pool`](crate::IoRing::register_pool)).
    pub fn allocator(mut self, allocator: Arc<dyn BufferAllocator>) -> Self {
        self.allocator = Some(allocator);
        self
    }

    /// The ring transfers go through (default:
    /// [`IoRing::process_default`](crate::IoRing::process_default)).
    pub fn ring(mut self, ring: IoRing) -> Self {
        self.ring = Some(ring);
        self
    }

    /// The block size, depth, allocator and ring for `file`, checked (`what` names the
    /// options type in errors).
    pub(crate) fn resolve(&self, file: &DirectFile, what: &str) -> Result<Resolved> {
        let block_size = self.block_size.unwrap_or_else(|| default_block_size(file));
        check_blocks(file, block_size, self.depth, what)?;
        let ring = IoRing::given_or_default(self.ring.as_ref())?;
        let allocator: Arc<dyn BufferAllocator> = match &self.allocator {
            Some(allocator) => allocator.clone(),
            None => Arc::new(OwnPool::new(
                &ring,
                block_size,
                self.depth + 2,
                page_size(),
            )?),
        };
        Ok(Resolved {
            block_size,
            depth: self.depth,
            allocator,
            ring,
        })
    }
}

/// Checked options, ready to build with.
pub(crate) struct Resolved {
    pub(crate) block_size: usize,
    pub(crate) depth: usize,
    pub(crate) allocator: Arc<dyn BufferAllocator>,
    pub(crate) ring: IoRing,
}

impl std::fmt::Debug for SequentialOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SequentialOptions")
            .field("block_size", &self.block_size)
            .field("depth", &self.depth)
            .field("allocator", &self.allocator.as_ref().map(|_| "custom"))
            .field("ring", &self.ring)
            .finish()
    }
}
