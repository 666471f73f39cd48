//! [`DirectFile`] and how it is opened ([`DirectFileOptions`], [`DirectIo`]).

use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{AtFlags, FileType, FlockOperation, OFlags, StatxFlags, CWD};
use rustix::io::Errno;

use crate::buffer::BufferMut;
use crate::device::DeviceLimits;
use crate::error::{Error, Misalignment, Result};
use crate::memory::page_size;

/// Whether a [`DirectFile`] uses `O_DIRECT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum DirectIo {
    /// Direct I/O or [`Error::Unsupported`].
    Require,
    /// Direct I/O where the file system allows it, buffered I/O otherwise (reported by
    /// [`DirectFile::is_direct`] and [`DirectFile::fallback_note`]).
    #[default]
    Prefer,
    /// Buffered I/O (no alignment rules).
    Off,
}

/// How to open a [`DirectFile`]; methods take and return `Self`.
///
/// ```
/// use pagebuf::direct::{DirectFile, DirectIo};
/// # let dir = std::env::temp_dir();
/// let file = DirectFile::options()
///     .read(true)
///     .write(true)
///     .create(true)
///     .direct(DirectIo::Prefer)
///     .open(dir.join("pagebuf-doc-options.bin"))?;
/// println!("direct I/O: {}", file.is_direct());
/// # std::fs::remove_file(dir.join("pagebuf-doc-options.bin")).ok();
/// # Ok::<(), pagebuf::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectFileOptions {
    read: bool,
    write: bool,
    create: bool,
    create_new: bool,
    truncate: bool,
    exclusive: bool,
    direct: DirectIo,
}

impl Default for DirectFileOptions {
    fn default() -> DirectFileOptions {
        DirectFileOptions {
            read: true,
            write: false,
            create: false,
            create_new: false,
            truncate: false,
            exclusive: false,
            direct: DirectIo::Prefer,
        }
    }
}

impl DirectFileOptions {
    /// Open for reading.
    pub fn read(mut self, read: bool) -> Self {
        self.read = read;
        self
    }

    /// Open for writing.
    pub fn write(mut self, write: bool) -> Self {
        self.write = write;
        self
    }

    /// Create the file if it does not exist (needs `write`).
    pub fn create(mut self, create: bool) -> Self {
        self.create = create;
        self
    }

    /// Create the file, refusing one that exists (needs `write`; implies `create`).
    pub fn create_new(mut self, create_new: bool) -> Self {
        self.create_new = create_new;
        self
    }

    /// Truncate the file to length 0 (needs `write`). A block device is never
    /// truncated (its length is the device's).
    pub fn truncate(mut self, truncate: bool) -> Self {
        self.truncate = truncate;
        self
    }

    /// Be the file's only writer (needs `write`): take an exclusive advisory lock
    /// (`flock(LOCK_EX | LOCK_NB)`) on the open file before truncating it, held until
    /// the `DirectFile` drops; a block device is opened with `O_EXCL` instead (udev holds
    /// a shared `flock` on devices while it probes them). A second writer, in this
    /// process or another, gets [`Error::InvalidRequest`] naming the file, and finds it
    /// untouched. Readers do not lock.
    pub fn exclusive(mut self, exclusive: bool) -> Self {
        self.exclusive = exclusive;
        self
    }

    /// The direct-I/O policy (default `Prefer`).
    pub fn direct(mut self, direct: DirectIo) -> Self {
        self.direct = direct;
        self
    }

