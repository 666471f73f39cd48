//! Issue 12's defects outside the copy: the reader's memory when its caller keeps
//! samples, files the default reader must size itself for, the writer's budget in its
//! own words, hostile knobs, a second writer on the same file, and the smaller ones.
//! Each test failed (hung, panicked, aborted or truncated) before the fix.

mod support;

use std::sync::mpsc;
use std::time::Duration;

use pagebuf::direct::{DirectFile, DirectIo};
use pagebuf::direct::{DirectReader, DirectReaderOptions, DirectWriter, DirectWriterOptions};
use pagebuf::stream::{
    ReaderOptions, SampleFlags, SampleReader, SampleWriter, StreamKind, WriterOptions,
};
use pagebuf::{caps, BufferAllocator, BufferPool, Error, MemoryOrigin};
use support::scratch;

/// Runs `work` on a thread and fails (instead of hanging the suite) if it has not
/// finished within `limit`.
fn within<T: Send + 'static>(limit: Duration, work: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, result) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(work());
    });
    result
        .recv_timeout(limit)
        .unwrap_or_else(|_| panic!("still blocked after {limit:?}: a wait that never ends"))
}

/// A finished file of `count` samples of `size` bytes, sample `i` filled with byte `i`.
fn record(path: &std::path::Path, count: u64, size: usize, budget: usize) {
    let writer =
        SampleWriter::with_options(path, WriterOptions::default().memory_budget(budget)).unwrap();
    let video = writer.add_stream(StreamKind::Video).unwrap();
    writer.begin_writing().unwrap();
    for i in 0..count {
        let mut buf = writer.allocate_sample(size).unwrap();
        buf.whole_mut().fill(i as u8);
        buf.set_len(size).unwrap();
        writer
            .write_sample(video, i, SampleFlags::KEY_FRAME, buf)
            .unwrap();
    }
    writer.end_writing().unwrap();
}

fn is_invalid_argument<T>(outcome: pagebuf::Result<T>, names: &str) -> bool {
    match outcome {
        Err(Error::InvalidArgument(text)) => text.contains(names),
        _ => false,
    }
}

/// Defect 5: 75 samples of 4 MiB read with the default reader (256 MiB of its own)
/// while the caller keeps every one: an `OutOfMemory` naming the option, never a hang;
/// after the caller lets go, `seek(0)` reads everything again.
#[test]
fn a_reader_whose_caller_keeps_samples_errs_instead_of_waiting_for_ever() {
    let dir = scratch("hostile-keep");
    let path = dir.join("take.pbs");
    record(&path, 75, 4 << 20, 64 << 20);
    within(Duration::from_secs(60), move || {
        let mut reader = SampleReader::open(&path).unwrap();
        let mut kept = Vec::new();
        let err = loop {
            match reader.next() {
                Some(Ok(sample)) => kept.push(sample),
                Some(Err(err)) => break err,
                None => panic!("all {} samples held at once: 300 MiB > 256 MiB", kept.len()),
            }
        };
        assert!(matches!(err, Error::OutOfMemory(_)), "{err}");
        assert!(
            err.to_string().contains("ReaderOptions::memory_budget"),
            "{err}"
        );
        assert!(
            kept.len() >= 50,
            "only {} samples before the error",
            kept.len()
        );
        for (i, s) in kept.iter().enumerate() {
            assert!(s.data.iter().all(|&b| b == i as u8), "sample {i}");
        }
        // Still holding them, seek(0) is the same clear error, not a hang.
        reader.seek(0).unwrap();
        assert!(matches!(reader.next(), Some(Err(Error::OutOfMemory(_)))));
        drop(kept);
        reader.seek(0).unwrap();
        let mut count = 0u64;
        for sample in reader {
            let sample = sample.unwrap();
            assert!(sample.data.iter().all(|&b| b == count as u8));
            count += 1;
        }
        assert_eq!(count, 75);
    });
}

