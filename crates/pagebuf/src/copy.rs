//! `copy_file`: a direct-I/O copy of a file of any size, reads and writes overlapping,
//! memory bounded by one pool.
//!
//! * Blocks are read `depth` ahead into buffers from a [`BufferPool`] and each block,
//!   as read, is handed to the write queue at the same offset: no byte is copied in
//!   memory. A block goes back to the pool when its write completes, so memory stays
//!   within the pool's budget (`block_size × (3 × depth + 2)`) whatever the file size.
//! * The block size is the largest single request both devices take (at most 1 MiB),
//!   rounded to both alignments, unless given.
//! * A source whose length is not a block multiple: the last block is padded with
//!   zeroes to the destination's alignment, written, and the file cut to size (pad and
//!   truncate, as [`DirectWriter`](crate::sequential::DirectWriter) does).
//! * Verification reads the destination back (direct reads again) and compares its
//!   CRC32C with the source's, computed as the source was read.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::direct::{DirectFile, DirectIo};
use crate::error::{Error, Result};
use crate::io_queue::{block_plan, ReadAhead, Reservation, WriteQueue};
use crate::pool::{BufferPool, BufferPoolStats};
use crate::sequential::DEFAULT_DEPTH;

/// How [`copy_file`] copies; methods take and return `Self`.
#[derive(Debug, Clone)]
pub struct CopyOptions {
    block_size: Option<usize>,
    depth: usize,
    verify: bool,
    direct: DirectIo,
}

impl Default for CopyOptions {
    fn default() -> CopyOptions {
        CopyOptions {
            block_size: None,
            depth: DEFAULT_DEPTH,
            verify: false,
            direct: DirectIo::Prefer,
        }
    }
}

impl CopyOptions {
    /// Bytes per transfer: a multiple of both files' alignment (default: the largest
    /// single request the destination takes, at most 1 MiB).
    pub fn block_size(mut self, bytes: usize) -> Self {
        self.block_size = Some(bytes);
        self
    }

    /// Reads (and writes) in flight (default 4).
    pub fn depth(mut self, depth: usize) -> Self {
        self.depth = depth;
        self
    }

    /// Reads the destination back and compares checksums.
    pub fn verify(mut self, verify: bool) -> Self {
        self.verify = verify;
        self
    }

    /// Whether to use `O_DIRECT` on both files (default: where allowed).
    pub fn direct(mut self, direct: DirectIo) -> Self {
        self.direct = direct;
        self
    }
}

/// What [`copy_file`] did.
#[derive(Debug, Clone)]
pub struct CopyReport {
    /// Bytes copied (the source's length).
    pub bytes: u64,
    /// Bytes per transfer.
    pub block_size: usize,
    /// Transfers in flight each way.
    pub depth: usize,
    /// Wall time of the copy (and of the verification, if asked).
    pub elapsed: Duration,
    /// Whether each side used direct I/O: (source, destination).
    pub direct: (bool, bool),
    /// CRC32C of the bytes copied.
    pub checksum: u32,
    /// Whether the destination was read back and its checksum matched.
    pub verified: bool,
    /// The pool the blocks came from, after the copy: its budget bounds the memory.
    pub pool: BufferPoolStats,
}