    /// Opens `path` with these options.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for contradictory options; [`Error::Unsupported`] for
    /// a path that is not a regular file or block device (a FIFO would block the open)
    /// and, under `Require`, for a file system that refuses `O_DIRECT`; [`Error::Io`]
    /// for the system's refusals (missing file, a directory, no permission).
    pub fn open(self, path: impl AsRef<Path>) -> Result<DirectFile> {
        let path = path.as_ref();
        if !self.read && !self.write {
            return Err(Error::InvalidArgument(
                "open neither for reading nor for writing; ask for read(true) or write(true)"
                    .into(),
            ));
        }
        if (self.create || self.create_new || self.truncate || self.exclusive) && !self.write {
            return Err(Error::InvalidArgument(
                "create, create_new, truncate or exclusive needs write(true)".into(),
            ));
        }
        let block_device = refuse_special_files(path)? == Some(FileType::BlockDevice);
        // Truncation waits for the lock: a second writer must find the file untouched.
        let truncate_after_lock = self.truncate && self.exclusive;
        let mut std_options = OpenOptions::new();
        std_options
            .read(self.read)
            .write(self.write)
            .truncate(self.truncate && !truncate_after_lock && !block_device);
        let mut flags = OFlags::CLOEXEC;
        if self.exclusive && block_device {
            flags |= OFlags::EXCL;
        }
        let open = |direct: bool| {
            let mut options = std_options.clone();
            let mut flags = flags;
            if direct {
                flags |= OFlags::DIRECT;
            }
            options.custom_flags(flags.bits() as i32);
            options.open(path)
        };
        let context = |e: std::io::Error| {
            if block_device && e.raw_os_error() == Some(Errno::BUSY.raw_os_error()) {
                return Error::InvalidRequest(format!(
                    "{} is in use (mounted, or opened exclusively by another writer); \
                     unmount it or wait until that writer is done",
                    path.display()
                ));
            }
            Error::io(
                format!(
                    "opening {} ({})",
                    path.display(),
                    if self.write {
                        "read-write"
                    } else {
                        "read-only"
                    }
                ),
                e,
            )
        };
        // Made first, apart (`O_CREAT | O_EXCL`, no `O_DIRECT`), so the file knows whether
        // this open created it (a writer then syncs the directory, and a failed copy
        // removes it), whatever the direct-I/O policy then finds.
        let created = if self.create_new || (self.create && !block_device) {
            match OpenOptions::new().write(true).create_new(true).open(path) {
                Ok(_) => true,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && !self.create_new => {
                    false
                }
                Err(e) => return Err(context(e)),
            }
        } else {
            false
        };
        let opened = || -> Result<(File, bool, Option<String>, DeviceLimits)> {
            let (file, direct, fallback_note) = match self.direct {
                DirectIo::Off => (open(false).map_err(context)?, false, None),
                DirectIo::Require | DirectIo::Prefer => match open(true) {
                    Ok(opened) => (opened, true, None),
                    Err(e) if e.raw_os_error() == Some(Errno::INVAL.raw_os_error()) => {
                        let why = format!(
                            "the file system at {} refuses O_DIRECT (EINVAL)",
                            path.display()
                        );
                        if self.direct == DirectIo::Require {
                            return Err(Error::Unsupported(format!(
                                "{why}; use DirectIo::Prefer to fall back to buffered I/O, or \
                                 put the file on a file system that supports direct I/O"
                            )));
                        }
                        let note = format!("{why}; using buffered I/O");
                        (open(false).map_err(context)?, false, Some(note))
                    }
                    Err(e) => return Err(context(e)),
                },
            };
            Ok((file, direct, fallback_note, DeviceLimits::for_path(path)?))
        };
        // A file made here and then refused (no O_DIRECT under `Require`, no limits) is
        // removed again: a refused open leaves nothing behind.
        let (file, direct, fallback_note, limits) = opened().inspect_err(|_| {
            if created {
                let _ = std::fs::remove_file(path);
            }
        })?;
        let file = DirectFile {
            open: Arc::new(OpenFile {
                file,
                path: path.to_path_buf(),
            }),
            limits,
            direct,
            fallback_note,
            created,
            block_device,
        };
        if self.exclusive && !block_device {
            match rustix::fs::flock(&file.open.file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => {}
                Err(Errno::WOULDBLOCK) => return Err(busy(path)),
                Err(errno) => {
                    return Err(Error::io(
                        format!("locking {} for writing", path.display()),
                        errno.into(),
                    ))
                }
            }
        }
        if truncate_after_lock && !block_device {
            file.set_len(0)?;
        }
        Ok(file)
    }
}

/// The limits a file at `path` will have: its own if it exists, else its directory's
/// (what a writer checks its options against before it creates or truncates anything).
pub(crate) fn limits_before_open(path: &Path) -> Result<DeviceLimits> {
    if path.exists() {
        return DeviceLimits::for_path(path);
    }
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => DeviceLimits::for_path(dir),
        _ => DeviceLimits::for_path("."),
    }
}

