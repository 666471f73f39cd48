//! `copy_file`: byte-exact copies of odd lengths, verification, bounded memory, and
//! every refusal.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use pagebuf::copy::{copy_file, CopyOptions, CopyRoad, Reflink};
use pagebuf::direct::DirectIo;
use pagebuf::{
    DeviceLimits, DirectFile, Error, SampleFlags, SampleReader, SampleWriter, StreamKind,
};
use support::{pattern, scratch, within, LoopMount};

/// How long a copy of a few MiB may take before the test calls it hung.
const HANG: Duration = Duration::from_secs(60);

fn copy(
    src: &std::path::Path,
    dst: &std::path::Path,
    options: &CopyOptions,
) -> pagebuf::Result<pagebuf::copy::CopyReport> {
    copy_file(src, dst, options, &mut |_, _| {})
}

#[test]
fn odd_lengths_copy_byte_exact() {
    let dir = scratch("copy-odd");
    for (i, len) in [0usize, 1, 4095, 4096, 4097, (1 << 20) + 1, (5 << 20) + 3]
        .into_iter()
        .enumerate()
    {
        let (src, dst) = (dir.join(format!("src{i}")), dir.join(format!("dst{i}")));
        let bytes = pattern(i as u64, len);
        std::fs::write(&src, &bytes).unwrap();
        let mut calls = Vec::new();
        let report = copy_file(
            &src,
            &dst,
            &CopyOptions::default().verify(true),
            &mut |done, total| calls.push((done, total)),
        )
        .unwrap();
        assert_eq!(report.bytes, len as u64);
        assert!(report.verified);
        assert_eq!(report.checksum, Some(crc32c_of(&bytes)));
        assert!(std::fs::read(&dst).unwrap() == bytes, "length {len}");
        assert_eq!(
            calls.last().copied().unwrap_or((0, 0)),
            (len as u64, len as u64)
        );
    }
}

fn crc32c_of(bytes: &[u8]) -> u32 {
    // The reference: bitwise CRC32C, independent of the library's implementation.
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn memory_stays_within_the_pool_whatever_the_size() {
    let dir = scratch("copy-bounded");
    let (src, dst) = (dir.join("big"), dir.join("copy"));
    std::fs::write(&src, pattern(9, 64 << 20)).unwrap();
    let options = CopyOptions::default().block_size(256 << 10).depth(2);
    let report = copy(&src, &dst, &options).unwrap();
    let mapped = report.pool.mapped_bytes();
    assert_eq!(report.pool.budget, (256 << 10) * 8);
    assert!(
        mapped <= report.pool.budget,
        "{mapped} bytes mapped, budget {}",
        report.pool.budget
    );
    assert_eq!(report.pool.bytes_out, 0);
    assert!(std::fs::read(&dst).unwrap() == std::fs::read(&src).unwrap());
}

#[test]
fn bad_requests_are_refused_with_what_to_change() {
    let dir = scratch("copy-refusals");
    let src = dir.join("src");
    std::fs::write(&src, b"data").unwrap();
    let defaults = CopyOptions::default();
    let missing = copy(&dir.join("missing"), &dir.join("x"), &defaults).unwrap_err();
    assert!(
        matches!(&missing, Error::Io { context, .. } if context.contains("missing")),
        "{missing}"
    );
    let from_dir = copy(&dir, &dir.join("x"), &defaults).unwrap_err();
    assert!(
        matches!(&from_dir, Error::InvalidArgument(m) if m.contains("not a regular file")),
        "{from_dir}"
    );
    let into_dir = copy(&src, &dir, &defaults).unwrap_err();
    assert!(matches!(&into_dir, Error::Io { .. }), "{into_dir}");
    let same = copy(&src, &src, &defaults).unwrap_err();
    assert!(
        matches!(&same, Error::InvalidArgument(m) if m.contains("same file")),
        "{same}"
    );
    assert_eq!(std::fs::read(&src).unwrap(), b"data", "the source survives");
    let depth = copy(&src, &dir.join("x"), &CopyOptions::default().depth(0)).unwrap_err();
    assert!(matches!(depth, Error::InvalidArgument(_)));
    let block = copy(
        &src,
        &dir.join("x"),
        &CopyOptions::default().block_size(1000),
    )
    .unwrap_err();
    assert!(
        matches!(&block, Error::InvalidArgument(m) if m.contains("multiple of")),
        "{block}"
    );
}

#[test]
fn copies_onto_a_4096_byte_sector_device_and_back() {
    let dir = scratch("copy-4k");
    let Some(disk) = LoopMount::new(&dir, 4096, 64 << 20) else {
        return;
    };
    let src = dir.join("src");
    let bytes = pattern(4, (3 << 20) + 513);
    std::fs::write(&src, &bytes).unwrap();
    let there = disk.mount.join("copy");
    let report = copy(&src, &there, &CopyOptions::default().verify(true)).unwrap();
    assert!(report.direct.1, "direct I/O on the loop device");
    assert_eq!(report.block_size % 4096, 0);
    let back = dir.join("back");
    copy(&there, &back, &CopyOptions::default().verify(true)).unwrap();
    assert!(std::fs::read(&back).unwrap() == bytes);
    // 512-byte blocks cannot be written there.
    let err = copy(
        &src,
        &disk.mount.join("bad"),
        &CopyOptions::default().block_size(512),
    )
    .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument(m) if m.contains("4096")),
        "{err}"
    );
    assert!(
        !disk.mount.join("bad").exists(),
        "a refused copy created its destination"
    );
    // Checked against both files, before either destination is touched: an existing
    // file on the 4096-byte device, and one here copied from there.
    let kept = pattern(5, 5000);
    for (from, to) in [(&src, disk.mount.join("kept")), (&there, dir.join("kept"))] {
        std::fs::write(&to, &kept).unwrap();
        let err = copy(from, &to, &CopyOptions::default().block_size(512)).unwrap_err();
        assert!(
            std::fs::read(&to).unwrap() == kept,
            "{} was changed: {err}",
            to.display()
        );
        assert!(
            matches!(&err, Error::InvalidArgument(m) if m.contains("4096")),
            "{err}"
        );
    }
}

