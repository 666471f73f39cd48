//! `copy_file`: a direct-I/O copy of a file of any size, reads and writes overlapping,
//! memory bounded by one pool.
//!
//! * **Checked first.** Every option against its cap ([`caps`]), the
//!   source (a regular file or block device, not on a pseudo file system whose files
//!   do not state their size, not the destination) and the block size against both
//!   files' alignment, all before the destination is opened: a refused copy leaves it
//!   untouched. The destination is then opened as its only writer (an exclusive lock,
//!   see [`DirectFileOptions::exclusive`](crate::direct::DirectFileOptions::exclusive))
//!   and truncated only once locked.
//! * Blocks are read `depth` ahead into buffers from a [`BufferPool`] and each block,
//!   as read, is handed to the write queue at the same offset: no byte is copied in
//!   memory. A block goes back to the pool when its write completes, so memory stays
//!   within the pool's budget (`3 × depth + 2` blocks, counted in the page-rounded
//!   size each really takes) whatever the file size.
//! * The block size is the largest single request the destination's device takes (at
//!   most 1 MiB), rounded to both files' alignment, unless given.
//! * The source is read to its end, and its length is checked again after: a source
//!   that grew or shrank while copied is an error that says which, never a copy that
//!   silently misses data. A block device is copied to its size.
//! * A source whose length is not a block multiple: the last block is padded to the
//!   alignment, written, and a file cut to size (pad and truncate, as
//!   [`DirectWriter`](crate::sequential::DirectWriter) does). A block device
//!   destination is never cut: its tail block is padded with the device's own bytes.
//! * **On failure** the destination is cleaned up: a file the copy created is removed,
//!   an existing one is cut back to empty (its reservation with it), a device is left
//!   as written.
//! * Verification reads the destination back (direct reads again) and compares its
//!   CRC32C with the source's, computed as the source was read.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::blocks::{block_plan, BlockSink, BlockSource, ReadMemory};
use crate::buffer::Buffer;
use crate::caps;
use crate::direct::{limits_before_open, DirectFile, DirectIo};
use crate::error::{Error, Result};
use crate::pool::{BufferPool, BufferPoolStats};
use crate::ring::IoRing;

/// Bytes per transfer of a copy unless configured: large, so reads and writes go to the
/// device in long runs of its largest requests instead of alternating one by one (on
/// this project's virtio disk, cold 1 GiB copies ran 0.6–0.7 GB/s in 1 MiB blocks and
/// 0.7–1.1 GB/s in 8 MiB ones; BENCHMARKS.md).
pub const DEFAULT_COPY_BLOCK: usize = 8 << 20;

/// Blocks in flight each way unless configured: with [`DEFAULT_COPY_BLOCK`], 16 MiB
/// read ahead and 16 MiB being written, in a pool of `3 × 2 + 2` blocks (64 MiB).
pub const DEFAULT_COPY_DEPTH: usize = 2;

/// How [`copy_file`] copies; methods take and return `Self`.
#[derive(Debug, Clone)]
pub struct CopyOptions {
    block_size: Option<usize>,
    depth: usize,
    verify: bool,
    direct: DirectIo,
    ring: Option<IoRing>,
    reflink: Reflink,
}

/// Whether [`copy_file`] may share the source's blocks with the copy (a reflink, the
/// `FICLONE` ioctl) instead of moving bytes: on file systems that clone (XFS, btrfs,
/// bcachefs, OCFS2) and with both files on one of them, the fastest correct copy (no
/// data moves; blocks are copied only when either file is later written).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Reflink {
    /// Clone where the file system can; copy blocks where it cannot, saying why in
    /// [`CopyReport::note`].
    #[default]
    Auto,
    /// Always copy the bytes (new blocks for the copy).
    Never,
    /// Clone, or fail with [`Error::Unsupported`] saying why not.
    Require,
}

/// How [`copy_file`] moved the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CopyRoad {
    /// The copy shares the source's blocks (`FICLONE`): nothing was read or written.
    Reflink,
    /// Blocks read and written through the ring (direct I/O where the files allow it:
    /// see [`CopyReport::direct`]).
    Blocks,
}