/// Defect 6: one sample of 300 MiB (written with a 1 GiB budget) is read by the default
/// reader, which sizes its pool from the index; without an index (the writer died), a
/// record larger than the budget is an error naming the option to raise.
#[test]
fn the_default_reader_reads_a_record_larger_than_its_default_budget() {
    let dir = scratch("hostile-large");
    let path = dir.join("one.pbs");
    let size = 300 << 20;
    record(&path, 1, size, 1 << 30);
    let mut reader = SampleReader::open(&path).unwrap();
    assert!(reader.has_index());
    let sample = reader.next().unwrap().unwrap();
    assert_eq!(sample.data.len(), size);
    assert!(sample.data.iter().all(|&b| b == 0));
    assert!(reader.next().is_none());
    drop(sample);

    // Unfinished: the same record found by scanning.
    let path = dir.join("unfinished.pbs");
    {
        let writer =
            SampleWriter::with_options(&path, WriterOptions::default().memory_budget(1 << 30))
                .unwrap();
        let video = writer.add_stream(StreamKind::Video).unwrap();
        writer.begin_writing().unwrap();
        let mut buf = writer.allocate_sample(size).unwrap();
        buf.set_len(size).unwrap();
        writer
            .write_sample(video, 0, SampleFlags::empty(), buf)
            .unwrap();
        writer.flush().unwrap();
    }
    let mut reader = SampleReader::open(&path).unwrap();
    assert!(!reader.has_index());
    let err = reader.next().unwrap().unwrap_err();
    assert!(matches!(err, Error::OutOfMemory(_)), "{err}");
    assert!(
        err.to_string().contains("ReaderOptions::memory_budget"),
        "{err}"
    );
    let reader =
        SampleReader::with_options(&path, ReaderOptions::default().memory_budget(1 << 30)).unwrap();
    let samples: Vec<_> = reader.map(|s| s.unwrap()).collect();
    assert_eq!(samples.len(), 1);
    assert_eq!(samples[0].data.len(), size);
}

/// Defect 6, the writer's half: a budget of 9 MiB + 8 KiB cannot hold a 9 MiB sample
/// (its record takes a 10 MiB size class): refused by the writer in its own words; 10 MiB
/// holds it; and every size `allocate_sample` accepts is really served.
#[test]
fn the_writer_refuses_or_serves_consistently_with_its_budget() {
    let dir = scratch("hostile-budget");
    let writer = SampleWriter::with_options(
        dir.join("a.pbs"),
        WriterOptions::default().memory_budget((9 << 20) + 8192),
    )
    .unwrap();
    writer.add_stream(StreamKind::Video).unwrap();
    writer.begin_writing().unwrap();
    let err = writer.allocate_sample(9 << 20).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::InvalidArgument(_)), "{text}");
    assert!(text.contains("WriterOptions::memory_budget"), "{text}");
    assert!(text.contains(&(10u64 << 20).to_string()), "{text}");
    assert!(
        !text.contains("this pool"),
        "the writer's words, not the pool's: {text}"
    );

    let writer = SampleWriter::with_options(
        dir.join("b.pbs"),
        WriterOptions::default().memory_budget(10 << 20),
    )
    .unwrap();
    writer.add_stream(StreamKind::Video).unwrap();
    writer.begin_writing().unwrap();
    assert_eq!(writer.allocate_sample(9 << 20).unwrap().max_len(), 9 << 20);
    // Every size either refused up front or served (never refused by the pool).
    for size in [
        1,
        4000,
        4033,
        65_536,
        1 << 20,
        (5 << 20) + 1,
        8 << 20,
        10 << 20,
    ] {
        match writer.try_allocate_sample(size) {
            Ok(Some(buf)) => assert_eq!(buf.max_len(), size),
            Ok(None) => panic!("{size}: nothing else is out"),
            Err(Error::InvalidArgument(text)) => {
                assert!(
                    text.contains("WriterOptions::memory_budget"),
                    "{size}: {text}"
                )
            }
            Err(other) => panic!("{size}: {other}"),
        }
    }
}

