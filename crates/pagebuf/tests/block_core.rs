//! The block-I/O core under every pipeline (issue 13, "One block-I/O core"): each of
//! `DirectWriter`/`DirectReader`, `copy_file` and `SampleWriter`/`SampleReader` moves
//! its bytes on the ring its options give, on both engines, byte-exact; by default on
//! one ring per process, made anew in a forked child; and the sink gives a buffer back
//! to its pool when the kernel is done with it, whoever waits.

use std::io::{Read, Write};
use std::time::Duration;

use pagebuf::copy::{copy_file, CopyOptions};
use pagebuf::direct::{DirectReader, DirectReaderOptions, DirectWriter, DirectWriterOptions};
use pagebuf::ring::{Engine, RingOptions};
use pagebuf::stream::{ReaderOptions, WriterOptions};
use pagebuf::{DirectFile, Error, IoRing, SampleFlags, SampleReader, SampleWriter, StreamKind};

mod support;
use support::{in_child, pattern, patterned_file, run_child, within, ScratchDir};

const LIMIT: Duration = Duration::from_secs(120);

/// A ring on `engine`; `None` (the reason printed) where io_uring is refused here.
fn ring(engine: Engine) -> Option<IoRing> {
    match IoRing::with_options(RingOptions::default().engine(engine)) {
        Ok(ring) => Some(ring),
        Err(Error::Unsupported(why)) if engine == Engine::Uring => {
            eprintln!("skipped: io_uring is refused here: {why}");
            None
        }
        Err(err) => panic!("a ring on {engine:?}: {err}"),
    }
}

/// Transfers the ring has issued so far.
fn ops(ring: &IoRing) -> u64 {
    let stats = ring.stats();
    stats.fixed_ops + stats.plain_ops
}

/// Every pipeline, on a ring of `engine` given through its options: the bytes come
/// back exact and the ring's own counters show the transfers went through it.
fn pipelines_on(engine: Engine) {
    let Some(ring) = ring(engine) else { return };
    let dir = ScratchDir::new("block_core", &format!("{engine:?}"));
    let len = (3 << 20) + 7;
    let bytes = pattern(13, len);

    // DirectWriter, 256 KiB blocks, depth 3.
    let path = dir.join("direct");
    let before = ops(&ring);
    let options = DirectWriterOptions::default()
        .block_size(256 << 10)
        .depth(3)
        .ring(ring.clone());
    let mut out = DirectWriter::with_options(DirectFile::create(&path).unwrap(), options).unwrap();
    for piece in bytes.chunks(100_003) {
        out.write_all(piece).unwrap();
    }
    assert_eq!(out.finish().unwrap(), len as u64);
    let written = ops(&ring) - before;
    // 13 blocks (the last padded), at least. (The sync is made on the writer's own
    // thread, which waits for it anyway: BlockSink::sync_through.)
    assert!(written >= 13, "{written} transfers on the writer's ring");
    assert_eq!(std::fs::read(&path).unwrap(), bytes);

    // DirectReader back, depth 2.
    let before = ops(&ring);
    let options = DirectReaderOptions::default()
        .block_size(512 << 10)
        .depth(2)
        .ring(ring.clone());
    let mut input = DirectReader::with_options(DirectFile::open(&path).unwrap(), options).unwrap();
    let mut back = Vec::new();
    input.read_to_end(&mut back).unwrap();
    assert!(back == bytes, "the reader's bytes differ");
    assert!(
        ops(&ring) - before >= 7,
        "the reader's reads went elsewhere"
    );

    // copy_file, verified.
    let copy = dir.join("copy");
    let before = ops(&ring);
    let options = CopyOptions::default()
        .block_size(1 << 20)
        .verify(true)
        .ring(ring.clone());
    let report = copy_file(&path, &copy, &options, &mut |_, _| {}).unwrap();
    assert!(report.verified);
    assert_eq!(std::fs::read(&copy).unwrap(), bytes);
    // 4 reads, 4 writes, a sync, 4 verifying reads.
    assert!(
        ops(&ring) - before >= 13,
        "the copy's transfers went elsewhere"
    );

    // SampleWriter and SampleReader.
    let file = dir.join("samples");
    let before = ops(&ring);
    let writer =
        SampleWriter::with_options(&file, WriterOptions::default().ring(ring.clone())).unwrap();
    let video = writer.add_stream(StreamKind::Video).unwrap();
    writer.begin_writing().unwrap();
    let sizes = [100usize, 70_000, 3, 1 << 20, 4096];
    for (i, &size) in sizes.iter().enumerate() {
        let mut sample = writer.allocate_sample(size).unwrap();
        sample.extend_from_slice(&pattern(i as u64, size)).unwrap();
        writer
            .write_sample(video, i as u64 * 1000, SampleFlags::KEY_FRAME, sample)
            .unwrap();
    }
    writer.end_writing().unwrap();
    drop(writer);
    assert!(
        ops(&ring) - before >= 4,
        "the writer's transfers went elsewhere"
    );
    let before = ops(&ring);
    let reader =
        SampleReader::with_options(&file, ReaderOptions::default().ring(ring.clone())).unwrap();
    let samples: Vec<_> = reader.map(|s| s.unwrap()).collect();
    assert_eq!(samples.len(), sizes.len());
    for (i, sample) in samples.iter().enumerate() {
        assert!(
            sample.data[..] == pattern(i as u64, sizes[i])[..],
            "sample {i}"
        );
    }
    assert!(
        ops(&ring) - before >= 2,
        "the reader's transfers went elsewhere"
    );
    assert_eq!(ring.stats().in_flight, 0, "transfers left in flight");
}

