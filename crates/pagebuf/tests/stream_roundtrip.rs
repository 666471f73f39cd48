//! Whole recordings read back byte-exact: several streams written from several threads
//! at once, samples from 1 byte to 8 MiB; files finished, unfinished, and on a
//! 4096-byte-sector device.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use pagebuf::stream::{SampleFlags, SampleReader, SampleWriter, StreamKind, WriterOptions};
use pagebuf::{BufferAllocator, BufferPool};
use support::{fill_pattern, pattern, scratch, LoopMount};

/// What one stream's thread writes: (time, flags, size) of sample `i`; the content is
/// `pattern(seed(stream, i))`.
fn plan(stream: u16, i: u64) -> (u64, SampleFlags, usize) {
    let time = i * 10_000;
    match stream {
        // Video: key frames every 10, sizes 64 KiB .. 8 MiB.
        1 => {
            let flags = if i % 10 == 0 {
                SampleFlags::KEY_FRAME
            } else {
                SampleFlags::empty()
            };
            let size = [64 << 10, 700_001, 3 << 20, 8 << 20, 100_000][i as usize % 5];
            (time, flags, size)
        }
        // Audio: small packets, every size from 1 byte up.
        2 => (time, SampleFlags::empty(), 1 + (i as usize * 997) % 8_000),
        // Data: tiny, with the odd discontinuity.
        _ => {
            let flags = if i % 7 == 3 {
                SampleFlags::DISCONTINUITY
            } else {
                SampleFlags::empty()
            };
            (time, flags, 1 + (i as usize * 31) % 120)
        }
    }
}

fn seed(stream: u16, i: u64) -> u64 {
    (u64::from(stream) << 32) | i
}

const COUNTS: [(u16, u64); 3] = [(1, 40), (2, 2500), (3, 1500)];

/// Writes the three streams from three threads; returns nothing until all are written.
fn record(writer: &SampleWriter) {
    assert_eq!(writer.add_stream(StreamKind::Video).unwrap(), 1);
    assert_eq!(writer.add_stream(StreamKind::Audio).unwrap(), 2);
    assert_eq!(writer.add_stream(StreamKind::Data).unwrap(), 3);
    writer.begin_writing().unwrap();
    std::thread::scope(|s| {
        for (stream, count) in COUNTS {
            s.spawn(move || {
                for i in 0..count {
                    let (time, flags, size) = plan(stream, i);
                    let mut buf = writer.allocate_sample(size).unwrap();
                    buf.set_len(size).unwrap();
                    fill_pattern(seed(stream, i), &mut buf);
                    writer.write_sample(stream, time, flags, buf).unwrap();
                    if i % 500 == 499 {
                        writer.flush().unwrap();
                    }
                }
            });
        }
    });
}

/// Reads everything back and checks every sample of every stream, in order.
fn verify(reader: SampleReader) -> u64 {
    let mut next: BTreeMap<u16, u64> = BTreeMap::new();
    let mut total = 0;
    for sample in reader {
        let sample = sample.unwrap();
        let i = next.entry(sample.stream).or_default();
        let (time, flags, size) = plan(sample.stream, *i);
        assert_eq!(
            (sample.time, sample.flags),
            (time, flags),
            "stream {} sample {i}",
            sample.stream
        );
        assert_eq!(
            sample.data.len(),
            size,
            "stream {} sample {i}",
            sample.stream
        );
        assert!(
            sample.data[..] == pattern(seed(sample.stream, *i), size)[..],
            "stream {} sample {i}: bytes differ",
            sample.stream
        );
        *i += 1;
        total += 1;
    }
    for (stream, count) in COUNTS {
        assert_eq!(
            next.get(&stream).copied().unwrap_or(0),
            count,
            "stream {stream}"
        );
    }
    total
}

fn options() -> WriterOptions {
    // The three threads run at their own pace: no sync tolerance in this test.
    WriterOptions::default()
        .sync_tolerance(Duration::from_secs(1 << 30))
        .memory_budget(48 << 20)
}

fn round_trip(path: &Path) {
    let writer = SampleWriter::with_options(path, options()).unwrap();
    record(&writer);
    let summary = writer.end_writing().unwrap();
    let samples: u64 = COUNTS.iter().map(|c| c.1).sum();
    assert_eq!(summary.samples, samples);
    assert_eq!(summary.streams[1].samples, 2500);
    assert_eq!(
        summary.zero_copy_samples, 40,
        "every video frame went out without a copy"
    );
    assert_eq!(std::fs::metadata(path).unwrap().len(), summary.file_bytes);

    let reader = SampleReader::open(path).unwrap();
    assert!(reader.has_index());
    assert_eq!(reader.sample_count(), Some(samples));
    let kinds: Vec<_> = reader
        .streams()
        .iter()
        .map(|s| (s.number, s.kind))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (1, StreamKind::Video),
            (2, StreamKind::Audio),
            (3, StreamKind::Data)
        ]
    );
    assert_eq!(reader.streams()[2].summary.unwrap().samples, 1500);
    assert_eq!(verify(reader), samples);
}

#[test]
fn concurrent_streams_round_trip_byte_exact() {
    round_trip(&scratch("stream-round-trip").join("take.pbs"));
}

#[test]
fn a_host_allocator_supplies_the_read_blocks() {
    let dir = scratch("stream-host-allocator");
    let path = dir.join("take.pbs");
    let writer = SampleWriter::with_options(&path, options()).unwrap();
    record(&writer);
    writer.end_writing().unwrap();
    let pool = BufferPool::new(128 << 20).unwrap();
    let host: Arc<dyn BufferAllocator> = Arc::new(pool.clone());
    verify(SampleReader::open_with(&path, host).unwrap());
    let reused: u64 = pool.stats().classes.iter().map(|c| c.reused).sum();
    assert!(
        reused > 0,
        "the reader recycled the host's blocks: {:?}",
        pool.stats()
    );
}

#[test]
fn an_unfinished_file_is_recovered_by_scanning() {
    let dir = scratch("stream-unfinished");
    let path = dir.join("take.pbs");
    {
        let writer = SampleWriter::with_options(&path, options()).unwrap();
        record(&writer);
    } // dropped without end_writing: no index
    let reader = SampleReader::open(&path).unwrap();
    assert!(!reader.has_index());
    verify(reader);
}

#[test]
fn a_4096_byte_sector_device_round_trips() {
    let dir = scratch("stream-4k-device");
    let Some(disk) = LoopMount::new(&dir, 4096, 512 << 20) else {
        return;
    };
    let path = disk.mount.join("take.pbs");
    round_trip(&path);
    let writer = SampleWriter::create(disk.mount.join("probe.pbs")).unwrap();
    assert!(writer.is_direct());
    assert_eq!(writer.unit(), 4096);
}
