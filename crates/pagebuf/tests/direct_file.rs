//! `DirectFile` on the real disk (in cargo's temporary directory under `target/`),
//! and, as root, on a 4096-byte-sector loop device.

use pagebuf::direct::{DirectFile, DirectIo};
use pagebuf::{BufferAllocator, BufferMut, Error, Misalignment, PageAllocator};

mod support;
use support::{scratch, LoopMount};

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// The `(value, required)` of a `Misaligned` error about `what`; fails on any other error.
fn misaligned(err: &Error, what: Misalignment) -> (u64, u64) {
    match err {
        Error::Misaligned {
            what: found,
            value,
            required,
        } if *found == what => (*value, *required),
        other => panic!("expected a misaligned {what:?}, got {other}"),
    }
}

fn page_buffer(len: usize) -> BufferMut {
    PageAllocator::default().allocate_page_aligned(len).unwrap()
}

/// Writes `data` through `file` with pad-and-truncate: whole blocks, the last one
/// padded, then the length cut to `data.len()`.
fn write_padded(file: &DirectFile, data: &[u8]) {
    let unit = file.limits().alignment() as usize;
    let padded = data.len().div_ceil(unit).max(1) * unit;
    let mut block = page_buffer(padded);
    block.extend_from_slice(data).unwrap();
    block.set_len(padded).unwrap();
    block[data.len()..].fill(0);
    assert_eq!(file.write_at(&block, 0).unwrap(), padded);
    file.set_len(data.len() as u64).unwrap();
    file.sync_data().unwrap();
}

#[test]
fn aligned_io_round_trips_and_large_transfers_are_split() {
    let dir = scratch("round_trip");
    let file = DirectFile::create(dir.join("data")).unwrap();
    assert!(
        file.is_direct(),
        "ext4 on a disk does O_DIRECT: {:?}",
        file.fallback_note()
    );
    // 8 MiB: several times the device's largest single request on this machine.
    let len = 8 << 20;
    assert!(len as u64 > file.limits().max_page_aligned_transfer);
    let data = pattern(len, 3);
    let mut out = page_buffer(len);
    out.extend_from_slice(&data).unwrap();
    assert_eq!(file.write_at(&out, 0).unwrap(), len);
    file.sync_data().unwrap();
    assert_eq!(file.len().unwrap(), len as u64);

    let mut back = page_buffer(len);
    assert_eq!(file.read_at(&mut back, 0).unwrap(), len);
    assert!(back[..] == data[..], "8 MiB read back differs");
    assert_eq!(
        std::fs::read(file.path()).unwrap(),
        data,
        "visible to buffered readers"
    );

    // An offset in the middle, in whole blocks.
    let unit = file.limits().alignment() as usize;
    let mut middle = page_buffer(4 * unit);
    assert_eq!(
        file.read_at(&mut middle, (10 * unit) as u64).unwrap(),
        4 * unit
    );
    assert_eq!(&middle[..], &data[10 * unit..14 * unit]);
}

#[test]
fn misaligned_address_offset_and_length_are_refused_before_the_kernel() {
    let dir = scratch("misaligned");
    let file = DirectFile::create(dir.join("data")).unwrap();
    assert!(file.is_direct());
    let unit = file.limits().alignment() as usize;
    let mem = file.limits().dio_mem_align as usize;
    let mut big = page_buffer(4 * unit);
    big.set_len(4 * unit).unwrap();

    // Address: a view starting one byte into a page-aligned buffer.
    let shifted = &big[1..1 + 2 * unit];
    match file.write_at(shifted, 0) {
        Err(Error::Misaligned {
            what: Misalignment::Address,
            required,
            ..
        }) if mem > 1 => assert_eq!(required as usize, mem),
        other if mem == 1 => assert!(other.is_ok(), "byte-aligned memory is allowed: {other:?}"),
        other => panic!("expected a misaligned address, got {other:?}"),
    }
    // Offset.
    let err = file.write_at(&big[..unit], 1).unwrap_err();
    assert_eq!(misaligned(&err, Misalignment::Offset).0, 1);
    assert!(err.to_string().contains("file offset"), "{err}");
    // Length.
    let err = file.write_at(&big[..unit + 1], 0).unwrap_err();
    misaligned(&err, Misalignment::Length);
    // And the same rules for reads.
    let mut odd = PageAllocator::default()
        .allocate_page_aligned(unit + 1)
        .unwrap();
    let err = file.read_at(&mut odd, 0).unwrap_err();
    misaligned(&err, Misalignment::Length);
    assert_eq!(file.len().unwrap(), 0, "nothing reached the file");
}

