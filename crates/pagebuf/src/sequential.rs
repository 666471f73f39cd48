//! Sequential direct I/O with several transfers in flight: [`DirectWriter`] implements
//! `std::io::Write`, [`DirectReader`] implements `std::io::Read`, so callers can pipe
//! through them while every transfer to the file is whole, aligned blocks.
//!
//! * Buffers come from any [`BufferAllocator`] (page-aligned allocations); by default a
//!   [`BufferPool`] sized to the pipeline, so memory stays bounded whatever the file size.
//! * `depth` blocks are in flight. A block larger than the device's largest request
//!   goes to it as pieces of that size, all at once, the way the kernel issues one
//!   large `O_DIRECT` transfer, so there is one thread per piece in flight: the
//!   writer's threads take pieces of filled blocks and write them at their offsets; the
//!   reader's thread `i` reads pieces `i`, `i + n`, ... into its own channel, which the
//!   reader drains in turn, so bytes come out in file order. (The threads live in the
//!   crate's I/O queue, the seam where io_uring will go.)
//! * The writer reserves space ahead of itself ([`DirectFile::allocate`], 64 MiB at a
//!   time), so its writes are overwrites the file system runs side by side (ext4
//!   serializes direct writes that allocate or extend); `finish` cuts the file to what
//!   was written. A writer that dies leaves zeroes after its data.
//! * The writer finishes an odd-length file by pad and truncate (see [`DirectFile`]).
//!   A failed write is reported by the next call and by `finish`, never swallowed.

use std::io;
use std::sync::Arc;

use crate::alloc::BufferAllocator;
use crate::buffer::{Buffer, BufferMut};
use crate::caps;
use crate::direct::DirectFile;
use crate::error::{Error, Result};
use crate::io_queue::{block_plan, ReadAhead, ReadMemory, Reservation, WriteQueue};
use crate::pool::BufferPool;

/// Transfers in flight unless configured.
pub const DEFAULT_DEPTH: usize = 4;

/// Block size unless configured: the device's largest single request, capped at 1 MiB
/// and rounded to its alignment.
pub(crate) fn default_block_size(file: &DirectFile) -> usize {
    let unit = file.limits().alignment().max(1) as u64;
    let max = file.limits().max_page_aligned_transfer.min(1 << 20);
    usize::try_from((max / unit * unit).max(unit)).unwrap_or(1 << 20)
}

/// Checks a block size and depth against their caps and the file's alignment; `what`
/// names the call (`DirectWriter::with_blocks`).
pub(crate) fn check_blocks(
    file: &DirectFile,
    block_size: usize,
    depth: usize,
    what: &str,
) -> Result<()> {
    caps::check(&format!("{what} depth"), depth, caps::MAX_DEPTH)?;
    caps::check(
        &format!("{what} block_size"),
        block_size,
        caps::MAX_BLOCK_SIZE,
    )?;
    let unit = file.limits().alignment().max(1) as usize;
    if block_size % unit != 0 {
        return Err(Error::InvalidArgument(format!(
            "{what} block_size({block_size}) is not a multiple of the alignment {unit} of \
             {}; use a multiple of {unit}",
            file.path().display()
        )));
    }
    Ok(())
}

/// How `depth` blocks of `block_size` go to the device: as pieces of at most its largest
/// request, all of a block's pieces at once (as the kernel issues one large `O_DIRECT`
/// transfer). Returns (piece size, requests in flight).
fn requests_for(file: &DirectFile, block_size: usize, depth: usize) -> (usize, usize) {
    let piece = file.max_request(true).min(block_size).max(1);
    let per_block = block_size.div_ceil(piece);
    (
        piece,
        depth.saturating_mul(per_block).clamp(1, caps::MAX_DEPTH),
    )
}

/// The file alone, once every thread that shared it is gone.
fn unshare(file: Arc<DirectFile>) -> Result<DirectFile> {
    Arc::try_unwrap(file).map_err(|file| {
        Error::InvalidRequest(format!(
            "{} is still in use by transfers in flight; finish them first",
            file.path().display()
        ))
    })
}

