//! Device limits (the reference's `IDiscRecorder2Ex` transfer sizes), the Linux way: how
//! large and how aligned one direct-I/O transfer to a file, directory or block device
//! may be.
//!
//! Where the figures come from, in order of trust:
//!
//! * `statx(STATX_DIOALIGN)` (Linux 6.1+): the file system's own answer for the memory
//!   and file-offset alignment of `O_DIRECT` on that very file.
//! * The block device's request queue in sysfs, found through the path's device number
//!   (`/sys/dev/block/MAJ:MIN`; a partition uses its parent disk's queue, while dm, md
//!   and loop devices have their own): block sizes, `max_sectors_kb`, `max_segments`,
//!   `optimal_io_size`.
//! * An actual `O_DIRECT` open, for whether direct I/O works there at all.
//! * Otherwise safe fallbacks (4096 bytes), never an assumed 512.
//!
//! The two transfer sizes are those of one request the block layer issues without
//! splitting it: `min(max_sectors_kb * 1024, max_segments * page)` for a page-aligned
//! buffer, and one page less of segments for an unaligned one (it touches one page more).

use std::fmt;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{self, AtFlags, FileType, Mode, OFlags, StatxFlags, CWD};
use rustix::io::Errno;

use crate::error::{Error, Result};
use crate::memory::page_size;

/// The alignment and size fallback used where nothing better is known: large enough
/// for every common device (4Kn drives included), so it is never wrong, only cautious.
pub const FALLBACK_ALIGNMENT: u32 = 4096;

/// The transfer size used where no block device is behind a path: with no block layer
/// to split requests, this only keeps system calls few.
pub const FALLBACK_TRANSFER: u64 = 1 << 20;

/// Where one figure of [`DeviceLimits`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Source {
    /// `statx(STATX_DIOALIGN)`.
    Statx,
    /// The block device's queue in sysfs.
    Sysfs,
    /// Derived from other figures (named in the field's documentation).
    Derived,
    /// Tried: an `O_DIRECT` open.
    Probe,
    /// A safe default: nothing better was available.
    Fallback,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::Statx => "statx",
            Source::Sysfs => "sysfs",
            Source::Derived => "derived",
            Source::Probe => "probe",
            Source::Fallback => "fallback",
        })
    }
}

/// Where each figure of a [`DeviceLimits`] came from (same field names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LimitSources {
    /// Source of `logical_block_size`.
    pub logical_block_size: Source,
    /// Source of `physical_block_size`.
    pub physical_block_size: Source,
    /// Source of `dio_mem_align`.
    pub dio_mem_align: Source,
    /// Source of `dio_offset_align`.
    pub dio_offset_align: Source,
    /// Source of both maximum transfer sizes.
    pub max_transfer: Source,
    /// Source of `optimal_io_size`.
    pub optimal_io_size: Source,
    /// Source of `direct_io`.
    pub direct_io: Source,
}

/// The block device behind a path.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BlockDevice {
    /// Device number, major part.
    pub major: u32,
    /// Device number, minor part.
    pub minor: u32,
    /// Kernel name of the device whose queue was read (`vda`, `nvme0n1`, `loop3`, `dm-0`).
    pub name: String,
    /// Whether the path's device is a partition of `name`.
    pub partition: bool,
    /// The sysfs queue directory read.
    pub queue: PathBuf,
}

/// How large and how aligned a direct-I/O transfer at a path may be.
///
/// ```
/// let limits = pagebuf::DeviceLimits::for_path(".")?;
/// assert!(limits.dio_offset_align.is_power_of_two());
/// assert!(limits.max_page_aligned_transfer >= limits.max_non_page_aligned_transfer);
/// println!("align to {} bytes, at most {} per request ({})",
///          limits.dio_mem_align, limits.max_page_aligned_transfer,
///          limits.sources.max_transfer);
/// # Ok::<(), pagebuf::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeviceLimits {
    /// Smallest unit the device addresses (bytes).
    pub logical_block_size: u32,
    /// Unit the device writes internally; writes smaller than this cost a
    /// read-modify-write.
    pub physical_block_size: u32,
    /// Alignment a buffer's address needs for `O_DIRECT`.
    pub dio_mem_align: u32,
    /// Alignment a file offset (and transfer length) needs for `O_DIRECT`.
    pub dio_offset_align: u32,
    /// Largest transfer from a page-aligned buffer the block layer issues as one request.
    pub max_page_aligned_transfer: u64,
    /// Largest such transfer from a buffer that is not page-aligned.
    pub max_non_page_aligned_transfer: u64,
    /// The device's preferred transfer size, or 0 when it states none.
    pub optimal_io_size: u64,
    /// Whether `O_DIRECT` works at the path (tried, not guessed).
    pub direct_io: bool,
    /// Where each figure came from.
    pub sources: LimitSources,
    /// The block device whose queue was read, if there is one.
    pub device: Option<BlockDevice>,
    /// Why some figures are fallbacks, when they are.
    pub note: Option<String>,
}