impl Default for CopyOptions {
    fn default() -> CopyOptions {
        CopyOptions {
            block_size: None,
            depth: DEFAULT_COPY_DEPTH,
            verify: false,
            direct: DirectIo::Prefer,
            ring: None,
            reflink: Reflink::Auto,
        }
    }
}

impl CopyOptions {
    /// Bytes per transfer: a multiple of both files' alignment, at most
    /// [`caps::MAX_BLOCK_SIZE`] (default [`DEFAULT_COPY_BLOCK`]). A block above the
    /// device's largest request reaches it as several requests side by side (one
    /// io_uring entry the block layer splits; on worker threads, pieces of that size).
    pub fn block_size(mut self, bytes: usize) -> Self {
        self.block_size = Some(bytes);
        self
    }

    /// Reads (and writes) in flight, 1 to [`caps::MAX_DEPTH`] (default
    /// [`DEFAULT_COPY_DEPTH`]).
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

    /// The ring the copy's transfers go through (default:
    /// [`IoRing::process_default`]).
    pub fn ring(mut self, ring: IoRing) -> Self {
        self.ring = Some(ring);
        self
    }

    /// Whether the copy may share the source's blocks (default [`Reflink::Auto`]).
    pub fn reflink(mut self, reflink: Reflink) -> Self {
        self.reflink = reflink;
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
    /// How the bytes were moved.
    pub road: CopyRoad,
    /// Why the copy took a slower road than it could have (blocks instead of a
    /// reflink), naming the cause; `None` when it did not.
    pub note: Option<String>,
    /// CRC32C of the bytes copied: computed as they were read, or, for a reflink (no
    /// bytes read), only when verifying (`None` otherwise).
    pub checksum: Option<u32>,
    /// Whether the destination was read back and its checksum matched.
    pub verified: bool,
    /// The pool the blocks came from, after the copy: its budget bounds the memory.
    pub pool: BufferPoolStats,
}

/// Copies `src` to `dst` (created, or truncated once locked) with direct I/O, reads and
/// writes overlapping; calls `progress(done, total)` after each block.
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
/// Before the destination is touched: [`Error::InvalidArgument`] for a depth or block
/// size of 0 or past its cap, a block size that is not a multiple of both files'
/// alignment, a source that is not a regular file or block device (or lives on a pseudo
/// file system such as procfs or sysfs), a destination that is the source, or a device
/// destination smaller than the source; [`Error::Io`] naming the file for a source that
/// cannot be read. After: [`Error::InvalidRequest`] if another writer holds the
/// destination; [`Error::Io`] for a destination that cannot be written (a directory,
/// no permission, a full disk) or a source that changed size while copied;
/// [`Error::Corrupt`] if verification finds the copy differs.
pub fn copy_file(
    src: impl AsRef<Path>,
    dst: impl AsRef<Path>,
    options: &CopyOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<CopyReport> {
    let (src, dst) = (src.as_ref(), dst.as_ref());
    let started = Instant::now();
    // Everything that can be refused is refused before the destination is opened.
    let depth = caps::check("CopyOptions::depth", options.depth, caps::MAX_DEPTH)?;
    if let Some(block) = options.block_size {
        caps::check("CopyOptions::block_size", block, caps::MAX_BLOCK_SIZE)?;
    }
    check_source(src, dst)?;
    let source = DirectFile::options()
        .read(true)
        .direct(options.direct)
        .open(src)?;
    let (block, unit) = block_and_unit(&source, dst, options)?;
    let buffers = 3 * depth + 2;
    let pool = BufferPool::with_room_for(buffers, block, "copy")?;
    if pool.budget() > caps::MAX_COPY_MEMORY {
        return Err(Error::InvalidArgument(format!(
            "CopyOptions::block_size({block}) with depth({depth}) needs {} bytes of buffers \
             ({buffers} blocks), past the cap of {}; use a smaller block or depth",
            pool.budget(),
            caps::MAX_COPY_MEMORY
        )));
    }
    let total = source.len()?;
    let ring = IoRing::given_or_default(options.ring.as_ref())?;

    let destination = DirectFile::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .exclusive(true)
        .direct(options.direct)
        .open(dst)?;
    let destination = Arc::new(destination);
    let mut cleanup = Cleanup::new(destination.clone());
    if destination.is_block_device() && destination.len()? < total {
        return Err(Error::InvalidArgument(format!(
            "{} holds {} bytes, less than the {total} bytes of {}; copy to a larger device",
            dst.display(),
            destination.len()?,
            src.display()
        )));
    }
    let direct = (source.is_direct(), destination.is_direct());
    let source = Arc::new(source);
    let read_back = ReadBack {
        ring: &ring,
        pool: &pool,
        block,
        depth,
    };
    let note = match try_reflink(&source, &destination, options.reflink)? {
        ReflinkOutcome::Cloned => {
            let checksum =
                settle_reflink(&source, &destination, total, &read_back, options.verify)?;
            cleanup.disarm();
            return Ok(CopyReport {
                bytes: total,
                block_size: block,
                depth,
                elapsed: started.elapsed(),
                direct,
                road: CopyRoad::Reflink,
                note: None,
                checksum,
                verified: checksum.is_some(),
                pool: pool.stats(),
            });
        }
        ReflinkOutcome::NotCloned { why } => why,
    };
    let memory = ReadMemory::Wait(Arc::new(pool.clone()));
    let mut reads = BlockSource::new(
        source.clone(),
        ring.clone(),
        memory,
        depth,
        block_plan(block, None),
    );
    let writes = BlockSink::new(destination.clone(), ring.clone(), depth);
    // The whole destination at once: its writes are then overwrites, run side by side.
    writes.reserve(total.div_ceil(unit as u64) * unit as u64);
    let tail = Tail {
        unit,
        device: destination.is_block_device().then(|| destination.clone()),
        pool: &pool,
        ring: &ring,
    };
    let pumped = pump(&mut reads, &writes, &tail, total, progress);
    drop(reads);
    let written = writes.wait_idle();
    let (done, checksum) = pumped?;
    written?;
    check_length(&source, total, done)?;
    writes.finish(done)?;
    drop(writes);

    let verified = if options.verify {
        let copied = read_back.crc(destination.clone(), done)?;
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
    cleanup.disarm();
    Ok(CopyReport {
        bytes: done,
        block_size: block,
        depth,
        elapsed: started.elapsed(),
        direct,
        road: CopyRoad::Blocks,
        note,
        checksum: Some(checksum),
        verified,
        pool: pool.stats(),
    })
}

/// Whether [`try_reflink`] shared the source's blocks.
enum ReflinkOutcome {
    Cloned,
    /// Not cloned: `why` says what refused it (`None`: not asked to).
    NotCloned {
        why: Option<String>,
    },
}

/// Clones `source` into `destination` (`FICLONE`) as `mode` allows; a refusal under
/// [`Reflink::Require`] is [`Error::Unsupported`] naming the cause.
fn try_reflink(
    source: &DirectFile,
    destination: &DirectFile,
    mode: Reflink,
) -> Result<ReflinkOutcome> {
    if mode == Reflink::Never {
        return Ok(ReflinkOutcome::NotCloned { why: None });
    }
    let refused = |why: String| match mode {
        Reflink::Require => Err(Error::Unsupported(format!(
            "{why}; use Reflink::Auto to copy the blocks instead"
        ))),
        _ => Ok(ReflinkOutcome::NotCloned { why: Some(why) }),
    };
    if source.is_block_device() || destination.is_block_device() {
        return refused("a block device cannot share blocks with a file (no reflink)".into());
    }
    match rustix::fs::ioctl_ficlone(destination, source) {
        Ok(()) => Ok(ReflinkOutcome::Cloned),
        Err(errno) => {
            let cause = match errno {
                rustix::io::Errno::XDEV => "the files are on different file systems".to_string(),
                rustix::io::Errno::OPNOTSUPP
                | rustix::io::Errno::NOTTY
                | rustix::io::Errno::INVAL => {
                    "this file system does not share blocks between files (XFS with \
                     reflink=1, btrfs and bcachefs do)"
                        .to_string()
                }
                other => format!("the kernel refused ({})", std::io::Error::from(other)),
            };
            refused(format!(
                "no reflink from {} to {}: {cause}; the blocks were copied",
                source.path().display(),
                destination.path().display()
            ))
        }
    }
}

/// After a reflink: the clone made durable (and its directory), the source's length
/// checked again, and, when `verify` is asked, both files read back and their CRC32C
/// compared (the checksum, or `None` without verification: nothing was read).
fn settle_reflink(
    source: &Arc<DirectFile>,
    destination: &Arc<DirectFile>,
    total: u64,
    read_back: &ReadBack<'_>,
    verify: bool,
) -> Result<Option<u32>> {
    read_back.ring.sync_data(destination).wait()?;
    if destination.created() {
        destination.sync_directory()?;
    }
    check_length(source, total, total)?;
    if !verify {
        return Ok(None);
    }
    let original = read_back.crc(source.clone(), total)?;
    let copied = read_back.crc(destination.clone(), total)?;
    if copied != original {
        return Err(Error::Corrupt {
            offset: 0,
            detail: format!(
                "the reflinked copy at {} reads back with CRC32C {copied:08x}, the source \
                 with {original:08x}",
                destination.path().display()
            ),
        });
    }
    Ok(Some(original))
}

/// The block size (given or the destination device's largest request) and the
/// alignment unit both files need, from the destination's limits before it is opened.
fn block_and_unit(
    source: &DirectFile,
    dst: &Path,
    options: &CopyOptions,
) -> Result<(usize, usize)> {
    let limits = limits_before_open(dst)?;
    let unit = if options.direct == DirectIo::Off {
        1
    } else {
        source.limits().alignment().max(limits.alignment()).max(1) as usize
    };
    let block = options
        .block_size
        .unwrap_or((DEFAULT_COPY_BLOCK / unit * unit).max(unit));
    if block % unit != 0 {
        return Err(Error::InvalidArgument(format!(
            "CopyOptions::block_size({block}) is not a multiple of the files' alignment \
             {unit}; use a multiple of {unit}"
        )));
    }
    Ok((block, unit))
}

/// A failed copy leaves no half-made destination: a file it created is removed, an
/// existing file is cut back to empty; a block device is left as written.
struct Cleanup {
    file: Option<Arc<DirectFile>>,
}

impl Cleanup {
    fn new(file: Arc<DirectFile>) -> Cleanup {
        Cleanup { file: Some(file) }
    }

    fn disarm(&mut self) {
        self.file = None;
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let Some(file) = self.file.take() else { return };
        if file.is_block_device() {
            return;
        }
        if file.created() {
            let _ = std::fs::remove_file(file.path());
        } else {
            let _ = file.set_len(0);
        }
    }
}

/// File systems whose files do not state their true size (procfs says 0, sysfs 4096):
/// their statfs magic numbers.
const PSEUDO_FILE_SYSTEMS: [(u64, &str); 11] = [
    (0x9fa0, "procfs"),
    (0x6265_6572, "sysfs"),
    (0x6462_6720, "debugfs"),
    (0x7472_6163, "tracefs"),
    (0x7363_6673, "securityfs"),
    (0x0027_e0eb, "cgroupfs"),
    (0x6367_7270, "cgroup2fs"),
    (0x6265_6570, "configfs"),
    (0xde5e_81e4, "efivarfs"),
    (0x6165_676c, "pstorefs"),
    (0xcafe_4a11, "bpffs"),
];

/// The source must be a regular file (or block device) with a true size, other than
/// the destination.
fn check_source(src: &Path, dst: &Path) -> Result<()> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta =
        std::fs::metadata(src).map_err(|e| Error::io(format!("opening {}", src.display()), e))?;
    let kind = meta.file_type();
    if !(kind.is_file() || kind.is_block_device()) {
        return Err(Error::InvalidArgument(format!(
            "{} is not a regular file or block device; copy a file",
            src.display()
        )));
    }
    if let Ok(fs) = rustix::fs::statfs(src) {
        let magic = fs.f_type as u64;
        if let Some((_, name)) = PSEUDO_FILE_SYSTEMS.iter().find(|(m, _)| *m == magic) {
            return Err(Error::InvalidArgument(format!(
                "{} is on {name}, whose files do not state their true size; copy it with \
                 `cat` or std::fs::copy, which read until the end",
                src.display()
            )));
        }
    }
    if let Ok(target) = std::fs::metadata(dst) {
        let same_device = kind.is_block_device()
            && target.file_type().is_block_device()
            && target.rdev() == meta.rdev();
        if same_device || (target.dev(), target.ino()) == (meta.dev(), meta.ino()) {
            return Err(Error::InvalidArgument(format!(
                "{} and {} are the same file; copy to another path",
                src.display(),
                dst.display()
            )));
        }
    }
    Ok(())
}

/// The source's length once read (`done` bytes) must be what it was when the copy
/// began (`before`) and what it is now: anything else is named.
fn check_length(source: &DirectFile, before: u64, done: u64) -> Result<()> {
    let after = source.len()?;
    let detail = if after > before {
        format!("it grew from {before} to {after} bytes while it was copied ({done} read)")
    } else if after < before {
        format!("it shrank from {before} to {after} bytes while it was copied ({done} read)")
    } else if done < before {
        format!("its reads ended at {done} of the {before} bytes it states")
    } else if done > before {
        format!("it read as {done} bytes though it states {before}")
    } else {
        return Ok(());
    };
    Err(Error::io(
        format!("copying {}", source.path().display()),
        std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("{detail}; copy it again when nothing is writing to it"),
        ),
    ))
}

/// How the last block is padded to the alignment.
struct Tail<'a> {
    unit: usize,
    /// A block device destination: pad with its own bytes, since it is never cut.
    device: Option<Arc<DirectFile>>,
    pool: &'a BufferPool,
    ring: &'a IoRing,
}

