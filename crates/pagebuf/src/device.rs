//! Device limits (the reference's `IDiscRecorder2Ex` transfer sizes), the Linux way: how
//! large and how aligned one direct-I/O transfer to a file, directory or block device
//! may be.
//!
//! Where the figures come from, in order of trust:
//!
//! * `statx(STATX_DIOALIGN)` (Linux 6.1+): the file system's own answer for the memory
//!   and file-offset alignment of `O_DIRECT` on that very file; `STATX_WRITE_ATOMIC`
//!   (Linux 6.11+) for the sizes of write it promises never to tear (`RWF_ATOMIC`).
//! * The block device's request queue in sysfs, found through the path's device number
//!   (`/sys/dev/block/MAJ:MIN`; a partition uses its parent disk's queue, while dm, md
//!   and loop devices have their own): block sizes, `max_sectors_kb`, `max_segments`,
//!   `optimal_io_size`.
//! * Where that number is anonymous (major 0: btrfs, overlayfs, network and memory file
//!   systems), the device(s) found through the mount: the line of
//!   `/proc/self/mountinfo` for the path's mount (its mount ID from `statx`, else its
//!   device number), then, by file system:
//!   - btrfs: every member device listed in `/sys/fs/btrfs/<fsid>/devices/` (the file
//!     system whose members include the mount source), so a multi-device btrfs gets the
//!     strictest figures across its devices (largest block sizes, smallest transfers);
//!   - overlayfs: the device of its `upperdir` (where writes go), resolved the same way
//!     and recursively (an upper on btrfs, or on another overlay), at most
//!     [`MAX_MOUNT_DEPTH`] mounts deep; a read-only overlay (no `upperdir`) takes the
//!     strictest of its `lowerdir` layers;
//!   - any other: the mount source, when it is a block device.
//!
//!   [`BlockDevice::via`] and [`DeviceLimits::note`] then say how the device was found;
//!   where none is (tmpfs, NFS, FUSE...), the note says why and the figures fall back.
//! * An actual `O_DIRECT` open, for whether direct I/O works there at all.
//! * Otherwise safe fallbacks (4096 bytes), never an assumed 512.
//!
//! The two transfer sizes are those of one request the block layer issues without
//! splitting it: `min(max_sectors_kb * 1024, max_segments * page)` for a page-aligned
//! buffer, and one page less of segments for an unaligned one (it touches one page more).

use std::ffi::OsString;
use std::fmt;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStringExt;
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

/// How many mounts deep the search for a device behind a path goes (an overlay whose
/// upper layer is on another overlay, and so on): the kernel itself stacks file systems
/// at most two deep, so this only stops a loop.
pub const MAX_MOUNT_DEPTH: usize = 4;

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
    /// Source of both atomic write units: `Statx` where the file system answered
    /// (with zeroes, too, when it promises nothing), `Fallback` (zeroes) where the
    /// kernel did not (before Linux 6.11).
    pub atomic_write: Source,
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
    /// How the device was found when the path's own device number has no queue (an
    /// anonymous device, as btrfs and overlayfs give their files), e.g.
    /// `btrfs: device found through /sys/fs/btrfs/<fsid>/devices (loop3)`; `None` when
    /// it is the path's own device (or, for a block device, the device itself).
    pub via: Option<String>,
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
    /// The smallest write the file system promises never to tear on a crash (an
    /// `RWF_ATOMIC` write with `O_DIRECT`: a power-of-two length from this to
    /// [`atomic_write_unit_max`](Self::atomic_write_unit_max), at an offset that is a
    /// multiple of it, from one buffer); 0 where it promises none (`statx`
    /// `STATX_WRITE_ATOMIC`, Linux 6.11+). See [`untorn_write`](Self::untorn_write).
    pub atomic_write_unit_min: u32,
    /// The largest such write; 0 where none.
    pub atomic_write_unit_max: u32,
    /// Where each figure came from.
    pub sources: LimitSources,
    /// The block device whose queue was read, if there is one: the first of
    /// [`devices`](Self::devices).
    pub device: Option<BlockDevice>,
    /// Every block device whose queue was read: one for a path on a plain device,
    /// several for a file system spanning devices (a multi-device btrfs), whose
    /// strictest figures were taken (largest block sizes, smallest transfers and
    /// segment counts). The mount source comes first. Empty when there is none.
    pub devices: Vec<BlockDevice>,
    /// Why some figures are fallbacks, when they are; or, when the device was found
    /// through the mount rather than the path's own device number, how (as
    /// [`BlockDevice::via`]).
    pub note: Option<String>,
}