// Issue 12, defect 1: a block size under one page hung the copy for ever (the pool was
// budgeted in blocks but served whole pages, so one read ahead held all of it).

#[test]
fn blocks_under_a_page_complete_byte_exact() {
    let dir = scratch("copy-small-blocks");
    let alignment = DeviceLimits::for_path(&dir).unwrap().alignment() as usize;
    for (i, len) in [10_000usize, (3 << 20) + 7].into_iter().enumerate() {
        let src = dir.join(format!("src{i}"));
        let bytes = pattern(100 + i as u64, len);
        std::fs::write(&src, &bytes).unwrap();
        for block in [512usize, 1024, 2048] {
            // The hang is in the pool, not in O_DIRECT: where the file system's alignment
            // refuses such blocks, copy them buffered.
            let direct = if block % alignment == 0 {
                DirectIo::Prefer
            } else {
                eprintln!("{block}-byte blocks copied buffered: the alignment here is {alignment}");
                DirectIo::Off
            };
            let dst = dir.join(format!("dst{i}-{block}"));
            let options = CopyOptions::default()
                .block_size(block)
                .verify(true)
                .direct(direct);
            let (from, to) = (src.clone(), dst.clone());
            let report = within(
                HANG,
                &format!("a copy of {len} bytes in {block}-byte blocks"),
                move || copy(&from, &to, &options),
            )
            .unwrap();
            assert_eq!((report.bytes, report.block_size), (len as u64, block));
            assert!(report.verified);
            assert!(
                std::fs::read(&dst).unwrap() == bytes,
                "{len} bytes in {block}-byte blocks"
            );
            // Memory stays bounded: the pool counts the pages each block really takes.
            assert!(report.pool.mapped_bytes() <= report.pool.budget);
            assert!(report.pool.budget <= pagebuf::page_size() * (3 * 4 + 2));
        }
    }
}

// Issue 12, defect 2: a block device copied 0 bytes and said "verified"; a copy onto a
// device failed on set_len after writing.

/// A loop device (4096-byte sectors) over an image of `len` bytes of `pattern(seed)`
/// in `dir`; `None` (reason printed) where loop devices cannot be made.
fn pattern_device(dir: &Path, len: usize, seed: u64) -> Option<(LoopMount, Vec<u8>)> {
    let image = dir.join("device.img");
    let bytes = pattern(seed, len);
    std::fs::write(&image, &bytes).unwrap();
    let device = LoopMount::raw(&image, 4096)?;
    Some((device, bytes))
}

