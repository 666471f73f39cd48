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

/// Counts the blocks a writer takes from its allocator: a buffer written without a
/// copy takes none.
struct CountingAllocator {
    inner: pagebuf::PageAllocator,
    blocks: std::sync::atomic::AtomicUsize,
}

impl BufferAllocator for CountingAllocator {
    fn allocate(&self, max_size: usize) -> pagebuf::Result<pagebuf::BufferMut> {
        self.allocate_page_aligned(max_size)
    }
    fn allocate_page_aligned(&self, max_size: usize) -> pagebuf::Result<pagebuf::BufferMut> {
        self.blocks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.allocate_page_aligned(max_size)
    }
}

/// `write_buffer` hands an aligned buffer at a block boundary to the disk as it is
/// (the writer's allocator is never asked for a block), copies one that is not (a
/// misaligned address, an odd length, or a partial block left by `io::Write`), and in
/// every mix the bytes land in order.
#[test]
fn write_buffer_goes_without_a_copy_when_aligned_and_in_order_always() {
    let dir = scratch("seq-write-buffer");
    let block = 64 << 10;
    let counting = Arc::new(CountingAllocator {
        inner: pagebuf::PageAllocator::default(),
        blocks: 0.into(),
    });
    let taken = || counting.blocks.load(std::sync::atomic::Ordering::Relaxed);
    let path = dir.join("mixed");
    let mut out = DirectWriter::with_options(
        DirectFile::create(&path).unwrap(),
        DirectWriterOptions::default()
            .block_size(block)
            .depth(3)
            .allocator(counting.clone()),
    )
    .unwrap();
    let source = pagebuf::PageAllocator::default();
    let filled = |len: usize, seed: u32| {
        let mut b = source.allocate_page_aligned(len).unwrap();
        b.extend_from_slice(&pattern(len, seed)).unwrap();
        b.freeze()
    };
    let mut expected = Vec::new();

    // Aligned, at a boundary: no block taken, even for one buffer written four times
    // at once and one larger than a block.
    let one = filled(block, 1);
    for _ in 0..4 {
        out.write_buffer(one.clone()).unwrap();
        expected.extend_from_slice(&one);
    }
    let big = filled(3 * block + 4096, 2);
    out.write_buffer(big.clone()).unwrap();
    expected.extend_from_slice(&big);
    assert_eq!(
        taken(),
        0,
        "aligned buffers went through the writer's blocks"
    );

    // A misaligned address (a slice one byte in) is copied.
    let shifted = filled(8192 + 1, 3).slice(1..).unwrap();
    out.write_buffer(shifted.clone()).unwrap();
    expected.extend_from_slice(&shifted);
    assert_eq!(
        taken(),
        1,
        "a misaligned buffer must be copied into a block"
    );

    // io::Write leaves a partial block: an aligned buffer after it is copied too,
    // and stays copied until the blocks reach a boundary again.
    out.write_all(&pattern(100, 4)).unwrap();
    expected.extend_from_slice(&pattern(100, 4));
    let after = filled(block, 5);
    out.write_buffer(after.clone()).unwrap();
    expected.extend_from_slice(&after);
    // An odd length is copied (the tail finish pads and cuts).
    let odd = filled(4096 + 7, 6);
    out.write_buffer(odd.clone()).unwrap();
    expected.extend_from_slice(&odd);
    out.write_buffer(pagebuf::Buffer::from_owner(Vec::<u8>::new()))
        .unwrap();
    assert_eq!(out.accepted(), expected.len() as u64);
    assert_eq!(out.finish().unwrap(), expected.len() as u64);
    assert!(
        std::fs::read(&path).unwrap() == expected,
        "bytes out of order"
    );

    // The writer's own blocks (allocate_block) are aligned: no copy, exact bytes.
    let path = dir.join("own");
    let mut out = DirectWriter::with_options(
        DirectFile::create(&path).unwrap(),
        DirectWriterOptions::default().block_size(block).depth(2),
    )
    .unwrap();
    let mut mine = out.allocate_block().unwrap();
    assert_eq!(mine.max_len(), block);
    mine.extend_from_slice(&pattern(block, 9)).unwrap();
    let mine = mine.freeze();
    for _ in 0..20 {
        out.write_buffer(mine.clone()).unwrap();
    }
    out.write_buffer(mine.slice(..10).unwrap()).unwrap();
    assert_eq!(out.finish().unwrap(), 20 * block as u64 + 10);
    let back = std::fs::read(&path).unwrap();
    assert!(back.chunks(block).take(20).all(|c| c == &mine[..]));
    assert_eq!(&back[20 * block..], &mine[..10]);
}