/// What sysfs says about a request queue.
struct Queue {
    logical_block_size: u32,
    physical_block_size: u32,
    max_sectors_kb: u64,
    max_segments: u64,
    optimal_io_size: u64,
}

impl DeviceLimits {
    /// The limits for a regular file, a directory (for files to be created in it) or a
    /// block device.
    ///
    /// # Errors
    /// [`Error::Io`] if the path cannot be examined (it does not exist, or permission
    /// is denied); [`Error::Unsupported`] for other kinds of file (FIFOs, sockets,
    /// character devices), which have no block limits.
    pub fn for_path(path: impl AsRef<Path>) -> Result<DeviceLimits> {
        let path = path.as_ref();
        let stat = fs::statx(
            CWD,
            path,
            AtFlags::empty(),
            StatxFlags::TYPE | StatxFlags::MODE | StatxFlags::DIOALIGN,
        )
        .map_err(|e| Error::io(format!("examining {}", path.display()), e.into()))?;
        let kind = FileType::from_raw_mode(u32::from(stat.stx_mode));
        let (major, minor) = match kind {
            FileType::BlockDevice => (stat.stx_rdev_major, stat.stx_rdev_minor),
            FileType::RegularFile | FileType::Directory => (stat.stx_dev_major, stat.stx_dev_minor),
            other => {
                return Err(Error::Unsupported(format!(
                    "{} is a {other:?}, which has no block-device limits; give a regular \
                     file, a directory or a block device",
                    path.display()
                )))
            }
        };
        let mut note = None;
        let queue = match find_queue(major, minor) {
            Some((device, queue)) => Some((device, queue)),
            None => {
                note = Some(format!(
                    "no block device behind {} (device {major}:{minor}: a virtual or \
                     network file system such as tmpfs, overlayfs or NFS); block sizes \
                     and alignment are safe fallbacks of {FALLBACK_ALIGNMENT} bytes, \
                     transfers {FALLBACK_TRANSFER} bytes",
                    path.display()
                ));
                None
            }
        };
        let probe = probe_direct_io(path, kind);
        let direct_io = probe.works;
        let page = page_size() as u64;
        let (device, q) = match queue {
            Some((device, q)) => (Some(device), Some(q)),
            None => (None, None),
        };
        let from_sysfs = q.is_some();
        let (logical, physical) = q
            .as_ref()
            .map(|q| (q.logical_block_size, q.physical_block_size))
            .unwrap_or((FALLBACK_ALIGNMENT, FALLBACK_ALIGNMENT));
        let (max_aligned, max_unaligned, optimal) = match &q {
            Some(q) => {
                let by_size = q.max_sectors_kb.saturating_mul(1024);
                (
                    by_size.min(q.max_segments.saturating_mul(page)),
                    by_size.min(q.max_segments.saturating_sub(1).saturating_mul(page)),
                    q.optimal_io_size,
                )
            }
            None => (FALLBACK_TRANSFER, FALLBACK_TRANSFER, 0),
        };
        let sysfs_or_fallback = if from_sysfs {
            Source::Sysfs
        } else {
            Source::Fallback
        };
        // statx says 0 when the file system does not do direct I/O on this file (or
        // does not answer: no STATX_DIOALIGN in the mask).
        // For a directory, the probe's temporary file speaks for files made there.
        let statx_align = dio_align(&stat).or(probe.dio_align);
        let (mem_align, offset_align, align_source) = if let Some((mem, offset)) = statx_align {
            (mem, offset, Source::Statx)
        } else if from_sysfs {
            // Without DIOALIGN, the logical block size is the rule block devices enforce.
            (logical, logical, Source::Derived)
        } else {
            (FALLBACK_ALIGNMENT, FALLBACK_ALIGNMENT, Source::Fallback)
        };
        Ok(DeviceLimits {
            logical_block_size: logical,
            physical_block_size: physical,
            dio_mem_align: mem_align.max(1),
            dio_offset_align: offset_align.max(1),
            max_page_aligned_transfer: max_aligned,
            max_non_page_aligned_transfer: max_unaligned,
            optimal_io_size: optimal,
            direct_io,
            sources: LimitSources {
                logical_block_size: sysfs_or_fallback,
                physical_block_size: sysfs_or_fallback,
                dio_mem_align: align_source,
                dio_offset_align: align_source,
                max_transfer: if from_sysfs {
                    Source::Derived
                } else {
                    Source::Fallback
                },
                optimal_io_size: sysfs_or_fallback,
                direct_io: Source::Probe,
            },
            device,
            note,
        })
    }