#[test]
fn reads_across_end_of_file_return_the_short_count() {
    let dir = scratch("short_read");
    let path = dir.join("data");
    let data = pattern(10_000, 9);
    std::fs::write(&path, &data).unwrap();
    let file = DirectFile::open(&path).unwrap();
    let unit = file.limits().alignment() as usize;
    let mut buf = page_buffer(16 * unit.max(1024));
    let n = file.read_at(&mut buf, 0).unwrap();
    assert_eq!(n, 10_000);
    assert_eq!((buf.len(), &buf[..]), (10_000, &data[..]));
    // Entirely past the end: nothing.
    let mut past = page_buffer(unit);
    let beyond = (10_000usize.div_ceil(unit) + 1) * unit;
    assert_eq!(file.read_at(&mut past, beyond as u64).unwrap(), 0);
    assert!(past.is_empty());
}

#[test]
fn odd_lengths_are_finished_by_pad_and_truncate() {
    let dir = scratch("odd_lengths");
    for (i, len) in [1usize, 4095, 4097, (1 << 20) + 1].into_iter().enumerate() {
        let path = dir.join(format!("odd-{len}"));
        let data = pattern(len, i as u8);
        let file = DirectFile::create(&path).unwrap();
        write_padded(&file, &data);
        assert_eq!(file.len().unwrap(), len as u64);
        assert_eq!(
            std::fs::read(&path).unwrap(),
            data,
            "{len} bytes byte-exact"
        );
        let reader = DirectFile::open(&path).unwrap();
        let unit = reader.limits().alignment() as usize;
        let mut back = page_buffer(len.div_ceil(unit) * unit);
        assert_eq!(reader.read_at(&mut back, 0).unwrap(), len);
        assert_eq!(&back[..], &data[..]);
    }
}

#[test]
fn bad_paths_are_clear_errors() {
    let dir = scratch("bad_paths");
    let err = DirectFile::open(dir.join("missing")).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(err.to_string().contains("missing"), "{err}");

    let err = DirectFile::create(&dir).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(err.to_string().contains("read-write"), "{err}");

    let fifo = dir.join("fifo");
    support::make_fifo(&fifo);
    // Must not block in open(2).
    let err = DirectFile::open(&fifo).unwrap_err();
    assert!(matches!(err, Error::Unsupported(_)), "{err}");

    let err = DirectFile::options()
        .read(false)
        .open(dir.join("x"))
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    let err = DirectFile::options()
        .create(true)
        .open(dir.join("x"))
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
}

#[test]
fn direct_io_off_is_buffered_and_accepts_anything() {
    let dir = scratch("off");
    let file = DirectFile::options()
        .write(true)
        .create(true)
        .direct(DirectIo::Off)
        .open(dir.join("data"))
        .unwrap();
    assert!(!file.is_direct());
    assert!(
        file.fallback_note().is_none(),
        "off by choice is not a fallback"
    );
    assert_eq!(file.write_at(b"unaligned", 3).unwrap(), 9);
    assert_eq!(file.len().unwrap(), 12);
}

#[test]
fn a_4096_byte_sector_device_refuses_512_byte_alignment() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: making a loop device needs root");
        return;
    }
    let dir = scratch("loop4k");
    let Some(disk) = LoopMount::new(&dir, 4096, 64 << 20) else {
        eprintln!("skipped: no loop device could be set up here");
        return;
    };
    let file = DirectFile::create(disk.mount.join("data")).unwrap();
    assert!(file.is_direct());
    assert_eq!(file.limits().dio_offset_align, 4096);
    let mut block = page_buffer(8192);
    block.set_len(8192).unwrap();
    let err = file.write_at(&block[..512], 0).unwrap_err();
    assert_eq!(misaligned(&err, Misalignment::Length).1, 4096);
    let err = file.write_at(&block[..4096], 512).unwrap_err();
    assert_eq!(misaligned(&err, Misalignment::Offset).1, 4096);
    assert_eq!(file.write_at(&block[..4096], 4096).unwrap(), 4096);
    file.sync_data().unwrap();
    assert_eq!(file.len().unwrap(), 8192);

    // The device under a mount is in use: a writer is refused (O_EXCL), never let loose
    // on a mounted file system; a reader sees the device's whole size, never 0.
    let err = DirectFile::create(&disk.device).unwrap_err();
    assert!(matches!(err, Error::InvalidRequest(_)), "{err}");
    assert!(err.to_string().contains("in use"), "{err}");
    let device = DirectFile::open(&disk.device).unwrap();
    assert!(device.is_block_device());
    assert_eq!(device.len().unwrap(), 64 << 20);
    assert!(matches!(device.set_len(0), Err(Error::InvalidRequest(_))));
    drop(file);
    assert_eq!(
        std::fs::metadata(disk.mount.join("data")).unwrap().len(),
        8192
    );
}

