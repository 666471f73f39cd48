//! [`DirectWriter`]: `io::Write` in whole, aligned blocks, several in flight.

use std::io;
use std::sync::Arc;

use super::options::DirectWriterOptions;
use super::{unshare, DirectFile};
use crate::alloc::BufferAllocator;
use crate::blocks::BlockSink;
use crate::buffer::{Buffer, BufferMut};
use crate::error::{Error, Result};

/// A `std::io::Write` that writes a file sequentially in aligned blocks with `depth`
/// writes in flight on an [`IoRing`](crate::IoRing). Call [`finish`](Self::finish) to
/// write the tail, set the length and sync; dropping it unfinished does the same,
/// ignoring errors.
///
/// The writer reserves space ahead of itself (64 MiB at a time), so its writes are
/// overwrites the file system runs side by side (ext4 serializes direct writes that
/// allocate or extend); `finish` cuts the file to what was written, padding an odd
/// length to the alignment and truncating. A writer that dies leaves zeroes after its
/// data. A failed write is reported by the next call and by `finish`, never swallowed.
///
/// ```
/// use std::io::Write;
/// use pagebuf::direct::{DirectFile, DirectWriter};
///
/// # let path = std::env::temp_dir().join("pagebuf-doc-writer.bin");
/// let mut out = DirectWriter::new(DirectFile::create(&path)?)?;
/// for i in 0..1000u32 {
///     out.write_all(&i.to_le_bytes())?;
/// }
/// assert_eq!(out.finish()?, 4000);
/// assert_eq!(std::fs::metadata(&path)?.len(), 4000);
/// # std::fs::remove_file(&path)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct DirectWriter {
    alloc: Arc<dyn BufferAllocator>,
    block_size: usize,
    current: Option<BufferMut>,
    /// File offset of the next block to submit.
    offset: u64,
    /// Bytes accepted so far.
    accepted: u64,
    sink: BlockSink,
    finished: bool,
}

impl DirectWriter {
    /// A writer over `file` from offset 0, with the default [`DirectWriterOptions`].
    ///
    /// # Errors
    /// As [`with_options`](Self::with_options).
    pub fn new(file: DirectFile) -> Result<DirectWriter> {
        DirectWriter::with_options(file, DirectWriterOptions::default())
    }

    /// A writer over `file` from offset 0, built as `options` say.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a block size that is not a multiple of the file's
    /// alignment, or a depth or block size of 0 or past its cap ([`caps`](crate::caps)).
    pub fn with_options(file: DirectFile, options: DirectWriterOptions) -> Result<DirectWriter> {
        let resolved = options.resolve(&file, "DirectWriterOptions")?;
        Ok(DirectWriter {
            alloc: resolved.allocator,
            block_size: resolved.block_size,
            current: None,
            offset: 0,
            accepted: 0,
            sink: BlockSink::new(Arc::new(file), resolved.ring, resolved.depth),
            finished: false,
        })
    }

    fn submit(&mut self, block: BufferMut) -> Result<()> {
        let len = block.len() as u64;
        self.sink.submit(block.freeze(), self.offset)?;
        self.offset += len;
        Ok(())
    }

    /// An empty block of the writer's block size from its allocator, to fill and hand
    /// to [`write_buffer`](Self::write_buffer): the way to write without the copy
    /// `io::Write` makes. With no allocator in the options the block comes from the
    /// writer's own pool, registered with its ring where the ring can, so it goes to
    /// the disk as a fixed-buffer write; that pool holds `depth + 2` blocks, so a
    /// caller keeping more than two waits here for the disk.
    ///
    /// # Errors
    /// The allocator's ([`Error::OutOfMemory`] for an exhausted budget).
    pub fn allocate_block(&self) -> Result<BufferMut> {
        self.alloc.allocate_page_aligned(self.block_size)
    }