/// All the bytes of block device `device`, and its size found by seeking to its end.
fn device_bytes(device: &str) -> (Vec<u8>, u64) {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(device).unwrap();
    let size = file.seek(SeekFrom::End(0)).unwrap();
    file.seek(SeekFrom::Start(0)).unwrap();
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).unwrap();
    (bytes, size)
}

#[test]
fn a_block_device_is_copied_to_its_size() {
    let dir = scratch("copy-from-device");
    let len = (4 << 20) + 4096;
    let Some((device, bytes)) = pattern_device(&dir, len, 21) else {
        return;
    };
    let out = dir.join("out");
    let mut last = (0, 0);
    let report = copy_file(
        &device.device,
        &out,
        &CopyOptions::default().verify(true),
        &mut |done, total| last = (done, total),
    )
    .unwrap();
    assert_eq!(
        report.bytes, len as u64,
        "the device's size, not its st_size of 0"
    );
    assert!(report.verified);
    assert_eq!(
        last,
        (len as u64, len as u64),
        "progress counts to the device's size"
    );
    assert_eq!(report.checksum, Some(crc32c_of(&bytes)));
    assert!(
        std::fs::read(&out).unwrap() == bytes,
        "the copy is the device's bytes"
    );
}

#[test]
fn a_file_copied_onto_a_device_keeps_the_device_size_and_the_bytes_past_it() {
    let dir = scratch("copy-onto-device");
    let size = (4 << 20) + 4096;
    let Some((device, before)) = pattern_device(&dir, size, 22) else {
        return;
    };
    let src = dir.join("src");
    let data = pattern(23, 10_000);
    std::fs::write(&src, &data).unwrap();
    let report = copy(
        &src,
        Path::new(&device.device),
        &CopyOptions::default().verify(true),
    )
    .unwrap();
    assert_eq!(report.bytes, 10_000);
    assert!(report.verified);
    let (after, after_size) = device_bytes(&device.device);
    assert_eq!(after_size, size as u64, "a device is never cut");
    assert_eq!(after.len(), size);
    assert!(after[..10_000] == data[..], "the file's bytes come first");
    // 10,000 bytes end inside the third 4096-byte block: the rest of that block, and
    // every block after it, is the device's own.
    assert!(
        after[10_000..12_288] == before[10_000..12_288],
        "the tail block is padded with the device's bytes"
    );
    assert!(
        after[12_288..] == before[12_288..],
        "the device past the copy is untouched"
    );

    // A source larger than the device: refused before anything is written.
    let big = dir.join("big");
    std::fs::write(&big, pattern(24, size + 4096)).unwrap();
    let err = copy(&big, Path::new(&device.device), &CopyOptions::default()).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument(m) if m.contains(&device.device)),
        "{err}"
    );
    let (unchanged, unchanged_size) = device_bytes(&device.device);
    assert_eq!(unchanged_size, size as u64);
    assert!(
        unchanged == after,
        "a refused copy leaves the device untouched"
    );
}

// Issue 12, defect 3: files whose size lies were copied empty (procfs) or half (sysfs);
// a source that grew was reported as "shrank".

#[test]
fn pseudo_files_are_refused_naming_their_file_system() {
    let dir = scratch("copy-pseudo");
    let sysfs = [
        "/sys/kernel/mm/transparent_hugepage/enabled",
        "/sys/block/loop0/queue/logical_block_size",
        "/sys/kernel/uevent_seqnum",
    ]
    .into_iter()
    .map(PathBuf::from)
    .chain(
        std::fs::read_dir("/sys/block")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("queue/logical_block_size")),
    )
    .find(|p| p.is_file())
    .expect("a sysfs file");
    for (src, fs) in [
        (Path::new("/proc/self/status"), "procfs"),
        (&sysfs, "sysfs"),
    ] {
        let dst = dir.join("out");
        let err = copy(src, &dst, &CopyOptions::default()).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidArgument(m) if m.contains(fs) && m.contains(&src.display().to_string())),
            "{}: {err}",
            src.display()
        );
        assert!(
            !dst.exists(),
            "{}: a refused copy left {}",
            src.display(),
            dst.display()
        );
    }
}