/// What sysfs says about a request queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
            StatxFlags::TYPE | StatxFlags::MODE | StatxFlags::DIOALIGN | write_atomic(),
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
        let found = if kind == FileType::BlockDevice {
            find_queue(major, minor)
                .map(|d| (vec![d], None))
                .ok_or_else(|| format!("device {major}:{minor} has no queue in sysfs"))
        } else {
            let at = MountedAt {
                major,
                minor,
                mount_id: mount_id(&stat),
            };
            resolve(at, &mut None, 0)
        };
        let (devices, note) = match found {
            Ok((devices, via)) => (devices, via),
            Err(why) => (
                Vec::new(),
                Some(format!(
                    "no block device behind {} (device {major}:{minor}): {why}; block \
                     sizes and alignment are safe fallbacks of {FALLBACK_ALIGNMENT} bytes, \
                     transfers {FALLBACK_TRANSFER} bytes",
                    path.display()
                )),
            ),
        };
        let probe = probe_direct_io(path, kind);
        let direct_io = probe.works;
        let page = page_size() as u64;
        let q = strictest(devices.iter().map(|(_, q)| *q));
        let devices: Vec<BlockDevice> = devices.into_iter().map(|(d, _)| d).collect();
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
        let statx_align = dio_align(&stat).or(probe.stat.as_ref().and_then(dio_align));
        let (atomic_min, atomic_max, atomic_source) = atomic_units(&stat)
            .or(probe.stat.as_ref().and_then(atomic_units))
            .map_or((0, 0, Source::Fallback), |(min, max)| {
                (min, max, Source::Statx)
            });
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
            atomic_write_unit_min: atomic_min,
            atomic_write_unit_max: atomic_max,
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
                atomic_write: atomic_source,
            },
            device: devices.first().cloned(),
            devices,
            note,
        })
    }

    /// The alignment that satisfies both memory and offset rules: what to round
    /// buffers, offsets and lengths to.
    pub fn alignment(&self) -> u32 {
        self.dio_mem_align.max(self.dio_offset_align)
    }

    /// Whether a direct write of `len` bytes may be made untorn (`RWF_ATOMIC`): a power
    /// of two within the file system's atomic write units. Its offset must then be a
    /// multiple of `len` too.
    pub fn untorn_write(&self, len: usize) -> bool {
        self.direct_io
            && len.is_power_of_two()
            && len >= self.atomic_write_unit_min as usize
            && len <= self.atomic_write_unit_max as usize
            && self.atomic_write_unit_min > 0
    }
}

/// The request queue serving device `major:minor`, if it is a block device.
fn find_queue(major: u32, minor: u32) -> Option<(BlockDevice, Queue)> {
    let link = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    queue_at(std::fs::canonicalize(link).ok()?, major, minor)
}

/// The request queue serving the block device whose sysfs directory is `dir` (device
/// number `major:minor`): its own, or its parent disk's for a partition.
fn queue_at(dir: PathBuf, major: u32, minor: u32) -> Option<(BlockDevice, Queue)> {
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
            via: None,
        },
        queue,
    ))
}

