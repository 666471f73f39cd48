//! `DeviceLimits::for_path` against the machine itself: figures cross-checked with an
//! independent walk of `/sys/block` and a direct `statx`, on the real disk (in cargo's
//! per-test temporary directory under `target/`, not `/tmp`, which may be tmpfs), on
//! tmpfs, on a raw block device, and on a 4096-byte-sector loop device with ext4 (root).

use std::path::{Path, PathBuf};
use std::process::Command;

use pagebuf::device::{Source, FALLBACK_ALIGNMENT};
use pagebuf::{page_size, DeviceLimits, Error};

mod support;
use support::{scratch, LoopMount};

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