/// Defect 7: depths and sizes past their caps are `InvalidArgument` naming the cap,
/// before any file is touched; no panic, no abort, no thousands of threads.
#[test]
fn hostile_knobs_are_refused_before_any_file_is_touched() {
    let dir = scratch("hostile-knobs");
    let path = dir.join("never.pbs");
    let cap = caps::MAX_DEPTH.to_string();
    for depth in [0, caps::MAX_DEPTH + 1, 1 << 40, usize::MAX] {
        let options = WriterOptions::default().depth(depth);
        assert!(is_invalid_argument(
            SampleWriter::with_options(&path, options),
            "WriterOptions::depth"
        ));
        assert!(!path.exists(), "depth {depth}: the file was created");
    }
    for budget in [0, caps::MAX_MEMORY_BUDGET + 1, usize::MAX] {
        let options = WriterOptions::default().memory_budget(budget);
        assert!(is_invalid_argument(
            SampleWriter::with_options(&path, options),
            "WriterOptions::memory_budget"
        ));
        assert!(!path.exists());
    }
    // An existing file is not truncated by a refused writer.
    std::fs::write(&path, b"precious").unwrap();
    let refused = SampleWriter::with_options(&path, WriterOptions::default().depth(usize::MAX));
    assert!(refused.unwrap_err().to_string().contains(&cap));
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");

    let file = dir.join("one.pbs");
    record(&file, 1, 1000, 64 << 20);
    for depth in [0, 20_000, usize::MAX] {
        assert!(is_invalid_argument(
            SampleReader::with_options(&file, ReaderOptions::default().depth(depth)),
            "ReaderOptions::depth"
        ));
    }
    for window in [0, caps::MAX_WINDOW + 1, usize::MAX] {
        assert!(is_invalid_argument(
            SampleReader::with_options(&file, ReaderOptions::default().window(window)),
            "ReaderOptions::window"
        ));
    }
    let threads = || std::fs::read_dir("/proc/self/task").unwrap().count();
    let before = threads();
    let reader =
        SampleReader::with_options(&file, ReaderOptions::default().depth(caps::MAX_DEPTH)).unwrap();
    assert!(
        threads() <= before + caps::MAX_DEPTH,
        "{} threads",
        threads()
    );
    assert_eq!(reader.count(), 1);

    let raw = dir.join("raw");
    for (block, depth) in [(1 << 20, 0), (1 << 20, usize::MAX), (0, 4), (usize::MAX, 4)] {
        let writer = DirectWriter::with_options(
            DirectFile::create(&raw).unwrap(),
            DirectWriterOptions::default()
                .block_size(block)
                .depth(depth),
        );
        assert!(
            matches!(writer, Err(Error::InvalidArgument(_))),
            "{block} {depth}"
        );
        let reader = DirectReader::with_options(
            DirectFile::open(&raw).unwrap(),
            DirectReaderOptions::default()
                .block_size(block)
                .depth(depth),
        );
        assert!(
            matches!(reader, Err(Error::InvalidArgument(_))),
            "{block} {depth}"
        );
    }
}

/// Defect 9: a second writer of a file, in this process (another open file description:
/// `flock` conflicts exactly as it does between processes), is refused and the first
/// writer's file is untouched; readers never lock; `create_new` refuses what exists.
#[test]
fn a_second_writer_is_refused_and_the_first_file_survives() {
    let dir = scratch("hostile-second-writer");
    let path = dir.join("take.pbs");
    let first = SampleWriter::create(&path).unwrap();
    let video = first.add_stream(StreamKind::Video).unwrap();
    first.begin_writing().unwrap();
    let mut buf = first.allocate_sample(100_000).unwrap();
    buf.whole_mut().fill(9);
    buf.set_len(100_000).unwrap();
    first
        .write_sample(video, 0, SampleFlags::empty(), buf)
        .unwrap();
    first.flush().unwrap();
    let len = std::fs::metadata(&path).unwrap().len();

    let second = SampleWriter::create(&path).unwrap_err();
    assert!(matches!(second, Error::InvalidRequest(_)), "{second}");
    assert!(second.to_string().contains("take.pbs"), "{second}");
    let direct = DirectFile::create(&path).unwrap_err();
    assert!(matches!(direct, Error::InvalidRequest(_)), "{direct}");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), len, "truncated");
    // A reader opens the file being written.
    assert!(SampleReader::open(&path).is_ok());
    assert!(DirectFile::open(&path).is_ok());

    first.end_writing().unwrap();
    drop(first);
    let samples: Vec<_> = SampleReader::open(&path)
        .unwrap()
        .map(|s| s.unwrap())
        .collect();
    assert_eq!(samples.len(), 1);
    assert!(samples[0].data.iter().all(|&b| b == 9));
    // The lock went with the writer.
    drop(SampleWriter::create(&path).unwrap());

    let exists = DirectFile::options()
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap_err();
    assert!(
        matches!(&exists, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists),
        "{exists}"
    );
    let fresh = DirectFile::options()
        .write(true)
        .create_new(true)
        .direct(DirectIo::Prefer)
        .open(dir.join("fresh"))
        .unwrap();
    assert!(fresh.created());
    assert!(!DirectFile::open(&path).unwrap().created());
}

/// Defect 12: a `BufferPool` buffer says it came from a buffer pool, not a frame pool.
#[test]
fn buffer_pool_buffers_name_their_origin() {
    let pool = BufferPool::new(1 << 20).unwrap();
    let buf = pool.allocate_page_aligned(4096).unwrap();
    assert_eq!(buf.origin(), MemoryOrigin::BufferPool);
    assert!(buf.origin().to_string().contains("buffer pool"));
}
