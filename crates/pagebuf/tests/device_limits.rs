//! `DeviceLimits::for_path` against the machine itself: figures cross-checked with an
//! independent walk of `/sys/block` and a direct `statx`, on the real disk (in cargo's
//! per-test temporary directory under `target/`, not `/tmp`, which may be tmpfs), on
//! tmpfs, on a raw block device, and (as root) on 4096-byte-sector loop devices with
//! ext4, XFS and btrfs (whose files have an anonymous device number: the device is found
//! through the mount), a two-device btrfs (the strictest figures of both), and an
//! overlay whose upper layer is on a loop device.

use std::path::{Path, PathBuf};
use std::process::Command;

use pagebuf::device::{Source, FALLBACK_ALIGNMENT};
use pagebuf::{page_size, DeviceLimits, Error};

mod support;
use support::{scratch, LoopMount, OverlayMount};

/// `major:minor` of the device holding `path` (glibc's encoding of `dev_t`).
fn device_of(path: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(path).unwrap().dev();
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major, minor)
}

/// The queue directory of the disk holding device `major:minor`, found by scanning
/// `/sys/block/*/dev` and `/sys/block/*/*/dev` (partitions), not through the link the
/// library follows.
fn queue_by_scan(major: u64, minor: u64) -> Option<PathBuf> {
    let wanted = format!("{major}:{minor}");
    for disk in std::fs::read_dir("/sys/block").ok()?.flatten() {
        let disk = disk.path();
        let dev = std::fs::read_to_string(disk.join("dev")).unwrap_or_default();
        if dev.trim() == wanted {
            return Some(disk.join("queue"));
        }
        for part in std::fs::read_dir(&disk).ok()?.flatten() {
            let dev = std::fs::read_to_string(part.path().join("dev")).unwrap_or_default();
            if dev.trim() == wanted && part.path().join("partition").exists() {
                return Some(disk.join("queue"));
            }
        }
    }
    None
}