/// A `std::io::Write` that writes a file sequentially in aligned blocks with `depth`
/// writes in flight. Call [`finish`](Self::finish) to write the tail, set the length and
/// sync; dropping it unfinished does the same, ignoring errors.
///
/// ```
/// use std::io::Write;
/// use pagebuf::direct::DirectFile;
/// use pagebuf::sequential::DirectWriter;
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
    file: Arc<DirectFile>,
    alloc: Arc<dyn BufferAllocator>,
    block_size: usize,
    current: Option<BufferMut>,
    /// File offset of the next block to submit.
    offset: u64,
    /// Bytes accepted so far.
    accepted: u64,
    queue: WriteQueue,
    reservation: Reservation,
    finished: bool,
}

impl DirectWriter {
    /// A writer over `file` from offset 0, with the default block size, depth and pool.
    ///
    /// # Errors
    /// As [`with_options`](Self::with_options).
    pub fn new(file: DirectFile) -> Result<DirectWriter> {
        let block_size = default_block_size(&file);
        DirectWriter::with_blocks(file, block_size, DEFAULT_DEPTH)
    }

    /// A writer with `block_size`-byte transfers, `depth` in flight, and a pool of its
    /// own sized to them.
    ///
    /// # Errors
    /// As [`with_options`](Self::with_options).
    pub fn with_blocks(file: DirectFile, block_size: usize, depth: usize) -> Result<DirectWriter> {
        check_blocks(&file, block_size, depth, "DirectWriter::with_blocks")?;
        // The block being filled, and two per write in flight (queued and written).
        let pool = BufferPool::with_room_for(2 * depth + 2, block_size, "DirectWriter")?;
        DirectWriter::with_options(file, block_size, depth, Arc::new(pool))
    }

    /// A writer with `block_size`-byte transfers (a multiple of the device alignment),
    /// `depth` of them in flight, buffers from `alloc`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a block size that is not a multiple of the
    /// alignment, or a depth or block size of 0 or past its cap ([`caps`]).
    pub fn with_options(
        file: DirectFile,
        block_size: usize,
        depth: usize,
        alloc: Arc<dyn BufferAllocator>,
    ) -> Result<DirectWriter> {
        check_blocks(&file, block_size, depth, "DirectWriter::with_options")?;
        let (_, requests) = requests_for(&file, block_size, depth);
        let reservation = Reservation::new(&file);
        let file = Arc::new(file);
        let queue = WriteQueue::new(file.clone(), requests);
        Ok(DirectWriter {
            reservation,
            file,
            alloc,
            block_size,
            current: None,
            offset: 0,
            accepted: 0,
            queue,
            finished: false,
        })
    }

    fn submit(&mut self, block: BufferMut) -> Result<()> {
        let len = block.len() as u64;
        self.reservation.cover(&self.file, self.offset + len);
        self.queue.submit(block.freeze(), self.offset)?;
        self.offset += len;
        Ok(())
    }

    /// Bytes accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted
    }

    /// The file being written (for its path, limits or fd; writing to it directly
    /// while the writer has blocks in flight races with them).
    pub fn get_ref(&self) -> &DirectFile {
        &self.file
    }

    /// Finishes (as [`finish`](Self::finish)) and gives the file back, positioned
    /// nowhere in particular (all I/O on it is positioned), at its finished length.
    ///
    /// # Errors
    /// As `finish`.
    pub fn into_file(mut self) -> Result<DirectFile> {
        self.finish_inner()?;
        let file = self.file.clone();
        drop(self); // the queue's threads, and their handles on the file, are gone
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
        let mut padded = false;
        if let Some(mut tail) = self.current.take() {
            if !tail.is_empty() {
                let unit = self.file.limits().alignment().max(1) as usize;
                let len = tail.len();
                let whole = len.div_ceil(unit) * unit;
                if whole != len {
                    tail.set_len(whole)?;
                    tail[len..].fill(0);
                    padded = true;
                }
                self.submit(tail)?;
            }
        }
        self.queue.shutdown()?;
        if padded {
            self.file.set_len(self.accepted)?;
        } else if let Some(len) = self.reservation.cut_to(self.accepted) {
            self.file.set_len(len)?;
        }
        self.file.sync_data()?;
        if self.file.created() {
            self.file.sync_directory()?;
        }
        Ok(self.accepted)
    }
}