/// The strictest of several queues, for a file system spanning them: a transfer or an
/// alignment that suits every device (largest block sizes, smallest request sizes and
/// segment counts, largest preferred size).
fn strictest(queues: impl IntoIterator<Item = Queue>) -> Option<Queue> {
    queues.into_iter().reduce(|a, b| Queue {
        logical_block_size: a.logical_block_size.max(b.logical_block_size),
        physical_block_size: a.physical_block_size.max(b.physical_block_size),
        max_sectors_kb: a.max_sectors_kb.min(b.max_sectors_kb),
        max_segments: a.max_segments.min(b.max_segments),
        optimal_io_size: a.optimal_io_size.max(b.optimal_io_size),
    })
}

/// The mount ID `statx` gave, if it did (Linux 5.8+).
fn mount_id(stat: &fs::Statx) -> Option<u64> {
    (stat.stx_mask & StatxFlags::MNT_ID.bits() != 0).then_some(stat.stx_mnt_id)
}

/// What identifies the mount a path is on: its device number and, where `statx` gave
/// it, its mount ID (which also finds a btrfs subvolume, whose device number is not
/// the one mountinfo shows).
#[derive(Debug, Clone, Copy)]
struct MountedAt {
    major: u32,
    minor: u32,
    mount_id: Option<u64>,
}

/// Devices found, each with its queue, and how they were found (`None`: directly).
type Found = (Vec<(BlockDevice, Queue)>, Option<String>);

/// The devices behind a file or directory on device `at`: its own queue, else the
/// device(s) found through its mount. `mounts` is `/proc/self/mountinfo`, read on first
/// need. `Err` says why there is none.
fn resolve(
    at: MountedAt,
    mounts: &mut Option<Vec<MountEntry>>,
    depth: usize,
) -> std::result::Result<Found, String> {
    if let Some(device) = find_queue(at.major, at.minor) {
        return Ok((vec![device], None));
    }
    if depth >= MAX_MOUNT_DEPTH {
        return Err(format!(
            "file systems stacked more than {MAX_MOUNT_DEPTH} mounts deep; the search \
             stopped there"
        ));
    }
    if mounts.is_none() {
        let text = std::fs::read("/proc/self/mountinfo")
            .map_err(|e| format!("/proc/self/mountinfo cannot be read ({e})"))?;
        *mounts = Some(parse_mountinfo(&text));
    }
    let entry = {
        let all = mounts.as_deref().unwrap_or_default();
        at.mount_id
            .and_then(|id| all.iter().find(|m| m.mount_id == id))
            .or_else(|| {
                all.iter()
                    .find(|m| (m.major, m.minor) == (at.major, at.minor))
            })
            .cloned()
            .ok_or_else(|| {
                format!(
                    "device {}:{} is on no line of /proc/self/mountinfo",
                    at.major, at.minor
                )
            })?
    };
    let fstype = entry.fstype.as_str();
    let (devices, via) = if (entry.major, entry.minor) != (at.major, at.minor) {
        // A btrfs subvolume's device number is its own; the mount's may have a queue.
        match find_queue(entry.major, entry.minor) {
            Some(device) => {
                let via = format!(
                    "{fstype}: device found through /proc/self/mountinfo's device number \
                     {}:{} ({})",
                    entry.major, entry.minor, device.0.name
                );
                (vec![device], via)
            }
            None => by_fstype(&entry, mounts, depth)?,
        }
    } else {
        by_fstype(&entry, mounts, depth)?
    };
    let devices = devices
        .into_iter()
        .map(|(mut device, queue)| {
            device.via = Some(via.clone());
            (device, queue)
        })
        .collect();
    Ok((devices, Some(via)))
}

/// The devices of mount `entry`, found the way its file system allows.
fn by_fstype(
    entry: &MountEntry,
    mounts: &mut Option<Vec<MountEntry>>,
    depth: usize,
) -> std::result::Result<(Vec<(BlockDevice, Queue)>, String), String> {
    match entry.fstype.as_str() {
        "btrfs" => btrfs_members(entry).or_else(|why| {
            mount_source(entry).map_err(|_| format!("btrfs on {}: {why}", entry.point()))
        }),
        "overlay" => overlay_layers(entry, mounts, depth),
        _ => mount_source(entry),
    }
}