/// What a copy did while another thread changed its source.
enum Raced {
    /// The copy failed with this error, and left no destination.
    Failed(Error),
    /// The change came too late: every copy was byte-exact.
    Missed,
}

/// Copies a 24 MiB source slowly (4 KiB blocks, depth 1) while another thread runs
/// `change` on it once the first block is copied (the copy waits for it, so the change
/// lands mid-copy); up to 5 tries until a copy fails. A copy that succeeds must be
/// byte-exact with the source as it then is.
fn copy_while_changing(name: &str, change: fn(&Path)) -> Raced {
    let dir = scratch(name);
    let (src, dst) = (dir.join("src"), dir.join("dst"));
    for attempt in 0..5 {
        std::fs::write(&src, pattern(30 + attempt, 24 << 20)).unwrap();
        let (go, started) = std::sync::mpsc::channel::<()>();
        let (changed, done) = std::sync::mpsc::channel::<()>();
        let path = src.clone();
        let changer = std::thread::spawn(move || {
            if started.recv().is_ok() {
                change(&path);
                let _ = changed.send(());
            }
        });
        let mut go = Some(go);
        let options = CopyOptions::default().block_size(4096).depth(1);
        let result = copy_file(&src, &dst, &options, &mut |_, _| {
            if let Some(go) = go.take() {
                go.send(()).unwrap();
                done.recv_timeout(HANG).expect("the change is made");
            }
        });
        drop(go);
        changer.join().unwrap();
        match result {
            Err(err) => {
                assert!(!dst.exists(), "a failed copy left {}: {err}", dst.display());
                return Raced::Failed(err);
            }
            Ok(report) => {
                let now = std::fs::read(&src).unwrap();
                assert_eq!(report.bytes, now.len() as u64, "try {attempt}");
                assert!(
                    std::fs::read(&dst).unwrap() == now,
                    "try {attempt}: not byte-exact"
                );
            }
        }
    }
    eprintln!(
        "{name}: the change never landed during a copy in 5 tries; every copy was byte-exact"
    );
    Raced::Missed
}

#[test]
fn a_source_that_grows_while_copied_is_an_error_that_says_grew() {
    let grow = |path: &Path| {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
        file.write_all(&pattern(40, 1 << 20)).unwrap();
    };
    if let Raced::Failed(err) = copy_while_changing("copy-grows", grow) {
        assert!(matches!(&err, Error::Io { .. }), "{err}");
        assert!(err.to_string().contains("grew"), "{err}");
    }
}

#[test]
fn a_source_that_shrinks_while_copied_is_an_error_that_says_shrank() {
    let shrink = |path: &Path| {
        let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        file.set_len(8 << 20).unwrap();
    };
    if let Raced::Failed(err) = copy_while_changing("copy-shrinks", shrink) {
        assert!(matches!(&err, Error::Io { .. }), "{err}");
        assert!(err.to_string().contains("shrank"), "{err}");
    }
}

// Issue 12, defect 4: a refused or failed copy damaged the destination (truncated it,
// or left a 64 MiB reservation); hostile knobs panicked or aborted.

#[test]
fn refused_options_leave_the_destination_as_it_was() {
    let dir = scratch("copy-refused-untouched");
    let src = dir.join("src");
    std::fs::write(&src, pattern(50, 100_000)).unwrap();
    let kept = pattern(51, 12_345);
    let defaults = CopyOptions::default();
    let cases = [
        ("block_size", defaults.clone().block_size(513)),
        ("block_size", defaults.clone().block_size(0)),
        ("block_size", defaults.clone().block_size(usize::MAX)),
        ("depth", defaults.clone().depth(0)),
        ("depth", defaults.clone().depth(usize::MAX)),
        ("depth", defaults.clone().depth(1 << 40)),
    ];
    for (i, (option, options)) in cases.into_iter().enumerate() {
        let existing = dir.join(format!("existing{i}"));
        std::fs::write(&existing, &kept).unwrap();
        let err = copy(&src, &existing, &options).unwrap_err();
        assert!(
            std::fs::read(&existing).unwrap() == kept,
            "{options:?} changed the destination: {err}"
        );
        assert!(
            matches!(&err, Error::InvalidArgument(m) if m.contains(&format!("CopyOptions::{option}"))),
            "{options:?}: {err}"
        );
        let absent = dir.join(format!("absent{i}"));
        let err = copy(&src, &absent, &options).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidArgument(_)),
            "{options:?}: {err}"
        );
        assert!(!absent.exists(), "{options:?} created {}", absent.display());
    }
}