    /// Appends `data`'s bytes without copying them where direct I/O allows: if
    /// everything accepted so far fills whole blocks and `data`'s address and length
    /// meet the file's alignment, `data` itself goes to the disk (the writer keeps a
    /// clone until the kernel is done, so one `Buffer` may be written again and again).
    /// Otherwise its bytes are copied as [`write`](io::Write::write) copies them, and a
    /// later aligned buffer after a short one is copied too until a block boundary is
    /// reached again. Either way the bytes land in order after what came before.
    ///
    /// A buffer larger than the device's largest request is one transfer on io_uring
    /// (the block layer splits it) and pieces side by side on worker threads; it counts
    /// as one of the `depth` writes in flight.
    ///
    /// ```
    /// use pagebuf::direct::{DirectFile, DirectWriter, DirectWriterOptions};
    ///
    /// # let path = std::env::temp_dir().join("pagebuf-doc-write-buffer.bin");
    /// let options = DirectWriterOptions::default().block_size(64 << 10);
    /// let mut out = DirectWriter::with_options(DirectFile::create(&path)?, options)?;
    /// let mut block = out.allocate_block()?;
    /// block.whole_mut().fill(0xAB); // produced in place: an encoder's output, say
    /// block.set_len(64 << 10)?;
    /// let block = block.freeze();
    /// for _ in 0..16 {
    ///     out.write_buffer(block.clone())?; // 1 MiB, no byte copied
    /// }
    /// out.write_buffer(block.slice(..100)?)?; // a short tail is copied, then padded
    /// assert_eq!(out.finish()?, (1 << 20) + 100);
    /// # std::fs::remove_file(&path)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// The first failure of an earlier write (sticky, as for `io::Write`), or
    /// [`Error::InvalidRequest`] after `finish`.
    pub fn write_buffer(&mut self, data: Buffer) -> Result<()> {
        self.sink.check()?;
        self.check_open()?;
        let at_boundary = self.current.as_ref().is_none_or(|block| block.is_empty());
        let aligned = !data.is_empty()
            && self
                .sink
                .file()
                .check(data.as_ptr(), self.offset, data.len())
                .is_ok();
        if !(at_boundary && aligned) {
            return self.copy_in(&data);
        }
        let len = data.len() as u64;
        self.sink.submit(data, self.offset)?;
        self.offset += len;
        self.accepted += len;
        Ok(())
    }

    fn check_open(&self) -> Result<()> {
        if self.finished {
            return Err(Error::InvalidRequest(
                "write after finish; make a new writer".into(),
            ));
        }
        Ok(())
    }

    /// Copies `data` into the writer's blocks, submitting each as it fills.
    fn copy_in(&mut self, data: &[u8]) -> Result<()> {
        let mut rest = data;
        while !rest.is_empty() {
            let block = match &mut self.current {
                Some(block) => block,
                None => self
                    .current
                    .insert(self.alloc.allocate_page_aligned(self.block_size)?),
            };
            let take = (block.max_len() - block.len()).min(rest.len());
            block.extend_from_slice(&rest[..take])?;
            rest = &rest[take..];
            if block.len() == block.max_len() {
                let full = self.current.take().expect("present");
                self.submit(full)?;
            }
        }
        self.accepted += data.len() as u64;
        Ok(())
    }

    /// Bytes accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted
    }

    /// The file being written (for its path, limits or fd; writing to it directly
    /// while the writer has blocks in flight races with them).
    pub fn get_ref(&self) -> &DirectFile {
        self.sink.file()
    }

    /// Finishes (as [`finish`](Self::finish)) and gives the file back, positioned
    /// nowhere in particular (all I/O on it is positioned), at its finished length.
    ///
    /// # Errors
    /// As `finish`.
    pub fn into_file(mut self) -> Result<DirectFile> {
        self.finish_inner()?;
        let file = self.sink.file().clone();
        drop(self); // the sink, and its handle on the file, are gone
        unshare(file)
    }

    /// Writes the tail (padded to the alignment, then the file cut to size), waits for
    /// every write, syncs, and returns the file's length.
    ///
    /// # Errors
    /// The first error any write met, or the sync's.
    pub fn finish(mut self) -> Result<u64> {
        self.finish_inner()
    }

    fn finish_inner(&mut self) -> Result<u64> {
        if self.finished {
            return Ok(self.accepted);
        }
        self.finished = true;
        if let Some(mut tail) = self.current.take() {
            if !tail.is_empty() {
                let unit = self.sink.file().limits().alignment().max(1) as usize;
                let len = tail.len();
                let whole = len.div_ceil(unit) * unit;
                tail.set_len(whole)?;
                tail[len..].fill(0);
                self.submit(tail)?;
            }
        }
        self.sink.finish(self.accepted)?;
        Ok(self.accepted)
    }
}

impl io::Write for DirectWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.sink.check()?;
        self.check_open()?;
        self.copy_in(data)?;
        Ok(data.len())
    }

    /// Waits for every submitted block to be written. The unfinished last block stays
    /// buffered: direct I/O writes whole blocks, so only `finish` writes the tail.
    fn flush(&mut self) -> io::Result<()> {
        self.sink.wait_idle().map_err(io::Error::from)
    }
}

impl Drop for DirectWriter {
    fn drop(&mut self) {
        let _ = self.finish_inner();
    }
}

impl std::fmt::Debug for DirectWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectWriter")
            .field("path", &self.sink.file().path())
            .field("block_size", &self.block_size)
            .field("accepted", &self.accepted)
            .finish()
    }
}
