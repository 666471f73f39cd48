//! `DirectWriter` / `DirectReader` on the real disk, and a full disk on a tiny loop
//! device (root).

use std::io::{Read, Write};
use std::sync::Arc;

use pagebuf::direct::DirectFile;
use pagebuf::direct::{DirectReader, DirectReaderOptions, DirectWriter, DirectWriterOptions};
use pagebuf::{BufferAllocator, BufferPool, Error};

mod support;
use support::{in_child, run_child_with_file_size_limit, scratch, LoopMount};

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8)
        .collect()
}

#[test]
fn write_then_read_back_any_length_byte_exact() {
    let dir = scratch("seq_round_trip");
    for (i, len) in [0usize, 1, 4095, 4097, (1 << 20) + 1, 20 << 20]
        .into_iter()
        .enumerate()
    {
        let path = dir.join(format!("f{len}"));
        let data = pattern(len, i as u32);
        let mut out = DirectWriter::new(DirectFile::create(&path).unwrap()).unwrap();
        // Uneven pieces, so blocks fill across writes.
        let mut rest = &data[..];
        let mut step = 1;
        while !rest.is_empty() {
            let take = step.min(rest.len());
            out.write_all(&rest[..take]).unwrap();
            rest = &rest[take..];
            step = step * 3 + 7;
        }
        out.flush().unwrap();
        assert_eq!(out.finish().unwrap(), len as u64);
        assert_eq!(std::fs::read(&path).unwrap(), data, "{len} bytes via std");

        let mut input = DirectReader::new(DirectFile::open(&path).unwrap()).unwrap();
        let mut back = Vec::new();
        input.read_to_end(&mut back).unwrap();
        assert_eq!(back.len(), len);
        assert!(back == data, "{len} bytes via DirectReader");
    }
}

#[test]
fn memory_stays_within_the_pool_whatever_the_file_size() {
    let dir = scratch("seq_bounded");
    let path = dir.join("big");
    let file = DirectFile::create(&path).unwrap();
    let block = 64 << 10;
    let pool = BufferPool::new(block * 4).unwrap();
    let alloc: Arc<dyn BufferAllocator> = Arc::new(pool.clone());
    let mut out = DirectWriter::with_options(
        file,
        DirectWriterOptions::default()
            .block_size(block)
            .depth(2)
            .allocator(alloc),
    )
    .unwrap();
    let chunk = pattern(100_000, 7);
    for _ in 0..300 {
        out.write_all(&chunk).unwrap();
        let stats = pool.stats();
        assert!(stats.bytes_out + stats.bytes_cached <= block * 4);
    }
    assert_eq!(out.finish().unwrap(), 30_000_000);

    let alloc: Arc<dyn BufferAllocator> = Arc::new(BufferPool::new(block * 5).unwrap());
    let mut input = DirectReader::with_options(
        DirectFile::open(&path).unwrap(),
        DirectReaderOptions::default()
            .block_size(block)
            .depth(2)
            .allocator(alloc),
    )
    .unwrap();
    let mut total = 0usize;
    let mut buf = vec![0u8; 77_777];
    loop {
        let n = input.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        assert_eq!(
            buf[..n],
            chunk.repeat(2)[total % 100_000..total % 100_000 + n]
        );
        total += n;
    }
    assert_eq!(total, 30_000_000);
}

#[test]
fn bad_options_are_invalid_arguments() {
    let dir = scratch("seq_bad");
    let file = DirectFile::create(dir.join("x")).unwrap();
    let unit = file.limits().alignment() as usize;
    let alloc: Arc<dyn BufferAllocator> = Arc::new(BufferPool::new(1 << 20).unwrap());
    let err = DirectWriter::with_options(
        file,
        DirectWriterOptions::default()
            .block_size(unit + 1)
            .allocator(alloc.clone()),
    )
    .err()
    .unwrap();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    let file = DirectFile::create(dir.join("y")).unwrap();
    let err = DirectWriter::with_options(
        file,
        DirectWriterOptions::default()
            .block_size(unit)
            .depth(0)
            .allocator(alloc),
    )
    .err()
    .unwrap();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
}

#[test]
fn a_full_disk_is_an_error_not_a_silent_loss() {
    let dir = scratch("seq_full");
    let Some(disk) = LoopMount::new(&dir, 4096, 16 << 20) else {
        return;
    };
    let path = disk.mount.join("fill");
    let mut out = DirectWriter::new(DirectFile::create(&path).unwrap()).unwrap();
    let chunk = vec![0xAB; 1 << 20];
    let mut failed = None;
    for _ in 0..64 {
        if let Err(e) = out.write_all(&chunk) {
            failed = Some(e);
            break;
        }
    }
    let outcome = match failed {
        Some(e) => Err(e.to_string()),
        None => out.finish().map_err(|e| e.to_string()),
    };
    let text = outcome.expect_err("64 MiB cannot fit on a 16 MiB file system");
    assert!(
        text.contains("No space left") || text.contains("os error 28"),
        "the error says the disk is full: {text}"
    );
}