impl io::Write for DirectWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.queue.check().map_err(io::Error::from)?;
        if self.finished {
            return Err(io::Error::from(Error::InvalidRequest(
                "write after finish; make a new writer".into(),
            )));
        }
        let mut rest = data;
        while !rest.is_empty() {
            if self.current.is_none() {
                let block = self
                    .alloc
                    .allocate_page_aligned(self.block_size)
                    .map_err(io::Error::from)?;
                self.current = Some(block);
            }
            let block = self.current.as_mut().expect("just filled");
            let room = block.max_len() - block.len();
            let take = room.min(rest.len());
            block
                .extend_from_slice(&rest[..take])
                .map_err(io::Error::from)?;
            rest = &rest[take..];
            if block.len() == block.max_len() {
                let full = self.current.take().expect("present");
                self.submit(full).map_err(io::Error::from)?;
            }
        }
        self.accepted += data.len() as u64;
        Ok(data.len())
    }

    /// Waits for every submitted block to be written. The unfinished last block stays
    /// buffered: direct I/O writes whole blocks, so only `finish` writes the tail.
    fn flush(&mut self) -> io::Result<()> {
        self.queue.wait_idle().map_err(io::Error::from)
    }
}

impl Drop for DirectWriter {
    fn drop(&mut self) {
        let _ = self.finish_inner();
    }
}

/// A `std::io::Read` (and `BufRead`) that reads a file sequentially in aligned blocks,
/// `depth` reads ahead, without copying inside: each block is read once, into a buffer
/// from the allocator, and handed out by `read` (one copy, into the caller's buffer)
/// or by `fill_buf` (none).
///
/// Deeper is not always faster: a block larger than the device's largest request is
/// already read as several requests side by side. On a virtio disk, one 1–4 MiB block
/// in flight (2 to 5 requests) read about 15 % faster than eight (16 to 40 requests);
/// see BENCHMARKS.md. Measure on the device at hand before going deep.
///
/// ```
/// use std::io::Read;
/// use pagebuf::direct::DirectFile;
/// use pagebuf::sequential::DirectReader;
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
    blocks: ReadAhead,
    current: Option<Buffer>,
    pos: usize,
}

impl DirectReader {
    /// A reader over `file` from offset 0 with the default block size, depth and pool.
    ///
    /// # Errors
    /// As [`with_options`](Self::with_options).
    pub fn new(file: DirectFile) -> Result<DirectReader> {
        let block_size = default_block_size(&file);
        DirectReader::with_blocks(file, block_size, DEFAULT_DEPTH)
    }

    /// A reader with `block_size`-byte transfers, `depth` in flight, and a pool of its
    /// own sized to them (the caller never holds its blocks, so reads never wait long).
    ///
    /// # Errors
    /// As [`with_options`](Self::with_options).
    pub fn with_blocks(file: DirectFile, block_size: usize, depth: usize) -> Result<DirectReader> {
        check_blocks(&file, block_size, depth, "DirectReader::with_blocks")?;
        let (piece, requests) = requests_for(&file, block_size, depth);
        // One per request in flight, the one being consumed and the one before it.
        let pool = BufferPool::with_room_for(requests + 2, piece, "DirectReader")?;
        DirectReader::with_options(file, block_size, depth, Arc::new(pool))
    }

    /// A reader with `block_size`-byte transfers (a multiple of the device alignment),
    /// `depth` of them in flight, buffers from `alloc`. A block larger than the device's
    /// largest request is read as pieces of that size, all at once, each into its own
    /// buffer. `alloc` should be able to supply `requests + 2` of them at once, where
    /// `requests = depth * pieces` (at most [`caps::MAX_DEPTH`]): one per read in
    /// flight, the one being consumed and the one before it (held until the next is in
    /// hand); with fewer, the reader waits for memory as `alloc` does.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a block size that is not a multiple of the
    /// alignment, or a depth or block size of 0 or past its cap ([`caps`]).
    pub fn with_options(
        file: DirectFile,
        block_size: usize,
        depth: usize,
        alloc: Arc<dyn BufferAllocator>,
    ) -> Result<DirectReader> {
        check_blocks(&file, block_size, depth, "DirectReader::with_options")?;
        let (piece, requests) = requests_for(&file, block_size, depth);
        let plan = block_plan(piece, None);
        Ok(DirectReader {
            blocks: ReadAhead::new(Arc::new(file), ReadMemory::Wait(alloc), requests, plan),
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
    /// [`Error::InvalidRequest`] if the file is still shared (it never is once the
    /// reader's threads are gone).
    pub fn into_file(self) -> Result<DirectFile> {
        let file = self.blocks.file().clone();
        drop(self); // the reader's threads, and their handles on the file, are gone
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