/// The error for a file another writer holds.
fn busy(path: &Path) -> Error {
    Error::InvalidRequest(format!(
        "{} is being written by another writer (it holds the file's exclusive lock); wait \
         until that writer is done, or write to another path",
        path.display()
    ))
}

/// Refuses FIFOs, sockets and character devices before `open` (a FIFO would block it);
/// returns the kind of what is there, if anything.
fn refuse_special_files(path: &Path) -> Result<Option<FileType>> {
    match rustix::fs::statx(CWD, path, AtFlags::empty(), StatxFlags::TYPE) {
        Ok(stat) => match FileType::from_raw_mode(u32::from(stat.stx_mode)) {
            kind @ (FileType::RegularFile | FileType::BlockDevice | FileType::Directory) => {
                Ok(Some(kind))
            }
            other => Err(Error::Unsupported(format!(
                "{} is a {other:?}: direct I/O works on regular files and block devices",
                path.display()
            ))),
        },
        // Missing (to be created) or unreadable: `open` reports it properly.
        Err(_) => Ok(None),
    }
}

/// A file opened for direct I/O, with the limits of the device beneath it.
///
/// ```
/// use pagebuf::{BufferAllocator, PageAllocator};
/// use pagebuf::direct::DirectFile;
///
/// # let path = std::env::temp_dir().join("pagebuf-doc-direct.bin");
/// let file = DirectFile::create(&path)?;
/// let align = file.limits().alignment() as usize;
/// let mut block = PageAllocator::default().allocate_page_aligned(4 * align)?;
/// block.set_len(block.max_len())?;
/// block.fill(0x42);
/// file.write_at(&block, 0)?;
///
/// let mut back = PageAllocator::default().allocate_page_aligned(8 * align)?;
/// let n = file.read_at(&mut back, 0)?;       // short count at end of file
/// assert_eq!((n, back.len()), (4 * align, 4 * align));
/// assert!(back.iter().all(|&b| b == 0x42));
/// # std::fs::remove_file(&path)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct DirectFile {
    /// The open file and its name, shared with transfers in flight on an
    /// [`IoRing`](crate::IoRing) (so a dropped `DirectFile` never lets a late transfer
    /// reach whatever reuses its fd number).
    open: Arc<OpenFile>,
    limits: DeviceLimits,
    direct: bool,
    fallback_note: Option<String>,
    /// This open created the file.
    created: bool,
    block_device: bool,
}

/// The open file of a [`DirectFile`] and the path it was opened at.
#[derive(Debug)]
pub(crate) struct OpenFile {
    pub(crate) file: File,
    pub(crate) path: PathBuf,
}

impl OpenFile {
    /// An [`Error::Io`] for `doing` (`"reading"`) at `at`.
    pub(crate) fn io_error(&self, doing: &str, at: u64, e: std::io::Error) -> Error {
        Error::io(format!("{doing} {} at offset {at}", self.path.display()), e)
    }
}

impl AsFd for DirectFile {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.open.file.as_fd()
    }
}

impl DirectFile {
    /// Opens an existing file for reading (direct I/O preferred).
    ///
    /// # Errors
    /// As [`DirectFileOptions::open`].
    pub fn open(path: impl AsRef<Path>) -> Result<DirectFile> {
        DirectFile::options().open(path)
    }