fn read_u64(dir: &Path, name: &str) -> u64 {
    std::fs::read_to_string(dir.join(name))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

#[test]
fn real_disk_limits_agree_with_sysfs_and_statx() {
    let dir = scratch("real_disk");
    let file = dir.join("data");
    std::fs::write(&file, vec![7u8; 10_000]).unwrap();
    let (major, minor) = device_of(&dir);
    let Some(queue) = queue_by_scan(major, minor) else {
        eprintln!(
            "skipped: {} is not on a block device ({major}:{minor})",
            dir.display()
        );
        return;
    };
    for path in [&dir, &file] {
        let limits = DeviceLimits::for_path(path).unwrap();
        println!("{}: {limits:#?}", path.display());
        assert_eq!(
            u64::from(limits.logical_block_size),
            read_u64(&queue, "logical_block_size")
        );
        assert_eq!(
            u64::from(limits.physical_block_size),
            read_u64(&queue, "physical_block_size")
        );
        assert_eq!(limits.optimal_io_size, read_u64(&queue, "optimal_io_size"));
        let by_size = read_u64(&queue, "max_sectors_kb") * 1024;
        let segments = read_u64(&queue, "max_segments");
        let page = page_size() as u64;
        assert_eq!(
            limits.max_page_aligned_transfer,
            by_size.min(segments * page)
        );
        assert_eq!(
            limits.max_non_page_aligned_transfer,
            by_size.min((segments - 1) * page)
        );
        assert_eq!(limits.sources.logical_block_size, Source::Sysfs);
        assert!(limits.device.is_some() && limits.note.is_none());
        assert!(limits.direct_io, "ext4 on a disk does O_DIRECT");

        // statx, asked directly.
        let stat = rustix::fs::statx(
            rustix::fs::CWD,
            path.as_path(),
            rustix::fs::AtFlags::empty(),
            rustix::fs::StatxFlags::DIOALIGN,
        )
        .unwrap();
        // (A directory has no DIOALIGN of its own; the library asks a temporary file
        // in it, which must agree with the regular file's.)
        let file_stat = rustix::fs::statx(
            rustix::fs::CWD,
            file.as_path(),
            rustix::fs::AtFlags::empty(),
            rustix::fs::StatxFlags::DIOALIGN,
        )
        .unwrap();
        let stat = if path.is_dir() { file_stat } else { stat };
        if stat.stx_mask & rustix::fs::StatxFlags::DIOALIGN.bits() != 0
            && stat.stx_dio_offset_align != 0
        {
            assert_eq!(limits.dio_mem_align, stat.stx_dio_mem_align);
            assert_eq!(limits.dio_offset_align, stat.stx_dio_offset_align);
            assert_eq!(limits.sources.dio_offset_align, Source::Statx);
        } else {
            assert_eq!(limits.dio_offset_align, limits.logical_block_size);
            assert_eq!(limits.sources.dio_offset_align, Source::Derived);
        }
        assert!(limits.alignment().is_power_of_two());
    }
}

#[test]
fn tmpfs_has_no_block_device_and_gets_safe_fallbacks() {
    let shm = Path::new("/dev/shm");
    let fstype = Command::new("findmnt")
        .args(["-n", "-o", "FSTYPE", "-T", "/dev/shm"])
        .output()
        // Mounts can be stacked on one point: the first line is the one in effect.
        .map(|o| {
            let text = String::from_utf8_lossy(&o.stdout).to_string();
            text.lines().next().unwrap_or("").trim().to_string()
        })
        .unwrap_or_default();
    if fstype != "tmpfs" {
        eprintln!("skipped: /dev/shm is not tmpfs here ({fstype:?})");
        return;
    }
    let limits = DeviceLimits::for_path(shm).unwrap();
    assert!(limits.device.is_none());
    let note = limits.note.as_deref().expect("the fallback is explained");
    assert!(note.contains("no block device"), "{note}");
    assert!(
        note.contains("tmpfs") && note.contains("memory"),
        "says why: {note}"
    );
    assert!(limits.devices.is_empty());
    assert_eq!(limits.logical_block_size, FALLBACK_ALIGNMENT);
    assert_eq!(limits.sources.logical_block_size, Source::Fallback);
    assert!(
        limits.dio_offset_align >= 512 && limits.alignment() != 512,
        "never a guessed 512"
    );
    assert_eq!(limits.sources.direct_io, Source::Probe);
    assert_eq!(
        limits.max_page_aligned_transfer,
        pagebuf::device::FALLBACK_TRANSFER
    );
}

#[test]
fn a_block_device_uses_its_own_queue() {
    if !is_root() {
        eprintln!("skipped: reading a raw block device needs root");
        return;
    }
    let (major, minor) = device_of(Path::new(env!("CARGO_TARGET_TMPDIR")));
    let Some(queue) = queue_by_scan(major, minor) else {
        eprintln!("skipped: the workspace is not on a block device");
        return;
    };
    let name = queue
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let dev = PathBuf::from("/dev").join(&name);
    if !dev.exists() {
        eprintln!("skipped: no {}", dev.display());
        return;
    }
    let limits = DeviceLimits::for_path(&dev).unwrap();
    let device = limits.device.as_ref().unwrap();
    assert_eq!(device.name, name);
    assert!(!device.partition);
    assert_eq!(
        u64::from(limits.logical_block_size),
        read_u64(&queue, "logical_block_size")
    );
    // Some sandboxes refuse to open disks at all, even to root (a device cgroup): then
    // O_DIRECT cannot work either, and the probe must say so.
    match std::fs::File::open(&dev) {
        Ok(_) => assert!(
            limits.direct_io,
            "{} opens, so O_DIRECT should",
            dev.display()
        ),
        Err(e) => {
            eprintln!(
                "{} cannot be opened here ({e}): direct_io must be false",
                dev.display()
            );
            assert!(!limits.direct_io);
        }
    }
}

#[test]
fn bad_paths_are_clear_errors() {
    let dir = scratch("bad_paths");
    let err = DeviceLimits::for_path(dir.join("missing")).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(err.to_string().contains("missing"), "{err}");

    let fifo = dir.join("fifo");
    support::make_fifo(&fifo);
    let err = DeviceLimits::for_path(&fifo).unwrap_err();
    assert!(matches!(err, Error::Unsupported(_)), "{err}");
    assert!(err.to_string().contains("Fifo"), "{err}");
}

#[test]
fn a_4096_byte_sector_loop_device_reports_4096() {
    if !is_root() {
        eprintln!("skipped: making a loop device needs root");
        return;
    }
    let dir = scratch("loop4k");
    let Some(disk) = LoopMount::new(&dir, 4096, 64 << 20) else {
        eprintln!("skipped: no loop device could be set up here");
        return;
    };
    let raw = DeviceLimits::for_path(&disk.device).unwrap();
    assert_eq!(raw.logical_block_size, 4096, "{raw:#?}");
    assert!(raw.device.as_ref().unwrap().name.starts_with("loop"));
    let fs = DeviceLimits::for_path(&disk.mount).unwrap();
    println!("{fs:#?}");
    assert_eq!(fs.logical_block_size, 4096);
    assert_eq!(
        fs.dio_offset_align, 4096,
        "4Kn: offsets in whole 4096-byte sectors"
    );
    assert!(fs.direct_io);
}

/// The figures `DeviceLimits` must report for a file system on the loop devices whose
/// queues are `queues`, read here independently (`/sys/block/loopN/queue`): the
/// strictest of them.
struct Expected {
    logical: u64,
    physical: u64,
    max_sectors_kb: u64,
    max_segments: u64,
    page_aligned: u64,
    non_page_aligned: u64,
}

fn expected(queues: &[PathBuf]) -> Expected {
    let logical = queues
        .iter()
        .map(|q| read_u64(q, "logical_block_size"))
        .max()
        .unwrap();
    let physical = queues
        .iter()
        .map(|q| read_u64(q, "physical_block_size"))
        .max()
        .unwrap();
    let max_sectors_kb = queues
        .iter()
        .map(|q| read_u64(q, "max_sectors_kb"))
        .min()
        .unwrap();
    let max_segments = queues
        .iter()
        .map(|q| read_u64(q, "max_segments"))
        .min()
        .unwrap();
    let page = page_size() as u64;
    Expected {
        logical,
        physical,
        max_sectors_kb,
        max_segments,
        page_aligned: (max_sectors_kb * 1024).min(max_segments * page),
        non_page_aligned: (max_sectors_kb * 1024).min((max_segments - 1) * page),
    }
}

fn assert_figures(limits: &DeviceLimits, want: &Expected) {
    assert_eq!(
        u64::from(limits.logical_block_size),
        want.logical,
        "{limits:#?}"
    );
    assert_eq!(
        u64::from(limits.physical_block_size),
        want.physical,
        "{limits:#?}"
    );
    assert_eq!(
        limits.max_page_aligned_transfer, want.page_aligned,
        "{limits:#?}"
    );
    assert_eq!(
        limits.max_non_page_aligned_transfer, want.non_page_aligned,
        "{limits:#?}"
    );
    assert_eq!(
        limits.sources.logical_block_size,
        Source::Sysfs,
        "{limits:#?}"
    );
    assert_eq!(limits.sources.physical_block_size, Source::Sysfs);
    assert_eq!(limits.sources.max_transfer, Source::Derived);
    assert_ne!(limits.sources.dio_offset_align, Source::Fallback);
    assert!(limits.dio_offset_align >= limits.logical_block_size);
}

/// A file with some data in `dir`, for the checks of a file beside the directory's.
fn file_in(dir: &Path) -> PathBuf {
    let file = dir.join("data");
    std::fs::write(&file, vec![7u8; 10_000]).unwrap();
    file
}

#[test]
fn btrfs_on_a_4096_byte_sector_loop_device_is_found_through_the_mount() {
    if !is_root() {
        eprintln!("skipped: making a loop device needs root");
        return;
    }
    let dir = scratch("btrfs4k");
    let Some(disk) = LoopMount::with_fs(&dir, "btrfs", &[4096], 256 << 20) else {
        return; // the reason is printed
    };
    let name = disk.name(0);
    let want = expected(&[disk.queue(0)]);
    println!(
        "btrfs on {name}: max_sectors_kb {}, max_segments {}, page {}: max transfer {} \
         (page-aligned), {} (not)",
        want.max_sectors_kb,
        want.max_segments,
        page_size(),
        want.page_aligned,
        want.non_page_aligned
    );
    // The premise: btrfs gives its files an anonymous device number.
    assert_eq!(device_of(&disk.mount).0, 0, "btrfs files have major 0");
    let file = file_in(&disk.mount);
    for path in [&disk.mount, &file] {
        let limits = DeviceLimits::for_path(path).unwrap();
        println!("{}: {limits:#?}", path.display());
        assert_eq!(limits.logical_block_size, 4096);
        assert_eq!(limits.physical_block_size, 4096);
        assert_figures(&limits, &want);
        let device = limits.device.as_ref().expect("the loop device is found");
        assert_eq!(device.name, name);
        assert_eq!(limits.devices.len(), 1);
        let via = device.via.as_deref().expect("found through the mount");
        assert!(
            via.contains("/sys/fs/btrfs/") && via.contains(&name),
            "{via}"
        );
        let note = limits.note.as_deref().expect("the note says how");
        assert!(
            note.starts_with("btrfs: device found through /sys/fs/btrfs/"),
            "{note}"
        );
        assert!(note.contains(&format!("({name})")), "{note}");
        assert!(limits.direct_io, "btrfs does O_DIRECT");
    }
}

#[test]
fn xfs_on_a_4096_byte_sector_loop_device_uses_its_device_number() {
    if !is_root() {
        eprintln!("skipped: making a loop device needs root");
        return;
    }
    let dir = scratch("xfs4k");
    // mkfs.xfs refuses file systems under 300 MiB; the image is sparse.
    let Some(disk) = LoopMount::with_fs(&dir, "xfs", &[4096], 320 << 20) else {
        return;
    };
    let name = disk.name(0);
    let want = expected(&[disk.queue(0)]);
    let file = file_in(&disk.mount);
    for path in [&disk.mount, &file] {
        let limits = DeviceLimits::for_path(path).unwrap();
        println!("{}: {limits:#?}", path.display());
        assert_eq!(limits.logical_block_size, 4096);
        assert_figures(&limits, &want);
        let device = limits.device.as_ref().unwrap();
        assert_eq!(device.name, name);
        assert_eq!(device.via, None, "XFS has a real device number");
        assert_eq!(limits.note, None);
        assert_eq!(limits.dio_offset_align, 4096);
        assert!(limits.direct_io);
    }
}

#[test]
fn a_two_device_btrfs_takes_the_strictest_figures_of_both() {
    if !is_root() {
        eprintln!("skipped: making a loop device needs root");
        return;
    }
    let dir = scratch("btrfs2");
    // Device 0: 1024-byte sectors, requests lowered to 64 KiB; device 1: 4096-byte
    // sectors, requests as the loop driver sets them. The strictest: 4096 from device 1,
    // 64 KiB from device 0.
    let Some(mut disk) = LoopMount::with_fs(&dir, "btrfs", &[1024, 4096], 256 << 20) else {
        return;
    };
    disk.set_max_sectors_kb(0, 64);
    let names = [disk.name(0), disk.name(1)];
    let want = expected(&[disk.queue(0), disk.queue(1)]);
    assert_eq!(want.logical, 4096);
    assert_eq!(read_u64(&disk.queue(0), "logical_block_size"), 1024);
    assert!(
        read_u64(&disk.queue(1), "max_sectors_kb") > 64,
        "device 1 allows more"
    );
    assert_eq!(want.max_sectors_kb, 64);
    println!(
        "two-device btrfs on {} and {}: strictest max_sectors_kb {} ({}), logical {} ({}): \
         max transfer {}",
        names[0],
        names[1],
        want.max_sectors_kb,
        names[0],
        want.logical,
        names[1],
        want.page_aligned
    );
    let file = file_in(&disk.mount);
    for path in [&disk.mount, &file] {
        let limits = DeviceLimits::for_path(path).unwrap();
        println!("{}: {limits:#?}", path.display());
        assert_figures(&limits, &want);
        assert_eq!(limits.max_page_aligned_transfer, 64 * 1024);
        let found: Vec<&str> = limits.devices.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found.contains(&names[0].as_str()) && found.contains(&names[1].as_str()));
        assert_eq!(
            limits.device.as_ref().unwrap().name,
            names[0],
            "the mount source first"
        );
        let note = limits.note.as_deref().unwrap();
        assert!(
            note.contains("btrfs: devices found through /sys/fs/btrfs/"),
            "{note}"
        );
        assert!(note.contains("strictest"), "{note}");
    }
}

