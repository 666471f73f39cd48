//! [`DirectReader`]: `io::Read` and `io::BufRead` in whole, aligned blocks, read ahead.

use std::io;
use std::sync::Arc;

use super::options::DirectReaderOptions;
use super::{unshare, DirectFile};
use crate::blocks::{block_plan, BlockSource, ReadMemory};
use crate::buffer::Buffer;
use crate::error::Result;

/// A `std::io::Read` (and `BufRead`) that reads a file sequentially in aligned blocks,
/// `depth` reads ahead on an [`IoRing`](crate::IoRing), without copying inside: each
/// block is read once, into a buffer from the allocator, and handed out by `read` (one
/// copy, into the caller's buffer) or by `fill_buf` (none).
///
/// A block larger than the device's largest request is already read as several requests
/// side by side, so deeper is not always faster: on worker threads one block in flight
/// read fastest on this project's virtio disk, on io_uring the default four did.
/// Measure on the device at hand (BENCHMARKS.md has this machine's figures).
///
/// ```
/// use std::io::Read;
/// use pagebuf::direct::{DirectFile, DirectReader};
///
/// # let path = std::env::temp_dir().join("pagebuf-doc-reader.bin");
/// std::fs::write(&path, vec![5u8; 100_000])?;
/// let mut input = DirectReader::new(DirectFile::open(&path)?)?;
/// let mut all = Vec::new();
/// input.read_to_end(&mut all)?;
/// assert_eq!(all, vec![5u8; 100_000]);
/// # std::fs::remove_file(&path)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct DirectReader {
    blocks: BlockSource,
    current: Option<Buffer>,
    pos: usize,
}

impl DirectReader {
    /// A reader over `file` from offset 0 with the default [`DirectReaderOptions`].
    ///
    /// # Errors
    /// As [`with_options`](Self::with_options).
    pub fn new(file: DirectFile) -> Result<DirectReader> {
        DirectReader::with_options(file, DirectReaderOptions::default())
    }

    /// A reader over `file` from offset 0, built as `options` say.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for a block size that
    /// is not a multiple of the file's alignment, or a depth or block size of 0 or past
    /// its cap ([`caps`](crate::caps)).
    pub fn with_options(file: DirectFile, options: DirectReaderOptions) -> Result<DirectReader> {
        let resolved = options.resolve(&file, "DirectReaderOptions")?;
        let plan = block_plan(resolved.block_size, None);
        let memory = ReadMemory::Wait(resolved.allocator);
        Ok(DirectReader {
            blocks: BlockSource::new(Arc::new(file), resolved.ring, memory, resolved.depth, plan),
            current: None,
            pos: 0,
        })
    }

    /// The file being read.
    pub fn get_ref(&self) -> &DirectFile {
        self.blocks.file()
    }

    /// Stops reading ahead and gives the file back.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`](crate::Error::InvalidRequest) if the file is still
    /// shared (it never is once the reader is gone).
    pub fn into_file(self) -> Result<DirectFile> {
        let file = self.blocks.file().clone();
        drop(self); // the reads ahead, and the reader's handle on the file, are gone
        unshare(file)
    }

    /// The next block in file order, or `None` at end of file.
    fn next_block(&mut self) -> Result<Option<Buffer>> {
        self.blocks
            .next_block()
            .transpose()
            .map(|block| block.map(|b| b.data))
    }
}

impl io::Read for DirectReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let block = io::BufRead::fill_buf(self)?;
        let n = out.len().min(block.len());
        out[..n].copy_from_slice(&block[..n]);
        io::BufRead::consume(self, n);
        Ok(n)
    }
}

/// The blocks themselves, without a copy: `fill_buf` returns the rest of the current
/// block as read from the file.
impl io::BufRead for DirectReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.current.as_ref().is_none_or(|b| self.pos >= b.len()) {
            match self.next_block().map_err(io::Error::from)? {
                Some(block) => {
                    self.current = Some(block);
                    self.pos = 0;
                }
                None => return Ok(&[]),
            }
        }
        let block = self.current.as_ref().expect("filled above");
        Ok(&block[self.pos..])
    }

    fn consume(&mut self, n: usize) {
        let len = self.current.as_ref().map_or(0, |b| b.len());
        self.pos = (self.pos + n).min(len);
    }
}

impl std::fmt::Debug for DirectReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectReader")
            .field("path", &self.blocks.file().path())
            .finish()
    }
}