impl Tail<'_> {
    /// `data` (read from `offset`) padded to whole units.
    fn pad(&self, data: Buffer, offset: u64) -> Result<Buffer> {
        let len = data.len();
        let whole = len.div_ceil(self.unit) * self.unit;
        if whole == len {
            return Ok(data);
        }
        let mut tail = data
            .try_into_mut()
            .map_err(|_| Error::InvalidRequest("the last block is shared".into()))?;
        tail.set_len(whole)?;
        match &self.device {
            None => tail[len..].fill(0),
            Some(device) => {
                let start = len / self.unit * self.unit;
                let old = self.pool.allocate(self.unit)?;
                let old = self
                    .ring
                    .read_at(device, old, offset + start as u64)
                    .wait()?;
                let kept = old.get(len - start..).filter(|b| b.len() == whole - len);
                let kept = kept.ok_or_else(|| Error::Corrupt {
                    offset: offset + start as u64,
                    detail: format!(
                        "{} ended inside its last block while its bytes past the copy \
                             were read back; the device changed size during the copy",
                        device.path().display()
                    ),
                })?;
                tail[len..].copy_from_slice(kept);
            }
        }
        Ok(tail.freeze())
    }
}

/// Hands each block read to the write queue at its offset (the tail padded); returns
/// the bytes read and their CRC32C.
fn pump(
    reads: &mut BlockSource,
    writes: &BlockSink,
    tail: &Tail<'_>,
    total: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(u64, u32)> {
    let (mut done, mut crc) = (0u64, 0u32);
    while let Some(read) = reads.next_block() {
        let read = read?;
        if read.data.is_empty() {
            break;
        }
        crc = crc32c::crc32c_append(crc, &read.data);
        let len = read.data.len();
        writes.submit(tail.pad(read.data, read.offset)?, read.offset)?;
        writes.check()?;
        done += len as u64;
        progress(done, total.max(done));
    }
    Ok((done, crc))
}

/// How a copy reads files back for their checksums: blocks of `block` bytes from
/// `pool`, `depth` ahead on `ring`.
struct ReadBack<'a> {
    ring: &'a IoRing,
    pool: &'a BufferPool,
    block: usize,
    depth: usize,
}

impl ReadBack<'_> {
    /// CRC32C of the first `total` bytes of `file`.
    fn crc(&self, file: Arc<DirectFile>, total: u64) -> Result<u32> {
        let plan = block_plan(self.block, Some(total));
        let memory = ReadMemory::Wait(Arc::new(self.pool.clone()));
        let mut reads = BlockSource::new(file, self.ring.clone(), memory, self.depth, plan);
        let mut crc = 0;
        let mut left = total;
        while let Some(read) = reads.next_block() {
            let read = read?;
            // A device reads on past the copy: only the copied bytes count.
            let take = read
                .data
                .len()
                .min(usize::try_from(left).unwrap_or(usize::MAX));
            crc = crc32c::crc32c_append(crc, &read.data[..take]);
            left -= take as u64;
        }
        Ok(crc)
    }
}