/// Free bytes of the file system at `path`.
fn free_bytes(path: &Path) -> u64 {
    let stat = rustix::fs::statvfs(path).unwrap();
    stat.f_bfree * stat.f_frsize
}

#[test]
fn a_copy_that_fills_the_disk_fails_and_gives_the_space_back() {
    let dir = scratch("copy-enospc");
    let Some(disk) = LoopMount::new(&dir, 4096, 16 << 20) else {
        return;
    };
    let src = dir.join("src");
    std::fs::write(&src, pattern(60, 64 << 20)).unwrap();
    let free = free_bytes(&disk.mount);
    for (what, dst) in [
        ("new", disk.mount.join("copy")),
        ("existing", disk.mount.join("old")),
    ] {
        if what == "existing" {
            std::fs::write(&dst, pattern(61, 8192)).unwrap();
        }
        let free = free_bytes(&disk.mount);
        let err = copy(&src, &dst, &CopyOptions::default()).unwrap_err();
        assert!(
            matches!(&err, Error::Io { source, .. } if source.raw_os_error() == Some(28)),
            "{what}: expected ENOSPC, got {err}"
        );
        if what == "new" {
            assert!(!dst.exists(), "a failed copy left the file it created");
        } else {
            assert_eq!(
                std::fs::metadata(&dst).unwrap().len(),
                0,
                "an existing file is cut back to empty"
            );
        }
        // The blocks come back once the file is closed and removed (or emptied).
        let slack = 256 << 10;
        let mut now = free_bytes(&disk.mount);
        for _ in 0..50 {
            if now + slack >= free {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
            now = free_bytes(&disk.mount);
        }
        assert!(
            now + slack >= free,
            "{what}: {now} bytes free after the failed copy, {free} before"
        );
    }
    assert!(free_bytes(&disk.mount) + (256 << 10) >= free);
}

const SECOND_WRITER: &str = "a_second_writer_is_refused_and_the_first_keeps_its_file";

/// Runs in a child process of its own: the lock a writer holds goes only with the last
/// reference to its open file description, and a fork by another test's thread (the
/// loop-device tests run `mkfs`) holds one until its child execs, which under ASan took
/// long enough to make "once let go, it copies" fail.
#[test]
fn a_second_writer_is_refused_and_the_first_keeps_its_file() {
    if !support::in_child(SECOND_WRITER) {
        support::child_reached(
            support::run_child_within(SECOND_WRITER, &[]),
            &["second writer: done"],
        );
        return;
    }
    let dir = scratch("copy-second-writer");
    let src = dir.join("src");
    std::fs::write(&src, pattern(70, 300_000)).unwrap();

    // A file held open for writing (no truncation) by a DirectFile.
    let held = dir.join("held");
    let kept = pattern(71, 50_000);
    std::fs::write(&held, &kept).unwrap();
    let holder = DirectFile::options()
        .write(true)
        .exclusive(true)
        .open(&held)
        .unwrap();
    let err = copy(&src, &held, &CopyOptions::default()).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidRequest(m) if m.contains("held")),
        "{err}"
    );
    assert!(
        std::fs::read(&held).unwrap() == kept,
        "the holder's file was changed"
    );
    drop(holder);
    copy(&src, &held, &CopyOptions::default()).unwrap();
    assert!(
        std::fs::read(&held).unwrap() == std::fs::read(&src).unwrap(),
        "once let go, it copies"
    );

    // A recording in progress.
    let take = dir.join("take.pbs");
    let writer = SampleWriter::create(&take).unwrap();
    let audio = writer.add_stream(StreamKind::Audio).unwrap();
    writer.begin_writing().unwrap();
    let mut packet = writer.allocate_sample(4096).unwrap();
    packet.extend_from_slice(&pattern(72, 4096)).unwrap();
    writer
        .write_sample(audio, 0, SampleFlags::empty(), packet)
        .unwrap();
    writer.end_writing().unwrap();
    let recorded = std::fs::read(&take).unwrap();
    let err = copy(&src, &take, &CopyOptions::default()).unwrap_err();
    assert!(matches!(&err, Error::InvalidRequest(_)), "{err}");
    assert!(
        std::fs::read(&take).unwrap() == recorded,
        "the recording was changed"
    );
    drop(writer);
    let mut reader = SampleReader::open(&take).unwrap();
    let sample = reader.next().unwrap().unwrap();
    assert!(sample.data[..] == pattern(72, 4096)[..]);
    println!("second writer: done");
}