/// Names of devices, for a note: `loop3` or `loop3, loop4`.
fn names(devices: &[(BlockDevice, Queue)]) -> String {
    let names: Vec<&str> = devices.iter().map(|(d, _)| d.name.as_str()).collect();
    names.join(", ")
}

/// The device number of the block device at `path`, if it is one.
fn block_device_number(path: &Path) -> Option<(u32, u32)> {
    if !path.is_absolute() {
        return None;
    }
    let stat = fs::statx(
        CWD,
        path,
        AtFlags::empty(),
        StatxFlags::TYPE | StatxFlags::MODE,
    )
    .ok()?;
    (FileType::from_raw_mode(u32::from(stat.stx_mode)) == FileType::BlockDevice)
        .then_some((stat.stx_rdev_major, stat.stx_rdev_minor))
}

/// The mount's source, when it is a block device (ext4 on an anonymous device through
/// some layer, a FUSE block file system...); else why there is no device.
fn mount_source(
    entry: &MountEntry,
) -> std::result::Result<(Vec<(BlockDevice, Queue)>, String), String> {
    let fstype = entry.fstype.as_str();
    let source = entry.source.display();
    let point = entry.point();
    if let Some((major, minor)) = block_device_number(&entry.source) {
        return match find_queue(major, minor) {
            Some(device) => {
                let via = format!(
                    "{fstype}: device found through the mount source {source} ({})",
                    device.0.name
                );
                Ok((vec![device], via))
            }
            None => Err(format!(
                "{fstype} on {point}: its mount source {source} ({major}:{minor}) has no \
                 readable queue under /sys/dev/block (is sysfs mounted?)"
            )),
        };
    }
    Err(match fstype {
        "tmpfs" | "ramfs" | "devtmpfs" | "hugetlbfs" => {
            format!("{fstype} on {point} keeps its files in memory")
        }
        "nfs" | "nfs4" | "cifs" | "smb3" | "smbfs" | "9p" | "ceph" | "afs" | "glusterfs"
        | "virtiofs" | "fuse.sshfs" => {
            format!("{fstype} on {point} (from {source}) is a network or host-shared file system")
        }
        f if f == "fuse" || f.starts_with("fuse.") => format!(
            "{fstype} on {point} is a FUSE file system: its daemon does the I/O, from \
             devices it does not name"
        ),
        "proc" | "sysfs" | "cgroup" | "cgroup2" | "debugfs" | "tracefs" | "securityfs"
        | "configfs" | "bpf" | "pstore" | "efivarfs" | "devpts" | "mqueue" => {
            format!("{fstype} on {point} is a virtual file system")
        }
        _ => format!("{fstype} on {point}: its mount source {source} is not a block device"),
    })
}