/// Copies `src` to `dst` (created or truncated) with direct I/O, reads and writes
/// overlapping; calls `progress(done, total)` after each block.
///
/// ```
/// use pagebuf::copy::{copy_file, CopyOptions};
/// # let dir = std::env::temp_dir();
/// # let (src, dst) = (dir.join("pagebuf-doc-copy-src"), dir.join("pagebuf-doc-copy-dst"));
/// std::fs::write(&src, vec![42u8; 3_000_001])?;
/// let report = copy_file(&src, &dst, &CopyOptions::default().verify(true), &mut |_, _| {})?;
/// assert_eq!(report.bytes, 3_000_001);
/// assert!(report.verified);
/// assert_eq!(std::fs::read(&dst)?, std::fs::read(&src)?);
/// # std::fs::remove_file(&src)?; std::fs::remove_file(&dst)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// [`Error::Io`] naming the file for a source that cannot be read or a destination
/// that cannot be written (a directory, no permission, a full disk);
/// [`Error::InvalidArgument`] for a source that is not a regular file, a destination
/// that is the source, depth 0, or a block size that is not a multiple of both
/// alignments; [`Error::Corrupt`] if verification finds the copy differs.
pub fn copy_file(
    src: impl AsRef<Path>,
    dst: impl AsRef<Path>,
    options: &CopyOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<CopyReport> {
    let (src, dst) = (src.as_ref(), dst.as_ref());
    let started = Instant::now();
    if options.depth == 0 {
        return Err(Error::InvalidArgument(
            "depth 0: at least one transfer must be in flight; use 1 or more".into(),
        ));
    }
    check_source(src, dst)?;
    let source = DirectFile::options()
        .read(true)
        .direct(options.direct)
        .open(src)?;
    let destination = DirectFile::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .direct(options.direct)
        .open(dst)?;
    let total = source.len()?;
    let unit = source
        .limits()
        .alignment()
        .max(destination.limits().alignment())
        .max(1) as usize;
    let block = options.block_size.unwrap_or_else(|| {
        (crate::sequential::default_block_size(&destination) / unit * unit).max(unit)
    });
    if block == 0 || block % unit != 0 {
        return Err(Error::InvalidArgument(format!(
            "block size {block} is not a positive multiple of the files' alignment {unit}; \
             use a multiple of {unit}"
        )));
    }
    let budget = block
        .checked_mul(3 * options.depth + 2)
        .ok_or_else(|| Error::InvalidArgument(format!("block size {block} is too large")))?;
    let pool = BufferPool::new(budget)?;
    let direct = (source.is_direct(), destination.is_direct());
    // The whole destination at once: its writes are then overwrites, run side by side.
    let mut reservation = Reservation::new(&destination);
    reservation.cover(&destination, total.div_ceil(unit as u64) * unit as u64);
    let destination = Arc::new(destination);
    let source = Arc::new(source);

    let plan = block_plan(block, Some(total));
    let mut reads = ReadAhead::new(source, Arc::new(pool.clone()), options.depth, plan);
    let mut writes = WriteQueue::new(destination.clone(), options.depth);
    let pumped = pump(&mut reads, &writes, unit, total, progress);
    if pumped.is_err() {
        // Reads waiting for blocks that will never come back give up.
        pool.close();
    }
    drop(reads);
    let written = writes.shutdown();
    let (done, checksum) = pumped?;
    written?;
    if done != total {
        return Err(Error::io(
            format!("reading {}", src.display()),
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("the file ended at {done} of {total} bytes: it shrank while copied"),
            ),
        ));
    }
    if total % unit as u64 != 0 || reservation.cut_to(total).is_some() {
        destination.set_len(total)?;
    }
    destination.sync_data()?;

    let verified = if options.verify {
        let copied = checksum_of(destination, &pool, block, options.depth, total)?;
        if copied != checksum {
            return Err(Error::Corrupt {
                offset: 0,
                detail: format!(
                    "the copy at {} reads back with CRC32C {copied:08x}, the source had \
                     {checksum:08x}",
                    dst.display()
                ),
            });
        }
        true
    } else {
        false
    };
    Ok(CopyReport {
        bytes: total,
        block_size: block,
        depth: options.depth,
        elapsed: started.elapsed(),
        direct,
        checksum,
        verified,
        pool: pool.stats(),
    })
}

/// The source must be a regular file (or block device) other than the destination.
fn check_source(src: &Path, dst: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta =
        std::fs::metadata(src).map_err(|e| Error::io(format!("opening {}", src.display()), e))?;
    let kind = meta.file_type();
    if !(kind.is_file() || std::os::unix::fs::FileTypeExt::is_block_device(&kind)) {
        return Err(Error::InvalidArgument(format!(
            "{} is not a regular file; copy a file",
            src.display()
        )));
    }
    if let Ok(target) = std::fs::metadata(dst) {
        if (target.dev(), target.ino()) == (meta.dev(), meta.ino()) {
            return Err(Error::InvalidArgument(format!(
                "{} and {} are the same file; copy to another path",
                src.display(),
                dst.display()
            )));
        }
    }
    Ok(())
}

/// Hands each block read to the write queue at its offset (the tail padded to `unit`);
/// returns the bytes read and their CRC32C.
fn pump(
    reads: &mut ReadAhead,
    writes: &WriteQueue,
    unit: usize,
    total: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(u64, u32)> {
    let (mut done, mut crc) = (0u64, 0u32);
    while let Some(read) = reads.next_block() {
        let read = read?;
        crc = crc32c::crc32c_append(crc, &read.data);
        let len = read.data.len();
        let whole = len.div_ceil(unit) * unit;
        let data = if whole == len {
            read.data
        } else {
            // The tail: pad to the alignment now, cut the file to size at the end.
            let mut tail = read
                .data
                .try_into_mut()
                .map_err(|_| Error::InvalidRequest("the last block is shared".into()))?;
            tail.set_len(whole)?;
            tail[len..].fill(0);
            tail.freeze()
        };
        writes.submit(data, read.offset)?;
        writes.check()?;
        done += len as u64;
        progress(done, total);
    }
    Ok((done, crc))
}

/// CRC32C of the first `total` bytes of `file`, read `depth` blocks ahead.
fn checksum_of(
    file: Arc<DirectFile>,
    pool: &BufferPool,
    block: usize,
    depth: usize,
    total: u64,
) -> Result<u32> {
    let plan = block_plan(block, Some(total));
    let mut reads = ReadAhead::new(file, Arc::new(pool.clone()), depth, plan);
    let mut crc = 0;
    while let Some(read) = reads.next_block() {
        crc = crc32c::crc32c_append(crc, &read?.data);
    }
    Ok(crc)
}