/// On a file system that clones (XFS, btrfs), `Reflink::Auto` shares the source's
/// blocks: the report says so, the bytes are the source's, and the copy stays a copy
/// (writing to it leaves the source as it was). `Reflink::Never` moves the bytes there.
fn reflinks_on(fs: &str) {
    let dir = scratch(&format!("copy-reflink-{fs}"));
    let Some(disk) = LoopMount::with_fs(&dir, fs, &[4096], 320 << 20) else {
        return; // the reason is printed
    };
    let src = disk.mount.join("src");
    let bytes = pattern(21, (5 << 20) + 4097);
    std::fs::write(&src, &bytes).unwrap();
    let dst = disk.mount.join("clone");
    let report = copy(&src, &dst, &CopyOptions::default().verify(true)).unwrap();
    assert_eq!(report.road, CopyRoad::Reflink, "{fs}: {:?}", report.note);
    assert_eq!(report.note, None);
    assert!(report.verified);
    assert_eq!(report.checksum, Some(crc32c_of(&bytes)));
    assert!(std::fs::read(&dst).unwrap() == bytes);
    // Without verification nothing is read: no checksum is claimed.
    let quick = disk.mount.join("quick");
    let report = copy(&src, &quick, &CopyOptions::default()).unwrap();
    assert_eq!((report.road, report.checksum), (CopyRoad::Reflink, None));
    // A write to the clone is the clone's alone.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&dst)
        .and_then(|f| std::os::unix::fs::FileExt::write_all_at(&f, b"changed", 100))
        .unwrap();
    assert!(
        std::fs::read(&src).unwrap() == bytes,
        "writing the clone changed the source"
    );
    // Never: blocks moved, byte-exact.
    let moved = disk.mount.join("moved");
    let options = CopyOptions::default().reflink(Reflink::Never).verify(true);
    let report = copy(&src, &moved, &options).unwrap();
    assert_eq!((report.road, report.note), (CopyRoad::Blocks, None));
    assert!(std::fs::read(&moved).unwrap() == bytes);
}

#[test]
fn xfs_copies_share_blocks() {
    reflinks_on("xfs");
}

#[test]
fn btrfs_copies_share_blocks() {
    reflinks_on("btrfs");
}

/// Where the file system cannot clone, `Auto` copies the blocks and the note says why;
/// `Require` is `Unsupported` naming the cause, before any byte moves, and leaves no
/// destination behind.
#[test]
fn without_reflink_auto_copies_and_says_why_and_require_refuses() {
    let dir = scratch("copy-no-reflink");
    let src = dir.join("src");
    let bytes = pattern(22, 1 << 20);
    std::fs::write(&src, &bytes).unwrap();
    let dst = dir.join("dst");
    let report = copy(&src, &dst, &CopyOptions::default()).unwrap();
    if report.road == CopyRoad::Reflink {
        eprintln!("skipped: the scratch file system clones; the xfs/btrfs tests cover it");
        return;
    }
    let note = report.note.expect("a reason for not cloning");
    assert!(note.contains("reflink"), "{note}");
    assert!(std::fs::read(&dst).unwrap() == bytes);
    let required = dir.join("required");
    let options = CopyOptions::default().reflink(Reflink::Require);
    let err = copy(&src, &required, &options).unwrap_err();
    assert!(
        matches!(&err, Error::Unsupported(m) if m.contains("Reflink::Auto")),
        "{err}"
    );
    assert!(!required.exists(), "a refused reflink left its destination");
}