    /// The alignment that satisfies both memory and offset rules: what to round
    /// buffers, offsets and lengths to.
    pub fn alignment(&self) -> u32 {
        self.dio_mem_align.max(self.dio_offset_align)
    }
}

/// The request queue serving device `major:minor`, if it is a block device.
fn find_queue(major: u32, minor: u32) -> Option<(BlockDevice, Queue)> {
    let link = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    let dir = std::fs::canonicalize(&link).ok()?;
    let partition = dir.join("partition").exists();
    let disk = if partition {
        dir.parent()?.to_path_buf()
    } else {
        dir
    };
    let queue_dir = disk.join("queue");
    let read = |name: &str| -> Option<u64> {
        std::fs::read_to_string(queue_dir.join(name))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let queue = Queue {
        logical_block_size: u32::try_from(read("logical_block_size")?).ok()?,
        physical_block_size: u32::try_from(read("physical_block_size")?).ok()?,
        max_sectors_kb: read("max_sectors_kb")?,
        max_segments: read("max_segments")?,
        optimal_io_size: read("optimal_io_size").unwrap_or(0),
    };
    let name = disk.file_name()?.to_string_lossy().into_owned();
    Some((
        BlockDevice {
            major,
            minor,
            name,
            partition,
            queue: queue_dir,
        },
        queue,
    ))
}

/// `statx`'s direct-I/O alignment (memory, offset), if it gave one.
fn dio_align(stat: &fs::Statx) -> Option<(u32, u32)> {
    (stat.stx_mask & StatxFlags::DIOALIGN.bits() != 0 && stat.stx_dio_offset_align != 0)
        .then_some((stat.stx_dio_mem_align, stat.stx_dio_offset_align))
}

/// What trying `O_DIRECT` found.
struct Probe {
    works: bool,
    /// DIOALIGN of the probe's own file, when a directory was probed.
    dio_align: Option<(u32, u32)>,
}

/// Whether an `O_DIRECT` open succeeds at `path`: the file or device itself, or, for a
/// directory, an unnamed temporary file in it (or, where `O_TMPFILE` is not supported,
/// a named one that is removed at once).
fn probe_direct_io(path: &Path, kind: FileType) -> Probe {
    let direct = |flags: OFlags, at: &Path| -> std::result::Result<OwnedFd, Errno> {
        fs::open(
            at,
            flags | OFlags::DIRECT | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
    };
    let of_file = |fd: &OwnedFd| {
        fs::statx(fd, "", AtFlags::EMPTY_PATH, StatxFlags::DIOALIGN)
            .ok()
            .and_then(|stat| dio_align(&stat))
    };
    match kind {
        FileType::Directory => match direct(OFlags::TMPFILE | OFlags::RDWR, path) {
            Ok(fd) => Probe {
                works: true,
                dio_align: of_file(&fd),
            },
            Err(Errno::OPNOTSUPP) | Err(Errno::ISDIR) => {
                let name = path.join(format!(".pagebuf-dio-probe-{}", std::process::id()));
                let opened = direct(OFlags::CREATE | OFlags::EXCL | OFlags::RDWR, &name);
                let _ = std::fs::remove_file(&name);
                Probe {
                    dio_align: opened.as_ref().ok().and_then(of_file),
                    works: opened.is_ok(),
                }
            }
            Err(_) => Probe {
                works: false,
                dio_align: None,
            },
        },
        _ => Probe {
            works: direct(OFlags::RDONLY, path).is_ok(),
            dio_align: None,
        },
    }
}
