//! `copy_file`: byte-exact copies of odd lengths, verification, bounded memory, and
//! every refusal.

mod support;

use pagebuf::copy::{copy_file, CopyOptions};
use pagebuf::Error;
use support::{pattern, scratch, LoopMount};

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
        assert_eq!(report.checksum, crc32c_of(&bytes));
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
}