/// Waits (under the watchdog) until `ring` holds no registered memory: a pipeline's
/// own pool is let go once its last block is home.
fn until_unregistered(ring: &IoRing, what: &str) {
    let ring = ring.clone();
    within(LIMIT, what, move || {
        while ring.stats().registered_bytes != 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    });
}

/// The blocks a pipeline makes for itself (no allocator in its options) are registered
/// with its ring and go as fixed transfers; the registration goes with the pipeline.
#[test]
fn a_pipelines_own_blocks_go_fixed_and_are_let_go() {
    let Some(ring) = ring(Engine::Uring) else {
        return;
    };
    let dir = ScratchDir::new("block_core", "own_blocks");
    let (block, depth) = (256 << 10, 3);
    let len = 13 * block - 5;
    let bytes = pattern(17, len);
    let path = dir.join("direct");
    let options = DirectWriterOptions::default()
        .block_size(block)
        .depth(depth)
        .ring(ring.clone());
    let mut out = DirectWriter::with_options(DirectFile::create(&path).unwrap(), options).unwrap();
    assert_eq!(
        ring.stats().registered_bytes,
        (depth + 2) * block,
        "the writer's pool is not registered: {:?}",
        ring.stats()
    );
    out.write_all(&bytes).unwrap();
    assert_eq!(out.finish().unwrap(), len as u64);
    let written = ring.stats();
    // 13 blocks, fixed; the sync is the only plain transfer.
    assert!(written.fixed_ops >= 13, "{written:?}");
    assert!(written.plain_ops <= 2, "{written:?}");
    until_unregistered(&ring, "the finished writer's pool let go");
    assert_eq!(std::fs::read(&path).unwrap(), bytes);

    let options = DirectReaderOptions::default()
        .block_size(block)
        .depth(depth)
        .ring(ring.clone());
    let mut input = DirectReader::with_options(DirectFile::open(&path).unwrap(), options).unwrap();
    let mut back = vec![0; 5 * block];
    input.read_exact(&mut back).unwrap();
    assert!(back[..] == bytes[..5 * block]);
    assert_eq!(ring.stats().registered_bytes, (depth + 2) * block);
    // Dropped with reads ahead in flight: let go once they are home.
    drop(input);
    until_unregistered(&ring, "a dropped reader's pool let go");
    let read = ring.stats();
    assert!(read.fixed_ops >= written.fixed_ops + 5, "{read:?}");
    assert_eq!(read.plain_ops, written.plain_ops, "{read:?}");
}

#[test]
fn every_pipeline_runs_on_the_ring_it_is_given_uring() {
    within(LIMIT, "pipelines on io_uring", || {
        pipelines_on(Engine::Uring)
    });
}

#[test]
fn every_pipeline_runs_on_the_ring_it_is_given_threads() {
    within(LIMIT, "pipelines on threads", || {
        pipelines_on(Engine::Threads)
    });
}

/// Without a ring in their options, pipelines share `IoRing::process_default`.
#[test]
fn without_a_ring_pipelines_share_the_process_default() {
    within(LIMIT, "the default ring", || {
        let dir = ScratchDir::new("block_core", "default");
        let ring = IoRing::process_default().unwrap();
        let before = ops(&ring);
        let path = dir.join("data");
        let mut out = DirectWriter::new(DirectFile::create(&path).unwrap()).unwrap();
        out.write_all(&pattern(3, 2 << 20)).unwrap();
        out.finish().unwrap();
        let bytes = patterned_file(&dir.join("src"), 4, 1 << 20);
        copy_file(
            dir.join("src"),
            dir.join("dst"),
            &CopyOptions::default(),
            &mut |_, _| {},
        )
        .unwrap();
        assert_eq!(std::fs::read(dir.join("dst")).unwrap(), bytes);
        // Two blocks and a sync, a read, a write, a sync (other tests may add more).
        assert!(ops(&IoRing::process_default().unwrap()) - before >= 6);
    });
}