/// Every member of the btrfs mounted as `entry`: the file system in `/sys/fs/btrfs`
/// whose `devices/` lists the mount source (matched by device number, else by name).
fn btrfs_members(
    entry: &MountEntry,
) -> std::result::Result<(Vec<(BlockDevice, Queue)>, String), String> {
    let root = Path::new("/sys/fs/btrfs");
    let source_number = block_device_number(&entry.source);
    let source_name = entry.source.file_name().map(|n| n.to_os_string());
    let filesystems =
        std::fs::read_dir(root).map_err(|e| format!("{} cannot be read ({e})", root.display()))?;
    for fs_dir in filesystems.flatten() {
        let devices_dir = fs_dir.path().join("devices");
        let Ok(members) = std::fs::read_dir(&devices_dir) else {
            continue; // `features`, or a file system going away
        };
        let mut ours = false;
        let mut found = Vec::new();
        let mut unreadable = Vec::new();
        for member in members.flatten() {
            let name = member.file_name();
            let Ok(dir) = std::fs::canonicalize(member.path()) else {
                unreadable.push(name.to_string_lossy().into_owned());
                continue;
            };
            let number = std::fs::read_to_string(dir.join("dev"))
                .ok()
                .and_then(|text| parse_major_minor(text.trim().as_bytes()));
            let is_source = match (number, source_number) {
                (Some(n), Some(s)) => n == s,
                _ => source_name.as_deref() == Some(name.as_os_str()),
            };
            ours |= is_source;
            match number.and_then(|(major, minor)| queue_at(dir, major, minor)) {
                Some(device) => found.push((is_source, name, device)),
                None => unreadable.push(name.to_string_lossy().into_owned()),
            }
        }
        if !ours {
            continue;
        }
        if !unreadable.is_empty() {
            return Err(format!(
                "the queue of member device(s) {} of {} cannot be read, so the strictest \
                 figures are unknown",
                unreadable.join(", "),
                devices_dir.display()
            ));
        }
        // The mount source first, then the others by name.
        found.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let devices: Vec<(BlockDevice, Queue)> = found.into_iter().map(|(_, _, d)| d).collect();
        let via = format!(
            "btrfs: {} found through {} ({}){}",
            if devices.len() == 1 {
                "device"
            } else {
                "devices"
            },
            devices_dir.display(),
            names(&devices),
            if devices.len() > 1 {
                "; the strictest figures across them"
            } else {
                ""
            }
        );
        return Ok((devices, via));
    }
    Err(format!(
        "no file system in {} lists its mount source {}",
        root.display(),
        entry.source.display()
    ))
}

/// The device(s) of an overlay mount: its upper layer's (where writes go and files are
/// copied up), or, for a read-only overlay, the strictest of its lower layers'.
fn overlay_layers(
    entry: &MountEntry,
    mounts: &mut Option<Vec<MountEntry>>,
    depth: usize,
) -> std::result::Result<(Vec<(BlockDevice, Queue)>, String), String> {
    let point = entry.point();
    let (layers, what) = match entry.option("upperdir") {
        Some(upper) => (vec![PathBuf::from(OsString::from_vec(upper))], "upperdir"),
        None => match entry.option("lowerdir") {
            Some(lower) => (
                lower
                    .split(|&b| b == b':')
                    .filter(|layer| !layer.is_empty())
                    .map(|layer| PathBuf::from(OsString::from_vec(unescape(layer))))
                    .collect(),
                "lowerdir",
            ),
            None => return Err(format!("overlay on {point} names no upperdir or lowerdir")),
        },
    };
    let mut devices = Vec::new();
    let mut inner = Vec::new();
    for layer in &layers {
        let stat = fs::statx(
            CWD,
            layer,
            AtFlags::empty(),
            StatxFlags::TYPE | StatxFlags::MODE | StatxFlags::MNT_ID,
        )
        .map_err(|e| {
            format!(
                "overlay on {point}: its {what} {} cannot be examined ({e})",
                layer.display()
            )
        })?;
        let at = MountedAt {
            major: stat.stx_dev_major,
            minor: stat.stx_dev_minor,
            mount_id: mount_id(&stat),
        };
        let (found, via) = resolve(at, mounts, depth + 1).map_err(|why| {
            format!(
                "overlay on {point}: no block device behind its {what} {} ({why})",
                layer.display()
            )
        })?;
        // Layers on one file system share its devices: each is listed once.
        for (device, queue) in found {
            if !devices.iter().any(|(d, _): &(BlockDevice, Queue)| {
                (d.major, d.minor) == (device.major, device.minor)
            }) {
                devices.push((device, queue));
            }
        }
        inner.extend(via);
    }
    let shown: Vec<String> = layers.iter().map(|l| l.display().to_string()).collect();
    let mut via = format!(
        "overlay: {} found through {what} {} ({})",
        if devices.len() == 1 {
            "device"
        } else {
            "devices"
        },
        shown.join(":"),
        names(&devices)
    );
    for step in inner {
        via.push_str("; ");
        via.push_str(&step);
    }
    Ok((devices, via))
}