    /// Creates (or truncates) a file for reading and writing (direct I/O preferred), as
    /// its only writer: an exclusive lock is taken before truncating (see
    /// [`DirectFileOptions::exclusive`]).
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] if another writer holds the file; otherwise as
    /// [`DirectFileOptions::open`].
    pub fn create(path: impl AsRef<Path>) -> Result<DirectFile> {
        DirectFile::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .exclusive(true)
            .open(path)
    }

    /// Options to open with (read-only, direct I/O preferred, until changed).
    pub fn options() -> DirectFileOptions {
        DirectFileOptions::default()
    }

    /// The limits of the device beneath the file.
    pub fn limits(&self) -> &DeviceLimits {
        &self.limits
    }

    /// Whether reads and writes bypass the page cache (`O_DIRECT`).
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// Why direct I/O is off though it was preferred, if it is.
    pub fn fallback_note(&self) -> Option<&str> {
        self.fallback_note.as_deref()
    }

    /// The path the file was opened at.
    pub fn path(&self) -> &Path {
        &self.open.path
    }

    /// Reads into `buf` from `offset`, up to `buf.max_len()` bytes, and sets `buf`'s
    /// length to the bytes read: fewer only at end of file.
    ///
    /// # Errors
    /// [`Error::Misaligned`] (direct I/O) if the buffer's address, `offset` or
    /// `buf.max_len()` breaks the device's alignment; [`Error::Io`] from the system.
    pub fn read_at(&self, buf: &mut BufferMut, offset: u64) -> Result<usize> {
        let len = buf.max_len();
        self.check(buf.as_ptr(), offset, len)?;
        let chunk = self.chunk_for(buf.as_ptr());
        let mut done = 0;
        while done < len {
            let want = (len - done).min(chunk);
            let at = offset + done as u64;
            let n = self
                .open
                .file
                .read_at(&mut buf.whole_mut()[done..done + want], at)
                .map_err(|e| self.io_error("reading", at, e))?;
            done += n;
            if n < want {
                break; // end of file
            }
        }
        buf.set_len(done)?;
        Ok(done)
    }

    /// Writes all of `data` at `offset`; returns its length.
    ///
    /// # Errors
    /// [`Error::Misaligned`] (direct I/O) if `data`'s address, `offset` or length breaks
    /// the device's alignment: pad the last block and [`set_len`](Self::set_len) after;
    /// [`Error::Io`] from the system (a full disk is `ENOSPC`).
    pub fn write_at(&self, data: &[u8], offset: u64) -> Result<usize> {
        self.check(data.as_ptr(), offset, data.len())?;
        let chunk = self.chunk_for(data.as_ptr());
        let mut done = 0;
        while done < data.len() {
            let want = (data.len() - done).min(chunk);
            let at = offset + done as u64;
            let n = self
                .open
                .file
                .write_at(&data[done..done + want], at)
                .map_err(|e| self.io_error("writing", at, e))?;
            if n == 0 {
                return Err(self.io_error(
                    "writing",
                    at,
                    std::io::Error::new(std::io::ErrorKind::WriteZero, "wrote nothing"),
                ));
            }
            done += n;
        }
        Ok(done)
    }

    /// Whether this open created the file (it did not exist before).
    pub fn created(&self) -> bool {
        self.created
    }

    /// Whether the file is a block device (its length is the device's and is never
    /// changed).
    pub fn is_block_device(&self) -> bool {
        self.block_device
    }

    /// The file's length in bytes; for a block device, the device's size.
    ///
    /// # Errors
    /// [`Error::Io`] from the system.
    pub fn len(&self) -> Result<u64> {
        let context = |e| {
            Error::io(
                format!("reading the length of {}", self.open.path.display()),
                e,
            )
        };
        if self.block_device {
            // `st_size` is 0 for a device; its end is its size (positioned I/O ignores
            // the file position this moves).
            return rustix::fs::seek(&self.open.file, rustix::fs::SeekFrom::End(0))
                .map_err(|e| context(e.into()));
        }
        self.open.file.metadata().map(|m| m.len()).map_err(context)
    }

    /// Makes the file's name durable: `fsync` of the directory holding it, which a
    /// writer that created the file does before it first reports anything durable (a
    /// new file's data can be on disk while its directory entry is not).
    ///
    /// # Errors
    /// [`Error::Io`] from the system.
    pub fn sync_directory(&self) -> Result<()> {
        let dir = match self.open.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(format!("syncing the directory {}", dir.display()), e))
    }

    /// Whether the file is empty.
    ///
    /// # Errors
    /// As [`len`](Self::len).
    pub fn is_empty(&self) -> Result<bool> {
        self.len().map(|len| len == 0)
    }

    /// Sets the file's length: how a direct writer finishes a file whose length is not
    /// a block multiple (write the last block padded, then cut it to size).
    ///
    /// # Errors
    /// [`Error::Io`] from the system.
    pub fn set_len(&self, len: u64) -> Result<()> {
        if self.block_device {
            return Err(Error::InvalidRequest(format!(
                "{} is a block device: its length is the device's and cannot be set",
                self.open.path.display()
            )));
        }
        self.open.file.set_len(len).map_err(|e| {
            Error::io(
                format!(
                    "setting the length of {} to {len}",
                    self.open.path.display()
                ),
                e,
            )
        })
    }

    /// Reserves disk space for `len` bytes at `offset` (`fallocate`), growing the file
    /// to cover them. Writes into reserved space are overwrites: the file system does
    /// not allocate while they run, and may run several at once (ext4 and XFS serialize
    /// direct writes that allocate or extend a file). A full disk shows here, before
    /// any data is written.
    ///
    /// # Errors
    /// [`Error::Unsupported`] where the file system cannot reserve space (tmpfs before
    /// 2.6.39-era kernels, some network file systems); [`Error::Io`] otherwise (a full
    /// disk is `ENOSPC`).
    pub fn allocate(&self, offset: u64, len: u64) -> Result<()> {
        match rustix::fs::fallocate(
            &self.open.file,
            rustix::fs::FallocateFlags::empty(),
            offset,
            len,
        ) {
            Ok(()) => Ok(()),
            Err(rustix::io::Errno::OPNOTSUPP) => Err(Error::Unsupported(format!(
                "the file system of {} cannot reserve space (fallocate); write without \
                 reserving",
                self.open.path.display()
            ))),
            Err(errno) => Err(Error::io(
                format!(
                    "reserving {len} bytes at offset {offset} of {}",
                    self.open.path.display()
                ),
                errno.into(),
            )),
        }
    }

    /// Gives back the space of `len` bytes at `offset` (`FALLOC_FL_PUNCH_HOLE`, the
    /// length kept): they read as zeros after. `false` where the file system cannot
    /// punch holes: nothing changed.
    ///
    /// # Errors
    /// [`Error::Io`] from the system, other than "not supported".
    pub(crate) fn punch_hole(&self, offset: u64, len: u64) -> Result<bool> {
        let flags = rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE;
        match rustix::fs::fallocate(&self.open.file, flags, offset, len) {
            Ok(()) => Ok(true),
            Err(rustix::io::Errno::OPNOTSUPP) => Ok(false),
            Err(errno) => Err(Error::io(
                format!(
                    "giving back {len} bytes at offset {offset} of {}",
                    self.open.path.display()
                ),
                errno.into(),
            )),
        }
    }

    /// Makes written data durable (`fdatasync`).
    ///
    /// # Errors
    /// [`Error::Io`] from the system: data may be lost; do not acknowledge it.
    pub fn sync_data(&self) -> Result<()> {
        self.open
            .file
            .sync_data()
            .map_err(|e| Error::io(format!("syncing {}", self.open.path.display()), e))
    }

    /// Checks the direct-I/O alignment rules for one transfer.
    pub(crate) fn check(&self, address: *const u8, offset: u64, len: usize) -> Result<()> {
        if !self.direct {
            return Ok(());
        }
        let mem = u64::from(self.limits.dio_mem_align);
        let off = u64::from(self.limits.dio_offset_align);
        let misaligned = |what, value: u64, required: u64| Error::Misaligned {
            what,
            value,
            required,
        };
        if address as u64 % mem != 0 {
            return Err(misaligned(Misalignment::Address, address as u64, mem));
        }
        if offset % off != 0 {
            return Err(misaligned(Misalignment::Offset, offset, off));
        }
        if len as u64 % off != 0 {
            return Err(misaligned(Misalignment::Length, len as u64, off));
        }
        Ok(())
    }

    /// The largest piece to issue for a buffer at `address`: the device's maximum
    /// request (page-aligned or not), in whole alignment units.
    pub(crate) fn chunk_for(&self, address: *const u8) -> usize {
        self.max_request(address as usize % page_size() == 0)
    }

    /// The device's largest single request for a page-aligned buffer (or another), in
    /// whole alignment units, at least one.
    pub(crate) fn max_request(&self, page_aligned: bool) -> usize {
        let max = if page_aligned {
            self.limits.max_page_aligned_transfer
        } else {
            self.limits.max_non_page_aligned_transfer
        };
        let unit = self.limits.alignment().max(1) as u64;
        let max = (max / unit * unit).max(unit);
        usize::try_from(max).unwrap_or(usize::MAX)
    }

    fn io_error(&self, doing: &str, at: u64, e: std::io::Error) -> Error {
        self.open.io_error(doing, at, e)
    }

    /// The open file, for a transfer that must keep it open until it completes.
    pub(crate) fn shared(&self) -> Arc<OpenFile> {
        self.open.clone()
    }
}