/// In a forked child the parent's default ring is not used (its queue and threads are
/// not there): the child gets a ring of its own and its pipelines work.
#[test]
fn a_forked_child_gets_a_default_ring_of_its_own() {
    const NAME: &str = "a_forked_child_gets_a_default_ring_of_its_own";
    if !in_child(NAME) {
        // Fork from a child of its own: forking the multi-threaded test harness is not safe.
        let (status, text) = run_child(NAME, &[]);
        assert!(status.success(), "child failed ({status:?}):\n{text}");
        assert!(text.contains("forked child: done"), "{text}");
        return;
    }
    let dir = ScratchDir::new("block_core", "forked");
    let parent = IoRing::process_default().unwrap();
    let mut out = DirectWriter::new(DirectFile::create(dir.join("parent")).unwrap()).unwrap();
    out.write_all(&[1; 10_000]).unwrap();
    out.finish().unwrap();
    let parent_ops = ops(&parent);
    assert!(parent_ops > 0);
    // SAFETY: this process runs this test alone (`--test-threads=1`): the child has no
    // lock held by a thread that does not exist in it, but the ring's own threads,
    // whose locks pagebuf never takes in a child.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let outcome = std::panic::catch_unwind(|| {
            let ring = IoRing::process_default().unwrap();
            assert_eq!(ops(&ring), 0, "the child shares the parent's ring");
            let path = dir.join("child");
            let mut out = DirectWriter::new(DirectFile::create(&path).unwrap()).unwrap();
            out.write_all(&pattern(5, 300_001)).unwrap();
            out.finish().unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), pattern(5, 300_001));
            assert!(ops(&ring) > 0);
        });
        // SAFETY: ends the forked child without running the parent's exit handlers.
        unsafe { libc::_exit(if outcome.is_ok() { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waits for the child forked above.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the forked child failed (status {status:#x})"
    );
    // The parent's ring is untouched by the child and still works.
    let mut out = DirectWriter::new(DirectFile::create(dir.join("after")).unwrap()).unwrap();
    out.write_all(&[2; 5000]).unwrap();
    out.finish().unwrap();
    assert!(ops(&parent) > parent_ops);
    println!("forked child: done");
}

/// A write's buffer goes home when the kernel is done with it, with nobody waiting for
/// the write (a detached completion): blocks handed to the writer come back to the pool
/// while the writer sits idle, before any `flush` or `finish`. Then a writer whose pool
/// holds only its blocks in flight streams 20 MiB through it.
fn memory_comes_back_at_completion(engine: Engine) {
    let Some(ring) = ring(engine) else { return };
    let dir = ScratchDir::new("block_core", &format!("memory-{engine:?}"));
    let block = 64 << 10;
    let pool = pagebuf::BufferPool::new(3 * block).unwrap();
    let options = DirectWriterOptions::default()
        .block_size(block)
        .depth(2)
        .allocator(std::sync::Arc::new(pool.clone()))
        .ring(ring);
    let path = dir.join("tight");
    let mut out = DirectWriter::with_options(DirectFile::create(&path).unwrap(), options).unwrap();
    out.write_all(&pattern(8, 2 * block)).unwrap(); // two whole blocks, submitted
    let started = std::time::Instant::now();
    while pool.stats().bytes_out != 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "written blocks not back in the pool while the writer is idle: {:?}",
            pool.stats()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let bytes = pattern(9, 20 << 20);
    for piece in bytes.chunks(block / 3) {
        out.write_all(piece).unwrap();
    }
    out.finish().unwrap();
    assert_eq!(pool.stats().bytes_out, 0, "buffers still out after finish");
    let back = std::fs::read(&path).unwrap();
    assert!(back[..2 * block] == pattern(8, 2 * block)[..] && back[2 * block..] == bytes[..]);
}

#[test]
fn memory_comes_back_at_completion_uring() {
    within(LIMIT, "a tight writer on io_uring", || {
        memory_comes_back_at_completion(Engine::Uring)
    });
}

#[test]
fn memory_comes_back_at_completion_threads() {
    within(LIMIT, "a tight writer on threads", || {
        memory_comes_back_at_completion(Engine::Threads)
    });
}