/// A write error (here `EFBIG` past a file size cap) is sticky: once reported, every
/// later `write`, `flush` and `finish` reports it again; none says `Ok` over a file with
/// a hole where data should be.
#[test]
fn a_failed_write_is_reported_by_every_later_call() {
    const NAME: &str = "a_failed_write_is_reported_by_every_later_call";
    if !in_child(NAME) {
        let (status, text) = run_child_with_file_size_limit(NAME, 2 << 20);
        assert!(status.success(), "child failed:\n{text}");
        assert!(text.contains("sticky failure seen"), "{text}");
        return;
    }
    let dir = scratch("seq-sticky");
    let path = dir.join("capped");
    let mut out = DirectWriter::new(DirectFile::create(&path).unwrap()).unwrap();
    let chunk = vec![0x5A; 1 << 20];
    let first = (0..16)
        .find_map(|_| out.write_all(&chunk).err())
        .or_else(|| out.flush().err())
        .expect("8 MiB cannot be written under a 2 MiB file size cap");
    // `io::Error` from a pagebuf error keeps the kind and the message (with the errno).
    let efbig = |e: &std::io::Error| {
        e.kind() == std::io::ErrorKind::FileTooLarge && e.to_string().contains("os error 27")
    };
    assert!(efbig(&first), "{first}");
    // Reported again: by a write, by every flush, and by finish.
    assert!(efbig(&out.write_all(&chunk).unwrap_err()));
    assert!(efbig(&out.flush().unwrap_err()));
    assert!(efbig(&out.flush().unwrap_err()));
    let end = out.finish().unwrap_err();
    assert!(end.to_string().contains("os error 27"), "{end}");
    println!("sticky failure seen: {end}");
}

/// Long-lived owners of a file give it back (as std's `BufWriter`), and a `DirectFile`
/// is an fd.
#[test]
fn writer_and_reader_give_their_file_back() {
    use std::os::fd::AsFd;
    let dir = scratch("seq-into-file");
    let path = dir.join("data");
    let mut out = DirectWriter::new(DirectFile::create(&path).unwrap()).unwrap();
    assert_eq!(out.get_ref().path(), path);
    out.write_all(&pattern(10_000, 3)).unwrap();
    let file = out.into_file().unwrap();
    assert_eq!(file.len().unwrap(), 10_000);
    let stat = rustix::fs::fstat(file.as_fd()).unwrap();
    assert_eq!(stat.st_size, 10_000);
    drop(file);

    let mut input = DirectReader::new(DirectFile::open(&path).unwrap()).unwrap();
    let mut head = [0u8; 100];
    input.read_exact(&mut head).unwrap();
    assert_eq!(&head[..], &pattern(10_000, 3)[..100]);
    assert_eq!(input.get_ref().path(), path);
    let file = input.into_file().unwrap();
    assert_eq!(file.len().unwrap(), 10_000);
}

#[test]
fn buf_read_hands_out_the_blocks_without_a_copy() {
    use std::io::BufRead;
    let dir = scratch("seq-bufread");
    let path = dir.join("data");
    let bytes = pattern((5 << 20) + 333, 7);
    std::fs::write(&path, &bytes).unwrap();
    // 4 MiB blocks: above this disk's largest request, so read as pieces at once.
    let mut input = DirectReader::with_options(
        DirectFile::open(&path).unwrap(),
        DirectReaderOptions::default().block_size(4 << 20).depth(2),
    )
    .unwrap();
    let mut got = Vec::new();
    loop {
        let block = input.fill_buf().unwrap();
        if block.is_empty() {
            break;
        }
        // Consume a little at a time: the rest of the block stays put.
        let n = block.len().min(100_000);
        got.extend_from_slice(&block[..n]);
        input.consume(n);
    }
    assert!(got == bytes);
    // Read and BufRead mix.
    let mut input = DirectReader::new(DirectFile::open(&path).unwrap()).unwrap();
    let mut head = [0u8; 10];
    input.read_exact(&mut head).unwrap();
    let rest = input.fill_buf().unwrap().to_vec();
    assert_eq!(&head[..], &bytes[..10]);
    assert_eq!(&rest[..], &bytes[10..10 + rest.len()]);
}