/// One line of `/proc/self/mountinfo` (proc(5)): what this module needs of it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MountEntry {
    /// Field 1: the mount ID (`statx`'s `stx_mnt_id`).
    mount_id: u64,
    /// Field 3: the file system's device number.
    major: u32,
    minor: u32,
    /// Field 5, unescaped.
    mount_point: PathBuf,
    /// The first field after the ` - ` separator.
    fstype: String,
    /// The mount source, unescaped (a device path, `server:/export`, `tmpfs`...).
    source: PathBuf,
    /// The super block's options, still escaped (values are unescaped one by one).
    super_options: Vec<u8>,
}

impl MountEntry {
    fn point(&self) -> std::path::Display<'_> {
        self.mount_point.display()
    }

    /// The unescaped value of super option `key` (`upperdir=...`), if present.
    fn option(&self, key: &str) -> Option<Vec<u8>> {
        self.super_options.split(|&b| b == b',').find_map(|option| {
            let value = option.strip_prefix(key.as_bytes())?.strip_prefix(b"=")?;
            // lowerdir's layers are split on ':' before unescaping (an escaped ':' in a
            // name stays within its layer); the others are unescaped here.
            Some(if key == "lowerdir" {
                value.to_vec()
            } else {
                unescape(value)
            })
        })
    }
}

/// Every line of mountinfo text that parses; the rest are skipped.
fn parse_mountinfo(text: &[u8]) -> Vec<MountEntry> {
    text.split(|&b| b == b'\n')
        .filter_map(parse_mountinfo_line)
        .collect()
}

/// One mountinfo line:
/// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`
/// (mount ID, parent ID, major:minor, root, mount point, mount options, optional fields
/// up to a lone `-`, then type, source, super options). Paths have space, tab,
/// newline and backslash escaped as octal (`\040`). `None` for anything else.
fn parse_mountinfo_line(line: &[u8]) -> Option<MountEntry> {
    let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    let separator = fields
        .iter()
        .enumerate()
        .skip(6)
        .find_map(|(i, field)| (*field == b"-").then_some(i))?;
    let mount_id = std::str::from_utf8(fields.first()?).ok()?.parse().ok()?;
    let (major, minor) = parse_major_minor(fields.get(2)?)?;
    let mount_point = PathBuf::from(OsString::from_vec(unescape(fields.get(4)?)));
    let fstype = String::from_utf8_lossy(fields.get(separator.checked_add(1)?)?).into_owned();
    let source = PathBuf::from(OsString::from_vec(unescape(
        fields.get(separator.checked_add(2)?)?,
    )));
    let super_options = fields
        .get(separator.checked_add(3)?)
        .map(|f| f.to_vec())
        .unwrap_or_default();
    if fstype.is_empty() || mount_point.as_os_str().is_empty() {
        return None;
    }
    Some(MountEntry {
        mount_id,
        major,
        minor,
        mount_point,
        fstype,
        source,
        super_options,
    })
}

/// `MAJ:MIN` as two numbers.
fn parse_major_minor(text: &[u8]) -> Option<(u32, u32)> {
    let text = std::str::from_utf8(text).ok()?;
    let (major, minor) = text.split_once(':')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// Undoes the kernel's octal escapes (`\040` for a space, `\134` for a backslash);
/// anything else, a lone backslash included, is kept as it is.
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while let Some(&byte) = field.get(i) {
        let octal = field
            .get(i + 1..i + 4)
            .filter(|digits| byte == b'\\' && digits.iter().all(|d| (b'0'..=b'7').contains(d)));
        let value = octal.map(|d| {
            d.iter()
                .fold(0u32, |acc, digit| acc * 8 + u32::from(digit - b'0'))
        });
        match value.and_then(|v| u8::try_from(v).ok()) {
            Some(value) => {
                out.push(value);
                i += 4;
            }
            None => {
                out.push(byte);
                i += 1;
            }
        }
    }
    out
}

/// `statx`'s direct-I/O alignment (memory, offset), if it gave one.
fn dio_align(stat: &fs::Statx) -> Option<(u32, u32)> {
    (stat.stx_mask & StatxFlags::DIOALIGN.bits() != 0 && stat.stx_dio_offset_align != 0)
        .then_some((stat.stx_dio_mem_align, stat.stx_dio_offset_align))
}