/// A mount made by a test (`mount ARGS... TARGET`), unmounted on drop.
struct TestMount(std::path::PathBuf);

impl TestMount {
    fn new(args: &[&str], target: &std::path::Path) -> Option<TestMount> {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: mounting needs root");
            return None;
        }
        std::fs::create_dir_all(target).ok()?;
        let ok = std::process::Command::new("mount")
            .args(args)
            .arg(target)
            .status()
            .ok()?
            .success();
        if !ok {
            eprintln!("skipped: mount {args:?} failed here");
        }
        ok.then(|| TestMount(target.to_path_buf()))
    }
}

impl Drop for TestMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn the_policy_decides_where_o_direct_is_refused() {
    // ramfs has no O_DIRECT (tmpfs on recent kernels accepts it, so cannot show this).
    let dir = scratch("policy");
    let Some(ram) = TestMount::new(&["-t", "ramfs", "ramfs"], &dir.join("ram")) else {
        return;
    };
    let path = ram.0.join("file");
    let limits = pagebuf::DeviceLimits::for_path(&ram.0).unwrap();
    assert!(!limits.direct_io, "ramfs refuses O_DIRECT: {limits:?}");
    assert!(limits.note.is_some(), "no block device behind ramfs");

    let err = DirectFile::options()
        .write(true)
        .create(true)
        .direct(DirectIo::Require)
        .open(&path)
        .unwrap_err();
    assert!(matches!(err, Error::Unsupported(_)), "{err}");
    assert!(err.to_string().contains("DirectIo::Prefer"), "{err}");

    let file = DirectFile::options()
        .write(true)
        .create(true)
        .direct(DirectIo::Prefer)
        .open(&path)
        .unwrap();
    assert!(!file.is_direct());
    let note = file.fallback_note().expect("the fallback is reported");
    assert!(note.contains("buffered"), "{note}");
    assert_eq!(file.write_at(b"odd length, odd offset", 3).unwrap(), 22);
}

#[test]
fn a_read_only_file_system_refuses_writing_clearly() {
    let dir = scratch("read_only");
    let source = dir.join("source");
    std::fs::create_dir_all(&source).unwrap();
    std::fs::write(source.join("file"), b"data").unwrap();
    let target = dir.join("ro");
    let Some(bind) = TestMount::new(&["--bind", source.to_str().unwrap()], &target) else {
        return;
    };
    let remounted = std::process::Command::new("mount")
        .args(["-o", "remount,bind,ro"])
        .arg(&bind.0)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !remounted {
        eprintln!("skipped: could not make the bind mount read-only");
        return;
    }
    let err = DirectFile::options()
        .write(true)
        .open(bind.0.join("file"))
        .unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("read-write") && text.contains("Read-only file system"),
        "{text}"
    );
    // Reading still works.
    assert!(DirectFile::open(bind.0.join("file")).is_ok());
}

#[test]
fn allocate_reserves_space_and_grows_the_file() {
    let dir = support::scratch("direct-allocate");
    let file = DirectFile::create(dir.join("reserved")).unwrap();
    file.allocate(0, 4 << 20).unwrap();
    assert_eq!(file.len().unwrap(), 4 << 20);
    // Reserved, not written: the space is allocated on disk but reads as zeroes.
    let blocks = std::fs::metadata(dir.join("reserved")).map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.blocks()
    });
    assert!(blocks.unwrap() * 512 >= 4 << 20);
    let mut buf = pagebuf::PageAllocator::default()
        .allocate_page_aligned(4096)
        .unwrap();
    assert_eq!(file.read_at(&mut buf, 1 << 20).unwrap(), 4096);
    assert!(buf.iter().all(|&b| b == 0));
}