#[test]
fn an_overlay_resolves_to_its_upper_layers_device() {
    if !is_root() {
        eprintln!("skipped: making a loop device needs root");
        return;
    }
    let dir = scratch("overlay");
    // Lower layer on btrfs, upper on ext4 whose loop device takes smaller requests, so
    // the two cannot be confused.
    let lower_dir = dir.join("lower");
    let upper_dir = dir.join("upper");
    std::fs::create_dir_all(&lower_dir).unwrap();
    std::fs::create_dir_all(&upper_dir).unwrap();
    let Some(lower) = LoopMount::with_fs(&lower_dir, "btrfs", &[4096], 256 << 20) else {
        return;
    };
    let Some(mut upper) = LoopMount::with_fs(&upper_dir, "ext4", &[4096], 64 << 20) else {
        return;
    };
    upper.set_max_sectors_kb(0, 128);
    std::fs::write(lower.mount.join("old"), vec![1u8; 5000]).unwrap();
    let Some(overlay) = OverlayMount::new(
        &lower.mount,
        &upper.mount.join("upper"),
        &upper.mount.join("work"),
        &dir.join("merged"),
    ) else {
        return;
    };
    let name = upper.name(0);
    let want = expected(&[upper.queue(0)]);
    assert_eq!(want.max_sectors_kb, 128);
    let new = file_in(&overlay.point);
    let old = overlay.point.join("old");
    for path in [&overlay.point, &new, &old] {
        let limits = DeviceLimits::for_path(path).unwrap();
        println!("{}: {limits:#?}", path.display());
        assert_figures(&limits, &want);
        assert_eq!(limits.device.as_ref().unwrap().name, name, "{limits:#?}");
        assert_eq!(limits.devices.len(), 1);
    }
    // The merged directory has the overlay's anonymous device: found through upperdir.
    let limits = DeviceLimits::for_path(&overlay.point).unwrap();
    let note = limits.note.as_deref().unwrap();
    assert!(
        note.starts_with("overlay: device found through upperdir") && note.contains(&name),
        "{note}"
    );

    // A read-only overlay (no upper layer) of both: the strictest of its lower layers'
    // devices (the ext4 one's smaller requests, the btrfs one's found through the mount).
    std::fs::create_dir_all(upper.mount.join("ro")).unwrap();
    let Some(read_only) = OverlayMount::read_only(
        &[&upper.mount.join("ro"), &lower.mount],
        &dir.join("read-only"),
    ) else {
        return;
    };
    let limits = DeviceLimits::for_path(&read_only.point).unwrap();
    println!("{}: {limits:#?}", read_only.point.display());
    assert_figures(&limits, &expected(&[upper.queue(0), lower.queue(0)]));
    let found: Vec<&str> = limits.devices.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(found, [name.as_str(), lower.name(0).as_str()]);
    let note = limits.note.as_deref().unwrap();
    assert!(
        note.starts_with("overlay: devices found through lowerdir"),
        "{note}"
    );
    assert!(
        note.contains("btrfs: device found through /sys/fs/btrfs/"),
        "{note}"
    );
}

#[test]
fn a_network_or_memory_file_system_says_why_it_has_no_device() {
    let limits = DeviceLimits::for_path("/proc/self").unwrap();
    let note = limits.note.as_deref().unwrap();
    assert!(
        note.contains("no block device") && note.contains("proc"),
        "{note}"
    );
    assert_eq!(limits.sources.max_transfer, Source::Fallback);
    assert!(limits.devices.is_empty());
}