/// `STATX_WRITE_ATOMIC` (Linux 6.11), which rustix does not name yet.
fn write_atomic() -> StatxFlags {
    StatxFlags::from_bits_retain(0x0001_0000)
}

/// `statx`'s atomic write units (min, max), if the kernel answered for them: zeroes
/// when the file system promises none.
fn atomic_units(stat: &fs::Statx) -> Option<(u32, u32)> {
    let answered = stat.stx_mask & write_atomic().bits() != 0;
    let sane = stat.stx_atomic_write_unit_min <= stat.stx_atomic_write_unit_max;
    (answered && sane).then_some((
        stat.stx_atomic_write_unit_min,
        stat.stx_atomic_write_unit_max,
    ))
}

/// What trying `O_DIRECT` found.
struct Probe {
    works: bool,
    /// `statx` of the probe's own file (alignment, atomic units), when a directory was
    /// probed: it speaks for files made there.
    stat: Option<fs::Statx>,
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
        fs::statx(
            fd,
            "",
            AtFlags::EMPTY_PATH,
            StatxFlags::DIOALIGN | write_atomic(),
        )
        .ok()
    };
    match kind {
        FileType::Directory => match direct(OFlags::TMPFILE | OFlags::RDWR, path) {
            Ok(fd) => Probe {
                works: true,
                stat: of_file(&fd),
            },
            Err(Errno::OPNOTSUPP) | Err(Errno::ISDIR) => {
                let name = path.join(format!(".pagebuf-dio-probe-{}", std::process::id()));
                let opened = direct(OFlags::CREATE | OFlags::EXCL | OFlags::RDWR, &name);
                let _ = std::fs::remove_file(&name);
                Probe {
                    stat: opened.as_ref().ok().and_then(of_file),
                    works: opened.is_ok(),
                }
            }
            Err(_) => Probe {
                works: false,
                stat: None,
            },
        },
        _ => Probe {
            works: direct(OFlags::RDONLY, path).is_ok(),
            stat: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str) -> Option<MountEntry> {
        parse_mountinfo_line(text.as_bytes())
    }

    #[test]
    fn mountinfo_plain_line() {
        let entry =
            line("36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue")
                .unwrap();
        assert_eq!(entry.mount_id, 36);
        assert_eq!((entry.major, entry.minor), (98, 0));
        assert_eq!(entry.mount_point, Path::new("/mnt2"));
        assert_eq!(entry.fstype, "ext3");
        assert_eq!(entry.source, Path::new("/dev/root"));
        assert_eq!(entry.option("errors").unwrap(), b"continue");
        assert_eq!(entry.option("error"), None);
    }

    #[test]
    fn mountinfo_escapes_and_optional_fields() {
        // No optional field, then several; escaped space, tab, backslash; a bad escape.
        let entry =
            line("7 1 0:42 / /mnt/my\\040disk\\011x rw - btrfs /dev/loop3 rw,subvol=/").unwrap();
        assert_eq!(entry.mount_point, Path::new("/mnt/my disk\tx"));
        assert_eq!((entry.major, entry.minor), (0, 42));
        let entry = line(
            "8 1 0:43 / /a\\134b\\9x\\ rw shared:5 master:2 propagate_from:1 unbindable - \
             overlay overlay rw,lowerdir=/l\\054ow:/l2,upperdir=/up\\040per,workdir=/w",
        )
        .unwrap();
        assert_eq!(entry.mount_point, Path::new("/a\\b\\9x\\"));
        assert_eq!(entry.fstype, "overlay");
        assert_eq!(entry.option("upperdir").unwrap(), b"/up per");
        assert_eq!(entry.option("lowerdir").unwrap(), b"/l\\054ow:/l2");
        // A value past 255 (`\777`) is not an escape.
        assert_eq!(unescape(b"\\777\\0"), b"\\777\\0");
        assert_eq!(unescape(b"\\377"), [0xff]);
        // A source with a space, and a super-options field that is missing.
        let entry = line("9 1 0:44 / /m rw - fuse.x my\\040src").unwrap();
        assert_eq!(entry.source, Path::new("my src"));
        assert!(entry.super_options.is_empty());
    }

    #[test]
    fn mountinfo_hostile_lines_never_panic() {
        for bad in [
            "",
            "-",
            " - - - - - - - -",
            "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 ext3 /dev/root rw", // no separator
            "36 35 98:0 /mnt1 /mnt2 - ext3 /dev/root rw",                   // separator too early
            "x 35 98:0 / /m rw - ext4 /dev/sda rw",
            "36 35 98 / /m rw - ext4 /dev/sda rw",
            "36 35 98:0:1 / /m rw - ext4 /dev/sda rw",
            "36 35 99999999999:0 / /m rw - ext4 /dev/sda rw",
            "36 35 98:0 / /m rw -",
            "36 35 98:0 / /m rw - ext4",
            "36 35 98:0 / /m rw -  /dev/sda rw",
            "\\\\\\ \\1 \\12 \\123 \\1234 \\ - \\",
            "36 35 98:0 / \\ rw - ext4 \\04 \\0",
        ] {
            let _ = line(bad);
        }
        assert_eq!(
            line("36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 ext3 /dev/root rw"),
            None
        );
        assert_eq!(line("36 35 98:0 /mnt1 /mnt2 - ext3 /dev/root rw"), None);
        assert_eq!(line("36 35 98:0 / /m rw - ext4"), None);
        let entry = line("36 35 98:0 / \\ rw - ext4 \\04 \\0").unwrap();
        assert_eq!(entry.mount_point, Path::new("\\"));
        assert_eq!(entry.source, Path::new("\\04"));
        // Invalid UTF-8 and NULs anywhere.
        let mut bytes = b"1 2 3:4 / /m\xff\x00 rw - \xfe ext4 \xff,=,upperdir=\xff".to_vec();
        let _ = parse_mountinfo_line(&bytes);
        for len in 0..bytes.len() {
            let _ = parse_mountinfo_line(&bytes[..len]);
        }
        bytes.reverse();
        let _ = parse_mountinfo(&bytes);
        // Every prefix of a good line, and pseudo-random bytes from its alphabet.
        let good =
            b"36 35 98:0 /mnt\\0401 /mnt2 rw,noatime master:1 - overlay ov rw,upperdir=/u\\134";
        for len in 0..=good.len() {
            let _ = parse_mountinfo_line(&good[..len]);
        }
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..2000 {
            let text: Vec<u8> = (0..64)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    good[(state % good.len() as u64) as usize]
                })
                .collect();
            for entry in parse_mountinfo(&text) {
                let _ = entry.option("upperdir");
                let _ = entry.option("lowerdir");
            }
        }
    }

    #[test]
    fn this_process_mountinfo_parses() {
        let text = std::fs::read("/proc/self/mountinfo").unwrap();
        let mounts = parse_mountinfo(&text);
        assert!(!mounts.is_empty());
        assert!(mounts.iter().any(|m| m.mount_point == Path::new("/")));
    }

    #[test]
    fn strictest_takes_each_figure_from_the_strictest_device() {
        let a = Queue {
            logical_block_size: 4096,
            physical_block_size: 4096,
            max_sectors_kb: 1280,
            max_segments: 128,
            optimal_io_size: 0,
        };
        let b = Queue {
            logical_block_size: 1024,
            physical_block_size: 8192,
            max_sectors_kb: 128,
            max_segments: 256,
            optimal_io_size: 65536,
        };
        assert_eq!(
            strictest([a, b]),
            Some(Queue {
                logical_block_size: 4096,
                physical_block_size: 8192,
                max_sectors_kb: 128,
                max_segments: 128,
                optimal_io_size: 65536,
            })
        );
        assert_eq!(strictest([]), None);
    }
}
